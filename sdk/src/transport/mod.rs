//! The network transport: a typed HTTP client for Courier's API ([`ApiClient`]), a
//! device's stream over a WebSocket ([`StreamConnection`]), and the pacing of reconnects
//! ([`Backoff`]).
//!
//! It holds no cryptography and no business logic: it sends and returns
//! `courier_protocol` types, turns the server's one error shape into
//! [`TransportError::Api`], and says which failures are worth retrying
//! ([`TransportError::is_retryable`]). The reconnect loop belongs to the client, which must
//! decrypt and store an item before it acknowledges it.
//!
//! Production servers are reached over `https`/`wss` (rustls with the ring provider and
//! the webpki root certificates); plain `http`/`ws` works for local servers.
//!
//! The access token is an [`AccessToken`]: it never appears in `Debug`, in an error or in
//! a URL (it travels only in the `Authorization` header, marked sensitive).
//!
//! ```no_run
//! use courier_protocol::DeviceId;
//! use courier_protocol::api::accounts::LoginRequest;
//! use courier_protocol::api::stream::{ControlFrame, ServerFrame, StreamItem};
//! use courier_sdk::transport::{ApiClient, TransportError};
//!
//! # async fn run() -> Result<(), TransportError> {
//! let mut client = ApiClient::new("https://courier.example".parse().expect("a URL"))?;
//! let login = client
//!     .login(&LoginRequest {
//!         username: "alice".into(),
//!         password: "correct horse battery".into(),
//!         device_id: DeviceId::NEW,
//!         device_name: Some("Alice's phone".into()),
//!         replace_device_id: None,
//!     })
//!     .await?;
//! client.set_token(login.access_token);
//!
//! let mut stream = client.open_stream(None).await?;
//! loop {
//!     match stream.next_frame().await? {
//!         ServerFrame::Item(StreamItem::Envelope(envelope)) => {
//!             // Decrypt and store the envelope, then acknowledge it.
//!             stream.ack_up_to(envelope.seq).await?;
//!         }
//!         // Group messages, sender keys, membership changes, receipts.
//!         ServerFrame::Item(other) => stream.ack_up_to(other.seq()).await?,
//!         ServerFrame::Control(ControlFrame::CaughtUp { .. }) => {}
//!         ServerFrame::Control(ControlFrame::Error { .. }) => {}
//!     }
//! }
//! # }
//! ```

mod backoff;
mod error;
mod http;
mod socket;
mod tls;
mod token;

pub use backoff::{Backoff, BackoffPolicy};
pub use error::{NetworkErrorKind, TransportError};
pub use http::{ApiClient, DeviceLogin, GroupSendOutcome, SendOutcome};
pub use socket::{StreamClosed, StreamConnection};
pub use token::AccessToken;

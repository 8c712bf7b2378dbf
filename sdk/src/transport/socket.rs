//! A device's stream over a WebSocket (`GET /v1/ws`): server frames in, acknowledgements
//! out, close codes turned into a reason that says whether to reconnect.

use std::fmt;
use std::time::Duration;

use courier_protocol::api::stream::{ClientFrame, ServerFrame, StreamItem, close_code};
use futures::{SinkExt, StreamExt};
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use super::error::{BoxError, NetworkErrorKind, TransportError};
use super::http::endpoint;
use super::tls;
use super::token::AccessToken;

/// How long opening the stream (TCP, TLS and the upgrade) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sending a frame may take before the connection counts as lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a polite close waits for the server's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest server message accepted. An envelope frame is its ciphertext in base64 plus a
/// few hundred bytes, and a ciphertext is bounded by the server's request body limit
/// (1 MiB by default), so this leaves room without letting a frame grow memory unbounded.
const MAX_SERVER_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most sequence numbers in one `ack` frame: the server takes client frames of at most
/// 64 KiB, and 1,000 numbers of 20 digits stay well under that.
const MAX_SEQS_PER_ACK: usize = 1000;
/// Longest `type` tag quoted from a frame this SDK does not understand.
const MAX_QUOTED_FRAME_TYPE: usize = 64;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One open stream connection of a device.
///
/// Frames are read one at a time ([`next_frame`](Self::next_frame)): nothing is buffered
/// beyond the one message being read, so a device that reads slowly slows the server's
/// sends instead of growing its own memory. Pings are answered while reading. The server
/// pings every 20 s, so a connection that stays silent for
/// [`DEFAULT_READ_TIMEOUT`](Self::DEFAULT_READ_TIMEOUT) is treated as lost (a half-open
/// TCP connection after a network change would otherwise hang forever).
pub struct StreamConnection {
    socket: Socket,
    /// Set once the connection is closed, so later calls answer the same reason.
    closed: Option<StreamClosed>,
    read_timeout: Duration,
}

/// Why a stream connection closed, from the server's close code or from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamClosed {
    /// `4001`: a newer connection of this device took over (another process or task of
    /// the same device connected). Do not reconnect: that would take the stream back and
    /// the two would keep replacing each other.
    Replaced,
    /// `4002`: the server heard nothing (no frame, no pong) for its idle timeout.
    IdleTimeout,
    /// `4003`: this device was removed; its token no longer works. Final.
    DeviceRemoved,
    /// `4004`: the device did not read its stream for too long; reconnect and catch up.
    TooSlow,
    /// `4005`: the token this connection was opened with is no longer valid (this device
    /// logged in again, here or elsewhere, and got a new one). Reconnecting with the same
    /// token cannot work: log in again.
    TokenRevoked,
    /// `1001`: the server is shutting down (a restart or a deploy).
    GoingAway,
    /// `1011`: the server failed to read or encode the stream.
    ServerError,
    /// Another close code from the server (`1005` when its close frame had none).
    Other {
        /// The close code.
        code: u16,
    },
    /// The connection dropped without a close frame: a network failure, a reset, or
    /// nothing heard within the read timeout.
    ConnectionLost,
    /// This side closed the connection.
    ClosedByClient,
}

impl StreamClosed {
    /// The reason a close code from the server stands for.
    pub fn from_close_code(code: u16) -> Self {
        match code {
            close_code::REPLACED => StreamClosed::Replaced,
            close_code::IDLE_TIMEOUT => StreamClosed::IdleTimeout,
            close_code::DEVICE_REMOVED => StreamClosed::DeviceRemoved,
            close_code::TOO_SLOW => StreamClosed::TooSlow,
            close_code::TOKEN_REVOKED => StreamClosed::TokenRevoked,
            close_code::GOING_AWAY => StreamClosed::GoingAway,
            close_code::SERVER_ERROR => StreamClosed::ServerError,
            code => StreamClosed::Other { code },
        }
    }

    /// The close code the server sent, if it sent one.
    pub fn close_code(self) -> Option<u16> {
        match self {
            StreamClosed::Replaced => Some(close_code::REPLACED),
            StreamClosed::IdleTimeout => Some(close_code::IDLE_TIMEOUT),
            StreamClosed::DeviceRemoved => Some(close_code::DEVICE_REMOVED),
            StreamClosed::TooSlow => Some(close_code::TOO_SLOW),
            StreamClosed::TokenRevoked => Some(close_code::TOKEN_REVOKED),
            StreamClosed::GoingAway => Some(close_code::GOING_AWAY),
            StreamClosed::ServerError => Some(close_code::SERVER_ERROR),
            StreamClosed::Other { code } => Some(code),
            StreamClosed::ConnectionLost | StreamClosed::ClosedByClient => None,
        }
    }

    /// Whether opening a new connection (after a [`Backoff`](super::Backoff) delay) makes
    /// sense. Not after being replaced (another connection of this device has the stream),
    /// not after the device was removed (final) or its token revoked (a login is needed),
    /// not after closing it ourselves.
    pub fn should_reconnect(self) -> bool {
        !matches!(
            self,
            StreamClosed::Replaced
                | StreamClosed::DeviceRemoved
                | StreamClosed::TokenRevoked
                | StreamClosed::ClosedByClient
        )
    }
}

impl fmt::Display for StreamClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamClosed::Replaced => f.write_str("replaced by a newer connection of this device"),
            StreamClosed::IdleTimeout => f.write_str("idle timeout"),
            StreamClosed::DeviceRemoved => f.write_str("this device was removed"),
            StreamClosed::TooSlow => f.write_str("the device read its stream too slowly"),
            StreamClosed::TokenRevoked => {
                f.write_str("the token was replaced (this device logged in again)")
            }
            StreamClosed::GoingAway => f.write_str("the server is shutting down"),
            StreamClosed::ServerError => f.write_str("the server failed"),
            StreamClosed::Other { code } => write!(f, "closed by the server with code {code}"),
            StreamClosed::ConnectionLost => f.write_str("the connection was lost"),
            StreamClosed::ClosedByClient => f.write_str("closed by this client"),
        }
    }
}

impl fmt::Debug for StreamConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConnection")
            .field("closed", &self.closed)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl StreamConnection {
    /// How long [`next_frame`](Self::next_frame) waits for any frame (pings included)
    /// before counting the connection as lost: three of the server's 20 s pings and some.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(65);

    /// Opens the stream of the device `token` belongs to, on the server at `base_url`
    /// (`https` becomes `wss`, `http` becomes `ws`).
    ///
    /// `after` says the device has stored everything up to that sequence number: the
    /// server counts it as an acknowledgement and sends only later items, then
    /// `caughtUp`, then new items as they arrive. A refused upgrade is an
    /// [`Api`](TransportError::Api) error (`invalid_token`, `device_removed`, …).
    pub async fn connect(
        base_url: &Url,
        token: &AccessToken,
        after: Option<u64>,
    ) -> Result<Self, TransportError> {
        let url = stream_url(base_url, after)?;
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|_| TransportError::InvalidBaseUrl {
                    reason: "the URL cannot be used for a WebSocket",
                })?;
        let header = token
            .authorization_header()
            .map_err(|_| TransportError::MalformedToken)?;
        request.headers_mut().insert(AUTHORIZATION, header);

        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_SERVER_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_SERVER_MESSAGE_BYTES));
        let connector = match url.scheme() {
            "wss" => Connector::Rustls(
                tls::client_config()
                    .map_err(|error| TransportError::ClientSetup(Box::new(error)))?,
            ),
            _ => Connector::Plain,
        };
        // Nagle off: acknowledgements are small and should leave at once.
        let handshake = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(connector),
        );
        let (socket, _response) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return Err(handshake_error(error)),
            Err(elapsed) => {
                return Err(TransportError::network(NetworkErrorKind::Timeout, elapsed));
            }
        };
        Ok(Self {
            socket,
            closed: None,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
        })
    }

    /// Changes how long [`next_frame`](Self::next_frame) waits for any frame before the
    /// connection counts as lost (for servers configured to ping less often).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = timeout;
    }

    /// Why the connection closed, once it has.
    pub fn closed(&self) -> Option<StreamClosed> {
        self.closed
    }

    /// The next frame from the server: a stream item, `caughtUp`, or an `error` about a
    /// frame this side sent. Pings are answered on the way.
    ///
    /// Once the connection closes this returns [`TransportError::StreamClosed`] (now and on
    /// every later call). A frame this SDK does not understand is
    /// [`TransportError::UnexpectedFrame`], after which reading can go on.
    ///
    /// Cancel-safe: dropping the future (e.g. in `select!`) loses no frame.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, TransportError> {
        loop {
            if let Some(reason) = self.closed {
                return Err(closed(reason, None));
            }
            let message = match tokio::time::timeout(self.read_timeout, self.socket.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    return Err(self.lost(Some(Box::new(error))));
                }
                Ok(None) => return Err(self.lost(None)),
                Err(elapsed) => return Err(self.lost(Some(Box::new(elapsed)))),
            };
            match message {
                Message::Text(text) => return decode_frame(text.as_str()),
                Message::Binary(_) => {
                    return Err(TransportError::UnexpectedFrame { frame_type: None });
                }
                Message::Ping(_) => {
                    // The pong is queued already; send it now rather than with the next
                    // read. A failure here shows up on that read.
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.flush()).await;
                }
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    let reason = StreamClosed::from_close_code(
                        frame.map_or(u16::from(CloseCode::Status), |frame| u16::from(frame.code)),
                    );
                    self.closed = Some(reason);
                    // Sends the queued close answer, completing the closing handshake.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.flush()).await;
                    return Err(closed(reason, None));
                }
            }
        }
    }

    /// Acknowledges every item up to `seq` (cumulative). Only acknowledge what is
    /// durably stored: acknowledged items are never sent again.
    pub async fn ack_up_to(&mut self, seq: u64) -> Result<(), TransportError> {
        self.send_frame(&ClientFrame::Ack {
            up_to: Some(seq),
            seqs: Vec::new(),
        })
        .await
    }

    /// Acknowledges the listed items (in frames small enough for the server's limit).
    pub async fn ack_each(&mut self, seqs: &[u64]) -> Result<(), TransportError> {
        for chunk in seqs.chunks(MAX_SEQS_PER_ACK) {
            self.send_frame(&ClientFrame::Ack {
                up_to: None,
                seqs: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Closes the connection politely (close code 1000), waiting briefly for the
    /// server's answer. Unacknowledged items are sent again on the next connection.
    pub async fn close(mut self) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(StreamClosed::ClosedByClient);
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            if socket.close(Some(frame)).await.is_ok() {
                // Reads until the server's close answer ends the stream.
                while let Some(Ok(_)) = socket.next().await {}
            }
        })
        .await;
    }

    async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), TransportError> {
        if let Some(reason) = self.closed {
            return Err(closed(reason, None));
        }
        // Cannot fail for these frames (numbers only); mapped rather than unwrapped.
        let text = serde_json::to_string(frame)
            .map_err(|error| TransportError::ClientSetup(Box::new(error)))?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.lost(Some(Box::new(error)))),
            Err(elapsed) => Err(self.lost(Some(Box::new(elapsed)))),
        }
    }

    /// Marks the connection lost and returns the error saying so.
    fn lost(&mut self, cause: Option<BoxError>) -> TransportError {
        self.closed = Some(StreamClosed::ConnectionLost);
        closed(StreamClosed::ConnectionLost, cause)
    }
}

fn closed(reason: StreamClosed, cause: Option<BoxError>) -> TransportError {
    TransportError::StreamClosed { reason, cause }
}

/// `GET /v1/ws[?after=N]` on the server at `base_url`, with a WebSocket scheme.
fn stream_url(base_url: &Url, after: Option<u64>) -> Result<Url, TransportError> {
    let scheme = match base_url.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        _ => {
            return Err(TransportError::InvalidBaseUrl {
                reason: "the scheme must be https (or http for a local server)",
            });
        }
    };
    let mut url = endpoint(base_url, &["v1", "ws"])?;
    url.set_query(None);
    url.set_fragment(None);
    url.set_scheme(scheme)
        .map_err(|()| TransportError::InvalidBaseUrl {
            reason: "the URL cannot be used for a WebSocket",
        })?;
    if let Some(after) = after {
        url.query_pairs_mut()
            .append_pair("after", &after.to_string());
    }
    Ok(url)
}

/// A failed opening handshake: the server's refusal, or a network failure.
fn handshake_error(error: tungstenite::Error) -> TransportError {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(tungstenite::http::header::RETRY_AFTER)
                .map(tungstenite::http::HeaderValue::as_bytes);
            TransportError::from_error_answer(
                status,
                response.body().as_deref().unwrap_or(&[]),
                retry_after,
            )
        }
        tungstenite::Error::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            TransportError::network(NetworkErrorKind::Timeout, error)
        }
        error @ (tungstenite::Error::Io(_) | tungstenite::Error::Tls(_)) => {
            TransportError::network(NetworkErrorKind::Connect, error)
        }
        tungstenite::Error::Url(_) => TransportError::InvalidBaseUrl {
            reason: "the URL cannot be used for a WebSocket",
        },
        error => TransportError::network(NetworkErrorKind::Other, error),
    }
}

/// The control frames' `type` tags (see
/// [`ControlFrame`](courier_protocol::api::stream::ControlFrame)).
const CONTROL_TYPES: [&str; 2] = ["caughtUp", "error"];

/// Decodes a text frame; one this SDK does not know is reported by its `type` tag only
/// (frames carry ciphertexts, which stay out of errors): as
/// [`TransportError::UnknownItem`] when it is a stream item (it has a `seq`) of a type
/// neither [`StreamItem::TYPES`] nor a control frame, else as
/// [`TransportError::UnexpectedFrame`] (a known type that does not decode is not skipped:
/// that is a broken server, not a newer one).
fn decode_frame(text: &str) -> Result<ServerFrame, TransportError> {
    serde_json::from_str(text).map_err(|_| {
        #[derive(Deserialize)]
        struct Tagged {
            #[serde(rename = "type")]
            frame_type: String,
            #[serde(default)]
            seq: Option<u64>,
        }
        let Ok(tagged) = serde_json::from_str::<Tagged>(text) else {
            return TransportError::UnexpectedFrame { frame_type: None };
        };
        let known = StreamItem::TYPES.contains(&tagged.frame_type.as_str())
            || CONTROL_TYPES.contains(&tagged.frame_type.as_str());
        match tagged.seq {
            Some(seq) if !known => TransportError::UnknownItem {
                item_type: quoted(&tagged.frame_type),
                seq,
            },
            _ => TransportError::UnexpectedFrame {
                frame_type: Some(tagged.frame_type)
                    .filter(|tag| tag.len() <= MAX_QUOTED_FRAME_TYPE),
            },
        }
    })
}

/// At most [`MAX_QUOTED_FRAME_TYPE`] characters of a `type` tag.
fn quoted(tag: &str) -> String {
    tag.chars().take(MAX_QUOTED_FRAME_TYPE).collect()
}

#[cfg(test)]
mod tests {
    use courier_protocol::api::stream::ControlFrame;

    use super::*;

    #[test]
    fn close_codes_map_to_reasons_and_back() {
        for (code, reason, reconnect) in [
            (4001, StreamClosed::Replaced, false),
            (4002, StreamClosed::IdleTimeout, true),
            (4003, StreamClosed::DeviceRemoved, false),
            (4004, StreamClosed::TooSlow, true),
            (4005, StreamClosed::TokenRevoked, false),
            (1001, StreamClosed::GoingAway, true),
            (1011, StreamClosed::ServerError, true),
            (1000, StreamClosed::Other { code: 1000 }, true),
        ] {
            assert_eq!(StreamClosed::from_close_code(code), reason);
            assert_eq!(reason.close_code(), Some(code));
            assert_eq!(reason.should_reconnect(), reconnect, "{reason:?}");
        }
        assert!(StreamClosed::ConnectionLost.should_reconnect());
        assert!(!StreamClosed::ClosedByClient.should_reconnect());
    }

    #[test]
    fn stream_urls_switch_scheme_and_carry_the_cursor() {
        let base: Url = "https://example.com/courier".parse().unwrap();
        assert_eq!(
            stream_url(&base, Some(7)).unwrap().as_str(),
            "wss://example.com/courier/v1/ws?after=7"
        );
        let local: Url = "http://127.0.0.1:8080/".parse().unwrap();
        assert_eq!(
            stream_url(&local, None).unwrap().as_str(),
            "ws://127.0.0.1:8080/v1/ws"
        );
    }

    #[test]
    fn an_item_of_an_unknown_type_is_reported_with_its_seq_to_acknowledge() {
        let error =
            decode_frame(r#"{"type":"reaction","seq":12,"secret":"ciphertext"}"#).unwrap_err();
        assert!(matches!(
            &error,
            TransportError::UnknownItem { item_type, seq: 12 } if item_type == "reaction"
        ));
        assert!(!format!("{error:?} {error}").contains("ciphertext"));
        // A known item type that does not decode is not skipped.
        assert!(matches!(
            decode_frame(r#"{"type":"envelope","seq":13}"#).unwrap_err(),
            TransportError::UnexpectedFrame { frame_type: Some(tag) } if tag == "envelope"
        ));
        // Nor a control frame, which has no seq to acknowledge.
        assert!(matches!(
            decode_frame(r#"{"type":"caughtUp","seq":14}"#).unwrap_err(),
            TransportError::UnexpectedFrame { .. }
        ));
        let long = "x".repeat(100);
        let error = decode_frame(&format!(r#"{{"type":"{long}","seq":1}}"#)).unwrap_err();
        assert!(matches!(
            error,
            TransportError::UnknownItem { item_type, seq: 1 } if item_type.len() == 64
        ));
    }

    #[test]
    fn unknown_frames_are_reported_by_type_only() {
        assert_eq!(
            decode_frame(r#"{"type":"caughtUp","cursor":3}"#).unwrap(),
            ServerFrame::Control(ControlFrame::CaughtUp { cursor: 3 })
        );
        let error = decode_frame(r#"{"type":"receipt","secret":"ciphertext"}"#).unwrap_err();
        assert!(matches!(
            &error,
            TransportError::UnexpectedFrame { frame_type: Some(tag) } if tag == "receipt"
        ));
        assert!(!format!("{error:?} {error}").contains("ciphertext"));
    }
}

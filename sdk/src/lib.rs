//! Courier's client SDK.
//!
//! - [`app`]: what an app uses, and what the iOS, Android, Python and Electron bindings
//!   wrap: [`app::CourierClient`] (register, with a registration token where the server
//!   asks for one, log in, send, the receive loop with an [`app::EventListener`], devices
//!   and trust, channels, receipts, log out, delete the account), one flat
//!   [`app::CourierError`].
//! - [`client`]: [`client::Client`], the crypto core and the network together, which the
//!   app surface wraps (Rust tests and tools use it directly).
//! - [`crypto`]: the sans-I/O crypto core over the store.
//! - [`transport`]: the typed HTTP and WebSocket client.
//! - [`store`]: the encrypted persistent store. Values are encrypted and lookup keys are
//!   hashed under a key the app keeps in the platform's key store, so the database file
//!   alone reveals neither.
//!
//! ```
//! use courier_sdk::store::{SqliteStore, StoreError, StoreKey};
//!
//! // In an app the key comes from the iOS Keychain or the Android Keystore.
//! let key = StoreKey::from_bytes([7u8; 32]);
//! let store = SqliteStore::open_in_memory(&key)?;
//!
//! // A received message and the cursor that says it was received commit together.
//! store.transaction(|tx| {
//!     tx.put("received_messages", b"@bob/device-7", b"message-1", b"hello")?;
//!     tx.put("cursor", b"", b"stream", &1u64.to_be_bytes())?;
//!     Ok::<_, StoreError>(())
//! })?;
//!
//! let message = store.get("received_messages", b"@bob/device-7", b"message-1")?;
//! assert_eq!(message.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(store.list("received_messages", b"@bob/device-7")?.len(), 1);
//!
//! // An error returned from the closure rolls everything in it back.
//! let result = store.transaction(|tx| {
//!     tx.delete("received_messages", b"@bob/device-7", b"message-1")?;
//!     Err::<(), _>(StoreError::WrongKey)
//! });
//! assert!(result.is_err());
//! assert!(store.get("received_messages", b"@bob/device-7", b"message-1")?.is_some());
//! # Ok::<(), StoreError>(())
//! ```

pub mod app;
pub mod client;
pub mod crypto;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod transport;

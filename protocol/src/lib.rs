//! Courier's wire protocol: the request and response bodies of the HTTP API, the one
//! error body every failure uses, the identifiers, the canonical byte encodings that
//! devices sign their keys over, and the strict JSON parsing the server reads requests
//! with ([`strict_json`]).
//!
//! The server and the SDK both depend on this crate, so no wire struct is written twice
//! and a signature made by the SDK is checked by the server over exactly the same bytes.
//!
//! ```
//! use courier_protocol::{DeviceId, UserId, signing};
//! use ed25519_dalek::{Signer, SigningKey};
//!
//! let user = UserId::new_random();
//! let device = DeviceId::new(1).expect("1 is a valid device ID");
//! let signing_key = SigningKey::from_bytes(&[7u8; 32]);
//! let curve25519 = [9u8; 32];
//! let ed25519 = signing_key.verifying_key().to_bytes();
//!
//! let payload = signing::identity_keys_payload(user, device, &curve25519, &ed25519);
//! let signature = signing_key.sign(&payload).to_bytes();
//! assert!(signing::verify_identity_keys(user, device, &curve25519, &ed25519, &signature).is_ok());
//!
//! // The same keys signed for another device do not verify: a signature binds the device.
//! let other = DeviceId::new(2).expect("2 is a valid device ID");
//! assert!(signing::verify_identity_keys(user, other, &curve25519, &ed25519, &signature).is_err());
//! ```

pub mod api;
pub mod error;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod signing;
pub mod strict_json;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use ids::{DeviceId, InvalidDeviceId, UserId};

/// The path prefix of every versioned Courier API route.
pub const API_PREFIX: &str = "/v1";

//! Request and response bodies of the HTTP API, one module per resource. Field names are
//! camelCase on the wire. Key material travels as unpadded base64 strings, decoded and
//! checked by the server (so a bad field gets its own error code, not a generic one).

pub mod accounts;
pub mod channels;
pub mod devices;
pub mod errors;
pub mod keys;
pub mod messages;
pub mod receipts;
pub mod stream;

/// Writes `[redacted]` for a secret field in a `Debug` implementation.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

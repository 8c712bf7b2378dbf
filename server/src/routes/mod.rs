//! HTTP handlers, one module per resource. Each handler checks its input, calls `db`, and
//! answers JSON or an [`ApiError`](crate::ApiError). The `#[utoipa::path]` annotations
//! are the OpenAPI document: the router is built from them, so the two cannot drift.

pub mod accounts;
pub mod channels;
pub mod devices;
pub mod health;
pub mod inbox;
pub mod keys;
pub mod messages;
pub mod receipts;

/// OpenAPI tag names.
pub mod tags {
    pub const ACCOUNTS: &str = "accounts";
    pub const DEVICES: &str = "devices";
    pub const KEYS: &str = "keys";
    pub const MESSAGES: &str = "messages";
    pub const OPERATIONS: &str = "operations";
    pub const RECEIPTS: &str = "receipts";
    pub const CHANNELS: &str = "channels";
}

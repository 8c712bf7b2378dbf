//! Shared state handed to every handler, and the runtime settings.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::auth::{Passwords, TokenCache};
use crate::delivery::Hub;
use crate::delivery::acks::AckSender;
use crate::metrics::Metrics;

/// Runtime limits and timings of a server instance (from [`Config`](crate::Config) in the
/// binary; tests build them directly).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Active devices a user may have at once.
    pub device_limit: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest envelope ciphertext accepted, in bytes (decoded).
    pub max_envelope_bytes: usize,
    /// Most envelopes one message may carry.
    pub max_envelopes_per_message: usize,
    /// Undelivered envelopes older than this are deleted.
    pub envelope_ttl: Duration,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// Rows the retention task deletes per statement.
    pub retention_batch: i64,
    /// How long an authenticated token is remembered without asking the database.
    pub token_cache_ttl: Duration,
    /// Password hashes computed at once (each Argon2id hash holds 19 MiB).
    pub max_concurrent_password_hashes: usize,
    /// How often the server pings an idle WebSocket.
    pub ws_ping_interval: Duration,
    /// A WebSocket with no frame from the client for this long is closed.
    pub ws_idle_timeout: Duration,
    /// A WebSocket whose client does not take a frame for this long is closed.
    pub ws_send_timeout: Duration,
    /// Items buffered per connection for live push; past this the device catches up
    /// from its inbox instead.
    pub ws_push_buffer: usize,
    /// Shortest time between two batches of acknowledgements written.
    pub ack_batch_interval: Duration,
    /// How this process reaches the others sharing its database.
    pub fabric: crate::delivery::fabric::FabricKind,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            device_limit: 5,
            max_body_bytes: 1024 * 1024,
            max_envelope_bytes: 64 * 1024,
            max_envelopes_per_message: 100,
            envelope_ttl: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
            retention_batch: 1000,
            token_cache_ttl: Duration::from_secs(10),
            max_concurrent_password_hashes: std::thread::available_parallelism()
                .map_or(2, |n| n.get().max(2)),
            ws_ping_interval: Duration::from_secs(20),
            ws_idle_timeout: Duration::from_secs(60),
            ws_send_timeout: Duration::from_secs(30),
            ws_push_buffer: 64,
            ack_batch_interval: Duration::from_millis(200),
            fabric: crate::delivery::fabric::FabricKind::Postgres,
        }
    }
}

/// Handler state: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub passwords: Passwords,
    pub tokens: Arc<TokenCache>,
    /// Device lists the send writer checks sends against.
    pub device_lists: Arc<crate::device_lists::DeviceLists>,
    pub hub: Arc<Hub>,
    pub acks: AckSender,
    pub sends: crate::sends::SendQueue,
    pub metrics: Arc<Metrics>,
    /// Signals to the other server processes.
    pub fabric: crate::delivery::fabric::Fabric,
}

impl AppState {
    /// After a user's device list changed (a device registered, or its identity keys
    /// published): this process and the others check sends against the new list.
    pub fn devices_changed(&self, user_id: courier_protocol::UserId) {
        self.device_lists.forget(user_id);
        self.fabric
            .publish(crate::delivery::fabric::Signal::DevicesChanged { user: user_id });
    }

    /// After a device was removed: its cached token is forgotten and its socket closed.
    pub fn device_removed(
        &self,
        user_id: courier_protocol::UserId,
        device_id: courier_protocol::DeviceId,
    ) {
        self.tokens.forget_device(user_id, device_id);
        self.device_lists.forget(user_id);
        self.fabric
            .publish(crate::delivery::fabric::Signal::Removed {
                device: (user_id, device_id),
            });
        self.hub.close_device(
            (user_id, device_id),
            courier_protocol::api::stream::close_code::DEVICE_REMOVED,
        );
    }
}

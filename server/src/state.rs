//! Shared state handed to every handler.

use std::sync::Arc;

use courier_protocol::api::keys::DeviceRef;
use sqlx::PgPool;

use crate::config::Settings;
use crate::delivery::Hub;
use crate::delivery::acks::AckSender;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::tokens::TokenCache;

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
    pub sends: crate::sends::Sends,
    pub metrics: Arc<Metrics>,
    /// Rate limits per address, account and device (this process's own).
    pub rate_limits: Arc<crate::rate_limits::RateLimits>,
    /// Signals to the other server processes.
    pub fabric: crate::delivery::fabric::Fabric,
}

impl AppState {
    /// What a device's WebSocket connection uses of the server.
    pub fn connection_context(&self) -> crate::delivery::connection::Context {
        crate::delivery::connection::Context {
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            fabric: self.fabric.clone(),
            acks: self.acks.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
        }
    }

    /// After a user's device list changed (a device registered, or its identity keys
    /// published): this process and the others check sends against the new list.
    pub fn devices_changed(&self, user_id: courier_protocol::UserId) {
        self.device_lists.forget(user_id);
        self.fabric
            .publish(crate::delivery::fabric::Signal::DevicesChanged { user: user_id });
    }

    /// After a device got a new token (it logged in again): its older tokens stop working
    /// in every process, and its sockets opened with them close (here before this
    /// returns; elsewhere when the fabric's signal arrives).
    pub async fn token_replaced(&self, device: DeviceRef) {
        self.tokens.forget_device(device.user_id, device.device_id);
        self.fabric
            .publish(crate::delivery::fabric::Signal::TokenReplaced { device });
        crate::delivery::close_revoked(&self.hub, &self.pool, Some(&[device])).await;
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
                device: DeviceRef::new(user_id, device_id),
            });
        self.hub.close_device(
            DeviceRef::new(user_id, device_id),
            courier_protocol::api::stream::close_code::DEVICE_REMOVED,
        );
    }
}

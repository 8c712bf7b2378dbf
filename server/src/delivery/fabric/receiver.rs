//! What a process does with the other processes' signals.

use std::sync::Arc;

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::stream::close_code;
use sqlx::PgPool;

use super::Signal;
use super::codec::signals_from;
use crate::delivery::Hub;
use crate::tokens::TokenCache;

/// What a process does with the others' signals.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub hub: Arc<Hub>,
    pub tokens: Arc<TokenCache>,
    pub device_lists: Arc<crate::device_lists::DeviceLists>,
    /// Reads the signalled items (one query per payload for every local device).
    pub pool: PgPool,
}

impl Receiver {
    fn apply(&self, signal: Signal) {
        match signal {
            Signal::Items { device, .. } => self.hub.read_stream(device),
            Signal::Removed { device } => {
                self.tokens.forget_device(device.user_id, device.device_id);
                self.device_lists.forget(device.user_id);
                self.hub.close_device(device, close_code::DEVICE_REMOVED);
            }
            Signal::TokenReplaced { device } => {
                self.tokens.forget_device(device.user_id, device.device_id);
                if self.hub.is_connected(device) {
                    self.close_revoked(Some(vec![device]));
                }
            }
            Signal::Connected { device, at_ms } => self.hub.replaced_elsewhere(device, at_ms),
            Signal::DevicesChanged { user } => self.device_lists.forget(user),
            Signal::Resync => self.missed(),
        }
    }

    /// Applies a payload from the transport, unless `process` (this one) sent it. The new
    /// items of devices connected here are read in one query for the whole payload and
    /// pushed like local sends (instead of one stream read per device); if that read
    /// fails, those devices reread their streams.
    pub(super) fn apply_payload(&self, process: &str, payload: &str) {
        let mut items = Vec::new();
        for signal in signals_from(process, payload) {
            match signal {
                Signal::Items { device, seq } if self.hub.is_connected(device) => {
                    items.push((device, seq));
                }
                Signal::Items { .. } => {}
                other => self.apply(other),
            }
        }
        if items.is_empty() {
            return;
        }
        let receiver = self.clone();
        tokio::spawn(async move {
            match crate::db::stream::items_at(&receiver.pool, &items).await {
                Ok(found) => {
                    for (device, item) in found {
                        crate::delivery::push_item(&receiver.hub, device, item);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read signalled items");
                    for (device, _) in items {
                        receiver.hub.read_stream(device);
                    }
                }
            }
        });
    }

    /// Closes the sockets here (of `devices`, or all) whose token is no longer valid.
    fn close_revoked(&self, devices: Option<Vec<DeviceRef>>) {
        let receiver = self.clone();
        tokio::spawn(async move {
            crate::delivery::close_revoked(&receiver.hub, &receiver.pool, devices.as_deref()).await;
        });
    }

    /// Signals may have been missed: cached tokens and device lists are forgotten, every
    /// local socket's token is checked again and every local socket rereads its stream.
    pub(super) fn missed(&self) {
        self.tokens.forget_all();
        self.device_lists.forget_all();
        self.close_revoked(None);
        self.hub.read_all_streams();
    }
}

//! The client's side of channels and receipts: group sends (sharing the session with
//! member devices first), stream items other than envelopes, read state, delivery state
//! and privacy settings.

use courier_protocol::api::channels::{Channel, GroupMessage, SenderKeyDistribution};
use courier_protocol::api::receipts::{
    DeliveryState, MarkReadResponse, PrivacySettings, UpdatePrivacySettings,
};

use super::*;
use crate::crypto::ItemOutcome;
use crate::transport::GroupSendOutcome;

impl Client {
    /// Creates a channel of this user and `members`.
    pub async fn create_channel(&self, members: &[UserId]) -> Result<Channel, ClientError> {
        Ok(self.live_api()?.create_channel(members).await?)
    }

    /// A channel this user is a member of: its members and their devices.
    pub async fn channel(&self, channel_id: Uuid) -> Result<Channel, ClientError> {
        Ok(self.live_api()?.channel(channel_id).await?)
    }

    /// Adds members to a channel. They read what is sent from now on: each sender shares
    /// its session with their devices at its current index.
    pub async fn add_channel_members(
        &self,
        channel_id: Uuid,
        members: &[UserId],
    ) -> Result<Channel, ClientError> {
        Ok(self
            .live_api()?
            .add_channel_members(channel_id, members)
            .await?)
    }

    /// Leaves a channel (this user) or removes a member (the creator only). Every
    /// sender's next message goes under a new session the removed user never gets.
    pub async fn remove_channel_member(
        &self,
        channel_id: Uuid,
        user_id: UserId,
    ) -> Result<(), ClientError> {
        Ok(self
            .live_api()?
            .remove_channel_member(channel_id, user_id)
            .await?)
    }

    /// Sends `body` to every member device of a channel under a new client message ID.
    pub async fn send_group(
        &self,
        channel_id: Uuid,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        let client_message_id = Uuid::new_v4().simple().to_string();
        self.send_group_with_id(channel_id, &client_message_id, body)
            .await
    }

    /// Sends a group message under the given client message ID: reads the channel's
    /// member devices, starts or rotates this device's session as needed, shares it with
    /// every member device that lacks it (opening Olm sessions where needed), then sends
    /// the message encrypted once. A refusal for missing sender keys (a device joined
    /// meanwhile) starts over, a bounded number of times.
    ///
    /// Kept in the outbox as [`Client::send_with_id`] keeps a direct message.
    pub async fn send_group_with_id(
        &self,
        channel_id: Uuid,
        client_message_id: &str,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        let target = OutgoingTarget::Channel(channel_id);
        self.keep_outgoing(&target, client_message_id, body).await?;
        let result = self
            .send_group_kept(channel_id, client_message_id, body)
            .await;
        self.settle_outgoing(target, client_message_id, &result)
            .await?;
        result
    }

    /// [`Client::send_group_with_id`] without the outbox.
    pub(super) async fn send_group_kept(
        &self,
        channel_id: Uuid,
        client_message_id: &str,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        // Shared with each blocking-pool task instead of copied into it.
        let client_message_id: Arc<str> = client_message_id.into();
        let body: Arc<[u8]> = body.into();
        for _ in 0..MAX_SEND_ATTEMPTS {
            let channel = self.live_api()?.channel(channel_id).await?;
            self.share_session(&channel).await?;
            let (id, plaintext) = (client_message_id.clone(), body.clone());
            let request = self
                .with_machine(move |m| {
                    m.encrypt_group_message(channel_id, &id, &plaintext, now_ms())
                })
                .await??;
            let mut backoff = Backoff::new(BackoffPolicy::default());
            let mut network_retries = 0;
            let outcome = loop {
                match self
                    .live_api()?
                    .send_group_message(channel_id, &request)
                    .await
                {
                    Err(error) if error.is_retryable() && network_retries < 5 => {
                        network_retries += 1;
                        // The server's Retry-After paces it; a long one goes to the app.
                        let Some(delay) = backoff.delay_after(&error) else {
                            return Err(error.into());
                        };
                        tokio::time::sleep(delay).await;
                    }
                    result => break result?,
                }
            };
            match outcome {
                GroupSendOutcome::Sent(response) => {
                    let (id, sent) = (client_message_id.clone(), response.clone());
                    self.with_machine(move |m| m.record_group_sent(channel_id, &id, &sent))
                        .await??;
                    return Ok(response);
                }
                GroupSendOutcome::MissingSenderKeys(missing) => {
                    let mut users: Vec<UserId> =
                        missing.devices.iter().map(|d| d.user_id).collect();
                    users.sort();
                    users.dedup();
                    for user in users {
                        self.refresh_devices(user).await?;
                    }
                }
            }
        }
        Err(ClientError::DeviceListsUnsettled)
    }

    /// Shares this device's session for the channel with every member device that does
    /// not hold it, rotating it first when the rules say so.
    async fn share_session(&self, channel: &Channel) -> Result<(), ClientError> {
        // Bounded: each round fetches a device list or opens sessions.
        let channel_id = channel.channel_id;
        for _ in 0..2 * MAX_SEND_ATTEMPTS {
            let members = channel.devices.clone();
            let attempt = self
                .with_machine(move |machine| {
                    machine.channel_targets(&members).and_then(|targets| {
                        machine.prepare_sender_keys(channel_id, &targets, now_ms())
                    })
                })
                .await?;
            match attempt {
                Ok(None) => return Ok(()),
                Ok(Some(share)) => {
                    self.live_api()?
                        .upload_sender_keys(channel_id, &share.request)
                        .await?;
                    self.with_machine(move |m| m.commit_sender_keys(&share))
                        .await??;
                    return Ok(());
                }
                Err(MachineError::NoSuchDevice(device)) => {
                    self.refresh_devices(device.user_id).await?;
                    let unlisted = self
                        .read_machine(move |m| m.channel_targets(&[device]).is_err())
                        .await?;
                    if unlisted {
                        // Listed by the channel but not by the key directory: it was
                        // removed meanwhile; the next channel read will not list it.
                        return Err(ClientError::DeviceListsUnsettled);
                    }
                }
                Err(MachineError::MissingSessions(devices)) => {
                    self.open_sessions(devices).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClientError::DeviceListsUnsettled)
    }

    /// Stores one stream item other than an envelope (no acknowledgement: acknowledge it
    /// after this returns). Items from a device this device does not know make it fetch
    /// the sender's device list first. A `oneTimeKeysLow` notice tops up the one-time keys
    /// ([`Client::maintain_keys`]) before this returns.
    pub async fn process_item(&self, item: &StreamItem) -> Result<ItemOutcome, ClientError> {
        match item {
            StreamItem::Envelope(envelope) => Ok(match self.process_envelope(envelope).await? {
                Decrypted::Message(_) => ItemOutcome::Stored,
                Decrypted::Duplicate => ItemOutcome::Duplicate,
                Decrypted::Failed(reason) => ItemOutcome::Failed(reason),
            }),
            StreamItem::GroupMessage(message) => self.process_group_message(message).await,
            StreamItem::SenderKey(key) => self.process_sender_key(key).await,
            // Claims took this device's one-time keys low while it stays connected (the
            // top-ups at login and at `caughtUp` would not come until it reconnects).
            // No app event; a redelivery tops up again, which uploads only if needed.
            StreamItem::OneTimeKeysLow { .. } => {
                self.maintain_keys().await?;
                Ok(ItemOutcome::Stored)
            }
            other => {
                let item = other.clone();
                Ok(self
                    .with_machine(move |m| m.record_stream_event(&item))
                    .await??)
            }
        }
    }

    async fn process_group_message(&self, item: &GroupMessage) -> Result<ItemOutcome, ClientError> {
        let owned = item.clone();
        let first = self
            .with_machine(move |m| m.decrypt_group_message(&owned))
            .await?;
        match first {
            Err(MachineError::UnknownSender(sender)) => {
                self.refresh_devices(sender.user_id).await?;
            }
            other => return Ok(other?),
        }
        let item = item.clone();
        Ok(self
            .with_machine(move |m| match m.decrypt_group_message(&item) {
                // Still unknown: recorded as unreadable, so it is acknowledged.
                Err(MachineError::UnknownSender(sender)) => m.reject_group_item(
                    item.channel_id,
                    sender,
                    Some(item.message_id),
                    FailureReason::UnknownSender,
                ),
                other => other,
            })
            .await??)
    }

    async fn process_sender_key(
        &self,
        item: &SenderKeyDistribution,
    ) -> Result<ItemOutcome, ClientError> {
        let owned = item.clone();
        let first = self
            .with_machine(move |m| m.process_sender_key(&owned))
            .await?;
        match first {
            Err(MachineError::UnknownSender(sender)) => {
                self.refresh_devices(sender.user_id).await?;
            }
            other => return Ok(other?),
        }
        let item = item.clone();
        Ok(self
            .with_machine(move |m| match m.process_sender_key(&item) {
                Err(MachineError::UnknownSender(sender)) => {
                    m.reject_group_item(item.channel_id, sender, None, FailureReason::UnknownSender)
                }
                other => other,
            })
            .await??)
    }

    /// Marks a message read, or (`up_to`) everything up to it in its conversation. This
    /// user's other devices get the read state; the senders get read receipts as the
    /// privacy settings allow.
    pub async fn mark_read(
        &self,
        message_id: Uuid,
        up_to: bool,
    ) -> Result<MarkReadResponse, ClientError> {
        Ok(self.live_api()?.mark_read(message_id, up_to).await?)
    }

    /// A message this user sent: which recipient devices have it, and who read it.
    pub async fn delivery_state(&self, message_id: Uuid) -> Result<DeliveryState, ClientError> {
        Ok(self.live_api()?.delivery_state(message_id).await?)
    }

    /// This user's read-receipt privacy settings.
    pub async fn privacy_settings(&self) -> Result<PrivacySettings, ClientError> {
        Ok(self.live_api()?.privacy_settings().await?)
    }

    /// Changes this user's read-receipt privacy settings.
    pub async fn set_privacy_settings(
        &self,
        update: UpdatePrivacySettings,
    ) -> Result<PrivacySettings, ClientError> {
        Ok(self.live_api()?.update_privacy_settings(&update).await?)
    }
}

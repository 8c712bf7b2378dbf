//! Channels in the crypto core: sharing this device's Megolm session with member devices
//! over Olm, encrypting group messages, taking in sender keys and group messages from the
//! stream, and queueing receipts and membership changes for the app.
//!
//! Deduplication, so nothing reaches the app twice when the stream redelivers:
//! group messages by server message ID (as envelopes), sender keys by (channel, sender
//! device, session ID), and receipts and membership changes by stream position (items
//! arrive in `seq` order; the highest one handled is stored with its event).

use courier_protocol::api::channels::{
    DeviceSenderKey, GroupMessage, SendGroupMessageRequest, SenderKeyDistribution,
    UploadSenderKeysRequest,
};
use courier_protocol::api::stream::StreamItem;
use zeroize::Zeroizing;

use super::*;
use crate::crypto::group::{GroupDecrypted, GroupError, GroupSessions, IncomingGroupMessage};

/// Sender keys to upload before a group message can go (see
/// [`CryptoMachine::prepare_sender_keys`]).
#[derive(Debug, Clone)]
pub struct SenderKeyShare {
    /// The channel.
    pub channel_id: Uuid,
    /// The upload.
    pub request: UploadSenderKeysRequest,
    shared: Vec<BoundDevice>,
}

/// What became of a stream item other than an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Taken in; its event (if it has one) is queued for the app.
    Stored,
    /// Handled before (a redelivery): nothing new.
    Duplicate,
    /// Not readable; the failure is queued for the app.
    Failed(FailureReason),
}

const ITEMS_THROUGH: &[u8] = b"items_through";

fn bound(record: &DeviceRecord) -> BoundDevice {
    BoundDevice {
        user_id: record.user_id,
        device_id: record.device_id,
        key: record.keys.curve25519,
    }
}

fn failure_of(error: GroupError) -> FailureReason {
    match error {
        GroupError::Malformed => FailureReason::Malformed,
        GroupError::UnknownSession
        | GroupError::Undecryptable
        | GroupError::IndexBeforeFirstKnown { .. } => FailureReason::Undecryptable,
        GroupError::SenderMismatch => FailureReason::WrongSender,
        GroupError::ChannelMismatch => FailureReason::WrongConversation,
        GroupError::Plaintext(error) => FailureReason::from(error),
        other => FailureReason::Rejected(other.to_string()),
    }
}

impl CryptoMachine {
    fn group_sessions(&self) -> GroupSessions {
        GroupSessions::new(self.own, self.keys)
    }

    /// The devices a group message must reach, from the server's list of the channel's
    /// member devices (this one left out). Each must be in this device's records (else
    /// [`MachineError::NoSuchDevice`]: refresh its user's device list) and not blocked.
    pub fn channel_targets(
        &self,
        member_devices: &[DeviceRef],
    ) -> Result<Vec<DeviceRecord>, MachineError> {
        let mut targets = Vec::with_capacity(member_devices.len());
        let mut blocked = Vec::new();
        for device in member_devices.iter().filter(|d| **d != self.own) {
            let record = self
                .device(*device)?
                .filter(|r| !r.removed)
                .ok_or(MachineError::NoSuchDevice(*device))?;
            if record.trust.allows_messages() {
                targets.push(record);
            } else {
                blocked.push(*device);
            }
        }
        if !blocked.is_empty() {
            return Err(MachineError::BlockedDevices(blocked));
        }
        Ok(targets)
    }

    /// Makes sure this device's session for the channel may be used with `targets`
    /// (starting a new one when there is none, after 100 messages, after a week, or when
    /// a device it was shared with is no longer a target), and encrypts its key for each
    /// target that does not hold it yet. The Olm sessions this advances are stored before
    /// it returns. Upload the request, then call [`Self::commit_sender_keys`]. `None`:
    /// every target holds the key.
    pub fn prepare_sender_keys(
        &mut self,
        channel_id: Uuid,
        targets: &[DeviceRecord],
        now_ms: u64,
    ) -> Result<Option<SenderKeyShare>, MachineError> {
        let group = self.group_sessions();
        let members: Vec<BoundDevice> = targets.iter().map(bound).collect();
        let session = match group.outbound(&self.store, channel_id)? {
            Some(session) if !session.needs_rotation(now_ms, &members) => session,
            _ => self
                .store
                .transaction(|tx| group.create_outbound(tx, channel_id, now_ms))?,
        };
        let to_share = session.devices_to_share_with(&members);
        if to_share.is_empty() {
            return Ok(None);
        }
        let records: Vec<DeviceRecord> = targets
            .iter()
            .filter(|t| {
                to_share
                    .iter()
                    .any(|b| b.user_id == t.user_id && b.device_id == t.device_id)
            })
            .cloned()
            .collect();
        let missing = self.devices_without_session(&records)?;
        if !missing.is_empty() {
            return Err(MachineError::MissingSessions(missing));
        }
        let mut distributions = Vec::with_capacity(records.len());
        let mut touched = Vec::with_capacity(records.len());
        for record in &records {
            let payload = group.sender_key_payload(&session, bound(record), now_ms)?;
            let (envelope_type, ciphertext) = self.olm_encrypt(record.device_ref(), &payload)?;
            distributions.push(DeviceSenderKey {
                user_id: record.user_id,
                device_id: record.device_id,
                envelope_type,
                ciphertext,
            });
            touched.push(record.device_ref());
        }
        self.store_sessions(&touched)?;
        Ok(Some(SenderKeyShare {
            channel_id,
            request: UploadSenderKeysRequest {
                session_id: session.session_id().to_owned(),
                distributions,
            },
            shared: to_share,
        }))
    }

    /// The server stored the sender keys: their devices hold the session now.
    pub fn commit_sender_keys(&mut self, share: &SenderKeyShare) -> Result<(), MachineError> {
        let group = self.group_sessions();
        self.store.transaction(|tx| {
            let Some(mut session) = group.load_outbound(tx, share.channel_id)? else {
                return Ok(());
            };
            // Rotated meanwhile: the new session is shared on its own.
            if session.session_id() == share.request.session_id {
                session.mark_shared(&share.shared);
                group.save_outbound(tx, &session)?;
            }
            Ok::<_, GroupError>(())
        })?;
        Ok(())
    }

    /// Encrypts a group message with this device's current session for the channel
    /// ([`Self::prepare_sender_keys`] first). The session's advance is stored before this
    /// returns.
    pub fn encrypt_group_message(
        &mut self,
        channel_id: Uuid,
        client_message_id: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<SendGroupMessageRequest, MachineError> {
        let group = self.group_sessions();
        let encrypted = self.store.transaction(|tx| {
            let mut session = group
                .load_outbound(tx, channel_id)?
                .ok_or(GroupError::UnknownSession)?;
            group.encrypt(tx, &mut session, client_message_id, now_ms, body)
        })?;
        Ok(SendGroupMessageRequest {
            client_message_id: client_message_id.to_owned(),
            session_id: encrypted.session_id,
            ciphertext: encode_base64(&encrypted.ciphertext),
        })
    }

    /// Takes in a sender key from the stream: Olm-decrypts it, checks that it names this
    /// channel, its sender and this device, and stores the inbound session with the Olm
    /// session it advanced, in one transaction. Acknowledge the item only after `Ok`
    /// ([`MachineError::UnknownSender`]: refresh the sender's device list, try again).
    pub fn process_sender_key(
        &mut self,
        item: &SenderKeyDistribution,
    ) -> Result<ItemOutcome, MachineError> {
        let sender = DeviceRef {
            user_id: item.sender_user_id,
            device_id: item.sender_device_id,
        };
        let group = self.group_sessions();
        if group.has_inbound(&self.store, item.channel_id, sender, &item.session_id)? {
            return Ok(ItemOutcome::Duplicate);
        }
        let (record, refused) = self.sender_record(sender)?;
        let decrypted = match refused {
            Some(reason) => Err(reason),
            None => self.olm_open(item, &record),
        };
        let account_changed = matches!(decrypted, Ok((_, true)));
        let account = account_changed.then(|| self.account_record());
        let session = self.current_session(sender);
        let signer = BoundDevice {
            user_id: sender.user_id,
            device_id: sender.device_id,
            key: record.keys.ed25519,
        };
        let channel_id = item.channel_id;
        let session_id = item.session_id.as_str();
        let written = self.store.transaction(|tx| {
            if let Some(account) = &account {
                records::put(tx, records::ACCOUNT, b"", b"account", account)?;
            }
            if let Some(session) = &session {
                put_session(tx, sender, session)?;
            }
            let reason = match decrypted {
                Ok((payload, _)) => {
                    match group.add_inbound(tx, channel_id, session_id, signer, &payload) {
                        Ok(_) => None,
                        Err(GroupError::Store(error)) => return Err(GroupError::Store(error)),
                        Err(error) => Some(failure_of(error)),
                    }
                }
                Err(reason) => Some(reason),
            };
            if let Some(reason) = &reason {
                queue_event(
                    tx,
                    &Event::GroupDecryptionFailed {
                        channel_id,
                        sender,
                        message_id: None,
                        reason: reason.clone(),
                    },
                )?;
            }
            Ok(reason)
        });
        match written {
            Ok(None) => Ok(ItemOutcome::Stored),
            Ok(Some(reason)) => Ok(ItemOutcome::Failed(reason)),
            Err(error) => {
                // Memory ran ahead of the store: go back to what is stored.
                self.sessions.remove(&sender);
                if account_changed {
                    self.reload_account();
                }
                Err(MachineError::Group(error))
            }
        }
    }

    /// Records a sender key (`message_id: None`) or a group message whose sender device
    /// cannot be known, even after its user's device list was fetched again (it was removed
    /// before this device ever learned it), as unreadable: the failure is queued for the app
    /// and the item can be acknowledged, instead of failing on every delivery and holding
    /// up the stream behind it. A group message's redelivery is then a duplicate.
    pub fn reject_group_item(
        &mut self,
        channel_id: Uuid,
        sender: DeviceRef,
        message_id: Option<Uuid>,
        reason: FailureReason,
    ) -> Result<ItemOutcome, MachineError> {
        if let Some(message_id) = message_id
            && self.already_received(message_id)?
        {
            return Ok(ItemOutcome::Duplicate);
        }
        let event = Event::GroupDecryptionFailed {
            channel_id,
            sender,
            message_id,
            reason: reason.clone(),
        };
        self.store.transaction(|tx| {
            if let Some(message_id) = message_id {
                records::put(
                    tx,
                    records::RECEIVED,
                    b"",
                    message_id.as_bytes(),
                    &ReceivedMarker { failed: true },
                )?;
            }
            queue_event(tx, &event)?;
            Ok::<(), GroupError>(())
        })?;
        Ok(ItemOutcome::Failed(reason))
    }

    /// Olm-decrypts a sender key's ciphertext into its payload.
    fn olm_open(
        &mut self,
        item: &SenderKeyDistribution,
        record: &DeviceRecord,
    ) -> Result<(Payload, bool), FailureReason> {
        let bytes = decode_base64(&item.ciphertext).map_err(|_| FailureReason::Malformed)?;
        let message = match item.envelope_type {
            EnvelopeType::PreKey => OlmMessage::from_parts(0, &bytes),
            EnvelopeType::Normal => OlmMessage::from_parts(1, &bytes),
            EnvelopeType::Legacy => return Err(FailureReason::Malformed),
        }
        .map_err(|_| FailureReason::Malformed)?;
        let (plaintext, account_changed) =
            self.olm_decrypt(record.device_ref(), record, &message)?;
        let plaintext = Zeroizing::new(plaintext);
        let payload = Payload::decode(&plaintext)
            .map_err(|error| FailureReason::Rejected(error.to_string()))?;
        Ok((payload, account_changed))
    }

    /// Decrypts a group message from the stream with the sender's session, checks it, and
    /// stores it with its event in one transaction (a redelivery is recognised by its
    /// server message ID). Acknowledge the item only after `Ok`.
    pub fn decrypt_group_message(
        &mut self,
        item: &GroupMessage,
    ) -> Result<ItemOutcome, MachineError> {
        if self.already_received(item.message_id)? {
            return Ok(ItemOutcome::Duplicate);
        }
        let message_key = *item.message_id.as_bytes();
        let sender = DeviceRef {
            user_id: item.sender_user_id,
            device_id: item.sender_device_id,
        };
        let (record, refused) = self.sender_record(sender)?;
        let ciphertext = decode_base64(&item.ciphertext);
        let group = self.group_sessions();
        let outcome = self.store.transaction(|tx| {
            let result = match (refused, ciphertext) {
                (Some(reason), _) => Err(reason),
                (None, Err(_)) => Err(FailureReason::Malformed),
                (None, Ok(ciphertext)) => {
                    let incoming = IncomingGroupMessage {
                        channel_id: item.channel_id,
                        sender,
                        session_id: item.session_id.clone(),
                        message_id: item.message_id,
                        client_message_id: item.client_message_id.clone(),
                        server_timestamp_ms: item.server_timestamp.timestamp_millis(),
                        ciphertext,
                    };
                    match group.decrypt_group(tx, &incoming) {
                        Ok(GroupDecrypted::Message(message))
                            if message.sender_ed25519 == record.keys.ed25519 =>
                        {
                            Ok(Some(message))
                        }
                        // The session came from this device under keys it no longer has.
                        Ok(GroupDecrypted::Message(_)) => Err(FailureReason::SenderBlocked),
                        Ok(GroupDecrypted::Duplicate) => Ok(None),
                        Err(GroupError::Store(error)) => return Err(GroupError::Store(error)),
                        Err(error) => Err(failure_of(error)),
                    }
                }
            };
            let event = match &result {
                Ok(None) => return Ok(ItemOutcome::Duplicate),
                Ok(Some(message)) => Event::GroupMessage {
                    message: message.clone(),
                    server_timestamp: item.server_timestamp,
                },
                Err(reason) => Event::GroupDecryptionFailed {
                    channel_id: item.channel_id,
                    sender,
                    message_id: Some(item.message_id),
                    reason: reason.clone(),
                },
            };
            records::put(
                tx,
                records::RECEIVED,
                b"",
                &message_key,
                &ReceivedMarker {
                    failed: result.is_err(),
                },
            )?;
            queue_event(tx, &event)?;
            Ok(match result {
                Ok(_) => ItemOutcome::Stored,
                Err(reason) => ItemOutcome::Failed(reason),
            })
        })?;
        Ok(outcome)
    }

    /// Queues the event of a receipt or membership change from the stream (other items
    /// are not for this method: `Duplicate`, nothing queued). Items handled before, by
    /// stream position, are recognised.
    pub fn record_stream_event(&self, item: &StreamItem) -> Result<ItemOutcome, MachineError> {
        let events: Vec<Event> = match item {
            StreamItem::Delivered(receipt) => receipt
                .deliveries
                .iter()
                .flat_map(|delivery| {
                    delivery
                        .device_ids
                        .iter()
                        .map(|device_id| Event::Delivered {
                            message_id: delivery.message_id,
                            device: DeviceRef {
                                user_id: delivery.user_id,
                                device_id: *device_id,
                            },
                            delivered_at: delivery.delivered_at,
                        })
                })
                .collect(),
            StreamItem::Read(receipt) => vec![Event::Read {
                receipt: receipt.clone(),
            }],
            StreamItem::Membership(change) => vec![Event::Membership {
                change: change.clone(),
            }],
            StreamItem::Envelope(_)
            | StreamItem::GroupMessage(_)
            | StreamItem::SenderKey(_)
            | StreamItem::OneTimeKeysLow { .. } => {
                return Ok(ItemOutcome::Duplicate);
            }
        };
        let seq = item.seq();
        let outcome = self.store.transaction(|tx| {
            let through = records::tx_get::<u64>(tx, records::META, b"", ITEMS_THROUGH)?;
            if through.is_some_and(|through| seq <= through) {
                return Ok::<_, RecordError>(ItemOutcome::Duplicate);
            }
            records::put(tx, records::META, b"", ITEMS_THROUGH, &seq)?;
            for event in &events {
                queue_event(tx, event)?;
            }
            Ok(ItemOutcome::Stored)
        })?;
        Ok(outcome)
    }

    /// Queues the [`Event::GroupSent`] for a group message the server stored.
    pub fn record_group_sent(
        &self,
        channel_id: Uuid,
        client_message_id: &str,
        response: &SendMessageResponse,
    ) -> Result<(), MachineError> {
        let event = Event::GroupSent {
            message_id: response.message_id,
            channel_id,
            client_message_id: client_message_id.to_owned(),
            server_timestamp: response.server_timestamp,
        };
        self.record_outgoing_sent(
            &OutgoingTarget::Channel(channel_id),
            client_message_id,
            response.message_id,
            &event,
        )
    }

    /// Olm-encrypts `plaintext` for a device with its current session (advanced in
    /// memory; [`Self::store_sessions`] stores it).
    pub(crate) fn olm_encrypt(
        &mut self,
        device: DeviceRef,
        plaintext: &[u8],
    ) -> Result<(EnvelopeType, String), MachineError> {
        self.use_counter += 1;
        let counter = self.use_counter;
        let sessions = self.load_sessions(device)?;
        let Some(cached) = sessions.first_mut() else {
            return Err(MachineError::MissingSessions(vec![device]));
        };
        cached.last_used = counter;
        let Ok(message) = cached.session.encrypt(plaintext) else {
            return Err(MachineError::MissingSessions(vec![device]));
        };
        let (message_type, ciphertext) = message.to_parts();
        let envelope_type = if message_type == 0 {
            EnvelopeType::PreKey
        } else {
            EnvelopeType::Normal
        };
        Ok((envelope_type, encode_base64(&ciphertext)))
    }
}

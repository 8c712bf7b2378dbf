//! Sending messages, one-to-one (protocols V1 and V2) and to channels: the one place that
//! decides what a send stores and what it answers.
//!
//! - `rules`: what a one-to-one send must carry (checked in Rust, nothing written);
//! - `writer`: the group commit: one task per process stores the sends queued while its
//!   previous batch was written, in one statement;
//! - here: the service the handlers call ([`Sends`]), idempotency by client message ID,
//!   the group send's checks, pushing what was stored, and the one error type
//!   ([`SendError`]) every refusal and failure comes back as.
//!
//! Every sender is answered only after its own message is committed (or refused, with
//! nothing written).

mod rules;
mod writer;

use std::sync::Arc;
use std::time::Instant;

use courier_protocol::api::channels::{GroupMessage, MissingSenderKeys};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::{DeviceListMismatch, EnvelopeType};
use courier_protocol::api::receipts::Conversation;
use courier_protocol::api::stream::{Envelope, StreamItem};
use courier_protocol::keys::encode_base64;
use courier_protocol::{ErrorCode, UserId};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::db;
use crate::db::channels::GroupTargets;
use crate::db::messages::{GroupTarget, NewEnvelope, Placed, StoreJob, StoredMessage};
use crate::delivery::Hub;
use crate::delivery::fabric::Fabric;
use crate::device_lists::DeviceLists;
use crate::error::ApiError;
use crate::metrics::Metrics;
use rules::Refusal;
use writer::{MAX_BATCH, Queued};

/// A one-to-one message to send.
#[derive(Debug)]
pub struct DirectSend {
    /// The sending device (from its token).
    pub sender: DeviceRef,
    /// The client's ID for the message (checked by the caller against the rules).
    pub client_message_id: String,
    pub recipient: UserId,
    pub content: DirectContent,
}

/// What a one-to-one message carries.
#[derive(Debug)]
pub enum DirectContent {
    /// Protocol V2: one decoded ciphertext per device.
    PerDevice(Vec<NewEnvelope>),
    /// Protocol V1: one decoded ciphertext for every device of the recipient.
    Legacy(Vec<u8>),
}

/// A channel message to send.
#[derive(Debug)]
pub struct GroupSend {
    /// The sending device (from its token).
    pub sender: DeviceRef,
    /// The client's ID for the message (checked by the caller against the rules).
    pub client_message_id: String,
    pub channel_id: Uuid,
    /// The Megolm session the ciphertext belongs to (checked by the caller).
    pub session_id: String,
    /// The Megolm ciphertext, decoded; stored once.
    pub ciphertext: Vec<u8>,
}

/// A send that was answered with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Stored now (committed) and pushed to the devices connected anywhere.
    New(StoredMessage),
    /// This device sent this client message ID to this conversation before: nothing new
    /// was stored, and the original's answer stands.
    Retry(StoredMessage),
}

/// Why a send was refused (nothing was stored) or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The envelopes do not match the current device lists.
    #[error("the envelopes do not match the device lists")]
    DeviceListMismatch(DeviceListMismatch),
    /// The recipient user does not exist.
    #[error("no such recipient")]
    RecipientNotFound,
    /// The recipient has no device that can receive the message.
    #[error("the recipient has no device that can receive")]
    RecipientUnreachable,
    /// No such channel, or the sender's user is not a member of it.
    #[error("no such channel for the sender")]
    ChannelNotFound,
    /// Member devices have no sender key of the session from the sending device.
    #[error("member devices lack the session's sender key")]
    MissingSenderKeys(MissingSenderKeys),
    /// The channel has no member device but the sending one.
    #[error("no other member device")]
    NoOtherMemberDevice,
    /// The sending device used this client message ID for a message to another
    /// conversation (one-to-one or channel): a retry must name the same conversation, a
    /// new message needs a new ID.
    #[error("the client message ID names a message to another conversation")]
    ClientMessageIdReused,
    /// Member devices were removed between the check and the store.
    #[error("member devices were removed while the message was stored")]
    MemberDevicesRemoved,
    /// The database could not be reached (connections timed out or dropped): the send
    /// may be retried with the same client message ID.
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(Arc<sqlx::Error>),
    /// The database failed the batch for another reason (a bug).
    #[error("the database failed the send: {0}")]
    Database(Arc<sqlx::Error>),
    /// The writer has stopped (the server is shutting down).
    #[error("the send writer has stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for SendError {
    fn from(error: sqlx::Error) -> Self {
        if db::is_unavailable(&error) {
            SendError::DatabaseUnavailable(Arc::new(error))
        } else {
            SendError::Database(Arc::new(error))
        }
    }
}

impl From<Refusal> for SendError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Mismatch(mismatch) => SendError::DeviceListMismatch(mismatch),
            Refusal::RecipientNotFound => SendError::RecipientNotFound,
            Refusal::RecipientUnreachable => SendError::RecipientUnreachable,
            Refusal::ClientMessageIdReused => SendError::ClientMessageIdReused,
        }
    }
}

impl From<SendError> for ApiError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::DeviceListMismatch(mismatch) => ApiError::new(
                ErrorCode::DeviceListMismatch,
                "the envelopes do not match the current device lists; refresh them and send again",
            )
            .with_details(mismatch),
            SendError::RecipientNotFound => ApiError::new(ErrorCode::UserNotFound, "no such user"),
            SendError::RecipientUnreachable => ApiError::new(
                ErrorCode::RecipientUnreachable,
                "the recipient has no device that can receive messages",
            ),
            SendError::ChannelNotFound => ApiError::new(
                ErrorCode::ChannelNotFound,
                "no such channel, or the caller is not a member",
            ),
            SendError::MissingSenderKeys(missing) => ApiError::new(
                ErrorCode::MissingSenderKeys,
                "member devices have no sender key of this session; share it with them and send again",
            )
            .with_details(missing),
            SendError::ClientMessageIdReused => ApiError::new(
                ErrorCode::ClientMessageIdReused,
                "this device sent another conversation a message under this client message ID; nothing was stored (a new message needs a new ID)",
            ),
            SendError::NoOtherMemberDevice => ApiError::new(
                ErrorCode::RecipientUnreachable,
                "no other member device can receive the message",
            ),
            SendError::MemberDevicesRemoved => ApiError::new(
                ErrorCode::RecipientUnreachable,
                "member devices were removed while the message was sent; send again",
            ),
            SendError::DatabaseUnavailable(cause) => ApiError::unavailable(
                "the database is unavailable; send again with the same client message ID",
                anyhow::Error::new(cause),
            ),
            SendError::WriterStopped => ApiError::unavailable(
                "the server is shutting down; send again with the same client message ID",
                anyhow::anyhow!("the send writer has stopped"),
            ),
            SendError::Database(cause) => ApiError::internal(anyhow::Error::new(cause)),
        }
    }
}

/// The sending service the handlers share: cheap to clone.
#[derive(Debug, Clone)]
pub struct Sends {
    queue: mpsc::Sender<Queued>,
    pool: PgPool,
    hub: Arc<Hub>,
    fabric: Fabric,
    metrics: Arc<Metrics>,
}

impl Sends {
    /// Starts the writer task. It ends once every handle is dropped (after finishing its
    /// batch).
    pub fn start(
        pool: &PgPool,
        device_lists: Arc<DeviceLists>,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        fabric: Fabric,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(MAX_BATCH * 4);
        let task = tokio::spawn(writer::write_batches(
            pool.clone(),
            device_lists,
            metrics.clone(),
            rx,
        ));
        let sends = Self {
            queue,
            pool: pool.clone(),
            hub,
            fabric,
            metrics,
        };
        (sends, task)
    }

    /// Queues a job for the writer and waits for its answer.
    async fn store(&self, job: StoreJob) -> Result<writer::SendResult, SendError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued {
                job,
                reply,
                queued_at: Instant::now(),
            })
            .await
            .map_err(|_| SendError::WriterStopped)?;
        answer.await.map_err(|_| SendError::WriterStopped)?
    }

    /// Sends a one-to-one message (V2: exactly one envelope per reachable device of the
    /// recipient and of the sender, less the sending one; V1: one ciphertext for every
    /// active device of the recipient), all or nothing.
    pub async fn send_direct(&self, send: DirectSend) -> Result<Sent, SendError> {
        let (legacy_envelope, envelopes) = match send.content {
            DirectContent::PerDevice(envelopes) => (None, envelopes),
            DirectContent::Legacy(ciphertext) => (Some(ciphertext), Vec::new()),
        };
        let job = StoreJob {
            sender: send.sender,
            client_message_id: send.client_message_id,
            recipient: send.recipient,
            legacy_envelope,
            envelopes,
            channel: None,
        };
        match self.store(job).await {
            Ok(writer::SendResult::Stored {
                message,
                placed,
                job,
            }) => {
                let v1 = job.legacy_envelope.is_some();
                Metrics::add(
                    if v1 {
                        &self.metrics.messages_v1
                    } else {
                        &self.metrics.messages_v2
                    },
                    1,
                );
                Metrics::add(&self.metrics.envelopes_stored, placed.len() as u64);
                self.push_direct(&job, &message, &placed);
                Ok(Sent::New(message))
            }
            Ok(writer::SendResult::Existing(existing)) => Ok(self.retried(existing)),
            Ok(writer::SendResult::Refused(refusal)) => {
                if matches!(refusal, Refusal::Mismatch(_)) {
                    Metrics::add(&self.metrics.sends_refused_mismatch, 1);
                }
                Err(refusal.into())
            }
            Err(error) => Err(error),
        }
    }

    /// Sends a channel message: stored once, with a stream row for every current member
    /// device but the sending one; refused while any of them has no sender key of the
    /// session from the sending device.
    pub async fn send_group(&self, send: GroupSend) -> Result<Sent, SendError> {
        let targets =
            db::channels::group_targets(&self.pool, send.sender, send.channel_id, &send.session_id)
                .await?
                .ok_or(SendError::ChannelNotFound)?;
        let targets = match targets {
            GroupTargets::Ready(targets) => targets,
            GroupTargets::MissingKeys(devices) => {
                // A retry of a message stored before the member devices changed stands.
                if let Some(original) = db::messages::find_by_client_id(
                    &self.pool,
                    send.sender,
                    &send.client_message_id,
                )
                .await?
                {
                    if original.conversation
                        != (Conversation::Channel {
                            channel_id: send.channel_id,
                        })
                    {
                        return Err(SendError::ClientMessageIdReused);
                    }
                    return Ok(self.retried(original));
                }
                Metrics::add(&self.metrics.sends_refused_missing_keys, 1);
                return Err(SendError::MissingSenderKeys(MissingSenderKeys {
                    session_id: send.session_id,
                    devices,
                }));
            }
        };
        if targets.is_empty() {
            return Err(SendError::NoOtherMemberDevice);
        }
        let job = StoreJob {
            sender: send.sender,
            client_message_id: send.client_message_id,
            // Unused for a group message (its recipient is the channel).
            recipient: send.sender.user_id,
            legacy_envelope: Some(send.ciphertext),
            envelopes: targets
                .into_iter()
                .map(|device| NewEnvelope {
                    device,
                    envelope_type: EnvelopeType::Normal,
                    ciphertext: None,
                })
                .collect(),
            channel: Some(GroupTarget {
                channel_id: send.channel_id,
                session_id: send.session_id,
            }),
        };
        match self.store(job).await? {
            writer::SendResult::Stored {
                message,
                placed,
                job,
            } => {
                Metrics::add(&self.metrics.messages_group, 1);
                Metrics::add(&self.metrics.envelopes_stored, placed.len() as u64);
                self.push_group(&job, &message, &placed);
                Ok(Sent::New(message))
            }
            writer::SendResult::Existing(existing) => Ok(self.retried(existing)),
            writer::SendResult::Refused(Refusal::ClientMessageIdReused) => {
                Err(SendError::ClientMessageIdReused)
            }
            writer::SendResult::Refused(_) => Err(SendError::MemberDevicesRemoved),
        }
    }

    fn retried(&self, existing: StoredMessage) -> Sent {
        Metrics::add(&self.metrics.messages_deduplicated, 1);
        Sent::Retry(existing)
    }

    /// Pushes each stored envelope to its device, wherever it is connected.
    fn push_direct(&self, job: &StoreJob, message: &StoredMessage, placed: &[Placed]) {
        let legacy = job.legacy_envelope.as_deref();
        let items = placed
            .iter()
            .filter_map(|p| {
                job.envelopes
                    .iter()
                    .find(|e| e.device == p.device)
                    .map(|e| (p, e))
            })
            .map(|(placed, envelope)| {
                let ciphertext = legacy
                    .or(envelope.ciphertext.as_deref())
                    .unwrap_or_default();
                let item = StreamItem::Envelope(Envelope {
                    seq: placed.seq,
                    message_id: message.message_id,
                    sender_user_id: job.sender.user_id,
                    sender_device_id: job.sender.device_id,
                    client_message_id: job.client_message_id.clone(),
                    protocol_version: if legacy.is_some() { 1 } else { 2 },
                    envelope_type: envelope.envelope_type,
                    ciphertext: encode_base64(ciphertext),
                    server_timestamp: message.created_at,
                });
                (placed.device, item)
            })
            .collect();
        crate::delivery::deliver(&self.hub, &self.fabric, items);
    }

    /// Pushes a stored group message to each member device, wherever it is connected.
    fn push_group(&self, job: &StoreJob, message: &StoredMessage, placed: &[Placed]) {
        let Some(channel) = &job.channel else {
            return;
        };
        let ciphertext = encode_base64(job.legacy_envelope.as_deref().unwrap_or_default());
        let items = placed
            .iter()
            .map(|placed| {
                (
                    placed.device,
                    StreamItem::GroupMessage(GroupMessage {
                        seq: placed.seq,
                        message_id: message.message_id,
                        channel_id: channel.channel_id,
                        sender_user_id: job.sender.user_id,
                        sender_device_id: job.sender.device_id,
                        client_message_id: job.client_message_id.clone(),
                        session_id: channel.session_id.clone(),
                        ciphertext: ciphertext.clone(),
                        server_timestamp: message.created_at,
                    }),
                )
            })
            .collect();
        crate::delivery::deliver(&self.hub, &self.fabric, items);
    }
}

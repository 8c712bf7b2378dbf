//! Channels (groups): members, per-device sender-key distributions, and group messages
//! stored once and fanned out to every member device.
//!
//! A sending device encrypts a group message once with its Megolm session. Before it may
//! send, every current member device (its own user's other devices included) must have
//! been given that session's key: one Olm-encrypted [`SenderKeyDistribution`] per
//! device, uploaded with [`UploadSenderKeysRequest`]. A send that would leave a member
//! device unable to decrypt is refused with `missing_sender_keys`, listing the devices.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::DeviceRef;
use super::messages::EnvelopeType;
use crate::ids::{DeviceId, UserId};

/// `POST /v1/channels`: creates a channel; the caller is always a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateChannelRequest {
    /// The other members (at most [`MAX_CHANNEL_MEMBERS`](crate::limits::MAX_CHANNEL_MEMBERS)
    /// with the caller). Channel names and topics belong in encrypted messages, not here.
    pub members: Vec<UserId>,
}

/// A channel as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The channel.
    pub channel_id: Uuid,
    /// Who created it (the only member who may remove others).
    pub created_by: UserId,
    /// The current members, in ID order.
    pub members: Vec<UserId>,
    /// The members' devices a group message must reach (active, identity keys
    /// published), in user and device order.
    pub devices: Vec<DeviceRef>,
}

/// `POST /v1/channels/{channelId}/members`: adds members (any member may).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AddMembersRequest {
    /// Users to add; members already are skipped.
    pub user_ids: Vec<UserId>,
}

/// What changed in a channel's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum MembershipChangeKind {
    /// The channel was created with these members.
    Created,
    /// These users joined.
    Added,
    /// These users left or were removed.
    Removed,
}

/// Stream item: a channel's membership changed. Every member device gets it, and the
/// devices of removed users too (their last item about the channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MembershipChange {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// The channel.
    pub channel_id: Uuid,
    /// What happened.
    pub change: MembershipChangeKind,
    /// The users it happened to.
    pub user_ids: Vec<UserId>,
    /// Who did it.
    pub by_user_id: UserId,
    /// The members after the change, in ID order.
    pub members: Vec<UserId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One device's copy of a sender key: the sender's Megolm session key, Olm-encrypted for
/// that device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceSenderKey {
    /// The member device's user.
    pub user_id: UserId,
    /// The member device.
    pub device_id: DeviceId,
    /// `preKey` or `normal` (the Olm message type).
    pub envelope_type: EnvelopeType,
    /// The Olm ciphertext, base64.
    pub ciphertext: String,
}

/// `POST /v1/channels/{channelId}/sender-keys`: the calling device shares its Megolm
/// session with member devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UploadSenderKeysRequest {
    /// The Megolm session's ID.
    pub session_id: String,
    /// One per member device (at most the server's envelopes-per-message limit per call).
    pub distributions: Vec<DeviceSenderKey>,
}

/// The answer to [`UploadSenderKeysRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UploadSenderKeysResponse {
    /// How many were new (a device given this session before keeps its first copy).
    pub stored: u32,
}

/// Stream item: a member device's sender key for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SenderKeyDistribution {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// The channel.
    pub channel_id: Uuid,
    /// The sending user (from its token).
    pub sender_user_id: UserId,
    /// The sending device (from its token).
    pub sender_device_id: DeviceId,
    /// The Megolm session's ID.
    pub session_id: String,
    /// The Olm message type.
    pub envelope_type: EnvelopeType,
    /// The Olm ciphertext, base64.
    pub ciphertext: String,
    /// When the server stored it.
    pub server_timestamp: DateTime<Utc>,
}

/// `POST /v1/channels/{channelId}/messages`: a group message, encrypted once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendGroupMessageRequest {
    /// As for one-to-one messages: the same ID from the same device is a retry.
    pub client_message_id: String,
    /// The Megolm session the message is encrypted with.
    pub session_id: String,
    /// The Megolm ciphertext, base64.
    pub ciphertext: String,
}

/// `details` of `missing_sender_keys`: the member devices without this session's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MissingSenderKeys {
    /// The session the send used.
    pub session_id: String,
    /// Member devices that have no distribution of it from the sending device.
    pub devices: Vec<DeviceRef>,
}

/// Stream item: a group message for this device (stored once for all member devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupMessage {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// The message's server ID.
    pub message_id: Uuid,
    /// The channel.
    pub channel_id: Uuid,
    /// Who sent it (from the sender's token).
    pub sender_user_id: UserId,
    /// Which device sent it (from the sender's token).
    pub sender_device_id: DeviceId,
    /// The client message ID the sender gave when sending; the receiver checks the one
    /// inside the ciphertext against it.
    pub client_message_id: String,
    /// The Megolm session it is encrypted with.
    pub session_id: String,
    /// The Megolm ciphertext, base64.
    pub ciphertext: String,
    /// When the server committed it.
    pub server_timestamp: DateTime<Utc>,
}

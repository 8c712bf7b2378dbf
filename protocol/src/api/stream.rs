//! A device's stream: what the WebSocket pushes and the inbox lists.
//!
//! Every device has one ordered stream. Each item carries `seq`, a sequence number that
//! strictly increases, in commit order, per device (normally by one; a number can be
//! skipped when a send fails in a race). Items are envelopes, group messages, sender
//! keys, channel membership changes and receipts; a client ignores (and acknowledges) an
//! item type it does not know. A device acknowledges items by `seq`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::channels::{GroupMessage, MembershipChange, SenderKeyDistribution};
use super::messages::EnvelopeType;
use super::receipts::{DeliveredReceipt, ReadReceipt};
use crate::ids::{DeviceId, UserId};

/// An envelope for the receiving device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// The message's server ID.
    pub message_id: Uuid,
    /// Who sent it (from the sender's token).
    pub sender_user_id: UserId,
    /// Which device sent it (from the sender's token).
    pub sender_device_id: DeviceId,
    /// The client message ID the sender gave when sending (`POST /v1/messages`); the
    /// receiver checks the one inside the ciphertext against it.
    pub client_message_id: String,
    /// `1` for a V1 message (one ciphertext for all devices), `2` for a per-device envelope.
    pub protocol_version: u8,
    /// The Olm message type (`legacy` for V1).
    pub envelope_type: EnvelopeType,
    /// The ciphertext, base64.
    pub ciphertext: String,
    /// When the server committed the message.
    pub server_timestamp: DateTime<Utc>,
}

/// An item of a device's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamItem {
    /// An envelope (a one-to-one message, V1 or V2).
    Envelope(Envelope),
    /// A group message, encrypted once for the channel.
    GroupMessage(GroupMessage),
    /// A member device's sender key (Olm-encrypted for this device).
    SenderKey(SenderKeyDistribution),
    /// A channel's membership changed.
    Membership(MembershipChange),
    /// Recipient devices acknowledged messages this user sent.
    Delivered(DeliveredReceipt),
    /// This user (on another device) or a recipient read messages.
    Read(ReadReceipt),
}

impl StreamItem {
    /// The `type` tag of every item type this crate knows, as serialized. A client meeting
    /// another tag (a newer server) acknowledges the item by its `seq` and skips it.
    pub const TYPES: [&'static str; 6] = [
        "envelope",
        "groupMessage",
        "senderKey",
        "membership",
        "delivered",
        "read",
    ];

    /// This item's `type` tag (one of [`Self::TYPES`]).
    pub fn type_tag(&self) -> &'static str {
        match self {
            StreamItem::Envelope(_) => "envelope",
            StreamItem::GroupMessage(_) => "groupMessage",
            StreamItem::SenderKey(_) => "senderKey",
            StreamItem::Membership(_) => "membership",
            StreamItem::Delivered(_) => "delivered",
            StreamItem::Read(_) => "read",
        }
    }

    /// The item's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            StreamItem::Envelope(item) => item.seq,
            StreamItem::GroupMessage(item) => item.seq,
            StreamItem::SenderKey(item) => item.seq,
            StreamItem::Membership(item) => item.seq,
            StreamItem::Delivered(item) => item.seq,
            StreamItem::Read(item) => item.seq,
        }
    }

    /// Sets the item's sequence number (the server assigns it when it stores the item).
    pub fn set_seq(&mut self, seq: u64) {
        match self {
            StreamItem::Envelope(item) => item.seq = seq,
            StreamItem::GroupMessage(item) => item.seq = seq,
            StreamItem::SenderKey(item) => item.seq = seq,
            StreamItem::Membership(item) => item.seq = seq,
            StreamItem::Delivered(item) => item.seq = seq,
            StreamItem::Read(item) => item.seq = seq,
        }
    }
}

/// A page of the inbox (`GET /v1/inbox`): undelivered items after a cursor, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    /// Items in ascending `seq`.
    pub items: Vec<StreamItem>,
    /// Pass as `after` to get the next page (the last item's `seq`, or the request's
    /// `after` when the page is empty).
    pub next_cursor: u64,
    /// Whether more items follow.
    pub has_more: bool,
}

/// What the server sends on the WebSocket (text frames, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    /// A stream item.
    Item(StreamItem),
    /// A control message.
    Control(ControlFrame),
}

/// Control messages on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ControlFrame {
    /// Everything that was waiting when the connection opened has been sent; from now on
    /// items arrive as they are sent. `cursor` is the highest `seq` sent so far.
    CaughtUp {
        /// Highest `seq` sent on this connection so far.
        cursor: u64,
    },
    /// The server could not use a frame the client sent. The connection stays open.
    Error {
        /// A stable code (`invalid_frame`).
        code: String,
        /// What was wrong.
        message: String,
    },
}

/// What the client sends on the WebSocket (text frames, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// Acknowledges items the device has durably stored: everything up to `upTo`
    /// (cumulative) and/or the listed `seqs` (per item). Acknowledged items are marked
    /// delivered and are not sent again.
    Ack {
        /// Cumulative: every item with `seq <= upTo` (at most [`MAX_SEQ`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "client_seq::option"
        )]
        up_to: Option<u64>,
        /// Per item (each at most [`MAX_SEQ`]).
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            deserialize_with = "client_seq::list"
        )]
        seqs: Vec<u64>,
    },
}

impl ClientFrame {
    /// Reads a text frame strictly, as the server does: an object, never an array (see
    /// [`strict_json`](crate::strict_json)).
    pub fn from_json(text: &str) -> Result<Self, crate::strict_json::StrictJsonError> {
        crate::strict_json::from_str(text)
    }
}

/// The largest sequence number a client may name (`upTo`, `seqs`, `after`): the server
/// stores sequence numbers as PostgreSQL `bigint`, and the OpenAPI document says int64.
pub const MAX_SEQ: u64 = i64::MAX.unsigned_abs();

/// Reads the sequence numbers a client sends, for `#[serde(deserialize_with = ...)]`: an
/// unsigned integer up to [`MAX_SEQ`]; a larger one is refused, not saturated.
pub mod client_seq {
    use serde::de::{Deserialize, Deserializer, Error, Unexpected};

    use super::MAX_SEQ;

    /// One sequence number.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        ClientSeq::deserialize(deserializer).map(|ClientSeq(seq)| seq)
    }

    /// An optional one (with `#[serde(default)]`, absent is `None`).
    pub fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Option::<ClientSeq>::deserialize(deserializer).map(|seq| seq.map(|ClientSeq(seq)| seq))
    }

    /// A list of them.
    pub fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
        Vec::<ClientSeq>::deserialize(deserializer)
            .map(|seqs| seqs.into_iter().map(|ClientSeq(seq)| seq).collect())
    }

    /// A sequence number checked against [`MAX_SEQ`].
    struct ClientSeq(u64);

    impl<'de> Deserialize<'de> for ClientSeq {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let seq = u64::deserialize(deserializer)?;
            if seq > MAX_SEQ {
                return Err(D::Error::invalid_value(
                    Unexpected::Unsigned(seq),
                    &"a sequence number from 0 to 9223372036854775807",
                ));
            }
            Ok(Self(seq))
        }
    }
}

/// WebSocket close codes Courier uses (besides the standard ones).
pub mod close_code {
    /// A newer connection of the same device replaced this one.
    pub const REPLACED: u16 = 4001;
    /// No frame (not even a pong) arrived within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The device was removed; its token no longer works.
    pub const DEVICE_REMOVED: u16 = 4003;
    /// The device read too slowly for too long; reconnect and catch up from the inbox.
    pub const TOO_SLOW: u16 = 4004;
    /// The token this socket was opened with is no longer valid (the device logged in
    /// again and got a new one); reconnect with the current token.
    pub const TOKEN_REVOKED: u16 = 4005;
    /// The server is shutting down (standard "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The server could not read or encode the stream (standard "internal error");
    /// reconnect after a backoff.
    pub const SERVER_ERROR: u16 = 1011;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_a_type_tag() {
        let ack: ClientFrame = serde_json::from_str(r#"{"type":"ack","upTo":7}"#).unwrap();
        assert_eq!(
            ack,
            ClientFrame::Ack {
                up_to: Some(7),
                seqs: vec![]
            }
        );
        let ack: ClientFrame = serde_json::from_str(r#"{"type":"ack","seqs":[1,3]}"#).unwrap();
        assert_eq!(
            ack,
            ClientFrame::Ack {
                up_to: None,
                seqs: vec![1, 3]
            }
        );

        let caught_up =
            serde_json::to_value(ServerFrame::Control(ControlFrame::CaughtUp { cursor: 4 }))
                .unwrap();
        assert_eq!(
            caught_up,
            serde_json::json!({"type": "caughtUp", "cursor": 4})
        );
    }

    #[test]
    fn acknowledged_sequence_numbers_fit_a_bigint() {
        let max = format!(r#"{{"type":"ack","upTo":{MAX_SEQ},"seqs":[{MAX_SEQ}]}}"#);
        assert_eq!(
            serde_json::from_str::<ClientFrame>(&max).unwrap(),
            ClientFrame::Ack {
                up_to: Some(MAX_SEQ),
                seqs: vec![MAX_SEQ]
            }
        );
        for frame in [
            r#"{"type":"ack","upTo":9223372036854775808}"#,
            r#"{"type":"ack","upTo":18446744073709551615}"#,
            r#"{"type":"ack","seqs":[1,9223372036854775808]}"#,
            r#"{"type":"ack","upTo":-1}"#,
        ] {
            assert!(
                serde_json::from_str::<ClientFrame>(frame).is_err(),
                "{frame}"
            );
        }
        let none: ClientFrame = serde_json::from_str(r#"{"type":"ack","upTo":null}"#).unwrap();
        assert_eq!(
            none,
            ClientFrame::Ack {
                up_to: None,
                seqs: vec![]
            }
        );
    }

    #[test]
    fn an_envelope_frame_round_trips() {
        let envelope = Envelope {
            seq: 9,
            message_id: Uuid::nil(),
            sender_user_id: UserId::from(Uuid::nil()),
            sender_device_id: DeviceId::new(2).unwrap(),
            client_message_id: "msg-1".into(),
            protocol_version: 2,
            envelope_type: EnvelopeType::PreKey,
            ciphertext: "AAAA".into(),
            server_timestamp: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let item = StreamItem::Envelope(envelope);
        assert!(StreamItem::TYPES.contains(&item.type_tag()));
        let frame = ServerFrame::Item(item);
        let json = serde_json::to_string(&frame).unwrap();
        assert!(json.starts_with(r#"{"type":"envelope","seq":9"#), "{json}");
        assert!(json.contains(r#""clientMessageId":"msg-1""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&json).unwrap(), frame);
    }
}

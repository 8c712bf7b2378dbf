//! Sending messages (`POST /v1/messages`, protocols V1 and V2) and reading envelopes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::keys::DeviceRef;
use super::stream::client_seq;
use crate::ids::{DeviceId, UserId};

/// The Olm message type of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum EnvelopeType {
    /// An Olm pre-key message: opens a session (the recipient creates an inbound session).
    PreKey,
    /// An Olm normal message on an established session.
    Normal,
    /// A protocol V1 envelope: one ciphertext for the whole recipient user, whose format
    /// only V1 clients know.
    Legacy,
}

impl EnvelopeType {
    /// The type as PostgreSQL stores it.
    pub fn as_i16(self) -> i16 {
        match self {
            EnvelopeType::PreKey => 0,
            EnvelopeType::Normal => 1,
            EnvelopeType::Legacy => 2,
        }
    }

    /// The type read back from the database.
    pub fn from_i16(value: i16) -> Option<Self> {
        match value {
            0 => Some(EnvelopeType::PreKey),
            1 => Some(EnvelopeType::Normal),
            2 => Some(EnvelopeType::Legacy),
            _ => None,
        }
    }
}

/// One opaque ciphertext for one device (protocol V2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceEnvelope {
    /// The device's user: the recipient, or the sender for the sender's own other devices.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// `preKey` or `normal` (`legacy` is refused in V2).
    pub envelope_type: EnvelopeType,
    /// The ciphertext, base64 (at most the server's envelope size limit once decoded).
    pub ciphertext: String,
}

/// The protocol versions the server speaks (`protocolVersion` of a send and of an envelope).
pub const PROTOCOL_VERSIONS: [u8; 2] = [1, 2];

/// Sends a message: protocol V2 (`protocolVersion: 2`, `deviceEnvelopes`) or V1
/// (`protocolVersion: 1` or absent, `encryptedEnvelope`).
///
/// The sender and sending device come from the access token, never from the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// `2` for per-device envelopes; `1` or absent for a V1 client. Any other integer is
    /// answered with `unsupported_protocol_version`.
    // Wide enough for every integer serde_json reads (-2⁶³ to 2⁶⁴−1), so none of them is
    // refused as the wrong shape before the server can say which versions it speaks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "any_integer"
    )]
    // Its range is set in the document from `PROTOCOL_VERSIONS` (the server's api_doc).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u8>))]
    pub protocol_version: Option<i128>,
    /// The client's ID for this message (1 to 64 characters of `[A-Za-z0-9_-]`). The same
    /// ID from the same device returns the original answer and stores nothing new.
    pub client_message_id: String,
    /// The user the message is for.
    pub recipient_user_id: UserId,
    /// V2: exactly one envelope per reachable device of the recipient and per reachable
    /// device of the sender other than the sending one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_envelopes: Option<Vec<DeviceEnvelope>>,
    /// V1: one ciphertext (base64) for the recipient user, delivered to all of its devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_envelope: Option<String>,
}

/// Reads an optional integer of any sign that fits 64 bits: not a float, not a string.
fn any_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i128>, D::Error> {
    struct AnyInteger(i128);

    impl<'de> Deserialize<'de> for AnyInteger {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(AnyIntegerVisitor)
        }
    }

    struct AnyIntegerVisitor;

    impl Visitor<'_> for AnyIntegerVisitor {
        type Value = AnyInteger;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<AnyInteger, E> {
            Ok(AnyInteger(value.into()))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<AnyInteger, E> {
            Ok(AnyInteger(value.into()))
        }
    }

    Option::<AnyInteger>::deserialize(deserializer).map(|version| version.map(|v| v.0))
}

/// The server's answer to a send (the same for a retry of the same client message ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageResponse {
    /// The server's ID of the message (a time-ordered UUID).
    pub message_id: Uuid,
    /// When the server committed the message.
    pub server_timestamp: DateTime<Utc>,
    /// How many device envelopes were stored (V1: one per recipient device).
    pub envelope_count: u32,
}

/// `details` of a `device_list_mismatch` error: everything wrong with the envelope set at
/// once, so the client fixes it in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceListMismatch {
    /// Reachable devices the request has no envelope for.
    pub missing: Vec<DeviceRef>,
    /// Envelopes for devices that are not (and never were) reachable devices of these
    /// users, or for the sending device itself.
    pub extra: Vec<DeviceRef>,
    /// Envelopes for devices that have been removed.
    pub stale: Vec<DeviceRef>,
}

impl DeviceListMismatch {
    /// Whether the envelope set matched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.stale.is_empty()
    }
}

/// `POST /v1/inbox/ack`: marks the caller device's stream delivered up to a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AckRequest {
    /// Everything in the stream with a sequence number up to this one (at most 2⁶³−1) is
    /// delivered.
    #[serde(deserialize_with = "client_seq::deserialize")]
    pub up_to: u64,
}

/// The answer to an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AckResponse {
    /// How many items were newly marked delivered.
    pub delivered: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(json: &str) -> Result<Option<i128>, serde_json::Error> {
        let body = format!(
            r#"{{"clientMessageId":"m","recipientUserId":"{}","protocolVersion":{json}}}"#,
            Uuid::nil()
        );
        serde_json::from_str::<SendMessageRequest>(&body).map(|request| request.protocol_version)
    }

    #[test]
    fn any_integer_is_a_protocol_version_to_answer() {
        for (json, expected) in [
            ("1", 1),
            ("2", 2),
            ("256", 256),
            ("1000", 1000),
            ("-1", -1),
            ("-9223372036854775808", i128::from(i64::MIN)),
            ("18446744073709551615", i128::from(u64::MAX)),
        ] {
            assert_eq!(version(json).unwrap(), Some(expected), "{json}");
        }
        assert_eq!(version("null").unwrap(), None);
        for json in ["1.5", "2.0", "1e3", r#""2""#, "true", "[2]"] {
            assert!(version(json).is_err(), "{json}");
        }
    }

    #[test]
    fn acknowledgements_fit_a_bigint() {
        let max: AckRequest = serde_json::from_str(r#"{"upTo":9223372036854775807}"#).unwrap();
        assert_eq!(max.up_to, i64::MAX.unsigned_abs());
        for json in [
            r#"{"upTo":9223372036854775808}"#,
            r#"{"upTo":18446744073709551615}"#,
            r#"{"upTo":-1}"#,
        ] {
            assert!(serde_json::from_str::<AckRequest>(json).is_err(), "{json}");
        }
    }
}

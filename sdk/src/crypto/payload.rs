//! The plaintext inside every envelope: versioned, and bound to who sent it to whom.
//!
//! The server routes envelopes and could re-address one: hand a ciphertext meant for one
//! device to another, or claim another sender for it (the lessons of CVE-2022-39250 and
//! CVE-2022-39251). So the plaintext itself names the sender (user, device, and signing
//! key), the envelope's recipient (user, device, and identity key), the conversation, the
//! client message ID and a timestamp; the receiver checks every one of these against what
//! it knows (see [`Payload::check`]).
//!
//! Encoding (version 1), all integers big-endian:
//!
//! ```text
//! version u8 = 1 | kind u8 | sender user 16 | sender device u32 | sender ed25519 32
//! | recipient user 16 | recipient device u32 | recipient curve25519 32
//! | conversation 16 | client message ID: len u8, ASCII | timestamp ms u64
//! | body: len u32, bytes
//! ```
//!
//! Kinds: 1 is a message for the app (the conversation is the other user's ID); 2 is a
//! channel's sender key (the conversation is the channel ID, the body the Megolm session
//! key: see [`super::group`]).
//!
//! Nothing may follow the body: trailing bytes are an error, so one plaintext has exactly
//! one encoding.

use courier_protocol::limits::{CLIENT_MESSAGE_ID_MAX_CHARS, check_client_message_id};
use courier_protocol::{DeviceId, UserId};
use uuid::Uuid;

/// The payload encoding this SDK writes and reads.
pub const PAYLOAD_VERSION: u8 = 1;

/// Largest body a payload carries. The server's envelope limit (64 KiB by default, before
/// Olm and base64 overhead) is the real bound; this one keeps a decoder from trusting a
/// length prefix.
pub const MAX_BODY_BYTES: usize = 60 * 1024;

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A message for the app.
    Message,
    /// A Megolm sender key for a channel (the body is a [`super::group::SenderKeyBody`]).
    SenderKey,
}

impl PayloadKind {
    fn to_byte(self) -> u8 {
        match self {
            PayloadKind::Message => 1,
            PayloadKind::SenderKey => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(PayloadKind::Message),
            2 => Some(PayloadKind::SenderKey),
            _ => None,
        }
    }
}

/// A device and the key that identifies it in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The sender's Ed25519 signing key, or the recipient's Curve25519 identity key.
    pub key: [u8; 32],
}

/// A decoded (or to-be-encoded) payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    pub kind: PayloadKind,
    pub sender: BoundDevice,
    pub recipient: BoundDevice,
    /// The conversation's 16-byte ID. For a [`PayloadKind::Message`], the other party as
    /// the sender sees it: the recipient user of the message (for the sender's own other
    /// devices, this is not their own user). For a [`PayloadKind::SenderKey`], the
    /// channel ID.
    pub conversation: Uuid,
    pub client_message_id: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Message text never reaches logs.
        f.debug_struct("Payload")
            .field("kind", &self.kind)
            .field("sender", &(self.sender.user_id, self.sender.device_id))
            .field(
                "recipient",
                &(self.recipient.user_id, self.recipient.device_id),
            )
            .field("client_message_id", &self.client_message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a payload could not be decoded or was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload ended before a field was complete.
    #[error("the payload is truncated")]
    Truncated,
    /// Bytes follow the body.
    #[error("the payload has trailing bytes")]
    TrailingBytes,
    /// A payload version this SDK does not read.
    #[error("payload version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A payload kind this SDK does not know.
    #[error("payload kind {0} is not known")]
    UnknownKind(u8),
    /// A device ID of 0 or above the allowed range.
    #[error("the payload names an invalid device ID")]
    InvalidDeviceId,
    /// The client message ID is empty, too long, or not `[A-Za-z0-9_-]`.
    #[error("the payload's client message ID is invalid")]
    InvalidClientMessageId,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the payload body is too large")]
    BodyTooLarge,
    /// The sender named inside (user or device) differs from the sender the server
    /// authenticated.
    #[error("the payload's sender does not match the envelope's sender")]
    SenderMismatch,
    /// The sender named inside is the authenticated device, but with a signing key other
    /// than the one on record for it (key substitution).
    #[error("the payload's sender key does not match the sender's key on record")]
    SenderKeyMismatch,
    /// The payload names another recipient user or device than this device.
    #[error("the payload was addressed to another device")]
    RecipientMismatch,
    /// The payload names this device, but with another identity key than its own.
    #[error("the payload was addressed to another identity key of this device")]
    RecipientKeyMismatch,
    /// A message from another user that names a conversation other than ours.
    #[error("the payload belongs to another conversation")]
    ConversationMismatch,
    /// The client message ID inside differs from the one the server delivered it under.
    #[error("the payload's client message ID does not match the stream item's")]
    ClientMessageIdMismatch,
    /// The sender's timestamp is outside the window around the server's timestamp (see
    /// [`check_sent`]).
    #[error("the payload's timestamp is too far from the server's timestamp")]
    TimestampOutOfRange,
}

/// How far the sender's clock may be behind the server's commit time. A client stamps a
/// message when it encrypts it, right before sending; retries (with backoff, across
/// reconnects) and a slow clock make the server's commit later than that, so a day is
/// allowed. Earlier than that, it is a stale or replayed plaintext re-labelled as new.
pub const MAX_TIMESTAMP_BEFORE_SERVER_MS: u64 = 24 * 60 * 60 * 1000;

/// How far the sender's clock may be ahead of the server's commit time. A message cannot
/// be encrypted after the server stored it, so only a fast clock explains a later stamp;
/// an hour covers real clocks, not a message back-dated or post-dated by the server or
/// the sender.
pub const MAX_TIMESTAMP_AFTER_SERVER_MS: u64 = 60 * 60 * 1000;

/// Checks what the sender put inside against the stream item the server delivered it in:
/// the same client message ID, and a timestamp from
/// [`MAX_TIMESTAMP_BEFORE_SERVER_MS`] before to [`MAX_TIMESTAMP_AFTER_SERVER_MS`] after
/// the server's timestamp (milliseconds since the Unix epoch; a server timestamp before
/// the epoch admits nothing before the epoch).
pub fn check_sent(
    client_message_id: &str,
    timestamp_ms: u64,
    item_client_message_id: &str,
    server_timestamp_ms: i64,
) -> Result<(), PayloadError> {
    if client_message_id != item_client_message_id {
        return Err(PayloadError::ClientMessageIdMismatch);
    }
    let server = i128::from(server_timestamp_ms);
    let sent = i128::from(timestamp_ms);
    let earliest = server - i128::from(MAX_TIMESTAMP_BEFORE_SERVER_MS);
    let latest = server + i128::from(MAX_TIMESTAMP_AFTER_SERVER_MS);
    if sent < earliest || sent > latest {
        return Err(PayloadError::TimestampOutOfRange);
    }
    Ok(())
}

/// What a received payload is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// The sending device as the server reported it, with the signing key this device
    /// has on record for it.
    pub sender: BoundDevice,
    /// This device, with its own identity key.
    pub recipient: BoundDevice,
}

impl Payload {
    /// Encodes the payload (see the module docs for the layout).
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out =
            Vec::with_capacity(2 + 2 * (16 + 4 + 32) + 16 + 1 + 64 + 8 + 4 + self.body.len());
        out.push(PAYLOAD_VERSION);
        out.push(self.kind.to_byte());
        for device in [&self.sender, &self.recipient] {
            out.extend_from_slice(device.user_id.as_bytes());
            out.extend_from_slice(&device.device_id.get().to_be_bytes());
            out.extend_from_slice(&device.key);
        }
        out.extend_from_slice(self.conversation.as_bytes());
        put_client_message_id(&mut out, &self.client_message_id)?;
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        put_body(&mut out, &self.body)?;
        Ok(out)
    }

    /// Decodes a payload. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut reader = Reader(bytes);
        let version = reader.byte()?;
        if version != PAYLOAD_VERSION {
            return Err(PayloadError::UnsupportedVersion(version));
        }
        let kind_byte = reader.byte()?;
        let kind = PayloadKind::from_byte(kind_byte).ok_or(PayloadError::UnknownKind(kind_byte))?;
        let sender = reader.device()?;
        let recipient = reader.device()?;
        let conversation = Uuid::from_bytes(reader.array()?);
        let client_message_id = reader.client_message_id()?;
        let timestamp_ms = u64::from_be_bytes(reader.array()?);
        let body = reader.body()?;
        reader.finish()?;
        Ok(Payload {
            kind,
            sender,
            recipient,
            conversation,
            client_message_id,
            timestamp_ms,
            body,
        })
    }

    /// Checks a received payload against the envelope it came in and this device.
    ///
    /// - the sender inside must be the sender the server authenticated
    ///   ([`PayloadError::SenderMismatch`]), with the signing key on record for that
    ///   device (no key substitution: [`PayloadError::SenderKeyMismatch`]);
    /// - the recipient inside must be this device ([`PayloadError::RecipientMismatch`])
    ///   and its identity key ([`PayloadError::RecipientKeyMismatch`]);
    /// - a message from another user must name our user as the conversation (one sent by
    ///   our own other device may name anyone: it is a copy of what we sent). A sender
    ///   key names its channel instead, which [`super::group`] checks.
    pub fn check(&self, expected: &Expected) -> Result<(), PayloadError> {
        if (self.sender.user_id, self.sender.device_id)
            != (expected.sender.user_id, expected.sender.device_id)
        {
            return Err(PayloadError::SenderMismatch);
        }
        if self.sender.key != expected.sender.key {
            return Err(PayloadError::SenderKeyMismatch);
        }
        if (self.recipient.user_id, self.recipient.device_id)
            != (expected.recipient.user_id, expected.recipient.device_id)
        {
            return Err(PayloadError::RecipientMismatch);
        }
        if self.recipient.key != expected.recipient.key {
            return Err(PayloadError::RecipientKeyMismatch);
        }
        if self.kind == PayloadKind::Message
            && self.sender.user_id != self.recipient.user_id
            && self.conversation != self.recipient.user_id.as_uuid()
        {
            return Err(PayloadError::ConversationMismatch);
        }
        Ok(())
    }
}

/// Appends a client message ID (length byte, ASCII) after checking it.
pub(super) fn put_client_message_id(out: &mut Vec<u8>, id: &str) -> Result<(), PayloadError> {
    if !check_client_message_id(id) {
        return Err(PayloadError::InvalidClientMessageId);
    }
    let len = u8::try_from(id.len()).map_err(|_| PayloadError::InvalidClientMessageId)?;
    out.push(len);
    out.extend_from_slice(id.as_bytes());
    Ok(())
}

/// Appends a body (u32 length, bytes) after checking its size.
pub(super) fn put_body(out: &mut Vec<u8>, body: &[u8]) -> Result<(), PayloadError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PayloadError::BodyTooLarge);
    }
    let len = u32::try_from(body.len()).map_err(|_| PayloadError::BodyTooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Reads the fields of the binary plaintexts (this module's and [`super::group`]'s).
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        if self.0.len() < n {
            return Err(PayloadError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn byte(&mut self) -> Result<u8, PayloadError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn user(&mut self) -> Result<UserId, PayloadError> {
        Ok(UserId::from(Uuid::from_bytes(self.array()?)))
    }

    /// A device ID as devices have them: not 0, not above [`DeviceId::MAX`].
    pub(super) fn device_id(&mut self) -> Result<DeviceId, PayloadError> {
        DeviceId::new(u32::from_be_bytes(self.array()?))
            .ok()
            .filter(|id| !id.is_new())
            .ok_or(PayloadError::InvalidDeviceId)
    }

    /// A client message ID written by [`put_client_message_id`].
    pub(super) fn client_message_id(&mut self) -> Result<String, PayloadError> {
        let len = usize::from(self.byte()?);
        if len > CLIENT_MESSAGE_ID_MAX_CHARS {
            return Err(PayloadError::InvalidClientMessageId);
        }
        let id = std::str::from_utf8(self.take(len)?)
            .map_err(|_| PayloadError::InvalidClientMessageId)?
            .to_owned();
        if !check_client_message_id(&id) {
            return Err(PayloadError::InvalidClientMessageId);
        }
        Ok(id)
    }

    /// A body written by [`put_body`].
    pub(super) fn body(&mut self) -> Result<Vec<u8>, PayloadError> {
        let len = usize::try_from(u32::from_be_bytes(self.array()?))
            .map_err(|_| PayloadError::BodyTooLarge)?;
        if len > MAX_BODY_BYTES {
            return Err(PayloadError::BodyTooLarge);
        }
        Ok(self.take(len)?.to_vec())
    }

    /// Nothing may follow the last field.
    pub(super) fn finish(self) -> Result<(), PayloadError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PayloadError::TrailingBytes)
        }
    }

    fn device(&mut self) -> Result<BoundDevice, PayloadError> {
        let user_id = self.user()?;
        let device_id = self.device_id()?;
        let key = self.array()?;
        Ok(BoundDevice {
            user_id,
            device_id,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn device(user: u128, id: u32, key: u8) -> BoundDevice {
        BoundDevice {
            user_id: UserId::from(Uuid::from_u128(user)),
            device_id: DeviceId::new(id).unwrap(),
            key: [key; 32],
        }
    }

    fn sample() -> Payload {
        Payload {
            kind: PayloadKind::Message,
            sender: device(1, 1, 0xA1),
            recipient: device(2, 3, 0xB2),
            conversation: Uuid::from_u128(2),
            client_message_id: "msg-1".into(),
            timestamp_ms: 1_700_000_000_000,
            body: b"hello".to_vec(),
        }
    }

    fn expected_for(payload: &Payload) -> Expected {
        Expected {
            sender: payload.sender,
            recipient: payload.recipient,
        }
    }

    #[test]
    fn a_payload_passes_the_check_for_its_own_envelope() {
        let payload = sample();
        assert_eq!(payload.check(&expected_for(&payload)), Ok(()));
    }

    #[test]
    fn another_sender_device_or_signing_key_is_a_sender_mismatch() {
        let payload = sample();
        let mut expected = expected_for(&payload);
        expected.sender.device_id = DeviceId::new(2).unwrap();
        assert_eq!(payload.check(&expected), Err(PayloadError::SenderMismatch));
        let mut expected = expected_for(&payload);
        expected.sender.user_id = UserId::from(Uuid::from_u128(9));
        assert_eq!(payload.check(&expected), Err(PayloadError::SenderMismatch));
        let mut expected = expected_for(&payload);
        expected.sender.key = [0; 32];
        assert_eq!(
            payload.check(&expected),
            Err(PayloadError::SenderKeyMismatch)
        );
    }

    #[test]
    fn another_recipient_device_user_or_identity_key_is_a_recipient_mismatch() {
        let payload = sample();
        for (change, error) in [
            (0, PayloadError::RecipientMismatch),
            (1, PayloadError::RecipientMismatch),
            (2, PayloadError::RecipientKeyMismatch),
        ] {
            let mut expected = expected_for(&payload);
            match change {
                0 => expected.recipient.device_id = DeviceId::new(4).unwrap(),
                1 => expected.recipient.user_id = UserId::from(Uuid::from_u128(9)),
                _ => expected.recipient.key = [0; 32],
            }
            assert_eq!(payload.check(&expected), Err(error));
        }
    }

    #[test]
    fn the_client_message_id_and_timestamp_must_fit_the_stream_item() {
        let server_ms: i64 = 1_700_000_000_000;
        let at = |offset: i64| u64::try_from(server_ms + offset).unwrap();
        let day = i64::try_from(MAX_TIMESTAMP_BEFORE_SERVER_MS).unwrap();
        let hour = i64::try_from(MAX_TIMESTAMP_AFTER_SERVER_MS).unwrap();
        assert_eq!(check_sent("msg-1", at(0), "msg-1", server_ms), Ok(()));
        assert_eq!(check_sent("msg-1", at(-day), "msg-1", server_ms), Ok(()));
        assert_eq!(check_sent("msg-1", at(hour), "msg-1", server_ms), Ok(()));
        assert_eq!(
            check_sent("msg-1", at(0), "msg-2", server_ms),
            Err(PayloadError::ClientMessageIdMismatch)
        );
        for timestamp in [0, at(-day - 1), at(hour + 1), 4_102_444_800_000, u64::MAX] {
            assert_eq!(
                check_sent("msg-1", timestamp, "msg-1", server_ms),
                Err(PayloadError::TimestampOutOfRange),
                "{timestamp}"
            );
        }
    }

    #[test]
    fn a_message_from_another_user_must_name_our_conversation() {
        let mut payload = sample();
        payload.conversation = Uuid::from_u128(7);
        assert_eq!(
            payload.check(&expected_for(&payload)),
            Err(PayloadError::ConversationMismatch)
        );
        // Our own other device's copy of a message we sent to user 7 is fine.
        payload.recipient.user_id = payload.sender.user_id;
        assert_eq!(payload.check(&expected_for(&payload)), Ok(()));
    }

    #[test]
    fn decoding_refuses_trailing_bytes_other_versions_and_bad_ids() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert_eq!(Payload::decode(&bytes), Err(PayloadError::TrailingBytes));

        let mut bytes = sample().encode().unwrap();
        bytes[0] = 2;
        assert_eq!(
            Payload::decode(&bytes),
            Err(PayloadError::UnsupportedVersion(2))
        );

        let mut bytes = sample().encode().unwrap();
        bytes[1] = 9;
        assert_eq!(Payload::decode(&bytes), Err(PayloadError::UnknownKind(9)));

        // The sender device ID sits after version, kind and the 16-byte user.
        let mut bytes = sample().encode().unwrap();
        bytes[18..22].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Payload::decode(&bytes), Err(PayloadError::InvalidDeviceId));

        let mut payload = sample();
        payload.client_message_id = "has space".into();
        assert_eq!(payload.encode(), Err(PayloadError::InvalidClientMessageId));
    }

    #[test]
    fn the_message_layout_is_unchanged() {
        let bytes = sample().encode().unwrap();
        let mut expected = vec![1u8, 1];
        for (user, id, key) in [(1u128, 1u32, 0xA1u8), (2, 3, 0xB2)] {
            expected.extend_from_slice(Uuid::from_u128(user).as_bytes());
            expected.extend_from_slice(&id.to_be_bytes());
            expected.extend_from_slice(&[key; 32]);
        }
        expected.extend_from_slice(Uuid::from_u128(2).as_bytes());
        expected.push(5);
        expected.extend_from_slice(b"msg-1");
        expected.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        expected.extend_from_slice(&5u32.to_be_bytes());
        expected.extend_from_slice(b"hello");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_sender_key_is_kind_2_and_names_a_channel_not_a_user() {
        let mut payload = sample();
        payload.kind = PayloadKind::SenderKey;
        payload.conversation = Uuid::from_u128(0xC4A7);
        let bytes = payload.encode().unwrap();
        assert_eq!(bytes[1], 2);
        assert_eq!(Payload::decode(&bytes).unwrap(), payload);
        // The channel is checked by the group module; sender and recipient as ever.
        assert_eq!(payload.check(&expected_for(&payload)), Ok(()));
        let mut expected = expected_for(&payload);
        expected.sender.key = [0; 32];
        assert_eq!(
            payload.check(&expected),
            Err(PayloadError::SenderKeyMismatch)
        );
        let mut expected = expected_for(&payload);
        expected.recipient.key = [0; 32];
        assert_eq!(
            payload.check(&expected),
            Err(PayloadError::RecipientKeyMismatch)
        );
    }

    #[test]
    fn debug_output_hides_the_body() {
        let mut payload = sample();
        payload.body = b"secret words".to_vec();
        let debug = format!("{payload:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("body_len"));
    }

    fn arb_device() -> impl Strategy<Value = BoundDevice> {
        (any::<u128>(), 1..=i32::MAX as u32, any::<[u8; 32]>()).prop_map(|(user, id, key)| {
            BoundDevice {
                user_id: UserId::from(Uuid::from_u128(user)),
                device_id: DeviceId::new(id).unwrap(),
                key,
            }
        })
    }

    proptest! {
        #[test]
        fn payloads_round_trip(
            sender in arb_device(),
            recipient in arb_device(),
            conversation in any::<u128>(),
            client_message_id in "[A-Za-z0-9_-]{1,64}",
            timestamp_ms in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let payload = Payload {
                kind: PayloadKind::Message,
                sender,
                recipient,
                conversation: Uuid::from_u128(conversation),
                client_message_id,
                timestamp_ms,
                body,
            };
            let bytes = payload.encode().unwrap();
            prop_assert_eq!(Payload::decode(&bytes).unwrap(), payload);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Payload::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(cut in 0usize..170) {
            let bytes = sample().encode().unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(Payload::decode(&bytes[..cut]).is_err());
        }
    }
}

//! Canonical byte encodings that devices sign, and their verification.
//!
//! Every payload starts with a domain-separation label ending in a NUL byte, so a
//! signature made for one purpose (say a one-time key) can never be replayed as another
//! (a fallback key, or identity keys). Every payload binds the user ID (16 UUID bytes) and
//! the device ID (4 bytes, big-endian), so keys signed for one device cannot be published
//! for another. Variable-length fields carry a 2-byte big-endian length prefix.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::ids::{DeviceId, UserId};
use crate::keys::{CURVE25519_KEY_LEN, ED25519_KEY_LEN, ED25519_SIGNATURE_LEN};

/// Label of the identity-keys payload.
pub const IDENTITY_KEYS_LABEL: &[u8] = b"courier:identity-keys:v1\0";
/// Label of a one-time-key payload.
pub const ONE_TIME_KEY_LABEL: &[u8] = b"courier:one-time-key:v1\0";
/// Label of a fallback-key payload.
pub const FALLBACK_KEY_LABEL: &[u8] = b"courier:fallback-key:v1\0";

/// Why a signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The Ed25519 public key is not a valid curve point (or is a weak key).
    #[error("the Ed25519 key is not a valid public key")]
    InvalidPublicKey,
    /// The signature does not verify over the canonical payload.
    #[error("the signature does not match the signed content")]
    BadSignature,
}

fn device_prefix(label: &[u8], user_id: UserId, device_id: DeviceId) -> Vec<u8> {
    let mut payload = Vec::with_capacity(label.len() + 16 + 4 + 2 + 64 + 32);
    payload.extend_from_slice(label);
    payload.extend_from_slice(user_id.as_bytes());
    payload.extend_from_slice(&device_id.get().to_be_bytes());
    payload
}

/// The bytes a device signs to publish its identity keys.
pub fn identity_keys_payload(
    user_id: UserId,
    device_id: DeviceId,
    curve25519: &[u8; CURVE25519_KEY_LEN],
    ed25519: &[u8; ED25519_KEY_LEN],
) -> Vec<u8> {
    let mut payload = device_prefix(IDENTITY_KEYS_LABEL, user_id, device_id);
    payload.extend_from_slice(curve25519);
    payload.extend_from_slice(ed25519);
    payload
}

fn key_payload(
    label: &[u8],
    user_id: UserId,
    device_id: DeviceId,
    key_id: &str,
    key: &[u8; CURVE25519_KEY_LEN],
) -> Vec<u8> {
    let mut payload = device_prefix(label, user_id, device_id);
    // Key IDs are at most 64 bytes (limits::KEY_ID_MAX_CHARS); saturate rather than wrap.
    let len = u16::try_from(key_id.len()).unwrap_or(u16::MAX);
    payload.extend_from_slice(&len.to_be_bytes());
    payload.extend_from_slice(key_id.as_bytes());
    payload.extend_from_slice(key);
    payload
}

/// The bytes a device signs to publish a one-time key.
pub fn one_time_key_payload(
    user_id: UserId,
    device_id: DeviceId,
    key_id: &str,
    key: &[u8; CURVE25519_KEY_LEN],
) -> Vec<u8> {
    key_payload(ONE_TIME_KEY_LABEL, user_id, device_id, key_id, key)
}

/// The bytes a device signs to publish its fallback key.
pub fn fallback_key_payload(
    user_id: UserId,
    device_id: DeviceId,
    key_id: &str,
    key: &[u8; CURVE25519_KEY_LEN],
) -> Vec<u8> {
    key_payload(FALLBACK_KEY_LABEL, user_id, device_id, key_id, key)
}

/// Verifies `signature` by `signing_key` over `payload` (strict Ed25519: no malleable or
/// small-order signatures).
pub fn verify(
    signing_key: &[u8; ED25519_KEY_LEN],
    payload: &[u8],
    signature: &[u8; ED25519_SIGNATURE_LEN],
) -> Result<(), SignatureError> {
    let key =
        VerifyingKey::from_bytes(signing_key).map_err(|_| SignatureError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(SignatureError::InvalidPublicKey);
    }
    key.verify_strict(payload, &Signature::from_bytes(signature))
        .map_err(|_| SignatureError::BadSignature)
}

/// Verifies a device's self-signature over its identity keys.
pub fn verify_identity_keys(
    user_id: UserId,
    device_id: DeviceId,
    curve25519: &[u8; CURVE25519_KEY_LEN],
    ed25519: &[u8; ED25519_KEY_LEN],
    signature: &[u8; ED25519_SIGNATURE_LEN],
) -> Result<(), SignatureError> {
    verify(
        ed25519,
        &identity_keys_payload(user_id, device_id, curve25519, ed25519),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    use super::*;

    fn user() -> UserId {
        UserId::from(uuid::Uuid::from_bytes([1; 16]))
    }

    fn device(id: u32) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[test]
    fn identity_payload_layout_is_stable() {
        let payload = identity_keys_payload(user(), device(0x0102_0304), &[0xAA; 32], &[0xBB; 32]);
        let mut expected = IDENTITY_KEYS_LABEL.to_vec();
        expected.extend_from_slice(&[1; 16]);
        expected.extend_from_slice(&[1, 2, 3, 4]);
        expected.extend_from_slice(&[0xAA; 32]);
        expected.extend_from_slice(&[0xBB; 32]);
        assert_eq!(payload, expected);
    }

    #[test]
    fn one_time_and_fallback_payloads_differ_only_by_label() {
        let otk = one_time_key_payload(user(), device(1), "k1", &[5; 32]);
        let fallback = fallback_key_payload(user(), device(1), "k1", &[5; 32]);
        assert_ne!(otk, fallback);
        assert_eq!(
            &otk[ONE_TIME_KEY_LABEL.len()..],
            &fallback[FALLBACK_KEY_LABEL.len()..]
        );
        // label, user, device, length prefix, key id, key
        assert_eq!(otk.len(), ONE_TIME_KEY_LABEL.len() + 16 + 4 + 2 + 2 + 32);
    }

    #[test]
    fn signatures_bind_device_user_and_purpose() {
        let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
        let ed = signing_key.verifying_key().to_bytes();
        let payload = one_time_key_payload(user(), device(3), "AAAA", &[9; 32]);
        let sig = signing_key.sign(&payload).to_bytes();
        assert_eq!(verify(&ed, &payload, &sig), Ok(()));
        let other_device = one_time_key_payload(user(), device(4), "AAAA", &[9; 32]);
        assert_eq!(
            verify(&ed, &other_device, &sig),
            Err(SignatureError::BadSignature)
        );
        let as_fallback = fallback_key_payload(user(), device(3), "AAAA", &[9; 32]);
        assert_eq!(
            verify(&ed, &as_fallback, &sig),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn invalid_public_keys_are_reported_as_such() {
        // The identity point (a weak key) and a non-canonical encoding.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            verify(&identity, b"x", &[0; 64]),
            Err(SignatureError::InvalidPublicKey)
        );
    }

    proptest! {
        #[test]
        fn distinct_key_ids_give_distinct_payloads(a in "[A-Za-z0-9]{1,64}", b in "[A-Za-z0-9]{1,64}") {
            prop_assume!(a != b);
            prop_assert_ne!(
                one_time_key_payload(user(), device(1), &a, &[0; 32]),
                one_time_key_payload(user(), device(1), &b, &[0; 32])
            );
        }
    }
}

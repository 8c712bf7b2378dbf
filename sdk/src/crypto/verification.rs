//! Fingerprints and safety numbers: what two people compare to know they talk to each
//! other's real devices.
//!
//! - A device's fingerprint is its Ed25519 signing key, hashed with its user and device
//!   ID, shown as 8 groups of 4 hex digits.
//! - A safety number covers two users and all their current devices: for each user, a
//!   hash (iterated, as Signal's safety numbers are, to make grinding a look-alike
//!   expensive) of the user ID and every device's ID and signing key, in device order,
//!   turned into 30 digits; the two halves are ordered by user ID so both sides see the
//!   same 60 digits. Any added, removed or re-keyed device changes it.

use courier_protocol::UserId;
use sha2::{Digest, Sha256, Sha512};

use super::devices::DeviceRecord;

const FINGERPRINT_LABEL: &[u8] = b"courier:device-fingerprint:v1\0";
const SAFETY_NUMBER_LABEL: &[u8] = b"courier:safety-number:v1\0";
/// Hash iterations per half of a safety number.
const SAFETY_NUMBER_ITERATIONS: usize = 5200;

/// A device's fingerprint, e.g. `1a2b 3c4d … 7e8f` (8 groups of 4 hex digits).
pub fn device_fingerprint(record: &DeviceRecord) -> String {
    let mut hash = Sha256::new();
    hash.update(FINGERPRINT_LABEL);
    hash.update(record.user_id.as_bytes());
    hash.update(record.device_id.get().to_be_bytes());
    hash.update(record.keys.ed25519);
    let digest = hash.finalize();
    digest[..16]
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One user's half: 30 digits from the user's ID and current devices' signing keys.
fn half(user_id: UserId, devices: &[&DeviceRecord]) -> String {
    let mut devices: Vec<&&DeviceRecord> = devices
        .iter()
        .filter(|d| d.user_id == user_id && !d.removed)
        .collect();
    devices.sort_by_key(|d| d.device_id);
    let mut material = Vec::with_capacity(16 + devices.len() * 36);
    material.extend_from_slice(user_id.as_bytes());
    for device in devices {
        material.extend_from_slice(&device.device_id.get().to_be_bytes());
        material.extend_from_slice(&device.keys.ed25519);
    }
    let mut digest = Sha512::new()
        .chain_update(SAFETY_NUMBER_LABEL)
        .chain_update(&material)
        .finalize();
    for _ in 1..SAFETY_NUMBER_ITERATIONS {
        digest = Sha512::new()
            .chain_update(digest)
            .chain_update(&material)
            .finalize();
    }
    // Six 5-byte chunks, each as 5 decimal digits.
    digest[..30]
        .chunks(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

/// The safety number of two users, as 12 groups of 5 digits. `devices` holds the devices
/// of both (own devices included, this one too); removed ones are left out.
pub fn safety_number(a: UserId, b: UserId, devices: &[&DeviceRecord]) -> String {
    let (first, second) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let digits = half(first, devices) + &half(second, devices);
    digits
        .as_bytes()
        .chunks(5)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use courier_protocol::DeviceId;

    use super::*;
    use crate::crypto::devices::{DeviceKeys, TrustState};

    fn record(user_id: UserId, id: u32, key: u8) -> DeviceRecord {
        DeviceRecord {
            user_id,
            device_id: DeviceId::new(id).unwrap(),
            keys: DeviceKeys {
                curve25519: [key; 32],
                ed25519: [key; 32],
            },
            previous_keys: None,
            trust: TrustState::TrustedOnFirstUse,
            removed: false,
        }
    }

    #[test]
    fn both_sides_compute_the_same_safety_number() {
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let devices = [record(alice, 1, 1), record(alice, 2, 2), record(bob, 1, 3)];
        let refs: Vec<&DeviceRecord> = devices.iter().collect();
        let mut reversed = refs.clone();
        reversed.reverse();
        let number = safety_number(alice, bob, &refs);
        assert_eq!(number, safety_number(bob, alice, &reversed));
        assert_eq!(number.split(' ').count(), 12);
        assert!(
            number
                .split(' ')
                .all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit()))
        );
    }

    #[test]
    fn an_added_removed_or_rekeyed_device_changes_the_safety_number() {
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let base = [record(alice, 1, 1), record(bob, 1, 3)];
        let number = |devices: &[DeviceRecord]| {
            safety_number(alice, bob, &devices.iter().collect::<Vec<_>>())
        };
        let original = number(&base);
        let mut added = base.to_vec();
        added.push(record(bob, 2, 4));
        assert_ne!(number(&added), original);
        let mut removed = added.clone();
        removed[2].removed = true;
        assert_eq!(number(&removed), original);
        let mut rekeyed = base.to_vec();
        rekeyed[1].keys.ed25519 = [9; 32];
        assert_ne!(number(&rekeyed), original);
    }

    #[test]
    fn fingerprints_differ_per_key_and_device_and_have_a_fixed_shape() {
        let user = UserId::new_random();
        let a = device_fingerprint(&record(user, 1, 1));
        assert_ne!(a, device_fingerprint(&record(user, 1, 2)));
        assert_ne!(a, device_fingerprint(&record(user, 2, 1)));
        assert_eq!(a.split(' ').count(), 8);
        assert_eq!(a.len(), 8 * 4 + 7);
    }
}

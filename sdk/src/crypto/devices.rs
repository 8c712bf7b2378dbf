//! What this device knows of other devices (and of the user's own): their identity keys
//! and how far it trusts them.
//!
//! Trust on first use: the devices a user has when this device first learns of that user
//! are trusted as they are. Later changes are never trusted silently:
//! - a device that appears later is [`TrustState::Unverified`] and surfaced as an event
//!   (messages still reach it: the server refuses a send that leaves out a device, and the
//!   app decides what to show);
//! - a device whose identity keys change (device IDs are never reused, so this is the
//!   server or someone with its keys lying) is [`TrustState::IdentityChanged`]: it gets
//!   nothing, and nothing from it is accepted, until the app accepts the new keys.

use courier_protocol::api::keys::{DeviceRef, IdentityKeys, UserDevicesResponse};
use courier_protocol::keys::decode_fixed;
use courier_protocol::{DeviceId, UserId, signing};
use serde::{Deserialize, Serialize};

/// How far this device trusts another device's identity keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrustState {
    /// Known when this device first learned of its user: trusted on first use.
    TrustedOnFirstUse,
    /// The app's user compared fingerprints or safety numbers.
    Verified,
    /// Appeared after first contact; the app has been told.
    Unverified,
    /// Its identity keys changed; blocked until the app accepts the new keys.
    IdentityChanged,
}

impl TrustState {
    /// Whether messages may go to this device and be accepted from it.
    pub fn allows_messages(self) -> bool {
        !matches!(self, TrustState::IdentityChanged)
    }
}

/// A device's identity keys, checked against its self-signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub curve25519: [u8; 32],
    pub ed25519: [u8; 32],
}

/// What this device records about another device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// The keys messages are exchanged with (for an identity change: the new ones).
    pub keys: DeviceKeys,
    /// The keys before an identity change, until the app accepts the new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_keys: Option<DeviceKeys>,
    pub trust: TrustState,
    /// The server no longer lists it.
    pub removed: bool,
}

impl DeviceRecord {
    /// The device as the wire names it.
    pub fn device_ref(&self) -> DeviceRef {
        DeviceRef {
            user_id: self.user_id,
            device_id: self.device_id,
        }
    }
}

/// A change in another user's (or our own user's) devices, for the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DeviceChange {
    /// A device appeared after first contact. Not trusted until verified.
    Added { device: DeviceRef },
    /// A device is gone: it gets nothing more.
    Removed { device: DeviceRef },
    /// A device's identity keys changed: it is blocked until the app accepts the change.
    IdentityChanged { device: DeviceRef },
}

/// Why a listed device was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceKeysError {
    /// A key or signature is not valid base64 of the right length.
    #[error("the device's identity keys are malformed")]
    Malformed,
    /// The self-signature over the identity keys does not verify.
    #[error("the device's identity keys are not signed by its own key")]
    BadSignature,
}

/// Checks a device's self-signed identity keys as the key directory lists them.
pub fn check_identity_keys(
    user_id: UserId,
    device_id: DeviceId,
    keys: &IdentityKeys,
) -> Result<DeviceKeys, DeviceKeysError> {
    let curve25519 = decode_fixed(&keys.curve25519).map_err(|_| DeviceKeysError::Malformed)?;
    let ed25519 = decode_fixed(&keys.ed25519).map_err(|_| DeviceKeysError::Malformed)?;
    let signature = decode_fixed(&keys.signature).map_err(|_| DeviceKeysError::Malformed)?;
    signing::verify_identity_keys(user_id, device_id, &curve25519, &ed25519, &signature)
        .map_err(|_| DeviceKeysError::BadSignature)?;
    Ok(DeviceKeys {
        curve25519,
        ed25519,
    })
}

/// The outcome of comparing a fresh device list with what this device knew.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Every record to store (new and changed ones).
    pub updated: Vec<DeviceRecord>,
    /// What the app should hear about.
    pub changes: Vec<DeviceChange>,
    /// Devices listed with keys that fail their self-signature: left out.
    pub rejected: Vec<DeviceRef>,
}

/// Compares the directory's list for a user with the records this device has.
///
/// `first_contact` is true when this device has never learned this user's devices
/// before: then every listed device is trusted on first use and nothing is reported.
/// `own_device` is left out (a device does not track itself).
pub(crate) fn reconcile(
    known: &[DeviceRecord],
    listed: &UserDevicesResponse,
    first_contact: bool,
    own_device: Option<DeviceRef>,
) -> Reconciled {
    let mut out = Reconciled::default();
    let user_id = listed.user_id;
    let mut seen = Vec::with_capacity(listed.devices.len());
    for device in &listed.devices {
        let device_ref = DeviceRef {
            user_id,
            device_id: device.device_id,
        };
        if Some(device_ref) == own_device {
            continue;
        }
        let keys = match check_identity_keys(user_id, device.device_id, &device.identity_keys) {
            Ok(keys) => keys,
            Err(_) => {
                out.rejected.push(device_ref);
                continue;
            }
        };
        seen.push(device.device_id);
        match known.iter().find(|r| r.device_id == device.device_id) {
            None => {
                let trust = if first_contact {
                    TrustState::TrustedOnFirstUse
                } else {
                    out.changes.push(DeviceChange::Added { device: device_ref });
                    TrustState::Unverified
                };
                out.updated.push(DeviceRecord {
                    user_id,
                    device_id: device.device_id,
                    keys,
                    previous_keys: None,
                    trust,
                    removed: false,
                });
            }
            Some(record) if record.removed => {
                // Device IDs are never reused and removal is final: a removed device
                // listed again stays removed.
            }
            Some(record) if record.keys != keys => {
                if record.trust != TrustState::IdentityChanged {
                    out.changes
                        .push(DeviceChange::IdentityChanged { device: device_ref });
                }
                out.updated.push(DeviceRecord {
                    keys,
                    previous_keys: record.previous_keys.or(Some(record.keys)),
                    trust: TrustState::IdentityChanged,
                    ..record.clone()
                });
            }
            Some(_) => {}
        }
    }
    for record in known {
        if !record.removed && !seen.contains(&record.device_id) {
            out.changes.push(DeviceChange::Removed {
                device: record.device_ref(),
            });
            out.updated.push(DeviceRecord {
                removed: true,
                ..record.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use courier_protocol::api::keys::DirectoryDevice;
    use courier_protocol::keys::encode_base64;
    use vodozemac::olm::Account;

    use super::*;

    fn directory_device(
        account: &Account,
        user_id: UserId,
        device_id: DeviceId,
    ) -> DirectoryDevice {
        let keys = account.identity_keys();
        let payload = signing::identity_keys_payload(
            user_id,
            device_id,
            &keys.curve25519.to_bytes(),
            keys.ed25519.as_bytes(),
        );
        DirectoryDevice {
            device_id,
            identity_keys: IdentityKeys {
                curve25519: encode_base64(&keys.curve25519.to_bytes()),
                ed25519: encode_base64(keys.ed25519.as_bytes()),
                signature: encode_base64(&account.sign(payload).to_bytes()),
            },
        }
    }

    fn id(n: u32) -> DeviceId {
        DeviceId::new(n).unwrap()
    }

    #[test]
    fn first_contact_trusts_every_device_and_reports_nothing() {
        let user = UserId::new_random();
        let (a, b) = (Account::new(), Account::new());
        let listed = UserDevicesResponse {
            user_id: user,
            devices: vec![
                directory_device(&a, user, id(1)),
                directory_device(&b, user, id(2)),
            ],
        };
        let out = reconcile(&[], &listed, true, None);
        assert_eq!(out.updated.len(), 2);
        assert!(
            out.updated
                .iter()
                .all(|r| r.trust == TrustState::TrustedOnFirstUse)
        );
        assert!(out.changes.is_empty());
    }

    #[test]
    fn later_devices_are_unverified_removed_ones_reported_and_changed_keys_blocked() {
        let user = UserId::new_random();
        let (a, b, c, b2) = (
            Account::new(),
            Account::new(),
            Account::new(),
            Account::new(),
        );
        let first = reconcile(
            &[],
            &UserDevicesResponse {
                user_id: user,
                devices: vec![
                    directory_device(&a, user, id(1)),
                    directory_device(&b, user, id(2)),
                ],
            },
            true,
            None,
        );
        let known = first.updated;
        // Device 1 removed, device 2 now with other keys, device 3 new.
        let next = reconcile(
            &known,
            &UserDevicesResponse {
                user_id: user,
                devices: vec![
                    directory_device(&b2, user, id(2)),
                    directory_device(&c, user, id(3)),
                ],
            },
            false,
            None,
        );
        let dref = |n| DeviceRef {
            user_id: user,
            device_id: id(n),
        };
        assert!(
            next.changes
                .contains(&DeviceChange::Removed { device: dref(1) })
        );
        assert!(
            next.changes
                .contains(&DeviceChange::IdentityChanged { device: dref(2) })
        );
        assert!(
            next.changes
                .contains(&DeviceChange::Added { device: dref(3) })
        );
        let record = |n| next.updated.iter().find(|r| r.device_id == id(n)).unwrap();
        assert!(record(1).removed);
        assert_eq!(record(2).trust, TrustState::IdentityChanged);
        assert!(!record(2).trust.allows_messages());
        assert_eq!(record(2).previous_keys, Some(known[1].keys));
        assert_eq!(record(3).trust, TrustState::Unverified);
        assert!(record(3).trust.allows_messages());
    }

    #[test]
    fn a_device_with_a_forged_self_signature_is_rejected() {
        let user = UserId::new_random();
        let (a, b) = (Account::new(), Account::new());
        let mut forged = directory_device(&a, user, id(1));
        // Keys of one account, signature of another.
        forged.identity_keys.signature = directory_device(&b, user, id(1)).identity_keys.signature;
        let out = reconcile(
            &[],
            &UserDevicesResponse {
                user_id: user,
                devices: vec![forged],
            },
            true,
            None,
        );
        assert!(out.updated.is_empty());
        assert_eq!(out.rejected.len(), 1);
    }

    #[test]
    fn the_own_device_is_left_out() {
        let user = UserId::new_random();
        let a = Account::new();
        let own = DeviceRef {
            user_id: user,
            device_id: id(1),
        };
        let out = reconcile(
            &[],
            &UserDevicesResponse {
                user_id: user,
                devices: vec![directory_device(&a, user, id(1))],
            },
            true,
            Some(own),
        );
        assert!(out.updated.is_empty());
    }
}

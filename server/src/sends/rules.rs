//! The rules a one-to-one send is checked against, in Rust, before anything is written:
//! a V2 send carries exactly one envelope per reachable device of the recipient and of the
//! sender (less the sending device); a V1 send reaches every active device of the
//! recipient (derived here: V1 clients know nothing of devices).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::{DeviceListMismatch, EnvelopeType};

use crate::db::messages::{NewEnvelope, StoreJob, UserDevices};

/// What a send is checked against: the device lists of its sender and recipient.
#[derive(Debug)]
pub struct SendContext {
    recipient_exists: bool,
    /// Reachable devices (active, identity keys published) of the recipient and sender.
    reachable: BTreeSet<DeviceRef>,
    /// Active devices (reachable or not) of the recipient and sender.
    active: BTreeSet<DeviceRef>,
    /// Removed devices of the recipient and sender.
    removed: BTreeSet<DeviceRef>,
}

/// Why a send is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such recipient user.
    RecipientNotFound,
    /// The recipient has no device that can receive.
    RecipientUnreachable,
    /// The envelope set does not match the device lists.
    Mismatch(DeviceListMismatch),
    /// The sending device used this client message ID for a message to another
    /// conversation.
    ClientMessageIdReused,
}

impl SendContext {
    /// The context of a send from `sender` to `recipient` (whose lists must be in
    /// `lists`; a user missing there counts as not existing).
    pub fn new(
        sender: DeviceRef,
        recipient: UserId,
        lists: &HashMap<UserId, Arc<UserDevices>>,
    ) -> Self {
        let mut context = SendContext {
            recipient_exists: lists.get(&recipient).is_some_and(|list| list.exists),
            reachable: BTreeSet::new(),
            active: BTreeSet::new(),
            removed: BTreeSet::new(),
        };
        let users: BTreeSet<UserId> = [sender.user_id, recipient].into_iter().collect();
        for state in users
            .iter()
            .filter_map(|user| lists.get(user))
            .flat_map(|list| list.devices.iter())
        {
            if state.removed {
                context.removed.insert(state.device);
            } else {
                context.active.insert(state.device);
                if state.reachable {
                    context.reachable.insert(state.device);
                }
            }
        }
        context
    }

    /// Checks a V2 envelope set: exactly the reachable devices of the recipient and of the
    /// sender, less the sending device.
    pub fn check_v2(
        &self,
        sender: DeviceRef,
        recipient: UserId,
        requested: &BTreeSet<DeviceRef>,
    ) -> Result<(), Refusal> {
        let expected: BTreeSet<DeviceRef> = self
            .reachable
            .iter()
            .filter(|device| **device != sender)
            .copied()
            .collect();
        if !self.recipient_exists {
            return Err(Refusal::RecipientNotFound);
        }
        // A mismatch first: its details say which devices to drop (a deactivated user's
        // are all stale) or add. Once the set matches, no recipient device is unreachable.
        let mismatch = compare(&expected, &self.removed, requested);
        if !mismatch.is_empty() {
            return Err(Refusal::Mismatch(mismatch));
        }
        self.check_recipient(recipient, &expected)
    }

    /// The devices a V1 message goes to: every active device of the recipient (V1 knows
    /// nothing of devices or of their keys), less the sending device.
    pub fn v1_targets(
        &self,
        sender: DeviceRef,
        recipient: UserId,
    ) -> Result<Vec<DeviceRef>, Refusal> {
        let targets: BTreeSet<DeviceRef> = self
            .active
            .iter()
            .filter(|device| device.user_id == recipient && **device != sender)
            .copied()
            .collect();
        self.check_recipient(recipient, &targets)?;
        Ok(targets.into_iter().collect())
    }

    fn check_recipient(
        &self,
        recipient: UserId,
        targets: &BTreeSet<DeviceRef>,
    ) -> Result<(), Refusal> {
        if !self.recipient_exists {
            return Err(Refusal::RecipientNotFound);
        }
        if !targets.iter().any(|device| device.user_id == recipient) {
            return Err(Refusal::RecipientUnreachable);
        }
        Ok(())
    }
}

/// What is wrong with a requested envelope set, all at once.
pub fn compare(
    expected: &BTreeSet<DeviceRef>,
    removed: &BTreeSet<DeviceRef>,
    requested: &BTreeSet<DeviceRef>,
) -> DeviceListMismatch {
    let missing = expected.difference(requested).copied().collect();
    let (stale, extra) = requested
        .difference(expected)
        .copied()
        .partition(|device| removed.contains(device));
    DeviceListMismatch {
        missing,
        extra,
        stale,
    }
}

/// Checks a job against device lists; a V1 job gets its targets.
pub fn check_job(
    job: &mut StoreJob,
    lists: &HashMap<UserId, Arc<UserDevices>>,
) -> Result<(), Refusal> {
    if job.channel.is_some() {
        // The group send checked the member devices and their sender keys.
        return Ok(());
    }
    let context = SendContext::new(job.sender, job.recipient, lists);
    if job.legacy_envelope.is_some() {
        let targets = context.v1_targets(job.sender, job.recipient)?;
        job.envelopes = targets
            .into_iter()
            .map(|device| NewEnvelope {
                device,
                envelope_type: EnvelopeType::Legacy,
                ciphertext: None,
            })
            .collect();
        Ok(())
    } else {
        let requested = job.envelopes.iter().map(|e| e.device).collect();
        context.check_v2(job.sender, job.recipient, &requested)
    }
}

#[cfg(test)]
mod tests {
    use courier_protocol::DeviceId;
    use uuid::Uuid;

    use super::*;
    use crate::db::messages::DeviceState;

    fn d(user: u8, device: u32) -> DeviceRef {
        DeviceRef {
            user_id: UserId::from(Uuid::from_bytes([user; 16])),
            device_id: DeviceId::new(device).unwrap(),
        }
    }

    #[test]
    fn compare_reports_missing_extra_and_stale_together() {
        let expected = BTreeSet::from([d(1, 1), d(1, 2), d(2, 1)]);
        let removed = BTreeSet::from([d(1, 3)]);
        let requested = BTreeSet::from([d(1, 1), d(1, 3), d(2, 9)]);
        let mismatch = compare(&expected, &removed, &requested);
        assert_eq!(mismatch.missing, vec![d(1, 2), d(2, 1)]);
        assert_eq!(mismatch.stale, vec![d(1, 3)]);
        assert_eq!(mismatch.extra, vec![d(2, 9)]);
        assert!(compare(&expected, &removed, &expected).is_empty());
    }

    #[test]
    fn v2_expects_every_reachable_device_but_the_sender() {
        let sender = d(1, 1);
        let state = |device, removed, reachable| DeviceState {
            device,
            removed,
            reachable,
        };
        let lists = HashMap::from([
            (
                d(1, 1).user_id,
                Arc::new(UserDevices {
                    exists: true,
                    devices: vec![
                        state(d(1, 1), false, true),
                        state(d(1, 2), false, true),
                        state(d(1, 3), true, false),
                    ],
                }),
            ),
            (
                d(2, 1).user_id,
                Arc::new(UserDevices {
                    exists: true,
                    devices: vec![state(d(2, 1), false, true), state(d(2, 2), false, false)],
                }),
            ),
            (
                d(3, 1).user_id,
                Arc::new(UserDevices {
                    exists: true,
                    devices: vec![state(d(3, 1), false, true)],
                }),
            ),
        ]);
        let recipient = d(2, 1).user_id;
        let context = SendContext::new(sender, recipient, &lists);
        assert!(
            context
                .check_v2(sender, recipient, &BTreeSet::from([d(1, 2), d(2, 1)]))
                .is_ok()
        );
        assert!(matches!(
            context.check_v2(sender, recipient, &BTreeSet::from([d(2, 1)])),
            Err(Refusal::Mismatch(_))
        ));
        // V1 reaches every active device of the recipient, keys or not.
        assert_eq!(
            context.v1_targets(sender, recipient).unwrap(),
            vec![d(2, 1), d(2, 2)]
        );
        // A removed device is stale, a third user's device extra.
        let Err(Refusal::Mismatch(mismatch)) = context.check_v2(
            sender,
            recipient,
            &BTreeSet::from([d(1, 2), d(1, 3), d(2, 1), d(3, 1)]),
        ) else {
            panic!("a removed and a foreign device must be refused");
        };
        assert_eq!(mismatch.stale, vec![d(1, 3)]);
        assert_eq!(mismatch.extra, vec![d(3, 1)]);
        // A recipient missing from the lists does not exist.
        assert!(matches!(
            SendContext::new(sender, d(4, 1).user_id, &lists).check_v2(
                sender,
                d(4, 1).user_id,
                &BTreeSet::new()
            ),
            Err(Refusal::RecipientNotFound)
        ));
    }

    #[test]
    fn a_recipient_whose_devices_are_all_gone_is_stale_first_then_unreachable() {
        let sender = d(1, 1);
        let lists = HashMap::from([
            (
                sender.user_id,
                Arc::new(UserDevices {
                    exists: true,
                    devices: vec![DeviceState {
                        device: sender,
                        removed: false,
                        reachable: true,
                    }],
                }),
            ),
            (
                d(2, 1).user_id,
                Arc::new(UserDevices {
                    exists: true,
                    devices: [d(2, 1), d(2, 2)]
                        .into_iter()
                        .map(|device| DeviceState {
                            device,
                            removed: true,
                            reachable: false,
                        })
                        .collect(),
                }),
            ),
        ]);
        let recipient = d(2, 1).user_id;
        let context = SendContext::new(sender, recipient, &lists);
        // The sender still knows the devices: told they are stale, so it drops them.
        let Err(Refusal::Mismatch(mismatch)) =
            context.check_v2(sender, recipient, &BTreeSet::from([d(2, 1), d(2, 2)]))
        else {
            panic!("the removed devices must be named stale");
        };
        assert_eq!(mismatch.stale, vec![d(2, 1), d(2, 2)]);
        // With the fresh (empty) list: nobody to send to.
        assert_eq!(
            context.check_v2(sender, recipient, &BTreeSet::new()),
            Err(Refusal::RecipientUnreachable)
        );
    }
}

//! The crypto core without a network: machines exchange what the server would relay
//! (directory listings, claimed keys, envelopes), built from the machines' own outputs.

use std::sync::Arc;

use chrono::Utc;
use courier_protocol::api::keys::{
    ClaimKeysResponse, ClaimedKey, DeviceRef, DirectoryDevice, UserDevicesResponse,
};
use courier_protocol::api::messages::DeviceEnvelope;
use courier_protocol::api::stream::Envelope;
use courier_protocol::{DeviceId, UserId};
use uuid::Uuid;

use super::*;
use crate::store::{SqliteStore, StoreKey};

struct Device {
    machine: CryptoMachine,
}

fn memory_store() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open_in_memory(&StoreKey::from_bytes([3; 32])).unwrap())
}

fn device(user: UserId, id: u32) -> Device {
    Device {
        machine: CryptoMachine::create(memory_store(), user, DeviceId::new(id).unwrap()).unwrap(),
    }
}

fn listing(user: UserId, devices: &[&Device]) -> UserDevicesResponse {
    UserDevicesResponse {
        user_id: user,
        devices: devices
            .iter()
            .map(|d| DirectoryDevice {
                device_id: d.machine.own_device().device_id,
                identity_keys: d.machine.identity_keys_upload(),
            })
            .collect(),
    }
}

/// What the server's claim endpoint hands out: one published one-time key per device.
fn claim(devices: &mut [&mut Device]) -> ClaimKeysResponse {
    let mut keys = Vec::new();
    for d in devices.iter_mut() {
        let upload = d.machine.one_time_keys_for_upload(0).unwrap().unwrap();
        d.machine.mark_one_time_keys_published().unwrap();
        let own = d.machine.own_device();
        keys.push(ClaimedKey {
            user_id: own.user_id,
            device_id: own.device_id,
            key: upload.one_time_keys[0].clone(),
            fallback: false,
        });
    }
    ClaimKeysResponse {
        keys,
        unavailable: vec![],
    }
}

/// The stream item the server would make of `message`'s envelope for `to`.
fn envelope_for(
    sender: &Device,
    message_id: Uuid,
    message: &OutgoingMessage,
    to: &Device,
) -> Envelope {
    let client_message_id = &message.request.client_message_id;
    envelope_from(
        sender,
        message_id,
        client_message_id,
        envelope_to(message, to),
    )
}

/// The stream item the server would make of one device's envelope.
fn envelope_from(
    sender: &Device,
    message_id: Uuid,
    client_message_id: &str,
    envelope: &DeviceEnvelope,
) -> Envelope {
    let from = sender.machine.own_device();
    Envelope {
        seq: 1,
        message_id,
        sender_user_id: from.user_id,
        sender_device_id: from.device_id,
        client_message_id: client_message_id.to_owned(),
        protocol_version: 2,
        envelope_type: envelope.envelope_type,
        ciphertext: envelope.ciphertext.clone(),
        server_timestamp: Utc::now(),
    }
}

fn envelope_to<'a>(message: &'a OutgoingMessage, to: &Device) -> &'a DeviceEnvelope {
    let own = to.machine.own_device();
    message
        .request
        .device_envelopes
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.user_id == own.user_id && e.device_id == own.device_id)
        .expect("an envelope for this device")
}

fn body_of(decrypted: Decrypted) -> Vec<u8> {
    match decrypted {
        Decrypted::Message(message) => message.body,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Alice with two devices, Bob with three, all knowing each other's lists.
struct World {
    alice: UserId,
    bob: UserId,
    a: Vec<Device>,
    b: Vec<Device>,
}

fn world() -> World {
    world_with(None)
}

/// The world, with Bob's device 1 on the given store.
fn world_with(bob1_store: Option<Arc<SqliteStore>>) -> World {
    let (alice, bob) = (UserId::new_random(), UserId::new_random());
    let mut a: Vec<Device> = (1..=2).map(|i| device(alice, i)).collect();
    let mut b: Vec<Device> = (1..=3).map(|i| device(bob, i)).collect();
    if let Some(store) = bob1_store {
        b[0].machine = CryptoMachine::create(store, bob, DeviceId::new(1).unwrap()).unwrap();
    }
    let alice_list = listing(alice, &a.iter().collect::<Vec<_>>());
    let bob_list = listing(bob, &b.iter().collect::<Vec<_>>());
    for d in a.iter_mut().chain(b.iter_mut()) {
        d.machine.update_device_list(&alice_list).unwrap();
        d.machine.update_device_list(&bob_list).unwrap();
    }
    World { alice, bob, a, b }
}

/// Alice's device 1 sends `body` to Bob, opening sessions first.
fn alice_sends(w: &mut World, client_id: &str, body: &[u8]) -> OutgoingMessage {
    let (sender, rest) = w.a.split_first_mut().unwrap();
    match sender.machine.encrypt_message(w.bob, client_id, body, 1) {
        Err(MachineError::MissingSessions(missing)) => {
            let mut claimable: Vec<&mut Device> = rest
                .iter_mut()
                .chain(w.b.iter_mut())
                .filter(|d| missing.contains(&d.machine.own_device()))
                .collect();
            let claimed = claim(&mut claimable);
            assert!(
                sender
                    .machine
                    .add_claimed_keys(&claimed)
                    .unwrap()
                    .is_empty()
            );
            sender
                .machine
                .encrypt_message(w.bob, client_id, body, 1)
                .unwrap()
        }
        other => other.unwrap(),
    }
}

#[test]
fn every_recipient_device_and_the_senders_other_device_decrypt_their_envelope() {
    let mut w = world();
    let message = alice_sends(&mut w, "m1", b"hello bob");
    assert_eq!(message.request.device_envelopes.as_ref().unwrap().len(), 4);
    let id = Uuid::new_v4();
    for d in &mut w.b {
        let envelope = envelope_for(&w.a[0], id, &message, d);
        let Decrypted::Message(received) = d.machine.decrypt_envelope(&envelope).unwrap() else {
            panic!("Bob's device could not decrypt");
        };
        assert_eq!(received.body, b"hello bob");
        assert_eq!(received.conversation, w.alice);
        assert!(!received.from_own_device);
        assert_eq!(received.client_message_id, "m1");
    }
    let own = envelope_for(&w.a[0], id, &message, &w.a[1]);
    let Decrypted::Message(copy) = w.a[1].machine.decrypt_envelope(&own).unwrap() else {
        panic!("Alice's other device could not decrypt");
    };
    assert!(copy.from_own_device);
    assert_eq!(
        copy.conversation, w.bob,
        "the copy belongs to the conversation with Bob"
    );

    // Bob answers on an established session (normal messages both ways).
    let answer = {
        let (b1, _) = w.b.split_first_mut().unwrap();
        match b1.machine.encrypt_message(w.alice, "r1", b"hi alice", 2) {
            Err(MachineError::MissingSessions(missing)) => {
                let mut claimable: Vec<&mut Device> =
                    w.a.iter_mut()
                        .chain(w.b.iter_mut().skip(1))
                        .filter(|d| missing.contains(&d.machine.own_device()))
                        .collect();
                let claimed = claim(&mut claimable);
                w.b[0].machine.add_claimed_keys(&claimed).unwrap();
                w.b[0]
                    .machine
                    .encrypt_message(w.alice, "r1", b"hi alice", 2)
                    .unwrap()
            }
            other => other.unwrap(),
        }
    };
    let envelope = envelope_for(&w.b[0], Uuid::new_v4(), &answer, &w.a[0]);
    // Bob's device 1 already has the session Alice's device 1 opened: a normal message.
    assert_eq!(
        envelope.envelope_type,
        courier_protocol::api::messages::EnvelopeType::Normal
    );
    assert_eq!(
        body_of(w.a[0].machine.decrypt_envelope(&envelope).unwrap()),
        b"hi alice"
    );
}

#[test]
fn a_redelivered_envelope_is_a_duplicate_and_a_replay_under_a_new_id_fails() {
    let mut w = world();
    let message = alice_sends(&mut w, "m1", b"once");
    let envelope = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&envelope).unwrap()),
        b"once"
    );
    assert_eq!(
        w.b[0].machine.decrypt_envelope(&envelope).unwrap(),
        Decrypted::Duplicate
    );
    let mut replayed = envelope.clone();
    replayed.message_id = Uuid::new_v4();
    assert_eq!(
        w.b[0].machine.decrypt_envelope(&replayed).unwrap(),
        Decrypted::Failed(FailureReason::Undecryptable)
    );
}

#[test]
fn a_re_addressed_or_re_attributed_ciphertext_is_rejected() {
    let mut w = world();
    let message = alice_sends(&mut w, "m1", b"for bob 1 only");
    // Bob's device 1's envelope handed to Bob's device 2.
    let wrong_device = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    assert!(matches!(
        w.b[1].machine.decrypt_envelope(&wrong_device).unwrap(),
        Decrypted::Failed(_)
    ));
    // The right device, but the server claims Alice's other device sent it.
    let mut wrong_sender = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    wrong_sender.sender_device_id = w.a[1].machine.own_device().device_id;
    assert!(matches!(
        w.b[0].machine.decrypt_envelope(&wrong_sender).unwrap(),
        Decrypted::Failed(_)
    ));
    // Nothing was consumed by the forgeries: the genuine envelope still decrypts.
    let genuine = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&genuine).unwrap()),
        b"for bob 1 only"
    );
}

#[test]
fn an_identity_change_blocks_sending_until_accepted() {
    let mut w = world();
    alice_sends(&mut w, "m1", b"before");
    // Bob's device 2 comes back from the directory with other keys.
    let imposter = device(w.bob, 2);
    let listed = listing(w.bob, &[&w.b[0], &imposter, &w.b[2]]);
    let changes = w.a[0].machine.update_device_list(&listed).unwrap();
    let bob2 = w.b[1].machine.own_device();
    assert_eq!(
        changes,
        vec![DeviceChange::IdentityChanged { device: bob2 }]
    );
    match w.a[0].machine.encrypt_message(w.bob, "m2", b"blocked", 2) {
        Err(MachineError::BlockedDevices(devices)) => assert_eq!(devices, vec![bob2]),
        other => panic!("expected the send to be blocked, got {other:?}"),
    }
    let events = w.a[0].machine.pending_events(10).unwrap();
    assert!(events.iter().any(|e| e.event
        == Event::Device {
            change: DeviceChange::IdentityChanged { device: bob2 }
        }));

    w.a[0].machine.accept_identity_change(bob2).unwrap();
    // The new keys need a new session (the old one was with the old keys).
    match w.a[0].machine.encrypt_message(w.bob, "m2", b"after", 2) {
        Err(MachineError::MissingSessions(missing)) => assert_eq!(missing, vec![bob2]),
        other => panic!("expected a missing session, got {other:?}"),
    }
}

#[test]
fn the_store_survives_a_restart_mid_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([9; 32]);
    let path = dir.path().join("bob1.db");
    let mut w = world_with(Some(Arc::new(SqliteStore::open(&path, &key).unwrap())));
    let bob = w.bob;

    let first = alice_sends(&mut w, "m1", b"one");
    let first_envelope = envelope_for(&w.a[0], Uuid::new_v4(), &first, &w.b[0]);
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&first_envelope).unwrap()),
        b"one"
    );

    // Restart: drop the machine and its store, reopen the file.
    w.b[0].machine = device(UserId::new_random(), 9).machine;
    let store = Arc::new(SqliteStore::open(&path, &key).unwrap());
    let reloaded = CryptoMachine::load(store)
        .unwrap()
        .expect("the account is stored");
    assert_eq!(reloaded.own_device().user_id, bob);
    w.b[0].machine = reloaded;

    let second = alice_sends(&mut w, "m2", b"two");
    let envelope = envelope_for(&w.a[0], Uuid::new_v4(), &second, &w.b[0]);
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&envelope).unwrap()),
        b"two"
    );
    // A redelivery of the first message is still recognised after the restart.
    assert_eq!(
        w.b[0].machine.decrypt_envelope(&first_envelope).unwrap(),
        Decrypted::Duplicate
    );
    // And it answers Alice's device 1 on the restored session: no new session needed.
    let answer = w.b[0].machine.encrypt_message(w.alice, "r", b"back", 3);
    assert!(
        !matches!(&answer, Err(MachineError::MissingSessions(m)) if m.contains(&w.a[0].machine.own_device())),
        "the session with Alice's device 1 survived the restart"
    );
}

#[test]
fn one_time_keys_are_topped_up_and_the_fallback_key_still_opens_a_session() {
    let mut w = world();
    let bob1 = &mut w.b[0].machine;
    let upload = bob1.one_time_keys_for_upload(0).unwrap().unwrap();
    assert_eq!(upload.one_time_keys.len(), ONE_TIME_KEY_TARGET as usize);
    // Asked again before confirming: the same keys (the upload is idempotent).
    assert_eq!(bob1.one_time_keys_for_upload(0).unwrap().unwrap(), upload);
    bob1.mark_one_time_keys_published().unwrap();
    assert_eq!(
        bob1.one_time_keys_for_upload(ONE_TIME_KEY_TARGET / 2)
            .unwrap(),
        None
    );
    let top_up = bob1.one_time_keys_for_upload(3).unwrap().unwrap();
    assert_eq!(
        top_up.one_time_keys.len(),
        (ONE_TIME_KEY_TARGET - 3) as usize
    );
    bob1.mark_one_time_keys_published().unwrap();

    let fallback = bob1
        .fallback_key_for_upload(1_000)
        .unwrap()
        .expect("a first fallback key");
    bob1.mark_fallback_key_published(1_000).unwrap();
    assert_eq!(
        bob1.fallback_key_for_upload(2_000).unwrap(),
        None,
        "not due yet"
    );
    let bob_ref = bob1.own_device();

    // One-time keys exhausted on the server: Alice's device 2 gets the fallback key.
    let claimed = ClaimKeysResponse {
        keys: vec![ClaimedKey {
            user_id: bob_ref.user_id,
            device_id: bob_ref.device_id,
            key: fallback,
            fallback: true,
        }],
        unavailable: vec![],
    };
    assert!(
        w.a[1]
            .machine
            .add_claimed_keys(&claimed)
            .unwrap()
            .is_empty()
    );
    let targets = w.a[1].machine.send_targets(w.bob).unwrap();
    assert!(
        !w.a[1]
            .machine
            .devices_without_session(&targets)
            .unwrap()
            .contains(&bob_ref)
    );
    // Send to Bob 1 only is not possible (all devices must be covered): open the rest too.
    let mut rest: Vec<&mut Device> =
        w.a.iter_mut()
            .take(1)
            .chain(w.b.iter_mut().skip(1))
            .collect();
    let claimed = claim(&mut rest);
    w.a[1].machine.add_claimed_keys(&claimed).unwrap();
    let message = w.a[1]
        .machine
        .encrypt_message(w.bob, "fb", b"via fallback", 5)
        .unwrap();
    let envelope = envelope_for(&w.a[1], Uuid::new_v4(), &message, &w.b[0]);
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&envelope).unwrap()),
        b"via fallback"
    );
}

#[test]
fn a_claimed_key_with_a_bad_signature_opens_no_session() {
    let mut w = world();
    let mut claimed = claim(&mut [&mut w.b[0]]);
    claimed.keys[0].key.signature = claim(&mut [&mut w.b[1]]).keys[0].key.signature.clone();
    let failed = w.a[0].machine.add_claimed_keys(&claimed).unwrap();
    assert_eq!(failed, vec![w.b[0].machine.own_device()]);
}

#[test]
fn events_stay_queued_until_confirmed() {
    let mut w = world();
    let message = alice_sends(&mut w, "m1", b"queued");
    let envelope = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    w.b[0].machine.decrypt_envelope(&envelope).unwrap();
    let events = w.b[0].machine.pending_events(10).unwrap();
    let last = events.last().unwrap().clone();
    assert!(matches!(&last.event, Event::Message { message } if message.body == b"queued"));
    assert_eq!(
        w.b[0].machine.pending_events(10).unwrap(),
        events,
        "reading does not consume"
    );
    w.b[0].machine.confirm_events(last.seq).unwrap();
    assert!(w.b[0].machine.pending_events(10).unwrap().is_empty());
}

#[test]
fn a_device_added_later_is_surfaced_unverified_and_a_removed_one_gets_nothing() {
    let mut w = world();
    let newcomer = device(w.bob, 4);
    let listed = listing(w.bob, &[&w.b[0], &w.b[1], &newcomer]);
    let changes = w.a[0].machine.update_device_list(&listed).unwrap();
    let (bob3, bob4) = (w.b[2].machine.own_device(), newcomer.machine.own_device());
    assert!(changes.contains(&DeviceChange::Added { device: bob4 }));
    assert!(changes.contains(&DeviceChange::Removed { device: bob3 }));
    let targets: Vec<DeviceRef> = w.a[0]
        .machine
        .send_targets(w.bob)
        .unwrap()
        .iter()
        .map(DeviceRecord::device_ref)
        .collect();
    assert!(targets.contains(&bob4));
    assert!(!targets.contains(&bob3));
    let record = w.a[0]
        .machine
        .devices(w.bob)
        .unwrap()
        .into_iter()
        .find(|d| d.device_ref() == bob4)
        .unwrap();
    assert_eq!(record.trust, TrustState::Unverified);
    w.a[0].machine.verify_device(bob4).unwrap();
    let record = w.a[0]
        .machine
        .devices(w.bob)
        .unwrap()
        .into_iter()
        .find(|d| d.device_ref() == bob4)
        .unwrap();
    assert_eq!(record.trust, TrustState::Verified);
}

#[test]
fn both_users_see_the_same_safety_number() {
    let w = world();
    assert_eq!(
        w.a[0].machine.safety_number(w.bob).unwrap(),
        w.b[2].machine.safety_number(w.alice).unwrap()
    );
}

#[test]
fn debug_output_carries_no_message_text() {
    let mut w = world();
    let message = alice_sends(&mut w, "m1", b"very private words");
    let envelope = envelope_for(&w.a[0], Uuid::new_v4(), &message, &w.b[0]);
    let decrypted = w.b[0].machine.decrypt_envelope(&envelope).unwrap();
    let text = format!(
        "{decrypted:?} {:?} {:?}",
        w.b[0].machine,
        w.b[0].machine.pending_events(5).unwrap()
    );
    assert!(!text.contains("private"), "{text}");
}

use super::machine::ONE_TIME_KEY_TARGET;

#[test]
fn a_legacy_v1_envelope_is_read_by_the_device_it_was_encrypted_for() {
    let mut w = world();
    let message = alice_sends(&mut w, "legacy-1", b"from an old client");
    let envelope = envelope_to(&message, &w.b[0]);
    // A V1 envelope carries the Olm message type in its first byte.
    let mut bytes = vec![match envelope.envelope_type {
        courier_protocol::api::messages::EnvelopeType::PreKey => 0u8,
        _ => 1u8,
    }];
    bytes.extend(courier_protocol::keys::decode_base64(&envelope.ciphertext).unwrap());
    let legacy = DeviceEnvelope {
        envelope_type: courier_protocol::api::messages::EnvelopeType::Legacy,
        ciphertext: courier_protocol::keys::encode_base64(&bytes),
        ..envelope.clone()
    };
    let mut received = envelope_from(&w.a[0], Uuid::new_v4(), "legacy-1", &legacy);
    received.protocol_version = 1;
    assert_eq!(
        body_of(w.b[0].machine.decrypt_envelope(&received).unwrap()),
        b"from an old client"
    );
    // The same V1 ciphertext reaches Bob's other devices too; they cannot read it.
    let mut elsewhere = received.clone();
    elsewhere.message_id = Uuid::new_v4();
    assert!(matches!(
        w.b[1].machine.decrypt_envelope(&elsewhere).unwrap(),
        Decrypted::Failed(_)
    ));
}

#[test]
fn the_event_queue_reads_and_confirms_its_head_and_old_stores_find_theirs() {
    use courier_protocol::api::messages::SendMessageResponse;
    let store = memory_store();
    let user = UserId::new_random();
    let machine = CryptoMachine::create(store.clone(), user, DeviceId::new(1).unwrap()).unwrap();
    let sent = |n: u32| SendMessageResponse {
        message_id: Uuid::new_v4(),
        server_timestamp: Utc::now(),
        envelope_count: n,
    };
    let seqs = |events: Vec<QueuedEvent>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let record = |id: &str, n: u32| {
        machine.keep_outgoing(&outgoing(user, id)).unwrap();
        machine.record_sent(user, id, &sent(n)).unwrap();
    };
    for n in 0..5 {
        record(&format!("c{n}"), n);
    }
    assert_eq!(seqs(machine.pending_events(2).unwrap()), [1, 2]);
    machine.confirm_events(3).unwrap();
    assert_eq!(seqs(machine.pending_events(10).unwrap()), [4, 5]);
    // Confirming what is already confirmed, or past the end, changes nothing wrong.
    machine.confirm_events(2).unwrap();
    assert_eq!(seqs(machine.pending_events(10).unwrap()), [4, 5]);

    // A store written before the queue's head was kept: the head is found from the
    // events themselves, and new events follow them.
    store
        .transaction(|tx| tx.delete(store::META, b"", b"first_event_seq"))
        .unwrap();
    assert_eq!(seqs(machine.pending_events(10).unwrap()), [4, 5]);
    record("c5", 5);
    assert_eq!(seqs(machine.pending_events(10).unwrap()), [4, 5, 6]);
    machine.confirm_events(99).unwrap();
    assert!(machine.pending_events(10).unwrap().is_empty());
    record("c6", 6);
    assert_eq!(seqs(machine.pending_events(10).unwrap()), [7]);
}

fn outgoing(user: UserId, client_message_id: &str) -> OutgoingSend {
    OutgoingSend {
        target: OutgoingTarget::User(user),
        client_message_id: client_message_id.to_owned(),
        body: b"kept".to_vec(),
        queued_at_ms: 0,
    }
}

#[test]
fn a_kept_message_stays_until_the_server_stored_it_and_is_reported_sent_once() {
    use courier_protocol::api::messages::SendMessageResponse;
    let store = memory_store();
    let user = UserId::new_random();
    let other = UserId::new_random();
    let machine = CryptoMachine::create(store, user, DeviceId::new(1).unwrap()).unwrap();
    let response = SendMessageResponse {
        message_id: Uuid::new_v4(),
        server_timestamp: Utc::now(),
        envelope_count: 2,
    };
    let mut first = outgoing(other, "first");
    first.queued_at_ms = 2;
    let mut second = outgoing(other, "second");
    second.queued_at_ms = 1;
    machine.keep_outgoing(&first).unwrap();
    machine.keep_outgoing(&second).unwrap();
    // A repeat keeps the original.
    machine
        .keep_outgoing(&OutgoingSend {
            body: b"changed".to_vec(),
            ..first.clone()
        })
        .unwrap();
    assert_eq!(machine.outgoing().unwrap(), [second.clone(), first.clone()]);

    // A refusal for another conversation under the same ID leaves it kept.
    machine
        .drop_outgoing(&OutgoingTarget::Channel(Uuid::new_v4()), "first")
        .unwrap();
    assert_eq!(machine.outgoing().unwrap().len(), 2);

    machine.record_sent(other, "first", &response).unwrap();
    machine.record_sent(other, "first", &response).unwrap();
    let events = machine.pending_events(10).unwrap();
    assert_eq!(
        events.len(),
        1,
        "sent once, however often the server confirms it"
    );
    assert!(
        matches!(&events[0].event, Event::Sent { client_message_id, .. } if client_message_id == "first")
    );
    assert_eq!(machine.outgoing().unwrap(), [second]);

    machine
        .drop_outgoing(&OutgoingTarget::User(other), "second")
        .unwrap();
    assert!(machine.outgoing().unwrap().is_empty());
}

//! The crypto core's costs (issue 4): encrypting one direct message for 9 devices with
//! established sessions, beside the same 9 Olm encryptions made with vodozemac directly
//! in the same run; decrypting one envelope (Olm, checks, and the in-memory store write);
//! opening a session from a claimed key.
//!
//! `prepare_message` is what the SDK adds on top of vodozemac: the device lists (cached),
//! a bound payload per device, base64, and the request. Storing the advanced sessions
//! (`commit_outgoing`) is a store write, measured by the `store` benchmark.

// A benchmark that cannot set up has nothing to measure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Utc;
use courier_protocol::api::keys::{
    ClaimKeysResponse, ClaimedKey, DirectoryDevice, UserDevicesResponse,
};
use courier_protocol::api::stream::Envelope;
use courier_protocol::{DeviceId, UserId};
use courier_sdk::crypto::{CryptoMachine, MachineError};
use courier_sdk::store::{SqliteStore, StoreKey};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use uuid::Uuid;
use vodozemac::olm::{Account, SessionConfig};

const BODY: &[u8] = &[0x42; 256];

fn machine(user: UserId, id: u32) -> CryptoMachine {
    let store = Arc::new(SqliteStore::open_in_memory(&StoreKey::from_bytes([1; 32])).unwrap());
    CryptoMachine::create(store, user, DeviceId::new(id).unwrap()).unwrap()
}

fn listing(user: UserId, devices: &[&CryptoMachine]) -> UserDevicesResponse {
    UserDevicesResponse {
        user_id: user,
        devices: devices
            .iter()
            .map(|m| DirectoryDevice {
                device_id: m.own_device().device_id,
                identity_keys: m.identity_keys_upload(),
            })
            .collect(),
    }
}

fn claim(machines: &mut [&mut CryptoMachine]) -> ClaimKeysResponse {
    let keys = machines
        .iter_mut()
        .map(|m| {
            let upload = m.one_time_keys_for_upload(0).unwrap().unwrap();
            m.mark_one_time_keys_published().unwrap();
            ClaimedKey {
                user_id: m.own_device().user_id,
                device_id: m.own_device().device_id,
                key: upload.one_time_keys[0].clone(),
                fallback: false,
            }
        })
        .collect();
    ClaimKeysResponse {
        keys,
        unavailable: vec![],
    }
}

/// Alice's device 1 with sessions to Bob's 5 devices and Alice's 4 others: 9 targets.
/// The sender's clock: receivers refuse timestamps far from the server's.
fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

fn sender_with_nine_sessions() -> (CryptoMachine, Vec<CryptoMachine>, UserId) {
    let (alice, bob) = (UserId::new_random(), UserId::new_random());
    let mut sender = machine(alice, 1);
    let mut others: Vec<CryptoMachine> = (2..=5).map(|i| machine(alice, i)).collect();
    let mut bobs: Vec<CryptoMachine> = (1..=5).map(|i| machine(bob, i)).collect();
    let mut alice_all: Vec<&CryptoMachine> = vec![&sender];
    alice_all.extend(others.iter());
    let alice_list = listing(alice, &alice_all);
    let bob_list = listing(bob, &bobs.iter().collect::<Vec<_>>());
    sender.update_device_list(&alice_list).unwrap();
    sender.update_device_list(&bob_list).unwrap();
    let mut targets: Vec<&mut CryptoMachine> = others.iter_mut().chain(bobs.iter_mut()).collect();
    for t in targets.iter_mut() {
        t.update_device_list(&alice_list).unwrap();
        t.update_device_list(&bob_list).unwrap();
    }
    let claimed = claim(&mut targets);
    assert!(sender.add_claimed_keys(&claimed).unwrap().is_empty());
    // Move past the pre-key stage, as an established conversation is.
    sender.encrypt_message(bob, "warm-up", BODY, 0).unwrap();
    others.extend(bobs);
    (sender, others, bob)
}

fn encrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt_direct_message_9_devices");
    let (mut sender, _targets, bob) = sender_with_nine_sessions();
    let mut n = 0u64;
    group.bench_function("courier_sdk_prepare_message", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("m{n}");
            sender.prepare_message(bob, &id, BODY, n).unwrap()
        });
    });

    // The baseline: the same 9 Olm encryptions of a payload of the same size, directly.
    let sender_account = Account::new();
    let mut sessions: Vec<_> = (0..9)
        .map(|_| {
            let mut receiver = Account::new();
            receiver.generate_one_time_keys(1);
            let otk = *receiver.one_time_keys().values().next().unwrap();
            sender_account
                .create_outbound_session(
                    SessionConfig::version_1(),
                    receiver.identity_keys().curve25519,
                    otk,
                )
                .unwrap()
        })
        .collect();
    // Version, kind, two bound devices, conversation, ID, timestamp, length, body.
    let payload = vec![0x42u8; 2 + 2 * 52 + 16 + 4 + 8 + 4 + BODY.len()];
    group.bench_function("vodozemac_direct", |b| {
        b.iter(|| {
            sessions
                .iter_mut()
                .map(|s| s.encrypt(&payload).unwrap())
                .collect::<Vec<_>>()
        });
    });
    group.finish();
}

fn decrypt(c: &mut Criterion) {
    let (mut sender, mut targets, bob) = sender_with_nine_sessions();
    let receiver_ref = targets[4].own_device();
    c.bench_function("decrypt_one_envelope", |b| {
        let mut n = 0u64;
        b.iter_batched(
            || {
                n += 1;
                let client_message_id = format!("d{n}");
                let message = sender
                    .encrypt_message(bob, &client_message_id, BODY, now_ms())
                    .unwrap();
                let envelope = message
                    .request
                    .device_envelopes
                    .unwrap()
                    .into_iter()
                    .find(|e| {
                        e.user_id == receiver_ref.user_id && e.device_id == receiver_ref.device_id
                    })
                    .unwrap();
                Envelope {
                    seq: n,
                    message_id: Uuid::new_v4(),
                    sender_user_id: sender.own_device().user_id,
                    sender_device_id: sender.own_device().device_id,
                    client_message_id,
                    protocol_version: 2,
                    envelope_type: envelope.envelope_type,
                    ciphertext: envelope.ciphertext,
                    server_timestamp: Utc::now(),
                }
            },
            |envelope| targets[4].decrypt_envelope(&envelope).unwrap(),
            BatchSize::SmallInput,
        );
    });
}

fn session_setup(c: &mut Criterion) {
    c.bench_function("open_outbound_session_from_claimed_key", |b| {
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let mut sender = machine(alice, 1);
        let mut receiver = machine(bob, 1);
        let bob_list = listing(bob, &[&receiver]);
        sender.update_device_list(&bob_list).unwrap();
        b.iter_batched(
            || claim(&mut [&mut receiver]),
            |claimed| {
                let failed: Result<_, MachineError> = sender.add_claimed_keys(&claimed);
                assert!(failed.unwrap().is_empty());
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, encrypt, decrypt, session_setup);
criterion_main!(benches);

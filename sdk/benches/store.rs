//! One store write per received message: a transaction that stores a ~300-byte decrypted
//! message in "received_messages" and moves the "cursor", against a file-backed store
//! (WAL, `synchronous = FULL`, so each iteration includes the commit's fsync).

// A benchmark that cannot set up or write has nothing to measure.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::{DeviceId, UserId};
use courier_sdk::crypto::CryptoMachine;
use courier_sdk::store::{SqliteStore, StoreError, StoreKey};
use criterion::{Criterion, criterion_group, criterion_main};

fn store_write_per_received_message(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(
        &dir.path().join("bench.sqlite3"),
        &StoreKey::from_bytes([42; 32]),
    )
    .expect("a new store");
    // The sender's user ID (16 bytes) and device ID (4 bytes), as the typed layer would.
    let sender = [7u8; 20];
    let message = [0x5a_u8; 300];
    let mut seq = 0u64;

    c.bench_function("store/received_message_write", |b| {
        b.iter(|| {
            seq += 1;
            store
                .transaction(|tx| {
                    tx.put("received_messages", &sender, &seq.to_be_bytes(), &message)?;
                    tx.put("cursor", b"", b"stream", &seq.to_be_bytes())?;
                    Ok::<_, StoreError>(())
                })
                .expect("the write");
        });
    });
}

/// Reading and confirming a batch of 100 events with 10,000 queued: the cost of a batch,
/// whatever the queue holds (in memory, so the store's disk is not what is measured).
fn event_batch_with_a_long_queue(c: &mut Criterion) {
    let store = Arc::new(
        SqliteStore::open_in_memory(&StoreKey::from_bytes([42; 32])).expect("a new store"),
    );
    let user = UserId::new_random();
    let machine =
        CryptoMachine::create(store, user, DeviceId::new(1).expect("an ID")).expect("a machine");
    let queue = |machine: &CryptoMachine, from: u32, count: u32| {
        for n in from..from + count {
            let sent = SendMessageResponse {
                message_id: uuid::Uuid::new_v4(),
                server_timestamp: chrono::Utc::now(),
                envelope_count: n,
            };
            machine
                .record_sent(user, &format!("c{n}"), &sent)
                .expect("an event");
        }
    };
    queue(&machine, 0, 10_000);
    let mut next = 10_000;
    c.bench_function("events/pending_100_of_10000", |b| {
        b.iter(|| machine.pending_events(100).expect("events"));
    });
    c.bench_function("events/confirm_100_of_10000", |b| {
        b.iter(|| {
            // Keeps the queue at 10,000: 100 in, the oldest 100 confirmed.
            queue(&machine, next, 100);
            next += 100;
            let events = machine.pending_events(100).expect("events");
            let last = events.last().expect("queued").seq;
            machine.confirm_events(last).expect("confirmed");
        });
    });
}

criterion_group!(
    benches,
    store_write_per_received_message,
    event_batch_with_a_long_queue
);
criterion_main!(benches);

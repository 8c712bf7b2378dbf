//! One store write per received message: a transaction that stores a ~300-byte decrypted
//! message in "received_messages" and moves the "cursor", against a file-backed store
//! (WAL, `synchronous = FULL`, so each iteration includes the commit's fsync).

// A benchmark that cannot set up or write has nothing to measure.
#![allow(clippy::expect_used)]

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

criterion_group!(benches, store_write_per_received_message);
criterion_main!(benches);

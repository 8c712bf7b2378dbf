//! Behaviour of the store against real SQLite files.

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::{fs, thread};

use tempfile::TempDir;

use super::*;

fn key() -> StoreKey {
    StoreKey::from_bytes([0x11; 32])
}

fn temp_store() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let store = SqliteStore::open(&path, &key()).unwrap();
    (dir, path, store)
}

/// One put: `(collection, partition, item, value)`.
type Put<'a> = (&'static str, &'a [u8], &'a [u8], &'a [u8]);

/// Runs one transaction of puts.
fn put_all(store: &SqliteStore, items: &[Put<'_>]) {
    store
        .transaction(|tx| {
            for (collection, partition, item, value) in items {
                tx.put(collection, partition, item, value)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn get(
    store: &SqliteStore,
    collection: &'static str,
    partition: &[u8],
    item: &[u8],
) -> Option<Vec<u8>> {
    store
        .get(collection, partition, item)
        .unwrap()
        .map(|value| value.to_vec())
}

/// The values of a partition, sorted (the store's order is that of the hashes).
fn list(store: &SqliteStore, collection: &'static str, partition: &[u8]) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = store
        .list(collection, partition)
        .unwrap()
        .iter()
        .map(|value| value.to_vec())
        .collect();
    values.sort();
    values
}

/// The bytes of every file SQLite left in `dir` (database, WAL, shared memory).
fn all_file_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        bytes.extend(fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SqliteStore>();
}

#[test]
fn put_get_overwrite_and_delete_round_trip() {
    let (_dir, _path, store) = temp_store();
    assert_eq!(get(&store, "devices", b"@alice", b"1"), None);

    put_all(&store, &[("devices", b"@alice", b"1", b"first")]);
    assert_eq!(
        get(&store, "devices", b"@alice", b"1").as_deref(),
        Some(&b"first"[..])
    );

    put_all(&store, &[("devices", b"@alice", b"1", b"second")]);
    assert_eq!(
        get(&store, "devices", b"@alice", b"1").as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(list(&store, "devices", b"@alice"), vec![b"second".to_vec()]);

    let deleted = store
        .transaction(|tx| {
            let first = tx.delete("devices", b"@alice", b"1")?;
            let second = tx.delete("devices", b"@alice", b"1")?;
            Ok::<_, StoreError>((first, second))
        })
        .unwrap();
    assert_eq!(deleted, (true, false));
    assert_eq!(get(&store, "devices", b"@alice", b"1"), None);

    // Empty values and keys are values and keys too.
    put_all(&store, &[("cursor", b"", b"", b"")]);
    assert_eq!(get(&store, "cursor", b"", b"").as_deref(), Some(&b""[..]));
}

#[test]
fn list_returns_only_that_partition_of_that_collection() {
    let (_dir, _path, store) = temp_store();
    put_all(
        &store,
        &[
            ("olm_sessions", b"@alice/1", b"s1", b"alice-1 s1"),
            ("olm_sessions", b"@alice/1", b"s2", b"alice-1 s2"),
            ("olm_sessions", b"@alice/1", b"s3", b"alice-1 s3"),
            ("olm_sessions", b"@alice/2", b"s1", b"alice-2 s1"),
            // Same partition key, another collection.
            ("devices", b"@alice/1", b"s4", b"device"),
        ],
    );
    assert_eq!(
        list(&store, "olm_sessions", b"@alice/1"),
        vec![
            b"alice-1 s1".to_vec(),
            b"alice-1 s2".to_vec(),
            b"alice-1 s3".to_vec()
        ]
    );
    assert_eq!(
        list(&store, "olm_sessions", b"@alice/2"),
        vec![b"alice-2 s1".to_vec()]
    );
    assert_eq!(
        list(&store, "devices", b"@alice/1"),
        vec![b"device".to_vec()]
    );
    assert!(list(&store, "olm_sessions", b"@bob/1").is_empty());
}

#[test]
fn delete_partition_removes_that_partition_only() {
    let (_dir, _path, store) = temp_store();
    put_all(
        &store,
        &[
            ("olm_sessions", b"@alice/1", b"s1", b"a"),
            ("olm_sessions", b"@alice/1", b"s2", b"b"),
            ("olm_sessions", b"@alice/2", b"s1", b"c"),
            ("devices", b"@alice/1", b"s1", b"d"),
        ],
    );
    let deleted = store
        .transaction(|tx| tx.delete_partition("olm_sessions", b"@alice/1"))
        .unwrap();
    assert_eq!(deleted, 2);
    assert!(list(&store, "olm_sessions", b"@alice/1").is_empty());
    assert_eq!(
        list(&store, "olm_sessions", b"@alice/2"),
        vec![b"c".to_vec()]
    );
    assert_eq!(list(&store, "devices", b"@alice/1"), vec![b"d".to_vec()]);
    let again = store
        .transaction(|tx| tx.delete_partition("olm_sessions", b"@alice/1"))
        .unwrap();
    assert_eq!(again, 0);
}

#[test]
fn reopening_with_the_same_key_finds_the_data() {
    let (_dir, path, store) = temp_store();
    put_all(&store, &[("account", b"", b"pickle", b"account pickle")]);
    drop(store);

    let reopened = SqliteStore::open(&path, &key()).unwrap();
    assert_eq!(
        get(&reopened, "account", b"", b"pickle").as_deref(),
        Some(&b"account pickle"[..])
    );
}

#[test]
fn reopening_with_another_key_fails_with_wrong_key() {
    let (_dir, path, store) = temp_store();
    put_all(&store, &[("account", b"", b"pickle", b"account pickle")]);
    drop(store);

    let result = SqliteStore::open(&path, &StoreKey::from_bytes([0x22; 32]));
    assert!(matches!(result, Err(StoreError::WrongKey)), "{result:?}");
    // The failed attempt changed nothing: the right key still opens it.
    let reopened = SqliteStore::open(&path, &key()).unwrap();
    assert!(get(&reopened, "account", b"", b"pickle").is_some());
}

#[test]
fn database_files_hold_neither_values_nor_lookup_keys_in_clear() {
    const VALUE: &[u8] = b"MARKER-VALUE-7d3f9a1c the message text";
    const PARTITION: &[u8] = b"MARKER-PARTITION-@alice:example.org";
    const ITEM: &[u8] = b"MARKER-ITEM-message-id-5b2e";
    let (dir, _path, store) = temp_store();
    put_all(&store, &[("received_messages", PARTITION, ITEM, VALUE)]);

    // Before closing, the data is (at least) in the WAL.
    let open_bytes = all_file_bytes(dir.path());
    drop(store);
    let closed_bytes = all_file_bytes(dir.path());

    for bytes in [&open_bytes, &closed_bytes] {
        // The search works: the collection name is stored in clear.
        assert!(contains(bytes, b"received_messages"));
        assert!(!contains(bytes, VALUE));
        assert!(!contains(bytes, PARTITION));
        assert!(!contains(bytes, ITEM));
        assert!(!contains(bytes, b"MARKER"));
    }
}

/// Swaps the `value` columns of the only two rows of `collection`, bypassing the store.
fn swap_values_in_file(path: &Path, collection: &str) {
    let connection = rusqlite::Connection::open(path).unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = connection
        .prepare("SELECT partition, item, value FROM items WHERE collection = ?1")
        .unwrap()
        .query_map([collection], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (own, other) in [(&rows[0], &rows[1]), (&rows[1], &rows[0])] {
        let changed = connection
            .execute(
                "UPDATE items SET value = ?1 WHERE collection = ?2 AND partition = ?3 AND item = ?4",
                rusqlite::params![other.2, collection, own.0, own.1],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
}

#[test]
fn values_swapped_between_rows_fail_as_corrupted() {
    let (_dir, path, store) = temp_store();
    // One pair in one partition, one pair across partitions.
    put_all(
        &store,
        &[
            ("devices", b"@alice", b"1", b"alice device 1"),
            ("devices", b"@alice", b"2", b"alice device 2"),
            ("olm_sessions", b"@alice/1", b"s", b"session with alice"),
            ("olm_sessions", b"@mallory/1", b"s", b"session with mallory"),
        ],
    );
    drop(store);
    swap_values_in_file(&path, "devices");
    swap_values_in_file(&path, "olm_sessions");

    let store = SqliteStore::open(&path, &key()).unwrap();
    for (collection, partition, item) in [
        ("devices", &b"@alice"[..], &b"1"[..]),
        ("devices", b"@alice", b"2"),
        ("olm_sessions", b"@alice/1", b"s"),
        ("olm_sessions", b"@mallory/1", b"s"),
    ] {
        let result = store.get(collection, partition, item);
        assert!(
            matches!(result, Err(StoreError::Corrupted { collection: c }) if c == collection),
            "{result:?}"
        );
    }
    let listed = store.list("devices", b"@alice");
    assert!(matches!(
        listed,
        Err(StoreError::Corrupted {
            collection: "devices"
        })
    ));
}

/// The error a test transaction closure returns.
#[derive(Debug)]
enum ClosureError {
    GaveUp,
    Store(#[allow(dead_code)] StoreError), // Read through `Debug` only.
}

impl From<StoreError> for ClosureError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

#[test]
fn a_closure_error_rolls_the_whole_transaction_back() {
    let (_dir, _path, store) = temp_store();
    put_all(&store, &[("devices", b"@alice", b"1", b"kept")]);

    let result = store.transaction(|tx| {
        tx.put("devices", b"@alice", b"2", b"new")?;
        tx.put("devices", b"@alice", b"1", b"overwritten")?;
        tx.delete("devices", b"@alice", b"1")?;
        Err::<(), _>(ClosureError::GaveUp)
    });
    assert!(matches!(result, Err(ClosureError::GaveUp)), "{result:?}");
    assert_eq!(list(&store, "devices", b"@alice"), vec![b"kept".to_vec()]);
}

#[test]
fn a_panicking_closure_leaves_no_change_and_the_store_keeps_working() {
    let (_dir, _path, store) = temp_store();
    put_all(&store, &[("devices", b"@alice", b"1", b"kept")]);

    let unwound = catch_unwind(AssertUnwindSafe(|| {
        store.transaction(|tx| -> Result<(), StoreError> {
            tx.put("devices", b"@alice", b"2", b"new")?;
            tx.delete("devices", b"@alice", b"1")?;
            panic!("the closure fails midway");
        })
    }));
    assert!(unwound.is_err());

    assert_eq!(list(&store, "devices", b"@alice"), vec![b"kept".to_vec()]);
    put_all(&store, &[("devices", b"@alice", b"3", b"after")]);
    assert_eq!(
        list(&store, "devices", b"@alice"),
        vec![b"after".to_vec(), b"kept".to_vec()]
    );
}

#[test]
fn a_transaction_sees_its_own_writes() {
    let (_dir, _path, store) = temp_store();
    put_all(&store, &[("devices", b"@alice", b"1", b"old")]);
    store
        .transaction(|tx| {
            tx.put("devices", b"@alice", b"1", b"new")?;
            tx.put("devices", b"@alice", b"2", b"added")?;
            assert_eq!(
                tx.get("devices", b"@alice", b"1")?.as_deref(),
                Some(&b"new"[..])
            );
            assert_eq!(tx.list("devices", b"@alice")?.len(), 2);
            tx.delete("devices", b"@alice", b"2")?;
            assert!(tx.get("devices", b"@alice", b"2")?.is_none());
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(list(&store, "devices", b"@alice"), vec![b"new".to_vec()]);
}

#[test]
fn using_the_store_inside_its_own_transaction_is_an_error_not_a_deadlock() {
    let (_dir, _path, store) = temp_store();
    let inner = store
        .transaction(|tx| {
            tx.put("devices", b"@alice", b"1", b"value")?;
            let get = store.get("devices", b"@alice", b"1");
            let nested = store.transaction(|_| Ok::<_, StoreError>(()));
            Ok::<_, StoreError>((get, nested))
        })
        .unwrap();
    assert!(
        matches!(inner.0, Err(StoreError::Reentrant)),
        "{:?}",
        inner.0
    );
    assert!(
        matches!(inner.1, Err(StoreError::Reentrant)),
        "{:?}",
        inner.1
    );
    // Outside the transaction the store is usable again.
    assert!(get(&store, "devices", b"@alice", b"1").is_some());
}

#[test]
fn two_threads_writing_through_one_store_lose_nothing() {
    const PER_THREAD: u64 = 200;
    let (_dir, _path, store) = temp_store();
    let store = Arc::new(store);

    let writers: Vec<_> = (0..2u8)
        .map(|thread_id| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for n in 0..PER_THREAD {
                    store
                        .transaction(|tx| {
                            let mut item = vec![thread_id];
                            item.extend(n.to_be_bytes());
                            tx.put("received_messages", b"inbox", &item, &item)?;
                            // Read-modify-write: a lost update would show in the total.
                            let count = match tx.get("cursor", b"", b"count")? {
                                Some(bytes) => {
                                    u64::from_be_bytes(bytes.as_bytes().try_into().unwrap())
                                }
                                None => 0,
                            };
                            tx.put("cursor", b"", b"count", &(count + 1).to_be_bytes())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }

    assert_eq!(
        list(&store, "received_messages", b"inbox").len() as u64,
        2 * PER_THREAD
    );
    let count = get(&store, "cursor", b"", b"count").unwrap();
    assert_eq!(
        u64::from_be_bytes(count.try_into().unwrap()),
        2 * PER_THREAD
    );
}

/// Set in the child process of the crash test, to the store's path.
const CRASH_CHILD_ENV: &str = "COURIER_SDK_STORE_CRASH_CHILD";
/// What the child prints just before it aborts.
const CHILD_ABORTING: &str = "crash child: transaction B written, aborting";
const CRASH_B_ITEMS: u32 = 2000;
const CRASH_B_VALUE_LEN: usize = 4096;

/// The child side of the crash test; returns at once in an ordinary run.
#[test]
fn crash_child_process() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path), &key()).unwrap();
    store
        .transaction(|tx| {
            for n in 0..10u32 {
                tx.put("crash", b"a", &n.to_be_bytes(), &[0xAA; 100])?;
            }
            tx.put("cursor", b"", b"stream", b"A")
        })
        .unwrap();
    let _ = store.transaction(|tx| -> Result<(), StoreError> {
        // 8 MB: more than SQLite's page cache, so B's pages spill into the WAL before
        // the abort and recovery has uncommitted frames to discard.
        for n in 0..CRASH_B_ITEMS {
            tx.put("crash", b"b", &n.to_be_bytes(), &[0xBB; CRASH_B_VALUE_LEN])?;
        }
        tx.put("cursor", b"", b"stream", b"B")?;
        tx.delete("crash", b"a", &0u32.to_be_bytes())?;
        println!("{CHILD_ABORTING}");
        std::io::stdout().flush().unwrap();
        std::process::abort();
    });
}

#[test]
fn a_crash_midway_keeps_committed_transactions_and_nothing_of_the_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the child should have aborted: {stdout}"
    );
    assert!(
        stdout.contains(CHILD_ABORTING),
        "the child did not reach the abort: {stdout}"
    );
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal_len = fs::metadata(&wal).unwrap().len();
    assert!(
        wal_len > 4_000_000,
        "B's pages did not reach the WAL ({wal_len} bytes)"
    );

    let store = SqliteStore::open(&path, &key()).unwrap();
    let a_values = list(&store, "crash", b"a");
    assert_eq!(a_values, vec![vec![0xAA; 100]; 10]);
    assert!(list(&store, "crash", b"b").is_empty());
    assert_eq!(
        get(&store, "cursor", b"", b"stream").as_deref(),
        Some(&b"A"[..])
    );
}

#[test]
fn a_store_from_a_newer_sdk_is_refused() {
    let (_dir, path, store) = temp_store();
    drop(store);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let result = SqliteStore::open(&path, &key());
    assert!(
        matches!(
            result,
            Err(StoreError::UnsupportedVersion {
                found: 99,
                supported: 1
            })
        ),
        "{result:?}"
    );
}

#[test]
fn files_that_are_not_stores_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage");
    fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let result = SqliteStore::open(&garbage, &key());
    assert!(matches!(result, Err(StoreError::NotAStore)), "{result:?}");

    let foreign = dir.path().join("foreign.sqlite3");
    let connection = rusqlite::Connection::open(&foreign).unwrap();
    connection
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    drop(connection);
    let result = SqliteStore::open(&foreign, &key());
    assert!(matches!(result, Err(StoreError::NotAStore)), "{result:?}");
    let tables: i64 = rusqlite::Connection::open(&foreign)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn debug_output_shows_no_keys_or_values() {
    let (_dir, _path, store) = temp_store();
    put_all(&store, &[("devices", b"@alice", b"1", b"SECRET-VALUE")]);
    let value = store.get("devices", b"@alice", b"1").unwrap().unwrap();
    let shown = format!(
        "{:?} {:?} {:?} {:?}",
        StoreKey::from_bytes([0xAB; 32]),
        value,
        store,
        StoreError::Corrupted {
            collection: "devices"
        }
    );
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(!shown.contains("171"), "{shown}"); // 0xAB
    assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
    assert_eq!(format!("{value:?}"), "SecretBytes(<redacted>)");
    assert_eq!(format!("{:?}", key()), "StoreKey(<redacted>)");
}

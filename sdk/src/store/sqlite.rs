//! The store over one SQLite connection: schema, migrations, key check, reads and
//! transactions.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use super::cipher::{KeyHash, Location, SALT_LEN, StoreCipher};
use super::error::StoreError;
use super::secret::{SecretBytes, StoreKey};

/// Schema migrations; migration `i` takes the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`). Append only: a released migration never changes.
const MIGRATIONS: &[&str] = &[
    // 1: items keyed by collection and the keyed hashes of partition and item key;
    // meta holds the salt and the key-check value.
    "CREATE TABLE items (
        collection TEXT NOT NULL,
        partition BLOB NOT NULL,
        item BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (collection, partition, item)
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        name TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;",
];

/// The schema version this SDK writes.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a Courier store ("Cour"), so another app's SQLite file is
/// refused instead of having tables added to it.
const APPLICATION_ID: i64 = 0x436f_7572;

/// The known plaintext of the key-check value.
const KEY_CHECK_PLAINTEXT: &[u8] = b"courier-sdk:store:key-check:v1";
const META_SALT: &str = "salt";
const META_KEY_CHECK: &str = "key_check";

/// How long a statement waits for another connection's lock (an app extension's).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands every store a distinct ID for the re-entrancy check.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The stores whose connection this thread holds; a second lock would deadlock.
    static HELD_STORES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// An encrypted key-value store in one SQLite file. `Send + Sync`: share it in an `Arc`;
/// operations take turns on its one connection.
pub struct SqliteStore {
    connection: Mutex<Connection>,
    cipher: StoreCipher,
    id: u64,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if missing. Fails with
    /// [`StoreError::WrongKey`] if it was created under another key.
    pub fn open(path: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        // No SQLITE_OPEN_URI: a path is a path, even if it starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::initialise(Connection::open_with_flags(path, flags)?, key)
    }

    /// Opens a new store that lives in memory only (for tests and ephemeral sessions).
    pub fn open_in_memory(key: &StoreKey) -> Result<Self, StoreError> {
        Self::initialise(Connection::open_in_memory()?, key)
    }

    fn initialise(mut connection: Connection, key: &StoreKey) -> Result<Self, StoreError> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        // A commit that returned is on disk. Apple's fsync does not flush the drive's
        // cache; F_FULLFSYNC does (these two are no-ops elsewhere).
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "fullfsync", true)?;
        connection.pragma_update(None, "checkpoint_fullfsync", true)?;
        connection.pragma_update(None, "foreign_keys", true)?;
        let cipher = prepare_schema(&mut connection, key)?;
        // Only now that the file is known to be ours. Outside a transaction, as it must be.
        connection.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        })?;
        Ok(Self {
            connection: Mutex::new(connection),
            cipher,
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Reads one value.
    pub fn get(
        &self,
        collection: &'static str,
        partition: &[u8],
        item: &[u8],
    ) -> Result<Option<SecretBytes>, StoreError> {
        let connection = self.lock()?;
        read_item(&connection, &self.cipher, collection, partition, item)
    }

    /// Reads every value of a partition, ordered by the hash of its item key (that is,
    /// in no meaningful order).
    pub fn list(
        &self,
        collection: &'static str,
        partition: &[u8],
    ) -> Result<Vec<SecretBytes>, StoreError> {
        let connection = self.lock()?;
        read_partition(&connection, &self.cipher, collection, partition)
    }

    /// Runs `f` in one transaction: every change inside it commits together or not at
    /// all, also if the process dies midway. An `Err` returned by `f`, or a panic in it,
    /// rolls back.
    ///
    /// The store is held for the whole of `f`, so keep it short and do no network I/O in
    /// it. Inside `f`, use the transaction's methods: calling this store's methods
    /// returns [`StoreError::Reentrant`].
    pub fn transaction<T, E>(
        &self,
        f: impl FnOnce(&mut StoreTransaction<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut connection = self.lock()?;
        // IMMEDIATE takes the write lock now: two processes can then not both read and
        // then fail to upgrade (SQLITE_BUSY at the first write).
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let value = f(&mut StoreTransaction {
            connection: &transaction,
            cipher: &self.cipher,
        })?;
        // On the `?` above, or when unwinding, dropping `transaction` rolls back.
        transaction.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// Takes the connection, or refuses if this thread already holds it.
    fn lock(&self) -> Result<HeldConnection<'_>, StoreError> {
        if HELD_STORES.with_borrow(|held| held.contains(&self.id)) {
            return Err(StoreError::Reentrant);
        }
        let guard = match self.connection.lock() {
            Ok(guard) => guard,
            // A transaction closure panicked; its transaction rolled back as it unwound
            // (checked below), so the connection is sound.
            Err(poisoned) => {
                self.connection.clear_poison();
                poisoned.into_inner()
            }
        };
        if !guard.is_autocommit() {
            // A rollback that failed while unwinding: finish it before anyone goes on.
            guard.execute_batch("ROLLBACK")?;
        }
        HELD_STORES.with_borrow_mut(|held| held.push(self.id));
        Ok(HeldConnection {
            guard,
            store_id: self.id,
        })
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// The connection while one thread holds it; marks the store as held by that thread.
struct HeldConnection<'a> {
    guard: MutexGuard<'a, Connection>,
    store_id: u64,
}

impl Drop for HeldConnection<'_> {
    fn drop(&mut self) {
        HELD_STORES.with_borrow_mut(|held| held.retain(|id| *id != self.store_id));
    }
}

impl Deref for HeldConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.guard
    }
}

impl DerefMut for HeldConnection<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.guard
    }
}

/// The changes of one [`SqliteStore::transaction`]. Its reads see its own writes.
pub struct StoreTransaction<'a> {
    connection: &'a Connection,
    cipher: &'a StoreCipher,
}

impl StoreTransaction<'_> {
    /// Reads one value.
    pub fn get(
        &self,
        collection: &'static str,
        partition: &[u8],
        item: &[u8],
    ) -> Result<Option<SecretBytes>, StoreError> {
        read_item(self.connection, self.cipher, collection, partition, item)
    }

    /// Reads every value of a partition, in no meaningful order.
    pub fn list(
        &self,
        collection: &'static str,
        partition: &[u8],
    ) -> Result<Vec<SecretBytes>, StoreError> {
        read_partition(self.connection, self.cipher, collection, partition)
    }

    /// Stores a value, replacing any value under the same keys.
    pub fn put(
        &mut self,
        collection: &'static str,
        partition: &[u8],
        item: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let partition_hash = self.cipher.hash_partition(collection, partition);
        let item_hash = self.cipher.hash_item(collection, partition, item);
        let location = Location::Item {
            collection,
            partition: &partition_hash,
            item: &item_hash,
        };
        let stored = self
            .cipher
            .encrypt(location, value)
            .map_err(|error| StoreError::from_cipher(error, collection))?;
        self.connection
            .prepare_cached(
                "INSERT INTO items (collection, partition, item, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (collection, partition, item) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![
                collection,
                partition_hash.as_bytes(),
                item_hash.as_bytes(),
                stored
            ])?;
        Ok(())
    }

    /// Deletes one value; `true` if there was one.
    pub fn delete(
        &mut self,
        collection: &'static str,
        partition: &[u8],
        item: &[u8],
    ) -> Result<bool, StoreError> {
        let partition_hash = self.cipher.hash_partition(collection, partition);
        let item_hash = self.cipher.hash_item(collection, partition, item);
        let deleted = self
            .connection
            .prepare_cached(
                "DELETE FROM items WHERE collection = ?1 AND partition = ?2 AND item = ?3",
            )?
            .execute(params![
                collection,
                partition_hash.as_bytes(),
                item_hash.as_bytes()
            ])?;
        Ok(deleted > 0)
    }

    /// Deletes every value of a partition; returns how many there were.
    pub fn delete_partition(
        &mut self,
        collection: &'static str,
        partition: &[u8],
    ) -> Result<u64, StoreError> {
        let partition_hash = self.cipher.hash_partition(collection, partition);
        let deleted = self
            .connection
            .prepare_cached("DELETE FROM items WHERE collection = ?1 AND partition = ?2")?
            .execute(params![collection, partition_hash.as_bytes()])?;
        Ok(deleted as u64)
    }
}

impl fmt::Debug for StoreTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTransaction").finish_non_exhaustive()
    }
}

fn read_item(
    connection: &Connection,
    cipher: &StoreCipher,
    collection: &'static str,
    partition: &[u8],
    item: &[u8],
) -> Result<Option<SecretBytes>, StoreError> {
    let partition_hash = cipher.hash_partition(collection, partition);
    let item_hash = cipher.hash_item(collection, partition, item);
    let stored: Option<Vec<u8>> = connection
        .prepare_cached(
            "SELECT value FROM items WHERE collection = ?1 AND partition = ?2 AND item = ?3",
        )?
        .query_row(
            params![collection, partition_hash.as_bytes(), item_hash.as_bytes()],
            |row| row.get(0),
        )
        .optional()?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let location = Location::Item {
        collection,
        partition: &partition_hash,
        item: &item_hash,
    };
    cipher
        .decrypt(location, &stored)
        .map(Some)
        .map_err(|error| StoreError::from_cipher(error, collection))
}

fn read_partition(
    connection: &Connection,
    cipher: &StoreCipher,
    collection: &'static str,
    partition: &[u8],
) -> Result<Vec<SecretBytes>, StoreError> {
    let partition_hash = cipher.hash_partition(collection, partition);
    let mut statement = connection.prepare_cached(
        "SELECT item, value FROM items WHERE collection = ?1 AND partition = ?2 ORDER BY item",
    )?;
    let mut rows = statement.query(params![collection, partition_hash.as_bytes()])?;
    let mut values = Vec::new();
    while let Some(row) = rows.next()? {
        let item_column: Vec<u8> = row.get(0)?;
        let stored: Vec<u8> = row.get(1)?;
        // The row's own item hash is in the associated data, so a value moved to another
        // item of this partition fails too.
        let item_hash =
            KeyHash::from_column(&item_column).ok_or(StoreError::Corrupted { collection })?;
        let location = Location::Item {
            collection,
            partition: &partition_hash,
            item: &item_hash,
        };
        let value = cipher
            .decrypt(location, &stored)
            .map_err(|error| StoreError::from_cipher(error, collection))?;
        values.push(value);
    }
    Ok(values)
}

/// Brings the schema up to date and checks the key, in one write transaction, so two
/// processes opening a new file at once do not both create it. Creates the salt and the
/// key-check value in a new store.
fn prepare_schema(connection: &mut Connection, key: &StoreKey) -> Result<StoreCipher, StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let application_id: i64 =
        transaction.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    let has_tables: bool =
        transaction.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master)", [], |row| {
            row.get(0)
        })?;
    let new_store = found == 0 && application_id == 0 && !has_tables;
    if !new_store && application_id != APPLICATION_ID {
        return Err(StoreError::NotAStore);
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let applied = usize::try_from(found).map_err(|_| StoreError::NotAStore)?;
    for (version, migration) in (1..).zip(MIGRATIONS).skip(applied) {
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", version)?;
    }

    if new_store {
        transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
        let mut salt = [0u8; SALT_LEN];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|_| StoreError::Randomness)?;
        let key_check = StoreCipher::new(key, &salt)
            .encrypt(Location::KeyCheck, KEY_CHECK_PLAINTEXT)
            .map_err(|error| StoreError::from_cipher(error, "meta"))?;
        let mut insert = transaction.prepare("INSERT INTO meta (name, value) VALUES (?1, ?2)")?;
        insert.execute(params![META_SALT, salt])?;
        insert.execute(params![META_KEY_CHECK, key_check])?;
    }

    let read_meta = |name: &str| -> Result<Vec<u8>, StoreError> {
        transaction
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()?
            .ok_or(StoreError::MissingKeyCheck)
    };
    let salt = read_meta(META_SALT)?;
    let key_check = read_meta(META_KEY_CHECK)?;
    let cipher = StoreCipher::new(key, &salt);
    match cipher.decrypt(Location::KeyCheck, &key_check) {
        Ok(plaintext) if plaintext.as_bytes() == KEY_CHECK_PLAINTEXT => {}
        _ => return Err(StoreError::WrongKey),
    }
    transaction.commit()?;
    Ok(cipher)
}

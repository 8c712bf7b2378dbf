//! The SDK's encrypted persistent store: a key-value store over SQLite, usable from
//! synchronous code, on which the typed layer (serde values per collection) is built.
//!
//! # Data model
//!
//! An item is addressed by a collection name (a `&'static str` such as `"olm_sessions"`),
//! a partition key and an item key (both bytes). A partition groups the items that are
//! listed together, e.g. all Olm sessions with one device. [`SqliteStore::list`] returns
//! the values only, so the typed layer keeps the real keys inside its values.
//!
//! # What the file reveals
//!
//! The app supplies a 32-byte [`StoreKey`]. Every value is encrypted with
//! XChaCha20-Poly1305 under a key derived from it, and partition and item keys (user IDs,
//! device IDs, message IDs) are stored only as HMAC-SHA256 hashes under a second derived
//! key, so someone holding the database file alone learns neither. What stays visible:
//! the collection names, how many items each partition holds, the values' sizes, and
//! when they changed.
//!
//! Each value's associated data binds its collection and hashed keys, so a value copied
//! or swapped into another row fails to decrypt ([`StoreError::Corrupted`]). Restoring an
//! older copy of the same row, or of the whole file, is not detected: that needs a
//! counter kept outside the file.
//!
//! # Atomicity and durability
//!
//! All writes go through [`SqliteStore::transaction`]: everything inside it commits
//! together or not at all, also if the process dies midway, and a returned commit has
//! been synced to disk (`synchronous = FULL`, and `F_FULLFSYNC` on Apple platforms).

mod cipher;
mod error;
mod secret;
mod sqlite;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use secret::{STORE_KEY_LEN, SecretBytes, StoreKey};
pub use sqlite::{SqliteStore, StoreTransaction};

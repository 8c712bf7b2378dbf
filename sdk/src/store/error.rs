//! What can go wrong in the store. No message carries key material, values or lookup
//! keys: the SQL is constant, only hashes and ciphertexts are bound, and SQLite's
//! messages name tables and columns, not bound values.

use rusqlite::ErrorCode;

use super::cipher::CipherError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store key does not open this store (or its key-check value was tampered with).
    #[error("the store key does not open this store")]
    WrongKey,
    /// A value failed authentication: the file was tampered with, or a value was copied
    /// or swapped between rows.
    #[error("a value in collection `{collection}` failed authentication (tampered or moved)")]
    Corrupted {
        /// The collection the value was read from.
        collection: &'static str,
    },
    /// The file has the store's schema but no key-check value or salt, so it is damaged.
    #[error("the store has no key-check value; the file is damaged")]
    MissingKeyCheck,
    /// The file was written by a newer SDK whose schema this one does not know.
    #[error("the store has schema version {found}; this SDK supports up to {supported}")]
    UnsupportedVersion {
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this SDK knows.
        supported: i64,
    },
    /// The file is not a Courier store: not an SQLite database, or one of another
    /// application.
    #[error("the file is not a Courier store")]
    NotAStore,
    /// Another connection (e.g. an app extension's) held the database locked for longer
    /// than the busy timeout.
    #[error("the store is locked by another connection; try again")]
    Busy,
    /// The disk is full; nothing of the failed transaction was written.
    #[error("the disk is full")]
    DiskFull,
    /// The file could not be opened, read or written (permissions, I/O error,
    /// read-only file system).
    #[error("could not open, read or write the store file")]
    Io(#[source] rusqlite::Error),
    /// SQLite found the file's structure damaged.
    #[error("the store file is damaged")]
    FileDamaged(#[source] rusqlite::Error),
    /// A value is larger than the store accepts.
    #[error("the value is too large to store")]
    ValueTooLarge,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
    /// A store method was called from inside a transaction on the same store, which
    /// would otherwise deadlock: use the transaction's own methods there.
    #[error("the store was used from inside one of its own transactions")]
    Reentrant,
    /// Any other SQLite error.
    #[error("SQLite error")]
    Sqlite(#[source] rusqlite::Error),
}

impl StoreError {
    /// Maps a cipher error on a value of `collection`.
    pub(crate) fn from_cipher(error: CipherError, collection: &'static str) -> Self {
        match error {
            CipherError::DecryptionFailed | CipherError::Malformed => {
                Self::Corrupted { collection }
            }
            CipherError::TooLarge => Self::ValueTooLarge,
            CipherError::Randomness => Self::Randomness,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy,
            Some(ErrorCode::DiskFull) => Self::DiskFull,
            Some(ErrorCode::NotADatabase) => Self::NotAStore,
            Some(ErrorCode::TooBig) => Self::ValueTooLarge,
            Some(ErrorCode::DatabaseCorrupt) => Self::FileDamaged(error),
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NoLargeFileSupport,
            ) => Self::Io(error),
            _ => Self::Sqlite(error),
        }
    }
}

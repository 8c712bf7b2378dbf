//! The crypto core's records in the encrypted store: one collection per kind of record,
//! values as JSON (encrypted by the store).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{SqliteStore, StoreError, StoreTransaction};

pub(crate) const ACCOUNT: &str = "account";
pub(crate) const DEVICES: &str = "devices";
pub(crate) const TRACKED_USERS: &str = "tracked_users";
pub(crate) const OLM_SESSIONS: &str = "olm_sessions";
pub(crate) const RECEIVED: &str = "received";
pub(crate) const EVENTS: &str = "events";
pub(crate) const META: &str = "meta";
/// This device's outbound Megolm session per channel (item: channel ID).
pub(crate) const GROUP_OUTBOUND: &str = "group_outbound";
/// Inbound Megolm sessions (partition: channel, sender user and device; item: session ID).
pub(crate) const GROUP_INBOUND: &str = "group_inbound";
/// Message indices seen per inbound session, with their server message IDs (partition:
/// channel, sender, session ID; item: index).
pub(crate) const GROUP_SEEN: &str = "group_seen";
/// Messages the app asked to send that the server has not stored yet (item: client
/// message ID).
pub(crate) const OUTBOX: &str = "outbox";
/// Server message IDs of sent messages whose `Sent` event was queued (item: message ID).
pub(crate) const SENT: &str = "sent";

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store failed (I/O, wrong key, tampering).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not decode: written by an incompatible SDK, or corrupted.
    #[error("a stored {collection} record does not decode")]
    Undecodable { collection: &'static str },
}

fn decode<T: DeserializeOwned>(collection: &'static str, bytes: &[u8]) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(|_| RecordError::Undecodable { collection })
}

fn encode<T: Serialize>(collection: &'static str, value: &T) -> Result<Vec<u8>, RecordError> {
    serde_json::to_vec(value).map_err(|_| RecordError::Undecodable { collection })
}

pub(crate) fn get<T: DeserializeOwned>(
    store: &SqliteStore,
    collection: &'static str,
    partition: &[u8],
    item: &[u8],
) -> Result<Option<T>, RecordError> {
    store
        .get(collection, partition, item)?
        .map(|bytes| decode(collection, &bytes))
        .transpose()
}

pub(crate) fn list<T: DeserializeOwned>(
    store: &SqliteStore,
    collection: &'static str,
    partition: &[u8],
) -> Result<Vec<T>, RecordError> {
    store
        .list(collection, partition)?
        .iter()
        .map(|bytes| decode(collection, bytes))
        .collect()
}

pub(crate) fn tx_get<T: DeserializeOwned>(
    tx: &mut StoreTransaction<'_>,
    collection: &'static str,
    partition: &[u8],
    item: &[u8],
) -> Result<Option<T>, RecordError> {
    tx.get(collection, partition, item)?
        .map(|bytes| decode(collection, &bytes))
        .transpose()
}

pub(crate) fn tx_list<T: DeserializeOwned>(
    tx: &mut StoreTransaction<'_>,
    collection: &'static str,
    partition: &[u8],
) -> Result<Vec<T>, RecordError> {
    tx.list(collection, partition)?
        .iter()
        .map(|bytes| decode(collection, bytes))
        .collect()
}

pub(crate) fn put<T: Serialize>(
    tx: &mut StoreTransaction<'_>,
    collection: &'static str,
    partition: &[u8],
    item: &[u8],
    value: &T,
) -> Result<(), RecordError> {
    tx.put(collection, partition, item, &encode(collection, value)?)?;
    Ok(())
}

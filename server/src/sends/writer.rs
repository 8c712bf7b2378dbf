//! The send writer: one task per process that takes the sends queued while its previous
//! batch was written, checks them against the device lists, and stores the accepted ones
//! in one statement (group commit).
//!
//! One task per process writes the batches, on purpose: every batch locks the device rows
//! of its recipients (their stream counters), and the batches of a busy server touch
//! nearly every active device, so concurrent writers mostly wait for each other's locks
//! (measured: three writers used more PostgreSQL CPU per message and delivered fewer
//! messages per second than one; docs/benchmarks.md). Splitting the check and the store
//! into a two-stage pipeline was measured too: smaller batches, higher latency. Several
//! processes still write concurrently, each with its own writer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::DeviceListMismatch;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::SendError;
use super::rules::{Refusal, check_job};
use crate::db::messages::{
    Placed, StoreJob, StoreOutcome, StoredMessage, UserDevices, find_by_client_ids,
    read_device_lists, store_batch,
};
use crate::device_lists::DeviceLists;
use crate::metrics::Metrics;

/// Most messages handled by one batch.
pub(super) const MAX_BATCH: usize = 256;

/// What became of a send.
#[derive(Debug)]
pub(super) enum SendResult {
    /// Stored and committed; the job comes back (with V1 targets filled in) for pushing.
    Stored {
        message: StoredMessage,
        placed: Vec<Placed>,
        job: StoreJob,
    },
    /// This device sent a message under this client ID before: its answer stands.
    Existing(StoredMessage),
    /// Refused; nothing written.
    Refused(Refusal),
}

/// A send waiting for the writer.
#[derive(Debug)]
pub(super) struct Queued {
    pub job: StoreJob,
    /// Where its answer goes.
    pub reply: oneshot::Sender<Result<SendResult, SendError>>,
    /// Since when it waits (for the latency histogram).
    pub queued_at: Instant,
}

/// Takes whatever sends arrived while the previous batch was written, checks them and
/// stores the accepted ones: one batch at a time.
pub(super) async fn write_batches(
    pool: PgPool,
    device_lists: Arc<DeviceLists>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Queued>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut jobs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for queued in batch.drain(..) {
            jobs.push(queued.job);
            replies.push((queued.reply, queued.queued_at));
        }
        let started = Instant::now();
        let results = match check(&pool, &device_lists, jobs).await {
            Ok((results, accepted)) => {
                let checked = Instant::now();
                metrics.send_batch_check.observe(checked - started);
                let stored = store(&pool, results, accepted).await;
                metrics.send_batch_store.observe(checked.elapsed());
                stored
            }
            Err(error) => Err(error),
        };
        match results {
            Ok(results) => {
                for ((reply, queued_at), result) in replies.into_iter().zip(results) {
                    metrics.send_wait.observe(queued_at.elapsed());
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                let error = SendError::from(error);
                tracing::warn!(%error, messages = replies.len(), "could not handle a batch of sends");
                for (reply, queued_at) in replies {
                    metrics.send_wait.observe(queued_at.elapsed());
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The answers a batch's checks decide (`None`: to store) and the jobs to store, with
/// their places in the batch.
type Checked = (Vec<Option<SendResult>>, Vec<(usize, StoreJob)>);

/// The device lists of `users`: cached ones, the rest read in one query (and cached).
async fn device_lists(
    pool: &PgPool,
    cache: &DeviceLists,
    users: BTreeSet<UserId>,
) -> Result<HashMap<UserId, Arc<UserDevices>>, sqlx::Error> {
    let (mut lists, missing, epoch) = cache.lookup(users);
    if !missing.is_empty() {
        let read_at = Instant::now();
        let read = read_device_lists(pool, &missing).await?;
        cache.store(epoch, read_at, &read);
        lists.extend(read);
    }
    Ok(lists)
}

/// Checks one batch, writing nothing: against the cached device lists, then the sends
/// those refuse against lists read again from the database (a cached list may be behind),
/// and a send still refused is answered with the message its device stored earlier under
/// the same client ID, if any (a retry is answered before its envelope set counts: the
/// device lists may have changed since the original was stored, and the original
/// stands). A retry that passes the checks is found by the store's idempotency key.
async fn check(
    pool: &PgPool,
    cache: &DeviceLists,
    jobs: Vec<StoreJob>,
) -> Result<Checked, sqlx::Error> {
    let users: BTreeSet<UserId> = jobs
        .iter()
        .flat_map(|job| [job.sender.user_id, job.recipient])
        .collect();
    let lists = device_lists(pool, cache, users).await?;

    let mut results: Vec<Option<SendResult>> = Vec::with_capacity(jobs.len());
    let mut accepted: Vec<(usize, StoreJob)> = Vec::new();
    let mut refused: Vec<(usize, StoreJob)> = Vec::new();
    for (index, mut job) in jobs.into_iter().enumerate() {
        results.push(None);
        match check_job(&mut job, &lists) {
            Ok(()) => accepted.push((index, job)),
            Err(_) => refused.push((index, job)),
        }
    }
    if refused.is_empty() {
        return Ok((results, accepted));
    }

    let users: BTreeSet<UserId> = refused
        .iter()
        .flat_map(|(_, job)| [job.sender.user_id, job.recipient])
        .collect();
    for user in &users {
        cache.forget(*user);
    }
    let lists = device_lists(pool, cache, users).await?;
    let mut still_refused = Vec::new();
    for (index, mut job) in refused {
        match check_job(&mut job, &lists) {
            Ok(()) => accepted.push((index, job)),
            Err(refusal) => still_refused.push((index, job, refusal)),
        }
    }
    if !still_refused.is_empty() {
        let keys: Vec<(DeviceRef, &str)> = still_refused
            .iter()
            .map(|(_, job, _)| (job.sender, job.client_message_id.as_str()))
            .collect();
        let originals = find_by_client_ids(pool, &keys).await?;
        for ((index, job, refusal), original) in still_refused.into_iter().zip(originals) {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(match original {
                    Some(original) => reused(&job, original),
                    None => SendResult::Refused(refusal),
                });
            }
        }
    }
    // The store keeps the batch's order.
    accepted.sort_by_key(|(index, _)| *index);
    Ok((results, accepted))
}

/// The answer to a send whose client message ID its device used before: the original's
/// if it went to the same conversation (a retry), a refusal otherwise (a client message ID
/// names one message, and nothing of the new one is stored). Either way nothing new is
/// stored.
pub(super) fn reused(job: &StoreJob, original: StoredMessage) -> SendResult {
    if original.conversation == job.conversation() {
        SendResult::Existing(original)
    } else {
        SendResult::Refused(Refusal::ClientMessageIdReused)
    }
}

/// Stores a checked batch's accepted jobs (one statement, committed); results in the
/// order of the batch.
async fn store(
    pool: &PgPool,
    mut results: Vec<Option<SendResult>>,
    accepted: Vec<(usize, StoreJob)>,
) -> Result<Vec<SendResult>, sqlx::Error> {
    if !accepted.is_empty() {
        let (indexes, store_jobs): (Vec<usize>, Vec<StoreJob>) = accepted.into_iter().unzip();
        let outcomes = store_batch(pool, &store_jobs).await?;
        // A retry with the same client ID was stored first (in this batch, an earlier
        // one, or another process's): the original's answer stands. One query for all.
        let duplicates: Vec<(DeviceRef, &str)> = store_jobs
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, StoreOutcome::Duplicate))
            .map(|(job, _)| (job.sender, job.client_message_id.as_str()))
            .collect();
        let mut originals = if duplicates.is_empty() {
            Vec::new()
        } else {
            find_by_client_ids(pool, &duplicates).await?
        }
        .into_iter();
        for ((index, job), outcome) in indexes.into_iter().zip(store_jobs).zip(outcomes) {
            let result = match outcome {
                StoreOutcome::Stored { message, placed } => SendResult::Stored {
                    message,
                    placed,
                    job,
                },
                StoreOutcome::Stale(stale) => {
                    // Removed between the read and the lock.
                    SendResult::Refused(Refusal::Mismatch(DeviceListMismatch {
                        stale,
                        ..DeviceListMismatch::default()
                    }))
                }
                StoreOutcome::Duplicate => {
                    let original = originals.next().flatten().ok_or_else(|| {
                        sqlx::Error::Protocol("a conflicting message vanished".into())
                    })?;
                    reused(&job, original)
                }
            };
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.ok_or_else(|| sqlx::Error::Protocol("a send in the batch got no result".into()))
        })
        .collect()
}

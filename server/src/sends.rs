//! Group commit for sends: the sends that arrive while a batch is being written go into
//! the next batch, which costs two statements however many messages it holds: one reads
//! what every send is checked against (earlier messages under their client IDs, the
//! device lists), one stores the accepted ones and commits. Every sender is answered
//! only after its own message is committed (or refused, with nothing written).

use std::sync::Arc;

use courier_protocol::api::messages::{DeviceListMismatch, EnvelopeType};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::db::messages::{
    NewEnvelope, Placed, Refusal, SendKey, StoreJob, StoreOutcome, StoredMessage,
    find_by_client_id, prepare_batch, store_batch,
};

/// Most messages handled by one batch.
const MAX_BATCH: usize = 64;

/// What became of a send.
#[derive(Debug)]
pub enum SendResult {
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

type Reply = oneshot::Sender<Result<SendResult, String>>;

/// The handlers' way to send a message.
#[derive(Debug, Clone)]
pub struct SendQueue(mpsc::Sender<(StoreJob, Reply)>);

impl SendQueue {
    /// Starts `writers` tasks, each handling one batch at a time (so up to `writers`
    /// batches are in flight). They end once every queue handle is dropped.
    pub fn start(pool: &PgPool, writers: usize) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let tasks = (0..writers.max(1))
            .map(|_| tokio::spawn(write_batches(pool.clone(), rx.clone())))
            .collect();
        (Self(tx), tasks)
    }

    /// Sends a message: a V2 job carries its envelopes, a V1 job its legacy ciphertext
    /// (its targets are derived from the recipient's devices). An error says why the
    /// whole batch failed.
    pub async fn send(&self, job: StoreJob) -> Result<SendResult, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send((job, reply))
            .await
            .map_err(|_| "the send queue is closed".to_owned())?;
        answer
            .await
            .map_err(|_| "a send writer stopped".to_owned())?
    }
}

async fn write_batches(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<(StoreJob, Reply)>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let (jobs, replies): (Vec<StoreJob>, Vec<Reply>) = batch.drain(..).unzip();
        match handle(&pool, jobs).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                tracing::error!(%error, messages = replies.len(), "could not handle a batch of sends");
                let message = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Checks and stores one batch; results in the order of `jobs`.
async fn handle(pool: &PgPool, jobs: Vec<StoreJob>) -> Result<Vec<SendResult>, sqlx::Error> {
    let keys: Vec<SendKey<'_>> = jobs
        .iter()
        .map(|job| SendKey {
            sender: job.sender,
            client_message_id: &job.client_message_id,
            recipient: job.recipient,
        })
        .collect();
    let contexts = prepare_batch(pool, &keys).await?;

    // Decide each job without writing; keep the accepted ones in order.
    let mut results: Vec<Option<SendResult>> = Vec::with_capacity(jobs.len());
    let mut accepted: Vec<(usize, StoreJob)> = Vec::new();
    for (index, (mut job, mut context)) in jobs.into_iter().zip(contexts).enumerate() {
        if let Some(existing) = context.existing.take() {
            // A retry is answered before the envelope set is checked: the device lists may
            // have changed since the original was stored, and the original stands.
            results.push(Some(SendResult::Existing(existing)));
            continue;
        }
        let checked = if job.channel.is_some() {
            // The route checked the member devices and their sender keys.
            Ok(())
        } else if job.legacy_envelope.is_some() {
            context
                .v1_targets(job.sender, job.recipient)
                .map(|targets| {
                    job.envelopes = targets
                        .into_iter()
                        .map(|device| NewEnvelope {
                            device,
                            envelope_type: EnvelopeType::Legacy,
                            ciphertext: None,
                        })
                        .collect();
                })
        } else {
            let requested = job.envelopes.iter().map(|e| e.device).collect();
            context.check_v2(job.sender, job.recipient, &requested)
        };
        match checked {
            Ok(()) => {
                results.push(None);
                accepted.push((index, job));
            }
            Err(refusal) => results.push(Some(SendResult::Refused(refusal))),
        }
    }

    if !accepted.is_empty() {
        let (indexes, store_jobs): (Vec<usize>, Vec<StoreJob>) = accepted.into_iter().unzip();
        let outcomes = store_batch(pool, &store_jobs).await?;
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
                    // A retry with the same client ID was stored first (in this batch or a
                    // concurrent one): its answer stands.
                    let existing = find_by_client_id(pool, job.sender, &job.client_message_id)
                        .await?
                        .ok_or_else(|| {
                            sqlx::Error::Protocol("a conflicting message vanished".into())
                        })?;
                    SendResult::Existing(existing)
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

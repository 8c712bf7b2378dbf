//! Group commit for sends: the sends that arrive while a store statement runs are written
//! together by the next one, so a burst costs one statement and one commit instead of one
//! per message. Every sender still gets its answer only after its message is committed.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::db::messages::{StoreJob, StoreOutcome, store_batch};

/// Most messages written by one statement.
const MAX_BATCH: usize = 32;

type Reply = oneshot::Sender<(StoreJob, Result<StoreOutcome, String>)>;

/// The handlers' way to store a message.
#[derive(Debug, Clone)]
pub struct SendQueue(mpsc::Sender<(StoreJob, Reply)>);

impl SendQueue {
    /// Starts `writers` tasks, each writing one batch at a time (so up to `writers`
    /// statements run at once). They end once every queue handle is dropped.
    pub fn start(pool: &PgPool, writers: usize) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let tasks = (0..writers.max(1))
            .map(|_| tokio::spawn(write_batches(pool.clone(), rx.clone())))
            .collect();
        (Self(tx), tasks)
    }

    /// Stores a message (committed when this answers) and hands the job back with the
    /// outcome; an error says why the whole batch failed.
    pub async fn store(&self, job: StoreJob) -> Result<(StoreJob, StoreOutcome), String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send((job, reply))
            .await
            .map_err(|_| "the send queue is closed".to_owned())?;
        let (job, outcome) = answer
            .await
            .map_err(|_| "a send writer stopped".to_owned())?;
        Ok((job, outcome?))
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
        match store_batch(&pool, &jobs).await {
            Ok(outcomes) => {
                for ((job, reply), outcome) in jobs.into_iter().zip(replies).zip(outcomes) {
                    let _ = reply.send((job, Ok(outcome)));
                }
            }
            Err(error) => {
                tracing::error!(%error, messages = jobs.len(), "could not store a batch of messages");
                let message = error.to_string();
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = reply.send((job, Err(message.clone())));
                }
            }
        }
    }
}

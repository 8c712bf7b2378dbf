//! The PostgreSQL transport: `NOTIFY` out (one statement per batch), `LISTEN` in, on a
//! connection of its own.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::outbox::{Outbox, Transport, run_publisher};
use super::{Fabric, QUEUE, Receiver, process_id};

/// The PostgreSQL channel every process listens on.
pub(super) const CHANNEL: &str = "courier_fabric";

struct PgNotify {
    pool: PgPool,
}

impl Transport for PgNotify {
    type Error = sqlx::Error;

    async fn send(&self, payloads: &[String]) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn finish(self) {}
}

/// Starts the PostgreSQL fabric: a publisher and a listener, until `stop` turns true.
pub(super) async fn start(
    pool: PgPool,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), sqlx::Error> {
    let process = process_id();
    // Its own connection, outside the handlers' pool: a pool that is closing waits for
    // every connection it lent, and the listener never gives its back.
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = PgListener::connect_with(&listener_pool).await?;
    listener.listen(CHANNEL).await?;
    let (fabric, outbox) = Outbox::new(process.clone(), QUEUE);
    let publisher = tokio::spawn(run_publisher(PgNotify { pool }, outbox));
    let listening = tokio::spawn(listen_postgres(
        listener_pool,
        listener,
        process,
        receiver,
        stop,
    ));
    Ok((fabric, vec![publisher, listening]))
}

async fn listen_postgres(
    listener_pool: PgPool,
    mut listener: PgListener,
    process: String,
    receiver: Receiver,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            _ = stop.changed() => {
                // Close the connection before the process (or a test's database) goes.
                drop(listener);
                listener_pool.close().await;
                return;
            }
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => receiver.apply_payload(&process, notification.payload()),
            // The connection dropped and was re-established: signals may be lost.
            Ok(None) => receiver.missed(),
            Err(error) => {
                tracing::warn!(%error, "lost the fabric's listening connection");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

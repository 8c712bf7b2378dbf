//! The PostgreSQL transport: `NOTIFY` out (one statement per batch), `LISTEN` in, on a
//! connection of its own.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::outbox::{Outbox, Transport, run_publisher};
use super::{Fabric, QUEUE, Receiver, process_id};

/// The first wait before connecting the listener again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to connect the listener again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

/// Where the `LISTEN` connects: the direct database (a transaction pooler keeps no
/// session, so a `LISTEN` through it hears nothing), waiting for a connection no longer
/// than the handlers do, so an outage ends for it when it ends for them.
#[derive(Clone)]
struct ListenTarget {
    options: PgConnectOptions,
    acquire_timeout: Duration,
}

/// Starts the PostgreSQL fabric: a publisher (`NOTIFY` through `pool`: a notification is
/// sent at its transaction's commit, which a transaction pooler passes on) and a listener
/// on `direct` (the pool's own server when `None`), until `stop` turns true.
pub(super) async fn start(
    pool: PgPool,
    direct: Option<PgConnectOptions>,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), sqlx::Error> {
    let process = process_id();
    let target = ListenTarget {
        options: direct.unwrap_or_else(|| (*pool.connect_options()).clone()),
        acquire_timeout: pool.options().get_acquire_timeout(),
    };
    let listening = Listening::connect(&target).await?;
    let (fabric, outbox) = Outbox::new(process.clone(), QUEUE);
    let listener = tokio::spawn(listen_postgres(target, listening, process, receiver, stop));
    let publisher = tokio::spawn(run_publisher(PgNotify { pool }, outbox));
    Ok((fabric, vec![publisher, listener]))
}

/// A `LISTEN` on [`CHANNEL`], on a connection of its own.
struct Listening {
    /// Its own pool of one, outside the handlers' pool: a pool that is closing waits for
    /// every connection it lent, and the listener never gives its back. A new one per
    /// connection, so a broken connection being given back never holds up the next.
    pool: PgPool,
    listener: PgListener,
}

impl Listening {
    /// Connects and listens.
    async fn connect(target: &ListenTarget) -> Result<Self, sqlx::Error> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(target.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(target.options.clone());
        let listening = async {
            let mut listener = PgListener::connect_with(&own).await?;
            // A lost connection is reported (`Ok(None)`) at once instead of being
            // replaced inside `try_recv`: replacing it is `listen_postgres`'s, so that it
            // is always followed by a reread. (Inside `try_recv`, a reconnection that
            // outlasted its acquire timeout came back as an error, the next call
            // reconnected silently, and the reread never ran.)
            listener.eager_reconnect(false);
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Ok(Self {
                pool: own,
                listener,
            }),
            Err(error) => {
                own.close().await;
                Err(error)
            }
        }
    }

    /// Closes the connection, without waiting on a broken one for long.
    async fn close(self) {
        drop(self.listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pool.close()).await;
    }
}

/// Applies the others' payloads until `stop`. Whenever the listening connection fails
/// (lost, or any error), it is dropped and a new one is connected, with a backoff, for
/// as long as it takes; once it listens again, every local socket rereads its stream,
/// since signals sent meanwhile went unheard. The reread comes after the `LISTEN`, so an
/// item committed at any time is either reread or signalled.
async fn listen_postgres(
    target: ListenTarget,
    listening: Listening,
    process: String,
    receiver: Receiver,
    mut stop: watch::Receiver<bool>,
) {
    let mut listening = Some(listening);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(active) = listening.as_mut() else {
            let connected = tokio::select! {
                _ = stop.changed() => break,
                connected = Listening::connect(&target) => connected,
            };
            match connected {
                Ok(again) => {
                    tracing::info!(
                        "the fabric listens again; every local socket rereads its stream"
                    );
                    listening = Some(again);
                    backoff = FIRST_BACKOFF;
                    receiver.missed();
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "could not listen to the fabric again"
                    );
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let next = tokio::select! {
            _ = stop.changed() => break,
            next = active.listener.try_recv() => next,
        };
        let lost = match next {
            Ok(Some(notification)) => {
                receiver.apply_payload(&process, notification.payload());
                continue;
            }
            Ok(None) => "connection lost".to_owned(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(error = %lost, "lost the fabric's listening connection; listening again");
        if let Some(broken) = listening.take() {
            // In the background: giving a broken connection back may take a while.
            tokio::spawn(broken.close());
        }
    }
    // Close the connection before the process (or a test's database) goes.
    if let Some(listening) = listening {
        listening.close().await;
    }
}

//! The NATS transport: core publish and subscribe on one subject.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::outbox::{Outbox, Transport, run_publisher};
use super::{Fabric, QUEUE, Receiver, StartError, process_id};
use crate::config::redact_nats_url;

/// The NATS subject every process subscribes to.
const SUBJECT: &str = "courier.fabric";

struct NatsPublish {
    client: async_nats::Client,
}

impl Transport for NatsPublish {
    type Error = async_nats::PublishError;

    async fn send(&self, payloads: &[String]) -> Result<(), async_nats::PublishError> {
        // `publish` only hands the message to the client's connection task; it waits
        // only while that task is behind (or reconnecting), which holds up this
        // publisher, never a send.
        for payload in payloads {
            self.client.publish(SUBJECT, payload.clone().into()).await?;
        }
        // The client writes out what `publish` buffered only when its buffer fills or a
        // timer fires: at a few payloads per batch that held signals back for
        // milliseconds, and the receiving sockets, seeing later local pushes first,
        // reread their streams. Measured with two processes (docs/benchmarks.md): p50
        // 89-119 ms without this flush, 14-18 ms with it, at 1,111 messages/s. The next
        // batch gathers while this one is flushed.
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush fabric signals to NATS");
        }
        Ok(())
    }

    async fn finish(self) {
        // Signals published just before shutdown still reach the others.
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the last fabric signals to NATS");
        }
    }
}

/// Starts the NATS fabric on `url` (one server, or several separated by commas): a
/// publisher and a subscriber, until `stop` turns true. Fails if NATS does not answer
/// now; once started, the client reconnects by itself for as long as it takes.
pub(super) async fn start(
    url: &str,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), StartError> {
    let failed = |reason: String| StartError::Nats {
        url: redact_nats_url(url),
        reason,
    };
    let servers = url
        .split(',')
        .map(|one| one.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(error.to_string()))?;
    let process = process_id();
    // Raised on every (re)connection and when NATS dropped messages for us; the
    // subscriber task answers it, since it can first make sure the subscription is back.
    let missed = Arc::new(Notify::new());
    let on_event = missed.clone();
    let client = async_nats::ConnectOptions::new()
        .name("courier-server")
        // Our own signals are of no use to us: the server need not send them back.
        .no_echo()
        .event_callback(move |event| {
            let missed = on_event.clone();
            async move {
                match event {
                    async_nats::Event::Connected => missed.notify_one(),
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::warn!(
                            "NATS dropped fabric signals for this process (slow consumer); \
                             every local socket rereads its stream"
                        );
                        missed.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the fabric's NATS connection; reconnecting");
                    }
                    _ => {}
                }
            }
        })
        .connect(servers.as_slice())
        .await
        .map_err(|error| failed(error.to_string()))?;
    let subscriber = client
        .subscribe(SUBJECT)
        .await
        .map_err(|error| failed(error.to_string()))?;
    // The subscription is in place on the server before this process serves anyone.
    client
        .flush()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let (fabric, outbox) = Outbox::new(process.clone(), QUEUE);
    let publisher = tokio::spawn(run_publisher(
        NatsPublish {
            client: client.clone(),
        },
        outbox,
    ));
    let listening = tokio::spawn(listen_nats(
        client, subscriber, missed, process, receiver, stop,
    ));
    Ok((fabric, vec![publisher, listening]))
}

async fn listen_nats(
    client: async_nats::Client,
    mut subscriber: async_nats::Subscriber,
    missed: Arc<Notify>,
    process: String,
    receiver: Receiver,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // Dropping the subscriber unsubscribes; the connection closes once the
                // publisher's client is gone too.
                drop(subscriber);
                return;
            }
            () = missed.notified() => {
                // After a reconnection the client resubscribes before it handles our
                // flush, so once the flush is answered no later signal can be missed:
                // only then reread.
                match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "could not flush the NATS connection"),
                    Err(_) => tracing::warn!("NATS did not answer a flush within 5 s"),
                }
                receiver.missed();
            }
            message = subscriber.next() => match message {
                Some(message) => match std::str::from_utf8(&message.payload) {
                    Ok(payload) => receiver.apply_payload(&process, payload),
                    Err(_) => tracing::warn!("ignored a fabric message that is not UTF-8"),
                },
                // The client gave the subscription up: take a new one, then reread what
                // may have been missed meanwhile.
                None => match client.subscribe(SUBJECT).await {
                    Ok(again) => {
                        tracing::warn!("the fabric's NATS subscription ended; subscribed again");
                        subscriber = again;
                        missed.notify_one();
                    }
                    Err(error) => {
                        tracing::error!(%error, "the fabric's NATS subscription ended and cannot be renewed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            },
        }
    }
}

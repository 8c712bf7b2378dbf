//! The receive loop behind [`CourierClient::start_receiving`]: the stream (stored, then
//! acknowledged), and the event queue handed to the app's [`EventListener`] in batches,
//! confirmed once the listener accepted them.
//!
//! [`CourierClient::start_receiving`]: super::CourierClient::start_receiving

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{AppEvent, CourierError, Inner};
use crate::client::StreamPhase;

/// Events handed to the listener per call.
pub const EVENT_BATCH: u32 = 256;
/// The first pause after a listener failed; it doubles up to [`MAX_LISTENER_PAUSE`].
const FIRST_LISTENER_PAUSE: Duration = Duration::from_millis(250);
const MAX_LISTENER_PAUSE: Duration = Duration::from_secs(5);

/// What the app implements to hear from the receive loop. Called on the runtime's
/// blocking pool, one call at a time, never on an async worker thread.
pub trait EventListener: Send + Sync {
    /// A batch of events, oldest first. `Ok` confirms them: they are not delivered
    /// again. `Err` leaves them queued: the loop reports
    /// [`CourierError::ListenerFailed`] through [`on_error`](Self::on_error), pauses,
    /// and delivers them again.
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), ListenerError>;

    /// The stream's connection changed.
    fn on_connection_state(&self, state: ConnectionState);

    /// An error the loop survived (a dropped connection is reported as
    /// [`ConnectionState::Disconnected`] instead), or the one that stopped it (followed
    /// by [`ConnectionState::Stopped`]).
    fn on_error(&self, error: CourierError);
}

/// The app's listener failed to take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ListenerError {
    /// What failed (reported back in [`CourierError::ListenerFailed`]).
    pub message: String,
}

/// The receive loop's connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Opening the stream.
    Connecting,
    /// The stream is open; what is waiting arrives, then new items as they come.
    Connected,
    /// The connection dropped or was refused; the next try is in `retry_in_ms`.
    Disconnected {
        /// Milliseconds until the next connection attempt.
        retry_in_ms: u64,
    },
    /// The loop ended (cancelled, logged out, the client dropped, or a final error
    /// reported through [`EventListener::on_error`]).
    Stopped,
}

impl From<StreamPhase> for ConnectionState {
    fn from(phase: StreamPhase) -> Self {
        match phase {
            StreamPhase::Connecting => Self::Connecting,
            StreamPhase::Connected => Self::Connected,
            StreamPhase::Disconnected { retry_in } => Self::Disconnected {
                retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

/// Stops a receive loop. Cloning it gives another handle to the same loop; dropping it
/// does not stop the loop (a garbage collector would stop it at random): call
/// [`cancel`](Self::cancel).
#[derive(Clone)]
pub struct ReceiveHandle {
    stop: Arc<watch::Sender<bool>>,
    finished: watch::Receiver<bool>,
}

impl std::fmt::Debug for ReceiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl ReceiveHandle {
    /// Asks the loop to stop. A batch the listener is handling is confirmed first; the
    /// listener then hears [`ConnectionState::Stopped`].
    pub fn cancel(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Resolves once the loop has ended.
    pub async fn wait(&self) {
        let mut finished = self.finished.clone();
        // An error means the loop's task is gone, which is finished too.
        let _ = finished.wait_for(|done| *done).await;
    }
}

/// Spawns the loop on the client's runtime.
pub(super) fn start(inner: Arc<Inner>, listener: Arc<dyn EventListener>) -> ReceiveHandle {
    let (stop, stop_rx) = watch::channel(false);
    let (finished_tx, finished) = watch::channel(false);
    let stop = Arc::new(stop);
    let handle = ReceiveHandle {
        stop: stop.clone(),
        finished,
    };
    let runtime = inner.runtime.clone();
    runtime.spawn(async move {
        run(&inner, listener, &stop, stop_rx).await;
        finished_tx.send_replace(true);
    });
    handle
}

/// Calls the listener on the blocking pool; a panic in it is a failure, not a crash.
async fn call_listener<R: Send + 'static>(
    listener: &Arc<dyn EventListener>,
    call: impl FnOnce(&dyn EventListener) -> R + Send + 'static,
) -> Result<R, ListenerError> {
    let listener = listener.clone();
    match tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(AssertUnwindSafe(|| call(&*listener)))
    })
    .await
    {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) | Err(_) => Err(ListenerError {
            message: "the listener panicked".to_owned(),
        }),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn run(
    inner: &Inner,
    listener: Arc<dyn EventListener>,
    stop: &watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) {
    // Connection changes come from inside the stream's future (a plain callback); they
    // are forwarded to the listener from here, in order. The sender lives in the
    // stream's future: once it ends, the forwarder drains what is left and ends too.
    let (phases_tx, mut phases) = mpsc::unbounded_channel::<StreamPhase>();
    let stream_stop = stop_rx.clone();
    let stream = async move {
        let observe = move |phase: StreamPhase| {
            let _ = phases_tx.send(phase);
        };
        let result = inner
            .client
            .run_observed(stopped(stream_stop), &observe)
            .await
            .map_err(CourierError::from);
        stop.send_replace(true);
        result
    };
    let deliver = async {
        let result = deliver(inner, &listener, stop_rx.clone()).await;
        stop.send_replace(true);
        result
    };
    let forward = async {
        while let Some(phase) = phases.recv().await {
            let _ = call_listener(&listener, move |l| l.on_connection_state(phase.into())).await;
            // Connected again: what the outbox kept goes now (a failure stays kept and
            // goes at the next connection).
            if phase == StreamPhase::Connected {
                if let Err(error) = inner.client.send_outgoing().await {
                    let error = CourierError::from(error);
                    let _ = call_listener(&listener, move |l| l.on_error(error)).await;
                }
            }
        }
    };
    let (stream_result, deliver_result, ()) = tokio::join!(stream, deliver, forward);
    for error in [stream_result.err(), deliver_result.err()]
        .into_iter()
        .flatten()
    {
        let _ = call_listener(&listener, move |l| l.on_error(error)).await;
    }
    let _ = call_listener(&listener, |l| {
        l.on_connection_state(ConnectionState::Stopped);
    })
    .await;
}

/// Hands pending events to the listener until stopped; confirms each batch it accepts.
async fn deliver(
    inner: &Inner,
    listener: &Arc<dyn EventListener>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CourierError> {
    let client = &inner.client;
    let batch = usize::try_from(EVENT_BATCH).unwrap_or(256);
    let mut pause = FIRST_LISTENER_PAUSE;
    loop {
        tokio::select! {
            waited = client.wait_for_events() => waited?,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        let events: Vec<AppEvent> = client
            .pending_events(batch)
            .await?
            .into_iter()
            .map(AppEvent::from)
            .collect();
        let Some(last) = events.last().map(|event| event.seq) else {
            continue;
        };
        // Once handed over, a batch is confirmed even if a stop comes meanwhile, so an
        // accepted batch is never delivered twice.
        let outcome = call_listener(listener, move |l| l.on_events(events))
            .await
            .and_then(|accepted| accepted);
        match outcome {
            Ok(()) => {
                client.confirm_events(last).await?;
                pause = FIRST_LISTENER_PAUSE;
            }
            Err(failure) => {
                let error = CourierError::ListenerFailed {
                    message: failure.message,
                };
                let _ = call_listener(listener, move |l| l.on_error(error)).await;
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                }
                pause = (pause * 2).min(MAX_LISTENER_PAUSE);
            }
        }
    }
}

//! The app's listener (a Kotlin, Swift or Python object) and the handle that stops the
//! receive loop.
//!
//! Every listener method returns a `Result` whose error takes uniffi's "unexpected
//! callback error": an exception thrown on the foreign side becomes an `Err` here, never
//! a panic (uniffi panics for a callback that fails without a `Result`). The SDK calls
//! the listener on its blocking pool, one call at a time, behind `catch_unwind`.

use courier_sdk::app as sdk;
use courier_sdk::app::{AppEvent, ConnectionState};

use crate::error::{CourierError, ListenerError};

/// What the app implements to hear from the receive loop. Called from an SDK thread
/// (never the app's main thread), one call at a time.
#[uniffi::export(callback_interface)]
pub trait EventListener: Send + Sync {
    /// A batch of events, oldest first. Returning confirms them: they are not delivered
    /// again. Throwing (any exception) leaves them queued: the loop reports
    /// `ListenerFailed` through `on_error`, pauses, and delivers them again.
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), ListenerError>;

    /// The stream's connection changed. An exception thrown here is ignored.
    fn on_connection_state(&self, state: ConnectionState) -> Result<(), ListenerError>;

    /// An error the loop survived (a dropped connection is reported as
    /// `ConnectionState.Disconnected` instead), or the one that stopped it (followed by
    /// `ConnectionState.Stopped`). An exception thrown here is ignored.
    fn on_error(&self, error: CourierError) -> Result<(), ListenerError>;
}

/// The foreign listener as the SDK's [`sdk::EventListener`].
pub(crate) struct Adapter {
    listener: Box<dyn EventListener>,
}

impl Adapter {
    pub(crate) fn new(listener: Box<dyn EventListener>) -> Self {
        Self { listener }
    }
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").finish_non_exhaustive()
    }
}

impl sdk::EventListener for Adapter {
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), sdk::ListenerError> {
        self.listener.on_events(events).map_err(Into::into)
    }

    // The SDK's notifications return nothing: a listener that throws on one has nobody
    // to report to, so its error is dropped here.
    fn on_connection_state(&self, state: ConnectionState) {
        let _ = self.listener.on_connection_state(state);
    }

    fn on_error(&self, error: sdk::CourierError) {
        let _ = self.listener.on_error(error.into());
    }
}

/// Stops a receive loop. Dropping it does not stop the loop (a garbage collector would
/// stop it at random): call `cancel()`.
#[derive(Debug, uniffi::Object)]
pub struct ReceiveHandle {
    inner: sdk::ReceiveHandle,
}

impl ReceiveHandle {
    pub(crate) fn new(inner: sdk::ReceiveHandle) -> Self {
        Self { inner }
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl ReceiveHandle {
    /// Asks the loop to stop. A batch the listener is handling is confirmed first; the
    /// listener then hears `ConnectionState.Stopped`.
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Resolves once the loop has ended.
    pub async fn wait(&self) {
        self.inner.wait().await;
    }
}

//! The app's JavaScript callbacks as an [`EventListener`]: each call goes through a
//! threadsafe function onto the JavaScript thread, and the SDK's thread (the runtime's
//! blocking pool, where the SDK calls listeners) waits for the callback to return, so
//! `onEvents` confirms a batch only once JavaScript accepted it. A callback that throws,
//! or returns a promise that rejects, fails the batch: the SDK reports
//! `listener_failed` through `onError` and delivers the batch again.

use std::sync::mpsc;

use courier_sdk::app;
use napi::Status;
use napi::bindgen_prelude::{Either, Promise, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

use crate::error::{BindingError, JsCourierError};
use crate::types::{AppEvent, ConnectionState};

/// What a callback returns: a promise (waited for) or anything else (taken as done).
pub(crate) type Returned = Either<Promise<()>, Unknown<'static>>;

/// A JavaScript callback taking one `T`, callable from any thread.
pub(crate) type Callback<T> = ThreadsafeFunction<T, Returned, T, Status, false>;

/// How a callback's call ended, as the waiting thread learns it.
enum Outcome {
    Returned,
    Pending(Promise<()>),
    Threw(String),
}

/// The three callbacks of `startReceiving`.
pub(crate) struct JsListener {
    pub(crate) on_events: Callback<Vec<AppEvent>>,
    pub(crate) on_connection_state: Option<Callback<ConnectionState>>,
    pub(crate) on_error: Option<Callback<JsCourierError>>,
}

impl std::fmt::Debug for JsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsListener").finish_non_exhaustive()
    }
}

/// Calls `callback` with `value` on the JavaScript thread and waits (on this thread,
/// never the JavaScript one) until it returned, threw, or its promise settled.
fn call_and_wait<T: ToNapiValue + 'static>(callback: &Callback<T>, value: T) -> Result<(), String> {
    let (sender, receiver) = mpsc::sync_channel::<Outcome>(1);
    let status = callback.call_with_return_value(
        value,
        ThreadsafeFunctionCallMode::Blocking,
        move |returned: napi::Result<Returned>, _env| {
            let outcome = match returned {
                Ok(Either::A(promise)) => Outcome::Pending(promise),
                Ok(Either::B(_)) => Outcome::Returned,
                Err(error) => Outcome::Threw(error.reason),
            };
            // The waiting side is gone only if it gave up; nothing to tell then.
            let _ = sender.send(outcome);
            Ok(())
        },
    );
    if status != Status::Ok {
        return Err(format!(
            "the JavaScript callback could not be called ({status}): the environment is closing"
        ));
    }
    // The sender is dropped without a send only when the environment went away with
    // the call still queued.
    match receiver.recv() {
        Ok(Outcome::Returned) => Ok(()),
        Ok(Outcome::Threw(reason)) => Err(threw(&reason)),
        Ok(Outcome::Pending(promise)) => match futures::executor::block_on(promise) {
            Ok(()) => Ok(()),
            Err(error) => Err(format!(
                "the JavaScript callback's promise rejected: {}",
                error.reason
            )),
        },
        Err(_) => Err("the JavaScript environment closed before the callback ran".to_owned()),
    }
}

fn threw(reason: &str) -> String {
    if reason.is_empty() {
        "the JavaScript callback threw".to_owned()
    } else {
        format!("the JavaScript callback threw: {reason}")
    }
}

impl app::EventListener for JsListener {
    fn on_events(&self, events: Vec<app::AppEvent>) -> Result<(), app::ListenerError> {
        let events: Vec<AppEvent> = events.into_iter().map(AppEvent::from).collect();
        call_and_wait(&self.on_events, events).map_err(|message| app::ListenerError { message })
    }

    fn on_connection_state(&self, state: app::ConnectionState) {
        if let Some(callback) = &self.on_connection_state {
            // A throwing state callback has nobody to report to: the SDK takes no answer.
            let _ = call_and_wait(callback, state.into());
        }
    }

    fn on_error(&self, error: app::CourierError) {
        if let Some(callback) = &self.on_error {
            let _ = call_and_wait(callback, JsCourierError(BindingError::Sdk(error)));
        }
    }
}

//! Process counters, served in the Prometheus text format at `GET /metrics`.
//!
//! Counters only (no per-user labels): they tell an operator how much traffic flows and
//! of which protocol version, never who talks to whom.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_v1: AtomicU64,
    pub messages_v2: AtomicU64,
    pub messages_deduplicated: AtomicU64,
    pub sends_refused_mismatch: AtomicU64,
    pub envelopes_stored: AtomicU64,
    pub envelopes_pushed: AtomicU64,
    pub envelopes_delivered: AtomicU64,
    pub push_overflows: AtomicU64,
    pub envelopes_expired: AtomicU64,
    pub ws_connections: AtomicI64,
    pub ws_replaced: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters: [(&str, &str, String); 10] = [
            (
                "courier_messages_sent_total",
                "Messages accepted, by protocol version.",
                format!(
                    "courier_messages_sent_total{{protocol_version=\"1\"}} {}\ncourier_messages_sent_total{{protocol_version=\"2\"}} {}",
                    load(&self.messages_v1),
                    load(&self.messages_v2)
                ),
            ),
            (
                "courier_messages_deduplicated_total",
                "Sends answered from an earlier send with the same client message ID.",
                format!(
                    "courier_messages_deduplicated_total {}",
                    load(&self.messages_deduplicated)
                ),
            ),
            (
                "courier_sends_refused_device_mismatch_total",
                "V2 sends refused because the envelope set did not match the device lists.",
                format!(
                    "courier_sends_refused_device_mismatch_total {}",
                    load(&self.sends_refused_mismatch)
                ),
            ),
            (
                "courier_envelopes_stored_total",
                "Per-device envelopes stored.",
                format!(
                    "courier_envelopes_stored_total {}",
                    load(&self.envelopes_stored)
                ),
            ),
            (
                "courier_envelopes_pushed_total",
                "Envelopes written to WebSockets (redeliveries included).",
                format!(
                    "courier_envelopes_pushed_total {}",
                    load(&self.envelopes_pushed)
                ),
            ),
            (
                "courier_envelopes_delivered_total",
                "Envelopes marked delivered by an acknowledgement.",
                format!(
                    "courier_envelopes_delivered_total {}",
                    load(&self.envelopes_delivered)
                ),
            ),
            (
                "courier_push_overflows_total",
                "Live pushes dropped because a device read too slowly (it catches up from its inbox).",
                format!(
                    "courier_push_overflows_total {}",
                    load(&self.push_overflows)
                ),
            ),
            (
                "courier_envelopes_expired_total",
                "Undelivered envelopes deleted by retention.",
                format!(
                    "courier_envelopes_expired_total {}",
                    load(&self.envelopes_expired)
                ),
            ),
            (
                "courier_websocket_replaced_total",
                "WebSockets closed because the same device connected again.",
                format!(
                    "courier_websocket_replaced_total {}",
                    load(&self.ws_replaced)
                ),
            ),
            (
                "courier_websocket_connections",
                "Open device WebSockets.",
                format!(
                    "courier_websocket_connections {}",
                    self.ws_connections.load(Ordering::Relaxed)
                ),
            ),
        ];
        for (name, help, samples) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{samples}");
        }
        out
    }
}

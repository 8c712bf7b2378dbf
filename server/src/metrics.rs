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
    pub messages_group: AtomicU64,
    pub messages_deduplicated: AtomicU64,
    pub sends_refused_missing_keys: AtomicU64,
    pub sends_refused_mismatch: AtomicU64,
    pub envelopes_stored: AtomicU64,
    pub envelopes_pushed: AtomicU64,
    pub envelopes_delivered: AtomicU64,
    pub push_overflows: AtomicU64,
    pub stream_reads: AtomicU64,
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
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP courier_messages_sent_total Messages accepted, by protocol version.\n\
             # TYPE courier_messages_sent_total counter\n\
             courier_messages_sent_total{{protocol_version=\"1\"}} {}\n\
             courier_messages_sent_total{{protocol_version=\"2\"}} {}",
            load(&self.messages_v1),
            load(&self.messages_v2),
        );
        let counters = [
            (
                "courier_group_messages_sent_total",
                "Group messages accepted (each stored once for all member devices).",
                &self.messages_group,
            ),
            (
                "courier_sends_refused_missing_sender_keys_total",
                "Group sends refused because member devices had no sender key of the session.",
                &self.sends_refused_missing_keys,
            ),
            (
                "courier_messages_deduplicated_total",
                "Sends answered from an earlier send with the same client message ID.",
                &self.messages_deduplicated,
            ),
            (
                "courier_sends_refused_device_mismatch_total",
                "V2 sends refused because the envelope set did not match the device lists.",
                &self.sends_refused_mismatch,
            ),
            (
                "courier_envelopes_stored_total",
                "Per-device envelopes stored.",
                &self.envelopes_stored,
            ),
            (
                "courier_envelopes_pushed_total",
                "Envelopes written to WebSockets (redeliveries included).",
                &self.envelopes_pushed,
            ),
            (
                "courier_envelopes_delivered_total",
                "Envelopes marked delivered by an acknowledgement.",
                &self.envelopes_delivered,
            ),
            (
                "courier_push_overflows_total",
                "Live pushes dropped because a device read too slowly (it catches up from the database).",
                &self.push_overflows,
            ),
            (
                "courier_stream_reads_total",
                "Times a socket read its device's stream from the database (connects, gaps, overflows).",
                &self.stream_reads,
            ),
            (
                "courier_envelopes_expired_total",
                "Undelivered envelopes deleted by retention.",
                &self.envelopes_expired,
            ),
            (
                "courier_websocket_replaced_total",
                "WebSockets closed because the same device connected again.",
                &self.ws_replaced,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP courier_websocket_connections Open device WebSockets.\n\
             # TYPE courier_websocket_connections gauge\n\
             courier_websocket_connections {}",
            self.ws_connections.load(Ordering::Relaxed),
        );
        out
    }
}

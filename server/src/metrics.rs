//! Process counters, served in the Prometheus text format at `GET /metrics`.
//!
//! Counters and latency histograms only (no per-user labels): they tell an operator how
//! much traffic flows, of which protocol version, and how long sends wait, never who
//! talks to whom.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets: from the 1 ms a quiet batch
/// takes to the seconds a stalled disk can.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket of `LATENCY_BUCKETS` (not cumulative), the last for the rest.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        if let Some(rest) = self.buckets.last() {
            cumulative += rest.load(Ordering::Relaxed);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

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
    /// From a send's arrival at the writer's queue to its answer (stored and committed,
    /// or refused): what the writer adds to a sender's wait.
    pub send_wait: Histogram,
    /// One batch's check (device lists, cached or read).
    pub send_batch_check: Histogram,
    /// One batch's store, commit included (the durable flush is in here).
    pub send_batch_store: Histogram,
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
        let histograms = [
            (
                "courier_send_wait_seconds",
                "Time from a send entering the writer's queue to its answer (committed or refused).",
                &self.send_wait,
            ),
            (
                "courier_send_batch_check_seconds",
                "Time the writer spent checking one batch of sends against the device lists.",
                &self.send_batch_check,
            ),
            (
                "courier_send_batch_store_seconds",
                "Time the writer spent storing and committing one batch of sends.",
                &self.send_batch_store,
            ),
        ];
        for (name, help, histogram) in histograms {
            histogram.render(&mut out, name, help);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_duration_in_its_bucket_and_renders_cumulative_counts() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(500)); // <= 1 ms
        histogram.observe(Duration::from_millis(1)); // a bound is inclusive
        histogram.observe(Duration::from_millis(30)); // <= 50 ms
        histogram.observe(Duration::from_secs(60)); // past the last bound
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds", "X.");
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        assert!(out.contains("x_seconds_sum 60.0315\n"), "{out}");
    }
}

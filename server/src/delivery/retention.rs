//! Retention: undelivered stream items (envelopes, sender keys, receipts, membership
//! changes) expire after the TTL; V1 and group ciphertexts (stored once per message) are
//! purged once every device has them. (Delivered V2 ciphertext is purged at acknowledgement time;
//! the row stays, with its delivered flag and time.)
//!
//! Work is done in batches of `retention_batch` rows, one short statement each, so the
//! cleanup never holds locks that would stall sends.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// What one cleanup pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Undelivered envelopes deleted for being older than the TTL.
    pub expired_envelopes: u64,
    /// Undelivered sender keys and receipt or membership items deleted for their age.
    pub expired_other_items: u64,
    /// V1 and group messages whose shared ciphertext was purged.
    pub purged_v1_ciphertexts: u64,
    /// Statements run.
    pub batches: u64,
}

/// Runs one cleanup pass to completion.
pub async fn run_once(
    pool: &PgPool,
    ttl: Duration,
    batch: i64,
) -> Result<RetentionReport, sqlx::Error> {
    let mut report = RetentionReport::default();
    let ttl_seconds = ttl.as_secs_f64();
    // Every stream table: undelivered items past the TTL go.
    for (table, expired) in [
        // Envelopes have no undelivered index (acknowledging one would have to update it):
        // each active device's range above its delivery floor holds its undelivered ones.
        (
            "message_envelopes",
            "SELECT x.ctid FROM devices d CROSS JOIN LATERAL (
                 SELECT e.ctid FROM message_envelopes e
                 WHERE e.recipient_user_id = d.user_id AND e.recipient_device_id = d.device_id
                   AND e.seq > (SELECT COALESCE(max(f.delivered_through), 0) FROM device_delivery_floors f
                                WHERE f.user_id = d.user_id AND f.device_id = d.device_id)
                   AND e.delivered_at IS NULL AND e.created_at < now() - make_interval(secs => $1)
                 OFFSET 0
             ) x
             WHERE d.removed_at IS NULL",
        ),
        (
            "sender_key_distributions",
            "SELECT ctid FROM sender_key_distributions
             WHERE delivered_at IS NULL AND created_at < now() - make_interval(secs => $1)",
        ),
        (
            "stream_events",
            "SELECT ctid FROM stream_events WHERE created_at < now() - make_interval(secs => $1)",
        ),
    ] {
        loop {
            let deleted = sqlx::query(&format!(
                "DELETE FROM {table} WHERE ctid = ANY (ARRAY ({expired} LIMIT $2))"
            ))
            .bind(ttl_seconds)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
            report.batches += 1;
            if table == "message_envelopes" {
                report.expired_envelopes += deleted;
            } else {
                report.expired_other_items += deleted;
            }
            if deleted < batch.unsigned_abs() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    loop {
        let purged = sqlx::query(
            "UPDATE messages SET encrypted_envelope = NULL WHERE message_id = ANY (ARRAY (
                 SELECT m.message_id FROM messages m
                 WHERE m.encrypted_envelope IS NOT NULL
                   AND NOT EXISTS (
                       SELECT 1 FROM message_envelopes e WHERE e.message_id = m.message_id AND e.delivered_at IS NULL
                   )
                 LIMIT $1
             ))",
        )
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        report.batches += 1;
        report.purged_v1_ciphertexts += purged;
        if purged < batch.unsigned_abs() {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(report)
}

/// Runs cleanup every `interval` until `stop` changes.
pub fn start(
    pool: PgPool,
    metrics: Arc<Metrics>,
    ttl: Duration,
    interval: Duration,
    batch: i64,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    match run_once(&pool, ttl, batch).await {
                        Ok(report) => {
                            Metrics::add(&metrics.envelopes_expired, report.expired_envelopes);
                            if report.expired_envelopes + report.purged_v1_ciphertexts > 0 {
                                tracing::info!(?report, "retention pass");
                            }
                        }
                        Err(error) => tracing::warn!(%error, "retention pass failed"),
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

//! The Rust side of scripts/bench-bindings-node.sh: the same calls as bench/run.js,
//! through `courier_sdk::app` directly (no Node-API), on stores bench/run.js prepared,
//! against the same server in the same run. Prints one JSON line.
//!
//! ```text
//! bench_rust fanout SENDER_STORE KEY_HEX RECIPIENT_USER CHANNEL SENDS
//! bench_rust events STORE KEY_HEX MESSAGES cold|queued
//! ```

// A benchmark program: its output is what it is for.
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use courier_sdk::app::{
    AppEvent, AppEventKind, ConnectionState, CourierClient, CourierError, EventListener,
    ListenerError,
};

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn unhex(text: &str) -> Result<Vec<u8>, Failure> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| Failure::from("bad hex"))
        })
        .collect()
}

fn arg(args: &[String], n: usize) -> Result<String, Failure> {
    args.get(n)
        .cloned()
        .ok_or_else(|| format!("argument {n} missing").into())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and mean of per-call times (ms).
fn summary(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    #[allow(clippy::cast_precision_loss)] // a few hundred samples
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    (median, mean)
}

async fn fanout(args: &[String]) -> Result<String, Failure> {
    let client = CourierClient::open(arg(args, 2)?, unhex(&arg(args, 3)?)?).await?;
    let recipient = arg(args, 4)?;
    let channel = arg(args, 5)?;
    let sends: usize = arg(args, 6)?.parse()?;
    // Warm-up: sessions and the channel's sender key exist already; this warms caches.
    for _ in 0..3 {
        client
            .send(recipient.clone(), b"warm-up".to_vec(), None)
            .await?;
        client
            .send_group(channel.clone(), b"warm-up".to_vec(), None)
            .await?;
    }
    let body = vec![b'x'; 200];
    let mut direct = Vec::with_capacity(sends);
    for _ in 0..sends {
        let started = Instant::now();
        client.send(recipient.clone(), body.clone(), None).await?;
        direct.push(millis(started.elapsed()));
    }
    let mut group = Vec::with_capacity(sends);
    for _ in 0..sends {
        let started = Instant::now();
        client
            .send_group(channel.clone(), body.clone(), None)
            .await?;
        group.push(millis(started.elapsed()));
    }
    let (direct_median, direct_mean) = summary(&mut direct);
    let (group_median, group_mean) = summary(&mut group);
    Ok(format!(
        "{{\"direct\":{{\"median\":{direct_median:.3},\"mean\":{direct_mean:.3}}},\"group\":{{\"median\":{group_median:.3},\"mean\":{group_mean:.3}}}}}"
    ))
}

/// Counts message events; wakes the waiter once `target` arrived.
struct Counter {
    count: Mutex<usize>,
    done: Condvar,
}

impl EventListener for Counter {
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), ListenerError> {
        let messages = events
            .iter()
            .filter(|e| matches!(e.kind, AppEventKind::Message { .. }))
            .count();
        if let Ok(mut count) = self.count.lock() {
            *count += messages;
        }
        self.done.notify_all();
        Ok(())
    }
    fn on_connection_state(&self, _state: ConnectionState) {}
    fn on_error(&self, _error: CourierError) {}
}

async fn events(args: &[String]) -> Result<String, Failure> {
    let client = CourierClient::open(arg(args, 2)?, unhex(&arg(args, 3)?)?).await?;
    let messages: usize = arg(args, 4)?.parse()?;
    if arg(args, 5)? == "queued" {
        // Download, decrypt and store everything first: the loop below only delivers.
        client.receive_until_caught_up().await?;
    }
    let counter = Arc::new(Counter {
        count: Mutex::new(0),
        done: Condvar::new(),
    });
    let started = Instant::now();
    let handle = client.start_receiving(counter.clone())?;
    let waiter = counter.clone();
    let elapsed = tokio::task::spawn_blocking(move || -> Result<Duration, Failure> {
        let mut count = waiter.count.lock().map_err(|_| "poisoned")?;
        while *count < messages {
            count = waiter.done.wait(count).map_err(|_| "poisoned")?;
        }
        Ok(started.elapsed())
    })
    .await??;
    handle.cancel();
    handle.wait().await;
    #[allow(clippy::cast_precision_loss)] // thousands of events
    let rate = messages as f64 / elapsed.as_secs_f64();
    Ok(format!(
        "{{\"events\":{messages},\"ms\":{:.1},\"perSecond\":{rate:.0}}}",
        millis(elapsed)
    ))
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let line = match arg(&args, 1)?.as_str() {
        "fanout" => fanout(&args).await?,
        "events" => events(&args).await?,
        other => return Err(format!("unknown mode {other}").into()),
    };
    println!("{line}");
    Ok(())
}

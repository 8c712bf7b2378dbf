//! `courier-loadgen`: drives a real Courier server over HTTP and WebSocket and prints one
//! JSON report.
//!
//! Modes:
//! - `throughput`: U users x D devices online; messages from random devices to random
//!   other users, each with envelopes for every recipient device and the sender's other
//!   devices, C in flight (optionally paced to a rate). Reports messages/s, envelopes/s
//!   delivered and acknowledged, send-to-receive latency, lost and duplicated envelopes.
//! - `idle`: N device sockets (up to 100 devices per user) opened all at once, one task
//!   each (`--connect-concurrency` bounds them, to compare), and held open; reports the
//!   server's resident memory before and after setup, at its peak while the sockets open,
//!   with them open and after they close, the time until the last `caughtUp`, failures.
//! - `raw-tcp`: N plain TCP connections opened all at once, nothing sent on them (no
//!   accounts); reports the server's resident memory the same way and how many
//!   connections the server closed on its own.
//! - `storm`: a reconnect storm. N devices with K envelopes queued each open their
//!   sockets at the same instant and drain their backlogs, acknowledging; reports the
//!   time until every socket is open and every backlog drained, per-socket times to
//!   `caughtUp`, failures and the server's peak memory.
//! - `offline`: one device comes back to N queued envelopes; reports how long it takes
//!   to drain them.
//!
//! Against several processes of one deployment (`--spawn-server B --processes 2
//! --fabric nats`, or `--server URL --server URL`), each user's device sockets go to one
//! process (user `u` to process `u % N`), and a message goes to a user homed on the same
//! process but is sent through the next one: every envelope crosses processes, through
//! the fabric (`--no-cross` sends through the recipients' own process instead).
//!
//! `--spawn-server` starts the servers on a fresh database `courier_bench_<run>` and drops
//! it when the run ends, failed or not (`--keep-database` keeps it). Spawned servers get
//! `COURIER_RATE_LIMITS=off`, so that the load is not throttled, and, in `raw-tcp` mode,
//! `COURIER_HEADER_TIMEOUT_SECS=600`, so that silent connections stay open long enough to
//! measure (a server that does not know a variable ignores it). Resident memory is read
//! from /proc: the PIDs of spawned servers are known; pass `--server-pid` otherwise.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_possible_truncation
)]

mod idle;
mod procfs;
mod raw_tcp;
mod setup;
mod sockets;
mod spawn;
mod storm;

use std::collections::HashSet;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use courier_protocol::api::messages::{DeviceEnvelope, EnvelopeType, SendMessageRequest};
use courier_protocol::api::stream::{ControlFrame, ServerFrame, StreamItem};
use courier_protocol::keys::{decode_base64, encode_base64};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;
use setup::{Device, Population, Socket, User};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Throughput,
    Idle,
    RawTcp,
    Storm,
    Offline,
}

/// The fabric spawned servers use (`COURIER_FABRIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fabric {
    None,
    Postgres,
    Nats,
}

impl Fabric {
    fn name(self) -> &'static str {
        match self {
            Fabric::None => "none",
            Fabric::Postgres => "postgres",
            Fabric::Nats => "nats",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "courier-loadgen",
    about = "Load generator for a Courier server; prints a JSON report"
)]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Throughput)]
    mode: Mode,
    /// Base URL of a running server (ignored with --spawn-server). Repeat it for several
    /// processes sharing one database.
    #[arg(long = "server", default_value = "http://127.0.0.1:8080")]
    servers: Vec<String>,
    /// Base URL of a running server's private listener (its /metrics), one per
    /// `--server` (ignored with --spawn-server). Without it, counters read from the
    /// server are reported as unknown.
    #[arg(long = "metrics-server")]
    metrics_servers: Vec<String>,
    /// Start this courier-server binary on a fresh database for the run.
    #[arg(long)]
    spawn_server: Option<String>,
    /// Server processes to start with --spawn-server, all on the one fresh database.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    processes: u16,
    /// Fabric of the spawned servers (COURIER_FABRIC).
    #[arg(long, value_enum, default_value_t = Fabric::Postgres)]
    fabric: Fabric,
    /// With several processes, send each message through the process holding its
    /// recipients' sockets instead of the next one (so no envelope crosses: what two
    /// processes cost without the fabric on the delivery path).
    #[arg(long)]
    no_cross: bool,
    /// NATS server of the spawned servers with --fabric nats (COURIER_NATS_URL).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// PostgreSQL server for --spawn-server (a fresh database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// PID of the server, to read its memory (known with --spawn-server); repeat it for
    /// several processes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Keep the spawned servers' database after the run (it is dropped otherwise).
    #[arg(long)]
    keep_database: bool,
    /// Users (throughput).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Devices per user (throughput; idle and storm use up to 100 per user).
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Messages to send (throughput; 0 = until --duration).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// Seconds to send for (throughput).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Messages in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages per second to pace at (0 = as fast as the server takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Ciphertext bytes per envelope.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Sockets to open (idle, storm; raw-tcp: TCP connections).
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Sockets opening at once (idle; 0 = all of them).
    #[arg(long, default_value_t = 0)]
    connect_concurrency: usize,
    /// Seconds one socket may take to open and reach `caughtUp` (idle, storm) or to
    /// connect (raw-tcp) before it counts as failed.
    #[arg(long, default_value_t = 120)]
    connect_timeout: u64,
    /// Seconds to wait after closing the sockets before reading the server's memory
    /// (idle, raw-tcp).
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// Envelopes queued for each device before the storm (storm).
    #[arg(long, default_value_t = 1)]
    backlog_per_device: u64,
    /// Envelopes queued for the offline device (offline).
    #[arg(long, default_value_t = 10_000)]
    backlog: u64,
    /// Receive without acknowledging (to measure what acknowledgements cost the server;
    /// envelopes stay undelivered).
    #[arg(long)]
    no_ack: bool,
    /// Seconds to wait for stragglers after the last send.
    #[arg(long, default_value_t = 15)]
    drain_timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run_id = format!("{:08x}", rand::rngs::OsRng.next_u32());
    let Some(binary) = &args.spawn_server else {
        let trimmed = |urls: &[String]| {
            urls.iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        };
        let servers = Servers {
            bases: trimmed(&args.servers),
            metrics_bases: trimmed(&args.metrics_servers),
            cross: !args.no_cross,
        };
        let report = run(&args, servers, &args.server_pids, &run_id).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    };

    let mut spawned =
        spawn::SpawnedServers::new(binary, &args.postgres, &run_id, spawned_env(&args));
    let report = match spawned.start(args.processes).await {
        Ok(()) => {
            let pids: Vec<u32> = spawned.children.iter().map(Child::id).collect();
            let servers = Servers {
                bases: spawned.bases.clone(),
                metrics_bases: spawned.metrics_bases.clone(),
                cross: !args.no_cross,
            };
            run(&args, servers, &pids, &run_id).await
        }
        Err(error) => Err(error),
    };
    // Stopped and dropped whether the run worked or not.
    spawned.stop().await;
    if !args.keep_database
        && let Err(error) = spawned.drop_database().await
    {
        eprintln!("loadgen: could not drop the database: {error:#}");
    }
    let mut report = report?;
    report["fabric"] = json!(args.fabric.name());
    report["database"] = json!(spawned.database);
    report["databaseKept"] = json!(args.keep_database);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The environment of spawned servers, for this run's mode.
fn spawned_env(args: &Args) -> Vec<(&'static str, String)> {
    // A storm's users have 100 devices, as many as a server allows.
    let device_limit = match args.mode {
        Mode::Storm => 100,
        _ => args.devices.clamp(5, 100),
    };
    let mut env = vec![
        ("COURIER_DEVICE_LIMIT", device_limit.to_string()),
        ("COURIER_FABRIC", args.fabric.name().to_owned()),
        ("COURIER_NATS_URL", args.nats_url.clone()),
        ("COURIER_LOG", "warn".to_owned()),
        // Load generation must not be throttled.
        ("COURIER_RATE_LIMITS", "off".to_owned()),
    ];
    if args.mode == Mode::RawTcp {
        // Silent connections must outlive the measurement.
        env.push(("COURIER_HEADER_TIMEOUT_SECS", "600".to_owned()));
    }
    env
}

/// Runs the mode against `servers` (processes with these PIDs, when known).
async fn run(
    args: &Args,
    servers: Servers,
    server_pids: &[u32],
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(16))
        .build()?;
    let mut report = match args.mode {
        Mode::Throughput => throughput(args, &http, &servers, run_id).await?,
        Mode::Idle => idle::run(args, &http, &servers, run_id, server_pids).await?,
        Mode::RawTcp => raw_tcp::run(args, &servers, server_pids).await?,
        Mode::Storm => storm::run(args, &http, &servers, run_id, server_pids).await?,
        Mode::Offline => offline(args, &http, &servers, run_id).await?,
    };
    report["processes"] = json!(servers.bases.len());
    report["servers"] = json!(servers.bases);
    Ok(report)
}

/// The server processes under test (one deployment: one database) and how the load is
/// spread over them.
struct Servers {
    bases: Vec<String>,
    /// Their private listeners, for /metrics (empty: unknown).
    metrics_bases: Vec<String>,
    /// Messages go through the process after the recipients' (false: `--no-cross`).
    cross: bool,
}

impl Servers {
    /// The process holding user `user`'s device sockets.
    fn home(&self, user: usize) -> &str {
        &self.bases[user % self.bases.len()]
    }

    /// The process `user`'s messages are sent through: the one after its home, so that
    /// with several processes no envelope is pushed by the process that stored it (its
    /// home with `--no-cross`).
    fn sender(&self, user: usize) -> &str {
        &self.bases[(user + usize::from(self.cross)) % self.bases.len()]
    }

    /// A recipient for a message from `from`, other than `from`, homed on the same
    /// process (so every envelope, the sender's other devices' too, crosses processes).
    fn recipient(&self, users: usize, from: usize, rng: &mut impl Rng) -> usize {
        let n = self.bases.len();
        let home = from % n;
        let peers = (users - home).div_ceil(n);
        let mut k = rng.gen_range(0..peers - 1);
        if k >= from / n {
            k += 1;
        }
        home + k * n
    }

    /// Sums a counter over every process's /metrics (`None` if one does not answer).
    async fn counter(&self, http: &reqwest::Client, name: &str) -> Option<u64> {
        // Acks are written in batches; give the last batch a moment to land.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if self.metrics_bases.len() != self.bases.len() {
            return None;
        }
        let mut total = 0;
        for base in &self.metrics_bases {
            total += server_counter(http, base, name).await?;
        }
        Some(total)
    }
}

/// What every receiver reports.
#[derive(Default)]
struct Received {
    unique: u64,
    duplicates: u64,
    latency: Option<Histogram<u64>>,
}

/// Envelopes expected (counted as sends succeed) and received, over all devices.
struct Expectations {
    total: AtomicU64,
    received: AtomicU64,
}

/// Reads a device's socket: records each envelope (first 8 bytes of the payload: message
/// number; next 8: send time in µs since the run started), acknowledges cumulatively.
async fn receive(
    mut socket: Socket,
    start: Instant,
    expectations: Arc<Expectations>,
    ack: bool,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    let mut pending_ack = 0u64;
    let mut acked = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            frame = socket.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, Some(Ok(_))) { continue }
                    break;
                };
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Item(StreamItem::Envelope(envelope))) => {
                        let now = start.elapsed().as_micros() as u64;
                        let bytes = decode_base64(&envelope.ciphertext).unwrap_or_default();
                        if bytes.len() >= 16 {
                            let number = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
                            let sent = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or_default());
                            if seen.insert(number) {
                                expectations.received.fetch_add(1, Ordering::Relaxed);
                                if let Some(histogram) = latency.as_mut() {
                                    let _ = histogram.record(now.saturating_sub(sent).max(1));
                                }
                            } else {
                                duplicates += 1;
                            }
                        }
                        if ack {
                            pending_ack = envelope.seq;
                        }
                        if pending_ack - acked >= 16 {
                            let _ = socket.send(Message::Text(format!(r#"{{"type":"ack","upTo":{pending_ack}}}"#).into())).await;
                            acked = pending_ack;
                        }
                    }
                    // Delivered receipts for this device's own messages: acknowledged like
                    // envelopes, not counted.
                    Ok(ServerFrame::Item(other)) => {
                        if ack {
                            pending_ack = pending_ack.max(other.seq());
                        }
                    }
                    Ok(ServerFrame::Control(ControlFrame::CaughtUp { .. } | ControlFrame::Error { .. })) | Err(_) => {}
                }
            }
            _ = tick.tick() => {
                if pending_ack > acked {
                    let _ = socket.send(Message::Text(format!(r#"{{"type":"ack","upTo":{pending_ack}}}"#).into())).await;
                    acked = pending_ack;
                }
            }
            _ = stop.changed() => break,
        }
    }
    if pending_ack > acked {
        let _ = socket
            .send(Message::Text(
                format!(r#"{{"type":"ack","upTo":{pending_ack}}}"#).into(),
            ))
            .await;
    }
    let _ = socket.close(None).await;
    Received {
        unique: seen.len() as u64,
        duplicates,
        latency,
    }
}

/// Builds one message: envelopes for every device of `recipient` and every other device
/// of the sender, each carrying the message number and the send time.
fn message(
    number: u64,
    sender: &Device,
    sender_user: &User,
    recipient: &User,
    payload: usize,
    start: Instant,
) -> SendMessageRequest {
    let mut bytes = vec![0u8; payload.max(16)];
    rand::thread_rng().fill_bytes(&mut bytes[16..]);
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    bytes[8..16].copy_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
    let ciphertext = encode_base64(&bytes);
    let targets = recipient.devices.iter().chain(
        sender_user
            .devices
            .iter()
            .filter(|d| d.device_id != sender.device_id),
    );
    SendMessageRequest {
        protocol_version: Some(2),
        client_message_id: format!("lg-{number}"),
        recipient_user_id: recipient.user_id,
        device_envelopes: Some(
            targets
                .map(|device| DeviceEnvelope {
                    user_id: device.user_id,
                    device_id: device.device_id,
                    envelope_type: EnvelopeType::Normal,
                    ciphertext: ciphertext.clone(),
                })
                .collect(),
        ),
        encrypted_envelope: None,
    }
}

async fn throughput(
    args: &Args,
    http: &reqwest::Client,
    servers: &Servers,
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let processes = servers.bases.len();
    if args.users < 2 * processes {
        bail!("throughput needs at least 2 users per server process");
    }
    let setup_start = Instant::now();
    let users: Population = Arc::new(
        setup::populate(http, servers.home(0), run_id, args.users, args.devices, 8).await?,
    );
    let devices: Vec<(usize, Device)> = users
        .iter()
        .enumerate()
        .flat_map(|(u, user)| user.devices.iter().map(move |d| (u, d.clone())))
        .collect();
    let setup_seconds = setup_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let expectations = Arc::new(Expectations {
        total: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::with_capacity(devices.len());
    for (user, device) in &devices {
        let mut socket = setup::connect(servers.home(*user), device).await?;
        // Wait for the (empty) backlog so every socket is live before sending starts.
        while let Some(Ok(frame)) = socket.next().await {
            if let Message::Text(text) = frame {
                if text.contains("\"caughtUp\"") {
                    break;
                }
            }
        }
        receivers.push(tokio::spawn(receive(
            socket,
            start,
            expectations.clone(),
            !args.no_ack,
            stop_rx.clone(),
        )));
    }

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    eprintln!("loadgen: sending");
    let send_start = Instant::now();
    let deadline = send_start + Duration::from_secs(args.duration);
    let limit = if args.messages == 0 {
        u64::MAX
    } else {
        args.messages
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let (http, servers, users, expectations) = (
                http.clone(),
                Servers {
                    bases: servers.bases.clone(),
                    metrics_bases: servers.metrics_bases.clone(),
                    cross: servers.cross,
                },
                users.clone(),
                expectations.clone(),
            );
            let (sent, failed, next) = (sent.clone(), failed.clone(), next.clone());
            let (devices_per_user, payload, rate) = (args.devices, args.payload, args.rate);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64);
                loop {
                    let number = next.fetch_add(1, Ordering::Relaxed);
                    if number >= limit || Instant::now() >= deadline {
                        break;
                    }
                    if rate > 0 {
                        let at = send_start + Duration::from_secs_f64(number as f64 / rate as f64);
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let from = rng.gen_range(0..users.len());
                    let to = servers.recipient(users.len(), from, &mut rng);
                    let device = rng.gen_range(0..devices_per_user);
                    let sender = &users[from].devices[device];
                    let body = message(number, sender, &users[from], &users[to], payload, start);
                    let answer = http
                        .post(format!("{}/v1/messages", servers.sender(from)))
                        .bearer_auth(&sender.token)
                        .json(&body)
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().as_u16() == 201 => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            expectations
                                .total
                                .fetch_add(2 * devices_per_user as u64 - 1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!(
                                    "send failed: {} {}",
                                    response.status(),
                                    response.text().await.unwrap_or_default()
                                );
                            }
                        }
                        Err(error) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("send failed: {error}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let send_seconds = send_start.elapsed().as_secs_f64();

    // Wait for every expected envelope (bounded), then stop the receivers.
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    while expectations.received.load(Ordering::Relaxed) < expectations.total.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_seconds = send_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut unique, mut duplicates) = (0u64, 0u64);
    for receiver in receivers {
        let received = receiver.await?;
        unique += received.unique;
        duplicates += received.duplicates;
        if let Some(histogram) = received.latency {
            latency.add(histogram)?;
        }
    }
    let expected = expectations.total.load(Ordering::Relaxed);
    let messages = sent.load(Ordering::Relaxed);
    let acked = servers
        .counter(http, "courier_envelopes_delivered_total")
        .await;
    // Reads of a device stream from PostgreSQL instead of a live push (with several
    // processes, what each cross-process signal costs).
    let stream_reads = servers.counter(http, "courier_stream_reads_total").await;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "mode": "throughput",
        "routing": match (processes, servers.cross) {
            (1, _) => "one process",
            (_, true) => "sockets of user u on process u % N; sends through process (u + 1) % N to a user on process u % N",
            (_, false) => "sockets of user u on process u % N; sends through process u % N to a user on process u % N (no crossing)",
        },
        "users": args.users,
        "devicesPerUser": args.devices,
        "envelopesPerMessage": 2 * args.devices - 1,
        "concurrency": args.concurrency,
        "rateTarget": args.rate,
        "payloadBytes": args.payload,
        "acknowledged": !args.no_ack,
        "setupSeconds": setup_seconds,
        "sendSeconds": send_seconds,
        "messagesSent": messages,
        "sendsFailed": failed.load(Ordering::Relaxed),
        "messagesPerSecond": messages as f64 / send_seconds,
        "envelopesExpected": expected,
        "envelopesReceived": unique,
        "envelopesPerSecond": unique as f64 / send_seconds,
        "envelopesAckedByServer": acked,
        "streamReadsByServer": stream_reads,
        "lost": expected.saturating_sub(unique),
        "duplicated": duplicates,
        "drainSecondsAfterLastSend": delivered_seconds - send_seconds,
        "latencyMs": { "p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0, "samples": latency.len() },
    }))
}

/// Reads one counter from a server's /metrics (on its private listener).
async fn server_counter(http: &reqwest::Client, base: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

async fn offline(
    args: &Args,
    http: &reqwest::Client,
    servers: &Servers,
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
    // Queued through one process, drained from the other (with two).
    let (base, fill_base) = (servers.home(0), servers.sender(0));
    let users = setup::populate(http, base, run_id, 2, 1, 2).await?;
    let (sender_user, recipient) = (&users[0], &users[1]);
    let sender = &sender_user.devices[0];
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let fill_start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, base, next) = (http.clone(), fill_base.to_owned(), next.clone());
            let (sender, sender_user, recipient) =
                (sender.clone(), sender_user.clone(), recipient.clone());
            let (backlog, payload) = (args.backlog, args.payload);
            tokio::spawn(async move {
                loop {
                    let number = next.fetch_add(1, Ordering::Relaxed);
                    if number >= backlog {
                        return anyhow::Ok(());
                    }
                    let body = message(number, &sender, &sender_user, &recipient, payload, start);
                    let response = http
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(&sender.token)
                        .json(&body)
                        .send()
                        .await?;
                    if response.status().as_u16() != 201 {
                        bail!("queueing failed: {}", response.status());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let fill_seconds = fill_start.elapsed().as_secs_f64();

    let device = &recipient.devices[0];
    let drain_start = Instant::now();
    let mut socket = setup::connect(base, device).await?;
    let mut seen = HashSet::new();
    let mut duplicates = 0u64;
    let mut last_seq = 0;
    let mut in_order = true;
    let mut caught_up_after = None;
    while let Some(Ok(frame)) = socket.next().await {
        let Message::Text(text) = frame else { continue };
        match serde_json::from_str::<ServerFrame>(text.as_str())? {
            ServerFrame::Item(StreamItem::Envelope(envelope)) => {
                in_order &= envelope.seq > last_seq;
                last_seq = envelope.seq;
                let bytes = decode_base64(&envelope.ciphertext).unwrap_or_default();
                let number = u64::from_be_bytes(
                    bytes
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or_default(),
                );
                if !seen.insert(number) {
                    duplicates += 1;
                }
            }
            ServerFrame::Control(ControlFrame::CaughtUp { .. }) => {
                caught_up_after = Some(drain_start.elapsed().as_secs_f64());
                break;
            }
            ServerFrame::Control(ControlFrame::Error { .. }) => {}
            ServerFrame::Item(other) => last_seq = last_seq.max(other.seq()),
        }
    }
    let received_seconds = drain_start.elapsed().as_secs_f64();
    socket
        .send(Message::Text(
            format!(r#"{{"type":"ack","upTo":{last_seq}}}"#).into(),
        ))
        .await?;
    socket.close(None).await?;
    Ok(json!({
        "mode": "offline",
        "queued": args.backlog,
        "fillSeconds": fill_seconds,
        "received": seen.len(),
        "lost": args.backlog.saturating_sub(seen.len() as u64),
        "duplicated": duplicates,
        "inOrder": in_order,
        "drainSeconds": received_seconds,
        "caughtUpSeconds": caught_up_after,
        "envelopesPerSecond": seen.len() as f64 / received_seconds,
    }))
}

//! `storm` mode: a reconnect storm. N devices, each with a backlog of K envelopes, open
//! their sockets at the same instant (one task each, released by a barrier), read their
//! backlogs to `caughtUp` and acknowledge them; how long until every socket is open and
//! every backlog drained, per-socket times to `caughtUp`, failures, the server's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;
use tokio::sync::{Barrier, mpsc, watch};

use crate::idle::sockets_per_process;
use crate::procfs::{PeakRss, check_open_files, server_rss_mib};
use crate::setup::{self, Device, User};
use crate::sockets::{self, CaughtUp, Failures, Held};
use crate::{Args, Servers, message};

/// Wait after the storm drained before reading memory.
const DRAINED_SETTLE: Duration = Duration::from_secs(3);
/// Longest wait for the server to write the last acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub async fn run(
    args: &Args,
    http: &reqwest::Client,
    servers: &Servers,
    run_id: &str,
    server_pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let per_user = args.devices.clamp(1, 100);
    let backlog = args.backlog_per_device;
    check_open_files(
        args.sockets,
        &sockets_per_process(args.sockets, per_user, servers, server_pids),
    )?;

    let setup_start = Instant::now();
    let users = setup::populate(
        http,
        servers.home(0),
        run_id,
        args.sockets.div_ceil(per_user),
        per_user,
        8,
    )
    .await?;
    // The backlogs come from one single-device account outside the storm, so each message
    // puts exactly one envelope in each of its recipient's devices' streams.
    let sender_user = setup::populate(http, servers.home(0), &format!("{run_id}s"), 1, 1, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the sender account was not created"))?;
    let setup_seconds = setup_start.elapsed().as_secs_f64();
    let fill_start = Instant::now();
    fill(args, http, servers, &sender_user, &users, backlog).await?;
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    let delivered_before = servers
        .counter(http, "courier_envelopes_delivered_total")
        .await;

    let devices: Vec<(usize, Device)> = users
        .into_iter()
        .enumerate()
        .flat_map(|(u, user)| user.devices.into_iter().map(move |d| (u, d)))
        .take(args.sockets)
        .collect();
    let rss_before = server_rss_mib(server_pids);
    let timeout = Duration::from_secs(args.connect_timeout);
    let ready = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(devices.len() + 1));
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel::<anyhow::Result<CaughtUp>>();
    let (close_tx, close_rx) = watch::channel(false);
    let tasks: Vec<_> = devices
        .iter()
        .map(|(user, device)| {
            let (base, device) = (servers.home(*user).to_owned(), device.clone());
            let (ready, barrier) = (ready.clone(), barrier.clone());
            let (outcome_tx, close_rx) = (outcome_tx.clone(), close_rx.clone());
            tokio::spawn(async move {
                ready.fetch_add(1, Ordering::Relaxed);
                barrier.wait().await;
                sockets::open_report_and_hold(&base, &device, timeout, None, &outcome_tx, close_rx)
                    .await
            })
        })
        .collect();
    drop(outcome_tx);
    // Every task waits at the barrier before it is released (this task arrives last).
    while ready.load(Ordering::Relaxed) < devices.len() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peak = PeakRss::start(server_pids);
    let storm_start = Instant::now();
    barrier.wait().await;

    let mut failures = Failures::default();
    let (mut opened_seconds, mut caught_up_seconds) = (Vec::new(), Vec::new());
    let (mut received, mut short) = (0u64, 0usize);
    while let Some(outcome) = outcomes.recv().await {
        match outcome {
            Ok(caught_up) => {
                let since_start = |at: Instant| at.duration_since(storm_start).as_secs_f64();
                opened_seconds.push(since_start(caught_up.opened));
                caught_up_seconds.push(since_start(caught_up.caught_up));
                received += caught_up.envelopes;
                if caught_up.envelopes < backlog {
                    short += 1;
                }
            }
            Err(error) => failures.record(&error),
        }
        if caught_up_seconds.len() + failures.count() == devices.len() {
            break;
        }
    }
    let rss_peak = peak.finish();
    let caught_up = caught_up_seconds.len();
    if caught_up == 0 {
        let _ = close_tx.send(true);
        bail!("every socket failed: {}", failures.report());
    }
    let last = |seconds: &[f64]| seconds.iter().copied().fold(0.0, f64::max);
    let (all_open_seconds, drained_seconds) = (last(&opened_seconds), last(&caught_up_seconds));

    tokio::time::sleep(DRAINED_SETTLE).await;
    let rss_drained = server_rss_mib(server_pids);
    let connected = servers.counter(http, "courier_websocket_connections").await;
    // Acknowledgements are written in batches: wait (bounded) for the last one.
    let ack_deadline = Instant::now() + ACK_WAIT;
    let acked = loop {
        let delivered = servers
            .counter(http, "courier_envelopes_delivered_total")
            .await
            .zip(delivered_before)
            .map(|(now, before)| now.saturating_sub(before));
        if delivered.is_none_or(|delivered| delivered >= received) || Instant::now() > ack_deadline
        {
            break delivered;
        }
    };

    let _ = close_tx.send(true);
    let mut closed_by_server = 0;
    for task in tasks {
        if task.await? == Some(Held::ClosedByServer) {
            closed_by_server += 1;
        }
    }
    let expected = caught_up as u64 * backlog;
    Ok(json!({
        "mode": "storm",
        "sockets": devices.len(),
        "devicesPerUser": per_user,
        "backlogPerDevice": backlog,
        "setupSeconds": setup_seconds,
        "fillSeconds": fill_seconds,
        "caughtUp": caught_up,
        "failed": failures.report(),
        "allOpenSeconds": all_open_seconds,
        "drainedSeconds": drained_seconds,
        "openedSeconds": sockets::seconds_summary(opened_seconds),
        "caughtUpSeconds": sockets::seconds_summary(caught_up_seconds),
        "envelopesExpected": expected,
        "envelopesReceived": received,
        "socketsShortOfBacklog": short,
        "envelopesAckedByServer": acked,
        "serverConnections": connected,
        "closedByServerBeforeClose": closed_by_server,
        "serverRssMiB": {
            "beforeStorm": rss_before,
            "peakDuringStorm": rss_peak,
            "afterDrained": rss_drained,
        },
    }))
}

/// Queues `backlog` envelopes for every device of `users`: `backlog` messages from
/// `sender_user` to each user, `--concurrency` in flight.
async fn fill(
    args: &Args,
    http: &reqwest::Client,
    servers: &Servers,
    sender_user: &User,
    users: &[User],
    backlog: u64,
) -> anyhow::Result<()> {
    let sender = sender_user
        .devices
        .first()
        .ok_or_else(|| anyhow!("the sender has no device"))?;
    let total = users.len() as u64 * backlog;
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let worker = || async {
        loop {
            let number = next.fetch_add(1, Ordering::Relaxed);
            if number >= total {
                return anyhow::Ok(());
            }
            let recipient = &users[(number % users.len() as u64) as usize];
            let body = message(number, sender, sender_user, recipient, args.payload, start);
            // Sent to the recipient's home process: a backlog needs no fabric.
            let response = http
                .post(format!(
                    "{}/v1/messages",
                    servers.home((number % users.len() as u64) as usize)
                ))
                .bearer_auth(&sender.token)
                .json(&body)
                .send()
                .await?;
            if response.status().as_u16() != 201 {
                bail!(
                    "queueing a backlog message failed: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
        }
    };
    futures::future::try_join_all((0..args.concurrency.max(1)).map(|_| worker())).await?;
    Ok(())
}

//! `idle` mode: N device sockets opened at once (one task each; `--connect-concurrency`
//! bounds them for comparison) and held open; the server's resident memory before, while
//! and after they open, and after they close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::procfs::{PeakRss, check_open_files, server_open_files, server_rss_mib};
use crate::setup::{self, Device};
use crate::sockets::{self, CaughtUp, Failures, Held};
use crate::{Args, Servers};

/// Wait after the sockets opened before reading memory (allocator, first pings).
const OPEN_SETTLE: Duration = Duration::from_secs(3);

/// The devices of `sockets` sockets, `per_user` to a user, created on the server: each
/// with the index of its user (which decides its process).
pub async fn population(
    http: &reqwest::Client,
    servers: &Servers,
    run_id: &str,
    sockets: usize,
    per_user: usize,
) -> anyhow::Result<Vec<(usize, Device)>> {
    let users = sockets.div_ceil(per_user);
    let population = setup::populate(http, servers.home(0), run_id, users, per_user, 8).await?;
    Ok(population
        .into_iter()
        .enumerate()
        .flat_map(|(u, user)| user.devices.into_iter().map(move |d| (u, d)))
        .take(sockets)
        .collect())
}

/// Sockets each server process will hold for `sockets` devices, `per_user` to a user
/// (user `u` on process `u % N`), with its PID: for the file limit check.
pub fn sockets_per_process(
    sockets: usize,
    per_user: usize,
    servers: &Servers,
    server_pids: &[u32],
) -> Vec<(u32, usize)> {
    let mut counts = vec![0; servers.bases.len()];
    for socket in 0..sockets {
        counts[(socket / per_user) % servers.bases.len()] += 1;
    }
    server_pids.iter().copied().zip(counts).collect()
}

pub async fn run(
    args: &Args,
    http: &reqwest::Client,
    servers: &Servers,
    run_id: &str,
    server_pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let per_user = args.devices.clamp(1, 100);
    check_open_files(
        args.sockets,
        &sockets_per_process(args.sockets, per_user, servers, server_pids),
    )?;
    let setup_start = Instant::now();
    let rss_before = server_rss_mib(server_pids);
    let devices = population(http, servers, run_id, args.sockets, per_user).await?;
    let setup_seconds = setup_start.elapsed().as_secs_f64();
    let rss_after_setup = server_rss_mib(server_pids);

    let limit =
        (args.connect_concurrency > 0).then(|| Arc::new(Semaphore::new(args.connect_concurrency)));
    let timeout = Duration::from_secs(args.connect_timeout);
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel::<anyhow::Result<CaughtUp>>();
    let (close_tx, close_rx) = watch::channel(false);
    let peak = PeakRss::start(server_pids);
    let connect_start = Instant::now();
    let tasks: Vec<_> = devices
        .iter()
        .map(|(user, device)| {
            let (base, device) = (servers.home(*user).to_owned(), device.clone());
            let (limit, outcome_tx, close_rx) =
                (limit.clone(), outcome_tx.clone(), close_rx.clone());
            tokio::spawn(async move {
                let permit = match &limit {
                    Some(limit) => limit.acquire().await.ok(),
                    None => None,
                };
                sockets::open_report_and_hold(
                    &base,
                    &device,
                    timeout,
                    permit,
                    &outcome_tx,
                    close_rx,
                )
                .await
            })
        })
        .collect();
    drop(outcome_tx);

    let mut failures = Failures::default();
    let mut opened_seconds = Vec::with_capacity(devices.len());
    let mut caught_up_seconds = Vec::with_capacity(devices.len());
    while let Some(outcome) = outcomes.recv().await {
        match outcome {
            Ok(caught_up) => {
                let since_start = |at: Instant| at.duration_since(connect_start).as_secs_f64();
                opened_seconds.push(since_start(caught_up.opened));
                caught_up_seconds.push(since_start(caught_up.caught_up));
            }
            Err(error) => failures.record(&error),
        }
        if caught_up_seconds.len() + failures.count() == devices.len() {
            break;
        }
    }
    let connect_seconds = caught_up_seconds.iter().copied().fold(0.0, f64::max);
    let rss_peak = peak.finish();
    let open = caught_up_seconds.len();
    if open == 0 {
        let _ = close_tx.send(true);
        bail!("every socket failed to open: {}", failures.report());
    }

    tokio::time::sleep(OPEN_SETTLE).await;
    let rss_open = server_rss_mib(server_pids);
    let files_open = server_open_files(server_pids);
    let connected = servers.counter(http, "courier_websocket_connections").await;

    let _ = close_tx.send(true);
    let mut closed_by_server = 0;
    for task in tasks {
        if task.await? == Some(Held::ClosedByServer) {
            closed_by_server += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let rss_after_close = server_rss_mib(server_pids);
    let files_after_close = server_open_files(server_pids);
    let connected_after_close = servers.counter(http, "courier_websocket_connections").await;

    Ok(json!({
        "mode": "idle",
        "sockets": devices.len(),
        "devicesPerUser": per_user,
        "connectConcurrency": if args.connect_concurrency == 0 { json!("unbounded") } else { json!(args.connect_concurrency) },
        "socketsOpen": open,
        "failed": failures.report(),
        "closedByServerBeforeClose": closed_by_server,
        "serverConnections": connected,
        "serverConnectionsAfterClose": connected_after_close,
        "setupSeconds": setup_seconds,
        "connectSeconds": connect_seconds,
        "openedSeconds": sockets::seconds_summary(opened_seconds),
        "caughtUpSeconds": sockets::seconds_summary(caught_up_seconds),
        "serverOpenFiles": { "withSocketsOpen": files_open, "afterClose": files_after_close },
        "settleSeconds": args.settle_seconds,
        "serverRssMiB": {
            "beforeSetup": rss_before,
            "afterSetup": rss_after_setup,
            "peakWhileOpening": rss_peak,
            "withSocketsOpen": rss_open,
            "afterClose": rss_after_close,
        },
    }))
}

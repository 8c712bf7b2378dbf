//! `raw-tcp` mode: N plain TCP connections to the server opened at once, nothing sent on
//! them (what silent or slow clients cost before any request is read); the server's
//! resident memory before, while and after they open, and after they close, and how many
//! the server closed on its own.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;

use crate::procfs::{PeakRss, check_open_files, server_open_files, server_rss_mib};
use crate::sockets::Failures;
use crate::{Args, Servers};

/// Wait after the connections opened before reading memory.
const OPEN_SETTLE: Duration = Duration::from_secs(3);

/// What the server did with a silent connection, as a non-blocking peek finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peeked {
    /// Nothing to read: still open.
    Open,
    /// The server wrote something (an error response, say).
    Answered,
    /// End of stream or reset: the server closed it.
    Closed,
}

fn peek(stream: &std::net::TcpStream) -> Peeked {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => Peeked::Closed,
        Ok(_) => Peeked::Answered,
        Err(error) if error.kind() == ErrorKind::WouldBlock => Peeked::Open,
        Err(_) => Peeked::Closed,
    }
}

/// The TCP address of a server's base URL.
fn address(base: &str) -> anyhow::Result<SocketAddr> {
    let url = reqwest::Url::parse(base).with_context(|| format!("parsing {base}"))?;
    url.socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .with_context(|| format!("{base} has no address"))
}

pub async fn run(
    args: &Args,
    servers: &Servers,
    server_pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let addresses = servers
        .bases
        .iter()
        .map(|base| address(base))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Connection i goes to process i % N.
    let per_process = server_pids
        .iter()
        .enumerate()
        .map(|(index, pid)| {
            let share = (args.sockets + addresses.len() - 1 - index) / addresses.len();
            (*pid, share)
        })
        .collect::<Vec<_>>();
    check_open_files(args.sockets, &per_process)?;

    let rss_before = server_rss_mib(server_pids);
    let files_before = server_open_files(server_pids);
    let timeout = Duration::from_secs(args.connect_timeout);
    let peak = PeakRss::start(server_pids);
    let open_start = Instant::now();
    let tasks: Vec<_> = (0..args.sockets)
        .map(|index| {
            let address = addresses[index % addresses.len()];
            tokio::spawn(async move {
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::other(format!(
                            "no connection within {}s",
                            timeout.as_secs()
                        )))
                    })?;
                // Held as std streams: `peek` below is then one plain non-blocking syscall.
                let stream = stream.into_std()?;
                anyhow::Ok((stream, Instant::now()))
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(args.sockets);
    let mut failures = Failures::default();
    let mut open_seconds = 0.0f64;
    for task in tasks {
        match task
            .await
            .map_err(|error| anyhow!(error))
            .and_then(|opened| opened)
        {
            Ok((stream, opened)) => {
                open_seconds = open_seconds.max(opened.duration_since(open_start).as_secs_f64());
                streams.push(stream);
            }
            Err(error) => failures.record(&error),
        }
    }
    let rss_peak = peak.finish();
    if streams.is_empty() {
        bail!("every connection failed: {}", failures.report());
    }

    tokio::time::sleep(OPEN_SETTLE).await;
    let rss_open = server_rss_mib(server_pids);
    let files_open = server_open_files(server_pids);
    let (mut open, mut answered, mut closed) = (0usize, 0usize, 0usize);
    for stream in &streams {
        match peek(stream) {
            Peeked::Open => open += 1,
            Peeked::Answered => answered += 1,
            Peeked::Closed => closed += 1,
        }
    }

    let opened = streams.len();
    drop(streams);
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let rss_after_close = server_rss_mib(server_pids);
    let files_after_close = server_open_files(server_pids);

    Ok(json!({
        "mode": "raw-tcp",
        "connections": args.sockets,
        "opened": opened,
        "failed": failures.report(),
        "openSeconds": open_seconds,
        "atWithConnectionsOpen": {
            "stillOpen": open,
            "closedByServer": closed,
            "answeredByServer": answered,
        },
        // A connection the client sees as open may never have been accepted (its
        // handshake completed by a SYN cookie while the accept queue was full).
        "acceptedByServer": files_open.zip(files_before).map(|(open, before)| open.saturating_sub(before)),
        "serverOpenFiles": {
            "before": files_before,
            "withConnectionsOpen": files_open,
            "afterClose": files_after_close,
        },
        "settleSeconds": args.settle_seconds,
        "serverRssMiB": {
            "before": rss_before,
            "peakWhileOpening": rss_peak,
            "withConnectionsOpen": rss_open,
            "afterClose": rss_after_close,
        },
    }))
}

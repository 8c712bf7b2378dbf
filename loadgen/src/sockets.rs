//! One device socket's life in the connection modes (`idle`, `storm`): open it, read its
//! backlog to `caughtUp` acknowledging like a client, hold it open (answering pings) until
//! told to close, close it politely. Also the tallies those modes report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_protocol::api::stream::{ClientFrame, ControlFrame, ServerFrame, StreamItem};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::{self, Device, Socket};

/// Items acknowledged per ack frame while catching up (and at `caughtUp`).
const ACK_EVERY: u64 = 16;
/// How long a polite close waits for the server's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// When a socket opened and caught up, and the envelopes its backlog held.
#[derive(Debug, Clone, Copy)]
pub struct CaughtUp {
    /// The upgrade was answered.
    pub opened: Instant,
    /// `caughtUp` arrived.
    pub caught_up: Instant,
    /// Envelopes received before `caughtUp`.
    pub envelopes: u64,
}

/// Opens `device`'s socket and reads its backlog up to `caughtUp`, acknowledging it.
pub async fn open_and_catch_up(base: &str, device: &Device) -> anyhow::Result<(Socket, CaughtUp)> {
    let mut socket = setup::connect(base, device).await?;
    let opened = Instant::now();
    let (mut envelopes, mut last_seq, mut acked) = (0u64, 0u64, 0u64);
    loop {
        let frame = socket
            .next()
            .await
            .context("the server closed the socket before caughtUp")??;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(frame) => {
                bail!(
                    "the server closed the socket before caughtUp ({})",
                    frame.map_or_else(|| "no code".to_owned(), |f| u16::from(f.code).to_string())
                );
            }
            _ => continue,
        };
        match serde_json::from_str::<ServerFrame>(text.as_str()) {
            Ok(ServerFrame::Item(item)) => {
                if matches!(item, StreamItem::Envelope(_)) {
                    envelopes += 1;
                }
                last_seq = last_seq.max(item.seq());
                if last_seq - acked >= ACK_EVERY {
                    ack(&mut socket, last_seq).await?;
                    acked = last_seq;
                }
            }
            Ok(ServerFrame::Control(ControlFrame::CaughtUp { .. })) => {
                let caught_up = Instant::now();
                if last_seq > acked {
                    ack(&mut socket, last_seq).await?;
                }
                return Ok((
                    socket,
                    CaughtUp {
                        opened,
                        caught_up,
                        envelopes,
                    },
                ));
            }
            Ok(ServerFrame::Control(ControlFrame::Error { code, message })) => {
                bail!("the server refused a frame: {code}: {message}");
            }
            Err(error) => bail!("unreadable frame from the server: {error}"),
        }
    }
}

/// Acknowledges every item up to `seq`.
async fn ack(socket: &mut Socket, seq: u64) -> anyhow::Result<()> {
    let frame = serde_json::to_string(&ClientFrame::Ack {
        up_to: Some(seq),
        seqs: Vec::new(),
    })?;
    socket.send(Message::Text(frame.into())).await?;
    Ok(())
}

/// How a held socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Open until we closed it.
    ClosedByUs,
    /// The server closed it (or it failed) first.
    ClosedByServer,
}

/// Opens `device`'s socket and reads to `caughtUp` within `timeout` (holding
/// `opening_permit` only that long), reports how that went on `outcomes`, then holds an
/// opened socket until `close` (what `hold` returns).
pub async fn open_report_and_hold(
    base: &str,
    device: &Device,
    timeout: Duration,
    opening_permit: Option<tokio::sync::SemaphorePermit<'_>>,
    outcomes: &tokio::sync::mpsc::UnboundedSender<anyhow::Result<CaughtUp>>,
    close: watch::Receiver<bool>,
) -> Option<Held> {
    let opened = tokio::time::timeout(timeout, open_and_catch_up(base, device))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no caughtUp within {}s", timeout.as_secs())));
    drop(opening_permit);
    match opened {
        Ok((socket, caught_up)) => {
            let _ = outcomes.send(Ok(caught_up));
            Some(hold(socket, close).await)
        }
        Err(error) => {
            let _ = outcomes.send(Err(error));
            None
        }
    }
}

/// Holds a caught-up socket open, acknowledging anything pushed and answering pings (the
/// server closes a silent socket after a minute), until `close` turns true; then closes
/// it politely, waiting briefly for the server's answer.
pub async fn hold(mut socket: Socket, mut close: watch::Receiver<bool>) -> Held {
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ServerFrame::Item(item)) = serde_json::from_str::<ServerFrame>(text.as_str()) {
                        let _ = ack(&mut socket, item.seq()).await;
                    }
                }
                // tungstenite queues the pong; send it now rather than with the next write.
                Some(Ok(Message::Ping(_))) => {
                    let _ = socket.flush().await;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                    return Held::ClosedByServer;
                }
                Some(Ok(_)) => {}
            },
            () = closing(&mut close) => break,
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = socket.close(None).await;
        // Read to the end: the server's close answer completes the handshake.
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    Held::ClosedByUs
}

/// Resolves when `close` turns true or its sender is gone.
async fn closing(close: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held in `select!`.
    let _ = close.wait_for(|close| *close).await;
}

/// Most distinct error messages kept; further ones are counted as "other".
const MAX_ERROR_KINDS: usize = 10;

/// Failed connections, counted by error message.
#[derive(Debug, Default)]
pub struct Failures {
    count: usize,
    by_error: BTreeMap<String, usize>,
}

impl Failures {
    pub fn record(&mut self, error: &anyhow::Error) {
        self.count += 1;
        let message = format!("{error:#}");
        let key = if self.by_error.contains_key(&message) || self.by_error.len() < MAX_ERROR_KINDS {
            message
        } else {
            "other".to_owned()
        };
        *self.by_error.entry(key).or_default() += 1;
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn report(&self) -> serde_json::Value {
        json!({ "count": self.count, "byError": self.by_error })
    }
}

/// p50, p99 and max of durations in seconds (nulls when there are none).
pub fn seconds_summary(mut seconds: Vec<f64>) -> serde_json::Value {
    seconds.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len().max(1));
        seconds.get(rank - 1).copied()
    };
    json!({ "p50": at(0.50), "p99": at(0.99), "max": seconds.last(), "count": seconds.len() })
}

//! The Rust side of scripts/bench-bindings.sh: the same measurements as the Kotlin and
//! Python benchmark programs, through `courier_sdk::app` directly (no FFI), against the
//! same server in the same run.
//!
//! ```text
//! bench prepare DIR MESSAGES   accounts, stores, a channel of 10 devices, queued messages
//! bench run DIR                 the Rust measurements (prints RESULT lines)
//! ```
//!
//! `prepare` writes DIR/bench.env (key=value lines: store paths, hex keys, IDs) that the
//! three programs read:
//! - for each language a sender with 3 devices (`send-LANGUAGE` is the one that sends), in
//!   a channel (`channel.LANGUAGE`) with users of 3, 3 and 1 devices: one group message
//!   goes to 9 other devices, over sessions the warm-up opened. One sender per language,
//!   so the three programs can stay open side by side between their rounds;
//! - for each language a recipient device with MESSAGES direct messages waiting at the
//!   server (`cold`: the loop downloads, decrypts, stores and delivers), and one whose
//!   MESSAGES events are already stored (`queued`: the loop only delivers).

// A benchmark program: its output is what it is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use courier_sdk::app::{
    AppEvent, AppEventKind, ConnectionState, CourierClient, CourierError, EventListener,
    ListenerError,
};

const PASSWORD: &str = "correct horse battery staple";
const LANGUAGES: [&str; 3] = ["rust", "kotlin", "python"];
/// Group sends measured (after the warm-up).
const SENDS: usize = 50;
/// A guard against a hang, not a timing check.
const GUARD: Duration = Duration::from_secs(600);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| anyhow!("bad hex"))
        })
        .collect()
}

fn new_key() -> Vec<u8> {
    (0..32).map(|_| rand::random::<u8>()).collect()
}

struct Setup {
    server: String,
    dir: PathBuf,
    tag: String,
    env: BTreeMap<String, String>,
}

impl Setup {
    fn store(&mut self, name: &str) -> (String, Vec<u8>) {
        let path = self.dir.join(format!("{name}.db")).display().to_string();
        let key = new_key();
        self.env.insert(format!("{name}.path"), path.clone());
        self.env.insert(format!("{name}.key"), hex(&key));
        (path, key)
    }

    async fn register(&mut self, user: &str, device: &str) -> Result<CourierClient> {
        let (path, key) = self.store(device);
        let username = format!("{user}-{}", self.tag);
        Ok(CourierClient::register(
            self.server.clone(),
            path,
            key,
            username,
            PASSWORD.to_owned(),
            device.to_owned(),
            None,
        )
        .await?)
    }

    async fn login(&mut self, user: &str, device: &str) -> Result<CourierClient> {
        let (path, key) = self.store(device);
        let username = format!("{user}-{}", self.tag);
        Ok(CourierClient::login(
            self.server.clone(),
            path,
            key,
            username,
            PASSWORD.to_owned(),
            device.to_owned(),
        )
        .await?)
    }
}

async fn prepare(dir: &Path, messages: usize) -> Result<()> {
    let server = std::env::var("COURIER_TEST_SERVER").context("COURIER_TEST_SERVER")?;
    std::fs::create_dir_all(dir)?;
    let mut setup = Setup {
        server,
        dir: dir.to_owned(),
        tag: hex(&new_key()[..4]),
        env: BTreeMap::new(),
    };

    // The channels: recipients ra (3 devices), rb (3), rc (1), and per language a sender
    // with 3 devices.
    let mut others = Vec::new();
    let mut members = Vec::new();
    for (user, devices) in [("ra", 3), ("rb", 3), ("rc", 1)] {
        let first = setup.register(user, &format!("{user}1")).await?;
        members.push(first.own_device().user_id);
        others.push(first);
        for n in 2..=devices {
            others.push(setup.login(user, &format!("{user}{n}")).await?);
        }
    }
    let mut senders = Vec::new();
    for language in LANGUAGES {
        let user = format!("sender-{language}");
        let sender = setup.register(&user, &format!("send-{language}")).await?;
        for n in 2..=3 {
            others.push(setup.login(&user, &format!("{user}{n}")).await?);
        }
        let channel = sender.create_channel(members.clone()).await?;
        if channel.devices.len() != 10 {
            bail!("the channel has {} devices, not 10", channel.devices.len());
        }
        setup
            .env
            .insert(format!("channel.{language}"), channel.channel_id);
        senders.push(sender);
    }

    // Recipients of the event benchmarks: one user per mode, a device per language.
    let source = setup.register("source", "source1").await?;
    let mut recipients = Vec::new();
    for mode in ["cold", "queued"] {
        for (n, language) in LANGUAGES.iter().enumerate() {
            let device = format!("{mode}-{language}");
            let client = if n == 0 {
                setup.register(mode, &device).await?
            } else {
                setup.login(mode, &device).await?
            };
            recipients.push((mode, client));
        }
    }
    let cold_user = recipients[0].1.own_device().user_id;
    let queued_user = recipients[3].1.own_device().user_id;
    let started = Instant::now();
    for n in 0..messages {
        let body = format!("message {n}").into_bytes();
        source.send(cold_user.clone(), body.clone(), None).await?;
        source.send(queued_user.clone(), body, None).await?;
    }
    eprintln!(
        "bench: queued {messages} messages for 6 devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (mode, client) in &recipients {
        if *mode == "queued" {
            client.receive_until_caught_up().await?;
        }
    }
    setup
        .env
        .insert("messages".to_owned(), messages.to_string());

    let mut text = String::new();
    for (key, value) in &setup.env {
        let _ = writeln!(text, "{key}={value}");
    }
    std::fs::write(dir.join("bench.env"), text)?;
    drop((senders, others, source, recipients));
    Ok(())
}

fn read_env(dir: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("bench.env"))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect())
}

fn get<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Result<&'a String> {
    env.get(key)
        .ok_or_else(|| anyhow!("bench.env has no {key}"))
}

async fn open(env: &BTreeMap<String, String>, name: &str) -> Result<CourierClient> {
    let path = get(env, &format!("{name}.path"))?.clone();
    let key = unhex(get(env, &format!("{name}.key"))?)?;
    Ok(CourierClient::open(path, key).await?)
}

/// Counts message events; wakes the benchmark when `target` arrived.
#[derive(Debug, Default)]
struct Counter {
    state: Mutex<(usize, Option<Instant>)>,
    arrived: Condvar,
    target: usize,
}

impl EventListener for Counter {
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), ListenerError> {
        let messages = events
            .iter()
            .filter(|event| matches!(event.kind, AppEventKind::Message { .. }))
            .count();
        let mut state = self.state.lock().map_err(|_| ListenerError {
            message: "poisoned".to_owned(),
        })?;
        state.0 += messages;
        if state.0 >= self.target && state.1.is_none() {
            state.1 = Some(Instant::now());
            self.arrived.notify_all();
        }
        Ok(())
    }

    fn on_connection_state(&self, _state: ConnectionState) {}

    fn on_error(&self, error: CourierError) {
        eprintln!("bench: the loop reported {error}");
    }
}

/// Starts the loop on a stored device and returns events/s until `messages` arrived.
async fn events_per_second(client: &CourierClient, messages: usize) -> Result<f64> {
    let counter = Arc::new(Counter {
        target: messages,
        ..Counter::default()
    });
    let started = Instant::now();
    let handle = client.start_receiving(counter.clone())?;
    let waiting = counter.clone();
    let finished = tokio::task::spawn_blocking(move || -> Result<Instant> {
        let state = waiting.state.lock().map_err(|_| anyhow!("poisoned"))?;
        let (state, timeout) = waiting
            .arrived
            .wait_timeout_while(state, GUARD, |state| state.1.is_none())
            .map_err(|_| anyhow!("poisoned"))?;
        if timeout.timed_out() {
            bail!(
                "gave up after {GUARD:?} with {} of {messages} events",
                state.0
            );
        }
        state.1.ok_or_else(|| anyhow!("no end"))
    })
    .await??;
    handle.cancel();
    handle.wait().await;
    let seconds = finished.duration_since(started).as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    Ok(messages as f64 / seconds)
}

/// What one run measures (`BENCH_PART`): the sends, or the events per second.
fn part() -> Result<String> {
    let part = std::env::var("BENCH_PART").context("BENCH_PART (send9 or events)")?;
    match part.as_str() {
        "send9" | "events" => Ok(part),
        _ => bail!("BENCH_PART must be send9 or events, not {part:?}"),
    }
}

async fn run(dir: &Path) -> Result<()> {
    let env = read_env(dir)?;
    if part()? == "events" {
        let messages: usize = get(&env, "messages")?.parse()?;
        for mode in ["cold", "queued"] {
            let client = open(&env, &format!("{mode}-rust")).await?;
            let rate = events_per_second(&client, messages).await?;
            println!("RESULT rust events_{mode}_per_s {rate:.0}");
        }
        return Ok(());
    }

    let sender = open(&env, "send-rust").await?;
    let channel = get(&env, "channel.rust")?.clone();
    // Warm-up, as many sends as in Kotlin and Python (BENCH_WARMUP): the sessions and
    // the sender key exist after the first.
    let warm_up: usize = std::env::var("BENCH_WARMUP")?.parse()?;
    for _ in 0..warm_up {
        sender
            .send_group(channel.clone(), b"warm-up rust".to_vec(), None)
            .await?;
    }
    // Then one round of SENDS sends per line on stdin (bindings/ffi/bench/rounds.py).
    println!("READY");
    let mut round = 0;
    while tokio::task::spawn_blocking(read_command).await?? {
        let mut times = Vec::with_capacity(SENDS);
        for _ in 0..SENDS {
            let started = Instant::now();
            sender
                .send_group(channel.clone(), format!("rust {round}").into_bytes(), None)
                .await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        round += 1;
        times.sort_by(f64::total_cmp);
        #[allow(clippy::cast_precision_loss)] // SENDS is small
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!("RESULT rust send9_mean_ms {mean:.2}");
        println!("RESULT rust send9_p50_ms {:.2}", times[times.len() / 2]);
        println!("DONE");
    }
    Ok(())
}

/// Waits for the next line on stdin: `true` for another round, `false` at its end.
fn read_command() -> Result<bool> {
    let mut line = String::new();
    Ok(std::io::stdin().read_line(&mut line)? > 0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("prepare") => {
            let dir = args.get(2).context("bench prepare DIR MESSAGES")?;
            let messages = args.get(3).map_or(Ok(5000), |n| n.parse())?;
            prepare(Path::new(dir), messages).await
        }
        Some("run") => run(Path::new(args.get(2).context("bench run DIR")?)).await,
        _ => bail!("usage: bench prepare DIR MESSAGES | bench run DIR"),
    }
}

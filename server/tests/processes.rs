//! Two real `courier-server` processes on one database, for each fabric: a device
//! connected to one of them is served as if there were one server. Each test spawns the
//! binary twice (port 0, JSON logs, the bound address read from its "Courier is
//! listening" line) and talks to both over HTTP and WebSocket.
//!
//! Every scenario runs twice: on the database directly, and as on Fly.io, with queries
//! through a real PgBouncer in transaction mode (`common/pgbouncer.rs`) and LISTEN on
//! the direct URL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/image.rs"]
mod image;
#[path = "common/pgbouncer.rs"]
mod pgbouncer;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PASSWORD, Received, TestDevice, assert_error, envelope_text, v2_body};
use courier_protocol::api::accounts::{CreateAccountResponse, LoginRequest, LoginResponse};
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::stream::{ControlFrame, ServerFrame, StreamItem, close_code};
use courier_protocol::{DeviceId, UserId};
use courier_server::MIGRATOR;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

/// How long a process may take to start (the first build of a database migrates it).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for any one expected event (a bound, not a timing assertion).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Fabric {
    Postgres,
    Nats,
}

/// The NATS server the NATS tests use: COURIER_NATS_URL if set, else the local default.
fn nats_url() -> String {
    std::env::var("COURIER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The NATS server's `host:port`.
fn nats_address() -> String {
    let url = url::Url::parse(&nats_url()).expect("COURIER_NATS_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(4222)
    )
}

/// Fails (never skips) when NATS does not answer, saying what to do.
async fn require_nats() {
    let address = nats_address();
    let reached = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await;
    if !matches!(reached, Ok(Ok(_))) {
        panic!(
            "NATS is not reachable at {address} ({reached:?}): the NATS fabric tests need a \
             NATS server. Run scripts/ensure-nats.sh (installs and starts one) or set \
             COURIER_NATS_URL."
        );
    }
}

/// How the processes reach the test's database.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Every connection straight to PostgreSQL.
    Direct,
    /// Queries through PgBouncer in transaction mode, LISTEN on the direct URL.
    PgBouncer,
}

/// The database URLs of a scenario's processes (and the PgBouncer they go through).
struct Databases {
    url: String,
    direct_url: Option<String>,
    /// Kept running for the test.
    _bouncer: Option<pgbouncer::PgBouncer>,
}

impl Databases {
    fn new(pool: &PgPool, route: Route) -> Self {
        let direct = database_url(&pool.connect_options());
        match route {
            Route::Direct => Self {
                url: direct,
                direct_url: None,
                _bouncer: None,
            },
            Route::PgBouncer => {
                let bouncer = pgbouncer::PgBouncer::start(&pgbouncer::Upstream::shared(), None);
                let name = pool.connect_options().get_database().unwrap().to_owned();
                Self {
                    url: bouncer.url(&name),
                    direct_url: Some(direct),
                    _bouncer: Some(bouncer),
                }
            }
        }
    }

    fn setup(&self, fabric: Fabric) -> Setup {
        let mut setup = Setup::new(&self.url, fabric);
        if let Some(direct) = &self.direct_url {
            setup.env("COURIER_DATABASE_DIRECT_URL", direct);
        }
        setup
    }
}

/// How a child process is started: its environment (applied over the defaults below),
/// its arguments and, for a test run as root, the user it runs as.
struct Setup {
    env: Vec<(String, String)>,
    args: Vec<String>,
    /// User and group.
    user: Option<(u32, u32)>,
}

impl Setup {
    fn new(database_url: &str, fabric: Fabric) -> Self {
        let mut setup = Self {
            env: Vec::new(),
            args: Vec::new(),
            user: None,
        };
        setup
            .env("COURIER_DATABASE_URL", database_url)
            .env(
                "COURIER_FABRIC",
                match fabric {
                    Fabric::Postgres => "postgres",
                    Fabric::Nats => "nats",
                },
            )
            .env("COURIER_NATS_URL", &nats_url());
        setup
    }

    fn env(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `binary`, run as the setup's user (through `setpriv`) if it names one.
    fn command(&self, binary: &str) -> Command {
        match self.user {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        }
    }
}

/// The URL of the test's own database (the one `#[sqlx::test]` created), for the children.
fn database_url(options: &PgConnectOptions) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(
        options
            .get_database()
            .expect("the test database has a name"),
    );
    url.to_string()
}

/// A `courier-server` child process. Stopped (SIGTERM, then SIGKILL) when dropped, also
/// when the test panics; its output is printed then, to explain the failure.
struct Process {
    name: &'static str,
    child: Child,
    base: String,
    http: reqwest::Client,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    async fn spawn(name: &'static str, setup: &Setup) -> Self {
        Self::spawn_binary(name, env!("CARGO_BIN_EXE_courier-server"), setup).await
    }

    async fn spawn_binary(name: &'static str, binary: &str, setup: &Setup) -> Self {
        let mut command = setup.command(binary);
        command
            .env("COURIER_LISTEN", "127.0.0.1:0")
            .env("COURIER_ADMIN_LISTEN", "127.0.0.1:0")
            .env("COURIER_LOG_FORMAT", "json")
            .env("COURIER_LOG", "info,sqlx=warn")
            .envs(setup.env.iter().map(|(name, value)| (name, value)))
            .args(&setup.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the server binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = oneshot::channel();
        // Both pipes are read to the end, so a chatty child never blocks on a full pipe.
        read_lines(name, child.stdout.take(), output.clone(), Some(address_tx));
        read_lines(name, child.stderr.take(), output.clone(), None);
        let mut process = Self {
            name,
            child,
            base: String::new(),
            http: reqwest::Client::new(),
            output,
        };
        let address = tokio::time::timeout(START_TIMEOUT, address_rx).await;
        let Ok(Ok(address)) = address else {
            process.fail("did not log the address it listens on");
        };
        process.base = format!("http://{address}");
        // The listener is bound before the fabric starts: ready means serving.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = process
                .http
                .get(process.url("/readyz"))
                .timeout(START_TIMEOUT)
                .send()
                .await;
            match ready {
                Ok(response) if response.status().is_success() => break,
                _ if Instant::now() > deadline => process.fail("did not become ready"),
                // Not serving yet, or it exited (checked here): ask again.
                _ => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        process.fail(&format!("exited ({status}) before it was ready"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        process
    }

    fn fail(&self, what: &str) -> ! {
        let output = self.output.lock().unwrap().join("\n");
        panic!("server process {} {what}; its output:\n{output}", self.name);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A field of the first JSON log line with `message`, waiting a little for the
    /// output reader to get that far.
    async fn logged(&self, message: &str, field: &str) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let found = self.output.lock().unwrap().iter().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                let fields = entry.get("fields")?;
                (fields.get("message")? == message)
                    .then(|| fields.get(field)?.as_str().map(str::to_owned))
                    .flatten()
            });
            if let Some(found) = found {
                return found;
            }
            if Instant::now() > deadline {
                self.fail(&format!("did not log {message:?} with {field}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + courier_server::SHUTDOWN_BUDGET + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.fail("did not stop within its shutdown budget");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        common::read(request.send().await.unwrap()).await
    }

    async fn create_account(&self, username: &str) -> CreateAccountResponse {
        let body = json!({ "username": username, "password": PASSWORD });
        let (status, json) = self
            .call(Method::POST, "/v1/accounts", None, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        serde_json::from_value(json).unwrap()
    }

    /// Logs in as a new device and publishes its identity keys.
    async fn new_published_device(&self, username: &str) -> TestDevice {
        let login = LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device_id: DeviceId::NEW,
            device_name: None,
            replace_device_id: None,
        };
        let (status, json) = self
            .call(
                Method::POST,
                "/v1/login",
                None,
                Some(serde_json::to_value(login).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let device = TestDevice::from_login(serde_json::from_value::<LoginResponse>(json).unwrap());
        let (status, json) = self
            .call(
                Method::PUT,
                "/v1/keys/identity",
                Some(&device.token),
                Some(device.identity_keys_json()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        device
    }

    async fn send(&self, sender: &TestDevice, body: Value) -> SendMessageResponse {
        let (status, json) = self
            .call(
                Method::POST,
                "/v1/messages",
                Some(&sender.token),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        serde_json::from_value(json).unwrap()
    }

    async fn connect(&self, token: &str) -> Socket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/v1/ws", self.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Socket { stream }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first, so the server closes its database connections (and the test's
        // database can be dropped); SIGKILL if it has not exited in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        #[allow(clippy::print_stderr)] // Shown with the failing test's report.
        if std::thread::panicking() {
            let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- output of {}:\n{}", self.name, output.join("\n"));
        }
    }
}

/// Collects a child's output lines; the first "Courier is listening" line's address goes
/// to `address`.
fn read_lines(
    name: &'static str,
    pipe: Option<impl Read + Send + 'static>,
    output: Arc<Mutex<Vec<String>>>,
    mut address: Option<oneshot::Sender<String>>,
) {
    let pipe = pipe.unwrap_or_else(|| panic!("{name}: output is piped"));
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = listening_address(&line)
                && let Some(tx) = address.take()
            {
                let _ = tx.send(found);
            }
            output.lock().unwrap().push(line);
        }
    });
}

/// The address in the server's JSON "Courier is listening" log line.
fn listening_address(line: &str) -> Option<String> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let fields = entry.get("fields")?;
    (fields.get("message")? == "Courier is listening")
        .then(|| fields.get("address")?.as_str().map(str::to_owned))
        .flatten()
}

/// A device's WebSocket.
struct Socket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Socket {
    /// The next meaningful frame, waiting at most [`EVENT_TIMEOUT`].
    async fn next(&mut self) -> Received {
        loop {
            let message = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next())
                .await
                .expect("a frame within the timeout");
            match message {
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<ServerFrame>(text.as_str()).unwrap() {
                        ServerFrame::Item(StreamItem::Envelope(envelope)) => {
                            return Received::Envelope(envelope);
                        }
                        ServerFrame::Control(ControlFrame::CaughtUp { cursor }) => {
                            return Received::CaughtUp(cursor);
                        }
                        ServerFrame::Control(ControlFrame::Error { code, .. }) => {
                            return Received::Error(code);
                        }
                        // Other item types are not what these tests exchange.
                        #[allow(unreachable_patterns)]
                        _ => continue,
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    /// Reads the (empty) backlog up to `caughtUp`: the socket is live after it.
    async fn caught_up(&mut self) {
        match self.next().await {
            Received::CaughtUp(_) => {}
            other => panic!("expected caughtUp, got {other:?}"),
        }
    }

    async fn next_envelope(&mut self) -> courier_protocol::api::stream::Envelope {
        match self.next().await {
            Received::Envelope(envelope) => envelope,
            other => panic!("expected an envelope, got {other:?}"),
        }
    }

    /// Reads frames until a `oneTimeKeysLow` item, waiting at most [`EVENT_TIMEOUT`] for
    /// each; its `(seq, count)`.
    async fn next_low_key_notice(&mut self) -> (u64, u32) {
        loop {
            let message = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next())
                .await
                .expect("a frame within the timeout");
            match message {
                Some(Ok(Message::Text(text))) => {
                    if let ServerFrame::Item(StreamItem::OneTimeKeysLow { seq, count }) =
                        serde_json::from_str::<ServerFrame>(text.as_str()).unwrap()
                    {
                        return (seq, count);
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended before the notice: {other:?}"),
            }
        }
    }

    async fn expect_closed(&mut self, code: u16) {
        match self.next().await {
            Received::Closed(Some(got)) if got == code => {}
            other => panic!("expected close code {code}, got {other:?}"),
        }
    }
}

/// A user with published devices.
struct User {
    id: UserId,
    devices: Vec<TestDevice>,
}

impl User {
    async fn new(server: &Process, name: &str, devices: usize) -> Self {
        let account = server.create_account(name).await;
        let mut list = Vec::new();
        for _ in 0..devices {
            list.push(server.new_published_device(name).await);
        }
        Self {
            id: account.user_id,
            devices: list,
        }
    }
}

/// Every recipient device and every other device of the sender.
fn targets(sender: &TestDevice, sender_user: &User, recipient: &User) -> Vec<(UserId, DeviceId)> {
    recipient
        .devices
        .iter()
        .chain(
            sender_user
                .devices
                .iter()
                .filter(|d| d.device_id != sender.device_id),
        )
        .map(|d| (d.user_id, d.device_id))
        .collect()
}

/// The behaviour both fabrics must give two processes on one database.
async fn two_processes_act_as_one(pool: PgPool, fabric: Fabric, route: Route) {
    if matches!(fabric, Fabric::Nats) {
        require_nats().await;
    }
    let databases = Databases::new(&pool, route);
    let setup = databases.setup(fabric);
    let (a, b) = tokio::join!(Process::spawn("A", &setup), Process::spawn("B", &setup));
    let alice = User::new(&a, "alice", 2).await;
    let bob = User::new(&b, "bob", 2).await;

    // Bob's device 0 listens on A; Alice sends through B: it arrives in real time.
    let mut on_a = a.connect(&bob.devices[0].token).await;
    on_a.caught_up().await;
    let sender = &alice.devices[0];
    let sent = b
        .send(
            sender,
            v2_body("p1", bob.id, &targets(sender, &alice, &bob), "via B"),
        )
        .await;
    let envelope = on_a.next_envelope().await;
    assert_eq!(envelope.message_id, sent.message_id);
    assert_eq!(envelope.sender_device_id, sender.device_id);
    assert!(envelope_text(&envelope).ends_with(":via B"));

    // A second socket of the device, on B, replaces the one on A (4001) and gets what is
    // sent through A from then on.
    let mut on_b = b.connect(&bob.devices[0].token).await;
    assert!(matches!(on_b.next().await, Received::Envelope(e) if e.message_id == sent.message_id));
    on_b.caught_up().await;
    on_a.expect_closed(close_code::REPLACED).await;
    let again = a
        .send(
            sender,
            v2_body("p2", bob.id, &targets(sender, &alice, &bob), "via A"),
        )
        .await;
    let envelope = on_b.next_envelope().await;
    assert_eq!(envelope.message_id, again.message_id);
    assert!(envelope_text(&envelope).ends_with(":via A"));

    // Bob's device 1 listens on B, whose token cache knows it; Bob removes it through A:
    // its socket on B closes (4003) and B refuses its token at once.
    let victim = &bob.devices[1];
    let mut victim_socket = b.connect(&victim.token).await;
    // Its backlog: the two messages so far.
    let first = victim_socket.next_envelope().await;
    let second = victim_socket.next_envelope().await;
    assert_eq!(
        (first.message_id, second.message_id),
        (sent.message_id, again.message_id)
    );
    victim_socket.caught_up().await;
    let (status, body) = b
        .call(Method::GET, "/v1/devices", Some(&victim.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = format!("/v1/devices/{}", victim.device_id.get());
    let (status, body) = a
        .call(Method::DELETE, &path, Some(&bob.devices[0].token), None)
        .await;
    assert!(status.is_success(), "{body}");
    victim_socket
        .expect_closed(close_code::DEVICE_REMOVED)
        .await;
    let refused = b
        .call(Method::GET, "/v1/devices", Some(&victim.token), None)
        .await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "device_removed");

    // B checks sends against cached device lists. Bob adds a device through A: a send
    // through B that includes it goes through at once (a list B cached before the change
    // is read again before a send is refused), and one without it is refused.
    let new_device = a.new_published_device("bob").await;
    let mut with_new: Vec<(UserId, DeviceId)> = vec![
        (bob.id, bob.devices[0].device_id),
        (bob.id, new_device.device_id),
    ];
    with_new.extend(
        alice
            .devices
            .iter()
            .filter(|d| d.device_id != sender.device_id)
            .map(|d| (d.user_id, d.device_id)),
    );
    let p3 = b
        .send(sender, v2_body("p3", bob.id, &with_new, "new device"))
        .await;
    assert_eq!(on_b.next_envelope().await.message_id, p3.message_id);
    let without_new: Vec<(UserId, DeviceId)> = with_new
        .iter()
        .copied()
        .filter(|(_, d)| *d != new_device.device_id)
        .collect();
    let refused = b
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(v2_body("p4", bob.id, &without_new, "missing")),
        )
        .await;
    assert_error(&refused, StatusCode::CONFLICT, "device_list_mismatch");

    // Bob's device 0 logs in again through A and gets a new token: its socket on B,
    // opened with the old one, closes at once (4005), and B refuses the old token.
    let old_token = bob.devices[0].token.clone();
    let (status, body) = a
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "bob", "password": PASSWORD, "deviceId": bob.devices[0].device_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    on_b.expect_closed(close_code::TOKEN_REVOKED).await;
    let refused = b
        .call(Method::GET, "/v1/devices", Some(&old_token), None)
        .await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_processes_over_postgres_deliver_replace_and_remove_across(pool: PgPool) {
    two_processes_act_as_one(pool, Fabric::Postgres, Route::Direct).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_processes_over_nats_deliver_replace_and_remove_across(pool: PgPool) {
    two_processes_act_as_one(pool, Fabric::Nats, Route::Direct).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_processes_over_postgres_through_pgbouncer_deliver_replace_and_remove_across(
    pool: PgPool,
) {
    two_processes_act_as_one(pool, Fabric::Postgres, Route::PgBouncer).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_processes_over_nats_through_pgbouncer_deliver_replace_and_remove_across(pool: PgPool) {
    two_processes_act_as_one(pool, Fabric::Nats, Route::PgBouncer).await;
}

/// A TCP relay to NATS that the test can cut (closing every relayed connection and
/// refusing new ones) and restore: a NATS outage for one process only.
struct NatsLink {
    port: u16,
    up: watch::Sender<bool>,
    relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl NatsLink {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, up_rx) = watch::channel(true);
        let relays = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let relays = relays.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !*up_rx.borrow() {
                        // Cut: the connection is closed at once.
                        continue;
                    }
                    let target = target.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    relays.lock().unwrap().push(relay);
                }
            }
        });
        Self {
            port,
            up,
            relays,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.up.send_replace(false);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A claim through one process that takes a device's one-time keys low reaches the
/// device's socket on the other, in real time (the item is stored, then signalled).
async fn a_low_key_notice_reaches_another_process(pool: PgPool, fabric: Fabric, route: Route) {
    if matches!(fabric, Fabric::Nats) {
        require_nats().await;
    }
    let databases = Databases::new(&pool, route);
    let setup = databases.setup(fabric);
    let (a, b) = tokio::join!(Process::spawn("A", &setup), Process::spawn("B", &setup));
    let dana = User::new(&a, "dana", 1).await;
    let eve = User::new(&b, "eve", 1).await;
    let target = &dana.devices[0];
    let threshold = courier_protocol::limits::ONE_TIME_KEYS_LOW_THRESHOLD;
    let keys: Vec<_> = (0..threshold)
        .map(|i| target.one_time_key(&format!("otk{i}")))
        .collect();
    let (status, body) = a
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&target.token),
            Some(json!({ "oneTimeKeys": keys })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut on_a = a.connect(&target.token).await;
    on_a.caught_up().await;

    let claim = json!({ "devices": [{ "userId": dana.id, "deviceId": target.device_id }] });
    let (status, body) = b
        .call(
            Method::POST,
            "/v1/keys/claim",
            Some(&eve.devices[0].token),
            Some(claim),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"][0]["fallback"], false, "{body}");

    let (_, count) = on_a.next_low_key_notice().await;
    assert_eq!(count, threshold - 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_low_key_notice_reaches_another_process_over_postgres(pool: PgPool) {
    a_low_key_notice_reaches_another_process(pool, Fabric::Postgres, Route::Direct).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_low_key_notice_reaches_another_process_over_nats(pool: PgPool) {
    a_low_key_notice_reaches_another_process(pool, Fabric::Nats, Route::Direct).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_low_key_notice_reaches_another_process_over_postgres_through_pgbouncer(pool: PgPool) {
    a_low_key_notice_reaches_another_process(pool, Fabric::Postgres, Route::PgBouncer).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_low_key_notice_reaches_another_process_over_nats_through_pgbouncer(pool: PgPool) {
    a_low_key_notice_reaches_another_process(pool, Fabric::Nats, Route::PgBouncer).await;
}

/// A process whose NATS connection drops misses the signals sent meanwhile; once it is
/// back, every socket it holds rereads its stream, so nothing waits for a later signal.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_process_back_on_nats_rereads_what_it_missed(pool: PgPool) {
    a_process_back_on_nats_rereads(pool, Route::Direct).await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_process_back_on_nats_through_pgbouncer_rereads_what_it_missed(pool: PgPool) {
    a_process_back_on_nats_rereads(pool, Route::PgBouncer).await;
}

async fn a_process_back_on_nats_rereads(pool: PgPool, route: Route) {
    require_nats().await;
    let link = NatsLink::start(nats_address()).await;
    let databases = Databases::new(&pool, route);
    let mut through_link = databases.setup(Fabric::Nats);
    through_link.env("COURIER_NATS_URL", &link.url());
    let direct_to_nats = databases.setup(Fabric::Nats);
    let (a, b) = tokio::join!(
        Process::spawn("A", &through_link),
        Process::spawn("B", &direct_to_nats)
    );
    let alice = User::new(&b, "alice", 1).await;
    let bob = User::new(&b, "bob", 1).await;
    let mut on_a = a.connect(&bob.devices[0].token).await;
    on_a.caught_up().await;

    // Watch the subject, to know when B's signal has gone past A.
    let watcher = async_nats::connect(nats_url()).await.unwrap();
    let mut signals = watcher.subscribe("courier.fabric").await.unwrap();
    watcher.flush().await.unwrap();

    link.cut();
    let sender = &alice.devices[0];
    let sent = b
        .send(
            sender,
            v2_body("lost", bob.id, &targets(sender, &alice, &bob), "while cut"),
        )
        .await;
    let bob_key = bob.id.as_uuid().simple().to_string();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(signal) = signals.next().await {
            if String::from_utf8_lossy(&signal.payload).contains(&format!("i:{bob_key}:")) {
                return;
            }
        }
        panic!("the subscription to the fabric's subject ended");
    })
    .await
    .expect("B signals the new items within the timeout");

    // NATS has routed the signal while A was away: only A's reread on reconnecting can
    // bring the envelope to the socket now.
    link.restore();
    let envelope = on_a.next_envelope().await;
    assert_eq!(envelope.message_id, sent.message_id);
    assert!(envelope_text(&envelope).ends_with(":while cut"));
}

#[test]
fn the_listening_line_is_found_in_json_logs() {
    let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"Courier is listening","address":"127.0.0.1:40123"},"target":"courier_server"}"#;
    assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:40123"));
    assert_eq!(
        listening_address(r#"{"fields":{"message":"starting Courier"}}"#),
        None
    );
    assert_eq!(listening_address("not json"), None);
}

/// The admin token the image test's machines have (a Fly secret in a deployment).
const IMAGE_ADMIN_TOKEN: &str = "image-test-admin-token-0123456789abcdef01234567";

/// The binary the image runs: `COURIER_TEST_SERVER_BINARY` (scripts/test.sh builds the
/// release binary the Dockerfile builds, with the same command) or this build's.
fn image_binary() -> String {
    std::env::var("COURIER_TEST_SERVER_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_courier-server").to_owned())
}

/// A copy of the server binary where the image's user can run it (the image installs it
/// in /usr/local/bin; a build directory under /root is not open to other users).
struct InstalledBinary {
    dir: std::path::PathBuf,
    path: String,
}

impl InstalledBinary {
    fn install(binary: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("courier-image-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("courier-server");
        std::fs::copy(binary, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            path: path.display().to_string(),
            dir,
        }
    }
}

impl Drop for InstalledBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// A port of the image's dual-stack address replaced by a free one (two processes run
/// side by side here; in the image each has its own network namespace).
fn with_free_port(image_address: &str) -> String {
    let address: std::net::SocketAddr = image_address.parse().unwrap();
    assert!(
        address.ip().is_unspecified(),
        "the image listens on every address: {image_address}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::net::SocketAddr::new(address.ip(), port).to_string()
}

/// Everything a Fly.io deployment depends on, without Fly: the release binary started as
/// the Dockerfile starts it (its ENV, its USER, its ENTRYPOINT and CMD), the release
/// command (`courier-server migrate`) first, then two processes whose queries go through
/// PgBouncer in transaction mode (TLS from the server to PgBouncer and from PgBouncer to
/// PostgreSQL, both verified) and whose fabric LISTENs on the direct TLS URL. They act as
/// one server; the health check the image declares passes; metrics are private; SIGTERM
/// ends a process gracefully within its budget.
#[tokio::test]
async fn started_as_the_image_starts_it_behind_pgbouncer_on_tls_postgres_two_processes_act_as_one()
{
    let image = image::ImageStart::from_repository();
    let cluster = cluster::Cluster::start_tls().await;
    let certs = cluster.tls_ca().parent().unwrap().to_owned();
    let bouncer = pgbouncer::PgBouncer::start(
        &pgbouncer::Upstream {
            host: "localhost".to_owned(),
            port: cluster.port(),
            tls_ca: Some(cluster.tls_ca().to_owned()),
        },
        Some(&certs),
    );
    let direct_url = cluster.url("courier");
    let pooled_url = bouncer.url("courier");
    assert!(pooled_url.contains("sslmode=verify-full"), "{pooled_url}");

    let binary = InstalledBinary::install(&image_binary());
    assert_eq!(image.entrypoint, vec!["courier-server"]);
    let as_image = |args: &[String]| {
        let mut setup = Setup {
            env: image.env.clone(),
            args: args.to_vec(),
            // Only root can start a process as another user; elsewhere the test runs as
            // itself.
            user: running_as_root().then_some((image.uid, image.gid)),
        };
        setup
            .env("COURIER_DATABASE_URL", &pooled_url)
            .env("COURIER_DATABASE_DIRECT_URL", &direct_url)
            .env("COURIER_LOG", "info,sqlx=warn")
            // A Fly secret, as scripts/deploy-fly.sh sets it.
            .env("COURIER_ADMIN_TOKEN", IMAGE_ADMIN_TOKEN)
            // The image's user's home (the test's own is not theirs to read).
            .env("HOME", "/nonexistent");
        setup
    };

    // The release command, twice: it migrates once, then has nothing to do.
    for expected in ["applied", "the schema is current"] {
        let setup = as_image(&["migrate".to_owned()]);
        let output = setup
            .command(&binary.path)
            .envs(setup.env.iter().map(|(name, value)| (name, value)))
            .args(&setup.args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "migrate failed: {text}");
        assert!(text.contains(expected), "{text}");
    }

    // Two machines of the app, each with the image's environment (its own ports here).
    let mut setups = Vec::new();
    for _ in 0..2 {
        let mut setup = as_image(&image.cmd);
        setup
            .env(
                "COURIER_LISTEN",
                &with_free_port(image.env("COURIER_LISTEN").unwrap()),
            )
            .env(
                "COURIER_ADMIN_LISTEN",
                &with_free_port(image.env("COURIER_ADMIN_LISTEN").unwrap()),
            );
        setups.push(setup);
    }
    let (mut a, b) = tokio::join!(
        Process::spawn_binary("A", &binary.path, &setups[0]),
        Process::spawn_binary("B", &binary.path, &setups[1])
    );
    // The image does not migrate at start: it checked the schema instead.
    assert!(
        !a.output
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("\"migrations\"")),
        "a process migrated at start"
    );

    // Dual-stack: the same listener answers on IPv4 and IPv6 loopback.
    for process in [&a, &b] {
        let port = process.base.rsplit(':').next().unwrap().to_owned();
        for host in ["127.0.0.1", "[::1]"] {
            let response = process
                .http
                .get(format!("http://{host}:{port}/readyz"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{host}");
        }
        // Metrics answer on the private listener only.
        let admin = process
            .logged("metrics and probes are on the private address", "admin")
            .await;
        let admin_port = admin.rsplit(':').next().unwrap();
        let metrics = process
            .http
            .get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(metrics.text().await.unwrap().contains("courier_"));
        let (status, _) = process.call(Method::GET, "/metrics", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    // The image's HEALTHCHECK, with the machine's environment.
    let health = setups[0]
        .command(&binary.path)
        .envs(setups[0].env.iter().map(|(name, value)| (name, value)))
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");

    // One server: Bob listens on A, Alice sends through B.
    let alice = User::new(&b, "alice", 1).await;
    let bob = User::new(&a, "bob", 1).await;
    let mut on_a = a.connect(&bob.devices[0].token).await;
    on_a.caught_up().await;
    let sender = &alice.devices[0];
    let sent = b
        .send(
            sender,
            v2_body(
                "p1",
                bob.id,
                &targets(sender, &alice, &bob),
                "through pgbouncer",
            ),
        )
        .await;
    let envelope = on_a.next_envelope().await;
    assert_eq!(envelope.message_id, sent.message_id);
    assert!(envelope_text(&envelope).ends_with(":through pgbouncer"));

    // An operator deactivates Bob as `fly ssh console -C "courier-server admin ..."` would,
    // on machine B: his socket on A closes, and Alice's next send through B is refused
    // with his device named stale.
    let b_admin = b
        .logged("metrics and probes are on the private address", "admin")
        .await;
    let b_admin = format!("127.0.0.1:{}", b_admin.rsplit(':').next().unwrap());
    let admin = setups[1]
        .command(&binary.path)
        .envs(setups[1].env.iter().map(|(name, value)| (name, value)))
        .args([
            "admin",
            "--url",
            &format!("http://{b_admin}"),
            "users",
            "deactivate",
            "bob",
        ])
        .output()
        .unwrap();
    assert!(admin.status.success(), "{admin:?}");
    on_a.expect_closed(close_code::DEVICE_REMOVED).await;
    let (status, refused) = b
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(v2_body(
                "p2",
                bob.id,
                &targets(sender, &alice, &bob),
                "after",
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "device_list_mismatch");
    assert_eq!(
        refused["error"]["details"]["stale"][0]["userId"],
        json!(bob.id)
    );

    // A stop (Fly sends the kill signal): the socket gets a going-away close, the process
    // exits cleanly within its budget.
    let mut on_a = a.connect(&alice.devices[0].token).await;
    on_a.caught_up().await;
    let status = a.terminate().await;
    on_a.expect_closed(close_code::GOING_AWAY).await;
    assert!(status.success(), "{status}");
    // The queries did go through PgBouncer.
    assert!(bouncer.transactions("courier").await > 20);
}

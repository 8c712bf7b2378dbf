//! The client's own guarantees, against the real server, PostgreSQL and SQLite files:
//! store work never holds up the runtime's thread, trust decisions go through the client,
//! and a login cut off after the server created the device is finished on open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{PASSWORD, Party, TestServer, key, receive, take_messages};
use courier_sdk::client::{Client, ClientError};
use courier_sdk::crypto::{MachineError, TrustState};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Handle, RuntimeFlavor};
use url::Url;

/// Runs `operation` while a second SQLite connection holds the store file's write lock,
/// so the operation's store work waits in SQLite's busy timeout (5 s). Checks that
/// another task on this one-thread runtime keeps ticking meanwhile, then releases the
/// lock and returns what the operation returned.
async fn run_while_the_store_is_locked<T: Send + 'static>(
    store: &Path,
    operation: impl Future<Output = T> + Send + 'static,
) -> T {
    // The premise: the test, the server and the client share one thread, so store work
    // done on it would stop everything else.
    assert_eq!(
        Handle::current().runtime_flavor(),
        RuntimeFlavor::CurrentThread
    );
    let holder = rusqlite::Connection::open(store).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let operation = tokio::spawn(operation);
    let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        loop {
            interval.tick().await;
            if tick.send(()).is_err() {
                break;
            }
        }
    });
    // The first wait yields to the operation: from then on it is stuck on the lock.
    for _ in 0..10 {
        ticks.recv().await.unwrap();
    }
    assert!(
        !operation.is_finished(),
        "the operation finished while the store was locked: it waited on this thread, \
         so nothing else ran until SQLite gave up"
    );
    ticker.abort();
    holder.execute_batch("ROLLBACK").unwrap();
    operation.await.unwrap()
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn confirming_events_on_a_locked_store_leaves_the_runtime_thread_free(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Arc::new(Party::register(&server, "alice", 1).await);
    let bob = Party::register(&server, "bob", 1).await;
    bob.clients[0].send(alice.user(), b"hello").await.unwrap();
    alice.clients[0].receive_until_caught_up().await.unwrap();
    let queued = alice.clients[0].pending_events(100).await.unwrap();
    let last = queued.last().unwrap().seq;

    let client = alice.clone();
    run_while_the_store_is_locked(&alice.store_path(0), async move {
        client.clients[0].confirm_events(last).await
    })
    .await
    .unwrap();
    assert!(
        alice.clients[0]
            .pending_events(100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn receiving_into_a_locked_store_leaves_the_runtime_thread_free(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Arc::new(Party::register(&server, "alice", 1).await);
    let bob = Party::register(&server, "bob", 1).await;
    bob.clients[0].send(alice.user(), b"hello").await.unwrap();

    // Decrypting stores the message and moving the cursor writes the client record: both
    // wait for the lock.
    let client = alice.clone();
    let summary = run_while_the_store_is_locked(&alice.store_path(0), async move {
        client.clients[0].receive_until_caught_up().await
    })
    .await
    .unwrap();
    assert_eq!(summary.messages, 1);
    assert_eq!(take_messages(&alice.clients[0]).await, vec!["hello"]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn opening_a_locked_store_leaves_the_runtime_thread_free(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let own = alice.clients[0].own_device();

    // Opening checks the schema in a write transaction: it waits for the lock.
    let path = alice.store_path(0);
    let opened = run_while_the_store_is_locked(&alice.store_path(0), async move {
        Client::open(&path, &key())
            .await
            .map(|client| client.own_device())
    })
    .await
    .unwrap();
    assert_eq!(opened, own);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn trust_decisions_and_fingerprints_go_through_the_client(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    let (a, b) = (&alice.clients[0], &bob.clients[0]);
    a.refresh_devices(bob.user()).await.unwrap();
    b.refresh_devices(alice.user()).await.unwrap();
    let bob_device = b.own_device();

    let known: Vec<_> = a
        .devices(bob.user())
        .await
        .unwrap()
        .iter()
        .map(|d| (d.device_ref(), d.trust))
        .collect();
    assert_eq!(known, vec![(bob_device, TrustState::TrustedOnFirstUse)]);
    assert_eq!(
        a.fingerprint(bob_device).await.unwrap(),
        b.fingerprint(bob_device).await.unwrap(),
        "Alice's record of Bob's device shows what Bob's device shows of itself"
    );
    assert_eq!(
        a.safety_number(bob.user()).await.unwrap(),
        b.safety_number(alice.user()).await.unwrap()
    );

    a.verify_device(bob_device).await.unwrap();
    // Stored: another client over the same store file reads it back.
    let reopened = Client::open(&alice.store_path(0), &key()).await.unwrap();
    assert_eq!(
        reopened.devices(bob.user()).await.unwrap()[0].trust,
        TrustState::Verified
    );

    let unknown = courier_protocol::api::keys::DeviceRef {
        user_id: bob.user(),
        device_id: courier_protocol::DeviceId::new(9_999).unwrap(),
    };
    match a.verify_device(unknown).await {
        Err(ClientError::Crypto(MachineError::NoSuchDevice(device))) => {
            assert_eq!(device, unknown);
        }
        other => panic!("verifying a device nobody listed must fail: {other:?}"),
    }
}

/// A TCP proxy in front of the test server that forwards every connection, except that
/// while `cut_key_requests` is set it closes a connection, unanswered, as soon as a
/// request for the key directory (`/v1/keys/…`) comes through it: the server never sees
/// that request, as when the network drops.
struct CuttingProxy {
    url: Url,
    cut_key_requests: Arc<AtomicBool>,
}

/// The start of a key directory request line (`PUT /v1/keys/identity HTTP/1.1`).
const KEY_REQUEST: &[u8] = b" /v1/keys/";

impl CuttingProxy {
    async fn start(server: &Url) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let target = format!("{}:{}", server.host_str().unwrap(), server.port().unwrap());
        let cut_key_requests = Arc::new(AtomicBool::new(false));
        let cut = cut_key_requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, cut) = (target.clone(), cut.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        forward(client, server, &cut).await;
                    }
                });
            }
        });
        Self {
            url,
            cut_key_requests,
        }
    }

    fn cut_key_requests(&self, cut: bool) {
        self.cut_key_requests.store(cut, Ordering::SeqCst);
    }
}

/// Copies both ways until either side closes; returning drops (closes) both sockets.
async fn forward(client: TcpStream, server: TcpStream, cut: &AtomicBool) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // `true` if it cut the connection.
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        // The end of the previous read too, so a request line split across reads is seen.
        let mut seen: Vec<u8> = Vec::new();
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            seen.extend_from_slice(&buffer[..read]);
            if cut.load(Ordering::SeqCst)
                && seen.windows(KEY_REQUEST.len()).any(|w| w == KEY_REQUEST)
            {
                return true;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
            seen.drain(..seen.len().saturating_sub(KEY_REQUEST.len()));
        }
        let _ = server_write.shutdown().await;
        false
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::pin!(downstream);
    tokio::select! {
        cut = upstream => if !cut {
            // The client finished sending: let the answer through.
            (&mut downstream).await;
        },
        () = &mut downstream => {}
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_login_cut_off_before_its_keys_were_published_is_finished_by_open(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let proxy = CuttingProxy::start(&server.base_url).await;
    server.create_account("alice").await;
    let bob = Party::register(&server, "bob", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("alice.db");

    // The login goes through; the network drops before the identity keys get there.
    proxy.cut_key_requests(true);
    let login = Client::login(
        proxy.url.clone(),
        &store,
        &key(),
        "alice",
        PASSWORD,
        "phone",
    )
    .await;
    match login {
        Err(ClientError::Transport(error)) => assert!(error.is_retryable(), "{error:?}"),
        other => panic!("the login must fail when its keys cannot be published: {other:?}"),
    }

    // Logging in again over this store is refused before the server makes a second
    // device; still cut off, open returns the retryable error and keeps the work.
    match Client::login(
        proxy.url.clone(),
        &store,
        &key(),
        "alice",
        PASSWORD,
        "phone",
    )
    .await
    {
        Err(ClientError::Crypto(MachineError::AccountExists)) => {}
        other => panic!("a store holding a device must refuse another login: {other:?}"),
    }
    match Client::open(&store, &key()).await {
        Err(ClientError::Transport(error)) => assert!(error.is_retryable(), "{error:?}"),
        other => panic!("open must not hand out a device nobody can reach: {other:?}"),
    }

    // The network is back: open publishes what the login could not.
    proxy.cut_key_requests(false);
    let alice = Client::open(&store, &key()).await.unwrap();
    let own = alice.api().list_own_devices().await.unwrap().devices;
    assert_eq!(own.len(), 1, "one device at the server: {own:?}");
    bob.clients[0]
        .send(alice.own_device().user_id, b"you are reachable")
        .await
        .unwrap();
    assert_eq!(receive(&alice).await, vec!["you are reachable"]);

    // Done once: opening again publishes nothing (the cut would refuse it).
    drop(alice);
    proxy.cut_key_requests(true);
    let alice = Client::open(&store, &key()).await.unwrap();
    proxy.cut_key_requests(false);
    bob.clients[0]
        .send(alice.own_device().user_id, b"still reachable")
        .await
        .unwrap();
    assert_eq!(receive(&alice).await, vec!["still reachable"]);
}

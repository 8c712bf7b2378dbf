//! Start-up: the database is created if missing and migrated; an unreachable PostgreSQL
//! gives the operator a paragraph that says how to start it; the binary shuts down
//! gracefully on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;

use courier_server::database::{self, PoolSettings};
use courier_server::{StartupError, connect_and_migrate};

fn server_url() -> url::Url {
    url::Url::parse(
        &std::env::var("DATABASE_URL").expect("DATABASE_URL points at the test PostgreSQL"),
    )
    .unwrap()
}

fn database_url(name: &str) -> String {
    let mut url = server_url();
    url.set_path(name);
    url.to_string()
}

async fn drop_database(name: &str) {
    let pool = sqlx::PgPool::connect(server_url().as_str()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_database_is_created_and_migrated() {
    let name = format!("courier_startup_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(&name);
    let pool = connect_and_migrate(&url, 2).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users', 'devices', 'one_time_keys')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tables, 3);
    pool.close().await;
    // A second start on the existing database is a no-op.
    connect_and_migrate(&url, 2).await.unwrap().close().await;
    drop_database(&name).await;
}

#[tokio::test]
async fn an_unreachable_postgres_gives_a_paragraph_without_the_password() {
    let error = connect_and_migrate("postgres://courier:hunter2secret@127.0.0.1:1/courier", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartupError::Unreachable { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("could not reach PostgreSQL"), "{text}");
    assert!(text.contains("pg_ctlcluster"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
    assert!(!text.contains('\n'), "one paragraph: {text}");

    let invalid = connect_and_migrate("mysql://nope", 1).await.unwrap_err();
    assert!(
        matches!(invalid, StartupError::InvalidUrl { .. }),
        "{invalid:?}"
    );
}

#[test]
fn the_binary_exits_with_the_paragraph_when_postgres_is_down() {
    let output = Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .env(
            "COURIER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/courier",
        )
        .env("COURIER_LISTEN", "127.0.0.1:0")
        .env("COURIER_ADMIN_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Courier could not reach PostgreSQL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let name = format!("courier_binary_{}", uuid::Uuid::new_v4().simple());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .env("COURIER_DATABASE_URL", database_url(&name))
        .env("COURIER_LISTEN", format!("127.0.0.1:{port}"))
        .env("COURIER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("COURIER_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait for the log line that says it listens (JSON logs on stdout), then ask it. The
    // reader keeps draining stdout so the server never writes into a closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut listening_tx = Some(listening_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Courier is listening") {
                if let Some(tx) = listening_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), listening_rx)
        .await
        .expect("the server started in time")
        .expect("it logged that it listens");
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert!(ready.status().is_success());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
    drop_database(&name).await;
}

#[tokio::test]
async fn migrate_applies_once_and_concurrent_runs_take_turns() {
    let name = format!("courier_migrate_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(&name);
    let migrations = courier_server::MIGRATOR.iter().count();
    // Two releases at once (two deploys racing): the advisory lock makes them take
    // turns; between them every migration is applied exactly once.
    let (first, second) = tokio::join!(database::migrate(&url), database::migrate(&url));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.applied.len() + second.applied.len(),
        migrations,
        "{first} / {second}"
    );
    let again = database::migrate(&url).await.unwrap();
    assert!(again.applied.is_empty(), "{again}");
    assert!(again.unknown.is_empty(), "{again}");
    assert_eq!(
        again.to_string(),
        format!("the schema is current ({migrations} migrations)")
    );
    drop_database(&name).await;
}

#[tokio::test]
async fn a_schema_behind_is_refused_and_a_newer_one_accepted() {
    let name = format!("courier_schema_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(&name);
    database::ensure_database(&url).await.unwrap();
    let pool = database::connect(&url, &PoolSettings::with_max_connections(2))
        .await
        .unwrap();
    // An empty database: every migration is missing.
    let behind = database::check_schema(&pool, &url).await.unwrap_err();
    assert!(
        matches!(behind, StartupError::SchemaBehind { .. }),
        "{behind:?}"
    );
    assert!(
        behind.to_string().contains("courier-server migrate"),
        "{behind}"
    );

    database::migrate(&url).await.unwrap();
    database::check_schema(&pool, &url).await.unwrap();
    // A newer version's migration (a rollback runs this binary on that schema): the
    // schema is still current for this binary, and migrate leaves it alone.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from a newer version', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    database::check_schema(&pool, &url).await.unwrap();
    let report = database::migrate(&url).await.unwrap();
    assert_eq!(report.unknown, vec![99_990_101_000_000]);
    assert!(report.applied.is_empty());
    pool.close().await;
    drop_database(&name).await;
}

#[test]
fn the_binary_without_migrations_on_start_refuses_a_schema_behind() {
    let name = format!("courier_behind_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(&name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(database::ensure_database(&url)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .env("COURIER_DATABASE_URL", &url)
        .env("COURIER_MIGRATE_ON_START", "false")
        .env("COURIER_LISTEN", "127.0.0.1:0")
        .env("COURIER_ADMIN_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Run `courier-server migrate`"), "{stderr}");
    // `courier-server migrate` then lets it start (its exit says it applied them).
    let migrated = Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .arg("migrate")
        .env("COURIER_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(
        String::from_utf8_lossy(&migrated.stdout).contains("applied"),
        "{migrated:?}"
    );
    runtime.block_on(drop_database(&name));
}

#[tokio::test]
async fn tls_to_postgres_is_used_and_verified_as_the_url_says() {
    let cluster = cluster::Cluster::start_tls().await;
    // verify-full with the authority: migrated and connected over TLS.
    let url = cluster.url("courier");
    database::migrate(&url).await.unwrap();
    let pool = database::connect(&url, &PoolSettings::with_max_connections(1))
        .await
        .unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted);
    pool.close().await;

    let port = cluster.port();
    // `require` encrypts without checking the certificate.
    let require = format!("postgres://postgres@127.0.0.1:{port}/courier?sslmode=require");
    database::connect(&require, &PoolSettings::with_max_connections(1))
        .await
        .unwrap()
        .close()
        .await;
    // Without TLS the server refuses (as a managed PostgreSQL does).
    let plain = format!("postgres://postgres@127.0.0.1:{port}/courier?sslmode=disable");
    let refused = database::connect(&plain, &PoolSettings::with_max_connections(1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StartupError::Unreachable { .. }),
        "{refused:?}"
    );
    // verify-full against the system's roots: the test authority is not among them, so
    // the certificate is refused.
    let unverified = format!("postgres://postgres@localhost:{port}/courier?sslmode=verify-full");
    let refused = database::connect(&unverified, &PoolSettings::with_max_connections(1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StartupError::Unreachable { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_asks_the_local_server() {
    let name = format!("courier_health_{}", uuid::Uuid::new_v4().simple());
    let pool = connect_and_migrate(&database_url(&name), 2).await.unwrap();
    // Dual-stack, as in the image: `[::]` takes IPv4 and IPv6 loopback.
    let listener = courier_server::serve::bind("[::]:0".parse().unwrap(), 16).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(courier_server::launch(
        pool,
        courier_server::Settings::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let healthcheck = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_courier-server"))
            .arg("healthcheck")
            .env("COURIER_LISTEN", format!("[::]:{port}"))
            .output()
            .unwrap()
    };
    let healthy = tokio::task::spawn_blocking(move || healthcheck(port))
        .await
        .unwrap();
    assert!(healthy.status.success(), "{healthy:?}");
    for host in ["127.0.0.1", "[::1]"] {
        let ready = reqwest::get(format!("http://{host}:{port}/healthz"))
            .await
            .unwrap();
        assert!(ready.status().is_success(), "{host}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Nothing listens any more: unhealthy, and it says why.
    let unhealthy = tokio::task::spawn_blocking(move || healthcheck(port))
        .await
        .unwrap();
    assert!(!unhealthy.status.success());
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains("unhealthy: cannot connect"),
        "{unhealthy:?}"
    );
    drop_database(&name).await;
}

//! Start-up: the database is created if missing and migrated; an unreachable PostgreSQL
//! gives the operator a paragraph that says how to start it; the binary shuts down
//! gracefully on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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

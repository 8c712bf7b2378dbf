//! `--spawn-server`: server processes started for the run on a fresh database, stopped
//! and the database dropped afterwards.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

/// How long a stopped server may take to close its sockets and finish before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Servers started for the run, all on one fresh database (`courier_bench_<run>`).
#[derive(Debug)]
pub struct SpawnedServers {
    binary: String,
    /// PostgreSQL server URL, without a database.
    postgres: String,
    pub database: String,
    /// Environment of every process (besides the database URL and listen address).
    env: Vec<(&'static str, String)>,
    pub children: Vec<Child>,
    pub bases: Vec<String>,
    /// Each process's private listener (/metrics).
    pub metrics_bases: Vec<String>,
}

impl SpawnedServers {
    pub fn new(
        binary: &str,
        postgres: &str,
        run_id: &str,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            binary: binary.to_owned(),
            postgres: postgres.trim_end_matches('/').to_owned(),
            database: format!("courier_bench_{run_id}"),
            env,
            children: Vec::new(),
            bases: Vec::new(),
            metrics_bases: Vec::new(),
        }
    }

    /// Starts `processes` servers, one after the other: the first creates and migrates
    /// the database.
    pub async fn start(&mut self, processes: u16) -> anyhow::Result<()> {
        for _ in 0..processes {
            self.start_one().await?;
        }
        Ok(())
    }

    async fn start_one(&mut self) -> anyhow::Result<()> {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|address| address.port())
        };
        let (port, metrics_port) = (free_port()?, free_port()?);
        let binary = &self.binary;
        let mut child = Command::new(binary)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env(
                "COURIER_DATABASE_URL",
                format!("{}/{}", self.postgres, self.database),
            )
            .env("COURIER_LISTEN", format!("127.0.0.1:{port}"))
            .env("COURIER_ADMIN_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{base}/readyz")).await
                && response.status().is_success()
            {
                break;
            }
            // A server that cannot start (database, NATS) says why on stderr and exits.
            if let Some(status) = child.try_wait()? {
                self.children.push(child);
                bail!("the spawned server exited ({status}) before it was ready");
            }
            if Instant::now() > deadline {
                self.children.push(child);
                bail!("the spawned server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.children.push(child);
        self.bases.push(base);
        self.metrics_bases
            .push(format!("http://127.0.0.1:{metrics_port}"));
        Ok(())
    }

    /// Stops every server (SIGTERM: a graceful shutdown; SIGKILL if one is still running
    /// after [`STOP_GRACE`]).
    pub async fn stop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    eprintln!("loadgen: server {} did not stop; killing it", child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.children.clear();
    }

    /// Drops the run's database (after [`stop`](Self::stop); `WITH (FORCE)` ends any
    /// session still on it).
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let url = format!("{}/postgres", self.postgres);
        let mut connection = sqlx::PgConnection::connect(&url)
            .await
            .with_context(|| format!("connecting to {url} to drop {}", self.database))?;
        // The name is ours (`courier_bench_` and hex digits), safe to quote as is.
        sqlx::query(&format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.database
        ))
        .execute(&mut connection)
        .await
        .with_context(|| format!("dropping {}", self.database))?;
        let _ = connection.close().await;
        Ok(())
    }
}

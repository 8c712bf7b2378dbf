//! A PostgreSQL cluster a test creates and owns, so it can stop it (an outage) without
//! touching the shared server the other tests use: `initdb` in a temporary directory,
//! `pg_ctl start` on a free port of 127.0.0.1, `stop` (immediate: like a crash) and
//! `start` again on the same port; stopped and removed when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A test's own PostgreSQL.
pub struct Cluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run the binaries as `postgres` (initdb refuses to run as root).
    as_postgres: bool,
}

impl Cluster {
    /// Creates and starts a cluster (trust authentication, user `postgres`).
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .unwrap()
    }

    fn start_blocking() -> Self {
        let bindir = bindir();
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "courier-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Self {
            bindir,
            port: free_port(),
            dir,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&cluster.dir));
        }
        run(cluster
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
            .arg(cluster.data()));
        cluster.start_again_blocking();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Options for database `name` on this cluster.
    pub fn options(&self, name: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(&format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
        .unwrap()
    }

    /// Creates database `name` and migrates it.
    pub async fn create_database(&self, name: &str) {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options("postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options(name))
            .await
            .unwrap();
        courier_server::MIGRATOR.run(&pool).await.unwrap();
        pool.close().await;
    }

    /// A pool on database `name` as the server builds one (`connect_and_migrate`), but
    /// waiting at most `acquire_timeout` for a connection.
    pub async fn pool(&self, name: &str, acquire_timeout: Duration) -> PgPool {
        PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(acquire_timeout)
            .connect_with(self.options(name))
            .await
            .unwrap()
    }

    /// Stops the cluster at once (`-m immediate`: connections die as in a crash).
    pub async fn stop(&self) {
        let command = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        tokio::task::spawn_blocking(move || run_owned(command))
            .await
            .unwrap();
    }

    /// Starts the stopped cluster again, on the same port, and waits until it accepts
    /// connections.
    pub async fn start_again(&self) {
        let command = self.start_command();
        tokio::task::spawn_blocking(move || run_owned(command))
            .await
            .unwrap();
    }

    fn start_again_blocking(&self) {
        run_owned(self.start_command());
    }

    fn start_command(&self) -> Command {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["stop", "-m", "immediate", "-w"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the PostgreSQL binaries are: `pg_config --bindir` if it has `initdb`, else the
/// newest `/usr/lib/postgresql/*/bin`.
fn bindir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL binaries (initdb, pg_ctl) found: neither `pg_config --bindir` nor \
             /usr/lib/postgresql/*/bin has them. scripts/ensure-postgres.sh installs PostgreSQL."
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port nobody listens on now (bound to port 0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|error| {
        panic!("could not run {command:?}: {error}");
    });
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_owned(mut command: Command) {
    run(&mut command);
}

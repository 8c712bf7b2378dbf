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
    /// The certificate authority its server certificate chains to, when it speaks TLS.
    tls_ca: Option<PathBuf>,
}

impl Cluster {
    /// Creates and starts a cluster (trust authentication, user `postgres`).
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(|| Self::start_blocking(false))
            .await
            .unwrap()
    }

    /// Creates and starts a cluster that accepts TCP connections over TLS only (as a
    /// managed PostgreSQL does): `ssl = on` with a server certificate for `localhost`
    /// and 127.0.0.1 signed by a test authority ([`Self::tls_ca`]), and `hostnossl`
    /// connections rejected.
    pub async fn start_tls() -> Self {
        tokio::task::spawn_blocking(|| Self::start_blocking(true))
            .await
            .unwrap()
    }

    /// The certificate authority file a verifying client trusts (`sslrootcert`).
    pub fn tls_ca(&self) -> &std::path::Path {
        self.tls_ca
            .as_deref()
            .expect("the cluster was started with TLS")
    }

    fn start_blocking(tls: bool) -> Self {
        let bindir = bindir();
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "courier-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            bindir,
            port: free_port(),
            dir,
            as_postgres,
            tls_ca: None,
        };
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&cluster.dir));
        }
        run(cluster
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
            .arg(cluster.data()));
        if tls {
            cluster.tls_ca = Some(cluster.turn_on_tls());
        }
        cluster.start_again_blocking();
        cluster
    }

    /// A test authority and a server certificate it signs (openssl), `ssl = on`, and an
    /// `pg_hba.conf` that takes TCP over TLS only. Returns the authority's file.
    fn turn_on_tls(&self) -> PathBuf {
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").current_dir(&certs).args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Courier test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            certs.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        let data = self.data();
        for file in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(file), data.join(file)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if self.as_postgres {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key")));
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        certs.join("ca.crt")
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

    /// The URL of database `name` on this cluster (over TLS with the authority verified
    /// and the host name checked, when the cluster speaks TLS).
    pub fn url(&self, name: &str) -> String {
        match &self.tls_ca {
            None => format!("postgres://postgres@127.0.0.1:{}/{name}", self.port),
            Some(ca) => format!(
                "postgres://postgres@localhost:{}/{name}?sslmode=verify-full&sslrootcert={}",
                self.port,
                ca.display()
            ),
        }
    }

    /// Options for database `name` on this cluster.
    pub fn options(&self, name: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url(name)).unwrap()
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

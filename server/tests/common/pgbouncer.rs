//! A real PgBouncer in transaction mode in front of a PostgreSQL server, as Fly.io's
//! Managed Postgres puts one in front of its pooled URL: server connections are shared
//! between clients per transaction, so session state (LISTEN, session advisory locks) does
//! not survive, and prepared statements work only through PgBouncer's tracking
//! (`max_prepared_statements`). The binary comes from `COURIER_TEST_PGBOUNCER` or
//! `scripts/ensure-pgbouncer.sh` (which builds one once). Stopped when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where PgBouncer forwards to.
pub struct Upstream {
    /// Host and port of the PostgreSQL server.
    pub host: String,
    pub port: u16,
    /// Whether PgBouncer must speak TLS to it (`server_tls_sslmode = verify-full` with
    /// this authority).
    pub tls_ca: Option<PathBuf>,
}

impl Upstream {
    /// The shared test server (`DATABASE_URL`'s host and port).
    pub fn shared() -> Self {
        let url = url::Url::parse(
            &std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        )
        .unwrap();
        Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            tls_ca: None,
        }
    }
}

/// A running PgBouncer.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// Clients must speak TLS to it, with a certificate from this authority.
    client_tls_ca: Option<PathBuf>,
}

/// Server connections per database and user: fewer than the server's pool asks for, so
/// clients really do share them (a statement prepared on one must be found on another).
const POOL_SIZE: u32 = 4;

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of `upstream`, for every database.
    /// With `client_tls` (a directory holding `server.crt`, `server.key` and `ca.crt`),
    /// clients must connect over TLS.
    pub fn start(upstream: &Upstream, client_tls: Option<&Path>) -> Self {
        let binary = binary();
        let dir = std::env::temp_dir().join(format!(
            "courier-pgbouncer-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        let mut ini = format!(
            "[databases]\n\
             * = host={host} port={upstream_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             max_prepared_statements = 500\n\
             default_pool_size = {POOL_SIZE}\n\
             max_client_conn = 2000\n\
             server_lifetime = 3600\n\
             logfile = {dir}/pgbouncer.log\n\
             admin_users = postgres\n",
            host = upstream.host,
            upstream_port = upstream.port,
            dir = dir.display(),
        );
        if let Some(ca) = &upstream.tls_ca {
            ini.push_str(&format!(
                "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
                ca.display()
            ));
        }
        let client_tls_ca = client_tls.map(|certs| {
            ini.push_str(&format!(
                "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            ));
            certs.join("ca.crt")
        });
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        // PgBouncer refuses to run as root; as `postgres` it cannot reach a binary under
        // root's home, so it runs from a copy in its own directory.
        let as_postgres = is_root();
        let binary = if as_postgres {
            let copy = dir.join("pgbouncer");
            std::fs::copy(&binary, &copy).unwrap();
            copy
        } else {
            binary
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
            if let Some(certs) = client_tls {
                let _ = Command::new("chmod")
                    .args(["-R", "a+rX"])
                    .arg(certs)
                    .status();
            }
        }
        let mut command = if as_postgres {
            // setpriv execs PgBouncer in its own place (runuser forked it and waited, so
            // killing the child left PgBouncer running, holding server connections to
            // the test's database and stopping the next run from dropping it).
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let output = std::fs::File::create(dir.join("output.log")).unwrap();
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut bouncer = Self {
            child,
            dir,
            port,
            client_tls_ca,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    /// The pooled URL of database `name` (over TLS, verified, when clients must use it).
    pub fn url(&self, name: &str) -> String {
        match &self.client_tls_ca {
            None => format!("postgres://postgres@127.0.0.1:{}/{name}", self.port),
            Some(ca) => format!(
                "postgres://postgres@localhost:{}/{name}?sslmode=verify-full&sslrootcert={}",
                self.port,
                ca.display()
            ),
        }
    }

    /// Transactions PgBouncer has passed on to database `name` (its admin console's
    /// `SHOW STATS`): proof that the queries went through it.
    pub async fn transactions(&self, name: &str) -> i64 {
        use sqlx::{ConnectOptions, Row};
        use std::str::FromStr;
        let mut console = sqlx::postgres::PgConnectOptions::from_str(&self.url("pgbouncer"))
            .unwrap()
            // A startup parameter PgBouncer refuses (the server does not send it either).
            .extra_float_digits(None)
            .connect()
            .await
            .unwrap();
        // The console speaks the simple query protocol only.
        let rows = sqlx::raw_sql("SHOW STATS")
            .fetch_all(&mut console)
            .await
            .unwrap();
        rows.iter()
            .filter(|row| {
                row.try_get::<String, _>("database")
                    .is_ok_and(|db| db == name)
            })
            // NUMERIC, sent as text by the simple protocol.
            .map(|row| {
                let raw = row.try_get_raw("total_xact_count").unwrap();
                raw.as_str().unwrap().parse::<i64>().unwrap()
            })
            .sum()
    }

    /// What PgBouncer logged and printed (to explain a failure).
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        read("pgbouncer.log") + &read("output.log")
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("PgBouncer exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `COURIER_TEST_PGBOUNCER`, else what `scripts/ensure-pgbouncer.sh` prints (it builds
/// PgBouncer once and caches it outside the checkout).
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("COURIER_TEST_PGBOUNCER") {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-pgbouncer.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: PgBouncer 1.21 or newer is needed for the pooler tests",
        script.display()
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

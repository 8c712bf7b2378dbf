//! Start-up: reach PostgreSQL (over TLS when the URL's `sslmode` asks), create the
//! database if missing, apply migrations (`courier-server migrate`, or at start for a
//! local run), or check that the schema is current.
//!
//! Two URLs: queries go to the pooled one (on Fly.io through PgBouncer in transaction
//! mode, which keeps no session); LISTEN, the migration lock and migrations go to the
//! direct one (a session of their own).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::redact_database_url;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How a pool is sized and how long its connections live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_connections: u32,
    /// A connection older than this is closed and replaced (`None`: never).
    pub max_lifetime: Option<Duration>,
    /// A connection unused for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// How long a caller waits for a connection before failing.
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    /// `max_connections` connections with the default lifetimes.
    pub fn with_max_connections(max_connections: u32) -> Self {
        use crate::config::defaults;
        Self {
            max_connections,
            max_lifetime: Some(Duration::from_secs(defaults::DATABASE_MAX_LIFETIME_SECS)),
            idle_timeout: Some(Duration::from_secs(defaults::DATABASE_IDLE_TIMEOUT_SECS)),
            acquire_timeout: Duration::from_secs(defaults::DATABASE_ACQUIRE_TIMEOUT_SECS),
        }
    }
}

/// What `courier-server migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations this run applied (versions), oldest first.
    pub applied: Vec<i64>,
    /// Migrations the database has that this binary does not know (a newer version
    /// applied them; this one runs on the schema they leave, see docs/deploy.md).
    pub unknown: Vec<i64>,
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.applied.is_empty() {
            write!(
                f,
                "the schema is current ({} migrations)",
                MIGRATOR.iter().count()
            )?;
        } else {
            write!(
                f,
                "applied {} migrations: {:?}",
                self.applied.len(),
                self.applied
            )?;
        }
        if !self.unknown.is_empty() {
            write!(
                f,
                "; the database also has {} migrations newer than this binary: {:?}",
                self.unknown.len(),
                self.unknown
            )?;
        }
        Ok(())
    }
}

/// Why the server could not start on its database. `Display` is a paragraph for the
/// operator, naming the database without its password.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database URL does not parse.
    #[error(
        "The database URL {url} is not a valid PostgreSQL URL ({reason}). Set COURIER_DATABASE_URL to a URL such as postgres://postgres@127.0.0.1:5432/courier."
    )]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL does not answer.
    #[error(
        "Courier could not reach PostgreSQL at {url} ({reason}). Start PostgreSQL and try again: on Debian or Ubuntu, \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or `sudo systemctl start postgresql`); \
         on macOS, `brew services start postgresql`; if it is not installed, `scripts/ensure-postgres.sh` installs and starts it. \
         To use another server, set COURIER_DATABASE_URL."
    )]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// Migrations are missing and this process does not apply them.
    #[error(
        "The database at {url} lacks {count} migrations this version needs (the newest missing is {newest}). Run `courier-server migrate` with the same configuration first (on Fly.io the release command does), or set COURIER_MIGRATE_ON_START=true."
    )]
    SchemaBehind {
        /// The URL, redacted.
        url: String,
        /// How many are missing.
        count: usize,
        /// The newest missing version.
        newest: i64,
    },
    /// The database could not be created or migrated.
    #[error(
        "Courier reached PostgreSQL at {url} but could not prepare the database: {reason}. Check that the user may create databases and tables."
    )]
    Prepare {
        /// The URL, redacted.
        url: String,
        /// The failure.
        reason: String,
    },
}

/// Parses a PostgreSQL URL (TLS as its `sslmode` says) into connection options.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StartupError> {
    let invalid = |reason: String| StartupError::InvalidUrl {
        url: redact_database_url(url),
        reason,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "the scheme must be postgres:// or postgresql://".to_owned(),
        ));
    }
    let options = PgConnectOptions::from_str(url).map_err(|error| invalid(error.to_string()))?;
    // `extra_float_digits` is a startup parameter PgBouncer refuses unless told to ignore
    // it; Courier stores no floating-point numbers, so it is not sent.
    Ok(options.extra_float_digits(None))
}

/// Connects a pool to `url` and checks that one connection opens.
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, StartupError> {
    let options = connect_options(url)?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .max_lifetime(settings.max_lifetime)
        .idle_timeout(settings.idle_timeout)
        .connect_with(options)
        .await
        .map_err(|error| unreachable(url, &error))
}

/// Creates the database `url` names if it does not exist (on the direct URL: a pooler
/// does not pass `CREATE DATABASE` to an unknown database).
pub async fn ensure_database(url: &str) -> Result<(), StartupError> {
    let options = connect_options(url)?;
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(db) => prepare(url, db.to_string()),
            other => unreachable(url, &other),
        })?;
    if !exists {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(
                database = options.get_database().unwrap_or("courier"),
                "created the database"
            ),
            // Another process created it meanwhile: 42P04 duplicate_database, or 23505
            // when both `CREATE DATABASE`s ran at once (the catalog's unique index).
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(error) => return Err(prepare(url, error.to_string())),
        }
    }
    Ok(())
}

/// The advisory lock `migrate` holds (a constant of Courier's own: "courier!" in ASCII),
/// so that processes migrating at once take turns and each reports what it applied.
const MIGRATION_LOCK: i64 = 0x636f_7572_6965_7221;

/// Creates the database if missing and applies the migrations this binary has and the
/// database lacks, under an advisory lock (processes starting together take turns), over
/// one direct connection. Idempotent: a second run applies nothing. Migrations newer
/// than this binary are left alone and reported (a rollback runs an older binary on a
/// newer schema: migrations only add, see docs/deploy.md).
pub async fn migrate(direct_url: &str) -> Result<MigrationReport, StartupError> {
    use sqlx::{ConnectOptions, Connection};
    ensure_database(direct_url).await?;
    let mut connection = connect_options(direct_url)?
        .connect()
        .await
        .map_err(|error| unreachable(direct_url, &error))?;
    let migrated = async {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut connection)
            .await?;
        let before = applied_versions(&mut connection).await?;
        // The same migrations as MIGRATOR (sqlx's fields are not public API, so the
        // macro builds a second, adjustable copy); the lock above stands for sqlx's.
        let mut migrator: Migrator = sqlx::migrate!("../migrations");
        migrator.set_ignore_missing(true);
        migrator.set_locking(false);
        migrator
            .run(&mut connection)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
        let after = applied_versions(&mut connection).await?;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut connection)
            .await?;
        Ok::<_, sqlx::Error>((before, after))
    }
    .await;
    let _ = connection.close().await;
    let (before, after) = migrated.map_err(|error| prepare(direct_url, error.to_string()))?;
    let known: BTreeSet<i64> = MIGRATOR.iter().map(|migration| migration.version).collect();
    Ok(MigrationReport {
        applied: after.difference(&before).copied().collect(),
        unknown: after.difference(&known).copied().collect(),
    })
}

/// Fails unless every migration this binary has is applied (migrations the binary does
/// not know are fine: a newer version added them).
pub async fn check_schema(pool: &PgPool, url: &str) -> Result<(), StartupError> {
    let classify = |error: sqlx::Error| match error {
        sqlx::Error::Database(_) => prepare(url, error.to_string()),
        other => unreachable(url, &other),
    };
    let mut connection = pool.acquire().await.map_err(classify)?;
    let applied = applied_versions(&mut connection).await.map_err(classify)?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.contains(version))
        .collect();
    match missing.last() {
        None => Ok(()),
        Some(&newest) => Err(StartupError::SchemaBehind {
            url: redact_database_url(url),
            count: missing.len(),
            newest,
        }),
    }
}

/// The versions recorded as applied (none when the table does not exist yet).
async fn applied_versions(
    connection: &mut sqlx::PgConnection,
) -> Result<BTreeSet<i64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *connection)
        .await?;
    if !exists {
        return Ok(BTreeSet::new());
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *connection)
            .await?;
    Ok(versions.into_iter().collect())
}

/// A local run's start: create the database if missing, migrate, connect the pool.
/// Tests and `courier-server serve` with migrations on start use it.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, StartupError> {
    migrate(url).await?;
    connect(url, &PoolSettings::with_max_connections(max_connections)).await
}

fn unreachable(url: &str, error: &sqlx::Error) -> StartupError {
    StartupError::Unreachable {
        url: redact_database_url(url),
        reason: error.to_string(),
    }
}

fn prepare(url: &str, reason: String) -> StartupError {
    StartupError::Prepare {
        url: redact_database_url(url),
        reason,
    }
}

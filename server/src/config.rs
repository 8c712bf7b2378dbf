//! Process configuration, from flags or environment variables: every setting has both,
//! and its default is one of the constants in [`defaults`] (the `--help` text lists
//! them with their variables).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};

use crate::database::PoolSettings;
use crate::rate_limits::{self, Rate, RateLimitSettings};

/// The defaults of every setting, in one place (docs/api.md, "Limits", and
/// docs/deploy.md say why each).
pub mod defaults {
    /// The database used when nothing is configured: a local PostgreSQL with trust auth.
    pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/courier";
    /// The public listener when neither `COURIER_LISTEN` nor `PORT` is set: loopback only,
    /// so a first run on a laptop is not reachable from the network.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// The private listener (metrics, admin API): loopback only.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9091";
    /// Active devices a user may have at once.
    pub const DEVICE_LIMIT: u32 = 5;
    /// Largest request body, in bytes.
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Largest envelope ciphertext, in bytes (decoded).
    pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
    /// Most envelopes one message may carry.
    pub const MAX_ENVELOPES_PER_MESSAGE: usize = 100;
    /// Days an undelivered envelope is kept.
    pub const ENVELOPE_TTL_DAYS: u32 = 30;
    /// Seconds between two runs of the retention task.
    pub const RETENTION_INTERVAL_SECS: u64 = 60;
    /// Rows the retention task deletes per statement.
    pub const RETENTION_BATCH: i64 = 1000;
    /// Shortest time between two batches of acknowledgements, in milliseconds.
    pub const ACK_BATCH_MS: u64 = 200;
    /// Seconds an authenticated token is remembered without asking the database.
    pub const TOKEN_CACHE_TTL_SECS: u64 = 10;
    /// Connections in the database pool.
    pub const DATABASE_MAX_CONNECTIONS: u32 = 20;
    /// Seconds a pooled database connection lives before it is replaced (below the 30
    /// minutes managed poolers and load balancers commonly cut connections at).
    pub const DATABASE_MAX_LIFETIME_SECS: u64 = 1800;
    /// Seconds an unused pooled database connection is kept (a pooler closes idle
    /// client connections; closing them first avoids a broken one being handed out).
    pub const DATABASE_IDLE_TIMEOUT_SECS: u64 = 300;
    /// Seconds a request waits for a database connection before it fails (503).
    pub const DATABASE_ACQUIRE_TIMEOUT_SECS: u64 = 5;
    /// The NATS server used by `--fabric nats`: a local one.
    pub const NATS_URL: &str = "nats://127.0.0.1:4222";
    /// Connections the kernel queues before the server accepts them.
    pub const LISTEN_BACKLOG: u32 = 4096;
    /// Seconds a request's line and headers may take.
    pub const HEADER_TIMEOUT_SECS: u64 = 10;
    /// Seconds an idle connection is kept open between requests.
    pub const KEEP_ALIVE_TIMEOUT_SECS: u64 = 75;
    /// Seconds a request body may take to arrive.
    pub const BODY_TIMEOUT_SECS: u64 = 60;
    /// Largest request line and headers, in bytes.
    pub const MAX_HEADER_BYTES: u64 = 16 * 1024;
    /// Connections that have not authenticated a request, at once.
    pub const MAX_UNAUTHENTICATED_CONNECTIONS: u64 = 16_384;
    /// Seconds between the server's pings on an idle WebSocket.
    pub const WS_PING_INTERVAL_SECS: u64 = 20;
    /// Seconds without a frame from the client before a WebSocket is closed.
    pub const WS_IDLE_TIMEOUT_SECS: u64 = 60;
    /// Seconds a client may take to take a frame before its WebSocket is closed.
    pub const WS_SEND_TIMEOUT_SECS: u64 = 30;
    /// Items buffered per connection for live push.
    pub const WS_PUSH_BUFFER: usize = 64;

    /// Password hashes computed at once: one per core, at least two.
    pub fn max_concurrent_password_hashes() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    }
}

/// Kept for callers that named the old constants.
pub const DEFAULT_DATABASE_URL: &str = defaults::DATABASE_URL;
/// See [`defaults::LISTEN_BACKLOG`].
pub const DEFAULT_LISTEN_BACKLOG: u32 = defaults::LISTEN_BACKLOG;
/// See [`defaults::NATS_URL`].
pub const DEFAULT_NATS_URL: &str = defaults::NATS_URL;

/// Courier server configuration. Every flag has an environment variable; defaults run on
/// a developer machine with a local PostgreSQL and nothing configured.
#[derive(Clone, Parser)]
#[command(
    name = "courier-server",
    version,
    about = "Courier: end-to-end-encrypted multi-device messaging server"
)]
pub struct Config {
    /// PostgreSQL URL for queries (on Fly.io the pooled one, through PgBouncer). Falls
    /// back to DATABASE_URL (as Fly.io sets it), then to the local default. TLS follows
    /// its `sslmode` (`require`, `verify-ca`, `verify-full` with `sslrootcert`).
    #[arg(long, env = "COURIER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// PostgreSQL URL that reaches the server itself, not a transaction pooler: LISTEN
    /// for the fabric, the migration lock and migrations. Falls back to
    /// DATABASE_DIRECT_URL, then to the query URL.
    #[arg(long, env = "COURIER_DATABASE_DIRECT_URL", hide_env_values = true)]
    database_direct_url: Option<String>,

    /// Address to listen on for the API. Unset, `[::]:$PORT` when PORT is set (a
    /// platform asks to be reached there), else 127.0.0.1:8080.
    #[arg(long, env = "COURIER_LISTEN")]
    listen: Option<SocketAddr>,

    /// The port a platform assigns (used only when COURIER_LISTEN is unset).
    #[arg(long, env = "PORT")]
    port: Option<u16>,

    /// Private address for /metrics and the admin API, or `off`. Never the public port.
    #[arg(long, env = "COURIER_ADMIN_LISTEN", default_value = defaults::ADMIN_LISTEN)]
    pub admin_listen: AdminListen,

    /// `true`: create the database if missing and apply migrations before serving (a
    /// local run). `false`: only check that the schema is current and refuse to start
    /// otherwise (a deploy runs `courier-server migrate` once, before the new version).
    #[arg(long, env = "COURIER_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Active devices a user may have at once.
    #[arg(long, env = "COURIER_DEVICE_LIMIT", default_value_t = defaults::DEVICE_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub device_limit: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "COURIER_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Largest envelope ciphertext accepted, in bytes.
    #[arg(long, env = "COURIER_MAX_ENVELOPE_BYTES", default_value_t = defaults::MAX_ENVELOPE_BYTES)]
    pub max_envelope_bytes: usize,

    /// Most envelopes one message may carry (one per recipient device).
    #[arg(long, env = "COURIER_MAX_ENVELOPES_PER_MESSAGE", default_value_t = defaults::MAX_ENVELOPES_PER_MESSAGE, value_parser = clap::value_parser!(u64).range(1..=10_000).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    pub max_envelopes_per_message: usize,

    /// Days an undelivered envelope is kept before it expires.
    #[arg(long, env = "COURIER_ENVELOPE_TTL_DAYS", default_value_t = defaults::ENVELOPE_TTL_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub envelope_ttl_days: u32,

    /// Seconds between two runs of the retention task (expired envelopes deleted).
    #[arg(long, env = "COURIER_RETENTION_INTERVAL_SECS", default_value_t = defaults::RETENTION_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub retention_interval_secs: u64,

    /// Rows the retention task deletes per statement.
    #[arg(long, env = "COURIER_RETENTION_BATCH", default_value_t = defaults::RETENTION_BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub retention_batch: i64,

    /// Shortest time between two batches of acknowledgements written, in milliseconds.
    /// Longer batches cover more messages per delivered receipt (fewer stream rows for the
    /// senders' devices); a delivered receipt waits at most this long.
    #[arg(long, env = "COURIER_ACK_BATCH_MS", default_value_t = defaults::ACK_BATCH_MS, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub ack_batch_ms: u64,

    /// Seconds an authenticated token is remembered without asking the database (a
    /// revoked token stops at once in every process regardless: the fabric says so).
    #[arg(long, env = "COURIER_TOKEN_CACHE_TTL_SECS", default_value_t = defaults::TOKEN_CACHE_TTL_SECS, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub token_cache_ttl_secs: u64,

    /// Password hashes computed at once (each Argon2id hash holds 19 MiB). Unset: one
    /// per core, at least two.
    #[arg(long, env = "COURIER_MAX_CONCURRENT_PASSWORD_HASHES", value_parser = clap::value_parser!(u64).range(1..=256).map(|n| usize::try_from(n).unwrap_or(1)))]
    pub max_concurrent_password_hashes: Option<usize>,

    /// Connections in the database pool.
    #[arg(long, env = "COURIER_DATABASE_MAX_CONNECTIONS", default_value_t = defaults::DATABASE_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Seconds a pooled database connection lives before it is replaced; 0: forever.
    #[arg(long, env = "COURIER_DATABASE_MAX_LIFETIME_SECS", default_value_t = defaults::DATABASE_MAX_LIFETIME_SECS)]
    pub database_max_lifetime_secs: u64,

    /// Seconds an unused pooled database connection is kept; 0: forever.
    #[arg(long, env = "COURIER_DATABASE_IDLE_TIMEOUT_SECS", default_value_t = defaults::DATABASE_IDLE_TIMEOUT_SECS)]
    pub database_idle_timeout_secs: u64,

    /// Seconds a request waits for a database connection before it fails.
    #[arg(long, env = "COURIER_DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = defaults::DATABASE_ACQUIRE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub database_acquire_timeout_secs: u64,

    /// How server processes sharing the database reach each other: `postgres`
    /// (LISTEN/NOTIFY, batched, over the direct URL), `nats` (NATS publish/subscribe, at
    /// COURIER_NATS_URL) or `none` (a single process).
    #[arg(long, env = "COURIER_FABRIC", value_enum, default_value_t = FabricName::Postgres)]
    pub fabric: FabricName,

    /// NATS server for `--fabric nats` (several separated by commas). It may carry
    /// credentials (`nats://user:password@host:4222` or `nats://token@host:4222`): they
    /// are never logged or shown.
    #[arg(long, env = "COURIER_NATS_URL", default_value = defaults::NATS_URL, hide_env_values = true)]
    nats_url: String,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "COURIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Connections the kernel queues for the server before it accepts them (capped by
    /// `net.core.somaxconn`): room for a reconnect storm.
    #[arg(long, env = "COURIER_LISTEN_BACKLOG", default_value_t = defaults::LISTEN_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub listen_backlog: u32,

    /// Seconds a request's line and headers may take from their first byte (a new
    /// connection's first request: from the connection's start).
    #[arg(long, env = "COURIER_HEADER_TIMEOUT_SECS", default_value_t = defaults::HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds an idle connection is kept open between requests.
    #[arg(long, env = "COURIER_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = defaults::KEEP_ALIVE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_timeout_secs: u64,

    /// Seconds a request body may take to arrive, from the end of its headers.
    #[arg(long, env = "COURIER_BODY_TIMEOUT_SECS", default_value_t = defaults::BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,

    /// Largest request line and headers, in bytes.
    #[arg(long, env = "COURIER_MAX_HEADER_BYTES", default_value_t = defaults::MAX_HEADER_BYTES, value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    pub max_header_bytes: u64,

    /// Connections that have not authenticated a request, at once; past it new ones are
    /// answered 503 too_many_connections.
    #[arg(long, env = "COURIER_MAX_UNAUTHENTICATED_CONNECTIONS", default_value_t = defaults::MAX_UNAUTHENTICATED_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_unauthenticated_connections: u64,

    /// Seconds between the server's pings on an idle WebSocket.
    #[arg(long, env = "COURIER_WS_PING_INTERVAL_SECS", default_value_t = defaults::WS_PING_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ws_ping_interval_secs: u64,

    /// Seconds without any frame from the client before its WebSocket is closed.
    #[arg(long, env = "COURIER_WS_IDLE_TIMEOUT_SECS", default_value_t = defaults::WS_IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_idle_timeout_secs: u64,

    /// Seconds a client may take to take a frame before its WebSocket is closed.
    #[arg(long, env = "COURIER_WS_SEND_TIMEOUT_SECS", default_value_t = defaults::WS_SEND_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ws_send_timeout_secs: u64,

    /// Items buffered per WebSocket for live push; past it the device catches up from
    /// its stream instead.
    #[arg(long, env = "COURIER_WS_PUSH_BUFFER", default_value_t = defaults::WS_PUSH_BUFFER, value_parser = clap::value_parser!(u64).range(1..=10_000).map(|n| usize::try_from(n).unwrap_or(1)))]
    pub ws_push_buffer: usize,

    /// `on` or `off`: `off` turns every rate limit off (for load tests).
    #[arg(long, env = "COURIER_RATE_LIMITS", value_enum, default_value_t = Switch::On)]
    pub rate_limits: Switch,

    /// A header that a trusted proxy in front of the server sets to the client's address
    /// (`Fly-Client-IP` on Fly.io). Unset, the rate limits key on the connection's peer
    /// address; set it only behind a proxy that overwrites the header, or clients choose
    /// their own address.
    #[arg(long, env = "COURIER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<axum::http::HeaderName>,

    /// Seconds between two sweeps of idle rate-limit entries.
    #[arg(long, env = "COURIER_RATE_LIMIT_EVICTION_SECS", default_value_t = rate_limits::DEFAULT_EVICTION_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub rate_limit_eviction_secs: u64,

    /// Login attempts per client address (rates: `60/min,burst=30`; units s, min, h).
    #[arg(long, env = "COURIER_RATE_LIMIT_LOGIN_PER_ADDRESS", default_value_t = rate_limits::DEFAULT_LOGIN_PER_ADDRESS)]
    pub rate_limit_login_per_address: Rate,

    /// Login attempts per account (username), from any address.
    #[arg(long, env = "COURIER_RATE_LIMIT_LOGIN_PER_ACCOUNT", default_value_t = rate_limits::DEFAULT_LOGIN_PER_ACCOUNT)]
    pub rate_limit_login_per_account: Rate,

    /// Accounts created per client address.
    #[arg(long, env = "COURIER_RATE_LIMIT_ACCOUNTS_PER_ADDRESS", default_value_t = rate_limits::DEFAULT_ACCOUNTS_PER_ADDRESS)]
    pub rate_limit_accounts_per_address: Rate,

    /// Keys a device claims (one per device a claim names).
    #[arg(long, env = "COURIER_RATE_LIMIT_CLAIMS_PER_DEVICE", default_value_t = rate_limits::DEFAULT_CLAIMS_PER_DEVICE)]
    pub rate_limit_claims_per_device: Rate,

    /// One-time keys handed out per claimed device; past it, claims get its fallback key.
    #[arg(long, env = "COURIER_RATE_LIMIT_CLAIMS_PER_TARGET", default_value_t = rate_limits::DEFAULT_CLAIMS_PER_TARGET)]
    pub rate_limit_claims_per_target: Rate,

    /// Messages a device sends (direct and channel).
    #[arg(long, env = "COURIER_RATE_LIMIT_SENDS_PER_DEVICE", default_value_t = rate_limits::DEFAULT_SENDS_PER_DEVICE)]
    pub rate_limit_sends_per_device: Rate,

    /// WebSocket connections a device opens.
    #[arg(long, env = "COURIER_RATE_LIMIT_SOCKETS_PER_DEVICE", default_value_t = rate_limits::DEFAULT_SOCKETS_PER_DEVICE)]
    pub rate_limit_sockets_per_device: Rate,

    /// WebSocket connections opened from one client address.
    #[arg(long, env = "COURIER_RATE_LIMIT_SOCKETS_PER_ADDRESS", default_value_t = rate_limits::DEFAULT_SOCKETS_PER_ADDRESS)]
    pub rate_limit_sockets_per_address: Rate,

    /// Who may create accounts: anyone (open), holders of a registration token an
    /// operator issued (token), or nobody (closed). docs/admin.md says why open is the
    /// default and the Fly.io kit sets token.
    #[arg(long, env = "COURIER_REGISTRATION", value_enum, default_value_t = RegistrationMode::Open)]
    pub registration: RegistrationMode,

    /// The admin API's bearer token (a secret, at least 32 characters). Unset, the admin
    /// API on the private listener answers 404 and `courier-server admin` cannot be used.
    #[arg(long, env = "COURIER_ADMIN_TOKEN", hide_env_values = true, value_parser = AdminTokenParser)]
    pub admin_token: Option<AdminToken>,
}

/// Who may create accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RegistrationMode {
    /// Anyone who can reach the server.
    #[default]
    Open,
    /// Only with a registration token from the admin API (single- or multi-use, expiring).
    Token,
    /// Nobody: existing accounts keep working.
    Closed,
}

/// The admin API's bearer token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Fewest characters accepted: a guessable admin token would hand out the server.
    pub const MIN_LEN: usize = 32;

    /// The token, to send or compare.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.chars().count() < Self::MIN_LEN {
            return Err(format!(
                "the admin token must be at least {} characters (e.g. `openssl rand -hex 32`)",
                Self::MIN_LEN
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the admin token cannot contain spaces or control characters".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

/// Parses an [`AdminToken`] with an error that never repeats the value (clap's own
/// errors quote it, and a rejected secret is still somebody's secret).
#[derive(Debug, Clone, Copy)]
struct AdminTokenParser;

impl TypedValueParser for AdminTokenParser {
    type Value = AdminToken;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<AdminToken, clap::Error> {
        let refused = |reason: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid admin token (--admin-token, COURIER_ADMIN_TOKEN): {reason}\n"),
            )
            .with_cmd(command)
        };
        let text = value.to_str().ok_or_else(|| refused("it is not UTF-8"))?;
        text.parse().map_err(|reason: String| refused(&reason))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

/// A switch on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// The fabric's name on the command line (see [`FabricKind`], which carries its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FabricName {
    /// One process only: nothing is sent.
    None,
    /// PostgreSQL `LISTEN`/`NOTIFY` (no other infrastructure).
    Postgres,
    /// NATS core publish/subscribe.
    Nats,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Which fabric connects the server processes.
#[derive(Clone, PartialEq, Eq)]
pub enum FabricKind {
    /// One process only: nothing is sent.
    None,
    /// PostgreSQL `LISTEN`/`NOTIFY` (no other infrastructure).
    Postgres,
    /// NATS core publish/subscribe.
    Nats {
        /// Server URL, or several separated by commas; may carry credentials.
        url: String,
    },
}

impl fmt::Debug for FabricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Postgres => f.write_str("Postgres"),
            Self::Nats { url } => f
                .debug_struct("Nats")
                .field("url", &redact_nats_url(url))
                .finish(),
        }
    }
}

/// Where the private listener (metrics, admin API) listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No private listener.
    Off,
    /// Listen at this address.
    At(SocketAddr),
}

impl FromStr for AdminListen {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            Ok(Self::Off)
        } else {
            text.parse().map(Self::At)
        }
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(address) => address.fmt(f),
        }
    }
}

/// Runtime limits and timings of a server instance (from [`Config`](crate::Config) in the
/// binary; tests build them directly).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Active devices a user may have at once.
    pub device_limit: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest envelope ciphertext accepted, in bytes (decoded).
    pub max_envelope_bytes: usize,
    /// Most envelopes one message may carry.
    pub max_envelopes_per_message: usize,
    /// Undelivered envelopes older than this are deleted.
    pub envelope_ttl: Duration,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// Rows the retention task deletes per statement.
    pub retention_batch: i64,
    /// How long an authenticated token is remembered without asking the database.
    pub token_cache_ttl: Duration,
    /// Password hashes computed at once (each Argon2id hash holds 19 MiB).
    pub max_concurrent_password_hashes: usize,
    /// How often the server pings an idle WebSocket.
    pub ws_ping_interval: Duration,
    /// A WebSocket with no frame from the client for this long is closed.
    pub ws_idle_timeout: Duration,
    /// A WebSocket whose client does not take a frame for this long is closed.
    pub ws_send_timeout: Duration,
    /// Items buffered per connection for live push; past this the device catches up
    /// from its inbox instead.
    pub ws_push_buffer: usize,
    /// Shortest time between two batches of acknowledgements written.
    pub ack_batch_interval: Duration,
    /// How this process reaches the others sharing its database.
    pub fabric: FabricKind,
    /// A request's line and headers must arrive within this of their first byte (a new
    /// connection's first request: of the connection's start).
    pub header_timeout: Duration,
    /// An idle connection between requests closes after this.
    pub keep_alive_timeout: Duration,
    /// A request body must arrive within this of the end of its headers.
    pub body_timeout: Duration,
    /// Largest request line and headers, in bytes.
    pub max_header_bytes: usize,
    /// Connections that have not authenticated a request, at once.
    pub max_unauthenticated_connections: usize,
    /// Rate limits per address, account and device.
    pub rate_limits: RateLimitSettings,
    /// Who may create accounts.
    pub registration: RegistrationMode,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<AdminToken>,
}

impl Default for Settings {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Self {
            device_limit: defaults::DEVICE_LIMIT,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_envelope_bytes: defaults::MAX_ENVELOPE_BYTES,
            max_envelopes_per_message: defaults::MAX_ENVELOPES_PER_MESSAGE,
            envelope_ttl: secs(u64::from(defaults::ENVELOPE_TTL_DAYS) * 24 * 3600),
            retention_interval: secs(defaults::RETENTION_INTERVAL_SECS),
            retention_batch: defaults::RETENTION_BATCH,
            token_cache_ttl: secs(defaults::TOKEN_CACHE_TTL_SECS),
            max_concurrent_password_hashes: defaults::max_concurrent_password_hashes(),
            ws_ping_interval: secs(defaults::WS_PING_INTERVAL_SECS),
            ws_idle_timeout: secs(defaults::WS_IDLE_TIMEOUT_SECS),
            ws_send_timeout: secs(defaults::WS_SEND_TIMEOUT_SECS),
            ws_push_buffer: defaults::WS_PUSH_BUFFER,
            ack_batch_interval: Duration::from_millis(defaults::ACK_BATCH_MS),
            fabric: FabricKind::Postgres,
            header_timeout: secs(defaults::HEADER_TIMEOUT_SECS),
            keep_alive_timeout: secs(defaults::KEEP_ALIVE_TIMEOUT_SECS),
            body_timeout: secs(defaults::BODY_TIMEOUT_SECS),
            max_header_bytes: usize::try_from(defaults::MAX_HEADER_BYTES).unwrap_or(usize::MAX),
            max_unauthenticated_connections: usize::try_from(
                defaults::MAX_UNAUTHENTICATED_CONNECTIONS,
            )
            .unwrap_or(usize::MAX),
            rate_limits: RateLimitSettings::default(),
            registration: RegistrationMode::Open,
            admin_token: None,
        }
    }
}

impl Config {
    /// The query database URL in force: flag or `COURIER_DATABASE_URL`, else
    /// `DATABASE_URL`, else [`defaults::DATABASE_URL`].
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| non_empty_env("DATABASE_URL"))
            .unwrap_or_else(|| defaults::DATABASE_URL.to_owned())
    }

    /// The direct database URL in force (LISTEN, the migration lock, migrations): flag or
    /// `COURIER_DATABASE_DIRECT_URL`, else `DATABASE_DIRECT_URL`, else the query URL.
    pub fn database_direct_url(&self) -> String {
        self.database_direct_url
            .clone()
            .or_else(|| non_empty_env("DATABASE_DIRECT_URL"))
            .unwrap_or_else(|| self.database_url())
    }

    /// The public listener's address: `COURIER_LISTEN`, else `[::]:$PORT`, else
    /// [`defaults::LISTEN`].
    pub fn listen_address(&self) -> SocketAddr {
        if let Some(listen) = self.listen {
            return listen;
        }
        match self.port {
            Some(port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            None => defaults::LISTEN
                .parse()
                .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080)),
        }
    }

    /// How the database pools are sized and how long their connections live.
    pub fn pool_settings(&self) -> PoolSettings {
        let optional = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        PoolSettings {
            max_connections: self.database_max_connections,
            max_lifetime: optional(self.database_max_lifetime_secs),
            idle_timeout: optional(self.database_idle_timeout_secs),
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout_secs),
        }
    }

    /// The fabric in force, with its settings.
    pub fn fabric(&self) -> FabricKind {
        match self.fabric {
            FabricName::None => FabricKind::None,
            FabricName::Postgres => FabricKind::Postgres,
            FabricName::Nats => FabricKind::Nats {
                url: self.nats_url.clone(),
            },
        }
    }

    /// The runtime limits this configuration sets.
    pub fn settings(&self) -> Settings {
        let secs = Duration::from_secs;
        Settings {
            device_limit: self.device_limit,
            max_body_bytes: self.max_body_bytes,
            max_envelope_bytes: self.max_envelope_bytes,
            max_envelopes_per_message: self.max_envelopes_per_message,
            envelope_ttl: secs(u64::from(self.envelope_ttl_days) * 24 * 3600),
            retention_interval: secs(self.retention_interval_secs),
            retention_batch: self.retention_batch,
            token_cache_ttl: secs(self.token_cache_ttl_secs),
            max_concurrent_password_hashes: self
                .max_concurrent_password_hashes
                .unwrap_or_else(defaults::max_concurrent_password_hashes),
            ws_ping_interval: secs(self.ws_ping_interval_secs),
            ws_idle_timeout: secs(self.ws_idle_timeout_secs),
            ws_send_timeout: secs(self.ws_send_timeout_secs),
            ws_push_buffer: self.ws_push_buffer,
            ack_batch_interval: Duration::from_millis(self.ack_batch_ms),
            fabric: self.fabric(),
            header_timeout: secs(self.header_timeout_secs),
            keep_alive_timeout: secs(self.keep_alive_timeout_secs),
            body_timeout: secs(self.body_timeout_secs),
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_unauthenticated_connections: usize::try_from(self.max_unauthenticated_connections)
                .unwrap_or(usize::MAX),
            rate_limits: RateLimitSettings {
                enabled: self.rate_limits == Switch::On,
                client_ip_header: self.client_ip_header.clone(),
                login_per_address: self.rate_limit_login_per_address,
                login_per_account: self.rate_limit_login_per_account,
                accounts_per_address: self.rate_limit_accounts_per_address,
                claims_per_device: self.rate_limit_claims_per_device,
                claims_per_target: self.rate_limit_claims_per_target,
                sends_per_device: self.rate_limit_sends_per_device,
                sockets_per_device: self.rate_limit_sockets_per_device,
                sockets_per_address: self.rate_limit_sockets_per_address,
                eviction_interval: secs(self.rate_limit_eviction_secs),
            },
            registration: self.registration,
            admin_token: self.admin_token.clone(),
        }
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// A database URL with its password replaced, safe to log or print.
pub fn redact_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = parsed.set_password(Some("redacted"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

/// NATS server URLs (one, or several separated by commas) with user names, passwords
/// and tokens replaced, safe to log or print.
pub fn redact_nats_url(urls: &str) -> String {
    urls.split(',')
        .map(|one| {
            let one = one.trim();
            // A bare `host:port` is a NATS URL too.
            let parsed = if one.contains("://") {
                url::Url::parse(one)
            } else {
                url::Url::parse(&format!("nats://{one}"))
            };
            match parsed {
                Ok(mut parsed) => {
                    // Only fails for URLs that cannot have credentials (no host).
                    if !parsed.username().is_empty() {
                        let _ = parsed.set_username("redacted");
                    }
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("redacted"));
                    }
                    parsed.to_string()
                }
                Err(_) => "<unparsable NATS URL>".to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database_url = self.database_url();
        let direct_url = self.database_direct_url();
        f.debug_struct("Config")
            .field("database_url", &redact_database_url(&database_url))
            .field(
                "database_direct_url",
                &if direct_url == database_url {
                    "(the query URL)".to_owned()
                } else {
                    redact_database_url(&direct_url)
                },
            )
            .field("listen", &self.listen_address())
            .field("admin_listen", &self.admin_listen)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("device_limit", &self.device_limit)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("max_envelopes_per_message", &self.max_envelopes_per_message)
            .field("envelope_ttl_days", &self.envelope_ttl_days)
            .field("retention_interval_secs", &self.retention_interval_secs)
            .field("retention_batch", &self.retention_batch)
            .field("ack_batch_ms", &self.ack_batch_ms)
            .field("token_cache_ttl_secs", &self.token_cache_ttl_secs)
            .field(
                "max_concurrent_password_hashes",
                &self.max_concurrent_password_hashes,
            )
            .field("pool", &self.pool_settings())
            .field("fabric", &self.fabric)
            .field("nats_url", &redact_nats_url(&self.nats_url))
            .field("log_format", &self.log_format)
            .field("listen_backlog", &self.listen_backlog)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("keep_alive_timeout_secs", &self.keep_alive_timeout_secs)
            .field("body_timeout_secs", &self.body_timeout_secs)
            .field("max_header_bytes", &self.max_header_bytes)
            .field(
                "max_unauthenticated_connections",
                &self.max_unauthenticated_connections,
            )
            .field("ws_ping_interval_secs", &self.ws_ping_interval_secs)
            .field("ws_idle_timeout_secs", &self.ws_idle_timeout_secs)
            .field("ws_send_timeout_secs", &self.ws_send_timeout_secs)
            .field("ws_push_buffer", &self.ws_push_buffer)
            .field("rate_limits", &self.rate_limits)
            .field("client_ip_header", &self.client_ip_header)
            .field("rate_limit_eviction_secs", &self.rate_limit_eviction_secs)
            .field(
                "rate_limit_login_per_address",
                &self.rate_limit_login_per_address,
            )
            .field(
                "rate_limit_login_per_account",
                &self.rate_limit_login_per_account,
            )
            .field(
                "rate_limit_accounts_per_address",
                &self.rate_limit_accounts_per_address,
            )
            .field(
                "rate_limit_claims_per_device",
                &self.rate_limit_claims_per_device,
            )
            .field(
                "rate_limit_claims_per_target",
                &self.rate_limit_claims_per_target,
            )
            .field(
                "rate_limit_sends_per_device",
                &self.rate_limit_sends_per_device,
            )
            .field(
                "rate_limit_sockets_per_device",
                &self.rate_limit_sockets_per_device,
            )
            .field(
                "rate_limit_sockets_per_address",
                &self.rate_limit_sockets_per_address,
            )
            .field("registration", &self.registration)
            .field("admin_token", &self.admin_token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_database_password() {
        let config = Config::parse_from([
            "courier-server",
            "--database-url",
            "postgres://courier:s3cret-pw@db.internal:5432/courier",
        ]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(debug.contains("db.internal"), "{debug}");
    }

    #[test]
    fn the_nats_url_is_redacted_in_debug() {
        let kind = FabricKind::Nats {
            url: "nats://courier:s3cret@nats.internal:4222".to_owned(),
        };
        let debug = format!("{kind:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("nats.internal"), "{debug}");
    }

    #[test]
    fn debug_hides_nats_credentials() {
        let config = Config::parse_from([
            "courier-server",
            "--fabric",
            "nats",
            "--nats-url",
            "nats://courier:s3cret-pw@nats-a.internal:4222, nats://t0ken-value@nats-b.internal",
        ]);
        let debug = format!("{config:?} {:?}", config.settings());
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(!debug.contains("t0ken-value"), "{debug}");
        assert!(debug.contains("nats-a.internal"), "{debug}");
        assert!(debug.contains("nats-b.internal"), "{debug}");
        assert_eq!(
            redact_nats_url("not a url with secret"),
            "<unparsable NATS URL>"
        );
    }

    #[test]
    fn the_fabric_defaults_to_postgres_and_nats_to_the_local_server() {
        let config = Config::parse_from(["courier-server"]);
        assert_eq!(config.fabric(), FabricKind::Postgres);
        let config = Config::parse_from(["courier-server", "--fabric", "nats"]);
        assert_eq!(
            config.fabric(),
            FabricKind::Nats {
                url: DEFAULT_NATS_URL.to_owned()
            }
        );
    }

    #[test]
    fn defaults_run_locally() {
        let config = Config::parse_from(["courier-server"]);
        assert_eq!(config.listen_address().to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9091");
        assert!(config.migrate_on_start);
        assert_eq!(config.device_limit, 5);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn a_platform_port_listens_on_every_address_and_courier_listen_wins() {
        let config = Config::parse_from(["courier-server", "--port", "3000"]);
        assert_eq!(config.listen_address().to_string(), "[::]:3000");
        let config = Config::parse_from([
            "courier-server",
            "--port",
            "3000",
            "--listen",
            "127.0.0.1:4000",
        ]);
        assert_eq!(config.listen_address().to_string(), "127.0.0.1:4000");
        let config = Config::parse_from(["courier-server", "--admin-listen", "off"]);
        assert_eq!(config.admin_listen, AdminListen::Off);
        let config = Config::parse_from(["courier-server", "--admin-listen", "[::]:9100"]);
        assert_eq!(config.admin_listen.to_string(), "[::]:9100");
        assert!(Config::try_parse_from(["courier-server", "--admin-listen", "nowhere"]).is_err());
    }

    #[test]
    fn the_direct_url_falls_back_to_the_query_url_and_is_redacted() {
        let config = Config::parse_from([
            "courier-server",
            "--database-url",
            "postgres://courier:pooled-secret@pgbouncer.internal:5432/courier",
        ]);
        assert_eq!(config.database_direct_url(), config.database_url());
        let config = Config::parse_from([
            "courier-server",
            "--database-url",
            "postgres://courier:pooled-secret@pgbouncer.internal:5432/courier",
            "--database-direct-url",
            "postgres://courier:direct-secret@direct.internal:5432/courier?sslmode=verify-full",
        ]);
        assert!(config.database_direct_url().contains("direct.internal"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("pooled-secret"), "{debug}");
        assert!(!debug.contains("direct-secret"), "{debug}");
        assert!(debug.contains("direct.internal"), "{debug}");
        assert!(debug.contains("pgbouncer.internal"), "{debug}");
    }

    #[test]
    fn pool_lifetimes_are_configurable_and_zero_means_none() {
        let pool = Config::parse_from(["courier-server"]).pool_settings();
        assert_eq!(
            pool,
            PoolSettings::with_max_connections(defaults::DATABASE_MAX_CONNECTIONS)
        );
        let pool = Config::parse_from([
            "courier-server",
            "--database-max-lifetime-secs",
            "0",
            "--database-idle-timeout-secs",
            "30",
            "--database-acquire-timeout-secs",
            "2",
            "--database-max-connections",
            "7",
        ])
        .pool_settings();
        assert_eq!(pool.max_lifetime, None);
        assert_eq!(pool.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(pool.acquire_timeout, Duration::from_secs(2));
        assert_eq!(pool.max_connections, 7);
    }

    #[test]
    fn the_binary_defaults_are_the_library_defaults() {
        let from_flags = format!("{:?}", Config::parse_from(["courier-server"]).settings());
        let library = format!("{:?}", Settings::default());
        assert_eq!(from_flags, library);
    }

    #[test]
    fn every_runtime_setting_has_a_flag() {
        let settings = Config::parse_from([
            "courier-server",
            "--max-envelopes-per-message",
            "9",
            "--retention-interval-secs",
            "5",
            "--retention-batch",
            "50",
            "--token-cache-ttl-secs",
            "0",
            "--max-concurrent-password-hashes",
            "3",
            "--ws-ping-interval-secs",
            "7",
            "--ws-idle-timeout-secs",
            "8",
            "--ws-send-timeout-secs",
            "6",
            "--ws-push-buffer",
            "11",
            "--rate-limit-eviction-secs",
            "12",
        ])
        .settings();
        assert_eq!(settings.max_envelopes_per_message, 9);
        assert_eq!(settings.retention_interval, Duration::from_secs(5));
        assert_eq!(settings.retention_batch, 50);
        assert_eq!(settings.token_cache_ttl, Duration::ZERO);
        assert_eq!(settings.max_concurrent_password_hashes, 3);
        assert_eq!(settings.ws_ping_interval, Duration::from_secs(7));
        assert_eq!(settings.ws_idle_timeout, Duration::from_secs(8));
        assert_eq!(settings.ws_send_timeout, Duration::from_secs(6));
        assert_eq!(settings.ws_push_buffer, 11);
        assert_eq!(
            settings.rate_limits.eviction_interval,
            Duration::from_secs(12)
        );
    }

    #[test]
    fn every_limit_reaches_the_settings() {
        let settings = Config::parse_from([
            "courier-server",
            "--device-limit",
            "7",
            "--max-body-bytes",
            "2000",
            "--max-envelope-bytes",
            "1000",
            "--envelope-ttl-days",
            "2",
            "--ack-batch-ms",
            "0",
        ])
        .settings();
        assert_eq!(settings.device_limit, 7);
        assert_eq!(settings.max_body_bytes, 2000);
        assert_eq!(settings.max_envelope_bytes, 1000);
        assert_eq!(settings.envelope_ttl, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(settings.ack_batch_interval, Duration::ZERO);
    }

    #[test]
    fn rate_limits_reach_the_settings_and_off_turns_them_off() {
        let defaults = Config::parse_from(["courier-server"])
            .settings()
            .rate_limits;
        let library = RateLimitSettings::default();
        assert!(defaults.enabled);
        assert_eq!(defaults.client_ip_header, None);
        assert_eq!(defaults.login_per_address, library.login_per_address);
        assert_eq!(defaults.login_per_account, library.login_per_account);
        assert_eq!(defaults.accounts_per_address, library.accounts_per_address);
        assert_eq!(defaults.claims_per_device, library.claims_per_device);
        assert_eq!(defaults.claims_per_target, library.claims_per_target);
        assert_eq!(defaults.sends_per_device, library.sends_per_device);
        assert_eq!(defaults.sockets_per_device, library.sockets_per_device);
        assert_eq!(defaults.sockets_per_address, library.sockets_per_address);

        let settings = Config::parse_from([
            "courier-server",
            "--rate-limits",
            "off",
            "--client-ip-header",
            "Fly-Client-IP",
            "--rate-limit-login-per-account",
            "3/h,burst=2",
            "--rate-limit-sends-per-device",
            "7/s",
        ])
        .settings()
        .rate_limits;
        assert!(!settings.enabled);
        assert_eq!(
            settings.client_ip_header.as_ref().map(|name| name.as_str()),
            Some("fly-client-ip")
        );
        assert_eq!(settings.login_per_account, Rate::per_hour(3, 2));
        assert_eq!(settings.sends_per_device, Rate::per_second(7, 7));
        assert!(
            Config::try_parse_from(["courier-server", "--rate-limit-sends-per-device", "0/s"])
                .is_err()
        );
    }

    #[test]
    fn the_readme_lists_every_setting() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let missing: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|argument| argument.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .filter(|env| !readme.contains(&format!("| `{env}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "README's configuration table lacks {missing:?}"
        );
    }

    #[test]
    fn registration_and_the_admin_token_reach_the_settings_and_the_token_stays_hidden() {
        let defaults = Config::parse_from(["courier-server"]).settings();
        assert_eq!(defaults.registration, RegistrationMode::Open);
        assert!(defaults.admin_token.is_none());
        let token = "0123456789abcdef0123456789abcdef-secret";
        let config = Config::parse_from([
            "courier-server",
            "--registration",
            "token",
            "--admin-token",
            token,
        ]);
        let settings = config.settings();
        assert_eq!(settings.registration, RegistrationMode::Token);
        assert_eq!(
            settings.admin_token.as_ref().map(AdminToken::expose),
            Some(token)
        );
        let printed = format!("{config:?} {settings:?}");
        assert!(!printed.contains("secret"), "{printed}");
        // A short token is refused with a message that says how to make a good one, and
        // that does not repeat it.
        let error = Config::try_parse_from(["courier-server", "--admin-token", "short-secret"])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("at least 32 characters"), "{error}");
        assert!(!error.contains("short-secret"), "{error}");
    }

    #[test]
    fn device_limit_must_be_positive() {
        assert!(Config::try_parse_from(["courier-server", "--device-limit", "0"]).is_err());
    }

    #[test]
    fn unparsable_urls_are_not_echoed() {
        assert_eq!(
            redact_database_url("not a url with secret"),
            "<unparsable database URL>"
        );
    }
}

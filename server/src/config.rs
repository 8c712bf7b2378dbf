//! Process configuration, from flags or environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::rate_limits::{self, Rate, RateLimitSettings};

/// The database used when nothing is configured: a local PostgreSQL with trust auth.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/courier";

/// Defaults of the connection limits (docs/api.md, "Limits", says why each).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 75;
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
pub const DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS: u64 = 16_384;

/// The NATS server used by `--fabric nats` when nothing is configured: a local one.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Courier server configuration. Every flag has an environment variable; defaults run on
/// a developer machine with a local PostgreSQL and nothing configured.
#[derive(Clone, Parser)]
#[command(
    name = "courier-server",
    version,
    about = "Courier: end-to-end-encrypted multi-device messaging server"
)]
pub struct Config {
    /// PostgreSQL URL. Falls back to DATABASE_URL (as Fly.io sets it), then to the local
    /// default. The database is created if missing and migrations are applied.
    #[arg(long, env = "COURIER_DATABASE_URL")]
    database_url: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Active devices a user may have at once.
    #[arg(long, env = "COURIER_DEVICE_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub device_limit: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "COURIER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest envelope ciphertext accepted, in bytes.
    #[arg(long, env = "COURIER_MAX_ENVELOPE_BYTES", default_value_t = 64 * 1024)]
    pub max_envelope_bytes: usize,

    /// Days an undelivered envelope is kept before it expires.
    #[arg(long, env = "COURIER_ENVELOPE_TTL_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub envelope_ttl_days: u32,

    /// Shortest time between two batches of acknowledgements written, in milliseconds.
    /// Longer batches cover more messages per delivered receipt (fewer stream rows for the
    /// senders' devices); a delivered receipt waits at most this long.
    #[arg(long, env = "COURIER_ACK_BATCH_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub ack_batch_ms: u64,

    /// Connections in the database pool.
    #[arg(long, env = "COURIER_DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// How server processes sharing the database reach each other: `postgres`
    /// (LISTEN/NOTIFY, batched), `nats` (NATS publish/subscribe, at COURIER_NATS_URL) or
    /// `none` (a single process).
    #[arg(long, env = "COURIER_FABRIC", value_enum, default_value_t = FabricName::Postgres)]
    pub fabric: FabricName,

    /// NATS server for `--fabric nats` (several separated by commas). It may carry
    /// credentials (`nats://user:password@host:4222` or `nats://token@host:4222`): they
    /// are never logged or shown.
    #[arg(long, env = "COURIER_NATS_URL", default_value = DEFAULT_NATS_URL, hide_env_values = true)]
    nats_url: String,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "COURIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Connections the kernel queues for the server before it accepts them (capped by
    /// `net.core.somaxconn`): room for a reconnect storm.
    #[arg(long, env = "COURIER_LISTEN_BACKLOG", default_value_t = DEFAULT_LISTEN_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub listen_backlog: u32,

    /// Seconds a request's line and headers may take from their first byte (a new
    /// connection's first request: from the connection's start).
    #[arg(long, env = "COURIER_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds an idle connection is kept open between requests.
    #[arg(long, env = "COURIER_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = DEFAULT_KEEP_ALIVE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_timeout_secs: u64,

    /// Seconds a request body may take to arrive, from the end of its headers.
    #[arg(long, env = "COURIER_BODY_TIMEOUT_SECS", default_value_t = DEFAULT_BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,

    /// Largest request line and headers, in bytes.
    #[arg(long, env = "COURIER_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES, value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    pub max_header_bytes: u64,

    /// Connections that have not authenticated a request, at once; past it new ones are
    /// answered 503 too_many_connections.
    #[arg(long, env = "COURIER_MAX_UNAUTHENTICATED_CONNECTIONS", default_value_t = DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_unauthenticated_connections: u64,

    /// `on` or `off`: `off` turns every rate limit off (for load tests).
    #[arg(long, env = "COURIER_RATE_LIMITS", value_enum, default_value_t = Switch::On)]
    pub rate_limits: Switch,

    /// A header that a trusted proxy in front of the server sets to the client's address
    /// (`Fly-Client-IP` on Fly.io). Unset, the rate limits key on the connection's peer
    /// address; set it only behind a proxy that overwrites the header, or clients choose
    /// their own address.
    #[arg(long, env = "COURIER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<axum::http::HeaderName>,

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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            device_limit: 5,
            max_body_bytes: 1024 * 1024,
            max_envelope_bytes: 64 * 1024,
            max_envelopes_per_message: 100,
            envelope_ttl: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
            retention_batch: 1000,
            token_cache_ttl: Duration::from_secs(10),
            max_concurrent_password_hashes: std::thread::available_parallelism()
                .map_or(2, |n| n.get().max(2)),
            ws_ping_interval: Duration::from_secs(20),
            ws_idle_timeout: Duration::from_secs(60),
            ws_send_timeout: Duration::from_secs(30),
            ws_push_buffer: 64,
            ack_batch_interval: Duration::from_millis(200),
            fabric: FabricKind::Postgres,
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            keep_alive_timeout: Duration::from_secs(DEFAULT_KEEP_ALIVE_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            max_header_bytes: usize::try_from(DEFAULT_MAX_HEADER_BYTES).unwrap_or(usize::MAX),
            max_unauthenticated_connections: usize::try_from(
                DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS,
            )
            .unwrap_or(usize::MAX),
            rate_limits: RateLimitSettings::default(),
        }
    }
}

impl Config {
    /// The database URL in force: flag or `COURIER_DATABASE_URL`, else `DATABASE_URL`,
    /// else [`DEFAULT_DATABASE_URL`].
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| {
                std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
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
        Settings {
            device_limit: self.device_limit,
            max_body_bytes: self.max_body_bytes,
            max_envelope_bytes: self.max_envelope_bytes,
            envelope_ttl: Duration::from_secs(u64::from(self.envelope_ttl_days) * 24 * 3600),
            ack_batch_interval: Duration::from_millis(self.ack_batch_ms),
            fabric: self.fabric(),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
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
                ..RateLimitSettings::default()
            },
            ..Settings::default()
        }
    }
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
        f.debug_struct("Config")
            .field("database_url", &redact_database_url(&self.database_url()))
            .field("listen", &self.listen)
            .field("device_limit", &self.device_limit)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("envelope_ttl_days", &self.envelope_ttl_days)
            .field("database_max_connections", &self.database_max_connections)
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
            .field("rate_limits", &self.rate_limits)
            .field("client_ip_header", &self.client_ip_header)
            .finish_non_exhaustive()
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
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.device_limit, 5);
        assert_eq!(config.log_format, LogFormat::Text);
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

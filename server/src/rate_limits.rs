//! Rate limits: keyed GCRA limiters (`governor`) per account, per device and per client
//! address, checked before a request does its expensive work (Argon2, database writes).
//!
//! Over a limit a request is answered `429 rate_limited` with `Retry-After` and stores
//! nothing; the one exception is a key claim whose *target* device is claimed too often:
//! it is not refused but served that device's fallback key, so nobody can drain a
//! device's one-time keys (docs/api.md, "Rate limits"; docs/decisions.md says why).
//!
//! Every server process has its own limiters: with N processes behind a load balancer a
//! client can get up to N times a limit.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use courier_protocol::ErrorCode;
use courier_protocol::api::errors::RateLimitDetails;
use courier_protocol::api::keys::DeviceRef;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::AppState;

/// A rate: `count` per `period` on average, at most `burst` at once (a client that has
/// been quiet for long enough may send `burst` requests back to back; after that, one
/// every `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per `period`, on average.
    pub count: u32,
    /// The period of `count`.
    pub period: Duration,
    /// Requests at once.
    pub burst: u32,
}

impl Rate {
    /// `count` per second, `burst` at once.
    pub const fn per_second(count: u32, burst: u32) -> Self {
        Self {
            count,
            period: Duration::from_secs(1),
            burst,
        }
    }

    /// `count` per minute, `burst` at once.
    pub const fn per_minute(count: u32, burst: u32) -> Self {
        Self {
            count,
            period: Duration::from_secs(60),
            burst,
        }
    }

    /// `count` per hour, `burst` at once.
    pub const fn per_hour(count: u32, burst: u32) -> Self {
        Self {
            count,
            period: Duration::from_secs(3600),
            burst,
        }
    }

    /// The governor quota of this rate (a zero count or burst counts as one).
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        let interval = (self.period / self.count.max(1)).max(Duration::from_nanos(1));
        Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst)
    }
}

/// `60/min,burst=30`: a count, `/s`, `/min` or `/h`, and optionally `,burst=N` (the burst
/// is the count when omitted).
impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax =
            || format!("{text:?} is not a rate like 60/min or 60/min,burst=30 (units: s, min, h)");
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let (count, unit) = rate.trim().split_once('/').ok_or_else(syntax)?;
        let count: u32 = count.trim().parse().map_err(|_| syntax())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(syntax()),
        };
        let burst = match burst {
            Some(burst) => burst
                .trim()
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse::<u32>().ok())
                .ok_or_else(syntax)?,
            None => count,
        };
        if count == 0 || burst == 0 {
            return Err(format!("{text:?}: a rate's count and burst are at least 1"));
        }
        if count > 1_000_000_000 {
            return Err(format!("{text:?}: at most 10^9 per period"));
        }
        Ok(Self {
            count,
            period,
            burst,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => return write!(f, "{}/{:?},burst={}", self.count, self.period, self.burst),
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

/// The rate limits of a server instance ([`Settings::rate_limits`](crate::Settings)).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Whether any limit applies (`COURIER_RATE_LIMITS=off` turns them all off).
    pub enabled: bool,
    /// A header holding the client's address, set by a trusted proxy in front of the
    /// server (`Fly-Client-IP` on Fly.io). `None`: the connection's peer address.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Login attempts per client address.
    pub login_per_address: Rate,
    /// Login attempts per account (username), whoever makes them.
    pub login_per_account: Rate,
    /// Accounts created per client address.
    pub accounts_per_address: Rate,
    /// Keys claimed per claiming device (one per device a claim names).
    pub claims_per_device: Rate,
    /// One-time keys handed out per claimed device; past it, its fallback key.
    pub claims_per_target: Rate,
    /// Messages sent (direct and channel) per device.
    pub sends_per_device: Rate,
    /// WebSocket connections opened per device.
    pub sockets_per_device: Rate,
    /// WebSocket connections opened per client address.
    pub sockets_per_address: Rate,
    /// How often keys whose allowance has fully come back are forgotten.
    pub eviction_interval: Duration,
}

/// The defaults (docs/api.md, "Rate limits", says why each).
pub const DEFAULT_LOGIN_PER_ADDRESS: Rate = Rate::per_minute(60, 30);
pub const DEFAULT_LOGIN_PER_ACCOUNT: Rate = Rate::per_minute(6, 10);
pub const DEFAULT_ACCOUNTS_PER_ADDRESS: Rate = Rate::per_hour(20, 20);
pub const DEFAULT_CLAIMS_PER_DEVICE: Rate = Rate::per_hour(1000, 1000);
pub const DEFAULT_CLAIMS_PER_TARGET: Rate = Rate::per_minute(30, 10);
pub const DEFAULT_SENDS_PER_DEVICE: Rate = Rate::per_second(50, 500);
pub const DEFAULT_SOCKETS_PER_DEVICE: Rate = Rate::per_minute(10, 10);
pub const DEFAULT_SOCKETS_PER_ADDRESS: Rate = Rate::per_second(100, 1000);
pub const DEFAULT_EVICTION_INTERVAL: Duration = Duration::from_secs(60);

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            client_ip_header: None,
            login_per_address: DEFAULT_LOGIN_PER_ADDRESS,
            login_per_account: DEFAULT_LOGIN_PER_ACCOUNT,
            accounts_per_address: DEFAULT_ACCOUNTS_PER_ADDRESS,
            claims_per_device: DEFAULT_CLAIMS_PER_DEVICE,
            claims_per_target: DEFAULT_CLAIMS_PER_TARGET,
            sends_per_device: DEFAULT_SENDS_PER_DEVICE,
            sockets_per_device: DEFAULT_SOCKETS_PER_DEVICE,
            sockets_per_address: DEFAULT_SOCKETS_PER_ADDRESS,
            eviction_interval: DEFAULT_EVICTION_INTERVAL,
        }
    }
}

impl RateLimitSettings {
    /// No limits at all (the default limits otherwise, should they be turned on).
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Which limit refused a request: the `limit` of a `rate_limited` answer's details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    LoginPerAddress,
    LoginPerAccount,
    AccountsPerAddress,
    ClaimsPerDevice,
    SendsPerDevice,
    SocketsPerDevice,
    SocketsPerAddress,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Self::LoginPerAddress => "login_per_address",
            Self::LoginPerAccount => "login_per_account",
            Self::AccountsPerAddress => "accounts_per_address",
            Self::ClaimsPerDevice => "claims_per_device",
            Self::SendsPerDevice => "sends_per_device",
            Self::SocketsPerDevice => "sockets_per_device",
            Self::SocketsPerAddress => "sockets_per_address",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::LoginPerAddress => "too many login attempts from this address; try again later",
            Self::LoginPerAccount => "too many login attempts for this account; try again later",
            Self::AccountsPerAddress => {
                "too many accounts created from this address; try again later"
            }
            Self::ClaimsPerDevice => "this device claimed too many keys; try again later",
            Self::SendsPerDevice => "this device sent too many messages; try again later",
            Self::SocketsPerDevice => {
                "this device opened too many WebSocket connections; try again later"
            }
            Self::SocketsPerAddress => {
                "too many WebSocket connections opened from this address; try again later"
            }
        }
    }
}

/// The client address a limit is keyed on: an IPv4 address, or an IPv6 address's /64
/// (one subscriber's network; its other addresses are free to take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddressKey(IpAddr);

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

type Keyed<K> = DefaultKeyedRateLimiter<K>;

/// The limiters of one server process, built from [`RateLimitSettings`].
pub(crate) struct RateLimits {
    enabled: bool,
    client_ip_header: Option<axum::http::HeaderName>,
    clock: DefaultClock,
    login_per_address: Keyed<AddressKey>,
    login_per_account: Keyed<String>,
    accounts_per_address: Keyed<AddressKey>,
    claims_per_device: Keyed<DeviceRef>,
    claims_per_device_burst: u32,
    claims_per_target: Keyed<DeviceRef>,
    sends_per_device: Keyed<DeviceRef>,
    sockets_per_device: Keyed<DeviceRef>,
    sockets_per_address: Keyed<AddressKey>,
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.enabled)
            .field("client_ip_header", &self.client_ip_header)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            enabled: settings.enabled,
            client_ip_header: settings.client_ip_header.clone(),
            clock: DefaultClock::default(),
            login_per_address: Keyed::keyed(settings.login_per_address.quota()),
            login_per_account: Keyed::keyed(settings.login_per_account.quota()),
            accounts_per_address: Keyed::keyed(settings.accounts_per_address.quota()),
            claims_per_device: Keyed::keyed(settings.claims_per_device.quota()),
            claims_per_device_burst: settings.claims_per_device.burst.max(1),
            claims_per_target: Keyed::keyed(settings.claims_per_target.quota()),
            sends_per_device: Keyed::keyed(settings.sends_per_device.quota()),
            sockets_per_device: Keyed::keyed(settings.sockets_per_device.quota()),
            sockets_per_address: Keyed::keyed(settings.sockets_per_address.quota()),
        }
    }

    /// Keys held over all limiters.
    fn len(&self) -> usize {
        self.login_per_address.len()
            + self.login_per_account.len()
            + self.accounts_per_address.len()
            + self.claims_per_device.len()
            + self.claims_per_target.len()
            + self.sends_per_device.len()
            + self.sockets_per_device.len()
            + self.sockets_per_address.len()
    }

    /// Forgets every key whose allowance has fully come back (it is indistinguishable
    /// from a key never seen) and gives the memory back.
    fn evict(&self) {
        macro_rules! evict {
            ($($limiter:ident),*) => {$(
                self.$limiter.retain_recent();
                self.$limiter.shrink_to_fit();
            )*};
        }
        evict!(
            login_per_address,
            login_per_account,
            accounts_per_address,
            claims_per_device,
            claims_per_target,
            sends_per_device,
            sockets_per_device,
            sockets_per_address
        );
    }

    /// `cost` units of `limiter` for `key`, or the `429` answer.
    fn take<K>(&self, limiter: &Keyed<K>, key: &K, cost: u32, limit: Limit) -> Result<(), ApiError>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        if !self.enabled {
            return Ok(());
        }
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let wait = match limiter.check_key_n(key, cost) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(self.clock.now()),
            // More than the burst at once could never pass; costs are capped at it, so
            // this does not happen.
            Err(_) => Duration::from_secs(60),
        };
        Err(rate_limited(limit, wait))
    }

    /// A login attempt from `address` for `username` (canonical; `None` when it breaks
    /// the username rules, so no account can have it). Counts every attempt, before the
    /// password is hashed.
    pub fn check_login(&self, address: IpAddr, username: Option<&str>) -> Result<(), ApiError> {
        self.take(
            &self.login_per_address,
            &AddressKey::from(address),
            1,
            Limit::LoginPerAddress,
        )?;
        if let Some(username) = username {
            self.take(
                &self.login_per_account,
                &username.to_owned(),
                1,
                Limit::LoginPerAccount,
            )?;
        }
        Ok(())
    }

    /// An account creation from `address`.
    pub fn check_account_creation(&self, address: IpAddr) -> Result<(), ApiError> {
        self.take(
            &self.accounts_per_address,
            &AddressKey::from(address),
            1,
            Limit::AccountsPerAddress,
        )
    }

    /// A claim by `claimer` naming `devices` devices: one unit each, at most the burst
    /// (so that the largest claim can pass).
    pub fn check_claims(&self, claimer: DeviceRef, devices: usize) -> Result<(), ApiError> {
        let cost = u32::try_from(devices)
            .unwrap_or(u32::MAX)
            .min(self.claims_per_device_burst);
        self.take(
            &self.claims_per_device,
            &claimer,
            cost,
            Limit::ClaimsPerDevice,
        )
    }

    /// Whether `target`'s one-time keys are being claimed faster than its limit (this
    /// claim then gets its fallback key). Counts this claim.
    pub fn target_over_limit(&self, target: DeviceRef) -> bool {
        self.enabled && self.claims_per_target.check_key(&target).is_err()
    }

    /// A message sent by `device`.
    pub fn check_send(&self, device: DeviceRef) -> Result<(), ApiError> {
        self.take(&self.sends_per_device, &device, 1, Limit::SendsPerDevice)
    }

    /// A WebSocket connection opened by `device` from `address`.
    pub fn check_socket(&self, address: IpAddr, device: DeviceRef) -> Result<(), ApiError> {
        self.take(
            &self.sockets_per_address,
            &AddressKey::from(address),
            1,
            Limit::SocketsPerAddress,
        )?;
        self.take(
            &self.sockets_per_device,
            &device,
            1,
            Limit::SocketsPerDevice,
        )
    }

    /// The client's address: the connection's peer, or, with a trusted proxy's header
    /// configured, that header's address (its last value, the one the nearest proxy
    /// wrote; the peer when it does not parse).
    fn client_address(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip());
        let Some(name) = &self.client_ip_header else {
            return peer;
        };
        headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|value| parse_address(value.trim()))
            .unwrap_or(peer)
    }
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `1.2.3.4:443`.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

/// The `429 rate_limited` answer: `Retry-After` in whole seconds, at least one.
fn rate_limited(limit: Limit, wait: Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    ApiError::new(ErrorCode::RateLimited, limit.message())
        .with_details(RateLimitDetails {
            limit: limit.as_str().to_owned(),
            retry_after_seconds: seconds,
        })
        .with_retry_after(seconds)
}

/// The address a request came from, as the rate limits see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        Ok(Self(state.rate_limits.client_address(&parts.headers, peer)))
    }
}

/// Forgets stale keys every `interval` until `stop` turns true, so that memory follows
/// the keys in use, not every key ever seen.
pub(crate) fn start_eviction(
    limits: Arc<RateLimits>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => limits.evict(),
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_the_same() {
        let rate: Rate = "60/min,burst=30".parse().unwrap();
        assert_eq!(rate, Rate::per_minute(60, 30));
        assert_eq!(rate.to_string(), "60/min,burst=30");
        assert_eq!("5/h".parse::<Rate>().unwrap(), Rate::per_hour(5, 5));
        assert_eq!(
            " 50/s , burst=200 ".parse::<Rate>().unwrap(),
            Rate::per_second(50, 200)
        );
        for bad in [
            "",
            "60",
            "60/day",
            "0/min",
            "1/min,burst=0",
            "x/min",
            "1/min,b=2",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        for default in [
            DEFAULT_LOGIN_PER_ADDRESS,
            DEFAULT_LOGIN_PER_ACCOUNT,
            DEFAULT_ACCOUNTS_PER_ADDRESS,
            DEFAULT_CLAIMS_PER_DEVICE,
            DEFAULT_CLAIMS_PER_TARGET,
            DEFAULT_SENDS_PER_DEVICE,
            DEFAULT_SOCKETS_PER_DEVICE,
            DEFAULT_SOCKETS_PER_ADDRESS,
        ] {
            assert_eq!(default.to_string().parse::<Rate>().unwrap(), default);
        }
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::from(one), AddressKey::from(same));
        assert_ne!(AddressKey::from(one), AddressKey::from(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            AddressKey::from(mapped),
            AddressKey::from("192.0.2.7".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn the_trusted_header_names_the_client_only_when_configured() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("fly-client-ip", "203.0.113.9".parse().unwrap());
        let untrusting = RateLimits::new(&RateLimitSettings::default());
        assert_eq!(untrusting.client_address(&headers, Some(peer)), peer.ip());
        let trusting = RateLimits::new(&RateLimitSettings {
            client_ip_header: Some(axum::http::HeaderName::from_static("fly-client-ip")),
            ..RateLimitSettings::default()
        });
        assert_eq!(
            trusting.client_address(&headers, Some(peer)),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        headers.insert("fly-client-ip", "not an address".parse().unwrap());
        assert_eq!(trusting.client_address(&headers, Some(peer)), peer.ip());
        headers.insert(
            "fly-client-ip",
            "198.51.100.1, [2001:db8::1]:443".parse().unwrap(),
        );
        assert_eq!(
            trusting.client_address(&headers, Some(peer)),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        use axum::response::IntoResponse;
        for (wait, expected) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1001), "2"),
            (Duration::from_secs(3600), "3600"),
        ] {
            let response = rate_limited(Limit::SendsPerDevice, wait).into_response();
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], expected);
        }
    }

    #[test]
    fn a_limit_refuses_past_its_burst_and_off_refuses_nothing() {
        let device = DeviceRef::new(
            courier_protocol::UserId::new_random(),
            courier_protocol::DeviceId::new(1).unwrap(),
        );
        let settings = RateLimitSettings {
            sends_per_device: Rate::per_hour(2, 2),
            ..RateLimitSettings::default()
        };
        let limits = RateLimits::new(&settings);
        assert!(limits.check_send(device).is_ok());
        assert!(limits.check_send(device).is_ok());
        assert!(limits.check_send(device).is_err());
        let off = RateLimits::new(&RateLimitSettings {
            enabled: false,
            ..settings
        });
        for _ in 0..10 {
            assert!(off.check_send(device).is_ok());
        }
    }
}

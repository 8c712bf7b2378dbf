//! Pacing of reconnects: exponential backoff with full jitter.
//!
//! After the `n`th failure in a row the next delay is drawn uniformly from
//! `0..=min(max, initial × 2ⁿ)`. The jitter spreads out the devices that lost their
//! connection together (a server restart), so they do not all come back in the same
//! instant. A connection that stayed up for a while resets the sequence.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shape of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// No delay is longer than this.
    pub max: Duration,
    /// A connection that stayed up at least this long resets the backoff when it ends
    /// (see [`Backoff::connection_ended`]).
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 250 ms doubling up to 30 s; reset after a connection stayed up 30 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Delays between reconnect attempts.
///
/// ```
/// use courier_sdk::transport::{Backoff, BackoffPolicy};
///
/// let mut backoff = Backoff::new(BackoffPolicy::default());
/// let first = backoff.next_delay();
/// assert!(first <= BackoffPolicy::default().initial);
/// backoff.reset();
/// ```
#[derive(Debug, Clone)]
pub struct Backoff<R = StdRng> {
    policy: BackoffPolicy,
    /// Failures since the last reset.
    failures: u32,
    rng: R,
}

impl Backoff<StdRng> {
    /// A backoff with jitter from an RNG seeded by the operating system.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self::with_rng(policy, StdRng::from_entropy())
    }
}

impl Default for Backoff<StdRng> {
    fn default() -> Self {
        Self::new(BackoffPolicy::default())
    }
}

impl<R: Rng> Backoff<R> {
    /// A backoff drawing its jitter from `rng` (a seeded one makes it deterministic).
    pub fn with_rng(policy: BackoffPolicy, rng: R) -> Self {
        Self {
            policy,
            failures: 0,
            rng,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// How many delays were handed out since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the next delay: `min(max, initial × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let doubling = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        self.policy
            .initial
            .saturating_mul(doubling)
            .min(self.policy.max)
    }

    /// The delay before the next attempt, drawn uniformly from `0..=ceiling()`; the
    /// ceiling doubles for the attempt after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        self.rng.gen_range(Duration::ZERO..=ceiling)
    }

    /// The delay before retrying after `error`: the next delay, but never shorter than
    /// the server's `Retry-After`. `None` when the server asks for longer than the
    /// policy's `max`: the caller should give the error to the app instead of waiting.
    pub fn delay_after(&mut self, error: &super::TransportError) -> Option<Duration> {
        let delay = self.next_delay();
        match error.retry_after() {
            Some(asked) if asked > self.policy.max => None,
            Some(asked) => Some(delay.max(asked)),
            None => Some(delay),
        }
    }

    /// Starts over from the initial delay (the connection is healthy again).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records that a connection ended after being up for `uptime`: one that lasted
    /// [`stable_after`](BackoffPolicy::stable_after) resets the backoff, so a single drop
    /// is retried quickly while a connection that keeps failing at once backs off.
    pub fn connection_ended(&mut self, uptime: Duration) {
        if uptime >= self.policy.stable_after {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_saturates_instead_of_overflowing() {
        let mut backoff = Backoff::with_rng(BackoffPolicy::default(), StdRng::seed_from_u64(1));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= BackoffPolicy::default().max);
        }
        assert_eq!(backoff.ceiling(), BackoffPolicy::default().max);
    }

    fn refused(retry_after: Option<Duration>) -> super::super::TransportError {
        super::super::TransportError::Api {
            status: 429,
            code: courier_protocol::ErrorCode::RateLimited,
            message: "slow down".into(),
            details: None,
            retry_after,
        }
    }

    #[test]
    fn the_servers_retry_after_is_a_floor_and_a_long_one_is_not_waited_out() {
        let mut backoff = Backoff::with_rng(BackoffPolicy::default(), StdRng::seed_from_u64(2));
        let asked = Duration::from_secs(5);
        assert!(backoff.delay_after(&refused(Some(asked))).unwrap() >= asked);
        assert_eq!(
            backoff.delay_after(&refused(Some(Duration::from_secs(31)))),
            None
        );
        let mut fresh = Backoff::with_rng(BackoffPolicy::default(), StdRng::seed_from_u64(3));
        assert!(fresh.delay_after(&refused(None)).unwrap() <= BackoffPolicy::default().initial);
    }
}

//! Reconnect policy: exponential backoff with full jitter.
//!
//! Owns: [`ReconnectPolicy`] and the delay before each reconnect attempt:
//! `delay_n = random(0, min(cap, base * 2^n))` for the `n`-th consecutive failed attempt
//! (`n` from 0), as in "Exponential Backoff And Jitter" (AWS architecture blog). Full
//! jitter spreads the reconnects of many clients that lost the same broker at the same
//! moment, so a restarted broker is not hit by all of them at once.
//!
//! Never: sleeps or reads the clock. It computes delays; the I/O thread waits them out in
//! its poll, where a `close` can interrupt the wait.

use std::time::Duration;

use crate::random::SplitMix64;

/// When and how often a client reconnects after losing its connection.
///
/// The delay before attempt `n` (0 for the first attempt after a loss, counting
/// consecutive failures) is uniformly random in `0..=min(cap, base * 2^n)`. A successful
/// handshake resets `n` to 0. After `max_attempts` consecutive failed attempts the client
/// gives up and closes ([`Event::Closed`](crate::Event::Closed)); `None` retries forever.
///
/// ```
/// use std::time::Duration;
/// use tern_client::ReconnectPolicy;
///
/// let policy = ReconnectPolicy::new(Duration::from_millis(50), Duration::from_secs(2))
///     .max_attempts(Some(10));
/// // The schedule is reproducible for a given seed (see `ClientBuilder::jitter_seed`).
/// let delays: Vec<Duration> = policy.schedule(42).collect();
/// assert_eq!(delays.len(), 10);
/// assert!(delays[0] <= Duration::from_millis(50));
/// assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    base: Duration,
    cap: Duration,
    max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    /// Base 100 ms, cap 5 s, retry forever.
    fn default() -> Self {
        ReconnectPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// Backoff from `base` doubling up to `cap`, retrying forever.
    pub fn new(base: Duration, cap: Duration) -> ReconnectPolicy {
        ReconnectPolicy {
            base,
            cap,
            max_attempts: None,
        }
    }

    /// Never reconnect: a lost connection closes the client.
    pub fn disabled() -> ReconnectPolicy {
        ReconnectPolicy {
            max_attempts: Some(0),
            ..ReconnectPolicy::default()
        }
    }

    /// Give up after this many consecutive failed attempts (`None`: never give up).
    pub fn max_attempts(mut self, max: Option<u32>) -> ReconnectPolicy {
        self.max_attempts = max;
        self
    }

    /// The first delay's upper bound.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest upper bound any delay has.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The attempt limit, if any.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// True when attempt `attempt` (0-based count of consecutive failures) may be made.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt < max)
    }

    /// The upper bound of delay `attempt`: `min(cap, base * 2^attempt)`, saturating.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before attempt `attempt`, drawn from `rng`.
    pub(crate) fn delay(&self, attempt: u32, rng: &mut SplitMix64) -> Duration {
        rng.duration_up_to(self.ceiling(attempt))
    }

    /// The delays this policy waits before each attempt when every attempt fails, drawn
    /// from a generator seeded with `seed`: what a client built with the same
    /// [`jitter_seed`](crate::ClientBuilder::jitter_seed) waits. Endless when there is no
    /// attempt limit.
    pub fn schedule(&self, seed: u64) -> impl Iterator<Item = Duration> {
        let policy = *self;
        let mut rng = SplitMix64::seeded(seed);
        (0u32..)
            .take_while(move |&n| policy.allows(n))
            .map(move |n| policy.delay(n, &mut rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_then_cap() {
        let p = ReconnectPolicy::new(100 * MS, 1000 * MS);
        let c: Vec<u128> = (0..6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(c, [100, 200, 400, 800, 1000, 1000]);
        // No overflow however many attempts.
        assert_eq!(p.ceiling(u32::MAX), 1000 * MS);
        let huge = ReconnectPolicy::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        assert_eq!(huge.ceiling(1), Duration::from_secs(u64::MAX / 4) * 2);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn seeded_schedule_is_reproducible_and_within_full_jitter_bounds() {
        let p = ReconnectPolicy::new(100 * MS, 1600 * MS).max_attempts(Some(8));
        let a: Vec<Duration> = p.schedule(99).collect();
        let b: Vec<Duration> = p.schedule(99).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
        for (n, d) in a.iter().enumerate() {
            assert!(*d <= p.ceiling(n as u32), "delay {n} = {d:?}");
        }
        assert_ne!(a, p.schedule(100).collect::<Vec<_>>());

        // The exact values for seed 99: the same draws as a SplitMix64 stream mapped into
        // 0..=ceiling, so a change to the formula or the generator shows up here.
        let mut rng = SplitMix64::seeded(99);
        let expected: Vec<Duration> = (0..8)
            .map(|n| {
                let max = p.ceiling(n).as_nanos() as u64;
                let draw = ((u128::from(rng.next_u64()) * u128::from(max + 1)) >> 64) as u64;
                Duration::from_nanos(draw)
            })
            .collect();
        assert_eq!(a, expected);
    }

    #[test]
    fn full_jitter_uses_the_whole_range() {
        // Over many draws, delays land both in the lower and the upper half of each range
        // (full jitter, not "half jitter" or a fixed delay).
        let p = ReconnectPolicy::new(100 * MS, 400 * MS).max_attempts(Some(4));
        let (mut low, mut high) = (0, 0);
        for seed in 0..200 {
            for (n, d) in p.schedule(seed).enumerate() {
                if d < p.ceiling(n as u32) / 2 {
                    low += 1;
                } else {
                    high += 1;
                }
            }
        }
        assert!(low > 300 && high > 300, "low {low} high {high}");
    }

    #[test]
    fn attempt_limits() {
        assert_eq!(ReconnectPolicy::disabled().schedule(1).count(), 0);
        assert!(!ReconnectPolicy::disabled().allows(0));
        let p = ReconnectPolicy::default().max_attempts(Some(3));
        assert!(p.allows(2) && !p.allows(3));
        assert_eq!(
            ReconnectPolicy::default().schedule(1).take(100).count(),
            100
        );
    }
}

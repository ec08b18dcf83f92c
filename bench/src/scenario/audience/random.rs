//! Deterministic randomness for the audience: a small seeded generator, exponential
//! (Poisson-process) gaps and exponential backoff with full jitter.
//!
//! Owns: [`Rng`] (SplitMix64: tiny, fast, good enough for load shapes; not for anything
//! secret) and the two distributions the scenario draws from. Each user has its own
//! generator seeded from the run's seed and its id, so a run's shape does not depend on
//! how users are spread over threads.
//!
//! Never: reads a clock or the OS's entropy.

use std::time::Duration;

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `stream` (e.g. a user id) of the run seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng {
            state: seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        // Mix once so neighbouring streams do not start with related outputs.
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits, as many as an f64 mantissa holds.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed duration with mean `mean`: the gap between two events
    /// of a Poisson process. Capped at 1000 × the mean (a 1-in-e^1000 draw) so a sum of
    /// gaps never overflows.
    pub fn exponential(&mut self, mean: Duration) -> Duration {
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        let x = -(1.0 - self.unit()).ln();
        mean.mul_f64(x.min(1000.0))
    }

    /// Uniform in `[0, max]`.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }
}

/// Exponential backoff with full jitter: before retry number `attempt` (0 for the first
/// try after a drop), wait a uniform time in `[0, min(cap, base × 2^attempt)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first window.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
}

impl Backoff {
    /// The window for `attempt`: `min(cap, base × 2^attempt)`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// How long to wait before `attempt`.
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        rng.up_to(self.window(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(8, 1).next_u64());
    }

    #[test]
    fn unit_is_in_range_with_the_right_mean() {
        let mut rng = Rng::new(1, 0);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn exponential_gaps_have_the_asked_mean() {
        let mut rng = Rng::new(3, 0);
        let mean = Duration::from_millis(100);
        let n = 100_000;
        let total: Duration = (0..n).map(|_| rng.exponential(mean)).sum();
        let got = total.as_secs_f64() / n as f64;
        assert!((got - 0.1).abs() < 0.002, "{got}");
    }

    #[test]
    fn backoff_windows_double_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.window(0), Duration::from_millis(100));
        assert_eq!(b.window(1), Duration::from_millis(200));
        assert_eq!(b.window(3), Duration::from_millis(800));
        assert_eq!(b.window(4), Duration::from_secs(1));
        assert_eq!(b.window(1000), Duration::from_secs(1));
        let mut rng = Rng::new(5, 0);
        for attempt in 0..10 {
            let d = b.delay(attempt, &mut rng);
            assert!(d <= b.window(attempt), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        };
        let mut rng = Rng::new(9, 0);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(2, &mut rng)).collect();
        assert!(delays.iter().any(|&d| d < Duration::from_millis(40)));
        assert!(delays.iter().any(|&d| d > Duration::from_millis(360)));
    }
}

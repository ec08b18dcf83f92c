//! The client's only source of randomness: a SplitMix64 generator.
//!
//! Owns: [`SplitMix64`], used for reconnect jitter and inbox names, and its seeding from
//! the standard library's per-process random hash keys (no extra dependency).
//!
//! Never: serves anything that needs to be unpredictable to an attacker. Jitter and inbox
//! names only need to differ between clients; a seeded generator makes the reconnect
//! schedule reproducible in tests.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SplitMix64 (Steele, Lea and Flood): a tiny generator with a 64-bit state that passes
/// BigCrush; good for jitter, not for secrets.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that always produces the same sequence for the same seed.
    pub(crate) fn seeded(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator seeded differently in every process and every call: from a fresh
    /// `RandomState` (random keys per process, advanced per call) and the clock.
    pub(crate) fn from_entropy() -> SplitMix64 {
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        SplitMix64::seeded(h.finish())
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly random number in `0..=max` (Lemire's multiply-shift; the bias for a
    /// 64-bit draw is below 2^-64 per value, irrelevant for jitter).
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        ((u128::from(self.next_u64()) * u128::from(max + 1)) >> 64) as u64
    }

    /// A uniformly random duration in `0..=max`, at nanosecond resolution.
    pub(crate) fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.up_to(nanos))
    }

    /// `len` random characters from `[0-9A-Za-z]`, for inbox names.
    pub(crate) fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| ALPHABET[self.up_to(61) as usize] as char)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // SplitMix64 reference outputs for seed 1234567.
        let mut r = SplitMix64::seeded(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn bounded_draws_stay_in_range_and_cover_it() {
        let mut r = SplitMix64::seeded(7);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let v = r.up_to(3);
            assert!(v <= 3);
            seen[v as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert_eq!(r.up_to(0), 0);
        assert!(r.duration_up_to(Duration::from_millis(5)) <= Duration::from_millis(5));
        let t = r.token(22);
        assert_eq!(t.len(), 22);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn entropy_seeds_differ() {
        let a = SplitMix64::from_entropy().next_u64();
        let b = SplitMix64::from_entropy().next_u64();
        assert_ne!(a, b);
    }
}

//! Broker latency: how long a message waited inside the broker, per worker.
//!
//! Owns: one worker's histogram of the time from the loop turn in which the publisher's
//! worker read a message to the write that put the last byte of one delivery of it into the
//! subscriber's socket (in microseconds, 3 significant digits, up to [`MAX_MICROS`]; longer
//! waits are recorded as the maximum), and the exact sum of those times. The worker that
//! writes the delivery records it; that worker alone touches its `Latency`. The monitoring
//! thread gets a copy through a snapshot request and merges the workers' copies.
//!
//! Never: is shared, locked or allocated on the data path. `record` is a few arithmetic
//! operations on a fixed-size array.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency told apart: 60 s. Anything longer counts as 60 s.
pub(crate) const MAX_MICROS: u64 = 60_000_000;

/// The quantiles reported everywhere (`/varz`, `/metrics`, `tern top`).
pub(crate) const QUANTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (0.999, "p999")];

/// A worker's latency histogram.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    pub hist: Histogram<u64>,
    /// Sum of every recorded value, in microseconds (after clamping to the maximum).
    pub sum_micros: u64,
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
            sum_micros: 0,
        }
    }

    #[cfg(test)]
    pub fn record(&mut self, waited: Duration) {
        self.record_n(waited, 1);
    }

    /// Records `n` deliveries that each waited `waited`.
    #[inline]
    pub fn record_n(&mut self, waited: Duration, n: u64) {
        let micros = u64::try_from(waited.as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS);
        self.hist.saturating_record_n(micros, n);
        self.sum_micros = self.sum_micros.wrapping_add(micros.wrapping_mul(n));
    }

    /// Adds another worker's values.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on every worker, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sum_micros = self.sum_micros.wrapping_add(other.sum_micros);
    }

    /// Count, sum, quantiles and maximum, for reporting.
    pub fn summary(&self) -> LatencySummary {
        let q = |p: f64| self.hist.value_at_quantile(p);
        LatencySummary {
            count: self.hist.len(),
            sum_micros: self.sum_micros,
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: self.hist.max(),
        }
    }
}

/// What `/varz` reports about latency, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LatencySummary {
    /// Deliveries measured.
    pub count: u64,
    pub sum_micros: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1001);
        assert_eq!(s.sum_micros, 500_500 + MAX_MICROS);
        assert!((499..=501).contains(&s.p50), "{s:?}");
        assert!((949..=951).contains(&s.p95), "{s:?}");
        // The clamped hour is the maximum (within the histogram's precision).
        assert!(s.max >= MAX_MICROS - MAX_MICROS / 1000, "{s:?}");
    }
}

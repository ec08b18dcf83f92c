//! Latency histograms and their percentiles.
//!
//! Owns: [`LatencyHistogram`], an HDR histogram of nanoseconds (3 significant digits, 1 ns
//! to 60 s; larger values are clamped to 60 s and counted in `clamped`), and
//! [`Percentiles`], the plain figures a report prints.
//!
//! Invariant callers rely on: a recorded value is never lost — out-of-range values are
//! clamped, not dropped, so `count` always equals the number of `record` calls.
//!
//! Never: reads a clock. Callers measure; this only counts.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest value tracked exactly: 60 s in nanoseconds.
pub const MAX_NANOS: u64 = 60_000_000_000;

/// A histogram of latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            // The bounds are constants that satisfy hdrhistogram's rules (low >= 1,
            // high >= 2 * low, sigfig <= 5), so this cannot fail.
            hist: Histogram::new_with_bounds(1, MAX_NANOS, 3)
                .expect("constant histogram bounds are valid"),
            clamped: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, nanos: u64) {
        let v = if nanos > MAX_NANOS {
            self.clamped += 1;
            MAX_NANOS
        } else {
            nanos.max(1)
        };
        self.hist.saturating_record(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so `add` cannot fail; saturating on overflow.
        let _ = self.hist.add(&other.hist);
        self.clamped += other.clamped;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0.0..=1.0), in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// The summary a report prints.
    pub fn percentiles(&self) -> Percentiles {
        let empty = self.hist.is_empty();
        Percentiles {
            count: self.count(),
            clamped: self.clamped,
            min_ns: if empty { 0 } else { self.hist.min() },
            mean_ns: if empty { 0.0 } else { self.hist.mean() },
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            p999_ns: self.quantile(0.999),
            p9999_ns: self.quantile(0.9999),
            max_ns: if empty { 0 } else { self.hist.max() },
        }
    }
}

/// A latency summary, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Values above [`MAX_NANOS`], recorded as [`MAX_NANOS`].
    pub clamped: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Largest value.
    pub max_ns: u64,
}

impl Percentiles {
    /// The labelled percentiles, in the order reports and charts show them.
    pub fn points(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_ns),
            ("p90", self.p90_ns),
            ("p99", self.p99_ns),
            ("p99.9", self.p999_ns),
            ("p99.99", self.p9999_ns),
            ("max", self.max_ns),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within hdrhistogram's 3-significant-digit precision.
    fn close(a: u64, b: u64) -> bool {
        a.abs_diff(b) as f64 <= b as f64 * 0.001 + 1.0
    }

    #[test]
    fn uniform_values_give_their_percentiles() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100_000);
        assert!(close(p.p50_ns, 50_000_000), "{p:?}");
        assert!(close(p.p90_ns, 90_000_000), "{p:?}");
        assert!(close(p.p99_ns, 99_000_000), "{p:?}");
        assert!(close(p.p999_ns, 99_900_000), "{p:?}");
        assert!(close(p.p9999_ns, 99_990_000), "{p:?}");
        assert!(close(p.max_ns, 100_000_000), "{p:?}");
        assert!(close(p.min_ns, 1000), "{p:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(MAX_NANOS * 10);
        let p = h.percentiles();
        assert_eq!(p.count, 2);
        assert_eq!(p.clamped, 1);
        assert_eq!(p.min_ns, 1);
        assert!(close(p.max_ns, MAX_NANOS));
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(MAX_NANOS + 1);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.percentiles().clamped, 1);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let p = LatencyHistogram::new().percentiles();
        assert_eq!(p.count, 0);
        assert_eq!(p.max_ns, 0);
        assert_eq!(p.p99_ns, 0);
    }
}

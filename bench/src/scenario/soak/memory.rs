//! The broker's memory during a soak: samples of `/proc/<pid>/status`, the bound its
//! settings allow, and the rule that says whether it stayed flat.
//!
//! Owns: [`MemorySample`] and reading one ([`read_status`]); the [`Sampler`] thread that
//! takes one every interval; [`MemoryBound`], the most `ternd` may hold given the budgets
//! it was started with, written as a sum of named terms so the report can show where the
//! number comes from; and [`Flatness`], the growth check over the run after warm-up.
//!
//! The rule for "flat": after warm-up, the samples are split into two halves; the largest
//! `VmRSS` of the second half may exceed the largest of the first by at most
//! [`GROWTH_ALLOWANCE_KIB`] plus a percentage of it (allocator noise; the caller chooses:
//! a one-minute run is mostly warm-up and needs more than a ten-minute one). A leak of a
//! few MiB over a long run fails it; so does anything that keeps growing, whatever its
//! rate, once the run is long enough. Separately every sample must stay under the bound.
//!
//! Never: reads anything but the one process's status file, or waits without a deadline
//! (the sampler stops within one interval of being told to).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Extra KiB the second half of the run may reach over the first, whatever the size.
pub const GROWTH_ALLOWANCE_KIB: u64 = 4 * 1024;

/// One reading of the broker's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemorySample {
    /// Milliseconds since the soak started.
    pub at_ms: u64,
    /// Resident set: everything below together.
    pub vm_rss_kib: u64,
    /// Anonymous pages (the heap, stacks): where a leak shows.
    pub rss_anon_kib: u64,
    /// File-backed pages: the binary and the memory-mapped ring logs.
    pub rss_file_kib: u64,
    /// The peak resident set so far (`VmHWM`).
    pub vm_hwm_kib: u64,
}

/// Reads `/proc/<pid>/status`; `None` once the process is gone.
pub fn read_status(pid: u32, at_ms: u64) -> Option<MemorySample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status, at_ms)
}

/// The memory fields of a status file's text.
pub fn parse_status(status: &str, at_ms: u64) -> Option<MemorySample> {
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(MemorySample {
        at_ms,
        vm_rss_kib: field("VmRSS")?,
        rss_anon_kib: field("RssAnon").unwrap_or(0),
        rss_file_kib: field("RssFile").unwrap_or(0),
        vm_hwm_kib: field("VmHWM").unwrap_or(0),
    })
}

/// A thread that samples one process's memory every interval until stopped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<MemorySample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid` every `every`, times measured from `origin`.
    pub fn start(pid: u32, origin: Instant, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("soak-rss".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let at = origin.elapsed().as_millis() as u64;
                        match read_status(pid, at) {
                            Some(s) => samples
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(s),
                            None => return,
                        }
                        thread::sleep(every);
                    }
                })
                .ok()
        };
        Sampler {
            samples,
            stop,
            thread,
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<MemorySample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the thread and returns every sample.
    pub fn finish(mut self) -> Vec<MemorySample> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// One named part of the bound, in KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundTerm {
    /// What it covers and which settings it comes from.
    pub what: String,
    /// Its size.
    pub kib: u64,
}

/// The most `ternd`'s resident set may be, as a sum of terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBound {
    /// The terms, the measured baseline first.
    pub terms: Vec<BoundTerm>,
    /// Their sum.
    pub total_kib: u64,
}

impl MemoryBound {
    /// A bound from its terms.
    pub fn new(terms: Vec<BoundTerm>) -> MemoryBound {
        let total_kib = terms.iter().map(|t| t.kib).sum();
        MemoryBound { terms, total_kib }
    }
}

/// Whether the resident set stayed flat after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flatness {
    /// Samples after warm-up (until the end of the active run).
    pub samples: usize,
    /// When the first half starts and the second half starts and ends (ms since start).
    pub first_half_from_ms: u64,
    pub second_half_from_ms: u64,
    pub second_half_to_ms: u64,
    /// The largest `VmRSS` in each half.
    pub first_half_max_kib: u64,
    pub second_half_max_kib: u64,
    /// What the second half may reach.
    pub allowed_kib: u64,
    /// Least-squares slope of `VmRSS` over the samples after warm-up, in KiB per minute
    /// (reported, not judged: a short run's slope is mostly noise).
    pub slope_kib_per_min: f64,
    /// The second half stayed within what is allowed (and there were samples to judge).
    pub flat: bool,
}

/// Judges the samples taken from `warmup_end_ms` to `end_ms`; the second half may reach
/// [`GROWTH_ALLOWANCE_KIB`] plus `allowance_pct` percent over the first half's peak.
pub fn flatness(
    samples: &[MemorySample],
    warmup_end_ms: u64,
    end_ms: u64,
    allowance_pct: u64,
) -> Flatness {
    let after: Vec<&MemorySample> = samples
        .iter()
        .filter(|s| s.at_ms >= warmup_end_ms && s.at_ms <= end_ms)
        .collect();
    let mid = warmup_end_ms + end_ms.saturating_sub(warmup_end_ms) / 2;
    let max_of = |from: u64, to: u64| {
        after
            .iter()
            .filter(|s| s.at_ms >= from && s.at_ms < to.max(from + 1))
            .map(|s| s.vm_rss_kib)
            .max()
    };
    let first = max_of(warmup_end_ms, mid);
    let second = max_of(mid, end_ms + 1);
    let first_max = first.unwrap_or(0);
    let allowed = first_max + GROWTH_ALLOWANCE_KIB + first_max * allowance_pct / 100;
    Flatness {
        samples: after.len(),
        first_half_from_ms: warmup_end_ms,
        second_half_from_ms: mid,
        second_half_to_ms: end_ms,
        first_half_max_kib: first_max,
        second_half_max_kib: second.unwrap_or(0),
        allowed_kib: allowed,
        slope_kib_per_min: slope(&after),
        flat: first.is_some() && second.is_some_and(|s| s <= allowed),
    }
}

/// Least-squares slope of `VmRSS` against time, KiB per minute (0 with fewer than two
/// samples).
fn slope(samples: &[&MemorySample]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let n = samples.len() as f64;
    let xs = samples.iter().map(|s| s.at_ms as f64 / 60_000.0);
    let ys = samples.iter().map(|s| s.vm_rss_kib as f64);
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = ys.clone().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.zip(ys) {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, rss: u64) -> MemorySample {
        MemorySample {
            at_ms: ms,
            vm_rss_kib: rss,
            rss_anon_kib: rss,
            rss_file_kib: 0,
            vm_hwm_kib: rss,
        }
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tternd\nVmHWM:\t  52000 kB\nVmRSS:\t   51234 kB\n\
                    RssAnon:\t   40000 kB\nRssFile:\t   11234 kB\nThreads:\t6\n";
        let s = parse_status(text, 7).unwrap();
        assert_eq!(
            (
                s.at_ms,
                s.vm_rss_kib,
                s.rss_anon_kib,
                s.rss_file_kib,
                s.vm_hwm_kib
            ),
            (7, 51234, 40000, 11234, 52000)
        );
        assert!(
            parse_status("Name:\tx\n", 0).is_none(),
            "no VmRSS, no sample"
        );
    }

    #[test]
    fn a_flat_run_with_noise_is_flat_and_warmup_is_ignored() {
        // Warm-up climbs from 10 to 50 MiB; then it wobbles around 50 MiB.
        let mut s: Vec<_> = (0..10).map(|i| at(i * 1000, 10_240 + i * 4096)).collect();
        s.extend((10..100).map(|i| at(i * 1000, 51_200 + (i % 7) * 300)));
        let f = flatness(&s, 10_000, 99_000, 5);
        assert!(f.flat, "{f:?}");
        assert_eq!(f.samples, 90);
        assert!(f.slope_kib_per_min.abs() < 200.0, "{f:?}");
    }

    #[test]
    fn steady_growth_after_warmup_is_not_flat() {
        // 150 KiB a second: 6.7 MiB over each 45 s half.
        let s: Vec<_> = (0..100).map(|i| at(i * 1000, 40_960 + i * 150)).collect();
        let f = flatness(&s, 10_000, 99_000, 5);
        assert!(!f.flat, "{f:?}");
        assert!(f.slope_kib_per_min > 8_000.0, "{f:?}");
    }

    #[test]
    fn no_samples_after_warmup_cannot_be_called_flat() {
        let s = vec![at(0, 1), at(1000, 1)];
        assert!(!flatness(&s, 5_000, 10_000, 5).flat);
    }

    #[test]
    fn a_bound_is_the_sum_of_its_terms() {
        let b = MemoryBound::new(vec![
            BoundTerm {
                what: "a".into(),
                kib: 3,
            },
            BoundTerm {
                what: "b".into(),
                kib: 4,
            },
        ]);
        assert_eq!(b.total_kib, 7);
    }
}

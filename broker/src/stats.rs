//! Per-worker counters.
//!
//! Owns: the numbers each worker keeps about its own work. Each counter has exactly one
//! writer (its worker), so updates are a plain load and store, never a contended atomic
//! read-modify-write; readers (shutdown summary, later the monitoring thread) sum the
//! workers' values.
//!
//! Never: blocks, allocates or logs.

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one worker. Written by that worker only.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections closed because their outbound queue overflowed `max_pending`.
    pub slow_consumers: AtomicU64,
    /// Connections closed because they did not answer pings.
    pub stale_connections: AtomicU64,
    /// Protocol errors reported to clients (fatal or not).
    pub protocol_errors: AtomicU64,
    /// Requests answered with a no-responders status.
    pub no_responders: AtomicU64,
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// A point-in-time sum over workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
    pub slow_consumers: u64,
    pub stale_connections: u64,
    pub protocol_errors: u64,
    pub no_responders: u64,
}

impl Totals {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Totals {
        let mut t = Totals::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for w in workers {
            t.connections_opened += get(&w.connections_opened);
            t.connections_closed += get(&w.connections_closed);
            t.msgs_in += get(&w.msgs_in);
            t.bytes_in += get(&w.bytes_in);
            t.msgs_out += get(&w.msgs_out);
            t.bytes_out += get(&w.bytes_out);
            t.slow_consumers += get(&w.slow_consumers);
            t.stale_connections += get(&w.stale_connections);
            t.protocol_errors += get(&w.protocol_errors);
            t.no_responders += get(&w.no_responders);
        }
        t
    }
}

//! Per-worker counters.
//!
//! Owns: the numbers each worker keeps about its own work. Each counter has exactly one
//! writer (its worker), so updates are a plain load and store, never a contended atomic
//! read-modify-write; readers (the shutdown summary, the monitoring thread) sum the
//! workers' values. Latency histograms are not here: they are not atomics, so each worker
//! owns its own (`Latency`) and hands the monitor a copy on request.
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
    /// Deliveries queued on a connection and never written to it: discarded when it
    /// became a slow consumer, hit a write error, or closed with output still queued.
    pub msgs_dropped: AtomicU64,
    /// Messages a subscription queue dropped on overflow (lowest priority, oldest first),
    /// or that a lossless subscription could not get back because they were not stored.
    pub queue_dropped: AtomicU64,
    /// Queued messages replaced by a newer one with the same coalescing key.
    pub coalesced: AtomicU64,
    /// Drop notices sent to subscribers.
    pub drop_notices: AtomicU64,
    /// Times a lossless subscription's queue overflowed and it fell back to the log.
    pub lossless_fallbacks: AtomicU64,
    /// Connections closed, by reason (indexed by [`CloseKind`]); they add up to
    /// `connections_closed`.
    pub closed_by: [AtomicU64; CloseKind::COUNT],
    /// Subscriptions held by this worker's connections now (a gauge: up on `SUB`, down
    /// on removal).
    pub subscriptions: AtomicU64,
    /// Admission control: new connections this worker refused, by reason (indexed like
    /// `ConnRefusal::LABELS`: total, per_ip, rate).
    pub connections_refused: [AtomicU64; REFUSE_KINDS],
    /// Subscriptions refused for `max_subscriptions`.
    pub subscriptions_refused: AtomicU64,
    /// Times a connection was paused for going over a publish rate (`rate_action =
    /// "slow"`), by the limit that paused it (indexed like `RateScope::LABELS`:
    /// connection, subject).
    pub publishes_throttled: [AtomicU64; RATE_SCOPES],
    /// Publishes refused for a rate (`rate_action = "refuse"`), by limit.
    pub publishes_rate_refused: [AtomicU64; RATE_SCOPES],
    /// Publishes refused because their owner shard was overloaded (shedding).
    pub publishes_shed: AtomicU64,
}

/// Reasons a connection is refused: total, per_ip, rate.
pub const REFUSE_KINDS: usize = crate::admission::ConnRefusal::KINDS;
/// Publish rate limits: connection, subject.
pub const RATE_SCOPES: usize = crate::admission::RateScope::KINDS;

/// Why a connection closed, as a counter index (the reason without its detail text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    ClientClosed = 0,
    ProtocolError = 1,
    SlowConsumer = 2,
    StaleConnection = 3,
    IoError = 4,
    ServerShutdown = 5,
}

impl CloseKind {
    pub const COUNT: usize = 6;
    pub const ALL: [CloseKind; CloseKind::COUNT] = [
        CloseKind::ClientClosed,
        CloseKind::ProtocolError,
        CloseKind::SlowConsumer,
        CloseKind::StaleConnection,
        CloseKind::IoError,
        CloseKind::ServerShutdown,
    ];

    /// The label used in `/varz` and `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            CloseKind::ClientClosed => "client_closed",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::SlowConsumer => "slow_consumer",
            CloseKind::StaleConnection => "stale_connection",
            CloseKind::IoError => "io_error",
            CloseKind::ServerShutdown => "server_shutdown",
        }
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Subtracts `n` from a gauge that only the calling worker writes.
#[inline]
pub(crate) fn unbump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_sub(n),
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
    pub msgs_dropped: u64,
    pub queue_dropped: u64,
    pub coalesced: u64,
    pub drop_notices: u64,
    pub lossless_fallbacks: u64,
    pub closed_by: [u64; CloseKind::COUNT],
    pub subscriptions: u64,
    pub connections_refused: [u64; REFUSE_KINDS],
    pub subscriptions_refused: u64,
    pub publishes_throttled: [u64; RATE_SCOPES],
    pub publishes_rate_refused: [u64; RATE_SCOPES],
    pub publishes_shed: u64,
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
            t.queue_dropped += get(&w.queue_dropped);
            t.coalesced += get(&w.coalesced);
            t.drop_notices += get(&w.drop_notices);
            t.lossless_fallbacks += get(&w.lossless_fallbacks);
            t.msgs_dropped += get(&w.msgs_dropped);
            t.subscriptions += get(&w.subscriptions);
            for (sum, c) in t.closed_by.iter_mut().zip(&w.closed_by) {
                *sum += get(c);
            }
            for (sum, c) in t.connections_refused.iter_mut().zip(&w.connections_refused) {
                *sum += get(c);
            }
            t.subscriptions_refused += get(&w.subscriptions_refused);
            for (sum, c) in t.publishes_throttled.iter_mut().zip(&w.publishes_throttled) {
                *sum += get(c);
            }
            for (sum, c) in t
                .publishes_rate_refused
                .iter_mut()
                .zip(&w.publishes_rate_refused)
            {
                *sum += get(c);
            }
            t.publishes_shed += get(&w.publishes_shed);
        }
        t
    }
}

impl Totals {
    /// The counters of one worker.
    pub fn of(worker: &WorkerStats) -> Totals {
        Totals::sum([worker])
    }

    /// Connections open now: opened minus closed.
    pub fn connections(&self) -> u64 {
        self.connections_opened
            .saturating_sub(self.connections_closed)
    }
}

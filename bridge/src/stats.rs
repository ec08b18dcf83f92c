//! One bridge's counters and its state as `/bridgez` and `/metrics` show it.
//!
//! Owns: [`Counters`] (atomics the bridge's threads bump) and [`Status`], the plain-data
//! picture of a bridge taken at one moment.
//!
//! Never: decides anything from a counter.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub exported: AtomicU64,
    pub exported_bytes: AtomicU64,
    pub confirmed: AtomicU64,
    pub resent: AtomicU64,
    pub not_exported: AtomicU64,
    pub export_gaps: AtomicU64,
    pub export_restarts: AtomicU64,
    pub imported: AtomicU64,
    pub imported_bytes: AtomicU64,
    pub import_failed: AtomicU64,
    pub import_dropped: AtomicU64,
    pub stream_acked: AtomicU64,
    pub echoes: AtomicU64,
    pub overlapping: AtomicU64,
    pub replies_in: AtomicU64,
    pub replies_out: AtomicU64,
    pub replies_refused: AtomicU64,
    pub upstream_errors: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A bridge at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The edge's name (`Settings::name`).
    pub name: String,
    /// The servers it tries in turn: the configured ones, then those the cluster
    /// advertised.
    pub servers: Vec<String>,
    /// `connected`, `connecting` (retrying, see `last_error`) or `stopped`.
    pub state: &'static str,
    /// The server connected to, when connected.
    pub server: Option<String>,
    /// Upstream connections made (the first and every reconnect).
    pub connects: u64,
    /// Upstream connections lost.
    pub disconnects: u64,
    /// Subscriptions held upstream now: the imports', and one for replies to local
    /// requesters.
    pub upstream_subscriptions: usize,
    /// Local subscriptions behind them (static imports not counted).
    pub local_interest: u64,
    /// Messages published upstream (resent ones included).
    pub exported: u64,
    /// Their bytes (headers and payload).
    pub exported_bytes: u64,
    /// Exported messages the upstream server confirmed having.
    pub confirmed: u64,
    /// Messages published upstream again after a reconnect (their message id unchanged).
    pub resent: u64,
    /// Exported but not yet confirmed: the lag behind the log.
    pub unconfirmed: u64,
    /// Local messages under an export rule not exported because they came from upstream
    /// (their `Tern-Origin` header), which would loop.
    pub not_exported: u64,
    /// Messages the log no longer held when the export resumed from its last confirmed
    /// position (reported as gaps, never silent).
    pub export_gaps: u64,
    /// Times an export started over from its confirmed position because its local
    /// connection failed (an upstream reconnect is counted in `disconnects`).
    pub export_restarts: u64,
    /// Upstream messages delivered locally.
    pub imported: u64,
    /// Their bytes.
    pub imported_bytes: u64,
    /// Upstream messages the local broker did not take in time (its write timeout).
    pub import_failed: u64,
    /// Upstream messages dropped because the importer was `import_buffer` behind.
    pub import_dropped: u64,
    /// JetStream messages stored locally and then acknowledged upstream.
    pub stream_acked: u64,
    /// This edge's own messages back from upstream, dropped.
    pub echoes: u64,
    /// Second copies of one upstream message through overlapping subscriptions, dropped.
    pub overlapping: u64,
    /// Replies from local responders to upstream requesters.
    pub replies_out: u64,
    /// Replies from upstream to local requesters.
    pub replies_in: u64,
    /// Replies refused: to a subject no carried request had as its reply subject (or
    /// after `reply_timeout`).
    pub replies_refused: u64,
    /// `-ERR`s from upstream.
    pub upstream_errors: u64,
    /// The last thing that went wrong, and when.
    pub last_error: Option<LastError>,
    /// Per export rule: where it is confirmed up to (the log epoch and, per shard, the
    /// last sequence upstream has).
    pub exports: Vec<ExportStatus>,
}

/// The last error of a bridge.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
    /// What happened.
    pub message: String,
}

/// One export rule's confirmed position.
#[derive(Debug, Clone, Serialize)]
pub struct ExportStatus {
    /// The rule.
    pub subject: String,
    /// The log epoch of `confirmed`.
    pub epoch: u64,
    /// Per shard, the last sequence upstream has confirmed.
    pub confirmed: Vec<u64>,
}

impl Counters {
    pub(crate) fn fill(&self, s: &mut Status) {
        s.connects = get(&self.connects);
        s.disconnects = get(&self.disconnects);
        s.exported = get(&self.exported);
        s.exported_bytes = get(&self.exported_bytes);
        s.confirmed = get(&self.confirmed);
        s.resent = get(&self.resent);
        s.not_exported = get(&self.not_exported);
        s.export_gaps = get(&self.export_gaps);
        s.export_restarts = get(&self.export_restarts);
        s.imported = get(&self.imported);
        s.imported_bytes = get(&self.imported_bytes);
        s.import_failed = get(&self.import_failed);
        s.import_dropped = get(&self.import_dropped);
        s.stream_acked = get(&self.stream_acked);
        s.echoes = get(&self.echoes);
        s.overlapping = get(&self.overlapping);
        s.replies_out = get(&self.replies_out);
        s.replies_in = get(&self.replies_in);
        s.replies_refused = get(&self.replies_refused);
        s.upstream_errors = get(&self.upstream_errors);
    }
}

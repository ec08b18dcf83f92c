//! Snapshots: what a worker tells the monitoring thread about itself.
//!
//! Owns: the request the monitor sends through the mesh ([`SnapshotRequest`], carried by
//! `Envelope::Snapshot`) and the plain-data answer a worker builds between loop turns
//! ([`WorkerSnapshot`]): its latency histogram, its open and recently closed connections,
//! its shard's subscriptions and queue depths. Everything in an answer is a copy: the
//! monitor never sees a worker's live state.
//!
//! Never: holds a reference into a worker, or blocks the worker: the worker answers with
//! `try_send` on a channel with room for every worker's answer, and a monitor that stopped
//! waiting just drops the answer.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use crate::latency::Latency;

/// Recently closed connections each worker keeps for `/connz?state=closed`, oldest
/// forgotten first.
pub(crate) const CLOSED_KEPT_PER_WORKER: usize = 1000;

/// What the monitor wants in a snapshot; the cheap parts (shard counts, queue depths) are
/// always there.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Want {
    pub latency: bool,
    /// Open connections.
    pub conns: bool,
    /// Recently closed connections.
    pub closed: bool,
    /// Each connection's subscription filters (`/connz?subs=1`).
    pub conn_subs: bool,
    /// Every filter in the shard's index (`/subsz`).
    pub subs: bool,
}

/// A request for a snapshot; the worker sends its answer on `reply`.
#[derive(Debug)]
pub(crate) struct SnapshotRequest {
    pub want: Want,
    pub reply: Sender<WorkerSnapshot>,
}

/// One connection, open or closed. Times are Unix microseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnInfo {
    pub cid: u64,
    pub worker: usize,
    /// The port's protocol: `text` (NATS); the binary port will report `binary`.
    pub protocol: &'static str,
    pub ip: String,
    pub port: u16,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub start_us: u64,
    /// When the client last sent anything.
    pub last_activity_us: u64,
    /// When it closed (closed connections only).
    pub stop_us: Option<u64>,
    pub reason: Option<String>,
    pub subscriptions: usize,
    pub subscriptions_list: Vec<String>,
    /// Per subscription, with `subs=detail`: its queue and what it dropped.
    pub subscriptions_detail: Vec<SubDetail>,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub pending_bytes: usize,
    pub pending_msgs: usize,
    pub dropped_msgs: u64,
    /// Messages its subscription queues dropped on overflow.
    pub queue_dropped_msgs: u64,
}

/// One subscription of a connection, for `/connz?subs=detail`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct SubDetail {
    pub sid: String,
    pub subject: String,
    pub queued_msgs: usize,
    pub queued_bytes: usize,
    pub max_queue_msgs: usize,
    pub max_queue_bytes: usize,
    pub dropped_msgs: u64,
    pub coalesced_msgs: u64,
    pub lossless: bool,
    pub lossless_fallbacks: u64,
}

/// One filter in one shard's index.
#[derive(Debug, Clone)]
pub(crate) struct SubInfo {
    pub shard: usize,
    pub filter: String,
    /// Subscriptions without a queue group.
    pub plain: usize,
    /// Queue group name and its members with this filter.
    pub queues: Vec<(String, usize)>,
}

/// One shard, one worker: the parts that need no allocation to count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardInfo {
    /// Literal subjects with at least one subscription in this shard.
    pub literal_subjects: usize,
    /// Subscriptions in this shard's index (a wildcard subscription counts in every shard).
    pub subscriptions: usize,
    /// Distinct queue group names this shard has seen.
    pub queue_groups: usize,
    /// Batches this worker could not send yet because a peer's queue was full.
    pub outbox_pending_batches: usize,
}

/// The sum and maximum of the per-connection outbound queues of one worker.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PendingInfo {
    pub bytes: u64,
    pub msgs: u64,
    pub max_bytes: u64,
}

/// A worker's answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerSnapshot {
    pub worker: usize,
    pub latency: Option<Latency>,
    pub conns: Vec<ConnInfo>,
    pub closed: Vec<ConnInfo>,
    pub subs: Vec<SubInfo>,
    pub shard: ShardInfo,
    pub pending: PendingInfo,
}

/// Converts monotonic instants to wall-clock Unix microseconds, relative to one reading of
/// both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    unix_us: u64,
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            unix_us: unix_micros(SystemTime::now()),
        }
    }

    pub fn unix_us(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.unix_us + at.duration_since(self.instant).as_micros() as u64
        } else {
            self.unix_us
                .saturating_sub(self.instant.duration_since(at).as_micros() as u64)
        }
    }
}

pub(crate) fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Formats Unix microseconds as RFC 3339 in UTC with microseconds, e.g.
/// `2024-05-01T12:00:00.123456Z`.
pub(crate) fn rfc3339(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let micros = unix_us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T23:59:59.5Z
        assert_eq!(rfc3339(951_868_799_500_000), "2000-02-29T23:59:59.500000Z");
        // 2024-12-31T00:00:01Z
        assert_eq!(
            rfc3339(1_735_603_201_000_000),
            "2024-12-31T00:00:01.000000Z"
        );
    }
}

//! Snapshots: what a worker tells the monitoring thread about itself, and how it pages.
//!
//! Owns: the request the monitor sends through the mesh ([`SnapshotRequest`], carried by
//! `Envelope::Snapshot`, with a [`Want`] saying what it needs), the plain-data answer
//! ([`WorkerSnapshot`]), and [`answer`], which builds that answer from a read-only
//! [`WorkerView`] of the worker's state, between loop turns. Everything in an answer is a
//! copy: the monitor never sees a worker's live state.
//!
//! Paging happens here, inside the worker: a worker never copies every connection or every
//! filter it has. `/connz` and `/subsz` each take two requests:
//! - connections: [`ConnsWanted::Rank`] answers the cid and sort key of the first
//!   `offset + limit` connections in the requested order (a bounded heap over the worker's
//!   connections, O(connections × log(offset + limit)), no strings copied), plus the exact
//!   count; the monitor merges the workers' sorted pieces and asks each worker for its part
//!   of the page with [`ConnsWanted::Fetch`] (at most `limit` connections in all, each with
//!   at most [`SubsListing::max`] subscriptions in at most [`SubsListing::max_bytes`]);
//! - filters: [`FiltersWanted::Count`] counts the shard's filters up to a cap (a walk that
//!   stops at the cap), then [`FiltersWanted::List`] copies the `take` filters after `skip`
//!   (a walk of `skip + take` filters). The order is the index's own (stable while the index
//!   does not change), shard after shard.
//!
//! Never: holds a reference into a worker, or blocks the worker: the worker answers with
//! `try_send` on a channel with room for every worker's answer, and a monitor that stopped
//! waiting just drops the answer. Never walks more of the index than the page needs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::ControlFlow;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use slab::Slab;

use crate::conn::Conn;
use crate::index::{Index, SubList};
use crate::latency::Latency;
use crate::presence::Rooms;

/// Recently closed connections each worker keeps for `/connz?state=closed`, oldest
/// forgotten first.
pub(crate) const CLOSED_KEPT_PER_WORKER: usize = 1000;

/// About how many bytes of JSON one entry of a nested list takes besides its strings
/// (quotes, indentation, field names and numbers): what [`ListBudget`] charges.
pub(crate) const FILTER_ENTRY_BYTES: usize = 16;
/// As [`FILTER_ENTRY_BYTES`], for one `subscriptions_list_detail` entry.
pub(crate) const DETAIL_ENTRY_BYTES: usize = 400;
/// As [`FILTER_ENTRY_BYTES`], for one queue group of a `/subsz` filter.
pub(crate) const QUEUE_ENTRY_BYTES: usize = 64;

/// What the monitor wants in a snapshot; the cheap parts (shard counts, queue depths) are
/// always there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Want {
    pub latency: bool,
    pub conns: Option<ConnsWanted>,
    pub filters: Option<FiltersWanted>,
    /// `/presencez`: the worker's largest presence rooms, at most this many.
    pub rooms: Option<usize>,
}

/// The two steps of a `/connz` page.
#[derive(Debug, Clone)]
pub(crate) enum ConnsWanted {
    /// The first `take` connections in `sort` order: cid and sort key only.
    Rank(RankQuery),
    /// These connections in full.
    Fetch(FetchQuery),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RankQuery {
    /// Open connections.
    pub open: bool,
    /// Recently closed connections.
    pub closed: bool,
    pub sort: SortKey,
    /// How many to rank: the page's offset + limit.
    pub take: usize,
    /// The monitor's clock, so `idle` and `uptime` compare the same way in every worker.
    pub now_us: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct FetchQuery {
    /// Client ids, ascending. One that closed meanwhile comes from the closed ring, if it
    /// is still there; one that is gone altogether is left out.
    pub cids: Vec<u64>,
    pub subs: SubsListing,
}

/// Which subscription list `/connz` shows per connection, and how much of it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SubsListing {
    pub kind: ListKind,
    /// Entries listed at most per connection.
    pub max: usize,
    /// About how many bytes of JSON the list of one connection may take.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ListKind {
    #[default]
    None,
    /// `subs=1`: the filters.
    Filters,
    /// `subs=detail`: each subscription's queue ([`SubDetail`]).
    Detail,
}

impl SubsListing {
    /// No list.
    pub const NONE: SubsListing = SubsListing {
        kind: ListKind::None,
        max: 0,
        max_bytes: 0,
    };

    pub fn budget(&self) -> ListBudget {
        ListBudget {
            items: self.max,
            bytes: self.max_bytes,
        }
    }
}

/// What is left for one nested list: entries and bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListBudget {
    items: usize,
    bytes: usize,
}

impl ListBudget {
    pub fn new(items: usize, bytes: usize) -> ListBudget {
        ListBudget { items, bytes }
    }

    /// Takes room for one entry of `bytes`; false (and nothing taken) when it does not fit.
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.items == 0 || bytes > self.bytes {
            return false;
        }
        self.items -= 1;
        self.bytes -= bytes;
        true
    }
}

/// The two steps of a `/subsz` page.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FiltersWanted {
    /// How many filters the shard has, counting no further than `cap`.
    Count { cap: usize },
    /// The `take` filters after the first `skip`, each with at most `max_queues` queue
    /// groups in about `max_bytes` of JSON.
    List {
        skip: usize,
        take: usize,
        max_queues: usize,
        max_bytes: usize,
    },
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
    /// The port's protocol: `text` (NATS) or `binary` (Tern).
    pub protocol: &'static str,
    /// What carries it: `tcp`, `tls`, `websocket` or `websocket+tls`.
    pub transport: &'static str,
    /// The subject of the client certificate it presented over TLS.
    pub tls_peer: Option<String>,
    /// The user it authenticated as (or claimed, when refused); never a secret.
    pub user: Option<String>,
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
    /// Subscriptions it holds: the full count, whatever the lists below show.
    pub subscriptions: usize,
    /// With `subs=1`: the filters of its first subscriptions, within a [`SubsListing`].
    pub subscriptions_list: Vec<String>,
    /// With `subs=detail`: per subscription, its queue and what it dropped, within a
    /// [`SubsListing`].
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

impl ConnInfo {
    /// What the sort orders look at.
    pub fn keys(&self) -> ConnKeys<'_> {
        ConnKeys {
            cid: self.cid,
            start_us: self.start_us,
            last_activity_us: self.last_activity_us,
            stop_us: self.stop_us,
            reason: self.reason.as_deref(),
            subscriptions: self.subscriptions,
            pending_bytes: self.pending_bytes,
            in_msgs: self.in_msgs,
            in_bytes: self.in_bytes,
            out_msgs: self.out_msgs,
            out_bytes: self.out_bytes,
        }
    }
}

/// The numbers of a connection the sort orders look at, read without copying its strings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnKeys<'a> {
    pub cid: u64,
    pub start_us: u64,
    pub last_activity_us: u64,
    pub stop_us: Option<u64>,
    pub reason: Option<&'a str>,
    pub subscriptions: usize,
    pub pending_bytes: usize,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
}

crate::names::named_enum! {
    /// `/connz` sort orders, as nats-server names them. `cid` and `start` sort ascending,
    /// `reason` alphabetically, everything else descending (the biggest first); ties go by
    /// `cid`.
    pub(crate) enum SortKey {
        Cid => "cid",
        Start => "start",
        Subs => "subs",
        Pending => "pending",
        MsgsTo => "msgs_to",
        MsgsFrom => "msgs_from",
        BytesTo => "bytes_to",
        BytesFrom => "bytes_from",
        Last => "last",
        Idle => "idle",
        Uptime => "uptime",
        Stop => "stop",
        Reason => "reason",
    }
}

impl SortKey {
    /// Orders that only closed connections have.
    pub fn needs_closed(self) -> bool {
        matches!(self, SortKey::Stop | SortKey::Reason)
    }

    /// Where a connection goes in this order: smaller first. `now_us` ends the `idle` and
    /// `uptime` of open connections.
    pub fn rank(self, c: &ConnKeys<'_>, now_us: u64) -> Ranked {
        use SortKey::*;
        let end = c.stop_us.unwrap_or(now_us);
        let down = |v: u64| Rank::Down(Reverse(v));
        let rank = match self {
            Cid => Rank::Up(c.cid),
            Start => Rank::Up(c.start_us),
            Subs => down(c.subscriptions as u64),
            Pending => down(c.pending_bytes as u64),
            MsgsTo => down(c.out_msgs),
            MsgsFrom => down(c.in_msgs),
            BytesTo => down(c.out_bytes),
            BytesFrom => down(c.in_bytes),
            Last => down(c.last_activity_us),
            Idle => down(end.saturating_sub(c.last_activity_us)),
            Uptime => down(end.saturating_sub(c.start_us)),
            Stop => down(c.stop_us.unwrap_or(0)),
            Reason => Rank::Text(c.reason.map(str::to_string)),
        };
        Ranked { rank, cid: c.cid }
    }
}

/// A connection's sort key in one order. Only keys of the same [`SortKey`] are compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    Up(u64),
    Down(Reverse<u64>),
    Text(Option<String>),
}

/// A connection's place in an order: its key, then its cid (unique), so the order is total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ranked {
    pub rank: Rank,
    pub cid: u64,
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

/// One filter in a shard's index (every shard holds the same ones).
#[derive(Debug, Clone)]
pub(crate) struct SubInfo {
    pub filter: String,
    /// Subscriptions without a queue group.
    pub plain: usize,
    /// Subscriptions in a queue group (all of them, whatever `queues` lists).
    pub queued: usize,
    /// Queue group names and their members with this filter, in the order first seen,
    /// within the request's bounds.
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
    /// With [`ConnsWanted::Rank`]: how many connections are in the states asked for (all
    /// of them, not only those ranked).
    pub conns_total: usize,
    /// With [`ConnsWanted::Rank`]: the first `take` in order, smallest first.
    pub ranked: Vec<Ranked>,
    /// With [`ConnsWanted::Fetch`]: the connections found, in cid order.
    pub conns: Vec<ConnInfo>,
    /// With [`FiltersWanted::Count`]: the shard's filters, counted up to the cap.
    pub filters_counted: usize,
    /// With [`FiltersWanted::List`]: the filters asked for, in the index's order.
    pub subs: Vec<SubInfo>,
    pub shard: ShardInfo,
    pub pending: PendingInfo,
    /// With [`Want::rooms`]: the largest rooms the worker is home to, largest first, and
    /// how many rooms and members it holds in all.
    pub rooms: Vec<(String, usize)>,
    pub rooms_total: usize,
    pub members_total: usize,
}

/// What a worker lends [`answer`]: read-only views of its state.
pub(crate) struct WorkerView<'a> {
    pub worker: usize,
    pub conns: &'a Slab<Conn>,
    pub closed: &'a VecDeque<ConnInfo>,
    pub index: &'a Index,
    pub latency: &'a Latency,
    pub outbox_pending_batches: usize,
    pub rooms: &'a Rooms,
}

/// Builds the answer to `want` from a worker's state. Its cost is bounded by the request,
/// not by the worker's state, except for the walks over the worker's connections (the
/// queue depths always; ranking and fetching for `/connz`), which read numbers and copy
/// nothing but what is answered.
pub(crate) fn answer(want: &Want, view: &WorkerView<'_>) -> WorkerSnapshot {
    let clock = WallClock::now();
    let mut snap = WorkerSnapshot {
        worker: view.worker,
        latency: want.latency.then(|| view.latency.clone()),
        ..WorkerSnapshot::default()
    };
    if let Some(n) = want.rooms {
        snap.rooms = view
            .rooms
            .largest(n)
            .into_iter()
            .map(|(subject, count)| (String::from_utf8_lossy(&subject).into_owned(), count))
            .collect();
        snap.rooms_total = view.rooms.rooms();
        snap.members_total = view.rooms.members_total();
    }
    let mut pending = PendingInfo::default();
    for (_, c) in view.conns {
        let (bytes, msgs) = c.waiting();
        pending.bytes += bytes as u64;
        pending.msgs += msgs as u64;
        pending.max_bytes = pending.max_bytes.max(bytes as u64);
    }
    snap.pending = pending;
    match &want.conns {
        Some(ConnsWanted::Rank(q)) => {
            let open = view
                .conns
                .iter()
                .filter(|_| q.open)
                .map(|(_, c)| q.sort.rank(&c.keys(&clock), q.now_us));
            let closed = view
                .closed
                .iter()
                .filter(|_| q.closed)
                .map(|c| q.sort.rank(&c.keys(), q.now_us));
            snap.ranked = smallest(open.chain(closed), q.take);
            snap.conns_total = if q.open { view.conns.len() } else { 0 }
                + if q.closed { view.closed.len() } else { 0 };
        }
        Some(ConnsWanted::Fetch(q)) => {
            let wanted = |cid: u64| q.cids.binary_search(&cid).is_ok();
            for (_, c) in view.conns {
                if wanted(c.client_id) {
                    snap.conns.push(c.info(view.worker, &clock, &q.subs));
                }
            }
            snap.conns
                .extend(view.closed.iter().filter(|c| wanted(c.cid)).cloned());
            snap.conns.sort_by_key(|c| c.cid);
        }
        None => {}
    }
    match want.filters {
        Some(FiltersWanted::Count { cap }) => {
            snap.filters_counted = count_filters(view.index, cap);
        }
        Some(FiltersWanted::List {
            skip,
            take,
            max_queues,
            max_bytes,
        }) => {
            snap.subs = list_filters(view.index, skip, take, |list, names| {
                queue_groups(list, names, ListBudget::new(max_queues, max_bytes))
            });
        }
        None => {}
    }
    let index = view.index;
    snap.shard = ShardInfo {
        literal_subjects: index.literal_subjects(),
        subscriptions: index.len(),
        queue_groups: index.queue_count(),
        outbox_pending_batches: view.outbox_pending_batches,
    };
    snap
}

/// The `k` smallest items, in order: a bounded max-heap, O(n log k) time, O(k) memory.
pub(crate) fn smallest<T: Ord>(items: impl IntoIterator<Item = T>, k: usize) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap = BinaryHeap::with_capacity(k.min(1024) + 1);
    for item in items {
        if heap.len() < k {
            heap.push(item);
        } else if heap.peek().is_some_and(|top| item < *top) {
            heap.pop();
            heap.push(item);
        }
    }
    heap.into_sorted_vec()
}

/// The index's filters, counted no further than `cap`.
fn count_filters(index: &Index, cap: usize) -> usize {
    let mut n = 0;
    if cap > 0 {
        index.visit_filters(|_, _| {
            n += 1;
            if n >= cap {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }
    n
}

/// The `take` filters after the first `skip`, in the index's order; `groups` lists a
/// filter's queue groups (given the names by id, read once, on the first filter that has
/// queue groups).
fn list_filters(
    index: &Index,
    skip: usize,
    take: usize,
    mut groups: impl FnMut(&SubList, &[bytes::Bytes]) -> Vec<(String, usize)>,
) -> Vec<SubInfo> {
    let mut out = Vec::with_capacity(take.min(4096));
    if take == 0 {
        return out;
    }
    let mut names: Option<Vec<bytes::Bytes>> = None;
    let mut seen = 0;
    index.visit_filters(|filter, list| {
        seen += 1;
        if seen <= skip {
            return ControlFlow::Continue(());
        }
        let queues = if list.groups().is_empty() {
            Vec::new()
        } else {
            groups(list, names.get_or_insert_with(|| index.queue_names()))
        };
        out.push(SubInfo {
            filter: String::from_utf8_lossy(filter).into_owned(),
            plain: list.plain().len(),
            queued: list.groups().iter().map(|g| g.members().len()).sum(),
            queues,
        });
        if out.len() >= take {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    out
}

/// A filter's queue groups and their member counts, in the index's order, as many as
/// `budget` holds.
fn queue_groups(
    list: &SubList,
    names: &[bytes::Bytes],
    mut budget: ListBudget,
) -> Vec<(String, usize)> {
    let mut listed = Vec::new();
    for group in list.groups() {
        let name = names
            .get(group.id() as usize)
            .map_or(&[][..], |n| n.as_ref());
        if !budget.take(name.len() + QUEUE_ENTRY_BYTES) {
            break;
        }
        listed.push((
            String::from_utf8_lossy(name).into_owned(),
            group.members().len(),
        ));
    }
    listed
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
    use crate::mesh::{ConnId, SubRef};
    use bytes::Bytes;

    fn sub(id: u64) -> SubRef {
        SubRef {
            conn: ConnId {
                worker: 0,
                slot: 0,
                gen: 0,
            },
            key: 0,
            id,
        }
    }

    /// An index with `n` literal filters `s.0` ... and a few wildcards.
    fn index(n: usize) -> Index {
        let mut ix = Index::default();
        for i in 0..n {
            ix.insert(&Bytes::from(format!("s.{i}")), None, sub(i as u64));
        }
        for (i, f) in ["w.*", "w.>", ">"].into_iter().enumerate() {
            ix.insert(
                &Bytes::from_static(f.as_bytes()),
                None,
                sub(1_000_000 + i as u64),
            );
        }
        ix
    }

    fn all_filters(ix: &Index) -> Vec<String> {
        list_filters(ix, 0, usize::MAX, |_, _| Vec::new())
            .into_iter()
            .map(|s| s.filter)
            .collect()
    }

    #[test]
    fn counting_stops_at_the_cap() {
        let ix = index(1000);
        assert_eq!(count_filters(&ix, 0), 0);
        assert_eq!(count_filters(&ix, 5), 5);
        assert_eq!(
            count_filters(&ix, 100_000),
            1003,
            "all of them, below the cap"
        );
    }

    #[test]
    fn listing_pages_through_the_index_order() {
        let ix = index(300);
        let all = all_filters(&ix);
        assert_eq!(all.len(), 303);
        let mut paged = Vec::new();
        for skip in (0..all.len()).step_by(7) {
            let page = list_filters(&ix, skip, 7, |_, _| Vec::new());
            assert!(page.len() <= 7);
            paged.extend(page.into_iter().map(|s| s.filter));
        }
        assert_eq!(paged, all);
        assert!(list_filters(&ix, 303, 10, |_, _| Vec::new()).is_empty());
        assert!(list_filters(&ix, 0, 0, |_, _| Vec::new()).is_empty());
    }

    #[test]
    fn queue_groups_are_counted_but_listed_within_the_budget() {
        let mut ix = Index::default();
        let f = Bytes::from_static(b"jobs");
        for i in 0..100u64 {
            let group = Bytes::from(format!("g{}", i % 10));
            ix.insert(&f, Some(&group), sub(i));
        }
        ix.insert(&f, None, sub(1000));
        let roomy = list_filters(&ix, 0, 1, |list, names| {
            queue_groups(list, names, ListBudget::new(1024, 1 << 20))
        });
        assert_eq!((roomy[0].plain, roomy[0].queued), (1, 100));
        assert_eq!(roomy[0].queues.len(), 10);
        assert!(roomy[0].queues.iter().all(|(_, n)| *n == 10));
        let three = list_filters(&ix, 0, 1, |list, names| {
            queue_groups(list, names, ListBudget::new(3, 1 << 20))
        });
        assert_eq!(three[0].queues.len(), 3, "at most max_queues groups");
        assert!(
            three[0].queues.iter().all(|(_, n)| *n == 10),
            "each counted fully"
        );
        assert_eq!(three[0].queued, 100, "the full count beside them");
        let tight = list_filters(&ix, 0, 1, |list, names| {
            queue_groups(
                list,
                names,
                ListBudget::new(1024, 2 * (QUEUE_ENTRY_BYTES + 2)),
            )
        });
        assert_eq!(tight[0].queues.len(), 2, "at most max_bytes of them");
    }

    #[test]
    fn smallest_keeps_the_first_k_in_order() {
        let items = [9, 3, 7, 1, 8, 2, 2];
        assert_eq!(smallest(items, 3), vec![1, 2, 2]);
        assert_eq!(smallest(items, 0), Vec::<i32>::new());
        assert_eq!(smallest(items, 100).len(), 7);
    }

    #[test]
    fn sort_keys_rank_like_nats() {
        let keys = |cid, out_msgs, start_us| ConnKeys {
            cid,
            out_msgs,
            start_us,
            ..ConnKeys::default()
        };
        let conns = [keys(1, 5, 30), keys(2, 9, 20), keys(3, 5, 10)];
        let order = |sort: &str| -> Vec<u64> {
            let key = SortKey::parse(sort).unwrap();
            smallest(conns.iter().map(|c| key.rank(c, 100)), 10)
                .into_iter()
                .map(|r| r.cid)
                .collect()
        };
        assert_eq!(
            order("msgs_to"),
            vec![2, 1, 3],
            "biggest first, ties by cid"
        );
        assert_eq!(order("start"), vec![3, 2, 1], "oldest first");
        assert_eq!(order("uptime"), vec![3, 2, 1], "longest first");
        assert_eq!(order("cid"), vec![1, 2, 3]);
        assert!(SortKey::parse("nope").is_none());
        assert!(SortKey::parse("reason").unwrap().needs_closed());
    }

    #[test]
    fn a_list_budget_counts_entries_and_bytes() {
        let mut b = ListBudget::new(2, 100);
        assert!(b.take(60));
        assert!(!b.take(60), "over the bytes left");
        assert!(b.take(40));
        assert!(!b.take(0), "over the entries");
        assert!(!SubsListing::NONE.budget().take(0));
    }

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

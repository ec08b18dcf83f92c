//! A subscription's queue: the deliveries waiting for room in their connection's outbound
//! buffer, bounded in messages and bytes.
//!
//! Owns: the queued messages of one subscription, one FIFO per priority level (0 lowest to
//! 7 highest) so that the lowest-priority, oldest message is found at once; the choice of
//! what to drop on overflow; coalescing (a message with a coalescing key takes the place of
//! the queued message with the same key); and the [`DropLog`] of what was dropped, for the
//! subscriber's drop notice.
//!
//! The rules: the queue always takes a message when it is empty (one message bigger than
//! the byte bound still gets through); otherwise, to make room it drops the
//! lowest-priority, oldest messages first, and only messages of the arriving message's
//! priority or lower: when that would not make enough room, the arriving message is the
//! one dropped. So a message is never dropped while a lower-priority one is queued. Taking
//! a message out returns the oldest of all levels: delivery order is arrival order.
//!
//! Never: encodes, sends or counts anything itself; the connection (`conn/mod.rs`) turns
//! what happens here into frames and counters.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::index::FastMap;
use crate::mesh::{Msg, Stamp};

/// Priority levels: 0 (lowest) to 7 (highest).
pub(crate) const LEVELS: usize = 8;

/// Most sequence ranges one drop notice carries; drops beyond are counted only.
pub(crate) const MAX_DROP_RANGES: usize = 256;

/// A subscription queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub messages: usize,
    pub bytes: usize,
}

/// The size a message counts for in a queue's byte bound: what it holds in memory, its
/// subject, reply subject, header block and payload and the message value itself (shared
/// with the other subscribers it goes to, so this is an upper bound of what one queue
/// keeps alive).
pub(crate) fn size_of(msg: &Msg) -> usize {
    std::mem::size_of::<Msg>()
        + msg.subject.len()
        + msg.reply.as_ref().map_or(0, Bytes::len)
        + msg.headers.as_ref().map_or(0, Bytes::len)
        + msg.payload.len()
}

/// A copy of `msg` whose subject, reply subject, header block and payload share one
/// allocation of their own.
///
/// Why: those fields are slices of the read buffer the publisher's bytes arrived in, and a
/// slice keeps its whole buffer alive. A queue that keeps one message in a hundred (one
/// room of a busy publisher, the high priorities, one value per coalescing key) would
/// otherwise pin a 64 KiB buffer per small message, and even a queue of large messages
/// pins about twice what it holds, far beyond what its byte bound counts. Copied, what a
/// queue holds is what it counts. This costs one copy per message queued, on the slow
/// path only (a subscriber behind its write buffer); the direct path to the outbound
/// buffer copies nothing.
pub(crate) fn compact(msg: &Arc<Msg>) -> Arc<Msg> {
    let parts = [
        &msg.subject[..],
        msg.reply.as_deref().unwrap_or_default(),
        msg.headers.as_deref().unwrap_or_default(),
        &msg.payload[..],
    ];
    let buf = one_buffer(parts);
    let mut at = 0;
    let mut take = |len: usize| {
        at += len;
        buf.slice(at - len..at)
    };
    // Field by field, not `Msg::clone` and then overwriting: a clone would take and drop a
    // reference to each of the four slices replaced (atomic counts), a third of what a
    // compaction cost. A field added to `Msg` must be decided on here.
    Arc::new(Msg {
        subject: take(msg.subject.len()),
        reply: msg.reply.as_ref().map(|r| take(r.len())),
        headers: msg.headers.as_ref().map(|h| take(h.len())),
        payload: take(msg.payload.len()),
        origin: msg.origin,
        no_echo: msg.no_echo,
        no_responders: msg.no_responders,
        origin_only: msg.origin_only,
        received: msg.received,
        priority: msg.priority,
        ack_id: msg.ack_id,
        // The message id only matters to the shard that routes it.
        message_id: None,
        replayed: msg.replayed,
        ephemeral: msg.ephemeral,
        stored: msg.stored,
        // The coalescing key is kept (the queue indexes it): a copy of its own, not a
        // slice of the publisher's buffer.
        coalesce: msg.coalesce.as_deref().map(Bytes::copy_from_slice),
        stamp: msg.stamp,
        flight: msg.flight.clone(),
        // Made by the broker, in a buffer of its own.
        presence: msg.presence.clone(),
        // Only routing reads it, and this copy is already routed.
        bridge_route: None,
    })
}

/// `parts`, one after another, in one buffer of their own.
///
/// A small message (all but a few) gets one allocation holding the bytes and their
/// reference count (`Bytes::from_owner` of an inline array of the next size up): a buffer
/// from a `Vec` would take a second allocation, its shared count, when it is first sliced.
fn one_buffer(parts: [&[u8]; 4]) -> Bytes {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    match total {
        0..=32 => Inline::<32>::bytes(parts, total),
        33..=64 => Inline::<64>::bytes(parts, total),
        65..=128 => Inline::<128>::bytes(parts, total),
        129..=256 => Inline::<256>::bytes(parts, total),
        _ => {
            // Larger: the copy costs more than the second allocation, and an inline array
            // would be zeroed and moved as well.
            let mut buf = Vec::with_capacity(total);
            for p in parts {
                buf.extend_from_slice(p);
            }
            Bytes::from(buf)
        }
    }
}

/// Up to `N` bytes inline: the owner of a small compacted message's buffer.
struct Inline<const N: usize> {
    len: usize,
    data: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `parts` (`total` bytes, at most `N`) in one allocation.
    fn bytes(parts: [&[u8]; 4], total: usize) -> Bytes {
        let mut inline = Inline {
            len: total,
            data: [0; N],
        };
        let mut at = 0;
        for p in parts {
            inline.data[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Bytes::from_owner(inline)
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

#[derive(Debug)]
struct Entry {
    /// Arrival number: orders entries across levels.
    arrival: u64,
    msg: Arc<Msg>,
}

/// What [`SubQueue::push`] did with the arriving message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued at the end.
    Queued,
    /// Took the place of the queued message with the same coalescing key.
    Coalesced,
    /// Dropped: the queue is full of messages of higher priority.
    Dropped,
}

#[derive(Debug, Default)]
pub(crate) struct SubQueue {
    levels: [VecDeque<Entry>; LEVELS],
    level_bytes: [usize; LEVELS],
    len: usize,
    bytes: usize,
    /// Coalescing key -> (level, arrival) of the queued message carrying it.
    keys: FastMap<Bytes, (u8, u64)>,
}

impl SubQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `msg` would be queued (or coalesced, when `coalesce`) without dropping
    /// anything.
    pub fn fits(&self, msg: &Msg, bounds: Bounds, coalesce: bool) -> bool {
        if self.is_empty() {
            return true;
        }
        if let Some(&(level, arrival)) = self.key_of(msg, coalesce) {
            let old = self.entry(level, arrival).map_or(0, |e| size_of(&e.msg));
            return self.bytes - old + size_of(msg) <= bounds.bytes;
        }
        self.len < bounds.messages && self.bytes + size_of(msg) <= bounds.bytes
    }

    /// Queues `msg`, dropping what the rules say to make room; `dropped` is called with
    /// every message dropped, the arriving one included when it is the one. `arrival`
    /// orders it among the queued messages (the caller's counter: it must grow with every
    /// push). With `coalesce` off, coalescing keys are ignored (lossless subscriptions get
    /// every message). A coalesced message keeps the arrival of the one it replaces.
    pub fn push(
        &mut self,
        msg: Arc<Msg>,
        arrival: u64,
        bounds: Bounds,
        coalesce: bool,
        mut dropped: impl FnMut(&Msg),
    ) -> Pushed {
        let size = size_of(&msg);
        if let Some(&(level, arrival)) = self.key_of(&msg, coalesce) {
            let entry = self
                .entry_mut(level, arrival)
                .expect("a coalescing key names a queued entry");
            let old = size_of(&entry.msg);
            entry.msg = msg;
            self.bytes = self.bytes - old + size;
            self.level_bytes[level as usize] = self.level_bytes[level as usize] - old + size;
            // A bigger replacement may overflow the byte bound: drop by the usual rules,
            // never the replacement itself unless it is all that is left.
            while self.bytes > bounds.bytes && self.len > 1 {
                match self.pop_lowest_except(level, arrival) {
                    Some(e) => dropped(&e.msg),
                    None => break,
                }
            }
            return Pushed::Coalesced;
        }
        let priority = usize::from(msg.priority).min(LEVELS - 1);
        if !self.is_empty() && !self.can_make_room(priority, size, bounds) {
            dropped(&msg);
            return Pushed::Dropped;
        }
        while !self.is_empty() && (self.len >= bounds.messages || self.bytes + size > bounds.bytes)
        {
            let e = self
                .pop_lowest()
                .expect("a non-empty queue has a lowest entry");
            dropped(&e.msg);
        }
        if let Some(key) = msg.coalesce.as_ref().filter(|_| coalesce) {
            self.keys.insert(key.clone(), (priority as u8, arrival));
        }
        self.levels[priority].push_back(Entry { arrival, msg });
        self.level_bytes[priority] += size;
        self.len += 1;
        self.bytes += size;
        Pushed::Queued
    }

    /// Messages and bytes queued.
    pub fn depth(&self) -> (usize, usize) {
        (self.len, self.bytes)
    }

    /// True when the message of `level` with `arrival` is still queued.
    pub fn contains(&self, level: u8, arrival: u64) -> bool {
        self.entry(level, arrival).is_some()
    }

    /// Takes out the oldest message of `level` (a budget shared with other queues is
    /// exceeded and it is the oldest of the lowest priority there).
    pub fn evict_front(&mut self, level: u8) -> Option<Arc<Msg>> {
        let level = usize::from(level).min(LEVELS - 1);
        let e = self.levels[level].pop_front()?;
        self.forget(level, &e);
        Some(e.msg)
    }

    /// The arrival of the oldest message queued.
    pub fn oldest_arrival(&self) -> Option<u64> {
        self.oldest().map(|(arrival, _)| arrival)
    }

    /// Takes out the oldest queued message, whatever its priority.
    /// Also says the message's level and arrival (which name its eviction tickets).
    pub fn pop(&mut self) -> Option<(Arc<Msg>, u8, u64)> {
        let (_, level) = self.oldest()?;
        let e = self.levels[level].pop_front()?;
        self.forget(level, &e);
        Some((e.msg, level as u8, e.arrival))
    }

    /// The arrival and level of the oldest message queued.
    fn oldest(&self) -> Option<(u64, usize)> {
        (0..LEVELS)
            .filter_map(|l| self.levels[l].front().map(|e| (e.arrival, l)))
            .min()
    }

    /// True when dropping messages of priority `priority` or lower can make room for
    /// `size` more bytes and one more message.
    fn can_make_room(&self, priority: usize, size: usize, bounds: Bounds) -> bool {
        let (msgs, bytes) = (0..=priority).fold((0, 0), |(m, b), l| {
            (m + self.levels[l].len(), b + self.level_bytes[l])
        });
        if msgs == self.len {
            // Everything may go: an empty queue takes any message.
            return true;
        }
        self.len - msgs < bounds.messages && self.bytes - bytes + size <= bounds.bytes
    }

    fn pop_lowest(&mut self) -> Option<Entry> {
        let level = (0..LEVELS).find(|&l| !self.levels[l].is_empty())?;
        let e = self.levels[level].pop_front()?;
        self.forget(level, &e);
        Some(e)
    }

    /// The lowest, oldest entry other than the one at (`level`, `arrival`).
    fn pop_lowest_except(&mut self, level: u8, arrival: u64) -> Option<Entry> {
        for l in 0..LEVELS {
            let q = &self.levels[l];
            let i = match q.front() {
                Some(e) if l == level as usize && e.arrival == arrival => 1,
                Some(_) => 0,
                None => continue,
            };
            if i < q.len() {
                let e = self.levels[l].remove(i)?;
                self.forget(l, &e);
                return Some(e);
            }
        }
        None
    }

    fn forget(&mut self, level: usize, e: &Entry) {
        let size = size_of(&e.msg);
        self.len -= 1;
        self.bytes -= size;
        self.level_bytes[level] -= size;
        if let Some(key) = &e.msg.coalesce {
            if self.keys.get(key).is_some_and(|&(_, a)| a == e.arrival) {
                self.keys.remove(key);
            }
        }
    }

    /// Where the queued message with `msg`'s coalescing key is, if coalescing applies.
    fn key_of(&self, msg: &Msg, coalesce: bool) -> Option<&(u8, u64)> {
        if !coalesce {
            return None;
        }
        self.keys.get(msg.coalesce.as_ref()?)
    }

    fn entry(&self, level: u8, arrival: u64) -> Option<&Entry> {
        let q = self.levels.get(level as usize)?;
        let i = q.binary_search_by_key(&arrival, |e| e.arrival).ok()?;
        q.get(i)
    }

    fn entry_mut(&mut self, level: u8, arrival: u64) -> Option<&mut Entry> {
        let q = &mut self.levels[level as usize];
        let i = q.binary_search_by_key(&arrival, |e| e.arrival).ok()?;
        q.get_mut(i)
    }
}

/// What a subscription lost since its last drop notice: how many messages, and which
/// sequences (per shard, as inclusive ranges; at most [`MAX_DROP_RANGES`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DropLog {
    pub count: u64,
    pub ranges: Vec<(u16, u64, u64)>,
}

impl DropLog {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records one dropped message. Unsequenced messages (not stored, seq 0) are counted
    /// but have no range.
    pub fn record(&mut self, stamp: Stamp) {
        self.count += 1;
        if stamp.seq == 0 {
            return;
        }
        // Drops of one priority come oldest first, so a shard's ranges mostly grow at
        // their end.
        if let Some(r) = self.ranges.iter_mut().rev().find(|r| r.0 == stamp.shard) {
            if r.2.checked_add(1) == Some(stamp.seq) {
                r.2 = stamp.seq;
                return;
            }
        }
        if self.ranges.len() < MAX_DROP_RANGES {
            self.ranges.push((stamp.shard, stamp.seq, stamp.seq));
        }
    }

    /// What to report, leaving the log empty.
    pub fn take(&mut self) -> DropLog {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::ConnId;

    fn msg(seq: u64, priority: u8, size: usize, key: Option<&'static str>) -> Arc<Msg> {
        let mut m = Msg::new(
            Bytes::from_static(b"s"),
            Bytes::from(vec![b'x'; size]),
            ConnId::NONE,
            std::time::Instant::now(),
        );
        m.priority = priority;
        m.coalesce = key.map(|k| Bytes::from_static(k.as_bytes()));
        m.stamp = Stamp {
            shard: 0,
            seq,
            time_ns: 0,
        };
        Arc::new(m)
    }

    fn bounds(messages: usize, bytes: usize) -> Bounds {
        Bounds { messages, bytes }
    }

    fn drain(q: &mut SubQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.pop().map(|(m, _, _)| m))
            .map(|m| m.stamp.seq)
            .collect()
    }

    #[test]
    fn overflow_drops_the_lowest_priority_oldest_first() {
        let mut q = SubQueue::default();
        let b = bounds(4, 1 << 20);
        let mut lost = Vec::new();
        // seq: priority
        for (seq, p) in [(1, 5), (2, 1), (3, 3), (4, 1)] {
            assert_eq!(
                q.push(msg(seq, p, 10, None), seq, b, true, |_| panic!()),
                Pushed::Queued
            );
        }
        // Full: a priority-3 arrival pushes out the oldest priority-1 message (2), then
        // the next one (4).
        q.push(msg(5, 3, 10, None), 5, b, true, |m| lost.push(m.stamp.seq));
        q.push(msg(6, 3, 10, None), 6, b, true, |m| lost.push(m.stamp.seq));
        assert_eq!(lost, [2, 4]);
        // Now 1(5) 3(3) 5(3) 6(3): a priority-3 arrival drops the oldest priority 3.
        q.push(msg(7, 3, 10, None), 7, b, true, |m| lost.push(m.stamp.seq));
        assert_eq!(lost, [2, 4, 3]);
        // A priority-0 arrival is lower than everything queued: it is the one dropped.
        assert_eq!(
            q.push(msg(8, 0, 10, None), 8, b, true, |m| lost.push(m.stamp.seq)),
            Pushed::Dropped
        );
        assert_eq!(lost, [2, 4, 3, 8]);
        // Delivery order is arrival order, across priorities.
        assert_eq!(drain(&mut q), [1, 5, 6, 7]);
    }

    #[test]
    fn the_byte_bound_drops_only_what_is_needed_and_never_higher_priorities() {
        let mut q = SubQueue::default();
        // What a message counts for beyond its payload.
        let unit = size_of(&msg(0, 0, 0, None));
        let b = bounds(100, 3 * unit + 100);
        let mut lost = Vec::new();
        q.push(msg(1, 7, 40, None), 1, b, true, |_| panic!());
        q.push(msg(2, 2, 30, None), 2, b, true, |_| panic!());
        q.push(msg(3, 2, 30, None), 3, b, true, |_| panic!());
        // 50 bytes of priority 2 need both priority-2 messages gone, and no more.
        q.push(msg(4, 2, 50, None), 4, b, true, |m| lost.push(m.stamp.seq));
        assert_eq!(lost, [2, 3]);
        // This one could only fit by dropping priority 7: dropped itself, and nothing
        // else was.
        assert_eq!(
            q.push(msg(5, 2, unit + 61, None), 5, b, true, |m| lost
                .push(m.stamp.seq)),
            Pushed::Dropped
        );
        assert_eq!(lost, [2, 3, 5]);
        assert_eq!((q.len(), q.bytes()), (2, 2 * unit + 90));
        assert_eq!(drain(&mut q), [1, 4]);
        // An empty queue takes a message bigger than its byte bound.
        assert_eq!(
            q.push(msg(6, 0, 5 * unit + 500, None), 6, b, true, |_| panic!()),
            Pushed::Queued
        );
    }

    #[test]
    fn coalescing_replaces_in_place_and_keys_are_forgotten_when_delivered() {
        let mut q = SubQueue::default();
        let b = bounds(10, 1 << 20);
        q.push(msg(1, 0, 1, Some("cursor:ann")), 1, b, true, |_| panic!());
        q.push(msg(2, 0, 1, Some("cursor:bob")), 2, b, true, |_| panic!());
        q.push(msg(3, 0, 1, None), 3, b, true, |_| panic!());
        assert_eq!(
            q.push(msg(4, 0, 5, Some("cursor:ann")), 4, b, true, |_| panic!()),
            Pushed::Coalesced
        );
        let unit = size_of(&msg(0, 0, 0, None));
        assert_eq!((q.len(), q.bytes()), (3, 3 * unit + 7));
        // The newest value, in the place of the first.
        assert_eq!(q.pop().unwrap().0.stamp.seq, 4);
        // Delivered: the key no longer coalesces, the next one queues behind.
        assert_eq!(
            q.push(msg(5, 0, 1, Some("cursor:ann")), 5, b, true, |_| panic!()),
            Pushed::Queued
        );
        assert_eq!(drain(&mut q), [2, 3, 5]);
    }

    #[test]
    fn a_dropped_message_frees_its_coalescing_key() {
        let mut q = SubQueue::default();
        let b = bounds(2, 1 << 20);
        q.push(msg(1, 0, 1, Some("k")), 1, b, true, |_| panic!());
        q.push(msg(2, 0, 1, None), 2, b, true, |_| panic!());
        let mut lost = Vec::new();
        q.push(msg(3, 0, 1, None), 3, b, true, |m| lost.push(m.stamp.seq));
        assert_eq!(lost, [1]);
        assert_eq!(
            q.push(msg(4, 0, 1, Some("k")), 4, b, true, |m| lost
                .push(m.stamp.seq)),
            Pushed::Queued
        );
        assert_eq!(drain(&mut q), [3, 4]);
    }

    #[test]
    fn fits_says_whether_a_push_would_drop() {
        let mut q = SubQueue::default();
        let unit = size_of(&msg(0, 0, 0, None));
        let b = bounds(2, 2 * unit + 100);
        assert!(q.fits(&msg(1, 0, 5000, None), b, true));
        q.push(msg(1, 0, 10, Some("k")), 1, b, true, |_| panic!());
        q.push(msg(2, 0, 10, None), 2, b, true, |_| panic!());
        assert!(!q.fits(&msg(3, 0, 10, None), b, true));
        assert!(
            q.fits(&msg(3, 0, 10, Some("k")), b, true),
            "coalesces: no drop"
        );
    }

    #[test]
    fn drop_log_merges_consecutive_sequences_per_shard() {
        let mut log = DropLog::default();
        let at = |shard, seq| Stamp {
            shard,
            seq,
            time_ns: 0,
        };
        for (shard, seq) in [(0, 5), (0, 6), (1, 9), (0, 7), (1, 10), (0, 12), (0, 0)] {
            log.record(at(shard, seq));
        }
        let taken = log.take();
        assert_eq!(taken.count, 7);
        assert_eq!(taken.ranges, [(0, 5, 7), (1, 9, 10), (0, 12, 12)]);
        assert!(log.is_empty());
        for seq in 0..(MAX_DROP_RANGES as u64 * 2) {
            log.record(at(0, seq * 2 + 1));
        }
        assert_eq!(log.ranges.len(), MAX_DROP_RANGES);
        assert_eq!(log.count, MAX_DROP_RANGES as u64 * 2);
    }

    #[test]
    fn compact_copies_small_messages_into_one_buffer_of_their_own() {
        let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
        let mut m = Msg::new(
            chunk.slice(0..5),
            chunk.slice(10..20),
            ConnId::NONE,
            std::time::Instant::now(),
        );
        m.reply = Some(chunk.slice(5..7));
        m.headers = Some(Bytes::from_static(b"NATS/1.0\r\n\r\n"));
        m.priority = 3;
        let m = Arc::new(m);
        let c = compact(&m);
        assert_eq!(
            (&c.subject, &c.reply, &c.headers, &c.payload, c.priority),
            (&m.subject, &m.reply, &m.headers, &m.payload, 3)
        );
        // Its parts lie in one new buffer, not the 64 KiB chunk.
        let base = c.subject.as_ptr() as usize;
        assert_eq!(c.payload.as_ptr() as usize, base + 5 + 2 + 12);
        assert_ne!(base, chunk.as_ptr() as usize);
    }

    #[test]
    fn compact_keeps_every_size_whole_and_contiguous() {
        // Either side of each inline size and the larger path.
        for payload_len in [0, 1, 20, 21, 52, 53, 116, 117, 244, 245, 4000] {
            let chunk: Bytes = (0..8192u32).map(|i| (i % 251) as u8).collect();
            let mut m = Msg::new(
                chunk.slice(0..7),
                chunk.slice(100..100 + payload_len),
                ConnId::NONE,
                std::time::Instant::now(),
            );
            m.reply = Some(chunk.slice(7..12));
            let m = Arc::new(m);
            let c = compact(&m);
            assert_eq!(
                (&c.subject, &c.reply, &c.payload),
                (&m.subject, &m.reply, &m.payload),
                "payload of {payload_len}"
            );
            assert_eq!(c.headers, None);
            let base = c.subject.as_ptr() as usize;
            assert_eq!(c.payload.as_ptr() as usize, base + 7 + 5);
            assert_ne!(base, chunk.as_ptr() as usize);
            drop(m);
            // The copy stands alone: its slices outlive the original and each other.
            let payload = c.payload.clone();
            drop(c);
            assert_eq!(payload, chunk.slice(100..100 + payload_len));
        }
    }

    #[test]
    fn without_coalescing_every_message_queues() {
        let mut q = SubQueue::default();
        let b = bounds(10, 1 << 20);
        q.push(msg(1, 0, 1, Some("k")), 1, b, false, |_| panic!());
        assert!(q.fits(&msg(2, 0, 1, Some("k")), b, false));
        assert_eq!(
            q.push(msg(2, 0, 1, Some("k")), 2, b, false, |_| panic!()),
            Pushed::Queued
        );
        assert_eq!(drain(&mut q), [1, 2]);
    }
}

//! The message ids publishers gave, broker-wide: idempotent publishing across workers.
//!
//! Owns: [`Dedupe`], shared by every shard's store: each message id stored within
//! `dedupe_window`, with the shard and sequence its first copy was stored under. A publish
//! is routed by the shard of the worker that read it, so a publisher that retries on a new
//! connection may land on another worker: only a table every shard sees can tell that the
//! retry is a repeat.
//!
//! Bounded three ways, so what publishers send cannot grow it without limit: an id is
//! forgotten when the window has passed since it was stored, when its shard's ring has
//! overwritten its record (the window never outlives the message; each store says where its
//! log begins, [`Dedupe::held_from`]), and, oldest first, past `dedupe_max_ids` (each one
//! counted as evicted). Every id is a copy of its own, never a slice of a connection's read
//! buffer (which would keep the whole buffer alive), and at most `max_message_id` bytes long
//! (longer ones are refused before they get here).
//!
//! The one lock a publish may take: a publish that carries a message id locks the table
//! for its check and its append, so two copies published at once on two workers cannot
//! both be stored. Publishes without an id never touch it. One lock rather than stripes
//! keeps the cap exact and the eviction oldest-first across the whole broker; it is held
//! for one append (a copy into the ring's map), and contended only when two workers store
//! identified messages at the same instant.
//!
//! Never: blocks on anything but the lock held for one append; keeps a reference into a
//! connection's buffers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::index::FastMap;

/// Where the first copy of a message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstCopy {
    pub shard: u16,
    pub seq: u64,
}

pub(crate) struct Dedupe {
    ids: Mutex<Window>,
    /// Per shard, the oldest sequence its log holds: ids stored under an older one are
    /// gone with their record.
    held_from: Box<[HeldFrom]>,
}

/// One shard's oldest held sequence, on cache lines of its own (128 bytes: a line and the
/// one the prefetcher pairs with it). Its shard stores it on every append that evicts,
/// which is every append once the ring is full; sharing a line with the other shards'
/// would move that line between their cores on each of their appends.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HeldFrom(AtomicU64);

impl Dedupe {
    /// A table remembering ids for `window`, at most `max_ids` of them, for `shards`
    /// shards.
    pub fn new(window: Duration, max_ids: usize, shards: usize) -> Dedupe {
        Dedupe {
            ids: Mutex::new(Window::new(window, max_ids.max(1))),
            held_from: (0..shards).map(|_| HeldFrom::default()).collect(),
        }
    }

    /// Locks the table: hold it from the check ([`Ids::seen`]) to the append and
    /// [`Ids::remember`].
    pub fn lock(&self) -> Ids<'_> {
        Ids {
            window: self.window(),
            held_from: &self.held_from,
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        // The lock is only ever held for one check and one append, which cannot panic
        // half-way through a change to the table: a poisoned lock still guards a whole one.
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shard `shard`'s log now begins at `first_seq` (it wrapped over older records).
    pub fn held_from(&self, shard: u16, first_seq: u64) {
        if let Some(h) = self.held_from.get(usize::from(shard)) {
            h.0.store(first_seq, Ordering::Relaxed);
        }
    }

    /// Ids remembered now, and how many were forgotten early because `dedupe_max_ids` were
    /// remembered (monitoring: locks the table briefly).
    pub fn counts(&self) -> (usize, u64) {
        let w = self.window();
        (w.order.len(), w.evicted)
    }
}

/// The table, locked.
pub(crate) struct Ids<'a> {
    window: MutexGuard<'a, Window>,
    held_from: &'a [HeldFrom],
}

impl Ids<'_> {
    /// Where `id` was first stored, if that was within the window and its record is
    /// still held.
    pub fn seen(&mut self, id: &[u8], now: Instant) -> Option<FirstCopy> {
        let held_from = self.held_from;
        self.window.expire(now, |c| held(held_from, c));
        let first = *self.window.seqs.get(id)?;
        held(held_from, &first).then_some(first)
    }

    /// Remembers `id` (already a copy of its own) as first stored at `first`.
    pub fn remember(&mut self, id: Bytes, first: FirstCopy, now: Instant) {
        self.window.remember(id, first, now);
    }
}

/// True while the record of `c` is still in its shard's log.
fn held(held_from: &[HeldFrom], c: &FirstCopy) -> bool {
    held_from
        .get(usize::from(c.shard))
        .is_some_and(|h| c.seq >= h.0.load(Ordering::Relaxed))
}

struct Window {
    window: Duration,
    max_ids: usize,
    seqs: FastMap<Bytes, FirstCopy>,
    /// Oldest first: when each id was remembered, where, and the id.
    order: VecDeque<(Instant, FirstCopy, Bytes)>,
    /// Ids forgotten before their window ended because `max_ids` were remembered.
    evicted: u64,
}

impl Window {
    fn new(window: Duration, max_ids: usize) -> Window {
        Window {
            window,
            max_ids,
            seqs: FastMap::default(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Forgets the ids, oldest first, whose window has passed or whose record is gone.
    fn expire(&mut self, now: Instant, held: impl Fn(&FirstCopy) -> bool) {
        while let Some((at, first, _)) = self.order.front() {
            if now.duration_since(*at) < self.window && held(first) {
                return;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, first, id)) = self.order.pop_front() {
            // Unless the id was stored again since (its old record was gone).
            if self.seqs.get(&id) == Some(&first) {
                self.seqs.remove(&id);
            }
        }
    }

    fn remember(&mut self, id: Bytes, first: FirstCopy, now: Instant) {
        self.seqs.insert(id.clone(), first);
        self.order.push_back((now, first, id));
        while self.order.len() > self.max_ids {
            self.forget_oldest();
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(shard: u16, seq: u64) -> FirstCopy {
        FirstCopy { shard, seq }
    }

    #[test]
    fn an_id_is_seen_from_any_shard_until_its_window_ends() {
        let d = Dedupe::new(Duration::from_secs(120), 1000, 2);
        let t0 = Instant::now();
        d.lock().remember(Bytes::from_static(b"a"), at(1, 7), t0);
        assert_eq!(d.lock().seen(b"a", t0), Some(at(1, 7)));
        assert_eq!(d.lock().seen(b"b", t0), None);
        let later = t0 + Duration::from_secs(121);
        assert_eq!(d.lock().seen(b"a", later), None);
        assert_eq!(d.counts().0, 0);
    }

    #[test]
    fn an_id_whose_record_its_ring_overwrote_is_forgotten_and_can_be_stored_again() {
        let d = Dedupe::new(Duration::from_secs(120), 1000, 2);
        let t0 = Instant::now();
        d.lock().remember(Bytes::from_static(b"a"), at(0, 3), t0);
        d.lock().remember(Bytes::from_static(b"b"), at(1, 3), t0);
        d.held_from(0, 4);
        assert_eq!(d.lock().seen(b"a", t0), None);
        assert_eq!(d.lock().seen(b"b", t0), Some(at(1, 3)));
        // Stored again: the old entry's expiry does not take the new one with it.
        d.lock().remember(Bytes::from_static(b"a"), at(1, 9), t0);
        assert_eq!(d.lock().seen(b"a", t0), Some(at(1, 9)));
    }

    /// Each shard stores its oldest held sequence on every append once its ring is full:
    /// no two shards' values may share a cache line (or its prefetch pair).
    #[test]
    fn each_shards_oldest_held_sequence_has_cache_lines_of_its_own() {
        let d = Dedupe::new(Duration::from_secs(120), 10, 4);
        let at = |i: usize| std::ptr::from_ref(&d.held_from[i].0) as usize;
        for i in 1..4 {
            assert!(at(i) - at(i - 1) >= 128);
            assert_eq!(at(i) % 128, 0);
        }
    }

    #[test]
    fn the_table_holds_at_most_its_cap_oldest_first_and_counts_what_it_forgets() {
        let d = Dedupe::new(Duration::from_secs(120), 10, 2);
        let t0 = Instant::now();
        for i in 0..25u64 {
            let id = Bytes::from(format!("id-{i}"));
            d.lock().remember(id, at((i % 2) as u16, i + 1), t0);
            assert!(d.counts().0 <= 10);
        }
        assert_eq!(d.counts(), (10, 15));
        assert_eq!(d.lock().seen(b"id-14", t0), None, "the oldest went first");
        assert_eq!(d.lock().seen(b"id-15", t0), Some(at(1, 16)));
    }
}

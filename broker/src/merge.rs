//! The merge of one subscription's catch-ups from several shards into one time order.
//!
//! Owns: for a subscription that catches up (resume token, start time or "last N") from
//! more than one shard, the replayed messages each shard sent and the subscriber's worker
//! has not released yet, which shards have caught up with their log, and for a "last N"
//! start how many each shard will send. It releases the oldest message (by the time its
//! shard stored it, then shard, then sequence) only once every shard still replaying has
//! sent one to compare with, so the subscriber gets the history in the order it was
//! stored, across shards, rather than in whatever order the shards' batches arrive; and a
//! "last N" start gets the newest N over all shards, not N from each.
//!
//! Each shard's catch-up keeps to its own window of bytes in flight (`mesh::Flight`): the
//! messages held here count in it, so a shard that is ahead waits at its window, and what
//! the merge holds is bounded by the shards' windows together. A shard that has caught up
//! does not go live on its own (`Store::pump`): it reads on from its log what is appended
//! meanwhile, and hands over to live delivery when the subscriber's worker releases it,
//! once every shard has caught up (`Envelope::Release`). So live messages never wait here.
//!
//! A shard's gap notices (what its log no longer holds) travel in its stream too: held
//! where they came among its messages, and released as soon as they reach the head, so a
//! notice still comes right before the first message after the hole it names.
//!
//! Never: reorders the messages of one shard (they stay in its sequence order), holds a
//! live message, or waits on a shard that has caught up and has nothing held.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use tern_protocol::binary::StartPosition;

use crate::mesh::Msg;

/// True when a subscription with this start catches up through a merge: its start replays
/// from the log (anything but live), and the broker has more than one shard, each of which
/// may hold part of what it asks for (a publish is stored by the shard of the worker that
/// read it). The subscriber's worker and every shard decide it alike from the same inputs.
pub(crate) fn merges(start: Option<&StartPosition>, shards: usize) -> bool {
    shards > 1 && start.is_some_and(|s| !matches!(s, StartPosition::Live))
}

/// What a shard sent that the merge holds, in the order it came.
#[derive(Debug)]
enum Held {
    Msg(Arc<Msg>),
    /// `requested..oldest` of the shard are gone (`Envelope::Gap`).
    Gap {
        requested: u64,
        oldest: u64,
    },
}

/// What the merge releases, in the order the subscriber gets it.
#[derive(Debug)]
pub(crate) enum Released {
    Msg(Arc<Msg>),
    Gap {
        shard: u16,
        requested: u64,
        oldest: u64,
    },
}

/// One subscription's catch-ups in progress, merged (see the module header).
#[derive(Debug)]
pub(crate) struct Merge {
    /// The shards it catches up from; `held`, `caught_up` and `counts` are indexed from
    /// `shards.start`.
    shards: Range<usize>,
    held: Vec<VecDeque<Held>>,
    caught_up: Vec<bool>,
    /// A "last N" start: N, and per shard how many of the newest matches it sends (`None`
    /// until it has counted). Nothing is released before every shard has counted.
    last_n: Option<(u64, Vec<Option<u64>>)>,
    /// The oldest messages still to step over: those past the newest N, over all shards.
    skip: u64,
}

impl Merge {
    /// A merge of the catch-ups from `shards`; `last_n` for a "last N" start.
    pub fn new(shards: Range<usize>, last_n: Option<u32>) -> Merge {
        let n = shards.len();
        // "Last 0" counts nothing: the shards replay only what is appended from now.
        let last_n = last_n
            .filter(|&want| want > 0)
            .map(|want| (u64::from(want), vec![None; n]));
        Merge {
            shards,
            held: (0..n).map(|_| VecDeque::new()).collect(),
            caught_up: vec![false; n],
            last_n,
            skip: 0,
        }
    }

    fn index(&self, shard: u16) -> Option<usize> {
        let s = usize::from(shard);
        self.shards.contains(&s).then(|| s - self.shards.start)
    }

    /// Holds a replayed message from its shard (`msg.stamp.shard`). False when that shard
    /// is not one of the merge's: the caller delivers it as it is.
    pub fn hold(&mut self, msg: Arc<Msg>) -> bool {
        match self.index(msg.stamp.shard) {
            Some(i) => {
                self.held[i].push_back(Held::Msg(msg));
                true
            }
            None => false,
        }
    }

    /// True when a message from `shard` would be released as soon as it is held: nothing
    /// is held, every other shard has caught up, and no "last N" is still counting or
    /// stepping over (or `shard` is not one of the merge's). The caller may then deliver
    /// it without holding it: the order is the same.
    pub fn passes(&self, shard: u16) -> bool {
        let Some(i) = self.index(shard) else {
            return true;
        };
        self.last_n.is_none()
            && self.skip == 0
            && self.held.iter().all(VecDeque::is_empty)
            && self.caught_up.iter().enumerate().all(|(j, &c)| c || j == i)
    }

    /// Holds `shard`'s notice that `requested..oldest` are gone, behind what it sent
    /// before. False when that shard is not one of the merge's.
    pub fn hold_gap(&mut self, shard: u16, requested: u64, oldest: u64) -> bool {
        match self.index(shard) {
            Some(i) => {
                self.held[i].push_back(Held::Gap { requested, oldest });
                true
            }
            None => false,
        }
    }

    /// `shard` has replayed everything its log held: it waits for the release.
    pub fn caught_up(&mut self, shard: u16) {
        if let Some(i) = self.index(shard) {
            self.caught_up[i] = true;
        }
    }

    /// `shard` counted its matches for a "last N" start: it sends `sends` of them, its
    /// newest. Once every shard has counted, the oldest of them past N in all are stepped
    /// over as they come.
    pub fn counted(&mut self, shard: u16, sends: u64) {
        let Some(i) = self.index(shard) else {
            return;
        };
        let Some((want, counts)) = &mut self.last_n else {
            return;
        };
        counts[i] = Some(sends);
        if counts.iter().all(Option::is_some) {
            let total: u64 = counts.iter().flatten().sum();
            self.skip = total.saturating_sub(*want);
            self.last_n = None;
        }
    }

    /// Every shard has caught up: the shards may go live (the caller releases them),
    /// and nothing held waits for anything any more.
    pub fn all_caught_up(&self) -> bool {
        self.caught_up.iter().all(|&c| c)
    }

    /// True when every shard has caught up and nothing is held.
    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.all_caught_up() && self.held.iter().all(VecDeque::is_empty)
    }

    /// What comes next: a gap notice at the head of its shard's stream at once; otherwise
    /// the next message in time order, once it can be known to be next (every shard still
    /// replaying has one held to compare with). The oldest past a "last N" start's N are
    /// stepped over (dropped here).
    pub fn pop(&mut self) -> Option<Released> {
        loop {
            if let Some(gap) = (0..self.held.len()).find_map(|i| self.pop_gap(i)) {
                return Some(gap);
            }
            if self.last_n.is_some() {
                return None;
            }
            let mut next: Option<(usize, &Msg)> = None;
            for (i, queue) in self.held.iter().enumerate() {
                match queue.front() {
                    Some(Held::Msg(head)) => {
                        let key = |m: &Msg| (m.stamp.time_ns, m.stamp.shard, m.stamp.seq);
                        if next.is_none_or(|(_, best)| key(head) < key(best)) {
                            next = Some((i, head));
                        }
                    }
                    // None here: gap notices at a head were released above.
                    Some(Held::Gap { .. }) => {}
                    // It may still send something older than every head held.
                    None if !self.caught_up[i] => return None,
                    None => {}
                }
            }
            let (i, _) = next?;
            let Some(Held::Msg(msg)) = self.held[i].pop_front() else {
                return None;
            };
            if self.skip == 0 {
                return Some(Released::Msg(msg));
            }
            self.skip -= 1;
        }
    }

    /// The gap notice at the head of the stream of the shard at index `i`, if any.
    fn pop_gap(&mut self, i: usize) -> Option<Released> {
        let &Held::Gap { requested, oldest } = self.held[i].front()? else {
            return None;
        };
        self.held[i].pop_front();
        Some(Released::Gap {
            shard: (self.shards.start + i) as u16,
            requested,
            oldest,
        })
    }

    /// Everything held, in the order the merge would have released it (for a subscription
    /// that leaves the merge early: its lossless fall-back restarts a shard's catch-up).
    pub fn drain(&mut self) -> Vec<Released> {
        for c in &mut self.caught_up {
            *c = true;
        }
        self.last_n = None;
        let mut out = Vec::new();
        while let Some(msg) = self.pop() {
            out.push(msg);
        }
        out
    }

    /// The shards to release once the merge is over.
    pub fn shards(&self) -> Range<usize> {
        self.shards.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{ConnId, Stamp};
    use bytes::Bytes;
    use std::time::Instant;

    fn msg(shard: u16, seq: u64, time_ns: u64) -> Arc<Msg> {
        let mut m = Msg::new(
            Bytes::from_static(b"a.b"),
            Bytes::new(),
            ConnId::NONE,
            Instant::now(),
        );
        m.replayed = true;
        m.stamp = Stamp {
            shard,
            seq,
            time_ns,
        };
        Arc::new(m)
    }

    /// (shard, sequence) of each message released; a gap notice as (shard, 0).
    fn seqs(out: &[Released]) -> Vec<(u16, u64)> {
        out.iter()
            .map(|r| match r {
                Released::Msg(m) => (m.stamp.shard, m.stamp.seq),
                Released::Gap { shard, .. } => (*shard, 0),
            })
            .collect()
    }

    fn pop_all(m: &mut Merge) -> Vec<Released> {
        std::iter::from_fn(|| m.pop()).collect()
    }

    #[test]
    fn only_catch_ups_over_several_shards_merge() {
        let resume = StartPosition::LastN(3);
        assert!(merges(Some(&resume), 2));
        assert!(!merges(Some(&resume), 1), "one shard");
        assert!(!merges(None, 4), "live");
        assert!(!merges(Some(&StartPosition::Live), 4), "live");
    }

    /// `passes` is true exactly when `hold` then `pop` would hand the message straight
    /// back: a catch-up run's record may then skip the merge.
    #[test]
    fn a_message_passes_only_when_holding_it_would_release_it_at_once() {
        let mut m = Merge::new(0..2, None);
        assert!(!m.passes(0), "shard 1 may still send something older");
        m.caught_up(1);
        assert!(m.passes(0));
        assert!(m.passes(7), "not one of the merge's shards");
        m.hold_gap(0, 1, 5);
        assert!(!m.passes(0), "behind what is held");
        assert!(matches!(m.pop(), Some(Released::Gap { .. })));
        assert!(m.passes(0));
        // Check against the merge itself: held, then popped at once.
        assert!(m.hold(msg(0, 5, 10)));
        assert!(matches!(m.pop(), Some(Released::Msg(x)) if x.stamp.seq == 5));
        // A "last N" start passes nothing until every shard has counted and nothing
        // remains to step over.
        let mut last = Merge::new(0..2, Some(1));
        last.caught_up(1);
        assert!(!last.passes(0));
        last.counted(0, 2);
        last.counted(1, 0);
        assert!(!last.passes(0), "one of shard 0's two is stepped over");
        last.hold(msg(0, 1, 10));
        assert!(last.pop().is_none(), "stepped over");
        assert!(last.passes(0));
    }

    #[test]
    fn a_message_waits_until_every_replaying_shard_has_one_to_compare() {
        let mut m = Merge::new(0..2, None);
        assert!(m.hold(msg(0, 1, 30)));
        assert!(m.pop().is_none(), "shard 1 may still send something older");
        m.hold(msg(1, 7, 10));
        m.hold(msg(1, 8, 40));
        assert_eq!(seqs(&pop_all(&mut m)), [(1, 7), (0, 1)]);
        // Shard 0 still replays: shard 1's newer message waits for it.
        m.caught_up(0);
        assert_eq!(seqs(&pop_all(&mut m)), [(1, 8)]);
        assert!(!m.is_done());
        m.caught_up(1);
        assert!(m.all_caught_up() && m.is_done());
    }

    #[test]
    fn one_shards_messages_keep_their_order_whatever_their_times() {
        // A wall clock that stepped back between two records of one shard.
        let mut m = Merge::new(0..2, None);
        m.hold(msg(0, 1, 50));
        m.hold(msg(0, 2, 20));
        m.hold(msg(1, 1, 30));
        m.caught_up(0);
        m.caught_up(1);
        assert_eq!(seqs(&pop_all(&mut m)), [(1, 1), (0, 1), (0, 2)]);
    }

    #[test]
    fn ties_in_time_go_by_shard_then_sequence() {
        let mut m = Merge::new(0..3, None);
        m.hold(msg(2, 5, 10));
        m.hold(msg(1, 9, 10));
        m.hold(msg(0, 3, 10));
        (0..3).for_each(|s| m.caught_up(s));
        assert_eq!(seqs(&pop_all(&mut m)), [(0, 3), (1, 9), (2, 5)]);
    }

    #[test]
    fn last_n_releases_the_newest_n_over_all_shards_once_all_have_counted() {
        let mut m = Merge::new(0..2, Some(3));
        // Each shard sends its newest 3 (it holds more); 6 come, the oldest 3 are not owed.
        m.counted(0, 3);
        m.hold(msg(0, 4, 10));
        m.hold(msg(0, 5, 20));
        m.hold(msg(0, 6, 60));
        m.caught_up(0);
        assert!(m.pop().is_none(), "shard 1 has not counted");
        m.counted(1, 3);
        m.hold(msg(1, 7, 15));
        m.hold(msg(1, 8, 40));
        m.hold(msg(1, 9, 50));
        m.caught_up(1);
        assert_eq!(seqs(&pop_all(&mut m)), [(1, 8), (1, 9), (0, 6)]);
        assert!(m.is_done());
    }

    #[test]
    fn last_n_with_fewer_matches_than_n_steps_over_nothing() {
        let mut m = Merge::new(0..2, Some(10));
        m.counted(0, 1);
        m.counted(1, 0);
        m.caught_up(1);
        m.hold(msg(0, 1, 5));
        m.caught_up(0);
        assert_eq!(seqs(&pop_all(&mut m)), [(0, 1)]);
    }

    #[test]
    fn a_gap_notice_keeps_its_place_in_its_shards_stream() {
        let mut m = Merge::new(0..2, None);
        m.hold(msg(0, 1, 10));
        m.hold_gap(0, 2, 5);
        m.hold(msg(0, 5, 50));
        m.hold(msg(1, 1, 20));
        m.hold(msg(1, 2, 60));
        // Shard 0's notice comes after its seq 1 and before its seq 5, whatever shard 1 sends.
        assert_eq!(seqs(&pop_all(&mut m)), [(0, 1), (0, 0), (1, 1), (0, 5)]);
        // Shard 1's seq 2 waits for shard 0; a notice behind it waits too.
        m.hold_gap(1, 3, 9);
        assert!(m.pop().is_none());
        // A notice at the head of its stream goes at once, while other shards are awaited.
        let mut m = Merge::new(0..2, None);
        m.hold_gap(1, 3, 9);
        assert_eq!(seqs(&pop_all(&mut m)), [(1, 0)]);
        assert!(!m.hold_gap(2, 1, 2), "not one of its shards");
    }

    #[test]
    fn a_message_of_another_shard_is_not_held_and_drain_gives_all_in_order() {
        let mut m = Merge::new(1..3, None);
        assert!(!m.hold(msg(0, 1, 1)));
        m.hold(msg(2, 1, 20));
        m.hold(msg(1, 1, 30));
        m.hold(msg(2, 2, 40));
        assert_eq!(seqs(&m.drain()), [(2, 1), (1, 1), (2, 2)]);
        assert!(m.is_done());
    }
}

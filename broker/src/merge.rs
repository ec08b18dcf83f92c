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

/// One subscription's catch-ups in progress, merged (see the module header).
#[derive(Debug)]
pub(crate) struct Merge {
    /// The shards it catches up from; `held`, `caught_up` and `counts` are indexed from
    /// `shards.start`.
    shards: Range<usize>,
    held: Vec<VecDeque<Arc<Msg>>>,
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
            held: vec![VecDeque::new(); n],
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
                self.held[i].push_back(msg);
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

    /// The next message in time order, once it can be known to be next: every shard
    /// still replaying has one held to compare with. The oldest past a "last N" start's
    /// N are stepped over (dropped here).
    pub fn pop(&mut self) -> Option<Arc<Msg>> {
        if self.last_n.is_some() {
            return None;
        }
        loop {
            let mut next: Option<usize> = None;
            for (i, queue) in self.held.iter().enumerate() {
                match queue.front() {
                    Some(head) => {
                        let older = next.is_none_or(|n| {
                            let best = &self.held[n][0].stamp;
                            (head.stamp.time_ns, head.stamp.shard, head.stamp.seq)
                                < (best.time_ns, best.shard, best.seq)
                        });
                        if older {
                            next = Some(i);
                        }
                    }
                    // It may still send something older than every head held.
                    None if !self.caught_up[i] => return None,
                    None => {}
                }
            }
            let msg = self.held[next?].pop_front()?;
            if self.skip == 0 {
                return Some(msg);
            }
            self.skip -= 1;
        }
    }

    /// Everything held, in the order the merge would have released it (for a subscription
    /// that leaves the merge early: its lossless fall-back restarts a shard's catch-up).
    pub fn drain(&mut self) -> Vec<Arc<Msg>> {
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

    fn seqs(out: &[Arc<Msg>]) -> Vec<(u16, u64)> {
        out.iter().map(|m| (m.stamp.shard, m.stamp.seq)).collect()
    }

    fn pop_all(m: &mut Merge) -> Vec<Arc<Msg>> {
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

//! Eviction order across many subscription queues: which queued message goes first when a
//! budget shared by several queues (a connection's, a worker's share of the broker's) is
//! exceeded.
//!
//! Owns: [`Tickets`], one FIFO per priority level of (arrival, queue) pairs, one pushed for
//! every message a queue takes. Arrival numbers grow with every message queued on the
//! worker, so each FIFO is in arrival order, and its front is the oldest message of that
//! priority across all the queues that share the budget. A ticket goes stale when its
//! message leaves its queue another way (written, dropped by the queue's own bound,
//! coalesced away, its subscription or connection gone): stale tickets are skipped when
//! found at a front, and the FIFOs are compacted when they hold more than twice the live
//! messages, so what they cost stays proportional to what is queued.
//!
//! Never: looks into a queue itself. The caller says whether a ticket is live; the rule it
//! relies on is that a live ticket found at the front of its level's FIFO names the front
//! of its queue's FIFO of that level (any older message of that queue and level would have
//! an older live ticket ahead of it).

use std::collections::VecDeque;

use crate::subqueue::LEVELS;

/// Stale tickets tolerated before a compaction, beyond twice the live ones.
const SLACK: usize = 1024;

/// Per priority level, the (arrival, queue) of every message queued under one budget, in
/// arrival order.
#[derive(Debug)]
pub(crate) struct Tickets<K> {
    levels: [VecDeque<(u64, K)>; LEVELS],
    len: usize,
}

impl<K> Default for Tickets<K> {
    fn default() -> Self {
        Tickets {
            levels: Default::default(),
            len: 0,
        }
    }
}

impl<K: Copy> Tickets<K> {
    /// Tickets held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records that a message of `level` with `arrival` was queued in `queue`. `arrival`
    /// must be larger than every arrival pushed before.
    pub fn push(&mut self, level: u8, arrival: u64, queue: K) {
        let level = usize::from(level).min(LEVELS - 1);
        debug_assert!(self.levels[level].back().is_none_or(|(a, _)| *a < arrival));
        self.levels[level].push_back((arrival, queue));
        self.len += 1;
    }

    /// The message of `level` with `arrival` left its queue (written): its ticket goes
    /// now when it is at the front of its level's FIFO, the usual case for queues drained
    /// oldest first; anywhere else it is left to go stale, for [`Tickets::compact`].
    #[inline]
    pub fn forget(&mut self, level: u8, arrival: u64) {
        let fifo = &mut self.levels[usize::from(level).min(LEVELS - 1)];
        if fifo.front().is_some_and(|&(a, _)| a == arrival) {
            fifo.pop_front();
            self.len -= 1;
        }
    }

    /// The lowest-priority, oldest live message: its level, arrival and queue. The ticket
    /// is taken; stale tickets found on the way are dropped.
    pub fn pop_lowest(&mut self, mut live: impl FnMut(u8, u64, K) -> bool) -> Option<(u8, u64, K)> {
        for (level, fifo) in self.levels.iter_mut().enumerate() {
            while let Some((arrival, queue)) = fifo.pop_front() {
                self.len -= 1;
                if live(level as u8, arrival, queue) {
                    return Some((level as u8, arrival, queue));
                }
            }
        }
        None
    }

    /// Drops stale tickets once they outnumber the live messages (`live_count`) by far.
    /// Amortised O(1) per push.
    pub fn compact(&mut self, live_count: usize, mut live: impl FnMut(u8, u64, K) -> bool) {
        if self.len <= live_count.saturating_mul(2) + SLACK {
            return;
        }
        let mut len = 0;
        for (level, fifo) in self.levels.iter_mut().enumerate() {
            fifo.retain(|&(arrival, queue)| live(level as u8, arrival, queue));
            len += fifo.len();
        }
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_lowest_level_goes_first_then_the_oldest_and_stale_tickets_are_skipped() {
        let mut t = Tickets::default();
        // (level, arrival, queue)
        for (level, arrival, q) in [(3, 1, 'a'), (1, 2, 'b'), (1, 3, 'a'), (5, 4, 'c')] {
            t.push(level, arrival, q);
        }
        let gone: HashSet<u64> = [2].into_iter().collect();
        let live = |_, a, _| !gone.contains(&a);
        assert_eq!(t.pop_lowest(live), Some((1, 3, 'a')), "2 left another way");
        assert_eq!(t.pop_lowest(live), Some((3, 1, 'a')));
        assert_eq!(t.pop_lowest(live), Some((5, 4, 'c')));
        assert_eq!(t.pop_lowest(live), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn compaction_keeps_what_is_live_and_bounds_the_rest() {
        let mut t = Tickets::default();
        for a in 0..10_000u64 {
            t.push((a % 8) as u8, a, ());
        }
        // Only every hundredth message is still queued.
        let live = |_, a: u64, _| a.is_multiple_of(100);
        t.compact(100, live);
        assert_eq!(t.len(), 100);
        // Within the slack nothing is scanned.
        t.push(0, 10_001, ());
        t.compact(100, |_, _, _| panic!("no compaction needed"));
        assert_eq!(t.pop_lowest(|_, _, _| true), Some((0, 0, ())));
    }

    #[test]
    fn a_written_message_at_the_front_takes_its_ticket_along() {
        let mut t = Tickets::default();
        for (level, arrival) in [(0, 1), (2, 2), (0, 3)] {
            t.push(level, arrival, ());
        }
        t.forget(0, 3);
        assert_eq!(t.len(), 3, "not at the front: left to go stale");
        t.forget(0, 1);
        t.forget(2, 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_lowest(|_, _, _| true), Some((0, 3, ())));
    }
}

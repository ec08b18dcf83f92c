//! Queue groups: which one member of each group gets a message.
//!
//! Owns: the round-robin turn of every queue group of one shard, and the choice, for the
//! message being routed, of one member per group among the subscriptions that match it.
//! A group's members may be spread over several matching lists (`a.*` and `a.b` in the
//! same group): they count as one group, as in nats-server, and exactly one of them gets
//! the message.
//!
//! Contract, per message (the shard drives it):
//! 1. [`QueueGroups::count`] for every matching list: how many members each group has
//!    among them.
//! 2. If [`QueueGroups::any`]: [`QueueGroups::scan`] for the same lists in the same order,
//!    then [`QueueGroups::finish`], which hands over each group's pick.
//!
//! Think of a group's members in the matching lists, in walk order, as positions
//! `0..total`. The group's turn says where the search starts (`turn % total`); the first
//! member from there (wrapping round) that may take the message is picked, and the turn
//! moves just past it. So a group whose members do not change is served strictly round
//! robin, and the cost per message is one step per group and list, plus one per member
//! passed over because it may not take this message (the publisher's own with
//! `echo: false`, one catching up from the log): never a sort, never a pass over every
//! member. A member passed over is passed once per round of the turn, so unless nearly
//! every member of a group is skipped for most messages, that cost is O(1) per message
//! amortised.
//!
//! Never: allocates per message (its scratch is per group id and reused), and never
//! touches the index: the lists come from the shard's walk.

use crate::index::{QueueId, SubList};
use crate::mesh::SubRef;

/// What the search for one group's member has found so far, for the message being
/// routed.
#[derive(Debug, Default, Clone, Copy)]
struct Search {
    /// The group's members in the matching lists (whether they may take it or not).
    total: u32,
    /// Where the search starts: the group's turn, modulo `total`.
    start: u32,
    /// Members passed so far in the scan.
    seen: u32,
    /// The first member at or after `start` that may take it, and its position.
    pick: Option<(SubRef, u32)>,
    /// The first member before `start` that may take it: the pick when none after does.
    wrapped: Option<(SubRef, u32)>,
}

/// The turns of a shard's queue groups and the scratch for the message being routed.
#[derive(Debug, Default)]
pub(crate) struct QueueGroups {
    /// Per group id: the position whose turn is next.
    turn: Vec<u32>,
    /// Per group id: this message's search (zero outside of one).
    search: Vec<Search>,
    /// The groups this message matched, in the order first met.
    touched: Vec<QueueId>,
}

impl QueueGroups {
    /// Makes room for group ids below `count` (the index's `queue_count`).
    pub fn resize(&mut self, count: usize) {
        if count > self.turn.len() {
            self.turn.resize(count, 0);
            self.search.resize(count, Search::default());
        }
    }

    /// Step 1: counts the members of each group in one matching list.
    pub fn count(&mut self, list: &SubList) {
        for group in list.groups() {
            let search = &mut self.search[group.id() as usize];
            if search.total == 0 {
                self.touched.push(group.id());
            }
            search.total += group.members().len() as u32;
        }
    }

    /// True when the message matched a queue group: step 2 is needed.
    pub fn any(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Step 2: looks in one matching list for each group's member in turn. `wanted` says
    /// whether a member may take this message.
    pub fn scan(&mut self, list: &SubList, wanted: impl Fn(&SubRef) -> bool) {
        for group in list.groups() {
            let q = group.id() as usize;
            let search = &mut self.search[q];
            if search.seen == 0 {
                // The group's first list in this scan: its count is complete.
                search.start = self.turn[q] % search.total;
            }
            let members = group.members();
            // This list holds positions `from..from + len` of the group.
            let from = search.seen;
            let len = members.len() as u32;
            search.seen += len;
            if search.pick.is_some() {
                continue;
            }
            let first_wanted = |range: std::ops::Range<u32>| {
                let at = range.start;
                members[range.start as usize..range.end as usize]
                    .iter()
                    .position(&wanted)
                    .map(|i| (members[at as usize + i], from + at + i as u32))
            };
            let split = search.start.saturating_sub(from).min(len);
            if search.wrapped.is_none() && split > 0 {
                search.wrapped = first_wanted(0..split);
            }
            if split < len {
                search.pick = first_wanted(split..len);
            }
        }
    }

    /// Hands each group's pick to `deliver` and moves its turn on; clears the scratch.
    pub fn finish(&mut self, deliver: impl FnMut(SubRef)) {
        self.finish_where(|_| true, deliver);
    }

    /// [`QueueGroups::finish`] for the groups `keep` says only: the others get nothing and
    /// keep their turn (a bridge's copy for one group, or a publish whose groups upstream
    /// picks for).
    pub fn finish_where(
        &mut self,
        keep: impl Fn(QueueId) -> bool,
        mut deliver: impl FnMut(SubRef),
    ) {
        for q in self.touched.drain(..) {
            let search = std::mem::take(&mut self.search[q as usize]);
            if !keep(q) {
                continue;
            }
            if let Some((sub, position)) = search.pick.or(search.wrapped) {
                self.turn[q as usize] = position.wrapping_add(1);
                deliver(sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::index::Index;
    use crate::mesh::ConnId;

    fn sub(conn: u32, id: u64) -> SubRef {
        SubRef {
            conn: ConnId {
                worker: 0,
                slot: conn,
                gen: 1,
            },
            key: id as u32,
            id,
        }
    }

    /// The picks for one message to `subject`: the steps the shard takes.
    fn route(
        ix: &mut Index,
        groups: &mut QueueGroups,
        subject: &str,
        wanted: impl Fn(&SubRef) -> bool,
    ) -> Vec<u64> {
        groups.resize(ix.queue_count());
        ix.for_each_match(subject.as_bytes(), |l| groups.count(l));
        let mut picks = Vec::new();
        if groups.any() {
            ix.for_each_match(subject.as_bytes(), |l| groups.scan(l, &wanted));
            groups.finish(|s| picks.push(s.id));
        }
        picks
    }

    fn add(ix: &mut Index, filter: &'static str, queue: &'static str, s: SubRef) {
        ix.insert(
            &Bytes::from_static(filter.as_bytes()),
            Some(&Bytes::from_static(queue.as_bytes())),
            s,
        );
    }

    #[test]
    fn members_are_served_in_turn() {
        let mut ix = Index::default();
        let mut groups = QueueGroups::default();
        for id in 0..7 {
            add(&mut ix, "jobs", "q", sub(id as u32, id));
        }
        let mut counts = BTreeMap::new();
        let mut last_round = Vec::new();
        for round in 0..100 {
            let mut this_round = Vec::new();
            for _ in 0..7 {
                let picks = route(&mut ix, &mut groups, "jobs", |_| true);
                assert_eq!(picks.len(), 1);
                *counts.entry(picks[0]).or_insert(0) += 1;
                this_round.push(picks[0]);
            }
            let mut sorted = this_round.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..7).collect::<Vec<_>>(),
                "each member once a round"
            );
            if round > 0 {
                assert_eq!(this_round, last_round, "the same order every round");
            }
            last_round = this_round;
        }
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }

    #[test]
    fn one_member_per_group_across_filters() {
        let mut ix = Index::default();
        let mut groups = QueueGroups::default();
        // Group q spread over a literal, a `*` and a `>` filter; group r on one of them.
        add(&mut ix, "a.b", "q", sub(1, 1));
        add(&mut ix, "a.b", "q", sub(2, 2));
        add(&mut ix, "a.*", "q", sub(3, 3));
        add(&mut ix, "a.>", "q", sub(4, 4));
        add(&mut ix, "a.*", "r", sub(5, 5));
        let mut counts = BTreeMap::new();
        for _ in 0..400 {
            let picks = route(&mut ix, &mut groups, "a.b", |_| true);
            assert_eq!(picks.len(), 2, "one of q, one of r: {picks:?}");
            assert!(picks.contains(&5));
            for p in picks {
                *counts.entry(p).or_insert(0) += 1;
            }
        }
        for id in 1..=4 {
            assert_eq!(counts[&id], 100, "{counts:?}");
        }
        assert_eq!(counts[&5], 400);
        // Another subject reaches only some of q's filters: still one of those.
        for _ in 0..10 {
            let picks = route(&mut ix, &mut groups, "a.c", |_| true);
            assert_eq!(picks.len(), 2);
            assert!(picks.iter().all(|p| [3, 4, 5].contains(p)), "{picks:?}");
        }
        assert_eq!(route(&mut ix, &mut groups, "a.c.d", |_| true), vec![4]);
        assert!(route(&mut ix, &mut groups, "b", |_| true).is_empty());
    }

    #[test]
    fn members_that_may_not_take_it_are_passed_over() {
        let mut ix = Index::default();
        let mut groups = QueueGroups::default();
        // The publisher (connection 9, echo off) holds members 0..6 of 10, in both lists.
        for id in 0..10u64 {
            let conn = if id < 6 { 9 } else { 100 + id as u32 };
            let filter = if id % 2 == 0 { "x.y" } else { "x.*" };
            add(&mut ix, filter, "q", sub(conn, id));
        }
        let not_publisher = |s: &SubRef| s.conn.slot != 9;
        let mut counts = BTreeMap::new();
        for _ in 0..400 {
            let picks = route(&mut ix, &mut groups, "x.y", not_publisher);
            assert_eq!(picks.len(), 1);
            *counts.entry(picks[0]).or_insert(0) += 1;
        }
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![6, 7, 8, 9]);
        assert!(
            counts.values().all(|&c| c == 100),
            "even among the others: {counts:?}"
        );
        // Nobody may take it: nothing is delivered, and the next message is served.
        assert!(route(&mut ix, &mut groups, "x.y", |_| false).is_empty());
        assert_eq!(route(&mut ix, &mut groups, "x.y", |_| true).len(), 1);
    }

    #[test]
    fn membership_changes_keep_exactly_one_pick() {
        let mut ix = Index::default();
        let mut groups = QueueGroups::default();
        let q = Bytes::from_static(b"q");
        let f = Bytes::from_static(b"s");
        for id in 0..50 {
            add(&mut ix, "s", "q", sub(id as u32, id));
        }
        for id in 0..50u64 {
            // One leaves, one joins, between messages.
            assert!(ix.remove(&f, Some(&q), &sub(id as u32, id)));
            ix.insert(&f, Some(&q), sub(100 + id as u32, 100 + id));
            let picks = route(&mut ix, &mut groups, "s", |_| true);
            assert_eq!(picks.len(), 1);
            assert!(picks[0] > id, "a member still in the group: {picks:?}");
        }
    }
}

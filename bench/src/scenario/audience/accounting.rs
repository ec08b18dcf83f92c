//! Missed, duplicated and reordered messages: what each subscriber was owed, and what it
//! got.
//!
//! Owns: [`SeqSet`] (the sequences received from one publisher), [`PublishLog`] (when each
//! of one publisher's messages was sent), [`Ledger`] (one subscriber's receipts and
//! subscription periods) and the rule that decides which messages a subscriber was owed
//! ([`Ledger::tally`]).
//!
//! # What a subscriber is owed
//!
//! Every message carries its publisher's id and a per-publisher sequence (1, 2, 3, …, over
//! the publisher's whole run, across reconnects); the publisher logs the time it sent each
//! one (taken under the log's lock, just before the write). A subscriber's time is cut into
//! *periods*: a period opens when the subscriber receives its own join message back (its
//! subscription is then live wherever the broker routes the room's subject, so anything
//! sent afterwards must reach it) and ends when it leaves or drops. From each publisher in
//! its room, a subscriber is owed, per period:
//!
//! - **from** the first message sent *after* the period opened (one sent before may or
//!   may not arrive; either is fine and neither is counted as owed);
//! - **to**, when the period ended gracefully (churn, or the end of the run), the last
//!   message sent *before* the subscriber decided to leave: it stays subscribed, lingering,
//!   until all of those arrived (or the linger time ran out, and the rest are missed);
//! - **to**, when the period ended abruptly (the reconnect storm, or the broker closing
//!   the connection), the last message it *did* receive from that publisher in the period:
//!   what was still in flight when the socket closed is lost by definition of a drop and is
//!   counted apart, as `cut_by_drop`, never as missed; a hole below it is missed.
//!
//! Messages sent while a subscriber was away (between periods) are owed to no one.
//! `missed` = owed and never received (in any period); `duplicated` = a (publisher,
//! sequence) received more than once, over the subscriber's whole run; `reordered` = a new
//! sequence below one already received from the same publisher (the brokers promise
//! per-publisher order).
//!
//! Never: reads a clock. Times are nanoseconds since the run's origin, given by callers.

use std::collections::HashMap;

use serde::Serialize;

/// A set of sequence numbers, as sorted, disjoint, non-adjacent inclusive ranges: a
/// subscriber receiving in order keeps one range per publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        // The first range that ends at or after seq - 1 (could merge on its right end).
        let i = self
            .ranges
            .partition_point(|&(_, hi)| hi.saturating_add(1) < seq);
        match self.ranges.get(i).copied() {
            Some((lo, hi)) if lo <= seq && seq <= hi => false,
            Some((_, hi)) if hi.saturating_add(1) == seq => {
                self.ranges[i].1 = seq;
                // Did it close the gap to the next range?
                if let Some(&(next_lo, next_hi)) = self.ranges.get(i + 1) {
                    if next_lo == seq + 1 {
                        self.ranges[i].1 = next_hi;
                        self.ranges.remove(i + 1);
                    }
                }
                true
            }
            Some((lo, _)) if seq + 1 == lo => {
                self.ranges[i].0 = seq;
                true
            }
            _ => {
                self.ranges.insert(i, (seq, seq));
                true
            }
        }
    }

    /// True when `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.count_in(seq, seq) == 1
    }

    /// How many of `lo..=hi` are in the set.
    pub fn count_in(&self, lo: u64, hi: u64) -> u64 {
        if hi < lo {
            return 0;
        }
        let start = self.ranges.partition_point(|&(_, r_hi)| r_hi < lo);
        self.ranges[start..]
            .iter()
            .take_while(|&&(r_lo, _)| r_lo <= hi)
            .map(|&(r_lo, r_hi)| r_hi.min(hi) - r_lo.max(lo) + 1)
            .sum()
    }

    /// The largest sequence in the set.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, hi)| hi)
    }

    /// How many sequences the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    /// True when the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// When each of one publisher's messages was sent: sequence `s` (from 1) at index `s - 1`.
/// Times never decrease.
#[derive(Debug, Clone, Default)]
pub struct PublishLog {
    sent_ns: Vec<u64>,
}

impl PublishLog {
    /// Logs the next message, sent at `sent_ns` (not before the previous one); returns its
    /// sequence.
    pub fn push(&mut self, sent_ns: u64) -> u64 {
        let t = sent_ns.max(self.sent_ns.last().copied().unwrap_or(0));
        self.sent_ns.push(t);
        self.sent_ns.len() as u64
    }

    /// Messages logged.
    pub fn len(&self) -> u64 {
        self.sent_ns.len() as u64
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.sent_ns.is_empty()
    }

    /// The first sequence sent strictly after `t` (`len() + 1` when none was).
    pub fn first_after(&self, t: u64) -> u64 {
        self.sent_ns.partition_point(|&s| s <= t) as u64 + 1
    }

    /// The last sequence sent strictly before `t` (0 when none was).
    pub fn last_before(&self, t: u64) -> u64 {
        self.sent_ns.partition_point(|&s| s < t) as u64
    }
}

/// How a subscription period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The subscriber chose to leave at this time and lingered for what was in flight.
    Graceful(u64),
    /// The connection dropped at this time.
    Abrupt(u64),
}

/// One subscription period of one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// When the subscription was known to be live (own join message received).
    pub live_ns: u64,
    /// How and when it ended.
    pub end: End,
    /// The highest sequence received from each publisher during the period.
    pub highest: HashMap<u32, u64>,
}

/// The sequences of one publisher a subscriber was owed in one period: `lo..=hi` (empty
/// when `hi < lo`), and how many more were cut off by an abrupt end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// The first owed sequence.
    pub lo: u64,
    /// The last owed sequence.
    pub hi: u64,
    /// Sent within the period after `hi` but before an abrupt end.
    pub cut: u64,
}

impl Owed {
    /// How many sequences are owed.
    pub fn count(&self) -> u64 {
        if self.hi >= self.lo {
            self.hi - self.lo + 1
        } else {
            0
        }
    }
}

/// What one publisher owed a subscriber in a period (the rule in the module docs).
pub fn owed(log: &PublishLog, live_ns: u64, end: End, highest: Option<u64>) -> Owed {
    let lo = log.first_after(live_ns);
    match end {
        End::Graceful(at) => Owed {
            lo,
            hi: log.last_before(at),
            cut: 0,
        },
        End::Abrupt(at) => {
            let sent = log.last_before(at);
            let hi = highest.unwrap_or(0).min(sent);
            let after = hi.max(lo.saturating_sub(1));
            Owed {
                lo,
                hi,
                cut: sent.saturating_sub(after),
            }
        }
    }
}

/// One subscriber's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Messages owed.
    pub expected: u64,
    /// Owed and never received.
    pub missed: u64,
    /// In flight at an abrupt drop (not owed, not missed).
    pub cut_by_drop: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.expected += other.expected;
        self.missed += other.missed;
        self.cut_by_drop += other.cut_by_drop;
    }
}

/// One subscriber's receipts and periods.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    received: HashMap<u32, SeqSet>,
    periods: Vec<Period>,
    open: Option<(u64, HashMap<u32, u64>)>,
    /// Measured messages received (duplicates included).
    pub delivered: u64,
    /// Receipts of a (publisher, sequence) already received.
    pub duplicated: u64,
    /// New sequences below one already received from the same publisher.
    pub reordered: u64,
}

impl Ledger {
    /// Opens a period: the subscription is live from `live_ns`. An open period is closed
    /// abruptly first (a caller bug, but counted rather than lost).
    pub fn open(&mut self, live_ns: u64) {
        if self.open.is_some() {
            self.close(End::Abrupt(live_ns));
        }
        self.open = Some((live_ns, HashMap::new()));
    }

    /// When the open period went live, if one is open.
    pub fn live_since(&self) -> Option<u64> {
        self.open.as_ref().map(|(live, _)| *live)
    }

    /// Closes the open period, if any.
    pub fn close(&mut self, end: End) {
        if let Some((live_ns, highest)) = self.open.take() {
            self.periods.push(Period {
                live_ns,
                end,
                highest,
            });
        }
    }

    /// The closed periods.
    pub fn periods(&self) -> &[Period] {
        &self.periods
    }

    /// Records one received message.
    pub fn record(&mut self, publisher: u32, seq: u64) {
        self.delivered += 1;
        let set = self.received.entry(publisher).or_default();
        let below = set.max().is_some_and(|max| seq < max);
        if !set.insert(seq) {
            self.duplicated += 1;
            return;
        }
        if below {
            self.reordered += 1;
        }
        if let Some((_, highest)) = &mut self.open {
            let h = highest.entry(publisher).or_insert(seq);
            *h = (*h).max(seq);
        }
    }

    /// True when every sequence of `publisher` in `lo..=hi` was received.
    pub fn has_all(&self, publisher: u32, lo: u64, hi: u64) -> bool {
        if hi < lo {
            return true;
        }
        self.received
            .get(&publisher)
            .is_some_and(|s| s.count_in(lo, hi) == hi - lo + 1)
    }

    /// What this subscriber was owed by `publishers` over its closed periods, and what it
    /// missed; `logs` is indexed by publisher id.
    pub fn tally(&self, publishers: &[u32], logs: &[PublishLog]) -> Tally {
        let empty = SeqSet::default();
        let mut t = Tally::default();
        for p in &self.periods {
            for &publisher in publishers {
                let Some(log) = logs.get(publisher as usize) else {
                    continue;
                };
                let o = owed(log, p.live_ns, p.end, p.highest.get(&publisher).copied());
                let got = self.received.get(&publisher).unwrap_or(&empty);
                t.expected += o.count();
                t.missed += o.count() - got.count_in(o.lo, o.hi);
                t.cut_by_drop += o.cut;
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: &[u64]) -> SeqSet {
        let mut s = SeqSet::default();
        for &q in seqs {
            s.insert(q);
        }
        s
    }

    #[test]
    fn seq_sets_merge_ranges() {
        let mut s = SeqSet::default();
        assert!(s.is_empty());
        for q in [1, 2, 3, 7, 5, 6, 10] {
            assert!(s.insert(q), "{q}");
        }
        assert_eq!(s.ranges, vec![(1, 3), (5, 7), (10, 10)]);
        assert!(s.insert(4));
        assert_eq!(s.ranges, vec![(1, 7), (10, 10)]);
        assert!(s.insert(9));
        assert_eq!(s.ranges, vec![(1, 7), (9, 10)]);
        assert!(!s.insert(9) && !s.insert(1) && !s.insert(5));
        assert_eq!(s.len(), 9);
        assert_eq!(s.max(), Some(10));
        assert!(s.contains(6) && !s.contains(8) && !s.contains(11) && !s.contains(0));
    }

    #[test]
    fn seq_sets_count_within_bounds() {
        let s = set(&[2, 3, 4, 8, 9, 20]);
        assert_eq!(s.count_in(1, 100), 6);
        assert_eq!(s.count_in(3, 8), 3);
        assert_eq!(s.count_in(5, 7), 0);
        assert_eq!(s.count_in(9, 9), 1);
        assert_eq!(s.count_in(21, 30), 0);
        assert_eq!(s.count_in(5, 4), 0);
    }

    #[test]
    fn seq_sets_agree_with_a_plain_set_in_any_order() {
        let mut rng = super::super::random::Rng::new(11, 0);
        let mut ours = SeqSet::default();
        let mut plain = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let q = rng.next_u64() % 300 + 1;
            assert_eq!(ours.insert(q), plain.insert(q));
        }
        assert_eq!(ours.len(), plain.len() as u64);
        for (lo, hi) in [(1, 300), (50, 60), (299, 400), (0, 0)] {
            assert_eq!(ours.count_in(lo, hi), plain.range(lo..=hi).count() as u64);
        }
        // Every range is separated from the next by a gap.
        assert!(ours.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0));
    }

    fn log(times: &[u64]) -> PublishLog {
        let mut l = PublishLog::default();
        for (i, &t) in times.iter().enumerate() {
            assert_eq!(l.push(t), i as u64 + 1);
        }
        l
    }

    #[test]
    fn publish_logs_find_window_bounds() {
        let l = log(&[10, 20, 20, 30]);
        assert_eq!(l.first_after(0), 1);
        assert_eq!(l.first_after(10), 2);
        assert_eq!(l.first_after(20), 4);
        assert_eq!(l.first_after(30), 5);
        assert_eq!(l.last_before(10), 0);
        assert_eq!(l.last_before(21), 3);
        assert_eq!(l.last_before(100), 4);
        // A time that would go backwards is logged as the previous one.
        let mut l = log(&[50]);
        l.push(40);
        assert_eq!(l.last_before(50), 0);
        assert!(!l.is_empty() && l.len() == 2);
    }

    #[test]
    fn a_graceful_period_is_owed_everything_sent_while_live() {
        // Publisher 1 sent seqs 1..=6 at 10, 20, ..., 60.
        let logs = vec![PublishLog::default(), log(&[10, 20, 30, 40, 50, 60])];
        let mut l = Ledger::default();
        l.record(1, 2); // sent at 20, before the period opened: fine either way
        l.open(25);
        l.record(1, 3);
        l.record(1, 5);
        l.record(1, 5); // duplicate
        l.close(End::Graceful(55)); // owed: 3, 4, 5 (sent at 30, 40, 50)
        let t = l.tally(&[1], &logs);
        assert_eq!(
            t,
            Tally {
                expected: 3,
                missed: 1,
                cut_by_drop: 0
            }
        );
        assert_eq!((l.delivered, l.duplicated, l.reordered), (4, 1, 0));
        assert!(!l.has_all(1, 3, 5));
        assert!(l.has_all(1, 5, 5) && l.has_all(1, 6, 5));
    }

    #[test]
    fn an_abrupt_period_is_owed_up_to_the_last_receipt() {
        let logs = vec![log(&[10, 20, 30, 40, 50])];
        let mut l = Ledger::default();
        l.open(5);
        l.record(0, 1);
        l.record(0, 3);
        l.close(End::Abrupt(45)); // owed 1..=3 (2 missed); 4 was in flight: cut
        assert_eq!(
            l.tally(&[0], &logs),
            Tally {
                expected: 3,
                missed: 1,
                cut_by_drop: 1
            }
        );
        assert_eq!(l.reordered, 0);
    }

    #[test]
    fn an_abrupt_period_with_no_receipts_owes_nothing() {
        let logs = vec![log(&[10, 20, 30])];
        let mut l = Ledger::default();
        l.open(15);
        l.close(End::Abrupt(35));
        assert_eq!(
            l.tally(&[0], &logs),
            Tally {
                expected: 0,
                missed: 0,
                cut_by_drop: 2
            }
        );
    }

    #[test]
    fn time_away_between_periods_is_owed_nothing() {
        // Sent at 10..=90; the subscriber was live 0–30 (graceful) and 60–100 (graceful).
        let logs = vec![log(&[10, 20, 30, 40, 50, 60, 70, 80, 90])];
        let mut l = Ledger::default();
        l.open(0);
        for q in [1, 2] {
            l.record(0, q);
        }
        l.close(End::Graceful(30));
        l.record(0, 3); // sent exactly at the leave time: not owed, still counted
        l.open(60);
        for q in [7, 8, 9] {
            l.record(0, q);
        }
        l.close(End::Graceful(100));
        let t = l.tally(&[0], &logs);
        assert_eq!((t.expected, t.missed), (5, 0));
        assert_eq!(l.periods().len(), 2);
        assert_eq!(l.delivered, 6);
    }

    #[test]
    fn reordering_and_owed_counts() {
        let mut l = Ledger::default();
        l.open(0);
        l.record(4, 2);
        l.record(4, 1);
        l.record(4, 1);
        assert_eq!((l.reordered, l.duplicated), (1, 1));
        assert_eq!(l.live_since(), Some(0));
        l.close(End::Abrupt(9));
        assert_eq!(l.live_since(), None);
        assert_eq!(l.periods()[0].highest[&4], 2);
        let o = owed(&log(&[1, 2]), 0, End::Graceful(2), None);
        assert_eq!((o.lo, o.hi, o.count()), (1, 1, 1));
    }
}

//! Where a subscription is in the log: the resume token it would resubscribe with.
//!
//! Owns: [`ResumeTracker`], per subscription, the log epoch (from `WELCOME`) and the
//! highest `sequence` seen per `shard` (from `MESSAGE` frames, and from the start in every
//! shard that `SUBSCRIBED` gives), and the token built from them. Without the start, a
//! shard the subscription never received from would resume from sequence 1: its whole
//! history from before the subscription.
//!
//! Invariants: sequences only grow per shard; sequences from one epoch are never mixed
//! with another's (a message from a new epoch resets the tracker first, because a broker
//! that restarted with a new epoch numbers from 1 again).
//!
//! Never: decides whether to resume. The I/O thread asks [`ResumeTracker::token`] at every
//! resubscribe; a tracker that knows nothing yet (no `SUBSCRIBED`, no message, no token it
//! started from) has no token, and the subscription starts the way it was first asked to.
//! One that knows its start has a token even when every sequence in it is 0 (it started on
//! an empty log): resuming from it replays what was published while it was away, where
//! starting live again would miss it.

use tern_protocol::binary::ResumeToken;

/// The highest sequence seen per shard within one log epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResumeTracker {
    epoch: u64,
    /// Indexed by shard; 0 for none.
    last: Vec<u64>,
    /// Where the subscription is in this epoch is known (a start, a message, or the
    /// token it started from): `last` is a position, not just empty.
    known: bool,
}

impl ResumeTracker {
    /// A tracker that continues from `token` (a subscription started with a resume token
    /// resumes from it again if nothing newer was seen).
    pub(crate) fn from_token(token: &ResumeToken) -> ResumeTracker {
        ResumeTracker {
            epoch: token.epoch,
            last: token.last_sequences.clone(),
            known: true,
        }
    }

    /// Records a delivered message of `shard` with `sequence` under log `epoch`.
    pub(crate) fn observe(&mut self, epoch: u64, shard: u16, sequence: u64) {
        if epoch != self.epoch {
            self.reset(epoch);
        }
        let i = usize::from(shard);
        if self.last.len() <= i {
            self.last.resize(i + 1, 0);
        }
        self.last[i] = self.last[i].max(sequence);
        self.known = true;
    }

    /// Records where the subscription starts in every shard under log `epoch` (`SUBSCRIBED`:
    /// the last sequence before its first, per shard): nothing before it is owed.
    pub(crate) fn start_at(&mut self, epoch: u64, last_sequences: &[u64]) {
        if epoch != self.epoch {
            self.reset(epoch);
        }
        if self.last.len() < last_sequences.len() {
            self.last.resize(last_sequences.len(), 0);
        }
        for (last, &start) in self.last.iter_mut().zip(last_sequences) {
            *last = (*last).max(start);
        }
        self.known = true;
    }

    /// Forgets everything: the broker's log has a new epoch (`EpochMismatch`).
    pub(crate) fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.last.clear();
        self.known = false;
    }

    /// The token to resume with, or `None` while where the subscription is is not known.
    pub(crate) fn token(&self) -> Option<ResumeToken> {
        if !self.known {
            return None;
        }
        let len = self.last.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1);
        Some(ResumeToken {
            epoch: self.epoch,
            last_sequences: self.last[..len].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_covers_the_shards_nothing_came_from_and_never_lowers_a_sequence() {
        let mut t = ResumeTracker::default();
        t.observe(7, 0, 12);
        // SUBSCRIBED may come after deliveries from one shard.
        t.start_at(7, &[10, 40, 0]);
        assert_eq!(t.token().unwrap().last_sequences, [12, 40]);
        // A start under another epoch replaces what was tracked.
        t.start_at(8, &[3, 0]);
        let token = t.token().unwrap();
        assert_eq!((token.epoch, token.last_sequences), (8, vec![3]));
    }

    #[test]
    fn a_start_on_an_empty_log_is_a_token_that_replays_what_came_while_away() {
        let mut t = ResumeTracker::default();
        assert_eq!(t.token(), None);
        t.start_at(7, &[0, 0]);
        assert_eq!(
            t.token(),
            Some(ResumeToken {
                epoch: 7,
                last_sequences: vec![],
            })
        );
        t.reset(8);
        assert_eq!(t.token(), None);
    }

    #[test]
    fn tracks_the_highest_sequence_per_shard() {
        let mut t = ResumeTracker::default();
        assert_eq!(t.token(), None);
        t.observe(7, 2, 5);
        t.observe(7, 0, 3);
        t.observe(7, 2, 4); // out of order (never on one shard, but harmless)
        t.observe(7, 0, 9);
        assert_eq!(
            t.token(),
            Some(ResumeToken {
                epoch: 7,
                last_sequences: vec![9, 0, 5]
            })
        );
    }

    #[test]
    fn a_new_epoch_starts_over() {
        let mut t = ResumeTracker::default();
        t.observe(1, 3, 100);
        t.observe(2, 0, 1);
        assert_eq!(
            t.token(),
            Some(ResumeToken {
                epoch: 2,
                last_sequences: vec![1]
            })
        );
        t.reset(3);
        assert_eq!(t.token(), None);
    }

    #[test]
    fn continues_from_a_given_token() {
        let start = ResumeToken {
            epoch: 4,
            last_sequences: vec![0, 8, 0],
        };
        let mut t = ResumeTracker::from_token(&start);
        assert_eq!(
            t.token(),
            Some(ResumeToken {
                epoch: 4,
                last_sequences: vec![0, 8]
            })
        );
        t.observe(4, 1, 9);
        assert_eq!(t.token().unwrap().last_sequences, [0, 9]);
    }
}

//! A shard: the subjects one worker owns, and the routing of each message published to them.
//!
//! Owns: the [`Index`] of subscriptions that can match this shard's subjects (literal ones
//! it owns, wildcard ones registered everywhere) and the choice of receivers for each
//! message: every plain subscriber, exactly one member of each queue group (round robin per
//! group), nobody for a publisher's own message when it said `echo: false`, and the
//! no-responders status when a request reaches nobody. It also owns the shard's sequence:
//! every message it routes is stamped with the next sequence (from 1) and the time, and a
//! publisher that asked for an acknowledgement gets one once the message is routed. A
//! subscription that asks to resume after a sequence this shard no longer holds is told
//! what it missed (a gap) before anything else from this shard reaches it.
//!
//! Exactly one thread ever touches a shard. Routing a message allocates nothing per
//! subscriber: deliveries share the message's `Arc` and go into per-worker batches.
//!
//! Never: touches a socket or a connection; it only produces envelopes.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tern_protocol::binary::StartPosition;
use tern_protocol::headers::NO_RESPONDERS;

use crate::index::{shard_for, Index, QueueId};
use crate::mesh::{Envelope, Msg, Outbox, Stamp, Start, SubRef};

pub(crate) struct Shard {
    id: usize,
    shards: usize,
    index: Index,
    /// Next member to pick, per queue group.
    queue_next: Vec<u32>,
    /// Queue candidates of the message being routed (reused; no allocation per publish).
    candidates: Vec<(QueueId, SubRef)>,
    /// The sequence the next message routed here gets. Starts at 1; there is no log yet
    /// (issue 4), so the shard holds no message and "the oldest held" is always this.
    next_seq: u64,
}

/// What routing one message did, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routed {
    pub deliveries: usize,
    pub no_responders: bool,
}

impl Shard {
    pub fn new(id: usize, shards: usize) -> Shard {
        Shard {
            id,
            shards,
            index: Index::default(),
            queue_next: Vec::new(),
            candidates: Vec::new(),
            next_seq: 1,
        }
    }

    /// The subscription index, read by snapshots (monitoring).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// This shard's number (its worker's).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The shard that owns `subject`.
    pub fn owner(&self, subject: &[u8]) -> usize {
        shard_for(subject, self.shards)
    }

    /// Registers a subscription. One that resumes from a token is first told, through
    /// `out`, about the part of this shard's sequence it asked for that is no longer held.
    pub fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: SubRef,
        start: &Start,
        out: &mut Outbox,
    ) {
        if let Some(StartPosition::Resume(token)) = start.as_deref() {
            let requested = token
                .last_sequences
                .get(self.id)
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            // Nothing is held: everything from `requested` up to the next sequence is gone.
            if requested < self.next_seq {
                out.push(
                    sub.conn.worker as usize,
                    Envelope::Gap {
                        sub,
                        shard: self.id as u16,
                        requested,
                        oldest: self.next_seq,
                    },
                );
            }
        }
        self.index.insert(filter, queue, sub);
        self.queue_next.resize(self.index.queue_count(), 0);
    }

    pub fn unsubscribe(&mut self, filter: &[u8], sub: &SubRef) {
        self.index.remove(filter, sub);
    }

    /// Routes a message this shard owns: stamps it with the next sequence, finds its
    /// receivers and queues one delivery per receiver into `out`, addressed to the worker of
    /// the receiver's connection, then the publisher's acknowledgement if it asked for one.
    pub fn route(&mut self, mut msg: Arc<Msg>, out: &mut Outbox) -> Routed {
        debug_assert_eq!(self.owner(&msg.subject), self.id);
        if !msg.origin_only {
            let stamp = Stamp {
                shard: self.id as u16,
                seq: self.next_seq,
                time_ns: unix_nanos(),
            };
            self.next_seq += 1;
            // The shard normally holds the only reference: stamped in place, no copy.
            Arc::make_mut(&mut msg).stamp = stamp;
        }
        let msg = &msg;
        let mut deliveries = 0;
        let candidates = &mut self.candidates;
        candidates.clear();
        let wanted = |sub: &SubRef| {
            if msg.origin_only {
                sub.conn == msg.origin
            } else {
                !(msg.no_echo && sub.conn == msg.origin)
            }
        };
        self.index.for_each_match(&msg.subject, |list| {
            for sub in list.plain.iter().filter(|s| wanted(s)) {
                out.push(
                    sub.conn.worker as usize,
                    Envelope::Deliver {
                        sub: *sub,
                        msg: Arc::clone(msg),
                    },
                );
                deliveries += 1;
            }
            candidates.extend(list.queued.iter().filter(|(_, s)| wanted(s)).copied());
        });
        // One member per group: sort so that each group's members are adjacent and in a
        // stable order, then take the group's next member in turn.
        candidates.sort_unstable_by_key(|(q, s)| (*q, s.conn.worker, s.conn.slot, s.id));
        let mut start = 0;
        while start < candidates.len() {
            let q = candidates[start].0;
            let end = start + candidates[start..].partition_point(|(cq, _)| *cq == q);
            let turn = &mut self.queue_next[q as usize];
            let pick = candidates[start + (*turn as usize) % (end - start)].1;
            *turn = turn.wrapping_add(1);
            out.push(
                pick.conn.worker as usize,
                Envelope::Deliver {
                    sub: pick,
                    msg: Arc::clone(msg),
                },
            );
            deliveries += 1;
            start = end;
        }
        if let Some(ack_id) = msg.ack_id {
            out.push(
                msg.origin.worker as usize,
                Envelope::Ack {
                    conn: msg.origin,
                    ack_id,
                    stamp: msg.stamp,
                },
            );
        }
        let no_responders = deliveries == 0 && msg.no_responders && !msg.origin_only;
        if no_responders {
            if let Some(reply) = &msg.reply {
                let mut status = Msg::new(reply.clone(), Bytes::new(), msg.origin, msg.received);
                status.headers = Some(Bytes::from_static(NO_RESPONDERS));
                status.origin_only = true;
                out.push(self.owner(reply), Envelope::Publish(Arc::new(status)));
            }
        }
        Routed {
            deliveries,
            no_responders,
        }
    }
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    //! Routing driven with scripted subscriptions and publishes, no network: each test
    //! asserts which deliveries the shard queues for which worker.

    use super::*;
    use crate::mesh::{ConnId, Mesh};

    fn conn(worker: u16, slot: u32) -> ConnId {
        ConnId {
            worker,
            slot,
            gen: 1,
        }
    }

    fn sub(c: ConnId, id: u64) -> SubRef {
        SubRef {
            conn: c,
            key: id as u32,
            id,
        }
    }

    fn msg(subject: &'static str, origin: ConnId) -> Arc<Msg> {
        Arc::new(Msg::new(
            Bytes::from_static(subject.as_bytes()),
            Bytes::from_static(b"x"),
            origin,
            std::time::Instant::now(),
        ))
    }

    /// The single-shard world: every subject is owned by shard 0, deliveries go to 2 workers.
    fn world() -> (Shard, Outbox) {
        (Shard::new(0, 1), Outbox::new(0, Mesh::for_tests(2)))
    }

    /// The subscription ids delivered, over both workers.
    fn delivered(out: &mut Outbox) -> Vec<u64> {
        let mut ids = Vec::new();
        for w in 0..2 {
            for env in out.take_batch(w) {
                if let Envelope::Deliver { sub, .. } = env {
                    assert_eq!(
                        sub.conn.worker as usize, w,
                        "delivery sent to the wrong worker"
                    );
                    ids.push(sub.id);
                }
            }
        }
        ids.sort();
        ids
    }

    #[test]
    fn plain_subscribers_all_get_it() {
        let (mut shard, mut out) = world();
        let (a, b) = (conn(0, 1), conn(1, 1));
        shard.subscribe(
            &Bytes::from_static(b"room.1"),
            None,
            sub(a, 1),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b"room.*"),
            None,
            sub(b, 2),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b"other"),
            None,
            sub(b, 3),
            &None,
            &mut out,
        );
        let r = shard.route(msg("room.1", a), &mut out);
        assert_eq!(r.deliveries, 2);
        assert_eq!(delivered(&mut out), vec![1, 2]);
    }

    #[test]
    fn queue_group_round_robin_per_group() {
        let (mut shard, mut out) = world();
        let q1 = Bytes::from_static(b"q1");
        let q2 = Bytes::from_static(b"q2");
        let filter = Bytes::from_static(b"work");
        for id in 1..=3 {
            shard.subscribe(
                &filter,
                Some(&q1),
                sub(conn(id as u16 % 2, id as u32), id),
                &None,
                &mut out,
            );
        }
        // A member of the same group through a wildcard filter belongs to the same group.
        shard.subscribe(
            &Bytes::from_static(b"wor*"),
            Some(&q1),
            sub(conn(0, 9), 9),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b">"),
            Some(&q1),
            sub(conn(1, 4), 4),
            &None,
            &mut out,
        );
        shard.subscribe(&filter, Some(&q2), sub(conn(1, 5), 5), &None, &mut out);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..400 {
            shard.route(msg("work", conn(0, 0)), &mut out);
            let ids = delivered(&mut out);
            assert_eq!(ids.len(), 2, "one member of each group: {ids:?}");
            assert!(ids.contains(&5));
            for id in ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        // `wor*` is a literal token, so subscription 9 never matches "work".
        assert_eq!(counts.get(&9), None);
        for id in [1, 2, 3, 4] {
            assert_eq!(counts[&id], 100, "even spread: {counts:?}");
        }
        assert_eq!(counts[&5], 400);
    }

    #[test]
    fn echo_off_skips_only_the_publisher() {
        let (mut shard, mut out) = world();
        let (me, other) = (conn(0, 1), conn(1, 1));
        let f = Bytes::from_static(b"chat");
        shard.subscribe(&f, None, sub(me, 1), &None, &mut out);
        shard.subscribe(&f, None, sub(other, 2), &None, &mut out);
        let mut m = msg("chat", me);
        Arc::get_mut(&mut m).unwrap().no_echo = true;
        shard.route(m, &mut out);
        assert_eq!(delivered(&mut out), vec![2]);
    }

    #[test]
    fn no_responders_sends_a_status_to_the_origin_only() {
        let (mut shard, mut out) = world();
        let requester = conn(1, 7);
        let mut m = msg("service", requester);
        {
            let m = Arc::get_mut(&mut m).unwrap();
            m.no_responders = true;
            m.reply = Some(Bytes::from_static(b"_INBOX.abc.1"));
        }
        let r = shard.route(m, &mut out);
        assert!(r.no_responders);
        let mut batch = out.take_batch(0);
        assert_eq!(batch.len(), 1);
        let Some(Envelope::Publish(status)) = batch.pop() else {
            panic!("expected the status publish");
        };
        assert_eq!(&status.subject[..], b"_INBOX.abc.1");
        assert_eq!(status.headers.as_deref(), Some(NO_RESPONDERS));
        assert!(status.origin_only);
        // Routing the status reaches the requester's inbox and nobody else's.
        let inbox = Bytes::from_static(b"_INBOX.abc.*");
        shard.subscribe(&inbox, None, sub(requester, 1), &None, &mut out);
        shard.subscribe(&inbox, None, sub(conn(0, 3), 2), &None, &mut out);
        let r = shard.route(status, &mut out);
        assert_eq!(r.deliveries, 1);
        assert!(!r.no_responders);
        assert_eq!(delivered(&mut out), vec![1]);
    }

    #[test]
    fn unsubscribe_stops_delivery() {
        let (mut shard, mut out) = world();
        let f = Bytes::from_static(b"a.>");
        let s = sub(conn(0, 1), 1);
        shard.subscribe(&f, None, s, &None, &mut out);
        shard.route(msg("a.b", conn(1, 1)), &mut out);
        assert_eq!(delivered(&mut out), vec![1]);
        shard.unsubscribe(&f, &s);
        shard.route(msg("a.b", conn(1, 1)), &mut out);
        assert!(delivered(&mut out).is_empty());
    }

    #[test]
    fn messages_are_stamped_in_sequence_and_acked_to_their_publisher() {
        let (mut shard, mut out) = world();
        let publisher = conn(1, 4);
        shard.subscribe(
            &Bytes::from_static(b"s"),
            None,
            sub(conn(0, 1), 1),
            &None,
            &mut out,
        );
        for expected in 1..=3u64 {
            let mut m = msg("s", publisher);
            Arc::get_mut(&mut m).unwrap().ack_id = Some(100 + expected);
            shard.route(m, &mut out);
            let delivered = out.take_batch(0);
            let [Envelope::Deliver { msg, .. }] = &delivered[..] else {
                panic!("one delivery: {delivered:?}");
            };
            assert_eq!((msg.stamp.shard, msg.stamp.seq), (0, expected));
            assert!(msg.stamp.time_ns > 0);
            let acks = out.take_batch(1);
            let [Envelope::Ack {
                conn,
                ack_id,
                stamp,
            }] = &acks[..]
            else {
                panic!("one ack for the publisher's worker: {acks:?}");
            };
            assert_eq!(
                (*conn, *ack_id, *stamp),
                (publisher, 100 + expected, msg.stamp)
            );
        }
    }

    #[test]
    fn a_resume_past_what_the_shard_holds_gets_a_gap_first() {
        use tern_protocol::binary::ResumeToken;
        let (mut shard, mut out) = world();
        for _ in 0..5 {
            shard.route(msg("s", conn(0, 0)), &mut out);
        }
        let resume = |last: u64| -> Start {
            Some(Arc::new(StartPosition::Resume(ResumeToken {
                epoch: 7,
                last_sequences: vec![last],
            })))
        };
        let f = Bytes::from_static(b"s");
        shard.subscribe(&f, None, sub(conn(1, 1), 1), &resume(2), &mut out);
        let batch = out.take_batch(1);
        let [Envelope::Gap {
            sub: gapped,
            shard: 0,
            requested: 3,
            oldest: 6,
        }] = &batch[..]
        else {
            panic!("a gap from 3 up to 6: {batch:?}");
        };
        assert_eq!(gapped.id, 1);
        // Up to date, or live: no gap.
        shard.subscribe(&f, None, sub(conn(1, 2), 2), &resume(5), &mut out);
        shard.subscribe(&f, None, sub(conn(1, 3), 3), &None, &mut out);
        assert!(out.take_batch(1).is_empty());
    }
}

//! A shard: the subjects one worker owns, and the routing of each message published to them.
//!
//! Owns: the [`Index`] of subscriptions that can match this shard's subjects (literal ones
//! it owns, wildcard ones registered everywhere) and the choice of receivers for each
//! message: every plain subscriber, exactly one member of each queue group (round robin per
//! group), nobody for a publisher's own message when it said `echo: false`, and the
//! no-responders status when a request reaches nobody.
//!
//! Exactly one thread ever touches a shard. Routing a message allocates nothing per
//! subscriber: deliveries share the message's `Arc` and go into per-worker batches.
//!
//! Never: touches a socket or a connection; it only produces envelopes.

use std::sync::Arc;

use bytes::Bytes;
use tern_protocol::headers::NO_RESPONDERS;

use crate::index::{shard_for, Index, QueueId};
use crate::mesh::{Envelope, Msg, Outbox, SubRef};

pub(crate) struct Shard {
    id: usize,
    shards: usize,
    index: Index,
    /// Next member to pick, per queue group.
    queue_next: Vec<u32>,
    /// Queue candidates of the message being routed (reused; no allocation per publish).
    candidates: Vec<(QueueId, SubRef)>,
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
        }
    }

    /// The shard that owns `subject`.
    pub fn owner(&self, subject: &[u8]) -> usize {
        shard_for(subject, self.shards)
    }

    pub fn subscribe(&mut self, filter: &Bytes, queue: Option<&Bytes>, sub: SubRef) {
        self.index.insert(filter, queue, sub);
        self.queue_next.resize(self.index.queue_count(), 0);
    }

    pub fn unsubscribe(&mut self, filter: &[u8], sub: &SubRef) {
        self.index.remove(filter, sub);
    }

    /// Routes a message this shard owns: finds its receivers and queues one delivery per
    /// receiver into `out`, addressed to the worker of the receiver's connection.
    pub fn route(&mut self, msg: &Arc<Msg>, out: &mut Outbox) -> Routed {
        debug_assert_eq!(self.owner(&msg.subject), self.id);
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
        let no_responders = deliveries == 0 && msg.no_responders && !msg.origin_only;
        if no_responders {
            if let Some(reply) = &msg.reply {
                let status = Arc::new(Msg {
                    subject: reply.clone(),
                    reply: None,
                    headers: Some(Bytes::from_static(NO_RESPONDERS)),
                    payload: Bytes::new(),
                    origin: msg.origin,
                    no_echo: false,
                    no_responders: false,
                    origin_only: true,
                });
                out.push(self.owner(reply), Envelope::Publish(status));
            }
        }
        Routed {
            deliveries,
            no_responders,
        }
    }
}

//! Deliveries of a connection: from the shards' `Deliver` envelopes, through each
//! subscription's bounded queue, into the connection's outbound buffer.
//!
//! Owns: the path a delivery takes on the subscriber's worker. A delivery is encoded
//! straight into the outbound buffer when its subscription has nothing queued and the
//! buffer holds less than `write_buffer` bytes (the common case, no queueing at all);
//! otherwise it waits in the subscription's [`SubQueue`], and `fill` moves queued
//! deliveries into the buffer, a burst per subscription in turn, as the socket takes what
//! is there. So a consumer that does not read holds at most `write_buffer` bytes plus its
//! subscriptions' queue bounds, whatever the publishers do. A `PONG` due while deliveries
//! are queued waits behind them (`queue_pong`), so that `PING` stays a barrier.
//!
//! On overflow a queue drops by priority (`subqueue.rs`) and the subscriber is told what it
//! lost, in a drop notice sent ahead of its next delivery. A lossless subscription drops
//! nothing it could get back: on overflow it falls back to the log, one shard at a time
//! (`Envelope::Lag`): it discards that shard's stored messages still in flight until the
//! shard's `LagAck`, after which the shard replays from the last sequence it accepted, as
//! fast as the queue grants credit for (`Envelope::Grant`), and hands over to live delivery
//! in its own thread without gap or duplicate.
//!
//! Never: drops a message while a lower-priority one is queued for the same subscription,
//! sends a lossless subscription's stored message twice or not at all (the log
//! permitting), or lets a queue grow past its bounds.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{QueueConfig, SlowConsumerPolicy};
use crate::mesh::{Msg, SubRef};
use crate::router::Router;
use crate::stats::bump;
use crate::subqueue::{compact, Bounds, DropLog, Pushed, SubQueue};

use super::{Conn, Proto};

/// Most deliveries moved from one subscription's queue per turn of `fill`, so that the
/// subscriptions of a connection share its outbound buffer.
const FILL_BURST: usize = 64;

/// A subscription's queue bounds: what it asked for (0: the default), within the server's
/// maximum. The error says what is wrong.
pub(super) fn bounds_for(
    config: &QueueConfig,
    messages: u32,
    bytes: u32,
) -> Result<Bounds, String> {
    let pick = |asked: u32, default: usize, max: usize, what: &str| match asked as usize {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(format!(
            "queue bound of {n} {what} is over the server maximum of {max}"
        )),
    };
    Ok(Bounds {
        messages: pick(
            messages,
            config.sub_queue_messages,
            config.sub_queue_max_messages,
            "messages",
        )?,
        bytes: pick(
            bytes,
            config.sub_queue_bytes,
            config.sub_queue_max_bytes,
            "bytes",
        )?,
    })
}

/// A subscription's queue and what it did, kept with the subscription.
#[derive(Debug)]
pub(super) struct SubQueueState {
    pub bounds: Bounds,
    /// Allocated the first time a delivery has to wait.
    queue: Option<Box<SubQueue>>,
    /// Dropped since the last drop notice.
    drops: DropLog,
    /// Listed in the connection's backlog.
    backlogged: bool,
    /// Overflowed, and not yet drained below half its bounds.
    over: bool,
    pub dropped: u64,
    pub coalesced: u64,
    pub lossless: Option<Box<Lossless>>,
}

impl SubQueueState {
    pub fn new(bounds: Bounds, lossless: Option<Box<Lossless>>) -> SubQueueState {
        SubQueueState {
            bounds,
            queue: None,
            drops: DropLog::default(),
            backlogged: false,
            over: false,
            dropped: 0,
            coalesced: 0,
            lossless,
        }
    }

    /// Messages and bytes waiting.
    pub fn depth(&self) -> (usize, usize) {
        self.queue.as_ref().map_or((0, 0), |q| (q.len(), q.bytes()))
    }

    fn is_idle(&self) -> bool {
        self.queue.as_ref().is_none_or(|q| q.is_empty()) && self.drops.is_empty()
    }

    fn below_half(&self) -> bool {
        let (msgs, bytes) = self.depth();
        msgs <= self.bounds.messages / 2 && bytes <= self.bounds.bytes / 2
    }
}

/// A lossless subscription's place in each shard's sequence, and its fall-backs.
#[derive(Debug)]
pub(super) struct Lossless {
    /// The shards its filter is registered in.
    shards: Range<usize>,
    /// Per shard (indexed from `shards.start`): the last sequence accepted (queued or
    /// written); `None` until the shard's `Position` arrives.
    last: Vec<Option<u64>>,
    /// Per shard: the fall-back in progress (0: none yet).
    lag: Vec<u64>,
    /// Per shard: waiting for the `LagAck` of `lag`; stored messages from the shard are
    /// discarded meanwhile (the catch-up brings them again).
    awaiting: Vec<bool>,
    /// Per shard: the `Lag` waits for the shard's `Position` to be sent.
    unsent: Vec<bool>,
    /// Per shard: replayed messages granted and not yet received.
    outstanding: Vec<u32>,
    /// Credit granted at a time, per shard.
    chunk: u32,
    /// Fall-backs so far.
    pub fallbacks: u64,
}

impl Lossless {
    pub fn new(shards: Range<usize>, bounds: Bounds) -> Lossless {
        let n = shards.len();
        Lossless {
            chunk: (bounds.messages / 4 / n.max(1)).max(1) as u32,
            shards,
            last: vec![None; n],
            lag: vec![0; n],
            awaiting: vec![false; n],
            unsent: vec![false; n],
            outstanding: vec![0; n],
            fallbacks: 0,
        }
    }

    fn index(&self, shard: u16) -> Option<usize> {
        let s = usize::from(shard);
        self.shards.contains(&s).then(|| s - self.shards.start)
    }

    /// False for a stored message from a shard whose `LagAck` is awaited: it was sent
    /// before the shard began the catch-up that will bring it again.
    fn takes(&self, msg: &Msg) -> bool {
        !(msg.stored
            && self
                .index(msg.stamp.shard)
                .is_some_and(|i| self.awaiting[i]))
    }

    /// A message was queued or written.
    fn accepted(&mut self, msg: &Msg) {
        if !msg.stored {
            return;
        }
        if let Some(i) = self.index(msg.stamp.shard) {
            self.last[i] = Some(msg.stamp.seq);
            if msg.replayed {
                self.outstanding[i] = self.outstanding[i].saturating_sub(1);
            }
        }
    }
}

impl Conn {
    /// Queues one delivery. Returns false when nothing was queued: the delivery was stale
    /// (the subscription or the connection is gone) or a lossless subscription's message
    /// that its catch-up brings again.
    pub fn deliver(&mut self, sref: SubRef, msg: &Arc<Msg>, router: &mut Router) -> bool {
        let write_buffer = router.config.queues.write_buffer;
        let Some(sub) = Conn::live_sub(&self.closing, &mut self.subs, sref) else {
            return false;
        };
        if sub.q.lossless.as_ref().is_some_and(|l| !l.takes(msg)) {
            return false;
        }
        if sub.q.is_idle() && self.out.len() < write_buffer {
            if let Some(l) = &mut sub.q.lossless {
                l.accepted(msg);
            }
            let key = sref.key as usize;
            if self.write_delivery(key, msg, router) && msg.replayed {
                self.grant_credit(key, router);
            }
        } else {
            self.enqueue(sref, msg, router);
            self.fill(router);
        }
        if self.out.len() > router.config.limits.max_pending {
            // Deliveries stop at `write_buffer`: what overflows here is the connection's
            // own traffic (acks, pongs) that the client does not read.
            self.slow_consumer(router);
        }
        true
    }

    /// Puts a delivery in its subscription's queue, by the queue's rules.
    fn enqueue(&mut self, sref: SubRef, msg: &Arc<Msg>, router: &mut Router) {
        let key = sref.key as usize;
        let sub = &mut self.subs[key];
        let q = &mut sub.q;
        let queue = q.queue.get_or_insert_with(Box::default);
        let lossless = q.lossless.is_some();
        let overflow = !queue.fits(msg, q.bounds, !lossless);
        if overflow && !q.over {
            q.over = true;
            self.over_subs += 1;
            self.over_since.get_or_insert_with(Instant::now);
        }
        if !q.backlogged {
            q.backlogged = true;
            self.backlog.push_back((key, sref.id));
        }
        let mut dropped = 0;
        if lossless && overflow && msg.stored {
            // Dropped here, brought again by the log.
            self.fall_back(key, msg.stamp.shard, sref, router);
            return;
        } else if lossless && overflow {
            // Not in the log: nothing can bring it again.
            q.drops.record(msg.stamp);
            dropped = 1;
        } else {
            let drops = &mut q.drops;
            self.next_arrival += 1;
            let arrival = self.next_arrival;
            let pushed = queue.push(compact(msg), arrival, q.bounds, !lossless, |m| {
                drops.record(m.stamp);
                dropped += 1;
            });
            if pushed != Pushed::Dropped {
                if let Some(l) = &mut q.lossless {
                    l.accepted(msg);
                }
            }
            if pushed == Pushed::Coalesced {
                q.coalesced += 1;
                bump(&router.stats.coalesced_msgs, 1);
            }
        }
        q.dropped += dropped;
        self.queue_dropped += dropped;
        bump(&router.stats.queue_dropped_msgs, dropped);
    }

    /// Moves queued deliveries into the outbound buffer until it holds `write_buffer`
    /// bytes or every queue is empty, a burst per subscription in turn; each
    /// subscription's drop notice goes ahead of its next delivery.
    pub(super) fn fill(&mut self, router: &mut Router) {
        let write_buffer = router.config.queues.write_buffer;
        while self.out.len() < write_buffer && self.closing.is_none() {
            let Some((key, id)) = self.backlog.pop_front() else {
                break;
            };
            match self.subs.get_mut(key) {
                Some(sub) if sub.id == id => sub.q.backlogged = false,
                _ => continue,
            }
            let notice = self.subs[key].q.drops.take();
            if !notice.is_empty() {
                self.send_drop_notice(key, notice, router);
            }
            let mut alive = true;
            for _ in 0..FILL_BURST {
                if self.out.len() >= write_buffer {
                    break;
                }
                let Some(msg) = self.subs[key].q.queue.as_mut().and_then(|q| q.pop()) else {
                    break;
                };
                if !self.write_delivery(key, &msg, router) {
                    alive = false;
                    break;
                }
            }
            if !alive {
                continue;
            }
            let sub = &mut self.subs[key];
            if !sub.q.is_idle() {
                sub.q.backlogged = true;
                self.backlog.push_back((key, id));
            }
            if sub.q.over && sub.q.below_half() {
                sub.q.over = false;
                self.not_over();
            }
            self.grant_credit(key, router);
        }
        self.release_pongs();
    }

    /// Queues a `PONG`: now, or once every delivery queued before it has gone out (or been
    /// dropped), as the outbound order would have it if there were no subscription queues.
    pub(super) fn queue_pong(&mut self) {
        if self.backlog.is_empty() && self.pongs_held.is_empty() {
            self.send_pong_now();
        } else {
            self.pongs_held.push_back(self.next_arrival);
        }
    }

    /// Sends the held `PONG`s whose deliveries have all left the subscription queues.
    fn release_pongs(&mut self) {
        if self.pongs_held.is_empty() {
            return;
        }
        let oldest = self
            .backlog
            .iter()
            .filter_map(|&(key, id)| {
                let sub = self.subs.get(key).filter(|s| s.id == id)?;
                sub.q.queue.as_ref()?.oldest_arrival()
            })
            .min();
        while let Some(&marker) = self.pongs_held.front() {
            if oldest.is_some_and(|o| o <= marker) {
                return;
            }
            self.pongs_held.pop_front();
            self.send_pong_now();
        }
    }

    /// One subscription left its high-water mark.
    fn not_over(&mut self) {
        self.over_subs -= 1;
        if self.over_subs == 0 {
            self.over_since = None;
        }
    }

    /// Forgets the queue of a subscription being removed.
    pub(super) fn drop_queue(&mut self, q: &SubQueueState) {
        if q.over {
            self.not_over();
        }
    }

    /// With `--slow-consumer disconnect`: true when the connection has been over its
    /// high-water mark for longer than the grace time.
    pub(super) fn overdue(&self, now: Instant, router: &Router) -> bool {
        let queues = &router.config.queues;
        queues.slow_consumer == SlowConsumerPolicy::Disconnect
            && self
                .over_since
                .is_some_and(|since| now.duration_since(since) >= queues.slow_consumer_grace)
    }

    /// A lossless subscription's queue overflowed with a stored message from `shard`:
    /// that shard's stored messages are discarded until it acknowledges, then replayed
    /// from the last one accepted.
    fn fall_back(&mut self, key: usize, shard: u16, sref: SubRef, router: &mut Router) {
        let sub = &mut self.subs[key];
        let Some(l) = sub.q.lossless.as_mut() else {
            return;
        };
        let Some(i) = l.index(shard) else {
            return;
        };
        if l.awaiting[i] {
            return;
        }
        l.fallbacks += 1;
        bump(&router.stats.lossless_fallbacks, 1);
        self.next_lag += 1;
        l.lag[i] = self.next_lag;
        l.awaiting[i] = true;
        l.outstanding[i] = 0;
        match l.last[i] {
            // Credit comes with room in the queue (`grant_credit`), not now: it is full.
            Some(last) => router.lag(usize::from(shard), sref, &sub.filter, last + 1, 0, l.lag[i]),
            None => l.unsent[i] = true,
        }
    }

    /// A shard told a lossless subscription where it starts in the shard's sequence.
    pub fn position(&mut self, sref: SubRef, shard: u16, last: u64, router: &mut Router) {
        let Some((l, filter, i)) = self.lossless_sub(sref, shard) else {
            return;
        };
        if l.last[i].is_none() {
            l.last[i] = Some(last);
        }
        if std::mem::take(&mut l.unsent[i]) {
            let from = l.last[i].map_or(1, |s| s + 1);
            router.lag(usize::from(shard), sref, filter, from, 0, l.lag[i]);
        }
    }

    /// A shard began a lossless subscription's catch-up: what it sends from now on is
    /// taken again.
    pub fn lag_ack(&mut self, sref: SubRef, shard: u16, lag: u64, router: &mut Router) {
        let Some((l, _, i)) = self.lossless_sub(sref, shard) else {
            return;
        };
        if l.lag[i] == lag {
            l.awaiting[i] = false;
            self.grant_credit(sref.key as usize, router);
        }
    }

    /// The lossless state and the filter of the live subscription `sref` names, and the
    /// index of `shard` among its shards.
    fn lossless_sub(&mut self, sref: SubRef, shard: u16) -> Option<(&mut Lossless, &Bytes, usize)> {
        let sub = Conn::live_sub(&self.closing, &mut self.subs, sref)?;
        let l = sub.q.lossless.as_deref_mut()?;
        let i = l.index(shard)?;
        Some((l, &sub.filter, i))
    }

    /// Grants a chunk of credit to each shard replaying to a lossless subscription that
    /// has used up what it had, when the queue has room for it.
    fn grant_credit(&mut self, key: usize, router: &mut Router) {
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let (msgs, bytes) = sub.q.depth();
        let bounds = sub.q.bounds;
        let Some(l) = sub.q.lossless.as_mut() else {
            return;
        };
        let sref = SubRef {
            conn: self.id,
            key: key as u32,
            id: sub.id,
        };
        let mut expected: usize = l.outstanding.iter().map(|&c| c as usize).sum();
        for i in 0..l.lag.len() {
            let ready = l.lag[i] != 0 && !l.awaiting[i] && l.outstanding[i] == 0;
            if !ready
                || msgs + expected + l.chunk as usize > bounds.messages
                || bytes > bounds.bytes / 2
            {
                continue;
            }
            l.outstanding[i] = l.chunk;
            expected += l.chunk as usize;
            router.grant(l.shards.start + i, sref, l.chunk);
        }
    }

    /// Tells the subscription `key` what its queue dropped.
    fn send_drop_notice(&mut self, key: usize, log: DropLog, router: &mut Router) {
        let sid = self.subs[key].sid.clone();
        match &mut self.proto {
            Proto::Text(t) => t.encode_drop_notice(&mut self.out, &sid, &log),
            Proto::Binary(b) => b.encode_drop_notice(&mut self.out, &sid, &log),
        }
        bump(&router.stats.drop_notices, 1);
    }

    /// Messages waiting in this connection's subscription queues.
    pub fn queued(&self) -> usize {
        self.subs.iter().map(|(_, s)| s.q.depth().0).sum()
    }

    /// True while deliveries wait in subscription queues.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }
}

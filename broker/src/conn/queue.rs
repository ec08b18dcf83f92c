//! Deliveries of a connection: from the shards' `Deliver` envelopes (and the records of
//! their catch-ups' `DeliverRun`s, made into messages here, one at a time, on the stack),
//! through each subscription's bounded queue, into the connection's outbound buffer.
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
use tern_log::Record;

use super::Context;
use crate::budget::{BudgetKind, QueuedRef};
use crate::config::{QueueConfig, SlowConsumerPolicy};
use crate::merge::Released;
use crate::mesh::{Msg, ReplayRun, SubRef};
use crate::stats::{bump, set};
use crate::subqueue::{compact, size_of, Bounds, DropLog, Pushed, SubQueue};

use super::congestion::{Params, Signal, State};
use super::presence::SubPresence;
use super::wire::{Fields, Wire};
use super::{Session, SubState};

/// Most deliveries moved from one subscription's queue per turn of `fill`, so that the
/// subscriptions of a connection share its outbound buffer.
const FILL_BURST: usize = 64;

/// What a held `PONG` counts for in a connection's budget (its bytes on the wire, and
/// then some for its place in the queue).
const HELD_PONG_COST: usize = 8;

/// What judges a consumer's congestion (the `publisher_stall_*` settings).
fn stall_params(cx: &impl Context) -> Params {
    Params {
        window: cx.config().flow.publisher_stall_window,
        min_drain: cx.config().flow.publisher_stall_min_drain,
    }
}

/// True when subscription `key`/`id` of `subs` still holds its queued message (`level`,
/// `arrival`).
fn holds(subs: &slab::Slab<SubState>, key: u32, id: u64, level: u8, arrival: u64) -> bool {
    subs.get(key as usize)
        .filter(|s| s.id == id)
        .and_then(|s| s.q.queue.as_deref())
        .is_some_and(|q| q.contains(level, arrival))
}

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
    /// At least half full, and not yet drained to a quarter: the connection is congested
    /// while any of its queues is.
    high: bool,
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
            high: false,
            dropped: 0,
            coalesced: 0,
            lossless,
        }
    }

    /// Messages and bytes waiting.
    pub fn depth(&self) -> (usize, usize) {
        self.queue.as_ref().map_or((0, 0), |q| (q.len(), q.bytes()))
    }

    pub(super) fn is_idle(&self) -> bool {
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
    /// The bridge's own imports passed over since the last one sent, and their bytes
    /// (`skips_import`).
    skipped_imports: (u32, usize),
}

/// The bridge's own imports under its lossless export are passed over, but for one sent
/// whenever this many messages or bytes have been: the exporter passes over that one too
/// (it carries `Tern-Origin`), but its position moves, so the position it resumes from
/// after a reconnect stays that close to the log's end — not far back, and not reported
/// as a gap once the log (1 MiB at the least) has wrapped over imports.
const IMPORT_POSITION_EVERY: (u32, usize) = (1024, 64 << 10);

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
            skipped_imports: (0, 0),
        }
    }

    /// Whether to pass over one of the bridge's own imports (see
    /// [`IMPORT_POSITION_EVERY`]).
    fn skips_import(&mut self, msg: &Msg) -> bool {
        let (count, bytes) = &mut self.skipped_imports;
        *count += 1;
        *bytes +=
            msg.subject.len() + msg.payload.len() + msg.headers.as_ref().map_or(0, Bytes::len);
        if *count < IMPORT_POSITION_EVERY.0 && *bytes < IMPORT_POSITION_EVERY.1 {
            return true;
        }
        self.skipped_imports = (0, 0);
        false
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

impl Session {
    /// Queues one delivery. Returns false when nothing was queued: the delivery was stale
    /// (the subscription or the connection is gone) or a lossless subscription's message
    /// that its catch-up brings again.
    pub(super) fn deliver(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        msg: &Arc<Msg>,
        cx: &mut impl Context,
    ) -> bool {
        // Only a catch-up's message can belong to a merge: a live one goes straight on,
        // with one lookup of its subscription.
        if msg.replayed {
            let sub = Session::live_sub(&self.closing, &mut self.subs, sref);
            if let Some(merge) = sub.and_then(|s| s.merge.as_mut()) {
                if merge.hold(Arc::clone(msg)) {
                    return self.release_merged(w, sref, cx);
                }
            }
        }
        self.deliver_now(w, sref, msg, |_| Arc::clone(msg), cx)
    }

    /// Queues one record of a catch-up step (`Envelope::DeliverRun`) as `deliver` queues a
    /// replayed message. The common case, a record copied straight into the outbound
    /// buffer, makes no message at all (`write_record`); otherwise the message is made
    /// from the run's buffer on the stack, and one that is kept (held by the merge,
    /// queued) becomes an `Arc` with a ticket in flight of its own first
    /// (`mesh::ReplayRun`).
    pub(super) fn deliver_record(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        run: &ReplayRun,
        rec: &Record<'_>,
        cx: &mut impl Context,
    ) -> bool {
        if self.write_record(w, sref, run, rec, cx) {
            return true;
        }
        let msg = run.msg(rec);
        let bytes = rec.stored_len() as usize;
        let keep = |m: &Msg| {
            Arc::new(Msg {
                flight: Some(run.flight.part(bytes)),
                ..m.clone()
            })
        };
        let sub = Session::live_sub(&self.closing, &mut self.subs, sref);
        if let Some(merge) = sub.and_then(|s| s.merge.as_mut()) {
            // Released at once when it passes; otherwise held, as `deliver` holds it.
            if !merge.passes(run.shard) && merge.hold(keep(&msg)) {
                return self.release_merged(w, sref, cx);
            }
        }
        self.deliver_now(w, sref, &msg, keep, cx)
    }

    /// Writes a catch-up's record straight into the outbound buffer from the run, without
    /// making a message of it (its fields, the reference counts on the run's buffer and
    /// their release were a fifth of a replayed record's CPU), when that is all
    /// `deliver_now` would do with it: the subscription is live and its merge (if any)
    /// lets this shard through, it is not lossless, nothing is queued ahead of it, the
    /// outbound buffer has room, the client may receive the subject, the record is not a
    /// request, and the protocol writes it whole (`Wire::encode_copied`). True when it was
    /// written; false, with nothing done, for the general path.
    fn write_record(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        run: &ReplayRun,
        rec: &Record<'_>,
        cx: &mut impl Context,
    ) -> bool {
        let write_buffer = cx.config().queues.write_buffer;
        if self.out.len() >= write_buffer || rec.reply.is_some() {
            return false;
        }
        let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
            return false;
        };
        if sub.merge.as_ref().is_some_and(|m| !m.passes(run.shard))
            || sub.q.lossless.is_some()
            || !sub.q.is_idle()
            || (sub.screened && !self.access.may_receive(rec.subject, sub.queue.as_deref()))
        {
            return false;
        }
        let fields = Fields {
            subject: rec.subject,
            reply: None,
            headers: rec.headers,
            payload: rec.payload,
            priority: rec.priority,
            stamp: run.stamp(rec),
            replayed: true,
        };
        let sequence_headers = cx.config().sequence_headers;
        let Some(size) = w.encode_copied(&mut self.out, &sub.sid, &fields, sequence_headers) else {
            return false;
        };
        self.wrote_delivery(sref.key as usize, Some(size), run.read, cx);
        if self.out.len() >= write_buffer && !self.write_blocked {
            // Written out before the next delivery, as `deliver_now` does.
            self.write_now = true;
        }
        true
    }

    /// Delivers what the subscription's merge of catch-ups can release now, in time
    /// order; once every shard has caught up, everything it holds, and the shards go live.
    pub(super) fn release_merged(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        cx: &mut impl Context,
    ) -> bool {
        let key = sref.key as usize;
        let mut queued = false;
        loop {
            let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
                return queued;
            };
            let Some(merge) = &mut sub.merge else {
                return queued;
            };
            if let Some(next) = merge.pop() {
                queued |= self.release_one(w, sref, next, cx);
                continue;
            }
            if merge.all_caught_up() {
                let shards = merge.shards();
                let rest = merge.drain();
                self.subs[key].merge = None;
                cx.release(shards, sref);
                for next in rest {
                    queued |= self.release_one(w, sref, next, cx);
                }
            }
            return queued;
        }
    }

    /// Delivers one message or gap notice the merge released.
    fn release_one(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        next: Released,
        cx: &mut impl Context,
    ) -> bool {
        match next {
            Released::Msg(msg) => self.deliver_now(w, sref, &msg, |_| Arc::clone(&msg), cx),
            Released::Gap {
                shard,
                requested,
                oldest,
            } => self.send_gap(w, sref, shard, requested, oldest),
        }
    }

    /// A shard of the subscription's merged catch-ups reached the end of its log.
    pub(super) fn caught_up(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        cx: &mut impl Context,
    ) -> bool {
        match Session::live_sub(&self.closing, &mut self.subs, sref).and_then(|s| s.merge.as_mut())
        {
            Some(merge) => {
                merge.caught_up(shard);
                self.release_merged(w, sref, cx)
            }
            None => false,
        }
    }

    /// A shard of the subscription's merged "last N" catch-ups counted what it sends.
    pub(super) fn counted(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        sends: u64,
        cx: &mut impl Context,
    ) -> bool {
        match Session::live_sub(&self.closing, &mut self.subs, sref).and_then(|s| s.merge.as_mut())
        {
            Some(merge) => {
                merge.counted(shard, sends);
                self.release_merged(w, sref, cx)
            }
            None => false,
        }
    }

    /// Queues one delivery now (see `deliver`). `keep` makes the message a queue keeps
    /// (only asked for when it does not go straight to the outbound buffer).
    fn deliver_now(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        msg: &Msg,
        keep: impl FnOnce(&Msg) -> Arc<Msg>,
        cx: &mut impl Context,
    ) -> bool {
        let write_buffer = cx.config().queues.write_buffer;
        let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
            return false;
        };
        if sub.q.lossless.as_ref().is_some_and(|l| !l.takes(msg)) {
            return false;
        }
        if self.access.internal && msg.origin.is_import() {
            // What the bridge imported does not go back to the bridge (it would not export
            // it: no loops), as a NATS client with echo off does not get its own messages.
            // Taken, like a withheld one, so a lossless export moves on past it; one in
            // `IMPORT_POSITION_EVERY` is sent, for the export's position.
            let Some(l) = sub.q.lossless.as_deref_mut() else {
                return false;
            };
            if l.skips_import(msg) {
                l.accepted(msg);
                return false;
            }
        }
        SubPresence::note(&mut sub.presence, msg);
        if sub.screened && !self.access.may_receive(&msg.subject, sub.queue.as_deref()) {
            // Withheld: a subject its user may not receive, inside its wildcard. A
            // catch-up counts it as taken, so that its credit and its place move on.
            bump(&cx.stats().deliveries_denied, 1);
            if let Some(l) = &mut sub.q.lossless {
                l.accepted(msg);
            }
            if msg.replayed {
                self.grant_credit(sref.key as usize, cx);
            }
            return false;
        }
        if let Some(reply) = &msg.reply {
            // With `allow_responses`, a request received may be answered.
            self.access.received_request(reply, cx.now());
        }
        if sub.q.is_idle() && self.out.len() < write_buffer {
            if let Some(l) = &mut sub.q.lossless {
                l.accepted(msg);
            }
            let key = sref.key as usize;
            if self.write_delivery(w, key, msg, cx) && msg.replayed {
                self.grant_credit(key, cx);
            }
            if self.out.len() >= write_buffer && !self.write_blocked {
                // Written out before the next delivery, not queued behind this one.
                self.write_now = true;
            }
        } else {
            self.enqueue(w, sref, &keep(msg), cx);
            self.enforce_budget(cx);
            self.fill(w, cx);
        }
        true
    }

    /// Puts a delivery in its subscription's queue, by the queue's rules.
    fn enqueue(&mut self, w: &mut impl Wire, sref: SubRef, msg: &Arc<Msg>, cx: &mut impl Context) {
        let key = sref.key as usize;
        let lossless = self.subs[key].q.lossless.is_some();
        // A lossless subscription takes nothing past the connection's budget, or the
        // broker's: it falls back to the log instead, and nothing of it is evicted.
        let no_room = lossless
            && (self.pending() + size_of(msg) > cx.config().limits.max_pending
                || cx.budget().is_over());
        let q = &mut self.subs[key].q;
        let overflow = no_room
            || !q
                .queue
                .as_ref()
                .is_none_or(|queue| queue.fits(msg, q.bounds, !lossless));
        if overflow && !q.over {
            q.over = true;
            self.over_subs += 1;
            self.over_since.get_or_insert_with(Instant::now);
        }
        if !q.backlogged {
            q.backlogged = true;
            self.backlog.push_back((key, sref.id));
        }
        if lossless && overflow {
            if msg.stored {
                // Dropped here, brought again by the log.
                self.fall_back(w, key, msg.stamp.shard, sref, cx);
            } else {
                // Not in the log: nothing can bring it again.
                q.drops.record(msg.stamp);
                q.dropped += 1;
                self.queue_dropped += 1;
                bump(&cx.stats().queue_dropped_msgs, 1);
            }
            return;
        }
        let copy = self.compacted(msg);
        let arrival = cx.next_arrival();
        self.last_arrival = arrival;
        let q = &mut self.subs[key].q;
        let queue = q.queue.get_or_insert_with(Box::default);
        let before = queue.depth();
        let drops = &mut q.drops;
        let mut dropped = 0;
        let pushed = queue.push(copy, arrival, q.bounds, !lossless, |m| {
            drops.record(m.stamp);
            dropped += 1;
        });
        let after = queue.depth();
        if pushed != Pushed::Dropped {
            if let Some(l) = &mut q.lossless {
                l.accepted(msg);
            }
        }
        if pushed == Pushed::Coalesced {
            q.coalesced += 1;
            bump(&cx.stats().coalesced_msgs, 1);
        }
        q.dropped += dropped;
        self.queue_dropped += dropped;
        bump(&cx.stats().queue_dropped_msgs, dropped);
        if pushed == Pushed::Queued && !lossless {
            // Lossless queues are never evicted: they fall back instead.
            self.held
                .tickets
                .push(msg.priority, arrival, (sref.key, sref.id));
            cx.budget_mut().tickets.push(
                msg.priority,
                arrival,
                QueuedRef {
                    slot: self.id.slot,
                    gen: self.id.gen,
                    key: sref.key,
                    id: sref.id,
                },
            );
        }
        self.account(before, after, cx);
        self.update_high(key, cx);
    }

    /// A copy of `msg` for a queue (see `subqueue::compact`), shared with the queues of
    /// this connection's other subscriptions that get the same message: a message that
    /// reaches a client through many subscriptions is held once.
    fn compacted(&mut self, msg: &Arc<Msg>) -> Arc<Msg> {
        if let Some((original, copy)) = &self.last_compact {
            if std::ptr::eq(original.as_ptr(), Arc::as_ptr(msg)) {
                if let Some(copy) = copy.upgrade() {
                    return copy;
                }
            }
        }
        let copy = compact(msg);
        self.last_compact = Some((Arc::downgrade(msg), Arc::downgrade(&copy)));
        copy
    }

    /// Everything waiting for this client, in bytes: the outbound buffer, the subscription
    /// queues (each queued message counted as `subqueue::size_of` says) and the `PONG`s
    /// held behind them. This is what `max_pending` bounds.
    pub fn pending(&self) -> usize {
        self.out.len()
            + self.unsent_below
            + self.held.bytes
            + self.pongs_held.len() * HELD_PONG_COST
    }

    /// What waits for this client that no budget can give up: its write buffer and the
    /// `PONG`s held behind its queues (its queued deliveries give way to `max_pending`).
    /// Over `max_pending`, the client's own traffic is what holds it, and it is not read.
    pub(super) fn unyielding(&self) -> usize {
        self.out.len() + self.unsent_below + self.pongs_held.len() * HELD_PONG_COST
    }

    /// A queue went from `before` to `after` (messages, bytes): the connection's and the
    /// worker's totals follow.
    fn account(&mut self, before: (usize, usize), after: (usize, usize), cx: &mut impl Context) {
        self.held.msgs = self.held.msgs + after.0 - before.0;
        cx.budget_mut().count(after.0 as isize - before.0 as isize);
        if after.1 >= before.1 {
            let grown = after.1 - before.1;
            self.held.bytes += grown;
            cx.budget_mut().charge(grown);
        } else {
            let shrunk = before.1 - after.1;
            self.held.bytes -= shrunk;
            cx.budget_mut().release(shrunk);
        }
        let msgs = self.held.msgs;
        let subs = &self.subs;
        self.held
            .tickets
            .compact(msgs, |level, arrival, (key, id)| {
                holds(subs, key, id, level, arrival)
            });
        set(&cx.stats().queued_bytes, cx.budget().used() as u64);
    }

    /// Re-reads whether subscription `key`'s queue is over its high-water mark (half its
    /// bounds) or back under its low-water mark (a quarter), then the connection's
    /// congestion.
    fn update_high(&mut self, key: usize, cx: &mut impl Context) {
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let (msgs, bytes) = sub.q.depth();
        let b = sub.q.bounds;
        if !sub.q.high && (msgs * 2 >= b.messages || bytes * 2 >= b.bytes) {
            sub.q.high = true;
            self.high_subs += 1;
        } else if sub.q.high && msgs * 4 <= b.messages && bytes * 4 <= b.bytes {
            sub.q.high = false;
            self.high_subs -= 1;
        }
        self.update_congestion(cx);
    }

    /// Re-judges whether this connection, as a consumer, is over its high-water mark (half
    /// of `max_pending` waiting, or a queue half full) or under its low-water mark (a
    /// quarter, and no queue over a quarter), and tells the other workers when that makes
    /// it congested or no longer (see `congestion.rs`).
    pub(super) fn update_congestion(&mut self, cx: &mut impl Context) {
        let max = cx.config().limits.max_pending;
        let pending = self.pending();
        if self.budget_over && pending.saturating_mul(2) <= max {
            self.budget_over = false;
            if self.over_subs == 0 {
                self.over_since = None;
            }
        }
        let high = self.high_subs > 0 || pending.saturating_mul(2) >= max;
        let low = self.high_subs == 0 && pending.saturating_mul(4) <= max;
        if !high && self.congestion.state() == State::Clear {
            return;
        }
        let signal = self.congestion.update(high, low, cx.now());
        self.signal_congestion(signal, cx);
    }

    /// The connection's timer: judges its congestion when a window ended.
    pub(super) fn judge_congestion(&mut self, cx: &mut impl Context) {
        if self.next_judgement.is_none_or(|at| at > cx.now()) {
            return;
        }
        self.next_judgement = None;
        let params = stall_params(cx);
        // The bridge's own connection stops reading only while its exporter waits for
        // upstream to confirm what it sent, not because it is gone (when upstream is, the
        // export ends its subscription): judged stuck, its lossless export would let its
        // publishers run the ring over what it has yet to send. It is never stuck.
        let socket_full = self.write_blocked && !self.access.internal;
        let signal = self.congestion.judge(cx.now(), socket_full, params);
        self.signal_congestion(signal, cx);
    }

    /// Broadcasts a congestion change, and keeps a timer set while judging is due.
    pub(super) fn signal_congestion(&mut self, signal: Option<Signal>, cx: &mut impl Context) {
        if let Some(signal) = signal {
            cx.congestion(self.id, signal);
        }
        let next = self.congestion.next_judgement(stall_params(cx));
        if next.is_some() && self.next_judgement.is_none() {
            self.next_judgement = next;
            if let Some(at) = next {
                cx.wake_at(at, self.id);
            }
        }
    }

    /// Keeps the connection within `max_pending`: while what waits for the client is
    /// over it, the lowest-priority, oldest queued message of any of its subscriptions
    /// goes (with a drop notice), lossless ones excepted. What cannot be evicted (the
    /// outbound buffer, held `PONG`s) is the client's own traffic: the connection is then
    /// not read until it drains (`Session::read_paused`), and closed if it stays over
    /// (`Conn::tick`).
    ///
    /// A client that reads is not judged on one burst: while its socket is not known to
    /// be full, the I/O layer first writes what it takes (the session asks for it,
    /// `Session::wants_flush`; the worker flushes), and what is still over then goes
    /// (`Session::flushed`).
    fn enforce_budget(&mut self, cx: &mut impl Context) {
        if self.pending() <= cx.config().limits.max_pending {
            return;
        }
        if !self.write_blocked {
            self.flush_first = true;
            return;
        }
        self.evict_over_budget(cx);
    }

    /// Evicts queued messages, lowest priority and oldest first, until what waits for the
    /// client is within `max_pending` or nothing more can go.
    pub(super) fn evict_over_budget(&mut self, cx: &mut impl Context) {
        let max = cx.config().limits.max_pending;
        while self.pending() > max {
            let subs = &self.subs;
            let Some((level, _, (key, _))) = self
                .held
                .tickets
                .pop_lowest(|level, arrival, (key, id)| holds(subs, key, id, level, arrival))
            else {
                return;
            };
            self.evict(key as usize, level, BudgetKind::Connection, cx);
        }
    }

    /// The worker's share of the broker's budget is exceeded and this connection holds
    /// its lowest-priority, oldest queued message (`level`, `arrival` of subscription
    /// `key`/`id`): it goes. Returns false when that message had already left.
    pub fn evict_for_broker(
        &mut self,
        queued: QueuedRef,
        level: u8,
        arrival: u64,
        cx: &mut impl Context,
    ) -> bool {
        if !holds(&self.subs, queued.key, queued.id, level, arrival) {
            return false;
        }
        self.evict(queued.key as usize, level, BudgetKind::Broker, cx);
        true
    }

    /// True when subscription `key`/`id` still holds the queued message (`level`,
    /// `arrival`).
    pub fn holds(&self, key: u32, id: u64, level: u8, arrival: u64) -> bool {
        holds(&self.subs, key, id, level, arrival)
    }

    /// Drops the oldest message of `level` from subscription `key`'s queue to make room
    /// under a budget, and records it for the drop notice.
    fn evict(&mut self, key: usize, level: u8, kind: BudgetKind, cx: &mut impl Context) {
        let sub = &mut self.subs[key];
        let Some(queue) = sub.q.queue.as_mut() else {
            return;
        };
        let before = queue.depth();
        let Some(msg) = queue.evict_front(level) else {
            return;
        };
        let after = queue.depth();
        sub.q.drops.record(msg.stamp);
        sub.q.dropped += 1;
        if !self.budget_over {
            self.budget_over = true;
            self.over_since.get_or_insert(cx.now());
        }
        if !sub.q.backlogged {
            // Its drop notice must go out even if nothing else is queued.
            sub.q.backlogged = true;
            self.backlog.push_back((key, sub.id));
        }
        self.queue_dropped += 1;
        bump(&cx.stats().queue_dropped_msgs, 1);
        bump(&cx.stats().budget_drops[kind as usize], 1);
        self.account(before, after, cx);
        self.update_high(key, cx);
    }

    /// Moves queued deliveries into the outbound buffer until it holds `write_buffer`
    /// bytes or every queue is empty, a burst per subscription in turn; each
    /// subscription's drop notice goes ahead of its next delivery.
    pub(super) fn fill(&mut self, w: &mut impl Wire, cx: &mut impl Context) {
        let write_buffer = cx.config().queues.write_buffer;
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
                if self.subs[key].presence.as_ref().is_some_and(|p| p.events) {
                    // Presence events: a fresh snapshot, not the missed events.
                    self.refresh_presence(key, cx);
                } else {
                    self.send_drop_notice(w, key, notice, cx);
                }
            }
            let mut alive = true;
            for _ in 0..FILL_BURST {
                if self.out.len() >= write_buffer {
                    break;
                }
                let Some(queue) = self.subs[key].q.queue.as_mut() else {
                    break;
                };
                let before = queue.depth();
                let Some((msg, level, arrival)) = queue.pop() else {
                    break;
                };
                let after = queue.depth();
                // Its eviction tickets, at their FIFOs' fronts when queues drain in order,
                // go now rather than by compaction.
                self.held.tickets.forget(level, arrival);
                cx.budget_mut().tickets.forget(level, arrival);
                self.account(before, after, cx);
                if !self.write_delivery(w, key, &msg, cx) {
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
            } else if sub.ending == Some(0) {
                // Ended by the client, everything routed to it delivered: it goes.
                self.finish_sub(key, cx);
                continue;
            }
            if sub.q.over && sub.q.below_half() {
                sub.q.over = false;
                self.not_over();
            }
            self.update_high(key, cx);
            self.grant_credit(key, cx);
        }
        self.release_pongs(w);
    }

    /// Queues a `PONG`: now, or once every delivery queued before it has gone out (or been
    /// dropped), as the outbound order would have it if there were no subscription queues.
    pub(super) fn queue_pong(&mut self, w: &mut impl Wire) {
        if self.backlog.is_empty() && self.pongs_held.is_empty() {
            self.send_pong_now(w);
        } else {
            self.pongs_held.push_back(self.last_arrival);
        }
    }

    /// Sends the held `PONG`s whose deliveries have all left the subscription queues.
    fn release_pongs(&mut self, w: &mut impl Wire) {
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
            self.send_pong_now(w);
        }
    }

    /// One subscription left its high-water mark.
    fn not_over(&mut self) {
        self.over_subs -= 1;
        if self.over_subs == 0 && !self.budget_over {
            self.over_since = None;
        }
    }

    /// Forgets the queue of a subscription being removed: what it held leaves the
    /// connection's and the worker's totals.
    pub(super) fn drop_queue(&mut self, q: &SubQueueState, cx: &mut impl Context) {
        if q.over {
            self.not_over();
        }
        if q.high {
            self.high_subs -= 1;
        }
        self.account(q.depth(), (0, 0), cx);
    }

    /// With `--slow-consumer disconnect`: true when the connection has been over its
    /// high-water mark for longer than the grace time.
    pub(super) fn overdue(&self, now: Instant, cx: &impl Context) -> bool {
        let queues = &cx.config().queues;
        queues.slow_consumer == SlowConsumerPolicy::Disconnect
            && self
                .over_since
                .is_some_and(|since| now.duration_since(since) >= queues.slow_consumer_grace)
    }

    /// A lossless subscription's queue overflowed with a stored message from `shard`:
    /// that shard's stored messages are discarded until it acknowledges, then replayed
    /// from the last one accepted.
    fn fall_back(
        &mut self,
        w: &mut impl Wire,
        key: usize,
        shard: u16,
        sref: SubRef,
        cx: &mut impl Context,
    ) {
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
        bump(&cx.stats().lossless_fallbacks, 1);
        self.next_lag += 1;
        l.lag[i] = self.next_lag;
        l.awaiting[i] = true;
        l.outstanding[i] = 0;
        match l.last[i] {
            // Credit comes with room in the queue (`grant_credit`), not now: it is full.
            Some(last) => cx.lag(usize::from(shard), sref, &sub.filter, last + 1, 0, l.lag[i]),
            None => l.unsent[i] = true,
        }
        // The fall-back replaces this shard's merged catch-up by one of its own: the merge
        // ends here. The other shards go live at the end of their logs, and what it held is
        // delivered in its order (this shard's part is discarded: the fall-back brings it).
        if let Some(mut merge) = sub.merge.take() {
            cx.release(merge.shards(), sref);
            for next in merge.drain() {
                self.release_one(w, sref, next, cx);
            }
        }
    }

    /// A shard told a subscription where it starts in the shard's sequence: a binary
    /// client hears of it (`SUBSCRIBED`), a lossless subscription falls back from there.
    pub(super) fn position(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        last: u64,
        cx: &mut impl Context,
    ) {
        self.note_start(w, sref, shard, last, cx.workers());
        let Some((l, filter, i)) = self.lossless_sub(sref, shard) else {
            return;
        };
        if l.last[i].is_none() {
            l.last[i] = Some(last);
        }
        if std::mem::take(&mut l.unsent[i]) {
            let from = l.last[i].map_or(1, |s| s + 1);
            cx.lag(usize::from(shard), sref, filter, from, 0, l.lag[i]);
        }
    }

    /// A shard began a lossless subscription's catch-up: what it sends from now on is
    /// taken again.
    pub fn lag_ack(&mut self, sref: SubRef, shard: u16, lag: u64, cx: &mut impl Context) {
        let Some((l, _, i)) = self.lossless_sub(sref, shard) else {
            return;
        };
        if l.lag[i] == lag {
            l.awaiting[i] = false;
            self.grant_credit(sref.key as usize, cx);
        }
    }

    /// The lossless state and the filter of the live subscription `sref` names, and the
    /// index of `shard` among its shards.
    fn lossless_sub(&mut self, sref: SubRef, shard: u16) -> Option<(&mut Lossless, &Bytes, usize)> {
        let sub = Session::live_sub(&self.closing, &mut self.subs, sref)?;
        let l = sub.q.lossless.as_deref_mut()?;
        let i = l.index(shard)?;
        Some((l, &sub.filter, i))
    }

    /// Grants a chunk of credit to each shard replaying to a lossless subscription that
    /// has used up what it had, when the queue has room for it.
    fn grant_credit(&mut self, key: usize, cx: &mut impl Context) {
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
            cx.grant(l.shards.start + i, sref, l.chunk);
        }
    }

    /// Tells the subscription `key` what its queue dropped.
    fn send_drop_notice(
        &mut self,
        w: &mut impl Wire,
        key: usize,
        log: DropLog,
        cx: &mut impl Context,
    ) {
        let sid = self.subs[key].sid.clone();
        w.drop_notice(&mut self.out, &sid, &log);
        bump(&cx.stats().drop_notices, 1);
    }

    /// True while deliveries wait in subscription queues.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }
}

//! What the criterion benchmarks in `benches/` drive: one shard, routing and unsubscribing
//! in memory, without sockets or other workers. Not a stable API (hidden from the docs).
//!
//! Owns: [`QueueRouting`] (publishes to one subject whose subscribers form one queue
//! group), [`SubjectChurn`] (many subscriptions to one subject, all removed the way a
//! closing connection removes them) and [`IdChecks`] (the broker-wide message-id table's
//! lock, check and remember, as a publish that carries an id takes them, alone or while
//! another thread does the same).
//!
//! Never: used by the broker itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dedupe::{Dedupe, FirstCopy};
use crate::index::{FastMap, FastSet};
use crate::mesh::{ConnId, Mesh, Msg, Outbox, SubRef};
use crate::shard::Shard;

/// The subscriber connection every benchmark subscription belongs to.
const SUBSCRIBER: ConnId = ConnId {
    worker: 0,
    slot: 1,
    gen: 1,
};

/// The publisher: another connection, so echo rules never skip anyone.
const PUBLISHER: ConnId = ConnId {
    worker: 0,
    slot: 2,
    gen: 1,
};

fn sub(n: u64) -> SubRef {
    SubRef {
        conn: SUBSCRIBER,
        key: n as u32,
        id: n,
    }
}

/// A one-worker shard without a store whose subject `bench.queue` has `members`
/// subscriptions, all in queue group `q`.
pub struct QueueRouting {
    shard: Shard,
    out: Outbox,
    subject: Bytes,
    payload: Bytes,
    received: Instant,
}

impl QueueRouting {
    pub fn new(members: usize) -> QueueRouting {
        let mut out = Outbox::new(0, Mesh::for_tests(1));
        let mut shard = Shard::new(0, 1, None);
        let subject = Bytes::from_static(b"bench.queue");
        let queue = Bytes::from_static(b"q");
        for n in 0..members as u64 {
            shard.subscribe(&subject, Some(&queue), sub(n), &None, &mut out);
        }
        QueueRouting {
            shard,
            out,
            subject,
            payload: Bytes::from_static(b"x"),
            received: Instant::now(),
        }
    }

    /// Routes `count` messages; returns the deliveries made (one per message).
    pub fn route(&mut self, count: usize) -> usize {
        let mut deliveries = 0;
        for _ in 0..count {
            let msg = Msg::new(
                self.subject.clone(),
                self.payload.clone(),
                PUBLISHER,
                self.received,
            );
            deliveries += self
                .shard
                .route(
                    Arc::new(msg),
                    &mut self.out,
                    (&FastMap::default(), &FastSet::default()),
                )
                .deliveries;
        }
        // The deliveries are addressed to this worker: dropped here, as nobody reads them.
        drop(self.out.take_local());
        deliveries
    }
}

/// A one-worker shard without a store holding `count` subscriptions to `bench.close`: plain
/// ones, or with `queue` all members of queue group `q`.
pub struct SubjectChurn {
    shard: Shard,
    subject: Bytes,
    queue: Option<Bytes>,
    subs: Vec<SubRef>,
}

impl SubjectChurn {
    pub fn new(count: usize, queue: bool) -> SubjectChurn {
        let mut out = Outbox::new(0, Mesh::for_tests(1));
        let mut shard = Shard::new(0, 1, None);
        let subject = Bytes::from_static(b"bench.close");
        let queue = queue.then(|| Bytes::from_static(b"q"));
        let subs: Vec<SubRef> = (0..count as u64).map(sub).collect();
        for s in &subs {
            shard.subscribe(&subject, queue.as_ref(), *s, &None, &mut out);
        }
        SubjectChurn {
            shard,
            subject,
            queue,
            subs,
        }
    }

    /// Removes every subscription, in the order they were made (the order in which a
    /// closing connection removes its own).
    pub fn remove_all(mut self) -> usize {
        for s in &self.subs {
            let queue = self.queue.as_deref();
            self.shard.unsubscribe(&self.subject, queue, s);
        }
        self.subs.len()
    }
}

/// The message-id table of a two-shard broker, checked and added to as a shard does for
/// each publish that carries an id (`Store::append`: lock, `seen`, copy the id,
/// `remember`), with a fresh id each time, so that every check misses and every id is
/// remembered (and, past `dedupe_max_ids`, the oldest forgotten). With `contended`, a
/// second thread does the same on the same table until this is dropped: two workers
/// storing identified messages at the same instant.
pub struct IdChecks {
    dedupe: Arc<Dedupe>,
    next: u64,
    rival: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl IdChecks {
    pub fn new(contended: bool) -> IdChecks {
        let dedupe = Arc::new(Dedupe::new(Duration::from_secs(120), 100_000, 2));
        let rival = contended.then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let (table, done) = (Arc::clone(&dedupe), Arc::clone(&stop));
            let rival = std::thread::spawn(move || {
                let mut n = 1u64 << 40;
                while !done.load(Ordering::Relaxed) {
                    check_one(&table, 1, n);
                    n += 1;
                }
            });
            (stop, rival)
        });
        IdChecks {
            dedupe,
            next: 0,
            rival,
        }
    }

    /// Checks and remembers `count` fresh ids; returns how many were repeats (none).
    pub fn check(&mut self, count: usize) -> usize {
        let mut repeats = 0;
        for _ in 0..count {
            self.next += 1;
            repeats += usize::from(check_one(&self.dedupe, 0, self.next));
        }
        repeats
    }
}

impl Drop for IdChecks {
    fn drop(&mut self) {
        if let Some((stop, rival)) = self.rival.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = rival.join();
        }
    }
}

/// One publish's use of the table: true when `n`'s id was a repeat.
fn check_one(dedupe: &Dedupe, shard: u16, n: u64) -> bool {
    let id = format!("bench-message-id-{n:016}");
    let now = Instant::now();
    let mut ids = dedupe.lock();
    if ids.seen(id.as_bytes(), now).is_some() {
        return true;
    }
    let first = FirstCopy { shard, seq: n };
    ids.remember(Bytes::copy_from_slice(id.as_bytes()), first, now);
    false
}

//! The broker-wide budget for queued bytes, and one worker's part of it.
//!
//! Owns: [`QueueBudget`], what one worker's subscription queues hold in bytes, the share
//! of the broker's `max_queued_bytes` it has reserved to hold it, and the eviction order
//! of every message its connections queued ([`Tickets`]). Reserving goes through one
//! atomic shared by the workers ([`SharedBudget`]), a [`CHUNK`] at a time, so that the
//! queueing path touches it about once per MiB queued or freed, never per message; the
//! broker as a whole can hold up to `max_queued_bytes` plus two chunks per worker.
//!
//! When a worker cannot reserve more, it is over budget: it then gives up its own
//! lowest-priority, oldest queued messages (each dropped with a notice to its subscriber,
//! as on a queue's own overflow) until what it holds fits what it reserved. A worker never
//! evicts another worker's messages: the order is "lowest priority, oldest first" within
//! the worker that has to make room, which is the worker whose subscribers are behind.
//!
//! Never: takes a lock, or touches the shared atomic on the direct delivery path (only
//! when a message is queued or leaves a queue).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::eviction::Tickets;

/// Bytes reserved from (or given back to) the shared budget at a time.
pub(crate) const CHUNK: usize = 1 << 20;

crate::names::named_enum! {
    /// The budget that made a queued message go (`budget_drops` counts by it).
    pub(crate) enum BudgetKind {
        /// The connection's `max_pending`.
        Connection => "connection",
        /// The broker's `max_queued_bytes`.
        Broker => "broker",
    }
}

/// A queued message, named from the worker: its connection (slot and generation) and
/// subscription (key and id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedRef {
    pub slot: u32,
    pub gen: u32,
    pub key: u32,
    pub id: u64,
}

/// The bytes every worker has reserved, against the broker's limit. Shared by the workers.
#[derive(Debug)]
pub(crate) struct SharedBudget {
    reserved: AtomicUsize,
    limit: usize,
}

impl SharedBudget {
    pub fn new(limit: usize) -> Arc<SharedBudget> {
        Arc::new(SharedBudget {
            reserved: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes reserved by all workers now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Reserves `n` bytes if the limit allows.
    fn try_reserve(&self, n: usize) -> bool {
        let mut now = self.reserved.load(Ordering::Relaxed);
        loop {
            if now + n > self.limit {
                return false;
            }
            match self.reserved.compare_exchange_weak(
                now,
                now + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One worker's queued bytes and its part of the broker's budget.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    shared: Arc<SharedBudget>,
    /// Bytes and messages this worker's subscription queues hold.
    used: usize,
    msgs: usize,
    /// Bytes this worker has reserved from the shared budget.
    reserved: usize,
    /// Every message queued on this worker, in eviction order.
    pub tickets: Tickets<QueuedRef>,
}

impl QueueBudget {
    pub fn new(shared: Arc<SharedBudget>) -> QueueBudget {
        QueueBudget {
            shared,
            used: 0,
            msgs: 0,
            reserved: 0,
            tickets: Tickets::default(),
        }
    }

    /// Bytes this worker's queues hold.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Messages this worker's queues hold.
    pub fn msgs(&self) -> usize {
        self.msgs
    }

    /// The queues took `msgs` more messages (a negative number: gave them up).
    pub fn count(&mut self, msgs: isize) {
        self.msgs = self.msgs.saturating_add_signed(msgs);
    }

    /// A queue took `n` more bytes.
    pub fn charge(&mut self, n: usize) {
        self.used += n;
        while self.used > self.reserved {
            if !self.shared.try_reserve(CHUNK) {
                return;
            }
            self.reserved += CHUNK;
        }
    }

    /// A queue gave up `n` bytes.
    pub fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
        // Keep one spare chunk, give back the rest.
        while self.reserved >= self.used + 2 * CHUNK {
            self.reserved -= CHUNK;
            self.shared.give_back(CHUNK);
        }
    }

    /// True when this worker holds more than it could reserve: it must evict.
    pub fn is_over(&self) -> bool {
        self.used > self.reserved
    }
}

impl Drop for QueueBudget {
    fn drop(&mut self) {
        self.shared.give_back(self.reserved);
    }
}

/// The default broker-wide budget: a quarter of the machine's memory, at most 16 GiB (at
/// least 64 MiB when the memory cannot be read).
pub fn default_max_queued_bytes() -> usize {
    const CAP: usize = 16 << 30;
    const FLOOR: usize = 64 << 20;
    // SAFETY: sysconf has no memory-safety preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return FLOOR;
    }
    let total = (pages as u128 * page as u128).min(usize::MAX as u128) as usize;
    (total / 4).clamp(FLOOR, CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_reserve_in_chunks_and_are_over_when_the_broker_is_full() {
        let shared = SharedBudget::new(3 * CHUNK);
        let mut a = QueueBudget::new(Arc::clone(&shared));
        let mut b = QueueBudget::new(Arc::clone(&shared));
        a.charge(100);
        assert_eq!(shared.reserved(), CHUNK, "one chunk for a hundred bytes");
        a.charge(CHUNK);
        b.charge(CHUNK / 2);
        assert_eq!(shared.reserved(), 3 * CHUNK);
        assert!(!a.is_over() && !b.is_over());
        b.charge(CHUNK);
        assert!(b.is_over(), "the broker's limit is reached");
        b.release(CHUNK);
        assert!(!b.is_over());
        a.release(CHUNK + 100);
        assert_eq!(shared.reserved(), 2 * CHUNK, "a keeps one spare chunk");
        drop(a);
        drop(b);
        assert_eq!(shared.reserved(), 0, "everything given back");
    }

    #[test]
    fn the_default_is_a_quarter_of_memory_within_bounds() {
        let d = default_max_queued_bytes();
        assert!((64 << 20..=16 << 30).contains(&d), "{d}");
    }
}

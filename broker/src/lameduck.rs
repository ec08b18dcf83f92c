//! Lame duck mode: stopping gently, for rolling restarts (SIGUSR2, as nats-server does).
//!
//! Owns: the switch the main thread throws and every worker and the monitor read
//! ([`LameDuck`]), and the schedule by which a worker closes its connections
//! ([`Schedule`]): none during `lame_duck_grace_period` (so that several brokers put into
//! lame duck together do not send their clients to each other), then a share at every timer
//! tick, spread evenly over the rest of `lame_duck_duration`, so that a thousand clients do
//! not reconnect elsewhere at the same moment.
//!
//! What a worker does when it sees the switch (`worker.rs`): closes its listeners, tells
//! each connection (`INFO` with `"ldm":true` on the text port, `GOAWAY` on the binary
//! port), then closes them on the schedule. The main thread shuts the broker down as on
//! SIGTERM once every worker has closed its connections, or when the duration is over.
//!
//! Never: touches a socket or a connection, or reads a clock: instants come from callers.
//! The switch is two atomics, read by workers on their timer tick only, never on the data
//! path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether the broker is in lame duck mode, and since when. Shared by the main thread
/// (which enters it), the workers and the monitor.
#[derive(Debug)]
pub(crate) struct LameDuck {
    /// The instant `since_ns` counts from.
    origin: Instant,
    /// Nanoseconds from `origin` to the moment lame duck mode began, plus one; 0: not in it.
    since_ns: AtomicU64,
    /// Workers that have seen it, closed their listeners and told their connections.
    workers_in: AtomicUsize,
}

impl LameDuck {
    pub fn new(origin: Instant) -> LameDuck {
        LameDuck {
            origin,
            since_ns: AtomicU64::new(0),
            workers_in: AtomicUsize::new(0),
        }
    }

    /// Enters lame duck mode at `now`. False when it was already on.
    pub fn enter(&self, now: Instant) -> bool {
        let ns = now.saturating_duration_since(self.origin).as_nanos();
        let ns = u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1;
        self.since_ns
            .compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// When lame duck mode began, if it has.
    pub fn since(&self) -> Option<Instant> {
        match self.since_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.origin + Duration::from_nanos(ns - 1)),
        }
    }

    pub fn is_on(&self) -> bool {
        self.since_ns.load(Ordering::Acquire) != 0
    }

    /// A worker has closed its listeners and told its connections.
    pub fn worker_entered(&self) {
        self.workers_in.fetch_add(1, Ordering::AcqRel);
    }

    /// How many workers have.
    pub fn workers_in(&self) -> usize {
        self.workers_in.load(Ordering::Acquire)
    }
}

/// One worker's plan for closing the connections it had when it entered lame duck mode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub since: Instant,
    /// Connections open when the worker entered.
    pub initial: usize,
    pub grace: Duration,
    pub duration: Duration,
}

impl Schedule {
    /// How many of the `initial` connections may still be open at `now`: all of them
    /// during the grace period, then fewer in proportion to the time passed, none once the
    /// duration is over. Never grows as `now` does.
    pub fn may_stay_open(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.grace {
            return self.initial;
        }
        let spread = self.duration.saturating_sub(self.grace);
        if elapsed >= self.duration || spread.is_zero() {
            return 0;
        }
        let left = (self.duration - elapsed).as_nanos();
        // Rounded down: a connection goes in the tick where its share is due.
        (self.initial as u128 * left / spread.as_nanos()) as usize
    }

    /// When the last connection is closed at the latest.
    pub fn deadline(&self) -> Instant {
        self.since + self.duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn schedule(initial: usize) -> (Instant, Schedule) {
        let t0 = Instant::now();
        let s = Schedule {
            since: t0,
            initial,
            grace: Duration::from_secs(10),
            duration: Duration::from_secs(120),
        };
        (t0, s)
    }

    #[test]
    fn the_switch_is_thrown_once_and_says_since_when() {
        let t0 = Instant::now();
        let ld = LameDuck::new(t0);
        assert!(!ld.is_on());
        assert_eq!(ld.since(), None);
        let at = t0 + Duration::from_millis(1500);
        assert!(ld.enter(at));
        assert!(
            !ld.enter(at + Duration::from_secs(1)),
            "a second SIGUSR2 changes nothing"
        );
        assert!(ld.is_on());
        assert_eq!(ld.since(), Some(at));
        // Entering at the origin itself is still "on".
        let ld = LameDuck::new(t0);
        assert!(ld.enter(t0));
        assert_eq!(ld.since(), Some(t0));
        ld.worker_entered();
        ld.worker_entered();
        assert_eq!(ld.workers_in(), 2);
    }

    #[test]
    fn nothing_closes_during_the_grace_period_and_everything_by_the_end() {
        let (t0, s) = schedule(1000);
        assert_eq!(s.may_stay_open(t0), 1000);
        assert_eq!(s.may_stay_open(t0 + s.grace - MS), 1000);
        assert_eq!(s.may_stay_open(t0 + s.grace), 1000);
        assert_eq!(s.may_stay_open(t0 + Duration::from_secs(65)), 500);
        assert_eq!(s.may_stay_open(t0 + s.duration - MS), 0);
        assert_eq!(s.may_stay_open(t0 + s.duration), 0);
        assert_eq!(s.may_stay_open(t0 + s.duration * 2), 0);
        assert_eq!(s.deadline(), t0 + s.duration);
    }

    #[test]
    fn closes_are_spread_in_small_batches_over_the_window() {
        // A thousand connections, a tick every 100 ms over 110 s: about one per tick, never
        // a crowd, and the count never goes back up.
        let (t0, s) = schedule(1000);
        let mut open = s.initial;
        let mut biggest = 0;
        let mut t = t0;
        while t <= t0 + s.duration {
            let allowed = s.may_stay_open(t);
            assert!(allowed <= open, "never grows");
            biggest = biggest.max(open - allowed);
            open = allowed;
            t += Duration::from_millis(100);
        }
        assert_eq!(open, 0);
        assert!(biggest <= 2, "at most {biggest} closed in one tick");
    }

    #[test]
    fn a_window_without_room_after_the_grace_closes_everything_at_its_end() {
        let t0 = Instant::now();
        let s = Schedule {
            since: t0,
            initial: 5,
            grace: Duration::from_secs(2),
            duration: Duration::from_secs(2),
        };
        assert_eq!(s.may_stay_open(t0 + Duration::from_secs(1)), 5);
        assert_eq!(s.may_stay_open(t0 + Duration::from_secs(2)), 0);
    }
}

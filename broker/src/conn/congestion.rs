//! Whether a consumer should slow the publishers that feed it.
//!
//! Owns: [`Congestion`], the state of one connection as a consumer: clear, congested (over
//! its high-water mark and draining: publishers are stalled until it drains below its
//! low-water mark) or stuck (over its high-water mark and not draining: it slows no
//! publisher, and its queues drop by priority). Catch-ups to a consumer wait while it is
//! either: they serve it alone. It is a pure state machine: the connection tells it
//! whether it is over its marks and how many bytes its socket took, and a timer every
//! `window` asks it to judge; it answers with the [`Signal`]s to broadcast.
//!
//! The rule that keeps a stuck consumer from slowing anyone for long: a congested consumer
//! whose socket is full must have taken at least `min_drain` bytes in the last `window`,
//! or it is stuck, and the publishers it held are released at once. (A socket that is not
//! full is not the consumer's doing: its worker is behind, and the stall is right.) A
//! consumer that starts draining again becomes congested again (a new epoch, so that a
//! late stall from the old one is recognised).
//!
//! Never: reads a clock, touches a socket or sends anything itself.

use std::time::{Duration, Instant};

/// What a connection is, as a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Below its high-water mark, or was and has not yet drained to its low-water mark
    /// since it stopped being congested.
    Clear,
    /// Over its high-water mark and draining: publishers wait for it.
    Congested,
    /// Over its high-water mark and not draining: it slows nobody.
    Stuck,
}

/// What the other workers must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Congested, in this epoch: stall publishers whose messages reach it; catch-ups to it
    /// wait.
    On(u32),
    /// Judged stuck in this epoch: release the publishers it stalled. Catch-ups to it still
    /// wait: they serve only this consumer, and replaying into a queue that is not read
    /// would only be dropped again.
    Stuck(u32),
    /// Under its low-water mark again, or closed: release the publishers of this epoch, and
    /// catch-ups to it go on.
    Off(u32),
}

/// The judging parameters (`publisher_stall_window`, `publisher_stall_min_drain`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub window: Duration,
    pub min_drain: usize,
}

#[derive(Debug)]
pub(crate) struct Congestion {
    state: State,
    epoch: u32,
    /// Start of the current judging window, and what the socket took since.
    window_start: Instant,
    drained: usize,
}

impl Congestion {
    pub fn new(now: Instant) -> Congestion {
        Congestion {
            state: State::Clear,
            epoch: 0,
            window_start: now,
            drained: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The socket took `n` bytes.
    pub fn drained(&mut self, n: usize) {
        self.drained += n;
    }

    /// What the socket took since the current judging window began.
    #[cfg(test)]
    pub fn drained_in_window(&self) -> usize {
        self.drained
    }

    /// When the timer must call [`Congestion::judge`] next (only while over the
    /// high-water mark).
    pub fn next_judgement(&self, p: Params) -> Option<Instant> {
        (self.state != State::Clear).then_some(self.window_start + p.window)
    }

    /// The connection's position against its marks changed (or may have): `high` is
    /// "over the high-water mark", `low` "at or under the low-water mark". Returns what
    /// to broadcast, if anything.
    pub fn update(&mut self, high: bool, low: bool, now: Instant) -> Option<Signal> {
        match self.state {
            // Over the mark: congested at once. Whether it drains is judged after a
            // window; a consumer that does not is released then (the publishers it held
            // waited one window at most).
            State::Clear if high => {
                self.window_start = now;
                self.drained = 0;
                Some(self.congest())
            }
            State::Congested | State::Stuck if low => {
                self.state = State::Clear;
                Some(Signal::Off(self.epoch))
            }
            _ => None,
        }
    }

    /// The timer: at the end of each window while over the high-water mark, decides
    /// whether the consumer drained enough to keep slowing its publishers (`socket_full`:
    /// its last write found the socket full; otherwise it counts as draining).
    pub fn judge(&mut self, now: Instant, socket_full: bool, p: Params) -> Option<Signal> {
        if self.state == State::Clear || now < self.window_start + p.window {
            return None;
        }
        let enough = !socket_full || self.drained >= p.min_drain;
        self.window_start = now;
        self.drained = 0;
        match (self.state, enough) {
            (State::Congested, false) => {
                self.state = State::Stuck;
                Some(Signal::Stuck(self.epoch))
            }
            (State::Stuck, true) => Some(self.congest()),
            _ => None,
        }
    }

    /// The connection closes: release whoever waits for it.
    pub fn close(&mut self) -> Option<Signal> {
        let was = std::mem::replace(&mut self.state, State::Clear);
        (was != State::Clear).then_some(Signal::Off(self.epoch))
    }

    fn congest(&mut self) -> Signal {
        self.state = State::Congested;
        self.epoch = self.epoch.wrapping_add(1);
        Signal::On(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        window: Duration::from_millis(20),
        min_drain: 1000,
    };

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_consumer_over_its_mark_congests_until_it_reaches_its_low_mark() {
        let t0 = Instant::now();
        let mut c = Congestion::new(t0);
        assert_eq!(c.update(true, false, ms(t0, 5)), Some(Signal::On(1)));
        assert_eq!(c.next_judgement(P), Some(ms(t0, 25)));
        // Between the marks: nothing changes.
        assert_eq!(c.update(false, false, ms(t0, 6)), None);
        c.drained(5000);
        assert_eq!(
            c.judge(ms(t0, 25), true, P),
            None,
            "drained enough: still congested"
        );
        assert_eq!(c.state(), State::Congested);
        assert_eq!(c.update(false, true, ms(t0, 30)), Some(Signal::Off(1)));
        assert_eq!(c.next_judgement(P), None);
    }

    #[test]
    fn a_consumer_that_stops_draining_is_stuck_and_releases_its_publishers_within_a_window() {
        let t0 = Instant::now();
        let mut c = Congestion::new(t0);
        assert_eq!(c.update(true, false, ms(t0, 1)), Some(Signal::On(1)));
        c.drained(10);
        assert_eq!(c.judge(ms(t0, 10), true, P), None, "the window is not over");
        assert_eq!(
            c.judge(ms(t0, 21), true, P),
            Some(Signal::Stuck(1)),
            "10 bytes is not draining"
        );
        assert_eq!(c.state(), State::Stuck);
        assert_eq!(c.update(true, false, ms(t0, 25)), None, "stays stuck");
        // It drains again: congested again, in a new epoch.
        c.drained(2000);
        assert_eq!(c.judge(ms(t0, 41), true, P), Some(Signal::On(2)));
        assert_eq!(c.close(), Some(Signal::Off(2)));
        // Stuck, then back under the low mark: clear, so catch-ups to it go on again.
        let mut c = Congestion::new(t0);
        c.update(true, false, t0);
        assert_eq!(c.judge(ms(t0, 20), true, P), Some(Signal::Stuck(1)));
        assert_eq!(c.update(false, true, ms(t0, 30)), Some(Signal::Off(1)));
        assert_eq!(c.close(), None);
        // Closed while stuck: clear too.
        let mut c = Congestion::new(t0);
        c.update(true, false, t0);
        assert_eq!(c.judge(ms(t0, 20), true, P), Some(Signal::Stuck(1)));
        assert_eq!(c.close(), Some(Signal::Off(1)));
    }

    #[test]
    fn a_consumer_whose_socket_is_not_full_is_not_stuck_its_worker_is_behind() {
        let t0 = Instant::now();
        let mut c = Congestion::new(t0);
        assert_eq!(c.update(true, false, ms(t0, 500)), Some(Signal::On(1)));
        assert_eq!(
            c.judge(ms(t0, 521), false, P),
            None,
            "nothing drained, but the socket is not full"
        );
        assert_eq!(c.state(), State::Congested);
        assert_eq!(c.judge(ms(t0, 542), true, P), Some(Signal::Stuck(1)));
    }
}

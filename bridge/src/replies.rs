//! The reply subjects a bridge may answer on: only those of requests it carried.
//!
//! Owns: [`Replies`], per direction, the reply subjects of requests the bridge carried
//! (an exported request's local reply subject, an imported request's upstream one) with
//! when each may last be answered. A reply through the bridge's reply subjects
//! (`$TERN.BRIDGE.<id>.U.<subject>` upstream, `.L.<subject>` locally) is forwarded only to a
//! subject in here: anyone can publish to those subjects, and without this they would
//! make the bridge publish anywhere with its own rights.
//!
//! Never: grows past its bound (`max_replies`: the oldest go first when full), or keeps a
//! subject past `reply_timeout`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Replies {
    state: Mutex<State>,
    ttl: Duration,
    max: usize,
}

#[derive(Debug, Default)]
struct State {
    until: HashMap<String, Instant>,
    /// In the order they were allowed, to forget the oldest first.
    order: VecDeque<(Instant, String)>,
}

impl Replies {
    pub(crate) fn new(ttl: Duration, max: usize) -> Replies {
        Replies {
            state: Mutex::new(State::default()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request with reply subject `subject` went through the bridge.
    pub(crate) fn allow(&self, subject: &str, now: Instant) {
        let until = now + self.ttl;
        let mut s = self.lock();
        if s.until.insert(subject.to_string(), until).is_none() {
            while s.order.len() >= self.max {
                if let Some((_, old)) = s.order.pop_front() {
                    s.until.remove(&old);
                }
            }
        }
        s.order.push_back((until, subject.to_string()));
        // A subject allowed again sits in `order` twice; the stale entry goes when met.
        while s.order.len() > self.max * 2 {
            s.order.pop_front();
        }
    }

    /// May a reply go to `subject` now?
    pub(crate) fn allowed(&self, subject: &str, now: Instant) -> bool {
        self.lock().until.get(subject).is_some_and(|&t| now <= t)
    }

    /// Forgets what expired.
    pub(crate) fn prune(&self, now: Instant) {
        let mut s = self.lock();
        while let Some((t, _)) = s.order.front() {
            if *t > now {
                break;
            }
            let (t, subject) = s.order.pop_front().expect("front exists");
            if s.until.get(&subject) == Some(&t) {
                s.until.remove(&subject);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_carried_requests_are_answered_and_not_forever() {
        let r = Replies::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(!r.allowed("_INBOX.a", t0));
        r.allow("_INBOX.a", t0);
        assert!(r.allowed("_INBOX.a", t0 + Duration::from_secs(5)));
        assert!(!r.allowed("_INBOX.a", t0 + Duration::from_secs(11)));
        r.prune(t0 + Duration::from_secs(11));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn the_oldest_go_first_when_full() {
        let r = Replies::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        r.allow("a", t0);
        r.allow("b", t0);
        r.allow("c", t0);
        assert!(!r.allowed("a", t0));
        assert!(r.allowed("b", t0) && r.allowed("c", t0));
        assert_eq!(r.len(), 2);
    }
}

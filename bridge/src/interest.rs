//! Interest: what local subscribers want from upstream, as upstream subscriptions.
//!
//! Owns: per bridge, the count of local subscriptions behind each upstream subscription
//! (the intersection of a local filter with an import rule, with the local queue group if
//! any), and the choice of the upstream subscriptions that cover them all once: one that
//! another with the same queue group already covers (`a.b` under `a.>`) is left out, so
//! that upstream does not send the same message twice for it.
//!
//! The broker's workers call [`Interest::changed`] when a subscription starts or ends (not
//! on the publish path); the bridge's control thread is woken and reads
//! [`Interest::wanted`].
//!
//! Never: blocks a worker beyond one short lock, or counts the bridge's own local
//! subscriptions (the broker does not report those) or the broker's own subjects
//! (`$TERN.`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crossbeam_channel::Sender;

use crate::subject::{intersect, TERN_PREFIX};

/// An upstream subscription: its filter and queue group.
pub type Key = (String, Option<String>);

#[derive(Debug)]
pub(crate) struct Interest {
    /// The import rules subscribed only on demand.
    rules: Vec<String>,
    /// The static ones: always subscribed.
    always: Vec<String>,
    counts: Mutex<HashMap<Key, u32>>,
    wake: Sender<()>,
}

impl Interest {
    pub(crate) fn new(rules: Vec<String>, always: Vec<String>, wake: Sender<()>) -> Interest {
        Interest {
            rules,
            always,
            counts: Mutex::new(HashMap::new()),
            wake,
        }
    }

    /// A local subscription to `filter` (in queue group `queue`) started (`up`) or ended.
    pub(crate) fn changed(&self, filter: &str, queue: Option<&str>, up: bool) {
        if filter.starts_with(TERN_PREFIX) || self.rules.is_empty() {
            return;
        }
        let mut changed = false;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for rule in &self.rules {
            let Some(subject) = intersect(rule, filter) else {
                continue;
            };
            let key = (subject, queue.map(str::to_string));
            if up {
                let n = counts.entry(key).or_insert(0);
                *n += 1;
                changed |= *n == 1;
            } else if let Some(n) = counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&key);
                    changed = true;
                }
            }
        }
        drop(counts);
        if changed {
            // One pending wake-up is enough: the control thread reads the whole table.
            let _ = self.wake.try_send(());
        }
    }

    /// How many local subscriptions are behind upstream subscriptions now.
    pub(crate) fn local_count(&self) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.values().map(|&n| u64::from(n)).sum()
    }

    /// The upstream subscriptions wanted now: the static rules, and what local
    /// subscriptions want, each covered once.
    pub(crate) fn wanted(&self) -> BTreeSet<Key> {
        let mut keys: BTreeSet<Key> = self.always.iter().map(|s| (s.clone(), None)).collect();
        {
            let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            keys.extend(counts.keys().cloned());
        }
        let wild: Vec<Key> = keys
            .iter()
            .filter(|(s, _)| s.split('.').any(|t| t == "*" || t == ">"))
            .cloned()
            .collect();
        keys.retain(|k| {
            !wild
                .iter()
                .any(|w| w != k && w.1 == k.1 && covers(&w.0, &k.0))
        });
        keys
    }
}

/// True when every subject `inner` matches, `outer` matches too.
fn covers(outer: &str, inner: &str) -> bool {
    intersect(outer, inner).as_deref() == Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(rules: &[&str], always: &[&str]) -> (Interest, crossbeam_channel::Receiver<()>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        (Interest::new(s(rules), s(always), tx), rx)
    }

    fn keys(i: &Interest) -> Vec<(String, Option<String>)> {
        i.wanted().into_iter().collect()
    }

    #[test]
    fn counts_local_subscriptions_within_the_rules() {
        let (i, rx) = interest(&["orders.>"], &[]);
        i.changed("chat.x", None, true);
        assert!(rx.try_recv().is_err(), "outside the rules: no wake-up");
        i.changed(">", None, true);
        i.changed("orders.eu.*", Some("workers"), true);
        i.changed("orders.eu.*", Some("workers"), true);
        assert!(rx.try_recv().is_ok());
        assert_eq!(
            keys(&i),
            vec![
                ("orders.>".into(), None),
                ("orders.eu.*".into(), Some("workers".into()))
            ]
        );
        i.changed("orders.eu.*", Some("workers"), false);
        assert_eq!(keys(&i).len(), 2, "one member is left");
        i.changed("orders.eu.*", Some("workers"), false);
        i.changed(">", None, false);
        assert!(keys(&i).is_empty());
        assert_eq!(i.local_count(), 0);
    }

    #[test]
    fn a_covered_subscription_is_left_out() {
        let (i, _rx) = interest(&[">"], &["static.>"]);
        i.changed("a.b", None, true);
        i.changed("a.>", None, true);
        i.changed("static.x", None, true);
        i.changed("a.b", Some("q"), true);
        assert_eq!(
            keys(&i),
            vec![
                ("a.>".into(), None),
                ("a.b".into(), Some("q".into())),
                ("static.>".into(), None)
            ]
        );
    }

    #[test]
    fn the_brokers_own_subjects_are_not_interest() {
        let (i, rx) = interest(&[">"], &[]);
        i.changed("$TERN.PRESENCE.EVENTS.room", None, true);
        assert!(rx.try_recv().is_err());
        assert!(keys(&i).is_empty());
    }
}

//! The soak's well-behaved binary traffic, through `tern-client`: acknowledged publishes
//! with message ids, and subscribers that must get every acknowledged message exactly
//! once, in order per publisher and subject.
//!
//! Owns:
//! - [`publisher`]: one client publishing `seq = 1, 2, ...` to `soak.acked.p<P>.<seq % S>`
//!   at a paced rate, one publish in flight at a time (`publish_acked` with message id
//!   `soak-p<P>-<seq>`). A publish whose outcome is unknown (`Timeout`, `Disconnected`) or
//!   that the broker refused for load is sent again with the same id until it is
//!   acknowledged (the broker's dedupe window makes that idempotent) or
//!   [`PUBLISH_GIVE_UP`] has passed. One in flight at a time, because with several a
//!   retried message could be stored after a later one, and per-publisher order is part of
//!   what is checked.
//! - [`subscriber`]: a lossless subscription to `soak.acked.>`, kept by the client across
//!   reconnects (it resubscribes with a resume token); with `restart_every`, the subscriber
//!   also closes its whole client at intervals and starts a new one with
//!   `StartFrom::Resume`, from a token it builds from the messages it has *processed*.
//! - [`Ledger`] and [`verify`]: what a subscriber got against what was acknowledged.
//!
//! Never: counts a message it has not received as delivered, or waits without a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern_client::{
    Client, ErrorCode, Event, Message, PublishOptions, ReconnectPolicy, ResumeToken, StartFrom,
};

/// How long one message may take to be acknowledged, retries included, before the
/// publisher reports it and moves on.
pub const PUBLISH_GIVE_UP: Duration = Duration::from_secs(30);
/// The filter every acked subscriber uses.
pub const FILTER: &str = "soak.acked.>";
/// Payload bytes (kind, publisher, sequence, filler).
const PAYLOAD: usize = 64;
/// The payload's first byte.
const KIND: u8 = b'A';

/// A (publisher, subject) pair: the unit of ordering.
pub type Key = (u32, String);

/// The subject publisher `p` sends `seq` to.
pub fn subject(p: u32, seq: u64, subjects: u64) -> String {
    format!("soak.acked.p{p}.{}", seq % subjects.max(1))
}

/// The message id of publisher `p`'s `seq`.
pub fn message_id(p: u32, seq: u64) -> String {
    format!("soak-p{p}-{seq}")
}

fn payload(p: u32, seq: u64) -> Vec<u8> {
    let mut b = vec![b'.'; PAYLOAD];
    b[0] = KIND;
    b[1..5].copy_from_slice(&p.to_le_bytes());
    b[5..13].copy_from_slice(&seq.to_le_bytes());
    b
}

/// The publisher and sequence a payload carries.
pub fn origin(payload: &[u8]) -> Option<(u32, u64)> {
    if payload.first() != Some(&KIND) || payload.len() < 13 {
        return None;
    }
    Some((
        u32::from_le_bytes(payload[1..5].try_into().ok()?),
        u64::from_le_bytes(payload[5..13].try_into().ok()?),
    ))
}

/// The `tern-client` settings every soak client uses: quick reconnects, short timeouts.
pub fn client(addr: std::net::SocketAddr, name: &str) -> Result<Client, tern_client::Error> {
    Client::builder()
        .name(name)
        .reconnect(ReconnectPolicy::new(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .connect_timeout(Duration::from_secs(3))
        .ack_timeout(Duration::from_secs(5))
        .server_timeout(Duration::from_secs(15))
        .linger(Duration::from_millis(200))
        .connect(&format!("tern://{addr}"))
}

/// What one publisher did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherLog {
    /// Its number.
    pub publisher: u32,
    /// Acknowledged sequences per subject, in the order they were acknowledged.
    #[serde(skip)]
    pub acked: BTreeMap<String, Vec<u64>>,
    /// Messages acknowledged.
    pub acked_count: u64,
    /// Sends repeated after an unknown outcome or a refusal for load.
    pub retries: u64,
    /// Acknowledgements that said the message was already stored (a retry whose first
    /// copy had made it).
    pub duplicate_acks: u64,
    /// The longest one message took to be acknowledged, retries included (ms).
    pub max_ack_ms: u64,
    /// Messages given up on, and other failures.
    pub problems: Vec<String>,
}

/// Publishes to `addr` until `stop`, `rate` messages a second over `subjects` subjects.
pub fn publisher(
    addr: std::net::SocketAddr,
    p: u32,
    rate: u32,
    subjects: u64,
    stop: &AtomicBool,
) -> PublisherLog {
    let mut log = PublisherLog {
        publisher: p,
        ..PublisherLog::default()
    };
    // A first connect is not retried by the client itself, and the connect rate may
    // refuse it.
    let client = match connect_until(
        addr,
        &format!("soak-publisher-{p}"),
        Duration::from_secs(30),
    ) {
        Ok(c) => c,
        Err(e) => {
            log.problems
                .push(format!("publisher {p}: cannot connect: {e}"));
            return log;
        }
    };
    let gap = Duration::from_secs(1) / rate.max(1);
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += gap;
        if next + Duration::from_secs(1) < now {
            // Fell behind (stalled or retrying): do not burst to catch up.
            next = now;
        }
        seq += 1;
        let subject = subject(p, seq, subjects);
        let options = PublishOptions::new().message_id(message_id(p, seq));
        let body = payload(p, seq);
        let started = Instant::now();
        loop {
            match client.publish_acked_with(&subject, &body, &options) {
                Ok(ack) => {
                    log.acked.entry(subject.clone()).or_default().push(seq);
                    log.acked_count += 1;
                    log.duplicate_acks += u64::from(ack.duplicate);
                    log.max_ack_ms = log.max_ack_ms.max(started.elapsed().as_millis() as u64);
                    break;
                }
                Err(e) if retryable(&e) && started.elapsed() < PUBLISH_GIVE_UP => {
                    log.retries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    log.problems.push(format!(
                        "publisher {p}: {subject} seq {seq} not acknowledged after {:?}: {e}",
                        started.elapsed()
                    ));
                    break;
                }
            }
        }
    }
    client.close();
    log
}

/// True for an outcome that a retry with the same message id may fix.
fn retryable(e: &tern_client::Error) -> bool {
    use tern_client::Error as E;
    match e {
        E::Timeout | E::Disconnected | E::OfflineBufferFull { .. } => true,
        E::Refused { code, .. } => matches!(code, ErrorCode::Overloaded | ErrorCode::RateLimited),
        _ => false,
    }
}

/// What one subscriber received, per key, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    got: BTreeMap<Key, Vec<u64>>,
}

impl Ledger {
    /// Records a delivery.
    pub fn record(&mut self, p: u32, subject: &str, seq: u64) {
        self.got
            .entry((p, subject.to_string()))
            .or_default()
            .push(seq);
    }

    /// True when, for every key of `acked`, the last acknowledged sequence has arrived.
    pub fn has_last_of(&self, acked: &BTreeMap<Key, Vec<u64>>) -> bool {
        acked.iter().all(|(k, seqs)| match seqs.last() {
            None => true,
            Some(last) => self.got.get(k).is_some_and(|g| g.contains(last)),
        })
    }

    /// Deliveries recorded.
    pub fn len(&self) -> u64 {
        self.got.values().map(|v| v.len() as u64).sum()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

/// What a subscriber got, against what was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Acknowledged messages.
    pub acked: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Acknowledged and never delivered.
    pub missing: u64,
    /// Delivered more than once (each extra delivery counted).
    pub duplicated: u64,
    /// Delivered after a later sequence of the same key.
    pub reordered: u64,
    /// Delivered but never acknowledged (published, its outcome unknown: not an error).
    pub unacknowledged: u64,
    /// The first few problems, named.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Exactly once, in order.
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

/// Compares a ledger with the acknowledged sequences per key.
pub fn verify(acked: &BTreeMap<Key, Vec<u64>>, ledger: &Ledger) -> Verdict {
    let mut v = Verdict::default();
    let example = |v: &mut Verdict, text: String| {
        if v.examples.len() < 8 {
            v.examples.push(text);
        }
    };
    for (key, seqs) in acked {
        v.acked += seqs.len() as u64;
        let got = ledger.got.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = std::collections::HashSet::with_capacity(got.len());
        let mut highest = 0u64;
        for &s in got {
            if !seen.insert(s) {
                v.duplicated += 1;
                example(&mut v, format!("{key:?}: seq {s} delivered twice"));
            } else if s < highest {
                v.reordered += 1;
                example(&mut v, format!("{key:?}: seq {s} after {highest}"));
            }
            highest = highest.max(s);
        }
        let acked_set: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        for s in seqs {
            if !seen.contains(s) {
                v.missing += 1;
                example(
                    &mut v,
                    format!("{key:?}: seq {s} acknowledged, never delivered"),
                );
            }
        }
        v.unacknowledged += seen.difference(&acked_set).count() as u64;
    }
    for (key, got) in &ledger.got {
        v.delivered += got.len() as u64;
        if !acked.contains_key(key) {
            v.unacknowledged += got.len() as u64;
        }
    }
    v
}

/// What one subscriber saw besides messages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberLog {
    /// Its name.
    pub name: String,
    /// Reconnects its client reported.
    pub reconnects: u64,
    /// Times it closed its client and resumed in a new one from its own token.
    pub restarts: u64,
    /// Events that mean a message may be lost (gaps, drops, epoch changes, errors).
    pub problems: Vec<String>,
    /// Against what was acknowledged (filled in by the caller).
    pub verdict: Verdict,
}

/// How a subscriber learns what to wait for once publishing is over.
pub type Final = OnceLock<BTreeMap<Key, Vec<u64>>>;

/// Subscribes (lossless) to [`FILTER`] through `addr` and records everything until the
/// acknowledged totals are published in `done` and have all arrived, or `drain` has passed
/// since then. With `restart_every`, closes its client at that interval and resumes in a
/// new one from its own token. `ready` is set once the first subscription is confirmed.
pub fn subscriber(
    addr: std::net::SocketAddr,
    name: &str,
    restart_every: Option<Duration>,
    ready: &AtomicBool,
    done: &Final,
    drain: Duration,
) -> (SubscriberLog, Ledger) {
    let mut log = SubscriberLog {
        name: name.to_string(),
        ..SubscriberLog::default()
    };
    let mut ledger = Ledger::default();
    // Highest processed sequence per shard, for a token of our own.
    let mut processed: Vec<u64> = Vec::new();
    let mut start = StartFrom::Live;
    let mut drain_deadline: Option<Instant> = None;
    'client: loop {
        let client = match connect_until(addr, name, Duration::from_secs(30)) {
            Ok(c) => c,
            Err(e) => {
                log.problems.push(format!("{name}: cannot connect: {e}"));
                return (log, ledger);
            }
        };
        let events = client.events();
        let sub = match client
            .subscribe_builder(FILTER)
            .lossless(true)
            .start(start.clone())
            .subscribe()
            .and_then(|s| client.flush(Duration::from_secs(10)).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                log.problems.push(format!("{name}: cannot subscribe: {e}"));
                return (log, ledger);
            }
        };
        ready.store(true, Ordering::Release);
        let epoch = client.server_info().map(|i| i.log_epoch).unwrap_or(0);
        // Where the subscription starts in every shard (the broker's `SUBSCRIBED`, in by
        // the flush): our own token starts there too, or a shard we never process anything
        // from would be resumed from its first record, history from before we subscribed.
        if let Some(token) = sub.resume_token().filter(|t| t.epoch == epoch) {
            if processed.len() < token.last_sequences.len() {
                processed.resize(token.last_sequences.len(), 0);
            }
            for (p, &start) in processed.iter_mut().zip(&token.last_sequences) {
                *p = (*p).max(start);
            }
        }
        let restart_at = restart_every.map(|d| Instant::now() + d);
        loop {
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => take(&m, &mut ledger, &mut processed, &mut log),
                Err(tern_client::Error::Timeout) => {}
                Err(e) => {
                    log.problems
                        .push(format!("{name}: subscription ended: {e}"));
                    return (log, ledger);
                }
            }
            while let Some(e) = events.try_recv() {
                note_event(&e, name, &mut log);
            }
            if let Some(acked) = done.get() {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
                if ledger.has_last_of(acked) || Instant::now() >= deadline {
                    // Whatever is still queued in the client counts too.
                    while let Ok(Some(m)) = sub.try_recv() {
                        take(&m, &mut ledger, &mut processed, &mut log);
                    }
                    client.close();
                    return (log, ledger);
                }
            } else if restart_at.is_some_and(|at| Instant::now() >= at)
                && processed.iter().any(|&s| s > 0)
            {
                // Close everything (what the client held but we did not process is
                // dropped with it) and resume from what we processed.
                client.close();
                log.restarts += 1;
                start = StartFrom::Resume(ResumeToken {
                    epoch,
                    last_sequences: processed.clone(),
                });
                continue 'client;
            }
        }
    }
}

fn connect_until(
    addr: std::net::SocketAddr,
    name: &str,
    within: Duration,
) -> Result<Client, tern_client::Error> {
    let deadline = Instant::now() + within;
    loop {
        match client(addr, name) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            // Refused (connect rate) or cut by the proxy: a first connect does not retry
            // by itself.
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn take(m: &Message, ledger: &mut Ledger, processed: &mut Vec<u64>, log: &mut SubscriberLog) {
    match origin(&m.payload) {
        Some((p, seq)) => ledger.record(p, &m.subject, seq),
        None => log.problems.push(format!(
            "{}: a message that is not ours on {}",
            log.name, m.subject
        )),
    }
    let shard = usize::from(m.shard);
    if processed.len() <= shard {
        processed.resize(shard + 1, 0);
    }
    processed[shard] = processed[shard].max(m.sequence);
}

fn note_event(e: &Event, name: &str, log: &mut SubscriberLog) {
    match e {
        Event::Reconnected(_) => log.reconnects += 1,
        Event::Gap { .. } | Event::Dropped { .. } | Event::EpochMismatch { .. } => {
            log.problems.push(format!("{name}: {e:?}"));
        }
        Event::ServerError { sid: Some(_), .. } => log.problems.push(format!("{name}: {e:?}")),
        _ => {}
    }
}

/// Every publisher's acknowledged sequences, by key.
pub fn acked_by_key(logs: &[PublisherLog]) -> BTreeMap<Key, Vec<u64>> {
    let mut all = BTreeMap::new();
    for l in logs {
        for (subject, seqs) in &l.acked {
            all.insert((l.publisher, subject.clone()), seqs.clone());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(entries: &[(u32, &str, &[u64])]) -> BTreeMap<Key, Vec<u64>> {
        entries
            .iter()
            .map(|(p, s, seqs)| ((*p, s.to_string()), seqs.to_vec()))
            .collect()
    }

    #[test]
    fn payloads_carry_their_origin() {
        assert_eq!(origin(&payload(3, 99)), Some((3, 99)));
        assert_eq!(origin(b"Mxxxxxxxxxxxxxxx"), None);
        assert_eq!(subject(2, 7, 2), "soak.acked.p2.1");
        assert_eq!(message_id(2, 7), "soak-p2-7");
    }

    #[test]
    fn exactly_once_in_order_is_clean() {
        let a = acked(&[(0, "s.0", &[2, 4, 6]), (0, "s.1", &[1, 3])]);
        let mut l = Ledger::default();
        for (s, q) in [("s.1", 1), ("s.0", 2), ("s.1", 3), ("s.0", 4), ("s.0", 6)] {
            l.record(0, s, q);
        }
        let v = verify(&a, &l);
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.acked, v.delivered, v.unacknowledged), (5, 5, 0));
        assert!(l.has_last_of(&a));
    }

    #[test]
    fn missing_duplicated_reordered_and_unacknowledged_are_told_apart() {
        let a = acked(&[(1, "x", &[1, 2, 3, 4])]);
        let mut l = Ledger::default();
        for q in [1, 3, 2, 3, 5] {
            l.record(1, "x", q);
        }
        let v = verify(&a, &l);
        assert_eq!(v.missing, 1, "4 never came: {v:?}");
        assert_eq!(v.duplicated, 1, "3 twice: {v:?}");
        assert_eq!(v.reordered, 1, "2 after 3: {v:?}");
        assert_eq!(v.unacknowledged, 1, "5 was never acknowledged: {v:?}");
        assert!(!v.clean());
        assert!(!l.has_last_of(&a));
    }
}

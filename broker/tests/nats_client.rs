//! The broker as a real NATS client library (async-nats) sees it: subjects and wildcards,
//! queue groups, request/reply and no-responders, headers, auto-unsubscribe, `echo: false`,
//! payload limits; and (raw TCP) ordering and completeness across workers and shards.
//!
//! A subscriber is ready when a round trip through the broker on its own connection has
//! completed ([`sync`]). Absence of a delivery is never checked with a sleep: a *barrier* message, published after
//! the messages under test to a subject owned by the same shard, is routed by that shard
//! after them, so once a connection has the barrier it has every earlier delivery from that
//! shard.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use common::nats::{next, sync};
use common::{Broker, RawClient};

/// The longest any test here may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<F: Future>(f: F) -> F::Output {
    common::nats::within(TEST_TIMEOUT, f).await
}

async fn connect(broker: &Broker) -> Client {
    ConnectOptions::new()
        .connect(broker.url())
        .await
        .expect("async-nats cannot connect")
}

/// The messages `sub` already holds, without waiting. (Unconstrained: tokio's cooperative
/// budget would otherwise report an empty channel after 128 messages.)
fn ready(sub: &mut Subscriber) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(Some(m)) = tokio::task::unconstrained(sub.next()).now_or_never() {
        out.push(m);
    }
    out
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

/// A subject matched by `filter`: its first wildcard token replaced by `marker` (`marker.z`
/// for `>`), the others by `x`.
fn marker_for(filter: &str) -> String {
    let mut first = true;
    filter
        .split('.')
        .map(|t| match t {
            "*" | ">" if first => {
                first = false;
                if t == "*" {
                    "marker".to_string()
                } else {
                    "marker.z".to_string()
                }
            }
            "*" | ">" => "x".to_string(),
            t => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe() {
    let broker = Broker::start();
    within(async {
        let publ = connect(&broker).await;
        let subc = connect(&broker).await;
        let mut sub = subc.subscribe("greet.hello").await.unwrap();
        sync(&subc).await;
        for i in 0..100 {
            publ.publish("greet.hello", format!("hi {i}").into())
                .await
                .unwrap();
        }
        publ.flush().await.unwrap();
        for i in 0..100 {
            let m = next(&mut sub).await;
            assert_eq!(m.subject.as_str(), "greet.hello");
            assert_eq!(text(&m), format!("hi {i}"));
            assert!(m.reply.is_none());
            assert!(m.headers.is_none());
        }
    })
    .await;
}

/// One publisher's messages to many subjects reach a wildcard subscriber in the order it
/// published them, as nats-server guarantees (the subjects hash to every shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publishers_messages_to_many_subjects_arrive_in_publish_order() {
    let broker = Broker::start();
    within(async {
        let publ = connect(&broker).await;
        let subc = connect(&broker).await;
        let mut sub = subc.subscribe("a.*").await.unwrap();
        sync(&subc).await;
        for i in 0..1000 {
            publ.publish(format!("a.{i}"), format!("{i}").into())
                .await
                .unwrap();
        }
        publ.flush().await.unwrap();
        for i in 0..1000 {
            let m = next(&mut sub).await;
            assert_eq!(m.subject.as_str(), format!("a.{i}"), "in publish order");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_what_they_should_and_nothing_else() {
    let broker = Broker::start();
    within(async {
        let publ = connect(&broker).await;
        let subc = connect(&broker).await;
        let subjects = [
            "wc",
            "wc.a",
            "wc.b",
            "wc.a.b",
            "wc.a.b.c",
            "wc.a.end",
            "wc.b.end",
            "wc.a.b.end",
            "wcx.a",
            "other.a",
            "x.wc.a",
            "wc.a*b",
        ];
        let cases: &[(&str, &[&str])] = &[
            ("wc.*", &["wc.a", "wc.a*b", "wc.b"]),
            (
                "wc.>",
                &[
                    "wc.a",
                    "wc.a*b",
                    "wc.a.b",
                    "wc.a.b.c",
                    "wc.a.b.end",
                    "wc.a.end",
                    "wc.b",
                    "wc.b.end",
                ],
            ),
            ("wc.*.end", &["wc.a.end", "wc.b.end"]),
            (
                "wc.*.>",
                &["wc.a.b", "wc.a.b.c", "wc.a.b.end", "wc.a.end", "wc.b.end"],
            ),
            ("*.a", &["other.a", "wc.a", "wcx.a"]),
            ("*", &["wc"]),
            ("*.*.*", &["wc.a.b", "wc.a.end", "wc.b.end", "x.wc.a"]),
            (">", &subjects),
            ("wc.a", &["wc.a"]),
            ("wc.a*b", &["wc.a*b"]),
        ];
        for (filter, expected) in cases {
            let mut sub = subc.subscribe(filter.to_string()).await.unwrap();
            sync(&subc).await;
            for s in subjects {
                publ.publish(s, s.into()).await.unwrap();
            }
            // A marker the filter matches, published last: one publisher's messages
            // arrive in order, so when it is in, everything before it is.
            publ.publish(marker_for(filter), "MARKER".into())
                .await
                .unwrap();
            publ.flush().await.unwrap();
            let mut markers = 0;
            let mut got = Vec::new();
            while markers < 1 {
                let m = next(&mut sub).await;
                if m.subject.starts_with("_INBOX.") {
                    continue; // `sync`'s own round trip, seen by `>`
                }
                if text(&m) == "MARKER" {
                    markers += 1;
                } else {
                    assert_eq!(text(&m), m.subject.as_str());
                    got.push(m.subject.to_string());
                }
            }
            got.sort();
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "filter {filter}");
            sub.unsubscribe().await.unwrap();
        }
    })
    .await;
}

/// A subscriber on its own connection with a plain subscription to a barrier subject.
struct Member {
    client: Client,
    sub: Subscriber,
    barrier: Subscriber,
}

impl Member {
    async fn new(broker: &Broker, subject: &str, queue: Option<&str>, barrier: &str) -> Member {
        let client = connect(broker).await;
        let sub = match queue {
            Some(q) => client
                .queue_subscribe(subject.to_string(), q.to_string())
                .await
                .unwrap(),
            None => client.subscribe(subject.to_string()).await.unwrap(),
        };
        let barrier = client.subscribe(barrier.to_string()).await.unwrap();
        sync(&client).await;
        Member {
            client,
            sub,
            barrier,
        }
    }

    /// Waits for the barrier, then returns the payloads received before it.
    async fn collect(&mut self) -> Vec<String> {
        next(&mut self.barrier).await;
        ready(&mut self.sub).iter().map(text).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_share_and_plain_subscriber_gets_all() {
    const N: usize = 300;
    let broker = Broker::start();
    within(async {
        let subject = "work.items";
        // Published after the work, by the same publisher: it arrives after all of it.
        let barrier = "work.barrier".to_string();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(Member::new(&broker, subject, Some("workers"), &barrier).await);
        }
        let mut plain = Member::new(&broker, subject, None, &barrier).await;
        let publ = connect(&broker).await;
        for i in 0..N {
            publ.publish(subject, i.to_string().into()).await.unwrap();
        }
        publ.publish(barrier.clone(), "barrier".into())
            .await
            .unwrap();
        publ.flush().await.unwrap();

        let all: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(plain.collect().await, all, "the plain subscriber");
        let mut union = Vec::new();
        let mut counts = Vec::new();
        for m in &mut members {
            let got = m.collect().await;
            counts.push(got.len());
            // Each member sees its share in publish order.
            let seqs: Vec<usize> = got.iter().map(|s| s.parse().unwrap()).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order: {seqs:?}");
            union.extend(seqs);
        }
        union.sort();
        assert_eq!(
            union,
            (0..N).collect::<Vec<_>>(),
            "each message to exactly one member (counts {counts:?})"
        );
        for c in &counts {
            assert!(*c >= 60, "unfair distribution: {counts:?}");
        }
        drop(members);
        drop(plain.client);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queue_groups_each_get_every_message_once() {
    const N: usize = 200;
    let broker = Broker::start();
    within(async {
        let subject = "jobs.new";
        let barrier = "jobs.barrier".to_string();
        let mut groups = Vec::new();
        for group in ["alpha", "beta"] {
            let mut members = Vec::new();
            for _ in 0..2 {
                members.push(Member::new(&broker, subject, Some(group), &barrier).await);
            }
            groups.push((group, members));
        }
        let publ = connect(&broker).await;
        for i in 0..N {
            publ.publish(subject, i.to_string().into()).await.unwrap();
        }
        publ.publish(barrier.clone(), "barrier".into())
            .await
            .unwrap();
        publ.flush().await.unwrap();
        for (group, members) in &mut groups {
            let mut union: Vec<usize> = Vec::new();
            let mut counts = Vec::new();
            for m in members.iter_mut() {
                let got = m.collect().await;
                counts.push(got.len());
                union.extend(got.iter().map(|s| s.parse::<usize>().unwrap()));
            }
            union.sort();
            assert_eq!(
                union,
                (0..N).collect::<Vec<_>>(),
                "group {group}: every message exactly once (counts {counts:?})"
            );
            assert!(counts.iter().all(|&c| c > 0), "group {group}: {counts:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply() {
    let broker = Broker::start();
    within(async {
        let responder = connect(&broker).await;
        let mut service = responder.subscribe("svc.echo").await.unwrap();
        sync(&responder).await;
        let task = tokio::spawn({
            let responder = responder.clone();
            async move {
                while let Some(m) = service.next().await {
                    let reply = m.reply.clone().expect("request without a reply subject");
                    let mut answer = b"echo: ".to_vec();
                    answer.extend_from_slice(&m.payload);
                    responder.publish(reply, answer.into()).await.unwrap();
                }
            }
        });
        let requester = connect(&broker).await;
        for i in 0..50 {
            let resp = requester
                .request("svc.echo", format!("req {i}").into())
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(text(&resp), format!("echo: req {i}"));
        }
        // Concurrent requests each get their own answer.
        let answers = futures::future::join_all((0..20).map(|i| {
            let requester = requester.clone();
            async move {
                requester
                    .request("svc.echo", format!("c{i}").into())
                    .await
                    .map(|m| text(&m))
            }
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(a.unwrap(), format!("echo: c{i}"));
        }
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_responders_fails_fast() {
    let broker = Broker::start();
    within(async {
        let client = ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(20)))
            .connect(broker.url())
            .await
            .unwrap();
        for subject in ["svc.nobody", "svc.nobody.else"] {
            let start = Instant::now();
            let err = client
                .request(subject, "anyone?".into())
                .await
                .expect_err("a request nobody listens to succeeded");
            assert_eq!(
                err.kind(),
                async_nats::RequestErrorKind::NoResponders,
                "{err}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no-responders took {:?}",
                start.elapsed()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip() {
    // With the sequence headers on, to see a real NATS client read them too.
    let broker = Broker::with_args(&["--sequence-headers"]);
    within(async {
        let publ = connect(&broker).await;
        let subc = connect(&broker).await;
        let mut sub = subc.subscribe("hdr.test").await.unwrap();
        sync(&subc).await;

        let mut headers = HeaderMap::new();
        headers.insert("X-Multi", "one");
        headers.append("X-Multi", "two");
        headers.append("X-Multi", "three");
        headers.insert("X-Single", "a value with spaces");
        headers.insert("Nats-Msg-Id", "id-42");
        publ.publish_with_headers("hdr.test", headers.clone(), "body".into())
            .await
            .unwrap();
        // Headers and an empty payload.
        let mut only = HeaderMap::new();
        only.insert("X-Only", "headers");
        publ.publish_with_headers("hdr.test", only, Bytes::new())
            .await
            .unwrap();
        publ.flush().await.unwrap();

        let m = next(&mut sub).await;
        assert_eq!(text(&m), "body");
        let h = m.headers.expect("headers were lost");
        let multi: Vec<String> = h.get_all("X-Multi").map(|v| v.to_string()).collect();
        assert_eq!(multi, ["one", "two", "three"]);
        assert_eq!(
            h.get("X-Single").map(|v| v.to_string()).as_deref(),
            Some("a value with spaces")
        );
        assert_eq!(
            h.get("Nats-Msg-Id").map(|v| v.to_string()).as_deref(),
            Some("id-42")
        );
        // Where the broker stored it, readable by a real NATS client.
        let seq: u64 = h
            .get("Tern-Seq")
            .expect("a stored message's sequence")
            .as_str()
            .parse()
            .unwrap();
        assert!(seq >= 1);
        assert!(h.get("Tern-Shard").is_some());
        assert_eq!(m.status, None);

        let m = next(&mut sub).await;
        assert!(m.payload.is_empty());
        let h = m.headers.expect("headers were lost");
        assert_eq!(
            h.get("X-Only").map(|v| v.to_string()).as_deref(),
            Some("headers")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_after_max_messages() {
    let broker = Broker::start();
    within(async {
        let client = connect(&broker).await;
        let mut sub = client.subscribe("cap.three").await.unwrap();
        sub.unsubscribe_after(3).await.unwrap();
        sync(&client).await;
        let publ = connect(&broker).await;
        for i in 0..10 {
            publ.publish("cap.three", i.to_string().into())
                .await
                .unwrap();
        }
        publ.flush().await.unwrap();
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            got.push(text(&m));
        }
        assert_eq!(got, ["0", "1", "2"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_client_does_not_get_its_own_messages() {
    let broker = Broker::start();
    within(async {
        let quiet = ConnectOptions::new()
            .no_echo()
            .connect(broker.url())
            .await
            .unwrap();
        let other = connect(&broker).await;
        let mut quiet_sub = quiet.subscribe("echo.test").await.unwrap();
        let mut other_sub = other.subscribe("echo.test").await.unwrap();
        // (A round trip for a client without echo: a request nobody answers comes back as
        // a no-responders status.)
        let err = quiet
            .request(quiet.new_inbox(), "sync".into())
            .await
            .expect_err("nobody should answer");
        assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
        sync(&other).await;

        quiet
            .publish("echo.test", "from quiet".into())
            .await
            .unwrap();
        quiet.flush().await.unwrap();
        assert_eq!(text(&next(&mut other_sub).await), "from quiet");
        // `other` publishes after it got the quiet client's message, so the shard routed
        // that one first: the quiet client's first message must be other's.
        other
            .publish("echo.test", "from other".into())
            .await
            .unwrap();
        other.flush().await.unwrap();
        assert_eq!(text(&next(&mut quiet_sub).await), "from other");
        // Echo is on by default: `other` gets its own message.
        assert_eq!(text(&next(&mut other_sub).await), "from other");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_maximum_payloads() {
    const MAX: usize = 1024 * 1024;
    let broker = Broker::start();
    within(async {
        let publ = connect(&broker).await;
        assert_eq!(publ.server_info().max_payload, MAX);
        let subc = connect(&broker).await;
        let mut sub = subc.subscribe("size.test").await.unwrap();
        sync(&subc).await;

        publ.publish("size.test", Bytes::new()).await.unwrap();
        let big: Bytes = (0..MAX)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>()
            .into();
        publ.publish("size.test", big.clone()).await.unwrap();
        // One byte over is refused (by the client, or else by the server).
        let over = Bytes::from(vec![b'o'; MAX + 1]);
        let refused = publ.publish("size.test", over).await;
        if let Err(e) = &refused {
            assert_eq!(
                e.kind(),
                async_nats::client::PublishErrorKind::MaxPayloadExceeded
            );
        }
        let after = if refused.is_ok() {
            // The client let it through: the server must close that connection, so the
            // marker goes through a fresh one.
            connect(&broker).await
        } else {
            publ.clone()
        };
        after.publish("size.test", "after".into()).await.unwrap();
        after.flush().await.unwrap();

        let m = next(&mut sub).await;
        assert!(m.payload.is_empty(), "{} bytes", m.payload.len());
        let m = next(&mut sub).await;
        assert_eq!(m.payload.len(), MAX);
        assert!(m.payload == big, "the 1 MiB payload was altered");
        let m = next(&mut sub).await;
        assert_eq!(text(&m), "after", "the oversize message was delivered");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Order and completeness across workers and shards (raw TCP, for exact placement)
// ---------------------------------------------------------------------------------------

/// Publisher on worker `publisher`, subscriber on worker 1: 100,000 messages arrive
/// complete and in order.
fn in_order_across_workers(publisher: usize) {
    const N: usize = 100_000;
    let broker = Broker::start();
    let workers = broker.workers();
    assert_eq!(workers, 2);
    let subject = "seq";
    let mut sub = RawClient::connect_on_worker(broker.addr(), 1, workers);
    let mut publ = RawClient::connect_on_worker(broker.addr(), publisher, workers);
    sub.send(format!("SUB {subject} 1\r\n").as_bytes());
    sub.ping_pong();

    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        for i in 0..N {
            let m = sub.read_msg(Duration::from_secs(30));
            let seq: usize = std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad payload {:?}", m.payload));
            assert_eq!(seq, i, "message out of order or lost");
        }
        // Nothing more: no duplicates.
        sub.ping_pong();
    });
    let mut batch = Vec::with_capacity(64 * 1024);
    for i in 0..N {
        let payload = i.to_string();
        batch.extend_from_slice(
            format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()).as_bytes(),
        );
        if batch.len() > 32 * 1024 {
            publ.send(&batch);
            batch.clear();
        }
    }
    publ.send(&batch);
    publ.ping_pong();
    reader.join().expect("subscriber failed");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn hundred_thousand_in_order_from_another_worker() {
    in_order_across_workers(0);
}

#[test]
fn hundred_thousand_in_order_on_the_same_worker() {
    in_order_across_workers(1);
}

/// A subscription the subscriber has seen confirmed (its `PONG`) gets every message
/// published after that, even from a connection that is publishing continuously on another
/// worker: the subscriber signals the publisher after its `PONG`, and the first message the
/// publisher sends after the signal, and all later ones, must be delivered.
#[test]
fn subscription_confirmed_by_pong_gets_everything_published_after() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    const ROUNDS: usize = 2000;
    let broker = Broker::start();
    let workers = broker.workers();
    // Publisher on worker 0, where its messages are routed; subscriber on worker 1.
    let subject = "causal".to_string();
    let mut sub = RawClient::connect_on_worker(broker.addr(), 1, workers);
    let publ = RawClient::connect_on_worker(broker.addr(), 0, workers);

    let subscribed = Arc::new(AtomicBool::new(false));
    // The first sequence number published after `subscribed` was seen (0: not yet).
    let first_after = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (subscribed, first_after, stop) = (
            Arc::clone(&subscribed),
            Arc::clone(&first_after),
            Arc::clone(&stop),
        );
        let subject = subject.clone();
        std::thread::spawn(move || {
            let mut stream = publ.stream.try_clone().expect("clone");
            let mut seq = 0u64;
            let start = Instant::now();
            while !stop.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(600) {
                seq += 1;
                // Continuously, but paced (about 64k messages/s at most): what the race
                // needs is messages in flight at every moment, not a backlog the
                // subscriber must read through in every round.
                if seq.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if subscribed.load(Ordering::Acquire) && first_after.load(Ordering::Acquire) == 0 {
                    first_after.store(seq, Ordering::Release);
                }
                let p = seq.to_string();
                if stream
                    .write_all(format!("PUB {subject} {}\r\n{p}\r\n", p.len()).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        })
    };

    let mut misses = Vec::new();
    for round in 0..ROUNDS {
        first_after.store(0, Ordering::Release);
        // The previous round's subscription goes, so the fan-out stays at one.
        let unsub = match round {
            0 => String::new(),
            r => format!("UNSUB {}\r\n", r - 1),
        };
        sub.send(format!("{unsub}SUB {subject} {round}\r\nPING\r\n").as_bytes());
        // Deliveries for the previous sid may still be on their way before the PONG.
        loop {
            let line = sub.read_until(b"\r\n", common::WAIT);
            if line == b"PONG\r\n" {
                break;
            }
            assert!(line.starts_with(b"MSG "), "{}", common::show(&line));
            sub.read_until(b"\r\n", common::WAIT);
        }
        subscribed.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(10);
        while first_after.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "publisher stalled");
            std::thread::yield_now();
        }
        subscribed.store(false, Ordering::Release);
        let want = first_after.load(Ordering::Acquire);
        let sid = round.to_string();
        let got = loop {
            let m = sub.read_msg(Duration::from_secs(10));
            if m.sid != sid {
                continue;
            }
            let seq: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap();
            if seq >= want {
                break seq;
            }
        };
        if got != want {
            misses.push(format!(
                "round {round}: first message published after the PONG was {want}, \
                 first delivered {got}"
            ));
        }
        sub.send(format!("UNSUB {round}\r\n").as_bytes());
    }
    stop.store(true, Ordering::Release);
    publisher.join().expect("publisher failed");
    assert!(
        misses.is_empty(),
        "messages published after the subscription was confirmed were lost in {} of {ROUNDS} \
         rounds:\n{}",
        misses.len(),
        misses.join("\n")
    );
}

/// `major.minor.patch` as numbers, or `None` when `v` is not a plain semantic version.
fn semver(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_reports_a_nats_version_clients_accept_and_terns_own() {
    within(async {
        let broker = Broker::with_args(&["--monitor", "127.0.0.1:0"]);
        // What a NATS library compares: a semantic version at least 2.2.0, the release
        // that brought headers and no-responders.
        let client = connect(&broker).await;
        let version = client.server_info().version;
        let parsed = semver(&version).unwrap_or_else(|| panic!("not semver: {version}"));
        assert!(parsed >= (2, 2, 0), "version {version} is below 2.2.0");

        let raw = RawClient::connect(broker.addr());
        assert_eq!(raw.info["version"], version.as_str());
        assert_eq!(raw.info["tern_version"], env!("CARGO_PKG_VERSION"));

        let varz = broker.varz();
        assert_eq!(varz["version"], version.as_str());
        assert_eq!(varz["tern_version"], env!("CARGO_PKG_VERSION"));
    })
    .await;
}

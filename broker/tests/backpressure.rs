//! Subscriber queues under backpressure, end to end against the real `ternd`: a subscriber
//! that does not read gets its queue's overflow dropped lowest priority first and is told
//! exactly what it lost; coalesced messages keep only the newest value; a lossless
//! subscription overflows and still receives every message in order; and a subscriber that
//! never reads leaves the broker's memory bounded while others receive everything.
//!
//! The stuck subscribers connect with a small receive buffer and read nothing until the
//! publisher's `PING` has been answered. With one worker, that `PONG` comes after every
//! delivery of what was published before it was queued on the subscriber's connection, so
//! what the subscriber then reads is decided.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{peak_rss, BinClient, Broker, RawClient};
use tern_protocol::binary::{ClientFrame, Publish, ServerFrame, Subscribe};

/// Sends `frames` in one write (the broker reads them as fast as it can).
fn send_all(c: &mut BinClient, frames: impl Iterator<Item = ClientFrame>) {
    let mut out = bytes::BytesMut::new();
    for f in frames {
        tern_protocol::binary::encode_client_frame(&f, &mut out).expect("encodable frame");
    }
    c.send_raw(&out);
}

fn publish(subject: &str, i: u32, size: usize, priority: u8) -> ClientFrame {
    let mut payload = vec![b'x'; size];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    ClientFrame::Publish(Publish {
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        priority,
        payload: Bytes::from(payload),
        ..Default::default()
    })
}

fn index_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("an index"))
}

/// Every sequence the drop notices name, and the count they report.
fn notice_totals(notices: &[tern_protocol::binary::DropNotice]) -> (BTreeSet<u64>, u64) {
    let mut seqs = BTreeSet::new();
    let mut count = 0;
    for n in notices {
        count += n.dropped;
        for r in &n.ranges {
            assert!(r.first <= r.last, "range {r:?}");
            seqs.extend(r.first..=r.last);
        }
    }
    (seqs, count)
}

#[test]
fn overflow_drops_lowest_priority_first_and_the_notice_names_every_drop() {
    const COUNT: u32 = 20_000;
    const SIZE: usize = 1024; // 20 MiB in all: more than socket buffers hold
    let broker = Broker::with_args(&["--workers", "1", "--monitor", "127.0.0.1:0"]);
    let mut sub = BinClient::connect_small_rcvbuf(broker.binary_addr(), 8 * 1024);
    sub.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::from_static(b"feed"),
        max_queue_messages: 100,
        ..Default::default()
    }));
    sub.flush();
    // One message in 200 is urgent: 100 in all, as many as the queue holds.
    let urgent = |i: u32| i.is_multiple_of(200);
    let mut publ = BinClient::connect(broker.binary_addr());
    send_all(
        &mut publ,
        (0..COUNT).map(|i| publish("feed", i, SIZE, if urgent(i) { 7 } else { 0 })),
    );
    publ.flush();

    let mut got = Vec::new();
    let mut notices = Vec::new();
    let mut base = None;
    for frame in sub.flush() {
        match frame {
            ServerFrame::Message(m) => {
                let i = index_of(&m.payload);
                assert_eq!(m.priority, if urgent(i) { 7 } else { 0 });
                // One publisher, one subject, one shard: sequences follow the index.
                let b = *base.get_or_insert(m.sequence - u64::from(i));
                assert_eq!(m.sequence, b + u64::from(i), "message {i}");
                got.push(i);
            }
            ServerFrame::DropNotice(n) => {
                assert_eq!(n.sid, 1);
                notices.push(n);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "deliveries out of order"
    );
    let urgent_got = got.iter().filter(|&&i| urgent(i)).count();
    assert_eq!(urgent_got, 100, "a priority-7 message was dropped");
    let lost: BTreeSet<u64> = {
        let got: BTreeSet<u32> = got.iter().copied().collect();
        let b = base.expect("some messages arrived");
        (0..COUNT)
            .filter(|i| !got.contains(i))
            .map(|i| b + u64::from(i))
            .collect()
    };
    assert!(!lost.is_empty(), "the queue never overflowed");
    let (named, count) = notice_totals(&notices);
    assert_eq!(count, lost.len() as u64, "notices count every drop");
    assert_eq!(named, lost, "notices name exactly the dropped sequences");
    let varz = broker.varz();
    assert_eq!(varz["queue_dropped_msgs"], lost.len() as u64);
    assert_eq!(varz["drop_notices"], notices.len() as u64);
    // And per subscription.
    let connz = broker.monitor_json("/connz?subs=detail");
    let subs: Vec<&serde_json::Value> = connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["subscriptions_list_detail"].as_array())
        .flatten()
        .filter(|s| s["subject"] == "feed")
        .collect();
    assert_eq!(subs.len(), 1, "{connz}");
    assert_eq!(subs[0]["dropped_msgs"], lost.len() as u64);
    assert_eq!(subs[0]["max_queue_msgs"], 100);
    assert_eq!(subs[0]["queued_msgs"], 0, "everything was read");
}

#[test]
fn text_subscribers_see_drops_as_a_message_and_priority_comes_from_a_header() {
    const COUNT: u32 = 20_000;
    const SIZE: usize = 1024;
    let broker = Broker::with_args(&[
        "--workers",
        "1",
        "--no-store",
        "--sub-queue-messages",
        "100",
    ]);
    let mut sub = RawClient::connect_small_rcvbuf(broker.addr(), 8 * 1024);
    sub.read_info();
    sub.send(b"SUB feed 7\r\n");
    sub.ping_pong();
    let urgent = |i: u32| i.is_multiple_of(200);
    let mut publ = RawClient::connect(broker.addr());
    publ.send(b"CONNECT {\"headers\":true}\r\n");
    let mut batch = Vec::new();
    for i in 0..COUNT {
        let mut payload = vec![b'x'; SIZE];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        if urgent(i) {
            let h = b"NATS/1.0\r\nTern-Priority: 7\r\n\r\n";
            batch.extend_from_slice(
                format!("HPUB feed {} {}\r\n", h.len(), h.len() + SIZE).as_bytes(),
            );
            batch.extend_from_slice(h);
        } else {
            batch.extend_from_slice(format!("PUB feed {SIZE}\r\n").as_bytes());
        }
        batch.extend_from_slice(&payload);
        batch.extend_from_slice(b"\r\n");
    }
    // A priority out of range is refused, and the connection carries on.
    batch.extend_from_slice(b"HPUB feed 31 31\r\nNATS/1.0\r\nTern-Priority: 9\r\n\r\n\r\n");
    publ.send(&batch);
    publ.expect_within(
        b"-ERR 'Invalid Tern-Priority header '9': must be 0 to 7'\r\n",
        Duration::from_secs(30),
    );
    publ.ping_pong();

    let mut got = 0u32;
    let mut urgent_got = 0;
    let mut dropped = 0u64;
    let mut last = None;
    while got as u64 + dropped < u64::from(COUNT) {
        let m = sub.read_msg(Duration::from_secs(10));
        assert_eq!(m.sid, "7");
        if m.subject == "$TERN.DROPPED" {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON notice");
            dropped += v["dropped"].as_u64().expect("a count");
            assert!(!v["ranges"].as_array().expect("ranges").is_empty());
            continue;
        }
        assert_eq!(m.subject, "feed");
        let i = index_of(&m.payload);
        assert!(last < Some(i), "out of order");
        last = Some(i);
        got += 1;
        urgent_got += usize::from(urgent(i));
    }
    assert!(dropped > 0, "the queue never overflowed");
    assert_eq!(urgent_got, 100, "a Tern-Priority: 7 message was dropped");
    sub.ping_pong();
}

#[test]
fn coalesced_messages_keep_the_newest_value_in_the_first_ones_place() {
    const FILLER: u32 = 3_000;
    const SIZE: usize = 8 * 1024; // 24 MiB of filler: the socket cannot hold it all
    let broker = Broker::with_args(&["--workers", "1", "--monitor", "127.0.0.1:0"]);
    let mut sub = BinClient::connect_small_rcvbuf(broker.binary_addr(), 8 * 1024);
    sub.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::from_static(b"doc.>"),
        ..Default::default()
    }));
    sub.flush();
    let mut publ = BinClient::connect(broker.binary_addr());
    let cursor = |who: &str, n: u32| {
        ClientFrame::Publish(Publish {
            subject: Bytes::from_static(b"doc.cursor"),
            coalescing_key: Some(Bytes::from(format!("cursor:{who}"))),
            payload: Bytes::from(format!("{who} {n}")),
            ..Default::default()
        })
    };
    send_all(
        &mut publ,
        (0..FILLER)
            .map(|i| publish("doc.edit", i, SIZE, 0))
            .chain((0..500).flat_map(|n| [cursor("ann", n), cursor("bob", n)]))
            .chain(std::iter::once(publish("doc.edit", FILLER, SIZE, 0))),
    );
    publ.flush();

    let mut edits = 0;
    let mut cursors = Vec::new();
    for frame in sub.flush() {
        let ServerFrame::Message(m) = frame else {
            panic!("unexpected {frame:?}");
        };
        match &m.subject[..] {
            b"doc.edit" => {
                assert!(cursors.is_empty() || index_of(&m.payload) == FILLER);
                edits += 1;
            }
            b"doc.cursor" => cursors.push(String::from_utf8(m.payload.to_vec()).unwrap()),
            other => panic!("unexpected subject {other:?}"),
        }
    }
    assert_eq!(edits, FILLER + 1, "nothing without a key is lost");
    // Some cursor updates may have gone out before the queue backed up; from then on,
    // one queued message per key took every newer value, in its place.
    let n = cursors.len();
    assert!(n >= 2, "{cursors:?}");
    assert_eq!(&cursors[n - 2..], ["ann 499", "bob 499"], "{cursors:?}");
    let coalesced = broker.varz()["coalesced_msgs"].as_u64().unwrap();
    assert_eq!(
        coalesced as usize + n,
        1000,
        "every update delivered or coalesced"
    );
}

/// Reads `count` messages of a lossless subscription, message `i` having been published
/// to `subjects[i % subjects.len()]`: each once, in publish order per subject, and nothing
/// after the last (answering the broker's PINGs meanwhile). With `pace` (n, rest), it rests
/// that long after every n messages.
fn read_every_message_once(
    sub: &mut BinClient,
    subjects: &[String],
    count: u32,
    pace: Option<(u32, Duration)>,
) {
    let n = subjects.len();
    let mut next = vec![0u32; n];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < count {
        assert!(Instant::now() < deadline, "only {got} of {count} arrived");
        match sub.try_read_frame(Duration::from_secs(10)) {
            Ok(ServerFrame::Message(m)) => {
                let i = index_of(&m.payload);
                let s = i as usize % n;
                assert_eq!(m.subject, subjects[s].as_bytes());
                assert_eq!(i, next[s] * n as u32 + s as u32, "gap or duplicate");
                next[s] += 1;
                got += 1;
                if let Some((every, rest)) = pace {
                    if got % every == 0 {
                        std::thread::sleep(rest);
                    }
                }
            }
            Ok(ServerFrame::Ping) => sub.send(&ClientFrame::Pong),
            Ok(other) => panic!("a lossless subscription got {other:?}"),
            Err(end) => panic!("after {got} messages: {end:?}"),
        }
    }
    let after = sub.flush();
    assert!(after.is_empty(), "after every message: {after:?}");
}

#[test]
fn a_lossless_subscription_overflows_and_still_gets_every_message_in_order() {
    const COUNT: u32 = 20_000;
    const SIZE: usize = 1024;
    let broker = Broker::with_args(&["--log-size", "64MiB", "--monitor", "127.0.0.1:0"]);
    let workers = broker.workers();
    // One subject per shard, each published on that shard's worker, under one wildcard:
    // the fall-back spans both.
    let subjects: Vec<String> = (0..workers).map(|s| format!("ll.{s}")).collect();
    let mut sub = BinClient::connect_small_rcvbuf(broker.binary_addr(), 8 * 1024);
    sub.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::from_static(b"ll.*"),
        lossless: true,
        max_queue_messages: 64,
        ..Default::default()
    }));
    sub.flush();
    for (w, subject) in subjects.iter().enumerate() {
        let mut publ = BinClient::connect_on_worker(broker.binary_addr(), w, workers);
        send_all(
            &mut publ,
            (0..COUNT)
                .filter(|i| *i as usize % workers == w)
                .map(|i| publish(subject, i, SIZE, 0)),
        );
        publ.flush();
    }

    read_every_message_once(&mut sub, &subjects, COUNT, None);
    let varz = broker.varz();
    assert!(varz["lossless_fallbacks"].as_u64().unwrap() >= 1, "{varz}");
    assert_eq!(varz["queue_dropped_msgs"], 0);
}

/// A publisher far faster than a lossless subscriber that keeps reading, through a ring
/// eight times too small for what it publishes: the subscriber's fall-back would be
/// overwritten before it read it (a gap), so the publisher is held back until the
/// subscriber has caught up enough, and every message arrives.
#[test]
fn a_publisher_is_held_back_rather_than_let_the_ring_overtake_a_lossless_fall_back() {
    // A queue of 64: it overflows at once, and the subscription falls back to the log.
    let varz = outrun_a_lossless_subscriber(1, &[], 0, 64);
    assert!(varz["lossless_fallbacks"].as_u64().unwrap() >= 1, "{varz}");
}

/// The same with the publisher on another worker than the subscriber: the fall-back it
/// would overtake is in the publisher's worker's shard, which holds it there.
#[test]
fn a_publisher_on_another_worker_is_held_back_for_a_lossless_fall_back() {
    let varz = outrun_a_lossless_subscriber(2, &[], 0, 64);
    assert!(varz["lossless_fallbacks"].as_u64().unwrap() >= 1, "{varz}");
}

/// The same through a lossless subscription still catching up on history: its catch-up
/// waits for the slow reader (past half a small `max_pending`, in small steps that never
/// reach all of it, so it does not fall back), and the ring must not overtake it either.
#[test]
fn a_publisher_is_held_back_rather_than_let_the_ring_overtake_a_lossless_catch_up() {
    // (Once caught up, it may still fall back when live messages come faster than it reads:
    // that part is the test above.)
    let args = ["--max-pending", "512KiB", "--replay-bytes", "32KiB"];
    outrun_a_lossless_subscriber(1, &args, 600, 1 << 20);
}

/// A client with a small receive buffer and a lossless subscription (sid 1) to `subject`
/// from the first record the log holds, its queue `queue` messages long.
fn lossless_from_the_start(broker: &Broker, subject: &'static str, queue: u32) -> BinClient {
    let mut sub = BinClient::connect_small_rcvbuf(broker.binary_addr(), 8 * 1024);
    let epoch = sub.welcome.log_epoch;
    sub.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::from_static(subject.as_bytes()),
        lossless: true,
        max_queue_messages: queue,
        start: tern_protocol::binary::StartPosition::Resume(tern_protocol::binary::ResumeToken {
            epoch,
            last_sequences: Vec::new(),
        }),
        ..Default::default()
    }));
    sub
}

/// On a broker of `workers` workers (each with a 1 MiB ring, so ternd fits its lanes
/// between workers to it, `fit_lanes_to_ring`: with the default 4 MiB ones, the
/// deliveries in flight when the queue overflows overtook the fall-back's start in about
/// one run in four): `history` messages of 1 KiB,
/// then a lossless subscription from the first of them (queue `queue` messages long),
/// then 8,000 more messages published as fast as the broker reads them (by a publisher on
/// another worker than the subscriber's, when there is one and no history), read at most
/// 32 MB/s: every message arrives once, in order, and the publisher was held back.
/// Returns `/varz`.
fn outrun_a_lossless_subscriber(
    workers: usize,
    args: &[&str],
    history: u32,
    queue: u32,
) -> serde_json::Value {
    const COUNT: u32 = 8_000;
    const SIZE: usize = 1024;
    // Stalls long and patient enough that a slow machine does not end them.
    let workers_arg = workers.to_string();
    let mut all = vec![
        "--workers",
        &workers_arg,
        "--log-size",
        "1MiB",
        "--max-payload",
        "64KiB",
        "--max-publisher-stall",
        "60s",
        "--publisher-stall-window",
        "2s",
        "--publisher-stall-min-drain",
        "1KiB",
        "--monitor",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let broker = Broker::with_args(&all);
    let subjects = ["held.0".to_string()];
    let addr = broker.binary_addr();
    let mut early = (history > 0).then(|| {
        let mut publ = BinClient::connect(addr);
        send_all(
            &mut publ,
            (0..history).map(|i| publish("held.0", i, SIZE, 0)),
        );
        publ.flush();
        publ
    });
    let mut sub = lossless_from_the_start(&broker, "held.0", queue);
    let other = (sub.worker(workers) + 1) % workers;
    let mut publ = early
        .take()
        .unwrap_or_else(|| BinClient::connect_on_worker(addr, other, workers));
    // 8 MiB in one stream, on its own thread: it is written as fast as the broker reads it.
    let publisher = std::thread::spawn(move || {
        send_all(
            &mut publ,
            (history..history + COUNT).map(|i| publish("held.0", i, SIZE, 0)),
        );
        publ.flush();
    });
    // A reader slower than the publisher, but one that never stops: 2 ms of rest every 64
    // messages (at most 32 MB/s).
    let pace = (64, Duration::from_millis(2));
    read_every_message_once(&mut sub, &subjects, history + COUNT, Some(pace));
    publisher.join().expect("the publisher");
    let varz = broker.varz();
    assert!(varz["lossless_holds"].as_u64().unwrap() >= 1, "{varz}");
    assert_eq!(varz["queue_dropped_msgs"], 0);
    varz
}

#[test]
fn a_lossless_catch_up_merged_over_shards_falls_back_and_still_gets_every_message() {
    const COUNT: u32 = 20_000;
    const SIZE: usize = 1024;
    let broker = Broker::with_args(&["--log-size", "64MiB", "--monitor", "127.0.0.1:0"]);
    let workers = broker.workers();
    // One subject per shard, each published on that shard's worker.
    let subjects: Vec<String> = (0..workers).map(|s| format!("lm.{s}")).collect();
    // The history first: the subscription catches up through the merge of every shard's
    // log, and overflows its queue in the middle of it.
    let mut publishers: Vec<BinClient> = (0..workers)
        .map(|w| BinClient::connect_on_worker(broker.binary_addr(), w, workers))
        .collect();
    for (w, publ) in publishers.iter_mut().enumerate() {
        send_all(
            publ,
            (0..COUNT)
                .filter(|i| *i as usize % workers == w)
                .map(|i| publish(&subjects[w], i, SIZE, 0)),
        );
        publ.flush();
    }
    let mut sub = lossless_from_the_start(&broker, "lm.*", 64);
    // Not read for a while: the socket and the queue fill.
    std::thread::sleep(Duration::from_millis(300));
    read_every_message_once(&mut sub, &subjects, COUNT, None);
    // It went live on every shard: what comes now arrives too.
    for (s, (subject, publ)) in subjects.iter().zip(&mut publishers).enumerate() {
        publ.send(&publish(subject, COUNT + s as u32, 8, 0));
        publ.flush();
    }
    let mut live = 0;
    while live < workers {
        match sub.read_frame() {
            ServerFrame::Message(m) => {
                assert!(index_of(&m.payload) >= COUNT);
                live += 1;
            }
            ServerFrame::Ping => sub.send(&ClientFrame::Pong),
            other => panic!("unexpected {other:?}"),
        }
    }
    let varz = broker.varz();
    assert!(varz["lossless_fallbacks"].as_u64().unwrap() >= 1, "{varz}");
    assert_eq!(varz["queue_dropped_msgs"], 0);
}

/// The bound this test holds ternd to while 1 GiB goes past a subscriber that never reads:
/// its subscription queue (`--sub-queue-bytes`, 64 MiB by default, which counts each
/// message's bookkeeping too; resident, up to a fifth more: jemalloc serves a 64 KiB
/// message plus its subject from its 80 KiB size class), one write buffer, what is in
/// flight to the fast subscriber, the pages jemalloc keeps for a second after they are
/// freed, and the process itself (under 20 MiB). Without subscription queues the stuck
/// subscriber's buffer grew to `max_pending` (64 MiB) and it was closed. (Measured: 82–90
/// MiB with glibc's allocator, 86–121 MiB with jemalloc.)
const RSS_BOUND: u64 = 144 * 1024 * 1024;

#[test]
fn a_subscriber_that_never_reads_leaves_memory_bounded_and_others_get_everything() {
    const SIZE: usize = 64 * 1024;
    const COUNT: u32 = 16 * 1024; // 1 GiB
    let broker = Broker::with_args(&["--no-store", "--monitor", "127.0.0.1:0"]);
    let pid = broker.pid().expect("ternd runs");
    let mut stuck = RawClient::connect_small_rcvbuf(broker.addr(), 8 * 1024);
    stuck.read_info();
    stuck.send(b"SUB big 1\r\n");
    stuck.ping_pong();
    let mut fast = RawClient::connect(broker.addr());
    fast.send(b"SUB big 1\r\n");
    fast.ping_pong();
    // The publisher stays at most 8 MiB ahead of the fast subscriber, so what the broker
    // holds for the fast one stays small and the bound is about the stuck one.
    let (progress, seen) = std::sync::mpsc::channel::<u32>();
    let reader = std::thread::spawn(move || {
        for i in 0..COUNT {
            let m = fast.read_msg(Duration::from_secs(30));
            assert_eq!(m.payload.len(), SIZE);
            assert_eq!(
                index_of(&m.payload),
                i,
                "the fast subscriber lost or reordered"
            );
            let _ = progress.send(i + 1);
        }
    });
    let mut publ = RawClient::connect(broker.addr());
    let mut payload = vec![b'x'; SIZE];
    let mut received = 0;
    for i in 0..COUNT {
        payload[..4].copy_from_slice(&i.to_be_bytes());
        let mut op = format!("PUB big {SIZE}\r\n").into_bytes();
        op.extend_from_slice(&payload);
        op.extend_from_slice(b"\r\n");
        publ.send(&op);
        while received + 128 < i + 1 {
            match seen.recv_timeout(Duration::from_secs(30)) {
                Ok(n) => received = n,
                Err(_) => break, // the reader failed; its join below says why
            }
        }
    }
    publ.ping_pong();
    reader.join().expect("the fast subscriber got everything");
    let peak = peak_rss(pid);
    eprintln!("ternd peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < RSS_BOUND,
        "ternd's peak RSS {} MiB is over the {} MiB bound",
        peak >> 20,
        RSS_BOUND >> 20
    );
    let varz = broker.varz();
    assert!(varz["queue_dropped_msgs"].as_u64().unwrap() > 0);
    assert_eq!(varz["slow_consumers"], 0, "nobody is closed by default");
    // The stuck subscriber is still there, and gets messages once it reads.
    let m = stuck.read_msg(Duration::from_secs(10));
    assert_eq!(m.subject, "big");
}

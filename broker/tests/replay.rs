//! `$TERN.REPLAY` against the real `ternd`: a burst of catch-ups is bounded (the excess is
//! refused with a `409` status message on its inbox) and does not keep another client's
//! publish from reaching its subscriber, `{"last":0}` replays nothing but the end markers,
//! and a bad request's `400` cannot smuggle header lines in.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BinClient, Broker, RawClient, RawMsg, WAIT};
use tern_protocol::binary::{ClientFrame, Publish};

/// The value of header `name` in a NATS header block.
fn header(block: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(block)
        .split("\r\n")
        .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

/// The header block's lines, without the empty line that ends it.
fn lines(block: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(block)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `PUB $TERN.REPLAY <inbox>` with `body`.
fn replay_request(inbox: &str, body: &str) -> Vec<u8> {
    format!("PUB $TERN.REPLAY {inbox} {}\r\n{body}\r\n", body.len()).into_bytes()
}

/// A text client with headers on, subscribed to `inboxes` (sid 1).
fn replayer(broker: &Broker, inboxes: &str) -> RawClient {
    let mut c = RawClient::connect(broker.addr());
    c.send(format!("CONNECT {{\"headers\":true}}\r\nSUB {inboxes} 1\r\n").as_bytes());
    c.ping_pong();
    c
}

/// Fills the logs with `n` messages of `size` bytes on `hist.*`, acknowledged by a PING.
fn history(broker: &Broker, n: usize, size: usize) {
    let mut p = BinClient::connect(broker.binary_addr());
    let payload = Bytes::from(vec![b'h'; size]);
    for i in 0..n {
        p.send(&ClientFrame::Publish(Publish {
            subject: Bytes::from(format!("hist.{}", i % 64)),
            payload: payload.clone(),
            ..Default::default()
        }));
    }
    p.flush();
}

#[test]
fn a_burst_of_replays_is_bounded_and_live_delivery_goes_on() {
    let broker = Broker::with_args(&["--monitor", "127.0.0.1:0"]);
    let workers = broker.workers();
    // About 10 MiB of history: both shards' 4 MiB logs full.
    history(&broker, 10_000, 1024);

    // 100 catch-ups of everything, in one write (about 6 KB), from a client that does not
    // read for now.
    let mut flood = replayer(&broker, "_INBOX.flood.*");
    let mut burst = Vec::new();
    for i in 0..100 {
        burst.extend(replay_request(
            &format!("_INBOX.flood.{i}"),
            r#"{"subject":">"}"#,
        ));
    }
    flood.send(&burst);

    // Meanwhile another client's publishes reach their subscriber.
    let mut sub = RawClient::connect(broker.addr());
    sub.send(b"SUB live.x 1\r\n");
    sub.ping_pong();
    let mut publisher = RawClient::connect(broker.addr());
    for round in 0..5 {
        let payload = format!("round-{round}");
        publisher.send(format!("PUB live.x {}\r\n{payload}\r\n", payload.len()).as_bytes());
        let m = sub.read_msg(WAIT);
        assert_eq!(m.payload, payload.as_bytes());
    }

    // Every request got either its whole catch-up (an end marker from every shard) or a
    // 409 on its inbox. The 100 arrived in one read, before any catch-up could end: exactly
    // max_replays_per_conn (4) ran.
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut records = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused.len() + ends.values().filter(|&&n| n == workers).count() < 100 {
        assert!(
            Instant::now() < deadline,
            "still waiting: {} refused, {ends:?}",
            refused.len()
        );
        let m: RawMsg = flood.read_msg(WAIT);
        let h = m
            .headers
            .clone()
            .expect("status messages and replays carry headers");
        let status = lines(&h)[0].clone();
        if status.starts_with("NATS/1.0 409") {
            refused.push((m.subject, header(&h, "Tern-Error").unwrap_or_default()));
        } else if header(&h, "Tern-Replay-Done").is_some() {
            *ends.entry(m.subject).or_default() += 1;
        } else {
            assert!(
                header(&h, "Tern-Seq").is_some(),
                "a replayed record: {status}"
            );
            records += 1;
        }
    }
    assert_eq!(refused.len(), 96, "{ends:?}");
    assert_eq!(ends.len(), 4, "{ends:?}");
    assert!(records > 0);
    let (_, why) = &refused[0];
    assert!(why.contains("max_replays_per_conn"), "{why}");
    assert!(why.contains("4 replays already in progress"), "{why}");

    // Counted; and once they are over, no slot stays taken.
    let deadline = Instant::now() + WAIT;
    loop {
        let v = broker.varz();
        if v["replays_active"].as_u64() == Some(0) {
            assert_eq!(v["replays_refused"]["connection"].as_u64(), Some(96), "{v}");
            assert_eq!(v["replays_refused"]["server"].as_u64(), Some(0), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "replays still active: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The connection can ask again.
    flood.send(&replay_request(
        "_INBOX.flood.again",
        r#"{"subject":"hist.1","last":1}"#,
    ));
    assert_eq!(
        replayed_records(&mut flood, broker.workers()),
        1,
        "replayed, not refused"
    );
}

#[test]
fn replays_over_the_broker_wide_limit_are_refused_until_one_ends() {
    let broker = Broker::with_args(&["--max-replays", "1", "--monitor", "127.0.0.1:0"]);
    history(&broker, 2_000, 1024);
    let mut a = replayer(&broker, "_INBOX.a.*");
    // Two requests in one write: the second finds the only slot taken.
    let mut burst = replay_request("_INBOX.a.1", r#"{"subject":"hist.>"}"#);
    burst.extend(replay_request("_INBOX.a.2", r#"{"subject":"hist.>"}"#));
    a.send(&burst);
    let mut refusal = None;
    let mut markers = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while refusal.is_none() || markers < broker.workers() {
        assert!(Instant::now() < deadline);
        let m = a.read_msg(WAIT);
        let h = m.headers.unwrap();
        if lines(&h)[0].starts_with("NATS/1.0 409") {
            assert_eq!(m.subject, "_INBOX.a.2");
            refusal = header(&h, "Tern-Error");
        } else if header(&h, "Tern-Replay-Done").is_some() {
            assert_eq!(m.subject, "_INBOX.a.1");
            markers += 1;
        }
    }
    let why = refusal.unwrap();
    assert!(why.contains("max_replays"), "{why}");
    assert!(why.contains("on the server"), "{why}");
    // The slot came back: a request now runs.
    let deadline = Instant::now() + WAIT;
    while broker.varz()["replays_active"].as_u64() != Some(0) {
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.send(&replay_request(
        "_INBOX.a.3",
        r#"{"subject":"hist.1","last":1}"#,
    ));
    assert_eq!(replayed_records(&mut a, broker.workers()), 1);
}

/// Reads one catch-up's answer to the end (an end marker from each of `workers` shards),
/// failing on a status reply; returns how many records came.
fn replayed_records(c: &mut RawClient, workers: usize) -> usize {
    let (mut records, mut ends) = (0, 0);
    while ends < workers {
        let h = c.read_msg(WAIT).headers.expect("replies carry headers");
        assert!(
            lines(&h)[0] == "NATS/1.0",
            "a status reply: {:?}",
            lines(&h)
        );
        if header(&h, "Tern-Replay-Done").is_some() {
            ends += 1;
        } else {
            assert!(header(&h, "Tern-Seq").is_some());
            records += 1;
        }
    }
    records
}

#[test]
fn last_zero_replays_nothing_but_the_end_markers() {
    let broker = Broker::start();
    let workers = broker.workers();
    history(&broker, 500, 100);
    let mut c = replayer(&broker, "_INBOX.z.*");
    c.send(&replay_request(
        "_INBOX.z.1",
        r#"{"subject":"hist.>","last":0}"#,
    ));
    // Records would come before their shard's end marker: the first `workers` messages
    // being end markers means none came.
    for _ in 0..workers {
        let m = c.read_msg(WAIT);
        let h = m.headers.expect("an end marker");
        assert!(
            header(&h, "Tern-Replay-Done").is_some(),
            "only end markers: {}",
            String::from_utf8_lossy(&h)
        );
        assert_eq!(header(&h, "Tern-Replayed").as_deref(), Some("0"));
    }
}

/// A room's history over several shards comes in the order its records were stored, "last N"
/// gives the newest N over all shards, and the end markers come after every record.
#[test]
fn a_wildcard_replay_comes_in_stored_order_then_the_end_markers() {
    let broker = Broker::start();
    let workers = broker.workers();
    // Two members of one room, on different workers: each one's messages are stored by
    // its worker's shard.
    let addr = broker.binary_addr();
    let mut members = [
        BinClient::connect_on_worker(addr, 0, workers),
        BinClient::connect_on_worker(addr, 1, workers),
    ];
    for i in 0..24u64 {
        // Runs of 1 to 3 on one shard: neither shard order nor alternation passes.
        let s = usize::from(i % 5 < 2);
        members[s].publish_acked("room.1", format!("m{i}"), i);
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut c = replayer(&broker, "_INBOX.o.*");
    let read_all = |c: &mut RawClient| {
        let (mut records, mut markers) = (Vec::new(), 0);
        while markers < workers {
            let m = c.read_msg(WAIT);
            let h = m.headers.expect("headers");
            if header(&h, "Tern-Replay-Done").is_some() {
                markers += 1;
            } else {
                assert_eq!(markers, 0, "a record after an end marker");
                records.push(String::from_utf8(m.payload).unwrap());
            }
        }
        records
    };
    let expect = |r: std::ops::Range<u64>| r.map(|i| format!("m{i}")).collect::<Vec<_>>();
    c.send(&replay_request("_INBOX.o.1", r#"{"subject":"room.1"}"#));
    assert_eq!(read_all(&mut c), expect(0..24));
    c.send(&replay_request(
        "_INBOX.o.2",
        r#"{"subject":"room.1","last":5}"#,
    ));
    assert_eq!(
        read_all(&mut c),
        expect(19..24),
        "the newest 5 over all shards"
    );
    c.send(&replay_request(
        "_INBOX.o.3",
        r#"{"subject":"room.1","last":0}"#,
    ));
    assert_eq!(read_all(&mut c), expect(0..0));
    c.ping_pong();
}

#[test]
fn a_bad_request_cannot_inject_header_lines_into_its_400() {
    let broker = Broker::start();
    let mut c = replayer(&broker, "_INBOX.bad.*");
    // An unknown key holding CR LF (JSON escapes), which serde quotes in its error.
    let body = r#"{"subject":"a","x\r\nTern-Injected: yes\r\n\r\nPUB evil 0":1}"#;
    c.send(&replay_request("_INBOX.bad.1", body));
    let m = c.read_msg(WAIT);
    assert_eq!(m.subject, "_INBOX.bad.1");
    let h = m.headers.expect("a status message");
    let l = lines(&h);
    assert_eq!(l[0], "NATS/1.0 400 Bad Request");
    assert_eq!(l.len(), 2, "one Tern-Error line and nothing else: {l:?}");
    assert!(
        l[1].starts_with("Tern-Error: invalid replay request: unknown field"),
        "{l:?}"
    );
    assert!(h.ends_with(b"\r\n\r\n"));
    assert!(m.payload.is_empty());

    // A very long one is cut.
    let key = "k".repeat(20_000);
    let body = format!(r#"{{"subject":"a","{key}":1}}"#);
    c.send(&replay_request("_INBOX.bad.2", &body));
    let m = c.read_msg(WAIT);
    let l = lines(&m.headers.unwrap());
    assert_eq!(l.len(), 2, "{}", l.len());
    assert!(l[1].len() <= "Tern-Error: ".len() + 256, "{}", l[1].len());
    assert!(l[1].ends_with("..."));
    // The connection carries on.
    c.ping_pong();
}

/// A catch-up into a connection that stops reading waits for it (its consumer is over its
/// high-water mark, congested and then stuck) instead of replaying into queues that
/// would only drop: nothing is dropped, and when the client reads at last, every record
/// arrives once and in order. Before, a stuck consumer released its catch-ups like its
/// publishers, and a replay flood that was never read spent both cores evicting.
#[test]
fn a_replay_into_a_client_that_stopped_reading_waits_for_it_and_loses_nothing() {
    const RECORDS: usize = 16_000;
    let broker = Broker::with_args(&[
        "--monitor",
        "127.0.0.1:0",
        "--log-size",
        "32MiB",
        // Less than the history, more than what the catch-ups may have in flight.
        "--max-pending",
        "4MiB",
    ]);
    let workers = broker.workers();
    // 16 MiB of history: far more than the reader may hold (4 MiB) and than the sockets
    // between them take (a few MiB).
    history(&broker, RECORDS, 1024);
    let mut reader = RawClient::connect_small_rcvbuf(broker.addr(), 8 * 1024);
    reader.read_info();
    reader.send(b"CONNECT {\"headers\":true}\r\nSUB _INBOX.slow.* 1\r\n");
    reader.ping_pong();
    reader.send(&replay_request("_INBOX.slow.1", r#"{"subject":"hist.>"}"#));
    // It does not read: each shard's catch-up fills its window (`replay_bytes` not yet
    // written to the socket) and waits there, well within the reader's 4 MiB.
    let v = broker.varz_until(|v| v["replays_deferred"].as_u64() >= Some(50));
    assert!(v["replays_deferred"].as_u64() >= Some(50), "{v}");
    assert_eq!(v["queue_dropped_msgs"], 0, "{v}");
    assert_eq!(v["budget_drops"]["connection"], 0, "{v}");
    // Now it reads: every record once, in order per shard, then each shard's end marker.
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    let (mut records, mut ends) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends < workers {
        assert!(Instant::now() < deadline, "{records} records, {ends} ends");
        let m = reader.read_msg(WAIT);
        assert_ne!(m.subject, "$TERN.DROPPED", "the catch-up lost messages");
        let h = m.headers.expect("replayed records carry headers");
        if header(&h, "Tern-Replay-Done").is_some() {
            ends += 1;
            continue;
        }
        let shard = header(&h, "Tern-Shard").expect("a shard");
        let seq: u64 = header(&h, "Tern-Seq").expect("a sequence").parse().unwrap();
        let prev = last_seq.insert(shard, seq);
        assert!(
            prev.is_none_or(|p| p < seq),
            "out of order: {prev:?} then {seq}"
        );
        records += 1;
    }
    assert_eq!(records, RECORDS);
    let v = broker.varz();
    assert_eq!(v["queue_dropped_msgs"], 0, "{v}");
}

//! Subjects and filters of many tokens, and subjects with many subscriptions, against the
//! real `ternd` over real sockets: refused over `max_subject_tokens` on both ports with the
//! connection kept; matched, listed by `/subsz` and removed when the limit allows them (the
//! index walks them without recursing); and a connection holding 65,536 subscriptions of
//! one subject closed without leaving any behind.
//!
//! Every wait has a deadline (the harness's); nothing here measures time.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{show, BinClient, Broker, RawClient, WAIT};
use tern_protocol::binary::{ClientFrame, ErrorCode, Publish, ServerFrame, Subscribe, Unsubscribe};

/// The most tokens a `short` field can carry: 32,767 one-byte tokens and their dots.
const DEEPEST: usize = 32_767;

fn stars(n: usize) -> String {
    vec!["*"; n].join(".")
}

fn literal(n: usize) -> String {
    vec!["a"; n].join(".")
}

fn subscribe(sid: u32, filter: &str) -> ClientFrame {
    ClientFrame::Subscribe(Subscribe {
        sid,
        subject: Bytes::copy_from_slice(filter.as_bytes()),
        ..Default::default()
    })
}

fn publish(subject: &str, payload: &'static str) -> ClientFrame {
    ClientFrame::Publish(Publish {
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        payload: Bytes::from_static(payload.as_bytes()),
        ..Default::default()
    })
}

/// The index's subscription count per shard, from `/subsz`.
fn shard_subscriptions(broker: &Broker) -> Vec<u64> {
    broker.monitor_json("/subsz")["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["subscriptions"].as_u64().expect("a count"))
        .collect()
}

/// A binary client still open and answering: its `PING` gets a `PONG` with nothing
/// before it.
fn assert_alive(c: &mut BinClient) {
    let before = c.flush();
    assert!(before.is_empty(), "unexpected frames: {before:?}");
}

/// The `SUBSCRIBE` that aborted the process (a stack overflow in the index) is refused as
/// a content error; the connection, and the broker, carry on.
#[test]
fn a_binary_subscribe_of_32767_tokens_is_refused_and_the_broker_serves_on() {
    let broker = Broker::with_args(&["--monitor", "127.0.0.1:0"]);
    let mut c = BinClient::connect(broker.binary_addr());
    c.send(&subscribe(7, &stars(DEEPEST)));
    match c.read_frame() {
        ServerFrame::Error(e) => {
            assert_eq!(
                (e.code, e.fatal, e.sid),
                (ErrorCode::InvalidSubject, false, Some(7))
            );
            assert_eq!(
                String::from_utf8_lossy(&e.message),
                "invalid subscription subject: subject has too many tokens (max 256)"
            );
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    // A publish to such a subject too.
    c.send(&publish(&literal(DEEPEST), "x"));
    match c.read_frame() {
        ServerFrame::Error(e) => assert_eq!((e.code, e.fatal), (ErrorCode::InvalidSubject, false)),
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_alive(&mut c);

    // 256 tokens is the default limit, and allowed. sid 7 was never made: usable now.
    c.send(&subscribe(7, &stars(256)));
    c.send(&publish(&literal(256), "deep"));
    match c.read_frame() {
        ServerFrame::Message(m) => assert_eq!((m.sid, &m.payload[..]), (7, &b"deep"[..])),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    // Others are served, and monitoring (which lists every filter) answers.
    let mut other = RawClient::connect(broker.addr());
    other.send(b"SUB x 1\r\nPUB x 2\r\nhi\r\n");
    other.expect(b"MSG x 1 2\r\nhi\r\n");
    // Every shard holds both filters; /subsz lists them once.
    let subs = broker.monitor_json_until("/subsz", |s| s["total"] == 2);
    assert_eq!(subs["total"], 2, "{subs}");
    let v = broker.varz_until(|v| v["subject_tokens_refused"] == 2);
    assert_eq!(v["subject_tokens_refused"], 2, "{v}");
    assert_eq!(v["protocol_errors"], 2, "{v}");
}

/// A text `SUB` over the limit gets nats-server's text for its own token cap (which NATS
/// clients report without closing), a `PUB` its own; neither closes the connection.
#[test]
fn a_long_text_sub_is_refused_and_the_connection_stays() {
    let broker = Broker::with_args(&["--monitor", "127.0.0.1:0"]);
    let mut c = RawClient::connect(broker.addr());
    // 2,000 tokens: a 4 KiB filter, within the default control line.
    let filter = stars(2000);
    c.send(format!("SUB {filter} 1\r\nPING\r\n").as_bytes());
    let expect = format!(
        "-ERR 'Permissions Violation for Subscription to \"{filter}\", too many tokens (max 256)'\r\nPONG\r\n"
    );
    let got = c.read_exact_bytes(expect.len(), WAIT);
    assert_eq!(got, expect.as_bytes(), "got {}", show(&got));

    c.send(format!("PUB {} 2\r\nhi\r\nPING\r\n", literal(257)).as_bytes());
    let expect = b"-ERR 'Invalid Publish Subject: too many tokens (max 256)'\r\nPONG\r\n";
    let got = c.read_exact_bytes(expect.len(), WAIT);
    assert_eq!(got, expect, "got {}", show(&got));

    // Still usable, and sid 1 was never registered.
    c.send(b"SUB ok 1\r\nPUB ok 2\r\nhi\r\n");
    c.expect(b"MSG ok 1 2\r\nhi\r\n");
    c.ping_pong();
    let v = broker.varz_until(|v| v["subject_tokens_refused"] == 2);
    assert_eq!(v["subject_tokens_refused"], 2, "{v}");
}

#[test]
fn the_token_limit_is_a_setting() {
    let broker = Broker::with_args(&["--max-subject-tokens", "3"]);
    let mut c = RawClient::connect(broker.addr());
    c.send(b"SUB a.*.c 1\r\nSUB a.*.c.d 2\r\nPING\r\n");
    let expect =
        b"-ERR 'Permissions Violation for Subscription to \"a.*.c.d\", too many tokens (max 3)'\r\nPONG\r\n";
    let got = c.read_exact_bytes(expect.len(), WAIT);
    assert_eq!(got, expect, "got {}", show(&got));
    c.send(b"PUB a.b.c 1\r\nx\r\n");
    c.expect(b"MSG a.b.c 1 1\r\nx\r\n");

    let mut b = BinClient::connect(broker.binary_addr());
    b.send(&subscribe(1, "a.b.c.d"));
    match b.read_frame() {
        ServerFrame::Error(e) => assert_eq!(
            String::from_utf8_lossy(&e.message),
            "invalid subscription subject: subject has too many tokens (max 3)"
        ),
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_alive(&mut b);
}

/// Where the limit allows them, filters of 32,767 tokens are subscribed, matched, listed,
/// unsubscribed and dropped with the connection: every one of those walks the index along
/// the whole filter, and none of them may recurse (each aborted the process before).
#[test]
fn filters_of_32767_tokens_work_when_the_limit_allows_them() {
    let broker = Broker::with_args(&["--max-subject-tokens", "40000", "--monitor", "127.0.0.1:0"]);
    let mut c = BinClient::connect(broker.binary_addr());
    let deep = stars(DEEPEST);
    let tail = format!("{}.>", literal(DEEPEST - 1));
    c.send(&subscribe(1, &deep));
    c.send(&subscribe(2, &tail));
    assert_alive(&mut c);

    c.send(&publish(&literal(DEEPEST), "both"));
    let mut sids = Vec::new();
    for _ in 0..2 {
        match c.read_frame() {
            ServerFrame::Message(m) => sids.push(m.sid),
            other => panic!("expected MESSAGE, got {other:?}"),
        }
    }
    sids.sort();
    assert_eq!(sids, vec![1, 2]);
    // One token short of both: nobody.
    c.send(&publish(&literal(DEEPEST - 1), "none"));
    assert_alive(&mut c);

    let subs = broker.monitor_json("/subsz");
    let mut lens: Vec<usize> = subs["filters"]
        .as_array()
        .expect("filters")
        .iter()
        .map(|f| f["filter"].as_str().expect("a filter").len())
        .collect();
    lens.sort();
    lens.dedup();
    assert_eq!(lens, vec![deep.len()], "both filters are 65,533 bytes");

    c.send(&ClientFrame::Unsubscribe(Unsubscribe { sid: 1, max: None }));
    c.send(&publish(&literal(DEEPEST), "tail only"));
    match c.read_frame() {
        ServerFrame::Message(m) => assert_eq!(m.sid, 2),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
    assert_alive(&mut c);
    // Closing the connection removes the tail filter from every shard.
    drop(c);
    let deadline = Instant::now() + WAIT;
    while shard_subscriptions(&broker).iter().sum::<u64>() > 0 {
        assert!(
            Instant::now() < deadline,
            "{}",
            broker.monitor_json("/subsz")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut other = RawClient::connect(broker.addr());
    other.ping_pong();
}

/// A connection with 65,536 subscriptions of one subject, half of them in a queue group,
/// closes: every one leaves the index, while another client on the same worker keeps its
/// own subscription and is served.
#[test]
fn closing_a_connection_with_65536_subscriptions_of_one_subject_removes_them_all() {
    const SUBS: usize = 65_536;
    let broker = Broker::with_args(&["--monitor", "127.0.0.1:0", "--no-store"]);
    let mut busy = RawClient::connect(broker.addr());
    let worker = busy.worker(broker.workers());
    let mut ops = Vec::with_capacity(SUBS * 24);
    for sid in 0..SUBS {
        if sid % 2 == 0 {
            ops.extend_from_slice(format!("SUB busy {sid}\r\n").as_bytes());
        } else {
            ops.extend_from_slice(format!("SUB busy q {sid}\r\n").as_bytes());
        }
    }
    busy.send(&ops);
    busy.ping_pong();
    let mut other = RawClient::connect_on_worker(broker.addr(), worker, broker.workers());
    other.send(b"SUB busy 1\r\n");
    other.ping_pong();
    // Every shard holds every subscription.
    let each = shard_subscriptions(&broker);
    assert!(each.iter().all(|&n| n == SUBS as u64 + 1), "{each:?}");

    // One publish: the other client, every plain one of the busy client and one member of
    // its queue group.
    other.send(b"PUB busy 1\r\nx\r\n");
    other.expect(b"MSG busy 1 1\r\nx\r\n");
    for _ in 0..SUBS / 2 + 1 {
        let msg = busy.read_until(b"\r\nx\r\n", WAIT);
        assert!(msg.starts_with(b"MSG busy "), "got {}", show(&msg));
    }
    // Nothing more: exactly one member of the group got it.
    busy.ping_pong();

    drop(busy);
    let deadline = Instant::now() + WAIT;
    while shard_subscriptions(&broker).iter().any(|&n| n != 1) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            shard_subscriptions(&broker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    other.send(b"PUB busy 1\r\ny\r\n");
    other.expect(b"MSG busy 1 1\r\ny\r\n");
    other.ping_pong();
    let v = broker.varz_until(|v| v["subscriptions"] == 1);
    assert_eq!(v["subscriptions"], 1, "{v}");
}

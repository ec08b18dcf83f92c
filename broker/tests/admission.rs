//! Admission control against the real `ternd` (issue 5): each limit refuses with its error on
//! every port where it applies and is counted in `/varz` and `/metrics`; slots come back
//! when connections close; a publisher over its rate is slowed (`slow`) or refused
//! (`refuse`); per-subject-pattern rates from the config file; overload shedding of
//! low-priority publishes.
//!
//! Every assertion is on behaviour and counters, never on how long something took.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{BinClient, Broker, RawClient, WAIT};
use serde_json::Value;
use tern_protocol::binary::{
    AckResult, ClientFrame, ErrorCode, ErrorFrame, Hello, Preface, Publish, PublishAck,
    ServerFrame, Subscribe,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A broker with monitoring on (the counters are read from it), storing nothing.
fn broker(args: &[&str]) -> Broker {
    let mut all = vec!["--monitor", "127.0.0.1:0", "--no-store"];
    all.extend_from_slice(args);
    Broker::with_args(&all)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the monitor");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
    body.to_string()
}

/// The sum over workers of a `/metrics` counter with the given labels (besides `worker`).
fn metric(b: &Broker, name: &str, labels: &str) -> f64 {
    let body = http_get(b.monitor_addr(), "/metrics");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{worker=")))
        .filter(|l| labels.is_empty() || l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Connects to the text port: `Ok` once the server answered a `PING` (admitted), `Err`
/// with the `-ERR` text when it refused the connection (after its `INFO`, as nats-server
/// does), having checked that the server then closed it.
fn text_connect(addr: SocketAddr) -> Result<RawClient, String> {
    let mut c = RawClient::connect_bare(addr);
    c.read_info();
    // A refused connection may already be closed: the write may fail, the answer is read
    // anyway.
    let _ = c.try_send(b"PING\r\n");
    let line = String::from_utf8(c.read_until(b"\r\n", WAIT)).unwrap();
    let line = line.trim_end();
    if line == "PONG" {
        return Ok(c);
    }
    let text = line
        .strip_prefix("-ERR '")
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("expected PONG or -ERR, got {line:?}"))
        .to_string();
    let (rest, _) = c.read_to_close(WAIT);
    assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
    Err(text)
}

/// Connects to the binary port with a preface and `HELLO`: `Ok` on `WELCOME`, `Err` with
/// the `ERROR` when the connection is refused, having checked that the server then closed
/// it.
fn bin_connect(addr: SocketAddr) -> Result<BinClient, ErrorFrame> {
    let mut c = BinClient::connect_bare(addr);
    let mut out = BytesMut::new();
    Preface::default().encode(&mut out);
    tern_protocol::binary::encode_client_frame(
        &ClientFrame::Hello(Hello {
            echo: true,
            ..Default::default()
        }),
        &mut out,
    )
    .unwrap();
    let _ = c.stream.write_all(&out);
    match c.try_read_frame(WAIT) {
        Ok(ServerFrame::Welcome(w)) => {
            c.welcome = w;
            Ok(c)
        }
        Ok(ServerFrame::Error(e)) => {
            let rest = c.frames_to_close();
            assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
            Err(e)
        }
        other => panic!("expected WELCOME or ERROR, got {other:?}"),
    }
}

/// The refusal a binary client gets before it has sent anything: the server writes it at
/// once, without waiting for the preface.
fn bin_refused_without_preface(addr: SocketAddr) -> ErrorFrame {
    let mut c = BinClient::connect_bare(addr);
    match c.try_read_frame(WAIT) {
        Ok(ServerFrame::Error(e)) => {
            assert!(c.frames_to_close().is_empty());
            e
        }
        other => panic!("expected an ERROR before any preface, got {other:?}"),
    }
}

fn assert_too_many_connections(e: &ErrorFrame, text: &str) {
    assert_eq!(e.code, ErrorCode::TooManyConnections, "{e:?}");
    assert!(e.fatal, "{e:?}");
    assert_eq!(e.sid, None);
    let message = String::from_utf8_lossy(&e.message);
    assert!(message.starts_with(text), "{message:?}");
}

/// Connects until admitted (a closed connection's slot comes back when its worker has
/// seen the close, a moment after the client closed).
fn text_connect_eventually(addr: SocketAddr) -> RawClient {
    let deadline = Instant::now() + WAIT;
    loop {
        match text_connect(addr) {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("still refused after {WAIT:?}: {e}"),
        }
    }
}

/// The refusal of a connection attempt that had to be refused.
fn refused<T, E>(attempt: Result<T, E>) -> E {
    match attempt {
        Ok(_) => panic!("the connection was admitted"),
        Err(e) => e,
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn publish(subject: &str, payload: &str, ack_id: Option<u64>, priority: u8) -> ClientFrame {
    ClientFrame::Publish(Publish {
        subject: bytes(subject),
        payload: bytes(payload),
        ack_id,
        priority,
        ..Default::default()
    })
}

/// Reads `n` deliveries on a text subscriber and returns their payloads.
fn text_payloads(c: &mut RawClient, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| String::from_utf8(c.read_msg(WAIT).payload).unwrap())
        .collect()
}

/// The `-ERR` texts among the lines `bytes` holds, and the other lines.
fn errors_in(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let (errs, other): (Vec<&str>, Vec<&str>) = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .partition(|l| l.starts_with("-ERR "));
    (
        errs.iter()
            .map(|l| {
                l.trim_start_matches("-ERR '")
                    .trim_end_matches('\'')
                    .to_string()
            })
            .collect(),
        other.iter().map(|l| l.to_string()).collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

#[test]
fn total_connections_refused_on_both_ports_counted_and_released_on_close() {
    let b = broker(&["--max-connections", "2"]);
    let text = text_connect(b.addr()).expect("first connection");
    let bin = bin_connect(b.binary_addr()).expect("second connection");

    assert_eq!(
        refused(text_connect(b.addr())),
        "maximum connections exceeded",
        "nats-server's text, after INFO"
    );
    let e = refused(bin_connect(b.binary_addr()));
    assert_too_many_connections(&e, "maximum connections exceeded");
    // The binary refusal does not wait for the client's preface.
    let e = bin_refused_without_preface(b.binary_addr());
    assert_too_many_connections(&e, "maximum connections exceeded");

    let v = b.varz_until(|v| v["connections_refused"]["total"] == 3);
    assert_eq!(v["connections_refused"]["total"], 3, "{v}");
    assert_eq!(v["connections_refused"]["per_ip"], 0);
    assert_eq!(v["connections"], 2, "refused connections are never opened");
    assert_eq!(v["admission"]["max_connections"], 2);
    assert_eq!(
        metric(&b, "tern_connections_refused_total", "reason=\"total\""),
        3.0
    );

    // Closing one gives its slot back; the limit still holds afterwards.
    drop(text);
    let again = text_connect_eventually(b.addr());
    assert_eq!(
        refused(text_connect(b.addr())),
        "maximum connections exceeded"
    );
    // Both ports share the limit: a binary slot serves a text client too.
    drop(bin);
    drop(again);
    let x = text_connect_eventually(b.addr());
    let y = text_connect_eventually(b.addr());
    // Every slot was given back exactly once, refused connections included: exactly two
    // fit again.
    assert!(text_connect(b.addr()).is_err());
    drop((x, y));
}

/// Connects to `addr` from the local address `from` (any of 127.0.0.0/8 on Linux).
fn text_connect_from(from: [u8; 4], addr: SocketAddr) -> (TcpStream, Value) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect_timeout(&addr.into(), WAIT).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let info: Value = serde_json::from_str(line.trim_end().strip_prefix("INFO ").unwrap()).unwrap();
    (&stream).write_all(b"PING\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "PONG\r\n", "admitted from {from:?}");
    (stream, info)
}

#[test]
fn connections_per_ip_limit_one_address_not_the_others() {
    let b = broker(&["--max-connections-per-ip", "2"]);
    let first = text_connect(b.addr()).unwrap();
    let _second = bin_connect(b.binary_addr()).unwrap();
    let text = "maximum connections per client address exceeded";
    assert_eq!(refused(text_connect(b.addr())), text);
    assert_too_many_connections(&refused(bin_connect(b.binary_addr())), text);

    // Another address is not affected.
    let (_other, info) = text_connect_from([127, 0, 0, 2], b.addr());
    assert_eq!(info["client_ip"], "127.0.0.2");

    let v = b.varz_until(|v| v["connections_refused"]["per_ip"] == 2);
    assert_eq!(v["connections_refused"]["per_ip"], 2, "{v}");
    assert_eq!(v["connections_refused"]["total"], 0);
    assert_eq!(
        metric(&b, "tern_connections_refused_total", "reason=\"per_ip\""),
        2.0
    );

    drop(first);
    let _third = text_connect_eventually(b.addr());
    assert_eq!(refused(text_connect(b.addr())), text);
}

/// The milliseconds of a "retry after Nms" hint.
fn retry_after_ms(text: &str) -> u64 {
    text.rsplit_once("retry after ")
        .and_then(|(_, ms)| ms.strip_suffix("ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry hint in {text:?}"))
}

#[test]
fn connection_rate_refuses_with_a_retry_hint_on_both_ports() {
    // One new connection per second, two at once.
    let b = broker(&["--connect-rate", "1", "--connect-burst", "2"]);
    let mut refused = 0;
    let mut admitted = Vec::new();
    let text = loop {
        match text_connect(b.addr()) {
            Ok(c) => admitted.push(c),
            Err(e) => {
                refused += 1;
                break e;
            }
        }
        assert!(admitted.len() < 20, "never refused");
    };
    assert!(
        text.starts_with("connection rate exceeded, retry after "),
        "{text}"
    );
    let ms = retry_after_ms(&text);
    assert!((1..=1000).contains(&ms), "{text}");

    let e = loop {
        match bin_connect(b.binary_addr()) {
            Ok(_) => assert!(admitted.len() < 40, "never refused"),
            Err(e) => {
                refused += 1;
                break e;
            }
        }
    };
    assert_too_many_connections(&e, "connection rate exceeded, retry after ");
    retry_after_ms(&String::from_utf8_lossy(&e.message));

    let v = b.varz_until(|v| v["connections_refused"]["rate"] == refused);
    assert_eq!(v["connections_refused"]["rate"], refused, "{v}");
    assert_eq!(v["admission"]["connect_rate"], 1);
    // The admitted connections are untouched by the refusals.
    for c in &mut admitted {
        c.ping_pong();
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

#[test]
fn subscriptions_per_connection_refused_on_both_ports_connection_stays() {
    let b = broker(&["--max-subscriptions", "2"]);
    let mut t = RawClient::connect(b.addr());
    t.send(b"CONNECT {\"verbose\":true}\r\n");
    t.expect(b"+OK\r\n");
    t.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n");
    // No +OK for the refused one.
    t.expect(b"+OK\r\n+OK\r\n-ERR 'maximum subscriptions exceeded'\r\n");
    t.ping_pong();
    // A freed subscription makes room.
    t.send(b"UNSUB 1\r\nSUB c 3\r\nPUB c 2\r\nhi\r\n");
    t.expect(b"+OK\r\n+OK\r\n+OK\r\n");
    assert_eq!(text_payloads(&mut t, 1), ["hi"]);

    let mut c = BinClient::connect(b.binary_addr());
    for sid in 1..=3 {
        c.send(&ClientFrame::Subscribe(Subscribe {
            sid,
            subject: bytes(&format!("s.{sid}")),
            ..Default::default()
        }));
    }
    match c.flush().as_slice() {
        [ServerFrame::Error(e)] => {
            assert_eq!(e.code, ErrorCode::TooManySubscriptions);
            assert!(!e.fatal);
            assert_eq!(e.sid, Some(3));
            assert_eq!(
                e.message,
                bytes("maximum subscriptions exceeded (2 per connection)")
            );
        }
        other => panic!("expected one ERROR, got {other:?}"),
    }
    c.send(&publish("s.2", "x", None, 0));
    match c.read_frame() {
        ServerFrame::Message(m) => assert_eq!(m.sid, 2),
        other => panic!("expected MESSAGE, got {other:?}"),
    }

    let v = b.varz_until(|v| v["subscriptions_refused"] == 2);
    assert_eq!(v["subscriptions_refused"], 2, "{v}");
    assert_eq!(metric(&b, "tern_subscriptions_refused_total", ""), 2.0);
}

#[test]
fn subscriptions_on_the_whole_broker_are_bounded_and_closing_gives_them_back() {
    let b = broker(&["--max-total-subscriptions", "3"]);
    let mut first = RawClient::connect(b.addr());
    first.send(b"SUB a 1\r\nSUB b 2\r\n");
    first.ping_pong();
    let mut second = RawClient::connect(b.addr());
    second.send(b"CONNECT {\"verbose\":true}\r\n");
    second.expect(b"+OK\r\n");
    second.send(b"SUB c 1\r\nSUB d 2\r\n");
    second.expect(b"+OK\r\n-ERR 'maximum subscriptions exceeded'\r\n");
    let mut c = BinClient::connect(b.binary_addr());
    c.send(&ClientFrame::Subscribe(Subscribe {
        sid: 7,
        subject: bytes("e"),
        ..Default::default()
    }));
    match c.flush().as_slice() {
        [ServerFrame::Error(e)] => {
            assert_eq!(e.code, ErrorCode::TooManySubscriptions);
            assert!(!e.fatal);
            assert_eq!(
                e.message,
                bytes("maximum subscriptions exceeded (3 on the server)")
            );
        }
        other => panic!("expected one ERROR, got {other:?}"),
    }
    // The first client leaves: its two places are given back.
    drop(first);
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        second.send(b"SUB f 3\r\n");
        let line = second.read_until(b"\r\n", common::WAIT);
        if line == b"+OK\r\n" {
            break;
        }
        assert_eq!(line, b"-ERR 'maximum subscriptions exceeded'\r\n");
        assert!(
            std::time::Instant::now() < deadline,
            "places never given back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let v = b.varz_until(|v| v["subscriptions_refused"].as_u64() >= Some(2));
    assert_eq!(v["admission"]["max_total_subscriptions"], 3, "{v}");
}

// ---------------------------------------------------------------------------------------
// Publish rates
// ---------------------------------------------------------------------------------------

#[test]
fn slow_rate_action_pauses_the_publisher_and_loses_nothing() {
    // 200 messages per second, 20 at once; the default action is `slow`.
    let b = broker(&[
        "--publish-msgs-per-sec",
        "200",
        "--publish-msgs-burst",
        "20",
    ]);
    let mut sub = RawClient::connect(b.addr());
    sub.send(b"SUB r.> 1\r\n");
    sub.ping_pong();

    // Text: 100 messages in one write. All arrive, in order, and the PING behind them
    // is answered once the publisher has been read again.
    let mut publisher = RawClient::connect(b.addr());
    let mut burst = Vec::new();
    for i in 0..100 {
        burst
            .extend_from_slice(format!("PUB r.text {}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    burst.extend_from_slice(b"PING\r\n");
    publisher.send(&burst);
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(text_payloads(&mut sub, 100), want);
    publisher.expect(b"PONG\r\n");

    // Binary: acknowledged publishes are all stored, none refused.
    let mut c = BinClient::connect(b.binary_addr());
    for i in 0..60u64 {
        c.send(&publish("r.bin", &i.to_string(), Some(i), 0));
    }
    let frames = c.flush();
    assert_eq!(frames.len(), 60, "{frames:?}");
    let acks = frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                ServerFrame::PublishAck(PublishAck {
                    result: AckResult::Stored { .. },
                    ..
                })
            )
        })
        .count();
    assert_eq!(acks, 60);
    let bin: Vec<String> = text_payloads(&mut sub, 60);
    assert_eq!(bin, (0..60).map(|i| i.to_string()).collect::<Vec<_>>());

    // Each connection went over its burst: each was paused at least once.
    let v = b.varz_until(|v| v["publishes_throttled"]["connection"].as_u64() >= Some(2));
    assert!(
        v["publishes_throttled"]["connection"].as_u64() >= Some(2),
        "{v}"
    );
    assert_eq!(v["publishes_rate_refused"]["connection"], 0);
    assert_eq!(v["in_msgs"], 160);
    assert!(metric(&b, "tern_publishes_throttled_total", "scope=\"connection\"") >= 2.0);
}

#[test]
fn refuse_rate_action_answers_each_port_and_keeps_the_connection() {
    let b = broker(&[
        "--rate-action",
        "refuse",
        "--publish-msgs-per-sec",
        "1",
        "--publish-msgs-burst",
        "3",
    ]);
    let mut sub = RawClient::connect(b.addr());
    sub.send(b"SUB q.> 1\r\n");
    sub.ping_pong();

    let mut publisher = RawClient::connect(b.addr());
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend_from_slice(format!("PUB q.text 1\r\n{i}\r\n").as_bytes());
    }
    publisher.send(&burst);
    let (errors, other) = errors_in(&publisher.flush());
    assert!(other.is_empty(), "{other:?}");
    assert!(
        errors.len() >= 5,
        "at most a burst of 3 and a refill or two pass: {errors:?}"
    );
    for e in &errors {
        assert!(
            e.starts_with("publish rate exceeded for this connection (1 msgs/s), retry after "),
            "{e}"
        );
        retry_after_ms(e);
    }
    let delivered = 10 - errors.len();
    assert_eq!(text_payloads(&mut sub, delivered).len(), delivered);
    // Still open, still served.
    publisher.ping_pong();

    // Binary: with an ack asked, a refused PUBLISH_ACK; without, a non-fatal ERROR.
    let mut c = BinClient::connect(b.binary_addr());
    for i in 0..6 {
        c.send(&publish("q.bin", "x", Some(i), 0));
    }
    for _ in 0..3 {
        c.send(&publish("q.bin", "x", None, 0));
    }
    let frames = c.flush();
    let mut refused_acks = 0;
    let mut errors = 0;
    for f in &frames {
        match f {
            ServerFrame::PublishAck(PublishAck {
                result: AckResult::Refused { code, message },
                ..
            }) => {
                assert_eq!(*code, ErrorCode::RateLimited);
                assert!(message.starts_with(b"publish rate exceeded for this connection"));
                refused_acks += 1;
            }
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
                assert!(!e.fatal);
                errors += 1;
            }
            ServerFrame::PublishAck(_) | ServerFrame::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused_acks >= 1, "{frames:?}");
    assert!(errors >= 1, "{frames:?}");
    assert!(c.flush().is_empty(), "the connection carries on");

    let total = (10 - delivered + refused_acks + errors) as u64;
    let v = b.varz_until(|v| v["publishes_rate_refused"]["connection"] == total);
    assert_eq!(v["publishes_rate_refused"]["connection"], total, "{v}");
    assert_eq!(v["publishes_throttled"]["connection"], 0);
    assert_eq!(
        metric(
            &b,
            "tern_publishes_rate_refused_total",
            "scope=\"connection\""
        ),
        total as f64
    );
}

#[test]
fn subject_rates_from_the_config_file_apply_per_connection() {
    let dir = common::temp_dir("ternd-admission");
    let path = dir.join("ternd.toml");
    std::fs::write(
        &path,
        "[admission]\n\
         rate_action = \"refuse\"\n\
         [[admission.subject_rate]]\n\
         subject = \"chat.>\"\n\
         msgs_per_sec = 1\n\
         msgs_burst = 2\n",
    )
    .unwrap();
    let b = broker(&["--config", path.to_str().unwrap()]);
    let mut sub = RawClient::connect(b.addr());
    sub.send(b"SUB chat.> 1\r\nSUB news 2\r\n");
    sub.ping_pong();

    let mut p = RawClient::connect(b.addr());
    let mut burst = Vec::new();
    for _ in 0..6 {
        burst.extend_from_slice(b"PUB chat.room 1\r\nc\r\nPUB news 1\r\nn\r\n");
    }
    p.send(&burst);
    let (errors, _) = errors_in(&p.flush());
    assert!(errors.len() >= 2, "{errors:?}");
    for e in &errors {
        assert!(
            e.starts_with("publish rate exceeded for subject chat.> (1 msgs/s per connection)"),
            "{e}"
        );
    }
    // Other subjects are not limited; another connection has buckets of its own.
    let mut other = RawClient::connect(b.addr());
    other.send(b"PUB chat.lobby 1\r\nc\r\nPUB chat.lobby 1\r\nc\r\n");
    assert!(other.flush().is_empty(), "its own burst of 2");
    let delivered = 12 - errors.len() + 2;
    let payloads = text_payloads(&mut sub, delivered);
    assert_eq!(payloads.iter().filter(|p| *p == "n").count(), 6);

    let v = b.varz_until(|v| v["publishes_rate_refused"]["subject"] == errors.len() as u64);
    assert_eq!(
        v["publishes_rate_refused"]["subject"],
        errors.len() as u64,
        "{v}"
    );
    assert_eq!(v["admission"]["subject_rates"][0]["subject"], "chat.>");
    assert_eq!(v["admission"]["rate_action"], "refuse");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// Overload shedding
// ---------------------------------------------------------------------------------------

/// Saturating a worker's queue is not something a test can do on demand; with a queue of
/// one batch and a threshold of 0, any batch waiting for a worker counts as overload, which
/// a publisher whose every message makes a hundred deliveries on another worker runs into
/// at once.
/// (The decision itself is unit-tested in `admission.rs`.)
#[test]
fn overload_sheds_low_priority_publishes_and_never_high_ones() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let b = broker(&[
        "--worker-queue",
        "1",
        "--shed-queue-depth",
        "0",
        "--shed-below-priority",
        "4",
    ]);
    let mut c = BinClient::connect(b.binary_addr());
    let other = 1 - c.worker(b.workers());
    let subject = "load";
    let mut sub = RawClient::connect_on_worker(b.addr(), other, b.workers());
    let subs: String = (1..=100).map(|sid| format!("SUB load {sid}\r\n")).collect();
    sub.send(subs.as_bytes());
    sub.ping_pong();
    // The subscriber reads all it gets (until the broker closes at the end).
    let mut sub_stream = sub.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while sub_stream.read(&mut buf).is_ok_and(|n| n > 0) {}
    });

    // A writer keeps the pipeline full (publishes with acks, one in ten of priority 7)
    // while this thread reads the acks, until something has been shed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = c.stream.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            let deadline = Instant::now() + WAIT;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut out = BytesMut::new();
                for _ in 0..500 {
                    let priority = match sent % 10 {
                        0 => 7,
                        _ => 0,
                    };
                    let frame = publish(subject, "load", Some(sent), priority);
                    tern_protocol::binary::encode_client_frame(&frame, &mut out).unwrap();
                    sent += 1;
                }
                stream.write_all(&out).unwrap();
            }
            sent
        })
    };
    let (mut shed, mut answered) = (0u64, 0u64);
    let mut writer = Some(writer);
    let mut sent = None;
    while sent != Some(answered) {
        if shed > 0 {
            stop.store(true, Ordering::Relaxed);
        }
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            sent = writer.take().map(|w| w.join().unwrap());
            continue;
        }
        let ack = match c.try_read_frame(Duration::from_millis(100)) {
            Ok(ServerFrame::PublishAck(ack)) => ack,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(common::ReadEnd::Timeout) => continue,
            Err(end) => panic!("connection ended: {end:?}"),
        };
        answered += 1;
        let high = matches!(ack.ack_id % 10, 0);
        match ack.result {
            AckResult::Stored { .. } => {}
            AckResult::Refused { code, message } => {
                assert!(!high, "a priority-7 publish was refused: {message:?}");
                assert_eq!(code, ErrorCode::Overloaded);
                assert!(
                    message.starts_with(b"server overloaded: shard "),
                    "{message:?}"
                );
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "nothing shed in {answered} publishes within {WAIT:?}"
    );
    let v = b.varz_until(|v| v["publishes_shed"] == shed);
    assert_eq!(v["publishes_shed"], shed, "{v}");
    assert_eq!(v["admission"]["shed_below_priority"], 4);
    assert_eq!(metric(&b, "tern_publishes_shed_total", ""), shed as f64);
}

// ---------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------

/// A new connection lives on the worker with the fewest connections, whichever worker the
/// kernel's `SO_REUSEPORT` hash gave it to (`ConnectionGate::admit`): left to the hash, a
/// publisher and its subscriber land on one worker half the time, and that core does all
/// the work while the other idles. Every port counts toward one balance, and a closed
/// connection's place is the next one's.
#[test]
fn new_connections_are_spread_evenly_over_the_workers_of_every_port() {
    let b = broker(&["--workers", "3"]);
    let workers = b.workers();
    assert_eq!(workers, 3);
    let mut text: Vec<RawClient> = Vec::new();
    let mut binary: Vec<BinClient> = Vec::new();
    let mut counts = vec![0usize; workers];
    for i in 0..30 {
        let worker = if i % 2 == 0 {
            let c = RawClient::connect(b.addr());
            let w = c.worker(workers);
            text.push(c);
            w
        } else {
            let c = BinClient::connect(b.binary_addr());
            let w = c.worker(workers);
            binary.push(c);
            w
        };
        counts[worker] += 1;
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            max - min <= 1,
            "connection {i}: {counts:?} connections per worker"
        );
    }
    assert_eq!(counts, [10, 10, 10]);

    // Three connections of one worker close: the next three live there.
    let on = |w: usize| move |c: &RawClient| c.worker(workers) == w;
    let target = text[0].worker(workers);
    let closing: Vec<usize> = (0..text.len()).filter(|&i| on(target)(&text[i])).collect();
    assert!(closing.len() >= 3, "half of a worker's ten are text");
    for i in closing[..3].iter().rev() {
        text.remove(*i);
    }
    b.varz_until(|v| v["connections"] == 27);
    for _ in 0..3 {
        let c = RawClient::connect(b.addr());
        assert_eq!(c.worker(workers), target, "the worker with room takes it");
        text.push(c);
    }
    let v = b.varz();
    assert!(
        v["connections_moved"].as_u64().unwrap_or(0) > 0,
        "some were handed from the accepting worker to another: {v}"
    );
    assert_eq!(v["connections"], 30, "{v}");
}

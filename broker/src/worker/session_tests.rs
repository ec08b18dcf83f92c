//! Connections driven through a real worker without a socket: each test opens
//! connections on an in-memory pipe (`conn::socket::Memory`), sends bytes, runs loop turns
//! and reads what the worker wrote. What these pin down (held `PONG`s, auto-unsubscribe,
//! each protocol's error paths, the slow-consumer policy, a lossless subscription's
//! fall-back to the log, with a real ring log in a scratch directory) is the connection
//! logic itself, with no process, port or timing of a real network in the way.
//!
//! `conn/session_tests.rs` pins the same behaviours on a connection alone, with a fake
//! context in place of the worker; these keep them pinned end to end, through routing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_protocol::binary::{ErrorCode, ServerFrame, ServerFrameDecoder};

use super::Worker;
use crate::config::{Config, SlowConsumerPolicy};
use crate::conn::socket::{Memory, Socket};
use crate::mesh::Mesh;
use crate::transports::Port;

/// Loop turns a test runs at most while waiting for an answer.
const TURNS: usize = 200;

/// The only worker of a one-worker broker with `config`, storing nothing.
fn worker(config: Config) -> (Worker, Mesh) {
    super::tests::test_worker(1, config)
}

impl Worker {
    /// A connection on `port` over an in-memory pipe; the pipe's test end.
    fn open_memory(&mut self, port: Port) -> (usize, Memory) {
        let memory = Memory::default();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let gate_slot = self
            .gate
            .admit(peer.ip(), self.now, self.router.me)
            .expect("admitted");
        let link = self
            .transports
            .link(port, self.now, &self.info, &self.welcome)
            .expect("a link");
        let slot = self.open(Socket::Memory(memory.clone()), link, peer, port, gate_slot);
        (slot, memory)
    }

    /// One loop turn, as if every connection were readable and writable.
    fn spin(&mut self) {
        self.now = Instant::now();
        self.router.now = self.now;
        self.router.shard.new_turn();
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            self.conns[slot].write_blocked = false;
            self.list_read(slot);
            self.list_write(slot);
        }
        assert!(!self.turn(), "not shutting down");
    }

    fn is_open(&self, slot: usize) -> bool {
        self.conns.contains(slot)
    }
}

/// Runs turns until what `pipe` received (gathered into `got`) contains `pattern`.
fn until(worker: &mut Worker, pipe: &Memory, got: &mut Vec<u8>, pattern: &[u8]) {
    for _ in 0..TURNS {
        got.extend(pipe.take());
        if find(got, pattern).is_some() {
            return;
        }
        worker.spin();
    }
    panic!(
        "no {:?} in {:?}",
        String::from_utf8_lossy(pattern),
        String::from_utf8_lossy(got)
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A text connection past its `INFO` and `CONNECT`.
fn text_client(worker: &mut Worker) -> (usize, Memory) {
    let (slot, pipe) = worker.open_memory(Port::Text);
    pipe.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let mut got = Vec::new();
    until(worker, &pipe, &mut got, b"PONG\r\n");
    assert!(got.starts_with(b"INFO {"), "{got:?}");
    (slot, pipe)
}

#[test]
fn a_text_session_subscribes_publishes_and_answers_in_order() {
    let (mut w, _mesh) = worker(Config::default());
    let (_, pipe) = text_client(&mut w);
    pipe.send(b"SUB a.* 1\r\nPUB a.b 2\r\nhi\r\nPING\r\n");
    let mut got = Vec::new();
    until(&mut w, &pipe, &mut got, b"PONG\r\n");
    assert_eq!(got, b"MSG a.b 1 2\r\nhi\r\nPONG\r\n");
    // The client hangs up: the connection closes as the client's doing.
    pipe.close();
    for _ in 0..3 {
        w.spin();
    }
    assert!(w.conns.is_empty());
    let reason = w.closed.back().and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("client closed"));
}

#[test]
fn a_pong_waits_for_the_deliveries_queued_before_its_ping() {
    let mut config = Config::default();
    // Deliveries past 1 KiB of the write buffer wait in the subscription's queue.
    config.queues.write_buffer = 1024;
    let (mut w, _mesh) = worker(config);
    let (_, sub) = text_client(&mut w);
    let (_, publisher) = text_client(&mut w);
    sub.send(b"SUB s 1\r\nPING\r\n");
    until(&mut w, &sub, &mut Vec::new(), b"PONG\r\n");
    // The subscriber's socket takes nothing for now.
    sub.set_room(Some(0));
    let n = 200;
    for i in 0..n {
        publisher.send(format!("PUB s 10\r\nmessage{i:03}\r\n").as_bytes());
    }
    publisher.send(b"PING\r\n");
    until(&mut w, &publisher, &mut Vec::new(), b"PONG\r\n");
    sub.send(b"PING\r\n");
    for _ in 0..10 {
        w.spin();
    }
    assert!(sub.take().is_empty(), "nothing fits the socket yet");
    sub.set_room(None);
    let mut got = Vec::new();
    until(&mut w, &sub, &mut got, b"PONG\r\n");
    assert_eq!(count(&got, b"MSG s 1 10\r\n"), n, "every delivery");
    assert!(
        got.ends_with(b"message199\r\nPONG\r\n"),
        "PONG last: {got:?}"
    );
}

#[test]
fn a_subscription_with_max_msgs_ends_after_them() {
    let (mut w, _mesh) = worker(Config::default());
    let (_, pipe) = text_client(&mut w);
    pipe.send(b"SUB a 1\r\nUNSUB 1 2\r\nPUB a 1\r\nx\r\nPUB a 1\r\ny\r\nPUB a 1\r\nz\r\nPING\r\n");
    let mut got = Vec::new();
    until(&mut w, &pipe, &mut got, b"PONG\r\n");
    assert_eq!(got, b"MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\nPONG\r\n");
}

#[test]
fn text_protocol_errors_are_answered_and_close_the_connection() {
    let mut config = Config::default();
    config.limits.max_payload = 64;
    let (mut w, _mesh) = worker(config);
    let (unknown, pipe) = text_client(&mut w);
    pipe.send(b"FOO bar\r\n");
    let mut got = Vec::new();
    until(&mut w, &pipe, &mut got, b"\r\n");
    assert_eq!(got, b"-ERR 'Unknown Protocol Operation'\r\n");
    w.spin();
    assert!(!w.is_open(unknown));

    let (large, pipe) = text_client(&mut w);
    pipe.send(b"PUB a 65\r\n");
    let mut got = Vec::new();
    until(&mut w, &pipe, &mut got, b"\r\n");
    assert_eq!(got, b"-ERR 'Maximum Payload Violation'\r\n");
    w.spin();
    assert!(!w.is_open(large));

    // A non-fatal one: the connection stays.
    let (bad_sub, pipe) = text_client(&mut w);
    pipe.send(b"SUB a..b 1\r\nPING\r\n");
    let mut got = Vec::new();
    until(&mut w, &pipe, &mut got, b"PONG\r\n");
    assert!(got.starts_with(b"-ERR 'Invalid Subject'"), "{got:?}");
    assert!(w.is_open(bad_sub));
}

/// The next binary frame the worker writes to `pipe`.
fn next_frame(w: &mut Worker, pipe: &Memory, buf: &mut BytesMut) -> Option<ServerFrame> {
    let mut decoder = ServerFrameDecoder::new(Default::default());
    for _ in 0..TURNS {
        buf.extend_from_slice(&pipe.take());
        if let Some(f) = decoder.decode(buf).expect("a valid frame") {
            return Some(f);
        }
        w.spin();
    }
    None
}

#[test]
fn binary_handshake_errors() {
    let (mut w, _mesh) = worker(Config::default());
    // Not Tern's bytes at all: closed, nothing said (the peer could not read a frame).
    let (http, pipe) = w.open_memory(Port::Binary);
    pipe.send(b"GET / HTTP/1.1\r\n\r\n");
    w.spin();
    w.spin();
    assert!(!w.is_open(http));
    assert!(pipe.take().is_empty());
    // Tern's magic, no common version: a fatal UnsupportedVersion.
    let (old, pipe) = w.open_memory(Port::Binary);
    pipe.send(b"TERN\x00\x07\x00\x09");
    match next_frame(&mut w, &pipe, &mut BytesMut::new()) {
        Some(ServerFrame::Error(e)) => {
            assert!(e.fatal, "{e:?}");
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{e:?}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    w.spin();
    assert!(!w.is_open(old));
    // A good preface, then a frame that is not HELLO: a fatal HelloExpected.
    let (rude, pipe) = w.open_memory(Port::Binary);
    let mut out = BytesMut::new();
    tern_protocol::binary::Preface::default().encode(&mut out);
    tern_protocol::binary::encode_client_frame(&tern_protocol::binary::ClientFrame::Ping, &mut out)
        .unwrap();
    pipe.send(&out);
    match next_frame(&mut w, &pipe, &mut BytesMut::new()) {
        Some(ServerFrame::Error(e)) => {
            assert!(e.fatal, "{e:?}");
            assert_eq!(e.code, ErrorCode::HelloExpected, "{e:?}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    w.spin();
    assert!(!w.is_open(rude));
}

#[test]
fn the_disconnect_policy_closes_a_consumer_that_stays_full() {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    config.queues.sub_queue_bytes = 4096;
    config.queues.slow_consumer = SlowConsumerPolicy::Disconnect;
    config.queues.slow_consumer_grace = Duration::from_millis(50);
    let (mut w, _mesh) = worker(config);
    let (stuck, sub) = text_client(&mut w);
    let (_, publisher) = text_client(&mut w);
    sub.send(b"SUB s 1\r\nPING\r\n");
    until(&mut w, &sub, &mut Vec::new(), b"PONG\r\n");
    sub.set_room(Some(0));
    for _ in 0..200 {
        publisher.send(b"PUB s 100\r\n");
        publisher.send(&[b'x'; 100]);
        publisher.send(b"\r\n");
    }
    publisher.send(b"PING\r\n");
    until(&mut w, &publisher, &mut Vec::new(), b"PONG\r\n");
    assert!(w.is_open(stuck), "within its grace time");
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.is_open(stuck) {
        assert!(Instant::now() < deadline, "never closed");
        std::thread::sleep(Duration::from_millis(10));
        w.next_tick = Instant::now();
        w.spin();
    }
    let reason = w.closed.back().and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("slow consumer"));
}

/// A directory of the test's own under the system's temp dir, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("tern-session-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The only worker of a one-worker broker with `config` that stores every message in a
/// ring log in `dir`.
fn storing_worker(config: Config, dir: &std::path::Path) -> (Worker, Mesh) {
    let dedupe = std::sync::Arc::new(crate::dedupe::Dedupe::new(
        Duration::from_secs(120),
        1000,
        1,
    ));
    let (store, _) = crate::store::Store::open(
        &dir.join("shard.ring"),
        &config.store,
        (0, dedupe),
        Instant::now(),
        0,
    )
    .expect("a store");
    super::tests::test_worker_storing(1, config, Some(store))
}

/// A binary connection past its preface, `HELLO` and `WELCOME`.
fn binary_client(worker: &mut Worker) -> (usize, Memory, BytesMut) {
    use tern_protocol::binary::{encode_client_frame, ClientFrame, Hello, Preface};
    let (slot, pipe) = worker.open_memory(Port::Binary);
    let mut out = BytesMut::new();
    Preface::default().encode(&mut out);
    encode_client_frame(&ClientFrame::Hello(Hello::default()), &mut out).unwrap();
    pipe.send(&out);
    let mut buf = BytesMut::new();
    match next_frame(worker, &pipe, &mut buf) {
        Some(ServerFrame::Welcome(_)) => {}
        other => panic!("expected WELCOME, got {other:?}"),
    }
    (slot, pipe, buf)
}

#[test]
fn a_lossless_subscription_that_overflows_falls_back_to_the_log_and_misses_nothing() {
    use std::sync::atomic::Ordering;
    use tern_protocol::binary::{encode_client_frame, ClientFrame, StartPosition, Subscribe};
    const MESSAGES: usize = 400;
    let dir = Scratch::new("lossless");
    let mut config = Config::default();
    config.store.log_size = 1 << 20;
    config.queues.write_buffer = 1024;
    let (mut w, _mesh) = storing_worker(config, &dir.0);
    let (_, sub, mut buf) = binary_client(&mut w);
    let mut out = BytesMut::new();
    let subscribe = Subscribe {
        sid: 1,
        subject: "orders".into(),
        start: StartPosition::Live,
        lossless: true,
        max_queue_messages: 8,
        ..Subscribe::default()
    };
    encode_client_frame(&ClientFrame::Subscribe(subscribe), &mut out).unwrap();
    sub.send(&out);
    match next_frame(&mut w, &sub, &mut buf) {
        Some(ServerFrame::Subscribed(s)) => assert_eq!(s.sid, 1),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    // The subscriber stops reading: its write buffer, then its queue of 8, fill up.
    sub.set_room(Some(0));
    let (_, publisher) = text_client(&mut w);
    for i in 0..MESSAGES {
        publisher.send(format!("PUB orders 8\r\nm{i:07}\r\n").as_bytes());
    }
    publisher.send(b"PING\r\n");
    until(&mut w, &publisher, &mut Vec::new(), b"PONG\r\n");
    let fallbacks = w.router.stats.lossless_fallbacks.load(Ordering::Relaxed);
    assert!(
        fallbacks > 0,
        "the queue of 8 overflowed without a fall-back"
    );
    // It reads again: everything arrives, once, in order, from its queue and then the log.
    sub.set_room(None);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < MESSAGES {
        match next_frame(&mut w, &sub, &mut buf) {
            Some(ServerFrame::Message(m)) => got.push(m.payload),
            Some(ServerFrame::DropNotice(d)) => panic!("a lossless subscription dropped: {d:?}"),
            Some(_) => {}
            // A catch-up is paced while live traffic is recent: give it time.
            None if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
                w.next_tick = Instant::now();
            }
            None => panic!("only {} of {MESSAGES} messages arrived", got.len()),
        }
    }
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, format!("m{i:07}").as_bytes(), "message {i}");
    }
}

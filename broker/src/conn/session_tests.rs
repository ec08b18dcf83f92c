//! A session driven alone: a [`Conn`] over an in-memory pipe ([`Memory`]) with a
//! [`FakeContext`] for the rest of the broker. No worker, router, shard or socket: the test
//! sends the client's bytes, plays the shards' part itself (deliveries, barrier answers)
//! and asserts on the bytes the session wrote and on what it asked of the broker.
//!
//! The same behaviours are also pinned through a real worker in
//! `worker/session_tests.rs`; here each one is isolated from routing and the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_protocol::binary::{
    encode_client_frame, ClientFrame, ErrorCode, Hello, Preface, ServerFrame, ServerFrameDecoder,
    Subscribe, Welcome,
};
use tern_protocol::text::ServerInfo;

use super::access::Access;
use super::fake::FakeContext;
use super::socket::{Memory, Socket};
use super::{Accepted, CloseReason, Conn};
use crate::config::{Config, SlowConsumerPolicy};
use crate::mesh::{ConnId, Msg, Stamp, SubRef};

/// The connection under test's id.
const ID: ConnId = ConnId {
    worker: 0,
    slot: 7,
    gen: 1,
};

/// One session, its pipe and its context.
struct Session {
    conn: Conn,
    pipe: Memory,
    cx: FakeContext,
}

fn accepted(pipe: &Memory) -> Accepted {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    Accepted {
        id: ID,
        client_id: 1,
        peer,
        sock: Socket::Memory(pipe.clone()),
        link: None,
        access: Access::open(0),
    }
}

impl Session {
    /// A text session with `config`, past its `INFO` (taken from the pipe).
    fn text(config: Config) -> Session {
        let cx = FakeContext::new(config);
        let pipe = Memory::default();
        let info = ServerInfo {
            max_payload: cx.config.limits.max_payload,
            ..ServerInfo::default()
        };
        let conn = Conn::text(accepted(&pipe), &info, &cx.config.limits, cx.now);
        let mut s = Session { conn, pipe, cx };
        s.step();
        let greeting = s.pipe.take();
        assert!(greeting.starts_with(b"INFO {"), "{greeting:?}");
        s
    }

    /// A text session past `CONNECT` (not verbose).
    fn connected(config: Config) -> Session {
        let mut s = Session::text(config);
        s.send(b"CONNECT {\"verbose\":false}\r\n");
        assert!(s.pipe.take().is_empty());
        s
    }

    /// A binary session past its preface, `HELLO` and `WELCOME`.
    fn binary(config: Config) -> Session {
        let cx = FakeContext::new(config);
        let pipe = Memory::default();
        let conn = Conn::binary(
            accepted(&pipe),
            &Welcome::default(),
            &cx.config.limits,
            cx.now,
        );
        let mut s = Session { conn, pipe, cx };
        let mut out = BytesMut::new();
        Preface::default().encode(&mut out);
        encode_client_frame(&ClientFrame::Hello(Hello::default()), &mut out).unwrap();
        s.send(&out);
        match s.frames().as_slice() {
            [ServerFrame::Welcome(_)] => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
        s
    }

    /// What the worker does when the connection is readable and writable: reads the pipe
    /// until it would block, applying each read, then writes what is queued.
    fn step(&mut self) {
        let now = self.cx.now;
        if self.conn.read_paused(&mut self.cx, now).is_none() {
            while self.conn.closing.is_none() {
                match self.conn.read_socket(&self.cx) {
                    Ok(0) => self.conn.read_eof(),
                    Ok(_) => {
                        let _ = self.conn.apply_read(&mut self.cx, now, true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => self.conn.read_failed(&e),
                }
            }
        }
        // Writable, as far as the test knows: the pipe says when it is not.
        self.conn.write_blocked = false;
        self.conn.flush(&mut self.cx);
    }

    /// The client sends `bytes`; the session takes them.
    fn send(&mut self, bytes: &[u8]) {
        self.pipe.send(bytes);
        self.step();
    }

    /// What the session wrote since the last look, as text.
    fn written(&self) -> String {
        String::from_utf8(self.pipe.take()).expect("text")
    }

    /// The binary frames the session wrote since the last look.
    fn frames(&self) -> Vec<ServerFrame> {
        let mut buf = BytesMut::from(&self.pipe.take()[..]);
        let mut decoder = ServerFrameDecoder::new(Default::default());
        let mut frames = Vec::new();
        while let Some(f) = decoder.decode(&mut buf).expect("a valid frame") {
            frames.push(f);
        }
        assert!(buf.is_empty(), "a partial frame: {buf:?}");
        frames
    }

    /// A shard hands the session a delivery for `sub`; returns what `Conn::deliver` does.
    fn deliver(&mut self, sub: SubRef, msg: Msg) -> bool {
        self.conn.deliver(sub, &Arc::new(msg), &mut self.cx)
    }

    /// The subscription the session registered `n`th (from 0).
    fn sub(&self, n: usize) -> SubRef {
        self.cx.subscribed[n].0.sub
    }

    fn stat(&self, counter: impl Fn(&crate::stats::WorkerStats) -> u64) -> u64 {
        counter(&self.cx.stats)
    }
}

/// A message on `subject` with `payload`, at `priority`, as the shard stamped it.
fn msg(subject: &'static str, payload: &[u8], priority: u8, seq: u64) -> Msg {
    let mut m = Msg::new(
        Bytes::from_static(subject.as_bytes()),
        Bytes::copy_from_slice(payload),
        ConnId::NONE,
        Instant::now(),
    );
    m.priority = priority;
    m.stamp = Stamp {
        shard: 0,
        seq,
        time_ns: 0,
    };
    m
}

#[test]
fn a_ping_after_no_traffic_is_answered_at_once() {
    let mut s = Session::connected(Config::default());
    s.send(b"PING\r\n");
    assert_eq!(s.written(), "PONG\r\n");
    assert!(s.cx.sent.is_empty(), "no barrier: {:?}", s.cx.sent);
}

#[test]
fn a_pong_is_held_until_the_shard_that_routed_earlier_publishes_answers() {
    let mut s = Session::connected(Config::default());
    s.send(b"PUB a 2\r\nhi\r\nPING\r\n");
    // The publish went to the context to route, and the PING became a barrier behind it.
    assert_eq!(s.cx.published_subjects(), ["a"]);
    assert_eq!(&s.cx.published[0].payload[..], b"hi");
    assert_eq!(s.stat(|st| st.in_msgs.load(Ordering::Relaxed)), 1);
    let barriers = s.cx.barriers();
    assert_eq!(barriers.len(), 1, "{barriers:?}");
    let (to, conn, token) = barriers[0];
    assert_eq!(
        (to, conn),
        (0, ID),
        "to this worker's shard, for this connection"
    );
    assert_eq!(s.written(), "", "no PONG before the shard answers");
    // The shard answers: the PONG goes out.
    assert!(s.conn.barrier_done(token, &mut s.cx));
    s.step();
    assert_eq!(s.written(), "PONG\r\n");
}

#[test]
fn a_pong_waits_for_every_shard_a_subscription_went_to_and_pongs_keep_ping_order() {
    let mut s = Session::connected(Config::default());
    s.cx.workers = 3;
    s.send(b"SUB a 1\r\nPING\r\n");
    assert_eq!(s.cx.subscribed.len(), 1);
    let first: Vec<_> = s.cx.barriers();
    assert_eq!(
        first.iter().map(|b| b.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "a barrier to each shard holding the subscription"
    );
    // A second PING behind the first, after no traffic: it waits for the first's PONG.
    s.send(b"PING\r\n");
    assert_eq!(s.cx.barriers().len(), 3, "no new barrier");
    let token = first[0].2;
    assert!(!s.conn.barrier_done(token, &mut s.cx));
    assert!(!s.conn.barrier_done(token, &mut s.cx));
    s.step();
    assert_eq!(s.written(), "", "one shard still owes an answer");
    assert!(s.conn.barrier_done(token, &mut s.cx));
    s.step();
    assert_eq!(s.written(), "PONG\r\nPONG\r\n", "both, in PING order");
}

#[test]
fn a_pong_waits_behind_the_deliveries_queued_before_its_ping() {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\nPING\r\n");
    // The subscription went to the shard: the PING waits for the shard's answer.
    let barriers = s.cx.barriers();
    assert_eq!(barriers.len(), 1, "{barriers:?}");
    s.conn.barrier_done(barriers[0].2, &mut s.cx);
    s.step();
    assert_eq!(s.written(), "PONG\r\n");
    let sub = s.sub(0);
    // The client's socket takes nothing: deliveries past 1 KiB wait in the queue.
    s.pipe.set_room(Some(0));
    for i in 0..20 {
        let payload = format!("{i:0>100}");
        assert!(s.deliver(sub, msg("s", payload.as_bytes(), 0, i + 1)));
    }
    s.send(b"PING\r\n");
    assert_eq!(
        s.cx.barriers().len(),
        1,
        "no traffic of its own since: no barrier"
    );
    assert_eq!(s.written(), "");
    s.pipe.set_room(None);
    s.step();
    let got = s.written();
    assert_eq!(got.matches("MSG s 1 100\r\n").count(), 20, "{got}");
    let last = format!("{:0>100}\r\nPONG\r\n", 19);
    assert!(got.ends_with(&last), "PONG after every delivery: {got}");
}

#[test]
fn unsub_with_max_ends_the_subscription_after_that_many_deliveries() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB a 1\r\nUNSUB 1 2\r\n");
    assert_eq!(s.cx.subscribed.len(), 1);
    assert!(s.cx.unsubscribed.is_empty(), "not before its 2 deliveries");
    assert_eq!(s.stat(|st| st.subscriptions.load(Ordering::Relaxed)), 1);
    let sub = s.sub(0);
    assert!(s.deliver(sub, msg("a", b"x", 0, 1)));
    assert!(s.cx.unsubscribed.is_empty());
    // The second is its last: it is written and the subscription leaves every shard.
    assert!(s.deliver(sub, msg("a", b"y", 0, 2)));
    assert_eq!(s.cx.unsubscribed.len(), 1);
    assert_eq!(s.cx.unsubscribed[0].sub, sub);
    assert_eq!(&s.cx.unsubscribed[0].filter[..], b"a");
    assert_eq!(s.stat(|st| st.subscriptions.load(Ordering::Relaxed)), 0);
    // A third, routed before the shard heard of it, is stale.
    assert!(!s.deliver(sub, msg("a", b"z", 0, 3)));
    s.step();
    assert_eq!(s.written(), "MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\n");
}

#[test]
fn unsub_frees_the_sid_at_once_but_takes_what_was_routed_before_its_barrier() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB a 1\r\nUNSUB 1\r\n");
    let sub = s.sub(0);
    assert_eq!(s.cx.unsubscribed.len(), 1);
    assert_eq!(s.stat(|st| st.subscriptions.load(Ordering::Relaxed)), 0);
    let barriers = s.cx.barriers();
    assert_eq!(barriers.len(), 1, "{barriers:?}");
    // Routed before the unsubscription reached the shard: still delivered.
    assert!(s.deliver(sub, msg("a", b"x", 0, 1)));
    // The sid is free: a new subscription may take it.
    s.send(b"SUB b 1\r\n");
    assert_eq!(s.cx.subscribed.len(), 2);
    // The shard answers the barrier behind the unsubscription: nothing more arrives.
    s.conn.barrier_done(barriers[0].2, &mut s.cx);
    assert!(!s.deliver(sub, msg("a", b"late", 0, 2)));
    assert!(s.deliver(s.sub(1), msg("b", b"y", 0, 3)));
    s.step();
    assert_eq!(s.written(), "MSG a 1 1\r\nx\r\nMSG b 1 1\r\ny\r\n");
}

/// A subscriber whose socket takes nothing, with a queue of 4 behind a 1 KiB write
/// buffer: two deliveries of 600 bytes fill the buffer, four more the queue.
fn full_subscriber(policy: SlowConsumerPolicy) -> (Session, SubRef) {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    config.queues.sub_queue_messages = 4;
    config.queues.slow_consumer = policy;
    config.queues.slow_consumer_grace = Duration::from_millis(50);
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    s.pipe.set_room(Some(0));
    // Seqs 1 and 2 go to the write buffer; 3 (priority 0), 4 (priority 7), 5 and 6
    // (priority 0) to the queue.
    for (seq, priority) in [(1, 0), (2, 0), (3, 0), (4, 7), (5, 0), (6, 0)] {
        let payload = format!("{seq:0>600}");
        assert!(s.deliver(sub, msg("s", payload.as_bytes(), priority, seq)));
    }
    assert_eq!(
        s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)),
        0
    );
    (s, sub)
}

#[test]
fn an_overflowing_queue_drops_its_lowest_priority_oldest_and_says_so() {
    let (mut s, sub) = full_subscriber(SlowConsumerPolicy::Drop);
    // Two more at priority 0: each pushes out the oldest priority-0 message queued (3,
    // then 5), never the priority-7 one (4).
    assert!(s.deliver(sub, msg("s", &[b'7'; 600], 0, 7)));
    assert!(s.deliver(sub, msg("s", &[b'8'; 600], 0, 8)));
    assert_eq!(
        s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)),
        2
    );
    assert_eq!(s.conn.queue_dropped, 2);
    // Nothing is lost from the write buffer, and the connection stays.
    assert!(s.conn.closing.is_none());
    s.conn
        .tick(Instant::now(), &s.cx.config.limits.clone(), &mut s.cx);
    assert!(s.conn.closing.is_none(), "the drop policy keeps it");
    s.pipe.set_room(None);
    s.step();
    let got = s.written();
    let seqs: Vec<String> = got
        .split("\r\n")
        .filter(|line| line.len() == 600)
        .map(|p| p.trim_start_matches('0').chars().take(1).collect())
        .collect();
    assert_eq!(seqs, ["1", "2", "4", "6", "7", "8"], "{got}");
    // The drop notice goes ahead of the queue's first delivery after the drops.
    let notice = "MSG $TERN.DROPPED 1 ";
    let at = got.find(notice).expect("a drop notice");
    let second = got.find(&format!("{:0>600}", 2)).unwrap();
    let fourth = got.find(&format!("{:0>600}", 4)).unwrap();
    assert!(second < at && at < fourth, "{got}");
    assert!(got[at..].contains("\"dropped\":2"), "{got}");
    assert!(got[at..].contains("\"first\":3,\"last\":3"), "{got}");
    assert!(got[at..].contains("\"first\":5,\"last\":5"), "{got}");
}

#[test]
fn the_disconnect_policy_closes_a_consumer_over_its_mark_past_the_grace_time() {
    let (mut s, sub) = full_subscriber(SlowConsumerPolicy::Disconnect);
    assert!(s.deliver(sub, msg("s", &[b'7'; 600], 0, 7)));
    let limits = s.cx.config.limits.clone();
    s.conn.tick(Instant::now(), &limits, &mut s.cx);
    assert!(s.conn.closing.is_none(), "within its grace time");
    s.conn
        .tick(Instant::now() + Duration::from_secs(1), &limits, &mut s.cx);
    assert_eq!(s.conn.closing, Some(CloseReason::SlowConsumer));
    assert_eq!(s.stat(|st| st.slow_consumers.load(Ordering::Relaxed)), 1);
    // The two deliveries in the write buffer never go out; they are counted.
    assert_eq!(s.stat(|st| st.dropped_msgs.load(Ordering::Relaxed)), 2);
    s.pipe.set_room(None);
    s.step();
    assert_eq!(s.written(), "-ERR 'Slow Consumer'\r\n");
}

#[test]
fn an_unknown_text_operation_is_answered_and_closes() {
    let mut s = Session::connected(Config::default());
    s.send(b"FOO bar\r\nPUB a 1\r\nx\r\n");
    assert_eq!(s.written(), "-ERR 'Unknown Protocol Operation'\r\n");
    assert!(matches!(
        s.conn.closing,
        Some(CloseReason::ProtocolError(_))
    ));
    assert!(s.cx.published.is_empty(), "nothing after it is applied");
    assert_eq!(s.stat(|st| st.protocol_errors.load(Ordering::Relaxed)), 1);
}

#[test]
fn a_bad_pub_line_is_answered_and_closes() {
    let mut s = Session::connected(Config::default());
    s.send(b"PUB a b c d\r\n");
    assert_eq!(
        s.written(),
        "-ERR 'Parser Error: PUB expects <subject> [reply] <size>'\r\n"
    );
    assert!(matches!(
        s.conn.closing,
        Some(CloseReason::ProtocolError(_))
    ));
    assert!(s.cx.published.is_empty());
    assert_eq!(s.stat(|st| st.protocol_errors.load(Ordering::Relaxed)), 1);
}

#[test]
fn a_payload_over_max_payload_is_refused_from_its_line_and_closes() {
    let mut config = Config::default();
    config.limits.max_payload = 64;
    let mut s = Session::connected(config);
    s.send(b"PUB a 64\r\n");
    s.send(&[b'x'; 64]);
    s.send(b"\r\n");
    assert_eq!(s.cx.published.len(), 1, "64 bytes pass");
    s.send(b"PUB a 65\r\n");
    assert_eq!(s.written(), "-ERR 'Maximum Payload Violation'\r\n");
    assert!(matches!(
        s.conn.closing,
        Some(CloseReason::ProtocolError(_))
    ));
    assert_eq!(s.cx.published.len(), 1);
}

#[test]
fn an_invalid_publish_subject_is_refused_and_the_connection_stays() {
    let mut s = Session::connected(Config::default());
    s.send(b"PUB a..b 1\r\nx\r\nPUB a 1\r\ny\r\n");
    assert_eq!(s.written(), "-ERR 'Invalid Publish Subject'\r\n");
    assert!(s.conn.closing.is_none());
    assert_eq!(s.cx.published_subjects(), ["a"], "the next one goes on");
}

#[test]
fn a_malformed_binary_frame_gets_a_fatal_error_frame() {
    let mut s = Session::binary(Config::default());
    // length 2 (type and flags), type 0xff: no such frame.
    s.send(&[0, 0, 0, 2, 0xff, 0]);
    match s.frames().as_slice() {
        [ServerFrame::Error(e)] => {
            assert!(e.fatal, "{e:?}");
            assert_eq!(e.code, ErrorCode::ProtocolViolation, "{e:?}");
            assert_eq!(&e.message[..], b"unknown frame type 0xff");
        }
        other => panic!("expected one ERROR frame, got {other:?}"),
    }
    assert!(matches!(
        s.conn.closing,
        Some(CloseReason::ProtocolError(_))
    ));
    assert_eq!(s.stat(|st| st.protocol_errors.load(Ordering::Relaxed)), 1);
}

#[test]
fn a_binary_subscribe_to_an_invalid_filter_is_refused_and_the_connection_stays() {
    let mut s = Session::binary(Config::default());
    let mut out = BytesMut::new();
    let bad = Subscribe {
        sid: 9,
        subject: Bytes::from_static(b"a..b"),
        ..Subscribe::default()
    };
    encode_client_frame(&ClientFrame::Subscribe(bad), &mut out).unwrap();
    encode_client_frame(&ClientFrame::Ping, &mut out).unwrap();
    s.send(&out);
    match s.frames().as_slice() {
        [ServerFrame::Error(e), ServerFrame::Pong] => {
            assert!(!e.fatal, "{e:?}");
            assert_eq!(e.code, ErrorCode::InvalidSubject, "{e:?}");
            assert_eq!(e.sid, Some(9), "{e:?}");
        }
        other => panic!("expected ERROR then PONG, got {other:?}"),
    }
    assert!(s.conn.closing.is_none());
    assert!(s.cx.subscribed.is_empty());
}

#[test]
fn a_binary_subscription_is_registered_and_ended_through_the_context() {
    let mut s = Session::binary(Config::default());
    let mut out = BytesMut::new();
    let sub = Subscribe {
        sid: 3,
        subject: Bytes::from_static(b"rooms.*"),
        ..Subscribe::default()
    };
    encode_client_frame(&ClientFrame::Subscribe(sub), &mut out).unwrap();
    s.send(&out);
    assert_eq!(s.cx.subscribed.len(), 1);
    assert_eq!(&s.cx.subscribed[0].0.filter[..], b"rooms.*");
    assert_eq!(s.cx.subscribed[0].0.sub.conn, ID);
    // The connection closes: its subscriptions leave every shard.
    s.conn.unsubscribe_all(&mut s.cx);
    assert_eq!(s.cx.unsubscribed.len(), 1);
    assert_eq!(s.cx.unsubscribed[0].sub, s.sub(0));
    assert_eq!(s.stat(|st| st.subscriptions.load(Ordering::Relaxed)), 0);
}

/// A stored message of shard 0 with sequence `seq`, as a shard delivers it live
/// (`replayed` false) or from its log.
fn stored(seq: u64, replayed: bool) -> Msg {
    let mut m = msg("orders", format!("m{seq:07}").as_bytes(), 0, seq);
    m.stored = true;
    m.replayed = replayed;
    m
}

#[test]
fn a_lossless_subscription_that_overflows_falls_back_to_the_log_and_misses_nothing() {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    let mut s = Session::binary(config);
    let mut out = BytesMut::new();
    let subscribe = Subscribe {
        sid: 1,
        subject: Bytes::from_static(b"orders"),
        lossless: true,
        max_queue_messages: 8,
        ..Subscribe::default()
    };
    encode_client_frame(&ClientFrame::Subscribe(subscribe), &mut out).unwrap();
    s.send(&out);
    let sub = s.sub(0);
    // The shard says where the subscription starts: nothing stored yet.
    s.conn.position(sub, 0, 0, &mut s.cx);
    s.step();
    match s.frames().as_slice() {
        [ServerFrame::Subscribed(x)] => assert_eq!(x.sid, 1),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    // The client stops reading: the write buffer, then the queue of 8, fill up, and the
    // next stored message makes it fall back to the log from the last one it took.
    s.pipe.set_room(Some(0));
    let mut seq = 0;
    while s.cx.lags.is_empty() {
        seq += 1;
        assert!(seq < 100, "no fall-back");
        s.deliver(sub, stored(seq, false));
    }
    let (shard, lag_sub, from, credit, lag) = s.cx.lags[0];
    assert_eq!(
        (shard, lag_sub, from, credit),
        (0, sub, seq, 0),
        "from the one it missed"
    );
    assert_eq!(
        s.stat(|st| st.lossless_fallbacks.load(Ordering::Relaxed)),
        1
    );
    assert_eq!(
        s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)),
        0
    );
    // What the shard sent live before it heard of the fall-back is discarded: the log
    // brings it again.
    assert!(!s.deliver(sub, stored(seq + 1, false)));
    s.conn.lag_ack(sub, 0, lag, &mut s.cx);
    assert!(s.cx.grants.is_empty(), "no credit while the queue is full");
    // The client reads again: the queue drains, and the shard is granted credit.
    s.pipe.set_room(None);
    s.step();
    assert!(!s.cx.grants.is_empty(), "credit once the queue has room");
    assert!(s.cx.grants.iter().all(|g| g.0 == 0 && g.1 == sub));
    // The shard replays from `from` on, as far as its credit goes, then goes live.
    let last = seq + 5;
    for replayed in from..=last {
        assert!(s.deliver(sub, stored(replayed, true)), "seq {replayed}");
    }
    s.step();
    let mut got = Vec::new();
    for frame in s.frames() {
        match frame {
            ServerFrame::Message(m) => got.push(String::from_utf8(m.payload.to_vec()).unwrap()),
            ServerFrame::DropNotice(d) => panic!("a lossless subscription dropped: {d:?}"),
            _ => {}
        }
    }
    let want: Vec<String> = (1..=last).map(|i| format!("m{i:07}")).collect();
    assert_eq!(got, want, "every message once, in order");
}

//! A session driven alone, by bytes in and bytes out: a [`Conn`] whose I/O layer is never
//! used (`Io::detached`), with a [`FakeContext`] for the rest of the broker. No worker,
//! router, shard, socket or pipe: the test hands the session the client's bytes
//! (`Conn::received`), plays the shards' part itself (deliveries, barrier answers), takes
//! what the session wrote from its outbound queue into a plain buffer of the test's
//! ([`Peer`], through `Conn::flush_to`) and asserts on those bytes and on what the session
//! asked of the broker.
//!
//! The same behaviours are also pinned through a real worker, its I/O layer and an
//! in-memory pipe in `worker/session_tests.rs`; here each one is isolated from routing,
//! the loop and the socket.

use std::io::{self, IoSlice, Write};
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
use super::congestion::Signal;
use super::fake::FakeContext;
use super::io::{Io, Transmit};
use super::link::{Failure, LinkKind};
use super::{Accepted, CloseReason, Conn};
use crate::config::{Config, SlowConsumerPolicy};
use crate::mesh::{ConnId, Msg, Stamp, SubRef};
use crate::outbound::Outbound;
use crate::stats::TransportFailure;

/// The connection under test's id.
const ID: ConnId = ConnId {
    worker: 0,
    slot: 7,
    gen: 1,
};

/// The client's end, as the session sees it through its bytes: what the client sent and
/// the session has not taken yet (it was not read: paused), and what the session wrote.
#[derive(Default)]
struct Peer {
    input: Vec<u8>,
    /// The client closed its side, after `input`.
    eof: bool,
    output: Vec<u8>,
    /// How many more bytes the client takes before a write would block (`None`: any), as
    /// a full send buffer does; taking output does not make room, only this does.
    room: Option<usize>,
    /// The next write fails with this.
    fail: Option<io::ErrorKind>,
    /// Bytes written that the client has not read yet, as the kernel's send queue says.
    unread: usize,
}

impl Transmit for Peer {
    fn transmit(&mut self, out: &mut Outbound) -> io::Result<usize> {
        if let Some(kind) = self.fail.take() {
            return Err(kind.into());
        }
        out.write_to(self)
    }

    fn unsent(&self) -> usize {
        0
    }

    fn unread(&self) -> usize {
        self.unread
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut written = 0;
        for b in bufs {
            let take = self.room.map_or(b.len(), |room| b.len().min(room));
            self.output.extend_from_slice(&b[..take]);
            written += take;
            if let Some(room) = &mut self.room {
                *room -= take;
            }
            if take < b.len() {
                break;
            }
        }
        if written == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One session, its client's end and its context.
struct Session {
    conn: Conn,
    peer: Peer,
    cx: FakeContext,
}

fn accepted() -> Accepted {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    Accepted {
        id: ID,
        client_id: 1,
        peer,
        access: Access::open(0),
    }
}

impl Session {
    /// A text session with `config`, past its `INFO` (taken from what it wrote).
    fn text(config: Config) -> Session {
        let cx = FakeContext::new(config);
        let info = ServerInfo {
            max_payload: cx.config.limits.max_payload,
            ..ServerInfo::default()
        };
        let conn = Conn::text(accepted(), Io::detached(), &info, &cx.config.limits, cx.now);
        let mut s = Session {
            conn,
            peer: Peer::default(),
            cx,
        };
        s.step();
        let greeting = s.take();
        assert!(greeting.starts_with(b"INFO {"), "{greeting:?}");
        s
    }

    /// A text session past `CONNECT` (not verbose).
    fn connected(config: Config) -> Session {
        let mut s = Session::text(config);
        s.send(b"CONNECT {\"verbose\":false}\r\n");
        assert!(s.take().is_empty());
        s
    }

    /// A binary session past its preface, `HELLO` and `WELCOME`.
    fn binary(config: Config) -> Session {
        Session::binary_with(config, Hello::default())
    }

    /// A binary session past its preface, this `HELLO` and `WELCOME`.
    fn binary_with(config: Config, hello: Hello) -> Session {
        Session::binary_in(FakeContext::new(config), hello)
    }

    /// [`Session::binary_with`], in this context.
    fn binary_in(cx: FakeContext, hello: Hello) -> Session {
        let conn = Conn::binary(
            accepted(),
            Io::detached(),
            &Welcome::default(),
            &cx.config.limits,
            cx.now,
        );
        let mut s = Session {
            conn,
            peer: Peer::default(),
            cx,
        };
        let mut out = BytesMut::new();
        Preface::default().encode(&mut out);
        encode_client_frame(&ClientFrame::Hello(hello), &mut out).unwrap();
        s.send(&out);
        match s.frames().as_slice() {
            [ServerFrame::Welcome(_)] => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
        s
    }

    /// What the worker does when the connection is readable and writable, with bytes for
    /// the socket: unless its reading is paused, the session is handed what the client
    /// sent (or told it closed) and applies it; then what it queued is written.
    fn step(&mut self) {
        let now = self.cx.now;
        if self.conn.closing.is_none() && self.conn.read_paused(&mut self.cx, now).is_none() {
            let input = std::mem::take(&mut self.peer.input);
            if !input.is_empty() {
                self.conn.received(&input);
                let _ = self.conn.apply_read(&mut self.cx, now, true);
            }
            if self.peer.eof && self.conn.closing.is_none() {
                self.conn.read_eof();
            }
        }
        // Writable, as far as the test knows: the peer says when it is not.
        self.conn.write_blocked = false;
        self.conn.flush_to(&mut self.peer, &mut self.cx);
    }

    /// The client sends `bytes`; the session takes them.
    fn send(&mut self, bytes: &[u8]) {
        self.peer.input.extend_from_slice(bytes);
        self.step();
    }

    /// A binary client sends `frame`; the session takes it.
    fn send_frame(&mut self, frame: &ClientFrame) {
        let mut out = BytesMut::new();
        encode_client_frame(frame, &mut out).unwrap();
        self.send(&out);
    }

    /// What the session wrote since the last look.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.peer.output)
    }

    /// What the session wrote since the last look, as text.
    fn written(&mut self) -> String {
        String::from_utf8(self.take()).expect("text")
    }

    /// The binary frames the session wrote since the last look.
    fn frames(&mut self) -> Vec<ServerFrame> {
        let mut buf = BytesMut::from(&self.take()[..]);
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
    s.peer.room = Some(0);
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
    s.peer.room = None;
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
    s.peer.room = Some(0);
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
    s.peer.room = None;
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
    s.peer.room = None;
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
    s.send_frame(&ClientFrame::Subscribe(Subscribe {
        sid: 3,
        subject: Bytes::from_static(b"rooms.*"),
        ..Subscribe::default()
    }));
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
    s.send_frame(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::from_static(b"orders"),
        lossless: true,
        max_queue_messages: 8,
        ..Subscribe::default()
    }));
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
    s.peer.room = Some(0);
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
    s.peer.room = None;
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

/// The bytes-out interface: the test takes what the session queued, as the I/O layer
/// would, and tells the session when it went out.
#[test]
fn written_bytes_record_their_latency_and_drain_the_congestion_window() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    let m = msg("s", b"hello", 0, 1);
    let received = m.received;
    assert!(s.deliver(sub, m));
    let mut out = Vec::new();
    let n = s.conn.out.write_to(&mut out).unwrap();
    assert_eq!(out, b"MSG s 1 5\r\nhello\r\n");
    assert!(
        s.cx.latency.summary().count == 0,
        "nothing recorded before it is written"
    );
    let drained = s.conn.session.congestion.drained_in_window();
    let sent = received + Duration::from_millis(5);
    s.conn.session.wrote(n, sent, &mut s.cx);
    let latency = s.cx.latency.summary();
    assert_eq!(latency.count, 1, "one delivery whose last byte went out");
    assert_eq!(latency.sum_micros, 5000, "from its receipt to its write");
    assert_eq!(s.conn.session.congestion.drained_in_window(), drained + n);
}

#[test]
fn only_deliveries_written_whole_have_their_latency_recorded() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    assert!(s.deliver(sub, msg("s", b"first", 0, 1)));
    assert!(s.deliver(sub, msg("s", b"second", 0, 2)));
    // The client takes the first delivery and half of the second.
    s.peer.room = Some("MSG s 1 5\r\nfirst\r\nMSG s 1 6".len());
    s.step();
    assert_eq!(s.cx.latency.summary().count, 1);
    assert!(
        s.conn.write_blocked,
        "the rest waits for the writable event"
    );
    s.peer.room = None;
    s.step();
    assert_eq!(s.cx.latency.summary().count, 2);
    assert_eq!(s.written(), "MSG s 1 5\r\nfirst\r\nMSG s 1 6\r\nsecond\r\n");
}

#[test]
fn a_failed_write_closes_with_an_io_error_and_counts_what_never_went_out() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    assert!(s.deliver(sub, msg("s", b"x", 0, 1)));
    s.peer.fail = Some(io::ErrorKind::BrokenPipe);
    s.step();
    assert!(
        matches!(&s.conn.closing, Some(CloseReason::Io(e)) if e.contains("broken pipe")),
        "{:?}",
        s.conn.closing
    );
    assert_eq!(s.written(), "");
    assert!(!s.conn.has_output());
    assert_eq!(s.stat(|st| st.dropped_msgs.load(Ordering::Relaxed)), 1);
}

#[test]
fn the_end_of_input_closes_as_the_client_did_after_what_it_sent() {
    let mut s = Session::connected(Config::default());
    s.peer.eof = true;
    s.send(b"PUB a 1\r\nx\r\n");
    assert_eq!(
        s.cx.published_subjects(),
        ["a"],
        "what came before it is applied"
    );
    assert_eq!(s.conn.closing, Some(CloseReason::ClientClosed));
    // A read error instead: closed as an I/O error.
    let mut s = Session::connected(Config::default());
    s.conn.read_failed(&io::ErrorKind::ConnectionReset.into());
    assert!(matches!(s.conn.closing, Some(CloseReason::Io(_))));
}

/// A transport failure as the I/O layer reports it.
fn failure(kind: TransportFailure) -> Failure {
    Failure {
        reason: CloseReason::Transport("the transport failed".into()),
        kind,
    }
}

#[test]
fn a_plain_text_client_on_a_tls_port_is_told_in_its_protocol_and_closed() {
    let plain = || failure(TransportFailure::PlainText);
    let counted = |s: &Session| {
        s.stat(|st| {
            st.transport_failures[TransportFailure::PlainText as usize].load(Ordering::Relaxed)
        })
    };
    // The text port: nats-server's words.
    let mut s = Session::text(Config::default());
    let conn = &mut s.conn;
    let said = conn
        .session
        .transport_failed(&conn.proto, plain(), LinkKind::Tls, &s.cx);
    assert_eq!(
        said.as_deref(),
        Some(&b"-ERR 'Secure Connection - TLS Required'\r\n"[..])
    );
    assert_eq!(
        s.conn.closing,
        Some(CloseReason::Transport("the transport failed".into()))
    );
    assert_eq!(counted(&s), 1);
    // The binary port: a fatal ERROR frame.
    let mut s = Session::binary(Config::default());
    let conn = &mut s.conn;
    let said = conn
        .session
        .transport_failed(&conn.proto, plain(), LinkKind::Tls, &s.cx)
        .expect("something said");
    let mut buf = BytesMut::from(&said[..]);
    match ServerFrameDecoder::new(Default::default()).decode(&mut buf) {
        Ok(Some(ServerFrame::Error(e))) => {
            assert!(e.fatal, "{e:?}");
            assert_eq!(e.code, ErrorCode::ProtocolViolation, "{e:?}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    // The WebSocket port over TLS: an HTTP answer, whatever the protocol would have been.
    let mut s = Session::text(Config::default());
    let conn = &mut s.conn;
    let said = conn
        .session
        .transport_failed(&conn.proto, plain(), LinkKind::WebSocketTls, &s.cx)
        .expect("something said");
    assert!(
        said.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{said:?}"
    );
    assert!(said.ends_with(b"\r\n\r\nTLS required\n"), "{said:?}");
}

#[test]
fn a_failed_transport_says_nothing_more_and_closes_with_its_reason() {
    let mut s = Session::connected(Config::default());
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    s.peer.room = Some(0);
    assert!(s.deliver(sub, msg("s", b"x", 0, 1)));
    let conn = &mut s.conn;
    let said = conn.session.transport_failed(
        &conn.proto,
        failure(TransportFailure::Tls),
        LinkKind::Tls,
        &s.cx,
    );
    assert!(said.is_none());
    assert_eq!(
        s.conn.closing,
        Some(CloseReason::Transport("the transport failed".into()))
    );
    assert!(!s.conn.has_output(), "what was queued is dropped");
    assert_eq!(s.stat(|st| st.dropped_msgs.load(Ordering::Relaxed)), 1);
    let tls = TransportFailure::Tls as usize;
    assert_eq!(
        s.stat(|st| st.transport_failures[tls].load(Ordering::Relaxed)),
        1
    );
}

/// A consumer over `max_pending` whose socket is not known to be full asks for a write
/// before anything queued is given up; what is still over after it goes.
#[test]
fn over_budget_the_session_asks_for_a_write_before_it_evicts() {
    let mut config = Config::default();
    config.limits.max_pending = 4096;
    config.limits.max_payload = 1024;
    config.queues.write_buffer = 1024;
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    s.peer.room = Some(0);
    let mut seq = 0;
    // The write buffer fills first (a write is asked for and not made here), then the
    // subscription's queue, then the budget.
    while s.conn.pending() <= 4096 {
        seq += 1;
        assert!(seq < 100, "never over budget");
        assert!(s.deliver(sub, msg("s", &[b'x'; 500], 0, seq)));
    }
    assert!(s.conn.wants_flush());
    assert_eq!(
        s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)),
        0,
        "nothing evicted before the write"
    );
    // The client takes nothing: after the write, what is over goes.
    s.conn.flush_to(&mut s.peer, &mut s.cx);
    assert!(!s.conn.wants_flush());
    assert!(s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)) > 0);
    assert!(s.conn.pending() <= 4096);
    // A client that reads takes it all instead, and nothing goes.
    let mut config = Config::default();
    config.limits.max_pending = 4096;
    config.limits.max_payload = 1024;
    config.queues.write_buffer = 1024;
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    let mut seq = 0;
    while s.conn.pending() <= 4096 {
        seq += 1;
        assert!(seq < 100, "never over budget");
        assert!(s.deliver(sub, msg("s", &[b'x'; 500], 0, seq)));
    }
    assert!(s.conn.wants_flush());
    s.conn.flush_to(&mut s.peer, &mut s.cx);
    assert_eq!(
        s.stat(|st| st.queue_dropped_msgs.load(Ordering::Relaxed)),
        0
    );
    let got = s.written();
    assert_eq!(got.matches("MSG s 1 500\r\n").count(), seq as usize);
}

/// A text session with a 1 KiB write buffer, subscribed to `s` (sid 1).
fn small_write_buffer() -> (Session, SubRef) {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    (s, sub)
}

/// Delivers 300-byte messages to `sub`, numbered on from `seq`, until one asks for a
/// write (`wants_flush`); returns the last number delivered.
fn deliver_until_a_write_is_asked(s: &mut Session, sub: SubRef, mut seq: u64) -> u64 {
    let first = seq;
    while !s.conn.wants_flush() {
        seq += 1;
        assert!(seq - first < 20, "no write asked for past the write buffer");
        assert!(s.deliver(sub, msg("s", &[b'x'; 300], 0, seq)));
    }
    seq
}

/// A delivery that fills the write buffer asks for a write while the socket is not known
/// to be full: a client that reads gets every delivery straight into the outbound buffer,
/// none through its subscription's queue (a copy of each message and a refill).
#[test]
fn a_full_write_buffer_asks_for_a_write_before_anything_is_queued() {
    let (mut s, sub) = small_write_buffer();
    let mut seq = 0;
    for _ in 0..3 {
        seq = deliver_until_a_write_is_asked(&mut s, sub, seq);
        assert!(!s.conn.has_backlog(), "a delivery up to {seq} was queued");
        s.conn.flush_to(&mut s.peer, &mut s.cx);
        assert!(!s.conn.wants_flush());
    }
    assert_eq!(s.conn.waiting(), (0, 0));
    let got = s.written();
    assert_eq!(got.matches("MSG s 1 300\r\n").count(), seq as usize);
    // A socket that is full takes nothing more: what follows is queued, and no write is
    // asked for until the budget says so.
    s.peer.room = Some(0);
    for _ in 0..8 {
        seq += 1;
        assert!(s.deliver(sub, msg("s", &[b'x'; 300], 0, seq)));
        if s.conn.wants_flush() {
            s.conn.flush_to(&mut s.peer, &mut s.cx);
        }
    }
    assert!(s.conn.has_backlog());
    assert!(!s.conn.wants_flush());
}

/// A client that has not read what its socket took is not written to at once: what the
/// kernel already holds for it is enough, the buffer waits for the loop turn's write and
/// the next deliveries are queued (and dropped by the queue's rules, not parked in the
/// kernel).
#[test]
fn a_client_that_does_not_read_is_not_written_to_at_once() {
    let (mut s, sub) = small_write_buffer();
    s.peer.unread = 1024;
    let mut seq = deliver_until_a_write_is_asked(&mut s, sub, 0);
    s.conn.flush_to(&mut s.peer, &mut s.cx);
    assert!(!s.conn.wants_flush());
    assert!(
        s.peer.output.is_empty(),
        "written though the client reads nothing"
    );
    seq += 1;
    assert!(s.deliver(sub, msg("s", &[b'x'; 300], 0, seq)));
    assert!(s.conn.has_backlog(), "the next delivery was not queued");
    assert!(!s.conn.wants_flush());
    // The loop turn's own write still goes out, and the queue refills behind it.
    s.conn.flush_to(&mut s.peer, &mut s.cx);
    assert_eq!(s.written().matches("MSG s 1 300\r\n").count(), seq as usize);
    assert_eq!(s.conn.waiting(), (0, 0));
}

/// What the connection under test keeps on the heap beyond its own struct: the bytes
/// freed when it is dropped (the counting allocator of the unit tests, this thread only).
fn kept_on_heap(s: Session) -> isize {
    let Session { conn, peer, cx } = s;
    drop((peer, cx));
    let before = crate::test_alloc::live_bytes();
    drop(conn);
    before - crate::test_alloc::live_bytes()
}

/// An idle connection keeps no buffer once the ping timer has ticked: not its read buffer,
/// not what its greeting and its last replies grew the outbound queue to, and not (on the
/// binary port) the read buffer its `HELLO` came in, which the client's name kept alive
/// as a slice of it. 512 bytes of the first read buffer at least, whichever way it stays.
#[test]
fn an_idle_connection_keeps_no_buffer_after_the_tick() {
    for binary in [false, true] {
        let mut s = if binary {
            let hello = Hello {
                client_name: Bytes::from_static(b"dashboard-7"),
                client_version: Bytes::from_static(b"tern-client/0.1.0"),
                ..Hello::default()
            };
            Session::binary_with(Config::default(), hello)
        } else {
            Session::connected(Config::default())
        };
        s.send(if binary { b"" } else { b"PING\r\n" });
        let limits = s.cx.config.limits.clone();
        s.conn.tick(s.cx.now, &limits, &mut s.cx);
        let kept = kept_on_heap(s);
        assert!(kept < 256, "binary {binary}: {kept} bytes kept");
    }
}

/// `n` records on subject `s` (payload: the sequence, zero-padded to 600 bytes) as a
/// catch-up step sends them: copied out of a ring log as it stores them, into one run,
/// whose bytes count in `in_flight`.
fn run_of(n: u64, in_flight: &Arc<std::sync::atomic::AtomicUsize>) -> crate::mesh::ReplayRun {
    // One directory per call: tests run in parallel in one process.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tern-session-run-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut log, _) =
        tern_log::RingLog::open(&dir.join("r.ring"), 1 << 20, tern_log::Fsync::Never).unwrap();
    for seq in 1..=n {
        let payload = format!("{seq:0>600}");
        log.append(&tern_log::Record::new(b"s", payload.as_bytes()))
            .unwrap();
    }
    log.flush().unwrap();
    let mut records = BytesMut::new();
    let mut read = log.read_from(1);
    while let Some((_, stored)) = read.next_stored() {
        records.extend_from_slice(stored);
    }
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
    crate::mesh::ReplayRun {
        shard: 0,
        flight: crate::mesh::Flight::new(in_flight, records.len()),
        records: records.freeze(),
        read: Instant::now(),
    }
}

/// A catch-up run into an idle subscription is written straight from the run's buffer,
/// no message made for any record, byte for byte what the same replayed messages write
/// when delivered one by one; on both ports.
#[test]
fn a_run_into_an_idle_subscription_is_written_without_making_messages() {
    let made = || crate::mesh::RUN_MSGS_MADE.with(std::cell::Cell::get);
    for binary in [false, true] {
        let mut s = if binary {
            let mut s = Session::binary(Config::default());
            s.send_frame(&ClientFrame::Subscribe(Subscribe {
                sid: 3,
                subject: Bytes::from_static(b"s"),
                ..Subscribe::default()
            }));
            let _ = s.take();
            s
        } else {
            let mut s = Session::connected(Config::default());
            s.send(b"SUB s 1\r\n");
            s
        };
        let sub = s.sub(0);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let run = run_of(6, &in_flight);
        let before = made();
        assert!(s.conn.deliver_run_to(sub, &run, &mut s.peer, &mut s.cx));
        s.step();
        assert_eq!(
            made(),
            before,
            "binary {binary}: a message made for a record"
        );
        let from_run = s.take();
        let messages: Vec<Msg> = run.records().map(|rec| run.msg(&rec)).collect();
        for m in messages {
            assert!(s.deliver(sub, m));
        }
        s.step();
        assert_eq!(from_run, s.take(), "binary {binary}");
        assert_eq!(s.stat(|st| st.out_msgs.load(Ordering::Relaxed)), 12);
    }
}

/// A catch-up run into a subscriber that does not read: what fits goes to the write
/// buffer, the rest waits in its queue, each queued record keeping its own share of the
/// catch-up's window once the run is gone; when the client reads, it gets every record
/// once, in order, and the window is empty again.
#[test]
fn a_run_into_a_slow_subscriber_queues_what_waits_and_keeps_it_in_flight() {
    let mut config = Config::default();
    config.queues.write_buffer = 1024;
    let mut s = Session::connected(config);
    s.send(b"SUB s 1\r\n");
    let sub = s.sub(0);
    s.peer.room = Some(0);
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = run_of(6, &in_flight);
    assert!(s.conn.deliver_run_to(sub, &run, &mut s.peer, &mut s.cx));
    let record = run.records.len() / 6;
    drop(run);
    // Two records fit the write buffer (taken); four wait in the queue, still counted.
    assert_eq!(in_flight.load(Ordering::Relaxed), 4 * record);
    s.peer.room = None;
    s.step();
    let got = s.written();
    let seqs: Vec<String> = got
        .split("\r\n")
        .filter(|line| line.len() == 600)
        .map(|p| p.trim_start_matches('0').to_string())
        .collect();
    assert_eq!(seqs, ["1", "2", "3", "4", "5", "6"], "{got}");
    assert_eq!(in_flight.load(Ordering::Relaxed), 0, "all taken");
}

/// A consumer over its high-water mark whose socket stays full and takes nothing for a
/// window is judged stuck, and holds its publishers no longer. Not the bridge's own
/// connection: it stops reading only while its exporter waits for upstream to confirm what
/// it sent, and a lossless export whose connection were judged stuck would let its local
/// publishers run the ring over what it has yet to send.
#[test]
fn the_bridges_own_connection_is_never_judged_stuck() {
    for bridge in [false, true] {
        let mut config = Config::default();
        config.limits.max_pending = 4096;
        config.queues.write_buffer = 1024;
        let mut cx = FakeContext::new(config);
        cx.bridge_tokens.push("bridge-secret".into());
        let hello = Hello {
            auth_token: bridge.then(|| Bytes::from_static(b"bridge-secret")),
            ..Hello::default()
        };
        let mut s = Session::binary_in(cx, hello);
        assert_eq!(s.conn.session.access.internal, bridge);
        s.send_frame(&ClientFrame::Subscribe(Subscribe {
            sid: 1,
            subject: Bytes::from_static(b"s"),
            ..Default::default()
        }));
        let sub = s.sub(0);
        // Its socket takes nothing more.
        s.peer.room = Some(0);
        for seq in 1..=40 {
            s.deliver(sub, msg("s", &[b'x'; 100], 0, seq));
        }
        s.step();
        assert!(s.conn.write_blocked, "bridge {bridge}");
        assert!(
            matches!(s.cx.congestion.last(), Some((_, Signal::On(_)))),
            "bridge {bridge}: congested: {:?}",
            s.cx.congestion
        );
        s.cx.now += s.cx.config.flow.publisher_stall_window + Duration::from_millis(1);
        s.conn.on_timer(&mut s.cx);
        let stuck =
            s.cx.congestion
                .iter()
                .any(|(_, signal)| matches!(signal, Signal::Stuck(_)));
        assert_eq!(stuck, !bridge, "bridge {bridge}: {:?}", s.cx.congestion);
    }
}

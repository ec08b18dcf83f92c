//! The binary port (docs/protocol-binary.md) against the real `ternd`: the handshake and its
//! refusals, every frame a client sends and every field of what comes back, the errors that
//! refuse one frame and those that close the connection, and the bridge with the text port
//! (a text publisher reaches binary subscribers and the reverse, headers byte for byte).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{BinClient, Broker, RawClient, ReadEnd};
use tern_protocol::binary::{
    AckResult, ClientFrame, ErrorCode, ErrorFrame, GapNotice, Hello, Message, Preface, Publish,
    PublishAck, ResumeToken, ServerFrame, StartPosition, Subscribe, Unsubscribe,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn publish(subject: &str, payload: &str) -> Publish {
    Publish {
        subject: b(subject),
        payload: b(payload),
        ..Default::default()
    }
}

fn subscribe(sid: u32, subject: &str) -> ClientFrame {
    ClientFrame::Subscribe(Subscribe {
        sid,
        subject: b(subject),
        ..Default::default()
    })
}

fn expect_message(c: &mut BinClient) -> Message {
    match c.read_frame() {
        ServerFrame::Message(m) => m,
        other => panic!("expected MESSAGE, got {other:?}"),
    }
}

fn expect_error(c: &mut BinClient) -> ErrorFrame {
    match c.read_frame() {
        ServerFrame::Error(e) => e,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

/// Still open and answering: a `PING` gets its `PONG` with nothing before it.
fn assert_alive(c: &mut BinClient) {
    let before = c.flush();
    assert!(before.is_empty(), "unexpected frames: {before:?}");
}

const HEADERS: &[u8] = b"NATS/1.0\r\nTrace: abc\r\nX-Two: 2\r\n\r\n";

#[test]
fn handshake_welcome_describes_the_server() {
    let broker = Broker::start();
    let mut text = RawClient::connect(broker.addr());
    let c = BinClient::connect(broker.binary_addr());
    let w = &c.welcome;
    assert_eq!(w.version, 1);
    assert_eq!(w.shard_count as usize, broker.workers());
    assert_eq!(w.max_payload, 1024 * 1024);
    assert_eq!(w.max_frame, 1024 * 1024 + 64 * 1024);
    assert_eq!(w.ping_interval_ms, 10_000);
    assert_ne!(w.log_epoch, 0);
    assert!(w.client_id > 0);
    // One server, one id, whichever port asks.
    assert_eq!(
        std::str::from_utf8(&w.server_id).unwrap(),
        text.info["server_id"].as_str().unwrap()
    );
    // Client ids are unique across ports.
    assert_ne!(w.client_id, text.client_id());
    text.ping_pong();
}

#[test]
fn bad_magic_is_closed_without_a_word() {
    let broker = Broker::start();
    // A NATS client that dialled the wrong port.
    let mut c = BinClient::connect_bare(broker.binary_addr());
    c.send_raw(b"CONNECT {}\r\n");
    let frames = c.frames_to_close();
    assert!(frames.is_empty(), "{frames:?}");
    // The text port and other binary clients carry on.
    let mut ok = BinClient::connect(broker.binary_addr());
    assert_alive(&mut ok);
}

#[test]
fn unsupported_version_is_a_fatal_error() {
    let broker = Broker::start();
    let mut c = BinClient::connect_bare(broker.binary_addr());
    let mut out = BytesMut::new();
    Preface {
        min_version: 2,
        max_version: 9,
    }
    .encode(&mut out);
    c.send_raw(&out);
    let frames = c.frames_to_close();
    let [ServerFrame::Error(e)] = &frames[..] else {
        panic!("one ERROR then close: {frames:?}");
    };
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert!(e.fatal);
    assert!(
        String::from_utf8_lossy(&e.message).contains("2..=9"),
        "{e:?}"
    );
}

#[test]
fn the_first_frame_must_be_hello_and_only_once() {
    let broker = Broker::start();
    let mut c = BinClient::connect_bare(broker.binary_addr());
    let mut out = BytesMut::new();
    Preface::default().encode(&mut out);
    c.send_raw(&out);
    c.send(&ClientFrame::Ping);
    let frames = c.frames_to_close();
    let [ServerFrame::Error(e)] = &frames[..] else {
        panic!("one ERROR then close: {frames:?}");
    };
    assert_eq!((e.code, e.fatal), (ErrorCode::HelloExpected, true));

    let mut c = BinClient::connect(broker.binary_addr());
    c.send(&ClientFrame::Hello(Hello::default()));
    let frames = c.frames_to_close();
    let [ServerFrame::Error(e)] = &frames[..] else {
        panic!("one ERROR then close: {frames:?}");
    };
    assert_eq!((e.code, e.fatal), (ErrorCode::HelloExpected, true));
}

#[test]
fn publish_and_subscribe_carry_every_field() {
    let broker = Broker::start();
    let workers = broker.workers();
    let mut sub = BinClient::connect(broker.binary_addr());
    // A publisher on each worker: each worker's shard sequences what its connections
    // publish, from 1.
    for shard in 0..workers {
        let mut publisher = BinClient::connect_on_worker(broker.binary_addr(), shard, workers);
        let subject = format!("fields.{shard}");
        let sid = 10 + shard as u32;
        sub.send(&subscribe(sid, &subject));
        sub.flush();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for seq in 1..=3u64 {
            publisher.send(&ClientFrame::Publish(Publish {
                subject: b(&subject),
                reply: Some(b("reply.to")),
                headers: Some(Bytes::from_static(HEADERS)),
                priority: 5,
                payload: b(&format!("m{seq}")),
                ..Default::default()
            }));
            let m = expect_message(&mut sub);
            assert_eq!(m.sid, sid);
            assert_eq!(m.priority, 5);
            assert_eq!(m.shard as usize, shard);
            assert_eq!(m.sequence, seq, "sequences start at 1 per shard");
            assert!(m.timestamp >= before, "{} < {before}", m.timestamp);
            assert!(!m.replayed);
            assert_eq!(&m.subject[..], subject.as_bytes());
            assert_eq!(m.reply.as_deref(), Some(&b"reply.to"[..]));
            assert_eq!(m.headers.as_deref(), Some(HEADERS));
            assert_eq!(&m.payload[..], format!("m{seq}").as_bytes());
        }
    }
}

#[test]
fn large_payloads_arrive_byte_exact_on_both_ports() {
    let broker = Broker::start();
    let mut bin_sub = BinClient::connect(broker.binary_addr());
    let mut text_sub = RawClient::connect(broker.addr());
    text_sub.send(b"CONNECT {}\r\nSUB big 1\r\n");
    text_sub.ping_pong();
    bin_sub.send(&subscribe(1, "big"));
    bin_sub.flush();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut publisher = BinClient::connect(broker.binary_addr());
    publisher.send(&ClientFrame::Publish(Publish {
        subject: b("big"),
        payload: Bytes::from(payload.clone()),
        ..Default::default()
    }));
    let m = expect_message(&mut bin_sub);
    assert_eq!(m.payload.len(), payload.len());
    assert!(m.payload[..] == payload[..], "binary payload differs");
    let head = text_sub.read_until(b"\r\n", common::WAIT);
    assert_eq!(head, format!("MSG big 1 {}\r\n", payload.len()).as_bytes());
    let body = text_sub.read_exact_bytes(payload.len() + 2, common::WAIT);
    assert!(body[..payload.len()] == payload[..], "text payload differs");
}

#[test]
fn text_publishers_reach_binary_subscribers_headers_and_all() {
    let broker = Broker::start();
    let mut sub = BinClient::connect(broker.binary_addr());
    sub.send(&subscribe(7, "bridge.>"));
    sub.flush();
    let mut text = RawClient::connect(broker.addr());
    text.send(b"CONNECT {\"headers\":true}\r\n");
    text.send(b"PUB bridge.plain 5\r\nhello\r\n");
    let hpub = format!(
        "HPUB bridge.headers inbox.1 {} {}\r\n",
        HEADERS.len(),
        HEADERS.len() + 3
    );
    text.send(hpub.as_bytes());
    text.send(HEADERS);
    text.send(b"abc\r\n");
    text.ping_pong();

    // Two subjects may live on two shards: their order is not defined.
    let mut got = [expect_message(&mut sub), expect_message(&mut sub)];
    got.sort_by(|a, b| b.subject.cmp(&a.subject));
    let [plain, with] = got;
    assert_eq!(
        (&plain.subject[..], &plain.payload[..]),
        (&b"bridge.plain"[..], &b"hello"[..])
    );
    assert_eq!(plain.headers, None, "PUB has no header block");
    assert_eq!(plain.reply, None);
    assert_eq!(plain.priority, 0, "the text port's priority");
    assert!(plain.sequence > 0);
    assert_eq!(&with.subject[..], b"bridge.headers");
    assert_eq!(with.headers.as_deref(), Some(HEADERS), "byte for byte");
    assert_eq!(with.reply.as_deref(), Some(&b"inbox.1"[..]));
    assert_eq!(&with.payload[..], b"abc");
}

#[test]
fn binary_publishers_reach_text_subscribers_headers_and_all() {
    let broker = Broker::start();
    let mut with_headers = RawClient::connect(broker.addr());
    with_headers.send(b"CONNECT {\"headers\":true}\r\nSUB to.text 1\r\n");
    with_headers.ping_pong();
    let mut without = RawClient::connect(broker.addr());
    without.send(b"CONNECT {}\r\nSUB to.text 2\r\n");
    without.ping_pong();

    let mut publisher = BinClient::connect(broker.binary_addr());
    publisher.send(&ClientFrame::Publish(Publish {
        subject: b("to.text"),
        reply: Some(b("answer.here")),
        headers: Some(Bytes::from_static(HEADERS)),
        priority: 7,
        payload: b("payload"),
        ..Default::default()
    }));
    publisher.send(&ClientFrame::Publish(publish("to.text", "plain")));
    assert_alive(&mut publisher);

    let hmsg = format!(
        "HMSG to.text 1 answer.here {} {}\r\n",
        HEADERS.len(),
        HEADERS.len() + 7
    );
    with_headers.expect(hmsg.as_bytes());
    with_headers.expect(HEADERS);
    with_headers.expect(b"payload\r\n");
    // No header block on the binary side is MSG, not HMSG, on the text side.
    with_headers.expect(b"MSG to.text 1 5\r\nplain\r\n");
    // A client that did not ask for headers gets the payload alone.
    without.expect(b"MSG to.text 2 answer.here 7\r\npayload\r\n");
    without.expect(b"MSG to.text 2 5\r\nplain\r\n");
}

#[test]
fn request_reply_across_ports() {
    let broker = Broker::start();
    let mut responder = RawClient::connect(broker.addr());
    responder.send(b"SUB service 1\r\n");
    responder.ping_pong();
    let mut requester = BinClient::connect(broker.binary_addr());
    requester.send(&subscribe(1, "_INBOX.me.*"));
    requester.send(&ClientFrame::Publish(Publish {
        subject: b("service"),
        reply: Some(b("_INBOX.me.1")),
        payload: b("question"),
        ..Default::default()
    }));
    responder.expect(b"MSG service 1 _INBOX.me.1 8\r\nquestion\r\n");
    responder.send(b"PUB _INBOX.me.1 6\r\nanswer\r\n");
    let m = expect_message(&mut requester);
    assert_eq!(
        (&m.subject[..], &m.payload[..]),
        (&b"_INBOX.me.1"[..], &b"answer"[..])
    );
}

#[test]
fn acknowledgements_name_the_shard_and_sequence() {
    let broker = Broker::start();
    let workers = broker.workers();
    let mut sub = BinClient::connect(broker.binary_addr());
    sub.send(&subscribe(1, ">"));
    sub.flush();
    let mut publishers: Vec<BinClient> = (0..workers)
        .map(|w| BinClient::connect_on_worker(broker.binary_addr(), w, workers))
        .collect();
    let subjects = ["acked.a", "acked.b", "acked.c.d"];
    let mut ack_id = 0u64;
    for round in 0..3 {
        for (i, subject) in subjects.iter().enumerate() {
            let publisher = &mut publishers[(round + i) % workers];
            ack_id += 1;
            publisher.send(&ClientFrame::Publish(Publish {
                ack_id: Some(ack_id),
                ..publish(subject, &format!("r{round}"))
            }));
            let ServerFrame::PublishAck(PublishAck {
                ack_id: got_id,
                result:
                    AckResult::Stored {
                        shard,
                        sequence,
                        duplicate,
                    },
            }) = publisher.read_frame()
            else {
                panic!("expected a stored PUBLISH_ACK");
            };
            assert_eq!(got_id, ack_id);
            assert!(!duplicate);
            let m = expect_message(&mut sub);
            assert_eq!(
                (m.shard, m.sequence),
                (shard, sequence),
                "ack matches delivery"
            );
            assert_eq!(
                shard as usize,
                publisher.worker(workers),
                "stored by the publisher's worker's shard"
            );
        }
    }
}

#[test]
fn refused_frames_get_their_error_and_the_connection_carries_on() {
    let broker = Broker::start();
    let mut c = BinClient::connect(broker.binary_addr());

    // An invalid subject, with an ack asked: a refused PUBLISH_ACK carrying the ack id.
    c.send(&ClientFrame::Publish(Publish {
        ack_id: Some(9),
        ..publish("bad..subject", "x")
    }));
    match c.read_frame() {
        ServerFrame::PublishAck(PublishAck {
            ack_id: 9,
            result: AckResult::Refused { code, message },
        }) => {
            assert_eq!(code, ErrorCode::InvalidSubject);
            assert!(!message.is_empty());
        }
        other => panic!("expected a refused ack, got {other:?}"),
    }
    // Without an ack: a non-fatal ERROR.
    c.send(&ClientFrame::Publish(publish("wild.*", "x")));
    let e = expect_error(&mut c);
    assert_eq!(
        (e.code, e.fatal, e.sid),
        (ErrorCode::InvalidSubject, false, None)
    );
    // Priority 8.
    c.send(&ClientFrame::Publish(Publish {
        priority: 8,
        ..publish("ok", "x")
    }));
    let e = expect_error(&mut c);
    assert_eq!((e.code, e.fatal), (ErrorCode::InvalidPriority, false));
    assert_eq!(
        String::from_utf8_lossy(&e.message),
        "invalid priority 8 (0..=7)"
    );
    // A header block that is not one.
    c.send(&ClientFrame::Publish(Publish {
        headers: Some(b("HTTP/1.1 200\r\n\r\n")),
        ..publish("ok", "x")
    }));
    assert_eq!(expect_error(&mut c).code, ErrorCode::InvalidHeaders);
    // A bad filter names the sid.
    c.send(&subscribe(4, "a.>.b"));
    let e = expect_error(&mut c);
    assert_eq!((e.code, e.sid), (ErrorCode::InvalidSubject, Some(4)));
    // A sid in use.
    c.send(&subscribe(5, "ok"));
    c.send(&subscribe(5, "other"));
    let e = expect_error(&mut c);
    assert_eq!(
        (e.code, e.sid, e.fatal),
        (ErrorCode::DuplicateSubscription, Some(5), false)
    );
    // Unsubscribing what is not there.
    c.send(&ClientFrame::Unsubscribe(Unsubscribe {
        sid: 77,
        max: None,
    }));
    let e = expect_error(&mut c);
    assert_eq!((e.code, e.sid), (ErrorCode::UnknownSubscription, Some(77)));
    // A payload over max_payload is refused from its size.
    c.send(&ClientFrame::Publish(Publish {
        payload: Bytes::from(vec![0u8; 1024 * 1024 + 1]),
        ..publish("ok", "")
    }));
    assert_eq!(expect_error(&mut c).code, ErrorCode::PayloadTooLarge);

    // Still a working connection: sid 5 (the first one) is live.
    c.send(&ClientFrame::Publish(publish("ok", "fine")));
    let m = expect_message(&mut c);
    assert_eq!((m.sid, &m.payload[..]), (5, &b"fine"[..]));
}

#[test]
fn structure_errors_close_only_the_offender() {
    let broker = Broker::start();
    let mut bystander = BinClient::connect(broker.binary_addr());
    bystander.send(&subscribe(1, "still.here"));
    bystander.flush();

    // Reserved flag bits on a PING.
    let mut c = BinClient::connect(broker.binary_addr());
    c.send_raw(&[0, 0, 0, 2, 0x05, 0x80]);
    let frames = c.frames_to_close();
    let [ServerFrame::Error(e)] = &frames[..] else {
        panic!("one ERROR then close: {frames:?}");
    };
    assert_eq!((e.code, e.fatal), (ErrorCode::ProtocolViolation, true));

    // A length over the maximum frame: refused from the header alone.
    let mut c = BinClient::connect(broker.binary_addr());
    c.send_raw(&[0x7f, 0xff, 0xff, 0xff]);
    let frames = c.frames_to_close();
    let [ServerFrame::Error(e)] = &frames[..] else {
        panic!("one ERROR then close: {frames:?}");
    };
    assert_eq!((e.code, e.fatal), (ErrorCode::FrameTooLarge, true));

    // A server frame type from a client.
    let mut c = BinClient::connect(broker.binary_addr());
    c.send_raw(&[0, 0, 0, 2, 0x82, 0]);
    let frames = c.frames_to_close();
    assert!(
        matches!(&frames[..], [ServerFrame::Error(e)] if e.code == ErrorCode::ProtocolViolation),
        "{frames:?}"
    );

    let mut publisher = BinClient::connect(broker.binary_addr());
    publisher.send(&ClientFrame::Publish(publish("still.here", "yes")));
    let m = expect_message(&mut bystander);
    assert_eq!(&m.payload[..], b"yes");
}

#[test]
fn queue_groups_span_both_ports() {
    let broker = Broker::start();
    let mut text = RawClient::connect(broker.addr());
    text.send(b"SUB jobs workers 1\r\n");
    text.ping_pong();
    let mut bin = BinClient::connect(broker.binary_addr());
    bin.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: b("jobs"),
        queue: Some(b("workers")),
        ..Default::default()
    }));
    bin.flush();
    let mut publisher = BinClient::connect(broker.binary_addr());
    let n = 100;
    for i in 0..n {
        publisher.send(&ClientFrame::Publish(publish("jobs", &format!("{i}"))));
    }
    assert_alive(&mut publisher);
    // Everything is queued once the publisher's round trip is done and each member's own
    // round trip has come back.
    let to_bin = bin.flush().len();
    let got_text = text.flush();
    let to_text = got_text.windows(4).filter(|w| w == b"MSG ").count();
    assert_eq!(to_bin + to_text, n, "each job exactly once");
    assert!(
        to_bin > 0 && to_text > 0,
        "spread over both: {to_bin} / {to_text}"
    );
}

#[test]
fn unsubscribe_now_and_after_more_deliveries() {
    let broker = Broker::start();
    let mut c = BinClient::connect(broker.binary_addr());
    c.send(&subscribe(1, "count"));
    c.send(&subscribe(2, "gone"));
    c.flush();
    c.send(&ClientFrame::Unsubscribe(Unsubscribe { sid: 2, max: None }));
    c.send(&ClientFrame::Publish(publish("count", "0")));
    assert_eq!(expect_message(&mut c).sid, 1);
    // Two more, then the subscription ends.
    c.send(&ClientFrame::Unsubscribe(Unsubscribe {
        sid: 1,
        max: Some(2),
    }));
    for i in 1..=4 {
        c.send(&ClientFrame::Publish(publish("count", &i.to_string())));
    }
    c.send(&ClientFrame::Publish(publish("gone", "x")));
    // A marker on a subscription of its own: once it arrives, everything published before
    // it to the same subject has been routed (one shard, in order).
    c.send(&subscribe(3, "count"));
    let mut payloads: Vec<Bytes> = c
        .flush()
        .into_iter()
        .map(|f| match f {
            ServerFrame::Message(m) if m.sid == 1 => m.payload,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    c.send(&ClientFrame::Publish(publish("count", "end")));
    loop {
        let m = expect_message(&mut c);
        if m.sid == 3 {
            break;
        }
        payloads.push(m.payload);
    }
    assert_eq!(payloads, [&b"1"[..], b"2"]);
    assert!(c.flush().is_empty(), "nothing after the marker");
    // The sid is free again.
    c.send(&ClientFrame::Unsubscribe(Unsubscribe { sid: 1, max: None }));
    assert_eq!(expect_error(&mut c).code, ErrorCode::UnknownSubscription);
}

#[test]
fn echo_is_off_unless_hello_asks() {
    let broker = Broker::start();
    // (A PONG is not a barrier for deliveries routed through another worker, so these
    // wait for messages rather than flushing.)
    let mut quiet = BinClient::connect_with(broker.binary_addr(), Hello::default());
    quiet.send(&subscribe(1, "self"));
    quiet.flush();
    let mut loud = BinClient::connect(broker.binary_addr());
    loud.send(&subscribe(1, "self"));
    loud.flush();
    // One subject, one shard: routed in publish order. Had the quiet one's own message
    // come back to it, it would arrive before the loud one's.
    quiet.send(&ClientFrame::Publish(publish("self", "quiet")));
    assert_eq!(&expect_message(&mut loud).payload[..], b"quiet");
    loud.send(&ClientFrame::Publish(publish("self", "loud")));
    assert_eq!(&expect_message(&mut loud).payload[..], b"loud", "echo on");
    assert_eq!(
        &expect_message(&mut quiet).payload[..],
        b"loud",
        "no echo by default"
    );
}

#[test]
fn resume_tokens_from_another_epoch_get_an_error_then_everything_held() {
    let broker = Broker::start();
    let mut c = BinClient::connect(broker.binary_addr());
    let epoch = c.welcome.log_epoch;
    c.send(&ClientFrame::Publish(Publish {
        ack_id: Some(1),
        ..publish("resumed", "held")
    }));
    assert!(matches!(c.read_frame(), ServerFrame::PublishAck(_)));
    c.send(&ClientFrame::Subscribe(Subscribe {
        sid: 3,
        subject: b("resumed"),
        start: StartPosition::Resume(ResumeToken {
            epoch: epoch.wrapping_add(1),
            last_sequences: vec![5, 5],
        }),
        ..Default::default()
    }));
    let e = expect_error(&mut c);
    assert_eq!(
        (e.code, e.sid, e.fatal),
        (ErrorCode::EpochMismatch, Some(3), false)
    );
    // Its sequences meant nothing here: everything this log holds is new to it.
    let m = expect_message(&mut c);
    assert_eq!((&m.payload[..], m.replayed), (&b"held"[..], true));
    // Then what comes next, once: live, or from the log when the catch-ups over the shards
    // have not handed over yet (`merge.rs`).
    c.send(&ClientFrame::Publish(publish("resumed", "live")));
    let m = expect_message(&mut c);
    assert_eq!(&m.payload[..], b"live");
    assert!(c.flush().is_empty(), "nothing twice");
}

#[test]
fn without_a_store_a_resume_behind_the_shard_gets_a_gap_notice_then_live_messages() {
    // Nothing is stored, so nothing can be replayed: the gap is everything since.
    let broker = Broker::with_args(&["--no-store"]);
    let workers = broker.workers();
    // Everything is published on worker 1, so sequenced by shard 1.
    let subject = "missed".to_string();
    let mut c = BinClient::connect_on_worker(broker.binary_addr(), 1, workers);
    c.send(&subscribe(1, &subject));
    for i in 0..5 {
        c.send(&ClientFrame::Publish(publish(&subject, &i.to_string())));
    }
    let seen: Vec<u64> = c
        .flush()
        .iter()
        .map(|f| match f {
            ServerFrame::Message(m) => m.sequence,
            other => panic!("{other:?}"),
        })
        .collect();
    let last = *seen.last().unwrap();
    c.send(&ClientFrame::Unsubscribe(Unsubscribe { sid: 1, max: None }));
    // Published while the client was away.
    let mut other = BinClient::connect_on_worker(broker.binary_addr(), 1, workers);
    for _ in 0..3 {
        other.send(&ClientFrame::Publish(publish(&subject, "missed")));
    }
    assert_alive(&mut other);
    let mut token = vec![0u64; workers];
    token[1] = seen[1]; // resume as if only the first two had arrived
    c.send(&ClientFrame::Subscribe(Subscribe {
        sid: 2,
        subject: b(&subject),
        start: StartPosition::Resume(ResumeToken {
            epoch: c.welcome.log_epoch,
            last_sequences: token,
        }),
        ..Default::default()
    }));
    let got = c.flush();
    let [ServerFrame::GapNotice(GapNotice {
        sid: 2,
        shard: 1,
        requested,
        oldest,
    })] = got[..]
    else {
        panic!("one gap notice for shard 1: {got:?}");
    };
    assert_eq!(requested, seen[1] + 1);
    assert_eq!(
        oldest,
        last + 4,
        "nothing is held: the next sequence is the oldest"
    );
    other.send(&ClientFrame::Publish(publish(&subject, "after")));
    let m = expect_message(&mut c);
    assert_eq!((m.sid, m.sequence), (2, last + 4));
}

#[test]
fn the_server_pings_idle_clients_and_closes_silent_ones() {
    let broker = Broker::with_args(&["--ping-interval", "100ms", "--ping-max", "2"]);
    // Answers pings: stays.
    let mut alive = BinClient::connect(broker.binary_addr());
    let answering = std::thread::spawn(move || {
        for _ in 0..5 {
            match alive.read_frame() {
                ServerFrame::Ping => alive.send(&ClientFrame::Pong),
                other => panic!("expected PING, got {other:?}"),
            }
        }
        // Still open: our own PING is answered (server pings may come first).
        alive.send(&ClientFrame::Ping);
        loop {
            match alive.read_frame() {
                ServerFrame::Ping => alive.send(&ClientFrame::Pong),
                ServerFrame::Pong => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    // Never answers: closed with SlowConsumer after two unanswered pings.
    let mut silent = BinClient::connect(broker.binary_addr());
    let mut pings = 0;
    let closed = loop {
        match silent.try_read_frame(Duration::from_secs(5)) {
            Ok(ServerFrame::Ping) => pings += 1,
            Ok(ServerFrame::Error(e)) => break e,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(pings, 2);
    assert_eq!((closed.code, closed.fatal), (ErrorCode::SlowConsumer, true));
    assert!(matches!(
        silent.try_read_frame(Duration::from_secs(5)),
        Err(ReadEnd::Eof | ReadEnd::Error(_))
    ));
    answering
        .join()
        .expect("the answering client stays connected");

    // A connection that never finishes its handshake is closed (after auth_timeout), and
    // never told anything: it has not shown it speaks Tern.
    let mut mute = BinClient::connect_bare(broker.binary_addr());
    assert!(mute.frames_to_close().is_empty());
}

#[test]
fn the_binary_port_can_be_turned_off() {
    let broker = Broker::with_args(&["--no-binary"]);
    let mut text = RawClient::connect(broker.addr());
    text.ping_pong();
}

/// `SUBSCRIBED` says where a subscription starts in every shard (the last sequence before
/// its first), so that a client's resume token also covers a shard it has not received
/// anything from yet.
#[test]
fn subscribed_says_where_a_subscription_starts_in_every_shard() {
    let broker = Broker::start();
    let workers = broker.workers();
    assert_eq!(workers, 2);
    // Three messages stored by shard 0, two by shard 1.
    let addr = broker.binary_addr();
    let mut p0 = BinClient::connect_on_worker(addr, 0, workers);
    let mut p1 = BinClient::connect_on_worker(addr, 1, workers);
    for i in 0..3 {
        p0.publish_acked("st.a", "x", i);
    }
    for i in 3..5 {
        p1.publish_acked("st.b", "x", i);
    }
    let mut c = BinClient::connect(addr);
    c.send(&subscribe(1, "st.*"));
    c.send(&subscribe(2, "st.b"));
    assert!(c.flush().is_empty());
    let mut got: Vec<(u32, u64, Vec<u64>)> = c
        .subscribed
        .iter()
        .map(|s| (s.sid, s.epoch, s.last_sequences.clone()))
        .collect();
    got.sort();
    let epoch = c.welcome.log_epoch;
    assert_eq!(got, [(1, epoch, vec![3, 2]), (2, epoch, vec![3, 2])]);
}

#[test]
fn a_request_nobody_receives_gets_a_503_when_hello_asked_for_it() {
    let broker = Broker::start();
    for asked in [true, false] {
        let mut c = BinClient::connect_with(
            broker.binary_addr(),
            tern_protocol::binary::Hello {
                no_responders: asked,
                ..Default::default()
            },
        );
        c.send(&subscribe(1, "_INBOX.me.>"));
        c.send(&ClientFrame::Publish(Publish {
            reply: Some(b("_INBOX.me.1")),
            ..publish("svc.nobody", "ping?")
        }));
        c.send(&ClientFrame::Ping);
        let mut seen = Vec::new();
        loop {
            match c.read_frame() {
                ServerFrame::Pong => break,
                other => seen.push(other),
            }
        }
        if asked {
            match seen.as_slice() {
                [ServerFrame::Message(m)] => {
                    assert_eq!((m.sid, &m.subject[..]), (1, &b"_INBOX.me.1"[..]));
                    let headers = m.headers.as_deref().unwrap_or_default();
                    assert!(headers.starts_with(b"NATS/1.0 503"), "{m:?}");
                    assert!(m.payload.is_empty());
                }
                other => panic!("expected one 503 status, got {other:?}"),
            }
        } else {
            assert!(seen.is_empty(), "no status without asking: {seen:?}");
        }
    }
}

#[test]
fn a_publish_before_an_unsubscribe_is_delivered() {
    // As on the text port: this connection's publish, sent ahead of its UNSUBSCRIBE in
    // one write, is delivered; one sent after it is not.
    let broker = Broker::start();
    let mut c = BinClient::connect(broker.binary_addr());
    c.send(&subscribe(1, "x"));
    let mut frames = bytes::BytesMut::new();
    for f in [
        ClientFrame::Publish(publish("x", "before")),
        ClientFrame::Unsubscribe(Unsubscribe { sid: 1, max: None }),
        ClientFrame::Publish(publish("x", "after")),
        ClientFrame::Ping,
    ] {
        tern_protocol::binary::encode_client_frame(&f, &mut frames).unwrap();
    }
    c.send_raw(&frames);
    let m = expect_message(&mut c);
    assert_eq!((m.sid, &m.payload[..]), (1, &b"before"[..]));
    assert!(matches!(c.read_frame(), ServerFrame::Pong));
}

//! The client against a scripted fake broker (a real TCP listener speaking the binary
//! protocol through `tern-protocol`): what the client sends, frame by frame, when the
//! server goes silent, closes, restarts with a new log epoch, refuses, or floods; and
//! presence on the wire: the subscribe options, the member token re-sent on every
//! resubscribe, `PRESENCE` frames turned into events, and queries matched to answers.

mod common;

use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::{message, wait_event, FakeServer, WAIT};
use tern_client::{
    Client, DisconnectReason, DropSource, Error, ErrorCode, Event, Events, PresenceEvent,
    PublishOptions, ReconnectPolicy, SequenceRange,
};
use tern_protocol::binary::{
    AckResult, ClientFrame, DropNotice, ErrorFrame, GapNotice, GoAway, Member, Presence,
    PresenceBody, PresenceJoin, PresenceQuery, PublishAck, ResumeToken, ServerFrame, StartPosition,
};

const MS: Duration = Duration::from_millis(1);

/// Quick reconnects, so the tests do not wait on backoff.
fn fast() -> ReconnectPolicy {
    ReconnectPolicy::new(5 * MS, 20 * MS)
}

/// Connects in a thread while the fake accepts and handshakes.
fn connect(
    server: &FakeServer,
    epoch: u64,
    builder: tern_client::ClientBuilder,
) -> (Client, common::FakeConn) {
    let url = server.url();
    let client = thread::spawn(move || builder.connect(&url));
    let conn = server.accept_welcome(epoch);
    (client.join().unwrap().unwrap(), conn)
}

fn publish_of(frame: ClientFrame) -> tern_protocol::binary::Publish {
    match frame {
        ClientFrame::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn subscribe_of(frame: ClientFrame) -> tern_protocol::binary::Subscribe {
    match frame {
        ClientFrame::Subscribe(s) => s,
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
}

#[test]
fn handshake_sends_the_preface_and_hello_with_the_clients_options() {
    let server = FakeServer::bind();
    let url = server.url();
    let client = thread::spawn(move || {
        Client::builder()
            .name("tester")
            .auth_token("s3cret")
            .echo(false)
            .connect(&url)
    });
    let mut conn = server.accept();
    let hello = conn.handshake(11);
    let client = client.join().unwrap().unwrap();
    assert_eq!(&hello.client_name[..], b"tester");
    assert!(hello.client_version.starts_with(b"tern-client/"));
    assert!(!hello.echo);
    assert_eq!(hello.auth_token.as_deref(), Some(&b"s3cret"[..]));
    let info = client.server_info().unwrap();
    assert_eq!(
        (info.log_epoch, info.shard_count, info.client_id),
        (11, 4, 7)
    );
    assert_eq!(info.server_id, "fake");
    assert!(client.is_connected());
    let events = client.events();
    assert!(matches!(events.try_recv(), Some(Event::Connected(i)) if i.log_epoch == 11));
}

#[test]
fn connecting_by_name_tries_the_names_addresses() {
    // `localhost` may resolve to ::1 before 127.0.0.1; the fake listens on 127.0.0.1 only,
    // so the client must go on to the next address within the same attempt.
    let server = FakeServer::bind();
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let url = format!("tern://localhost:{port}");
    let client = thread::spawn(move || Client::connect(&url));
    let _conn = server.accept_welcome(3);
    let client = client.join().unwrap().unwrap();
    assert_eq!(client.server_info().unwrap().log_epoch, 3);
}

#[test]
fn a_fatal_error_in_the_handshake_fails_connect() {
    let server = FakeServer::bind();
    let url = server.url();
    let client = thread::spawn(move || Client::connect(&url));
    let mut conn = server.accept();
    conn.read_hello();
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::AuthorizationViolation,
        fatal: true,
        sid: None,
        message: Bytes::from_static(b"authorization required"),
    }));
    match client.join().unwrap() {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::AuthorizationViolation);
            assert_eq!(message, "authorization required");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn a_text_port_is_recognised() {
    let server = FakeServer::bind();
    let url = server.url();
    let client = thread::spawn(move || Client::connect(&url));
    let mut conn = server.accept();
    conn.send_raw(b"INFO {\"server_id\":\"x\"}\r\n");
    let err = client.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    assert!(err.to_string().contains("text port"), "{err}");
}

#[test]
fn publishes_flushes_and_acks() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let fake = thread::spawn(move || {
        // publish_with: every option on the wire.
        let p = publish_of(conn.recv());
        assert_eq!(&p.subject[..], b"orders.new");
        assert_eq!(&p.payload[..], b"one");
        assert_eq!(p.priority, 6);
        assert_eq!(p.reply.as_deref(), Some(&b"orders.replies"[..]));
        assert_eq!(p.message_id.as_deref(), Some(&b"id-1"[..]));
        assert_eq!(p.coalescing_key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            p.headers.as_deref(),
            Some(&b"NATS/1.0\r\nTrace: t1\r\n\r\n"[..])
        );
        assert_eq!(p.ack_id, None);
        // flush: PING answered by PONG.
        assert_eq!(conn.recv(), ClientFrame::Ping);
        conn.send(ServerFrame::Pong);
        // publish_acked: stored.
        let p = publish_of(conn.recv());
        let id = p.ack_id.expect("an ack id");
        conn.send(ServerFrame::PublishAck(PublishAck {
            ack_id: id,
            result: AckResult::Stored {
                shard: 2,
                sequence: 40,
                duplicate: false,
            },
        }));
        // publish_acked: refused.
        let p = publish_of(conn.recv());
        conn.send(ServerFrame::PublishAck(PublishAck {
            ack_id: p.ack_id.unwrap(),
            result: AckResult::Refused {
                code: ErrorCode::RateLimited,
                message: Bytes::from_static(b"slow down"),
            },
        }));
        // Pipelined acks answered out of order.
        let a = publish_of(conn.recv()).ack_id.unwrap();
        let b = publish_of(conn.recv()).ack_id.unwrap();
        for (id, seq) in [(b, 2), (a, 1)] {
            conn.send(ServerFrame::PublishAck(PublishAck {
                ack_id: id,
                result: AckResult::Stored {
                    shard: 0,
                    sequence: seq,
                    duplicate: seq == 2,
                },
            }));
        }
        conn
    });
    let opts = PublishOptions::new()
        .priority(6)
        .reply("orders.replies")
        .message_id("id-1")
        .coalescing_key("k")
        .header("Trace", "t1");
    client.publish_with("orders.new", "one", &opts).unwrap();
    client.flush(WAIT).unwrap();
    let ack = client.publish_acked("orders.new", "two").unwrap();
    assert_eq!((ack.shard, ack.sequence, ack.duplicate), (2, 40, false));
    match client.publish_acked("orders.new", "three") {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert_eq!(message, "slow down");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let a = client
        .publish_with_ack("x", "a", &PublishOptions::new())
        .unwrap();
    let b = client
        .publish_with_ack("x", "b", &PublishOptions::new())
        .unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.wait().unwrap().sequence, 1);
    let b = b.wait().unwrap();
    assert_eq!((b.sequence, b.duplicate), (2, true));
    let _conn = fake.join().unwrap();

    // Input the protocol cannot carry is refused before anything is sent.
    assert!(matches!(
        client.publish("a.*", "x"),
        Err(Error::InvalidSubject { .. })
    ));
    assert!(matches!(
        client.publish_with("a", "x", &PublishOptions::new().priority(8)),
        Err(Error::InvalidOption(_))
    ));
    assert!(matches!(
        client.publish_with("a", "x", &PublishOptions::new().message_id("")),
        Err(Error::InvalidOption(_))
    ));
    assert!(matches!(
        client.publish_with("a", "x", &PublishOptions::new().header("Bad Name", "v")),
        Err(Error::InvalidOption(_))
    ));
    let big = vec![0u8; (1 << 20) + 1];
    assert!(matches!(
        client.publish("a", &big),
        Err(Error::PayloadTooLarge { size, max }) if size == big.len() && max == 1 << 20
    ));
}

#[test]
fn an_ack_that_never_comes_times_out() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(
        &server,
        1,
        Client::builder().ack_timeout(Duration::from_millis(50)),
    );
    assert!(matches!(
        client.publish_acked("a", "x"),
        Err(Error::Timeout)
    ));
    assert!(publish_of(conn.recv()).ack_id.is_some());
    // A late ack for a request nobody waits for any more is ignored.
    conn.send(ServerFrame::PublishAck(PublishAck {
        ack_id: 1,
        result: AckResult::Stored {
            shard: 0,
            sequence: 1,
            duplicate: false,
        },
    }));
    conn.send(ServerFrame::Ping);
    assert_eq!(conn.recv(), ClientFrame::Pong);
    assert!(client.is_connected());
}

#[test]
fn subscriptions_receive_and_unsubscribe() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let sub = client.subscribe("chat.>").unwrap();
    let queue = client.queue_subscribe("work.*", "workers").unwrap();
    let s = subscribe_of(conn.recv());
    assert_eq!(
        (s.sid, &s.subject[..], s.start),
        (sub.sid(), &b"chat.>"[..], StartPosition::Live)
    );
    let q = subscribe_of(conn.recv());
    assert_eq!(q.sid, queue.sid());
    assert_eq!(q.queue.as_deref(), Some(&b"workers"[..]));

    conn.send(message(sub.sid(), 1, 1, "chat.a", "one"));
    conn.send(message(queue.sid(), 0, 1, "work.x", "job"));
    conn.send(message(sub.sid(), 1, 2, "chat.b", "two"));
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (m.subject.as_str(), m.payload_str()),
        ("chat.a", Some("one"))
    );
    assert_eq!((m.shard, m.sequence, m.sid), (1, 1, sub.sid()));
    assert_eq!(sub.recv().unwrap().payload_str(), Some("two"));
    assert_eq!(queue.recv_timeout(WAIT).unwrap().payload_str(), Some("job"));
    assert!(matches!(sub.try_recv(), Ok(None)));
    assert!(matches!(sub.recv_timeout(MS), Err(Error::Timeout)));
    assert_eq!(
        sub.resume_token(),
        Some(ResumeToken {
            epoch: 1,
            last_sequences: vec![0, 2]
        })
    );

    // unsubscribe_after: exactly n more, then the end.
    sub.unsubscribe_after(2).unwrap();
    assert_eq!(
        conn.recv(),
        ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe {
            sid: sub.sid(),
            max: Some(2)
        })
    );
    for seq in 3..=5 {
        conn.send(message(sub.sid(), 1, seq, "chat.c", &seq.to_string()));
    }
    let got: Vec<String> = sub
        .iter()
        .map(|m| m.payload_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["3", "4"]);
    assert!(matches!(sub.recv(), Err(Error::Unsubscribed)));

    // unsubscribe (and drop) sends UNSUBSCRIBE.
    let qsid = queue.sid();
    queue.unsubscribe().unwrap();
    assert_eq!(
        conn.recv(),
        ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe {
            sid: qsid,
            max: None
        })
    );
    let dropped = client.subscribe("x").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    drop(dropped);
    assert_eq!(
        conn.recv(),
        ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe { sid, max: None })
    );

    // A subscription the server refuses ends with the server's error.
    let refused = client.subscribe("y").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::TooManySubscriptions,
        fatal: false,
        sid: Some(sid),
        message: Bytes::from_static(b"too many"),
    }));
    match refused.recv_timeout(WAIT) {
        Err(Error::Server { code, .. }) => assert_eq!(code, ErrorCode::TooManySubscriptions),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(matches!(
        client.subscribe("a..b"),
        Err(Error::InvalidSubject { .. })
    ));
    assert!(matches!(
        client.queue_subscribe("a", "g.*"),
        Err(Error::InvalidSubject { .. })
    ));
}

#[test]
fn catch_up_starts_are_sent_as_asked() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 9, Client::builder());
    let since = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _a = client
        .subscribe_builder("a")
        .start(tern_client::StartFrom::Since(since))
        .lossless(true)
        .server_queue(100, 5000)
        .subscribe()
        .unwrap();
    let _b = client
        .subscribe_builder("b")
        .start(tern_client::StartFrom::Last(10))
        .subscribe()
        .unwrap();
    let _c = client
        .subscribe_builder("c")
        .start(tern_client::StartFrom::Sequence(5))
        .subscribe()
        .unwrap();
    let a = subscribe_of(conn.recv());
    assert_eq!(a.start, StartPosition::Time(1_700_000_000_000_000_000));
    assert!(a.lossless);
    assert_eq!((a.max_queue_messages, a.max_queue_bytes), (100, 5000));
    assert_eq!(subscribe_of(conn.recv()).start, StartPosition::LastN(10));
    // From sequence 5: "after 4" in every shard of the current epoch (4 shards).
    assert_eq!(
        subscribe_of(conn.recv()).start,
        StartPosition::Resume(ResumeToken {
            epoch: 9,
            last_sequences: vec![4; 4]
        })
    );
}

#[test]
fn heartbeat_declares_a_silent_server_dead_and_reconnects() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(
        &server,
        1,
        Client::builder()
            .ping_interval(Duration::from_millis(30))
            .server_timeout(Duration::from_millis(400))
            .reconnect(fast()),
    );
    let events = client.events();
    // The client pings an idle connection; a server that answers keeps it.
    assert_eq!(conn.recv(), ClientFrame::Ping);
    conn.send(ServerFrame::Pong);
    assert_eq!(conn.recv(), ClientFrame::Ping);
    // Now the server stays silent (the socket stays open).
    let silence = wait_event(&events, |e| match e {
        Event::Disconnected {
            reason: DisconnectReason::HeartbeatTimeout { silence },
        } => Some(*silence),
        _ => None,
    });
    assert!(silence >= Duration::from_millis(400));
    let mut second = server.accept_welcome(2);
    let info = wait_event(&events, |e| match e {
        Event::Reconnected(info) => Some(info.clone()),
        _ => None,
    });
    assert_eq!(info.log_epoch, 2);
    assert!(client.is_connected());
    // The new connection works.
    client.publish("after", "x").unwrap();
    assert_eq!(
        &publish_of(second.recv_answering_pings()).subject[..],
        b"after"
    );
    drop(conn);
}

#[test]
fn server_pings_are_answered() {
    let server = FakeServer::bind();
    let (_client, mut conn) = connect(&server, 1, Client::builder());
    conn.send(ServerFrame::Ping);
    assert_eq!(conn.recv(), ClientFrame::Pong);
}

#[test]
fn reconnect_resubscribes_with_a_resume_token_then_sends_the_offline_buffer() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 5, Client::builder().reconnect(fast()));
    let events = client.events();
    let sub = client.subscribe("a.>").unwrap();
    let live = client.subscribe("b").unwrap();
    let limited = client.subscribe("c").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    subscribe_of(conn.recv());
    subscribe_of(conn.recv());
    limited.unsubscribe_after(3).unwrap();
    assert!(matches!(conn.recv(), ClientFrame::Unsubscribe(_)));
    for (shard, seq) in [(0, 5), (2, 3), (0, 4)] {
        conn.send(message(sid, shard, seq, "a.x", "m"));
    }
    conn.send(message(limited.sid(), 1, 1, "c", "c1"));
    for _ in 0..3 {
        sub.recv_timeout(WAIT).unwrap();
    }
    limited.recv_timeout(WAIT).unwrap();
    conn.close();

    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    assert!(!client.is_connected());
    // Published while disconnected: kept in order in the offline buffer.
    client.publish("out.1", "first").unwrap();
    client
        .publish_with("out.2", "second", &PublishOptions::new().priority(3))
        .unwrap();
    assert!(client.buffered_bytes() > 0);

    let mut conn = server.accept_welcome(5);
    // Subscriptions first, with the same sids; the one that saw messages resumes.
    let s = subscribe_of(conn.recv());
    assert_eq!(s.sid, sid);
    assert_eq!(
        s.start,
        StartPosition::Resume(ResumeToken {
            epoch: 5,
            last_sequences: vec![5, 0, 3]
        })
    );
    let b = subscribe_of(conn.recv());
    assert_eq!((b.sid, b.start), (live.sid(), StartPosition::Live));
    // The unsubscribe_after count goes on from where it was: 3 - 1 = 2 left.
    let c = subscribe_of(conn.recv());
    assert_eq!(c.sid, limited.sid());
    assert_eq!(
        conn.recv(),
        ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe {
            sid: limited.sid(),
            max: Some(2)
        })
    );
    // Then the offline buffer, in order.
    let p1 = publish_of(conn.recv());
    let p2 = publish_of(conn.recv());
    assert_eq!(
        (&p1.subject[..], &p1.payload[..]),
        (&b"out.1"[..], &b"first"[..])
    );
    assert_eq!((&p2.subject[..], p2.priority), (&b"out.2"[..], 3));
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    assert_eq!(client.buffered_bytes(), 0);
    // And the subscription carries on.
    conn.send(message(sid, 0, 6, "a.y", "after"));
    assert_eq!(sub.recv_timeout(WAIT).unwrap().payload_str(), Some("after"));
}

#[test]
fn epoch_mismatch_is_an_event_and_the_subscription_stays_live() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 100, Client::builder().reconnect(fast()));
    let events = client.events();
    let sub = client.subscribe("t").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    conn.send(message(sid, 1, 42, "t", "old"));
    sub.recv_timeout(WAIT).unwrap();
    conn.close();

    // The broker restarted with a new log: it refuses the old token, starts live.
    let mut conn = server.accept_welcome(200);
    let s = subscribe_of(conn.recv());
    assert_eq!(
        s.start,
        StartPosition::Resume(ResumeToken {
            epoch: 100,
            last_sequences: vec![0, 42]
        })
    );
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::EpochMismatch,
        fatal: false,
        sid: Some(sid),
        message: Bytes::from_static(b"resume token from another log epoch"),
    }));
    conn.send(message(sid, 3, 1, "t", "new"));
    let got = wait_event(&events, |e| match e {
        Event::EpochMismatch { sid, message } => Some((*sid, message.clone())),
        _ => None,
    });
    assert_eq!(
        got,
        (sid, "resume token from another log epoch".to_string())
    );
    assert_eq!(sub.recv_timeout(WAIT).unwrap().payload_str(), Some("new"));
    assert_eq!(
        sub.resume_token(),
        Some(ResumeToken {
            epoch: 200,
            last_sequences: vec![0, 0, 0, 1]
        })
    );

    // The next reconnect resumes in the new epoch.
    conn.close();
    let mut conn = server.accept_welcome(200);
    assert_eq!(
        subscribe_of(conn.recv()).start,
        StartPosition::Resume(ResumeToken {
            epoch: 200,
            last_sequences: vec![0, 0, 0, 1]
        })
    );
}

#[test]
fn the_offline_buffer_is_bounded_and_overflow_is_an_error() {
    let server = FakeServer::bind();
    let (client, conn) = connect(
        &server,
        1,
        Client::builder()
            .reconnect(fast())
            .offline_buffer_bytes(100),
    );
    let events = client.events();
    conn.close();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    // The fake does not accept yet: the client stays disconnected. A publish frame here
    // is 6 (header) + 1 (priority) + 2 + 3 (subject) + 4 + 20 (payload) = 36 bytes.
    let payload = "x".repeat(20);
    client.publish("s.1", &payload).unwrap();
    client.publish("s.2", &payload).unwrap();
    match client.publish("s.3", &payload) {
        Err(Error::OfflineBufferFull {
            buffered,
            needed,
            limit,
        }) => assert_eq!((buffered, needed, limit), (72, 36, 100)),
        other => panic!("expected OfflineBufferFull, got {other:?}"),
    }
    assert_eq!(client.buffered_bytes(), 72);
    // Nothing accepted was lost: both arrive after the reconnect, in order.
    let mut conn = server.accept_welcome(1);
    assert_eq!(&publish_of(conn.recv()).subject[..], b"s.1");
    assert_eq!(&publish_of(conn.recv()).subject[..], b"s.2");
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    client.publish("s.4", &payload).unwrap();
    assert_eq!(&publish_of(conn.recv()).subject[..], b"s.4");
}

#[test]
fn requests_use_one_inbox_and_match_replies() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let fake = thread::spawn(move || {
        let inbox = subscribe_of(conn.recv());
        assert!(inbox.subject.starts_with(b"_INBOX."));
        assert!(inbox.subject.ends_with(b".*"));
        let mut replies = Vec::new();
        for _ in 0..2 {
            let p = publish_of(conn.recv());
            replies.push((p.reply.unwrap(), p.payload));
        }
        // Answer the second request first.
        for (reply, payload) in replies.into_iter().rev() {
            let answer = format!("re: {}", String::from_utf8_lossy(&payload));
            let mut m = message(inbox.sid, 0, 1, "", &answer);
            if let ServerFrame::Message(m) = &mut m {
                m.subject = reply;
            }
            conn.send(m);
        }
        // No responders: the broker's 503 status.
        let p = publish_of(conn.recv());
        conn.send(ServerFrame::Message(tern_protocol::binary::Message {
            sid: inbox.sid,
            subject: p.reply.unwrap(),
            headers: Some(Bytes::from_static(b"NATS/1.0 503\r\n\r\n")),
            ..Default::default()
        }));
        // The last request is not answered.
        publish_of(conn.recv());
        conn
    });
    let c2 = client.clone();
    let first = thread::spawn(move || c2.request("svc.echo", "one", WAIT));
    // The fake answers the two requests in reverse order of arrival.
    let second = client.request("svc.echo", "two", WAIT).unwrap();
    assert_eq!(second.payload_str(), Some("re: two"));
    assert_eq!(
        first.join().unwrap().unwrap().payload_str(),
        Some("re: one")
    );
    match client.request("svc.none", "x", WAIT) {
        Err(Error::NoResponders { subject }) => assert_eq!(subject, "svc.none"),
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(matches!(
        client.request("svc.slow", "x", Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    let _conn = fake.join().unwrap();
}

#[test]
fn a_subscriber_that_falls_behind_loses_new_messages_and_is_told() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let events = client.events();
    let sub = client
        .subscribe_builder("f")
        .capacity(2)
        .subscribe()
        .unwrap();
    let other = client.subscribe("g").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    subscribe_of(conn.recv());
    for seq in 1..=5 {
        conn.send(message(sid, 3, seq, "f", &seq.to_string()));
    }
    // The connection is not held up: another subscription still gets its message.
    conn.send(message(other.sid(), 0, 1, "g", "other"));
    assert_eq!(
        other.recv_timeout(WAIT).unwrap().payload_str(),
        Some("other")
    );
    // Drops are reported once per I/O turn: add the reports up.
    let (mut count, mut dropped_seqs) = (0, Vec::new());
    while count < 3 {
        let (n, ranges) = wait_event(&events, |e| match e {
            Event::Dropped {
                sid: s,
                count,
                ranges,
                source: DropSource::Client,
            } if *s == sid => Some((*count, ranges.clone())),
            _ => None,
        });
        count += n;
        for r in ranges {
            assert_eq!(r.shard, 3);
            dropped_seqs.extend(r.first..=r.last);
        }
    }
    assert_eq!(count, 3);
    assert_eq!(dropped_seqs, [3, 4, 5]);
    assert_eq!(sub.dropped(), 3);
    let kept: Vec<u64> = (0..2).map(|_| sub.recv().unwrap().sequence).collect();
    assert_eq!(kept, [1, 2]);
}

#[test]
fn drop_and_gap_notices_are_events() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let events = client.events();
    let sub = client.subscribe("n").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    let range = SequenceRange {
        shard: 1,
        first: 10,
        last: 19,
    };
    conn.send(ServerFrame::DropNotice(DropNotice {
        sid,
        dropped: 10,
        ranges: vec![range],
    }));
    conn.send(ServerFrame::GapNotice(GapNotice {
        sid,
        shard: 1,
        requested: 5,
        oldest: 9,
    }));
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::InvalidSubject,
        fatal: false,
        sid: None,
        message: Bytes::from_static(b"invalid subject"),
    }));
    let dropped = wait_event(&events, |e| match e {
        Event::Dropped {
            count,
            ranges,
            source: DropSource::Server,
            ..
        } => Some((*count, ranges.clone())),
        _ => None,
    });
    assert_eq!(dropped, (10, vec![range]));
    let gap = wait_event(&events, |e| match e {
        Event::Gap {
            sid: s,
            requested,
            oldest,
            ..
        } => Some((*s, *requested, *oldest)),
        _ => None,
    });
    assert_eq!(gap, (sid, 5, 9));
    let code = wait_event(&events, |e| match e {
        Event::ServerError {
            code, fatal: false, ..
        } => Some(*code),
        _ => None,
    });
    assert_eq!(code, ErrorCode::InvalidSubject);
    assert_eq!(sub.dropped(), 10);
}

/// A flush is a barrier for events as well as messages: every notice the server sent
/// before its PONG is in the event queue when `flush` returns (notices and the PONG
/// arriving in one read used to race the flush's waiter).
#[test]
fn a_flush_returns_after_the_events_sent_before_its_pong() {
    const NOTICES: u32 = 1_000; // Below the event queue's default capacity.
    const ROUNDS: usize = 200; // The race it guards against is lost in some rounds only.
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let events = client.events();
    let _sub = client.subscribe("n").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    let fake = thread::spawn(move || {
        for _ in 0..ROUNDS {
            assert_eq!(conn.recv(), ClientFrame::Ping);
            let mut burst = bytes::BytesMut::new();
            for _ in 0..NOTICES {
                let notice = ServerFrame::DropNotice(DropNotice {
                    sid,
                    dropped: 1,
                    ranges: Vec::new(),
                });
                tern_protocol::binary::encode_server_frame(&notice, &mut burst).unwrap();
            }
            tern_protocol::binary::encode_server_frame(&ServerFrame::Pong, &mut burst).unwrap();
            conn.send_raw(&burst);
        }
        conn
    });
    for round in 0..ROUNDS {
        client.flush(WAIT).unwrap();
        let mut notices = 0;
        while let Some(e) = events.try_recv() {
            notices += u32::from(matches!(e, Event::Dropped { .. }));
        }
        assert_eq!(notices, NOTICES, "round {round}");
    }
    drop(fake.join().unwrap());
}

#[test]
fn a_server_that_closes_for_good_makes_the_client_give_up_after_its_attempts() {
    let server = FakeServer::bind();
    let (client, conn) = connect(
        &server,
        1,
        Client::builder()
            .reconnect(fast().max_attempts(Some(2)))
            .connect_timeout(Duration::from_millis(100)),
    );
    let events = client.events();
    let sub = client.subscribe("z").unwrap();
    drop(server); // Nobody listens any more: reconnects are refused.
    conn.close();
    let failed = wait_event(&events, |e| match e {
        Event::ReconnectFailed { attempt, .. } => Some(*attempt),
        _ => None,
    });
    assert_eq!(failed, 1);
    let reason = wait_event(&events, |e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("gave up reconnecting after 2"), "{reason}");
    assert!(client.is_closed());
    assert!(matches!(client.publish("a", "b"), Err(Error::Closed)));
    assert!(matches!(sub.recv_timeout(WAIT), Err(Error::Closed)));
    assert!(matches!(client.flush(WAIT), Err(Error::Closed)));
}

#[test]
fn drain_unsubscribes_flushes_and_closes() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let sub = client.subscribe("d").unwrap();
    let sid = subscribe_of(conn.recv()).sid;
    let fake = thread::spawn(move || {
        assert_eq!(
            conn.recv(),
            ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe { sid, max: None })
        );
        assert_eq!(conn.recv(), ClientFrame::Ping);
        // A message that was on its way before the unsubscribe took effect.
        conn.send(message(sid, 0, 1, "d", "in flight"));
        conn.send(ServerFrame::Pong);
        conn
    });
    client.drain(WAIT).unwrap();
    let _conn = fake.join().unwrap();
    assert!(client.is_closed());
    // The message that arrived before the PONG is still readable, then the end.
    assert_eq!(sub.recv().unwrap().payload_str(), Some("in flight"));
    assert!(matches!(sub.recv(), Err(Error::Unsubscribed)));
    assert!(matches!(client.drain(WAIT), Err(Error::Closed)));
}

#[test]
fn dropping_the_last_handle_closes_the_connection() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder());
    let events = client.events();
    let clone = client.clone();
    drop(client);
    clone.publish("still", "open").unwrap();
    assert_eq!(&publish_of(conn.recv()).subject[..], b"still");
    // Buffered frames are written before the socket closes (linger).
    clone.publish("last", "words").unwrap();
    drop(clone);
    assert_eq!(&publish_of(conn.recv()).subject[..], b"last");
    conn.expect_closed();
    let reason = wait_event(&events, |e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("dropped"), "{reason}");
    // The event queue ends with the client.
    assert_eq!(events.clone().count(), 0);
}

/// A policy whose every delay, with jitter seed [`SLOW_SEED`], is longer than [`WAIT`]: a
/// reconnect within `WAIT` did not wait for it.
fn slow() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_secs(600), Duration::from_secs(600))
}
const SLOW_SEED: u64 = 7;

#[test]
fn goaway_is_an_event_and_the_announced_close_reconnects_at_once() {
    assert!(
        slow().schedule(SLOW_SEED).next().unwrap() > WAIT,
        "the premise: this seed's first backoff is longer than a test waits"
    );
    let server = FakeServer::bind();
    let (client, mut conn) = connect(
        &server,
        1,
        Client::builder().reconnect(slow()).jitter_seed(SLOW_SEED),
    );
    let events = client.events();
    conn.send(ServerFrame::GoAway(GoAway {
        close_within_ms: 30_000,
        reason: Bytes::from_static(b"lame duck mode"),
    }));
    let (within, reason) = wait_event(&events, |e| match e {
        Event::GoAway {
            close_within,
            reason,
        } => Some((*close_within, reason.clone())),
        _ => None,
    });
    assert_eq!(
        (within, reason.as_str()),
        (Duration::from_secs(30), "lame duck mode")
    );
    // The connection works until the server closes it.
    assert!(client.is_connected());
    client.publish("still.here", "x").unwrap();
    assert_eq!(
        &publish_of(conn.recv_answering_pings()).subject[..],
        b"still.here"
    );
    conn.close();
    // No backoff: the next attempt comes at once (the seeded one would wait minutes).
    left_for_going_away_then_back(&server, &events, "lame duck mode");
}

#[test]
fn a_server_still_open_past_its_goaway_deadline_is_left() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(
        &server,
        1,
        Client::builder().reconnect(slow()).jitter_seed(SLOW_SEED),
    );
    let events = client.events();
    conn.send(ServerFrame::GoAway(GoAway {
        close_within_ms: 100,
        reason: Bytes::from_static(b"bye"),
    }));
    // The server never closes: the client does, about a second after the deadline.
    conn.expect_closed();
    left_for_going_away_then_back(&server, &events, "bye");
}

/// The client says it disconnected because the server was going away with `reason`, then
/// reconnects to the server's next connection.
fn left_for_going_away_then_back(server: &FakeServer, events: &Events, reason: &str) {
    let said = wait_event(events, |e| match e {
        Event::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        said,
        DisconnectReason::GoingAway {
            reason: reason.to_string()
        }
    );
    let _second = server.accept_welcome(2);
    wait_event(events, |e| matches!(e, Event::Reconnected(_)).then_some(()));
}

fn presence_frame(id: u32, count: u32, more: bool, body: PresenceBody) -> ServerFrame {
    ServerFrame::Presence(Presence {
        id,
        query: false,
        more,
        count,
        body,
    })
}

fn wire_member(user: &str, info: &str) -> Member {
    Member {
        user: Bytes::copy_from_slice(user.as_bytes()),
        since_ms: 1_700_000_000_000,
        connections: 1,
        info: Bytes::copy_from_slice(info.as_bytes()),
    }
}

fn joined_frame(sid: u32, user: &str, token: &str, count: u32) -> ServerFrame {
    presence_frame(
        sid,
        count,
        false,
        PresenceBody::Joined {
            user: Bytes::copy_from_slice(user.as_bytes()),
            member_token: Bytes::copy_from_slice(token.as_bytes()),
        },
    )
}

#[test]
fn presence_options_go_out_and_the_member_token_comes_back_on_every_resubscribe() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder().reconnect(fast()));
    let events = client.events();
    let sub = client
        .subscribe_builder("room.7")
        .presence("online")
        .presence_events()
        .subscribe()
        .unwrap();
    let watch_only = client
        .subscribe_builder("room.8")
        .presence_events()
        .subscribe()
        .unwrap();
    let plain = client.subscribe("room.9").unwrap();
    assert!(plain.presence().is_none());
    let presence = sub.presence().unwrap();

    let s = subscribe_of(conn.recv());
    assert_eq!((s.sid, &s.subject[..]), (sub.sid(), &b"room.7"[..]));
    assert_eq!(
        s.presence,
        Some(PresenceJoin {
            info: Bytes::from_static(b"online"),
            member_token: None
        })
    );
    assert!(s.presence_events);
    let w = subscribe_of(conn.recv());
    assert_eq!((w.presence, w.presence_events), (None, true));
    let p = subscribe_of(conn.recv());
    assert_eq!((p.presence, p.presence_events), (None, false));

    // The joined frame, then a snapshot in two frames, a join and a leave.
    conn.send(joined_frame(sub.sid(), "me#7", "token-1", 1));
    conn.send(presence_frame(
        sub.sid(),
        3,
        true,
        PresenceBody::Snapshot {
            offset: 0,
            members: vec![wire_member("ann#3", "a"), wire_member("me#7", "online")],
        },
    ));
    conn.send(presence_frame(
        sub.sid(),
        3,
        false,
        PresenceBody::Snapshot {
            offset: 2,
            members: vec![wire_member("bob#5", "b")],
        },
    ));
    conn.send(presence_frame(
        sub.sid(),
        4,
        false,
        PresenceBody::Join(wire_member("cy#9", "c")),
    ));
    conn.send(presence_frame(
        sub.sid(),
        3,
        false,
        PresenceBody::Leave {
            user: Bytes::from_static(b"ann#3"),
        },
    ));
    // Messages still come as messages.
    conn.send(message(sub.sid(), 0, 1, "room.7", "hello room"));

    assert_eq!(
        presence.recv_timeout(WAIT).unwrap(),
        PresenceEvent::Joined {
            user: "me#7".into(),
            count: 1
        }
    );
    match presence.recv_timeout(WAIT).unwrap() {
        PresenceEvent::Snapshot { members, count } => {
            let users: Vec<&str> = members.iter().map(|m| m.user.as_str()).collect();
            assert_eq!((users, count), (vec!["ann#3", "me#7", "bob#5"], 3));
            assert_eq!(members[1].info_str(), Some("online"));
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
    assert!(matches!(
        presence.recv_timeout(WAIT).unwrap(),
        PresenceEvent::Join { member, count: 4 } if member.user == "cy#9"
    ));
    assert_eq!(
        presence.recv_timeout(WAIT).unwrap(),
        PresenceEvent::Leave {
            user: "ann#3".into(),
            count: 3
        }
    );
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("hello room")
    );
    let members: Vec<String> = presence
        .members()
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, ["me#7", "bob#5", "cy#9"]);
    assert_eq!(
        (presence.count(), presence.user().as_deref()),
        (Some(3), Some("me#7"))
    );
    assert_eq!(watch_only.presence().unwrap().members(), None);

    // Lost: the resubscribe carries the token of the last join.
    conn.close();
    let mut conn = server.accept_welcome(1);
    let s = subscribe_of(conn.recv());
    assert_eq!(s.sid, sub.sid());
    assert_eq!(
        s.presence.and_then(|p| p.member_token).as_deref(),
        Some(&b"token-1"[..])
    );
    assert!(s.presence_events);
    assert_eq!(subscribe_of(conn.recv()).sid, watch_only.sid());
    assert_eq!(subscribe_of(conn.recv()).sid, plain.sid());
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    // A newer token replaces it for the next reconnect.
    conn.send(joined_frame(sub.sid(), "me#7", "token-2", 3));
    assert!(matches!(
        presence.recv_timeout(WAIT).unwrap(),
        PresenceEvent::Joined { count: 3, .. }
    ));
    conn.close();
    let mut conn = server.accept_welcome(1);
    let s = subscribe_of(conn.recv());
    assert_eq!(
        s.presence.and_then(|p| p.member_token).as_deref(),
        Some(&b"token-2"[..])
    );
    subscribe_of(conn.recv());
    subscribe_of(conn.recv());

    // A refused join: an event on the presence queue and on the client's, and the
    // subscription stays.
    conn.send(presence_frame(
        sub.sid(),
        0,
        false,
        PresenceBody::Refused {
            code: ErrorCode::PresenceRefused,
            message: Bytes::from_static(b"room is full: max_presence_members (1)"),
        },
    ));
    assert_eq!(
        presence.recv_timeout(WAIT).unwrap(),
        PresenceEvent::Refused {
            code: ErrorCode::PresenceRefused,
            message: "room is full: max_presence_members (1)".into()
        }
    );
    let (code, sid) = wait_event(&events, |e| match e {
        Event::ServerError {
            code, sid, fatal, ..
        } => {
            assert!(!fatal);
            Some((*code, *sid))
        }
        _ => None,
    });
    assert_eq!((code, sid), (ErrorCode::PresenceRefused, Some(sub.sid())));
    assert!(sub.is_active());

    // Unsubscribing ends the presence handle too, after what is queued.
    conn.send(presence_frame(
        sub.sid(),
        2,
        false,
        PresenceBody::Leave {
            user: Bytes::from_static(b"bob#5"),
        },
    ));
    // The client answers a PING after handling the frames before it.
    conn.send(ServerFrame::Ping);
    assert_eq!(conn.recv(), ClientFrame::Pong);
    drop(sub);
    assert!(matches!(
        conn.recv(),
        ClientFrame::Unsubscribe(tern_protocol::binary::Unsubscribe { max: None, .. })
    ));
    assert!(matches!(
        presence.recv_timeout(WAIT),
        Ok(PresenceEvent::Leave { .. })
    ));
    assert!(matches!(
        presence.recv_timeout(WAIT),
        Err(Error::Unsubscribed)
    ));
}

fn query_of(frame: ClientFrame) -> PresenceQuery {
    match frame {
        ClientFrame::PresenceQuery(q) => q,
        other => panic!("expected PRESENCE_QUERY, got {other:?}"),
    }
}

fn page_frame(id: u32, count: u32, more: bool, offset: u32, users: &[&str]) -> ServerFrame {
    ServerFrame::Presence(Presence {
        id,
        query: true,
        more,
        count,
        body: PresenceBody::Page {
            offset,
            members: users.iter().map(|u| wire_member(u, "")).collect(),
        },
    })
}

#[test]
fn presence_queries_are_matched_to_their_answers_and_fail_as_documented() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder().reconnect(fast()));
    let events = client.events();
    // Checked before anything is sent.
    for result in [
        client.presence("room.*", 0, 0, WAIT).map(|_| ()),
        client.presence("room.7", 0, 1001, WAIT).map(|_| ()),
        client
            .subscribe_builder("room.>")
            .presence("x")
            .subscribe()
            .map(|_| ()),
        client
            .subscribe_builder("room.7")
            .queue_group("g")
            .presence_events()
            .subscribe()
            .map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::InvalidOption(_))), "{result:?}");
    }

    let c = client.clone();
    let page = thread::spawn(move || c.presence("room.7", 10, 2, WAIT));
    let q = query_of(conn.recv());
    assert_eq!(
        (&q.room[..], q.offset, q.limit, q.count_only),
        (&b"room.7"[..], 10, 2, false)
    );
    let c = client.clone();
    let count = thread::spawn(move || c.presence_count("room.8", WAIT));
    let q2 = query_of(conn.recv());
    assert_eq!((&q2.room[..], q2.count_only), (&b"room.8"[..], true));
    assert_ne!(q.id, q2.id);
    // Answered out of order, the page in two frames.
    conn.send(page_frame(q2.id, 42, false, 0, &[]));
    conn.send(page_frame(q.id, 12, true, 10, &["a#1"]));
    conn.send(page_frame(q.id, 12, false, 11, &["b#2"]));
    assert_eq!(count.join().unwrap().unwrap(), 42);
    let page = page.join().unwrap().unwrap();
    let users: Vec<&str> = page.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(
        (page.count, page.offset, users),
        (12, 10, vec!["a#1", "b#2"])
    );
    assert_eq!(page.next_offset(), None);

    // A refusal is the broker's error.
    let c = client.clone();
    let refused = thread::spawn(move || c.presence("secret.room", 0, 0, WAIT));
    let q = query_of(conn.recv());
    conn.send(ServerFrame::Presence(Presence {
        id: q.id,
        query: true,
        more: false,
        count: 0,
        body: PresenceBody::Refused {
            code: ErrorCode::PermissionViolation,
            message: Bytes::from_static(
                b"Permissions Violation for Subscription to \"secret.room\"",
            ),
        },
    }));
    match refused.join().unwrap() {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::PermissionViolation);
            assert!(message.contains("secret.room"), "{message}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }

    // No answer in time; a late one is ignored.
    assert!(matches!(
        client.presence_count("room.7", 30 * MS),
        Err(Error::Timeout)
    ));
    let late = query_of(conn.recv());
    conn.send(page_frame(late.id, 1, false, 0, &[]));

    // Written, then the connection is lost: the answer can no longer come.
    let c = client.clone();
    let lost = thread::spawn(move || c.presence_count("room.7", WAIT));
    query_of(conn.recv());
    conn.close();
    assert!(matches!(lost.join().unwrap(), Err(Error::Disconnected)));
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });

    // Asked while disconnected: it goes out after the reconnect's WELCOME.
    let c = client.clone();
    let later = thread::spawn(move || c.presence_count("room.7", WAIT));
    thread::sleep(50 * MS);
    let mut conn = server.accept_welcome(1);
    let q = query_of(conn.recv());
    conn.send(page_frame(q.id, 5, false, 0, &[]));
    assert_eq!(later.join().unwrap().unwrap(), 5);

    client.close();
    assert!(matches!(
        client.presence_count("room.7", WAIT),
        Err(Error::Closed)
    ));
}

#[test]
fn identified_publishes_lost_with_their_connection_go_again_after_the_resubscriptions() {
    let server = FakeServer::bind();
    let (client, mut conn) = connect(&server, 1, Client::builder().reconnect(fast()));
    let events = client.events();
    let sub = client.subscribe("s").unwrap();
    subscribe_of(conn.recv());
    let with_id = |id: &str| PublishOptions::new().message_id(id);
    let first = client
        .publish_with_ack("p.1", "one", &with_id("m-1"))
        .unwrap();
    let anonymous = client
        .publish_with_ack("p.anon", "?", &PublishOptions::new())
        .unwrap();
    let second = client
        .publish_with_ack("p.2", "two", &with_id("m-2"))
        .unwrap();
    for _ in 0..3 {
        publish_of(conn.recv());
    }
    // Written, never acknowledged: the connection drops.
    conn.close();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    // Without a message id the outcome is unknown, and the caller is told so.
    assert!(matches!(
        anonymous.wait_timeout(WAIT),
        Err(Error::Disconnected)
    ));
    let later = client
        .publish_with_ack("p.3", "three", &with_id("m-3"))
        .unwrap();

    let mut conn = server.accept_welcome(1);
    // The resubscription, then the identified publishes in the order they were first
    // written, then what was published while offline.
    assert_eq!(subscribe_of(conn.recv()).sid, sub.sid());
    let again: Vec<_> = (0..3).map(|_| publish_of(conn.recv())).collect();
    let ids: Vec<_> = again
        .iter()
        .map(|p| p.message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, [&b"m-1"[..], b"m-2", b"m-3"].map(Bytes::from_static));
    for (p, sequence) in again.iter().zip([7, 8, 9]) {
        conn.send(ServerFrame::PublishAck(PublishAck {
            ack_id: p.ack_id.unwrap(),
            result: AckResult::Stored {
                shard: 0,
                sequence,
                duplicate: sequence < 9,
            },
        }));
    }
    let acks = [first, second, later].map(|p| p.wait_timeout(WAIT).unwrap());
    assert_eq!(
        acks.map(|a| (a.sequence, a.duplicate)),
        [(7, true), (8, true), (9, false)]
    );
    assert_eq!(client.buffered_bytes(), 0);
}

#[test]
fn identified_publishes_that_do_not_fit_the_offline_buffer_are_disconnected() {
    let server = FakeServer::bind();
    // Each publish below is a little over 1000 bytes on the wire: two fit in 2500.
    let builder = Client::builder()
        .reconnect(fast())
        .offline_buffer_bytes(2500);
    let (client, mut conn) = connect(&server, 1, builder);
    let events = client.events();
    let payload = vec![b'x'; 1000];
    let pending: Vec<_> = (1..=3)
        .map(|i| {
            let options = PublishOptions::new().message_id(format!("m-{i}"));
            client.publish_with_ack("p", &payload, &options).unwrap()
        })
        .collect();
    for _ in 0..3 {
        publish_of(conn.recv());
    }
    conn.close();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    let mut pending = pending.into_iter();
    let (first, second, third) = (
        pending.next().unwrap(),
        pending.next().unwrap(),
        pending.next().unwrap(),
    );
    // The oldest that fit go again; the one that does not is answered at once.
    assert!(matches!(third.wait_timeout(WAIT), Err(Error::Disconnected)));

    let mut conn = server.accept_welcome(1);
    for p in [first, second] {
        let sent = publish_of(conn.recv());
        assert_eq!(sent.ack_id, Some(p.id()));
        conn.send(ServerFrame::PublishAck(PublishAck {
            ack_id: p.id(),
            result: AckResult::Stored {
                shard: 0,
                sequence: p.id(),
                duplicate: true,
            },
        }));
        assert!(p.wait_timeout(WAIT).unwrap().duplicate);
    }
    assert!(conn.recv_timeout(100 * MS).is_none());
}

#[test]
fn without_reconnects_an_identified_publish_lost_with_its_connection_is_disconnected() {
    let server = FakeServer::bind();
    let builder = Client::builder().reconnect(ReconnectPolicy::disabled());
    let (client, mut conn) = connect(&server, 1, builder);
    let pending = client
        .publish_with_ack("p", "x", &PublishOptions::new().message_id("m-1"))
        .unwrap();
    publish_of(conn.recv());
    conn.close();
    // There is no next connection to send it on: the outcome is unknown, as without an id.
    assert!(matches!(
        pending.wait_timeout(WAIT),
        Err(Error::Disconnected)
    ));
}

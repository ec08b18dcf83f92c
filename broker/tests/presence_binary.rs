//! Presence on the binary port with its own frames (`docs/protocol-binary.md#presence`),
//! against the real ternd, frame by frame with the reference codec: a `SUBSCRIBE` that
//! joins and one that watches (snapshot first, then joins and leaves), `PRESENCE_QUERY`
//! pages and counts, a leave on `UNSUBSCRIBE` at once and on close (or a stale
//! connection) after the grace window, the member token that keeps an anonymous member across a reconnect, every
//! refusal, and a watcher that falls behind getting a fresh snapshot instead of a drop
//! notice.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_protocol::binary::{
    ClientFrame, ErrorCode, ErrorFrame, Hello, Member, Presence, PresenceBody, PresenceJoin,
    PresenceQuery, Publish, ServerFrame, Subscribe, Unsubscribe,
};

use common::{BinClient, Broker, ReadEnd, WAIT};

/// A broker with these extra flags (no store: presence is not stored).
fn broker(extra: &[&str]) -> Broker {
    let mut args = vec!["--no-store", "--monitor", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Broker::with_args(&args)
}

/// A binary connection named `name`.
fn client(broker: &Broker, name: &str) -> BinClient {
    BinClient::connect_with(
        broker.binary_addr(),
        Hello {
            client_name: Bytes::copy_from_slice(name.as_bytes()),
            ..Hello::default()
        },
    )
}

fn subscribe(sid: u32, room: &str) -> Subscribe {
    Subscribe {
        sid,
        subject: Bytes::copy_from_slice(room.as_bytes()),
        ..Subscribe::default()
    }
}

/// Joins `room` with `info` (and a member token) on `sid`.
fn join(c: &mut BinClient, sid: u32, room: &str, info: &str, token: Option<&Bytes>) {
    c.send(&ClientFrame::Subscribe(Subscribe {
        presence: Some(PresenceJoin {
            info: Bytes::copy_from_slice(info.as_bytes()),
            member_token: token.cloned(),
        }),
        ..subscribe(sid, room)
    }));
}

/// Watches `room`'s presence on `sid`.
fn watch(c: &mut BinClient, sid: u32, room: &str) {
    c.send(&ClientFrame::Subscribe(Subscribe {
        presence_events: true,
        ..subscribe(sid, room)
    }));
}

/// The next `PRESENCE` frame, answering `PING`s on the way.
fn presence(c: &mut BinClient) -> Presence {
    loop {
        match c.read_frame() {
            ServerFrame::Presence(p) => return p,
            ServerFrame::Ping => c.send(&ClientFrame::Pong),
            other => panic!("expected PRESENCE, got {other:?}"),
        }
    }
}

/// A whole snapshot (its frames put together): the count and the members' names.
fn snapshot(c: &mut BinClient, sid: u32) -> (u32, Vec<String>) {
    let mut users = Vec::new();
    loop {
        let p = presence(c);
        assert_eq!(p.id, sid);
        let PresenceBody::Snapshot { offset, members } = p.body else {
            panic!("expected a snapshot, got {p:?}");
        };
        assert_eq!(offset as usize, users.len(), "pages in order");
        users.extend(members.iter().map(name));
        if !p.more {
            return (p.count, users);
        }
    }
}

fn name(m: &Member) -> String {
    String::from_utf8_lossy(&m.user).into_owned()
}

/// Our own join's answer: the identity and the member token.
fn joined(c: &mut BinClient, sid: u32) -> (String, Bytes, u32) {
    let p = presence(c);
    assert_eq!((p.id, p.query), (sid, false));
    match p.body {
        PresenceBody::Joined { user, member_token } => (
            String::from_utf8_lossy(&user).into_owned(),
            member_token,
            p.count,
        ),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// A `PING` and everything before its `PONG`.
fn until_pong(c: &mut BinClient) -> Vec<ServerFrame> {
    c.send(&ClientFrame::Ping);
    let mut seen = Vec::new();
    loop {
        match c.read_frame() {
            ServerFrame::Pong => return seen,
            ServerFrame::Ping => {}
            other => seen.push(other),
        }
    }
}

fn query(c: &mut BinClient, id: u32, room: &str, offset: u32, limit: u32, count_only: bool) {
    c.send(&ClientFrame::PresenceQuery(PresenceQuery {
        id,
        room: Bytes::copy_from_slice(room.as_bytes()),
        offset,
        limit,
        count_only,
    }));
}

#[test]
fn join_watch_query_and_leave_with_the_binary_frames() {
    let broker = broker(&["--presence-grace", "300ms"]);
    let mut watcher = client(&broker, "watcher");
    watch(&mut watcher, 1, "room.1");
    assert_eq!(snapshot(&mut watcher, 1), (0, vec![]), "an empty room");

    let mut alice = client(&broker, "alice");
    join(&mut alice, 7, "room.1", "typing", None);
    let (user, token, count) = joined(&mut alice, 7);
    assert_eq!(user, format!("alice#{}", alice.welcome.client_id));
    assert!(!token.is_empty());
    assert_eq!(count, 1);

    let p = presence(&mut watcher);
    assert_eq!((p.id, p.count), (1, 1));
    match p.body {
        PresenceBody::Join(m) => {
            assert_eq!(name(&m), user);
            assert_eq!(&m.info[..], b"typing");
            assert_eq!(m.connections, 1);
            assert!(m.since_ms > 1_600_000_000_000);
        }
        other => panic!("expected a join, got {other:?}"),
    }

    // The watcher's subscription is also the room's: it gets its messages.
    alice.send(&ClientFrame::Publish(Publish {
        subject: Bytes::from_static(b"room.1"),
        payload: Bytes::from_static(b"hello"),
        ..Publish::default()
    }));
    match watcher.read_frame() {
        ServerFrame::Message(m) => assert_eq!((m.sid, &m.payload[..]), (1, &b"hello"[..])),
        other => panic!("expected the room's message, got {other:?}"),
    }

    // A page and a count.
    query(&mut watcher, 40, "room.1", 0, 0, false);
    let p = presence(&mut watcher);
    assert_eq!((p.id, p.query, p.count, p.more), (40, true, 1, false));
    match p.body {
        PresenceBody::Page { offset, members } => {
            assert_eq!(offset, 0);
            assert_eq!(
                members.iter().map(name).collect::<Vec<_>>(),
                [user.as_str()]
            );
        }
        other => panic!("expected a page, got {other:?}"),
    }
    query(&mut watcher, 41, "room.1", 0, 0, true);
    let p = presence(&mut watcher);
    assert_eq!((p.id, p.count), (41, 1));
    assert_eq!(
        p.body,
        PresenceBody::Page {
            offset: 0,
            members: vec![]
        }
    );

    // UNSUBSCRIBE leaves at once (no grace).
    alice.send(&ClientFrame::Unsubscribe(Unsubscribe { sid: 7, max: None }));
    let p = presence(&mut watcher);
    assert_eq!(p.count, 0);
    assert_eq!(
        p.body,
        PresenceBody::Leave {
            user: Bytes::from(user.clone())
        }
    );

    // A closed connection leaves after the grace window.
    let mut bob = client(&broker, "bob");
    join(&mut bob, 1, "room.1", "", None);
    let (bob_user, _, _) = joined(&mut bob, 1);
    assert!(matches!(presence(&mut watcher).body, PresenceBody::Join(_)));
    let closed = Instant::now();
    drop(bob);
    let p = presence(&mut watcher);
    assert!(
        closed.elapsed() >= Duration::from_millis(250),
        "left after the grace window, not at once"
    );
    assert_eq!(
        (p.count, p.body),
        (
            0,
            PresenceBody::Leave {
                user: Bytes::from(bob_user)
            }
        )
    );
}

#[test]
fn a_member_token_keeps_an_anonymous_member_across_a_reconnect() {
    let broker = broker(&["--presence-grace", "3s"]);
    let mut watcher = client(&broker, "watcher");
    watch(&mut watcher, 1, "doc.9");
    assert_eq!(snapshot(&mut watcher, 1).0, 0);

    let mut tab = client(&broker, "tab");
    join(&mut tab, 3, "doc.9", "v1", None);
    let (user, token, _) = joined(&mut tab, 3);
    assert!(matches!(presence(&mut watcher).body, PresenceBody::Join(_)));

    // The connection drops; a new one (another client id) comes back with the token.
    drop(tab);
    let mut back = client(&broker, "tab");
    join(&mut back, 3, "doc.9", "v1", Some(&token));
    let (again, _, count) = joined(&mut back, 3);
    assert_eq!(again, user, "the same member");
    assert_eq!(count, 1);
    let seen = until_pong(&mut watcher);
    assert!(seen.is_empty(), "no leave and no join: {seen:?}");

    // A token this broker did not sign (or none) is a member of its own.
    let mut forged = token.to_vec();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let mut other = client(&broker, "tab");
    join(&mut other, 3, "doc.9", "", Some(&Bytes::from(forged)));
    let (stranger, _, count) = joined(&mut other, 3);
    assert_ne!(stranger, user);
    assert_eq!(stranger, format!("tab#{}", other.welcome.client_id));
    assert_eq!(count, 2);
    let p = presence(&mut watcher);
    assert_eq!(
        (p.count, matches!(p.body, PresenceBody::Join(_))),
        (2, true)
    );
}

#[test]
fn presence_options_and_queries_are_refused_with_reasons() {
    let broker = broker(&["--max-presence-info", "8B", "--max-presence-members", "1"]);
    let mut c = client(&broker, "c");
    let refused = |c: &mut BinClient, sid: u32| match c.read_frame() {
        ServerFrame::Error(ErrorFrame {
            code,
            fatal: false,
            sid: Some(s),
            message,
        }) if s == sid => (code, String::from_utf8_lossy(&message).into_owned()),
        other => panic!("expected a refusal of {sid}, got {other:?}"),
    };

    join(&mut c, 1, "room.*", "", None);
    let (code, text) = refused(&mut c, 1);
    assert_eq!(code, ErrorCode::InvalidOption);
    assert!(text.contains("a room is a literal subject"), "{text}");

    c.send(&ClientFrame::Subscribe(Subscribe {
        queue: Some(Bytes::from_static(b"q")),
        presence_events: true,
        ..subscribe(2, "room.1")
    }));
    let (code, text) = refused(&mut c, 2);
    assert_eq!(code, ErrorCode::InvalidOption);
    assert!(text.contains("queue group"), "{text}");

    join(&mut c, 3, "room.1", "far too long", None);
    let (code, text) = refused(&mut c, 3);
    assert_eq!(code, ErrorCode::PresenceRefused);
    assert!(text.contains("max_presence_info (8 bytes)"), "{text}");

    // Refused subscriptions were not made: the sids are free.
    join(&mut c, 1, "room.1", "ok", None);
    joined(&mut c, 1);

    // The room is full: the join is refused by the room's home, and the subscription
    // stays as a plain one (it gets the room's messages).
    let mut d = client(&broker, "d");
    join(&mut d, 5, "room.1", "", None);
    let p = presence(&mut d);
    assert_eq!((p.id, p.query), (5, false));
    match p.body {
        PresenceBody::Refused { code, message } => {
            assert_eq!(code, ErrorCode::PresenceRefused);
            assert!(
                String::from_utf8_lossy(&message).contains("max_presence_members (1)"),
                "{message:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.send(&ClientFrame::Publish(Publish {
        subject: Bytes::from_static(b"room.1"),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    }));
    assert!(matches!(d.read_frame(), ServerFrame::Message(m) if m.sid == 5));

    // Queries: not a room, a page too large.
    for (id, room, limit, code) in [
        (1, "room.>", 0, ErrorCode::InvalidOption),
        (2, "room.1", 5000, ErrorCode::InvalidOption),
    ] {
        query(&mut d, id, room, 0, limit, false);
        let p = presence(&mut d);
        assert_eq!((p.id, p.query), (id, true));
        assert!(
            matches!(&p.body, PresenceBody::Refused { code: c, .. } if *c == code),
            "{p:?}"
        );
    }
    // A member token flag without a join is a protocol violation (the codec cannot make
    // one, so the frame is made by hand: SUBSCRIBE flags 0x40, sid 9, "r").
    d.send_raw(
        b"\x00\x00\x00\x11\x03\x40\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01r",
    );
    match d.read_frame() {
        ServerFrame::Error(e) => {
            assert!(e.fatal && e.code == ErrorCode::ProtocolViolation, "{e:?}")
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

#[test]
fn presence_query_obeys_the_users_permissions() {
    let dir = common::temp_dir("presence-binary");
    let conf = dir.join("ternd.toml");
    std::fs::write(
        &conf,
        "[[users]]\nuser = \"eve\"\npassword = \"pw\"\n\
         [users.permissions]\nsubscribe = [\"lobby\"]\n",
    )
    .unwrap();
    let broker = broker(&["--config", conf.to_str().unwrap()]);
    let mut eve = BinClient::connect_with(
        broker.binary_addr(),
        Hello {
            user: Some(Bytes::from_static(b"eve")),
            pass: Some(Bytes::from_static(b"pw")),
            ..Hello::default()
        },
    );
    query(&mut eve, 1, "vault", 0, 0, true);
    let p = presence(&mut eve);
    assert!(
        matches!(
            &p.body,
            PresenceBody::Refused {
                code: ErrorCode::PermissionViolation,
                ..
            }
        ),
        "{p:?}"
    );
    join(&mut eve, 2, "vault", "", None);
    match eve.read_frame() {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::PermissionViolation),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Her own room: she is the member, by her user name.
    join(&mut eve, 3, "lobby", "", None);
    assert_eq!(joined(&mut eve, 3).0, "eve");
    query(&mut eve, 4, "lobby", 0, 0, true);
    assert_eq!(presence(&mut eve).count, 1);
}

#[test]
fn a_watcher_that_falls_behind_gets_a_fresh_snapshot_not_a_drop_notice() {
    let broker = broker(&["--write-buffer", "1KiB"]);
    // A watcher whose presence comes through a queue of one message, and which does not
    // read for a while: first its socket fills with a feed it also takes (sid 2).
    let mut watcher = BinClient::connect_small_rcvbuf(broker.binary_addr(), 4096);
    watcher.send(&ClientFrame::Subscribe(Subscribe {
        presence_events: true,
        max_queue_messages: 1,
        ..subscribe(1, "crowd")
    }));
    watcher.send(&ClientFrame::Subscribe(subscribe(2, "feed")));
    assert_eq!(snapshot(&mut watcher, 1).0, 0);
    let mut feed = client(&broker, "feed");
    let mut frames = bytes::BytesMut::new();
    for _ in 0..4000 {
        let publish = ClientFrame::Publish(Publish {
            subject: Bytes::from_static(b"feed"),
            payload: Bytes::from(vec![b'f'; 2048]),
            ..Publish::default()
        });
        tern_protocol::binary::encode_client_frame(&publish, &mut frames).unwrap();
    }
    feed.send_raw(&frames);
    until_pong(&mut feed);

    // Then many members join: a queue of one cannot hold their events.
    let members: Vec<BinClient> = (0..60)
        .map(|i| {
            let mut m = client(&broker, &format!("m{i}"));
            join(&mut m, 1, "crowd", "here", None);
            joined(&mut m, 1);
            m
        })
        .collect();

    // Now it reads: events, and a fresh snapshot after the drops (never a drop notice).
    // What it knows, from snapshots and events, ends up as the room is. (Snapshots are
    // a second apart at most: it reads until two seconds pass without a frame.)
    let deadline = Instant::now() + WAIT * 2;
    let mut view = std::collections::BTreeSet::new();
    let mut snapshots = 0;
    let mut count = 0;
    loop {
        match watcher.try_read_frame(Duration::from_secs(2)) {
            Ok(ServerFrame::Presence(p)) => {
                assert_eq!(p.id, 1);
                count = p.count;
                match p.body {
                    PresenceBody::Snapshot { offset, members } => {
                        if offset == 0 {
                            view.clear();
                            snapshots += 1;
                        }
                        view.extend(members.iter().map(name));
                    }
                    PresenceBody::Join(m) => {
                        view.insert(name(&m));
                    }
                    PresenceBody::Leave { user } => {
                        view.remove(&*String::from_utf8_lossy(&user));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            Ok(ServerFrame::DropNotice(d)) => {
                assert_eq!(d.sid, 2, "a drop notice for presence: {d:?}");
            }
            Ok(ServerFrame::Message(m)) => assert_eq!(m.sid, 2),
            Ok(ServerFrame::Ping) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ReadEnd::Timeout) => break,
            Err(end) => panic!("watcher closed: {end:?}"),
        }
        assert!(Instant::now() < deadline, "presence kept coming");
    }
    assert!(snapshots >= 1, "a fresh snapshot after the drops");
    assert_eq!((count, view.len()), (60, 60));
    let varz = broker.varz();
    assert!(varz["presence_snapshots"].as_u64().unwrap() >= 2, "{varz}");
    drop(members);
}

#[test]
fn a_stale_member_leaves_after_the_grace_window() {
    // A member that stops answering the server's pings is closed as stale, and leaves
    // once the grace window has run from then.
    let broker = broker(&[
        "--ping-interval",
        "200ms",
        "--ping-max",
        "2",
        "--presence-grace",
        "200ms",
    ]);
    let mut watcher = client(&broker, "watcher");
    watch(&mut watcher, 1, "room.s");
    assert_eq!(snapshot(&mut watcher, 1).0, 0);
    let mut ghost = client(&broker, "ghost");
    join(&mut ghost, 1, "room.s", "", None);
    let (user, _, _) = joined(&mut ghost, 1);
    assert!(matches!(presence(&mut watcher).body, PresenceBody::Join(_)));

    // The watcher answers pings (it reads); the ghost never reads again.
    let started = Instant::now();
    let p = loop {
        match watcher.read_frame() {
            ServerFrame::Ping => watcher.send(&ClientFrame::Pong),
            ServerFrame::Presence(p) => break p,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "stale after two unanswered pings, then the grace window"
    );
    assert_eq!(
        (p.count, p.body),
        (
            0,
            PresenceBody::Leave {
                user: Bytes::from(user)
            }
        )
    );
    let varz = broker.varz();
    assert_eq!(varz["stale_connections"], 1, "{varz}");
    drop(ghost);
}

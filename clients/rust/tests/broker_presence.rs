//! Presence over the binary port against the real broker (`docs/presence.md`).
//!
//! With the same subjects as the text port: a tern-client joins a room with a request,
//! another watches the room's events and asks who is in it, and a closed connection leaves
//! after the grace window; a refused join comes back as a status on the inbox, an events
//! subject cannot be published to.
//!
//! With the typed API over the binary port's own frames: a subscription that joins and
//! one that watches (snapshot, joins, leaves, the kept view, messages still delivered),
//! queries and counts, a crowd whose snapshot and page the broker sends in several frames
//! (handed out as one), two anonymous connections of one name as two members, a reconnect
//! within the grace window that nobody sees (through a proxy whose connections the test
//! cuts), every refusal, and with authentication one member for a user's connections and
//! a query refused by permissions.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use common::proxy::Proxy;
use common::{wait_event, WAIT};
use serde_json::Value;
use tern_broker::Server;
use tern_client::{
    Client, Error, ErrorCode, Event, Message, Presence, PresenceEvent, ReconnectPolicy,
    Subscription,
};
use tern_protocol::binary::{
    encode_client_frame, ClientFrame, Hello, Preface, PresenceJoin, Subscribe,
};

fn broker(extra: &[&str]) -> Server {
    let mut args = vec!["--no-store"];
    args.extend_from_slice(extra);
    common::broker::start("127.0.0.1:0", &args)
}

fn url(server: &Server) -> String {
    format!("tern://{}", server.binary_addr().unwrap())
}

fn json(m: &Message) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}: {m:?}"))
}

#[test]
fn join_watch_query_and_leave_over_the_binary_port() {
    let server = broker(&["--presence-grace", "300ms", "--max-presence-info", "8B"]);
    let watcher = Client::builder()
        .name("watcher")
        .connect(&url(&server))
        .unwrap();
    let events = watcher.subscribe("$TERN.PRESENCE.EVENTS.room.7").unwrap();
    watcher.flush(WAIT).unwrap();

    let alice = Client::builder()
        .name("alice")
        .connect(&url(&server))
        .unwrap();
    let joined = alice
        .request("$TERN.PRESENCE.JOIN.room.7", "online", WAIT)
        .unwrap();
    assert_eq!(json(&joined)["count"], 1);
    let e = json(&events.recv_timeout(WAIT).unwrap());
    assert_eq!(
        (e["event"].as_str(), e["count"].as_u64()),
        (Some("join"), Some(1))
    );
    assert!(e["user"].as_str().unwrap().starts_with("alice#"), "{e}");
    assert_eq!(e["info"], "online");

    let page = json(&watcher.request("$TERN.PRESENCE.room.7", "", WAIT).unwrap());
    assert_eq!(page["count"], 1, "{page}");
    assert_eq!(page["members"][0]["info"], "online", "{page}");

    // Over max_presence_info: a 409 on the inbox.
    let refused = alice
        .request("$TERN.PRESENCE.JOIN.room.8", "far too long", WAIT)
        .unwrap();
    let block = refused
        .headers
        .as_ref()
        .map(|h| h.to_bytes())
        .unwrap_or_default();
    let status = String::from_utf8_lossy(&block);
    assert!(
        status.contains("409") && status.contains("max_presence_info"),
        "{status}"
    );
    // Only the broker publishes events.
    match alice.publish_acked("$TERN.PRESENCE.EVENTS.room.7", "fake") {
        Err(Error::Refused { code, .. }) => assert_eq!(code, ErrorCode::PermissionViolation),
        other => panic!("expected the refusal, got {other:?}"),
    }

    let closed = Instant::now();
    alice.close();
    let e = json(&events.recv_timeout(WAIT).unwrap());
    assert_eq!(
        (e["event"].as_str(), e["count"].as_u64()),
        (Some("leave"), Some(0)),
        "{e}"
    );
    assert!(
        closed.elapsed() >= Duration::from_millis(250),
        "after the grace window"
    );
    server.shutdown();
}

/// A client named `name`.
fn named(server: &Server, name: &str) -> Client {
    Client::builder().name(name).connect(&url(server)).unwrap()
}

/// A subscription to `room` that joins it with `info`, and its presence.
fn join(client: &Client, room: &str, info: &str) -> (Subscription, Presence) {
    let sub = client
        .subscribe_builder(room)
        .presence(info)
        .subscribe()
        .unwrap();
    let presence = sub.presence().unwrap();
    (sub, presence)
}

/// A subscription that watches `room`, and its presence.
fn watch(client: &Client, room: &str) -> (Subscription, Presence) {
    let sub = client
        .subscribe_builder(room)
        .presence_events()
        .subscribe()
        .unwrap();
    let presence = sub.presence().unwrap();
    (sub, presence)
}

/// The next event, within [`WAIT`].
fn next(presence: &Presence) -> PresenceEvent {
    presence
        .recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no presence event within {WAIT:?}: {e}"))
}

/// The user of a `Joined` event.
fn joined(presence: &Presence) -> (String, u32) {
    match next(presence) {
        PresenceEvent::Joined { user, count } => (user, count),
        other => panic!("expected Joined, got {other:?}"),
    }
}

/// The users of a `Snapshot` event, and its count.
fn snapshot(presence: &Presence) -> (Vec<String>, u32) {
    match next(presence) {
        PresenceEvent::Snapshot { members, count } => {
            (members.into_iter().map(|m| m.user).collect(), count)
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn users(presence: &Presence) -> Vec<String> {
    presence
        .members()
        .expect("a snapshot came")
        .into_iter()
        .map(|m| m.user)
        .collect()
}

#[test]
fn join_watch_and_query_with_the_typed_api() {
    let server = broker(&["--presence-grace", "5s"]);
    let watcher = named(&server, "watcher");
    let (room, watching) = watch(&watcher, "room.1");
    assert_eq!(snapshot(&watching), (vec![], 0), "an empty room");
    assert_eq!(watching.members(), Some(vec![]));

    let alice = named(&server, "alice");
    let (alice_sub, alice_p) = join(&alice, "room.1", "online");
    let (user, count) = joined(&alice_p);
    assert!(user.starts_with("alice#"), "{user}");
    assert_eq!(count, 1);
    assert_eq!(alice_p.user().as_deref(), Some(user.as_str()));
    assert_eq!(alice_p.members(), None, "alice joined without watching");
    match next(&watching) {
        PresenceEvent::Join { member, count } => {
            assert_eq!((member.user.as_str(), count), (user.as_str(), 1));
            assert_eq!((member.info_str(), member.connections), (Some("online"), 1));
            let age = SystemTime::now().duration_since(member.since()).unwrap();
            assert!(age < Duration::from_secs(60), "joined {age:?} ago");
        }
        other => panic!("expected the join, got {other:?}"),
    }
    assert_eq!(users(&watching), std::slice::from_ref(&user));
    assert_eq!(watching.count(), Some(1));

    // The room's messages still come to both, as messages.
    alice.publish("room.1", "hello").unwrap();
    assert_eq!(
        room.recv_timeout(WAIT).unwrap().payload_str(),
        Some("hello")
    );
    assert_eq!(
        alice_sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("hello")
    );

    // Queries, from anyone.
    let page = watcher.presence("room.1", 0, 0, WAIT).unwrap();
    assert_eq!((page.count, page.offset, page.next_offset()), (1, 0, None));
    assert_eq!(page.members[0].user, user);
    assert_eq!(page.members[0].info_str(), Some("online"));
    assert_eq!(watcher.presence_count("room.1", WAIT).unwrap(), 1);
    assert_eq!(alice.presence_count("room.nobody", WAIT).unwrap(), 0);
    let past_the_end = watcher.presence("room.1", 5, 10, WAIT).unwrap();
    assert_eq!((past_the_end.count, past_the_end.members.len()), (1, 0));

    // Unsubscribing leaves at once, not after the grace window.
    let left = Instant::now();
    alice_sub.unsubscribe().unwrap();
    assert_eq!(
        next(&watching),
        PresenceEvent::Leave {
            user: user.clone(),
            count: 0
        }
    );
    assert!(
        left.elapsed() < Duration::from_secs(4),
        "{:?}",
        left.elapsed()
    );
    assert!(matches!(
        alice_p.recv_timeout(WAIT),
        Err(Error::Unsubscribed)
    ));
    assert_eq!(users(&watching), Vec::<String>::new());
    assert_eq!(watcher.presence_count("room.1", WAIT).unwrap(), 0);
    server.shutdown();
}

#[test]
fn two_connections_of_one_anonymous_name_are_two_members() {
    let server = broker(&[]);
    let watcher = named(&server, "watcher");
    let (_w, watching) = watch(&watcher, "room.2");
    assert_eq!(snapshot(&watching).1, 0);
    let first = named(&server, "bob");
    let second = named(&server, "bob");
    let (_s1, p1) = join(&first, "room.2", "tab 1");
    let (one, _) = joined(&p1);
    let (_s2, p2) = join(&second, "room.2", "tab 2");
    let (two, count) = joined(&p2);
    assert_ne!(one, two);
    assert!(
        one.starts_with("bob#") && two.starts_with("bob#"),
        "{one} {two}"
    );
    assert_eq!(count, 2);
    for (user, count) in [(&one, 1), (&two, 2)] {
        match next(&watching) {
            PresenceEvent::Join { member, count: c } => {
                assert_eq!((&member.user, c), (user, count));
            }
            other => panic!("expected a join, got {other:?}"),
        }
    }
    let page = first.presence("room.2", 0, 0, WAIT).unwrap();
    let listed: Vec<(&str, Option<&str>)> = page
        .members
        .iter()
        .map(|m| (m.user.as_str(), m.info_str()))
        .collect();
    assert_eq!(
        listed,
        [(one.as_str(), Some("tab 1")), (two.as_str(), Some("tab 2"))],
        "in join order"
    );
    // A page at a time.
    let page = first.presence("room.2", 1, 1, WAIT).unwrap();
    assert_eq!((page.count, page.offset, page.members.len()), (2, 1, 1));
    assert_eq!(page.members[0].user, two);
    assert_eq!(users(&watching), [one, two]);
    server.shutdown();
}

/// `n` members of `room`, each on a raw binary connection that joins (pipelined behind its
/// `HELLO`) and never reads: a crowd without a client thread each.
fn crowd(server: &Server, room: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut out = BytesMut::new();
            Preface::default().encode(&mut out);
            for frame in [
                ClientFrame::Hello(Hello {
                    client_name: Bytes::from(format!("m{i}")),
                    ..Hello::default()
                }),
                ClientFrame::Subscribe(Subscribe {
                    sid: 1,
                    subject: Bytes::copy_from_slice(room.as_bytes()),
                    presence: Some(PresenceJoin {
                        info: Bytes::from_static(b"here"),
                        member_token: None,
                    }),
                    ..Subscribe::default()
                }),
            ] {
                encode_client_frame(&frame, &mut out).unwrap();
            }
            let mut stream = TcpStream::connect(server.binary_addr().unwrap()).unwrap();
            stream.write_all(&out).unwrap();
            stream
        })
        .collect()
}

#[test]
fn a_crowded_rooms_snapshot_and_page_come_in_several_frames_and_are_handed_out_whole() {
    // More members than the broker puts in one PRESENCE frame (256).
    const N: usize = 300;
    let server = broker(&[]);
    let client = named(&server, "counter");
    let _crowd = crowd(&server, "room.big", N);
    let deadline = Instant::now() + WAIT;
    while client.presence_count("room.big", WAIT).unwrap() < N as u32 {
        assert!(Instant::now() < deadline, "the crowd did not join in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_w, watching) = watch(&client, "room.big");
    let (members, count) = snapshot(&watching);
    assert_eq!((members.len(), count), (N, N as u32));
    let page = client.presence("room.big", 0, 1000, WAIT).unwrap();
    assert_eq!(
        (page.count, page.offset, page.members.len()),
        (N as u32, 0, N)
    );
    let listed: Vec<String> = page.members.into_iter().map(|m| m.user).collect();
    assert_eq!(listed, members, "the page and the snapshot, in join order");
    let page = client.presence("room.big", 250, 0, WAIT).unwrap();
    assert_eq!((page.offset, page.members.len()), (250, 50));
    server.shutdown();
}

#[test]
fn a_reconnect_within_the_grace_window_is_the_same_member_and_nobody_sees_it() {
    let grace = Duration::from_secs(1);
    let server = broker(&["--presence-grace", "1s"]);
    let watcher = named(&server, "watcher");
    let (_w, watching) = watch(&watcher, "room.3");
    assert_eq!(snapshot(&watching).1, 0);

    let proxy = Proxy::start(server.binary_addr().unwrap());
    let carol = Client::builder()
        .name("carol")
        .reconnect(ReconnectPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .connect(&proxy.url())
        .unwrap();
    let events = carol.events();
    let (_sub, carol_p) = join(&carol, "room.3", "here");
    let (user, _) = joined(&carol_p);
    assert!(matches!(
        next(&watching),
        PresenceEvent::Join { member, count: 1 } if member.user == user
    ));

    proxy.cut();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    // The resubscribe carried the member token: the same member, still alone in the room.
    assert_eq!(joined(&carol_p), (user.clone(), 1));
    // Nobody saw anything, not even when the old connection's grace window ran out.
    let quiet = watching.recv_timeout(grace + Duration::from_millis(700));
    assert!(matches!(quiet, Err(Error::Timeout)), "{quiet:?}");
    let page = carol.presence("room.3", 0, 0, WAIT).unwrap();
    assert_eq!(page.count, 1);
    assert_eq!(
        (page.members[0].user.as_str(), page.members[0].connections),
        (user.as_str(), 1)
    );

    // Cut again: the token of the latest join works as well.
    proxy.cut();
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    assert_eq!(joined(&carol_p), (user.clone(), 1));

    // Gone for good: the leave comes after the grace window.
    let closed = Instant::now();
    carol.close();
    assert_eq!(next(&watching), PresenceEvent::Leave { user, count: 0 });
    assert!(closed.elapsed() >= grace - Duration::from_millis(100));
    drop(proxy);
    server.shutdown();
}

#[test]
fn refused_joins_keep_or_end_the_subscription_as_the_spec_says() {
    let server = broker(&["--max-presence-info", "8B", "--max-presence-members", "1"]);
    let dave = named(&server, "dave");
    let events = dave.events();

    // An info over max_presence_info: the SUBSCRIBE itself is refused.
    let (too_big, too_big_p) = join(&dave, "room.4", "far too long for 8 bytes");
    let refusal = |e: Error| match e {
        Error::Server { code, message } => (code, message),
        other => panic!("expected the broker's refusal, got {other:?}"),
    };
    let (code, message) = refusal(too_big.recv_timeout(WAIT).unwrap_err());
    assert_eq!(code, ErrorCode::PresenceRefused);
    assert!(message.contains("max_presence_info"), "{message}");
    let (code, _) = refusal(too_big_p.recv_timeout(WAIT).unwrap_err());
    assert_eq!(code, ErrorCode::PresenceRefused);
    assert!(!too_big.is_active());

    // A full room: the join is refused, the subscription stays as a plain one.
    let erin = named(&server, "erin");
    let (_erin_sub, erin_p) = join(&erin, "room.5", "ok");
    assert_eq!(joined(&erin_p).1, 1);
    let (plain, refused_p) = join(&dave, "room.5", "ok");
    match next(&refused_p) {
        PresenceEvent::Refused { code, message } => {
            assert_eq!(code, ErrorCode::PresenceRefused);
            assert!(message.contains("max_presence_members"), "{message}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    let (code, sid) = wait_event(&events, |e| match e {
        Event::ServerError {
            code,
            sid,
            fatal: false,
            ..
        } if *sid == Some(plain.sid()) => Some((*code, *sid)),
        _ => None,
    });
    assert_eq!((code, sid), (ErrorCode::PresenceRefused, Some(plain.sid())));
    assert!(plain.is_active());
    erin.publish("room.5", "still delivered").unwrap();
    assert_eq!(
        plain.recv_timeout(WAIT).unwrap().payload_str(),
        Some("still delivered")
    );
    assert_eq!(dave.presence_count("room.5", WAIT).unwrap(), 1);
    server.shutdown();
}

/// A broker with authentication from a config file in a directory of its own.
fn authenticating_broker(config: &str) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "tern-client-presence-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ternd.toml");
    std::fs::write(&file, config).unwrap();
    let server = broker(&["--config", file.to_str().unwrap()]);
    (server, dir)
}

#[test]
fn with_authentication_a_user_is_one_member_and_queries_obey_permissions() {
    let (server, dir) = authenticating_broker(
        r#"
[[users]]
user = "alice"
password = "a"
[users.permissions]
subscribe = ["room.>"]
"#,
    );
    let connect = || {
        Client::builder()
            .user_password("alice", "a")
            .connect(&url(&server))
            .unwrap()
    };
    let (laptop, phone) = (connect(), connect());
    let (_s1, p1) = join(&laptop, "room.6", "laptop");
    assert_eq!(joined(&p1), ("alice".to_string(), 1));
    let (_s2, p2) = join(&phone, "room.6", "phone");
    assert_eq!(joined(&p2), ("alice".to_string(), 1));
    let page = laptop.presence("room.6", 0, 0, WAIT).unwrap();
    assert_eq!(page.count, 1);
    assert_eq!(
        (page.members[0].user.as_str(), page.members[0].connections),
        ("alice", 2)
    );

    match laptop.presence("secret.1", 0, 0, WAIT) {
        Err(Error::Server { code, .. }) => assert_eq!(code, ErrorCode::PermissionViolation),
        other => panic!("expected the permission refusal, got {other:?}"),
    }
    assert!(matches!(
        laptop.presence_count("secret.1", WAIT),
        Err(Error::Server {
            code: ErrorCode::PermissionViolation,
            ..
        })
    ));
    // Joining a room the user may not subscribe to: the subscription is refused.
    let (denied, _) = join(&laptop, "secret.1", "x");
    assert!(matches!(
        denied.recv_timeout(WAIT),
        Err(Error::Server {
            code: ErrorCode::PermissionViolation,
            ..
        })
    ));
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

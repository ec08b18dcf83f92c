//! Presence on the text port, as NATS clients use it with plain requests: join with info,
//! the count and the member list, join and leave events, several connections of one user
//! as one member, leave on close after the grace window, a reconnect within the window
//! that makes no event, an explicit leave, permissions, and the bounds.

mod common;

use std::time::{Duration, Instant};

use async_nats::ConnectOptions;
use futures::StreamExt;
use serde_json::Value;

use common::{Broker, ConfigFile, RawClient, WAIT};

/// A config file in a directory of its own, removed when it is dropped.
fn config_file(text: &str) -> ConfigFile {
    ConfigFile::new("presence", text)
}

/// A broker with these extra flags (no store: presence is not stored).
fn broker(extra: &[&str]) -> Broker {
    let mut args = vec!["--no-store", "--monitor", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Broker::with_args(&args)
}

/// A raw text connection logged in as `user`.
fn login(broker: &Broker, user: &str, pass: &str) -> RawClient {
    RawClient::connect_as(
        broker.addr(),
        &format!("\"user\":\"{user}\",\"pass\":\"{pass}\""),
    )
}

/// A request and its JSON answer.
async fn ask(client: &async_nats::Client, subject: &str, body: &str) -> Value {
    let reply = tokio::time::timeout(
        WAIT,
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("{subject}: {e}: {:?} {:?}", reply.headers, reply.payload))
}

/// The next event on `events`, as JSON.
async fn next_event(events: &mut async_nats::Subscriber) -> Value {
    let m = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("an event");
    serde_json::from_slice(&m.payload).unwrap()
}

#[tokio::test]
async fn join_query_events_and_leave_after_the_grace_window() {
    let broker = broker(&["--presence-grace", "300ms"]);
    let url = broker.url();
    let watcher = async_nats::connect(&url).await.unwrap();
    let mut events = watcher
        .subscribe("$TERN.PRESENCE.EVENTS.room.1")
        .await
        .unwrap();
    // The subscription must be in place before the join: a round trip on its connection.
    ask(&watcher, "$TERN.PRESENCE.room.1", "{\"count\":true}").await;

    let alice = ConnectOptions::new()
        .name("alice")
        .connect(&url)
        .await
        .unwrap();
    let joined = ask(
        &alice,
        "$TERN.PRESENCE.JOIN.room.1",
        "{\"status\":\"typing\"}",
    )
    .await;
    assert_eq!(joined["count"], 1, "{joined}");
    let e = next_event(&mut events).await;
    assert_eq!(e["event"], "join", "{e}");
    assert_eq!(e["count"], 1, "{e}");
    let alice_id = e["user"].as_str().unwrap().to_string();
    assert!(
        alice_id.starts_with("alice#"),
        "anonymous: name and client id: {e}"
    );

    let bob = ConnectOptions::new()
        .name("bob")
        .connect(&url)
        .await
        .unwrap();
    ask(&bob, "$TERN.PRESENCE.JOIN.room.1", "").await;
    assert_eq!(next_event(&mut events).await["count"], 2);

    let page = ask(&watcher, "$TERN.PRESENCE.room.1", "").await;
    assert_eq!(page["count"], 2, "{page}");
    let members = page["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{page}");
    assert_eq!(members[0]["user"], alice_id.as_str(), "join order: {page}");
    assert!(page.to_string().contains("typing"), "{page}");
    let paged = ask(
        &watcher,
        "$TERN.PRESENCE.room.1",
        "{\"offset\":1,\"limit\":1}",
    )
    .await;
    assert_eq!(paged["members"].as_array().unwrap().len(), 1, "{paged}");
    assert_eq!(paged["count"], 2);

    // An explicit leave: at once.
    let left = ask(&bob, "$TERN.PRESENCE.LEAVE.room.1", "").await;
    assert_eq!(left["count"], 1, "{left}");
    let e = next_event(&mut events).await;
    assert_eq!(
        (e["event"].as_str(), e["count"].as_u64()),
        (Some("leave"), Some(1))
    );

    // A close: after the grace window.
    let closed = Instant::now();
    drop(alice);
    let e = next_event(&mut events).await;
    assert_eq!(
        (e["event"].as_str(), e["count"].as_u64()),
        (Some("leave"), Some(0)),
        "{e}"
    );
    assert!(
        closed.elapsed() >= Duration::from_millis(250),
        "the grace window was kept"
    );
    let count = ask(&watcher, "$TERN.PRESENCE.room.1", "{\"count\":true}").await;
    assert_eq!(count["count"], 0);
}

#[test]
fn a_user_with_several_connections_is_one_member_and_reconnects_within_grace_are_silent() {
    let file = config_file(
        "[[users]]\nuser = \"ann\"\npassword = \"a\"\n\n[[users]]\nuser = \"obs\"\npassword = \"o\"\n",
    );
    let broker = broker(&["--config", file.to_str().unwrap(), "--presence-grace", "2s"]);
    let login = |user: &str, pass: &str| login(&broker, user, pass);
    let mut obs = login("obs", "o");
    obs.send(b"SUB $TERN.PRESENCE.EVENTS.doc 1\r\nSUB _INBOX.q 2\r\n");
    obs.ping_pong();
    let mut tab1 = login("ann", "a");
    let mut tab2 = login("ann", "a");
    tab1.send(b"PUB $TERN.PRESENCE.JOIN.doc 0\r\n\r\n");
    tab1.ping_pong();
    tab2.send(b"PUB $TERN.PRESENCE.JOIN.doc 0\r\n\r\n");
    tab2.ping_pong();
    let e: Value = serde_json::from_slice(&obs.read_msg(WAIT).payload).unwrap();
    assert_eq!(
        (e["event"].as_str(), e["user"].as_str()),
        (Some("join"), Some("ann"))
    );
    obs.send(b"PUB $TERN.PRESENCE.doc _INBOX.q 0\r\n\r\n");
    let page: Value = serde_json::from_slice(&obs.read_msg(WAIT).payload).unwrap();
    assert_eq!(page["count"], 1, "one member: {page}");
    assert_eq!(
        page["members"][0]["connections"].as_array().unwrap().len(),
        2,
        "with two connections: {page}"
    );
    // One tab closes, the other drops and comes back within the grace window: no event.
    drop(tab1);
    drop(tab2);
    std::thread::sleep(Duration::from_millis(300));
    let mut back = login("ann", "a");
    back.send(b"PUB $TERN.PRESENCE.JOIN.doc 0\r\n\r\n");
    back.ping_pong();
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        obs.flush(),
        b"",
        "no leave and no join for a reconnect in time"
    );
    // Gone for good: one leave, after the window.
    drop(back);
    let e: Value = serde_json::from_slice(&obs.read_msg(Duration::from_secs(5)).payload).unwrap();
    assert_eq!(
        (e["event"].as_str(), e["count"].as_u64()),
        (Some("leave"), Some(0)),
        "{e}"
    );
}

#[test]
fn presence_obeys_permissions_and_bounds() {
    let file = config_file(
        r#"
[[users]]
user = "guest"
password = "g"
[users.permissions]
subscribe = ["lobby", "_INBOX.>"]

[[users]]
user = "g2"
password = "g"
[users.permissions]
subscribe = ["lobby", "_INBOX.>"]
"#,
    );
    let broker = broker(&[
        "--config",
        file.to_str().unwrap(),
        "--max-presence-info",
        "16B",
        "--max-presence-members",
        "1",
    ]);
    let mut guest =
        RawClient::connect_as(broker.addr(), r#""user":"guest","pass":"g","headers":true"#);
    // Not a room it may subscribe to: not its presence either.
    guest.send(b"PUB $TERN.PRESENCE.JOIN.vip _INBOX.1 0\r\n\r\n");
    guest.expect(b"-ERR 'Permissions Violation for Subscription to \"vip\"'\r\n");
    guest.send(b"SUB $TERN.PRESENCE.EVENTS.vip 1\r\n");
    guest.expect(
        b"-ERR 'Permissions Violation for Subscription to \"$TERN.PRESENCE.EVENTS.vip\"'\r\n",
    );
    // Only the broker publishes events.
    guest.send(b"PUB $TERN.PRESENCE.EVENTS.lobby 1\r\nx\r\n");
    guest
        .expect(b"-ERR 'Permissions Violation for Publish to \"$TERN.PRESENCE.EVENTS.lobby\"'\r\n");
    // Its own room, within the bounds.
    guest.send(b"SUB _INBOX.1 9\r\nSUB $TERN.PRESENCE.EVENTS.lobby 10\r\n");
    guest
        .send(b"PUB $TERN.PRESENCE.JOIN.lobby _INBOX.1 32\r\n01234567890123456789012345678901\r\n");
    let m = guest.read_msg(WAIT);
    let head = String::from_utf8_lossy(m.headers.as_deref().unwrap_or_default()).into_owned();
    assert!(head.starts_with("NATS/1.0 409"), "{head}");
    assert!(head.contains("max_presence_info"), "{head}");
    guest.send(b"PUB $TERN.PRESENCE.JOIN.lobby _INBOX.1 2\r\nhi\r\n");
    let mut got = [guest.read_msg(WAIT), guest.read_msg(WAIT)];
    got.sort_by(|a, b| a.subject.cmp(&b.subject));
    assert_eq!(got[0].subject, "$TERN.PRESENCE.EVENTS.lobby");
    assert_eq!(got[1].subject, "_INBOX.1");
    guest.send(b"UNSUB 10\r\n");
    guest.ping_pong();
    // max_presence_members is 1: the same user on another connection is the same member
    // and fits; another user does not.
    let mut other = RawClient::connect(broker.addr());
    other.send(
        b"CONNECT {\"user\":\"guest\",\"pass\":\"g\",\"headers\":true}\r\nSUB _INBOX.2 1\r\n",
    );
    other.send(b"PUB $TERN.PRESENCE.JOIN.lobby _INBOX.2 0\r\n\r\n");
    let ok: Value = serde_json::from_slice(&other.read_msg(WAIT).payload).unwrap();
    assert_eq!(ok["count"], 1, "{ok}");
    let mut g2 = RawClient::connect(broker.addr());
    g2.send(b"CONNECT {\"user\":\"g2\",\"pass\":\"g\",\"headers\":true}\r\nSUB _INBOX.3 1\r\n");
    g2.send(b"PUB $TERN.PRESENCE.JOIN.lobby _INBOX.3 0\r\n\r\n");
    let full = g2.read_msg(WAIT);
    let head = String::from_utf8_lossy(full.headers.as_deref().unwrap_or_default()).into_owned();
    assert!(
        head.starts_with("NATS/1.0 409") && head.contains("max_presence_members"),
        "{head}"
    );
    // A wildcard is no subject to publish to; a room named like a verb, and a bad
    // query, get 400 on the inbox.
    guest.send(b"PUB $TERN.PRESENCE.JOIN.lobby.* _INBOX.1 0\r\n\r\n");
    guest.expect(b"-ERR 'Invalid Publish Subject'\r\n");
    guest.send(b"PUB $TERN.PRESENCE.JOIN.EVENTS.x _INBOX.1 0\r\n\r\n");
    let bad = guest.read_msg(WAIT);
    let head = String::from_utf8_lossy(bad.headers.as_deref().unwrap_or_default()).into_owned();
    assert!(head.starts_with("NATS/1.0 400"), "{head}");
    guest.send(b"PUB $TERN.PRESENCE.lobby _INBOX.1 9\r\n{\"oops\":1\r\n");
    let bad = guest.read_msg(WAIT);
    let head = String::from_utf8_lossy(bad.headers.as_deref().unwrap_or_default()).into_owned();
    assert!(head.starts_with("NATS/1.0 400"), "{head}");
    let varz = broker.varz_until(|v| v["presence_rooms"] == 1);
    assert_eq!(varz["presence_refused"]["info_too_large"], 1, "{varz}");
    assert_eq!(varz["presence_refused"]["room_full"], 1, "{varz}");
    let rooms = broker.monitor_json("/presencez?limit=5");
    assert_eq!(
        (rooms["rooms"].as_u64(), rooms["members"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(rooms["largest"][0]["subject"], "lobby", "{rooms}");
    assert_eq!(rooms["largest"][0]["members"], 1, "{rooms}");
    assert_eq!(varz["presence_rooms"], 1, "{varz}");
}

#[test]
fn a_wide_subscription_sees_only_the_rooms_its_user_may_see() {
    let file = config_file(
        r#"
[[users]]
user = "guest"
password = "g"
[users.permissions]
subscribe = ["lobby", "$TERN.>"]

[[users]]
user = "admin"
password = "a"
"#,
    );
    let broker = broker(&["--config", file.to_str().unwrap()]);
    let login = |user: &str, pass: &str| login(&broker, user, pass);
    let mut guest = login("guest", "g");
    guest.send(b"SUB $TERN.> 1\r\n");
    guest.ping_pong();
    let mut admin = login("admin", "a");
    admin.send(b"PUB $TERN.PRESENCE.JOIN.vip 0\r\n\r\nPUB $TERN.PRESENCE.JOIN.lobby 0\r\n\r\n");
    admin.ping_pong();
    let m = guest.read_msg(WAIT);
    assert_eq!(m.subject, "$TERN.PRESENCE.EVENTS.lobby");
    let varz = broker.varz_until(|v| v["deliveries_denied"] == 1);
    assert_eq!(
        varz["deliveries_denied"], 1,
        "the vip room's event was withheld: {varz}"
    );
    assert_eq!(guest.flush(), b"", "and not delivered");
}

#[test]
fn a_text_watcher_that_falls_behind_gets_a_fresh_snapshot_not_a_drop_notice() {
    // Subscription queues of one message, a small write buffer, a watcher that does not
    // read while its socket fills with a feed it also takes (500 subscriptions to it, a
    // queue of one each: 8 MiB held for a 16 KiB message, far more than a socket takes).
    let broker = broker(&["--sub-queue-messages", "1", "--write-buffer", "1KiB"]);
    let mut watcher = RawClient::connect_small_rcvbuf(broker.addr(), 4096);
    watcher.read_info();
    let mut subs = String::from("CONNECT {}\r\nSUB $TERN.PRESENCE.EVENTS.crowd 1\r\n");
    for sid in 2..502 {
        subs.push_str(&format!("SUB feed {sid}\r\n"));
    }
    watcher.send(subs.as_bytes());
    watcher.ping_pong();
    let mut feed = RawClient::connect(broker.addr());
    let payload = "f".repeat(16 * 1024);
    feed.send(format!("PUB feed {}\r\n{payload}\r\n", payload.len()).as_bytes());
    feed.ping_pong();
    let members: Vec<RawClient> = (0..60)
        .map(|i| {
            let mut m = RawClient::connect_as(broker.addr(), &format!("\"name\":\"m{i}\""));
            m.send(b"PUB $TERN.PRESENCE.JOIN.crowd 0\r\n\r\n");
            m.ping_pong();
            m
        })
        .collect();

    // It reads: some joins, then a snapshot with every member; the feed's drops are
    // announced, the events' never. What it knows ends up as the room is.
    let mut view = std::collections::BTreeSet::new();
    let mut snapshots = 0;
    let mut count = 0;
    let deadline = Instant::now() + WAIT * 2;
    while let Ok(m) = watcher.try_read_msg(Duration::from_secs(2)) {
        assert!(Instant::now() < deadline, "presence kept coming");
        match (m.sid.as_str(), m.subject.as_str()) {
            ("1", "$TERN.PRESENCE.EVENTS.crowd") => {}
            ("1", _) => panic!("unexpected {m:?}"),
            _ => continue,
        }
        let e: Value = serde_json::from_slice(&m.payload).unwrap();
        count = e["count"].as_u64().unwrap();
        match e["event"].as_str().unwrap() {
            "snapshot" => {
                if e["offset"] == 0 {
                    view.clear();
                    snapshots += 1;
                }
                for member in e["members"].as_array().unwrap() {
                    view.insert(member["user"].as_str().unwrap().to_string());
                }
            }
            "join" => {
                view.insert(e["user"].as_str().unwrap().to_string());
            }
            "leave" => {
                view.remove(e["user"].as_str().unwrap());
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(snapshots >= 1, "a fresh snapshot after the drops");
    assert_eq!((count, view.len()), (60, 60));
    drop(members);
}

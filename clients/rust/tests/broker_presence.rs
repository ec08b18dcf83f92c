//! Presence over the binary port, with the same subjects as the text port
//! (`docs/presence.md`): a tern-client joins a room with a request, another watches the
//! room's events and asks who is in it, and a closed connection leaves after the grace
//! window; a refused join comes back as a status on the inbox, an events subject cannot be
//! published to.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::WAIT;
use serde_json::Value;
use tern_broker::{Args, Config, Server};
use tern_client::{Client, Error, ErrorCode, Message};

fn broker(extra: &[&str]) -> Server {
    let mut args = vec![
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--binary-listen",
        "127.0.0.1:0",
        "--no-monitor",
        "--workers",
        "2",
        "--no-pin",
        "--no-store",
    ];
    args.extend_from_slice(extra);
    Server::start(Config::from_args(Args::parse_from(args)).unwrap()).unwrap()
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

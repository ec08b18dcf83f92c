//! Acknowledged publishes with a message id against the real broker, across a lost
//! connection: a proxy the test controls lets the publishes through to the broker and
//! holds back its acks, then cuts the connection. Each identified publish is sent again
//! on the next connection and its caller gets an ack (`duplicate`, the first copy's
//! place), nothing is delivered twice, and a publish without a message id fails with
//! `Disconnected` (its outcome is unknown).

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{temp_dir, wait_event, WAIT};
use tern_broker::Server;
use tern_client::{Client, Error, Event, PublishOptions, ReconnectPolicy};

/// A broker with 2 shards that stores in `dir` (the broker deduplicates by message id
/// only when it stores).
fn storing_broker(dir: &std::path::Path) -> Server {
    let dir = dir.display().to_string();
    common::broker::start("127.0.0.1:0", &["--data-dir", &dir, "--log-size", "4MiB"])
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_millis(10), Duration::from_millis(100))
}

#[test]
fn acked_publishes_with_a_message_id_are_sent_again_after_a_lost_connection() {
    let dir = temp_dir("resend");
    let server = storing_broker(&dir);
    let upstream = server.binary_addr().unwrap();
    let proxy = Proxy::start(upstream);
    let watcher = Client::connect(&format!("tern://{upstream}")).unwrap();
    let sub = watcher.subscribe("once.>").unwrap();
    watcher.flush(WAIT).unwrap();
    let publisher = Client::builder()
        .reconnect(fast_reconnect())
        .connect(&proxy.url())
        .unwrap();
    let events = publisher.events();

    proxy.hold_replies(true); // the broker's acks will not reach the publisher
    let identified: Vec<_> = (0..3)
        .map(|i| {
            let options = PublishOptions::new().message_id(format!("order-{i}"));
            publisher
                .publish_with_ack(&format!("once.{i}"), i.to_string(), &options)
                .unwrap()
        })
        .collect();
    let anonymous = publisher
        .publish_with_ack("once.anon", "no id", &PublishOptions::new())
        .unwrap();
    // The broker got all four: they are delivered, each once.
    let first: Vec<_> = (0..4).map(|_| sub.recv_timeout(WAIT).unwrap()).collect();
    let subjects: Vec<_> = first.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["once.0", "once.1", "once.2", "once.anon"]);

    proxy.cut(); // the connection drops before any ack got through
    proxy.hold_replies(false);
    // Without a message id the outcome is unknown, and the caller is told so.
    let lost = anonymous.wait_timeout(WAIT);
    assert!(matches!(lost, Err(Error::Disconnected)), "{lost:?}");
    // With one, the publish is sent again on the next connection, and the broker
    // acknowledges the repeat with the first copy's place.
    for (pending, m) in identified.into_iter().zip(&first) {
        let ack = pending.wait_timeout(WAIT).unwrap();
        assert!(ack.duplicate, "{ack:?}");
        assert_eq!((ack.shard, ack.sequence), (m.shard, m.sequence));
    }
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    // Nothing was delivered twice.
    publisher.flush(WAIT).unwrap();
    watcher.flush(WAIT).unwrap();
    assert!(matches!(
        sub.recv_timeout(Duration::from_millis(500)),
        Err(Error::Timeout)
    ));
    assert_eq!(publisher.buffered_bytes(), 0);
    // And the publisher goes on as before.
    let ack = publisher
        .publish_acked_with("once.3", "3", &PublishOptions::new().message_id("order-3"))
        .unwrap();
    assert!(!ack.duplicate);
    assert_eq!(sub.recv_timeout(WAIT).unwrap().subject, "once.3");
    publisher.close();
    watcher.close();
    server.shutdown();
}

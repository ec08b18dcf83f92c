//! Tern as an edge of a real NATS cluster (`docs/scale-out.md`): a 3-node `nats-server`
//! cluster started here, `ternd` edges bridged to it, and plain NATS clients (async-nats)
//! on both the edges' text ports and the cluster.
//!
//! Readiness across the cluster is never a sleep: interest reaches every node in its own
//! time, so a test publishes probes until one arrives ([`until_flows`]); what follows is
//! then checked exactly (every message, once, in order where the contract says so).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Subscriber};
use futures::StreamExt;

use common::nats::{next, sync, MSG_TIMEOUT};
use common::nats_cluster::{Cluster, Gate};
use common::Broker;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn within<F: Future>(f: F) -> F::Output {
    common::nats::within(TEST_TIMEOUT, f).await
}

async fn connect(url: String) -> Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("async-nats cannot connect")
}

/// An edge: ternd with one bridge to `servers`.
fn edge(name: &str, servers: &[String], export: &str, import: &str, extra: &[&str]) -> Broker {
    let servers = servers.join(",");
    let mut args = vec![
        "--monitor",
        "127.0.0.1:0",
        "--bridge-upstream",
        &servers,
        "--bridge-name",
        name,
    ];
    if !export.is_empty() {
        args.extend(["--bridge-export", export]);
    }
    if !import.is_empty() {
        args.extend(["--bridge-import", import]);
    }
    args.extend(extra);
    Broker::with_args(&args)
}

/// An edge configured by `toml` (its `[[bridge]]` tables), waited for until its first
/// bridge is connected.
fn edge_from(tag: &str, toml: &str, extra: &[&str]) -> Broker {
    let dir = common::temp_dir(tag);
    let config = dir.join("ternd.toml");
    std::fs::write(&config, toml).unwrap();
    let mut args = vec![
        "--monitor",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(extra);
    let mut edge = Broker::with_args(&args);
    edge.keep(dir);
    bridge_until(&edge, "connected", |v| v["state"] == "connected");
    edge
}

fn bridgez(b: &Broker) -> serde_json::Value {
    b.monitor_json("/bridgez")["bridges"][0].clone()
}

/// Waits until the edge's bridge says `ok`.
fn bridge_until(
    b: &Broker,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + MSG_TIMEOUT;
    loop {
        let v = bridgez(b);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "bridge never got {what}: {v:#}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Publishes probes on `subject` from `from` until `sub` gets one (interest has reached
/// every node on the way), then drains the probes still on their way.
async fn until_flows(from: &Client, subject: &str, subs: &mut [&mut Subscriber]) {
    for sub in subs.iter_mut() {
        let deadline = Instant::now() + MSG_TIMEOUT;
        loop {
            from.publish(subject.to_string(), "probe".into())
                .await
                .unwrap();
            from.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Ok(Some(m)) if &m.payload[..] == b"probe" => break,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("subscription ended"),
            }
            assert!(Instant::now() < deadline, "{subject} never flowed");
        }
    }
    // Probes after the first may still arrive: a marker, once through, says none is left.
    let marker = format!("probe-end-{}", from.new_inbox());
    from.publish(subject.to_string(), marker.clone().into())
        .await
        .unwrap();
    from.flush().await.unwrap();
    for sub in subs.iter_mut() {
        loop {
            let m = next(sub).await;
            if m.payload == marker.as_bytes() {
                break;
            }
            assert_eq!(&m.payload[..], b"probe");
        }
    }
}

/// Every payload `sub` gets until `n` have arrived, then checks nothing else follows
/// `quiet` later.
async fn take(sub: &mut Subscriber, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = next(sub).await;
        out.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    out
}

async fn nothing_more(sub: &mut Subscriber, quiet: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        panic!(
            "an extra delivery: {} {:?}",
            m.subject,
            String::from_utf8_lossy(&m.payload)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_and_the_cluster_exchange_every_message_once() {
    within(async {
        let cluster = Cluster::start(3);
        let a = edge("a", &[cluster.url(0)], "chat.>", "chat.>", &[]);
        let b = edge("b", &[cluster.url(1)], "chat.>", "chat.>", &[]);
        let (ca, cb) = (connect(a.url()).await, connect(b.url()).await);
        let plain = connect(cluster.url(2)).await;

        let mut on_a = ca.subscribe("chat.>").await.unwrap();
        let mut on_b = cb.subscribe("chat.*.room").await.unwrap();
        let mut on_cluster = plain.subscribe("chat.>").await.unwrap();
        sync(&ca).await;
        sync(&cb).await;
        sync(&plain).await;
        until_flows(
            &ca,
            "chat.probe.room",
            &mut [&mut on_b, &mut on_cluster, &mut on_a],
        )
        .await;
        until_flows(
            &plain,
            "chat.probe.room",
            &mut [&mut on_a, &mut on_b, &mut on_cluster],
        )
        .await;

        // Edge a to edge b and to the cluster: each once, in order, headers kept; a's own
        // subscriber gets its messages once (locally, never again through upstream).
        let sent: Vec<String> = (0..200).map(|i| format!("from-a-{i}")).collect();
        for (i, p) in sent.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert("X-Seq", i.to_string().as_str());
            ca.publish_with_headers("chat.lobby.room", h, p.clone().into())
                .await
                .unwrap();
        }
        ca.flush().await.unwrap();
        assert_eq!(take(&mut on_a, 200).await, sent);
        let mut got_b = Vec::new();
        for i in 0..200 {
            let m = next(&mut on_b).await;
            let h = m.headers.expect("headers kept");
            assert_eq!(
                h.get("X-Seq").map(|v| v.as_str()),
                Some(i.to_string().as_str())
            );
            assert!(h.get("Tern-Origin").is_some(), "the origin travels along");
            got_b.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
        assert_eq!(got_b, sent);
        assert_eq!(take(&mut on_cluster, 200).await, sent);

        // The cluster to both edges; a subject only a's wildcard matches reaches only a.
        let sent: Vec<String> = (0..100).map(|i| format!("from-nats-{i}")).collect();
        for p in &sent {
            plain
                .publish("chat.x.room", p.clone().into())
                .await
                .unwrap();
        }
        plain
            .publish("chat.only.a.deep", "deep".into())
            .await
            .unwrap();
        plain.flush().await.unwrap();
        let mut want_a = sent.clone();
        want_a.push("deep".into());
        assert_eq!(take(&mut on_a, 101).await, want_a);
        assert_eq!(take(&mut on_b, 100).await, sent);
        // (The plain client's own subscription has its own messages.)
        assert_eq!(take(&mut on_cluster, 101).await, want_a);

        // Edge b to a: nothing loops back to b, nothing reaches anyone twice.
        cb.publish("chat.b.room", "from-b".into()).await.unwrap();
        cb.flush().await.unwrap();
        assert_eq!(take(&mut on_b, 1).await, ["from-b"]);
        assert_eq!(take(&mut on_a, 1).await, ["from-b"]);
        assert_eq!(take(&mut on_cluster, 1).await, ["from-b"]);
        let quiet = Duration::from_millis(500);
        nothing_more(&mut on_a, quiet).await;
        nothing_more(&mut on_b, quiet).await;
        nothing_more(&mut on_cluster, quiet).await;

        let za = bridgez(&a);
        assert_eq!(za["state"], "connected");
        assert!(za["exported"].as_u64().unwrap() >= 200, "{za:#}");
        // Imports are not exported again: they do not even reach the export (the broker
        // does not send the bridge's own connection what the bridge imported).
        assert!(za["imported"].as_u64().unwrap() >= 101, "{za:#}");
        assert_eq!(za["not_exported"].as_u64(), Some(0), "{za:#}");
        // What a exported was confirmed, and its position is reported.
        let za = bridge_until(&a, "everything confirmed", |v| v["unconfirmed"] == 0);
        assert!(za["exports"][0]["confirmed"].as_array().is_some(), "{za:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_follows_local_subscriptions() {
    within(async {
        let cluster = Cluster::start(3);
        let a = edge(
            "a",
            &[cluster.url(0)],
            "",
            "prices.>",
            &["--bridge-import-static", "alerts.>"],
        );
        let before = bridge_until(&a, "connected", |v| v["state"] == "connected");
        // Only the reply subscription and the static import.
        let base = before["upstream_subscriptions"].as_u64().unwrap();
        assert_eq!(
            base, 2,
            "the reply subscription and the static import: {before:#}"
        );

        let ca = connect(a.url()).await;
        let mut s1 = ca.subscribe("prices.eu.*").await.unwrap();
        let s2 = ca.subscribe("prices.eu.*").await.unwrap();
        let _outside = ca.subscribe("news.>").await.unwrap();
        sync(&ca).await;
        let v = bridge_until(&a, "one more upstream subscription", |v| {
            v["upstream_subscriptions"] == base + 1
        });
        assert_eq!(v["local_interest"], 2, "{v:#}");

        let plain = connect(cluster.url(2)).await;
        until_flows(&plain, "prices.eu.x", &mut [&mut s1]).await;
        plain
            .publish("prices.us.x", "not wanted".into())
            .await
            .unwrap();
        plain.publish("prices.eu.y", "wanted".into()).await.unwrap();
        plain.flush().await.unwrap();
        assert_eq!(take(&mut s1, 1).await, ["wanted"]);

        drop(s2);
        drop(s1);
        sync(&ca).await;
        bridge_until(&a, "the upstream subscription gone", |v| {
            v["upstream_subscriptions"] == base && v["local_interest"] == 0
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_crosses_the_bridge_both_ways() {
    within(async {
        let cluster = Cluster::start(3);
        let a = edge("a", &[cluster.url(0)], "svc.>", "svc.>", &[]);
        let b = edge("b", &[cluster.url(1)], "svc.>", "svc.>", &[]);
        let (ca, cb) = (connect(a.url()).await, connect(b.url()).await);
        let plain = connect(cluster.url(2)).await;

        // A responder on edge b.
        let mut responder = cb.subscribe("svc.echo").await.unwrap();
        sync(&cb).await;
        let rb = cb.clone();
        let serving = tokio::spawn(async move {
            while let Some(m) = responder.next().await {
                if let Some(reply) = m.reply {
                    let mut answer = b"echo:".to_vec();
                    answer.extend_from_slice(&m.payload);
                    rb.publish(reply, answer.into()).await.unwrap();
                }
            }
        });
        bridge_until(&b, "the responder's interest upstream", |v| {
            v["upstream_subscriptions"].as_u64() >= Some(2)
        });
        // From the cluster (a plain NATS requester) to b's responder.
        let deadline = Instant::now() + MSG_TIMEOUT;
        let answer = loop {
            match plain.request("svc.echo", "hi".into()).await {
                Ok(m) => break m,
                Err(e) => assert!(Instant::now() < deadline, "no answer: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(&answer.payload[..], b"echo:hi");
        // From edge a to edge b.
        for i in 0..20 {
            let m = ca.request("svc.echo", format!("{i}").into()).await.unwrap();
            assert_eq!(m.payload, format!("echo:{i}").as_bytes());
        }
        let zb = bridgez(&b);
        assert!(zb["replies_out"].as_u64().unwrap() >= 21, "{zb:#}");
        // Nobody anywhere answers svc.none: the requester on a hears so from upstream,
        // at once, not after a timeout.
        let started = Instant::now();
        let err = ca
            .request("svc.none", "?".into())
            .await
            .expect_err("nobody answers");
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        serving.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_span_edges_and_the_cluster() {
    within(async {
        let cluster = Cluster::start(3);
        let a = edge("a", &[cluster.url(0)], "work.>", "work.>", &[]);
        let b = edge("b", &[cluster.url(1)], "work.>", "work.>", &[]);
        let (ca, cb) = (connect(a.url()).await, connect(b.url()).await);
        let plain = connect(cluster.url(2)).await;
        let publisher = connect(cluster.url(2)).await;

        let mut members = [
            ca.queue_subscribe("work.*", "workers".into())
                .await
                .unwrap(),
            ca.queue_subscribe("work.*", "workers".into())
                .await
                .unwrap(),
            cb.queue_subscribe("work.*", "workers".into())
                .await
                .unwrap(),
            plain
                .queue_subscribe("work.*", "workers".into())
                .await
                .unwrap(),
        ];
        // And a plain subscriber on edge a, outside the group: it gets everything.
        let mut watcher = ca.subscribe("work.*").await.unwrap();
        sync(&ca).await;
        sync(&cb).await;
        sync(&plain).await;
        for e in [&a, &b] {
            bridge_until(e, "the group joined upstream", |v| {
                v["upstream_subscriptions"].as_u64() >= Some(2)
            });
        }
        until_flows(&publisher, "work.probe", &mut [&mut watcher]).await;
        // Probes went to the group too: drain them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for m in members.iter_mut() {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), m.next()).await
            {
            }
        }

        // Published in the cluster, then on edge a (whose own members wait their turn like
        // everyone else's: upstream picks), then on edge b.
        for (round, from) in [&publisher, &ca, &cb].into_iter().enumerate() {
            let n = 300;
            for i in 0..n {
                from.publish("work.job", format!("job-{round}-{i}").into())
                    .await
                    .unwrap();
            }
            from.flush().await.unwrap();
            assert_eq!(take(&mut watcher, n).await.len(), n, "round {round}");
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut per_member = Vec::new();
            let deadline = Instant::now() + MSG_TIMEOUT;
            while seen.len() < n && Instant::now() < deadline {
                for (k, m) in members.iter_mut().enumerate() {
                    while let Ok(Some(msg)) =
                        tokio::time::timeout(Duration::from_millis(20), m.next()).await
                    {
                        let p = String::from_utf8(msg.payload.to_vec()).unwrap();
                        *seen.entry(p).or_default() += 1;
                        per_member.push(k);
                    }
                }
            }
            // Anything late would be a second copy.
            for m in members.iter_mut() {
                while let Ok(Some(msg)) =
                    tokio::time::timeout(Duration::from_millis(200), m.next()).await
                {
                    let p = String::from_utf8(msg.payload.to_vec()).unwrap();
                    *seen.entry(p).or_default() += 1;
                }
            }
            assert_eq!(seen.len(), n, "round {round}: every job handled");
            let twice: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).collect();
            assert!(
                twice.is_empty(),
                "round {round}: handled more than once: {twice:?}"
            );
            let used: BTreeSet<usize> = per_member.into_iter().collect();
            assert!(
                used.len() >= 3,
                "round {round}: spread over the edges and the cluster: {used:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_survive_killing_the_upstream_node() {
    within(async {
        let mut cluster = Cluster::start(3);
        let a = edge("a", &[cluster.url(0), cluster.url(1)], "orders.>", "", &[]);
        let ca = connect(a.url()).await;
        let plain = connect(cluster.url(2)).await;
        let mut on_cluster = plain.subscribe("orders.>").await.unwrap();
        sync(&plain).await;
        bridge_until(&a, "connected to node 0", |v| {
            v["server"]
                .as_str()
                .is_some_and(|s| s.ends_with(&cluster.addr(0).port().to_string()))
        });
        until_flows(&ca, "orders.new", &mut [&mut on_cluster]).await;

        let n = 3000;
        let publishing = {
            let ca = ca.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    ca.publish("orders.new", format!("{i}").into())
                        .await
                        .unwrap();
                    if i % 100 == 99 {
                        ca.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                ca.flush().await.unwrap();
            })
        };
        let mut got = BTreeSet::new();
        let mut killed = false;
        while got.len() < n {
            let m = next(&mut on_cluster).await;
            got.insert(
                String::from_utf8(m.payload.to_vec())
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
            if !killed && got.len() >= n / 3 {
                // The node the edge exports through goes away mid-stream.
                cluster.stop(0, libc::SIGTERM);
                killed = true;
            }
        }
        publishing.await.unwrap();
        assert_eq!(got.len(), n, "nothing the edge took was lost");
        let v = bridge_until(&a, "a reconnect to node 1", |v| {
            v["connects"].as_u64() >= Some(2) && v["unconfirmed"] == 0
        });
        assert!(v["disconnects"].as_u64() >= Some(1), "{v:#}");
        assert_eq!(v["export_gaps"], 0, "{v:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_resume_after_the_whole_cluster_restarts() {
    within(async {
        // (Unadvertised: the edge must not learn the nodes behind the gate.)
        let mut cluster = Cluster::start_unadvertised(3);
        // The edge reaches the cluster through a gate the test opens when the cluster is
        // whole again (so that its resumed exports meet routes and interest in place).
        let gate = Gate::new(cluster.addr(0));
        let a = edge("a", &[gate.url()], "orders.>", "", &[]);
        let ca = connect(a.url()).await;
        let plain = connect(cluster.url(2)).await;
        let mut on_cluster = plain.subscribe("orders.>").await.unwrap();
        sync(&plain).await;
        until_flows(&ca, "orders.new", &mut [&mut on_cluster]).await;
        for i in 0..100 {
            ca.publish("orders.new", format!("{i}").into())
                .await
                .unwrap();
        }
        ca.flush().await.unwrap();
        let first: BTreeSet<String> = take(&mut on_cluster, 100).await.into_iter().collect();
        assert_eq!(first.len(), 100);

        gate.close();
        for i in 0..3 {
            cluster.stop(i, libc::SIGTERM);
        }
        // While the cluster is down, the edge takes (and stores) more.
        for i in 100..300 {
            ca.publish("orders.new", format!("{i}").into())
                .await
                .unwrap();
        }
        ca.flush().await.unwrap();
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_routes();
        // The plain client is back and subscribed (its library resubscribes).
        let probe = connect(cluster.url(1)).await;
        until_flows(&probe, "orders.probe", &mut [&mut on_cluster]).await;
        gate.open();
        let mut got = BTreeSet::new();
        while got.len() < 200 {
            let m = next(&mut on_cluster).await;
            let p = String::from_utf8(m.payload.to_vec()).unwrap();
            let i: u32 = p.parse().unwrap();
            if i >= 100 {
                got.insert(i);
            }
        }
        let v = bridge_until(&a, "everything confirmed", |v| {
            v["unconfirmed"] == 0 && v["connects"].as_u64() >= Some(2)
        });
        assert_eq!(v["export_gaps"], 0, "{v:#}");
        // Message ids are stable: a resent message carries the id it had the first time.
        let _ = v;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_edge_takes_before_it_first_reaches_upstream_is_exported() {
    within(async {
        let cluster = Cluster::start_unadvertised(1);
        let gate = Gate::new(cluster.addr(0));
        gate.close();
        let a = edge("a", &[gate.url()], "early.>", "", &[]);
        let ca = connect(a.url()).await;
        let plain = connect(cluster.url(0)).await;
        let mut on_cluster = plain.subscribe("early.>").await.unwrap();
        sync(&plain).await;
        // Published before the bridge was ever connected: stored, exported once it is.
        let sent: Vec<String> = (0..50).map(|i| format!("early-{i}")).collect();
        for p in &sent {
            ca.publish("early.x", p.clone().into()).await.unwrap();
        }
        sync(&ca).await;
        assert_eq!(bridgez(&a)["state"], "connecting");
        gate.open();
        assert_eq!(take(&mut on_cluster, 50).await, sent);
        let v = bridge_until(&a, "everything confirmed", |v| {
            v["confirmed"] == 50 && v["unconfirmed"] == 0
        });
        assert_eq!(v["export_gaps"], 0, "{v:#}");
    })
    .await;
}

/// A one-node cluster, a gate in front of it (to cut the edge off), and an edge through
/// the gate with one worker and a 1 MiB log (64 KiB messages at most): a few megabytes
/// wrap its log.
fn small_edge_behind_a_gate(export: &str, import: &str) -> (Cluster, Gate, Broker) {
    let cluster = Cluster::start(1);
    let gate = Gate::new(cluster.addr(0));
    let a = edge(
        "a",
        &[gate.url()],
        export,
        import,
        &[
            "--log-size",
            "1MiB",
            "--max-payload",
            "64KiB",
            "--workers",
            "1",
        ],
    );
    (cluster, gate, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_the_log_no_longer_holds_is_reported_as_a_gap() {
    within(async {
        let (_cluster, gate, a) = small_edge_behind_a_gate("big.>", "");
        bridge_until(&a, "connected", |v| v["state"] == "connected");
        let ca = connect(a.url()).await;
        // Settle the export's first position.
        ca.publish("big.x", "first".into()).await.unwrap();
        ca.flush().await.unwrap();
        bridge_until(&a, "the first export confirmed", |v| v["confirmed"] == 1);
        gate.close();
        bridge_until(&a, "disconnected", |v| v["state"] == "connecting");
        // Far more than the 1 MiB log holds, while the cluster cannot be reached.
        let payload = vec![b'x'; 8 << 10];
        for _ in 0..400 {
            ca.publish("big.x", payload.clone().into()).await.unwrap();
        }
        ca.flush().await.unwrap();
        gate.open();
        let v = bridge_until(&a, "a gap reported", |v| {
            v["export_gaps"].as_u64() > Some(0)
        });
        let err = v["last_error"]["message"].as_str().unwrap_or_default();
        assert!(err.contains("no longer holds"), "{v:#}");
    })
    .await;
}

/// An edge that imports far more than it exports: the broker does not send the bridge its
/// own imports, but sends one whenever 64 KiB (or 1,024 messages) of them were passed over,
/// so the export's confirmed position keeps up with the log's end (a reconnect resumes
/// from there, not from before everything imported since the last local message, which
/// the log may no longer hold: a false gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_position_of_an_edge_that_mostly_imports_keeps_up_with_its_log() {
    within(async {
        let (cluster, gate, a) = small_edge_behind_a_gate("feed.>", "feed.>");
        bridge_until(&a, "connected", |v| v["state"] == "connected");
        let ca = connect(a.url()).await;
        let plain = connect(cluster.url(0)).await;
        let mut on_a = ca.subscribe("feed.>").await.unwrap();
        sync(&ca).await;
        until_flows(&plain, "feed.probe", &mut [&mut on_a]).await;
        // One local message settles the export's position: `start` on the one shard.
        ca.publish("feed.local", "first".into()).await.unwrap();
        ca.flush().await.unwrap();
        assert_eq!(take(&mut on_a, 1).await, ["first"]);
        let v = bridge_until(&a, "the first export confirmed", |v| {
            v["confirmed"].as_u64() >= Some(1) && v["unconfirmed"] == 0
        });
        let start = v["exports"][0]["confirmed"][0].as_u64().unwrap();
        // 500 imports of 8 KiB: sequences start + 1 ..= start + 500 (nothing else is
        // published here meanwhile).
        let payload = vec![b'i'; 8 << 10];
        for _ in 0..500 {
            plain
                .publish("feed.in", payload.clone().into())
                .await
                .unwrap();
        }
        plain.flush().await.unwrap();
        for _ in 0..500 {
            assert_eq!(next(&mut on_a).await.payload.len(), 8 << 10);
        }
        // One import in eight (64 KiB) reached the export, which passed over it and
        // confirmed its position: within eight of the end.
        let end = start + 500;
        let v = bridge_until(&a, "the position near the log's end", |v| {
            v["exports"][0]["confirmed"][0].as_u64() >= Some(end - 8) && v["unconfirmed"] == 0
        });
        let passed = v["not_exported"].as_u64().unwrap();
        assert!((500 / 9..=500 / 8).contains(&passed), "{v:#}");
        assert_eq!(v["exported"].as_u64(), Some(1), "{v:#}");
        // A reconnect resumes from there and carries on: no gap, though the 1 MiB log has
        // long wrapped over where the last local message was.
        gate.close();
        bridge_until(&a, "disconnected", |v| v["state"] == "connecting");
        gate.open();
        ca.publish("feed.local", "second".into()).await.unwrap();
        ca.flush().await.unwrap();
        bridge_until(&a, "the second export confirmed", |v| {
            v["connects"].as_u64() >= Some(2) && v["confirmed"].as_u64() >= Some(2)
        });
        // (A gap notice is counted at the control thread's next turn, within 250 ms.)
        tokio::time::sleep(Duration::from_millis(750)).await;
        let v = bridgez(&a);
        assert_eq!(v["export_gaps"], 0, "{v:#}");
        assert_eq!(v["resent"], 0, "{v:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_speaks_tls_and_nkeys_upstream_and_tls_to_its_own_broker() {
    within(async {
        let pki = common::pki::Pki::new("localhost");
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        // The cluster verifies client certificates and takes only this nkey user.
        let cluster = Cluster::start_with(
            1,
            &format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}\n\
                 authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
                pki.server.cert.display(),
                pki.server.key.display(),
                pki.ca.display(),
                user.public_key()
            ),
        );
        let creds = pki.dir.join("bridge.creds");
        std::fs::write(
            &creds,
            format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        )
        .unwrap();
        let toml = format!(
            "[[bridge]]\nname = \"tls-edge\"\nservers = [\"tls://localhost:{}\"]\n\
             creds = \"{}\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             export = [\"secure.>\"]\nimport = [\"secure.>\"]\n",
            cluster.addr(0).port(),
            creds.display(),
            pki.ca.display(),
            pki.alice.cert.display(),
            pki.alice.key.display(),
        );
        // Every port of the edge speaks TLS: the bridge reaches it trusting its certificate.
        let tls_args = pki.server_args();
        let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        let edge = edge_from("ternd-tls", &toml, &tls_args);
        let v = bridgez(&edge);
        assert!(v["server"].as_str().unwrap().starts_with("tls://"), "{v:#}");

        let local = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .connect(edge.url())
            .await
            .expect("TLS to the edge");
        let remote = async_nats::ConnectOptions::with_nkey(seed)
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.alice.cert.clone(), pki.alice.key.clone())
            .connect(format!("tls://localhost:{}", cluster.addr(0).port()))
            .await
            .expect("TLS and nkey to the cluster");
        let mut on_edge = local.subscribe("secure.>").await.unwrap();
        let mut on_cluster = remote.subscribe("secure.>").await.unwrap();
        sync(&local).await;
        sync(&remote).await;
        until_flows(&remote, "secure.in", &mut [&mut on_edge, &mut on_cluster]).await;
        until_flows(&local, "secure.out", &mut [&mut on_cluster, &mut on_edge]).await;
        local
            .publish("secure.out", "over tls".into())
            .await
            .unwrap();
        local.flush().await.unwrap();
        assert_eq!(take(&mut on_cluster, 1).await, ["over tls"]);
    })
    .await;
}

#[test]
fn a_bridge_refuses_what_cannot_work_at_start() {
    // Client certificates required on every port: the bridge could not reach its broker.
    let pki = common::pki::Pki::new("localhost");
    let mut args: Vec<String> = pki.server_args();
    args.extend([
        "--tls-ca".into(),
        pki.ca.display().to_string(),
        "--tls-verify".into(),
        "--bridge-upstream".into(),
        "nats://127.0.0.1:1".into(),
        "--bridge-export".into(),
        "a".into(),
        "--no-store".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr) = common::ternd_exit(&args, Duration::from_secs(10));
    assert!(!status.success());
    assert!(stderr.contains("client certificate"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_import_acknowledges_only_what_the_edge_stored() {
    within(async {
        let store = common::temp_dir("nats-js");
        let cluster = Cluster::start_with(
            1,
            &format!("jetstream {{ store_dir: \"{}\" }}\n", store.display()),
        );
        let plain = connect(cluster.url(0)).await;
        let js = async_nats::jetstream::new(plain.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("a stream");
        let edge = edge_from(
            "ternd-js",
            &format!(
                "max_payload = \"4KiB\"\n[[bridge]]\nname = \"js-edge\"\nservers = [\"{}\"]\n\
                 [[bridge.import_stream]]\nstream = \"ORDERS\"\nsubject = \"orders.>\"\n",
                cluster.url(0)
            ),
            &[],
        );
        let local = connect(edge.url()).await;
        let mut on_edge = local.subscribe("orders.>").await.unwrap();
        sync(&local).await;

        // 40 fit the edge; one is larger than its max_payload and cannot be stored.
        for i in 0..20 {
            js.publish(format!("orders.{i}"), format!("o{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        js.publish("orders.big", vec![b'x'; 8 << 10].into())
            .await
            .unwrap()
            .await
            .unwrap();
        for i in 20..40 {
            js.publish(format!("orders.{i}"), format!("o{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let want: Vec<String> = (0..40).map(|i| format!("o{i}")).collect();
        assert_eq!(take(&mut on_edge, 40).await, want, "in stream order, once");
        let v = bridge_until(&edge, "40 acknowledged upstream", |v| {
            v["stream_acked"] == 40
        });
        assert!(v["import_failed"].as_u64() >= Some(1), "{v:#}");

        // Upstream, the consumer has the 40 acknowledged and the one the edge could not
        // store still pending (it comes again after ack_wait).
        let stream = js.get_stream("ORDERS").await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer("tern-js-edge")
            .await
            .expect("the durable consumer");
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_ack_pending, 1, "{info:?}");
        assert_eq!(info.ack_floor.stream_sequence, 20, "{info:?}");
        nothing_more(&mut on_edge, Duration::from_millis(300)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_that_falls_behind_loses_nothing() {
    within(async {
        let cluster = Cluster::start(1);
        // A window of 16: a burst fills the export's local subscription's queue in the
        // broker at once, and the broker serves the export from its log.
        let edge = edge_from(
            "ternd-window",
            &format!(
                "[[bridge]]\nname = \"small\"\nservers = [\"{}\"]\nexport = [\"burst.>\"]\n\
                 export_window = 16\n",
                cluster.url(0)
            ),
            &[],
        );
        let local = connect(edge.url()).await;
        let plain = connect(cluster.url(0)).await;
        let mut on_cluster = plain.subscribe("burst.>").await.unwrap();
        sync(&plain).await;
        until_flows(&local, "burst.probe", &mut [&mut on_cluster]).await;
        let n = 20_000u32;
        for i in 0..n {
            local
                .publish("burst.x", i.to_string().into())
                .await
                .unwrap();
        }
        local.flush().await.unwrap();
        let mut got = BTreeSet::new();
        while got.len() < n as usize {
            let m = next(&mut on_cluster).await;
            if let Ok(i) = std::str::from_utf8(&m.payload).unwrap().parse::<u32>() {
                got.insert(i);
            }
        }
        let v = bridge_until(&edge, "everything confirmed", |v| v["unconfirmed"] == 0);
        assert_eq!(v["export_gaps"], 0, "{v:#}");
        assert_eq!(v["export_restarts"], 0, "nothing dropped on the way: {v:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_learns_the_cluster_and_fails_over_to_a_server_it_was_not_given() {
    within(async {
        let mut cluster = Cluster::start(3);
        // Given node 0 only: the others come from the cluster's INFO (connect_urls).
        let a = edge("a", &[cluster.url(0)], "orders.>", "", &[]);
        bridge_until(&a, "the cluster's servers learned", |v| {
            v["state"] == "connected" && v["servers"].as_array().is_some_and(|s| s.len() == 3)
        });
        let ca = connect(a.url()).await;
        let plain = connect(cluster.url(2)).await;
        let mut on_cluster = plain.subscribe("orders.>").await.unwrap();
        sync(&plain).await;
        cluster.stop(0, libc::SIGTERM);
        let node0 = cluster.addr(0).port().to_string();
        bridge_until(&a, "connected to another node", |v| {
            v["state"] == "connected"
                && v["server"]
                    .as_str()
                    .is_some_and(|s| !s.ends_with(&format!(":{node0}")))
        });
        until_flows(&ca, "orders.after", &mut [&mut on_cluster]).await;
    })
    .await;
}

//! Lame duck mode against the real `ternd` (SIGUSR2, as nats-server): clients are told
//! (`INFO` with `"ldm":true`, `GOAWAY`), new connections are refused, `/healthz` says 503,
//! every client is closed over the lame duck duration, and the process exits 0; SIGTERM
//! during it stops at once.
//!
//! Deadlines here are generous bounds for a loaded machine, never measurements.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use common::{show, BinClient, Broker, RawClient, ReadEnd, WAIT};
use tern_protocol::binary::{ClientFrame, Hello, Preface, ServerFrame};

/// A connect that must be refused (the listeners are closed).
fn assert_refused(addr: std::net::SocketAddr) {
    match TcpStream::connect_timeout(&addr, WAIT) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection to {addr} was accepted in lame duck mode"),
    }
}

/// The next line must be an `INFO` with `"ldm":true`; returns its JSON.
fn expect_ldm_info(c: &mut RawClient) -> serde_json::Value {
    let before = c.client_id();
    let info = c.read_info();
    assert_eq!(info["ldm"], true, "{info}");
    assert_eq!(info["client_id"], before, "the same connection's INFO");
    info
}

/// The number after `"key":` in ternd's shutdown log (the totals, as /varz names them).
fn logged_total(log: &str, key: &str) -> u64 {
    let needle = format!("\\\"{key}\\\":");
    let plain = format!("\"{key}\":");
    let at = log
        .rfind(&needle)
        .map(|i| i + needle.len())
        .or_else(|| log.rfind(&plain).map(|i| i + plain.len()))
        .unwrap_or_else(|| panic!("{key} not in the shutdown log:\n{log}"));
    log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn sigusr2_tells_clients_refuses_new_ones_closes_them_all_and_exits_zero() {
    let mut broker = Broker::with_args(&[
        "--lame-duck-duration",
        "3s",
        "--lame-duck-grace-period",
        "500ms",
        "--monitor",
        "127.0.0.1:0",
    ]);
    let (addr, workers) = (broker.addr(), broker.workers());
    assert_eq!(broker.monitor_json("/healthz")["status"], "ok");
    assert_eq!(broker.varz()["lame_duck"], false);

    // Text and binary clients on every worker, all past their handshake.
    let mut texts: Vec<RawClient> = (0..workers)
        .flat_map(|w| [0, 1].map(|_| RawClient::connect_on_worker(addr, w, workers)))
        .collect();
    for c in &mut texts {
        c.ping_pong();
    }
    let mut bins: Vec<BinClient> = Vec::new();
    while (0..workers).any(|w| !bins.iter().any(|b| b.worker(workers) == w)) {
        bins.push(BinClient::connect(broker.binary_addr()));
    }
    // A NATS client that said it takes no INFO after the first.
    let mut old = RawClient::connect(addr);
    old.send(b"CONNECT {\"protocol\":0}\r\n");
    old.ping_pong();
    // A binary client that has sent only its preface so far.
    let mut late = BinClient::connect_bare(broker.binary_addr());
    let mut preface = bytes::BytesMut::new();
    Preface::default().encode(&mut preface);
    late.send_raw(&preface);
    let clients = texts.len() + bins.len() + 2;

    broker.signal(libc::SIGUSR2);

    for c in &mut texts {
        expect_ldm_info(c);
    }
    for b in &mut bins {
        match b.read_frame() {
            ServerFrame::GoAway(g) => {
                assert!(g.close_within_ms > 0 && g.close_within_ms <= 3000, "{g:?}");
                assert!(g.reason.starts_with(b"lame duck mode"), "{g:?}");
            }
            other => panic!("expected GOAWAY, got {other:?}"),
        }
    }
    // Every worker has told its clients, so every worker has closed its listeners.
    assert_refused(addr);
    assert_refused(broker.binary_addr());
    // Load balancers are told to drain this broker.
    let health = broker.monitor_json("/healthz");
    assert_eq!(health["status"], "unavailable", "{health}");
    assert_eq!(health["lame_duck"], true, "{health}");
    assert_eq!(broker.varz()["lame_duck"], true);

    // The half-done handshake completes, and GOAWAY follows its WELCOME.
    late.send(&ClientFrame::Hello(Hello::default()));
    assert!(matches!(late.read_frame(), ServerFrame::Welcome(_)));
    assert!(matches!(late.read_frame(), ServerFrame::GoAway(_)));

    // Every client is closed, the text ones after nothing more than what they were told.
    let close_within = Duration::from_secs(20);
    for c in &mut texts {
        let (rest, end) = c.read_to_close(close_within);
        assert!(rest.is_empty(), "after the INFO: {} ({end:?})", show(&rest));
    }
    let (rest, _) = old.read_to_close(close_within);
    assert!(rest.is_empty(), "protocol 0 gets no INFO: {}", show(&rest));
    for b in bins.iter_mut().chain([&mut late]) {
        loop {
            match b.try_read_frame(close_within) {
                Ok(ServerFrame::Ping) => b.send(&ClientFrame::Pong),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(ReadEnd::Timeout) => panic!("binary client still open"),
                Err(_) => break,
            }
        }
    }

    let status = broker.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "ternd exited with {status:?}");
    let log = broker.stderr();
    assert!(log.contains("entering lame duck mode"), "{log}");
    assert_eq!(logged_total(&log, "lame_duck_closed"), clients as u64);
}

#[test]
fn sigterm_during_lame_duck_stops_at_once() {
    let mut broker = Broker::with_args(&[
        "--lame-duck-duration",
        "10m",
        "--lame-duck-grace-period",
        "5m",
    ]);
    let mut c = RawClient::connect(broker.addr());
    c.ping_pong();
    broker.signal(libc::SIGUSR2);
    expect_ldm_info(&mut c);
    // Still served during the grace period.
    c.ping_pong();
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "ternd exited with {status:?}");
    let (rest, _) = c.read_to_close(WAIT);
    assert!(rest.is_empty(), "{}", show(&rest));
}

#[test]
fn lame_duck_settings_are_checked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-monitor",
            "--no-binary",
            "--no-store",
            "--lame-duck-duration",
            "1s",
            "--lame-duck-grace-period",
            "1s",
        ])
        .output()
        .expect("run ternd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lame_duck_grace_period"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_client_sees_the_lame_duck_info() {
    use futures::StreamExt;

    let broker = Broker::with_args(&[
        "--lame-duck-duration",
        "10m",
        "--lame-duck-grace-period",
        "5m",
    ]);
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if matches!(event, async_nats::Event::LameDuckMode) {
                    let _ = tx.unbounded_send(());
                }
            }
        })
        .connect(broker.url())
        .await
        .expect("async-nats connects");
    client.flush().await.unwrap();
    broker.signal(libc::SIGUSR2);
    tokio::time::timeout(WAIT, rx.next())
        .await
        .expect("async-nats reports lame duck mode in time")
        .expect("the event stream is open");
}

//! The drivers over TLS, WebSocket and WebSocket over TLS, against a real broker started
//! in this process through the `tern-broker` library, with certificates made by the
//! harness: short runs of `pubsub`, `fanout`, `latency` and `conns` over each transport
//! and both of `ternd`'s protocols must deliver exactly what they should, and a wrong
//! transport, an untrusted certificate or a wrong path must fail with a reason.
//! Never an assertion on a wall-clock figure.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tern_bench::cpu::ServerCpu;
use tern_bench::driver::{Dial, Driver, DriverError, Protocol, Transport};
use tern_bench::pki::Pki;
use tern_bench::scenario::conns::{self, ConnsConfig};
use tern_bench::scenario::latency::{self, LatencyConfig};
use tern_bench::scenario::pubsub::{self, PubSubConfig};
use tern_bench::scenario::{fanout, Limit, Scenario};
use tern_broker::{Args, Config, Server};

/// An in-process ternd on free ports, no store; `extra` flags appended.
fn broker(extra: &[String]) -> Server {
    let mut args: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let config = Config::from_args(Args::parse_from(args)).expect("valid flags");
    Server::start(config).expect("broker starts")
}

fn websocket_flag() -> Vec<String> {
    vec!["--websocket-listen".into(), "127.0.0.1:0".into()]
}

/// The address `protocol` over `transport` is served on.
fn addr(server: &Server, protocol: Protocol, transport: Transport) -> SocketAddr {
    match (transport.is_websocket(), protocol) {
        (true, _) => server.websocket_addr().expect("the WebSocket port is on"),
        (false, Protocol::Text) => server.local_addr(),
        (false, Protocol::Binary) => server.binary_addr().expect("the binary port is on"),
    }
}

fn driver(
    server: &Server,
    protocol: Protocol,
    transport: Transport,
    pki: Option<&Pki>,
) -> Box<dyn Driver> {
    let dial = Dial::new(
        addr(server, protocol, transport),
        transport,
        pki.map(Pki::client),
    )
    .expect("a dial");
    protocol.driver_via(dial, "tern-bench-test")
}

/// Short runs over `transport`: every count exact, and the generic runner's window too.
fn counts_exactly(server: &Server, protocol: Protocol, transport: Transport, pki: Option<&Pki>) {
    let driver = driver(server, protocol, transport, pki);
    let driver = &*driver;
    assert_eq!(driver.transport(), transport);
    let none = ServerCpu::none();
    let what = format!("{} over {}", protocol.name(), transport.name());

    let r = pubsub::run(
        driver,
        &PubSubConfig::new(2, 2, 128, Limit::Count(1000)),
        none,
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert_eq!(
        (r.published, r.delivered, r.expected),
        (2000, 4000, 4000),
        "{what}"
    );
    assert_eq!(r.per_subscriber, vec![2000, 2000], "{what}");

    let r = fanout::run(driver, &fanout::config(3, 16, Limit::Count(500)), none).unwrap();
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert_eq!(r.delivered, 1500, "{what}");

    // Messages larger than a TLS record and than a 16-bit WebSocket length.
    let r = pubsub::run(
        driver,
        &PubSubConfig::new(1, 1, 70_000, Limit::Count(40)),
        none,
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert_eq!(r.delivered, 40, "{what}");

    let r = latency::run(
        driver,
        &LatencyConfig::new(2000, 64, Limit::Duration(Duration::from_millis(300))),
        none,
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert!(r.published >= 500, "{what}: {}", r.published);
    assert_eq!(r.delivered, r.published, "{what}");
    assert_eq!(r.latency.count, r.published, "{what}");

    let r = conns::run(
        driver,
        &ConnsConfig {
            count: 30,
            broker_pid: Some(std::process::id()),
            settle: Duration::from_millis(10),
        },
    );
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert_eq!(r.opened, 30, "{what}");
    assert!(r.bytes_per_conn.is_some(), "{what}");

    let report =
        Scenario::PubSub(PubSubConfig::new(1, 1, 128, Limit::Count(300))).run(driver, None);
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    let d = &report.deliveries[0];
    assert_eq!((d.delivered, d.expected), (300, 300), "{what}");
}

#[test]
fn tls_counts_exactly_over_both_protocols() {
    let pki = Pki::generate().unwrap();
    let server = broker(&pki.ternd_args());
    for protocol in [Protocol::Text, Protocol::Binary] {
        counts_exactly(&server, protocol, Transport::Tls, Some(&pki));
    }
    server.shutdown();
}

#[test]
fn websocket_counts_exactly_over_both_protocols() {
    let server = broker(&websocket_flag());
    for protocol in [Protocol::Text, Protocol::Binary] {
        counts_exactly(&server, protocol, Transport::Websocket, None);
    }
    server.shutdown();
}

#[test]
fn websocket_over_tls_counts_exactly_over_both_protocols() {
    let pki = Pki::generate().unwrap();
    let mut flags = pki.ternd_args();
    flags.extend(websocket_flag());
    let server = broker(&flags);
    for protocol in [Protocol::Text, Protocol::Binary] {
        counts_exactly(&server, protocol, Transport::Wss, Some(&pki));
    }
    server.shutdown();
}

/// A wrong transport or an untrusted certificate fails the connect with a reason naming
/// it (a refused upgrade's status and reason are checked by the WebSocket layer's unit
/// tests).
#[test]
fn a_wrong_transport_fails_with_a_reason() {
    let pki = Pki::generate().unwrap();
    let mut flags = pki.ternd_args();
    flags.extend(websocket_flag());
    let server = broker(&flags);
    let connect_err = |dial: Dial, protocol: Protocol| -> DriverError {
        match protocol.driver_via(dial, "tern-bench-test").connect() {
            Ok(_) => panic!("the connect should have failed"),
            Err(e) => e,
        }
    };

    // Plain TCP to the TLS text port: its INFO says TLS is required.
    let e = connect_err(Dial::tcp(server.local_addr()), Protocol::Text);
    assert!(matches!(e, DriverError::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("requires TLS"), "{e}");

    // A client that trusts another CA.
    let stranger = Pki::generate().unwrap();
    let dial = Dial::new(
        server.binary_addr().unwrap(),
        Transport::Tls,
        Some(stranger.client()),
    );
    let e = connect_err(dial.unwrap(), Protocol::Binary);
    assert!(matches!(e, DriverError::Tls(_)), "{e}");
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");

    // A TLS transport without a CA is refused before connecting.
    assert!(Dial::new(server.local_addr(), Transport::Tls, None).is_err());

    // Plain WebSocket to the wss port: the broker waits for a TLS handshake and drops the
    // HTTP request; the upgrade never succeeds.
    let ws = server.websocket_addr().unwrap();
    let e = connect_err(
        Dial::new(ws, Transport::Websocket, None).unwrap(),
        Protocol::Text,
    );
    assert!(
        matches!(
            e,
            DriverError::Closed | DriverError::Io(_) | DriverError::WebSocket(_)
        ),
        "{e}"
    );
    server.shutdown();
}

/// The stuck consumer reads nothing and probes with a plain `PING`: plain TCP only, and a
/// scenario over another transport says so instead of measuring something else.
#[test]
fn a_stuck_consumer_is_plain_tcp_only() {
    let server = broker(&websocket_flag());
    let driver = driver(&server, Protocol::Text, Transport::Websocket, None);
    let e = driver.connect_stalled("a", 4096).unwrap_err();
    assert!(matches!(e, DriverError::Unsupported(_)), "{e}");
    server.shutdown();
}

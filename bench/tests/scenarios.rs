//! Every scenario, with tiny counts, against a real broker started in this process through
//! the `tern-broker` library: the counts must be exact and the figures sane.

use std::time::Duration;

use clap::Parser;
use tern_bench::driver::nats::NatsDriver;
use tern_bench::scenario::conns::{self, ConnsConfig};
use tern_bench::scenario::latency::{self, LatencyConfig};
use tern_bench::scenario::pubsub::{self, PubSubConfig};
use tern_bench::scenario::{fanout, queue, Limit, Scenario};
use tern_broker::{Args, Config, Server};

fn broker() -> Server {
    let config = Config::from_args(Args::parse_from([
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--no-monitor",
        "--workers",
        "2",
        "--no-pin",
    ]))
    .expect("valid flags");
    Server::start(config).expect("broker starts")
}

#[test]
fn every_scenario_counts_exactly() {
    let server = broker();
    let driver = NatsDriver::new(server.local_addr(), "tern-bench-test");

    // pubsub: 2 publishers × 500 messages, 3 subscribers: every subscriber gets all 1000.
    let r = pubsub::run(&driver, &PubSubConfig::new(2, 3, 64, Limit::Count(500))).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.published, 1000);
    assert_eq!(r.expected, 3000);
    assert_eq!(r.delivered, 3000);
    assert_eq!(r.per_subscriber, vec![1000, 1000, 1000]);
    assert!(r.publish_rate > 0.0 && r.delivery_rate > 0.0);
    assert!((r.delivery_mb_s - r.delivery_rate * 64.0 / 1e6).abs() < 1e-6);

    // fanout: 1 publisher to 5 subscribers.
    let r = fanout::run(&driver, &fanout::config(5, 16, Limit::Count(300))).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.delivered, 1500);
    assert!(r.per_subscriber.iter().all(|&n| n == 300));

    // queue: members' counts sum to what was published.
    let r = queue::run(&driver, &queue::config(1, 4, 32, Limit::Count(2000))).unwrap();
    assert!(r.run.problems.is_empty(), "{:?}", r.run.problems);
    assert_eq!(r.run.per_subscriber.len(), 4);
    assert_eq!(r.run.per_subscriber.iter().sum::<u64>(), 2000);
    assert_eq!(r.run.delivered, 2000);
    assert!(r.spread.max >= r.spread.min);

    // latency: a fixed rate; every message measured once, percentiles ordered.
    let r = latency::run(
        &driver,
        &LatencyConfig::new(2000, 64, Limit::Duration(Duration::from_millis(300))),
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.published >= 500, "{}", r.published);
    assert_eq!(r.delivered, r.published);
    assert_eq!(r.latency.count, r.published);
    let l = &r.latency;
    assert!(l.min_ns > 0);
    assert!(l.p50_ns <= l.p90_ns && l.p90_ns <= l.p99_ns && l.p99_ns <= l.p999_ns);
    assert!(l.p999_ns <= l.p9999_ns && l.p9999_ns <= l.max_ns);

    // conns: in-process broker, so its memory is this process's.
    let r = conns::run(
        &driver,
        &ConnsConfig {
            count: 50,
            broker_pid: Some(std::process::id()),
            settle: Duration::from_millis(10),
        },
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.opened, 50);
    assert!(r.connect_rate > 0.0);
    assert!(r.rss_before_kib.is_some() && r.bytes_per_conn.is_some());

    // The generic runner labels and reports the same way.
    let report = Scenario::PubSub(PubSubConfig::new(1, 1, 16, Limit::Count(10))).run(&driver, None);
    assert_eq!(report.label, "pubsub 1x1 16B");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.figure("delivered").map(|f| f.value), Some(10.0));
    assert_eq!(report.detail["delivered"], 10);

    server.shutdown();
}

#[test]
fn an_absent_broker_is_a_reported_problem() {
    // A port nothing listens on: bind, take the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let driver = NatsDriver::new(addr, "tern-bench-test");
    let report = Scenario::Fanout(fanout::config(2, 16, Limit::Count(10))).run(&driver, None);
    assert!(report.figures.is_empty());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

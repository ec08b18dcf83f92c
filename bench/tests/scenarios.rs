//! Every scenario, with tiny counts, against a real broker started in this process through
//! the `tern-broker` library, over both of its ports: the counts must be exact and the
//! figures sane. Also the binary driver on its own against the real binary port.
//! Never an assertion on a wall-clock figure.

use std::time::{Duration, Instant};

use clap::Parser;
use tern_bench::cpu::{CpuReading, ServerCpu};
use tern_bench::driver::binary::BinaryDriver;
use tern_bench::driver::nats::NatsDriver;
use tern_bench::driver::{Driver, DriverError, Protocol};
use tern_bench::scenario::audience::presence::{PresenceConfig, PresenceResult};
use tern_bench::scenario::audience::{self, AudienceConfig};
use tern_bench::scenario::catchup::{self, CatchupConfig};
use tern_bench::scenario::conns::{self, ConnsConfig};
use tern_bench::scenario::latency::{self, LatencyConfig};
use tern_bench::scenario::pubsub::{self, PubSubConfig};
use tern_bench::scenario::stuck::{self, StuckConfig};
use tern_bench::scenario::{fanout, queue, Limit, Scenario};
use tern_broker::{Args, Config, Server};
use tern_protocol::binary::ErrorCode;

/// An in-process ternd on free ports, text and binary; `extra` flags appended.
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
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--data-dir") {
        // The harness is under test here, not the store: no files.
        args.push("--no-store");
    }
    let config = Config::from_args(Args::parse_from(args)).expect("valid flags");
    Server::start(config).expect("broker starts")
}

fn driver(server: &Server, protocol: Protocol) -> Box<dyn Driver> {
    let addr = match protocol {
        Protocol::Text => server.local_addr(),
        Protocol::Binary => server.binary_addr().expect("the binary port is on"),
    };
    protocol.driver(addr, "tern-bench-test")
}

fn every_scenario_counts_exactly(protocol: Protocol) {
    let server = broker(&[]);
    let driver = driver(&server, protocol);
    let driver = &*driver;
    assert_eq!(driver.protocol(), protocol.name());

    // pubsub: 2 publishers × 500 messages, 3 subscribers: every subscriber gets all 1000.
    let none = ServerCpu::none();
    let r = pubsub::run(
        driver,
        &PubSubConfig::new(2, 3, 64, Limit::Count(500)),
        none,
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.published, 1000);
    assert_eq!(r.expected, 3000);
    assert_eq!(r.delivered, 3000);
    assert_eq!(r.per_subscriber, vec![1000, 1000, 1000]);
    assert!(r.publish_rate > 0.0 && r.delivery_rate > 0.0);
    assert!((r.delivery_mb_s - r.delivery_rate * 64.0 / 1e6).abs() < 1e-6);

    // fanout: 1 publisher to 5 subscribers.
    let r = fanout::run(driver, &fanout::config(5, 16, Limit::Count(300)), none).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.delivered, 1500);
    assert!(r.per_subscriber.iter().all(|&n| n == 300));

    // queue: members' counts sum to what was published.
    let r = queue::run(driver, &queue::config(1, 4, 32, Limit::Count(2000)), none).unwrap();
    assert!(r.run.problems.is_empty(), "{:?}", r.run.problems);
    assert_eq!(r.run.per_subscriber.len(), 4);
    assert_eq!(r.run.per_subscriber.iter().sum::<u64>(), 2000);
    assert_eq!(r.run.delivered, 2000);
    assert!(r.spread.max >= r.spread.min);

    // latency: a fixed rate; every message measured once, percentiles ordered.
    let r = latency::run(
        driver,
        &LatencyConfig::new(2000, 64, Limit::Duration(Duration::from_millis(300))),
        none,
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
        driver,
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

    // The generic runner labels and reports the same way: one window, exact, its CPU not
    // read without a process id.
    let report = Scenario::PubSub(PubSubConfig::new(1, 1, 16, Limit::Count(10))).run(driver, None);
    assert_eq!(report.label, "pubsub 1x1 16B");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let d = &report.deliveries[0];
    assert_eq!((d.delivered, d.expected), (10, 10));
    assert_eq!(d.server_cpu, CpuReading::NotWatched);
    assert!(report.figure("server CPU/msg").is_none());
    assert_eq!(report.detail["delivered"], 10);

    // With a process id (this process: the broker runs in it), every counted scenario
    // reads the CPU over its window; only that it is there is checked, never its value.
    let pid = Some(std::process::id());
    for scenario in [
        Scenario::PubSub(PubSubConfig::new(1, 2, 16, Limit::Count(200))),
        Scenario::Fanout(fanout::config(3, 16, Limit::Count(200))),
        Scenario::Queue(queue::config(1, 2, 16, Limit::Count(200))),
        Scenario::Latency(LatencyConfig::new(
            2000,
            64,
            Limit::Duration(Duration::from_millis(100)),
        )),
    ] {
        let report = scenario.run(driver, pid);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.deliveries.len(), 1, "{}", report.label);
        let d = &report.deliveries[0];
        assert!(d.delivered > 0 && d.delivered == d.expected, "{d:?}");
        assert!(matches!(d.server_cpu, CpuReading::Spent { .. }), "{d:?}");
        assert!(
            report.figure("server CPU/msg").is_some(),
            "{}",
            report.label
        );
    }

    server.shutdown();
}

#[test]
fn every_scenario_counts_exactly_over_text() {
    every_scenario_counts_exactly(Protocol::Text);
}

#[test]
fn every_scenario_counts_exactly_over_binary() {
    every_scenario_counts_exactly(Protocol::Binary);
}

/// A short `stuck` run: the fast subscribers get every message of both phases, once and in
/// order, with the stuck subscriber there or not; its report has every figure. Whether the
/// broker closes the stuck one, and the p99 ratio, depend on the broker's policy and the
/// machine: only their presence is checked.
fn stuck_keeps_the_fast_subscribers_whole(protocol: Protocol) {
    let server = broker(&[]);
    let driver = driver(&server, protocol);
    let config = StuckConfig {
        warmup: Duration::from_millis(100),
        ..StuckConfig::new(2000, 3, 256, Duration::from_millis(300))
    };
    let r = stuck::run(&*driver, &config, ServerCpu::none()).unwrap();
    let with = r.with_stuck.as_ref().expect("phase B ran");
    assert!(r.warmup_published > 0);
    for phase in [&r.alone, with] {
        assert!(phase.published >= 500, "{}", phase.published);
        assert_eq!(phase.expected, phase.published * 3);
        assert_eq!(phase.received, phase.expected, "{}", phase.name());
        assert!(phase.whole(), "{phase:?}");
        assert_eq!(phase.missed_per_subscriber, vec![0, 0, 0]);
        let l = &phase.latency;
        assert_eq!(l.count, phase.expected);
        assert!(l.p50_ns <= l.p99_ns && l.p99_ns <= l.p999_ns && l.p999_ns <= l.max_ns);
    }
    assert!(!r.alone.with_stuck && with.with_stuck);
    assert!(r.p99_ratio.is_some());
    // The kernel doubles the SO_RCVBUF asked for; it stays far below a default buffer.
    let recv_buffer = r.stuck.recv_buffer.expect("the stuck socket's buffer");
    assert!(recv_buffer < 64 * 1024, "{recv_buffer}");
    assert_eq!(r.stuck.disconnected, r.stuck.how.is_some());
    // The only problem a clean run may have is the p99 ratio (it depends on the machine).
    assert!(
        r.problems.iter().all(|p| p.contains("p99")),
        "{:?}",
        r.problems
    );

    let report = Scenario::Stuck(config).run(&*driver, Some(std::process::id()));
    assert_eq!(report.label, "stuck 3 fast 2000/s 256B");
    let phases: Vec<_> = report.deliveries.iter().map(|d| d.phase).collect();
    assert_eq!(phases, [Some("alone"), Some("with stuck")]);
    for d in &report.deliveries {
        assert_eq!(d.delivered, d.expected, "{d:?}");
        assert!(matches!(d.server_cpu, CpuReading::Spent { .. }), "{d:?}");
    }
    for name in [
        "alone p50",
        "alone p99",
        "alone p99.9",
        "alone missed",
        "with stuck p99",
        "with stuck received",
        "with stuck missed",
        "p99 with/alone",
        "stuck disconnected",
        "alone server CPU/msg",
        "with stuck server CPU/msg",
    ] {
        assert!(
            report.figure(name).is_some(),
            "{name}: {:?}",
            report.figures
        );
    }
    assert_eq!(
        report.figure("with stuck missed").map(|f| f.value),
        Some(0.0)
    );
    assert_eq!(report.detail["with_stuck"]["missed"], 0);
    server.shutdown();
}

#[test]
fn stuck_keeps_the_fast_subscribers_whole_over_text() {
    stuck_keeps_the_fast_subscribers_whole(Protocol::Text);
}

#[test]
fn stuck_keeps_the_fast_subscribers_whole_over_binary() {
    stuck_keeps_the_fast_subscribers_whole(Protocol::Binary);
}

/// A tiny audience: 24 users, a viral room, churn and a storm, in about two seconds.
fn tiny_audience() -> AudienceConfig {
    AudienceConfig {
        users: 24,
        rooms: 4,
        viral_fraction: 0.25,
        message_interval: Duration::from_millis(100),
        duration: Duration::from_millis(1500),
        churn: 8.0,
        away: Duration::from_millis(150),
        storm_at: Some(Duration::from_millis(700)),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        reconnect_timeout: Duration::from_secs(10),
        linger: Duration::from_secs(2),
        ..AudienceConfig::default()
    }
}

fn audience_runs_clean(protocol: Protocol) {
    let server = broker(&[]);
    let driver = driver(&server, protocol);
    let config = tiny_audience();
    let r = audience::run(&*driver, &config);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.joined_before_start, 24);
    assert!(r.published > 100, "{}", r.published);
    // Nothing owed went missing, nothing twice; every member got every message it was
    // owed, plus some it was not owed (sent around its joins and leaves).
    assert_eq!((r.tally.missed, r.duplicated, r.reordered), (0, 0, 0));
    assert!(r.tally.expected > r.published, "{:?}", r.tally);
    assert!(r.delivered >= r.tally.expected);
    // The storm dropped whoever was connected; all came back.
    assert!(r.storm_drops > 0);
    assert_eq!(r.reconnects, r.storm_drops);
    let rc = r.reconnect.as_ref().expect("reconnect times");
    assert!(rc.p50_ms <= rc.p99_ms && rc.p99_ms <= rc.max_ms);
    assert!(r.churn_leaves > 0);
    // The viral room is there and measured.
    let viral = r
        .latency
        .iter()
        .find(|c| c.class.name() == "viral")
        .unwrap();
    assert_eq!(viral.users, 6);
    assert!(viral.deliveries > 0 && viral.p50_ns <= viral.p99_ns);
    let figures = r.figures();
    for name in ["viral p99", "reconnect p99", "missed"] {
        assert!(figures.iter().any(|f| f.name == name), "{name}");
    }
    assert_eq!(
        Scenario::Audience(config).label(),
        "audience 24 users 4 rooms"
    );
    server.shutdown();
}

#[test]
fn audience_runs_clean_over_text() {
    audience_runs_clean(Protocol::Text);
}

#[test]
fn audience_runs_clean_over_binary() {
    audience_runs_clean(Protocol::Binary);
}

/// Receives on `conn` until `n` payloads other than the warm-up's `w` arrived (or 5 s
/// passed).
fn receive_n(conn: &mut dyn tern_bench::driver::Connection, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < n && Instant::now() < deadline {
        conn.receive(Duration::from_millis(20), &mut |p| {
            if p != b"w" {
                got.push(p.to_vec());
            }
        })
        .unwrap();
    }
    got
}

#[test]
fn binary_driver_against_the_real_binary_port() {
    let server = broker(&[]);
    let binary = BinaryDriver::new(server.binary_addr().unwrap(), "tern-bench-test");
    let text = NatsDriver::new(server.local_addr(), "tern-bench-test");

    // Both ports see each other's messages, payloads unchanged.
    let mut b = binary.connect().unwrap();
    let mut t = text.connect().unwrap();
    b.subscribe("cross.*", None).unwrap();
    t.subscribe("cross.*", None).unwrap();
    b.sync(Duration::from_secs(5)).unwrap();
    t.sync(Duration::from_secs(5)).unwrap();
    // A PONG may come before a subscription is live on another worker: warm up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "subscriptions never went live");
        b.publish("cross.warm", b"w").unwrap();
        b.flush().unwrap();
        let (mut to_b, mut to_t) = (0, 0);
        let _ = b.receive(Duration::from_millis(20), &mut |_| to_b += 1);
        let _ = t.receive(Duration::from_millis(20), &mut |_| to_t += 1);
        if to_b > 0 && to_t > 0 {
            break;
        }
    }
    b.sync(Duration::from_secs(5)).unwrap();
    t.sync(Duration::from_secs(5)).unwrap();
    // Flush, not sync: a sync discards what arrives before its answer, echoes included.
    t.publish("cross.a", b"from text").unwrap();
    b.publish("cross.b", b"from binary").unwrap();
    t.flush().unwrap();
    b.flush().unwrap();
    let mut at_b = receive_n(&mut *b, 2);
    let mut at_t = receive_n(&mut *t, 2);
    at_b.sort();
    at_t.sort();
    let want = vec![b"from binary".to_vec(), b"from text".to_vec()];
    assert_eq!(at_b, want);
    assert_eq!(at_t, want);

    // An invalid filter is refused with the binary error code and the broker's text.
    b.subscribe("bad..subject", None).unwrap();
    let err = b.sync(Duration::from_secs(5)).unwrap_err();
    match &err {
        DriverError::Server { code, message } => {
            assert_eq!(*code, Some(ErrorCode::InvalidSubject), "{err}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a broker error, got {other}"),
    }
    server.shutdown();
}

#[test]
fn binary_driver_answers_the_brokers_pings() {
    let server = broker(&["--ping-interval", "20ms", "--ping-max", "2"]);
    let driver = BinaryDriver::new(server.binary_addr().unwrap(), "tern-bench-test");
    let mut answering = driver.connect().unwrap();
    let mut silent = driver.connect().unwrap();
    // Many ping intervals: the one that answers stays open...
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        answering
            .receive(Duration::from_millis(10), &mut |_| {})
            .unwrap();
    }
    answering.sync(Duration::from_secs(5)).unwrap();
    // ...the one that never read (so never answered) was closed as stale.
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "the silent connection stayed open"
        );
        if let Err(e) = silent.receive(Duration::from_millis(20), &mut |_| {}) {
            break e;
        }
    };
    assert!(
        matches!(
            err,
            DriverError::Closed | DriverError::Server { .. } | DriverError::Io(_)
        ),
        "{err}"
    );
    server.shutdown();
}

#[test]
fn an_absent_broker_is_a_reported_problem() {
    // A port nothing listens on: bind, take the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for protocol in [Protocol::Text, Protocol::Binary] {
        let driver = protocol.driver(addr, "tern-bench-test");
        let report = Scenario::Fanout(fanout::config(2, 16, Limit::Count(10))).run(&*driver, None);
        assert!(report.figures.is_empty());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let stuck = StuckConfig::new(1000, 2, 64, Duration::from_millis(100));
        let report = Scenario::Stuck(stuck).run(&*driver, None);
        assert!(report.figures.is_empty());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let report = Scenario::Audience(tiny_audience()).run(&*driver, None);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("cannot connect"),
            "{:?}",
            report.problems
        );
    }
}

#[test]
fn the_binary_exits_non_zero_after_printing_problems() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern-bench"))
        .args([
            "fanout",
            "--server",
            &addr.to_string(),
            "-s",
            "2",
            "--count",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PROBLEM:"), "{stdout}");
    assert!(stdout.contains("fanout 1x2 128B"), "{stdout}");
    // The summary names the target and the scenario of each failure.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = format!("tern-bench: FAILED {addr}/text / fanout 1x2 128B: ");
    assert!(stderr.contains(&failed), "{stderr}");
}

/// `catchup` against a broker that stores: every stored message is replayed, once; over
/// the text protocol the scenario says it cannot run.
#[test]
fn catchup_replays_everything_stored_over_binary_only() {
    let dir = std::env::temp_dir().join(format!("tern-bench-catchup-{}", std::process::id()));
    let data = dir.display().to_string();
    let server = broker(&["--data-dir", data.as_str(), "--log-size", "4MiB"]);
    let config = CatchupConfig {
        count: 5_000,
        size: 128,
    };
    let r = catchup::run(
        &*driver(&server, Protocol::Binary),
        &config,
        ServerCpu::none(),
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.stored, r.replayed), (5_000, 5_000));
    assert!(r.seconds > 0.0);
    let d = r.delivery();
    assert_eq!((d.delivered, d.expected, d.problem()), (5_000, 5_000, None));
    let report = Scenario::Catchup(config.clone()).run(&*driver(&server, Protocol::Text), None);
    assert!(
        report.problems[0].contains("not supported"),
        "{:?}",
        report.problems
    );
    assert!(!Scenario::Catchup(config).supports(Protocol::Text));
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// A small audience with presence: 50 users, a storm, churn, and `grace` as the broker's
/// window (short, so the settle check comes soon).
fn presence_audience(grace: Duration, password: Option<&str>) -> AudienceConfig {
    AudienceConfig {
        users: 50,
        rooms: 5,
        viral_fraction: 0.2,
        message_interval: Duration::from_millis(200),
        duration: Duration::from_secs(4),
        churn: 4.0,
        away: Duration::from_millis(200),
        storm_at: Some(Duration::from_secs(2)),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        reconnect_timeout: Duration::from_secs(10),
        linger: Duration::from_secs(2),
        subject_prefix: "aud".into(),
        presence: Some(PresenceConfig {
            grace,
            margin: Duration::from_millis(500),
            password: password.map(str::to_string),
            ..PresenceConfig::default()
        }),
        ..AudienceConfig::default()
    }
}

/// Runs `config` against a broker with `extra` flags; checks what holds with or without
/// authentication, and returns presence's result.
fn presence_settles_clean(config: &AudienceConfig, extra: &[&str]) -> PresenceResult {
    let server = broker(extra);
    let driver = driver(&server, Protocol::Text);
    let r = audience::run(&*driver, config);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.joined_before_start, 50);
    assert!(r.storm_drops > 0 && r.reconnects == r.storm_drops);
    assert_eq!((r.tally.missed, r.duplicated), (0, 0));
    let p = r.presence.clone().expect("presence figures");
    // The settle check ran and the broker's rooms hold exactly who the harness says.
    assert!(p.checked, "{p:?}");
    assert_eq!((p.ghosts, p.missing), (0, 0), "{:?}", p.mismatched_rooms);
    // Every first join was seen, and some leaves (churn leaves at once).
    assert!(p.join_events >= 50, "{p:?}");
    assert!(p.leave_events > 0, "{p:?}");
    assert!(p.events_per_sec > 0.0);
    assert!(p.right_after_storm_ms.is_some(), "{p:?}");
    let figures = r.figures();
    for name in [
        "presence events/s",
        "presence events",
        "presence suppressed",
        "presence right after storm",
        "presence mismatches",
    ] {
        assert!(figures.iter().any(|f| f.name == name), "{name}");
    }
    assert!(Scenario::Audience(config.clone())
        .label()
        .ends_with(" presence"));
    server.shutdown();
    p
}

#[test]
fn audience_presence_settles_clean_without_authentication() {
    // Members are u<index>#<client id>: a reconnect is a new member, the window only
    // delays the old one's leave.
    let config = presence_audience(Duration::from_secs(1), None);
    presence_settles_clean(&config, &["--presence-grace", "1s"]);
}

#[test]
fn audience_presence_hides_reconnects_with_authentication() {
    // Users u0..u49 with a plain-text password: a member is its user, so a reconnect
    // within the window makes no leave and no join.
    let path =
        std::env::temp_dir().join(format!("tern-bench-presence-{}.toml", std::process::id()));
    let users: String = (0..50)
        .map(|i| format!("[[users]]\nuser = \"u{i}\"\npassword = \"pw\"\n\n"))
        .collect();
    std::fs::write(&path, users).unwrap();
    let config = presence_audience(Duration::from_secs(3), Some("pw"));
    let p = presence_settles_clean(
        &config,
        &["--presence-grace", "3s", "--config", path.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&path);
    // Every storm drop that was back within the window saved a leave and a join.
    assert!(p.suppressed > 0, "{p:?}");
}

//! `tern top --once` against a running broker (started in this process through the
//! `tern-broker` library, with monitoring on a free port).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clap::Parser;
use tern_broker::{Args, Config, Server};

#[test]
fn top_once_shows_the_broker() {
    let config = Config::from_args(Args::parse_from([
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--monitor",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--no-pin",
        "--no-binary",
        "--no-store",
    ]))
    .unwrap();
    let server = Server::start(config).unwrap();
    let monitor = server.monitor_addr().expect("monitoring is on");

    // Two connections, one publish, flushed with PING/PONG.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(server.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"CONNECT {}\r\nPUB a 2\r\nhi\r\nPING\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("PONG") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        clients.push(c);
    }

    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "top",
            "--once",
            "--interval",
            "100ms",
            "--monitor",
            &format!("http://{monitor}/"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("connections 2"), "{text}");
    let msgs_in = text.lines().find(|l| l.starts_with("msgs in")).unwrap();
    assert_eq!(msgs_in.split_whitespace().nth(2), Some("2"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
    // No bridge, no bridge section.
    assert!(!text.contains("bridge"), "{text}");

    // A broker that is not there is a clear error, not a hang.
    drop(clients);
    server.shutdown();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["top", "--once", "--monitor", &monitor.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

/// `tern top --once` against the monitoring endpoint at `monitor`.
fn top_once(monitor: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["top", "--once", "--interval", "100ms", "--monitor", monitor])
        .output()
        .unwrap()
}

#[test]
fn top_once_shows_a_bridge_that_cannot_reach_its_upstream() {
    let config = Config::from_args(Args::parse_from([
        "ternd",
        "--listen",
        "127.0.0.1:0",
        // A bridge reaches its broker through the binary port.
        "--binary-listen",
        "127.0.0.1:0",
        "--monitor",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--no-pin",
        "--no-store",
        // Nothing listens on port 1: the bridge keeps trying, with an error to show.
        "--bridge-upstream",
        "nats://127.0.0.1:1",
        "--bridge-name",
        "edge1",
        "--bridge-export",
        "a.>",
    ]))
    .unwrap();
    let server = Server::start(config).unwrap();
    let monitor = server.monitor_addr().expect("monitoring is on").to_string();

    // The first attempt fails at once (connection refused); until then there is no error.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let out = top_once(&monitor);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("last error") {
            break text;
        }
        assert!(Instant::now() < deadline, "no error shown in time:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("edge1 "))
        .unwrap_or_else(|| panic!("no line for the bridge:\n{text}"));
    let words: Vec<&str> = lines[at].split_whitespace().collect();
    // Name, state, export/s, import/s, unconfirmed, where it is trying to connect.
    assert_eq!(
        words,
        [
            "edge1",
            "connecting",
            "0.0",
            "0.0",
            "0",
            "nats://127.0.0.1:1"
        ],
        "{text}"
    );
    let error = lines[at + 1];
    assert!(error.starts_with("  last error "), "{text}");
    assert!(error.contains(" ago: "), "{text}");
    assert!(error.contains("127.0.0.1:1"), "{text}");
    server.shutdown();
}

#[test]
fn top_once_works_with_a_broker_without_bridgez() {
    // An older broker: /varz, and 404 for /bridgez.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let monitor = listener.local_addr().unwrap().to_string();
    let broker = std::thread::spawn(move || {
        let mut paths = Vec::new();
        // Two samples, each /varz then /bridgez.
        for _ in 0..4 {
            let (mut c, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0);
                request.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8(request).unwrap();
            let path = request.split(' ').nth(1).unwrap().to_string();
            let (status, body) = match path.as_str() {
                "/varz" => ("200 OK", r#"{"server_id": "OLD", "connections": 4}"#),
                _ => ("404 Not Found", "no such endpoint"),
            };
            write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            paths.push(path);
        }
        paths
    });
    let out = top_once(&monitor);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("connections 4"), "{text}");
    assert!(!text.contains("bridge"), "{text}");
    assert_eq!(
        broker.join().unwrap(),
        ["/varz", "/bridgez", "/varz", "/bridgez"]
    );
}

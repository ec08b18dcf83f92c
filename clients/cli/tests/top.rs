//! `tern top --once` against a running broker (started in this process through the
//! `tern-broker` library, with monitoring on a free port).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

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

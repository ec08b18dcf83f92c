//! `tern pub`, `sub`, `req` and `reply` run as a script would run them: the built `tern`
//! binary against a broker started in this process (binary port on a free port), with
//! stdin piped in, stdout parsed and exit codes checked.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_broker::Server;

// The Rust client's tests' broker start: one place for the base flags.
#[path = "../../rust/tests/common/broker.rs"]
mod broker;

/// The longest any step waits.
const WAIT: Duration = Duration::from_secs(20);

fn start_broker() -> Server {
    // No ring log: nothing on disk, every start a new log epoch, catch-up starts live.
    broker_with(&["--no-store"])
}

/// A broker that stores everything, in `dir`.
fn start_storing_broker(dir: &std::path::Path) -> Server {
    let dir = dir.display().to_string();
    broker_with(&["--data-dir", &dir, "--log-size", "4MiB"])
}

/// An in-process broker on free ports, 2 workers, no monitoring, `extra` flags appended.
fn broker_with(extra: &[&str]) -> Server {
    broker::start("127.0.0.1:0", extra)
}

fn url(server: &Server) -> String {
    format!("tern://{}", server.binary_addr().unwrap())
}

fn tern(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args);
    cmd
}

/// Runs `tern` to completion with `stdin`, within [`WAIT`].
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tern(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let bg = Background::watch(child);
    bg.finish()
}

/// A `tern` process running in the background; killed if the test ends first.
struct Background {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Background {
    fn spawn(args: &[&str]) -> Background {
        let child = tern(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background::watch(child)
    }

    fn watch(mut child: Child) -> Background {
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        Background {
            child: Some(child),
            stderr: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits for a stderr line containing `marker` (e.g. the "subscribed" line).
    fn wait_for(&mut self, marker: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(marker);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no `{marker}` on stderr; saw {:?}", self.stderr_seen),
            }
        }
    }

    /// Waits for the process to exit, within [`WAIT`].
    fn finish(mut self) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tern did not exit within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let mut stderr_lines = std::mem::take(&mut self.stderr_seen);
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            stderr_lines.push(line);
        }
        Output {
            status,
            stdout,
            stderr: stderr_lines.join("\n").into_bytes(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn lines_piped_into_pub_reach_sub_as_json() {
    let server = start_broker();
    let url = url(&server);
    let mut sub = Background::spawn(&["sub", "data.>", "--count", "4", "--json", "--server", &url]);
    sub.wait_for("tern: subscribed to data.>");

    let out = run(
        &[
            "pub",
            "data.lines",
            "--priority",
            "5",
            "--header",
            "Trace: abc",
            "-H",
            "Tag:1",
            "-H",
            "Tag:2",
            "--server",
            &url,
        ],
        b"one\ntwo\r\nthree\n\n",
    );
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains("published 4 messages to data.lines"),
        "{}",
        text(&out.stderr)
    );

    let out = sub.finish();
    assert_ok(&out);
    let msgs = json_lines(&out);
    let payloads: Vec<&str> = msgs
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two", "three", ""]);
    let first_seq = msgs[0]["sequence"].as_u64().unwrap();
    assert!(first_seq >= 1);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["subject"], "data.lines");
        assert_eq!(m["priority"], 5);
        assert_eq!(m["payload_encoding"], "utf8");
        assert_eq!(m["reply"], Value::Null);
        assert_eq!(m["replayed"], false);
        assert_eq!(m["headers"]["Trace"], serde_json::json!(["abc"]));
        assert_eq!(m["headers"]["Tag"], serde_json::json!(["1", "2"]));
        assert_eq!(m["shard"], msgs[0]["shard"]);
        assert_eq!(m["sequence"].as_u64().unwrap(), first_seq + i as u64);
        assert!(m["timestamp"].as_u64().unwrap() > 0);
    }
    server.shutdown();
}

#[test]
fn pub_count_ids_and_binary_payloads() {
    let server = start_broker();
    let url = url(&server);
    let mut sub = Background::spawn(&["sub", "bin", "--count", "4", "--json", "--server", &url]);
    sub.wait_for("subscribed");
    let out = run(
        &[
            "pub", "bin", "hello", "--count", "3", "--id", "x", "--server", &url,
        ],
        b"",
    );
    assert_ok(&out);
    assert!(text(&out.stderr).contains("published 3 messages"));
    // Not UTF-8: printed as base64, and said so.
    let out = run(&["pub", "bin", "--server", &url], b"\xff\xfe\n");
    assert_ok(&out);
    assert!(text(&out.stderr).contains("published 1 message to bin"));

    let msgs = json_lines(&sub.finish());
    assert_eq!(msgs.len(), 4);
    for m in &msgs[..3] {
        assert_eq!(
            (m["payload"].as_str(), m["payload_encoding"].as_str()),
            (Some("hello"), Some("utf8"))
        );
    }
    assert_eq!(msgs[3]["payload"], "//4=");
    assert_eq!(msgs[3]["payload_encoding"], "base64");
    assert_eq!(msgs[3]["headers"], Value::Null);

    // The human format: a header line per message with its place, then the payload.
    let mut sub = Background::spawn(&["sub", "human", "--count", "1", "--server", &url]);
    sub.wait_for("subscribed");
    assert_ok(&run(
        &[
            "pub", "human", "hi there", "-H", "K:v", "--reply", "back", "--server", &url,
        ],
        b"",
    ));
    let out = sub.finish();
    assert_ok(&out);
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert!(lines[0].starts_with("[#1] human (shard "), "{lines:?}");
    assert!(lines[0].ends_with(", priority 0, reply back)"), "{lines:?}");
    assert_eq!(lines[1..], ["K: v", "hi there"]);
    server.shutdown();
}

#[test]
fn req_gets_the_answer_of_reply() {
    let server = start_broker();
    let url = url(&server);
    let mut reply = Background::spawn(&[
        "reply",
        "svc.time",
        "it is now",
        "--count",
        "2",
        "--json",
        "--server",
        &url,
    ]);
    reply.wait_for("tern: answering requests on svc.time");

    let out = run(&["req", "svc.time", "what time?", "--server", &url], b"");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "it is now\n");
    let out = run(
        &[
            "req", "svc.time", "again?", "--json", "-H", "K:v", "--server", &url,
        ],
        b"",
    );
    assert_ok(&out);
    let answer = &json_lines(&out)[0];
    assert_eq!(answer["payload"], "it is now");
    assert!(answer["subject"].as_str().unwrap().starts_with("_INBOX."));

    let out = reply.finish();
    assert_ok(&out);
    let requests = json_lines(&out);
    let asked: Vec<&str> = requests
        .iter()
        .map(|r| r["payload"].as_str().unwrap())
        .collect();
    assert_eq!(asked, ["what time?", "again?"]);
    assert!(requests
        .iter()
        .all(|r| r["reply"].as_str().unwrap().starts_with("_INBOX.")));
    assert_eq!(requests[1]["headers"]["K"], serde_json::json!(["v"]));
    server.shutdown();
}

#[test]
fn sub_accepts_the_catch_up_options() {
    let server = start_broker();
    let url = url(&server);
    let mut subs: Vec<Background> = [
        vec!["--last", "5"],
        vec!["--since", "5m"],
        vec!["--since", "2024-05-01T12:00:00Z"],
        vec!["--from-seq", "1"],
        vec!["--queue", "g"],
    ]
    .into_iter()
    .map(|extra| {
        let mut args = vec!["sub", "cu", "--count", "1", "--json", "--server", &url];
        args.extend(extra);
        let mut b = Background::spawn(&args);
        b.wait_for("subscribed");
        b
    })
    .collect();
    assert_ok(&run(&["pub", "cu", "live", "--server", &url], b""));
    for sub in subs.drain(..) {
        let out = sub.finish();
        assert_ok(&out);
        assert_eq!(json_lines(&out)[0]["payload"], "live");
    }
    // Only one start at a time.
    let out = run(
        &[
            "sub", "cu", "--last", "1", "--since", "1m", "--server", &url,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    server.shutdown();
}

/// With a broker that stores, the catch-up options replay what they say, as a script
/// would use them.
#[test]
fn sub_catches_up_from_the_log() {
    let dir = std::env::temp_dir().join(format!("tern-cli-catchup-{}", std::process::id()));
    let server = start_storing_broker(&dir);
    let url = url(&server);
    assert_ok(&run(
        &["pub", "hist", "--server", &url],
        b"one\ntwo\nthree\n",
    ));
    let payloads = |extra: &[&str], n: &str| -> Vec<String> {
        let mut args = vec!["sub", "hist", "--count", n, "--json", "--server", &url];
        args.extend_from_slice(extra);
        let out = run(&args, b"");
        assert_ok(&out);
        json_lines(&out)
            .iter()
            .map(|m| m["payload"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(payloads(&["--last", "2"], "2"), ["two", "three"]);
    assert_eq!(payloads(&["--from-seq", "2"], "2"), ["two", "three"]);
    assert_eq!(payloads(&["--since", "1m"], "3"), ["one", "two", "three"]);
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn errors_exit_non_zero_with_a_clear_message() {
    // A port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("127.0.0.1:{port}");
    for args in [
        vec!["pub", "a", "x", "--server", &nowhere],
        vec!["sub", "a", "--server", &nowhere],
        vec!["req", "a", "x", "--server", &nowhere],
        vec!["reply", "a", "x", "--server", &nowhere],
    ] {
        let out = run(&args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("tern: cannot connect to 127.0.0.1:"),
            "{args:?}: {err}"
        );
        assert!(err.contains("refused"), "{args:?}: {err}");
    }
    let out = run(&["pub", "a", "x", "--server", "nats://127.0.0.1:4222"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid server URL"),
        "{}",
        text(&out.stderr)
    );

    let server = start_broker();
    let url = url(&server);
    let out = run(
        &[
            "req",
            "nobody.home",
            "x",
            "--timeout",
            "100ms",
            "--server",
            &url,
        ],
        b"",
    );
    // Nobody subscribes: the broker says so at once (no-responders), well before the
    // timeout.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no responders for `nobody.home`"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["pub", "a.*", "x", "--server", &url], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid subject `a.*`"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["pub", "a", "x", "--priority", "8", "--server", &url], b"");
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    server.shutdown();
}

//! `tern` over TLS, run as a script would run it: the built binary against a broker
//! started in this process that serves TLS on its binary port (tern-client's
//! `tests/common/tls.rs`, certificates made by the test), with the `--tls*` options of
//! every command that connects, and the errors a wrong CA, a missing client certificate
//! or a bad file give on stderr.

#[path = "../../rust/tests/common/tls.rs"]
mod tls_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tls_support::{Pki, ServerTls, TlsBroker};

/// The longest any step waits.
const WAIT: Duration = Duration::from_secs(20);

fn tern(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args);
    cmd
}

/// A `tern` process; killed if the test ends first.
struct Running {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Running {
    fn spawn(args: &[&str], stdin: &[u8]) -> Running {
        let mut child = tern(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
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
        Running {
            child: Some(child),
            stderr: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits for a stderr line containing `marker`.
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
        let mut lines = std::mem::take(&mut self.stderr_seen);
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        Output {
            status,
            stdout,
            stderr: lines.join("\n").into_bytes(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Running::spawn(args, b"").finish()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// Exit status 1 with `needle` in the one-line error on stderr.
fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("tern: "), "{stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `base` followed by `tls`, as the `&str`s `tern` takes.
fn joined<'a>(base: &[&'a str], tls: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(tls).copied().collect()
}

#[test]
fn sub_pub_req_and_reply_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::requiring_client_certs(&pki));
    let url = server.url();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.alice_cert), path(&pki.alice_key));
    let tls = [
        "--server",
        &url,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];

    let mut sub = Running::spawn(&joined(&["sub", "secure.>", "--count", "2"], &tls), b"");
    sub.wait_for("subscribed");
    let out = Running::spawn(&joined(&["pub", "secure.lines"], &tls), b"one\ntwo\n").finish();
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains("published 2 messages"),
        "{}",
        text(&out.stderr)
    );
    let out = sub.finish();
    assert_ok(&out);
    let got = text(&out.stdout);
    assert!(got.contains("one") && got.contains("two"), "{got}");

    let mut reply = Running::spawn(
        &joined(&["reply", "secure.time", "noon", "--count", "1"], &tls),
        b"",
    );
    reply.wait_for("answering requests");
    let out = run(&joined(&["req", "secure.time", "when?"], &tls));
    assert_ok(&out);
    assert!(text(&out.stdout).contains("noon"), "{}", text(&out.stdout));
    assert_ok(&reply.finish());
}

#[test]
fn tls_and_the_server_name_apply_to_a_tern_url() {
    let pki = Pki::new();
    // A certificate for tern.test only, reached by IP address.
    let server = TlsBroker::start(ServerTls::elsewhere(&pki));
    let url = server.url().replace("tls://", "tern://");
    let ca = path(&pki.ca);
    let out = run(&[
        "pub",
        "renamed",
        "hello",
        "--server",
        &url,
        "--tls",
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "tern.test",
    ]);
    assert_ok(&out);
    // Without the override, the name check fails and says what to do.
    let out = run(&["pub", "renamed", "hello", "--server", &url, "--tls-ca", &ca]);
    assert_fails_with(&out, "not valid for name");
    assert_fails_with(&out, "set the server name");
}

#[test]
fn trust_and_client_certificate_failures_are_one_line_reasons() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::requiring_client_certs(&pki));
    let url = server.url();
    let out = run(&[
        "pub",
        "x",
        "y",
        "--server",
        &url,
        "--tls-ca",
        &path(&pki.stranger_ca),
    ]);
    assert_fails_with(&out, "UnknownIssuer");
    assert_fails_with(&out, "not signed by a trusted CA");

    let out = run(&[
        "pub",
        "x",
        "y",
        "--server",
        &url,
        "--tls-ca",
        &path(&pki.ca),
    ]);
    assert_fails_with(&out, "requires a client certificate");

    let out = run(&["sub", "x", "--server", &url, "--tls-ca", &path(&pki.ca)]);
    assert_fails_with(&out, "requires a client certificate");
}

#[test]
fn bad_tls_files_are_named() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    let url = server.url();
    let key = path(&pki.server_key);
    let out = run(&["req", "x", "y", "--server", &url, "--tls-ca", &key]);
    assert_fails_with(&out, &format!("{key}: no CERTIFICATE section"));
    let missing = path(&pki.dir.0.join("nope.pem"));
    let out = run(&["pub", "x", "y", "--server", &url, "--tls-ca", &missing]);
    assert_fails_with(&out, &format!("{missing}: cannot read"));
}

#[test]
fn a_client_certificate_needs_its_key() {
    let out = run(&["pub", "x", "y", "--tls-cert", "c.pem"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--tls-key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_command_that_connects_documents_the_tls_options() {
    for command in ["pub", "sub", "req", "reply"] {
        let out = run(&[command, "--help"]);
        assert_ok(&out);
        let help = text(&out.stdout);
        for option in [
            "--tls ",
            "--tls-ca <FILE>",
            "--tls-cert <FILE>",
            "--tls-key <FILE>",
            "--tls-server-name <NAME>",
            "tls://host:port",
        ] {
            assert!(help.contains(option), "{command}: no `{option}` in\n{help}");
        }
    }
}

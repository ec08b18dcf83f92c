//! `tern` with credentials, run as a script would run it: the built binary against
//! tern-client's scripted fake broker (`tests/common/mod.rs`, a real TCP listener), which
//! checks what the `--creds`, `--user` and `--pass` options put in `HELLO`, challenges the
//! nkey, and refuses the connection as a broker refusing the credentials does.

#[path = "../../rust/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::FakeServer;
use tern_protocol::binary::{Challenge, ClientFrame, ErrorCode, ErrorFrame, ServerFrame};

/// The longest any step waits.
const WAIT: Duration = Duration::from_secs(20);

/// A test key pair (the protocol vectors' seed of 32 zero bytes).
const SEED: &str = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
const PUBLIC: &str = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";

/// Runs `tern` with `args` in a thread; its output within [`WAIT`].
fn run(args: &[&str]) -> mpsc::Receiver<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().expect("run tern"));
    });
    rx
}

#[test]
fn the_credentials_reach_hello_and_a_refusal_is_reported() {
    let dir = std::env::temp_dir().join(format!("tern-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = dir.join("svc.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0.eyJ1.c2ln\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let server = FakeServer::bind();
    let url = server.url();
    let creds_arg = creds.display().to_string();
    let output = run(&[
        "pub",
        "a.b",
        "hi",
        "--server",
        &url,
        "--creds",
        &creds_arg,
        "--user",
        "alice",
        "--pass",
        "pw-s3cret",
    ]);

    let mut conn = server.accept();
    let hello = conn.read_hello();
    assert_eq!(hello.nkey.as_deref(), Some(PUBLIC.as_bytes()));
    assert_eq!(hello.auth_token.as_deref(), Some(&b"eyJ0.eyJ1.c2ln"[..]));
    assert_eq!(hello.user.as_deref(), Some(&b"alice"[..]));
    assert_eq!(hello.pass.as_deref(), Some(&b"pw-s3cret"[..]));
    conn.send(ServerFrame::Challenge(Challenge {
        nonce: Bytes::from_static(b"abc"),
    }));
    match conn.recv() {
        ClientFrame::Auth(a) => assert!(a.signature.is_some()),
        other => panic!("expected AUTH, got {other:?}"),
    }
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::AuthorizationViolation,
        fatal: true,
        sid: None,
        message: Bytes::from_static(b"Authorization Violation"),
    }));

    let out = output.recv_timeout(WAIT).expect("tern exits once refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AuthorizationViolation") && stderr.contains("Authorization Violation"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret") && !stderr.contains(SEED),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_password_without_a_user_is_a_usage_error() {
    let out = run(&["sub", "a.b", "--pass", "pw"])
        .recv_timeout(WAIT)
        .expect("tern exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--user"), "{stderr}");
}

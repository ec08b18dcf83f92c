//! Authentication in the handshake, against a scripted fake broker on a real TCP listener:
//! the credentials `HELLO` carries, the nkey challenge (the fake verifies the signature
//! with `nkeys`, as a server would), refusals, token refreshes and reconnections.

mod common;

use std::thread;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::{wait_event, FakeConn, FakeServer};
use nkeys::KeyPair;
use tern_client::{Client, ClientBuilder, Error, ErrorCode, Event, ReconnectPolicy};
use tern_protocol::binary::{Challenge, ClientFrame, ErrorFrame, Hello, ServerFrame};

/// A user seed and its public key (the pair of the protocol's test vectors).
const SEED: &str = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
const PUBLIC: &str = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";
const NONCE: &[u8] = b"nonce-6Xq0vE1r9w";

fn fast() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_millis(5), Duration::from_millis(20))
}

/// The client connecting in a thread, so the test can play the server.
fn connect_in_thread(
    server: &FakeServer,
    builder: ClientBuilder,
) -> thread::JoinHandle<Result<Client, Error>> {
    let url = server.url();
    thread::spawn(move || builder.connect(&url))
}

/// Plays the server's side of the nkey handshake up to the client's `AUTH`: reads the
/// preface and `HELLO`, sends `CHALLENGE`, reads `AUTH` and verifies its signature against
/// the public key `HELLO` carried, as a server does. Returns the `HELLO`.
fn challenge(conn: &mut FakeConn) -> Hello {
    let hello = conn.read_hello();
    let nkey = hello.nkey.clone().expect("HELLO carries an nkey");
    conn.send(ServerFrame::Challenge(Challenge {
        nonce: Bytes::from_static(NONCE),
    }));
    let auth = match conn.recv() {
        ClientFrame::Auth(a) => a,
        other => panic!("expected AUTH, got {other:?}"),
    };
    assert_eq!(auth.token, None, "the answer to CHALLENGE carries no token");
    let signature = auth.signature.expect("AUTH carries a signature");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&signature)
        .expect("the signature is base64url without padding");
    KeyPair::from_public_key(std::str::from_utf8(&nkey).unwrap())
        .unwrap()
        .verify(NONCE, &raw)
        .expect("the signature verifies against the HELLO's nkey");
    hello
}

#[test]
fn nkey_handshake_signs_the_challenge_then_takes_welcome() {
    let server = FakeServer::bind();
    let client = connect_in_thread(
        &server,
        Client::builder()
            .nkey_seed(SEED)
            .token("jwt-1")
            .user_password("alice", "pw"),
    );
    let mut conn = server.accept();
    let hello = challenge(&mut conn);
    conn.send(ServerFrame::Welcome(FakeConn::welcome(9)));
    let client = client.join().unwrap().unwrap();
    assert_eq!(hello.nkey.as_deref(), Some(PUBLIC.as_bytes()));
    assert_eq!(hello.auth_token.as_deref(), Some(&b"jwt-1"[..]));
    assert_eq!(hello.user.as_deref(), Some(&b"alice"[..]));
    assert_eq!(hello.pass.as_deref(), Some(&b"pw"[..]));
    assert_eq!(client.server_info().unwrap().log_epoch, 9);
}

#[test]
fn an_authorization_violation_after_auth_fails_connect_with_that_code() {
    let server = FakeServer::bind();
    let client = connect_in_thread(&server, Client::builder().nkey_seed(SEED));
    let mut conn = server.accept();
    challenge(&mut conn);
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::AuthorizationViolation,
        fatal: true,
        sid: None,
        message: Bytes::from_static(b"Authorization Violation"),
    }));
    match client.join().unwrap() {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::AuthorizationViolation);
            assert_eq!(message, "Authorization Violation");
        }
        other => panic!("expected the server's error, got {:?}", other.map(|_| ())),
    }
    // The first connection is not retried: nothing connects again.
    assert!(server.try_accept(Duration::from_millis(200)).is_none());
}

#[test]
fn a_challenge_to_a_client_without_an_nkey_fails_connect() {
    let server = FakeServer::bind();
    let client = connect_in_thread(&server, Client::builder());
    let mut conn = server.accept();
    let hello = conn.read_hello();
    assert_eq!(hello.nkey, None);
    conn.send(ServerFrame::Challenge(Challenge {
        nonce: Bytes::from_static(NONCE),
    }));
    match client.join().unwrap() {
        Err(Error::Protocol(text)) => assert!(text.contains("no nkey"), "{text}"),
        other => panic!("expected a protocol error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_silent_server_after_hello_times_the_handshake_out() {
    let server = FakeServer::bind();
    let client = connect_in_thread(
        &server,
        Client::builder()
            .nkey_seed(SEED)
            .connect_timeout(Duration::from_millis(300)),
    );
    let mut conn = server.accept();
    conn.read_hello();
    // No CHALLENGE, no WELCOME: the connect deadline covers the whole handshake.
    match client.join().unwrap() {
        Err(Error::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut)
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_refreshed_token_is_sent_now_and_on_every_reconnection() {
    let server = FakeServer::bind();
    let client = connect_in_thread(
        &server,
        Client::builder()
            .nkey_seed(SEED)
            .token("jwt-1")
            .reconnect(fast()),
    );
    let mut conn = server.accept();
    let hello = challenge(&mut conn);
    assert_eq!(hello.auth_token.as_deref(), Some(&b"jwt-1"[..]));
    conn.send(ServerFrame::Welcome(FakeConn::welcome(1)));
    let client = client.join().unwrap().unwrap();
    let events = client.events();

    client.refresh_token("jwt-2").unwrap();
    match conn.recv_answering_pings() {
        ClientFrame::Auth(a) => {
            assert_eq!(a.token.as_deref(), Some(&b"jwt-2"[..]));
            assert_eq!(a.signature, None);
        }
        other => panic!("expected AUTH, got {other:?}"),
    }

    // The server ends the connection as it would an expired token.
    conn.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::AuthenticationExpired,
        fatal: true,
        sid: None,
        message: Bytes::from_static(b"authentication expired"),
    }));
    conn.close();
    wait_event(&events, |e| match e {
        Event::Disconnected { .. } => Some(()),
        _ => None,
    });
    // The reconnection carries the same credentials, with the latest token, and is
    // challenged again.
    let mut second = server.accept();
    let hello = challenge(&mut second);
    assert_eq!(hello.auth_token.as_deref(), Some(&b"jwt-2"[..]));
    assert_eq!(hello.nkey.as_deref(), Some(PUBLIC.as_bytes()));
    second.send(ServerFrame::Welcome(FakeConn::welcome(1)));
    wait_event(&events, |e| match e {
        Event::Reconnected(_) => Some(()),
        _ => None,
    });

    // A refresh while disconnected is in the next HELLO, and in an AUTH after its WELCOME
    // (for a HELLO that was built before the refresh).
    second.close();
    wait_event(&events, |e| match e {
        Event::Disconnected { .. } => Some(()),
        _ => None,
    });
    client.refresh_token("jwt-3").unwrap();
    let mut third = server.accept();
    let hello = challenge(&mut third);
    assert_eq!(hello.auth_token.as_deref(), Some(&b"jwt-3"[..]));
    third.send(ServerFrame::Welcome(FakeConn::welcome(1)));
    match third.recv_answering_pings() {
        ClientFrame::Auth(a) => assert_eq!(a.token.as_deref(), Some(&b"jwt-3"[..])),
        other => panic!("expected AUTH, got {other:?}"),
    }
    client.close();
    assert!(matches!(client.refresh_token("jwt-4"), Err(Error::Closed)));
}

#[test]
fn an_authorization_violation_on_reconnect_is_retried_with_backoff() {
    let server = FakeServer::bind();
    let client = connect_in_thread(&server, Client::builder().token("old").reconnect(fast()));
    let mut conn = server.accept();
    conn.handshake(1);
    let client = client.join().unwrap().unwrap();
    let events = client.events();
    conn.close();
    let mut refused = server.accept();
    refused.read_hello();
    refused.send(ServerFrame::Error(ErrorFrame {
        code: ErrorCode::AuthorizationViolation,
        fatal: true,
        sid: None,
        message: Bytes::from_static(b"Authorization Violation"),
    }));
    let (attempt, error) = wait_event(&events, |e| match e {
        Event::ReconnectFailed { attempt, error, .. } => Some((*attempt, error.clone())),
        _ => None,
    });
    assert_eq!(attempt, 1);
    assert!(error.contains("Authorization Violation"), "{error}");
    // The next attempt comes after the policy's delay, counted as a failure (so the delays
    // grow, and a policy with a maximum of attempts gives up).
    let mut again = server.accept();
    again.handshake(1);
    wait_event(&events, |e| match e {
        Event::Reconnected(_) => Some(()),
        _ => None,
    });
}

#[test]
fn a_creds_file_gives_the_nkey_and_its_jwt_as_the_token() {
    let dir = std::env::temp_dir().join(format!("tern-client-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("user.creds");
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0.eyJ1.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let server = FakeServer::bind();
    let client = connect_in_thread(&server, Client::builder().credentials_file(&path));
    let mut conn = server.accept();
    let hello = challenge(&mut conn);
    conn.send(ServerFrame::Welcome(FakeConn::welcome(1)));
    client.join().unwrap().unwrap();
    assert_eq!(hello.nkey.as_deref(), Some(PUBLIC.as_bytes()));
    assert_eq!(hello.auth_token.as_deref(), Some(&b"eyJ0.eyJ1.c2ln"[..]));

    // A file without a seed fails connect before any connection, naming the file.
    let no_seed = dir.join("no-seed.creds");
    std::fs::write(&no_seed, "nothing here\n").unwrap();
    match Client::builder()
        .credentials_file(&no_seed)
        .connect(&server.url())
    {
        Err(e @ Error::Credentials(_)) => assert!(e.to_string().contains("no-seed.creds"), "{e}"),
        other => panic!("expected a credentials error, got {:?}", other.map(|_| ())),
    }
    assert!(server.try_accept(Duration::from_millis(100)).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

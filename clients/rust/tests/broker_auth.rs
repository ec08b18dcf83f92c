//! The client against the real broker with authentication on, over the binary port: a
//! token, a JWT that expires unless refreshed (`AUTH`), a user with a password (plain and bcrypt, the latter checked on the broker's
//! checker thread), an nkey answering the broker's `CHALLENGE`, wrong credentials refused
//! with `AuthorizationViolation`, and permissions: a refused acknowledged publish, a
//! refused subscription, and a wildcard subscription from which a denied subject is
//! withheld, live and in a catch-up; a queue group and a reserved reply subject refused,
//! and a service that may answer each request it gets once (`allow_responses`).

mod common;

use std::time::Duration;

use base64::Engine as _;

use common::{temp_dir, wait_event, TempDir, WAIT};
use tern_broker::Server;
use tern_client::{
    Client, ClientBuilder, DisconnectReason, Error, ErrorCode, Event, PublishOptions,
    ReconnectPolicy, StartFrom,
};

/// A broker with this config file text, storing in a fresh directory.
fn broker(config: &str) -> (Server, TempDir) {
    let dir = temp_dir("auth");
    let file = dir.join("ternd.toml");
    std::fs::write(&file, config).unwrap();
    let data = dir.join("data");
    let server = common::broker::start(
        "127.0.0.1:0",
        &[
            "--log-size",
            "4MiB",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    (server, dir)
}

fn url(server: &Server) -> String {
    format!("tern://{}", server.binary_addr().unwrap())
}

fn refused(result: Result<Client, Error>) -> (ErrorCode, String) {
    match result {
        Err(Error::Server { code, message }) => (code, message),
        Err(other) => panic!("expected the server's refusal, got {other}"),
        Ok(_) => panic!("the credentials were accepted"),
    }
}

/// A seed and its public key, as the protocol's test vectors use them.
const SEED: &str = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
const PUBLIC: &str = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";

#[test]
fn token_password_bcrypt_and_nkey_over_the_binary_port() {
    let hash = bcrypt::hash("b0b", 4).unwrap();
    let (server, _dir) = broker(&format!(
        "[[users]]\nuser = \"alice\"\npassword = \"a\"\n\n\
         [[users]]\nuser = \"bob\"\npassword = \"{hash}\"\n\n\
         [[users]]\nnkey = \"{PUBLIC}\"\n"
    ));
    let connect = |b: ClientBuilder| b.connect(&url(&server));
    let alice = connect(Client::builder().user_password("alice", "a")).expect("alice");
    let bob = connect(Client::builder().user_password("bob", "b0b")).expect("bob, bcrypt");
    let carol = connect(Client::builder().nkey_seed(SEED)).expect("carol, nkey");
    let sub = bob.subscribe("greet").unwrap();
    bob.flush(WAIT).unwrap();
    alice.publish("greet", "from alice").unwrap();
    carol.publish("greet", "from carol").unwrap();
    for _ in 0..2 {
        sub.recv_timeout(WAIT).unwrap();
    }

    for wrong in [
        Client::builder().user_password("bob", "nope"),
        Client::builder().user_password("alice", "nope"),
        Client::builder().user_password("nobody", "x"),
        Client::builder(),
        Client::builder().nkey_seed(&nkeys::KeyPair::new_user().seed().unwrap()),
    ] {
        let (code, message) = refused(connect(wrong));
        assert_eq!(code, ErrorCode::AuthorizationViolation);
        assert_eq!(message, "Authorization Violation");
    }
    let totals = server.totals();
    assert_eq!(totals.auth_accepted, 3, "{totals:?}");
}

#[test]
fn permissions_refuse_frames_and_withhold_denied_subjects() {
    let (server, _dir) = broker(
        r#"
[[users]]
user = "alice"
password = "a"
[users.permissions]
publish = ["orders.>"]
subscribe = { allow = ["orders.*"], deny = ["orders.secret"] }

[[users]]
user = "bob"
password = "b"
"#,
    );
    let alice = Client::builder()
        .user_password("alice", "a")
        .connect(&url(&server))
        .unwrap();
    let bob = Client::builder()
        .user_password("bob", "b")
        .connect(&url(&server))
        .unwrap();
    bob.publish("orders.secret", "early secret").unwrap();
    bob.publish("orders.new", "early").unwrap();
    bob.flush(WAIT).unwrap();

    match alice.publish_acked("billing.x", "x") {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::PermissionViolation);
            assert_eq!(
                message,
                r#"Permissions Violation for Publish to "billing.x""#
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    let forbidden = alice.subscribe("billing.>").unwrap();
    match forbidden.recv_timeout(WAIT) {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::PermissionViolation);
            assert_eq!(
                message,
                r#"Permissions Violation for Subscription to "billing.>""#
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // A catch-up from the start, then live: the denied subject never arrives.
    let orders = alice
        .subscribe_builder("orders.*")
        .start(StartFrom::Last(10))
        .subscribe()
        .unwrap();
    alice.flush(WAIT).unwrap();
    bob.publish("orders.secret", "late secret").unwrap();
    bob.publish("orders.new", "late").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = orders.recv_timeout(WAIT).unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    assert_eq!(got, ["early", "late"]);
    assert!(matches!(
        orders.recv_timeout(Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    // Still connected, and allowed publishes are acknowledged.
    alice.publish_acked("orders.new", "mine").unwrap();
    let totals = server.totals();
    assert_eq!(totals.deliveries_denied, 2, "{totals:?}");
}

#[test]
fn a_token_over_the_binary_port() {
    let (server, _dir) = broker("auth_token = \"t0k\"\n");
    let client = Client::builder()
        .token("t0k")
        .connect(&url(&server))
        .expect("the right token");
    client.publish_acked("a", "x").unwrap();
    let (code, _) = refused(Client::builder().token("nope").connect(&url(&server)));
    assert_eq!(code, ErrorCode::AuthorizationViolation);
}

#[test]
fn queue_reply_and_allow_responses_over_the_binary_port() {
    let (server, _dir) = broker(
        r#"
[[users]]
user = "svc"
password = "s"
[users.permissions]
subscribe = ["svc.>", "jobs.* workers"]
allow_responses = true

[[users]]
user = "client"
password = "c"
"#,
    );
    let svc = Client::builder()
        .user_password("svc", "s")
        .connect(&url(&server))
        .unwrap();
    let client = Client::builder()
        .user_password("client", "c")
        .connect(&url(&server))
        .unwrap();
    let refused_sub = |sub: tern_client::Subscription| match sub.recv_timeout(WAIT) {
        Err(Error::Server { code, message }) => (code, message),
        other => panic!("expected the refusal, got {other:?}"),
    };
    assert_eq!(
        refused_sub(svc.queue_subscribe("jobs.a", "others").unwrap()),
        (
            ErrorCode::PermissionViolation,
            r#"Permissions Violation for Subscription to "jobs.a" using queue "others""#.into()
        )
    );
    let _workers = svc.queue_subscribe("jobs.a", "workers").unwrap();
    match client.publish_acked_with("x", "y", &PublishOptions::new().reply("$TERN.REPLAY")) {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::PermissionViolation);
            assert_eq!(
                message,
                r#"Permissions Violation for Publish with Reply of "$TERN.REPLAY""#
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // The service may answer each request once, and publish nowhere else.
    let requests = svc.subscribe("svc.echo").unwrap();
    svc.flush(WAIT).unwrap();
    let answered = std::thread::spawn(move || {
        let req = requests.recv_timeout(WAIT).unwrap();
        let reply = req.reply.clone().expect("a request");
        let answer = svc.publish_acked(&reply, "pong");
        let again = svc.publish_acked(&reply, "again");
        let elsewhere = svc.publish_acked("elsewhere", "x");
        (answer, again, elsewhere)
    });
    let answer = client.request("svc.echo", "ping", WAIT).unwrap();
    assert_eq!(&answer.payload[..], b"pong");
    let (answer, again, elsewhere) = answered.join().unwrap();
    answer.expect("the first answer is allowed");
    for refused in [again, elsewhere] {
        assert!(
            matches!(
                refused,
                Err(Error::Refused {
                    code: ErrorCode::PermissionViolation,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
}

/// An HS256 JWT for `sub`, expiring `secs` from now, signed with `secret`.
fn jwt(secret: &str, sub: &str, secs: u64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(format!(r#"{{"sub":"{sub}","exp":{exp}}}"#));
    let input = format!("{head}.{body}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = b64.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    format!("{input}.{sig}")
}

#[test]
fn a_jwt_connection_is_closed_at_expiry_unless_refreshed() {
    let secret = "binary-port-test-secret";
    let (server, _dir) = broker(&format!(
        "[jwt]\nhs256_secret = \"{secret}\"\nleeway = \"0s\"\n"
    ));
    let slow = ReconnectPolicy::new(Duration::from_secs(60), Duration::from_secs(60));
    let lapsing = Client::builder()
        .token(jwt(secret, "dana", 2))
        .reconnect(slow)
        .connect(&url(&server))
        .unwrap();
    let refreshed = Client::builder()
        .token(jwt(secret, "dana", 2))
        .connect(&url(&server))
        .unwrap();
    refreshed.refresh_token(jwt(secret, "dana", 3600)).unwrap();
    refreshed.flush(WAIT).unwrap();
    let reason = wait_event(&lapsing.events(), |e| match e {
        Event::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        reason,
        DisconnectReason::ServerError {
            code: ErrorCode::AuthenticationExpired,
            message: "User Authentication Expired".into(),
        }
    );
    refreshed.publish_acked("still.here", "yes").unwrap();
    assert!(refreshed.is_connected());
    let (code, _) = refused(
        Client::builder()
            .token(jwt("another-secret", "dana", 3600))
            .connect(&url(&server)),
    );
    assert_eq!(code, ErrorCode::AuthorizationViolation);
}

//! Authentication and permissions on the text port, as NATS clients see them: the real
//! ternd, async-nats (token, user and password, bcrypt, nkey, a JWT) and raw connections
//! for nats-server's exact words (`-ERR 'Authorization Violation'`, `'Authentication
//! Timeout'`, the three `Permissions Violation` forms). Wrong credentials, an expired
//! token and a refreshed one, permissions on publish, subscribe, queue groups, wildcards
//! over a denied subject, `allow_responses`, catch-up through `$TERN.REPLAY`, a reload on
//! SIGHUP that takes a permission away, and the monitor's bearer token. Each test writes
//! its own config file and keys; nothing secret is checked in.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ConnectOptions;
use base64::Engine;
use futures::StreamExt;

use common::{temp_dir, ternd_exit, Broker, ConfigFile, RawClient, ReadEnd, WAIT};

/// Writes `text` as a config file in a fresh directory (removed when it is dropped).
fn config_file(text: &str) -> ConfigFile {
    ConfigFile::new("auth", text)
}

fn broker_with(file: &Path, extra: &[&str]) -> Broker {
    let path = file.to_str().unwrap();
    let mut args = vec!["--config", path, "--monitor", "127.0.0.1:0", "--no-store"];
    args.extend_from_slice(extra);
    Broker::with_args(&args)
}

/// A JWT signed with HS256 by `secret`, with these claims.
fn mint(secret: &[u8], claims: serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(claims.to_string());
    let input = format!("{head}.{body}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = b64.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    format!("{input}.{sig}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw text connection that sends `CONNECT` with `fields` (JSON members) and checks the
/// server answered `PONG` (accepted).
fn raw_login(broker: &Broker, fields: &str) -> RawClient {
    RawClient::connect_as(broker.addr(), fields)
}

/// Expects `-ERR 'text'` next, then the connection closed.
fn expect_closed_with(c: &mut RawClient, text: &str) {
    let (got, end) = c.read_to_close(WAIT);
    let want = format!("-ERR '{text}'\r\n");
    assert_eq!(String::from_utf8_lossy(&got), want, "{end:?}");
}

#[test]
fn a_token_is_required_before_anything_else() {
    let file = config_file("auth_token = \"s3cret\"\n");
    let broker = broker_with(&file, &["--auth-timeout", "1s"]);

    let mut c = RawClient::connect(broker.addr());
    assert_eq!(c.info["auth_required"], true, "{}", c.info);
    assert!(c.info.get("nonce").is_none(), "no nkey users, no nonce");
    // Anything before CONNECT is refused, as nats-server refuses it.
    c.send(b"SUB x 1\r\n");
    expect_closed_with(&mut c, "Authorization Violation");

    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"auth_token\":\"wrong\"}\r\nPING\r\n");
    expect_closed_with(&mut c, "Authorization Violation");

    // No CONNECT at all: closed at auth_timeout.
    let mut c = RawClient::connect(broker.addr());
    expect_closed_with(&mut c, "Authentication Timeout");

    let mut c = raw_login(&broker, "\"auth_token\":\"s3cret\"");
    c.send(b"SUB a 1\r\nPUB a 2\r\nhi\r\n");
    let m = c.read_msg(WAIT);
    assert_eq!(m.subject, "a");

    let varz = broker.varz_until(|v| v["auth_refused"]["not_connect_first"] == 1);
    assert_eq!(varz["auth_refused"]["not_connect_first"], 1, "{varz}");
    assert_eq!(varz["auth_refused"]["bad_token"], 1, "{varz}");
    assert_eq!(varz["handshake_timeouts"], 1, "{varz}");
    assert!(varz["auth_accepted"].as_u64().unwrap() >= 1, "{varz}");
    // The refusals are logged with the peer; the secret never is.
    let log = broker.stderr();
    assert!(!log.contains("s3cret") && !log.contains("wrong"), "{log}");
}

#[tokio::test]
async fn async_nats_with_token_password_bcrypt_and_nkey() {
    let hash = bcrypt::hash("b0b-pass", 4).unwrap();
    let pair = nkeys::KeyPair::new_user();
    let file = config_file(&format!(
        r#"
[[users]]
user = "alice"
password = "alice-pass"

[[users]]
user = "bob"
password = "{hash}"

[[users]]
nkey = "{}"
"#,
        pair.public_key()
    ));
    let broker = broker_with(&file, &[]);
    let info = RawClient::connect(broker.addr()).info;
    assert!(
        info["nonce"].as_str().is_some_and(|n| n.len() >= 11),
        "{info}"
    );

    let url = broker.url();
    let alice = ConnectOptions::with_user_and_password("alice".into(), "alice-pass".into())
        .connect(&url)
        .await
        .expect("alice, plain password");
    let bob = ConnectOptions::with_user_and_password("bob".into(), "b0b-pass".into())
        .connect(&url)
        .await
        .expect("bob, bcrypt");
    let carol = ConnectOptions::with_nkey(pair.seed().unwrap())
        .connect(&url)
        .await
        .expect("carol, nkey");
    let mut sub = bob.subscribe("greet").await.unwrap();
    // async-nats's flush only writes: the subscription reaches every shard a moment after,
    // so the others publish until it has heard from both.
    let mut heard = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while heard.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "heard only {heard:?}"
        );
        alice.publish("greet", "from alice".into()).await.unwrap();
        carol.publish("greet", "from carol".into()).await.unwrap();
        while let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.next()).await
        {
            heard.insert(String::from_utf8_lossy(&m.payload).into_owned());
        }
    }

    for options in [
        ConnectOptions::with_user_and_password("bob".into(), "wrong".into()),
        ConnectOptions::with_user_and_password("nobody".into(), "x".into()),
        ConnectOptions::with_nkey(nkeys::KeyPair::new_user().seed().unwrap()),
    ] {
        let refused = tokio::time::timeout(WAIT, options.connect(&url)).await;
        assert!(
            refused.map_or(true, |r| r.is_err()),
            "wrong credentials were accepted"
        );
    }
    let varz = broker.varz_until(|v| v["auth_refused"]["bad_password"].as_u64() >= Some(1));
    assert!(
        varz["auth_refused"]["bad_password"].as_u64() >= Some(1),
        "{varz}"
    );
    assert!(
        varz["auth_refused"]["unknown_user"].as_u64() >= Some(1),
        "{varz}"
    );

    // /connz shows who each connection is.
    let connz = broker.monitor_json_until("/connz", |v| {
        v["connections"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["authorized_user"] == "bob"))
    });
    let users: Vec<_> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["authorized_user"].as_str())
        .collect();
    assert!(
        users.contains(&"alice") && users.contains(&"bob"),
        "{connz}"
    );
    assert!(!connz.to_string().contains("alice-pass"), "{connz}");
}

/// alice may publish to orders.> and subscribe to orders.* (but not orders.secret) and
/// to jobs.* in queue group workers; bob may do everything.
const PERMISSIONS: &str = r#"
[[users]]
user = "alice"
password = "a"
[users.permissions.publish]
allow = ["orders.>", "$TERN.REPLAY"]
[users.permissions.subscribe]
allow = ["orders.*", "jobs.* workers", "_INBOX.>"]
deny = ["orders.secret"]

[[users]]
user = "bob"
password = "b"
"#;

#[test]
fn permissions_refuse_with_nats_server_words_and_keep_the_connection() {
    let file = config_file(PERMISSIONS);
    let broker = broker_with(&file, &[]);
    let mut alice = raw_login(&broker, r#""user":"alice","pass":"a""#);
    let mut bob = raw_login(&broker, r#""user":"bob","pass":"b""#);

    alice.send(b"PUB billing.x 1\r\nx\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Publish to \"billing.x\"'\r\n");
    alice.send(b"SUB billing.> 1\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Subscription to \"billing.>\"'\r\n");
    alice.send(b"SUB jobs.a other 2\r\n");
    alice.expect(
        b"-ERR 'Permissions Violation for Subscription to \"jobs.a\" using queue \"other\"'\r\n",
    );
    alice.send(b"SUB orders.secret 3\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Subscription to \"orders.secret\"'\r\n");
    alice.send(b"PUB orders.new $TERN.X 1\r\nx\r\n");
    alice.expect(b"-ERR 'Permissions Violation for Publish with Reply of \"$TERN.X\"'\r\n");
    // Still open, and what is allowed works.
    alice.send(b"SUB orders.* 4\r\nSUB jobs.a workers 5\r\n");
    alice.ping_pong();

    // A wildcard over a denied subject: allowed, but the denied subject never arrives.
    bob.send(
        b"PUB orders.secret 6\r\nhidden\r\nPUB orders.new 5\r\nshown\r\nPUB jobs.a 3\r\njob\r\n",
    );
    bob.ping_pong();
    let first = alice.read_msg(WAIT);
    assert_eq!(
        (first.subject.as_str(), &first.payload[..]),
        ("orders.new", &b"shown"[..])
    );
    let second = alice.read_msg(WAIT);
    assert_eq!(second.subject, "jobs.a");
    assert_eq!(
        alice.flush(),
        b"",
        "nothing else, orders.secret least of all"
    );

    let varz = broker.varz_until(|v| v["deliveries_denied"] == 1);
    assert_eq!(varz["deliveries_denied"], 1, "{varz}");
    assert_eq!(varz["permission_violations"]["publish"], 1, "{varz}");
    assert_eq!(varz["permission_violations"]["subscribe"], 3, "{varz}");
    assert_eq!(varz["permission_violations"]["reply"], 1, "{varz}");
}

#[test]
fn catch_up_obeys_the_subscribe_permissions() {
    let file = config_file(PERMISSIONS);
    let dir = temp_dir("auth-store");
    let data = dir.to_str().unwrap();
    let path = file.to_str().unwrap();
    let broker = Broker::with_args(&["--config", path, "--data-dir", data]);
    let mut bob = raw_login(&broker, r#""user":"bob","pass":"b","headers":true"#);
    bob.send(b"PUB orders.new 1\r\nx\r\n");
    bob.ping_pong();
    let mut alice = raw_login(&broker, r#""user":"alice","pass":"a","headers":true"#);
    alice.send(b"SUB _INBOX.r 1\r\n");
    // A filter it may not subscribe to, and one with a denied subject inside.
    for filter in ["billing.>", "orders.*"] {
        let body = format!("{{\"subject\":\"{filter}\",\"last\":10}}");
        alice.send(format!("PUB $TERN.REPLAY _INBOX.r {}\r\n{body}\r\n", body.len()).as_bytes());
        let m = alice.read_msg(WAIT);
        let headers = String::from_utf8_lossy(m.headers.as_deref().unwrap_or_default());
        assert!(headers.starts_with("NATS/1.0 403"), "{filter}: {headers}");
        assert!(headers.contains("Permissions Violation"), "{headers}");
    }
    // One it may subscribe to is served.
    let body = r#"{"subject":"orders.new","last":10}"#;
    alice.send(format!("PUB $TERN.REPLAY _INBOX.r {}\r\n{body}\r\n", body.len()).as_bytes());
    let m = alice.read_msg(WAIT);
    let headers = String::from_utf8_lossy(m.headers.as_deref().unwrap_or_default()).into_owned();
    assert_eq!(&m.payload[..], b"x", "{headers}");
    assert!(headers.contains("orders.new"), "{headers}");
}

#[test]
fn allow_responses_lets_a_service_answer_each_request_once() {
    let file = config_file(
        r#"
[[users]]
user = "svc"
password = "s"
permissions = { subscribe = ["svc.>"], allow_responses = true }

[[users]]
user = "client"
password = "c"
"#,
    );
    let broker = broker_with(&file, &[]);
    let mut svc = raw_login(&broker, r#""user":"svc","pass":"s""#);
    let mut client = raw_login(&broker, r#""user":"client","pass":"c""#);
    svc.send(b"SUB svc.echo 1\r\n");
    svc.ping_pong();
    client.send(b"SUB _INBOX.1 9\r\nPUB svc.echo _INBOX.1 2\r\nhi\r\n");
    let req = svc.read_msg(WAIT);
    assert_eq!(req.reply.as_deref(), Some("_INBOX.1"));
    // Publishing anywhere else is refused: allow_responses alone allows only replies.
    svc.send(b"PUB other 1\r\nx\r\n");
    svc.expect(b"-ERR 'Permissions Violation for Publish to \"other\"'\r\n");
    svc.send(b"PUB _INBOX.1 3\r\nyes\r\n");
    svc.ping_pong();
    let reply = client.read_msg(WAIT);
    assert_eq!(&reply.payload[..], b"yes");
    // max 1: a second answer to the same request is refused.
    svc.send(b"PUB _INBOX.1 4\r\nmore\r\n");
    svc.expect(b"-ERR 'Permissions Violation for Publish to \"_INBOX.1\"'\r\n");
}

#[test]
fn jwt_tokens_carry_the_user_and_its_permissions_and_expire() {
    let secret = "jwt-shared-secret-for-tests";
    let file = config_file(&format!(
        "[jwt]\nhs256_secret = \"{secret}\"\nleeway = \"0s\"\n"
    ));
    let broker = broker_with(&file, &[]);
    let claims = |exp: u64| {
        serde_json::json!({
            "sub": "dana",
            "exp": exp,
            "tern": { "pub": { "allow": ["room.1"] }, "sub": { "allow": ["room.*"] } }
        })
    };
    let token = mint(secret.as_bytes(), claims(unix_now() + 3600));
    let mut c = raw_login(&broker, &format!("\"auth_token\":\"{token}\""));
    c.send(b"SUB room.* 1\r\nPUB room.1 2\r\nhi\r\n");
    assert_eq!(c.read_msg(WAIT).subject, "room.1");
    c.send(b"PUB room.2 1\r\nx\r\n");
    c.expect(b"-ERR 'Permissions Violation for Publish to \"room.2\"'\r\n");

    // Expired, signed by someone else, or tampered with: refused.
    let expired = mint(secret.as_bytes(), claims(unix_now() - 3600));
    let forged = mint(b"not-the-secret", claims(unix_now() + 3600));
    for bad in [expired, forged] {
        let mut c = RawClient::connect(broker.addr());
        c.send(format!("CONNECT {{\"auth_token\":\"{bad}\"}}\r\nPING\r\n").as_bytes());
        expect_closed_with(&mut c, "Authorization Violation");
    }

    // A token that expires while connected closes the connection, unless refreshed.
    let short = mint(secret.as_bytes(), claims(unix_now() + 2));
    let mut lapsing = raw_login(&broker, &format!("\"auth_token\":\"{short}\""));
    let mut refreshed = raw_login(&broker, &format!("\"auth_token\":\"{short}\""));
    let longer = mint(secret.as_bytes(), claims(unix_now() + 3600));
    refreshed.send(format!("CONNECT {{\"auth_token\":\"{longer}\"}}\r\nPING\r\n").as_bytes());
    refreshed.expect(b"PONG\r\n");
    expect_closed_with(&mut lapsing, "User Authentication Expired");
    refreshed.ping_pong();
    // A refresh for another user is refused.
    let other = mint(
        secret.as_bytes(),
        serde_json::json!({ "sub": "eve", "exp": unix_now() + 3600 }),
    );
    refreshed.send(format!("CONNECT {{\"auth_token\":\"{other}\"}}\r\n").as_bytes());
    expect_closed_with(&mut refreshed, "Authorization Violation");
}

#[test]
fn sighup_reloads_permissions_and_revokes_what_they_no_longer_allow() {
    let file = config_file(PERMISSIONS);
    let broker = broker_with(&file, &[]);
    let mut alice = raw_login(&broker, r#""user":"alice","pass":"a""#);
    alice.send(b"SUB orders.* 1\r\nSUB jobs.a workers 2\r\n");
    alice.ping_pong();
    std::fs::write(&file, PERMISSIONS.replace("\"orders.*\", ", "")).unwrap();
    broker.signal(libc::SIGHUP);
    alice.expect_within(
        b"-ERR 'Permissions Violation for Subscription to \"orders.*\"'\r\n",
        Duration::from_secs(5),
    );
    alice.ping_pong();
    // A user removed by the reload is closed.
    let mut bob = raw_login(&broker, r#""user":"bob","pass":"b""#);
    std::fs::write(&file, "[[users]]\nuser = \"alice\"\npassword = \"a\"\n").unwrap();
    broker.signal(libc::SIGHUP);
    let (got, end) = bob.read_to_close(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Authorization Violation'\r\n"
    );
    assert!(!matches!(end, ReadEnd::Timeout), "{end:?}");
    // A config that cannot be used keeps the rules in place.
    std::fs::write(&file, "[[users]]\nuser = \"alice\"\n").unwrap();
    broker.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    raw_login(&broker, r#""user":"alice","pass":"a""#);
}

/// `GET path` with an optional bearer token: (status, body).
fn monitor_get(broker: &Broker, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(broker.monitor_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_monitor_token_guards_everything_but_healthz() {
    let broker = Broker::with_args(&[
        "--monitor",
        "127.0.0.1:0",
        "--monitor-token",
        "m0n",
        "--no-store",
    ]);
    assert_eq!(monitor_get(&broker, "/varz", None).0, 401);
    assert_eq!(monitor_get(&broker, "/connz", Some("nope")).0, 401);
    assert_eq!(monitor_get(&broker, "/healthz", None).0, 200);
    let (status, body) = monitor_get(&broker, "/varz", Some("m0n"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"unauthorized\": 2"), "{body}");
    assert!(!body.contains("m0n\""), "the token is never shown: {body}");
}

#[test]
fn settings_that_cannot_work_stop_ternd_naming_them() {
    let cases = [
        // A bad filter: the file and its line.
        (
            "[[users]]\nuser = \"a\"\npassword = \"p\"\n\n[users.permissions]\npublish = [\"a..b\"]\n",
            "line 6",
        ),
        // A no_auth_user that is nobody.
        (
            "no_auth_user = \"ghost\"\n[[users]]\nuser = \"a\"\npassword = \"p\"\n",
            "ghost",
        ),
        // Not an nkey.
        ("[[users]]\nnkey = \"SUAAAA\"\n", "users[0].nkey"),
        // A JWT key file that is not there.
        (
            "[jwt]\npublic_key_file = \"/nonexistent/jwt.pem\"\n",
            "/nonexistent/jwt.pem",
        ),
    ];
    for (text, named) in cases {
        let file = config_file(text);
        let (status, stderr) = ternd_exit(&["--config", file.to_str().unwrap()], WAIT);
        assert!(!status.success(), "{text}");
        assert!(stderr.contains(named), "{text}: {stderr}");
    }
}

#[test]
fn an_open_port_off_loopback_without_authentication_is_warned_about() {
    let mut broker = Broker::with_args(&["--binary-listen", "0.0.0.0:0", "--no-store"]);
    broker.stop();
    let log = broker.stderr();
    assert!(log.contains("NO AUTHENTICATION"), "{log}");
    let file = config_file("auth_token = \"t\"\n");
    let mut guarded = broker_with(&file, &["--binary-listen", "0.0.0.0:0"]);
    guarded.stop();
    assert!(!guarded.stderr().contains("NO AUTHENTICATION"));
}

#[test]
fn repeated_failures_from_one_address_hold_it_back() {
    let file = config_file("auth_token = \"right\"\n");
    let broker = broker_with(
        &file,
        &[
            "--auth-failures-per-ip",
            "3",
            "--auth-failure-backoff",
            "2s",
        ],
    );
    for _ in 0..3 {
        let mut c = RawClient::connect(broker.addr());
        c.send(b"CONNECT {\"auth_token\":\"guess\"}\r\n");
        expect_closed_with(&mut c, "Authorization Violation");
    }
    // Held back: even the right token waits.
    let mut c = RawClient::connect(broker.addr());
    let (got, _) = c.read_to_close(WAIT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("-ERR 'too many failed authentications from this address, retry after"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(2100));
    raw_login(&broker, "\"auth_token\":\"right\"");
    let varz = broker.varz();
    assert_eq!(varz["connections_refused"]["auth_backoff"], 1, "{varz}");
}

/// Server errors an async-nats client reports, as lower-case texts.
fn error_events(
    options: ConnectOptions,
) -> (ConnectOptions, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string().to_lowercase());
            }
        }
    });
    (options, rx)
}

/// Waits for an error event containing `text`.
async fn expect_error(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, text: &str) {
    let want = text.to_lowercase();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no error with {text:?}"))
            .expect("the connection is gone");
        if got.contains(&want) {
            return;
        }
    }
}

#[tokio::test]
async fn async_nats_with_a_token() {
    let broker = Broker::with_args(&["--auth-token", "t0k", "--no-store"]);
    let client = ConnectOptions::with_token("t0k".into())
        .connect(broker.url())
        .await
        .expect("the right token");
    let mut sub = client.subscribe("t").await.unwrap();
    client.publish("t", "x".into()).await.unwrap();
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    let wrong = ConnectOptions::with_token("nope".into()).connect(broker.url());
    assert!(tokio::time::timeout(WAIT, wrong)
        .await
        .map_or(true, |r| r.is_err()));
}

#[tokio::test]
async fn async_nats_with_a_jwt_permissions_allow_responses_and_a_reload() {
    let secret = "async-nats-jwt-secret";
    let users = |svc_subscribe: &str| {
        format!(
            "[jwt]\nhs256_secret = \"{secret}\"\n\n\
             [[users]]\nuser = \"svc\"\npassword = \"s\"\n\
             permissions = {{ subscribe = [\"{svc_subscribe}\"], allow_responses = true }}\n\n\
             [[users]]\nuser = \"client\"\npassword = \"c\"\n"
        )
    };
    let file = config_file(&users("svc.>"));
    let broker = broker_with(&file, &[]);
    let url = broker.url();

    // A JWT that may publish to room.1 and subscribe to room.* only.
    let token = mint(
        secret.as_bytes(),
        serde_json::json!({
            "sub": "dana",
            "exp": unix_now() + 3600,
            "tern": { "pub": { "allow": ["room.1"] }, "sub": { "allow": ["room.*", "_INBOX.>"] } }
        }),
    );
    let (options, mut errors) = error_events(ConnectOptions::with_token(token));
    let dana = options.connect(&url).await.expect("a valid JWT");
    let mut room = dana.subscribe("room.*").await.unwrap();
    dana.publish("room.1", "hi".into()).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, room.next())
            .await
            .unwrap()
            .unwrap()
            .subject
            .as_str(),
        "room.1"
    );
    dana.publish("room.2", "x".into()).await.unwrap();
    expect_error(
        &mut errors,
        r#"Permissions Violation for Publish to "room.2""#,
    )
    .await;
    let _lobby = dana.subscribe("lobby").await.unwrap();
    expect_error(
        &mut errors,
        r#"Permissions Violation for Subscription to "lobby""#,
    )
    .await;
    let _queue = dana.queue_subscribe("lobby", "q".into()).await.unwrap();
    expect_error(
        &mut errors,
        r#"for Subscription to "lobby" using queue "q""#,
    )
    .await;
    dana.publish_with_reply("room.1", "$TERN.X", "x".into())
        .await
        .unwrap();
    expect_error(
        &mut errors,
        r#"Permissions Violation for Publish with Reply of "$TERN.X""#,
    )
    .await;

    // A service that may only answer the requests it gets.
    let (options, mut svc_errors) = error_events(ConnectOptions::with_user_and_password(
        "svc".into(),
        "s".into(),
    ));
    let svc = options.connect(&url).await.unwrap();
    let mut requests = svc.subscribe("svc.echo").await.unwrap();
    let responder = svc.clone();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            if let Some(reply) = req.reply {
                let _ = responder.publish(reply, req.payload).await;
            }
        }
    });
    svc.flush().await.unwrap();
    let client = ConnectOptions::with_user_and_password("client".into(), "c".into())
        .connect(&url)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        // The service's subscription reaches every shard a moment after its flush.
        match client.request("svc.echo", "ping".into()).await {
            Ok(answer) => break answer,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("no answer: {e}"),
        }
    };
    assert_eq!(&answer.payload[..], b"ping");

    // A reload that takes the service's subscription away: it is told, and stays connected.
    std::fs::write(&file, users("other")).unwrap();
    broker.signal(libc::SIGHUP);
    expect_error(
        &mut svc_errors,
        r#"Permissions Violation for Subscription to "svc.echo""#,
    )
    .await;
    assert_eq!(
        svc.connection_state(),
        async_nats::connection::State::Connected
    );
}

#[test]
fn a_reload_that_turns_authentication_on_closes_who_has_none() {
    let file = config_file("# no authentication yet\n");
    let broker = broker_with(&file, &[]);
    let mut early = RawClient::connect(broker.addr());
    early.ping_pong();
    std::fs::write(&file, "auth_token = \"now\"\n").unwrap();
    broker.signal(libc::SIGHUP);
    let (got, _) = early.read_to_close(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Authorization Violation'\r\n"
    );
    // And off again: a connection with a token goes on, allowed everything.
    let mut with_token = raw_login(&broker, "\"auth_token\":\"now\"");
    std::fs::write(&file, "# off\n").unwrap();
    broker.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    with_token.send(b"SUB x 1\r\nPUB x 1\r\ny\r\n");
    assert_eq!(with_token.read_msg(WAIT).subject, "x");
    let newcomer = RawClient::connect(broker.addr());
    assert!(
        newcomer.info.get("auth_required").is_none(),
        "{}",
        newcomer.info
    );
}

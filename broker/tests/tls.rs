//! TLS on every port, as real clients see it: async-nats over `tls://` verifying the server
//! (INFO in plain text first, as nats-server does it, and `handshake_first`), a client
//! certificate required and verified (none, or one from an unknown CA, refused), a
//! plain-text client on a TLS port, a handshake that never comes, the binary port from
//! its first byte, a certificate reloaded on SIGHUP while a connection stays open, and
//! files that cannot be used stopping ternd with an error naming them. Certificates are
//! made by each test (`common/pki.rs`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions};
use futures::StreamExt;

use common::pki::{Pair, Pki};
use common::{Broker, RawClient, ReadEnd, WAIT};

/// The longest any test here may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn tls_broker(pki: &Pki, extra: &[&str]) -> Broker {
    let mut args = pki.server_args();
    args.extend(["--monitor", "127.0.0.1:0", "--no-store"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Broker::with_args(&refs)
}

/// async-nats over TLS, trusting `ca`, presenting `client` if given.
async fn connect(
    broker: &Broker,
    ca: &std::path::Path,
    client: Option<&Pair>,
    tls_first: bool,
) -> Result<Client, async_nats::ConnectError> {
    let mut options = ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.to_path_buf());
    if let Some(c) = client {
        options = options.add_client_certificate(c.cert.clone(), c.key.clone());
    }
    if tls_first {
        options = options.tls_first();
    }
    let url = format!("tls://127.0.0.1:{}", broker.addr().port());
    tokio::time::timeout(WAIT, options.connect(url))
        .await
        .expect("connect did not finish in time")
}

/// A subscription, a publish and a request with its reply, over `client`.
async fn traffic(client: &Client) {
    let mut sub = client.subscribe("greet.*").await.unwrap();
    let mut service = client.subscribe("svc").await.unwrap();
    client.flush().await.unwrap();
    client.publish("greet.tls", "hello".into()).await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "greet.tls");
    assert_eq!(&m.payload[..], b"hello");
    let responder = client.clone();
    let answer = tokio::spawn(async move {
        let req = service.next().await.unwrap();
        let reply = req.reply.unwrap();
        responder.publish(reply, "pong".into()).await.unwrap();
    });
    let reply = tokio::time::timeout(WAIT, client.request("svc", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply.payload[..], b"pong");
    answer.await.unwrap();
}

fn failures(broker: &Broker, reason: &'static str, at_least: u64) -> u64 {
    let v = broker.varz_until(|v| v["transport_failures"][reason].as_u64() >= Some(at_least));
    v["transport_failures"][reason].as_u64().unwrap()
}

#[tokio::test]
async fn async_nats_over_tls_verifies_the_server_and_carries_traffic() {
    let pki = Pki::new("localhost");
    let broker = tls_broker(&pki, &[]);
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = connect(&broker, &pki.ca, None, false).await.unwrap();
        assert!(client.server_info().tls_required, "INFO says tls_required");
        traffic(&client).await;
        // A client that trusts another CA refuses the server.
        let other = Pki::new("other");
        let err = connect(&broker, &other.ca, None, false).await.err();
        assert!(err.is_some(), "a client with another CA must fail");
        let v = broker.varz_until(|v| v["tls_handshakes"].as_u64() >= Some(1));
        assert!(v["tls_handshakes"].as_u64() >= Some(1), "{v}");
    })
    .await
    .expect("test did not finish in time");
}

#[tokio::test]
async fn handshake_first_clients_get_info_after_the_handshake() {
    let pki = Pki::new("localhost");
    let broker = tls_broker(&pki, &["--tls-handshake-first"]);
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = connect(&broker, &pki.ca, None, true).await.unwrap();
        traffic(&client).await;
    })
    .await
    .expect("test did not finish in time");
    // Nothing in plain text is said to a client that has not started TLS.
    let mut raw = TcpStream::connect(broker.addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let got = raw.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "expected silence, got {got:?}"
    );
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let pki = Pki::new("localhost");
    let ca = pki.ca.display().to_string();
    let broker = tls_broker(&pki, &["--tls-ca", &ca, "--tls-verify"]);
    tokio::time::timeout(TEST_TIMEOUT, async {
        let alice = connect(&broker, &pki.ca, Some(&pki.alice), false)
            .await
            .expect("alice has a certificate from the CA");
        traffic(&alice).await;
        // /connz shows the transport and whose certificate it was.
        let connz = broker.monitor_json("/connz");
        let conns = connz["connections"].as_array().unwrap();
        assert!(
            conns.iter().any(|c| c["transport"] == "tls"
                && c["tls_peer_subject"]
                    .as_str()
                    .is_some_and(|s| s.contains("CN=alice"))),
            "{connz}"
        );
        assert!(connect(&broker, &pki.ca, None, false).await.is_err());
        assert!(connect(&broker, &pki.ca, Some(&pki.mallory), false)
            .await
            .is_err());
        // Both refusals closed only their own connection: alice goes on.
        traffic(&alice).await;
    })
    .await
    .expect("test did not finish in time");
    assert!(failures(&broker, "tls_handshake", 2) >= 2);
    // Each is logged with the peer's address and the reason.
    for reason in ["peer sent no certificates", "UnknownIssuer"] {
        let deadline = Instant::now() + WAIT;
        while !broker.stderr().contains(reason) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = broker.stderr();
        let line = log
            .lines()
            .find(|l| l.contains("connection closed") && l.contains(reason))
            .unwrap_or_else(|| panic!("no close logged for {reason:?}:\n{log}"));
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
}

#[test]
fn a_plain_text_client_on_a_tls_port_is_closed_and_counted() {
    let pki = Pki::new("localhost");
    let broker = tls_broker(&pki, &[]);
    let mut c = RawClient::connect_bare(broker.addr());
    let info = c.read_info();
    assert_eq!(info["tls_required"], true, "{info}");
    c.send(b"CONNECT {}\r\nPING\r\n");
    let (said, end) = c.read_to_close(WAIT);
    assert!(!matches!(end, ReadEnd::Timeout), "not closed");
    // Told why in plain text, in nats-server's words.
    assert_eq!(said, b"-ERR 'Secure Connection - TLS Required'\r\n");
    assert_eq!(failures(&broker, "plain_text_on_tls", 1), 1);
    // Another client is unaffected.
    let mut ok = RawClient::connect_bare(broker.addr());
    ok.read_info();
}

#[test]
fn a_handshake_that_never_comes_times_out() {
    let pki = Pki::new("localhost");
    let broker = tls_broker(&pki, &["--tls-handshake-timeout", "200ms"]);
    let mut c = RawClient::connect_bare(broker.addr());
    c.read_info();
    let started = Instant::now();
    let (_, end) = c.read_to_close(WAIT);
    assert!(!matches!(end, ReadEnd::Timeout), "not closed");
    assert!(started.elapsed() < WAIT);
    assert_eq!(failures(&broker, "handshake_timeout", 1), 1);
}

#[test]
fn the_binary_port_is_tls_from_its_first_byte() {
    use tern_protocol::binary::{ClientFrame, Hello, Preface, ServerFrame, ServerFrameDecoder};
    let pki = Pki::new("localhost");
    let broker = tls_broker(&pki, &[]);
    let mut tls = pki.connect_tls(broker.binary_addr());
    let mut out = bytes::BytesMut::new();
    Preface::default().encode(&mut out);
    tern_protocol::binary::encode_client_frame(
        &ClientFrame::Hello(Hello {
            client_name: bytes::Bytes::from_static(b"tls-test"),
            ..Default::default()
        }),
        &mut out,
    )
    .unwrap();
    tls.write_all(&out).unwrap();
    tls.flush().unwrap();
    let mut decoder = ServerFrameDecoder::new(Default::default());
    let mut buf = bytes::BytesMut::new();
    let deadline = Instant::now() + WAIT;
    let frame = loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            break f;
        }
        assert!(Instant::now() < deadline, "no WELCOME");
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before WELCOME");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(matches!(frame, ServerFrame::Welcome(_)), "{frame:?}");
    // A plain binary client is told why in a plain ERROR frame, and the connection closes.
    let mut plain = common::BinClient::connect_bare(broker.binary_addr());
    let mut preface = bytes::BytesMut::new();
    Preface::default().encode(&mut preface);
    plain.send_raw(&preface);
    plain.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = plain.stream.read_to_end(&mut rest);
    let mut rest = bytes::BytesMut::from(&rest[..]);
    match ServerFrameDecoder::new(Default::default()).decode(&mut rest) {
        Ok(Some(ServerFrame::Error(e))) => {
            assert!(e.fatal, "{e:?}");
            assert!(e.message.starts_with(b"TLS required"), "{e:?}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    assert_eq!(failures(&broker, "plain_text_on_tls", 1), 1);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_connections_stay() {
    let first = Pki::new("first");
    let broker = tls_broker(&first, &[]);
    tokio::time::timeout(TEST_TIMEOUT, async {
        let open = connect(&broker, &first.ca, None, false).await.unwrap();
        traffic(&open).await;
        // New files under the same names, from another CA.
        let second = Pki::new("second");
        std::fs::copy(&second.server.cert, &first.server.cert).unwrap();
        std::fs::copy(&second.server.key, &first.server.key).unwrap();
        broker.signal(libc::SIGHUP);
        let deadline = Instant::now() + WAIT;
        while !broker.stderr().contains("reloaded") {
            assert!(
                Instant::now() < deadline,
                "no reload logged:\n{}",
                broker.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connect(&broker, &second.ca, None, false)
            .await
            .expect("new connections get the new certificate");
        assert!(
            connect(&broker, &first.ca, None, false).await.is_err(),
            "the old certificate is no longer served"
        );
        // The connection opened before the reload carries on.
        traffic(&open).await;
        // A reload that fails (a key that does not match) keeps the current one.
        std::fs::copy(&first.alice.key, &first.server.key).unwrap();
        broker.signal(libc::SIGHUP);
        let deadline = Instant::now() + WAIT;
        while !broker.stderr().contains("TLS reload failed") {
            assert!(
                Instant::now() < deadline,
                "no failure logged:\n{}",
                broker.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connect(&broker, &second.ca, None, false)
            .await
            .expect("the current certificate stays after a failed reload");
    })
    .await
    .expect("test did not finish in time");
}

/// ternd's exit status and stderr for `args`, when it must not start.
fn refused_start(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-binary",
            "--no-monitor",
            "--no-store",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "ternd {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_tls_settings_stop_ternd_with_a_clear_error() {
    let pki = Pki::new("localhost");
    let cert = pki.server.cert.display().to_string();
    let key = pki.server.key.display().to_string();
    let err = refused_start(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    // The key of another certificate.
    let alice_key = pki.alice.key.display().to_string();
    let err = refused_start(&["--tls-cert", &cert, "--tls-key", &alice_key]);
    assert!(err.contains("TLS"), "{err}");
    let err = refused_start(&["--tls-cert", &cert, "--tls-key", &key, "--tls-verify"]);
    assert!(
        err.contains("tls_verify") && err.contains("tls_ca"),
        "{err}"
    );
    // In the config file: the message names the file and the line.
    let file = pki.dir.join("ternd.toml");
    std::fs::write(&file, "[tls]\ncert_file = \"a.pem\"\nkey = \"b.pem\"\n").unwrap();
    let err = refused_start(&["--config", &file.display().to_string()]);
    assert!(
        err.contains("ternd.toml") && err.contains("line 3"),
        "{err}"
    );
}

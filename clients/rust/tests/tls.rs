//! The client over TLS against the real broker (tern-broker in this process, serving TLS
//! on its binary port; see `common/tls.rs`), with certificates made by the test: every
//! kind of call, large payloads both ways, trust and name checks, client certificates, a
//! server restart, a handshake failing on a reconnect, close_notify, and the clear errors
//! for a plain port met with TLS and the other way round.

mod common;
#[path = "common/tls.rs"]
mod tls_support;

use std::time::Duration;

use common::{wait_event, WAIT};
use tern_client::rustls::{self, AlertDescription, CertificateError};
use tern_client::{Client, ClientBuilder, Error, Event, PublishOptions, ReconnectPolicy};
use tls_support::{plain_broker, Pki, ServerTls, TlsBroker};

/// A client trusting the test CA.
fn trusting(pki: &Pki) -> ClientBuilder {
    Client::builder().tls_ca_file(&pki.ca)
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_millis(10), Duration::from_millis(100))
}

/// The rustls reason of a failed first connection.
fn tls_failure(result: Result<Client, Error>) -> (rustls::Error, Option<&'static str>, String) {
    match result {
        Err(e @ Error::Tls { .. }) => {
            let text = e.to_string();
            let Error::Tls { source, hint, .. } = e else {
                unreachable!()
            };
            (source, hint, text)
        }
        Err(e) => panic!("expected a TLS error, got {e:?}"),
        Ok(_) => panic!("expected a TLS error, got a connection"),
    }
}

#[test]
fn publish_subscribe_request_and_acks_over_tls() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    // By IP address: the certificate carries 127.0.0.1 as an IP address name.
    let client = trusting(&pki).connect(&server.url()).unwrap();
    let events = client.events();
    assert!(matches!(
        events.recv_timeout(WAIT),
        Some(Event::Connected(_))
    ));

    let sub = client.subscribe("tls.>").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("tls.a", "hello over TLS").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("hello over TLS")
    );
    let ack = client.publish_acked("tls.b", "stored?").unwrap();
    assert!(!ack.duplicate);
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("stored?")
    );

    // Request and reply, the responder on a second TLS connection.
    let responder = trusting(&pki).connect(&server.url()).unwrap();
    let service = responder.subscribe("svc.upper").unwrap();
    responder.flush(WAIT).unwrap();
    let answering = {
        let responder = responder.clone();
        std::thread::spawn(move || {
            let request = service.recv_timeout(WAIT).unwrap();
            let text = request.payload_str().unwrap().to_uppercase();
            responder.respond(&request, text).unwrap();
        })
    };
    let reply = client.request("svc.upper", "shout", WAIT).unwrap();
    assert_eq!(reply.payload_str(), Some("SHOUT"));
    answering.join().unwrap();

    // Payloads larger than a TLS record (16 KiB) and than rustls's send buffer (64 KiB),
    // many frames at once: records split across reads, partial writes, WouldBlock.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let pending: Vec<_> = (0..8)
        .map(|i| {
            let mut payload = big.clone();
            payload[0] = i;
            client
                .publish_with_ack("tls.big", payload, &PublishOptions::new())
                .unwrap()
        })
        .collect();
    for _ in 0..2000 {
        client.publish("tls.small", "x").unwrap();
    }
    for p in pending {
        p.wait().unwrap();
    }
    let mut bigs = 0;
    let mut smalls = 0;
    while bigs + smalls < 8 + 2000 {
        let m = sub.recv_timeout(WAIT).unwrap();
        if m.subject == "tls.big" {
            assert_eq!(m.payload.len(), big.len());
            assert_eq!(m.payload[0], bigs as u8, "in order");
            assert_eq!(&m.payload[1..], &big[1..]);
            bigs += 1;
        } else {
            smalls += 1;
        }
    }
    client.drain(WAIT).unwrap();
    responder.close();
}

#[test]
fn a_dns_name_in_a_tls_url_is_checked_against_the_certificate() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    let url = server.url().replace("127.0.0.1", "localhost");
    let client = trusting(&pki).connect(&url).unwrap();
    client.publish_acked("tls.localhost", "ok").unwrap();
    client.close();
}

#[test]
fn tls_on_the_builder_works_with_a_tern_url() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    let url = server.url().replace("tls://", "tern://");
    let client = trusting(&pki).tls(true).connect(&url).unwrap();
    client.publish_acked("tls.builder", "ok").unwrap();
    client.close();
}

#[test]
fn tls12_only_servers_work_too() {
    // The broker's transport chooses its versions; a proxy can offer TLS 1.2 only.
    let pki = Pki::new();
    let server = TlsBroker::behind_proxy(ServerTls {
        tls12_only: true,
        ..ServerTls::requiring_client_certs(&pki)
    });
    let client = trusting(&pki)
        .tls_client_cert(&pki.alice_cert, &pki.alice_key)
        .connect(&server.url())
        .unwrap();
    let sub = client.subscribe("tls12").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("tls12", "old but fine").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("old but fine")
    );
    client.close();
}

#[test]
fn a_server_signed_by_another_ca_is_refused_with_the_reason() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    let (reason, hint, text) = tls_failure(
        Client::builder()
            .tls_ca_file(&pki.stranger_ca)
            .connect(&server.url()),
    );
    assert_eq!(
        reason,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert!(
        hint.unwrap().contains("not signed by a trusted CA"),
        "{text}"
    );
    assert!(text.contains(&server.url()), "{text}");
}

#[test]
fn a_certificate_for_another_name_is_refused_and_the_server_name_override_accepts_it() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::elsewhere(&pki));
    let (reason, hint, text) = tls_failure(trusting(&pki).connect(&server.url()));
    assert!(
        matches!(
            reason,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{text}"
    );
    assert!(hint.unwrap().contains("does not carry the name"), "{text}");

    let client = trusting(&pki)
        .tls_server_name("tern.test")
        .connect(&server.url())
        .unwrap();
    client.publish_acked("tls.renamed", "ok").unwrap();
    client.close();
}

#[test]
fn a_server_requiring_client_certificates_admits_a_known_one_only() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::requiring_client_certs(&pki));

    // No certificate: the server says so with an alert, and the hint says what to do.
    let (reason, hint, text) = tls_failure(trusting(&pki).connect(&server.url()));
    assert!(
        matches!(
            reason,
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
            )
        ),
        "{text}"
    );
    assert!(
        hint.unwrap().contains("requires a client certificate"),
        "{text}"
    );

    // A certificate from a CA the server does not know.
    let (reason, hint, text) = tls_failure(
        trusting(&pki)
            .tls_client_cert(&pki.mallory_cert, &pki.mallory_key)
            .connect(&server.url()),
    );
    assert!(matches!(reason, rustls::Error::AlertReceived(_)), "{text}");
    assert!(
        hint.unwrap().contains("refused this client's certificate"),
        "{text}"
    );

    // Alice's, from the server's CA.
    let client = trusting(&pki)
        .tls_client_cert(&pki.alice_cert, &pki.alice_key)
        .connect(&server.url())
        .unwrap();
    let sub = client.subscribe("mtls").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("mtls", "it's alice").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("it's alice")
    );
    client.close();
}

#[test]
fn the_client_reconnects_with_a_new_handshake_after_the_server_restarts() {
    let pki = Pki::new();
    let mut server = TlsBroker::start(ServerTls::requiring_client_certs(&pki));
    let client = trusting(&pki)
        .tls_client_cert(&pki.alice_cert, &pki.alice_key)
        .reconnect(fast_reconnect())
        .connect(&server.url())
        .unwrap();
    let events = client.events();
    let sub = client.subscribe("restart.>").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("restart.a", "before").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("before")
    );

    server.stop();
    let reason = wait_event(&events, |e| match e {
        Event::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(!client.is_connected(), "{reason}");
    for i in 0..3 {
        client.publish("restart.a", format!("during {i}")).unwrap();
    }
    // Attempts fail while the port is closed, and say why.
    let failed = wait_event(&events, |e| match e {
        Event::ReconnectFailed { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert!(!failed.is_empty());

    server.start_again();
    wait_event(&events, |e| match e {
        Event::Reconnected(_) => Some(()),
        _ => None,
    });
    let got: Vec<String> = (0..3)
        .map(|_| {
            sub.recv_timeout(WAIT)
                .unwrap()
                .payload_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ["during 0", "during 1", "during 2"]);
    client.publish_acked("restart.a", "after").unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().payload_str(), Some("after"));
    client.close();
}

#[test]
fn a_handshake_failing_on_a_reconnect_is_reported_with_its_reason_and_retried() {
    let pki = Pki::new();
    let mut server = TlsBroker::start(ServerTls::new(&pki));
    let client = trusting(&pki)
        .reconnect(fast_reconnect())
        .connect(&server.url())
        .unwrap();
    let events = client.events();
    server.stop();
    // Back with a certificate for another name: each attempt fails its handshake.
    server.start_again_with(ServerTls::elsewhere(&pki));
    let error = wait_event(&events, |e| match e {
        Event::ReconnectFailed { error, .. } if error.starts_with("TLS: ") => Some(error.clone()),
        _ => None,
    });
    assert!(error.contains("not valid for name"), "{error}");
    assert!(error.contains("does not carry the name"), "{error}");
    // And with the right one again, the next attempt gets through.
    server.stop();
    server.start_again_with(ServerTls::new(&pki));
    wait_event(&events, |e| match e {
        Event::Reconnected(_) => Some(()),
        _ => None,
    });
    client.publish_acked("tls.back", "ok").unwrap();
    client.close();
}

#[test]
fn closing_ends_the_session_with_close_notify() {
    // The proxy counts them; the broker does not.
    let pki = Pki::new();
    let server = TlsBroker::behind_proxy(ServerTls::new(&pki));
    let client = trusting(&pki).connect(&server.url()).unwrap();
    client.publish_acked("bye", "now").unwrap();
    client.close();
    drop(client);
    let proxy = server.proxy().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while proxy
        .clean_closes
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no close_notify within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(proxy.errors.lock().unwrap().is_empty());
}

#[test]
fn a_plain_text_port_answering_tls_is_a_clear_error_not_a_hang() {
    let pki = Pki::new();
    let broker = plain_broker(0, &[]);
    let url = format!("tls://{}", broker.binary_addr().unwrap());
    let err = trusting(&pki)
        .connect_timeout(Duration::from_secs(60))
        .connect(&url)
        .expect_err("a plain port refuses a TLS client");
    let text = err.to_string();
    match &err {
        // The broker closes on a preface that is not Tern's.
        Error::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{text}");
            assert!(text.contains("during the TLS handshake"), "{text}");
        }
        // Or answers with bytes that are not TLS.
        Error::Tls { hint, .. } => assert!(hint.is_some(), "{text}"),
        other => panic!("unexpected error: {other:?}"),
    }
    broker.shutdown();
}

#[test]
fn a_tls_port_answering_a_plain_client_is_a_clear_error() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    let url = server.url().replace("tls://", "tern://");
    let err = Client::builder()
        .connect_timeout(Duration::from_secs(60))
        .connect(&url)
        .expect_err("a TLS port refuses a plain client");
    // The broker says so in a plain ERROR frame before it closes.
    let text = err.to_string();
    assert!(
        text.contains("TLS required: this port speaks TLS from the first byte"),
        "{text}"
    );
}

#[test]
fn a_bad_ca_file_fails_connect_before_connecting_and_names_the_file() {
    let pki = Pki::new();
    let server = TlsBroker::start(ServerTls::new(&pki));
    // A key where the CA should be.
    let err = Client::builder()
        .tls_ca_file(&pki.server_key)
        .connect(&server.url())
        .unwrap_err();
    assert!(matches!(err, Error::TlsConfig(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "TLS settings: {}: no CERTIFICATE section",
            pki.server_key.display()
        )
    );
    let missing = pki.dir.0.join("missing.pem");
    let err = Client::builder()
        .tls_ca_file(&missing)
        .connect(&server.url())
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "TLS settings: {}: cannot read: ",
            missing.display()
        )),
        "{err}"
    );
    // A client key that is not the certificate's.
    let err = trusting(&pki)
        .tls_client_cert(&pki.alice_cert, &pki.mallory_key)
        .connect(&server.url())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("client certificate and key refused"),
        "{err}"
    );
}

//! TLS transports against a real rustls client, in memory: both start modes, client
//! certificates, chunked data both ways, bad input, configuration errors and reload.

mod common;

use std::sync::Arc;

use common::{client_decrypt, client_received, feed, pump, Failed, Pki};
use proptest::prelude::*;
use rustls::ClientConnection;
use tern_transport::{
    load_server_config, CloseCode, PeerClosed, TlsConfigError, TlsConfigHandle, TlsLimits,
    TlsStart, Transport, TransportError,
};

fn tls_server(pki: &Pki, ca: bool, verify: bool, start: TlsStart) -> Transport {
    let config = load_server_config(&pki.settings(ca, verify)).unwrap();
    Transport::tls(config, start, TlsLimits::default()).unwrap()
}

/// Completes the handshake and checks one message each way.
fn handshake_and_echo(client: &mut ClientConnection, server: &mut Transport) {
    use std::io::Write;
    let mut app_in = Vec::new();
    pump(client, server, &mut app_in).unwrap();
    assert!(!client.is_handshaking());
    assert!(server.is_ready());
    assert!(server.tls_session().unwrap().is_handshake_complete());

    client
        .writer()
        .write_all(b"CONNECT {}\r\nPING\r\n")
        .unwrap();
    pump(client, server, &mut app_in).unwrap();
    assert_eq!(app_in, b"CONNECT {}\r\nPING\r\n");

    let mut socket_out = Vec::new();
    server.write(b"PONG\r\n", &mut socket_out).unwrap();
    assert_eq!(client_decrypt(client, &socket_out), b"PONG\r\n");
}

#[test]
fn tls_from_the_first_byte_handshakes_and_carries_data_both_ways() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    assert!(!server.is_ready());
    let mut client = pki.client(None);
    handshake_and_echo(&mut client, &mut server);
    let tls = server.tls_session().unwrap();
    assert_eq!(tls.server_name(), Some("localhost"));
    assert!(tls.peer_certificates().is_none());
}

#[test]
fn the_read_that_completes_the_handshake_says_so_once() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    let mut client = pki.client(None);
    let mut app_in = Vec::new();
    let mut done = 0;
    // Drive by hand to see every outcome.
    for _ in 0..4 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        for outcome in feed(&mut server, &to_server, &mut app_in).unwrap() {
            done += usize::from(outcome.handshake_done);
        }
        let mut to_client = Vec::new();
        server.pending_socket_out(&mut to_client).unwrap();
        if !to_client.is_empty() {
            client_decrypt(&mut client, &to_client);
        }
    }
    assert_eq!(done, 1);
}

#[test]
fn plain_info_first_then_tls_from_start_tls_on() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::PlainFirst);
    let info = b"INFO {\"tls_required\":true}\r\n";
    let mut socket_out = Vec::new();
    server.write(info, &mut socket_out).unwrap();
    assert_eq!(socket_out, info, "the INFO goes out in plain text");
    server.start_tls().unwrap();
    assert!(!server.is_ready());
    let mut client = pki.client(None);
    handshake_and_echo(&mut client, &mut server);
}

#[test]
fn plain_first_switches_to_tls_for_a_client_that_starts_with_a_client_hello() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::PlainFirst);
    let mut client = pki.client(None);
    // No INFO, no start_tls: nats-server's handshake_first.
    handshake_and_echo(&mut client, &mut server);
}

#[test]
fn a_plain_text_client_on_a_tls_port_is_refused_with_what_it_sent() {
    let pki = Pki::new();
    for start in [TlsStart::Immediate, TlsStart::PlainFirst] {
        let mut server = tls_server(&pki, false, false, start);
        let err = server.read(b"CONNECT {}\r\n", &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, TransportError::PlainTextOnTlsPort { first_byte: b'C' }),
            "{start:?}: {err}"
        );
        assert!(err.to_string().contains("plain text"), "{err}");
    }
}

#[test]
fn plain_text_after_start_tls_is_refused() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::PlainFirst);
    server.write(b"INFO {}\r\n", &mut Vec::new()).unwrap();
    server.start_tls().unwrap();
    let err = server.read(b"CONNECT {}\r\n", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, TransportError::PlainTextOnTlsPort { .. }),
        "{err}"
    );
}

#[test]
fn garbage_instead_of_a_client_hello_fails_with_a_tls_error() {
    let pki = Pki::new();
    // Not even a handshake message: rustls gives up without an alert.
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    let err = server
        .read(
            b"\x16\x03\x01\x00\x05hello, this is not a ClientHello",
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err}");
    assert!(err.to_string().starts_with("TLS: "), "{err}");

    // A ClientHello of junk: rustls answers with an alert record.
    let mut junk_hello = tls_server(&pki, false, false, TlsStart::Immediate);
    let err = junk_hello
        .read(
            b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xde\xad\xbe\xef",
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err}");
    let mut alert = Vec::new();
    junk_hello.pending_socket_out(&mut alert).unwrap();
    assert_eq!(alert.first(), Some(&0x15), "an alert record: {alert:?}");
}

#[test]
fn required_client_certificates_admit_a_known_one_and_report_its_subject() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, true, true, TlsStart::Immediate);
    let mut client = pki.client(Some(&pki.alice));
    handshake_and_echo(&mut client, &mut server);
    let tls = server.tls_session().unwrap();
    assert_eq!(tls.peer_certificates().map(<[_]>::len), Some(1));
    assert_eq!(
        tls.peer_subject().as_deref(),
        Some("CN=alice, O=Tern tests")
    );
}

#[test]
fn a_missing_client_certificate_fails_clearly() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, true, true, TlsStart::Immediate);
    let mut client = pki.client(None);
    let err = pump(&mut client, &mut server, &mut Vec::new()).unwrap_err();
    let Failed::Server(err) = err else {
        panic!("the server should fail first: {err:?}");
    };
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(!server.is_ready());
}

#[test]
fn an_untrusted_client_certificate_fails_clearly() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, true, true, TlsStart::Immediate);
    let mut client = pki.client(Some(&pki.mallory));
    let err = pump(&mut client, &mut server, &mut Vec::new()).unwrap_err();
    let Failed::Server(err) = err else {
        panic!("the server should fail first: {err:?}");
    };
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_ca_without_verify_makes_client_certificates_optional_but_checked() {
    let pki = Pki::new();
    let mut anonymous = tls_server(&pki, true, false, TlsStart::Immediate);
    handshake_and_echo(&mut pki.client(None), &mut anonymous);
    let mut known = tls_server(&pki, true, false, TlsStart::Immediate);
    handshake_and_echo(&mut pki.client(Some(&pki.alice)), &mut known);
    assert!(known.tls_session().unwrap().peer_subject().is_some());
    let mut stranger = tls_server(&pki, true, false, TlsStart::Immediate);
    assert!(pump(
        &mut pki.client(Some(&pki.mallory)),
        &mut stranger,
        &mut Vec::new()
    )
    .is_err());
}

#[test]
fn alpn_is_negotiated_and_reported() {
    let pki = Pki::new();
    let mut settings = pki.settings(false, false);
    settings.alpn = vec![b"nats".to_vec()];
    let config = load_server_config(&settings).unwrap();
    let mut server = Transport::tls(config, TlsStart::Immediate, TlsLimits::default()).unwrap();
    let mut client_config = pki.client_config(None);
    client_config.alpn_protocols = vec![b"nats".to_vec()];
    let mut client = common::client_on(Arc::new(client_config));
    handshake_and_echo(&mut client, &mut server);
    assert_eq!(
        server.tls_session().unwrap().alpn_protocol(),
        Some(&b"nats"[..])
    );
}

/// A connection past its handshake whose client has closed, with the client's
/// close_notify not yet fed to the server.
fn closed_by_the_client(pki: &Pki) -> (Transport, ClientConnection, Vec<u8>) {
    let mut server = tls_server(pki, false, false, TlsStart::Immediate);
    let mut client = pki.client(None);
    pump(&mut client, &mut server, &mut Vec::new()).unwrap();
    client.send_close_notify();
    let mut to_server = Vec::new();
    client.write_tls(&mut to_server).unwrap();
    (server, client, to_server)
}

#[test]
fn the_peers_close_notify_is_reported() {
    let pki = Pki::new();
    let (mut server, mut client, to_server) = closed_by_the_client(&pki);
    let outcome = server.read(&to_server, &mut Vec::new()).unwrap();
    assert_eq!(outcome.peer_closed, Some(PeerClosed::TlsCloseNotify));
    // The server says goodbye too, and writes nothing more.
    server.close(CloseCode::NORMAL, "").unwrap();
    let mut records = Vec::new();
    server.pending_socket_out(&mut records).unwrap();
    client_decrypt(&mut client, &records);
    assert!(client.process_new_packets().unwrap().peer_has_closed());
    assert!(matches!(
        server.write(b"late", &mut Vec::new()),
        Err(TransportError::Closed)
    ));
}

#[test]
fn records_after_the_close_notify_are_ignored_not_looped_on() {
    let pki = Pki::new();
    let (mut server, _client, mut to_server) = closed_by_the_client(&pki);
    // A record behind the close_notify, in the same read (a raw application data record:
    // the client itself refuses to write after closing).
    to_server.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    let mut app_in = Vec::new();
    let outcome = server.read(&to_server, &mut app_in).unwrap();
    assert_eq!(outcome.consumed, to_server.len());
    assert_eq!(outcome.peer_closed, Some(PeerClosed::TlsCloseNotify));
    assert!(app_in.is_empty());
    // And in a later read.
    let outcome = server
        .read(b"\x17\x03\x03\x00\x05hello", &mut app_in)
        .unwrap();
    assert_eq!(outcome.consumed, 10);
    assert!(app_in.is_empty());
}

#[test]
fn writes_before_the_handshake_are_held_up_to_the_limit() {
    let pki = Pki::new();
    let config = load_server_config(&pki.settings(false, false)).unwrap();
    let limits = TlsLimits {
        max_unsent_plaintext: 100,
    };
    let mut server = Transport::tls(config, TlsStart::Immediate, limits).unwrap();
    let mut socket_out = Vec::new();
    server.write(&[b'x'; 60], &mut socket_out).unwrap();
    assert!(socket_out.is_empty(), "nothing leaves before the handshake");
    let err = server.write(&[b'y'; 60], &mut socket_out).unwrap_err();
    assert!(
        matches!(err, TransportError::OutputFull { max: 100 }),
        "{err}"
    );
}

#[test]
fn configuration_errors_name_the_file_and_the_fault() {
    let pki = Pki::new();
    let check = |settings: tern_transport::TlsSettings, file: &std::path::Path, what: &str| {
        let err = load_server_config(&settings).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
    };
    let missing = pki.dir.0.join("missing.pem");
    let mut s = pki.settings(false, false);
    s.cert_file = missing.clone();
    check(s, &missing, "cannot read");

    let mut s = pki.settings(false, false);
    s.cert_file = pki.key_file.clone();
    check(s, &pki.key_file, "no CERTIFICATE");

    let mut s = pki.settings(false, false);
    s.key_file = pki.cert_file.clone();
    check(s, &pki.cert_file, "no private key");

    let broken = pki
        .dir
        .write("broken.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
    let mut s = pki.settings(false, false);
    s.cert_file = broken.clone();
    check(s, &broken, "not valid PEM");

    // The CA's certificate with the server's key: they do not match.
    let mut s = pki.settings(false, false);
    s.cert_file = pki.ca_file.clone();
    check(s, &pki.ca_file, "refused");

    let s = pki.settings(false, true);
    assert!(matches!(
        load_server_config(&s).unwrap_err(),
        TlsConfigError::VerifyWithoutCa
    ));
}

#[test]
fn a_reload_serves_new_connections_while_open_ones_keep_their_session() {
    use std::io::Write;
    let before = Pki::with_server_cn("before");
    let after = Pki::with_server_cn("after");
    let handle = TlsConfigHandle::load(&before.settings(false, false)).unwrap();

    let mut open =
        Transport::tls(handle.current(), TlsStart::Immediate, TlsLimits::default()).unwrap();
    let mut open_client = before.client(None);
    pump(&mut open_client, &mut open, &mut Vec::new()).unwrap();

    handle.reload(&after.settings(false, false)).unwrap();
    // A failed reload keeps what serves.
    let mut broken = after.settings(false, false);
    broken.key_file = after.dir.0.join("nope.key");
    assert!(handle.reload(&broken).is_err());

    let mut new =
        Transport::tls(handle.current(), TlsStart::Immediate, TlsLimits::default()).unwrap();
    let mut new_client = after.client(None);
    pump(&mut new_client, &mut new, &mut Vec::new()).unwrap();
    let subject = |c: &ClientConnection| {
        tern_transport::tls::subject::subject(&c.peer_certificates().unwrap()[0]).unwrap()
    };
    assert!(subject(&new_client).starts_with("CN=after"));
    assert!(subject(&open_client).starts_with("CN=before"));

    // The open connection still works.
    let mut app_in = Vec::new();
    open_client.writer().write_all(b"PING\r\n").unwrap();
    pump(&mut open_client, &mut open, &mut app_in).unwrap();
    assert_eq!(app_in, b"PING\r\n");
}

#[test]
fn a_tls_1_2_client_handshakes_and_carries_data_both_ways() {
    let pki = Pki::new();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut client = common::client_on(Arc::new(config));
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    handshake_and_echo(&mut client, &mut server);
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // TLS 1.2 stays with rustls for the connection's life.
    assert!(!server.tls_session().unwrap().is_handed_over());
    assert_eq!(
        server.tls_session().unwrap().server_name(),
        Some("localhost")
    );
    // And its close_notify.
    client.send_close_notify();
    let mut to_server = Vec::new();
    client.write_tls(&mut to_server).unwrap();
    let outcome = server.read(&to_server, &mut Vec::new()).unwrap();
    assert_eq!(outcome.peer_closed, Some(PeerClosed::TlsCloseNotify));
}

#[test]
fn a_key_update_from_the_client_is_answered_and_data_flows_on() {
    use std::io::Write;
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    let mut client = pki.client(None);
    handshake_and_echo(&mut client, &mut server);
    client.refresh_traffic_keys().unwrap();
    client.writer().write_all(b"PING\r\n").unwrap();
    let mut app_in = Vec::new();
    pump(&mut client, &mut server, &mut app_in).unwrap();
    assert_eq!(app_in, b"PING\r\n");
    let mut socket_out = Vec::new();
    server.write(b"PONG\r\n", &mut socket_out).unwrap();
    assert_eq!(client_decrypt(&mut client, &socket_out), b"PONG\r\n");
}

/// One message each way on an established connection.
fn echo(client: &mut ClientConnection, server: &mut Transport, up: &[u8], down: &[u8]) {
    use std::io::Write;
    client.writer().write_all(up).unwrap();
    let mut app_in = Vec::new();
    pump(client, server, &mut app_in).unwrap();
    assert_eq!(app_in, up);
    let mut socket_out = Vec::new();
    server.write(down, &mut socket_out).unwrap();
    // In pieces: the client holds at most 16 KiB of plaintext.
    let mut received = Vec::new();
    for piece in socket_out.chunks(4096) {
        received.extend(client_decrypt(client, piece));
    }
    assert_eq!(received, down);
}

#[test]
fn a_tls_1_3_connection_is_handed_over_and_goes_on_after_shrink_and_key_updates() {
    let pki = Pki::new();
    for start in [TlsStart::Immediate, TlsStart::PlainFirst] {
        let mut server = tls_server(&pki, false, false, start);
        if start == TlsStart::PlainFirst {
            server.write(b"INFO {}\r\n", &mut Vec::new()).unwrap();
            server.start_tls().unwrap();
        }
        let mut client = pki.client(None);
        handshake_and_echo(&mut client, &mut server);
        let tls = server.tls_session().unwrap();
        assert!(tls.is_handed_over(), "{start:?}");
        assert_eq!(tls.server_name(), Some("localhost"));
        for round in 0..3 {
            server.shrink();
            echo(
                &mut client,
                &mut server,
                b"PUB a 1\r\nx\r\n",
                b"MSG a 1 1\r\nx\r\n",
            );
            if round == 1 {
                client.refresh_traffic_keys().unwrap();
            }
        }
        // 60,000 bytes each way (under the client's 64 KiB buffer): four records.
        let big: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
        echo(&mut client, &mut server, &big, &big);
    }
}

#[test]
fn records_cut_by_two_reads_at_any_byte_arrive_whole() {
    use std::io::Write;
    let pki = Pki::new();
    let config = load_server_config(&pki.settings(false, false)).unwrap();
    let mut cut = 0;
    loop {
        let mut client = pki.client(None);
        let mut server = Transport::tls(
            Arc::clone(&config),
            TlsStart::Immediate,
            TlsLimits::default(),
        )
        .unwrap();
        handshake_and_echo(&mut client, &mut server);
        // Four records; the one a read cuts is kept and completed by the next read.
        let (mut sent, mut records) = (Vec::new(), Vec::new());
        for (i, len) in [100usize, 1, 300, 17].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            client.writer().write_all(&bytes).unwrap();
            client.write_tls(&mut records).unwrap();
            sent.extend(bytes);
        }
        let mut app_in = Vec::new();
        feed(&mut server, &records[..cut], &mut app_in).unwrap();
        feed(&mut server, &records[cut..], &mut app_in).unwrap();
        assert_eq!(app_in, sent, "cut at {cut}");
        if cut == records.len() {
            break;
        }
        cut += 1;
    }
}

#[test]
fn a_changed_record_after_the_handshake_fails_with_bad_record_mac() {
    use std::io::Write;
    let pki = Pki::new();
    let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
    let mut client = pki.client(None);
    handshake_and_echo(&mut client, &mut server);
    client.writer().write_all(b"PING\r\n").unwrap();
    let mut to_server = Vec::new();
    client.write_tls(&mut to_server).unwrap();
    let last = to_server.len() - 1;
    to_server[last] ^= 0x20;
    let err = server.read(&to_server, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, TransportError::Tls(rustls::Error::DecryptError)),
        "{err}"
    );
    let mut alert = Vec::new();
    server.pending_socket_out(&mut alert).unwrap();
    client.read_tls(&mut &alert[..]).unwrap();
    assert_eq!(
        client.process_new_packets().unwrap_err(),
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
    // Every later call says the same.
    assert!(server.read(b"", &mut Vec::new()).is_err());
    assert!(server.write(b"x", &mut Vec::new()).is_err());
}

#[test]
fn a_burst_over_websocket_tls_larger_than_a_read_arrives_whole_and_in_order() {
    use std::io::Write;
    use tern_transport::{WsConfig, WsLimits};
    let pki = Pki::new();
    let config = load_server_config(&pki.settings(false, false)).unwrap();
    // Each read appends at most about 1,000 bytes: the TLS stream holds the rest of a
    // decrypted record, and the records behind it, until the session asks again.
    let ws = WsConfig {
        limits: WsLimits {
            max_message: 1000,
            ..WsLimits::default()
        },
        ..WsConfig::default()
    };
    let mut server = Transport::websocket_tls(config, TlsLimits::default(), Arc::new(ws)).unwrap();
    let mut client = pki.client(None);
    let mut app_in = Vec::new();
    pump(&mut client, &mut server, &mut app_in).unwrap();
    client
        .writer()
        .write_all(&common::upgrade_request("/", ""))
        .unwrap();
    pump(&mut client, &mut server, &mut app_in).unwrap();
    assert!(server.is_ready());

    let mut expected = Vec::new();
    let mut burst = Vec::new();
    for i in 0..60u32 {
        let payload: Vec<u8> = (0..900).map(|j| (i * 7 + j) as u8).collect();
        burst.extend(common::client_frame(
            common::FIN | common::BINARY,
            &payload,
            common::KEY,
        ));
        expected.extend(payload);
    }
    client.writer().write_all(&burst).unwrap();
    let mut to_server = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut to_server).unwrap();
    }
    let mut rest = &to_server[..];
    let mut reads = 0;
    loop {
        let before = app_in.len();
        let outcome = server.read(rest, &mut app_in).unwrap();
        assert!(app_in.len() - before <= 2000, "one read appended too much");
        rest = &rest[outcome.consumed..];
        reads += 1;
        if !outcome.again {
            break;
        }
    }
    assert!(rest.is_empty());
    assert!(reads >= 30, "{reads} reads");
    assert_eq!(app_in, expected);
}

/// Moves what the client has to send to the server, fed `chunk` bytes at a time.
fn send_in_chunks(
    client: &mut ClientConnection,
    server: &mut Transport,
    chunk: usize,
    app_in: &mut Vec<u8>,
) {
    let mut to_server = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut to_server).unwrap();
    }
    for piece in to_server.chunks(chunk) {
        feed(server, piece, app_in).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The handshake and the data, both ways, cut into chunks of every size from 1 to 48.
    #[test]
    fn data_round_trips_in_chunks_of_every_size(
        up in proptest::collection::vec(any::<u8>(), 1..3000),
        down in proptest::collection::vec(any::<u8>(), 1..3000),
    ) {
        use std::io::Write;
        let pki = Pki::new();
        let config = load_server_config(&pki.settings(false, false)).unwrap();
        for chunk in 1..=48 {
            let mut server = Transport::tls(Arc::clone(&config), TlsStart::Immediate, TlsLimits::default()).unwrap();
            let mut client = pki.client(None);
            let mut app_in = Vec::new();
            // Handshake, every flight fed `chunk` bytes at a time.
            while client.is_handshaking() || client.wants_write() {
                send_in_chunks(&mut client, &mut server, chunk, &mut app_in);
                let mut to_client = Vec::new();
                server.pending_socket_out(&mut to_client).unwrap();
                client_decrypt(&mut client, &to_client);
            }
            client.writer().write_all(&up).unwrap();
            send_in_chunks(&mut client, &mut server, chunk, &mut app_in);
            prop_assert_eq!(&app_in, &up);

            let mut socket_out = Vec::new();
            for piece in down.chunks(chunk) {
                server.write(piece, &mut socket_out).unwrap();
            }
            let mut received = Vec::new();
            for piece in socket_out.chunks(chunk) {
                received.extend(client_decrypt(&mut client, piece));
            }
            received.extend(client_received(&mut client));
            prop_assert_eq!(&received, &down);
        }
    }

    /// On a connection handed over after its handshake: data both ways, the client's key
    /// updates (each answered by one of the server's) and the broker's ticks in any order,
    /// the records cut into chunks of any size, arrive whole and in order on both sides.
    #[test]
    fn an_established_connection_survives_any_mix_of_data_key_updates_and_ticks(
        steps in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(any::<u8>(), 1..700)),
            1..24,
        ),
        chunk in 1usize..97,
    ) {
        use std::io::Write;
        let pki = Pki::new();
        let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
        let mut client = pki.client(None);
        handshake_and_echo(&mut client, &mut server);
        prop_assert!(server.tls_session().unwrap().is_handed_over());
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        for (kind, bytes) in steps {
            match kind {
                0 => {
                    client.writer().write_all(&bytes).unwrap();
                    up.extend(&bytes);
                }
                1 => {
                    let mut socket_out = Vec::new();
                    server.write(&bytes, &mut socket_out).unwrap();
                    for piece in socket_out.chunks(chunk) {
                        got_down.extend(client_decrypt(&mut client, piece));
                    }
                    down.extend(&bytes);
                }
                2 => client.refresh_traffic_keys().unwrap(),
                _ => server.shrink(),
            }
            send_in_chunks(&mut client, &mut server, chunk, &mut got_up);
            // The server's answers (its KeyUpdates) reach the client before its next data.
            let mut to_client = Vec::new();
            server.pending_socket_out(&mut to_client).unwrap();
            prop_assert_eq!(kind == 2, !to_client.is_empty(), "an answer to each key update only");
            got_down.extend(client_decrypt(&mut client, &to_client));
        }
        got_down.extend(client_received(&mut client));
        prop_assert_eq!(got_up, up);
        prop_assert_eq!(got_down, down);
    }

    /// Whatever a client sends after its handshake, the server answers with an error or
    /// waits for more; it never panics, and it hands on no byte it did not decrypt.
    #[test]
    fn random_bytes_after_the_handshake_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        record_header in any::<bool>(),
    ) {
        let pki = Pki::new();
        let mut server = tls_server(&pki, false, false, TlsStart::Immediate);
        let mut client = pki.client(None);
        handshake_and_echo(&mut client, &mut server);
        let mut input = Vec::new();
        if record_header {
            input.extend([23, 3, 3, (bytes.len() >> 8) as u8, bytes.len() as u8]);
        }
        input.extend(&bytes);
        let mut app_in = Vec::new();
        match feed(&mut server, &input, &mut app_in) {
            Ok(_) => prop_assert!(app_in.is_empty()),
            Err(e) => prop_assert!(matches!(e, TransportError::Tls(_)), "{}", e),
        }
    }

    /// Whatever follows a handshake byte, the server answers with an error or waits for
    /// more; it never panics.
    #[test]
    fn random_bytes_after_a_handshake_byte_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let pki = Pki::new();
        let config = load_server_config(&pki.settings(false, false)).unwrap();
        let mut server = Transport::tls(config, TlsStart::Immediate, TlsLimits::default()).unwrap();
        let mut input = vec![0x16];
        input.extend(bytes);
        let mut app_in = Vec::new();
        if feed(&mut server, &input, &mut app_in).is_ok() {
            prop_assert!(app_in.is_empty(), "no application bytes without a handshake");
        }
    }
}

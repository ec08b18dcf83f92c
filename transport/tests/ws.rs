//! The WebSocket transport driven with raw client bytes: the upgrade and each refusal, the
//! origin check, framing, every close code, permessage-deflate, and properties over split
//! and random input.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use tern_transport::{
    AllowedOrigins, CloseCode, PeerClosed, Transport, TransportError, WsConfig, WsLimits,
};

fn websocket(config: WsConfig) -> Transport {
    Transport::websocket(Arc::new(config))
}

/// A transport past its upgrade (on `path` `/`), with the 101 answer.
fn open_with(config: WsConfig, extra_headers: &str) -> (Transport, String) {
    let mut t = websocket(config);
    let outcome = t
        .read(&upgrade_request("/", extra_headers), &mut Vec::new())
        .unwrap();
    assert!(outcome.handshake_done && outcome.wants_write);
    let mut answer = Vec::new();
    t.pending_socket_out(&mut answer).unwrap();
    (t, String::from_utf8(answer).unwrap())
}

fn open() -> Transport {
    open_with(WsConfig::default(), "").0
}

/// Feeds client bytes; returns the application bytes.
fn app_bytes(t: &mut Transport, bytes: &[u8]) -> Vec<u8> {
    let mut app_in = Vec::new();
    feed(t, bytes, &mut app_in).unwrap();
    app_in
}

/// What the server has to say, as frames.
fn pending_frames(t: &mut Transport) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    t.pending_socket_out(&mut out).unwrap();
    server_frames(&out)
}

/// Feeds client bytes that must fail; returns the close code sent (checked against the
/// error's) and the close reason.
fn fails_with_close(t: &mut Transport, bytes: &[u8]) -> (u16, String) {
    let err = feed(t, bytes, &mut Vec::new()).unwrap_err();
    let frames = pending_frames(t);
    assert_eq!(frames.len(), 1, "one close frame: {frames:?}");
    let code = close_code_of(&frames[0]);
    assert_eq!(err.close_code(), Some(CloseCode(code)), "{err}");
    assert!(matches!(
        t.write(b"x", &mut Vec::new()),
        Err(TransportError::Closed)
    ));
    (
        code,
        String::from_utf8(frames[0].payload[2..].to_vec()).unwrap(),
    )
}

// --- The upgrade ---

#[test]
fn a_valid_upgrade_gets_101_with_the_accept_key_and_reports_the_path() {
    let mut t = websocket(WsConfig::default());
    assert!(!t.is_ready());
    assert!(matches!(
        t.write(b"x", &mut Vec::new()),
        Err(TransportError::NotReady)
    ));
    let outcome = t
        .read(
            &upgrade_request("/tern?token=abc", "Origin: https://app.example\r\n"),
            &mut Vec::new(),
        )
        .unwrap();
    assert!(outcome.handshake_done);
    assert!(t.is_ready());
    let mut answer = Vec::new();
    t.pending_socket_out(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    // RFC 6455, section 1.3.
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(!answer.contains("Sec-WebSocket-Extensions"));
    assert!(answer.ends_with("\r\n\r\n"));
    let upgrade = t.websocket_upgrade().unwrap();
    assert_eq!(upgrade.path, "/tern");
    assert_eq!(upgrade.origin.as_deref(), Some("https://app.example"));
    assert!(!upgrade.compression);
}

#[test]
fn a_request_trickled_byte_by_byte_upgrades_and_frames_right_behind_it_are_read() {
    let mut t = websocket(WsConfig::default());
    let mut input = upgrade_request("/", "");
    input.extend(client_frame(FIN | TEXT, b"PING\r\n", KEY));
    let mut app_in = Vec::new();
    let mut done = 0;
    for byte in input.chunks(1) {
        for outcome in feed(&mut t, byte, &mut app_in).unwrap() {
            done += usize::from(outcome.handshake_done);
        }
    }
    assert_eq!(done, 1);
    assert_eq!(app_in, b"PING\r\n");
    // And all in one read.
    let mut t = websocket(WsConfig::default());
    assert_eq!(app_bytes(&mut t, &input), b"PING\r\n");
}

#[test]
fn connection_and_upgrade_are_token_lists_in_any_case() {
    let mut t = websocket(WsConfig::default());
    let request = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(
        t.read(request.as_bytes(), &mut Vec::new())
            .unwrap()
            .handshake_done
    );
}

/// Each bad request gets its status and its one-line reason, then the transport is closed.
#[test]
fn every_bad_request_gets_its_status_and_reason() {
    let valid = String::from_utf8(upgrade_request("/", "")).unwrap();
    let without = |header: &str| {
        valid
            .lines()
            .filter(|l| !l.starts_with(header))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
    };
    let replace = |from: &str, to: &str| valid.replace(from, to);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            replace("GET", "POST"),
            "400 Bad Request",
            "request method must be GET",
        ),
        (
            replace("HTTP/1.1\r\n", "HTTP/1.0\r\n"),
            "400 Bad Request",
            "HTTP/1.1 required",
        ),
        (
            replace("GET /", "GET http://h/"),
            "400 Bad Request",
            "request target must be a path",
        ),
        (
            replace("GET /", "GET /nowhere"),
            "404 Not Found",
            "no websocket endpoint at this path",
        ),
        (
            without("Host"),
            "400 Bad Request",
            "'Host' missing in request",
        ),
        (
            replace("Upgrade: websocket", "Upgrade: h2c"),
            "400 Bad Request",
            "invalid value for header 'Upgrade'",
        ),
        (
            without("Upgrade"),
            "400 Bad Request",
            "invalid value for header 'Upgrade'",
        ),
        (
            replace("Connection: Upgrade", "Connection: keep-alive"),
            "400 Bad Request",
            "invalid value for header 'Connection'",
        ),
        (
            without("Sec-WebSocket-Key"),
            "400 Bad Request",
            "'Sec-WebSocket-Key' missing",
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400 Bad Request",
            "invalid 'Sec-WebSocket-Key'",
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!"),
            "400 Bad Request",
            "invalid 'Sec-WebSocket-Key'",
        ),
        (
            replace("Version: 13", "Version: 8"),
            "400 Bad Request",
            "'Sec-WebSocket-Version' must be 13",
        ),
        (
            without("Sec-WebSocket-Version"),
            "400 Bad Request",
            "'Sec-WebSocket-Version' must be 13",
        ),
        (
            "\x16\x03\x01 not http\r\n\r\n".to_owned(),
            "400 Bad Request",
            "malformed HTTP request",
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n", "y".repeat(9000)),
            "400 Bad Request",
            "request header over 8192 bytes",
        ),
    ];
    for (request, status, reason) in cases {
        let mut t = websocket(WsConfig::default());
        let err = feed(&mut t, request.as_bytes(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TransportError::Handshake(_)), "{err}");
        assert!(err.to_string().contains(reason), "{err}");
        let mut answer = Vec::new();
        t.pending_socket_out(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{answer}"
        );
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            body.starts_with(reason) && body.ends_with('\n') && body.lines().count() == 1,
            "{body:?}"
        );
        let length: usize = answer
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        assert!(!t.is_ready());
        assert!(matches!(
            t.write(b"x", &mut Vec::new()),
            Err(TransportError::Closed)
        ));
    }
}

#[test]
fn origins_in_the_list_upgrade_and_others_get_403() {
    let config = || WsConfig {
        allowed_origins: AllowedOrigins::parse(&["https://app.example"]).unwrap(),
        ..WsConfig::default()
    };
    open_with(config(), "Origin: https://app.example:443\r\n");
    open_with(config(), ""); // No Origin: not a browser, allowed as nats-server does.
    let mut t = websocket(config());
    let err = t
        .read(
            &upgrade_request("/", "Origin: https://evil.example\r\n"),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "websocket upgrade refused (403): origin not allowed"
    );
    let mut answer = Vec::new();
    t.pending_socket_out(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
}

// --- Framing ---

#[test]
fn masked_text_and_binary_frames_are_one_byte_stream() {
    let mut t = open();
    let mut input = client_frame(FIN | TEXT, b"SUB a 1\r\nPU", KEY);
    input.extend(client_frame(FIN | BINARY, b"B a 2\r\nhi\r\n", [1, 2, 3, 4]));
    input.extend(client_frame(FIN | BINARY, &[], KEY)); // An empty message carries nothing.
    assert_eq!(app_bytes(&mut t, &input), b"SUB a 1\r\nPUB a 2\r\nhi\r\n");
    assert!(pending_frames(&mut t).is_empty());
}

#[test]
fn an_unmasked_client_frame_is_closed_with_1002() {
    let mut t = open();
    let (code, reason) = fails_with_close(&mut t, &[FIN | TEXT, 0x02, b'h', b'i']);
    assert_eq!(
        (code, reason.as_str()),
        (1002, "client frame is not masked")
    );
}

#[test]
fn a_fragmented_message_with_a_ping_in_between_is_reassembled_and_the_ping_answered() {
    let mut t = open();
    let mut input = client_frame(TEXT, b"PUB a 5\r\n", KEY);
    input.extend(client_frame(FIN | PING, b"are you there", KEY));
    input.extend(client_frame(CONT, b"hel", KEY));
    input.extend(client_frame(FIN | PONG, b"ignored", KEY));
    input.extend(client_frame(FIN | CONT, b"lo\r\n", KEY));
    let mut app_in = Vec::new();
    let outcomes = feed(&mut t, &input, &mut app_in).unwrap();
    assert_eq!(app_in, b"PUB a 5\r\nhello\r\n");
    assert!(outcomes.last().unwrap().wants_write);
    let frames = pending_frames(&mut t);
    assert_eq!(
        frames,
        vec![ServerFrame {
            first_byte: FIN | PONG,
            payload: b"are you there".to_vec()
        }]
    );
}

#[test]
fn a_close_frame_is_echoed_with_its_code_and_reported() {
    let mut t = open();
    let mut input = client_frame(FIN | CLOSE, b"\x03\xe8bye", KEY);
    input.extend(client_frame(FIN | TEXT, b"ignored after close", KEY));
    let mut app_in = Vec::new();
    let outcome = t.read(&input, &mut app_in).unwrap();
    assert_eq!(outcome.consumed, input.len());
    assert_eq!(
        outcome.peer_closed,
        Some(PeerClosed::WebSocket(Some(CloseCode::NORMAL)))
    );
    assert!(app_in.is_empty());
    let frames = pending_frames(&mut t);
    assert_eq!(frames.len(), 1);
    assert_eq!(close_code_of(&frames[0]), 1000);
    assert!(matches!(
        t.write(b"x", &mut Vec::new()),
        Err(TransportError::Closed)
    ));
}

#[test]
fn an_empty_close_frame_is_echoed_empty() {
    let mut t = open();
    let outcome = t
        .read(&client_frame(FIN | CLOSE, &[], KEY), &mut Vec::new())
        .unwrap();
    assert_eq!(outcome.peer_closed, Some(PeerClosed::WebSocket(None)));
    assert_eq!(
        pending_frames(&mut t),
        vec![ServerFrame {
            first_byte: FIN | CLOSE,
            payload: vec![]
        }]
    );
}

#[test]
fn an_application_close_code_is_accepted() {
    let mut t = open();
    let outcome = t
        .read(
            &client_frame(FIN | CLOSE, &4000u16.to_be_bytes(), KEY),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(
        outcome.peer_closed,
        Some(PeerClosed::WebSocket(Some(CloseCode(4000))))
    );
}

/// Every violation and the close code it sends.
#[test]
fn each_violation_sends_its_close_code() {
    let small = || {
        open_with(
            WsConfig {
                limits: WsLimits {
                    max_message: 100,
                    ..WsLimits::default()
                },
                ..WsConfig::default()
            },
            "",
        )
        .0
    };
    let mut too_long_control = vec![FIN | PING, 0x80 | 126, 0, 126];
    too_long_control.extend(KEY);
    let mut huge_length = vec![FIN | BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    huge_length.extend(KEY);
    let fragmented_bad_utf8 = [
        client_frame(TEXT, &[b'a', 0xe2, 0x82], KEY),
        client_frame(FIN | CONT, &[0x28], KEY),
    ]
    .concat();
    let two_starts = [
        client_frame(TEXT, b"a", KEY),
        client_frame(FIN | TEXT, b"b", KEY),
    ]
    .concat();
    let cases: Vec<(&str, Transport, Vec<u8>, u16, &str)> = vec![
        (
            "RSV2",
            open(),
            client_frame(FIN | 0x20 | TEXT, b"x", KEY),
            1002,
            "reserved bits set",
        ),
        (
            "RSV1 without deflate",
            open(),
            client_frame(FIN | RSV1 | TEXT, b"x", KEY),
            1002,
            "compressed frame without negotiated permessage-deflate",
        ),
        (
            "opcode 3",
            open(),
            client_frame(FIN | 0x3, b"x", KEY),
            1002,
            "reserved opcode",
        ),
        (
            "opcode 0xb",
            open(),
            client_frame(FIN | 0xb, b"x", KEY),
            1002,
            "reserved opcode",
        ),
        (
            "control over 125",
            open(),
            too_long_control,
            1002,
            "control frame payload over 125 bytes",
        ),
        (
            "fragmented ping",
            open(),
            client_frame(PING, b"x", KEY),
            1002,
            "fragmented control frame",
        ),
        (
            "lone continuation",
            open(),
            client_frame(FIN | CONT, b"x", KEY),
            1002,
            "continuation frame without a message to continue",
        ),
        (
            "new message mid-message",
            open(),
            two_starts,
            1002,
            "new message before the previous message's final frame",
        ),
        (
            "64-bit length high bit",
            open(),
            huge_length,
            1002,
            "invalid 64-bit payload length",
        ),
        (
            "close of one byte",
            open(),
            client_frame(FIN | CLOSE, &[3], KEY),
            1002,
            "close frame payload of one byte",
        ),
        (
            "close 1005",
            open(),
            client_frame(FIN | CLOSE, &1005u16.to_be_bytes(), KEY),
            1002,
            "invalid close code 1005",
        ),
        (
            "close 999",
            open(),
            client_frame(FIN | CLOSE, &999u16.to_be_bytes(), KEY),
            1002,
            "invalid close code 999",
        ),
        (
            "close reason not UTF-8",
            open(),
            client_frame(FIN | CLOSE, &[0x03, 0xe8, 0xff], KEY),
            1007,
            "close reason is not valid UTF-8",
        ),
        (
            "text not UTF-8",
            open(),
            client_frame(FIN | TEXT, &[b'a', 0xff], KEY),
            1007,
            "text message is not valid UTF-8",
        ),
        (
            "text cut inside a character",
            open(),
            client_frame(FIN | TEXT, &[b'a', 0xe2, 0x82], KEY),
            1007,
            "text message is not valid UTF-8",
        ),
        (
            "UTF-8 broken across fragments",
            open(),
            fragmented_bad_utf8,
            1007,
            "text message is not valid UTF-8",
        ),
        (
            "frame over the limit",
            small(),
            client_frame(FIN | BINARY, &[0; 101], KEY),
            1009,
            "message over 100 bytes",
        ),
        (
            "message over the limit",
            small(),
            [
                client_frame(BINARY, &[0; 60], KEY),
                client_frame(FIN | CONT, &[0; 41], KEY),
            ]
            .concat(),
            1009,
            "message over 100 bytes",
        ),
    ];
    for (name, mut t, input, code, reason) in cases {
        let (sent, sent_reason) = fails_with_close(&mut t, &input);
        assert_eq!((sent, sent_reason.as_str()), (code, reason), "{name}");
    }
}

#[test]
fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
    let mut t = open();
    let mut header = vec![FIN | BINARY, 0x80 | 127];
    header.extend(((WsLimits::DEFAULT_MAX_MESSAGE + 1) as u64).to_be_bytes());
    header.extend(KEY);
    let (code, _) = fails_with_close(&mut t, &header);
    assert_eq!(code, 1009);
}

#[test]
fn valid_utf8_split_across_fragments_and_binary_non_utf8_pass() {
    let mut t = open();
    let euro = "€".as_bytes();
    let mut input = client_frame(TEXT, &euro[..1], KEY);
    input.extend(client_frame(FIN | CONT, &euro[1..], KEY));
    input.extend(client_frame(FIN | BINARY, &[0xff, 0xfe], KEY));
    assert_eq!(app_bytes(&mut t, &input), [euro, &[0xff, 0xfe]].concat());
}

#[test]
fn server_frames_are_final_unmasked_binary_with_the_right_length_encoding() {
    let mut t = open();
    for len in [1usize, 125, 126, 65535, 65536] {
        let payload = vec![b'x'; len];
        let mut out = Vec::new();
        t.write(&payload, &mut out).unwrap();
        assert_eq!(
            server_frames(&out),
            vec![ServerFrame {
                first_byte: FIN | BINARY,
                payload
            }]
        );
    }
    let mut out = Vec::new();
    t.write(&[], &mut out).unwrap();
    assert!(out.is_empty(), "an empty write sends no frame");
}

#[test]
fn pending_replies_go_out_before_the_next_frame() {
    let mut t = open();
    app_bytes(&mut t, &client_frame(FIN | PING, b"p", KEY));
    let mut out = Vec::new();
    t.write(b"MSG", &mut out).unwrap();
    let frames = server_frames(&out);
    assert_eq!(frames[0].first_byte, FIN | PONG);
    assert_eq!(frames[1].payload, b"MSG");
}

#[test]
fn the_server_closes_with_its_code_and_reason() {
    let mut t = open();
    t.close(CloseCode::GOING_AWAY, "server shutdown").unwrap();
    let frames = pending_frames(&mut t);
    assert_eq!(close_code_of(&frames[0]), 1001);
    assert_eq!(&frames[0].payload[2..], b"server shutdown");
    assert!(matches!(
        t.write(b"x", &mut Vec::new()),
        Err(TransportError::Closed)
    ));
}

// --- permessage-deflate ---

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut data = payload.to_vec();
    data.extend([0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let mut decoder = flate2::write::DeflateDecoder::new(&mut out);
    decoder.write_all(&data).unwrap();
    decoder.flush().unwrap();
    drop(decoder);
    out
}

#[test]
fn deflate_is_negotiated_only_when_enabled_and_offered() {
    let (t, answer) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), OFFER);
    assert!(answer.contains(
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
    ));
    assert!(t.websocket_upgrade().unwrap().compression);
    let (t, answer) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), "");
    assert!(
        !answer.contains("Sec-WebSocket-Extensions") && !t.websocket_upgrade().unwrap().compression
    );
    let (t, answer) = open_with(WsConfig::default(), OFFER);
    assert!(
        !answer.contains("Sec-WebSocket-Extensions") && !t.websocket_upgrade().unwrap().compression
    );
}

#[test]
fn compressed_messages_whole_and_fragmented_inflate_into_the_stream() {
    let (mut t, _) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), OFFER);
    let first = b"PUB chat.room 11\r\nhello world\r\n".repeat(20);
    let second = "HPUB ünïcode 0 2\r\nhi\r\n".repeat(30);
    let compressed = compress(second.as_bytes());
    let (a, b) = compressed.split_at(compressed.len() / 3);
    let mut input = client_frame(FIN | RSV1 | BINARY, &compress(&first), KEY);
    input.extend(client_frame(RSV1 | TEXT, a, KEY));
    input.extend(client_frame(FIN | PING, b"mid", KEY));
    input.extend(client_frame(FIN | CONT, b, KEY));
    input.extend(client_frame(FIN | TEXT, b"plain too\r\n", KEY));
    let expected = [&first[..], second.as_bytes(), b"plain too\r\n"].concat();
    assert_eq!(app_bytes(&mut t, &input), expected);
    // And cut in every place a read could cut it.
    for cut in 1..input.len() {
        let (mut t, _) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), OFFER);
        let mut app_in = Vec::new();
        feed(&mut t, &input[..cut], &mut app_in).unwrap();
        feed(&mut t, &input[cut..], &mut app_in).unwrap();
        assert_eq!(app_in, expected, "cut at {cut}");
    }
}

#[test]
fn outgoing_messages_are_compressed_from_the_threshold_on() {
    let (mut t, _) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), OFFER);
    let big = b"MSG chat.room 1 11\r\nhello world\r\n".repeat(10);
    let mut out = Vec::new();
    t.write(b"PONG\r\n", &mut out).unwrap();
    t.write(&big, &mut out).unwrap();
    let frames = server_frames(&out);
    assert_eq!(
        frames[0],
        ServerFrame {
            first_byte: FIN | BINARY,
            payload: b"PONG\r\n".to_vec()
        }
    );
    assert_eq!(frames[1].first_byte, FIN | RSV1 | BINARY);
    assert!(frames[1].payload.len() < big.len() / 3);
    assert_eq!(inflate(&frames[1].payload), big);
}

#[test]
fn compression_violations_close_with_1002_and_1007() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // RSV1 belongs on the first frame only.
        (
            [
                client_frame(RSV1 | BINARY, &compress(b"ab"), KEY),
                client_frame(FIN | RSV1 | CONT, b"", KEY),
            ]
            .concat(),
            1002,
        ),
        (client_frame(FIN | RSV1 | PING, b"", KEY), 1002),
        // Not deflate data.
        (client_frame(FIN | RSV1 | BINARY, &[0xff; 16], KEY), 1007),
        // Inflates to bytes that are not UTF-8 in a text message.
        (
            client_frame(FIN | RSV1 | TEXT, &compress(&[0xff, 0xfe]), KEY),
            1007,
        ),
    ];
    for (input, code) in cases {
        let (mut t, _) = open_with(deflate_config(WsLimits::DEFAULT_MAX_MESSAGE), OFFER);
        assert_eq!(fails_with_close(&mut t, &input).0, code);
    }
}

#[test]
fn a_zip_bomb_is_refused_with_1009_after_at_most_the_limit() {
    let max = 64 * 1024;
    let (mut t, _) = open_with(deflate_config(max), OFFER);
    let bomb = compress(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < max, "the bomb itself fits: {}", bomb.len());
    let mut app_in = Vec::new();
    let err = t
        .read(&client_frame(FIN | RSV1 | BINARY, &bomb, KEY), &mut app_in)
        .unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
    assert!(app_in.capacity() <= 2 * max, "{}", app_in.capacity());
}

#[test]
fn one_read_of_many_compressed_messages_stops_at_the_budget() {
    let max = 64 * 1024;
    let (mut t, _) = open_with(deflate_config(max), OFFER);
    // Twenty messages that each inflate to 60 KiB: 1.2 MiB from a few KiB.
    let message = vec![b'a'; 60 * 1024];
    let frame = client_frame(FIN | RSV1 | BINARY, &compress(&message), KEY);
    let input = frame.repeat(20);
    let mut app_in = Vec::new();
    let mut rest = &input[..];
    let mut reads = 0;
    loop {
        let outcome = t.read(rest, &mut app_in).unwrap();
        reads += 1;
        assert!(
            app_in.len() <= 2 * max,
            "one read appended {}",
            app_in.len()
        );
        rest = &rest[outcome.consumed..];
        app_in.clear(); // The session parsed it.
        if !outcome.again {
            break;
        }
    }
    assert!(rest.is_empty());
    assert!(reads >= 10, "{reads} reads");
}

// --- Properties ---

/// A client message: its frames and what it carries.
#[derive(Debug, Clone)]
struct ClientMessage {
    text: bool,
    payload: Vec<u8>,
    /// Where the payload is cut into frames.
    cuts: Vec<usize>,
    /// A ping after each frame but the last, when set.
    pings: bool,
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    (
        any::<bool>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "\\PC{0,80}".prop_map(String::into_bytes),
        ],
        proptest::collection::vec(0usize..300, 0..4),
        any::<bool>(),
    )
        .prop_map(|(text, payload, cuts, pings)| {
            let text = text && std::str::from_utf8(&payload).is_ok();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
            cuts.sort_unstable();
            ClientMessage {
                text,
                payload,
                cuts,
                pings,
            }
        })
}

fn encode(messages: &[ClientMessage]) -> (Vec<u8>, Vec<u8>) {
    let mut input = upgrade_request("/", "");
    let mut expected = Vec::new();
    for m in messages {
        let mut start = 0;
        let mut pieces = Vec::new();
        for &cut in &m.cuts {
            pieces.push(&m.payload[start..cut]);
            start = cut;
        }
        pieces.push(&m.payload[start..]);
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = match (i, m.text) {
                (0, true) => TEXT,
                (0, false) => BINARY,
                _ => CONT,
            };
            let fin = if i + 1 == pieces.len() { FIN } else { 0 };
            input.extend(client_frame(fin | opcode, piece, [i as u8, 7, 0x55, 0xaa]));
            if m.pings && fin == 0 {
                input.extend(client_frame(FIN | PING, b"p", KEY));
            }
        }
        expected.extend(&m.payload);
    }
    (input, expected)
}

proptest! {
    /// A valid client stream cut at random points gives the same application bytes and the
    /// same replies as in one piece.
    #[test]
    fn a_stream_cut_anywhere_gives_the_same_bytes(
        messages in proptest::collection::vec(client_message(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (input, expected) = encode(&messages);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut t = websocket(WsConfig::default());
        let mut app_in = Vec::new();
        let mut replies = Vec::new();
        let mut start = 0;
        for &point in points.iter().chain([&input.len()]) {
            feed(&mut t, &input[start..point], &mut app_in).unwrap();
            t.pending_socket_out(&mut replies).unwrap();
            start = point;
        }
        prop_assert_eq!(&app_in, &expected);
        let mut whole = websocket(WsConfig::default());
        let mut whole_replies = Vec::new();
        prop_assert_eq!(app_bytes(&mut whole, &input), expected);
        whole.pending_socket_out(&mut whole_replies).unwrap();
        prop_assert_eq!(replies, whole_replies);
    }

    /// Random bytes after the upgrade: an error with a close frame, or application bytes
    /// never more than the input; never a panic.
    #[test]
    fn random_frames_never_panic_and_never_grow_beyond_the_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        compression in any::<bool>(),
    ) {
        let config = WsConfig { compression, ..WsConfig::default() };
        let (mut t, _) = open_with(config, OFFER);
        let mut app_in = Vec::new();
        match feed(&mut t, &bytes, &mut app_in) {
            Ok(_) => if !compression {
                prop_assert!(app_in.len() <= bytes.len());
            },
            Err(err) => {
                prop_assert!(err.close_code().is_some(), "{}", err);
                // Pongs may come first; the close frame is last.
                let frames = pending_frames(&mut t);
                let last = frames.last().unwrap();
                prop_assert_eq!(Some(CloseCode(close_code_of(last))), err.close_code());
            }
        }
    }

    /// Random bytes as an upgrade request: a refusal or a wait, never a panic.
    #[test]
    fn random_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut t = websocket(WsConfig::default());
        if let Err(err) = feed(&mut t, &bytes, &mut Vec::new()) {
            prop_assert!(matches!(err, TransportError::Handshake(_)), "{}", err);
            let mut answer = Vec::new();
            t.pending_socket_out(&mut answer).unwrap();
            prop_assert!(answer.starts_with(b"HTTP/1.1 4"));
        }
    }
}

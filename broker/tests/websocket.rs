//! The WebSocket port, as a WebSocket client (tungstenite) and a browser's bad day see it:
//! the NATS text protocol on `/` with commands split across frames and several in one,
//! the binary protocol on `/tern`, `wss://` when TLS is on, an upgrade refused with the
//! right status and reason (bad request, unknown path, refused origin), protocol errors
//! answered with the right close code and disturbing no other connection, a protocol
//! error of the session closing with `-ERR` and a close frame, an upgrade that never
//! comes timing out, and no plain WebSocket off loopback unless asked for.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use common::pki::Pki;
use common::{find, show, Broker, WAIT};

fn ws_broker(extra: &[&str]) -> Broker {
    let mut args = vec![
        "--websocket-listen",
        "127.0.0.1:0",
        "--monitor",
        "127.0.0.1:0",
        "--no-store",
    ];
    args.extend_from_slice(extra);
    Broker::with_args(&args)
}

fn open<S: Read + Write>(stream: S, url: &str) -> WebSocket<S> {
    let (ws, response) = tungstenite::client(url, stream).expect("upgrade accepted");
    assert_eq!(response.status(), 101);
    ws
}

fn connect(broker: &Broker, path: &str) -> WebSocket<TcpStream> {
    let addr = broker.websocket_addr();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    open(sock, &format!("ws://{addr}{path}"))
}

/// Reads binary messages until their bytes together contain `pattern`; returns them all.
fn read_until<S: Read + Write>(ws: &mut WebSocket<S>, pattern: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while find(&got, pattern).is_none() {
        assert!(
            Instant::now() < deadline,
            "no {:?} in {}",
            show(pattern),
            show(&got)
        );
        match ws.read().expect("a message") {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Text(t) => panic!("the server sends binary frames, got text {t:?}"),
            Message::Close(c) => panic!("closed: {c:?} after {}", show(&got)),
            _ => {}
        }
    }
    got
}

/// Reads until the server's close frame; returns its code and what came before.
fn read_close<S: Read + Write>(ws: &mut WebSocket<S>) -> (CloseCode, Vec<u8>) {
    let mut got = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => got.extend_from_slice(&b),
            Ok(Message::Close(Some(frame))) => return (frame.code, got),
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e} after {}", show(&got)),
        }
    }
}

#[test]
fn nats_text_protocol_on_the_root_path() {
    let broker = ws_broker(&[]);
    let mut ws = connect(&broker, "/");
    let info = read_until(&mut ws, b"}\r\n");
    assert!(info.starts_with(b"INFO {"), "{}", show(&info));
    assert!(find(&info, b"tls_required").is_none(), "{}", show(&info));
    // Commands split across frames, and several in one, as text and binary frames.
    ws.send(Message::text(
        "CONNECT {\"verbose\":false}\r\nSUB a.* 1\r\nPU",
    ))
    .unwrap();
    ws.send(Message::binary(b"B a.b 5\r\nhel".to_vec()))
        .unwrap();
    ws.send(Message::binary(b"lo\r\nPING\r\n".to_vec()))
        .unwrap();
    let got = read_until(&mut ws, b"PONG\r\n");
    assert!(
        find(&got, b"MSG a.b 1 5\r\nhello\r\n").is_some(),
        "{}",
        show(&got)
    );
    // A plain TCP client of the text port sees what the WebSocket client publishes.
    let mut tcp = common::RawClient::connect(broker.addr());
    tcp.send(b"SUB a.> 7\r\nPING\r\n");
    tcp.expect(b"PONG\r\n");
    ws.send(Message::binary(b"PUB a.c 2\r\nhi\r\n".to_vec()))
        .unwrap();
    tcp.expect(b"MSG a.c 7 2\r\nhi\r\n");
    let v = broker.varz_until(|v| v["websocket_upgrades"].as_u64() >= Some(1));
    assert_eq!(v["websocket_upgrades"], 1, "{v}");
    let connz = broker.monitor_json("/connz");
    let transports: Vec<&str> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert!(transports.contains(&"websocket"), "{connz}");
    assert!(transports.contains(&"tcp"), "{connz}");
}

#[test]
fn binary_protocol_on_the_tern_path() {
    use tern_protocol::binary::{
        encode_client_frame, ClientFrame, Hello, Preface, ServerFrame, ServerFrameDecoder,
    };
    let broker = ws_broker(&[]);
    let mut ws = connect(&broker, "/tern");
    let mut out = bytes::BytesMut::new();
    Preface::default().encode(&mut out);
    encode_client_frame(
        &ClientFrame::Hello(Hello {
            client_name: bytes::Bytes::from_static(b"browser"),
            ..Default::default()
        }),
        &mut out,
    )
    .unwrap();
    // The preface in one frame, HELLO cut across two more.
    let (a, rest) = out.split_at(8);
    let (b, c) = rest.split_at(3);
    for part in [a, b, c] {
        ws.send(Message::binary(part.to_vec())).unwrap();
    }
    let mut decoder = ServerFrameDecoder::new(Default::default());
    let mut buf = bytes::BytesMut::new();
    let deadline = Instant::now() + WAIT;
    let frame = loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            break f;
        }
        assert!(Instant::now() < deadline, "no WELCOME");
        if let Message::Binary(b) = ws.read().unwrap() {
            buf.extend_from_slice(&b);
        }
    };
    assert!(matches!(frame, ServerFrame::Welcome(_)), "{frame:?}");
}

#[test]
fn wss_when_tls_is_on() {
    let pki = Pki::new("localhost");
    let mut args: Vec<String> = pki.server_args();
    args.extend(["--websocket-listen", "127.0.0.1:0", "--no-store"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Broker::with_args(&refs);
    let addr = broker.websocket_addr();
    let tls = pki.connect_tls(addr);
    let mut ws = open(tls, &format!("wss://localhost:{}/", addr.port()));
    read_until(&mut ws, b"}\r\n");
    ws.send(Message::binary(
        b"SUB x 1\r\nPUB x 2\r\nok\r\nPING\r\n".to_vec(),
    ))
    .unwrap();
    let got = read_until(&mut ws, b"PONG\r\n");
    assert!(
        find(&got, b"MSG x 1 2\r\nok\r\n").is_some(),
        "{}",
        show(&got)
    );
    // A plain ws:// client gets no upgrade from a wss:// port.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(find(&rest, b"101").is_none(), "{}", show(&rest));
    // It is told why, in plain HTTP.
    assert!(
        rest.starts_with(b"HTTP/1.1 400 Bad Request\r\n") && find(&rest, b"TLS required").is_some(),
        "{}",
        show(&rest)
    );
}

/// Sends `request` on a raw socket and returns the whole answer (the server closes).
fn raw_upgrade(broker: &Broker, request: &str) -> String {
    let mut s = TcpStream::connect(broker.websocket_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[test]
fn refused_upgrades_get_a_status_and_a_reason() {
    let broker = ws_broker(&["--websocket-allowed-origins", "https://good.example"]);
    let no_upgrade = raw_upgrade(&broker, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(no_upgrade.starts_with("HTTP/1.1 400"), "{no_upgrade}");
    assert!(
        no_upgrade.to_lowercase().contains("upgrade"),
        "{no_upgrade}"
    );
    let request = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    let unknown = raw_upgrade(&broker, &request("/nope", "https://good.example"));
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let refused = raw_upgrade(&broker, &request("/", "https://evil.example"));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let ok = raw_upgrade(&broker, &request("/", "https://good.example"));
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let v = broker.varz_until(|v| v["transport_failures"]["websocket_upgrade"].as_u64() >= Some(3));
    assert_eq!(v["transport_failures"]["websocket_upgrade"], 3, "{v}");
}

/// A client frame: FIN, `opcode`, masked unless `unmasked`.
fn frame(opcode: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode];
    if unmasked {
        f.push(payload.len() as u8);
        f.extend_from_slice(payload);
    } else {
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    f
}

/// A raw upgraded socket (after the 101 and the INFO frame).
fn raw_ws(broker: &Broker) -> TcpStream {
    let mut s = TcpStream::connect(broker.websocket_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while find(&got, b"\r\n\r\n").is_none() {
        s.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", show(&got));
    s
}

/// The close code of the first close frame the server sends on `s`.
fn close_code(s: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut at = 0;
    while at + 2 <= got.len() {
        let (opcode, len) = (got[at] & 0x0f, (got[at + 1] & 0x7f) as usize);
        let (len, head) = match len {
            126 => (u16::from_be_bytes([got[at + 2], got[at + 3]]) as usize, 4),
            127 => panic!("a large frame"),
            n => (n, 2),
        };
        if opcode == 8 {
            return u16::from_be_bytes([got[at + head], got[at + head + 1]]);
        }
        at += head + len;
    }
    panic!("no close frame in {}", show(&got));
}

#[test]
fn protocol_errors_get_their_close_code_and_disturb_no_one_else() {
    let broker = ws_broker(&[]);
    let mut bystander = connect(&broker, "/");
    read_until(&mut bystander, b"}\r\n");
    bystander
        .send(Message::binary(b"SUB z 1\r\nPING\r\n".to_vec()))
        .unwrap();
    read_until(&mut bystander, b"PONG\r\n");

    let mut unmasked = raw_ws(&broker);
    unmasked.write_all(&frame(2, b"PING\r\n", true)).unwrap();
    assert_eq!(close_code(&mut unmasked), 1002);

    let mut bad_utf8 = raw_ws(&broker);
    bad_utf8
        .write_all(&frame(1, b"PUB a 1\r\n\xff\r\n", false))
        .unwrap();
    assert_eq!(close_code(&mut bad_utf8), 1007);

    let mut bad_opcode = raw_ws(&broker);
    bad_opcode.write_all(&frame(3, b"x", false)).unwrap();
    assert_eq!(close_code(&mut bad_opcode), 1002);

    // A NATS protocol error: -ERR, then a close frame.
    let mut nats_error = connect(&broker, "/");
    read_until(&mut nats_error, b"}\r\n");
    nats_error
        .send(Message::binary(b"FOO\r\n".to_vec()))
        .unwrap();
    let (code, before) = read_close(&mut nats_error);
    assert!(find(&before, b"-ERR").is_some(), "{}", show(&before));
    assert_eq!(code, CloseCode::Protocol);

    bystander
        .send(Message::binary(b"PUB z 3\r\nyes\r\n".to_vec()))
        .unwrap();
    read_until(&mut bystander, b"MSG z 1 3\r\nyes\r\n");
    let v = broker.varz_until(|v| v["transport_failures"]["websocket"].as_u64() >= Some(3));
    assert_eq!(v["transport_failures"]["websocket"], 3, "{v}");
}

#[test]
fn an_upgrade_that_never_comes_times_out() {
    let broker = ws_broker(&["--auth-timeout", "200ms"]);
    let mut s = TcpStream::connect(broker.websocket_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(started.elapsed() < WAIT, "not closed");
    let v = broker.varz_until(|v| v["transport_failures"]["handshake_timeout"].as_u64() >= Some(1));
    assert_eq!(v["transport_failures"]["handshake_timeout"], 1, "{v}");
}

#[test]
fn plain_websocket_off_loopback_needs_to_be_asked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-binary",
            "--no-monitor",
            "--no-store",
        ])
        .args(["--websocket-listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("websocket_listen") && err.contains("websocket_no_tls"),
        "{err}"
    );
}

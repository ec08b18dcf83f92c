//! Interoperability with independent WebSocket clients: tungstenite, in memory, over plain
//! TCP and over TLS (the WebSocket layer on the TLS layer); and Python's `websockets` over a
//! real socket for permessage-deflate both ways (tungstenite has no compression), skipped
//! with a message where Python or the package is missing.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;

use common::{feed, Pki};
use tern_transport::{load_server_config, CloseCode, TlsLimits, Transport, WsConfig};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::{HandshakeError, Message, WebSocket};

/// The client's socket: what the client writes goes into the server transport at once;
/// the application bytes the server gets are echoed back through it; reads return what
/// the server wrote, `WouldBlock` when there is nothing, the end of the stream once the
/// server has closed.
struct EchoServer {
    transport: Transport,
    closed: bool,
    to_client: Vec<u8>,
    read_pos: usize,
    app_in: Vec<u8>,
}

impl EchoServer {
    fn new(transport: Transport) -> Self {
        Self {
            transport,
            closed: false,
            to_client: Vec::new(),
            read_pos: 0,
            app_in: Vec::new(),
        }
    }
}

impl Write for EchoServer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = feed(&mut self.transport, buf, &mut self.app_in);
        self.transport
            .pending_socket_out(&mut self.to_client)
            .map_err(io::Error::other)?;
        let outcomes = result.map_err(io::Error::other)?;
        self.closed |= outcomes.iter().any(|o| o.peer_closed.is_some());
        if self.transport.is_ready() && !self.app_in.is_empty() {
            self.transport
                .write(&self.app_in, &mut self.to_client)
                .map_err(io::Error::other)?;
            self.app_in.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for EchoServer {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let ready = &self.to_client[self.read_pos..];
        if ready.is_empty() {
            return match self.closed {
                true => Ok(0),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = ready.len().min(out.len());
        out[..n].copy_from_slice(&ready[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

fn connect<S: Read + Write>(url: &str, stream: S) -> WebSocket<S> {
    let mut attempt = tungstenite::client::client(url, stream);
    for _ in 0..10 {
        match attempt {
            Ok((ws, response)) => {
                assert_eq!(response.status(), 101);
                return ws;
            }
            Err(HandshakeError::Interrupted(mid)) => attempt = mid.handshake(),
            Err(HandshakeError::Failure(e)) => panic!("handshake failed: {e}"),
        }
    }
    panic!("the handshake did not complete");
}

/// Reads binary messages until `len` bytes have come back (the echo may cut a message
/// into several).
fn read_echo<S: Read + Write>(ws: &mut WebSocket<S>, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        match ws.read().unwrap() {
            Message::Binary(bytes) => got.extend_from_slice(&bytes),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    got
}

fn conversation<S: Read + Write>(ws: &mut WebSocket<S>) {
    ws.send(Message::text("CONNECT {}\r\nPING\r\n")).unwrap();
    assert_eq!(read_echo(ws, 18), b"CONNECT {}\r\nPING\r\n");

    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(read_echo(ws, big.len()), big);

    // A text message in three frames.
    for (data, opcode, fin) in [
        (&b"PUB a "[..], OpCode::Data(Data::Text), false),
        (b"2\r\n", OpCode::Data(Data::Continue), false),
        (b"hi\r\n", OpCode::Data(Data::Continue), true),
    ] {
        ws.write(Message::Frame(Frame::message(data.to_vec(), opcode, fin)))
            .unwrap();
    }
    ws.flush().unwrap();
    assert_eq!(read_echo(ws, 13), b"PUB a 2\r\nhi\r\n");

    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .unwrap();
    match ws.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"still there?"),
        other => panic!("expected the pong, got {other:?}"),
    }

    ws.close(Some(CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(u16::from(frame.unwrap().code), CloseCode::NORMAL.0);
            }
            Ok(other) => panic!("expected the close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn tungstenite_client_over_plain_tcp() {
    let server = Transport::websocket(Arc::new(WsConfig::default()));
    let mut ws = connect("ws://localhost/", EchoServer::new(server));
    conversation(&mut ws);
}

#[test]
fn tungstenite_client_over_tls() {
    let pki = Pki::new();
    let config = load_server_config(&pki.settings(false, false)).unwrap();
    let server =
        Transport::websocket_tls(config, TlsLimits::default(), Arc::new(WsConfig::default()))
            .unwrap();
    let tls = rustls::StreamOwned::new(pki.client(None), EchoServer::new(server));
    let mut ws = connect("wss://localhost/tern", tls);
    let tern = ws
        .get_ref()
        .sock
        .transport
        .websocket_upgrade()
        .unwrap()
        .path
        .clone();
    assert_eq!(tern, "/tern");
    conversation(&mut ws);
}

/// The Python client: sends compressible messages with permessage-deflate and checks the
/// echo (which the server compresses). Prints `ok`.
const PYTHON_CLIENT: &str = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], compression="deflate", max_size=None, open_timeout=5) as ws:
    names = [e.name for e in ws.protocol.extensions]
    assert names == ["permessage-deflate"], names
    for message in ["PUB chat.room 5\r\nhello\r\n" * 300, b"\x00\x01 binary \xff" * 500, "PING\r\n"]:
        ws.send(message)
        want = message.encode() if isinstance(message, str) else message
        got = b""
        while len(got) < len(want):
            m = ws.recv(timeout=5)
            got += m if isinstance(m, bytes) else m.encode()
        assert got == want, (len(got), len(want))
print("ok")
"#;

/// Serves one WebSocket connection on a blocking socket until it closes; returns the
/// socket bytes read and the application bytes they carried.
fn serve_one(listener: TcpListener, config: WsConfig) -> (usize, usize) {
    let (mut socket, _) = listener.accept().unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut transport = Transport::websocket(Arc::new(config));
    let (mut buf, mut app_in, mut out) = (vec![0u8; 16 * 1024], Vec::new(), Vec::new());
    let (mut socket_bytes, mut app_bytes) = (0, 0);
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return (socket_bytes, app_bytes),
            Ok(n) => n,
        };
        socket_bytes += n;
        let mut rest = &buf[..n];
        loop {
            let result = transport.read(rest, &mut app_in);
            transport.pending_socket_out(&mut out).unwrap();
            let Ok(outcome) = result else {
                let _ = socket.write_all(&out);
                return (socket_bytes, app_bytes);
            };
            rest = &rest[outcome.consumed..];
            if transport.is_ready() && !app_in.is_empty() {
                app_bytes += app_in.len();
                transport.write(&app_in, &mut out).unwrap();
                app_in.clear();
            }
            socket.write_all(&out).unwrap();
            out.clear();
            if outcome.peer_closed.is_some() {
                return (socket_bytes, app_bytes);
            }
            if !outcome.again {
                break;
            }
        }
    }
}

/// The Python to run the client with: `TERN_PYTHON` (`make test` sets it to the interop
/// venv, which installs `websockets`), else `python3` from the `PATH`.
fn python() -> String {
    std::env::var("TERN_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[test]
fn python_websockets_client_with_permessage_deflate_both_ways() {
    let python = python();
    let available = Command::new(&python)
        .args(["-c", "import websockets.sync.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        // Where the venv was made for this run, its absence is a failure, not a skip.
        assert!(
            std::env::var_os("TERN_PYTHON").is_none(),
            "TERN_PYTHON={python} cannot import websockets.sync.client"
        );
        eprintln!(
            "SKIPPED python_websockets_client_with_permessage_deflate_both_ways: needs python3 \
             with the `websockets` package (`make test` installs it into target/py)"
        );
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = WsConfig {
        compression: true,
        ..WsConfig::default()
    };
    let server = std::thread::spawn(move || serve_one(listener, config));
    let output = Command::new(&python)
        .args(["-c", PYTHON_CLIENT, &url])
        .output()
        .unwrap();
    let (socket_bytes, app_bytes) = server.join().unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    // The client compressed: far fewer bytes on the wire than it delivered.
    assert!(
        socket_bytes * 4 < app_bytes,
        "{socket_bytes} socket bytes for {app_bytes} application bytes"
    );
}

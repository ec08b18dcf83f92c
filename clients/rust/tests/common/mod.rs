//! A scripted fake broker for tests: a real `TcpListener` speaking the binary protocol
//! through `tern-protocol`'s codec, driven step by step from the test.
//!
//! Every wait has a deadline ([`WAIT`]); a step that does not happen in time fails the
//! test with a message instead of hanging it.

#![allow(dead_code)] // Each test file uses a different part of it.

pub mod broker;
pub mod proxy;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_client::{Event, Events};
use tern_protocol::binary::{
    encode_server_frame, ClientFrame, ClientFrameDecoder, Hello, Message, Preface, ServerFrame,
    Welcome,
};

/// The longest any single step of a test waits.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct FakeServer {
    listener: TcpListener,
}

impl FakeServer {
    pub fn bind() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeServer { listener }
    }

    pub fn url(&self) -> String {
        format!("tern://{}", self.listener.local_addr().unwrap())
    }

    /// The next connection, within [`WAIT`].
    pub fn accept(&self) -> FakeConn {
        self.try_accept(WAIT)
            .unwrap_or_else(|| panic!("no connection within {WAIT:?}"))
    }

    /// The next connection, if one comes within `timeout`.
    pub fn try_accept(&self, timeout: Duration) -> Option<FakeConn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_nodelay(true).unwrap();
                    return Some(FakeConn {
                        stream,
                        buf: BytesMut::new(),
                        decoder: ClientFrameDecoder::default(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Accepts and completes the handshake with log `epoch`.
    pub fn accept_welcome(&self, epoch: u64) -> FakeConn {
        let mut conn = self.accept();
        conn.handshake(epoch);
        conn
    }
}

pub struct FakeConn {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: ClientFrameDecoder,
}

impl FakeConn {
    /// Reads more bytes: true if some came, false on timeout, `None` at the end of the
    /// stream.
    fn try_fill(&mut self, deadline: Instant) -> Option<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(false);
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Some(false)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    fn fill(&mut self, deadline: Instant) -> bool {
        self.try_fill(deadline)
            .unwrap_or_else(|| panic!("the client closed the connection"))
    }

    /// Asserts that the client closes the connection (within [`WAIT`]) without sending
    /// another frame.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                panic!("expected the end of the connection, got {frame:?}");
            }
            match self.try_fill(deadline) {
                None => return,
                Some(true) => {}
                Some(false) => panic!("the client did not close within {WAIT:?}"),
            }
        }
    }

    /// Reads the preface and `HELLO`.
    pub fn read_hello(&mut self) -> Hello {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = Preface::decode(&mut self.buf).unwrap() {
                assert_eq!(p, Preface::default());
                break;
            }
            assert!(self.fill(deadline), "no preface within {WAIT:?}");
        }
        match self.recv() {
            ClientFrame::Hello(h) => h,
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    pub fn welcome(epoch: u64) -> Welcome {
        Welcome {
            version: 1,
            shard_count: 4,
            max_payload: 1 << 20,
            max_frame: (1 << 20) + (1 << 16),
            ping_interval_ms: 60_000,
            client_id: 7,
            log_epoch: epoch,
            server_id: Bytes::from_static(b"fake"),
        }
    }

    /// Reads the preface and `HELLO`, answers `WELCOME` with log `epoch`.
    pub fn handshake(&mut self, epoch: u64) -> Hello {
        let hello = self.read_hello();
        self.send(ServerFrame::Welcome(Self::welcome(epoch)));
        hello
    }

    /// The next frame within `timeout`, if any.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<ClientFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// The next frame, within [`WAIT`].
    pub fn recv(&mut self) -> ClientFrame {
        self.recv_timeout(WAIT)
            .unwrap_or_else(|| panic!("no frame within {WAIT:?}"))
    }

    /// The next frame that is not a `PING` (those are answered with `PONG`).
    pub fn recv_answering_pings(&mut self) -> ClientFrame {
        loop {
            match self.recv() {
                ClientFrame::Ping => self.send(ServerFrame::Pong),
                other => return other,
            }
        }
    }

    pub fn send(&mut self, frame: ServerFrame) {
        let mut buf = BytesMut::new();
        encode_server_frame(&frame, &mut buf).unwrap();
        self.stream.write_all(&buf).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Closes the connection (both directions).
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A `MESSAGE` for `sid`.
pub fn message(sid: u32, shard: u16, sequence: u64, subject: &str, payload: &str) -> ServerFrame {
    ServerFrame::Message(Message {
        sid,
        priority: 0,
        shard,
        sequence,
        timestamp: 1,
        replayed: false,
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        reply: None,
        headers: None,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

/// Waits for the first event `pick` accepts, within [`WAIT`]; the events before it are
/// returned too (for assertions on order).
pub fn wait_event<T>(events: &Events, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Some(e) => {
                if let Some(t) = pick(&e) {
                    return t;
                }
                seen.push(e);
            }
            None => panic!("the awaited event did not come within {WAIT:?}; saw {seen:?}"),
        }
    }
}

/// A directory of the test's own (created empty), removed when dropped: declare it before
/// the broker that uses it, so it is dropped after it.
pub fn temp_dir(tag: &str) -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tern-client-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

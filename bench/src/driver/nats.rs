//! The text (NATS) protocol driver: one blocking `TcpStream` per connection.
//!
//! Owns: the socket, a write batch and a read buffer per connection; the handshake
//! (`INFO` → `CONNECT` + `PING` → `PONG`); answering the broker's `PING`s.
//!
//! `PUB` lines are written by hand into the batch (the hot path: no allocation per
//! message); every other operation goes through `tern_protocol::text::encode_client_op`, and
//! everything the broker sends is parsed by `tern_protocol::text::ServerDecoder`.
//!
//! Never: buffers without bound. The write batch is written once it passes
//! [`WRITE_BATCH`]; the read buffer grows only while reads fill it, up to [`READ_MAX`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_protocol::text::{
    encode_client_op, encode_pub_line, ClientOp, ConnectOptions, Limits, ServerDecoder, ServerOp,
    Subscribe,
};

use super::{Connection, Driver, DriverError};

/// Bytes queued before a publish writes the batch.
pub const WRITE_BATCH: usize = 64 * 1024;
/// The first read size of a connection (idle connections stay this small).
pub const READ_MIN: usize = 4 * 1024;
/// The largest read size a busy connection grows to.
pub const READ_MAX: usize = 256 * 1024;
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens text-protocol connections to one address.
#[derive(Debug, Clone)]
pub struct NatsDriver {
    addr: SocketAddr,
    name: String,
}

impl NatsDriver {
    /// A driver for the broker at `addr`; `name` is sent in `CONNECT`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        NatsDriver {
            addr,
            name: name.into(),
        }
    }
}

impl Driver for NatsDriver {
    fn protocol(&self) -> &'static str {
        "text"
    }

    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        let mut conn = NatsConnection::open(self.addr)?;
        let options = ConnectOptions {
            verbose: false,
            pedantic: false,
            echo: true,
            name: Some(self.name.clone()),
            lang: Some("rust".into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            protocol: Some(1),
            ..ConnectOptions::default()
        };
        conn.wait_for_info()?;
        encode_client_op(&ClientOp::Connect(Box::new(options)), &mut conn.out);
        conn.sync(HANDSHAKE_TIMEOUT)?;
        Ok(Box::new(conn))
    }
}

/// One connection speaking the text protocol.
pub struct NatsConnection {
    sock: TcpStream,
    out: BytesMut,
    inbuf: BytesMut,
    read_size: usize,
    decoder: ServerDecoder,
    read_timeout: Option<Duration>,
    next_sid: u64,
    pongs: u64,
}

impl NatsConnection {
    fn open(addr: SocketAddr) -> Result<Self, DriverError> {
        let sock = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
        sock.set_nodelay(true)?;
        Ok(NatsConnection {
            sock,
            out: BytesMut::with_capacity(1024),
            inbuf: BytesMut::new(),
            read_size: READ_MIN,
            decoder: ServerDecoder::new(Limits {
                max_control_line: Limits::DEFAULT_MAX_CONTROL_LINE,
                // Large enough for any broker's configured max_payload.
                max_payload: 64 * 1024 * 1024,
            }),
            read_timeout: None,
            next_sid: 1,
            pongs: 0,
        })
    }

    fn wait_for_info(&mut self) -> Result<(), DriverError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            if let Some(op) = self.decoder.decode(&mut self.inbuf)? {
                return match op {
                    ServerOp::Info(_) => Ok(()),
                    ServerOp::Err(text) => Err(DriverError::Server(text)),
                    _ => Err(DriverError::Server("expected INFO first".into())),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout("INFO"));
            }
            self.fill(left)?;
        }
    }

    /// Reads once (waiting at most `wait`). False when the wait ran out.
    fn fill(&mut self, wait: Duration) -> Result<bool, DriverError> {
        let wait = wait.max(Duration::from_millis(1));
        if self.read_timeout != Some(wait) {
            self.sock.set_read_timeout(Some(wait))?;
            self.read_timeout = Some(wait);
        }
        let start = self.inbuf.len();
        self.inbuf.resize(start + self.read_size, 0);
        let result = self.sock.read(&mut self.inbuf[start..]);
        match result {
            Ok(0) => {
                self.inbuf.truncate(start);
                Err(DriverError::Closed)
            }
            Ok(n) => {
                self.inbuf.truncate(start + n);
                if n == self.read_size && self.read_size < READ_MAX {
                    self.read_size *= 2;
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.inbuf.truncate(start);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.inbuf.truncate(start);
                Ok(true)
            }
            Err(e) => {
                self.inbuf.truncate(start);
                Err(e.into())
            }
        }
    }

    /// Decodes every whole operation buffered; returns the messages handed over.
    fn dispatch(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<usize, DriverError> {
        let mut messages = 0;
        while let Some(op) = self.decoder.decode(&mut self.inbuf)? {
            match op {
                ServerOp::Msg(m) => {
                    messages += 1;
                    on_message(&m.payload);
                }
                ServerOp::Ping => encode_client_op(&ClientOp::Pong, &mut self.out),
                ServerOp::Pong => self.pongs += 1,
                ServerOp::Err(text) => return Err(DriverError::Server(text)),
                ServerOp::Info(_) | ServerOp::Ok => {}
            }
        }
        if !self.out.is_empty() {
            self.flush()?;
        }
        Ok(messages)
    }
}

impl Connection for NatsConnection {
    fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<(), DriverError> {
        let sid = self.next_sid;
        self.next_sid += 1;
        let op = ClientOp::Sub(Subscribe {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            queue: queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
            sid: Bytes::from(sid.to_string()),
        });
        encode_client_op(&op, &mut self.out);
        Ok(())
    }

    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), DriverError> {
        let out = &mut self.out;
        encode_pub_line(out, subject.as_bytes(), None, None, payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        if self.out.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DriverError> {
        if !self.out.is_empty() {
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn sync(&mut self, timeout: Duration) -> Result<(), DriverError> {
        encode_client_op(&ClientOp::Ping, &mut self.out);
        self.flush()?;
        let want = self.pongs + 1;
        let deadline = Instant::now() + timeout;
        loop {
            self.dispatch(&mut |_| {})?;
            if self.pongs >= want {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout("PONG"));
            }
            self.fill(left)?;
        }
    }

    fn receive(
        &mut self,
        wait: Duration,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, DriverError> {
        let buffered = self.dispatch(on_message)?;
        if buffered > 0 {
            return Ok(buffered);
        }
        if !self.fill(wait)? {
            return Ok(0);
        }
        self.dispatch(on_message)
    }
}

//! The text (NATS) protocol driver: one blocking socket per connection.
//!
//! Owns: the handshake (`INFO` → `CONNECT` + `PING` → `PONG`, with the driver's name or,
//! through [`Driver::connect_as`], a connection's own name and user and password; over
//! TLS, the plain-text `INFO` with `tls_required`, then the TLS handshake, then `CONNECT`,
//! as NATS clients do), the stuck consumer's connection (handshake, `SUB`, `PING` →
//! `PONG`, then handed over as a [`super::Stalled`] that is never read), subscription ids,
//! requests (`PUB` with a reply subject), answering the broker's `PING`s, turning `-ERR`
//! into [`DriverError::Server`], and counting what `ternd`'s drop notices
//! (`$TERN.DROPPED` messages on a subscription's sid) say was dropped instead of handing
//! them over as deliveries.
//!
//! `PUB` lines go through `tern_protocol::text::encode_pub_line` straight into the write
//! batch (the hot path: no allocation per message); every other operation goes through
//! `tern_protocol::text::encode_client_op`, and everything the broker sends is parsed by
//! `tern_protocol::text::ServerDecoder`.
//!
//! Never: buffers without bound (see [`super::socket`]).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_protocol::text::{
    encode_client_op, encode_pub_line, ClientOp, ConnectOptions, Limits, ServerDecoder, ServerOp,
    Subscribe,
};

use super::socket::{self, Dispatch, Opening, Socket, TlsStart, HANDSHAKE_TIMEOUT};
use super::{Connection, Dial, Driver, DriverError, Protocol, Stalled, Transport};

/// Opens text-protocol connections to one address.
#[derive(Debug, Clone)]
pub struct NatsDriver {
    dial: Dial,
    name: String,
}

impl NatsDriver {
    /// A driver for the broker at `addr` over plain TCP; `name` is sent in `CONNECT`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        NatsDriver::via(Dial::tcp(addr), name)
    }

    /// A driver for the broker `dial` names, over its transport.
    pub fn via(dial: Dial, name: impl Into<String>) -> Self {
        NatsDriver {
            dial,
            name: name.into(),
        }
    }
}

impl Driver for NatsDriver {
    fn protocol(&self) -> &'static str {
        "text"
    }

    fn transport(&self) -> Transport {
        self.dial.transport
    }

    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        Ok(Box::new(self.open(None, &self.name, None)?))
    }

    fn connect_as(
        &self,
        name: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Box<dyn Connection>, DriverError> {
        Ok(Box::new(self.open(None, name, credentials)?))
    }

    fn connect_stalled(&self, subject: &str, recv_buffer: usize) -> Result<Stalled, DriverError> {
        let mut conn = self.open(Some(recv_buffer), &self.name, None)?;
        conn.subscribe(subject, None)?;
        conn.sync(HANDSHAKE_TIMEOUT)?;
        let mut ping = BytesMut::new();
        encode_client_op(&ClientOp::Ping, &mut ping);
        Ok(Stalled::new(conn.socket.into_stream()?, ping.to_vec()))
    }
}

impl NatsDriver {
    /// Connects (with `SO_RCVBUF` set to `recv_buffer` first, if given) and completes the
    /// handshake, introducing itself as `name` (with a user and password, if given).
    fn open(
        &self,
        recv_buffer: Option<usize>,
        name: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<NatsConnection, DriverError> {
        let mut conn = NatsConnection::open(&self.dial, recv_buffer)?;
        let options = ConnectOptions {
            verbose: false,
            pedantic: false,
            echo: true,
            name: Some(name.to_string()),
            user: credentials.map(|(user, _)| user.to_string()),
            pass: credentials.map(|(_, pass)| pass.to_string()),
            lang: Some("rust".into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            protocol: Some(1),
            ..ConnectOptions::default()
        };
        let tls_required = conn.wait_for_info()?;
        match (self.dial.transport, tls_required) {
            (Transport::Tls, true) => conn.socket.start_tls(self.dial.tls()?)?,
            (Transport::Tls, false) => {
                return Err(DriverError::Unexpected(
                    "INFO without tls_required on a TLS dial (is the port TLS?)",
                ))
            }
            (Transport::Tcp, true) => {
                return Err(DriverError::Unsupported(
                    "the broker requires TLS (--transport tls)",
                ))
            }
            // Over WebSocket the URL chose: the INFO's flag is about the TCP port.
            (Transport::Tcp | Transport::Websocket | Transport::Wss, _) => {}
        }
        encode_client_op(&ClientOp::Connect(Box::new(options)), &mut conn.socket.out);
        conn.sync(HANDSHAKE_TIMEOUT)?;
        Ok(conn)
    }
}

/// One connection speaking the text protocol.
pub struct NatsConnection {
    socket: Socket,
    decoder: ServerDecoder,
    next_sid: u64,
    pongs: u64,
    /// What `$TERN.DROPPED` notices said was dropped.
    dropped: u64,
}

/// The subject of `ternd`'s drop notices on the text port.
pub const DROP_NOTICE_SUBJECT: &[u8] = b"$TERN.DROPPED";

/// The count a drop notice's JSON payload gives (`{"dropped":831,...}`); at least 1, so a
/// notice that does not parse still counts as a loss.
fn notice_count(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["dropped"].as_u64())
        .unwrap_or(1)
        .max(1)
}

impl NatsConnection {
    fn open(dial: &Dial, recv_buffer: Option<usize>) -> Result<Self, DriverError> {
        let opening = Opening {
            tls_start: TlsStart::AfterGreeting,
            websocket_path: Protocol::Text.websocket_path(),
        };
        Ok(NatsConnection {
            socket: Socket::connect(dial, recv_buffer, opening)?,
            decoder: ServerDecoder::new(Limits {
                max_control_line: Limits::DEFAULT_MAX_CONTROL_LINE,
                // Large enough for any broker's configured max_payload.
                max_payload: 64 * 1024 * 1024,
                ..Limits::default()
            }),
            next_sid: 1,
            pongs: 0,
            dropped: 0,
        })
    }

    /// Waits for the broker's `INFO`; whether it says `tls_required`.
    fn wait_for_info(&mut self) -> Result<bool, DriverError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            if let Some(op) = self.decoder.decode(&mut self.socket.inbuf)? {
                return match op {
                    ServerOp::Info(info) => Ok(info.tls_required),
                    ServerOp::Err(message) => Err(DriverError::Server {
                        code: None,
                        message,
                    }),
                    _ => Err(DriverError::Unexpected("an operation before INFO")),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout("INFO"));
            }
            self.socket.fill(left)?;
        }
    }

    /// Decodes every whole operation buffered, or up to the `PONG` that makes `pongs`
    /// reach `until_pongs` (the operations after it stay buffered for
    /// [`Connection::receive`]); returns the messages handed over.
    fn dispatch_buffered(
        &mut self,
        on_message: &mut dyn FnMut(&[u8]),
        until_pongs: Option<u64>,
    ) -> Result<usize, DriverError> {
        let mut messages = 0;
        while until_pongs.is_none_or(|want| self.pongs < want) {
            let Some(op) = self.decoder.decode(&mut self.socket.inbuf)? else {
                break;
            };
            match op {
                ServerOp::Msg(m) if &m.subject[..] == DROP_NOTICE_SUBJECT => {
                    self.dropped += notice_count(&m.payload);
                }
                ServerOp::Msg(m) => {
                    messages += 1;
                    on_message(&m.payload);
                }
                ServerOp::Ping => encode_client_op(&ClientOp::Pong, &mut self.socket.out),
                ServerOp::Pong => self.pongs += 1,
                ServerOp::Err(message) => {
                    return Err(DriverError::Server {
                        code: None,
                        message,
                    })
                }
                ServerOp::Info(_) | ServerOp::Ok => {}
            }
        }
        self.socket.flush()?;
        Ok(messages)
    }
}

impl Dispatch for NatsConnection {
    fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }

    fn pongs(&self) -> u64 {
        self.pongs
    }

    fn dispatch(
        &mut self,
        on_message: &mut dyn FnMut(&[u8]),
        until_pongs: Option<u64>,
    ) -> Result<usize, DriverError> {
        self.dispatch_buffered(on_message, until_pongs)
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
        encode_client_op(&op, &mut self.socket.out);
        Ok(())
    }

    fn request(&mut self, subject: &str, reply: &str, payload: &[u8]) -> Result<(), DriverError> {
        let out = &mut self.socket.out;
        encode_pub_line(
            out,
            subject.as_bytes(),
            Some(reply.as_bytes()),
            None,
            payload.len(),
        );
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.socket.flush_if_full()
    }

    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), DriverError> {
        let out = &mut self.socket.out;
        encode_pub_line(out, subject.as_bytes(), None, None, payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.socket.flush_if_full()
    }

    fn flush(&mut self) -> Result<(), DriverError> {
        self.socket.flush()
    }

    fn sync(&mut self, timeout: Duration) -> Result<(), DriverError> {
        encode_client_op(&ClientOp::Ping, &mut self.socket.out);
        socket::sync_to_pong(self, timeout)
    }

    fn receive(
        &mut self,
        wait: Duration,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, DriverError> {
        socket::receive(self, wait, on_message)
    }

    fn dropped(&self) -> u64 {
        // nats-server never says what it dropped (a slow consumer is disconnected);
        // ternd sends `$TERN.DROPPED` notices.
        self.dropped
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_notice_counts_what_it_says_and_at_least_one() {
        assert_eq!(
            notice_count(br#"{"dropped":831,"ranges":[{"shard":1,"first":1,"last":831}]}"#),
            831
        );
        assert_eq!(notice_count(b"not json"), 1);
        assert_eq!(notice_count(br#"{"dropped":0}"#), 1);
    }
}

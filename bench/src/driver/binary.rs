//! The binary protocol driver: Tern's own framed protocol (port 4224), one blocking socket
//! per connection.
//!
//! Owns: the handshake (preface + `HELLO` + `PING` in one write → `WELCOME`, `PONG`;
//! over TLS the port is TLS from the first byte, over WebSocket the path is `/tern`),
//! the stuck consumer's connection (handshake, `SUBSCRIBE`, `PING` → `PONG`, then handed
//! over as a [`super::Stalled`] that is never read), subscription ids, `PING`/`PONG` round trips for [`Connection::sync`], answering the
//! broker's `PING`s, counting `DROP_NOTICE`s, and turning `ERROR` frames into
//! [`DriverError::Server`] with their code and text.
//!
//! Encoding: every frame but `PUBLISH` goes through `tern_protocol::binary`'s
//! `encode_client_frame`. `PUBLISH` is the hot path, and the reference encoder wants the
//! payload as `Bytes` (an allocation and a copy per message), so [`put_publish`] writes
//! the frame straight into the write batch; a test checks it is byte for byte what
//! `encode_client_frame` writes. Receiving is the other hot path: a `MESSAGE` with no
//! flags (a live delivery without reply or headers, every delivery of a measurement) is
//! read in place by [`plain_delivery`], its payload handed over as a slice of the read
//! buffer, as the text driver's `MSG`; everything else the broker sends (and any
//! `MESSAGE` that is not whole and exact) is parsed by
//! `tern_protocol::binary::ServerFrameDecoder`. A test holds the two to the same answers.
//!
//! What is published: priority [`PRIORITY`], no reply, no headers, no message id, no
//! acknowledgement — the binary twin of a text `PUB`, so the two ports are compared on
//! the same work. Subscriptions start live with the broker's default queue bounds.
//!
//! Never: buffers without bound (see [`super::socket`]), or ignores a frame it did not
//! ask for: an unrequested `WELCOME`, `PUBLISH_ACK` or `GAP_NOTICE` is an error.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_protocol::binary::{
    encode_client_frame, frame_type, ClientFrame, EncodeError, Hello, Limits, Preface, ResumeToken,
    ServerFrame, ServerFrameDecoder, StartPosition, Subscribe, Welcome, MAX_PRIORITY, VERSION,
};

use super::socket::{self, Dispatch, Opening, Socket, TlsStart, HANDSHAKE_TIMEOUT};
use super::{Connection, Dial, Driver, DriverError, Protocol, Stalled, Transport};

/// The priority of every message the driver publishes: the lowest, as the text port
/// assigns to its messages, so both ports carry the same kind of traffic.
pub const PRIORITY: u8 = 0;

/// The largest frame the driver accepts from a broker: far above any broker's
/// `max_payload`, so a large delivery is never refused here.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Opens binary-protocol connections to one address.
#[derive(Debug, Clone)]
pub struct BinaryDriver {
    dial: Dial,
    name: String,
}

impl BinaryDriver {
    /// A driver for the broker's binary port at `addr` over plain TCP; `name` is sent in
    /// `HELLO`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        BinaryDriver::via(Dial::tcp(addr), name)
    }

    /// A driver for the broker `dial` names (its binary port, or its WebSocket port), over
    /// its transport.
    pub fn via(dial: Dial, name: impl Into<String>) -> Self {
        BinaryDriver {
            dial,
            name: name.into(),
        }
    }
}

impl Driver for BinaryDriver {
    fn protocol(&self) -> &'static str {
        "binary"
    }

    fn transport(&self) -> Transport {
        self.dial.transport
    }

    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        Ok(Box::new(self.open(None)?))
    }

    fn connect_stalled(&self, subject: &str, recv_buffer: usize) -> Result<Stalled, DriverError> {
        let mut conn = self.open(Some(recv_buffer))?;
        conn.subscribe(subject, None)?;
        conn.sync(HANDSHAKE_TIMEOUT)?;
        let mut ping = BytesMut::new();
        encode_client_frame(&ClientFrame::Ping, &mut ping)?;
        Ok(Stalled::new(conn.socket.into_stream()?, ping.to_vec()))
    }
}

impl BinaryDriver {
    /// Connects (with `SO_RCVBUF` set to `recv_buffer` first, if given) and completes the
    /// handshake.
    fn open(&self, recv_buffer: Option<usize>) -> Result<BinaryConnection, DriverError> {
        let mut conn = BinaryConnection {
            socket: Socket::connect(
                &self.dial,
                recv_buffer,
                Opening {
                    tls_start: TlsStart::Immediate,
                    websocket_path: Protocol::Binary.websocket_path(),
                },
            )?,
            decoder: ServerFrameDecoder::new(Limits {
                max_payload: MAX_PAYLOAD,
                ..Limits::default()
            }),
            welcome: None,
            next_sid: 1,
            pongs: 0,
            dropped: 0,
        };
        Preface::default().encode(&mut conn.socket.out);
        let hello = ClientFrame::Hello(Hello {
            client_name: Bytes::from(self.name.clone()),
            client_version: Bytes::from(concat!("tern-bench/", env!("CARGO_PKG_VERSION"))),
            // As the text driver's CONNECT: a connection receives what it publishes.
            echo: true,
            ..Hello::default()
        });
        encode_client_frame(&hello, &mut conn.socket.out)?;
        // The PING goes out with the preface and HELLO: one write, one round trip.
        conn.sync(HANDSHAKE_TIMEOUT)?;
        match &conn.welcome {
            None => return Err(DriverError::Unexpected("PONG before WELCOME")),
            Some(w) if w.version != VERSION => {
                return Err(DriverError::Unexpected(
                    "WELCOME with a version this driver does not speak",
                ))
            }
            Some(_) => {}
        }
        Ok(conn)
    }
}

/// One connection speaking the binary protocol.
pub struct BinaryConnection {
    socket: Socket,
    decoder: ServerFrameDecoder,
    welcome: Option<Welcome>,
    next_sid: u32,
    pongs: u64,
    dropped: u64,
}

impl BinaryConnection {
    /// The broker's `WELCOME` (set once the handshake is done).
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    fn put(&mut self, frame: &ClientFrame) -> Result<(), DriverError> {
        encode_client_frame(frame, &mut self.socket.out)?;
        Ok(())
    }

    /// Decodes every whole frame buffered, or up to the `PONG` that makes `pongs` reach
    /// `until_pongs` (the frames after it stay buffered for [`Connection::receive`]);
    /// returns the messages handed over.
    fn dispatch_buffered(
        &mut self,
        on_message: &mut dyn FnMut(&[u8]),
        until_pongs: Option<u64>,
    ) -> Result<usize, DriverError> {
        let mut messages = 0;
        while until_pongs.is_none_or(|want| self.pongs < want) {
            // The deliveries at the front, read in place (a PONG is never one of them).
            let inbuf = &self.socket.inbuf;
            let mut at = 0;
            while let Some((payload, end)) = plain_delivery(&inbuf[at..]) {
                on_message(&inbuf[at + payload.start..at + payload.end]);
                messages += 1;
                at += end;
            }
            self.socket.inbuf.advance(at);
            let Some(frame) = self.decoder.decode(&mut self.socket.inbuf)? else {
                break;
            };
            match frame {
                ServerFrame::Message(m) => {
                    messages += 1;
                    on_message(&m.payload);
                }
                ServerFrame::Ping => encode_client_frame(&ClientFrame::Pong, &mut self.socket.out)?,
                ServerFrame::Pong => self.pongs += 1,
                ServerFrame::Error(e) => {
                    return Err(DriverError::Server {
                        code: Some(e.code),
                        message: String::from_utf8_lossy(&e.message).into_owned(),
                    })
                }
                ServerFrame::DropNotice(n) => self.dropped += n.dropped,
                // Where its subscriptions start: a measurement never resumes.
                ServerFrame::Subscribed(_) => {}
                ServerFrame::Welcome(w) => {
                    if self.welcome.is_some() {
                        return Err(DriverError::Unexpected("a second WELCOME"));
                    }
                    self.welcome = Some(w);
                }
                ServerFrame::PublishAck(_) => {
                    return Err(DriverError::Unexpected(
                        "PUBLISH_ACK (no publish asked for one)",
                    ))
                }
                ServerFrame::Presence(_) => {
                    return Err(DriverError::Unexpected(
                        "PRESENCE (no subscription asked for presence)",
                    ))
                }
                ServerFrame::GapNotice(_) => {
                    return Err(DriverError::Unexpected(
                        "GAP_NOTICE (every subscription starts live)",
                    ))
                }
                // The bench sends no nkey, so a broker must not challenge it.
                ServerFrame::Challenge(_) => {
                    return Err(DriverError::Unexpected(
                        "CHALLENGE (the bench has no credentials)",
                    ))
                }
                // A measurement cannot go on across a broker's restart.
                ServerFrame::GoAway(_) => {
                    return Err(DriverError::Unexpected(
                        "GOAWAY (the broker is going away: lame duck mode)",
                    ))
                }
            }
        }
        self.socket.flush()?;
        Ok(messages)
    }
}

impl BinaryConnection {
    fn subscribe_at(
        &mut self,
        subject: &str,
        queue: Option<&str>,
        start: StartPosition,
    ) -> Result<(), DriverError> {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.put(&ClientFrame::Subscribe(Subscribe {
            sid,
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            queue: queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
            start,
            lossless: false,
            max_queue_messages: 0,
            max_queue_bytes: 0,
            presence: None,
            presence_events: false,
        }))
    }
}

impl Dispatch for BinaryConnection {
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

impl Connection for BinaryConnection {
    fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<(), DriverError> {
        self.subscribe_at(subject, queue, StartPosition::Live)
    }

    fn subscribe_from_start(&mut self, subject: &str) -> Result<(), DriverError> {
        let epoch = self.welcome().map_or(0, |w| w.log_epoch);
        let token = ResumeToken {
            epoch,
            last_sequences: Vec::new(),
        };
        self.subscribe_at(subject, None, StartPosition::Resume(token))
    }

    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), DriverError> {
        put_publish(&mut self.socket.out, subject.as_bytes(), payload)?;
        self.socket.flush_if_full()
    }

    fn flush(&mut self) -> Result<(), DriverError> {
        self.socket.flush()
    }

    fn sync(&mut self, timeout: Duration) -> Result<(), DriverError> {
        self.put(&ClientFrame::Ping)?;
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
        self.dropped
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.raw_fd()
    }
}

/// A `MESSAGE`'s bytes up to its subject: length, type, flags, sid, priority, shard,
/// sequence, timestamp, the subject's length.
const MESSAGE_FIXED: usize = 4 + 1 + 1 + 4 + 1 + 2 + 8 + 8 + 2;

/// The common delivery read in place: when `buf` starts with a whole `MESSAGE` with no
/// flags (no reply, no header block, live), exact in its lengths, with a valid priority and
/// a payload of at most [`MAX_PAYLOAD`] bytes, where its payload lies in `buf` and where
/// the frame ends. `None` for anything else (another frame, a flag, a frame not yet whole,
/// one whose lengths disagree), which `ServerFrameDecoder` then decodes or refuses.
///
/// The hot path of every subscriber: no `Bytes` cut out of the read buffer, no
/// `ServerFrame` built and moved, one bounds check per field. As the text driver does
/// for `MSG`, it does not check the subject's syntax (the broker routed it); everything
/// else is held to the reference decoder's answers (a test checks it).
#[inline]
pub fn plain_delivery(buf: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let fixed = buf.get(..MESSAGE_FIXED)?;
    if fixed[4] != frame_type::MESSAGE || fixed[5] != 0 || fixed[10] > MAX_PRIORITY {
        return None;
    }
    let len = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) as usize;
    let end = len.checked_add(4)?;
    let frame = buf.get(..end)?;
    let subject_end = MESSAGE_FIXED + usize::from(u16::from_be_bytes([fixed[29], fixed[30]]));
    let payload_len = frame.get(subject_end..subject_end + 4)?;
    let payload_len = u32::from_be_bytes([
        payload_len[0],
        payload_len[1],
        payload_len[2],
        payload_len[3],
    ]) as usize;
    let payload = subject_end + 4..end;
    (payload.len() == payload_len && payload_len <= MAX_PAYLOAD).then_some((payload, end))
}

/// Appends a `PUBLISH` frame (priority [`PRIORITY`], no options) for `subject` and
/// `payload` to `out`: `u32 length | 0x02 | flags 0 | u8 priority | short subject |
/// long payload`. Byte for byte what `encode_client_frame` writes for the same frame; on
/// error `out` is left as it was.
pub fn put_publish(out: &mut BytesMut, subject: &[u8], payload: &[u8]) -> Result<(), EncodeError> {
    let subject_len = u16::try_from(subject.len()).map_err(|_| EncodeError::FieldTooLong {
        field: "subject",
        len: subject.len(),
        max: u16::MAX as usize,
    })?;
    let payload_len = u32::try_from(payload.len()).map_err(|_| EncodeError::FieldTooLong {
        field: "payload",
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    // type, flags, priority, subject length, subject, payload length, payload
    let len = 2 + 1 + 2 + subject.len() + 4 + payload.len();
    let len = u32::try_from(len).map_err(|_| EncodeError::FrameTooLong { len })?;
    out.reserve(4 + len as usize);
    out.put_u32(len);
    out.put_u8(frame_type::PUBLISH);
    out.put_u8(0);
    out.put_u8(PRIORITY);
    out.put_u16(subject_len);
    out.put_slice(subject);
    out.put_u32(payload_len);
    out.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Instant;

    use tern_protocol::binary::{
        encode_server_frame, ClientFrameDecoder, DropNotice, ErrorCode, ErrorFrame, Message,
        Publish, PREFACE_LEN,
    };

    use super::*;

    #[test]
    fn publish_frames_match_the_reference_encoder() {
        for (subject, size) in [
            ("a", 0),
            ("chat.room1", 2),
            ("bench.pubsub", 128),
            ("x.y", 70_000),
        ] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut ours = BytesMut::new();
            put_publish(&mut ours, subject.as_bytes(), &payload).unwrap();
            let mut reference = BytesMut::new();
            let frame = ClientFrame::Publish(Publish {
                subject: Bytes::copy_from_slice(subject.as_bytes()),
                priority: PRIORITY,
                payload: Bytes::from(payload),
                ..Publish::default()
            });
            encode_client_frame(&frame, &mut reference).unwrap();
            assert_eq!(ours, reference, "{subject} {size}");
        }
        // The spec's own example, `client.publish-minimal`.
        let mut out = BytesMut::new();
        put_publish(&mut out, b"chat.room1", b"hi").unwrap();
        assert_eq!(
            &out[..],
            b"\x00\x00\x00\x15\x02\x00\x00\x00\x0achat.room1\x00\x00\x00\x02hi"
        );
    }

    #[test]
    fn deliveries_read_in_place_match_the_reference_decoder() {
        let decode = |bytes: &[u8]| {
            let mut buf = BytesMut::from(bytes);
            ServerFrameDecoder::new(Limits {
                max_payload: MAX_PAYLOAD,
                ..Limits::default()
            })
            .decode(&mut buf)
        };
        let base = Message {
            sid: 9,
            priority: 7,
            shard: 3,
            sequence: 1 << 40,
            timestamp: 1_700_000_000_000_000_000,
            subject: Bytes::from_static(b"bench.pubsub"),
            payload: Bytes::from(vec![0xa5; 1024]),
            ..Message::default()
        };
        let plain = [
            base.clone(),
            Message {
                payload: Bytes::new(),
                ..base.clone()
            },
            Message {
                subject: Bytes::from_static(b"x"),
                payload: Bytes::from(vec![1; 70_000]),
                priority: 0,
                ..base.clone()
            },
        ];
        for m in &plain {
            let mut wire = BytesMut::new();
            encode_server_frame(&ServerFrame::Message(m.clone()), &mut wire).unwrap();
            let (payload, end) = plain_delivery(&wire).expect("a plain MESSAGE");
            assert_eq!(end, wire.len());
            assert_eq!(&wire[payload], &m.payload[..]);
            let Ok(Some(ServerFrame::Message(reference))) = decode(&wire) else {
                panic!("the reference decoder refused it");
            };
            assert_eq!(&reference, m);
            // Followed by more bytes, it ends where the frame does.
            let mut two = wire.clone();
            two.extend_from_slice(&wire);
            assert_eq!(plain_delivery(&two).map(|(_, end)| end), Some(wire.len()));
            // Not whole yet: left to the decoder, which waits for the rest.
            for cut in [0, 3, MESSAGE_FIXED - 1, MESSAGE_FIXED, wire.len() - 1] {
                assert_eq!(plain_delivery(&wire[..cut]), None, "cut at {cut}");
                assert!(matches!(decode(&wire[..cut]), Ok(None)), "cut at {cut}");
            }
        }
        // Anything with a flag goes to the decoder: a reply, a header block, a replay.
        for m in [
            Message {
                reply: Some(Bytes::from_static(b"r")),
                ..base.clone()
            },
            Message {
                headers: Some(Bytes::from_static(b"NATS/1.0\r\n\r\n")),
                ..base.clone()
            },
            Message {
                replayed: true,
                ..base.clone()
            },
        ] {
            let mut wire = BytesMut::new();
            encode_server_frame(&ServerFrame::Message(m.clone()), &mut wire).unwrap();
            assert_eq!(plain_delivery(&wire), None);
            assert!(matches!(decode(&wire), Ok(Some(ServerFrame::Message(r))) if r == m));
        }
        // Other frames, and MESSAGEs the reference refuses for their structure or content,
        // are never read in place.
        let mut pong = BytesMut::new();
        encode_server_frame(&ServerFrame::Pong, &mut pong).unwrap();
        assert_eq!(plain_delivery(&pong), None);
        let mut wire = BytesMut::new();
        encode_server_frame(&ServerFrame::Message(base.clone()), &mut wire).unwrap();
        let at_payload_len = MESSAGE_FIXED + base.subject.len();
        let mut corrupt = Vec::new();
        // The payload's length too long (twice), the subject's length too long, the
        // frame's own length one short, a priority above 7.
        for (at, value) in [
            (at_payload_len + 3, 0xff),
            (at_payload_len + 2, 0x05),
            (30, 0xff),
            (3, wire[3].wrapping_sub(1)),
        ] {
            let mut bad = wire.to_vec();
            bad[at] = value;
            corrupt.push(bad);
        }
        let mut bad = wire.to_vec();
        bad[10] = 8;
        corrupt.push(bad);
        for bad in &corrupt {
            assert_eq!(plain_delivery(bad), None);
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_over_long_subject_is_refused_and_writes_nothing() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let subject = vec![b'a'; 70_000];
        assert!(matches!(
            put_publish(&mut out, &subject, b"x"),
            Err(EncodeError::FieldTooLong {
                field: "subject",
                ..
            })
        ));
        assert_eq!(&out[..], b"keep");
    }

    /// A scripted broker on a real socket: reads the client's frames with the reference
    /// decoder, answers with the reference encoder.
    struct FakeBroker {
        sock: TcpStream,
        inbuf: BytesMut,
        decoder: ClientFrameDecoder,
    }

    impl FakeBroker {
        /// Accepts one connection and checks the preface.
        fn accept(listener: &TcpListener) -> FakeBroker {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut broker = FakeBroker {
                sock,
                inbuf: BytesMut::new(),
                decoder: ClientFrameDecoder::default(),
            };
            while broker.inbuf.len() < PREFACE_LEN {
                broker.read_some();
            }
            let preface = Preface::decode(&mut broker.inbuf).unwrap().unwrap();
            assert_eq!(preface.negotiate(), Ok(VERSION));
            broker
        }

        fn read_some(&mut self) {
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed the connection");
            self.inbuf.extend_from_slice(&chunk[..n]);
        }

        fn next(&mut self) -> ClientFrame {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.inbuf).unwrap() {
                    return frame;
                }
                self.read_some();
            }
        }

        fn send(&mut self, frames: &[ServerFrame]) {
            let mut out = BytesMut::new();
            for f in frames {
                encode_server_frame(f, &mut out).unwrap();
            }
            self.sock.write_all(&out).unwrap();
        }

        /// Answers the handshake: `HELLO` → `WELCOME`, `PING` → `PONG`.
        fn handshake(&mut self) -> Hello {
            let ClientFrame::Hello(hello) = self.next() else {
                panic!("HELLO expected first");
            };
            self.send(&[ServerFrame::Welcome(Welcome {
                version: VERSION,
                shard_count: 2,
                max_payload: 1024 * 1024,
                max_frame: 1024 * 1024 + 65536,
                ping_interval_ms: 0,
                client_id: 7,
                log_epoch: 1,
                server_id: Bytes::from_static(b"fake"),
            })]);
            assert_eq!(self.next(), ClientFrame::Ping);
            self.send(&[ServerFrame::Pong]);
            hello
        }
    }

    fn message(sid: u32, payload: &'static [u8]) -> ServerFrame {
        ServerFrame::Message(Message {
            sid,
            subject: Bytes::from_static(b"a.b"),
            payload: Bytes::from_static(payload),
            sequence: 1,
            ..Message::default()
        })
    }

    #[test]
    fn a_whole_conversation_with_a_scripted_broker() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let driver = BinaryDriver::new(listener.local_addr().unwrap(), "driver-test");
        let broker = thread::spawn(move || {
            let mut b = FakeBroker::accept(&listener);
            let hello = b.handshake();
            assert_eq!(&hello.client_name[..], b"driver-test");
            assert!(hello.echo);
            // SUBSCRIBE, two PUBLISHes, PING: in that order.
            let ClientFrame::Subscribe(sub) = b.next() else {
                panic!("SUBSCRIBE expected");
            };
            assert_eq!((sub.sid, &sub.subject[..]), (1, &b"a.*"[..]));
            assert_eq!(sub.queue.as_deref(), Some(&b"q"[..]));
            assert_eq!(sub.start, StartPosition::Live);
            for payload in [&b"one"[..], b"two"] {
                let ClientFrame::Publish(p) = b.next() else {
                    panic!("PUBLISH expected");
                };
                assert_eq!((&p.subject[..], &p.payload[..]), (&b"a.b"[..], payload));
            }
            assert_eq!(b.next(), ClientFrame::Ping);
            // A delivery and a drop notice before the PONG (discarded by sync), then a
            // server PING, which the client must answer while receiving.
            b.send(&[
                message(1, b"early"),
                ServerFrame::DropNotice(DropNotice {
                    sid: 1,
                    dropped: 3,
                    ranges: vec![],
                }),
                ServerFrame::Pong,
                ServerFrame::Ping,
                message(1, b"one"),
                message(1, b"two"),
            ]);
            assert_eq!(b.next(), ClientFrame::Pong);
            b.send(&[ServerFrame::Error(ErrorFrame {
                code: ErrorCode::SlowConsumer,
                fatal: true,
                sid: None,
                message: Bytes::from_static(b"slow consumer"),
            })]);
        });

        let mut conn = driver.connect().unwrap();
        conn.subscribe("a.*", Some("q")).unwrap();
        conn.publish("a.b", b"one").unwrap();
        conn.publish("a.b", b"two").unwrap();
        conn.sync(Duration::from_secs(10)).unwrap();
        assert_eq!(conn.dropped(), 3);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = loop {
            assert!(Instant::now() < deadline, "no ERROR within 10 s");
            match conn.receive(Duration::from_millis(50), &mut |p| got.push(p.to_vec())) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
        match &error {
            DriverError::Server { code, message } => {
                assert_eq!(*code, Some(ErrorCode::SlowConsumer));
                assert_eq!(message, "slow consumer");
            }
            other => panic!("expected a broker error, got {other}"),
        }
        assert_eq!(
            error.to_string(),
            "broker error 0x0205 (SlowConsumer): slow consumer"
        );
        broker.join().unwrap();
    }

    #[test]
    fn an_error_instead_of_welcome_fails_the_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let driver = BinaryDriver::new(listener.local_addr().unwrap(), "driver-test");
        let broker = thread::spawn(move || {
            let mut b = FakeBroker::accept(&listener);
            assert!(matches!(b.next(), ClientFrame::Hello(_)));
            b.send(&[ServerFrame::Error(ErrorFrame {
                code: ErrorCode::TooManyConnections,
                fatal: true,
                sid: None,
                message: Bytes::from_static(b"too many connections"),
            })]);
        });
        let err = driver.connect().err().expect("connect must fail");
        assert!(
            matches!(&err, DriverError::Server { code: Some(ErrorCode::TooManyConnections), message } if message == "too many connections"),
            "{err}"
        );
        broker.join().unwrap();
    }

    #[test]
    fn an_unrequested_frame_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let driver = BinaryDriver::new(listener.local_addr().unwrap(), "driver-test");
        let broker = thread::spawn(move || {
            let mut b = FakeBroker::accept(&listener);
            b.handshake();
            b.send(&[ServerFrame::GapNotice(Default::default())]);
            // Keep the socket open until the client has read the notice.
            let mut rest = [0u8; 16];
            let _ = b.sock.read(&mut rest);
        });
        let mut conn = driver.connect().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            assert!(Instant::now() < deadline, "no error within 10 s");
            if let Err(e) = conn.receive(Duration::from_millis(50), &mut |_| {}) {
                break e;
            }
        };
        assert!(matches!(err, DriverError::Unexpected(_)), "{err}");
        drop(conn);
        broker.join().unwrap();
    }
}

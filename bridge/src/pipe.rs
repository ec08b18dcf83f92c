//! An export's local connection: one end of a Unix socket pair whose other end the broker
//! serves as a binary-port connection ([`Inject::attach`]), spoken to directly on the
//! exporter's thread.
//!
//! Owns: [`Pipe`], the exporter's side of that connection: the handshake (preface, `HELLO`
//! with the bridges' secret, `WELCOME`), its one lossless subscription (`SUBSCRIBE`, from a
//! resume token or live), reading what the broker sends and sorting it: `MESSAGE` frames
//! for the exporter, the subscription's start (`SUBSCRIBED`), lost messages (`GAP_NOTICE`,
//! `DROP_NOTICE`) and a resume token from another log epoch as [`Notice`]s, the broker's
//! `PING` answered at once. No client library, no I/O thread, no TCP: a message costs the
//! broker one `MESSAGE` frame written into the socket pair and the exporter one decode,
//! where a client connection over TCP cost both a loopback round of the network stack,
//! and the exporter a thread hop and a [`tern_client::Message`].
//!
//! Flow control is the socket's: while the exporter waits for upstream it does not read,
//! the socket pair fills, the subscription's queue in the broker (`export_window`
//! messages) fills, and the broker serves the export from its log, holding the local
//! publishers back if the log would wrap past it.
//!
//! Never: reads more than one socket read ahead of the exporter (what it has not handed
//! over stays in its buffer), waits on a read longer than its read timeout or on a write
//! longer than its write timeout, or writes anything but the handshake, the subscription's
//! `SUBSCRIBE` and `PONG`s.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_protocol::binary::{
    encode_client_frame, ClientFrame, ErrorCode, Hello, Limits, Message, Preface, ResumeToken,
    ServerFrame, ServerFrameDecoder, StartPosition, Subscribe,
};

use crate::Inject;
use tern_protocol::read_room::ReadRoom;

/// Bytes asked of the socket per read at most: a few thousand small messages.
const READ_CHUNK: usize = 256 * 1024;

/// What the broker told the exporter besides messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The subscription starts after `last_sequences` in every shard of log `epoch`.
    Subscribed {
        epoch: u64,
        last_sequences: Vec<u64>,
    },
    /// The log no longer held `requested..oldest` of `shard`: never exported.
    Gap {
        shard: u16,
        requested: u64,
        oldest: u64,
    },
    /// Messages the broker could not keep for the export (not in the log: the store does
    /// not keep their subject), so never exported.
    Dropped { count: u64 },
    /// The resume token was from another log epoch: everything the log holds comes again.
    EpochMismatch { message: String },
}

/// The exporter's end of its local connection. See the module header.
pub(crate) struct Pipe {
    sock: UnixStream,
    buf: BytesMut,
    decoder: ServerFrameDecoder,
    room: ReadRoom,
    out: BytesMut,
    /// The broker's log epoch, from `WELCOME`.
    epoch: u64,
    /// The subscription's sid, while there is one.
    sid: Option<u32>,
}

impl Pipe {
    /// Makes the socket pair, hands the broker its end (on the worker `hint` picks) and
    /// does the handshake, presenting `token`; every read waits at most `tick`.
    pub(crate) fn open(
        inject: &dyn Inject,
        hint: usize,
        token: &str,
        tick: Duration,
        timeout: Duration,
    ) -> Result<Pipe, String> {
        let (mine, theirs) = UnixStream::pair().map_err(|e| format!("a socket pair: {e}"))?;
        mine.set_read_timeout(Some(tick))
            .and_then(|()| mine.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("the socket pair's timeouts: {e}"))?;
        if !inject.attach(theirs, hint, timeout) {
            return Err(format!(
                "the broker took no new connection within {timeout:?}"
            ));
        }
        let mut pipe = Pipe {
            sock: mine,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: ServerFrameDecoder::new(Limits::default()),
            room: ReadRoom::new(READ_CHUNK),
            out: BytesMut::new(),
            epoch: 0,
            sid: None,
        };
        Preface::default().encode(&mut pipe.out);
        pipe.send(&ClientFrame::Hello(Hello {
            client_name: Bytes::from_static(crate::LOCAL_NAME.as_bytes()),
            client_version: Bytes::from(concat!("tern-bridge/", env!("CARGO_PKG_VERSION"))),
            echo: true,
            auth_token: Some(Bytes::copy_from_slice(token.as_bytes())),
            ..Hello::default()
        }))?;
        let deadline = Instant::now() + timeout;
        loop {
            match pipe.next_frame()? {
                Some(ServerFrame::Welcome(w)) => {
                    pipe.epoch = w.log_epoch;
                    return Ok(pipe);
                }
                Some(ServerFrame::Error(e)) => {
                    return Err(format!(
                        "the broker refused the connection: {}",
                        String::from_utf8_lossy(&e.message)
                    ))
                }
                Some(other) => {
                    return Err(format!("the broker answered HELLO with {other:?}"));
                }
                None if Instant::now() >= deadline => {
                    return Err(format!("no WELCOME within {timeout:?}"));
                }
                None => {}
            }
        }
    }

    /// The broker's log epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Subscribes to `filter`, losslessly, from `start` (live without one), holding up to
    /// `window` messages in the broker before it serves the subscription from its log.
    pub(crate) fn subscribe(
        &mut self,
        sid: u32,
        filter: &str,
        start: Option<&ResumeToken>,
        window: u32,
    ) -> Result<(), String> {
        self.sid = Some(sid);
        self.send(&ClientFrame::Subscribe(Subscribe {
            sid,
            subject: Bytes::copy_from_slice(filter.as_bytes()),
            start: start.map_or(StartPosition::Live, |t| StartPosition::Resume(t.clone())),
            lossless: true,
            max_queue_messages: window,
            ..Subscribe::default()
        }))
    }

    /// Hands over the subscription's messages into `batch`, up to `max` of them: what was
    /// read before, else what one read brings, waiting for it at most the read timeout.
    /// Everything else the broker sent is answered (`PING`) or given to `notice`.
    pub(crate) fn receive(
        &mut self,
        batch: &mut Vec<Message>,
        max: usize,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<(), String> {
        let mut read = false;
        while batch.len() < max {
            let frame = match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) if read || !batch.is_empty() => break,
                Ok(None) => {
                    read = true;
                    if !self.read()? {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(format!("decoding what the broker sent: {e}")),
            };
            self.sort(frame, batch, notice)?;
        }
        if !self.out.is_empty() {
            self.flush()?;
        }
        Ok(())
    }

    /// One frame the broker sent, if one read brings it.
    fn next_frame(&mut self) -> Result<Option<ServerFrame>, String> {
        if let Some(frame) = self.decode()? {
            return Ok(Some(frame));
        }
        self.read()?;
        self.decode()
    }

    fn decode(&mut self) -> Result<Option<ServerFrame>, String> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| format!("decoding what the broker sent: {e}"))
    }

    /// Puts `frame` where it goes.
    fn sort(
        &mut self,
        frame: ServerFrame,
        batch: &mut Vec<Message>,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<(), String> {
        let ours = |sid: u32| self.sid == Some(sid);
        match frame {
            ServerFrame::Message(m) if ours(m.sid) => batch.push(m),
            ServerFrame::Subscribed(s) if ours(s.sid) => notice(Notice::Subscribed {
                epoch: s.epoch,
                last_sequences: s.last_sequences,
            }),
            ServerFrame::GapNotice(g) if ours(g.sid) => notice(Notice::Gap {
                shard: g.shard,
                requested: g.requested,
                oldest: g.oldest,
            }),
            ServerFrame::DropNotice(d) if ours(d.sid) => {
                notice(Notice::Dropped { count: d.dropped });
            }
            ServerFrame::Ping => encode_client_frame(&ClientFrame::Pong, &mut self.out)
                .map_err(|e| format!("encoding PONG: {e}"))?,
            ServerFrame::Error(e) if e.code == ErrorCode::EpochMismatch => {
                notice(Notice::EpochMismatch {
                    message: String::from_utf8_lossy(&e.message).into_owned(),
                });
            }
            ServerFrame::Error(e) if e.fatal || e.sid.is_some_and(ours) => {
                return Err(format!(
                    "the broker: {}",
                    String::from_utf8_lossy(&e.message)
                ));
            }
            ServerFrame::GoAway(_) => return Err("the broker is going away".to_string()),
            // Nothing else is for the exporter (a `PONG`, a frame before `SUBSCRIBE`).
            _ => {}
        }
        Ok(())
    }

    /// One read into the buffer; false when nothing came within the read timeout.
    fn read(&mut self) -> Result<bool, String> {
        let sock = &mut self.sock;
        match self.room.read_into(&mut self.buf, |room| sock.read(room)) {
            Ok(0) => Err("the broker closed the connection".to_string()),
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(format!("reading from the broker: {e}")),
        }
    }

    fn send(&mut self, frame: &ClientFrame) -> Result<(), String> {
        encode_client_frame(frame, &mut self.out).map_err(|e| format!("encoding: {e}"))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), String> {
        let result = self.sock.write_all(&self.out);
        self.out.clear();
        result.map_err(|e| format!("writing to the broker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use tern_protocol::binary::{
        encode_server_frame, ClientFrame, ClientFrameDecoder, GapNotice, Limits, Message, Preface,
        ResumeToken, ServerFrame, StartPosition, Subscribed, Welcome,
    };

    use super::{Notice, Pipe};

    /// A broker that keeps the end it is handed, for the test to play the broker with.
    #[derive(Default)]
    struct Broker(Mutex<Option<UnixStream>>);

    impl crate::Inject for Broker {
        fn publish(&self, _: Vec<crate::Injected>, _: Duration) -> bool {
            false
        }
        fn has_room(&self) -> bool {
            false
        }
        fn attach(&self, sock: UnixStream, _: usize, _: Duration) -> bool {
            *self.0.lock().unwrap() = Some(sock);
            true
        }
    }

    fn send(sock: &mut UnixStream, frames: &[ServerFrame]) {
        let mut out = BytesMut::new();
        for f in frames {
            encode_server_frame(f, &mut out).unwrap();
        }
        sock.write_all(&out).unwrap();
    }

    /// What the exporter sent, after the preface: its frames.
    fn sent(sock: &mut UnixStream, buf: &mut BytesMut, n: usize) -> Vec<ClientFrame> {
        let mut decoder = ClientFrameDecoder::new(Limits::default());
        let mut frames = Vec::new();
        while frames.len() < n {
            if let Some(f) = decoder.decode(buf).unwrap() {
                frames.push(f);
                continue;
            }
            let mut chunk = [0u8; 4096];
            let got = sock.read(&mut chunk).unwrap();
            assert!(got > 0, "the exporter closed its end");
            buf.extend_from_slice(&chunk[..got]);
        }
        frames
    }

    fn message(sid: u32, sequence: u64) -> ServerFrame {
        ServerFrame::Message(Message {
            sid,
            shard: 1,
            sequence,
            subject: Bytes::from_static(b"orders.eu"),
            payload: Bytes::from_static(b"x"),
            ..Message::default()
        })
    }

    /// The handshake presents the secret, the subscription is lossless from the token
    /// with the window as its queue bound, a `PING` is answered, another sid's messages
    /// are passed over, and the start and the gaps come out as notices.
    #[test]
    fn the_exporter_speaks_the_binary_protocol_on_its_socket_pair() {
        let broker = Broker::default();
        let player = std::thread::scope(|scope| {
            let handshake = scope.spawn(|| {
                // The exporter's HELLO comes first; WELCOME answers it.
                let mut sock = loop {
                    if let Some(s) = broker.0.lock().unwrap().take() {
                        break s;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let mut buf = BytesMut::new();
                while buf.len() < tern_protocol::binary::PREFACE_LEN {
                    let mut chunk = [0u8; 64];
                    let n = sock.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                Preface::decode(&mut buf).unwrap().expect("a preface");
                let hello = sent(&mut sock, &mut buf, 1);
                send(
                    &mut sock,
                    &[ServerFrame::Welcome(Welcome {
                        log_epoch: 7,
                        ..Welcome::default()
                    })],
                );
                (sock, buf, hello)
            });
            let pipe = Pipe::open(
                &broker,
                0,
                "secret",
                Duration::from_millis(50),
                Duration::from_secs(5),
            );
            (pipe, handshake.join().unwrap())
        });
        let (pipe, (mut sock, mut buf, hello)) = player;
        let mut pipe = pipe.expect("open");
        assert_eq!(pipe.epoch(), 7);
        let ClientFrame::Hello(h) = &hello[0] else {
            panic!("{hello:?}")
        };
        assert_eq!(h.auth_token.as_deref(), Some(&b"secret"[..]));

        let token = ResumeToken {
            epoch: 7,
            last_sequences: vec![0, 41],
        };
        pipe.subscribe(1, "orders.>", Some(&token), 16).unwrap();
        let sub = sent(&mut sock, &mut buf, 1);
        let ClientFrame::Subscribe(s) = &sub[0] else {
            panic!("{sub:?}")
        };
        assert!(s.lossless);
        assert_eq!(
            (s.sid, &s.subject[..], s.max_queue_messages),
            (1, &b"orders.>"[..], 16)
        );
        assert_eq!(s.start, StartPosition::Resume(token));

        send(
            &mut sock,
            &[
                message(1, 42),
                ServerFrame::Ping,
                message(9, 1),
                ServerFrame::Subscribed(Subscribed {
                    sid: 1,
                    epoch: 7,
                    last_sequences: vec![3, 41],
                }),
                ServerFrame::GapNotice(GapNotice {
                    sid: 1,
                    shard: 0,
                    requested: 4,
                    oldest: 10,
                }),
                message(1, 43),
            ],
        );
        let mut batch = Vec::new();
        let mut notices = Vec::new();
        while batch.len() < 2 {
            pipe.receive(&mut batch, 100, &mut |n| notices.push(n))
                .unwrap();
        }
        let seqs: Vec<u64> = batch.iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, [42, 43], "another sid's message passed over");
        assert_eq!(
            notices,
            [
                Notice::Subscribed {
                    epoch: 7,
                    last_sequences: vec![3, 41]
                },
                Notice::Gap {
                    shard: 0,
                    requested: 4,
                    oldest: 10
                }
            ]
        );
        assert_eq!(sent(&mut sock, &mut buf, 1), [ClientFrame::Pong]);

        // Nothing more within the read timeout: an empty batch, no error.
        let mut more = Vec::new();
        pipe.receive(&mut more, 100, &mut |_| {}).unwrap();
        assert!(more.is_empty());
        // The broker going away ends it with an error.
        drop(sock);
        let mut more = Vec::new();
        assert!(pipe.receive(&mut more, 100, &mut |_| {}).is_err());
    }
}

//! The soak's hostile clients: each class does one thing a broker must survive, over and
//! over, on raw sockets, until told to stop.
//!
//! Owns one function per class, each run on its own thread(s) with a bounded number of
//! sockets, and [`ClassStats`], what each did:
//!
//! | class | what it does | what it should move in `/varz` |
//! |---|---|---|
//! | [`garbage`] | random bytes: on the text port, then a binary preface that is wrong, then a right preface and `HELLO` followed by a frame of noise; reads until closed | `protocol_errors` |
//! | [`slowloris`] | keeps sockets that trickle a byte per tick: a first text line, a later text line (after `CONNECT`), a payload (after its `PUB` line), a binary `HELLO` (after the preface); replaced when the broker closes them | `handshake_timeouts`, `control_line_timeouts`, `stale_connections` |
//! | [`ping_flood`] | text and binary connections with a tiny receive buffer that send `PING`s as fast as the socket takes them and never read | `over_budget_pauses`, `slow_consumers` |
//! | [`stuck`] | subscribers to the busy subjects with a tiny receive buffer that never read; each replaced after a lifetime | `stuck_consumers`, `budget_drops`, `queue_dropped_msgs`, `stale_connections` |
//! | [`replay_flood`] | text connections that ask `$TERN.REPLAY` for the whole log (`{"subject":">"}`) many times at once; some read what comes, some never do | `replays_refused` (`connection` and `server`) |
//! | [`storm`] | bursts of connections opened as fast as possible to both ports, then closed | `connections_refused` |
//! | [`killers`] | connections that publish, stop in the middle of a frame and close with a reset | `closed_by_reason.io_error` |
//!
//! Never: more than its configured number of sockets per class, a wait without a deadline
//! (every socket has read and write timeouts; every loop checks `stop`), or traffic to any
//! address but the broker's.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use socket2::SockRef;
use tern_protocol::binary::{encode_client_frame, ClientFrame, Hello, Preface, Publish, Subscribe};

use crate::scenario::audience::random::Rng;
use crate::scenario::soak::nothing_yet;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A socket's read and write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The smallest receive buffer asked for (the kernel doubles it and has a minimum).
const TINY_RCVBUF: usize = 4096;

/// Where the broker listens.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The text (NATS) port.
    pub text: SocketAddr,
    /// The binary port.
    pub binary: SocketAddr,
}

/// What one class did; shared by its threads.
#[derive(Debug, Default)]
pub struct ClassStats {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Connections that could not be opened (refused, timed out).
    pub connect_errors: AtomicU64,
    /// Connections the broker was seen to close (a read or write that ended).
    pub closed_by_broker: AtomicU64,
}

impl ClassStats {
    fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }
    fn closed(&self) {
        self.closed_by_broker.fetch_add(1, Ordering::Relaxed);
    }

    /// A plain copy for the report.
    pub fn snapshot(&self, class: &'static str) -> ClassReport {
        ClassReport {
            class,
            opened: self.opened.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            closed_by_broker: self.closed_by_broker.load(Ordering::Relaxed),
        }
    }
}

/// What one class did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    /// The class.
    pub class: &'static str,
    /// Connections opened.
    pub opened: u64,
    /// Connections that could not be opened.
    pub connect_errors: u64,
    /// Connections it saw the broker close.
    pub closed_by_broker: u64,
}

fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(size) = rcvbuf {
        s.set_recv_buffer_size(size)?;
    }
    s.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    let s = TcpStream::from(s);
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// The binary preface and a `HELLO`.
fn binary_handshake() -> BytesMut {
    let mut out = BytesMut::new();
    Preface::default().encode(&mut out);
    encode(
        &ClientFrame::Hello(Hello {
            client_name: Bytes::from_static(b"soak-hostile"),
            ..Hello::default()
        }),
        &mut out,
    );
    out
}

fn encode(frame: &ClientFrame, out: &mut BytesMut) {
    // Every frame here is small and valid: encoding cannot fail.
    let _ = encode_client_frame(frame, out);
}

/// Reads and discards until the broker closes the socket, an error, or `within`.
/// True when it closed.
fn read_to_close(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if nothing_yet(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Sleeps up to `d`, in small steps, returning early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Random bytes, one connection at a time, cycling through three kinds of noise.
pub fn garbage(t: Target, stop: &AtomicBool, stats: &ClassStats, seed: u64) {
    let mut rng = Rng::new(seed, 1);
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let mut noise: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
        let (addr, bytes) = match round % 3 {
            // A byte that cannot start any operation name, then noise.
            0 => {
                noise[0] = 0xff;
                (t.text, noise)
            }
            // A preface that is not Tern's.
            1 => {
                noise[0] = b'X';
                (t.binary, noise)
            }
            // A good handshake, then a frame of noise.
            _ => {
                let mut out = binary_handshake();
                out.extend_from_slice(&noise);
                (t.binary, out.to_vec())
            }
        };
        match connect(addr, None) {
            Ok(mut s) => {
                stats.opened();
                if s.write_all(&bytes).is_ok() && read_to_close(&mut s, Duration::from_secs(3)) {
                    stats.closed();
                }
            }
            Err(_) => stats.failed(),
        }
        nap(Duration::from_millis(100), stop);
    }
}

/// What a slowloris socket trickles, after writing its prefix at once.
#[derive(Debug, Clone, Copy)]
enum Loris {
    /// The first text control line.
    TextFirstLine,
    /// A later text control line (after a whole `CONNECT` and `PING`).
    TextLaterLine,
    /// A text payload (after its whole `PUB` line).
    TextPayload,
    /// The binary `HELLO` (after the preface).
    BinaryHello,
}

impl Loris {
    const ALL: [Loris; 4] = [
        Loris::TextFirstLine,
        Loris::TextLaterLine,
        Loris::TextPayload,
        Loris::BinaryHello,
    ];

    /// The port, the prefix written at once, and the bytes trickled after it.
    fn script(self, t: Target) -> (SocketAddr, Vec<u8>, Vec<u8>) {
        let line = b"SUB slow.loris 1\r\n".to_vec();
        match self {
            Loris::TextFirstLine => (t.text, Vec::new(), line),
            Loris::TextLaterLine => (t.text, b"CONNECT {}\r\nPING\r\n".to_vec(), line),
            Loris::TextPayload => (
                t.text,
                b"CONNECT {}\r\nPUB slow.loris 4000\r\n".to_vec(),
                vec![b'x'; 4000],
            ),
            Loris::BinaryHello => {
                let mut preface = BytesMut::new();
                Preface::default().encode(&mut preface);
                let hello = binary_handshake().split_off(preface.len());
                (t.binary, preface.to_vec(), hello.to_vec())
            }
        }
    }
}

struct LorisSocket {
    kind: Loris,
    stream: Option<TcpStream>,
    rest: Vec<u8>,
    pos: usize,
    /// When it may try to connect again after a failure.
    retry_at: Instant,
}

/// `per_kind` sockets of each kind, each sending one byte every `tick`; a socket the broker
/// closed (or whose script ran out) is replaced.
pub fn slowloris(
    t: Target,
    stop: &AtomicBool,
    stats: &ClassStats,
    per_kind: usize,
    tick: Duration,
) {
    let mut socks: Vec<LorisSocket> = Loris::ALL
        .iter()
        .flat_map(|&kind| {
            (0..per_kind).map(move |_| LorisSocket {
                kind,
                stream: None,
                rest: Vec::new(),
                pos: 0,
                retry_at: Instant::now(),
            })
        })
        .collect();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        for s in &mut socks {
            if s.stream.is_none() {
                if now < s.retry_at {
                    continue;
                }
                let (addr, prefix, rest) = s.kind.script(t);
                match connect(addr, None).and_then(|mut c| c.write_all(&prefix).map(|()| c)) {
                    Ok(c) => {
                        stats.opened();
                        s.stream = Some(c);
                        s.rest = rest;
                        s.pos = 0;
                    }
                    Err(_) => {
                        stats.failed();
                        s.retry_at = now + Duration::from_millis(500);
                    }
                }
                continue;
            }
            let done = s.pos >= s.rest.len();
            let failed = !done
                && s.stream
                    .as_mut()
                    .is_some_and(|c| c.write_all(&s.rest[s.pos..s.pos + 1]).is_err());
            s.pos += 1;
            if failed {
                stats.closed();
            }
            if failed || done {
                s.stream = None;
            }
        }
        nap(tick, stop);
    }
}

/// `n` connections (half text, half binary) that send `PING`s and never read; each is
/// replaced once the broker closes it.
pub fn ping_flood(t: Target, stop: &AtomicBool, stats: &ClassStats, n: usize) {
    let text_pings = b"PING\r\n".repeat(8 * 1024);
    let mut one = BytesMut::new();
    encode(&ClientFrame::Ping, &mut one);
    let binary_pings = one.repeat(48 * 1024 / one.len().max(1));
    let mut socks: Vec<(bool, Option<TcpStream>, Instant)> =
        (0..n).map(|i| (i % 2 == 1, None, Instant::now())).collect();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        for (binary, slot, retry_at) in &mut socks {
            let Some(s) = slot else {
                if now < *retry_at {
                    continue;
                }
                let (addr, hello) = if *binary {
                    (t.binary, binary_handshake().to_vec())
                } else {
                    (t.text, b"CONNECT {}\r\n".to_vec())
                };
                match connect(addr, Some(TINY_RCVBUF)).and_then(|mut c| {
                    c.write_all(&hello)?;
                    c.set_nonblocking(true)?;
                    Ok(c)
                }) {
                    Ok(c) => {
                        stats.opened();
                        *slot = Some(c);
                    }
                    Err(_) => {
                        stats.failed();
                        *retry_at = now + Duration::from_millis(500);
                    }
                }
                continue;
            };
            let pings: &[u8] = if *binary { &binary_pings } else { &text_pings };
            // As much as the socket takes now.
            let closed = loop {
                match s.write(pings) {
                    Ok(0) => break true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if closed {
                stats.closed();
                *slot = None;
                *retry_at = now + Duration::from_millis(500);
            }
        }
        nap(Duration::from_millis(50), stop);
    }
}

/// `n` subscribers (half text, half binary) to `filters` with a tiny receive buffer that
/// never read; each lives `lifetime` (staggered), then is closed and replaced.
pub fn stuck(
    t: Target,
    stop: &AtomicBool,
    stats: &ClassStats,
    n: usize,
    filters: &[&str],
    lifetime: Duration,
) {
    let mut socks: Vec<(Option<TcpStream>, Instant)> = (0..n)
        .map(|i| {
            // Staggered: the first replacements come at different times.
            let first = lifetime.mul_f64((i + 1) as f64 / n.max(1) as f64);
            (None, Instant::now() + first)
        })
        .collect();
    for (i, (slot, _)) in socks.iter_mut().enumerate() {
        *slot = open_stuck(t, i % 2 == 1, filters, stats);
    }
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        for (i, (slot, replace_at)) in socks.iter_mut().enumerate() {
            if now >= *replace_at {
                // Closing with unread data in the buffer resets the connection.
                *slot = None;
                *slot = open_stuck(t, i % 2 == 1, filters, stats);
                *replace_at = now + lifetime;
            }
        }
        nap(Duration::from_millis(200), stop);
    }
}

fn open_stuck(t: Target, binary: bool, filters: &[&str], stats: &ClassStats) -> Option<TcpStream> {
    let result = if binary {
        let mut out = binary_handshake();
        for (i, f) in filters.iter().enumerate() {
            encode(
                &ClientFrame::Subscribe(Subscribe {
                    sid: i as u32 + 1,
                    subject: Bytes::copy_from_slice(f.as_bytes()),
                    ..Subscribe::default()
                }),
                &mut out,
            );
        }
        connect(t.binary, Some(TINY_RCVBUF)).and_then(|mut c| c.write_all(&out).map(|()| c))
    } else {
        let mut out = b"CONNECT {\"verbose\":false}\r\n".to_vec();
        for (i, f) in filters.iter().enumerate() {
            out.extend_from_slice(format!("SUB {f} {}\r\n", i + 1).as_bytes());
        }
        connect(t.text, Some(TINY_RCVBUF)).and_then(|mut c| c.write_all(&out).map(|()| c))
    };
    match result {
        Ok(c) => {
            stats.opened();
            Some(c)
        }
        Err(_) => {
            stats.failed();
            None
        }
    }
}

/// One replay flooder: rounds of `requests` whole-log `$TERN.REPLAY`s in one write on a
/// fresh connection; a reader drains what comes for `round`, a non-reader never reads;
/// then the connection is closed and the next round begins.
pub fn replay_flood(
    t: Target,
    stop: &AtomicBool,
    stats: &ClassStats,
    id: usize,
    requests: usize,
    reads: bool,
    round: Duration,
) {
    let mut burst =
        format!("CONNECT {{\"headers\":true,\"verbose\":false}}\r\nSUB _INBOX.flood.{id}.* 1\r\n")
            .into_bytes();
    let body = r#"{"subject":">"}"#;
    for k in 0..requests {
        burst.extend_from_slice(
            format!(
                "PUB $TERN.REPLAY _INBOX.flood.{id}.{k} {}\r\n{body}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    while !stop.load(Ordering::Acquire) {
        match connect(t.text, None).and_then(|mut c| c.write_all(&burst).map(|()| c)) {
            Ok(mut c) => {
                stats.opened();
                let end = Instant::now() + round;
                if reads {
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = vec![0u8; 64 * 1024];
                    while Instant::now() < end && !stop.load(Ordering::Acquire) {
                        match c.read(&mut buf) {
                            Ok(0) => {
                                stats.closed();
                                break;
                            }
                            Ok(_) => {}
                            Err(e) if nothing_yet(&e) => {}
                            Err(_) => {
                                stats.closed();
                                break;
                            }
                        }
                    }
                } else {
                    nap(round, stop);
                }
            }
            Err(_) => {
                stats.failed();
                nap(Duration::from_millis(500), stop);
            }
        }
    }
}

/// Every `every`, `burst` connections opened as fast as possible to both ports in turn,
/// held a moment, then closed.
pub fn storm(t: Target, stop: &AtomicBool, stats: &ClassStats, burst: usize, every: Duration) {
    while !stop.load(Ordering::Acquire) {
        let mut held = Vec::with_capacity(burst);
        for i in 0..burst {
            let addr = if i % 2 == 0 { t.text } else { t.binary };
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stats.opened();
                    held.push(s);
                }
                Err(_) => stats.failed(),
            }
        }
        nap(Duration::from_millis(300), stop);
        drop(held);
        nap(every, stop);
    }
}

/// Connections that publish a few whole messages, then half of one, then reset: one every
/// `every`, text and binary in turn.
pub fn killers(t: Target, stop: &AtomicBool, stats: &ClassStats, every: Duration) {
    let payload = [b'k'; 64];
    let mut text = b"CONNECT {\"verbose\":false}\r\n".to_vec();
    for i in 0..20 {
        text.extend_from_slice(format!("PUB soak.kill.{i} 64\r\n").as_bytes());
        text.extend_from_slice(&payload);
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"PUB soak.kill.cut 64\r\n");
    text.extend_from_slice(&payload[..30]);
    let mut binary = binary_handshake();
    let mut frame = BytesMut::new();
    for i in 0..21 {
        frame.clear();
        encode(
            &ClientFrame::Publish(Publish {
                subject: Bytes::from(format!("soak.kill.{i}")),
                payload: Bytes::copy_from_slice(&payload),
                ..Publish::default()
            }),
            &mut frame,
        );
        // The last one cut in the middle.
        let n = if i == 20 {
            frame.len() / 2
        } else {
            frame.len()
        };
        binary.extend_from_slice(&frame[..n]);
    }
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let (addr, bytes): (SocketAddr, &[u8]) = if round.is_multiple_of(2) {
            (t.text, &text)
        } else {
            (t.binary, &binary)
        };
        match connect(addr, None) {
            Ok(mut s) => {
                stats.opened();
                let _ = s.write_all(bytes);
                // Give the broker a moment to read the start, then reset.
                thread::sleep(Duration::from_millis(5));
                let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            Err(_) => stats.failed(),
        }
        nap(every, stop);
    }
}

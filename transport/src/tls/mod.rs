//! TLS, server side: rustls's unbuffered `UnbufferedServerConnection` driven with bytes,
//! never with a socket.
//!
//! Owns: one connection's TLS session ([`TlsStream`]): its start mode (TLS from the first
//! byte, or NATS-style plain text first and TLS from [`TlsStream::start_tls`] on), the
//! check that a client's first byte is a TLS handshake record, the buffers rustls's
//! unbuffered API leaves to its caller, the hand-over of a TLS 1.3 connection from rustls
//! to this crate's record layer once its handshake is done (`Established`; the records
//! themselves in `record`), and what the handshake learnt (peer certificate, SNI, ALPN)
//! for logging. The server configuration and its reload live in [`config`]; reading a
//! certificate's subject in [`subject`]; the SNI in `hello`.
//!
//! Why the unbuffered API: rustls's buffered `ServerConnection` keeps a record buffer of
//! at least 4 KiB for the life of the connection once it has read a byte (more than half
//! of what an idle TLS connection costs: `tests/tls_alloc.rs`), and queues of its own. Here
//! every buffer belongs to the stream, and an idle one holds none: the socket bytes of a
//! record not complete yet are kept, and freed as soon as it is; records for the peer wait
//! only until the caller takes them.
//!
//! Never: touches a socket or a clock (the handshake timeout is the caller's timer: a
//! stream that is not `is_ready` in time is closed by the caller), or buffers without a
//! bound: the socket bytes it holds are at most one step of input (`STEP`) beyond a
//! partial record (rustls refuses a handshake message over 64 KiB and a record over
//! 18 KiB, `record` a record over 16 KiB + 256 bytes), the decrypted bytes the layer
//! above had no room for at most a few records (they are handed on before any new input
//! is taken), and the plaintext written before the handshake completes, or queued and not
//! taken, at most [`TlsLimits::max_unsent_plaintext`].

pub mod config;
mod hello;
mod record;
pub mod subject;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};

use crate::error::TransportError;
use crate::stream::{ByteStream, PlainStream, Sink, StreamRead};
use hello::HelloReader;
use record::{CapturedSecrets, Opened, Records};

pub(crate) use record::CaptureTrafficSecrets;

/// The content type of a TLS handshake record: the first byte of every ClientHello.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Socket bytes handed to rustls at a time: one record of the largest size rustls accepts
/// (a 5-byte header and 16 KiB of plaintext with up to 2 KiB of expansion).
const STEP: usize = 5 + (16 << 10) + 2048;

/// Bytes of TLS overhead per record at most (header, explicit nonce, content type, tag),
/// for sizing the output before encrypting.
const RECORD_OVERHEAD: usize = 64;

/// The largest plaintext of one record.
const MAX_FRAGMENT: usize = 16 << 10;

/// How a TLS connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStart {
    /// TLS from the first byte (the binary and WebSocket ports; nats-server's
    /// `handshake_first`).
    Immediate,
    /// NATS-style `tls_required`: the server first writes its INFO in plain text, then calls
    /// [`TlsStream::start_tls`]; from then on everything is TLS. A client that starts the
    /// TLS handshake at once (first byte 0x16, nats-server's `handshake_first` clients)
    /// switches the stream to TLS by itself, and the caller should then send its INFO only
    /// once the handshake is done. Any other byte before `start_tls` is a plain-text client
    /// on a TLS port.
    PlainFirst,
}

/// Limits of one TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    /// Application bytes a caller may write before the handshake completes; they are held
    /// until it does. Also the most encrypted bytes queued by the layer above (pongs, close
    /// frames) that may wait for the caller to take them. Default
    /// [`TlsLimits::DEFAULT_MAX_UNSENT_PLAINTEXT`].
    pub max_unsent_plaintext: usize,
}

impl TlsLimits {
    /// 64 KiB, rustls's own default.
    pub const DEFAULT_MAX_UNSENT_PLAINTEXT: usize = 64 * 1024;
}

impl Default for TlsLimits {
    fn default() -> Self {
        Self {
            max_unsent_plaintext: Self::DEFAULT_MAX_UNSENT_PLAINTEXT,
        }
    }
}

/// Where the stream is in its life.
enum State {
    /// `TlsStart::PlainFirst` before TLS started: writes go out in plain text.
    Plain(PlainStream),
    /// TLS driven by rustls: the handshake, and a TLS 1.2 connection's whole life. Boxed
    /// because it is large (rustls's state) and the plain state small.
    Tls(Box<Session>),
    /// A TLS 1.3 connection after its handshake: rustls handed over its keys and was
    /// dropped; the records are protected here (`record`).
    Established(Box<Established>),
    /// The hand-over failed: every call returns the error.
    Failed(Box<rustls::Error>),
}

/// One server-side TLS session over a byte stream.
///
/// Contract: feed it what the socket read (`read_into`), hand its output to the socket
/// (`send`, `take_pending`), and close the socket after an error (having written what
/// `take_pending` gives: rustls's alert). It keeps the configuration it was created with,
/// so a reload of the server's certificate never touches an open connection.
pub struct TlsStream {
    config: Arc<ServerConfig>,
    limits: TlsLimits,
    state: State,
    /// Whether the client's first byte has been checked.
    first_byte_checked: bool,
    /// Whether `handshake_done` has been reported.
    handshake_reported: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("started", &self.is_started())
            .field("handshake_complete", &self.is_handshake_complete())
            .finish()
    }
}

impl TlsStream {
    /// A TLS stream on `config` (take it from `config::TlsConfigHandle::current` when the
    /// connection is accepted).
    pub fn new(
        config: Arc<ServerConfig>,
        start: TlsStart,
        limits: TlsLimits,
    ) -> Result<Self, TransportError> {
        let mut stream = Self {
            config,
            limits,
            state: State::Plain(PlainStream::default()),
            first_byte_checked: false,
            handshake_reported: false,
        };
        if start == TlsStart::Immediate {
            stream.start_tls()?;
        }
        Ok(stream)
    }

    /// Switches a `TlsStart::PlainFirst` stream to TLS: everything written from now on is
    /// encrypted, everything read must be TLS. Call it right after writing the plain-text
    /// INFO. A no-op on a stream already in TLS.
    pub fn start_tls(&mut self) -> Result<(), TransportError> {
        if let State::Plain(plain) = &mut self.state {
            let conn = UnbufferedServerConnection::new(Arc::clone(&self.config))?;
            let queued = plain.take_queued();
            self.state = State::Tls(Box::new(Session::new(conn, self.limits)));
            if !queued.is_empty() {
                self.queue(&queued)?;
            }
        }
        Ok(())
    }

    /// Whether the stream is in TLS (always, for `TlsStart::Immediate`).
    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::Plain(_))
    }

    /// Whether the TLS handshake is complete.
    pub fn is_handshake_complete(&self) -> bool {
        match &self.state {
            State::Tls(session) => !session.conn.is_handshaking(),
            State::Established(_) => true,
            State::Plain(_) | State::Failed(_) => false,
        }
    }

    /// The client's certificate chain, leaf first, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.state {
            State::Tls(session) => session.conn.peer_certificates().filter(|c| !c.is_empty()),
            State::Established(est) => est.learnt.certificates.as_deref(),
            State::Plain(_) | State::Failed(_) => None,
        }
    }

    /// The subject of the client's certificate (`CN=alice, O=Example`), for logs.
    pub fn peer_subject(&self) -> Option<String> {
        subject::subject(self.peer_certificates()?.first()?)
    }

    /// The server name the client asked for (SNI), if it sent one; known once the
    /// handshake is complete.
    pub fn server_name(&self) -> Option<&str> {
        match &self.state {
            State::Tls(session) if !session.conn.is_handshaking() => session.hello.name(),
            State::Established(est) => est.learnt.server_name.as_deref(),
            _ => None,
        }
    }

    /// The application protocol negotiated with ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.state {
            State::Tls(session) => session.conn.alpn_protocol(),
            State::Established(est) => est.learnt.alpn.as_deref(),
            State::Plain(_) | State::Failed(_) => None,
        }
    }

    /// Checks the first byte the client sends: it must open a TLS handshake record. Switches
    /// a plain-first stream to TLS when it does (a `handshake_first` client).
    fn check_first_byte(&mut self, socket_in: &[u8]) -> Result<(), TransportError> {
        let Some(&first_byte) = socket_in.first() else {
            return Ok(());
        };
        if self.first_byte_checked {
            return Ok(());
        }
        self.first_byte_checked = true;
        if first_byte != HANDSHAKE_RECORD {
            return Err(TransportError::PlainTextOnTlsPort { first_byte });
        }
        self.start_tls()
    }

    /// Whether the records are protected by this crate (`record`) rather than by rustls:
    /// a TLS 1.3 connection after its handshake.
    pub fn is_handed_over(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Once a TLS 1.3 handshake is done and rustls has nothing left to send, takes its
    /// keys and drops it (see `record`). A failure fails the stream.
    fn hand_over_when_ready(&mut self) -> Result<(), TransportError> {
        let State::Tls(session) = &self.state else {
            return Ok(());
        };
        if !session.can_hand_over() {
            return Ok(());
        }
        let placeholder = State::Failed(Box::new(rustls::Error::HandshakeNotComplete));
        let State::Tls(session) = std::mem::replace(&mut self.state, placeholder) else {
            unreachable!("checked above");
        };
        match Established::take_over(*session) {
            Ok(established) => {
                self.state = State::Established(Box::new(established));
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed(Box::new(e.clone()));
                Err(TransportError::Tls(e))
            }
        }
    }
}

/// What [`Session::run`] does once rustls may encrypt application data.
enum Then<'a> {
    /// Nothing more.
    Nothing,
    /// Encrypts these parts, as one write, after everything pending, into `out`.
    Encrypt {
        parts: &'a [&'a [u8]],
        out: &'a mut Vec<u8>,
    },
    /// Encrypts them into the pending records.
    Queue(&'a [u8]),
    /// Queues a close_notify.
    CloseNotify,
}

/// Why [`Session::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// rustls needs more socket bytes (or has nothing more to do).
    Input,
    /// The layer above took fewer decrypted bytes than offered.
    Full,
}

/// A TLS session and the buffers the unbuffered API leaves to its caller.
struct Session {
    conn: UnbufferedServerConnection,
    limits: TlsLimits,
    /// Socket bytes rustls has not discarded yet (a record not complete yet, a handshake
    /// message it is joining from several records, records not processed because the
    /// layer above was full), decrypted bytes held, the peer's close_notify. Freed
    /// (capacity too) at the end of a read that leaves nothing in it.
    inbound: Inbound,
    /// TLS records for the peer, until the caller takes them.
    outgoing: Vec<u8>,
    /// Application bytes written before the handshake completed.
    unsent: Vec<u8>,
    /// The client's ClientHello, read for its server name.
    hello: HelloReader,
    /// The TLS error that ended the session: every later call returns it. (Boxed: the
    /// session stays within 1,280 bytes, an allocator size class.)
    failed: Option<Box<rustls::Error>>,
    /// The traffic secrets rustls's key log gave during the handshake (TLS 1.3), for the
    /// hand-over.
    secrets: Option<Box<CapturedSecrets>>,
}

impl Session {
    fn new(conn: UnbufferedServerConnection, limits: TlsLimits) -> Self {
        Self {
            conn,
            limits,
            inbound: Inbound::default(),
            outgoing: Vec::new(),
            unsent: Vec::new(),
            hello: HelloReader::default(),
            failed: None,
            secrets: None,
        }
    }

    /// Whether rustls may hand this connection over now: a TLS 1.3 handshake complete,
    /// its secrets captured, nothing left in rustls to send and nothing unusual going on
    /// (an error, the peer's close_notify, bytes written before the handshake).
    fn can_hand_over(&self) -> bool {
        self.failed.is_none()
            && !self.inbound.peer_closed
            && self.unsent.is_empty()
            && !self.conn.is_handshaking()
            && !self.conn.wants_write()
            && self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            && self.secrets.as_ref().is_some_and(|s| s.is_complete())
    }

    /// Takes socket bytes and hands the decrypted ones to `sink`.
    fn read(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError> {
        let mut input = socket_in;
        let mut out = StreamRead::default();
        let result = self.read_from(&mut input, sink, &mut out);
        out.consumed = socket_in.len() - input.len();
        // The common case between reads: an idle connection keeps no buffer.
        self.inbound.finish_read(true);
        result.map(|()| out)
    }

    fn read_from(
        &mut self,
        input: &mut &[u8],
        sink: &mut Sink<'_>,
        out: &mut StreamRead,
    ) -> Result<(), TransportError> {
        if !self.inbound.hand_on_held(sink)? {
            out.again = true;
            return Ok(());
        }
        loop {
            if self.run(Some(sink), Then::Nothing)? == Stop::Full {
                out.again = true;
                return Ok(());
            }
            if self.inbound.skip_after_close_notify(input, out) {
                return Ok(());
            }
            if input.is_empty() {
                return Ok(());
            }
            let step = self.inbound.take_step(input);
            self.hello.feed(step);
        }
    }

    /// Drives rustls over the inbound bytes until it needs more input: decrypted bytes go to
    /// `sink` (or are held, without one), handshake records and alerts to `outgoing`. Once
    /// application data may be sent, the bytes written before the handshake are encrypted,
    /// then what `then` says is done.
    fn run(&mut self, sink: Option<&mut Sink<'_>>, then: Then<'_>) -> Result<Stop, TransportError> {
        let handshaking = self.conn.is_handshaking();
        let result = self.run_rustls(sink, then);
        if handshaking {
            // The key log ran (if at all) inside the calls just made, on this thread.
            CapturedSecrets::take_captured(&mut self.secrets);
        }
        result
    }

    fn run_rustls(
        &mut self,
        mut sink: Option<&mut Sink<'_>>,
        mut then: Then<'_>,
    ) -> Result<Stop, TransportError> {
        if let Some(e) = &self.failed {
            return Err(TransportError::Tls(rustls::Error::clone(e)));
        }
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .conn
                // The field, not `pending()`: the records borrow it while `held` grows.
                .process_tls_records(&mut self.inbound.bytes[self.inbound.done..]);
            let mut stop = None;
            let mut failed = None;
            match state {
                Err(e) => failed = Some(TransportError::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(e) => {
                                failed = Some(TransportError::Tls(e));
                                break;
                            }
                        };
                        discard += record.discard;
                        let payload = record.payload;
                        let taken = match sink.as_mut() {
                            Some(sink) => match sink(payload) {
                                Ok(taken) => taken,
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            },
                            None => 0,
                        };
                        if taken < payload.len() {
                            self.inbound.held.extend_from_slice(&payload[taken..]);
                            if sink.is_some() {
                                stop = Some(Stop::Full);
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if let Err(e) = append_encoded(&mut self.outgoing, 0, |buf| encode.encode(buf))
                    {
                        failed = Some(encode_error(e));
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The records are in `outgoing`, for the caller to take.
                    transmit.done();
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let mut result = Ok(());
                    if !self.unsent.is_empty() {
                        let unsent = std::mem::take(&mut self.unsent);
                        result = append_encoded(
                            &mut self.outgoing,
                            encrypted_len(unsent.len()),
                            |buf| traffic.encrypt(&unsent, buf),
                        );
                    }
                    result =
                        result.and_then(|()| match std::mem::replace(&mut then, Then::Nothing) {
                            Then::Nothing => Ok(()),
                            Then::Encrypt { parts, out } => {
                                move_records(&mut self.outgoing, out);
                                encrypt_parts(parts, out, |plain, buf| traffic.encrypt(plain, buf))
                            }
                            Then::Queue(bytes) => append_encoded(
                                &mut self.outgoing,
                                encrypted_len(bytes.len()),
                                |buf| traffic.encrypt(bytes, buf),
                            ),
                            Then::CloseNotify => {
                                append_encoded(&mut self.outgoing, RECORD_OVERHEAD, |buf| {
                                    traffic.queue_close_notify(buf)
                                })
                            }
                        });
                    match result {
                        Ok(()) => stop = Some(Stop::Input),
                        Err(e) => failed = Some(encrypt_error(e)),
                    }
                }
                Ok(ConnectionState::PeerClosed) => self.inbound.peer_closed = true,
                Ok(ConnectionState::BlockedHandshake | ConnectionState::Closed) => {
                    if matches!(then, Then::Nothing) {
                        stop = Some(Stop::Input);
                    } else {
                        // Nothing may be sent any more (both sides closed).
                        failed = Some(TransportError::Closed);
                    }
                }
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    // Never offered: `max_early_data_size` stays 0 in this crate's
                    // configurations.
                    failed = Some(TransportError::Tls(rustls::Error::General(
                        "early data is not accepted".into(),
                    )));
                }
                Ok(_) => stop = Some(Stop::Input),
            }
            self.inbound.done += discard;
            if let Some(e) = failed {
                if let TransportError::Tls(e) = &e {
                    self.failed = Some(Box::new(e.clone()));
                    self.queue_alerts();
                }
                return Err(e);
            }
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// After a TLS error, moves the alert rustls queued (and anything queued before it)
    /// into `outgoing`.
    fn queue_alerts(&mut self) {
        // Only while rustls has records queued: with none, it would read the failed input
        // again. It is given the same buffer: it may still point into it.
        while self.conn.wants_write() {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.inbound.pending());
            let encoded = match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    append_encoded(&mut self.outgoing, 0, |buf| encode.encode(buf)).is_ok()
                }
                _ => false,
            };
            self.inbound.done += discard;
            if !encoded {
                return;
            }
        }
    }

    /// Whether rustls may send application data.
    fn is_ready(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// Holds application bytes until the handshake completes.
    fn hold_unsent(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.unsent.len() + len > self.limits.max_unsent_plaintext {
            return Err(TransportError::OutputFull {
                max: self.limits.max_unsent_plaintext,
            });
        }
        for part in parts {
            self.unsent.extend_from_slice(part);
        }
        Ok(())
    }

    /// Moves the pending records into `socket_out`.
    fn take_pending(&mut self, socket_out: &mut Vec<u8>) {
        move_records(&mut self.outgoing, socket_out);
    }
}

/// What the handshake learnt, kept for logs and `/connz` once rustls is gone.
#[derive(Default)]
struct Learnt {
    server_name: Option<Box<str>>,
    alpn: Option<Box<[u8]>>,
    /// Only when the client presented a certificate.
    certificates: Option<Box<[CertificateDer<'static>]>>,
}

/// A TLS 1.3 connection after its handshake, its records protected by [`Records`]: the
/// same buffers as [`Session`] and the same bounds, without rustls.
struct Established {
    records: Records,
    limits: TlsLimits,
    /// Socket bytes of a record not complete yet, or of records not opened yet because
    /// the layer above was full; decrypted bytes held; the peer's close_notify. Cleared
    /// once all are opened; the capacity goes with `shrink`.
    inbound: Inbound,
    /// Records for the peer (close_notify, alerts, KeyUpdates, queued bytes), until the
    /// caller takes them.
    outgoing: Vec<u8>,
    /// Our close_notify is queued: nothing more is sealed.
    closed: bool,
    failed: Option<Box<rustls::Error>>,
    learnt: Learnt,
}

impl Established {
    /// Takes over from a session whose TLS 1.3 handshake is done (`can_hand_over`).
    fn take_over(session: Session) -> Result<Self, rustls::Error> {
        let Session {
            conn,
            limits,
            mut inbound,
            outgoing,
            hello,
            secrets,
            ..
        } = session;
        let limit = match conn.negotiated_cipher_suite() {
            Some(SupportedCipherSuite::Tls13(suite)) => suite.common.confidentiality_limit,
            _ => return Err(rustls::Error::HandshakeNotComplete),
        };
        let learnt = Learnt {
            server_name: hello.into_name(),
            alpn: conn.alpn_protocol().map(Box::from),
            certificates: conn
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(Box::from),
        };
        let secrets = secrets.unwrap_or_default();
        let (extracted, _rustls) = conn.dangerous_into_kernel_connection()?;
        let records = Records::new(&secrets, extracted, limit)?;
        inbound.bytes.drain(..inbound.done);
        inbound.done = 0;
        Ok(Established {
            records,
            limits,
            inbound,
            outgoing,
            closed: false,
            failed: None,
            learnt,
        })
    }

    fn check(&self) -> Result<(), TransportError> {
        match &self.failed {
            Some(e) => Err(TransportError::Tls(rustls::Error::clone(e))),
            None => Ok(()),
        }
    }

    /// Records `error` as the end of the stream, with the alert the peer gets for it.
    fn fail(&mut self, error: rustls::Error) -> TransportError {
        self.records.seal_alert_for(&error, &mut self.outgoing);
        self.failed = Some(Box::new(error.clone()));
        TransportError::Tls(error)
    }

    /// Takes socket bytes and hands the decrypted ones to `sink`.
    fn read(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError> {
        self.check()?;
        let mut out = StreamRead::default();
        if !self.inbound.hand_on_held(sink)? {
            out.again = true;
            return Ok(out);
        }
        let mut input = socket_in;
        let result = self.read_from(&mut input, sink, &mut out);
        out.consumed = socket_in.len() - input.len();
        // The capacity stays until the tick's `shrink`: a busy connection reuses it.
        self.inbound.finish_read(false);
        result.map(|()| out)
    }

    fn read_from(
        &mut self,
        input: &mut &[u8],
        sink: &mut Sink<'_>,
        out: &mut StreamRead,
    ) -> Result<(), TransportError> {
        loop {
            if self.inbound.skip_after_close_notify(input, out) {
                return Ok(());
            }
            let len = match record::record_len(self.inbound.pending()) {
                Ok(Some(len)) => len,
                Ok(None) if input.is_empty() => return Ok(()),
                Ok(None) => {
                    self.inbound.take_step(input);
                    continue;
                }
                Err(e) => return Err(self.fail(e)),
            };
            let start = self.inbound.done;
            self.inbound.done += len;
            let record = &mut self.inbound.bytes[start..start + len];
            match self.records.open(record, &mut self.outgoing) {
                Ok(Opened::Data(range)) => {
                    let data = &self.inbound.bytes[start + range.start..start + range.end];
                    let taken = sink(data)?;
                    if taken < data.len() {
                        self.inbound.held.extend_from_slice(&data[taken..]);
                        out.again = true;
                        return Ok(());
                    }
                }
                Ok(Opened::CloseNotify) => self.inbound.peer_closed = true,
                Ok(Opened::Nothing) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Seals `parts` as one write into `socket_out`, after what is pending.
    fn send(&mut self, parts: &[&[u8]], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.check()?;
        if self.closed {
            return Err(TransportError::Closed);
        }
        move_records(&mut self.outgoing, socket_out);
        self.records
            .seal_data(parts, socket_out)
            .map_err(|e| self.fail(e))
    }

    /// Seals bytes of the layer above into the pending records.
    fn queue(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.check()?;
        if self.closed {
            return Err(TransportError::Closed);
        }
        if self.outgoing.len() + bytes.len() > self.limits.max_unsent_plaintext {
            return Err(TransportError::OutputFull {
                max: self.limits.max_unsent_plaintext,
            });
        }
        self.records
            .seal_data(&[bytes], &mut self.outgoing)
            .map_err(|e| self.fail(e))
    }

    fn close(&mut self) {
        if !self.closed && self.failed.is_none() {
            self.closed = true;
            if let Err(e) = self.records.seal_close_notify(&mut self.outgoing) {
                self.failed = Some(Box::new(e));
            }
        }
    }

    /// Gives back what a quiet connection need not keep: the expanded keys, the input
    /// buffer's capacity.
    fn shrink(&mut self) {
        self.records.shrink();
        if self.inbound.bytes.is_empty() {
            self.inbound.bytes = Vec::new();
        }
    }
}

/// What a session keeps of its input between reads, whichever of rustls or [`Records`]
/// protects its records.
#[derive(Default)]
struct Inbound {
    /// Socket bytes, from `done` on not finished with yet.
    bytes: Vec<u8>,
    /// The bytes at the front of `bytes` that are finished with; removed before more are
    /// added, not after each record (a read of many small records would move the rest of
    /// the buffer once per record).
    done: usize,
    /// Decrypted bytes the layer above had no room for, handed on first at the next read.
    held: Vec<u8>,
    /// How much of `held` has been handed on.
    held_at: usize,
    /// The client's close_notify has been read: what follows it is ignored.
    peer_closed: bool,
    /// A read has reported it.
    peer_closed_reported: bool,
}

impl Inbound {
    /// The socket bytes not finished with.
    fn pending(&mut self) -> &mut [u8] {
        &mut self.bytes[self.done..]
    }

    /// At the end of a read: once every byte is finished with, forgets them, and gives
    /// back the capacity when `free`.
    fn finish_read(&mut self, free: bool) {
        if self.done == self.bytes.len() {
            if free {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
            self.done = 0;
        }
    }

    /// Takes the next step of `input` (at most `STEP` bytes) after what is pending, and
    /// returns it.
    fn take_step<'a>(&mut self, input: &mut &'a [u8]) -> &'a [u8] {
        let (step, rest) = input.split_at(input.len().min(STEP));
        self.bytes.drain(..self.done);
        self.done = 0;
        self.bytes.extend_from_slice(step);
        *input = rest;
        step
    }

    /// Once the peer's close_notify has been read: what follows it is ignored, not offered
    /// again (RFC 8446, section 6.1), and the read says the peer closed (once, and again
    /// whenever more bytes come). True when that is the case.
    fn skip_after_close_notify(&mut self, input: &mut &[u8], out: &mut StreamRead) -> bool {
        if !self.peer_closed {
            return false;
        }
        out.peer_closed = !self.peer_closed_reported || !input.is_empty();
        self.peer_closed_reported = true;
        *input = &[];
        self.bytes.clear();
        self.done = 0;
        true
    }

    /// Hands what the layer above could not take earlier to `sink`; false when it still
    /// cannot take it all.
    fn hand_on_held(&mut self, sink: &mut Sink<'_>) -> Result<bool, TransportError> {
        while self.held_at < self.held.len() {
            let taken = sink(&self.held[self.held_at..])?;
            if taken == 0 {
                return Ok(false);
            }
            self.held_at += taken;
        }
        self.held = Vec::new();
        self.held_at = 0;
        Ok(true)
    }
}

/// Moves the records of `pending` to the end of `out`; `pending` keeps no capacity.
fn move_records(pending: &mut Vec<u8>, out: &mut Vec<u8>) {
    if pending.capacity() == 0 {
        return;
    }
    if out.is_empty() && out.capacity() < pending.len() {
        std::mem::swap(out, pending);
    } else {
        out.extend_from_slice(pending);
    }
    *pending = Vec::new();
}

/// Appends to `out` what `encode` writes into the slice it is given: `guess` bytes at
/// first, as many as it asks for when that is too few.
fn append_encoded<E: SizeHint>(
    out: &mut Vec<u8>,
    guess: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(e) => {
                out.truncate(start);
                match e.required() {
                    Some(required) if required > room => room = required,
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Encrypts `parts` as one write into `out`: a single part straight from its slice,
/// several joined first (behind the records, in `out`'s spare room) so that a frame
/// header and its payload share records.
fn encrypt_parts(
    parts: &[&[u8]],
    out: &mut Vec<u8>,
    mut encrypt: impl FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), EncryptError> {
    let non_empty = parts.iter().filter(|p| !p.is_empty()).count();
    if non_empty <= 1 {
        let part = parts.iter().find(|p| !p.is_empty()).copied().unwrap_or(&[]);
        return append_encoded(out, encrypted_len(part.len()), |buf| encrypt(part, buf));
    }
    let start = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    let plain_len = out.len() - start;
    let mut room = encrypted_len(plain_len);
    loop {
        out.resize(start + plain_len + room, 0);
        let (plain, records) = out[start..].split_at_mut(plain_len);
        match encrypt(plain, records) {
            Ok(written) => {
                out.copy_within(start + plain_len..start + plain_len + written, start);
                out.truncate(start + written);
                return Ok(());
            }
            Err(e) => match e.required() {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

/// The room `len` plaintext bytes take once encrypted, at most.
fn encrypted_len(len: usize) -> usize {
    len + (len / MAX_FRAGMENT + 1) * RECORD_OVERHEAD
}

/// The size an encoder asked for, when it refused for lack of room.
trait SizeHint {
    fn required(&self) -> Option<usize>;
}

impl SizeHint for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

impl SizeHint for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

fn encode_error(e: EncodeError) -> TransportError {
    TransportError::Tls(rustls::Error::General(e.to_string()))
}

fn encrypt_error(e: EncryptError) -> TransportError {
    match e {
        EncryptError::EncryptExhausted => TransportError::Tls(rustls::Error::EncryptError),
        e => TransportError::Tls(rustls::Error::General(e.to_string())),
    }
}

impl ByteStream for TlsStream {
    fn read_into(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError> {
        self.check_first_byte(socket_in)?;
        let session = match &mut self.state {
            State::Tls(session) => session,
            State::Established(est) => return est.read(socket_in, sink),
            State::Failed(e) => return Err(TransportError::Tls(rustls::Error::clone(e))),
            // Only reachable with no bytes: a first byte either started TLS or failed.
            State::Plain(_) => return Ok(StreamRead::default()),
        };
        let mut out = session.read(socket_in, sink)?;
        if !self.handshake_reported && session.is_ready() {
            self.handshake_reported = true;
            out.handshake_done = true;
        }
        self.hand_over_when_ready()?;
        Ok(out)
    }

    fn send(&mut self, parts: &[&[u8]], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        let session = match &mut self.state {
            State::Plain(plain) => return plain.send(parts, socket_out),
            State::Tls(session) => session,
            State::Established(est) => return est.send(parts, socket_out),
            State::Failed(e) => return Err(TransportError::Tls(rustls::Error::clone(e))),
        };
        if !session.is_ready() {
            session.take_pending(socket_out);
            return session.hold_unsent(parts);
        }
        session.run(
            None,
            Then::Encrypt {
                parts,
                out: socket_out,
            },
        )?;
        Ok(())
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        match &mut self.state {
            State::Plain(plain) => plain.queue(bytes)?,
            State::Tls(session) if !session.is_ready() => session.hold_unsent(&[bytes])?,
            State::Tls(session) => {
                if session.outgoing.len() + bytes.len() > session.limits.max_unsent_plaintext {
                    return Err(TransportError::OutputFull {
                        max: session.limits.max_unsent_plaintext,
                    });
                }
                session.run(None, Then::Queue(bytes))?;
            }
            State::Established(est) => est.queue(bytes)?,
            State::Failed(e) => return Err(TransportError::Tls(rustls::Error::clone(e))),
        }
        Ok(())
    }

    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        match &mut self.state {
            State::Plain(plain) => plain.take_pending(socket_out),
            State::Tls(session) => {
                session.take_pending(socket_out);
                Ok(())
            }
            State::Established(est) => {
                move_records(&mut est.outgoing, socket_out);
                Ok(())
            }
            State::Failed(_) => Ok(()),
        }
    }

    fn has_pending(&self) -> bool {
        match &self.state {
            State::Plain(plain) => plain.has_pending(),
            State::Tls(session) => !session.outgoing.is_empty(),
            State::Established(est) => !est.outgoing.is_empty(),
            State::Failed(_) => false,
        }
    }

    fn close(&mut self) {
        match &mut self.state {
            State::Tls(session) if session.is_ready() => {
                // An error here has queued its alert instead; the caller closes anyway.
                let _ = session.run(None, Then::CloseNotify);
            }
            State::Established(est) => est.close(),
            _ => {}
        }
    }

    fn is_ready(&self) -> bool {
        self.is_handshake_complete()
    }

    fn shrink(&mut self) {
        if let State::Established(est) = &mut self.state {
            est.shrink();
        }
    }
}

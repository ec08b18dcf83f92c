//! Incremental decoders for both directions of the text protocol.
//!
//! Owns: the decoding machinery both directions share (a private `Core`: finding control
//! lines under the `max_control_line` limit without rescanning, skipping empty lines, checking
//! announced payload sizes against `max_payload`, awaiting and slicing payloads) and the two
//! grammars that sit on it: the client's operations ([`ClientDecoder`]) and the server's
//! ([`ServerDecoder`]).
//!
//! Every operation is cut out of the caller's buffer with one `split_to(..).freeze()`; its
//! subject, reply, sid, header block and payload are `slice`s of that, never copies.
//!
//! The line nearly every publish arrives as, `PUB <subject> [reply] <size>\r\n`, is read in
//! one pass from its first byte to its line end when a grammar offers such a read
//! (`Grammar::fast_msg`) and the line is seen for the first time; anything else, and a line
//! that arrived in pieces, is found by its line end and parsed by the general grammar,
//! which agrees with the one-pass read on every line that read takes.
//!
//! An unknown operation is refused as soon as it is one: while a control line is
//! incomplete, its first token so far must still be able to become one of the grammar's
//! operation names (`Grammar::NAMES`), so garbage trickled a byte at a time fails at its
//! first impossible byte instead of waiting for a line end that may never come.

use bytes::{Buf, Bytes, BytesMut};

use super::{ClientOp, ConnectOptions, Limits, Message, Publish, ServerInfo, ServerOp, Subscribe};
use crate::headers::VERSION;
use crate::subject::{self, SubjectError};

/// Why bytes could not be decoded. `Display` is the exact text a client sees inside
/// `-ERR '...'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line does not start with a known operation name: detected as soon as its first
    /// token can no longer become one, without waiting for the line end. Fatal.
    #[error("Unknown Protocol Operation")]
    UnknownOperation,
    /// No line end within `max_control_line` bytes. Fatal.
    #[error("Maximum Control Line Exceeded")]
    ControlLineTooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A `PUB`/`HPUB` announced more than `max_payload` bytes. Fatal; detected from the
    /// control line, before any payload is buffered.
    #[error("Maximum Payload Violation")]
    PayloadTooLarge {
        /// The announced size (the total size for `HPUB`/`HMSG`).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A `PUB`/`HPUB` to a subject (or with a reply subject) that is not a valid literal
    /// subject. Not fatal: the whole operation, payload included, has been consumed.
    #[error("Invalid Publish Subject{}", too_many_tokens(.0))]
    InvalidPublishSubject(SubjectError),
    /// A `SUB` with an invalid filter (or an invalid queue group name). Not fatal.
    #[error("Invalid Subject{}", too_many_tokens(.0))]
    InvalidSubject(SubjectError),
    /// A `SUB` whose filter has more than `max_subject_tokens` tokens. Not fatal. The text
    /// is nats-server's for its own cap (`max_subscription_tokens`), which NATS clients
    /// report without closing the connection, and then the limit.
    #[error("Permissions Violation for Subscription to {subject:?}, too many tokens (max {max})")]
    FilterTooManyTokens {
        /// The filter, as the client sent it (lossy UTF-8).
        subject: String,
        /// The limit.
        max: usize,
    },
    /// The JSON of `CONNECT` (or a server's `INFO`) could not be read. Fatal.
    #[error("Invalid CONNECT: {0}")]
    InvalidJson(String),
    /// A client's `INFO` does not carry a JSON object. Fatal (nats-server closes the
    /// connection too, without saying why).
    #[error("Invalid INFO: {0}")]
    InvalidInfo(String),
    /// The arguments of an operation are wrong: their count, a number, a missing line end
    /// after a payload, a header size larger than the total, a header block that does not
    /// start with `NATS/1.0`. Fatal. The text says which.
    #[error("Parser Error: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// True when the connection must be closed after reporting this error; false when the
    /// offending operation was consumed whole and decoding can go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            DecodeError::InvalidPublishSubject(_)
                | DecodeError::InvalidSubject(_)
                | DecodeError::FilterTooManyTokens { .. }
        )
    }

    /// True when a subject, filter or queue group name went over `max_subject_tokens`.
    pub fn is_too_many_tokens(&self) -> bool {
        matches!(
            self,
            DecodeError::FilterTooManyTokens { .. }
                | DecodeError::InvalidPublishSubject(SubjectError::TooManyTokens { .. })
                | DecodeError::InvalidSubject(SubjectError::TooManyTokens { .. })
        )
    }
}

/// What the `Invalid ... Subject` texts add for a subject over the token cap: nats-server
/// has no such text, and "Invalid Subject" alone would not say what to change.
fn too_many_tokens(e: &SubjectError) -> String {
    match e {
        SubjectError::TooManyTokens { max } => format!(": too many tokens (max {max})"),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Control line tokens
// ---------------------------------------------------------------------------------------

const BAD_NUMBER: DecodeError = DecodeError::Malformed("size is not a decimal number");
const BAD_HEADER_SIZE: DecodeError =
    DecodeError::Malformed("header size is larger than total size");
const BAD_HEADER_BLOCK: DecodeError =
    DecodeError::Malformed("header block does not start with NATS/1.0");
const NO_PAYLOAD_END: DecodeError = DecodeError::Malformed("payload is not followed by CRLF");

/// Argument separators inside a control line.
fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte range of the control line (which starts at the front of the buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(self, line: &[u8]) -> &[u8] {
        line.get(self.start..self.end).unwrap_or_default()
    }

    fn of_bytes(self, frame: &Bytes) -> Bytes {
        if self.start <= self.end && self.end <= frame.len() {
            frame.slice(self.start..self.end)
        } else {
            Bytes::new()
        }
    }
}

/// The most arguments any operation takes (`HMSG <subject> <sid> [reply] <hdr> <total>`).
const MAX_ARGS: usize = 5;

/// The whitespace-separated arguments of a control line, without allocating. `count` keeps
/// counting past `MAX_ARGS`, so a line with too many arguments is recognised as such.
struct Args {
    spans: [Span; MAX_ARGS],
    count: usize,
}

impl Args {
    /// The arguments when there are exactly between `min` and `MAX_ARGS` of them.
    fn get(&self, min: usize, max: usize) -> Option<&[Span]> {
        if self.count >= min && self.count <= max && self.count <= MAX_ARGS {
            self.spans.get(..self.count)
        } else {
            None
        }
    }
}

/// Splits `line[from..]` into arguments.
fn split_args(line: &[u8], from: usize) -> Args {
    let mut args = Args {
        spans: [Span::default(); MAX_ARGS],
        count: 0,
    };
    let mut i = from;
    while i < line.len() {
        if is_space(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && !is_space(line[i]) {
            i += 1;
        }
        if let Some(slot) = args.spans.get_mut(args.count) {
            *slot = Span { start, end: i };
        }
        args.count += 1;
    }
    args
}

/// The operation name: the first token of the line (leading whitespace skipped).
fn op_name(line: &[u8]) -> Span {
    let start = line
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(line.len());
    let end = line[start..]
        .iter()
        .position(|&b| is_space(b))
        .map_or(line.len(), |n| start + n);
    Span { start, end }
}

/// True while `partial`, the start of a control line whose line end has not arrived, can
/// still become an operation of `names`: after leading whitespace, its first token so far
/// is a case-insensitive prefix of a name or, once whitespace has ended it, a name. A `\r`
/// at the very end may be the start of the line end and is not part of the token.
///
/// It agrees with the parse of the whole line: a line whose name is not in `names` is
/// refused as `UnknownOperation` either way, only sooner here.
fn may_become_operation(partial: &[u8], names: &[&str]) -> bool {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    let start = partial
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(partial.len());
    let token = partial.get(start..).unwrap_or_default();
    match token.iter().position(|&b| is_space(b)) {
        Some(end) => {
            let token = token.get(..end).unwrap_or_default();
            names
                .iter()
                .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
        }
        None => names.iter().any(|name| {
            name.as_bytes()
                .get(..token.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(token))
        }),
    }
}

/// The text of an `-ERR` line (either direction): the rest of the line, without the
/// quotes around it.
fn err_text(line: &[u8], op: Span) -> String {
    let text = match rest_of_line(line, op) {
        [b'\'', inner @ .., b'\''] => inner,
        other => other,
    };
    String::from_utf8_lossy(text).into_owned()
}

/// The rest of the line after the operation name, without surrounding whitespace.
fn rest_of_line(line: &[u8], op: Span) -> &[u8] {
    rest_span(line, op).of(line)
}

/// Where [`rest_of_line`] is in the line.
fn rest_span(line: &[u8], op: Span) -> Span {
    let rest = line.get(op.end..).unwrap_or_default();
    let start = rest
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(rest.len());
    let end = rest
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |n| n + 1);
    Span {
        start: op.end + start,
        end: op.end + end,
    }
}

/// A decimal number: digits only, no sign, no overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_size(digits: &[u8]) -> Result<usize, DecodeError> {
    parse_u64(digits)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(BAD_NUMBER)
}

// ---------------------------------------------------------------------------------------
// The shared core
// ---------------------------------------------------------------------------------------

/// A parsed control line that announces a payload (`PUB`, `HPUB`, `MSG`, `HMSG`).
#[derive(Debug, Clone, Copy)]
struct MsgLine {
    subject: Span,
    reply: Option<Span>,
    /// `MSG`/`HMSG` only.
    sid: Option<Span>,
    /// The header size, for `HPUB`/`HMSG`.
    header_len: Option<usize>,
    /// Header block and payload together.
    total_len: usize,
    /// The (non-fatal) error to report once the whole operation has been consumed.
    subject_error: Option<SubjectError>,
}

/// A control line whose payload the decoder is waiting for.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The control line, line end included.
    line_len: usize,
    msg: MsgLine,
}

/// The parts of a decoded `PUB`/`HPUB`/`MSG`/`HMSG`, all slices of one frozen frame.
struct Frame {
    subject: Bytes,
    reply: Option<Bytes>,
    sid: Bytes,
    headers: Option<Bytes>,
    payload: Bytes,
}

/// What a grammar made of a control line.
enum Parsed<L> {
    /// An operation without payload, complete with this line.
    Line(L),
    /// An operation whose payload follows the line.
    Msg(MsgLine),
}

/// One direction's operations on top of the shared core.
trait Grammar {
    /// The decoded operation.
    type Op;
    /// A parsed payload-less control line, its arguments as spans of the line.
    type Line;

    /// Every operation name `parse_line` knows (it compares names case-insensitively):
    /// an incomplete line whose first token cannot become one of these is refused at once.
    const NAMES: &'static [&'static str];

    /// The common message line, read at the front of `bytes` (the buffer, cut at
    /// `max_control_line`) in one pass, before any search for the line end: its length,
    /// line end included, and its parse. `None` for anything else, an incomplete line
    /// included; `parse_line` then reads it, and must agree on every line this accepts.
    fn fast_msg(_bytes: &[u8], _limits: &Limits) -> Option<(usize, MsgLine)> {
        None
    }

    /// Parses a non-blank control line (without its line end).
    fn parse_line(line: &[u8], limits: &Limits) -> Result<Parsed<Self::Line>, DecodeError>;

    /// Builds the operation of a payload-less line; `line` is the frozen line (spans of the
    /// parse index into it). May fail with a non-fatal error.
    fn build_line(line: &Bytes, parsed: Self::Line) -> Result<Self::Op, DecodeError>;

    /// Builds the operation of a complete message.
    fn build_msg(frame: Frame) -> Self::Op;
}

/// The machinery both decoders share.
#[derive(Debug)]
struct Core {
    limits: Limits,
    /// How many bytes at the front of the buffer are known to hold no `\n` (within the
    /// control line window), so a growing buffer is never rescanned.
    scanned: usize,
    /// The control line whose payload is awaited.
    pending: Option<Pending>,
    /// While awaiting a payload: bytes still needed beyond the buffer length of the last
    /// call.
    needed: Option<usize>,
}

impl Core {
    fn new(limits: Limits) -> Self {
        Core {
            limits,
            scanned: 0,
            pending: None,
            needed: None,
        }
    }

    /// Back to "at the start of an operation".
    fn reset(&mut self) {
        self.scanned = 0;
        self.pending = None;
        self.needed = None;
    }

    fn decode<G: Grammar>(&mut self, buf: &mut BytesMut) -> Result<Option<G::Op>, DecodeError> {
        self.needed = None;
        loop {
            if let Some(pending) = self.pending {
                return self.finish_msg::<G>(pending, buf);
            }
            // A line seen for the first time (nothing of it scanned yet, so trying it
            // costs no rescan) may be the common message line, read in one pass.
            if self.scanned == 0 {
                let window = buf.len().min(self.limits.max_control_line);
                let head = buf.get(..window).unwrap_or_default();
                if let Some((line_len, msg)) = G::fast_msg(head, &self.limits) {
                    return self.start_msg::<G>(line_len, msg, buf);
                }
            }
            let Some((line_len, content_len)) = self.find_line(buf, G::NAMES)? else {
                return Ok(None);
            };
            let line = buf.get(..content_len).unwrap_or_default();
            if line.iter().all(|&b| is_space(b)) {
                buf.advance(line_len);
                continue;
            }
            match G::parse_line(line, &self.limits) {
                Ok(Parsed::Line(parsed)) => {
                    let line = buf.split_to(line_len).freeze();
                    return G::build_line(&line, parsed).map(Some);
                }
                Ok(Parsed::Msg(msg)) => return self.start_msg::<G>(line_len, msg, buf),
                Err(e) => {
                    buf.advance(line_len);
                    return Err(e);
                }
            }
        }
    }

    /// Checks the sizes a message line announced, before any of its payload is awaited,
    /// and completes the message if its payload is already in `buf`.
    #[inline]
    fn start_msg<G: Grammar>(
        &mut self,
        line_len: usize,
        msg: MsgLine,
        buf: &mut BytesMut,
    ) -> Result<Option<G::Op>, DecodeError> {
        let max = self.limits.max_payload;
        if msg.total_len > max {
            buf.advance(line_len);
            return Err(DecodeError::PayloadTooLarge {
                size: msg.total_len,
                max,
            });
        }
        if msg.header_len.is_some_and(|h| h > msg.total_len) {
            buf.advance(line_len);
            return Err(BAD_HEADER_SIZE);
        }
        // The payload may already be in the buffer.
        self.finish_msg::<G>(Pending { line_len, msg }, buf)
    }

    /// Finds the next control line: `(length with line end, length without)`. Errors when
    /// the incomplete line cannot become an operation of `names` (see
    /// [`may_become_operation`]), or when no line end is within `max_control_line` bytes.
    fn find_line(
        &mut self,
        buf: &mut BytesMut,
        names: &[&str],
    ) -> Result<Option<(usize, usize)>, DecodeError> {
        if buf.is_empty() {
            self.scanned = 0;
            return Ok(None);
        }
        let max = self.limits.max_control_line;
        let window = buf.len().min(max);
        let from = self.scanned.min(window);
        let found = buf.get(from..window).and_then(|w| memchr::memchr(b'\n', w));
        match found {
            Some(i) => {
                self.scanned = 0;
                let nl = from + i;
                let content_len = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
                    nl - 1
                } else {
                    nl
                };
                Ok(Some((nl + 1, content_len)))
            }
            None if !may_become_operation(buf.get(..window).unwrap_or_default(), names) => {
                Err(self.fail(buf, window, DecodeError::UnknownOperation))
            }
            None if buf.len() >= max => {
                self.reset();
                Err(DecodeError::ControlLineTooLong { max })
            }
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }

    /// Completes a message once its payload and line end are in `buf`.
    fn finish_msg<G: Grammar>(
        &mut self,
        pending: Pending,
        buf: &mut BytesMut,
    ) -> Result<Option<G::Op>, DecodeError> {
        let Pending { line_len, msg } = pending;
        let body_end = line_len.saturating_add(msg.total_len);
        let eol = match buf.get(body_end) {
            None => return Ok(self.wait(pending, buf.len())),
            Some(b'\n') => 1,
            Some(b'\r') => match buf.get(body_end + 1) {
                None => return Ok(self.wait(pending, buf.len())),
                Some(b'\n') => 2,
                Some(_) => return Err(self.fail(buf, body_end, NO_PAYLOAD_END)),
            },
            Some(_) => return Err(self.fail(buf, body_end, NO_PAYLOAD_END)),
        };
        self.pending = None;
        // One handle on the read buffer for the frame (line and body, without the line
        // end), one per argument kept; the frame itself becomes the payload.
        let mut frame = buf.split_to(body_end + eol);
        frame.truncate(body_end);
        let header_len = msg.header_len.unwrap_or(0).min(msg.total_len);
        if msg.header_len.is_some()
            && !frame
                .get(line_len..line_len + header_len)
                .is_some_and(|h| h.starts_with(VERSION))
        {
            return Err(BAD_HEADER_BLOCK);
        }
        if let Some(e) = msg.subject_error {
            return Err(DecodeError::InvalidPublishSubject(e));
        }
        let mut payload = frame.freeze();
        let subject = msg.subject.of_bytes(&payload);
        let reply = msg.reply.map(|r| r.of_bytes(&payload));
        let sid = msg.sid.map(|s| s.of_bytes(&payload)).unwrap_or_default();
        payload.advance(line_len);
        let headers = msg.header_len.map(|_| payload.split_to(header_len));
        Ok(Some(G::build_msg(Frame {
            subject,
            reply,
            sid,
            headers,
            payload,
        })))
    }

    /// Keeps the parsed control line, records how much more is needed and answers "not
    /// yet".
    fn wait<T>(&mut self, pending: Pending, have: usize) -> Option<T> {
        let body_end = pending.line_len.saturating_add(pending.msg.total_len);
        self.pending = Some(pending);
        self.needed = Some(body_end.saturating_add(2).saturating_sub(have).max(1));
        None
    }

    /// Drops the offending bytes and the state, for a fatal error.
    fn fail(&mut self, buf: &mut BytesMut, consumed: usize, e: DecodeError) -> DecodeError {
        buf.advance(consumed.min(buf.len()));
        self.reset();
        e
    }
}

// ---------------------------------------------------------------------------------------
// Client grammar
// ---------------------------------------------------------------------------------------

/// A payload-less client line, its arguments as spans.
enum ClientLine {
    Connect(Box<ConnectOptions>),
    Sub {
        subject: Span,
        queue: Option<Span>,
        sid: Span,
        error: Option<DecodeError>,
    },
    Unsub {
        sid: Span,
        max: Option<u64>,
    },
    Ping,
    Pong,
    Info(Span),
    Ok,
    Err(String),
}

struct ClientGrammar;

impl ClientGrammar {
    /// `PUB <subject> [reply] <size>\r\n` at the front of `bytes`: upper case, single
    /// spaces, a valid subject and reply, a CRLF line end. The line every client library
    /// writes, read in one pass from its first byte to its line end (so without a separate
    /// search for the line end): the subject and reply are checked as they are walked, and
    /// the size is read as its digits are met. Returns the line's length, line end
    /// included, and its parse. Anything else, an incomplete line included, is `None` and
    /// goes to the general parse (which then names the fault), so both agree on every line
    /// this accepts. The caller bounds `bytes` by `max_control_line`.
    #[inline]
    fn fast_pub(bytes: &[u8], max_tokens: usize) -> Option<(usize, MsgLine)> {
        const ARGS: usize = b"PUB ".len();
        let rest = bytes.strip_prefix(b"PUB ")?;
        // The subject ends at the first space (a line end is a bad byte: `None`).
        let subject_end = ARGS + subject::plain_publish_len(rest, max_tokens)?;
        let mut at = subject_end + 1;
        let mut reply = None;
        if !bytes.get(at)?.is_ascii_digit() {
            // Not the size, so the reply (a reply that starts with a digit is left to the
            // general parse: the digits are read as the size, and no line end follows).
            let reply_end = at + subject::plain_publish_len(bytes.get(at..)?, max_tokens)?;
            reply = Some(Span {
                start: at,
                end: reply_end,
            });
            at = reply_end + 1;
        }
        // Both arguments end at a space (`plain_publish_len` stops at one or at the end,
        // and at the end the size is not there).
        if bytes.get(at - 1) != Some(&b' ') {
            return None;
        }
        let size_start = at;
        let mut total_len = 0usize;
        while let Some(&b) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
            total_len = total_len
                .checked_mul(10)?
                .checked_add(usize::from(b - b'0'))?;
            at += 1;
        }
        if at == size_start || bytes.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        Some((
            at + 2,
            MsgLine {
                subject: Span {
                    start: ARGS,
                    end: subject_end,
                },
                reply,
                sid: None,
                header_len: None,
                total_len,
                subject_error: None,
            },
        ))
    }

    fn parse_pub(
        line: &[u8],
        args: &Args,
        headers: bool,
        max_tokens: usize,
    ) -> Result<MsgLine, DecodeError> {
        let (subject, reply, header_len, total_len) = if headers {
            match args.get(3, 4) {
                Some(&[s, h, t]) => (s, None, Some(h), t),
                Some(&[s, r, h, t]) => (s, Some(r), Some(h), t),
                _ => {
                    return Err(DecodeError::Malformed(
                        "HPUB expects <subject> [reply] <header size> <total size>",
                    ))
                }
            }
        } else {
            match args.get(2, 3) {
                Some(&[s, t]) => (s, None, None, t),
                Some(&[s, r, t]) => (s, Some(r), None, t),
                _ => {
                    return Err(DecodeError::Malformed(
                        "PUB expects <subject> [reply] <size>",
                    ))
                }
            }
        };
        // An `HPUB` with no header bytes is a plain publish, as nats-server reads it.
        let header_len = header_len
            .map(|h| parse_size(h.of(line)))
            .transpose()?
            .filter(|&h| h > 0);
        let total_len = parse_size(total_len.of(line))?;
        let valid = |s: Span| subject::validate_publish_max(s.of(line), max_tokens);
        let subject_error = valid(subject)
            .and_then(|()| reply.map_or(Ok(()), valid))
            .err();
        Ok(MsgLine {
            subject,
            reply,
            sid: None,
            header_len,
            total_len,
            subject_error,
        })
    }
}

impl Grammar for ClientGrammar {
    type Op = ClientOp;
    type Line = ClientLine;
    const NAMES: &'static [&'static str] = &[
        "CONNECT", "PUB", "HPUB", "SUB", "UNSUB", "PING", "PONG", "INFO", "+OK", "-ERR",
    ];

    fn fast_msg(bytes: &[u8], limits: &Limits) -> Option<(usize, MsgLine)> {
        Self::fast_pub(bytes, limits.max_subject_tokens)
    }

    fn parse_line(line: &[u8], limits: &Limits) -> Result<Parsed<ClientLine>, DecodeError> {
        let op = op_name(line);
        let name = op.of(line);
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let max_tokens = limits.max_subject_tokens;
        if is("PUB") || is("HPUB") {
            let args = split_args(line, op.end);
            return Self::parse_pub(line, &args, is("HPUB"), max_tokens).map(Parsed::Msg);
        }
        if is("CONNECT") {
            return serde_json::from_slice::<ConnectOptions>(rest_of_line(line, op))
                .map(|o| Parsed::Line(ClientLine::Connect(Box::new(o))))
                .map_err(|e| DecodeError::InvalidJson(e.to_string()));
        }
        if is("INFO") {
            let json = rest_span(line, op);
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json.of(line))
                .map_err(|e| DecodeError::InvalidInfo(e.to_string()))?;
            return Ok(Parsed::Line(ClientLine::Info(json)));
        }
        if is("-ERR") {
            return Ok(Parsed::Line(ClientLine::Err(err_text(line, op))));
        }
        let args = split_args(line, op.end);
        let parsed = if is("SUB") {
            let (subject, queue, sid) = match args.get(2, 3) {
                Some(&[s, id]) => (s, None, id),
                Some(&[s, q, id]) => (s, Some(q), id),
                _ => {
                    return Err(DecodeError::Malformed(
                        "SUB expects <subject> [queue group] <sid>",
                    ))
                }
            };
            let filter = subject.of(line);
            let error = match subject::validate_filter_max(filter, max_tokens) {
                Err(SubjectError::TooManyTokens { max }) => {
                    Some(DecodeError::FilterTooManyTokens {
                        subject: String::from_utf8_lossy(filter).into_owned(),
                        max,
                    })
                }
                Err(e) => Some(DecodeError::InvalidSubject(e)),
                Ok(()) => queue
                    .and_then(|q| subject::validate_publish_max(q.of(line), max_tokens).err())
                    .map(DecodeError::InvalidSubject),
            };
            ClientLine::Sub {
                subject,
                queue,
                sid,
                error,
            }
        } else if is("UNSUB") {
            let (sid, max) = match args.get(1, 2) {
                Some(&[id]) => (id, None),
                Some(&[id, m]) => (id, Some(parse_u64(m.of(line)).ok_or(BAD_NUMBER)?)),
                _ => return Err(DecodeError::Malformed("UNSUB expects <sid> [max messages]")),
            };
            ClientLine::Unsub { sid, max }
        } else if is("PING") {
            args.get(0, 0)
                .ok_or(DecodeError::Malformed("PING takes no arguments"))?;
            ClientLine::Ping
        } else if is("PONG") {
            args.get(0, 0)
                .ok_or(DecodeError::Malformed("PONG takes no arguments"))?;
            ClientLine::Pong
        } else if is("+OK") {
            args.get(0, 0)
                .ok_or(DecodeError::Malformed("+OK takes no arguments"))?;
            ClientLine::Ok
        } else {
            return Err(DecodeError::UnknownOperation);
        };
        Ok(Parsed::Line(parsed))
    }

    fn build_line(line: &Bytes, parsed: ClientLine) -> Result<ClientOp, DecodeError> {
        Ok(match parsed {
            ClientLine::Connect(options) => ClientOp::Connect(options),
            ClientLine::Sub { error: Some(e), .. } => return Err(e),
            ClientLine::Sub {
                subject,
                queue,
                sid,
                error: None,
            } => ClientOp::Sub(Subscribe {
                subject: subject.of_bytes(line),
                queue: queue.map(|q| q.of_bytes(line)),
                sid: sid.of_bytes(line),
            }),
            ClientLine::Unsub { sid, max } => ClientOp::Unsub {
                sid: sid.of_bytes(line),
                max,
            },
            ClientLine::Ping => ClientOp::Ping,
            ClientLine::Pong => ClientOp::Pong,
            ClientLine::Info(json) => ClientOp::Info(json.of_bytes(line)),
            ClientLine::Ok => ClientOp::Ok,
            ClientLine::Err(text) => ClientOp::Err(text),
        })
    }

    fn build_msg(frame: Frame) -> ClientOp {
        ClientOp::Pub(Publish {
            subject: frame.subject,
            reply: frame.reply,
            headers: frame.headers,
            payload: frame.payload,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Server grammar
// ---------------------------------------------------------------------------------------

/// A payload-less server line.
enum ServerLine {
    Info(Box<ServerInfo>),
    Ok,
    Err(String),
    Ping,
    Pong,
}

struct ServerGrammar;

impl Grammar for ServerGrammar {
    type Op = ServerOp;
    type Line = ServerLine;
    const NAMES: &'static [&'static str] = &["INFO", "MSG", "HMSG", "+OK", "-ERR", "PING", "PONG"];

    fn parse_line(line: &[u8], _limits: &Limits) -> Result<Parsed<ServerLine>, DecodeError> {
        let op = op_name(line);
        let name = op.of(line);
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("MSG") || is("HMSG") {
            let args = split_args(line, op.end);
            let (subject, sid, reply, header_len, total_len) = if is("HMSG") {
                match args.get(4, 5) {
                    Some(&[s, id, h, t]) => (s, id, None, Some(h), t),
                    Some(&[s, id, r, h, t]) => (s, id, Some(r), Some(h), t),
                    _ => {
                        return Err(DecodeError::Malformed(
                            "HMSG expects <subject> <sid> [reply] <header size> <total size>",
                        ))
                    }
                }
            } else {
                match args.get(3, 4) {
                    Some(&[s, id, t]) => (s, id, None, None, t),
                    Some(&[s, id, r, t]) => (s, id, Some(r), None, t),
                    _ => {
                        return Err(DecodeError::Malformed(
                            "MSG expects <subject> <sid> [reply] <size>",
                        ))
                    }
                }
            };
            let header_len = header_len.map(|h| parse_size(h.of(line))).transpose()?;
            let total_len = parse_size(total_len.of(line))?;
            return Ok(Parsed::Msg(MsgLine {
                subject,
                reply,
                sid: Some(sid),
                header_len,
                total_len,
                subject_error: None,
            }));
        }
        if is("INFO") {
            return serde_json::from_slice::<ServerInfo>(rest_of_line(line, op))
                .map(|i| Parsed::Line(ServerLine::Info(Box::new(i))))
                .map_err(|e| DecodeError::InvalidJson(e.to_string()));
        }
        if is("-ERR") {
            return Ok(Parsed::Line(ServerLine::Err(err_text(line, op))));
        }
        let no_args = split_args(line, op.end).count == 0;
        let parsed = if is("+OK") {
            ServerLine::Ok
        } else if is("PING") {
            ServerLine::Ping
        } else if is("PONG") {
            ServerLine::Pong
        } else {
            return Err(DecodeError::UnknownOperation);
        };
        if !no_args {
            return Err(DecodeError::Malformed(match parsed {
                ServerLine::Ok => "+OK takes no arguments",
                ServerLine::Ping => "PING takes no arguments",
                _ => "PONG takes no arguments",
            }));
        }
        Ok(Parsed::Line(parsed))
    }

    fn build_line(_line: &Bytes, parsed: ServerLine) -> Result<ServerOp, DecodeError> {
        Ok(match parsed {
            ServerLine::Info(info) => ServerOp::Info(info),
            ServerLine::Ok => ServerOp::Ok,
            ServerLine::Err(text) => ServerOp::Err(text),
            ServerLine::Ping => ServerOp::Ping,
            ServerLine::Pong => ServerOp::Pong,
        })
    }

    fn build_msg(frame: Frame) -> ServerOp {
        ServerOp::Msg(Message {
            subject: frame.subject,
            sid: frame.sid,
            reply: frame.reply,
            headers: frame.headers,
            payload: frame.payload,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Public decoders
// ---------------------------------------------------------------------------------------

/// Decodes the operations a client sends. See the module docs for the contract.
///
/// Accepted on top of the strict protocol, for telnet users: operation names in any case,
/// a bare `\n` as line end, whitespace before the operation name, and blank lines (skipped).
#[derive(Debug)]
pub struct ClientDecoder {
    core: Core,
}

impl ClientDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ClientDecoder {
            core: Core::new(limits),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.core.limits
    }

    /// Decodes one operation from the front of `buf`. See the module docs.
    ///
    /// While waiting for a payload, the control line stays in `buf` (the decoder remembers
    /// it has parsed it); `buf` only shrinks when an operation or an error is returned.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, DecodeError> {
        self.core.decode::<ClientGrammar>(buf)
    }

    /// When the decoder is waiting for a payload: how many more bytes it needs beyond what
    /// `buf` held at the last call. Lets a caller reserve buffer space once.
    ///
    /// Counts a two-byte `\r\n` after the payload.
    pub fn bytes_needed(&self) -> Option<usize> {
        self.core.needed
    }

    /// After `decode` returned `Ok(None)` for `buf`: true when `buf` holds the start of a
    /// control line whose line end has not arrived yet; false when it is empty or when the
    /// line is whole and its payload is awaited. Lets a caller put a deadline on a control
    /// line that is being trickled.
    pub fn in_control_line(&self, buf: &[u8]) -> bool {
        self.core.pending.is_none() && !buf.is_empty()
    }

    /// True when a control line announcing a payload (`PUB`, `HPUB`) is whole and its
    /// payload is awaited.
    pub fn awaiting_payload(&self) -> bool {
        self.core.pending.is_some()
    }
}

/// Decodes the operations a server sends (for clients, the harness and tests).
///
/// The subjects of `MSG`/`HMSG` are not validated: a client takes what its server delivers.
#[derive(Debug)]
pub struct ServerDecoder {
    core: Core,
}

impl ServerDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ServerDecoder {
            core: Core::new(limits),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.core.limits
    }

    /// Decodes one operation from the front of `buf`. See the module docs.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, DecodeError> {
        self.core.decode::<ServerGrammar>(buf)
    }

    /// When the decoder is waiting for a payload: how many more bytes it needs beyond what
    /// `buf` held at the last call. See [`ClientDecoder::bytes_needed`].
    pub fn bytes_needed(&self) -> Option<usize> {
        self.core.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_control_line: usize, max_payload: usize) -> Limits {
        Limits {
            max_control_line,
            max_payload,
            ..Limits::default()
        }
    }

    /// Decodes everything in `input` with default limits, up to the first fatal error.
    fn client_all(input: &[u8]) -> Vec<Result<ClientOp, DecodeError>> {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(op)) => out.push(Ok(op)),
                Ok(None) => return out,
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err(e));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }

    fn client_one(input: &[u8]) -> Result<Option<ClientOp>, DecodeError> {
        ClientDecoder::new(Limits::default()).decode(&mut BytesMut::from(input))
    }

    fn server_one(input: &[u8]) -> Result<Option<ServerOp>, DecodeError> {
        ServerDecoder::new(Limits::default()).decode(&mut BytesMut::from(input))
    }

    fn publish(
        subject: &str,
        reply: Option<&str>,
        headers: Option<&str>,
        payload: &str,
    ) -> ClientOp {
        ClientOp::Pub(Publish {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            reply: reply.map(|r| Bytes::copy_from_slice(r.as_bytes())),
            headers: headers.map(|h| Bytes::copy_from_slice(h.as_bytes())),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        })
    }

    fn sub(subject: &str, queue: Option<&str>, sid: &str) -> ClientOp {
        ClientOp::Sub(Subscribe {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            queue: queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
            sid: Bytes::copy_from_slice(sid.as_bytes()),
        })
    }

    #[test]
    fn display_texts() {
        assert_eq!(
            DecodeError::UnknownOperation.to_string(),
            "Unknown Protocol Operation"
        );
        assert_eq!(
            DecodeError::ControlLineTooLong { max: 4 }.to_string(),
            "Maximum Control Line Exceeded"
        );
        assert_eq!(
            DecodeError::PayloadTooLarge { size: 2, max: 1 }.to_string(),
            "Maximum Payload Violation"
        );
        assert_eq!(
            DecodeError::InvalidPublishSubject(SubjectError::Wildcard).to_string(),
            "Invalid Publish Subject"
        );
        assert_eq!(
            DecodeError::InvalidSubject(SubjectError::EmptyToken).to_string(),
            "Invalid Subject"
        );
        assert_eq!(
            DecodeError::InvalidJson("x".into()).to_string(),
            "Invalid CONNECT: x"
        );
        assert_eq!(
            DecodeError::Malformed("PUB expects <subject> [reply] <size>").to_string(),
            "Parser Error: PUB expects <subject> [reply] <size>"
        );
    }

    #[test]
    fn fatality() {
        assert!(!DecodeError::InvalidSubject(SubjectError::Empty).is_fatal());
        assert!(!DecodeError::InvalidPublishSubject(SubjectError::Empty).is_fatal());
        assert!(DecodeError::UnknownOperation.is_fatal());
        assert!(DecodeError::Malformed("x").is_fatal());
        assert!(DecodeError::ControlLineTooLong { max: 1 }.is_fatal());
        assert!(DecodeError::PayloadTooLarge { size: 2, max: 1 }.is_fatal());
        assert!(DecodeError::InvalidJson(String::new()).is_fatal());
        assert!(DecodeError::InvalidInfo(String::new()).is_fatal());
    }

    /// What nats-server reads from a client although only its routes need it: `INFO`
    /// (a JSON object), `+OK`, and `-ERR` with its text.
    #[test]
    fn a_client_may_send_info_ok_and_err() {
        assert_eq!(
            client_one(b"INFO {\"server_id\":\"x\"} \r\n"),
            Ok(Some(ClientOp::Info(Bytes::from_static(
                b"{\"server_id\":\"x\"}"
            ))))
        );
        assert_eq!(
            client_one(b"info {}\r\n"),
            Ok(Some(ClientOp::Info("{}".into())))
        );
        for bad in [&b"INFO {\r\n"[..], b"INFO [1]\r\n", b"INFO\r\n"] {
            match client_one(bad) {
                Err(e @ DecodeError::InvalidInfo(_)) => assert!(e.is_fatal()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(client_one(b"+OK\r\n"), Ok(Some(ClientOp::Ok)));
        assert_eq!(
            client_one(b"+OK x\r\n"),
            Err(DecodeError::Malformed("+OK takes no arguments"))
        );
        assert_eq!(
            client_one(b"-ERR 'Slow Consumer'\r\n"),
            Ok(Some(ClientOp::Err("Slow Consumer".into())))
        );
        assert_eq!(
            client_one(b"-ERR\r\n"),
            Ok(Some(ClientOp::Err(String::new())))
        );
        // Still refused at the first byte that cannot start one of them.
        assert_eq!(client_one(b"+X"), Err(DecodeError::UnknownOperation));
        assert_eq!(client_one(b"-EX"), Err(DecodeError::UnknownOperation));
        assert_eq!(client_one(b"INFX"), Err(DecodeError::UnknownOperation));
    }

    #[test]
    fn simple_ops() {
        assert_eq!(client_one(b"PING\r\n"), Ok(Some(ClientOp::Ping)));
        assert_eq!(client_one(b"PONG\r\n"), Ok(Some(ClientOp::Pong)));
        assert_eq!(
            client_one(b"PUB foo 5\r\nhello\r\n"),
            Ok(Some(publish("foo", None, None, "hello")))
        );
        assert_eq!(
            client_one(b"PUB foo bar.baz 0\r\n\r\n"),
            Ok(Some(publish("foo", Some("bar.baz"), None, "")))
        );
        assert_eq!(
            client_one(b"SUB foo.* 1\r\n"),
            Ok(Some(sub("foo.*", None, "1")))
        );
        assert_eq!(
            client_one(b"SUB foo.> workers 22\r\n"),
            Ok(Some(sub("foo.>", Some("workers"), "22")))
        );
        assert_eq!(
            client_one(b"UNSUB 1\r\n"),
            Ok(Some(ClientOp::Unsub {
                sid: Bytes::from_static(b"1"),
                max: None
            }))
        );
    }

    #[test]
    fn unsub_with_max() {
        assert_eq!(
            client_one(b"UNSUB 1 5\r\n"),
            Ok(Some(ClientOp::Unsub {
                sid: Bytes::from_static(b"1"),
                max: Some(5)
            }))
        );
        assert_eq!(
            client_one(b"UNSUB abc 18446744073709551615\r\n"),
            Ok(Some(ClientOp::Unsub {
                sid: Bytes::from_static(b"abc"),
                max: Some(u64::MAX)
            }))
        );
        assert_eq!(
            client_one(b"UNSUB 1 18446744073709551616\r\n"),
            Err(BAD_NUMBER)
        );
        assert_eq!(client_one(b"UNSUB 1 -5\r\n"), Err(BAD_NUMBER));
        assert_eq!(client_one(b"UNSUB 1 +5\r\n"), Err(BAD_NUMBER));
        assert_eq!(
            client_one(b"UNSUB\r\n"),
            Err(DecodeError::Malformed("UNSUB expects <sid> [max messages]"))
        );
        assert_eq!(
            client_one(b"UNSUB 1 2 3\r\n"),
            Err(DecodeError::Malformed("UNSUB expects <sid> [max messages]"))
        );
    }

    #[test]
    fn case_insensitive_names_and_whitespace() {
        assert_eq!(client_one(b"ping\r\n"), Ok(Some(ClientOp::Ping)));
        assert_eq!(client_one(b"PiNg\r\n"), Ok(Some(ClientOp::Ping)));
        assert_eq!(client_one(b"pong\n"), Ok(Some(ClientOp::Pong)));
        assert_eq!(
            client_one(b"pub\t foo \t 2 \r\nhi\r\n"),
            Ok(Some(publish("foo", None, None, "hi")))
        );
        assert_eq!(
            client_one(b"  sub foo 1\r\n"),
            Ok(Some(sub("foo", None, "1")))
        );
        assert_eq!(
            client_one(b"Unsub 1\r\n"),
            Ok(Some(ClientOp::Unsub {
                sid: Bytes::from_static(b"1"),
                max: None
            }))
        );
        assert_eq!(
            client_one(b"hPuB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
            Ok(Some(publish("foo", None, Some("NATS/1.0\r\n\r\n"), "")))
        );
        assert!(matches!(
            client_one(b"connect {}\r\n"),
            Ok(Some(ClientOp::Connect(_)))
        ));
    }

    #[test]
    fn bare_newlines() {
        assert_eq!(
            client_all(b"PING\nPUB foo 3\nabc\nSUB foo 1\n"),
            vec![
                Ok(ClientOp::Ping),
                Ok(publish("foo", None, None, "abc")),
                Ok(sub("foo", None, "1")),
            ]
        );
        // Mixed line ends around one payload.
        assert_eq!(
            client_all(b"PUB foo 3\nabc\r\nPUB foo 3\r\nabc\n"),
            vec![
                Ok(publish("foo", None, None, "abc")),
                Ok(publish("foo", None, None, "abc")),
            ]
        );
    }

    #[test]
    fn telnet_session() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut feed = |bytes: &[u8]| {
            buf.extend_from_slice(bytes);
            let mut out = Vec::new();
            while let Some(op) = dec.decode(&mut buf).unwrap() {
                out.push(op);
            }
            out
        };
        assert_eq!(feed(b"\r\n"), vec![]);
        assert_eq!(feed(b"conn"), vec![]);
        assert!(matches!(
            feed(b"ect {\"verbose\": true}\r\n").as_slice(),
            [ClientOp::Connect(o)] if o.verbose && o.echo
        ));
        assert_eq!(feed(b"\r\n\r\n   \r\n\t\n"), vec![]);
        assert_eq!(feed(b"sub foo 1\r\n"), vec![sub("foo", None, "1")]);
        assert_eq!(feed(b"pub foo 5\r\n"), vec![]);
        assert_eq!(feed(b"hel"), vec![]);
        assert_eq!(feed(b"lo\r"), vec![]);
        assert_eq!(feed(b"\n"), vec![publish("foo", None, None, "hello")]);
        assert_eq!(
            feed(b"ping\r\n\r\nping\r\n"),
            vec![ClientOp::Ping, ClientOp::Ping]
        );
        assert!(buf.is_empty());
    }

    /// The client side of the telnet session in docs/protocol-text.md.
    #[test]
    fn documented_telnet_session() {
        let typed = [
            "sub chat.* 1",
            "pub chat.room1 5",
            "hello",
            "ping",
            "sub chat..bad 2",
            "pub chat.* 2",
            "hi",
            "hpub chat.room2 21 23",
            "NATS/1.0",
            "X-Id: 7",
            "",
            "hi",
            "sub chat.room1 q 3",
            "unsub 1 3",
            "pub chat.room1 0",
            "",
            "connect {\"verbose\":true}",
            "sub foo bar baz qux",
        ];
        let input: String = typed.iter().map(|l| format!("{l}\r\n")).collect();
        let out = client_all(input.as_bytes());
        assert_eq!(out.len(), 11);
        assert_eq!(out[0], Ok(sub("chat.*", None, "1")));
        assert_eq!(out[1], Ok(publish("chat.room1", None, None, "hello")));
        assert_eq!(out[2], Ok(ClientOp::Ping));
        assert_eq!(
            out[3],
            Err(DecodeError::InvalidSubject(SubjectError::EmptyToken))
        );
        assert_eq!(
            out[4],
            Err(DecodeError::InvalidPublishSubject(SubjectError::Wildcard))
        );
        assert_eq!(
            out[5],
            Ok(publish(
                "chat.room2",
                None,
                Some("NATS/1.0\r\nX-Id: 7\r\n\r\n"),
                "hi"
            ))
        );
        assert_eq!(out[6], Ok(sub("chat.room1", Some("q"), "3")));
        assert_eq!(
            out[7],
            Ok(ClientOp::Unsub {
                sid: Bytes::from_static(b"1"),
                max: Some(3)
            })
        );
        assert_eq!(out[8], Ok(publish("chat.room1", None, None, "")));
        assert!(matches!(&out[9], Ok(ClientOp::Connect(o)) if o.verbose));
        assert_eq!(
            out[10],
            Err(DecodeError::Malformed(
                "SUB expects <subject> [queue group] <sid>"
            ))
        );
    }

    #[test]
    fn hpub_sizes() {
        let headers = "NATS/1.0\r\nA: b\r\n\r\n";
        assert_eq!(headers.len(), 18);
        assert_eq!(
            client_one(b"HPUB foo 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n"),
            Ok(Some(publish("foo", None, Some(headers), "hello")))
        );
        assert_eq!(
            client_one(b"HPUB foo reply 18 18\r\nNATS/1.0\r\nA: b\r\n\r\n\r\n"),
            Ok(Some(publish("foo", Some("reply"), Some(headers), "")))
        );
        assert_eq!(
            client_one(b"HPUB foo 19 18\r\nNATS/1.0\r\nA: b\r\n\r\n\r\n"),
            Err(BAD_HEADER_SIZE)
        );
        assert_eq!(
            client_one(b"HPUB foo 18 23\r\nHTTP/1.1\r\nA: b\r\n\r\nhello\r\n"),
            Err(BAD_HEADER_BLOCK)
        );
        // No header bytes: a plain publish, as nats-server reads it.
        assert_eq!(
            client_one(b"HPUB foo 0 0\r\n\r\n"),
            Ok(Some(publish("foo", None, None, "")))
        );
        assert_eq!(
            client_one(b"HPUB foo r 0 2\r\nab\r\n"),
            Ok(Some(publish("foo", Some("r"), None, "ab")))
        );
        assert_eq!(
            client_one(b"HPUB foo 18\r\n"),
            Err(DecodeError::Malformed(
                "HPUB expects <subject> [reply] <header size> <total size>"
            ))
        );
        assert_eq!(client_one(b"HPUB foo x 18\r\n"), Err(BAD_NUMBER));
    }

    #[test]
    fn payload_too_large_before_payload() {
        let mut dec = ClientDecoder::new(limits(64, 10));
        let mut buf = BytesMut::from(&b"PUB foo 11\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::PayloadTooLarge { size: 11, max: 10 })
        );
        let mut buf = BytesMut::from(&b"HPUB foo 5 11\r\n"[..]);
        let mut dec = ClientDecoder::new(limits(64, 10));
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::PayloadTooLarge { size: 11, max: 10 })
        );
        // Exactly at the limit is fine.
        let mut dec = ClientDecoder::new(limits(64, 10));
        let mut buf = BytesMut::from(&b"PUB foo 10\r\n0123456789\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(publish("foo", None, None, "0123456789")))
        );
        // A size that does not even fit in a u64.
        assert_eq!(
            client_one(b"PUB foo 99999999999999999999999\r\n"),
            Err(BAD_NUMBER)
        );
    }

    #[test]
    fn bytes_needed_while_awaiting_payload() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"PUB foo 10\r\n"[..]);
        assert_eq!(dec.bytes_needed(), None);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.bytes_needed(), Some(12));
        assert_eq!(buf.len(), 12, "the control line stays in the buffer");
        buf.extend_from_slice(b"0123");
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.bytes_needed(), Some(8));
        buf.extend_from_slice(b"456789\r");
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.bytes_needed(), Some(1));
        buf.extend_from_slice(b"\nPING\r\n");
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(publish("foo", None, None, "0123456789")))
        );
        assert_eq!(dec.bytes_needed(), None);
        assert_eq!(dec.decode(&mut buf), Ok(Some(ClientOp::Ping)));
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.bytes_needed(), None);
    }

    #[test]
    fn payload_must_end_with_line_end() {
        assert_eq!(client_one(b"PUB foo 3\r\nabcd\r\n"), Err(NO_PAYLOAD_END));
        assert_eq!(client_one(b"PUB foo 3\r\nabc\rx"), Err(NO_PAYLOAD_END));
        assert_eq!(client_one(b"PUB foo 3\r\nabc\r"), Ok(None));
    }

    #[test]
    fn invalid_publish_subject_is_reported_after_the_payload() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"PUB foo.* 5\r\nhel"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"lo\r\nPING\r\n");
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::InvalidPublishSubject(SubjectError::Wildcard))
        );
        assert_eq!(dec.decode(&mut buf), Ok(Some(ClientOp::Ping)));

        assert_eq!(
            client_all(b"PUB a..b 1\r\nx\r\nPUB a r.> 1\r\nx\r\nHPUB > 12 12\r\nNATS/1.0\r\n\r\n\r\nPING\r\n"),
            vec![
                Err(DecodeError::InvalidPublishSubject(SubjectError::EmptyToken)),
                Err(DecodeError::InvalidPublishSubject(SubjectError::Wildcard)),
                Err(DecodeError::InvalidPublishSubject(SubjectError::Wildcard)),
                Ok(ClientOp::Ping),
            ]
        );
    }

    #[test]
    fn invalid_sub_subject_is_not_fatal() {
        assert_eq!(
            client_all(b"SUB foo..bar 1\r\nSUB >.a 2\r\nSUB foo q.* 3\r\nSUB foo 4\r\n"),
            vec![
                Err(DecodeError::InvalidSubject(SubjectError::EmptyToken)),
                Err(DecodeError::InvalidSubject(
                    SubjectError::FullWildcardNotLast
                )),
                Err(DecodeError::InvalidSubject(SubjectError::Wildcard)),
                Ok(sub("foo", None, "4")),
            ]
        );
    }

    #[test]
    fn too_many_tokens_is_refused_not_fatally() {
        let line = |n: usize| vec!["*"; n].join(".");
        let literal = |n: usize| vec!["a"; n].join(".");
        let mut dec = ClientDecoder::new(Limits {
            max_subject_tokens: 3,
            ..Limits::default()
        });
        let mut buf = BytesMut::new();
        for op in [
            format!("SUB {} 1\r\n", line(3)),
            format!("SUB {} 2\r\n", line(4)),
            "SUB a.> q.q.q.q 3\r\n".to_string(),
            format!("PUB {} 1\r\nx\r\n", literal(4)),
            format!("PUB a {} 1\r\nx\r\n", literal(4)),
            "PING\r\n".to_string(),
        ] {
            buf.extend_from_slice(op.as_bytes());
        }
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(op)) => out.push(Ok(op)),
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.is_fatal(), "{e}");
                    assert!(e.is_too_many_tokens(), "{e}");
                    out.push(Err(e.to_string()));
                }
            }
        }
        assert_eq!(
            out,
            vec![
                Ok(sub("*.*.*", None, "1")),
                Err(
                    "Permissions Violation for Subscription to \"*.*.*.*\", too many tokens (max 3)"
                        .to_string()
                ),
                Err("Invalid Subject: too many tokens (max 3)".to_string()),
                Err("Invalid Publish Subject: too many tokens (max 3)".to_string()),
                Err("Invalid Publish Subject: too many tokens (max 3)".to_string()),
                Ok(ClientOp::Ping),
            ]
        );
        // The default: 256 tokens pass, 257 do not.
        assert_eq!(
            client_one(format!("SUB {} 1\r\n", line(256)).as_bytes()),
            Ok(Some(sub(&line(256), None, "1")))
        );
        assert!(matches!(
            client_one(format!("SUB {} 1\r\n", line(257)).as_bytes()),
            Err(DecodeError::FilterTooManyTokens { max: 256, .. })
        ));
        // Other subject errors keep nats-server's bare texts.
        assert_eq!(
            DecodeError::InvalidSubject(SubjectError::EmptyToken).to_string(),
            "Invalid Subject"
        );
        assert!(!DecodeError::InvalidSubject(SubjectError::EmptyToken).is_too_many_tokens());
    }

    #[test]
    fn argument_counts() {
        for (line, msg) in [
            (&b"PUB\r\n"[..], "PUB expects <subject> [reply] <size>"),
            (b"PUB foo\r\n", "PUB expects <subject> [reply] <size>"),
            (b"PUB a b c d\r\n", "PUB expects <subject> [reply] <size>"),
            (
                b"HPUB a b c d e\r\n",
                "HPUB expects <subject> [reply] <header size> <total size>",
            ),
            (b"SUB foo\r\n", "SUB expects <subject> [queue group] <sid>"),
            (
                b"SUB a b c d\r\n",
                "SUB expects <subject> [queue group] <sid>",
            ),
            (b"PING x\r\n", "PING takes no arguments"),
            (b"PONG x\r\n", "PONG takes no arguments"),
        ] {
            assert_eq!(
                client_one(line),
                Err(DecodeError::Malformed(msg)),
                "{line:?}"
            );
        }
        assert_eq!(
            client_one(b"PUB a b c d e f g h i j\r\n"),
            Err(DecodeError::Malformed(
                "PUB expects <subject> [reply] <size>"
            ))
        );
    }

    #[test]
    fn unknown_operations() {
        for line in [
            &b"FOO\r\n"[..],
            b"PINGX\r\n",
            b"+OKX\r\n",
            b"MSG foo 1 0\r\n",
            b"\xff\xfe\r\n",
            b"\r\r\n",
            b"P\r\n",
        ] {
            assert_eq!(
                client_one(line),
                Err(DecodeError::UnknownOperation),
                "{line:?}"
            );
        }
        assert_eq!(
            server_one(b"PUB foo 0\r\n"),
            Err(DecodeError::UnknownOperation)
        );
    }

    #[test]
    fn unknown_operation_is_refused_at_its_first_impossible_byte() {
        // Fed a byte at a time: fine while the token can still become a name.
        for (input, fails_at) in [
            (&b"xy"[..], Some(0)),
            (b"  \tq", Some(3)),
            (b"PINGX", Some(4)),
            (b"PIN ", Some(3)),
            (b"pinG \r", None),
            (b"\r\n  Sub foo", None),
            (b"CONNECT {", None),
            (b"CONNECT{", Some(7)),
            (b"HPUBX", Some(4)),
            (b"P\r", None),
            (b"P\r\r", Some(2)),
            (b"UNS\x00", Some(3)),
            (b"\xff", Some(0)),
            (b"+OX", Some(2)),
            (b"-ERR 'x'", None),
            (b"INFO {", None),
        ] {
            let mut dec = ClientDecoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut failed = None;
            for (i, &b) in input.iter().enumerate() {
                buf.extend_from_slice(&[b]);
                match dec.decode(&mut buf) {
                    Ok(None) => {}
                    Err(DecodeError::UnknownOperation) => {
                        failed = Some(i);
                        break;
                    }
                    other => panic!("{input:?} at {i}: {other:?}"),
                }
            }
            assert_eq!(failed, fails_at, "{input:?}");
        }
    }

    #[test]
    fn server_direction_fails_fast_too() {
        for ok in [&b"+"[..], b"-E", b"-err", b"I", b"hmsg", b" P"] {
            assert_eq!(server_one(ok), Ok(None), "{ok:?}");
        }
        for bad in [&b"X"[..], b"+OKX", b"SUB", b"MSGS", b"-ERR'"] {
            assert_eq!(
                server_one(bad),
                Err(DecodeError::UnknownOperation),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_name_the_fast_check_allows_is_one_the_parser_knows() {
        for name in ClientGrammar::NAMES {
            for spelled in [name.to_string(), name.to_ascii_lowercase()] {
                let line = format!("{spelled}\r\n");
                assert_ne!(
                    client_one(line.as_bytes()),
                    Err(DecodeError::UnknownOperation),
                    "{spelled}"
                );
            }
        }
        for name in ServerGrammar::NAMES {
            let line = format!("{name}\r\n");
            assert_ne!(
                server_one(line.as_bytes()),
                Err(DecodeError::UnknownOperation),
                "{name}"
            );
        }
    }

    #[test]
    fn garbage_beats_the_control_line_limit() {
        // Refused at its first byte, not after max_control_line bytes.
        let mut dec = ClientDecoder::new(limits(64, 1024));
        let mut buf = BytesMut::from(&[b'z'; 100][..]);
        assert_eq!(dec.decode(&mut buf), Err(DecodeError::UnknownOperation));
        // The decoder starts clean after it.
        let mut buf = BytesMut::from(&b"PING\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(ClientOp::Ping)));
    }

    #[test]
    fn where_the_decoder_is_between_operations() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(!dec.in_control_line(&buf) && !dec.awaiting_payload());
        buf.extend_from_slice(b"PUB foo 5");
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(dec.in_control_line(&buf) && !dec.awaiting_payload());
        buf.extend_from_slice(b"\r\nhe");
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(!dec.in_control_line(&buf) && dec.awaiting_payload());
        buf.extend_from_slice(b"llo\r\n");
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(publish("foo", None, None, "hello")))
        );
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(!dec.in_control_line(&buf) && !dec.awaiting_payload());
    }

    #[test]
    fn connect_json() {
        let Ok(Some(ClientOp::Connect(o))) = client_one(
            br#"CONNECT {"verbose":true,"pedantic":false,"name":"x","lang":"rust","version":"1","protocol":1,"echo":false,"headers":true,"no_responders":true,"unknown":[1,2]}"#
                .iter()
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<u8>>()
                .as_slice(),
        ) else {
            panic!("not a CONNECT");
        };
        assert!(o.verbose && !o.echo && o.headers && o.no_responders);
        assert_eq!(o.name.as_deref(), Some("x"));
        assert_eq!(o.protocol, Some(1));
        assert!(matches!(
            client_one(b"CONNECT {\r\n"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            client_one(b"CONNECT\r\n"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            client_one(b"CONNECT {\"verbose\":\"yes\"}\r\n"),
            Err(DecodeError::InvalidJson(_))
        ));
    }

    #[test]
    fn control_line_too_long() {
        let mut dec = ClientDecoder::new(limits(16, 1024));
        let mut buf = BytesMut::new();
        for chunk in [&b"SUB aaaa"[..], b"aaaa", b"aaa"] {
            buf.extend_from_slice(chunk);
            assert_eq!(dec.decode(&mut buf), Ok(None));
        }
        buf.extend_from_slice(b"a");
        assert_eq!(buf.len(), 16);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::ControlLineTooLong { max: 16 })
        );

        // A line of exactly the limit, line end included, is fine.
        let mut dec = ClientDecoder::new(limits(16, 1024));
        let mut buf = BytesMut::from(&b"SUB aaaaaaaa 1\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(sub("aaaaaaaa", None, "1"))));
        // One more byte is not.
        let mut buf = BytesMut::from(&b"SUB aaaaaaaaa 1\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::ControlLineTooLong { max: 16 })
        );
    }

    #[test]
    fn scanning_resumes_where_it_stopped() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        for _ in 0..100 {
            buf.extend_from_slice(b"          ");
            assert_eq!(dec.decode(&mut buf), Ok(None));
            assert_eq!(dec.core.scanned, buf.len());
        }
        buf.extend_from_slice(b"PING\r\n");
        assert_eq!(dec.decode(&mut buf), Ok(Some(ClientOp::Ping)));
        assert_eq!(dec.core.scanned, 0);
    }

    #[test]
    fn zero_copy() {
        let mut buf = BytesMut::from(&b"PUB foo bar 5\r\nhello\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let Ok(Some(ClientOp::Pub(p))) = ClientDecoder::new(Limits::default()).decode(&mut buf)
        else {
            panic!("not a PUB");
        };
        assert_eq!(p.subject.as_ptr() as usize, start + 4);
        assert_eq!(p.reply.unwrap().as_ptr() as usize, start + 8);
        assert_eq!(p.payload.as_ptr() as usize, start + 15);
    }

    #[test]
    fn garbage_does_not_panic() {
        for input in [
            &b"\xff\xff\xff\n"[..],
            b"\n\n\n",
            b"PUB \n",
            b"PUB a 1\n\xff",
            b"HPUB a 8 8\nNATS/1.0",
            b"HPUB a 8 8\nNATS/1.0\n",
            b"\0\0\0\n",
            b"SUB \xff 1\n",
            b"UNSUB \n",
        ] {
            let _ = client_all(input);
            let mut dec = ServerDecoder::new(Limits::default());
            let mut buf = BytesMut::from(input);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }

    fn message(
        subject: &str,
        sid: &str,
        reply: Option<&str>,
        headers: Option<&str>,
        payload: &str,
    ) -> ServerOp {
        ServerOp::Msg(Message {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            sid: Bytes::copy_from_slice(sid.as_bytes()),
            reply: reply.map(|r| Bytes::copy_from_slice(r.as_bytes())),
            headers: headers.map(|h| Bytes::copy_from_slice(h.as_bytes())),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        })
    }

    #[test]
    fn server_ops() {
        assert_eq!(server_one(b"+OK\r\n"), Ok(Some(ServerOp::Ok)));
        assert_eq!(server_one(b"+ok\n"), Ok(Some(ServerOp::Ok)));
        assert_eq!(server_one(b"PING\r\n"), Ok(Some(ServerOp::Ping)));
        assert_eq!(server_one(b"pong\r\n"), Ok(Some(ServerOp::Pong)));
        assert_eq!(
            server_one(b"-ERR 'Unknown Protocol Operation'\r\n"),
            Ok(Some(ServerOp::Err("Unknown Protocol Operation".into())))
        );
        assert_eq!(
            server_one(b"-ERR  unquoted text \r\n"),
            Ok(Some(ServerOp::Err("unquoted text".into())))
        );
        assert_eq!(
            server_one(b"-ERR ''\r\n"),
            Ok(Some(ServerOp::Err(String::new())))
        );
        assert_eq!(
            server_one(b"MSG foo 1 5\r\nhello\r\n"),
            Ok(Some(message("foo", "1", None, None, "hello")))
        );
        assert_eq!(
            server_one(b"msg foo 1 r 0\r\n\r\n"),
            Ok(Some(message("foo", "1", Some("r"), None, "")))
        );
        assert_eq!(
            server_one(b"HMSG foo 1 16 18\r\nNATS/1.0 503\r\n\r\nhi\r\n"),
            Ok(Some(message(
                "foo",
                "1",
                None,
                Some("NATS/1.0 503\r\n\r\n"),
                "hi"
            )))
        );
        assert_eq!(
            server_one(b"HMSG foo 1 r 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"),
            Ok(Some(message(
                "foo",
                "1",
                Some("r"),
                Some("NATS/1.0 503\r\n\r\n"),
                ""
            )))
        );
        let Ok(Some(ServerOp::Info(info))) = server_one(
            b"INFO {\"server_id\":\"abc\",\"max_payload\":1048576,\"jetstream\":true}\r\n",
        ) else {
            panic!("not INFO");
        };
        assert_eq!(info.server_id, "abc");
        assert_eq!(info.max_payload, 1_048_576);
        assert!(matches!(
            server_one(b"INFO x\r\n"),
            Err(DecodeError::InvalidJson(_))
        ));
    }

    #[test]
    fn server_errors() {
        assert_eq!(
            server_one(b"MSG foo 5\r\n"),
            Err(DecodeError::Malformed(
                "MSG expects <subject> <sid> [reply] <size>"
            ))
        );
        assert_eq!(
            server_one(b"HMSG foo 1 5\r\n"),
            Err(DecodeError::Malformed(
                "HMSG expects <subject> <sid> [reply] <header size> <total size>"
            ))
        );
        assert_eq!(
            server_one(b"+OK x\r\n"),
            Err(DecodeError::Malformed("+OK takes no arguments"))
        );
        assert_eq!(server_one(b"MSG foo 1 x\r\n"), Err(BAD_NUMBER));
        assert_eq!(server_one(b"HMSG foo 1 6 5\r\n"), Err(BAD_HEADER_SIZE));
        let mut dec = ServerDecoder::new(limits(64, 4));
        assert_eq!(
            dec.decode(&mut BytesMut::from(&b"MSG foo 1 5\r\n"[..])),
            Err(DecodeError::PayloadTooLarge { size: 5, max: 4 })
        );
        let mut dec = ServerDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"MSG foo 1 5\r\nhe"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.bytes_needed(), Some(5));
    }

    #[test]
    fn decoder_is_clean_after_fatal_error() {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"PUB foo 3\r\nabcX\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(NO_PAYLOAD_END));
        assert_eq!(dec.bytes_needed(), None);
        let mut buf = BytesMut::from(&b"PING\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(ClientOp::Ping)));
    }

    /// A stream mixing the fast path's lines (with and without a reply, an empty payload,
    /// a payload holding a line end) with lines only the general parse takes, and a
    /// refused subject between them.
    const MIXED: &[u8] = b"PUB a.b 3\r\nabc\r\n\
        PUB a.b _INBOX.x.1 0\r\n\r\n\
        PUB a 4\r\n\r\n\r\n\r\n\
        pub  a\t2\nhi\n\
        PUB a.* 1\r\nx\r\n\
        HPUB a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
        PUB a 16\r\n0123456789abcdef\r\n";

    fn mixed_expected() -> Vec<Result<ClientOp, DecodeError>> {
        vec![
            Ok(publish("a.b", None, None, "abc")),
            Ok(publish("a.b", Some("_INBOX.x.1"), None, "")),
            Ok(publish("a", None, None, "\r\n\r\n")),
            Ok(publish("a", None, None, "hi")),
            Err(DecodeError::InvalidPublishSubject(SubjectError::Wildcard)),
            Ok(publish("a", Some("r"), Some("NATS/1.0\r\n\r\n"), "hi")),
            Ok(publish("a", None, None, "0123456789abcdef")),
        ]
    }

    /// Decodes `chunks` fed one after the other, as reads would bring them.
    fn client_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<ClientOp, DecodeError>> {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(op)) => out.push(Ok(op)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn publishes_split_at_every_byte_decode_the_same() {
        assert_eq!(client_all(MIXED), mixed_expected());
        for at in 0..=MIXED.len() {
            let (a, b) = MIXED.split_at(at);
            assert_eq!(client_chunks([a, b]), mixed_expected(), "split at {at}");
        }
        assert_eq!(client_chunks(MIXED.chunks(1)), mixed_expected());
    }

    #[test]
    fn fast_path_limits_and_bad_sizes() {
        // The largest payload and the longest line the limits allow, through the fast
        // path, and one byte more of each.
        let line = b"PUB abcdef 10\r\n";
        let mut dec = ClientDecoder::new(limits(line.len(), 10));
        let mut buf = BytesMut::from(&line[..]);
        buf.extend_from_slice(b"0123456789\r\n");
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(publish("abcdef", None, None, "0123456789")))
        );
        let mut dec = ClientDecoder::new(limits(line.len() - 1, 10));
        assert_eq!(
            dec.decode(&mut BytesMut::from(&line[..])),
            Err(DecodeError::ControlLineTooLong {
                max: line.len() - 1
            })
        );
        let mut dec = ClientDecoder::new(limits(64, 9));
        assert_eq!(
            dec.decode(&mut BytesMut::from(&line[..])),
            Err(DecodeError::PayloadTooLarge { size: 10, max: 9 })
        );
        // Sizes that are not decimal numbers.
        for line in [
            &b"PUB a -1\r\n"[..],
            b"PUB a 1x\r\n",
            b"PUB a +1\r\n",
            b"PUB a r 1.5\r\n",
            b"PUB a 18446744073709551616\r\n",
        ] {
            assert_eq!(client_one(line), Err(BAD_NUMBER), "{line:?}");
        }
        // More payload than announced, or less.
        assert_eq!(client_one(b"PUB a 2\r\nabc\r\n"), Err(NO_PAYLOAD_END));
        assert_eq!(
            client_one(b"PUB a 5\r\nabc\r\nPING\r\n"),
            Err(NO_PAYLOAD_END)
        );
        // A subject with the most tokens allowed, and one more.
        let mut dec = ClientDecoder::new(Limits {
            max_subject_tokens: 3,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"PUB a.b.c r.s.t 0\r\n\r\nPUB a.b.c.d 0\r\n\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(publish("a.b.c", Some("r.s.t"), None, "")))
        );
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::InvalidPublishSubject(
                SubjectError::TooManyTokens { max: 3 }
            ))
        );
    }

    /// The general parse of a `PUB` line, as it was before the fast path.
    fn general_pub(line: &[u8], max_tokens: usize) -> Result<MsgLine, DecodeError> {
        let op = op_name(line);
        ClientGrammar::parse_pub(line, &split_args(line, op.end), false, max_tokens)
    }

    fn same(a: &MsgLine, b: &MsgLine) -> bool {
        (a.subject, a.reply, a.sid, a.header_len, a.total_len)
            == (b.subject, b.reply, b.sid, b.header_len, b.total_len)
            && a.subject_error == b.subject_error
    }

    #[test]
    fn the_fast_publish_parse_agrees_with_the_general_one() {
        let accepted: &[&[u8]] = &[
            b"PUB a 0",
            b"PUB a.b.c 16",
            b"PUB a.b r.x 12345",
            b"PUB $SYS.x _INBOX.9 3",
        ];
        for line in accepted {
            let whole = [line, &b"\r\n"[..]].concat();
            let (len, fast) = ClientGrammar::fast_pub(&whole, 16).expect("taken by the fast path");
            assert_eq!(len, whole.len(), "{line:?}");
            assert!(same(&fast, &general_pub(line, 16).unwrap()), "{line:?}");
            // Whatever follows the line end is not read.
            let more = [&whole[..], b"xyz\r\n"].concat();
            assert_eq!(ClientGrammar::fast_pub(&more, 16).map(|f| f.0), Some(len));
            // Nor is the line taken before its line end is whole.
            for cut in 0..whole.len() {
                assert!(
                    ClientGrammar::fast_pub(&whole[..cut], 16).is_none(),
                    "{line:?} {cut}"
                );
            }
        }
        // Everything else falls through to the general parse, which names the fault.
        let refused: &[&[u8]] = &[
            b"PUB a  1",
            b"PUB a 1 ",
            b"PUB a\t1",
            b"PUB a",
            b"PUB a b c 1",
            b"PUB a x",
            b"PUB a.*.b 1",
            b"PUB a r.> 1",
            b"PUB a..b 1",
            b"PUB .a 1",
            b"PUB a 99999999999999999999999",
            b"PUB a.b.c 1",
            b"PUB 1",
            b"PUB  a 1",
            b"PUB a r  1",
            b"PUB a r\t1",
            b"PUB a\tr 1",
            b"PUB a -1",
            b"PUB a r ",
            b"PUB a 1b 2",
            b"pub a 1",
            b" PUB a 1",
        ];
        for line in refused {
            let max = if *line == b"PUB a.b.c 1" { 2 } else { 16 };
            let whole = [line, &b"\r\n"[..]].concat();
            assert!(ClientGrammar::fast_pub(&whole, max).is_none(), "{line:?}");
        }
        // Only a CRLF line end.
        for line in [
            &b"PUB a 1\n"[..],
            b"PUB a 1\r\r\n",
            b"PUB a 1\r",
            b"PUB a 1\rx",
        ] {
            assert!(ClientGrammar::fast_pub(line, 16).is_none(), "{line:?}");
        }
    }

    proptest::proptest! {
        /// Any line the fast path takes, the general parse reads the same way.
        #[test]
        fn the_fast_publish_parse_never_disagrees(
            tail in proptest::collection::vec(proptest::sample::select(b"ab.*> \t09$_".to_vec()), 0..24),
            max in 1usize..5,
        ) {
            let mut line = b"PUB ".to_vec();
            line.extend_from_slice(&tail);
            let whole = [&line[..], b"\r\n"].concat();
            if let Some((len, fast)) = ClientGrammar::fast_pub(&whole, max) {
                proptest::prop_assert_eq!(len, whole.len());
                let general = general_pub(&line, max);
                proptest::prop_assert!(general.as_ref().is_ok_and(|g| same(&fast, g)), "{:?}", line);
            }
        }
    }
}

//! The binary (Tern) protocol of a connection, as `docs/protocol-binary.md` specifies it.
//!
//! Owns: the handshake (preface and version negotiation, then `HELLO` answered by
//! `WELCOME`), the frame decoder, the mapping of each client frame (`PUBLISH`, `SUBSCRIBE`,
//! `UNSUBSCRIBE`, `PING`, `PONG`) onto the connection's shared steps, and the frames the
//! server sends on this port (`WELCOME`, `MESSAGE`, `PUBLISH_ACK`, `ERROR`, `GAP_NOTICE`,
//! `GOAWAY`, `SUBSCRIBED`, `PING`, `PONG`), and each subscription's start in every shard
//! until `SUBSCRIBED` has told the client ([`Starts`]). A `MESSAGE` is written as a head
//! in the outbound tail followed by the header block and payload, which large messages
//! share by reference with every other delivery.
//!
//! Errors follow the spec's two steps: a structure error is fatal (an `ERROR` frame with
//! the fatal flag, then close; a bad magic closes without a word), a content error refuses
//! that frame alone (a refused `PUBLISH_ACK` when an ack was asked, an `ERROR` otherwise)
//! and the connection carries on; a message id over `max_message_id` is refused the same way,
//! after decoding. Admission control's refusals of a frame
//! (`TooManySubscriptions`, `RateLimited`, `Overloaded`) are answered the same way.
//!
//! Its decoding ([`Protocol`] for `BinaryState`) is handed its own state and the session
//! separately; it applies each frame through the session's steps, handing them itself as
//! the [`Wire`] to speak in.
//!
//! Never: touches the socket or another connection, or the text protocol's state; the
//! session's shared steps in `conn/mod.rs` do the bookkeeping.

use std::mem;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes};
use tern_auth::Method;
use tern_protocol::binary::{
    encode_message, encode_message_head, encode_server_frame, AckResult, Auth, BinaryError,
    Challenge, ClientFrame, ClientFrameDecoder, DropNotice, ErrorCode, ErrorFrame, GapNotice,
    GoAway, Hello, MessageHead, Preface, Publish, PublishAck, ResumeToken, SequenceRange,
    ServerFrame, StartPosition, Subscribe, Subscribed, Unsubscribe, Welcome,
};
use tern_protocol::text::ServerInfo;

use super::access::{
    is_reserved_reply, publish_violation, reply_violation, subscribe_violation,
    AUTHENTICATION_EXPIRED, AUTHORIZATION_VIOLATION,
};
use super::presence::{PresenceRequest, PRESENCE_PREFIX};
use super::protocol::Protocol;
use super::queue::bounds_for;
use super::wire::{ClientName, Fields, Wire};
use super::Context;
use super::{shared_msg, CloseReason, Session, Sid};
use crate::auth::OwnedCredentials;
use crate::config::Limits;
use crate::mesh::{Msg, Stamp, SubRef};
use crate::outbound::Outbound;
use crate::stats::{bump, Denial};
use crate::subqueue::DropLog;

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte preface.
    Preface,
    /// Preface accepted: the next frame must be `HELLO`. It stays here while `HELLO`'s
    /// credentials are checked (on the checker thread, nothing more is applied).
    Hello,
    /// `CHALLENGE` sent (the `HELLO` named an nkey): the next frame must be `AUTH` with
    /// the nonce's signature.
    Challenge,
    /// `WELCOME` sent: frames flow.
    Open,
}

/// The binary protocol's state of one connection.
pub(super) struct BinaryState {
    phase: Phase,
    decoder: ClientFrameDecoder,
    /// The server's answer to `HELLO`, this connection's id filled in; its version is the
    /// one negotiated from the preface.
    welcome: Welcome,
    hello: Hello,
    /// `HELLO` has arrived (its credentials may still be being checked).
    hello_seen: bool,
    /// Lame duck mode began during the handshake: the `GOAWAY` goes right after `WELCOME`,
    /// announcing a close by this instant.
    goaway_after_welcome: Option<Instant>,
}

/// A credential field as text (a field that is not UTF-8 is not a credential anyone has).
fn text(field: &Option<Bytes>) -> Option<String> {
    field
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The reason a `GOAWAY` gives.
const GOAWAY_REASON: &str = "lame duck mode: the server is shutting down";

/// The `GOAWAY` of a connection the server closes by `deadline`.
fn goaway_frame(deadline: Instant, now: Instant) -> ServerFrame {
    let within = deadline.saturating_duration_since(now);
    ServerFrame::GoAway(GoAway {
        close_within_ms: u32::try_from(within.as_millis()).unwrap_or(u32::MAX),
        reason: Bytes::from_static(GOAWAY_REASON.as_bytes()),
    })
}

impl BinaryState {
    pub(super) fn new(welcome: &Welcome, client_id: u64, limits: &Limits) -> BinaryState {
        let mut welcome = welcome.clone();
        welcome.client_id = client_id;
        BinaryState {
            phase: Phase::Preface,
            decoder: ClientFrameDecoder::new(limits.binary()),
            welcome,
            hello: Hello::default(),
            hello_seen: false,
            goaway_after_welcome: None,
        }
    }

    /// A refusal in an `ERROR` frame, or in the refused `PUBLISH_ACK` the client asked
    /// for.
    fn refusal(ack_id: Option<u64>, code: ErrorCode, text: &str) -> ServerFrame {
        match ack_id {
            Some(ack_id) => ServerFrame::PublishAck(PublishAck {
                ack_id,
                result: AckResult::Refused {
                    code,
                    message: Bytes::copy_from_slice(text.as_bytes()),
                },
            }),
            None => error_frame(code, false, None, text),
        }
    }
}

impl Wire for BinaryState {
    fn protocol(&self) -> &'static str {
        "binary"
    }

    /// The name and version `HELLO` gave (its version is the client library's).
    fn client(&self) -> ClientName {
        ClientName {
            name: non_empty(&self.hello.client_name),
            lang: None,
            version: non_empty(&self.hello.client_version),
        }
    }

    /// The decoder reserves room for a partial frame itself.
    fn bytes_needed(&self) -> usize {
        0
    }

    fn in_timed_handshake(&self) -> bool {
        self.phase != Phase::Open
    }

    fn resumes(&self) -> bool {
        true
    }

    /// A `MESSAGE` (or, for a presence events subscription, its `PRESENCE` frame). `None`
    /// when the message cannot be represented (it cannot: both ports bound subjects and
    /// payloads far below the frame's limits).
    #[inline]
    fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
        _sequence_headers: bool,
    ) -> Option<usize> {
        let sid = match *sid {
            Sid::Binary(sid) => sid,
            Sid::Events(sid) => return super::presence::encode_presence(out, sid, msg),
            Sid::Text(_) => return None,
        };
        let head = head_of(sid, &Fields::of(msg));
        let headers = msg.headers.as_ref();
        if let Some(size) = encode_whole(out, &head, headers.is_some(), &msg.payload) {
            return Some(size);
        }
        let before = out.tail().len();
        encode_message_head(
            &head,
            headers.map(Bytes::len),
            msg.payload.len(),
            out.tail(),
        )
        .ok()?;
        out.commit(before);
        if let Some(h) = headers {
            out.push_bytes(h);
        }
        let before = out.tail().len();
        // Checked to fit a u32 by `encode_message_head`.
        out.tail().put_u32(msg.payload.len() as u32);
        out.commit(before);
        out.push_bytes(&msg.payload);
        Some(msg.payload.len() + headers.map_or(0, Bytes::len))
    }

    /// The common delivery: the whole frame in one write, as the text port's `MSG`.
    #[inline]
    fn encode_copied(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        d: &Fields<'_>,
        _sequence_headers: bool,
    ) -> Option<usize> {
        let Sid::Binary(sid) = *sid else {
            return None;
        };
        encode_whole(out, &head_of(sid, d), d.headers.is_some(), d.payload)
    }

    /// `DROP_NOTICE`.
    fn drop_notice(&mut self, out: &mut Outbound, sid: &Sid, log: &DropLog) {
        if let Sid::Binary(sid) = *sid {
            send_frame(
                out,
                &ServerFrame::DropNotice(DropNotice {
                    sid,
                    dropped: log.count,
                    ranges: log
                        .ranges
                        .iter()
                        .map(|&(shard, first, last)| SequenceRange { shard, first, last })
                        .collect(),
                }),
            );
        }
    }

    /// `PUBLISH_ACK`.
    fn ack(&mut self, out: &mut Outbound, ack_id: u64, stamp: Stamp, duplicate: bool) -> bool {
        send_frame(
            out,
            &ServerFrame::PublishAck(PublishAck {
                ack_id,
                result: AckResult::Stored {
                    shard: stamp.shard,
                    sequence: stamp.seq,
                    duplicate,
                },
            }),
        );
        true
    }

    /// `GAP_NOTICE`.
    fn gap(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        shard: u16,
        requested: u64,
        oldest: u64,
    ) -> bool {
        if let Sid::Binary(sid) = *sid {
            send_frame(
                out,
                &ServerFrame::GapNotice(GapNotice {
                    sid,
                    shard,
                    requested,
                    oldest,
                }),
            );
        }
        true
    }

    /// `SUBSCRIBED`, in this log's epoch.
    fn subscribed(&mut self, out: &mut Outbound, sid: u32, last_sequences: Vec<u64>) {
        let epoch = self.welcome.log_epoch;
        send_frame(
            out,
            &ServerFrame::Subscribed(Subscribed {
                sid,
                epoch,
                last_sequences,
            }),
        );
    }

    fn ping(&mut self, out: &mut Outbound) {
        send_frame(out, &ServerFrame::Ping);
    }

    fn pong(&mut self, out: &mut Outbound) {
        send_frame(out, &ServerFrame::Pong);
    }

    /// A refused `PUBLISH_ACK` when the client asked for an ack, a non-fatal `ERROR`
    /// otherwise.
    fn refuse_publish(
        &mut self,
        out: &mut Outbound,
        ack_id: Option<u64>,
        code: ErrorCode,
        text: &str,
    ) {
        send_frame(out, &BinaryState::refusal(ack_id, code, text));
    }

    /// A non-fatal `PermissionViolation` `ERROR`, naming the subscription it concerns.
    fn refuse_permission(&mut self, out: &mut Outbound, sid: Option<&Sid>, text: &str) {
        let sid = match sid {
            Some(Sid::Binary(n)) => Some(*n),
            _ => None,
        };
        send_frame(
            out,
            &error_frame(ErrorCode::PermissionViolation, false, sid, text),
        );
    }

    /// A fatal `ERROR`. Before the preface was accepted the peer may not speak Tern at
    /// all, so nothing is said then.
    fn fail(&mut self, out: &mut Outbound, reason: &CloseReason, authenticating: bool) {
        let (code, text) = match reason {
            CloseReason::SlowConsumer => (ErrorCode::SlowConsumer, "slow consumer".to_string()),
            CloseReason::StaleConnection => {
                (ErrorCode::SlowConsumer, "stale connection".to_string())
            }
            // Only before `WELCOME`, and said only once the preface was accepted (below).
            CloseReason::HandshakeTimeout(d) if authenticating && self.hello_seen => (
                ErrorCode::AuthenticationTimeout,
                format!("authentication not done within {d:?} (auth_timeout)"),
            ),
            CloseReason::HandshakeTimeout(d) => (
                ErrorCode::HelloExpected,
                format!("no HELLO within {d:?} (auth_timeout)"),
            ),
            CloseReason::ProtocolError(text) => (ErrorCode::ProtocolViolation, text.clone()),
            CloseReason::Unauthorized(_) => (
                ErrorCode::AuthorizationViolation,
                AUTHORIZATION_VIOLATION.to_string(),
            ),
            CloseReason::Expired => (
                ErrorCode::AuthenticationExpired,
                AUTHENTICATION_EXPIRED.to_string(),
            ),
            other => (ErrorCode::Internal, other.to_string()),
        };
        if self.phase != Phase::Preface {
            send_frame(out, &error_frame(code, true, None, &text));
        }
    }

    /// `WELCOME`, and a `GOAWAY` behind it when lame duck mode began meanwhile.
    fn granted(&mut self, out: &mut Outbound, now: Instant) {
        self.phase = Phase::Open;
        send_frame(out, &ServerFrame::Welcome(self.welcome.clone()));
        if let Some(deadline) = self.goaway_after_welcome.take() {
            send_frame(out, &goaway_frame(deadline, now));
        }
    }

    /// `GOAWAY` now, or right after `WELCOME` for a connection still in its handshake
    /// (the client expects `WELCOME` first).
    fn going_away(
        &mut self,
        out: &mut Outbound,
        _: &ServerInfo,
        deadline: Instant,
        now: Instant,
    ) -> bool {
        if self.phase != Phase::Open {
            self.goaway_after_welcome = Some(deadline);
            return false;
        }
        send_frame(out, &goaway_frame(deadline, now));
        true
    }

    /// A fatal `ERROR` frame, in plain text.
    fn tls_required(&self) -> Bytes {
        let mut out = bytes::BytesMut::new();
        let frame = error_frame(
            ErrorCode::ProtocolViolation,
            true,
            None,
            "TLS required: this port speaks TLS from the first byte",
        );
        let encoded = encode_server_frame(&frame, &mut out);
        debug_assert!(encoded.is_ok(), "unencodable server frame {frame:?}");
        out.freeze()
    }
}

/// `Wire::encode_copied`: the whole `MESSAGE` in one write, when it has no header block
/// and a payload small enough to copy.
#[inline(always)]
fn encode_whole(
    out: &mut Outbound,
    head: &MessageHead<'_>,
    has_headers: bool,
    payload: &[u8],
) -> Option<usize> {
    if has_headers || !Outbound::copies(payload.len()) {
        return None;
    }
    let before = out.tail().len();
    encode_message(head, payload, out.tail()).ok()?;
    out.commit(before);
    Some(payload.len())
}

/// A `MESSAGE`'s head for subscription `sid`.
#[inline(always)]
fn head_of<'a>(sid: u32, d: &Fields<'a>) -> MessageHead<'a> {
    MessageHead {
        sid,
        priority: d.priority,
        shard: d.stamp.shard,
        sequence: d.stamp.seq,
        timestamp: d.stamp.time_ns,
        replayed: d.replayed,
        subject: d.subject,
        reply: d.reply,
    }
}

/// Appends one server frame. Frames built here always fit the wire (short texts, fixed
/// fields); one that did not would be a bug, and is left out rather than sent malformed.
fn send_frame(out: &mut Outbound, frame: &ServerFrame) {
    let before = out.tail().len();
    let encoded = encode_server_frame(frame, out.tail());
    debug_assert!(encoded.is_ok(), "unencodable server frame {frame:?}");
    out.commit(before);
}

fn non_empty(bytes: &Bytes) -> Option<String> {
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// An `ERROR` frame built here (not from a decoder error).
fn error_frame(code: ErrorCode, fatal: bool, sid: Option<u32>, text: &str) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code,
        fatal,
        sid,
        message: Bytes::copy_from_slice(text.as_bytes()),
    })
}

impl Protocol for BinaryState {
    fn apply_buffered(&mut self, s: &mut Session, cx: &mut impl Context, _now: Instant) {
        s.apply_binary(self, cx);
    }

    /// The binary port's handshake is timed by the ping timer ([`Wire::in_timed_handshake`]),
    /// and nothing else it awaits has a deadline of its own.
    fn input_expired(
        &mut self,
        _: &mut Session,
        _: Instant,
        _: &Limits,
        _: &mut impl Context,
    ) -> bool {
        false
    }
}

/// The binary protocol's steps, on the session they apply to: each is handed the protocol's
/// own state (`b`) beside it, and hands `b` on to the session's steps that speak.
impl Session {
    fn send_binary(&mut self, frame: &ServerFrame) {
        send_frame(&mut self.out, frame);
    }

    /// A shard told where the subscription `sref` starts in its sequence: once every shard
    /// it is registered in has, the client gets `SUBSCRIBED`.
    pub(super) fn note_start(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        last: u64,
        workers: usize,
    ) {
        let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
            return;
        };
        if sub.ending.is_some() {
            // Ended by the client: its sid may name another subscription already.
            return;
        }
        let (Some(starts), Sid::Binary(sid)) = (&mut sub.starts, &sub.sid) else {
            return;
        };
        let Some(last_sequences) = starts.record(shard, last, workers) else {
            return;
        };
        let sid = *sid;
        sub.starts = None;
        w.subscribed(&mut self.out, sid, last_sequences);
    }

    /// Decodes and applies every whole frame in the read buffer (until the connection
    /// closes or is throttled).
    fn apply_binary(&mut self, b: &mut BinaryState, cx: &mut impl Context) {
        while self.may_apply(cx) {
            if b.phase == Phase::Preface {
                match Preface::decode(&mut self.rbuf) {
                    Ok(None) => return,
                    Ok(Some(preface)) => self.preface(b, preface, cx),
                    Err(e) => self.binary_error(&e, cx),
                }
                continue;
            }
            match b.decoder.decode(&mut self.rbuf) {
                // The common frame, applied where it was decoded (`publish_binary`).
                Ok(Some(ClientFrame::Publish(ref mut p))) if b.phase == Phase::Open => {
                    self.count_op();
                    self.publish_binary(b, p, cx);
                }
                Ok(Some(frame)) => {
                    self.count_op();
                    self.apply_frame(b, frame, cx);
                }
                Ok(None) => return,
                Err(e) => {
                    if !e.is_fatal() {
                        // Refused, but whole: the client is active.
                        self.count_op();
                    }
                    self.binary_error(&e, cx);
                }
            }
        }
    }

    fn preface(&mut self, b: &mut BinaryState, preface: Preface, cx: &mut impl Context) {
        match preface.negotiate() {
            Ok(version) => {
                b.welcome.version = version;
                b.phase = Phase::Hello;
            }
            Err(e) => {
                // The preface is Tern's, so the client can read a frame: say why.
                b.phase = Phase::Hello;
                self.binary_error(&e, cx);
            }
        }
    }

    /// A decoder error: fatal ones close the connection (silently for a bad magic), a
    /// refused frame is answered and reading goes on.
    fn binary_error(&mut self, e: &BinaryError, cx: &mut impl Context) {
        bump(&cx.stats().protocol_errors, 1);
        if e.is_too_many_tokens() {
            bump(&cx.stats().subject_tokens_refused, 1);
        }
        if matches!(e, BinaryError::BadMagic) {
            self.closing = Some(CloseReason::ProtocolError(e.to_string()));
            return;
        }
        self.send_binary(&e.to_server_frame());
        if e.is_fatal() {
            self.closing = Some(CloseReason::ProtocolError(e.to_string()));
        }
    }

    /// A fatal error found here rather than by the decoder.
    fn binary_fatal(&mut self, code: ErrorCode, text: &str, cx: &mut impl Context) {
        bump(&cx.stats().protocol_errors, 1);
        self.send_binary(&error_frame(code, true, None, text));
        self.closing = Some(CloseReason::ProtocolError(text.to_string()));
    }

    /// A frame refused here rather than by the decoder; the connection stays open.
    fn binary_refuse(
        &mut self,
        code: ErrorCode,
        sid: Option<u32>,
        text: &str,
        cx: &mut impl Context,
    ) {
        bump(&cx.stats().protocol_errors, 1);
        self.send_binary(&error_frame(code, false, sid, text));
    }

    fn apply_frame(&mut self, b: &mut BinaryState, frame: ClientFrame, cx: &mut impl Context) {
        let phase = b.phase;
        match (phase, frame) {
            (Phase::Hello, ClientFrame::Hello(hello)) => self.hello(b, hello, cx),
            (Phase::Hello, _) => self.binary_fatal(
                ErrorCode::HelloExpected,
                "the first frame must be HELLO",
                cx,
            ),
            (Phase::Challenge, ClientFrame::Auth(auth)) if auth.signature.is_some() => {
                let creds = OwnedCredentials {
                    nkey: text(&b.hello.nkey),
                    sig: text(&auth.signature),
                    ..OwnedCredentials::default()
                };
                self.authenticate(b, creds, cx);
            }
            (Phase::Challenge, _) => self.binary_fatal(
                ErrorCode::ProtocolViolation,
                "after CHALLENGE the next frame must be AUTH with the nonce's signature",
                cx,
            ),
            (_, ClientFrame::Auth(auth)) => self.refresh_binary(b, auth, cx),
            (_, ClientFrame::Hello(_)) => {
                self.binary_fatal(ErrorCode::HelloExpected, "HELLO may be sent only once", cx)
            }
            (_, ClientFrame::Publish(mut p)) => self.publish_binary(b, &mut p, cx),
            (_, ClientFrame::Subscribe(s)) => self.subscribe_binary(b, s, cx),
            (_, ClientFrame::Unsubscribe(u)) => self.unsubscribe_binary(u, cx),
            (_, ClientFrame::PresenceQuery(q)) => self.presence_query_binary(q, cx),
            (_, ClientFrame::Ping) => self.ping(b, cx),
            (_, ClientFrame::Pong) => self.pong(),
        }
    }

    /// `HELLO`: remember the options (not the secrets) and answer `WELCOME`, once its
    /// credentials are accepted where the broker requires them: at once, after the
    /// checker thread's verdict (bcrypt), or after `CHALLENGE` and `AUTH` for an nkey.
    fn hello(&mut self, b: &mut BinaryState, mut hello: Hello, cx: &mut impl Context) {
        let creds = OwnedCredentials {
            user: text(&hello.user),
            pass: text(&hello.pass),
            token: text(&hello.auth_token),
            nkey: text(&hello.nkey),
            sig: None,
        };
        hello.pass = None;
        hello.auth_token = None;
        let nkey = hello.nkey.is_some();
        // What is kept is copied: a slice would pin the whole read buffer it came in
        // (512 bytes or more) for as long as the connection lives.
        for kept in [&mut hello.client_name, &mut hello.client_version] {
            *kept = Bytes::copy_from_slice(kept);
        }
        for kept in [&mut hello.user, &mut hello.nkey].into_iter().flatten() {
            *kept = Bytes::copy_from_slice(kept);
        }
        b.hello = hello;
        b.hello_seen = true;
        if creds
            .token
            .as_deref()
            .is_some_and(|token| cx.is_bridge_token(token))
        {
            self.access.grant_internal(cx.auth().generation());
            self.granted(b);
            return;
        }
        if !self.access.is_pending() {
            self.granted(b);
            return;
        }
        match (&self.access.nonce, nkey) {
            (Some(nonce), true) => {
                let frame = ServerFrame::Challenge(Challenge {
                    nonce: Bytes::copy_from_slice(nonce.as_bytes()),
                });
                b.phase = Phase::Challenge;
                self.send_binary(&frame);
            }
            _ => self.authenticate(b, creds, cx),
        }
    }

    /// `AUTH` after `WELCOME`: a JWT connection's refreshed token (same user; its new
    /// expiry and permissions apply at once). Nothing else can be refreshed.
    fn refresh_binary(&mut self, b: &mut BinaryState, auth: Auth, cx: &mut impl Context) {
        match (&auth.token, self.access.method()) {
            (Some(token), Some(Method::Jwt)) => {
                let creds = OwnedCredentials {
                    token: Some(String::from_utf8_lossy(token).into_owned()),
                    ..OwnedCredentials::default()
                };
                self.authenticate(b, creds, cx);
            }
            _ => self.binary_refuse(
                ErrorCode::InvalidOption,
                None,
                "AUTH after WELCOME refreshes a JWT connection token, and this connection \
                 did not authenticate with one",
                cx,
            ),
        }
    }

    /// `PUBLISH`. A message id longer than `max_message_id` is refused as a content error
    /// (`InvalidOption`): every id is remembered for the dedupe window, so its length is
    /// bounded like any other limit.
    ///
    /// The frame is borrowed and its fields taken out of it, not moved in: a `Publish` is
    /// about 200 bytes, and each move of it was a copy (two a message, from the decoded
    /// frame through `apply_frame`).
    fn publish_binary(&mut self, b: &mut BinaryState, p: &mut Publish, cx: &mut impl Context) {
        if p.subject.starts_with(PRESENCE_PREFIX) {
            // As on the text port: the room's subscribe permission decides.
            let request = PresenceRequest {
                subject: mem::take(&mut p.subject),
                reply: p.reply.take(),
                payload: mem::take(&mut p.payload),
                ack_id: p.ack_id,
            };
            self.presence_request(b, request, cx);
            return;
        }
        if !self.access.may_publish(&p.subject, self.read_at) {
            bump(
                &cx.stats().permission_violations[Denial::Publish as usize],
                1,
            );
            let text = publish_violation(&p.subject);
            self.refuse_publish(b, p.ack_id, ErrorCode::PermissionViolation, &text);
            return;
        }
        // The broker's own bridge gives requests it imports a reply subject of its own.
        let reserved = p.reply.as_ref().filter(|r| is_reserved_reply(r));
        if let Some(reply) = reserved.filter(|_| !self.access.internal) {
            bump(&cx.stats().permission_violations[Denial::Reply as usize], 1);
            let text = reply_violation(reply);
            self.refuse_publish(b, p.ack_id, ErrorCode::PermissionViolation, &text);
            return;
        }
        let max_id = cx.config().store.max_message_id;
        if let Some(len) = p
            .message_id
            .as_ref()
            .map(Bytes::len)
            .filter(|&n| n > max_id)
        {
            bump(&cx.stats().protocol_errors, 1);
            bump(&cx.stats().message_ids_refused, 1);
            let text = format!(
                "message id of {len} bytes is longer than the server's max_message_id ({max_id} bytes)"
            );
            self.refuse_publish(b, p.ack_id, ErrorCode::InvalidOption, &text);
            return;
        }
        let hello = &b.hello;
        let (echo, no_responders) = (hello.echo, hello.no_responders);
        // Made where it is shared, as on the text port (`shared_msg`).
        let msg = shared_msg(|| Msg {
            reply: p.reply.take(),
            headers: p.headers.take(),
            no_echo: !echo,
            no_responders,
            priority: p.priority,
            ack_id: p.ack_id,
            message_id: p.message_id.take(),
            coalesce: p.coalescing_key.take(),
            ..Msg::new(
                mem::take(&mut p.subject),
                mem::take(&mut p.payload),
                self.id,
                self.read_at,
            )
        });
        if !self.admit(b, &msg, cx) {
            return;
        }
        self.publish_shared(msg, cx);
    }

    /// `SUBSCRIBE`. A resume token from another epoch cannot resume where it says: the
    /// client is told (`EpochMismatch`) and gets everything the log holds. Queue bounds
    /// over the server's maximum, and lossless queue-group members (a member's fall-back
    /// would replay what other members were given), are refused.
    fn subscribe_binary(&mut self, b: &mut BinaryState, mut s: Subscribe, cx: &mut impl Context) {
        let sid = Sid::Binary(s.sid);
        if self.has_sid(&sid) {
            let text = format!("subscription {} is already active", s.sid);
            self.binary_refuse(ErrorCode::DuplicateSubscription, Some(s.sid), &text, cx);
            return;
        }
        let bounds = match bounds_for(&cx.config().queues, s.max_queue_messages, s.max_queue_bytes)
        {
            Ok(b) => b,
            Err(text) => {
                self.binary_refuse(ErrorCode::InvalidOption, Some(s.sid), &text, cx);
                return;
            }
        };
        if s.lossless && s.queue.is_some() {
            let text = "a queue group member cannot be lossless";
            self.binary_refuse(ErrorCode::InvalidOption, Some(s.sid), text, cx);
            return;
        }
        if !self.access.may_subscribe(&s.subject, s.queue.as_deref()) {
            bump(
                &cx.stats().permission_violations[Denial::Subscribe as usize],
                1,
            );
            let text = subscribe_violation(&s.subject, s.queue.as_deref());
            self.send_binary(&error_frame(
                ErrorCode::PermissionViolation,
                false,
                Some(s.sid),
                &text,
            ));
            return;
        }
        if let Err((code, text)) = self.check_presence_options(&s, cx) {
            self.send_binary(&error_frame(code, false, Some(s.sid), &text));
            return;
        }
        // Last of the checks: it takes a place among the broker's subscriptions (two with
        // the presence events option: the room's events come by a subscription of their
        // own).
        let places = if s.presence_events { 2 } else { 1 };
        for taken in 0..places {
            if let Err(limit) = self.admit_subscription(cx) {
                for _ in 0..taken {
                    cx.subscription_slots().release();
                }
                let text = limit.text(&cx.config().admission);
                let frame = error_frame(ErrorCode::TooManySubscriptions, false, Some(s.sid), &text);
                self.send_binary(&frame);
                return;
            }
        }
        let epoch = b.welcome.log_epoch;
        let start = match std::mem::take(&mut s.start) {
            StartPosition::Live => None,
            StartPosition::Resume(token) if token.epoch != epoch => {
                // The sequences it names belong to another log: everything this log holds
                // is new to the client. Say so, then replay all of it (what the log no
                // longer holds from its start comes as a gap notice first).
                let text = format!(
                    "resume token is from log epoch {}, the log is at epoch {epoch}: \
                     replaying everything it holds",
                    token.epoch
                );
                self.binary_refuse(ErrorCode::EpochMismatch, Some(s.sid), &text, cx);
                Some(Arc::new(StartPosition::Resume(ResumeToken {
                    epoch,
                    last_sequences: Vec::new(),
                })))
            }
            other => Some(Arc::new(other)),
        };
        let key = self.add_sub(
            b,
            sid,
            s.subject.clone(),
            s.queue.as_ref(),
            start,
            bounds,
            s.lossless,
            cx,
        );
        self.subscribe_presence(b, &s, key, cx);
    }

    /// `UNSUBSCRIBE`: now, or after `max` more deliveries.
    fn unsubscribe_binary(&mut self, u: Unsubscribe, cx: &mut impl Context) {
        let sid = Sid::Binary(u.sid);
        let max = u.max.map(|more| self.delivered(&sid).saturating_add(more));
        if !self.unsubscribe(&sid, max, cx) {
            let text = format!("no active subscription {}", u.sid);
            self.binary_refuse(ErrorCode::UnknownSubscription, Some(u.sid), &text, cx);
        }
    }
}

/// Where a binary subscription starts in each shard it is registered in, gathered from the
/// shards' `Position`s until all have answered (then `SUBSCRIBED` tells the client, whose
/// resume token then covers the shards it has not received anything from).
#[derive(Debug)]
pub(super) struct Starts {
    shards: Range<usize>,
    /// Per shard, indexed from `shards.start`: the last sequence before its first.
    last: Vec<Option<u64>>,
}

impl Starts {
    pub fn new(shards: Range<usize>) -> Starts {
        Starts {
            last: vec![None; shards.len()],
            shards,
        }
    }

    /// Notes `shard`'s start. Once every shard has answered, the sequences for a resume
    /// token over all `workers` shards (0 for a shard the subscription is not registered
    /// in: it never hears from it).
    pub fn record(&mut self, shard: u16, last: u64, workers: usize) -> Option<Vec<u64>> {
        let s = usize::from(shard);
        if !self.shards.contains(&s) {
            return None;
        }
        self.last[s - self.shards.start] = Some(last);
        if self.last.iter().any(Option::is_none) {
            return None;
        }
        let mut token = vec![0; workers.max(self.shards.end)];
        for (i, last) in self.last.iter().enumerate() {
            token[self.shards.start + i] = last.unwrap_or(0);
        }
        Some(token)
    }
}

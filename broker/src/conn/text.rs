//! The text (NATS) protocol of a connection.
//!
//! Owns: the NATS decoder and the options the client sent in `CONNECT`, the mapping of each
//! client operation (`CONNECT`, `PUB`/`HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`; and, as
//! nats-server reads them from a client, `INFO` and `+OK` ignored, `-ERR` a close) onto the
//! connection's shared steps, the bytes the server sends on this port (`INFO`, `+OK`,
//! `-ERR`, `PING`, `PONG`, `MSG`/`HMSG`), and the deadlines on input that has started but
//! not finished ([`Deadlines`]: the handshake, a control line), checked by the ping timer.
//!
//! Its decoding ([`Protocol`] for `TextState`) is handed its own state and the session
//! separately; it applies each operation through the session's steps, handing them itself
//! as the [`Wire`] to speak in.
//!
//! Never: touches the socket or another connection, or the binary protocol's state; the
//! session's shared steps in `conn/mod.rs` do the bookkeeping.

use std::mem;
use std::time::Instant;

use bytes::Bytes;
use tern_auth::Method;
use tern_protocol::binary::ErrorCode;
use tern_protocol::text::{
    encode_msg, encode_msg_line, encode_server_op, ClientDecoder, ClientOp, ConnectOptions,
    DecodeError, Publish, ServerInfo, ServerOp, Subscribe,
};

use super::access::{
    is_reserved_reply, publish_violation, reply_violation, subscribe_violation, Stage,
    AUTHENTICATION_EXPIRED, AUTHORIZATION_VIOLATION,
};
use super::presence::{PresenceRequest, PRESENCE_PREFIX};
use super::protocol::Protocol;
use super::wire::{ClientName, Fields, Wire};
use super::{shared_msg, CloseReason, Session, Sid};
use crate::auth::OwnedCredentials;
use crate::config::Limits;

use super::Context;
use crate::mesh::{Msg, ReplayRequest, ReplayStart, Stamp};
use crate::outbound::Outbound;
use crate::replay::{status_block, ReplayLimit};
use crate::stats::{bump, AuthRefusal, Denial};
use crate::subqueue::{Bounds, DropLog};

/// The highest `protocol` a client may name in `CONNECT` (1: it understands `INFO`
/// updates); nats-server refuses a higher one with `-ERR 'invalid client protocol'`.
const MAX_CLIENT_PROTOCOL: u8 = 1;

/// The subject of text-port catch-up requests (see `replay_request`).
const REPLAY_SUBJECT: &[u8] = b"$TERN.REPLAY";

/// The subject of the informational message that tells a text subscriber what its queue
/// dropped (`docs/protocol-text.md`, "Drop notices").
const DROPPED_SUBJECT: &[u8] = b"$TERN.DROPPED";

/// The header that gives a text-port message its priority (0-7).
const PRIORITY_HEADER: &str = "Tern-Priority";
/// The header that gives a text-port message its coalescing key.
const COALESCE_HEADER: &str = "Tern-Coalesce";

/// The `-ERR` of a connection whose first control line was not whole in time
/// (nats-server's text for its CONNECT deadline).
const HANDSHAKE_TIMEOUT: &str = "Authentication Timeout";

/// The text protocol's state of one connection.
pub(super) struct TextState {
    pub(super) decoder: ClientDecoder,
    pub(super) opts: ConnectOptions,
    deadlines: Deadlines,
}

impl TextState {
    pub(super) fn new(limits: &Limits) -> TextState {
        TextState {
            decoder: ClientDecoder::new(limits.text()),
            opts: ConnectOptions::default(),
            deadlines: Deadlines::default(),
        }
    }

    /// Authentication is required: the handshake's clock runs from accept, as
    /// nats-server's auth timer does.
    pub(super) fn start_auth_clock(&mut self, due: Instant) {
        self.deadlines.start_handshake(due);
    }

    /// A delivery of sequence `seq` (0: not sequenced) with the header block `headers`
    /// this client takes gets `Tern-Shard`/`Tern-Seq` headers. A block that does not end
    /// the way NATS blocks do is passed on untouched.
    fn adds_sequence(&self, sequence_headers: bool, seq: u64, headers: Option<&[u8]>) -> bool {
        sequence_headers
            && self.opts.headers
            && seq != 0
            && headers.is_none_or(|h| h.ends_with(b"\r\n\r\n"))
    }
}

/// `Wire::encode_copied` for subscription `sid` once the delivery is known to carry no
/// header block: line, payload and line end in one write, when the payload is small
/// enough to copy.
#[inline(always)]
fn encode_whole(out: &mut Outbound, sid: &[u8], d: &Fields<'_>) -> Option<usize> {
    if !Outbound::copies(d.payload.len()) {
        return None;
    }
    let before = out.tail().len();
    encode_msg(out.tail(), d.subject, sid, d.reply, d.payload);
    out.commit(before);
    Some(d.payload.len())
}

impl Wire for TextState {
    fn protocol(&self) -> &'static str {
        "text"
    }

    fn client(&self) -> ClientName {
        ClientName {
            name: self.opts.name.clone(),
            lang: self.opts.lang.clone(),
            version: self.opts.version.clone(),
        }
    }

    fn bytes_needed(&self) -> usize {
        self.decoder.bytes_needed().unwrap_or(0)
    }

    fn in_timed_handshake(&self) -> bool {
        false
    }

    fn resumes(&self) -> bool {
        false
    }

    /// Appends `MSG` (or `HMSG` when the client accepts headers and the message has them)
    /// for subscription `sid`. Returns the delivered size (header block + payload).
    ///
    /// A client that accepts headers also gets a stored message's place in its shard, as
    /// `Tern-Shard` and `Tern-Seq` headers added at the end of the block (a block is made
    /// for a message without one), unless `sequence_headers` is off. They are written
    /// straight into the outbound tail: nothing is allocated per delivery.
    fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
        sequence_headers: bool,
    ) -> Option<usize> {
        let Sid::Text(sid) = sid else {
            return None;
        };
        let headers = if self.opts.headers {
            msg.headers.as_ref()
        } else {
            None
        };
        let add_sequence =
            self.adds_sequence(sequence_headers, msg.stamp.seq, headers.map(|h| &h[..]));
        if headers.is_none() && !add_sequence {
            if let Some(size) = encode_whole(out, sid, &Fields::of(msg)) {
                return Some(size);
            }
        }
        let extra = if add_sequence {
            SEQ_SHARD.len()
                + digits(u64::from(msg.stamp.shard))
                + 2
                + SEQ_SEQ.len()
                + digits(msg.stamp.seq)
                + 2
        } else {
            0
        };
        let headers_len = match (headers, add_sequence) {
            (Some(h), _) => Some(h.len() + extra),
            (None, true) => Some(BLOCK_START.len() + extra + 2),
            (None, false) => None,
        };
        let before = out.tail().len();
        encode_msg_line(
            out.tail(),
            &msg.subject,
            sid,
            msg.reply.as_deref(),
            headers_len,
            msg.payload.len(),
        );
        out.commit(before);
        match (headers, add_sequence) {
            (Some(h), false) => out.push_bytes(h),
            (Some(h), true) => out.push_bytes(&h.slice(..h.len() - 2)),
            (None, true) => {
                let before = out.tail().len();
                out.tail().extend_from_slice(BLOCK_START);
                out.commit(before);
            }
            (None, false) => {}
        }
        let before = out.tail().len();
        if add_sequence {
            use std::fmt::Write as _;
            let tail = out.tail();
            // Writing integers into a BytesMut cannot fail.
            let _ = write!(
                tail,
                "{SEQ_SHARD}{}\r\n{SEQ_SEQ}{}\r\n\r\n",
                msg.stamp.shard, msg.stamp.seq
            );
        }
        out.commit(before);
        out.push_bytes(&msg.payload);
        let before = out.tail().len();
        out.tail().extend_from_slice(b"\r\n");
        out.commit(before);
        Some(msg.payload.len() + headers_len.unwrap_or(0))
    }

    /// The common delivery: line, payload and line end in one write (no header block for
    /// this client, no sequence headers to add).
    #[inline]
    fn encode_copied(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        d: &Fields<'_>,
        sequence_headers: bool,
    ) -> Option<usize> {
        let Sid::Text(sid) = sid else {
            return None;
        };
        let headers = if self.opts.headers { d.headers } else { None };
        if headers.is_some() || self.adds_sequence(sequence_headers, d.stamp.seq, None) {
            return None;
        }
        encode_whole(out, sid, d)
    }

    /// A `MSG` on `$TERN.DROPPED` whose payload is a JSON object,
    /// `{"dropped":N,"ranges":[{"shard":S,"first":F,"last":L}]}`.
    fn drop_notice(&mut self, out: &mut Outbound, sid: &Sid, log: &DropLog) {
        use std::fmt::Write as _;
        let Sid::Text(sid) = sid else {
            return;
        };
        let mut body = format!("{{\"dropped\":{},\"ranges\":[", log.count);
        for (i, (shard, first, last)) in log.ranges.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(
                body,
                "{comma}{{\"shard\":{shard},\"first\":{first},\"last\":{last}}}"
            );
        }
        body.push_str("]}");
        let before = out.tail().len();
        encode_msg_line(out.tail(), DROPPED_SUBJECT, sid, None, None, body.len());
        out.tail().extend_from_slice(body.as_bytes());
        out.tail().extend_from_slice(b"\r\n");
        out.commit(before);
    }

    /// The text protocol has no acknowledgements: nothing asks for one there.
    fn ack(&mut self, _: &mut Outbound, _: u64, _: Stamp, _: bool) -> bool {
        false
    }

    /// Text subscriptions never resume.
    fn gap(&mut self, _: &mut Outbound, _: &Sid, _: u16, _: u64, _: u64) -> bool {
        false
    }

    /// Text subscriptions never resume, so no shard's start is ever awaited.
    fn subscribed(&mut self, _: &mut Outbound, _: u32, _: Vec<u64>) {}

    fn ping(&mut self, out: &mut Outbound) {
        send(out, &ServerOp::Ping);
    }

    fn pong(&mut self, out: &mut Outbound) {
        send(out, &ServerOp::Pong);
    }

    /// `-ERR`: NATS clients that do not know its text may close the connection themselves
    /// (`docs/protocol-text.md` says which).
    fn refuse_publish(&mut self, out: &mut Outbound, _: Option<u64>, _: ErrorCode, text: &str) {
        send(out, &ServerOp::Err(text.to_string()));
    }

    fn refuse_permission(&mut self, out: &mut Outbound, _: Option<&Sid>, text: &str) {
        send(out, &ServerOp::Err(text.to_string()));
    }

    fn fail(&mut self, out: &mut Outbound, reason: &CloseReason, _: bool) {
        let text = match reason {
            CloseReason::SlowConsumer => "Slow Consumer".to_string(),
            CloseReason::StaleConnection => "Stale Connection".to_string(),
            CloseReason::HandshakeTimeout(_) => HANDSHAKE_TIMEOUT.to_string(),
            CloseReason::ProtocolError(text) => text.clone(),
            CloseReason::Unauthorized(_) => AUTHORIZATION_VIOLATION.to_string(),
            CloseReason::Expired => AUTHENTICATION_EXPIRED.to_string(),
            other => other.to_string(),
        };
        send(out, &ServerOp::Err(text));
    }

    /// Nothing: a NATS client goes on once `CONNECT` is accepted (`+OK` in verbose mode,
    /// said where `CONNECT` is applied).
    fn granted(&mut self, _: &mut Outbound, _: Instant) {}

    /// The `INFO` with `"ldm":true`, which NATS clients take as "reconnect elsewhere". Not
    /// sent to a client that said in `CONNECT` that it does not take an `INFO` after the
    /// first (`"protocol":0`); a client without `CONNECT` (a person at `telnet`) gets it,
    /// to read.
    fn going_away(
        &mut self,
        out: &mut Outbound,
        info: &ServerInfo,
        _: Instant,
        _: Instant,
    ) -> bool {
        if self.opts.protocol == Some(0) {
            return false;
        }
        send(out, &ServerOp::Info(Box::new(info.clone())));
        true
    }

    /// nats-server's words.
    fn tls_required(&self) -> Bytes {
        Bytes::from_static(b"-ERR 'Secure Connection - TLS Required'\r\n")
    }
}

/// Queues a server operation (`INFO`, `+OK`, `-ERR`, `PING`, `PONG`).
fn send(out: &mut Outbound, op: &ServerOp) {
    let before = out.tail().len();
    encode_server_op(op, out.tail());
    out.commit(before);
}

/// The status line a block made for a message without one starts with.
const BLOCK_START: &[u8] = b"NATS/1.0\r\n";
/// The headers that give a stored message's place in its shard.
const SEQ_SHARD: &str = "Tern-Shard: ";
const SEQ_SEQ: &str = "Tern-Seq: ";

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Protocol for TextState {
    fn apply_buffered(&mut self, s: &mut Session, cx: &mut impl Context, now: Instant) {
        s.apply_text(self, cx, now);
    }

    fn input_expired(
        &mut self,
        s: &mut Session,
        now: Instant,
        limits: &Limits,
        cx: &mut impl Context,
    ) -> bool {
        s.text_deadline_passed(self, now, limits, cx)
    }
}

/// The text protocol's steps, on the session they apply to: each is handed the protocol's
/// own state (`t`) beside it, and hands `t` on to the session's steps that speak.
impl Session {
    /// Queues a server operation (`INFO`, `+OK`, `-ERR`, `PING`, `PONG`).
    fn send(&mut self, op: &ServerOp) {
        send(&mut self.out, op);
    }

    pub(super) fn greet_text(&mut self, info: &ServerInfo) {
        let info = self.personal_info(info);
        self.send(&ServerOp::Info(Box::new(info)));
    }

    /// A publish or subscription refused: the connection stays open. (`-ERR` texts NATS
    /// clients do not know may make them close the connection themselves;
    /// `docs/protocol-text.md` says which.)
    pub(super) fn refuse_text(&mut self, text: &str) {
        self.send(&ServerOp::Err(text.to_string()));
    }

    /// Decodes and applies every whole operation in the read buffer (until the connection
    /// closes or is throttled), then moves the deadlines on what is left unfinished, as of
    /// this loop turn (`now`).
    fn apply_text(&mut self, t: &mut TextState, cx: &mut impl Context, now: Instant) {
        let (len, ops) = (self.rbuf.len(), self.ops);
        self.decode_and_apply(t, cx);
        if self.closing.is_some() {
            return;
        }
        let due = now + cx.config().limits.auth_timeout;
        let consumed = self.rbuf.len() < len;
        let ops_done = self.ops != ops;
        let authenticating = self.access.is_pending();
        // Without authentication the handshake is the first control line (there is no
        // CONNECT to wait for): done once an operation was applied, or a PUB's line is
        // whole and its payload awaited. With authentication it is the accepted CONNECT,
        // and its deadline started at accept.
        t.deadlines.start_handshake(due);
        if !authenticating && (ops_done || t.decoder.awaiting_payload()) {
            t.deadlines.handshake_done();
        }
        let input = if t.decoder.in_control_line(&self.rbuf) {
            Input::Line
        } else {
            Input::Idle
        };
        t.deadlines.after_read(due, input, consumed);
    }

    /// Closes the connection when the handshake, or a control line that has started, is
    /// not done by its deadline. Returns true when it did.
    fn text_deadline_passed(
        &mut self,
        t: &mut TextState,
        now: Instant,
        limits: &Limits,
        cx: &mut impl Context,
    ) -> bool {
        match t.deadlines.expired(now) {
            None => false,
            Some(Expired::Handshake) => {
                bump(&cx.stats().handshake_timeouts, 1);
                self.fail(t, CloseReason::HandshakeTimeout(limits.auth_timeout));
                true
            }
            Some(Expired::Line) => {
                bump(&cx.stats().control_line_timeouts, 1);
                bump(&cx.stats().protocol_errors, 1);
                let text = format!(
                    "Control Line Timeout: no line end within {:?}",
                    limits.auth_timeout
                );
                self.fail(t, CloseReason::ProtocolError(text));
                true
            }
        }
    }

    fn decode_and_apply(&mut self, t: &mut TextState, cx: &mut impl Context) {
        while self.may_apply(cx) {
            // Matched in place: moving the decoded operation (136 bytes, over what the
            // compiler copies inline) cost two `memcpy` calls per operation, 6 % of a
            // 1→1 16-byte run's CPU; `apply_op` takes what it keeps out of it instead.
            let mut decoded = t.decoder.decode(&mut self.rbuf);
            match &mut decoded {
                Ok(Some(op)) => {
                    self.count_op();
                    if self.access.is_pending() && !matches!(op, ClientOp::Connect(_)) {
                        self.before_connect(t, cx);
                        if self.access.is_pending() {
                            return;
                        }
                    }
                    self.apply_op(t, op, cx);
                }
                Ok(None) => return,
                Err(e) => {
                    if !e.is_fatal() {
                        // Refused, but whole: the client is active.
                        self.count_op();
                    }
                    self.protocol_error(e, cx);
                }
            }
        }
    }

    fn protocol_error(&mut self, e: &DecodeError, cx: &mut impl Context) {
        bump(&cx.stats().protocol_errors, 1);
        if e.is_too_many_tokens() {
            bump(&cx.stats().subject_tokens_refused, 1);
        }
        let text = e.to_string();
        self.send(&ServerOp::Err(text.clone()));
        if e.is_fatal() {
            self.closing = Some(CloseReason::ProtocolError(text));
        }
    }

    /// Takes what it keeps out of `op` (left empty) rather than `op` itself: see
    /// `decode_and_apply`.
    #[inline]
    fn apply_op(&mut self, t: &mut TextState, op: &mut ClientOp, cx: &mut impl Context) {
        let ack = matches!(
            op,
            ClientOp::Connect(_) | ClientOp::Pub(_) | ClientOp::Sub(_) | ClientOp::Unsub { .. }
        );
        // False when admission control refused the operation with `-ERR`: no `+OK` then.
        let mut admitted = true;
        match op {
            ClientOp::Connect(opts) => self.connect(t, mem::take(&mut **opts), cx),
            ClientOp::Pub(p) => admitted = self.publish_text(t, mem::take(p), cx),
            ClientOp::Sub(s) => admitted = self.subscribe_text(t, mem::take(s), cx),
            ClientOp::Unsub { sid, max } => {
                // Unknown sids are ignored, as nats-server does.
                self.unsubscribe(&Sid::Text(mem::take(sid)), *max, cx);
            }
            ClientOp::Ping => self.ping(t, cx),
            ClientOp::Pong => self.pong(),
            // What nats-server reads only from its routes: a client's is ignored.
            ClientOp::Info(_) | ClientOp::Ok => {}
            ClientOp::Err(text) => {
                // As nats-server: the connection is closed, its close reason (logged
                // with it) quoting the client, and nothing is sent back.
                self.closing = Some(CloseReason::ProtocolError(format!(
                    "client sent -ERR '{text}'"
                )));
            }
        }
        if ack && admitted && t.opts.verbose && self.closing.is_none() {
            self.send(&ServerOp::Ok);
        }
    }

    fn connect(&mut self, t: &mut TextState, opts: ConnectOptions, cx: &mut impl Context) {
        if opts.protocol.is_some_and(|p| p > MAX_CLIENT_PROTOCOL) {
            // nats-server's answer to a protocol version it does not know.
            bump(&cx.stats().protocol_errors, 1);
            let text = "invalid client protocol".to_string();
            self.send(&ServerOp::Err(text.clone()));
            self.closing = Some(CloseReason::ProtocolError(text));
            return;
        }
        if opts.no_responders && !opts.headers {
            bump(&cx.stats().protocol_errors, 1);
            let text = "no responders requires headers support".to_string();
            self.send(&ServerOp::Err(text.clone()));
            self.closing = Some(CloseReason::ProtocolError(text));
            return;
        }
        // The first CONNECT authenticates; a later one with a token refreshes a JWT
        // connection's (same user, new expiry and permissions).
        let refresh = self.access.stage == Stage::Granted
            && self.access.method() == Some(Method::Jwt)
            && opts.auth_token.is_some();
        let creds = (self.access.is_pending() || refresh).then(|| OwnedCredentials {
            user: opts.user.clone(),
            pass: opts.pass.clone(),
            token: opts.auth_token.clone(),
            nkey: opts.nkey.clone(),
            sig: opts.sig.clone(),
        });
        let mut opts = opts;
        // The options are kept (a name, a version, for monitoring); the secrets are not.
        opts.pass = None;
        opts.auth_token = None;
        opts.sig = None;
        t.opts = opts;
        if let Some(creds) = creds {
            self.authenticate(t, creds, cx);
        }
    }

    /// An operation other than `CONNECT` came first on a connection that must
    /// authenticate: bound to `no_auth_user` when there is one (as nats-server does, so
    /// that a `telnet` session works), refused otherwise.
    fn before_connect(&mut self, t: &mut TextState, cx: &mut impl Context) {
        if self.access.stage == Stage::Awaiting && cx.auth().load().has_no_auth_user() {
            self.authenticate(t, OwnedCredentials::default(), cx);
        } else {
            self.refuse_auth(t, AuthRefusal::NotConnectFirst, None, cx);
        }
    }

    /// Returns false when admission control refused the publish.
    fn publish_text(&mut self, t: &mut TextState, p: Publish, cx: &mut impl Context) -> bool {
        if p.subject.starts_with(PRESENCE_PREFIX) {
            // Presence is the room's subscribers' business: its requests are checked
            // against the subscribe permissions of the room, not as publishes.
            let request = PresenceRequest {
                subject: p.subject,
                reply: p.reply,
                payload: p.payload,
                ack_id: None,
            };
            return self.presence_request(t, request, cx);
        }
        if !self.access.may_publish(&p.subject, self.read_at) {
            bump(
                &cx.stats().permission_violations[Denial::Publish as usize],
                1,
            );
            self.refuse_text(&publish_violation(&p.subject));
            return false;
        }
        if let Some(reply) = p.reply.as_ref().filter(|r| is_reserved_reply(r)) {
            bump(&cx.stats().permission_violations[Denial::Reply as usize], 1);
            self.refuse_text(&reply_violation(reply));
            return false;
        }
        if p.subject == REPLAY_SUBJECT {
            // A catch-up request is a publish to `$TERN.REPLAY` (which its permissions
            // must allow), and a subscription to its filter (checked there).
            self.replay_request(t, p, cx);
            return true;
        }
        let opts = &t.opts;
        let (no_echo, no_responders) = (!opts.echo, opts.no_responders);
        let (priority, coalesce) = match tern_headers(p.headers.as_ref()) {
            Ok((priority, coalesce)) => (
                priority.unwrap_or(cx.config().queues.text_priority),
                coalesce,
            ),
            Err(text) => {
                // Refused; the connection carries on.
                bump(&cx.stats().protocol_errors, 1);
                self.send(&ServerOp::Err(text));
                return false;
            }
        };
        // Made where it is shared (see `publish_shared`); `read_at` is the loop turn in
        // which these bytes were read.
        let msg = shared_msg(|| Msg {
            reply: p.reply,
            headers: p.headers,
            no_echo,
            no_responders,
            priority,
            coalesce,
            ..Msg::new(p.subject, p.payload, self.id, self.read_at)
        });
        if !self.admit(t, &msg, cx) {
            return false;
        }
        self.publish_shared(msg, cx);
        true
    }

    /// `PUB $TERN.REPLAY <inbox>` with a JSON body: catch-up for text clients. The shards
    /// the filter can match in publish every matching record they hold to the inbox, with
    /// its subject, shard, sequence and time as `Tern-*` headers, then one end marker each
    /// (`docs/protocol-text.md`). A request that cannot be served gets a `400` status
    /// message on the inbox saying why; one over `max_replays_per_conn` catch-ups in
    /// progress on this connection, or `max_replays` on the broker, gets a `409`.
    fn replay_request(&mut self, t: &mut TextState, p: Publish, cx: &mut impl Context) {
        let Some(inbox) = p.reply else {
            self.send(&ServerOp::Err(
                "Replay requests need a reply subject".to_string(),
            ));
            return;
        };
        if !t.opts.headers {
            self.send(&ServerOp::Err(
                "Replay requires headers support".to_string(),
            ));
            return;
        }
        let (filter, start) = match parse_replay(
            &p.payload,
            cx.config().limits.max_subject_tokens,
            cx.workers(),
        ) {
            Ok(request) => request,
            Err(reason) => return self.replay_status(inbox, "400 Bad Request", &reason, cx),
        };
        // History obeys the live rules: the filter must be one the user may subscribe to,
        // and one whose records need no screening (a deny inside it), since the shards
        // that replay do not know the user.
        if !self.access.may_subscribe(&filter, None) || self.access.denies_within(&filter) {
            bump(
                &cx.stats().permission_violations[Denial::Subscribe as usize],
                1,
            );
            let text = subscribe_violation(&filter, None);
            return self.replay_status(inbox, "403 Forbidden", &text, cx);
        }
        let per_conn = cx.config().store.max_replays_per_conn;
        let refused = if self.replays.len() >= per_conn {
            Some((
                ReplayLimit::Connection,
                format!(
                    "{per_conn} replays already in progress on this connection \
                     (max_replays_per_conn); wait for their end markers"
                ),
            ))
        } else if !cx.replay_slots().try_acquire() {
            Some((
                ReplayLimit::Server,
                format!(
                    "{} replays already in progress on the server (max_replays); try again later",
                    cx.replay_slots().max()
                ),
            ))
        } else {
            None
        };
        if let Some((limit, text)) = refused {
            bump(&cx.stats().replays_refused[limit as usize], 1);
            return self.replay_status(inbox, "409 Too Many Replays", &text, cx);
        }
        let id = self.replays.next_id();
        let last_n = match start {
            ReplayStart::LastN(n) => Some(n),
            _ => None,
        };
        let shards = cx.replay(ReplayRequest {
            filter,
            inbox,
            start,
            shards: 0,
            origin: self.id,
            id,
        });
        self.replays.started(id, shards.clone(), last_n);
        bump(&cx.stats().replays_active, 1);
        self.barrier.touch(shards);
    }

    /// Answers a catch-up request with a status message on its inbox: `NATS/1.0 <status>`
    /// and a `Tern-Error` header (client text made safe for the header line).
    fn replay_status(&mut self, inbox: Bytes, status: &str, text: &str, cx: &mut impl Context) {
        let mut msg = Msg::new(inbox, Bytes::new(), self.id, self.read_at);
        msg.headers = Some(Bytes::from(status_block(status, text)));
        msg.ephemeral = true;
        self.publish(msg, cx);
    }

    /// Returns false when admission control refused the subscription.
    fn subscribe_text(&mut self, t: &mut TextState, s: Subscribe, cx: &mut impl Context) -> bool {
        // Kept as long as the subscription: copied, as `add_sub` copies the filter.
        let sid = Sid::Text(Bytes::copy_from_slice(&s.sid));
        if self.has_sid(&sid) {
            // As nats-server does: a second SUB with a sid in use changes nothing.
            return true;
        }
        if !self.access.may_subscribe(&s.subject, s.queue.as_deref()) {
            bump(
                &cx.stats().permission_violations[Denial::Subscribe as usize],
                1,
            );
            self.refuse_text(&subscribe_violation(&s.subject, s.queue.as_deref()));
            return false;
        }
        if self.admit_subscription(cx).is_err() {
            // nats-server's text (for either limit), which NATS clients treat as an error
            // that does not end the connection.
            self.refuse_text("maximum subscriptions exceeded");
            return false;
        }
        let bounds = Bounds {
            messages: cx.config().queues.sub_queue_messages,
            bytes: cx.config().queues.sub_queue_bytes,
        };
        self.add_sub(t, sid, s.subject, s.queue.as_ref(), None, bounds, false, cx);
        true
    }
}

/// The priority (`Tern-Priority: 0`..`7`) and coalescing key (`Tern-Coalesce: KEY`) a
/// text-port message's headers give it, if any. The error is the `-ERR` text.
fn tern_headers(headers: Option<&Bytes>) -> Result<(Option<u8>, Option<Bytes>), String> {
    let Some(block) = headers else {
        return Ok((None, None));
    };
    let priority = match tern_protocol::headers::find(block, PRIORITY_HEADER) {
        None => None,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
        {
            Some(p) if p <= 7 => Some(p),
            _ => {
                return Err(format!(
                    "Invalid {PRIORITY_HEADER} header '{}': must be 0 to 7",
                    String::from_utf8_lossy(v)
                ))
            }
        },
    };
    let coalesce = match tern_protocol::headers::find(block, COALESCE_HEADER) {
        None => None,
        Some([]) => return Err(format!("Invalid {COALESCE_HEADER} header: empty key")),
        Some(key) => Some(Bytes::copy_from_slice(key)),
    };
    Ok((priority, coalesce))
}

/// The body of a `$TERN.REPLAY` request: `{"subject": FILTER}` and at most one of
/// `"from_seq": N` (with `"shard": S`, one of the `shards` shards: that shard's records
/// from its sequence N on), `"since_ns": NS`, `"last": N`; with none, everything held. The
/// filter has at most `max_tokens` tokens, as a `SUB`'s. Errors are the text of the `400`
/// reply.
fn parse_replay(
    body: &[u8],
    max_tokens: usize,
    shards: usize,
) -> Result<(Bytes, ReplayStart), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        subject: String,
        from_seq: Option<u64>,
        shard: Option<u16>,
        since_ns: Option<u64>,
        last: Option<u32>,
    }
    let r: Request =
        serde_json::from_slice(body).map_err(|e| format!("invalid replay request: {e}"))?;
    tern_protocol::subject::validate_filter_max(r.subject.as_bytes(), max_tokens)
        .map_err(|e| format!("invalid subject: {e}"))?;
    let start = match (r.from_seq, r.since_ns, r.last) {
        (None, None, None) => ReplayStart::All,
        (Some(seq), None, None) => {
            // Every shard has its own sequence (the one in `Tern-Shard`/`Tern-Seq`).
            let shard = r
                .shard
                .ok_or("from_seq needs the shard its sequence is of")?;
            if usize::from(shard) >= shards {
                return Err(format!(
                    "no shard {shard}: this server has {shards} (0 to {})",
                    shards - 1
                ));
            }
            ReplayStart::FromSeq { shard, seq }
        }
        (None, Some(ns), None) => ReplayStart::Time(ns),
        (None, None, Some(n)) => ReplayStart::LastN(n),
        _ => return Err("give at most one of from_seq, since_ns, last".to_string()),
    };
    if r.shard.is_some() && r.from_seq.is_none() {
        return Err("shard goes with from_seq".to_string());
    }
    Ok((Bytes::from(r.subject), start))
}

/// Where the decoder stands after a read's bytes were decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Between operations, or inside a payload (the ping timer covers a payload).
    Idle,
    /// Inside a control line whose line end has not arrived.
    Line,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Handshake,
    Line,
}

/// The text port's deadlines on input that has started but not finished, so a client
/// cannot hold a connection with a few bytes a second (`docs/protocol-text.md`,
/// "Deadlines"):
///
/// - the handshake must be done by its deadline (today: armed by the client's first byte,
///   done when its first control line is whole);
/// - afterwards, a control line that has started must be whole within the timeout of the
///   read that brought its first byte.
///
/// A payload being trickled is not covered here: it completes no operation, so the ping
/// timer finds the client stale. Never reads a clock: the caller gives the deadlines.
#[derive(Debug, Default)]
struct Deadlines {
    /// Until the handshake is done: when it must be, once started.
    handshake: Option<Instant>,
    handshake_done: bool,
    /// The control line in progress, if any: when it must be whole.
    line: Option<Instant>,
}

impl Deadlines {
    /// The handshake's clock starts, unless it is running or done.
    fn start_handshake(&mut self, due: Instant) {
        if !self.handshake_done && self.handshake.is_none() {
            self.handshake = Some(due);
        }
    }

    fn handshake_done(&mut self) {
        self.handshake_done = true;
        self.handshake = None;
    }

    /// After a read: `input` is where the decoder stands, `consumed` whether a line (or an
    /// operation) was taken from the buffer. A line in progress that follows a consumed
    /// one started in this read, so its deadline is `due`; one that was already in
    /// progress keeps its deadline.
    fn after_read(&mut self, due: Instant, input: Input, consumed: bool) {
        self.line = match input {
            Input::Idle => None,
            Input::Line if consumed => Some(due),
            Input::Line => self.line.or(Some(due)),
        };
    }

    /// The deadline that has passed at `now`, the handshake's first.
    fn expired(&self, now: Instant) -> Option<Expired> {
        if self.handshake.is_some_and(|due| now >= due) {
            Some(Expired::Handshake)
        } else if self.line.is_some_and(|due| now >= due) {
            Some(Expired::Line)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn the_handshake_deadline_runs_from_the_first_byte_until_a_line_is_whole() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.expired(t0 + T * 100), None, "no byte, no deadline");
        d.start_handshake(t0 + T);
        d.after_read(t0 + T, Input::Line, false);
        // More bytes of the same line move nothing.
        let t1 = t0 + Duration::from_secs(1);
        d.start_handshake(t1 + T);
        d.after_read(t1 + T, Input::Line, false);
        assert_eq!(d.expired(t0 + T - Duration::from_millis(1)), None);
        assert_eq!(d.expired(t0 + T), Some(Expired::Handshake));
        // Done in time: nothing left once the line is whole.
        d.handshake_done();
        d.after_read(t1 + T, Input::Idle, true);
        assert_eq!(d.expired(t0 + T * 100), None);
        // And it never starts again.
        d.start_handshake(t1 + T);
        assert_eq!(d.expired(t0 + T * 100), None);
    }

    #[test]
    fn blank_lines_do_not_finish_the_handshake() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.start_handshake(t0 + T);
        // "\r\n" consumed, nothing applied: the caller does not call handshake_done.
        d.after_read(t0 + T, Input::Idle, true);
        assert_eq!(d.expired(t0 + T), Some(Expired::Handshake));
    }

    #[test]
    fn a_later_line_has_its_own_deadline_from_its_first_byte() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.handshake_done();
        // "PI" arrives at t0.
        d.after_read(t0 + T, Input::Line, false);
        // "NG\r\nSU" at t1: PING is consumed, SUB's line started at t1.
        let t1 = t0 + Duration::from_millis(1500);
        d.after_read(t1 + T, Input::Line, true);
        assert_eq!(d.expired(t0 + T), None);
        assert_eq!(d.expired(t1 + T), Some(Expired::Line));
        // "B foo" at t2, still the same line: its deadline stays.
        let t2 = t1 + Duration::from_secs(1);
        d.after_read(t2 + T, Input::Line, false);
        assert_eq!(d.expired(t1 + T), Some(Expired::Line));
        // The line end: no line in progress, no deadline.
        d.after_read(t2 + T, Input::Idle, true);
        assert_eq!(d.expired(t0 + T * 100), None);
    }
}

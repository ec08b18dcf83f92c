//! The text (NATS) protocol of a connection.
//!
//! Owns: the NATS decoder and the options the client sent in `CONNECT`, the mapping of each
//! client operation (`CONNECT`, `PUB`/`HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`) onto the
//! connection's shared steps, and the bytes the server sends on this port (`INFO`, `+OK`,
//! `-ERR`, `PING`, `PONG`, `MSG`/`HMSG`).
//!
//! Never: touches the socket or another connection; the shared steps in `conn/mod.rs` do
//! the bookkeeping.

use bytes::Bytes;
use tern_protocol::text::{
    encode_msg_line, encode_server_op, ClientDecoder, ClientOp, ConnectOptions, DecodeError,
    Publish, ServerInfo, ServerOp, Subscribe,
};

use super::{CloseReason, Conn, Proto, Sid};
use crate::config::Limits;
use crate::mesh::{Msg, ReplayRequest, ReplayStart};
use crate::outbound::Outbound;
use crate::router::Router;
use crate::stats::bump;
use crate::subqueue::{Bounds, DropLog};

/// The subject of text-port catch-up requests (see `replay_request`).
const REPLAY_SUBJECT: &[u8] = b"$TERN.REPLAY";

/// The subject of the informational message that tells a text subscriber what its queue
/// dropped (`docs/protocol-text.md`, "Drop notices").
const DROPPED_SUBJECT: &[u8] = b"$TERN.DROPPED";

/// The header that gives a text-port message its priority (0-7).
const PRIORITY_HEADER: &str = "Tern-Priority";
/// The header that gives a text-port message its coalescing key.
const COALESCE_HEADER: &str = "Tern-Coalesce";

/// The text protocol's state of one connection.
pub(super) struct TextState {
    pub(super) decoder: ClientDecoder,
    pub(super) opts: ConnectOptions,
}

impl TextState {
    pub(super) fn new(limits: &Limits) -> TextState {
        TextState {
            decoder: ClientDecoder::new(limits.text()),
            opts: ConnectOptions::default(),
        }
    }

    /// Appends `MSG` (or `HMSG` when the client accepts headers and the message has them)
    /// for subscription `sid`. Returns the delivered size (header block + payload).
    ///
    /// A client that accepts headers also gets a stored message's place in its shard, as
    /// `Tern-Shard` and `Tern-Seq` headers added at the end of the block (a block is made
    /// for a message without one), unless `sequence_headers` is off. They are written
    /// straight into the outbound tail: nothing is allocated per delivery.
    pub(super) fn encode_delivery(
        &self,
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
        // A block that does not end the way NATS blocks do is passed on untouched.
        let add_sequence = sequence_headers
            && self.opts.headers
            && msg.stamp.seq != 0
            && headers.is_none_or(|h| h.ends_with(b"\r\n\r\n"));
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
}

impl TextState {
    /// Appends the drop notice of subscription `sid`: a `MSG` on `$TERN.DROPPED` whose
    /// payload is a JSON object, `{"dropped":N,"ranges":[{"shard":S,"first":F,"last":L}]}`.
    pub(super) fn encode_drop_notice(&self, out: &mut Outbound, sid: &Sid, log: &DropLog) {
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

impl Conn {
    fn text_state(&mut self) -> &mut TextState {
        match &mut self.proto {
            Proto::Text(t) => t,
            Proto::Binary(_) => unreachable!("text operation on a binary connection"),
        }
    }

    /// Queues a server operation (`INFO`, `+OK`, `-ERR`, `PING`, `PONG`).
    fn send(&mut self, op: &ServerOp) {
        let before = self.out.tail().len();
        encode_server_op(op, self.out.tail());
        self.out.commit(before);
    }

    pub(super) fn greet_text(&mut self, info: &ServerInfo) {
        let mut info = info.clone();
        info.client_id = self.client_id;
        info.client_ip = Some(self.peer.ip().to_string());
        self.send(&ServerOp::Info(Box::new(info)));
    }

    pub(super) fn send_text_pong(&mut self) {
        self.send(&ServerOp::Pong);
    }

    pub(super) fn send_text_ping(&mut self) {
        self.send(&ServerOp::Ping);
    }

    pub(super) fn fail_text(&mut self, reason: &CloseReason) {
        let text = match reason {
            CloseReason::SlowConsumer => "Slow Consumer".to_string(),
            CloseReason::StaleConnection => "Stale Connection".to_string(),
            CloseReason::ProtocolError(text) => text.clone(),
            other => other.to_string(),
        };
        self.send(&ServerOp::Err(text));
    }

    /// A publish or subscription refused by admission control: the connection stays open.
    /// (`-ERR` texts NATS clients do not know may make them close the connection
    /// themselves; `docs/protocol-text.md` says which.)
    pub(super) fn refuse_text(&mut self, text: &str) {
        self.send(&ServerOp::Err(text.to_string()));
    }

    /// Decodes and applies every whole operation in the read buffer (until the connection
    /// closes or is throttled).
    pub(super) fn apply_text(&mut self, router: &mut Router) {
        while self.may_apply(router) {
            let decoded = match &mut self.proto {
                Proto::Text(t) => t.decoder.decode(&mut self.rbuf),
                Proto::Binary(_) => unreachable!("text decoding on a binary connection"),
            };
            match decoded {
                Ok(Some(op)) => self.apply_op(op, router),
                Ok(None) => return,
                Err(e) => self.protocol_error(&e, router),
            }
        }
    }

    fn protocol_error(&mut self, e: &DecodeError, router: &mut Router) {
        bump(&router.stats.protocol_errors, 1);
        let text = e.to_string();
        self.send(&ServerOp::Err(text.clone()));
        if e.is_fatal() {
            self.closing = Some(CloseReason::ProtocolError(text));
        }
    }

    fn apply_op(&mut self, op: ClientOp, router: &mut Router) {
        let ack = !matches!(op, ClientOp::Ping | ClientOp::Pong);
        // False when admission control refused the operation with `-ERR`: no `+OK` then.
        let mut admitted = true;
        match op {
            ClientOp::Connect(opts) => self.connect(*opts, router),
            ClientOp::Pub(p) => admitted = self.publish_text(p, router),
            ClientOp::Sub(s) => admitted = self.subscribe_text(s, router),
            ClientOp::Unsub { sid, max } => {
                // Unknown sids are ignored, as nats-server does.
                self.unsubscribe(&Sid::Text(sid), max, router);
            }
            ClientOp::Ping => self.ping(router),
            ClientOp::Pong => self.pong(),
        }
        if ack && admitted && self.text_state().opts.verbose && self.closing.is_none() {
            self.send(&ServerOp::Ok);
        }
    }

    fn connect(&mut self, opts: ConnectOptions, router: &mut Router) {
        if opts.no_responders && !opts.headers {
            bump(&router.stats.protocol_errors, 1);
            let text = "no responders requires headers support".to_string();
            self.send(&ServerOp::Err(text.clone()));
            self.closing = Some(CloseReason::ProtocolError(text));
            return;
        }
        self.text_state().opts = opts;
    }

    /// Returns false when admission control refused the publish.
    fn publish_text(&mut self, p: Publish, router: &mut Router) -> bool {
        if p.subject == REPLAY_SUBJECT {
            self.replay_request(p, router);
            return true;
        }
        let opts = &self.text_state().opts;
        let (no_echo, no_responders) = (!opts.echo, opts.no_responders);
        let (priority, coalesce) = match tern_headers(p.headers.as_ref()) {
            Ok((priority, coalesce)) => (
                priority.unwrap_or(router.config.queues.text_priority),
                coalesce,
            ),
            Err(text) => {
                // Refused; the connection carries on.
                bump(&router.stats.protocol_errors, 1);
                self.send(&ServerOp::Err(text));
                return false;
            }
        };
        // The loop turn in which these bytes were read.
        let mut msg = Msg::new(p.subject, p.payload, self.id, self.last_activity);
        msg.reply = p.reply;
        msg.headers = p.headers;
        msg.no_echo = no_echo;
        msg.no_responders = no_responders;
        msg.priority = priority;
        msg.coalesce = coalesce;
        if !self.admit(&msg, router) {
            return false;
        }
        self.publish(msg, router);
        true
    }

    /// `PUB $TERN.REPLAY <inbox>` with a JSON body: catch-up for text clients. The shards
    /// the filter can match in publish every matching record they hold to the inbox, with
    /// its subject, shard, sequence and time as `Tern-*` headers, then one end marker each
    /// (`docs/protocol-text.md`). A request that cannot be served gets a `400` status
    /// message on the inbox saying why.
    fn replay_request(&mut self, p: Publish, router: &mut Router) {
        let Some(inbox) = p.reply else {
            self.send(&ServerOp::Err(
                "Replay requests need a reply subject".to_string(),
            ));
            return;
        };
        if !self.text_state().opts.headers {
            self.send(&ServerOp::Err(
                "Replay requires headers support".to_string(),
            ));
            return;
        }
        match parse_replay(&p.payload) {
            Ok((filter, start)) => {
                let shards = router.replay(ReplayRequest {
                    filter,
                    inbox,
                    start,
                    shards: 0,
                });
                self.barrier.touch(shards);
            }
            Err(reason) => {
                let block = format!("NATS/1.0 400 Bad Request\r\nTern-Error: {reason}\r\n\r\n");
                let mut msg = Msg::new(inbox, Bytes::new(), self.id, self.last_activity);
                msg.headers = Some(Bytes::from(block));
                msg.ephemeral = true;
                self.publish(msg, router);
            }
        }
    }

    /// Returns false when admission control refused the subscription.
    fn subscribe_text(&mut self, s: Subscribe, router: &mut Router) -> bool {
        let sid = Sid::Text(s.sid);
        if self.has_sid(&sid) {
            // As nats-server does: a second SUB with a sid in use changes nothing.
            return true;
        }
        if self.at_subscription_limit(router) {
            // nats-server's text, which NATS clients treat as an error that does not end
            // the connection.
            self.refuse_text("maximum subscriptions exceeded");
            return false;
        }
        let bounds = Bounds {
            messages: router.config.queues.sub_queue_messages,
            bytes: router.config.queues.sub_queue_bytes,
        };
        self.add_sub(
            sid,
            s.subject,
            s.queue.as_ref(),
            None,
            bounds,
            false,
            router,
        );
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
/// `"from_seq": N` (literal subjects), `"since_ns": NS`, `"last": N`; with none, everything
/// held. Errors are the text of the `400` reply.
fn parse_replay(body: &[u8]) -> Result<(Bytes, ReplayStart), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        subject: String,
        from_seq: Option<u64>,
        since_ns: Option<u64>,
        last: Option<u32>,
    }
    let r: Request =
        serde_json::from_slice(body).map_err(|e| format!("invalid replay request: {e}"))?;
    tern_protocol::subject::validate_filter(r.subject.as_bytes())
        .map_err(|e| format!("invalid subject: {e}"))?;
    let start = match (r.from_seq, r.since_ns, r.last) {
        (None, None, None) => ReplayStart::All,
        (Some(seq), None, None) => {
            if !tern_protocol::subject::is_literal(r.subject.as_bytes()) {
                return Err("from_seq needs a literal subject (one shard)".to_string());
            }
            ReplayStart::FromSeq(seq)
        }
        (None, Some(ns), None) => ReplayStart::Time(ns),
        (None, None, Some(n)) => ReplayStart::LastN(n),
        _ => return Err("give at most one of from_seq, since_ns, last".to_string()),
    };
    Ok((Bytes::from(r.subject), start))
}

//! What differs between the two wire protocols once a client's bytes are decoded: how the
//! server's side of the conversation is encoded, and what a connection's protocol says
//! about itself.
//!
//! Owns: the [`Wire`] trait, implemented once per protocol by that protocol's state
//! (`TextState` in `text.rs`, `BinaryState` in `binary.rs`), [`Proto`], a connection's
//! protocol, which implements it too by picking the one it holds (one match per call), and
//! [`Fields`], a delivery's fields as the common delivery reads them (`encode_copied`). The
//! session's steps that speak (`conn/mod.rs`, `queue.rs`, `presence.rs`, `access.rs`) are
//! handed a `Wire` and never ask which protocol it is; decoding and applying client input
//! is `protocol.rs`'s trait.
//!
//! Never: reads or writes a socket (what is said goes into the connection's outbound
//! buffer), decodes client input, or touches another connection.

use std::time::Instant;

use bytes::Bytes;
use tern_protocol::binary::ErrorCode;
use tern_protocol::text::ServerInfo;

use super::binary::BinaryState;
use super::text::TextState;
use super::{CloseReason, Sid};
use crate::mesh::{Msg, Stamp};
use crate::outbound::Outbound;
use crate::subqueue::DropLog;

/// A delivery's fields, borrowed: from a [`Msg`], or straight from a catch-up run's
/// record, with no `Msg` made for it (`Session::write_record`).
pub(super) struct Fields<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub priority: u8,
    pub stamp: Stamp,
    pub replayed: bool,
}

impl<'a> Fields<'a> {
    /// `msg`'s fields.
    #[inline]
    pub fn of(msg: &'a Msg) -> Fields<'a> {
        Fields {
            subject: &msg.subject,
            reply: msg.reply.as_deref(),
            headers: msg.headers.as_deref(),
            payload: &msg.payload,
            priority: msg.priority,
            stamp: msg.stamp,
            replayed: msg.replayed,
        }
    }
}

/// Which port a connection came in on, with that protocol's own state.
pub(super) enum Proto {
    Text(TextState),
    Binary(BinaryState),
}

/// A connection's protocol speaks as the protocol it is: each method is one match, so that
/// the per-delivery encode is a direct call the compiler can inline (an indirect one kept
/// the binary encoder from being inlined: 27 more instructions a delivery, measured with
/// callgrind).
macro_rules! each_protocol {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Proto::Text($p) => $e,
            Proto::Binary($p) => $e,
        }
    };
}

impl Wire for Proto {
    fn protocol(&self) -> &'static str {
        each_protocol!(self, p => p.protocol())
    }

    fn client(&self) -> ClientName {
        each_protocol!(self, p => p.client())
    }

    fn bytes_needed(&self) -> usize {
        each_protocol!(self, p => p.bytes_needed())
    }

    fn in_timed_handshake(&self) -> bool {
        each_protocol!(self, p => p.in_timed_handshake())
    }

    fn resumes(&self) -> bool {
        each_protocol!(self, p => p.resumes())
    }

    #[inline]
    fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
        sequence_headers: bool,
    ) -> Option<usize> {
        each_protocol!(self, p => p.encode_delivery(out, sid, msg, sequence_headers))
    }

    #[inline]
    fn encode_copied(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        d: &Fields<'_>,
        sequence_headers: bool,
    ) -> Option<usize> {
        each_protocol!(self, p => p.encode_copied(out, sid, d, sequence_headers))
    }

    fn drop_notice(&mut self, out: &mut Outbound, sid: &Sid, log: &DropLog) {
        each_protocol!(self, p => p.drop_notice(out, sid, log))
    }

    fn ack(&mut self, out: &mut Outbound, ack_id: u64, stamp: Stamp, duplicate: bool) -> bool {
        each_protocol!(self, p => p.ack(out, ack_id, stamp, duplicate))
    }

    fn gap(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        shard: u16,
        requested: u64,
        oldest: u64,
    ) -> bool {
        each_protocol!(self, p => p.gap(out, sid, shard, requested, oldest))
    }

    fn subscribed(&mut self, out: &mut Outbound, sid: u32, last_sequences: Vec<u64>) {
        each_protocol!(self, p => p.subscribed(out, sid, last_sequences))
    }

    fn ping(&mut self, out: &mut Outbound) {
        each_protocol!(self, p => p.ping(out))
    }

    fn pong(&mut self, out: &mut Outbound) {
        each_protocol!(self, p => p.pong(out))
    }

    fn refuse_publish(
        &mut self,
        out: &mut Outbound,
        ack_id: Option<u64>,
        code: ErrorCode,
        text: &str,
    ) {
        each_protocol!(self, p => p.refuse_publish(out, ack_id, code, text))
    }

    fn refuse_permission(&mut self, out: &mut Outbound, sid: Option<&Sid>, text: &str) {
        each_protocol!(self, p => p.refuse_permission(out, sid, text))
    }

    fn fail(&mut self, out: &mut Outbound, reason: &CloseReason, authenticating: bool) {
        each_protocol!(self, p => p.fail(out, reason, authenticating))
    }

    fn granted(&mut self, out: &mut Outbound, now: Instant) {
        each_protocol!(self, p => p.granted(out, now))
    }

    fn going_away(
        &mut self,
        out: &mut Outbound,
        info: &ServerInfo,
        deadline: Instant,
        now: Instant,
    ) -> bool {
        each_protocol!(self, p => p.going_away(out, info, deadline, now))
    }

    fn tls_required(&self) -> Bytes {
        each_protocol!(self, p => p.tls_required())
    }
}

/// How a client named itself (`CONNECT` or `HELLO`), for `/connz`.
#[derive(Debug, Default)]
pub(super) struct ClientName {
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
}

/// One wire protocol's side of the conversation. Every method that says something appends
/// it to `out` whole (a frame or a line), or says nothing where the protocol has no word
/// for it, and reports that where the caller needs to know.
pub(super) trait Wire {
    /// `"text"` or `"binary"` (`/connz`).
    fn protocol(&self) -> &'static str;

    /// How the client named itself.
    fn client(&self) -> ClientName;

    /// Bytes the decoder awaits beyond what it holds (an announced payload), so that a
    /// read makes room for them; 0 when it cannot tell.
    fn bytes_needed(&self) -> usize;

    /// The connection's handshake is under way and timed by the ping timer (the binary
    /// port before `WELCOME`); the text port times its handshake with its own deadlines
    /// (`text.rs`), and answers false.
    fn in_timed_handshake(&self) -> bool;

    /// A subscription's catch-up may resume from a position, so its first replayed
    /// sequence per shard is tracked (`binary::Starts`).
    fn resumes(&self) -> bool;

    /// One delivery of `msg` to subscription `sid`; returns its size on the wire, or
    /// `None` when the protocol cannot carry it (nothing is written then). The common
    /// delivery is [`Wire::encode_copied`]'s.
    fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
        sequence_headers: bool,
    ) -> Option<usize>;

    /// The common delivery: the whole frame copied into the outbound buffer (no header
    /// block to pass on, nothing to add to the message, a payload small enough to copy).
    /// Returns its size as `encode_delivery` does, or `None` with nothing written when
    /// the delivery is not that (`encode_delivery` then writes it, from a `Msg`).
    fn encode_copied(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        d: &Fields<'_>,
        sequence_headers: bool,
    ) -> Option<usize>;

    /// What subscription `sid`'s queue dropped.
    fn drop_notice(&mut self, out: &mut Outbound, sid: &Sid, log: &DropLog);

    /// A publish the client asked an acknowledgement for was routed; false where the
    /// protocol has no acknowledgements.
    fn ack(&mut self, out: &mut Outbound, ack_id: u64, stamp: Stamp, duplicate: bool) -> bool;

    /// A shard cannot replay part of what a resuming subscription asked for; false where
    /// subscriptions never resume.
    fn gap(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        shard: u16,
        requested: u64,
        oldest: u64,
    ) -> bool;

    /// Every shard a resuming subscription is registered in has told where it starts:
    /// `SUBSCRIBED` with the sequences of its first resume token. Only protocols whose
    /// subscriptions resume ([`Wire::resumes`]) are asked.
    fn subscribed(&mut self, out: &mut Outbound, sid: u32, last_sequences: Vec<u64>);

    fn ping(&mut self, out: &mut Outbound);

    fn pong(&mut self, out: &mut Outbound);

    /// A publish (or presence request) refused; the connection stays open. `ack_id` is the
    /// acknowledgement the client asked for, if any: the refusal answers it.
    fn refuse_publish(
        &mut self,
        out: &mut Outbound,
        ack_id: Option<u64>,
        code: ErrorCode,
        text: &str,
    );

    /// A publish, subscription or catch-up its user's permissions do not allow, in
    /// nats-server's words; the connection stays open.
    fn refuse_permission(&mut self, out: &mut Outbound, sid: Option<&Sid>, text: &str);

    /// Why the connection is being closed. `authenticating`: its credentials were not
    /// accepted yet.
    fn fail(&mut self, out: &mut Outbound, reason: &CloseReason, authenticating: bool);

    /// The handshake is done (no authentication, or it succeeded): what the protocol
    /// says then. `now` is the loop turn's instant.
    fn granted(&mut self, out: &mut Outbound, now: Instant);

    /// Lame duck mode began: the server closes the connection by `deadline`. `info` is
    /// this connection's `INFO` with `"ldm":true`. Returns true when something was said
    /// (a connection still in its handshake may be told later, or not at all).
    fn going_away(
        &mut self,
        out: &mut Outbound,
        info: &ServerInfo,
        deadline: Instant,
        now: Instant,
    ) -> bool;

    /// What a client that sent plain text to a TLS port is told, in its protocol.
    fn tls_required(&self) -> Bytes;
}

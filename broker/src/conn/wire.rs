//! What differs between the two wire protocols once a client's bytes are decoded: how the
//! server's side of the conversation is encoded, and what a connection's protocol says
//! about itself.
//!
//! Owns: the [`Wire`] trait, implemented once per protocol by that protocol's state
//! (`TextState` in `text.rs`, `BinaryState` in `binary.rs`), and [`Proto`], a connection's
//! protocol, which hands its `Wire` out. The connection's shared steps (`conn/mod.rs`,
//! `queue.rs`, `presence.rs`, `access.rs`) speak through the trait and never ask which
//! protocol it is; a protocol's own module (decoding client operations and applying them)
//! is the only place that knows.
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

/// Which port a connection came in on, with that protocol's own state.
pub(super) enum Proto {
    Text(TextState),
    Binary(BinaryState),
}

impl Proto {
    /// The connection's protocol, to speak through.
    pub(super) fn wire(&mut self) -> &mut dyn Wire {
        match self {
            Proto::Text(t) => t,
            Proto::Binary(b) => b,
        }
    }

    /// One delivery ([`Wire::encode_delivery`]), dispatched without an indirect call: the
    /// per-message path, where one would keep the encoder from being inlined (27 more
    /// instructions a binary delivery, measured with callgrind).
    #[inline]
    pub(super) fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
        sequence_headers: bool,
    ) -> Option<usize> {
        match self {
            Proto::Text(t) => t.encode_delivery(out, sid, msg, sequence_headers),
            Proto::Binary(b) => b.encode_delivery(out, sid, msg, sequence_headers),
        }
    }

    /// The connection's protocol, to ask about.
    pub(super) fn wire_ref(&self) -> &dyn Wire {
        match self {
            Proto::Text(t) => t,
            Proto::Binary(b) => b,
        }
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
    /// `None` when the protocol cannot carry it (nothing is written then).
    fn encode_delivery(
        &mut self,
        out: &mut Outbound,
        sid: &Sid,
        msg: &Msg,
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

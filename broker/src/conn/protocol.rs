//! The input side of a wire protocol: decoding what a client sent and applying it.
//!
//! Owns: the [`Protocol`] trait, implemented once per protocol by that protocol's state
//! (`TextState` in `text.rs`, `BinaryState` in `binary.rs`), and by [`Proto`], which picks
//! the connection's with one match per call. A protocol is handed its own state (`self`)
//! and the connection's [`Session`] as two borrows: it decodes with the first and applies
//! each operation through the session's shared steps (`admit`, `publish`, `add_sub`,
//! `unsubscribe`, `ping`...), handing itself to those that speak, as the [`Wire`] they say
//! it in. So no protocol asks which protocol it is, and none can be handed another's state.
//!
//! Never: reads or writes a socket (the bytes are in the session's read buffer already),
//! or reaches the broker other than through the [`Context`] it is given.

use std::time::Instant;

use super::wire::{Proto, Wire};
use super::{Context, Session};
use crate::config::Limits;

/// One wire protocol's decoding and applying of a client's input.
pub(super) trait Protocol: Wire {
    /// Decodes and applies every whole operation in the session's read buffer, as of this
    /// loop turn (`now`), until the connection closes, is throttled, or must wait (a full
    /// outbox, a credential check); counts each operation (`Session::count_op`).
    fn apply_buffered(&mut self, s: &mut Session, cx: &mut impl Context, now: Instant);

    /// The ping timer's check of input that has started but not finished (the text port's
    /// handshake and control-line deadlines): closes the connection, saying why, when a
    /// deadline has passed, and returns true then.
    fn input_expired(
        &mut self,
        s: &mut Session,
        now: Instant,
        limits: &Limits,
        cx: &mut impl Context,
    ) -> bool;
}

impl Protocol for Proto {
    fn apply_buffered(&mut self, s: &mut Session, cx: &mut impl Context, now: Instant) {
        match self {
            Proto::Text(t) => t.apply_buffered(s, cx, now),
            Proto::Binary(b) => b.apply_buffered(s, cx, now),
        }
    }

    fn input_expired(
        &mut self,
        s: &mut Session,
        now: Instant,
        limits: &Limits,
        cx: &mut impl Context,
    ) -> bool {
        match self {
            Proto::Text(t) => t.input_expired(s, now, limits, cx),
            Proto::Binary(b) => b.input_expired(s, now, limits, cx),
        }
    }
}

/// Each protocol driven alone: its own state and a bare [`Session`] whose read buffer the
/// test fills, with a [`FakeContext`](super::fake::FakeContext) for the broker. No `Conn`,
/// no `Proto`, no I/O layer: what the protocol says is taken from the session's
/// outbound queue, what it asked of the broker from the fake's records.
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::BytesMut;
    use tern_protocol::binary::{
        encode_client_frame, ClientFrame, Hello, Preface, Publish, ServerFrame, ServerFrameDecoder,
        Welcome,
    };

    use super::*;
    use crate::config::Config;
    use crate::conn::access::Access;
    use crate::conn::binary::BinaryState;
    use crate::conn::fake::FakeContext;
    use crate::conn::text::TextState;
    use crate::conn::{Accepted, CloseReason};
    use crate::mesh::ConnId;

    fn session(cx: &FakeContext) -> Session {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let accepted = Accepted {
            id: ConnId {
                worker: 0,
                slot: 3,
                gen: 1,
            },
            client_id: 9,
            peer,
            access: Access::open(0),
        };
        Session::new(accepted, cx.now)
    }

    /// What the session queued for the client, taken out.
    fn said(s: &mut Session) -> Vec<u8> {
        let mut out = Vec::new();
        while !s.out.is_empty() {
            s.out.write_to(&mut out).expect("a Vec takes everything");
        }
        out
    }

    #[test]
    fn text_applies_whole_operations_with_its_own_state_and_keeps_a_partial_one() {
        let mut cx = FakeContext::new(Config::default());
        let mut s = session(&cx);
        let mut t = TextState::new(&cx.config.limits);
        s.rbuf.extend_from_slice(
            b"CONNECT {\"verbose\":true}\r\nPUB a.b 2\r\nhi\r\nPING\r\nPUB c 5\r\nhe",
        );
        let now = cx.now;
        t.apply_buffered(&mut s, &mut cx, now);
        // CONNECT's options went to the protocol's state, and it answered in them.
        assert!(t.opts.verbose);
        assert_eq!(cx.published_subjects(), ["a.b"]);
        // The PING after a publish waits behind it: a barrier to the shard it went to.
        assert_eq!(said(&mut s), b"+OK\r\n+OK\r\n");
        let barriers = cx.barriers();
        assert_eq!(barriers.len(), 1, "{barriers:?}");
        let (_, _, token) = barriers[0];
        assert!(s.barrier_done(&mut t, token, &mut cx));
        assert_eq!(said(&mut s), b"PONG\r\n");
        assert_eq!(cx.published[0].payload.as_ref(), b"hi");
        // Three operations counted; the unfinished PUB waits in the session's buffer.
        assert_eq!(s.ops, 3);
        assert_eq!(s.rbuf.as_ref(), b"PUB c 5\r\nhe");
        // The rest of it completes the publish.
        s.rbuf.extend_from_slice(b"llo\r\n");
        t.apply_buffered(&mut s, &mut cx, now);
        assert_eq!(cx.published_subjects(), ["a.b", "c"]);
        assert_eq!(said(&mut s), b"+OK\r\n");
        assert!(s.rbuf.is_empty());
    }

    #[test]
    fn text_answers_a_fatal_error_in_its_words_and_closes_the_session() {
        let mut cx = FakeContext::new(Config::default());
        let mut s = session(&cx);
        let mut t = TextState::new(&cx.config.limits);
        s.rbuf.extend_from_slice(b"BOGUS\r\nPUB a 1\r\nx\r\n");
        let now = cx.now;
        t.apply_buffered(&mut s, &mut cx, now);
        let said = String::from_utf8(said(&mut s)).unwrap();
        assert!(said.starts_with("-ERR "), "{said}");
        assert!(matches!(s.closing, Some(CloseReason::ProtocolError(_))));
        // Nothing after the fatal error is applied.
        assert!(cx.published.is_empty());
    }

    #[test]
    fn binary_moves_its_own_handshake_on_and_answers_through_the_session() {
        let mut cx = FakeContext::new(Config::default());
        let mut s = session(&cx);
        let welcome = Welcome {
            log_epoch: 77,
            ..Welcome::default()
        };
        let mut b = BinaryState::new(&welcome, 9, &cx.config.limits);
        assert!(b.in_timed_handshake());
        let mut bytes = BytesMut::new();
        Preface::default().encode(&mut bytes);
        encode_client_frame(&ClientFrame::Hello(Hello::default()), &mut bytes).unwrap();
        let publish = Publish {
            subject: "x.y".into(),
            payload: "data".into(),
            ..Publish::default()
        };
        encode_client_frame(&ClientFrame::Publish(publish), &mut bytes).unwrap();
        s.rbuf.extend_from_slice(&bytes);
        let now = cx.now;
        b.apply_buffered(&mut s, &mut cx, now);
        assert!(!b.in_timed_handshake(), "WELCOME ends the handshake");
        let mut out = BytesMut::from(&said(&mut s)[..]);
        let mut decoder = ServerFrameDecoder::new(Default::default());
        match decoder.decode(&mut out).unwrap() {
            Some(ServerFrame::Welcome(w)) => {
                assert_eq!(w.client_id, 9);
                assert_eq!(w.log_epoch, 77);
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
        assert!(out.is_empty(), "nothing but WELCOME: {out:?}");
        assert_eq!(cx.published_subjects(), ["x.y"]);
        // HELLO and PUBLISH are operations; the preface is not.
        assert_eq!(s.ops, 2);
        assert!(s.rbuf.is_empty());
    }

    #[test]
    fn subscribed_is_said_only_by_the_protocol_whose_subscriptions_resume() {
        let cx = FakeContext::new(Config::default());
        let welcome = Welcome {
            log_epoch: 5,
            ..Welcome::default()
        };
        let mut s = session(&cx);
        let mut binary = Proto::Binary(BinaryState::new(&welcome, 9, &cx.config.limits));
        binary.subscribed(&mut s.out, 4, vec![10, 0]);
        let mut out = BytesMut::from(&said(&mut s)[..]);
        let mut decoder = ServerFrameDecoder::new(Default::default());
        match decoder.decode(&mut out).unwrap() {
            Some(ServerFrame::Subscribed(sub)) => {
                assert_eq!((sub.sid, sub.epoch), (4, 5));
                assert_eq!(sub.last_sequences, [10, 0]);
            }
            other => panic!("expected SUBSCRIBED, got {other:?}"),
        }
        // Text subscriptions never resume: nothing to say.
        let mut text = Proto::Text(TextState::new(&cx.config.limits));
        text.subscribed(&mut s.out, 4, vec![10, 0]);
        assert!(s.out.is_empty());
    }
}

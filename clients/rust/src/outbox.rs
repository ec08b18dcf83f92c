//! The outbox: encoded frames waiting for the socket, which is also the offline buffer.
//!
//! Owns: [`Outbox`], a FIFO of whole encoded frames ([`OutFrame`]) with the byte count of
//! the publishes in it, and the rules for what a publish may add: while connected up to the
//! write buffer bound (the publisher waits for room), while disconnected up to the offline
//! buffer bound (the publisher is refused with `OfflineBufferFull`, never silently dropped).
//! Control frames (subscribe, unsubscribe, ping, presence query) are small, never counted
//! and never refused.
//!
//! Invariants: frames leave in the order they entered; a frame is either wholly in the
//! outbox or wholly handed to the I/O thread. When a connection is lost, the frames the I/O
//! thread had not finished writing come back to the front, in order, and the control
//! frames are dropped (the reconnect re-sends every live subscription from the client's
//! table, before any buffered publish), but for flush pings and presence queries, whose
//! callers still wait for them. Acknowledged publishes with a message id that were
//! written but not acknowledged go back in front of those ([`Outbox::resend_front`]), in
//! the order they were written, as far as the offline buffer bound allows.
//!
//! Never: touches a socket or blocks; waiting for room is the caller's business.

use std::collections::VecDeque;

use bytes::Bytes;

/// What a frame in the outbox is, for the bookkeeping once it is written or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A `PUBLISH`; with the ack id it asked for, if any. Kept across reconnects.
    /// `resend`: it carries a message id and its caller waits for the ack, so once
    /// written it may be sent again if its connection is lost before the ack (the broker
    /// deduplicates by message id); see [`Outbox::resend_front`].
    Publish { ack_id: Option<u64>, resend: bool },
    /// A `PING`; with the id of the `flush` waiting for its `PONG`, or `None` for a
    /// heartbeat. Flush pings are kept across reconnects (they still order after the
    /// publishes before them), heartbeats are not.
    Ping { flush_id: Option<u64> },
    /// A `PRESENCE_QUERY` with the id its caller waits on. Kept across reconnects (the
    /// caller's timeout bounds the wait).
    PresenceQuery { id: u32 },
    /// Anything else: preface, `HELLO`, `SUBSCRIBE`, `UNSUBSCRIBE`, `PONG`. Dropped on a
    /// lost connection.
    Control,
}

impl FrameKind {
    /// True for the frames that survive a lost connection.
    pub(crate) fn survives_disconnect(self) -> bool {
        match self {
            FrameKind::Publish { .. } => true,
            FrameKind::Ping { flush_id } => flush_id.is_some(),
            FrameKind::PresenceQuery { .. } => true,
            FrameKind::Control => false,
        }
    }
}

/// One whole encoded frame.
#[derive(Debug, Clone)]
pub(crate) struct OutFrame {
    pub(crate) bytes: Bytes,
    pub(crate) kind: FrameKind,
}

impl OutFrame {
    pub(crate) fn control(bytes: Bytes) -> OutFrame {
        OutFrame {
            bytes,
            kind: FrameKind::Control,
        }
    }

    /// The bytes this frame counts against the bounds: publishes only.
    fn counted(&self) -> usize {
        match self.kind {
            FrameKind::Publish { .. } => self.bytes.len(),
            _ => 0,
        }
    }
}

/// Why a publish could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) buffered: usize,
    pub(crate) needed: usize,
    pub(crate) limit: usize,
}

/// The FIFO of frames waiting for the socket.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<OutFrame>,
    /// Bytes of the publishes in `frames`.
    bytes: usize,
}

impl Outbox {
    /// Bytes of the publishes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when no frame waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Adds a publish if it fits in `limit` bytes. A publish larger than `limit` fits an
    /// empty outbox only when `allow_oversized_when_empty` (the connected case: one large
    /// frame must be able to go out; offline, the bound is strict).
    pub(crate) fn push_publish(
        &mut self,
        frame: OutFrame,
        limit: usize,
        allow_oversized_when_empty: bool,
    ) -> Result<(), (OutFrame, Full)> {
        let needed = frame.counted();
        let fits = self.bytes.saturating_add(needed) <= limit
            || (allow_oversized_when_empty && self.bytes == 0);
        if !fits {
            let full = Full {
                buffered: self.bytes,
                needed,
                limit,
            };
            return Err((frame, full));
        }
        self.push(frame);
        Ok(())
    }

    /// Adds a frame whatever the bounds (control frames and flush pings).
    pub(crate) fn push(&mut self, frame: OutFrame) {
        self.bytes += frame.counted();
        self.frames.push_back(frame);
    }

    /// Takes every waiting frame, in order, leaving the outbox empty.
    pub(crate) fn take_all(&mut self) -> VecDeque<OutFrame> {
        self.bytes = 0;
        std::mem::take(&mut self.frames)
    }

    /// After a lost connection: puts the frames the I/O thread had not finished writing
    /// back in front of the waiting ones, in order, and drops every frame that does not
    /// survive a disconnect (control frames, heartbeat pings), here and in `unsent`.
    pub(crate) fn requeue_front(&mut self, unsent: impl IntoIterator<Item = OutFrame>) {
        let mut frames: VecDeque<OutFrame> = unsent
            .into_iter()
            .filter(|f| f.kind.survives_disconnect())
            .collect();
        frames.extend(
            std::mem::take(&mut self.frames)
                .into_iter()
                .filter(|f| f.kind.survives_disconnect()),
        );
        self.bytes = frames.iter().map(OutFrame::counted).sum();
        self.frames = frames;
    }

    /// After a lost connection, once [`requeue_front`](Self::requeue_front) has run: puts
    /// the identified publishes that were written on it and not acknowledged (`written`,
    /// in the order they were written) in front of everything, in that order, so the next
    /// connection sends them again right after its resubscriptions. They count against
    /// `limit` (the offline buffer bound) together with what waits already: the oldest
    /// go back as long as the total stays within it; from the first that does not fit on,
    /// none does, and those are returned (their callers are told the outcome is unknown,
    /// as for a publish without a message id).
    pub(crate) fn resend_front(
        &mut self,
        written: impl IntoIterator<Item = OutFrame>,
        limit: usize,
    ) -> Vec<OutFrame> {
        let mut again = Vec::new();
        let mut rest = Vec::new();
        let mut total = self.bytes;
        for frame in written {
            let fits = rest.is_empty() && total.saturating_add(frame.counted()) <= limit;
            if fits {
                total += frame.counted();
                again.push(frame);
            } else {
                rest.push(frame);
            }
        }
        for frame in again.into_iter().rev() {
            self.bytes += frame.counted();
            self.frames.push_front(frame);
        }
        rest
    }

    /// The kinds of the waiting frames, in order (tests and debugging).
    #[cfg(test)]
    pub(crate) fn kinds(&self) -> Vec<FrameKind> {
        self.frames.iter().map(|f| f.kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(n: usize, tag: u8) -> OutFrame {
        OutFrame {
            bytes: Bytes::from(vec![tag; n]),
            kind: FrameKind::Publish {
                ack_id: None,
                resend: false,
            },
        }
    }

    fn tags(frames: impl IntoIterator<Item = OutFrame>) -> Vec<u8> {
        frames.into_iter().map(|f| f.bytes[0]).collect()
    }

    #[test]
    fn offline_bound_is_strict_and_refuses_without_dropping() {
        let mut o = Outbox::default();
        o.push_publish(publish(40, 1), 100, false).unwrap();
        o.push_publish(publish(60, 2), 100, false).unwrap();
        let (back, full) = o.push_publish(publish(1, 3), 100, false).unwrap_err();
        assert_eq!(back.bytes[0], 3);
        assert_eq!(
            full,
            Full {
                buffered: 100,
                needed: 1,
                limit: 100
            }
        );
        // Control frames and flush pings are never refused and never counted.
        o.push(OutFrame::control(Bytes::from_static(&[9; 500])));
        o.push(OutFrame {
            bytes: Bytes::from_static(&[8; 6]),
            kind: FrameKind::Ping { flush_id: Some(1) },
        });
        assert_eq!(o.bytes(), 100);
        assert_eq!(tags(o.take_all()), [1, 2, 9, 8]);
        assert_eq!(o.bytes(), 0);
        assert!(o.is_empty());
        // A frame larger than the bound never fits offline, even alone.
        assert!(o.push_publish(publish(101, 4), 100, false).is_err());
        // Connected: one oversized frame may go when nothing waits.
        o.push_publish(publish(101, 4), 100, true).unwrap();
        assert!(o.push_publish(publish(1, 5), 100, true).is_err());
    }

    #[test]
    fn requeue_keeps_order_and_drops_control_frames() {
        let mut o = Outbox::default();
        o.push_publish(publish(10, 5), 1000, false).unwrap();
        o.push(OutFrame::control(Bytes::from_static(&[6])));
        o.push_publish(publish(10, 7), 1000, false).unwrap();
        let unsent = vec![
            OutFrame::control(Bytes::from_static(&[1])),
            publish(10, 2),
            OutFrame {
                bytes: Bytes::from_static(&[3]),
                kind: FrameKind::Ping { flush_id: None },
            },
            OutFrame {
                bytes: Bytes::from_static(&[4]),
                kind: FrameKind::Ping { flush_id: Some(3) },
            },
            OutFrame {
                bytes: Bytes::from_static(&[8]),
                kind: FrameKind::PresenceQuery { id: 2 },
            },
        ];
        o.requeue_front(unsent);
        assert_eq!(o.bytes(), 30);
        assert_eq!(
            o.kinds(),
            [
                FrameKind::Publish {
                    ack_id: None,
                    resend: false
                },
                FrameKind::Ping { flush_id: Some(3) },
                FrameKind::PresenceQuery { id: 2 },
                FrameKind::Publish {
                    ack_id: None,
                    resend: false
                },
                FrameKind::Publish {
                    ack_id: None,
                    resend: false
                },
            ]
        );
        assert_eq!(tags(o.take_all()), [2, 4, 8, 5, 7]);
    }

    #[test]
    fn requeued_frames_may_exceed_the_offline_bound_but_block_new_ones() {
        // Frames accepted while connected are never dropped on a disconnect, even when
        // they are more than the offline bound; new publishes wait for room.
        let mut o = Outbox::default();
        o.requeue_front(vec![publish(80, 1), publish(80, 2)]);
        assert_eq!(o.bytes(), 160);
        assert!(o.push_publish(publish(1, 3), 100, false).is_err());
        assert_eq!(tags(o.take_all()), [1, 2]);
        o.push_publish(publish(1, 3), 100, false).unwrap();
    }

    fn identified(n: usize, tag: u8) -> OutFrame {
        OutFrame {
            bytes: Bytes::from(vec![tag; n]),
            kind: FrameKind::Publish {
                ack_id: Some(u64::from(tag)),
                resend: true,
            },
        }
    }

    #[test]
    fn resent_publishes_go_first_in_order_within_the_offline_bound() {
        let mut o = Outbox::default();
        o.push_publish(publish(10, 7), 100, false).unwrap();
        o.requeue_front(vec![publish(10, 5)]);
        let rest = o.resend_front(vec![identified(30, 1), identified(30, 2)], 100);
        assert!(rest.is_empty());
        assert_eq!(o.bytes(), 80);
        assert_eq!(tags(o.take_all()), [1, 2, 5, 7]);

        // What does not fit is handed back, and nothing after it goes either (no gaps).
        let mut o = Outbox::default();
        o.push_publish(publish(10, 7), 100, false).unwrap();
        let rest = o.resend_front(
            vec![identified(40, 1), identified(60, 2), identified(5, 3)],
            100,
        );
        assert_eq!(tags(rest), [2, 3]);
        assert_eq!(o.bytes(), 50);
        assert_eq!(tags(o.take_all()), [1, 7]);
    }
}

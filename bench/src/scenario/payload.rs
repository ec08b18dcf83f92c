//! The payload every scenario publishes.
//!
//! Layout: byte 0 is the kind ([`WARMUP`] or [`MEASURED`]); bytes 1..9, when the payload
//! is at least [`STAMPED_LEN`] long, hold the message's *intended* send time as
//! little-endian nanoseconds since the run's origin `Instant` (shared by the publisher and
//! the subscribers, which live in the same process); the rest is filler. Warm-up messages
//! prove a subscription is live and are never counted.
//!
//! The `audience` scenario's payloads also say who sent them: bytes 9..13 hold the
//! publisher's id (`u32`) and bytes 13..21 its per-publisher sequence (`u64`), both
//! little-endian, when the payload is at least [`ORIGIN_LEN`] long ([`stamp_origin`],
//! [`origin`]). There the time is the actual send time, and kind [`JOIN`] marks the
//! message a user publishes to its own room to learn that its subscription is live.

/// A warm-up message: proves the subscription is registered; not counted.
pub const WARMUP: u8 = b'W';
/// A measured message.
pub const MEASURED: u8 = b'M';
/// A user's join message (`audience`): proves its own subscription is live; not counted.
pub const JOIN: u8 = b'J';
/// The shortest payload that carries a send time.
pub const STAMPED_LEN: usize = 9;
/// The shortest payload that carries a send time, a publisher id and a sequence.
pub const ORIGIN_LEN: usize = STAMPED_LEN + 4 + 8;

/// A payload of `size` bytes (at least 1) of kind `kind`, carrying `intended_ns` when it
/// is long enough.
pub fn build(size: usize, kind: u8) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(1)];
    p[0] = kind;
    p
}

/// Writes the intended send time into a payload built by [`build`]. A payload shorter
/// than [`STAMPED_LEN`] is left alone.
pub fn stamp(payload: &mut [u8], intended_ns: u64) {
    if let Some(slot) = payload.get_mut(1..STAMPED_LEN) {
        slot.copy_from_slice(&intended_ns.to_le_bytes());
    }
}

/// The kind of a received payload, if any.
pub fn kind(payload: &[u8]) -> Option<u8> {
    payload.first().copied()
}

/// The intended send time a payload carries, if it is long enough.
pub fn intended_ns(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(1..STAMPED_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Writes the publisher id and sequence into a payload built by [`build`]. A payload
/// shorter than [`ORIGIN_LEN`] is left alone.
pub fn stamp_origin(payload: &mut [u8], publisher: u32, seq: u64) {
    if let Some(slot) = payload.get_mut(STAMPED_LEN..ORIGIN_LEN) {
        slot[..4].copy_from_slice(&publisher.to_le_bytes());
        slot[4..].copy_from_slice(&seq.to_le_bytes());
    }
}

/// The publisher id and sequence a payload carries, if it is long enough.
pub fn origin(payload: &[u8]) -> Option<(u32, u64)> {
    let slot = payload.get(STAMPED_LEN..ORIGIN_LEN)?;
    let publisher = u32::from_le_bytes(slot[..4].try_into().ok()?);
    let seq = u64::from_le_bytes(slot[4..].try_into().ok()?);
    Some((publisher, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut p = build(16, MEASURED);
        stamp(&mut p, 123_456_789);
        assert_eq!(p.len(), 16);
        assert_eq!(kind(&p), Some(MEASURED));
        assert_eq!(intended_ns(&p), Some(123_456_789));
    }

    #[test]
    fn origins_round_trip() {
        let mut p = build(ORIGIN_LEN + 3, MEASURED);
        stamp(&mut p, 99);
        stamp_origin(&mut p, 7, 1 << 40);
        assert_eq!(origin(&p), Some((7, 1 << 40)));
        assert_eq!(intended_ns(&p), Some(99));
        assert_eq!(&p[ORIGIN_LEN..], b"xxx");
        let mut short = build(ORIGIN_LEN - 1, JOIN);
        stamp_origin(&mut short, 1, 1);
        assert_eq!(origin(&short), None);
    }

    #[test]
    fn short_payloads_carry_no_stamp() {
        let mut p = build(4, WARMUP);
        stamp(&mut p, 5);
        assert_eq!(p, b"Wxxx");
        assert_eq!(intended_ns(&p), None);
        assert_eq!(build(0, MEASURED), b"M");
        assert_eq!(kind(b""), None);
    }
}

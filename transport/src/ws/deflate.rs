//! permessage-deflate (RFC 7692): the negotiation, and one message's inflation and
//! deflation.
//!
//! Owns: reading the client's extension offers and choosing the one we accept
//! ([`negotiate`]); the answer, which is nats-server's: no context takeover in either
//! direction, so every message is compressed and inflated on its own and no window
//! survives between messages; the [`Inflater`] that turns a compressed message into
//! application bytes under the message limit, and the [`Deflater`] for outgoing messages.
//!
//! Never: lets a message inflate past the limit. Output is made in steps of at most
//! [`INFLATE_STEP`] bytes and counted before the next step, so a zip bomb costs at most
//! the limit plus one step, never what it claims to unpack to.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{TransportError, WsError};

/// The extension's name.
const EXTENSION: &str = "permessage-deflate";
/// The `Sec-WebSocket-Extensions` value we answer an accepted offer with (nats-server's).
pub(crate) const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// What a sender strips from the end of a compressed message and the receiver appends
/// back before inflating (RFC 7692, section 7.2.1): an empty stored block.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflated bytes made per step, before the message size is checked again.
pub(crate) const INFLATE_STEP: usize = 16 * 1024;

/// Whether one of the `Sec-WebSocket-Extensions` values offers permessage-deflate with
/// parameters we can honour. An offer is refused (and the next one tried) when it has an
/// unknown or repeated parameter, or a `server_max_window_bits` below 15 (the pure-Rust
/// deflater always uses a 32 KiB window). `client_max_window_bits` is fine: the client's
/// window is never bigger than the inflater's.
pub(crate) fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    header_values
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .any(acceptable_offer)
}

fn acceptable_offer(offer: &str) -> bool {
    let mut params = offer.split(';').map(str::trim);
    if !params
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
    {
        return false;
    }
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let (slot, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, value == Some("15")),
            "client_max_window_bits" => (
                3,
                value.is_none_or(|bits| bits.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b))),
            ),
            _ => return false,
        };
        if !ok || std::mem::replace(&mut seen[slot], true) {
            return false;
        }
    }
    true
}

/// Inflates one compressed message at a time (no context takeover).
pub(crate) struct Inflater {
    inner: Decompress,
    /// The message's deflate stream ended (a final block): the rest of it is ignored.
    ended: bool,
}

impl Inflater {
    pub(crate) fn new() -> Self {
        Self {
            inner: Decompress::new(false),
            ended: false,
        }
    }

    /// Inflates the next piece of a compressed message into `out`. `produced` counts the
    /// message's inflated bytes so far; past `max` the message is refused.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        produced: &mut usize,
        max: usize,
        flush: FlushDecompress,
    ) -> Result<(), WsError> {
        while !self.ended {
            // One byte past the limit is enough to know the message is too big.
            let room = (max + 1).saturating_sub(*produced).min(INFLATE_STEP);
            let start = out.len();
            out.resize(start + room, 0);
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self.inner.decompress(input, &mut out[start..], flush);
            let used = (self.inner.total_in() - in_before) as usize;
            let made = (self.inner.total_out() - out_before) as usize;
            out.truncate(start + made);
            let status = status.map_err(|_| WsError::Inflate)?;
            *produced += made;
            if *produced > max {
                return Err(WsError::MessageTooBig { max });
            }
            input = &input[used..];
            match status {
                Status::StreamEnd => self.ended = true,
                // All input taken and output not cut short: done for this piece.
                _ if input.is_empty() && made < room => break,
                // No progress possible (the inflater wants more input than there is).
                _ if used == 0 && made == 0 => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends a compressed message: inflates the stripped tail, then forgets the window.
    pub(crate) fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        produced: &mut usize,
        max: usize,
    ) -> Result<(), WsError> {
        let result = self.inflate(&TAIL, out, produced, max, FlushDecompress::Sync);
        self.inner.reset(false);
        self.ended = false;
        result
    }
}

/// Compresses one outgoing message at a time (no context takeover), at the fastest level
/// (nats-server uses `BestSpeed`).
pub(crate) struct Deflater {
    inner: Compress,
    /// The last message compressed; its capacity is reused.
    out: Vec<u8>,
}

impl Deflater {
    pub(crate) fn new() -> Self {
        Self {
            inner: Compress::new(Compression::fast(), false),
            out: Vec::new(),
        }
    }

    /// Compresses `message`; returns the frame payload (the tail stripped).
    pub(crate) fn compress(&mut self, mut message: &[u8]) -> Result<&[u8], TransportError> {
        self.out.clear();
        loop {
            self.out.reserve(message.len() / 2 + 64);
            let before = self.inner.total_in();
            self.inner
                .compress_vec(message, &mut self.out, FlushCompress::Sync)
                .map_err(|_| TransportError::Deflate)?;
            message = &message[(self.inner.total_in() - before) as usize..];
            // Done once everything is in and the sync flush fitted in the output.
            if message.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        self.inner.reset();
        if self.out.ends_with(&TAIL) {
            self.out.truncate(self.out.len() - TAIL.len());
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(values: &[&str]) -> bool {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn negotiation_accepts_the_offers_browsers_make() {
        assert!(offers(&["permessage-deflate; client_max_window_bits"]));
        assert!(offers(&["permessage-deflate"]));
        assert!(offers(&[
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ]));
        assert!(offers(&[
            "x-webkit-deflate-frame",
            "Permessage-Deflate; client_max_window_bits=15"
        ]));
    }

    #[test]
    fn negotiation_declines_what_it_cannot_honour() {
        assert!(!offers(&[]));
        assert!(!offers(&["x-webkit-deflate-frame"]));
        assert!(!offers(&["permessage-deflate; server_max_window_bits=10"]));
        assert!(!offers(&["permessage-deflate; unknown_param"]));
        assert!(!offers(&[
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
        ]));
        assert!(!offers(&["permessage-deflate; client_max_window_bits=20"]));
        // A declined offer, then an acceptable fallback in the same header.
        assert!(offers(&[
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ]));
    }

    #[test]
    fn a_message_round_trips_through_deflater_and_inflater() {
        let message = b"PUB chat.room 5\r\nhello\r\n".repeat(50);
        let mut deflater = Deflater::new();
        let payload = deflater.compress(&message).unwrap().to_vec();
        assert!(payload.len() < message.len() / 4);
        assert!(!payload.ends_with(&TAIL));
        let mut inflater = Inflater::new();
        let (mut out, mut produced) = (Vec::new(), 0);
        // In two pieces, as two frames would bring it.
        let (a, b) = payload.split_at(payload.len() / 2);
        for piece in [a, b] {
            inflater
                .inflate(
                    piece,
                    &mut out,
                    &mut produced,
                    1 << 20,
                    FlushDecompress::None,
                )
                .unwrap();
        }
        inflater
            .finish_message(&mut out, &mut produced, 1 << 20)
            .unwrap();
        assert_eq!(out, message);
        assert_eq!(produced, message.len());
        // No context survives: the same message again inflates alone.
        let payload = deflater.compress(&message).unwrap().to_vec();
        let (mut again, mut produced) = (Vec::new(), 0);
        inflater
            .inflate(
                &payload,
                &mut again,
                &mut produced,
                1 << 20,
                FlushDecompress::None,
            )
            .unwrap();
        inflater
            .finish_message(&mut again, &mut produced, 1 << 20)
            .unwrap();
        assert_eq!(again, message);
    }

    #[test]
    fn a_bomb_stops_one_step_past_the_limit() {
        let message = vec![0u8; 4 << 20];
        let payload = Deflater::new().compress(&message).unwrap().to_vec();
        let mut inflater = Inflater::new();
        let (mut out, mut produced) = (Vec::new(), 0);
        let max = 64 * 1024;
        let err = inflater
            .inflate(
                &payload,
                &mut out,
                &mut produced,
                max,
                FlushDecompress::None,
            )
            .unwrap_err();
        assert_eq!(err, WsError::MessageTooBig { max });
        assert!(
            out.capacity() <= 2 * (max + INFLATE_STEP),
            "{}",
            out.capacity()
        );
    }
}

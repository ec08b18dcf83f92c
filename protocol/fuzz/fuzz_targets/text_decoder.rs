//! Feeds arbitrary bytes through both text decoders, in two chunks split at a point derived
//! from the first byte, with small limits so that the limit paths are reached too.
//!
//! Checks what the decoders promise: no panic; the same results whether the bytes arrive
//! whole or split; and never asking the caller to hold more than
//! `max_control_line + max_payload + 2` bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_protocol::text::{ClientDecoder, DecodeError, Limits, ServerDecoder};

const LIMITS: Limits = Limits {
    max_control_line: 256,
    max_payload: 1024,
    max_subject_tokens: 4,
};

const BOUND: usize = LIMITS.max_control_line + LIMITS.max_payload + 2;

/// Decodes everything available after each chunk, up to and including the first fatal
/// error; the results as `Debug` text so both directions share this driver.
fn run<Op: std::fmt::Debug>(
    chunks: &[&[u8]],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<Op>, DecodeError>,
) -> Vec<String> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf) {
                Ok(Some(op)) => out.push(format!("{op:?}")),
                Ok(None) => {
                    assert!(buf.len() < BOUND, "holding {} bytes", buf.len());
                    break;
                }
                Err(e) => {
                    out.push(format!("{e:?}"));
                    if e.is_fatal() {
                        return out;
                    }
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let at = if rest.is_empty() {
        0
    } else {
        usize::from(first) * rest.len() / 255
    };
    let (a, b) = rest.split_at(at.min(rest.len()));

    let mut whole = ClientDecoder::new(LIMITS);
    let mut split = ClientDecoder::new(LIMITS);
    assert_eq!(
        run(&[rest], |buf| whole.decode(buf)),
        run(&[a, b], |buf| split.decode(buf)),
    );

    let mut whole = ServerDecoder::new(LIMITS);
    let mut split = ServerDecoder::new(LIMITS);
    assert_eq!(
        run(&[rest], |buf| whole.decode(buf)),
        run(&[a, b], |buf| split.decode(buf)),
    );
});

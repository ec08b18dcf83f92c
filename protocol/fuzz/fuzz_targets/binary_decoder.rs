//! Feeds arbitrary bytes through the binary preface decoder and both binary frame decoders,
//! in two chunks split at a point derived from the first byte, with small limits so that
//! the limit paths are reached too.
//!
//! Checks what the decoders promise: no panic; the same results whether the bytes arrive
//! whole or split; never asking the caller to hold more than `4 + max_frame_len` bytes; and
//! every frame decoded re-encodes to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_protocol::binary::{
    encode_client_frame, encode_server_frame, BinaryError, ClientFrameDecoder, Limits,
    Preface, ServerFrameDecoder,
};

const LIMITS: Limits = Limits {
    max_payload: 256,
    max_overhead: 64,
    max_subject_tokens: 4,
};

/// Decodes everything available after each chunk, up to and including the first fatal
/// error; the results as `Debug` text so both directions share this driver.
fn run<F: std::fmt::Debug>(
    chunks: &[&[u8]],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<F>, BinaryError>,
    mut check: impl FnMut(&F),
) -> Vec<String> {
    let bound = 4 + LIMITS.max_frame_len();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf) {
                Ok(Some(frame)) => {
                    check(&frame);
                    out.push(format!("{frame:?}"));
                }
                Ok(None) => {
                    assert!(buf.len() < bound, "holding {} bytes", buf.len());
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

    let mut buf = BytesMut::from(rest);
    if let Ok(Some(preface)) = Preface::decode(&mut buf) {
        let _ = preface.negotiate();
    }

    let client_check = |f: &_| {
        let mut wire = BytesMut::new();
        encode_client_frame(f, &mut wire).expect("a decoded frame encodes");
        let again = ClientFrameDecoder::new(LIMITS).decode(&mut wire);
        assert_eq!(again.as_ref().ok().and_then(Option::as_ref), Some(f));
    };
    let mut whole = ClientFrameDecoder::new(LIMITS);
    let mut split = ClientFrameDecoder::new(LIMITS);
    assert_eq!(
        run(&[rest], |buf| whole.decode(buf), client_check),
        run(&[a, b], |buf| split.decode(buf), client_check),
    );

    let server_check = |f: &_| {
        let mut wire = BytesMut::new();
        encode_server_frame(f, &mut wire).expect("a decoded frame encodes");
        let again = ServerFrameDecoder::new(LIMITS).decode(&mut wire);
        assert_eq!(again.as_ref().ok().and_then(Option::as_ref), Some(f));
    };
    let mut whole = ServerFrameDecoder::new(LIMITS);
    let mut split = ServerFrameDecoder::new(LIMITS);
    assert_eq!(
        run(&[rest], |buf| whole.decode(buf), server_check),
        run(&[a, b], |buf| split.decode(buf), server_check),
    );
});

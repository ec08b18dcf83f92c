//! Feeds arbitrary client bytes to a WebSocket transport after a valid upgrade request
//! that offers permessage-deflate (so compressed frames, the zip-bomb path and the
//! inflate step are reached), whole and then split in two at a point taken from the
//! first byte, with a small `max_message` so the size limits are reached too.
//!
//! Checks what the transport promises: no panic; whether the bytes arrive whole or split,
//! the same application bytes, answers and end (a failure, or the peer's close), where
//! input with two faults may fail on either first; one `read` never appends more than
//! `max_message` plus one inflate step; the server's output is always a sequence of
//! whole, unmasked frames.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tern_transport::{Transport, WsConfig, WsLimits};

const MAX_MESSAGE: usize = 4096;
/// `deflate::INFLATE_STEP`: what one inflate step may add past the limit check.
const INFLATE_STEP: usize = 16 * 1024;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";

fn config() -> Arc<WsConfig> {
    Arc::new(WsConfig {
        compression: true,
        limits: WsLimits {
            max_message: MAX_MESSAGE,
            ..WsLimits::default()
        },
        ..WsConfig::default()
    })
}

/// What a run ended with: the application bytes, the error's close code (or the peer's
/// close), and everything the server sent.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    app: Vec<u8>,
    end: Option<String>,
    sent: Vec<u8>,
}

fn run(chunks: &[&[u8]]) -> Run {
    let mut t = Transport::websocket(config());
    let mut app = Vec::new();
    let mut sent = Vec::new();
    let mut end = None;
    // Socket bytes the transport has not taken: they belong to the next call.
    let mut pending = Vec::new();
    'chunks: for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let before = app.len();
            match t.read(&pending, &mut app) {
                Ok(o) => {
                    assert!(
                        app.len() - before <= MAX_MESSAGE + INFLATE_STEP,
                        "one read appended {} bytes",
                        app.len() - before
                    );
                    pending.drain(..o.consumed);
                    if o.wants_write {
                        t.pending_socket_out(&mut sent).unwrap();
                    }
                    if let Some(closed) = o.peer_closed {
                        end = Some(format!("peer {closed:?}"));
                        break 'chunks;
                    }
                    if !o.again {
                        break;
                    }
                }
                Err(e) => {
                    let _ = t.pending_socket_out(&mut sent);
                    end = Some(format!("error {:?}", e.close_code()));
                    break 'chunks;
                }
            }
        }
    }
    Run { app, end, sent }
}

/// Walks the server's frames after its HTTP answer: each must be unmasked and whole.
/// Returns them with close reasons cut to their code (which of two faults in one message is
/// named first depends on where the reads were cut), or without the close frame when not
/// `keep_close`.
fn frames(sent: &[u8], keep_close: bool) -> Vec<u8> {
    let Some(head_end) = sent.windows(4).position(|w| w == b"\r\n\r\n") else {
        return sent.to_vec();
    };
    let mut at = head_end + 4;
    let mut out = sent[..at].to_vec();
    while at < sent.len() {
        assert!(at + 2 <= sent.len(), "a cut frame header");
        assert_eq!(sent[at + 1] & 0x80, 0, "a masked server frame");
        let (len, head) = match sent[at + 1] & 0x7f {
            126 => (u16::from_be_bytes([sent[at + 2], sent[at + 3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&sent[at + 2..at + 10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        assert!(at + head + len <= sent.len(), "a cut frame");
        if sent[at] & 0x0f == 8 && !keep_close {
            // Left out: which fault it names may differ.
        } else if sent[at] & 0x0f == 8 {
            out.push(sent[at]);
            out.extend_from_slice(&sent[at + head..at + head + len.min(2)]);
        } else {
            out.extend_from_slice(&sent[at..at + head + len]);
        }
        at += head + len;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = UPGRADE.to_vec();
    input.extend_from_slice(data);
    let whole = run(&[&input]);
    let split_at = UPGRADE.len() + data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (a, b) = input.split_at(split_at);
    let split = run(&[a, b]);
    let failed = |r: &Run| r.end.as_deref().is_some_and(|e| e.starts_with("error"));
    match (failed(&whole), failed(&split)) {
        (false, false) => {
            assert_eq!(whole.end, split.end);
            assert_eq!(frames(&whole.sent, true), frames(&split.sent, true));
            assert_eq!(whole.app, split.app);
        }
        (true, true) => {
            // Input with two faults (a message over the limit that is also not UTF-8, a
            // bad inflate and bad UTF-8) may fail on either first, depending on where the
            // reads were cut, and the session may have had more or less of the message
            // before (the codec streams payloads; it does not hold a message back until it
            // is whole). Everything before the failure is the same.
            assert_eq!(frames(&whole.sent, false), frames(&split.sent, false));
            let n = whole.app.len().min(split.app.len());
            assert_eq!(whole.app[..n], split.app[..n]);
        }
        _ => panic!("one failed and one did not: {:?} / {:?}", whole.end, split.end),
    }
});

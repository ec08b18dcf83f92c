//! The WebSocket transport never allocates past its bound, whatever the client sends:
//! random frames (valid or not, compressed or not) and zip bombs, measured by a counting
//! allocator. In its own test binary because the allocator is global.

mod common;
mod counting;

use std::sync::Arc;

use common::*;
use counting::peak_of;
use proptest::prelude::*;
use tern_transport::Transport;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// The largest message the tests allow.
const MAX_MESSAGE: usize = 64 * 1024;
/// What one connection may hold at its peak: the application bytes of one read (the budget
/// plus the message in progress, each at most `MAX_MESSAGE`), the inflater's state (a
/// 32 KiB window and its tables), its output steps, the upgrade request, and the Vec
/// doubling that may round each of these up. Measured peaks are about 175 KiB; without the
/// read budget, forty small bombs in one read reach 4 MiB.
const BOUND: isize = 384 * 1024;

/// Feeds everything as a caller does: reads until the input is used, the session
/// emptying its buffer between reads, stopping at the first error.
fn drive(input: &[u8]) {
    let mut t = Transport::websocket(Arc::new(deflate_config(MAX_MESSAGE)));
    let mut app_in = Vec::new();
    let mut socket_out = Vec::new();
    let mut rest = input;
    loop {
        let Ok(outcome) = t.read(rest, &mut app_in) else {
            break;
        };
        rest = &rest[outcome.consumed..];
        app_in.clear();
        t.pending_socket_out(&mut socket_out).unwrap();
        socket_out.clear();
        if !outcome.again {
            break;
        }
    }
}

/// One frame of random shape: any opcode and flags, masked or not, any payload, or a
/// compressed message that inflates to `bomb` zero bytes.
#[derive(Debug, Clone)]
enum RandomFrame {
    Raw {
        first_byte: u8,
        masked: bool,
        payload: Vec<u8>,
    },
    Bomb {
        megabytes: usize,
        fin: bool,
    },
}

fn random_frame() -> impl Strategy<Value = RandomFrame> {
    prop_oneof![
        8 => (any::<u8>(), proptest::bool::weighted(0.95), proptest::collection::vec(any::<u8>(), 0..700))
            .prop_map(|(first_byte, masked, payload)| RandomFrame::Raw { first_byte, masked, payload }),
        1 => (1usize..8, any::<bool>()).prop_map(|(megabytes, fin)| RandomFrame::Bomb { megabytes, fin }),
    ]
}

fn encode(frames: &[RandomFrame]) -> Vec<u8> {
    let mut input = upgrade_request("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    for frame in frames {
        match frame {
            RandomFrame::Raw {
                first_byte,
                masked,
                payload,
            } => {
                let mut bytes = client_frame(*first_byte, payload, KEY);
                if !masked {
                    bytes[1] &= 0x7f;
                }
                input.extend(bytes);
            }
            RandomFrame::Bomb { megabytes, fin } => {
                let bomb = compress(&vec![0; megabytes << 20]);
                let fin = if *fin { FIN } else { 0 };
                input.extend(client_frame(fin | RSV1 | BINARY, &bomb, KEY));
            }
        }
    }
    input
}

#[test]
fn a_zip_bomb_allocates_no_more_than_the_bound() {
    let input = encode(&[RandomFrame::Bomb {
        megabytes: 64,
        fin: true,
    }]);
    let peak = peak_of(|| drive(&input));
    assert!(peak <= BOUND, "peak {peak} bytes");
}

#[test]
fn many_small_bombs_in_one_read_allocate_no_more_than_the_bound() {
    // Each inflates to just under the limit: valid messages, 2.5 MiB in all.
    let frame = client_frame(FIN | RSV1 | BINARY, &compress(&[7; MAX_MESSAGE - 1]), KEY);
    let mut input = upgrade_request("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    input.extend(frame.repeat(40));
    let peak = peak_of(|| drive(&input));
    assert!(peak <= BOUND, "peak {peak} bytes");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_frames_allocate_no_more_than_the_bound(frames in proptest::collection::vec(random_frame(), 1..12)) {
        let input = encode(&frames);
        let peak = peak_of(|| drive(&input));
        prop_assert!(peak <= BOUND, "peak {} bytes", peak);
    }
}

//! Property tests on arbitrary and near-valid byte streams: no panics, the same results
//! whatever the chunking, and the buffering bound.

#[path = "common.rs"]
mod common;

use common::*;
use proptest::prelude::*;
use tern_protocol::text::{ClientDecoder, Limits, ServerDecoder};

/// Streams built from protocol fragments, valid operations and random bytes, so that the
/// decoders get deep into their states rather than failing on the first byte.
fn near_valid_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            2 => client_op().prop_map(|op| encode_client(&[op])),
            2 => server_op().prop_map(|op| encode_server(&[op])),
            2 => prop::collection::vec(any::<u8>(), 0..6),
            1 => prop::sample::select(vec![
                &b"PUB "[..], b"HPUB ", b"SUB ", b"UNSUB ", b"PING", b"PONG", b"CONNECT ",
                b"MSG ", b"HMSG ", b"INFO ", b"+OK", b"-ERR ", b"pub", b"\r\n", b"\n", b"\r",
                b" ", b"\t", b"foo", b"a.*", b">", b"..", b"{}", b"NATS/1.0", b"\r\n\r\n",
            ])
            .prop_map(<[u8]>::to_vec),
            1 => (0u32..200).prop_map(|n| n.to_string().into_bytes()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (1usize..48, 0usize..48).prop_map(|(max_control_line, max_payload)| Limits {
        max_control_line,
        max_payload,
    })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![small_limits(), Just(Limits::default())]
}

proptest! {
    #[test]
    fn client_near_valid_same_whole_or_split(
        bytes in near_valid_stream(),
        points in prop::collection::vec(any::<usize>(), 0..16),
        limits in limits(),
    ) {
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[bytes.clone()]);
        let split = feed(&mut ClientDecoder::new(limits), limits, &split_at_points(&bytes, &points));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn server_near_valid_same_whole_or_split(
        bytes in near_valid_stream(),
        points in prop::collection::vec(any::<usize>(), 0..16),
        limits in limits(),
    ) {
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[bytes.clone()]);
        let split = feed(&mut ServerDecoder::new(limits), limits, &split_at_points(&bytes, &points));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn random_bytes_same_whole_or_split(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        points in prop::collection::vec(any::<usize>(), 0..16),
        limits in limits(),
    ) {
        let chunks = split_at_points(&bytes, &points);
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[bytes.clone()]);
        let split = feed(&mut ClientDecoder::new(limits), limits, &chunks);
        prop_assert_eq!(whole, split);
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[bytes.clone()]);
        let split = feed(&mut ServerDecoder::new(limits), limits, &chunks);
        prop_assert_eq!(whole, split);
    }

    /// Byte by byte with small limits: `feed` asserts after every `Ok(None)` that the
    /// buffer is below `max_control_line + max_payload + 2`, so an error (or an operation)
    /// must arrive before the buffer grows past it.
    #[test]
    fn bounded_buffering_byte_by_byte(
        bytes in prop_oneof![
            near_valid_stream(),
            prop::collection::vec(any::<u8>(), 0..256),
        ],
        limits in small_limits(),
    ) {
        let chunks: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
        feed(&mut ClientDecoder::new(limits), limits, &chunks);
        feed(&mut ServerDecoder::new(limits), limits, &chunks);
    }
}

#[test]
fn endless_line_is_refused_at_the_limit() {
    let limits = Limits {
        max_control_line: 64,
        max_payload: 64,
    };
    let chunks: Vec<Vec<u8>> = (0..1000).map(|_| b"PUB foo".to_vec()).collect();
    let out = feed(&mut ClientDecoder::new(limits), limits, &chunks);
    assert_eq!(
        out,
        vec![Err(tern_protocol::text::DecodeError::ControlLineTooLong {
            max: 64
        })]
    );
}

#[test]
fn announced_oversize_payload_is_refused_before_it_arrives() {
    let limits = Limits {
        max_control_line: 64,
        max_payload: 16,
    };
    let mut chunks = vec![b"PUB foo 1000000\r\n".to_vec()];
    chunks.extend((0..100).map(|_| vec![b'x'; 100]));
    let out = feed(&mut ClientDecoder::new(limits), limits, &chunks);
    assert_eq!(
        out,
        vec![Err(tern_protocol::text::DecodeError::PayloadTooLarge {
            size: 1_000_000,
            max: 16
        })]
    );
}

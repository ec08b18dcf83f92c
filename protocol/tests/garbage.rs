//! Property tests on arbitrary and near-valid byte streams: no panics, the same results
//! whatever the chunking, and the buffering bound.

mod common;

use bytes::BytesMut;
use common::*;
use proptest::prelude::*;
use tern_protocol::text::{ClientDecoder, DecodeError, Limits, ServerDecoder};

/// Streams built from protocol fragments, valid operations of one direction and random
/// bytes, so that the decoders get deep into their states rather than failing on the first
/// byte.
fn near_valid_stream(
    valid_op: BoxedStrategy<Vec<u8>>,
    server: bool,
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => valid_op,
            4 => control_line_with_sizes(server),
            3 => frame_with_odd_end(server),
            1 => prop::collection::vec(any::<u8>(), 0..4),
            2 => prop::sample::select(vec![
                &b"PUB "[..], b"HPUB ", b"SUB ", b"UNSUB ", b"PING", b"PONG", b"CONNECT ",
                b"MSG ", b"HMSG ", b"INFO ", b"+OK", b"-ERR ", b"pub", b"\r\n", b"\n", b"\r",
                b"\rx", b" ", b"\t", b"foo", b"a.*", b">", b"..", b"{}", b"NATS/1.0",
                b"\r\n\r\n",
            ])
            .prop_map(<[u8]>::to_vec),
            1 => (0u32..200).prop_map(|n| n.to_string().into_bytes()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    near_valid_stream(
        client_op().prop_map(|op| encode_client(&[op])).boxed(),
        false,
    )
}

fn server_stream() -> impl Strategy<Value = Vec<u8>> {
    near_valid_stream(
        server_op().prop_map(|op| encode_server(&[op])).boxed(),
        true,
    )
}

/// Payload-announcing control lines with small, arbitrary sizes (header size possibly above
/// the total), odd subjects and either line end: what follows is read as their payload.
fn control_line_with_sizes(server: bool) -> impl Strategy<Value = Vec<u8>> {
    let ops = if server {
        vec!["MSG", "HMSG", "hmsg", "msg"]
    } else {
        vec!["PUB", "HPUB", "hpub", "pub"]
    };
    (
        prop::sample::select(ops),
        prop::sample::select(vec!["foo", "a.b", "a.*", "..", ">", "x y"]),
        prop::option::of(prop::sample::select(vec!["r", "r.*", "_INBOX.1"])),
        0usize..24,
        0usize..24,
        prop::sample::select(vec!["\r\n", "\n"]),
    )
        .prop_map(|(op, subject, reply, a, b, eol)| {
            let op_upper = op.to_ascii_uppercase();
            let mut line = format!("{op} {subject}");
            if op_upper.ends_with("MSG") {
                line.push_str(" 1");
            }
            if let Some(reply) = reply {
                line.push(' ');
                line.push_str(reply);
            }
            if op_upper.starts_with('H') {
                line.push_str(&format!(" {a} {b}"));
            } else {
                line.push_str(&format!(" {a}"));
            }
            line.push_str(eol);
            line.into_bytes()
        })
}

/// A payload-announcing line followed by exactly that many bytes and then a line end, a
/// part of one, or something else.
fn frame_with_odd_end(server: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..12),
        prop::sample::select(vec![
            &b"\r\n"[..],
            b"\n",
            b"\r",
            b"\rx",
            b"x",
            b"",
            b"\r\r\n",
        ]),
    )
        .prop_map(move |(payload, end)| {
            let line = if server {
                format!("MSG foo 1 {}\r\n", payload.len())
            } else {
                format!("PUB foo {}\r\n", payload.len())
            };
            [line.as_bytes(), &payload, end].concat()
        })
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (1usize..48, 0usize..48, 1usize..4).prop_map(
        |(max_control_line, max_payload, max_subject_tokens)| Limits {
            max_control_line,
            max_payload,
            max_subject_tokens,
        },
    )
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![small_limits(), Just(Limits::default())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn client_near_valid_same_whole_or_split(
        bytes in client_stream(),
        points in prop::collection::vec(any::<usize>(), 0..16),
        limits in limits(),
    ) {
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[&bytes]);
        let split = feed(&mut ClientDecoder::new(limits), limits, &split_at_points(&bytes, &points));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn server_near_valid_same_whole_or_split(
        bytes in server_stream(),
        points in prop::collection::vec(any::<usize>(), 0..16),
        limits in limits(),
    ) {
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[&bytes]);
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
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[&bytes]);
        let split = feed(&mut ClientDecoder::new(limits), limits, &chunks);
        prop_assert_eq!(whole, split);
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[&bytes]);
        let split = feed(&mut ServerDecoder::new(limits), limits, &chunks);
        prop_assert_eq!(whole, split);
    }

    /// Byte by byte with small limits: the same results as whole, and `feed` asserts after
    /// every `Ok(None)` that the buffer is below `max_control_line + max_payload + 2`, so an
    /// error (or an operation) must arrive before the buffer grows past it.
    #[test]
    fn client_byte_by_byte(
        bytes in prop_oneof![client_stream(), prop::collection::vec(any::<u8>(), 0..256)],
        limits in limits(),
    ) {
        let chunks: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[&bytes]);
        prop_assert_eq!(feed(&mut ClientDecoder::new(limits), limits, &chunks), whole);
    }

    /// The same for the server direction.
    #[test]
    fn server_byte_by_byte(
        bytes in prop_oneof![server_stream(), prop::collection::vec(any::<u8>(), 0..256)],
        limits in limits(),
    ) {
        let chunks: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[&bytes]);
        prop_assert_eq!(feed(&mut ServerDecoder::new(limits), limits, &chunks), whole);
    }
}

/// The client's operation names, and the server's.
const CLIENT_NAMES: [&str; 10] = [
    "CONNECT", "PUB", "HPUB", "SUB", "UNSUB", "PING", "PONG", "INFO", "+OK", "-ERR",
];
const SERVER_NAMES: [&str; 7] = ["INFO", "MSG", "HMSG", "+OK", "-ERR", "PING", "PONG"];

/// True when `token` is a case-insensitive prefix of one of `names`.
fn prefix_of_a_name(token: &[u8], names: &[&str]) -> bool {
    names.iter().any(|n| {
        n.as_bytes()
            .get(..token.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(token))
    })
}

/// The start of an operation name (1 byte to all of it, in any case), then a byte that
/// cannot continue any name: not whitespace, not a line end, not a letter that some name
/// has next.
fn name_then_wrong_byte(names: &'static [&'static str]) -> impl Strategy<Value = (Vec<u8>, u8)> {
    (
        prop::sample::select(names.to_vec()),
        any::<prop::sample::Index>(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(name, cut, lower, wrong)| {
            let len = 1 + cut.index(name.len());
            let mut start = name.as_bytes()[..len].to_vec();
            if lower {
                start.make_ascii_lowercase();
            }
            (start, wrong)
        })
        .prop_filter("a byte that cannot continue", move |(start, wrong)| {
            let mut next = start.clone();
            next.push(*wrong);
            !matches!(*wrong, b' ' | b'\t' | b'\r' | b'\n') && !prefix_of_a_name(&next, names)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Slowloris: a line whose first byte cannot start any operation is refused at that
    /// byte, whatever follows, without waiting for a line end.
    #[test]
    fn garbage_is_refused_at_its_first_byte(
        first in any::<u8>().prop_filter("not a possible start", |b| {
            !matches!(*b, b' ' | b'\t' | b'\r' | b'\n') && !prefix_of_a_name(&[*b], &CLIENT_NAMES)
        }),
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&[first][..]);
        prop_assert_eq!(dec.decode(&mut buf), Err(DecodeError::UnknownOperation));
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&[&[first][..], &rest].concat()[..]);
        prop_assert_eq!(dec.decode(&mut buf), Err(DecodeError::UnknownOperation));
    }

    /// The start of a name waits for more; one byte that cannot continue it is refused at
    /// once. Leading whitespace changes nothing.
    #[test]
    fn a_name_gone_wrong_is_refused_at_the_wrong_byte(
        (start, wrong) in name_then_wrong_byte(&CLIENT_NAMES),
        indent in prop::sample::select(vec!["", " ", "\t ", "\r\n", "\n  \r\n"]),
    ) {
        let mut dec = ClientDecoder::new(Limits::default());
        let mut buf = BytesMut::from(indent.as_bytes());
        buf.extend_from_slice(&start);
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
        prop_assert!(dec.in_control_line(&buf));
        buf.extend_from_slice(&[wrong]);
        prop_assert_eq!(dec.decode(&mut buf), Err(DecodeError::UnknownOperation));
    }

    /// The same for what a server sends.
    #[test]
    fn a_server_name_gone_wrong_is_refused_at_the_wrong_byte(
        (start, wrong) in name_then_wrong_byte(&SERVER_NAMES),
    ) {
        let mut dec = ServerDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&start[..]);
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[wrong]);
        prop_assert_eq!(dec.decode(&mut buf), Err(DecodeError::UnknownOperation));
    }
}

#[test]
fn endless_line_is_refused_at_the_limit() {
    let limits = Limits {
        max_control_line: 64,
        max_payload: 64,
        ..Limits::default()
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
        ..Limits::default()
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

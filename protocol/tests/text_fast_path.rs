//! Property tests for the client decoder's one-pass `PUB` line: streams of lines shaped
//! like the common `PUB <subject> [reply] <size>\r\n` and its near misses decode the same
//! whole (where the one-pass read takes every line it can) as fed a byte at a time or in
//! random chunks (where a line is only ever read by the general parse, once its line end
//! has arrived), limits and errors included.

mod common;

use common::*;
use proptest::prelude::*;
use tern_protocol::text::{ClientDecoder, Limits};

/// A subject or reply as the one-pass read may meet it: plain tokens, tokens that start
/// with a digit, wildcards, empty tokens, a tab.
fn subjectish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "foo", "9", "1x", "_INBOX", "$SYS", "*", ">", "", "a\tb",
        ]),
        1..5,
    )
    .prop_map(|tokens| tokens.join("."))
}

/// One `PUB` line (near the common shape) and a payload of about the announced size.
fn pub_op() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["PUB ", "PUB  ", "pub ", "PUB\t", " PUB "]),
        subjectish(),
        prop::option::of(subjectish()),
        prop::sample::select(vec![" ", " ", " ", "  ", "\t"]),
        0usize..20,
        prop::sample::select(vec!["", "", "", "0", "x", "99999999999999999999999"]),
        prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n", "\r\r\n", " \r\n"]),
        -1i64..2,
        prop::sample::select(vec![&b"\r\n"[..], b"\r\n", b"\n", b"\r", b"x"]),
    )
        .prop_map(
            |(op, subject, reply, sep, size, size_odd, eol, payload_delta, end)| {
                let mut line = format!("{op}{subject}");
                if let Some(reply) = reply {
                    line.push(' ');
                    line.push_str(&reply);
                }
                line.push_str(sep);
                line.push_str(size_odd);
                line.push_str(&size.to_string());
                line.push_str(eol);
                let payload = vec![b'p'; (size as i64 + payload_delta).max(0) as usize];
                [line.as_bytes(), &payload, end].concat()
            },
        )
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => pub_op(),
            1 => prop::sample::select(vec![&b"PING\r\n"[..], b"\r\n", b"PUB", b"P"])
                .prop_map(<[u8]>::to_vec),
        ],
        1..12,
    )
    .prop_map(|ops| ops.concat())
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        (8usize..40, 0usize..24, 1usize..4).prop_map(|(c, p, t)| Limits {
            max_control_line: c,
            max_payload: p,
            max_subject_tokens: t,
        }),
        Just(Limits::default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn one_pass_pub_lines_decode_as_the_general_parse_does(
        bytes in stream(),
        points in prop::collection::vec(any::<usize>(), 0..8),
        limits in limits(),
    ) {
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[&bytes]);
        let bytewise: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
        let general = feed(&mut ClientDecoder::new(limits), limits, &bytewise);
        prop_assert_eq!(&whole, &general);
        let split = feed(&mut ClientDecoder::new(limits), limits, &split_at_points(&bytes, &points));
        prop_assert_eq!(&whole, &split);
    }
}

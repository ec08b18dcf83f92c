//! Property tests for the binary codec: every valid frame round-trips in both directions;
//! a stream of frames decodes to the same frames however it is split; arbitrary and
//! near-valid bytes never panic, give the same results whole or split up to the first fatal
//! error, and never make a decoder ask for more than `4 + max_frame_len` bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tern_protocol::binary::{
    encode_client_frame, encode_message, encode_message_head, encode_server_frame, AckResult, Auth,
    BinaryError, Challenge, ClientFrame, ClientFrameDecoder, DropNotice, EncodeError, ErrorCode,
    ErrorFrame, GapNotice, GoAway, Hello, Limits, Member, Message, MessageHead, Presence,
    PresenceBody, PresenceJoin, PresenceQuery, Publish, PublishAck, ResumeToken, SequenceRange,
    ServerFrame, ServerFrameDecoder, StartPosition, Subscribe, Unsubscribe, Welcome,
};

fn literal_token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_$*>-]{1,6}".prop_filter("literal", |t| t != "*" && t != ">")
}

fn subject() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(literal_token(), 1..4).prop_map(|t| Bytes::from(t.join(".")))
}

fn filter() -> impl Strategy<Value = Bytes> {
    (
        prop::collection::vec(
            prop_oneof![4 => literal_token(), 1 => Just("*".to_string())],
            1..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut t, full)| {
            if full {
                t.push(">".into());
            }
            Bytes::from(t.join("."))
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn nonempty(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..max).prop_map(Bytes::from)
}

fn headers() -> impl Strategy<Value = Bytes> {
    bytes(24).prop_map(|b| Bytes::from([&b"NATS/1.0"[..], &b].concat()))
}

fn start() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Live),
        (any::<u64>(), prop::collection::vec(any::<u64>(), 0..6)).prop_map(
            |(epoch, last_sequences)| StartPosition::Resume(ResumeToken {
                epoch,
                last_sequences
            })
        ),
        any::<u64>().prop_map(StartPosition::Time),
        any::<u32>().prop_map(StartPosition::LastN),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        1 => (
            (bytes(8), bytes(8), any::<(bool, bool)>()),
            (
                prop::option::of(bytes(8)),
                prop::option::of((bytes(8), bytes(8))),
                prop::option::of(bytes(8))
            )
        )
            .prop_map(
                |((client_name, client_version, (echo, no_responders)), (auth_token, user_pass, nkey))| {
                    ClientFrame::Hello(Hello {
                        client_name,
                        client_version,
                        echo,
                        no_responders,
                        auth_token,
                        user: user_pass.as_ref().map(|(u, _)| u.clone()),
                        pass: user_pass.map(|(_, p)| p),
                        nkey,
                    })
                }
            ),
        1 => (prop::option::of(bytes(8)), prop::option::of(bytes(8)))
            .prop_filter("AUTH carries something", |(t, s)| t.is_some() || s.is_some())
            .prop_map(|(token, signature)| ClientFrame::Auth(Auth { token, signature })),
        4 => (
            (subject(), prop::option::of(subject()), prop::option::of(headers()), 0u8..=7),
            (
                prop::option::of(nonempty(8)),
                prop::option::of(nonempty(8)),
                any::<Option<u64>>(),
                bytes(40),
            ),
        )
            .prop_map(
                |((subject, reply, headers, priority), (message_id, coalescing_key, ack_id, payload))| {
                    ClientFrame::Publish(Publish {
                        subject,
                        reply,
                        headers,
                        priority,
                        message_id,
                        coalescing_key,
                        ack_id,
                        payload,
                    })
                }
            ),
        2 => (
            any::<u32>(),
            filter(),
            prop::option::of(subject()),
            start(),
            any::<(bool, u32, u32, bool)>(),
            prop::option::of((bytes(24), prop::option::of(nonempty(12)))),
        )
            .prop_map(|(sid, subject, queue, start, (lossless, m, b, events), presence)| {
                ClientFrame::Subscribe(Subscribe {
                    sid,
                    subject,
                    queue,
                    start,
                    lossless,
                    max_queue_messages: m,
                    max_queue_bytes: b,
                    presence: presence.map(|(info, member_token)| PresenceJoin {
                        info,
                        member_token,
                    }),
                    presence_events: events,
                })
            }),
        1 => (any::<(u32, u32, u32, bool)>(), subject()).prop_map(
            |((id, offset, limit, count_only), room)| {
                ClientFrame::PresenceQuery(PresenceQuery {
                    id,
                    room,
                    offset,
                    limit,
                    count_only,
                })
            }
        ),
        1 => (any::<u32>(), any::<Option<u64>>())
            .prop_map(|(sid, max)| ClientFrame::Unsubscribe(Unsubscribe { sid, max })),
        1 => Just(ClientFrame::Ping),
        1 => Just(ClientFrame::Pong),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        prop::sample::select(ErrorCode::KNOWN.to_vec()),
        any::<u16>().prop_map(ErrorCode::from_u16),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (bytes(12), any::<(u64, u16)>(), bytes(24)).prop_map(|(user, (since_ms, connections), info)| {
        Member {
            user,
            since_ms,
            connections,
            info,
        }
    })
}

fn presence_body() -> impl Strategy<Value = PresenceBody> {
    prop_oneof![
        member().prop_map(PresenceBody::Join),
        bytes(12).prop_map(|user| PresenceBody::Leave { user }),
        (bytes(12), bytes(12))
            .prop_map(|(user, member_token)| PresenceBody::Joined { user, member_token }),
        (any::<u32>(), prop::collection::vec(member(), 0..4))
            .prop_map(|(offset, members)| PresenceBody::Snapshot { offset, members }),
        (any::<u32>(), prop::collection::vec(member(), 0..4))
            .prop_map(|(offset, members)| PresenceBody::Page { offset, members }),
        (error_code(), bytes(16))
            .prop_map(|(code, message)| PresenceBody::Refused { code, message }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        1 => (any::<(u16, u16, u32, u32, u32, u64, u64)>(), bytes(22)).prop_map(
            |((version, shard_count, max_payload, max_frame, ping_interval_ms, client_id, log_epoch), server_id)| {
                ServerFrame::Welcome(Welcome {
                    version,
                    shard_count,
                    max_payload,
                    max_frame,
                    ping_interval_ms,
                    client_id,
                    log_epoch,
                    server_id,
                })
            }
        ),
        4 => (
            any::<(u32, u16, u64, u64, bool)>(),
            0u8..=7,
            subject(),
            prop::option::of(subject()),
            prop::option::of(headers()),
            bytes(40),
        )
            .prop_map(
                |((sid, shard, sequence, timestamp, replayed), priority, subject, reply, headers, payload)| {
                    ServerFrame::Message(Message {
                        sid,
                        priority,
                        shard,
                        sequence,
                        timestamp,
                        replayed,
                        subject,
                        reply,
                        headers,
                        payload,
                    })
                }
            ),
        1 => (
            any::<u64>(),
            prop_oneof![
                any::<(u16, u64, bool)>().prop_map(|(shard, sequence, duplicate)| {
                    AckResult::Stored {
                        shard,
                        sequence,
                        duplicate,
                    }
                }),
                (error_code(), bytes(16))
                    .prop_map(|(code, message)| AckResult::Refused { code, message }),
            ]
        )
            .prop_map(|(ack_id, result)| ServerFrame::PublishAck(PublishAck { ack_id, result })),
        1 => (error_code(), any::<bool>(), any::<Option<u32>>(), bytes(16)).prop_map(
            |(code, fatal, sid, message)| ServerFrame::Error(ErrorFrame {
                code,
                fatal,
                sid,
                message
            })
        ),
        1 => (
            any::<(u32, u64)>(),
            prop::collection::vec(any::<(u16, u64, u64)>(), 0..5)
        )
            .prop_map(|((sid, dropped), ranges)| {
                ServerFrame::DropNotice(DropNotice {
                    sid,
                    dropped,
                    ranges: ranges
                        .into_iter()
                        .map(|(shard, a, b)| SequenceRange {
                            shard,
                            first: a.min(b),
                            last: a.max(b),
                        })
                        .collect(),
                })
            }),
        1 => any::<(u32, u16, u64, u64)>().prop_map(|(sid, shard, requested, oldest)| {
            ServerFrame::GapNotice(GapNotice {
                sid,
                shard,
                requested,
                oldest,
            })
        }),
        1 => (any::<u32>(), bytes(16)).prop_map(|(close_within_ms, reason)| {
            ServerFrame::GoAway(GoAway {
                close_within_ms,
                reason,
            })
        }),
        1 => bytes(16).prop_map(|nonce| ServerFrame::Challenge(Challenge { nonce })),
        2 => (any::<(u32, bool, bool, u32)>(), presence_body()).prop_map(
            |((id, query, more, count), body)| {
                ServerFrame::Presence(Presence {
                    id,
                    query,
                    more,
                    count,
                    body,
                })
            }
        ),
        1 => Just(ServerFrame::Ping),
        1 => Just(ServerFrame::Pong),
    ]
}

fn encode_clients(frames: &[ClientFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        encode_client_frame(f, &mut buf).unwrap();
    }
    buf.to_vec()
}

fn encode_servers(frames: &[ServerFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        encode_server_frame(f, &mut buf).unwrap();
    }
    buf.to_vec()
}

/// Feeds `chunks` one after the other, decoding everything available after each, up to
/// and including the first fatal error. Checks the buffering bound on every `Ok(None)`.
fn feed<F>(
    chunks: &[&[u8]],
    limits: Limits,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<F>, BinaryError>,
) -> Vec<Result<F, BinaryError>> {
    let bound = 4 + limits.max_frame_len();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => {
                    assert!(buf.len() < bound, "holding {} bytes", buf.len());
                    break;
                }
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err(e));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Cuts `bytes` at the given points (taken modulo its length).
fn split<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| {
            if bytes.is_empty() {
                0
            } else {
                p % (bytes.len() + 1)
            }
        })
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for cut in cuts {
        chunks.push(&bytes[from..cut]);
        from = cut;
    }
    chunks.push(&bytes[from..]);
    chunks
}

/// Streams built from valid frames, frame headers with small lengths and odd types, and
/// random bytes, so that the decoders get past the first byte.
fn near_valid(valid: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            6 => valid,
            3 => (0u32..64, any::<u8>(), any::<u8>()).prop_map(|(len, ty, flags)| {
                let mut v = len.to_be_bytes().to_vec();
                v.extend([ty, flags]);
                v
            }),
            3 => (0u32..48, prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86]), 0u8..32)
                .prop_map(|(len, ty, flags)| {
                    let mut v = (len + 2).to_be_bytes().to_vec();
                    v.extend([ty, flags]);
                    v
                }),
            2 => prop::collection::vec(any::<u8>(), 0..12),
            1 => Just(vec![0, 0]),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        (0usize..64, 0usize..64, 1usize..4).prop_map(
            |(max_payload, max_overhead, max_subject_tokens)| Limits {
                max_payload,
                max_overhead,
                max_subject_tokens,
            }
        ),
        Just(Limits::default()),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let mut buf = BytesMut::from(&encode_clients(std::slice::from_ref(&frame))[..]);
        let mut dec = ClientFrameDecoder::new(Limits::default());
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn message_head_plus_parts_is_the_whole_frame(frame in server_frame()) {
        // A sender that queues the header block and payload by reference writes the same
        // bytes as the whole-frame encoder.
        let ServerFrame::Message(m) = &frame else { return Ok(()) };
        let mut parts = BytesMut::new();
        let head = MessageHead::of(m);
        encode_message_head(&head, m.headers.as_ref().map(Bytes::len), m.payload.len(), &mut parts)
            .unwrap();
        if let Some(h) = &m.headers {
            parts.extend_from_slice(h);
        }
        parts.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
        parts.extend_from_slice(&m.payload);
        prop_assert_eq!(&parts[..], &encode_servers(std::slice::from_ref(&frame))[..]);
    }

    #[test]
    fn a_message_without_headers_in_one_write_is_the_whole_frame(frame in server_frame()) {
        let ServerFrame::Message(m) = &frame else { return Ok(()) };
        let m = Message { headers: None, ..m.clone() };
        let head = MessageHead::of(&m);
        // Appended after what the buffer holds, as the broker's outbound tail.
        let mut buf = BytesMut::from(&b"before"[..]);
        encode_message(&head, &m.payload, &mut buf).unwrap();
        let whole = encode_servers(&[ServerFrame::Message(m.clone())]);
        prop_assert_eq!(&buf[..6], b"before");
        prop_assert_eq!(&buf[6..], &whole[..]);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let mut buf = BytesMut::from(&encode_servers(std::slice::from_ref(&frame))[..]);
        let mut dec = ServerFrameDecoder::new(Limits::default());
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn client_stream_splits_anywhere(
        frames in prop::collection::vec(client_frame(), 0..8),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let bytes = encode_clients(&frames);
        let limits = Limits::default();
        let whole = feed(&[&bytes], limits, |b| ClientFrameDecoder::new(limits).decode(b));
        let split = feed(&split(&bytes, &points), limits, |b| ClientFrameDecoder::new(limits).decode(b));
        let expected: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn server_stream_splits_anywhere(
        frames in prop::collection::vec(server_frame(), 0..8),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let bytes = encode_servers(&frames);
        let limits = Limits::default();
        let whole = feed(&[&bytes], limits, |b| ServerFrameDecoder::new(limits).decode(b));
        let split = feed(&split(&bytes, &points), limits, |b| ServerFrameDecoder::new(limits).decode(b));
        let expected: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn client_garbage_is_chunking_independent(
        bytes in prop_oneof![
            near_valid(client_frame().prop_map(|f| encode_clients(&[f])).boxed()),
            prop::collection::vec(any::<u8>(), 0..200),
        ],
        points in prop::collection::vec(any::<usize>(), 0..12),
        limits in limits(),
    ) {
        let mut dec = ClientFrameDecoder::new(limits);
        let whole = feed(&[&bytes], limits, |b| dec.decode(b));
        let mut dec = ClientFrameDecoder::new(limits);
        let split = feed(&split(&bytes, &points), limits, |b| dec.decode(b));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn server_garbage_is_chunking_independent(
        bytes in prop_oneof![
            near_valid(server_frame().prop_map(|f| encode_servers(&[f])).boxed()),
            prop::collection::vec(any::<u8>(), 0..200),
        ],
        points in prop::collection::vec(any::<usize>(), 0..12),
        limits in limits(),
    ) {
        let mut dec = ServerFrameDecoder::new(limits);
        let whole = feed(&[&bytes], limits, |b| dec.decode(b));
        let mut dec = ServerFrameDecoder::new(limits);
        let split = feed(&split(&bytes, &points), limits, |b| dec.decode(b));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn per_frame_errors_leave_the_stream_aligned(
        before in client_frame(),
        after in client_frame(),
        priority in 8u8..,
    ) {
        let bad = ClientFrame::Publish(Publish {
            subject: Bytes::from_static(b"a.b"),
            priority,
            ..Publish::default()
        });
        let bytes = encode_clients(&[before.clone(), bad, after.clone()]);
        let limits = Limits::default();
        let got = feed(&[&bytes], limits, |b| ClientFrameDecoder::new(limits).decode(b));
        prop_assert_eq!(got.len(), 3);
        prop_assert_eq!(&got[0], &Ok(before));
        prop_assert!(matches!(&got[1], Err(e) if !e.is_fatal()));
        prop_assert_eq!(&got[2], &Ok(after));
    }
}

#[test]
fn a_message_in_one_write_refuses_what_the_wire_cannot_carry_and_writes_nothing() {
    let subject = vec![b'a'; usize::from(u16::MAX) + 1];
    let head = MessageHead {
        sid: 1,
        priority: 0,
        shard: 0,
        sequence: 1,
        timestamp: 0,
        replayed: false,
        subject: &subject,
        reply: None,
    };
    let mut buf = BytesMut::from(&b"before"[..]);
    assert_eq!(
        encode_message(&head, b"payload", &mut buf),
        Err(EncodeError::FieldTooLong {
            field: "subject",
            len: subject.len(),
            max: usize::from(u16::MAX),
        })
    );
    assert_eq!(&buf[..], b"before");
}

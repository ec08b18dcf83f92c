//! One test per error path of the binary decoders that the vectors do not already pin
//! down, and the encoders' refusals.

use bytes::{Bytes, BytesMut};
use tern_protocol::binary::{
    encode_client_frame, encode_server_frame, BinaryError, ClientFrame, ClientFrameDecoder,
    DropNotice, EncodeError, ErrorCode, Limits, Publish, Refusal, SequenceRange, ServerFrame,
    ServerFrameDecoder, Subscribe,
};
use tern_protocol::subject::SubjectError;

fn publish() -> Publish {
    Publish {
        subject: Bytes::from_static(b"a.b"),
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    }
}

fn decode_client(frame: &ClientFrame, limits: Limits) -> Result<Option<ClientFrame>, BinaryError> {
    let mut buf = BytesMut::new();
    encode_client_frame(frame, &mut buf).unwrap();
    let got = ClientFrameDecoder::new(limits).decode(&mut buf);
    assert!(buf.is_empty(), "the frame is consumed whole");
    got
}

fn refused(frame: Publish) -> Refusal {
    match decode_client(&ClientFrame::Publish(frame), Limits::default()) {
        Err(BinaryError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let limits = Limits {
        max_payload: 10,
        max_overhead: 6,
        ..Limits::default()
    };
    let mut dec = ClientFrameDecoder::new(limits);
    let mut buf = BytesMut::from(&b"\x00\x00\x00"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&[17]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(BinaryError::FrameTooLarge { len: 17, max: 16 })
    );
    // Exactly at the limit is fine: it waits for the body.
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x10\x05"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
}

#[test]
fn payload_and_headers_count_against_max_payload() {
    let limits = Limits {
        max_payload: 10,
        max_overhead: 1000,
        ..Limits::default()
    };
    let frame = |headers: &'static [u8], payload: &'static [u8]| {
        ClientFrame::Publish(Publish {
            headers: Some(Bytes::from_static(headers)),
            payload: Bytes::from_static(payload),
            ..publish()
        })
    };
    assert!(decode_client(&frame(b"NATS/1.0", b"12"), limits).is_ok());
    assert_eq!(
        decode_client(&frame(b"NATS/1.0", b"123"), limits),
        Err(BinaryError::Refused {
            reason: Refusal::PayloadTooLarge { size: 11, max: 10 },
            sid: None,
            ack_id: None
        })
    );
}

#[test]
fn publish_content_errors() {
    let reply = Some(Bytes::from_static(b"_INBOX..x"));
    assert_eq!(
        refused(Publish { reply, ..publish() }),
        Refusal::InvalidReply(SubjectError::EmptyToken)
    );
    let empty = Some(Bytes::new());
    assert_eq!(
        refused(Publish {
            message_id: empty.clone(),
            ..publish()
        }),
        Refusal::EmptyField("message id")
    );
    assert_eq!(
        refused(Publish {
            coalescing_key: empty,
            ..publish()
        }),
        Refusal::EmptyField("coalescing key")
    );
    assert_eq!(
        refused(Publish {
            subject: Bytes::new(),
            ..publish()
        }),
        Refusal::InvalidSubject(SubjectError::Empty)
    );
    assert_eq!(Refusal::EmptyField("x").code(), ErrorCode::InvalidOption);
}

#[test]
fn structure_errors_win_over_content_errors() {
    // Priority 9 and a subject with a space, but the body is cut short: fatal Truncated.
    let mut buf = BytesMut::new();
    encode_client_frame(
        &ClientFrame::Publish(Publish {
            priority: 9,
            subject: Bytes::from_static(b"a b"),
            ..publish()
        }),
        &mut buf,
    )
    .unwrap();
    let len = buf.len() - 4 - 1;
    buf.truncate(buf.len() - 1);
    buf[..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    let err = ClientFrameDecoder::default().decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        BinaryError::Truncated {
            frame: "PUBLISH",
            field: "payload"
        }
    );
    assert!(err.is_fatal());
}

#[test]
fn queue_group_must_be_a_literal_subject() {
    let frame = ClientFrame::Subscribe(Subscribe {
        sid: 4,
        subject: Bytes::from_static(b"a.*"),
        queue: Some(Bytes::from_static(b"q w")),
        ..Subscribe::default()
    });
    assert_eq!(
        decode_client(&frame, Limits::default()),
        Err(BinaryError::Refused {
            reason: Refusal::InvalidQueueGroup(SubjectError::BadCharacter),
            sid: Some(4),
            ack_id: None
        })
    );
}

#[test]
fn resume_count_larger_than_the_body_is_truncated_not_allocated() {
    // SUBSCRIBE, start mode resume, count 0xffff with no sequences behind it.
    let mut body = vec![0x03, 0x04];
    body.extend_from_slice(&[0; 12]); // sid, queue sizes
    body.extend_from_slice(b"\x00\x01a");
    body.extend_from_slice(&[0; 8]); // epoch
    body.extend_from_slice(&[0xff, 0xff]);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    buf.extend_from_slice(&body);
    assert_eq!(
        ClientFrameDecoder::default().decode(&mut buf),
        Err(BinaryError::Truncated {
            frame: "SUBSCRIBE",
            field: "resume shard count"
        })
    );
}

#[test]
fn drop_notice_range_must_be_ordered() {
    let mut buf = BytesMut::new();
    encode_server_frame(
        &ServerFrame::DropNotice(DropNotice {
            sid: 1,
            dropped: 1,
            ranges: vec![SequenceRange {
                shard: 0,
                first: 5,
                last: 4,
            }],
        }),
        &mut buf,
    )
    .unwrap();
    let err = ServerFrameDecoder::default().decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        BinaryError::InvalidValue {
            frame: "DROP_NOTICE",
            ..
        }
    ));
    assert!(err.is_fatal());
}

#[test]
fn client_decoder_refuses_server_frames_and_vice_versa() {
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x02\x01\x00"[..]);
    assert_eq!(
        ServerFrameDecoder::default().decode(&mut buf),
        Err(BinaryError::UnknownFrameType(0x01))
    );
}

#[test]
fn ack_flags_depend_on_the_outcome() {
    // Refused and duplicate together is not a thing.
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x02\x83\x03"[..]);
    assert_eq!(
        ServerFrameDecoder::default().decode(&mut buf),
        Err(BinaryError::ReservedFlags {
            frame: "PUBLISH_ACK",
            flags: 3
        })
    );
}

#[test]
fn encoder_refuses_unrepresentable_fields_and_writes_nothing() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let frame = ClientFrame::Publish(Publish {
        subject: Bytes::from(vec![b'a'; 70_000]),
        ..publish()
    });
    assert_eq!(
        encode_client_frame(&frame, &mut buf),
        Err(EncodeError::FieldTooLong {
            field: "subject",
            len: 70_000,
            max: 65_535
        })
    );
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn error_display_is_what_the_peer_reads() {
    let e = BinaryError::Refused {
        reason: Refusal::InvalidFilter(SubjectError::FullWildcardNotLast),
        sid: Some(9),
        ack_id: None,
    };
    assert_eq!(
        e.to_string(),
        "invalid subscription subject: '>' is only allowed as the last token"
    );
    assert_eq!(
        BinaryError::FrameTooLarge { len: 5, max: 4 }.to_string(),
        "frame length 5 exceeds the maximum of 4"
    );
}

//! Strategies and drivers shared by the property tests.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tern_protocol::headers::HeaderMap;
use tern_protocol::text::{
    encode_client_op, encode_server_op, ClientDecoder, ClientOp, ConnectOptions, DecodeError,
    Limits, Message, Publish, ServerDecoder, ServerInfo, ServerOp, Subscribe,
};

pub fn literal_token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_$*>-]{1,6}".prop_filter("literal", |t| t != "*" && t != ">")
}

pub fn subject() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(literal_token(), 1..4).prop_map(|t| Bytes::from(t.join(".")))
}

pub fn filter() -> impl Strategy<Value = Bytes> {
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

pub fn sid() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9]{1,8}".prop_map(Bytes::from)
}

/// Binary payloads, often with line ends and protocol text inside.
pub fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..8),
            1 => Just(b"\r\n".to_vec()),
            1 => Just(b"\n".to_vec()),
            1 => Just(b"PUB foo 3\r\n".to_vec()),
            1 => Just(b"NATS/1.0\r\n".to_vec()),
        ],
        0..6,
    )
    .prop_map(|parts| Bytes::from(parts.concat()))
}

/// Header blocks: well-formed ones, and arbitrary bytes behind the required prefix.
pub fn header_block() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (
            prop::option::of(100u16..1000),
            prop::option::of("[a-zA-Z ]{1,12}"),
            prop::collection::vec(("[A-Za-z-]{1,8}", "[ -~]{0,12}"), 0..4),
        )
            .prop_map(|(status, description, fields)| {
                Bytes::from(
                    HeaderMap {
                        status,
                        description,
                        fields,
                    }
                    .encode(),
                )
            }),
        payload().prop_map(|p| Bytes::from([&b"NATS/1.0"[..], &p].concat())),
    ]
}

pub fn connect_options() -> impl Strategy<Value = ConnectOptions> {
    (
        any::<[bool; 6]>(),
        prop::option::of(".{0,8}"),
        prop::option::of("[a-z]{0,6}"),
        prop::option::of(any::<u8>()),
        prop::option::of(".{0,8}"),
        prop::option::of(".{0,8}"),
        prop::option::of("U[A-Z2-7]{0,55}"),
        prop::option::of("[A-Za-z0-9_-]{0,86}"),
    )
        .prop_map(
            |(flags, name, lang, protocol, user, auth_token, nkey, sig)| ConnectOptions {
                verbose: flags[0],
                pedantic: flags[1],
                tls_required: flags[2],
                echo: flags[3],
                headers: flags[4],
                no_responders: flags[5],
                name,
                lang,
                version: Some("1.0".into()),
                protocol,
                user,
                pass: None,
                auth_token,
                nkey,
                sig,
                jwt: None,
            },
        )
}

pub fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        1 => connect_options().prop_map(|o| ClientOp::Connect(Box::new(o))),
        4 => (
            subject(),
            prop::option::of(subject()),
            prop::option::of(header_block()),
            payload()
        )
            .prop_map(|(subject, reply, headers, payload)| ClientOp::Pub(Publish {
                subject,
                reply,
                headers,
                payload,
            })),
        2 => (filter(), prop::option::of(literal_token()), sid()).prop_map(
            |(subject, queue, sid)| ClientOp::Sub(Subscribe {
                subject,
                queue: queue.map(Bytes::from),
                sid,
            })
        ),
        1 => (sid(), any::<Option<u64>>()).prop_map(|(sid, max)| ClientOp::Unsub { sid, max }),
        1 => Just(ClientOp::Ping),
        1 => Just(ClientOp::Pong),
        1 => "[a-z]{0,8}".prop_map(|v| ClientOp::Info(format!("{{\"v\":\"{v}\"}}").into())),
        1 => Just(ClientOp::Ok),
        1 => "[ -~]{0,20}".prop_map(ClientOp::Err),
    ]
}

pub fn server_info() -> impl Strategy<Value = ServerInfo> {
    (
        ".{0,12}",
        ".{0,8}",
        any::<(u8, u16, bool, usize, u64)>(),
        prop::option::of("[0-9.]{1,15}"),
        prop::option::of("[0-9.]{1,8}"),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), prop::option::of("[A-Za-z0-9_-]{11,22}")),
    )
        .prop_map(
            |(
                server_id,
                version,
                (proto, port, headers, max_payload, client_id),
                client_ip,
                tern_version,
                (ldm, tls_required, tls_verify),
                (auth_required, nonce),
            )| {
                ServerInfo {
                    server_id,
                    server_name: "tern".into(),
                    version,
                    tern_version,
                    proto,
                    host: "127.0.0.1".into(),
                    port,
                    headers,
                    max_payload,
                    client_id,
                    client_ip,
                    tls_required,
                    tls_verify,
                    auth_required,
                    nonce,
                    ldm,
                    // A cluster's advertised servers, in some INFOs.
                    connect_urls: if tls_verify {
                        vec!["10.0.0.1:4222".into(), "[::1]:4223".into()]
                    } else {
                        Vec::new()
                    },
                }
            },
        )
}

pub fn server_op() -> impl Strategy<Value = ServerOp> {
    prop_oneof![
        1 => server_info().prop_map(|i| ServerOp::Info(Box::new(i))),
        4 => (
            subject(),
            sid(),
            prop::option::of(subject()),
            prop::option::of(header_block()),
            payload()
        )
            .prop_map(|(subject, sid, reply, headers, payload)| ServerOp::Msg(Message {
                subject,
                sid,
                reply,
                headers,
                payload,
            })),
        1 => Just(ServerOp::Ok),
        1 => "[^\r\n]{0,24}".prop_map(ServerOp::Err),
        1 => Just(ServerOp::Ping),
        1 => Just(ServerOp::Pong),
    ]
}

pub fn encode_client(ops: &[ClientOp]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    for op in ops {
        encode_client_op(op, &mut dst);
    }
    dst.to_vec()
}

pub fn encode_server(ops: &[ServerOp]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    for op in ops {
        encode_server_op(op, &mut dst);
    }
    dst.to_vec()
}

/// Cuts `bytes` at the given points (taken modulo its length, in any order).
pub fn split_at_points(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
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
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

/// The most bytes a decoder may ask its caller to hold.
pub fn bound(limits: Limits) -> usize {
    limits.max_control_line + limits.max_payload + 2
}

/// One decoder of either direction, for the generic driver.
pub trait Decoder {
    type Op;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Op>, DecodeError>;
    fn bytes_needed(&self) -> Option<usize>;
}

impl Decoder for ClientDecoder {
    type Op = ClientOp;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, DecodeError> {
        ClientDecoder::decode(self, buf)
    }
    fn bytes_needed(&self) -> Option<usize> {
        ClientDecoder::bytes_needed(self)
    }
}

impl Decoder for ServerDecoder {
    type Op = ServerOp;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, DecodeError> {
        ServerDecoder::decode(self, buf)
    }
    fn bytes_needed(&self) -> Option<usize> {
        ServerDecoder::bytes_needed(self)
    }
}

/// Feeds `chunks` one by one, decoding everything available after each, up to and including
/// the first fatal error. Checks the buffering bound every time the decoder asks for more.
pub fn feed<D: Decoder>(
    dec: &mut D,
    limits: Limits,
    chunks: &[impl AsRef<[u8]>],
) -> Vec<Result<D::Op, DecodeError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk.as_ref());
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(op)) => out.push(Ok(op)),
                Ok(None) => {
                    assert!(
                        buf.len() < bound(limits),
                        "decoder holds {} bytes, bound {}",
                        buf.len(),
                        bound(limits)
                    );
                    if let Some(n) = dec.bytes_needed() {
                        assert!(n > 0);
                        assert!(buf.len() + n <= bound(limits));
                    }
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

//! Encoders for both directions of the text protocol. Every line ends with `\r\n`.
//!
//! Owns: the wire form of every [`ClientOp`] and [`ServerOp`], and the control line of a
//! delivery ([`encode_msg_line`]), which formats numbers on the stack and writes into `dst`
//! after a single `reserve`.

use bytes::{BufMut, BytesMut};

use super::{ClientOp, ServerOp};

/// A number formatted in decimal on the stack.
struct Decimal {
    /// The digits end at index 20; a line end follows them.
    digits: [u8; 22],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 22];
        digits[20] = b'\r';
        digits[21] = b'\n';
        let mut start = 20;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    fn of_usize(n: usize) -> Self {
        Decimal::new(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..20]
    }

    /// The digits and `\r\n`.
    fn ending_line(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// Appends `op arg arg ...\r\n`, skipping absent arguments, after one `reserve`.
fn put_line(dst: &mut BytesMut, op: &[u8], args: &[Option<&[u8]>]) {
    let len = op.len() + args.iter().flatten().map(|a| a.len() + 1).sum::<usize>() + 2;
    dst.reserve(len);
    dst.extend_from_slice(op);
    for arg in args.iter().flatten() {
        dst.extend_from_slice(b" ");
        dst.extend_from_slice(arg);
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends `op <json>\r\n`.
fn put_json<T: serde::Serialize>(dst: &mut BytesMut, op: &[u8], value: &T) {
    // Serializing these plain structs cannot fail; an empty object keeps the line well
    // formed if it ever did.
    let json = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    put_line(dst, op, &[Some(&json)]);
}

/// Appends a header block, a payload and the closing `\r\n`.
fn put_body(dst: &mut BytesMut, headers: Option<&[u8]>, payload: &[u8]) {
    let headers = headers.unwrap_or_default();
    dst.reserve(headers.len() + payload.len() + 2);
    dst.extend_from_slice(headers);
    dst.extend_from_slice(payload);
    dst.extend_from_slice(b"\r\n");
}

/// Appends a client operation to `dst`.
pub fn encode_client_op(op: &ClientOp, dst: &mut BytesMut) {
    match op {
        ClientOp::Connect(options) => put_json(dst, b"CONNECT", &**options),
        ClientOp::Pub(p) => {
            encode_pub_line(
                dst,
                &p.subject,
                p.reply.as_deref(),
                p.headers.as_ref().map(|h| h.len()),
                p.payload.len(),
            );
            put_body(dst, p.headers.as_deref(), &p.payload);
        }
        ClientOp::Sub(s) => put_line(
            dst,
            b"SUB",
            &[Some(&s.subject), s.queue.as_deref(), Some(&s.sid)],
        ),
        ClientOp::Unsub { sid, max } => {
            let max = max.map(Decimal::new);
            put_line(
                dst,
                b"UNSUB",
                &[Some(sid), max.as_ref().map(Decimal::as_bytes)],
            );
        }
        ClientOp::Ping => dst.extend_from_slice(b"PING\r\n"),
        ClientOp::Pong => dst.extend_from_slice(b"PONG\r\n"),
    }
}

/// Appends only the control line of a publish: `PUB <subject> [reply] <size>\r\n`, or
/// `HPUB <subject> [reply] <hdr size> <total size>\r\n` when `headers_len` is `Some`. The
/// caller appends the header block and payload (`headers_len + payload_len` bytes) and then
/// `\r\n`. A publisher's hot path (clients, the benchmark harness): it formats numbers
/// without allocating.
pub fn encode_pub_line(
    dst: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers_len: Option<usize>,
    payload_len: usize,
) {
    let total = Decimal::of_usize(headers_len.unwrap_or(0).saturating_add(payload_len));
    match headers_len {
        None => put_line(dst, b"PUB", &[Some(subject), reply, Some(total.as_bytes())]),
        Some(h) => {
            let h = Decimal::of_usize(h);
            put_line(
                dst,
                b"HPUB",
                &[
                    Some(subject),
                    reply,
                    Some(h.as_bytes()),
                    Some(total.as_bytes()),
                ],
            );
        }
    }
}

/// Appends a server operation to `dst`.
pub fn encode_server_op(op: &ServerOp, dst: &mut BytesMut) {
    match op {
        ServerOp::Info(info) => put_json(dst, b"INFO", &**info),
        ServerOp::Msg(m) => {
            encode_msg_line(
                dst,
                &m.subject,
                &m.sid,
                m.reply.as_deref(),
                m.headers.as_ref().map(|h| h.len()),
                m.payload.len(),
            );
            put_body(dst, m.headers.as_deref(), &m.payload);
        }
        ServerOp::Ok => dst.extend_from_slice(b"+OK\r\n"),
        ServerOp::Err(text) => {
            dst.reserve(text.len() + 9);
            dst.extend_from_slice(b"-ERR '");
            dst.extend_from_slice(text.as_bytes());
            dst.extend_from_slice(b"'\r\n");
        }
        ServerOp::Ping => dst.extend_from_slice(b"PING\r\n"),
        ServerOp::Pong => dst.extend_from_slice(b"PONG\r\n"),
    }
}

/// Appends only the control line of a delivery: `MSG <subject> <sid> [reply] <size>\r\n`,
/// or `HMSG <subject> <sid> [reply] <hdr size> <total size>\r\n` when `headers_len` is
/// `Some`. The caller appends the header block and payload (`headers_len + payload_len`
/// bytes) and then `\r\n`. This is the broker's hot path: it formats numbers without
/// allocating.
pub fn encode_msg_line(
    dst: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers_len: Option<usize>,
    payload_len: usize,
) {
    // Written part by part after one `reserve` (four copies for a plain `MSG`): this runs
    // once per delivery.
    let total = Decimal::of_usize(headers_len.unwrap_or(0).saturating_add(payload_len));
    let header = headers_len.map(Decimal::of_usize);
    let op: &[u8] = if header.is_some() { b"HMSG " } else { b"MSG " };
    let len = op.len()
        + subject.len()
        + 1
        + sid.len()
        + 1
        + reply.map_or(0, |r| r.len() + 1)
        + header.as_ref().map_or(0, |h| h.as_bytes().len() + 1)
        + total.ending_line().len();
    dst.reserve(len);
    dst.extend_from_slice(op);
    dst.extend_from_slice(subject);
    dst.put_u8(b' ');
    dst.extend_from_slice(sid);
    dst.put_u8(b' ');
    if let Some(reply) = reply {
        dst.extend_from_slice(reply);
        dst.put_u8(b' ');
    }
    if let Some(header) = &header {
        dst.extend_from_slice(header.as_bytes());
        dst.put_u8(b' ');
    }
    dst.extend_from_slice(total.ending_line());
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn pub_line_sizes_in_decimal() {
        for n in [0usize, 7, 10, 128, 1_048_576, usize::MAX] {
            let mut out = BytesMut::new();
            encode_pub_line(&mut out, b"a.b", None, None, n);
            assert_eq!(&out[..], format!("PUB a.b {n}\r\n").as_bytes());
        }
        let mut out = BytesMut::new();
        encode_pub_line(&mut out, b"a", Some(b"r"), Some(12), 3);
        assert_eq!(&out[..], b"HPUB a r 12 15\r\n");
    }
    use crate::text::{ConnectOptions, Message, Publish, ServerInfo, Subscribe};

    fn client(op: ClientOp) -> BytesMut {
        let mut dst = BytesMut::new();
        encode_client_op(&op, &mut dst);
        dst
    }

    fn server(op: ServerOp) -> BytesMut {
        let mut dst = BytesMut::new();
        encode_server_op(&op, &mut dst);
        dst
    }

    #[test]
    fn decimal() {
        for n in [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn client_ops() {
        assert_eq!(client(ClientOp::Ping), "PING\r\n");
        assert_eq!(client(ClientOp::Pong), "PONG\r\n");
        assert_eq!(
            client(ClientOp::Pub(Publish {
                subject: Bytes::from_static(b"foo"),
                reply: None,
                headers: None,
                payload: Bytes::from_static(b"hello"),
            })),
            "PUB foo 5\r\nhello\r\n"
        );
        assert_eq!(
            client(ClientOp::Pub(Publish {
                subject: Bytes::from_static(b"foo"),
                reply: Some(Bytes::from_static(b"r.1")),
                headers: Some(Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\n")),
                payload: Bytes::from_static(b"hi"),
            })),
            "HPUB foo r.1 18 20\r\nNATS/1.0\r\nA: b\r\n\r\nhi\r\n"
        );
        assert_eq!(
            client(ClientOp::Sub(Subscribe {
                subject: Bytes::from_static(b"foo.*"),
                queue: Some(Bytes::from_static(b"q")),
                sid: Bytes::from_static(b"7"),
            })),
            "SUB foo.* q 7\r\n"
        );
        assert_eq!(
            client(ClientOp::Unsub {
                sid: Bytes::from_static(b"7"),
                max: Some(10),
            }),
            "UNSUB 7 10\r\n"
        );
        assert_eq!(
            client(ClientOp::Unsub {
                sid: Bytes::from_static(b"7"),
                max: None,
            }),
            "UNSUB 7\r\n"
        );
        let connect = client(ClientOp::Connect(Box::default()));
        assert!(connect.starts_with(b"CONNECT {\"verbose\":false,"));
        assert!(connect.ends_with(b"}\r\n"));
        let json = &connect[b"CONNECT ".len()..connect.len() - 2];
        assert_eq!(
            serde_json::from_slice::<ConnectOptions>(json).unwrap(),
            ConnectOptions::default()
        );
    }

    #[test]
    fn server_ops() {
        assert_eq!(server(ServerOp::Ok), "+OK\r\n");
        assert_eq!(server(ServerOp::Ping), "PING\r\n");
        assert_eq!(server(ServerOp::Pong), "PONG\r\n");
        assert_eq!(
            server(ServerOp::Err("Unknown Protocol Operation".into())),
            "-ERR 'Unknown Protocol Operation'\r\n"
        );
        assert_eq!(
            server(ServerOp::Msg(Message {
                subject: Bytes::from_static(b"foo"),
                sid: Bytes::from_static(b"1"),
                reply: None,
                headers: None,
                payload: Bytes::from_static(b"hello"),
            })),
            "MSG foo 1 5\r\nhello\r\n"
        );
        assert_eq!(
            server(ServerOp::Msg(Message {
                subject: Bytes::from_static(b"foo"),
                sid: Bytes::from_static(b"1"),
                reply: Some(Bytes::from_static(b"in.x")),
                headers: Some(Bytes::from_static(b"NATS/1.0 503\r\n\r\n")),
                payload: Bytes::new(),
            })),
            "HMSG foo 1 in.x 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
        );
        let info = server(ServerOp::Info(Box::new(ServerInfo {
            server_id: "id".into(),
            ..ServerInfo::default()
        })));
        assert!(info.starts_with(b"INFO {\"server_id\":\"id\","));
        assert!(info.ends_with(b"}\r\n"));
        // Only what is there: no tern_version, no ldm unless set.
        let text = String::from_utf8(info.to_vec()).unwrap();
        assert!(
            !text.contains("tern_version") && !text.contains("ldm"),
            "{text}"
        );
        let ldm = server(ServerOp::Info(Box::new(ServerInfo {
            tern_version: Some("0.1.0".into()),
            ldm: true,
            ..ServerInfo::default()
        })));
        let text = String::from_utf8(ldm.to_vec()).unwrap();
        assert!(text.contains(r#""tern_version":"0.1.0""#), "{text}");
        assert!(text.contains(r#""ldm":true"#), "{text}");
    }

    #[test]
    fn msg_line() {
        let mut dst = BytesMut::new();
        encode_msg_line(&mut dst, b"a.b", b"42", None, None, 0);
        assert_eq!(dst, "MSG a.b 42 0\r\n");
        dst.clear();
        encode_msg_line(&mut dst, b"a.b", b"42", Some(b"r"), None, 1024);
        assert_eq!(dst, "MSG a.b 42 r 1024\r\n");
        dst.clear();
        encode_msg_line(&mut dst, b"a.b", b"42", None, Some(12), 3);
        assert_eq!(dst, "HMSG a.b 42 12 15\r\n");
        dst.clear();
        encode_msg_line(&mut dst, b"a.b", b"42", Some(b"r"), Some(12), 3);
        assert_eq!(dst, "HMSG a.b 42 r 12 15\r\n");
    }
}

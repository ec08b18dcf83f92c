//! Encoders for both directions of the text protocol. Every line ends with `\r\n`.
//!
//! Owns: the wire form of every [`ClientOp`] and [`ServerOp`], and the broker's delivery
//! hot path: a delivery's control line ([`encode_msg_line`]) or a whole delivery without
//! headers ([`encode_msg`]), written straight into `dst` after a single `reserve`, numbers
//! included (no formatting buffer, no capacity check per part).

use crate::spare::{put, put_decimal};
use bytes::BytesMut;

use super::{ClientOp, ServerOp};

/// A number formatted in decimal on the stack.
struct Decimal {
    /// The digits end at index 20.
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
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

/// Appends `-ERR '<text>'\r\n`.
fn put_err(dst: &mut BytesMut, text: &str) {
    dst.reserve(text.len() + 9);
    dst.extend_from_slice(b"-ERR '");
    dst.extend_from_slice(text.as_bytes());
    dst.extend_from_slice(b"'\r\n");
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
        ClientOp::Info(json) => put_line(dst, b"INFO", &[Some(&json[..])]),
        ClientOp::Ok => dst.extend_from_slice(b"+OK\r\n"),
        ClientOp::Err(text) => put_err(dst, text),
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
        ServerOp::Err(text) => put_err(dst, text),
        ServerOp::Ping => dst.extend_from_slice(b"PING\r\n"),
        ServerOp::Pong => dst.extend_from_slice(b"PONG\r\n"),
    }
}

/// Appends only the control line of a delivery: `MSG <subject> <sid> [reply] <size>\r\n`,
/// or `HMSG <subject> <sid> [reply] <hdr size> <total size>\r\n` when `headers_len` is
/// `Some`. The caller appends the header block and payload (`headers_len + payload_len`
/// bytes) and then `\r\n`. This is the broker's hot path: it formats numbers without
/// allocating, straight into `dst` after one `reserve`.
pub fn encode_msg_line(
    dst: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers_len: Option<usize>,
    payload_len: usize,
) {
    let total = to_u64(headers_len.unwrap_or(0).saturating_add(payload_len));
    let header = headers_len.map(to_u64);
    MsgLine::new(subject, sid, reply, header, total).write(dst, None);
}

/// Appends a whole delivery without headers: `MSG <subject> <sid> [reply] <size>\r\n`,
/// the payload and `\r\n`, after one `reserve`. The broker's hot path for a payload small
/// enough to be copied into its outbound buffer.
pub fn encode_msg(
    dst: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    MsgLine::new(subject, sid, reply, None, to_u64(payload.len())).write(dst, Some(payload));
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// How many decimal digits `n` has.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The parts of a `MSG`/`HMSG` control line, and its length.
struct MsgLine<'a> {
    subject: &'a [u8],
    sid: &'a [u8],
    reply: Option<&'a [u8]>,
    /// The header size (`HMSG`) and its digit count.
    header: Option<(u64, usize)>,
    total: u64,
    total_digits: usize,
}

impl<'a> MsgLine<'a> {
    #[inline]
    fn new(
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        header: Option<u64>,
        total: u64,
    ) -> Self {
        MsgLine {
            subject,
            sid,
            reply,
            header: header.map(|h| (h, decimal_len(h))),
            total,
            total_digits: decimal_len(total),
        }
    }

    /// The length of the line, its line end included.
    #[inline]
    fn len(&self) -> usize {
        let op = if self.header.is_some() { 5 } else { 4 };
        op + self.subject.len()
            + 1
            + self.sid.len()
            + 1
            + self.reply.map_or(0, |r| r.len() + 1)
            + self.header.map_or(0, |(_, d)| d + 1)
            + self.total_digits
            + 2
    }

    /// Appends the line and, when there is a `body`, the body and `\r\n`: one `reserve`,
    /// then each part copied into the reserved room (no capacity check per part).
    #[inline]
    fn write(&self, dst: &mut BytesMut, body: Option<&[u8]>) {
        let len = self.len() + body.map_or(0, |b| b.len() + 2);
        dst.reserve(len);
        let start = dst.len();
        // SAFETY: `reserve` left room for at least `len` bytes after the `start` bytes in
        // use; the spare capacity's pointer may write all of that room. The writes below
        // fill exactly `len` bytes from there, in order and without overlap: `len()`
        // counts the same parts the line is written from. Only then does `set_len` make
        // them part of `dst`.
        unsafe {
            let base = dst.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            let mut at = put(
                base,
                if self.header.is_some() {
                    b"HMSG "
                } else {
                    b"MSG "
                },
            );
            at = put(at, self.subject);
            at = put(at, b" ");
            at = put(at, self.sid);
            at = put(at, b" ");
            if let Some(reply) = self.reply {
                at = put(at, reply);
                at = put(at, b" ");
            }
            if let Some((header, digits)) = self.header {
                at = put_decimal(at, header, digits);
                at = put(at, b" ");
            }
            at = put_decimal(at, self.total, self.total_digits);
            at = put(at, b"\r\n");
            if let Some(body) = body {
                at = put(at, body);
                at = put(at, b"\r\n");
            }
            debug_assert_eq!(at.offset_from(base), len as isize);
            dst.set_len(start + len);
        }
    }
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
    fn msg_line_sizes_in_decimal() {
        let mut sizes = vec![0usize, 1, usize::MAX];
        for p in 1..20 {
            let n = 10usize.pow(p);
            sizes.extend([n - 1, n, n + 1]);
        }
        for n in sizes {
            let mut dst = BytesMut::new();
            encode_msg_line(&mut dst, b"a", b"1", None, None, n);
            assert_eq!(&dst[..], format!("MSG a 1 {n}\r\n").as_bytes());
            dst.clear();
            encode_msg_line(&mut dst, b"a", b"1", None, Some(n), 0);
            assert_eq!(&dst[..], format!("HMSG a 1 {n} {n}\r\n").as_bytes());
        }
        // The total saturates rather than wrapping.
        let mut dst = BytesMut::new();
        encode_msg_line(&mut dst, b"a", b"1", None, Some(usize::MAX), 1);
        assert_eq!(
            &dst[..],
            format!("HMSG a 1 {0} {0}\r\n", usize::MAX).as_bytes()
        );
    }

    #[test]
    fn whole_msg_is_the_line_the_payload_and_a_line_end() {
        for reply in [None, Some(&b"_INBOX.abc.1"[..])] {
            for len in [0usize, 1, 9, 10, 16, 100, 4096] {
                let payload = vec![b'x'; len];
                let mut whole = BytesMut::from(&b"before"[..]);
                encode_msg(&mut whole, b"chat.room.42", b"17", reply, &payload);
                let mut parts = BytesMut::from(&b"before"[..]);
                encode_msg_line(&mut parts, b"chat.room.42", b"17", reply, None, len);
                parts.extend_from_slice(&payload);
                parts.extend_from_slice(b"\r\n");
                assert_eq!(whole, parts);
            }
        }
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

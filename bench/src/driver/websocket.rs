//! The WebSocket layer of a connection, client side (RFC 6455): the upgrade, masked
//! frames out, the server's frames in.
//!
//! Owns: the upgrade request and the check of its answer ([`request`], [`parse_response`]:
//! status 101 and the `Sec-WebSocket-Accept` that proves the server read our key); one
//! masked binary frame per write ([`WsLayer::encode`], a fresh mask from a xorshift stream
//! seeded by the OS); reading the server's frames ([`WsLayer::decode`]): the payloads of
//! binary, text and continuation frames appended to the protocol's byte stream (a
//! protocol operation may span frames, or several share one), pings answered with a pong
//! carrying the same payload, pongs skipped, a close frame turned into an error with its
//! code and reason.
//!
//! Never: reads or writes a socket ([`super::socket`] does), offers an extension (so no
//! compressed frame is ever valid), or accepts a masked server frame, a reserved bit or
//! opcode, or a control frame over 125 bytes: each is [`DriverError::WebSocket`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{Buf, BufMut, BytesMut};

use super::DriverError;

/// The GUID RFC 6455 appends to the key to make the accept value.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The longest upgrade answer (status line and headers) the client reads.
pub(crate) const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// The largest control frame payload (RFC 6455, 5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub(crate) fn new_key() -> Result<String, DriverError> {
    let mut key = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| DriverError::WebSocket("no randomness for the key".into()))?;
    Ok(BASE64.encode(key))
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub(crate) fn accept_for(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    BASE64.encode(digest.as_ref())
}

/// The upgrade request for `path` on `host` (`ADDR:PORT`), with `key`.
pub(crate) fn request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: tern-bench/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Checks the server's answer in `buf` to the upgrade sent with `key`: `Ok(None)` while
/// its head is incomplete, `Ok(Some(len))` (the head's length; frames may follow it) when
/// it is a `101` with the right `Sec-WebSocket-Accept`, an error naming what is wrong
/// otherwise.
pub(crate) fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, DriverError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(DriverError::WebSocket(format!(
                "upgrade answer longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.1 ") || code != "101" {
        let body = String::from_utf8_lossy(&buf[end + 4..]);
        return Err(DriverError::WebSocket(format!(
            "upgrade refused: {status}{}",
            if body.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", body.trim())
            }
        )));
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_string());
    match accept {
        Some(a) if a == accept_for(key) => Ok(Some(end + 4)),
        Some(a) => Err(DriverError::WebSocket(format!(
            "wrong Sec-WebSocket-Accept {a:?}"
        ))),
        None => Err(DriverError::WebSocket(
            "101 without Sec-WebSocket-Accept".into(),
        )),
    }
}

/// One WebSocket client connection after its upgrade.
pub(crate) struct WsLayer {
    /// Bytes from below (the socket, or TLS's plaintext) not yet decoded.
    pub(crate) raw: BytesMut,
    /// Payload bytes of the current data frame still to come.
    remaining: u64,
    /// Frames to send that the server's frames asked for (pongs).
    control: BytesMut,
    /// The encoded frame of the last [`WsLayer::encode`].
    frame: BytesMut,
    /// The mask stream's state (xorshift64; never 0).
    mask_state: u64,
}

impl WsLayer {
    /// A layer whose first bytes to decode are `raw` (what followed the upgrade answer).
    pub(crate) fn new(raw: BytesMut) -> Result<Self, DriverError> {
        let mut seed = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| DriverError::WebSocket("no randomness for the masks".into()))?;
        Ok(WsLayer {
            raw,
            remaining: 0,
            control: BytesMut::new(),
            frame: BytesMut::new(),
            mask_state: u64::from_le_bytes(seed) | 1,
        })
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_le_bytes()
    }

    /// `payload` as one masked binary frame; valid until the next call.
    pub(crate) fn encode(&mut self, payload: &[u8]) -> &[u8] {
        let mask = self.next_mask();
        self.frame.clear();
        put_frame(&mut self.frame, OP_BINARY, mask, payload);
        &self.frame
    }

    /// Frames the server's frames asked for (pongs), to be sent now; empty when none.
    pub(crate) fn take_control(&mut self) -> BytesMut {
        self.control.split()
    }

    /// Decodes every whole frame in [`WsLayer::raw`] (and the part of a data frame's
    /// payload that is there): data payloads are appended to `app`, pings queue a pong.
    pub(crate) fn decode(&mut self, app: &mut BytesMut) -> Result<(), DriverError> {
        loop {
            if self.remaining > 0 {
                let take = self
                    .raw
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                if take == 0 {
                    return Ok(());
                }
                app.extend_from_slice(&self.raw[..take]);
                self.raw.advance(take);
                self.remaining -= take as u64;
                continue;
            }
            let Some(header) = Header::parse(&self.raw)? else {
                return Ok(());
            };
            match header.opcode {
                OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                    self.raw.advance(header.len);
                    self.remaining = header.payload;
                }
                OP_CLOSE | OP_PING | OP_PONG => {
                    let payload = header.payload as usize;
                    if self.raw.len() < header.len + payload {
                        return Ok(());
                    }
                    self.raw.advance(header.len);
                    let body = self.raw.split_to(payload);
                    match header.opcode {
                        OP_PING => {
                            let mask = self.next_mask();
                            put_frame(&mut self.control, OP_PONG, mask, &body);
                        }
                        OP_PONG => {}
                        _ => return Err(close_error(&body)),
                    }
                }
                other => {
                    return Err(DriverError::WebSocket(format!(
                        "reserved opcode {other:#x} from the server"
                    )))
                }
            }
            if self.raw.is_empty() {
                // Reuse the allocation from its start.
                self.raw.clear();
            }
        }
    }
}

/// A server frame's header.
struct Header {
    opcode: u8,
    /// Header bytes.
    len: usize,
    /// Payload bytes.
    payload: u64,
}

impl Header {
    /// The header at the start of `buf`; `None` while incomplete.
    fn parse(buf: &[u8]) -> Result<Option<Header>, DriverError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(DriverError::WebSocket(format!(
                "reserved bits set in a server frame ({b0:#04x}): no extension was negotiated"
            )));
        }
        if b1 & 0x80 != 0 {
            return Err(DriverError::WebSocket(
                "a masked frame from the server".into(),
            ));
        }
        let opcode = b0 & 0x0F;
        let (len, payload) = match b1 & 0x7F {
            126 if buf.len() < 4 => return Ok(None),
            126 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
            127 if buf.len() < 10 => return Ok(None),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (10, u64::from_be_bytes(n))
            }
            n => (2, u64::from(n)),
        };
        if opcode & 0x8 != 0 && (payload > MAX_CONTROL as u64 || b0 & 0x80 == 0) {
            return Err(DriverError::WebSocket(format!(
                "control frame {opcode:#x} of {payload} bytes, or fragmented"
            )));
        }
        Ok(Some(Header {
            opcode,
            len,
            payload,
        }))
    }
}

/// The error a server's close frame stands for: its code and reason.
fn close_error(body: &[u8]) -> DriverError {
    if body.len() < 2 {
        return DriverError::WebSocket("closed by the broker (no code)".into());
    }
    let code = u16::from_be_bytes([body[0], body[1]]);
    let reason = String::from_utf8_lossy(&body[2..]);
    DriverError::WebSocket(format!("closed by the broker: {code} {reason}"))
}

/// Appends one final, masked frame of `opcode` carrying `payload` to `out`.
fn put_frame(out: &mut BytesMut, opcode: u8, mask: [u8; 4], payload: &[u8]) {
    out.reserve(14 + payload.len());
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n <= 125 => out.put_u8(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(&mask);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeating 4-byte `mask`, a word at a time.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n <= 125 => f.push(n as u8),
            n if n <= 65535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Unmasks a client frame: (opcode, payload).
    fn read_client_frame(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0xF0, 0x80, "final, no reserved bits");
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let (hlen, len) = match frame[1] & 0x7F {
            126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, n as usize),
        };
        let mask: [u8; 4] = frame[hlen..hlen + 4].try_into().unwrap();
        let body = &frame[hlen + 4..];
        assert_eq!(body.len(), len);
        let plain = body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (frame[0] & 0x0F, plain)
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(BASE64.decode(new_key().unwrap()).unwrap().len(), 16);
    }

    #[test]
    fn an_upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x01x";
        assert_eq!(parse_response(ok, key).unwrap(), Some(ok.len() - 3));
        assert_eq!(parse_response(&ok[..40], key).unwrap(), None);
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno route\n";
        let err = parse_response(refused, key).unwrap_err().to_string();
        assert!(err.contains("404 Not Found (no route)"), "{err}");
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(parse_response(wrong, key).is_err());
        let text = String::from_utf8(request("127.0.0.1:80", "/tern", key)).unwrap();
        assert!(text.starts_with("GET /tern HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n") && text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn frames_out_are_masked_binary_frames_of_every_length_form() {
        let mut ws = WsLayer::new(BytesMut::new()).unwrap();
        for size in [0, 5, 125, 126, 65535, 65536, 70_001] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            let frame = ws.encode(&payload).to_vec();
            assert_eq!(read_client_frame(&frame), (OP_BINARY, payload), "{size}");
        }
    }

    #[test]
    fn frames_in_become_one_stream_whatever_the_cuts() {
        let mut wire = Vec::new();
        wire.extend(server_frame(0x02, b"INFO {}\r\nMS")); // binary, not final
        wire.extend(server_frame(0x80, b"G a 1 2\r\nhi")); // continuation, final
        wire.extend(server_frame(0x89, b"are you there")); // ping between messages
        wire.extend(server_frame(0x81, b"\r\n")); // text
        wire.extend(server_frame(0x82, &[b'z'; 300])); // 16-bit length
        let mut want = b"INFO {}\r\nMSG a 1 2\r\nhi\r\n".to_vec();
        want.extend([b'z'; 300]);
        for cut in 1..wire.len() {
            let mut ws = WsLayer::new(BytesMut::new()).unwrap();
            let mut app = BytesMut::new();
            for piece in wire.chunks(cut) {
                ws.raw.extend_from_slice(piece);
                ws.decode(&mut app).unwrap();
            }
            assert_eq!(&app[..], &want[..], "cut {cut}");
            assert!(ws.raw.is_empty());
            let pong = ws.take_control();
            assert_eq!(
                read_client_frame(&pong),
                (OP_PONG, b"are you there".to_vec())
            );
            assert!(ws.take_control().is_empty());
        }
    }

    #[test]
    fn a_close_frame_is_an_error_with_its_code_and_reason() {
        let mut ws = WsLayer::new(BytesMut::new()).unwrap();
        let mut body = 1008u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"slow consumer");
        ws.raw.extend(server_frame(0x82, b"PING\r\n"));
        ws.raw.extend(server_frame(0x88, &body));
        let mut app = BytesMut::new();
        let err = ws.decode(&mut app).unwrap_err().to_string();
        assert_eq!(&app[..], b"PING\r\n");
        assert!(err.contains("1008 slow consumer"), "{err}");
    }

    #[test]
    fn a_broken_server_frame_is_an_error() {
        for frame in [
            vec![0x82, 0x81, 1, 2, 3, 4, b'x'], // masked
            vec![0xC2, 0x01, b'x'],             // RSV1: no compression was negotiated
            vec![0x83, 0x00],                   // reserved opcode
            vec![0x09, 0x00],                   // fragmented ping
        ] {
            let mut ws = WsLayer::new(BytesMut::from(&frame[..])).unwrap();
            assert!(
                matches!(
                    ws.decode(&mut BytesMut::new()),
                    Err(DriverError::WebSocket(_))
                ),
                "{frame:?}"
            );
        }
    }
}

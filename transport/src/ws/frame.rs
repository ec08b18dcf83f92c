//! WebSocket framing (RFC 6455, section 5), server side: a streaming decoder for client
//! frames and the encoder for server frames.
//!
//! Owns: the [`Decoder`], which takes client bytes in pieces of any size and appends the
//! messages' payloads (unmasked, inflated) to the caller's buffer as one byte stream,
//! answering pings and a close as it meets them; and the header of a server frame
//! ([`FrameHeader`]).
//!
//! Never: buffers a data frame. Payload bytes are unmasked (and inflated) as they arrive;
//! the decoder only keeps a cut frame header (at most 14 bytes) and a control frame's
//! payload (at most 125 bytes), both in fixed arrays. It never validates more than RFC
//! 6455 asks, and never panics on any input.
//!
//! Invariants: a frame or message over `max_message` is refused from its header, before
//! its payload arrives; a compressed message's inflated size is counted as it inflates
//! (see `deflate`); UTF-8 of a text message is checked across frames and reads.

use flate2::FlushDecompress;

use super::deflate::Inflater;
use super::utf8::Utf8Validator;
use crate::error::{CloseCode, WsError};

/// Frame opcodes (RFC 6455, section 5.2).
pub(crate) mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

const FIN: u8 = 0x80;
/// Set on the first frame of a compressed message (RFC 7692).
const RSV1: u8 = 0x40;
const RSV2_RSV3: u8 = 0x30;
const MASKED: u8 = 0x80;
/// Payload length field values that announce a 16-bit or 64-bit length.
const LEN_16: u8 = 126;
const LEN_64: u8 = 127;

/// The largest payload of a ping, pong or close frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
const MAX_HEADER: usize = 14;
/// Compressed payload unmasked per inflation call, in a stack buffer.
const UNMASK_STEP: usize = 4096;

/// XORs `buf` with the masking `key`, starting `offset` bytes into the key's cycle;
/// returns the offset after `buf`.
pub(crate) fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let k = [
        key[offset & 3],
        key[(offset + 1) & 3],
        key[(offset + 2) & 3],
        key[(offset + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // The remainder starts a multiple of 8 (so of 4) bytes in: the cycle is at `k[0]`.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
    (offset + buf.len()) & 3
}

/// The header of an unmasked, final server frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    /// The header of a final frame carrying `payload_len` bytes; `compressed` sets RSV1.
    pub(crate) fn new(opcode: u8, compressed: bool, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | if compressed { RSV1 } else { 0 } | opcode;
        let len = if payload_len < usize::from(LEN_16) {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = LEN_16;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = LEN_64;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends a server control frame (`payload` at most 125 bytes) to `out`.
pub(crate) fn push_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
    out.extend_from_slice(FrameHeader::new(opcode, false, payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit, at a character boundary).
pub(crate) fn push_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    push_control(out, opcode::CLOSE, &payload[..2 + cut]);
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    remaining: u64,
    key: [u8; 4],
    key_offset: usize,
}

/// The data message the frames belong to.
#[derive(Debug, Clone, Copy)]
struct Message {
    text: bool,
    compressed: bool,
    /// Payload bytes received (compressed bytes for a compressed message).
    received: u64,
    /// Inflated bytes made (compressed messages only).
    inflated: usize,
}

/// What one call to [`Decoder::decode`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Input bytes taken; fewer than given only when the output budget was reached.
    pub consumed: usize,
    /// The peer sent a close frame (with its code, if it gave one); it has been answered.
    pub closed: Option<Option<CloseCode>>,
}

/// Decodes client frames into one application byte stream.
pub(crate) struct Decoder {
    max_message: usize,
    compression: bool,
    /// Created with the first compressed message.
    inflater: Option<Inflater>,
    header: [u8; MAX_HEADER],
    header_len: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    utf8: Utf8Validator,
    control: [u8; MAX_CONTROL_PAYLOAD],
    control_len: usize,
    closed: bool,
}

impl Decoder {
    /// A decoder refusing frames and messages over `max_message` bytes, accepting
    /// compressed messages when permessage-deflate was negotiated.
    pub(crate) fn new(max_message: usize, compression: bool) -> Self {
        Self {
            max_message,
            compression,
            inflater: None,
            header: [0; MAX_HEADER],
            header_len: 0,
            frame: None,
            message: None,
            utf8: Utf8Validator::default(),
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
            closed: false,
        }
    }

    /// Decodes `input`, appending message payloads to `app` and control replies (pongs,
    /// the answer to a close) to `replies`. Stops early, between frames or pieces, once it
    /// has appended `budget` bytes; the rest of `input` must be offered again. After a
    /// close frame, the rest of the input is taken and ignored.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        app: &mut Vec<u8>,
        replies: &mut Vec<u8>,
        budget: usize,
    ) -> Result<Decoded, WsError> {
        let app_start = app.len();
        let mut out = Decoded::default();
        let mut pos = 0;
        while pos < input.len() && !self.closed {
            if app.len() - app_start >= budget {
                break;
            }
            match self.frame {
                None => pos += self.read_header(&input[pos..])?,
                Some(frame) => {
                    let n = (input.len() - pos)
                        .min(usize::try_from(frame.remaining).unwrap_or(usize::MAX));
                    self.payload(&input[pos..pos + n], app)?;
                    pos += n;
                }
            }
            if self.frame.is_some_and(|f| f.remaining == 0) {
                out.closed = self.end_frame(app, replies)?;
            }
        }
        out.consumed = if self.closed { input.len() } else { pos };
        Ok(out)
    }

    /// Takes header bytes from `input`; starts the frame once the header is whole.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = self.fill_header(input, 2);
        if self.header_len < 2 {
            return Ok(used);
        }
        let (b0, b1) = (self.header[0], self.header[1]);
        if self.header_len == 2 {
            // Fail at the first two bytes, before waiting for the rest of the header.
            self.check_start(b0, b1)?;
        }
        let length_bytes = match b1 & 0x7f {
            LEN_16 => 2,
            LEN_64 => 8,
            _ => 0,
        };
        let total = 2 + length_bytes + 4;
        used += self.fill_header(&input[used..], total);
        if self.header_len < total {
            return Ok(used);
        }
        let length = match length_bytes {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(bytes)
            }
        };
        if length >> 63 != 0 {
            return Err(WsError::InvalidLength);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.header[total - 4..total]);
        self.header_len = 0;
        self.start_frame(b0, length, key)?;
        Ok(used)
    }

    /// Copies header bytes from `input` until the header has `upto` bytes.
    fn fill_header(&mut self, input: &[u8], upto: usize) -> usize {
        let n = upto.saturating_sub(self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
        self.header_len += n;
        n
    }

    /// Checks what the first two header bytes say, against the message in progress.
    fn check_start(&self, b0: u8, b1: u8) -> Result<(), WsError> {
        if b0 & RSV2_RSV3 != 0 {
            return Err(WsError::ReservedBits);
        }
        if b1 & MASKED == 0 {
            return Err(WsError::Unmasked);
        }
        let (fin, compressed, len7) = (b0 & FIN != 0, b0 & RSV1 != 0, b1 & 0x7f);
        match b0 & 0x0f {
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if compressed {
                    return Err(WsError::CompressedControl);
                }
                if !fin {
                    return Err(WsError::FragmentedControl);
                }
                if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                    return Err(WsError::ControlTooLong);
                }
            }
            opcode::TEXT | opcode::BINARY => {
                if self.message.is_some() {
                    return Err(WsError::MessageInterrupted);
                }
                if compressed && !self.compression {
                    return Err(WsError::CompressedWithoutNegotiation);
                }
            }
            opcode::CONTINUATION => {
                if self.message.is_none() {
                    return Err(WsError::UnexpectedContinuation);
                }
                if compressed {
                    return Err(WsError::ReservedBits);
                }
            }
            reserved => return Err(WsError::ReservedOpcode(reserved)),
        }
        Ok(())
    }

    /// Starts a frame whose header is whole (and checked by `check_start`).
    fn start_frame(&mut self, b0: u8, length: u64, key: [u8; 4]) -> Result<(), WsError> {
        let opcode = b0 & 0x0f;
        if matches!(opcode, opcode::TEXT | opcode::BINARY) {
            self.message = Some(Message {
                text: opcode == opcode::TEXT,
                compressed: b0 & RSV1 != 0,
                received: 0,
                inflated: 0,
            });
        }
        if opcode < opcode::CLOSE {
            if let Some(message) = &mut self.message {
                message.received = message.received.saturating_add(length);
                if message.received > self.max_message as u64 {
                    return Err(WsError::MessageTooBig {
                        max: self.max_message,
                    });
                }
            }
        }
        self.frame = Some(Frame {
            opcode,
            fin: b0 & FIN != 0,
            remaining: length,
            key,
            key_offset: 0,
        });
        Ok(())
    }

    /// Takes payload bytes of the current frame (never more than it has left).
    fn payload(&mut self, chunk: &[u8], app: &mut Vec<u8>) -> Result<(), WsError> {
        let Some(frame) = &mut self.frame else {
            return Ok(());
        };
        frame.remaining -= chunk.len() as u64;
        let (key, offset) = (frame.key, frame.key_offset);
        frame.key_offset = (offset + chunk.len()) & 3;
        if frame.opcode >= opcode::CLOSE {
            let to = self.control_len + chunk.len();
            self.control[self.control_len..to].copy_from_slice(chunk);
            unmask(&mut self.control[self.control_len..to], key, offset);
            self.control_len = to;
            return Ok(());
        }
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        let start = app.len();
        if message.compressed {
            let inflater = self.inflater.get_or_insert_with(Inflater::new);
            let mut offset = offset;
            for piece in chunk.chunks(UNMASK_STEP) {
                let mut buf = [0u8; UNMASK_STEP];
                let buf = &mut buf[..piece.len()];
                buf.copy_from_slice(piece);
                offset = unmask(buf, key, offset);
                inflater.inflate(
                    buf,
                    app,
                    &mut message.inflated,
                    self.max_message,
                    FlushDecompress::None,
                )?;
            }
        } else {
            app.extend_from_slice(chunk);
            unmask(&mut app[start..], key, offset);
        }
        if message.text {
            self.utf8
                .feed(&app[start..])
                .map_err(|_| WsError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Acts on a frame whose payload is complete.
    fn end_frame(
        &mut self,
        app: &mut Vec<u8>,
        replies: &mut Vec<u8>,
    ) -> Result<Option<Option<CloseCode>>, WsError> {
        let Some(frame) = self.frame.take() else {
            return Ok(None);
        };
        let control_len = std::mem::take(&mut self.control_len);
        let control = &self.control[..control_len];
        match frame.opcode {
            opcode::PING => push_control(replies, opcode::PONG, control),
            opcode::PONG => {}
            opcode::CLOSE => {
                let code = match control {
                    [] => None,
                    [_] => return Err(WsError::ClosePayload),
                    [hi, lo, reason @ ..] => {
                        let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                        if !code.is_sendable() {
                            return Err(WsError::CloseCode(code.0));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(WsError::CloseReason);
                        }
                        Some(code)
                    }
                };
                match code {
                    Some(code) => push_close(replies, code, ""),
                    None => push_control(replies, opcode::CLOSE, &[]),
                }
                self.closed = true;
                return Ok(Some(code));
            }
            _ if frame.fin => self.end_message(app)?,
            _ => {}
        }
        Ok(None)
    }

    /// Ends the data message whose final frame is complete.
    fn end_message(&mut self, app: &mut Vec<u8>) -> Result<(), WsError> {
        let Some(mut message) = self.message.take() else {
            return Ok(());
        };
        let start = app.len();
        if message.compressed {
            let inflater = self.inflater.get_or_insert_with(Inflater::new);
            inflater.finish_message(app, &mut message.inflated, self.max_message)?;
        }
        if message.text {
            self.utf8
                .feed(&app[start..])
                .and_then(|()| self.utf8.finish())
                .map_err(|_| WsError::InvalidUtf8)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unmask_agrees_with_the_bytewise_definition_at_every_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        for offset in 0..4 {
            let mut fast = data.clone();
            let end = unmask(&mut fast, key, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(offset + i) & 3])
                .collect();
            assert_eq!(fast, slow, "offset {offset}");
            assert_eq!(end, (offset + data.len()) & 3);
        }
    }

    #[test]
    fn header_lengths_switch_at_126_and_65536() {
        assert_eq!(
            FrameHeader::new(opcode::BINARY, false, 125).as_bytes(),
            [0x82, 125]
        );
        assert_eq!(
            FrameHeader::new(opcode::BINARY, false, 126).as_bytes(),
            [0x82, 126, 0, 126]
        );
        assert_eq!(
            FrameHeader::new(opcode::BINARY, true, 65536).as_bytes(),
            [0xc2, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        let mut out = Vec::new();
        push_close(&mut out, CloseCode::PROTOCOL_ERROR, &"é".repeat(100));
        // 2 header bytes, 2 code bytes, 61 two-byte characters (122 bytes, not 123).
        assert_eq!(out.len(), 2 + 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    proptest! {
        #[test]
        fn unmask_in_two_pieces_equals_one(data in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..64, key in any::<[u8; 4]>()) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            unmask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            let offset = unmask(a, key, 0);
            unmask(b, key, offset);
            prop_assert_eq!(whole, pieces);
        }
    }
}

//! Incremental decoders for both directions of the binary protocol.
//!
//! Owns: the framing both directions share (reading the 4-byte length, refusing it against
//! [`Limits::max_frame_len`] before buffering, cutting the frame out of the caller's buffer
//! with one `split_to(..).freeze()`) and the dispatch to the client's or server's frame
//! bodies. Keeps no state between calls: the buffer is the only state, so feeding bytes in
//! any chunking gives the same frames.

use bytes::{Buf, Bytes, BytesMut};

use super::{client, server, BinaryError, ClientFrame, Limits, ServerFrame};

/// The frame header: `u32` length, `u8` type, `u8` flags.
const LEN_SIZE: usize = 4;
/// Type and flags: the least a length may announce.
const MIN_FRAME_LEN: usize = 2;

/// Cuts the next whole frame from the front of `buf` and hands its type, flags and body to
/// `body`.
///
/// On a fatal framing error the 4 length bytes are consumed (the caller closes the
/// connection; nothing after them can be trusted). Errors from `body` come after the whole
/// frame was consumed.
fn decode_frame<F>(
    limits: &Limits,
    buf: &mut BytesMut,
    body: impl FnOnce(u8, u8, Bytes, &Limits) -> Result<F, BinaryError>,
) -> Result<Option<F>, BinaryError> {
    let Some(header) = buf.get(..LEN_SIZE) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; LEN_SIZE];
    len_bytes.copy_from_slice(header);
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
    if len < MIN_FRAME_LEN {
        buf.advance(LEN_SIZE);
        return Err(BinaryError::FrameTooShort { len });
    }
    let max = limits.max_frame_len();
    if len > max {
        buf.advance(LEN_SIZE);
        return Err(BinaryError::FrameTooLarge { len, max });
    }
    if buf.len() - LEN_SIZE < len {
        // Make room for the rest of this frame at once; bounded by the check above.
        buf.reserve(LEN_SIZE + len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_SIZE);
    let mut frame = buf.split_to(len).freeze();
    let ty = frame.get_u8();
    let flags = frame.get_u8();
    body(ty, flags, frame, limits).map(Some)
}

/// Decodes the frames a client sends (used by the server).
///
/// Call [`decode`](Self::decode) with the bytes received so far, after the preface
/// ([`Preface::decode`](super::Preface::decode)) was taken off the front. It never asks
/// its caller to hold more than `4 + limits.max_frame_len()` bytes and never panics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFrameDecoder {
    limits: Limits,
}

impl ClientFrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ClientFrameDecoder { limits }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One whole frame from the front of `buf` (its bytes removed), `Ok(None)` when more
    /// bytes are needed, or an error; see [`BinaryError::is_fatal`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientFrame>, BinaryError> {
        decode_frame(&self.limits, buf, client::decode)
    }
}

/// Decodes the frames a server sends (used by clients).
///
/// Call [`decode`](Self::decode) with the bytes received so far. It never asks its caller
/// to hold more than `4 + limits.max_frame_len()` bytes and never panics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFrameDecoder {
    limits: Limits,
}

impl ServerFrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ServerFrameDecoder { limits }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One whole frame from the front of `buf` (its bytes removed), `Ok(None)` when more
    /// bytes are needed, or an error; see [`BinaryError::is_fatal`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerFrame>, BinaryError> {
        decode_frame(&self.limits, buf, server::decode)
    }
}

//! Encoders for both directions of the binary protocol.
//!
//! Owns: the frame envelope (`u32` length, type, flags) around the bodies that
//! `client.rs` and `server.rs` write. The length is written last, once the body's size is
//! known, so each frame is written in one pass straight into the caller's buffer.
//!
//! Encoders check only what the wire cannot represent (a field longer than its length
//! prefix, a frame over `u32::MAX`): they write a frame with priority 9 or an invalid
//! subject if asked to, which lets tests produce what a decoder must refuse. On error they
//! leave `buf` as it was.

use bytes::{BufMut, BytesMut};

use super::coding::Writer;
use super::{ClientFrame, EncodeError, ServerFrame};

fn put_frame(
    buf: &mut BytesMut,
    (ty, flags): (u8, u8),
    body: impl FnOnce(&mut Writer) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u8(ty);
    buf.put_u8(flags);
    let written = body(&mut Writer { buf });
    let len = buf.len() - start - 4;
    let result =
        written.and_then(|()| u32::try_from(len).map_err(|_| EncodeError::FrameTooLong { len }));
    match result {
        Ok(len) => {
            buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Appends one client frame to `buf`.
pub fn encode_client_frame(frame: &ClientFrame, buf: &mut BytesMut) -> Result<(), EncodeError> {
    put_frame(buf, frame.header(), |w| frame.put_body(w))
}

/// Appends one server frame to `buf`.
pub fn encode_server_frame(frame: &ServerFrame, buf: &mut BytesMut) -> Result<(), EncodeError> {
    put_frame(buf, frame.header(), |w| frame.put_body(w))
}

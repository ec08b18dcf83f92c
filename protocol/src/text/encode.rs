//! Encoders for both directions of the text protocol. Every line ends with `\r\n`.

use bytes::BytesMut;

use super::{ClientOp, ServerOp};

/// Appends a client operation to `dst`.
pub fn encode_client_op(op: &ClientOp, dst: &mut BytesMut) {
    todo!("{op:?} {dst:?}")
}

/// Appends a server operation to `dst`.
pub fn encode_server_op(op: &ServerOp, dst: &mut BytesMut) {
    todo!("{op:?} {dst:?}")
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
    todo!("{dst:?} {subject:?} {sid:?} {reply:?} {headers_len:?} {payload_len}")
}

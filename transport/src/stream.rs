//! Byte streams: the layer that carries an ordered stream of bytes over the socket, plain
//! ([`PlainStream`]) or encrypted (`tls::TlsStream`). WebSocket framing sits on one of them.
//!
//! Owns: the [`ByteStream`] contract the upper layers rely on, and the plain stream.
//!
//! Never: frames messages, reads a socket, or reorders bytes: what `queue` and `send` take
//! leaves in the order given, and bytes `queue`d before a `send` leave before it.

use crate::error::TransportError;

/// What a [`ByteStream::read_into`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamRead {
    /// Socket bytes taken (the rest must be offered again).
    pub consumed: usize,
    /// Decoded bytes are still buffered inside the stream: call again, even with no new
    /// socket bytes.
    pub again: bool,
    /// The stream's own handshake completed during this call.
    pub handshake_done: bool,
    /// The peer closed the stream cleanly (TLS close_notify).
    pub peer_closed: bool,
}

/// Where a stream hands decoded bytes: it returns how many it took, and takes fewer only
/// when it wants no more for now (the stream then stops and keeps the rest).
pub(crate) type Sink<'a> = dyn FnMut(&[u8]) -> Result<usize, TransportError> + 'a;

/// An ordered byte stream over the socket.
pub(crate) trait ByteStream {
    /// Takes socket bytes and hands the decoded stream bytes to `sink`.
    fn read_into(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError>;

    /// Encodes `parts`, in order and as one write, into `socket_out`, after everything
    /// queued before.
    fn send(&mut self, parts: &[&[u8]], socket_out: &mut Vec<u8>) -> Result<(), TransportError>;

    /// Queues bytes of the layer above (a handshake reply, a control frame) to go out with
    /// the next `take_pending` or `send`.
    fn queue(&mut self, bytes: &[u8]) -> Result<(), TransportError>;

    /// Moves everything queued (encoded) into `socket_out`.
    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError>;

    /// Whether `take_pending` would produce bytes.
    fn has_pending(&self) -> bool;

    /// Queues the stream's own goodbye (TLS close_notify; nothing for plain).
    fn close(&mut self);

    /// Whether the stream's own handshake is done, so bytes `send` takes go out now.
    fn is_ready(&self) -> bool;

    /// Gives back what a quiet stream need not keep (a TLS 1.3 stream's expanded keys and
    /// input buffer); made again at the next read or write. Nothing for plain.
    fn shrink(&mut self) {}
}

/// Plain TCP: socket bytes are stream bytes.
#[derive(Debug, Default)]
pub(crate) struct PlainStream {
    /// Bytes queued by the layer above, in order.
    pending: Vec<u8>,
}

impl PlainStream {
    /// Takes the bytes queued so far, to hand them to the stream that replaces this one.
    pub(crate) fn take_queued(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

impl ByteStream for PlainStream {
    fn read_into(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError> {
        let consumed = if socket_in.is_empty() {
            0
        } else {
            sink(socket_in)?
        };
        Ok(StreamRead {
            consumed,
            ..StreamRead::default()
        })
    }

    fn send(&mut self, parts: &[&[u8]], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.take_pending(socket_out)?;
        for part in parts {
            socket_out.extend_from_slice(part);
        }
        Ok(())
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        if !self.pending.is_empty() {
            socket_out.append(&mut self.pending);
        }
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn close(&mut self) {}

    fn is_ready(&self) -> bool {
        true
    }
}

//! The TLS layer of a connection: a rustls client session, bytes in and bytes out.
//!
//! Owns: one `rustls::ClientConnection` — decrypting the records the socket read
//! ([`TlsLayer::feed`], plaintext appended to the caller's buffer), encrypting what the
//! driver writes ([`TlsLayer::encrypt`]) and handing over the records rustls wants sent
//! ([`TlsLayer::write_pending`]: handshake messages, alerts, application data).
//!
//! Never: reads a socket or waits. [`super::socket`] reads the socket and feeds the bytes
//! in; this layer never sees a descriptor, so a handshake's deadline is the socket's.
//! Never holds plaintext back: every [`TlsLayer::feed`] drains what it decrypted, so a
//! caller polling the descriptor never misses data buffered here.

use std::io::{self, Read, Write};

use bytes::BytesMut;
use rustls::ClientConnection;

use super::dial::TlsClient;
use super::DriverError;

/// One TLS client session.
pub(crate) struct TlsLayer {
    conn: ClientConnection,
    /// The broker sent `close_notify`.
    peer_closed: bool,
}

impl TlsLayer {
    /// A session that will send its `ClientHello` on the first [`TlsLayer::write_pending`].
    pub(crate) fn new(client: &TlsClient) -> Result<Self, DriverError> {
        let mut conn = ClientConnection::new(client.config.clone(), client.server_name.clone())
            .map_err(|e| DriverError::Tls(e.to_string()))?;
        // What the driver writes is bounded by its write batch; rustls need not bound it
        // again (its limit would make `encrypt` accept part of a batch).
        conn.set_buffer_limit(None);
        Ok(TlsLayer {
            conn,
            peer_closed: false,
        })
    }

    /// True until the handshake is complete.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once the broker sent `close_notify`.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Decrypts `wire` (bytes the socket read, whole records or not) and appends the
    /// plaintext to `app`. A partial record stays inside rustls until the rest comes.
    pub(crate) fn feed(&mut self, mut wire: &[u8], app: &mut BytesMut) -> Result<(), DriverError> {
        while !wire.is_empty() {
            let n = self.conn.read_tls(&mut wire)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| DriverError::Tls(e.to_string()))?;
            let plain = state.plaintext_bytes_to_read();
            if plain > 0 {
                let start = app.len();
                app.resize(start + plain, 0);
                self.conn.reader().read_exact(&mut app[start..])?;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
            if n == 0 {
                // rustls takes nothing more after the peer's close_notify.
                break;
            }
        }
        Ok(())
    }

    /// Encrypts `plain` into records, to go out with the next [`TlsLayer::write_pending`].
    pub(crate) fn encrypt(&mut self, plain: &[u8]) -> Result<(), DriverError> {
        self.conn.writer().write_all(plain)?;
        Ok(())
    }

    /// Writes every record rustls has queued to `out` (blocking as `out` does).
    pub(crate) fn write_pending(&mut self, out: &mut dyn Write) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }
}

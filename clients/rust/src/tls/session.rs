//! One connection's TLS session, driven without blocking by the I/O thread.
//!
//! Owns: a `rustls::ClientConnection` and the three moves the I/O thread makes with it:
//! [`receive`](TlsSession::receive) (ciphertext the socket read in, plaintext appended to
//! the connection's read buffer), [`send`](TlsSession::send) (frames encrypted into
//! rustls's bounded send buffer) and [`flush`](TlsSession::flush) (records written to the
//! socket until it would block); plus `close_notify`, and the hint that turns a rustls
//! error into advice ([`hint`]).
//!
//! Contract: the caller reads the socket itself, until `WouldBlock`, and hands every chunk
//! to `receive`; it calls `flush` before `send` and whenever `wants_write` says so (after a
//! `receive` that produced handshake messages, after `close`). Plaintext sent before the
//! handshake completes is held by rustls and goes out, encrypted, right after it, so a
//! `HELLO` can be sent at once: it never leaves in clear.
//!
//! Never: blocks or touches a socket other than through the `Write` handed to `flush`;
//! copies plaintext more than once (rustls's buffer straight into the read buffer); keeps
//! more than rustls's limits (16 KiB of received plaintext, 64 KiB of unsent data).

use std::io::{self, BufRead, IoSlice, Write};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, ClientConnection, InvalidMessage};

/// A client TLS session over one TCP connection.
pub(crate) struct TlsSession {
    conn: ClientConnection,
    /// A client certificate is configured (changes the advice for a refused handshake).
    has_client_cert: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("wants_write", &self.conn.wants_write())
            .finish()
    }
}

impl TlsSession {
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        has_client_cert: bool,
    ) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: ClientConnection::new(config, server_name)?,
            has_client_cert,
        })
    }

    /// True until the handshake has completed.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True when records (handshake messages, data, alerts) wait for [`flush`](Self::flush).
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Decrypts `ciphertext` (all of it) and appends the plaintext to `plaintext`.
    /// Returns true when the server has closed the session (`close_notify`); bytes after
    /// that are ignored. On an error, the plaintext of the records before it has been
    /// appended, and rustls has queued an alert for [`flush`](Self::flush).
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut BytesMut,
    ) -> Result<bool, rustls::Error> {
        while !ciphertext.is_empty() {
            // From a slice, `read_tls` takes what its buffer has room for (a few KiB, or a
            // whole record): the loop feeds it piece by piece, draining the plaintext after
            // each piece so rustls's received-plaintext limit is never reached.
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => return Ok(true), // close_notify was received before
                Ok(_) => {}
                Err(e) => return Err(rustls::Error::General(format!("reading TLS records: {e}"))),
            }
            let processed = self.conn.process_new_packets();
            let closed = self.drain(plaintext);
            match processed {
                Err(e) => return Err(e),
                Ok(state) if state.peer_has_closed() || closed => return Ok(true),
                Ok(_) => {}
            }
        }
        Ok(false)
    }

    /// Moves the decrypted plaintext into `plaintext`; true when the session is closed.
    fn drain(&mut self, plaintext: &mut BytesMut) -> bool {
        let mut reader = self.conn.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => return true,
                Ok(chunk) => {
                    let n = chunk.len();
                    plaintext.extend_from_slice(chunk);
                    reader.consume(n);
                }
                // Nothing more for now (`WouldBlock`); other errors (an unclean end, which
                // cannot happen here since the socket's end is never fed to rustls) are
                // reported by the caller from the socket.
                Err(_) => return false,
            }
        }
    }

    /// Encrypts as much of `slices` as rustls's send buffer takes (before the handshake
    /// completes: holds it); returns the number of plaintext bytes taken, 0 when the
    /// buffer is full (flush first).
    pub(crate) fn send(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.conn.writer().write_vectored(slices)
    }

    /// Writes pending records to `socket` until none are left (true) or it would block
    /// (false).
    pub(crate) fn flush(&mut self, socket: &mut impl Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a `close_notify` alert (sent by the next [`flush`](Self::flush)).
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Advice for a failed session, when there is any to give.
    pub(crate) fn hint(&self, error: &rustls::Error) -> Option<&'static str> {
        hint(error, self.has_client_cert)
    }
}

/// What a TLS failure most likely means, in the words of the fix.
pub(crate) fn hint(error: &rustls::Error, has_client_cert: bool) -> Option<&'static str> {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)
        | rustls::Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion)
        | rustls::Error::InvalidMessage(InvalidMessage::MessageTooLarge) => Some(
            "the server did not answer in TLS: is TLS on at the server, and is this its binary port?",
        ),
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => Some(
            "the server's certificate is not signed by a trusted CA: give the CA that signed it, as a PEM file",
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => Some(
            "the server's certificate does not carry the name connected to: connect by a name it carries, or set the server name to one",
        ),
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            Some("the server's certificate has expired (or this machine's clock is wrong)")
        }
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) if !has_client_cert => {
            Some("the server requires a client certificate: give one and its key")
        }
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown,
        ) if has_client_cert => {
            Some("the server refused this client's certificate: is it signed by a CA the server trusts?")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    /// A client session trusting a fresh self-signed `localhost` certificate, and a server
    /// session presenting it.
    fn pair() -> (TlsSession, ServerConnection) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        (
            TlsSession::new(Arc::new(client), name, false).unwrap(),
            ServerConnection::new(Arc::new(server)).unwrap(),
        )
    }

    /// A socket that takes at most `max` bytes per write and would block on every other
    /// call.
    struct Choppy {
        taken: Vec<u8>,
        max: usize,
        blocked: bool,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.blocked = !self.blocked;
            if !self.blocked {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.max);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Runs the client against the server until both have all the data, the client
    /// writing through a socket that takes `max` bytes at most and blocks every other
    /// call, and receiving the server's records in pieces of `piece` bytes.
    fn exchange(max: usize, piece: usize) {
        let (mut client, mut server) = pair();
        server.set_buffer_limit(None);
        let up = data(150_000, 1);
        let down = data(150_000, 2);
        let mut up_sent = 0;
        let mut down_queued = false;
        let mut server_got = Vec::new();
        let mut client_got = BytesMut::new();
        let mut socket = Choppy {
            taken: Vec::new(),
            max,
            blocked: false,
        };
        for _round in 0..1_000_000 {
            // Client: records out first, then more plaintext (held until the handshake is
            // done, up to rustls's limit).
            let all_out = client.flush(&mut socket).unwrap();
            if all_out && up_sent < up.len() {
                up_sent += client.send(&[IoSlice::new(&up[up_sent..])]).unwrap();
            }
            // Server: reads what the socket took, answers.
            let mut incoming = &socket.taken[..];
            while !incoming.is_empty() {
                server.read_tls(&mut incoming).unwrap();
                server.process_new_packets().unwrap();
            }
            socket.taken.clear();
            let mut buf = [0u8; 4096];
            while let Ok(n) = server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                server_got.extend_from_slice(&buf[..n]);
            }
            if !server.is_handshaking() && !down_queued {
                server.writer().write_all(&down).unwrap();
                down_queued = true;
            }
            let mut records = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut records).unwrap();
            }
            for chunk in records.chunks(piece) {
                assert!(!client.receive(chunk, &mut client_got).unwrap());
            }
            if server_got.len() == up.len() && client_got.len() == down.len() {
                assert_eq!(server_got, up, "max {max}, piece {piece}");
                assert_eq!(&client_got[..], &down[..], "max {max}, piece {piece}");
                return;
            }
        }
        panic!("no progress: max {max}, piece {piece}");
    }

    #[test]
    fn data_crosses_both_ways_whatever_the_socket_takes_and_however_records_are_cut() {
        for (max, piece) in [(1, 1), (7, 3), (100, 1000), (5000, 17), (1 << 20, 1 << 20)] {
            exchange(max, piece);
        }
    }

    #[test]
    fn plaintext_before_the_handshake_is_held_up_to_the_limit_never_sent_in_clear() {
        let (mut client, _server) = pair();
        let hello = data(100_000, 3);
        let taken = client.send(&[IoSlice::new(&hello)]).unwrap();
        assert!(taken > 0 && taken < hello.len(), "took {taken}");
        assert_eq!(client.send(&[IoSlice::new(&hello[taken..])]).unwrap(), 0);
        // Only the ClientHello goes out.
        let mut out = Vec::new();
        assert!(client.flush(&mut out).unwrap());
        assert_eq!(out[0], 0x16, "a handshake record");
        assert!(
            !out.windows(16).any(|w| w == &hello[..16]),
            "no plaintext on the wire"
        );
    }

    #[test]
    fn the_servers_close_notify_ends_the_session_after_its_data() {
        let (mut client, mut server) = pair();
        let mut plain = BytesMut::new();
        loop {
            let mut out = Vec::new();
            client.flush(&mut out).unwrap();
            let mut incoming = &out[..];
            while !incoming.is_empty() {
                server.read_tls(&mut incoming).unwrap();
                server.process_new_packets().unwrap();
            }
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            client.receive(&back, &mut plain).unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        server.writer().write_all(b"last words").unwrap();
        server.send_close_notify();
        let mut back = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut back).unwrap();
        }
        assert!(client.receive(&back, &mut plain).unwrap(), "closed");
        assert_eq!(&plain[..], b"last words");
    }

    #[test]
    fn bytes_that_are_not_tls_are_an_error_with_a_hint() {
        let (mut client, _server) = pair();
        let mut out = Vec::new();
        client.flush(&mut out).unwrap();
        let mut plain = BytesMut::new();
        // What a NATS text port says first.
        let err = client
            .receive(b"INFO {\"server_id\":\"x\"}\r\n", &mut plain)
            .unwrap_err();
        assert!(matches!(err, rustls::Error::InvalidMessage(_)), "{err}");
        assert!(client.hint(&err).unwrap().contains("did not answer in TLS"));
        // rustls queued an alert for the server.
        assert!(client.wants_write());
        assert!(plain.is_empty());
    }

    #[test]
    fn hints_depend_on_whether_a_client_certificate_was_given() {
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(hint(&required, false)
            .unwrap()
            .contains("requires a client certificate"));
        assert_eq!(hint(&required, true), None);
        let unknown = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(hint(&unknown, true)
            .unwrap()
            .contains("refused this client's certificate"));
        assert_eq!(hint(&unknown, false), None);
        assert_eq!(hint(&rustls::Error::DecryptError, true), None);
    }
}

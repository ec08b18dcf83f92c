//! The server name (SNI) a client asked for, read from its ClientHello.
//!
//! Owns: finding the `server_name` extension in the first handshake message of a
//! connection, as the client sent it (TLS records of type handshake, possibly several).
//! rustls's unbuffered server connection, which [`super::TlsStream`] drives, does not
//! report the name it read; this reads the same bytes and keeps the name as rustls does:
//! the first `host_name` entry, lower-cased, and none when it is not a DNS name (an IP
//! address).
//!
//! Never: decides anything about the handshake: rustls parses the ClientHello itself and
//! refuses a malformed one, and the stream reports this name only once the handshake is
//! complete. Never holds more than one handshake message's records (bounded by
//! [`MAX_HELLO`]), and nothing once the name is read.

use rustls::pki_types::DnsName;

/// Bytes of records gathered at most: rustls refuses a handshake message over 64 KiB.
const MAX_HELLO: usize = 0x1_0000 + 1024;

/// The content type of a TLS handshake record.
const HANDSHAKE: u8 = 0x16;

/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// The `server_name` extension (RFC 6066).
const SERVER_NAME: u16 = 0;

/// The `host_name` entry of a server name list.
const HOST_NAME: u8 = 0;

/// Gathers the records that carry the ClientHello, then keeps its server name.
///
/// Linear in what it is fed: each record's payload is appended to the message once, when
/// the record is complete (a client that sends its ClientHello a byte at a time, or in
/// records of one byte, costs no more than one that sends it whole).
///
/// Two words in the connection's session: the buffers while reading are boxed apart and
/// freed with the box once the hello is read (the session stays within an allocator size
/// class, `tests/tls_alloc.rs`).
#[derive(Debug)]
pub(crate) enum HelloReader {
    /// The ClientHello is not complete yet.
    Reading(Box<Gathered>),
    /// It has been read (or cannot be): the name it carried.
    Done(Option<Box<str>>),
}

/// What has come of the ClientHello so far.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// The client's bytes of a record not complete yet.
    pending: Vec<u8>,
    /// The payloads of the handshake records complete so far, joined.
    message: Vec<u8>,
}

impl Default for HelloReader {
    fn default() -> Self {
        HelloReader::Reading(Box::default())
    }
}

impl HelloReader {
    /// Takes the next bytes the client sent, until the ClientHello is complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let HelloReader::Reading(g) = self else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        let room = MAX_HELLO.saturating_sub(g.pending.len() + g.message.len());
        g.pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let mut at = 0;
        let found = loop {
            let Some(header) = g.pending.get(at..at + 5) else {
                break None;
            };
            if header[0] != HANDSHAKE {
                // Not a handshake: there is no ClientHello to read.
                break Some(None);
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let Some(payload) = g.pending.get(at + 5..at + 5 + len) else {
                break None;
            };
            g.message.extend_from_slice(payload);
            at += 5 + len;
            if let Some(whole) = whole_message(&g.message) {
                break Some(server_name(whole));
            }
        };
        g.pending.drain(..at);
        *self = match found {
            Some(name) => HelloReader::Done(name),
            None if g.pending.len() + g.message.len() < MAX_HELLO => return,
            // Larger than any handshake message rustls accepts: it refuses it.
            None => HelloReader::Done(None),
        };
    }

    /// The server name, kept apart from the reader.
    pub(crate) fn into_name(self) -> Option<Box<str>> {
        match self {
            HelloReader::Done(name) => name,
            HelloReader::Reading(_) => None,
        }
    }

    /// The server name, once the ClientHello has been read.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            HelloReader::Done(name) => name.as_deref(),
            HelloReader::Reading(_) => None,
        }
    }
}

/// The first handshake message in `joined` (header included), once it is whole.
fn whole_message(joined: &[u8]) -> Option<&[u8]> {
    let header = joined.get(..4)?;
    let body = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    joined.get(..4 + body)
}

/// A big-endian reader over a message, `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A vector with a length of `width` bytes before it.
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => self.u8()?,
            _ => self.u16()?,
        };
        self.take(len)
    }
}

/// The server name of a ClientHello (`message`, from its handshake header on).
fn server_name(message: &[u8]) -> Option<Box<str>> {
    let mut r = Reader(message);
    if r.u8()? != usize::from(CLIENT_HELLO) {
        return None;
    }
    r.take(3)?; // The message's length.
    r.take(2 + 32)?; // legacy_version, random.
    r.vector(1)?; // legacy_session_id.
    r.vector(2)?; // cipher_suites.
    r.vector(1)?; // legacy_compression_methods.
    let mut extensions = Reader(r.vector(2)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vector(2)?;
        if kind != usize::from(SERVER_NAME) {
            continue;
        }
        let mut list = Reader(Reader(data).vector(2)?);
        if list.u8()? != usize::from(HOST_NAME) {
            return None;
        }
        let name = std::str::from_utf8(list.vector(2)?).ok()?;
        let name = DnsName::try_from(name).ok()?.to_lowercase_owned();
        return Some(name.as_ref().into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with `extensions`, as records of at most `record` payload bytes.
    fn hello(extensions: &[u8], record: usize) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7; 32]);
        body.extend([0]); // No session id.
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut message = vec![CLIENT_HELLO];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        let mut records = Vec::new();
        for payload in message.chunks(record) {
            records.extend([HANDSHAKE, 3, 1]);
            records.extend((payload.len() as u16).to_be_bytes());
            records.extend(payload);
        }
        records
    }

    fn sni(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![HOST_NAME];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut ext = SERVER_NAME.to_be_bytes().to_vec();
        ext.extend((list.len() as u16).to_be_bytes());
        ext.extend(list);
        ext
    }

    fn read(bytes: &[u8], step: usize) -> HelloReader {
        let mut reader = HelloReader::default();
        for piece in bytes.chunks(step) {
            reader.feed(piece);
        }
        reader
    }

    #[test]
    fn the_name_is_found_lower_cased_whatever_the_records_and_the_reads() {
        let mut extensions = vec![0, 10, 0, 2, 0, 29]; // supported_groups first.
        extensions.extend(sni(b"Tern.Example"));
        for record in [1, 7, 500] {
            for step in [1, 3, 1000] {
                let reader = read(&hello(&extensions, record), step);
                // Done: the buffers are gone with their box.
                assert!(matches!(reader, HelloReader::Done(_)));
                assert_eq!(reader.name(), Some("tern.example"), "{record} {step}");
            }
        }
    }

    #[test]
    fn no_extension_an_ip_address_or_no_handshake_give_no_name() {
        assert_eq!(read(&hello(&[], 100), 10).name(), None);
        let ip = read(&hello(&sni(b"127.0.0.1"), 100), 10);
        assert!(matches!(ip, HelloReader::Done(_)));
        assert_eq!(ip.name(), None);
        let plain = read(b"CONNECT {}\r\n", 4);
        assert!(matches!(plain, HelloReader::Done(_)));
        assert_eq!(plain.name(), None);
    }

    #[test]
    fn a_cut_hello_waits_and_junk_never_panics() {
        let whole = hello(&sni(b"localhost"), 100);
        let cut = read(&whole[..whole.len() - 1], 5);
        assert!(matches!(cut, HelloReader::Reading(_)));
        let mut junk = whole.clone();
        junk[60..].iter_mut().for_each(|b| *b = 0xff);
        let _ = read(&junk, 9).name();
    }
}

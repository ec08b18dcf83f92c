//! TLS 1.3 record protection after the handshake: what an established TLS 1.3 connection
//! keeps instead of rustls's connection state.
//!
//! Owns: the traffic secrets, keys, IVs and sequence numbers of both directions
//! ([`Records`]); sealing application data, alerts and KeyUpdate messages into records and
//! opening the client's records (RFC 8446, section 5); key updates both ways (section
//! 4.6.3), including the one the suite's confidentiality limit calls for; and the capture
//! of the traffic secrets while rustls runs the handshake ([`CaptureTrafficSecrets`]).
//!
//! Why: rustls keeps about 3.4 KiB per connection once its handshake is done (its
//! connection state, the expanded keys of both directions and the key schedule kept for
//! key updates), more than a whole plain connection costs the broker. A TLS 1.3 connection
//! needs only its two traffic secrets to go on: rustls runs the handshake, then hands over
//! the keys and sequence numbers (`dangerous_into_kernel_connection`, the API made for
//! kTLS) and is dropped. The expanded keys (ring's AES-GCM key schedule, 544 bytes a
//! direction) are made again when a quiet connection reads or writes after
//! [`Records::shrink`]: about 440 bytes of TLS stay per idle connection.
//!
//! The traffic secrets themselves are not in what rustls hands over (only the keys they
//! give). They are taken from rustls's key log, which it calls with them during the
//! handshake, synchronously inside the call that processes the client's records: the
//! configuration's [`CaptureTrafficSecrets`] puts them in a thread-local slot and the
//! session takes them right after that call returns, so they cannot reach another
//! connection. At the hand-over the keys and IVs derived from them must equal rustls's.
//!
//! Never: negotiates anything (rustls does the whole handshake and stays in charge of TLS
//! 1.2 connections), decrypts a record larger than the protocol allows (or takes a
//! plaintext over 2^14 + 1 bytes with its padding), takes more than
//! [`MAX_EMPTY_RECORDS`] empty records in a row, lets a peer make it update keys without
//! bound (at most [`MAX_KEY_UPDATES`] requests between two application data records, as
//! rustls and BoringSSL allow), or leaves a secret or key in memory it gives back (zeroed
//! when dropped). The session around it (`Established` in the parent module) opens
//! nothing after a fatal alert or the peer's close_notify.

use std::cell::RefCell;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, Error, ExtractedSecrets,
    HandshakeType, InvalidMessage, KeyLog, PeerMisbehaved,
};
use zeroize::Zeroize;

/// Record content types (RFC 8446, section 5.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// A record's header: type, legacy version (3, 3), length.
const HEADER: usize = 5;

/// The largest plaintext of one record.
const MAX_PLAINTEXT: usize = 1 << 14;

/// The largest encrypted body of one record: the plaintext, its content type and padding,
/// and the AEAD's expansion, at most 256 bytes in all.
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// The AEAD tag of every TLS 1.3 suite.
const TAG: usize = 16;

/// What one sealed record adds to its plaintext: header, content type, tag.
const OVERHEAD: usize = HEADER + 1 + TAG;

/// KeyUpdate requests accepted between two application data records.
const MAX_KEY_UPDATES: u8 = 32;

/// `user_canceled` alerts accepted in a connection's life (the only warning TLS 1.3 has
/// besides close_notify).
const MAX_WARNINGS: u8 = 4;

/// Empty application data records accepted in a row (rustls's bound): each costs a
/// decryption and brings nothing.
const MAX_EMPTY_RECORDS: u8 = 32;

/// A KeyUpdate handshake message: type, 24-bit length 1, then `update_not_requested` (0)
/// or `update_requested` (1).
const KEY_UPDATE_LEN: usize = 5;

/// The longest traffic secret (SHA-384).
const MAX_SECRET: usize = 48;

/// The traffic secrets rustls's key log gave for one handshake.
#[derive(Default, Clone)]
pub(crate) struct CapturedSecrets {
    client: Option<Secret>,
    server: Option<Secret>,
}

impl CapturedSecrets {
    /// Whether both directions' secrets are here.
    pub(crate) fn is_complete(&self) -> bool {
        self.client.is_some() && self.server.is_some()
    }

    /// Moves what the key log captured on this thread since the last call into
    /// `secrets` (allocated only when there is something).
    pub(crate) fn take_captured(secrets: &mut Option<Box<CapturedSecrets>>) {
        CAPTURED.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.client.is_none() && slot.server.is_none() {
                return;
            }
            let into = secrets.get_or_insert_with(Box::default);
            if let Some(client) = slot.client.take() {
                into.client = Some(client);
            }
            if let Some(server) = slot.server.take() {
                into.server = Some(server);
            }
        });
    }
}

#[derive(Clone)]
struct Secret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Secret {
    fn new(bytes: &[u8]) -> Option<Self> {
        let mut secret = Secret {
            bytes: [0; MAX_SECRET],
            len: u8::try_from(bytes.len()).ok()?,
        };
        secret.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(secret)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

thread_local! {
    /// The traffic secrets logged by the handshake step running on this thread, until
    /// its session takes them (right after the step).
    static CAPTURED: RefCell<CapturedSecrets> = RefCell::new(CapturedSecrets::default());
}

/// rustls's key log, set on every server configuration this crate builds: keeps the
/// application traffic secrets of the handshake step running on this thread for its
/// session (see the module header), and nothing else.
#[derive(Debug)]
pub(crate) struct CaptureTrafficSecrets;

const CLIENT_TRAFFIC_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

impl KeyLog for CaptureTrafficSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let Some(secret) = Secret::new(secret) else {
            return;
        };
        CAPTURED.with(|slot| {
            let mut slot = slot.borrow_mut();
            match label {
                CLIENT_TRAFFIC_SECRET => slot.client = Some(secret),
                SERVER_TRAFFIC_SECRET => slot.server = Some(secret),
                _ => {}
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_TRAFFIC_SECRET || label == SERVER_TRAFFIC_SECRET
    }
}

/// One direction's protection.
struct Direction {
    /// The current traffic secret: the next one is derived from it.
    secret: Secret,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    /// The next record's sequence number.
    seq: u64,
    /// The key, expanded for the AEAD; dropped by `shrink`, made again when needed.
    expanded: Option<Box<LessSafeKey>>,
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl Direction {
    fn new(suite: Suite, secret: Secret, seq: u64) -> Self {
        let mut dir = Direction {
            secret,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
            expanded: None,
        };
        dir.derive(suite);
        dir
    }

    /// Derives the key and IV from the secret (RFC 8446, section 7.3).
    fn derive(&mut self, suite: Suite) {
        let key_len = suite.aead.key_len();
        expand_label(
            suite.hash,
            self.secret.as_bytes(),
            b"key",
            &mut self.key[..key_len],
        );
        expand_label(suite.hash, self.secret.as_bytes(), b"iv", &mut self.iv);
        self.expanded = None;
    }

    /// Moves to the next traffic secret (a KeyUpdate).
    fn update(&mut self, suite: Suite) {
        let mut next = self.secret.clone();
        let len = usize::from(next.len);
        expand_label(
            suite.hash,
            self.secret.as_bytes(),
            b"traffic upd",
            &mut next.bytes[..len],
        );
        self.secret = next;
        self.seq = 0;
        self.derive(suite);
    }

    /// The expanded key, made now if `shrink` dropped it.
    fn key(&mut self, suite: Suite) -> &LessSafeKey {
        let key = &self.key[..suite.aead.key_len()];
        self.expanded.get_or_insert_with(|| {
            // The length matches the algorithm: `UnboundKey::new` cannot refuse it.
            let unbound = UnboundKey::new(suite.aead, key).expect("key length of the suite");
            Box::new(LessSafeKey::new(unbound))
        })
    }

    /// The nonce of the record `seq` (the IV xor the sequence number), and the next one.
    fn next_nonce(&mut self) -> Result<Nonce, Error> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(Error::EncryptError)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The suite's algorithms.
#[derive(Clone, Copy)]
struct Suite {
    aead: &'static aead::Algorithm,
    hash: hkdf::Algorithm,
}

/// What opening a record found in it.
pub(crate) enum Opened {
    /// Application data: this range of the record.
    Data(std::ops::Range<usize>),
    /// The peer's close_notify.
    CloseNotify,
    /// Nothing for the layer above: a KeyUpdate (ours, when it asked for one, is sealed
    /// into the output given), a warning alert.
    Nothing,
}

/// A TLS 1.3 connection's record protection, once its handshake is done.
pub(crate) struct Records {
    suite: Suite,
    tx: Direction,
    rx: Direction,
    /// Records sealed with one key before it is updated: the suite's confidentiality
    /// limit.
    tx_limit: u64,
    /// KeyUpdate requests the peer may still make before its next application data.
    key_updates_left: u8,
    /// `user_canceled` alerts the peer may still send.
    warnings_left: u8,
    /// Empty application data records since the last one with data.
    empty_in_a_row: u8,
    /// A handshake message cut across records (only a KeyUpdate is expected).
    partial: [u8; KEY_UPDATE_LEN],
    partial_len: u8,
    /// Our close_notify is sealed: a KeyUpdate the peer asks for is not answered (nothing
    /// follows a close_notify).
    closed: bool,
}

impl Records {
    /// Takes over from rustls: `captured` are the traffic secrets its key log gave,
    /// `extracted` the keys and sequence numbers it hands over, `limit` the suite's
    /// confidentiality limit. The keys derived from the secrets must be rustls's.
    pub(crate) fn new(
        captured: &CapturedSecrets,
        extracted: ExtractedSecrets,
        limit: u64,
    ) -> Result<Self, Error> {
        let mismatch = || Error::General("TLS 1.3 traffic secrets do not match the keys".into());
        let (Some(client), Some(server)) = (captured.client.clone(), captured.server.clone())
        else {
            return Err(Error::General(
                "TLS 1.3 traffic secrets not captured".into(),
            ));
        };
        let ((tx_seq, tx), (rx_seq, rx)) = (extracted.tx, extracted.rx);
        let suite = match &tx {
            ConnectionTrafficSecrets::Aes128Gcm { .. } => Suite {
                aead: &aead::AES_128_GCM,
                hash: hkdf::HKDF_SHA256,
            },
            ConnectionTrafficSecrets::Aes256Gcm { .. } => Suite {
                aead: &aead::AES_256_GCM,
                hash: hkdf::HKDF_SHA384,
            },
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Suite {
                aead: &aead::CHACHA20_POLY1305,
                hash: hkdf::HKDF_SHA256,
            },
            _ => return Err(Error::General("TLS 1.3 suite not known".into())),
        };
        let tx_dir = Direction::new(suite, server, tx_seq);
        let rx_dir = Direction::new(suite, client, rx_seq);
        if !same_keys(suite, &tx_dir, &tx) || !same_keys(suite, &rx_dir, &rx) {
            return Err(mismatch());
        }
        Ok(Records::with(suite, tx_dir, rx_dir, limit))
    }

    /// A fresh record layer over these directions.
    fn with(suite: Suite, tx: Direction, rx: Direction, tx_limit: u64) -> Records {
        Records {
            suite,
            tx,
            rx,
            tx_limit,
            key_updates_left: MAX_KEY_UPDATES,
            warnings_left: MAX_WARNINGS,
            empty_in_a_row: 0,
            partial: [0; KEY_UPDATE_LEN],
            partial_len: 0,
            closed: false,
        }
    }

    /// Drops the expanded keys (made again at the next record): what a quiet connection
    /// need not keep.
    pub(crate) fn shrink(&mut self) {
        self.tx.expanded = None;
        self.rx.expanded = None;
    }

    /// Seals `parts`, joined, as application data records into `out`.
    pub(crate) fn seal_data(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), Error> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        out.reserve(total + (total / MAX_PLAINTEXT + 1) * OVERHEAD);
        let (mut part, mut at) = (0, 0);
        let mut left = total;
        while left > 0 {
            let len = left.min(MAX_PLAINTEXT);
            let start = self.begin(out)?;
            let mut want = len;
            while want > 0 {
                let bytes = &parts[part][at..];
                let n = bytes.len().min(want);
                out.extend_from_slice(&bytes[..n]);
                want -= n;
                at += n;
                if at == parts[part].len() {
                    part += 1;
                    at = 0;
                }
            }
            self.finish(out, start, APPLICATION_DATA)?;
            left -= len;
        }
        Ok(())
    }

    /// Seals one record of `typ` with `payload` into `out`.
    fn seal(&mut self, typ: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let start = self.begin(out)?;
        out.extend_from_slice(payload);
        self.finish(out, start, typ)
    }

    /// Seals a close_notify alert into `out`.
    pub(crate) fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.closed = true;
        self.seal(ALERT, &[1, u8::from(AlertDescription::CloseNotify)], out)
    }

    /// Seals the fatal alert that goes with `error` into `out`, when there is one.
    pub(crate) fn seal_alert_for(&mut self, error: &Error, out: &mut Vec<u8>) {
        let description = match error {
            Error::DecryptError => AlertDescription::BadRecordMac,
            Error::InvalidMessage(InvalidMessage::MessageTooLarge)
            | Error::PeerSentOversizedRecord => AlertDescription::RecordOverflow,
            Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate) => {
                AlertDescription::IllegalParameter
            }
            Error::InvalidMessage(_) => AlertDescription::DecodeError,
            Error::AlertReceived(_) => return,
            _ => AlertDescription::UnexpectedMessage,
        };
        // Sealing can fail only when the sequence numbers are used up: then no alert.
        let _ = self.seal(ALERT, &[2, u8::from(description)], out);
    }

    /// Starts a record in `out`: updates the sending key first when it has sealed as many
    /// records as its suite allows, and writes a header whose length `finish` sets.
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<usize, Error> {
        if self.tx.seq >= self.tx_limit {
            self.update_tx(out)?;
        }
        let start = out.len();
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
        Ok(start)
    }

    /// Seals the record begun at `start`: its inner content type, the AEAD, the length.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize, typ: u8) -> Result<(), Error> {
        out.push(typ);
        let len = out.len() - start - HEADER + TAG;
        let len16 = u16::try_from(len).map_err(|_| Error::EncryptError)?;
        out[start + 3..start + HEADER].copy_from_slice(&len16.to_be_bytes());
        let header: [u8; HEADER] = out[start..start + HEADER]
            .try_into()
            .expect("five header bytes");
        let nonce = self.tx.next_nonce()?;
        let suite = self.suite;
        let tag = self
            .tx
            .key(suite)
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| Error::EncryptError)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Sends a KeyUpdate (not asking the peer for one) with the current key, then moves to
    /// the next one.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
        out.extend_from_slice(&[u8::from(HandshakeType::KeyUpdate), 0, 0, 1, 0]);
        self.finish(out, start, HANDSHAKE)?;
        self.tx.update(self.suite);
        Ok(())
    }

    /// Opens the record `record` (header and body, as `record_len` found it) in place.
    /// A KeyUpdate that asks for ours gets it sealed into `out`.
    pub(crate) fn open(&mut self, record: &mut [u8], out: &mut Vec<u8>) -> Result<Opened, Error> {
        let (header, body) = record.split_at_mut(HEADER);
        let header: [u8; HEADER] = (&*header).try_into().expect("five header bytes");
        let nonce = self.rx.next_nonce()?;
        let suite = self.suite;
        let plain = self
            .rx
            .key(suite)
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| Error::DecryptError)?;
        // The content, its type and the padding: at most 2^14 + 1 bytes (RFC 8446, 5.4).
        if plain.len() > MAX_PLAINTEXT + 1 {
            return Err(Error::PeerSentOversizedRecord);
        }
        // The content type is the last byte that is not padding.
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(PeerMisbehaved::IllegalTlsInnerPlaintext.into());
        };
        let typ = plain[end];
        if self.partial_len > 0 && typ != HANDSHAKE {
            return Err(unexpected(typ));
        }
        match typ {
            APPLICATION_DATA if end == 0 => {
                if self.empty_in_a_row == MAX_EMPTY_RECORDS {
                    return Err(PeerMisbehaved::TooManyEmptyFragments.into());
                }
                self.empty_in_a_row += 1;
                Ok(Opened::Data(HEADER..HEADER))
            }
            APPLICATION_DATA => {
                self.key_updates_left = MAX_KEY_UPDATES;
                self.empty_in_a_row = 0;
                Ok(Opened::Data(HEADER..HEADER + end))
            }
            ALERT => self.alert(&plain[..end]),
            HANDSHAKE if end > 0 => self.handshake(&plain[..end], out),
            _ => Err(unexpected(typ)),
        }
    }

    /// An alert from the peer: close_notify ends its side, `user_canceled` is a warning,
    /// any other is fatal (RFC 8446, section 6).
    fn alert(&mut self, alert: &[u8]) -> Result<Opened, Error> {
        let &[_level, description] = alert else {
            return Err(InvalidMessage::MessageTooShort.into());
        };
        match AlertDescription::from(description) {
            AlertDescription::CloseNotify => Ok(Opened::CloseNotify),
            AlertDescription::UserCanceled if self.warnings_left > 0 => {
                self.warnings_left -= 1;
                Ok(Opened::Nothing)
            }
            AlertDescription::UserCanceled => {
                Err(PeerMisbehaved::TooManyWarningAlertsReceived.into())
            }
            other => Err(Error::AlertReceived(other)),
        }
    }

    /// Handshake bytes after the handshake: only KeyUpdate messages are expected, and no
    /// byte may follow one in its record (a key change ends the record).
    fn handshake(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<Opened, Error> {
        while !bytes.is_empty() {
            let at = usize::from(self.partial_len);
            let n = bytes.len().min(KEY_UPDATE_LEN - at);
            self.partial[at..at + n].copy_from_slice(&bytes[..n]);
            self.partial_len += n as u8;
            bytes = &bytes[n..];
            let have = usize::from(self.partial_len);
            if self.partial[0] != u8::from(HandshakeType::KeyUpdate) {
                return Err(Error::InappropriateHandshakeMessage {
                    expect_types: vec![HandshakeType::KeyUpdate],
                    got_type: HandshakeType::from(self.partial[0]),
                });
            }
            if have >= 4 && self.partial[1..4] != [0, 0, 1] {
                return Err(InvalidMessage::InvalidKeyUpdate.into());
            }
            if have < KEY_UPDATE_LEN {
                continue;
            }
            if !bytes.is_empty() {
                return Err(PeerMisbehaved::KeyEpochWithPendingFragment.into());
            }
            self.partial_len = 0;
            let requested = match self.partial[4] {
                0 => false,
                1 => true,
                _ => return Err(InvalidMessage::InvalidKeyUpdate.into()),
            };
            if self.key_updates_left == 0 {
                return Err(PeerMisbehaved::TooManyKeyUpdateRequests.into());
            }
            self.key_updates_left -= 1;
            self.rx.update(self.suite);
            if requested && !self.closed {
                self.update_tx(out)?;
            }
        }
        Ok(Opened::Nothing)
    }

    /// Lowers the confidentiality limit (tests of the key update).
    #[cfg(test)]
    pub(crate) fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }
}

/// The length of the record at the front of `bytes` (header included) when it is all
/// there, `None` when more is needed.
pub(crate) fn record_len(bytes: &[u8]) -> Result<Option<usize>, Error> {
    let Some(header) = bytes.get(..HEADER) else {
        return Ok(None);
    };
    if header[0] != APPLICATION_DATA {
        return Err(unexpected(header[0]));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(InvalidMessage::MessageTooLarge.into());
    }
    Ok((bytes.len() >= HEADER + len).then_some(HEADER + len))
}

fn unexpected(typ: u8) -> Error {
    Error::InappropriateMessage {
        expect_types: vec![ContentType::ApplicationData],
        got_type: ContentType::from(typ),
    }
}

/// Whether `dir`'s key and IV are those rustls handed over.
fn same_keys(suite: Suite, dir: &Direction, theirs: &ConnectionTrafficSecrets) -> bool {
    let (key, iv) = match theirs {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => return false,
    };
    key.as_ref() == &dir.key[..suite.aead.key_len()] && iv.as_ref() == dir.iv
}

/// HKDF-Expand-Label(secret, label, "", out.len()) of RFC 8446, section 7.1.
fn expand_label(hash: hkdf::Algorithm, secret: &[u8], label: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Prk::new_less_safe(hash, secret);
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info = [&length[..], &label_len, b"tls13 ", label, &[0]];
    // The lengths are a key's, an IV's or a secret's: far below HKDF's 255 × hash.
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length");
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 32] = [7; 32];
    const SERVER: [u8; 32] = [9; 32];

    /// AES-128-GCM records from two traffic secrets (`tx` the one it seals with).
    fn records(tx: &[u8], rx: &[u8]) -> Records {
        let suite = Suite {
            aead: &aead::AES_128_GCM,
            hash: hkdf::HKDF_SHA256,
        };
        Records::with(
            suite,
            Direction::new(suite, Secret::new(tx).unwrap(), 0),
            Direction::new(suite, Secret::new(rx).unwrap(), 0),
            u64::MAX,
        )
    }

    /// The server's records and a peer that mirrors them (what it seals, the server opens).
    fn pair() -> (Records, Records) {
        (records(&SERVER, &CLIENT), records(&CLIENT, &SERVER))
    }

    /// Opens every record in `bytes`: the application data joined, and what `open` said
    /// otherwise.
    fn open_all(r: &mut Records, mut bytes: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let (mut data, mut answer) = (Vec::new(), Vec::new());
        let mut at = 0;
        while let Some(len) = record_len(&bytes[at..])? {
            if let Opened::Data(range) = r.open(&mut bytes[at..at + len], &mut answer)? {
                data.extend_from_slice(&bytes[at + range.start..at + range.end]);
            }
            at += len;
        }
        assert_eq!(at, bytes.len(), "a record cut short");
        Ok((data, answer))
    }

    /// A record of inner type `typ` sealed by `r` with `content` and `padding` zeros.
    fn sealed(r: &mut Records, typ: u8, content: &[u8], padding: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let start = r.begin(&mut out).unwrap();
        out.extend_from_slice(content);
        out.push(typ);
        out.resize(out.len() + padding, 0);
        // `finish` pushes the type itself: seal by hand, the padding after it.
        let len = out.len() - start - HEADER + TAG;
        out[start + 3..start + HEADER].copy_from_slice(&(len as u16).to_be_bytes());
        let header: [u8; HEADER] = out[start..start + HEADER].try_into().unwrap();
        let nonce = r.tx.next_nonce().unwrap();
        let suite = r.suite;
        let tag =
            r.tx.key(suite)
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
                .unwrap();
        out.extend_from_slice(tag.as_ref());
        out
    }

    #[test]
    fn the_labels_give_rfc_8448s_keys() {
        // RFC 8448, section 3: the server's application traffic secret and its key and IV.
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let (mut key, mut iv) = ([0; 16], [0; 12]);
        expand_label(hkdf::HKDF_SHA256, &secret, b"key", &mut key);
        expand_label(hkdf::HKDF_SHA256, &secret, b"iv", &mut iv);
        assert_eq!(key.to_vec(), hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(iv.to_vec(), hex("cf782b88dd83549aadf1e984"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn data_of_any_size_crosses_in_records_of_at_most_16_kib() {
        let (mut server, mut peer) = pair();
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        server
            .seal_data(&[b"head ", &big, b"", b" tail"], &mut out)
            .unwrap();
        let (data, _) = open_all(&mut peer, out).unwrap();
        let mut expected = b"head ".to_vec();
        expected.extend(&big);
        expected.extend(b" tail");
        assert_eq!(data, expected);
        assert_eq!((server.tx.seq, peer.rx.seq), (3, 3));
    }

    #[test]
    fn the_sending_key_is_updated_at_the_suites_limit_and_the_peer_follows() {
        let (mut server, mut peer) = pair();
        server.set_tx_limit(2);
        let mut out = Vec::new();
        for word in [&b"one"[..], b"two", b"three", b"four", b"five"] {
            server.seal_data(&[word], &mut out).unwrap();
        }
        // A KeyUpdate before the third and the fifth record.
        let (data, answer) = open_all(&mut peer, out).unwrap();
        assert_eq!(data, b"onetwothreefourfive");
        assert!(answer.is_empty(), "not asked for an update back");
        assert_eq!((server.tx.seq, peer.rx.seq), (1, 1));
        assert_ne!(server.tx.secret.as_bytes(), SERVER);
    }

    #[test]
    fn a_key_update_request_is_answered_with_ours_before_any_data() {
        let (mut server, mut peer) = pair();
        let request = sealed(&mut peer, HANDSHAKE, &[24, 0, 0, 1, 1], 0);
        peer.tx.update(peer.suite);
        let (data, mut answer) = open_all(&mut server, request).unwrap();
        assert!(data.is_empty() && !answer.is_empty());
        server.seal_data(&[b"after"], &mut answer).unwrap();
        let (data, _) = open_all(&mut peer, answer).unwrap();
        assert_eq!(data, b"after");
        // And the peer's data under its new key.
        let more = sealed(&mut peer, APPLICATION_DATA, b"new key", 3);
        assert_eq!(open_all(&mut server, more).unwrap().0, b"new key");
    }

    #[test]
    fn after_our_close_notify_a_key_update_request_is_not_answered() {
        let (mut server, mut peer) = pair();
        server.seal_close_notify(&mut Vec::new()).unwrap();
        let request = sealed(&mut peer, HANDSHAKE, &[24, 0, 0, 1, 1], 0);
        let (data, answer) = open_all(&mut server, request).unwrap();
        assert!(data.is_empty() && answer.is_empty());
    }

    #[test]
    fn a_key_update_cut_across_records_is_joined_but_data_after_one_is_refused() {
        let (mut server, mut peer) = pair();
        let mut bytes = sealed(&mut peer, HANDSHAKE, &[24, 0], 0);
        bytes.extend(sealed(&mut peer, HANDSHAKE, &[0, 1, 0], 0));
        peer.tx.update(peer.suite);
        bytes.extend(sealed(&mut peer, APPLICATION_DATA, b"x", 0));
        assert_eq!(open_all(&mut server, bytes).unwrap().0, b"x");

        let (mut server, mut peer) = pair();
        let bytes = sealed(&mut peer, HANDSHAKE, &[24, 0, 0, 1, 0, 24], 0);
        assert_eq!(
            open_all(&mut server, bytes).unwrap_err(),
            PeerMisbehaved::KeyEpochWithPendingFragment.into()
        );
    }

    #[test]
    fn a_peer_misbehaving_after_the_handshake_gets_a_clear_error() {
        let cases: Vec<(Vec<u8>, u8, Error)> = vec![
            (
                vec![1, 0, 0, 1, 0],
                HANDSHAKE,
                Error::InappropriateHandshakeMessage {
                    expect_types: vec![HandshakeType::KeyUpdate],
                    got_type: HandshakeType::ClientHello,
                },
            ),
            (
                vec![24, 0, 0, 2, 0, 0],
                HANDSHAKE,
                InvalidMessage::InvalidKeyUpdate.into(),
            ),
            (
                vec![24, 0, 0, 1, 2],
                HANDSHAKE,
                InvalidMessage::InvalidKeyUpdate.into(),
            ),
            (vec![1], 20, unexpected(20)),
            (
                vec![2, 40],
                ALERT,
                Error::AlertReceived(AlertDescription::HandshakeFailure),
            ),
            (vec![1, 0, 0], ALERT, InvalidMessage::MessageTooShort.into()),
        ];
        for (content, typ, error) in cases {
            let (mut server, mut peer) = pair();
            let bytes = sealed(&mut peer, typ, &content, 0);
            assert_eq!(
                open_all(&mut server, bytes).unwrap_err(),
                error,
                "{content:?}"
            );
        }
    }

    #[test]
    fn padding_is_removed_and_a_record_of_only_padding_is_refused() {
        let (mut server, mut peer) = pair();
        let bytes = sealed(&mut peer, APPLICATION_DATA, b"padded", 100);
        assert_eq!(open_all(&mut server, bytes).unwrap().0, b"padded");
        // A plaintext of zeros only: no content type.
        let bytes = sealed(&mut peer, 0, b"", 4);
        assert_eq!(
            open_all(&mut server, bytes).unwrap_err(),
            PeerMisbehaved::IllegalTlsInnerPlaintext.into()
        );
    }

    #[test]
    fn a_changed_byte_a_plaintext_record_or_an_oversized_one_is_refused() {
        let (mut server, mut peer) = pair();
        let mut bytes = sealed(&mut peer, APPLICATION_DATA, b"data", 0);
        bytes[7] ^= 1;
        assert_eq!(
            open_all(&mut server, bytes).unwrap_err(),
            Error::DecryptError
        );
        assert_eq!(
            record_len(&[ALERT, 3, 3, 0, 2, 2, 40]).unwrap_err(),
            unexpected(ALERT)
        );
        let over = (MAX_CIPHERTEXT + 1) as u16;
        let [hi, lo] = over.to_be_bytes();
        assert_eq!(
            record_len(&[APPLICATION_DATA, 3, 3, hi, lo]).unwrap_err(),
            InvalidMessage::MessageTooLarge.into()
        );
        assert_eq!(
            record_len(&[APPLICATION_DATA, 3, 3, 0, 20, 0]).unwrap(),
            None
        );
    }

    #[test]
    fn an_inner_plaintext_over_16_kib_and_one_byte_is_refused_even_if_padding() {
        let (mut server, mut peer) = pair();
        let bytes = sealed(&mut peer, APPLICATION_DATA, b"x", MAX_PLAINTEXT);
        assert_eq!(
            open_all(&mut server, bytes).unwrap_err(),
            Error::PeerSentOversizedRecord
        );
        let (mut server, mut peer) = pair();
        let bytes = sealed(&mut peer, APPLICATION_DATA, b"x", MAX_PLAINTEXT - 1);
        assert_eq!(open_all(&mut server, bytes).unwrap().0, b"x");
    }

    #[test]
    fn empty_records_in_a_row_are_bounded_and_data_resets_the_count() {
        let (mut server, mut peer) = pair();
        let mut bytes = Vec::new();
        for round in 0..2 {
            for _ in 0..MAX_EMPTY_RECORDS {
                bytes.extend(sealed(&mut peer, APPLICATION_DATA, b"", 0));
            }
            bytes.extend(sealed(&mut peer, APPLICATION_DATA, &[b'a' + round], 0));
        }
        assert_eq!(open_all(&mut server, bytes).unwrap().0, b"ab");
        assert_eq!(
            one_too_many(MAX_EMPTY_RECORDS, |peer| sealed(
                peer,
                APPLICATION_DATA,
                b"",
                0
            )),
            PeerMisbehaved::TooManyEmptyFragments.into()
        );
    }

    /// The error opening `limit` + 1 records from a fresh peer, each made by `record`.
    fn one_too_many(limit: u8, mut record: impl FnMut(&mut Records) -> Vec<u8>) -> Error {
        let (mut server, mut peer) = pair();
        let mut bytes = Vec::new();
        for _ in 0..=limit {
            bytes.extend(record(&mut peer));
        }
        open_all(&mut server, bytes).unwrap_err()
    }

    #[test]
    fn key_update_requests_and_warnings_are_bounded() {
        let key_update = |peer: &mut Records| {
            let record = sealed(peer, HANDSHAKE, &[24, 0, 0, 1, 0], 0);
            peer.tx.update(peer.suite);
            record
        };
        assert_eq!(
            one_too_many(MAX_KEY_UPDATES, key_update),
            PeerMisbehaved::TooManyKeyUpdateRequests.into()
        );
        assert_eq!(
            one_too_many(MAX_WARNINGS, |peer| sealed(peer, ALERT, &[1, 90], 0)),
            PeerMisbehaved::TooManyWarningAlertsReceived.into()
        );
    }

    #[test]
    fn shrink_drops_the_expanded_keys_and_they_come_back_when_needed() {
        let (mut server, mut peer) = pair();
        let mut out = Vec::new();
        server.seal_data(&[b"a"], &mut out).unwrap();
        open_all(&mut peer, out).unwrap();
        assert!(server.tx.expanded.is_some());
        server.shrink();
        assert!(server.tx.expanded.is_none() && server.rx.expanded.is_none());
        let mut out = Vec::new();
        server.seal_data(&[b"b"], &mut out).unwrap();
        assert_eq!(open_all(&mut peer, out).unwrap().0, b"b");
        let bytes = sealed(&mut peer, APPLICATION_DATA, b"c", 0);
        assert_eq!(open_all(&mut server, bytes).unwrap().0, b"c");
    }
}

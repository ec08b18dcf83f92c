//! What the integration tests share: test certificates made with rcgen (never checked in),
//! an in-memory rustls client pump, and raw WebSocket client frames.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tern_transport::{ReadOutcome, TlsSettings, Transport, TransportError, WsConfig, WsLimits};

/// A directory of its own under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tern-transport-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate and its key, as the client presents it.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// A CA, a server certificate for `localhost` and two client certificates: `alice`,
/// signed by the CA, and `mallory`, signed by a CA the server does not know. Files of the
/// CA, the server's certificate and key are in `dir`.
pub struct Pki {
    pub dir: TempDir,
    pub ca_der: CertificateDer<'static>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub alice: Identity,
    pub mallory: Identity,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
) -> (rcgen::Certificate, KeyPair) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Tern tests");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert, key)
}

fn identity(cert: &rcgen::Certificate, key: &KeyPair) -> Identity {
    Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

impl Pki {
    pub fn new() -> Self {
        Self::with_server_cn("localhost")
    }

    /// The server certificate's common name tells reloads apart.
    pub fn with_server_cn(server_cn: &str) -> Self {
        let dir = TempDir::new();
        let ca = new_ca("Tern test CA");
        let (server_cert, server_key) = issue(&ca, &["localhost"], server_cn);
        let (alice_cert, alice_key) = issue(&ca, &[], "alice");
        let stranger = new_ca("Unknown CA");
        let (mallory_cert, mallory_key) = issue(&stranger, &[], "mallory");
        let ca_file = dir.write("ca.pem", ca.pem());
        let cert_file = dir.write("server.pem", server_cert.pem());
        let key_file = dir.write("server.key", server_key.serialize_pem());
        Self {
            ca_der: ca.der().clone(),
            ca_file,
            cert_file,
            key_file,
            alice: identity(&alice_cert, &alice_key),
            mallory: identity(&mallory_cert, &mallory_key),
            dir,
        }
    }

    /// Server settings: the CA (for client certificates) only with `ca`.
    pub fn settings(&self, ca: bool, verify: bool) -> TlsSettings {
        TlsSettings {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: ca.then(|| self.ca_file.clone()),
            verify,
            alpn: Vec::new(),
        }
    }

    /// A client configuration trusting the test CA, presenting `identity` if given.
    pub fn client_config(&self, identity: Option<&Identity>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        }
    }

    /// A client connection to `localhost` on `client_config`.
    pub fn client(&self, identity: Option<&Identity>) -> ClientConnection {
        client_on(Arc::new(self.client_config(identity)))
    }
}

pub fn client_on(config: Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Feeds `bytes` to the server, calling again while it says so; returns the outcomes.
pub fn feed(
    server: &mut Transport,
    mut bytes: &[u8],
    app_in: &mut Vec<u8>,
) -> Result<Vec<ReadOutcome>, TransportError> {
    let mut outcomes = Vec::new();
    loop {
        let outcome = server.read(bytes, app_in)?;
        bytes = &bytes[outcome.consumed..];
        outcomes.push(outcome);
        if !outcome.again {
            assert!(bytes.is_empty(), "bytes left without `again`");
            return Ok(outcomes);
        }
    }
}

/// Which side of a pumped conversation failed.
#[derive(Debug)]
pub enum Failed {
    Server(TransportError),
    Client(rustls::Error),
}

/// Moves bytes between a rustls client and a server transport until neither has anything
/// to say. Decoded bytes for the server's session land in `app_in`. When the server fails,
/// what it queued (its alert) still reaches the client first.
pub fn pump(
    client: &mut ClientConnection,
    server: &mut Transport,
    app_in: &mut Vec<u8>,
) -> Result<(), Failed> {
    loop {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let server_result = feed(server, &to_server, app_in);
        let mut to_client = Vec::new();
        server.pending_socket_out(&mut to_client).unwrap();
        let mut rest = &to_client[..];
        let mut client_result = Ok(());
        while !rest.is_empty() && client_result.is_ok() {
            client.read_tls(&mut rest).unwrap();
            client_result = client.process_new_packets().map(drop);
        }
        server_result.map_err(Failed::Server)?;
        client_result.map_err(Failed::Client)?;
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
    }
}

/// Everything the client has decrypted so far.
pub fn client_received(client: &mut ClientConnection) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = client.reader().read_to_end(&mut out);
    out
}

/// Decrypts `records` (from the server) in the client and returns the plaintext.
pub fn client_decrypt(client: &mut ClientConnection, records: &[u8]) -> Vec<u8> {
    let mut rest = records;
    while !rest.is_empty() {
        client.read_tls(&mut rest).unwrap();
        client.process_new_packets().unwrap();
    }
    client_received(client)
}

/// A masked client frame.
pub fn client_frame(first_byte: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A valid upgrade request for `path`, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A server frame as the tests read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub first_byte: u8,
    pub payload: Vec<u8>,
}

/// Splits server output into frames (they are never masked); panics on a cut frame.
pub fn server_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push(ServerFrame {
            first_byte: bytes[0],
            payload: bytes[header..header + len].to_vec(),
        });
        bytes = &bytes[header + len..];
    }
    frames
}

/// The close frame `code` as a server frame.
pub fn close_code_of(frame: &ServerFrame) -> u16 {
    assert_eq!(
        frame.first_byte,
        FIN | CLOSE,
        "not a close frame: {frame:?}"
    );
    u16::from_be_bytes([frame.payload[0], frame.payload[1]])
}

/// A WebSocket configuration with permessage-deflate on and `max_message` as given.
pub fn deflate_config(max_message: usize) -> WsConfig {
    WsConfig {
        compression: true,
        limits: WsLimits {
            max_message,
            ..WsLimits::default()
        },
        ..WsConfig::default()
    }
}

/// Compresses a message as a client does: raw deflate, sync flush, the tail stripped.
pub fn compress(message: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(message).unwrap();
    encoder.flush().unwrap();
    let mut out = encoder.get_ref().clone();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

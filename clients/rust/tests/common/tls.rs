//! TLS for the integration tests: test certificates made with rcgen (never checked in),
//! and [`TlsBroker`], a real broker (tern-broker, in this process) reached over TLS.
//!
//! The broker terminates TLS itself (`--tls-cert`, `--tls-key`, and `--tls-ca
//! --tls-verify` for client certificates). A [`TlsProxy`] can stand in for it: a listener
//! whose connections each get a thread with a `rustls::ServerConnection`, forwarding the
//! plain bytes to a plain broker's binary port and back. Tests that need to control or
//! watch the server's side of TLS (TLS 1.2 only, counting close_notify) use it
//! ([`TlsBroker::behind_proxy`]); `TERN_TEST_TLS_PROXY=1` runs every test through it, to
//! tell a client fault from a broker one.
//!
//! Shared by tern-client's and tern-cli's tests (the latter includes this file by path).
//! Every wait has a deadline; a proxy stops its threads when dropped.

#![allow(dead_code)] // Each test file uses a different part of it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tern_broker::{Args, Config, Server};

/// A directory of its own under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tern-client-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
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

/// The test certificates, as PEM files:
///
/// - `ca`: the test CA; `server` (for `localhost`, `127.0.0.1` and `::1`) and `alice` (a
///   client certificate) are signed by it;
/// - `stranger_ca`: another CA, which signed `mallory` (a client certificate the server
///   does not know); a client trusting only it refuses the server;
/// - `elsewhere`: a server certificate from the test CA for `tern.test` only, to test
///   name checks and the server-name override.
pub struct Pki {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub stranger_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub elsewhere_cert: PathBuf,
    pub elsewhere_key: PathBuf,
    pub alice_cert: PathBuf,
    pub alice_key: PathBuf,
    pub mallory_cert: PathBuf,
    pub mallory_key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` (DNS names or IP addresses), signed by `issuer`: (cert, key)
/// as PEM.
fn issue(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str], cn: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new();
        let ca = new_ca("Tern test CA");
        let stranger = new_ca("Stranger CA");
        let (server_cert, server_key) = issue(&ca, &["localhost", "127.0.0.1", "::1"], "ternd");
        let (elsewhere_cert, elsewhere_key) = issue(&ca, &["tern.test"], "ternd elsewhere");
        let (alice_cert, alice_key) = issue(&ca, &[], "alice");
        let (mallory_cert, mallory_key) = issue(&stranger, &[], "mallory");
        Pki {
            ca: dir.write("ca.pem", ca.pem()),
            stranger_ca: dir.write("stranger-ca.pem", stranger.pem()),
            server_cert: dir.write("server.pem", server_cert),
            server_key: dir.write("server.key", server_key),
            elsewhere_cert: dir.write("elsewhere.pem", elsewhere_cert),
            elsewhere_key: dir.write("elsewhere.key", elsewhere_key),
            alice_cert: dir.write("alice.pem", alice_cert),
            alice_key: dir.write("alice.key", alice_key),
            mallory_cert: dir.write("mallory.pem", mallory_cert),
            mallory_key: dir.write("mallory.key", mallory_key),
            dir,
        }
    }
}

/// How the server side of the tests is set up.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are required and must chain to this CA.
    pub require_client_cert: Option<PathBuf>,
    /// Offer TLS 1.2 only (a proxy only; the broker offers what its transport does).
    pub tls12_only: bool,
}

impl ServerTls {
    /// The `localhost` / `127.0.0.1` certificate, no client certificates.
    pub fn new(pki: &Pki) -> ServerTls {
        ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            require_client_cert: None,
            tls12_only: false,
        }
    }

    /// The certificate for `tern.test` only.
    pub fn elsewhere(pki: &Pki) -> ServerTls {
        ServerTls {
            cert: pki.elsewhere_cert.clone(),
            key: pki.elsewhere_key.clone(),
            ..ServerTls::new(pki)
        }
    }

    /// Client certificates required, from the test CA.
    pub fn requiring_client_certs(pki: &Pki) -> ServerTls {
        ServerTls {
            require_client_cert: Some(pki.ca.clone()),
            ..ServerTls::new(pki)
        }
    }

    /// The rustls configuration of the proxy.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match &self.require_client_cert {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(cert.unwrap()).unwrap();
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.key).unwrap();
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }

    /// The broker's flags for the same setup, once it terminates TLS itself.
    fn broker_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_string(),
            self.cert.display().to_string(),
            "--tls-key".to_string(),
            self.key.display().to_string(),
        ];
        if let Some(ca) = &self.require_client_cert {
            flags.extend([
                "--tls-ca".to_string(),
                ca.display().to_string(),
                "--tls-verify".to_string(),
            ]);
        }
        flags
    }
}

/// False when `TERN_TEST_TLS_PROXY` is set: then [`TlsBroker::start`] puts a [`TlsProxy`]
/// in front of a plain broker instead of giving the broker the certificate.
pub fn broker_serves_tls() -> bool {
    std::env::var_os("TERN_TEST_TLS_PROXY").is_none()
}

/// An in-process broker on free ports (binary port `binary`, 0 for any), 2 workers, no
/// store, no monitoring, with `extra` flags.
pub fn plain_broker(binary: u16, extra: &[String]) -> Server {
    let binary = format!("127.0.0.1:{binary}");
    let mut args: Vec<String> = [
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--binary-listen",
        &binary,
        "--no-monitor",
        "--workers",
        "2",
        "--no-pin",
        "--no-store",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    Server::start(Config::from_args(Args::parse_from(args)).unwrap()).unwrap()
}

/// A broker whose binary port is reached over TLS at [`url`](Self::url); it can be
/// stopped and started again on the same port.
pub struct TlsBroker {
    tls: ServerTls,
    /// TLS is terminated by a [`TlsProxy`], not the broker.
    proxied: bool,
    /// The port clients connect to (the proxy's, or the broker's binary port).
    port: u16,
    broker: Option<Server>,
    proxy: Option<TlsProxy>,
}

impl TlsBroker {
    /// A broker serving TLS on its binary port (see [`broker_serves_tls`]).
    pub fn start(tls: ServerTls) -> TlsBroker {
        TlsBroker::with(tls, !broker_serves_tls())
    }

    /// A plain broker behind a [`TlsProxy`].
    pub fn behind_proxy(tls: ServerTls) -> TlsBroker {
        TlsBroker::with(tls, true)
    }

    fn with(tls: ServerTls, proxied: bool) -> TlsBroker {
        let mut b = TlsBroker {
            tls,
            proxied,
            port: 0,
            broker: None,
            proxy: None,
        };
        b.up();
        b
    }

    /// `tls://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// The broker's plain binary port behind the proxy (`None` when the broker itself
    /// serves TLS there).
    pub fn plain_url(&self) -> Option<String> {
        self.proxy.as_ref()?;
        let broker = self.broker.as_ref()?;
        Some(format!("tern://{}", broker.binary_addr().unwrap()))
    }

    /// The proxy in front of the broker, when there is one.
    pub fn proxy(&self) -> Option<&TlsProxy> {
        self.proxy.as_ref()
    }

    fn up(&mut self) {
        if !self.proxied {
            let broker = plain_broker(self.port, &self.tls.broker_flags());
            self.port = broker.binary_addr().unwrap().port();
            self.broker = Some(broker);
        } else {
            let broker = plain_broker(0, &[]);
            let upstream = broker.binary_addr().unwrap();
            let proxy = TlsProxy::start(self.port, upstream, self.tls.server_config());
            self.port = proxy.addr.port();
            self.broker = Some(broker);
            self.proxy = Some(proxy);
        }
    }

    /// Stops the TLS endpoint and the broker: the port refuses connections until
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.stop();
        }
        if let Some(broker) = self.broker.take() {
            broker.shutdown();
        }
    }

    /// Starts a new broker (a new log epoch) on the same port.
    pub fn start_again(&mut self) {
        assert!(self.broker.is_none(), "stop it first");
        self.up();
    }

    /// Starts a new broker on the same port with other TLS settings.
    pub fn start_again_with(&mut self, tls: ServerTls) {
        self.tls = tls;
        self.start_again();
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TLS-terminating proxy: TLS from the first byte on its port, plain bytes to
/// `upstream`.
pub struct TlsProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
    /// Why handshakes or sessions failed on the server side, in order.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Sessions the client ended with close_notify.
    pub clean_closes: Arc<AtomicUsize>,
}

/// How long the proxy's threads sleep when nothing moved.
const IDLE: Duration = Duration::from_millis(1);

impl TlsProxy {
    /// Listens on 127.0.0.1:`port` (0: a free one).
    pub fn start(port: u16, upstream: SocketAddr, config: Arc<ServerConfig>) -> TlsProxy {
        let listener = bind_retrying(port);
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let clean_closes = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let (stop, threads, errors) = (stop.clone(), threads.clone(), errors.clone());
            let clean_closes = clean_closes.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (stop, errors, config) =
                                (stop.clone(), errors.clone(), config.clone());
                            let clean_closes = clean_closes.clone();
                            let t = std::thread::spawn(move || {
                                match forward(client, upstream, config, &stop) {
                                    Err(e) => errors.lock().unwrap().push(e),
                                    Ok(Ended::CloseNotify) => {
                                        clean_closes.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(Ended::Other) => {}
                                }
                            });
                            threads.lock().unwrap().push(t);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(IDLE),
                        Err(e) => panic!("proxy accept: {e}"),
                    }
                }
            })
        };
        TlsProxy {
            addr,
            stop,
            threads,
            acceptor: Some(acceptor),
            errors,
            clean_closes,
        }
    }

    /// Closes the listener and every connection (with close_notify), and waits for them.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
        for t in std::mem::take(&mut *self.threads.lock().unwrap()) {
            let _ = t.join();
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Binds 127.0.0.1:`port`, retrying for a while: a port just released by a stopped
/// listener can take a moment to be free again.
fn bind_retrying(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// How a proxied connection ended, when its TLS session did not fail.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The client sent close_notify.
    CloseNotify,
    Other,
}

/// One proxied connection: TLS with `client`, plain with `upstream`, until either side
/// ends or the proxy stops. Returns the TLS error, if the session failed.
fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    config: Arc<ServerConfig>,
    stop: &AtomicBool,
) -> Result<Ended, String> {
    let Ok(mut plain) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        // The broker is down: the client sees its connection closed.
        return Ok(Ended::Other);
    };
    client.set_nonblocking(true).unwrap();
    plain.set_nonblocking(true).unwrap();
    let _ = client.set_nodelay(true);
    let _ = plain.set_nodelay(true);
    let mut tls = ServerConnection::new(config).unwrap();
    tls.set_buffer_limit(None);
    let mut to_upstream: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        let mut moved = false;
        if stop.load(Ordering::Relaxed) {
            tls.send_close_notify();
            break Ok(Ended::Other);
        }
        // Client → rustls → upstream.
        match tls.read_tls(&mut client) {
            Ok(0) => break Ok(Ended::Other),
            Ok(_) => {
                moved = true;
                let closed = match tls.process_new_packets() {
                    Err(e) => break Err(e.to_string()),
                    Ok(state) => state.peer_has_closed(),
                };
                if closed {
                    tls.send_close_notify();
                    break Ok(Ended::CloseNotify);
                }
                let mut reader = tls.reader();
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => to_upstream.extend_from_slice(&buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break Ok(Ended::Other),
        }
        if !to_upstream.is_empty() {
            match plain.write(&to_upstream) {
                Ok(n) => {
                    to_upstream.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break Ok(Ended::Other),
            }
        }
        // Upstream → rustls → client.
        match plain.read(&mut buf) {
            Ok(0) => {
                // The broker closed: end the session cleanly.
                tls.send_close_notify();
                break Ok(Ended::Other);
            }
            Ok(n) => {
                tls.writer().write_all(&buf[..n]).unwrap();
                moved = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                tls.send_close_notify();
                break Ok(Ended::Other);
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut client) {
                Ok(_) => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Ok(Ended::Other),
            }
        }
        if !moved {
            std::thread::sleep(IDLE);
        }
    };
    // What is left (an alert, close_notify, data) goes out before the socket closes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tls.wants_write() && Instant::now() < deadline {
        match tls.write_tls(&mut client) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(IDLE),
            Err(_) => break,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = plain.shutdown(Shutdown::Both);
    result
}

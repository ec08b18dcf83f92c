//! Certificates for the TLS tests, made fresh by each test (none are checked in): a CA, a
//! server certificate for `localhost` and `127.0.0.1` signed by it, a client certificate
//! (`alice`) signed by it, and one (`mallory`) signed by a CA the server does not know. All
//! are PEM files in a directory of the test's own.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate and its key, as files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    /// Removed with the files in it when the set is dropped.
    pub dir: super::TempDir,
    pub ca: PathBuf,
    pub server: Pair,
    pub alice: Pair,
    pub mallory: Pair,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn issue(
    dir: &Path,
    name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
) -> Pair {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let pair = Pair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pair.cert, cert.pem()).unwrap();
    std::fs::write(&pair.key, key.serialize_pem()).unwrap();
    pair
}

impl Pki {
    /// A fresh set in a new directory; `server_cn` tells a reloaded certificate apart.
    pub fn new(server_cn: &str) -> Pki {
        let dir = super::temp_dir("tern-pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = new_ca("Tern test CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let server = issue(&dir, "server", &ca, &["localhost", "127.0.0.1"], server_cn);
        let alice = issue(&dir, "alice", &ca, &[], "alice");
        let stranger = new_ca("Unknown CA");
        let mallory = issue(&dir, "mallory", &stranger, &[], "mallory");
        Pki {
            dir,
            ca: ca_file,
            server,
            alice,
            mallory,
        }
    }

    /// A blocking rustls client of `addr` that trusts this CA and expects the name
    /// `localhost` (the handshake runs on its first read or write).
    pub fn connect_tls(
        &self,
        addr: std::net::SocketAddr,
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(super::WAIT)).unwrap();
        rustls::StreamOwned::new(conn, sock)
    }

    /// ternd's flags for TLS with this server certificate.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.server.cert.display().to_string(),
            "--tls-key".into(),
            self.server.key.display().to_string(),
        ]
    }
}

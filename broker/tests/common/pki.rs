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
    pub dir: PathBuf,
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

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

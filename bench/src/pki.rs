//! The certificates of a TLS run, made when the run starts: a CA, and a server certificate
//! for `localhost` and `127.0.0.1` signed by it, as PEM files in a directory of the run's
//! own.
//!
//! Owns: generating them (`rcgen`, ECDSA P-256 keys), writing them, the flags and
//! configuration lines that give them to `ternd` (`--tls-cert`, `--tls-key`) and to
//! `nats-server` (`cert_file`, `key_file`), and the harness's own [`TlsClient`] that
//! trusts the CA. The directory is removed when the [`Pki`] is dropped.
//!
//! Never: checks a key in, reuses one across runs, or hands out a client that trusts
//! anything but this CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::driver::{DriverError, TlsClient};

/// The name the harness expects on the broker's certificate (one of its two SANs).
pub const SERVER_NAME: &str = "127.0.0.1";

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused (a key or a certificate).
    #[error("cannot generate the test certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The harness's client refused the CA it made.
    #[error("{0}")]
    Client(#[from] DriverError),
}

/// A CA and a server certificate, as files, and a client that trusts the CA.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca_file: PathBuf,
    /// The server's certificate (PEM), signed by the CA.
    pub cert_file: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key_file: PathBuf,
    client: TlsClient,
}

impl Pki {
    /// Generates a fresh set in a new directory under the system's temp dir.
    pub fn generate() -> Result<Pki, PkiError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("tern-bench-pki-{id}"));
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("tern-bench CA {id}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tern-bench server");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        let ca_pem = ca.pem();
        let pki = Pki {
            ca_file: write(&dir, "ca.pem", &ca_pem)?,
            cert_file: write(&dir, "server.pem", &cert.pem())?,
            key_file: write(&dir, "server.key", &key.serialize_pem())?,
            client: TlsClient::trusting_pem(ca_pem.as_bytes(), SERVER_NAME)?,
            dir,
        };
        Ok(pki)
    }

    /// The harness's TLS client: trusts this CA only, expects [`SERVER_NAME`].
    pub fn client(&self) -> TlsClient {
        self.client.clone()
    }

    /// `ternd`'s flags for TLS with this certificate.
    pub fn ternd_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_file.display().to_string(),
            "--tls-key".into(),
            self.key_file.display().to_string(),
        ]
    }

    /// A `tls { ... }` block of nats-server's configuration for this certificate (its
    /// handshake timeout as `ternd`'s default, 2 s).
    pub fn nats_tls_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 2\n}}",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string()
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| PkiError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_set_is_written_and_removed() {
        let pki = Pki::generate().unwrap();
        for f in [&pki.ca_file, &pki.cert_file, &pki.key_file] {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", f.display());
        }
        assert_eq!(pki.ternd_args()[0], "--tls-cert");
        assert!(pki.nats_tls_block().contains("cert_file: \""));
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists());
    }
}

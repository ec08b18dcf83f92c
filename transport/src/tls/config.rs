//! The TLS server configuration: built from PEM files, swapped whole on reload.
//!
//! Owns: turning [`TlsSettings`] (certificate chain, private key, optional CA, verify
//! flag, ALPN) into a rustls `ServerConfig` on the `ring` provider, with an error that
//! names the file and what is wrong with it ([`TlsConfigError`]); and the handle every
//! worker reads when it accepts a connection ([`TlsConfigHandle`]).
//!
//! Never: changes a configuration in place. A reload builds a new one and swaps the
//! pointer: connections accepted after the swap get the new certificate, open ones keep the
//! `Arc` they were created with. A reload that fails leaves the current one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the certificate and key come from, and how clients are checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to. Without
    /// `verify`, a client may present a certificate (it is then verified) or none.
    pub ca_file: Option<PathBuf>,
    /// Client certificates are required and verified against `ca_file` (nats-server's
    /// `verify`). Needs `ca_file`.
    pub verify: bool,
    /// ALPN protocols offered, most preferred first; empty = no ALPN.
    pub alpn: Vec<Vec<u8>>,
}

/// Why a TLS configuration could not be built. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The file holds no `CERTIFICATE` section.
    #[error("{}: no CERTIFICATE section", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key section.
    #[error("{}: no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key together: an unsupported or corrupt key, a
    /// certificate it cannot parse, or a key that does not match the certificate.
    #[error("{} with {}: certificate and key refused: {reason}", cert.display(), key.display())]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// A CA certificate that cannot be a trust anchor.
    #[error("{}: certificate #{index} is not a usable CA certificate: {reason}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Which certificate in the file, from 1.
        index: usize,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// `verify` without `ca_file`.
    #[error("client certificate verification needs a CA file")]
    VerifyWithoutCa,
    /// The client certificate verifier could not be built from the CA file.
    #[error("{}: {reason}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        reason: rustls::server::VerifierBuilderError,
    },
    /// The `ring` provider refused the protocol versions (not expected).
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

/// Builds a server configuration from the files `settings` names.
pub fn load_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certificates(&settings.cert_file)?;
    let key = read_key(&settings.key_file)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Versions)?;
    let builder = match (&settings.ca_file, settings.verify) {
        (None, true) => return Err(TlsConfigError::VerifyWithoutCa),
        (None, false) => builder.with_no_client_auth(),
        (Some(ca_file), verify) => {
            let roots = read_roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if verify {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|reason| TlsConfigError::Verifier {
                    path: ca_file.clone(),
                    reason,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|reason| TlsConfigError::CertKey {
                cert: settings.cert_file.clone(),
                key: settings.key_file.clone(),
                reason,
            })?;
    config.alpn_protocols = settings.alpn.clone();
    // A TLS 1.3 connection's records are protected by `super::record` once its handshake
    // is done: rustls hands over the keys, the key log the secrets they come from.
    config.enable_secret_extraction = true;
    config.key_log = Arc::new(super::CaptureTrafficSecrets);
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsConfigError {
    TlsConfigError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, e),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|reason| TlsConfigError::Ca {
            path: path.to_path_buf(),
            index: i + 1,
            reason,
        })?;
    }
    Ok(roots)
}

/// The server configuration new connections use, swappable while connections are open.
///
/// Cheap to read: one atomic pointer load and an `Arc` clone, once per accepted
/// connection, never on the data path. Share it between workers in an `Arc`.
#[derive(Debug)]
pub struct TlsConfigHandle {
    current: ArcSwap<ServerConfig>,
}

impl TlsConfigHandle {
    /// A handle serving `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: ArcSwap::new(config),
        }
    }

    /// A handle serving the configuration built from `settings`.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsConfigError> {
        load_server_config(settings).map(Self::new)
    }

    /// The configuration to create a new connection's `TlsStream` with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Serves `config` to connections accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }

    /// Rebuilds the configuration from `settings` (the files are read again) and serves it
    /// from now on; on error the current one stays.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsConfigError> {
        self.replace(load_server_config(settings)?);
        Ok(())
    }
}

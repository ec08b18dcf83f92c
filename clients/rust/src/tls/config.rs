//! The client's TLS settings and the rustls configuration built from them.
//!
//! Owns: [`TlsOptions`] (what the builder collected: on or off, the CA file or the
//! operating system's roots, a client certificate and key, a server-name override, or a
//! ready-made rustls configuration), turning them once, at `connect`, into a
//! [`Connector`] (an `Arc<rustls::ClientConfig>` on the `ring` provider and the
//! `ServerName` to verify), and [`TlsConfigError`], which names the file at fault and
//! what is wrong with it.
//!
//! Never: reads a file after `connect` (a reconnect reuses the configuration it has, so a
//! file removed later does not break a running client), touches a socket, or falls back
//! to an unverified connection: there is no "accept any certificate" switch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::session::TlsSession;
use crate::ServerAddr;

/// The TLS settings of a client, as the builder collected them.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    /// TLS was asked for by the builder (a `tls://` address asks for it too).
    pub(crate) enabled: bool,
    /// PEM file of the CA certificates the server's chain must lead to.
    pub(crate) ca_file: Option<PathBuf>,
    /// Trust the operating system's roots: `None` means "when there is no CA file".
    pub(crate) native_roots: Option<bool>,
    /// PEM files of the client's certificate chain and private key.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry, instead of the address's host.
    pub(crate) server_name: Option<String>,
    /// A configuration made by the application; the files above are then not read.
    pub(crate) config: Option<Arc<ClientConfig>>,
}

/// Why the TLS settings cannot be used. Each error names the file or the setting at
/// fault and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The file holds no `CERTIFICATE` section (e.g. a key file given as a CA file).
    #[error("{}: no CERTIFICATE section", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key section.
    #[error(
        "{}: no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file cannot be a trust anchor.
    #[error("{}: certificate #{index} is not a usable CA certificate: {reason}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Which certificate in the file, from 1.
        index: usize,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// rustls refused the client certificate and key together: a key that does not match
    /// the certificate, or one it cannot use.
    #[error(
        "{} with {}: client certificate and key refused: {reason}",
        cert.display(),
        key.display()
    )]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// No CA file was given and the operating system's store has no usable root.
    #[error(
        "no CA file given and no trust roots found in the operating system's store{}; \
         give the CA that signed the server's certificate (a PEM file)",
        if .errors.is_empty() { String::new() } else { format!(" ({})", .errors) }
    )]
    NoRoots {
        /// What went wrong reading the store, if anything.
        errors: String,
    },
    /// The server name (the address's host, or the override) cannot be checked against a
    /// certificate: neither a DNS name nor an IP address.
    #[error("`{name}` is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName {
        /// The name.
        name: String,
    },
    /// The `ring` provider refused the protocol versions (not expected).
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

/// What each connection attempt needs to start TLS: made once at `connect`, cloned into
/// nothing (the I/O thread keeps the one copy).
#[derive(Debug)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// A client certificate is configured (for the hint when a server asks for one).
    has_client_cert: bool,
}

impl Connector {
    /// A new client session for one connection: every (re)connection does its own
    /// handshake.
    pub(crate) fn session(&self) -> Result<TlsSession, rustls::Error> {
        TlsSession::new(
            Arc::clone(&self.config),
            self.server_name.clone(),
            self.has_client_cert,
        )
    }
}

impl TlsOptions {
    /// The connector for `addr`, or `None` when TLS is off (neither asked for by the
    /// builder nor by a `tls://` address).
    pub(crate) fn connector(&self, addr: &ServerAddr) -> Result<Option<Connector>, TlsConfigError> {
        if !(self.enabled || addr.is_tls()) {
            return Ok(None);
        }
        let name = self.server_name.as_deref().unwrap_or(addr.host());
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|_| TlsConfigError::ServerName {
                name: name.to_string(),
            })?;
        let (config, has_client_cert) = match &self.config {
            Some(config) => (
                Arc::clone(config),
                config.client_auth_cert_resolver.has_certs(),
            ),
            None => (Arc::new(self.load()?), self.client_cert.is_some()),
        };
        Ok(Some(Connector {
            config,
            server_name,
            has_client_cert,
        }))
    }

    /// Reads the files and builds the rustls configuration.
    fn load(&self) -> Result<ClientConfig, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        if let Some(ca_file) = &self.ca_file {
            read_roots(ca_file, &mut roots)?;
        }
        if self.native_roots.unwrap_or(self.ca_file.is_none()) {
            native_roots(&mut roots)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Versions)?
            .with_root_certificates(roots);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                let private = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|reason| TlsConfigError::CertKey {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason,
                    })
            }
        }
    }
}

/// A rustls client configuration from files, as [`ClientBuilder::tls_ca_file`] and
/// [`ClientBuilder::tls_client_cert`] make it: the CA file's certificates as roots (the
/// operating system's when there is none), a client certificate if given. For programs
/// that make their own TLS connections (the broker's bridge to NATS servers).
///
/// [`ClientBuilder::tls_ca_file`]: crate::ClientBuilder::tls_ca_file
/// [`ClientBuilder::tls_client_cert`]: crate::ClientBuilder::tls_client_cert
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let options = TlsOptions {
        enabled: true,
        ca_file: ca_file.map(Path::to_path_buf),
        native_roots: None,
        client_cert: client_cert.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
        server_name: None,
        config: None,
    };
    options.load().map(Arc::new)
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

/// Every `CERTIFICATE` section of a PEM file (other sections are skipped); at least one.
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

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, e),
    })
}

/// Adds every certificate of a CA file as a trust anchor; one that cannot be is an error
/// (a CA file is written on purpose, so a bad entry in it is a mistake to report).
fn read_roots(path: &Path, roots: &mut RootCertStore) -> Result<(), TlsConfigError> {
    for (i, cert) in read_certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|reason| TlsConfigError::Ca {
            path: path.to_path_buf(),
            index: i + 1,
            reason,
        })?;
    }
    Ok(())
}

/// Adds the operating system's roots. A store holds certificates rustls cannot use (they
/// are skipped, as every TLS client does); a store with none usable is an error.
fn native_roots(roots: &mut RootCertStore) -> Result<(), TlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsConfigError::NoRoots { errors });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> TlsOptions {
        TlsOptions {
            enabled: true,
            native_roots: Some(false),
            ..TlsOptions::default()
        }
    }

    /// A file in a directory of its own, both removed on drop.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_file(name: &str, contents: &[u8]) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("tern-client-tls-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn error(options: &TlsOptions) -> String {
        let addr: ServerAddr = "tern://127.0.0.1:4224".parse().unwrap();
        options.connector(&addr).unwrap_err().to_string()
    }

    #[test]
    fn off_unless_asked_for() {
        let addr: ServerAddr = "tern://localhost".parse().unwrap();
        let off = TlsOptions::default();
        assert!(off.connector(&addr).unwrap().is_none());
        // A tls:// address asks for it; the bad CA file then shows the files are read.
        let tls_addr: ServerAddr = "tls://localhost".parse().unwrap();
        let bad = TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            native_roots: Some(false),
            ..TlsOptions::default()
        };
        assert!(bad.connector(&addr).unwrap().is_none());
        assert!(bad.connector(&tls_addr).is_err());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let o = TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..options()
        };
        let e = error(&o);
        assert!(e.starts_with("/nonexistent/ca.pem: cannot read: "), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_says_so() {
        let path = temp_file(
            "key-as-ca.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let o = TlsOptions {
            ca_file: Some(path.clone()),
            ..options()
        };
        assert_eq!(
            error(&o),
            format!("{}: no CERTIFICATE section", path.display())
        );
        let empty = temp_file("empty.pem", b"");
        let o = TlsOptions {
            ca_file: Some(empty.clone()),
            ..options()
        };
        assert_eq!(
            error(&o),
            format!("{}: no CERTIFICATE section", empty.display())
        );
    }

    #[test]
    fn broken_pem_is_named() {
        let path = temp_file(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let o = TlsOptions {
            ca_file: Some(path.clone()),
            ..options()
        };
        let e = error(&o);
        assert!(
            e.starts_with(&format!("{}: not valid PEM: ", path.display())),
            "{e}"
        );
        let unterminated = temp_file("unterminated.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");
        let o = TlsOptions {
            ca_file: Some(unterminated.clone()),
            ..options()
        };
        let e = error(&o);
        assert!(
            e.starts_with(&format!("{}: not valid PEM: ", unterminated.display())),
            "{e}"
        );
    }

    #[test]
    fn garbage_der_in_a_ca_file_is_not_a_trust_anchor() {
        let path = temp_file(
            "garbage-ca.pem",
            b"-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
        );
        let o = TlsOptions {
            ca_file: Some(path.clone()),
            ..options()
        };
        let e = error(&o);
        assert!(
            e.starts_with(&format!(
                "{}: certificate #1 is not a usable CA certificate: ",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_named() {
        let cert = temp_file(
            "client-cert.pem",
            b"-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
        );
        let o = TlsOptions {
            client_cert: Some((cert.clone(), cert.clone())),
            ..options()
        };
        let e = error(&o);
        assert_eq!(
            e,
            format!(
                "{}: no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
                cert.display()
            )
        );
    }

    #[test]
    fn server_names_default_to_the_host_and_accept_ip_addresses() {
        let o = TlsOptions {
            config: Some(Arc::new(
                ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
            )),
            ..options()
        };
        let name = |addr: &str, o: &TlsOptions| {
            let addr: ServerAddr = addr.parse().unwrap();
            o.connector(&addr).map(|c| c.unwrap().server_name)
        };
        assert!(matches!(
            name("tls://127.0.0.1:1", &o).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            name("tls://[::1]:1", &o).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert_eq!(
            name("tls://broker.example:1", &o).unwrap(),
            ServerName::try_from("broker.example").unwrap()
        );
        let renamed = TlsOptions {
            server_name: Some("tern.internal".to_string()),
            ..o.clone()
        };
        assert_eq!(
            name("tls://10.0.0.1:1", &renamed).unwrap(),
            ServerName::try_from("tern.internal").unwrap()
        );
        let bad = TlsOptions {
            server_name: Some("not a name".to_string()),
            ..o
        };
        assert_eq!(
            name("tls://h:1", &bad).unwrap_err().to_string(),
            "`not a name` is not a valid TLS server name (a DNS name or an IP address)"
        );
    }
}

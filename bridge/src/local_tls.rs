//! TLS to the broker's own binary port, when its ports speak TLS: the bridge trusts
//! exactly the certificate the broker serves.
//!
//! Owns: [`pinned_config`], a rustls client configuration whose verifier accepts the
//! server's certificate only when it is the first certificate of the broker's own
//! certificate file, read again at every handshake (so a certificate reloaded on SIGHUP is
//! trusted from the next connection on), with the handshake signatures checked as usual.
//!
//! Never: accepts any other certificate, or falls back to no verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_client::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tern_client::rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tern_client::rustls::pki_types::pem::PemObject;
use tern_client::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tern_client::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

#[derive(Debug)]
struct Pinned {
    cert_file: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn leaf(&self) -> Result<CertificateDer<'static>, Error> {
        let pem = std::fs::read(&self.cert_file)
            .map_err(|e| Error::General(format!("{}: {e}", self.cert_file.display())))?;
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .ok_or_else(|| Error::General(format!("{}: no certificate", self.cert_file.display())))?
            .map_err(|e| Error::General(format!("{}: {e}", self.cert_file.display())))
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.leaf()?.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "not the certificate in {}: this is not the bridge's own broker",
                self.cert_file.display()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts only the certificate in `cert_file` (the broker's
/// own, as its `tls_cert` names it).
pub fn pinned_config(cert_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(tern_client::rustls::crypto::ring::default_provider());
    let pinned = Pinned {
        cert_file: cert_file.to_path_buf(),
        provider: Arc::clone(&provider),
    };
    pinned.leaf().map_err(|e| e.to_string())?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

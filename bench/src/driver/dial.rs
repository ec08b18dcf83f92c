//! Where a driver connects and what carries its protocol: plain TCP, TLS, WebSocket or
//! WebSocket over TLS.
//!
//! Owns: [`Transport`] (the `--transport` choice), [`TlsClient`] (the rustls client
//! configuration: which CA to trust, which name to expect on the broker's certificate) and
//! [`Dial`] (an address, a transport and, for TLS, the client configuration), which every
//! driver is built from.
//!
//! Never: opens a socket. [`super::socket`] does, with what a [`Dial`] says. Never trusts
//! a certificate it was not given: there is no "accept anything" mode, so a TLS figure is
//! always one of a real, verified handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::DriverError;

/// What carries the protocol's bytes between the harness and the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP. The text port starts in plain text (`INFO` with `tls_required`, then
    /// the client's handshake, as NATS clients do); the binary port is TLS from the first
    /// byte.
    Tls,
    /// WebSocket (`ws://`): the text protocol on path `/`, the binary one on `/tern`
    /// (`ternd`); nats-server's WebSocket listener serves the text protocol on any path.
    #[value(alias = "ws")]
    Websocket,
    /// WebSocket over TLS (`wss://`), TLS from the first byte.
    Wss,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Websocket,
        Transport::Wss,
    ];

    /// Its name in reports and flags (`tcp`, `tls`, `websocket`, `wss`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Websocket => "websocket",
            Transport::Wss => "wss",
        }
    }

    /// True when it needs a [`TlsClient`].
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// True when the protocol travels in WebSocket frames.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Websocket | Transport::Wss)
    }
}

/// A rustls client configuration (TLS 1.2 and 1.3 on `ring`, no client certificate) and
/// the name the broker's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the CA certificates in `ca_pem` (PEM) and expects `server_name` (a DNS name
    /// or an IP address) on the broker's certificate.
    pub fn trusting_pem(ca_pem: &[u8], server_name: &str) -> Result<Self, DriverError> {
        let mut roots = RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| DriverError::Tls(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| DriverError::Tls(format!("CA certificate refused: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(DriverError::Tls("CA file: no CERTIFICATE section".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DriverError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| DriverError::Tls(format!("server name {server_name:?}: {e}")))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// [`TlsClient::trusting_pem`] with the CA certificates read from `path`.
    pub fn trusting_file(path: &Path, server_name: &str) -> Result<Self, DriverError> {
        let pem = std::fs::read(path).map_err(|e| {
            DriverError::Tls(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        TlsClient::trusting_pem(&pem, server_name)
    }
}

/// Where and how to connect: what every driver is built from.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The broker's address (for WebSocket, its WebSocket port).
    pub addr: SocketAddr,
    /// What carries the protocol.
    pub transport: Transport,
    tls: Option<TlsClient>,
}

impl Dial {
    /// Plain TCP to `addr`.
    pub fn tcp(addr: SocketAddr) -> Self {
        Dial {
            addr,
            transport: Transport::Tcp,
            tls: None,
        }
    }

    /// `transport` to `addr`; a TLS transport needs `tls` (it is ignored otherwise).
    pub fn new(
        addr: SocketAddr,
        transport: Transport,
        tls: Option<TlsClient>,
    ) -> Result<Self, DriverError> {
        if transport.is_tls() && tls.is_none() {
            return Err(DriverError::Tls(format!(
                "--transport {} needs a CA to trust (--tls-ca FILE)",
                transport.name()
            )));
        }
        Ok(Dial {
            addr,
            transport,
            tls: if transport.is_tls() { tls } else { None },
        })
    }

    /// The TLS client configuration (TLS transports only).
    pub(crate) fn tls(&self) -> Result<&TlsClient, DriverError> {
        self.tls.as_ref().ok_or(DriverError::Unsupported(
            "TLS without a client configuration",
        ))
    }
}

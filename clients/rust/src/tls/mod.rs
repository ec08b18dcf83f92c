//! TLS from the first byte on the binary port (`tls://`, [`ClientBuilder::tls`]).
//!
//! Owns: the client's TLS settings and the rustls configuration made from them
//! (`config`: read once at `connect`, errors that name the file), and one connection's
//! session driven without blocking inside the I/O thread's `mio` loop (`session`).
//!
//! Never: opens sockets or decides when to read or write (the driver does, for plain and
//! TLS connections alike), or connects without verifying the server's certificate.
//!
//! [`ClientBuilder::tls`]: crate::ClientBuilder::tls

mod config;
mod session;

pub use config::{client_config, TlsConfigError};
pub(crate) use config::{Connector, TlsOptions};
pub(crate) use session::TlsSession;

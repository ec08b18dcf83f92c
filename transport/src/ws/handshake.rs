//! The opening handshake (RFC 6455, section 4.2), server side.
//!
//! Owns: reading the client's HTTP/1.1 upgrade request (`httparse`), checking it in the
//! order RFC 6455 section 4.2.1 lists (method, target, Host, Upgrade, Connection, key,
//! version; then the origin, then the extensions), computing `Sec-WebSocket-Accept`, and
//! writing the `101 Switching Protocols` answer or the HTTP error that refuses it.
//!
//! Never: keeps anything of the request but what [`Upgrade`] reports, or answers before
//! the request's header block is complete. The request's size bound is the caller's
//! (`WsLimits::max_handshake`): this module only ever sees what the caller buffered.

use std::io::Write;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::deflate;
use super::WsConfig;
use crate::error::HandshakeError;

/// Headers a request may have; more is a malformed request. Browsers send about 15.
pub const MAX_HEADERS: usize = 64;
/// The GUID RFC 6455 appends to the key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the caller learns from an accepted upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request path without its query (`/` or `/tern`): one of `WsConfig::paths`.
    pub path: String,
    /// Whether permessage-deflate was negotiated.
    pub compression: bool,
    /// The `Origin` header, when the client sent one (browsers do).
    pub origin: Option<String>,
    /// The first address of `X-Forwarded-For`, when a proxy sent one (nats-server uses it
    /// as the client's address in logs).
    pub forwarded_for: Option<String>,
    /// The `User-Agent` header, for logs.
    pub user_agent: Option<String>,
}

/// An accepted request: what to report and what to answer.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub upgrade: Upgrade,
    /// `Sec-WebSocket-Accept`, base64 of a SHA-1: 28 bytes.
    accept: [u8; 28],
}

/// Reads the request at the start of `buf`. `Ok(None)`: the header block is not complete
/// yet. `Ok(Some((len, accepted)))`: the request is the first `len` bytes and is accepted;
/// what follows it is already WebSocket frames.
pub(crate) fn read_request(
    buf: &[u8],
    config: &WsConfig,
) -> Result<Option<(usize, Accepted)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf).map_err(HandshakeError::Malformed)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    if request.method != Some("GET") {
        return Err(HandshakeError::Method);
    }
    if request.version != Some(1) {
        return Err(HandshakeError::HttpVersion);
    }
    let target = request.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(HandshakeError::Target);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if !config.paths.iter().any(|p| p == path) {
        return Err(HandshakeError::UnknownPath);
    }
    let headers = request.headers;
    if first(headers, "Host").is_none_or(|host| host.is_empty()) {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(headers, "Upgrade", "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !has_token(headers, "Connection", "upgrade") {
        return Err(HandshakeError::Connection);
    }
    let key = first(headers, "Sec-WebSocket-Key").ok_or(HandshakeError::MissingKey)?;
    let key = key.trim_ascii();
    if BASE64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(HandshakeError::InvalidKey);
    }
    if !has_token(headers, "Sec-WebSocket-Version", "13") {
        return Err(HandshakeError::Version);
    }
    let origin = first(headers, "Origin").map(text);
    if !config.allowed_origins.allows(origin.as_deref()) {
        return Err(HandshakeError::Origin);
    }
    let compression =
        config.compression && deflate::negotiate(values(headers, "Sec-WebSocket-Extensions"));
    let forwarded_for = first(headers, "X-Forwarded-For")
        .map(|v| text(v.split(|&b| b == b',').next().unwrap_or(v).trim_ascii()));
    let upgrade = Upgrade {
        path: path.to_owned(),
        compression,
        origin,
        forwarded_for,
        user_agent: first(headers, "User-Agent").map(text),
    };
    Ok(Some((
        len,
        Accepted {
            upgrade,
            accept: accept_key(key),
        },
    )))
}

/// Appends the `101 Switching Protocols` answer to `out`.
pub(crate) fn write_accept(out: &mut Vec<u8>, accepted: &Accepted) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accepted.accept);
    out.extend_from_slice(b"\r\n");
    if accepted.upgrade.compression {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(deflate::RESPONSE.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the HTTP error refusing the request to `out`: its status, and the reason as a
/// one-line body.
pub(crate) fn write_refusal(out: &mut Vec<u8>, error: &HandshakeError) {
    let (status, text) = error.status();
    let body = format!("{error}\n");
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {text}\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `base64(SHA-1(key + GUID))`.
fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    let mut out = [0u8; 28];
    // 20 bytes encode to exactly 28.
    let _ = BASE64.encode_slice(sha1.finish(), &mut out);
    out
}

fn values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn first<'a>(headers: &'a [httparse::Header<'a>], name: &'a str) -> Option<&'a [u8]> {
    values(headers, name).next()
}

/// Whether a header named `name` lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

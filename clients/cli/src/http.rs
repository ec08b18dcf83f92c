//! A minimal HTTP/1.1 GET over `std::net::TcpStream`, enough to read a broker's monitoring
//! endpoint (which answers with `Content-Length` and honours `Connection: close`).
//!
//! Never: follows redirects, speaks TLS, or waits without a timeout.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// How long one request may take to connect, and then to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Turns `http://host:port/`, `host:port` or `:port` into `host:port`.
pub fn authority(monitor: &str) -> String {
    let m = monitor.trim();
    let m = m.strip_prefix("http://").unwrap_or(m);
    let m = m.split('/').next().unwrap_or(m);
    if m.starts_with(':') {
        format!("127.0.0.1{m}")
    } else {
        m.to_string()
    }
}

/// GETs `path` from `authority` and returns the body of a 200 answer.
pub fn get(authority: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = request(authority, path)?;
    if status != "200" {
        bail!("{path} answered {status}: {}", body.trim());
    }
    Ok(body)
}

/// Like [`get`], but `None` when the endpoint answers 404: an older broker that does not
/// serve `path`.
pub fn get_if_served(authority: &str, path: &str) -> anyhow::Result<Option<String>> {
    let (status, body) = request(authority, path)?;
    match status.as_str() {
        "200" => Ok(Some(body)),
        "404" => Ok(None),
        _ => bail!("{path} answered {status}: {}", body.trim()),
    }
}

/// GETs `path` from `authority`: the answer's status code and body.
fn request(authority: &str, path: &str) -> anyhow::Result<(String, String)> {
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("bad monitoring address `{authority}`"))?
        .next()
        .ok_or_else(|| anyhow!("`{authority}` resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot reach the monitoring endpoint at {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading {path} from {addr}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{path}: not an HTTP answer"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    Ok((status.to_string(), body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority("http://127.0.0.1:8222/"), "127.0.0.1:8222");
        assert_eq!(authority("localhost:9"), "localhost:9");
        assert_eq!(authority(":8222"), "127.0.0.1:8222");
    }
}

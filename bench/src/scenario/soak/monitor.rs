//! Reading `ternd`'s monitoring endpoint: one `GET`, its status and body, and the counters
//! of `/varz` by path.
//!
//! Owns: a minimal HTTP/1.1 client (`Connection: close`, `Content-Length` or chunked
//! bodies) and [`counter`], which reads `a.b` paths of a `/varz` answer.
//!
//! Never: keeps a connection, or waits longer than the timeout it is given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The largest answer read (a `/varz` is a few KiB).
const MAX_BODY: u64 = 4 << 20;

/// `GET path` on `addr`: the status code and the body.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header block in {} bytes", raw.len()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {:?}", head.lines().next()))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// `GET path` as JSON (any status).
pub fn get_json(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let (status, body) = get(addr, path, timeout)?;
    serde_json::from_str(&body).map_err(|e| format!("{path} ({status}): {e}"))
}

/// The number at `path` (`slow_consumers`, `budget_drops.broker`) of a `/varz` answer, or,
/// for an object of numbers (`connections_refused`), their sum.
pub fn counter(varz: &serde_json::Value, path: &str) -> Option<u64> {
    let v = path.split('.').try_fold(varz, |v, key| v.get(key))?;
    match v {
        serde_json::Value::Object(m) => m.values().map(serde_json::Value::as_u64).sum(),
        v => v.as_u64(),
    }
}

fn dechunk(chunked: &str) -> String {
    let mut rest = chunked;
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_path_and_labelled_sums() {
        let v: serde_json::Value = serde_json::json!({
            "slow_consumers": 3,
            "budget_drops": {"connection": 5, "broker": 2},
            "connections_refused": {"total": 1, "per_ip": 0, "rate": 9},
        });
        assert_eq!(counter(&v, "slow_consumers"), Some(3));
        assert_eq!(counter(&v, "budget_drops.broker"), Some(2));
        assert_eq!(counter(&v, "connections_refused"), Some(10));
        assert_eq!(counter(&v, "nope"), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}

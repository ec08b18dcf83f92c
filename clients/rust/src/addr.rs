//! Server addresses: `tern://host:port`, `host:port`, `tern://host` and `host`, and
//! `tls://host:port` for TLS.
//!
//! Owns: parsing and printing the address a client connects to, whether it asks for TLS,
//! and its default port ([`DEFAULT_PORT`], Tern's binary port 4224, plain or TLS).
//!
//! Never: resolves names or opens sockets; that happens on the I/O thread, at every
//! connection attempt, so a name whose address changes is followed across reconnects.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The binary protocol's default port.
pub const DEFAULT_PORT: u16 = 4224;

/// The scheme of a Tern URL.
const SCHEME: &str = "tern://";
/// The scheme of a Tern URL over TLS.
const TLS_SCHEME: &str = "tls://";

/// Where a broker's binary port is: a host name or IP address and a port.
///
/// Parsed from `tern://host:port`, `host:port`, `tern://host` or `host` (the port defaults
/// to [`DEFAULT_PORT`]); IPv6 addresses go in brackets (`tern://[::1]:4224`). The scheme
/// `tls://` is the same address with TLS on (from the first byte; the broker serves TLS
/// on the same port when it has a certificate). Any other scheme (`nats://`, `http://`)
/// is refused, so a text-port URL is not tried by mistake.
///
/// ```
/// use tern_client::ServerAddr;
///
/// let addr: ServerAddr = "tern://localhost".parse()?;
/// assert_eq!((addr.host(), addr.port(), addr.is_tls()), ("localhost", 4224, false));
/// let addr: ServerAddr = "[::1]:5000".parse()?;
/// assert_eq!((addr.host(), addr.port()), ("::1", 5000));
/// let addr: ServerAddr = "tls://broker.example:4224".parse()?;
/// assert!(addr.is_tls());
/// assert!("nats://localhost:4222".parse::<ServerAddr>().is_err());
/// # Ok::<(), tern_client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: String,
    port: u16,
    tls: bool,
}

impl ServerAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
            tls: false,
        }
    }

    /// The same address with TLS on or off (`tls://` or `tern://`).
    pub fn with_tls(mut self, tls: bool) -> ServerAddr {
        self.tls = tls;
        self
    }

    /// True for a `tls://` address: the client connects with TLS whatever its builder
    /// says.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or IP address (IPv6 without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { TLS_SCHEME } else { SCHEME };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddr {
    type Err = Error;

    fn from_str(url: &str) -> Result<ServerAddr, Error> {
        let invalid = |reason: &'static str| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let trimmed = url.trim();
        let (tls, rest) = match trimmed.find("://") {
            Some(i) if trimmed[..i].eq_ignore_ascii_case("tern") => (false, &trimmed[i + 3..]),
            Some(i) if trimmed[..i].eq_ignore_ascii_case("tls") => (true, &trimmed[i + 3..]),
            Some(_) => return Err(invalid("the scheme must be tern:// or tls://")),
            None => (false, trimmed),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(invalid("no host"));
        }
        if rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(invalid("only a host and a port are allowed"));
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| invalid("unclosed '['"))?;
            let host = &after[..end];
            match &after[end + 1..] {
                "" => (host, None),
                tail => match tail.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(invalid("unexpected text after ']'")),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(invalid("an IPv6 address must be in brackets"))
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("the port must be a number from 1 to 65535")),
                Ok(p) => p,
            },
        };
        Ok(ServerAddr::new(host, port).with_tls(tls))
    }
}

impl TryFrom<&str> for ServerAddr {
    type Error = Error;

    fn try_from(url: &str) -> Result<ServerAddr, Error> {
        url.parse()
    }
}

impl TryFrom<String> for ServerAddr {
    type Error = Error;

    fn try_from(url: String) -> Result<ServerAddr, Error> {
        url.parse()
    }
}

impl TryFrom<&String> for ServerAddr {
    type Error = Error;

    fn try_from(url: &String) -> Result<ServerAddr, Error> {
        url.parse()
    }
}

impl From<std::net::SocketAddr> for ServerAddr {
    fn from(addr: std::net::SocketAddr) -> ServerAddr {
        ServerAddr::new(addr.ip().to_string(), addr.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(String, u16), Error> {
        s.parse::<ServerAddr>()
            .map(|a| (a.host().to_string(), a.port()))
    }

    #[test]
    fn accepts_the_documented_forms() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(parse(s).unwrap(), (host.to_string(), port), "{s}");
        };
        ok("tern://127.0.0.1:4300", "127.0.0.1", 4300);
        ok("tern://example.com", "example.com", DEFAULT_PORT);
        ok("TERN://example.com:1/", "example.com", 1);
        ok("localhost:9", "localhost", 9);
        ok("localhost", "localhost", DEFAULT_PORT);
        ok(" localhost ", "localhost", DEFAULT_PORT);
        ok("[::1]:4225", "::1", 4225);
        ok("tern://[fe80::1]", "fe80::1", DEFAULT_PORT);
        ok("tls://example.com:4300", "example.com", 4300);
        ok("TLS://[::1]", "::1", DEFAULT_PORT);
    }

    #[test]
    fn tls_is_the_scheme_only() {
        let tls = |s: &str| s.parse::<ServerAddr>().unwrap().is_tls();
        assert!(tls("tls://h:1"));
        assert!(tls("Tls://h"));
        assert!(!tls("tern://h:1"));
        assert!(!tls("h:1"));
        assert!(!ServerAddr::new("h", 1).is_tls());
        assert!(ServerAddr::new("h", 1).with_tls(true).is_tls());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "",
            "tern://",
            "nats://localhost:4222",
            "http://localhost",
            "localhost:0",
            "localhost:65536",
            "localhost:port",
            ":4224",
            "::1",
            "[::1",
            "[::1]x",
            "tern://user@host",
            "tern://host/path",
            "tls://",
            "tls://user@host",
            "tern+tls://host",
            "https://host",
            "a b:1",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tern://h:1",
            "tern://[::1]:4224",
            "tls://h:1",
            "tls://[::1]:4224",
        ] {
            let a: ServerAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_string().parse::<ServerAddr>().unwrap(), a);
        }
        let a = ServerAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 7)));
        assert_eq!(a.to_string(), "tern://127.0.0.1:7");
    }
}

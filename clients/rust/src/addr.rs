//! Server addresses: `tern://host:port`, `host:port`, `tern://host` and `host`.
//!
//! Owns: parsing and printing the address a client connects to, and its default port
//! ([`DEFAULT_PORT`], Tern's binary port 4224).
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

/// Where a broker's binary port is: a host name or IP address and a port.
///
/// Parsed from `tern://host:port`, `host:port`, `tern://host` or `host` (the port defaults
/// to [`DEFAULT_PORT`]); IPv6 addresses go in brackets (`tern://[::1]:4224`). Any other
/// scheme (`nats://`, `http://`) is refused, so a text-port URL is not tried by mistake.
///
/// ```
/// use tern_client::ServerAddr;
///
/// let addr: ServerAddr = "tern://localhost".parse()?;
/// assert_eq!((addr.host(), addr.port()), ("localhost", 4224));
/// let addr: ServerAddr = "[::1]:5000".parse()?;
/// assert_eq!((addr.host(), addr.port()), ("::1", 5000));
/// assert!("nats://localhost:4222".parse::<ServerAddr>().is_err());
/// # Ok::<(), tern_client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

impl ServerAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
        }
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
        if self.host.contains(':') {
            write!(f, "{SCHEME}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{SCHEME}{}:{}", self.host, self.port)
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
        let rest = match trimmed.find("://") {
            Some(i) if trimmed[..i].eq_ignore_ascii_case("tern") => &trimmed[i + 3..],
            Some(_) => return Err(invalid("the scheme must be tern://")),
            None => trimmed,
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
        Ok(ServerAddr::new(host, port))
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
            "a b:1",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["tern://h:1", "tern://[::1]:4224"] {
            let a: ServerAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_string().parse::<ServerAddr>().unwrap(), a);
        }
        let a = ServerAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 7)));
        assert_eq!(a.to_string(), "tern://127.0.0.1:7");
    }
}

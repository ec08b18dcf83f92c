//! Which web pages may open a WebSocket: nats-server's `allowed_origins`.
//!
//! Owns: parsing `scheme://host[:port]` origins and matching a request's `Origin` header
//! against the list: scheme and host compared case-insensitively, the port explicit or the
//! scheme's default (80 for http/ws, 443 for https/wss), any path ignored.
//!
//! Never: resolves names or consults anything but the list. An empty list allows every
//! origin; a request without an `Origin` header (not a browser) is allowed, as in
//! nats-server.

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// An origin that is not `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid origin {origin:?}: expected scheme://host[:port]")]
pub struct OriginError {
    /// The origin as given.
    pub origin: String,
}

/// The origins allowed to open a WebSocket; empty = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    origins: Vec<Origin>,
}

impl AllowedOrigins {
    /// Parses a list of `scheme://host[:port]` origins.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, OriginError> {
        let origins = list
            .iter()
            .map(|s| {
                parse(s.as_ref()).ok_or_else(|| OriginError {
                    origin: s.as_ref().to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { origins })
    }

    /// Whether any origin is allowed.
    pub fn is_any(&self) -> bool {
        self.origins.is_empty()
    }

    /// Whether a request with this `Origin` header value (None: no header) may upgrade.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin.filter(|_| !self.is_any()) else {
            return true;
        };
        match parse(origin) {
            Some(origin) => self.origins.contains(&origin),
            None => false,
        }
    }
}

fn parse(origin: &str) -> Option<Origin> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some(Origin {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(list).unwrap()
    }

    #[test]
    fn an_empty_list_allows_any_origin() {
        assert!(allowed(&[]).allows(Some("https://evil.example")));
    }

    #[test]
    fn a_request_without_origin_is_allowed() {
        assert!(allowed(&["https://app.example"]).allows(None));
    }

    #[test]
    fn default_ports_match_explicit_ones() {
        let list = allowed(&["https://App.Example", "http://localhost:8080"]);
        assert!(list.allows(Some("https://app.example:443")));
        assert!(list.allows(Some("HTTPS://APP.EXAMPLE")));
        assert!(list.allows(Some("http://localhost:8080")));
        assert!(!list.allows(Some("http://localhost")));
        assert!(!list.allows(Some("http://app.example")), "scheme differs");
        assert!(
            !list.allows(Some("https://app.example:8443")),
            "port differs"
        );
        assert!(!list.allows(Some("https://other.example")));
        assert!(!list.allows(Some("null")));
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_apart_from_the_port() {
        let list = allowed(&["http://[::1]:8080"]);
        assert!(list.allows(Some("http://[::1]:8080")));
        assert!(!list.allows(Some("http://[::1]")));
    }

    #[test]
    fn an_invalid_entry_is_refused_by_name() {
        let err = AllowedOrigins::parse(&["app.example"]).unwrap_err();
        assert_eq!(err.origin, "app.example");
        assert!(AllowedOrigins::parse(&["ftp://app.example"]).is_err());
        assert!(AllowedOrigins::parse(&["http://app.example:99999"]).is_err());
    }
}

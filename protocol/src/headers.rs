//! NATS header blocks: `NATS/1.0[ <status>[ <description>]]\r\n(<name>: <value>\r\n)*\r\n`.
//!
//! The broker carries header blocks as opaque bytes; this module builds and reads them for
//! the places that need to (status messages such as no-responders, clients, tests).

/// The header block of the status message a requester gets when nobody is subscribed to
/// the subject of its request (`no_responders`).
pub const NO_RESPONDERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// The version line prefix every header block starts with.
pub const VERSION: &[u8] = b"NATS/1.0";

/// Why a header block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The block does not start with `NATS/1.0` (followed by the line end or a space).
    #[error("header block does not start with NATS/1.0")]
    BadVersionLine,
    /// The block ends before its terminating empty line.
    #[error("header block does not end with an empty line")]
    Unterminated,
    /// A field line has no `:` or an empty name, or bytes follow the terminating empty line.
    #[error("header line has no ':'")]
    BadLine,
    /// The status of the version line is not a number that fits a `u16`.
    #[error("invalid status code")]
    BadStatus,
}

/// A parsed header block: optional status line parts and the fields in order (names keep
/// their case; a name may repeat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderMap {
    /// The status code of the version line (`503` in `NATS/1.0 503`), if any.
    pub status: Option<u16>,
    /// The text after the status code (`No Messages` in `NATS/1.0 404 No Messages`), if any.
    /// Only written by [`HeaderMap::encode`] when `status` is set.
    pub description: Option<String>,
    /// The `name: value` fields, in order; values without their surrounding whitespace.
    pub fields: Vec<(String, String)>,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits off the first line: `(line without its line end, the rest)`. Accepts `\r\n` and a
/// bare `\n`. `None` when there is no line end.
fn split_line(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = s.iter().position(|&b| b == b'\n')?;
    let line = &s[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &s[nl + 1..]))
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

impl HeaderMap {
    /// Reads a whole header block.
    ///
    /// Lines may end with `\r\n` or a bare `\n`. Names and values are trimmed of surrounding
    /// spaces and tabs; bytes that are not UTF-8 are replaced by U+FFFD. Nothing may follow
    /// the terminating empty line.
    pub fn parse(block: &[u8]) -> Result<HeaderMap, HeaderError> {
        let rest = block
            .strip_prefix(VERSION)
            .ok_or(HeaderError::BadVersionLine)?;
        let (version_rest, mut rest) = split_line(rest).ok_or(HeaderError::Unterminated)?;
        if version_rest.first().is_some_and(|&b| !is_space(b)) {
            return Err(HeaderError::BadVersionLine);
        }
        let mut map = HeaderMap::default();
        let status_line = trim(version_rest);
        if !status_line.is_empty() {
            let code_end = status_line
                .iter()
                .position(|&b| is_space(b))
                .unwrap_or(status_line.len());
            let (code, description) = status_line.split_at(code_end);
            map.status = Some(parse_status(code).ok_or(HeaderError::BadStatus)?);
            let description = trim(description);
            if !description.is_empty() {
                map.description = Some(text(description));
            }
        }
        loop {
            let (line, after) = split_line(rest).ok_or(HeaderError::Unterminated)?;
            if line.is_empty() {
                if !after.is_empty() {
                    return Err(HeaderError::BadLine);
                }
                return Ok(map);
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or(HeaderError::BadLine)?;
            let name = trim(&line[..colon]);
            if name.is_empty() {
                return Err(HeaderError::BadLine);
            }
            map.fields
                .push((text(name), text(trim(&line[colon + 1..]))));
            rest = after;
        }
    }

    /// Writes the block, ending with the empty line.
    ///
    /// Names and values are written as they are: a caller that puts a line end in one gets a
    /// block that does not parse back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            VERSION.len()
                + 4
                + self.description.as_ref().map_or(0, |d| d.len() + 8)
                + self
                    .fields
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        out.extend_from_slice(VERSION);
        if let Some(status) = self.status {
            out.push(b' ');
            out.extend_from_slice(status.to_string().as_bytes());
            if let Some(description) = &self.description {
                out.push(b' ');
                out.extend_from_slice(description.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The first value of a field, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The value of the first field named `name` (case-insensitively) in a header block, its
/// surrounding whitespace trimmed, without parsing the rest of the block or allocating.
/// `None` when there is no such field (or the block is malformed before it).
pub fn find<'a>(block: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let (_, mut rest) = split_line(block.strip_prefix(VERSION)?)?;
    loop {
        let (line, after) = split_line(rest)?;
        if line.is_empty() {
            return None;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if trim(&line[..colon]).eq_ignore_ascii_case(name.as_bytes()) {
                return Some(trim(&line[colon + 1..]));
            }
        }
        rest = after;
    }
}

fn parse_status(code: &[u8]) -> Option<u16> {
    if code.is_empty() {
        return None;
    }
    code.iter().try_fold(0u16, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u16::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_reads_one_field_without_parsing_the_block() {
        let block = b"NATS/1.0\r\nA: 1\r\ntern-priority:  6 \r\nTern-Priority: 2\r\n\r\n";
        assert_eq!(super::find(block, "Tern-Priority"), Some(&b"6"[..]));
        assert_eq!(super::find(block, "a"), Some(&b"1"[..]));
        assert_eq!(super::find(block, "B"), None);
        assert_eq!(super::find(b"NATS/1.0 503\r\n\r\n", "A"), None);
        assert_eq!(super::find(b"HTTP/1.0\r\nA: 1\r\n\r\n", "A"), None);
        assert_eq!(
            super::find(b"NATS/1.0\r\nA: 1", "A"),
            None,
            "unterminated line"
        );
    }

    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_fields() {
        let map =
            HeaderMap::parse(b"NATS/1.0\r\nFoo: bar\r\nfoo:  baz \t\r\nX-Empty:\r\n\r\n").unwrap();
        assert_eq!(map.status, None);
        assert_eq!(map.description, None);
        assert_eq!(
            map.fields,
            fields(&[("Foo", "bar"), ("foo", "baz"), ("X-Empty", "")])
        );
        assert_eq!(map.get("FOO"), Some("bar"));
        assert_eq!(map.get("x-empty"), Some(""));
        assert_eq!(map.get("missing"), None);
    }

    #[test]
    fn parses_status() {
        let map = HeaderMap::parse(NO_RESPONDERS).unwrap();
        assert_eq!(map.status, Some(503));
        assert_eq!(map.description, None);
        assert!(map.fields.is_empty());

        let map = HeaderMap::parse(b"NATS/1.0 404 No Messages\r\n\r\n").unwrap();
        assert_eq!(map.status, Some(404));
        assert_eq!(map.description.as_deref(), Some("No Messages"));

        let map =
            HeaderMap::parse(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n")
                .unwrap();
        assert_eq!(map.status, Some(408));
        assert_eq!(map.description.as_deref(), Some("Request Timeout"));
        assert_eq!(map.get("nats-pending-messages"), Some("1"));
    }

    #[test]
    fn value_keeps_inner_colons() {
        let map = HeaderMap::parse(b"NATS/1.0\r\nUrl: http://x:1/\r\n\r\n").unwrap();
        assert_eq!(map.get("url"), Some("http://x:1/"));
    }

    #[test]
    fn accepts_bare_newlines() {
        let map = HeaderMap::parse(b"NATS/1.0 503\nA: b\n\n").unwrap();
        assert_eq!(map.status, Some(503));
        assert_eq!(map.get("a"), Some("b"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            HeaderMap::parse(b"HTTP/1.1\r\n\r\n"),
            Err(HeaderError::BadVersionLine)
        );
        assert_eq!(HeaderMap::parse(b""), Err(HeaderError::BadVersionLine));
        assert_eq!(
            HeaderMap::parse(b"NATS/1.01\r\n\r\n"),
            Err(HeaderError::BadVersionLine)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0\r\nA: b\r\n"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0\r\nno colon\r\n\r\n"),
            Err(HeaderError::BadLine)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0\r\n: x\r\n\r\n"),
            Err(HeaderError::BadLine)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0\r\n\r\ntrailing"),
            Err(HeaderError::BadLine)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0 abc\r\n\r\n"),
            Err(HeaderError::BadStatus)
        );
        assert_eq!(
            HeaderMap::parse(b"NATS/1.0 99999\r\n\r\n"),
            Err(HeaderError::BadStatus)
        );
    }

    #[test]
    fn encodes() {
        assert_eq!(HeaderMap::default().encode(), b"NATS/1.0\r\n\r\n");
        let map = HeaderMap {
            status: Some(503),
            description: None,
            fields: Vec::new(),
        };
        assert_eq!(map.encode(), NO_RESPONDERS);
        let map = HeaderMap {
            status: Some(404),
            description: Some("No Messages".into()),
            fields: fields(&[("A", "1"), ("a", "2")]),
        };
        assert_eq!(
            map.encode(),
            b"NATS/1.0 404 No Messages\r\nA: 1\r\na: 2\r\n\r\n"
        );
        assert_eq!(HeaderMap::parse(&map.encode()), Ok(map));
    }

    #[test]
    fn description_without_status_is_not_written() {
        let map = HeaderMap {
            status: None,
            description: Some("ignored".into()),
            fields: Vec::new(),
        };
        assert_eq!(map.encode(), b"NATS/1.0\r\n\r\n");
    }
}

//! Message headers: a small typed view of the NATS header block.
//!
//! Owns: [`Headers`], the ordered `name: value` fields (and optional status line) a message
//! carries, their validation before sending, and their conversion to and from the raw block
//! (`NATS/1.0\r\nName: value\r\n\r\n`) that travels on the wire unchanged. The block grammar
//! itself lives in `tern_protocol::headers`; this module only wraps it.
//!
//! Never: reorders fields or changes the case of names: what a publisher sets is what a
//! subscriber (on either port) reads.

use bytes::Bytes;
use tern_protocol::headers::{HeaderError, HeaderMap};

use crate::Error;

/// The headers of a message: ordered `name: value` fields, names matched
/// case-insensitively, a name may repeat; plus the optional status of the version line
/// (e.g. `503` for the broker's no-responders answer).
///
/// ```
/// use tern_client::Headers;
///
/// let mut h = Headers::new();
/// h.insert("Trace-Id", "abc").append("Tag", "a").append("Tag", "b");
/// assert_eq!(h.get("trace-id"), Some("abc"));
/// assert_eq!(h.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(&h.to_bytes()[..], b"NATS/1.0\r\nTrace-Id: abc\r\nTag: a\r\nTag: b\r\n\r\n");
/// assert_eq!(Headers::parse(&h.to_bytes())?, h);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    map: HeaderMap,
}

impl Headers {
    /// No fields, no status.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Reads a raw header block (`NATS/1.0 ...\r\n ... \r\n`).
    pub fn parse(block: &[u8]) -> Result<Headers, HeaderError> {
        HeaderMap::parse(block).map(|map| Headers { map })
    }

    /// The raw block, as sent on the wire.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.map.encode())
    }

    /// Sets `name` to `value`, replacing every field of that name (matched
    /// case-insensitively); a new name goes last.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        match self
            .map
            .fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(first) => {
                self.map.fields[first] = (name, value);
                let mut i = first + 1;
                while i < self.map.fields.len() {
                    if self.map.fields[i]
                        .0
                        .eq_ignore_ascii_case(&self.map.fields[first].0)
                    {
                        self.map.fields.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
            None => self.map.fields.push((name, value)),
        }
        self
    }

    /// Adds a field after the existing ones, keeping any of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.map.fields.push((name.into(), value.into()));
        self
    }

    /// Removes every field named `name` (case-insensitively); true when there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.map.fields.len();
        self.map
            .fields
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.map.fields.len() != before
    }

    /// The first value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field, in order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.map.fields.len()
    }

    /// True when there is no field (there may still be a status).
    pub fn is_empty(&self) -> bool {
        self.map.fields.is_empty()
    }

    /// The status code of the version line (`503` in `NATS/1.0 503`), if any.
    pub fn status(&self) -> Option<u16> {
        self.map.status
    }

    /// The text after the status code, if any.
    pub fn description(&self) -> Option<&str> {
        self.map.description.as_deref()
    }

    /// Sets the status line (`NATS/1.0 <code> <description>`).
    pub fn set_status(&mut self, code: u16, description: Option<&str>) -> &mut Self {
        self.map.status = Some(code);
        self.map.description = description.map(str::to_string);
        self
    }

    /// Checks that the block will read back as written: names non-empty without `:`,
    /// whitespace or control characters; values and the description without line breaks.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad_value = |v: &str| v.contains(['\r', '\n']);
        for (name, value) in &self.map.fields {
            if name.is_empty() || name.bytes().any(|b| b == b':' || b <= b' ' || b == 0x7f) {
                return Err(Error::InvalidOption(format!(
                    "invalid header name `{name}`"
                )));
            }
            if bad_value(value) {
                return Err(Error::InvalidOption(format!(
                    "header `{name}` has a line break in its value"
                )));
            }
        }
        if self.map.description.as_deref().is_some_and(bad_value) {
            return Err(Error::InvalidOption(
                "header status description has a line break".to_string(),
            ));
        }
        Ok(())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Headers {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.append(k, v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_every_field_of_the_name_in_place() {
        let mut h: Headers = [("A", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        h.insert("a", "9");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("a", "9"), ("b", "2")]);
        h.insert("C", "4");
        assert_eq!(h.len(), 3);
        assert!(h.remove("B"));
        assert!(!h.remove("B"));
        assert_eq!(h.iter().collect::<Vec<_>>(), [("a", "9"), ("C", "4")]);
    }

    #[test]
    fn status_round_trips() {
        let mut h = Headers::new();
        h.set_status(503, None);
        assert_eq!(&h.to_bytes()[..], tern_protocol::headers::NO_RESPONDERS);
        let back = Headers::parse(&h.to_bytes()).unwrap();
        assert_eq!(back.status(), Some(503));
        assert!(back.is_empty());
        h.set_status(404, Some("No Messages"));
        assert_eq!(
            Headers::parse(&h.to_bytes()).unwrap().description(),
            Some("No Messages")
        );
    }

    #[test]
    fn validate_refuses_what_would_not_read_back() {
        let ok: Headers = [("X-Id", "a b: c")].into_iter().collect();
        assert!(ok.validate().is_ok());
        for (n, v) in [("", "v"), ("a:b", "v"), ("a b", "v"), ("a", "x\r\ny: z")] {
            let h: Headers = [(n, v)].into_iter().collect();
            assert!(
                matches!(h.validate(), Err(Error::InvalidOption(_))),
                "{n:?} {v:?}"
            );
        }
        let mut h = Headers::new();
        h.set_status(500, Some("a\nb"));
        assert!(h.validate().is_err());
    }
}

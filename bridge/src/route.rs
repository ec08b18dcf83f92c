//! Which local subscribers an imported copy is for: the bridge's word to its own broker.
//!
//! Upstream sends the bridge one copy of a message per matching subscription: one for the
//! plain subscribers it stands for, and one per queue group whose member upstream picked it
//! as (a local queue group joins the upstream group of the same name). Each copy is
//! published locally with a [`ROUTE_HEADER`] saying whom it is for: `plain` (the plain
//! subscribers) or `queue <group>` (one member of that group), so no local subscriber gets
//! a message twice and each queue group's message is handled once in the whole cluster.
//!
//! Owns: [`Route`], its header lines, and taking them out of a header block again (the
//! broker does this for its bridge's publishes only; no subscriber ever sees them).
//!
//! Never: trusts a route from anyone but the bridge's own connection (the broker's check).

use bytes::Bytes;

/// The header carrying a [`Route`] on the bridge's local publishes.
pub const ROUTE_HEADER: &str = "Tern-Bridge-Route";

/// Whom a copy from upstream is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The plain (non-queue) subscribers.
    pub plain: bool,
    /// One member of each of these queue groups.
    pub groups: Vec<Bytes>,
}

impl Route {
    /// For the plain subscribers only.
    pub fn plain() -> Route {
        Route {
            plain: true,
            groups: Vec::new(),
        }
    }

    /// For one member of `group` only.
    pub fn group(group: Bytes) -> Route {
        Route {
            plain: false,
            groups: vec![group],
        }
    }

    /// The route a header block carries in its last field (where the bridge puts it), and
    /// the block without that field; `None` when its last field is not a route (the block
    /// is then used as it is). Reads only the last line: the bridge's publishes pay for
    /// this on the broker's publish path.
    pub fn take(block: &[u8]) -> Option<(Bytes, Route)> {
        let body = block.strip_suffix(b"\r\n\r\n")?;
        let start = body.windows(2).rposition(|w| w == b"\r\n")? + 2;
        let line = &body[start..];
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(ROUTE_HEADER.as_bytes()) {
            return None;
        }
        let value = line[colon + 1..].trim_ascii();
        let route = if value == b"plain" {
            Route::plain()
        } else {
            Route::group(Bytes::copy_from_slice(
                value.strip_prefix(b"queue ")?.trim_ascii(),
            ))
        };
        let mut kept = Vec::with_capacity(start + 2);
        kept.extend_from_slice(&block[..start]);
        kept.extend_from_slice(b"\r\n");
        Some((Bytes::from(kept), route))
    }

    /// The header value that says it, for a route of the plain subscribers or one group.
    pub fn value(&self) -> Vec<u8> {
        match (self.plain, self.groups.as_slice()) {
            (true, _) => b"plain".to_vec(),
            (false, [g, ..]) => [&b"queue "[..], g].concat(),
            (false, []) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_comes_out_of_the_last_field() {
        let block =
            b"NATS/1.0\r\nTern-Origin: x\r\nA: b\r\ntern-bridge-route: queue workers\r\n\r\n";
        let (kept, route) = Route::take(block).unwrap();
        assert_eq!(&kept[..], b"NATS/1.0\r\nTern-Origin: x\r\nA: b\r\n\r\n");
        assert_eq!(route, Route::group(Bytes::from_static(b"workers")));
        assert_eq!(route.value(), b"queue workers");
        let (kept, route) = Route::take(b"NATS/1.0\r\nTern-Bridge-Route: plain\r\n\r\n").unwrap();
        assert_eq!(&kept[..], b"NATS/1.0\r\n\r\n");
        assert_eq!(route, Route::plain());
    }

    #[test]
    fn a_block_without_one_is_left_alone() {
        assert!(Route::take(b"NATS/1.0\r\nA: b\r\n\r\n").is_none());
        assert!(Route::take(b"NATS/1.0\r\n\r\n").is_none());
        assert!(Route::take(b"NATS/1.0\r\nTern-Bridge-Route: nonsense\r\n\r\n").is_none());
        assert!(Route::take(b"\xff\xfe").is_none());
    }
}

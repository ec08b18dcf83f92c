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

    /// The header values that say it.
    pub fn values(&self) -> Vec<String> {
        let mut v = Vec::with_capacity(1 + self.groups.len());
        if self.plain {
            v.push("plain".to_string());
        }
        for g in &self.groups {
            v.push(format!("queue {}", String::from_utf8_lossy(g)));
        }
        v
    }

    /// The route a header block carries, and the block without it; `None` when it carries
    /// none (the block is then used as it is). A block that does not parse carries none.
    pub fn take(block: &[u8]) -> Option<(Bytes, Route)> {
        let text = std::str::from_utf8(block).ok()?;
        let mut lines = text.split("\r\n");
        let status = lines.next()?;
        let mut kept = String::with_capacity(text.len());
        kept.push_str(status);
        kept.push_str("\r\n");
        let mut route: Option<Route> = None;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case(ROUTE_HEADER) => {
                    let r = route.get_or_insert_with(Route::default);
                    let value = value.trim();
                    if value == "plain" {
                        r.plain = true;
                    } else if let Some(g) = value.strip_prefix("queue ") {
                        r.groups.push(Bytes::copy_from_slice(g.trim().as_bytes()));
                    }
                }
                _ => {
                    kept.push_str(line);
                    kept.push_str("\r\n");
                }
            }
        }
        kept.push_str("\r\n");
        route.map(|r| (Bytes::from(kept), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_comes_out_of_the_header_block() {
        let block = b"NATS/1.0\r\nTern-Origin: x\r\nTern-Bridge-Route: plain\r\ntern-bridge-route: queue workers\r\nA: b\r\n\r\n";
        let (kept, route) = Route::take(block).unwrap();
        assert_eq!(&kept[..], b"NATS/1.0\r\nTern-Origin: x\r\nA: b\r\n\r\n");
        assert!(route.plain);
        assert_eq!(route.groups, vec![Bytes::from_static(b"workers")]);
        assert_eq!(route.values(), ["plain", "queue workers"]);
    }

    #[test]
    fn a_block_without_one_is_left_alone() {
        assert!(Route::take(b"NATS/1.0\r\nA: b\r\n\r\n").is_none());
        assert!(Route::take(b"\xff\xfe").is_none());
    }
}

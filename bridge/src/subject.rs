//! Subject filters as the bridge needs them: which part of a local subscription an import
//! rule covers.
//!
//! Owns: [`intersect`], the one filter that matches exactly the subjects two filters both
//! match (NATS filters are token-wise, so the intersection is always one filter or none),
//! and the reserved prefix the bridge's own subjects live under.
//!
//! Never: validates. Both filters come from places that already did (the broker's `SUB`
//! handling, the config check).

/// Subjects under this prefix are the bridge's own (reply mappings): never exported, never
/// counted as interest.
pub const BRIDGE_PREFIX: &str = "$TERN.BRIDGE.";

/// Subjects under this prefix are the broker's own (presence, replay, drop notices).
pub const TERN_PREFIX: &str = "$TERN.";

/// The filter matching exactly the subjects both `a` and `b` match, or `None` when no
/// subject matches both.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    let mut x = a.split('.');
    let mut y = b.split('.');
    let mut out: Vec<&str> = Vec::new();
    loop {
        match (x.next(), y.next()) {
            (None, None) => break,
            (Some(">"), Some(t)) => {
                out.push(t);
                out.extend(y.by_ref());
                break;
            }
            (Some(t), Some(">")) => {
                out.push(t);
                out.extend(x.by_ref());
                break;
            }
            (Some("*"), Some(t)) | (Some(t), Some("*")) => out.push(t),
            (Some(s), Some(t)) if s == t => out.push(s),
            _ => return None,
        }
    }
    Some(out.join("."))
}

#[cfg(test)]
mod tests {
    use super::intersect;

    #[test]
    fn intersections() {
        let cases = [
            ("a.b", "a.b", Some("a.b")),
            ("a.b", "a.c", None),
            ("a.*", "a.b", Some("a.b")),
            ("a.>", "a.b.c", Some("a.b.c")),
            (">", "x.*.y", Some("x.*.y")),
            ("a.>", "*.b.>", Some("a.b.>")),
            ("a.>", "*.b", Some("a.b")),
            ("*.*", "a.>", Some("a.*")),
            ("a.b", "a.b.c", None),
            ("a.>", "a", None),
            (">", ">", Some(">")),
            ("*", ">", Some("*")),
        ];
        for (a, b, want) in cases {
            assert_eq!(intersect(a, b).as_deref(), want, "{a} ∩ {b}");
            assert_eq!(intersect(b, a).as_deref(), want, "{b} ∩ {a}");
        }
    }

    #[test]
    fn the_intersection_matches_what_both_match() {
        use tern_protocol::subject::matches;
        let filters = ["a.>", "*.b", "a.*", ">", "*.*.c", "a.b.c", "x.>", "*"];
        let subjects = ["a", "a.b", "a.c", "a.b.c", "x.b", "x.y.c", "a.z.c"];
        for f in filters {
            for g in filters {
                let i = intersect(f, g);
                for s in subjects {
                    let both =
                        matches(f.as_bytes(), s.as_bytes()) && matches(g.as_bytes(), s.as_bytes());
                    let by_i = i
                        .as_ref()
                        .is_some_and(|i| matches(i.as_bytes(), s.as_bytes()));
                    assert_eq!(both, by_i, "{f} ∩ {g} = {i:?} on {s}");
                }
            }
        }
    }
}

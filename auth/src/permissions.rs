//! What an authenticated connection may publish, subscribe to and receive, with
//! nats-server's exact meaning, and the per-connection bookkeeping of `allow_responses`.
//!
//! Owns: [`Permissions`] (built once per user from a [`PermissionsEntry`], shared in an
//! `Arc`), [`ResponsePermission`] and [`ResponseGrants`].
//!
//! Never: allocates in [`Permissions::may_publish`], [`Permissions::may_subscribe`] or
//! [`Permissions::may_receive`]; reads a clock ([`ResponseGrants`] is handed `Instant`s);
//! caches decisions (a per-connection decision cache is the broker's).
//!
//! nats-server's rules, as `client.go` has them (`pubAllowedFullCheck`, `canSubscribe`,
//! `checkDenySub`, `setPermissions`) and `auth.go` (`validateResponsePermissions`):
//! - publish: the allow list (absent: everything; present but empty: nothing) minus the
//!   deny list; deny wins.
//! - subscribe: the filter is matched against the allow entries as a *subject*, its `*`
//!   and `>` tokens standing for themselves (a sublist `Match`): allow `foo.>` or `foo.*`
//!   permits `foo.*`, allow `foo.bar` does not. Allow entries with a queue
//!   (`"foo.* bar"`) decide queue subscriptions whose filter they match: the queue must
//!   equal the entry's queue or be a subset of its wildcard queue. An empty subscribe
//!   allow list means everything (nats-server only builds the list when it has entries).
//!   Deny entries the same way, and deny wins.
//! - delivery: a wildcard subscription that overlaps a deny entry was allowed, so each
//!   message delivered on it is checked ([`Permissions::delivery_filter`],
//!   [`Permissions::may_receive`]).
//! - `allow_responses`: a connection may publish to the reply subject of a request it
//!   received, `max` times (default 1) within `expires` (default 2 minutes), and setting
//!   it without a publish allow list makes the publish allow list empty.
//!
//! Cost: every check is a linear scan over the entries; a literal entry is one slice
//! comparison, a wildcard entry one token walk (`tern_protocol::subject::matches`).
//! Permission lists are short (tens of entries), and the broker caches decisions.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tern_protocol::subject::{is_literal, matches, tokens};

use crate::config::{
    parse_duration, split_subject_queue, AuthConfigError, PermissionsEntry, PublishKind,
    ResponsesEntry, RuleKind, RulesEntry,
};

/// nats-server's `DEFAULT_ALLOW_RESPONSE_MAX_MSGS`.
pub const DEFAULT_RESPONSE_MAX: usize = 1;
/// nats-server's `DEFAULT_ALLOW_RESPONSE_EXPIRATION`.
pub const DEFAULT_RESPONSE_EXPIRES: Duration = Duration::from_secs(120);
/// The most reply subjects a connection holds a grant for; past it the oldest goes.
pub const MAX_RESPONSE_GRANTS: usize = 4096;

/// How a connection may answer requests it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    /// Messages per reply subject; at least 1.
    pub max: usize,
    /// How long a reply subject stays publishable; `None`: until used up.
    pub expires: Option<Duration>,
}

/// One filter of a rule list, checked when built.
#[derive(Debug, Clone)]
struct Filter {
    text: Box<[u8]>,
    literal: bool,
}

impl Filter {
    fn new(text: &str) -> Filter {
        Filter {
            literal: is_literal(text.as_bytes()),
            text: text.as_bytes().into(),
        }
    }

    /// True when the filter matches `subject`, whose `*` and `>` tokens (if any) are taken
    /// literally: nats-server's sublist `Match`.
    #[inline]
    fn matches(&self, subject: &[u8]) -> bool {
        if self.literal {
            *self.text == *subject
        } else {
            matches(&self.text, subject)
        }
    }
}

/// A subscribe rule: a filter, for queue subscriptions of `queue` only when given.
#[derive(Debug, Clone)]
struct SubEntry {
    filter: Filter,
    queue: Option<Box<[u8]>>,
}

/// A list of subscribe entries, as a sublist would answer a `Match`.
#[derive(Debug, Clone, Default)]
struct SubList(Vec<SubEntry>);

impl SubList {
    /// (a plain entry matches, the queue entries that match decide the queue).
    #[inline]
    fn plain_match(&self, subject: &[u8]) -> bool {
        self.0
            .iter()
            .any(|e| e.queue.is_none() && e.filter.matches(subject))
    }

    fn has_queue_match(&self, subject: &[u8]) -> bool {
        self.0
            .iter()
            .any(|e| e.queue.is_some() && e.filter.matches(subject))
    }

    /// nats-server's `queueMatches` over the queue entries that match `subject`.
    fn queue_matches(&self, subject: &[u8], queue: &[u8]) -> bool {
        self.0.iter().any(|e| match &e.queue {
            Some(q) if e.filter.matches(subject) => {
                **q == *queue || (!is_literal(q) && is_subset_match(queue, q))
            }
            _ => false,
        })
    }
}

/// nats-server's `isSubsetMatchTokenized`: every subject `subject` can stand for is one
/// `test` matches (both may hold wildcards).
fn is_subset_match(subject: &[u8], test: &[u8]) -> bool {
    let mut s = tokens(subject);
    let mut t = tokens(test);
    loop {
        match (s.next(), t.next()) {
            (None, None) => return true,
            (Some(_), Some(b">")) => return true,
            (Some(b">"), Some(_)) => return false,
            (Some(b"*"), Some(tt)) => {
                if tt != b"*" {
                    return false;
                }
            }
            (Some(st), Some(tt)) => {
                if tt != b"*" && st != tt {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// True when some subject matches both filters (nats-server's `SubjectsCollide`).
fn collide(a: &[u8], b: &[u8]) -> bool {
    let mut a = tokens(a);
    let mut b = tokens(b);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) | (Some(_), Some(b">")) => return true,
            (Some(x), Some(y)) => {
                if x != b"*" && y != b"*" && x != y {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// What a connection may do. Immutable; share it in an `Arc`.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// `None`: every subject (before the deny list).
    pub_allow: Option<Vec<Filter>>,
    pub_deny: Vec<Filter>,
    /// `None`: every filter (before the deny list).
    sub_allow: Option<SubList>,
    sub_deny: SubList,
    responses: Option<ResponsePermission>,
}

impl Permissions {
    /// Permissions that allow everything.
    pub fn everything() -> Permissions {
        Permissions {
            pub_allow: None,
            pub_deny: Vec::new(),
            sub_allow: None,
            sub_deny: SubList::default(),
            responses: None,
        }
    }

    /// Builds permissions from a config entry, checking every filter again (an entry may
    /// have been built in code). Errors name the key below the entry
    /// (`publish.allow[1]`).
    pub fn from_entry(e: &PermissionsEntry) -> Result<Permissions, AuthConfigError> {
        let mut p = Permissions::everything();
        if let Some(rules) = &e.publish {
            p.pub_allow = rules
                .allow
                .as_ref()
                .map(|l| publish_filters(l, "publish.allow"))
                .transpose()?;
            if let Some(deny) = &rules.deny {
                p.pub_deny = publish_filters(deny, "publish.deny")?;
            }
        }
        if let Some(rules) = &e.subscribe {
            p.sub_allow = match &rules.allow {
                // nats-server builds the allow sublist only when it has entries.
                Some(l) if !l.is_empty() => Some(sub_list(l, "subscribe.allow")?),
                _ => None,
            };
            if let Some(deny) = &rules.deny {
                p.sub_deny = sub_list(deny, "subscribe.deny")?;
            }
        }
        p.responses = responses(e.allow_responses.as_ref())?;
        if p.responses.is_some() && p.pub_allow.is_none() {
            // validateResponsePermissions: "We turn off the blanket allow statement."
            p.pub_allow = Some(Vec::new());
        }
        Ok(p)
    }

    /// True when the connection may publish to the (literal) `subject`: on the allow list
    /// (or there is none) and on no deny entry. Reply grants are not consulted: see
    /// [`ResponseGrants`]. Does not allocate.
    #[inline]
    pub fn may_publish(&self, subject: &[u8]) -> bool {
        let allowed = match &self.pub_allow {
            None => true,
            Some(allow) => allow.iter().any(|f| f.matches(subject)),
        };
        allowed && !self.pub_deny.iter().any(|f| f.matches(subject))
    }

    /// True when the connection may subscribe to `filter` (in queue group `queue`):
    /// nats-server's `canSubscribe`. Does not allocate.
    pub fn may_subscribe(&self, filter: &[u8], queue: Option<&[u8]>) -> bool {
        let queue = queue.filter(|q| !q.is_empty());
        let mut allowed = true;
        if let Some(allow) = &self.sub_allow {
            allowed = allow.plain_match(filter);
            if let Some(q) = queue {
                if allow.has_queue_match(filter) {
                    // The queue appears in the allow list: it decides.
                    allowed = allow.queue_matches(filter, q);
                }
            }
        }
        if allowed && !self.sub_deny.0.is_empty() {
            allowed = !self.sub_deny.plain_match(filter);
            if let Some(q) = queue {
                if allowed && self.sub_deny.has_queue_match(filter) {
                    allowed = !self.sub_deny.queue_matches(filter, q);
                }
            }
        }
        allowed
    }

    /// True when a subscription on `filter` (already allowed) can receive messages a deny
    /// entry forbids: a wildcard filter that overlaps a deny entry. Each delivery on it
    /// must then pass [`Permissions::may_receive`] (nats-server's
    /// `loadMsgDenyFilterIfNeeded`).
    pub fn delivery_filter(&self, filter: &[u8]) -> bool {
        !is_literal(filter)
            && self
                .sub_deny
                .0
                .iter()
                .any(|e| collide(&e.filter.text, filter))
    }

    /// True when a message on the literal `subject` may be delivered on a (plain)
    /// subscription: no subscribe deny entry matches it.
    #[inline]
    pub fn may_receive(&self, subject: &[u8]) -> bool {
        self.may_receive_queue(subject, None)
    }

    /// [`Permissions::may_receive`] for a subscription in queue group `queue`: the deny
    /// entries of that queue apply too (nats-server's `checkDenySub`).
    pub fn may_receive_queue(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        if self.sub_deny.plain_match(subject) {
            return false;
        }
        match queue.filter(|q| !q.is_empty()) {
            Some(q) => !self.sub_deny.queue_matches(subject, q),
            None => true,
        }
    }

    /// How the connection may answer requests, when `allow_responses` is set.
    pub fn responses(&self) -> Option<ResponsePermission> {
        self.responses
    }

    /// True when nothing is restricted: the broker may skip every check.
    pub fn allows_everything(&self) -> bool {
        self.pub_allow.is_none()
            && self.pub_deny.is_empty()
            && self.sub_allow.is_none()
            && self.sub_deny.0.is_empty()
            && self.responses.is_none()
    }

    /// How many filters the lists hold in all (for limits on claims).
    pub(crate) fn entry_count(e: &PermissionsEntry) -> usize {
        let rules = |r: &Option<RulesEntry>| {
            r.as_ref().map_or(0, |r| {
                r.allow.as_ref().map_or(0, Vec::len) + r.deny.as_ref().map_or(0, Vec::len)
            })
        };
        rules(&e.publish) + rules(&e.subscribe)
    }
}

fn publish_filters(list: &[String], key: &str) -> Result<Vec<Filter>, AuthConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            PublishKind::check(s).map_err(|reason| AuthConfigError::BadFilter {
                key: format!("{key}[{i}]"),
                reason,
            })?;
            Ok(Filter::new(s))
        })
        .collect()
}

fn sub_list(list: &[String], key: &str) -> Result<SubList, AuthConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let (subject, queue) =
                split_subject_queue(s).map_err(|e| AuthConfigError::BadFilter {
                    key: format!("{key}[{i}]"),
                    reason: format!("invalid subscribe filter {s:?}: {e}"),
                })?;
            Ok(SubEntry {
                filter: Filter::new(subject),
                queue: queue.map(|q| q.as_bytes().into()),
            })
        })
        .collect::<Result<_, _>>()
        .map(SubList)
}

fn responses(e: Option<&ResponsesEntry>) -> Result<Option<ResponsePermission>, AuthConfigError> {
    let (max, expires) = match e {
        None | Some(ResponsesEntry::Enabled(false)) => return Ok(None),
        Some(ResponsesEntry::Enabled(true)) => (None, None),
        Some(ResponsesEntry::Limits { max, expires }) => (*max, expires.as_deref()),
    };
    let expires = match expires {
        None => DEFAULT_RESPONSE_EXPIRES,
        Some(text) => parse_duration(text).map_err(|reason| AuthConfigError::BadDuration {
            key: "allow_responses.expires".into(),
            reason,
        })?,
    };
    Ok(Some(ResponsePermission {
        // 0 means the default, as in nats-server.
        max: max.filter(|&m| m != 0).unwrap_or(DEFAULT_RESPONSE_MAX),
        expires: Some(if expires.is_zero() {
            DEFAULT_RESPONSE_EXPIRES
        } else {
            expires
        }),
    }))
}

/// One reply subject a connection may answer on.
#[derive(Debug, Clone, Copy)]
struct Grant {
    /// Uses left.
    left: usize,
    granted: Instant,
    /// Which of the subject's entries in `order` is the live one.
    generation: u64,
}

/// Per-connection bookkeeping of `allow_responses`: the reply subjects of requests this
/// connection received, each publishable `max` times until `expires`.
///
/// Contract: the broker calls [`ResponseGrants::grant`] when it delivers a message with a
/// reply subject the connection may not publish to ([`Permissions::may_publish`] is
/// false), and on a publish the permissions refuse it calls [`ResponseGrants::take`].
/// Bounded by [`MAX_RESPONSE_GRANTS`] (the oldest grant goes first) and pruned by time.
#[derive(Debug)]
pub struct ResponseGrants {
    perm: ResponsePermission,
    grants: HashMap<Box<[u8]>, Grant>,
    /// Subjects in grant order, with the generation they were granted under; entries
    /// whose generation is no longer the subject's are stale and skipped.
    order: VecDeque<(Box<[u8]>, u64)>,
    next_generation: u64,
}

impl ResponseGrants {
    pub fn new(p: ResponsePermission) -> ResponseGrants {
        ResponseGrants {
            perm: ResponsePermission {
                max: p.max.max(1),
                ..p
            },
            grants: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Lets the connection publish to `reply` `max` times from `now`; granting a subject
    /// again starts it afresh (as nats-server does).
    pub fn grant(&mut self, reply: &[u8], now: Instant) {
        if !self.grants.contains_key(reply) && self.grants.len() >= MAX_RESPONSE_GRANTS {
            self.evict_oldest();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.grants.insert(
            reply.into(),
            Grant {
                left: self.perm.max,
                granted: now,
                generation,
            },
        );
        self.order.push_back((reply.into(), generation));
        if self.order.len() > 2 * MAX_RESPONSE_GRANTS {
            self.compact();
        }
    }

    /// True when the connection may publish to `subject` now; uses one of its grant's uses.
    pub fn take(&mut self, subject: &[u8], now: Instant) -> bool {
        let Some(g) = self.grants.get_mut(subject) else {
            return false;
        };
        if self
            .perm
            .expires
            .is_some_and(|ttl| expired(g.granted, ttl, now))
        {
            self.grants.remove(subject);
            return false;
        }
        g.left -= 1;
        if g.left == 0 {
            self.grants.remove(subject);
        }
        true
    }

    /// Drops the grants that expired by `now`.
    pub fn prune(&mut self, now: Instant) {
        if let Some(ttl) = self.perm.expires {
            self.grants.retain(|_, g| !expired(g.granted, ttl, now));
        }
        self.compact();
    }

    /// Reply subjects currently granted (some may have expired since the last prune).
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    fn is_live(&self, subject: &[u8], generation: u64) -> bool {
        self.grants
            .get(subject)
            .is_some_and(|g| g.generation == generation)
    }

    fn evict_oldest(&mut self) {
        while let Some((subject, generation)) = self.order.pop_front() {
            if self.is_live(&subject, generation) {
                self.grants.remove(&subject);
                return;
            }
        }
    }

    fn compact(&mut self) {
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter(|(s, g)| self.is_live(s, *g))
            .collect();
    }
}

fn expired(granted: Instant, ttl: Duration, now: Instant) -> bool {
    now.saturating_duration_since(granted) > ttl
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(allow: Option<&[&str]>, deny: Option<&[&str]>) -> Option<RulesEntry> {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Some(RulesEntry {
            allow: allow.map(list),
            deny: deny.map(list),
        })
    }

    fn perms(toml_text: &str) -> Permissions {
        let e: PermissionsEntry = toml::from_str(toml_text).unwrap();
        Permissions::from_entry(&e).unwrap()
    }

    #[test]
    fn publish_allow_minus_deny() {
        let p = perms(r#"publish = { allow = ["foo.>", "bar"], deny = ["foo.secret"] }"#);
        let cases: &[(&str, bool)] = &[
            ("foo.a", true),
            ("foo.a.b", true),
            ("foo", false),
            ("bar", true),
            ("bar.x", false),
            ("foo.secret", false),
            ("foo.secret.x", true),
            ("baz", false),
        ];
        for &(s, want) in cases {
            assert_eq!(p.may_publish(s.as_bytes()), want, "{s}");
        }
        // Deny only: everything else.
        let p = perms(r#"publish = { deny = ["$SYS.>"] }"#);
        assert!(p.may_publish(b"anything"));
        assert!(!p.may_publish(b"$SYS.REQ"));
        // An empty allow list allows nothing (nats-server creates the sublist).
        let p = perms(r#"publish = { allow = [] }"#);
        assert!(!p.may_publish(b"x"));
        assert!(!p.allows_everything());
    }

    #[test]
    fn subscribe_wildcards_against_allow() {
        let p = perms(r#"subscribe = ["foo.>", "bar.*", "baz.one"]"#);
        let cases: &[(&str, bool)] = &[
            ("foo.x", true),
            ("foo.*", true),
            ("foo.>", true),
            ("foo.*.y", true),
            ("foo", false),
            (">", false),
            ("bar.x", true),
            ("bar.*", true),
            // nats-server's sublist: a `*` allow entry matches the `>` token too.
            ("bar.>", true),
            ("bar.x.y", false),
            ("baz.one", true),
            ("baz.*", false),
            ("baz.>", false),
            ("*.one", false),
        ];
        for &(f, want) in cases {
            assert_eq!(p.may_subscribe(f.as_bytes(), None), want, "{f}");
        }
        // An empty subscribe allow list allows everything (nats-server: `len > 0`).
        let p = perms(r#"subscribe = { allow = [] }"#);
        assert!(p.may_subscribe(b"x", None));
    }

    #[test]
    fn subscribe_deny_and_delivery_filter() {
        let p = perms(r#"subscribe = { deny = ["foo.secret", "bar.>"] }"#);
        assert!(!p.may_subscribe(b"foo.secret", None));
        assert!(!p.may_subscribe(b"bar.x", None));
        // A deny entry matched as a sublist: `bar.>` denies `bar.*`, but `foo.secret` does
        // not deny `foo.*`, so that wildcard needs a delivery filter.
        assert!(!p.may_subscribe(b"bar.*", None));
        assert!(p.may_subscribe(b"foo.*", None));
        assert!(p.delivery_filter(b"foo.*"));
        assert!(p.delivery_filter(b">"));
        assert!(!p.delivery_filter(b"baz.*"));
        assert!(!p.delivery_filter(b"foo.secret.x"));
        assert!(!p.delivery_filter(b"foo.other"));
        assert!(!p.may_receive(b"foo.secret"));
        assert!(p.may_receive(b"foo.public"));
        assert!(!p.may_receive(b"bar.x.y"));
    }

    #[test]
    fn queue_entries() {
        // Allow "foo.* bar": queue group bar (and only it) on foo.*; plain subs need a
        // plain entry.
        let p = perms(r#"subscribe = { allow = ["foo.* bar", "pub.>"] }"#);
        assert!(p.may_subscribe(b"foo.x", Some(b"bar")));
        assert!(!p.may_subscribe(b"foo.x", Some(b"baz")));
        assert!(!p.may_subscribe(b"foo.x", None));
        assert!(p.may_subscribe(b"pub.x", Some(b"anything")));
        // Wildcard queue names: subset match.
        let p = perms(r#"subscribe = { allow = ["foo v1.*"] }"#);
        assert!(p.may_subscribe(b"foo", Some(b"v1.a")));
        assert!(p.may_subscribe(b"foo", Some(b"v1.*")));
        assert!(!p.may_subscribe(b"foo", Some(b"v2.a")));
        assert!(!p.may_subscribe(b"foo", Some(b"v1.>")));
        // Deny "foo.* bar": that group is refused, others and plain subs are not.
        let p = perms(r#"subscribe = { deny = ["foo.* bar"] }"#);
        assert!(!p.may_subscribe(b"foo.x", Some(b"bar")));
        assert!(p.may_subscribe(b"foo.x", Some(b"baz")));
        assert!(p.may_subscribe(b"foo.x", None));
        assert!(p.may_receive(b"foo.x"));
        assert!(!p.may_receive_queue(b"foo.x", Some(b"bar")));
        assert!(p.may_receive_queue(b"foo.x", Some(b"baz")));
        // A literal queue deny entry under a wildcard queue sub is caught at delivery.
        let p = perms(r#"subscribe = { deny = ["foo.x bar"] }"#);
        assert!(p.may_subscribe(b"foo.*", Some(b"bar")));
        assert!(p.delivery_filter(b"foo.*"));
        assert!(!p.may_receive_queue(b"foo.x", Some(b"bar")));
    }

    #[test]
    fn allow_responses_defaults_make_publish_deny_all() {
        let p = perms("allow_responses = true");
        assert!(!p.may_publish(b"anything"));
        assert_eq!(
            p.responses(),
            Some(ResponsePermission {
                max: 1,
                expires: Some(Duration::from_secs(120))
            })
        );
        // With an allow list it stays.
        let p = perms(
            r#"publish = ["ok"]
            allow_responses = { max = 0, expires = "5s" }"#,
        );
        assert!(p.may_publish(b"ok"));
        assert_eq!(
            p.responses(),
            Some(ResponsePermission {
                max: 1,
                expires: Some(Duration::from_secs(5))
            })
        );
        // A deny list alone does not keep the blanket allow.
        let p = perms(
            r#"publish = { deny = ["x"] }
            allow_responses = { max = 3 }"#,
        );
        assert!(!p.may_publish(b"y"));
        assert_eq!(p.responses().unwrap().max, 3);
        let p = perms("allow_responses = false");
        assert!(p.responses().is_none());
        assert!(p.allows_everything());
    }

    #[test]
    fn bad_filters_in_code_built_entries_name_their_key() {
        let e = PermissionsEntry {
            publish: rules(Some(&["ok", "a..b"]), None),
            ..Default::default()
        };
        let err = Permissions::from_entry(&e).unwrap_err();
        assert_eq!(err.key(), "publish.allow[1]");
        let e = PermissionsEntry {
            subscribe: rules(None, Some(&["a b c"])),
            ..Default::default()
        };
        assert_eq!(
            Permissions::from_entry(&e).unwrap_err().key(),
            "subscribe.deny[0]"
        );
        let e = PermissionsEntry {
            publish: rules(None, Some(&["a q"])),
            ..Default::default()
        };
        assert_eq!(
            Permissions::from_entry(&e).unwrap_err().key(),
            "publish.deny[0]"
        );
        let e = PermissionsEntry {
            allow_responses: Some(ResponsesEntry::Limits {
                max: None,
                expires: Some("soon".into()),
            }),
            ..Default::default()
        };
        assert!(matches!(
            Permissions::from_entry(&e),
            Err(AuthConfigError::BadDuration { .. })
        ));
    }

    #[test]
    fn subset_and_collide() {
        assert!(is_subset_match(b"foo.*", b">"));
        assert!(is_subset_match(b"foo.*", b"*.*"));
        assert!(is_subset_match(b"foo.*", b"foo.*"));
        assert!(!is_subset_match(b"foo.*", b"foo.bar"));
        assert!(!is_subset_match(b"foo.>", b"foo.*"));
        assert!(is_subset_match(b"foo.bar", b"foo.*"));
        assert!(!is_subset_match(b"foo", b"foo.*"));
        assert!(collide(b"foo.*", b"foo.bar"));
        assert!(collide(b"foo.>", b"*.bar.baz"));
        assert!(!collide(b"foo.*", b"foo"));
        assert!(!collide(b"foo.*", b"bar.*"));
    }

    #[test]
    fn grants_are_used_up() {
        let t0 = Instant::now();
        let mut g = ResponseGrants::new(ResponsePermission {
            max: 2,
            expires: None,
        });
        assert!(!g.take(b"_INBOX.1", t0));
        g.grant(b"_INBOX.1", t0);
        assert_eq!(g.len(), 1);
        assert!(g.take(b"_INBOX.1", t0));
        assert!(g.take(b"_INBOX.1", t0));
        assert!(!g.take(b"_INBOX.1", t0));
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn grants_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut g = ResponseGrants::new(ResponsePermission {
            max: 5,
            expires: Some(ttl),
        });
        g.grant(b"a", t0);
        g.grant(b"b", t0 + Duration::from_secs(3));
        assert!(g.take(b"a", t0 + ttl));
        assert!(!g.take(b"a", t0 + ttl + Duration::from_millis(1)));
        assert_eq!(g.len(), 1);
        g.prune(t0 + Duration::from_secs(9));
        assert_eq!(g.len(), 0);
        // Granting again starts afresh.
        g.grant(b"b", t0 + Duration::from_secs(10));
        assert!(g.take(b"b", t0 + Duration::from_secs(14)));
    }

    #[test]
    fn grants_evict_the_oldest() {
        let t0 = Instant::now();
        let mut g = ResponseGrants::new(ResponsePermission {
            max: 1,
            expires: None,
        });
        for i in 0..MAX_RESPONSE_GRANTS {
            g.grant(format!("r.{i}").as_bytes(), t0);
        }
        // Re-granting r.0 makes it the newest; r.1 is now the oldest.
        g.grant(b"r.0", t0);
        assert_eq!(g.len(), MAX_RESPONSE_GRANTS);
        g.grant(b"r.new", t0);
        assert_eq!(g.len(), MAX_RESPONSE_GRANTS);
        assert!(!g.take(b"r.1", t0));
        assert!(g.take(b"r.0", t0));
        assert!(g.take(b"r.new", t0));
        assert!(g.order.len() <= 2 * MAX_RESPONSE_GRANTS + 1);
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c")]
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*")], 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut t, full)| {
                if full {
                    t.push(">");
                }
                t.join(".")
            })
    }

    fn subject() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    fn reference(allow: &Option<Vec<String>>, deny: &[String], s: &str) -> bool {
        let hit = |f: &String| matches(f.as_bytes(), s.as_bytes());
        allow.as_ref().is_none_or(|a| a.iter().any(hit)) && !deny.iter().any(hit)
    }

    proptest! {
        #[test]
        fn may_publish_is_allow_minus_deny(
            allow in prop::option::of(prop::collection::vec(filter(), 0..4)),
            deny in prop::collection::vec(filter(), 0..4),
            s in subject(),
        ) {
            let e = PermissionsEntry {
                publish: Some(RulesEntry { allow: allow.clone(), deny: Some(deny.clone()) }),
                ..Default::default()
            };
            let p = Permissions::from_entry(&e).unwrap();
            prop_assert_eq!(p.may_publish(s.as_bytes()), reference(&allow, &deny, &s));
        }

        #[test]
        fn may_subscribe_literal_is_the_publish_rule(
            // Non-empty: an empty subscribe allow list means everything (tested above).
            allow in prop::option::of(prop::collection::vec(filter(), 1..4)),
            deny in prop::collection::vec(filter(), 0..4),
            s in subject(),
        ) {
            let e = PermissionsEntry {
                subscribe: Some(RulesEntry { allow: allow.clone(), deny: Some(deny.clone()) }),
                ..Default::default()
            };
            let p = Permissions::from_entry(&e).unwrap();
            prop_assert_eq!(p.may_subscribe(s.as_bytes(), None), reference(&allow, &deny, &s));
            prop_assert_eq!(p.may_receive(s.as_bytes()), !deny.iter().any(|f| matches(f.as_bytes(), s.as_bytes())));
        }
    }
}

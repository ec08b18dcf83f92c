//! The config file's authentication sections as serde types, and [`AuthConfigError`].
//!
//! Owns: [`AuthConfig`] and its parts ([`UserEntry`], [`PermissionsEntry`], [`RulesEntry`],
//! [`ResponsesEntry`], [`JwtEntry`]), the filter and duration checks they run *while they
//! are deserialized* (so that `toml` reports the line and column of a bad filter), and the
//! duration text format (`250ms`, `5s`, `2m`, `1h`).
//!
//! Never: reads a file, checks a credential or decides anything about a connection; the
//! rules that span entries (duplicate users, `no_auth_user`, token with users, key files)
//! are [`Authenticator::new`](crate::Authenticator::new)'s.
//!
//! Shapes, as nats-server reads them:
//! - `publish` / `subscribe` (aliases `pub` / `sub`) take `{ allow = [..], deny = [..] }`,
//!   or a list or a single string meaning `allow`; `allow` and `deny` take a list or a
//!   single string.
//! - a subscribe entry may be `"subject queue"`: the rule then applies to queue
//!   subscriptions of that queue group (the queue may hold wildcards, as in nats-server).
//!   A publish entry may not name a queue.
//! - `allow_responses = true` or `{ max = 1, expires = "5s" }`.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tern_protocol::subject::validate_filter;

/// Why a configuration cannot be used. Every variant names the key it is about, as a path
/// from the `[authorization]` section: `users[2].nkey`, `jwt.public_key_file`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// Two `users` entries with the same name or nkey.
    #[error("{key}: duplicate user {name:?}")]
    DuplicateUser { key: String, name: String },
    /// A `users` entry with both `user` and `nkey`.
    #[error("{key}: has both user and nkey; give one")]
    UserAndNkey { key: String },
    /// A `users` entry with neither `user` nor `nkey`.
    #[error("{key}: has neither user nor nkey; give one")]
    NoUserNorNkey { key: String },
    /// A `user` entry without a password (only the `no_auth_user` may have none).
    #[error("{key}: user {name:?} has no password")]
    MissingPassword { key: String, name: String },
    /// An `nkey` entry with a password: nkey users sign, they have no password.
    #[error("{key}: an nkey user has no password")]
    PasswordWithNkey { key: String },
    /// The nkey is not a user public key.
    #[error("{key}: not a user public key (U...): {reason}")]
    BadNkey { key: String, reason: String },
    /// The password looks like a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`) but is not one.
    #[error("{key}: not a valid bcrypt hash")]
    BadBcrypt { key: String },
    /// `no_auth_user` names no user of `users`.
    #[error("{key}: {name:?} is not among users")]
    UnknownNoAuthUser { key: String, name: String },
    /// `token` together with `users`: refused like nats-server ("Can not have a token and
    /// a users array").
    #[error("{key}: can not have a token and users")]
    TokenWithUsers { key: String },
    /// `token` together with `[jwt]`: the client's `auth_token` would be ambiguous.
    #[error("{key}: can not have a token and jwt")]
    TokenWithJwt { key: String },
    /// An empty token, password or secret.
    #[error("{key}: is empty")]
    EmptySecret { key: String },
    /// `[jwt]` needs exactly one of `hs256_secret`, `hs256_secret_file`, `public_key_file`.
    #[error("{key}: give exactly one of hs256_secret, hs256_secret_file, public_key_file")]
    JwtKey { key: String },
    /// A key or secret file that cannot be read or holds no usable key.
    #[error("{key}: {path}: {reason}")]
    KeyFile {
        key: String,
        path: PathBuf,
        reason: String,
    },
    /// A filter that is not valid (see `tern_protocol::subject`), or a queue where none
    /// may be.
    #[error("{key}: {reason}")]
    BadFilter { key: String, reason: String },
    /// A duration that cannot be read.
    #[error("{key}: {reason}")]
    BadDuration { key: String, reason: String },
}

/// Every variant's `key` field, borrowed as `$e` is (shared or mutable): one list of the
/// variants for [`AuthConfigError::key`] and [`AuthConfigError::within`].
macro_rules! key_of {
    ($e:expr) => {
        match $e {
            Self::DuplicateUser { key, .. }
            | Self::UserAndNkey { key }
            | Self::NoUserNorNkey { key }
            | Self::MissingPassword { key, .. }
            | Self::PasswordWithNkey { key }
            | Self::BadNkey { key, .. }
            | Self::BadBcrypt { key }
            | Self::UnknownNoAuthUser { key, .. }
            | Self::TokenWithUsers { key }
            | Self::TokenWithJwt { key }
            | Self::EmptySecret { key }
            | Self::JwtKey { key }
            | Self::KeyFile { key, .. }
            | Self::BadFilter { key, .. }
            | Self::BadDuration { key, .. } => key,
        }
    };
}

impl AuthConfigError {
    /// The key the error is about.
    pub fn key(&self) -> &str {
        key_of!(self)
    }

    /// The same error with its key placed under `prefix` (`publish.allow[0]` becomes
    /// `users[1].permissions.publish.allow[0]`).
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        let key = key_of!(&mut self);
        *key = if key.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        self
    }
}

/// The `[authorization]` section (nats-server's `authorization` block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A shared token clients send as `auth_token`; plain text or a bcrypt hash.
    pub token: Option<String>,
    /// Users with a password, and nkey users.
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// Clients may send a JWT as `auth_token`.
    pub jwt: Option<JwtEntry>,
    /// The user a client that sends no credentials at all is taken to be.
    pub no_auth_user: Option<String>,
    /// Permissions of every user that has none of its own (and of token and JWT clients
    /// whose token carries none).
    pub default_permissions: Option<PermissionsEntry>,
}

/// One `[[users]]` entry: a name with a password, or an nkey.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub user: Option<String>,
    /// Plain text, or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    pub password: Option<String>,
    /// A user public key (`U...`).
    pub nkey: Option<String>,
    pub permissions: Option<PermissionsEntry>,
}

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsEntry {
    #[serde(default, alias = "pub", deserialize_with = "de_publish")]
    pub publish: Option<RulesEntry>,
    #[serde(default, alias = "sub", deserialize_with = "de_subscribe")]
    pub subscribe: Option<RulesEntry>,
    pub allow_responses: Option<ResponsesEntry>,
}

/// Allow and deny lists of filters. `allow: None` means everything is allowed (but see
/// [`Permissions`](crate::Permissions) for nats-server's special cases).
///
/// Deserializes from a map `{ allow, deny }`, a list or a single string (both meaning
/// `allow`). Read on its own it accepts subscribe entries (`"subject queue"`);
/// inside [`PermissionsEntry`] the publish rules refuse a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesEntry {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// `allow_responses`: `true`, or the limits of each reply subject's permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsesEntry {
    Enabled(bool),
    Limits {
        /// Responses per request; absent or 0: 1.
        max: Option<usize>,
        /// How long a reply subject stays publishable (`"5s"`, `"1m"`); absent or zero:
        /// 2 minutes (nats-server's defaults).
        expires: Option<String>,
    },
}

/// The `[jwt]` section: how tokens sent as `auth_token` are verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtEntry {
    /// HS256 shared secret, as text.
    pub hs256_secret: Option<String>,
    /// HS256 shared secret, the bytes of a file (trailing whitespace removed).
    pub hs256_secret_file: Option<PathBuf>,
    /// A PEM public key: RSA (`RS256`) or Ed25519 (`EdDSA`).
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Required `aud` claim (one of, when the claim is a list).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`; default [`DEFAULT_JWT_LEEWAY`].
    #[serde(default, deserialize_with = "de_duration_text")]
    pub leeway: Option<String>,
}

/// The default of `jwt.leeway`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);

/// Reads a duration: a number with a unit, `ms`, `s`, `m` or `h` (a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 10s, 2m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    }
}

/// Which rules a filter belongs to: they differ in whether a queue may follow.
pub(crate) trait RuleKind {
    /// `publish` or `subscribe`, for messages.
    const NAME: &'static str;
    /// Checks one entry.
    fn check(entry: &str) -> Result<(), String>;
}

pub(crate) struct PublishKind;
pub(crate) struct SubscribeKind;

impl RuleKind for PublishKind {
    const NAME: &'static str = "publish";
    fn check(entry: &str) -> Result<(), String> {
        if entry.split_whitespace().nth(1).is_some() {
            return Err(format!(
                "invalid publish filter {entry:?}: a queue group only applies to subscribe"
            ));
        }
        validate_filter(entry.as_bytes())
            .map_err(|e| format!("invalid publish filter {entry:?}: {e}"))
    }
}

impl RuleKind for SubscribeKind {
    const NAME: &'static str = "subscribe";
    fn check(entry: &str) -> Result<(), String> {
        split_subject_queue(entry)
            .map(|_| ())
            .map_err(|e| format!("invalid subscribe filter {entry:?}: {e}"))
    }
}

/// Splits a subscribe entry into its filter and optional queue, like nats-server's
/// `splitSubjectQueue`: whitespace separated, one or two fields, both valid filters.
pub(crate) fn split_subject_queue(entry: &str) -> Result<(&str, Option<&str>), String> {
    let mut fields = entry.split_whitespace();
    let subject = fields.next().ok_or("subject is empty")?;
    let queue = fields.next();
    if fields.next().is_some() {
        return Err("more than a subject and a queue".to_string());
    }
    validate_filter(subject.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(q) = queue {
        validate_filter(q.as_bytes()).map_err(|e| format!("queue: {e}"))?;
    }
    Ok((subject, queue))
}

/// One filter, checked as it is read so that the error carries its position.
struct Checked<K>(String, PhantomData<K>);

impl<'de, K: RuleKind> Deserialize<'de> for Checked<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        K::check(&s).map_err(de::Error::custom)?;
        Ok(Checked(s, PhantomData))
    }
}

/// A single filter or a list of them.
struct OneOrMany<K>(Vec<String>, PhantomData<K>);

impl<'de, K: RuleKind> Deserialize<'de> for OneOrMany<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<K>(PhantomData<K>);
        impl<'de, K: RuleKind> Visitor<'de> for V<K> {
            type Value = OneOrMany<K>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a filter or a list of filters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                K::check(v).map_err(E::custom)?;
                Ok(OneOrMany(vec![v.to_string()], PhantomData))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Checked(s, _)) = seq.next_element::<Checked<K>>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out, PhantomData))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Reads rules of kind `K`.
fn de_rules<'de, K: RuleKind, D: Deserializer<'de>>(d: D) -> Result<RulesEntry, D::Error> {
    struct V<K>(PhantomData<K>);
    impl<'de, K: RuleKind> Visitor<'de> for V<K> {
        type Value = RulesEntry;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "{} rules: {{ allow = [..], deny = [..] }}, a list or a filter",
                K::NAME
            )
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<RulesEntry, E> {
            K::check(v).map_err(E::custom)?;
            Ok(RulesEntry {
                allow: Some(vec![v.to_string()]),
                deny: None,
            })
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RulesEntry, A::Error> {
            let mut out = Vec::new();
            while let Some(Checked(s, _)) = seq.next_element::<Checked<K>>()? {
                out.push(s);
            }
            Ok(RulesEntry {
                allow: Some(out),
                deny: None,
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RulesEntry, A::Error> {
            let mut rules = RulesEntry::default();
            while let Some(key) = map.next_key::<String>()? {
                let slot = match key.as_str() {
                    "allow" => &mut rules.allow,
                    "deny" => &mut rules.deny,
                    other => return Err(de::Error::unknown_field(other, &["allow", "deny"])),
                };
                if slot.is_some() {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                *slot = Some(map.next_value::<OneOrMany<K>>()?.0);
            }
            Ok(rules)
        }
    }
    d.deserialize_any(V::<K>(PhantomData))
}

impl<'de> Deserialize<'de> for RulesEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_rules::<SubscribeKind, D>(d)
    }
}

fn de_publish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RulesEntry>, D::Error> {
    de_rules::<PublishKind, D>(d).map(Some)
}

fn de_subscribe<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RulesEntry>, D::Error> {
    de_rules::<SubscribeKind, D>(d).map(Some)
}

fn de_duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)?;
    Ok(Some(s))
}

impl<'de> Deserialize<'de> for ResponsesEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Limits {
            max: Option<usize>,
            #[serde(default, deserialize_with = "de_duration_text")]
            expires: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResponsesEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or { max = N, expires = \"5s\" }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ResponsesEntry, E> {
                Ok(ResponsesEntry::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ResponsesEntry, A::Error> {
                let l = Limits::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ResponsesEntry::Limits {
                    max: l.max,
                    expires: l.expires,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_take_a_map_a_list_or_a_string() {
        let p: PermissionsEntry = toml::from_str(
            r#"
            publish = "a.>"
            subscribe = { allow = ["b.*", "c q"], deny = "b.x" }
            "#,
        )
        .unwrap();
        assert_eq!(
            p.publish,
            Some(RulesEntry {
                allow: Some(vec!["a.>".into()]),
                deny: None
            })
        );
        assert_eq!(
            p.subscribe,
            Some(RulesEntry {
                allow: Some(vec!["b.*".into(), "c q".into()]),
                deny: Some(vec!["b.x".into()])
            })
        );
        let list: PermissionsEntry = toml::from_str(r#"publish = ["a.>"]"#).unwrap();
        let map: PermissionsEntry = toml::from_str(r#"publish = { allow = ["a.>"] }"#).unwrap();
        assert_eq!(list, map);
        let short: PermissionsEntry = toml::from_str(r#"pub = ["a.>"]"#).unwrap();
        assert_eq!(short, map);
    }

    #[test]
    fn publish_refuses_a_queue_subscribe_accepts_one() {
        let e = toml::from_str::<PermissionsEntry>(r#"publish = ["a q"]"#).unwrap_err();
        assert!(e.to_string().contains("queue group only applies"), "{e}");
        toml::from_str::<PermissionsEntry>(r#"subscribe = ["a.* v1.*"]"#).unwrap();
        let e = toml::from_str::<PermissionsEntry>(r#"subscribe = ["a q r"]"#).unwrap_err();
        assert!(e.to_string().contains("more than a subject"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<PermissionsEntry>(r#"publish = { alow = ["a"] }"#).is_err());
        assert!(toml::from_str::<PermissionsEntry>(r#"publsh = ["a"]"#).is_err());
        assert!(toml::from_str::<UserEntry>(r#"name = "a""#).is_err());
        assert!(toml::from_str::<JwtEntry>(r#"secret = "a""#).is_err());
        assert!(toml::from_str::<AuthConfig>(r#"tokn = "a""#).is_err());
        assert!(toml::from_str::<PermissionsEntry>(
            r#"allow_responses = { max = 1, expire = "1s" }"#
        )
        .is_err());
    }

    #[test]
    fn responses_take_a_bool_or_limits() {
        let p: PermissionsEntry = toml::from_str("allow_responses = true").unwrap();
        assert_eq!(p.allow_responses, Some(ResponsesEntry::Enabled(true)));
        let p: PermissionsEntry =
            toml::from_str(r#"allow_responses = { max = 3, expires = "5s" }"#).unwrap();
        assert_eq!(
            p.allow_responses,
            Some(ResponsesEntry::Limits {
                max: Some(3),
                expires: Some("5s".into())
            })
        );
        let e =
            toml::from_str::<PermissionsEntry>(r#"allow_responses = { expires = "5 parsecs" }"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
    }

    #[test]
    fn a_bad_filter_in_a_users_block_reports_its_line() {
        let text = r#"
[[users]]
user = "alice"
password = "x"

[[users]]
user = "bob"
password = "y"
[users.permissions]
publish = { allow = ["ok.>"], deny = ["bad..subject"] }
"#;
        let err = toml::from_str::<AuthConfig>(text).unwrap_err();
        let span = err.span().expect("a span");
        let line = text[..span.start].matches('\n').count() + 1;
        assert_eq!(line, 10, "{err}");
        let shown = err.to_string();
        assert!(shown.contains("line 10"), "{shown}");
        assert!(shown.contains("empty token"), "{shown}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
        let e = toml::from_str::<JwtEntry>(r#"leeway = "fast""#).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    #[test]
    fn errors_name_their_key_and_nest() {
        let e = AuthConfigError::BadFilter {
            key: "publish.allow[0]".into(),
            reason: "r".into(),
        }
        .within("users[1].permissions");
        assert_eq!(e.key(), "users[1].permissions.publish.allow[0]");
        assert_eq!(e.to_string(), "users[1].permissions.publish.allow[0]: r");
    }
}

//! Who a connecting client is: the configuration checked once into an [`Authenticator`],
//! and each client's `CONNECT` credentials checked against it.
//!
//! Owns: [`Authenticator`], [`Credentials`], [`Identity`], [`Method`], [`AuthFailure`], and
//! the order credentials are looked at (nats-server's `processClientOrLeafAuthentication`):
//! an nkey, then a user name, then a token (a JWT when `[jwt]` is configured), and with
//! nothing at all the `no_auth_user`.
//!
//! Never: opens a socket, spawns a thread or reads a clock (`now` is passed in); says a
//! secret in an error, a warning or `Debug`; caches a failure.
//!
//! Contract: an [`Authenticator`] is immutable after [`Authenticator::new`] (but for its
//! bcrypt cache, behind a `Mutex`), `Send + Sync`, and meant to be shared in an `Arc`. A
//! check that runs bcrypt takes ~50-200 ms: [`Authenticator::is_costly`] says so first, so
//! that the broker can run it off its event loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{AuthConfig, AuthConfigError};
use crate::jwt::JwtVerifier;
use crate::nkey::UserKey;
use crate::permissions::Permissions;
use crate::secret::{BcryptCache, Secret, SecretError};

/// Why a client was refused. `Display` never includes a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// Authentication is required and the client sent nothing usable.
    #[error("no credentials")]
    MissingCredentials,
    /// No such user or nkey.
    #[error("unknown user")]
    UnknownUser,
    #[error("bad password")]
    BadPassword,
    #[error("bad token")]
    BadToken,
    /// The nkey's signature of the nonce, or a JWT's signature, does not verify.
    #[error("bad signature")]
    BadSignature,
    /// An nkey client, but no nonce was sent in `INFO`.
    #[error("no nonce was issued")]
    MissingNonce,
    #[error("token expired")]
    TokenExpired,
    #[error("token not yet valid")]
    TokenNotYetValid,
    /// A JWT that cannot be used; the text is a fixed description, never token content.
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

impl AuthFailure {
    /// A snake_case label for counters (`bad_password`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "missing_credentials",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadPassword => "bad_password",
            AuthFailure::BadToken => "bad_token",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::MissingNonce => "missing_nonce",
            AuthFailure::TokenExpired => "token_expired",
            AuthFailure::TokenNotYetValid => "token_not_yet_valid",
            AuthFailure::InvalidToken(_) => "invalid_token",
        }
    }
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Authentication is off.
    None,
    Token,
    Password,
    Nkey,
    Jwt,
    /// It sent no credentials and was taken to be the `no_auth_user`.
    NoAuthUser,
}

impl Method {
    /// A snake_case label for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Token => "token",
            Method::Password => "password",
            Method::Nkey => "nkey",
            Method::Jwt => "jwt",
            Method::NoAuthUser => "no_auth_user",
        }
    }
}

/// What the client sent in `CONNECT`. An empty string counts as absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
    /// `auth_token`: the configured token, or a JWT when `[jwt]` is configured.
    pub token: Option<&'a str>,
    /// A user public key (`U...`).
    pub nkey: Option<&'a str>,
    /// The nonce signed with the nkey's seed, base64 (raw URL-safe or standard).
    pub sig: Option<&'a str>,
}

/// Who a client is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name, the nkey, or the JWT's `sub`; empty for [`Method::None`] and
    /// [`Method::Token`].
    pub user: Arc<str>,
    pub method: Method,
    /// `None`: it may do everything.
    pub permissions: Option<Arc<Permissions>>,
    /// When the JWT it came with expires.
    pub expires: Option<SystemTime>,
}

/// A user with a password.
#[derive(Debug)]
struct PasswordUser {
    name: Arc<str>,
    /// `None` only for a `no_auth_user` configured without a password: reachable by
    /// sending nothing, never by name.
    secret: Option<Secret>,
    permissions: Option<Arc<Permissions>>,
}

#[derive(Debug)]
struct NkeyUser {
    name: Arc<str>,
    key: UserKey,
    permissions: Option<Arc<Permissions>>,
}

/// Which user `no_auth_user` names.
#[derive(Debug, Clone, Copy)]
enum NoAuth {
    User,
    Nkey,
}

/// The checked authentication configuration. See the module header.
#[derive(Debug, Default)]
pub struct Authenticator {
    required: bool,
    token: Option<Secret>,
    users: HashMap<Arc<str>, PasswordUser>,
    nkeys: HashMap<Arc<str>, NkeyUser>,
    jwt: Option<JwtVerifier>,
    no_auth_user: Option<(Arc<str>, NoAuth)>,
    default_permissions: Option<Arc<Permissions>>,
    warnings: Vec<String>,
    cache: BcryptCache,
}

/// The cache's owner label of the token (user names are never empty).
const TOKEN_OWNER: &str = "";

fn given(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// `None` when the permissions restrict nothing.
fn shared(p: Permissions) -> Option<Arc<Permissions>> {
    (!p.allows_everything()).then(|| Arc::new(p))
}

fn secret(text: &str, key: String) -> Result<Secret, AuthConfigError> {
    Secret::parse(text).map_err(|e| match e {
        SecretError::Empty => AuthConfigError::EmptySecret { key },
        SecretError::BadBcrypt => AuthConfigError::BadBcrypt { key },
    })
}

impl Authenticator {
    /// Checks a configuration. Reads the JWT key file, if any.
    pub fn new(config: &AuthConfig) -> Result<Authenticator, AuthConfigError> {
        let mut a = Authenticator::none();
        if let Some(entry) = &config.default_permissions {
            let p = Permissions::from_entry(entry).map_err(|e| e.within("default_permissions"))?;
            a.default_permissions = shared(p);
        }
        if let Some(token) = &config.token {
            if !config.users.is_empty() {
                return Err(AuthConfigError::TokenWithUsers {
                    key: "token".into(),
                });
            }
            if config.jwt.is_some() {
                return Err(AuthConfigError::TokenWithJwt {
                    key: "token".into(),
                });
            }
            let s = secret(token, "token".into())?;
            if !s.is_bcrypt() {
                a.warnings
                    .push("token is plain text; use a bcrypt hash".to_string());
            }
            a.token = Some(s);
        }
        for (i, u) in config.users.iter().enumerate() {
            a.add_user(i, u, config.no_auth_user.as_deref())?;
        }
        if let Some(name) = &config.no_auth_user {
            a.no_auth_user = if let Some(u) = a.users.get(name.as_str()) {
                Some((u.name.clone(), NoAuth::User))
            } else if let Some(n) = a.nkeys.get(name.as_str()) {
                Some((n.name.clone(), NoAuth::Nkey))
            } else {
                return Err(AuthConfigError::UnknownNoAuthUser {
                    key: "no_auth_user".into(),
                    name: name.clone(),
                });
            };
        }
        if let Some(jwt) = &config.jwt {
            a.jwt = Some(JwtVerifier::new(jwt)?);
        }
        a.required =
            a.token.is_some() || !a.users.is_empty() || !a.nkeys.is_empty() || a.jwt.is_some();
        if !a.required && config.default_permissions.is_some() {
            a.warnings.push(
                "default_permissions: no token, users or jwt, so authentication is off and they apply to nobody"
                    .to_string(),
            );
        }
        Ok(a)
    }

    fn add_user(
        &mut self,
        i: usize,
        u: &crate::config::UserEntry,
        no_auth_user: Option<&str>,
    ) -> Result<(), AuthConfigError> {
        let key = format!("users[{i}]");
        let permissions = match &u.permissions {
            Some(entry) => shared(
                Permissions::from_entry(entry)
                    .map_err(|e| e.within(&format!("{key}.permissions")))?,
            ),
            None => self.default_permissions.clone(),
        };
        match (given(u.user.as_deref()), given(u.nkey.as_deref())) {
            (Some(_), Some(_)) => Err(AuthConfigError::UserAndNkey { key }),
            (None, None) => Err(AuthConfigError::NoUserNorNkey { key }),
            (Some(name), None) => {
                if self.users.contains_key(name) {
                    return Err(AuthConfigError::DuplicateUser {
                        key: format!("{key}.user"),
                        name: name.to_string(),
                    });
                }
                let secret = match &u.password {
                    None if no_auth_user == Some(name) => None,
                    None => {
                        return Err(AuthConfigError::MissingPassword {
                            key: format!("{key}.password"),
                            name: name.to_string(),
                        })
                    }
                    Some(p) => {
                        let s = secret(p, format!("{key}.password"))?;
                        if !s.is_bcrypt() {
                            self.warnings.push(format!(
                                "{key} ({name}): password is plain text; use a bcrypt hash"
                            ));
                        }
                        Some(s)
                    }
                };
                let name: Arc<str> = name.into();
                self.users.insert(
                    name.clone(),
                    PasswordUser {
                        name,
                        secret,
                        permissions,
                    },
                );
                Ok(())
            }
            (None, Some(nkey)) => {
                if u.password.is_some() {
                    return Err(AuthConfigError::PasswordWithNkey {
                        key: format!("{key}.password"),
                    });
                }
                let parsed = UserKey::parse(nkey).map_err(|reason| AuthConfigError::BadNkey {
                    key: format!("{key}.nkey"),
                    reason: reason.to_string(),
                })?;
                if self.nkeys.contains_key(nkey) {
                    return Err(AuthConfigError::DuplicateUser {
                        key: format!("{key}.nkey"),
                        name: nkey.to_string(),
                    });
                }
                let name: Arc<str> = nkey.into();
                self.nkeys.insert(
                    name.clone(),
                    NkeyUser {
                        name,
                        key: parsed,
                        permissions,
                    },
                );
                Ok(())
            }
        }
    }

    /// Authentication off: every connection is allowed everything.
    pub fn none() -> Authenticator {
        Authenticator::default()
    }

    /// False only when nothing is configured.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// True when a connection that sends no credentials is bound to `no_auth_user`.
    pub fn has_no_auth_user(&self) -> bool {
        self.no_auth_user.is_some()
    }

    /// True when JWT connection tokens are accepted.
    pub fn accepts_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// The permissions a connection authenticated as `user` with `method` has under these
    /// rules, to re-check open connections after a reload: `None` when that user (or
    /// that way in) no longer exists; `Some(None)` when it may do everything. A JWT
    /// connection's permissions are its token's: asked for one, this answers whether
    /// tokens are still accepted, with `default_permissions`.
    pub fn permissions_of(&self, user: &str, method: Method) -> Option<Option<Arc<Permissions>>> {
        match method {
            Method::None => (!self.required).then_some(None),
            Method::Password => self.users.get(user).map(|u| u.permissions.clone()),
            Method::Nkey => self.nkeys.get(user).map(|u| u.permissions.clone()),
            Method::NoAuthUser => match &self.no_auth_user {
                Some((name, NoAuth::User)) if &**name == user => {
                    Some(self.users[name].permissions.clone())
                }
                Some((name, NoAuth::Nkey)) if &**name == user => {
                    Some(self.nkeys[name].permissions.clone())
                }
                _ => None,
            },
            Method::Token => self
                .token
                .is_some()
                .then(|| self.default_permissions.clone()),
            Method::Jwt => self.jwt.is_some().then(|| self.default_permissions.clone()),
        }
    }

    /// True when some user is an nkey: `INFO` must carry a nonce.
    pub fn needs_nonce(&self) -> bool {
        !self.nkeys.is_empty()
    }

    /// What the configuration does that works but should not be done (plain-text
    /// passwords, ...), for the log at start.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Checks a client's credentials; `nonce` is the one sent in its `INFO`, `now` the
    /// time JWTs are checked at.
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        nonce: Option<&str>,
        now: SystemTime,
    ) -> Result<Identity, AuthFailure> {
        if !self.required {
            return Ok(Identity {
                user: "".into(),
                method: Method::None,
                permissions: None,
                expires: None,
            });
        }
        let identity = |user: &Arc<str>, method, permissions: &Option<Arc<Permissions>>| Identity {
            user: user.clone(),
            method,
            permissions: permissions.clone(),
            expires: None,
        };
        if let Some(nkey) = given(creds.nkey) {
            let u = self.nkeys.get(nkey).ok_or(AuthFailure::UnknownUser)?;
            let nonce = given(nonce).ok_or(AuthFailure::MissingNonce)?;
            let sig = given(creds.sig).ok_or(AuthFailure::BadSignature)?;
            if !u.key.verify(nonce, sig) {
                return Err(AuthFailure::BadSignature);
            }
            return Ok(identity(&u.name, Method::Nkey, &u.permissions));
        }
        if let Some(name) = given(creds.user) {
            let u = self.users.get(name).ok_or(AuthFailure::UnknownUser)?;
            let pass = creds.pass.unwrap_or("").as_bytes();
            return match &u.secret {
                Some(s) if s.check(name, pass, &self.cache) => {
                    Ok(identity(&u.name, Method::Password, &u.permissions))
                }
                _ => Err(AuthFailure::BadPassword),
            };
        }
        if let Some(token) = given(creds.token) {
            if let Some(jwt) = &self.jwt {
                let v = jwt.verify(token, now)?;
                return Ok(Identity {
                    user: v.sub.into(),
                    method: Method::Jwt,
                    permissions: match v.permissions {
                        Some(p) => shared(p),
                        None => self.default_permissions.clone(),
                    },
                    expires: Some(v.expires),
                });
            }
            return match &self.token {
                Some(s) if s.check(TOKEN_OWNER, token.as_bytes(), &self.cache) => Ok(identity(
                    &Arc::from(""),
                    Method::Token,
                    &self.default_permissions,
                )),
                _ => Err(AuthFailure::BadToken),
            };
        }
        let nothing = given(creds.pass).is_none() && given(creds.sig).is_none();
        match &self.no_auth_user {
            Some((name, kind)) if nothing => {
                let permissions = match kind {
                    NoAuth::User => &self.users[name].permissions,
                    NoAuth::Nkey => &self.nkeys[name].permissions,
                };
                Ok(identity(name, Method::NoAuthUser, permissions))
            }
            _ => Err(AuthFailure::MissingCredentials),
        }
    }

    /// True when checking these credentials would run bcrypt (a bcrypt password or token
    /// not in the cache), so that the caller can do it off the event loop.
    pub fn is_costly(&self, creds: &Credentials<'_>) -> bool {
        if !self.required || given(creds.nkey).is_some() {
            return false;
        }
        if let Some(name) = given(creds.user) {
            let pass = creds.pass.unwrap_or("").as_bytes();
            return self
                .users
                .get(name)
                .and_then(|u| u.secret.as_ref())
                .is_some_and(|s| s.is_costly(name, pass, &self.cache));
        }
        match (given(creds.token), &self.token, &self.jwt) {
            (Some(t), Some(s), None) => s.is_costly(TOKEN_OWNER, t.as_bytes(), &self.cache),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JwtEntry, PermissionsEntry, RulesEntry, UserEntry};
    use crate::jwt::tests::{ed25519, now, temp_file, Signer, NOW};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    fn user(name: &str, password: &str) -> UserEntry {
        UserEntry {
            user: Some(name.into()),
            password: Some(password.into()),
            ..Default::default()
        }
    }

    fn nkey_user(key: &str) -> UserEntry {
        UserEntry {
            nkey: Some(key.into()),
            ..Default::default()
        }
    }

    fn creds<'a>() -> Credentials<'a> {
        Credentials::default()
    }

    fn err(config: AuthConfig) -> AuthConfigError {
        Authenticator::new(&config).unwrap_err()
    }

    #[test]
    fn none_allows_everything() {
        for a in [
            Authenticator::none(),
            Authenticator::new(&AuthConfig::default()).unwrap(),
        ] {
            assert!(!a.is_required());
            assert!(!a.needs_nonce());
            let id = a.authenticate(&creds(), None, now()).unwrap();
            assert_eq!(id.method, Method::None);
            assert!(id.permissions.is_none());
        }
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Authenticator>();
    }

    #[test]
    fn token_ok_and_bad() {
        let a = Authenticator::new(&AuthConfig {
            token: Some("t0ken".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(a.is_required());
        let ok = a
            .authenticate(
                &Credentials {
                    token: Some("t0ken"),
                    ..creds()
                },
                None,
                now(),
            )
            .unwrap();
        assert_eq!(ok.method, Method::Token);
        let bad = a.authenticate(
            &Credentials {
                token: Some("t0ke"),
                ..creds()
            },
            None,
            now(),
        );
        assert_eq!(bad.unwrap_err(), AuthFailure::BadToken);
        assert_eq!(
            a.authenticate(&creds(), None, now()).unwrap_err(),
            AuthFailure::MissingCredentials
        );
        assert_eq!(a.warnings(), vec!["token is plain text; use a bcrypt hash"]);
    }

    #[test]
    fn bcrypt_token() {
        let a = Authenticator::new(&AuthConfig {
            token: Some(bcrypt::hash("t0ken", 4).unwrap()),
            ..Default::default()
        })
        .unwrap();
        let c = Credentials {
            token: Some("t0ken"),
            ..creds()
        };
        assert!(a.is_costly(&c));
        assert!(a.authenticate(&c, None, now()).is_ok());
        assert!(!a.is_costly(&c));
        assert!(a.warnings().is_empty());
    }

    #[test]
    fn passwords_plain_and_bcrypt_with_the_cache() {
        let hash = bcrypt::hash("bob-pw", 4).unwrap();
        let a = Authenticator::new(&AuthConfig {
            users: vec![user("alice", "alice-pw"), user("bob", &hash)],
            ..Default::default()
        })
        .unwrap();
        let login = |u, p| Credentials {
            user: Some(u),
            pass: Some(p),
            ..creds()
        };
        let id = a
            .authenticate(&login("alice", "alice-pw"), None, now())
            .unwrap();
        assert_eq!((&*id.user, id.method), ("alice", Method::Password));
        assert_eq!(
            a.authenticate(&login("alice", "nope"), None, now())
                .unwrap_err(),
            AuthFailure::BadPassword
        );
        assert_eq!(
            a.authenticate(&login("carol", "x"), None, now())
                .unwrap_err(),
            AuthFailure::UnknownUser
        );
        assert!(!a.is_costly(&login("alice", "alice-pw")));
        assert!(a.is_costly(&login("bob", "bob-pw")));
        assert_eq!(
            a.authenticate(&login("bob", "wrong"), None, now())
                .unwrap_err(),
            AuthFailure::BadPassword
        );
        assert!(
            a.is_costly(&login("bob", "wrong")),
            "failures are not cached"
        );
        assert!(a.authenticate(&login("bob", "bob-pw"), None, now()).is_ok());
        assert!(!a.is_costly(&login("bob", "bob-pw")), "a success is");
        assert!(a.authenticate(&login("bob", "bob-pw"), None, now()).is_ok());
        assert_eq!(
            a.warnings(),
            vec!["users[0] (alice): password is plain text; use a bcrypt hash"]
        );
        // A user name with no password sent is a bad password, not a no_auth_user.
        let no_pass = Credentials {
            user: Some("alice"),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&no_pass, None, now()).unwrap_err(),
            AuthFailure::BadPassword
        );
    }

    #[test]
    fn nkeys_sign_the_nonce() {
        let kp = nkeys::KeyPair::new_user();
        let pk = kp.public_key();
        let a = Authenticator::new(&AuthConfig {
            users: vec![nkey_user(&pk)],
            ..Default::default()
        })
        .unwrap();
        assert!(a.needs_nonce());
        let nonce = crate::fresh_nonce();
        let sig = URL_SAFE_NO_PAD.encode(kp.sign(nonce.as_bytes()).unwrap());
        let c = Credentials {
            nkey: Some(&pk),
            sig: Some(&sig),
            ..creds()
        };
        let id = a.authenticate(&c, Some(&nonce), now()).unwrap();
        assert_eq!((&*id.user, id.method), (pk.as_str(), Method::Nkey));
        assert!(!a.is_costly(&c));
        // Wrong nonce.
        assert_eq!(
            a.authenticate(&c, Some(&crate::fresh_nonce()), now())
                .unwrap_err(),
            AuthFailure::BadSignature
        );
        assert_eq!(
            a.authenticate(&c, None, now()).unwrap_err(),
            AuthFailure::MissingNonce
        );
        let unsigned = Credentials {
            nkey: Some(&pk),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&unsigned, Some(&nonce), now()).unwrap_err(),
            AuthFailure::BadSignature
        );
        // Wrong key: signed by another pair.
        let other = nkeys::KeyPair::new_user();
        let sig = URL_SAFE_NO_PAD.encode(other.sign(nonce.as_bytes()).unwrap());
        let c = Credentials {
            nkey: Some(&pk),
            sig: Some(&sig),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&c, Some(&nonce), now()).unwrap_err(),
            AuthFailure::BadSignature
        );
        let opk = other.public_key();
        let c = Credentials {
            nkey: Some(&opk),
            sig: Some(&sig),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&c, Some(&nonce), now()).unwrap_err(),
            AuthFailure::UnknownUser
        );
    }

    #[test]
    fn permissions_of_answers_for_each_way_in_after_a_reload() {
        let restricted = PermissionsEntry {
            subscribe: Some(RulesEntry {
                allow: Some(vec!["a.>".into()]),
                deny: None,
            }),
            ..Default::default()
        };
        let a = Authenticator::new(&AuthConfig {
            users: vec![
                user("admin", "pw"),
                UserEntry {
                    permissions: Some(restricted),
                    ..user("guest", "g")
                },
            ],
            no_auth_user: Some("guest".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(a.has_no_auth_user() && !a.accepts_jwt());
        assert_eq!(
            a.permissions_of("admin", Method::Password)
                .map(|p| p.is_none()),
            Some(true)
        );
        let guest = a
            .permissions_of("guest", Method::Password)
            .unwrap()
            .unwrap();
        assert!(guest.may_subscribe(b"a.b", None) && !guest.may_subscribe(b"b", None));
        assert!(a
            .permissions_of("guest", Method::NoAuthUser)
            .unwrap()
            .is_some());
        assert!(
            a.permissions_of("gone", Method::Password).is_none(),
            "a user removed"
        );
        assert!(a.permissions_of("admin", Method::NoAuthUser).is_none());
        assert!(
            a.permissions_of("x", Method::Jwt).is_none(),
            "tokens no longer accepted"
        );
        assert!(a.permissions_of("", Method::Token).is_none());
        assert!(
            a.permissions_of("", Method::None).is_none(),
            "auth is on now"
        );
        assert!(Authenticator::none()
            .permissions_of("", Method::None)
            .is_some());
    }

    #[test]
    fn no_auth_user_takes_clients_that_send_nothing() {
        let restricted = PermissionsEntry {
            publish: Some(RulesEntry {
                allow: Some(vec!["public.>".into()]),
                deny: None,
            }),
            ..Default::default()
        };
        let a = Authenticator::new(&AuthConfig {
            users: vec![
                user("admin", "pw"),
                UserEntry {
                    user: Some("guest".into()),
                    permissions: Some(restricted),
                    ..Default::default()
                },
            ],
            no_auth_user: Some("guest".into()),
            ..Default::default()
        })
        .unwrap();
        let id = a.authenticate(&creds(), None, now()).unwrap();
        assert_eq!((&*id.user, id.method), ("guest", Method::NoAuthUser));
        let p = id.permissions.unwrap();
        assert!(p.may_publish(b"public.x") && !p.may_publish(b"private"));
        // By name it has no password to match.
        let c = Credentials {
            user: Some("guest"),
            pass: Some(""),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&c, None, now()).unwrap_err(),
            AuthFailure::BadPassword
        );
        // Credentials given are checked, never replaced by the no_auth_user.
        let c = Credentials {
            user: Some("admin"),
            pass: Some("bad"),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&c, None, now()).unwrap_err(),
            AuthFailure::BadPassword
        );
        let c = Credentials {
            pass: Some("x"),
            ..creds()
        };
        assert_eq!(
            a.authenticate(&c, None, now()).unwrap_err(),
            AuthFailure::MissingCredentials
        );
    }

    #[test]
    fn no_auth_user_can_be_an_nkey() {
        let pk = nkeys::KeyPair::new_user().public_key();
        let a = Authenticator::new(&AuthConfig {
            users: vec![nkey_user(&pk)],
            no_auth_user: Some(pk.clone()),
            ..Default::default()
        })
        .unwrap();
        let id = a.authenticate(&creds(), None, now()).unwrap();
        assert_eq!(id.method, Method::NoAuthUser);
        assert_eq!(&*id.user, pk);
    }

    #[test]
    fn default_permissions_fill_in() {
        let default = PermissionsEntry {
            subscribe: Some(RulesEntry {
                allow: None,
                deny: Some(vec!["secret.>".into()]),
            }),
            ..Default::default()
        };
        let a = Authenticator::new(&AuthConfig {
            users: vec![
                user("a", "pw"),
                UserEntry {
                    permissions: Some(PermissionsEntry::default()),
                    ..user("b", "pw")
                },
            ],
            default_permissions: Some(default),
            ..Default::default()
        })
        .unwrap();
        let login = |u| Credentials {
            user: Some(u),
            pass: Some("pw"),
            ..creds()
        };
        let p = a
            .authenticate(&login("a"), None, now())
            .unwrap()
            .permissions
            .unwrap();
        assert!(!p.may_subscribe(b"secret.x", None));
        // Its own (empty) permissions allow everything.
        assert!(a
            .authenticate(&login("b"), None, now())
            .unwrap()
            .permissions
            .is_none());
    }

    fn jwt_authenticator(default: Option<PermissionsEntry>) -> Authenticator {
        Authenticator::new(&AuthConfig {
            jwt: Some(JwtEntry {
                hs256_secret: Some("k".into()),
                ..Default::default()
            }),
            default_permissions: default,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn jwt_identities() {
        let s = Signer::Hs256(b"k".to_vec());
        let a = jwt_authenticator(None);
        let t = s.sign(&json!({"sub": "svc", "exp": NOW + 60}));
        let c = Credentials {
            token: Some(&t),
            ..creds()
        };
        assert!(!a.is_costly(&c));
        let id = a.authenticate(&c, None, now()).unwrap();
        assert_eq!((&*id.user, id.method), ("svc", Method::Jwt));
        assert!(id.permissions.is_none());
        assert_eq!(
            id.expires,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW + 60))
        );
        let later = now() + std::time::Duration::from_secs(120);
        assert_eq!(
            a.authenticate(&c, None, later).unwrap_err(),
            AuthFailure::TokenExpired
        );
        // Without a tern claim, default_permissions.
        let a = jwt_authenticator(Some(PermissionsEntry {
            publish: Some(RulesEntry {
                allow: Some(vec![]),
                deny: None,
            }),
            ..Default::default()
        }));
        let p = a
            .authenticate(&c, None, now())
            .unwrap()
            .permissions
            .unwrap();
        assert!(!p.may_publish(b"x"));
        let t = s.sign(&json!({"sub": "svc", "exp": NOW + 60, "tern": {"pub": ["x"]}}));
        let c = Credentials {
            token: Some(&t),
            ..creds()
        };
        let p = a
            .authenticate(&c, None, now())
            .unwrap()
            .permissions
            .unwrap();
        assert!(p.may_publish(b"x"));
        // EdDSA through the authenticator too.
        let (signer, path) = ed25519();
        let a = Authenticator::new(&AuthConfig {
            jwt: Some(JwtEntry {
                public_key_file: Some(path.path()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        let t = signer.sign(&json!({"sub": "e", "exp": NOW + 60}));
        assert!(a
            .authenticate(
                &Credentials {
                    token: Some(&t),
                    ..creds()
                },
                None,
                now()
            )
            .is_ok());
    }

    #[test]
    fn failures_have_labels_and_no_secrets() {
        let a = Authenticator::new(&AuthConfig {
            users: vec![user("alice", "hunter2")],
            ..Default::default()
        })
        .unwrap();
        let e = a
            .authenticate(
                &Credentials {
                    user: Some("alice"),
                    pass: Some("hunter3"),
                    ..creds()
                },
                None,
                now(),
            )
            .unwrap_err();
        assert_eq!(e.reason(), "bad_password");
        assert!(!e.to_string().contains("hunter"));
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(
            AuthFailure::InvalidToken("x".into()).reason(),
            "invalid_token"
        );
        assert_eq!(
            AuthFailure::TokenNotYetValid.reason(),
            "token_not_yet_valid"
        );
        assert_eq!(Method::NoAuthUser.name(), "no_auth_user");
    }

    #[test]
    fn config_errors_name_their_key() {
        let pk = nkeys::KeyPair::new_user().public_key();
        assert_eq!(
            err(AuthConfig {
                users: vec![user("a", "x"), user("b", "y"), user("a", "z")],
                ..Default::default()
            })
            .to_string(),
            "users[2].user: duplicate user \"a\""
        );
        assert_eq!(
            err(AuthConfig {
                users: vec![nkey_user(&pk), nkey_user(&pk)],
                ..Default::default()
            })
            .key(),
            "users[1].nkey"
        );
        let both = UserEntry {
            nkey: Some(pk.clone()),
            ..user("a", "x")
        };
        assert_eq!(
            err(AuthConfig {
                users: vec![both],
                ..Default::default()
            }),
            AuthConfigError::UserAndNkey {
                key: "users[0]".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                users: vec![UserEntry::default()],
                ..Default::default()
            }),
            AuthConfigError::NoUserNorNkey {
                key: "users[0]".into()
            }
        );
        let bad = err(AuthConfig {
            users: vec![user("a", "x"), user("b", "y"), nkey_user("Unotakey")],
            ..Default::default()
        });
        assert!(
            bad.to_string()
                .starts_with("users[2].nkey: not a user public key (U...)"),
            "{bad}"
        );
        let account = nkeys::KeyPair::new_account().public_key();
        assert!(matches!(
            err(AuthConfig {
                users: vec![nkey_user(&account)],
                ..Default::default()
            }),
            AuthConfigError::BadNkey { .. }
        ));
        let with_pw = UserEntry {
            password: Some("x".into()),
            ..nkey_user(&pk)
        };
        assert_eq!(
            err(AuthConfig {
                users: vec![with_pw],
                ..Default::default()
            })
            .key(),
            "users[0].password"
        );
        let no_pw = UserEntry {
            user: Some("a".into()),
            ..Default::default()
        };
        assert!(matches!(
            err(AuthConfig {
                users: vec![no_pw],
                ..Default::default()
            }),
            AuthConfigError::MissingPassword { .. }
        ));
        assert_eq!(
            err(AuthConfig {
                users: vec![user("a", "")],
                ..Default::default()
            }),
            AuthConfigError::EmptySecret {
                key: "users[0].password".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                users: vec![user("a", "$2b$10$notahash")],
                ..Default::default()
            }),
            AuthConfigError::BadBcrypt {
                key: "users[0].password".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                users: vec![user("a", "x")],
                no_auth_user: Some("b".into()),
                ..Default::default()
            }),
            AuthConfigError::UnknownNoAuthUser {
                key: "no_auth_user".into(),
                name: "b".into()
            }
        );
        assert!(matches!(
            err(AuthConfig {
                no_auth_user: Some("b".into()),
                ..Default::default()
            }),
            AuthConfigError::UnknownNoAuthUser { .. }
        ));
        assert_eq!(
            err(AuthConfig {
                token: Some("t".into()),
                users: vec![user("a", "x")],
                ..Default::default()
            }),
            AuthConfigError::TokenWithUsers {
                key: "token".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                token: Some("t".into()),
                jwt: Some(JwtEntry {
                    hs256_secret: Some("k".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            AuthConfigError::TokenWithJwt {
                key: "token".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                token: Some(String::new()),
                ..Default::default()
            }),
            AuthConfigError::EmptySecret {
                key: "token".into()
            }
        );
        assert_eq!(
            err(AuthConfig {
                jwt: Some(JwtEntry {
                    hs256_secret: Some(String::new()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            AuthConfigError::EmptySecret {
                key: "jwt.hs256_secret".into()
            }
        );
        let e = err(AuthConfig {
            jwt: Some(JwtEntry {
                public_key_file: Some(temp_file("junk.pem", b"junk").path()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(e, AuthConfigError::KeyFile { .. }), "{e}");
        let e = err(AuthConfig {
            jwt: Some(JwtEntry {
                public_key_file: Some("/nonexistent/k.pem".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(e, AuthConfigError::KeyFile { .. }), "{e}");
        let bad_filter = UserEntry {
            permissions: Some(PermissionsEntry {
                subscribe: Some(RulesEntry {
                    allow: Some(vec!["a..b".into()]),
                    deny: None,
                }),
                ..Default::default()
            }),
            ..user("a", "x")
        };
        assert_eq!(
            err(AuthConfig {
                users: vec![bad_filter],
                ..Default::default()
            })
            .key(),
            "users[0].permissions.subscribe.allow[0]"
        );
        let e = err(AuthConfig {
            default_permissions: Some(PermissionsEntry {
                publish: Some(RulesEntry {
                    allow: None,
                    deny: Some(vec!["a b".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(e.key(), "default_permissions.publish.deny[0]");
    }

    #[test]
    fn reads_a_toml_section() {
        let pk = nkeys::KeyPair::new_user().public_key();
        let text = format!(
            r#"
no_auth_user = "guest"
[default_permissions]
publish = {{ deny = ["$SYS.>"] }}
[[users]]
user = "guest"
password = "g"
[users.permissions]
publish = "public.>"
subscribe = ["public.>", "work.* workers"]
allow_responses = {{ max = 2, expires = "10s" }}
[[users]]
nkey = "{pk}"
"#
        );
        let config: AuthConfig = toml::from_str(&text).unwrap();
        let a = Authenticator::new(&config).unwrap();
        let p = a
            .authenticate(&creds(), None, now())
            .unwrap()
            .permissions
            .unwrap();
        assert!(p.may_subscribe(b"work.x", Some(b"workers")));
        assert!(!p.may_subscribe(b"work.x", None));
        assert_eq!(p.responses().unwrap().max, 2);
        assert!(a.needs_nonce());
    }
}

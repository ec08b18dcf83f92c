//! Authentication settings: their flags (`--auth-token`, `--user`/`--pass`,
//! `--no-auth-user`, `--monitor-token`), the config file's keys (`auth_token`,
//! `no_auth_user`, `[[users]]`, `[jwt]`, `[default_permissions]`, `monitor_token`), and
//! what they resolve to ([`AuthSettings`]).
//!
//! Never: verifies anything or reads a key file. The server builds its
//! `tern_auth::Authenticator` from [`AuthSettings::rules`] when it starts (a bad key or a
//! bad combination stops it with an error naming the key) and again on SIGHUP. Secrets
//! never reach a `Debug` output: the settings print which methods are on, not their values.

use serde::Deserialize;
use tern_auth::{AuthConfig, JwtEntry, PermissionsEntry, UserEntry};

use super::ConfigError;

/// The flags. Every one is optional; a flag given wins over the config file.
#[derive(Default, Clone, clap::Args)]
pub struct AuthArgs {
    /// Token clients must present in CONNECT (`auth_token`) or HELLO. From the
    /// environment, it stays out of `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        help_heading = "Authentication",
        env = "TERN_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// One user's name, with --pass (more users: `[[users]]` in the config file).
    #[arg(
        long,
        value_name = "USER",
        requires = "pass",
        help_heading = "Authentication"
    )]
    pub user: Option<String>,
    /// That user's password: a bcrypt hash, or plain text (warned about at start).
    #[arg(
        long,
        value_name = "PASS",
        requires = "user",
        help_heading = "Authentication"
    )]
    pub pass: Option<String>,
    /// The user that connections without credentials are bound to (one of the users).
    #[arg(long, value_name = "USER", help_heading = "Authentication")]
    pub no_auth_user: Option<String>,
    /// Bearer token every monitoring endpoint but /healthz requires.
    #[arg(
        long,
        value_name = "TOKEN",
        help_heading = "Authentication",
        env = "TERN_MONITOR_TOKEN",
        hide_env_values = true
    )]
    pub monitor_token: Option<String>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("auth_token", &self.auth_token.as_ref().map(|_| ".."))
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| ".."))
            .field("no_auth_user", &self.no_auth_user)
            .field("monitor_token", &self.monitor_token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The config file's authentication keys (top level, as in nats-server's config).
#[derive(Default, Clone, Deserialize)]
pub(crate) struct FileAuth {
    pub auth_token: Option<String>,
    pub no_auth_user: Option<String>,
    pub users: Option<Vec<UserEntry>>,
    pub jwt: Option<JwtEntry>,
    pub default_permissions: Option<PermissionsEntry>,
    pub monitor_token: Option<String>,
}

/// Who may connect and who may read the monitor, resolved.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// What the broker's `Authenticator` is built from.
    pub rules: AuthConfig,
    /// The bearer token of the monitoring endpoints; `None`: open (on its own address,
    /// loopback by default).
    pub monitor_token: Option<String>,
}

impl AuthSettings {
    /// True when connections must authenticate.
    pub fn is_on(&self) -> bool {
        let r = &self.rules;
        r.token.is_some() || !r.users.is_empty() || r.jwt.is_some()
    }

    /// The methods that are on, for logs and `/varz` (never a secret).
    pub fn methods(&self) -> Vec<&'static str> {
        let r = &self.rules;
        let mut on = Vec::new();
        if r.token.is_some() {
            on.push("token");
        }
        if r.users.iter().any(|u| u.password.is_some()) {
            on.push("password");
        }
        if r.users.iter().any(|u| u.nkey.is_some()) {
            on.push("nkey");
        }
        if r.jwt.is_some() {
            on.push("jwt");
        }
        on
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("methods", &self.methods())
            .field("users", &self.rules.users.len())
            .field("no_auth_user", &self.rules.no_auth_user)
            .field("monitor_token", &self.monitor_token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Flag over file: `--user`/`--pass` add one user to the file's `[[users]]`.
pub(crate) fn resolve(args: &AuthArgs, file: &FileAuth) -> AuthSettings {
    let mut users = file.users.clone().unwrap_or_default();
    if let (Some(user), Some(pass)) = (&args.user, &args.pass) {
        users.push(UserEntry {
            user: Some(user.clone()),
            password: Some(pass.clone()),
            nkey: None,
            permissions: None,
        });
    }
    AuthSettings {
        rules: AuthConfig {
            token: args.auth_token.clone().or_else(|| file.auth_token.clone()),
            users,
            jwt: file.jwt.clone(),
            no_auth_user: args
                .no_auth_user
                .clone()
                .or_else(|| file.no_auth_user.clone()),
            default_permissions: file.default_permissions.clone(),
        },
        monitor_token: args
            .monitor_token
            .clone()
            .or_else(|| file.monitor_token.clone()),
    }
}

/// Checks what can be checked without building the authenticator (which checks the rest
/// when the server starts: `tern_auth::Authenticator::new`).
pub(crate) fn validate(settings: &AuthSettings) -> Result<(), ConfigError> {
    let invalid = |key, reason: &str| {
        Err(ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        })
    };
    if settings.rules.token.as_deref() == Some("") {
        return invalid("auth_token", "must not be empty");
    }
    if settings.monitor_token.as_deref() == Some("") {
        return invalid("monitor_token", "must not be empty");
    }
    if let Err(e) = tern_auth::Authenticator::new(&settings.rules) {
        return Err(ConfigError::Invalid {
            key: "users",
            reason: e.to_string(),
        });
    }
    Ok(())
}

//! Connecting the data commands to the broker's binary port.
//!
//! Owns: the options every data command takes to reach the broker (`--server`, the
//! `--tls*` options and the credentials: `--user`/`--pass`, `--token`, `--nkey`,
//! `--creds`), the connection settings of a one-shot command (no reconnect: a lost
//! connection is an error at once) and of a long-running one (reconnects, reporting
//! connection events on stderr), and the `NAME:VALUE` header option.
//!
//! Never: prints to stdout; that is the commands' output. Never reads the TLS files or the
//! `.creds` file itself: tern-client does, at connect, and its errors name the file (the
//! `--nkey` seed file is read here, and its errors name it too). Never shows a credential:
//! the `Debug` of [`AuthArgs`] prints `<redacted>` for the password and the token.

use std::path::PathBuf;

use anyhow::Context;
use tern_client::{Client, ClientBuilder, Event, Headers, ReconnectPolicy};

/// Where the broker is, and how to reach it.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The broker's binary port: tern://host:port, host:port, or tls://host:port for TLS.
    #[arg(
        long,
        short = 's',
        value_name = "URL",
        default_value = "tern://127.0.0.1:4224"
    )]
    pub server: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Credentials, for a broker that requires authentication. They may be combined (e.g.
/// --creds with --token to override the file's JWT).
#[derive(Default, clap::Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// The user name, for user and password authentication; needs --pass.
    #[arg(long, value_name = "USER", requires = "pass")]
    pub user: Option<String>,
    /// The password of --user.
    #[arg(long, value_name = "PASS", requires = "user")]
    pub pass: Option<String>,
    /// A token (a JWT, with nkey authentication), for token authentication.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file holding a user nkey seed (SU...): the broker's challenge is signed with it.
    #[arg(long, value_name = "SEED_FILE", conflicts_with = "creds")]
    pub nkey: Option<PathBuf>,
    /// A NATS credentials file (.creds, as nsc writes it): its user nkey seed signs the
    /// broker's challenge, and its JWT is the token (unless --token gives one).
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthArgs")
            .field("user", &self.user)
            .field("pass", &redacted(&self.pass))
            .field("token", &redacted(&self.token))
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .finish()
    }
}

impl AuthArgs {
    /// The builder with these credentials applied. Reads the `--nkey` seed file.
    fn apply(&self, mut builder: ClientBuilder) -> anyhow::Result<ClientBuilder> {
        if let (Some(user), Some(pass)) = (&self.user, &self.pass) {
            builder = builder.user_password(user, pass);
        }
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the nkey seed file {}", path.display()))?;
            if seed.trim().is_empty() {
                anyhow::bail!("the nkey seed file {} is empty", path.display());
            }
            builder = builder.nkey_seed(seed.trim());
        }
        if let Some(path) = &self.creds {
            builder = builder.credentials_file(path);
        }
        Ok(builder)
    }
}

/// TLS on the binary port. Any of these options turns TLS on, as a tls:// URL does.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Connect with TLS. Without --tls-ca, the server's certificate is verified against
    /// the operating system's trust roots.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the server's certificate must chain to, instead of the
    /// operating system's.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for a broker that requires one; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the URL's host (e.g.
    /// connecting by IP address to a certificate for a DNS name).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The builder with these settings applied.
    fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if self.tls {
            builder = builder.tls(true);
        }
        if let Some(ca) = &self.tls_ca {
            builder = builder.tls_ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            builder = builder.tls_client_cert(cert, key);
        }
        if let Some(name) = &self.tls_server_name {
            builder = builder.tls_server_name(name);
        }
        builder
    }
}

/// The client builder for `command` on `args`.
fn builder(args: &ServerArgs, command: &str) -> anyhow::Result<ClientBuilder> {
    let builder = args
        .tls
        .apply(Client::builder().name(format!("tern {command}")));
    args.auth.apply(builder)
}

/// Connects, saying which option is at fault when the credentials are (a seed read from
/// `--nkey` is not named by the client's error; a `--creds` file is).
fn connect(builder: ClientBuilder, args: &ServerArgs) -> anyhow::Result<Client> {
    builder.connect(&args.server).map_err(|e| {
        let context = match (&e, &args.auth.nkey) {
            (tern_client::Error::Credentials(_), Some(path)) => {
                format!("--nkey {}", path.display())
            }
            _ => format!("cannot connect to {}", args.server),
        };
        anyhow::Error::from(e).context(context)
    })
}

/// A connection for a command that does one thing and exits: no reconnect, so a lost
/// connection fails the command instead of waiting.
pub fn one_shot(args: &ServerArgs, command: &str) -> anyhow::Result<Client> {
    connect(
        builder(args, command)?.reconnect(ReconnectPolicy::disabled()),
        args,
    )
}

/// A connection for a command that runs until it has seen enough: it reconnects by
/// itself (resuming its subscriptions), and reports connection events on stderr. A
/// reconnection the broker refuses (e.g. `AuthorizationViolation`) is reported and retried
/// with the client's backoff.
pub fn long_running(args: &ServerArgs, command: &str) -> anyhow::Result<Client> {
    let client = connect(builder(args, command)?, args)?;
    let events = client.events();
    std::thread::spawn(move || {
        for event in events {
            match event {
                Event::Disconnected { reason } => eprintln!("tern: disconnected: {reason}"),
                Event::ReconnectFailed {
                    attempt, error, ..
                } => eprintln!("tern: reconnect attempt {attempt} failed: {error}"),
                Event::Reconnected(info) => eprintln!("tern: reconnected to {}", info.addr),
                Event::Dropped {
                    sid, count, source, ..
                } => eprintln!("tern: {count} messages dropped for subscription {sid} ({source:?})"),
                Event::Gap {
                    shard,
                    requested,
                    oldest,
                    ..
                } => eprintln!(
                    "tern: gap in shard {shard}: sequences {requested}..{oldest} are no longer in the log"
                ),
                Event::EpochMismatch { message, .. } => eprintln!("tern: {message}"),
                Event::ServerError { code, message, .. } => {
                    eprintln!("tern: server error {code:?}: {message}")
                }
                _ => {}
            }
        }
    });
    Ok(client)
}

/// Parses `NAME:VALUE` (spaces around the value are trimmed).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not NAME:VALUE"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("`{name}` is not a header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// The headers of `--header` options, `None` when there are none.
pub fn headers(pairs: &[(String, String)]) -> Option<Headers> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("Trace-Id: abc:1 "),
            Ok(("Trace-Id".to_string(), "abc:1".to_string()))
        );
        assert_eq!(parse_header("K:"), Ok(("K".to_string(), String::new())));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(":v").is_err());
        assert!(parse_header("a b:v").is_err());
        let h = headers(&[("A".into(), "1".into()), ("A".into(), "2".into())]).unwrap();
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert!(headers(&[]).is_none());
    }
}

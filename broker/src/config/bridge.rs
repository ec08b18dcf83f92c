//! Bridge settings: the flags for the simple case (`--bridge-upstream`, `--bridge-name`,
//! `--bridge-export`, `--bridge-import`, `--bridge-import-static`), the config file's
//! `[[bridge]]` tables, and what they resolve to (`tern_bridge::Settings`, one per bridge).
//!
//! A bad URL or subject filter in the file is refused while the file is parsed, so the
//! error names its line; combinations that cannot work are refused by [`validate`].
//!
//! Never: connects anywhere. The server starts the bridges (`tern_bridge::Hub`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tern_bridge::{Settings, StreamImport, Upstream};

use super::declare::{Dur, Kind, Size};
use super::ConfigError;

/// The flags: one bridge, for the simple case; more in the config file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct BridgeArgs {
    /// Upstream NATS servers of a bridge, nats://[user:pass@]host:port (comma-separated or
    /// repeated) [default: no bridge].
    #[arg(
        long,
        value_name = "URL",
        value_delimiter = ',',
        value_parser = parse_upstream,
        help_heading = "Bridge"
    )]
    pub bridge_upstream: Vec<Upstream>,
    /// This edge's name in the cluster (prefixes exported message ids) [default: the
    /// server name].
    #[arg(long, value_name = "NAME", help_heading = "Bridge")]
    pub bridge_name: Option<String>,
    /// Local subjects published upstream (comma-separated or repeated).
    #[arg(long, value_name = "FILTER", value_delimiter = ',', value_parser = parse_filter, help_heading = "Bridge")]
    pub bridge_export: Vec<String>,
    /// Upstream subjects delivered locally, subscribed as local subscribers want them.
    #[arg(long, value_name = "FILTER", value_delimiter = ',', value_parser = parse_filter, help_heading = "Bridge")]
    pub bridge_import: Vec<String>,
    /// Upstream subjects delivered locally, always subscribed.
    #[arg(long, value_name = "FILTER", value_delimiter = ',', value_parser = parse_filter, help_heading = "Bridge")]
    pub bridge_import_static: Vec<String>,
    /// A NATS .creds file (user JWT and nkey seed) the bridge authenticates upstream with.
    #[arg(long, value_name = "FILE", help_heading = "Bridge")]
    pub bridge_creds: Option<PathBuf>,
    /// CA certificates (PEM) the upstream servers' certificates are checked against (TLS
    /// for tls:// URLs, or servers that require it).
    #[arg(long, value_name = "FILE", help_heading = "Bridge")]
    pub bridge_tls_ca: Option<PathBuf>,
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    s.parse()
}

fn parse_filter(s: &str) -> Result<String, String> {
    tern_protocol::subject::validate_filter(s.as_bytes())
        .map(|()| s.to_string())
        .map_err(|e| format!("{s:?}: {e}"))
}

/// What the flags and the file said about bridges before resolving, kept for the checks.
/// Left out of the configuration's `Debug` (the file's tables hold passwords and tokens):
/// the resolved `Settings` say it all, without them.
#[derive(Clone, Default)]
pub(crate) struct Given(pub BridgeArgs, pub Option<Vec<FileBridge>>);

impl std::fmt::Debug for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// One `[[bridge]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBridge {
    name: Option<String>,
    #[serde(deserialize_with = "de_upstreams")]
    servers: Vec<Upstream>,
    user: Option<String>,
    pass: Option<String>,
    token: Option<String>,
    creds: Option<PathBuf>,
    tls: Option<bool>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_server_name: Option<String>,
    #[serde(default, deserialize_with = "de_filters")]
    export: Vec<String>,
    #[serde(default, deserialize_with = "de_filters")]
    import: Vec<String>,
    #[serde(default, deserialize_with = "de_filters")]
    import_static: Vec<String>,
    /// `[[bridge.import_stream]]`: JetStream streams consumed durably.
    #[serde(default)]
    import_stream: Vec<FileStreamImport>,
    #[serde(default, deserialize_with = "de_size")]
    import_buffer: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    reconnect_min: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    reconnect_max: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    ping_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    write_timeout: Option<Duration>,
    confirm_batch: Option<usize>,
    export_window: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    reply_timeout: Option<Duration>,
    max_replies: Option<usize>,
}

fn de_upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Upstream>, D::Error> {
    let urls = Vec::<String>::deserialize(d)?;
    urls.iter()
        .map(|u| u.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn de_filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let filters = Vec::<String>::deserialize(d)?;
    filters
        .iter()
        .map(|f| parse_filter(f).map_err(serde::de::Error::custom))
        .collect()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Dur::read(d).map(Some)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Size::read(d).map(Some)
}

/// One `[[bridge.import_stream]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStreamImport {
    #[serde(deserialize_with = "de_token")]
    stream: String,
    #[serde(deserialize_with = "de_filter")]
    subject: String,
    #[serde(default, deserialize_with = "de_opt_token")]
    durable: Option<String>,
}

/// A stream or consumer name: one subject token without wildcards, spaces or dots.
fn check_token(s: &str) -> Result<(), String> {
    if s.is_empty() || s.contains(['.', '*', '>', ' ', '\t', '/']) {
        return Err(format!(
            "{s:?}: a JetStream name is a non-empty token without '.', '*', '>', '/' or blanks"
        ));
    }
    Ok(())
}

fn de_token<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_token(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_opt_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_token(d).map(Some)
}

fn de_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    parse_filter(&s).map_err(serde::de::Error::custom)
}

/// Every bridge: the flags' (when `--bridge-upstream` is given) and the file's. A bridge
/// without a name takes the server's; the state file goes in the data directory when
/// messages are stored.
pub(crate) fn resolve(
    args: &BridgeArgs,
    file: Option<&[FileBridge]>,
    server_name: &str,
    data_dir: Option<&Path>,
) -> Vec<Settings> {
    let mut out = Vec::new();
    let state = |name: &str| data_dir.map(|d| d.join(format!("bridge-{name}.state")));
    if !args.bridge_upstream.is_empty() {
        let name = args
            .bridge_name
            .clone()
            .unwrap_or_else(|| server_name.to_string());
        let mut s = Settings::new(name.clone(), args.bridge_upstream.clone());
        s.export = args.bridge_export.clone();
        s.import = args.bridge_import.clone();
        s.import_static = args.bridge_import_static.clone();
        s.creds = args.bridge_creds.clone();
        s.tls_ca = args.bridge_tls_ca.clone();
        s.state_file = state(&name);
        out.push(s);
    }
    for f in file.unwrap_or_default() {
        let name = f.name.clone().unwrap_or_else(|| server_name.to_string());
        let mut s = Settings::new(name.clone(), f.servers.clone());
        s.user = f.user.clone();
        s.pass = f.pass.clone();
        s.token = f.token.clone();
        s.creds = f.creds.clone();
        s.tls = f.tls.unwrap_or(false);
        s.tls_ca = f.tls_ca.clone();
        s.tls_cert = f.tls_cert.clone().zip(f.tls_key.clone());
        s.tls_server_name = f.tls_server_name.clone();
        s.export = f.export.clone();
        s.import = f.import.clone();
        s.import_static = f.import_static.clone();
        s.import_streams = f
            .import_stream
            .iter()
            .map(|j| StreamImport {
                stream: j.stream.clone(),
                subject: j.subject.clone(),
                durable: j.durable.clone().unwrap_or_else(|| format!("tern-{name}")),
            })
            .collect();
        s.import_buffer = f.import_buffer.unwrap_or(s.import_buffer);
        s.reconnect_min = f.reconnect_min.unwrap_or(s.reconnect_min);
        s.reconnect_max = f.reconnect_max.unwrap_or(s.reconnect_max);
        s.ping_interval = f.ping_interval.unwrap_or(s.ping_interval);
        s.write_timeout = f.write_timeout.unwrap_or(s.write_timeout);
        s.confirm_batch = f.confirm_batch.unwrap_or(s.confirm_batch);
        s.export_window = f.export_window.unwrap_or(s.export_window);
        s.reply_timeout = f.reply_timeout.unwrap_or(s.reply_timeout);
        s.max_replies = f.max_replies.unwrap_or(s.max_replies);
        s.state_file = state(&name);
        out.push(s);
    }
    out
}

/// Checks what parses but cannot work.
pub(crate) fn validate(
    args: &BridgeArgs,
    file: Option<&[FileBridge]>,
    bridges: &[Settings],
    binary_port: bool,
    max_queue_messages: usize,
) -> Result<(), ConfigError> {
    let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
    for f in file.unwrap_or_default() {
        if f.tls_cert.is_some() != f.tls_key.is_some() {
            return invalid(
                "bridge.tls_cert",
                "tls_cert and tls_key go together (a client certificate and its key)".into(),
            );
        }
    }
    if args.bridge_upstream.is_empty()
        && (args.bridge_name.is_some()
            || args.bridge_creds.is_some()
            || args.bridge_tls_ca.is_some()
            || !args.bridge_export.is_empty()
            || !args.bridge_import.is_empty()
            || !args.bridge_import_static.is_empty())
    {
        return invalid(
            "bridge_upstream",
            "the other --bridge-* flags need --bridge-upstream".into(),
        );
    }
    if !bridges.is_empty() && !binary_port {
        return invalid(
            "binary_listen",
            "a bridge talks to the broker through its binary port: turn it on".into(),
        );
    }
    for (i, b) in bridges.iter().enumerate() {
        if bridges[..i].iter().any(|o| o.name == b.name) {
            return invalid(
                "bridge.name",
                format!("two bridges are named {:?}: names must differ", b.name),
            );
        }
        if b.name.is_empty() || b.name.contains(['.', '*', '>', ' ', '/']) {
            return invalid(
                "bridge.name",
                format!(
                    "{:?}: a name is a non-empty token without '.', '*', '>', ' ' or '/'",
                    b.name
                ),
            );
        }
        if b.servers.is_empty() {
            return invalid(
                "bridge.servers",
                format!("bridge {:?} has no server", b.name),
            );
        }
        if b.export.is_empty()
            && b.import.is_empty()
            && b.import_static.is_empty()
            && b.import_streams.is_empty()
        {
            return invalid(
                "bridge.export",
                format!("bridge {:?} neither exports nor imports anything", b.name),
            );
        }
        if b.reconnect_min.is_zero() || b.reconnect_max < b.reconnect_min {
            return invalid(
                "bridge.reconnect_max",
                format!(
                    "bridge {:?}: need 0 < reconnect_min <= reconnect_max",
                    b.name
                ),
            );
        }
        if b.ping_interval.is_zero()
            || b.write_timeout.is_zero()
            || b.confirm_batch == 0
            || b.export_window == 0
            || b.reply_timeout.is_zero()
            || b.max_replies == 0
        {
            return invalid(
                "bridge.ping_interval",
                format!(
                    "bridge {:?}: ping_interval, write_timeout, confirm_batch, export_window, \
                     reply_timeout and max_replies must be above 0",
                    b.name
                ),
            );
        }
        // The export's local subscription asks for a queue of export_window messages.
        if b.export_window > max_queue_messages {
            return invalid(
                "bridge.export_window",
                format!(
                    "bridge {:?}: export_window ({}) is over the largest subscription queue \
                     the broker grants (sub_queue_max_messages, {max_queue_messages})",
                    b.name, b.export_window
                ),
            );
        }
        for j in &b.import_streams {
            if let Some(f) = b
                .import
                .iter()
                .chain(&b.import_static)
                .find(|f| tern_bridge::subject::intersect(f, &j.subject).is_some())
            {
                return invalid(
                    "bridge.import_stream",
                    format!(
                        "bridge {:?}: stream {:?}'s {:?} overlaps the import {f:?}: a subject \
                         is imported one way only",
                        b.name, j.stream, j.subject
                    ),
                );
            }
        }
        if b.import_buffer == 0 {
            return invalid(
                "bridge.import_buffer",
                format!("bridge {:?}: import_buffer must be above 0", b.name),
            );
        }
        for d in &b.import {
            if let Some(s) = b
                .import_static
                .iter()
                .find(|s| tern_bridge::subject::intersect(d, s).is_some())
            {
                return invalid(
                    "bridge.import_static",
                    format!(
                        "bridge {:?}: {s:?} (static) and {d:?} (on demand) overlap: a subject is \
                         imported one way or the other",
                        b.name
                    ),
                );
            }
        }
    }
    Ok(())
}

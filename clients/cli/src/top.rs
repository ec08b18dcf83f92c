//! `tern top`: a live terminal view of a broker, from its monitoring endpoint's `/varz`
//! and `/bridgez`.
//!
//! Owns: sampling `/varz` and `/bridgez` every interval, turning two samples into rates,
//! and drawing one frame (ANSI escape codes: clear and home; no terminal library).
//!
//! Never: keeps state beyond the previous sample, or talks to the broker's data ports.

use std::io::Write;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;

use crate::http;
use crate::time::parse_rfc3339;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The broker's monitoring address: host:port or http://host:port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8222")]
    pub monitor: String,
    /// Time between refreshes, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print one frame (rates over one interval) and exit.
    #[arg(long)]
    pub once: bool,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 1s)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        _ => return Err(format!("`{text}`: use ms or s")),
    };
    if d.is_zero() {
        return Err("the interval must not be zero".to_string());
    }
    Ok(d)
}

/// One `/varz` and `/bridgez` reading and when it was taken.
struct Sample {
    at: Instant,
    varz: Value,
    /// `Null` from a broker that does not serve `/bridgez`.
    bridgez: Value,
}

fn sample(authority: &str) -> anyhow::Result<Sample> {
    let body = http::get(authority, "/varz")?;
    let varz = serde_json::from_str(&body).context("/varz is not JSON")?;
    let bridgez = match http::get_if_served(authority, "/bridgez")? {
        Some(body) => serde_json::from_str(&body).context("/bridgez is not JSON")?,
        None => Value::Null,
    };
    Ok(Sample {
        at: Instant::now(),
        varz,
        bridgez,
    })
}

pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    let authority = http::authority(&args.monitor);
    let mut prev = sample(&authority)?;
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(args.interval);
        let now = sample(&authority)?;
        let frame = render(&prev, &now, &authority);
        if args.once {
            out.write_all(frame.as_bytes())?;
            return Ok(());
        }
        // Home the cursor and clear the screen, then draw.
        write!(out, "\x1b[H\x1b[2J{frame}")?;
        out.flush()?;
        prev = now;
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// One screen: identity, connections, per-second rates over the last interval, drops,
/// latency percentiles and the bridges to NATS clusters.
fn render(prev: &Sample, now: &Sample, authority: &str) -> String {
    let (a, b) = (&prev.varz, &now.varz);
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-9);
    let rate = |key: &str| num(b, key).saturating_sub(num(a, key)) as f64 / secs;
    let mut s = String::new();
    let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_string();
    s += &format!(
        "tern top  {}  {} v{}  up {}  workers {}  monitor {}\n\n",
        str_of(b, "server_name"),
        str_of(b, "server_id"),
        // Tern's own version; `version` is the NATS version it is compatible with.
        b["tern_version"]
            .as_str()
            .map_or_else(|| str_of(b, "version"), str::to_string),
        str_of(b, "uptime"),
        num(b, "workers"),
        authority,
    );
    s += &format!(
        "connections {}  (opened {}, closed {})   subscriptions {}\n\n",
        num(b, "connections"),
        num(b, "total_connections"),
        num(b, "closed_connections"),
        num(b, "subscriptions"),
    );
    s += &format!("{:<16}{:>16}{:>16}\n", "", "total", "per second");
    for (label, key) in [
        ("msgs in", "in_msgs"),
        ("msgs out", "out_msgs"),
        ("bytes in", "in_bytes"),
        ("bytes out", "out_bytes"),
        ("dropped msgs", "dropped_msgs"),
        ("slow consumers", "slow_consumers"),
        ("protocol errors", "protocol_errors"),
    ] {
        s += &format!("{label:<16}{:>16}{:>16.1}\n", num(b, key), rate(key));
    }
    let l = &b["latency_us"];
    s += &format!(
        "\nlatency (us, receipt to socket write, since start; {} deliveries)\n  \
         p50 {}  p95 {}  p99 {}  p99.9 {}  max {}\n",
        num(l, "count"),
        num(l, "p50"),
        num(l, "p95"),
        num(l, "p99"),
        num(l, "p999"),
        num(l, "max"),
    );
    if let Some(closed) = b["closed_by_reason"].as_object() {
        let parts: Vec<String> = closed
            .iter()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !parts.is_empty() {
            s += &format!("\nclosed by reason: {}\n", parts.join(", "));
        }
    }
    s += &render_bridges(&prev.bridgez, &now.bridgez, secs);
    if let Some(missing) = b["unresponsive_workers"].as_array() {
        if !missing.is_empty() {
            s += &format!("\nWARNING: workers not answering: {missing:?}\n");
        }
    }
    if b["lame_duck"].as_bool() == Some(true) {
        s += "\nLAME DUCK MODE: not accepting connections, closing clients, then stopping\n";
    }
    s
}

/// How long a bridge's last error may be on screen; the rest is cut.
const ERROR_WIDTH: usize = 100;

/// The bridges (`/bridgez`), one line each: name, state, export and import rates over the
/// last interval, unconfirmed exports (the lag), the server, and the gap, drop and failure
/// counts when not zero; then the last error, shortened, on a line of its own. Nothing
/// when the broker has no bridge.
fn render_bridges(prev: &Value, now: &Value, secs: f64) -> String {
    let Some(bridges) = now["bridges"].as_array().filter(|b| !b.is_empty()) else {
        return String::new();
    };
    // The broker's clock, for the errors' ages.
    let now_unix = now["now"]
        .as_str()
        .and_then(parse_rfc3339)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let mut s = format!(
        "\n{:<16}{:<12}{:>12}{:>12}{:>13}  server\n",
        "bridge", "state", "export/s", "import/s", "unconfirmed"
    );
    for b in bridges {
        let name = b["name"].as_str().unwrap_or("?");
        let before = prev["bridges"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"].as_str() == Some(name)));
        // `-` until there are two readings of this bridge.
        let rate = |key: &str| match before {
            Some(a) => format!(
                "{:.1}",
                num(b, key).saturating_sub(num(a, key)) as f64 / secs
            ),
            None => "-".to_string(),
        };
        let server = match b["server"].as_str() {
            Some(server) => server.to_string(),
            // Not connected: where it is trying to.
            None => b["servers"].as_array().map_or_else(String::new, |list| {
                let list: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                list.join(",")
            }),
        };
        s += &format!(
            "{name:<16}{:<12}{:>12}{:>12}{:>13}  {server}",
            b["state"].as_str().unwrap_or("?"),
            rate("exported"),
            rate("imported"),
            num(b, "unconfirmed"),
        );
        for (label, key) in [
            ("gaps", "export_gaps"),
            ("dropped", "import_dropped"),
            ("failed", "import_failed"),
        ] {
            let n = num(b, key);
            if n > 0 {
                s += &format!("  {label} {n}");
            }
        }
        s += "\n";
        if let Some(message) = b["last_error"]["message"].as_str() {
            let ago = match (now_unix, b["last_error"]["at_unix"].as_u64()) {
                (Some(now), Some(at)) => format!(" {} ago", age(now.saturating_sub(at))),
                _ => String::new(),
            };
            s += &format!("  last error{ago}: {}\n", shorten(message, ERROR_WIDTH));
        }
    }
    s
}

/// `42s`, `5m`, `3h`, `2d`: whole units, seconds up to 2 minutes, minutes up to 2 hours,
/// hours up to 2 days.
fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `text` on one line (whitespace runs made one space), cut to `width` characters with
/// `...` at the end when longer.
fn shorten(text: &str, width: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= width {
        return one_line;
    }
    let cut: String = one_line.chars().take(width.saturating_sub(3)).collect();
    format!("{}...", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_come_from_deltas() {
        let t0 = Instant::now();
        let prev = Sample {
            at: t0,
            varz: json!({"in_msgs": 100, "connections": 1}),
            bridgez: Value::Null,
        };
        let now = Sample {
            at: t0 + Duration::from_secs(2),
            varz: json!({"in_msgs": 300, "connections": 3, "latency_us": {"p99": 42}}),
            bridgez: Value::Null,
        };
        let frame = render(&prev, &now, "x:1");
        assert!(frame.contains("connections 3"), "{frame}");
        let line = frame.lines().find(|l| l.starts_with("msgs in")).unwrap();
        assert!(line.trim_end().ends_with("100.0"), "{line}");
        assert!(frame.contains("p99 42"), "{frame}");
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("0s").is_err());
    }

    #[test]
    fn terns_own_version_and_lame_duck_mode_are_shown() {
        let t0 = Instant::now();
        let prev = Sample {
            at: t0,
            varz: json!({}),
            bridgez: Value::Null,
        };
        let now = Sample {
            at: t0 + Duration::from_secs(1),
            varz: json!({"version": "2.10.0", "tern_version": "0.1.0", "lame_duck": true}),
            bridgez: Value::Null,
        };
        let frame = render(&prev, &now, "x:1");
        assert!(frame.contains(" v0.1.0 "), "{frame}");
        assert!(frame.contains("LAME DUCK MODE"), "{frame}");
    }

    /// A `/bridgez` answer with the given bridges, at 00:10:00 on the Unix epoch's day.
    fn bridgez(bridges: Value) -> Value {
        json!({"server_id": "S", "now": "1970-01-01T00:10:00.250Z", "bridges": bridges})
    }

    #[test]
    fn bridges_show_rates_lag_nonzero_counters_and_the_last_error() {
        let t0 = Instant::now();
        let prev = Sample {
            at: t0,
            varz: json!({}),
            bridgez: bridgez(json!([
                {"name": "east", "state": "connected", "server": "nats://10.0.0.1:4222",
                 "exported": 1000, "imported": 50, "unconfirmed": 40},
                {"name": "west", "state": "connecting", "server": null,
                 "exported": 7, "imported": 0},
            ])),
        };
        let long = format!(
            "cannot connect to nats://127.0.0.1:1:\n  {}",
            "x".repeat(200)
        );
        let now = Sample {
            at: t0 + Duration::from_secs(2),
            varz: json!({}),
            bridgez: bridgez(json!([
                {"name": "east", "state": "connected", "server": "nats://10.0.0.1:4222",
                 "servers": ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"],
                 "exported": 1400, "imported": 250, "unconfirmed": 12,
                 "export_gaps": 0, "import_dropped": 0, "import_failed": 0,
                 "last_error": null},
                {"name": "west", "state": "connecting", "server": null,
                 "servers": ["nats://127.0.0.1:1"],
                 "exported": 7, "imported": 0, "unconfirmed": 0,
                 "export_gaps": 3, "import_dropped": 0, "import_failed": 2,
                 "last_error": {"at_unix": 510, "message": long}},
                {"name": "north", "state": "stopped", "servers": ["tls://n:4222"],
                 "exported": 9, "imported": 9},
            ])),
        };
        let frame = render(&prev, &now, "x:1");
        let words = |name: &str| -> Vec<String> {
            let line = frame
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no line for {name}:\n{frame}"));
            line.split_whitespace().map(str::to_string).collect()
        };
        // Over 2 s: 400 exported, 200 imported; the lag as it is now.
        assert_eq!(
            words("east"),
            [
                "east",
                "connected",
                "200.0",
                "100.0",
                "12",
                "nats://10.0.0.1:4222"
            ],
            "{frame}"
        );
        // Not connected: where it tries; only the counters that are not zero.
        assert_eq!(
            words("west"),
            [
                "west",
                "connecting",
                "0.0",
                "0.0",
                "0",
                "nats://127.0.0.1:1",
                "gaps",
                "3",
                "failed",
                "2"
            ],
            "{frame}"
        );
        // Not in the previous reading: no rate yet.
        assert_eq!(
            words("north"),
            ["north", "stopped", "-", "-", "0", "tls://n:4222"],
            "{frame}"
        );
        // The error under its bridge: its age by the broker's clock, on one line, cut.
        let lines: Vec<&str> = frame.lines().collect();
        let west = lines.iter().position(|l| l.starts_with("west ")).unwrap();
        let error = lines[west + 1];
        assert!(
            error.starts_with("  last error 90s ago: cannot connect to nats://127.0.0.1:1: xxx"),
            "{frame}"
        );
        assert!(error.ends_with("..."), "{error}");
        assert!(error.len() < 130, "{error}");
        assert_eq!(frame.matches("last error").count(), 1, "{frame}");
        assert!(frame.contains("export/s"), "{frame}");
    }

    #[test]
    fn no_bridges_no_bridge_section() {
        let t0 = Instant::now();
        for bridgez in [bridgez(json!([])), Value::Null] {
            let prev = Sample {
                at: t0,
                varz: json!({}),
                bridgez: bridgez.clone(),
            };
            let now = Sample {
                at: t0 + Duration::from_secs(1),
                varz: json!({}),
                bridgez,
            };
            let frame = render(&prev, &now, "x:1");
            assert!(!frame.contains("bridge"), "{frame}");
        }
    }

    #[test]
    fn errors_are_shortened_and_ages_rounded() {
        assert_eq!(shorten("a\n  b\tc", 10), "a b c");
        assert_eq!(shorten("abcdefghijkl", 10), "abcdefg...");
        assert_eq!(shorten("ééééééééééé", 5), "éé...");
        assert_eq!(age(59), "59s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600 + 5), "3h");
        assert_eq!(age(3 * 86_400), "3d");
    }
}

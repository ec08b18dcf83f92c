//! `tern top`: a live terminal view of a broker, from its monitoring endpoint's `/varz`.
//!
//! Owns: sampling `/varz` every interval, turning two samples into rates, and drawing one
//! frame (ANSI escape codes: clear and home; no terminal library).
//!
//! Never: keeps state beyond the previous sample, or talks to the broker's data ports.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::http;

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

/// One `/varz` reading and when it was taken.
struct Sample {
    at: Instant,
    varz: Value,
}

fn sample(authority: &str) -> anyhow::Result<Sample> {
    let body = http::get(authority, "/varz")?;
    let varz = serde_json::from_str(&body).context("/varz is not JSON")?;
    Ok(Sample {
        at: Instant::now(),
        varz,
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

/// One screen: identity, connections, per-second rates over the last interval, drops and
/// latency percentiles.
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
        };
        let now = Sample {
            at: t0 + Duration::from_secs(2),
            varz: json!({"in_msgs": 300, "connections": 3, "latency_us": {"p99": 42}}),
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
        };
        let now = Sample {
            at: t0 + Duration::from_secs(1),
            varz: json!({"version": "2.10.0", "tern_version": "0.1.0", "lame_duck": true}),
        };
        let frame = render(&prev, &now, "x:1");
        assert!(frame.contains(" v0.1.0 "), "{frame}");
        assert!(frame.contains("LAME DUCK MODE"), "{frame}");
    }
}

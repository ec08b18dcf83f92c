//! How received messages are printed: for people, or one JSON object per line.
//!
//! Owns: both formats. The JSON object of a message is
//! `{"subject", "shard", "sequence", "priority", "timestamp", "replayed", "reply",
//! "headers", "payload", "payload_encoding"}`: `headers` maps each name to its values in
//! order (or is null), `payload` is the payload as a UTF-8 string when it is valid UTF-8
//! (`payload_encoding` "utf8") and base64 (standard alphabet, padded) otherwise
//! (`payload_encoding` "base64"), `timestamp` is nanoseconds since the Unix epoch.
//!
//! Never: changes a payload: non-UTF-8 bytes are never replaced in JSON output.

use std::io::Write;

use base64::Engine;
use serde_json::{json, Map, Value};
use tern_client::Message;

/// The JSON object of a message.
pub fn json(msg: &Message) -> Value {
    let (payload, encoding) = match std::str::from_utf8(&msg.payload) {
        Ok(text) => (text.to_string(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&msg.payload),
            "base64",
        ),
    };
    let headers = msg.headers.as_ref().map(|h| {
        let mut map = Map::new();
        for (name, value) in h.iter() {
            let values = map
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = values {
                list.push(Value::String(value.to_string()));
            }
        }
        Value::Object(map)
    });
    json!({
        "subject": msg.subject,
        "shard": msg.shard,
        "sequence": msg.sequence,
        "priority": msg.priority,
        "timestamp": msg.timestamp,
        "replayed": msg.replayed,
        "reply": msg.reply,
        "headers": headers,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// Prints message number `n` (from 1) to `out`.
pub fn print(out: &mut impl Write, n: u64, msg: &Message, as_json: bool) -> std::io::Result<()> {
    if as_json {
        writeln!(out, "{}", json(msg))?;
    } else {
        write!(
            out,
            "[#{n}] {} (shard {}, sequence {}, priority {}",
            msg.subject, msg.shard, msg.sequence, msg.priority
        )?;
        if let Some(reply) = &msg.reply {
            write!(out, ", reply {reply}")?;
        }
        writeln!(out, ")")?;
        if let Some(h) = &msg.headers {
            for (name, value) in h.iter() {
                writeln!(out, "{name}: {value}")?;
            }
        }
        out.write_all(&msg.payload)?;
        writeln!(out)?;
    }
    out.flush()
}

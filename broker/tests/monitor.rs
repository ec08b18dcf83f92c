//! The monitoring endpoint, end to end: start the real `ternd` with monitoring on a free
//! port, generate known traffic with raw NATS clients, and check that every endpoint's
//! counters match it exactly.
//!
//! The helpers here (process, raw client, HTTP GET) are this file's own, so the shared
//! harness in `common/` stays untouched by monitoring concerns.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A running ternd with monitoring on; killed when dropped.
struct Ternd {
    child: Child,
    addr: SocketAddr,
    monitor: SocketAddr,
}

impl Ternd {
    fn start() -> Ternd {
        Ternd::with(&[])
    }

    /// Starts ternd with `extra` flags after the usual ones.
    fn with(extra: &[&str]) -> Ternd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ternd"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--binary-listen",
                "127.0.0.1:0",
                "--no-store",
                "--monitor",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--no-pin",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ternd");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |prefix: &str| -> SocketAddr {
            let line = lines.next().expect("a line").expect("stdout");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected `{prefix}...`, got `{line}`"))
                .trim()
                .parse()
                .expect("an address")
        };
        let addr = next("ternd listening on ");
        next("ternd binary listening on ");
        let monitor = next("ternd monitoring on ");
        std::thread::spawn(move || for _ in lines {});
        Ternd {
            child,
            addr,
            monitor,
        }
    }

    /// The threads of the ternd process now.
    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .expect("/proc/<pid>/task")
            .count()
    }

    /// GET `path`: (status, content type, body).
    fn get(&self, path: &str) -> (u16, String, String) {
        http_get(self.monitor, path)
    }

    fn json(&self, path: &str) -> Value {
        let (status, ctype, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(ctype, "application/json", "{path}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Polls `path` until `ok` holds (counters settle a few microseconds after a client
    /// has seen its bytes), and returns the last answer.
    fn json_until(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.json(path);
            if ok(&v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ternd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to monitor");
    // One write, as HTTP clients do: a server that refuses the connection may have closed
    // it by the time a second fragment arrives.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let raw = String::from_utf8(read_until_closed(&mut s)).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let ctype = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// A blocking NATS client that speaks raw bytes.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, name: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut c = Client { s, buf: Vec::new() };
        c.read_until(b"\r\n");
        if !name.is_empty() {
            c.send(
                format!(
                    "CONNECT {{\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"9.9\",\"verbose\":false}}\r\n"
                )
                .as_bytes(),
            );
        }
        c
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads until `pat` has been seen `times` times in what arrived since the last call.
    fn read_count(&mut self, pat: &[u8], times: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            let n = self.buf.windows(pat.len()).filter(|w| *w == pat).count();
            if n >= times {
                return std::mem::take(&mut self.buf);
            }
            assert!(
                Instant::now() < deadline,
                "waited for {times} x {:?}, got {:?}",
                String::from_utf8_lossy(pat),
                String::from_utf8_lossy(&self.buf)
            );
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
        self.read_count(pat, 1)
    }

    /// A PING/PONG round trip: everything sent before has been processed.
    fn flush(&mut self) {
        self.send(b"PING\r\n");
        self.read_until(b"PONG\r\n");
    }

    /// Reads until the server closes the connection.
    fn read_to_close(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "the server did not close");
            match self.s.read(&mut chunk) {
                Ok(0) => return String::from_utf8_lossy(&self.buf).into_owned(),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return String::from_utf8_lossy(&self.buf).into_owned()
                }
                Err(_) => {}
            }
        }
    }
}

/// Parses Prometheus text: every non-comment line is `name{labels} value`; every sample's
/// family has HELP and TYPE. Returns sample -> value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_string();
            let kind = it.next().unwrap().to_string();
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind.as_str()),
                "{line}"
            );
            typed.insert(name, kind);
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line `{line}`"
        );
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let family = typed
            .keys()
            .filter(|f| {
                name == f.as_str()
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| s == "_sum" || s == "_count")
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("no TYPE before {line}"))
            .clone();
        assert!(helped.contains(&family), "no HELP for {family}");
        if typed[&family] == "counter" {
            assert!(
                family.ends_with("_total"),
                "counter {family} must end in _total"
            );
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

/// The sum of every sample of `name` whose labels contain `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{"))) && k.contains(with)
        })
        .map(|(_, v)| v)
        .sum()
}

fn by_name<'a>(connz: &'a Value, name: &str) -> &'a Value {
    connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no connection named {name}: {connz}"))
}

const N: u64 = 10;
const SIZE: u64 = 10;

/// Subscribers `s1`, `s2` on `foo.bar` and `w` on `foo.*`; `pub` publishes N messages of
/// SIZE bytes to `foo.bar`; a client that sends garbage is closed.
fn traffic(t: &Ternd) -> Vec<Client> {
    let mut subs = Vec::new();
    for (name, filter) in [("s1", "foo.bar"), ("s2", "foo.bar"), ("w", "foo.*")] {
        let mut c = Client::connect(t.addr, name);
        c.send(format!("SUB {filter} 1\r\n").as_bytes());
        c.flush();
        subs.push(c);
    }
    let mut p = Client::connect(t.addr, "pub");
    for i in 0..N {
        p.send(
            format!(
                "PUB foo.bar {SIZE}\r\n{:0width$}\r\n",
                i,
                width = SIZE as usize
            )
            .as_bytes(),
        );
    }
    p.flush();
    for s in &mut subs {
        s.read_count(b"MSG foo.bar 1 10\r\n", N as usize);
    }
    let mut bad = Client::connect(t.addr, "");
    bad.send(b"GARBAGE\r\n");
    let said = bad.read_to_close();
    assert!(said.contains("-ERR 'Unknown Protocol Operation'"), "{said}");
    subs.push(p);
    subs
}

#[test]
fn endpoints_count_known_traffic_exactly() {
    let t = Ternd::start();
    let _clients = traffic(&t);
    let deliveries = 3 * N;

    // /varz: totals. Latency is recorded just after a delivery's bytes are written, so
    // wait for it to settle.
    let v = t.json_until("/varz", |v| {
        v["latency_us"]["count"] == deliveries && v["closed_connections"] == 1
    });
    assert_eq!(v["workers"], 2);
    assert_eq!(v["port"], t.addr.port());
    assert_eq!(v["http_port"], t.monitor.port());
    assert_eq!(v["in_msgs"], N);
    assert_eq!(v["in_bytes"], N * SIZE);
    assert_eq!(v["out_msgs"], deliveries);
    assert_eq!(v["out_bytes"], deliveries * SIZE);
    assert_eq!(v["total_connections"], 5);
    assert_eq!(v["connections"], 4);
    assert_eq!(v["closed_connections"], 1);
    assert_eq!(v["closed_by_reason"]["protocol_error"], 1);
    assert_eq!(v["closed_by_reason"]["client_closed"], 0);
    assert_eq!(v["protocol_errors"], 1);
    assert_eq!(v["subscriptions"], 3);
    assert_eq!(v["dropped_msgs"], 0);
    assert_eq!(v["slow_consumers"], 0);
    assert_eq!(v["latency_us"]["count"], deliveries);
    let lat = &v["latency_us"];
    assert!(lat["p50"].as_u64() <= lat["p99"].as_u64());
    assert!(lat["p99"].as_u64() <= lat["max"].as_u64());
    assert_eq!(v["max_payload"], 1 << 20);
    assert_eq!(v["unresponsive_workers"], serde_json::json!([]));

    // /connz: each connection's own counters.
    let c = t.json("/connz");
    assert_eq!(c["total"], 4);
    assert_eq!(c["num_connections"], 4);
    assert_eq!(c["limit"], 1024);
    let p = by_name(&c, "pub");
    assert_eq!(p["in_msgs"], N);
    assert_eq!(p["in_bytes"], N * SIZE);
    assert_eq!(p["out_msgs"], 0);
    assert_eq!(p["subscriptions"], 0);
    assert_eq!(p["lang"], "rust");
    assert_eq!(p["version"], "9.9");
    assert_eq!(p["ip"], "127.0.0.1");
    assert_eq!(p["protocol"], "text");
    for name in ["s1", "s2", "w"] {
        let s = by_name(&c, name);
        assert_eq!(s["out_msgs"], N, "{name}");
        assert_eq!(s["out_bytes"], N * SIZE, "{name}");
        assert_eq!(s["in_msgs"], 0, "{name}");
        assert_eq!(s["subscriptions"], 1, "{name}");
        assert_eq!(s["pending_bytes"], 0, "{name}");
        assert_eq!(s["dropped_msgs"], 0, "{name}");
        let cid = s["cid"].as_u64().unwrap();
        assert_eq!(
            s["worker"].as_u64().unwrap(),
            cid % 2,
            "client_id % workers"
        );
    }
    let cids: Vec<u64> = c["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cid"].as_u64().unwrap())
        .collect();
    let mut sorted = cids.clone();
    sorted.sort();
    assert_eq!(cids, sorted, "sorted by cid by default");

    // Sorting and paging.
    let c = t.json("/connz?sort=msgs_from");
    assert_eq!(c["connections"][0]["name"], "pub");
    let c = t.json("/connz?sort=bytes_to&limit=1");
    assert_eq!(c["num_connections"], 1);
    assert_eq!(c["total"], 4);
    assert_ne!(c["connections"][0]["name"], "pub");
    let c = t.json("/connz?offset=1&limit=2");
    assert_eq!(c["offset"], 1);
    assert_eq!(c["num_connections"], 2);
    let page: Vec<u64> = c["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cid"].as_u64().unwrap())
        .collect();
    assert_eq!(page, sorted[1..3]);
    let c = t.json("/connz?subs=1&sort=subs");
    assert_eq!(
        by_name(&c, "w")["subscriptions_list"],
        serde_json::json!(["foo.*"])
    );
    assert_eq!(t.get("/connz?sort=nonsense").0, 400);
    assert_eq!(t.get("/connz?sort=stop").0, 400, "stop needs state=closed");

    // The closed connection and its reason.
    let c = t.json("/connz?state=closed");
    assert_eq!(c["total"], 1);
    let gone = &c["connections"][0];
    assert_eq!(gone["reason"], "protocol error: Unknown Protocol Operation");
    assert!(gone["stop"].is_string());
    assert_eq!(t.json("/connz?state=all")["total"], 5);

    // /subsz: every shard holds foo.bar and the wildcard; each filter is listed once.
    let s = t.json("/subsz");
    assert_eq!(s["num_subscriptions"], 3);
    let filters = s["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2, "{s}");
    let count = |name: &str| -> Vec<u64> {
        filters
            .iter()
            .filter(|f| f["filter"] == name)
            .map(|f| f["subscriptions"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(count("foo.bar"), vec![2]);
    assert_eq!(count("foo.*"), vec![1]);
    let shard_subs: Vec<u64> = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptions"].as_u64().unwrap())
        .collect();
    assert_eq!(shard_subs, vec![3, 3]);
    assert_eq!(
        t.json("/subsz?limit=1")["filters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // /shardz
    let z = t.json("/shardz");
    let shards = z["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    for (i, sh) in shards.iter().enumerate() {
        assert_eq!(sh["shard"], i);
        assert_eq!(sh["answered"], true);
        assert_eq!(sh["literal_subjects"], 1);
        assert_eq!(sh["subscriptions"], 3);
        assert_eq!(sh["inbox_capacity"], 4096);
        assert_eq!(sh["inbox_bytes_capacity"], 4 << 20);
        assert!(sh["inbox_batches"].is_u64());
    }

    // /healthz
    let (status, _, body) = t.get("/healthz");
    assert_eq!(status, 200, "{body}");

    // /metrics: valid text, same counters.
    let (status, ctype, body) = t.get("/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let m = parse_prometheus(&body);
    assert_eq!(sum(&m, "tern_messages_in_total", ""), N as f64);
    assert_eq!(sum(&m, "tern_bytes_in_total", ""), (N * SIZE) as f64);
    assert_eq!(sum(&m, "tern_messages_out_total", ""), deliveries as f64);
    assert_eq!(
        sum(&m, "tern_bytes_out_total", ""),
        (deliveries * SIZE) as f64
    );
    assert_eq!(sum(&m, "tern_connections_opened_total", ""), 5.0);
    assert_eq!(sum(&m, "tern_connections", ""), 4.0);
    assert_eq!(
        sum(
            &m,
            "tern_connections_closed_total",
            "reason=\"protocol_error\""
        ),
        1.0
    );
    assert_eq!(sum(&m, "tern_connections_closed_total", ""), 1.0);
    assert_eq!(sum(&m, "tern_subscriptions", ""), 3.0);
    assert_eq!(sum(&m, "tern_protocol_errors_total", ""), 1.0);
    assert_eq!(sum(&m, "tern_messages_dropped_total", ""), 0.0);
    assert_eq!(m["tern_delivery_latency_seconds_count"], deliveries as f64);
    for q in ["0.5", "0.95", "0.99", "0.999"] {
        assert!(m.contains_key(&format!(
            "tern_delivery_latency_seconds{{quantile=\"{q}\"}}"
        )));
    }
    assert_eq!(m["tern_workers"], 2.0);
    assert_eq!(m["tern_monitor_unresponsive_workers"], 0.0);
    // Three subscriptions, held by each of the two shards.
    assert_eq!(sum(&m, "tern_shard_subscriptions", ""), 6.0);
}

#[test]
fn a_client_that_leaves_is_closed_with_its_reason() {
    let t = Ternd::start();
    let mut c = Client::connect(t.addr, "leaver");
    c.flush();
    drop(c);
    let z = t.json_until("/connz?state=closed", |z| z["total"] == 1);
    assert_eq!(z["total"], 1, "{z}");
    let gone = &z["connections"][0];
    assert_eq!(gone["name"], "leaver");
    assert_eq!(gone["reason"], "client closed");
    let v = t.json("/varz");
    assert_eq!(v["closed_by_reason"]["client_closed"], 1);
    assert_eq!(v["connections"], 0);
    assert_eq!(t.get("/nope").0, 404);
}

// ---------------------------------------------------------------------------------------
// Bounds: the monitoring endpoint must not be a way to stall or exhaust the broker.
// ---------------------------------------------------------------------------------------

/// Reads what the server sends until it closes (EOF, or a reset after its answer).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(e) => panic!(
                "not closed within {WAIT:?} ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// The status code of a raw HTTP response.
fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

#[test]
fn stalled_requests_neither_spawn_threads_nor_shut_the_monitor_for_good() {
    let t = Ternd::with(&["--monitor-request-timeout", "4s"]);
    const STALLED: u64 = 1000;
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut s = TcpStream::connect(t.monitor).expect("connect to the monitor");
            // Half a request: the head never ends.
            s.write_all(b"GET /varz HTTP/1.1\r\nHost: stalled\r\n")
                .unwrap();
            s
        })
        .collect();
    let threads = t.threads();
    assert!(
        threads < 20,
        "{threads} threads with {STALLED} stalled HTTP connections"
    );
    // monitor_max_connections (64) are held; the others get a clean 503 at once. (How many
    // of each depends on the machine: on a slow one the first held may time out while
    // the last are still connecting, and their slots go to later ones.)
    // Every stalled connection ends: refused at once (503), or held and then closed by
    // the request timeout (408).
    let (mut busy, mut late) = (0u64, 0u64);
    for s in &mut stalled {
        let raw = read_until_closed(s);
        match status_of(&raw) {
            503 => {
                let text = String::from_utf8_lossy(&raw);
                assert!(text.contains("too many monitoring connections"), "{text}");
                busy += 1
            }
            408 => late += 1,
            other => panic!("unexpected {other}: {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    assert_eq!(busy + late, STALLED);
    assert!(late >= 64, "the 64 held first time out: {late}");
    assert!(busy > 0, "none refused while 64 were held");
    // With the stalled ones gone, the monitor answers again.
    let v = t.json("/varz");
    assert_eq!(v["monitor_requests_refused"]["timeout"], late);
    assert_eq!(
        v["monitor_requests_refused"]["connections"], busy,
        "the stalled ones refused"
    );
    assert!(t.threads() < 20);
}

#[test]
fn a_huge_url_is_refused_without_being_echoed() {
    let t = Ternd::start();
    let mut s = TcpStream::connect(t.monitor).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let url = format!("/varz?{}", "Q".repeat(6 << 20));
        // The server answers once its head limit is reached and drops the rest; this
        // write may fail when it closes.
        let _ = write!(w, "GET {url} HTTP/1.1\r\nHost: x\r\n\r\n");
    });
    let raw = read_until_closed(&mut s);
    let text = String::from_utf8_lossy(&raw);
    let status = status_of(&raw);
    assert!(status == 414 || status == 431, "{text}");
    assert!(!text.contains("QQQQ"), "the URL is echoed: {text}");
    assert!(raw.len() < 1024, "{} bytes: {text}", raw.len());
    writer.join().unwrap();
    let v = t.json("/varz");
    assert_eq!(v["monitor_requests_refused"]["head_too_large"], 1);
}

#[test]
fn connz_lists_a_bounded_part_of_a_huge_subscription_list() {
    let t = Ternd::start();
    let mut c = Client::connect(t.addr, "hoarder");
    let subs: String = (0..5000)
        .map(|i| format!("SUB hoard.{i} {i}\r\n"))
        .collect();
    c.send(subs.as_bytes());
    c.flush();
    let mut quiet = Client::connect(t.addr, "quiet");
    quiet.flush();
    for (query, list) in [
        ("subs=detail", "subscriptions_list_detail"),
        ("subs=1", "subscriptions_list"),
    ] {
        let (status, _, body) = t.get(&format!("/connz?{query}&limit=1&sort=subs"));
        assert_eq!(status, 200, "{body}");
        assert!(body.len() < 1 << 20, "{query}: {} bytes", body.len());
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["total"], 2);
        let conn = &v["connections"][0];
        assert_eq!(conn["name"], "hoarder");
        assert_eq!(conn["subscriptions"], 5000, "the full count");
        assert_eq!(
            conn[list].as_array().unwrap().len(),
            1024,
            "{query}: monitor_max_sublist entries"
        );
    }
    let (status, _, body) = t.get("/connz?limit=4097");
    assert_eq!(status, 400);
    assert!(body.contains("at most 4096"), "{body}");
}

/// `(filter, subscriptions)` of each entry of a `/subsz` answer.
fn filters_of(v: &Value) -> Vec<(String, u64)> {
    v["filters"]
        .as_array()
        .unwrap_or_else(|| panic!("no filters: {v}"))
        .iter()
        .map(|f| {
            (
                f["filter"].as_str().unwrap().to_string(),
                f["subscriptions"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn subsz_pages_match_a_full_listing() {
    let t = Ternd::with(&["--monitor-max-limit", "100000"]);
    let mut c = Client::connect(t.addr, "subscriber");
    let mut ops: String = (0..50_000).map(|i| format!("SUB p.{i} {i}\r\n")).collect();
    for (i, f) in ["p.*", "w.>", "q.*"].iter().enumerate() {
        ops.push_str(&format!("SUB {f} w{i}\r\n"));
    }
    ops.push_str("SUB jobs grp j1\r\nSUB jobs grp j2\r\nSUB jobs other j3\r\n");
    c.send(ops.as_bytes());
    c.flush();
    // 50,001 literal filters and 3 wildcards, in every shard.
    let want_filters = 50_001 + 3;
    let every_shard_holds = |v: &Value, n: u64| -> bool {
        v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["subscriptions"].as_u64() == Some(n))
    };
    let v = t.json_until("/subsz?limit=0", |v| every_shard_holds(v, 50_006));
    assert!(every_shard_holds(&v, 50_006), "{v}");

    let full_v = t.json("/subsz?limit=100000");
    assert_eq!(full_v["total"], want_filters);
    assert_eq!(full_v["total_exact"], true);
    let full = filters_of(&full_v);
    assert_eq!(full.len(), want_filters as usize);

    let n = full.len();
    for offset in [0, 1, 25_000, n - 1, n] {
        for limit in [1, 7] {
            let v = t.json(&format!("/subsz?offset={offset}&limit={limit}"));
            let want: Vec<_> = full.iter().skip(offset).take(limit).cloned().collect();
            assert_eq!(filters_of(&v), want, "offset={offset} limit={limit}");
            // The listing shard counts no further than offset + limit + 1.
            let cap = offset + limit + 1;
            let exact = n < cap;
            assert_eq!(v["total_exact"], exact, "offset={offset} limit={limit}");
            if exact {
                assert_eq!(v["total"], want_filters);
            }
        }
    }
    let mut swept = Vec::new();
    for offset in (0..n).step_by(4096) {
        swept.extend(filters_of(
            &t.json(&format!("/subsz?offset={offset}&limit=4096")),
        ));
    }
    assert_eq!(swept, full, "pages of 4096 put together");

    // A queue group's members are counted per group.
    let jobs = full.iter().position(|f| f.0 == "jobs").unwrap();
    let v = t.json(&format!("/subsz?offset={jobs}&limit=1"));
    let entry = &v["filters"][0];
    assert_eq!(entry["filter"], "jobs");
    assert_eq!(
        (entry["plain"].as_u64(), entry["queued"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(
        entry["queues"],
        serde_json::json!([{"queue": "grp", "subscriptions": 2}, {"queue": "other", "subscriptions": 1}])
    );

    assert_eq!(t.get("/subsz?limit=100001").0, 400);
    assert_eq!(t.get("/subsz?offset=100001").0, 400);
}

#[test]
fn connz_pages_across_workers_in_every_order() {
    let t = Ternd::start();
    const N: u64 = 12;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = Client::connect(t.addr, &format!("c{i}"));
        for s in 0..i % 4 {
            c.send(format!("SUB x.{i}.{s} {s}\r\n").as_bytes());
        }
        c.flush();
        clients.push(c);
    }
    // Varied traffic: client i publishes (i * 7) % 5 messages to client i + 1's first
    // subscription (when it has one).
    let mut deliveries = 0;
    for i in 0..N {
        let to = (i + 1) % N;
        let msgs = (i * 7) % 5;
        let size = (i * 3) % 4 * 10;
        if to % 4 >= 1 {
            deliveries += msgs;
        }
        let c = &mut clients[i as usize];
        for _ in 0..msgs {
            c.send(format!("PUB x.{to}.0 {size}\r\n{}\r\n", "m".repeat(size as usize)).as_bytes());
        }
        c.flush();
    }
    t.json_until("/varz", |v| v["out_msgs"] == deliveries);
    for i in 0..3 {
        let mut c = Client::connect(t.addr, &format!("gone{i}"));
        c.flush();
    }
    t.json_until("/connz?state=closed", |v| v["total"] == 3);

    let cids = |q: &str| -> Vec<u64> {
        t.json(q)["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cid"].as_u64().unwrap())
            .collect()
    };
    let open = [
        "cid",
        "start",
        "subs",
        "pending",
        "msgs_to",
        "msgs_from",
        "bytes_to",
        "bytes_from",
        "last",
        "idle",
        "uptime",
    ];
    for (state, sorts) in [
        ("open", &open[..]),
        ("closed", &["stop", "reason", "cid"][..]),
        ("all", &["cid", "msgs_from", "subs", "uptime"][..]),
    ] {
        for sort in sorts {
            let full = cids(&format!("/connz?state={state}&sort={sort}&limit=100"));
            let count = match state {
                "open" => N,
                "closed" => 3,
                _ => N + 3,
            };
            assert_eq!(full.len() as u64, count, "{state} {sort}");
            for offset in 0..=full.len() {
                let one = cids(&format!(
                    "/connz?state={state}&sort={sort}&offset={offset}&limit=1"
                ));
                assert_eq!(
                    one,
                    full[offset..].iter().take(1).copied().collect::<Vec<_>>(),
                    "state={state} sort={sort} offset={offset}"
                );
            }
            let threes: Vec<u64> = (0..full.len())
                .step_by(3)
                .flat_map(|o| {
                    cids(&format!(
                        "/connz?state={state}&sort={sort}&offset={o}&limit=3"
                    ))
                })
                .collect();
            assert_eq!(threes, full, "state={state} sort={sort} by threes");
        }
    }
    let by_msgs = t.json("/connz?sort=msgs_from&limit=100");
    let sent: Vec<u64> = by_msgs["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["in_msgs"].as_u64().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] >= w[1]), "{sent:?}");
    assert_eq!(sent[0], 4);
}

//! The monitoring HTTP endpoint: `/healthz`, `/varz`, `/connz`, `/subsz`, `/shardz` and
//! `/metrics` (Prometheus text), served by `tiny_http` on its own thread (`tern-monitor`).
//!
//! Owns: the HTTP listener, the parsing of each endpoint's query, and the rendering of
//! JSON and Prometheus text. Counters come from the workers' [`WorkerStats`] (relaxed
//! loads, summed here); everything else (latency histograms, connections, subscriptions,
//! queue depths) comes from snapshots: the monitor sends each worker an
//! `Envelope::Snapshot` through the mesh and waits for the answers until
//! [`SNAPSHOT_TIMEOUT`]. A worker that does not answer in time is named in the response
//! (and makes `/healthz` answer 503); its parts are left out, never made up.
//!
//! Never: runs on a worker thread, takes a lock a worker takes, or touches a worker's
//! state except through the mesh. It answers one request at a time.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::{AdmissionConfig, Config, FlowConfig, Limits, QueueConfig, StoreConfig};
use crate::latency::{Latency, LatencySummary, QUANTILES};
use crate::mesh::{Envelope, Mesh};
use crate::snapshot::{rfc3339, unix_micros, ConnInfo, SnapshotRequest, Want, WorkerSnapshot};
use crate::stats::{families, Totals, WorkerStats};

/// How long the monitor waits for the workers' snapshots.
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(500);
/// `/connz` and `/subsz` page size when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 1024;

/// What the monitor reads: shared, read-only handles, set up by the server.
pub(crate) struct MonitorState {
    pub mesh: Mesh,
    pub stats: Vec<Arc<WorkerStats>>,
    pub config: Arc<Config>,
    pub server_id: String,
    pub listen: SocketAddr,
    pub monitor: SocketAddr,
    pub pinned: bool,
    pub started: SystemTime,
    pub started_at: Instant,
}

/// The running monitoring thread.
pub(crate) struct Monitor {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// Binds the monitoring listener (port 0 picks a free port). Separate from [`Monitor::spawn`]
/// so that a bind error stops the server before any worker starts.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<(tiny_http::Server, SocketAddr)> {
    let http = tiny_http::Server::http(addr).map_err(io::Error::other)?;
    let local = http.server_addr().to_ip().unwrap_or(addr);
    Ok((http, local))
}

impl Monitor {
    pub fn spawn(http: tiny_http::Server, state: MonitorState) -> io::Result<Monitor> {
        let http = Arc::new(http);
        let server = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name("tern-monitor".to_string())
            .spawn(move || {
                for req in server.incoming_requests() {
                    state.serve(req);
                }
            })?;
        Ok(Monitor {
            http,
            thread: Some(thread),
        })
    }

    /// Stops serving and waits for the thread to end.
    pub fn stop(mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP answer: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body: serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
        }
    }

    fn error(status: u16, text: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": text.into() }))
    }
}

/// The workers' answers to one snapshot request, and who did not answer.
struct Snapshots {
    workers: Vec<WorkerSnapshot>,
    missing: Vec<usize>,
}

impl Snapshots {
    fn latency(&self) -> Latency {
        let mut total = Latency::new();
        for l in self.workers.iter().filter_map(|w| w.latency.as_ref()) {
            total.merge(l);
        }
        total
    }
}

impl MonitorState {
    fn serve(&self, req: tiny_http::Request) {
        let url = req.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let query = Query::parse(query);
        let reply = if *req.method() != tiny_http::Method::Get {
            Reply::error(405, "only GET is supported")
        } else {
            match path.trim_end_matches('/') {
                "" => self.index(),
                "/healthz" => self.healthz(),
                "/varz" => self.varz(),
                "/connz" => self.connz(&query),
                "/subsz" => self.subsz(&query),
                "/shardz" => self.shardz(),
                "/metrics" => self.metrics(),
                _ => Reply::error(404, format!("no endpoint {path}")),
            }
        };
        debug!(%url, status = reply.status, "monitor request");
        let header = tiny_http::Header::from_bytes("Content-Type", reply.content_type)
            .expect("constant header is valid");
        let response = tiny_http::Response::from_string(reply.body)
            .with_status_code(reply.status)
            .with_header(header);
        if let Err(e) = req.respond(response) {
            debug!(error = %e, "monitor response not sent");
        }
    }

    /// Asks every worker for a snapshot and waits up to [`SNAPSHOT_TIMEOUT`] in all.
    fn snapshots(&self, want: Want) -> Snapshots {
        let n = self.mesh.workers();
        let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
        // Room for every answer: a worker never waits to reply.
        let (tx, rx) = crossbeam_channel::bounded(n);
        let mut asked = vec![false; n];
        for (worker, asked) in asked.iter_mut().enumerate() {
            let req = SnapshotRequest {
                want,
                reply: tx.clone(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            *asked = self
                .mesh
                .send_timeout(worker, vec![Envelope::Snapshot(req)], left);
        }
        drop(tx);
        let mut workers = Vec::with_capacity(n);
        while workers.len() < asked.iter().filter(|a| **a).count() {
            match rx.recv_deadline(deadline) {
                Ok(s) => workers.push(s),
                Err(_) => break,
            }
        }
        workers.sort_by_key(|w: &WorkerSnapshot| w.worker);
        let missing: Vec<usize> = (0..n)
            .filter(|i| !workers.iter().any(|w| w.worker == *i))
            .collect();
        if !missing.is_empty() {
            warn!(?missing, timeout = ?SNAPSHOT_TIMEOUT, "workers did not answer the monitor");
        }
        Snapshots { workers, missing }
    }

    fn totals(&self) -> Totals {
        Totals::sum(self.stats.iter().map(|s| s.as_ref()))
    }

    fn now_us(&self) -> u64 {
        unix_micros(SystemTime::now())
    }

    fn index(&self) -> Reply {
        Reply::json(
            200,
            &json!({
                "endpoints": ["/healthz", "/varz", "/connz", "/subsz", "/shardz", "/metrics"]
            }),
        )
    }

    fn healthz(&self) -> Reply {
        let s = self.snapshots(Want::default());
        if s.missing.is_empty() {
            Reply::json(200, &json!({ "status": "ok" }))
        } else {
            Reply::json(
                503,
                &json!({
                    "status": "unavailable",
                    "error": format!(
                        "worker(s) {} did not answer within {}ms",
                        join(&s.missing),
                        SNAPSHOT_TIMEOUT.as_millis()
                    ),
                    "unresponsive_workers": s.missing,
                }),
            )
        }
    }

    fn varz(&self) -> Reply {
        let totals = self.totals();
        let s = self.snapshots(Want {
            latency: true,
            ..Want::default()
        });
        let uptime = self.started_at.elapsed();
        let c = &self.config;
        let varz = Varz {
            server_id: &self.server_id,
            server_name: &c.server_name,
            version: env!("CARGO_PKG_VERSION"),
            proto: 1,
            host: self.listen.ip().to_string(),
            port: self.listen.port(),
            http_host: self.monitor.ip().to_string(),
            http_port: self.monitor.port(),
            workers: c.workers,
            pinned: self.pinned,
            start: rfc3339(unix_micros(self.started)),
            now: rfc3339(self.now_us()),
            uptime: human_duration(uptime),
            uptime_seconds: uptime.as_secs_f64(),
            limits: &c.limits,
            queues: &c.queues,
            flow: &c.flow,
            store: &c.store,
            admission: &c.admission,
            connections: totals.connections(),
            totals,
            latency_us: s.latency().summary(),
            unresponsive_workers: s.missing,
        };
        match serde_json::to_value(&varz) {
            Ok(v) => Reply::json(200, &v),
            Err(e) => Reply::error(500, format!("cannot render /varz: {e}")),
        }
    }

    fn connz(&self, q: &Query) -> Reply {
        let (offset, limit) = match q.paging() {
            Ok(p) => p,
            Err(e) => return Reply::error(400, e),
        };
        let state = q.get("state").unwrap_or("open");
        let (open, closed) = match state {
            "open" => (true, false),
            "closed" => (false, true),
            "all" | "any" => (true, true),
            _ => {
                return Reply::error(
                    400,
                    format!("state must be open, closed or all, not `{state}`"),
                )
            }
        };
        let sort = q.get("sort").unwrap_or("cid");
        let Some(key) = SortKey::parse(sort) else {
            return Reply::error(
                400,
                format!(
                    "cannot sort by `{sort}` (use one of: {})",
                    SortKey::NAMES.join(", ")
                ),
            );
        };
        if matches!(key, SortKey::Stop | SortKey::Reason) && open {
            return Reply::error(400, format!("sort={sort} needs state=closed"));
        }
        // `subs=detail` (as nats-server spells it) adds each subscription's queue.
        let detail = q.get("subs") == Some("detail");
        let with_subs = q.flag("subs") || detail;
        let s = self.snapshots(Want {
            conns: open,
            closed,
            conn_subs: with_subs,
            ..Want::default()
        });
        let now = self.now_us();
        let mut conns: Vec<ConnInfo> = Vec::new();
        for w in s.workers {
            conns.extend(w.conns);
            conns.extend(w.closed);
        }
        key.sort(&mut conns, now);
        let total = conns.len();
        let page: Vec<Value> = conns
            .iter()
            .skip(offset)
            .take(limit)
            .map(|c| conn_json(c, now, with_subs, detail))
            .collect();
        Reply::json(
            200,
            &json!({
                "server_id": self.server_id,
                "now": rfc3339(now),
                "num_connections": page.len(),
                "total": total,
                "offset": offset,
                "limit": limit,
                "state": state,
                "sort": sort,
                "connections": page,
                "unresponsive_workers": s.missing,
            }),
        )
    }

    fn subsz(&self, q: &Query) -> Reply {
        let (offset, limit) = match q.paging() {
            Ok(p) => p,
            Err(e) => return Reply::error(400, e),
        };
        let s = self.snapshots(Want {
            subs: true,
            ..Want::default()
        });
        let shards: Vec<Value> = s
            .workers
            .iter()
            .map(|w| {
                json!({
                    "shard": w.worker,
                    "subscriptions": w.shard.subscriptions,
                    "literal_subjects": w.shard.literal_subjects,
                    "queue_groups": w.shard.queue_groups,
                })
            })
            .collect();
        let mut subs: Vec<_> = s.workers.iter().flat_map(|w| w.subs.iter()).collect();
        subs.sort_by(|a, b| (&a.filter, a.shard).cmp(&(&b.filter, b.shard)));
        let total = subs.len();
        let page: Vec<Value> = subs
            .iter()
            .skip(offset)
            .take(limit)
            .map(|e| {
                let queued: usize = e.queues.iter().map(|(_, n)| n).sum();
                let queues: Vec<Value> = e
                    .queues
                    .iter()
                    .map(|(name, n)| json!({ "queue": name, "subscriptions": n }))
                    .collect();
                json!({
                    "filter": e.filter,
                    "shard": e.shard,
                    "subscriptions": e.plain + queued,
                    "plain": e.plain,
                    "queues": queues,
                })
            })
            .collect();
        Reply::json(
            200,
            &json!({
                "server_id": self.server_id,
                "now": rfc3339(self.now_us()),
                "num_subscriptions": self.totals().subscriptions,
                "shards": shards,
                "total": total,
                "offset": offset,
                "limit": limit,
                "filters": page,
                "unresponsive_workers": s.missing,
            }),
        )
    }

    fn shardz(&self) -> Reply {
        let s = self.snapshots(Want::default());
        let shards: Vec<Value> = (0..self.mesh.workers())
            .map(|i| {
                let depth = self.mesh.queue_len(i);
                match s.workers.iter().find(|w| w.worker == i) {
                    Some(w) => json!({
                        "shard": i,
                        "worker": i,
                        "literal_subjects": w.shard.literal_subjects,
                        "subscriptions": w.shard.subscriptions,
                        "queue_groups": w.shard.queue_groups,
                        "inbox_batches": depth,
                        "inbox_capacity": self.config.limits.worker_queue,
                        "inbox_bytes": self.mesh.queued_bytes(i),
                        "outbox_pending_batches": w.shard.outbox_pending_batches,
                        "answered": true,
                    }),
                    None => json!({
                        "shard": i,
                        "worker": i,
                        "inbox_batches": depth,
                        "inbox_capacity": self.config.limits.worker_queue,
                        "answered": false,
                    }),
                }
            })
            .collect();
        Reply::json(
            200,
            &json!({
                "server_id": self.server_id,
                "now": rfc3339(self.now_us()),
                "shards": shards,
                "unresponsive_workers": s.missing,
            }),
        )
    }

    fn metrics(&self) -> Reply {
        let s = self.snapshots(Want {
            latency: true,
            ..Want::default()
        });
        let mut p = Prom::default();
        let per_worker: Vec<Totals> = self.stats.iter().map(|w| Totals::of(w)).collect();
        p.family(
            "tern_info",
            "gauge",
            "Constant 1, labelled with the server's identity.",
        );
        p.sample(
            "tern_info",
            &format!(
                "server_id=\"{}\",server_name=\"{}\",version=\"{}\"",
                escape_label(&self.server_id),
                escape_label(&self.config.server_name),
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        );
        p.family(
            "tern_uptime_seconds",
            "gauge",
            "Seconds since ternd started.",
        );
        p.sample(
            "tern_uptime_seconds",
            "",
            self.started_at.elapsed().as_secs_f64(),
        );
        p.family("tern_workers", "gauge", "Worker threads (and shards).");
        p.sample("tern_workers", "", self.config.workers as f64);

        let name = "tern_connections";
        p.family(name, "gauge", "Open client connections.");
        for (w, t) in per_worker.iter().enumerate() {
            p.sample(name, &format!("worker=\"{w}\""), t.connections() as f64);
        }
        for f in families() {
            p.family(f.name, f.kind, f.help.trim());
            for (w, t) in per_worker.iter().enumerate() {
                let values = (f.values)(t);
                match f.label {
                    None => p.sample(f.name, &format!("worker=\"{w}\""), values[0] as f64),
                    Some((label, names)) => {
                        for (v, n) in names.iter().zip(values) {
                            p.sample(
                                f.name,
                                &format!("worker=\"{w}\",{label}=\"{v}\""),
                                *n as f64,
                            );
                        }
                    }
                }
            }
        }
        let name = "tern_inbox_batches";
        p.family(
            name,
            "gauge",
            "Batches waiting in the worker's inbound queue.",
        );
        for w in 0..self.mesh.workers() {
            p.sample(
                name,
                &format!("worker=\"{w}\""),
                self.mesh.queue_len(w) as f64,
            );
        }
        let snap_gauges: [SnapshotGauge; 6] = [
            (
                "tern_outbox_pending_batches",
                "Batches the worker could not send yet because a peer's queue was full.",
                |w| w.shard.outbox_pending_batches as u64,
            ),
            (
                "tern_outbound_pending_bytes",
                "Bytes queued to the worker's connections, summed.",
                |w| w.pending.bytes,
            ),
            (
                "tern_outbound_pending_messages",
                "Deliveries queued to the worker's connections, summed.",
                |w| w.pending.msgs,
            ),
            (
                "tern_outbound_pending_bytes_max",
                "Bytes queued to the worker's most backed-up connection.",
                |w| w.pending.max_bytes,
            ),
            (
                "tern_shard_subscriptions",
                "Subscriptions in the shard's index (a wildcard counts in every shard).",
                |w| w.shard.subscriptions as u64,
            ),
            (
                "tern_shard_literal_subjects",
                "Literal subjects with a subscription in the shard.",
                |w| w.shard.literal_subjects as u64,
            ),
        ];
        for (name, help, get) in snap_gauges {
            p.family(name, "gauge", help);
            for w in &s.workers {
                p.sample(name, &format!("worker=\"{}\"", w.worker), get(w) as f64);
            }
        }
        let name = "tern_monitor_unresponsive_workers";
        p.family(
            name,
            "gauge",
            "Workers that did not answer this scrape's snapshot request in time.",
        );
        p.sample(name, "", s.missing.len() as f64);

        let lat = s.latency();
        let name = "tern_delivery_latency_seconds";
        p.family(
            name,
            "summary",
            "Broker latency, from the loop turn that read a message to the write of a delivery's last byte, since start.",
        );
        for (q, _) in QUANTILES {
            p.sample(
                name,
                &format!("quantile=\"{q}\""),
                lat.hist.value_at_quantile(q) as f64 / 1e6,
            );
        }
        p.sample(&format!("{name}_sum"), "", lat.sum_micros as f64 / 1e6);
        p.sample(&format!("{name}_count"), "", lat.hist.len() as f64);
        Reply {
            status: 200,
            content_type: PROMETHEUS,
            body: p.out,
        }
    }
}

/// A gauge read from a worker's snapshot: name, help, value.
type SnapshotGauge = (&'static str, &'static str, fn(&WorkerSnapshot) -> u64);

/// `/varz`: who the server is, every setting it runs with (`config.rs`'s declarations), every
/// counter (`stats.rs`'s), and the broker latency.
#[derive(Serialize)]
struct Varz<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'static str,
    proto: u32,
    host: String,
    port: u16,
    http_host: String,
    http_port: u16,
    workers: usize,
    pinned: bool,
    start: String,
    now: String,
    uptime: String,
    uptime_seconds: f64,
    #[serde(flatten)]
    limits: &'a Limits,
    #[serde(flatten)]
    queues: &'a QueueConfig,
    #[serde(flatten)]
    flow: &'a FlowConfig,
    store: &'a StoreConfig,
    admission: &'a AdmissionConfig,
    /// Open connections now.
    connections: u64,
    #[serde(flatten)]
    totals: Totals,
    latency_us: LatencySummary,
    unresponsive_workers: Vec<usize>,
}

/// Prometheus text exposition (format 0.0.4).
#[derive(Default)]
struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/connz` sort orders, as nats-server names them. `cid` and `start` sort ascending,
/// everything else descending (the biggest first); ties go by `cid`.
#[derive(Debug, Clone, Copy)]
enum SortKey {
    Cid,
    Start,
    Subs,
    Pending,
    MsgsTo,
    MsgsFrom,
    BytesTo,
    BytesFrom,
    Last,
    Idle,
    Uptime,
    Stop,
    Reason,
}

impl SortKey {
    const NAMES: [&'static str; 13] = [
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
        "stop",
        "reason",
    ];

    fn parse(s: &str) -> Option<SortKey> {
        use SortKey::*;
        Some(match s {
            "cid" => Cid,
            "start" => Start,
            "subs" => Subs,
            "pending" => Pending,
            "msgs_to" => MsgsTo,
            "msgs_from" => MsgsFrom,
            "bytes_to" => BytesTo,
            "bytes_from" => BytesFrom,
            "last" => Last,
            "idle" => Idle,
            "uptime" => Uptime,
            "stop" => Stop,
            "reason" => Reason,
            _ => return None,
        })
    }

    fn sort(self, conns: &mut [ConnInfo], now: u64) {
        use std::cmp::Reverse;
        use SortKey::*;
        let end = |c: &ConnInfo| c.stop_us.unwrap_or(now);
        match self {
            Cid => conns.sort_by_key(|c| c.cid),
            Start => conns.sort_by_key(|c| (c.start_us, c.cid)),
            Subs => conns.sort_by_key(|c| (Reverse(c.subscriptions), c.cid)),
            Pending => conns.sort_by_key(|c| (Reverse(c.pending_bytes), c.cid)),
            MsgsTo => conns.sort_by_key(|c| (Reverse(c.out_msgs), c.cid)),
            MsgsFrom => conns.sort_by_key(|c| (Reverse(c.in_msgs), c.cid)),
            BytesTo => conns.sort_by_key(|c| (Reverse(c.out_bytes), c.cid)),
            BytesFrom => conns.sort_by_key(|c| (Reverse(c.in_bytes), c.cid)),
            Last => conns.sort_by_key(|c| (Reverse(c.last_activity_us), c.cid)),
            Idle => {
                conns.sort_by_key(|c| (Reverse(end(c).saturating_sub(c.last_activity_us)), c.cid))
            }
            Uptime => conns.sort_by_key(|c| (Reverse(end(c).saturating_sub(c.start_us)), c.cid)),
            Stop => conns.sort_by_key(|c| (Reverse(c.stop_us), c.cid)),
            Reason => conns.sort_by(|a, b| (&a.reason, a.cid).cmp(&(&b.reason, b.cid))),
        }
    }
}

fn conn_json(c: &ConnInfo, now: u64, with_subs: bool, detail: bool) -> Value {
    let end = c.stop_us.unwrap_or(now);
    let mut v = json!({
        "cid": c.cid,
        "worker": c.worker,
        "protocol": c.protocol,
        "ip": c.ip,
        "port": c.port,
        "start": rfc3339(c.start_us),
        "last_activity": rfc3339(c.last_activity_us),
        "uptime": human_duration(Duration::from_micros(end.saturating_sub(c.start_us))),
        "idle": human_duration(Duration::from_micros(end.saturating_sub(c.last_activity_us))),
        "pending_bytes": c.pending_bytes,
        "pending_msgs": c.pending_msgs,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "dropped_msgs": c.dropped_msgs,
        "queue_dropped_msgs": c.queue_dropped_msgs,
        "subscriptions": c.subscriptions,
    });
    let m = v.as_object_mut().expect("an object");
    for (k, val) in [
        ("name", &c.name),
        ("lang", &c.lang),
        ("version", &c.version),
    ] {
        if let Some(val) = val {
            m.insert(k.to_string(), json!(val));
        }
    }
    if let Some(stop) = c.stop_us {
        m.insert("stop".to_string(), json!(rfc3339(stop)));
    }
    if let Some(reason) = &c.reason {
        m.insert("reason".to_string(), json!(reason));
    }
    if with_subs && c.stop_us.is_none() {
        m.insert(
            "subscriptions_list".to_string(),
            json!(c.subscriptions_list),
        );
    }
    if detail && c.stop_us.is_none() {
        m.insert(
            "subscriptions_list_detail".to_string(),
            json!(c.subscriptions_detail),
        );
    }
    v
}

/// `1h2m3s`, `4m5s`, `6s`, `789ms` (nats-server's style).
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if days > 0 {
        let _ = write!(out, "{days}d");
    }
    if days > 0 || h > 0 {
        let _ = write!(out, "{h}h");
    }
    if days > 0 || h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    out
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A URL query: `a=1&b=2`, without percent-decoding (no value here needs it).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "1" | "true"))
    }

    fn number(&self, key: &str, default: usize) -> Result<usize, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("`{key}` must be a number, not `{v}`")),
        }
    }

    fn paging(&self) -> Result<(usize, usize), String> {
        Ok((
            self.number("offset", 0)?,
            self.number("limit", DEFAULT_LIMIT)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers whose queues nobody reads: neither answers (the inboxes are returned
    /// so they stay open and the monitor really waits).
    fn silent_workers() -> (MonitorState, Vec<crate::mesh::Inbox>) {
        let (mesh, inboxes) = Mesh::for_tests_open(2);
        let state = MonitorState {
            mesh,
            stats: vec![Arc::default(), Arc::default()],
            config: Arc::new(Config::default()),
            server_id: "TEST".to_string(),
            listen: "127.0.0.1:4222".parse().unwrap(),
            monitor: "127.0.0.1:8222".parse().unwrap(),
            pinned: false,
            started: SystemTime::now(),
            started_at: Instant::now(),
        };
        (state, inboxes)
    }

    #[test]
    fn silent_workers_make_healthz_503_and_are_named() {
        let (m, inboxes) = silent_workers();
        let start = Instant::now();
        let r = m.healthz();
        assert!(
            start.elapsed() >= SNAPSHOT_TIMEOUT,
            "it waited for the answers"
        );
        assert!(start.elapsed() < SNAPSHOT_TIMEOUT * 3);
        assert_eq!(
            inboxes[1].len(),
            1,
            "the request reached the worker's queue"
        );
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.body
                .contains("worker(s) 0, 1 did not answer within 500ms"),
            "{}",
            r.body
        );
        // Counters still come from the atomics; snapshot parts are left out, not zeroed.
        let m = m.metrics();
        assert!(m.body.contains("tern_monitor_unresponsive_workers 2\n"));
        assert!(m.body.contains("tern_messages_in_total{worker=\"1\"} 0\n"));
        assert!(!m.body.contains("tern_outbound_pending_bytes{"));
    }

    #[test]
    fn durations_read_like_nats() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(61)), "1m1s");
        assert_eq!(
            human_duration(Duration::from_secs(3600 * 25 + 2)),
            "1d1h0m2s"
        );
    }

    #[test]
    fn query_and_sort() {
        let q = Query::parse("limit=2&offset=1&sort=msgs_to&subs=1");
        assert_eq!(q.paging(), Ok((1, 2)));
        assert!(q.flag("subs"));
        assert!(Query::parse("limit=x").paging().is_err());
        let mut conns: Vec<ConnInfo> = (1..=3)
            .map(|i| ConnInfo {
                cid: i,
                out_msgs: [5, 9, 5][i as usize - 1],
                ..ConnInfo::default()
            })
            .collect();
        SortKey::parse("msgs_to").unwrap().sort(&mut conns, 0);
        let cids: Vec<u64> = conns.iter().map(|c| c.cid).collect();
        assert_eq!(cids, vec![2, 1, 3]);
        assert!(SortKey::parse("nope").is_none());
    }
}

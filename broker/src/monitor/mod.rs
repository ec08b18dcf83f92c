//! The monitoring endpoint: `/healthz`, `/varz`, `/connz`, `/subsz`, `/shardz` and
//! `/metrics` (Prometheus text), served by a bounded HTTP/1.1 server of our own
//! ([`http`]: one `mio` I/O thread, `tern-monitor`, and one responder thread,
//! `tern-monitor-snap`, that runs these endpoints one request at a time).
//!
//! Owns: the parsing of each endpoint's query, and the rendering of JSON and Prometheus
//! text. Counters come from the workers' [`WorkerStats`] (relaxed loads, summed here) and
//! from the monitor's own (`monitor_*`); everything else (latency histograms, connections,
//! subscriptions, queue depths) comes from snapshots: the monitor sends each worker an
//! `Envelope::Snapshot` through the mesh and waits for the answers until
//! [`SNAPSHOT_TIMEOUT`]. A worker that does not answer in time is named in the response
//! (and makes `/healthz` answer 503); its parts are left out, never made up.
//!
//! Never: runs on a worker thread, takes a lock a worker takes, touches a worker's state
//! except through the mesh, or echoes more than a short piece of what a client sent.

mod http;

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::{AdmissionConfig, Config, Limits, MonitorLimits, QueueConfig, StoreConfig};
use crate::latency::{Latency, LatencySummary, QUANTILES};
use crate::mesh::{Envelope, Mesh};
use crate::snapshot::{rfc3339, unix_micros, ConnInfo, SnapshotRequest, Want, WorkerSnapshot};
use crate::stats::{families, MonitorRefusal, Totals, WorkerStats};

pub(crate) use http::bind;
use http::{HttpLimits, HttpServer, Reply};

/// How long the monitor waits for the workers' snapshots.
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(500);
/// `/connz` and `/subsz` page size when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 1024;
/// Characters of a query value quoted back in an error.
const SHOWN_VALUE: usize = 64;

/// What the monitor reads: shared, read-only handles, set up by the server.
pub(crate) struct MonitorState {
    pub mesh: Mesh,
    /// The workers' counters, by worker.
    pub stats: Vec<Arc<WorkerStats>>,
    /// The monitor's own counters (`monitor_*`), written by its I/O thread only.
    pub own: Arc<WorkerStats>,
    pub config: Arc<Config>,
    pub server_id: String,
    pub listen: SocketAddr,
    pub monitor: SocketAddr,
    pub pinned: bool,
    pub started: SystemTime,
    pub started_at: Instant,
}

/// The running monitoring endpoint.
pub(crate) struct Monitor {
    http: HttpServer,
}

impl Monitor {
    /// Serves `listener` (from [`bind`]) with the endpoints of `state`.
    pub fn spawn(listener: mio::net::TcpListener, state: MonitorState) -> io::Result<Monitor> {
        let m = &state.config.monitoring;
        let limits = HttpLimits {
            max_connections: m.monitor_max_connections,
            max_head: m.monitor_max_request_head,
            timeout: m.monitor_request_timeout,
        };
        let own = Arc::clone(&state.own);
        let http = HttpServer::spawn(listener, limits, own, move |target: &str| {
            state.serve(target)
        })?;
        Ok(Monitor { http })
    }

    /// Stops serving and waits for its threads to end.
    pub fn stop(self) {
        self.http.stop();
    }
}

const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// A 400 for a query value that is not valid.
fn bad_query(text: impl Into<String>) -> Reply {
    Reply::refuse(400, MonitorRefusal::BadRequest, text)
}

impl MonitorState {
    /// Answers one request target (path and query). Runs on the responder thread.
    fn serve(&self, target: &str) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = Query::parse(query);
        let reply = match path.trim_end_matches('/') {
            "" => self.index(),
            "/healthz" => self.healthz(),
            "/varz" => self.varz(),
            "/connz" => self.connz(&query),
            "/subsz" => self.subsz(&query),
            "/shardz" => self.shardz(),
            "/metrics" => self.metrics(),
            _ => Reply::error(404, "no such endpoint (GET / lists them)"),
        };
        debug!(target = %shown(target), status = reply.status, "monitor request");
        reply
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
        Totals::sum(
            self.stats
                .iter()
                .chain(std::iter::once(&self.own))
                .map(|s| s.as_ref()),
        )
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
            monitoring: &c.monitoring,
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
            Err(e) => return bad_query(e),
        };
        let state = q.get("state").unwrap_or("open");
        let (open, closed) = match state {
            "open" => (true, false),
            "closed" => (false, true),
            "all" | "any" => (true, true),
            _ => {
                return bad_query(format!(
                    "state must be open, closed or all, not `{}`",
                    shown(state)
                ))
            }
        };
        let sort = q.get("sort").unwrap_or("cid");
        let Some(key) = SortKey::parse(sort) else {
            return bad_query(format!(
                "cannot sort by `{}` (use one of: {})",
                shown(sort),
                SortKey::NAMES.join(", ")
            ));
        };
        if matches!(key, SortKey::Stop | SortKey::Reason) && open {
            return bad_query(format!("sort={sort} needs state=closed"));
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
            Err(e) => return bad_query(e),
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
        // The monitor's own counters (`tern_monitor_*`) have no worker label; no worker
        // writes them, and the monitor writes nothing else.
        let own = [(None, Totals::of(&self.own))];
        let workers: Vec<(Option<usize>, Totals)> = per_worker
            .iter()
            .enumerate()
            .map(|(w, t)| (Some(w), *t))
            .collect();
        for f in families() {
            p.family(f.name, f.kind, f.help.trim());
            let sources = if f.name.starts_with("tern_monitor_") {
                &own[..]
            } else {
                &workers[..]
            };
            for (w, t) in sources {
                let worker = w.map(|w| format!("worker=\"{w}\""));
                let values = (f.values)(t);
                match f.label {
                    None => p.sample(f.name, worker.as_deref().unwrap_or(""), values[0] as f64),
                    Some((label, names)) => {
                        for (v, n) in names.iter().zip(values) {
                            let labels = match &worker {
                                Some(w) => format!("{w},{label}=\"{v}\""),
                                None => format!("{label}=\"{v}\""),
                            };
                            p.sample(f.name, &labels, *n as f64);
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
            refused: None,
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
    monitoring: &'a MonitorLimits,
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

/// At most [`SHOWN_VALUE`] characters of what a client sent, to quote it back.
fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOWN_VALUE) {
        Some((i, _)) => format!("{}...", &v[..i]),
        None => v.to_string(),
    }
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
                .map_err(|_| format!("`{key}` must be a number, not `{}`", shown(v))),
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
            own: Arc::default(),
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

    #[test]
    fn monitor_counters_have_no_worker_label() {
        let (m, _inboxes) = silent_workers();
        crate::stats::bump(
            &m.own.monitor_requests_refused[MonitorRefusal::Timeout as usize],
            3,
        );
        let body = m.metrics().body;
        assert!(
            body.contains("tern_monitor_requests_refused_total{reason=\"timeout\"} 3\n"),
            "{body}"
        );
        assert!(
            !body.contains("tern_monitor_requests_total{worker="),
            "{body}"
        );
        assert!(body.contains("tern_messages_in_total{worker=\"0\"} 0\n"));
        let v: Value = serde_json::from_str(&m.varz().body).unwrap();
        assert_eq!(v["monitor_requests_refused"]["timeout"], 3);
        assert_eq!(v["monitor_max_connections"], 64);
    }
}

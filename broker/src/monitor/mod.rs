//! The monitoring endpoint: `/healthz`, `/varz`, `/connz`, `/subsz`, `/shardz` and
//! `/metrics` (Prometheus text), served by a bounded HTTP/1.1 server of our own
//! ([`http`]: one `mio` I/O thread, `tern-monitor`, and one responder thread,
//! `tern-monitor-snap`, that runs these endpoints one request at a time).
//!
//! Owns: the parsing of each endpoint's query (with its bounds: `monitor_max_limit`,
//! `monitor_max_offset`), the paging of `/connz` and `/subsz` across workers ([`page`]),
//! and the rendering of JSON and Prometheus text. Counters come from the workers'
//! [`WorkerStats`] (relaxed loads, summed here) and from the monitor's own (`monitor_*`);
//! everything else (latency histograms, connections, subscriptions, queue depths) comes
//! from snapshots: the monitor sends each worker an `Envelope::Snapshot` through the mesh
//! and waits for the answers until [`SNAPSHOT_TIMEOUT`]. A worker that does not answer in
//! time is named in the response (and makes `/healthz` answer 503); its parts are left
//! out, never made up. Lame duck mode
//! is read from its shared switch (`lameduck.rs`): `/healthz` answers 503 at once while
//! it lasts, so load balancers drain the broker.
//!
//! Contract: a request costs each worker work bounded by the request, never a copy of
//! everything it holds: `/connz` ranks the first `offset + limit` connections in each
//! worker and then fetches the page's connections; `/subsz` counts each shard's filters up
//! to `offset + limit + 1` and then lists the page's (`snapshot.rs`). Nested lists (a
//! connection's subscriptions, a filter's queue groups) hold at most
//! `monitor_max_sublist` entries and share `monitor_max_list_bytes` per response, with the
//! full count always beside them. So every response has a bounded size.
//!
//! Never: runs on a worker thread, takes a lock a worker takes, touches a worker's state
//! except through the mesh, or echoes more than a short piece of what a client sent.

mod http;
mod page;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::{
    AdmissionConfig, Config, FlowConfig, Limits, MonitorLimits, QueueConfig, StoreConfig,
};
use crate::lameduck::LameDuck;
use crate::latency::{Latency, LatencySummary, QUANTILES};
use crate::mesh::{Envelope, Mesh};
use crate::server::{NATS_COMPATIBLE_VERSION, TERN_VERSION};
use crate::snapshot::{
    rfc3339, unix_micros, ConnInfo, ConnsWanted, FetchQuery, FiltersWanted, ListKind, RankQuery,
    SnapshotRequest, SortKey, SubsListing, Want, WorkerSnapshot,
};
use crate::stats::{families, MonitorRefusal, Totals, WorkerStats};
use crate::store::RecoveryReport;

pub(crate) use http::bind;
use http::{HttpLimits, HttpServer, Reply};

/// How long the monitor waits for the workers' snapshots (each of the two steps of a
/// `/connz` or `/subsz` page waits at most this long).
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(500);
/// `/connz` and `/subsz` page size when `limit` is not given (at most `monitor_max_limit`).
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
    /// Lame duck mode: `/healthz` answers 503 while it lasts, so load balancers drain us.
    pub lame_duck: Arc<LameDuck>,
    /// What opening each shard's ring log found at start (empty without a store).
    pub recovery: Vec<RecoveryReport>,
    /// The bridges to NATS clusters (`/bridgez`), if any.
    pub bridges: Option<Arc<tern_bridge::Hub>>,
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
            token: state.config.auth.monitor_token.clone(),
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
            "/presencez" => self.presencez(&query),
            "/metrics" => self.metrics(),
            "/bridgez" => self.bridgez(),
            _ => Reply::error(404, "no such endpoint (GET / lists them)"),
        };
        debug!(target = %shown(target), status = reply.status, "monitor request");
        reply
    }

    /// Asks the workers `want` names (each its own request) for a snapshot and waits up to
    /// [`SNAPSHOT_TIMEOUT`] in all. `missing` names the workers asked that did not answer.
    fn snapshots(&self, want: impl Fn(usize) -> Option<Want>) -> Snapshots {
        let n = self.mesh.workers();
        let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
        // Room for every answer: a worker never waits to reply.
        let (tx, rx) = crossbeam_channel::bounded(n);
        let mut wanted = Vec::with_capacity(n);
        let mut asked = 0;
        for worker in 0..n {
            let Some(want) = want(worker) else {
                continue;
            };
            wanted.push(worker);
            let req = SnapshotRequest {
                want,
                reply: tx.clone(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .mesh
                .send_timeout(worker, vec![Envelope::Snapshot(Box::new(req))], left)
            {
                asked += 1;
            }
        }
        drop(tx);
        let mut workers = Vec::with_capacity(asked);
        while workers.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(s) => workers.push(s),
                Err(_) => break,
            }
        }
        workers.sort_by_key(|w: &WorkerSnapshot| w.worker);
        let missing: Vec<usize> = wanted
            .into_iter()
            .filter(|i| !workers.iter().any(|w| w.worker == *i))
            .collect();
        if !missing.is_empty() {
            warn!(?missing, timeout = ?SNAPSHOT_TIMEOUT, "workers did not answer the monitor");
        }
        Snapshots { workers, missing }
    }

    /// Every worker's answer to the same `want`.
    fn snapshots_all(&self, want: Want) -> Snapshots {
        self.snapshots(|_| Some(want.clone()))
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

    /// `offset` and `limit`, within `monitor_max_offset` and `monitor_max_limit`.
    fn paging(&self, q: &Query) -> Result<(usize, usize), Reply> {
        let m = &self.config.monitoring;
        let offset = q.number("offset", 0).map_err(bad_query)?;
        let limit = q
            .number("limit", DEFAULT_LIMIT.min(m.monitor_max_limit))
            .map_err(bad_query)?;
        if limit > m.monitor_max_limit {
            return Err(Reply::refuse(
                400,
                MonitorRefusal::Paging,
                format!(
                    "limit must be at most {} (monitor_max_limit); page with offset",
                    m.monitor_max_limit
                ),
            ));
        }
        if offset > m.monitor_max_offset {
            return Err(Reply::refuse(
                400,
                MonitorRefusal::Paging,
                format!(
                    "offset must be at most {} (monitor_max_offset)",
                    m.monitor_max_offset
                ),
            ));
        }
        Ok((offset, limit))
    }

    fn index(&self) -> Reply {
        Reply::json(
            200,
            &json!({
                "endpoints": ["/healthz", "/varz", "/connz", "/subsz", "/shardz", "/presencez", "/bridgez", "/metrics"]
            }),
        )
    }

    fn healthz(&self) -> Reply {
        if self.lame_duck.is_on() {
            return Reply::json(
                503,
                &json!({
                    "status": "unavailable",
                    "error": "lame duck mode: not accepting connections, closing clients \
                              before shutting down",
                    "lame_duck": true,
                }),
            );
        }
        let s = self.snapshots_all(Want::default());
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
        let s = self.snapshots_all(Want {
            latency: true,
            ..Want::default()
        });
        let uptime = self.started_at.elapsed();
        let c = &self.config;
        let varz = Varz {
            server_id: &self.server_id,
            server_name: &c.server_name,
            version: NATS_COMPATIBLE_VERSION,
            tern_version: TERN_VERSION,
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
            monitoring: &c.monitoring,
            store: &c.store,
            admission: &c.admission,
            lame_duck: self.lame_duck.is_on(),
            recovery: &self.recovery,
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

    /// `/connz`: rank in every worker, merge, then fetch the page's connections.
    fn connz(&self, q: &Query) -> Reply {
        let (offset, limit) = match self.paging(q) {
            Ok(p) => p,
            Err(r) => return r,
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
        if key.needs_closed() && open {
            return bad_query(format!("sort={sort} needs state=closed"));
        }
        // `subs=detail` (as nats-server spells it) lists each subscription's queue.
        let kind = match q.get("subs") {
            Some("detail") => ListKind::Detail,
            _ if q.flag("subs") => ListKind::Filters,
            _ => ListKind::None,
        };
        let now = self.now_us();
        let rank = RankQuery {
            open,
            closed,
            sort: key,
            take: offset.saturating_add(limit),
            now_us: now,
        };
        let ranked = self.snapshots_all(Want {
            conns: Some(ConnsWanted::Rank(rank)),
            ..Want::default()
        });
        let mut missing = ranked.missing;
        let total: usize = ranked.workers.iter().map(|w| w.conns_total).sum();
        let pieces = ranked
            .workers
            .into_iter()
            .map(|w| (w.worker, w.ranked))
            .collect();
        let page = page::merge_page(pieces, offset, limit);

        let m = &self.config.monitoring;
        let subs = SubsListing {
            kind,
            max: m.monitor_max_sublist,
            max_bytes: m.monitor_max_list_bytes / page.len().max(1),
        };
        let mut cids: Vec<Vec<u64>> = vec![Vec::new(); self.mesh.workers()];
        for (worker, r) in &page {
            cids[*worker].push(r.cid);
        }
        for c in &mut cids {
            c.sort_unstable();
        }
        let fetched = self.snapshots(|w| {
            (!cids[w].is_empty()).then(|| Want {
                conns: Some(ConnsWanted::Fetch(FetchQuery {
                    cids: cids[w].clone(),
                    subs,
                })),
                ..Want::default()
            })
        });
        missing.extend(fetched.missing);
        missing.sort_unstable();
        missing.dedup();
        let mut by_cid: HashMap<u64, ConnInfo> = fetched
            .workers
            .into_iter()
            .flat_map(|w| w.conns)
            .map(|c| (c.cid, c))
            .collect();
        let conns: Vec<Value> = page
            .iter()
            .filter_map(|(_, r)| by_cid.remove(&r.cid))
            .map(|c| conn_json(&c, now, kind))
            .collect();
        Reply::json(
            200,
            &json!({
                "server_id": self.server_id,
                "now": rfc3339(now),
                "num_connections": conns.len(),
                "total": total,
                "offset": offset,
                "limit": limit,
                "state": state,
                "sort": sort,
                "connections": conns,
                "unresponsive_workers": missing,
            }),
        )
    }

    /// `/subsz`: count one shard's filters up to the page's end (every shard holds every
    /// subscription), then list the page's.
    fn subsz(&self, q: &Query) -> Reply {
        let (offset, limit) = match self.paging(q) {
            Ok(p) => p,
            Err(r) => return r,
        };
        // One more than the page needs: a shard that reaches it has more than the page.
        let cap = offset.saturating_add(limit).saturating_add(1);
        let counted = self.snapshots_all(Want {
            filters: Some(FiltersWanted::Count { cap }),
            ..Want::default()
        });
        let shards: Vec<Value> = counted
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
        // Every shard holds every subscription: the first to answer lists them.
        let counts: Vec<(usize, usize)> = counted
            .workers
            .iter()
            .take(1)
            .map(|w| (w.worker, w.filters_counted))
            .collect();
        let total: usize = counts.iter().map(|(_, n)| n).sum();
        let exact = !counts.is_empty() && counts.iter().all(|(_, n)| *n < cap);
        let slices = page::slices(&counts, offset, limit);
        let listed: usize = slices.iter().map(|s| s.take).sum();
        let m = &self.config.monitoring;
        let max_bytes = m.monitor_max_list_bytes / listed.max(1);
        let fetched = self.snapshots(|w| {
            slices.iter().find(|s| s.worker == w).map(|s| Want {
                filters: Some(FiltersWanted::List {
                    skip: s.skip,
                    take: s.take,
                    max_queues: m.monitor_max_sublist,
                    max_bytes,
                }),
                ..Want::default()
            })
        });
        let mut missing = counted.missing;
        missing.extend(fetched.missing);
        missing.sort_unstable();
        missing.dedup();
        let filters: Vec<Value> = fetched
            .workers
            .iter()
            .flat_map(|w| &w.subs)
            .map(|e| {
                let queues: Vec<Value> = e
                    .queues
                    .iter()
                    .map(|(name, n)| json!({ "queue": name, "subscriptions": n }))
                    .collect();
                json!({
                    "filter": e.filter,
                    "subscriptions": e.plain + e.queued,
                    "plain": e.plain,
                    "queued": e.queued,
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
                "total_exact": exact,
                "offset": offset,
                "limit": limit,
                "num_filters": filters.len(),
                "filters": filters,
                "unresponsive_workers": missing,
            }),
        )
    }

    /// `/presencez`: the largest presence rooms (`limit`, by member count), with the
    /// rooms and members in all. Each worker lists its own largest; the page merges them.
    fn presencez(&self, q: &Query) -> Reply {
        let (_, limit) = match self.paging(q) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let s = self.snapshots_all(Want {
            rooms: Some(limit),
            ..Want::default()
        });
        let mut largest: Vec<(&str, usize, usize)> = s
            .workers
            .iter()
            .flat_map(|w| w.rooms.iter().map(|(r, n)| (r.as_str(), *n, w.worker)))
            .collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        largest.truncate(limit);
        Reply::json(
            200,
            &json!({
                "rooms": s.workers.iter().map(|w| w.rooms_total).sum::<usize>(),
                "members": s.workers.iter().map(|w| w.members_total).sum::<usize>(),
                "largest": largest
                    .iter()
                    .map(|(subject, members, worker)| json!({
                        "subject": subject,
                        "members": members,
                        "worker": worker,
                    }))
                    .collect::<Vec<_>>(),
                "unresponsive_workers": s.missing,
            }),
        )
    }

    fn shardz(&self) -> Reply {
        let s = self.snapshots_all(Want::default());
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
                        "inbox_bytes_capacity": self.config.limits.worker_queue_bytes,
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
        let s = self.snapshots_all(Want {
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
                TERN_VERSION
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
        p.family(
            "tern_lame_duck",
            "gauge",
            "1 in lame duck mode (no new connections, clients being closed), else 0.",
        );
        p.sample(
            "tern_lame_duck",
            "",
            if self.lame_duck.is_on() { 1.0 } else { 0.0 },
        );

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
        self.bridge_metrics(&mut p);
        Reply {
            status: 200,
            content_type: PROMETHEUS,
            body: p.out,
            refused: None,
        }
    }
}

impl MonitorState {
    /// `/bridgez`: every bridge's state, counters, last error and export positions.
    fn bridgez(&self) -> Reply {
        let bridges = self
            .bridges
            .as_ref()
            .map(|h| h.status())
            .unwrap_or_default();
        Reply::json(
            200,
            &json!({
                "server_id": self.server_id,
                "now": rfc3339(self.now_us()),
                "bridges": bridges,
            }),
        )
    }

    /// The `tern_bridge_*` families, one sample per bridge (label `bridge`).
    fn bridge_metrics(&self, p: &mut Prom) {
        let Some(hub) = &self.bridges else {
            return;
        };
        let bridges = hub.status();
        type Get = fn(&tern_bridge::Status) -> u64;
        let families: [(&str, &str, &str, Get); 18] = [
            (
                "tern_bridge_connected",
                "gauge",
                "1 while the bridge is connected upstream.",
                |b| u64::from(b.state == "connected"),
            ),
            (
                "tern_bridge_connects_total",
                "counter",
                "Upstream connections made.",
                |b| b.connects,
            ),
            (
                "tern_bridge_disconnects_total",
                "counter",
                "Upstream connections lost.",
                |b| b.disconnects,
            ),
            (
                "tern_bridge_upstream_subscriptions",
                "gauge",
                "Subscriptions held upstream.",
                |b| b.upstream_subscriptions as u64,
            ),
            (
                "tern_bridge_exported_total",
                "counter",
                "Messages published upstream (resent ones included).",
                |b| b.exported,
            ),
            (
                "tern_bridge_exported_bytes_total",
                "counter",
                "Bytes published upstream.",
                |b| b.exported_bytes,
            ),
            (
                "tern_bridge_confirmed_total",
                "counter",
                "Exported messages upstream confirmed having.",
                |b| b.confirmed,
            ),
            (
                "tern_bridge_resent_total",
                "counter",
                "Messages exported again after a reconnect.",
                |b| b.resent,
            ),
            (
                "tern_bridge_unconfirmed",
                "gauge",
                "Exported and not confirmed yet: the export's lag.",
                |b| b.unconfirmed,
            ),
            (
                "tern_bridge_export_gaps_total",
                "counter",
                "Messages the log no longer held when an export resumed.",
                |b| b.export_gaps,
            ),
            (
                "tern_bridge_export_restarts_total",
                "counter",
                "Exports started over from their confirmed position after their local connection failed.",
                |b| b.export_restarts,
            ),
            (
                "tern_bridge_import_dropped_total",
                "counter",
                "Upstream messages dropped because the importer was import_buffer behind.",
                |b| b.import_dropped,
            ),
            (
                "tern_bridge_imported_total",
                "counter",
                "Upstream messages delivered locally.",
                |b| b.imported,
            ),
            (
                "tern_bridge_imported_bytes_total",
                "counter",
                "Bytes of upstream messages delivered locally.",
                |b| b.imported_bytes,
            ),
            (
                "tern_bridge_import_failed_total",
                "counter",
                "Upstream messages the local broker did not take in time.",
                |b| b.import_failed,
            ),
            (
                "tern_bridge_replies_out_total",
                "counter",
                "Local replies to upstream requesters.",
                |b| b.replies_out,
            ),
            (
                "tern_bridge_replies_in_total",
                "counter",
                "Upstream replies to local requesters.",
                |b| b.replies_in,
            ),
            (
                "tern_bridge_upstream_errors_total",
                "counter",
                "-ERR lines from upstream.",
                |b| b.upstream_errors,
            ),
        ];
        for (name, kind, help, get) in families {
            p.family(name, kind, help);
            for b in &bridges {
                p.sample(
                    name,
                    &format!("bridge=\"{}\"", escape_label(&b.name)),
                    get(b) as f64,
                );
            }
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
    /// As in `INFO`: the nats-server version Tern is compatible with.
    version: &'static str,
    tern_version: &'static str,
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
    #[serde(flatten)]
    monitoring: &'a MonitorLimits,
    store: &'a StoreConfig,
    admission: &'a AdmissionConfig,
    /// Lame duck mode has begun (SIGUSR2): no new connections, clients being closed.
    lame_duck: bool,
    /// What opening each shard's ring log found at start (records kept, what recovery
    /// repaired and where a damaged file was copied).
    recovery: &'a [RecoveryReport],
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

fn conn_json(c: &ConnInfo, now: u64, subs: ListKind) -> Value {
    let end = c.stop_us.unwrap_or(now);
    let mut v = json!({
        "cid": c.cid,
        "worker": c.worker,
        "protocol": c.protocol,
        "transport": c.transport,
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
        ("tls_peer_subject", &c.tls_peer),
        ("authorized_user", &c.user),
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
    if c.stop_us.is_none() {
        match subs {
            ListKind::None => {}
            ListKind::Filters => {
                m.insert(
                    "subscriptions_list".to_string(),
                    json!(c.subscriptions_list),
                );
            }
            ListKind::Detail => {
                m.insert(
                    "subscriptions_list_detail".to_string(),
                    json!(c.subscriptions_detail),
                );
            }
        }
    }
    v
}

/// At most [`SHOWN_VALUE`] characters of what a client sent, to quote it back.
fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOWN_VALUE) {
        Some((i, _)) => format!("{}...", &v[..i]),
        None => v.to_string(),
    }
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
                .map_err(|_| format!("`{key}` must be a number, not `{}`", shown(v))),
        }
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
            lame_duck: Arc::new(LameDuck::new(Instant::now())),
            recovery: Vec::new(),
            bridges: None,
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
    fn lame_duck_makes_healthz_503_at_once() {
        let (m, _inboxes) = silent_workers();
        assert!(m.lame_duck.enter(Instant::now()));
        let start = Instant::now();
        let r = m.healthz();
        assert!(
            start.elapsed() < SNAPSHOT_TIMEOUT,
            "no need to ask the workers"
        );
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("lame duck mode"), "{}", r.body);
        assert!(m.metrics().body.contains("tern_lame_duck 1\n"));
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
    fn query_values_and_paging_bounds() {
        let (m, _inboxes) = silent_workers();
        let q = Query::parse("limit=2&offset=1&sort=msgs_to&subs=1");
        assert_eq!(m.paging(&q).unwrap(), (1, 2));
        assert!(q.flag("subs"));
        assert_eq!(q.get("sort"), Some("msgs_to"));
        assert_eq!(m.paging(&Query::parse("")).unwrap(), (0, DEFAULT_LIMIT));
        let r = m.paging(&Query::parse("limit=x")).unwrap_err();
        assert_eq!(
            (r.status, r.refused),
            (400, Some(MonitorRefusal::BadRequest))
        );
        let r = m.paging(&Query::parse("limit=4097")).unwrap_err();
        assert_eq!((r.status, r.refused), (400, Some(MonitorRefusal::Paging)));
        assert!(r.body.contains("at most 4096"), "{}", r.body);
        let r = m.paging(&Query::parse("offset=100001")).unwrap_err();
        assert_eq!((r.status, r.refused), (400, Some(MonitorRefusal::Paging)));
        let long = "z".repeat(10_000);
        let r = m.connz(&Query::parse(&format!("sort={long}")));
        assert_eq!(r.status, 400);
        assert!(r.body.len() < 1024, "the value is not echoed whole");
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

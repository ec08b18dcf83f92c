//! `stuck`: one stuck subscriber among fast ones.
//!
//! Owns: the run and its figures. One publisher sends at a fixed rate (the paced publisher
//! of [`super::pacer`]: intended send times, coordinated omission corrected) to one
//! subject that `subscribers` fast subscribers read in full, each on its own connection
//! and thread, recording publish-to-deliver latency and every sequence number. On the same
//! broker, with the same connections, in this order:
//!
//! 1. **warm-up**: warm-up messages until every fast subscriber has one (each subscription
//!    is live), then `warmup` of publishing at the rate, not measured, so the first
//!    measured phase does not pay for cold caches, allocations and TCP ramp-up;
//! 2. **alone** (phase A): `duration` of publishing to the fast subscribers only, then a
//!    wait until each has every message (or the drain time passed);
//! 3. **with stuck** (phase B): one more subscriber on the same subject, connected through
//!    the same driver with a receive buffer of `recv_buffer` bytes set before connecting,
//!    subscribes, and from then on never reads ([`crate::driver::Stalled`]). Publishing
//!    starts as soon as its subscription is acknowledged — no settling time: what is
//!    measured is what happens while its queue in the broker fills — and lasts `duration`,
//!    then the same wait for the fast subscribers. The stuck one stays open until then.
//!
//! Every measured payload carries its phase and its sequence within the phase
//! ([`super::payload::stamp_origin`]: the phase number as the publisher id), so a message
//! of one phase delivered late is never counted in the other. Per phase: the fast
//! subscribers' latency percentiles (all of them merged), and per subscriber the messages
//! received, missed, duplicated and reordered. The fast subscribers must receive
//! everything: any missed, duplicated or reordered message, drop notice or disconnect of a
//! fast subscriber is a problem, and so is a p99 with the stuck subscriber more than
//! `max_p99_ratio` (2.0) times the p99 without it. Each measured phase is also a
//! [`Delivery`] — every delivery of the phase to the fast subscribers (duplicates and
//! unknown sequences included) of `published × subscribers`, with the server's CPU time
//! from the phase's first publish until the fast subscribers had everything — so the
//! count rule and `server CPU/msg` are the same as every other scenario's.
//!
//! Whether the broker disconnected the stuck subscriber is reported, not judged (a broker
//! may rightly close a consumer that stopped reading): its socket is watched for a reset
//! or hang-up while the phase runs, and probed once at the end (one `PING` written, never
//! a read; see [`crate::driver::stalled`]).
//!
//! Never: reads the stuck subscriber's socket, or lets it skew the figures of the phase
//! without it (it connects only after that phase is over).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::delivery::Delivery;
use super::pacer::{publish_paced, Paced};
use super::payload::{self, MEASURED, WARMUP};
use super::subscribers::{publish_until_warm, MAX_DRAIN};
use super::{Limit, DEFAULT_DRAIN, SYNC_TIMEOUT};
use crate::cpu::{CpuReading, ServerCpu};
use crate::driver::{Connection, Driver, DriverError, Stalled};
use crate::histogram::{LatencyHistogram, Percentiles};
use crate::report::{Better, Figure};

/// Messages per second, by default.
pub const DEFAULT_RATE: u64 = 10_000;
/// Fast subscribers, by default.
pub const DEFAULT_SUBSCRIBERS: usize = 10;
/// Payload bytes, by default.
pub const DEFAULT_SIZE: usize = 256;
/// How long each measured phase publishes, by default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3);
/// How long the unmeasured warm-up publishes at the rate, by default.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
/// The stuck subscriber's `SO_RCVBUF`, by default: small, so it stalls after a few
/// messages and the broker's queue for it starts filling at once.
pub const DEFAULT_RECV_BUFFER: usize = 4 * 1024;
/// The largest p99 with the stuck subscriber, as a multiple of the p99 without it, that
/// is not a problem (issue 5: "within 2x").
pub const MAX_P99_RATIO: f64 = 2.0;

/// How long one `receive` of a fast subscriber waits before it checks whether to stop.
const POLL: Duration = Duration::from_millis(20);
/// How often the main thread looks at the fast subscribers' progress while it waits.
const WAIT_STEP: Duration = Duration::from_millis(5);
/// How long the stuck subscriber's socket is watched per wait while phase B runs.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long the final probe waits for a reset after its `PING`.
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// The phases, in run order; each index is also the publisher id in the payloads.
const PHASES: usize = 3;
const WARM: usize = 0;
const ALONE: usize = 1;
const WITH_STUCK: usize = 2;

/// A stuck-subscriber run.
#[derive(Debug, Clone, Serialize)]
pub struct StuckConfig {
    /// Messages per second.
    pub rate: u64,
    /// Fast subscribers (each reads every message).
    pub subscribers: usize,
    /// Payload bytes (at least [`payload::ORIGIN_LEN`]; less is raised to it).
    pub size: usize,
    /// How long each measured phase publishes, in milliseconds in the JSON.
    #[serde(with = "super::duration_ms")]
    pub duration: Duration,
    /// How long the unmeasured warm-up publishes at the rate.
    #[serde(with = "super::duration_ms")]
    pub warmup: Duration,
    /// The stuck subscriber's `SO_RCVBUF`, as asked for.
    pub recv_buffer: usize,
    /// p99 with the stuck subscriber over p99 without it above which it is a problem.
    pub max_p99_ratio: f64,
    /// The subject.
    pub subject: String,
    /// How long without a delivery a phase waits for the rest of its messages.
    #[serde(skip)]
    pub drain: Duration,
}

impl Default for StuckConfig {
    fn default() -> Self {
        StuckConfig::new(
            DEFAULT_RATE,
            DEFAULT_SUBSCRIBERS,
            DEFAULT_SIZE,
            DEFAULT_DURATION,
        )
    }
}

impl StuckConfig {
    /// `rate` msgs/s of `size` bytes to `subscribers` fast subscribers on `bench.stuck`,
    /// each phase publishing for `duration`; the other settings at their defaults.
    pub fn new(rate: u64, subscribers: usize, size: usize, duration: Duration) -> Self {
        StuckConfig {
            rate,
            subscribers,
            size,
            duration,
            warmup: DEFAULT_WARMUP,
            recv_buffer: DEFAULT_RECV_BUFFER,
            max_p99_ratio: MAX_P99_RATIO,
            subject: "bench.stuck".into(),
            drain: DEFAULT_DRAIN,
        }
    }

    /// What the run is, e.g. `stuck 10 fast 10000/s 256B`.
    pub fn label(&self) -> String {
        format!(
            "stuck {} fast {}/s {}B",
            self.subscribers, self.rate, self.size
        )
    }

    /// The most messages one phase can publish (its schedule ends at `duration`): any
    /// sequence number at or above it was never sent.
    fn max_messages(&self) -> u64 {
        let interval_ns = 1_000_000_000 / self.rate.max(1);
        (self.duration.as_nanos() as u64).div_ceil(interval_ns) + 1
    }
}

/// What the fast subscribers saw in one measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Whether the stuck subscriber was there.
    pub with_stuck: bool,
    /// Messages published.
    pub published: u64,
    /// The publish rate achieved (should be the configured rate).
    pub achieved_rate: f64,
    /// How far behind its schedule the publisher fell, at worst, in nanoseconds (a broker
    /// that slows the publisher down shows up here).
    pub max_send_lag_ns: u64,
    /// `published × subscribers`.
    pub expected: u64,
    /// First deliveries of published messages, over all fast subscribers.
    pub received: u64,
    /// Published messages some fast subscriber never received (`expected − received`).
    pub missed: u64,
    /// Deliveries of a message a fast subscriber already had.
    pub duplicated: u64,
    /// First deliveries that came after a later message of the same phase.
    pub reordered: u64,
    /// Deliveries with a sequence number that was never published.
    pub unexpected: u64,
    /// Missed messages per fast subscriber, in subscriber order.
    pub missed_per_subscriber: Vec<u64>,
    /// Publish-to-deliver latency of every first delivery, from the intended send time.
    pub latency: Percentiles,
    /// The server's CPU time from the phase's first publish until the fast subscribers
    /// had everything (or the drain time passed).
    pub server_cpu: CpuReading,
}

impl PhaseResult {
    /// The phase's name in figures and problems.
    pub fn name(&self) -> &'static str {
        if self.with_stuck {
            "with stuck"
        } else {
            "alone"
        }
    }

    /// The phase as a measured window: every delivery to the fast subscribers of those
    /// owed, and the server's CPU over it.
    pub fn delivery(&self) -> Delivery {
        let delivered = self.received + self.duplicated + self.unexpected;
        Delivery::new(delivered, self.expected, self.server_cpu.clone()).in_phase(self.name())
    }

    /// True when every fast subscriber got every message once, in order.
    pub fn whole(&self) -> bool {
        self.missed == 0 && self.duplicated == 0 && self.reordered == 0 && self.unexpected == 0
    }

    fn problems(&self) -> Vec<String> {
        let name = self.name();
        let mut p = Vec::new();
        if self.missed > 0 {
            let worst: Vec<String> = self
                .missed_per_subscriber
                .iter()
                .enumerate()
                .filter(|(_, &m)| m > 0)
                .map(|(i, m)| format!("subscriber {i}: {m}"))
                .collect();
            p.push(format!(
                "{name}: the fast subscribers missed {} of {} messages ({})",
                self.missed,
                self.expected,
                worst.join(", ")
            ));
        }
        for (count, what) in [
            (self.duplicated, "duplicated"),
            (self.reordered, "reordered"),
            (self.unexpected, "never published (unknown sequence)"),
        ] {
            if count > 0 {
                p.push(format!("{name}: {count} deliveries {what}"));
            }
        }
        p
    }
}

/// What became of the stuck subscriber.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StuckSubscriber {
    /// Its receive buffer as the kernel sized it (`SO_RCVBUF` reads back twice the size
    /// asked for, at least the kernel's minimum).
    pub recv_buffer: Option<usize>,
    /// Whether the broker closed its connection by the end of phase B.
    pub disconnected: bool,
    /// How the close showed (a reset, the end of the stream, a failed write).
    pub how: Option<String>,
    /// When the close was seen while phase B ran, in milliseconds since it subscribed
    /// (`None` when it was found only by the final probe, or never).
    pub closed_after_ms: Option<f64>,
}

/// What a stuck-subscriber run measured.
#[derive(Debug, Clone, Serialize)]
pub struct StuckResult {
    /// The run.
    pub config: StuckConfig,
    /// Warm-up messages published at the rate (not measured).
    pub warmup_published: u64,
    /// Phase A: the fast subscribers alone.
    pub alone: PhaseResult,
    /// Phase B: the same, with the stuck subscriber (`None` when the run stopped before).
    pub with_stuck: Option<PhaseResult>,
    /// p99 with the stuck subscriber over p99 without it (`None` without both).
    pub p99_ratio: Option<f64>,
    /// The stuck subscriber.
    pub stuck: StuckSubscriber,
    /// Everything that went wrong.
    pub problems: Vec<String>,
}

impl StuckResult {
    /// The measured phases that ran, as windows.
    pub fn deliveries(&self) -> Vec<Delivery> {
        [Some(&self.alone), self.with_stuck.as_ref()]
            .into_iter()
            .flatten()
            .map(PhaseResult::delivery)
            .collect()
    }

    /// The figures a report shows and compares (latencies in µs).
    pub fn figures(&self) -> Vec<Figure> {
        let mut f = Vec::new();
        for phase in [Some(&self.alone), self.with_stuck.as_ref()]
            .into_iter()
            .flatten()
        {
            let name = phase.name();
            let l = &phase.latency;
            for (point, ns) in [("p50", l.p50_ns), ("p99", l.p99_ns), ("p99.9", l.p999_ns)] {
                f.push(Figure::new(
                    &format!("{name} {point}"),
                    ns as f64 / 1000.0,
                    "µs",
                    Better::Lower,
                ));
            }
            f.push(Figure::new(
                &format!("{name} received"),
                phase.received as f64,
                "msgs",
                Better::Neither,
            ));
            f.push(Figure::new(
                &format!("{name} missed"),
                phase.missed as f64,
                "msgs",
                Better::Neither,
            ));
            f.push(Figure::new(
                &format!("{name} max send lag"),
                phase.max_send_lag_ns as f64 / 1000.0,
                "µs",
                Better::Lower,
            ));
        }
        if let Some(ratio) = self.p99_ratio {
            f.push(Figure::new("p99 with/alone", ratio, "x", Better::Lower));
        }
        if self.with_stuck.is_some() {
            f.push(Figure::new(
                "stuck disconnected",
                if self.stuck.disconnected { 1.0 } else { 0.0 },
                "(1 = yes)",
                Better::Neither,
            ));
        }
        f
    }
}

/// Runs a stuck-subscriber scenario. An error means the run could not start (a fast
/// subscriber or the publisher could not connect, or the warm-up never reached every fast
/// subscriber); anything that fails later, the stuck subscriber's connection included, is
/// one of the result's problems, and the phases that ran keep their figures.
pub fn run(
    driver: &dyn Driver,
    config: &StuckConfig,
    server: ServerCpu,
) -> Result<StuckResult, DriverError> {
    let origin = Instant::now();
    let fast = Fast::start(driver, config, origin)?;
    let mut run = Run::default();
    let outcome = run_phases(driver, config, origin, &fast, server, &mut run);
    let outcomes = fast.finish();
    outcome?;

    let mut problems = run.problems;
    for (i, o) in outcomes.iter().enumerate() {
        if let Some(e) = &o.error {
            problems.push(format!("fast subscriber {i}: {e}"));
        }
        if o.dropped > 0 {
            problems.push(format!(
                "fast subscriber {i}: the broker reported dropping {} messages (DROP_NOTICE)",
                o.dropped
            ));
        }
    }
    let measured = |phase: usize| PhaseResult {
        server_cpu: run.cpu[phase].clone(),
        ..phase_result(phase, &run.paced[phase], &outcomes)
    };
    let alone = measured(ALONE);
    let with_stuck = run.stuck_ran.then(|| measured(WITH_STUCK));
    problems.extend(alone.problems());
    let mut p99_ratio = None;
    if let Some(with) = &with_stuck {
        problems.extend(with.problems());
        if alone.latency.p99_ns > 0 && with.latency.p99_ns > 0 {
            let ratio = with.latency.p99_ns as f64 / alone.latency.p99_ns as f64;
            p99_ratio = Some(ratio);
            if ratio > config.max_p99_ratio {
                problems.push(format!(
                    "with the stuck subscriber the fast subscribers' p99 is {ratio:.2}x their \
                     p99 alone ({:.0} µs vs {:.0} µs; the limit is {:.1}x)",
                    with.latency.p99_ns as f64 / 1000.0,
                    alone.latency.p99_ns as f64 / 1000.0,
                    config.max_p99_ratio
                ));
            }
        }
    }
    Ok(StuckResult {
        config: config.clone(),
        warmup_published: run.paced[WARM].sent,
        alone,
        with_stuck,
        p99_ratio,
        stuck: run.stuck,
        problems,
    })
}

/// What the phases did, filled in as they run (so a failure part way keeps the rest).
#[derive(Default)]
struct Run {
    paced: [Paced; PHASES],
    /// The server's CPU over each measured phase (not read for the warm-up).
    cpu: [CpuReading; PHASES],
    stuck_ran: bool,
    stuck: StuckSubscriber,
    problems: Vec<String>,
}

/// Warm-up, phase A, phase B, in order. An error is a failure to start; a publisher that
/// fails part way, or a stuck subscriber that cannot subscribe, is a problem in `run`
/// and ends the run there.
fn run_phases(
    driver: &dyn Driver,
    config: &StuckConfig,
    origin: Instant,
    fast: &Fast,
    server: ServerCpu,
    run: &mut Run,
) -> Result<(), DriverError> {
    let mut publisher = driver.connect()?;
    fast.warm_up(&mut *publisher, &config.subject, DEFAULT_DRAIN)?;
    let mut body = payload::build(config.size.max(payload::ORIGIN_LEN), MEASURED);

    for phase in [WARM, ALONE] {
        let limit = if phase == WARM {
            config.warmup
        } else {
            config.duration
        };
        let window = server.start();
        if !publish_phase(
            &mut *publisher,
            config,
            origin,
            phase,
            limit,
            &mut body,
            run,
        ) {
            return Ok(());
        }
        fast.wait_for(phase, run.paced[phase].sent, config.drain);
        if phase == ALONE {
            run.cpu[phase] = window.finish();
        }
    }

    // Phase B is measured from the stuck subscriber's SUB on: it connects, subscribes and
    // stops reading, and publishing starts at once.
    let subscribed = Instant::now();
    let stuck = match driver.connect_stalled(&config.subject, config.recv_buffer) {
        Ok(stuck) => stuck,
        Err(e) => {
            run.problems
                .push(format!("the stuck subscriber could not subscribe: {e}"));
            return Ok(());
        }
    };
    run.stuck_ran = true;
    run.stuck.recv_buffer = stuck.recv_buffer();
    let watch = Watch::start(stuck, subscribed);
    let window = server.start();
    publish_phase(
        &mut *publisher,
        config,
        origin,
        WITH_STUCK,
        config.duration,
        &mut body,
        run,
    );
    fast.wait_for(WITH_STUCK, run.paced[WITH_STUCK].sent, config.drain);
    run.cpu[WITH_STUCK] = window.finish();
    let (stuck, seen) = watch.stop();
    match seen {
        Some((how, after)) => {
            run.stuck.disconnected = true;
            run.stuck.how = Some(how);
            run.stuck.closed_after_ms = Some(after.as_secs_f64() * 1000.0);
        }
        None => {
            if let Some(how) = stuck.probe(PROBE_WAIT) {
                run.stuck.disconnected = true;
                run.stuck.how = Some(how);
            }
        }
    }
    // The stuck subscriber was open through the whole phase; it closes here.
    drop(stuck);
    Ok(())
}

/// Publishes one phase at the rate, its payloads stamped with the phase and their
/// sequence. False (and a problem) when the publisher failed.
fn publish_phase(
    publisher: &mut dyn Connection,
    config: &StuckConfig,
    origin: Instant,
    phase: usize,
    duration: Duration,
    body: &mut [u8],
    run: &mut Run,
) -> bool {
    let (paced, result) = publish_paced(
        publisher,
        &config.subject,
        config.rate,
        Limit::Duration(duration),
        origin,
        body,
        &mut |body, seq, intended_ns| {
            payload::stamp(body, intended_ns);
            payload::stamp_origin(body, phase as u32, seq);
        },
    );
    run.paced[phase] = paced;
    match result {
        Ok(()) => true,
        Err(e) => {
            run.problems.push(format!(
                "publisher, {}: {e}",
                ["warm-up", "alone", "with stuck"][phase]
            ));
            false
        }
    }
}

/// The stuck subscriber's socket, watched on a thread of its own while phase B runs.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Stalled, Option<(String, Duration)>)>,
}

impl Watch {
    fn start(stuck: Stalled, subscribed: Instant) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                if let Some(how) = stuck.wait_closed(WATCH_EVERY) {
                    return (stuck, Some((how, subscribed.elapsed())));
                }
            }
            (stuck, None)
        });
        Watch { stop, thread }
    }

    /// Stops watching; the socket, and how and when it was seen closed, if it was.
    fn stop(self) -> (Stalled, Option<(String, Duration)>) {
        self.stop.store(true, Ordering::Release);
        match self.thread.join() {
            Ok(out) => out,
            // The thread only polls; a panic there is a bug worth seeing.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// One fast subscriber's record of one phase.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// Sequence numbers received, one bit each.
    seen: Vec<u64>,
    /// First deliveries.
    unique: u64,
    duplicated: u64,
    reordered: u64,
    /// Sequences at or above the most a phase can publish (not kept in `seen`).
    beyond: u64,
    highest: Option<u64>,
    latency: LatencyHistogram,
}

impl Tally {
    /// Records a delivery of `seq`; true when it is the first.
    fn record(&mut self, seq: u64, max_messages: u64) -> bool {
        if seq >= max_messages {
            self.beyond += 1;
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        if self.highest.is_some_and(|h| seq < h) {
            self.reordered += 1;
        }
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        true
    }

    /// How many distinct sequences below `sent` were received.
    fn received_below(&self, sent: u64) -> u64 {
        let full = (sent / 64) as usize;
        let mut n: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = sent % 64;
        if rest > 0 {
            if let Some(w) = self.seen.get(full) {
                n += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        n
    }
}

/// What one fast subscriber saw over the whole run.
#[derive(Debug, Clone, Default)]
struct FastOutcome {
    phases: [Tally; PHASES],
    /// Why it stopped early, if it did.
    error: Option<String>,
    /// Messages the broker said it dropped for it (binary `DROP_NOTICE`).
    dropped: u64,
}

/// The per-phase figures from every fast subscriber's tally.
fn phase_result(phase: usize, paced: &Paced, outcomes: &[FastOutcome]) -> PhaseResult {
    let sent = paced.sent;
    let mut latency = LatencyHistogram::new();
    let mut r = PhaseResult {
        with_stuck: phase == WITH_STUCK,
        published: sent,
        achieved_rate: paced.rate(),
        max_send_lag_ns: paced.max_lag_ns,
        expected: sent * outcomes.len() as u64,
        received: 0,
        missed: 0,
        duplicated: 0,
        reordered: 0,
        unexpected: 0,
        missed_per_subscriber: Vec::with_capacity(outcomes.len()),
        latency: latency.percentiles(),
        server_cpu: CpuReading::NotWatched,
    };
    for o in outcomes {
        let t = &o.phases[phase];
        let got = t.received_below(sent);
        r.received += got;
        r.missed_per_subscriber.push(sent - got);
        r.duplicated += t.duplicated;
        r.reordered += t.reordered;
        r.unexpected += t.beyond + (t.unique - got);
        latency.merge(&t.latency);
    }
    r.missed = r.missed_per_subscriber.iter().sum();
    r.latency = latency.percentiles();
    r
}

/// State the fast subscribers share with the main thread.
struct Shared {
    origin: Instant,
    /// Fast subscribers that received a warm-up message.
    warmed: AtomicUsize,
    /// First deliveries per phase, over all fast subscribers.
    unique: [AtomicU64; PHASES],
    /// Nanoseconds since `origin` of the latest measured delivery.
    progress_ns: AtomicU64,
    /// Fast subscribers that stopped with an error.
    failed: AtomicUsize,
    stop: AtomicBool,
}

/// The fast subscribers: one connection and one thread each, for the whole run.
struct Fast {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<FastOutcome>>,
}

impl Fast {
    /// Connects and subscribes every fast subscriber, waits until the broker has
    /// processed each `SUB`, and starts their threads.
    fn start(
        driver: &dyn Driver,
        config: &StuckConfig,
        origin: Instant,
    ) -> Result<Fast, DriverError> {
        let mut conns = Vec::with_capacity(config.subscribers);
        for _ in 0..config.subscribers {
            let mut conn = driver.connect()?;
            conn.subscribe(&config.subject, None)?;
            conn.sync(SYNC_TIMEOUT)?;
            conns.push(conn);
        }
        let shared = Arc::new(Shared {
            origin,
            warmed: AtomicUsize::new(0),
            unique: std::array::from_fn(|_| AtomicU64::new(0)),
            progress_ns: AtomicU64::new(0),
            failed: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let max_messages = config.max_messages();
        let threads = conns
            .into_iter()
            .map(|conn| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || fast_loop(conn, &shared, max_messages))
            })
            .collect();
        Ok(Fast { shared, threads })
    }

    /// Publishes warm-up messages through `publisher` until every fast subscriber has
    /// received one (its subscription is live where the broker routes), or `timeout`.
    fn warm_up(
        &self,
        publisher: &mut dyn Connection,
        subject: &str,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        publish_until_warm(
            publisher,
            subject,
            timeout,
            || self.shared.warmed.load(Ordering::Acquire) >= self.threads.len(),
            || self.shared.failed.load(Ordering::Acquire) > 0,
            "every fast subscriber to receive a warm-up",
        )
    }

    /// Waits until the fast subscribers have every one of the `sent` messages of
    /// `phase`, or nothing arrived for `idle`, or [`MAX_DRAIN`] passed.
    fn wait_for(&self, phase: usize, sent: u64, idle: Duration) {
        let s = &self.shared;
        let target = sent * self.threads.len() as u64;
        let started = s.origin.elapsed().as_nanos() as u64;
        loop {
            if s.unique[phase].load(Ordering::Acquire) >= target {
                return;
            }
            let now = s.origin.elapsed().as_nanos() as u64;
            let quiet_since = started.max(s.progress_ns.load(Ordering::Acquire));
            if now.saturating_sub(quiet_since) >= idle.as_nanos() as u64
                || now.saturating_sub(started) >= MAX_DRAIN.as_nanos() as u64
            {
                return;
            }
            thread::sleep(WAIT_STEP);
        }
    }

    /// Stops every fast subscriber and returns what each saw.
    fn finish(self) -> Vec<FastOutcome> {
        self.shared.stop.store(true, Ordering::Release);
        self.threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| FastOutcome {
                    error: Some("subscriber thread panicked".into()),
                    ..FastOutcome::default()
                })
            })
            .collect()
    }
}

/// One fast subscriber: reads everything until told to stop, recording each measured
/// delivery in its phase's tally.
fn fast_loop(mut conn: Box<dyn Connection>, shared: &Shared, max_messages: u64) -> FastOutcome {
    let mut out = FastOutcome::default();
    let mut warmed = false;
    while !shared.stop.load(Ordering::Acquire) {
        let mut saw_warmup = false;
        let mut firsts = [0u64; PHASES];
        let phases = &mut out.phases;
        let result = conn.receive(POLL, &mut |p| match payload::kind(p) {
            Some(WARMUP) => saw_warmup = true,
            Some(MEASURED) => {
                let now = shared.origin.elapsed().as_nanos() as u64;
                let (Some((id, seq)), Some(intended)) =
                    (payload::origin(p), payload::intended_ns(p))
                else {
                    return;
                };
                let Some(tally) = phases.get_mut(id as usize) else {
                    return;
                };
                if tally.record(seq, max_messages) {
                    tally.latency.record(now.saturating_sub(intended));
                    firsts[id as usize] += 1;
                }
            }
            _ => {}
        });
        if saw_warmup && !warmed {
            warmed = true;
            shared.warmed.fetch_add(1, Ordering::AcqRel);
        }
        if firsts.iter().any(|&n| n > 0) {
            for (phase, n) in firsts.into_iter().enumerate() {
                shared.unique[phase].fetch_add(n, Ordering::AcqRel);
            }
            shared
                .progress_ns
                .fetch_max(shared.origin.elapsed().as_nanos() as u64, Ordering::AcqRel);
        }
        out.dropped = conn.dropped();
        if let Err(e) = result {
            out.error = Some(e.to_string());
            shared.failed.fetch_add(1, Ordering::AcqRel);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_firsts_duplicates_reorders_and_strays() {
        let mut t = Tally::default();
        for seq in [0, 1, 2, 5, 3, 3, 200, 70] {
            t.record(seq, 100);
        }
        // 0 1 2 5 3 70 are firsts; the second 3 is a duplicate; 200 is beyond what a
        // phase can send; the first 3 came after a later message (5): reordered.
        assert_eq!(t.unique, 6);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.beyond, 1);
        assert_eq!(t.received_below(100), 6);
        assert_eq!(t.received_below(6), 5);
        assert_eq!(t.received_below(64), 5);
        assert_eq!(t.received_below(71), 6);
        assert_eq!(t.received_below(0), 0);
    }

    fn outcome(phase: usize, seqs: &[u64]) -> FastOutcome {
        let mut o = FastOutcome::default();
        for &s in seqs {
            if o.phases[phase].record(s, 1000) {
                o.phases[phase].latency.record(1000);
            }
        }
        o
    }

    #[test]
    fn a_phase_adds_up_its_subscribers_and_names_who_missed() {
        let paced = Paced {
            sent: 4,
            elapsed: Duration::from_secs(1),
            max_lag_ns: 0,
        };
        let outcomes = [outcome(ALONE, &[0, 1, 2, 3]), outcome(ALONE, &[0, 2, 2, 9])];
        let r = phase_result(ALONE, &paced, &outcomes);
        assert_eq!((r.expected, r.received, r.missed), (8, 6, 2));
        assert_eq!(r.missed_per_subscriber, vec![0, 2]);
        assert_eq!((r.duplicated, r.unexpected), (1, 1));
        assert_eq!(r.latency.count, 7);
        assert!(!r.whole());
        let problems = r.problems();
        assert_eq!(
            problems[0],
            "alone: the fast subscribers missed 2 of 8 messages (subscriber 1: 2)"
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        // The totals add up (a duplicate and an unknown sequence make up for two
        // missed): the count rule passes, the sequence check above is what catches it.
        let d = r.delivery();
        assert_eq!((d.phase, d.delivered, d.expected), (Some("alone"), 8, 8));
        assert_eq!(d.problem(), None);
        // Phase B's tallies are its own.
        let b = phase_result(WITH_STUCK, &paced, &outcomes);
        assert_eq!((b.received, b.missed), (0, 8));
        assert_eq!(b.name(), "with stuck");
    }

    #[test]
    fn the_schedule_bounds_the_sequences() {
        let c = StuckConfig::new(1000, 1, 256, Duration::from_millis(10));
        assert_eq!(c.max_messages(), 11);
        assert_eq!(c.label(), "stuck 1 fast 1000/s 256B");
    }
}

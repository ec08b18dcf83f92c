//! `audience`: a real-time audience — many users in rooms of very different sizes, talking
//! at a human rate, coming and going, and all dropping at once.
//!
//! Owns: the scenario's configuration ([`AudienceConfig`]), running it (threads, the
//! start, the deadline) and its figures ([`AudienceResult`]). The parts live in
//! submodules: [`rooms`] (Zipf room sizes and the viral room), [`random`] (seeded
//! randomness, Poisson gaps, backoff with full jitter), [`accounting`] (what each
//! subscriber was owed, missed and got twice) and `crowd` (the users' state machines,
//! many connections per thread over `ppoll`).
//!
//! The shape:
//!
//! - `users` users, each one connection subscribed to its room's subject. One *viral* room
//!   holds `viral_fraction` of them; the others are spread over `rooms` rooms with
//!   Zipf-distributed sizes (`zipf_exponent`).
//! - Every user publishes to its room at a human rate: a Poisson process with mean gap
//!   `message_interval`. Each payload carries the publisher's id, its per-publisher
//!   sequence and its send time; every member (the publisher too: echo is on) receives it.
//! - **Churn:** users leave at `churn` per second over the whole audience (each live user's
//!   session is exponential with mean `users / churn` seconds), stay away an exponential
//!   time with mean `away`, and come back to the same room.
//! - **Reconnect storm:** at `storm_at` every connected user closes its connection at once
//!   and reconnects with exponential backoff and full jitter (`backoff_base`,
//!   `backoff_cap`); a user that is not back within `reconnect_timeout` gives up.
//! - A user is *joined* (or *resubscribed*) when its own join message, published to its
//!   room after subscribing, comes back: only then is its subscription known to be live
//!   where the broker routes the room (a `PONG` does not prove that on every broker).
//!
//! Figures: publish-to-deliver latency p50/p95/p99 per room size class (small < 10
//! members, medium < 100, large, viral), measured from the send time in the payload;
//! reconnect time (drop to resubscribed) p50/p99/max and churn rejoin time; and messages
//! missed, duplicated and reordered per subscriber, by the rule in [`accounting`]: a
//! subscriber is owed what was sent while it was known live, up to its leave (after which
//! it lingers for what was in flight, at most `linger`) or, after an abrupt drop, up to
//! the last message it received (what was in flight is `cut_by_drop`, not missed).
//!
//! **Presence** (`presence`, off by default): every user also joins its room's presence
//! (`$TERN.PRESENCE.JOIN.<room>`) on each connection, leaves it explicitly when it leaves
//! (churn, the end) and by closing when it drops (the storm); an observer connection
//! counts the events, times how long after the storm the rooms' counts are right again,
//! and, once publishing stopped and the grace window passed, checks every room's member
//! list against who the harness knows is in it. The figures and their exact definitions
//! are in [`presence`]. Text protocol only.
//!
//! Never: prints, or waits without a deadline — the run is aborted (and says so) if
//! it has not finished `duration + linger + reconnect_timeout + 20 s` (with presence, plus
//! [`PresenceConfig::settle_budget`]) after it started.

pub mod accounting;
mod crowd;
pub mod presence;
pub mod random;
pub mod rooms;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use self::accounting::{PublishLog, Tally};
use self::crowd::{CrowdStats, Plan, User};
use self::presence::{PresenceConfig, PresenceResult};
use self::random::{Backoff, Rng};
use self::rooms::SizeClass;
use crate::driver::Driver;
use crate::histogram::LatencyHistogram;
use crate::report::{Better, Figure};

/// How long every user together may take to join before publishing starts anyway.
pub const JOIN_ALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Slack on top of the run's own timeouts before it is aborted.
const ABORT_SLACK: Duration = Duration::from_secs(20);

/// An audience run.
#[derive(Debug, Clone, Serialize)]
pub struct AudienceConfig {
    /// Users (one connection each).
    pub users: usize,
    /// Ordinary rooms (Zipf ranks); empty ones are left out.
    pub rooms: usize,
    /// Zipf exponent of ordinary room sizes (0: uniform; 1: classic Zipf).
    pub zipf_exponent: f64,
    /// Fraction of users in the one viral room (0: none).
    pub viral_fraction: f64,
    /// Mean gap between one user's messages (Poisson).
    #[serde(with = "secs")]
    pub message_interval: Duration,
    /// Payload bytes (at least [`crate::scenario::payload::ORIGIN_LEN`]).
    pub size: usize,
    /// How long users publish.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Users leaving per second, over the whole audience (0: no churn).
    pub churn: f64,
    /// Mean time a user who left stays away (exponential).
    #[serde(with = "secs")]
    pub away: Duration,
    /// When every connection drops at once, from the start of publishing (`None`: never;
    /// at or after `duration`: never).
    #[serde(with = "opt_secs")]
    pub storm_at: Option<Duration>,
    /// Backoff window of the first reconnect attempt.
    #[serde(with = "secs")]
    pub backoff_base: Duration,
    /// Largest backoff window.
    #[serde(with = "secs")]
    pub backoff_cap: Duration,
    /// A user not resubscribed this long after its drop gives up.
    #[serde(with = "secs")]
    pub reconnect_timeout: Duration,
    /// How long a leaving user waits for the messages it is owed.
    #[serde(with = "secs")]
    pub linger: Duration,
    /// Threads playing the users.
    pub threads: usize,
    /// Seed of every random choice (rooms, gaps, jitter).
    pub seed: u64,
    /// Subjects are `<prefix>.viral` and `<prefix>.room.<rank>`.
    pub subject_prefix: String,
    /// Presence: users join their rooms' presence and an observer checks it (`None`: off,
    /// and the run is as without it).
    pub presence: Option<PresenceConfig>,
}

impl Default for AudienceConfig {
    /// 500 users in 20 rooms (Zipf 1.0) plus a viral room of 20 %, one message per user
    /// every 3 s, 20 s, churn 5 users/s away 2 s, a storm at 10 s: modest for a 2-core
    /// machine that also runs the broker.
    fn default() -> Self {
        AudienceConfig {
            users: 500,
            rooms: 20,
            zipf_exponent: 1.0,
            viral_fraction: 0.2,
            message_interval: Duration::from_secs(3),
            size: 64,
            duration: Duration::from_secs(20),
            churn: 5.0,
            away: Duration::from_secs(2),
            storm_at: Some(Duration::from_secs(10)),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            reconnect_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            threads: 2,
            seed: 1,
            subject_prefix: "audience".into(),
            presence: None,
        }
    }
}

impl AudienceConfig {
    /// The reconnect backoff.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_base,
            cap: self.backoff_cap,
        }
    }

    /// The mean session of one user under churn (`users / churn` seconds), `None` without
    /// churn.
    pub fn mean_session(&self) -> Option<Duration> {
        (self.churn > 0.0 && self.churn.is_finite())
            .then(|| Duration::from_secs_f64(self.users.max(1) as f64 / self.churn))
    }

    /// The label that matches runs across targets.
    pub fn label(&self) -> String {
        let presence = if self.presence.is_some() {
            " presence"
        } else {
            ""
        };
        format!(
            "audience {} users {} rooms{presence}",
            self.users, self.rooms
        )
    }
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// Latency of one room size class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassLatency {
    /// The class.
    pub class: SizeClass,
    /// Rooms in it.
    pub rooms: usize,
    /// Users in those rooms.
    pub users: usize,
    /// Deliveries measured.
    pub deliveries: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 95th percentile, ns.
    pub p95_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

/// A distribution of times (reconnect, rejoin), in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Times {
    /// How many.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Times {
    fn of(h: &LatencyHistogram) -> Option<Times> {
        let ms = |ns: u64| ns as f64 / 1e6;
        (h.count() > 0).then(|| Times {
            count: h.count(),
            p50_ms: ms(h.quantile(0.50)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.quantile(1.0)),
        })
    }
}

/// A subscriber that missed or got duplicates.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberLoss {
    /// The user.
    pub user: u32,
    /// Its room's subject.
    pub room: String,
    /// What it was owed and missed.
    pub tally: Tally,
    /// Deliveries of a message it already had.
    pub duplicated: u64,
    /// New messages below one already received from the same publisher.
    pub reordered: u64,
}

/// What an audience run measured.
#[derive(Debug, Clone, Serialize)]
pub struct AudienceResult {
    /// The run.
    pub config: AudienceConfig,
    /// Members per room: `(subject, class, members)`, viral first.
    pub rooms: Vec<(String, SizeClass, usize)>,
    /// Messages published (join messages not counted).
    pub published: u64,
    /// Messages delivered, all subscribers (duplicates included).
    pub delivered: u64,
    /// Over all subscribers: owed, missed, cut by a drop.
    pub tally: Tally,
    /// Deliveries of a message the subscriber already had.
    pub duplicated: u64,
    /// Deliveries out of per-publisher order.
    pub reordered: u64,
    /// Subscribers that missed at least one owed message.
    pub subscribers_missing: usize,
    /// The most one subscriber missed.
    pub max_missed_per_subscriber: u64,
    /// Subscribers that received at least one duplicate.
    pub subscribers_with_duplicates: usize,
    /// Publish-to-deliver latency per size class (classes without rooms left out).
    pub latency: Vec<ClassLatency>,
    /// Drop to resubscribed.
    pub reconnect: Option<Times>,
    /// Back from away to resubscribed (churn).
    pub rejoin: Option<Times>,
    /// Users whose first join completed before publishing started.
    pub joined_before_start: usize,
    /// Connections the storm closed.
    pub storm_drops: u64,
    /// Reconnects completed.
    pub reconnects: u64,
    /// Churn leaves.
    pub churn_leaves: u64,
    /// Churn rejoins completed.
    pub rejoins: u64,
    /// Reconnects given up after `reconnect_timeout`.
    pub gave_up: u64,
    /// Failed connection attempts (retried).
    pub connect_failures: u64,
    /// Joins that timed out (retried).
    pub join_timeouts: u64,
    /// Leaves whose linger ran out first.
    pub linger_timeouts: u64,
    /// Connections the broker closed or failed.
    pub disconnects: u64,
    /// Messages the broker reported dropping (binary `DROP_NOTICE`).
    pub dropped_by_broker: u64,
    /// How late a publish went out after its scheduled time, at worst (ns).
    pub max_send_lag_ns: u64,
    /// Subscribers that missed or got duplicates, worst first (at most 100).
    pub lossy_subscribers: Vec<SubscriberLoss>,
    /// Presence's figures (with presence only).
    pub presence: Option<PresenceResult>,
    /// Everything that went wrong.
    pub problems: Vec<String>,
}

impl AudienceResult {
    /// The figures a report shows and compares.
    pub fn figures(&self) -> Vec<Figure> {
        let mut f = vec![
            Figure::new("published", self.published as f64, "msgs", Better::Neither),
            Figure::new("delivered", self.delivered as f64, "msgs", Better::Neither),
            Figure::new("owed", self.tally.expected as f64, "msgs", Better::Neither),
            Figure::new("missed", self.tally.missed as f64, "msgs", Better::Lower),
            Figure::new(
                "subscribers missing",
                self.subscribers_missing as f64,
                "users",
                Better::Lower,
            ),
            Figure::new(
                "max missed per user",
                self.max_missed_per_subscriber as f64,
                "msgs",
                Better::Lower,
            ),
            Figure::new("duplicated", self.duplicated as f64, "msgs", Better::Lower),
            Figure::new(
                "subscribers duplicated",
                self.subscribers_with_duplicates as f64,
                "users",
                Better::Lower,
            ),
        ];
        for c in &self.latency {
            let name = c.class.name();
            for (q, ns) in [("p50", c.p50_ns), ("p95", c.p95_ns), ("p99", c.p99_ns)] {
                f.push(Figure::new(
                    &format!("{name} {q}"),
                    ns as f64 / 1000.0,
                    "µs",
                    Better::Lower,
                ));
            }
        }
        if let Some(r) = &self.reconnect {
            f.push(Figure::new(
                "reconnects",
                r.count as f64,
                "users",
                Better::Neither,
            ));
            f.push(Figure::new("reconnect p50", r.p50_ms, "ms", Better::Lower));
            f.push(Figure::new("reconnect p99", r.p99_ms, "ms", Better::Lower));
            f.push(Figure::new("reconnect max", r.max_ms, "ms", Better::Lower));
        }
        if let Some(r) = &self.rejoin {
            f.push(Figure::new("rejoin p50", r.p50_ms, "ms", Better::Lower));
            f.push(Figure::new("rejoin p99", r.p99_ms, "ms", Better::Lower));
        }
        f.push(Figure::new(
            "max send lag",
            self.max_send_lag_ns as f64 / 1000.0,
            "µs",
            Better::Lower,
        ));
        if let Some(p) = &self.presence {
            f.extend(presence_figures(p));
        }
        f
    }
}

/// Presence's figures (definitions in [`presence`]).
fn presence_figures(p: &PresenceResult) -> Vec<Figure> {
    let mut f = vec![
        Figure::new(
            "presence events/s",
            p.events_per_sec,
            "events/s",
            Better::Neither,
        ),
        Figure::new(
            "presence events",
            p.events() as f64,
            "events",
            Better::Neither,
        ),
        Figure::new(
            "presence suppressed",
            p.suppressed as f64,
            "events",
            Better::Neither,
        ),
    ];
    if let Some(ms) = p.right_after_storm_ms {
        f.push(Figure::new(
            "presence right after storm",
            ms,
            "ms",
            Better::Lower,
        ));
    }
    if p.checked {
        f.push(Figure::new(
            "presence mismatches",
            p.mismatches() as f64,
            "users",
            Better::Lower,
        ));
    }
    f
}

/// Runs an audience. Never fails: whatever went wrong is in `problems`.
pub fn run(driver: &dyn Driver, config: &AudienceConfig) -> AudienceResult {
    let mut problems = Vec::new();
    let mut config = config.clone();
    config.threads = config.threads.clamp(1, config.users.max(1));
    config.size = config.size.max(crate::scenario::payload::ORIGIN_LEN);

    let mut rng = Rng::new(config.seed, u64::MAX);
    let layout = rooms::assign(
        config.users,
        config.rooms,
        config.zipf_exponent,
        config.viral_fraction,
        &config.subject_prefix,
        &mut rng,
    );
    let mut result = empty_result(&config, &layout);

    match crate::scenario::conns::raise_fd_limit() {
        // One descriptor per user here; a few for everything else.
        Ok(limit) if (limit as usize) < config.users + 64 => {
            result.problems.push(format!(
                "open-file limit {limit} is too low for {} users (raise `ulimit -n`)",
                config.users
            ));
            return result;
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("cannot read the open-file limit: {e}")),
    }
    // Fail fast when the broker is not there at all. With presence, the observer's
    // connection is the probe (with the users' credentials, if any), and it is subscribed
    // before the first user joins.
    let observer = match &config.presence {
        Some(p) => match presence_observer(driver, &config, p) {
            Ok(o) => Some(o),
            Err(e) => {
                result
                    .problems
                    .push(format!("cannot connect (presence observer): {e}"));
                return result;
            }
        },
        None => match driver.connect() {
            Ok(_) => None,
            Err(e) => {
                result.problems.push(format!("cannot connect: {e}"));
                return result;
            }
        },
    };

    let plan = Plan {
        origin: Instant::now(),
        logs: (0..config.users)
            .map(|_| Mutex::new(PublishLog::default()))
            .collect(),
        joined: AtomicUsize::new(0),
        start_ns: AtomicU64::new(u64::MAX),
        abort: AtomicBool::new(false),
        presence: config
            .presence
            .as_ref()
            .map(|_| presence::Shared::new(config.users)),
        layout,
        config,
    };
    let config = &plan.config;
    let (users, stats, presence) = thread::scope(|s| {
        let plan = &plan;
        let observer = observer.and_then(|(conn, inbox)| {
            let shared = plan.presence.as_ref()?;
            Some(s.spawn(move || presence::observe(plan, shared, conn, inbox)))
        });
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let users: Vec<User> = (t..config.users)
                    .step_by(config.threads)
                    .map(|id| User::new(id as u32, &plan.layout, config.seed))
                    .collect();
                s.spawn(move || crowd::play(plan, driver, users))
            })
            .collect();

        let join_deadline = Instant::now() + JOIN_ALL_TIMEOUT;
        while plan.joined.load(Ordering::Acquire) < config.users
            && Instant::now() < join_deadline
            && !handles.iter().all(|h| h.is_finished())
        {
            thread::sleep(Duration::from_millis(5));
        }
        let joined = plan.joined.load(Ordering::Acquire);
        plan.start();
        let settle = config.presence.as_ref().map_or(Duration::ZERO, |p| {
            p.settle_budget(config.reconnect_timeout)
        });
        let deadline = Instant::now()
            + config.duration
            + config.linger
            + config.reconnect_timeout
            + settle
            + ABORT_SLACK;
        while !handles.iter().all(|h| h.is_finished()) {
            if Instant::now() >= deadline {
                plan.abort.store(true, Ordering::Release);
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let mut users = Vec::with_capacity(config.users);
        let mut stats = Vec::with_capacity(handles.len());
        for h in handles {
            match h.join() {
                Ok((u, st)) => {
                    users.extend(u);
                    stats.push(st);
                }
                Err(_) => problems.push("an audience thread panicked".into()),
            }
        }
        result.joined_before_start = joined;
        // The observer released the users before they could finish.
        let presence = observer.map(|h| {
            h.join().unwrap_or_else(|_| PresenceResult {
                problems: vec!["the presence observer panicked".into()],
                ..PresenceResult::default()
            })
        });
        (users, stats, presence)
    });
    let Plan { logs, .. } = plan;
    let logs: Vec<PublishLog> = logs
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    summarize(&mut result, &users, &stats, &logs);
    if let Some(mut p) = presence {
        problems.append(&mut p.problems);
        result.presence = Some(p);
    }
    if result.joined_before_start < result.config.users {
        problems.push(format!(
            "only {} of {} users joined within {:?}; publishing started anyway",
            result.joined_before_start, result.config.users, JOIN_ALL_TIMEOUT
        ));
    }
    problems.append(&mut result.problems);
    result.problems = problems;
    result
}

/// Opens presence's observer: subscribed to every room's events and to its inbox, and
/// synced, so it sees the first join. Returns it with its inbox.
fn presence_observer(
    driver: &dyn Driver,
    config: &AudienceConfig,
    p: &PresenceConfig,
) -> Result<(Box<dyn crate::driver::Connection>, String), crate::driver::DriverError> {
    // With authentication, the observer is user 0 (the broker knows no other name); it
    // never joins, so it is no member.
    let name = presence::identity(0);
    let credentials = p.password.as_deref().map(|pass| (name.as_str(), pass));
    let mut conn = driver.connect_as("tern-bench-presence", credentials)?;
    let inbox = format!("_INBOX.{}.presence", config.subject_prefix);
    conn.subscribe(&presence::events_subject(&config.subject_prefix), None)?;
    conn.subscribe(&inbox, None)?;
    conn.sync(crate::driver::HANDSHAKE_TIMEOUT)?;
    Ok((conn, inbox))
}

fn empty_result(config: &AudienceConfig, layout: &rooms::Layout) -> AudienceResult {
    AudienceResult {
        config: config.clone(),
        rooms: layout
            .rooms
            .iter()
            .map(|r| (r.subject.clone(), r.class, r.members.len()))
            .collect(),
        published: 0,
        delivered: 0,
        tally: Tally::default(),
        duplicated: 0,
        reordered: 0,
        subscribers_missing: 0,
        max_missed_per_subscriber: 0,
        subscribers_with_duplicates: 0,
        latency: Vec::new(),
        reconnect: None,
        rejoin: None,
        joined_before_start: 0,
        storm_drops: 0,
        reconnects: 0,
        churn_leaves: 0,
        rejoins: 0,
        gave_up: 0,
        connect_failures: 0,
        join_timeouts: 0,
        linger_timeouts: 0,
        disconnects: 0,
        dropped_by_broker: 0,
        max_send_lag_ns: 0,
        lossy_subscribers: Vec::new(),
        presence: None,
        problems: Vec::new(),
    }
}

/// Adds the threads' figures and every subscriber's tally to `r`, and lists the problems.
fn summarize(r: &mut AudienceResult, users: &[User], stats: &[CrowdStats], logs: &[PublishLog]) {
    let mut latency: [LatencyHistogram; 4] = Default::default();
    let mut reconnect = LatencyHistogram::new();
    let mut rejoin = LatencyHistogram::new();
    let mut first_disconnect = None;
    let mut unfinished = 0;
    for s in stats {
        for (all, one) in latency.iter_mut().zip(&s.latency) {
            all.merge(one);
        }
        reconnect.merge(&s.reconnect);
        rejoin.merge(&s.rejoin);
        r.published += s.published;
        r.storm_drops += s.storm_drops;
        r.reconnects += s.reconnects;
        r.churn_leaves += s.churn_leaves;
        r.rejoins += s.rejoins;
        r.gave_up += s.gave_up;
        r.connect_failures += s.connect_failures;
        r.join_timeouts += s.join_timeouts;
        r.linger_timeouts += s.linger_timeouts;
        r.disconnects += s.disconnects;
        r.dropped_by_broker += s.dropped_by_broker;
        r.max_send_lag_ns = r.max_send_lag_ns.max(s.max_send_lag_ns);
        unfinished += s.unfinished;
        if first_disconnect.is_none() {
            first_disconnect.clone_from(&s.first_disconnect);
        }
    }

    let layout_rooms = r.rooms.clone();
    for class in SizeClass::ALL {
        let rooms: Vec<_> = layout_rooms.iter().filter(|x| x.1 == class).collect();
        if rooms.is_empty() {
            continue;
        }
        let h = &latency[class.index()];
        r.latency.push(ClassLatency {
            class,
            rooms: rooms.len(),
            users: rooms.iter().map(|x| x.2).sum(),
            deliveries: h.count(),
            p50_ns: h.quantile(0.50),
            p95_ns: h.quantile(0.95),
            p99_ns: h.quantile(0.99),
            max_ns: h.quantile(1.0),
        });
    }
    r.reconnect = Times::of(&reconnect);
    r.rejoin = Times::of(&rejoin);

    // Room members by room index, rebuilt from the users themselves.
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); layout_rooms.len()];
    for u in users {
        members[u.room].push(u.id);
    }
    let mut lossy = Vec::new();
    for u in users {
        let t = u.ledger.tally(&members[u.room], logs);
        r.tally += t;
        r.delivered += u.ledger.delivered;
        r.duplicated += u.ledger.duplicated;
        r.reordered += u.ledger.reordered;
        if t.missed > 0 {
            r.subscribers_missing += 1;
            r.max_missed_per_subscriber = r.max_missed_per_subscriber.max(t.missed);
        }
        if u.ledger.duplicated > 0 {
            r.subscribers_with_duplicates += 1;
        }
        if t.missed > 0 || u.ledger.duplicated > 0 || u.ledger.reordered > 0 {
            lossy.push(SubscriberLoss {
                user: u.id,
                room: layout_rooms[u.room].0.clone(),
                tally: t,
                duplicated: u.ledger.duplicated,
                reordered: u.ledger.reordered,
            });
        }
    }
    lossy.sort_by_key(|l| std::cmp::Reverse(l.tally.missed + l.duplicated + l.reordered));
    lossy.truncate(100);
    r.lossy_subscribers = lossy;

    let p = &mut r.problems;
    if r.tally.missed > 0 {
        p.push(format!(
            "{} of {} owed messages missed, by {} subscribers (at most {} by one)",
            r.tally.missed, r.tally.expected, r.subscribers_missing, r.max_missed_per_subscriber
        ));
    }
    if r.duplicated > 0 {
        p.push(format!(
            "{} duplicate deliveries, to {} subscribers",
            r.duplicated, r.subscribers_with_duplicates
        ));
    }
    if r.reordered > 0 {
        p.push(format!(
            "{} deliveries out of per-publisher order",
            r.reordered
        ));
    }
    if r.dropped_by_broker > 0 {
        p.push(format!(
            "the broker reported dropping {} messages (DROP_NOTICE)",
            r.dropped_by_broker
        ));
    }
    if r.disconnects > 0 {
        p.push(format!(
            "{} connections closed or failed by the broker (first: {})",
            r.disconnects,
            first_disconnect.unwrap_or_default()
        ));
    }
    if r.gave_up > 0 {
        p.push(format!(
            "{} users did not resubscribe within {:?} of their drop",
            r.gave_up, r.config.reconnect_timeout
        ));
    }
    if unfinished > 0 {
        p.push(format!(
            "aborted at the deadline with {unfinished} users still running"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_modest_and_consistent() {
        let c = AudienceConfig::default();
        assert_eq!(c.users, 500);
        assert!(c.storm_at.is_some_and(|s| s < c.duration));
        assert_eq!(c.mean_session(), Some(Duration::from_secs(100)));
        assert_eq!(c.label(), "audience 500 users 20 rooms");
        let no_churn = AudienceConfig {
            churn: 0.0,
            ..AudienceConfig::default()
        };
        assert_eq!(no_churn.mean_session(), None);
    }

    #[test]
    fn config_serializes_in_seconds() {
        let json = serde_json::to_value(AudienceConfig::default()).unwrap();
        assert_eq!(json["message_interval"], 3.0);
        assert_eq!(json["storm_at"], 10.0);
        assert_eq!(json["backoff_base"], 0.1);
    }

    #[test]
    fn times_summarize_milliseconds() {
        let mut h = LatencyHistogram::new();
        assert!(Times::of(&h).is_none());
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let t = Times::of(&h).unwrap();
        assert_eq!(t.count, 100);
        assert!((t.p50_ms - 50.0).abs() < 0.1, "{t:?}");
        assert!((t.max_ms - 100.0).abs() < 0.1, "{t:?}");
    }
}

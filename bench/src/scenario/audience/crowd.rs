//! The crowd: the users one thread plays, many connections multiplexed over `ppoll(2)`.
//!
//! Owns: each user's life as a state machine stepped by the clock — join (connect,
//! subscribe to its room, publish a join message until it comes back), live (publish on a
//! Poisson schedule, receive), leave (linger until what it is owed arrived, then close),
//! away (churn), dropped (the storm, or the broker closing it) and reconnect (exponential
//! backoff with full jitter) — and the figures one thread collects ([`CrowdStats`]).
//! With presence, a user also joins its room's presence on each connection (recorded in
//! [`super::presence::Shared`] as it is sent), leaves it explicitly before a graceful
//! close, and, once publishing stopped, stays connected until the observer releases it.
//!
//! One loop turn: check the run's phase (the storm fires once), step every user whose
//! time has come, then sleep in `ppoll` until the next user event or until a socket is
//! readable, and hand readable sockets' deliveries to their users' ledgers.
//!
//! Never: reads a socket `ppoll` did not report, or waits without a deadline. The blocking
//! calls a user makes (a connect handshake, a write) are bounded by the driver's own
//! timeouts; every other wait is a state with a deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::accounting::{End, Ledger, PublishLog};
use super::presence::{self, Shared};
use super::random::Rng;
use super::rooms::{Layout, SizeClass};
use super::AudienceConfig;
use crate::driver::{Connection, Driver, DriverError};
use crate::histogram::LatencyHistogram;
use crate::scenario::payload::{self, JOIN, MEASURED, ORIGIN_LEN};

/// How often a joining user republishes its join message (the first may reach the room's
/// owner before its subscription does, and is then delivered to no one).
const JOIN_EVERY: Duration = Duration::from_millis(20);
/// How long a join may take before the user drops the connection and retries.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a lingering user checks whether everything it is owed arrived.
const LINGER_CHECK: Duration = Duration::from_millis(5);
/// The longest `ppoll` sleeps, so the phase (storm, stop, abort) is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// How long one `receive` on a readable socket may wait (it never has to).
const READ_WAIT: Duration = Duration::from_millis(1);
/// Connections one thread opens per loop turn at most, so that a crowd joining at once
/// (the start, the storm) does not keep its sockets unread until join messages time out.
const CONNECTS_PER_TURN: usize = 16;

/// Nanoseconds that mean "never".
const NEVER: u64 = u64::MAX;

/// What every thread shares: the run's shape, clock, publish logs and phase.
pub(super) struct Plan {
    /// The clock's zero: every time in the run is nanoseconds since this.
    pub origin: Instant,
    /// The run.
    pub config: AudienceConfig,
    /// Who is in which room.
    pub layout: Layout,
    /// Each user's publish log, indexed by user id.
    pub logs: Vec<Mutex<PublishLog>>,
    /// Users whose first join completed.
    pub joined: AtomicUsize,
    /// When publishing started ([`NEVER`] until every user joined).
    pub start_ns: AtomicU64,
    /// Set when the run must end now (the overall deadline passed).
    pub abort: AtomicBool,
    /// With presence: what users share with the observer.
    pub presence: Option<Shared>,
}

impl Plan {
    /// Now, in nanoseconds since the origin.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Marks the start of publishing.
    pub fn start(&self) {
        self.start_ns.store(self.now(), Ordering::Release);
    }

    /// True while users that finished publishing must stay connected and joined: with
    /// presence, until the observer's settle check released them.
    fn holding(&self) -> bool {
        self.presence
            .as_ref()
            .is_some_and(|p| !p.release.load(Ordering::Acquire))
    }

    fn log(&self, user: u32) -> MutexGuard<'_, PublishLog> {
        // A panicking thread cannot leave a log half-written (push is one Vec push).
        self.logs[user as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a user is connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Its first join, before publishing starts.
    Initial,
    /// Back from being away (churn), since this time.
    Rejoin { since: u64 },
    /// After a drop at this time (the storm, or the broker closing the connection).
    Reconnect { dropped: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; the next connection attempt is at `next_try`.
    Offline {
        why: Why,
        attempt: u32,
        next_try: u64,
    },
    /// Connected and subscribed, waiting for its own join message to come back.
    Joining {
        why: Why,
        attempt: u32,
        join_next: u64,
        deadline: u64,
    },
    /// Subscribed (known live); publishing.
    Live,
    /// Decided to leave at `at`; lingering until it received what it is owed.
    Leaving {
        at: u64,
        deadline: u64,
        next_check: u64,
        then_away: bool,
    },
    /// Left (churn); back at `until`.
    Away { until: u64 },
    /// Finished.
    Done,
}

/// One simulated user: one connection, one room.
pub(super) struct User {
    /// Its id, also its publisher id.
    pub id: u32,
    /// Its room's index in the layout.
    pub room: usize,
    class: SizeClass,
    rng: Rng,
    conn: Option<Box<dyn Connection>>,
    state: State,
    /// When its next message is due ([`NEVER`] until publishing starts).
    next_publish: u64,
    /// When it will leave (churn), [`NEVER`] when it will not.
    leave_at: u64,
    /// Publishers whose owed messages it still waits for while lingering.
    pending: Vec<u32>,
    /// Set by the receive path when its own join message came back.
    echo_at: Option<u64>,
    /// Joined its room's presence on the current connection (with presence only).
    in_presence: bool,
    /// What it received and was owed.
    pub ledger: Ledger,
}

impl User {
    /// User `id` in room `room` of `layout`, not connected yet.
    pub fn new(id: u32, layout: &Layout, seed: u64) -> User {
        let room = layout.room_of[id as usize];
        User {
            id,
            room,
            class: layout.rooms[room].class,
            rng: Rng::new(seed, u64::from(id)),
            conn: None,
            state: State::Offline {
                why: Why::Initial,
                attempt: 0,
                next_try: 0,
            },
            next_publish: NEVER,
            leave_at: NEVER,
            pending: Vec::new(),
            echo_at: None,
            in_presence: false,
            ledger: Ledger::default(),
        }
    }
}

/// What one thread measured.
#[derive(Debug, Clone, Default)]
pub(super) struct CrowdStats {
    /// Publish-to-deliver latency by the room's size class ([`SizeClass::index`]).
    pub latency: [LatencyHistogram; 4],
    /// Drop to resubscribed, for every completed reconnect.
    pub reconnect: LatencyHistogram,
    /// Back from away to resubscribed, for every completed churn rejoin.
    pub rejoin: LatencyHistogram,
    /// Messages published.
    pub published: u64,
    /// Connections the storm closed.
    pub storm_drops: u64,
    /// Reconnects completed.
    pub reconnects: u64,
    /// Users that left (churn).
    pub churn_leaves: u64,
    /// Users back from away.
    pub rejoins: u64,
    /// Reconnects abandoned after the reconnect timeout.
    pub gave_up: u64,
    /// Connection attempts that failed (retried with backoff).
    pub connect_failures: u64,
    /// Joins whose join message did not come back within [`JOIN_TIMEOUT`] (retried).
    pub join_timeouts: u64,
    /// Leaves whose linger ran out before everything owed arrived.
    pub linger_timeouts: u64,
    /// Connections the broker closed or failed (not the storm, not a leave).
    pub disconnects: u64,
    /// The first such failure, as the driver reported it.
    pub first_disconnect: Option<String>,
    /// Messages the broker reported dropping (binary `DROP_NOTICE`).
    pub dropped_by_broker: u64,
    /// How late a publish went out after its scheduled time, at worst (ns).
    pub max_send_lag_ns: u64,
    /// Users still running when the run was aborted.
    pub unfinished: u64,
}

/// Where the run is, as one thread sees it at one instant.
#[derive(Debug, Clone, Copy)]
struct Phase {
    now: u64,
    /// Publishing has started.
    running: bool,
    /// Publishing has ended: users leave.
    stopping: bool,
    stop_at: u64,
}

/// Plays `users` until every one is done (or the plan is aborted); returns them with
/// their ledgers, and the thread's figures.
pub(super) fn play(
    plan: &Plan,
    driver: &dyn Driver,
    mut users: Vec<User>,
) -> (Vec<User>, CrowdStats) {
    let mut stats = CrowdStats::default();
    let config = &plan.config;
    let storm_after = config.storm_at.filter(|&at| at < config.duration);
    let mut storm_done = storm_after.is_none();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(users.len());
    let mut owners: Vec<usize> = Vec::with_capacity(users.len());
    // This thread's share of `Shared::settled`.
    let mut settled = 0i64;
    loop {
        let now = plan.now();
        if plan.abort.load(Ordering::Acquire) {
            for u in &mut users {
                if u.state != State::Done {
                    stats.unfinished += 1;
                    close(u, plan, End::Abrupt(now), &mut stats);
                    u.state = State::Done;
                }
            }
            break;
        }
        let start = plan.start_ns.load(Ordering::Acquire);
        let running = start != NEVER;
        let stop_at = start.saturating_add(config.duration.as_nanos() as u64);
        let phase = Phase {
            now,
            running,
            stopping: running && now >= stop_at,
            stop_at,
        };
        let mut wake = now + MAX_SLEEP.as_nanos() as u64;
        if let (false, Some(after), true) = (storm_done, storm_after, running) {
            let storm_at = start + after.as_nanos() as u64;
            if now >= storm_at {
                storm_done = true;
                for u in &mut users {
                    if u.conn.is_some() {
                        stats.storm_drops += 1;
                        drop_connection(u, plan, now, &mut stats);
                    }
                }
                if let Some(p) = &plan.presence {
                    p.storms.fetch_add(1, Ordering::AcqRel);
                }
            } else {
                wake = wake.min(storm_at);
            }
        }
        let mut all_done = true;
        let mut connects = CONNECTS_PER_TURN;
        for u in &mut users {
            wake = wake.min(step(u, plan, driver, phase, &mut connects, &mut stats));
            all_done &= u.state == State::Done;
        }
        if let (Some(p), true) = (&plan.presence, phase.stopping) {
            // Held (live, publishing over) or finished: what the settle check waits for.
            let now_settled = users
                .iter()
                .filter(|u| matches!(u.state, State::Live | State::Done))
                .count() as i64;
            p.settled.fetch_add(now_settled - settled, Ordering::AcqRel);
            settled = now_settled;
        }
        if all_done {
            break;
        }
        if running && !phase.stopping {
            wake = wake.min(stop_at);
        }

        fds.clear();
        owners.clear();
        for (i, u) in users.iter().enumerate() {
            if let Some(c) = &u.conn {
                fds.push(libc::pollfd {
                    fd: c.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                owners.push(i);
            }
        }
        let sleep = wake.saturating_sub(plan.now());
        let ts = libc::timespec {
            tv_sec: (sleep / 1_000_000_000) as libc::time_t,
            tv_nsec: (sleep % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `fds` is a live, initialised slice of `fds.len()` pollfds that `ppoll`
        // may write `revents` into; `ts` lives across the call; a null sigmask means "keep
        // the current one".
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if ready <= 0 {
            // Timeout, or EINTR: either way, step again.
            continue;
        }
        for (fd, &i) in fds.iter().zip(&owners) {
            if fd.revents != 0 {
                receive(&mut users[i], plan, &mut stats);
            }
        }
    }
    (users, stats)
}

/// Reads what a ready socket holds into the user's ledger.
fn receive(u: &mut User, plan: &Plan, stats: &mut CrowdStats) {
    let User {
        id,
        class,
        conn,
        state,
        echo_at,
        ledger,
        ..
    } = u;
    let Some(c) = conn else { return };
    let joining = matches!(state, State::Joining { .. });
    let latency = &mut stats.latency[class.index()];
    let result = c.receive(READ_WAIT, &mut |p| {
        let now = plan.now();
        match payload::kind(p) {
            Some(MEASURED) => {
                if let (Some((publisher, seq)), Some(sent)) =
                    (payload::origin(p), payload::intended_ns(p))
                {
                    latency.record(now.saturating_sub(sent));
                    ledger.record(publisher, seq);
                }
            }
            // Its own join message back: the subscription is live.
            Some(JOIN)
                if joining && echo_at.is_none() && payload::origin(p).map(|o| o.0) == Some(*id) =>
            {
                *echo_at = Some(now);
            }
            // Others' join messages, and anything else.
            _ => {}
        }
    });
    if let Err(e) = result {
        broker_failure(u, plan, e, stats);
    }
}

/// The broker closed the connection or failed it: counted, then handled like a drop.
fn broker_failure(u: &mut User, plan: &Plan, e: DriverError, stats: &mut CrowdStats) {
    stats.disconnects += 1;
    stats
        .first_disconnect
        .get_or_insert_with(|| format!("user {}: {e}", u.id));
    drop_connection(u, plan, plan.now(), stats);
}

/// Closes the connection now (no linger) and schedules a reconnect.
fn drop_connection(u: &mut User, plan: &Plan, now: u64, stats: &mut CrowdStats) {
    close(u, plan, End::Abrupt(now), stats);
    let delay = plan.config.backoff().delay(0, &mut u.rng);
    u.state = State::Offline {
        why: Why::Reconnect { dropped: now },
        attempt: 0,
        next_try: now + delay.as_nanos() as u64,
    };
}

/// Closes the connection (if any) and the open period (if any); a joined connection
/// leaves presence by closing (the broker's grace window applies).
fn close(u: &mut User, plan: &Plan, end: End, stats: &mut CrowdStats) {
    if let Some(c) = u.conn.take() {
        stats.dropped_by_broker += c.dropped();
    }
    if std::mem::take(&mut u.in_presence) {
        if let Some(p) = &plan.presence {
            p.ended(u.id, plan.now());
        }
    }
    u.ledger.close(end);
    u.echo_at = None;
    u.pending.clear();
}

/// Advances one user as far as the clock allows (opening a connection only while
/// `connects` is not used up); returns when it next needs a step.
fn step(
    u: &mut User,
    plan: &Plan,
    driver: &dyn Driver,
    phase: Phase,
    connects: &mut usize,
    stats: &mut CrowdStats,
) -> u64 {
    let config = &plan.config;
    let now = phase.now;
    match u.state {
        State::Done => NEVER,
        State::Away { until } => {
            if phase.stopping {
                u.state = State::Done;
                NEVER
            } else if now >= until {
                u.state = State::Offline {
                    why: Why::Rejoin { since: now },
                    attempt: 0,
                    next_try: now,
                };
                now
            } else {
                until
            }
        }
        State::Offline {
            why,
            attempt,
            next_try,
        } => {
            if phase.stopping && !matches!(why, Why::Reconnect { .. }) {
                u.state = State::Done;
                return NEVER;
            }
            if let Why::Reconnect { dropped } = why {
                if now.saturating_sub(dropped) > config.reconnect_timeout.as_nanos() as u64 {
                    stats.gave_up += 1;
                    u.state = State::Done;
                    return NEVER;
                }
            }
            if now < next_try {
                return next_try;
            }
            if *connects == 0 {
                // Next turn, after this turn's sockets were read.
                return now;
            }
            *connects -= 1;
            match join(u, plan, driver) {
                Ok(()) => {
                    let now = plan.now();
                    let join_next = now + JOIN_EVERY.as_nanos() as u64;
                    u.state = State::Joining {
                        why,
                        attempt,
                        join_next,
                        deadline: now + JOIN_TIMEOUT.as_nanos() as u64,
                    };
                    join_next
                }
                Err(_) => {
                    stats.connect_failures += 1;
                    u.conn = None;
                    retry_later(u, plan, why, attempt)
                }
            }
        }
        State::Joining {
            why,
            attempt,
            join_next,
            deadline,
        } => {
            if let Some(live) = u.echo_at.take() {
                go_live(u, plan, why, live, stats);
                return now;
            }
            if phase.stopping && !matches!(why, Why::Reconnect { .. }) {
                close(u, plan, End::Abrupt(now), stats);
                u.state = State::Done;
                return NEVER;
            }
            if now >= deadline {
                stats.join_timeouts += 1;
                close(u, plan, End::Abrupt(now), stats);
                return retry_later(u, plan, why, attempt);
            }
            if now < join_next {
                return join_next.min(deadline);
            }
            if let Err(e) = send_join(u, plan) {
                broker_failure(u, plan, e, stats);
                return now;
            }
            let join_next = now + JOIN_EVERY.as_nanos() as u64;
            u.state = State::Joining {
                why,
                attempt,
                join_next,
                deadline,
            };
            join_next.min(deadline)
        }
        State::Live => {
            if phase.stopping && plan.holding() {
                // Connected and joined until the presence settle check is done.
                return NEVER;
            }
            if phase.stopping {
                begin_leave(u, plan, now, false);
                return now;
            }
            if !phase.running {
                return NEVER;
            }
            if u.next_publish == NEVER {
                u.next_publish = now + u.rng.exponential(config.message_interval).as_nanos() as u64;
            }
            if u.leave_at == NEVER {
                if let Some(session) = config.mean_session() {
                    u.leave_at = now + u.rng.exponential(session).as_nanos() as u64;
                }
            }
            if now >= u.leave_at {
                stats.churn_leaves += 1;
                begin_leave(u, plan, now, true);
                return now;
            }
            if now >= u.next_publish {
                if let Err(e) = publish_due(u, plan, phase, stats) {
                    broker_failure(u, plan, e, stats);
                    return now;
                }
            }
            u.next_publish.min(u.leave_at).min(phase.stop_at)
        }
        State::Leaving {
            at,
            deadline,
            next_check,
            then_away,
        } => {
            if now < next_check {
                return next_check;
            }
            let owed_all = lingered_enough(u, plan, at);
            if !owed_all && now < deadline {
                let next_check = now + LINGER_CHECK.as_nanos() as u64;
                u.state = State::Leaving {
                    at,
                    deadline,
                    next_check,
                    then_away,
                };
                return next_check.min(deadline);
            }
            if !owed_all {
                stats.linger_timeouts += 1;
            }
            leave_presence(u, plan);
            close(u, plan, End::Graceful(at), stats);
            u.state = if then_away && !phase.stopping {
                let away = u.rng.exponential(config.away).as_nanos() as u64;
                State::Away { until: now + away }
            } else {
                State::Done
            };
            now
        }
    }
}

/// Connects, subscribes to the user's room, joins its presence (with presence) and
/// publishes its first join message.
fn join(u: &mut User, plan: &Plan, driver: &dyn Driver) -> Result<(), DriverError> {
    let subject = &plan.layout.rooms[u.room].subject;
    let mut conn = match &plan.config.presence {
        Some(p) => {
            let name = presence::identity(u.id);
            let credentials = p.password.as_deref().map(|pass| (name.as_str(), pass));
            driver.connect_as(&name, credentials)?
        }
        None => driver.connect()?,
    };
    conn.subscribe(subject, None)?;
    if let Some(p) = &plan.presence {
        let info = format!(r#"{{"bench":"{}"}}"#, presence::identity(u.id));
        conn.publish(&presence::join_subject(subject), info.as_bytes())?;
        p.joined(u.id);
        u.in_presence = true;
    }
    u.conn = Some(conn);
    u.echo_at = None;
    u.pending.clear();
    send_join(u, plan).inspect_err(|_| {
        u.conn = None;
        if std::mem::take(&mut u.in_presence) {
            if let Some(p) = &plan.presence {
                p.ended(u.id, plan.now());
            }
        }
    })
}

/// A leaving user says so before closing: an explicit leave is at once (no window).
/// A failure is ignored: the close that follows leaves with the window.
fn leave_presence(u: &mut User, plan: &Plan) {
    if let (true, Some(c)) = (u.in_presence, u.conn.as_mut()) {
        let subject = presence::leave_subject(&plan.layout.rooms[u.room].subject);
        let _ = c.publish(&subject, b"").and_then(|()| c.flush());
    }
}

/// Publishes the user's join message to its room: it travels the way the room's messages
/// do, so its coming back proves the subscription is live where they are routed.
fn send_join(u: &mut User, plan: &Plan) -> Result<(), DriverError> {
    let subject = &plan.layout.rooms[u.room].subject;
    let Some(c) = u.conn.as_mut() else {
        return Err(DriverError::Closed);
    };
    let mut p = payload::build(ORIGIN_LEN, JOIN);
    payload::stamp(&mut p, plan.now());
    payload::stamp_origin(&mut p, u.id, 0);
    c.publish(subject, &p)?;
    c.flush()
}

/// A failed connect or join: try again after the backoff for the next attempt.
fn retry_later(u: &mut User, plan: &Plan, why: Why, attempt: u32) -> u64 {
    let attempt = attempt.saturating_add(1);
    let now = plan.now();
    let next_try = now + plan.config.backoff().delay(attempt, &mut u.rng).as_nanos() as u64;
    u.state = State::Offline {
        why,
        attempt,
        next_try,
    };
    next_try
}

/// The user's own join message came back at `live`: its subscription is live.
fn go_live(u: &mut User, plan: &Plan, why: Why, live: u64, stats: &mut CrowdStats) {
    u.ledger.open(live);
    u.state = State::Live;
    u.next_publish = NEVER;
    u.leave_at = NEVER;
    match why {
        Why::Initial => {
            plan.joined.fetch_add(1, Ordering::AcqRel);
        }
        Why::Rejoin { since } => {
            stats.rejoins += 1;
            stats.rejoin.record(live.saturating_sub(since));
        }
        Why::Reconnect { dropped } => {
            stats.reconnects += 1;
            stats.reconnect.record(live.saturating_sub(dropped));
        }
    }
}

/// Publishes every message whose time has come. Each is logged with its send time, taken
/// under the publisher's log lock and held through the write (see `accounting`): a
/// lingering subscriber that reads the log after deciding to leave sees every message
/// sent before that decision.
fn publish_due(
    u: &mut User,
    plan: &Plan,
    phase: Phase,
    stats: &mut CrowdStats,
) -> Result<(), DriverError> {
    let config = &plan.config;
    let subject = &plan.layout.rooms[u.room].subject;
    let Some(c) = u.conn.as_mut() else {
        return Err(DriverError::Closed);
    };
    let mut body = payload::build(config.size.max(ORIGIN_LEN), MEASURED);
    while u.next_publish <= phase.now && u.next_publish < phase.stop_at {
        let mut log = plan.log(u.id);
        let sent = plan.now();
        payload::stamp(&mut body, sent);
        payload::stamp_origin(&mut body, u.id, log.len() + 1);
        c.publish(subject, &body)?;
        c.flush()?;
        log.push(sent);
        drop(log);
        stats.published += 1;
        stats.max_send_lag_ns = stats
            .max_send_lag_ns
            .max(sent.saturating_sub(u.next_publish));
        u.next_publish += u.rng.exponential(config.message_interval).as_nanos() as u64;
    }
    Ok(())
}

/// Stops publishing and starts lingering for what the user is owed.
fn begin_leave(u: &mut User, plan: &Plan, now: u64, then_away: bool) {
    u.pending = plan.layout.rooms[u.room].members.clone();
    u.next_publish = NEVER;
    u.leave_at = NEVER;
    u.state = State::Leaving {
        at: now,
        deadline: now + plan.config.linger.as_nanos() as u64,
        next_check: now,
        then_away,
    };
}

/// True when every publisher in the room delivered what it owes for the open period
/// ending at `at`; publishers found complete are not checked again.
fn lingered_enough(u: &mut User, plan: &Plan, at: u64) -> bool {
    let Some(live) = u.ledger.live_since() else {
        return true;
    };
    let ledger = &u.ledger;
    u.pending.retain(|&p| {
        let log = plan.log(p);
        let o = super::accounting::owed(&log, live, End::Graceful(at), None);
        !ledger.has_all(p, o.lo, o.hi)
    });
    u.pending.is_empty()
}

//! Presence in the audience (`--presence`): every user joins its room's presence, one
//! observer connection watches the events and checks the broker's rooms against who the
//! harness knows is in them.
//!
//! Owns: the presence subjects ([`join_subject`] and its siblings), the users' identity
//! (`u<index>`: the connection name without authentication, so members are
//! `u<index>#<client id>`; the user name with `--presence-password`, so a member survives
//! reconnects), what users and observer share (`Shared`), the observer (`observe`)
//! and the figures ([`PresenceResult`]).
//!
//! # The figures, exactly
//!
//! - **events/s**: join and leave events the observer received (on
//!   `$TERN.PRESENCE.EVENTS.<prefix>.>`) while users published, divided by the publishing
//!   time. **events**: every one received from before the first join until the settle
//!   check.
//! - **suppressed**: events the grace window saved. Without a window, and with one member
//!   per connection, every connection that joined makes one join event and, when it ends
//!   (an explicit leave, or a drop), one leave event: *would-be* = joins sent + joined
//!   connections ended, counted up to the settle check. `suppressed` = would-be − events
//!   received. With authentication it counts the drops whose user was back within the
//!   window (no leave, no join: two each); without it a reconnect is a new member, so it
//!   is 0 give or take a join cut by a drop before it reached the broker.
//! - **right after storm**: from the storm (once every thread has closed its
//!   connections), the observer asks every room its count (`{"count":true}`) every
//!   `poll_every`; the figure is the time of the first round in which every room's count
//!   equals the number of its users the harness counts as present (joined on their
//!   current connection, not left, not dropped), taken just before the round's requests.
//!   Rounds go on after publishing stopped (users are then held, see below) until one is
//!   right; none right by the settle check is a problem. Without authentication the old
//!   members linger for the window, so it is about the window; with it, about the time
//!   until the last user is back. Churn can make one round disagree for a moment; the
//!   next one is `poll_every` later.
//! - **mismatches**: once publishing stopped, users stay connected (no churn) until every
//!   one is either connected and joined or finished; then the observer waits until the
//!   window plus `margin` passed since the last event and the last connection end, lists
//!   every room's members (pages of 1000) and compares them with the users the harness
//!   counts as present: a listed member who is not (or listed twice, or not a `u<index>`)
//!   is a ghost, a present user not listed is missing. `mismatches` = ghosts + missing,
//!   and must be 0. Then users are released and leave as without presence.
//!
//! Never: decides who is present from the broker's answers; the harness's own record
//! (`Shared::present`) is the truth every answer is compared with. Never waits without
//! a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::crowd::Plan;
use crate::driver::{Connection, DriverError};

/// The largest page of members one query asks for (the broker's limit).
pub const PAGE: usize = 1000;
/// How long the observer waits for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// One wait of the observer's receive loop.
const RECEIVE_WAIT: Duration = Duration::from_millis(10);
/// How long after publishing stopped users may take to settle (connected and joined, or
/// finished), on top of the reconnect timeout.
const SETTLE_SLACK: Duration = Duration::from_secs(5);

/// The presence option of an audience run.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceConfig {
    /// The broker's `presence_grace` (the harness cannot read it; it must match).
    #[serde(with = "super::secs")]
    pub grace: Duration,
    /// Added to the window before the settle check.
    #[serde(with = "super::secs")]
    pub margin: Duration,
    /// How often rooms' counts are asked after the storm, until they are right.
    #[serde(with = "super::secs")]
    pub poll_every: Duration,
    /// Users authenticate as `u<index>` with this password (the broker must know them);
    /// `None`: no authentication. Never serialized.
    #[serde(skip)]
    pub password: Option<String>,
}

impl Default for PresenceConfig {
    /// The broker's default window (10 s), a 1 s margin, a count round every 100 ms, no
    /// authentication.
    fn default() -> Self {
        PresenceConfig {
            grace: Duration::from_secs(10),
            margin: Duration::from_secs(1),
            poll_every: Duration::from_millis(100),
            password: None,
        }
    }
}

impl PresenceConfig {
    /// The most the observer's phases after publishing take, for the run's abort deadline.
    pub fn settle_budget(&self, reconnect_timeout: Duration) -> Duration {
        reconnect_timeout + SETTLE_SLACK + 2 * (self.grace + self.margin) + 4 * ANSWER_TIMEOUT
    }
}

/// User `id`'s name (and, with authentication, user name).
pub fn identity(id: u32) -> String {
    format!("u{id}")
}

/// The user index a member's `user` names (`u12` or `u12#40`), if it is one of ours.
pub fn user_index(member: &str) -> Option<u32> {
    let name = member.split_once('#').map_or(member, |(name, _)| name);
    let digits = name.strip_prefix('u')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The subject a user joins `room` on.
pub fn join_subject(room: &str) -> String {
    format!("$TERN.PRESENCE.JOIN.{room}")
}

/// The subject a user leaves `room` on.
pub fn leave_subject(room: &str) -> String {
    format!("$TERN.PRESENCE.LEAVE.{room}")
}

/// The subject `room` is asked about on.
pub fn query_subject(room: &str) -> String {
    format!("$TERN.PRESENCE.{room}")
}

/// Every room's events under `prefix`.
pub fn events_subject(prefix: &str) -> String {
    format!("$TERN.PRESENCE.EVENTS.{prefix}.>")
}

/// What users and the observer share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Per user: joined on its current connection, and neither left nor dropped since.
    pub present: Vec<AtomicBool>,
    /// Joins sent (one per connection).
    pub joins: AtomicU64,
    /// Joined connections ended (explicit leave, drop or close).
    pub ends: AtomicU64,
    /// When a joined connection last ended (ns since the origin).
    pub last_end_ns: AtomicU64,
    /// Threads whose storm has fired.
    pub storms: AtomicUsize,
    /// After publishing stopped: users connected and joined (held) or finished.
    pub settled: AtomicI64,
    /// Set by the observer after the settle check: held users may leave.
    pub release: AtomicBool,
}

impl Shared {
    /// Nothing joined yet, for `users` users.
    pub fn new(users: usize) -> Shared {
        Shared {
            present: (0..users).map(|_| AtomicBool::new(false)).collect(),
            joins: AtomicU64::new(0),
            ends: AtomicU64::new(0),
            last_end_ns: AtomicU64::new(0),
            storms: AtomicUsize::new(0),
            settled: AtomicI64::new(0),
            release: AtomicBool::new(false),
        }
    }

    /// User `id` joined on its new connection.
    pub fn joined(&self, id: u32) {
        self.joins.fetch_add(1, Ordering::AcqRel);
        self.present[id as usize].store(true, Ordering::Release);
    }

    /// User `id`'s joined connection ended at `now`.
    pub fn ended(&self, id: u32, now: u64) {
        self.present[id as usize].store(false, Ordering::Release);
        self.ends.fetch_add(1, Ordering::AcqRel);
        self.last_end_ns.fetch_max(now, Ordering::AcqRel);
    }

    /// How many of `members` are present.
    fn present_of(&self, members: &[u32]) -> usize {
        members
            .iter()
            .filter(|&&m| self.present[m as usize].load(Ordering::Acquire))
            .count()
    }
}

/// What presence measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceResult {
    /// Join events received, up to the settle check.
    pub join_events: u64,
    /// Leave events received, up to the settle check.
    pub leave_events: u64,
    /// Events received while users published, per second.
    pub events_per_sec: f64,
    /// Joins sent, up to the settle check.
    pub joins: u64,
    /// Joined connections ended, up to the settle check.
    pub ends: u64,
    /// `joins + ends − events received` (see the module docs).
    pub suppressed: i64,
    /// From the storm to the first count round with every room right (ms).
    pub right_after_storm_ms: Option<f64>,
    /// Count rounds asked after the storm.
    pub count_rounds: u64,
    /// The settle check ran.
    pub checked: bool,
    /// Members listed who are not present.
    pub ghosts: u64,
    /// Present users not listed.
    pub missing: u64,
    /// The rooms that disagreed, with their numbers (at most 20).
    pub mismatched_rooms: Vec<String>,
    /// What went wrong.
    pub problems: Vec<String>,
}

impl PresenceResult {
    /// Join and leave events received.
    pub fn events(&self) -> u64 {
        self.join_events + self.leave_events
    }

    /// Ghosts plus missing: 0 when the broker agrees with the harness.
    pub fn mismatches(&self) -> u64 {
        self.ghosts + self.missing
    }
}

/// A presence event, or an answer to a query (which has no `event`).
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    event: Option<String>,
    subject: String,
    count: u64,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    members: Option<Vec<Member>>,
}

#[derive(Debug, Deserialize)]
struct Member {
    user: String,
}

/// A room's disagreement with the harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Listed, but not present (or listed twice, or not one of ours).
    pub ghosts: u64,
    /// Present, but not listed.
    pub missing: u64,
}

/// Compares the members a room listed with the users present in it (`present`, any order).
pub fn compare(present: &[u32], listed: &[String]) -> Mismatch {
    let mut want: HashMap<u32, bool> = present.iter().map(|&u| (u, false)).collect();
    let mut m = Mismatch::default();
    for name in listed {
        match user_index(name).and_then(|u| want.get_mut(&u)) {
            Some(seen @ false) => *seen = true,
            _ => m.ghosts += 1,
        }
    }
    m.missing = want.values().filter(|&&seen| !seen).count() as u64;
    m
}

/// The observer: its connection, what it counted, and the answers it waits for.
struct Observer<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    conn: Box<dyn Connection>,
    inbox: String,
    result: PresenceResult,
    /// Events received while users published.
    events_publishing: u64,
    /// When the last event arrived (ns since the origin).
    last_event_ns: u64,
    /// Answers received and not yet taken, by room.
    answers: HashMap<String, Answer>,
    /// When the settle check began; events after it are not counted.
    counting: bool,
}

impl Observer<'_> {
    /// Receives for at most `wait`: counts events, keeps answers.
    fn pump(&mut self, wait: Duration) -> Result<(), DriverError> {
        let plan = self.plan;
        let mut got = Vec::new();
        self.conn.receive(wait, &mut |p| {
            if let Ok(a) = serde_json::from_slice::<Answer>(p) {
                got.push(a);
            }
        })?;
        let now = plan.now();
        let start = plan.start_ns.load(Ordering::Acquire);
        let stop = start.saturating_add(plan.config.duration.as_nanos() as u64);
        for a in got {
            match a.event.as_deref() {
                Some(kind) => {
                    if !self.counting {
                        continue;
                    }
                    self.last_event_ns = now;
                    if kind == "join" {
                        self.result.join_events += 1;
                    } else {
                        self.result.leave_events += 1;
                    }
                    if (start..stop).contains(&now) {
                        self.events_publishing += 1;
                    }
                }
                None => {
                    self.answers.insert(a.subject.clone(), a);
                }
            }
        }
        Ok(())
    }

    /// Asks every room in `rooms` `body`, and waits for every answer.
    fn ask(&mut self, rooms: &[&str], body: &[u8]) -> Result<HashMap<String, Answer>, String> {
        self.answers.clear();
        for room in rooms {
            self.conn
                .request(&query_subject(room), &self.inbox, body)
                .map_err(|e| format!("presence query: {e}"))?;
        }
        self.conn
            .flush()
            .map_err(|e| format!("presence query: {e}"))?;
        let deadline = self.plan.now() + ANSWER_TIMEOUT.as_nanos() as u64;
        while rooms.iter().any(|r| !self.answers.contains_key(*r)) {
            if self.plan.now() >= deadline {
                return Err(format!(
                    "presence query: no answer within {ANSWER_TIMEOUT:?}"
                ));
            }
            self.pump(RECEIVE_WAIT)
                .map_err(|e| format!("presence observer: {e}"))?;
        }
        Ok(std::mem::take(&mut self.answers))
    }

    /// One count round: true when every room's count is the harness's.
    fn counts_right(&mut self) -> Result<bool, String> {
        let rooms = &self.plan.layout.rooms;
        let want: Vec<usize> = rooms
            .iter()
            .map(|r| self.shared.present_of(&r.members))
            .collect();
        let subjects: Vec<&str> = rooms.iter().map(|r| r.subject.as_str()).collect();
        let answers = self.ask(&subjects, br#"{"count":true}"#)?;
        Ok(rooms
            .iter()
            .zip(&want)
            .all(|(r, &w)| answers.get(&r.subject).map(|a| a.count) == Some(w as u64)))
    }

    /// Lists every room's members and compares them with who is present.
    fn check_members(&mut self) -> Result<(), String> {
        let rooms = &self.plan.layout.rooms;
        for room in rooms {
            let mut listed = Vec::new();
            let mut offset = 0;
            loop {
                let body = format!(r#"{{"offset":{offset},"limit":{PAGE}}}"#);
                let mut answers = self.ask(&[room.subject.as_str()], body.as_bytes())?;
                let page = answers
                    .remove(&room.subject)
                    .ok_or_else(|| format!("no member list of {}", room.subject))?;
                let members = page.members.unwrap_or_default();
                let n = members.len();
                listed.extend(members.into_iter().map(|m| m.user));
                offset = page.offset.unwrap_or(offset) + n as u64;
                if n == 0 || offset >= page.count {
                    break;
                }
            }
            let present: Vec<u32> = room
                .members
                .iter()
                .copied()
                .filter(|&m| self.shared.present[m as usize].load(Ordering::Acquire))
                .collect();
            let m = compare(&present, &listed);
            self.result.ghosts += m.ghosts;
            self.result.missing += m.missing;
            if m != Mismatch::default() && self.result.mismatched_rooms.len() < 20 {
                self.result.mismatched_rooms.push(format!(
                    "{}: {} present, {} listed, {} ghosts, {} missing",
                    room.subject,
                    present.len(),
                    listed.len(),
                    m.ghosts,
                    m.missing
                ));
            }
        }
        Ok(())
    }
}

/// Watches presence from before the first join until the settle check, then releases the
/// held users. `conn` is already subscribed to the events and to `inbox`, and synced.
pub(super) fn observe(
    plan: &Plan,
    shared: &Shared,
    conn: Box<dyn Connection>,
    inbox: String,
) -> PresenceResult {
    let mut o = Observer {
        plan,
        shared,
        conn,
        inbox,
        result: PresenceResult::default(),
        events_publishing: 0,
        last_event_ns: 0,
        answers: HashMap::new(),
        counting: true,
    };
    if let Err(e) = watch(&mut o) {
        o.result.problems.push(e);
    }
    // Whatever happened, held users must not wait for a release that never comes.
    shared.release.store(true, Ordering::Release);
    let duration = plan.config.duration.as_secs_f64();
    if duration > 0.0 {
        o.result.events_per_sec = o.events_publishing as f64 / duration;
    }
    let mismatches = o.result.mismatches();
    if mismatches > 0 {
        o.result.problems.push(format!(
            "presence disagrees with the harness after settling: {} ghosts, {} missing ({})",
            o.result.ghosts,
            o.result.missing,
            o.result.mismatched_rooms.join("; ")
        ));
    }
    o.result
}

/// The count rounds after the storm, until one finds every room right.
struct Rounds {
    /// When the storm comes after the start (`None`: no storm, no rounds).
    storm_after: Option<Duration>,
    /// A round found every room right.
    right: bool,
    /// When the next round is due (ns since the origin).
    next: u64,
    /// Between rounds (ns).
    every: u64,
}

impl Rounds {
    /// Runs a round when one is due (after every thread's storm fired, until one is
    /// right); true when it ran one.
    fn step(&mut self, o: &mut Observer<'_>) -> Result<bool, String> {
        let plan = o.plan;
        let start = plan.start_ns.load(Ordering::Acquire);
        let Some(after) = self.storm_after else {
            return Ok(false);
        };
        if self.right
            || start == u64::MAX
            || o.shared.storms.load(Ordering::Acquire) < plan.config.threads
            || plan.now() < self.next
        {
            return Ok(false);
        }
        let storm = start + after.as_nanos() as u64;
        let asked_at = plan.now();
        o.result.count_rounds += 1;
        if o.counts_right()? {
            self.right = true;
            o.result.right_after_storm_ms = Some(asked_at.saturating_sub(storm) as f64 / 1e6);
        }
        self.next = asked_at + self.every;
        Ok(true)
    }
}

/// The observer's phases: count events (and, after the storm, count rounds until every
/// room is right) while users publish; wait until users settle and the window passed;
/// check every room's members.
fn watch(o: &mut Observer<'_>) -> Result<(), String> {
    let plan = o.plan;
    let config = &plan.config;
    let presence = config
        .presence
        .as_ref()
        .expect("observe runs with presence");
    let nanos = |d: Duration| d.as_nanos() as u64;
    let mut rounds = Rounds {
        storm_after: config.storm_at.filter(|&at| at < config.duration),
        right: false,
        next: 0,
        every: nanos(presence.poll_every),
    };
    let failed = |e: DriverError| format!("presence observer: {e}");

    // While users publish (and until they settle).
    let settled_by = loop {
        if plan.abort.load(Ordering::Acquire) {
            return Err("aborted before the presence settle check".into());
        }
        let now = plan.now();
        let start = plan.start_ns.load(Ordering::Acquire);
        let running = start != u64::MAX;
        let stop = start.saturating_add(nanos(config.duration));
        if rounds.step(o)? {
            continue;
        }
        if running && now >= stop {
            let settled = o.shared.settled.load(Ordering::Acquire);
            if settled >= config.users as i64 {
                break now;
            }
            if now >= stop + nanos(config.reconnect_timeout + SETTLE_SLACK) {
                o.result.problems.push(format!(
                    "only {settled} of {} users settled after publishing stopped",
                    config.users
                ));
                break now;
            }
        }
        o.pump(RECEIVE_WAIT).map_err(failed)?;
    };
    // Wait out the window since the last change.
    let quiet = nanos(presence.grace + presence.margin);
    let give_up = settled_by + 2 * quiet + nanos(SETTLE_SLACK);
    loop {
        if plan.abort.load(Ordering::Acquire) {
            return Err("aborted before the presence settle check".into());
        }
        let now = plan.now();
        let last = o
            .last_event_ns
            .max(o.shared.last_end_ns.load(Ordering::Acquire))
            .max(settled_by);
        if now >= last + quiet {
            break;
        }
        if rounds.step(o)? {
            continue;
        }
        if now >= give_up {
            o.result.problems.push(format!(
                "presence events kept coming {:?} after users settled",
                Duration::from_nanos(now - settled_by)
            ));
            break;
        }
        o.pump(RECEIVE_WAIT).map_err(failed)?;
    }

    // A last round, due or not, if none was right yet.
    rounds.next = 0;
    rounds.step(o)?;
    if rounds.storm_after.is_some() && !rounds.right {
        o.result.problems.push(format!(
            "rooms' presence counts were not right after the storm, even settled ({} rounds)",
            o.result.count_rounds
        ));
    }

    // The check: nothing moves now (users are held), so the numbers are taken together.
    o.counting = false;
    o.result.joins = o.shared.joins.load(Ordering::Acquire);
    o.result.ends = o.shared.ends.load(Ordering::Acquire);
    o.result.suppressed = (o.result.joins + o.result.ends) as i64 - o.result.events() as i64;
    o.check_members()?;
    o.result.checked = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_indices_come_from_names_with_or_without_client_ids() {
        assert_eq!(user_index("u12"), Some(12));
        assert_eq!(user_index("u12#40"), Some(12));
        assert_eq!(user_index("u0"), Some(0));
        assert_eq!(user_index("u"), None);
        assert_eq!(user_index("x12"), None);
        assert_eq!(user_index("u1x#3"), None);
        assert_eq!(user_index("#3"), None);
        assert_eq!(identity(7), "u7");
    }

    #[test]
    fn subjects_are_the_brokers() {
        assert_eq!(join_subject("a.room.1"), "$TERN.PRESENCE.JOIN.a.room.1");
        assert_eq!(leave_subject("a.viral"), "$TERN.PRESENCE.LEAVE.a.viral");
        assert_eq!(query_subject("a.viral"), "$TERN.PRESENCE.a.viral");
        assert_eq!(events_subject("a"), "$TERN.PRESENCE.EVENTS.a.>");
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn comparison_counts_ghosts_and_missing() {
        assert_eq!(compare(&[1, 2], &names(&["u2", "u1"])), Mismatch::default());
        // A lingering old connection's member beside the new one (no authentication).
        assert_eq!(
            compare(&[1, 2], &names(&["u1#5", "u2#6", "u1#9"])),
            Mismatch {
                ghosts: 1,
                missing: 0
            }
        );
        assert_eq!(
            compare(&[1, 2, 3], &names(&["u1", "stranger"])),
            Mismatch {
                ghosts: 1,
                missing: 2
            }
        );
        assert_eq!(compare(&[], &[]), Mismatch::default());
    }

    #[test]
    fn answers_and_events_parse() {
        let e: Answer = serde_json::from_slice(
            br#"{"event":"leave","subject":"a.viral","user":"u3#9","count":4}"#,
        )
        .unwrap();
        assert_eq!((e.event.as_deref(), e.count), (Some("leave"), 4));
        let c: Answer = serde_json::from_slice(br#"{"subject":"a.viral","count":7}"#).unwrap();
        assert!(c.event.is_none() && c.members.is_none() && c.count == 7);
        let p: Answer = serde_json::from_slice(
            br#"{"subject":"a.room.1","count":2,"offset":0,"members":[{"user":"u1","connections":[3],"info":"x","since":1},{"user":"u4","connections":[5,6],"info_b64":"AA==","since":2}]}"#,
        )
        .unwrap();
        let users: Vec<_> = p.members.unwrap().into_iter().map(|m| m.user).collect();
        assert_eq!(users, ["u1", "u4"]);
        assert!(serde_json::from_slice::<Answer>(b"MJ\x00\x01").is_err());
    }

    #[test]
    fn suppressed_counts_both_events_of_a_hidden_reconnect() {
        let r = PresenceResult {
            join_events: 10,
            leave_events: 4,
            joins: 12,
            ends: 6,
            suppressed: (12 + 6) - 14,
            ..PresenceResult::default()
        };
        assert_eq!(r.events(), 14);
        assert_eq!(r.suppressed, 4);
        assert_eq!(r.mismatches(), 0);
    }
}

//! Presence: who is in a room, for a subscription that joined it or watches it
//! ([`Presence`], [`PresenceEvent`]), and the answer to a query ([`PresencePage`]); a
//! room's member either way ([`Member`]).
//!
//! Owns: turning a subscription's `PRESENCE` frames into [`PresenceEvent`]s (a snapshot
//! sent in several frames is handed out as one), the room as the subscription knows it
//! (the last snapshot plus the joins and leaves since: [`Presence::members`]), the bounded
//! queue of its events and that queue's overflow rule, and putting together a query's
//! answer ([`QueryWaiter`]).
//!
//! The overflow rule: the queue holds at most its capacity of events. When it is full, the
//! join, leave and snapshot events still queued are replaced by one snapshot of the room as
//! it is now (the new event included), and the subscription's own join outcome, the latest
//! one, is kept. A snapshot from the broker replaces the membership events queued before
//! it too: it makes them obsolete. An application that falls behind therefore
//! sees fewer events, never a wrong room: the broker does the same for a subscriber whose
//! queue on the broker overflows (a fresh snapshot instead of the missed events).
//!
//! Never: blocks the I/O thread (it holds a presence lock only to update the view and the
//! queue; the application's waits release it), or makes the view depend on what the
//! application reads: it is kept from every frame, taken or not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::Sender;
use tern_protocol::binary::{self, PresenceBody};

use crate::shared::SubEnd;
use crate::{Error, ErrorCode};

/// The most members one query may ask for (`PRESENCE_QUERY`'s limit).
pub(crate) const MAX_PAGE: u32 = 1000;

/// The default bound of a subscription's presence queue, in events.
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

/// The smallest presence queue: room for the subscription's own join outcome and one
/// snapshot, what the overflow rule leaves.
const MIN_CAPACITY: usize = 2;

/// A member of a room: in a [`PresenceEvent`], in [`Presence::members`], in a
/// [`PresencePage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its identity: the authenticated user, or without authentication the connection's
    /// name and the broker's id for it (`alice#12`).
    pub user: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Its connections in the room; 0 while it lingers in the broker's grace window after
    /// its last connection left.
    pub connections: u16,
    /// The info it joined with (shown to others, never used for identity).
    pub info: Bytes,
}

impl Member {
    /// When it joined.
    pub fn since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.since_ms)
    }

    /// The info as UTF-8, if it is.
    pub fn info_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.info).ok()
    }

    pub(crate) fn from_wire(m: binary::Member) -> Member {
        Member {
            user: text(&m.user),
            since_ms: m.since_ms,
            connections: m.connections,
            info: m.info,
        }
    }
}

/// Something that happened in a subscription's room, or to its join; from
/// [`Presence::recv`] and its siblings.
///
/// `count` is always the room's member count after the event, as the broker counts it
/// (members lingering in the grace window included).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceEvent {
    /// This subscription's join was applied (after the subscribe, and again after every
    /// resubscribe on a reconnect): who it is in the room.
    Joined {
        /// This connection's identity in the room.
        user: String,
        /// The room's member count.
        count: u32,
    },
    /// This subscription's join was refused: a limit of the broker's (room full, too many
    /// rooms; `code` [`ErrorCode::PresenceRefused`], the text names the limit). The
    /// subscription stays, as a plain one: its messages still come.
    Refused {
        /// Why, as a code.
        code: ErrorCode,
        /// The broker's text.
        message: String,
    },
    /// The room's members, in join order, replacing what was known: the first event of a
    /// subscription that watches a room ([`SubscribeBuilder::presence_events`]), and again
    /// after a reconnect, when the broker had to drop events for it, or when this
    /// client's queue overflowed (see [`Presence`]).
    ///
    /// [`SubscribeBuilder::presence_events`]: crate::SubscribeBuilder::presence_events
    Snapshot {
        /// Every member, in join order.
        members: Vec<Member>,
        /// The room's member count.
        count: u32,
    },
    /// A member joined.
    Join {
        /// Who, with the info it joined with.
        member: Member,
        /// The room's member count.
        count: u32,
    },
    /// A member left: its last connection unsubscribed, or closed and did not come back
    /// within the broker's grace window.
    Leave {
        /// Who.
        user: String,
        /// The room's member count.
        count: u32,
    },
}

impl PresenceEvent {
    /// True for the events about the subscription's own join.
    fn is_own(&self) -> bool {
        matches!(
            self,
            PresenceEvent::Joined { .. } | PresenceEvent::Refused { .. }
        )
    }
}

/// One page of a room's members: the answer to [`Client::presence`](crate::Client::presence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresencePage {
    /// The room's member count when the broker answered.
    pub count: u32,
    /// Where in the room's join order the first member of this page is.
    pub offset: u32,
    /// The members, in join order.
    pub members: Vec<Member>,
}

impl PresencePage {
    /// The offset of the next page, or `None` when this page reaches the end of the room.
    pub fn next_offset(&self) -> Option<u32> {
        let next = self
            .offset
            .saturating_add(u32::try_from(self.members.len()).unwrap_or(u32::MAX));
        (!self.members.is_empty() && next < self.count).then_some(next)
    }
}

/// A subscription's presence: the events of its room (or of its own join), in a bounded
/// queue, and the room's members as this client knows them; from
/// [`Subscription::presence`](crate::Subscription::presence).
///
/// Take events with [`recv`](Self::recv), [`recv_timeout`](Self::recv_timeout),
/// [`try_recv`](Self::try_recv) or by iterating (`for event in &presence`), which ends when
/// the subscription does. Or do not take them at all and look at
/// [`members`](Self::members) when needed: the view is kept up to date either way.
///
/// The queue is bounded ([`SubscribeBuilder::presence_capacity`]). An application that does
/// not keep up gets, in place of the membership events it did not take, one
/// [`PresenceEvent::Snapshot`] of the room as it is now; a snapshot from the broker also
/// replaces the membership events still queued before it. The latest of the subscription's
/// own join outcomes ([`Joined`](PresenceEvent::Joined), [`Refused`](PresenceEvent::Refused))
/// is always kept. [`superseded`](Self::superseded) counts the events replaced.
///
/// A clone shares the queue (each event is taken once). The handle may outlive its
/// [`Subscription`](crate::Subscription): once that ends, the events still queued are
/// handed out, then `recv` returns why it ended.
///
/// [`SubscribeBuilder::presence_capacity`]: crate::SubscribeBuilder::presence_capacity
#[derive(Debug, Clone)]
pub struct Presence {
    sid: u32,
    shared: Arc<PresenceShared>,
}

impl Presence {
    pub(crate) fn new(sid: u32, shared: Arc<PresenceShared>) -> Presence {
        Presence { sid, shared }
    }

    /// The subscription's sid.
    pub fn sid(&self) -> u32 {
        self.sid
    }

    /// Waits for the next event. After the subscription ended and the queue is empty:
    /// [`Error::Unsubscribed`], [`Error::Closed`], or the broker's refusal of the
    /// subscription ([`Error::Server`], e.g. [`ErrorCode::PresenceRefused`] for an info
    /// over the broker's `max_presence_info`).
    pub fn recv(&self) -> Result<PresenceEvent, Error> {
        self.shared.recv(None)
    }

    /// Waits up to `timeout` for the next event ([`Error::Timeout`] if none came).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<PresenceEvent, Error> {
        // A timeout too long for an `Instant` (`Duration::MAX`) is no timeout.
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.shared.recv(Some(deadline)),
            None => self.shared.recv(None),
        }
    }

    /// The next event if one is queued, `Ok(None)` if not.
    pub fn try_recv(&self) -> Result<Option<PresenceEvent>, Error> {
        let mut state = self.shared.lock();
        match state.queue.pop_front() {
            Some(event) => Ok(Some(event)),
            None => match &state.end {
                Some(end) => Err(end.to_error()),
                None => Ok(None),
            },
        }
    }

    /// Iterates over events as they arrive; ends when the subscription does.
    pub fn iter(&self) -> PresenceIter<'_> {
        PresenceIter { presence: self }
    }

    /// The room's members in join order, as of the last `PRESENCE` frame received (which
    /// may be ahead of the events still queued); `None` until the first snapshot has
    /// arrived, and always for a subscription that joined without
    /// [`presence_events`](crate::SubscribeBuilder::presence_events). While disconnected,
    /// the room as it was; the resubscribe brings a fresh snapshot.
    pub fn members(&self) -> Option<Vec<Member>> {
        self.shared.lock().view.as_ref().map(View::members)
    }

    /// The room's member count from the last `PRESENCE` frame received; `None` before one.
    pub fn count(&self) -> Option<u32> {
        self.shared.lock().count
    }

    /// Who this subscription is in the room, from its last
    /// [`Joined`](PresenceEvent::Joined); `None` before it, when it did not join, or when
    /// its last join was [`Refused`](PresenceEvent::Refused).
    pub fn user(&self) -> Option<String> {
        self.shared.lock().user.clone()
    }

    /// Events queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Events replaced before the application took them (by a snapshot, or by a later
    /// outcome of the subscription's own join), so far.
    pub fn superseded(&self) -> u64 {
        self.shared.lock().superseded
    }
}

/// A blocking iterator over a subscription's presence events; from [`Presence::iter`].
#[derive(Debug)]
pub struct PresenceIter<'a> {
    presence: &'a Presence,
}

impl Iterator for PresenceIter<'_> {
    type Item = PresenceEvent;

    fn next(&mut self) -> Option<PresenceEvent> {
        self.presence.recv().ok()
    }
}

impl<'a> IntoIterator for &'a Presence {
    type Item = PresenceEvent;
    type IntoIter = PresenceIter<'a>;

    fn into_iter(self) -> PresenceIter<'a> {
        self.iter()
    }
}

/// What a subscription's [`Presence`] handles share with the I/O thread.
#[derive(Debug)]
pub(crate) struct PresenceShared {
    state: Mutex<PresenceState>,
    /// Signalled when an event is queued or the subscription ends.
    ready: Condvar,
}

impl PresenceShared {
    pub(crate) fn new(capacity: usize) -> PresenceShared {
        PresenceShared {
            state: Mutex::new(PresenceState::new(capacity)),
            ready: Condvar::new(),
        }
    }

    /// The state. Every update is a single-step change of plain data, so a panic while it
    /// was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, PresenceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in one `PRESENCE` frame for the subscription (I/O thread).
    pub(crate) fn apply(&self, frame: binary::Presence) {
        if self.lock().apply(frame) {
            self.ready.notify_all();
        }
    }

    /// Records why the subscription ended (the first reason stays).
    pub(crate) fn end(&self, why: SubEnd) {
        self.lock().end.get_or_insert(why);
        self.ready.notify_all();
    }

    fn recv(&self, deadline: Option<Instant>) -> Result<PresenceEvent, Error> {
        let mut state = self.lock();
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Ok(event);
            }
            if let Some(end) = &state.end {
                return Err(end.to_error());
            }
            state = match deadline {
                None => self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout);
                    }
                    self.ready
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// The room's members in join order, with an index by user: a join, a leave and a lookup
/// cost O(log n), whatever the room's size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct View {
    /// By position in join order (gaps where members left).
    by_position: BTreeMap<u64, Member>,
    position_of: HashMap<String, u64>,
    next: u64,
}

impl View {
    fn from_members(members: &[Member]) -> View {
        let mut view = View::default();
        for m in members {
            view.join(m.clone());
        }
        view
    }

    /// A member joins at the end; one already present (another connection of the same
    /// user, a snapshot frame listing it twice) is updated where it is.
    fn join(&mut self, member: Member) {
        match self.position_of.get(&member.user) {
            Some(&at) => {
                self.by_position.insert(at, member);
            }
            None => {
                let at = self.next;
                self.next += 1;
                self.position_of.insert(member.user.clone(), at);
                self.by_position.insert(at, member);
            }
        }
    }

    fn leave(&mut self, user: &str) {
        if let Some(at) = self.position_of.remove(user) {
            self.by_position.remove(&at);
        }
    }

    fn members(&self) -> Vec<Member> {
        self.by_position.values().cloned().collect()
    }
}

/// A subscription's presence: the view, the queue, and a snapshot being put together.
#[derive(Debug)]
pub(crate) struct PresenceState {
    queue: VecDeque<PresenceEvent>,
    capacity: usize,
    /// The room, from the last complete snapshot and the joins and leaves since.
    view: Option<View>,
    /// The members of a snapshot whose last frame (without `more`) has not come yet.
    assembling: Option<Vec<Member>>,
    count: Option<u32>,
    user: Option<String>,
    superseded: u64,
    end: Option<SubEnd>,
}

impl PresenceState {
    pub(crate) fn new(capacity: usize) -> PresenceState {
        PresenceState {
            queue: VecDeque::new(),
            capacity: capacity.max(MIN_CAPACITY),
            view: None,
            assembling: None,
            count: None,
            user: None,
            superseded: 0,
            end: None,
        }
    }

    /// Takes in one frame; true when an event was queued.
    fn apply(&mut self, frame: binary::Presence) -> bool {
        let count = frame.count;
        let event = match frame.body {
            PresenceBody::Joined { user, .. } => {
                let user = text(&user);
                self.user = Some(user.clone());
                self.count = Some(count);
                PresenceEvent::Joined { user, count }
            }
            PresenceBody::Refused { code, message } => {
                // A resubscribe's join refused: the subscription is no longer a member.
                self.user = None;
                PresenceEvent::Refused {
                    code,
                    message: text(&message),
                }
            }
            PresenceBody::Join(member) => {
                let member = Member::from_wire(member);
                self.count = Some(count);
                if let Some(view) = self.view.as_mut() {
                    view.join(member.clone());
                }
                PresenceEvent::Join { member, count }
            }
            PresenceBody::Leave { user } => {
                let user = text(&user);
                self.count = Some(count);
                if let Some(view) = self.view.as_mut() {
                    view.leave(&user);
                }
                PresenceEvent::Leave { user, count }
            }
            PresenceBody::Snapshot { offset, members } => {
                // Offset 0 starts a snapshot (and abandons one left unfinished); a
                // continuation must carry on exactly where the members so far end, or the
                // snapshot cannot be trusted and is dropped: the broker sends a fresh one
                // whenever it had to drop frames for the subscription.
                if offset == 0 {
                    self.assembling = Some(Vec::with_capacity(members.len()));
                }
                let Some(assembling) = self.assembling.as_mut() else {
                    return false;
                };
                if usize::try_from(offset).ok() != Some(assembling.len()) {
                    self.assembling = None;
                    return false;
                }
                assembling.extend(members.into_iter().map(Member::from_wire));
                if frame.more {
                    return false;
                }
                let members = self.assembling.take().unwrap_or_default();
                self.view = Some(View::from_members(&members));
                self.count = Some(count);
                PresenceEvent::Snapshot { members, count }
            }
            // A query's answer, never a subscription's.
            PresenceBody::Page { .. } => return false,
        };
        self.push(event);
        true
    }

    /// Queues `event` under the overflow rule (see the module's doc). The view already
    /// includes it.
    fn push(&mut self, event: PresenceEvent) {
        if matches!(event, PresenceEvent::Snapshot { .. }) {
            let before = self.queue.len();
            self.queue.retain(PresenceEvent::is_own);
            self.superseded += (before - self.queue.len()) as u64;
        }
        if self.queue.len() >= self.capacity {
            let own = event.is_own();
            // The latest own outcome survives, unless the new event is a later one.
            let keep = if own {
                None
            } else {
                self.queue.iter().rev().find(|e| e.is_own()).cloned()
            };
            let had_membership = self.queue.iter().any(|e| !e.is_own());
            self.superseded += (self.queue.len() - usize::from(keep.is_some())) as u64;
            self.queue.clear();
            self.queue.extend(keep);
            if let Some(view) = &self.view {
                if !own || had_membership {
                    let members = view.members();
                    let count = self
                        .count
                        .unwrap_or_else(|| u32::try_from(members.len()).unwrap_or(u32::MAX));
                    self.queue
                        .push_back(PresenceEvent::Snapshot { members, count });
                    if !own {
                        // The new membership event is in that snapshot.
                        self.superseded += 1;
                        return;
                    }
                }
            }
        }
        self.queue.push_back(event);
    }
}

/// A [`Client::presence`](crate::Client::presence) call waiting for its answer, and the
/// members of a page that came in several frames (`more`).
#[derive(Debug)]
pub(crate) struct QueryWaiter {
    pub(crate) tx: Sender<Result<PresencePage, Error>>,
    page: Option<PresencePage>,
}

impl QueryWaiter {
    pub(crate) fn new(tx: Sender<Result<PresencePage, Error>>) -> QueryWaiter {
        QueryWaiter { tx, page: None }
    }

    /// Takes in one `PRESENCE` frame carrying the query's id: `Some` answer once it is
    /// complete (the last frame of a page, or a refusal), `None` while more is to come.
    pub(crate) fn take(&mut self, frame: binary::Presence) -> Option<Result<PresencePage, Error>> {
        match frame.body {
            PresenceBody::Page { offset, members } => {
                let page = self.page.get_or_insert_with(|| PresencePage {
                    count: frame.count,
                    offset,
                    members: Vec::with_capacity(members.len()),
                });
                page.count = frame.count;
                page.members
                    .extend(members.into_iter().map(Member::from_wire));
                if frame.more {
                    return None;
                }
                self.page.take().map(Ok)
            }
            PresenceBody::Refused { code, message } => Some(Err(Error::Server {
                code,
                message: text(&message),
            })),
            other => Some(Err(Error::Protocol(format!(
                "a PRESENCE {} frame answered a query",
                kind_name(&other)
            )))),
        }
    }
}

fn kind_name(body: &PresenceBody) -> &'static str {
    match body {
        PresenceBody::Join(_) => "join",
        PresenceBody::Leave { .. } => "leave",
        PresenceBody::Joined { .. } => "joined",
        PresenceBody::Snapshot { .. } => "snapshot",
        PresenceBody::Page { .. } => "page",
        PresenceBody::Refused { .. } => "refused",
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(user: &str) -> binary::Member {
        binary::Member {
            user: Bytes::copy_from_slice(user.as_bytes()),
            since_ms: 1_000,
            connections: 1,
            info: Bytes::from_static(b"hi"),
        }
    }

    fn frame(count: u32, more: bool, body: PresenceBody) -> binary::Presence {
        binary::Presence {
            id: 3,
            query: false,
            more,
            count,
            body,
        }
    }

    fn snapshot(offset: u32, users: &[&str], count: u32, more: bool) -> binary::Presence {
        frame(
            count,
            more,
            PresenceBody::Snapshot {
                offset,
                members: users.iter().map(|u| wire(u)).collect(),
            },
        )
    }

    fn join(user: &str, count: u32) -> binary::Presence {
        frame(count, false, PresenceBody::Join(wire(user)))
    }

    fn leave(user: &str, count: u32) -> binary::Presence {
        frame(
            count,
            false,
            PresenceBody::Leave {
                user: Bytes::copy_from_slice(user.as_bytes()),
            },
        )
    }

    fn joined(user: &str, count: u32) -> binary::Presence {
        frame(
            count,
            false,
            PresenceBody::Joined {
                user: Bytes::copy_from_slice(user.as_bytes()),
                member_token: Bytes::from_static(b"token"),
            },
        )
    }

    fn users(members: &[Member]) -> Vec<&str> {
        members.iter().map(|m| m.user.as_str()).collect()
    }

    fn view_users(s: &PresenceState) -> Option<Vec<String>> {
        s.view
            .as_ref()
            .map(|v| v.members().into_iter().map(|m| m.user).collect())
    }

    /// The queue, as short strings.
    fn queued(s: &PresenceState) -> Vec<String> {
        s.queue
            .iter()
            .map(|e| match e {
                PresenceEvent::Joined { user, count } => format!("joined {user} {count}"),
                PresenceEvent::Refused { code, .. } => format!("refused {code:?}"),
                PresenceEvent::Snapshot { members, count } => {
                    format!("snapshot [{}] {count}", users(members).join(","))
                }
                PresenceEvent::Join { member, count } => format!("join {} {count}", member.user),
                PresenceEvent::Leave { user, count } => format!("leave {user} {count}"),
            })
            .collect()
    }

    #[test]
    fn a_snapshot_in_several_frames_is_one_event() {
        let mut s = PresenceState::new(16);
        assert!(!s.apply(snapshot(0, &["a", "b"], 5, true)));
        assert!(!s.apply(snapshot(2, &["c", "d"], 5, true)));
        assert_eq!(s.view, None, "no view before the last frame");
        assert!(s.apply(snapshot(4, &["e"], 5, false)));
        assert_eq!(queued(&s), ["snapshot [a,b,c,d,e] 5"]);
        assert_eq!(
            view_users(&s).unwrap(),
            ["a", "b", "c", "d", "e"].map(String::from)
        );
        assert_eq!(s.count, Some(5));
    }

    #[test]
    fn offset_zero_restarts_and_a_continuation_out_of_place_is_dropped() {
        let mut s = PresenceState::new(16);
        // Abandoned after one frame; a new snapshot starts over.
        s.apply(snapshot(0, &["a", "b"], 4, true));
        s.apply(snapshot(0, &["x"], 2, true));
        s.apply(snapshot(1, &["y"], 2, false));
        assert_eq!(queued(&s), ["snapshot [x,y] 2"]);
        // A continuation that skips members: the snapshot is dropped, the view kept.
        s.apply(snapshot(0, &["p"], 3, true));
        assert!(!s.apply(snapshot(2, &["r"], 3, false)));
        // A continuation without its start is ignored too.
        assert!(!s.apply(snapshot(1, &["q"], 3, false)));
        assert_eq!(queued(&s), ["snapshot [x,y] 2"]);
        assert_eq!(view_users(&s).unwrap(), ["x", "y"].map(String::from));
        // An empty room is a snapshot too.
        s.apply(snapshot(0, &[], 0, false));
        assert_eq!(view_users(&s).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn joins_and_leaves_keep_the_view_in_join_order() {
        let mut s = PresenceState::new(16);
        s.apply(joined("me#1", 1));
        s.apply(snapshot(0, &["me#1", "a"], 2, false));
        s.apply(join("b", 3));
        s.apply(leave("a", 2));
        s.apply(join("c", 3));
        // Another connection of a member already present: updated where it is.
        let mut again = wire("b");
        again.connections = 2;
        s.apply(frame(3, false, PresenceBody::Join(again)));
        // A leave of someone unknown (its join was coalesced away) changes nothing.
        s.apply(leave("ghost", 3));
        let members = s.view.as_ref().unwrap().members();
        assert_eq!(users(&members), ["me#1", "b", "c"]);
        assert_eq!(members[1].connections, 2);
        assert_eq!((s.count, s.user.as_deref()), (Some(3), Some("me#1")));
        assert_eq!(
            queued(&s),
            [
                "joined me#1 1",
                "snapshot [me#1,a] 2",
                "join b 3",
                "leave a 2",
                "join c 3",
                "join b 3",
                "leave ghost 3"
            ]
        );
    }

    #[test]
    fn a_snapshot_replaces_the_membership_events_queued_before_it() {
        let mut s = PresenceState::new(16);
        s.apply(snapshot(0, &["a"], 1, false));
        s.apply(join("b", 2));
        s.apply(joined("me", 3));
        s.apply(leave("a", 2));
        s.apply(snapshot(0, &["b", "me", "c"], 3, true));
        assert_eq!(
            s.queue.len(),
            4,
            "nothing replaced before the snapshot is whole"
        );
        s.apply(snapshot(3, &["d"], 4, false));
        assert_eq!(queued(&s), ["joined me 3", "snapshot [b,me,c,d] 4"]);
        assert_eq!(s.superseded, 3);
    }

    #[test]
    fn an_overflowing_queue_becomes_a_snapshot_of_the_room_as_it_is() {
        let mut s = PresenceState::new(4);
        s.apply(joined("me", 1));
        s.apply(snapshot(0, &["me"], 1, false));
        s.apply(join("a", 2));
        s.apply(join("b", 3));
        assert_eq!(s.queue.len(), 4);
        // Full: the membership events and the new one become one snapshot; the join
        // outcome stays.
        s.apply(leave("me", 2));
        assert_eq!(queued(&s), ["joined me 1", "snapshot [a,b] 2"]);
        assert_eq!(s.superseded, 4);
        s.apply(join("c", 3));
        s.apply(join("d", 4));
        s.apply(join("e", 5));
        assert_eq!(queued(&s), ["joined me 1", "snapshot [a,b,c,d,e] 5"]);
        assert_eq!(s.superseded, 4 + 4);
        // A new own outcome on a full queue replaces the older ones; the membership
        // events still become a snapshot.
        s.apply(join("me", 6));
        s.apply(joined("me", 6));
        s.apply(joined("me", 6));
        assert_eq!(queued(&s), ["snapshot [a,b,c,d,e,me] 6", "joined me 6"]);
        assert_eq!(s.superseded, 8 + 4);
    }

    #[test]
    fn own_outcomes_alone_stay_bounded() {
        let mut s = PresenceState::new(0); // raised to the minimum, 2
        for n in 1..=5 {
            s.apply(joined("me", n));
        }
        s.apply(frame(
            5,
            false,
            PresenceBody::Refused {
                code: ErrorCode::PresenceRefused,
                message: Bytes::from_static(b"room is full"),
            },
        ));
        assert_eq!(queued(&s), ["joined me 5", "refused PresenceRefused"]);
        assert_eq!(s.superseded, 4);
        assert_eq!(s.user, None, "no longer a member");
        // Without a view (no snapshot yet), membership events that overflow are dropped,
        // oldest first; the latest own outcome stays.
        s.apply(join("a", 1));
        s.apply(join("b", 2));
        assert_eq!(queued(&s), ["refused PresenceRefused", "join b 2"]);
        assert_eq!(s.superseded, 6);
    }

    #[test]
    fn the_handle_hands_out_events_then_the_end() {
        let shared = Arc::new(PresenceShared::new(8));
        let presence = Presence::new(3, Arc::clone(&shared));
        assert!(matches!(
            presence.recv_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
        assert!(matches!(presence.try_recv(), Ok(None)));
        assert_eq!(presence.members(), None);
        shared.apply(joined("me", 1));
        assert!(matches!(
            presence.recv_timeout(Duration::MAX),
            Ok(PresenceEvent::Joined { .. })
        ));
        let waiter = {
            let p = presence.clone();
            std::thread::spawn(move || p.recv_timeout(Duration::from_secs(10)))
        };
        shared.apply(snapshot(0, &["a"], 1, false));
        assert!(matches!(
            waiter.join().unwrap(),
            Ok(PresenceEvent::Snapshot { count: 1, .. })
        ));
        shared.apply(join("b", 2));
        shared.end(SubEnd::Unsubscribed);
        shared.end(SubEnd::Closed); // the first reason stays
        assert!(matches!(
            presence.try_recv(),
            Ok(Some(PresenceEvent::Join { count: 2, .. }))
        ));
        assert!(matches!(presence.try_recv(), Err(Error::Unsubscribed)));
        assert!(matches!(presence.recv(), Err(Error::Unsubscribed)));
        assert_eq!(presence.iter().count(), 0);
        assert_eq!(
            presence.members().map(|m| users(&m).join(",")),
            Some("a,b".to_string())
        );
        assert_eq!(presence.count(), Some(2));
    }

    #[test]
    fn a_query_answer_in_several_frames_is_one_page() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut w = QueryWaiter::new(tx);
        let page = |offset, users: &[&str], count, more| binary::Presence {
            id: 9,
            query: true,
            more,
            count,
            body: PresenceBody::Page {
                offset,
                members: users.iter().map(|u| wire(u)).collect(),
            },
        };
        assert!(w.take(page(10, &["a", "b"], 14, true)).is_none());
        let p = w.take(page(12, &["c"], 14, false)).unwrap().unwrap();
        assert_eq!(
            (p.count, p.offset, users(&p.members)),
            (14, 10, vec!["a", "b", "c"])
        );
        assert_eq!(p.next_offset(), Some(13));
        let last = w.take(page(13, &["d"], 14, false)).unwrap().unwrap();
        assert_eq!(last.next_offset(), None);
        let count_only = w.take(page(0, &[], 7, false)).unwrap().unwrap();
        assert_eq!((count_only.count, count_only.next_offset()), (7, None));
        let refused = w.take(binary::Presence {
            id: 9,
            query: true,
            more: false,
            count: 0,
            body: PresenceBody::Refused {
                code: ErrorCode::PermissionViolation,
                message: Bytes::from_static(b"no"),
            },
        });
        match refused {
            Some(Err(Error::Server { code, message })) => {
                assert_eq!(
                    (code, message.as_str()),
                    (ErrorCode::PermissionViolation, "no")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn members_convert_from_the_wire() {
        let m = Member::from_wire(binary::Member {
            user: Bytes::from_static(b"alice#12"),
            since_ms: 1_500,
            connections: 0,
            info: Bytes::from_static(b"\xff"),
        });
        assert_eq!(m.user, "alice#12");
        assert_eq!(m.since(), UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(m.info_str(), None);
    }
}

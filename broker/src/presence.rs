//! Presence: who is in a room, for the rooms one worker holds.
//!
//! A room is a literal subject. A member is an identity string the caller chose (the
//! authenticated user, or for an anonymous connection its name and id) with an info blob;
//! one member may be in a room through several connections (tabs, devices), and leaves
//! when its last one does.
//!
//! Owns: [`Rooms`], one worker's rooms: their members in join order, which connections
//! each member is in through, the reverse index from a connection to its rooms, and the
//! grace deadlines of members whose last connection left; [`PresenceEvent`], the join and
//! leave events those changes make; the JSON the broker publishes for them
//! ([`event_json`], [`page_json`], [`count_json`], [`snapshot_json`]) and the binary
//! `PRESENCE` frames it sends ([`event_frame`], [`members_frames`], [`joined_frame`],
//! [`refused_frame`]); and member tokens ([`member_token`], [`member_of_token`]), which let
//! an anonymous binary client that reconnects stay the member it was.
//!
//! Contract:
//! - Reconnect storms are not event storms. When a member's last connection leaves with
//!   grace, the member lingers (and counts as present) until its deadline, `grace` later;
//!   a connection joining with the same identity before [`Rooms::expire`] reaches it
//!   cancels the leave, and makes neither a leave nor a join event. Every change that
//!   does make an event returns it, exactly once: per room, the joins of new members minus
//!   the leaves equals [`Rooms::count`] (a join that only changes a present member's info
//!   is the one other join event).
//! - A member's info is the info of its latest join; `since` is when it first joined, kept
//!   across rejoins within the grace window.
//! - Members are listed in join order: an entry's place never changes while it is in the
//!   room (a leave leaves a hole, compacted away once holes outnumber members).
//! - Costs: `join`, `leave` and `count` are O(1) amortised (plus the member's own
//!   connections); `leave_all` is O(rooms of that connection); `expire` is O(due members)
//!   and O(1) when none is due; `members` is O(offset + limit) with holes at most as many
//!   as members; `largest` is O(rooms × log n).
//! - Bounded by the limits: at most `max_rooms` rooms, each with at most `max_members`
//!   members (holes included, at most 2 × `max_members` + 8 entries), each info at most
//!   `max_info` bytes; one grace deadline per lingering member, never a stale one (a
//!   cancelled deadline is removed, not skipped). Connections per room and rooms per
//!   connection are bounded by the connections the broker admits and the rooms here. Lower
//!   limits from [`Rooms::set_limits`] refuse later joins; nobody present is dropped.
//! - Subjects and info blobs are copied when they are stored, so that a slice of a
//!   connection's read buffer is never kept alive by a room.
//!
//! Never: reads a clock (`Instant`s and unix times are passed in), touches a socket, takes
//! a lock or shares state with another thread: each room lives on exactly one worker, which
//! the caller routes to by subject. It publishes nothing itself; the caller publishes the
//! events it returns.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use ring::hmac;
use ring::rand::SystemRandom;
use serde::Serialize;
use tern_protocol::binary::{
    encode_server_frame, ErrorCode, Member as WireMember, Presence, PresenceBody, ServerFrame,
};

use crate::index::{FastMap, FastSet};
use crate::names::named_enum;

/// Connection identity as the broker knows it (a copy of the broker's `ConnId` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnKey {
    pub worker: u16,
    pub slot: u32,
    pub gen: u32,
}

/// The bounds of one worker's presence state (`[presence]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresenceLimits {
    /// Members per room (`max_presence_members`).
    pub max_members: usize,
    /// Bytes of a join's info blob (`max_presence_info`).
    pub max_info: usize,
    /// Rooms held on this worker (`max_presence_rooms`).
    pub max_rooms: usize,
    /// The reconnect grace window (`presence_grace`); zero: a member leaves at once.
    pub grace: Duration,
}

/// Why a join was refused; the text is what the client sees, naming the limit and its
/// configuration key. Nothing changes on a refused join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinRefusal {
    #[error("presence info of {size} bytes is over max_presence_info ({max} bytes)")]
    InfoTooLarge { size: usize, max: usize },
    #[error("room is full: max_presence_members ({max})")]
    RoomFull { max: usize },
    #[error("too many presence rooms on this worker: max_presence_rooms ({max})")]
    TooManyRooms { max: usize },
}

named_enum! {
    /// Which limit refused a join: the labels of a refusal counter.
    pub(crate) enum RefusalKind {
        InfoTooLarge => "info_too_large",
        RoomFull => "room_full",
        TooManyRooms => "too_many_rooms",
        /// Refused by the connection, before the room's home: `max_presence_joins`.
        TooManyJoins => "too_many_joins",
    }
}

impl JoinRefusal {
    /// The counter label ([`RefusalKind::NAMES`]).
    pub fn kind(self) -> RefusalKind {
        match self {
            JoinRefusal::InfoTooLarge { .. } => RefusalKind::InfoTooLarge,
            JoinRefusal::RoomFull { .. } => RefusalKind::RoomFull,
            JoinRefusal::TooManyRooms { .. } => RefusalKind::TooManyRooms,
        }
    }
}

/// A member as listed and as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub user: Arc<str>,
    pub info: Bytes,
    /// When the member first joined (unix milliseconds), kept across grace rejoins.
    pub since_unix_ms: u64,
    /// The client ids of its connections in the room, in the order they joined; empty
    /// while it lingers in its grace window.
    pub connections: Vec<u64>,
}

/// What the caller publishes on the room's presence subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceEvent {
    /// A member joined, or a present member's info changed; `count` is the room's members
    /// after it.
    Join {
        subject: Bytes,
        member: Member,
        count: usize,
    },
    /// A member is gone; `count` is the room's members after it.
    Leave {
        subject: Bytes,
        user: Arc<str>,
        count: usize,
    },
}

impl PresenceEvent {
    /// The room the event is about.
    pub fn subject(&self) -> &Bytes {
        match self {
            PresenceEvent::Join { subject, .. } | PresenceEvent::Leave { subject, .. } => subject,
        }
    }

    /// The room's member count after the event.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        match self {
            PresenceEvent::Join { count, .. } | PresenceEvent::Leave { count, .. } => *count,
        }
    }
}

/// A key of [`Rooms::due`]: the deadline, then a sequence number that makes it unique.
type DueKey = (Instant, u64);

/// One member of one room.
#[derive(Debug)]
struct Entry {
    user: Arc<str>,
    info: Bytes,
    since_unix_ms: u64,
    /// `(connection, client id)`, in the order they joined.
    conns: Vec<(ConnKey, u64)>,
    /// Set while the member lingers (no connection left): its key in [`Rooms::due`].
    lingering: Option<DueKey>,
}

impl Entry {
    fn to_member(&self) -> Member {
        Member {
            user: self.user.clone(),
            info: self.info.clone(),
            since_unix_ms: self.since_unix_ms,
            connections: self.conns.iter().map(|&(_, id)| id).collect(),
        }
    }
}

/// One room: its members in join order, with holes where members left.
#[derive(Debug)]
struct Room {
    /// The room's subject (the same `Bytes` as its key in [`Rooms::rooms`]).
    subject: Bytes,
    /// Join order; `None` is a hole, compacted away when holes outnumber members.
    order: Vec<Option<Entry>>,
    /// Members (the `Some`s of `order`): the O(1) count.
    live: usize,
    /// A member's place in `order`.
    by_user: FastMap<Arc<str>, usize>,
    /// Which member each connection in the room is.
    conns: FastMap<ConnKey, Arc<str>>,
}

impl Room {
    fn new(subject: Bytes) -> Room {
        Room {
            subject,
            order: Vec::new(),
            live: 0,
            by_user: FastMap::default(),
            conns: FastMap::default(),
        }
    }

    fn entry_mut(&mut self, user: &str) -> Option<&mut Entry> {
        let at = *self.by_user.get(user)?;
        self.order[at].as_mut()
    }

    fn push(&mut self, entry: Entry) {
        self.by_user.insert(entry.user.clone(), self.order.len());
        self.order.push(Some(entry));
        self.live += 1;
    }

    /// Takes `user` out, leaving a hole; compacts when holes outnumber members.
    fn remove(&mut self, user: &str) -> Option<Entry> {
        let at = self.by_user.remove(user)?;
        let entry = self.order[at].take()?;
        self.live -= 1;
        while matches!(self.order.last(), Some(None)) {
            self.order.pop();
        }
        if self.order.len() > 2 * self.live + 8 {
            self.compact();
        }
        Some(entry)
    }

    /// Drops the holes, keeping the members' order. O(entries), after at least as many
    /// removals: amortised O(1) per removal.
    fn compact(&mut self) {
        self.order.retain(Option::is_some);
        for (at, entry) in self.order.iter().flatten().enumerate() {
            if let Some(place) = self.by_user.get_mut(&*entry.user) {
                *place = at;
            }
        }
    }
}

/// One worker's presence rooms. See the module header for the contract.
#[derive(Debug)]
pub(crate) struct Rooms {
    limits: PresenceLimits,
    rooms: FastMap<Bytes, Room>,
    /// The rooms each connection is in (the room's own key, shared).
    by_conn: FastMap<ConnKey, FastSet<Bytes>>,
    /// Grace deadlines, one per lingering member: `(room, member)`.
    due: BTreeMap<DueKey, (Bytes, Arc<str>)>,
    next_seq: u64,
    members_total: usize,
}

impl Rooms {
    pub fn new(limits: PresenceLimits) -> Rooms {
        Rooms {
            limits,
            rooms: FastMap::default(),
            by_conn: FastMap::default(),
            due: BTreeMap::new(),
            next_seq: 0,
            members_total: 0,
        }
    }

    /// New limits, for later joins and later leaves' grace; nobody present is dropped.
    /// (The broker's limits do not change while it runs: tests only.)
    #[cfg(test)]
    pub fn set_limits(&mut self, limits: PresenceLimits) {
        self.limits = limits;
    }

    /// A connection joins `subject` as `user` (client id `client_id`, for listings) with
    /// `info`.
    ///
    /// Returns the event to publish, if any: a Join for a new member; none for another
    /// connection of a present member or a rejoin within the grace window, unless the info
    /// changed (the member takes the latest join's info, announced as a Join). Joining
    /// twice with the same `conn` is idempotent but for the info. A `conn` already in the
    /// room as another user moves to `user`, its old member losing it as on a leave with
    /// grace (that member's Leave, if any, comes from [`Rooms::expire`], at once when the
    /// grace is zero). Refused joins change nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        subject: &Bytes,
        user: &Arc<str>,
        conn: ConnKey,
        client_id: u64,
        info: Bytes,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<Option<PresenceEvent>, JoinRefusal> {
        self.admit(subject, user, info.len())?;
        if !self.rooms.contains_key(&subject[..]) {
            let key = Bytes::copy_from_slice(subject);
            self.rooms.insert(key.clone(), Room::new(key));
        }
        let room = self.rooms.get_mut(&subject[..]).expect("the room is there");
        let key = room.subject.clone();

        // The connection is already in the room: as this member, or as another one.
        if let Some(previous) = room.conns.get(&conn).cloned() {
            if *previous != **user {
                room.conns.remove(&conn);
                Self::drop_conn(
                    room,
                    &mut self.due,
                    &mut self.next_seq,
                    &previous,
                    conn,
                    Some(now + self.limits.grace),
                );
            }
        }
        room.conns.insert(conn, user.clone());
        self.by_conn.entry(conn).or_default().insert(key.clone());

        let event = match room.entry_mut(user) {
            Some(entry) => {
                if let Some(due) = entry.lingering.take() {
                    self.due.remove(&due);
                }
                match entry.conns.iter_mut().find(|(c, _)| *c == conn) {
                    Some(known) => known.1 = client_id,
                    None => entry.conns.push((conn, client_id)),
                }
                if entry.info == info {
                    None
                } else {
                    entry.info = Bytes::copy_from_slice(&info);
                    Some(entry.to_member())
                }
            }
            None => {
                let entry = Entry {
                    user: user.clone(),
                    info: Bytes::copy_from_slice(&info),
                    since_unix_ms: now_unix_ms,
                    conns: vec![(conn, client_id)],
                    lingering: None,
                };
                let member = entry.to_member();
                room.push(entry);
                self.members_total += 1;
                Some(member)
            }
        };
        Ok(event.map(|member| PresenceEvent::Join {
            subject: key,
            member,
            count: room.live,
        }))
    }

    /// Whether a join of `subject` as `user` with `info_len` bytes of info is within the
    /// limits; checked before anything changes.
    fn admit(&self, subject: &[u8], user: &str, info_len: usize) -> Result<(), JoinRefusal> {
        let limits = &self.limits;
        if info_len > limits.max_info {
            return Err(JoinRefusal::InfoTooLarge {
                size: info_len,
                max: limits.max_info,
            });
        }
        let live = match self.rooms.get(subject) {
            Some(room) if room.by_user.contains_key(user) => return Ok(()),
            Some(room) => room.live,
            None if self.rooms.len() >= limits.max_rooms => {
                return Err(JoinRefusal::TooManyRooms {
                    max: limits.max_rooms,
                })
            }
            None => 0,
        };
        if live >= limits.max_members {
            return Err(JoinRefusal::RoomFull {
                max: limits.max_members,
            });
        }
        Ok(())
    }

    /// A connection leaves `subject`, explicitly or because it closed. `use_grace` false
    /// (an explicit leave) means at once; true means the member, if this was its last
    /// connection, lingers for the grace window. Returns the Leave event when the member
    /// is gone now.
    pub fn leave(
        &mut self,
        subject: &[u8],
        conn: ConnKey,
        use_grace: bool,
        now: Instant,
    ) -> Option<PresenceEvent> {
        let rooms_of_conn = self.by_conn.get_mut(&conn)?;
        if !rooms_of_conn.remove(subject) {
            return None;
        }
        if rooms_of_conn.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.leave_room(subject, conn, use_grace, now)
    }

    /// Every room `conn` is in, left with grace (the connection closed): the events of the
    /// members gone now. (The broker's connections leave room by room, each at its room's
    /// home worker: tests only.)
    #[cfg(test)]
    pub fn leave_all(&mut self, conn: ConnKey, now: Instant) -> Vec<PresenceEvent> {
        let Some(subjects) = self.by_conn.remove(&conn) else {
            return Vec::new();
        };
        subjects
            .iter()
            .filter_map(|subject| self.leave_room(subject, conn, true, now))
            .collect()
    }

    /// `conn` leaves the room `subject` (the reverse index is the caller's to update).
    fn leave_room(
        &mut self,
        subject: &[u8],
        conn: ConnKey,
        use_grace: bool,
        now: Instant,
    ) -> Option<PresenceEvent> {
        let room = self.rooms.get_mut(subject)?;
        let user = room.conns.remove(&conn)?;
        let linger = (use_grace && !self.limits.grace.is_zero()).then(|| now + self.limits.grace);
        let gone = Self::drop_conn(room, &mut self.due, &mut self.next_seq, &user, conn, linger)?;
        let event = PresenceEvent::Leave {
            subject: room.subject.clone(),
            user: gone.user,
            count: room.live,
        };
        self.members_total -= 1;
        if room.live == 0 {
            self.rooms.remove(subject);
        }
        Some(event)
    }

    /// `user` loses `conn`. When that was its last connection, it lingers until `linger`
    /// or, without one, is taken out of the room and returned (the caller counts it and
    /// removes an empty room).
    fn drop_conn(
        room: &mut Room,
        due: &mut BTreeMap<DueKey, (Bytes, Arc<str>)>,
        next_seq: &mut u64,
        user: &Arc<str>,
        conn: ConnKey,
        linger: Option<Instant>,
    ) -> Option<Entry> {
        let entry = room.entry_mut(user)?;
        entry.conns.retain(|&(c, _)| c != conn);
        if !entry.conns.is_empty() {
            return None;
        }
        match linger {
            Some(deadline) => {
                if entry.lingering.is_none() {
                    *next_seq += 1;
                    let key = (deadline, *next_seq);
                    entry.lingering = Some(key);
                    due.insert(key, (room.subject.clone(), user.clone()));
                }
                None
            }
            None => room.remove(user),
        }
    }

    /// Members whose grace window ended by `now` leave: their Leave events, in deadline
    /// order. O(1) when nothing is due.
    pub fn expire(&mut self, now: Instant) -> Vec<PresenceEvent> {
        let mut events = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (due_key, (subject, user)) = entry.remove_entry();
            let Some(room) = self.rooms.get_mut(&subject) else {
                continue;
            };
            match room.entry_mut(&user) {
                Some(member) if member.lingering == Some(due_key) => {}
                _ => continue,
            }
            let Some(gone) = room.remove(&user) else {
                continue;
            };
            self.members_total -= 1;
            events.push(PresenceEvent::Leave {
                subject: subject.clone(),
                user: gone.user,
                count: room.live,
            });
            if room.live == 0 {
                self.rooms.remove(&subject);
            }
        }
        events
    }

    /// The earliest grace deadline. (The broker expires on its 100 ms tick: tests only.)
    #[cfg(test)]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first_key_value().map(|(&(when, _), _)| when)
    }

    /// How many members `subject` has (lingering members count as present). O(1).
    pub fn count(&self, subject: &[u8]) -> usize {
        self.rooms.get(subject).map_or(0, |room| room.live)
    }

    /// A page of `subject`'s members in join order (stable across calls while nobody
    /// leaves), and the total.
    pub fn members(&self, subject: &[u8], offset: usize, limit: usize) -> (Vec<Member>, usize) {
        let Some(room) = self.rooms.get(subject) else {
            return (Vec::new(), 0);
        };
        let page = room
            .order
            .iter()
            .flatten()
            .skip(offset)
            .take(limit)
            .map(Entry::to_member)
            .collect();
        (page, room.live)
    }

    /// The largest rooms `(subject, count)`, at most `n`, largest first (ties by subject),
    /// for the monitor's /presencez.
    pub fn largest(&self, n: usize) -> Vec<(Bytes, usize)> {
        if n == 0 {
            return Vec::new();
        }
        // A min-heap of the best n so far: the worst of them is on top, to be replaced.
        let mut best: BinaryHeap<Reverse<(usize, Reverse<&Bytes>)>> = BinaryHeap::new();
        for (subject, room) in &self.rooms {
            best.push(Reverse((room.live, Reverse(subject))));
            if best.len() > n {
                best.pop();
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse((count, Reverse(subject)))| (subject.clone(), count))
            .collect()
    }

    /// Rooms held (each has at least one member).
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Members over every room, lingering ones included.
    pub fn members_total(&self) -> usize {
        self.members_total
    }
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// An info blob as JSON: `"info"` when it is UTF-8, else `"info_b64"` (standard base64,
/// padded); one of the two is always there.
#[derive(Serialize)]
struct InfoJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info_b64: Option<String>,
}

impl<'a> InfoJson<'a> {
    fn of(info: &'a [u8]) -> InfoJson<'a> {
        match std::str::from_utf8(info) {
            Ok(text) => InfoJson {
                info: Some(text),
                info_b64: None,
            },
            Err(_) => InfoJson {
                info: None,
                info_b64: Some(STANDARD.encode(info)),
            },
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum EventJson<'a> {
    Join {
        subject: std::borrow::Cow<'a, str>,
        user: &'a str,
        #[serde(flatten)]
        info: InfoJson<'a>,
        since: u64,
        count: usize,
    },
    Leave {
        subject: std::borrow::Cow<'a, str>,
        user: &'a str,
        count: usize,
    },
}

#[derive(Serialize)]
struct MemberJson<'a> {
    user: &'a str,
    connections: &'a [u64],
    #[serde(flatten)]
    info: InfoJson<'a>,
    since: u64,
}

#[derive(Serialize)]
struct PageJson<'a> {
    subject: std::borrow::Cow<'a, str>,
    count: usize,
    offset: usize,
    members: Vec<MemberJson<'a>>,
}

#[derive(Serialize)]
struct CountJson<'a> {
    subject: std::borrow::Cow<'a, str>,
    count: usize,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("presence JSON has string keys only")
}

/// An event as published: `{"event":"join","subject","user","info"|"info_b64","since",
/// "count"}` or `{"event":"leave","subject","user","count"}`.
pub(crate) fn event_json(event: &PresenceEvent) -> Vec<u8> {
    let json = match event {
        PresenceEvent::Join {
            subject,
            member,
            count,
        } => EventJson::Join {
            subject: String::from_utf8_lossy(subject),
            user: &member.user,
            info: InfoJson::of(&member.info),
            since: member.since_unix_ms,
            count: *count,
        },
        PresenceEvent::Leave {
            subject,
            user,
            count,
        } => EventJson::Leave {
            subject: String::from_utf8_lossy(subject),
            user,
            count: *count,
        },
    };
    to_json(&json)
}

/// A page of members: `{"subject","count":total,"offset","members":[{"user","connections",
/// "info"|"info_b64","since"}]}`.
pub(crate) fn page_json(
    subject: &[u8],
    members: &[Member],
    total: usize,
    offset: usize,
) -> Vec<u8> {
    to_json(&page_of(subject, members, total, offset))
}

fn page_of<'a>(
    subject: &'a [u8],
    members: &'a [Member],
    total: usize,
    offset: usize,
) -> PageJson<'a> {
    PageJson {
        subject: String::from_utf8_lossy(subject),
        count: total,
        offset,
        members: members
            .iter()
            .map(|m| MemberJson {
                user: &m.user,
                connections: &m.connections,
                info: InfoJson::of(&m.info),
                since: m.since_unix_ms,
            })
            .collect(),
    }
}

/// A room's count: `{"subject","count"}`.
pub(crate) fn count_json(subject: &[u8], count: usize) -> Vec<u8> {
    to_json(&CountJson {
        subject: String::from_utf8_lossy(subject),
        count,
    })
}

// Snapshots
// ---------------------------------------------------------------------------------------

/// Members one snapshot or page frame (or JSON message) carries at most.
const PAGE_MEMBERS: usize = 256;

/// About the bytes one snapshot or page frame carries at most (a member bigger than this
/// goes alone): far below any frame limit, and a queue's share of one.
const PAGE_BYTES: usize = 256 * 1024;

/// Splits `members` (the room's, from `offset`) into pages: each page's offset, members,
/// and whether another page follows. Always at least one page (an empty room's snapshot,
/// or a count-only answer, is one empty page).
pub(crate) fn pages(members: &[Member], offset: usize) -> Vec<(usize, &[Member])> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < members.len() || out.is_empty() {
        let mut end = start;
        let mut bytes = 0;
        while end < members.len() && end - start < PAGE_MEMBERS {
            let size = 32 + members[end].user.len() + members[end].info.len();
            if end > start && bytes + size > PAGE_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        out.push((offset + start, &members[start..end]));
        if end == start {
            break;
        }
        start = end;
    }
    out
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    event: &'static str,
    #[serde(flatten)]
    page: PageJson<'a>,
    more: bool,
}

/// One page of a snapshot, for a subscription to the room's events subject that fell
/// behind: `{"event":"snapshot","subject","count","offset","members":[..],"more"}`; the
/// page at offset 0 replaces what the subscriber knew, `more` is false on the last.
pub(crate) fn snapshot_json(
    subject: &[u8],
    members: &[Member],
    total: usize,
    offset: usize,
    more: bool,
) -> Vec<u8> {
    to_json(&SnapshotJson {
        event: "snapshot",
        page: page_of(subject, members, total, offset),
        more,
    })
}

// Binary frames
// ---------------------------------------------------------------------------------------

fn encode(frame: ServerFrame) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    // Presence frames are bounded far below the frame limit (pages above, texts and
    // infos by their settings); one that did not encode would be a bug.
    let encoded = encode_server_frame(&frame, &mut buf);
    debug_assert!(encoded.is_ok(), "unencodable presence frame {frame:?}");
    buf.freeze()
}

fn count32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn wire_member(m: &Member) -> WireMember {
    WireMember {
        user: Bytes::copy_from_slice(m.user.as_bytes()),
        since_ms: m.since_unix_ms,
        connections: u16::try_from(m.connections.len()).unwrap_or(u16::MAX),
        info: m.info.clone(),
    }
}

/// A join or leave as a `PRESENCE` frame for sid 0 (see `retarget_presence`).
pub(crate) fn event_frame(event: &PresenceEvent) -> Bytes {
    let (count, body) = match event {
        PresenceEvent::Join { member, count, .. } => {
            (*count, PresenceBody::Join(wire_member(member)))
        }
        PresenceEvent::Leave { user, count, .. } => (
            *count,
            PresenceBody::Leave {
                user: Bytes::copy_from_slice(user.as_bytes()),
            },
        ),
    };
    encode(ServerFrame::Presence(Presence {
        id: 0,
        query: false,
        more: false,
        count: count32(count),
        body,
    }))
}

/// A snapshot (to a subscription) or a query's page, as frames: one per page of
/// [`pages`], `more` on all but the last.
pub(crate) fn members_frames(
    id: u32,
    query: bool,
    members: &[Member],
    total: usize,
    offset: usize,
) -> Vec<Bytes> {
    let pages = pages(members, offset);
    let last = pages.len() - 1;
    pages
        .into_iter()
        .enumerate()
        .map(|(i, (offset, page))| page_frame(id, query, i < last, total, offset, page))
        .collect()
}

/// One page of [`pages`] as a `PRESENCE` frame: a query's page, or a snapshot's.
pub(crate) fn page_frame(
    id: u32,
    query: bool,
    more: bool,
    total: usize,
    offset: usize,
    page: &[Member],
) -> Bytes {
    let offset = count32(offset);
    let members = page.iter().map(wire_member).collect();
    encode(ServerFrame::Presence(Presence {
        id,
        query,
        more,
        count: count32(total),
        body: if query {
            PresenceBody::Page { offset, members }
        } else {
            PresenceBody::Snapshot { offset, members }
        },
    }))
}

/// The answer to a binary join: who the connection is in the room, and its member token.
pub(crate) fn joined_frame(id: u32, user: &str, count: usize) -> Bytes {
    encode(ServerFrame::Presence(Presence {
        id,
        query: false,
        more: false,
        count: count32(count),
        body: PresenceBody::Joined {
            user: Bytes::copy_from_slice(user.as_bytes()),
            member_token: Bytes::from(member_token(user)),
        },
    }))
}

/// A binary join or query refused.
pub(crate) fn refused_frame(id: u32, query: bool, code: ErrorCode, text: &str) -> Bytes {
    encode(ServerFrame::Presence(Presence {
        id,
        query,
        more: false,
        count: 0,
        body: PresenceBody::Refused {
            code,
            message: Bytes::copy_from_slice(text.as_bytes()),
        },
    }))
}

// Member tokens
// ---------------------------------------------------------------------------------------

/// The longest member token taken (a longer one is not looked at).
const MAX_MEMBER_TOKEN: usize = 1024;

/// The key member tokens are signed with: made once per process, from the system's
/// random source, so a token is worth nothing after a restart (nor are rooms).
fn member_key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system's random source")
    })
}

/// A member's token: its identity and the broker's signature of it, both base64url. A
/// client that shows it again (a binary `SUBSCRIBE`'s presence option) is that member.
pub(crate) fn member_token(user: &str) -> String {
    let tag = hmac::sign(member_key(), user.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(user),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// The identity a member token names, when this broker signed it; `None` for anything
/// else (which the caller ignores: the connection then joins as itself).
pub(crate) fn member_of_token(token: &[u8]) -> Option<Arc<str>> {
    if token.len() > MAX_MEMBER_TOKEN {
        return None;
    }
    let dot = token.iter().position(|&b| b == b'.')?;
    let user = URL_SAFE_NO_PAD.decode(&token[..dot]).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).ok()?;
    hmac::verify(member_key(), &user, &tag).ok()?;
    let user = String::from_utf8(user).ok()?;
    Some(user.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const GRACE: Duration = Duration::from_secs(10);

    fn limits() -> PresenceLimits {
        PresenceLimits {
            max_members: 100,
            max_info: 64,
            max_rooms: 10,
            grace: GRACE,
        }
    }

    fn conn(slot: u32) -> ConnKey {
        ConnKey {
            worker: 0,
            slot,
            gen: 1,
        }
    }

    fn room(name: &str) -> Bytes {
        Bytes::copy_from_slice(name.as_bytes())
    }

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// A fixed start; times are `t0 + ms`.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn clock() -> Clock {
        Clock(Instant::now())
    }

    fn join(
        rooms: &mut Rooms,
        subject: &str,
        who: &str,
        slot: u32,
        info: &str,
        now: Instant,
    ) -> Result<Option<PresenceEvent>, JoinRefusal> {
        rooms.join(
            &room(subject),
            &user(who),
            conn(slot),
            u64::from(slot) + 100,
            Bytes::copy_from_slice(info.as_bytes()),
            now,
            1_000 + u64::from(slot),
        )
    }

    fn users(rooms: &Rooms, subject: &str) -> Vec<String> {
        let (page, _) = rooms.members(subject.as_bytes(), 0, usize::MAX);
        page.iter().map(|m| m.user.to_string()).collect()
    }

    #[test]
    fn first_join_announces_the_member_with_count_one() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        let event = join(&mut rooms, "room.1", "alice", 1, "hi", c.at(0)).unwrap();
        let Some(PresenceEvent::Join {
            subject,
            member,
            count,
        }) = event
        else {
            panic!("expected a join, got {event:?}");
        };
        assert_eq!(&subject[..], b"room.1");
        assert_eq!(&*member.user, "alice");
        assert_eq!(&member.info[..], b"hi");
        assert_eq!(member.since_unix_ms, 1_001);
        assert_eq!(member.connections, vec![101]);
        assert_eq!(count, 1);
        assert_eq!(rooms.count(b"room.1"), 1);
        assert_eq!((rooms.rooms(), rooms.members_total()), (1, 1));
    }

    #[test]
    fn a_second_connection_of_a_member_is_silent_and_listed() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        assert_eq!(
            join(&mut rooms, "r", "alice", 2, "", c.at(1)).unwrap(),
            None
        );
        let (page, total) = rooms.members(b"r", 0, 10);
        assert_eq!(total, 1);
        assert_eq!(page[0].connections, vec![101, 102]);
        assert_eq!(rooms.count(b"r"), 1);
    }

    #[test]
    fn joining_twice_with_one_connection_is_idempotent_but_for_the_info() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "a", c.at(0)).unwrap();
        assert_eq!(
            join(&mut rooms, "r", "alice", 1, "a", c.at(1)).unwrap(),
            None
        );
        let event = join(&mut rooms, "r", "alice", 1, "b", c.at(2)).unwrap();
        match event {
            Some(PresenceEvent::Join { member, count, .. }) => {
                assert_eq!(&member.info[..], b"b");
                assert_eq!(member.connections, vec![101]);
                assert_eq!(member.since_unix_ms, 1_001, "since is the first join");
                assert_eq!(count, 1);
            }
            other => panic!("expected a join for the new info, got {other:?}"),
        }
        // One leave takes the only connection away.
        assert!(matches!(
            rooms.leave(b"r", conn(1), false, c.at(3)),
            Some(PresenceEvent::Leave { count: 0, .. })
        ));
    }

    #[test]
    fn leaving_one_of_two_connections_is_silent() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "r", "alice", 2, "", c.at(0)).unwrap();
        assert_eq!(rooms.leave(b"r", conn(1), false, c.at(1)), None);
        assert_eq!(rooms.count(b"r"), 1);
        assert_eq!(rooms.members(b"r", 0, 10).0[0].connections, vec![102]);
        assert_eq!(rooms.next_deadline(), None);
    }

    #[test]
    fn last_leave_with_grace_lingers_until_expire_after_the_window() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        assert_eq!(rooms.leave(b"r", conn(1), true, c.at(1_000)), None);
        assert_eq!(rooms.count(b"r"), 1, "a lingering member is present");
        assert_eq!(
            rooms.members(b"r", 0, 10).0[0].connections,
            Vec::<u64>::new()
        );
        assert_eq!(rooms.next_deadline(), Some(c.at(11_000)));
        assert!(rooms.expire(c.at(10_999)).is_empty());
        assert_eq!(rooms.count(b"r"), 1);

        let events = rooms.expire(c.at(11_000));
        assert_eq!(
            events,
            vec![PresenceEvent::Leave {
                subject: room("r"),
                user: user("alice"),
                count: 0
            }]
        );
        assert_eq!(rooms.count(b"r"), 0);
        assert_eq!(
            (rooms.rooms(), rooms.members_total()),
            (0, 0),
            "the room is gone"
        );
        assert_eq!(rooms.next_deadline(), None);
        assert!(rooms.expire(c.at(99_000)).is_empty());
    }

    #[test]
    fn a_rejoin_within_the_grace_window_is_silent_and_cancels_the_leave() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "x", c.at(0)).unwrap();
        assert_eq!(rooms.leave_all(conn(1), c.at(100)), vec![]);
        // A new connection (a reconnect) with the same identity and info.
        assert_eq!(
            join(&mut rooms, "r", "alice", 7, "x", c.at(5_000)).unwrap(),
            None
        );
        assert_eq!(
            rooms.next_deadline(),
            None,
            "the deadline is removed, not left stale"
        );
        assert!(rooms.expire(c.at(60_000)).is_empty());
        assert_eq!(rooms.count(b"r"), 1);
        let (page, _) = rooms.members(b"r", 0, 10);
        assert_eq!(page[0].connections, vec![107]);
        assert_eq!(page[0].since_unix_ms, 1_001, "still the first join's time");
    }

    #[test]
    fn a_rejoin_within_the_grace_window_with_new_info_announces_it() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "x", c.at(0)).unwrap();
        rooms.leave(b"r", conn(1), true, c.at(100));
        let event = join(&mut rooms, "r", "alice", 2, "y", c.at(200)).unwrap();
        assert!(matches!(
            event,
            Some(PresenceEvent::Join { ref member, count: 1, .. }) if &member.info[..] == b"y"
        ));
        assert!(rooms.expire(c.at(60_000)).is_empty());
    }

    #[test]
    fn zero_grace_leaves_at_once() {
        let c = clock();
        let mut rooms = Rooms::new(PresenceLimits {
            grace: Duration::ZERO,
            ..limits()
        });
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        let event = rooms.leave(b"r", conn(1), true, c.at(1));
        assert!(matches!(event, Some(PresenceEvent::Leave { count: 0, .. })));
        assert_eq!((rooms.rooms(), rooms.next_deadline()), (0, None));
    }

    #[test]
    fn an_explicit_leave_is_at_once() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "r", "bob", 2, "", c.at(0)).unwrap();
        let event = rooms.leave(b"r", conn(1), false, c.at(1));
        assert_eq!(
            event,
            Some(PresenceEvent::Leave {
                subject: room("r"),
                user: user("alice"),
                count: 1
            })
        );
        assert_eq!(users(&rooms, "r"), ["bob"]);
        assert_eq!(rooms.next_deadline(), None);
        // Leaving again, or a room the connection is not in, is nothing.
        assert_eq!(rooms.leave(b"r", conn(1), false, c.at(2)), None);
        assert_eq!(rooms.leave(b"other", conn(2), false, c.at(2)), None);
    }

    /// Everything observable: rooms, members, the largest rooms, room "a"'s members and
    /// the next deadline.
    type Snapshot = (
        usize,
        usize,
        Vec<(Bytes, usize)>,
        Vec<Member>,
        Option<Instant>,
    );

    /// Everything observable, to show that a refused join changed nothing.
    fn snapshot(rooms: &Rooms) -> Snapshot {
        (
            rooms.rooms(),
            rooms.members_total(),
            rooms.largest(100),
            rooms.members(b"a", 0, 100).0,
            rooms.next_deadline(),
        )
    }

    #[test]
    fn info_over_max_info_is_refused_and_changes_nothing() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        let before = snapshot(&rooms);
        let big = "x".repeat(65);
        let refused = join(&mut rooms, "a", "alice", 1, &big, c.at(1)).unwrap_err();
        assert_eq!(refused, JoinRefusal::InfoTooLarge { size: 65, max: 64 });
        assert_eq!(refused.kind().name(), "info_too_large");
        assert_eq!(
            refused.to_string(),
            "presence info of 65 bytes is over max_presence_info (64 bytes)"
        );
        assert_eq!(join(&mut rooms, "b", "bob", 2, &big, c.at(1)), Err(refused));
        assert_eq!(snapshot(&rooms), before);
        // At the limit is fine.
        assert!(join(&mut rooms, "a", "bob", 2, &big[..64], c.at(1)).is_ok());
    }

    #[test]
    fn a_full_room_refuses_new_members_but_not_present_ones() {
        let c = clock();
        let mut rooms = Rooms::new(PresenceLimits {
            max_members: 2,
            ..limits()
        });
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "a", "bob", 2, "", c.at(0)).unwrap();
        // Bob lingers: he still takes his place.
        rooms.leave(b"a", conn(2), true, c.at(1));
        let before = snapshot(&rooms);
        let refused = join(&mut rooms, "a", "carol", 3, "", c.at(2)).unwrap_err();
        assert_eq!(refused, JoinRefusal::RoomFull { max: 2 });
        assert_eq!(
            refused.to_string(),
            "room is full: max_presence_members (2)"
        );
        assert_eq!(refused.kind(), RefusalKind::RoomFull);
        assert_eq!(snapshot(&rooms), before);
        assert_eq!(
            rooms.leave_all(conn(3), c.at(3)),
            vec![],
            "carol is in no room"
        );
        // Present members may add connections and rejoin.
        assert_eq!(join(&mut rooms, "a", "alice", 4, "", c.at(3)), Ok(None));
        assert_eq!(join(&mut rooms, "a", "bob", 5, "", c.at(3)), Ok(None));
    }

    #[test]
    fn too_many_rooms_refuses_a_new_room_but_not_a_held_one() {
        let c = clock();
        let mut rooms = Rooms::new(PresenceLimits {
            max_rooms: 2,
            ..limits()
        });
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "b", "alice", 1, "", c.at(0)).unwrap();
        let before = snapshot(&rooms);
        let refused = join(&mut rooms, "c", "alice", 1, "", c.at(1)).unwrap_err();
        assert_eq!(refused, JoinRefusal::TooManyRooms { max: 2 });
        assert_eq!(
            refused.to_string(),
            "too many presence rooms on this worker: max_presence_rooms (2)"
        );
        assert_eq!(snapshot(&rooms), before);
        assert_eq!(rooms.count(b"c"), 0);
        assert!(join(&mut rooms, "a", "bob", 2, "", c.at(1))
            .unwrap()
            .is_some());
        // Once a room is gone, another may be made.
        rooms.leave(b"b", conn(1), false, c.at(2));
        assert!(join(&mut rooms, "c", "alice", 1, "", c.at(3)).is_ok());
    }

    #[test]
    fn lower_limits_refuse_later_joins_and_drop_nobody() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "a", "bob", 2, "", c.at(0)).unwrap();
        rooms.set_limits(PresenceLimits {
            max_members: 1,
            ..limits()
        });
        assert_eq!(rooms.count(b"a"), 2);
        assert_eq!(
            join(&mut rooms, "a", "carol", 3, "", c.at(1)),
            Err(JoinRefusal::RoomFull { max: 1 })
        );
    }

    #[test]
    fn leave_all_leaves_every_room_of_the_connection_with_grace() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "b", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "b", "alice", 2, "", c.at(0)).unwrap();
        join(&mut rooms, "c", "bob", 3, "", c.at(0)).unwrap();
        assert_eq!(rooms.leave_all(conn(1), c.at(10)), vec![]);
        assert_eq!(rooms.members(b"b", 0, 10).0[0].connections, vec![102]);
        assert_eq!(
            rooms.next_deadline(),
            Some(c.at(10_010)),
            "only room a lingers"
        );
        let events = rooms.expire(c.at(10_010));
        assert_eq!(
            events,
            vec![PresenceEvent::Leave {
                subject: room("a"),
                user: user("alice"),
                count: 0
            }]
        );
        assert_eq!(
            (rooms.count(b"a"), rooms.count(b"b"), rooms.count(b"c")),
            (0, 1, 1)
        );
        assert_eq!(
            rooms.leave_all(conn(1), c.at(20_000)),
            vec![],
            "nothing left"
        );

        let mut rooms = Rooms::new(PresenceLimits {
            grace: Duration::ZERO,
            ..limits()
        });
        join(&mut rooms, "a", "alice", 1, "", c.at(0)).unwrap();
        join(&mut rooms, "b", "alice", 1, "", c.at(0)).unwrap();
        let mut gone: Vec<Bytes> = rooms
            .leave_all(conn(1), c.at(1))
            .iter()
            .map(|e| e.subject().clone())
            .collect();
        gone.sort();
        assert_eq!(gone, vec![room("a"), room("b")]);
        assert_eq!(rooms.rooms(), 0);
    }

    #[test]
    fn a_connection_joining_as_another_user_moves_and_the_old_member_lingers() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        join(&mut rooms, "r", "alice", 1, "", c.at(0)).unwrap();
        let event = join(&mut rooms, "r", "bob", 1, "", c.at(5)).unwrap();
        assert!(matches!(event, Some(PresenceEvent::Join { count: 2, .. })));
        assert_eq!(
            rooms.members(b"r", 0, 10).0[0].connections,
            Vec::<u64>::new()
        );
        let events = rooms.expire(c.at(10_005));
        assert!(
            matches!(&events[..], [PresenceEvent::Leave { user, count: 1, .. }] if &**user == "alice")
        );
        assert!(matches!(
            rooms.leave(b"r", conn(1), false, c.at(10_006)),
            Some(PresenceEvent::Leave { count: 0, .. })
        ));
    }

    #[test]
    fn members_are_paged_in_join_order_across_leaves_and_compaction() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        for i in 0..40u32 {
            join(&mut rooms, "r", &format!("u{i:02}"), i, "", c.at(0)).unwrap();
        }
        let (page, total) = rooms.members(b"r", 5, 3);
        assert_eq!(total, 40);
        let names: Vec<&str> = page.iter().map(|m| &*m.user).collect();
        assert_eq!(names, ["u05", "u06", "u07"]);
        assert_eq!(rooms.members(b"r", 5, 3).0, page, "stable across calls");
        assert_eq!(rooms.members(b"r", 38, 10).0.len(), 2);
        assert!(rooms.members(b"r", 40, 10).0.is_empty());
        assert_eq!(rooms.members(b"nothing", 0, 10), (vec![], 0));

        // Leaves (enough to compact) keep the others in join order; a newcomer is last.
        for i in (0..40u32).filter(|i| i % 4 != 0) {
            rooms.leave(b"r", conn(i), false, c.at(1));
        }
        join(&mut rooms, "r", "late", 99, "", c.at(2)).unwrap();
        let expected: Vec<String> = (0..40)
            .filter(|i| i % 4 == 0)
            .map(|i| format!("u{i:02}"))
            .chain(["late".to_string()])
            .collect();
        assert_eq!(users(&rooms, "r"), expected);
        let (page, total) = rooms.members(b"r", 2, 2);
        assert_eq!(total, 11);
        let names: Vec<&str> = page.iter().map(|m| &*m.user).collect();
        assert_eq!(names, ["u08", "u12"]);
        let room = &rooms.rooms[&b"r"[..]];
        assert!(room.order.len() <= 2 * room.live + 8, "holes are compacted");
    }

    #[test]
    fn largest_lists_the_biggest_rooms_first() {
        let c = clock();
        let mut rooms = Rooms::new(limits());
        for (subject, n) in [("a", 2), ("b", 5), ("c", 1), ("d", 5), ("e", 3)] {
            for i in 0..n {
                join(&mut rooms, subject, &format!("u{i}"), i, "", c.at(0)).unwrap();
            }
        }
        assert_eq!(
            rooms.largest(3),
            vec![(room("b"), 5), (room("d"), 5), (room("e"), 3)]
        );
        assert_eq!(rooms.largest(10).len(), 5);
        assert!(rooms.largest(0).is_empty());
        assert_eq!((rooms.rooms(), rooms.members_total()), (5, 16));
    }

    fn parse(json: &[u8]) -> Value {
        serde_json::from_slice(json).expect("valid JSON")
    }

    #[test]
    fn event_json_has_the_published_shape() {
        let member = Member {
            user: user("alice"),
            info: Bytes::from_static(b"{\"name\":\"Al\"}"),
            since_unix_ms: 1_700_000_000_000,
            connections: vec![4, 9],
        };
        let join = PresenceEvent::Join {
            subject: room("room.1"),
            member: member.clone(),
            count: 3,
        };
        assert_eq!(
            parse(&event_json(&join)),
            serde_json::json!({"event": "join", "subject": "room.1", "user": "alice",
                "info": "{\"name\":\"Al\"}", "since": 1_700_000_000_000u64, "count": 3})
        );
        let binary = PresenceEvent::Join {
            subject: room("room.1"),
            member: Member {
                info: Bytes::from_static(&[0xff, 0x00, 0x10]),
                ..member
            },
            count: 3,
        };
        let value = parse(&event_json(&binary));
        assert_eq!(value["info_b64"], "/wAQ");
        assert!(value.get("info").is_none());
        let leave = PresenceEvent::Leave {
            subject: room("room.1"),
            user: user("alice"),
            count: 2,
        };
        assert_eq!(
            parse(&event_json(&leave)),
            serde_json::json!({"event": "leave", "subject": "room.1", "user": "alice", "count": 2})
        );
    }

    #[test]
    fn page_and_count_json_have_the_published_shape() {
        let members = vec![
            Member {
                user: user("alice"),
                info: Bytes::from_static(b"hi"),
                since_unix_ms: 5,
                connections: vec![1, 2],
            },
            Member {
                user: user("bob"),
                info: Bytes::from_static(&[0x80]),
                since_unix_ms: 6,
                connections: vec![],
            },
        ];
        assert_eq!(
            parse(&page_json(b"room.1", &members, 12, 10)),
            serde_json::json!({"subject": "room.1", "count": 12, "offset": 10, "members": [
                {"user": "alice", "connections": [1, 2], "info": "hi", "since": 5},
                {"user": "bob", "connections": [], "info_b64": "gA==", "since": 6},
            ]})
        );
        assert_eq!(
            parse(&count_json(b"room.1", 7)),
            serde_json::json!({"subject": "room.1", "count": 7})
        );
    }

    // -----------------------------------------------------------------------------------
    // The model: who should be present, from first principles.
    // -----------------------------------------------------------------------------------

    const USERS: usize = 3;
    const CONNS: usize = 4;
    const ROOMS: usize = 2;

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            conn: usize,
            room: usize,
        },
        Leave {
            conn: usize,
            room: usize,
            use_grace: bool,
        },
        LeaveAll {
            conn: usize,
        },
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..CONNS, 0..ROOMS).prop_map(|(conn, room)| Op::Join { conn, room }),
            2 => (0..CONNS, 0..ROOMS, any::<bool>())
                .prop_map(|(conn, room, use_grace)| Op::Leave { conn, room, use_grace }),
            1 => (0..CONNS).prop_map(|conn| Op::LeaveAll { conn }),
            2 => Just(Op::Expire),
        ]
    }

    /// Per room: which connections are in it, and when each lingering user's grace ends.
    #[derive(Default, Clone)]
    struct ModelRoom {
        conns: [bool; CONNS],
        lingering: [Option<Instant>; USERS],
    }

    struct Model {
        owner: [usize; CONNS],
        grace: Duration,
        rooms: [ModelRoom; ROOMS],
    }

    impl Model {
        fn has_conn(&self, room: usize, user: usize) -> bool {
            (0..CONNS).any(|c| self.rooms[room].conns[c] && self.owner[c] == user)
        }

        fn present(&self, room: usize) -> usize {
            (0..USERS)
                .filter(|&u| self.has_conn(room, u) || self.rooms[room].lingering[u].is_some())
                .count()
        }

        fn join(&mut self, conn: usize, room: usize) {
            self.rooms[room].conns[conn] = true;
            self.rooms[room].lingering[self.owner[conn]] = None;
        }

        fn leave(&mut self, conn: usize, room: usize, use_grace: bool, now: Instant) {
            if !std::mem::take(&mut self.rooms[room].conns[conn]) {
                return;
            }
            let user = self.owner[conn];
            if !self.has_conn(room, user) && use_grace && !self.grace.is_zero() {
                self.rooms[room].lingering[user] = Some(now + self.grace);
            }
        }

        fn expire(&mut self, now: Instant) {
            for room in &mut self.rooms {
                for deadline in &mut room.lingering {
                    if deadline.is_some_and(|d| d <= now) {
                        *deadline = None;
                    }
                }
            }
        }

        fn next_deadline(&self) -> Option<Instant> {
            self.rooms
                .iter()
                .flat_map(|r| r.lingering.iter().flatten())
                .min()
                .copied()
        }
    }

    proptest! {
        /// After every step, each room's count is the number of users with a connection in
        /// it or within their grace window, and its joins minus leaves equal that count.
        #[test]
        fn counts_follow_the_model(
            owner in proptest::array::uniform4(0..USERS),
            grace_ms in prop_oneof![Just(0u64), Just(100u64)],
            steps in proptest::collection::vec((0u64..80, op()), 1..80),
        ) {
            let c = clock();
            let grace = Duration::from_millis(grace_ms);
            let mut rooms = Rooms::new(PresenceLimits { grace, ..limits() });
            let mut model = Model { owner, grace, rooms: Default::default() };
            let names: Vec<Bytes> = (0..ROOMS).map(|r| room(&format!("room.{r}"))).collect();
            let users: Vec<Arc<str>> = (0..USERS).map(|u| user(&format!("user{u}"))).collect();
            let mut net = [0i64; ROOMS];
            let mut elapsed = 0;
            for (advance, op) in steps {
                elapsed += advance;
                let now = c.at(elapsed);
                let events: Vec<PresenceEvent> = match op {
                    Op::Join { conn: k, room: r } => {
                        model.join(k, r);
                        let info = Bytes::from(users[owner[k]].to_string());
                        rooms
                            .join(&names[r], &users[owner[k]], conn(k as u32), k as u64, info, now, elapsed)
                            .expect("within the limits")
                            .into_iter()
                            .collect()
                    }
                    Op::Leave { conn: k, room: r, use_grace } => {
                        model.leave(k, r, use_grace, now);
                        rooms.leave(&names[r], conn(k as u32), use_grace, now).into_iter().collect()
                    }
                    Op::LeaveAll { conn: k } => {
                        for r in 0..ROOMS {
                            model.leave(k, r, true, now);
                        }
                        rooms.leave_all(conn(k as u32), now)
                    }
                    Op::Expire => {
                        model.expire(now);
                        let events = rooms.expire(now);
                        prop_assert!(rooms.next_deadline().is_none_or(|d| d > now));
                        events
                    }
                };
                for event in &events {
                    let r = names.iter().position(|n| n == event.subject()).expect("a known room");
                    net[r] += match event {
                        PresenceEvent::Join { .. } => 1,
                        PresenceEvent::Leave { .. } => -1,
                    };
                    prop_assert_eq!(event.count() as i64, net[r], "an event's count");
                }
                for r in 0..ROOMS {
                    prop_assert_eq!(rooms.count(&names[r]), model.present(r), "room {}", r);
                    prop_assert_eq!(net[r], model.present(r) as i64, "joins - leaves, room {}", r);
                    prop_assert_eq!(rooms.members(&names[r], 0, 10).0.len(), model.present(r));
                }
                prop_assert_eq!(rooms.next_deadline(), model.next_deadline());
                prop_assert_eq!(rooms.members_total(), (0..ROOMS).map(|r| model.present(r)).sum::<usize>());
                prop_assert_eq!(rooms.rooms(), (0..ROOMS).filter(|&r| model.present(r) > 0).count());
            }
        }
    }
}

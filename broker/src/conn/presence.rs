//! A connection's part in presence: the rooms it is in, and the requests a client makes
//! with plain publishes, on either port (`docs/presence.md`):
//!
//! - `$TERN.PRESENCE.JOIN.<room>` (body: the member's info) joins the room;
//! - `$TERN.PRESENCE.LEAVE.<room>` leaves it at once;
//! - `$TERN.PRESENCE.<room>` (body: optional `{"offset":..,"limit":..,"count":true}`) asks
//!   who is in it, answered on the request's reply subject;
//! - `$TERN.PRESENCE.EVENTS.<room>` is where the room's joins and leaves are published:
//!   only the broker publishes there.
//!
//! and on the binary port, with its own frames (`docs/protocol-binary.md#presence`): a
//! `SUBSCRIBE` with the presence option joins its room for the life of the subscription
//! (with a member token, as the member it was before a reconnect), one with the presence
//! events option brings along a subscription to the room's events that goes out as
//! `PRESENCE` frames, starting with a snapshot; `PRESENCE_QUERY` asks who is in a room.
//! A subscription to a room's events subject whose queue had to drop events asks the
//! room's home for a fresh snapshot instead of announcing the drop ([`SubPresence`]).
//!
//! Owns: the checks made where the client is (the room is a literal subject the user may
//! subscribe to, the info's size, the rooms per connection), the member's identity (the
//! authenticated user; without authentication the connection's name and client id), and
//! the envelopes to each room's home worker (`Context::presence_home`), which holds the
//! room and answers. A closing connection leaves its rooms with the grace window.
//!
//! Never: holds a room's state (the home worker does) or trusts the info for identity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tern_protocol::binary::{retarget_presence, ErrorCode, PresenceQuery, Subscribe};
use tern_protocol::subject;

use super::access::{publish_violation, subscribe_violation};
use super::wire::Wire;
use super::Context;
use super::{Session, Sid};
use crate::mesh::{Answer, Envelope, Msg, PresenceFrame, PresenceOp, Stamp, SubRef};
use crate::outbound::Outbound;
use crate::presence::{self, RefusalKind};
use crate::replay::status_block;
use crate::router::events_subject;
use crate::stats::{bump, Denial};

/// Every presence request's subject starts with this.
pub(crate) const PRESENCE_PREFIX: &[u8] = b"$TERN.PRESENCE.";

/// Members one query answer lists at most (more: page with `offset`).
pub(crate) const MAX_PRESENCE_PAGE: usize = 1000;

/// How often a subscription that keeps falling behind gets a fresh snapshot at most.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// The page a query without a `limit` gets.
const DEFAULT_PRESENCE_PAGE: usize = 100;

/// The first tokens of a presence subject that are not a room: a room's name cannot
/// start with one of them.
const VERBS: [&[u8]; 3] = [b"JOIN", b"LEAVE", b"EVENTS"];

/// What a presence subject asks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PresenceVerb<'a> {
    Join(&'a [u8]),
    Leave(&'a [u8]),
    Events(&'a [u8]),
    Query(&'a [u8]),
}

/// The verb and room of a subject under [`PRESENCE_PREFIX`]; `None` for any other.
pub(crate) fn parse_presence(subject: &[u8]) -> Option<PresenceVerb<'_>> {
    let rest = subject.strip_prefix(PRESENCE_PREFIX)?;
    Some(if let Some(room) = rest.strip_prefix(b"JOIN.") {
        PresenceVerb::Join(room)
    } else if let Some(room) = rest.strip_prefix(b"LEAVE.") {
        PresenceVerb::Leave(room)
    } else if let Some(room) = rest.strip_prefix(b"EVENTS.") {
        PresenceVerb::Events(room)
    } else {
        PresenceVerb::Query(rest)
    })
}

/// The room a subscription to a room's events is about, for the permission check: who
/// may subscribe to the room may see its presence.
pub(crate) fn events_room(filter: &[u8]) -> Option<&[u8]> {
    match parse_presence(filter)? {
        PresenceVerb::Events(room) => Some(room),
        _ => None,
    }
}

/// True when `filter` can match a room's events subject (`$TERN.PRESENCE.EVENTS.<room>`):
/// its first three tokens are those, or wildcards.
pub(crate) fn overlaps_presence_events(filter: &[u8]) -> bool {
    let mut tokens = subject::tokens(filter);
    for want in [&b"$TERN"[..], b"PRESENCE", b"EVENTS"] {
        match tokens.next() {
            Some(b">") => return true,
            Some(t) if t == b"*" || t == want => {}
            _ => return false,
        }
    }
    tokens.next().is_some()
}

/// Why a room name cannot be one, or `None`.
fn bad_room(room: &[u8]) -> Option<String> {
    if let Err(e) = subject::validate_publish(room) {
        return Some(format!("a room is a literal subject: {e}"));
    }
    let first = subject::tokens(room).next().unwrap_or_default();
    VERBS
        .contains(&first)
        .then(|| "a room's name cannot start with JOIN, LEAVE or EVENTS".to_string())
}

/// A query's body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// The count alone (O(1) for rooms of any size).
    #[serde(default)]
    count: bool,
}

impl Session {
    /// A publish to `$TERN.PRESENCE.…`, from either port (a binary one acknowledged at
    /// once when it asked for an ack: nothing is stored). Returns false when it was
    /// refused in the client's protocol (`-ERR`, no `+OK`; a refused `PUBLISH_ACK` or a
    /// non-fatal `ERROR`).
    pub(super) fn presence_request(
        &mut self,
        w: &mut impl Wire,
        p: PresenceRequest,
        cx: &mut impl Context,
    ) -> bool {
        let done = self.presence_apply(w, &p, cx);
        if done {
            if let Some(ack_id) = p.ack_id {
                self.ack(w, ack_id, Stamp::default(), false);
            }
        }
        done
    }

    fn presence_apply(
        &mut self,
        w: &mut impl Wire,
        p: &PresenceRequest,
        cx: &mut impl Context,
    ) -> bool {
        let Some(verb) = parse_presence(&p.subject) else {
            return true;
        };
        let room = match verb {
            PresenceVerb::Events(_) => {
                // The broker's own: no client publishes there.
                bump(
                    &cx.stats().permission_violations[Denial::Publish as usize],
                    1,
                );
                let text = publish_violation(&p.subject);
                self.refuse_request(w, p.ack_id, ErrorCode::PermissionViolation, &text);
                return false;
            }
            PresenceVerb::Join(r) | PresenceVerb::Leave(r) | PresenceVerb::Query(r) => r,
        };
        if let Some(why) = bad_room(room) {
            return self.presence_refused(w, p, "400 Bad Request", &why, cx);
        }
        if !self.access.may_subscribe(room, None) {
            bump(
                &cx.stats().permission_violations[Denial::Subscribe as usize],
                1,
            );
            let text = subscribe_violation(room, None);
            self.refuse_request(w, p.ack_id, ErrorCode::PermissionViolation, &text);
            return false;
        }
        let room = Bytes::copy_from_slice(room);
        match verb {
            PresenceVerb::Join(_) => self.join_room(w, room, p, cx),
            PresenceVerb::Leave(_) => {
                self.leave_room(room, p.reply.as_ref(), cx);
                true
            }
            _ => self.query_room(w, room, p, cx),
        }
    }

    fn join_room(
        &mut self,
        w: &mut impl Wire,
        room: Bytes,
        p: &PresenceRequest,
        cx: &mut impl Context,
    ) -> bool {
        if let Err(why) = self.may_join(&room, p.payload.len(), cx) {
            return self.presence_refused(w, p, "409 Presence Refused", &why, cx);
        }
        let joined = self.rooms.contains(&room);
        if !joined {
            self.rooms.push(room.clone());
        }
        let op = PresenceOp::Join {
            subject: room.clone(),
            user: self.member_identity(w),
            conn: self.id,
            client_id: self.client_id,
            info: Bytes::copy_from_slice(&p.payload),
            answer: p
                .reply
                .as_ref()
                .map_or(Answer::None, |r| Answer::Inbox(Bytes::copy_from_slice(r))),
        };
        self.send_home(&room, op, cx);
        true
    }

    /// The limits a join is checked against where the client is: the info's size and the
    /// rooms per connection (the room's own limits are its home's). Counted when refused.
    fn may_join(&self, room: &Bytes, info: usize, cx: &impl Context) -> Result<(), String> {
        let limits = &cx.config().presence;
        if info > limits.max_presence_info {
            bump(
                &cx.stats().presence_refused[RefusalKind::InfoTooLarge as usize],
                1,
            );
            return Err(format!(
                "presence info of {info} bytes is over max_presence_info ({} bytes)",
                limits.max_presence_info
            ));
        }
        if !self.rooms.contains(room) && self.rooms.len() >= limits.max_presence_joins {
            bump(
                &cx.stats().presence_refused[RefusalKind::TooManyJoins as usize],
                1,
            );
            return Err(format!(
                "this connection is in {} rooms: max_presence_joins ({})",
                self.rooms.len(),
                limits.max_presence_joins
            ));
        }
        Ok(())
    }

    fn leave_room(&mut self, room: Bytes, reply: Option<&Bytes>, cx: &mut impl Context) {
        self.rooms.retain(|r| *r != room);
        let op = PresenceOp::Leave {
            subject: room.clone(),
            conn: self.id,
            grace: false,
            reply: reply.map(|r| Bytes::copy_from_slice(r)),
        };
        self.send_home(&room, op, cx);
    }

    fn query_room(
        &mut self,
        w: &mut impl Wire,
        room: Bytes,
        p: &PresenceRequest,
        cx: &mut impl Context,
    ) -> bool {
        let Some(inbox) = &p.reply else {
            let text = "Presence queries need a reply subject";
            self.refuse_request(w, p.ack_id, ErrorCode::InvalidOption, text);
            return false;
        };
        let query = if p.payload.iter().all(u8::is_ascii_whitespace) {
            Query::default()
        } else {
            match serde_json::from_slice::<Query>(&p.payload) {
                Ok(q) => q,
                Err(e) => {
                    let why = format!("invalid presence query: {e}");
                    return self.presence_refused(w, p, "400 Bad Request", &why, cx);
                }
            }
        };
        let limit = query.limit.unwrap_or(DEFAULT_PRESENCE_PAGE);
        if limit > MAX_PRESENCE_PAGE {
            let why = format!("limit {limit} is over {MAX_PRESENCE_PAGE} members a page");
            return self.presence_refused(w, p, "400 Bad Request", &why, cx);
        }
        let op = PresenceOp::Query {
            subject: room.clone(),
            answer: Answer::Inbox(Bytes::copy_from_slice(inbox)),
            offset: query.offset,
            limit,
            count_only: query.count,
        };
        self.send_home(&room, op, cx);
        true
    }

    /// Checks a binary `SUBSCRIBE`'s presence options before anything is made: the
    /// subject must be a room, without a queue group, and a join within the limits checked
    /// here. The refusal's code and text, or `Ok`.
    pub(super) fn check_presence_options(
        &self,
        s: &Subscribe,
        cx: &impl Context,
    ) -> Result<(), (ErrorCode, String)> {
        if s.presence.is_none() && !s.presence_events {
            return Ok(());
        }
        if let Some(why) = bad_room(&s.subject) {
            return Err((ErrorCode::InvalidOption, format!("presence: {why}")));
        }
        if s.queue.is_some() {
            let text = "a queue group member cannot take part in presence";
            return Err((ErrorCode::InvalidOption, text.to_string()));
        }
        match &s.presence {
            Some(p) => self
                .may_join(&s.subject, p.info.len(), cx)
                .map_err(|why| (ErrorCode::PresenceRefused, why)),
            None => Ok(()),
        }
    }

    /// The presence side of a binary subscription just made (subscription `key`, options
    /// checked by `check_presence_options`): the subscription to the room's events it
    /// brings along, with its first snapshot, and the join.
    pub(super) fn subscribe_presence(
        &mut self,
        w: &mut impl Wire,
        s: &Subscribe,
        key: usize,
        cx: &mut impl Context,
    ) {
        let room = self.subs[key].filter.clone();
        if s.presence_events {
            let bounds = self.subs[key].q.bounds;
            let events = self.add_sub(
                w,
                Sid::Events(s.sid),
                events_subject(&room),
                None,
                None,
                bounds,
                false,
                cx,
            );
            // Its first snapshot, behind the subscription in the room's home: every event
            // after the snapshot reaches it.
            self.refresh_presence(events, cx);
        }
        if let Some(join) = &s.presence {
            let user = match (&join.member_token, self.access.user()) {
                // Without authentication, a member token of this broker's names the
                // member a reconnecting client was; anything else is ignored.
                (Some(token), None) => {
                    presence::member_of_token(token).unwrap_or_else(|| self.member_identity(w))
                }
                _ => self.member_identity(w),
            };
            self.subs[key].presence = Some(Box::new(SubPresence {
                room: room.clone(),
                joined: true,
                events: false,
                snapshot_pending: false,
                wanted: false,
                last_request: None,
            }));
            if !self.rooms.contains(&room) {
                self.rooms.push(room.clone());
            }
            let op = PresenceOp::Join {
                subject: room.clone(),
                user,
                conn: self.id,
                client_id: self.client_id,
                info: Bytes::copy_from_slice(&join.info),
                answer: Answer::Frame {
                    conn: self.id,
                    id: s.sid,
                    query: false,
                },
            };
            self.send_home(&room, op, cx);
        }
    }

    /// A subscription ends: one that joined its room leaves it at once (unless another
    /// subscription of this connection is in it too, or the connection is closing: then
    /// `leave_rooms` left it with the grace window); a binary one takes its presence
    /// events subscription with it.
    pub(super) fn end_sub_presence(&mut self, sid: &Sid, p: &SubPresence, cx: &mut impl Context) {
        if p.joined
            && self.rooms.contains(&p.room)
            && !self.subs.iter().any(|(_, s)| {
                s.presence
                    .as_ref()
                    .is_some_and(|o| o.joined && o.room == p.room)
            })
        {
            self.leave_room(p.room.clone(), None, cx);
        }
        if let Sid::Binary(n) = *sid {
            if let Some(&events) = self.sids.get(&Sid::Events(n)) {
                self.remove_sub(events, cx);
            }
        }
    }

    /// `PRESENCE_QUERY`: checked here (a room the user may subscribe to, a page of at most
    /// [`MAX_PRESENCE_PAGE`]), answered by the room's home.
    pub(super) fn presence_query_binary(&mut self, q: PresenceQuery, cx: &mut impl Context) {
        let refuse = |conn: &mut Session, code, text: &str| {
            let frame = presence::refused_frame(q.id, true, code, text);
            conn.out.push_bytes(&frame);
        };
        if let Some(why) = bad_room(&q.room) {
            return refuse(self, ErrorCode::InvalidOption, &why);
        }
        if !self.access.may_subscribe(&q.room, None) {
            bump(
                &cx.stats().permission_violations[Denial::Subscribe as usize],
                1,
            );
            return refuse(
                self,
                ErrorCode::PermissionViolation,
                &subscribe_violation(&q.room, None),
            );
        }
        let limit = match q.limit as usize {
            0 => DEFAULT_PRESENCE_PAGE,
            n if n > MAX_PRESENCE_PAGE => {
                let why = format!("limit {n} is over {MAX_PRESENCE_PAGE} members a page");
                return refuse(self, ErrorCode::InvalidOption, &why);
            }
            n => n,
        };
        let room = Bytes::copy_from_slice(&q.room);
        let op = PresenceOp::Query {
            subject: room.clone(),
            answer: Answer::Frame {
                conn: self.id,
                id: q.id,
                query: true,
            },
            offset: q.offset as usize,
            limit,
            count_only: q.count_only,
        };
        self.send_home(&room, op, cx);
    }

    /// A presence answer from a room's home (`Envelope::PresenceAnswer`): written as it
    /// is. Returns true when it was.
    pub fn write_presence_answer(&mut self, frame: &Bytes) -> bool {
        if self.closing.is_some() {
            return false;
        }
        self.out.push_bytes(frame);
        true
    }

    /// Subscription `key` (to a room's events) had to drop events: instead of a drop
    /// notice, the room's home sends it a fresh snapshot. At most one is on its way at a
    /// time, and one is asked for at most every [`SNAPSHOT_INTERVAL`] (a subscriber that
    /// stays behind in a busy room would otherwise have its room's home list the room
    /// over and over); drops in between are made good by the next one, asked for from
    /// the connection's timer (`retry_snapshots`) if nothing sooner does.
    pub(super) fn refresh_presence(&mut self, key: usize, cx: &mut impl Context) {
        let now = cx.now();
        let sub = &mut self.subs[key];
        let Some(p) = sub.presence.as_mut().filter(|p| p.events) else {
            return;
        };
        let due = p
            .last_request
            .is_none_or(|at| now >= at + SNAPSHOT_INTERVAL);
        if p.snapshot_pending || !due {
            // Events dropped after the snapshot on its way was taken: another one.
            p.wanted = true;
            self.presence_stale = true;
            return;
        }
        p.wanted = false;
        p.snapshot_pending = true;
        p.last_request = Some(now);
        let room = p.room.clone();
        let sref = SubRef {
            conn: self.id,
            key: key as u32,
            id: sub.id,
        };
        let op = PresenceOp::Snapshot {
            subject: room.clone(),
            sub: sref,
        };
        self.send_home(&room, op, cx);
    }

    /// From the connection's timer, while a snapshot is wanted: asks for each one now due.
    pub(super) fn retry_snapshots(&mut self, cx: &mut impl Context) {
        let wanted: Vec<usize> = self
            .subs
            .iter()
            .filter(|(_, s)| s.presence.as_ref().is_some_and(|p| p.wanted))
            .map(|(key, _)| key)
            .collect();
        self.presence_stale = false;
        for key in wanted {
            self.refresh_presence(key, cx);
        }
    }

    /// A closing connection leaves every room it is in, with the grace window: a client
    /// that comes back as the same user in time was never gone.
    pub fn leave_rooms(&mut self, cx: &mut impl Context) {
        for room in std::mem::take(&mut self.rooms) {
            let op = PresenceOp::Leave {
                subject: room.clone(),
                conn: self.id,
                grace: true,
                reply: None,
            };
            self.send_home(&room, op, cx);
        }
    }

    /// Who this connection is in a room: its user where it authenticated, else its name
    /// and client id (never its info).
    fn member_identity(&self, w: &impl Wire) -> Arc<str> {
        match (self.access.user(), w.client().name) {
            (Some(user), _) => Arc::clone(user),
            (None, Some(name)) => format!("{name}#{}", self.client_id).into(),
            (None, None) => format!("#{}", self.client_id).into(),
        }
    }

    /// Sends `op` to `room`'s home worker; a `PING` after it answers once it is applied.
    fn send_home(&mut self, room: &[u8], op: PresenceOp, cx: &mut impl Context) {
        let home = cx.presence_home(room);
        cx.send(home, Envelope::Presence(Box::new(op)));
        self.barrier.touch(home..home + 1);
    }

    /// Answers a request that cannot be served with a status message on its reply
    /// subject, or refuses it in the client's protocol when it has none. Returns whether
    /// it was answered on the inbox.
    fn presence_refused(
        &mut self,
        w: &mut impl Wire,
        p: &PresenceRequest,
        status: &str,
        why: &str,
        cx: &mut impl Context,
    ) -> bool {
        match &p.reply {
            Some(inbox) => {
                let inbox = Bytes::copy_from_slice(inbox);
                let mut msg = Msg::new(inbox, Bytes::new(), self.id, self.read_at);
                msg.headers = Some(Bytes::from(status_block(status, why)));
                msg.ephemeral = true;
                self.publish(msg, cx);
                true
            }
            None => {
                self.refuse_request(w, p.ack_id, ErrorCode::InvalidOption, why);
                false
            }
        }
    }

    /// Refuses a presence request in the client's protocol: `-ERR` on the text port; a
    /// refused `PUBLISH_ACK` (or a non-fatal `ERROR`) on the binary port.
    fn refuse_request(
        &mut self,
        w: &mut impl Wire,
        ack_id: Option<u64>,
        code: ErrorCode,
        text: &str,
    ) {
        self.refuse_publish(w, ack_id, code, text);
    }
}

/// A subscription's part in a room's presence.
#[derive(Debug)]
pub(super) struct SubPresence {
    /// The room.
    pub room: Bytes,
    /// It joined the room (a binary subscription's presence option): it leaves when the
    /// subscription ends.
    pub joined: bool,
    /// It takes the room's events (a subscription to the room's literal events subject,
    /// or the one a binary presence events option brings along): when its queue has to
    /// drop some, it gets a fresh snapshot instead of a drop notice.
    pub events: bool,
    /// A snapshot was asked for and its last page has not arrived yet.
    pub snapshot_pending: bool,
    /// Events were dropped since the last snapshot was asked for: another is due.
    pub wanted: bool,
    /// When the last snapshot was asked for.
    pub last_request: Option<Instant>,
}

impl SubPresence {
    /// What a subscription to `filter` is in presence: a watcher of one room's events
    /// when `filter` is that room's events subject, else nothing.
    pub fn watching(filter: &[u8]) -> Option<Box<SubPresence>> {
        let room = events_room(filter).filter(|r| bad_room(r).is_none())?;
        Some(Box::new(SubPresence {
            room: Bytes::copy_from_slice(room),
            joined: false,
            events: true,
            snapshot_pending: false,
            wanted: false,
            last_request: None,
        }))
    }

    /// A delivery is on its way to the subscription: the last page of a snapshot ends
    /// the wait for it.
    #[inline]
    pub fn note(presence: &mut Option<Box<SubPresence>>, msg: &Msg) {
        if let (Some(p), Some(f)) = (presence, &msg.presence) {
            if f.snapshot_end {
                p.snapshot_pending = false;
            }
        }
    }
}

/// Writes a presence event or snapshot page for binary sid `sid` (a presence events
/// subscription's delivery). Returns its size, or `None` for a message that is not one.
pub(super) fn encode_presence(out: &mut Outbound, sid: u32, msg: &Msg) -> Option<usize> {
    let PresenceFrame { frame, .. } = msg.presence.as_deref()?;
    let before = out.tail().len();
    out.tail().extend_from_slice(frame);
    retarget_presence(&mut out.tail()[before..], sid);
    out.commit(before);
    Some(frame.len())
}

/// A publish to a presence subject, from either port.
pub(super) struct PresenceRequest {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    pub payload: Bytes,
    /// A binary publish that asked for an acknowledgement.
    pub ack_id: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_subjects_say_what_they_ask() {
        assert_eq!(
            parse_presence(b"$TERN.PRESENCE.JOIN.room.1"),
            Some(PresenceVerb::Join(b"room.1"))
        );
        assert_eq!(
            parse_presence(b"$TERN.PRESENCE.LEAVE.r"),
            Some(PresenceVerb::Leave(b"r"))
        );
        assert_eq!(
            parse_presence(b"$TERN.PRESENCE.EVENTS.r.>"),
            Some(PresenceVerb::Events(b"r.>"))
        );
        assert_eq!(
            parse_presence(b"$TERN.PRESENCE.room.1"),
            Some(PresenceVerb::Query(b"room.1"))
        );
        assert_eq!(parse_presence(b"$TERN.REPLAY"), None);
        assert_eq!(
            events_room(b"$TERN.PRESENCE.EVENTS.chat.*"),
            Some(&b"chat.*"[..])
        );
        assert_eq!(events_room(b"$TERN.PRESENCE.JOIN.chat"), None);
    }

    #[test]
    fn filters_that_can_take_in_presence_events() {
        for f in [
            ">",
            "$TERN.>",
            "$TERN.PRESENCE.>",
            "*.PRESENCE.EVENTS.room",
            "$TERN.*.EVENTS.*",
            "$TERN.PRESENCE.EVENTS.room.1",
        ] {
            assert!(overlaps_presence_events(f.as_bytes()), "{f}");
        }
        for f in [
            "room.>",
            "$TERN.REPLAY",
            "$TERN.PRESENCE.EVENTS",
            "*.*.*",
            "a.PRESENCE.>",
        ] {
            assert!(!overlaps_presence_events(f.as_bytes()), "{f}");
        }
    }

    #[test]
    fn a_room_is_a_literal_subject_not_named_like_a_verb() {
        assert_eq!(bad_room(b"room.1"), None);
        assert!(bad_room(b"room.*").is_some());
        assert!(bad_room(b"").is_some());
        assert!(bad_room(b"JOIN.x").unwrap().contains("cannot start with"));
        assert!(bad_room(b"EVENTS").is_some());
        assert_eq!(bad_room(b"JOINED.x"), None);
    }
}

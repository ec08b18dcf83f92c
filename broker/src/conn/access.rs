//! Who a connection's client is and what it may do.
//!
//! Owns: [`Access`], a connection's place in authentication ([`Stage`]: open when the
//! broker asks for none, awaiting the credentials, being checked off the loop, granted),
//! the identity it was granted, its permissions, its `allow_responses` grants (the reply
//! subjects of requests it received, which it may publish to) and when its token expires;
//! and the exact texts a refusal gets, worded as nats-server words them.
//!
//! The connection's steps that use it, shared by both protocols, are here too:
//! [`Session::authenticate`] (inline, or handed to the checker thread when costly),
//! [`Session::verdict`] (the checker's answer), the refusal, the expiry and the re-check of
//! a connection's permissions after a reload ([`Session::recheck_access`]).
//!
//! Never: verifies a credential itself (the `tern-auth` crate does, on the worker or on
//! the checker thread) or touches the socket. On a broker without authentication, every
//! check here is one branch on a `None`: nothing is looked up, nothing allocated.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tern_auth::{AuthFailure, Identity, Method, Permissions, ResponseGrants};
use tracing::debug;

use super::wire::Wire;
use super::Context;
use super::{CloseReason, Session};
use crate::auth::{Job, OwnedCredentials};
use crate::stats::{bump, AuthRefusal, Denial};

/// Where a connection stands in authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The broker requires no authentication: everything is allowed.
    Open,
    /// Nothing may be done until `CONNECT` (`HELLO`) brings acceptable credentials.
    Awaiting,
    /// The credentials are being checked on the checker thread: nothing more is applied
    /// until its verdict arrives.
    Checking,
    /// Authenticated.
    Granted,
}

/// A connection's identity and permissions.
pub(crate) struct Access {
    pub stage: Stage,
    /// What an nkey user must sign, sent in `INFO` (text) or `CHALLENGE` (binary).
    pub nonce: Option<String>,
    user: Option<Arc<str>>,
    method: Option<Method>,
    /// `None`: may do everything.
    perms: Option<Arc<Permissions>>,
    grants: Option<ResponseGrants>,
    /// When its (JWT) token expires, unless refreshed.
    pub expires: Option<SystemTime>,
    /// The generation of the rules it was granted under (`AuthHandle::generation`).
    pub generation: u64,
    /// The broker's own bridge (`tern_bridge`): authenticated by the bridges' secret, may
    /// do everything, and its subscriptions are not interest for the bridge.
    pub internal: bool,
}

impl Access {
    /// A connection on a broker that requires no authentication (under the rules of
    /// `generation`).
    pub fn open(generation: u64) -> Access {
        Access {
            stage: Stage::Open,
            nonce: None,
            user: None,
            method: None,
            perms: None,
            grants: None,
            expires: None,
            generation,
            internal: false,
        }
    }

    /// A connection that must authenticate first.
    pub fn awaiting(nonce: Option<String>, generation: u64) -> Access {
        Access {
            stage: Stage::Awaiting,
            nonce,
            ..Access::open(generation)
        }
    }

    /// True until the client has authenticated (or the broker requires nothing).
    pub fn is_pending(&self) -> bool {
        matches!(self.stage, Stage::Awaiting | Stage::Checking)
    }

    /// The credentials were accepted: the connection is who `id` says.
    pub fn grant(&mut self, id: Identity, generation: u64) {
        self.grants = id
            .permissions
            .as_ref()
            .and_then(|p| p.responses())
            .map(ResponseGrants::new);
        self.perms = id.permissions;
        // A token (or no authentication) names nobody.
        self.user = (!id.user.is_empty()).then_some(id.user);
        self.method = Some(id.method);
        self.expires = id.expires;
        self.generation = generation;
        self.stage = Stage::Granted;
    }

    /// The bridges' secret was presented: this is the broker's own bridge.
    pub fn grant_internal(&mut self, generation: u64) {
        self.grant(
            Identity {
                user: tern_bridge::LOCAL_NAME.into(),
                method: Method::Token,
                permissions: None,
                expires: None,
            },
            generation,
        );
        self.internal = true;
    }

    /// New permissions for the same user (a reload, a refreshed token). Grants already
    /// made stay when responses are still allowed.
    pub fn replace_permissions(&mut self, perms: Option<Arc<Permissions>>, generation: u64) {
        let responses = perms.as_ref().and_then(|p| p.responses());
        match (responses, &self.grants) {
            (None, _) => self.grants = None,
            (Some(r), None) => self.grants = Some(ResponseGrants::new(r)),
            (Some(_), Some(_)) => {}
        }
        self.perms = perms;
        self.generation = generation;
    }

    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    pub fn method(&self) -> Option<Method> {
        self.method
    }

    /// May it publish to `subject`? A reply subject it was granted (`allow_responses`)
    /// counts one use. Without permissions (the common case) this is one inlined branch.
    #[inline(always)]
    pub fn may_publish(&mut self, subject: &[u8], now: Instant) -> bool {
        self.perms.is_none() || self.may_publish_checked(subject, now)
    }

    #[inline(never)]
    fn may_publish_checked(&mut self, subject: &[u8], now: Instant) -> bool {
        let Some(perms) = &self.perms else {
            return true;
        };
        perms.may_publish(subject) || self.grants.as_mut().is_some_and(|g| g.take(subject, now))
    }

    /// May it subscribe to `filter` (in queue group `queue`)? A room's presence events
    /// (`$TERN.PRESENCE.EVENTS.<room>`) are for those who may subscribe to the room.
    pub fn may_subscribe(&self, filter: &[u8], queue: Option<&[u8]>) -> bool {
        let filter = super::presence::events_room(filter).unwrap_or(filter);
        self.perms
            .as_ref()
            .is_none_or(|p| p.may_subscribe(filter, queue))
    }

    /// True when the deliveries of a subscription to `filter` must each be checked with
    /// [`Access::may_receive`]: a wildcard overlapping a denied subject, or a filter that
    /// can take in presence events (`$TERN.>`, `>`...), whose rooms the user may not all
    /// be allowed to see.
    pub fn screens(&self, filter: &[u8]) -> bool {
        self.perms.as_ref().is_some_and(|p| {
            super::presence::overlaps_presence_events(filter)
                || p.delivery_filter(super::presence::events_room(filter).unwrap_or(filter))
        })
    }

    /// True when the wildcard `filter` takes in a subject its user may not receive (a
    /// deny entry inside it). What a catch-up, which replays stored messages only (never
    /// presence events), must be refused for.
    pub fn denies_within(&self, filter: &[u8]) -> bool {
        self.perms
            .as_ref()
            .is_some_and(|p| p.delivery_filter(filter))
    }

    /// May a message on `subject` be delivered to it, on a subscription in queue group
    /// `queue` (a screened subscription's check; a queue's own deny entries apply too)? A
    /// presence event only to who may subscribe to its room.
    pub fn may_receive(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        self.perms
            .as_ref()
            .is_none_or(|p| match super::presence::events_room(subject) {
                Some(room) => p.may_subscribe(room, None),
                None => p.may_receive_queue(subject, queue),
            })
    }

    /// A message with reply subject `reply` was delivered to it: with `allow_responses`,
    /// it may now publish to `reply`.
    #[inline(always)]
    pub fn received_request(&mut self, reply: &[u8], now: Instant) {
        if let Some(g) = &mut self.grants {
            g.grant(reply, now);
        }
    }

    /// Forgets expired reply grants (the ping timer).
    pub fn prune(&mut self, now: Instant) {
        if let Some(g) = &mut self.grants {
            g.prune(now);
        }
    }

    /// True when its token has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

impl Session {
    /// Checks the credentials the client presented (`CONNECT`, `HELLO`, a refreshed
    /// token): at once, or on the checker thread when that would be costly (bcrypt), the
    /// connection applying nothing more until [`Session::verdict`].
    pub(super) fn authenticate(
        &mut self,
        w: &mut impl Wire,
        creds: OwnedCredentials,
        cx: &mut impl Context,
    ) {
        let auth = cx.auth().load();
        if auth.is_costly(&creds.borrow()) {
            let user = creds.user.clone();
            let job = Job {
                conn: self.id,
                auth,
                creds,
                nonce: self.access.nonce.clone(),
            };
            if cx.check(job) {
                self.access.stage = Stage::Checking;
            } else {
                self.refuse_auth(w, AuthRefusal::CheckerBusy, user.as_deref(), cx);
            }
            return;
        }
        let outcome = auth.authenticate(
            &creds.borrow(),
            self.access.nonce.as_deref(),
            SystemTime::now(),
        );
        self.authenticated(w, outcome, creds.user.as_deref(), cx);
    }

    /// The checker thread's answer about this connection's credentials.
    pub(super) fn verdict(
        &mut self,
        w: &mut impl Wire,
        outcome: Result<Identity, AuthFailure>,
        cx: &mut impl Context,
    ) {
        if self.access.stage != Stage::Checking || self.closing.is_some() {
            return;
        }
        self.access.stage = Stage::Awaiting;
        self.authenticated(w, outcome, None, cx);
    }

    fn authenticated(
        &mut self,
        w: &mut impl Wire,
        outcome: Result<Identity, AuthFailure>,
        claimed: Option<&str>,
        cx: &mut impl Context,
    ) {
        let id = match outcome {
            Ok(id) => id,
            Err(failure) => return self.refuse_auth(w, refusal(&failure), claimed, cx),
        };
        let generation = cx.auth().generation();
        if self.access.stage == Stage::Granted {
            // A refreshed token: the same user, with what the new token says.
            if self.access.user() != Some(&id.user) {
                let user = id.user.to_string();
                return self.refuse_auth(w, AuthRefusal::UserChanged, Some(&user), cx);
            }
            self.access.expires = id.expires;
            self.access.replace_permissions(id.permissions, generation);
            self.revoke_forbidden(w, cx);
            return;
        }
        bump(&cx.stats().auth_accepted, 1);
        if let Some(slot) = self.admission.slot() {
            slot.auth_succeeded();
        }
        debug!(
            peer = %self.peer,
            client_id = self.client_id,
            user = %id.user,
            method = id.method.name(),
            "authenticated"
        );
        self.access.grant(id, generation);
        self.granted(w);
    }

    /// Refuses the client: counted, told (nats-server's words on the text port,
    /// `AuthorizationViolation` on the binary one) and closed. The worker logs the close
    /// with the peer, the user it claimed and the reason; never the secret.
    /// Repeated refusals hold the client's address back (`auth_failures_per_ip`); a full
    /// checker queue is the server's state, not the client's failure, and does not count.
    pub(super) fn refuse_auth(
        &mut self,
        w: &mut impl Wire,
        why: AuthRefusal,
        user: Option<&str>,
        cx: &impl Context,
    ) {
        bump(&cx.stats().auth_refused[why as usize], 1);
        if why != AuthRefusal::CheckerBusy {
            if let Some(slot) = self.admission.slot() {
                slot.auth_failed(cx.now());
            }
        }
        if self.access.user().is_none() {
            if let Some(user) = user {
                self.access.user = Some(Arc::from(user));
            }
        }
        self.fail(w, CloseReason::Unauthorized(why));
    }

    /// Closes the connection when its token has expired (the ping timer). Returns true
    /// when it did.
    pub(super) fn check_expiry(&mut self, w: &mut impl Wire, cx: &impl Context) -> bool {
        if self.access.expires.is_none() || !self.access.expired(SystemTime::now()) {
            return false;
        }
        bump(
            &cx.stats().auth_refused[AuthRefusal::TokenExpired as usize],
            1,
        );
        self.fail(w, CloseReason::Expired);
        true
    }

    /// After the rules were reloaded (SIGHUP): the user's permissions as they are now;
    /// a user that is gone is refused, and the subscriptions it may no longer hold are
    /// removed, each with nats-server's message. A connection accepted while
    /// authentication was off is refused once it is on; with it turned off, every
    /// connection may do everything.
    pub(super) fn recheck_access(&mut self, w: &mut impl Wire, cx: &mut impl Context) {
        let generation = cx.auth().generation();
        if self.access.generation == generation || self.access.is_pending() {
            return;
        }
        let rules = cx.auth().load();
        if !rules.is_required() {
            // Authentication was turned off: everyone may do everything.
            self.access.replace_permissions(None, generation);
            self.revoke_forbidden(w, cx);
            return;
        }
        let Some(method) = self.access.method() else {
            // Accepted while authentication was off: it has none to show now.
            return self.refuse_auth(w, AuthRefusal::MissingCredentials, None, cx);
        };
        let user = self.access.user().cloned().unwrap_or_else(|| Arc::from(""));
        if method == Method::Jwt && rules.accepts_jwt() {
            // Its permissions are its token's, until the token is refreshed.
            self.access.generation = generation;
            return;
        }
        match rules.permissions_of(&user, method) {
            Some(perms) => {
                self.access.replace_permissions(perms, generation);
                self.revoke_forbidden(w, cx);
            }
            None => {
                let user = (!user.is_empty()).then(|| user.to_string());
                self.refuse_auth(w, AuthRefusal::UnknownUser, user.as_deref(), cx);
            }
        }
    }

    /// Removes the subscriptions the connection's permissions no longer allow, telling
    /// the client about each; marks the ones whose deliveries must now be screened.
    fn revoke_forbidden(&mut self, w: &mut impl Wire, cx: &mut impl Context) {
        let mut revoked = Vec::new();
        for (key, sub) in self.subs.iter_mut() {
            if self.access.may_subscribe(&sub.filter, sub.queue.as_deref()) {
                sub.screened = self.access.screens(&sub.filter);
            } else {
                revoked.push(key);
            }
        }
        for key in revoked {
            let text = subscribe_violation(&self.subs[key].filter, self.subs[key].queue.as_deref());
            let sid = self.subs[key].sid.clone();
            bump(
                &cx.stats().permission_violations[Denial::Revoked as usize],
                1,
            );
            self.remove_sub(key, cx);
            self.refuse_permission(w, Some(&sid), &text);
        }
    }
}

/// The counter a verification failure goes to.
fn refusal(failure: &AuthFailure) -> AuthRefusal {
    match failure {
        AuthFailure::MissingCredentials => AuthRefusal::MissingCredentials,
        AuthFailure::UnknownUser => AuthRefusal::UnknownUser,
        AuthFailure::BadPassword => AuthRefusal::BadPassword,
        AuthFailure::BadToken => AuthRefusal::BadToken,
        AuthFailure::BadSignature => AuthRefusal::BadSignature,
        AuthFailure::MissingNonce => AuthRefusal::MissingNonce,
        AuthFailure::TokenExpired => AuthRefusal::TokenExpired,
        AuthFailure::TokenNotYetValid => AuthRefusal::TokenNotYetValid,
        AuthFailure::InvalidToken(_) => AuthRefusal::InvalidToken,
    }
}

/// Reply subjects no client may give its requests: the broker's own (`$TERN.`), so that
/// an answer can never be made to start a catch-up or reach the broker's internals on
/// someone else's behalf (nats-server's `_R_.` rule, for Tern's reserved subjects).
pub(crate) fn is_reserved_reply(reply: &[u8]) -> bool {
    reply.starts_with(b"$TERN.")
}

/// nats-server's words for a refused connection (then closed).
pub(crate) const AUTHORIZATION_VIOLATION: &str = "Authorization Violation";

/// nats-server's words for a connection whose credentials expired (then closed).
pub(crate) const AUTHENTICATION_EXPIRED: &str = "User Authentication Expired";

/// `Permissions Violation for Publish to "x"`.
pub(crate) fn publish_violation(subject: &[u8]) -> String {
    format!("Permissions Violation for Publish to {}", quoted(subject))
}

/// `Permissions Violation for Subscription to "x"`, with ` using queue "q"` for a queue
/// subscription.
pub(crate) fn subscribe_violation(filter: &[u8], queue: Option<&[u8]>) -> String {
    match queue {
        None => format!(
            "Permissions Violation for Subscription to {}",
            quoted(filter)
        ),
        Some(q) => format!(
            "Permissions Violation for Subscription to {} using queue {}",
            quoted(filter),
            quoted(q)
        ),
    }
}

/// `Permissions Violation for Publish with Reply of "x"`.
pub(crate) fn reply_violation(reply: &[u8]) -> String {
    format!(
        "Permissions Violation for Publish with Reply of {}",
        quoted(reply)
    )
}

/// A subject in double quotes, as Go's `%q` prints one (subjects have no control bytes;
/// a quote or a backslash is escaped).
fn quoted(subject: &[u8]) -> String {
    let text = String::from_utf8_lossy(subject);
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_worded_as_nats_server_words_them() {
        assert_eq!(
            publish_violation(b"foo.bar"),
            r#"Permissions Violation for Publish to "foo.bar""#
        );
        assert_eq!(
            subscribe_violation(b"foo.*", None),
            r#"Permissions Violation for Subscription to "foo.*""#
        );
        assert_eq!(
            subscribe_violation(b"foo.*", Some(b"workers")),
            r#"Permissions Violation for Subscription to "foo.*" using queue "workers""#
        );
        assert_eq!(
            reply_violation(b"$TERN.X"),
            r#"Permissions Violation for Publish with Reply of "$TERN.X""#
        );
        assert_eq!(quoted(br#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn an_open_connection_may_do_everything_and_screens_nothing() {
        let mut a = Access::open(0);
        let now = Instant::now();
        assert!(!a.is_pending());
        assert!(a.may_publish(b"anything", now));
        assert!(a.may_subscribe(b">", Some(b"q")));
        assert!(!a.screens(b">"));
        assert!(a.may_receive(b"x", None));
        assert!(!a.expired(SystemTime::now()));
    }
}

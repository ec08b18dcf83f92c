//! Per-worker counters, each declared once.
//!
//! Owns: the numbers each worker keeps about its own work, declared in one [`counters!`]
//! block: a line per counter gives its field, its `/varz` key (the field name), its
//! Prometheus family and type, its help text and, for a counter split by a label, the
//! label's values. From that come [`WorkerStats`] (what a worker writes), [`Totals`] (a sum
//! over workers, serialised into `/varz`) and [`families`] (what `/metrics` renders).
//!
//! The counters named `monitor_*` (families `tern_monitor_*`) are the monitoring thread's:
//! it has a `WorkerStats` of its own, which no worker writes, and these are the only
//! counters it bumps (a worker never bumps them).
//!
//! Each counter has exactly one writer (its worker), so updates are a plain load and store,
//! never a contended atomic read-modify-write; readers (the shutdown summary, the monitoring
//! thread) sum the workers' values. Latency histograms are not here: they are not atomics,
//! so each worker owns its own (`Latency`) and hands the monitor a copy on request.
//!
//! Never: blocks, allocates or logs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::admission::{ConnRefusal, RateScope};
use crate::budget::BudgetKind;
use crate::presence::RefusalKind;
use crate::replay::ReplayLimit;

/// A metric family of `/metrics`: every worker's value of one counter (one value per label
/// value for a labelled counter).
pub(crate) struct Family {
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub help: &'static str,
    /// The label's name and its values, for a counter split by a label.
    pub label: Option<(&'static str, &'static [&'static str])>,
    /// The values of one worker's totals: one, or one per label value.
    pub values: fn(&Totals) -> &[u64],
}

/// Declares the counters: `kind name [NAMES, "label"] => "metric";`, with the doc comment
/// as the metric's help. See the module header.
macro_rules! counters {
    (
        $(
            $(#[doc = $doc:literal])*
            $kind:ident $name:ident $([$labels:path, $label:literal])? $(=> $metric:literal)? ;
        )*
    ) => {
        /// The counters of one worker. Written by that worker only.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerStats {
            $(
                $(#[doc = $doc])*
                pub $name: counters!(@atomic $($labels)?),
            )*
        }

        /// A point-in-time sum over workers (or one worker's values).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Totals {
            $(
                $(#[doc = $doc])*
                pub $name: counters!(@value $($labels)?),
            )*
        }

        impl Totals {
            /// Adds every worker's counters.
            pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Totals {
                let mut t = Totals::default();
                for w in workers {
                    $(counters!(@add t.$name, w.$name $(, $labels)?);)*
                }
                t
            }
        }

        /// `/varz`: every counter under its field name; a labelled one as an object
        /// keyed by label value.
        impl Serialize for Totals {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                $(counters!(@serialize m, stringify!($name), self.$name $(, $labels)?);)*
                m.end()
            }
        }

        /// The `/metrics` families, in declaration order (counters without a metric name
        /// have none).
        #[allow(clippy::vec_init_then_push)]
        pub(crate) fn families() -> Vec<Family> {
            let mut families = Vec::new();
            $(counters!(
                @family families, $kind, $name, [$($labels, $label)?], [$($metric)?], [$($doc)*]
            );)*
            families
        }
    };
    (@family $v:ident, $kind:ident, $name:ident, $labels:tt, [], $doc:tt) => {};
    (@family $v:ident, $kind:ident, $name:ident, [$($labels:path, $label:literal)?], [$metric:literal], [$($doc:literal)*]) => {
        $v.push(Family {
            name: $metric,
            kind: stringify!($kind),
            help: concat!($($doc),*),
            label: counters!(@label $($labels, $label)?),
            values: |t| counters!(@slice t.$name $(, $labels)?),
        })
    };
    (@atomic) => { AtomicU64 };
    (@atomic $labels:path) => { [AtomicU64; $labels.len()] };
    (@value) => { u64 };
    (@value $labels:path) => { [u64; $labels.len()] };
    (@add $sum:expr, $c:expr) => { $sum += $c.load(Ordering::Relaxed) };
    (@add $sum:expr, $c:expr, $labels:path) => {
        for (sum, c) in $sum.iter_mut().zip(&$c) {
            *sum += c.load(Ordering::Relaxed);
        }
    };
    (@serialize $m:ident, $key:expr, $v:expr) => { $m.serialize_entry($key, &$v)? };
    (@serialize $m:ident, $key:expr, $v:expr, $labels:path) => {
        $m.serialize_entry($key, &Labelled(&$labels, &$v))?
    };
    (@label) => { None };
    (@label $labels:path, $label:literal) => { Some(($label, &$labels)) };
    (@slice $v:expr) => { std::slice::from_ref(&$v) };
    (@slice $v:expr, $labels:path) => { &$v };
}

counters! {
    /// Client connections accepted.
    counter total_connections => "tern_connections_opened_total";
    /// Client connections this worker accepted and handed to another, their home (the
    /// worker with the fewest connections, `ConnectionGate::admit`).
    counter connections_moved => "tern_connections_moved_total";
    /// Client connections closed (the sum of closed_by_reason).
    counter closed_connections;
    /// Client connections closed, by reason.
    counter closed_by_reason [CloseKind::NAMES, "reason"] => "tern_connections_closed_total";
    /// Subscriptions held by the worker's connections.
    gauge subscriptions => "tern_subscriptions";
    /// Messages published by clients.
    counter in_msgs => "tern_messages_in_total";
    /// Header and payload bytes published by clients.
    counter in_bytes => "tern_bytes_in_total";
    /// Deliveries queued to subscribers.
    counter out_msgs => "tern_messages_out_total";
    /// Header and payload bytes of deliveries queued to subscribers.
    counter out_bytes => "tern_bytes_out_total";
    /// Deliveries queued to a connection and never written (slow consumer, write error,
    /// close).
    counter dropped_msgs => "tern_messages_dropped_total";
    /// Messages subscription queues dropped on overflow (lowest priority, oldest first), or
    /// that a lossless subscription could not get back because they were not stored.
    counter queue_dropped_msgs => "tern_queue_dropped_total";
    /// Queued messages replaced by a newer one with the same coalescing key.
    counter coalesced_msgs => "tern_coalesced_total";
    /// Drop notices sent to subscribers.
    counter drop_notices => "tern_drop_notices_total";
    /// Times a lossless subscription overflowed and fell back to the log.
    counter lossless_fallbacks => "tern_lossless_fallbacks_total";
    /// Connections closed as slow consumers (max_pending, or over the high-water mark past
    /// slow_consumer_grace).
    counter slow_consumers => "tern_slow_consumers_total";
    /// Connections closed for unanswered pings.
    counter stale_connections => "tern_stale_connections_total";
    /// Connections closed because their handshake was not done within auth_timeout (binary:
    /// preface and HELLO from accept; text: the first control line from the first byte).
    counter handshake_timeouts => "tern_handshake_timeouts_total";
    /// TLS handshakes completed (every port).
    counter tls_handshakes => "tern_tls_handshakes_total";
    /// WebSocket upgrades accepted.
    counter websocket_upgrades => "tern_websocket_upgrades_total";
    /// Connections closed by their transport (TLS or WebSocket), by what failed; each is
    /// logged with the peer's address and the reason.
    counter transport_failures [TransportFailure::NAMES, "reason"] => "tern_transport_failures_total";
    /// Connections that authenticated (at connect; refreshes not counted).
    counter auth_accepted => "tern_auth_accepted_total";
    /// Authentications refused, by reason (each logged with the peer and the user, never
    /// the secret).
    counter auth_refused [AuthRefusal::NAMES, "reason"] => "tern_auth_refused_total";
    /// Publishes and subscriptions refused for the user's permissions, by what.
    counter permission_violations [Denial::NAMES, "kind"] => "tern_permission_violations_total";
    /// Deliveries withheld from a wildcard subscription for a subject its user may not
    /// receive (a deny entry inside the wildcard).
    counter deliveries_denied => "tern_deliveries_denied_total";
    /// Presence joins applied (first connections, more connections, rejoins).
    counter presence_joins => "tern_presence_joins_total";
    /// Presence joins refused, by the limit that refused them.
    counter presence_refused [RefusalKind::NAMES, "reason"] => "tern_presence_refused_total";
    /// Presence join and leave events published.
    counter presence_events => "tern_presence_events_total";
    /// Presence snapshots sent to a subscription: at the start of a binary presence events
    /// subscription, and to one whose queue had to drop presence events.
    counter presence_snapshots => "tern_presence_snapshots_total";
    /// Rooms with members on the worker (each room lives on one worker).
    gauge presence_rooms => "tern_presence_rooms";
    /// Members of the worker's rooms, lingering ones included.
    gauge presence_members => "tern_presence_members";
    /// Text connections closed because a control line that had started was not whole
    /// within auth_timeout.
    counter control_line_timeouts => "tern_control_line_timeouts_total";
    /// Protocol errors reported to clients (fatal or not).
    counter protocol_errors => "tern_protocol_errors_total";
    /// Subjects, filters and queue group names refused for more than max_subject_tokens
    /// tokens (also counted in protocol_errors).
    counter subject_tokens_refused => "tern_subject_tokens_refused_total";
    /// Requests answered with a no-responders status.
    counter no_responders => "tern_no_responders_total";
    /// New connections refused by admission control, by limit.
    counter connections_refused [ConnRefusal::NAMES, "reason"] => "tern_connections_refused_total";
    /// Subscriptions refused for max_subscriptions.
    counter subscriptions_refused => "tern_subscriptions_refused_total";
    /// Times a publisher was paused (not read) for going over a publish rate, by limit.
    counter publishes_throttled [RateScope::NAMES, "scope"] => "tern_publishes_throttled_total";
    /// Publishes refused for going over a publish rate, by limit.
    counter publishes_rate_refused [RateScope::NAMES, "scope"] => "tern_publishes_rate_refused_total";
    /// Low-priority publishes refused because a worker was overloaded (overload shedding).
    counter publishes_shed => "tern_publishes_shed_total";
    /// Publishes refused because their message id was longer than max_message_id.
    counter message_ids_refused => "tern_message_ids_refused_total";
    /// Message ids the dedupe windows remember (each shard's, summed).
    gauge dedupe_ids => "tern_dedupe_ids";
    /// Message ids forgotten before their window ended because a shard remembered
    /// dedupe_max_ids.
    counter dedupe_evicted => "tern_dedupe_evicted_total";
    /// Appends, writes and syncs of the ring logs that failed (each logged with its error):
    /// the messages stay in memory and are delivered, but a restart may not find them.
    counter store_errors => "tern_store_errors_total";
    /// Syncs of the ring logs by their sync threads (`fsync = "interval"`): one an interval
    /// while something is appended, none while nothing is.
    counter store_syncs => "tern_store_syncs_total";
    /// $TERN.REPLAY requests refused, by the limit they hit.
    counter replays_refused [ReplayLimit::NAMES, "limit"] => "tern_replays_refused_total";
    /// $TERN.REPLAY requests in progress (counted on the requesters' workers).
    gauge replays_active => "tern_replays_active";
    /// Times a catch-up waited a loop turn because where its messages go was congested.
    counter replays_deferred => "tern_replays_deferred_total";
    /// Monitoring requests answered (any status).
    counter monitor_requests => "tern_monitor_requests_total";
    /// Monitoring requests or connections refused, by reason.
    counter monitor_requests_refused [MonitorRefusal::NAMES, "reason"] => "tern_monitor_requests_refused_total";
    /// Connections closed by lame duck mode, a few at a time over lame_duck_duration.
    counter lame_duck_closed => "tern_lame_duck_closed_total";
    /// Queued messages given up because a budget was exceeded: a connection's
    /// (max_pending) or the broker's (max_queued_bytes). Also in queue_dropped_msgs.
    counter budget_drops [BudgetKind::NAMES, "budget"] => "tern_budget_drops_total";
    /// Bytes held in subscription queues now.
    gauge queued_bytes => "tern_queued_bytes";
    /// Times a connection stopped being read because what waits for it passed
    /// max_pending.
    counter over_budget_pauses => "tern_over_budget_pauses_total";
    /// Times a consumer became congested: over its high-water mark and draining, so the
    /// publishers that feed it are stalled.
    counter congested_consumers => "tern_congested_consumers_total";
    /// Times a congested consumer stopped draining and was judged stuck: its publishers
    /// were released.
    counter stuck_consumers => "tern_stuck_consumers_total";
    /// Times a publisher was stalled (not read) for a congested consumer.
    counter publisher_stalls => "tern_publisher_stalls_total";
    /// Times a publisher was held back (not read) because a lossless subscription that
    /// still reads was falling so far behind in the ring log that the ring would overwrite
    /// what it has yet to read.
    counter lossless_holds => "tern_lossless_holds_total";
    /// Stalls that ended at max_publisher_stall rather than with the congestion.
    counter publisher_stall_timeouts => "tern_publisher_stall_timeouts_total";
}

/// A labelled counter's values as a `/varz` object, keyed by label value.
struct Labelled<'a>(&'a [&'a str], &'a [u64]);

impl Serialize for Labelled<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (label, v) in self.0.iter().zip(self.1) {
            m.serialize_entry(label, v)?;
        }
        m.end()
    }
}

crate::names::named_enum! {
    /// Why a connection closed, as a counter index (the reason without its detail text).
    pub enum CloseKind {
        ClientClosed => "client_closed",
        ProtocolError => "protocol_error",
        SlowConsumer => "slow_consumer",
        StaleConnection => "stale_connection",
        IoError => "io_error",
        ServerShutdown => "server_shutdown",
        HandshakeTimeout => "handshake_timeout",
        Transport => "transport_error",
        Unauthorized => "authorization_violation",
        Expired => "authentication_expired",
    }
}

crate::names::named_enum! {
    /// Why a connection's authentication was refused, as a counter index.
    pub enum AuthRefusal {
        /// Authentication is required and none was given (and there is no no_auth_user).
        MissingCredentials => "missing_credentials",
        /// A user name (or nkey) the broker does not know.
        UnknownUser => "unknown_user",
        /// A known user with the wrong password.
        BadPassword => "bad_password",
        /// A token that is not the configured one.
        BadToken => "bad_token",
        /// An nkey signature that does not verify.
        BadSignature => "bad_signature",
        /// An nkey connection whose server sent no nonce.
        MissingNonce => "missing_nonce",
        /// A JWT past its expiry (at connect or refresh).
        TokenExpired => "token_expired",
        /// A JWT not valid yet (nbf).
        TokenNotYetValid => "token_not_yet_valid",
        /// A JWT that does not verify or does not parse.
        InvalidToken => "invalid_token",
        /// The text port's first operation was not CONNECT.
        NotConnectFirst => "not_connect_first",
        /// A token refresh for another user.
        UserChanged => "user_changed",
        /// The checker thread's queue was full (bcrypt checks waiting).
        CheckerBusy => "checker_busy",
    }
}

crate::names::named_enum! {
    /// What a permissions violation refused, as a counter index.
    pub enum Denial {
        /// A publish to a subject the user may not publish to.
        Publish => "publish",
        /// A subscription (or catch-up) to a filter the user may not subscribe to.
        Subscribe => "subscribe",
        /// A publish whose reply subject is reserved.
        Reply => "reply",
        /// A subscription removed because a reload took its permission away.
        Revoked => "revoked",
    }
}

crate::names::named_enum! {
    /// What closed a connection in its transport, as a counter index.
    pub enum TransportFailure {
        /// A client that sent plain text to a TLS port.
        PlainText => "plain_text_on_tls",
        /// A TLS handshake that failed: no common version or cipher, a missing, unknown or
        /// expired client certificate, a bad record.
        TlsHandshake => "tls_handshake",
        /// A TLS error after the handshake (a corrupt record, an unexpected alert).
        Tls => "tls",
        /// The TLS handshake or the WebSocket upgrade not done within its timeout.
        HandshakeTimeout => "handshake_timeout",
        /// A WebSocket upgrade request refused (answered 400, 403 or 404).
        WebSocketUpgrade => "websocket_upgrade",
        /// A WebSocket protocol error: answered with a close frame and its code.
        WebSocket => "websocket",
    }
}

crate::names::named_enum! {
    /// Why the monitoring endpoint refused a request or a connection, as a counter index.
    pub enum MonitorRefusal {
        /// Over `monitor_max_connections`: answered 503 and closed.
        Connections => "connections",
        /// Request line or headers over `monitor_max_request_head`: 414 or 431.
        HeadTooLarge => "head_too_large",
        /// A request not received, or a response not taken, within `monitor_request_timeout`.
        Timeout => "timeout",
        /// Not HTTP/1.x, malformed, a body, or a query value that is not valid: 400 or 505.
        BadRequest => "bad_request",
        /// Not `GET`: 405.
        Method => "method",
        /// `limit` or `offset` over `monitor_max_limit` or `monitor_max_offset`: 400.
        Paging => "paging",
        /// Every snapshot slot taken: 503.
        Busy => "busy",
        /// No bearer token, or the wrong one, while `monitor_token` is set: 401.
        Unauthorized => "unauthorized",
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Sets a gauge (or a counter kept elsewhere) that only the calling worker writes.
#[inline]
pub(crate) fn set(counter: &AtomicU64, v: u64) {
    counter.store(v, Ordering::Relaxed);
}

/// Subtracts `n` from a gauge that only the calling worker writes.
#[inline]
pub(crate) fn unbump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_sub(n),
        Ordering::Relaxed,
    );
}

impl Totals {
    /// The counters of one worker.
    pub fn of(worker: &WorkerStats) -> Totals {
        Totals::sum([worker])
    }

    /// Connections open now: opened minus closed.
    pub fn connections(&self) -> u64 {
        self.total_connections
            .saturating_sub(self.closed_connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_declaration_gives_the_sum_the_varz_keys_and_the_metric_families() {
        let a = WorkerStats::default();
        let b = WorkerStats::default();
        bump(&a.in_msgs, 2);
        bump(&b.in_msgs, 3);
        bump(&b.closed_by_reason[CloseKind::StaleConnection as usize], 1);
        let t = Totals::sum([&a, &b]);
        assert_eq!(t.in_msgs, 5);
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["in_msgs"], 5);
        assert_eq!(v["closed_by_reason"]["stale_connection"], 1);
        assert_eq!(v["connections_refused"]["per_ip"], 0);
        let f = families()
            .into_iter()
            .find(|f| f.name == "tern_messages_in_total")
            .unwrap();
        assert_eq!(
            (f.kind, f.help.trim()),
            ("counter", "Messages published by clients.")
        );
        assert_eq!((f.values)(&t), &[5]);
        let f = families()
            .into_iter()
            .find(|f| f.name == "tern_connections_closed_total")
            .unwrap();
        assert_eq!(f.label.unwrap().0, "reason");
        assert_eq!((f.values)(&t)[CloseKind::StaleConnection as usize], 1);
        assert!(
            !families()
                .iter()
                .any(|f| f.help.contains("sum of closed_by_reason")),
            "a counter without a metric name has no family"
        );
    }
}

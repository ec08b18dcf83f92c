//! Permissions as a property, over random permission sets and random subjects: a message
//! reaches a subscriber if and only if its publisher may publish it and the subscriber may
//! subscribe to it, live on the text port and through both catch-up paths (`$TERN.REPLAY`
//! on the text port, a `SUBSCRIBE` that starts at the last N on the binary port).
//!
//! The model below is written from `docs/security.md` (nats-server's meaning), not with
//! `tern_auth`: only `tern_protocol::subject::matches` is borrowed, for plain matching.
//!
//! Each case runs its own ternd (two workers, a fresh data directory so the log holds what
//! was published) with three users: `pub` and `sub`, whose permissions are the generated
//! ones (`sub` may publish anything, so its `$TERN.REPLAY` request is never refused as a
//! publish), and `ctl`, unrestricted, which holds the inbox the text catch-up answers on:
//! so the `sub` user needs no inbox permission, and the catch-up's answer depends on the
//! permission on the filter alone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use tern_protocol::binary::{ClientFrame, ErrorCode, Hello, ServerFrame, StartPosition, Subscribe};
use tern_protocol::subject::matches;

use common::{show, BinClient, Broker, ConfigFile, RawClient, ReadEnd, WAIT};

/// How long to wait for deliveries that cross workers before deciding what arrived.
const DELIVERY_WAIT: Duration = Duration::from_secs(2);
/// Once the expected deliveries are in, how long to wait for an unexpected extra one.
const SETTLE: Duration = Duration::from_millis(80);

/// The inbox (of the unrestricted `ctl` user) that text catch-ups answer on.
const INBOX: &str = "_INBOX.props.1";

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Case {
    /// The `pub` user's publish allow list (`None`: no `allow` key) and deny list.
    pub_allow: Option<Vec<String>>,
    pub_deny: Vec<String>,
    /// The `sub` user's subscribe allow list (`None`: no `allow` key) and deny list.
    sub_allow: Option<Vec<String>>,
    sub_deny: Vec<String>,
    /// The subscriber's filter.
    filter: String,
    /// What `pub` publishes, in order (message `i` carries the payload `m<i>`).
    subjects: Vec<String>,
}

/// A literal subject of one or two tokens out of `a`, `b`, `c`.
fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=2)
        .prop_map(|t| t.join("."))
}

/// A filter of one or two tokens out of `a`, `b`, `c`, `*`, with `>` allowed last.
fn filter() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", ">"]), 1..=2).prop_map(
        |t| {
            let mut out = Vec::new();
            for token in t {
                out.push(token);
                if token == ">" {
                    break;
                }
            }
            out.join(".")
        },
    )
}

/// A filter with at least one wildcard.
fn wildcard_filter() -> impl Strategy<Value = String> {
    filter().prop_filter("a wildcard", |f| f.contains(['*', '>']))
}

/// A deny entry: often a subject that is published, or the one the subscriber's filter
/// may be widened from (`focus`), so that a wildcard filter overlapping it (allowed, with
/// that subject withheld one by one) is common.
fn deny_filter(published: &[String], focus: &str) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(focus.to_string()),
        2 => prop::sample::select(published.to_vec()),
        1 => subject(),
        2 => filter(),
    ]
}

/// A subject widened into a filter: one token made `*`, or the rest `>`.
fn widened(subject: &str) -> impl Strategy<Value = String> {
    let tokens: Vec<String> = subject.split('.').map(str::to_string).collect();
    (0..tokens.len(), any::<bool>()).prop_map(move |(at, star)| {
        let mut t = tokens.clone();
        if star {
            t[at] = "*".to_string();
        } else {
            t.truncate(at);
            t.push(">".to_string());
        }
        t.join(".")
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(subject(), 4..=8),
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(|(subjects, focus)| {
            let focus = subjects[focus.index(subjects.len())].clone();
            (
                prop::option::weighted(0.35, prop::collection::vec(filter(), 1..=2)),
                prop::collection::vec(
                    prop_oneof![prop::sample::select(subjects.clone()), filter()],
                    0..=2,
                ),
                prop::option::weighted(0.4, prop::collection::vec(filter(), 1..=2)),
                prop::collection::vec(deny_filter(&subjects, &focus), 0..=2),
                prop_oneof![filter(), wildcard_filter(), widened(&focus)],
                Just(subjects),
            )
        })
        .prop_map(
            |(pub_allow, pub_deny, sub_allow, sub_deny, filter, subjects)| Case {
                pub_allow,
                pub_deny,
                sub_allow,
                sub_deny,
                filter,
                subjects,
            },
        )
}

// ---------------------------------------------------------------------------------------
// The model (docs/security.md)
// ---------------------------------------------------------------------------------------

fn any_matches(filters: &[String], subject: &str) -> bool {
    filters
        .iter()
        .any(|f| matches(f.as_bytes(), subject.as_bytes()))
}

impl Case {
    /// No `allow` list: everything not denied; deny wins.
    fn may_publish(&self, subject: &str) -> bool {
        self.pub_allow
            .as_ref()
            .is_none_or(|allow| any_matches(allow, subject))
            && !any_matches(&self.pub_deny, subject)
    }

    /// An allow entry covers the whole filter (its wildcards taken as tokens, which
    /// `matches` does: `*` covers a `>` token too, as in nats-server), and no deny entry
    /// covers it.
    fn may_subscribe(&self) -> bool {
        self.sub_allow
            .as_ref()
            .is_none_or(|allow| any_matches(allow, &self.filter))
            && !any_matches(&self.sub_deny, &self.filter)
    }

    /// The filter takes in some subject a deny entry matches. Found by trying every
    /// subject of one to three tokens over the alphabet and one token outside it (enough
    /// for filters of at most two tokens).
    fn filter_overlaps_deny(&self) -> bool {
        let alphabet = ["a", "b", "c", "z"];
        let mut subjects: Vec<String> = alphabet.iter().map(|t| t.to_string()).collect();
        for _ in 0..2 {
            let longer: Vec<String> = subjects
                .iter()
                .flat_map(|s| alphabet.iter().map(move |t| format!("{s}.{t}")))
                .collect();
            subjects.extend(longer);
        }
        subjects.iter().any(|s| {
            matches(self.filter.as_bytes(), s.as_bytes()) && any_matches(&self.sub_deny, s)
        })
    }

    /// What was stored: the messages `pub` may publish, as (subject, payload).
    fn stored(&self) -> Vec<(String, String)> {
        self.subjects
            .iter()
            .enumerate()
            .filter(|(_, s)| self.may_publish(s))
            .map(|(i, s)| (s.clone(), format!("m{i}")))
            .collect()
    }

    /// What a subscription on the filter receives, live or replayed message by message:
    /// nothing when it is refused, else what was stored, matches the filter and no deny
    /// entry withholds.
    fn delivered(&self) -> Vec<(String, String)> {
        if !self.may_subscribe() {
            return Vec::new();
        }
        sorted(
            self.stored()
                .into_iter()
                .filter(|(s, _)| {
                    matches(self.filter.as_bytes(), s.as_bytes()) && !any_matches(&self.sub_deny, s)
                })
                .collect(),
        )
    }

    /// A `$TERN.REPLAY` on the filter is refused (`403`) when the user may not subscribe
    /// to it, or when it takes in a denied subject.
    fn replay_refused(&self) -> bool {
        !self.may_subscribe() || self.filter_overlaps_deny()
    }

    fn config(&self) -> String {
        fn list(filters: &[String]) -> String {
            let quoted: Vec<String> = filters.iter().map(|f| format!("\"{f}\"")).collect();
            format!("[{}]", quoted.join(", "))
        }
        fn rules(section: &str, allow: &Option<Vec<String>>, deny: &[String]) -> String {
            let mut s = format!("[users.permissions.{section}]\n");
            if let Some(allow) = allow {
                s += &format!("allow = {}\n", list(allow));
            }
            s += &format!("deny = {}\n", list(deny));
            s
        }
        format!(
            "[[users]]\nuser = \"pub\"\npassword = \"pub-pass\"\n{}\n\
             [[users]]\nuser = \"sub\"\npassword = \"sub-pass\"\n{}\n\
             [[users]]\nuser = \"ctl\"\npassword = \"ctl-pass\"\n",
            rules("publish", &self.pub_allow, &self.pub_deny),
            rules("subscribe", &self.sub_allow, &self.sub_deny),
        )
    }
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Text-port helpers
// ---------------------------------------------------------------------------------------

/// A text connection logged in as `user` (password `<user>-pass`), checked with a PONG.
fn login(broker: &Broker, user: &str, headers: bool) -> RawClient {
    let mut c = RawClient::connect(broker.addr());
    c.send(
        format!(
            "CONNECT {{\"verbose\":false,\"headers\":{headers},\"user\":\"{user}\",\
             \"pass\":\"{user}-pass\"}}\r\nPING\r\n"
        )
        .as_bytes(),
    );
    c.expect(b"PONG\r\n");
    c
}

/// The `MSG`s in `bytes` (as `flush` returns them) as (subject, payload); anything else
/// fails the test.
fn parse_msgs(mut bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let eol = common::find(bytes, b"\r\n")
            .unwrap_or_else(|| panic!("a partial line: {}", show(bytes)));
        let line = String::from_utf8_lossy(&bytes[..eol]).into_owned();
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        let (subject, size) = match parts.as_slice() {
            ["MSG", subject, _sid, size] => (subject.to_string(), size),
            _ => panic!("expected a MSG, got {}", show(bytes)),
        };
        let size: usize = size.parse().expect("a MSG size");
        let body = &bytes[eol + 2..];
        assert!(body.len() >= size + 2, "a truncated MSG: {}", show(bytes));
        out.push((subject, String::from_utf8_lossy(&body[..size]).into_owned()));
        bytes = &body[size + 2..];
    }
    out
}

/// The deliveries on `c` (a plain subscriber): polled with PING barriers until `expected`
/// have come or [`DELIVERY_WAIT`] passed, then once more after [`SETTLE`] for extras.
fn collect_text(c: &mut RawClient, expected: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + DELIVERY_WAIT;
    let mut got = Vec::new();
    loop {
        got.extend(parse_msgs(&c.flush()));
        if got.len() >= expected || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(SETTLE);
    got.extend(parse_msgs(&c.flush()));
    sorted(got)
}

/// One header block as (status line, headers).
fn parse_headers(block: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(block).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// What a text catch-up answered on the inbox.
#[derive(Debug, PartialEq, Eq)]
enum Replay {
    /// `403`, with its `Tern-Error` text.
    Refused(String),
    /// The records (subject, payload), sorted, all end markers having come.
    Served(Vec<(String, String)>),
}

/// Reads the answer to a `$TERN.REPLAY` on the inbox subscriber `ctl`: a status message,
/// or the records and then every end marker; then checks nothing else follows.
fn read_replay(ctl: &mut RawClient) -> Replay {
    let mut records = Vec::new();
    let mut markers = 0usize;
    let answer = loop {
        let m = ctl.read_msg(WAIT);
        assert_eq!(m.subject, INBOX);
        let (status, headers) = parse_headers(m.headers.as_deref().unwrap_or_default());
        if status != "NATS/1.0" {
            assert!(
                status.starts_with("NATS/1.0 403"),
                "an unexpected status {status:?} ({headers:?}); records so far {records:?}"
            );
            assert!(m.payload.is_empty(), "a status with a payload");
            assert!(
                records.is_empty() && markers == 0,
                "a 403 after records {records:?} / {markers} markers"
            );
            break Replay::Refused(header(&headers, "Tern-Error").unwrap_or("").to_string());
        }
        if let Some(_shard) = header(&headers, "Tern-Replay-Done") {
            markers += 1;
            let want: usize = header(&headers, "Tern-Replay-Shards")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("an end marker without Tern-Replay-Shards: {headers:?}"));
            assert!(
                header(&headers, "Tern-Gap").is_none(),
                "a gap in a fresh log: {headers:?}"
            );
            if markers == want {
                break Replay::Served(sorted(std::mem::take(&mut records)));
            }
            continue;
        }
        assert_eq!(markers, 0, "a record after an end marker: {headers:?}");
        let subject = header(&headers, "Tern-Subject")
            .unwrap_or_else(|| panic!("a record without Tern-Subject: {headers:?}"));
        records.push((
            subject.to_string(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    };
    std::thread::sleep(SETTLE);
    let extra = ctl.flush();
    assert!(
        extra.is_empty(),
        "after the catch-up's answer {answer:?}: {}",
        show(&extra)
    );
    answer
}

// ---------------------------------------------------------------------------------------
// Binary-port helpers
// ---------------------------------------------------------------------------------------

/// What a binary `SUBSCRIBE` from the last N got.
#[derive(Debug, PartialEq, Eq)]
enum BinOutcome {
    Refused,
    Delivered(Vec<(String, String)>),
}

/// Subscribes as `sub` to the filter from the last 100 and collects what comes: the
/// `PermissionViolation` (then nothing else), or the messages, waited for until
/// `expected` came or [`DELIVERY_WAIT`] passed, then after [`SETTLE`] for extras.
fn binary_catch_up(broker: &Broker, filter: &str, expected: usize) -> BinOutcome {
    let mut c = BinClient::connect_with(
        broker.binary_addr(),
        Hello {
            client_name: Bytes::from_static(b"auth-props"),
            user: Some(Bytes::from_static(b"sub")),
            pass: Some(Bytes::from_static(b"sub-pass")),
            ..Default::default()
        },
    );
    c.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::copy_from_slice(filter.as_bytes()),
        start: StartPosition::LastN(100),
        ..Default::default()
    }));
    let mut got = Vec::new();
    let mut refused = false;
    let mut take =
        |frame: ServerFrame, c: &mut BinClient, got: &mut Vec<(String, String)>| match frame {
            ServerFrame::Message(m) => {
                assert_eq!(m.sid, 1);
                assert!(m.replayed, "a live delivery with nothing published: {m:?}");
                got.push((
                    String::from_utf8_lossy(&m.subject).into_owned(),
                    String::from_utf8_lossy(&m.payload).into_owned(),
                ));
            }
            ServerFrame::Error(e) => {
                assert_eq!(
                    (e.code, e.sid, e.fatal),
                    (ErrorCode::PermissionViolation, Some(1), false),
                    "{e:?}"
                );
                let want = format!("Permissions Violation for Subscription to \"{filter}\"");
                assert_eq!(String::from_utf8_lossy(&e.message), want);
                assert!(!refused, "refused twice");
                assert!(got.is_empty(), "messages {got:?} before the refusal");
                refused = true;
            }
            ServerFrame::Ping => c.send(&ClientFrame::Pong),
            other => panic!("unexpected frame {other:?}"),
        };
    // Nothing expected (none stored that it may see, or a refusal, which comes before the
    // PONG of the flush below): the settle looks for extras.
    let deadline = Instant::now() + DELIVERY_WAIT;
    while got.len() < expected {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match c.try_read_frame(deadline - now) {
            Ok(frame) => take(frame, &mut c, &mut got),
            Err(ReadEnd::Timeout) => break,
            Err(end) => panic!("the binary connection ended: {end:?}"),
        }
    }
    std::thread::sleep(SETTLE);
    for frame in c.flush() {
        take(frame, &mut c, &mut got);
    }
    if refused {
        assert!(got.is_empty(), "refused, yet delivered {got:?}");
        BinOutcome::Refused
    } else {
        BinOutcome::Delivered(sorted(got))
    }
}

// ---------------------------------------------------------------------------------------
// One case
// ---------------------------------------------------------------------------------------

fn config_file(text: &str) -> ConfigFile {
    ConfigFile::new("auth-props", text)
}

fn run(case: &Case) {
    let config = case.config();
    let file = config_file(&config);
    let result = std::panic::catch_unwind(|| run_with(case, &config, &file));
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run_with(case: &Case, config: &str, file: &Path) {
    // Broker::with_args gives it a fresh --data-dir of its own (removed when dropped).
    let broker = Broker::with_args(&["--config", file.to_str().unwrap()]);
    let f = &case.filter;
    let ctx = format!("{case:?}\n--- config ---\n{config}");

    // Live: the subscription, refused with nats-server's words or not.
    let mut sub = login(&broker, "sub", false);
    sub.send(format!("SUB {f} 1\r\n").as_bytes());
    let answer = String::from_utf8_lossy(&sub.flush()).into_owned();
    let want = if case.may_subscribe() {
        String::new()
    } else {
        format!("-ERR 'Permissions Violation for Subscription to \"{f}\"'\r\n")
    };
    assert_eq!(answer, want, "SUB {f}\n{ctx}");

    // Each publish, refused or not.
    let mut publisher = login(&broker, "pub", false);
    let mut want_errors = String::new();
    for (i, s) in case.subjects.iter().enumerate() {
        let payload = format!("m{i}");
        publisher.send(format!("PUB {s} {}\r\n{payload}\r\n", payload.len()).as_bytes());
        if !case.may_publish(s) {
            want_errors += &format!("-ERR 'Permissions Violation for Publish to \"{s}\"'\r\n");
        }
    }
    let errors = String::from_utf8_lossy(&publisher.flush()).into_owned();
    assert_eq!(errors, want_errors, "the publisher's refusals\n{ctx}");

    let want = case.delivered();
    let live = collect_text(&mut sub, want.len());
    assert_eq!(live, want, "live deliveries on {f}\n{ctx}");
    drop(sub);

    // Catch-up on the binary port: refused at SUBSCRIBE, or what a live subscription
    // gets, denied subjects withheld one by one.
    let bin = binary_catch_up(&broker, f, want.len());
    let bin_want = if case.may_subscribe() {
        BinOutcome::Delivered(want.clone())
    } else {
        BinOutcome::Refused
    };
    assert_eq!(bin, bin_want, "binary catch-up (last 100) on {f}\n{ctx}");

    // Catch-up on the text port: `sub` asks, the unrestricted `ctl` holds the inbox.
    let mut ctl = login(&broker, "ctl", true);
    ctl.send(format!("SUB {INBOX} 1\r\n").as_bytes());
    ctl.ping_pong();
    let mut requester = login(&broker, "sub", true);
    let body = format!("{{\"subject\":\"{f}\",\"last\":100}}");
    requester.send(format!("PUB $TERN.REPLAY {INBOX} {}\r\n{body}\r\n", body.len()).as_bytes());
    let answer = requester.flush();
    assert!(
        answer.is_empty(),
        "the request itself: {}\n{ctx}",
        show(&answer)
    );
    let replay = read_replay(&mut ctl);
    let replay_want = if case.replay_refused() {
        Replay::Refused(format!("Permissions Violation for Subscription to \"{f}\""))
    } else {
        Replay::Served(want)
    };
    assert_eq!(replay, replay_want, "$TERN.REPLAY last 100 on {f}\n{ctx}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // A shrink step starts a broker: enough to get small, not to run for minutes.
        max_shrink_iters: 64,
        // Never write a regressions file into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn delivered_iff_publish_and_subscribe_are_allowed_live_and_in_catch_up(case in case()) {
        run(&case);
    }
}

/// Cases the property found once, kept: a wide filter of a user allowed everything is
/// served by `$TERN.REPLAY` (the broker once refused it for taking in presence events,
/// which are never stored).
#[test]
fn cases_found_before() {
    run(&Case {
        pub_allow: None,
        pub_deny: vec!["a".into(), "b".into()],
        sub_allow: Some(vec![">".into()]),
        sub_deny: Vec::new(),
        filter: "*.>".into(),
        subjects: ["c.a", "a", "b", "c", "b.b", "b", "b.b"]
            .map(String::from)
            .to_vec(),
    });
}

/// The model's own corner cases, by hand (no broker).
#[test]
fn the_model_follows_nats_server() {
    let case = |sub_allow: Option<&[&str]>, sub_deny: &[&str], filter: &str| Case {
        pub_allow: None,
        pub_deny: Vec::new(),
        sub_allow: sub_allow.map(|l| l.iter().map(|s| s.to_string()).collect()),
        sub_deny: sub_deny.iter().map(|s| s.to_string()).collect(),
        filter: filter.to_string(),
        subjects: Vec::new(),
    };
    // allow a.> permits SUB a.*; allow a.b does not permit SUB a.*.
    assert!(case(Some(&["a.>"]), &[], "a.*").may_subscribe());
    assert!(!case(Some(&["a.b"]), &[], "a.*").may_subscribe());
    // A `*` covers a `>` token.
    assert!(case(Some(&["a.*"]), &[], "a.>").may_subscribe());
    assert!(!case(Some(&["a.b"]), &[], "a.>").may_subscribe());
    // A wildcard overlapping a denied subject is allowed, but a replay of it is not.
    let c = case(None, &["a.b"], "a.*");
    assert!(c.may_subscribe() && c.filter_overlaps_deny() && c.replay_refused());
    let c = case(None, &["a.>"], "*");
    assert!(c.may_subscribe() && !c.filter_overlaps_deny() && !c.replay_refused());
    let c = case(None, &["*.a"], "b.>");
    assert!(c.may_subscribe() && c.filter_overlaps_deny());
    let c = case(None, &["*.a"], "b");
    assert!(c.may_subscribe() && !c.filter_overlaps_deny());
    let c = case(None, &["*.a"], "b.*");
    assert!(c.may_subscribe() && c.filter_overlaps_deny());
    // A deny entry covering the whole filter refuses it.
    assert!(!case(None, &["*"], ">").may_subscribe());
    assert!(!case(None, &["a.>"], "a.*").may_subscribe());
}

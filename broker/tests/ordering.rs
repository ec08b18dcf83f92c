//! One publisher's messages reach every subscription in the order it published them,
//! whatever their subjects (issue 19), against the real `ternd` with 2 and 4 workers, both
//! ports: random publishers publish random subjects from connections on every worker;
//! wildcard, literal and queue-group subscribers, and one that joins by catch-up in the
//! middle of the storm, record what they get. Per publisher, each one's sequence must be a
//! subsequence of the publish order, with nothing lost and nothing twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BinClient, Broker, RawClient};
use proptest::prelude::*;
use tern_protocol::binary::{ClientFrame, Publish, ResumeToken, ServerFrame, StartPosition};
use tern_protocol::subject;

/// The subjects publishers pick from: several under each wildcard below.
const SUBJECTS: [&str; 6] = [
    "ord.a.x", "ord.a.y", "ord.b.x", "ord.b.y", "ord.c.x", "ord.d.z",
];

/// One publisher: its port, and the subject (an index into `SUBJECTS`) of each message.
#[derive(Debug, Clone)]
struct Publisher {
    binary: bool,
    subjects: Vec<usize>,
}

/// A message as a subscriber records it: (publisher, index in its publish order).
type Seen = (usize, usize);

fn plan() -> impl Strategy<Value = Vec<Publisher>> {
    let publisher = (
        any::<bool>(),
        prop::collection::vec(0..SUBJECTS.len(), 100..400),
    )
        .prop_map(|(binary, subjects)| Publisher { binary, subjects });
    prop::collection::vec(publisher, 2..6)
}

fn parse(payload: &[u8]) -> Seen {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let (p, i) = text.split_once(' ').expect("\"publisher index\"");
    (p.parse().unwrap(), i.parse().unwrap())
}

/// Who receives what: the expected messages of a filter, in publish order per publisher.
fn expected(plan: &[Publisher], filter: &str) -> BTreeSet<Seen> {
    let mut out = BTreeSet::new();
    for (p, publisher) in plan.iter().enumerate() {
        for (i, &s) in publisher.subjects.iter().enumerate() {
            if subject::matches(filter.as_bytes(), SUBJECTS[s].as_bytes()) {
                out.insert((p, i));
            }
        }
    }
    out
}

/// Each publisher's messages in `got` come in its publish order, once each.
fn in_publish_order(name: &str, got: &[Seen]) {
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    for &(p, i) in got {
        if let Some(&before) = last.get(&p) {
            assert!(
                i > before,
                "{name}: publisher {p}'s message {i} came after its message {before}"
            );
        }
        last.insert(p, i);
    }
}

/// A text subscriber (optionally a queue group member) reading in a thread of its own
/// until it has `want` messages.
fn text_subscriber(
    addr: SocketAddr,
    filter: &'static str,
    queue: Option<&'static str>,
) -> (RawClient, &'static str) {
    let mut c = RawClient::connect(addr);
    let sub = match queue {
        Some(q) => format!("SUB {filter} {q} 1\r\n"),
        None => format!("SUB {filter} 1\r\n"),
    };
    c.send(sub.as_bytes());
    c.ping_pong();
    (c, filter)
}

fn read_text(mut c: RawClient, want: usize) -> JoinHandle<(Vec<Seen>, RawClient)> {
    std::thread::spawn(move || {
        let mut got = Vec::with_capacity(want);
        while got.len() < want {
            let m = c.read_msg(Duration::from_secs(30));
            got.push(parse(&m.payload));
        }
        (got, c)
    })
}

fn read_binary(mut c: BinClient, sid: u32, want: usize) -> JoinHandle<(Vec<Seen>, BinClient)> {
    std::thread::spawn(move || {
        let mut got = Vec::with_capacity(want);
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < want {
            assert!(Instant::now() < deadline, "only {} of {want}", got.len());
            match c.read_frame() {
                ServerFrame::Message(m) if m.sid == sid => got.push(parse(&m.payload)),
                ServerFrame::Ping => c.send(&ClientFrame::Pong),
                other => panic!("unexpected {other:?}"),
            }
        }
        (got, c)
    })
}

fn binary_subscribe(c: &mut BinClient, sid: u32, filter: &str, start: StartPosition) {
    c.send(&ClientFrame::Subscribe(tern_protocol::binary::Subscribe {
        sid,
        subject: Bytes::copy_from_slice(filter.as_bytes()),
        start,
        ..Default::default()
    }));
}

/// Publishes `publisher`'s messages (the first `from..to`) from connection `c`.
enum PubConn {
    Text(RawClient),
    Binary(BinClient),
}

impl PubConn {
    fn publish(&mut self, p: usize, plan: &Publisher, range: std::ops::Range<usize>) {
        match self {
            PubConn::Text(c) => {
                let mut out = Vec::new();
                for i in range {
                    let payload = format!("{p} {i}");
                    let subject = SUBJECTS[plan.subjects[i]];
                    out.extend(format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()).bytes());
                }
                c.send(&out);
                c.ping_pong();
            }
            PubConn::Binary(c) => {
                for i in range {
                    c.send(&ClientFrame::Publish(Publish {
                        subject: Bytes::from_static(SUBJECTS[plan.subjects[i]].as_bytes()),
                        payload: Bytes::from(format!("{p} {i}")),
                        ..Default::default()
                    }));
                }
                assert!(c.flush().is_empty(), "a publisher got something");
            }
        }
    }
}

fn run(workers: usize, plan: &[Publisher]) {
    let broker = Broker::with_args(&["--workers", &workers.to_string()]);
    let (text, binary) = (broker.addr(), broker.binary_addr());

    // Subscribers on whichever workers they land on.
    let subs: Vec<_> = [("ord.>", None), ("ord.a.x", None), ("ord.*.x", None)]
        .into_iter()
        .chain([("ord.>", Some("g")), ("ord.>", Some("g"))])
        .map(|(filter, queue)| text_subscriber(text, filter, queue))
        .collect();
    let mut bin_sub = BinClient::connect(binary);
    binary_subscribe(&mut bin_sub, 7, "ord.*.x", StartPosition::Live);
    assert!(bin_sub.flush().is_empty());

    let all = expected(plan, "ord.>");
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(c, filter)| (filter, c))
        .enumerate()
        .map(|(n, (filter, c))| {
            // The two queue members share `all` between them: each reads until the end.
            let want = if n >= 3 {
                usize::MAX
            } else {
                expected(plan, filter).len()
            };
            (filter, n >= 3, want, c)
        })
        .collect();
    let mut plain = Vec::new();
    let mut members = Vec::new();
    for (filter, member, want, c) in readers {
        if member {
            members.push(c);
        } else {
            plain.push((filter, read_text(c, want)));
        }
    }
    let bin_reader = read_binary(bin_sub, 7, expected(plan, "ord.*.x").len());

    // Publishers spread over the workers, each publishing its first half.
    let mut pubs: Vec<PubConn> = plan
        .iter()
        .enumerate()
        .map(|(p, publisher)| {
            let worker = p % workers;
            if publisher.binary {
                PubConn::Binary(BinClient::connect_on_worker(binary, worker, workers))
            } else {
                PubConn::Text(RawClient::connect_on_worker(text, worker, workers))
            }
        })
        .collect();
    let halves: Vec<usize> = plan.iter().map(|p| p.subjects.len() / 2).collect();
    std::thread::scope(|s| {
        for (p, c) in pubs.iter_mut().enumerate() {
            let publisher = &plan[p];
            let half = halves[p];
            s.spawn(move || c.publish(p, publisher, 0..half));
        }
    });
    // One joins by catch-up from the start of the logs, while the second halves go out.
    let mut late = BinClient::connect(binary);
    let start = StartPosition::Resume(ResumeToken {
        epoch: late.welcome.log_epoch,
        last_sequences: Vec::new(),
    });
    binary_subscribe(&mut late, 9, "ord.>", start);
    let late_reader = read_binary(late, 9, all.len());
    std::thread::scope(|s| {
        for (p, c) in pubs.iter_mut().enumerate() {
            let publisher = &plan[p];
            let half = halves[p];
            s.spawn(move || c.publish(p, publisher, half..publisher.subjects.len()));
        }
    });

    for (filter, reader) in plain {
        let (got, mut c) = reader.join().expect("a text subscriber");
        in_publish_order(filter, &got);
        let set: BTreeSet<Seen> = got.iter().copied().collect();
        assert_eq!(set.len(), got.len(), "{filter}: a message twice");
        assert_eq!(set, expected(plan, filter), "{filter}: what it got");
        assert!(c.flush().is_empty(), "{filter}: more than expected");
    }
    let (got, _) = bin_reader.join().expect("the binary subscriber");
    in_publish_order("binary ord.*.x", &got);
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        expected(plan, "ord.*.x")
    );
    let (got, _) = late_reader.join().expect("the catching-up subscriber");
    in_publish_order("catching up ord.>", &got);
    let set: BTreeSet<Seen> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "catching up: a message twice");
    assert_eq!(set, all, "catching up: what it got");

    // The queue group: every message to exactly one member, each member's in order.
    let mut got: Vec<Vec<Seen>> = vec![Vec::new(); members.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.iter().map(Vec::len).sum::<usize>() < all.len() {
        assert!(Instant::now() < deadline, "the queue group got too little");
        for (c, got) in members.iter_mut().zip(&mut got) {
            let bytes = String::from_utf8(c.flush()).expect("utf-8");
            for chunk in bytes.split("MSG ").skip(1) {
                let payload = chunk.split("\r\n").nth(1).expect("a payload line");
                got.push(parse(payload.as_bytes()));
            }
        }
    }
    let mut union = BTreeSet::new();
    for got in got {
        in_publish_order("queue member", &got);
        for m in got {
            assert!(union.insert(m), "a queue group got {m:?} twice");
        }
    }
    assert_eq!(union, all, "the queue group got every message");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    #[test]
    fn each_publishers_messages_arrive_in_publish_order_over_two_workers(plan in plan()) {
        run(2, &plan);
    }

    #[test]
    fn each_publishers_messages_arrive_in_publish_order_over_four_workers(plan in plan()) {
        run(4, &plan);
    }
}

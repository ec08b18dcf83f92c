//! Store and forward against the real `ternd`: catch-up from the ring log with a handover
//! to live delivery that has no gap and no duplicate while publishers keep publishing,
//! wrap-around and its gap notice, idempotent publishing, and what survives a restart or
//! a SIGKILL in the middle of a publish storm.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{temp_dir, BinClient, Broker, ReadEnd};
use tern_protocol::binary::{
    AckResult, ClientFrame, ErrorCode, Message, Publish, PublishAck, ResumeToken, ServerFrame,
    StartPosition, Subscribe,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn publish(subject: &str, payload: &str) -> ClientFrame {
    ClientFrame::Publish(Publish {
        subject: b(subject),
        payload: b(payload),
        ..Default::default()
    })
}

fn subscribe_from(sid: u32, subject: &str, start: StartPosition) -> ClientFrame {
    ClientFrame::Subscribe(Subscribe {
        sid,
        subject: b(subject),
        start,
        ..Default::default()
    })
}

/// A resume token that asks for everything the log holds, in this epoch.
fn from_start(c: &BinClient) -> StartPosition {
    StartPosition::Resume(ResumeToken {
        epoch: c.welcome.log_epoch,
        last_sequences: Vec::new(),
    })
}

/// Reads messages for `sid` until `n` have arrived (others and `PING`s are passed over).
fn read_messages(c: &mut BinClient, sid: u32, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match c.read_frame() {
            ServerFrame::Message(m) if m.sid == sid => got.push(m),
            ServerFrame::Message(_) | ServerFrame::Ping => {}
            other => panic!("unexpected {other:?} after {} messages", got.len()),
        }
    }
    got
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

/// Reads messages for `sid` until `n` have arrived; returns (sequence, replayed, payload).
fn read_n(c: &mut BinClient, sid: u32, n: usize) -> Vec<(u64, bool, String)> {
    let got = read_messages(c, sid, n);
    got.iter()
        .map(|m| (m.sequence, m.replayed, text(m)))
        .collect()
}

#[test]
fn catch_up_hands_over_to_live_without_gap_or_duplicate_under_publishing() {
    let broker = Broker::start();
    let subject = "storm";
    let addr = broker.binary_addr();
    // Some history first, all from one publisher: one shard's sequence.
    let mut publisher = BinClient::connect(addr);
    for i in 0..2_000 {
        publisher.send(&publish(subject, &i.to_string()));
    }
    publisher.flush();
    // Publishing continues while a subscriber catches up from the start.
    let total = 20_000u64;
    let storm = std::thread::spawn(move || {
        for i in 2_000..total {
            publisher.send(&publish(subject, &i.to_string()));
        }
        publisher.flush();
    });
    let mut sub = BinClient::connect(addr);
    let start = from_start(&sub);
    sub.send(&subscribe_from(1, subject, start));
    let got = read_n(&mut sub, 1, total as usize);
    storm.join().unwrap();
    for (i, (seq, _, payload)) in got.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "contiguous sequences, no gap, no duplicate"
        );
        assert_eq!(payload, &i.to_string(), "in publish order");
    }
    assert!(got[0].1, "the first ones come from the log");
    assert!(sub.flush().is_empty(), "nothing after the last one");
}

#[test]
fn resume_time_and_last_n_start_where_they_say() {
    let broker = Broker::start();
    let subject = "pos";
    // Published on worker 1: shard 1's sequence.
    let mut c = BinClient::connect_on_worker(broker.binary_addr(), 1, broker.workers());
    let mut seqs = Vec::new();
    let mut times = Vec::new();
    for i in 0..10 {
        times.push(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        );
        seqs.push(c.publish_acked(subject, format!("m{i}"), i).1);
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut token = vec![0; broker.workers()];
    token[1] = seqs[6];
    c.send(&subscribe_from(
        1,
        subject,
        StartPosition::Resume(ResumeToken {
            epoch: c.welcome.log_epoch,
            last_sequences: token,
        }),
    ));
    let got: Vec<String> = read_n(&mut c, 1, 3).into_iter().map(|m| m.2).collect();
    assert_eq!(got, ["m7", "m8", "m9"]);
    c.send(&subscribe_from(2, subject, StartPosition::Time(times[8])));
    let got: Vec<String> = read_n(&mut c, 2, 2).into_iter().map(|m| m.2).collect();
    assert_eq!(got, ["m8", "m9"]);
    c.send(&subscribe_from(3, subject, StartPosition::LastN(4)));
    let got: Vec<String> = read_n(&mut c, 3, 4).into_iter().map(|m| m.2).collect();
    assert_eq!(got, ["m6", "m7", "m8", "m9"]);
    assert!(c.flush().is_empty());
}

/// Reads messages for `sid` until `n` have arrived; returns (shard, sequence, payload).
fn read_stamped(c: &mut BinClient, sid: u32, n: usize) -> Vec<(u16, u64, String)> {
    let got = read_messages(c, sid, n);
    got.iter().map(|m| (m.shard, m.sequence, text(m))).collect()
}

#[test]
fn a_wildcard_catch_up_comes_in_stored_order_across_shards_and_last_n_means_n() {
    let broker = Broker::start();
    let workers = broker.workers();
    assert!(workers >= 2, "the history must span shards");
    // Two publishers on different workers: what each publishes is stored by its worker's
    // shard.
    let addr = broker.binary_addr();
    let mut publishers = [
        BinClient::connect_on_worker(addr, 0, workers),
        BinClient::connect_on_worker(addr, 1, workers),
    ];
    let subjects = ["hist.a", "hist.b"];
    let mut c = BinClient::connect(addr);
    let mut times = Vec::new();
    for i in 0..30u64 {
        // Runs of 1 to 3 on one shard, so that neither shard's batch order nor
        // alternation would pass for the stored order.
        let s = usize::from(i % 5 < 2);
        times.push(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        );
        publishers[s].publish_acked(subjects[s], format!("m{i}"), i);
        // Each message stored in a loop turn of its own, later than the one before.
        std::thread::sleep(Duration::from_millis(2));
    }
    let names = |got: Vec<(u16, u64, String)>| got.into_iter().map(|m| m.2).collect::<Vec<_>>();
    let expect = |range: std::ops::Range<u64>| range.map(|i| format!("m{i}")).collect::<Vec<_>>();

    c.send(&subscribe_from(1, "hist.*", from_start(&c)));
    assert_eq!(names(read_stamped(&mut c, 1, 30)), expect(0..30));
    c.send(&subscribe_from(2, "hist.*", StartPosition::Time(times[12])));
    assert_eq!(names(read_stamped(&mut c, 2, 18)), expect(12..30));
    c.send(&subscribe_from(3, "hist.*", StartPosition::LastN(7)));
    assert_eq!(names(read_stamped(&mut c, 3, 7)), expect(23..30));
    c.send(&subscribe_from(4, "hist.*", StartPosition::LastN(100)));
    assert_eq!(names(read_stamped(&mut c, 4, 30)), expect(0..30));
    c.send(&subscribe_from(5, "hist.*", StartPosition::LastN(0)));
    assert!(
        c.flush().is_empty(),
        "last N gives N, not N from each shard"
    );

    // What comes next reaches every one of them once: live, or from the log by a
    // catch-up not yet handed over ("last 0" included: nothing from before, but all after).
    publishers[0].publish_acked(subjects[0], "live0", 100);
    publishers[1].publish_acked(subjects[1], "live1", 101);
    let mut live = Vec::new();
    for _ in 0..10 {
        match c.read_frame() {
            ServerFrame::Message(m) => live.push((m.sid, m.payload)),
            other => panic!("unexpected {other:?} after {live:?}"),
        }
    }
    live.sort();
    let want: Vec<_> = (1..=5)
        .flat_map(|sid| [(sid, b("live0")), (sid, b("live1"))])
        .collect();
    assert_eq!(live, want);
    assert!(c.flush().is_empty(), "nothing twice");
}

#[test]
fn a_wildcard_catch_up_hands_over_on_every_shard_under_publishing() {
    let broker = Broker::start();
    let workers = broker.workers();
    let addr = broker.binary_addr();
    // One publisher per worker (so per shard), each on a subject of its own.
    let total = 30_000usize;
    let storm: Vec<_> = (0..workers)
        .map(|w| {
            let mut publisher = BinClient::connect_on_worker(addr, w, workers);
            let subject = format!("wstorm.{w}");
            for i in (0..3_000).filter(|i| i % workers == w) {
                publisher.send(&publish(&subject, &i.to_string()));
            }
            publisher.flush();
            std::thread::spawn(move || {
                for i in (3_000..total).filter(|i| i % workers == w) {
                    publisher.send(&publish(&subject, &i.to_string()));
                }
                publisher.flush();
            })
        })
        .collect();
    let mut sub = BinClient::connect(addr);
    let start = from_start(&sub);
    sub.send(&subscribe_from(1, "wstorm.*", start));
    let got = read_stamped(&mut sub, 1, total);
    for publisher in storm {
        publisher.join().unwrap();
    }
    // Per shard: every sequence once, in order, from the log and then live.
    let mut next = vec![1u64; workers];
    for (shard, seq, payload) in &got {
        let s = usize::from(*shard);
        assert_eq!(
            *seq, next[s],
            "shard {shard}: no gap, no duplicate, in order"
        );
        next[s] += 1;
        let i: usize = payload.parse().unwrap();
        assert_eq!(i % workers, s, "message {i} on its publisher's shard");
    }
    assert!(sub.flush().is_empty(), "nothing after the last one");
}

#[test]
fn a_wrapped_ring_gives_a_gap_notice_then_what_it_holds() {
    let broker = Broker::with_args(&["--log-size", "1MiB", "--max-payload", "64KiB"]);
    let subject = "wrap";
    let mut c = BinClient::connect_on_worker(broker.binary_addr(), 0, broker.workers());
    let payload = "x".repeat(1000);
    let n = 3_000u64; // ~3 MiB through a 1 MiB ring
    for i in 0..n {
        c.send(&publish(subject, &format!("{i:06}{payload}")));
    }
    let last = c.publish_acked(subject, "last", 1).1;
    assert_eq!(last, n + 1);
    c.send(&subscribe_from(1, subject, from_start(&c)));
    let oldest = match c.read_frame() {
        ServerFrame::GapNotice(g) => {
            assert_eq!((g.sid, g.shard, g.requested), (1, 0, 1));
            assert!(g.oldest > 1 && g.oldest <= last, "{g:?}");
            g.oldest
        }
        other => panic!("expected a gap notice first, got {other:?}"),
    };
    let got = read_n(&mut c, 1, (last - oldest + 1) as usize);
    for (k, (seq, replayed, _)) in got.iter().enumerate() {
        assert_eq!(*seq, oldest + k as u64);
        assert!(replayed);
    }
    assert_eq!(got.last().unwrap().2, "last");
}

#[test]
fn a_repeated_message_id_is_acknowledged_but_not_stored_or_delivered_again() {
    let broker = Broker::start();
    // Published on worker 1, stored by shard 1: a duplicate's ack names the shard that
    // holds the first copy, even when the retry comes through another worker.
    let workers = broker.workers();
    let orders = "orders".to_string();
    let mut sub = BinClient::connect(broker.binary_addr());
    sub.send(&subscribe_from(1, &orders, StartPosition::Live));
    sub.flush();
    let mut c = BinClient::connect_on_worker(broker.binary_addr(), 1, workers);
    let mut elsewhere = BinClient::connect_on_worker(broker.binary_addr(), 0, workers);
    let send = |c: &mut BinClient, ack: u64, id: &str, payload: &str| {
        c.send(&ClientFrame::Publish(Publish {
            subject: b(&orders),
            payload: b(payload),
            message_id: Some(b(id)),
            ack_id: Some(ack),
            ..Default::default()
        }));
        match c.read_frame() {
            ServerFrame::PublishAck(PublishAck {
                ack_id,
                result:
                    AckResult::Stored {
                        shard,
                        sequence,
                        duplicate,
                    },
            }) if ack_id == ack => {
                assert_eq!(shard, 1, "the shard that stored it");
                (sequence, duplicate)
            }
            other => panic!("{other:?}"),
        }
    };
    let (first, dup) = send(&mut c, 1, "order-1", "buy");
    assert!(!dup);
    let (again, dup) = send(&mut c, 2, "order-1", "buy (retry)");
    assert!(dup, "a repeat within the window");
    assert_eq!(again, first, "acknowledged with the original sequence");
    let (again, dup) = send(&mut elsewhere, 4, "order-1", "buy (retry, reconnected)");
    assert!(dup, "a repeat through another worker");
    assert_eq!(again, first);
    let (other, dup) = send(&mut c, 3, "order-2", "sell");
    assert!(!dup);
    assert_eq!(other, first + 1, "the repeat took no sequence");
    let got: Vec<String> = read_n(&mut sub, 1, 2).into_iter().map(|m| m.2).collect();
    assert_eq!(got, ["buy", "sell"]);
    assert!(sub.flush().is_empty(), "the repeat was not delivered");
}

#[test]
fn a_client_resuming_after_a_restart_gets_exactly_what_it_missed() {
    let dir = temp_dir("ternd-restart");
    let data = dir.display().to_string();
    let args = ["--data-dir", data.as_str(), "--log-size", "4MiB"];
    let mut broker = Broker::with_args(&args);
    let workers = broker.workers();
    let subject = "tunnel";
    let mut c = BinClient::connect(broker.binary_addr());
    let epoch = c.welcome.log_epoch;
    c.send(&subscribe_from(1, subject, StartPosition::Live));
    c.flush();
    // Published on worker 1: shard 1's sequence.
    let mut p = BinClient::connect_on_worker(broker.binary_addr(), 1, workers);
    for i in 0..5 {
        p.send(&publish(subject, &format!("before{i}")));
    }
    let seen = read_n(&mut c, 1, 5);
    let last_seen = seen.last().unwrap().0;
    drop(c); // into the tunnel
    for i in 0..7 {
        p.publish_acked(subject, format!("missed{i}"), i);
    }
    broker.stop();

    let broker = Broker::with_args(&args);
    let mut c = BinClient::connect(broker.binary_addr());
    assert_eq!(c.welcome.log_epoch, epoch, "the same log, the same epoch");
    let mut token = vec![0; workers];
    token[1] = last_seen;
    c.send(&subscribe_from(
        1,
        subject,
        StartPosition::Resume(ResumeToken {
            epoch,
            last_sequences: token,
        }),
    ));
    let got: Vec<String> = read_n(&mut c, 1, 7).into_iter().map(|m| m.2).collect();
    let want: Vec<String> = (0..7).map(|i| format!("missed{i}")).collect();
    assert_eq!(got, want);
    assert!(c.flush().is_empty(), "nothing else");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_message_acknowledged_before_a_sigkill_survives_it_once_in_order() {
    let dir = temp_dir("ternd-crash");
    let data = dir.display().to_string();
    let args = [
        "--data-dir",
        data.as_str(),
        "--log-size",
        "16MiB",
        "--fsync",
        "never",
    ];
    let mut broker = Broker::with_args(&args);
    let workers = broker.workers();
    let addr = broker.binary_addr();
    // One publisher per worker (so per shard) acknowledge-publishes as fast as it can, and
    // remembers what was acked.
    let storms: Vec<_> = (0..workers)
        .map(|shard| {
            let subject = format!("crash.{shard}");
            std::thread::spawn(move || {
                let mut c = BinClient::connect_on_worker(addr, shard, workers);
                let mut acked: BTreeMap<u64, String> = BTreeMap::new();
                for i in 0u64.. {
                    let payload = format!("{subject}/{i}");
                    c.send(&ClientFrame::Publish(Publish {
                        subject: b(&subject),
                        payload: b(&payload),
                        ack_id: Some(i),
                        ..Default::default()
                    }));
                    match c.try_read_frame(Duration::from_secs(10)) {
                        Ok(ServerFrame::PublishAck(PublishAck {
                            result: AckResult::Stored { sequence, .. },
                            ..
                        })) => {
                            acked.insert(sequence, payload);
                        }
                        Ok(other) => panic!("{other:?}"),
                        Err(ReadEnd::Timeout) => panic!("no ack within 10 s"),
                        Err(_) => return acked, // killed
                    }
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    broker.signal(libc::SIGKILL);
    broker.wait_exit(Duration::from_secs(10));
    let acked: Vec<BTreeMap<u64, String>> = storms.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(acked.iter().all(|a| a.len() > 10), "the storm ran");

    let broker = Broker::with_args(&args);
    let mut c = BinClient::connect(broker.binary_addr());
    c.send(&subscribe_from(1, "crash.>", from_start(&c)));
    // Everything held, per shard, in order, each once; every acked message among it. The
    // log may also hold messages stored but not yet acked when the kill came, so each
    // shard is read up to its last acked sequence (shards interleave).
    let last_acked: Vec<u64> = acked
        .iter()
        .map(|a| a.last_key_value().map_or(0, |(seq, _)| *seq))
        .collect();
    let mut got: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(); workers];
    let caught_up = |got: &[BTreeMap<u64, String>]| {
        (0..workers).all(|s| {
            got[s]
                .last_key_value()
                .is_some_and(|(seq, _)| *seq >= last_acked[s])
        })
    };
    while !caught_up(&got) {
        match c.try_read_frame(Duration::from_secs(5)) {
            Ok(ServerFrame::Message(m)) => {
                let shard = &mut got[m.shard as usize];
                match shard.last_key_value() {
                    Some((last, _)) => assert_eq!(m.sequence, last + 1, "in order, no duplicate"),
                    None => assert_eq!(m.sequence, 1, "from the start"),
                }
                shard.insert(m.sequence, String::from_utf8_lossy(&m.payload).into_owned());
            }
            Ok(ServerFrame::Error(e)) if e.code == ErrorCode::EpochMismatch => {
                panic!("the epoch changed across the crash: {e:?}")
            }
            Ok(other) => panic!("{other:?}"),
            // Nothing more comes: the assertions below say what is missing.
            Err(_) => break,
        }
    }
    for (shard, acked) in acked.iter().enumerate() {
        let held = &got[shard];
        for (seq, payload) in acked {
            assert_eq!(held.get(seq), Some(payload), "acked message {seq} survived");
        }
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused() {
    let dir = temp_dir("ternd-locked");
    let data = dir.display().to_string();
    let _first = Broker::with_args(&["--data-dir", data.as_str()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--binary-listen",
            "127.0.0.1:0",
            "--no-monitor",
            "--data-dir",
            data.as_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another ternd"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A text catch-up's replies: the records (payload, header block) in arrival order, and
/// the end markers' header blocks.
type CatchUp = (Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

/// Reads a text catch-up's replies until `ends` end markers came.
fn read_catch_up(c: &mut common::RawClient, ends: usize) -> CatchUp {
    let (mut records, mut markers) = (Vec::new(), Vec::new());
    while markers.len() < ends {
        let m = c.read_msg(common::WAIT);
        let h = m.headers.expect("catch-up replies carry headers");
        if header(&h, "Tern-Replay-Done").is_some() {
            markers.push(h);
        } else {
            records.push((m.payload, h));
        }
    }
    (records, markers)
}

/// The value of header `name` in a raw header block.
fn header(block: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    text.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

#[test]
fn text_clients_catch_up_through_tern_replay() {
    use common::RawClient;
    let broker = Broker::start();
    let workers = broker.workers();
    let subject = "hist.1";
    // Published on worker 1: into shard 1's ring.
    let mut p = BinClient::connect_on_worker(broker.binary_addr(), 1, workers);
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(p.publish_acked(subject, format!("h{i}"), i).1);
    }
    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"headers\":true}\r\nSUB _INBOX.r.* 9\r\n");
    c.ping_pong();

    // The last two of a subject: every shard answers (the other with its end marker
    // alone), and shard 1's records come in its order.
    let body = format!("{{\"subject\":\"{subject}\",\"last\":2}}");
    c.send(format!("PUB $TERN.REPLAY _INBOX.r.1 {}\r\n{body}\r\n", body.len()).as_bytes());
    let (records, ends) = read_catch_up(&mut c, workers);
    assert_eq!(records.len(), 2);
    for ((payload, h), i) in records.iter().zip([3usize, 4]) {
        assert_eq!(payload, format!("h{i}").as_bytes());
        assert_eq!(header(h, "Tern-Subject").as_deref(), Some(subject));
        assert_eq!(header(h, "Tern-Shard").as_deref(), Some("1"));
        assert_eq!(header(h, "Tern-Seq"), Some(seqs[i].to_string()));
        assert!(header(h, "Tern-Time").is_some());
    }
    let mut done: Vec<(String, String)> = ends
        .iter()
        .map(|h| {
            assert_eq!(header(h, "Tern-Replay-Shards"), Some(workers.to_string()));
            (
                header(h, "Tern-Replay-Done").unwrap(),
                header(h, "Tern-Replayed").unwrap(),
            )
        })
        .collect();
    done.sort();
    assert_eq!(done, [("0".into(), "0".into()), ("1".into(), "2".into())]);

    // From a sequence of one shard on: that shard alone answers.
    let body = format!(
        "{{\"subject\":\"{subject}\",\"shard\":1,\"from_seq\":{}}}",
        seqs[2]
    );
    c.send(format!("PUB $TERN.REPLAY _INBOX.r.2 {}\r\n{body}\r\n", body.len()).as_bytes());
    let (records, ends) = read_catch_up(&mut c, 1);
    let got: Vec<&[u8]> = records.iter().map(|(p, _)| &p[..]).collect();
    assert_eq!(got, [&b"h2"[..], b"h3", b"h4"]);
    assert_eq!(header(&ends[0], "Tern-Replay-Shards").as_deref(), Some("1"));

    // A wildcard: every shard sends an end marker.
    let body = r#"{"subject":"hist.>"}"#;
    c.send(format!("PUB $TERN.REPLAY _INBOX.r.3 {}\r\n{body}\r\n", body.len()).as_bytes());
    let (records, _) = read_catch_up(&mut c, workers);
    assert_eq!(records.len(), 5);

    // Bad requests are answered on the inbox.
    for (body, why) in [
        (
            r#"{"subject":"hist.>","from_seq":3}"#,
            "from_seq needs the shard",
        ),
        (
            r#"{"subject":"hist.1","from_seq":3,"shard":7}"#,
            "no shard 7",
        ),
        (
            r#"{"subject":"hist.1","shard":1}"#,
            "shard goes with from_seq",
        ),
    ] {
        c.send(format!("PUB $TERN.REPLAY _INBOX.r.4 {}\r\n{body}\r\n", body.len()).as_bytes());
        let m = c.read_msg(common::WAIT);
        let h = String::from_utf8(m.headers.unwrap()).unwrap();
        assert!(h.starts_with("NATS/1.0 400 Bad Request\r\n"), "{h}");
        assert!(h.contains(why), "{h}");
    }
    c.ping_pong();

    // Replies to a catch-up are for one client: none of them went into a log.
    let mut b = BinClient::connect(broker.binary_addr());
    b.send(&subscribe_from(1, "_INBOX.r.>", from_start(&b)));
    // (A PONG does not wait for replays: give them time to show up, if there were any.)
    match b.try_read_frame(Duration::from_millis(500)) {
        Err(ReadEnd::Timeout) => {}
        other => panic!("catch-up replies were stored: {other:?}"),
    }
}

#[test]
fn a_flipped_byte_loses_only_its_record_and_the_epoch_stays() {
    let dir = temp_dir("ternd-flip");
    let data = dir.display().to_string();
    let args = ["--data-dir", data.as_str(), "--log-size", "4MiB"];
    let mut broker = Broker::with_args(&args);
    let workers = broker.workers();
    let subject = "flip";
    // Published on worker 0: into shard 0's ring.
    let mut c = BinClient::connect_on_worker(broker.binary_addr(), 0, workers);
    let epoch = c.welcome.log_epoch;
    for i in 0..100 {
        c.send(&publish(subject, &format!("{i:03}-{}", "p".repeat(100))));
    }
    c.publish_acked(subject, "last", 1);
    drop(c);
    broker.stop();

    // One byte in the middle of the records (after the 4 KiB header) goes bad.
    let file = dir.join(format!("shard-0000-of-{workers:04}.ring"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096 + 5000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let monitored: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--monitor", "127.0.0.1:0"])
        .collect();
    let broker = Broker::with_args(&monitored);
    let mut c = BinClient::connect(broker.binary_addr());
    assert_eq!(
        c.welcome.log_epoch, epoch,
        "no sequence is handed out again: the epoch stays"
    );
    c.send(&subscribe_from(1, subject, from_start(&c)));
    let mut held = Vec::new();
    let mut gaps = Vec::new();
    loop {
        match c.try_read_frame(Duration::from_millis(500)) {
            Ok(ServerFrame::Message(m)) => held.push((m.sequence, m.payload)),
            Ok(ServerFrame::GapNotice(g)) => gaps.push((g.requested, g.oldest, held.len())),
            Ok(other) => panic!("{other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(held.len(), 100, "every record but the damaged one");
    let [(lost, after, at)] = gaps[..] else {
        panic!("one gap notice, for the damaged record: {gaps:?}");
    };
    assert_eq!(after, lost + 1, "exactly one record is missing");
    assert_eq!(
        held[at].0, after,
        "the notice comes right before the record after the hole"
    );
    let seqs: Vec<u64> = held.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (1..=101).filter(|s| *s != lost).collect();
    assert_eq!(seqs, want);
    for (seq, payload) in &held[..held.len() - 1] {
        assert!(payload.starts_with(format!("{:03}-", seq - 1).as_bytes()));
    }
    assert_eq!(&held[99].1[..], b"last");

    let log = broker.stderr();
    assert!(log.contains("ring log recovered"), "{log}");
    assert!(log.contains("records_kept=100"), "{log}");
    assert!(log.contains("records_lost=1"), "{log}");
    assert!(!log.contains("a new log epoch starts"), "{log}");
    // The damaged file was kept, byte for byte, beside the repaired one.
    let copies: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".ring.damaged-"))
        .collect();
    let [copy] = &copies[..] else {
        panic!("one copy: {copies:?}");
    };
    assert!(log.contains(&copy.display().to_string()), "{log}");
    assert!(
        std::fs::read(copy).unwrap() == bytes,
        "the copy is the damaged file"
    );
    // And /varz says so, per shard.
    let varz = broker.varz();
    let shard0 = &varz["recovery"][0];
    assert_eq!(shard0["shard"], 0, "{varz}");
    assert_eq!(shard0["records"], 100, "{varz}");
    assert_eq!(shard0["records_lost"], 1, "{varz}");
    assert_eq!(shard0["holes"], 1, "{varz}");
    assert_eq!(
        shard0["damaged_copy"].as_str(),
        Some(copy.display().to_string().as_str()),
        "{varz}"
    );
    assert!(shard0["damage"].is_string(), "{varz}");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// The sync thread syncs a ring file only after something was written to it: an idle
/// broker flushes nobody's disk (each `fdatasync` flushes the disk's cache, dirty pages or
/// not), a message brings a sync of its records and one of the checkpoint that follows at
/// the next tick (one, if both land in the same interval), and none follows while nothing
/// more is stored.
#[test]
fn the_ring_logs_are_synced_only_after_something_was_stored() {
    let broker = Broker::with_args(&["--fsync-interval", "10ms", "--monitor", "127.0.0.1:0"]);
    let syncs = |v: &serde_json::Value| v["store_syncs"].as_u64().expect("store_syncs");
    // Idle: dozens of intervals and ticks, no sync.
    std::thread::sleep(Duration::from_millis(400));
    let idle = broker.varz();
    assert_eq!(syncs(&idle), 0, "synced while idle: {idle}");

    let mut c = common::RawClient::connect(broker.addr());
    c.send(b"PUB stored.one 2\r\nhi\r\n");
    c.ping_pong();
    // The records within an interval, the checkpoint within a tick (100 ms) and an interval.
    broker.varz_until(|v| syncs(v) >= 1);
    std::thread::sleep(Duration::from_millis(400));
    let after = syncs(&broker.varz());
    assert!((1..=2).contains(&after), "{after} syncs for one message");
    // Many intervals and ticks later, no more.
    std::thread::sleep(Duration::from_millis(400));
    let later = broker.varz();
    assert_eq!(
        syncs(&later),
        after,
        "synced again with nothing new: {later}"
    );
}

//! The client against the real broker (`tern-broker`, started in this process on free
//! ports): every client call, text and binary clients exchanging messages both ways
//! (headers included), a broker restart on the same port while the client publishes and
//! subscribes, an offline buffer that overflows, and admission control's refusals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use common::{wait_event, WAIT};
use tern_broker::Server;
use tern_client::{
    Client, Error, Event, Headers, PublishOptions, ReconnectPolicy, ResumeToken, StartFrom,
};

/// A broker with 2 workers (2 shards), text and binary ports on `binary` (0: a free one),
/// storing nothing.
fn start_broker(binary: u16) -> Server {
    // No ring log: nothing on disk, every start a new log epoch, catch-up starts live.
    broker_with(binary, &["--no-store"])
}

/// The same, storing everything in `data_dir`.
fn start_storing_broker(binary: u16, data_dir: &std::path::Path) -> Server {
    let data_dir = data_dir.display().to_string();
    broker_with(binary, &["--data-dir", &data_dir, "--log-size", "4MiB"])
}

fn broker_with(binary: u16, extra: &[&str]) -> Server {
    common::broker::start(&format!("127.0.0.1:{binary}"), extra)
}

fn url(server: &Server) -> String {
    format!(
        "tern://{}",
        server.binary_addr().expect("the binary port is on")
    )
}

/// A client that waits 400 to 800 ms before it reconnects: time for a test to publish
/// while it is away.
fn slow_to_reconnect(server: &Server) -> Client {
    Client::builder()
        .reconnect(ReconnectPolicy::new(
            Duration::from_millis(400),
            Duration::from_millis(800),
        ))
        .connect(&url(server))
        .unwrap()
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_millis(10), Duration::from_millis(100))
}

/// A NATS text-protocol client on a raw socket.
struct TextClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// A message as the text port delivers it.
#[derive(Debug, PartialEq, Eq)]
struct TextMsg {
    subject: String,
    sid: String,
    reply: Option<String>,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl TextClient {
    fn connect(addr: SocketAddr) -> TextClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = TextClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        let info = c.line();
        assert!(info.starts_with("INFO "), "{info}");
        c.send(b"CONNECT {\"headers\":true,\"verbose\":false}\r\n");
        c.ping();
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line within WAIT");
        assert!(n > 0, "the text port closed the connection");
        line.trim_end().to_string()
    }

    /// PING, and wait for the PONG: the broker has processed everything before it.
    fn ping(&mut self) {
        self.send(b"PING\r\n");
        let line = self.line();
        assert_eq!(line, "PONG");
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n + 2];
        self.reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[n..], b"\r\n");
        buf.truncate(n);
        buf
    }

    /// The next MSG or HMSG (PINGs from the server are answered).
    fn msg(&mut self) -> TextMsg {
        loop {
            let line = self.line();
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "PING" => self.send(b"PONG\r\n"),
                "MSG" => {
                    let (reply, len) = match parts.len() {
                        4 => (None, parts[3]),
                        5 => (Some(parts[3].to_string()), parts[4]),
                        _ => panic!("bad MSG line {line}"),
                    };
                    let payload = self.read_exact(len.parse().unwrap());
                    return TextMsg {
                        subject: parts[1].to_string(),
                        sid: parts[2].to_string(),
                        reply,
                        headers: None,
                        payload,
                    };
                }
                "HMSG" => {
                    let (reply, hlen, total) = match parts.len() {
                        5 => (None, parts[3], parts[4]),
                        6 => (Some(parts[3].to_string()), parts[4], parts[5]),
                        _ => panic!("bad HMSG line {line}"),
                    };
                    let (hlen, total): (usize, usize) =
                        (hlen.parse().unwrap(), total.parse().unwrap());
                    let mut all = self.read_exact(total);
                    let payload = all.split_off(hlen);
                    return TextMsg {
                        subject: parts[1].to_string(),
                        sid: parts[2].to_string(),
                        reply,
                        headers: Some(all),
                        payload,
                    };
                }
                other => panic!("unexpected text line {other}: {line}"),
            }
        }
    }
}

#[test]
fn every_client_call_against_the_broker() {
    let server = start_broker(0);
    let client = Client::builder().name("it").connect(&url(&server)).unwrap();
    let events = client.events();
    let info = wait_event(&events, |e| match e {
        Event::Connected(info) => Some(info.clone()),
        _ => None,
    });
    assert_eq!(info.shard_count, 2);
    assert_ne!(info.log_epoch, 0);
    assert_eq!(client.server_info().unwrap(), info);
    assert!(client.is_connected());

    // subscribe + publish + recv / try_recv / recv_timeout.
    let sub = client.subscribe("it.>").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("it.a", "plain").unwrap();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (m.subject.as_str(), m.payload_str(), m.priority),
        ("it.a", Some("plain"), 0)
    );
    assert!(m.sequence >= 1);
    assert!(m.headers.is_none() && m.reply.is_none() && !m.replayed);
    assert!(m.time() > SystemTime::now() - Duration::from_secs(60));
    assert!(matches!(sub.try_recv(), Ok(None)));
    assert!(matches!(
        sub.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));

    // publish_with: priority, headers, reply, message id, coalescing key all go through.
    let mut headers = Headers::new();
    headers
        .insert("Trace", "t-1")
        .append("Tag", "a")
        .append("Tag", "b");
    let opts = PublishOptions::new()
        .priority(6)
        .headers(headers.clone())
        .reply("it.replies")
        .message_id("m-1")
        .coalescing_key("k-1");
    client.publish_with("it.b", "rich", &opts).unwrap();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(m.priority, 6);
    assert_eq!(m.reply.as_deref(), Some("it.replies"));
    assert_eq!(m.headers.as_ref(), Some(&headers));
    assert_eq!(m.raw_headers.as_deref(), Some(&headers.to_bytes()[..]));

    // publish_acked: per-shard sequences from 1, the MESSAGE carries the same place.
    let first = client.publish_acked("it.c", "one").unwrap();
    let second = client.publish_acked("it.c", "two").unwrap();
    assert_eq!(first.shard, second.shard);
    assert_eq!(second.sequence, first.sequence + 1);
    assert!(!first.duplicate);
    for ack in [first, second] {
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!((m.shard, m.sequence), (ack.shard, ack.sequence));
    }
    let pending: Vec<_> = (0..50)
        .map(|i| {
            client
                .publish_with_ack("it.d", i.to_string(), &PublishOptions::new())
                .unwrap()
        })
        .collect();
    let seqs: Vec<u64> = pending
        .into_iter()
        .map(|p| p.wait().unwrap().sequence)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let got: Vec<String> = (0..50)
        .map(|_| {
            sub.recv_timeout(WAIT)
                .unwrap()
                .payload_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    let token = sub.resume_token().unwrap();
    assert_eq!(token.epoch, info.log_epoch);
    assert!(token.last_sequences.iter().any(|&s| s >= 50));

    // queue_subscribe: each message to exactly one member.
    let q1 = client.queue_subscribe("it.work", "workers").unwrap();
    let q2 = client.queue_subscribe("it.work", "workers").unwrap();
    client.flush(WAIT).unwrap();
    for i in 0..20 {
        client.publish("it.work", i.to_string()).unwrap();
    }
    client.flush(WAIT).unwrap();
    let mut seen = Vec::new();
    for q in [&q1, &q2] {
        while let Ok(Some(m)) = q.try_recv() {
            seen.push(m.payload_str().unwrap().parse::<u32>().unwrap());
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    for _ in 0..20 {
        sub.recv_timeout(WAIT).unwrap(); // it.> saw them too
    }

    // request / respond, no responders, timeout.
    let service = client.subscribe("svc.echo").unwrap();
    let responder = client.clone();
    let serve = std::thread::spawn(move || {
        let req = service.recv_timeout(WAIT).unwrap();
        let answer = format!("echo: {}", req.payload_str().unwrap());
        responder.respond(&req, answer).unwrap();
        let plain = service.recv_timeout(WAIT).unwrap();
        assert!(matches!(
            responder.respond(&plain, "x"),
            Err(Error::NoReplySubject)
        ));
        service
    });
    client.flush(WAIT).unwrap();
    let reply = client.request("svc.echo", "hi", WAIT).unwrap();
    assert_eq!(reply.payload_str(), Some("echo: hi"));
    client.publish("svc.echo", "no reply subject").unwrap();
    let _service = serve.join().unwrap();
    // Nobody subscribed: the client's HELLO asks for no-responders statuses, so the
    // request is answered at once, long before its timeout.
    let asked = std::time::Instant::now();
    match client.request("svc.nobody", "x", WAIT) {
        Err(Error::NoResponders { subject }) => assert_eq!(subject, "svc.nobody"),
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(asked.elapsed() < WAIT);
    let _silent = client.subscribe("svc.silent").unwrap();
    client.flush(WAIT).unwrap();
    assert!(matches!(
        client.request("svc.silent", "x", Duration::from_millis(50)),
        Err(Error::Timeout)
    ));

    // unsubscribe_after: exactly n more, then the end; iter() ends with it.
    let limited = client.subscribe("it.limit").unwrap();
    client.flush(WAIT).unwrap();
    limited.unsubscribe_after(3).unwrap();
    for i in 0..5 {
        client.publish("it.limit", i.to_string()).unwrap();
    }
    let got: Vec<String> = limited
        .iter()
        .map(|m| m.payload_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["0", "1", "2"]);
    assert!(matches!(limited.recv(), Err(Error::Unsubscribed)));

    // unsubscribe: nothing more arrives (checked through a second subscription).
    let gone = client.subscribe("it.gone").unwrap();
    let witness = client.subscribe("it.gone").unwrap();
    client.flush(WAIT).unwrap();
    gone.unsubscribe().unwrap();
    client.publish("it.gone", "after").unwrap();
    assert_eq!(
        witness.recv_timeout(WAIT).unwrap().payload_str(),
        Some("after")
    );

    // Catch-up starts are accepted and (without a log yet) start live.
    let since = client
        .subscribe_builder("cu.a")
        .start(StartFrom::Since(
            SystemTime::now() - Duration::from_secs(60),
        ))
        .subscribe()
        .unwrap();
    let last = client
        .subscribe_builder("cu.a")
        .start(StartFrom::Last(5))
        .lossless(true)
        .subscribe()
        .unwrap();
    let from_seq = client
        .subscribe_builder("cu.a")
        .start(StartFrom::Sequence(1))
        .subscribe()
        .unwrap();
    let resumed = client
        .subscribe_builder("cu.a")
        .start(StartFrom::Resume(ResumeToken {
            epoch: info.log_epoch,
            last_sequences: vec![0, 0],
        }))
        .subscribe()
        .unwrap();
    let foreign = client
        .subscribe_builder("cu.a")
        .start(StartFrom::Resume(ResumeToken {
            epoch: info.log_epoch.wrapping_add(1),
            last_sequences: vec![3, 3],
        }))
        .subscribe()
        .unwrap();
    client.flush(WAIT).unwrap();
    // The flush is a barrier: every answer to those SUBSCRIBEs is queued by now. A token
    // from another epoch gets EpochMismatch, and the subscription is live anyway; the
    // others are accepted. (Tokens behind a shard's last sequence may also get a
    // GAP_NOTICE while the broker keeps no log; that path is covered by fake_server.rs.)
    let mut seen = Vec::new();
    while let Some(e) = events.try_recv() {
        seen.push(e);
    }
    let mismatches: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            Event::EpochMismatch { sid, .. } => Some(*sid),
            _ => None,
        })
        .collect();
    assert_eq!(mismatches, [foreign.sid()], "{seen:?}");
    assert!(
        !seen.iter().any(|e| matches!(e, Event::ServerError { .. })),
        "{seen:?}"
    );
    client.publish("cu.a", "live").unwrap();
    for s in [&since, &last, &from_seq, &resumed, &foreign] {
        let m = s.recv_timeout(WAIT).unwrap();
        assert_eq!(m.payload_str(), Some("live"), "sid {}", s.sid());
        assert!(!m.replayed);
    }

    // drain: subscriptions end after what was already delivered, then the client closes.
    // (First empty `it.>` of what the sections above published.)
    client.flush(WAIT).unwrap();
    while let Ok(Some(_)) = sub.try_recv() {}
    client.publish("it.last", "before drain").unwrap();
    client.flush(WAIT).unwrap(); // Delivered, waiting in the subscription's queue.
    client.drain(WAIT).unwrap();
    assert!(client.is_closed());
    let rest: Vec<String> = sub
        .iter()
        .map(|m| m.payload_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, ["before drain"]);
    assert!(matches!(client.publish("a", "b"), Err(Error::Closed)));
    server.shutdown();
}

#[test]
fn text_and_binary_clients_exchange_messages_both_ways_with_headers() {
    let server = start_broker(0);
    let client = Client::connect(&url(&server)).unwrap();
    let mut text = TextClient::connect(server.local_addr());

    // Text → binary: HPUB headers arrive byte for byte; a PUB arrives without headers.
    let sub = client.subscribe("bridge.>").unwrap();
    client.flush(WAIT).unwrap();
    let block = b"NATS/1.0\r\nTrace: abc\r\nX-Two: 2\r\n\r\n";
    let payload = b"from text";
    let mut hpub = format!(
        "HPUB bridge.t2b reply.to {} {}\r\n",
        block.len(),
        block.len() + payload.len()
    )
    .into_bytes();
    hpub.extend_from_slice(block);
    hpub.extend_from_slice(payload);
    hpub.extend_from_slice(b"\r\nPUB bridge.plain 5\r\nplain\r\n");
    text.send(&hpub);
    text.ping();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(m.subject, "bridge.t2b");
    assert_eq!(m.reply.as_deref(), Some("reply.to"));
    assert_eq!(m.raw_headers.as_deref(), Some(&block[..]));
    assert_eq!(m.headers.as_ref().unwrap().get("x-two"), Some("2"));
    assert_eq!(&m.payload[..], payload);
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (m.subject.as_str(), m.payload_str()),
        ("bridge.plain", Some("plain"))
    );
    assert_eq!(m.raw_headers, None);

    // Binary → text: headers byte for byte in HMSG; no headers is a plain MSG.
    text.send(b"SUB b2t.* 7\r\n");
    text.ping();
    let headers: Headers = [("Trace", "xyz"), ("Multi", "1"), ("Multi", "2")]
        .into_iter()
        .collect();
    client
        .publish_with(
            "b2t.x",
            "from binary",
            &PublishOptions::new()
                .headers(headers.clone())
                .reply("back.here"),
        )
        .unwrap();
    client.publish("b2t.y", "bare").unwrap();
    client.flush(WAIT).unwrap();
    let got = text.msg();
    assert_eq!(
        got,
        TextMsg {
            subject: "b2t.x".to_string(),
            sid: "7".to_string(),
            reply: Some("back.here".to_string()),
            headers: Some(headers.to_bytes().to_vec()),
            payload: b"from binary".to_vec(),
        }
    );
    let got = text.msg();
    assert_eq!((got.subject.as_str(), got.headers), ("b2t.y", None));
    assert_eq!(got.payload, b"bare");

    // A binary request answered by a text responder.
    text.send(b"SUB svc.text 8\r\n");
    text.ping();
    let requester = client.clone();
    let ask = std::thread::spawn(move || requester.request("svc.text", "ping?", WAIT));
    let req = text.msg();
    assert_eq!(req.payload, b"ping?");
    let reply_to = req.reply.expect("a reply subject");
    assert!(reply_to.starts_with("_INBOX."), "{reply_to}");
    text.send(format!("PUB {reply_to} 5\r\npong!\r\n").as_bytes());
    assert_eq!(ask.join().unwrap().unwrap().payload_str(), Some("pong!"));

    client.close();
    server.shutdown();
}

#[test]
fn the_client_rides_out_a_broker_restart_on_the_same_port() {
    let server = start_broker(0);
    let port = server.binary_addr().unwrap().port();
    let client = Client::builder()
        .reconnect(fast_reconnect())
        .ping_interval(Duration::from_millis(200))
        .server_timeout(Duration::from_secs(2))
        .connect(&url(&server))
        .unwrap();
    let events = client.events();
    let epoch = client.server_info().unwrap().log_epoch;
    let sub = client.subscribe("restart.>").unwrap();
    client.flush(WAIT).unwrap();
    client.publish("restart.a", "before").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("before")
    );

    server.shutdown();
    let reason = wait_event(&events, |e| match e {
        Event::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(!client.is_connected(), "{reason}");
    // Published during the outage: kept in the offline buffer.
    for i in 0..3 {
        client.publish("restart.a", format!("during {i}")).unwrap();
    }
    let pending = client
        .publish_with_ack("restart.b", "acked during", &PublishOptions::new())
        .unwrap();
    assert!(client.buffered_bytes() > 0);

    // A new broker process on the same port, with a new log epoch.
    let server = start_broker(port);
    let info = wait_event(&events, |e| match e {
        Event::Reconnected(info) => Some(info.clone()),
        _ => None,
    });
    assert_eq!(info.addr.port(), port);
    // The subscription had seen a message, so it resumed with its token. A broker that
    // restarted with a new log epoch (no persistent log) refuses the token with
    // EpochMismatch and starts it live, and numbers from 1 again.
    let new_epoch = info.log_epoch != epoch;
    if new_epoch {
        let sid = wait_event(&events, |e| match e {
            Event::EpochMismatch { sid, .. } => Some(*sid),
            _ => None,
        });
        assert_eq!(sid, sub.sid());
    }
    // The subscription was re-sent before the offline buffer, so it sees those publishes,
    // in the order they were published (one connection's messages stay in order whatever
    // their subjects).
    let got: Vec<String> = (0..4)
        .map(|_| {
            sub.recv_timeout(WAIT)
                .unwrap()
                .payload_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ["during 0", "during 1", "during 2", "acked during"]);
    let ack = pending.wait().unwrap();
    if new_epoch {
        // All four were stored by the shard of the connection's worker, numbered from 1.
        assert_eq!(ack.sequence, 4, "a new log epoch numbers from 1");
    }
    assert_eq!(client.buffered_bytes(), 0);
    // And it carries on.
    client.publish("restart.a", "after").unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().payload_str(), Some("after"));
    assert_eq!(sub.resume_token().unwrap().epoch, info.log_epoch);
    client.close();
    server.shutdown();
}

/// The train leaves the tunnel: a subscriber whose broker restarted on the same ring logs
/// resumes by itself with its token and gets exactly what was published while it was
/// away, once each and in order, after what it had already seen.
#[test]
fn a_subscriber_resumes_from_the_log_across_a_broker_restart() {
    let dir = std::env::temp_dir().join(format!("tern-client-resume-{}", std::process::id()));
    let server = start_storing_broker(0, &dir);
    let port = server.binary_addr().unwrap().port();
    // Slow enough to come back after the publisher below has published.
    let client = slow_to_reconnect(&server);
    let events = client.events();
    let epoch = client.server_info().unwrap().log_epoch;
    let sub = client.subscribe("train.news").unwrap();
    client.flush(WAIT).unwrap();
    for i in 0..5 {
        client
            .publish_acked("train.news", format!("seen {i}"))
            .unwrap();
    }
    for i in 0..5 {
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!(m.payload_str(), Some(format!("seen {i}").as_str()));
    }

    server.shutdown();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    let server = start_storing_broker(port, &dir);
    // Someone else publishes before the subscriber is back.
    let other = Client::connect(&url(&server)).unwrap();
    assert_eq!(
        other.server_info().unwrap().log_epoch,
        epoch,
        "the same log"
    );
    for i in 0..4 {
        other
            .publish_acked("train.news", format!("missed {i}"))
            .unwrap();
    }
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    other.publish_acked("train.news", "live").unwrap();
    let got: Vec<String> = (0..5)
        .map(|_| {
            sub.recv_timeout(WAIT)
                .unwrap()
                .payload_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        got,
        ["missed 0", "missed 1", "missed 2", "missed 3", "live"]
    );
    client.flush(WAIT).unwrap();
    if let Ok(Some(extra)) = sub.try_recv() {
        panic!("nothing twice, but got {:?}", extra.payload_str());
    }
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::Gap { .. } | Event::EpochMismatch { .. }),
            "{e:?}"
        );
    }
    client.close();
    other.close();
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// A wildcard subscriber that has only heard from one shard, resuming after a restart,
/// gets nothing of the other shard's history from before it subscribed: `SUBSCRIBED` told
/// it where it started in every shard, so its token covers the shard it never heard from
/// (before, that shard was replayed from sequence 1).
#[test]
fn a_resume_skips_what_came_before_the_subscription_on_a_shard_it_never_heard_from() {
    let dir = std::env::temp_dir().join(format!("tern-client-start-{}", std::process::id()));
    let server = start_storing_broker(0, &dir);
    let port = server.binary_addr().unwrap().port();
    // A message is stored by the shard of its publisher's worker (client id % 2).
    let on_worker = |server: &Server, worker: u64| loop {
        let c = Client::connect(&url(server)).unwrap();
        if c.server_info().unwrap().client_id % 2 == worker {
            return c;
        }
        c.close();
    };
    let (heard, quiet) = ("era.heard", "era.quiet");
    let quiet_publisher = on_worker(&server, 1);
    for i in 0..5 {
        quiet_publisher
            .publish_acked(quiet, format!("before {i}"))
            .unwrap();
    }
    quiet_publisher.close();
    let other = on_worker(&server, 0);
    let client = slow_to_reconnect(&server);
    let events = client.events();
    let sub = client.subscribe("era.*").unwrap();
    client.flush(WAIT).unwrap();
    other.publish_acked(heard, "seen").unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().payload_str(), Some("seen"));
    other.close();

    server.shutdown();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });
    let server = start_storing_broker(port, &dir);
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    let other = on_worker(&server, 1);
    other.publish_acked(quiet, "after").unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload_str(),
        Some("after"),
        "nothing from before the subscription"
    );
    client.flush(WAIT).unwrap();
    if let Ok(Some(extra)) = sub.try_recv() {
        panic!("only \"after\", but got {:?}", extra.payload_str());
    }
    while let Some(e) = events.try_recv() {
        assert!(!matches!(e, Event::Gap { .. }), "{e:?}");
    }
    client.close();
    other.close();
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_overflowing_offline_buffer_is_a_documented_error() {
    let server = start_broker(0);
    let port = server.binary_addr().unwrap().port();
    let client = Client::builder()
        .reconnect(fast_reconnect())
        .offline_buffer_bytes(1000)
        .connect(&url(&server))
        .unwrap();
    let events = client.events();
    let sub = client.subscribe("ob").unwrap();
    client.flush(WAIT).unwrap();
    server.shutdown();
    wait_event(&events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    });

    let payload = vec![b'x'; 100];
    let mut accepted = 0;
    let err = loop {
        match client.publish("ob", &payload) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the offline buffer never filled");
    };
    // 100 bytes of payload + 15 of frame (6 header, 1 priority, 2 + 2 subject, 4 payload
    // length) = 115 per publish: 8 fit in 1000.
    assert_eq!(accepted, 8);
    let text = err.to_string();
    assert!(
        text.contains("offline buffer full") && text.contains("limit 1000"),
        "{text}"
    );
    match err {
        Error::OfflineBufferFull {
            buffered,
            needed,
            limit,
        } => assert_eq!((buffered, needed, limit), (920, 115, 1000)),
        other => panic!("expected OfflineBufferFull, got {other:?}"),
    }

    // Everything accepted is delivered after the broker is back; nothing more.
    let server = start_broker(port);
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    client.flush(WAIT).unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = sub.try_recv() {
        n += 1;
    }
    assert_eq!(n, accepted);
    client.close();
    server.shutdown();
}

#[test]
fn admission_refusals_reach_the_caller_with_the_servers_reason() {
    let server = broker_with(
        0,
        &[
            "--no-store",
            "--max-connections",
            "1",
            "--max-subscriptions",
            "1",
            "--rate-action",
            "refuse",
            "--publish-msgs-per-sec",
            "1",
            "--publish-msgs-burst",
            "1",
        ],
    );
    let client = Client::connect(&url(&server)).unwrap();

    // The broker is full: the server's error, not a bare reset or timeout.
    match Client::connect(&url(&server)) {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, tern_client::ErrorCode::TooManyConnections);
            assert_eq!(message, "maximum connections exceeded");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }

    // One subscription per connection: the second ends with the server's error.
    let _first = client.subscribe("a").unwrap();
    let second = client.subscribe("b").unwrap();
    match second.recv_timeout(WAIT) {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, tern_client::ErrorCode::TooManySubscriptions);
            assert!(
                message.starts_with("maximum subscriptions exceeded"),
                "{message}"
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }

    // One publish per second: an acknowledged publish over it is refused.
    client.publish_acked("c", "1").unwrap();
    match client.publish_acked("c", "2") {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, tern_client::ErrorCode::RateLimited);
            assert!(message.starts_with("publish rate exceeded"), "{message}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    client.close();
    server.shutdown();
}

/// A subscriber with a lossless subscription to `subject` queuing at most `capacity`
/// messages in the client (in place at the broker), its events, and a publisher.
fn lossless_pair(
    url: &str,
    subject: &str,
    capacity: usize,
) -> (
    Client,
    tern_client::Events,
    tern_client::Subscription,
    Client,
) {
    let subscriber = Client::connect(url).unwrap();
    let events = subscriber.events();
    let sub = subscriber
        .subscribe_builder(subject)
        .lossless(true)
        .capacity(capacity)
        .subscribe()
        .unwrap();
    subscriber.flush(WAIT).unwrap();
    (subscriber, events, sub, Client::connect(url).unwrap())
}

/// A lossless subscription whose application falls behind holds the client's reading back
/// (and so the broker, which then serves it from its log) instead of the client dropping:
/// every message arrives, once, in order, and no client-side drop is reported.
#[test]
fn a_lossless_subscription_that_falls_behind_loses_nothing_in_the_client() {
    let dir = std::env::temp_dir().join(format!("tern-client-lossless-{}", std::process::id()));
    let server = start_storing_broker(0, &dir);
    let (_subscriber, events, sub, publisher) = lossless_pair(&url(&server), "slow.feed", 4);
    let n = 3000u32;
    for i in 0..n {
        publisher.publish("slow.feed", i.to_string()).unwrap();
    }
    publisher.flush(WAIT).unwrap();
    let mut got = Vec::with_capacity(n as usize);
    while got.len() < n as usize {
        let m = sub.recv_timeout(WAIT).expect("every message arrives");
        got.push(m.payload_str().unwrap().parse::<u32>().unwrap());
        if got.len() < 40 {
            // Far slower than the publisher at first: the 4-message queue is full at once.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert_eq!(sub.dropped(), 0);
    while let Some(e) = events.try_recv() {
        assert!(!matches!(e, Event::Dropped { .. }), "{e:?}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client held back by a full lossless subscription reads nothing, so it cannot answer
/// the broker's pings; it pings the broker itself instead, and the broker does not close it
/// as stale however long the application takes.
#[test]
fn a_client_held_by_a_full_lossless_subscription_is_not_closed_as_stale() {
    let dir = std::env::temp_dir().join(format!("tern-client-held-{}", std::process::id()));
    let data_dir = dir.display().to_string();
    let server = broker_with(
        0,
        &[
            "--data-dir",
            &data_dir,
            "--log-size",
            "4MiB",
            "--ping-interval",
            "100ms",
            "--ping-max",
            "2",
        ],
    );
    let (_subscriber, events, sub, publisher) = lossless_pair(&url(&server), "held.feed", 2);
    for i in 0..100u32 {
        publisher.publish("held.feed", i.to_string()).unwrap();
    }
    publisher.flush(WAIT).unwrap();
    // Ten of the broker's ping intervals with the subscription full: without pings of its
    // own the client would be closed after three.
    std::thread::sleep(Duration::from_millis(1000));
    let got: Vec<u32> = (0..100)
        .map(|_| {
            let m = sub.recv_timeout(WAIT).expect("every message arrives");
            m.payload_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::Disconnected { .. } | Event::Reconnected(_)),
            "the held connection was closed: {e:?}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The text port byte for byte, over raw TCP, as a telnet user or a hand-written client sees
//! it: exact replies, errors and which of them close the connection, the server's pings,
//! slow consumers, and a graceful stop on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{show, Broker, RawClient, ReadEnd, WAIT};

/// A telnet session: lowercase operation names, bare `\n` line ends, empty lines.
#[test]
fn telnet_session_exact_bytes() {
    let broker = Broker::start();
    let mut c = RawClient::connect_bare(broker.addr());

    let info = c.read_info();
    assert_eq!(info["proto"], 1, "INFO: {info}");
    assert_eq!(info["headers"], true, "INFO: {info}");
    assert_eq!(info["max_payload"], 1024 * 1024, "INFO: {info}");
    assert_eq!(info["port"], broker.addr().port(), "INFO: {info}");
    assert!(info["server_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(info["client_id"].is_u64(), "INFO: {info}");

    c.send(b"sub foo 1\n");
    c.send(b"pub foo 5\nhello\n");
    c.expect(b"MSG foo 1 5\r\nhello\r\n");

    c.send(b"ping\n");
    c.expect(b"PONG\r\n");

    // Empty lines are skipped; mixed case works.
    c.send(b"\n\r\n  \nPiNg\n");
    c.expect(b"PONG\r\n");

    // A reply subject, and an empty payload.
    c.send(b"pub foo my.inbox 2\nhi\n");
    c.expect(b"MSG foo 1 my.inbox 2\r\nhi\r\n");
    c.send(b"pub foo 0\n\n");
    c.expect(b"MSG foo 1 0\r\n\r\n");

    // Extra spaces and tabs between arguments; a wildcard subscription.
    c.send(b"sub   wild.*  \t 7\n");
    c.send(b"ping\n");
    c.expect(b"PONG\r\n");
    c.send(b"pub wild.card 3\nabc\n");
    c.expect(b"MSG wild.card 7 3\r\nabc\r\n");

    // After `unsub 1` nothing more arrives for sid 1: a new subscription on the same subject
    // (same shard, same routing pass) gets the next message and sid 1 does not.
    c.send(b"unsub 1\n");
    c.send(b"sub foo 2\n");
    c.send(b"pub foo 5\nworld\n");
    c.expect(b"MSG foo 2 5\r\nworld\r\n");
    c.send(b"ping\n");
    c.expect(b"PONG\r\n");

    // The whole operation in one write, CRLF this time.
    c.send(b"PUB foo 3\r\nxyz\r\nPING\r\n");
    let got = c.read_until(b"PONG\r\n", WAIT);
    let msg = b"MSG foo 2 3\r\nxyz\r\n";
    // The delivery may cross workers, so it may come before or after the PONG.
    if got == b"PONG\r\n" {
        c.expect(msg);
    } else {
        assert_eq!(got, [&msg[..], b"PONG\r\n"].concat(), "{}", show(&got));
    }
    c.ping_pong();
}

/// Two telnet sessions talking to each other, one subscribing, the other publishing.
#[test]
fn two_sessions_exchange_messages() {
    let broker = Broker::start();
    let mut sub = RawClient::connect(broker.addr());
    let mut publ = RawClient::connect(broker.addr());
    sub.send(b"sub greetings.* 1\n");
    sub.send(b"ping\n");
    sub.expect(b"PONG\r\n");
    publ.send(b"pub greetings.world 5\nhello\n");
    publ.send(b"pub greetings 7\nnomatch\n");
    publ.ping_pong();
    sub.expect(b"MSG greetings.world 1 5\r\nhello\r\n");
    publ.send(b"pub greetings.moon 3\nbye\n");
    sub.expect(b"MSG greetings.moon 1 3\r\nbye\r\n");
}

#[test]
fn verbose_mode_acks_every_operation() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"verbose\":true}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"SUB foo 1\r\n");
    c.expect(b"+OK\r\n");
    // No subscriber: only the acknowledgement.
    c.send(b"PUB nobody.here 2\r\nhi\r\n");
    c.expect(b"+OK\r\n");
    // PING is answered with PONG only.
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
    // With a subscriber: the acknowledgement and the delivery, in either order.
    c.send(b"PUB foo 2\r\nhi\r\n");
    let first = c.read_until(b"\r\n", WAIT);
    if first == b"+OK\r\n" {
        c.expect(b"MSG foo 1 2\r\nhi\r\n");
    } else {
        assert_eq!(first, b"MSG foo 1 2\r\n", "{}", show(&first));
        c.expect(b"hi\r\n+OK\r\n");
    }
    c.send(b"UNSUB 1\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB foo 2\r\nhi\r\n");
    c.expect(b"+OK\r\n");
    c.ping_pong();
    // Errors that do not close are not acknowledged.
    c.send(b"SUB foo..bar 2\r\n");
    c.expect(b"-ERR 'Invalid Subject'\r\n");
    c.ping_pong();
}

#[test]
fn unknown_operation_closes_the_connection() {
    let broker = Broker::start();
    for garbage in [&b"FOO BAR\r\n"[..], b"hello\n", b"PUBLISH foo 1\r\n"] {
        let mut c = RawClient::connect(broker.addr());
        c.send(garbage);
        let (rest, end) = c.read_to_close(WAIT);
        assert_eq!(
            rest,
            b"-ERR 'Unknown Protocol Operation'\r\n",
            "after {} got {} then {end:?}",
            show(garbage),
            show(&rest)
        );
    }
    // The broker itself is fine.
    RawClient::connect(broker.addr()).ping_pong();
}

/// What nats-server reads from a client although only its routes need it: an `INFO` or a
/// `+OK` is ignored (verbose or not: no `+OK` for either), a `-ERR` closes the connection
/// with nothing sent back, an `INFO` that is not a JSON object is refused; and a protocol
/// version it does not know is refused as nats-server refuses it.
#[test]
fn client_info_ok_err_and_protocol_are_read_as_nats_server_reads_them() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"verbose\":true,\"protocol\":1}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"INFO {\"server_id\":\"not-a-server\",\"max_payload\":1}\r\n+OK\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    // Nothing changed: a payload over the client's INFO's "max_payload" still goes.
    c.send(b"SUB foo 1\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB foo 2\r\nhi\r\n");
    let got = c.read_until(b"hi\r\n", WAIT);
    assert!(got.ends_with(b"MSG foo 1 2\r\nhi\r\n"), "{}", show(&got));
    c.send(b"-ERR 'Slow Consumer'\r\n");
    let (rest, end) = c.read_to_close(WAIT);
    assert!(
        rest.is_empty(),
        "after -ERR got {} then {end:?}",
        show(&rest)
    );

    for (input, reply) in [
        (&b"INFO [1]\r\n"[..], &b"-ERR 'Invalid INFO: "[..]),
        (
            b"CONNECT {\"protocol\":2}\r\nPING\r\n",
            b"-ERR 'invalid client protocol'\r\n",
        ),
    ] {
        let mut c = RawClient::connect(broker.addr());
        c.send(input);
        let (rest, end) = c.read_to_close(WAIT);
        assert!(
            rest.starts_with(reply) && rest.ends_with(b"'\r\n"),
            "after {} got {} then {end:?}",
            show(input),
            show(&rest)
        );
    }
    RawClient::connect(broker.addr()).ping_pong();
}

/// An `HPUB` with no header bytes is a plain publish (nats-server's reading): subscribers
/// get a `MSG`, and the connection stays.
#[test]
fn hpub_without_header_bytes_is_a_plain_publish() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"headers\":true}\r\nSUB foo 1\r\n");
    c.ping_pong();
    c.send(b"HPUB foo 0 2\r\nab\r\n");
    c.expect(b"MSG foo 1 2\r\nab\r\n");
    c.ping_pong();
}

#[test]
fn oversize_payload_is_refused_from_the_control_line() {
    let broker = Broker::with_args(&["--max-payload", "1KiB"]);
    let mut sub = RawClient::connect(broker.addr());
    assert_eq!(sub.info["max_payload"], 1024);
    sub.send(b"SUB big 1\r\n");
    sub.ping_pong();

    // Exactly the limit passes.
    let mut c = RawClient::connect(broker.addr());
    let payload = vec![b'p'; 1024];
    c.send(b"PUB big 1024\r\n");
    c.send(&payload);
    c.send(b"\r\n");
    c.ping_pong();
    sub.expect(&[&b"MSG big 1 1024\r\n"[..], &payload, b"\r\n"].concat());

    // One byte more is refused as soon as it is announced: no payload is sent.
    c.send(b"PUB big 1025\r\n");
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Payload Violation'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );

    // The same for HPUB (the total counts the headers).
    let mut c = RawClient::connect(broker.addr());
    c.send(b"HPUB big 12 1025\r\n");
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Payload Violation'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );
    sub.ping_pong();
}

#[test]
fn default_max_payload_is_one_mebibyte() {
    let broker = Broker::start();
    let mut sub = RawClient::connect(broker.addr());
    sub.send(b"SUB big 1\r\n");
    sub.ping_pong();
    let mut c = RawClient::connect(broker.addr());
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.send(b"PUB big 1048576\r\n");
    c.send(&payload);
    c.send(b"\r\n");
    c.ping_pong();
    let msg = sub.read_msg(WAIT);
    assert_eq!(msg.subject, "big");
    assert!(msg.payload == payload, "1 MiB payload altered");

    c.send(b"PUB big 1048577\r\n");
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Payload Violation'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );
}

#[test]
fn oversize_control_line_closes_the_connection() {
    let broker = Broker::start();
    // No line end at all: the limit must trigger without waiting for one.
    let mut c = RawClient::connect(broker.addr());
    let mut line = b"SUB ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 8192));
    c.send(&line);
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Control Line Exceeded'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );

    // The boundary: 4096 bytes counting the CRLF pass, 4097 do not.
    let mut c = RawClient::connect(broker.addr());
    let subject = "s".repeat(4096 - "SUB  1\r\n".len());
    let ok = format!("SUB {subject} 1\r\n");
    assert_eq!(ok.len(), 4096);
    c.send(ok.as_bytes());
    c.ping_pong();
    let too_long = format!("SUB {subject}x 2\r\n");
    c.send(too_long.as_bytes());
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Control Line Exceeded'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );
}

#[test]
fn max_control_line_flag_is_applied() {
    let broker = Broker::with_args(&["--max-control-line", "128"]);
    let mut c = RawClient::connect(broker.addr());
    let subject = "s".repeat(128 - "SUB  1\r\n".len());
    c.send(format!("SUB {subject} 1\r\n").as_bytes());
    c.ping_pong();
    c.send(format!("SUB {subject}xx 2\r\n").as_bytes());
    let (rest, end) = c.read_to_close(WAIT);
    assert_eq!(
        rest,
        b"-ERR 'Maximum Control Line Exceeded'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );
}

#[test]
fn invalid_subscription_subject_keeps_the_connection() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    for bad in ["foo..bar", ".foo", "foo.", "foo.>.bar"] {
        c.send(format!("SUB {bad} 1\r\nPING\r\n").as_bytes());
        let expect = b"-ERR 'Invalid Subject'\r\nPONG\r\n";
        let got = c.read_exact_bytes(expect.len(), WAIT);
        assert_eq!(got, expect, "SUB {bad}: got {}", show(&got));
    }
    // Still usable, and sid 1 was never registered: it can be used now.
    c.send(b"SUB ok 1\r\nPUB ok 2\r\nhi\r\n");
    c.expect(b"MSG ok 1 2\r\nhi\r\n");
    c.ping_pong();
}

#[test]
fn invalid_publish_subject_keeps_the_connection() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"SUB > 1\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    for bad in ["foo.*", "foo.>", "*", ">", "foo..bar"] {
        // The payload is consumed with the operation: `hi` is not read as an operation.
        c.send(format!("PUB {bad} 2\r\nhi\r\nPING\r\n").as_bytes());
        let expect = b"-ERR 'Invalid Publish Subject'\r\nPONG\r\n";
        let got = c.read_exact_bytes(expect.len(), WAIT);
        assert_eq!(got, expect, "PUB {bad}: got {}", show(&got));
    }
    c.send(b"PUB fine 2\r\nok\r\n");
    c.expect(b"MSG fine 1 2\r\nok\r\n");
    c.ping_pong();
}

/// `UNSUB <sid> <max>` is enforced by the server, not only by clients.
#[test]
fn unsub_with_max_delivers_exactly_max() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"SUB cap 1\r\nUNSUB 1 3\r\nSUB cap 2\r\n");
    for i in 0..10 {
        c.send(format!("PUB cap 1\r\n{i}\r\n").as_bytes());
    }
    let mut for_1 = Vec::new();
    let mut for_2 = Vec::new();
    while for_2.len() < 10 {
        let m = c.read_msg(WAIT);
        match m.sid.as_str() {
            "1" => for_1.push(m.payload),
            "2" => for_2.push(m.payload),
            other => panic!("unexpected sid {other}"),
        }
    }
    // Deliveries of one message to both sids leave the shard together: anything more for
    // sid 1 would come before this PONG.
    let rest = c.flush();
    assert!(rest.is_empty(), "unexpected: {}", show(&rest));
    assert_eq!(for_1, [b"0", b"1", b"2"]);
    let expected: Vec<Vec<u8>> = (0..10).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(for_2, expected);

    // UNSUB with a max already reached removes the subscription at once.
    c.send(b"SUB cap 3\r\n");
    c.send(b"PUB cap 1\r\na\r\n");
    let m = c.read_msg(WAIT);
    let m2 = c.read_msg(WAIT);
    let mut sids = [m.sid, m2.sid];
    sids.sort();
    assert_eq!(sids, ["2", "3"]);
    c.send(b"UNSUB 3 1\r\nPUB cap 1\r\nb\r\n");
    let m = c.read_msg(WAIT);
    assert_eq!((m.sid.as_str(), &m.payload[..]), ("2", &b"b"[..]));
    let rest = c.flush();
    assert!(rest.is_empty(), "unexpected: {}", show(&rest));
}

/// Headers pass through untouched to clients that declared `headers: true`; a client that
/// did not gets the payload alone in a plain `MSG`.
#[test]
fn hpub_delivers_hmsg_exactly() {
    let broker = Broker::start();
    let mut h = RawClient::connect(broker.addr());
    h.send(b"CONNECT {\"headers\":true}\r\nSUB hdr 1\r\n");
    h.ping_pong();
    let mut plain = RawClient::connect(broker.addr());
    plain.send(b"SUB hdr 9\r\n");
    plain.ping_pong();

    let headers = b"NATS/1.0\r\nA: 1\r\nA: 2\r\nB: x y\r\n\r\n";
    let payload = b"hello";
    let mut publ = RawClient::connect(broker.addr());
    publ.send(b"CONNECT {\"headers\":true}\r\n");
    publ.send(
        format!(
            "HPUB hdr reply.to {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .as_bytes(),
    );
    publ.send(headers);
    publ.send(payload);
    publ.send(b"\r\n");
    publ.ping_pong();

    let expect = [
        format!(
            "HMSG hdr 1 reply.to {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .as_bytes(),
        headers,
        payload,
        b"\r\n",
    ]
    .concat();
    h.expect(&expect);
    plain.expect(b"MSG hdr 9 reply.to 5\r\nhello\r\n");
}

/// With `--sequence-headers`, a client that accepts headers gets each stored message's
/// shard and sequence as `Tern-Shard` and `Tern-Seq` headers, at the end of the message's
/// own block or in a block of their own; a client that does not gets the plain `MSG`.
#[test]
fn stored_messages_carry_their_shard_and_sequence_as_headers() {
    let broker = Broker::with_args(&["--sequence-headers"]);
    let subject = "seq";
    let mut h = RawClient::connect(broker.addr());
    h.send(format!("CONNECT {{\"headers\":true}}\r\nSUB {subject} 1\r\n").as_bytes());
    h.ping_pong();
    let mut plain = RawClient::connect(broker.addr());
    plain.send(format!("SUB {subject} 9\r\n").as_bytes());
    plain.ping_pong();

    // Published on worker 1: shard 1 sequences it.
    let mut publ = RawClient::connect_on_worker(broker.addr(), 1, broker.workers());
    publ.send(b"CONNECT {\"headers\":true}\r\n");
    publ.send(format!("PUB {subject} 5\r\nfirst\r\n").as_bytes());
    let headers = b"NATS/1.0\r\nA: 1\r\n\r\n";
    publ.send(format!("HPUB {subject} {} {}\r\n", headers.len(), headers.len() + 6).as_bytes());
    publ.send(headers);
    publ.send(b"second\r\n");
    publ.ping_pong();

    let block = b"NATS/1.0\r\nTern-Shard: 1\r\nTern-Seq: 1\r\n\r\n";
    let first = [
        format!("HMSG {subject} 1 {} {}\r\n", block.len(), block.len() + 5).as_bytes(),
        block,
        b"first\r\n",
    ]
    .concat();
    h.expect(&first);
    let block = b"NATS/1.0\r\nA: 1\r\nTern-Shard: 1\r\nTern-Seq: 2\r\n\r\n";
    let second = [
        format!("HMSG {subject} 1 {} {}\r\n", block.len(), block.len() + 6).as_bytes(),
        block,
        b"second\r\n",
    ]
    .concat();
    h.expect(&second);
    plain.expect(format!("MSG {subject} 9 5\r\nfirst\r\n").as_bytes());
    plain.expect(format!("MSG {subject} 9 6\r\nsecond\r\n").as_bytes());
}

/// A request nobody subscribes to gets a `503` status message on its reply subject, for a
/// client that asked for it (`no_responders` with `headers`).
#[test]
fn no_responders_status_message() {
    let broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"CONNECT {\"headers\":true,\"no_responders\":true}\r\n");
    c.send(b"SUB _INBOX.me.* 1\r\n");
    c.send(b"PUB nobody.listens _INBOX.me.1 2\r\nhi\r\n");
    c.expect(b"HMSG _INBOX.me.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n");
    // The status goes to the requester alone: another connection subscribed to the same
    // inbox gets nothing. A marker published to the inbox afterwards is routed by the same
    // shard after the status, so it is the first thing the other connection may see.
    let mut other = RawClient::connect(broker.addr());
    other.send(b"SUB _INBOX.me.* 5\r\n");
    other.ping_pong();
    c.send(b"PUB nobody.listens _INBOX.me.2 2\r\nhi\r\n");
    c.expect(b"HMSG _INBOX.me.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n");
    c.send(b"PUB _INBOX.me.2 6\r\nmarker\r\n");
    other.expect(b"MSG _INBOX.me.2 5 6\r\nmarker\r\n");
    c.expect(b"MSG _INBOX.me.2 1 6\r\nmarker\r\n");
}

// ---------------------------------------------------------------------------------------
// Server pings
// ---------------------------------------------------------------------------------------

#[test]
fn silent_client_is_pinged_then_closed_as_stale() {
    let broker = Broker::with_args(&["--ping-interval", "200ms", "--ping-max", "2"]);
    let mut c = RawClient::connect(broker.addr());
    let start = Instant::now();
    c.expect_within(b"PING\r\n", Duration::from_secs(5));
    let first_ping = start.elapsed();
    // Not answering: a second ping, then the stale error, then the close.
    let (rest, end) = c.read_to_close(Duration::from_secs(10));
    let total = start.elapsed();
    assert_eq!(
        rest,
        b"PING\r\n-ERR 'Stale Connection'\r\n",
        "got {} then {end:?}",
        show(&rest)
    );
    assert!(
        first_ping >= Duration::from_millis(150),
        "pinged too early: {first_ping:?}"
    );
    assert!(
        total >= Duration::from_millis(500),
        "closed too early: {total:?}"
    );
}

#[test]
fn client_answering_pings_stays_connected() {
    let broker = Broker::with_args(&["--ping-interval", "200ms", "--ping-max", "2"]);
    let mut c = RawClient::connect(broker.addr());
    let start = Instant::now();
    let mut pings = 0;
    // Ten intervals: far more than ping_max * interval.
    while start.elapsed() < Duration::from_secs(2) {
        c.expect_within(b"PING\r\n", Duration::from_secs(5));
        pings += 1;
        c.send(b"PONG\r\n");
    }
    assert!(pings >= 3, "only {pings} pings in 2 s");
    // Still open and working (a server PING may come before our PONG).
    c.send(b"PING\r\n");
    let got = c.read_until(b"PONG\r\n", WAIT);
    assert!(
        got == b"PONG\r\n" || got == b"PING\r\nPONG\r\n",
        "got {}",
        show(&got)
    );
}

// ---------------------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------------------

#[test]
fn slow_consumer_is_closed_and_others_get_everything() {
    // Small messages, paced: the good subscriber is never more than a few KiB behind.
    // (`burst_larger_than_max_pending_reaches_a_fast_reader` covers bursts.) With the
    // `disconnect` policy, a consumer whose queue stays full past the grace time is closed.
    const SIZE: usize = 1024;
    const COUNT: usize = 12 * 1024; // 12 MiB in all: more than any socket buffers hold
    let broker = Broker::with_args(&[
        "--max-pending",
        "64KiB",
        "--max-payload",
        "16KiB",
        "--sub-queue-bytes",
        "1MiB",
        "--slow-consumer",
        "disconnect",
        "--slow-consumer-grace",
        "200ms",
    ]);

    // Never reads (after its PONG), and has a small receive window.
    let mut slow = RawClient::connect_small_rcvbuf(broker.addr(), 16 * 1024);
    slow.read_info();
    slow.send(b"SUB feed 1\r\n");
    slow.ping_pong();

    let mut good = RawClient::connect(broker.addr());
    good.send(b"SUB feed 1\r\n");
    good.ping_pong();
    // The good subscriber reads as fast as it can and reports its progress; the publisher
    // never gets more than a few messages ahead of it, so the good subscriber's queue never
    // nears the limit while the slow one's grows without bound.
    let (progress, seen) = std::sync::mpsc::channel::<usize>();
    let reader = std::thread::spawn(move || {
        for i in 0..COUNT {
            let m = good.read_msg(Duration::from_secs(30));
            assert_eq!(m.payload.len(), SIZE, "message {i}");
            let seq = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
            assert_eq!(seq as usize, i, "messages out of order");
            let _ = progress.send(i + 1);
        }
        good.ping_pong();
    });

    let mut publ = RawClient::connect(broker.addr());
    let mut received = 0;
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(16) {
        let mut batch = Vec::with_capacity(chunk.len() * (SIZE + 32));
        for &i in chunk {
            batch.extend_from_slice(format!("PUB feed {SIZE}\r\n").as_bytes());
            let mut payload = vec![b'x'; SIZE];
            payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(b"\r\n");
        }
        publ.send(&batch);
        let sent = chunk[chunk.len() - 1] + 1;
        while received + 32 < sent {
            match seen.recv_timeout(Duration::from_secs(30)) {
                Ok(n) => received = n,
                Err(_) => break, // the reader failed; its join below says why
            }
        }
    }
    publ.ping_pong();
    reader.join().expect("the good subscriber failed");
    // Its queue stays full (it reads nothing) for longer than the grace time.
    std::thread::sleep(Duration::from_secs(1));

    // The slow one was closed: what it can still read ends with EOF or a reset.
    let (tail, end) = slow.drain_to_close(Duration::from_secs(30), 64);
    let _ = tail; // `-ERR 'Slow Consumer'` may or may not have fitted in its buffer.
    assert!(
        matches!(end, ReadEnd::Eof | ReadEnd::Error(_)),
        "slow consumer not closed: {end:?}"
    );
    publ.ping_pong();
}

/// A subscriber that falls behind on large messages (queued by reference, several buffers
/// per message) still gets every byte, in order, once it reads.
#[test]
fn backlog_of_large_messages_is_delivered_intact() {
    const SIZE: usize = 8 * 1024;
    const COUNT: usize = 512; // 4 MiB
    let broker = Broker::start();
    let mut sub = RawClient::connect_small_rcvbuf(broker.addr(), 32 * 1024);
    sub.read_info();
    sub.send(b"SUB big.backlog 1\r\n");
    sub.ping_pong();
    let mut publ = RawClient::connect(broker.addr());
    let mut batch = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..COUNT {
        let payload: Vec<u8> = (0..SIZE).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        batch.extend_from_slice(format!("PUB big.backlog {SIZE}\r\n").as_bytes());
        batch.extend_from_slice(&payload);
        batch.extend_from_slice(b"\r\n");
        payloads.push(payload);
    }
    publ.send(&batch);
    publ.ping_pong();
    for (i, want) in payloads.iter().enumerate() {
        let m = sub.read_msg(Duration::from_secs(30));
        assert_eq!(m.payload.len(), SIZE, "message {i}");
        if m.payload != *want {
            let at = m
                .payload
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "message {i} corrupted at byte {at}: got {} want {}",
                show(&m.payload[at..(at + 8).min(SIZE)]),
                show(&want[at..(at + 8).min(SIZE)])
            );
        }
    }
    sub.ping_pong();
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

/// One loop turn may queue more than `max_pending` bytes to a subscriber at once (here a
/// publisher's single write of four times the limit, all routed on one worker). A client
/// that reads is not a slow consumer: the broker writes what the socket takes before it
/// judges, and the subscriber gets every message.
#[test]
fn burst_larger_than_max_pending_reaches_a_fast_reader() {
    const SIZE: usize = 8 * 1024;
    const COUNT: usize = 32; // 256 KiB against a 64 KiB limit
    let broker = Broker::with_args(&["--max-pending", "64KiB", "--max-payload", "16KiB"]);
    let workers = broker.workers();
    let subject = "burst";
    let mut sub = RawClient::connect_on_worker(broker.addr(), 0, workers);
    sub.send(format!("SUB {subject} 1\r\n").as_bytes());
    sub.ping_pong();
    let reader = std::thread::spawn(move || {
        for i in 0..COUNT {
            let m = sub.read_msg(Duration::from_secs(10));
            assert_eq!(m.payload.len(), SIZE, "message {i}");
            assert_eq!(m.payload[0], i as u8, "message {i} out of order");
        }
        sub.ping_pong();
    });
    let mut publ = RawClient::connect_on_worker(broker.addr(), 0, workers);
    let mut batch = Vec::new();
    for i in 0..COUNT {
        batch.extend_from_slice(format!("PUB {subject} {SIZE}\r\n").as_bytes());
        batch.extend_from_slice(&vec![i as u8; SIZE]);
        batch.extend_from_slice(b"\r\n");
    }
    publ.send(&batch);
    publ.ping_pong();
    reader.join().expect("the fast reader got every message");
}

/// SIGTERM: queued messages still reach their subscriber, then every connection is closed
/// and ternd exits 0.
#[test]
fn sigterm_flushes_queued_messages_and_exits_zero() {
    // Payloads under 2 KiB (copied into the connection's queue; larger ones are queued by
    // reference, see `backlog_of_large_messages_is_delivered_intact`).
    const SIZE: usize = 1024;
    const COUNT: usize = 8 * 1024; // 8 MiB: more than the socket buffers hold
    let mut broker = Broker::with_args(&["--shutdown-timeout", "20s"]);
    let workers = broker.workers();
    // Everything on worker 0: when the publisher has its PONG, every delivery is queued on
    // the subscriber's connection.
    let subject = "drain";
    let mut sub = loop {
        let mut c = RawClient::connect_small_rcvbuf(broker.addr(), 64 * 1024);
        c.read_info();
        if c.worker(workers) == 0 {
            break c;
        }
    };
    sub.send(format!("SUB {subject} 1\r\n").as_bytes());
    sub.ping_pong();
    let mut publ = RawClient::connect_on_worker(broker.addr(), 0, workers);
    let mut batch = Vec::new();
    for i in 0..COUNT {
        batch.extend_from_slice(format!("PUB {subject} {SIZE}\r\n").as_bytes());
        let mut payload = vec![b'd'; SIZE];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        batch.extend_from_slice(&payload);
        batch.extend_from_slice(b"\r\n");
    }
    publ.send(&batch);
    publ.ping_pong();

    let pid = broker.pid().expect("running");
    let addr = broker.addr();
    let stopper = std::thread::spawn(move || {
        let status = broker.stop();
        (status, broker)
    });
    // While it flushes (the subscriber has not read anything yet), ternd accepts no new
    // connection: the listeners close as soon as the shutdown begins.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..COUNT {
        let m = sub.read_msg(Duration::from_secs(30));
        let seq = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
        assert_eq!(
            (seq as usize, m.payload.len()),
            (i, SIZE),
            "message {i} (pid {pid})"
        );
    }
    let (rest, end) = sub.read_to_close(Duration::from_secs(30));
    assert!(rest.is_empty(), "after the messages: {}", show(&rest));
    assert!(matches!(end, ReadEnd::Eof | ReadEnd::Error(_)));
    let (status, broker) = stopper.join().expect("stop failed");
    assert!(
        status.success(),
        "ternd exited with {status:?}\n{}",
        broker.stderr()
    );
    // No new connections after the stop.
    assert!(std::net::TcpStream::connect(broker.addr()).is_err());
    drop(publ);
}

/// SIGINT stops ternd as cleanly as SIGTERM: connections are closed and it exits 0.
#[test]
fn sigint_closes_connections_and_exits_zero() {
    let mut broker = Broker::start();
    let mut c = RawClient::connect(broker.addr());
    c.send(b"SUB x 1\r\n");
    c.ping_pong();
    broker.signal(libc::SIGINT);
    let (rest, end) = c.read_to_close(Duration::from_secs(10));
    assert!(rest.is_empty(), "got {}", show(&rest));
    assert!(matches!(end, ReadEnd::Eof | ReadEnd::Error(_)));
    let status = broker.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "ternd exited with {status:?}\n{}",
        broker.stderr()
    );
}

#[test]
fn a_publish_before_an_unsub_is_delivered_as_nats_server_does() {
    // The connection's own publish, sent ahead of its UNSUB in the same write, is
    // delivered (nats-server handles both in order); nothing after the UNSUB is. A sid
    // used again at once is a new subscription that gets only what comes after it.
    let broker = Broker::with_args(&["--workers", "2", "--monitor", "127.0.0.1:0"]);
    // Connections land on either worker: a few of them.
    for _ in 0..4 {
        let mut c = RawClient::connect(broker.addr());
        c.send(b"CONNECT {\"verbose\":false}\r\nSUB x 1\r\nPING\r\n");
        c.expect(b"PONG\r\n");
        c.send(b"PUB x 2\r\nhi\r\nUNSUB 1\r\nPUB x 5\r\nafter\r\nPING\r\n");
        c.expect(b"MSG x 1 2\r\nhi\r\nPONG\r\n");
        c.send(b"SUB x 1\r\nPUB x 3\r\nnew\r\nUNSUB 1\r\nPING\r\n");
        c.expect(b"MSG x 1 3\r\nnew\r\nPONG\r\n");
    }
    // Every ended subscription is gone once its barriers came back.
    let deadline = Instant::now() + WAIT;
    while broker.varz()["subscriptions"] != 0 {
        assert!(Instant::now() < deadline, "{}", broker.varz());
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! One misbehaving client cannot hurt the others: while connections send garbage (random
//! bytes, huge lines, invalid operations) over and over, two well-behaved clients keep
//! exchanging messages and get every one, in order; each garbage connection is told why
//! (`-ERR`) and closed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{show, Broker, RawClient, ReadEnd, XorShift};

/// The kinds of garbage, each with the error it must produce (`None`: any `-ERR`).
fn garbage(kind: usize, rng: &mut XorShift) -> (Vec<u8>, Option<&'static [u8]>) {
    match kind % 10 {
        0 => (rng.bytes(64 * 1024), None),
        1 => {
            let mut line = b"PUB ".to_vec();
            line.extend(std::iter::repeat_n(b'x', 100_000));
            (line, Some(b"-ERR 'Maximum Control Line Exceeded'\r\n"))
        }
        2 => (
            b"HELLO WORLD\r\n".to_vec(),
            Some(b"-ERR 'Unknown Protocol Operation'\r\n"),
        ),
        3 => (
            b"PUB foo 999999999\r\n".to_vec(),
            Some(b"-ERR 'Maximum Payload Violation'\r\n"),
        ),
        4 => (b"CONNECT {not json\r\n".to_vec(), None),
        5 => (b"PUB foo 3\r\nabcdef\r\n".to_vec(), None),
        6 => (b"SUB\r\n".to_vec(), None),
        7 => (b"HPUB foo 100 10\r\n".to_vec(), None),
        8 => (
            b"SUB foo..bar 1\r\nPUB a.* 1\r\nx\r\n\x00\x01\x02\xff\r\n".to_vec(),
            Some(
                b"-ERR 'Invalid Subject'\r\n-ERR 'Invalid Publish Subject'\r\n\
                  -ERR 'Unknown Protocol Operation'\r\n",
            ),
        ),
        _ => {
            // A valid start, then garbage in the middle of a stream of operations.
            let mut ops = b"SUB iso.garbage 1\r\nPING\r\n".to_vec();
            ops.extend(rng.bytes(4096));
            ops.extend(b"\r\n");
            (ops, None)
        }
    }
}

/// Sends one kind of garbage on a fresh connection and checks it is refused and closed.
fn one_garbage_connection(addr: std::net::SocketAddr, kind: usize, rng: &mut XorShift) {
    let (bytes, expected) = garbage(kind, rng);
    let mut c = RawClient::connect(addr);
    // The server may close before it has read everything; a failed write is fine.
    let _ = c.try_send(&bytes);
    let (rest, end) = c.read_to_close(Duration::from_secs(10));
    assert!(
        matches!(end, ReadEnd::Eof | ReadEnd::Error(_)),
        "garbage kind {kind}: {end:?}"
    );
    // Kind 9 starts with a PING, answered before the garbage.
    let rest = rest.strip_prefix(b"PONG\r\n").unwrap_or(&rest);
    match expected {
        Some(e) => assert_eq!(rest, e, "garbage kind {kind}: got {}", show(rest)),
        None => {
            let last = rest
                .split_inclusive(|&b| b == b'\n')
                .next_back()
                .unwrap_or_default();
            assert!(
                rest.starts_with(b"-ERR '") && last.starts_with(b"-ERR '"),
                "garbage kind {kind}: no -ERR before the close, got {}",
                show(rest)
            );
        }
    }
}

#[test]
fn garbage_clients_do_not_disturb_good_ones() {
    const BATCH: usize = 100;
    const ROUNDS: usize = 200;
    const MIN_GARBAGE: usize = 60;
    let broker = Broker::start();
    let addr = broker.addr();
    let workers = broker.workers();

    // Two good clients on different workers, each subscribed to its own subject.
    let mut good = Vec::new();
    for (me, (mine, theirs)) in [("iso.a", "iso.b"), ("iso.b", "iso.a")]
        .into_iter()
        .enumerate()
    {
        let mut c = RawClient::connect_on_worker(addr, me % workers, workers);
        c.send(format!("SUB {mine} 1\r\n").as_bytes());
        c.ping_pong();
        good.push((c, mine, theirs));
    }

    // Garbage connections, one after the other, until the good clients are done (and at
    // least MIN_GARBAGE of them).
    let good_done = Arc::new(AtomicBool::new(false));
    let garbage_count = Arc::new(AtomicUsize::new(0));
    let garbage_thread = {
        let done = Arc::clone(&good_done);
        let count = Arc::clone(&garbage_count);
        std::thread::spawn(move || {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            let start = Instant::now();
            let mut i = 0;
            while i < MIN_GARBAGE || !done.load(Ordering::Acquire) {
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "good clients never finished"
                );
                one_garbage_connection(addr, i, &mut rng);
                i += 1;
                count.store(i, Ordering::Release);
            }
        })
    };

    // Each good client publishes a batch to the other's subject, then reads the batch the
    // other published to its own, ROUNDS times: every message, in order.
    let threads: Vec<_> = good
        .into_iter()
        .map(|(mut c, mine, theirs)| {
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let mut batch = Vec::new();
                    for i in 0..BATCH {
                        let payload = format!("{round}:{i}");
                        batch.extend_from_slice(
                            format!("PUB {theirs} {}\r\n{payload}\r\n", payload.len()).as_bytes(),
                        );
                    }
                    c.send(&batch);
                    for i in 0..BATCH {
                        let m = c.read_msg(Duration::from_secs(20));
                        assert_eq!(m.subject, mine);
                        assert_eq!(
                            String::from_utf8_lossy(&m.payload),
                            format!("{round}:{i}"),
                            "lost or reordered message"
                        );
                    }
                }
                c
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let garbage_during = garbage_count.load(Ordering::Acquire);
    good_done.store(true, Ordering::Release);
    let garbage_result = garbage_thread.join();
    let mut clients: Vec<RawClient> = results
        .into_iter()
        .map(|r| r.expect("a good client failed"))
        .collect();
    garbage_result.expect("a garbage connection was not refused and closed properly");
    assert!(
        garbage_during > 0,
        "no garbage connection completed while the good clients ran"
    );
    for c in &mut clients {
        c.ping_pong();
    }
    RawClient::connect(addr).ping_pong();
}

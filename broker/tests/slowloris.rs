//! Slow clients that never finish what they started: garbage or a control line trickled a
//! few bytes a second, a payload trickled forever, a binary handshake left half done. Each
//! must be closed within a bounded time, with its error, while clients that send whole
//! operations with long pauses between them (a person at `telnet`) stay open.
//!
//! Timings here are deadlines for the close, generous for a loaded machine; nothing asserts
//! how fast the broker was.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{show, Broker, RawClient, ReadEnd};

/// A thread writing `bytes` to streams, `per_tick` bytes per stream every `every`, until they
/// are all written or every stream has failed. Dropping it (at the end of a test, even by a
/// panic) stops the thread and waits for it.
struct Trickle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trickle {
    fn start(streams: Vec<TcpStream>, bytes: Vec<u8>, per_tick: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut open: Vec<Option<TcpStream>> = streams.into_iter().map(Some).collect();
            for chunk in bytes.chunks(per_tick) {
                if stopped.load(Ordering::Relaxed) || open.iter().all(Option::is_none) {
                    return;
                }
                for slot in &mut open {
                    if let Some(s) = slot {
                        if s.write_all(chunk).is_err() {
                            *slot = None;
                        }
                    }
                }
                std::thread::sleep(every);
            }
        });
        Trickle {
            stop,
            thread: Some(thread),
        }
    }

    /// Trickles to every client, one byte every 500 ms (2 bytes a second).
    fn slowly_to(clients: &[RawClient], bytes: &[u8]) -> Self {
        let streams = clients
            .iter()
            .map(|c| c.stream.try_clone().unwrap())
            .collect();
        Trickle::start(streams, bytes.to_vec(), 1, Duration::from_millis(500))
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_trickled_payload_is_not_activity_and_ends_stale() {
    let broker = Broker::with_args(&["--ping-interval", "300ms", "--ping-max", "1"]);
    let mut c = RawClient::connect(broker.addr());
    // The control line is whole; its payload then comes a byte every 100 ms, three times
    // faster than the ping interval. Bytes that complete nothing must not hold the ping
    // off: the client is pinged, cannot answer from inside its payload, and is stale.
    c.send(b"PUB slow.payload 1000\r\n");
    let writer = Trickle::start(
        vec![c.stream.try_clone().unwrap()],
        vec![b'x'; 1000],
        1,
        Duration::from_millis(100),
    );
    let (said, end) = c.read_to_close(Duration::from_secs(20));
    drop(writer);
    assert!(
        !matches!(end, ReadEnd::Timeout),
        "still open: {}",
        show(&said)
    );
    assert_eq!(
        said,
        b"PING\r\n-ERR 'Stale Connection'\r\n",
        "got {}",
        show(&said)
    );
}

/// How many slow clients each test runs at once.
const CLIENTS: usize = 100;
/// The deadline for every slow client to be closed: auth_timeout is 1 s in these tests,
/// checked every 100 ms; the rest is room for a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

/// `n` text clients that have read their `INFO`.
fn text_clients(broker: &Broker, n: usize) -> Vec<RawClient> {
    (0..n).map(|_| RawClient::connect(broker.addr())).collect()
}

/// Reads every client to its close, and checks each was told exactly `error` first.
fn all_closed_with(clients: &mut [RawClient], error: &[u8]) {
    for c in clients {
        let said = c.read_to_close(CLOSE_WITHIN).0;
        assert_eq!(said, error, "got {}", show(&said));
    }
}

fn varz_counter(broker: &Broker, key: &str) -> u64 {
    broker.varz()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("/varz has no counter {key}"))
}

#[test]
fn trickled_garbage_is_refused_at_its_first_byte() {
    let broker = Broker::with_args(&["--auth-timeout", "1s"]);
    let mut clients = text_clients(&broker, CLIENTS);
    // 2 bytes a second, and never a line end.
    let _writer = Trickle::slowly_to(&clients, &b"xy".repeat(1000));
    all_closed_with(&mut clients, b"-ERR 'Unknown Protocol Operation'\r\n");
}

#[test]
fn a_trickled_first_line_ends_in_authentication_timeout() {
    let broker = Broker::with_args(&["--auth-timeout", "1s", "--monitor", "127.0.0.1:0"]);
    let mut clients = text_clients(&broker, CLIENTS);
    // A valid operation, 2 bytes a second: its line end would come after 9 s.
    let writer = Trickle::slowly_to(&clients, b"SUB slow.loris 1\r\n");
    all_closed_with(&mut clients, b"-ERR 'Authentication Timeout'\r\n");
    drop(writer);
    assert_eq!(varz_counter(&broker, "handshake_timeouts"), CLIENTS as u64);
    assert_eq!(
        broker.varz()["closed_by_reason"]["handshake_timeout"],
        CLIENTS as u64
    );
}

#[test]
fn blank_lines_do_not_count_as_a_first_operation() {
    let broker = Broker::with_args(&["--auth-timeout", "1s"]);
    let mut c = RawClient::connect(broker.addr());
    let _writer = Trickle::start(
        vec![c.stream.try_clone().unwrap()],
        b"\r\n".repeat(100),
        2,
        Duration::from_millis(300),
    );
    all_closed_with(
        std::slice::from_mut(&mut c),
        b"-ERR 'Authentication Timeout'\r\n",
    );
}

#[test]
fn a_later_line_trickled_ends_in_control_line_timeout() {
    let broker = Broker::with_args(&["--auth-timeout", "1s", "--monitor", "127.0.0.1:0"]);
    let mut clients = text_clients(&broker, 10);
    for c in &mut clients {
        c.ping_pong();
    }
    let writer = Trickle::slowly_to(&clients, b"SUB slow.loris 1\r\n");
    all_closed_with(
        &mut clients,
        b"-ERR 'Control Line Timeout: no line end within 1s'\r\n",
    );
    drop(writer);
    assert_eq!(varz_counter(&broker, "control_line_timeouts"), 10);
    assert_eq!(varz_counter(&broker, "handshake_timeouts"), 0);
}

#[test]
fn a_binary_handshake_left_after_the_preface_is_closed_with_an_error() {
    use tern_protocol::binary::{ErrorCode, Preface, ServerFrame};

    let broker = Broker::with_args(&["--auth-timeout", "1s", "--monitor", "127.0.0.1:0"]);
    let mut clients: Vec<common::BinClient> = (0..CLIENTS)
        .map(|_| {
            let mut c = common::BinClient::connect_bare(broker.binary_addr());
            let mut preface = bytes::BytesMut::new();
            Preface::default().encode(&mut preface);
            c.send_raw(&preface);
            c
        })
        .collect();
    // One that sends nothing at all: closed too, and told nothing.
    let mut mute = common::BinClient::connect_bare(broker.binary_addr());
    for c in &mut clients {
        match c.frames_to_close().as_slice() {
            [ServerFrame::Error(e)] => {
                assert_eq!((e.code, e.fatal), (ErrorCode::HelloExpected, true));
                assert_eq!(&e.message[..], b"no HELLO within 1s (auth_timeout)");
            }
            other => panic!("expected one fatal ERROR, got {other:?}"),
        }
    }
    assert!(mute.frames_to_close().is_empty());
    assert_eq!(
        varz_counter(&broker, "handshake_timeouts"),
        CLIENTS as u64 + 1
    );
}

#[test]
fn a_person_at_telnet_with_long_pauses_stays_connected() {
    let broker = Broker::with_args(&["--auth-timeout", "300ms"]);
    let mut c = RawClient::connect(broker.addr());
    let pause = Duration::from_millis(900);
    // Whole lines, each followed by a pause three times auth_timeout; the payload comes on
    // its own line after a pause too.
    for line in [
        &b"sub talk.* 1\r\n"[..],
        b"\r\n",
        b"pub talk.here 5\r\n",
        b"hello\r\n",
    ] {
        c.send(line);
        std::thread::sleep(pause);
    }
    let m = c.read_msg(common::WAIT);
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("talk.here", &b"hello"[..])
    );
    c.send(b"ping\r\n");
    std::thread::sleep(pause);
    c.expect(b"PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_client_connects_as_usual() {
    use futures::StreamExt;

    let broker = Broker::with_args(&["--auth-timeout", "200ms"]);
    let client = async_nats::ConnectOptions::new()
        .connect(broker.url())
        .await
        .expect("async-nats connects");
    let mut sub = client.subscribe("nats.ok").await.unwrap();
    client.flush().await.unwrap();
    // Longer than auth_timeout between operations: nothing is pending, nothing times out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.publish("nats.ok", "hi".into()).await.unwrap();
    let m = tokio::time::timeout(common::WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open");
    assert_eq!(&m.payload[..], b"hi");
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
}

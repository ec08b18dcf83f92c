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

/// Writes `bytes` to every stream, `per_tick` bytes per stream every `every`, until they are
/// all written, every stream has failed, or `stop` is set. Returns the thread.
fn trickle(
    streams: Vec<TcpStream>,
    bytes: Vec<u8>,
    per_tick: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut open: Vec<Option<TcpStream>> = streams.into_iter().map(Some).collect();
        for chunk in bytes.chunks(per_tick) {
            if stop.load(Ordering::Relaxed) || open.iter().all(Option::is_none) {
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
    })
}

/// Stops a trickle thread when the test ends, even by a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
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
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(Arc::clone(&stop));
    let writer = trickle(
        vec![c.stream.try_clone().unwrap()],
        vec![b'x'; 1000],
        1,
        Duration::from_millis(100),
        Arc::clone(&stop),
    );
    let (said, end) = c.read_to_close(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
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

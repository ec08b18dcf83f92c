//! Acknowledged publishes with a message id against the real broker, across a lost
//! connection: a proxy the test controls lets the publishes through to the broker and
//! holds back its acks, then cuts the connection. Each identified publish is sent again
//! on the next connection and its caller gets an ack (`duplicate`, the first copy's
//! place), nothing is delivered twice, and a publish without a message id fails with
//! `Disconnected` (its outcome is unknown).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use common::{wait_event, WAIT};
use tern_broker::{Args, Config, Server};
use tern_client::{Client, Error, Event, PublishOptions, ReconnectPolicy};

/// A broker with 2 shards that stores in `dir` (the broker deduplicates by message id
/// only when it stores).
fn storing_broker(dir: &std::path::Path) -> Server {
    let dir = dir.display().to_string();
    let args = [
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--binary-listen",
        "127.0.0.1:0",
        "--no-monitor",
        "--workers",
        "2",
        "--no-pin",
        "--data-dir",
        &dir,
        "--log-size",
        "4MiB",
    ];
    Server::start(Config::from_args(Args::parse_from(args)).unwrap()).unwrap()
}

/// A TCP proxy in front of the broker whose server-to-client direction can be held
/// (nothing the broker sends is passed on) and whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    hold: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (open, hold, stop) = (Arc::clone(&open), Arc::clone(&hold), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((down, _)) => {
                            down.set_nonblocking(false).unwrap();
                            let up = TcpStream::connect(upstream).unwrap();
                            let mut open = open.lock().unwrap();
                            for (from, to, held) in [(&down, &up, None), (&up, &down, Some(&hold))]
                            {
                                let (from, to) =
                                    (from.try_clone().unwrap(), to.try_clone().unwrap());
                                let held = held.map(Arc::clone);
                                std::thread::spawn(move || relay(from, to, held));
                            }
                            open.extend([down, up]);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("proxy accept: {e}"),
                    }
                }
            })
        };
        Proxy {
            addr,
            open,
            hold,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("tern://{}", self.addr)
    }

    /// Stops (or resumes) passing on what the broker sends.
    fn hold_replies(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Cuts every connection through the proxy, both ways; what was held is lost.
    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either ends; while `held` is set, what was read waits
/// (a read already under way when the hold starts is held too).
fn relay(mut from: TcpStream, mut to: TcpStream, held: Option<Arc<AtomicBool>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while held.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(2));
        }
        // After a cut this fails: what was held is lost with the connection.
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.hold_replies(false);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-client-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::new(Duration::from_millis(10), Duration::from_millis(100))
}

#[test]
fn acked_publishes_with_a_message_id_are_sent_again_after_a_lost_connection() {
    let dir = temp_dir("resend");
    let server = storing_broker(&dir);
    let upstream = server.binary_addr().unwrap();
    let proxy = Proxy::start(upstream);
    let watcher = Client::connect(&format!("tern://{upstream}")).unwrap();
    let sub = watcher.subscribe("once.>").unwrap();
    watcher.flush(WAIT).unwrap();
    let publisher = Client::builder()
        .reconnect(fast_reconnect())
        .connect(&proxy.url())
        .unwrap();
    let events = publisher.events();

    proxy.hold_replies(true); // the broker's acks will not reach the publisher
    let identified: Vec<_> = (0..3)
        .map(|i| {
            let options = PublishOptions::new().message_id(format!("order-{i}"));
            publisher
                .publish_with_ack(&format!("once.{i}"), i.to_string(), &options)
                .unwrap()
        })
        .collect();
    let anonymous = publisher
        .publish_with_ack("once.anon", "no id", &PublishOptions::new())
        .unwrap();
    // The broker got all four: they are delivered, each once.
    let first: Vec<_> = (0..4).map(|_| sub.recv_timeout(WAIT).unwrap()).collect();
    let subjects: Vec<_> = first.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["once.0", "once.1", "once.2", "once.anon"]);

    proxy.cut(); // the connection drops before any ack got through
    proxy.hold_replies(false);
    // Without a message id the outcome is unknown, and the caller is told so.
    let lost = anonymous.wait_timeout(WAIT);
    assert!(matches!(lost, Err(Error::Disconnected)), "{lost:?}");
    // With one, the publish is sent again on the next connection, and the broker
    // acknowledges the repeat with the first copy's place.
    for (pending, m) in identified.into_iter().zip(&first) {
        let ack = pending.wait_timeout(WAIT).unwrap();
        assert!(ack.duplicate, "{ack:?}");
        assert_eq!((ack.shard, ack.sequence), (m.shard, m.sequence));
    }
    wait_event(&events, |e| {
        matches!(e, Event::Reconnected(_)).then_some(())
    });
    // Nothing was delivered twice.
    publisher.flush(WAIT).unwrap();
    watcher.flush(WAIT).unwrap();
    assert!(matches!(
        sub.recv_timeout(Duration::from_millis(500)),
        Err(Error::Timeout)
    ));
    assert_eq!(publisher.buffered_bytes(), 0);
    // And the publisher goes on as before.
    let ack = publisher
        .publish_acked_with("once.3", "3", &PublishOptions::new().message_id("order-3"))
        .unwrap();
    assert!(!ack.duplicate);
    assert_eq!(sub.recv_timeout(WAIT).unwrap().subject, "once.3");
    publisher.close();
    watcher.close();
    server.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

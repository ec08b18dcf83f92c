//! A chaos proxy in front of `ternd`'s binary port: the soak's well-behaved `tern-client`s
//! connect through it, so it can cut their connections the way a network or a crash does,
//! and make them take their reconnect path.
//!
//! Owns: a listener on a free local port, and per accepted client one *link*: a
//! connection to the upstream address and two forwarding threads (client → broker, broker →
//! client). It cuts links two ways:
//!
//! - [`ChaosProxy::kill_one`]: one live link, chosen by the caller's random number, *mid
//!   frame*: the client → broker thread forwards only the first half of the next chunk it
//!   reads (or, if the client sends nothing within [`MID_FRAME_WAIT`], nothing more), then
//!   both sockets are closed with a reset (`SO_LINGER` 0). The broker sees a frame cut off
//!   and a reset; the client sees a reset.
//! - [`ChaosProxy::kill_all`]: every live link at once, with a reset: a reconnect storm.
//!
//! A link whose side closes normally is closed normally on the other side (`FIN`), so a
//! client's own close reaches the broker as one.
//!
//! Never: parses what it forwards, buffers more than one read per direction, or waits
//! without a deadline: reads wait at most [`POLL`] before looking at the link's state,
//! writes at most [`WRITE_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::SockRef;

use crate::scenario::soak::nothing_yet;

/// How long a forwarding read waits before it looks at its link's state again.
pub const POLL: Duration = Duration::from_millis(100);
/// How long a forwarding write may block (a peer that does not read for this long is
/// cut).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a mid-frame kill waits for the client to send something to cut in half.
pub const MID_FRAME_WAIT: Duration = Duration::from_millis(500);
/// Bytes one forwarding read takes at most.
const CHUNK: usize = 16 * 1024;

/// A link's state.
const OPEN: u8 = 0;
/// Cut it mid-frame, then reset both sides.
const KILL_MID_FRAME: u8 = 1;
/// Reset both sides now.
const KILL_NOW: u8 = 2;
/// Over (closed or cut).
const DONE: u8 = 3;

/// What the proxy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyStats {
    /// Client connections accepted and linked to the broker.
    pub links: u64,
    /// Client connections that could not be linked (the broker did not accept).
    pub upstream_failures: u64,
    /// Links cut mid-frame ([`ChaosProxy::kill_one`]).
    pub mid_frame_kills: u64,
    /// Of those, the ones cut inside a chunk the client had sent (the rest were cut
    /// while the client was silent).
    pub cut_inside_a_chunk: u64,
    /// Links cut by storms ([`ChaosProxy::kill_all`]), and the storms.
    pub storm_kills: u64,
    pub storms: u64,
}

struct Link {
    state: AtomicU8,
    client: TcpStream,
    server: TcpStream,
}

impl Link {
    fn live(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    /// Closes both sockets with a reset (the last descriptor closed sends it).
    fn reset(&self) {
        for s in [&self.client, &self.server] {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
        self.state.store(DONE, Ordering::Release);
    }
}

struct Shared {
    upstream: SocketAddr,
    /// The links, held weakly: the two forwarding threads own each link, so its sockets
    /// close (with the reset a kill asked for) as soon as both threads are done.
    links: Mutex<Vec<Weak<Link>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: AtomicBool,
    links_made: AtomicU64,
    upstream_failures: AtomicU64,
    cut_inside_a_chunk: AtomicU64,
}

/// A running chaos proxy; stopped (every link closed, every thread joined) by
/// [`ChaosProxy::stop`] or when dropped.
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    mid_frame_kills: u64,
    storm_kills: u64,
    storms: u64,
}

impl ChaosProxy {
    /// Listens on a free port of 127.0.0.1 and links each client to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<ChaosProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            links: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            links_made: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            cut_inside_a_chunk: AtomicU64::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("soak-proxy".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(ChaosProxy {
            addr,
            shared,
            accept: Some(accept),
            mid_frame_kills: 0,
            storm_kills: 0,
            storms: 0,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Links open now.
    pub fn live_links(&self) -> usize {
        self.live().len()
    }

    /// The links open now.
    fn live(&self) -> Vec<Arc<Link>> {
        self.prune();
        self.links()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|l| l.live())
            .collect()
    }

    /// Cuts live link number `pick % live` mid-frame; false when none is live.
    pub fn kill_one(&mut self, pick: u64) -> bool {
        let live = self.live();
        if live.is_empty() {
            return false;
        }
        let link = &live[(pick % live.len() as u64) as usize];
        if link
            .state
            .compare_exchange(OPEN, KILL_MID_FRAME, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.mid_frame_kills += 1;
        }
        true
    }

    /// Resets every live link now; returns how many.
    pub fn kill_all(&mut self) -> usize {
        let mut n = 0;
        for link in self.live() {
            if link
                .state
                .compare_exchange(OPEN, KILL_NOW, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                n += 1;
            }
        }
        self.storms += 1;
        self.storm_kills += n as u64;
        n
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            links: self.shared.links_made.load(Ordering::Relaxed),
            upstream_failures: self.shared.upstream_failures.load(Ordering::Relaxed),
            mid_frame_kills: self.mid_frame_kills,
            cut_inside_a_chunk: self.shared.cut_inside_a_chunk.load(Ordering::Relaxed),
            storm_kills: self.storm_kills,
            storms: self.storms,
        }
    }

    /// Stops accepting, closes every link and joins every thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for link in self.links().iter().filter_map(Weak::upgrade) {
            link.state.store(DONE, Ordering::Release);
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Link>>> {
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets links that are over, and joins their threads.
    fn prune(&self) {
        self.links().retain(|l| {
            l.upgrade()
                .is_some_and(|l| l.state.load(Ordering::Acquire) != DONE)
        });
        let mut threads = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (done, running): (Vec<_>, Vec<_>) =
            threads.drain(..).partition(JoinHandle::is_finished);
        *threads = running;
        drop(threads);
        for t in done {
            let _ = t.join();
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => link(client, shared),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Links a new client to the upstream and starts its two forwarding threads.
fn link(client: TcpStream, shared: &Arc<Shared>) {
    let server = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(_) => {
            shared.upstream_failures.fetch_add(1, Ordering::Relaxed);
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))
    };
    if setup(&client).and_then(|()| setup(&server)).is_err() {
        return;
    }
    let link = Arc::new(Link {
        state: AtomicU8::new(OPEN),
        client,
        server,
    });
    shared.links_made.fetch_add(1, Ordering::Relaxed);
    let mut threads = Vec::with_capacity(2);
    for upstream in [true, false] {
        let link = Arc::clone(&link);
        let shared = Arc::clone(shared);
        let t = thread::Builder::new()
            .name("soak-proxy-link".into())
            .spawn(move || forward(&link, upstream, &shared));
        if let Ok(t) = t {
            threads.push(t);
        }
    }
    shared
        .links
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&link));
    shared
        .threads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(threads);
}

/// Copies one direction of a link until it ends: client → broker when `upstream`.
fn forward(link: &Link, upstream: bool, shared: &Shared) {
    let (mut from, mut to) = if upstream {
        (&link.client, &link.server)
    } else {
        (&link.server, &link.client)
    };
    let mut buf = vec![0u8; CHUNK];
    let mut kill_seen: Option<Instant> = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            link.state.store(DONE, Ordering::Release);
            return;
        }
        match link.state.load(Ordering::Acquire) {
            DONE => return,
            KILL_NOW => return link.reset(),
            // Only the upstream direction cuts mid-frame; the other waits for it, up to
            // the wait (it then resets the link itself).
            KILL_MID_FRAME => {
                let since = *kill_seen.get_or_insert_with(Instant::now);
                if !upstream && since.elapsed() > MID_FRAME_WAIT + POLL {
                    return link.reset();
                }
                if upstream && since.elapsed() > MID_FRAME_WAIT {
                    return link.reset();
                }
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                // A normal close: pass it on.
                let _ = to.shutdown(Shutdown::Write);
                link.state.store(DONE, Ordering::Release);
                return;
            }
            Ok(n) => {
                let mid_frame = upstream && link.state.load(Ordering::Acquire) == KILL_MID_FRAME;
                let n = if mid_frame { n.div_ceil(2) } else { n };
                if to.write_all(&buf[..n]).is_err() {
                    return link.reset();
                }
                if mid_frame {
                    shared.cut_inside_a_chunk.fetch_add(1, Ordering::Relaxed);
                    return link.reset();
                }
            }
            Err(e) if nothing_yet(&e) => {}
            Err(_) => return link.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port, one thread per connection, until its listener drops.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn wait_for(mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn forwards_both_ways_and_kills_links() {
        let mut proxy = ChaosProxy::start(echo()).unwrap();
        let mut a = TcpStream::connect(proxy.addr()).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        wait_for(|| proxy.live_links() == 1);

        // A storm cuts it: the client sees the end of its connection.
        assert_eq!(proxy.kill_all(), 1);
        let mut rest = Vec::new();
        assert!(matches!(a.read_to_end(&mut rest), Ok(0) | Err(_)));
        wait_for(|| proxy.live_links() == 0);

        // A mid-frame kill forwards half of what the client sends next, then cuts.
        let mut b = TcpStream::connect(proxy.addr()).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        wait_for(|| proxy.live_links() == 1);
        assert!(proxy.kill_one(7));
        b.write_all(b"0123456789").unwrap();
        let mut echoed = Vec::new();
        let _ = b.read_to_end(&mut echoed);
        assert!(echoed.len() <= 5, "at most half came back: {echoed:?}");
        wait_for(|| proxy.live_links() == 0);
        let stats = proxy.stats();
        assert_eq!((stats.links, stats.storms, stats.storm_kills), (2, 1, 1));
        assert_eq!(stats.mid_frame_kills, 1);
        assert!(!proxy.kill_one(0), "nothing live to kill");
        proxy.stop();
    }
}

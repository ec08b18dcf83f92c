//! What an idle TLS connection keeps allocated once its handshake is done, measured by a
//! counting allocator: the bytes freed when its transport is dropped, after a handshake
//! with a rustls client in memory and one message each way. In its own test binary because
//! the allocator is global.
//!
//! `cargo test -p tern-transport --test tls_alloc -- --nocapture` prints the figures and
//! the blocks one connection holds.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::Arc;

use common::{client_decrypt, pump, Pki};
use rustls::{ClientConfig, ClientConnection, ServerConfig};
use tern_transport::{load_server_config, TlsLimits, TlsStart, Transport, WsConfig};

/// Counts the bytes each thread has live, and logs the sizes of the blocks it frees while
/// `LOGGING` is on.
struct Counting;

const LOG_SLOTS: usize = 64;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static LOGGING: Cell<bool> = const { Cell::new(false) };
    static LOGGED: Cell<usize> = const { Cell::new(0) };
    static LOG: [Cell<usize>; LOG_SLOTS] = const { [const { Cell::new(0) }; LOG_SLOTS] };
}

fn track(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

fn log_free(size: usize) {
    if LOGGING.try_with(Cell::get).unwrap_or(false) {
        let _ = LOGGED.try_with(|n| {
            let i = n.get();
            if i < LOG_SLOTS {
                let _ = LOG.try_with(|log| log[i].set(size));
            }
            n.set(i + 1);
        });
    }
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counting touches only const-initialised thread-locals
// without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
        log_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Connections measured per case; the figure is their mean (they are all alike).
const CONNS: usize = 16;

/// What one idle TLS connection may keep: rustls's connection state and the stream around
/// it (1,272 bytes, boxed), the traffic keys of both directions (560 bytes each with
/// AES-GCM on ring), the TLS 1.3 key schedule kept for key updates (640 + 224), two
/// record queues' slots (96 each) and the SNI, 3,466 bytes in all; no buffer. With
/// rustls's buffered `ServerConnection` an idle connection kept 7,449 bytes, 4,096 of them
/// its record buffer.
const IDLE_BOUND: isize = 4 * 1024;

/// The shared pieces, built once.
struct Setup {
    pki: Pki,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Setup {
    fn new() -> Self {
        let pki = Pki::new();
        let server = load_server_config(&pki.settings(false, false)).unwrap();
        let client = Arc::new(pki.client_config(None));
        Self {
            pki,
            server,
            client,
        }
    }
}

/// How the measured connections start.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tls(TlsStart),
    Wss,
}

/// A server transport after its handshake and one message each way, as a caller leaves
/// it idle, and its client.
fn connected(setup: &Setup, kind: Kind) -> (ClientConnection, Transport) {
    let mut client = common::client_on(Arc::clone(&setup.client));
    let mut server = match kind {
        Kind::Tls(start) => {
            Transport::tls(Arc::clone(&setup.server), start, TlsLimits::default()).unwrap()
        }
        Kind::Wss => Transport::websocket_tls(
            Arc::clone(&setup.server),
            TlsLimits::default(),
            Arc::new(WsConfig::default()),
        )
        .unwrap(),
    };
    let mut socket_out = Vec::new();
    if let Kind::Tls(TlsStart::PlainFirst) = kind {
        server.write(b"INFO {}\r\n", &mut socket_out).unwrap();
        server.start_tls().unwrap();
        socket_out.clear();
    }
    let mut app_in = Vec::new();
    pump(&mut client, &mut server, &mut app_in).unwrap();
    assert!(
        server.tls_session().unwrap().is_handshake_complete(),
        "{kind:?}"
    );
    let request = match kind {
        Kind::Tls(_) => b"CONNECT {}\r\nPING\r\n".to_vec(),
        Kind::Wss => common::upgrade_request("/", ""),
    };
    client.writer().write_all(&request).unwrap();
    pump(&mut client, &mut server, &mut app_in).unwrap();
    if let Kind::Wss = kind {
        let upgrade = b"CONNECT {}\r\nPING\r\n";
        client
            .writer()
            .write_all(&common::client_frame(
                common::FIN | common::BINARY,
                upgrade,
                common::KEY,
            ))
            .unwrap();
        pump(&mut client, &mut server, &mut app_in).unwrap();
        assert!(app_in.ends_with(upgrade), "{kind:?}");
    } else {
        assert_eq!(app_in, request, "{kind:?}");
    }
    server.write(b"PONG\r\n", &mut socket_out).unwrap();
    let answer = client_decrypt(&mut client, &socket_out);
    assert!(answer.ends_with(b"PONG\r\n"), "{kind:?}");
    (client, server)
}

/// The mean of the bytes one idle server transport of `kind` keeps (freed when it is
/// dropped), and the blocks the first one freed.
fn idle_bytes(setup: &Setup, kind: Kind) -> (isize, Vec<usize>) {
    // One first, for whatever rustls or the test initialises once.
    drop(connected(setup, kind));
    let pairs: Vec<_> = (0..CONNS).map(|_| connected(setup, kind)).collect();
    let mut freed = 0;
    let mut blocks = Vec::new();
    for (i, (client, server)) in pairs.into_iter().enumerate() {
        let before = live();
        if i == 0 {
            LOGGED.with(|n| n.set(0));
            LOGGING.with(|l| l.set(true));
        }
        drop(server);
        LOGGING.with(|l| l.set(false));
        freed += before - live();
        if i == 0 {
            let n = LOGGED.with(Cell::get).min(LOG_SLOTS);
            blocks = LOG.with(|log| log[..n].iter().map(Cell::get).collect());
        }
        drop(client);
    }
    (freed / CONNS as isize, blocks)
}

#[test]
fn an_idle_tls_connection_keeps_no_buffer() {
    let setup = Setup::new();
    for start in [TlsStart::Immediate, TlsStart::PlainFirst] {
        let (bytes, blocks) = idle_bytes(&setup, Kind::Tls(start));
        println!("tls {start:?}: {bytes} bytes per idle connection; blocks {blocks:?}");
        assert!(
            bytes <= IDLE_BOUND,
            "{start:?}: {bytes} bytes, blocks {blocks:?}"
        );
    }
    let _ = &setup.pki;
}

#[test]
fn an_idle_websocket_over_tls_connection_keeps_no_tls_buffer() {
    let setup = Setup::new();
    let (bytes, blocks) = idle_bytes(&setup, Kind::Wss);
    println!("wss: {bytes} bytes per idle connection; blocks {blocks:?}");
    // The WebSocket layer's own state on top of the TLS bound.
    assert!(
        bytes <= IDLE_BOUND + 1024,
        "{bytes} bytes, blocks {blocks:?}"
    );
}

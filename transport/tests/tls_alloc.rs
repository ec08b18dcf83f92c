//! What an idle TLS connection keeps allocated once its handshake is done, measured by a
//! counting allocator: the bytes freed when its transport is dropped, after a handshake
//! with a rustls client in memory and one message each way. In its own test binary because
//! the allocator is global.
//!
//! `cargo test -p tern-transport --test tls_alloc -- --nocapture` prints the figures and
//! the blocks one connection holds.

mod common;
mod counting;

use std::io::Write;
use std::sync::Arc;

use common::{client_decrypt, pump, Pki};
use counting::{live, log_frees};
use rustls::{ClientConfig, ClientConnection, ServerConfig};
use tern_transport::{load_server_config, TlsLimits, TlsStart, Transport, WsConfig};

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Connections measured per case; the figure is their mean (they are all alike).
const CONNS: usize = 16;

/// What one idle TLS 1.3 connection may keep once the broker's tick has called `shrink`:
/// its established session (432 bytes: the traffic secrets, keys, IVs and sequence
/// numbers of both directions, the buffers' handles) and the SNI, 440 bytes; no buffer, no expanded key (544 bytes a direction with AES-GCM on ring, made
/// again when it next reads or writes). While rustls kept the connection after its
/// handshake, an idle one kept 3,437 bytes (its state, the expanded keys, the key schedule
/// kept for key updates, two record queues); with rustls's buffered `ServerConnection`,
/// 7,449.
const IDLE_BOUND: isize = 640;

/// No block larger: the allocator serves a block from the size class above it (jemalloc's
/// classes go 1,024, 1,280, 1,536), so the boxed session at 1,296 bytes took 1,536.
const LARGEST_BLOCK: usize = 1280;

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
    assert!(server.tls_session().unwrap().is_handed_over(), "{kind:?}");
    // The broker's ping tick.
    server.shrink();
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
            blocks = log_frees(|| drop(server));
        } else {
            drop(server);
        }
        freed += before - live();
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
        assert!(
            blocks.iter().all(|&b| b <= LARGEST_BLOCK),
            "{start:?}: a block over {LARGEST_BLOCK} bytes: {blocks:?}"
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

/// Every TLS connection keeps its `Transport` handle (inside the broker's per-connection
/// link): it holds a TLS stream's handle, not the WebSocket layer's state, which is boxed
/// where it is used. (It was 216 bytes with the WebSocket state inline: 160 bytes more per
/// idle TLS connection once the allocator rounds the link up.)
#[test]
fn a_transport_handle_is_small() {
    let size = std::mem::size_of::<Transport>();
    assert!(size <= 64, "Transport is {size} bytes");
}

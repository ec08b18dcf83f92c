//! What a transport costs per message, for 128 B and 16 KiB payloads: plain pass-through,
//! WebSocket frame decode (ours and tungstenite's) and encode, TLS records in and out.
//! `cargo bench -p tern-transport --bench framing`; figures in docs/transports.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tern_transport::{load_server_config, TlsLimits, TlsStart, Transport, WsConfig};
use tungstenite::protocol::Role;

const SIZES: [(usize, &str); 2] = [(128, "128B"), (16 * 1024, "16KiB")];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A WebSocket transport past its upgrade.
fn open_websocket() -> Transport {
    let mut t = Transport::websocket(Arc::new(WsConfig::default()));
    t.read(&common::upgrade_request("/", ""), &mut Vec::new())
        .unwrap();
    t.pending_socket_out(&mut Vec::new()).unwrap();
    t
}

/// A TLS transport and the rustls client it completed its handshake with.
fn open_tls(pki: &common::Pki) -> (Transport, rustls::ClientConnection) {
    let config = load_server_config(&pki.settings(false, false)).unwrap();
    let mut server = Transport::tls(config, TlsStart::Immediate, TlsLimits::default()).unwrap();
    let mut client = pki.client(None);
    common::pump(&mut client, &mut server, &mut Vec::new()).unwrap();
    (server, client)
}

/// Serves the same bytes to every read from the start of `pos`; swallows writes.
struct Replay {
    bytes: Vec<u8>,
    pos: usize,
}

impl Read for Replay {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read(c: &mut Criterion) {
    let pki = common::Pki::new();
    let mut group = c.benchmark_group("read");
    for (len, name) in SIZES {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut app_in = Vec::with_capacity(2 * len);

        let mut plain = Transport::plain();
        group.bench_function(BenchmarkId::new("plain", name), |b| {
            b.iter(|| {
                plain.read(black_box(&data), &mut app_in).unwrap();
                app_in.clear();
            })
        });

        let frame = common::client_frame(common::FIN | common::BINARY, &data, common::KEY);
        let mut ws = open_websocket();
        group.bench_function(BenchmarkId::new("websocket", name), |b| {
            b.iter(|| {
                ws.read(black_box(&frame), &mut app_in).unwrap();
                app_in.clear();
            })
        });

        let mut theirs = tungstenite::WebSocket::from_raw_socket(
            Replay {
                bytes: frame.clone(),
                pos: 0,
            },
            Role::Server,
            None,
        );
        group.bench_function(BenchmarkId::new("websocket-tungstenite", name), |b| {
            b.iter(|| {
                theirs.get_mut().pos = 0;
                let message = theirs.read().unwrap();
                // What the session needs: the bytes in its own buffer.
                app_in.extend_from_slice(&message.into_data());
                app_in.clear();
            })
        });

        let (mut tls, mut client) = open_tls(&pki);
        group.bench_function(BenchmarkId::new("tls", name), |b| {
            b.iter_batched(
                || {
                    client.writer().write_all(&data).unwrap();
                    let mut records = Vec::new();
                    client.write_tls(&mut records).unwrap();
                    records
                },
                |records| {
                    tls.read(&records, &mut app_in).unwrap();
                    app_in.clear();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn write(c: &mut Criterion) {
    let pki = common::Pki::new();
    let mut group = c.benchmark_group("write");
    for (len, name) in SIZES {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut socket_out = Vec::with_capacity(2 * len + 64);

        let mut plain = Transport::plain();
        group.bench_function(BenchmarkId::new("plain", name), |b| {
            b.iter(|| {
                plain.write(black_box(&data), &mut socket_out).unwrap();
                socket_out.clear();
            })
        });

        let mut ws = open_websocket();
        group.bench_function(BenchmarkId::new("websocket", name), |b| {
            b.iter(|| {
                ws.write(black_box(&data), &mut socket_out).unwrap();
                socket_out.clear();
            })
        });

        let (mut tls, _client) = open_tls(&pki);
        group.bench_function(BenchmarkId::new("tls", name), |b| {
            b.iter(|| {
                tls.write(black_box(&data), &mut socket_out).unwrap();
                socket_out.clear();
            })
        });
    }
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = short();
    targets = read, write
}
criterion_main!(benches);

//! Criterion micro-benchmarks of the text (NATS) codec: decoding the streams a broker
//! reads (`PUB`, `HPUB`) and a client reads (`MSG`), and encoding `MSG` lines, the
//! broker's delivery hot path.
//!
//! Each benchmark works on a stream of [`OPS`] operations built once, so one iteration is
//! cheap: `cargo test --all-targets` runs every benchmark once, as a smoke test.
//!
//! Never: touches a socket or asserts on time; figures come from `cargo bench`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_protocol::text::{
    encode_client_op, encode_msg_line, encode_server_op, ClientDecoder, ClientOp, Limits, Message,
    Publish, ServerDecoder, ServerOp,
};

/// Operations per stream.
const OPS: usize = 1000;
/// Payload sizes measured.
const SIZES: [usize; 2] = [16, 1024];
const HEADERS: &[u8] = b"NATS/1.0\r\nTrace-Id: 4bf92f3577b34da6\r\n\r\n";

fn pub_stream(size: usize, headers: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let op = ClientOp::Pub(Publish {
        subject: Bytes::from_static(b"chat.room.42"),
        reply: None,
        headers: headers.then(|| Bytes::from_static(HEADERS)),
        payload: Bytes::from(vec![b'x'; size]),
    });
    for _ in 0..OPS {
        encode_client_op(&op, &mut out);
    }
    out
}

fn msg_stream(size: usize) -> BytesMut {
    let mut out = BytesMut::new();
    let op = ServerOp::Msg(Message {
        subject: Bytes::from_static(b"chat.room.42"),
        sid: Bytes::from_static(b"17"),
        reply: None,
        headers: None,
        payload: Bytes::from(vec![b'x'; size]),
    });
    for _ in 0..OPS {
        encode_server_op(&op, &mut out);
    }
    out
}

fn decode_client(c: &mut Criterion) {
    let mut group = c.benchmark_group("text/decode");
    for size in SIZES {
        for (name, headers) in [("PUB", false), ("HPUB", true)] {
            let stream = pub_stream(size, headers);
            group.throughput(Throughput::Elements(OPS as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &stream, |b, stream| {
                let mut decoder = ClientDecoder::new(Limits::default());
                b.iter(|| {
                    let mut buf = stream.clone();
                    let mut n = 0;
                    while let Some(op) = decoder.decode(&mut buf).expect("valid stream") {
                        black_box(op);
                        n += 1;
                    }
                    assert_eq!(n, OPS);
                });
            });
        }
        let stream = msg_stream(size);
        group.bench_with_input(BenchmarkId::new("MSG", size), &stream, |b, stream| {
            let mut decoder = ServerDecoder::new(Limits::default());
            b.iter(|| {
                let mut buf = stream.clone();
                let mut n = 0;
                while let Some(op) = decoder.decode(&mut buf).expect("valid stream") {
                    black_box(op);
                    n += 1;
                }
                assert_eq!(n, OPS);
            });
        });
    }
    group.finish();
}

fn encode_msg(c: &mut Criterion) {
    let mut group = c.benchmark_group("text/encode");
    group.throughput(Throughput::Elements(OPS as u64));
    for size in SIZES {
        let payload = vec![b'x'; size];
        group.bench_with_input(BenchmarkId::new("MSG", size), &payload, |b, payload| {
            let mut out = BytesMut::with_capacity(OPS * (size + 64));
            b.iter(|| {
                out.clear();
                for _ in 0..OPS {
                    encode_msg_line(
                        &mut out,
                        black_box(b"chat.room.42"),
                        b"17",
                        None,
                        None,
                        payload.len(),
                    );
                    out.extend_from_slice(payload);
                    out.extend_from_slice(b"\r\n");
                }
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode_client, encode_msg);
criterion_main!(benches);

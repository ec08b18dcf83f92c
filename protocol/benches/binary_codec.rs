//! Criterion micro-benchmarks of the binary codec: encoding and decoding `PUBLISH` (what a
//! broker reads) and `MESSAGE` (what it writes and a client reads).
//!
//! Each benchmark works on [`FRAMES`] frames built once, so one iteration is cheap:
//! `cargo test --all-targets` runs every benchmark once, as a smoke test.
//!
//! Never: touches a socket or asserts on time; figures come from `cargo bench`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_protocol::binary::{
    encode_client_frame, encode_server_frame, ClientFrame, ClientFrameDecoder, Limits, Message,
    Publish, ServerFrame, ServerFrameDecoder,
};

/// Frames per stream.
const FRAMES: usize = 1000;
/// Payload sizes measured.
const SIZES: [usize; 2] = [16, 1024];

fn publish(size: usize) -> ClientFrame {
    ClientFrame::Publish(Publish {
        subject: Bytes::from_static(b"chat.room.42"),
        priority: 3,
        payload: Bytes::from(vec![b'x'; size]),
        ..Publish::default()
    })
}

fn message(size: usize) -> ServerFrame {
    ServerFrame::Message(Message {
        sid: 17,
        priority: 3,
        shard: 1,
        sequence: 123_456,
        timestamp: 1_700_000_000_000_000_000,
        subject: Bytes::from_static(b"chat.room.42"),
        payload: Bytes::from(vec![b'x'; size]),
        ..Message::default()
    })
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("binary/encode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for size in SIZES {
        let frame = publish(size);
        group.bench_with_input(BenchmarkId::new("PUBLISH", size), &frame, |b, frame| {
            let mut out = BytesMut::with_capacity(FRAMES * (size + 64));
            b.iter(|| {
                out.clear();
                for _ in 0..FRAMES {
                    encode_client_frame(black_box(frame), &mut out).expect("encodable");
                }
                black_box(out.len())
            });
        });
        let frame = message(size);
        group.bench_with_input(BenchmarkId::new("MESSAGE", size), &frame, |b, frame| {
            let mut out = BytesMut::with_capacity(FRAMES * (size + 64));
            b.iter(|| {
                out.clear();
                for _ in 0..FRAMES {
                    encode_server_frame(black_box(frame), &mut out).expect("encodable");
                }
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("binary/decode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for size in SIZES {
        let mut stream = BytesMut::new();
        for _ in 0..FRAMES {
            encode_client_frame(&publish(size), &mut stream).expect("encodable");
        }
        group.bench_with_input(BenchmarkId::new("PUBLISH", size), &stream, |b, stream| {
            let mut decoder = ClientFrameDecoder::new(Limits::default());
            b.iter(|| {
                let mut buf = stream.clone();
                let mut n = 0;
                while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
                    black_box(frame);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            });
        });
        let mut stream = BytesMut::new();
        for _ in 0..FRAMES {
            encode_server_frame(&message(size), &mut stream).expect("encodable");
        }
        group.bench_with_input(BenchmarkId::new("MESSAGE", size), &stream, |b, stream| {
            let mut decoder = ServerFrameDecoder::new(Limits::default());
            b.iter(|| {
                let mut buf = stream.clone();
                let mut n = 0;
                while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
                    black_box(frame);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);

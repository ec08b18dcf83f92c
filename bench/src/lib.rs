//! `tern-bench`: the benchmark harness for Tern, and for any broker that speaks the NATS
//! text protocol, so the same scenario runs against `ternd` (over its text or its binary
//! port) and a real `nats-server`.
//!
//! Layout: [`driver`] (how to talk to a broker, one module per protocol), [`scenario`]
//! (what load to generate and what to measure), [`histogram`] (latency percentiles),
//! [`cpu`] (a broker's CPU time over a measured window, from `/proc`), [`report`]
//! (tables, comparisons, JSON), [`plot`] (hand-written SVG charts), [`broker`] (starting
//! and stopping broker processes), [`suite`] (the standard run behind `make bench` and
//! `make bench-compare`), [`runs`] (the order of repeated runs and their medians, for
//! `suite --runs` and `transports`), [`transports`] (the same scenarios over TCP, TLS,
//! WebSocket and WebSocket over TLS, against `ternd` and `nats-server`, with certificates
//! from [`pki`]) and [`profile`] (flame graphs from `perf`, for `make profile`).
//!
//! Never: uses a client library to measure — the harness speaks the protocols itself, with
//! Tern's own codecs, so it measures the broker and not a client's buffering. The one
//! exception is [`scenario::soak`], which measures nothing: it checks that acknowledged
//! messages survive reconnects, and `tern-client`'s reconnect path is part of that.

pub mod broker;
pub mod cpu;
pub mod driver;
pub mod histogram;
pub mod pki;
pub mod plot;
pub mod profile;
pub mod report;
pub mod runs;
pub mod scenario;
pub mod suite;
pub mod transports;

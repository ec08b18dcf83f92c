//! tern-broker: the Tern server as a library; `ternd` (src/main.rs) is a thin binary on top.
//!
//! Owns: the data path, thread-per-core and shared-nothing, as `docs/architecture.md`
//! describes it: [`server`] starts one [`worker`] per core; each worker owns its
//! connections ([`conn`]), their outbound queues ([`outbound`]) and one [`shard`] of the
//! subject space with its subscription [`index`] and its [`store`] (ring log, dedupe
//! window, catch-ups); workers talk only through the [`mesh`].
//! [`router`] decides where each operation goes; [`admission`] decides what is refused or
//! slowed before it costs anything. The [`monitor`] thread serves the
//! monitoring endpoint from the workers' counters ([`stats`]) and from [`snapshot`]s they
//! answer through the mesh; each worker owns its [`latency`] histogram.
//!
//! Never: holds a lock or allocates per subscriber on the path from a publish to its
//! deliveries.

// `/varz` is one `json!` literal with many keys.
#![recursion_limit = "512"]

mod admission;
mod budget;
pub mod config;
mod conn;
mod eviction;
mod index;
mod latency;
mod mesh;
mod monitor;
mod outbound;
mod router;
pub mod server;
mod shard;
mod snapshot;
pub mod stats;
mod store;
mod subqueue;
mod worker;

pub use config::{Args, Config, ConfigError};
pub use index::shard_for;
pub use server::{Server, StartError};

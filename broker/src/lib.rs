//! tern-broker: the Tern server as a library; `ternd` (src/main.rs) is a thin binary on top.
//!
//! Owns: the data path, thread-per-core and shared-nothing, as `docs/architecture.md`
//! describes it: [`server`] starts one [`worker`] per core; each worker owns its
//! connections ([`conn`]), their outbound queues ([`outbound`]) and one [`shard`] of the
//! subject space with its subscription [`index`]; workers talk only through the [`mesh`].
//! [`router`] decides where each operation goes.
//!
//! Never: holds a lock or allocates per subscriber on the path from a publish to its
//! deliveries.

pub mod config;
mod conn;
mod index;
mod mesh;
mod outbound;
mod router;
pub mod server;
mod shard;
pub mod stats;
mod worker;

pub use config::{Args, Config, ConfigError};
pub use index::shard_for;
pub use server::{Server, StartError};

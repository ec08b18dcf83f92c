//! tern-broker: the Tern server as a library; `ternd` (src/main.rs) is a thin binary on top.
//!
//! Owns: the data path, thread-per-core and shared-nothing, as `docs/architecture.md`
//! describes it: [`server`] starts one [`worker`] per core; each worker owns its
//! connections ([`conn`]), their outbound queues ([`outbound`]) and one [`shard`], which
//! routes what those connections publish, with its subscription [`index`] (every
//! subscription, in every shard), its [`queue_group`] turns and its [`store`] (ring log,
//! catch-ups); message ids are checked broker-wide ([`dedupe`]); workers talk only through
//! the [`mesh`].
//! [`replay`] bounds the text catch-ups in progress.
//! [`router`] decides where each operation goes; [`admission`] decides what is refused or
//! slowed before it costs anything; [`budget`] is the broker-wide bound on queued bytes and
//! [`eviction`] picks what a full budget gives up; [`lameduck`] is the switch and schedule
//! of a gentle stop (SIGUSR2); [`auth`] holds who may connect (swapped on SIGHUP) and
//! checks costly credentials off the workers. The [`monitor`] threads serve the monitoring endpoint from
//! the workers' counters ([`stats`], labelled by [`names`]) and from bounded [`snapshot`]s
//! they answer through the mesh; each worker owns its [`latency`] histogram.
//!
//! Never: allocates per subscriber on the path from a publish to its deliveries, or holds
//! a lock on it (but the one [`dedupe`] lock, taken by a publish that carries a message
//! id).

mod admission;
mod auth;
#[doc(hidden)]
pub mod bench;
mod budget;
pub mod config;
mod conn;
mod dedupe;
mod eviction;
mod index;
mod inject;
mod lameduck;
mod latency;
mod merge;
mod mesh;
mod monitor;
mod names;
mod outbound;
mod presence;
mod queue_group;
mod replay;
mod router;
pub mod server;
mod shard;
mod snapshot;
pub mod stats;
mod store;
mod subqueue;
#[cfg(test)]
mod test_alloc;
mod transports;
mod worker;

pub use config::{Args, Config, ConfigError};
pub use server::{Server, StartError};

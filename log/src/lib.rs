//! `tern-log`: one shard's ring log for Tern, the storage layer of store-and-forward.
//!
//! Each broker shard appends every message it routes to its own [`RingLog`], a file of fixed
//! capacity mapped into memory, and replays from it for subscribers that resume. When the
//! ring is full, the oldest records go. On open, the log recovers: it checks every record
//! (length bounds, CRC32, sequence continuity) and stops at the first torn or corrupt one, so
//! a crash at any byte of an append loses nothing that was completely written.
//!
//! The file format, the order of writes and what each [`Fsync`] policy survives are described
//! in `docs/ring-log.md`.
//!
//! Owns: files and bytes on disk. Never: touches a socket, spawns a thread or takes a lock;
//! exactly one thread uses a [`RingLog`].
//!
//! Modules: [`mod@format`] (offsets and constants of the file format), `record` (the [`Record`]
//! and its bytes), `file` (creating, validating and mapping the file: the only `unsafe`),
//! `recovery` (the recovery walk, a pure function of the bytes), `ring` (the [`RingLog`]
//! itself), `error` ([`LogError`]).

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod file;
pub mod format;
mod record;
mod recovery;
mod ring;

pub use error::LogError;
pub use record::Record;
pub use ring::{Fsync, Layout, Records, Recovery, RingLog};

/// One index entry is kept per this many sequences; [`RingLog::read_from`] and
/// [`RingLog::seq_at_time`] hop over at most this many records (twice that for
/// `seq_at_time`) after looking the index up.
pub const INDEX_STRIDE: u64 = recovery::INDEX_STRIDE;

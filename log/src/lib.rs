//! `tern-log`: one shard's ring log for Tern, the storage layer of store-and-forward.
//!
//! Each broker shard appends every message it routes to its own [`RingLog`], a file of fixed
//! capacity mapped into memory, and replays from it for subscribers that resume. When the
//! ring is full, the oldest records go. Every block of the file is reserved when it is created
//! or opened, so a full disk is an error at open, never a SIGBUS later. On open, the log
//! recovers: it checks every record (length bounds, CRC32, growing sequences), so a crash at
//! any byte of an append loses nothing that was completely written, and damage costs only the
//! records it touched (the log keeps a hole, and the damaged file is first copied aside).
//!
//! The file format, the order of writes and what each [`Fsync`] policy survives are described
//! in `docs/ring-log.md`.
//!
//! Owns: files and bytes on disk. Never: touches a socket, spawns a thread or takes a lock;
//! exactly one thread uses a [`RingLog`]; changes a damaged file it could not first copy aside.
//!
//! Modules: [`mod@format`] (offsets and constants of the file format), `record` (the [`Record`]
//! and its bytes), `file` (creating, reserving, validating, mapping and copying the file: its
//! system calls are the crate's `unsafe`, with one block of `ring` that lays a record into a
//! batch's reserved bytes), `recovery` (the recovery walk, a pure function of the bytes, and [`Hole`]),
//! `ring` (the [`RingLog`] itself), `error` ([`LogError`]).

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod file;
pub mod format;
mod record;
mod recovery;
mod ring;

pub use error::LogError;
pub use record::{Record, StoredRecords};
pub use recovery::Hole;
pub use ring::{Fsync, Layout, Records, Recovery, RingLog};

/// One index entry is kept per this many sequences; [`RingLog::read_from`] and
/// [`RingLog::seq_at_time`] hop over at most this many records (twice that for
/// `seq_at_time`) after looking the index up.
pub const INDEX_STRIDE: u64 = recovery::INDEX_STRIDE;

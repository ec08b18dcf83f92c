//! tern-protocol: Tern's sans-IO codecs and the subject rules.
//!
//! Owns: the byte-level grammar of every protocol Tern speaks and the rules of what a subject
//! is. Bytes go in, typed operations come out, and the reverse.
//!
//! Never: opens a socket, reads a clock, spawns a thread or logs. Every edge case is therefore
//! a fast, deterministic unit test, and the broker, the client and the benchmark harness all
//! share one implementation of the wire format.

#![warn(missing_docs)]

pub mod binary;
pub mod headers;
pub mod read_room;
mod spare;
pub mod subject;
pub mod text;

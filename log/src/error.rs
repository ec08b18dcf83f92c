//! The log's error type: everything `tern-log` can refuse or fail at, as one enum.
//!
//! Owns: [`LogError`]. Every variant about a file names that file, so an operator reading the
//! message knows which shard's log to look at.
//!
//! Never: panics where it could return one of these, or hides which file is at fault.

use std::path::PathBuf;

/// Why a ring log could not be opened, appended to or synced.
///
/// Header problems (`BadMagic`, `UnsupportedVersion`, `WrongCapacity`, `WrongFileSize`,
/// `CorruptHeader`) are found before the file is mapped, and the file is left exactly as it was:
/// the log never rewrites, extends or truncates a file it does not recognise.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system call on the file failed (open, read, create, map, msync).
    #[error("ring log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The capacity asked for cannot be used (too small, not a multiple of 8, or too large to
    /// map on this machine).
    #[error("ring log {}: capacity {capacity} cannot be used: {reason}", path.display())]
    InvalidCapacity {
        /// The log file.
        path: PathBuf,
        /// The capacity asked for, in bytes.
        capacity: u64,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The file does not start with the ring log magic number: it is not a Tern ring log.
    #[error("ring log {}: not a Tern ring log (bad magic number)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },

    /// The file is a ring log of a format version this build does not read.
    #[error(
        "ring log {}: format version {found} is not supported (this build reads version {expected})",
        path.display()
    )]
    UnsupportedVersion {
        /// The log file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },

    /// The file was created with another capacity than the one asked for. Resizing a ring is
    /// not supported: move the file away (its records are then lost to the broker) or ask for
    /// the capacity it has.
    #[error(
        "ring log {}: the file holds a ring of {found} bytes, but {expected} were asked for",
        path.display()
    )]
    WrongCapacity {
        /// The log file.
        path: PathBuf,
        /// The capacity recorded in the file's header.
        found: u64,
        /// The capacity asked for.
        expected: u64,
    },

    /// The file is longer than its header says it should be.
    #[error(
        "ring log {}: the file is {found} bytes, longer than the {expected} its header describes",
        path.display()
    )]
    WrongFileSize {
        /// The log file.
        path: PathBuf,
        /// The file's length.
        found: u64,
        /// The length its header describes.
        expected: u64,
    },

    /// The header fails its CRC, has impossible values, or neither checkpoint slot is valid.
    #[error("ring log {}: corrupt header: {reason}", path.display())]
    CorruptHeader {
        /// The log file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The file's blocks could not be reserved on its filesystem (`posix_fallocate`), most
    /// often because it is full. A ring is written through a memory map, where a store into a
    /// block the filesystem cannot allocate kills the process with SIGBUS; so the log reserves
    /// every block of a file when it creates or opens it, and refuses the file when it cannot.
    /// Free space on that filesystem, lower the capacity, or use another directory.
    #[error(
        "ring log {}: cannot reserve {needed} bytes for it on its filesystem ({}): {source}",
        path.display(),
        Available(*available)
    )]
    NoSpace {
        /// The log file.
        path: PathBuf,
        /// Bytes the file needs: its full length.
        needed: u64,
        /// Bytes available on the filesystem when the reservation failed, if known.
        available: Option<u64>,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// Recovery found damage it would have to repair, but could not first copy the damaged
    /// file aside; it changed nothing and refuses the file rather than destroy what the damaged
    /// bytes held. Free space beside the file, or copy the file somewhere safe and remove it
    /// (the shard then starts an empty log).
    #[error(
        "ring log {}: it is damaged ({damage}) and must be repaired, but copying it aside to {} \
         first failed ({needed} bytes needed, {}): {source}; the file was not changed. Free \
         space there, or copy the file somewhere safe and remove it to start an empty log",
        path.display(),
        copy.display(),
        Available(*available)
    )]
    CannotPreserve {
        /// The damaged log file.
        path: PathBuf,
        /// Where the copy was to go.
        copy: PathBuf,
        /// What recovery found.
        damage: String,
        /// Bytes the copy needs.
        needed: u64,
        /// Bytes available beside the file, if known.
        available: Option<u64>,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The record is larger than the ring can ever hold; nothing was written.
    #[error("record of {size} bytes is larger than this ring can hold ({max} bytes)")]
    RecordTooLarge {
        /// The record's encoded length in bytes.
        size: u64,
        /// The largest encoded length this ring accepts ([`crate::RingLog::max_record_len`]).
        max: u64,
    },

    /// One field of the record is longer than its length prefix can express; nothing was
    /// written.
    #[error("record field `{field}` is {len} bytes; the format allows at most {max}")]
    FieldTooLong {
        /// The field: `subject`, `reply`, `message_id`, `headers` or `payload`.
        field: &'static str,
        /// Its length.
        len: u64,
        /// The most its length prefix can hold.
        max: u64,
    },
}

/// Free space for an error message: "N bytes available", or that it is unknown.
struct Available(Option<u64>);

impl std::fmt::Display for Available {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n} bytes available"),
            None => write!(f, "available space unknown"),
        }
    }
}

impl LogError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

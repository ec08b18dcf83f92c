//! The ring file on disk: creating it atomically, validating an existing one before mapping
//! it, the memory map, `pwrite`, and `msync`.
//!
//! Owns: the [`File`], the [`MmapMut`] over the whole file, and every system call the log
//! makes: reserving the file's blocks (`posix_fallocate`), copying a damaged file aside, and
//! asking how much space its filesystem has left. Its `unsafe` is mapping the file and
//! those three calls; the only other `unsafe` of the crate is one block in `ring`, which
//! lays a record into a batch's reserved bytes (`Stage::push_record`).
//!
//! Contract: every block of a mapped file is reserved on its filesystem before it is mapped,
//! so a store through the map never meets a full disk (which would be SIGBUS, not an error);
//! a full disk is an error at open, naming the file and the space it needs. A file that must
//! be changed because it is damaged (extended when short, or repaired by recovery) is first
//! copied aside whole and synced; when that copy fails, the file is left as it was.
//!
//! Never: interprets records, reads a clock except to stamp a new file or name a copy,
//! touches a socket, or writes to a file whose header failed validation. A file that is not
//! ours, of another version or capacity, or with a corrupt header is only ever read, never
//! rewritten, extended or truncated.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{MmapMut, MmapOptions};

use crate::error::LogError;
use crate::format::{
    Checkpoint, FileHeader, HeaderProblem, ALIGN, HEADER_LEN, MIN_CAPACITY, SLOT_LEN, VERSION,
};

/// An open, validated, mapped ring file.
pub(crate) struct RingFile {
    path: PathBuf,
    // Written with `pwrite` by batched appends ([`RingFile::write_at`]); msync does not need it.
    file: File,
    map: MmapMut,
}

/// What opening found.
pub(crate) struct Opened {
    pub file: RingFile,
    pub header: FileHeader,
    /// The newest valid checkpoint.
    pub checkpoint: Checkpoint,
    /// The file did not exist and was created.
    pub created: bool,
    /// The file was shorter than its header says and was extended with zeros by this many
    /// bytes (a copy cut short, for example).
    pub extended: u64,
    /// Where the short file was copied before it was extended.
    pub damaged_copy: Option<PathBuf>,
}

impl RingFile {
    /// Opens `path`, creating it if it does not exist, reserves its blocks and maps it.
    pub(crate) fn open(path: &Path, capacity: u64) -> Result<Opened, LogError> {
        check_capacity(path, capacity)?;
        let mut created = false;
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create(path, capacity)?;
                created = true;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| LogError::io(path, e))?
            }
            Err(e) => return Err(LogError::io(path, e)),
        };
        let (header, checkpoint, file_len) = validate(path, &file, capacity)?;

        // Everything below may modify the file: it is ours, of our version and capacity.
        let want = HEADER_LEN as u64 + capacity;
        let extended = want - file_len;
        let mut damaged_copy = None;
        if extended > 0 {
            // Cut short: keep the file as it was found before extending it.
            let damage = format!("the file is {extended} bytes shorter than its header says");
            damaged_copy = Some(copy_aside(path, &damage)?);
            file.set_len(want).map_err(|e| LogError::io(path, e))?;
        }
        if !created {
            // A file created by another version, or copied, may be sparse.
            reserve(path, &file, want)?;
        }
        let len = usize::try_from(want).map_err(|_| LogError::InvalidCapacity {
            path: path.to_path_buf(),
            capacity,
            reason: "larger than this machine's address space",
        })?;
        // SAFETY: mapping a file is unsafe because another process could modify or truncate it
        // while it is mapped (changing bytes under a `&[u8]`, or raising SIGBUS). The log's
        // contract (documented on `RingLog`) is that exactly one `RingLog` in one process uses
        // a file at a time and nothing else writes to it; the length mapped is the file's
        // length, which we just checked or set, and every block of it is reserved, so every
        // byte of the map is backed by the file and a store never needs a block the
        // filesystem cannot give.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| LogError::io(path, e))?;
        Ok(Opened {
            file: RingFile {
                path: path.to_path_buf(),
                file,
                map,
            },
            header,
            checkpoint,
            created,
            extended,
            damaged_copy,
        })
    }

    /// Copies the file aside (see [`copy_aside`]) before recovery repairs it. The map is
    /// shared with the page cache, so the copy holds exactly what the map holds.
    pub(crate) fn copy_aside(&self, damage: &str) -> Result<PathBuf, LogError> {
        copy_aside(&self.path, damage)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file: header page, then the data region.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Writes `bytes` at file offset `at` with `pwrite`, not through the map: the pages it
    /// writes are never mapped writable, so writing them back write-protects nothing (see
    /// `RingLog::batch_writes`).
    pub(crate) fn write_at(&self, at: usize, bytes: &[u8]) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(bytes, at as u64)
            .map_err(|e| LogError::io(&self.path, e))
    }

    /// `msync`s the header page.
    pub(crate) fn sync_header(&self) -> Result<(), LogError> {
        self.sync_range(0, HEADER_LEN)
    }

    /// `msync`s the whole data region.
    pub(crate) fn sync_data(&self) -> Result<(), LogError> {
        self.sync_range(HEADER_LEN, self.map.len() - HEADER_LEN)
    }

    /// `msync`s `len` bytes from file offset `at` (rounded out to whole pages by `memmap2`).
    pub(crate) fn sync_range(&self, at: usize, len: usize) -> Result<(), LogError> {
        if len == 0 {
            return Ok(());
        }
        self.map
            .flush_range(at, len)
            .map_err(|e| LogError::io(&self.path, e))
    }
}

/// Reads an existing ring file for inspection, changing nothing: its header, its newest
/// checkpoint, its data region (zero-padded to the capacity if the file is short) and how many
/// bytes short it was.
pub(crate) fn read_for_inspection(
    path: &Path,
    capacity: u64,
) -> Result<(FileHeader, Checkpoint, Vec<u8>, u64), LogError> {
    check_capacity(path, capacity)?;
    let file = File::open(path).map_err(|e| LogError::io(path, e))?;
    let (header, checkpoint, file_len) = validate(path, &file, capacity)?;
    let mut data = Vec::new();
    (&file)
        .read_to_end(&mut data)
        .map_err(|e| LogError::io(path, e))?;
    let cap = usize::try_from(capacity).map_err(|_| LogError::InvalidCapacity {
        path: path.to_path_buf(),
        capacity,
        reason: "larger than this machine's address space",
    })?;
    data.resize(cap, 0);
    Ok((
        header,
        checkpoint,
        data,
        HEADER_LEN as u64 + capacity - file_len,
    ))
}

fn check_capacity(path: &Path, capacity: u64) -> Result<(), LogError> {
    let reason = if capacity < MIN_CAPACITY {
        "it must be at least 128 bytes"
    } else if capacity & (ALIGN as u64 - 1) != 0 {
        "it must be a multiple of 8"
    } else if capacity > (isize::MAX as u64) - HEADER_LEN as u64 {
        "it is larger than this machine's address space"
    } else {
        return Ok(());
    };
    Err(LogError::InvalidCapacity {
        path: path.to_path_buf(),
        capacity,
        reason,
    })
}

/// Reads and checks the header page with plain reads (nothing is mapped or written yet).
/// Returns the header, the newest valid checkpoint and the file's length.
fn validate(
    path: &Path,
    mut file: &File,
    capacity: u64,
) -> Result<(FileHeader, Checkpoint, u64), LogError> {
    let file_len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    let mut page = vec![0u8; HEADER_LEN.min(file_len as usize)];
    file.read_exact(&mut page)
        .map_err(|e| LogError::io(path, e))?;
    let corrupt = |reason: String| LogError::CorruptHeader {
        path: path.to_path_buf(),
        reason,
    };
    let header = FileHeader::decode(&page).map_err(|p| match p {
        HeaderProblem::BadMagic => LogError::BadMagic {
            path: path.to_path_buf(),
        },
        HeaderProblem::Version(found) => LogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            expected: VERSION,
        },
        HeaderProblem::Corrupt(reason) => corrupt(reason),
    })?;
    if header.capacity != capacity {
        return Err(LogError::WrongCapacity {
            path: path.to_path_buf(),
            found: header.capacity,
            expected: capacity,
        });
    }
    if page.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "the file is {file_len} bytes, shorter than its {HEADER_LEN}-byte header"
        )));
    }
    let expected = HEADER_LEN as u64 + capacity;
    if file_len > expected {
        return Err(LogError::WrongFileSize {
            path: path.to_path_buf(),
            found: file_len,
            expected,
        });
    }
    let checkpoint = Checkpoint::newest(&page, header.epoch, capacity)
        .ok_or_else(|| corrupt("neither checkpoint slot is valid".into()))?;
    Ok((header, checkpoint, file_len))
}

/// Creates a new, empty ring file at `path`: header and first checkpoint written to a
/// temporary file in the same directory, its blocks reserved, synced, then renamed into place,
/// so `path` never names a half-written or unreserved file. Creation always syncs, whatever the
/// fsync policy: a file that exists must be a valid one.
fn create(path: &Path, capacity: u64) -> Result<(), LogError> {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let header = FileHeader {
        capacity,
        epoch: fresh_epoch(path, now_ns),
        created_ns: now_ns,
    };
    let first = Checkpoint {
        generation: 1,
        head: 0,
        first_seq: 1,
        tail: 0,
        next_seq: 1,
    };
    let mut page = vec![0u8; HEADER_LEN];
    page[..header.encode().len()].copy_from_slice(&header.encode());
    let at = first.slot_offset();
    page[at..at + SLOT_LEN].copy_from_slice(&first.encode(header.epoch));

    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        LogError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{now_ns}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);

    let len = HEADER_LEN as u64 + capacity;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LogError::io(path, e))?;
        f.write_all(&page).map_err(|e| LogError::io(path, e))?;
        f.set_len(len).map_err(|e| LogError::io(path, e))?;
        reserve(path, &f, len)?;
        f.sync_all().map_err(|e| LogError::io(path, e))?;
        fs::rename(&tmp, path).map_err(|e| LogError::io(path, e))?;
        // Make the rename itself durable.
        sync_dir(&dir).map_err(|e| LogError::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reserves the blocks of the first `len` bytes of `file` (`posix_fallocate(3)`), so that no
/// later store through the map needs a block the filesystem cannot give. Existing bytes are
/// not changed; blocks already allocated cost nothing.
fn reserve(path: &Path, file: &File, len: u64) -> Result<(), LogError> {
    let Ok(off_len) = libc::off_t::try_from(len) else {
        return Err(LogError::NoSpace {
            path: path.to_path_buf(),
            needed: len,
            available: available_space(path),
            source: io::Error::from_raw_os_error(libc::EFBIG),
        });
    };
    loop {
        // SAFETY: posix_fallocate on a descriptor `file` owns and keeps open for the call;
        // no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            err => {
                return Err(LogError::NoSpace {
                    path: path.to_path_buf(),
                    needed: len,
                    available: available_space(path),
                    source: io::Error::from_raw_os_error(err),
                })
            }
        }
    }
}

/// Bytes an unprivileged writer can still use on the filesystem holding `path` (which need
/// not exist: its directory is asked), from `statvfs(3)`; `None` when that fails.
pub(crate) fn available_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = parent_dir(path);
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail.saturating_mul(st.f_frsize))
}

/// How many copies of one file may be made within one second before the names run out.
const COPY_NAMES_PER_SECOND: u32 = 1000;

/// Copies the file at `path` whole to `<name>.damaged-<unix seconds>` beside it (`-2`, `-3`,
/// ... when that name is taken), before the log changes a damaged file. The copy's blocks are
/// reserved first, then it is written, synced and its directory synced, so it is whole and
/// durable before the original is touched. On any failure the partial copy is removed and
/// the error ([`LogError::CannotPreserve`]) names the file, the copy, the space needed and
/// the space available; the caller must then leave the original unchanged.
pub(crate) fn copy_aside(path: &Path, damage: &str) -> Result<PathBuf, LogError> {
    let name = path.file_name().unwrap_or_default().to_os_string();
    let dir = parent_dir(path);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = dir.join(format!("{}.damaged-{secs}", name.to_string_lossy()));
    let fail = |copy: &Path, needed: u64, source: io::Error| LogError::CannotPreserve {
        path: path.to_path_buf(),
        copy: copy.to_path_buf(),
        damage: damage.to_string(),
        needed,
        available: available_space(copy),
        source,
    };
    let mut src = File::open(path).map_err(|e| fail(&target, 0, e))?;
    let needed = src.metadata().map_err(|e| fail(&target, 0, e))?.len();
    let mut attempt = 1;
    let mut dst = loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(f) => break f,
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && attempt < COPY_NAMES_PER_SECOND =>
            {
                attempt += 1;
                target = dir.join(format!(
                    "{}.damaged-{secs}-{attempt}",
                    name.to_string_lossy()
                ));
            }
            Err(e) => return Err(fail(&target, needed, e)),
        }
    };
    let result = (|| {
        if needed > 0 {
            reserve(&target, &dst, needed).map_err(|e| match e {
                LogError::NoSpace { source, .. } => source,
                other => io::Error::other(other.to_string()),
            })?;
        }
        let copied = io::copy(&mut src, &mut dst)?;
        if copied != needed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("copied {copied} of {needed} bytes"),
            ));
        }
        dst.sync_all()?;
        sync_dir(&dir)
    })();
    match result {
        Ok(()) => Ok(target),
        Err(e) => {
            drop(dst);
            let _ = fs::remove_file(&target);
            Err(fail(&target, needed, e))
        }
    }
}

/// A random, non-zero epoch: std's randomly keyed hasher over the time, the process id and the
/// path (no extra dependency; the keys come from the operating system's random source).
fn fresh_epoch(path: &Path, now_ns: u64) -> u64 {
    let mut salt = 0u64;
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_ns);
        h.write_u32(std::process::id());
        h.write(path.as_os_str().as_encoded_bytes());
        h.write_u64(salt);
        let epoch = h.finish();
        if epoch != 0 {
            return epoch;
        }
        salt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_non_zero_and_differ() {
        let p = Path::new("x");
        let a = fresh_epoch(p, 1);
        let b = fresh_epoch(p, 1);
        assert_ne!(a, 0);
        assert_ne!(a, b, "RandomState keys differ per instance");
    }

    #[test]
    fn capacity_rules() {
        let p = Path::new("x");
        assert!(check_capacity(p, 128).is_ok());
        assert!(check_capacity(p, 64 << 20).is_ok());
        for bad in [0, 120, 129, u64::MAX] {
            assert!(matches!(
                check_capacity(p, bad),
                Err(LogError::InvalidCapacity { .. })
            ));
        }
    }

    #[test]
    fn creation_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.ring");
        let opened = RingFile::open(&path, 4096).unwrap();
        assert!(opened.created);
        assert_eq!(opened.extended, 0);
        assert_eq!(opened.file.bytes().len(), HEADER_LEN + 4096);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shard-0.ring")]);
    }
}

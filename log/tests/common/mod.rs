//! Helpers shared by the integration tests: owned records to compare against, scratch
//! directories, and reading a log back.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;

use tern_log::{Record, RingLog};

/// Bytes before the data region (the header page).
pub const DATA: usize = tern_log::format::HEADER_LEN;

/// A record with owned fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub timestamp: u64,
    pub priority: u8,
    pub subject: Vec<u8>,
    pub reply: Option<Vec<u8>>,
    pub headers: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Owned {
    pub fn new(subject: &str, payload: &[u8], timestamp: u64) -> Owned {
        Owned {
            timestamp,
            priority: 0,
            subject: subject.as_bytes().to_vec(),
            reply: None,
            headers: None,
            message_id: None,
            payload: payload.to_vec(),
        }
    }

    pub fn record(&self) -> Record<'_> {
        Record {
            seq: 0,
            timestamp: self.timestamp,
            priority: self.priority,
            subject: &self.subject,
            reply: self.reply.as_deref(),
            headers: self.headers.as_deref(),
            message_id: self.message_id.as_deref(),
            payload: &self.payload,
        }
    }

    pub fn of(r: &Record<'_>) -> Owned {
        Owned {
            timestamp: r.timestamp,
            priority: r.priority,
            subject: r.subject.to_vec(),
            reply: r.reply.map(<[u8]>::to_vec),
            headers: r.headers.map(<[u8]>::to_vec),
            message_id: r.message_id.map(<[u8]>::to_vec),
            payload: r.payload.to_vec(),
        }
    }
}

/// A scratch directory, on tmpfs when there is one.
pub fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

/// Everything the log holds, as (sequence, record).
pub fn held(log: &RingLog) -> Vec<(u64, Owned)> {
    log.read_from(0).map(|r| (r.seq, Owned::of(&r))).collect()
}

/// Checks that the log holds exactly `appended[first-1 ..]` up to its newest record (record
/// `s` is `appended[s - 1]`), with consecutive sequences.
pub fn assert_holds_suffix(log: &RingLog, appended: &[Owned]) {
    let got = held(log);
    assert_eq!(got.len() as u64, log.len(), "len() and read_from disagree");
    assert!(
        got.last()
            .is_none_or(|(seq, _)| *seq as usize <= appended.len()),
        "invented records"
    );
    for (i, (seq, rec)) in got.iter().enumerate() {
        assert_eq!(*seq, log.first_seq() + i as u64, "sequence gap");
        assert_eq!(rec, &appended[*seq as usize - 1], "record {seq} differs");
    }
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped: a filesystem that
/// fills up. Mounting needs privileges (CI runs as root); [`Tmpfs::mount`] says why it could
/// not, so a test can skip with that reason.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `2m`).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Bytes a record's CRC covers: its 40-byte header and fields, not its padding.
pub fn exact_len(o: &Owned) -> usize {
    let opt = |f: &Option<Vec<u8>>| f.as_ref().map_or(0, Vec::len);
    40 + o.subject.len() + opt(&o.reply) + opt(&o.headers) + opt(&o.message_id) + o.payload.len()
}

//! [`RingLog`]: one shard's ring of records in a memory-mapped file. Append, evict, write in
//! batches ([`RingLog::batch_writes`]), read back, find by time, sync, and recover on open.
//!
//! Owns: the live state of one log (where its oldest and newest records are, their sequences,
//! a sparse index for seeking, the holes recovery left), the order in which an append writes
//! its bytes and the order in which a batch reaches the file, the fsync policy, and the repair of a recovered file (zeroing what recovery cut,
//! after the file module has copied a damaged file aside).
//!
//! Never: touches a socket, spawns a thread, takes a lock or allocates per append (a batch's
//! buffer keeps its capacity). Exactly one
//! thread uses a `RingLog`; the borrow checker keeps readers from living across an append.
//!
//! Invariants the rest of the crate and `docs/ring-log.md` rely on:
//! - Live records occupy `[head, tail)` of the data region, or `[head, wrap_at)` followed by
//!   `[0, tail)` when the log wraps, except for the holes (`skips`) recovery left inside that
//!   span, whose bytes are zero. Their sequences increase in that order, from `first_seq` to
//!   `last_seq`, with gaps where records were lost; `next_seq` is above all of them (and above
//!   every sequence ever handed out, except a torn append's).
//! - Before any byte of an append is written, the newest checkpoint in the header names the
//!   oldest record the append leaves intact (or, for an empty log, where its record goes).
//! - A record's first 8 bytes (length and CRC) are written after every other byte of it.
//! - After every complete append, the 8 bytes after the newest record are zero (the
//!   terminator), unless the ring is exactly full there.

use std::collections::VecDeque;
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};
use std::time::{Duration, Instant};

use crate::error::LogError;
use crate::file::RingFile;
use crate::format::{
    align, get_u32, get_u64, wrap_marker, Checkpoint, Seeded, ALIGN, HEADER_LEN, MAX_RECORD_LEN,
    RECORD_HEADER_LEN, WRAP_LEN,
};
use crate::record::{commit_word, decode, Record};
use crate::recovery::{is_indexed, recover, Hole, Recovered, Skip, INDEX_STRIDE};

/// When the log asks the operating system to write its pages to disk (`msync`).
///
/// A process crash never loses a completed append under any policy: the bytes are in the page
/// cache the moment `append` returns. The policies differ on power loss and kernel crashes;
/// `docs/ring-log.md` says exactly what each survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Never `msync`; the operating system writes pages back when it likes.
    Never,
    /// `msync` from [`RingLog::tick`] when this much time has passed since the last sync and
    /// something was appended. `append` itself makes no system call.
    Interval(Duration),
    /// `msync` inside every `append`, before it returns: the header first when the append
    /// evicts, then the record.
    Always,
}

/// What [`RingLog::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Records held after recovery.
    pub records: u64,
    /// The oldest sequence held (equal to `next_seq` when empty).
    pub first_seq: u64,
    /// The sequence the next append gets.
    pub next_seq: u64,
    /// Bytes of log data this open found damaged or torn and zeroed: the holes' damaged
    /// bytes, and at the end the torn or corrupt record's extent or, when the last checkpoint
    /// proves the log went further, the distance to where it said the log ended.
    pub cut_bytes: u64,
    /// What this open found wrong, naming the first bad record of each hole and of the end;
    /// `None` when the log was intact (holes an earlier open repaired are in `holes` only).
    pub cut_reason: Option<String>,
    /// The file did not exist and was created (with a fresh epoch).
    pub created: bool,
    /// The file was shorter than its header says (a copy cut short, say) and was extended
    /// with zeros by this many bytes before recovery.
    pub extended_bytes: u64,
    /// The next sequence recorded by the checkpoint recovery started from: the log held at
    /// least up to `checkpoint_next_seq - 1` when it was written. `next_seq` is never lower:
    /// a sequence the checkpoint proves was handed out is not handed out again.
    pub checkpoint_next_seq: u64,
    /// Records missing between records kept (or before the first one kept), oldest first:
    /// damage found now (`damaged`), or repaired by an earlier open and not yet overwritten.
    pub holes: Vec<Hole>,
    /// Sequences missing: in the holes, and after the last record kept when the checkpoint
    /// proves they existed. They are below `next_seq` and never handed out again.
    pub lost_records: u64,
    /// The end of the log was cut because of a torn append (a crash inside `append`): one bad
    /// record after the last one kept, which the checkpoint does not prove existed. Its
    /// append never returned, so nothing saw it; its sequence is handed out again, and the
    /// file is not copied aside for it.
    pub torn_append: bool,
    /// Records after the last one kept may have existed and been seen (the checkpoint proves
    /// some did, or the file was short) and those beyond what the checkpoint proves get
    /// their sequences again: a caller that delivered them may want a new epoch.
    pub sequences_may_repeat: bool,
    /// Where the file was copied, whole and synced, before recovery changed it: set when
    /// repairing it zeroed bytes of records that had existed (a hole, a proven loss) or
    /// extended a short file.
    pub damaged_copy: Option<PathBuf>,
}

impl Recovery {
    fn from_walk(
        found: &Recovered,
        checkpoint_next_seq: u64,
        created: bool,
        extended_bytes: u64,
        damaged_copy: Option<PathBuf>,
    ) -> Recovery {
        let mut problems: Vec<String> = Vec::new();
        let mut cut_bytes = 0;
        for h in found.holes.iter().filter(|h| h.damaged) {
            let kept = if found.count == 0 {
                String::new()
            } else {
                format!(", kept the records from {} on", h.next_kept)
            };
            problems.push(format!(
                "{}; lost {} record(s) ({}..={}){kept}",
                h.reason,
                h.next_kept - h.first_missing,
                h.first_missing,
                h.next_kept - 1,
            ));
            cut_bytes += h.bytes;
        }
        if let Some((bytes, why)) = &found.cut {
            problems.push(why.clone());
            cut_bytes += bytes;
        }
        if extended_bytes > 0 {
            problems.push(format!(
                "the file was {extended_bytes} bytes short (zeroes stand in for them)"
            ));
        }
        let cut_reason = (!problems.is_empty()).then(|| problems.join("; "));
        Recovery {
            records: found.count,
            first_seq: found.first_seq,
            next_seq: found.next_seq,
            cut_bytes,
            cut_reason,
            created,
            extended_bytes,
            checkpoint_next_seq,
            holes: found.holes.clone(),
            lost_records: found.lost(),
            torn_append: found.torn && extended_bytes == 0,
            sequences_may_repeat: found.end_lost > 0 || extended_bytes > 0,
            damaged_copy,
        }
    }

    /// Whether this open found damage or a torn append (what `cut_reason` describes).
    pub fn found_damage(&self) -> bool {
        self.cut_reason.is_some()
    }
}

/// Where the log sits in its data region, in bytes from the start of the region. For
/// monitoring, tools and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the oldest record (or, when empty, where the next record goes).
    pub head: u64,
    /// Offset just past the newest record.
    pub tail: u64,
    /// When the log wraps: the offset where its older part ends (a wrap marker's offset, or
    /// the capacity). The newer part starts at offset 0.
    pub wrap: Option<u64>,
    /// Bytes the held records occupy, padding included (wrap markers, the gap before a wrap
    /// and the holes recovery left not included).
    pub used_bytes: u64,
}

/// One shard's ring log: a file of fixed capacity, mapped into memory, holding the newest
/// records that fit.
///
/// Contract: exactly one `RingLog` in one process uses a file at a time, and nothing else
/// writes to or truncates the file while it is open (the map would change under its readers).
/// The log takes no lock to enforce this; the broker gives each shard its own file.
///
/// ```
/// use tern_log::{Fsync, Record, RingLog};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("shard-0.ring");
/// let (mut log, recovery) = RingLog::open(&path, 1 << 20, Fsync::Never)?;
/// assert!(recovery.created);
///
/// let seq = log.append(&Record { timestamp: 17, ..Record::new(b"chat.room.1", b"hi") })?;
/// assert_eq!(seq, 1);
/// let got: Vec<_> = log.read_from(1).map(|r| (r.seq, r.payload.to_vec())).collect();
/// assert_eq!(got, vec![(1, b"hi".to_vec())]);
/// drop(log);
///
/// let (log, recovery) = RingLog::open(&path, 1 << 20, Fsync::Never)?;
/// assert_eq!((recovery.records, log.next_seq()), (1, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RingLog {
    file: RingFile,
    /// Bytes in the data region.
    cap: usize,
    epoch: u64,
    /// Record checksums for `epoch`.
    seeded: Seeded,
    fsync: Fsync,
    head: usize,
    tail: usize,
    wrap_at: Option<usize>,
    first_seq: u64,
    next_seq: u64,
    /// The newest record's sequence (meaningless while `count` is 0).
    last_seq: u64,
    /// Records held.
    count: u64,
    /// `(sequence, offset)` of the held records that are indexed (every multiple of
    /// `INDEX_STRIDE`, and the first after a gap in the sequences), oldest first.
    index: VecDeque<(u64, usize)>,
    /// The holes recovery left inside the live log, sorted by offset: readers and eviction
    /// step over them. Empty unless recovery found damage.
    skips: Vec<Skip>,
    /// Timestamp of the newest record.
    last_ts: u64,
    /// Held records (other than the oldest) whose timestamp is below their predecessor's.
    descents: u64,
    /// The newest checkpoint written to the header.
    ckpt: Checkpoint,
    /// Something was appended since the last sync.
    dirty: bool,
    /// When `tick` last synced.
    last_tick_sync: Option<Instant>,
    closed: bool,
    /// Batched writes ([`RingLog::batch_writes`]): the appends not yet in the file.
    stage: Option<Box<Stage>>,
    /// The first error of a batched write since the last flush returned one: the next
    /// [`RingLog::flush`] (or `sync`) returns it.
    write_error: Option<LogError>,
    /// Test hook: how many more bytes the log may write before it "crashes" (stops writing).
    #[cfg(test)]
    budget: Option<usize>,
    /// Test hook: every write that reached the file, in order.
    #[cfg(test)]
    journal: Option<Vec<(usize, Vec<u8>)>>,
}

/// What batched writes hold between flushes: the bytes appends wrote, and the log as the
/// file holds it (what a checkpoint may say, and what readers may read).
struct Stage {
    /// The bytes of data offsets `at..at + buf.len()`, one contiguous run: the records
    /// appended since the last flush and the terminator after them.
    buf: Vec<u8>,
    at: usize,
    /// At the last flush: where the newest record ended, the sequence after it, the newest
    /// sequence, and how many records the log held. Records are evicted oldest first, so
    /// `file_count` less the evictions since is how many of the held records are in the file.
    file_tail: usize,
    file_next_seq: u64,
    file_last_seq: u64,
    file_count: u64,
}

impl Stage {
    /// Makes the batch end at data offset `pos`, where a record of `n` bytes goes, when
    /// that keeps it one contiguous run: it is empty, or it ends at `pos`, or only the
    /// previous record's terminator lies past `pos` (which the record overwrites). False
    /// otherwise: the append takes the general path.
    fn extend(&mut self, pos: usize, n: usize) -> bool {
        if self.buf.is_empty() {
            self.at = pos;
            return true;
        }
        let end = self.at + self.buf.len();
        if pos < self.at || pos > end || end > pos + n {
            return false;
        }
        self.buf.truncate(pos - self.at);
        true
    }

    /// Appends a record's bytes, exactly as the general path puts them one field at a
    /// time: its commit word (length and CRC over the rest), the fixed part, the variable
    /// fields, the padding to `n`, and the terminator when it follows. One reservation,
    /// then each part copied once into its place: no per-part capacity check or length
    /// update, no call to copy an empty field or to zero the padding.
    fn push_record(
        &mut self,
        rec: &Record<'_>,
        seq: u64,
        exact: usize,
        n: usize,
        terminator: bool,
        seeded: &Seeded,
    ) {
        let start = self.buf.len();
        let len = n + if terminator { 8 } else { 0 };
        let fixed = rec.fixed_part(seq);
        let fields = rec.var_fields();
        debug_assert_eq!(
            RECORD_HEADER_LEN + fields.iter().map(|f| f.len()).sum::<usize>(),
            exact
        );
        debug_assert!(exact <= n && n < exact + ALIGN);
        // The padding and the terminator are at most 15 bytes: 16 zero bytes are stored
        // after the fields whatever their number, so room is made for them.
        self.buf.reserve(len.max(exact + 16));
        // SAFETY: `reserve` made room for `max(len, exact + 16)` bytes after `start`,
        // so every store below is inside the allocation. They cover `start..start +
        // len` (and at most 16 bytes more, left out of the length): 8 zero bytes (the
        // commit word's place), the 32-byte fixed part, the variable fields, whose
        // lengths add up to `exact - 40` (`Record::exact_len`, which `append` computed
        // from this record; the debug assertion above), then 16 zero bytes from
        // `exact`, which cover the padding and the terminator (`len - exact <= 15`).
        // So every byte up to the new length is initialised when `set_len` runs. The
        // sources are the record's borrowed slices and a local, never `self.buf`
        // (which `&mut self` holds uniquely).
        unsafe {
            let base = self.buf.as_mut_ptr().add(start);
            base.cast::<[u8; 8]>().write_unaligned([0; 8]);
            base.add(8).cast::<[u8; 32]>().write_unaligned(fixed);
            let mut at = RECORD_HEADER_LEN;
            for field in fields {
                if !field.is_empty() {
                    std::ptr::copy_nonoverlapping(field.as_ptr(), base.add(at), field.len());
                    at += field.len();
                }
            }
            base.add(exact).cast::<[u8; 16]>().write_unaligned([0; 16]);
            self.buf.set_len(start + len);
        }
        let out = &mut self.buf[start..];
        let sum = seeded.crc(&out[8..exact]);
        out[..8].copy_from_slice(&commit_word(exact as u32, sum));
    }
}

/// Staged bytes past which an append first flushes: a batch stays a small part of any ring.
const STAGE_MAX: usize = 256 * 1024;

/// Where an append puts its bytes, decided before any is written.
struct Placement {
    /// Data offset of the new record.
    pos: usize,
    /// Data offset of the wrap marker to write first, if the append wraps.
    marker: Option<usize>,
}

impl RingLog {
    /// Opens `path`, creating it with a fresh random non-zero epoch if it does not exist.
    ///
    /// `capacity` is the size of the data region in bytes (a multiple of 8, at least 128);
    /// the file is 4096 bytes longer, and every block of it is reserved on its filesystem
    /// ([`LogError::NoSpace`] when there is no room). An existing file is validated (magic,
    /// format version, capacity, header CRC) and recovered: every record is checked (length
    /// bounds, CRC32, sequences only growing), damage costs only the records it touched (the
    /// walk resynchronises on the next intact record, leaving a hole), a torn last append is
    /// cut, and [`Recovery`] says what was kept, lost and cut. When repairing the file would
    /// zero bytes of records that existed, the file is first copied aside whole
    /// ([`Recovery::damaged_copy`]); if that copy cannot be made
    /// ([`LogError::CannotPreserve`]), nothing is changed. Recovery then zeroes the data
    /// region outside the recovered records, so nothing it cut can come back, and syncs once
    /// if it changed anything.
    ///
    /// A file of another format version or capacity, or with a corrupt header, is an error
    /// naming the file and what is wrong, and is left byte-for-byte as it was.
    pub fn open(path: &Path, capacity: u64, fsync: Fsync) -> Result<(RingLog, Recovery), LogError> {
        let opened = RingFile::open(path, capacity)?;
        let cap = opened.file.bytes().len() - HEADER_LEN;
        let epoch = opened.header.epoch;
        let ckpt = opened.checkpoint;
        let found = recover(
            &opened.file.bytes()[HEADER_LEN..],
            epoch,
            &ckpt,
            index_capacity(cap),
        );
        // Nothing has been written yet: keep the damaged file before repairing it. (A short
        // file was copied before it was extended.)
        let mut damaged_copy = opened.damaged_copy;
        if found.needs_copy && damaged_copy.is_none() {
            let damage = format!(
                "{} record(s) lost in {} hole(s){}",
                found.lost(),
                found.holes.iter().filter(|h| h.damaged).count(),
                if found.end_lost > 0 {
                    " and at its end"
                } else {
                    ""
                }
            );
            damaged_copy = Some(opened.file.copy_aside(&damage)?);
        }
        let recovery = Recovery::from_walk(
            &found,
            ckpt.next_seq,
            opened.created,
            opened.extended,
            damaged_copy,
        );
        let mut log = RingLog {
            file: opened.file,
            cap,
            epoch,
            seeded: Seeded::new(epoch),
            fsync,
            head: found.head,
            tail: found.tail,
            wrap_at: found.wrap_at,
            first_seq: found.first_seq,
            next_seq: found.next_seq,
            last_seq: found.last_seq,
            count: found.count,
            index: found.index,
            skips: found.skips,
            last_ts: found.last_ts,
            descents: found.descents,
            ckpt,
            dirty: false,
            last_tick_sync: None,
            closed: false,
            stage: None,
            write_error: None,
            #[cfg(test)]
            budget: None,
            #[cfg(test)]
            journal: None,
        };
        // When the older part of a wrapped log ends before the end of the region, a wrap
        // marker there sends readers to offset 0; recovery rewrites one that damage took.
        let mut repaired = false;
        if let Some(w) = log.wrap_at.filter(|&w| w < cap) {
            let marker = wrap_marker(epoch, found.after_wrap);
            if log.data()[w..w + 8] != marker {
                log.put(HEADER_LEN + w, &marker);
                repaired = true;
            }
        }
        // A new file is all zeroes already; an existing one may hold what recovery cut, or
        // stale records from earlier laps, beyond the log, and damaged bytes in its holes.
        // Zero them so no cut record can ever pass for a new one.
        let cleared = if opened.created {
            false
        } else {
            log.clear_outside_log()
        };
        let checkpoint_moved = log.checkpoint_differs(log.tail, log.next_seq);
        if checkpoint_moved {
            log.write_checkpoint(log.tail, log.next_seq);
        }
        if cleared || checkpoint_moved || repaired {
            log.file.sync_data()?;
            log.file.sync_header()?;
        }
        Ok((log, recovery))
    }

    /// What [`RingLog::open`] would recover from the file at `path`, without changing it:
    /// the same validation (and errors) and the same walk, on a copy read into memory.
    /// `extended_bytes` is how much `open` would extend a short file; `damaged_copy` is
    /// `None` (nothing is copied). For tools, and for looking at a file before opening it.
    pub fn inspect(path: &Path, capacity: u64) -> Result<Recovery, LogError> {
        let (header, ckpt, data, short_by) = crate::file::read_for_inspection(path, capacity)?;
        let found = recover(&data, header.epoch, &ckpt, 0);
        Ok(Recovery::from_walk(
            &found,
            ckpt.next_seq,
            false,
            short_by,
            None,
        ))
    }

    /// The log's epoch: random, non-zero, fixed when the file was created. Sequences are
    /// unique within an epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The oldest sequence held; equal to [`RingLog::next_seq`] when the log is empty.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The sequence the next append gets: 1 for a new file; after recovery, the last
    /// recovered sequence + 1, or the checkpointed next sequence if that is higher (a
    /// sequence the checkpoint proves was handed out is never handed out again).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records held. Lower than `next_seq - first_seq` when recovery left holes: the
    /// sequences of lost records are missing.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes in the data region (the `capacity` the log was opened with).
    pub fn capacity(&self) -> u64 {
        self.cap as u64
    }

    /// The largest record (its [`Record::stored_len`]) this log accepts: its capacity, capped
    /// by what the 32-bit length field can describe. Appending one that large evicts every
    /// other record.
    pub fn max_record_len(&self) -> u64 {
        (self.cap as u64).min(MAX_RECORD_LEN)
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Where the log sits in its data region.
    pub fn layout(&self) -> Layout {
        let used = if self.is_empty() {
            0
        } else {
            match self.wrap_at {
                None => self.tail - self.head,
                Some(w) => w - self.head + self.tail,
            }
        } - self.skips.iter().map(|s| s.to - s.at).sum::<usize>();
        Layout {
            head: self.head as u64,
            tail: self.tail as u64,
            wrap: self.wrap_at.map(|w| w as u64),
            used_bytes: used as u64,
        }
    }

    /// Appends one record and returns its sequence, evicting the oldest records as needed
    /// (exactly those whose bytes the new record, or its wrap marker, overwrites).
    /// `rec.seq` is ignored.
    ///
    /// A record whose [`Record::stored_len`] exceeds [`RingLog::max_record_len`] is refused
    /// with [`LogError::RecordTooLarge`], and a field longer than its length prefix with
    /// [`LogError::FieldTooLong`]; nothing is written then.
    ///
    /// Cost: a copy into the map (or the batch) and a CRC over the record. No allocation; no
    /// system call unless the policy is [`Fsync::Always`], or, batched, when the batch must
    /// be written first (the append wraps, the batch holds 256 KiB, an eviction would leave
    /// no flushed record). Under `Always`, an [`LogError::Io`] means the record is in the
    /// log (as `next_seq() - 1`) but may not be durable. Batched, a failed write to the
    /// file is returned by the next [`RingLog::flush`], not here: an error from `append`
    /// always concerns its own record.
    pub fn append(&mut self, rec: &Record<'_>) -> Result<u64, LogError> {
        let exact = rec.exact_len();
        rec.check_fields(exact)?;
        let stored = rec.stored_len();
        if stored > self.max_record_len() {
            return Err(LogError::RecordTooLarge {
                size: stored,
                max: self.max_record_len(),
            });
        }
        let (exact, n) = (exact as usize, stored as usize);
        // Batched writes keep a batch one small contiguous run: an append that wraps, or
        // whose terminator goes to offset 0, starts a new one.
        if let Some(stage) = self.stage.as_deref() {
            if stage.buf.len() >= STAGE_MAX || self.tail + n + 8 > self.cap {
                self.flush_stage();
            }
        }
        let seq = self.next_seq;
        let tail_before = self.tail;

        // From here on the append always completes, so the in-memory state and the file stay
        // consistent; an msync error under `Always` is returned at the end.
        let mut sync_error = None;
        let place = self.make_room(n);
        // 1. The checkpoint, if the head moved: recovery must never start at a record this
        //    append is about to overwrite. (Batched, the flush writes it before the batch.)
        let head_moved =
            self.ckpt.head != self.head as u64 || self.ckpt.first_seq != self.first_seq;
        if head_moved && self.stage.is_none() {
            self.write_checkpoint(tail_before, seq);
            if self.fsync == Fsync::Always {
                keep_first(&mut sync_error, self.file.sync_header());
            }
        }
        // 2. The wrap marker, announcing that record `seq` is at offset 0.
        if let Some(m) = place.marker {
            self.put(HEADER_LEN + m, &wrap_marker(self.epoch, seq));
            compiler_fence(Ordering::SeqCst);
        }
        let terminator_at = |after: usize| (after != self.head).then_some(after);
        let after = if place.pos + n == self.cap {
            0
        } else {
            place.pos + n
        };
        // (`make_room` has already set `head` to the record's own offset if the log was or
        // became empty.)
        let terminator = terminator_at(after);
        if place.marker.is_none() && terminator.is_none_or(|t| t == place.pos + n) {
            if let Some(stage) = self.stage.as_deref_mut() {
                if stage.extend(place.pos, n) {
                    stage.push_record(rec, seq, exact, n, terminator.is_some(), &self.seeded);
                    self.committed(rec, seq, place.pos, n);
                    return Ok(seq);
                }
            }
        }
        // 3. The record, all but its first 8 bytes: the fixed fields first (so a torn record
        //    names its sequence), then the variable fields and zero padding.
        let base = HEADER_LEN + place.pos;
        if self.stage.is_some() {
            // Batched, the commit word's place is staged first (zero until step 5), so
            // that the record is one run from its first byte.
            self.put(base, &[0u8; 8]);
        }
        self.put(base + 8, &rec.fixed_part(seq));
        compiler_fence(Ordering::SeqCst);
        let mut at = base + RECORD_HEADER_LEN;
        for field in rec.var_fields() {
            self.put(at, field);
            at += field.len();
        }
        self.put(at, &[0u8; ALIGN][..n - exact]);
        // 4. The terminator: zero the 8 bytes after the record so the log visibly ends there
        //    (not if the ring is exactly full there: those bytes are the oldest record).
        if let Some(t) = terminator {
            self.put(HEADER_LEN + t, &[0u8; 8]);
        }
        compiler_fence(Ordering::SeqCst);
        // 5. The commit: length and CRC. Until these 8 bytes are complete the record does not
        //    validate, so a crash at any earlier byte leaves the log as it was.
        let sum = self.seeded.crc(self.written(base + 8, exact - 8));
        self.put(base, &commit_word(exact as u32, sum));
        compiler_fence(Ordering::SeqCst);

        self.committed(rec, seq, place.pos, n);

        if self.fsync == Fsync::Always {
            if let Some(m) = place.marker {
                keep_first(&mut sync_error, self.file.sync_range(HEADER_LEN + m, 8));
            }
            let synced = match terminator {
                Some(t) if t == place.pos + n => self.file.sync_range(base, n + 8),
                Some(t) => self
                    .file
                    .sync_range(base, n)
                    .and_then(|()| self.file.sync_range(HEADER_LEN + t, 8)),
                None => self.file.sync_range(base, n),
            };
            keep_first(&mut sync_error, synced);
            self.dirty = sync_error.is_some();
        }
        match sync_error {
            None => Ok(seq),
            Some(e) => Err(e),
        }
    }

    /// The record `seq` of `n` bytes at data offset `pos` is in: the in-memory state
    /// follows.
    fn committed(&mut self, rec: &Record<'_>, seq: u64, pos: usize, n: usize) {
        if self.is_empty() {
            self.head = pos;
            self.descents = 0;
        } else if rec.timestamp < self.last_ts {
            self.descents += 1;
        }
        self.last_ts = rec.timestamp;
        if is_indexed(seq, (self.count > 0).then_some(self.last_seq)) {
            self.index.push_back((seq, pos));
        }
        self.count += 1;
        self.last_seq = seq;
        self.tail = pos + n;
        self.next_seq = seq + 1;
        self.dirty = true;
    }

    /// From now on, appends are written to the file with `pwrite`, a batch at a time,
    /// instead of through the map, which is then only read. Writing back pages that were
    /// written through a shared mapping write-protects them in every thread's page tables
    /// (a TLB shootdown on every core the process runs on, and a write fault on the next
    /// append to each page); pages written with `pwrite` are never mapped writable, so a
    /// sync (`fdatasync` by another thread, say) costs the appending thread nothing.
    ///
    /// The price: an append is in the file (and safe from a process crash) once
    /// [`RingLog::flush`] returns, not when `append` does. A batch is written when it
    /// reaches 256 KiB, when an append wraps, and by [`RingLog::flush`],
    /// [`RingLog::checkpoint`], [`RingLog::sync`], [`RingLog::close`] and drop; readers
    /// ([`RingLog::read_from`], [`RingLog::seq_at_time`]) see what was flushed. Under
    /// [`Fsync::Always`] it does nothing: every append must be durable when it returns.
    pub fn batch_writes(&mut self) {
        if self.fsync == Fsync::Always || self.stage.is_some() {
            return;
        }
        self.stage = Some(Box::new(Stage {
            buf: Vec::new(),
            at: 0,
            file_tail: self.tail,
            file_next_seq: self.next_seq,
            file_last_seq: self.last_seq,
            file_count: self.count,
        }));
    }

    /// Batched writes ([`RingLog::batch_writes`]): writes what was appended since the last
    /// flush to the file (one `pwrite`, after a checkpoint when the head moved). Returns
    /// the first write error since the last flush returned one (a batch written inside an
    /// append, a checkpoint, this one). Without batched writes there is nothing to write.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.flush_stage();
        match self.write_error.take() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The records with sequence `>= from` (clamped to [`RingLog::first_seq`]), oldest first,
    /// borrowed from the map. A `from` in a hole recovery left starts at the first record after
    /// it. Seeking costs at most [`crate::INDEX_STRIDE`] record hops through the sparse index,
    /// and each `next()` decodes one record: no allocation, no CRC check (the records were
    /// checked when recovered or written).
    pub fn read_from(&self, from: u64) -> Records<'_> {
        let (count, last, _) = self.readable();
        let done = count == 0 || from > last;
        Records {
            data: self.data(),
            skips: &self.skips,
            pos: if done {
                self.tail
            } else {
                self.offset_of(from.max(self.first_seq))
            },
            last,
            done,
        }
    }

    /// The first held sequence whose timestamp is `>= ts`, or [`RingLog::next_seq`] if none.
    ///
    /// Exact whatever the timestamps: while every held record's timestamp is at least its
    /// predecessor's (the usual case), this is a binary search over the sparse index plus at
    /// most two strides of record hops; while some held record goes back in time (the clock
    /// was set back), it scans from the oldest record.
    pub fn seq_at_time(&self, ts: u64) -> u64 {
        let (count, last, next_seq) = self.readable();
        if count == 0 {
            return next_seq;
        }
        let data = self.data();
        let (mut seq, mut pos) = (self.first_seq, self.head);
        if self.descents == 0 {
            let i = self
                .index
                .partition_point(|&(s, p)| s <= last && get_u64(data, p + 16) < ts);
            if i > 0 {
                (seq, pos) = self.index[i - 1];
            }
        }
        loop {
            if get_u64(data, pos + 16) >= ts {
                return seq;
            }
            if seq >= last {
                return next_seq;
            }
            pos = self.hop(pos);
            seq = get_u64(data, pos + 8);
        }
    }

    /// Writes a checkpoint of the current state into the header page if it changed: one
    /// 48-byte store (batched: the batch first, then a 48-byte `pwrite`). Recovery steps
    /// over damage only inside the span the newest checkpoint vouches for, so a caller that
    /// rarely syncs or evicts (a ring that has not wrapped yet) calls this from its timer
    /// to keep that span current.
    pub fn checkpoint(&mut self) {
        self.flush_stage();
        if self.checkpoint_differs(self.tail, self.next_seq) {
            self.write_checkpoint(self.tail, self.next_seq);
        }
    }

    /// Applies the fsync policy: under [`Fsync::Interval`], syncs if something was appended
    /// and the interval has passed since the last sync `tick` did (the broker calls this from
    /// its timer). Under `Never` and `Always` it does nothing.
    pub fn tick(&mut self, now: Instant) -> Result<(), LogError> {
        let Fsync::Interval(every) = self.fsync else {
            return Ok(());
        };
        let due = self
            .last_tick_sync
            .is_none_or(|last| now.saturating_duration_since(last) >= every);
        if self.dirty && due {
            self.sync()?;
            self.last_tick_sync = Some(now);
        }
        Ok(())
    }

    /// Makes everything appended so far durable, whatever the policy: writes a checkpoint of
    /// the current state, `msync`s the header page, then the data region. (Header first: the
    /// moment the new head is on disk, the records it evicted may be overwritten there too.)
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.flush()?;
        if self.checkpoint_differs(self.tail, self.next_seq) {
            self.write_checkpoint(self.tail, self.next_seq);
        }
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        self.file.sync_header()?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }

    /// Syncs (whatever the policy) and closes the log, reporting any error `Drop` would have
    /// to swallow.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync()?;
        self.closed = true;
        Ok(())
    }

    // ----- internals -----

    /// The data region.
    #[inline]
    fn data(&self) -> &[u8] {
        &self.file.bytes()[HEADER_LEN..]
    }

    /// Writes `bytes` at file offset `at`: into the map, or, batched, into the batch (a
    /// checkpoint straight to the file). Every write of the log goes through here.
    #[inline]
    fn put(&mut self, at: usize, bytes: &[u8]) {
        let Some(stage) = self.stage.as_deref_mut().filter(|_| at >= HEADER_LEN) else {
            self.write_file(at, bytes);
            return;
        };
        let d = at - HEADER_LEN;
        if !stage.buf.is_empty() && (d < stage.at || d > stage.at + stage.buf.len()) {
            // Not where the batch goes on (a wrap marker's record at offset 0, a
            // terminator there): the batch goes to the file first, so the file gets the
            // bytes in the order they were put.
            self.write_stage();
            self.put(at, bytes);
            return;
        }
        if stage.buf.is_empty() {
            stage.at = d;
        }
        let end = d - stage.at + bytes.len();
        if stage.buf.len() < end {
            stage.buf.resize(end, 0);
        }
        stage.buf[end - bytes.len()..end].copy_from_slice(bytes);
    }

    /// Bytes the log wrote at file offset `at`: from the batch if it holds them, else
    /// from the map.
    fn written(&self, at: usize, len: usize) -> &[u8] {
        match self.stage.as_deref() {
            Some(s) if at >= HEADER_LEN + s.at && at + len <= HEADER_LEN + s.at + s.buf.len() => {
                &s.buf[at - HEADER_LEN - s.at..][..len]
            }
            _ => &self.file.bytes()[at..at + len],
        }
    }

    /// Writes `bytes` to the file at offset `at`: through the map, or with `pwrite` when
    /// batched (an error is kept for the next flush). Every byte that reaches the
    /// file goes through here, so tests can stop the log at any byte.
    fn write_file(&mut self, at: usize, bytes: &[u8]) {
        #[cfg(test)]
        if let Some(journal) = self.journal.as_mut() {
            journal.push((at, bytes.to_vec()));
        }
        #[cfg(test)]
        let bytes = match self.budget.as_mut() {
            Some(left) => {
                let n = (*left).min(bytes.len());
                *left -= n;
                &bytes[..n]
            }
            None => bytes,
        };
        if self.stage.is_some() {
            if let Err(e) = self.file.write_at(at, bytes) {
                self.write_error.get_or_insert(e);
            }
        } else {
            self.file.bytes_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Batched: writes the batch to the file, after a checkpoint when the head moved since
    /// the last one. That checkpoint names the current head, which is in the file (an
    /// eviction that would leave none of the file's records flushes first,
    /// [`RingLog::evict_oldest`]), and the end of the log as the file held it before the
    /// batch; so recovery never starts at a record the batch overwrites, whichever of the
    /// batch's bytes reached the file.
    fn write_stage(&mut self) {
        let Some(stage) = self.stage.as_deref() else {
            return;
        };
        if self.ckpt.head != self.head as u64 || self.ckpt.first_seq != self.first_seq {
            let (tail, next_seq) = (stage.file_tail, stage.file_next_seq);
            self.write_checkpoint(tail, next_seq);
        }
        let (at, mut buf) = match self.stage.as_deref_mut() {
            Some(s) if !s.buf.is_empty() => (s.at, std::mem::take(&mut s.buf)),
            _ => return,
        };
        self.write_file(HEADER_LEN + at, &buf);
        buf.clear();
        if let Some(s) = self.stage.as_deref_mut() {
            s.buf = buf; // its capacity, for the next batch
        }
    }

    /// Batched, between appends: writes the batch ([`RingLog::write_stage`]) and notes the
    /// log as the file now holds it.
    fn flush_stage(&mut self) {
        self.write_stage();
        let (tail, next_seq, last_seq, count) =
            (self.tail, self.next_seq, self.last_seq, self.count);
        if let Some(s) = self.stage.as_deref_mut() {
            s.file_tail = tail;
            s.file_next_seq = next_seq;
            s.file_last_seq = last_seq;
            s.file_count = count;
        }
    }

    /// What readers may read: the held records in the file (all of them unless batched
    /// appends wait for a flush), as `(count, newest sequence, next sequence)`.
    fn readable(&self) -> (u64, u64, u64) {
        match self.stage.as_deref() {
            Some(s) => (
                s.file_count.min(self.count),
                s.file_last_seq,
                s.file_next_seq,
            ),
            None => (self.count, self.last_seq, self.next_seq),
        }
    }

    /// Whether a checkpoint written now would differ from the newest one.
    fn checkpoint_differs(&self, tail: usize, next_seq: u64) -> bool {
        let c = &self.ckpt;
        c.head != self.head as u64
            || c.first_seq != self.first_seq
            || c.tail != tail as u64
            || c.next_seq != next_seq
    }

    /// Writes the next checkpoint generation (into the slot not holding the newest one) for
    /// the current head and the given end of log.
    fn write_checkpoint(&mut self, tail: usize, next_seq: u64) {
        let c = Checkpoint {
            generation: self.ckpt.generation + 1,
            head: self.head as u64,
            first_seq: self.first_seq,
            tail: tail as u64,
            next_seq,
        };
        let bytes = c.encode(self.epoch);
        self.put(c.slot_offset(), &bytes);
        compiler_fence(Ordering::SeqCst);
        self.ckpt = c;
    }

    /// Decides where a record of `n` stored bytes goes and evicts (in memory) every record its
    /// bytes, or its wrap marker's, would overlap. Writes nothing.
    fn make_room(&mut self, n: usize) -> Placement {
        let mut marker = None;
        loop {
            if self.is_empty() {
                // Nothing to keep: no marker needed, the checkpoint will name the new spot.
                self.wrap_at = None;
                self.skips.clear();
                let pos = if self.tail + n <= self.cap {
                    self.tail
                } else {
                    0
                };
                self.head = pos;
                self.tail = pos;
                return Placement { pos, marker: None };
            }
            match self.wrap_at {
                // Live: [head, tail). Free: [tail, cap) and [0, head).
                None => {
                    if self.tail + n <= self.cap {
                        return Placement {
                            pos: self.tail,
                            marker,
                        };
                    }
                    if self.tail < self.cap {
                        marker = Some(self.tail);
                    }
                    self.wrap_at = Some(self.tail);
                    self.tail = 0;
                }
                // Live: [head, w) then [0, tail). Free: [tail, head).
                Some(_) => {
                    if self.tail + n <= self.head {
                        return Placement {
                            pos: self.tail,
                            marker,
                        };
                    }
                    self.evict_oldest();
                }
            }
        }
    }

    /// Drops the oldest record from the in-memory state.
    fn evict_oldest(&mut self) {
        // Batched: the head must stay in the file (`write_stage`), so evicting the file's
        // last held record writes the batch first. (Never inside a wrapping append, which
        // flushed before it began: `tail` is still where the batch ends.)
        if let Some(stage) = self.stage.as_deref() {
            if !stage.buf.is_empty() && stage.file_count <= 1 {
                self.flush_stage();
            }
        }
        if let Some(stage) = self.stage.as_deref_mut() {
            stage.file_count = stage.file_count.saturating_sub(1);
        }
        let data = self.data();
        let n = align(get_u32(data, self.head) as usize).max(ALIGN);
        let old_ts = get_u64(data, self.head + 16);
        if self
            .index
            .front()
            .is_some_and(|&(s, _)| s == self.first_seq)
        {
            self.index.pop_front();
        }
        self.count -= 1;
        self.head += n;
        if self.wrap_at == Some(self.head) {
            self.head = 0;
            self.wrap_at = None;
        }
        // A hole after the evicted record is free space now.
        if let Ok(i) = self.skips.binary_search_by_key(&self.head, |s| s.at) {
            self.head = self.skips.remove(i).to;
        }
        if self.is_empty() {
            self.first_seq = self.next_seq;
            self.descents = 0;
            self.skips.clear();
        } else {
            let (seq, ts) = {
                let data = self.data();
                (get_u64(data, self.head + 8), get_u64(data, self.head + 16))
            };
            self.first_seq = seq;
            if ts < old_ts {
                self.descents -= 1;
            }
        }
    }

    /// Data offset of the first held record with sequence `>= seq` (which must be at most
    /// the newest held).
    fn offset_of(&self, seq: u64) -> usize {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        let (mut s, mut pos) = if i > 0 {
            self.index[i - 1]
        } else {
            (self.first_seq, self.head)
        };
        while s < seq {
            pos = self.hop(pos);
            s = get_u64(self.data(), pos + 8);
        }
        pos
    }

    /// Data offset of the record after the held record at `pos` (which must not be the
    /// newest).
    fn hop(&self, pos: usize) -> usize {
        next_record(
            self.data(),
            &self.skips,
            pos + align(get_u32(self.data(), pos) as usize),
        )
    }

    /// Zeroes every byte of the data region outside the live records and the live wrap
    /// marker (the holes recovery left included), skipping pages that are zero already.
    /// Returns whether it wrote anything.
    fn clear_outside_log(&mut self) -> bool {
        let ranges: [(usize, usize); 2] = if self.is_empty() {
            [(0, self.cap), (0, 0)]
        } else {
            match self.wrap_at {
                None => [(self.tail, self.cap), (0, self.head)],
                Some(w) => [(self.tail, self.head), ((w + 8).min(self.cap), self.cap)],
            }
        };
        let holes: Vec<(usize, usize)> = self.skips.iter().map(|s| (s.at, s.to)).collect();
        let mut wrote = false;
        for (from, to) in ranges.into_iter().chain(holes) {
            let mut at = from;
            while at < to {
                // Chunk on 4 KiB file-page boundaries so untouched pages stay clean.
                let end = (((HEADER_LEN + at) / 4096 + 1) * 4096 - HEADER_LEN).min(to);
                let chunk = &mut self.file.bytes_mut()[HEADER_LEN + at..HEADER_LEN + end];
                if !is_zero(chunk) {
                    chunk.fill(0);
                    wrote = true;
                }
                at = end;
            }
        }
        wrote
    }

    /// Test hook: lets the next writes through for `bytes` bytes, then silently drops every
    /// later write, as if the process had died there.
    #[cfg(test)]
    pub(crate) fn crash_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Test hook: keeps every write that reaches the file from now on, in order.
    #[cfg(test)]
    pub(crate) fn keep_journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// Test hook: the writes kept since [`RingLog::keep_journal`].
    #[cfg(test)]
    pub(crate) fn journal(&self) -> &[(usize, Vec<u8>)] {
        self.journal.as_deref().unwrap_or_default()
    }

    /// Test hook: bytes still allowed before the simulated crash.
    #[cfg(test)]
    pub(crate) fn budget_left(&self) -> Option<usize> {
        self.budget
    }

    /// Test hook: the whole file as the page cache holds it.
    #[cfg(test)]
    pub(crate) fn file_image(&self) -> Vec<u8> {
        self.file.bytes().to_vec()
    }
}

impl Drop for RingLog {
    /// Writes a final checkpoint and, unless the policy is [`Fsync::Never`], syncs. Errors are
    /// dropped; call [`RingLog::close`] to see them.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        #[cfg(test)]
        if self.budget.is_some() {
            return; // A simulated crash: the process would not have run this.
        }
        self.flush_stage();
        if self.checkpoint_differs(self.tail, self.next_seq) {
            self.write_checkpoint(self.tail, self.next_seq);
        }
        if self.fsync != Fsync::Never {
            let _ = self.file.sync_header();
            let _ = self.file.sync_data();
        }
    }
}

impl std::fmt::Debug for RingLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingLog")
            .field("path", &self.path())
            .field("epoch", &format_args!("{:#018x}", self.epoch))
            .field("capacity", &self.cap)
            .field("fsync", &self.fsync)
            .field("first_seq", &self.first_seq)
            .field("next_seq", &self.next_seq)
            .field("layout", &self.layout())
            .finish()
    }
}

/// Keeps the first error of a series of msyncs that must all be attempted.
fn keep_first(first: &mut Option<LogError>, result: Result<(), LogError>) {
    if let Err(e) = result {
        first.get_or_insert(e);
    }
}

/// Resolves a position where a record may start: the end of the region or a wrap marker mean
/// "continue at offset 0", and a zero length word where a held record follows is a hole
/// recovery left (`skips`, sorted by offset): continue where it ends.
#[inline]
fn next_record(data: &[u8], skips: &[Skip], p: usize) -> usize {
    let p = if p >= data.len() || get_u32(data, p) == WRAP_LEN {
        0
    } else {
        p
    };
    if !skips.is_empty() && get_u32(data, p) == 0 {
        if let Ok(i) = skips.binary_search_by_key(&p, |s| s.at) {
            return skips[i].to;
        }
    }
    p
}

fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    let acc = words.by_ref().fold(0u64, |acc, w| acc | get_u64(w, 0));
    acc == 0 && words.remainder().iter().all(|&x| x == 0)
}

/// Index entries to reserve up front so appends never grow the index: one per stride of the
/// smallest possible records, capped (a larger ring may grow it once in a while).
fn index_capacity(cap: usize) -> usize {
    (cap / (RECORD_HEADER_LEN * INDEX_STRIDE as usize) + 2).min(1 << 20)
}

/// The records of a [`RingLog`] from some sequence on, oldest first, borrowed from its map.
/// See [`RingLog::read_from`].
#[derive(Clone)]
pub struct Records<'a> {
    data: &'a [u8],
    skips: &'a [Skip],
    pos: usize,
    /// The newest record's sequence: the iterator ends after it.
    last: u64,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        self.next_stored().map(|(rec, _)| rec)
    }
}

impl<'a> Records<'a> {
    /// The next record, with the bytes it occupies in the map (its [`Record::stored_len`],
    /// padding included): what a reader copies to hand the record on as one piece, to be
    /// read back with [`StoredRecords`].
    #[inline]
    pub fn next_stored(&mut self) -> Option<(Record<'a>, &'a [u8])> {
        if self.done {
            return None;
        }
        let at = next_record(self.data, self.skips, self.pos);
        match decode(self.data, at, self.data.len()) {
            Ok((rec, stored)) => {
                self.pos = at + stored;
                self.done = rec.seq >= self.last;
                Some((rec, &self.data[at..at + stored]))
            }
            Err(_) => {
                // Only reachable if someone else wrote to the file; see RingLog's contract.
                debug_assert!(false, "undecodable held record at data offset {at}");
                self.done = true;
                None
            }
        }
    }
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("pos", &self.pos)
            .field("last", &self.last)
            .field("done", &self.done)
            .finish()
    }
}
impl FusedIterator for Records<'_> {}

#[cfg(test)]
mod tests;

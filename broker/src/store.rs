//! A shard's store: its ring log, which subjects go in it, and the catch-ups (replays) in
//! progress.
//!
//! Owns: the shard's [`RingLog`] (appended to before a stored message is delivered, so
//! whatever a subscriber is sent live is already in the log), the store filters, its part
//! in idempotent publishing (a message id is checked against, and remembered in, the
//! broker-wide [`Dedupe`] around the append, which is told where the log begins), one
//! [`Replay`] cursor per catch-up (binary subscriptions, text `$TERN.REPLAY` requests) and
//! their pacing, and the data directory (its lock, and the refusal of ring files of another
//! shard count).
//!
//! The handover from replay to live has no gap and no duplicate because both happen in
//! the shard's thread: while a subscription has a cursor, live delivery of *stored*
//! messages to it is skipped (they are in the log, behind the cursor's reach), and the
//! cursor is dropped in the same step that delivers the last record the log holds; from
//! then on live delivery takes over with the next sequence. Messages the store does not
//! keep are delivered live throughout, since no replay will ever bring them.
//!
//! A subscription's catch-up step leaves as one run (`mesh::ReplayRun`): its records
//! copied out of the map as the log stores them into one buffer, one envelope and one
//! ticket in flight a step; the subscriber's worker makes the messages.
//!
//! Never: touches a socket or a connection, or blocks; replays advance in bounded batches
//! (`replay_batch` records and `replay_bytes` bytes per loop turn, across all of them), and
//! one whose destination is congested, or that has `replay_bytes` its client's connection
//! has not taken yet (`mesh::Flight`), waits its turn; a "last N" start keeps nothing per
//! record, whatever N.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_log::{Fsync as LogFsync, Record, Recovery, RingLog};
use tern_protocol::subject;

use crate::config::{Fsync, StoreConfig};
use crate::dedupe::{Dedupe, FirstCopy};
use crate::index::FastMap;
use crate::mesh::{
    ConnId, Flight, InboxPart, Msg, ReplayRequest, ReplayRun, ReplayStart, Stamp, SubRef,
};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another ternd (lock file {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "data directory {dir} holds the ring logs of {}, but ternd was started with \
         --workers {workers}: subjects map to shards by the shard count, so those logs (and \
         their message-id history) cannot serve {workers} shards. {}",
        describe_counts(found),
        advice(found, *workers, dir)
    )]
    ShardCount {
        dir: PathBuf,
        /// Each other shard count found, with its ring files.
        found: Vec<(usize, Vec<PathBuf>)>,
        workers: usize,
    },
    #[error(transparent)]
    Log(#[from] tern_log::LogError),
}

/// "2 shards (shard-0000-of-0002.ring, shard-0001-of-0002.ring)", for each count found.
fn describe_counts(found: &[(usize, Vec<PathBuf>)]) -> String {
    let parts: Vec<String> = found
        .iter()
        .map(|(count, files)| {
            let names: Vec<String> = files
                .iter()
                .map(|f| {
                    f.file_name().map_or_else(
                        || f.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            format!("{count} shards ({})", names.join(", "))
        })
        .collect();
    parts.join(" and ")
}

/// What the operator can do about ring files of another shard count.
fn advice(found: &[(usize, Vec<PathBuf>)], workers: usize, dir: &Path) -> String {
    let counts: Vec<String> = found.iter().map(|(c, _)| c.to_string()).collect();
    let keep = match counts.as_slice() {
        [one] => format!("To keep them, start ternd with --workers {one}."),
        _ => format!(
            "To keep one set, start ternd with --workers set to its count ({}) after moving the others away.",
            counts.join(" or ")
        ),
    };
    format!(
        "{keep} To start with empty logs for {workers} shards, move those files (and their \
         .salt files) out of {}, or give another --data-dir.",
        dir.display()
    )
}

/// What opening one shard's ring file found, as `/varz` shows it (`recovery`): the log's
/// extent, and what recovery had to repair.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecoveryReport {
    pub shard: usize,
    pub file: String,
    /// The file did not exist and was created.
    pub created: bool,
    /// Records held after recovery.
    pub records: u64,
    pub first_seq: u64,
    pub next_seq: u64,
    /// Records lost to damage (in holes, or proven by the checkpoint past the end).
    pub records_lost: u64,
    /// Holes between records kept (found now, or left by an earlier repair).
    pub holes: usize,
    /// Bytes this open found damaged or torn and zeroed.
    pub bytes_cut: u64,
    /// The end was cut because of an append a crash interrupted (nothing saw it).
    pub torn_append: bool,
    /// What this open found wrong, when anything.
    pub damage: Option<String>,
    /// Where the damaged file was copied, whole, before it was changed.
    pub damaged_copy: Option<String>,
}

impl RecoveryReport {
    pub fn new(shard: usize, path: &Path, recovery: &Recovery) -> RecoveryReport {
        RecoveryReport {
            shard,
            file: path.display().to_string(),
            created: recovery.created,
            records: recovery.records,
            first_seq: recovery.first_seq,
            next_seq: recovery.next_seq,
            records_lost: recovery.lost_records,
            holes: recovery.holes.len(),
            bytes_cut: recovery.cut_bytes,
            torn_append: recovery.torn_append,
            damage: recovery.cut_reason.clone(),
            damaged_copy: recovery
                .damaged_copy
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }
}

/// The data directory, locked for the life of the server so two brokers never share it.
#[derive(Debug)]
pub(crate) struct DataDir {
    path: PathBuf,
    /// Holds the `flock`; released when dropped (or when the process dies).
    _lock: std::fs::File,
}

impl DataDir {
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::Dir {
                path: lock_path.clone(),
                source,
            })?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
            });
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Refuses a data directory that holds ring files of another shard count than
    /// `shards`: starting beside them would silently begin empty logs (and forget the
    /// message ids they remember), while their records stay unreachable. Copies that
    /// recovery set aside (`*.ring.damaged-*`) are not ring files.
    pub fn check_shard_count(&self, shards: usize) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(&self.path).map_err(|source| StoreError::Dir {
            path: self.path.clone(),
            source,
        })?;
        let mut found: Vec<(usize, Vec<PathBuf>)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Dir {
                path: self.path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some((_, count)) = name.to_str().and_then(parse_shard_file) else {
                continue;
            };
            if count == shards {
                continue;
            }
            match found.iter_mut().find(|(c, _)| *c == count) {
                Some((_, files)) => files.push(entry.path()),
                None => found.push((count, vec![entry.path()])),
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        found.sort();
        for (_, files) in &mut found {
            files.sort();
        }
        Err(StoreError::ShardCount {
            dir: self.path.clone(),
            found,
            workers: shards,
        })
    }

    /// The ring file of `shard` of `shards`. The shard count is in the name: subjects map
    /// to shards by count, so files of another count hold other subjects' sequences.
    pub fn shard_file(&self, shard: usize, shards: usize) -> PathBuf {
        self.path
            .join(format!("shard-{shard:04}-of-{shards:04}.ring"))
    }
}

/// `(shard, shards)` of a ring file's name, `shard-SSSS-of-NNNN.ring`.
fn parse_shard_file(name: &str) -> Option<(usize, usize)> {
    let (shard, count) = name
        .strip_prefix("shard-")?
        .strip_suffix(".ring")?
        .split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(shard) || !digits(count) {
        return None;
    }
    Some((shard.parse().ok()?, count.parse().ok()?))
}

/// Who a catch-up is for.
#[derive(Debug, Clone)]
enum Target {
    /// A binary subscription: records are delivered to it, then it goes live.
    Sub(SubRef),
    /// A text client's `$TERN.REPLAY`: records are published to its inbox, then an end
    /// marker. `gap` remembers what the log no longer held, for the marker.
    Inbox {
        request: Arc<ReplayRequest>,
        gap: Option<(u64, u64)>,
        replayed: u64,
    },
}

/// A thread that makes a ring file durable every interval with `fdatasync(2)`, when
/// something was written to the file since its last sync. It has its own descriptor of the
/// file and shares nothing else with the worker but three counters: the log's next
/// sequence as of the worker's last flush of appends (`appended`) and of its last
/// checkpoint (`checkpointed`), and its own syncs (`syncs`).
///
/// Why only then: every `fdatasync` flushes the disk's write cache, dirty pages or not (on
/// ext4, measured), and after writes a flush stalled the project's whole VM for 10-15 ms
/// (docs/benchmarks.md). A shard nobody publishes to, and an idle broker, cost the disk
/// nothing.
pub(crate) struct Syncer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a ring's worker tells its sync thread, and what the sync thread counts.
#[derive(Debug, Clone, Default)]
struct Written {
    /// The log's next sequence when the worker last flushed its appends to the file.
    appended: Arc<AtomicU64>,
    /// The log's next sequence when the worker last wrote its checkpoint (every tick).
    checkpointed: Arc<AtomicU64>,
    /// The sync thread's syncs so far (`store_syncs`).
    syncs: Arc<AtomicU64>,
}

impl Written {
    /// Where the file stands now, as the worker last said: a sync covers it.
    fn now(&self) -> (u64, u64) {
        (
            self.appended.load(Ordering::Acquire),
            self.checkpointed.load(Ordering::Acquire),
        )
    }
}

impl Syncer {
    fn start(
        ring: &Path,
        every: Duration,
        written: Written,
        errors: Arc<AtomicU64>,
    ) -> Result<Syncer, StoreError> {
        let file = std::fs::File::open(ring).map_err(|source| StoreError::Dir {
            path: ring.to_path_buf(),
            source,
        })?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let name = ring.display().to_string();
        let mut synced = written.now();
        let thread = std::thread::Builder::new()
            .name("tern-sync".to_string())
            .spawn(move || loop {
                // Wakes for the stop signal, or after one interval to sync.
                let stopping = !matches!(
                    stopped.recv_timeout(every),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                );
                // Read before the sync: what the worker published by now is in the file, so
                // this sync covers it.
                let now = written.now();
                if now != synced || stopping {
                    if let Err(e) = file.sync_data() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(path = %name, error = %e, "cannot sync the ring log");
                    } else {
                        written.syncs.fetch_add(1, Ordering::Relaxed);
                        synced = now;
                    }
                }
                if stopping {
                    return;
                }
            })
            .map_err(|source| StoreError::Dir {
                path: ring.to_path_buf(),
                source,
            })?;
        Ok(Syncer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    /// One last sync, then the thread ends.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The epoch salt kept beside a ring file (`<file>.salt`, 8 bytes little-endian; 0 when
/// absent), bumped first when `bump`. Written to a temporary file and renamed, so it is
/// either the old value or the new one.
fn epoch_salt(ring: &Path, bump: bool) -> Result<u64, StoreError> {
    let path = ring.with_extension("salt");
    let io = |source| StoreError::Dir {
        path: path.clone(),
        source,
    };
    let salt = match std::fs::read(&path) {
        Ok(bytes) => bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    if !bump {
        return Ok(salt);
    }
    let salt = salt.wrapping_add(1);
    let tmp = path.with_extension("salt.tmp");
    std::fs::write(&tmp, salt.to_le_bytes()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(salt)
}

/// A catch-up in progress: who it is for, its filter, the next sequence to read, and where
/// it is in its work.
#[derive(Debug)]
pub(crate) struct Replay {
    target: Target,
    filter: Bytes,
    next: u64,
    phase: Phase,
    /// A lossless subscription's fall-back: how many more messages it has room for
    /// (`None`: no limit). At 0 the cursor waits for a `Grant`, and live delivery of stored
    /// messages to the subscription stays off meanwhile.
    credit: Option<u64>,
    /// A lossless subscription's (its catch-up or its fall-back): the shard holds its
    /// publishers back before the ring overtakes it (`Store::lossless_at_risk`).
    lossless: bool,
    /// Bytes of its messages its client's connection has not taken yet (encoded for the socket) nor dropped: it
    /// waits while they are `replay_bytes` or more (see `mesh::Flight`).
    in_flight: Arc<AtomicUsize>,
    /// One of a subscription's catch-ups merged at its worker (`merge.rs`): at the end of
    /// the log it says so (`ReplayEvent::CaughtUp`) and reads on what is appended, live
    /// delivery still off, until the worker releases it (`Store::release`).
    merged: Merged,
    /// The filter has no wildcard: a record matches when its subject is the filter.
    literal: bool,
}

/// Where a merged catch-up is in its handover to live delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merged {
    /// Not merged, or released: it ends at the end of the log.
    No,
    /// Merged, still short of the end of the log.
    Replaying,
    /// Merged, and its worker told it reached the end of the log once.
    CaughtUp,
}

/// Where a catch-up is in its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Replaying every matching record from `next` on. With `gaps`, a sequence the log no
    /// longer holds (the ring overwrote it, or a hole recovery left) is reported.
    Replaying { gaps: bool },
    /// A "last N" start, first pass: counting the matching records from `from` to the end
    /// of the log, in bounded batches like a replay. Nothing is kept per record, so it costs
    /// the same memory whatever N is.
    Counting { want: u64, from: u64, matches: u64 },
    /// A "last N" start, second pass from `from`: stepping over the `skip` matching records
    /// before the last N, then replaying. If the ring overwrote records between the passes,
    /// fewer than N may come (never more, and never any but the newest).
    Skipping { skip: u64 },
}

impl Replay {
    fn new(target: Target, filter: &Bytes, next: u64, phase: Phase) -> Replay {
        Replay {
            target,
            filter: filter.clone(),
            next,
            phase,
            credit: None,
            lossless: false,
            in_flight: Arc::default(),
            merged: Merged::No,
            literal: subject::is_literal(filter),
        }
    }

    /// True when the record's subject is one the catch-up is for.
    #[inline]
    fn wants(&self, subject: &[u8]) -> bool {
        if self.literal {
            self.filter[..] == *subject
        } else {
            subject::matches(&self.filter, subject)
        }
    }

    fn merged(mut self, merged: bool) -> Replay {
        if merged {
            self.merged = Merged::Replaying;
        }
        self
    }

    /// Merged, caught up and waiting for its release with nothing new to read.
    fn idle_at_end(&self, next_seq: u64) -> bool {
        self.merged == Merged::CaughtUp && self.next >= next_seq
    }

    /// A "last `n`" catch-up from the oldest record held (`first`).
    fn last_n(target: Target, filter: &Bytes, n: u64, first: u64) -> Replay {
        let phase = Phase::Counting {
            want: n,
            from: first,
            matches: 0,
        };
        Replay::new(target, filter, first, phase)
    }

    fn paused(&self) -> bool {
        self.credit == Some(0)
    }

    /// The connection this catch-up is for (its messages go to that connection's worker:
    /// straight, or for an inbox through this shard's routing).
    fn destination(&self) -> ConnId {
        match &self.target {
            Target::Sub(sub) => sub.conn,
            Target::Inbox { request, .. } => request.origin,
        }
    }

    /// True when a record at `seq` shows a hole before it that `note_gap` reports.
    fn gap_before(&self, seq: u64) -> bool {
        self.phase == (Phase::Replaying { gaps: true }) && seq > self.next
    }

    /// Notes that the records before `seq`, from `self.next` on, are not in the log.
    fn note_gap(&mut self, seq: u64, sink: &mut impl ReplaySink) {
        if !self.gap_before(seq) {
            return;
        }
        match &mut self.target {
            Target::Sub(sub) => sink.emit(ReplayEvent::Gap {
                sub: *sub,
                requested: self.next,
                oldest: seq,
            }),
            Target::Inbox { gap, .. } => {
                let requested = gap.map_or(self.next, |(r, _)| r);
                *gap = Some((requested, seq));
            }
        }
    }
}

/// What one replay step produced for the shard to send.
pub(crate) enum ReplayEvent {
    /// Records to deliver to `sub`, in sequence order: one catch-up step's.
    Run(SubRef, ReplayRun),
    /// A record, an end marker or a count for a text client's catch-up `request`.
    Inbox(Arc<ReplayRequest>, InboxPart),
    /// The ring overwrote records a replay had not reached, or recovery left a hole:
    /// `requested..oldest` are lost.
    Gap {
        sub: SubRef,
        requested: u64,
        oldest: u64,
    },
    /// This shard's part of text catch-up `id` of `conn` is over: its end marker is out.
    Done { conn: ConnId, id: u64 },
    /// A merged catch-up of `sub` reached the end of the log.
    CaughtUp(SubRef),
    /// A merged "last N" catch-up of `sub` counted its matches: it sends `sends`.
    Counted { sub: SubRef, sends: u64 },
}

/// Where a shard's catch-ups send what they produce, and whether they may go on.
pub(crate) trait ReplaySink {
    /// True when the connection a catch-up is for (`conn`), or its worker, is congested:
    /// the catch-up waits a turn rather than add to the backlog.
    fn congested(&self, conn: ConnId) -> bool;
    /// Sends what a catch-up produced.
    fn emit(&mut self, event: ReplayEvent);
    /// A catch-up for `conn` waited (congested, or its bytes in flight at `replay_bytes`):
    /// what it waits for is that connection's worker's progress.
    fn waited(&mut self, _conn: ConnId) {}
}

/// Whether a shard's catch-ups have work, for the worker's poll timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayState {
    /// None in progress, or all waiting for a grant.
    Idle,
    /// Some can advance now.
    Ready,
    /// All that could advance waited for a congested destination last turn.
    Waiting,
}

/// What became of a message given to [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored under this sequence.
    Stored(u64),
    /// A repeat of a message id stored within the dedupe window, there.
    Duplicate(FirstCopy),
}

pub(crate) struct Store {
    log: RingLog,
    /// Syncs the ring file every interval (`fsync = "interval"`); stopped when dropped.
    _syncer: Option<Syncer>,
    /// Bumped (and kept beside the ring file) whenever recovery lost records at the end of
    /// the log that may have been seen, whose sequences can be handed out again: resume
    /// tokens from before must not match this log's epoch any more.
    epoch_salt: u64,
    filters: Vec<Bytes>,
    /// A filter is `>`: every subject is kept (settled once, not matched per message).
    keeps_all: bool,
    /// The broker-wide message ids (`dedupe.rs`), and this store's shard in it.
    dedupe: Arc<Dedupe>,
    shard: u16,
    /// The oldest sequence the log held when `dedupe` was last told.
    told_held_from: u64,
    replays: Vec<Replay>,
    /// The subscriptions in `replays`, for the per-delivery check of live routing.
    replaying: FastMap<SubRef, ()>,
    /// Per loop turn, across all catch-ups: records read, bytes replayed.
    replay_batch: usize,
    replay_bytes: usize,
    /// Inbound batches waiting at a worker above which catch-ups sending to it wait.
    replay_queue_depth: usize,
    /// Every catch-up that could advance waited for a congested destination last turn.
    replays_waiting: bool,
    /// Appends, writes and syncs of the ring file that failed (each also logged); shared
    /// with the sync thread, read by the worker into `store_errors`.
    errors: Arc<AtomicU64>,
    /// Told to the sync thread, which syncs only when it moved: where the last flush and
    /// the last checkpoint left the file. Its sync count, read back.
    written: Written,
}

impl Store {
    /// Opens (or creates) the ring file of `shard`, recovering what it holds, and puts the
    /// ids stored within the dedupe window back into `dedupe`.
    pub fn open(
        path: &Path,
        config: &StoreConfig,
        (shard, dedupe): (u16, Arc<Dedupe>),
        now: Instant,
        wall_now_ns: u64,
    ) -> Result<(Store, Recovery), StoreError> {
        // `interval` syncs on a thread of its own (`Syncer`), never on the worker: a sync
        // writes back every dirty page of the map, which takes milliseconds, and the
        // worker's p99 would pay for it. The log itself then never syncs between appends.
        let fsync = match config.fsync_policy() {
            Fsync::Never | Fsync::Interval(_) => LogFsync::Never,
            Fsync::Always => LogFsync::Always,
        };
        let (log, recovery) = RingLog::open(path, config.log_size as u64, fsync)?;
        let errors = Arc::new(AtomicU64::new(0));
        let written = Written::default();
        written.appended.store(log.next_seq(), Ordering::Relaxed);
        written
            .checkpointed
            .store(log.next_seq(), Ordering::Relaxed);
        let syncer = match config.fsync_policy() {
            Fsync::Interval(every) => Some(Syncer::start(
                path,
                every,
                written.clone(),
                Arc::clone(&errors),
            )?),
            _ => None,
        };
        // Holes in the middle of the log keep every sequence: records after them keep
        // theirs, and the missing ones are never handed out again. Only a loss at the end
        // beyond what the checkpoint proves can repeat sequences a client may have seen.
        let reused = recovery.sequences_may_repeat;
        let epoch_salt = epoch_salt(path, reused)?;
        if reused {
            tracing::warn!(
                path = %path.display(),
                next_seq = recovery.next_seq,
                "records at the end of the log were lost and some of their sequences may be \
                 handed out again; a new log epoch starts so that no resume token can \
                 mistake new messages for them"
            );
        }
        dedupe.held_from(shard, log.first_seq());
        let window_ns = u64::try_from(config.dedupe_window.as_nanos()).unwrap_or(u64::MAX);
        let since = wall_now_ns.saturating_sub(window_ns);
        for rec in log.read_from(log.seq_at_time(since)) {
            if let Some(id) = rec.message_id {
                // Remembered from now: a restart extends a window, never shortens it.
                let first = FirstCopy {
                    shard,
                    seq: rec.seq,
                };
                dedupe
                    .lock()
                    .remember(Bytes::copy_from_slice(id), first, now);
            }
        }
        let told_held_from = log.first_seq();
        // Appends go to the file by `pwrite`, a loop turn's at a time (`Store::flush`): a
        // sync then no longer write-protects the pages under the worker's feet.
        let mut log = log;
        log.batch_writes();
        let store = Store {
            log,
            _syncer: syncer,
            epoch_salt,
            filters: config
                .subjects
                .iter()
                .map(|f| Bytes::copy_from_slice(f.as_bytes()))
                .collect(),
            keeps_all: config.subjects.iter().any(|f| f == ">"),
            dedupe,
            shard,
            told_held_from,
            replays: Vec::new(),
            replaying: FastMap::default(),
            replay_batch: config.replay_batch,
            replay_bytes: config.replay_bytes,
            replay_queue_depth: config.replay_queue_depth,
            replays_waiting: false,
            errors,
            written,
        };
        Ok((store, recovery))
    }

    /// The log's epoch as clients see it (the file's, changed by any salt).
    pub fn epoch(&self) -> u64 {
        self.log.epoch() ^ self.epoch_salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// True when messages on `subject` are kept.
    pub fn keeps(&self, subject: &[u8]) -> bool {
        self.keeps_all || self.filters.iter().any(|f| subject::matches(f, subject))
    }

    /// Appends a message, unless its message id was stored within the dedupe window (on
    /// any shard, its record still held): then it goes no further, and where its first copy
    /// is comes back instead.
    pub fn append(
        &mut self,
        msg: &Msg,
        time_ns: u64,
        now: Instant,
    ) -> Result<Appended, StoreError> {
        let Some(id) = &msg.message_id else {
            return self.append_record(msg, time_ns).map(Appended::Stored);
        };
        let dedupe = Arc::clone(&self.dedupe);
        let mut ids = dedupe.lock();
        if let Some(first) = ids.seen(id, now) {
            return Ok(Appended::Duplicate(first));
        }
        let seq = self.append_record(msg, time_ns)?;
        // A copy: `id` is a slice of the publisher's read buffer.
        let first = FirstCopy {
            shard: self.shard,
            seq,
        };
        ids.remember(Bytes::copy_from_slice(id), first, now);
        Ok(Appended::Stored(seq))
    }

    fn append_record(&mut self, msg: &Msg, time_ns: u64) -> Result<u64, StoreError> {
        let seq = self.log.append(&Record {
            seq: 0,
            timestamp: time_ns,
            priority: msg.priority,
            subject: &msg.subject,
            reply: msg.reply.as_deref(),
            headers: msg.headers.as_deref(),
            message_id: msg.message_id.as_deref(),
            payload: &msg.payload,
        });
        let seq = seq.inspect_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        // The append may have overwritten the oldest records, and their ids with them.
        let first = self.log.first_seq();
        if first != self.told_held_from {
            self.told_held_from = first;
            self.dedupe.held_from(self.shard, first);
        }
        Ok(seq)
    }

    /// The store's timer: what was appended into the file, and a checkpoint of the log's
    /// state into its header, so that recovery after a crash can step over damage anywhere
    /// up to the last tick; then the fsync policy.
    pub fn tick(&mut self, now: Instant) -> Result<(), StoreError> {
        self.log.checkpoint();
        // The checkpoint is in the file: the sync thread syncs it too.
        self.written
            .checkpointed
            .store(self.log.next_seq(), Ordering::Release);
        self.log.tick(now).inspect_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        Ok(())
    }

    /// Starts a catch-up for `sub` from sequence `from`. Returns the gap, `(requested,
    /// oldest)`, when the log no longer holds `from`; the replay then starts at the oldest
    /// record held. Nothing is registered when there is nothing to replay, unless the
    /// catch-up is `merged` (`merge.rs`): that one always says when it is caught up.
    pub fn start_replay(
        &mut self,
        sub: SubRef,
        filter: &Bytes,
        from: u64,
        merged: bool,
    ) -> Option<(u64, u64)> {
        let first = self.log.first_seq();
        let gap = (from < first).then_some((from, first));
        let from = from.max(first);
        if merged || from < self.log.next_seq() {
            self.replaying.insert(sub, ());
            let phase = Phase::Replaying { gaps: true };
            self.replays
                .push(Replay::new(Target::Sub(sub), filter, from, phase).merged(merged));
        }
        gap
    }

    /// A lossless subscription's fall-back: replaces its catch-up, if any, by one from
    /// `from` that delivers at most `credit` messages before it waits for a grant.
    /// Returns the gap when the log no longer holds `from`.
    pub fn start_lag(
        &mut self,
        sub: SubRef,
        filter: &Bytes,
        from: u64,
        credit: u32,
    ) -> Option<(u64, u64)> {
        self.stop_replay(&sub);
        let gap = self.start_replay(sub, filter, from, false);
        if let Some(r) = self.replays.last_mut() {
            if matches!(r.target, Target::Sub(s) if s == sub) {
                r.credit = Some(u64::from(credit));
                r.lossless = true;
            }
        }
        gap
    }

    /// Room for `credit` more messages in a lagging subscription's queue. Ignored when its
    /// catch-up has ended (it went live).
    pub fn grant(&mut self, sub: &SubRef, credit: u32) {
        if let Some(r) = self
            .replays
            .iter_mut()
            .find(|r| matches!(r.target, Target::Sub(s) if s == *sub))
        {
            if let Some(c) = &mut r.credit {
                *c += u64::from(credit);
            }
        }
    }

    /// The sequence the next message appended gets.
    pub fn next_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// The oldest sequence held (`next_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.log.first_seq()
    }

    /// Starts a text client's catch-up into its inbox. Always registered: even with
    /// nothing to replay (`{"last":0}`, a start past the newest record), the end marker
    /// must be sent.
    pub fn start_inbox_replay(&mut self, request: Arc<ReplayRequest>) {
        self.flush();
        let first = self.log.first_seq();
        let filter = request.filter.clone();
        let (from, last_n) = match request.start {
            ReplayStart::All => (first, None),
            ReplayStart::FromSeq { seq, .. } => (seq.max(1), None),
            ReplayStart::Time(ns) => (self.log.seq_at_time(ns), None),
            ReplayStart::LastN(0) => (self.log.next_seq(), None),
            ReplayStart::LastN(n) => (first, Some(u64::from(n))),
        };
        let gap = (from < first).then_some((from, first));
        let target = Target::Inbox {
            request,
            gap,
            replayed: 0,
        };
        let replay = match last_n {
            Some(n) => Replay::last_n(target, &filter, n, first),
            None => Replay::new(
                target,
                &filter,
                from.max(first),
                Phase::Replaying { gaps: true },
            ),
        };
        self.replays.push(replay);
    }

    /// Starts a catch-up of the last `n` messages held that match `filter`. A `merged`
    /// one (`merge.rs`) is always registered: it says how many it sends, and when it is
    /// caught up.
    pub fn start_last_n(&mut self, sub: SubRef, filter: &Bytes, n: u32, merged: bool) {
        if n == 0 {
            // Nothing from before: what is appended from now on (the merge, if any, sees
            // a plain catch-up from the end of the log, with nothing to count).
            self.start_replay(sub, filter, self.log.next_seq(), merged);
            return;
        }
        if !merged && self.log.is_empty() {
            return;
        }
        self.replaying.insert(sub, ());
        let first = self.log.first_seq();
        let replay = Replay::last_n(Target::Sub(sub), filter, u64::from(n), first);
        self.replays.push(replay.merged(merged));
    }

    /// The worker of a merged catch-up released it (every shard has caught up): it ends
    /// at the end of the log, and live delivery takes over. Ignored when it has ended (a
    /// lossless fall-back replaced it).
    pub fn release(&mut self, sub: &SubRef) {
        if let Some(r) = self
            .replays
            .iter_mut()
            .find(|r| matches!(r.target, Target::Sub(s) if s == *sub))
        {
            r.merged = Merged::No;
        }
    }

    /// Drops what is left of the text catch-ups `conn` asked for (it closed): no more
    /// records, no end marker.
    pub fn cancel_inbox_replays(&mut self, conn: ConnId) {
        self.replays.retain(
            |r| !matches!(&r.target, Target::Inbox { request, .. } if request.origin == conn),
        );
    }

    /// The sequence to start a time-based catch-up at.
    pub fn seq_at_time(&mut self, time_ns: u64) -> u64 {
        self.flush();
        self.log.seq_at_time(time_ns)
    }

    /// Writes what was appended since the last flush to the ring file, in one `pwrite`
    /// (`RingLog::batch_writes`; nothing to do under `fsync = "always"`, where every append
    /// is written and synced before it returns). An append is safe from a process crash
    /// once this has run. The worker calls it before it handles or sends anything its turn
    /// made (acks, deliveries), and the store before it reads its log; so no client ever
    /// sees a stored message, or its acknowledgement, that a process crash could take back.
    /// An error is logged: the records stay in memory and are served, but a restart may
    /// not find them.
    pub fn flush(&mut self) {
        if let Err(e) = self.log.flush() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(shard = self.shard, error = %e, "cannot write the ring log");
        }
        // The appends are in the file: the sync thread syncs them within an interval. (One
        // store a loop turn, not a message.)
        self.written
            .appended
            .store(self.log.next_seq(), Ordering::Release);
    }

    /// Appends, writes and syncs of the ring file that failed so far (`store_errors`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The sync thread's syncs of the ring file so far (`store_syncs`).
    pub fn syncs(&self) -> u64 {
        self.written.syncs.load(Ordering::Relaxed)
    }

    /// True while `sub` is catching up: live delivery of stored messages to it is skipped.
    pub fn is_replaying(&self, sub: &SubRef) -> bool {
        !self.replaying.is_empty() && self.replaying.contains_key(sub)
    }

    /// Whether a catch-up can advance (one waiting for a grant cannot), or all that could
    /// are waiting for congested destinations.
    pub fn replay_state(&self) -> ReplayState {
        let next_seq = self.log.next_seq();
        if !self
            .replays
            .iter()
            .any(|r| !r.paused() && !r.idle_at_end(next_seq))
        {
            ReplayState::Idle
        } else if self.replays_waiting {
            ReplayState::Waiting
        } else {
            ReplayState::Ready
        }
    }

    /// Inbound batches waiting at a worker above which catch-ups sending to it wait.
    pub fn replay_queue_depth(&self) -> usize {
        self.replay_queue_depth
    }

    /// A lossless subscription's catch-up (just started by [`Store::start_replay`] or
    /// [`Store::start_last_n`]): the ring must not overtake it either.
    pub fn mark_lossless(&mut self, sub: &SubRef) {
        if let Some(r) = self
            .replays
            .iter_mut()
            .find(|r| matches!(r.target, Target::Sub(s) if s == *sub))
        {
            r.lossless = true;
        }
    }

    /// Whether any lossless subscription is catching up or falling back to the log here.
    #[inline]
    pub fn has_lossless_replays(&self) -> bool {
        !self.replays.is_empty() && self.replays.iter().any(|r| r.lossless)
    }

    /// Whether the ring is close to overtaking the catch-up (or fall-back) of lossless
    /// `sub`, if it has one here: true when the log is at least half full and more than
    /// `more_than` quarters of what it holds are still ahead of the cursor (the shard holds
    /// publishers back past two quarters, and lets them go under one).
    pub fn lossless_at_risk(&self, sub: &SubRef, more_than: u64) -> Option<bool> {
        let r = self
            .replays
            .iter()
            .find(|r| r.lossless && matches!(r.target, Target::Sub(s) if s == *sub))?;
        let (first, next) = (self.log.first_seq(), self.log.next_seq());
        let behind = next.saturating_sub(r.next);
        let filling = self.log.layout().used_bytes.saturating_mul(2) >= self.log.capacity();
        Some(filling && behind.saturating_mul(4) > (next - first).saturating_mul(more_than))
    }

    /// Drops the catch-up of a subscription that ended.
    pub fn stop_replay(&mut self, sub: &SubRef) {
        if self.replaying.remove(sub).is_some() {
            self.replays
                .retain(|r| !matches!(r.target, Target::Sub(s) if s == *sub));
        }
    }

    /// Advances the catch-ups in progress by one bounded step: at most `replay_batch`
    /// records read and `replay_bytes` bytes replayed in all, shared fairly among them (at
    /// least one record each), so replaying never starves live traffic. A catch-up whose
    /// destination `sink` says is congested waits its turn. Each delivery, gap, message and
    /// end goes to `sink`. A catch-up that delivers the last record held ends here, and live
    /// delivery takes over from the next sequence. Returns how many catch-ups waited.
    pub fn pump(&mut self, shard: u16, now: Instant, sink: &mut impl ReplaySink) -> u64 {
        // The catch-ups read the file: what this turn appended must be in it, or a
        // catch-up would end at the file's last record and skip the rest.
        self.flush();
        let mut records_left = self.replay_batch;
        let mut bytes_left = self.replay_bytes;
        let (mut deferred, mut advanced) = (0u64, false);
        let mut i = 0;
        while i < self.replays.len() && records_left > 0 && bytes_left > 0 {
            let first = self.log.first_seq();
            let next_seq = self.log.next_seq();
            let remaining = self.replays.len() - i;
            let share = (records_left / remaining).max(1);
            let share_bytes = (bytes_left / remaining).max(1);
            let replay = &mut self.replays[i];
            if replay.paused() || replay.idle_at_end(next_seq) {
                i += 1;
                continue;
            }
            let window_full = replay.in_flight.load(Ordering::Relaxed) >= self.replay_bytes;
            if window_full || sink.congested(replay.destination()) {
                sink.waited(replay.destination());
                deferred += 1;
                i += 1;
                continue;
            }
            advanced = true;
            if replay.next < first {
                // The ring overwrote what the catch-up had not reached.
                replay.note_gap(first, sink);
                replay.next = first;
            }
            let (mut read, mut sent) = (0usize, 0usize);
            let mut records = self.log.read_from(replay.next);
            // A subscription's records of this step, copied as the log stores them.
            let mut run = Run::default();
            let mut exhausted = false;
            while read < share && sent < share_bytes {
                let Some((rec, stored)) = records.next_stored() else {
                    exhausted = true;
                    break;
                };
                let matches = replay.wants(rec.subject);
                if matches && replay.paused() {
                    break;
                }
                read += 1;
                if replay.gap_before(rec.seq) {
                    // The notice goes out behind the records before the hole.
                    run.send(replay, shard, now, sink);
                }
                replay.note_gap(rec.seq, sink);
                replay.next = rec.seq + 1;
                if !matches {
                    continue;
                }
                match &mut replay.phase {
                    Phase::Counting { matches, .. } => {
                        *matches += 1;
                        continue;
                    }
                    Phase::Skipping { skip } if *skip > 0 => {
                        *skip -= 1;
                        continue;
                    }
                    Phase::Skipping { .. } => replay.phase = Phase::Replaying { gaps: false },
                    Phase::Replaying { .. } => {}
                }
                if let Some(c) = &mut replay.credit {
                    *c -= 1;
                }
                let bytes = stored.len();
                sent += bytes;
                match &mut replay.target {
                    Target::Sub(_) => {
                        // What this step may still copy, this record included.
                        let bytes_left = share_bytes.saturating_sub(sent - bytes);
                        run.push(stored, bytes_left, share - read + 1);
                    }
                    Target::Inbox {
                        request, replayed, ..
                    } => {
                        *replayed += 1;
                        let msg = Msg {
                            flight: Some(Flight::new(&replay.in_flight, bytes)),
                            ..inbox_msg_of(&rec, shard, request, now)
                        };
                        let request = Arc::clone(request);
                        let part = InboxPart::Record(Arc::new(msg));
                        sink.emit(ReplayEvent::Inbox(request, part));
                    }
                }
            }
            // Out before anything else this catch-up says (caught up, counted, its end).
            run.send(replay, shard, now, sink);
            if exhausted {
                // Past the newest record held (sequences after it may be missing too).
                replay.next = replay.next.max(next_seq);
            }
            if replay.next >= next_seq {
                if let Phase::Counting {
                    want,
                    from,
                    matches,
                } = replay.phase
                {
                    // Counted to the end: go over it again, stepping over all but the last
                    // `want` matches.
                    replay.phase = Phase::Skipping {
                        skip: matches.saturating_sub(want),
                    };
                    replay.next = from;
                    let sends = matches.min(want);
                    match &replay.target {
                        Target::Sub(sub) if replay.merged != Merged::No => {
                            sink.emit(ReplayEvent::Counted { sub: *sub, sends })
                        }
                        Target::Inbox { request, .. } => sink.emit(ReplayEvent::Inbox(
                            Arc::clone(request),
                            InboxPart::Counted(sends),
                        )),
                        Target::Sub(_) => {}
                    }
                }
            }
            records_left = records_left.saturating_sub(read.max(1));
            bytes_left = bytes_left.saturating_sub(sent);
            if replay.next >= next_seq && replay.merged != Merged::No {
                // Caught up: it waits for its release, reading on what is appended.
                if replay.merged == Merged::Replaying {
                    replay.merged = Merged::CaughtUp;
                    if let Target::Sub(sub) = replay.target {
                        sink.emit(ReplayEvent::CaughtUp(sub));
                    }
                }
                i += 1;
            } else if replay.next >= next_seq {
                let done = self.replays.swap_remove(i);
                match done.target {
                    Target::Sub(sub) => {
                        self.replaying.remove(&sub);
                    }
                    Target::Inbox {
                        request,
                        gap,
                        replayed,
                    } => {
                        let marker = end_marker(&request, shard, replayed, gap, now);
                        let part = InboxPart::End(Arc::new(marker));
                        sink.emit(ReplayEvent::Inbox(Arc::clone(&request), part));
                        sink.emit(ReplayEvent::Done {
                            conn: request.origin,
                            id: request.id,
                        });
                    }
                }
            } else {
                i += 1;
            }
        }
        self.replays_waiting = deferred > 0 && !advanced;
        deferred
    }
}

/// A replayed record as a message to a text client's inbox: the record's subject, shard,
/// sequence and time go in `Tern-*` headers, ahead of its own header lines.
fn inbox_msg_of(rec: &Record<'_>, shard: u16, request: &ReplayRequest, now: Instant) -> Msg {
    let mut block = String::from("NATS/1.0\r\n");
    let _ = write!(
        block,
        "Tern-Subject: {}\r\nTern-Shard: {shard}\r\nTern-Seq: {}\r\nTern-Time: {}\r\n",
        String::from_utf8_lossy(rec.subject),
        rec.seq,
        rec.timestamp
    );
    let mut headers = block.into_bytes();
    if let Some(own) = rec.headers {
        // Its header lines, without its own `NATS/1.0...` status line.
        let lines = own
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(&own[own.len()..], |i| &own[i + 2..]);
        headers.extend_from_slice(lines);
    } else {
        headers.extend_from_slice(b"\r\n");
    }
    let mut msg = Msg::new(
        request.inbox.clone(),
        Bytes::copy_from_slice(rec.payload),
        ConnId::NONE,
        now,
    );
    msg.headers = Some(Bytes::from(headers));
    msg.priority = rec.priority;
    msg.ephemeral = true;
    // Where the record sits, for the merge of a catch-up over several shards (`merge.rs`);
    // an ephemeral message keeps it through routing.
    msg.stamp = Stamp {
        shard,
        seq: rec.seq,
        time_ns: rec.timestamp,
    };
    msg
}

/// The last message of a shard's part of a text catch-up: how many records it sent, how
/// many shards answer in all, and what the log no longer held.
pub(crate) fn end_marker(
    request: &ReplayRequest,
    shard: u16,
    replayed: u64,
    gap: Option<(u64, u64)>,
    now: Instant,
) -> Msg {
    let mut block = format!(
        "NATS/1.0\r\nTern-Replay-Done: {shard}\r\nTern-Replay-Shards: {}\r\nTern-Replayed: {replayed}\r\n",
        request.shards
    );
    if let Some((requested, oldest)) = gap {
        let _ = write!(block, "Tern-Gap: {requested}-{oldest}\r\n");
    }
    block.push_str("\r\n");
    let mut msg = Msg::new(request.inbox.clone(), Bytes::new(), ConnId::NONE, now);
    msg.headers = Some(Bytes::from(block));
    msg.ephemeral = true;
    msg.stamp.shard = shard;
    msg
}

/// The records one step of a subscription's catch-up sends: copied out of the map as the
/// log stores them, back to back, into one buffer sized for the step at its first record
/// (one allocation and one envelope a step, not one a record; the receiving worker makes
/// each message from it as it delivers it, `mesh::ReplayRun`).
///
/// The buffer handed on is at most about twice the bytes it holds: the catch-up's window
/// counts the records' bytes in flight, not the allocation behind them, which stays until
/// the receiving worker is done with the run.
#[derive(Default)]
struct Run {
    buf: BytesMut,
}

impl Run {
    /// Adds a record's stored bytes; `bytes_left` and `records_left` are what the step may
    /// still copy, this record included.
    fn push(&mut self, stored: &[u8], bytes_left: usize, records_left: usize) {
        if self.buf.capacity() == 0 {
            // Sized for its bytes left, or for its records left if they are the size of
            // this one, whichever is less (a step of 256 records of 128 B is 47 KB, not
            // the 256 KiB it may copy): records of other sizes grow it as they come.
            let want = bytes_left
                .min(records_left.saturating_mul(stored.len()))
                .clamp(stored.len(), RUN_RESERVE_MAX.max(stored.len()));
            self.buf.reserve(want);
        }
        self.buf.extend_from_slice(stored);
    }

    /// The records gathered so far, as one buffer to hand on. A step that ended well short
    /// of what it reserved (it reached the end of the log) hands on a copy of its own size.
    fn take(&mut self) -> Bytes {
        if self.buf.capacity() > 2 * self.buf.len() {
            let records = Bytes::copy_from_slice(&self.buf);
            self.buf = BytesMut::new();
            records
        } else {
            self.buf.split().freeze()
        }
    }

    /// Sends what it holds (if anything) to `replay`'s subscription, its bytes counted in
    /// flight until the receiving worker has taken them.
    fn send(&mut self, replay: &Replay, shard: u16, now: Instant, sink: &mut impl ReplaySink) {
        if self.buf.is_empty() {
            return;
        }
        let Target::Sub(sub) = replay.target else {
            return;
        };
        let records = self.take();
        let flight = Flight::new(&replay.in_flight, records.len());
        sink.emit(ReplayEvent::Run(
            sub,
            ReplayRun {
                shard,
                records,
                flight,
                read: now,
            },
        ));
    }
}

/// The most a step's buffer reserves at its first record: larger steps grow it as they go.
const RUN_RESERVE_MAX: usize = 256 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tern-store-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_remembered_id_is_a_copy_not_a_slice_of_the_read_buffer() {
        let dir = scratch("dedupe-copy");
        let config = StoreConfig {
            log_size: 1 << 20,
            ..StoreConfig::default()
        };
        let now = Instant::now();
        let (mut store, _) =
            Store::open(&dir.join("r.ring"), &config, test_dedupe(), now, 0).unwrap();
        // What a connection's read buffer looks like: one allocation, the publish's fields
        // sliced out of it.
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut msg = Msg::new(
            Bytes::from_static(b"orders"),
            Bytes::from_static(b"payload"),
            ConnId::NONE,
            now,
        );
        msg.message_id = Some(buffer.slice(100..116));
        assert_eq!(store.append(&msg, 1, now).unwrap(), Appended::Stored(1));
        assert_eq!(
            store.append(&msg, 1, now).unwrap(),
            Appended::Duplicate(FirstCopy { shard: 0, seq: 1 })
        );
        drop(msg);
        assert!(
            buffer.is_unique(),
            "the dedupe window keeps the read buffer alive"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_append_is_counted_and_the_next_one_succeeds() {
        let dir = scratch("errors");
        let config = StoreConfig {
            log_size: 64 * 1024,
            ..StoreConfig::default()
        };
        let now = Instant::now();
        let (mut store, _) =
            Store::open(&dir.join("r.ring"), &config, test_dedupe(), now, 0).unwrap();
        let msg = |payload: Vec<u8>| {
            Msg::new(Bytes::from_static(b"a"), payload.into(), ConnId::NONE, now)
        };
        // Larger than the whole ring: refused, nothing written.
        assert!(store.append(&msg(vec![0; 128 * 1024]), 1, now).is_err());
        assert_eq!(store.errors(), 1);
        assert_eq!(
            store.append(&msg(vec![1; 16]), 2, now).unwrap(),
            Appended::Stored(1)
        );
        store.flush();
        assert_eq!(store.errors(), 1, "a flush that writes is not an error");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn test_dedupe() -> (u16, Arc<Dedupe>) {
        (0, Arc::new(Dedupe::new(Duration::from_secs(120), 1000, 1)))
    }

    /// A sink that records what catch-ups emit, congested while told so.
    #[derive(Default)]
    struct Recorder {
        congested: bool,
        /// (kind, sequence or 0): "msg" for an inbox message (its Tern-Seq), "end", "done",
        /// "deliver" (one per record of a run), "gap".
        events: Vec<(&'static str, u64)>,
        /// The runs, kept when `keep_runs` (else dropped at once, as a fast worker would).
        runs: Vec<ReplayRun>,
        keep_runs: bool,
    }

    impl ReplaySink for Recorder {
        fn congested(&self, _conn: ConnId) -> bool {
            self.congested
        }
        fn emit(&mut self, event: ReplayEvent) {
            let e = match event {
                ReplayEvent::Run(_, run) => {
                    for rec in run.records() {
                        let m = run.msg(&rec);
                        assert!(m.replayed && m.stored && m.flight.is_none());
                        assert_eq!((m.stamp.seq, m.stamp.time_ns), (rec.seq, rec.timestamp));
                        self.events.push(("deliver", m.stamp.seq));
                    }
                    if self.keep_runs {
                        self.runs.push(run);
                    }
                    return;
                }
                ReplayEvent::Gap { requested, .. } => ("gap", requested),
                ReplayEvent::Done { .. } => ("done", 0),
                ReplayEvent::CaughtUp(_) => ("caught up", 0),
                ReplayEvent::Counted { sends, .. } => ("counted", sends),
                ReplayEvent::Inbox(_, InboxPart::Counted(n)) => ("counted", n),
                ReplayEvent::Inbox(_, InboxPart::Record(m) | InboxPart::End(m)) => {
                    let h = m.headers.clone().unwrap();
                    match tern_protocol::headers::find(&h, "Tern-Seq") {
                        Some(seq) => ("msg", std::str::from_utf8(seq).unwrap().parse().unwrap()),
                        None => ("end", 0),
                    }
                }
            };
            self.events.push(e);
        }
    }

    /// A store in a fresh directory holding `n` records on `subject` (payload `bytes` long),
    /// with these per-turn replay limits.
    fn store_with(
        name: &str,
        n: u64,
        bytes: usize,
        batch: usize,
        replay_bytes: usize,
    ) -> (Store, PathBuf) {
        let dir = scratch(name);
        let config = StoreConfig {
            log_size: 1 << 20,
            replay_batch: batch,
            replay_bytes,
            ..StoreConfig::default()
        };
        let now = Instant::now();
        let (mut store, _) =
            Store::open(&dir.join("r.ring"), &config, test_dedupe(), now, 0).unwrap();
        for i in 0..n {
            let subject = if i % 2 == 0 { "even" } else { "odd" };
            let msg = Msg::new(
                Bytes::from_static(subject.as_bytes()),
                Bytes::from(vec![b'p'; bytes]),
                ConnId::NONE,
                now,
            );
            store.append(&msg, i + 1, now).unwrap();
        }
        (store, dir)
    }

    fn request(filter: &'static str, start: ReplayStart) -> Arc<ReplayRequest> {
        Arc::new(ReplayRequest {
            filter: Bytes::from_static(filter.as_bytes()),
            inbox: Bytes::from_static(b"_INBOX.r"),
            start,
            shards: 1,
            origin: ConnId {
                worker: 0,
                slot: 1,
                gen: 1,
            },
            id: 7,
        })
    }

    /// Pumps until no catch-up is left (at most `turns` turns).
    fn pump_all(store: &mut Store, sink: &mut Recorder, turns: usize) -> usize {
        for turn in 0..turns {
            if store.replay_state() == ReplayState::Idle {
                return turn;
            }
            store.pump(0, Instant::now(), sink);
        }
        panic!("catch-ups still running after {turns} turns");
    }

    fn sub_ref() -> SubRef {
        SubRef {
            conn: ConnId {
                worker: 0,
                slot: 1,
                gen: 1,
            },
            key: 0,
            id: 1,
        }
    }

    /// Appends one record on `subject` (a later turn's, at time `time_ns`).
    fn append_one(store: &mut Store, subject: &'static str, time_ns: u64) -> Appended {
        let msg = Msg::new(
            Bytes::from_static(subject.as_bytes()),
            Bytes::from_static(b"p"),
            ConnId::NONE,
            Instant::now(),
        );
        store.append(&msg, time_ns, Instant::now()).unwrap()
    }

    #[test]
    fn a_merged_catch_up_says_it_caught_up_and_reads_on_until_released() {
        let (mut store, dir) = store_with("merged", 6, 10, 4096, 1 << 20);
        let (sub, filter) = (sub_ref(), Bytes::from_static(b"odd"));
        store.start_replay(sub, &filter, 1, true);
        let mut sink = Recorder::default();
        for _ in 0..3 {
            store.pump(0, Instant::now(), &mut sink);
        }
        let caught_up = [
            ("deliver", 2),
            ("deliver", 4),
            ("deliver", 6),
            ("caught up", 0),
        ];
        assert_eq!(sink.events, caught_up, "told once, however many turns");
        assert_eq!(store.replay_state(), ReplayState::Idle, "idle at the end");
        assert!(store.is_replaying(&sub), "live delivery stays off");
        // What is appended meanwhile comes from the log, not live.
        append_one(&mut store, "odd", 100);
        assert_eq!(store.replay_state(), ReplayState::Ready);
        store.pump(0, Instant::now(), &mut sink);
        assert_eq!(sink.events[4..], [("deliver", 7)]);
        assert!(store.is_replaying(&sub));
        store.release(&sub);
        pump_all(&mut store, &mut sink, 2);
        assert!(!store.is_replaying(&sub), "live from the end of the log on");
        assert_eq!(sink.events.len(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_merged_catch_up_with_nothing_to_replay_still_says_so() {
        let (mut store, dir) = store_with("merged-empty", 4, 10, 4096, 1 << 20);
        let (sub, filter) = (sub_ref(), Bytes::from_static(b"odd"));
        store.start_replay(sub, &filter, store.next_seq(), true);
        let mut sink = Recorder::default();
        store.pump(0, Instant::now(), &mut sink);
        assert_eq!(sink.events, [("caught up", 0)]);
        store.release(&sub);
        pump_all(&mut store, &mut sink, 2);
        assert!(!store.is_replaying(&sub));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_merged_last_n_says_how_many_it_sends_before_sending_them() {
        let (mut store, dir) = store_with("merged-last", 10, 10, 3, 1 << 20);
        let (sub, filter) = (sub_ref(), Bytes::from_static(b"even"));
        store.start_last_n(sub, &filter, 2, true);
        let mut sink = Recorder::default();
        for _ in 0..10 {
            store.pump(0, Instant::now(), &mut sink);
        }
        let want = [
            ("counted", 2),
            ("deliver", 7),
            ("deliver", 9),
            ("caught up", 0),
        ];
        assert_eq!(sink.events, want);
        // Fewer matches than asked: it says so.
        let mut sink = Recorder::default();
        let other = SubRef { id: 2, ..sub };
        store.start_last_n(other, &Bytes::from_static(b"none"), 5, true);
        for _ in 0..10 {
            store.pump(0, Instant::now(), &mut sink);
        }
        assert_eq!(sink.events, [("counted", 0), ("caught up", 0)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn last_zero_replays_nothing_but_the_end() {
        let (mut store, dir) = store_with("last0", 10, 10, 4096, 1 << 20);
        store.start_inbox_replay(request(">", ReplayStart::LastN(0)));
        let mut sink = Recorder::default();
        pump_all(&mut store, &mut sink, 10);
        assert_eq!(sink.events, vec![("end", 0), ("done", 0)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn last_n_replays_the_newest_matches_in_two_passes() {
        let (mut store, dir) = store_with("lastn", 100, 10, 7, 1 << 20);
        store.start_inbox_replay(request("odd", ReplayStart::LastN(3)));
        store.start_inbox_replay(request("even", ReplayStart::LastN(1000)));
        let mut sink = Recorder::default();
        pump_all(&mut store, &mut sink, 200);
        let msgs: Vec<u64> = sink
            .events
            .iter()
            .filter(|(k, _)| *k == "msg")
            .map(|(_, s)| *s)
            .collect();
        // Subject "odd" holds the even sequences (records 2, 4, ...), "even" the odd ones.
        let on_odd: Vec<u64> = msgs.iter().copied().filter(|s| s % 2 == 0).collect();
        let on_even: Vec<u64> = msgs.iter().copied().filter(|s| s % 2 == 1).collect();
        assert_eq!(on_odd, vec![96, 98, 100], "the last 3 on \"odd\"");
        assert_eq!(on_even.len(), 50, "all 50 on \"even\": fewer than asked");
        assert_eq!(sink.events.iter().filter(|(k, _)| *k == "done").count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_turn_replays_at_most_its_budget_in_bytes() {
        // 1000-byte payloads, 2500 bytes per turn: at most 3 records a turn (the record
        // that crosses the budget is the last), at least 1.
        let (mut store, dir) = store_with("bytes", 30, 1000, 4096, 2500);
        store.start_inbox_replay(request(">", ReplayStart::All));
        let mut sink = Recorder::default();
        let mut per_turn = Vec::new();
        while store.replay_state() != ReplayState::Idle {
            let before = sink.events.len();
            store.pump(0, Instant::now(), &mut sink);
            per_turn.push(
                sink.events[before..]
                    .iter()
                    .filter(|(k, _)| *k == "msg")
                    .count(),
            );
            assert!(per_turn.len() < 100, "{per_turn:?}");
        }
        assert!(per_turn.iter().all(|&n| n <= 3), "{per_turn:?}");
        assert_eq!(per_turn.iter().sum::<usize>(), 30);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_catch_up_waits_while_its_destination_is_congested() {
        let (mut store, dir) = store_with("congested", 10, 10, 4096, 1 << 20);
        store.start_inbox_replay(request(">", ReplayStart::All));
        let mut sink = Recorder {
            congested: true,
            ..Recorder::default()
        };
        for _ in 0..5 {
            assert_eq!(store.pump(0, Instant::now(), &mut sink), 1);
            assert_eq!(store.replay_state(), ReplayState::Waiting);
        }
        assert!(sink.events.is_empty(), "nothing while congested");
        sink.congested = false;
        pump_all(&mut store, &mut sink, 10);
        assert_eq!(sink.events.len(), 12, "{:?}", sink.events);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_cancelled_catch_up_ends_without_a_marker() {
        let (mut store, dir) = store_with("cancel", 100, 10, 5, 1 << 20);
        let req = request(">", ReplayStart::All);
        let origin = req.origin;
        store.start_inbox_replay(req);
        let mut sink = Recorder::default();
        store.pump(0, Instant::now(), &mut sink);
        assert_eq!(sink.events.len(), 5);
        store.cancel_inbox_replays(origin);
        assert_eq!(store.replay_state(), ReplayState::Idle);
        store.pump(0, Instant::now(), &mut sink);
        assert_eq!(sink.events.len(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A catch-up step sends a subscription's records as one run: one buffer, the records
    /// as the log stores them, whose bytes count in flight until the run is gone; a
    /// message made from it is the record, field by field.
    #[test]
    fn a_catch_up_step_sends_its_records_as_one_run_counted_in_flight() {
        let (mut store, dir) = store_with("run", 10, 100, 4, 1 << 20);
        let (sub, filter) = (sub_ref(), Bytes::from_static(b">"));
        store.start_replay(sub, &filter, 1, false);
        let mut sink = Recorder {
            keep_runs: true,
            ..Recorder::default()
        };
        store.pump(0, Instant::now(), &mut sink);
        assert_eq!(sink.runs.len(), 1, "one run a step");
        let run = sink.runs.pop().unwrap();
        let recs: Vec<_> = run.records().collect();
        assert_eq!(recs.len(), 4, "the step's batch");
        let stored: usize = recs.iter().map(|r| r.stored_len() as usize).sum();
        assert_eq!(run.records.len(), stored, "back to back, as stored");
        let in_flight = &store.replays[0].in_flight;
        assert_eq!(in_flight.load(Ordering::Relaxed), stored);
        let m = run.msg(&recs[1]);
        assert_eq!((&m.subject[..], m.stamp.seq), (&b"odd"[..], 2));
        assert_eq!(&m.payload[..], &[b'p'; 100][..]);
        assert_eq!((m.reply.is_none(), m.headers.is_none()), (true, true));
        // A message kept past the run keeps its own share in flight.
        let kept_len = recs[1].stored_len() as usize;
        let kept = run.flight.part(kept_len);
        drop(recs);
        drop(run);
        assert_eq!(in_flight.load(Ordering::Relaxed), kept_len);
        drop(kept);
        assert_eq!(in_flight.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A step's buffer is sized for its records, not for all the bytes it may copy, and one
    /// that ends short hands on a copy of its own size: the memory behind a run in flight
    /// stays within about twice what its catch-up's window counts.
    #[test]
    fn a_run_is_sized_for_its_records_not_for_the_bytes_it_may_copy() {
        let record = [7u8; 184];
        let mut run = Run::default();
        for left in (1..=256).rev() {
            run.push(&record, 256 << 10, left);
        }
        assert_eq!(run.buf.capacity(), 256 * 184, "reserved once, for the step");
        assert_eq!(run.take().len(), 256 * 184);

        let mut run = Run::default();
        for i in 0..3 {
            run.push(&record, 256 << 10, 256 - i);
        }
        let short = run.take();
        drop(run);
        assert_eq!(short.len(), 3 * 184);
        let held = short.try_into_mut().expect("nothing else holds it");
        assert!(
            held.capacity() <= 2 * 3 * 184,
            "a short step holds {} bytes of allocation for {} bytes",
            held.capacity(),
            3 * 184
        );
    }

    /// Over a ring that wrapped before and while the catch-up reads, in many small steps:
    /// a gap notice for what the ring overwrote, always ahead of the records after it, then
    /// every record still held, once each, in order.
    #[test]
    fn a_catch_up_over_a_wrapping_ring_reports_the_gap_then_every_record_in_order() {
        let dir = scratch("wrap");
        let config = StoreConfig {
            log_size: 64 << 10,
            replay_batch: 7,
            replay_bytes: 1 << 20,
            ..StoreConfig::default()
        };
        let now = Instant::now();
        let (mut store, _) =
            Store::open(&dir.join("r.ring"), &config, test_dedupe(), now, 0).unwrap();
        let append = |store: &mut Store, i: u64| {
            let payload = Bytes::from(i.to_le_bytes().repeat(25));
            let msg = Msg::new(Bytes::from_static(b"s"), payload, ConnId::NONE, now);
            store.append(&msg, i, now).unwrap();
        };
        // About 250 records fit: 1000 wrap it several times.
        for i in 1..=1000 {
            append(&mut store, i);
        }
        let first = store.first_seq();
        assert!(first > 1, "wrapped");
        let (sub, filter) = (sub_ref(), Bytes::from_static(b"s"));
        let gap = store.start_replay(sub, &filter, 1, false);
        assert_eq!(gap, Some((1, first)), "told when it starts");
        let mut sink = Recorder::default();
        // A few steps, then the ring wraps under the cursor.
        for _ in 0..3 {
            store.pump(0, Instant::now(), &mut sink);
        }
        let reached = sink.events.last().unwrap().1;
        for i in 1001..=1400 {
            append(&mut store, i);
        }
        let first_now = store.first_seq();
        assert!(first_now > reached + 1, "overwritten under the cursor");
        pump_all(&mut store, &mut sink, 1000);
        let mut expected: Vec<(&str, u64)> = (first..=reached).map(|s| ("deliver", s)).collect();
        expected.push(("gap", reached + 1));
        expected.extend((first_now..=1400).map(|s| ("deliver", s)));
        assert_eq!(sink.events, expected);
        assert!(!store.is_replaying(&sub), "live from the end of the log on");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_lossless_catch_up_is_at_risk_once_the_ring_is_half_way_to_overtaking_it() {
        let dir = scratch("risk");
        let config = StoreConfig {
            log_size: 64 << 10,
            ..StoreConfig::default()
        };
        let now = Instant::now();
        let (mut store, _) =
            Store::open(&dir.join("r.ring"), &config, test_dedupe(), now, 0).unwrap();
        let append = |store: &mut Store| {
            let msg = Msg::new(
                Bytes::from_static(b"s"),
                vec![0u8; 200].into(),
                ConnId::NONE,
                now,
            );
            store.append(&msg, 1, now).unwrap();
        };
        let (sub, filter) = (sub_ref(), Bytes::from_static(b"s"));
        // A catch-up of a subscription that is not lossless is none of this.
        append(&mut store);
        store.start_replay(sub, &filter, 1, false);
        assert!(store.is_replaying(&sub));
        assert!(!store.has_lossless_replays());
        assert_eq!(store.lossless_at_risk(&sub, 2), None);
        store.mark_lossless(&sub);
        assert!(store.has_lossless_replays());
        assert_eq!(store.lossless_at_risk(&sub, 2), Some(false));
        // Its fall-back is lossless too.
        store.start_lag(sub, &filter, 1, 0);
        assert!(store.has_lossless_replays());
        // Everything still to read, but the log less than half full: no risk yet.
        for _ in 0..50 {
            append(&mut store);
        }
        assert_eq!(
            store.lossless_at_risk(&sub, 2),
            Some(false),
            "a quarter full"
        );
        // Past half full with the cursor at the oldest record: at risk by both measures.
        for _ in 0..120 {
            append(&mut store);
        }
        assert_eq!(store.first_seq(), 1, "not wrapped yet");
        assert_eq!(store.lossless_at_risk(&sub, 2), Some(true));
        assert_eq!(store.lossless_at_risk(&sub, 1), Some(true));
        // The cursor moves to a third of the way from the newest: held no more than
        // a quarter's worth, so taken on (2/4) no longer, kept (1/4) still.
        let (first, next) = (store.first_seq(), store.next_seq());
        store.start_lag(sub, &filter, next - (next - first) / 3, 0);
        assert_eq!(store.lossless_at_risk(&sub, 2), Some(false));
        assert_eq!(store.lossless_at_risk(&sub, 1), Some(true));
        // Within the newest fifth: out of danger.
        store.start_lag(sub, &filter, next - (next - first) / 5, 0);
        assert_eq!(store.lossless_at_risk(&sub, 1), Some(false));
        store.stop_replay(&sub);
        assert_eq!(store.lossless_at_risk(&sub, 1), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ring_file_names_are_parsed_strictly() {
        assert_eq!(parse_shard_file("shard-0001-of-0004.ring"), Some((1, 4)));
        assert_eq!(
            parse_shard_file("shard-12345-of-20000.ring"),
            Some((12345, 20000))
        );
        for other in [
            "shard-0001-of-0004.salt",
            "shard-0001-of-0004.ring.damaged-1700000000",
            ".shard-0000-of-0001.ring.1.2.tmp",
            "shard--of-0004.ring",
            "shard-0x1-of-0004.ring",
            "LOCK",
        ] {
            assert_eq!(parse_shard_file(other), None, "{other}");
        }
    }

    #[test]
    fn ring_files_of_another_shard_count_are_refused_with_what_to_do() {
        let path = scratch("count");
        let dir = DataDir::open(&path).unwrap();
        assert!(dir.check_shard_count(2).is_ok(), "an empty directory");
        for name in [
            "shard-0000-of-0002.ring",
            "shard-0001-of-0002.ring",
            "shard-0000-of-0002.salt",
            "shard-0000-of-0003.ring.damaged-1",
        ] {
            std::fs::write(path.join(name), b"x").unwrap();
        }
        assert!(dir.check_shard_count(2).is_ok(), "the same count");
        let err = dir.check_shard_count(3).unwrap_err();
        let text = err.to_string();
        for part in [
            "holds the ring logs of 2 shards",
            "shard-0000-of-0002.ring, shard-0001-of-0002.ring",
            "started with --workers 3",
            "start ternd with --workers 2",
            "or give another --data-dir",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        assert!(
            !text.contains("damaged"),
            "copies are not ring files: {text}"
        );
        drop(dir);
        std::fs::remove_dir_all(&path).unwrap();
    }
}

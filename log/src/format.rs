//! The ring log's file format, as bytes: layout constants, the file header, the two checkpoint
//! slots, the wrap marker and the CRC rule. `docs/ring-log.md` is the prose version of this
//! module; the two must say the same thing.
//!
//! Owns: every offset and constant of the on-disk format, and encoding and decoding of the
//! header and checkpoints. Record encoding is in the `record` module.
//!
//! Never: does I/O, reads a clock or touches a socket. It works on byte slices only, and
//! decoding never panics, whatever the bytes.
//!
//! All integers are little-endian. A file is a 4096-byte header followed by the data region of
//! `capacity` bytes, which is used as a ring of 8-byte-aligned records.

/// The first 8 bytes of every ring log file: `0x89 'T' 'E' 'R' 'N' '\r' '\n' 0x1A`. The high
/// first byte and the line endings catch files mangled by text-mode transfers (the PNG trick).
pub const MAGIC: [u8; 8] = *b"\x89TERN\r\n\x1a";

/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// Bytes before the data region: the static header, the two checkpoint slots, and zero padding
/// to one 4 KiB page. Data offsets are counted from here.
pub const HEADER_LEN: usize = 4096;

/// Records start at, and occupy, multiples of this many bytes of the data region.
pub const ALIGN: usize = 8;

/// Bytes of a record before its variable fields (length, CRC, sequence, timestamp, priority,
/// flags and the five field lengths).
pub const RECORD_HEADER_LEN: usize = 40;

/// The length-field value of a wrap marker: "the ring continues at data offset 0".
pub const WRAP_LEN: u32 = u32::MAX;

/// The longest record (in bytes, before padding) the length field can describe. The ring's own
/// limit is its capacity: see [`crate::RingLog::max_record_len`].
pub const MAX_RECORD_LEN: u64 = (u32::MAX as u64) & !(ALIGN as u64 - 1);

/// The smallest data region a ring accepts, in bytes.
pub const MIN_CAPACITY: u64 = 128;

/// Record flag: the record has a reply subject (possibly empty).
pub const FLAG_REPLY: u8 = 0x01;
/// Record flag: the record has headers (possibly empty).
pub const FLAG_HEADERS: u8 = 0x02;
/// Record flag: the record has a message id (possibly empty).
pub const FLAG_MESSAGE_ID: u8 = 0x04;
/// Every flag bit format version 1 defines; a record with any other bit set is corrupt.
pub const KNOWN_FLAGS: u8 = FLAG_REPLY | FLAG_HEADERS | FLAG_MESSAGE_ID;

// The static header (bytes 0..64 of the file).
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_CAPACITY: usize = 16;
const OFF_EPOCH: usize = 24;
const OFF_CREATED: usize = 32;
const OFF_HEADER_CRC: usize = 60;
/// Length of the static header, whose last 4 bytes are its CRC.
pub(crate) const STATIC_LEN: usize = 64;

/// File offsets of the two checkpoint slots. Generation `g` lives in slot `g % 2`.
pub(crate) const SLOT_OFFSETS: [usize; 2] = [64, 128];
/// Bytes of a checkpoint slot that are written (the slot reserves 64).
pub(crate) const SLOT_LEN: usize = 48;
/// The slot's CRC covers bytes 0..44 and is its last 4 bytes, so it is the last thing written.
const SLOT_CRC: usize = 44;

/// Rounds `n` up to a multiple of [`ALIGN`].
#[inline]
pub const fn align(n: usize) -> usize {
    (n + (ALIGN - 1)) & !(ALIGN - 1)
}

/// The CRC-32 (IEEE, as `crc32fast` computes it) of the epoch's 8 little-endian bytes followed
/// by `bytes`. Seeding every checksum with the epoch means a record or checkpoint copied from
/// another log file never validates in this one.
#[inline]
pub(crate) fn crc(epoch: u64, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&epoch.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

/// [`crc`] for one epoch, the epoch's part done once: a log checks every record it
/// appends with the same epoch. It keeps a hasher already seeded (and with its CPU
/// features detected, which `crc32fast::Hasher::new_with_initial` does on every call) and
/// hashes each record from a copy of it.
#[derive(Debug, Clone)]
pub(crate) struct Seeded(crc32fast::Hasher);

impl Seeded {
    pub(crate) fn new(epoch: u64) -> Seeded {
        let mut h = crc32fast::Hasher::new();
        h.update(&epoch.to_le_bytes());
        Seeded(h)
    }

    /// `crc(epoch, bytes)`.
    #[inline]
    pub(crate) fn crc(&self, bytes: &[u8]) -> u32 {
        let mut h = self.0.clone();
        h.update(bytes);
        h.finalize()
    }
}

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The immutable part of the header: what the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileHeader {
    /// Bytes in the data region.
    pub capacity: u64,
    /// Random, non-zero, chosen when the file was created; never changes.
    pub epoch: u64,
    /// When the file was created, in ns since the Unix epoch (informational).
    pub created_ns: u64,
}

/// Why a static header was refused, before the file name is attached.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    BadMagic,
    Version(u32),
    Corrupt(String),
}

impl FileHeader {
    pub(crate) fn encode(&self) -> [u8; STATIC_LEN] {
        let mut b = [0u8; STATIC_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        b[OFF_HEADER_LEN..OFF_HEADER_LEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[OFF_CAPACITY..OFF_CAPACITY + 8].copy_from_slice(&self.capacity.to_le_bytes());
        b[OFF_EPOCH..OFF_EPOCH + 8].copy_from_slice(&self.epoch.to_le_bytes());
        b[OFF_CREATED..OFF_CREATED + 8].copy_from_slice(&self.created_ns.to_le_bytes());
        let sum = crc32fast::hash(&b[..OFF_HEADER_CRC]);
        b[OFF_HEADER_CRC..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes the static header from the start of a file. The checks run in the order a
    /// reader needs them: is this our file at all (magic), can we read its layout (version),
    /// is it intact (CRC), are its values possible.
    pub(crate) fn decode(b: &[u8]) -> Result<FileHeader, HeaderProblem> {
        if b.len() < MAGIC.len() || b[..MAGIC.len()] != MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        if b.len() < OFF_VERSION + 4 {
            return Err(HeaderProblem::Corrupt(format!(
                "the file is only {} bytes long",
                b.len()
            )));
        }
        let version = get_u32(b, OFF_VERSION);
        if version != VERSION {
            return Err(HeaderProblem::Version(version));
        }
        if b.len() < STATIC_LEN {
            return Err(HeaderProblem::Corrupt(format!(
                "the file is only {} bytes long",
                b.len()
            )));
        }
        let stored = get_u32(b, OFF_HEADER_CRC);
        let computed = crc32fast::hash(&b[..OFF_HEADER_CRC]);
        if stored != computed {
            return Err(HeaderProblem::Corrupt(format!(
                "header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        let header_len = get_u32(b, OFF_HEADER_LEN);
        if header_len as usize != HEADER_LEN {
            return Err(HeaderProblem::Corrupt(format!(
                "header length {header_len}, expected {HEADER_LEN}"
            )));
        }
        if b[40..OFF_HEADER_CRC].iter().any(|&x| x != 0) {
            return Err(HeaderProblem::Corrupt(
                "reserved header bytes are not zero".into(),
            ));
        }
        let h = FileHeader {
            capacity: get_u64(b, OFF_CAPACITY),
            epoch: get_u64(b, OFF_EPOCH),
            created_ns: get_u64(b, OFF_CREATED),
        };
        if h.epoch == 0 {
            return Err(HeaderProblem::Corrupt("epoch is zero".into()));
        }
        if h.capacity < MIN_CAPACITY || h.capacity & (ALIGN as u64 - 1) != 0 {
            return Err(HeaderProblem::Corrupt(format!(
                "impossible capacity {}",
                h.capacity
            )));
        }
        Ok(h)
    }
}

/// A checkpoint: where the log starts (and, as a hint, where it ended) at one moment.
///
/// The ring keeps one invariant on it: whenever a byte of the data region is written, the
/// newest checkpoint's `head` names a record that this write does not touch, with its sequence
/// in `first_seq` (or, for an empty log, the offset and sequence of the next record). Recovery
/// starts there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Increases by one per checkpoint written; generation `g` is stored in slot `g % 2`.
    pub generation: u64,
    /// Data offset of the oldest record.
    pub head: u64,
    /// Its sequence.
    pub first_seq: u64,
    /// Data offset just past the newest record when the checkpoint was written (a hint).
    pub tail: u64,
    /// The sequence the next record was to get when the checkpoint was written (a hint: the
    /// log held at least up to `next_seq - 1` then).
    pub next_seq: u64,
}

impl Checkpoint {
    pub(crate) fn encode(&self, epoch: u64) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&self.head.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.tail.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_seq.to_le_bytes());
        let sum = crc(epoch, &b[..SLOT_CRC]);
        b[SLOT_CRC..SLOT_CRC + 4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes slot `slot` (0 or 1) from its bytes. `None` when the slot was never written,
    /// is torn or corrupt (CRC), or holds values impossible for this file.
    pub(crate) fn decode(b: &[u8], slot: usize, epoch: u64, capacity: u64) -> Option<Checkpoint> {
        if b.len() < SLOT_LEN {
            return None;
        }
        if get_u32(b, SLOT_CRC) != crc(epoch, &b[..SLOT_CRC]) {
            return None;
        }
        let c = Checkpoint {
            generation: get_u64(b, 0),
            head: get_u64(b, 8),
            first_seq: get_u64(b, 16),
            tail: get_u64(b, 24),
            next_seq: get_u64(b, 32),
        };
        let aligned = |x: u64| x & (ALIGN as u64 - 1) == 0;
        let ok = c.generation != 0
            && (c.generation % 2) as usize == slot
            && c.head < capacity
            && aligned(c.head)
            && c.tail <= capacity
            && aligned(c.tail)
            && c.first_seq >= 1
            && c.first_seq <= c.next_seq
            && c.next_seq < u64::MAX;
        ok.then_some(c)
    }

    /// The newest valid checkpoint of a header page (at least [`HEADER_LEN`] bytes), if any.
    pub(crate) fn newest(page: &[u8], epoch: u64, capacity: u64) -> Option<Checkpoint> {
        (0..2)
            .filter_map(|slot| {
                let at = SLOT_OFFSETS[slot];
                Checkpoint::decode(&page[at..at + SLOT_LEN], slot, epoch, capacity)
            })
            .max_by_key(|c| c.generation)
    }

    /// File offset of the slot this checkpoint is stored in.
    pub(crate) fn slot_offset(&self) -> usize {
        SLOT_OFFSETS[(self.generation % 2) as usize]
    }
}

/// The 8 bytes of a wrap marker announcing that record `next_seq` is at data offset 0.
pub(crate) fn wrap_marker(epoch: u64, next_seq: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&WRAP_LEN.to_le_bytes());
    b[4..].copy_from_slice(&crc(epoch, &next_seq.to_le_bytes()).to_le_bytes());
    b
}

/// Whether the 8 bytes at `at` are a wrap marker announcing record `next_seq`.
pub(crate) fn is_wrap_marker_for(data: &[u8], at: usize, epoch: u64, next_seq: u64) -> bool {
    at + 8 <= data.len() && data[at..at + 8] == wrap_marker(epoch, next_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FileHeader {
        FileHeader {
            capacity: 1 << 20,
            epoch: 0x0123_4567_89ab_cdef,
            created_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(FileHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn header_checks_magic_then_version_then_crc() {
        let mut b = header().encode();
        b[0] ^= 1;
        assert_eq!(FileHeader::decode(&b), Err(HeaderProblem::BadMagic));
        let mut b = header().encode();
        b[OFF_VERSION] = 2;
        assert_eq!(FileHeader::decode(&b), Err(HeaderProblem::Version(2)));
        let mut b = header().encode();
        b[OFF_EPOCH] ^= 0x40;
        assert!(matches!(
            FileHeader::decode(&b),
            Err(HeaderProblem::Corrupt(r)) if r.contains("CRC")
        ));
        assert_eq!(FileHeader::decode(&[]), Err(HeaderProblem::BadMagic));
        assert!(matches!(
            FileHeader::decode(&MAGIC),
            Err(HeaderProblem::Corrupt(_))
        ));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let c = Checkpoint {
            generation: 7,
            head: 64,
            first_seq: 10,
            tail: 128,
            next_seq: 12,
        };
        let b = c.encode(5);
        assert_eq!(Checkpoint::decode(&b, 1, 5, 1024), Some(c));
        // Wrong slot for its generation, other epoch, flipped byte, never written.
        assert_eq!(Checkpoint::decode(&b, 0, 5, 1024), None);
        assert_eq!(Checkpoint::decode(&b, 1, 6, 1024), None);
        let mut d = b;
        d[9] ^= 1;
        assert_eq!(Checkpoint::decode(&d, 1, 5, 1024), None);
        assert_eq!(Checkpoint::decode(&[0u8; SLOT_LEN], 0, 5, 1024), None);
        // Impossible values: head past the ring.
        let far = Checkpoint { head: 1024, ..c };
        assert_eq!(Checkpoint::decode(&far.encode(5), 1, 5, 1024), None);
    }

    #[test]
    fn newest_checkpoint_wins() {
        let mut page = vec![0u8; HEADER_LEN];
        let a = Checkpoint {
            generation: 4,
            head: 0,
            first_seq: 1,
            tail: 0,
            next_seq: 1,
        };
        let b = Checkpoint {
            generation: 5,
            head: 8,
            first_seq: 2,
            tail: 8,
            next_seq: 2,
        };
        for c in [a, b] {
            let at = c.slot_offset();
            page[at..at + SLOT_LEN].copy_from_slice(&c.encode(9));
        }
        assert_eq!(Checkpoint::newest(&page, 9, 1024), Some(b));
        // A torn newest slot falls back to the other one.
        page[b.slot_offset() + 3] ^= 0xff;
        assert_eq!(Checkpoint::newest(&page, 9, 1024), Some(a));
    }

    #[test]
    fn wrap_marker_names_its_sequence() {
        let mut data = [0u8; 16];
        data[8..].copy_from_slice(&wrap_marker(3, 42));
        assert!(is_wrap_marker_for(&data, 8, 3, 42));
        assert!(!is_wrap_marker_for(&data, 8, 3, 43));
        assert!(!is_wrap_marker_for(&data, 8, 4, 42));
        assert!(!is_wrap_marker_for(&data, 12, 3, 42));
    }

    #[test]
    fn align_rounds_up_to_eight() {
        assert_eq!(align(0), 0);
        assert_eq!(align(1), 8);
        assert_eq!(align(40), 40);
        assert_eq!(align(41), 48);
        assert_eq!(MAX_RECORD_LEN % ALIGN as u64, 0);
        assert!(MAX_RECORD_LEN < u64::from(WRAP_LEN));
    }

    #[test]
    fn a_seeded_checksum_is_the_epoch_seeded_one() {
        for epoch in [1u64, 0x9e37_79b9_7f4a_7c15, u64::MAX] {
            let seeded = Seeded::new(epoch);
            for len in [0usize, 1, 7, 8, 15, 16, 63, 64, 200, 4096] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                assert_eq!(
                    seeded.crc(&bytes),
                    crc(epoch, &bytes),
                    "epoch {epoch:#x}, {len} bytes"
                );
            }
        }
    }
}

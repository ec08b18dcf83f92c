//! One record: the [`Record`] a caller appends and reads back, and its bytes in the ring.
//!
//! Owns: the record layout (see `docs/ring-log.md`, "Record"), the limits of each field, and
//! decoding a record from the data region, with or without checking its CRC, or from a copy
//! of records as the ring stores them ([`StoredRecords`]).
//!
//! Never: allocates, does I/O or touches a socket. Decoding never panics and never reads
//! outside the slice it is given, whatever the bytes; it borrows every field from that slice.
//!
//! Layout (little-endian, offsets from the record's start, which is 8-byte aligned):
//!
//! ```text
//!  0 u32 length   4 u32 crc   8 u64 seq   16 u64 timestamp   24 u8 priority   25 u8 flags
//! 26 u16 subject_len   28 u16 reply_len   30 u16 message_id_len   32 u32 headers_len
//! 36 u32 payload_len   40 subject | reply | headers | message_id | payload | zero padding
//! ```

use crate::error::LogError;
use crate::format::{
    align, crc, get_u32, FLAG_HEADERS, FLAG_MESSAGE_ID, FLAG_REPLY, KNOWN_FLAGS, RECORD_HEADER_LEN,
    WRAP_LEN,
};

/// What one record holds. The slices are borrowed: from the caller when appending, from the
/// log's memory map when reading.
///
/// `reply`, `headers` and `message_id` keep the difference between absent (`None`) and
/// present but empty (`Some(b"")`).
///
/// ```
/// use tern_log::Record;
///
/// let rec = Record {
///     timestamp: 1_700_000_000_000_000_000,
///     priority: 3,
///     reply: Some(b"_INBOX.a1"),
///     ..Record::new(b"orders.eu", b"{\"qty\":2}")
/// };
/// assert_eq!(rec.subject, b"orders.eu");
/// assert_eq!(rec.stored_len(), 72); // 40-byte record header + 27 bytes of fields, rounded up to 8
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record<'a> {
    /// Assigned by [`crate::RingLog::append`] (ignored on input): 1, 2, 3… within an epoch,
    /// never repeated.
    pub seq: u64,
    /// Nanoseconds since the Unix epoch, set by the caller.
    pub timestamp: u64,
    /// The message's priority, as the caller defines it.
    pub priority: u8,
    /// The subject (at most 65535 bytes).
    pub subject: &'a [u8],
    /// The reply subject, if any (at most 65535 bytes).
    pub reply: Option<&'a [u8]>,
    /// The encoded headers block, if any (at most 4 GiB − 1).
    pub headers: Option<&'a [u8]>,
    /// The publisher's message id, if any (at most 65535 bytes).
    pub message_id: Option<&'a [u8]>,
    /// The payload (at most 4 GiB − 1).
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// A record with this subject and payload; everything else zero or absent.
    pub fn new(subject: &'a [u8], payload: &'a [u8]) -> Record<'a> {
        Record {
            subject,
            payload,
            ..Record::default()
        }
    }

    /// Bytes this record occupies in the ring: the 40-byte record header plus its fields,
    /// rounded up to a multiple of 8.
    pub fn stored_len(&self) -> u64 {
        align_u64(self.exact_len())
    }

    /// The record's length field: header plus fields, before padding.
    pub(crate) fn exact_len(&self) -> u64 {
        let opt = |f: Option<&[u8]>| f.map_or(0, |f| f.len() as u64);
        RECORD_HEADER_LEN as u64
            + self.subject.len() as u64
            + opt(self.reply)
            + opt(self.headers)
            + opt(self.message_id)
            + self.payload.len() as u64
    }

    /// Checks every field against the width of its length prefix, given the record's
    /// [`Record::exact_len`]. Fields that together fit in the narrowest prefix (16 bits)
    /// each fit in theirs, so a record of at most 64 KiB is settled by one comparison.
    #[inline]
    pub(crate) fn check_fields(&self, exact_len: u64) -> Result<(), LogError> {
        if exact_len - RECORD_HEADER_LEN as u64 <= u64::from(u16::MAX) {
            return Ok(());
        }
        self.check_each_field()
    }

    #[cold]
    fn check_each_field(&self) -> Result<(), LogError> {
        let checks: [(&'static str, usize, u64); 5] = [
            ("subject", self.subject.len(), u16::MAX.into()),
            ("reply", self.reply.map_or(0, <[u8]>::len), u16::MAX.into()),
            (
                "message_id",
                self.message_id.map_or(0, <[u8]>::len),
                u16::MAX.into(),
            ),
            (
                "headers",
                self.headers.map_or(0, <[u8]>::len),
                u32::MAX.into(),
            ),
            ("payload", self.payload.len(), u32::MAX.into()),
        ];
        for (field, len, max) in checks {
            if len as u64 > max {
                return Err(LogError::FieldTooLong {
                    field,
                    len: len as u64,
                    max,
                });
            }
        }
        Ok(())
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.reply.is_some() {
            f |= FLAG_REPLY;
        }
        if self.headers.is_some() {
            f |= FLAG_HEADERS;
        }
        if self.message_id.is_some() {
            f |= FLAG_MESSAGE_ID;
        }
        f
    }

    /// Bytes 8..40 of the encoded record: sequence, timestamp, priority, flags and the field
    /// lengths. Call [`Record::check_fields`] first; lengths are truncated otherwise.
    pub(crate) fn fixed_part(&self, seq: u64) -> [u8; RECORD_HEADER_LEN - 8] {
        let mut b = [0u8; RECORD_HEADER_LEN - 8];
        b[0..8].copy_from_slice(&seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
        b[16] = self.priority;
        b[17] = self.flags();
        let len16 = |f: &[u8]| (f.len() as u16).to_le_bytes();
        b[18..20].copy_from_slice(&len16(self.subject));
        b[20..22].copy_from_slice(&len16(self.reply.unwrap_or_default()));
        b[22..24].copy_from_slice(&len16(self.message_id.unwrap_or_default()));
        b[24..28].copy_from_slice(&(self.headers.unwrap_or_default().len() as u32).to_le_bytes());
        b[28..32].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        b
    }

    /// The variable fields in their on-disk order; absent ones are empty.
    pub(crate) fn var_fields(&self) -> [&'a [u8]; 5] {
        [
            self.subject,
            self.reply.unwrap_or_default(),
            self.headers.unwrap_or_default(),
            self.message_id.unwrap_or_default(),
            self.payload,
        ]
    }
}

/// Rounds up to a multiple of 8 (the u64 twin of [`align`]).
pub(crate) fn align_u64(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// The first 8 bytes of a record: its length, then its CRC. Written last.
pub(crate) fn commit_word(len: u32, crc: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&len.to_le_bytes());
    b[4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why the bytes at an offset are not the record recovery expected there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The length field is zero: nothing was committed here.
    Empty,
    /// A wrap marker where a record was expected, that does not name it (stale, or
    /// damaged).
    WrapMarker,
    /// The length is shorter than a record header or runs past the allowed end.
    Length(u32),
    /// A flag bit this format version does not define.
    Flags(u8),
    /// The field lengths do not add up to the record length, or an absent field has a length.
    Fields,
    /// The CRC does not match the bytes.
    Crc,
    /// A valid record, but not the sequence expected: stale data from an earlier lap.
    Seq(u64),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Empty => write!(f, "its length and CRC were never written (torn)"),
            Invalid::WrapMarker => write!(f, "a wrap marker that does not announce it"),
            Invalid::Length(l) => write!(f, "length {l} is out of bounds"),
            Invalid::Flags(x) => write!(f, "unknown flag bits {x:#04x}"),
            Invalid::Fields => write!(f, "its field lengths do not add up"),
            Invalid::Crc => write!(f, "CRC mismatch (torn or corrupt)"),
            Invalid::Seq(s) => write!(f, "it holds sequence {s} instead"),
        }
    }
}

/// Records laid out back to back as the ring stores them, each taking its
/// [`Record::stored_len`] bytes (what [`crate::Records::next_stored`] hands out, copied one
/// after another into a buffer of the caller's), read oldest first and borrowed from that
/// buffer. No CRC check: they were checked when recovered or written, and copied since.
/// It ends at the end of the buffer, or at the first bytes that are not a record (never
/// past the buffer, never a panic).
///
/// ```
/// use tern_log::{Record, StoredRecords};
///
/// let dir = std::env::temp_dir().join(format!("tern-log-doc-stored-{}", std::process::id()));
/// let _ = std::fs::remove_dir_all(&dir);
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut log = tern_log::RingLog::open(&dir.join("ring"), 1 << 16, tern_log::Fsync::Never).unwrap().0;
/// log.append(&Record::new(b"a", b"one")).unwrap();
/// log.append(&Record::new(b"b", b"two")).unwrap();
/// log.flush().unwrap();
/// let mut copy = Vec::new();
/// let mut records = log.read_from(1);
/// while let Some((_, stored)) = records.next_stored() {
///     copy.extend_from_slice(stored);
/// }
/// let payloads: Vec<&[u8]> = StoredRecords::new(&copy).map(|r| r.payload).collect();
/// assert_eq!(payloads, [&b"one"[..], &b"two"[..]]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct StoredRecords<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> StoredRecords<'a> {
    /// The records in `buf`, from its start.
    pub fn new(buf: &'a [u8]) -> StoredRecords<'a> {
        StoredRecords { buf, pos: 0 }
    }
}

impl<'a> Iterator for StoredRecords<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        match decode(self.buf, self.pos, self.buf.len()) {
            Ok((rec, stored)) => {
                self.pos += stored;
                Some(rec)
            }
            Err(_) => {
                self.pos = self.buf.len();
                None
            }
        }
    }
}

impl std::iter::FusedIterator for StoredRecords<'_> {}

/// Decodes the record at `at`, which must end at or before `limit` (`limit <= data.len()`),
/// without checking its CRC. Returns the record and the bytes it occupies (padded).
pub(crate) fn decode(data: &[u8], at: usize, limit: usize) -> Result<(Record<'_>, usize), Invalid> {
    if at + RECORD_HEADER_LEN > limit {
        // Not even a record header fits: only an empty slot or a marker can be here.
        return Err(match data.get(at..at + 4).map(|_| get_u32(data, at)) {
            Some(0) => Invalid::Empty,
            Some(WRAP_LEN) => Invalid::WrapMarker,
            Some(l) => Invalid::Length(l),
            None => Invalid::Length(0),
        });
    }
    // The fixed part, read as one array: its fields at constant offsets need no bounds
    // check each (this runs once per record every catch-up reads, on both of its workers).
    let Ok(h) = <&[u8; RECORD_HEADER_LEN]>::try_from(&data[at..at + RECORD_HEADER_LEN]) else {
        return Err(Invalid::Length(0));
    };
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([h[o], h[o + 1]]));
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let len = u32_at(0);
    match len {
        0 => return Err(Invalid::Empty),
        WRAP_LEN => return Err(Invalid::WrapMarker),
        _ => {}
    }
    let exact = len as usize;
    if exact < RECORD_HEADER_LEN || align(exact) > limit - at {
        return Err(Invalid::Length(len));
    }
    let flags = h[25];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Invalid::Flags(flags));
    }
    let (subject_len, reply_len, id_len) = (u16_at(26), u16_at(28), u16_at(30));
    let (headers_len, payload_len) = (u32_at(32) as usize, u32_at(36) as usize);
    if RECORD_HEADER_LEN + subject_len + reply_len + headers_len + id_len + payload_len != exact
        || (flags & FLAG_REPLY == 0 && reply_len != 0)
        || (flags & FLAG_HEADERS == 0 && headers_len != 0)
        || (flags & FLAG_MESSAGE_ID == 0 && id_len != 0)
    {
        return Err(Invalid::Fields);
    }
    // In bounds: `exact` fits before `limit` (checked above), and the fields fill it.
    let fields = &data[at + RECORD_HEADER_LEN..at + exact];
    let (subject, rest) = fields.split_at(subject_len);
    let (reply, rest) = rest.split_at(reply_len);
    let (headers, rest) = rest.split_at(headers_len);
    let (message_id, payload) = rest.split_at(id_len);
    let rec = Record {
        seq: u64_at(8),
        timestamp: u64_at(16),
        priority: h[24],
        subject,
        reply: (flags & FLAG_REPLY != 0).then_some(reply),
        headers: (flags & FLAG_HEADERS != 0).then_some(headers),
        message_id: (flags & FLAG_MESSAGE_ID != 0).then_some(message_id),
        payload,
    };
    Ok((rec, align(exact)))
}

/// Decodes the record at `at` and checks its CRC (seeded with `epoch`), whatever its
/// sequence: a record this log wrote, intact.
pub(crate) fn check(
    data: &[u8],
    at: usize,
    limit: usize,
    epoch: u64,
) -> Result<(Record<'_>, usize), Invalid> {
    let (rec, stored) = decode(data, at, limit)?;
    let exact = get_u32(data, at) as usize;
    if get_u32(data, at + 4) != crc(epoch, &data[at + 8..at + exact]) {
        return Err(Invalid::Crc);
    }
    Ok((rec, stored))
}

/// Decodes and verifies the record at `at`: structure, CRC (seeded with `epoch`), and that it
/// carries sequence `seq`.
#[cfg(test)]
pub(crate) fn verify(
    data: &[u8],
    at: usize,
    limit: usize,
    epoch: u64,
    seq: u64,
) -> Result<(Record<'_>, usize), Invalid> {
    let (rec, stored) = check(data, at, limit, epoch)?;
    if rec.seq != seq {
        return Err(Invalid::Seq(rec.seq));
    }
    Ok((rec, stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes `rec` at the start of a fresh buffer, the way the ring does.
    fn encode(rec: &Record<'_>, seq: u64, epoch: u64) -> Vec<u8> {
        let len = rec.exact_len() as usize;
        let mut b = vec![0u8; align(len)];
        b[8..RECORD_HEADER_LEN].copy_from_slice(&rec.fixed_part(seq));
        let mut p = RECORD_HEADER_LEN;
        for f in rec.var_fields() {
            b[p..p + f.len()].copy_from_slice(f);
            p += f.len();
        }
        let sum = crc(epoch, &b[8..len]);
        b[..8].copy_from_slice(&commit_word(len as u32, sum));
        b
    }

    fn opt_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
    }

    proptest! {
        #[test]
        fn every_field_round_trips(
            ts in any::<u64>(), prio in any::<u8>(), seq in 1..u64::MAX,
            subject in proptest::collection::vec(any::<u8>(), 0..40),
            reply in opt_bytes(), headers in opt_bytes(), id in opt_bytes(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let rec = Record {
                seq: 0,
                timestamp: ts,
                priority: prio,
                subject: &subject,
                reply: reply.as_deref(),
                headers: headers.as_deref(),
                message_id: id.as_deref(),
                payload: &payload,
            };
            let b = encode(&rec, seq, 77);
            prop_assert_eq!(b.len() as u64, rec.stored_len());
            let (got, stored) = verify(&b, 0, b.len(), 77, seq).unwrap();
            prop_assert_eq!(stored, b.len());
            prop_assert_eq!(got, Record { seq, ..rec });
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..8) {
            let at = (at * 8).min(bytes.len());
            let _ = verify(&bytes, at, bytes.len(), 1, 1);
        }

        #[test]
        fn any_flipped_bit_is_caught(byte in 0usize..64, bit in 0u8..8) {
            let rec = Record { reply: Some(b"r"), ..Record::new(b"a.b", b"payload bytes") };
            let mut b = encode(&rec, 5, 9);
            let byte = byte % (rec.exact_len() as usize);
            b[byte] ^= 1 << bit;
            prop_assert!(verify(&b, 0, b.len(), 9, 5).is_err());
        }
    }

    #[test]
    fn absent_and_empty_differ() {
        let a = Record::new(b"s", b"p");
        let e = Record {
            reply: Some(b""),
            headers: Some(b""),
            message_id: Some(b""),
            ..a
        };
        let (ba, be) = (encode(&a, 1, 1), encode(&e, 1, 1));
        let (got_a, _) = verify(&ba, 0, 48, 1, 1).unwrap();
        let (got_e, _) = verify(&be, 0, 48, 1, 1).unwrap();
        assert_eq!(got_a.reply, None);
        assert_eq!(got_e.reply, Some(&b""[..]));
        assert_eq!(got_e.headers, Some(&b""[..]));
        assert_eq!(got_e.message_id, Some(&b""[..]));
    }

    #[test]
    fn wrong_sequence_epoch_and_limits_are_reported() {
        let rec = Record::new(b"s", b"p");
        let b = encode(&rec, 3, 1);
        assert_eq!(verify(&b, 0, b.len(), 1, 4), Err(Invalid::Seq(3)));
        assert_eq!(verify(&b, 0, b.len(), 2, 3), Err(Invalid::Crc));
        assert_eq!(verify(&b, 0, b.len() - 8, 1, 3), Err(Invalid::Length(42)));
        assert_eq!(verify(&[0u8; 48], 0, 48, 1, 1), Err(Invalid::Empty));
        let mut m = [0u8; 48];
        m[..4].copy_from_slice(&WRAP_LEN.to_le_bytes());
        assert_eq!(decode(&m, 0, 48).map(|_| ()), Err(Invalid::WrapMarker));
    }

    #[test]
    fn field_limits() {
        let long = vec![0u8; 70_000];
        let rec = Record::new(&long, b"");
        assert!(matches!(
            rec.check_fields(rec.exact_len()),
            Err(LogError::FieldTooLong {
                field: "subject",
                len: 70_000,
                max: 65_535
            })
        ));
        let rec = Record {
            message_id: Some(&long),
            ..Record::new(b"s", &long)
        };
        assert!(matches!(
            rec.check_fields(rec.exact_len()),
            Err(LogError::FieldTooLong {
                field: "message_id",
                ..
            })
        ));
        let rec = Record::new(b"s", &long);
        assert!(rec.check_fields(rec.exact_len()).is_ok());
    }

    /// The one-comparison check for records of at most 64 KiB of fields agrees with the
    /// field-by-field one on both sides of its bound.
    #[test]
    fn the_short_record_check_agrees_with_the_field_by_field_one() {
        let max = vec![0u8; 65_535];
        let over = vec![0u8; 65_536];
        let cases: [(Record<'_>, bool); 5] = [
            (Record::new(&max, b""), true),
            (Record::new(&over, b""), false),
            (Record::new(&max, b"p"), true),
            (
                Record {
                    reply: Some(&max),
                    message_id: Some(&max),
                    ..Record::new(&max, &over)
                },
                true,
            ),
            (
                Record {
                    reply: Some(&over),
                    ..Record::new(b"s", b"")
                },
                false,
            ),
        ];
        for (rec, ok) in cases {
            assert_eq!(rec.check_fields(rec.exact_len()).is_ok(), ok);
            assert_eq!(rec.check_each_field().is_ok(), ok);
        }
    }
}

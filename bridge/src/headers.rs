//! Header blocks as bytes: reading one field and adding fields, without parsing the rest.
//!
//! Owns: [`get`] and [`get_each`] (a field's first value, name matched
//! case-insensitively) and [`with`] (the block with fields appended, or a new block; the
//! block itself from [`adding`] when there is nothing to append). Everything the bridge relays keeps
//! its header block byte for byte, plus the bridge's own fields.
//!
//! Never: allocates more than the one new block, or touches a block it cannot frame (a
//! block without `NATS/1.0` first and an empty line last is replaced, never extended).

use bytes::{BufMut, Bytes, BytesMut};

/// The value of field `name` in `block`, trimmed; `None` when absent.
pub(crate) fn get<'a>(block: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let [value] = get_each(block, [name]);
    value
}

/// The first value of each of `names` in `block`, in one pass over it.
pub(crate) fn get_each<'a, const N: usize>(
    block: &'a [u8],
    names: [&str; N],
) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    let mut lines = block.split(|&b| b == b'\n');
    lines.next(); // the status line
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        for (name, value) in names.iter().zip(found.iter_mut()) {
            if value.is_none() && line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                *value = Some(line[colon + 1..].trim_ascii());
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
}

/// The status code of a header block's first line (`NATS/1.0 503`), if it has one.
pub(crate) fn status(block: Option<&[u8]>) -> Option<u16> {
    let line = block?.split(|&b| b == b'\r').next()?;
    let rest = line.strip_prefix(b"NATS/1.0")?.trim_ascii_start();
    let code = rest.split(|&b| b == b' ').next()?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `block` with `fields` appended (a new `NATS/1.0` block when there is none, or it is not
/// framed as one).
pub(crate) fn with(block: Option<&[u8]>, fields: &[(&str, &[u8])]) -> Bytes {
    let mut out = BytesMut::with_capacity(with_len(block, fields));
    write_with(&mut out, block, fields);
    out.freeze()
}

/// [`with`], but the block itself (no copy) when there is nothing to add to a framed one.
pub(crate) fn adding(block: Option<&Bytes>, fields: &[(&str, &[u8])]) -> Bytes {
    match block {
        Some(b) if fields.is_empty() && base(Some(b)).len() + 2 == b.len() => b.clone(),
        _ => with(block.map(|b| &b[..]), fields),
    }
}

/// The length of [`with`]'s block.
pub(crate) fn with_len(block: Option<&[u8]>, fields: &[(&str, &[u8])]) -> usize {
    base(block).len()
        + fields
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + 2
}

/// Appends [`with`]'s block to `out`.
pub(crate) fn write_with(out: &mut BytesMut, block: Option<&[u8]>, fields: &[(&str, &[u8])]) {
    out.put_slice(base(block));
    for (name, value) in fields {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// The part of `block` kept: all but its final empty line (or a bare status line).
fn base(block: Option<&[u8]>) -> &[u8] {
    match block {
        Some(b) if b.starts_with(b"NATS/1.0") && b.ends_with(b"\r\n\r\n") => &b[..b.len() - 2],
        _ => b"NATS/1.0\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_block() -> &'static [u8] {
        b"NATS/1.0 503\r\n\r\n"
    }

    #[test]
    fn fields_are_read_and_added() {
        let block = b"NATS/1.0\r\nTern-Origin: abc\r\nX: 1\r\n\r\n";
        assert_eq!(get(block, "tern-origin"), Some(&b"abc"[..]));
        assert_eq!(get(block, "Y"), None);
        let out = with(Some(block), &[("Y", b"2")]);
        assert_eq!(
            &out[..],
            b"NATS/1.0\r\nTern-Origin: abc\r\nX: 1\r\nY: 2\r\n\r\n"
        );
        assert_eq!(&with(None, &[("A", b"b")])[..], b"NATS/1.0\r\nA: b\r\n\r\n");
        // A status line is kept, and not read as a field.
        let block = status_block();
        assert_eq!(get(block, "NATS/1.0 503"), None);
        assert_eq!(
            &with(Some(block), &[("A", b"b")])[..],
            b"NATS/1.0 503\r\nA: b\r\n\r\n"
        );
        assert_eq!(status(Some(status_block())), Some(503));
        assert_eq!(status(Some(b"NATS/1.0\r\nA: b\r\n\r\n")), None);
        assert_eq!(
            status(Some(b"NATS/1.0 408 Request Timeout\r\n\r\n")),
            Some(408)
        );
        assert_eq!(status(None), None);
        // Nothing to add: the same block, not a copy; one that is not framed is replaced.
        let framed = Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\n");
        let kept = adding(Some(&framed), &[]);
        assert_eq!(kept.as_ptr(), framed.as_ptr());
        assert_eq!(&adding(None, &[])[..], b"NATS/1.0\r\n\r\n");
        let junk = Bytes::from_static(b"junk");
        assert_eq!(&adding(Some(&junk), &[])[..], b"NATS/1.0\r\n\r\n");
        assert_eq!(
            get_each(b"NATS/1.0\r\nb: 2\r\nA: 1\r\na: 3\r\n\r\n", ["a", "B", "c"]),
            [Some(&b"1"[..]), Some(&b"2"[..]), None]
        );
        // A block that is not one is replaced.
        assert_eq!(
            &with(Some(b"junk"), &[("A", b"b")])[..],
            b"NATS/1.0\r\nA: b\r\n\r\n"
        );
    }
}

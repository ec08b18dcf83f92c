//! The subject of an X.509 certificate, as a line for logs (`CN=alice, O=Example`).
//!
//! Owns: a minimal DER walk from a certificate to its subject name (RFC 5280, section
//! 4.1): `Certificate → tbsCertificate → [version], serial, signature, issuer, validity,
//! subject`, and the formatting of its attributes (common ones by name, others as a dotted
//! OID).
//!
//! Never: validates anything (rustls has verified the certificate before anyone asks) or
//! panics: any input that is not what it expects gives `None`.

use std::fmt::Write;

/// One DER element: its tag, its contents, and what follows it.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    rest: &'a [u8],
}

/// Reads the element at the start of `der` (single-byte tags, definite lengths of up to
/// four bytes, which is all a certificate uses).
fn element(der: &[u8]) -> Option<Element<'_>> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 4 || der.len() < width {
            return None;
        }
        let (bytes, rest) = der.split_at(width);
        der = rest;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if der.len() < len {
        return None;
    }
    let (contents, rest) = der.split_at(len);
    Some(Element {
        tag,
        contents,
        rest,
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version` in a tbsCertificate.
const VERSION: u8 = 0xa0;
const BMP_STRING: u8 = 0x1e;

/// The subject of the DER certificate `cert`, or `None` when it cannot be read.
pub fn subject(cert: &[u8]) -> Option<String> {
    let certificate = element(cert).filter(|e| e.tag == SEQUENCE)?;
    let tbs = element(certificate.contents).filter(|e| e.tag == SEQUENCE)?;
    let mut fields = tbs.contents;
    if fields.first() == Some(&VERSION) {
        fields = element(fields)?.rest;
    }
    // serial, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        fields = element(fields)?.rest;
    }
    let name = element(fields).filter(|e| e.tag == SEQUENCE)?;
    format_name(name.contents)
}

/// `RDNSequence ::= SEQUENCE OF SET OF AttributeTypeAndValue`, in the certificate's order.
fn format_name(mut rdns: &[u8]) -> Option<String> {
    let mut out = String::new();
    while !rdns.is_empty() {
        let rdn = element(rdns).filter(|e| e.tag == SET)?;
        rdns = rdn.rest;
        let mut attributes = rdn.contents;
        while !attributes.is_empty() {
            let attribute = element(attributes).filter(|e| e.tag == SEQUENCE)?;
            attributes = attribute.rest;
            let oid = element(attribute.contents).filter(|e| e.tag == OID)?;
            let value = element(oid.rest)?;
            if !out.is_empty() {
                out.push_str(", ");
            }
            write_attribute_name(&mut out, oid.contents);
            out.push('=');
            write_value(&mut out, value.tag, value.contents);
        }
    }
    Some(out)
}

fn write_attribute_name(out: &mut String, oid: &[u8]) {
    let short = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return write_dotted_oid(out, oid),
    };
    out.push_str(short);
}

/// An OID in dotted form (`1.2.3`); arcs too long for a `u64` are cut at that point.
fn write_dotted_oid(out: &mut String, oid: &[u8]) {
    let mut arc: u64 = 0;
    let mut first = true;
    for &b in oid {
        if arc > u64::MAX >> 7 {
            out.push_str("...");
            return;
        }
        arc = (arc << 7) | u64::from(b & 0x7f);
        if b & 0x80 != 0 {
            continue;
        }
        if first {
            let top = arc.min(80) / 40;
            let _ = write!(out, "{}.{}", top, arc - top * 40);
            first = false;
        } else {
            let _ = write!(out, ".{arc}");
        }
        arc = 0;
    }
}

fn write_value(out: &mut String, tag: u8, contents: &[u8]) {
    if tag == BMP_STRING {
        let units = contents
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
        out.extend(char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)));
    } else {
        out.push_str(&String::from_utf8_lossy(contents));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dotted_oid_splits_the_first_byte_into_two_arcs() {
        let mut out = String::new();
        // 1.2.840.113549 (RSA's arc).
        write_dotted_oid(&mut out, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]);
        assert_eq!(out, "1.2.840.113549");
    }

    #[test]
    fn a_name_with_known_and_unknown_attributes() {
        // SET { SEQ { OID 2.5.4.3, UTF8 "alice" } }, SET { SEQ { OID 2.5.4.99, PRINTABLE "x" } }
        let name = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', b'l', b'i',
            0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x63, 0x13, 0x01, b'x',
        ];
        assert_eq!(format_name(&name).as_deref(), Some("CN=ali, 2.5.4.99=x"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = subject(&bytes);
        }
    }
}

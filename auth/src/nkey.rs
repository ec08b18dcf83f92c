//! nkeys: user public keys, nonces, and the signature of a nonce.
//!
//! Owns: decoding a user public key (`U...`: base32 of a prefix byte, the 32-byte Ed25519
//! key and a CRC-16/XMODEM, little-endian, as the `nkeys` crate and nats-server encode it),
//! [`nonce`] and [`fresh_nonce`], and verifying a client's `sig`.
//!
//! Never: holds a seed or signs anything; reads a clock.
//!
//! Why not the `nkeys` crate at run time: it brings `ed25519-dalek`, `signatory` and
//! `rand` for what is one base32 decode, a CRC and a `ring` Ed25519 verification (`ring`
//! is already built for rustls). The tests use `nkeys` to make key pairs, so this decoder
//! is checked against the reference implementation.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};

/// Random bytes in a nonce (nats-server's `nonceRawLen`).
pub const NONCE_RAW_LEN: usize = 11;

/// The prefix byte of a user public key: `U` in base32.
const PREFIX_USER: u8 = 20 << 3;
/// Characters of an encoded public key: base32 of 1 + 32 + 2 bytes.
const ENCODED_PUBLIC_KEY_LEN: usize = 56;

/// The nonce sent in `INFO`: the random bytes in base64 (raw URL alphabet, no padding), as
/// nats-server makes it.
pub fn nonce(random: [u8; NONCE_RAW_LEN]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

/// A nonce from the operating system's random source.
///
/// Panics when the OS cannot supply random bytes: without them no nonce is safe to hand
/// out, and that is no state to keep serving in.
pub fn fresh_nonce() -> String {
    let mut random = [0u8; NONCE_RAW_LEN];
    getrandom::fill(&mut random).expect("the OS random source failed");
    nonce(random)
}

/// A user's Ed25519 public key, decoded from its `U...` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserKey([u8; 32]);

impl UserKey {
    /// Decodes a user public key; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<UserKey, &'static str> {
        if text.len() != ENCODED_PUBLIC_KEY_LEN {
            return Err("wrong length");
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(text.as_bytes())
            .map_err(|_| "not base32")?;
        let (body, crc) = raw.split_at(raw.len() - 2);
        if crc16(body) != u16::from_le_bytes([crc[0], crc[1]]) {
            return Err("bad checksum");
        }
        if body[0] != PREFIX_USER {
            return Err("not a user key");
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&body[1..]);
        Ok(UserKey(key))
    }

    /// True when `sig` (base64, raw URL or standard, as nats-server accepts) is this key's
    /// signature of `nonce`.
    pub(crate) fn verify(&self, nonce: &str, sig: &str) -> bool {
        let Some(sig) = decode_sig(sig) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(nonce.as_bytes(), &sig)
            .is_ok()
    }
}

/// Standard base64, padded or not.
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Raw URL-safe base64 first, then standard (with or without padding).
fn decode_sig(sig: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(sig)
        .or_else(|_| STANDARD_ANY_PAD.decode(sig))
        .ok()
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), the nkeys checksum.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn nonce_is_raw_url_base64_of_11_bytes() {
        let n = nonce([0xff; NONCE_RAW_LEN]);
        assert_eq!(n, "______________8");
        assert_eq!(nonce([0; NONCE_RAW_LEN]).len(), 15);
        let a = fresh_nonce();
        assert_eq!(a.len(), 15);
        assert_ne!(a, fresh_nonce());
    }

    #[test]
    fn decodes_the_reference_encoding_and_verifies() {
        let kp = nkeys::KeyPair::new_user();
        let key = UserKey::parse(&kp.public_key()).unwrap();
        let nonce = fresh_nonce();
        let sig = kp.sign(nonce.as_bytes()).unwrap();
        assert!(key.verify(&nonce, &URL_SAFE_NO_PAD.encode(&sig)));
        assert!(key.verify(&nonce, &STANDARD.encode(&sig)));
        assert!(!key.verify("other nonce", &URL_SAFE_NO_PAD.encode(&sig)));
        assert!(!key.verify(&nonce, "not base64!"));
        let other = nkeys::KeyPair::new_user();
        let sig = other.sign(nonce.as_bytes()).unwrap();
        assert!(!key.verify(&nonce, &URL_SAFE_NO_PAD.encode(&sig)));
    }

    #[test]
    fn refuses_keys_that_are_not_user_public_keys() {
        let account = nkeys::KeyPair::new_account().public_key();
        assert_eq!(UserKey::parse(&account), Err("not a user key"));
        let user = nkeys::KeyPair::new_user();
        assert_eq!(UserKey::parse(&user.seed().unwrap()), Err("wrong length"));
        let mut bad = user.public_key().into_bytes();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            UserKey::parse(std::str::from_utf8(&bad).unwrap()),
            Err("bad checksum")
        );
        assert_eq!(UserKey::parse(&"u".repeat(56)), Err("not base32"));
    }
}

//! Configured passwords and tokens, and checking what a client sent against them.
//!
//! Owns: [`Secret`] (plain text, compared in constant time, or a bcrypt hash) and
//! [`BcryptCache`], the bounded memory of successful bcrypt verifications.
//!
//! Never: logs or displays a secret (`Debug` of a [`Secret`] shows only its kind);
//! caches a failed verification; reads a clock.
//!
//! bcrypt costs ~50-200 ms per check, so a client that reconnects would pay it every time.
//! The cache keys a success by (who, SHA-256 of the password sent): a later check with the
//! same password skips bcrypt. It holds digests, never passwords, and only of passwords
//! that were right. It is on the connect path only, so a `Mutex` is fine.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

/// Successful bcrypt verifications remembered; past it the oldest is forgotten.
pub const BCRYPT_CACHE_CAPACITY: usize = 1024;

/// A configured password or token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Secret {
    Plain(Box<[u8]>),
    Bcrypt(Box<str>),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Secret::Plain(..)",
            Secret::Bcrypt(_) => "Secret::Bcrypt(..)",
        })
    }
}

/// Why a configured secret cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretError {
    Empty,
    BadBcrypt,
}

/// nats-server's `isBcrypt`: `^\$2[abxy]\$\d{2}\$`.
fn looks_bcrypt(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 7
        && b.starts_with(b"$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
}

impl Secret {
    /// Reads a configured secret: a bcrypt hash when it looks like one (and then it must
    /// be a valid one), plain text otherwise.
    pub(crate) fn parse(s: &str) -> Result<Secret, SecretError> {
        if s.is_empty() {
            return Err(SecretError::Empty);
        }
        if looks_bcrypt(s) {
            let parts: bcrypt::HashParts = s.parse().map_err(|_| SecretError::BadBcrypt)?;
            if !(4..=31).contains(&parts.get_cost()) {
                return Err(SecretError::BadBcrypt);
            }
            return Ok(Secret::Bcrypt(s.into()));
        }
        Ok(Secret::Plain(s.as_bytes().into()))
    }

    pub(crate) fn is_bcrypt(&self) -> bool {
        matches!(self, Secret::Bcrypt(_))
    }

    /// True when `sent` is the secret. `who` names the secret's owner for the cache (a
    /// user name, or a fixed label for the token).
    pub(crate) fn check(&self, who: &str, sent: &[u8], cache: &BcryptCache) -> bool {
        match self {
            Secret::Plain(p) => bool::from(p.as_ref().ct_eq(sent)),
            Secret::Bcrypt(hash) => {
                let key = BcryptCache::key(who, sent);
                if cache.contains(&key) {
                    return true;
                }
                let ok = bcrypt::verify(sent, hash).unwrap_or(false);
                if ok {
                    cache.insert(key);
                }
                ok
            }
        }
    }

    /// True when checking `sent` would run bcrypt (not a plain secret, not in the cache).
    pub(crate) fn is_costly(&self, who: &str, sent: &[u8], cache: &BcryptCache) -> bool {
        self.is_bcrypt() && !cache.contains(&BcryptCache::key(who, sent))
    }
}

type CacheKey = [u8; 32];

/// The bounded set of (who, SHA-256 of the password) that bcrypt accepted.
#[derive(Debug, Default)]
pub(crate) struct BcryptCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    set: HashSet<CacheKey>,
    order: VecDeque<CacheKey>,
}

impl BcryptCache {
    /// SHA-256 over the owner's name (length-prefixed, so that names and passwords cannot
    /// run into each other) and the password.
    fn key(who: &str, sent: &[u8]) -> CacheKey {
        let mut input = Vec::with_capacity(8 + who.len() + sent.len());
        input.extend_from_slice(&(who.len() as u64).to_be_bytes());
        input.extend_from_slice(who.as_bytes());
        input.extend_from_slice(sent);
        let d = digest(&SHA256, &input);
        let mut key = [0u8; 32];
        key.copy_from_slice(d.as_ref());
        key
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.lock().set.contains(key)
    }

    fn insert(&self, key: CacheKey) {
        let mut inner = self.lock();
        if !inner.set.insert(key) {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > BCRYPT_CACHE_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().set.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock leaves a consistent set: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_secrets_compare_exactly() {
        let cache = BcryptCache::default();
        let s = Secret::parse("s3cret").unwrap();
        assert!(s.check("u", b"s3cret", &cache));
        assert!(!s.check("u", b"s3cre", &cache));
        assert!(!s.check("u", b"s3cret!", &cache));
        assert!(!s.check("u", b"", &cache));
        assert!(!s.is_costly("u", b"s3cret", &cache));
        assert_eq!(format!("{s:?}"), "Secret::Plain(..)");
    }

    #[test]
    fn bcrypt_secrets_and_their_cache() {
        let cache = BcryptCache::default();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let s = Secret::parse(&hash).unwrap();
        assert!(s.is_bcrypt());
        assert!(s.is_costly("u", b"pw", &cache));
        assert!(!s.check("u", b"wrong", &cache));
        assert_eq!(cache.len(), 0, "failures are never cached");
        assert!(s.check("u", b"pw", &cache));
        assert_eq!(cache.len(), 1);
        assert!(!s.is_costly("u", b"pw", &cache), "a hit skips bcrypt");
        assert!(s.is_costly("other", b"pw", &cache), "keyed by who too");
        assert!(s.is_costly("u", b"wrong", &cache));
        assert!(s.check("u", b"pw", &cache));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = BcryptCache::default();
        for i in 0..BCRYPT_CACHE_CAPACITY + 10 {
            cache.insert(BcryptCache::key(&i.to_string(), b"x"));
        }
        assert_eq!(cache.len(), BCRYPT_CACHE_CAPACITY);
        assert!(!cache.contains(&BcryptCache::key("0", b"x")));
        assert!(cache.contains(&BcryptCache::key(
            &(BCRYPT_CACHE_CAPACITY + 9).to_string(),
            b"x"
        )));
    }

    #[test]
    fn bcrypt_recognition() {
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("$2a$10$short"), Err(SecretError::BadBcrypt));
        // Not bcrypt-shaped: plain text, even with a dollar.
        assert!(matches!(Secret::parse("$money"), Ok(Secret::Plain(_))));
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let h = bcrypt::hash("pw", 4).unwrap();
            let h = format!("{prefix}{}", &h[4..]);
            assert!(Secret::parse(&h).unwrap().is_bcrypt(), "{prefix}");
        }
    }
}

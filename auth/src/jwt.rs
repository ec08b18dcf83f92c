//! JSON Web Tokens a client sends as `auth_token`: the key they are checked against, the
//! JWS signature, and the claims.
//!
//! Owns: [`JwtVerifier`] (built from [`JwtEntry`]: an HS256 secret, or an RSA or Ed25519
//! public key from a PEM file), the compact-JWS check, the time claims with leeway, `iss`
//! and `aud`, and reading the `"tern"` permissions claim.
//!
//! Never: accepts `alg: none`, an `alg` other than the one its key is for (so never HS256
//! with a public key), a token longer than [`MAX_TOKEN_LEN`] or a `crit` header; reads a
//! clock (`now` is passed in); puts a token or a secret in an error.
//!
//! Why our own JWS and not a JWT crate: the maintained ones either moved to `aws-lc-rs` /
//! RustCrypto backends or bring PEM and ASN.1 crates and a wider algorithm surface than we
//! want to allow; three algorithms on `ring` (already built for rustls) with `base64` and
//! `serde_json` are ~200 lines we can read in full, and the `alg` policy is ours.
//!
//! Claims: `sub` (required, the user id), `exp` (required), `nbf` and `iat` (optional;
//! a token issued in the future is not yet valid), `iss` and `aud` when configured, and
//! `"tern"`: `{"pub": {"allow": [..], "deny": [..]}, "sub": {..}, "allow_responses": ..}`
//! in the config file's shapes, at most [`MAX_CLAIM_FILTERS`] filters in all.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;
use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};
use serde::Deserialize;

use crate::authenticator::AuthFailure;
use crate::config::{
    parse_duration, AuthConfigError, JwtEntry, PermissionsEntry, DEFAULT_JWT_LEEWAY,
};
use crate::permissions::Permissions;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The most filters the `"tern"` claim may list (publish and subscribe, allow and deny).
pub const MAX_CLAIM_FILTERS: usize = 256;

/// The key tokens are verified with; it decides the one `alg` accepted.
enum JwtKey {
    Hs256(hmac::Key),
    /// An `RSAPublicKey` (PKCS#1) DER, 2048 to 8192 bits.
    Rs256(Vec<u8>),
    Ed25519([u8; 32]),
}

impl JwtKey {
    fn alg(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256",
            JwtKey::Rs256(_) => "RS256",
            JwtKey::Ed25519(_) => "EdDSA",
        }
    }

    fn verify(&self, signed: &[u8], sig: &[u8]) -> bool {
        match self {
            JwtKey::Hs256(k) => hmac::verify(k, signed, sig).is_ok(),
            JwtKey::Rs256(der) => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                .verify(signed, sig)
                .is_ok(),
            JwtKey::Ed25519(k) => UnparsedPublicKey::new(&ED25519, k)
                .verify(signed, sig)
                .is_ok(),
        }
    }
}

/// Checks tokens against the `[jwt]` section.
pub(crate) struct JwtVerifier {
    key: JwtKey,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("alg", &self.key.alg())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// What a valid token says.
#[derive(Debug)]
pub(crate) struct Verified {
    pub sub: String,
    pub expires: SystemTime,
    /// From the `"tern"` claim; `None` when the token has none.
    pub permissions: Option<Permissions>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    iss: Option<String>,
    aud: Option<Audience>,
    tern: Option<PermissionsEntry>,
}

fn invalid(why: &str) -> AuthFailure {
    AuthFailure::InvalidToken(why.to_string())
}

impl JwtVerifier {
    /// Loads the key and reads the section. Errors name keys under `jwt`.
    pub(crate) fn new(e: &JwtEntry) -> Result<JwtVerifier, AuthConfigError> {
        let given = [
            e.hs256_secret.is_some(),
            e.hs256_secret_file.is_some(),
            e.public_key_file.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(AuthConfigError::JwtKey { key: "jwt".into() });
        }
        let key = if let Some(secret) = &e.hs256_secret {
            if secret.is_empty() {
                return Err(AuthConfigError::EmptySecret {
                    key: "jwt.hs256_secret".into(),
                });
            }
            JwtKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
        } else if let Some(path) = &e.hs256_secret_file {
            let key = "jwt.hs256_secret_file";
            let bytes = std::fs::read(path).map_err(|err| AuthConfigError::KeyFile {
                key: key.into(),
                path: path.clone(),
                reason: err.to_string(),
            })?;
            let secret = bytes.trim_ascii_end();
            if secret.is_empty() {
                return Err(AuthConfigError::EmptySecret { key: key.into() });
            }
            JwtKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret))
        } else {
            let path = e.public_key_file.as_ref().expect("one key is given");
            let fail = |reason: String| AuthConfigError::KeyFile {
                key: "jwt.public_key_file".into(),
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
            public_key_from_pem(&text).map_err(fail)?
        };
        let leeway = match &e.leeway {
            None => DEFAULT_JWT_LEEWAY,
            Some(text) => parse_duration(text).map_err(|reason| AuthConfigError::BadDuration {
                key: "jwt.leeway".into(),
                reason,
            })?,
        };
        Ok(JwtVerifier {
            key,
            issuer: e.issuer.clone(),
            audience: e.audience.clone(),
            leeway,
        })
    }

    /// Checks a token: size, shape, `alg`, signature, then the claims at `now`.
    pub(crate) fn verify(&self, token: &str, now: SystemTime) -> Result<Verified, AuthFailure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too large"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        // What the signature covers: `header.payload`.
        let signed = &token[..header.len() + 1 + payload.len()];
        let header: Header = decode_json(header).ok_or_else(|| invalid("bad header"))?;
        if header.alg != self.key.alg() {
            return Err(invalid("alg not allowed"));
        }
        if header.crit.is_some() {
            return Err(invalid("crit header not supported"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| invalid("bad signature encoding"))?;
        if !self.key.verify(signed.as_bytes(), &sig) {
            return Err(AuthFailure::BadSignature);
        }
        let claims: Claims = decode_json(payload).ok_or_else(|| invalid("bad claims"))?;
        self.check_claims(claims, now)
    }

    fn check_claims(&self, c: Claims, now: SystemTime) -> Result<Verified, AuthFailure> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let leeway = self.leeway.as_secs_f64();
        let sub = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no sub"))?;
        let exp = c.exp.ok_or_else(|| invalid("no exp"))?;
        let expires = Duration::try_from_secs_f64(exp)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .ok_or_else(|| invalid("bad exp"))?;
        if now >= exp + leeway {
            return Err(AuthFailure::TokenExpired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now + leeway)
            || c.iat.is_some_and(|iat| iat > now + leeway)
        {
            return Err(AuthFailure::TokenNotYetValid);
        }
        if let Some(want) = &self.issuer {
            if c.iss.as_ref() != Some(want) {
                return Err(invalid("issuer mismatch"));
            }
        }
        if let Some(want) = &self.audience {
            let ok = match &c.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(list)) => list.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(invalid("audience mismatch"));
            }
        }
        let permissions = match c.tern {
            None => None,
            Some(entry) => {
                if Permissions::entry_count(&entry) > MAX_CLAIM_FILTERS {
                    return Err(invalid("too many filters in the tern claim"));
                }
                Some(Permissions::from_entry(&entry).map_err(|_| invalid("bad tern claim"))?)
            }
        };
        Ok(Verified {
            sub,
            expires,
            permissions,
        })
    }
}

/// Base64url (no padding) JSON.
fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// DER object identifiers of the keys we take.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads a PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo, RSA or Ed25519) or
/// `RSA PUBLIC KEY` (PKCS#1).
fn public_key_from_pem(text: &str) -> Result<JwtKey, String> {
    let (label, der) = pem_block(text)?;
    match label {
        "PUBLIC KEY" => {
            let (alg, key) = spki(&der).ok_or("not a valid SubjectPublicKeyInfo")?;
            if alg == OID_RSA_ENCRYPTION {
                rsa_key(key)
            } else if alg == OID_ED25519 {
                let key: [u8; 32] = key.try_into().map_err(|_| "bad Ed25519 key length")?;
                Ok(JwtKey::Ed25519(key))
            } else {
                Err("not an RSA or Ed25519 key".into())
            }
        }
        "RSA PUBLIC KEY" => rsa_key(&der),
        other => Err(format!("a PEM {other:?}, not a public key")),
    }
}

/// Checks an `RSAPublicKey` DER: a sequence of two integers, a modulus of 2048 to 8192
/// bits (what `ring` verifies).
fn rsa_key(der: &[u8]) -> Result<JwtKey, String> {
    let bad = || "not a valid RSA public key".to_string();
    let (0x30, seq, []) = der_take(der).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x02, n, rest) = der_take(seq).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x02, _e, []) = der_take(rest).ok_or_else(bad)? else {
        return Err(bad());
    };
    let n = match n {
        [0, rest @ ..] => rest,
        n => n,
    };
    let bits = n.len() * 8;
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; 2048 to 8192 are accepted"
        ));
    }
    Ok(JwtKey::Rs256(der.to_vec()))
}

/// The algorithm OID and the key bytes of a SubjectPublicKeyInfo.
fn spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, spki, []) = der_take(der)? else {
        return None;
    };
    let (0x30, alg_id, rest) = der_take(spki)? else {
        return None;
    };
    let (0x03, bits, []) = der_take(rest)? else {
        return None;
    };
    let (0x06, oid, _params) = der_take(alg_id)? else {
        return None;
    };
    match bits {
        [0, key @ ..] => Some((oid, key)),
        _ => None,
    }
}

/// One DER element: (tag, contents, what follows).
fn der_take(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The label and bytes of the first PEM block.
fn pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("no PEM block")?;
    let end = format!("-----END {label}-----");
    let mut b64 = String::new();
    for line in lines.by_ref() {
        if line == end {
            let der = STANDARD.decode(&b64).map_err(|_| "bad base64 in PEM")?;
            return Ok((label, der));
        }
        b64.push_str(line);
    }
    Err("unterminated PEM block".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
    use serde_json::json;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file in the temp dir, removed when dropped.
    pub(crate) struct TempFile(PathBuf);

    impl TempFile {
        pub(crate) fn path(&self) -> PathBuf {
            self.0.clone()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A file in the temp dir, unique to this test run.
    pub(crate) fn temp_file(name: &str, contents: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tern-auth-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub(crate) fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A signer of test tokens.
    pub(crate) enum Signer {
        Hs256(Vec<u8>),
        Ed25519(Ed25519KeyPair),
        Rs256(RsaKeyPair),
    }

    impl Signer {
        pub(crate) fn alg(&self) -> &'static str {
            match self {
                Signer::Hs256(_) => "HS256",
                Signer::Ed25519(_) => "EdDSA",
                Signer::Rs256(_) => "RS256",
            }
        }

        pub(crate) fn sign_with_alg(&self, alg: &str, claims: &serde_json::Value) -> String {
            let signed = format!(
                "{}.{}",
                b64(&json!({"alg": alg, "typ": "JWT"})),
                b64(claims)
            );
            let sig = match self {
                Signer::Hs256(k) => {
                    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), signed.as_bytes())
                        .as_ref()
                        .to_vec()
                }
                Signer::Ed25519(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
                Signer::Rs256(k) => {
                    let mut sig = vec![0; k.public().modulus_len()];
                    k.sign(
                        &RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        signed.as_bytes(),
                        &mut sig,
                    )
                    .unwrap();
                    sig
                }
            };
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
            self.sign_with_alg(self.alg(), claims)
        }
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b = STANDARD.encode(der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// An Ed25519 key pair made by ring, and its public key as a PEM file.
    pub(crate) fn ed25519() -> (Signer, TempFile) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(kp.public_key().as_ref());
        let path = temp_file("ed25519.pem", pem("PUBLIC KEY", &spki).as_bytes());
        (Signer::Ed25519(kp), path)
    }

    /// An RSA key pair made with `openssl` at test time (nothing secret is checked in);
    /// `None` when `openssl` is not installed.
    pub(crate) fn rsa() -> Option<(Signer, TempFile)> {
        use std::process::Command;
        let key = temp_file("rsa.key", b"");
        let ok = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(key.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        let der = Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(key.path())
            .output()
            .ok()?;
        let public = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(key.path())
            .output()
            .ok()?;
        drop(key);
        let kp = RsaKeyPair::from_pkcs8(&der.stdout).ok()?;
        let path = temp_file("rsa.pem", &public.stdout);
        Some((Signer::Rs256(kp), path))
    }

    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": NOW + 60, "iat": NOW - 10})
    }

    fn hs() -> (Signer, JwtVerifier) {
        let v = JwtVerifier::new(&JwtEntry {
            hs256_secret: Some("shh".into()),
            ..Default::default()
        })
        .unwrap();
        (Signer::Hs256(b"shh".to_vec()), v)
    }

    #[test]
    fn hs256_round_trip() {
        let (s, v) = hs();
        let got = v.verify(&s.sign(&claims()), now()).unwrap();
        assert_eq!(got.sub, "alice");
        assert_eq!(got.expires, UNIX_EPOCH + Duration::from_secs(NOW + 60));
        assert!(got.permissions.is_none());
        let wrong = Signer::Hs256(b"other".to_vec());
        assert_eq!(
            v.verify(&wrong.sign(&claims()), now()).unwrap_err(),
            AuthFailure::BadSignature
        );
    }

    #[test]
    fn hs256_secret_from_a_file() {
        let path = temp_file("secret", b"from-file\n");
        let v = JwtVerifier::new(&JwtEntry {
            hs256_secret_file: Some(path.path()),
            ..Default::default()
        })
        .unwrap();
        let s = Signer::Hs256(b"from-file".to_vec());
        assert!(v.verify(&s.sign(&claims()), now()).is_ok());
    }

    #[test]
    fn eddsa_round_trip() {
        let (s, path) = ed25519();
        let pem_text = std::fs::read(path.path()).unwrap();
        let v = JwtVerifier::new(&JwtEntry {
            public_key_file: Some(path.path()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.verify(&s.sign(&claims()), now()).unwrap().sub, "alice");
        let (other, _) = ed25519();
        assert_eq!(
            v.verify(&other.sign(&claims()), now()).unwrap_err(),
            AuthFailure::BadSignature
        );
        // Never HS256 with a public key, whatever the secret.
        let forged = Signer::Hs256(pem_text);
        assert_eq!(
            v.verify(&forged.sign(&claims()), now()).unwrap_err(),
            invalid("alg not allowed")
        );
    }

    #[test]
    fn rs256_round_trip() {
        let Some((s, path)) = rsa() else {
            eprintln!("openssl not found: RS256 test skipped");
            return;
        };
        let pem_text = std::fs::read(path.path()).unwrap();
        let v = JwtVerifier::new(&JwtEntry {
            public_key_file: Some(path.path()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.verify(&s.sign(&claims()), now()).unwrap().sub, "alice");
        // The classic confusion: HS256 keyed with the public key's PEM text.
        let forged = Signer::Hs256(pem_text);
        assert_eq!(
            v.verify(&forged.sign(&claims()), now()).unwrap_err(),
            invalid("alg not allowed")
        );
        let tampered = {
            let t = s.sign(&claims());
            let (head, _) = t.rsplit_once('.').unwrap();
            let (h, _) = head.split_once('.').unwrap();
            let evil = b64(&json!({"sub": "root", "exp": NOW + 60}));
            format!("{h}.{evil}.{}", t.rsplit_once('.').unwrap().1)
        };
        assert_eq!(
            v.verify(&tampered, now()).unwrap_err(),
            AuthFailure::BadSignature
        );
    }

    #[test]
    fn alg_none_and_wrong_alg_are_refused() {
        let (s, v) = hs();
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
        assert_eq!(
            v.verify(&none, now()).unwrap_err(),
            invalid("alg not allowed")
        );
        let t = s.sign_with_alg("HS512", &claims());
        assert_eq!(v.verify(&t, now()).unwrap_err(), invalid("alg not allowed"));
        let t = s.sign_with_alg("RS256", &claims());
        assert_eq!(v.verify(&t, now()).unwrap_err(), invalid("alg not allowed"));
    }

    #[test]
    fn tampered_signature_and_payload() {
        let (s, v) = hs();
        let t = s.sign(&claims());
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            v.verify(std::str::from_utf8(&bytes).unwrap(), now())
                .unwrap_err(),
            AuthFailure::BadSignature
        );
        let (_, sig) = t.rsplit_once('.').unwrap();
        let evil = format!(
            "{}.{}.{sig}",
            b64(&json!({"alg": "HS256"})),
            b64(&json!({"sub": "root", "exp": NOW + 60}))
        );
        assert_eq!(
            v.verify(&evil, now()).unwrap_err(),
            AuthFailure::BadSignature
        );
        assert_eq!(
            v.verify("a.b", now()).unwrap_err(),
            invalid("not a compact JWS")
        );
        assert_eq!(
            v.verify("a.b.c.d", now()).unwrap_err(),
            invalid("not a compact JWS")
        );
    }

    #[test]
    fn time_claims_with_leeway() {
        let (s, v) = hs();
        let at = |exp: u64| s.sign(&json!({"sub": "a", "exp": exp}));
        // Leeway 5s: expired at exp + 5.
        assert!(v.verify(&at(NOW - 4), now()).is_ok());
        assert_eq!(
            v.verify(&at(NOW - 5), now()).unwrap_err(),
            AuthFailure::TokenExpired
        );
        let nbf = s.sign(&json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 30}));
        assert_eq!(
            v.verify(&nbf, now()).unwrap_err(),
            AuthFailure::TokenNotYetValid
        );
        let nbf = s.sign(&json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 3}));
        assert!(v.verify(&nbf, now()).is_ok());
        let iat = s.sign(&json!({"sub": "a", "exp": NOW + 100, "iat": NOW + 30}));
        assert_eq!(
            v.verify(&iat, now()).unwrap_err(),
            AuthFailure::TokenNotYetValid
        );
        let no_exp = s.sign(&json!({"sub": "a"}));
        assert_eq!(v.verify(&no_exp, now()).unwrap_err(), invalid("no exp"));
        let no_sub = s.sign(&json!({"exp": NOW + 100}));
        assert_eq!(v.verify(&no_sub, now()).unwrap_err(), invalid("no sub"));
    }

    #[test]
    fn issuer_and_audience() {
        let v = JwtVerifier::new(&JwtEntry {
            hs256_secret: Some("k".into()),
            issuer: Some("https://idp".into()),
            audience: Some("tern".into()),
            leeway: Some("0s".into()),
            ..Default::default()
        })
        .unwrap();
        let s = Signer::Hs256(b"k".to_vec());
        let t = |iss: &str, aud: serde_json::Value| {
            s.sign(&json!({"sub": "a", "exp": NOW + 100, "iss": iss, "aud": aud}))
        };
        assert!(v.verify(&t("https://idp", json!("tern")), now()).is_ok());
        assert!(v
            .verify(&t("https://idp", json!(["x", "tern"])), now())
            .is_ok());
        assert_eq!(
            v.verify(&t("https://evil", json!("tern")), now())
                .unwrap_err(),
            invalid("issuer mismatch")
        );
        assert_eq!(
            v.verify(&t("https://idp", json!("other")), now())
                .unwrap_err(),
            invalid("audience mismatch")
        );
        let no_aud = s.sign(&json!({"sub": "a", "exp": NOW + 100, "iss": "https://idp"}));
        assert_eq!(
            v.verify(&no_aud, now()).unwrap_err(),
            invalid("audience mismatch")
        );
    }

    #[test]
    fn oversized_token() {
        let (s, v) = hs();
        let big = s.sign(&json!({"sub": "a", "exp": NOW + 100, "pad": "x".repeat(MAX_TOKEN_LEN)}));
        assert_eq!(
            v.verify(&big, now()).unwrap_err(),
            invalid("token too large")
        );
    }

    #[test]
    fn permissions_claim() {
        let (s, v) = hs();
        let t = s.sign(&json!({
            "sub": "a", "exp": NOW + 100,
            "tern": {"pub": {"allow": ["a.>"], "deny": ["a.b"]}, "sub": {"allow": ["c.*"]}, "allow_responses": {"max": 2, "expires": "5s"}}
        }));
        let p = v.verify(&t, now()).unwrap().permissions.unwrap();
        assert!(p.may_publish(b"a.x"));
        assert!(!p.may_publish(b"a.b"));
        assert!(p.may_subscribe(b"c.x", None));
        assert!(!p.may_subscribe(b"d", None));
        assert_eq!(p.responses().unwrap().max, 2);
        let bad = s.sign(&json!({"sub": "a", "exp": NOW + 100, "tern": {"pub": ["a..b"]}}));
        assert_eq!(v.verify(&bad, now()).unwrap_err(), invalid("bad claims"));
        let unknown = s.sign(&json!({"sub": "a", "exp": NOW + 100, "tern": {"admin": true}}));
        assert_eq!(
            v.verify(&unknown, now()).unwrap_err(),
            invalid("bad claims")
        );
        let many: Vec<String> = (0..=MAX_CLAIM_FILTERS).map(|i| format!("s{i}")).collect();
        let long = s.sign(&json!({"sub": "a", "exp": NOW + 100, "tern": {"pub": many}}));
        assert_eq!(
            v.verify(&long, now()).unwrap_err(),
            invalid("too many filters in the tern claim")
        );
    }

    #[test]
    fn key_config_errors() {
        let e = JwtVerifier::new(&JwtEntry {
            hs256_secret: Some("k".into()),
            leeway: Some("a while".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, AuthConfigError::BadDuration { .. }), "{e}");
        assert_eq!(e.key(), "jwt.leeway");
        let e = JwtVerifier::new(&JwtEntry::default()).unwrap_err();
        assert_eq!(e, AuthConfigError::JwtKey { key: "jwt".into() });
        let e = JwtVerifier::new(&JwtEntry {
            hs256_secret: Some("a".into()),
            public_key_file: Some("/x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.key(), "jwt");
        let e = JwtVerifier::new(&JwtEntry {
            hs256_secret: Some(String::new()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            AuthConfigError::EmptySecret {
                key: "jwt.hs256_secret".into()
            }
        );
        let e = JwtVerifier::new(&JwtEntry {
            hs256_secret_file: Some(temp_file("empty", b"\n").path()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            AuthConfigError::EmptySecret {
                key: "jwt.hs256_secret_file".into()
            }
        );
        let e = JwtVerifier::new(&JwtEntry {
            public_key_file: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, AuthConfigError::KeyFile { .. }), "{e}");
        for (name, text) in [
            ("garbage.pem", "hello".to_string()),
            ("private.pem", pem("PRIVATE KEY", b"\x30\x00")),
            (
                "short-rsa.pem",
                pem(
                    "RSA PUBLIC KEY",
                    &[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03],
                ),
            ),
            ("bad-spki.pem", pem("PUBLIC KEY", b"\x30\x03\x02\x01\x00")),
        ] {
            let e = JwtVerifier::new(&JwtEntry {
                public_key_file: Some(temp_file(name, text.as_bytes()).path()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(matches!(e, AuthConfigError::KeyFile { .. }), "{name}: {e}");
            assert_eq!(e.key(), "jwt.public_key_file");
        }
    }
}

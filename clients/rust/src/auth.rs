//! Credentials: what the client proves itself with, and how it keeps them secret.
//!
//! Owns: [`Secret`] (a string whose `Debug` never shows it), the credentials a builder
//! collects ([`Credentials`]) and their checked form ([`Auth`]), made once at `connect`:
//! a `.creds` file is read and an nkey seed decoded there, so a bad one fails `connect`
//! before any socket, with a [`CredentialsError`] that names the file or the setting. Also
//! answering a `CHALLENGE`: the nonce signed with the nkey's seed (ed25519), base64url
//! without padding, as NATS clients send it.
//!
//! Never: formats, logs or puts in an error a token, password or seed. Errors name the
//! setting or the file, never the value.
//!
//! The token is not here once connected: it can be refreshed
//! ([`Client::refresh_token`](crate::Client::refresh_token)), so the latest one lives in the
//! client's shared state, and every (re)connection's `HELLO` carries that one.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nkeys::KeyPair;

/// A secret string (a token, a password, a seed): `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the wire.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the nkey comes from.
#[derive(Debug, Clone)]
pub(crate) enum NkeySource {
    /// A user seed (`SU...`) given as it is.
    Seed(Secret),
    /// A NATS `.creds` file: its `USER NKEY SEED` block, and its `NATS USER JWT` block as
    /// the token when there is one and no token was given.
    CredsFile(PathBuf),
}

/// The credentials as the builder collected them; checked by [`Credentials::resolve`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    pub(crate) token: Option<Secret>,
    pub(crate) user_pass: Option<(String, Secret)>,
    pub(crate) nkey: Option<NkeySource>,
}

/// The credentials, read and checked: what every `HELLO` and `CHALLENGE` answer uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Auth {
    /// The token at connect (the builder's, or a `.creds` file's JWT); refreshes replace it
    /// in the shared state, not here.
    pub(crate) token: Option<Secret>,
    pub(crate) user_pass: Option<(String, Secret)>,
    /// The user's key pair, from its seed. Its `Debug` shows the key's type only.
    pub(crate) nkey: Option<KeyPair>,
}

/// Why the credentials cannot be used. Each error names the file or the setting at fault,
/// never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The credentials file could not be read.
    #[error("credentials file {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials file has no `-----BEGIN USER NKEY SEED-----` block.
    #[error("credentials file {}: no USER NKEY SEED block", path.display())]
    NoSeed {
        /// The file.
        path: PathBuf,
    },
    /// The seed cannot be decoded, or is not a user's (`SU...`).
    #[error("the nkey seed of {origin} is invalid: {reason}")]
    InvalidSeed {
        /// Where the seed came from: `nkey_seed` or the credentials file.
        origin: String,
        /// What is wrong with it (never the seed itself).
        reason: String,
    },
}

impl Credentials {
    /// Reads the `.creds` file (if any) and decodes the seed.
    pub(crate) fn resolve(&self) -> Result<Auth, CredentialsError> {
        let mut token = self.token.clone();
        let nkey = match &self.nkey {
            None => None,
            Some(NkeySource::Seed(seed)) => Some(key_pair(seed.expose(), "nkey_seed")?),
            Some(NkeySource::CredsFile(path)) => {
                let creds = read_creds_file(path)?;
                if token.is_none() {
                    token = creds.jwt;
                }
                let origin = format!("credentials file {}", path.display());
                Some(key_pair(creds.seed.expose(), &origin)?)
            }
        };
        Ok(Auth {
            token,
            user_pass: self.user_pass.clone(),
            nkey,
        })
    }
}

/// A user key pair from its seed.
fn key_pair(seed: &str, origin: &str) -> Result<KeyPair, CredentialsError> {
    let invalid = |reason: String| CredentialsError::InvalidSeed {
        origin: origin.to_string(),
        reason,
    };
    // nkeys' error texts describe the encoding (prefix, length, checksum), not the value.
    let pair = KeyPair::from_seed(seed.trim()).map_err(|e| invalid(e.to_string()))?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(invalid(format!(
            "a {:?} seed, not a user's (SU...)",
            pair.key_pair_type()
        )));
    }
    Ok(pair)
}

/// What a NATS `.creds` file holds.
#[derive(Debug)]
pub(crate) struct CredsFile {
    /// The `NATS USER JWT` block, if any.
    pub(crate) jwt: Option<Secret>,
    /// The `USER NKEY SEED` block.
    pub(crate) seed: Secret,
}

fn read_creds_file(path: &Path) -> Result<CredsFile, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_creds(&text).ok_or_else(|| CredentialsError::NoSeed {
        path: path.to_path_buf(),
    })
}

/// Parses a `.creds` file as `nsc` writes it: blocks of one line between a
/// `-----BEGIN <NAME>-----` line and a `------END <NAME>------` line, with comments
/// between the blocks. `None` when there is no `USER NKEY SEED` block with a value.
pub(crate) fn parse_creds(text: &str) -> Option<CredsFile> {
    let seed = block(text, "USER NKEY SEED")?;
    Some(CredsFile {
        jwt: block(text, "NATS USER JWT"),
        seed,
    })
}

/// The first non-empty line after the `BEGIN <name>` line, before its `END` line.
fn block(text: &str, name: &str) -> Option<Secret> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("---") && l.contains("BEGIN") && l.contains(name))?;
    lines
        .take_while(|l| !l.starts_with("---"))
        .find(|l| !l.is_empty())
        .map(Secret::new)
}

/// NATS nkey credentials, from a `.creds` file or a user seed: what a NATS `CONNECT` (or
/// Tern's `HELLO`) presents, for programs that speak to NATS servers themselves (the
/// broker's bridge). The seed never leaves it; `Debug` shows only the public key.
pub struct NkeyCredentials {
    jwt: Option<Secret>,
    key: KeyPair,
}

impl fmt::Debug for NkeyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NkeyCredentials")
            .field("public_key", &self.key.public_key())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

impl NkeyCredentials {
    /// Reads a `.creds` file (its seed, and its JWT if any).
    pub fn from_creds_file(path: &Path) -> Result<NkeyCredentials, CredentialsError> {
        let creds = read_creds_file(path)?;
        let origin = format!("credentials file {}", path.display());
        Ok(NkeyCredentials {
            key: key_pair(creds.seed.expose(), &origin)?,
            jwt: creds.jwt,
        })
    }

    /// A user seed (`SU...`), without a JWT.
    pub fn from_seed(seed: &str) -> Result<NkeyCredentials, CredentialsError> {
        Ok(NkeyCredentials {
            key: key_pair(seed, "nkey seed")?,
            jwt: None,
        })
    }

    /// The user JWT, if the file had one.
    pub fn jwt(&self) -> Option<&str> {
        self.jwt.as_ref().map(Secret::expose)
    }

    /// The public key (`U...`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The server's nonce signed with the seed, base64 (URL-safe, no padding) as NATS
    /// `CONNECT`'s `sig` wants it.
    pub fn sign(&self, nonce: &[u8]) -> Result<String, CredentialsError> {
        self.key
            .sign(nonce)
            .map(|sig| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
            .map_err(|e| CredentialsError::InvalidSeed {
                origin: "signing".into(),
                reason: e.to_string(),
            })
    }
}

impl Auth {
    /// The public key (`U...`) `HELLO` carries, when there is an nkey.
    pub(crate) fn public_nkey(&self) -> Option<String> {
        self.nkey.as_ref().map(KeyPair::public_key)
    }

    /// The `AUTH` signature answering a `CHALLENGE` with `nonce`: `None` when this client
    /// has no nkey (it sent none, so the server should not have asked).
    pub(crate) fn sign(&self, nonce: &[u8]) -> Option<Result<String, nkeys::error::Error>> {
        let pair = self.nkey.as_ref()?;
        Some(
            pair.sign(nonce)
                .map(|sig| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user seed of 32 zero bytes, and its public key: the pair in
    /// `protocol/tests/vectors/binary.txt` (`client.hello-nkey`, `client.auth-signature`).
    const SEED: &str = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
    const PUBLIC: &str = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn a_creds_file_gives_its_seed_and_jwt() {
        let parsed = parse_creds(&creds("eyJ0eXAi.e30.sig", SEED)).unwrap();
        assert_eq!(parsed.seed.expose(), SEED);
        assert_eq!(parsed.jwt.unwrap().expose(), "eyJ0eXAi.e30.sig");
    }

    #[test]
    fn a_creds_file_without_a_seed_block_is_refused() {
        assert!(
            parse_creds("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n")
                .is_none()
        );
        // A block with nothing in it.
        assert!(
            parse_creds("-----BEGIN USER NKEY SEED-----\n\n------END USER NKEY SEED------\n")
                .is_none()
        );
        // CRLF line ends and no JWT are fine.
        let crlf = format!(
            "-----BEGIN USER NKEY SEED-----\r\n{SEED}\r\n------END USER NKEY SEED------\r\n"
        );
        let parsed = parse_creds(&crlf).unwrap();
        assert_eq!(parsed.seed.expose(), SEED);
        assert!(parsed.jwt.is_none());
    }

    #[test]
    fn creds_file_errors_name_the_file_not_the_secret() {
        let dir = std::env::temp_dir().join(format!("tern-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.creds");
        let resolve = |path: &Path| {
            Credentials {
                nkey: Some(NkeySource::CredsFile(path.to_path_buf())),
                ..Credentials::default()
            }
            .resolve()
        };
        let e = resolve(&missing).unwrap_err();
        assert!(matches!(e, CredentialsError::Read { .. }));
        assert!(e.to_string().contains("missing.creds"), "{e}");

        let no_seed = dir.join("jwt-only.creds");
        std::fs::write(
            &no_seed,
            "-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n",
        )
        .unwrap();
        let e = resolve(&no_seed).unwrap_err();
        assert!(matches!(e, CredentialsError::NoSeed { .. }));
        assert!(e.to_string().contains("jwt-only.creds"), "{e}");

        let bad_seed = dir.join("bad.creds");
        std::fs::write(&bad_seed, creds("jwt", "SUNOTASEEDsecretsecret")).unwrap();
        let e = resolve(&bad_seed).unwrap_err();
        assert!(matches!(e, CredentialsError::InvalidSeed { .. }));
        assert!(e.to_string().contains("bad.creds"), "{e}");
        assert!(!e.to_string().contains("secretsecret"), "{e}");

        let good = dir.join("good.creds");
        std::fs::write(&good, creds("the-jwt", SEED)).unwrap();
        let auth = resolve(&good).unwrap();
        assert_eq!(auth.token.unwrap().expose(), "the-jwt");
        assert_eq!(auth.nkey.unwrap().public_key(), PUBLIC);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_token_given_wins_over_the_creds_files_jwt() {
        let dir = std::env::temp_dir().join(format!("tern-creds-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.creds");
        std::fs::write(&path, creds("file-jwt", SEED)).unwrap();
        let auth = Credentials {
            token: Some(Secret::new("given")),
            nkey: Some(NkeySource::CredsFile(path)),
            ..Credentials::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(auth.token.unwrap().expose(), "given");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_user_seed_is_accepted() {
        let account = KeyPair::new_account().seed().unwrap();
        let e = key_pair(&account, "nkey_seed").unwrap_err();
        assert!(e.to_string().contains("not a user's"), "{e}");
        assert!(!e.to_string().contains(&account), "{e}");
    }

    #[test]
    fn signatures_verify_and_match_the_protocol_vectors() {
        let auth = Credentials {
            nkey: Some(NkeySource::Seed(Secret::new(SEED))),
            ..Credentials::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(auth.public_nkey().as_deref(), Some(PUBLIC));
        let nonce = b"qKxRFmHLFrMz5Q0AU4vCxw";
        let sig = auth.sign(nonce).unwrap().unwrap();
        // `client.auth-signature` in the protocol's vectors.
        assert_eq!(
            sig,
            "rtA2tbpEUnOV7v64VlU9H_LwiSneOUhql0wWVCpsL4ll6eEaCKBFD6Y2cVUs6ICFrkxXr2ccPWTEJQs1Xy2WDA"
        );
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sig)
            .unwrap();
        KeyPair::from_public_key(PUBLIC)
            .unwrap()
            .verify(nonce, &raw)
            .unwrap();
        assert!(Auth::default().sign(nonce).is_none());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let auth = Credentials {
            token: Some(Secret::new("tok-s3cret")),
            user_pass: Some(("alice".to_string(), Secret::new("pw-s3cret"))),
            nkey: Some(NkeySource::Seed(Secret::new(SEED))),
        };
        let text = format!("{auth:?} {:?}", auth.resolve().unwrap());
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains(SEED), "{text}");
        assert!(text.contains("alice"), "{text}");
    }
}

//! Secrets at rest: trunk passwords, webhook signing secrets and agent WebSocket header
//! values are sealed with ChaCha20-Poly1305 before they reach the database.
//!
//! The key is 32 bytes: `DIALCORE_SECRET_KEY` (`[secret] key`, base64 or hex), or else the
//! key file next to the SQLite database (`dialcore.db.key` beside `dialcore.db`, or
//! `[secret] key_file`), created with mode 0600 on first start with a warning to back it up.
//! A database without its key cannot be read back: its secrets are lost with the key.
//!
//! A sealed value is text: `dcs1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. `dcs1` is
//! the format version; the key id (8 hex digits of a hash of the key, which says nothing of
//! the key) tells which key sealed the value, so that a wrong key is reported as such and a
//! future rotation can tell old values from new. Every value gets a fresh random nonce, and
//! the column it belongs to is authenticated with it, so a value copied into another column
//! does not open.
//!
//! ```
//! use call_control::secrets::{SecretKey, Sealer};
//! let sealer = Sealer::new(&SecretKey::generate());
//! let stored = sealer.seal("trunks.password", "hunter2");
//! assert!(!stored.contains("hunter2"));
//! assert_eq!(sealer.open("trunks.password", &stored).unwrap(), "hunter2");
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every value sealed in format version 1.
pub const SEALED_PREFIX: &str = "dcs1:";
/// The environment variable that holds the key.
pub const SECRET_KEY_VAR: &str = "DIALCORE_SECRET_KEY";
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Errors of keys and sealed values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// A key's text is not 32 bytes in base64 or hex.
    #[error(
        "not a secret key: expected 32 bytes as base64 (44 characters) or hex (64 digits), \
         got {length} characters (generate one with `openssl rand -base64 32`)"
    )]
    BadKey {
        /// Characters in the text given.
        length: usize,
    },
    /// The key file could not be read or written.
    #[error("secret key file {}: {error}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("secret key file {} does not hold a key: {source}", path.display())]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        source: Box<SecretError>,
    },
    /// A PostgreSQL database has no file next to it to keep a key in, and every node that
    /// shares it must seal with the same key: it must be configured.
    #[error(
        "a PostgreSQL database needs its secret key configured, the same on every node: set \
         {SECRET_KEY_VAR} (generate one with `openssl rand -base64 32`) or [secret] key_file"
    )]
    KeyRequired,
    /// The store was opened without a key (an admin command on a database whose key is
    /// neither configured nor in its key file) and a secret had to be read or written.
    #[error("no secret key to read or write {column}: set {SECRET_KEY_VAR} to the service's key")]
    NoKey {
        /// The column.
        column: &'static str,
    },
    /// The database holds encrypted secrets but no key is configured and its key file is
    /// missing: a new key would not read them.
    #[error(
        "the database holds encrypted secrets but no key was found: set {SECRET_KEY_VAR} or \
         restore the key file {} from a backup", path.display()
    )]
    KeyLost {
        /// Where the key file was looked for.
        path: PathBuf,
    },
    /// A value was sealed with another key than the one configured.
    #[error(
        "{column} was encrypted with secret key {sealed_with} but the configured key is \
         {configured}: start with the key this database was created with \
         ({SECRET_KEY_VAR} or the key file next to the database)"
    )]
    WrongKey {
        /// The column read.
        column: &'static str,
        /// Id of the key that sealed it.
        sealed_with: String,
        /// Id of the configured key.
        configured: String,
    },
    /// A sealed value does not decrypt with its key: it was altered or moved from another
    /// column.
    #[error("{column} holds an encrypted value that is damaged or belongs to another column")]
    Damaged {
        /// The column read.
        column: &'static str,
    },
}

/// A 32-byte key. Its `Debug` form shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    /// Reads a key from its text: 64 hex digits, or base64 (standard or URL-safe, padded or
    /// not) of 32 bytes. Surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        let bad = || SecretError::BadKey {
            length: text.chars().count(),
        };
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| bad())?
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or_else(bad)?
        };
        <[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map(SecretKey)
            .map_err(|_| bad())
    }

    /// The key's text form (standard base64), as the key file holds it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key's id: 8 hex digits of a hash of the key, safe to show and log.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"dialcore secret key id\0")
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..4])
    }

    /// The key for the database at `database_url`: `given` when there is one, else the one
    /// in `key_file` (default: [`default_key_file`]), generated and written there (mode
    /// 0600, with a warning) when the file does not exist. An in-memory database gets a new
    /// random key, as nothing it holds outlives the process.
    pub fn resolve(
        given: Option<&SecretKey>,
        key_file: Option<&Path>,
        database_url: &str,
    ) -> Result<SecretKey, SecretError> {
        match SecretKey::find(given, key_file, database_url)? {
            Found::Key(key) => Ok(key),
            Found::NoFile(path) => load_or_create_key_file(&path),
            Found::InMemory => Ok(SecretKey::generate()),
        }
    }

    /// Like [`SecretKey::resolve`] but never creates a key: `None` when there is no key
    /// file (for admin commands, which must not give a database a second key).
    pub fn find_existing(
        given: Option<&SecretKey>,
        key_file: Option<&Path>,
        database_url: &str,
    ) -> Result<Option<SecretKey>, SecretError> {
        match SecretKey::find(given, key_file, database_url)? {
            Found::Key(key) => Ok(Some(key)),
            Found::NoFile(_) | Found::InMemory => Ok(None),
        }
    }

    fn find(
        given: Option<&SecretKey>,
        key_file: Option<&Path>,
        database_url: &str,
    ) -> Result<Found, SecretError> {
        if let Some(key) = given {
            return Ok(Found::Key(key.clone()));
        }
        let path = match key_file {
            Some(path) => path.to_owned(),
            None if database_url.starts_with("postgres") => return Err(SecretError::KeyRequired),
            None => match default_key_file(database_url) {
                Some(path) => path,
                None => return Ok(Found::InMemory),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_key_file(&path, &text).map(Found::Key),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Found::NoFile(path)),
            Err(error) => Err(SecretError::KeyFile { path, error }),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

/// Where the key of the SQLite database at `database_url` lives when no key is configured:
/// the database file's path with `.key` appended (`./dialcore.db.key`); `None` for an
/// in-memory database.
pub fn default_key_file(database_url: &str) -> Option<PathBuf> {
    if database_url.contains(":memory:") || database_url.contains("mode=memory") {
        return None;
    }
    let options =
        <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(database_url).ok()?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() {
        return None;
    }
    let mut file = path.as_os_str().to_owned();
    file.push(".key");
    Some(PathBuf::from(file))
}

/// Seals and opens secret values with one key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    key_id: String,
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: &SecretKey) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
            key_id: key.id(),
        }
    }

    /// The id of the sealer's key ([`SecretKey::id`]).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The stored form of `plaintext` for `column` (e.g. `trunks.password`): a fresh
    /// random nonce, the ciphertext and its tag, in the text format of the module doc.
    pub fn seal(&self, column: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: column.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_PREFIX}{}:{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// The plaintext of a value of `column` stored by [`Sealer::seal`]. A value without the
    /// sealed prefix is a legacy plaintext value (written before encryption) and is
    /// returned as it is; the store seals those on start.
    pub fn open(&self, column: &'static str, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let damaged = || SecretError::Damaged { column };
        let (key_id, body) = rest.split_once(':').ok_or_else(damaged)?;
        if key_id != self.key_id {
            return Err(SecretError::WrongKey {
                column,
                sealed_with: key_id.to_owned(),
                configured: self.key_id.clone(),
            });
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| damaged())?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(damaged());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: column.as_bytes(),
                },
            )
            .map_err(|_| damaged())?;
        String::from_utf8(plaintext).map_err(|_| damaged())
    }

    /// [`Sealer::open`] of a nullable column.
    pub fn open_opt(
        &self,
        column: &'static str,
        stored: Option<&str>,
    ) -> Result<Option<String>, SecretError> {
        stored.map(|value| self.open(column, value)).transpose()
    }

    /// [`Sealer::seal`] of a nullable column.
    pub fn seal_opt(&self, column: &str, plaintext: Option<&str>) -> Option<String> {
        plaintext.map(|value| self.seal(column, value))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({})", self.key_id)
    }
}

/// Whether a stored value is sealed (rather than legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

enum Found {
    Key(SecretKey),
    NoFile(PathBuf),
    InMemory,
}

fn load_or_create_key_file(path: &Path) -> Result<SecretKey, SecretError> {
    let key = SecretKey::generate();
    let io = |error| SecretError::KeyFile {
        path: path.to_owned(),
        error,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Written whole under a temporary name, then linked into place: a second process
    // starting at the same moment either links first (and this one reads its key) or finds
    // the complete file, never a half-written one.
    let temporary = path.with_extension(format!("key.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
        file.sync_all()
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(error));
    }
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::warn!(
                key_file = %path.display(),
                key_id = %key.id(),
                "no {SECRET_KEY_VAR} set: generated a secret key for trunk passwords, webhook \
                 secrets and agent headers in {}; back it up with the database (without it \
                 they cannot be read), or move it into {SECRET_KEY_VAR}",
                path.display()
            );
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            parse_key_file(path, &text)
        }
        Err(error) => Err(io(error)),
    }
}

fn parse_key_file(path: &Path, text: &str) -> Result<SecretKey, SecretError> {
    SecretKey::parse(text).map_err(|source| SecretError::BadKeyFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_with_a_fresh_nonce_each_time() {
        let sealer = Sealer::new(&SecretKey::generate());
        let first = sealer.seal("trunks.password", "hunter2");
        let second = sealer.seal("trunks.password", "hunter2");
        assert_ne!(first, second, "a fresh nonce per value");
        for sealed in [&first, &second] {
            assert!(is_sealed(sealed) && !sealed.contains("hunter2"), "{sealed}");
            assert!(sealed.starts_with(&format!("dcs1:{}:", sealer.key_id())));
            assert_eq!(sealer.open("trunks.password", sealed).unwrap(), "hunter2");
        }
        assert_eq!(sealer.open("trunks.password", "legacy").unwrap(), "legacy");
        let empty = sealer.seal("c", "");
        assert_eq!(sealer.open("c", &empty).unwrap(), "");
    }

    #[test]
    fn a_wrong_key_or_column_or_altered_value_fails_clearly() {
        let key = SecretKey::generate();
        let sealer = Sealer::new(&key);
        let sealed = sealer.seal("webhooks.secret", "whsec_abc");
        let other = Sealer::new(&SecretKey::generate());
        let error = other.open("webhooks.secret", &sealed).unwrap_err();
        assert!(
            matches!(&error, SecretError::WrongKey { sealed_with, .. } if *sealed_with == key.id())
        );
        let message = error.to_string();
        assert!(
            message.contains("webhooks.secret") && message.contains(SECRET_KEY_VAR),
            "{message}"
        );
        assert!(matches!(
            sealer.open("trunks.password", &sealed),
            Err(SecretError::Damaged {
                column: "trunks.password"
            })
        ));
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            sealer.open("webhooks.secret", &altered),
            Err(SecretError::Damaged { .. })
        ));
        let truncated = format!("{SEALED_PREFIX}{}:AAAA", key.id());
        assert!(matches!(
            sealer.open("webhooks.secret", &truncated),
            Err(SecretError::Damaged { .. })
        ));
    }

    #[test]
    fn keys_parse_from_base64_and_hex_only_at_32_bytes() {
        let key = SecretKey::generate();
        assert_eq!(SecretKey::parse(&key.to_base64()).unwrap(), key);
        assert_eq!(SecretKey::parse(&hex::encode(key.0)).unwrap(), key);
        assert_eq!(
            SecretKey::parse(&format!(" {}\n", URL_SAFE_NO_PAD.encode(key.0))).unwrap(),
            key
        );
        for bad in [
            "",
            "short",
            &STANDARD.encode([1u8; 31]),
            &hex::encode([1u8; 33]),
        ] {
            let error = SecretKey::parse(bad).unwrap_err();
            assert!(error.to_string().contains("32 bytes"), "{error}");
        }
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sub/d.db").display());
        let path = default_key_file(&url).unwrap();
        assert_eq!(path, dir.path().join("sub/d.db.key"));
        let created = SecretKey::resolve(None, None, &url).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(SecretKey::resolve(None, None, &url).unwrap(), created);
        let given = SecretKey::generate();
        assert_eq!(SecretKey::resolve(Some(&given), None, &url).unwrap(), given);
        std::fs::write(&path, "garbage").unwrap();
        let error = SecretKey::resolve(None, None, &url).unwrap_err();
        assert!(error.to_string().contains("d.db.key"), "{error}");
        assert_eq!(default_key_file("sqlite::memory:"), None);
        // A shared PostgreSQL database never gets a key of one node's making.
        let pg = "postgres://dialcore@127.0.0.1/dialcore";
        assert!(matches!(
            SecretKey::resolve(None, None, pg),
            Err(SecretError::KeyRequired)
        ));
        assert_eq!(SecretKey::resolve(Some(&given), None, pg).unwrap(), given);
        assert_eq!(
            default_key_file("sqlite://dialcore.db?mode=rwc"),
            Some(PathBuf::from("dialcore.db.key"))
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file is left: {leftovers:?}"
        );
    }
}

//! The master key: generation, parsing, its fingerprint, and loading it from the environment or
//! a key file created on first run.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hkdf::Hkdf;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The environment variable the broker reads its master key from.
pub const MASTER_KEY_ENV: &str = "LWA_BROKER_MASTER_KEY";

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// HKDF info string of the fingerprint; distinct from the sealing subkey's, so the fingerprint
/// reveals nothing about the key that encrypts.
const FINGERPRINT_INFO: &[u8] = b"lwa-broker key fingerprint v1";

/// Decodes both base64 alphabets (after mapping URL-safe characters) with or without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A 32-byte master key. Its bytes are zeroized on drop and never printed: `Debug` shows only
/// the [`KeyFingerprint`]. It has no `==`, on purpose.
///
/// ```
/// use lwa_seal::MasterKey;
///
/// let key = MasterKey::generate();
/// let again = MasterKey::from_base64(&key.to_base64()).unwrap();
/// assert_eq!(key.fingerprint(), again.fingerprint());
/// assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
/// ```
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    fingerprint: KeyFingerprint,
}

impl MasterKey {
    /// A new random key from the operating system's random number generator.
    ///
    /// ```
    /// let a = lwa_seal::MasterKey::generate();
    /// let b = lwa_seal::MasterKey::generate();
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// ```
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes, as no safe key can be made then.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        if let Err(error) = OsRng.try_fill_bytes(bytes.as_mut()) {
            panic!("the operating system's random number generator failed: {error}");
        }
        MasterKey::from_bytes(bytes)
    }

    /// Parses a key written in base64, standard or URL-safe, padded or not; surrounding
    /// whitespace is ignored. Anything but exactly 32 bytes is refused.
    ///
    /// ```
    /// use lwa_seal::MasterKey;
    ///
    /// let key = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    /// let url_safe = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    /// assert_eq!(key.fingerprint(), url_safe.fingerprint());
    ///
    /// let error = MasterKey::from_base64("c2hvcnQ=").unwrap_err();
    /// assert_eq!(error.to_string(), "the master key must be 32 bytes of base64, got 5 bytes");
    /// ```
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        MasterKey::parse(text, KeyOrigin::Argument)
    }

    /// The key in standard, padded base64: only for writing the key file or showing it once to
    /// an operator who backs it up.
    ///
    /// ```
    /// let key = lwa_seal::MasterKey::generate();
    /// assert_eq!(key.to_base64().len(), 44);
    /// ```
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// The key's public name, which sealed values carry to say which key sealed them.
    ///
    /// ```
    /// let key = lwa_seal::MasterKey::generate();
    /// assert_eq!(key.fingerprint().to_string().len(), 16);
    /// ```
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }

    /// Loads the broker's master key.
    ///
    /// `env_value` is the value of [`MASTER_KEY_ENV`] as the caller read it: when set and not
    /// blank it is the key. Otherwise the key is read from `key_file`; when that file does not
    /// exist a new key is generated and written there, mode 0600, atomically (it appears
    /// complete or not at all, and when several processes start at once they all end up with
    /// the one that was written first). Missing parent directories are created, mode 0700.
    ///
    /// **Decision:** an existing key file that group or others may access in any way
    /// (`mode & 0o077 != 0`) is refused with [`KeyError::InsecureKeyFile`], as ssh refuses a
    /// private key: that file *is* the secret, so it is not silently tightened either, since
    /// whoever could read it may already have copied it. The operator fixes the mode (and
    /// decides whether to rotate).
    ///
    /// ```
    /// use lwa_seal::MasterKey;
    ///
    /// let dir = std::env::temp_dir().join(format!("lwa-seal-doc-load-{}", std::process::id()));
    /// let key_file = dir.join("master.key");
    /// let first = MasterKey::load(None, &key_file).unwrap();
    /// let again = MasterKey::load(Some(""), &key_file).unwrap();
    /// assert_eq!(first.fingerprint(), again.fingerprint());
    ///
    /// let from_env = MasterKey::generate();
    /// let chosen = MasterKey::load(Some(&from_env.to_base64()), &key_file).unwrap();
    /// assert_eq!(chosen.fingerprint(), from_env.fingerprint());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load(env_value: Option<&str>, key_file: &Path) -> Result<MasterKey, KeyError> {
        if let Some(value) = env_value.filter(|value| !value.trim().is_empty()) {
            return MasterKey::parse(value, KeyOrigin::Environment);
        }
        match read_key_file(key_file) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                create_key_file(key_file)
            }
            other => other,
        }
    }

    pub(crate) fn parse(text: &str, origin: KeyOrigin) -> Result<MasterKey, KeyError> {
        let normalized: Zeroizing<String> = Zeroizing::new(
            text.trim()
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    other => other,
                })
                .collect(),
        );
        let decoded = Zeroizing::new(LENIENT_BASE64.decode(normalized.as_bytes()).map_err(|_| {
            KeyError::NotBase64 {
                origin: origin.clone(),
            }
        })?);
        if decoded.len() != MASTER_KEY_LEN {
            return Err(KeyError::WrongLength {
                origin,
                got: decoded.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(MasterKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; MASTER_KEY_LEN]>) -> MasterKey {
        let mut fingerprint = [0u8; 8];
        Hkdf::<Sha256>::new(None, bytes.as_ref())
            .expand(FINGERPRINT_INFO, &mut fingerprint)
            .expect("8 bytes is a valid HKDF-SHA256 output length");
        MasterKey {
            bytes,
            fingerprint: KeyFingerprint(fingerprint),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey, KeyError> {
    let text = read_key_file_text(path)?;
    MasterKey::parse(&text, KeyOrigin::File(path.to_owned()))
}

/// The key file's text, after checking that only its owner may access it.
pub(crate) fn read_key_file_text(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io_error = |action, source| KeyError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(|error| io_error("read", error))?;
    check_key_file_mode(&file, path)?;
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|error| io_error("read", error))?;
    Ok(text)
}

#[cfg(unix)]
fn check_key_file_mode(file: &File, path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = file.metadata().map_err(|source| KeyError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_file_mode(_file: &File, _path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Writes a new key beside `path` and hard-links it into place: `link` fails when the name
/// exists, so the file appears complete or not at all, and a concurrent first run reads the
/// winner's key instead of overwriting it.
pub(crate) fn create_key_file(path: &Path) -> Result<MasterKey, KeyError> {
    let io_error = |source| KeyError::Io {
        action: "create",
        path: path.to_owned(),
        source,
    };
    let dir = parent_dir(path);
    create_private_dir(dir).map_err(io_error)?;
    let key = MasterKey::generate();
    let temp = crate::file::unique_temp_path(path);
    let written = write_private_file(&temp, key.to_base64().as_bytes());
    let linked = written.and_then(|()| fs::hard_link(&temp, path));
    // The temp name is never needed again, whatever happened.
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            crate::file::sync_dir(dir).map_err(io_error)?;
            Ok(key)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(error) => Err(io_error(error)),
    }
}

pub(crate) fn write_private_file(path: &Path, key_base64: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(key_base64)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The public name of a [`MasterKey`]: the first 8 bytes of HKDF-SHA256(key, info = "lwa-broker
/// key fingerprint v1"), shown as 16 lowercase hex characters. It identifies a key without
/// revealing anything about it.
///
/// ```
/// use lwa_seal::KeyFingerprint;
///
/// let fingerprint: KeyFingerprint = "0123456789abcdef".parse().unwrap();
/// assert_eq!(fingerprint.to_string(), "0123456789abcdef");
/// assert!("0123".parse::<KeyFingerprint>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint([u8; 8]);

impl KeyFingerprint {
    /// Length of the fingerprint's text form.
    pub const TEXT_LEN: usize = 16;
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

impl FromStr for KeyFingerprint {
    type Err = InvalidFingerprint;

    /// Parses the 16 lowercase hex characters that `Display` writes.
    fn from_str(text: &str) -> Result<KeyFingerprint, InvalidFingerprint> {
        let digits = text.as_bytes();
        if digits.len() != KeyFingerprint::TEXT_LEN {
            return Err(InvalidFingerprint);
        }
        let mut bytes = [0u8; 8];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(KeyFingerprint(bytes))
    }
}

fn hex_digit(digit: u8) -> Result<u8, InvalidFingerprint> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(InvalidFingerprint),
    }
}

/// A string that is not a key fingerprint (16 lowercase hex characters).
///
/// ```
/// assert!("not hex".parse::<lwa_seal::KeyFingerprint>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key fingerprint is 16 lowercase hex characters")]
pub struct InvalidFingerprint;

/// Where a master key came from, to name it in errors.
///
/// ```
/// use lwa_seal::KeyOrigin;
///
/// assert_eq!(KeyOrigin::Environment.to_string(), "LWA_BROKER_MASTER_KEY");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Given to [`MasterKey::from_base64`].
    Argument,
    /// The [`MASTER_KEY_ENV`] environment variable.
    Environment,
    /// A key file.
    File(PathBuf),
    /// One line of a key file of several keys (1-based).
    FileLine(PathBuf, usize),
    /// One entry of [`MASTER_KEYS_ENV`](crate::MASTER_KEYS_ENV) (1-based).
    ListEntry(usize),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Argument => f.write_str("the master key"),
            KeyOrigin::Environment => f.write_str(MASTER_KEY_ENV),
            KeyOrigin::File(path) => write!(f, "key file {}", path.display()),
            KeyOrigin::FileLine(path, line) => write!(f, "key file {} line {line}", path.display()),
            KeyOrigin::ListEntry(entry) => write!(f, "{} entry {entry}", crate::MASTER_KEYS_ENV),
        }
    }
}

/// Why a master key could not be had. Messages never contain key material.
///
/// ```
/// use lwa_seal::{KeyError, MasterKey};
///
/// let error = MasterKey::load(Some("not base64!"), "unused.key".as_ref()).unwrap_err();
/// assert!(matches!(error, KeyError::NotBase64 { .. }));
/// assert_eq!(
///     error.to_string(),
///     "LWA_BROKER_MASTER_KEY must be 32 bytes of base64, but it is not valid base64"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not base64.
    #[error("{origin} must be {MASTER_KEY_LEN} bytes of base64, but it is not valid base64")]
    NotBase64 {
        /// Where the text came from.
        origin: KeyOrigin,
    },
    /// The base64 decodes to a length other than 32 bytes.
    #[error("{origin} must be {MASTER_KEY_LEN} bytes of base64, got {got} bytes")]
    WrongLength {
        /// Where the text came from.
        origin: KeyOrigin,
        /// How many bytes it decoded to.
        got: usize,
    },
    /// The key file may be accessed by group or others.
    #[error(
        "key file {} is accessible by group or others (mode {mode:04o}); it must be readable \
         by its owner only: run `chmod 600 {}`, and consider rotating the key",
        path.display(),
        path.display()
    )]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An entry of a list of keys is not `ID:BASE64`, `ID BASE64` or a bare key, or its id is
    /// not 1 to 32 letters, digits, `.`, `_` or `-`.
    #[error("{origin} must be ID:BASE64 (or a bare key), the id 1 to 32 letters, digits, '.', '_' or '-'")]
    BadEntry {
        /// The entry.
        origin: KeyOrigin,
    },
    /// Two entries of a list of keys have the same id.
    #[error("{origin} repeats the key id {id:?}; each key needs its own id")]
    DuplicateId {
        /// The second entry with that id.
        origin: KeyOrigin,
        /// The id.
        id: String,
    },
    /// The same key appears twice in a list of keys.
    #[error("{origin} repeats the key of fingerprint {fingerprint}")]
    DuplicateKey {
        /// The second entry with that key.
        origin: KeyOrigin,
        /// Its fingerprint.
        fingerprint: KeyFingerprint,
    },
    /// A list of keys holds no key.
    #[error("{what} holds no key")]
    NoKey {
        /// The variable or the file.
        what: String,
    },
    /// Both the one-key and the several-keys variables are set.
    #[error(
        "set either {} (several keys) or {MASTER_KEY_ENV} (one key), not both",
        crate::MASTER_KEYS_ENV
    )]
    BothVariables,
    /// A new key's id is already in the key file.
    #[error("key file {} already has a key with id {id:?}", path.display())]
    IdTaken {
        /// The key file.
        path: PathBuf,
        /// The id.
        id: String,
    },
    /// The key file could not be read or created.
    #[error("cannot {action} key file {}: {source}", path.display())]
    Io {
        /// `"read"` or `"create"`.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trips() {
        let fingerprint = MasterKey::generate().fingerprint();
        let text = fingerprint.to_string();
        assert_eq!(text.len(), KeyFingerprint::TEXT_LEN);
        assert_eq!(text.parse::<KeyFingerprint>(), Ok(fingerprint));
        assert!(text.to_uppercase().parse::<KeyFingerprint>().is_err() || text == text.to_uppercase());
        assert!(format!("{text}0").parse::<KeyFingerprint>().is_err());
        assert!("０123456789abcde".parse::<KeyFingerprint>().is_err());
    }

    #[test]
    fn fingerprint_differs_from_the_key_bytes() {
        let key = MasterKey::generate();
        assert_ne!(key.fingerprint().0, key.bytes()[..8]);
    }
}

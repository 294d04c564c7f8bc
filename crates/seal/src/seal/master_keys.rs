//! Several master keys, each with an id, newest first: what a key rotation configures.
//!
//! The same entry syntax everywhere: `ID:BASE64`, `ID BASE64`, or a bare `BASE64` (a key without
//! an id, as the one-key forms have always been). Base64 never contains `:`, `,` or spaces, so
//! the forms cannot be confused.

use std::fs;
use std::io;
use std::path::Path;

use zeroize::Zeroizing;

use super::key::{
    KeyError, KeyFingerprint, KeyOrigin, MasterKey, create_key_file, parent_dir, read_key_file_text,
    write_private_file,
};
use super::keyring::Keyring;

/// The environment variable of several master keys: comma-separated `ID:BASE64` entries, newest
/// first, e.g. `2026-11:…,2026-05:…`. It replaces [`MASTER_KEY_ENV`](crate::MASTER_KEY_ENV); setting both is refused.
pub const MASTER_KEYS_ENV: &str = "LWA_BROKER_MASTER_KEYS";

/// Longest key id.
const MAX_ID_LEN: usize = 32;

/// A master key and its operator-given id (none for a key given alone, as in
/// [`MASTER_KEY_ENV`](crate::MASTER_KEY_ENV)). The id is a name, not a secret; ids longer than 32 characters are
/// refused, so a key pasted where an id belongs is never echoed in an error.
#[derive(Clone, Debug)]
pub struct NamedKey {
    id: Option<String>,
    key: MasterKey,
}

impl NamedKey {
    /// A key and its id.
    ///
    /// ```
    /// let named = lwa_seal::NamedKey::new(Some("2026-11".into()), lwa_seal::MasterKey::generate());
    /// assert_eq!(named.id(), Some("2026-11"));
    /// ```
    pub fn new(id: Option<String>, key: MasterKey) -> NamedKey {
        NamedKey { id, key }
    }

    /// The id, if the operator gave one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// How reports name the key: `id (fingerprint)`, or the fingerprint alone.
    ///
    /// ```
    /// use lwa_seal::{MasterKey, NamedKey};
    ///
    /// let key = MasterKey::generate();
    /// let fp = key.fingerprint().to_string();
    /// assert_eq!(NamedKey::new(None, key.clone()).label(), fp);
    /// assert_eq!(NamedKey::new(Some("k1".into()), key).label(), format!("k1 ({fp})"));
    /// ```
    pub fn label(&self) -> String {
        match &self.id {
            Some(id) => format!("{id} ({})", self.key.fingerprint()),
            None => self.key.fingerprint().to_string(),
        }
    }
}

/// The configured master keys, newest first (never empty). New values are sealed with the
/// first; every one of them still opens what it sealed.
///
/// ```
/// use lwa_seal::{AeadIdentity, MasterKey, MasterKeys};
///
/// let (new, old) = (MasterKey::generate(), MasterKey::generate());
/// let text = format!("2026-11:{},2026-05:{}", &*new.to_base64(), &*old.to_base64());
/// let keys = MasterKeys::parse_list(&text).unwrap();
/// assert_eq!(keys.newest().id(), Some("2026-11"));
/// let keyring = keys.keyring();
/// assert_eq!(keyring.fingerprints(), vec![new.fingerprint(), old.fingerprint()]);
///
/// let error = MasterKeys::parse_list("2026-11:not-a-key").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "LWA_BROKER_MASTER_KEYS entry 1 must be 32 bytes of base64, but it is not valid base64"
/// );
/// ```
#[derive(Clone, Debug)]
pub struct MasterKeys {
    keys: Vec<NamedKey>,
}

impl MasterKeys {
    /// One key without an id.
    pub fn single(key: MasterKey) -> MasterKeys {
        MasterKeys {
            keys: vec![NamedKey::new(None, key)],
        }
    }

    /// Loads the broker's master keys, first match wins:
    ///
    /// 1. `keys_env`, the value of [`MASTER_KEYS_ENV`], when set and not blank: comma-separated
    ///    entries, newest first;
    /// 2. `key_env`, the value of [`MASTER_KEY_ENV`](crate::MASTER_KEY_ENV), when set and not blank: one key;
    /// 3. the key file: one entry a line, newest first (blank lines and `#` comments ignored).
    ///    A file of one bare key is the single-key file of before; a missing file is created with
    ///    one new key, as [`MasterKey::load`] does.
    ///
    /// Both variables set is refused ([`KeyError::BothVariables`]); every malformed entry is
    /// named by its variable and position, or its file and line, never by its content.
    ///
    /// ```
    /// use lwa_seal::{MasterKey, MasterKeys};
    ///
    /// let dir = std::env::temp_dir().join(format!("lwa-seal-doc-keys-{}", std::process::id()));
    /// let key_file = dir.join("master.key");
    /// let created = MasterKeys::load(None, None, &key_file).unwrap();
    /// let new = MasterKey::generate();
    /// MasterKeys::add_to_file(&key_file, "2026-11", &new).unwrap();
    /// let keys = MasterKeys::load(Some(" "), None, &key_file).unwrap();
    /// assert_eq!(keys.newest().key().fingerprint(), new.fingerprint());
    /// assert_eq!(keys.iter().nth(1).unwrap().key().fingerprint(), created.newest().key().fingerprint());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load(
        keys_env: Option<&str>,
        key_env: Option<&str>,
        key_file: &Path,
    ) -> Result<MasterKeys, KeyError> {
        let set = |value: Option<&str>| value.filter(|v| !v.trim().is_empty()).map(str::to_owned);
        match (set(keys_env), set(key_env)) {
            (Some(_), Some(_)) => Err(KeyError::BothVariables),
            (Some(list), None) => MasterKeys::parse_list(&list),
            (None, Some(one)) => Ok(MasterKeys::single(MasterKey::parse(
                &one,
                KeyOrigin::Environment,
            )?)),
            (None, None) => match read_key_file_text(key_file) {
                Ok(text) => MasterKeys::parse_file(&text, key_file),
                Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Ok(MasterKeys::single(create_key_file(key_file)?))
                }
                Err(other) => Err(other),
            },
        }
    }

    /// Parses the value of [`MASTER_KEYS_ENV`]: comma-separated entries, newest first.
    pub fn parse_list(text: &str) -> Result<MasterKeys, KeyError> {
        let entries = text
            .split(',')
            .enumerate()
            .map(|(n, entry)| (KeyOrigin::ListEntry(n + 1), entry))
            .filter(|(_, entry)| !entry.trim().is_empty());
        MasterKeys::from_entries(entries, || MASTER_KEYS_ENV.to_owned())
    }

    /// Parses a key file's text: one entry a line, newest first; blank lines and lines
    /// starting with `#` are ignored. A file of one bare key keeps the single-key form's
    /// error messages.
    pub fn parse_file(text: &str, path: &Path) -> Result<MasterKeys, KeyError> {
        let entries: Vec<(KeyOrigin, &str)> = text
            .lines()
            .enumerate()
            .map(|(n, line)| (KeyOrigin::FileLine(path.to_owned(), n + 1), line))
            .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .collect();
        if let [(_, only)] = entries.as_slice()
            && split_entry(only).0.is_none()
        {
            return Ok(MasterKeys::single(MasterKey::parse(
                only,
                KeyOrigin::File(path.to_owned()),
            )?));
        }
        MasterKeys::from_entries(entries.into_iter(), || format!("key file {}", path.display()))
    }

    fn from_entries<'a>(
        entries: impl Iterator<Item = (KeyOrigin, &'a str)>,
        what: impl FnOnce() -> String,
    ) -> Result<MasterKeys, KeyError> {
        let mut keys: Vec<NamedKey> = Vec::new();
        for (origin, entry) in entries {
            let (id, key_text) = split_entry(entry);
            if let Some(id) = id
                && !valid_id(id)
            {
                return Err(KeyError::BadEntry { origin });
            }
            if key_text.contains([':', ' ', '\t']) {
                return Err(KeyError::BadEntry { origin });
            }
            let key = MasterKey::parse(key_text, origin.clone())?;
            if let Some(id) = id
                && keys.iter().any(|k| k.id() == Some(id))
            {
                return Err(KeyError::DuplicateId {
                    origin,
                    id: id.to_owned(),
                });
            }
            if keys.iter().any(|k| k.key.fingerprint() == key.fingerprint()) {
                return Err(KeyError::DuplicateKey {
                    origin,
                    fingerprint: key.fingerprint(),
                });
            }
            keys.push(NamedKey::new(id.map(str::to_owned), key));
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey { what: what() });
        }
        Ok(MasterKeys { keys })
    }

    /// The key new values are sealed with.
    pub fn newest(&self) -> &NamedKey {
        &self.keys[0]
    }

    /// Every key, newest first.
    pub fn iter(&self) -> impl Iterator<Item = &NamedKey> {
        self.keys.iter()
    }

    /// The key of this fingerprint, if configured.
    pub fn by_fingerprint(&self, fingerprint: KeyFingerprint) -> Option<&NamedKey> {
        self.keys.iter().find(|k| k.key.fingerprint() == fingerprint)
    }

    /// A keyring that seals with the newest key and opens with any.
    pub fn keyring(&self) -> Keyring {
        let mut keys = self.keys.iter();
        let newest = keys.next().expect("never empty");
        keys.fold(Keyring::new(newest.key.clone()), |ring, older| {
            ring.with_older(older.key.clone())
        })
    }

    /// Writes `key` as the newest entry (`ID BASE64`, first line) of the key file, keeping every
    /// key already there; the file is replaced atomically and stays mode 0600 (created so when
    /// missing). Refuses an id already in the file, and a file it could not parse.
    pub fn add_to_file(path: &Path, id: &str, key: &MasterKey) -> Result<(), KeyError> {
        if !valid_id(id) {
            return Err(KeyError::BadEntry {
                origin: KeyOrigin::Argument,
            });
        }
        let entry = Zeroizing::new(format!("{id} {}", &*key.to_base64()));
        let io_error = |action, source| KeyError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let old = match read_key_file_text(path) {
            Ok(text) => {
                let keys = MasterKeys::parse_file(&text, path)?;
                if keys.iter().any(|k| k.id() == Some(id)) {
                    return Err(KeyError::IdTaken {
                        path: path.to_owned(),
                        id: id.to_owned(),
                    });
                }
                text
            }
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                super::key::create_private_dir(parent_dir(path)).map_err(|e| io_error("create", e))?;
                Zeroizing::new(String::new())
            }
            Err(other) => return Err(other),
        };
        let mut text = Zeroizing::new(format!(
            "# master keys, newest first: ID BASE64 (see `lwa-broker keys rotate`)\n{}\n",
            &*entry
        ));
        for line in old
            .lines()
            .filter(|l| !l.starts_with("# master keys, newest first"))
        {
            text.push_str(line);
            text.push('\n');
        }
        let temp = crate::file::unique_temp_path(path);
        // `write_private_file` adds a final newline; the text has one already.
        let body = text.trim_end_matches('\n');
        let written = write_private_file(&temp, body.as_bytes()).and_then(|()| fs::rename(&temp, path));
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error("write", error));
        }
        crate::file::sync_dir(parent_dir(path)).map_err(|e| io_error("write", e))
    }
}

/// `(id, key text)` of one entry: `ID:KEY`, `ID KEY` or a bare `KEY`.
fn split_entry(entry: &str) -> (Option<&str>, &str) {
    let entry = entry.trim();
    match entry.split_once([':', ' ', '\t']) {
        Some((id, key)) => (Some(id.trim()), key.trim()),
        None => (None, entry),
    }
}

/// 1 to 32 letters, digits, `.`, `_` or `-`.
fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MASTER_KEY_ENV;

    #[test]
    fn entries_split_on_colon_or_space() {
        assert_eq!(split_entry(" a:b "), (Some("a"), "b"));
        assert_eq!(split_entry("a  b"), (Some("a"), "b"));
        assert_eq!(split_entry("b"), (None, "b"));
        assert!(valid_id("2026-11_a.b"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(33)));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn the_single_key_variable_still_names_itself() {
        let error = MasterKeys::load(None, Some("c2hvcnQ="), Path::new("unused")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{MASTER_KEY_ENV} must be 32 bytes of base64, got 5 bytes")
        );
    }
}

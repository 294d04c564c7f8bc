//! [`EncryptedFileStore`]: the library's [`TokenStore`] in one sealed file.

use std::path::{Path, PathBuf};

use lwa_seal::{FileError, Keyring, RecordInput, SealedFile};

use crate::secret::{AccessToken, RefreshToken};
use crate::store::{StoreError, StoredTokens, TokenStore};

const REFRESH_TOKEN: &str = "refresh_token";
const ACCESS_TOKEN: &str = "access_token";
// Bookkeeping kept beside the caller's labels; a leading `_` keeps the two apart.
const OBTAINED: &str = "_refresh_token_obtained_ms";
const EXPIRES: &str = "_access_token_expires_ms";
const NEEDS_REAUTH: &str = "_needs_reauth";

/// Tokens of any number of named accounts in one file, created 0600, every token sealed with
/// XChaCha20-Poly1305 under the master key and bound to its account and field, written
/// atomically under a lock so that a crash or a second process never corrupts it.
///
/// ```
/// use lwa::{EncryptedFileStore, RefreshToken, StoredTokens, TokenStore};
/// use lwa_seal::{Keyring, MasterKey};
/// let dir = std::env::temp_dir().join(format!("lwa-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = EncryptedFileStore::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
/// let tokens = StoredTokens { refresh_token: Some(RefreshToken::new("Atzr|abc")), ..Default::default() };
/// store.save("default", &tokens).unwrap();
/// let loaded = store.load("default").unwrap().unwrap();
/// assert!(loaded.refresh_token.unwrap().same_as("Atzr|abc"));
/// assert!(!std::fs::read_to_string(dir.join("tokens.json")).unwrap().contains("Atzr|abc"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct EncryptedFileStore {
    file: SealedFile,
}

impl EncryptedFileStore {
    /// A store in the file at `path` (created on first write), sealed with `keyring`.
    pub fn new(path: impl Into<PathBuf>, keyring: Keyring) -> Self {
        Self {
            file: SealedFile::new(path, keyring),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Re-seals every token with the newest master key; returns how many values changed.
    pub fn reseal_all(&self) -> Result<usize, StoreError> {
        self.file.reseal_all().map_err(store_error)
    }
}

impl TokenStore for EncryptedFileStore {
    fn load(&self, account: &str) -> Result<Option<StoredTokens>, StoreError> {
        let Some(record) = self.file.get(account).map_err(store_error)? else {
            return Ok(None);
        };
        let number = |name: &str| record.label(name).and_then(|v| v.parse::<i64>().ok());
        Ok(Some(StoredTokens {
            refresh_token: record.secret(REFRESH_TOKEN).map(RefreshToken::new),
            refresh_token_obtained_ms: number(OBTAINED),
            access_token: record.secret(ACCESS_TOKEN).map(AccessToken::new),
            access_token_expires_ms: number(EXPIRES),
            needs_reauth: record.label(NEEDS_REAUTH) == Some("true"),
            labels: record
                .labels()
                .iter()
                .filter(|(name, _)| !name.starts_with('_'))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }))
    }

    fn save(&self, account: &str, tokens: &StoredTokens) -> Result<(), StoreError> {
        let mut record = RecordInput::new();
        if let Some(token) = &tokens.refresh_token {
            record = record.secret(REFRESH_TOKEN, token.expose());
        }
        if let Some(token) = &tokens.access_token {
            record = record.secret(ACCESS_TOKEN, token.expose());
        }
        if let Some(ms) = tokens.refresh_token_obtained_ms {
            record = record.label(OBTAINED, &ms.to_string());
        }
        if let Some(ms) = tokens.access_token_expires_ms {
            record = record.label(EXPIRES, &ms.to_string());
        }
        if tokens.needs_reauth {
            record = record.label(NEEDS_REAUTH, "true");
        }
        for (name, value) in tokens.labels.iter().filter(|(name, _)| !name.starts_with('_')) {
            record = record.label(name, value);
        }
        self.file.put(account, record).map_err(store_error)
    }

    fn delete(&self, account: &str) -> Result<(), StoreError> {
        self.file.remove(account).map(drop).map_err(store_error)
    }

    fn accounts(&self) -> Result<Vec<String>, StoreError> {
        let mut names = self.file.names().map_err(store_error)?;
        names.sort();
        Ok(names)
    }
}

fn store_error(error: FileError) -> StoreError {
    match error {
        FileError::Io { .. } | FileError::InsecurePermissions { .. } => StoreError::Other(error.to_string()),
        other => StoreError::Corrupt(other.to_string()),
    }
}

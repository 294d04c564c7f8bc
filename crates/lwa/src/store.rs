//! Where a [`TokenManager`](crate::TokenManager) keeps its tokens between runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use parking_lot::Mutex;

use crate::secret::{AccessToken, RefreshToken};

/// Everything kept for one account: its tokens and a few non-secret labels (API, region,
/// selling partner id…) that callers such as the CLI choose.
#[derive(Clone, Debug, Default)]
pub struct StoredTokens {
    /// The long-lived refresh token, if the account is authenticated.
    pub refresh_token: Option<RefreshToken>,
    /// When the refresh token was obtained (ms since the epoch): its age matters for SP-API
    /// apps, which Amazon makes sellers re-authorize every 365 days.
    pub refresh_token_obtained_ms: Option<i64>,
    /// The current access token.
    pub access_token: Option<AccessToken>,
    /// When the access token expires (ms since the epoch).
    pub access_token_expires_ms: Option<i64>,
    /// True once LWA refused the refresh token (`invalid_grant`): the account must be
    /// authorized again before it is tried another time.
    pub needs_reauth: bool,
    /// Non-secret labels, stored as they are.
    pub labels: BTreeMap<String, String>,
}

/// Why a store could not load or save.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the underlying file or database failed.
    #[error("token store I/O failed on {path}: {source}")]
    Io {
        /// The file or resource involved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value could not be decrypted or parsed. The message names what and why, never
    /// the value.
    #[error("token store is unreadable: {0}")]
    Corrupt(String),
    /// Another error from a store implementation.
    #[error("token store error: {0}")]
    Other(String),
}

/// Persistence for the tokens of named accounts. Implementations must be safe to share between
/// threads; each call is expected to be short (a file or a row).
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The tokens stored for `account`, if any.
    fn load(&self, account: &str) -> Result<Option<StoredTokens>, StoreError>;
    /// Stores `tokens` for `account`, replacing what was there, leaving other accounts alone.
    fn save(&self, account: &str, tokens: &StoredTokens) -> Result<(), StoreError>;
    /// Forgets `account`. Forgetting an unknown account is not an error.
    fn delete(&self, account: &str) -> Result<(), StoreError>;
    /// The names of every stored account, sorted.
    fn accounts(&self) -> Result<Vec<String>, StoreError>;
}

/// A store that keeps tokens in memory only, for tests and short-lived programs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    accounts: Mutex<HashMap<String, StoredTokens>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryStore {
    fn load(&self, account: &str) -> Result<Option<StoredTokens>, StoreError> {
        Ok(self.accounts.lock().get(account).cloned())
    }

    fn save(&self, account: &str, tokens: &StoredTokens) -> Result<(), StoreError> {
        self.accounts.lock().insert(account.to_owned(), tokens.clone());
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<(), StoreError> {
        self.accounts.lock().remove(account);
        Ok(())
    }

    fn accounts(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.accounts.lock().keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}

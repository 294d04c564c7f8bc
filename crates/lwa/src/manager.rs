//! [`TokenManager`]: one account's tokens, always fresh, shared safely by any number of tasks.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::client::{AppCredentials, LwaClient, SecretUsed, TokenResponse};
use crate::clock::{Clock, SystemClock};
use crate::error::{ErrorClass, LwaError};
use crate::region::{Api, Region};
use crate::restricted::{RDT_PATH, RestrictedDataToken, RestrictedResource, create_restricted_data_token};
use crate::secret::{AccessToken, AuthorizationCode, CodeVerifier, RefreshToken};
use crate::store::{MemoryStore, StoreError, StoredTokens, TokenStore};

/// The default refresh buffer: an access token is refreshed once it has less than 5 minutes
/// left.
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(300);

/// The User-Agent sent to the SP-API unless configured otherwise (AMAZON.md §3.3 asks for
/// `AppId/Version (Language=…)`).
pub const DEFAULT_USER_AGENT: &str = concat!("lwa-broker/", env!("CARGO_PKG_VERSION"), " (Language=Rust)");

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// An access token with more than the refresh buffer left.
    Valid,
    /// An access token within the refresh buffer: the next `access_token()` refreshes it.
    Expiring,
    /// No usable access token; the next `access_token()` refreshes.
    Expired,
    /// LWA refused the refresh token (`invalid_grant`): the account must be authorized again.
    NeedsReauth,
    /// No refresh token at all.
    NotAuthenticated,
}

impl TokenStatus {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Valid => "valid",
            TokenStatus::Expiring => "expiring",
            TokenStatus::Expired => "expired",
            TokenStatus::NeedsReauth => "needs_reauth",
            TokenStatus::NotAuthenticated => "not_authenticated",
        }
    }
}

/// A snapshot of an account's token state; contains no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The account's name in its store.
    pub account: String,
    /// Where the account stands.
    pub status: TokenStatus,
    /// Seconds the access token has left (negative once expired), if there is one.
    pub expires_in_seconds: Option<i64>,
    /// When the access token expires, in ms since the epoch.
    pub expires_at_ms: Option<i64>,
    /// Seconds since the refresh token was obtained, if known.
    pub refresh_token_age_seconds: Option<i64>,
    /// True when the access token has expired.
    pub is_expired: bool,
}

impl TokenInfo {
    /// The state of stored tokens at `now_ms`, for a given refresh buffer.
    pub fn of(account: &str, tokens: &StoredTokens, now_ms: i64, refresh_buffer: Duration) -> TokenInfo {
        let buffer = refresh_buffer.as_millis() as i64;
        let expires_at_ms = tokens.access_token.as_ref().and(tokens.access_token_expires_ms);
        let status = match (&tokens.refresh_token, expires_at_ms) {
            _ if tokens.needs_reauth => TokenStatus::NeedsReauth,
            (None, _) => TokenStatus::NotAuthenticated,
            (Some(_), Some(at)) if at - now_ms > buffer => TokenStatus::Valid,
            (Some(_), Some(at)) if at > now_ms => TokenStatus::Expiring,
            (Some(_), _) => TokenStatus::Expired,
        };
        TokenInfo {
            account: account.to_owned(),
            status,
            expires_in_seconds: expires_at_ms.map(|at| (at - now_ms).div_euclid(1000)),
            expires_at_ms,
            refresh_token_age_seconds: tokens
                .refresh_token_obtained_ms
                .filter(|_| tokens.refresh_token.is_some())
                .map(|at| (now_ms - at).div_euclid(1000)),
            is_expired: expires_at_ms.is_none_or(|at| at <= now_ms),
        }
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// There is no refresh token: authenticate with a code or set a refresh token first.
    #[error("account {account:?} is not authenticated: log in or set a refresh token first")]
    NotAuthenticated {
        /// The account.
        account: String,
    },
    /// LWA refused the refresh token; the account must be authorized again.
    #[error("account {account:?} must be authorized again: {reason}")]
    NeedsReauthorization {
        /// The account.
        account: String,
        /// What LWA said.
        reason: String,
    },
    /// An LWA error other than `invalid_grant`.
    #[error(transparent)]
    Lwa(LwaError),
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An SP-API call (such as the Tokens API) answered with an error.
    #[error("{operation} failed with HTTP {status}: {message}")]
    Api {
        /// What was called.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// Amazon's error code and message (never a token).
        message: String,
    },
    /// The call to an Amazon API failed on the way.
    #[error("{operation} failed: {reason}")]
    Transport {
        /// What was called.
        operation: &'static str,
        /// Why.
        reason: String,
    },
}

impl TokenError {
    /// What the caller must do, in the terms of [`ErrorClass`]; `None` for "not authenticated".
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            TokenError::NotAuthenticated { .. } => None,
            TokenError::NeedsReauthorization { .. } => Some(ErrorClass::Reauthorize),
            TokenError::Lwa(e) => Some(e.class()),
            TokenError::Store(_) => Some(ErrorClass::Configuration),
            TokenError::Api { status, .. } if *status == 429 || *status >= 500 => {
                Some(ErrorClass::RetryLater)
            }
            TokenError::Api { .. } => Some(ErrorClass::Configuration),
            TokenError::Transport { .. } => Some(ErrorClass::RetryLater),
        }
    }
}

/// The outcome of a successful refresh or code exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Which client secret LWA accepted.
    pub secret_used: SecretUsed,
    /// True when LWA returned a new refresh token (it has been stored).
    pub refresh_token_changed: bool,
}

/// Settings for a [`TokenManager`].
#[derive(Debug, Clone)]
pub struct TokenManagerConfig {
    /// The account's name in the store (`default` unless you keep several).
    pub account: String,
    /// SP-API or Ads.
    pub api: Api,
    /// The account's region: picks the token host (Ads) and the API host.
    pub region: Region,
    /// The app's LWA credentials.
    pub credentials: AppCredentials,
    /// Refresh once the access token has less than this left.
    pub refresh_buffer: Duration,
    /// Call the SP-API sandbox host instead of production.
    pub sandbox: bool,
    /// The User-Agent for SP-API requests.
    pub user_agent: String,
}

impl TokenManagerConfig {
    /// Settings with the defaults: account `default`, 5-minute buffer, production hosts.
    pub fn new(api: Api, region: Region, credentials: AppCredentials) -> Self {
        Self {
            account: "default".into(),
            api,
            region,
            credentials,
            refresh_buffer: DEFAULT_REFRESH_BUFFER,
            sandbox: false,
            user_agent: DEFAULT_USER_AGENT.into(),
        }
    }

    /// The LWA host for this account's grants.
    pub fn token_host(&self) -> &'static str {
        self.region.token_host(self.api)
    }

    /// The host of the account's API (SP-API production or sandbox, or Ads).
    pub fn api_host(&self) -> &'static str {
        match (self.api, self.sandbox) {
            (Api::SpApi, false) => self.region.sp_api_host(),
            (Api::SpApi, true) => self.region.sp_api_sandbox_host(),
            (Api::Ads, _) => self.region.ads_api_host(),
        }
    }
}

#[derive(Clone, Default)]
struct State {
    tokens: StoredTokens,
    /// Bumped on every refresh, so a forced refresh can tell whether one finished while it
    /// waited.
    generation: u64,
}

struct Inner {
    config: TokenManagerConfig,
    client: LwaClient,
    clock: Arc<dyn Clock>,
    store: Arc<dyn TokenStore>,
    /// The cached tokens: read on every `access_token()`, written only by a refresh.
    state: RwLock<State>,
    /// Held by the one task refreshing; everyone else waits for its result.
    refresh: tokio::sync::Mutex<()>,
}

/// Keeps one account's access token fresh.
///
/// `access_token()` answers from memory while the token has more than the refresh buffer left;
/// otherwise exactly one caller refreshes and every concurrent caller gets its result. Tokens
/// are persisted through a [`TokenStore`]. Clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use fake_amazon::{FakeAmazon, FakeConfig, defaults};
/// use lwa::{Api, AppCredentials, Endpoints, LwaClient, Region, TokenManager, TokenManagerConfig};
///
/// let fake = FakeAmazon::start(FakeConfig::default()).await.unwrap();
/// let refresh_token = fake
///     .control()
///     .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
///     .await;
/// let app = AppCredentials::new(defaults::SP_API_CLIENT_ID, defaults::SP_API_CLIENT_SECRET);
/// let manager = TokenManager::builder(TokenManagerConfig::new(Api::SpApi, Region::Na, app))
///     .client(LwaClient::new(Endpoints::rebased(&fake.base_url())))
///     .build()
///     .unwrap();
/// manager.set_refresh_token(refresh_token.into()).await.unwrap();
/// let token = manager.access_token().await.unwrap();
/// assert!(token.expose().starts_with("Atza|"));
/// # }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("account", &self.inner.config.account)
            .field("api", &self.inner.config.api)
            .field("region", &self.inner.config.region)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenManager`].
#[derive(Debug)]
pub struct TokenManagerBuilder {
    config: TokenManagerConfig,
    client: Option<LwaClient>,
    clock: Option<Arc<dyn Clock>>,
    store: Option<Arc<dyn TokenStore>>,
}

impl TokenManagerBuilder {
    /// The LWA client (and so the endpoints and retry policy) to use.
    pub fn client(mut self, client: LwaClient) -> Self {
        self.client = Some(client);
        self
    }

    /// The clock for expiry decisions.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where tokens are persisted (in memory only by default).
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Builds the manager, loading the account's tokens from the store.
    pub fn build(self) -> Result<TokenManager, StoreError> {
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let tokens = store.load(&self.config.account)?.unwrap_or_default();
        Ok(TokenManager {
            inner: Arc::new(Inner {
                client: self
                    .client
                    .unwrap_or_else(|| LwaClient::new(crate::Endpoints::amazon())),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                store,
                state: RwLock::new(State {
                    tokens,
                    generation: 0,
                }),
                refresh: tokio::sync::Mutex::new(()),
                config: self.config,
            }),
        })
    }
}

impl TokenManager {
    /// Starts building a manager for one account.
    pub fn builder(config: TokenManagerConfig) -> TokenManagerBuilder {
        TokenManagerBuilder {
            config,
            client: None,
            clock: None,
            store: None,
        }
    }

    /// The manager's settings.
    pub fn config(&self) -> &TokenManagerConfig {
        &self.inner.config
    }

    /// A valid access token: from memory while it has more than the refresh buffer left,
    /// otherwise refreshed (one refresh shared by every concurrent caller).
    ///
    /// If a refresh fails for a reason worth retrying while the current token has not yet
    /// expired, the current token is returned.
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        if let Some(token) = self.fresh_token() {
            return Ok(token);
        }
        // Boxed so that the future of the cached path stays a few bytes, not the size of a
        // whole HTTP exchange.
        Box::pin(self.refresh_for_access_token()).await
    }

    /// The cached access token if it has more than the refresh buffer left, without waiting.
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        self.fresh_token()
    }

    async fn refresh_for_access_token(&self) -> Result<AccessToken, TokenError> {
        let _refreshing = self.inner.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(token) = self.fresh_token() {
            return Ok(token);
        }
        match self.refresh_locked().await {
            Ok(_) => {}
            Err(TokenError::Lwa(error)) if error.is_retryable() => {
                if let Some(token) = self.unexpired_token() {
                    tracing::warn!(account = %self.inner.config.account, %error, "refresh failed; the current token is still valid");
                    return Ok(token);
                }
                return Err(TokenError::Lwa(error));
            }
            Err(error) => return Err(error),
        }
        self.unexpired_token().ok_or_else(|| {
            TokenError::Lwa(LwaError::MalformedResponse {
                status: 200,
                reason: "LWA returned an access token that has already expired".into(),
            })
        })
    }

    /// Refreshes now, whatever the cached token's state. Concurrent forced refreshes share one
    /// LWA call.
    pub async fn force_refresh(&self) -> Result<RefreshOutcome, TokenError> {
        let generation = self.read().generation;
        let _refreshing = self.inner.refresh.lock().await;
        if self.read().generation != generation {
            return Ok(RefreshOutcome {
                secret_used: SecretUsed::Current,
                refresh_token_changed: false,
            });
        }
        self.refresh_locked().await
    }

    /// Exchanges an authorization code from a consent redirect and stores the tokens.
    pub async fn authenticate_with_code(
        &self,
        code: &AuthorizationCode,
        redirect_uri: Option<&str>,
        code_verifier: Option<&CodeVerifier>,
    ) -> Result<RefreshOutcome, TokenError> {
        let _refreshing = self.inner.refresh.lock().await;
        let config = &self.inner.config;
        let response = self
            .inner
            .client
            .exchange_code(
                config.token_host(),
                &config.credentials,
                code,
                redirect_uri,
                code_verifier,
            )
            .await
            .map_err(|error| self.lwa_error(error))?;
        let refresh_token = response.refresh_token.clone().ok_or_else(|| {
            TokenError::Lwa(LwaError::MalformedResponse {
                status: 200,
                reason: "the code exchange returned no refresh_token".into(),
            })
        })?;
        let now = self.inner.clock.now_ms();
        let mut tokens = self.read().tokens;
        tokens.refresh_token = Some(refresh_token);
        tokens.refresh_token_obtained_ms = Some(now);
        tokens.needs_reauth = false;
        self.apply(&mut tokens, &response, now);
        self.persist(tokens).await?;
        Ok(RefreshOutcome {
            secret_used: response.secret_used,
            refresh_token_changed: true,
        })
    }

    /// Sets a refresh token obtained elsewhere (a self-authorized private app's token from
    /// Seller Central) and forgets the cached access token.
    pub async fn set_refresh_token(&self, refresh_token: RefreshToken) -> Result<(), TokenError> {
        let _refreshing = self.inner.refresh.lock().await;
        let mut tokens = self.read().tokens;
        tokens.refresh_token = Some(refresh_token);
        tokens.refresh_token_obtained_ms = Some(self.inner.clock.now_ms());
        tokens.access_token = None;
        tokens.access_token_expires_ms = None;
        tokens.needs_reauth = false;
        self.persist(tokens).await
    }

    /// Sets a non-secret label stored with the account (the CLI keeps the API, region and
    /// selling partner id there).
    pub async fn set_label(&self, name: &str, value: &str) -> Result<(), TokenError> {
        let _refreshing = self.inner.refresh.lock().await;
        let mut tokens = self.read().tokens;
        tokens.labels.insert(name.to_owned(), value.to_owned());
        self.persist(tokens).await
    }

    /// The account's labels.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        self.read().tokens.labels
    }

    /// Forgets every token of the account, in memory and in the store.
    pub async fn clear(&self) -> Result<(), TokenError> {
        let _refreshing = self.inner.refresh.lock().await;
        let store = self.inner.store.clone();
        let account = self.inner.config.account.clone();
        run_blocking(move || store.delete(&account)).await?;
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        state.tokens = StoredTokens::default();
        state.generation += 1;
        Ok(())
    }

    /// Where the account stands; makes no call to Amazon.
    pub fn info(&self) -> TokenInfo {
        TokenInfo::of(
            &self.inner.config.account,
            &self.read().tokens,
            self.inner.clock.now_ms(),
            self.inner.config.refresh_buffer,
        )
    }

    /// The refresh token, for callers that must hand it on (the CLI's `env --write`).
    pub fn refresh_token(&self) -> Option<RefreshToken> {
        self.read().tokens.refresh_token
    }

    /// SP-API request headers (AMAZON.md §3.3): `x-amz-access-token`, `user-agent` and
    /// `x-amz-date`. The token value is marked sensitive.
    pub async fn sp_api_headers(&self) -> Result<HeaderMap, TokenError> {
        let token = self.access_token().await?;
        Ok(self.sp_api_headers_with(&token))
    }

    /// SP-API headers carrying a given token (for example a Restricted Data Token).
    pub fn sp_api_headers_with(&self, token: &AccessToken) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-amz-access-token"),
            sensitive(token.expose()),
        );
        headers.insert(reqwest::header::USER_AGENT, plain(&self.inner.config.user_agent));
        headers.insert(
            HeaderName::from_static("x-amz-date"),
            plain(&amz_date(self.inner.clock.now_ms())),
        );
        headers
    }

    /// Ads API headers (AMAZON.md §4.2): `Authorization: Bearer`, `Amazon-Advertising-API-ClientId`,
    /// `Content-Type: application/json`, and `Amazon-Advertising-API-Scope` when a profile is
    /// given (every call but `/v2/profiles` needs one).
    pub async fn ads_headers(&self, profile_id: Option<&str>) -> Result<HeaderMap, TokenError> {
        let mut headers = self.ads_common_headers().await?;
        if let Some(profile) = profile_id {
            headers.insert(
                HeaderName::from_static("amazon-advertising-api-scope"),
                plain(profile),
            );
        }
        Ok(headers)
    }

    /// AMC headers (AMAZON.md §4.5): the Ads headers without a Scope, plus
    /// `Amazon-Advertising-API-MarketplaceId` and `Amazon-Advertising-API-AdvertiserId`.
    pub async fn amc_headers(
        &self,
        marketplace_id: &str,
        advertiser_id: &str,
    ) -> Result<HeaderMap, TokenError> {
        let mut headers = self.ads_common_headers().await?;
        headers.insert(
            HeaderName::from_static("amazon-advertising-api-marketplaceid"),
            plain(marketplace_id),
        );
        headers.insert(
            HeaderName::from_static("amazon-advertising-api-advertiserid"),
            plain(advertiser_id),
        );
        Ok(headers)
    }

    async fn ads_common_headers(&self) -> Result<HeaderMap, TokenError> {
        let token = self.access_token().await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            sensitive(&format!("Bearer {}", token.expose())),
        );
        headers.insert(
            HeaderName::from_static("amazon-advertising-api-clientid"),
            plain(&self.inner.config.credentials.client_id),
        );
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(headers)
    }

    /// Mints a Restricted Data Token through the Tokens API for the given resources.
    pub async fn restricted_data_token(
        &self,
        resources: &[RestrictedResource],
        target_application: Option<&str>,
    ) -> Result<RestrictedDataToken, TokenError> {
        let token = self.access_token().await?;
        let url = self
            .inner
            .client
            .endpoints()
            .url(self.inner.config.api_host(), RDT_PATH);
        create_restricted_data_token(
            self.inner.client.http(),
            &url,
            &token,
            &self.inner.config.user_agent,
            resources,
            target_application,
        )
        .await
    }

    /// Refreshes with the refresh lock held.
    async fn refresh_locked(&self) -> Result<RefreshOutcome, TokenError> {
        let config = &self.inner.config;
        let mut tokens = self.read().tokens;
        if tokens.needs_reauth {
            return Err(TokenError::NeedsReauthorization {
                account: config.account.clone(),
                reason: "LWA refused the refresh token earlier".into(),
            });
        }
        let refresh_token = tokens
            .refresh_token
            .clone()
            .ok_or_else(|| TokenError::NotAuthenticated {
                account: config.account.clone(),
            })?;
        let result = self
            .inner
            .client
            .refresh(config.token_host(), &config.credentials, &refresh_token)
            .await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if error.class() == ErrorClass::Reauthorize {
                    tokens.needs_reauth = true;
                    tokens.access_token = None;
                    tokens.access_token_expires_ms = None;
                    self.persist(tokens).await?;
                }
                return Err(self.lwa_error(error));
            }
        };
        let now = self.inner.clock.now_ms();
        if response.refresh_token_changed {
            tokens.refresh_token = response.refresh_token.clone();
            tokens.refresh_token_obtained_ms = Some(now);
        }
        self.apply(&mut tokens, &response, now);
        // Stored before anyone is handed the new token.
        self.persist(tokens).await?;
        Ok(RefreshOutcome {
            secret_used: response.secret_used,
            refresh_token_changed: response.refresh_token_changed,
        })
    }

    fn apply(&self, tokens: &mut StoredTokens, response: &TokenResponse, now: i64) {
        tokens.access_token = Some(response.access_token.clone());
        tokens.access_token_expires_ms = Some(now + (response.expires_in as i64) * 1000);
    }

    async fn persist(&self, tokens: StoredTokens) -> Result<(), TokenError> {
        let store = self.inner.store.clone();
        let account = self.inner.config.account.clone();
        let to_store = tokens.clone();
        run_blocking(move || store.save(&account, &to_store)).await?;
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        state.tokens = tokens;
        state.generation += 1;
        Ok(())
    }

    fn lwa_error(&self, error: LwaError) -> TokenError {
        match error {
            LwaError::Reauthorize { code, description } => TokenError::NeedsReauthorization {
                account: self.inner.config.account.clone(),
                reason: format!("{code}: {description}"),
            },
            other => TokenError::Lwa(other),
        }
    }

    fn read(&self) -> State {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cached token if it has more than the refresh buffer left. The hot path: one read
    /// lock, one clock reading, one reference-count increment.
    fn fresh_token(&self) -> Option<AccessToken> {
        let buffer = self.inner.config.refresh_buffer.as_millis() as i64;
        self.token_valid_beyond(buffer)
    }

    fn unexpired_token(&self) -> Option<AccessToken> {
        self.token_valid_beyond(0)
    }

    fn token_valid_beyond(&self, margin_ms: i64) -> Option<AccessToken> {
        let now = self.inner.clock.now_ms();
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        match (&state.tokens.access_token, state.tokens.access_token_expires_ms) {
            (Some(token), Some(expires)) if expires - now > margin_ms && !state.tokens.needs_reauth => {
                Some(token.clone())
            }
            _ => None,
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(StoreError::Other(format!("token store task failed: {e}"))))
}

fn sensitive(value: &str) -> HeaderValue {
    let mut value = plain(value);
    value.set_sensitive(true);
    value
}

/// A header value; characters a header cannot carry are dropped rather than panicking.
fn plain(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| {
        let cleaned: String = value
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

/// The message of an SP-API error body (`{"errors":[{"code","message","details"}]}`), or the
/// status alone when the body is something else.
pub(crate) fn sp_api_error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
        details: Option<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed
            .errors
            .iter()
            .map(|e| {
                let mut text = format!(
                    "{}: {}",
                    e.code.as_deref().unwrap_or("error"),
                    e.message.as_deref().unwrap_or("")
                );
                if let Some(details) = e.details.as_deref().filter(|d| !d.is_empty()) {
                    text.push_str(&format!(" ({details})"));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no SP-API error body".into(),
    }
}

/// `YYYYMMDDTHHMMSSZ` for a time in ms since the epoch.
pub(crate) fn amz_date(now_ms: i64) -> String {
    let secs = now_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_795_000_000_000), "20261118T110640Z");
        assert_eq!(amz_date(951_782_400_000), "20000229T000000Z");
    }

    #[test]
    fn sp_api_error_messages_are_readable() {
        let body = br#"{"errors":[{"message":"Access to requested resource is denied.","code":"Unauthorized","details":"Access token is missing in the request header."}]}"#;
        assert_eq!(
            sp_api_error_message(body),
            "Unauthorized: Access to requested resource is denied. (Access token is missing in the request header.)"
        );
        assert_eq!(sp_api_error_message(b"oops"), "no SP-API error body");
    }
}

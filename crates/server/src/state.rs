//! `AppState`: everything a handler needs, built once and passed to the router (no globals).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use lwa::{Api, Clock, Endpoints, LwaClient, Region};
use lwa_seal::{AeadIdentity, Keyring, MasterKeys};
use lwa_store::{ApiKey, PgStore, SqliteStore, Store, StoreError, Tenant};
use parking_lot::RwLock;
use url::Url;

use crate::apps::LiveSecrets;
use crate::audit::Auditor;
use crate::config::{AppConfig, ConfigError, Settings, TrustedProxy};
use crate::database::DatabaseHealth;
use crate::onboarding::ratelimit::SlidingWindow;
use crate::refresher::Refresher;
use crate::sealing::Sealer;
use crate::vend::Vendor;

/// Shared state; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
    pub apps: Vec<AppConfig>,
    pub endpoints: Endpoints,
    pub lwa: LwaClient,
    /// The same client without retries: for a connection already in backoff, where each
    /// backoff step should cost Amazon one call.
    pub lwa_single: LwaClient,
    pub clock: Arc<dyn Clock>,
    /// The base Amazon redirects back to, without a trailing slash.
    pub public_url: Url,
    pub trusted_proxies: Vec<TrustedProxy>,
    /// `/auth/initialize`: 5 requests in 10 s per client address.
    pub initialize_limiter: SlidingWindow,
    pub body_limit: usize,
    /// API keys read recently (see [`KEY_CACHE_MS`]).
    key_cache: RwLock<HashMap<String, CachedKey>>,
    pub sandbox: bool,
    /// The token caches.
    pub vendor: Vendor,
    /// The audit trail's pending records.
    pub auditor: Arc<Auditor>,
    /// Grantless scopes tenants may ask for.
    pub grantless_scopes: Vec<String>,
    /// The background refresher (its loop runs in `serve` when enabled).
    pub refresher: Arc<Refresher>,
    /// Webhook settings, the delivery client and the worker's signals.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Every app's client secrets as last read from the database (see `crate::apps`).
    pub secrets: LiveSecrets,
    /// The passthrough proxy's client, rate limiter and metrics.
    pub proxy: crate::proxy::Proxy,
    /// The counters `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Every LWA call this process made, by hour, grant and outcome (the dashboard's chart).
    pub lwa_calls: Arc<crate::dashboard::calls::LwaCallLog>,
    /// The dashboard's sessions, login limiter and sandbox walkthrough.
    pub dashboard: crate::dashboard::Dashboard,
    /// Whether the database answered lately (see [`crate::database`]).
    pub database: Arc<DatabaseHealth>,
}

/// How long an API key read from the database is trusted. A key revoked by another process
/// (another replica, `lwa-broker keys revoke`) stops working sooner, through
/// [`crate::invalidations`]; this bounds the rare race that poller cannot see.
pub const KEY_CACHE_MS: i64 = 60_000;

/// While the database is unreachable, an API key read from it at most this long ago is still
/// accepted, so tokens held in memory are still vended (see [`crate::database`]).
pub const KEY_STALE_MAX_MS: i64 = 15 * 60_000;

/// A key and its tenant as read from the database.
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub tenant: Arc<Tenant>,
    pub key: Arc<ApiKey>,
    /// The stored SHA-256 of the key's secret, decoded (`None` if the row is malformed).
    pub secret_digest: Option<[u8; 32]>,
    fetched_ms: i64,
    /// When its use was last written (from the database, then this process).
    touched_ms: Arc<AtomicI64>,
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] lwa_store::StoreError),
    #[error("master key: {0}")]
    Key(#[from] lwa_seal::KeyError),
    #[error(
        "the master key (fingerprint {found}) does not open this database; it was sealed with the key \
         of fingerprint {expected}. Set LWA_BROKER_MASTER_KEY or LWA_BROKER_KEY_FILE to that key, or \
         list it in LWA_BROKER_MASTER_KEYS after the newest."
    )]
    WrongMasterKey { found: String, expected: String },
    #[error("{0}")]
    Other(String),
}

/// The `meta` row whose sealed value proves the configured keys open this database.
pub const KEY_CHECK: &str = "key_check";
const KEY_CHECK_TEXT: &str = "lwa-broker master key check";

/// Opens the store named by the URL and runs its migrations.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn Store>, StartError> {
    open_store_with(database_url, true).await
}

/// Opens the store named by the URL (`sqlite:PATH`, `postgres://…`, `postgresql://…`). With
/// `migrate`, runs its migrations (safe when several replicas start at once: SQLite takes a
/// write lock, PostgreSQL an advisory lock); without, refuses a database whose migrations are
/// not current.
pub async fn open_store_with(database_url: &str, migrate: bool) -> Result<Arc<dyn Store>, StartError> {
    let not_current = || {
        StartError::Other(
            "the database's schema is older than this version of lwa-broker: run `lwa-broker migrate` \
             (or start with LWA_BROKER_AUTO_MIGRATE=on)"
                .into(),
        )
    };
    match Backend::of(database_url)? {
        Backend::Sqlite => {
            if migrate {
                return Ok(Arc::new(SqliteStore::connect_and_migrate(database_url).await?));
            }
            let store = SqliteStore::connect(database_url).await?;
            if !store.migrations_current().await? {
                return Err(not_current());
            }
            Ok(Arc::new(store))
        }
        Backend::Postgres => {
            if migrate {
                return Ok(Arc::new(PgStore::connect_and_migrate(database_url).await?));
            }
            let store = PgStore::connect(database_url).await?;
            if !store.migrations_current().await? {
                return Err(not_current());
            }
            Ok(Arc::new(store))
        }
    }
}

/// Runs the migrations of the database at the URL; answers the backend's name.
pub async fn migrate_store(database_url: &str) -> Result<&'static str, StartError> {
    Ok(open_store_with(database_url, true).await?.backend())
}

/// The database backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or a precise error.
    ///
    /// ```
    /// use lwa_server::state::Backend;
    /// assert_eq!(Backend::of("sqlite:broker.db").unwrap(), Backend::Sqlite);
    /// assert_eq!(Backend::of("postgres://postgres@127.0.0.1/broker").unwrap(), Backend::Postgres);
    /// assert!(Backend::of("mysql://x").is_err());
    /// ```
    pub fn of(database_url: &str) -> Result<Backend, StartError> {
        let url = database_url.trim();
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Err(StartError::Other(format!(
                "database URL {:?}: a PostgreSQL URL is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                redact_url(url)
            )))
        } else {
            Err(StartError::Other(format!(
                "database URL {:?} is not supported: expected sqlite:PATH (e.g. sqlite:lwa-broker.db) or \
                 postgres://USER@HOST/DATABASE",
                redact_url(url)
            )))
        }
    }
}

pub use lwa_store::redact_url;

/// Loads the master keys, newest first: `LWA_BROKER_MASTER_KEYS`, else `LWA_BROKER_MASTER_KEY`,
/// else the key file (created 0600 with one key when missing; one `ID BASE64` line per key).
pub fn load_master_keys(settings: &Settings) -> Result<MasterKeys, StartError> {
    Ok(MasterKeys::load(
        settings.master_keys.as_deref(),
        settings.master_key.as_deref(),
        &settings.key_file,
    )?)
}

/// The keyring of [`load_master_keys`]: seals with the newest key, opens with any.
pub fn load_keyring(settings: &Settings) -> Result<Keyring, StartError> {
    Ok(load_master_keys(settings)?.keyring())
}

/// Refuses to start when none of the configured master keys opens the database (any of them
/// will do: during a rotation the check value may still be sealed with an older one); records
/// the check value on a new database.
pub async fn check_master_key(store: &dyn Store, sealer: &Sealer) -> Result<(), StartError> {
    let identity = AeadIdentity::new("meta", KEY_CHECK);
    match store.meta(KEY_CHECK).await? {
        None => {
            let sealed = sealer
                .keyring()
                .seal(KEY_CHECK_TEXT.as_bytes(), &identity)
                .to_string();
            store.set_meta(KEY_CHECK, &sealed).await?;
            Ok(())
        }
        Some(sealed) => match sealer.keyring().open_str(&sealed, &identity) {
            Ok(_) => {
                if sealer.keyring().needs_reseal(
                    &lwa_seal::SealedValue::parse(&sealed).map_err(|e| StartError::Other(e.to_string()))?,
                ) {
                    let resealed = sealer
                        .keyring()
                        .seal(KEY_CHECK_TEXT.as_bytes(), &identity)
                        .to_string();
                    store.set_meta(KEY_CHECK, &resealed).await?;
                }
                Ok(())
            }
            Err(_) => Err(StartError::WrongMasterKey {
                found: sealer
                    .keyring()
                    .fingerprints()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                expected: Sealer::fingerprint_of(&sealed).unwrap_or_else(|| "unknown".into()),
            }),
        },
    }
}

impl AppState {
    /// Builds the state from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Sealer,
        settings: &Settings,
        endpoints: Endpoints,
        clock: Arc<dyn Clock>,
        public_url: Url,
    ) -> AppState {
        let lwa_calls = Arc::new(crate::dashboard::calls::LwaCallLog::new(clock.clone()));
        let lwa = LwaClient::new(endpoints.clone()).with_observer(lwa_calls.clone());
        let lwa_single = lwa.clone().with_retry(lwa::RetryPolicy::NONE);
        let auditor = Arc::new(Auditor::new(
            store.clone(),
            clock.clone(),
            settings.audit_retention_days,
        ));
        AppState(Arc::new(Inner {
            store,
            sealer,
            apps: settings.apps.clone(),
            endpoints,
            lwa,
            lwa_single,
            clock,
            public_url,
            trusted_proxies: settings.trusted_proxies.clone(),
            initialize_limiter: SlidingWindow::new(5, 10_000),
            body_limit: settings.body_limit,
            key_cache: RwLock::new(HashMap::new()),
            sandbox: settings.sandbox,
            vendor: Vendor::new(settings.refresh_buffer),
            auditor,
            grantless_scopes: settings.grantless_scopes.clone(),
            refresher: Arc::new(Refresher::new(settings.refresher)),
            webhooks: Arc::new(crate::webhooks::Webhooks::new(
                settings.operator_webhook_url.clone(),
                settings.operator_webhook_secret.clone(),
                settings.webhook_allow_private,
            )),
            secrets: LiveSecrets::default(),
            proxy: crate::proxy::Proxy::new(settings.proxy),
            metrics: crate::metrics::Metrics::default(),
            lwa_calls,
            dashboard: crate::dashboard::Dashboard::default(),
            database: Arc::default(),
        }))
    }

    /// Now, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A public URL under the broker's base.
    pub fn public(&self, path: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path)
    }

    /// The app of this name.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The tenant's app of this kind: the one it names, else the only one of that kind.
    pub fn app_for(&self, tenant: &Tenant, kind: Api) -> Option<&AppConfig> {
        let named = match kind {
            Api::SpApi => tenant.sp_app.as_deref(),
            Api::Ads => tenant.ads_app.as_deref(),
        };
        match named {
            Some(name) => self.app(name).filter(|a| a.kind == kind),
            None => {
                let mut of_kind = self.apps.iter().filter(|a| a.kind == kind);
                let first = of_kind.next();
                if of_kind.next().is_some() { None } else { first }
            }
        }
    }

    /// The redirect URI registered at Amazon for this app.
    pub fn redirect_uri(&self, app: &AppConfig) -> String {
        app.redirect_uri
            .clone()
            .unwrap_or_else(|| self.public("/auth/redirect"))
    }

    /// Every path Amazon may call back on: `/auth/redirect` and each app's own path.
    pub fn callback_paths(&self) -> Vec<String> {
        let mut paths = vec!["/auth/redirect".to_owned()];
        for app in &self.apps {
            if let Some(path) = app
                .redirect_uri
                .as_deref()
                .and_then(|u| Url::parse(u).ok())
                .map(|u| u.path().to_owned())
                && !paths.contains(&path)
                && path.starts_with('/')
                && path.len() > 1
            {
                paths.push(path);
            }
        }
        paths
    }

    /// The LWA host for an app's token calls in a region (SP-API: always `api.amazon.com`).
    pub fn token_host(&self, app: &AppConfig, region: Region) -> &'static str {
        region.token_host(app.kind)
    }

    /// An API key and its tenant, from the cache when read in the last [`KEY_CACHE_MS`]. Once a
    /// read has found the database unreachable, and until it answers again, the key as read
    /// last (up to [`KEY_STALE_MAX_MS`] ago) is answered at once, so what is held in memory is
    /// still served.
    pub async fn api_key(&self, key_id: &str) -> Result<Option<CachedKey>, StoreError> {
        let now = self.now_ms();
        let cached = self.key_cache.read().get(key_id).cloned();
        let stale = match cached {
            Some(hit) if (0..KEY_CACHE_MS).contains(&(now - hit.fetched_ms)) => return Ok(Some(hit)),
            Some(hit) if (0..KEY_STALE_MAX_MS).contains(&(now - hit.fetched_ms)) => Some(hit),
            _ => None,
        };
        if let Some(hit) = &stale
            && self.database.is_down()
        {
            self.database.probe(&self.store);
            return Ok(Some(hit.clone()));
        }
        let read = async {
            let Some(key) = self.store.api_key(key_id).await? else {
                return Ok(None);
            };
            let tenant = self.store.tenant(&key.tenant_id).await?;
            Ok::<_, StoreError>(tenant.map(|tenant| (key, tenant)))
        };
        let (key, tenant) = match read.await {
            Ok(Some(found)) => {
                self.database.mark_up();
                found
            }
            Ok(None) => {
                self.database.mark_up();
                return Ok(None);
            }
            // This request waited the pool's timeout already: it fails (503), and the next
            // ones are answered from the cache at once.
            Err(e) => {
                self.database.mark_down(&e);
                return Err(e);
            }
        };
        // Keep the write time across cache refreshes, so a key's use is written once a minute.
        let touched = self
            .key_cache
            .read()
            .get(key_id)
            .map(|c| c.touched_ms.load(Ordering::Relaxed))
            .unwrap_or(0)
            .max(key.last_used_at_ms.unwrap_or(0));
        let secret_digest = hex::decode(&key.secret_hash)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        let entry = CachedKey {
            tenant: Arc::new(tenant),
            secret_digest,
            key: Arc::new(key),
            fetched_ms: now,
            touched_ms: Arc::new(AtomicI64::new(touched)),
        };
        let mut cache = self.key_cache.write();
        if cache.len() > 10_000 {
            cache.retain(|_, c| now - c.fetched_ms < KEY_CACHE_MS);
        }
        cache.insert(key_id.to_owned(), entry.clone());
        Ok(Some(entry))
    }

    /// Drops a key from the cache (after a revocation, here or in another process).
    pub fn forget_key(&self, key_id: &str) {
        self.key_cache.write().remove(key_id);
    }

    /// Drops every cached key of a tenant (the tenant changed, here or in another process).
    pub fn forget_tenant_keys(&self, tenant_id: &str) {
        self.key_cache.write().retain(|_, c| c.tenant.id != tenant_id);
    }

    /// Records an API key's use, at most once a minute per key, without waiting for the write.
    pub async fn touch_key(&self, key: &CachedKey) {
        let now = self.now_ms();
        let last = key.touched_ms.load(Ordering::Relaxed);
        if now - last < 60_000
            || key
                .touched_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Written aside, so a slow or unreachable database never holds up the request.
        let (store, key_id) = (self.store.clone(), key.key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&key_id, now).await {
                tracing::warn!(error = %e, "could not record an API key's last use");
            }
        });
    }
}

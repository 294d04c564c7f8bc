//! Token vending: the in-memory caches of access tokens (per connection), grantless tokens (per
//! app and scope set) and Restricted Data Tokens (per connection and canonical resource set),
//! each refreshed through a [`Flight`] so that any number of concurrent callers cost Amazon one
//! call, and a slow refresh of one entry never delays another.
//!
//! **Invariant:** a refreshed access token is written to the database before any caller gets
//! it; after a restart a still-fresh token in the database is used without calling Amazon.
//!
//! **Invariant:** a connection sealed under a tenant-held secret is served only to a caller that
//! presents that secret. The cache keeps a tag of the secret that opened the token (SHA-256 of
//! the connection id and the secret), compared in constant time.

pub mod flight;
pub mod lwa_compat;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lwa::restricted::{self, RestrictedResource};
use lwa::{AccessToken, Api, LwaError, RefreshToken, Region, TokenError};
use lwa_store::{Connection, RefreshSchedule, TokenUpdate};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sealing::{TokenSecret, UnsealError};
use crate::state::AppState;
use flight::Flight;

/// How long a connection's cached status is trusted before the database is read again. A
/// disconnect or re-authorization made by another process shows within a second, through
/// [`crate::invalidations`]; this only bounds the rare race that poller cannot see (a read
/// just before a change filling the cache just after its poll), and an outage of the poller.
/// Each cached connection costs one background read per this time: 10,000 connections, 33
/// reads a second.
pub const REVALIDATE_MS: i64 = 300_000;
/// RDTs are handed out until 60 s before they expire.
pub const RDT_MARGIN_MS: i64 = 60_000;
/// A token kept after a failed refresh is still handed out while it has this long left.
pub const STALE_GRACE_MS: i64 = 60_000;
/// The Tokens API allows 1 request a second, burst 10, per seller and app (AMAZON.md §3.5).
const RDT_RATE_PER_S: f64 = 1.0;
const RDT_BURST: f64 = 10.0;
/// How long an RDT request waits for the Tokens API's rate before answering 429.
const RDT_RATE_WAIT: Duration = Duration::from_secs(2);

/// Why a token could not be handed out. Cloneable: one refresh's failure is every waiter's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VendError {
    /// Unknown, or another tenant's.
    NotFound,
    /// The tenant-held secret is missing or wrong.
    Forbidden,
    /// LWA refused the refresh token: the seller must authorize again.
    NeedsReauth,
    /// The tenant disconnected it.
    Disconnected,
    /// LWA (or the Tokens API) failed or throttled; try again.
    Unavailable { message: String, retry_after_s: u64 },
    /// Amazon refused the app's configuration (credentials, scope, role).
    Configuration(String),
    /// The caller asked for something Amazon refused (an RDT for a path it does not allow …).
    Rejected { status: u16, message: String },
    /// Over the Tokens API's rate for this connection.
    RateLimited { retry_after_s: u64 },
    /// Bad input.
    BadRequest { code: &'static str, message: String },
    /// The database failed.
    Store(String),
    /// A bug or a broken row.
    Internal(String),
}

impl VendError {
    /// How long this failure keeps answering new callers before Amazon is asked again, so a
    /// failing or throttling Amazon is not called on every request.
    pub fn hold_ms(&self) -> i64 {
        match self {
            VendError::Unavailable { retry_after_s, .. } | VendError::RateLimited { retry_after_s } => {
                *retry_after_s as i64 * 1000
            }
            VendError::Configuration(_) => 30_000,
            VendError::Store(_) => 1_000,
            _ => 0,
        }
    }
}

impl From<lwa_store::StoreError> for VendError {
    fn from(e: lwa_store::StoreError) -> Self {
        VendError::Store(e.to_string())
    }
}

/// A cached token and when it expires.
#[derive(Debug)]
pub struct CachedToken {
    pub token: AccessToken,
    pub expires_at_ms: i64,
    /// `expires_at_ms` in RFC 3339, formatted once.
    pub expires_at: Box<str>,
    /// Tag of the tenant-held secret that opened it (`None`: no tenant layer).
    secret_tag: Option<[u8; 32]>,
    /// The token goes into JSON as it is (see [`json_plain`]).
    json_plain: bool,
}

/// Whether `text` goes into a JSON string as it is: no quote, backslash or control character,
/// the only characters JSON (and `serde_json`) escapes.
fn json_plain(text: &str) -> bool {
    !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

impl CachedToken {
    fn new(token: AccessToken, expires_at_ms: i64, secret_tag: Option<[u8; 32]>) -> Arc<CachedToken> {
        let json_plain = json_plain(token.expose());
        Arc::new(CachedToken {
            token,
            expires_at_ms,
            expires_at: crate::time::rfc3339(expires_at_ms).into(),
            secret_tag,
            json_plain,
        })
    }

    /// Whole seconds left at `now_ms` (never negative).
    pub fn expires_in(&self, now_ms: i64) -> i64 {
        ((self.expires_at_ms - now_ms) / 1000).max(0)
    }

    /// Whether `tag` (of the secret the caller presented) may have this token.
    fn allows(&self, tag: Option<&[u8; 32]>) -> bool {
        match (&self.secret_tag, tag) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => bool::from(mine.ct_eq(theirs)),
            (Some(_), None) => false,
        }
    }
}

/// What the cache remembers about a connection (no token).
#[derive(Debug, Clone)]
struct ConnMeta {
    tenant_id: Arc<str>,
    app: Arc<str>,
    api: Api,
    region: Region,
    status: Status,
    tenant_secret: bool,
    checked_at_ms: i64,
    /// Ads profiles (`None` for SP-API connections and Ads ones without profiles).
    profiles: Option<Arc<[AdsProfile]>>,
}

/// One Ads profile of a connection, as the proxy checks `Amazon-Advertising-API-Scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsProfile {
    /// The profile id, as digits.
    pub id: Box<str>,
    /// The region whose Ads host serves it.
    pub region: Option<Region>,
}

/// What the proxy needs to know of a connection besides its token.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    pub app: Arc<str>,
    pub api: Api,
    pub region: Region,
    pub profiles: Option<Arc<[AdsProfile]>>,
}

/// The profiles of a connection's stored `profiles` JSON (`profileId` as number or string,
/// `region` as the broker recorded it, else from `countryCode`).
fn parse_profiles(text: &str) -> Option<Arc<[AdsProfile]>> {
    let serde_json::Value::Array(items) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let profiles: Vec<AdsProfile> = items
        .iter()
        .filter_map(|p| {
            let id = match p.get("profileId")? {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                _ => return None,
            };
            let region = p
                .get("region")
                .and_then(|r| r.as_str())
                .or_else(|| p.get("countryCode").and_then(|c| c.as_str()))
                .and_then(|r| Region::parse(r).ok());
            Some(AdsProfile {
                id: id.into(),
                region,
            })
        })
        .collect();
    (!profiles.is_empty()).then(|| profiles.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    NeedsReauth,
    Disconnected,
}

impl Status {
    fn of(status: &str) -> Status {
        match status {
            "active" => Status::Active,
            "needs_reauth" => Status::NeedsReauth,
            _ => Status::Disconnected,
        }
    }
}

#[derive(Debug)]
struct ConnEntry {
    meta: RwLock<ConnMeta>,
    flight: Arc<Flight<CachedToken>>,
    /// When a refresh forced by Amazon refusing the token last finished (ms; 0: never).
    forced_at_ms: std::sync::atomic::AtomicI64,
}

/// A connection's token is force-refreshed at most once in this time while Amazon keeps
/// refusing the new one too (a wrong path or a missing role reads like a token problem).
pub const FORCED_REFRESH_COOLDOWN_MS: i64 = 60_000;

impl ConnMeta {
    fn of(row: &Connection, now: i64, names: &Names) -> Result<ConnMeta, VendError> {
        Ok(ConnMeta {
            tenant_id: names.intern(&row.tenant_id),
            app: names.intern(&row.app),
            api: row
                .api
                .parse::<Api>()
                .map_err(|e| VendError::Internal(format!("connection {}: {e}", row.id)))?,
            region: Region::parse(&row.region)
                .map_err(|e| VendError::Internal(format!("connection {}: {e}", row.id)))?,
            status: Status::of(&row.status),
            tenant_secret: row.tenant_secret,
            profiles: parse_profiles(&row.profiles),
            // Spread over time, so entries filled together are not all re-read together.
            checked_at_ms: now - rand::random_range(0..REVALIDATE_MS / 3),
        })
    }
}

/// A map split into shards, each behind its own lock, so that readers on different keys do
/// not contend.
#[derive(Debug)]
struct Shards<V> {
    shards: Vec<RwLock<HashMap<Box<str>, Arc<V>>>>,
}

impl<V> Shards<V> {
    fn new(n: usize) -> Self {
        Shards {
            shards: (0..n).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<HashMap<Box<str>, Arc<V>>> {
        // FNV-1a only picks the shard; the map inside keeps its keyed hash.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    fn get(&self, key: &str) -> Option<Arc<V>> {
        self.shard(key).read().get(key).cloned()
    }

    fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> Arc<V> {
        let mut shard = self.shard(key).write();
        shard
            .entry(key.into())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    fn remove(&self, key: &str) {
        self.shard(key).write().remove(key);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    fn retain(&self, keep: impl Fn(&V) -> bool) {
        for shard in &self.shards {
            shard.write().retain(|_, v| keep(v));
        }
    }
}

/// Tenant ids and app names shared by every cache entry (a few distinct values for 100,000
/// entries).
#[derive(Debug, Default)]
struct Names(Mutex<std::collections::HashSet<Arc<str>>>);

impl Names {
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.0.lock();
        if let Some(known) = names.get(name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        names.insert(name.clone());
        name
    }
}

/// A token bucket on the broker's clock.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// The caches; one per server process.
#[derive(Debug)]
pub struct Vendor {
    connections: Shards<ConnEntry>,
    grantless: Shards<Flight<CachedToken>>,
    rdts: Shards<Flight<CachedToken>>,
    rdt_buckets: Mutex<HashMap<String, Bucket>>,
    names: Names,
    buffer_ms: i64,
    rdts_minted: std::sync::atomic::AtomicU64,
    /// Refresh leases this process's background refresher holds through its claims, by
    /// connection, with their end (see [`OwnClaim`]).
    claims: Mutex<HashMap<Box<str>, i64>>,
}

/// A connection's refresh lease that this process's background refresher took with its claim,
/// noted in this process until the refresher is done with it (the guard's drop). A vend here
/// that finds the lease taken refreshes under it rather than waiting for it to run out: the
/// refresher joins the same single flight, so the connection is still refreshed once — and a
/// vend whose refresh began just before the claim does not wait on its own process's lease.
#[derive(Debug)]
pub struct OwnClaim {
    state: AppState,
    id: Box<str>,
}

impl OwnClaim {
    /// Notes that the refresher holds `id`'s lease until `until_ms`.
    pub fn new(state: &AppState, id: &str, until_ms: i64) -> OwnClaim {
        state.vendor.claims.lock().insert(id.into(), until_ms);
        OwnClaim {
            state: state.clone(),
            id: id.into(),
        }
    }
}

impl Drop for OwnClaim {
    fn drop(&mut self) {
        self.state.vendor.claims.lock().remove(&self.id);
    }
}

/// An RDT request, canonical.
#[derive(Debug, Clone)]
pub struct RdtRequest {
    pub resources: Vec<RestrictedResource>,
    pub target_application: Option<String>,
}

impl RdtRequest {
    /// The audit trail's detail: `GET /orders/v0/orders/{orderId} [buyerInfo]; …`.
    pub fn audit_detail(&self) -> String {
        self.resources
            .iter()
            .map(|r| {
                let mut text = format!("{} {}", r.method, r.path);
                if !r.data_elements.is_empty() {
                    text.push_str(&format!(" [{}]", r.data_elements.join(",")));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Vendor {
    /// Empty caches; refresh once a token has less than `buffer` left.
    pub fn new(buffer: Duration) -> Vendor {
        Vendor {
            connections: Shards::new(64),
            grantless: Shards::new(4),
            rdts: Shards::new(16),
            rdt_buckets: Mutex::new(HashMap::new()),
            names: Names::default(),
            buffer_ms: buffer.as_millis() as i64,
            rdts_minted: std::sync::atomic::AtomicU64::new(0),
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this process's refresher holds `id`'s refresh lease for a moment more.
    fn claimed_here(&self, id: &str, now_ms: i64) -> bool {
        self.claims
            .lock()
            .get(id)
            .is_some_and(|until| *until > now_ms + 2_000)
    }

    /// The refresh buffer.
    pub fn buffer_ms(&self) -> i64 {
        self.buffer_ms
    }

    /// Restricted Data Tokens this process has minted (asked Amazon for).
    pub fn rdts_minted(&self) -> u64 {
        self.rdts_minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many connections are cached.
    pub fn cached_connections(&self) -> usize {
        self.connections.len()
    }

    /// Forgets what is cached about a connection (after a disconnect, a re-authorization, an
    /// import), so the next vend reads the database.
    pub fn forget(&self, connection_id: &str) {
        self.connections.remove(connection_id);
    }

    /// The connection's access token, refreshed (once, for every concurrent caller) when it has
    /// less than the buffer left. With `allow_stale`, a failed refresh still answers with the
    /// current token while it has more than [`STALE_GRACE_MS`] left.
    pub async fn access_token(
        &self,
        state: &AppState,
        tenant_id: &str,
        id: &str,
        secret: Option<&TokenSecret>,
        allow_stale: bool,
    ) -> Result<Arc<CachedToken>, VendError> {
        let (token, _) = self
            .access_token_meta(state, tenant_id, id, secret, allow_stale)
            .await?;
        Ok(token)
    }

    async fn access_token_meta(
        &self,
        state: &AppState,
        tenant_id: &str,
        id: &str,
        secret: Option<&TokenSecret>,
        allow_stale: bool,
    ) -> Result<(Arc<CachedToken>, ConnMeta), VendError> {
        let now = state.now_ms();
        let entry = match self.connections.get(id) {
            Some(entry) => entry,
            None => {
                // Only connections the caller owns enter the cache, so unknown ids cannot fill it.
                let row = owned_row(state, tenant_id, id).await?;
                let fresh_entry = entry_from_row(state, &row, now)?;
                self.connections.get_or_insert_with(id, || fresh_entry)
            }
        };
        let meta = entry.meta.read().clone();
        if &*meta.tenant_id != tenant_id {
            return Err(VendError::NotFound);
        }
        if now - meta.checked_at_ms > REVALIDATE_MS {
            // Re-read the row in the background (one request starts it); this request is
            // served from the cache meanwhile.
            let claimed = {
                let mut m = entry.meta.write();
                let due = now - m.checked_at_ms > REVALIDATE_MS;
                if due {
                    m.checked_at_ms = now;
                }
                due
            };
            if claimed {
                let (task_state, task_entry) = (state.clone(), entry.clone());
                let (task_tenant, task_id, cached) = (tenant_id.to_owned(), id.to_owned(), meta.clone());
                tokio::spawn(async move {
                    let vendor = &task_state.vendor;
                    let _ = vendor
                        .revalidate(&task_state, &task_entry, &task_tenant, &task_id, cached, now)
                        .await;
                });
            }
        }
        match meta.status {
            Status::Active => {}
            Status::NeedsReauth => return Err(VendError::NeedsReauth),
            Status::Disconnected => return Err(VendError::Disconnected),
        }
        // A secret sent for a connection without a tenant layer is ignored, never used to seal.
        let secret = if meta.tenant_secret { secret } else { None };
        let tag = match (meta.tenant_secret, secret) {
            (false, _) => None,
            (true, None) => return Err(VendError::Forbidden),
            (true, Some(secret)) => Some(secret_tag(id, secret)),
        };
        let buffer = self.buffer_ms;
        let current = entry.flight.current();
        if let Some(token) = &current {
            if !token.allows(tag.as_ref()) {
                return Err(VendError::Forbidden);
            }
            if token.expires_at_ms - now > buffer {
                return Ok((token.clone(), meta));
            }
        }
        if meta.tenant_secret && current.is_none() {
            // Check the secret against the database before joining a refresh, so a wrong secret
            // never becomes the failure every waiter shares.
            check_secret(state, tenant_id, id, secret).await?;
        }
        let (fresh_clock, hold_clock) = (state.clock.clone(), state.clock.clone());
        let task_state = state.clone();
        let (task_id, task_secret) = (id.to_owned(), secret.cloned());
        let result = entry
            .flight
            .get(
                move || hold_clock.now_ms(),
                move |t| t.expires_at_ms - fresh_clock.now_ms() > buffer,
                move || refresh_connection(task_state, task_id, task_secret, buffer, false, None),
            )
            .await;
        match result {
            Ok(token) if token.allows(tag.as_ref()) => Ok((token, meta)),
            Ok(_) => Err(VendError::Forbidden),
            Err(VendError::NeedsReauth) => {
                entry.meta.write().status = Status::NeedsReauth;
                Err(VendError::NeedsReauth)
            }
            Err(VendError::Disconnected) => {
                entry.meta.write().status = Status::Disconnected;
                Err(VendError::Disconnected)
            }
            Err(e @ VendError::Unavailable { .. }) => match current {
                // Amazon is failing, but the token we have still works for a while: use it.
                Some(token)
                    if allow_stale
                        && token.allows(tag.as_ref())
                        && token.expires_at_ms - state.now_ms() > STALE_GRACE_MS =>
                {
                    Ok((token, meta))
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The connection's access token and what the proxy needs to know of it, checked like a
    /// vend (ownership, status, the tenant's secret).
    pub async fn for_proxy(
        &self,
        state: &AppState,
        tenant_id: &str,
        id: &str,
        secret: Option<&TokenSecret>,
    ) -> Result<(Arc<CachedToken>, ConnectionView), VendError> {
        let (token, meta) = self.access_token_meta(state, tenant_id, id, secret, true).await?;
        Ok((
            token,
            ConnectionView {
                app: meta.app,
                api: meta.api,
                region: meta.region,
                profiles: meta.profiles,
            },
        ))
    }

    /// Refreshes the connection because Amazon refused `rejected`, unless the cached token is
    /// already another one (a concurrent caller's forced refresh, or a scheduled one): then that
    /// one is the answer. Concurrent callers share one refresh. `None` when the refused token is
    /// the one a forced refresh gave less than [`FORCED_REFRESH_COOLDOWN_MS`] ago: refreshing
    /// again would not help, and Amazon's answer stands.
    pub async fn force_refresh(
        &self,
        state: &AppState,
        tenant_id: &str,
        id: &str,
        secret: Option<&TokenSecret>,
        rejected: &Arc<CachedToken>,
    ) -> Result<Option<Arc<CachedToken>>, VendError> {
        let entry = match self.connections.get(id) {
            Some(entry) => entry,
            None => {
                // Forgotten since the call (a revalidation): enter it again the usual way.
                self.access_token_meta(state, tenant_id, id, secret, true).await?;
                self.connections.get(id).ok_or(VendError::NotFound)?
            }
        };
        if &*entry.meta.read().tenant_id != tenant_id {
            return Err(VendError::NotFound);
        }
        let secret = if entry.meta.read().tenant_secret {
            secret
        } else {
            None
        };
        let tag = secret.map(|s| secret_tag(id, s));
        let rejected_digest = token_digest(rejected);
        let forced_at = entry.forced_at_ms.load(std::sync::atomic::Ordering::Acquire);
        if state.now_ms() - forced_at < FORCED_REFRESH_COOLDOWN_MS
            && entry
                .flight
                .current()
                .is_some_and(|t| token_digest(&t) == rejected_digest)
        {
            return Ok(None);
        }
        let (fresh_clock, hold_clock) = (state.clock.clone(), state.clock.clone());
        let task_state = state.clone();
        let (task_id, task_secret, buffer) = (id.to_owned(), secret.cloned(), self.buffer_ms);
        let result = entry
            .flight
            .get(
                move || hold_clock.now_ms(),
                // Another token than the refused one (by value: the same token may sit in a new
                // entry) is the answer, when it is still valid.
                move |t| t.expires_at_ms > fresh_clock.now_ms() && token_digest(t) != rejected_digest,
                move || {
                    refresh_connection_inner(
                        task_state,
                        task_id,
                        task_secret,
                        buffer,
                        false,
                        None,
                        Some(rejected_digest),
                    )
                },
            )
            .await;
        match result {
            Ok(token) if token.allows(tag.as_ref()) => {
                entry
                    .forced_at_ms
                    .store(state.now_ms(), std::sync::atomic::Ordering::Release);
                Ok(Some(token))
            }
            Ok(_) => Err(VendError::Forbidden),
            Err(e) => {
                match e {
                    VendError::NeedsReauth => entry.meta.write().status = Status::NeedsReauth,
                    VendError::Disconnected => entry.meta.write().status = Status::Disconnected,
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// Forgets a cached RDT (Amazon refused it).
    pub fn forget_rdt(&self, id: &str, request: &RdtRequest) {
        self.rdts.remove(&rdt_key(id, request));
    }

    /// The background refresher's step for one due connection: joins the refresh a vend may
    /// already have in flight (never a second one), else refreshes it — or, when another process
    /// already stored a fresh token, only reschedules it. `budget` is awaited before the LWA
    /// call is joined or started (outside the flight, so a vend never waits for the
    /// refresher's budget); a token found fresh costs no budget.
    /// LWA call. Answers whether this call refreshed it, and how.
    pub async fn refresh_due(
        &self,
        state: &AppState,
        id: &str,
        claimed: Option<(Connection, RefreshSchedule)>,
        budget: Option<Budget>,
    ) -> Result<Arc<CachedToken>, VendError> {
        let now = state.now_ms();
        let from_claim = claimed.is_some();
        // The claim's copy of the row (or one read) serves the cache entry and the refresh.
        let (row, schedule) = match claimed {
            Some(claimed) => claimed,
            None => state
                .store
                .connection_with_schedule(id)
                .await?
                .ok_or(VendError::NotFound)?,
        };
        if row.tenant_secret {
            // The broker cannot open it: refreshed on demand only.
            return Err(VendError::Forbidden);
        }
        let entry = match self.connections.get(id) {
            Some(entry) if !entry.meta.read().tenant_secret => entry,
            cached => {
                // Not cached, or cached with a tenant layer it no longer has (re-authorized
                // elsewhere).
                if cached.is_some() {
                    self.forget(id);
                }
                let fresh_entry = entry_from_row(state, &row, now)?;
                self.connections.get_or_insert_with(id, || fresh_entry)
            }
        };
        let buffer = self.buffer_ms;
        if let Some(token) = entry.flight.current().filter(|t| t.expires_at_ms - now > buffer) {
            state
                .store
                .set_next_refresh(id, next_refresh_at(now, token.expires_at_ms, buffer))
                .await?;
            return Ok(token);
        }
        if let Some(budget) = &budget {
            budget().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (fresh_clock, hold_clock) = (state.clock.clone(), state.clock.clone());
        let (task_state, task_id, task_ran) = (state.clone(), id.to_owned(), ran.clone());
        let result = entry
            .flight
            .get(
                move || hold_clock.now_ms(),
                move |t| t.expires_at_ms - fresh_clock.now_ms() > buffer,
                move || {
                    task_ran.store(true, std::sync::atomic::Ordering::Relaxed);
                    refresh_connection(task_state, task_id, None, buffer, true, Some((row, schedule)))
                },
            )
            .await;
        match &result {
            Ok(token) if !ran.load(std::sync::atomic::Ordering::Relaxed) => {
                // Fresh in this process's cache (a vend refreshed it, or it was stored fresh):
                // the database's schedule may still say "now".
                state
                    .store
                    .set_next_refresh(id, next_refresh_at(state.now_ms(), token.expires_at_ms, buffer))
                    .await?;
            }
            Err(VendError::NeedsReauth) => entry.meta.write().status = Status::NeedsReauth,
            Err(VendError::Disconnected) => entry.meta.write().status = Status::Disconnected,
            _ => {}
        }
        if from_claim && result.is_err() && !ran.load(std::sync::atomic::Ordering::Relaxed) {
            // The refresh that failed was a vend's under this claim, which left the lease to the
            // claim: nothing here acts on the claim any more, so the next try need not wait for
            // the lease to run out.
            let _ = state.store.release_refresh_lease(id).await;
        }
        result
    }

    async fn revalidate(
        &self,
        state: &AppState,
        entry: &ConnEntry,
        tenant_id: &str,
        id: &str,
        cached: ConnMeta,
        now: i64,
    ) -> Result<ConnMeta, VendError> {
        let row = match owned_row(state, tenant_id, id).await {
            Ok(row) => row,
            Err(VendError::NotFound) => {
                self.forget(id);
                return Err(VendError::NotFound);
            }
            Err(e) => {
                // The database is down: keep serving what is cached, and look again in a while.
                tracing::warn!(connection = %id, error = ?e, "could not re-read a connection; using the cache");
                let mut meta = cached;
                meta.checked_at_ms = now - REVALIDATE_MS + 5_000;
                *entry.meta.write() = meta.clone();
                return Ok(meta);
            }
        };
        let meta = ConnMeta::of(&row, now, &self.names)?;
        if entry
            .flight
            .current()
            .is_some_and(|t| Some(t.expires_at_ms) != row.access_expires_at_ms)
            || meta.tenant_secret != cached.tenant_secret
        {
            // Another process refreshed or re-authorized it: read the database's token next.
            entry.flight.clear();
        }
        *entry.meta.write() = meta.clone();
        Ok(meta)
    }

    /// A grantless token of the tenant's SP-API app for these scopes (already checked against
    /// the allowed list), cached per app and scope set.
    pub async fn grantless(
        &self,
        state: &AppState,
        app_name: &str,
        scopes: &[String],
    ) -> Result<Arc<CachedToken>, VendError> {
        let app = state
            .app(app_name)
            .cloned()
            .ok_or_else(|| VendError::Internal(format!("app {app_name:?} is not configured")))?;
        let key = format!("{app_name}\n{}", scopes.join(" "));
        let flight = self.grantless.get_or_insert_with(&key, Flight::default);
        let buffer = self.buffer_ms;
        let (fresh_clock, hold_clock) = (state.clock.clone(), state.clock.clone());
        let task_state = state.clone();
        let scopes = scopes.to_vec();
        flight
            .get(
                move || hold_clock.now_ms(),
                move |t| t.expires_at_ms - fresh_clock.now_ms() > buffer,
                move || async move {
                    let started = task_state.now_ms();
                    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                    let credentials = task_state.credentials(&app).await;
                    let tokens = task_state.lwa.client_credentials(&credentials, &scopes).await;
                    let tokens = tokens.map_err(lwa_failure)?;
                    Ok(CachedToken::new(
                        tokens.access_token,
                        started + tokens.expires_in as i64 * 1000,
                        None,
                    ))
                },
            )
            .await
    }

    /// A Restricted Data Token for the connection and the canonical resource set, cached until
    /// 60 s before it expires; minted within the Tokens API's rate.
    pub async fn restricted_data_token(
        &self,
        state: &AppState,
        tenant_id: &str,
        id: &str,
        secret: Option<&TokenSecret>,
        request: RdtRequest,
    ) -> Result<Arc<CachedToken>, VendError> {
        // Ownership, status and the tenant's secret, checked the way a vend checks them.
        let (_, meta) = self
            .access_token_meta(state, tenant_id, id, secret, false)
            .await?;
        if meta.api != Api::SpApi {
            return Err(VendError::BadRequest {
                code: "not_sp_api",
                message: "Restricted Data Tokens exist only for SP-API connections".into(),
            });
        }
        let app = state
            .app(&meta.app)
            .cloned()
            .ok_or_else(|| VendError::Configuration(format!("app {:?} is not configured", meta.app)))?;
        let region = meta.region;
        let key = rdt_key(id, &request);
        if self.rdts.len() > 50_000 {
            let now = state.now_ms();
            self.rdts
                .retain(|f| f.current().is_some_and(|t| t.expires_at_ms > now));
        }
        let flight = self.rdts.get_or_insert_with(&key, Flight::default);
        let (fresh_clock, hold_clock) = (state.clock.clone(), state.clock.clone());
        let task_state = state.clone();
        let (tenant_id, id, secret) = (tenant_id.to_owned(), id.to_owned(), secret.cloned());
        let result = flight
            .get(
                move || hold_clock.now_ms(),
                move |t| t.expires_at_ms - fresh_clock.now_ms() > RDT_MARGIN_MS,
                move || async move {
                    let vendor = &task_state.vendor;
                    vendor.rdt_rate(&task_state, &id).await?;
                    let access = vendor
                        .access_token(&task_state, &tenant_id, &id, secret.as_ref(), false)
                        .await?;
                    let host = if app.sandbox {
                        region.sp_api_sandbox_host()
                    } else {
                        region.sp_api_host()
                    };
                    let url = task_state.endpoints.url(host, restricted::RDT_PATH);
                    let started = task_state.now_ms();
                    let minted = restricted::create_restricted_data_token(
                        task_state.lwa.http(),
                        &url,
                        &access.token,
                        lwa::DEFAULT_USER_AGENT,
                        &request.resources,
                        request.target_application.as_deref(),
                    )
                    .await
                    .map_err(rdt_failure)?;
                    vendor
                        .rdts_minted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(CachedToken::new(
                        minted.token,
                        started + minted.expires_in as i64 * 1000,
                        None,
                    ))
                },
            )
            .await;
        if result.is_err() && flight.failed_empty() {
            // Nothing minted: keep no entry for it (failed requests must not fill memory).
            self.rdts.remove(&key);
        }
        result
    }

    /// Waits (up to 2 s) for the Tokens API's rate for this connection, else 429.
    async fn rdt_rate(&self, state: &AppState, id: &str) -> Result<(), VendError> {
        let deadline = tokio::time::Instant::now() + RDT_RATE_WAIT;
        loop {
            let wait_ms = {
                let now = state.now_ms();
                let mut buckets = self.rdt_buckets.lock();
                if buckets.len() > 100_000 {
                    buckets.retain(|_, b| now - b.at_ms < 60_000);
                }
                let bucket = buckets.entry(id.to_owned()).or_insert(Bucket {
                    tokens: RDT_BURST,
                    at_ms: now,
                });
                let elapsed_s = (now - bucket.at_ms).max(0) as f64 / 1000.0;
                bucket.tokens = (bucket.tokens + elapsed_s * RDT_RATE_PER_S).min(RDT_BURST);
                bucket.at_ms = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return Ok(());
                }
                ((1.0 - bucket.tokens) / RDT_RATE_PER_S * 1000.0).ceil() as u64
            };
            let wake = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
            if wake > deadline {
                return Err(VendError::RateLimited {
                    retry_after_s: wait_ms.div_ceil(1000).max(1),
                });
            }
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// SHA-256 of a token's value.
fn token_digest(token: &CachedToken) -> [u8; 32] {
    Sha256::digest(token.token.expose().as_bytes()).into()
}

/// The RDT cache's key: a hash, as a request may list 50 long paths.
fn rdt_key(id: &str, request: &RdtRequest) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(request.target_application.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(serde_json::to_vec(&request.resources).unwrap_or_default());
    hex::encode(h.finalize())
}

/// The caller's connection row, or `NotFound` (also for another tenant's).
async fn owned_row(state: &AppState, tenant_id: &str, id: &str) -> Result<Connection, VendError> {
    match state.store.connection(id).await? {
        Some(row) if row.tenant_id == tenant_id => Ok(row),
        _ => Err(VendError::NotFound),
    }
}

fn entry_from_row(state: &AppState, row: &Connection, now: i64) -> Result<ConnEntry, VendError> {
    // Without a tenant layer the database's token can be used at once (no LWA call after a
    // restart); with one it waits for a caller with the secret.
    let token = match (&row.access_token, row.access_expires_at_ms, row.tenant_secret) {
        (Some(sealed), Some(expires_at_ms), false) => state
            .sealer
            .open(&row.id, "access_token", sealed, None)
            .ok()
            .map(|plain| CachedToken::new(AccessToken::new(plain.as_str()), expires_at_ms, None)),
        _ => None,
    };
    Ok(ConnEntry {
        meta: RwLock::new(ConnMeta::of(row, now, &state.vendor.names)?),
        flight: Arc::new(Flight::with(token)),
        forced_at_ms: std::sync::atomic::AtomicI64::new(0),
    })
}

/// SHA-256 over a domain label, the connection id and the secret.
fn secret_tag(id: &str, secret: &TokenSecret) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lwa-broker secret tag\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(secret.expose().as_bytes());
    h.finalize().into()
}

/// Opens the sealed refresh token with the presented secret: `Forbidden` when it does not open.
async fn check_secret(
    state: &AppState,
    tenant_id: &str,
    id: &str,
    secret: Option<&TokenSecret>,
) -> Result<(), VendError> {
    let row = owned_row(state, tenant_id, id).await?;
    let sealed = row.refresh_token.as_deref().ok_or(VendError::Disconnected)?;
    match state.sealer.open(id, "refresh_token", sealed, secret) {
        Ok(_) => Ok(()),
        Err(UnsealError::TenantSecret) => Err(VendError::Forbidden),
        Err(e) => Err(VendError::Internal(format!("connection {id}: {e}"))),
    }
}

/// When the background refresher should next refresh a token that expires at `expires_at_ms`:
/// as it enters the buffer, plus up to [`SCHEDULE_JITTER_MS`] — so no connection is refreshed
/// sooner than `lifetime − buffer` after its last refresh, and each costs Amazon one call per
/// refresh period. An expired token is due at once. A token already inside the buffer when it
/// is scheduled (a restart, a migration, a token that lives less than the buffer) is spread
/// over the next three buffers, so that many of them do not reach Amazon in one burst; a vend
/// meanwhile still refreshes it on demand.
pub fn next_refresh_at(now_ms: i64, expires_at_ms: i64, buffer_ms: i64) -> i64 {
    let due = expires_at_ms - buffer_ms;
    if due > now_ms {
        due + rand::random_range(0..=SCHEDULE_JITTER_MS)
    } else if expires_at_ms <= now_ms {
        now_ms
    } else {
        now_ms + rand::random_range(1_000..=(3 * buffer_ms).max(1_000))
    }
}

/// The most a scheduled refresh is put off past the start of the buffer (spreads refreshes that
/// fell due together without changing a connection's period by more than 1%).
pub const SCHEDULE_JITTER_MS: i64 = 30_000;

/// The first backoff after a failed refresh; it doubles with each failure in a row.
pub const BACKOFF_BASE_MS: i64 = 10_000;
/// The longest backoff: a connection whose refreshes keep failing costs Amazon about 35
/// attempts a day.
pub const BACKOFF_CAP_MS: i64 = 3_600_000;

/// The wait before the next attempt after `failures` failed refreshes in a row: exponential,
/// capped, with jitter between 80% and all of it.
pub fn backoff_ms(failures: i64) -> i64 {
    let exponent = (failures - 1).clamp(0, 20) as u32;
    let full = BACKOFF_BASE_MS.saturating_mul(1 << exponent).min(BACKOFF_CAP_MS);
    (full as f64 * rand::random_range(0.8..=1.0)) as i64
}

/// Waits for the caller's turn in a budget of LWA calls (the background refresher's per-app
/// budget).
pub type Budget =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// The refresh of one connection, run once for all its waiting callers.
///
/// A connection in backoff (a failed refresh, here or in another process) is not refreshed
/// before its retry time: the caller gets `Unavailable` with the time left. After a first
/// failure the library's retries are not used either, so each backoff step costs one call;
/// nor in the `background` (the refresher schedules its own retries, and each call must fit
/// its budget).
async fn refresh_connection(
    state: AppState,
    id: String,
    secret: Option<TokenSecret>,
    buffer_ms: i64,
    background: bool,
    read: Option<(Connection, RefreshSchedule)>,
) -> Result<Arc<CachedToken>, VendError> {
    refresh_connection_inner(state, id, secret, buffer_ms, background, read, None).await
}

/// [`refresh_connection`]; with `rejected` (the SHA-256 of a token Amazon refused), a stored
/// token equal to it is not taken as fresh.
async fn refresh_connection_inner(
    state: AppState,
    id: String,
    secret: Option<TokenSecret>,
    buffer_ms: i64,
    background: bool,
    read: Option<(Connection, RefreshSchedule)>,
    rejected: Option<[u8; 32]>,
) -> Result<Arc<CachedToken>, VendError> {
    // The caller's read of the row when it has just made one, else ours.
    let (row, schedule) = match read {
        Some(read) => read,
        None => state
            .store
            .connection_with_schedule(&id)
            .await?
            .ok_or(VendError::NotFound)?,
    };
    match Status::of(&row.status) {
        Status::Active => {}
        Status::NeedsReauth => return Err(VendError::NeedsReauth),
        Status::Disconnected => return Err(VendError::Disconnected),
    }
    // The row decides whether there is a tenant layer: a secret is used only where one is.
    let secret = match (row.tenant_secret, secret) {
        (false, _) => None,
        (true, Some(secret)) => Some(secret),
        (true, None) => return Err(VendError::Forbidden),
    };
    let tag = secret.as_ref().map(|s| secret_tag(&id, s));
    let now = state.now_ms();
    let open = |field: &str, sealed: &str| match state.sealer.open(&id, field, sealed, secret.as_ref()) {
        Ok(plain) => Ok(plain),
        Err(UnsealError::TenantSecret) => Err(VendError::Forbidden),
        Err(e) => Err(VendError::Internal(format!("connection {id}: {e}"))),
    };
    // Another process, or this one before a restart, may have stored a fresh token already.
    if let (Some(sealed), Some(expires_at_ms)) = (&row.access_token, row.access_expires_at_ms)
        && expires_at_ms - now > buffer_ms
    {
        let plain = open("access_token", sealed)?;
        let refused = rejected.is_some_and(|r| r == <[u8; 32]>::from(Sha256::digest(plain.as_bytes())));
        if !refused {
            if !row.tenant_secret {
                state
                    .store
                    .set_next_refresh(&id, next_refresh_at(now, expires_at_ms, buffer_ms))
                    .await?;
            }
            return Ok(CachedToken::new(
                AccessToken::new(plain.as_str()),
                expires_at_ms,
                tag,
            ));
        }
    }
    if let Some(retry_at) = schedule.retry_at_ms.filter(|at| *at > now) {
        return Err(VendError::Unavailable {
            message: format!(
                "the last {} refreshes failed ({}); the next attempt is not before {}",
                schedule.refresh_failures,
                row.last_error.as_deref().unwrap_or("unknown error"),
                crate::time::rfc3339(retry_at)
            ),
            retry_after_s: ((retry_at - now) as u64).div_ceil(1000).max(1),
        });
    }
    // One refresh across every process and replica: the refresh lease in the database. The
    // background refresher's claim took it already (while it still has a moment to run) — for
    // this process, whether this is the refresher or a vend beside it (see `OwnClaim`).
    let claimed = background && schedule.refresh_lease_until_ms > now + 2_000;
    // A vend under the refresher's claim leaves the lease to the refresher, whose task for this
    // connection may still be waiting for its turn: released here, another replica could take
    // it and refresh, and then the refresher (acting on its claim) would refresh a second time.
    let under_refreshers_claim = !claimed && state.vendor.claimed_here(&id, now);
    let release_lease = || async {
        if !under_refreshers_claim {
            let _ = state.store.release_refresh_lease(&id).await;
        }
    };
    let leased = if claimed || under_refreshers_claim {
        true
    } else {
        state
            .store
            .take_refresh_lease(&id, now, now + lwa_store::REFRESH_LEASE_MS)
            .await?
    };
    if !leased {
        return await_other_refresh(&state, &id, secret, buffer_ms, background, rejected, row).await;
    }
    // Another replica may have refreshed and saved between our read and our lease (its save
    // ends its lease): read again under the lease, so the connection is not refreshed twice.
    // (The claim read the row in the statement that leased it.)
    let row = if claimed {
        row
    } else {
        let again = match state.store.connection_with_schedule(&id).await {
            Ok(Some(again)) => again,
            Ok(None) => {
                release_lease().await;
                return Err(VendError::NotFound);
            }
            Err(e) => {
                release_lease().await;
                return Err(e.into());
            }
        };
        if again.0.access_token != row.access_token || again.0.status != row.status {
            release_lease().await;
            return Box::pin(refresh_connection_inner(
                state.clone(),
                id,
                secret,
                buffer_ms,
                background,
                Some(again),
                rejected,
            ))
            .await;
        }
        again.0
    };
    let outcome: Result<Arc<CachedToken>, VendError> = async {
        let sealed_refresh = row.refresh_token.as_deref().ok_or(VendError::Disconnected)?;
        let started_from = match open("refresh_token", sealed_refresh) {
            Ok(plain) => plain,
            Err(e) => return Err(note_failure(&state, &row, e, 0).await),
        };
        let refresh_token = RefreshToken::new(started_from.as_str());
        let Some(app) = state.app(&row.app).cloned() else {
            let failure = VendError::Configuration(format!("app {:?} is not configured", row.app));
            return Err(note_failure(&state, &row, failure, 0).await);
        };
        let region = match Region::parse(&row.region) {
            Ok(region) => region,
            Err(e) => return Err(note_failure(&state, &row, VendError::Internal(e.to_string()), 0).await),
        };
        let lwa = if background || schedule.refresh_failures > 0 {
            &state.lwa_single
        } else {
            &state.lwa
        };
        let started = state.now_ms();
        let result = lwa
            .refresh(
                state.token_host(&app, region),
                &state.credentials(&app).await,
                &refresh_token,
            )
            .await;
        let tokens = match result {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::info!(connection = %id, error = %error, "refresh failed");
                if matches!(error, LwaError::Reauthorize { .. }) {
                    let message =
                        "LWA refused the refresh token (invalid_grant): the seller must authorize again";
                    let recorded = state
                        .store
                        .record_refresh_error(
                            &id,
                            Some("needs_reauth"),
                            message,
                            state.now_ms(),
                            &crate::webhooks::refresh_error_events(
                                &state,
                                &row,
                                Some("needs_reauth"),
                                message,
                            ),
                            Some(row.authorized_at_ms),
                        )
                        .await;
                    return match recorded {
                        Ok(true) => Err(VendError::NeedsReauth),
                        // Authorized again (or disconnected) meanwhile: the refused token is gone.
                        Ok(false) => match state.store.connection(&id).await? {
                            Some(r) if Status::of(&r.status) == Status::Active => {
                                Err(VendError::Unavailable {
                                    message: "the connection was re-authorized during the refresh; ask again"
                                        .into(),
                                    retry_after_s: 0,
                                })
                            }
                            Some(r) if Status::of(&r.status) == Status::NeedsReauth => {
                                Err(VendError::NeedsReauth)
                            }
                            _ => Err(VendError::Disconnected),
                        },
                        Err(e) => {
                            // Not stored: keep it from being asked again every second meanwhile.
                            tracing::warn!(connection = %id, error = %e, "could not record a failed refresh");
                            let later = state.now_ms() + BACKOFF_CAP_MS;
                            let _ = state.store.set_next_refresh(&id, later).await;
                            Err(VendError::NeedsReauth)
                        }
                    };
                }
                let retry_after_ms = match &error {
                    LwaError::Transient {
                        retry_after: Some(after),
                        ..
                    } => after.as_millis().min(BACKOFF_CAP_MS as u128) as i64,
                    _ => 0,
                };
                return Err(note_failure(&state, &row, lwa_failure(error), retry_after_ms).await);
            }
        };
        let refresh_token = match (&tokens.refresh_token, tokens.refresh_token_changed) {
            (Some(new), true) => new.clone(),
            _ => refresh_token,
        };
        let expires_at_ms = started + tokens.expires_in as i64 * 1000;
        let mut update = TokenUpdate {
            connection_id: id.clone(),
            expected_refresh_token: sealed_refresh.to_owned(),
            refresh_token: state
                .sealer
                .seal(&id, "refresh_token", refresh_token.expose(), secret.as_ref()),
            access_token: state.sealer.seal(
                &id,
                "access_token",
                tokens.access_token.expose(),
                secret.as_ref(),
            ),
            access_expires_at_ms: expires_at_ms,
            refreshed_at_ms: state.now_ms(),
            next_refresh_at_ms: next_refresh_at(state.now_ms(), expires_at_ms, buffer_ms),
        };
        // The row's refresh token may have been re-sealed (`keys rotate`) while we refreshed: the
        // same token under a new seal is not a re-authorization, so store against the new seal.
        for _ in 0..3 {
            if state.store.save_tokens(&update).await? {
                tracing::debug!(connection = %id, "refreshed");
                return Ok(CachedToken::new(tokens.access_token, expires_at_ms, tag));
            }
            let now_row = state.store.connection(&id).await?;
            match now_row {
                Some(r) if Status::of(&r.status) == Status::Active => {
                    let same = r
                        .refresh_token
                        .as_deref()
                        .and_then(|sealed| {
                            state
                                .sealer
                                .open(&id, "refresh_token", sealed, secret.as_ref())
                                .ok()
                        })
                        .is_some_and(|plain| *plain == *started_from);
                    if !same {
                        return Err(VendError::Unavailable {
                            message: "the connection was re-authorized during the refresh; ask again".into(),
                            retry_after_s: 0,
                        });
                    }
                    update.expected_refresh_token = r.refresh_token.unwrap_or_default();
                }
                Some(r) if Status::of(&r.status) == Status::NeedsReauth => {
                    return Err(VendError::NeedsReauth);
                }
                _ => return Err(VendError::Disconnected),
            }
        }
        Err(VendError::Unavailable {
            message: "the connection kept changing during the refresh; ask again".into(),
            retry_after_s: 1,
        })
    }
    .await;
    if outcome.is_err() {
        // Let the next caller, here or elsewhere, try at once.
        release_lease().await;
    }
    outcome
}

/// Another process or replica holds the connection's refresh lease. The stored token is used
/// while it is still valid (the other refresh will replace it); an expired one is waited for —
/// the database read every 50 ms until the other refresh stores its token (no second LWA call)
/// or its lease runs out (a holder that died: the lease is taken over).
#[allow(clippy::too_many_arguments)]
async fn await_other_refresh(
    state: &AppState,
    id: &str,
    secret: Option<TokenSecret>,
    buffer_ms: i64,
    background: bool,
    rejected: Option<[u8; 32]>,
    mut row: Connection,
) -> Result<Arc<CachedToken>, VendError> {
    let started = tokio::time::Instant::now();
    let patience = Duration::from_millis((lwa_store::REFRESH_LEASE_MS + 5_000) as u64);
    let tag = secret.as_ref().map(|s| secret_tag(id, s));
    loop {
        let now = state.now_ms();
        if let (Some(sealed), Some(expires_at_ms)) = (&row.access_token, row.access_expires_at_ms)
            && expires_at_ms > now
        {
            let plain = match state.sealer.open(id, "access_token", sealed, secret.as_ref()) {
                Ok(plain) => plain,
                Err(UnsealError::TenantSecret) => return Err(VendError::Forbidden),
                Err(e) => return Err(VendError::Internal(format!("connection {id}: {e}"))),
            };
            let refused = rejected.is_some_and(|r| r == <[u8; 32]>::from(Sha256::digest(plain.as_bytes())));
            if !refused {
                return Ok(CachedToken::new(
                    AccessToken::new(plain.as_str()),
                    expires_at_ms,
                    tag,
                ));
            }
        }
        if background || started.elapsed() > patience {
            return Err(VendError::Unavailable {
                message: "another process is refreshing this connection".into(),
                retry_after_s: 1,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (fresh, schedule) = state
            .store
            .connection_with_schedule(id)
            .await?
            .ok_or(VendError::NotFound)?;
        // A token stored meanwhile is taken at the top of the loop; a lease that ended (the
        // refresh failed, or its holder died), one this process's refresher holds, or a
        // changed status: look again the usual way.
        let now = state.now_ms();
        if schedule.refresh_lease_until_ms <= now
            || state.vendor.claimed_here(id, now)
            || Status::of(&fresh.status) != Status::Active
        {
            return Box::pin(refresh_connection_inner(
                state.clone(),
                id.to_owned(),
                secret,
                buffer_ms,
                background,
                Some((fresh, schedule)),
                rejected,
            ))
            .await;
        }
        row = fresh;
    }
}

/// Records a failed refresh that is worth trying again later (Amazon failing or refusing the
/// app, a row that cannot be opened): one more failure in a row and a backoff (at least
/// Amazon's `Retry-After`) kept in the database, so every process and the background refresher
/// wait for it. An `Unavailable` answer carries the backoff's time left as its `retry_after_s`,
/// which is also how long this process's flight holds it. Other failures pass unchanged.
async fn note_failure(
    state: &AppState,
    row: &Connection,
    failure: VendError,
    retry_after_ms: i64,
) -> VendError {
    let id = row.id.as_str();
    let message = match &failure {
        VendError::Unavailable { message, .. }
        | VendError::Configuration(message)
        | VendError::Internal(message) => message.clone(),
        _ => return failure,
    };
    let now = state.now_ms();
    let retry_at = move |failures: i64| now + backoff_ms(failures).max(retry_after_ms.min(BACKOFF_CAP_MS));
    match state
        .store
        .record_refresh_failure(id, row.authorized_at_ms, &message, now, &retry_at)
        .await
    {
        Ok(Some(schedule)) => match failure {
            VendError::Unavailable { message, .. } => VendError::Unavailable {
                message,
                retry_after_s: ((schedule.retry_at_ms.unwrap_or(now) - now).max(0) as u64)
                    .div_ceil(1000)
                    .max(1),
            },
            other => other,
        },
        Ok(None) => failure,
        Err(e) => {
            tracing::warn!(connection = %id, error = %e, "could not record a failed refresh");
            failure
        }
    }
}

/// An LWA failure, as vending reports it.
fn lwa_failure(error: LwaError) -> VendError {
    match error {
        LwaError::Reauthorize { .. } => VendError::NeedsReauth,
        LwaError::Configuration {
            code, description, ..
        } => VendError::Configuration(format!("LWA refused the app's request ({code}: {description})")),
        LwaError::Transient { retry_after, .. } => VendError::Unavailable {
            message: error.to_string(),
            retry_after_s: retry_after.map(|d| d.as_secs().max(1)).unwrap_or(5),
        },
        LwaError::MalformedResponse { .. } => VendError::Unavailable {
            message: error.to_string(),
            retry_after_s: 5,
        },
    }
}

/// A Tokens API failure, as vending reports it.
fn rdt_failure(error: TokenError) -> VendError {
    match error {
        TokenError::Api { status: 429, .. } => VendError::RateLimited { retry_after_s: 1 },
        TokenError::Api { status, message, .. } if status >= 500 => VendError::Unavailable {
            message: format!("the Tokens API failed (HTTP {status}): {message}"),
            retry_after_s: 5,
        },
        TokenError::Api { status, message, .. } => VendError::Rejected { status, message },
        TokenError::Transport { reason, .. } => VendError::Unavailable {
            message: format!("the Tokens API could not be reached: {reason}"),
            retry_after_s: 5,
        },
        other => VendError::Internal(other.to_string()),
    }
}

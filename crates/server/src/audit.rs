//! The audit trail: every access token, grantless token and RDT handed out, with the tenant, the
//! key, the connection, the kind, the time and (RDT) the data elements.
//!
//! Cheap on the hot path: a vend adds one to a pending record in memory (identical records —
//! same tenant, key, connection, kind, channel and detail — are one record with a `count` and
//! the first and last times); a task writes them every 5 seconds in one transaction.
//! `GET /v1/audit` writes what is pending first, so a tenant always sees its own latest vends.
//! A crash loses at most the last 5 seconds. Rows older than the retention (90 days by
//! default) are deleted once an hour.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use lwa_store::{AuditEvent, AuditFilter, Store, StoreError};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;
use crate::time::{parse_rfc3339, rfc3339};

/// What was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AccessToken,
    GrantlessToken,
    RestrictedDataToken,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccessToken => "access_token",
            Kind::GrantlessToken => "grantless_token",
            Kind::RestrictedDataToken => "restricted_data_token",
        }
    }
}

/// Through which door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The `/v1` API.
    V1,
    /// The LWA-compatible `/auth/o2/token`.
    Lwa,
    /// The passthrough proxy (RDTs it minted for a call or a stand-in).
    Proxy,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::V1 => "v1",
            Via::Lwa => "lwa",
            Via::Proxy => "proxy",
        }
    }
}

/// Records pending a write, coalesced as they arrive: the hot path allocates only for the first
/// record of a (tenant, key, connection, kind, channel, detail) in a write interval.
#[derive(Debug)]
pub struct Auditor {
    shards: Vec<Mutex<PendingMap>>,
    hasher: std::collections::hash_map::RandomState,
    order: AtomicU64,
    store: Arc<dyn Store>,
    clock: Arc<dyn lwa::Clock>,
    retention_ms: i64,
    /// Serializes writes, so rows keep their order.
    flushing: tokio::sync::Mutex<()>,
    /// Whether the last write failed (the records went back to pending).
    last_write_failed: AtomicBool,
    /// Someone waits for the writes (a read of the trail, shutdown): no more pauses.
    hurry: AtomicBool,
    stop: tokio::sync::Notify,
    /// The runtime that made the auditor: writes run there, never on the serving thread of the
    /// request that asked for one (see [`crate::http_threads`]).
    home: Option<tokio::runtime::Handle>,
}

/// A pending record: shares the tenant and key with the request, so a repeat costs nothing.
#[derive(Debug)]
struct Pending {
    order: u64,
    tenant: Arc<lwa_store::Tenant>,
    key: Arc<lwa_store::ApiKey>,
    connection: Option<Box<str>>,
    kind: Kind,
    via: Via,
    detail: Option<String>,
    at_ms: i64,
    last_at_ms: i64,
    count: i64,
}

impl Pending {
    fn identity(&self) -> Identity<'_> {
        (
            &self.tenant.id,
            &self.key.id,
            self.connection.as_deref(),
            self.kind.as_str(),
            self.via.as_str(),
            self.detail.as_deref(),
        )
    }

    fn merge(&mut self, from: &Pending) {
        self.count += from.count;
        self.at_ms = self.at_ms.min(from.at_ms);
        self.last_at_ms = self.last_at_ms.max(from.last_at_ms);
        self.order = self.order.min(from.order);
    }

    fn event(&self) -> AuditEvent {
        AuditEvent {
            id: 0,
            at_ms: self.at_ms,
            last_at_ms: self.last_at_ms,
            count: self.count,
            tenant_id: self.tenant.id.clone(),
            key_id: self.key.id.clone(),
            connection_id: self.connection.as_deref().map(str::to_owned),
            kind: self.kind.as_str().to_owned(),
            via: self.via.as_str().to_owned(),
            detail: self.detail.clone(),
        }
    }
}

/// A map keyed by an already computed hash: the hash itself is the bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One shard: records by the hash of their identity, and the rare record whose hash another
/// identity already holds.
#[derive(Debug, Default)]
struct PendingMap {
    by_hash: HashMap<u64, Pending, std::hash::BuildHasherDefault<Prehashed>>,
    collided: Vec<Pending>,
}

impl PendingMap {
    fn find(&mut self, hash: u64, identity: Identity<'_>) -> Option<&mut Pending> {
        match self.by_hash.get_mut(&hash) {
            Some(p) if p.identity() == identity => Some(p),
            Some(_) => self.collided.iter_mut().find(|p| p.identity() == identity),
            None => None,
        }
    }

    fn insert(&mut self, hash: u64, pending: Pending) {
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(pending),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(pending);
            }
        }
    }

    fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }
}

/// How often pending records are written.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// Rows a statement when the write is hurried (a reader or shutdown waiting).
const CHUNK_ROWS: usize = 250;
/// Rows a statement of the periodic write, which pauses [`CHUNK_PAUSE`] between statements
/// (less when a batch is so large that its pauses would add up to over half of
/// [`WRITE_INTERVAL`]; what is left after that half goes in [`CHUNK_ROWS`] statements without
/// pauses, as when a reader or shutdown waits). 10,000 rows at once hold a core for about 200 ms, which on a small
/// machine stalls the requests beside it; 250-row statements still took 5 ms each and raised the
/// p99 of vends beside them from under 1 ms to about 2 ms. In 50-row steps, each about 1 ms, the
/// same work spreads over a second or two.
const PACED_CHUNK_ROWS: usize = 50;
/// The periodic write's pause between statements.
const CHUNK_PAUSE: Duration = Duration::from_millis(10);
/// Past this many pending records (the database down for a long time) new ones are dropped, with
/// a warning, rather than the process running out of memory; counts of pending ones still grow.
const MAX_PENDING: usize = 1_000_000;

/// What makes two records the same row: tenant, key, connection, kind, channel, detail.
type Identity<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<&'a str>,
);

impl Auditor {
    /// An auditor writing to `store`, deleting rows older than `retention_days` (0: never).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn lwa::Clock>, retention_days: u32) -> Auditor {
        Auditor {
            shards: (0..16).map(|_| Mutex::new(PendingMap::default())).collect(),
            hasher: Default::default(),
            order: AtomicU64::new(0),
            store,
            clock,
            retention_ms: i64::from(retention_days) * 86_400_000,
            flushing: tokio::sync::Mutex::new(()),
            last_write_failed: AtomicBool::new(false),
            hurry: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            home: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Notes one token handed out.
    pub fn record(
        &self,
        at_ms: i64,
        auth: &TenantAuth,
        connection_id: Option<&str>,
        kind: Kind,
        via: Via,
        detail: Option<String>,
    ) {
        let identity: Identity<'_> = (
            &auth.tenant.id,
            &auth.key.id,
            connection_id,
            kind.as_str(),
            via.as_str(),
            detail.as_deref(),
        );
        let hash = self.hasher.hash_one(identity);
        let mut shard = self.shards[hash as usize % self.shards.len()].lock();
        if let Some(known) = shard.find(hash, identity) {
            known.count += 1;
            known.at_ms = known.at_ms.min(at_ms);
            known.last_at_ms = known.last_at_ms.max(at_ms);
            return;
        }
        if shard.len() * self.shards.len() > MAX_PENDING {
            tracing::warn!("audit records could not be written for a long time; a record was dropped");
            return;
        }
        let pending = Pending {
            order: self.order.fetch_add(1, Ordering::Relaxed),
            tenant: auth.tenant.clone(),
            key: auth.key.clone(),
            connection: connection_id.map(Into::into),
            kind,
            via,
            detail,
            at_ms,
            last_at_ms: at_ms,
            count: 1,
        };
        shard.insert(hash, pending);
    }

    fn take(&self) -> Vec<Pending> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            all.extend(taken.by_hash.into_values().chain(taken.collided));
        }
        all.sort_by_key(|p| p.order);
        all
    }

    fn put_back(&self, batch: Vec<Pending>) {
        for p in batch {
            let hash = self.hasher.hash_one(p.identity());
            let mut shard = self.shards[hash as usize % self.shards.len()].lock();
            match shard.find(hash, p.identity()) {
                Some(known) => known.merge(&p),
                None => shard.insert(hash, p),
            }
        }
    }

    /// Writes what is pending; returns how many rows were written. The write runs as its own
    /// task, so a caller that goes away loses nothing; on failure the records stay pending, to
    /// be written by the next flush. A caller that had to wait for another write which failed
    /// gets that failure at once, rather than a second wait on an unreachable database.
    pub async fn flush(self: &Arc<Self>) -> Result<usize, StoreError> {
        self.write(false).await
    }

    /// Writes what is pending; `paced`, with a pause between statements unless someone is
    /// waiting for the write.
    async fn write(self: &Arc<Self>, paced: bool) -> Result<usize, StoreError> {
        let auditor = self.clone();
        let work = async move {
            let _turn = match auditor.flushing.try_lock() {
                Ok(turn) => turn,
                Err(_) => {
                    if !paced {
                        auditor.hurry.store(true, Ordering::Release);
                    }
                    let turn = auditor.flushing.lock().await;
                    if auditor.last_write_failed.load(Ordering::Acquire) {
                        return Err(StoreError::Io(
                            "the audit trail could not be written just now; its records are kept".into(),
                        ));
                    }
                    turn
                }
            };
            if !paced {
                auditor.hurry.store(false, Ordering::Release);
            }
            let batch = auditor.take();
            if batch.is_empty() {
                return Ok(0);
            }
            // Paced until half of the interval is over (the timer's millisecond ticks make the
            // pauses longer than asked, so the time itself is watched), then as fast as it goes.
            let pacing_until = tokio::time::Instant::now() + WRITE_INTERVAL / 2;
            let pause = CHUNK_PAUSE.min(WRITE_INTERVAL / 2 / batch.len().div_ceil(PACED_CHUNK_ROWS) as u32);
            // In chunks, so a large batch is never copied whole.
            let mut written = 0;
            let mut rest = batch.into_iter().peekable();
            while rest.peek().is_some() {
                let pacing = paced
                    && !auditor.hurry.load(Ordering::Acquire)
                    && tokio::time::Instant::now() < pacing_until;
                if written > 0 && pacing {
                    tokio::time::sleep(pause).await;
                }
                let rows_per = if pacing { PACED_CHUNK_ROWS } else { CHUNK_ROWS };
                let chunk: Vec<Pending> = rest.by_ref().take(rows_per).collect();
                let rows: Vec<AuditEvent> = chunk.iter().map(Pending::event).collect();
                if let Err(e) = auditor.store.insert_audit_events(&rows).await {
                    auditor.put_back(chunk.into_iter().chain(rest).collect());
                    auditor.last_write_failed.store(true, Ordering::Release);
                    return Err(e);
                }
                written += rows.len();
            }
            auditor.last_write_failed.store(false, Ordering::Release);
            Ok(written)
        };
        let task = match &self.home {
            Some(home) => home.spawn(work),
            None => tokio::spawn(work),
        };
        task.await
            .unwrap_or_else(|e| Err(StoreError::Io(format!("the audit write failed: {e}"))))
    }

    /// Writes every [`WRITE_INTERVAL`], deletes rows past the retention once an hour, and
    /// writes what is left when [`Auditor::stop`] is called.
    pub fn spawn_writer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let auditor = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_purge = i64::MIN / 2;
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = auditor.stop.notified() => true,
                };
                if let Err(e) = auditor.write(!stopping).await {
                    tracing::warn!(error = %e, "could not write the audit trail; will retry");
                }
                if stopping {
                    return;
                }
                let now = auditor.clock.now_ms();
                if auditor.retention_ms > 0 && now - last_purge > 3_600_000 {
                    last_purge = now;
                    match auditor.store.purge_audit_events(now - auditor.retention_ms).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "deleted audit rows past their retention"),
                        Err(e) => tracing::warn!(error = %e, "could not delete old audit rows"),
                    }
                }
            }
        })
    }

    /// Asks the writer to write what is pending and end.
    pub fn stop(&self) {
        self.hurry.store(true, Ordering::Release);
        self.stop.notify_one();
    }
}

/// An event as the API shows it.
pub fn view(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at_ms),
        "last_at": rfc3339(e.last_at_ms),
        "count": e.count,
        "tenant_id": e.tenant_id,
        "key_id": e.key_id,
        "connection_id": e.connection_id,
        "kind": e.kind,
        "via": e.via,
        "detail": e.detail,
    })
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub connection_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
    pub limit: Option<u32>,
    /// The `next_before` of the previous page.
    pub before: Option<i64>,
}

impl AuditQuery {
    /// The store filter, or a 400 naming the bad parameter.
    pub fn filter(self, tenant_id: Option<String>) -> Result<AuditFilter, ApiError> {
        if let Some(kind) = &self.kind
            && !matches!(
                kind.as_str(),
                "access_token" | "grantless_token" | "restricted_data_token"
            )
        {
            return Err(ApiError::bad_request(
                "invalid_kind",
                "kind must be access_token, grantless_token or restricted_data_token",
            ));
        }
        let time = |name: &str, v: Option<String>| {
            v.map(|t| {
                parse_rfc3339(&t).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_time",
                        format!("{name} must be an RFC 3339 time such as 2026-11-24T10:00:00Z"),
                    )
                })
            })
            .transpose()
        };
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
        }
        Ok(AuditFilter {
            tenant_id,
            connection_id: self.connection_id,
            key_id: self.key_id,
            kind: self.kind,
            since_ms: time("since", self.since)?,
            until_ms: time("until", self.until)?,
            before: self.before,
            limit,
        })
    }
}

/// `GET /v1/audit`: the caller's events, newest first.
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter(Some(auth.tenant.id.clone()))?;
    // Without its latest records the trail would look complete and not be: 503 instead.
    state.auditor.flush().await?;
    let page = state.store.audit_events(&filter).await?;
    let next = (page.len() == filter.limit as usize)
        .then(|| page.last().map(|e| e.id))
        .flatten();
    Ok(
        axum::Json(json!({"data": page.iter().map(view).collect::<Vec<_>>(), "next_before": next}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tenant: &str, key: &str) -> TenantAuth {
        TenantAuth {
            tenant: Arc::new(lwa_store::Tenant {
                id: tenant.into(),
                name: "T".into(),
                redirect_origins: vec![],
                sp_app: None,
                ads_app: None,
                webhook_url: None,
                signing_secret: None,
                created_at_ms: 0,
            }),
            key: Arc::new(lwa_store::ApiKey {
                id: key.into(),
                tenant_id: tenant.into(),
                name: None,
                secret_hash: String::new(),
                scope: "full".into(),
                created_at_ms: 0,
                last_used_at_ms: None,
                revoked_at_ms: None,
            }),
        }
    }

    #[tokio::test]
    async fn identical_records_are_one_row_with_a_count_in_first_seen_order() {
        let store: Arc<dyn Store> = Arc::new(
            lwa_store::SqliteStore::connect_and_migrate("sqlite::memory:")
                .await
                .unwrap(),
        );
        let auditor = Arc::new(Auditor::new(store.clone(), Arc::new(lwa::SystemClock), 90));
        let (a, b) = (auth("ten_a", "ka"), auth("ten_b", "kb"));
        auditor.record(10, &a, Some("conn_1"), Kind::AccessToken, Via::V1, None);
        auditor.record(11, &b, None, Kind::GrantlessToken, Via::Lwa, Some("s".into()));
        auditor.record(12, &a, Some("conn_1"), Kind::AccessToken, Via::V1, None);
        auditor.record(13, &a, Some("conn_1"), Kind::AccessToken, Via::Lwa, None);
        auditor.record(9, &a, Some("conn_1"), Kind::AccessToken, Via::V1, None);
        assert_eq!(auditor.flush().await.unwrap(), 3);
        assert_eq!(auditor.flush().await.unwrap(), 0);
        let rows = store
            .audit_events(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        // Newest first: the row first seen last.
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[2].count, rows[2].at_ms, rows[2].last_at_ms), (3, 9, 12));
        assert_eq!(rows[1].tenant_id, "ten_b");
        assert_eq!((rows[0].via.as_str(), rows[0].count), ("lwa", 1));
    }

    #[tokio::test]
    async fn the_periodic_write_pauses_between_statements_and_a_reader_still_sees_every_row() {
        let store: Arc<dyn Store> = Arc::new(
            lwa_store::SqliteStore::connect_and_migrate("sqlite::memory:")
                .await
                .unwrap(),
        );
        let auditor = Arc::new(Auditor::new(store.clone(), Arc::new(lwa::SystemClock), 90));
        let a = auth("ten_a", "ka");
        let record_rows = |from: usize, n: usize| {
            for n in from..from + n {
                auditor.record(
                    10,
                    &a,
                    Some(&format!("conn_{n}")),
                    Kind::AccessToken,
                    Via::V1,
                    None,
                );
            }
        };
        // Four statements, three pauses.
        record_rows(0, 4 * PACED_CHUNK_ROWS);
        let started = std::time::Instant::now();
        assert_eq!(auditor.write(true).await.unwrap(), 4 * PACED_CHUNK_ROWS);
        assert!(started.elapsed() >= CHUNK_PAUSE * 3, "{:?}", started.elapsed());

        // A read of the trail during a paced write (forty statements, paced) hurries it: no
        // more pauses. It waits for it, then writes the rest itself.
        let started = std::time::Instant::now();
        record_rows(4 * PACED_CHUNK_ROWS, 40 * PACED_CHUNK_ROWS);
        let paced = tokio::spawn({
            let auditor = auditor.clone();
            async move { auditor.write(true).await }
        });
        tokio::task::yield_now().await;
        auditor.record(11, &a, Some("conn_late"), Kind::AccessToken, Via::V1, None);
        let read = auditor.flush().await.unwrap();
        let paced = paced.await.unwrap().unwrap();
        assert_eq!(paced + read, 40 * PACED_CHUNK_ROWS + 1);
        assert!(
            started.elapsed() < CHUNK_PAUSE * 20,
            "the hurried write still paused: {:?}",
            started.elapsed()
        );
        // Newest first: the late record is there.
        let rows = store
            .audit_events(&AuditFilter {
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].connection_id.as_deref(), Some("conn_late"));
        assert_eq!(auditor.flush().await.unwrap(), 0);
    }
}

//! The audit trail: every access token, grantless token and RDT handed out, with the tenant, the
//! key, the connection, the kind, the time and (RDT) the data elements.
//!
//! Cheap on the hot path: a vend pushes one record onto an in-memory list; a task writes the
//! list every second in one transaction, identical records of one batch (same tenant, key,
//! connection, kind, channel and detail) as one row with a `count` and the first and last
//! times. `GET /v1/audit` writes what is pending first, so a tenant always sees its own
//! latest vends. A crash loses at most the last second.

use std::collections::HashMap;
use std::sync::Arc;
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
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::V1 => "v1",
            Via::Lwa => "lwa",
        }
    }
}

/// Records pending a write.
#[derive(Debug)]
pub struct Auditor {
    pending: Mutex<Vec<AuditEvent>>,
    store: Arc<dyn Store>,
    /// Serializes flushes, so rows keep their order.
    flushing: tokio::sync::Mutex<()>,
}

/// Past this many pending records (the database down for a long time) the oldest are dropped,
/// with a warning, rather than the process running out of memory.
const MAX_PENDING: usize = 1_000_000;

impl Auditor {
    pub fn new(store: Arc<dyn Store>) -> Auditor {
        Auditor {
            pending: Mutex::new(Vec::new()),
            store,
            flushing: tokio::sync::Mutex::new(()),
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
        let event = AuditEvent {
            id: 0,
            at_ms,
            last_at_ms: at_ms,
            count: 1,
            tenant_id: auth.tenant.id.clone(),
            key_id: auth.key.id.clone(),
            connection_id: connection_id.map(str::to_owned),
            kind: kind.as_str().to_owned(),
            via: via.as_str().to_owned(),
            detail,
        };
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_PENDING {
            let dropped = pending.len() / 10;
            pending.drain(..dropped);
            tracing::warn!(
                dropped,
                "audit records could not be written for a long time; oldest dropped"
            );
        }
        pending.push(event);
    }

    /// Writes what is pending; returns how many records were written. On failure the records
    /// go back to the front of the list.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let _turn = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        let rows = coalesce(&batch);
        match self.store.insert_audit_events(&rows).await {
            Ok(()) => Ok(n),
            Err(e) => {
                let mut pending = self.pending.lock();
                let newer = std::mem::take(&mut *pending);
                *pending = batch;
                pending.extend(newer);
                Err(e)
            }
        }
    }

    /// Flushes every second until the process ends.
    pub fn spawn_writer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let auditor = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(auditor) = auditor.upgrade() else { return };
                if let Err(e) = auditor.flush().await {
                    tracing::warn!(error = %e, "could not write the audit trail; will retry");
                }
            }
        })
    }
}

/// What makes two records the same row: tenant, key, connection, kind, channel, detail.
type Identity<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<&'a str>,
);

/// Identical records of a batch as one row, in the order of their first occurrence.
fn coalesce(batch: &[AuditEvent]) -> Vec<AuditEvent> {
    let mut rows: Vec<AuditEvent> = Vec::new();
    let mut index: HashMap<Identity<'_>, usize> = HashMap::new();
    for e in batch {
        let key = (
            e.tenant_id.as_str(),
            e.key_id.as_str(),
            e.connection_id.as_deref(),
            e.kind.as_str(),
            e.via.as_str(),
            e.detail.as_deref(),
        );
        match index.get(&key) {
            Some(&i) => {
                let row = &mut rows[i];
                row.count += 1;
                row.at_ms = row.at_ms.min(e.at_ms);
                row.last_at_ms = row.last_at_ms.max(e.at_ms);
            }
            None => {
                index.insert(key, rows.len());
                rows.push(e.clone());
            }
        }
    }
    rows
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
    if let Err(e) = state.auditor.flush().await {
        tracing::warn!(error = %e, "could not write the audit trail before reading it");
    }
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

    fn event(at: i64, conn: &str, detail: Option<&str>) -> AuditEvent {
        AuditEvent {
            id: 0,
            at_ms: at,
            last_at_ms: at,
            count: 1,
            tenant_id: "ten_1".into(),
            key_id: "k1".into(),
            connection_id: Some(conn.into()),
            kind: "access_token".into(),
            via: "v1".into(),
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn identical_records_become_one_row_with_a_count() {
        let rows = coalesce(&[
            event(10, "c1", None),
            event(11, "c2", None),
            event(12, "c1", None),
            event(13, "c1", Some("x")),
        ]);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].count, rows[0].at_ms, rows[0].last_at_ms), (2, 10, 12));
        assert_eq!(rows[1].connection_id.as_deref(), Some("c2"));
        assert_eq!(rows[2].detail.as_deref(), Some("x"));
    }
}

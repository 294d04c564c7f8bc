//! The tenant's webhook API: `GET`/`PUT /v1/webhook`, `POST /v1/webhook/rotate-secret`,
//! `GET /v1/webhook/deliveries`, `POST /v1/webhook/deliveries/{delivery_id}/retry`; and the
//! functions the CLI shares with them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lwa_store::{DeliveryFilter, Tenant, WebhookDelivery};
use serde::Deserialize;
use serde_json::{Value, json};

use super::address::parse_webhook_url;
use super::{RETRY_FOR_MS, SigningSecret};
use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::extract::{Json, PathParam, Query};
use crate::state::AppState;
use crate::time::rfc3339;

/// The tenant as stored now (the key cache may hold an older copy), or 404.
async fn tenant(state: &AppState, tenant_id: &str) -> Result<Tenant, ApiError> {
    state
        .store
        .tenant(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {tenant_id}")))
}

/// Seals a signing secret for its tenant.
fn seal(state: &AppState, tenant_id: &str, secret: &SigningSecret) -> String {
    state
        .sealer
        .seal(tenant_id, "signing_secret", secret.expose(), None)
}

/// Sets (or, with `None`, removes) a tenant's webhook URL. The first time a URL is set the
/// tenant gets a signing secret, returned here and never again.
pub async fn set_webhook_url(
    state: &AppState,
    tenant_id: &str,
    url: Option<&str>,
) -> Result<(Tenant, Option<SigningSecret>), ApiError> {
    let url = url
        .map(|u| parse_webhook_url(u, state.webhooks.allow_private))
        .transpose()?;
    let mut t = tenant(state, tenant_id).await?;
    t.webhook_url = url.map(|u| u.to_string());
    let mut created = None;
    if t.webhook_url.is_some() && t.signing_secret.is_none() {
        let secret = SigningSecret::generate();
        t.signing_secret = Some(seal(state, tenant_id, &secret));
        created = Some(secret);
    }
    if !state.store.update_tenant(&t).await? {
        return Err(ApiError::not_found(format!("no tenant {tenant_id}")));
    }
    tracing::info!(tenant = %tenant_id, set = t.webhook_url.is_some(), "webhook URL changed");
    Ok((t, created))
}

/// Replaces a tenant's signing secret; the new one is returned here and never again. Every
/// delivery from now on, retries included, is signed with it.
pub async fn rotate_signing_secret(state: &AppState, tenant_id: &str) -> Result<SigningSecret, ApiError> {
    let mut t = tenant(state, tenant_id).await?;
    let secret = SigningSecret::generate();
    t.signing_secret = Some(seal(state, tenant_id, &secret));
    if !state.store.update_tenant(&t).await? {
        return Err(ApiError::not_found(format!("no tenant {tenant_id}")));
    }
    tracing::info!(tenant = %tenant_id, "webhook signing secret rotated");
    Ok(secret)
}

fn webhook_view(t: &Tenant) -> Value {
    json!({"url": t.webhook_url, "signing_secret_set": t.signing_secret.is_some()})
}

/// `GET /v1/webhook`.
pub async fn get(State(state): State<AppState>, auth: TenantAuth) -> Result<Response, ApiError> {
    let t = tenant(&state, &auth.tenant.id).await?;
    Ok(axum::Json(webhook_view(&t)).into_response())
}

/// `PUT /v1/webhook` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// An http(s) URL; `null` removes the webhook.
    pub url: Option<String>,
}

/// `PUT /v1/webhook`: `signing_secret` is in the answer only when this call created it.
pub async fn put(
    State(state): State<AppState>,
    auth: TenantAuth,
    Json(body): Json<SetWebhook>,
) -> Result<Response, ApiError> {
    let (t, created) = set_webhook_url(&state, &auth.tenant.id, body.url.as_deref()).await?;
    let mut view = webhook_view(&t);
    if let Some(secret) = &created {
        view["signing_secret"] = json!(secret.expose());
    }
    Ok(axum::Json(view).into_response())
}

/// `POST /v1/webhook/rotate-secret`.
pub async fn rotate_secret(State(state): State<AppState>, auth: TenantAuth) -> Result<Response, ApiError> {
    let secret = rotate_signing_secret(&state, &auth.tenant.id).await?;
    let t = tenant(&state, &auth.tenant.id).await?;
    let mut view = webhook_view(&t);
    view["signing_secret"] = json!(secret.expose());
    Ok(axum::Json(view).into_response())
}

/// A delivery as the API shows it, with its event's body.
pub fn delivery_view(d: &WebhookDelivery) -> Value {
    let event: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "type": d.event_type,
        "connection_id": d.connection_id,
        "target": d.target,
        "url": d.url,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": (d.state == "pending").then(|| rfc3339(d.next_attempt_at_ms)),
        "gives_up_at": (d.state == "pending").then(|| rfc3339(d.expires_at_ms)),
        "last_attempt_at": d.last_attempt_at_ms.map(rfc3339),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at_ms.map(rfc3339),
        "created_at": rfc3339(d.created_at_ms),
        "event": event,
    })
}

/// `GET /v1/webhook/deliveries` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    pub connection_id: Option<String>,
    /// An event type, e.g. `connection.needs_reauth`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub limit: Option<u32>,
    /// The `next_before` of the previous page.
    pub before: Option<i64>,
}

/// `GET /v1/webhook/deliveries`: the caller's deliveries, newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    if let Some(s) = &q.state
        && !matches!(s.as_str(), "pending" | "delivered" | "failed")
    {
        return Err(ApiError::bad_request(
            "invalid_state",
            "state must be pending, delivered or failed",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
    }
    let filter = DeliveryFilter {
        tenant_id: Some(auth.tenant.id.clone()),
        connection_id: q.connection_id,
        state: q.state,
        event_type: q.event_type,
        before: q.before,
        limit,
    };
    let page = state.store.webhook_deliveries(&filter).await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|d| d.id))
        .flatten();
    Ok(
        axum::Json(json!({"data": page.iter().map(delivery_view).collect::<Vec<_>>(), "next_before": next}))
            .into_response(),
    )
}

/// `POST /v1/webhook/deliveries/{delivery_id}/retry`: a failed delivery is tried again now,
/// for another 24 hours. 404 for an unknown delivery or another tenant's; 409 unless failed.
pub async fn retry(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no delivery {id}"));
    let number: i64 = id.parse().map_err(|_| not_found())?;
    let d = match state.store.webhook_delivery(number).await? {
        Some(d) if d.tenant_id.as_deref() == Some(auth.tenant.id.as_str()) => d,
        _ => return Err(not_found()),
    };
    let now = state.now_ms();
    if !state
        .store
        .retry_delivery(d.id, Some(&auth.tenant.id), now, now + RETRY_FOR_MS)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_failed",
            format!(
                "delivery {id} is {}: only a failed delivery can be retried",
                d.state
            ),
        ));
    }
    // Read before waking the worker, so that the answer shows the delivery as retried.
    let d = state.store.webhook_delivery(d.id).await?.ok_or_else(not_found)?;
    state.webhooks.wake();
    Ok(axum::Json(delivery_view(&d)).into_response())
}

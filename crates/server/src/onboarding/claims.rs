//! Claiming a connection with the code from the redirect: `POST /api/claim-code` (seed 003's
//! request and `{success, data}` response) and `POST /v1/claims`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::handle;
use crate::auth::{CompatAuth, TenantAuth};
use crate::connections::{validate_callback_url, view};
use crate::error::{ApiError, Shape};
use crate::extract::Json;
use crate::ids;
use crate::sealing::TokenSecret;
use crate::state::AppState;

/// Seed 003's claim request.
#[derive(Debug, Deserialize)]
pub struct CompatClaim {
    pub code: String,
    pub seller_id: Option<String>,
    pub name: Option<String>,
    pub callback_url: Option<String>,
}

/// `POST /v1/claims`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub code: String,
    pub name: Option<String>,
    pub callback_url: Option<String>,
}

struct Claimed {
    connection: lwa_store::Connection,
    handle: String,
}

async fn claim(
    state: &AppState,
    tenant_id: &str,
    code: &str,
    seller_id: Option<&str>,
    name: Option<String>,
    callback_url: Option<String>,
) -> Result<Claimed, ApiError> {
    if let Some(url) = &callback_url {
        validate_callback_url(url)?;
    }
    let invalid = || ApiError::bad_request("invalid_code", "Invalid or already used claim code");
    let now = state.now_ms();
    let code_hash = ids::hash(code.trim());
    let Some(claim) = state.store.take_claim_code(&code_hash, now).await? else {
        return Err(invalid());
    };
    if claim.tenant_id != tenant_id {
        return Err(invalid());
    }
    if claim.expires_at_ms <= now {
        return Err(ApiError::bad_request(
            "expired_code",
            "The claim code has expired (it is valid for 5 minutes); the seller must authorize again",
        ));
    }
    if seller_id.is_some_and(|s| s != claim.connection_id) {
        return Err(ApiError::bad_request(
            "invalid_code",
            "seller_id does not match the claim code",
        ));
    }
    let secret = match &claim.token_secret {
        None => None,
        Some(sealed) => {
            let opened = state
                .sealer
                .open(&claim.code_hash, "token_secret", sealed, None)
                .map_err(|e| ApiError::internal("opening a claim's token secret", e))?;
            TokenSecret::parse(&opened)
        }
    };
    let Some(mut connection) = state.store.connection(&claim.connection_id).await? else {
        return Err(invalid());
    };
    if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
        connection.name = Some(name.trim().to_owned());
    }
    let new_callback = callback_url.clone();
    if callback_url.is_some() {
        connection.callback_url = callback_url;
    }
    connection.claimed_at_ms = Some(now);
    connection.updated_at_ms = now;
    state.store.update_connection(&connection).await?;
    // The authorization's event was written before the callback URL was known: it goes there
    // too.
    if let Some(url) = new_callback {
        state
            .store
            .add_connection_event_target(
                &connection.id,
                claim.created_at_ms,
                &lwa_store::EventTarget::Callback(url),
                now,
            )
            .await?;
        state.webhooks.wake();
    }
    let handle = handle(&connection.id, secret.as_ref());
    Ok(Claimed { connection, handle })
}

/// `POST /api/claim-code`.
pub async fn claim_compat(
    State(state): State<AppState>,
    CompatAuth(auth): CompatAuth,
    body: Result<Json<CompatClaim>, ApiError>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return e.shape(Shape::Compat).into_response(),
    };
    match claim(
        &state,
        &auth.tenant.id,
        &body.code,
        body.seller_id.as_deref(),
        body.name,
        body.callback_url,
    )
    .await
    {
        Ok(c) => {
            let mut data = view(&c.connection);
            data["seller_id"] = json!(c.connection.id);
            data["handle"] = json!(c.handle);
            data["refresh_token"] = json!(c.handle);
            axum::Json(json!({"success": true, "data": data})).into_response()
        }
        Err(e) => e.shape(Shape::Compat).into_response(),
    }
}

/// `POST /v1/claims`.
pub async fn claim_v1(
    State(state): State<AppState>,
    auth: TenantAuth,
    Json(body): Json<Claim>,
) -> Result<Response, ApiError> {
    let c = claim(
        &state,
        &auth.tenant.id,
        &body.code,
        None,
        body.name,
        body.callback_url,
    )
    .await?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({"connection": view(&c.connection), "handle": c.handle})),
    )
        .into_response())
}

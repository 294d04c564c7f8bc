//! Server-made one-time links: `POST /v1/connect-links` (no secret passes through a browser),
//! `POST /v1/connections/{id}/reauthorize-link` (the completion updates *that* connection, the
//! only way to re-authorize Ads), and `GET /auth/connect/{token}` that starts the flow.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lwa::{Api, Marketplace, Region};
use lwa_store::ConnectLink;
use serde::Deserialize;
use serde_json::json;

use super::redirect_url::{RedirectOrigin, RedirectUrl};
use super::{
    Flow, consent_url, parse_account_type, parse_api, parse_marketplace, redirect, start, tenant_app,
};
use crate::auth::TenantAuth;
use crate::error::{ApiError, Shape};
use crate::extract::{Json, PathParam};
use crate::ids;
use crate::sealing::TokenSecret;
use crate::state::AppState;
use crate::time::rfc3339;

/// Default life of a link: 24 hours (at most 7 days).
const DEFAULT_LINK_TTL_S: u64 = 24 * 3600;
const MAX_LINK_TTL_S: u64 = 7 * 24 * 3600;

/// `POST /v1/connect-links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnectLink {
    pub api: Option<String>,
    pub region: Option<String>,
    pub marketplace: Option<String>,
    pub state: String,
    pub redirect_url: String,
    pub token_secret: Option<String>,
    pub account_type: Option<String>,
    pub expires_in: Option<u64>,
}

/// `POST /v1/connections/{id}/reauthorize-link`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewReauthorizeLink {
    pub state: Option<String>,
    pub redirect_url: String,
    pub token_secret: Option<String>,
    pub expires_in: Option<u64>,
}

fn redirect_url(tenant: &lwa_store::Tenant, url: &str) -> Result<RedirectUrl, ApiError> {
    let origins: Vec<RedirectOrigin> = tenant
        .redirect_origins
        .iter()
        .filter_map(|o| RedirectOrigin::parse(o).ok())
        .collect();
    RedirectUrl::parse(url, &origins).map_err(|e| {
        ApiError::bad_request(
            "invalid_redirect_url",
            format!("redirect_url must lie under one of the tenant's redirect origins: {e}"),
        )
    })
}

fn secret(value: Option<&str>) -> Result<Option<TokenSecret>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => TokenSecret::parse(v).map(Some).ok_or_else(|| {
            ApiError::bad_request("invalid_token_secret", "token_secret must be 32-64 characters")
        }),
    }
}

fn ttl(expires_in: Option<u64>) -> Result<i64, ApiError> {
    let seconds = expires_in.unwrap_or(DEFAULT_LINK_TTL_S);
    if seconds == 0 || seconds > MAX_LINK_TTL_S {
        return Err(ApiError::bad_request(
            "invalid_expires_in",
            "expires_in must be 1 to 604800 seconds",
        ));
    }
    Ok(seconds as i64 * 1000)
}

async fn store_link(
    state: &AppState,
    mut link: ConnectLink,
    secret: Option<&TokenSecret>,
) -> Result<(String, i64), ApiError> {
    let token = ids::new_secret();
    link.token_hash = ids::hash(&token);
    link.token_secret = secret.map(|s| {
        state
            .sealer
            .seal(&link.token_hash, "token_secret", s.expose(), None)
    });
    state.store.insert_connect_link(&link).await?;
    Ok((
        state.public(&format!("/auth/connect/{token}")),
        link.expires_at_ms,
    ))
}

fn created((url, expires_at_ms): (String, i64)) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(json!({"url": url, "expires_at": rfc3339(expires_at_ms)})),
    )
        .into_response()
}

/// Creates a connect link.
pub async fn create_connect_link(
    State(state): State<AppState>,
    auth: TenantAuth,
    Json(body): Json<NewConnectLink>,
) -> Result<Response, ApiError> {
    new_connect_link(&state, &auth.tenant, body).await.map(created)
}

/// Makes a connect link for a tenant: its URL and expiry (Unix ms).
pub async fn new_connect_link(
    state: &AppState,
    tenant: &lwa_store::Tenant,
    body: NewConnectLink,
) -> Result<(String, i64), ApiError> {
    if body.state.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_state", "state is required"));
    }
    let api = parse_api(body.api.as_deref())?;
    let marketplace = match body.marketplace.as_deref() {
        Some(m) => Some(Marketplace::parse(m).map_err(|_| {
            ApiError::bad_request("invalid_marketplace", "marketplace is not a known marketplace id")
        })?),
        None => None,
    };
    let region = match (body.region.as_deref(), marketplace) {
        (Some(r), _) => Region::parse(r).map_err(|_| {
            ApiError::bad_request(
                "invalid_region",
                "region must be na, eu, fe or an AWS region name",
            )
        })?,
        (None, Some(m)) => m.region,
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_region",
                "give region or marketplace",
            ));
        }
    };
    let marketplace = parse_marketplace(body.marketplace.as_deref(), region)?;
    let account_type = parse_account_type(body.account_type.as_deref())?;
    let app = tenant_app(state, tenant, api)?;
    let redirect_url = redirect_url(tenant, &body.redirect_url)?;
    let secret = secret(body.token_secret.as_deref())?;
    let now = state.now_ms();
    let link = ConnectLink {
        token_hash: String::new(),
        tenant_id: tenant.id.clone(),
        app: app.name.clone(),
        api: api.as_str().to_owned(),
        region: region.as_str().to_owned(),
        account_type: (api == Api::SpApi).then(|| account_type.as_str().to_owned()),
        marketplace_id: marketplace.map(|m| m.id.to_owned()),
        client_state: body.state,
        redirect_url: redirect_url.as_str().to_owned(),
        token_secret: None,
        connection_id: None,
        created_at_ms: now,
        expires_at_ms: now + ttl(body.expires_in)?,
        used_at_ms: None,
    };
    store_link(state, link, secret.as_ref()).await
}

/// Creates a re-authorization link for one connection.
pub async fn create_reauthorize_link(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    Json(body): Json<NewReauthorizeLink>,
) -> Result<Response, ApiError> {
    let connection = crate::connections::owned(&state, &auth, &id).await?;
    let redirect_url = redirect_url(&auth.tenant, &body.redirect_url)?;
    let secret = secret(body.token_secret.as_deref())?;
    if connection.tenant_secret && secret.is_none() {
        return Err(ApiError::bad_request(
            "token_secret_required",
            "this connection's tokens are sealed with a tenant-held secret: pass token_secret",
        ));
    }
    let now = state.now_ms();
    let link = ConnectLink {
        token_hash: String::new(),
        tenant_id: auth.tenant.id.clone(),
        app: connection.app.clone(),
        api: connection.api.clone(),
        region: connection.region.clone(),
        account_type: connection.account_type.clone(),
        marketplace_id: connection.marketplace_id.clone(),
        client_state: body.state.unwrap_or_default(),
        redirect_url: redirect_url.as_str().to_owned(),
        token_secret: None,
        connection_id: Some(connection.id.clone()),
        created_at_ms: now,
        expires_at_ms: now + ttl(body.expires_in)?,
        used_at_ms: None,
    };
    store_link(&state, link, secret.as_ref()).await.map(created)
}

/// `GET /auth/connect/{token}`: uses the link once and sends the seller to Amazon.
pub async fn follow_link(State(state): State<AppState>, token: Result<PathParam, ApiError>) -> Response {
    let html = |status: StatusCode, message: &str| {
        ApiError::new(status, "invalid_link", message)
            .shape(Shape::Html)
            .into_response()
    };
    let Ok(PathParam(token)) = token else {
        return html(
            StatusCode::NOT_FOUND,
            "This connection link is not valid. Ask the application for a new one.",
        );
    };
    let now = state.now_ms();
    let link = match state.store.take_connect_link(&ids::hash(&token), now).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                "This connection link is unknown or was already used. Ask the application for a new one.",
            );
        }
        Err(e) => return ApiError::from(e).shape(Shape::Html).into_response(),
    };
    if link.expires_at_ms <= now {
        return html(
            StatusCode::GONE,
            "This connection link has expired. Ask the application for a new one.",
        );
    }
    let result = async {
        let app = state
            .app(&link.app)
            .cloned()
            .ok_or_else(|| ApiError::bad_request("no_app", "the app of this link is no longer configured"))?;
        let region = Region::parse(&link.region).map_err(|e| ApiError::internal("stored region", e))?;
        let secret = match &link.token_secret {
            None => None,
            Some(sealed) => TokenSecret::parse(
                &state
                    .sealer
                    .open(&link.token_hash, "token_secret", sealed, None)
                    .map_err(|e| ApiError::internal("opening a link's token secret", e))?,
            ),
        };
        let flow = Flow {
            tenant_id: link.tenant_id.clone(),
            app,
            region,
            account_type: parse_account_type(link.account_type.as_deref())?,
            marketplace: link
                .marketplace_id
                .as_deref()
                .and_then(|m| Marketplace::parse(m).ok()),
            client_state: link.client_state.clone(),
            redirect_url: link.redirect_url.clone(),
            token_secret: secret,
            connection_id: link.connection_id.clone(),
            origin: if link.connection_id.is_some() {
                "reauthorize"
            } else {
                "connect_link"
            },
        };
        let started = start(&state, &flow).await?;
        consent_url(&state, &flow, &started)
    }
    .await;
    match result {
        Ok(url) => redirect(&url),
        Err(e) => e.shape(Shape::Html).into_response(),
    }
}

/// The dashboard's "copy a re-authorization link": a link for one connection, valid 7 days,
/// that returns the seller to the tenant's first redirect origin. Not for a connection sealed
/// under a tenant-held secret (only the tenant has it).
pub async fn operator_reauthorize_link(state: &AppState, connection_id: &str) -> Result<String, ApiError> {
    let connection = state
        .store
        .connection(connection_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no connection {connection_id}")))?;
    if connection.tenant_secret {
        return Err(ApiError::bad_request(
            "token_secret_required",
            "this connection's tokens are sealed with a tenant-held secret: only the tenant can make its link",
        ));
    }
    let tenant = state
        .store
        .tenant(&connection.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {}", connection.tenant_id)))?;
    let origin = tenant
        .redirect_origins
        .first()
        .ok_or_else(|| ApiError::bad_request("invalid_tenant", "the tenant has no redirect origin"))?;
    let redirect_url = redirect_url(&tenant, origin)?;
    let now = state.now_ms();
    let link = ConnectLink {
        token_hash: String::new(),
        tenant_id: tenant.id.clone(),
        app: connection.app.clone(),
        api: connection.api.clone(),
        region: connection.region.clone(),
        account_type: connection.account_type.clone(),
        marketplace_id: connection.marketplace_id.clone(),
        client_state: String::new(),
        redirect_url: redirect_url.as_str().to_owned(),
        token_secret: None,
        connection_id: Some(connection.id.clone()),
        created_at_ms: now,
        expires_at_ms: now + ttl(Some(MAX_LINK_TTL_S))?,
        used_at_ms: None,
    };
    Ok(store_link(state, link, None).await?.0)
}

//! `GET /auth/initialize`, compatible with seed 003: its parameters, its 400 messages in its
//! order, its 429, then a 302 to Amazon's consent page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use lwa::Region;

use super::redirect_url::{RedirectOrigin, RedirectUrl};
use super::{
    ClientAddr, Flow, consent_url, parse_account_type, parse_api, parse_marketplace, query_map, redirect,
    start, tenant_app,
};
use crate::error::{ApiError, Shape, wants_html};
use crate::sealing::TokenSecret;
use crate::state::AppState;

fn fail(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let shape = if wants_html(headers) {
        Shape::Html
    } else {
        Shape::Compat
    };
    ApiError::new(status, "bad_request", message)
        .shape(shape)
        .into_response()
}

/// The handler.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn initialize(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(retry_after) = state.initialize_limiter.check(client.0, state.now_ms()) {
        let shape = if wants_html(&headers) {
            Shape::Html
        } else {
            Shape::Compat
        };
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Rate limit exceeded",
        )
        .shape(shape)
        .header(header::RETRY_AFTER, &retry_after.to_string())
        .into_response();
    }
    let q = query_map(uri.query());
    let get = |name: &str| q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let bad = |message: &str| fail(&headers, StatusCode::BAD_REQUEST, message);

    let Some(client_state) = get("state") else {
        return bad("state is required");
    };
    let Some(tenant_id) = get("tenantId") else {
        return bad("tenantId is required");
    };
    let tenant = match state.store.tenant(tenant_id).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => return bad("Tenant data not found"),
        Err(e) => return ApiError::from(e).shape(Shape::Compat).into_response(),
    };
    let Some(region) = get("marketplace_region").and_then(|r| Region::parse(r).ok()) else {
        return bad("marketplace_region is required");
    };
    // Checked by length only, as the seed does; never echoed or logged.
    let Some(secret) = q.get("amazonTokenSecret").and_then(|s| TokenSecret::parse(s)) else {
        return bad("amazonTokenSecret must be 32-64 characters");
    };
    let origins: Vec<RedirectOrigin> = tenant
        .redirect_origins
        .iter()
        .filter_map(|o| RedirectOrigin::parse(o).ok())
        .collect();
    let Some(redirect_url) = q
        .get("sellerRedirectUrl")
        .and_then(|u| RedirectUrl::parse(u, &origins).ok())
    else {
        return bad("sellerRedirectUrl must start with redirectOrigin");
    };
    // Our additions, after the seed's checks.
    let flow = (|| {
        let api = parse_api(get("api"))?;
        let account_type = parse_account_type(get("account_type"))?;
        let marketplace = parse_marketplace(get("marketplace"), region)?;
        let app = tenant_app(&state, &tenant, api)?;
        Ok::<_, ApiError>(Flow {
            tenant_id: tenant.id.clone(),
            app,
            region,
            account_type,
            marketplace,
            client_state: client_state.to_owned(),
            redirect_url: redirect_url.as_str().to_owned(),
            token_secret: Some(secret),
            connection_id: None,
            origin: "initialize",
        })
    })();
    let flow = match flow {
        Ok(flow) => flow,
        Err(e) => return bad(&e.message),
    };
    match start(&state, &flow)
        .await
        .and_then(|started| consent_url(&state, &flow, &started))
    {
        Ok(url) => redirect(&url),
        Err(e) => e.shape(Shape::Compat).into_response(),
    }
}

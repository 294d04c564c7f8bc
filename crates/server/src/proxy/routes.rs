//! The proxy's routes: `ANY /v1/connections/{id}/proxy/{path}`, Amazon's own paths at the
//! broker's root for callers holding a stand-in token, the stand-in RDT, and the operator's
//! metrics.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lwa::restricted::RestrictedResource;
use serde::Deserialize;
use serde_json::json;

use super::standin::{self, StandInError, is_stand_in};
use super::{Caller, forward};
use crate::audit::{Kind, Via};
use crate::auth::{TenantAuth, split_key, verify};
use crate::error::ApiError;
use crate::operator::AdminAuth;
use crate::state::AppState;
use crate::vend::routes::{RdtBody, no_store, presented_secret, rdt_request, v1_error};

/// What the caller presented.
enum Presented<'a> {
    Key(&'a str),
    StandIn(&'a str),
    Nothing,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let amazon = headers
        .get("x-amz-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match (bearer, amazon) {
        (Some(t), _) if is_stand_in(t) => Presented::StandIn(t),
        (_, Some(t)) if is_stand_in(t) => Presented::StandIn(t),
        (Some(t), _) => Presented::Key(t),
        _ => Presented::Nothing,
    }
}

/// The tenant behind a stand-in, checked: issued here, unexpired, its key still valid.
async fn stand_in_caller(state: &AppState, token: &str, amazon_errors: bool) -> Result<Caller, ApiError> {
    let opened = standin::open(&state.sealer, token, state.now_ms()).map_err(|e| {
        ApiError::unauthorized(match e {
            StandInError::Invalid => "the token is not a stand-in token this broker issued",
            StandInError::Expired => "the stand-in token has expired; ask /auth/o2/token for a new one",
        })
    })?;
    let key = state.api_key(&opened.key_id).await?;
    let Some(key) = key.filter(|k| k.key.revoked_at_ms.is_none() && k.tenant.id == opened.tenant_id) else {
        return Err(ApiError::unauthorized(
            "the API key this stand-in token was issued to is revoked",
        ));
    };
    state.touch_key(&key).await;
    Ok(Caller {
        auth: TenantAuth {
            tenant: key.tenant,
            key: key.key,
        },
        connection_id: opened.connection_id,
        secret: opened.secret,
        stand_ins_only: true,
        stand_in_rdt: opened.rdt,
        amazon_errors,
    })
}

/// `ANY /v1/connections/{id}/proxy/{path}`: an API key (`Authorization: Bearer lwak_…`, with
/// `x-amazon-token-secret` for a tenant-held secret) or a stand-in token for this connection.
pub async fn connection_proxy(State(state): State<AppState>, request: Request) -> Response {
    // The raw path: the router's decoded form would hide `%2f` and `%2e`.
    let raw = request.uri().path().to_owned();
    let Some(rest) = raw.strip_prefix("/v1/connections/") else {
        return ApiError::not_found("no such route").into_response();
    };
    let (id, amazon_path) = match rest.split_once("/proxy") {
        Some((id, path)) if !id.is_empty() && !id.contains('/') && path.starts_with('/') => (id, path),
        _ => return ApiError::not_found("no such route").into_response(),
    };
    let caller = match presented(request.headers()) {
        Presented::Key(key) => {
            let Some((key_id, secret)) = split_key(key) else {
                return ApiError::unauthorized("invalid or revoked API key").into_response();
            };
            match verify(&state, key_id, secret).await {
                Ok(Some((tenant, key))) => Caller {
                    stand_ins_only: key.scope == "proxy-only",
                    auth: TenantAuth { tenant, key },
                    connection_id: id.to_owned(),
                    secret: presented_secret(request.headers()),
                    stand_in_rdt: None,
                    amazon_errors: false,
                },
                Ok(None) => return ApiError::unauthorized("invalid or revoked API key").into_response(),
                Err(e) => return e.into_response(),
            }
        }
        Presented::StandIn(token) => match stand_in_caller(&state, token, false).await {
            Ok(caller) if caller.connection_id == id => caller,
            Ok(_) => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "stand_in_other_connection",
                    "this stand-in token was issued for another connection",
                )
                .into_response();
            }
            Err(e) => return e.into_response(),
        },
        Presented::Nothing => {
            return ApiError::unauthorized(
                "missing credentials: send Authorization: Bearer <API key>, or a stand-in token",
            )
            .into_response();
        }
    };
    forward(&state, caller, amazon_path, request).await
}

/// Any path the router does not know: Amazon's own path when the request carries a stand-in
/// token (the token names the connection), else 404.
pub async fn root(State(state): State<AppState>, request: Request) -> Response {
    let token = match presented(request.headers()) {
        Presented::StandIn(token) => token.to_owned(),
        _ => return ApiError::not_found("no such route").into_response(),
    };
    let caller = match stand_in_caller(&state, &token, true).await {
        Ok(caller) => caller,
        Err(e) => {
            return super::amazon_error(ApiError {
                status: StatusCode::FORBIDDEN,
                ..e
            });
        }
    };
    let path = request.uri().path().to_owned();
    forward(&state, caller, &path, request).await
}

/// A `createRestrictedDataToken` body as an SDK sends it. Unlike `/v1`'s strict [`RdtBody`],
/// fields beside these are ignored, as Amazon ignores them: python-amazon-sp-api adds
/// `marketplaceIds` and `MarketplaceIds` to every POST body it sends. The resources stay strict.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SdkRdtBody {
    restricted_resources: Vec<RestrictedResource>,
    target_application: Option<String>,
}

/// The SDK's `createRestrictedDataToken` from a caller that holds only stand-ins: a real RDT is
/// minted (or reused from the cache) and a stand-in for it returned in the Tokens API's shape.
pub(super) async fn stand_in_rdt(
    state: &AppState,
    caller: &Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, super::REPLAY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "body_unreadable",
                "the request body could not be read or is too large",
            )
        })?;
    let parsed: SdkRdtBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "InvalidInput",
            format!("the body is not a createRestrictedDataToken request: {e}"),
        )
    })?;
    let request = rdt_request(RdtBody {
        restricted_resources: parsed.restricted_resources,
        target_application: parsed.target_application,
    })?;
    let id = caller.connection_id.as_str();
    let token = state
        .vendor
        .restricted_data_token(
            state,
            &caller.auth.tenant.id,
            id,
            caller.secret.as_ref(),
            request.clone(),
        )
        .await
        .map_err(|e| v1_error(e, Some(id)))?;
    let now = state.now_ms();
    let detail = request.audit_detail();
    state.auditor.record(
        now,
        &caller.auth,
        Some(id),
        Kind::RestrictedDataToken,
        Via::Proxy,
        Some(detail),
    );
    let stand_in = standin::issue(
        &state.sealer,
        &standin::StandIn {
            key_id: caller.auth.key.id.clone(),
            tenant_id: caller.auth.tenant.id.clone(),
            connection_id: id.to_owned(),
            expires_at_ms: token.expires_at_ms,
            secret: caller.secret.clone(),
            rdt: Some(request),
        },
    );
    Ok(no_store(
        axum::Json(json!({
            "restrictedDataToken": stand_in,
            "expiresIn": token.expires_in(now),
        }))
        .into_response(),
    ))
}

/// `GET /admin/api/proxy/metrics`: the proxy's counters (operator only).
pub async fn metrics(_: AdminAuth, State(state): State<AppState>) -> Response {
    let snapshot = state.proxy.metrics.snapshot(state.vendor.rdts_minted());
    axum::Json(snapshot).into_response()
}

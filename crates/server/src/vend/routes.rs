//! The `/v1` vending routes: a connection's access token, grantless tokens, and Restricted Data
//! Tokens.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lwa::restricted::{self, RestrictedResource};
use serde::{Deserialize, Serialize};

use super::{CachedToken, RdtRequest, VendError};
use crate::audit::{Kind, Via};
use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::extract::{Json, PathParam};
use crate::onboarding::tenant_app;
use crate::sealing::TokenSecret;
use crate::state::AppState;

/// The header that carries a tenant-held secret on `/v1`.
pub const TOKEN_SECRET_HEADER: &str = "x-amazon-token-secret";

/// The tenant-held secret the request carries, if any. A malformed one counts as none (so it is
/// refused exactly like a wrong one where a secret is needed).
pub fn presented_secret(headers: &HeaderMap) -> Option<TokenSecret> {
    headers
        .get(TOKEN_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TokenSecret::parse(v.trim()))
}

/// The `x-amazon-token-secret` header, read without copying the other headers.
#[derive(Debug)]
pub struct Presented(pub Option<TokenSecret>);

impl<S: Send + Sync> FromRequestParts<S> for Presented {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Presented(presented_secret(&parts.headers)))
    }
}

/// A vending failure on `/v1`.
pub fn v1_error(e: VendError, id: Option<&str>) -> ApiError {
    match e {
        VendError::NotFound => ApiError::not_found(format!("no connection {}", id.unwrap_or(""))),
        VendError::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this connection can only be used with its token secret in x-amazon-token-secret",
        ),
        VendError::NeedsReauth => ApiError::new(
            StatusCode::CONFLICT,
            "needs_reauth",
            "Amazon refused this connection's refresh token: the seller must authorize again \
             (POST /v1/connections/{id}/reauthorize-link gives a link)",
        ),
        VendError::Disconnected => ApiError::new(
            StatusCode::CONFLICT,
            "disconnected",
            "this connection was disconnected and has no tokens",
        ),
        VendError::Unavailable {
            message,
            retry_after_s,
        } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "amazon_unavailable",
            format!("Amazon did not give a token; try again: {message}"),
        )
        .header(header::RETRY_AFTER, &retry_after_s.to_string()),
        VendError::Configuration(message) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "amazon_refused_app", message)
        }
        VendError::Rejected { status, message } => {
            let (status, code) = match status {
                400 | 404 => (StatusCode::BAD_REQUEST, "amazon_rejected"),
                401 | 403 => (StatusCode::FORBIDDEN, "amazon_denied"),
                _ => (StatusCode::BAD_GATEWAY, "amazon_error"),
            };
            ApiError::new(status, code, format!("Amazon answered: {message}"))
        }
        VendError::RateLimited { retry_after_s } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "over the Tokens API's rate for this connection (1 a second, burst 10); try again",
        )
        .header(header::RETRY_AFTER, &retry_after_s.to_string()),
        VendError::BadRequest { code, message } => ApiError::bad_request(code, message),
        VendError::Store(cause) => ApiError::unavailable("the store failed while vending", cause),
        VendError::Internal(cause) => ApiError::internal("vending failed", cause),
    }
}

/// Refuses proxy-only keys on routes that hand out Amazon tokens.
pub fn full_key(auth: &TenantAuth) -> Result<(), ApiError> {
    if auth.key.scope == "proxy-only" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "proxy_only_key",
            "this API key is proxy-only: it cannot receive Amazon tokens",
        ));
    }
    Ok(())
}

/// A token as JSON, never cached by anyone on the way: `access_token`, `token_type`,
/// `expires_at`, `expires_in` and, for a grantless token, `scope`. Written straight into a
/// buffer of the right size, the token copied as it is when it needs no escaping (Amazon's
/// never do): this is the hot path of every vend.
fn token_response(token: &CachedToken, now: i64, scope: Option<&str>) -> Response {
    let secret = token.token.expose();
    let mut body =
        Vec::with_capacity(secret.len() + token.expires_at.len() + scope.map_or(0, str::len) + 112);
    body.extend_from_slice(b"{\"access_token\":");
    push_json_str(&mut body, secret, token.json_plain);
    body.extend_from_slice(b",\"token_type\":\"bearer\",\"expires_at\":");
    push_json_str(&mut body, &token.expires_at, false);
    body.extend_from_slice(b",\"expires_in\":");
    body.extend_from_slice(token.expires_in(now).to_string().as_bytes());
    if let Some(scope) = scope {
        body.extend_from_slice(b",\"scope\":");
        push_json_str(&mut body, scope, false);
    }
    body.push(b'}');
    let mut response = Response::new(axum::body::Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(response)
}

/// `text` as a JSON string; `plain`: it needs no escaping (see [`super::json_plain`]).
fn push_json_str(out: &mut Vec<u8>, text: &str, plain: bool) {
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing JSON to memory cannot fail");
    }
}

pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /v1/connections/{id}/access-token`.
pub async fn access_token(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    Presented(secret): Presented,
) -> Result<Response, ApiError> {
    full_key(&auth)?;
    let token = state
        .vendor
        .access_token(&state, &auth.tenant.id, &id, secret.as_ref(), true)
        .await
        .map_err(|e| v1_error(e, Some(&id)))?;
    let now = state.now_ms();
    state
        .auditor
        .record(now, &auth, Some(&id), Kind::AccessToken, Via::V1, None);
    Ok(token_response(&token, now, None))
}

/// `POST /v1/grantless-tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantlessBody {
    pub scope: Scopes,
}

/// One scope, several space-separated, or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scopes {
    One(String),
    List(Vec<String>),
}

/// The requested scopes, sorted and deduplicated, each one the operator allows tenants.
pub fn allowed_scopes(state: &AppState, requested: &[&str]) -> Result<Vec<String>, VendError> {
    let mut scopes: Vec<String> = requested
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(VendError::BadRequest {
            code: "invalid_scope",
            message: "give a scope, such as sellingpartnerapi::notifications".into(),
        });
    }
    if let Some(bad) = scopes.iter().find(|s| !state.grantless_scopes.contains(s)) {
        let shown: String = bad.chars().take(100).collect();
        return Err(VendError::BadRequest {
            code: "scope_not_allowed",
            message: format!(
                "scope {shown:?} is not one this broker hands out; allowed: {}",
                state.grantless_scopes.join(", ")
            ),
        });
    }
    Ok(scopes)
}

/// `POST /v1/grantless-tokens`.
pub async fn grantless(
    State(state): State<AppState>,
    auth: TenantAuth,
    Json(body): Json<GrantlessBody>,
) -> Result<Response, ApiError> {
    full_key(&auth)?;
    let requested: Vec<&str> = match &body.scope {
        Scopes::One(s) => vec![s.as_str()],
        Scopes::List(list) => list.iter().map(String::as_str).collect(),
    };
    let scopes = allowed_scopes(&state, &requested).map_err(|e| v1_error(e, None))?;
    let app = tenant_app(&state, &auth.tenant, lwa::Api::SpApi)?;
    let token = state
        .vendor
        .grantless(&state, &app.name, &scopes)
        .await
        .map_err(|e| v1_error(e, None))?;
    let now = state.now_ms();
    let scope = scopes.join(" ");
    state.auditor.record(
        now,
        &auth,
        None,
        Kind::GrantlessToken,
        Via::V1,
        Some(scope.clone()),
    );
    Ok(token_response(&token, now, Some(&scope)))
}

/// `POST /v1/connections/{id}/restricted-data-token` body (the Tokens API's own shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdtBody {
    pub restricted_resources: Vec<RestrictedResource>,
    pub target_application: Option<String>,
}

const DATA_ELEMENTS: &[&str] = &["buyerInfo", "shippingAddress", "buyerTaxInformation"];

/// Checks an RDT request as the Tokens API model does, and makes it canonical.
pub fn rdt_request(body: RdtBody) -> Result<RdtRequest, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_restricted_resources", message);
    if body.restricted_resources.is_empty() || body.restricted_resources.len() > 50 {
        return Err(bad("restrictedResources must list 1 to 50 resources".into()));
    }
    for (i, r) in body.restricted_resources.iter().enumerate() {
        if !matches!(
            r.method.trim().to_ascii_uppercase().as_str(),
            "GET" | "PUT" | "POST" | "DELETE"
        ) {
            return Err(bad(format!(
                "restrictedResources[{i}].method must be GET, PUT, POST or DELETE"
            )));
        }
        let path_ok = r.path.starts_with('/')
            && r.path.len() <= 1024
            && !r.path.contains("..")
            && !r.path.contains("//")
            && r.path
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '?' && c != '#');
        if !path_ok {
            return Err(bad(format!(
                "restrictedResources[{i}].path must be an SP-API path such as /orders/v0/orders/{{orderId}}/address"
            )));
        }
        if let Some(e) = r
            .data_elements
            .iter()
            .find(|e| !DATA_ELEMENTS.contains(&e.as_str()))
        {
            let shown: String = e.chars().take(40).collect();
            return Err(bad(format!(
                "restrictedResources[{i}].dataElements: {shown:?} is not buyerInfo, shippingAddress or buyerTaxInformation"
            )));
        }
    }
    if let Some(target) = &body.target_application
        && (target.is_empty()
            || target.len() > 200
            || !target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(ApiError::bad_request(
            "invalid_target_application",
            "targetApplication must be an application id such as amzn1.sp.solution.…",
        ));
    }
    Ok(RdtRequest {
        resources: restricted::canonical_set(&body.restricted_resources),
        target_application: body.target_application,
    })
}

#[derive(Serialize)]
struct RdtAnswer<'a> {
    restricted_data_token: &'a str,
    expires_at: &'a str,
    expires_in: i64,
    restricted_resources: &'a [RestrictedResource],
    #[serde(skip_serializing_if = "Option::is_none")]
    target_application: Option<&'a str>,
}

/// `POST /v1/connections/{id}/restricted-data-token`.
pub async fn restricted_data_token(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    Presented(secret): Presented,
    Json(body): Json<RdtBody>,
) -> Result<Response, ApiError> {
    full_key(&auth)?;
    let request = rdt_request(body)?;
    let token = state
        .vendor
        .restricted_data_token(&state, &auth.tenant.id, &id, secret.as_ref(), request.clone())
        .await
        .map_err(|e| v1_error(e, Some(&id)))?;
    let now = state.now_ms();
    let detail = request.audit_detail();
    state.auditor.record(
        now,
        &auth,
        Some(&id),
        Kind::RestrictedDataToken,
        Via::V1,
        Some(detail),
    );
    let body = RdtAnswer {
        restricted_data_token: token.token.expose(),
        expires_at: &token.expires_at,
        expires_in: token.expires_in(now),
        restricted_resources: &request.resources,
        target_application: request.target_application.as_deref(),
    };
    Ok(no_store(axum::Json(body).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    async fn body_of(token: &str, scope: Option<&str>) -> (Value, Response) {
        let cached = CachedToken::new(lwa::AccessToken::new(token), 1_790_000_000_000, None);
        // Amazon's tokens take the path without escaping.
        assert_eq!(cached.json_plain, token.starts_with("Atza|"), "{token:?}");
        let mut response = token_response(&cached, 1_789_999_000_500, scope);
        let body = std::mem::take(response.body_mut());
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (serde_json::from_slice(&bytes).unwrap(), response)
    }

    #[tokio::test]
    async fn a_token_answer_is_the_json_of_its_fields_whether_or_not_the_token_needs_escaping() {
        for token in ["Atza|IwEBIA-plain_token+/=.~", "odd \"quoted\" \\ token\n\u{1}é"] {
            for scope in [None, Some("sellingpartnerapi::notifications")] {
                let (body, response) = body_of(token, scope).await;
                let mut expected = json!({
                    "access_token": token,
                    "token_type": "bearer",
                    "expires_at": crate::time::rfc3339(1_790_000_000_000),
                    "expires_in": 999,
                });
                if let Some(scope) = scope {
                    expected["scope"] = json!(scope);
                }
                assert_eq!(body, expected);
                let headers = response.headers();
                assert_eq!(headers[header::CONTENT_TYPE], "application/json");
                assert_eq!(headers[header::CACHE_CONTROL], "no-store");
                assert_eq!(headers[header::PRAGMA], "no-cache");
            }
        }
    }
}

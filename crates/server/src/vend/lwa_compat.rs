//! `POST /auth/o2/token`: LWA's own token protocol, so an unmodified SDK works against the
//! broker by changing only its token URL.
//!
//! - Client authentication: the tenant's API key id as `client_id` (`lwak_<id>` also works) and
//!   its secret as `client_secret`, in the body or in HTTP Basic (not both, as at Amazon).
//! - `grant_type=refresh_token` with a connection **handle** as `refresh_token` answers the
//!   connection's current Amazon access token, the handle echoed as `refresh_token` and
//!   `expires_in` the time it has left.
//! - `grant_type=client_credentials` with `scope` answers a grantless token.
//! - A **proxy-only** key gets a stand-in token (`lwas_…`, see [`crate::proxy::standin`]) in
//!   place of the Amazon token: it works only on this broker's proxy and expires with the token
//!   it stands for. Grantless tokens are refused to such keys.
//! - Bodies: `application/x-www-form-urlencoded` (or no content type) and `application/json`.
//! - Errors: LWA's `{"error_description","error","request_id"}` with LWA's statuses; an unknown,
//!   foreign, disconnected or secret-less handle is the same `invalid_grant`, so the answer
//!   tells nothing about other tenants' connections.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::VendError;
use super::routes::{allowed_scopes, no_store};
use crate::audit::{Kind, Via};
use crate::auth::{KEY_PREFIX, TenantAuth, verify};
use crate::extract::read_body;
use crate::onboarding::parse_handle;
use crate::proxy::standin;
use crate::state::AppState;

/// An error in LWA's shape.
#[derive(Debug)]
pub struct LwaFailure {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after_s: Option<u64>,
}

impl LwaFailure {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> LwaFailure {
        LwaFailure {
            status,
            error,
            description: description.into(),
            retry_after_s: None,
        }
    }

    fn missing(name: &str) -> LwaFailure {
        LwaFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("The request is missing a required parameter : {name}"),
        )
    }

    fn invalid_request(description: impl Into<String>) -> LwaFailure {
        LwaFailure::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> LwaFailure {
        LwaFailure::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        )
    }

    fn invalid_grant() -> LwaFailure {
        LwaFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The request has an invalid grant parameter : refresh_token",
        )
    }
}

impl IntoResponse for LwaFailure {
    fn into_response(self) -> Response {
        let request_id = hex::encode(rand::random::<[u8; 16]>());
        let body = json!({
            "error_description": self.description,
            "error": self.error,
            "request_id": request_id,
        });
        let mut response = lwa_json(self.status, &body);
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn lwa_json(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = no_store((status, axum::Json(body)).into_response());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// A vending failure in LWA's terms.
fn lwa_error(e: VendError) -> LwaFailure {
    match e {
        VendError::NotFound | VendError::Forbidden | VendError::Disconnected => LwaFailure::invalid_grant(),
        VendError::NeedsReauth => LwaFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The request has an invalid grant parameter : refresh_token. User may have revoked or didn't grant the permission.",
        ),
        VendError::Unavailable {
            message,
            retry_after_s,
        } => LwaFailure {
            retry_after_s: Some(retry_after_s),
            ..LwaFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                message,
            )
        },
        VendError::RateLimited { retry_after_s } => LwaFailure {
            retry_after_s: Some(retry_after_s),
            ..LwaFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again",
            )
        },
        VendError::BadRequest { code, message } if code == "invalid_scope" || code == "scope_not_allowed" => {
            LwaFailure::new(StatusCode::BAD_REQUEST, "invalid_scope", message)
        }
        VendError::BadRequest {
            code: "no_app",
            message,
        } => LwaFailure::new(StatusCode::BAD_REQUEST, "unauthorized_client", message),
        VendError::BadRequest { message, .. } => LwaFailure::invalid_request(message),
        VendError::Configuration(message) | VendError::Rejected { message, .. } => {
            tracing::warn!(%message, "LWA refused the broker's app while serving /auth/o2/token");
            LwaFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Amazon refused the broker's application; the operator has been told",
            )
        }
        VendError::Store(cause) => {
            tracing::error!(error = %cause, "store failed while serving /auth/o2/token");
            LwaFailure {
                retry_after_s: Some(1),
                ..LwaFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the broker's database is unavailable; try again",
                )
            }
        }
        VendError::Internal(cause) => {
            tracing::error!(error = %cause, "/auth/o2/token failed");
            LwaFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server encountered a runtime error.",
            )
        }
    }
}

/// The request's parameters (each at most once), values zeroized on drop.
struct Params(HashMap<String, Zeroizing<String>>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty())
    }
}

fn parse_params(headers: &HeaderMap, body: &Bytes) -> Result<Params, LwaFailure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut params = HashMap::new();
    match content_type.as_str() {
        "" | "application/x-www-form-urlencoded" => {
            for (name, value) in url::form_urlencoded::parse(body) {
                if params
                    .insert(name.into_owned(), Zeroizing::new(value.into_owned()))
                    .is_some()
                {
                    return Err(LwaFailure::invalid_request(
                        "The request has a parameter more than once",
                    ));
                }
            }
        }
        "application/json" => {
            // As Amazon: a JSON content type over something that is not a JSON object is a
            // client authentication failure.
            let Ok(Members(members)) = serde_json::from_slice::<Members>(body) else {
                return Err(LwaFailure::invalid_client());
            };
            for (name, value) in members {
                let text = match value {
                    Value::String(s) => s,
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    Value::Null => continue,
                    _ => {
                        return Err(LwaFailure::invalid_request(format!(
                            "The request has an invalid parameter : {}",
                            name.chars().take(40).collect::<String>()
                        )));
                    }
                };
                if params.insert(name, Zeroizing::new(text)).is_some() {
                    return Err(LwaFailure::invalid_request(
                        "The request has a parameter more than once",
                    ));
                }
            }
        }
        _ => {
            return Err(LwaFailure::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            ));
        }
    }
    Ok(Params(params))
}

/// A JSON object's members in order, repeats kept (a map would keep only the last).
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `Authorization: Basic base64(id:secret)`, if given.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Zeroizing<String>)>, LwaFailure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| LwaFailure::invalid_client())?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(LwaFailure::invalid_client());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(LwaFailure::invalid_client());
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| LwaFailure::invalid_client())?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| LwaFailure::invalid_client())?;
    let (id, secret) = text.split_once(':').ok_or_else(LwaFailure::invalid_client)?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((decode(id), Zeroizing::new(decode(secret)))))
}

/// Checks the client credentials: the tenant's key.
async fn client(state: &AppState, headers: &HeaderMap, params: &Params) -> Result<TenantAuth, LwaFailure> {
    let basic = basic_credentials(headers)?;
    let (id, secret) = match basic {
        Some(pair) => {
            if params.get("client_secret").is_some() {
                return Err(LwaFailure::invalid_request(
                    "The request uses more than one client authentication method",
                ));
            }
            if params.get("client_id").is_some_and(|id| id != pair.0) {
                return Err(LwaFailure::invalid_request(
                    "The client_id differs from the one in the Authorization header",
                ));
            }
            pair
        }
        None => {
            let id = params
                .get("client_id")
                .ok_or_else(|| LwaFailure::missing("client_id"))?;
            let secret = params
                .get("client_secret")
                .ok_or_else(LwaFailure::invalid_client)?;
            (id.to_owned(), Zeroizing::new(secret.to_owned()))
        }
    };
    let id = id
        .strip_prefix(KEY_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or(&id);
    if id.is_empty() || id.len() > 64 || secret.len() > 256 {
        return Err(LwaFailure::invalid_client());
    }
    match verify(state, id, &secret).await {
        Ok(Some((tenant, key))) => Ok(TenantAuth { tenant, key }),
        Ok(None) => Err(LwaFailure::invalid_client()),
        Err(e) => Err(lwa_error(VendError::Store(e.message))),
    }
}

#[derive(Serialize)]
struct Granted<'a> {
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    token_type: &'static str,
    expires_in: i64,
}

/// `POST /auth/o2/token`.
pub async fn token(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    match serve(&state, &headers, request).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn serve(state: &AppState, headers: &HeaderMap, request: Request) -> Result<Response, LwaFailure> {
    let body = read_body(request, &()).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            LwaFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "The request is too large",
            )
        } else {
            LwaFailure::invalid_request("The request body could not be read")
        }
    })?;
    let params = parse_params(headers, &body)?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| LwaFailure::missing("grant_type"))?;
    if !matches!(grant_type, "refresh_token" | "client_credentials") {
        return Err(LwaFailure::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server",
        ));
    }
    let auth = client(state, headers, &params).await?;
    let proxy_only = auth.key.scope == "proxy-only";
    if proxy_only && grant_type == "client_credentials" {
        return Err(LwaFailure::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "Not authorized for requested operation: this key is proxy-only, and grantless calls do not go \
             through the proxy",
        ));
    }
    match grant_type {
        "refresh_token" => {
            if params.get("scope").is_some() {
                return Err(LwaFailure::invalid_request(
                    "The request has an invalid parameter : scope",
                ));
            }
            let handle = params
                .get("refresh_token")
                .ok_or_else(|| LwaFailure::missing("refresh_token"))?;
            let (id, secret) = parse_handle(handle).ok_or_else(LwaFailure::invalid_grant)?;
            let token = state
                .vendor
                .access_token(state, &auth.tenant.id, &id, secret.as_ref(), false)
                .await
                .map_err(lwa_error)?;
            let now = state.now_ms();
            // A proxy-only key gets a stand-in that only this broker's proxy accepts.
            let stand_in = proxy_only.then(|| {
                standin::issue(
                    &state.sealer,
                    &standin::StandIn {
                        key_id: auth.key.id.clone(),
                        tenant_id: auth.tenant.id.clone(),
                        connection_id: id.clone(),
                        expires_at_ms: token.expires_at_ms,
                        secret: secret.clone(),
                        rdt: None,
                    },
                )
            });
            state.auditor.record(
                now,
                &auth,
                Some(&id),
                Kind::AccessToken,
                Via::Lwa,
                proxy_only.then(|| "stand-in".to_owned()),
            );
            Ok(lwa_json(
                StatusCode::OK,
                &Granted {
                    access_token: stand_in.as_deref().unwrap_or(token.token.expose()),
                    refresh_token: Some(handle),
                    token_type: "bearer",
                    expires_in: token.expires_in(now),
                },
            ))
        }
        _ => {
            if params.get("refresh_token").is_some() {
                return Err(LwaFailure::invalid_request(
                    "The request has an invalid parameter : refresh_token",
                ));
            }
            let scope = params.get("scope").ok_or_else(|| LwaFailure::missing("scope"))?;
            let scopes = allowed_scopes(state, &[scope]).map_err(lwa_error)?;
            let app = state
                .app_for(&auth.tenant, lwa::Api::SpApi)
                .cloned()
                .ok_or_else(|| {
                    LwaFailure::new(
                        StatusCode::BAD_REQUEST,
                        "unauthorized_client",
                        "Not authorized for requested operation: no SP-API app is configured for this client",
                    )
                })?;
            let token = state
                .vendor
                .grantless(state, &app.name, &scopes)
                .await
                .map_err(lwa_error)?;
            let now = state.now_ms();
            let scope = scopes.join(" ");
            state
                .auditor
                .record(now, &auth, None, Kind::GrantlessToken, Via::Lwa, Some(scope));
            Ok(lwa_json(
                StatusCode::OK,
                &Granted {
                    access_token: token.token.expose(),
                    refresh_token: None,
                    token_type: "bearer",
                    expires_in: token.expires_in(now),
                },
            ))
        }
    }
}

//! The LWA token endpoint, `POST /auth/o2/token` (AMAZON.md §1).

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Quirks;
use crate::faults::{self, FaultQuery, Injected};
use crate::hosts::HostKind;
use crate::http::{Ctx, form_pairs, html, json_typed, set_header};
use crate::ids;
use crate::model::{AppKind, FaultTarget, Principal, Region};
use crate::state::{AUTHORIZATION_LIFETIME_MS, AccessRecord, CODE_TTL_MS, LwaKey, RefreshRecord, Throttle};

/// Grantless scopes LWA knows (AMAZON.md §3.4); `sellingpartnerapi::migration` is gone.
pub const GRANTLESS_SCOPES: &[&str] = &[
    "sellingpartnerapi::notifications",
    "sellingpartnerapi::client_credential:rotation",
];

const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
const INVALID_CODE: &str = "The request has an invalid grant parameter : code";
const INVALID_REFRESH: &str = "The request has an invalid grant parameter : refresh_token";
const REVOKED_REFRESH: &str = "The request has an invalid grant parameter : refresh_token. User may have revoked or didn't grant the permission.";
const CLIENT_AUTH_FAILED: &str = "Client authentication failed";

/// An LWA error: the `error` code and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwaError {
    /// `error`.
    pub code: String,
    /// `error_description`.
    pub description: String,
}

impl LwaError {
    fn new(code: &str, description: impl Into<String>) -> LwaError {
        LwaError {
            code: code.to_owned(),
            description: description.into(),
        }
    }

    fn missing(name: &str) -> LwaError {
        LwaError::new(
            "invalid_request",
            format!("The request is missing a required parameter : {name}"),
        )
    }

    fn invalid_client() -> LwaError {
        LwaError::new("invalid_client", CLIENT_AUTH_FAILED)
    }

    fn invalid_grant(description: &str) -> LwaError {
        LwaError::new("invalid_grant", description)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_index: String,
    error_description: &'a str,
    error: &'a str,
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    Text(String),
}

#[derive(Serialize)]
struct TokenBody {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: &'static str,
    expires_in: ExpiresIn,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// The HTTP status of an LWA error code (AMAZON.md §1.5).
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "TooManyRequests" => StatusCode::TOO_MANY_REQUESTS,
        c if c.eq_ignore_ascii_case("server_error") || c.eq_ignore_ascii_case("ServerError") => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// LWA's error shape with its status.
pub fn error_response(status: StatusCode, error: &LwaError, request_id: &str) -> Response {
    let body = ErrorBody {
        error_index: ids::error_index(),
        error_description: &error.description,
        error: &error.code,
        request_id,
    };
    let mut resp = json_typed(status, CONTENT_TYPE, &body);
    no_store(&mut resp, request_id);
    resp
}

fn no_store(resp: &mut Response, request_id: &str) {
    set_header(resp, "cache-control", "no-store");
    set_header(resp, "pragma", "no-cache");
    set_header(resp, "x-amzn-requestid", request_id);
}

/// The error an injected failure produces on LWA.
fn injected_error(status: u16, error: Option<String>, quirks: &Quirks) -> LwaError {
    let code = error.unwrap_or_else(|| {
        match status {
            503 => "temporarily_unavailable",
            429 => "TooManyRequests",
            401 => "invalid_client",
            400 => "invalid_request",
            _ => quirks.server_error_code.as_str(),
        }
        .to_owned()
    });
    let description = match code.as_str() {
        "temporarily_unavailable" => "The service is temporarily unavailable.",
        "TooManyRequests" => "Rate exceeded",
        "invalid_client" => CLIENT_AUTH_FAILED,
        "invalid_grant" => INVALID_REFRESH,
        _ => "The server encountered a runtime error.",
    };
    LwaError::new(&code, description)
}

/// Whether a path is the token endpoint (some official pages write `/auth/O2/token`).
fn is_token_path(path: &str) -> bool {
    path == "/auth/o2/token" || path == "/auth/O2/token"
}

/// Request parameters from the body, plus client credentials from HTTP Basic.
struct Params {
    values: BTreeMap<String, String>,
    duplicate: Option<String>,
    basic: Option<(String, String)>,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The client id as sent (Basic first), for counters and fault matching.
    fn client_id(&self) -> Option<&str> {
        self.basic
            .as_ref()
            .map(|(id, _)| id.as_str())
            .or_else(|| self.nonempty("client_id"))
    }
}

fn parse(ctx: &Ctx) -> Result<Params, LwaError> {
    let content_type = ctx
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut values = BTreeMap::new();
    let mut duplicate = None;
    let mut put = |k: String, v: String| match values.entry(k) {
        std::collections::btree_map::Entry::Occupied(e) => {
            duplicate.get_or_insert_with(|| e.key().clone());
        }
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(v);
        }
    };
    match content_type.as_str() {
        "application/json" => {
            // A body that is not JSON under a JSON header: Amazon answered invalid_client.
            let map: serde_json::Map<String, Value> =
                serde_json::from_slice(&ctx.body).map_err(|_| LwaError::invalid_client())?;
            for (k, v) in map {
                let text = match v {
                    Value::Null => continue,
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Array(items) => {
                        let mut parts = Vec::new();
                        for item in items {
                            match item {
                                Value::String(s) => parts.push(s),
                                _ => return Err(LwaError::invalid_client()),
                            }
                        }
                        parts.join(" ")
                    }
                    Value::Object(_) => return Err(LwaError::invalid_client()),
                };
                put(k, text);
            }
        }
        "application/x-www-form-urlencoded" | "" => {
            if std::str::from_utf8(&ctx.body).is_err() {
                return Err(LwaError::invalid_client());
            }
            for (k, v) in form_pairs(&ctx.body) {
                put(k, v);
            }
        }
        _ => {
            return Err(LwaError::new(
                "invalid_request",
                "The request has an unsupported content type",
            ));
        }
    }
    let basic = match ctx.header("authorization") {
        Some(value) if value.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("basic ")) => {
            let decoded = STANDARD
                .decode(value.get(6..).unwrap_or("").trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(LwaError::invalid_client)?;
            let (id, secret) = decoded.split_once(':').ok_or_else(LwaError::invalid_client)?;
            Some((id.to_owned(), secret.to_owned()))
        }
        _ => None,
    };
    Ok(Params {
        values,
        duplicate,
        basic,
    })
}

/// The decoded form of a Basic credential part (RFC 6749 §2.3.1 form-encodes it first).
fn form_decoded(s: &str) -> String {
    form_pairs(format!("x={s}").as_bytes())
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Handles any request to an LWA host.
pub async fn handle(ctx: Ctx) -> Response {
    if ctx.method != Method::POST || !is_token_path(&ctx.path) {
        return html(
            StatusCode::NOT_FOUND,
            "<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>".to_owned(),
        );
    }
    let HostKind::Lwa(region) = ctx.kind else {
        return html(StatusCode::NOT_FOUND, String::new());
    };
    let params = match parse(&ctx) {
        Ok(p) => p,
        Err(e) => {
            count(&ctx, "", &e.code, "", None);
            return error_response(status_of(&e.code), &e, &ctx.request_id);
        }
    };
    let grant_type = params.get("grant_type").unwrap_or("").to_owned();
    let client_id = params.client_id().unwrap_or("").to_owned();
    let refresh_token = if grant_type == "refresh_token" {
        params.get("refresh_token").map(str::to_owned)
    } else {
        None
    };

    let injected = faults::check(
        &ctx.shared,
        FaultQuery {
            target: FaultTarget::Lwa,
            host: &ctx.host,
            path: &ctx.path,
            client_id: Some(client_id.as_str()).filter(|c| !c.is_empty()),
            refresh_token: refresh_token.as_deref(),
        },
    )
    .await;
    if let Some(injected) = injected {
        count(&ctx, &grant_type, "fault", &client_id, refresh_token.clone());
        return match injected {
            Injected::Drop => faults::drop_connection(&ctx, false).await,
            Injected::Fail { status, error } => {
                let quirks = ctx.shared.inner.lock().settings.quirks.clone();
                let e = injected_error(status, error, &quirks);
                let mut resp = error_response(crate::http::status(status), &e, &ctx.request_id);
                if status == 429 {
                    set_header(&mut resp, "retry-after", "1");
                }
                resp
            }
        };
    }

    let outcome = grant(&ctx, region, &params, &grant_type);
    match outcome {
        Ok(resp) => {
            count(&ctx, &grant_type, "ok", &client_id, refresh_token);
            resp
        }
        Err(e) => {
            count(&ctx, &grant_type, &e.code, &client_id, refresh_token);
            let mut resp = error_response(status_of(&e.code), &e, &ctx.request_id);
            if e.code == "TooManyRequests" {
                set_header(&mut resp, "retry-after", "1");
            }
            resp
        }
    }
}

fn count(ctx: &Ctx, grant_type: &str, outcome: &str, client_id: &str, refresh: Option<String>) {
    ctx.shared.inner.lock().count_lwa(LwaKey {
        grant_type: grant_type.to_owned(),
        outcome: outcome.to_owned(),
        client_id: client_id.to_owned(),
        refresh_token: refresh,
        host: ctx.host.clone(),
    });
}

/// Validates and answers one token request.
fn grant(ctx: &Ctx, region: Region, params: &Params, grant_type: &str) -> Result<Response, LwaError> {
    if let Some(name) = &params.duplicate {
        return Err(LwaError::new(
            "invalid_request",
            format!("The request has a duplicate parameter : {name}"),
        ));
    }
    match grant_type {
        "" => return Err(LwaError::missing("grant_type")),
        "authorization_code" | "refresh_token" | "client_credentials" => {}
        _ => {
            return Err(LwaError::new(
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server",
            ));
        }
    }

    // Client authentication: HTTP Basic or the body, never both.
    let (client_id, secret_candidates) = match &params.basic {
        Some((id, secret)) => {
            if params.get("client_secret").is_some() {
                return Err(LwaError::new(
                    "invalid_request",
                    "The request uses more than one client authentication method",
                ));
            }
            if let Some(body_id) = params.nonempty("client_id")
                && body_id != id
                && body_id != form_decoded(id)
            {
                return Err(LwaError::invalid_client());
            }
            (
                id.clone(),
                vec![
                    (id.clone(), secret.clone()),
                    (form_decoded(id), form_decoded(secret)),
                ],
            )
        }
        None => {
            let id = params
                .nonempty("client_id")
                .ok_or_else(|| LwaError::missing("client_id"))?
                .to_owned();
            let secret = params
                .nonempty("client_secret")
                .ok_or_else(LwaError::invalid_client)?
                .to_owned();
            (id.clone(), vec![(id, secret)])
        }
    };

    let now = ctx.now();
    let mut inner = ctx.shared.inner.lock();
    let Some((client_id, app)) = secret_candidates.iter().find_map(|(id, secret)| {
        inner
            .apps
            .get(id)
            .filter(|app| app.secret_valid(secret, now))
            .map(|app| (id.clone(), app.clone()))
    }) else {
        let _ = client_id;
        return Err(LwaError::invalid_client());
    };

    if let Throttle::Throttled(_) = inner.throttle("lwaToken", &client_id, now) {
        return Err(LwaError::new("TooManyRequests", "Rate exceeded"));
    }
    let quirks = inner.settings.quirks.clone();
    if app.kind == AppKind::SpApi && region != Region::Na && !quirks.sp_api_on_regional_lwa_hosts {
        return Err(LwaError::new(
            "unauthorized_client",
            "Not authorized for requested operation",
        ));
    }
    let ttl = inner.settings.access_token_ttl;
    let expires_ms = now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));

    let body = match grant_type {
        "authorization_code" => {
            let code = params.nonempty("code").ok_or_else(|| LwaError::missing("code"))?;
            let record = inner
                .codes
                .get(code)
                .cloned()
                .ok_or_else(|| LwaError::invalid_grant(INVALID_CODE))?;
            if record.used || now - record.issued_ms >= CODE_TTL_MS || record.client_id != client_id {
                return Err(LwaError::invalid_grant(INVALID_CODE));
            }
            match params.get("redirect_uri") {
                None if record.redirect_given => return Err(LwaError::invalid_grant(INVALID_CODE)),
                Some(r) if r != record.redirect_uri => {
                    return Err(LwaError::invalid_grant(INVALID_CODE));
                }
                _ => {}
            }
            if let Some(challenge) = &record.challenge {
                let verifier = params
                    .nonempty("code_verifier")
                    .ok_or_else(|| LwaError::invalid_grant(INVALID_CODE))?;
                let computed = if challenge.method.eq_ignore_ascii_case("S256") {
                    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
                } else {
                    verifier.to_owned()
                };
                if computed != challenge.value {
                    return Err(LwaError::invalid_grant(INVALID_CODE));
                }
            }
            if let Some(c) = inner.codes.get_mut(code) {
                c.used = true;
            }
            // Published SP-API apps must be re-authorized every 365 days; Ads grants never end.
            let refresh_expiry = match record.principal {
                Principal::Seller { .. } => Some(now + AUTHORIZATION_LIFETIME_MS),
                _ => None,
            };
            let refresh = inner.issue_refresh_token(RefreshRecord {
                client_id: client_id.clone(),
                principal: record.principal.clone(),
                issued_ms: now,
                expires_ms: refresh_expiry,
                revoked: false,
                host: Some(record.host.clone()),
                scope: record.scope.clone(),
            });
            let access = inner.issue_access_token(
                AccessRecord {
                    client_id: client_id.clone(),
                    principal: record.principal,
                    issued_ms: now,
                    expires_ms,
                    revoked: false,
                    refresh_token: Some(refresh.clone()),
                    rdt: None,
                    host: Some(record.host),
                },
                now,
            );
            token_body(access, Some(refresh), None, ttl, &quirks)
        }
        "refresh_token" => {
            if params.get("scope").is_some() {
                return Err(LwaError::new(
                    "invalid_request",
                    "The request has an invalid parameter : scope",
                ));
            }
            let token = params
                .nonempty("refresh_token")
                .ok_or_else(|| LwaError::missing("refresh_token"))?;
            let record = inner
                .refresh_tokens
                .get(token)
                .cloned()
                .ok_or_else(|| LwaError::invalid_grant(INVALID_REFRESH))?;
            if record.client_id != client_id {
                return Err(LwaError::invalid_grant(INVALID_REFRESH));
            }
            if record.revoked || record.expires_ms.is_some_and(|e| now >= e) {
                return Err(LwaError::invalid_grant(REVOKED_REFRESH));
            }
            let returned = if quirks.rotate_refresh_tokens {
                inner.issue_refresh_token(RefreshRecord {
                    issued_ms: now,
                    ..record.clone()
                })
            } else {
                token.to_owned()
            };
            let access = inner.issue_access_token(
                AccessRecord {
                    client_id: client_id.clone(),
                    principal: record.principal,
                    issued_ms: now,
                    expires_ms,
                    revoked: false,
                    refresh_token: Some(token.to_owned()),
                    rdt: None,
                    host: record.host,
                },
                now,
            );
            token_body(access, Some(returned), None, ttl, &quirks)
        }
        _ => {
            if app.kind == AppKind::Ads {
                return Err(LwaError::new(
                    "unauthorized_client",
                    "Not authorized for requested operation",
                ));
            }
            if params.get("refresh_token").is_some() {
                return Err(LwaError::new(
                    "invalid_request",
                    "The request has an invalid parameter : refresh_token",
                ));
            }
            let scope = params
                .nonempty("scope")
                .ok_or_else(|| LwaError::missing("scope"))?;
            let mut scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
            if scopes.is_empty() || scopes.iter().any(|s| !GRANTLESS_SCOPES.contains(&s.as_str())) {
                return Err(LwaError::new("invalid_scope", "An unknown scope was requested"));
            }
            scopes.sort();
            scopes.dedup();
            let scope_text = scopes.join(" ");
            let access = inner.issue_access_token(
                AccessRecord {
                    client_id: client_id.clone(),
                    principal: Principal::Grantless { scopes },
                    issued_ms: now,
                    expires_ms,
                    revoked: false,
                    refresh_token: None,
                    rdt: None,
                    host: None,
                },
                now,
            );
            let scope = quirks.client_credentials_scope_in_response.then_some(scope_text);
            token_body(access, None, scope, ttl, &quirks)
        }
    };
    drop(inner);
    let mut resp = json_typed(StatusCode::OK, CONTENT_TYPE, &body);
    no_store(&mut resp, &ctx.request_id);
    Ok(resp)
}

fn token_body(
    access: String,
    refresh: Option<String>,
    scope: Option<String>,
    ttl: u64,
    quirks: &Quirks,
) -> TokenBody {
    TokenBody {
        access_token: access,
        refresh_token: refresh,
        token_type: "bearer",
        expires_in: if quirks.expires_in_as_string {
            ExpiresIn::Text(ttl.to_string())
        } else {
            ExpiresIn::Number(ttl)
        },
        scope,
    }
}

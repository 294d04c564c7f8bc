//! `/v1/connections`: list, read, rename, disconnect, and import of existing refresh tokens.
//! Another tenant's connection is a 404, never a 403.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lwa::{Api, Marketplace, RefreshToken, Region};
use lwa_store::{Connection, ConnectionFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TenantAuth;
use crate::config::AppConfig;
use crate::error::ApiError;
use crate::extract::{Json, PathParam, Query, parse_json, read_body};
use crate::ids;
use crate::onboarding::{handle, parse_account_type, parse_api, tenant_app};
use crate::sealing::TokenSecret;
use crate::state::AppState;
use crate::time::rfc3339;

/// The JSON a tenant sees for a connection. No token, sealed or not.
pub fn view(c: &Connection) -> Value {
    let profiles: Value = serde_json::from_str(&c.profiles).unwrap_or(Value::Array(vec![]));
    json!({
        "id": c.id,
        "tenant_id": c.tenant_id,
        "app": c.app,
        "api": c.api,
        "region": c.region,
        "account_type": c.account_type,
        "marketplace_id": c.marketplace_id,
        "selling_partner_id": c.selling_partner_id,
        "name": c.name,
        "status": c.status,
        "token_secret": if c.tenant_secret { "tenant" } else { "none" },
        "profiles": profiles,
        "authorized_at": rfc3339(c.authorized_at_ms),
        "access_token_expires_at": c.access_expires_at_ms.map(rfc3339),
        "last_refresh_at": c.last_refresh_at_ms.map(rfc3339),
        "last_error": c.last_error,
        "callback_url": c.callback_url,
        "claimed": c.claimed_at_ms.is_some(),
        "created_at": rfc3339(c.created_at_ms),
        "updated_at": rfc3339(c.updated_at_ms),
    })
}

/// The caller's connection, or 404 (also for another tenant's).
pub async fn owned(state: &AppState, auth: &TenantAuth, id: &str) -> Result<Connection, ApiError> {
    match state.store.connection(id).await? {
        Some(c) if c.tenant_id == auth.tenant.id => Ok(c),
        _ => Err(ApiError::not_found(format!("no connection {id}"))),
    }
}

/// A callback URL: absolute http(s), at most 2048 characters, no userinfo.
pub fn validate_callback_url(url: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_callback_url",
            "callback_url must be an absolute http(s) URL",
        )
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if url.len() > 2048
        || !matches!(parsed.scheme(), "http" | "https")
        || parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(bad());
    }
    Ok(())
}

/// `GET /v1/connections` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub api: Option<String>,
    pub region: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// Lists the caller's connections, 100 per page by default (at most 1000).
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(s) = &q.status
        && !matches!(s.as_str(), "active" | "needs_reauth" | "disconnected")
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be active, needs_reauth or disconnected",
        ));
    }
    let api = q
        .api
        .as_deref()
        .map(|a| parse_api(Some(a)))
        .transpose()?
        .map(|a| a.as_str().to_owned());
    let region = q
        .region
        .as_deref()
        .map(|r| {
            Region::parse(r)
                .map_err(|_| ApiError::bad_request("invalid_region", "region must be na, eu or fe"))
        })
        .transpose()?
        .map(|r| r.as_str().to_owned());
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
    }
    let page = state
        .store
        .list_connections(&ConnectionFilter {
            tenant_id: Some(auth.tenant.id.clone()),
            status: q.status,
            api,
            region,
            after: q.after,
            search: None,
            limit,
        })
        .await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|c| c.id.clone()))
        .flatten();
    Ok(
        axum::Json(json!({"data": page.iter().map(view).collect::<Vec<_>>(), "next_after": next}))
            .into_response(),
    )
}

/// `GET /v1/connections/{id}`.
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let c = owned(&state, &auth, &id).await?;
    Ok(axum::Json(view(&c)).into_response())
}

/// `PATCH /v1/connections/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    pub callback_url: Option<Option<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// Renames a connection or sets its callback URL.
pub async fn patch(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    Json(body): Json<Patch>,
) -> Result<Response, ApiError> {
    let mut c = owned(&state, &auth, &id).await?;
    if let Some(name) = body.name {
        if name.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name is at most 200 characters",
            ));
        }
        c.name = Some(name.trim().to_owned()).filter(|n| !n.is_empty());
    }
    if let Some(callback) = body.callback_url {
        if let Some(url) = &callback {
            validate_callback_url(url)?;
        }
        c.callback_url = callback;
    }
    c.updated_at_ms = state.now_ms();
    state
        .store
        .set_connection_details(
            &c.id,
            c.name.as_deref(),
            c.callback_url.as_deref(),
            c.updated_at_ms,
        )
        .await?;
    Ok(axum::Json(view(&c)).into_response())
}

/// Erases a connection's sealed tokens and marks it `disconnected`, with its
/// `connection.disconnected` event (`reason` in its data), and drops it from this process's
/// cache (the other processes learn it through the invalidations); the connection as written.
/// `DELETE /v1/connections/{id}` and the dashboard's Disconnect.
pub async fn disconnect(
    state: &AppState,
    mut c: Connection,
    reason: &str,
) -> Result<Connection, lwa_store::StoreError> {
    c.refresh_token = None;
    c.access_token = None;
    c.access_expires_at_ms = None;
    c.status = "disconnected".into();
    c.updated_at_ms = state.now_ms();
    let events = crate::webhooks::connection_event(
        state,
        crate::webhooks::EventType::ConnectionDisconnected,
        &c,
        json!({ "reason": reason }),
    );
    state.store.disconnect_connection(&c, &events).await?;
    state.webhooks.wake();
    state.vendor.forget(&c.id);
    Ok(c)
}

/// `DELETE /v1/connections/{id}`: erases the sealed tokens and marks it `disconnected`.
/// Amazon has no revoke call, so the seller's authorization stays in Seller Central (or the
/// Ads console) until the seller removes it there.
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let c = disconnect(&state, owned(&state, &auth, &id).await?, "disconnected_by_tenant").await?;
    let mut body = view(&c);
    body["tokens_erased"] = json!(true);
    body["amazon_authorization"] = json!(
        "Amazon has no API to revoke an authorization: the broker erased its tokens, and the seller can \
         remove the app in Seller Central (Manage Your Apps) or the Ads console."
    );
    Ok(axum::Json(body).into_response())
}

/// A new, active connection of `app` in `region` with no tokens yet.
pub fn new_connection(tenant_id: &str, app: &AppConfig, region: Region, now: i64) -> Connection {
    Connection {
        id: ids::new_id("conn"),
        tenant_id: tenant_id.to_owned(),
        app: app.name.clone(),
        api: app.kind.as_str().to_owned(),
        region: region.as_str().to_owned(),
        account_type: None,
        marketplace_id: None,
        selling_partner_id: None,
        name: None,
        status: "active".into(),
        refresh_token: None,
        access_token: None,
        access_expires_at_ms: None,
        tenant_secret: false,
        profiles: "[]".into(),
        authorized_at_ms: now,
        last_refresh_at_ms: None,
        last_error: None,
        callback_url: None,
        claimed_at_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// Seals a fresh token pair into the connection (under the tenant's secret too, when given)
/// and marks it active and just refreshed.
pub fn store_tokens(
    state: &AppState,
    c: &mut Connection,
    refresh_token: &RefreshToken,
    tokens: &lwa::TokenResponse,
    secret: Option<&TokenSecret>,
    now: i64,
) {
    c.refresh_token = Some(
        state
            .sealer
            .seal(&c.id, "refresh_token", refresh_token.expose(), secret),
    );
    c.access_token = Some(
        state
            .sealer
            .seal(&c.id, "access_token", tokens.access_token.expose(), secret),
    );
    c.access_expires_at_ms = Some(now + tokens.expires_in as i64 * 1000);
    c.tenant_secret = secret.is_some();
    c.status = "active".into();
    c.last_refresh_at_ms = Some(now);
    c.last_error = None;
    c.updated_at_ms = now;
}

/// One connection to import. Its `Debug` leaves out the tokens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    pub api: Option<String>,
    pub region: Option<String>,
    pub marketplace: Option<String>,
    pub refresh_token: String,
    pub selling_partner_id: Option<String>,
    pub account_type: Option<String>,
    pub name: Option<String>,
    pub callback_url: Option<String>,
    pub token_secret: Option<String>,
}

impl std::fmt::Debug for ImportRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRecord")
            .field("api", &self.api)
            .field("region", &self.region)
            .field("selling_partner_id", &self.selling_partner_id)
            .field("refresh_token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The outcome of one import.
#[derive(Debug)]
pub struct Imported {
    pub connection: Connection,
    pub handle: String,
    pub created: bool,
}

/// Imports one refresh token for a tenant, validated by one refresh. Reuses the connection of
/// the same selling partner (SP-API) when there is one.
pub async fn import_one(
    state: &AppState,
    tenant: &lwa_store::Tenant,
    record: ImportRecord,
) -> Result<Imported, ApiError> {
    let api = parse_api(record.api.as_deref())?;
    let marketplace = record
        .marketplace
        .as_deref()
        .map(|m| {
            Marketplace::parse(m)
                .map_err(|_| ApiError::bad_request("invalid_marketplace", "unknown marketplace"))
        })
        .transpose()?;
    let region = match (record.region.as_deref(), marketplace) {
        (Some(r), _) => Region::parse(r)
            .map_err(|_| ApiError::bad_request("invalid_region", "region must be na, eu or fe"))?,
        (None, Some(m)) => m.region,
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_region",
                "give region or marketplace",
            ));
        }
    };
    let marketplace = crate::onboarding::parse_marketplace(record.marketplace.as_deref(), region)?;
    let account_type = parse_account_type(record.account_type.as_deref())?;
    if let Some(url) = &record.callback_url {
        validate_callback_url(url)?;
    }
    let secret = match record.token_secret.as_deref() {
        None => None,
        Some(s) => Some(TokenSecret::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_token_secret", "token_secret must be 32-64 characters")
        })?),
    };
    let token = record.refresh_token.trim();
    if !token.starts_with("Atzr|") || token.len() > 2048 {
        return Err(ApiError::bad_request(
            "invalid_refresh_token",
            "refresh_token must be an LWA refresh token (Atzr|…)",
        ));
    }
    let app = tenant_app(state, tenant, api)?;
    let refresh_token = RefreshToken::new(token);
    let tokens = state
        .lwa
        .refresh(
            state.token_host(&app, region),
            &state.credentials(&app).await,
            &refresh_token,
        )
        .await;
    let tokens = tokens.map_err(|e| match e {
        lwa::LwaError::Reauthorize { .. } => ApiError::bad_request(
            "invalid_grant",
            "Amazon refused this refresh token (revoked, expired, or issued to another app)",
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "lwa_unavailable",
            format!("the validating refresh failed: {other}"),
        ),
    })?;
    let refresh_token = tokens
        .refresh_token
        .clone()
        .filter(|_| tokens.refresh_token_changed)
        .unwrap_or(refresh_token);
    let now = state.now_ms();
    let existing = match (&record.selling_partner_id, api) {
        (Some(spid), Api::SpApi) => {
            state
                .store
                .connection_by_partner(&tenant.id, &app.name, region.as_str(), spid)
                .await?
        }
        _ => None,
    };
    let created = existing.is_none();
    let mut c = existing.unwrap_or_else(|| {
        let mut c = new_connection(&tenant.id, &app, region, now);
        c.account_type = (api == Api::SpApi).then(|| account_type.as_str().to_owned());
        c.marketplace_id = marketplace.map(|m| m.id.to_owned());
        c.selling_partner_id = record.selling_partner_id.clone();
        c.claimed_at_ms = Some(now);
        c
    });
    store_tokens(state, &mut c, &refresh_token, &tokens, secret.as_ref(), now);
    if let Some(name) = record.name {
        c.name = Some(name);
    }
    if record.callback_url.is_some() {
        c.callback_url = record.callback_url;
    }
    if created {
        state.store.insert_connection(&c).await?;
    } else {
        state.store.update_connection(&c).await?;
        state.vendor.forget(&c.id);
    }
    let handle = handle(&c.id, secret.as_ref());
    Ok(Imported {
        connection: c,
        handle,
        created,
    })
}

/// `POST /v1/connections/import`: a JSON array, `{"connections": [...]}`, or JSON lines
/// (`application/x-ndjson`). Each line is imported on its own; the answer lists each result.
pub async fn import(
    State(state): State<AppState>,
    auth: TenantAuth,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(request, &()).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let lines: Vec<(usize, Result<ImportRecord, ApiError>)> = match content_type.as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::bad_request("invalid_body", "the body is not UTF-8"))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| (i + 1, parse_json(l.as_bytes())))
                .collect()
        }
        "application/json" => {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Batch {
                List(Vec<Value>),
                Wrapped { connections: Vec<Value> },
            }
            let batch: Batch = parse_json(&body)?;
            let values = match batch {
                Batch::List(v) | Batch::Wrapped { connections: v } => v,
            };
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        i + 1,
                        serde_json::from_value(v).map_err(|e| {
                            ApiError::bad_request(
                                "invalid_json",
                                format!("a connection has a wrong or missing field: {}", field_only(&e)),
                            )
                        }),
                    )
                })
                .collect()
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json (an array or {\"connections\": [...]}) or application/x-ndjson",
            ));
        }
    };
    if lines.is_empty() {
        return Err(ApiError::bad_request("empty_import", "no connections to import"));
    }
    if lines.len() > 1000 {
        return Err(ApiError::bad_request(
            "too_many",
            "at most 1000 connections per request",
        ));
    }
    let mut results = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for (line_no, line) in lines {
        let outcome = match line {
            Ok(record) => import_one(&state, &auth.tenant, record).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(imported) => {
                ok += 1;
                results.push(json!({"line": line_no, "connection": view(&imported.connection), "handle": imported.handle, "created": imported.created}));
            }
            Err(e) => {
                failed += 1;
                results.push(json!({"line": line_no, "error": {"code": e.code, "message": e.message}}));
            }
        }
    }
    let status = if ok > 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        axum::Json(json!({"imported": ok, "failed": failed, "results": results})),
    )
        .into_response())
}

/// serde's message without any quoted value.
fn field_only(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find('"') {
        Some(i) if text.contains("invalid type") || text.contains("invalid value") => {
            text[..i].trim_end().to_owned()
        }
        _ => text,
    }
}

//! The control API under `/__fake/`: JSON in, JSON out. Documented in the crate README.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::{append_query, first, form_pairs, json as json_response};
use crate::model::{
    AccountType, AdvertiserSpec, ApiCount, AppKind, AppSpec, AppstoreSpec, AuthorizeSpec, Counters,
    FaultSpec, LwaCount, PayloadSpec, Principal, RateSpec, Region, RevokeSpec, SellerSpec,
};
use crate::sp_api::notification;
use crate::state::{AUTHORIZATION_LIFETIME_MS, AmazonStateRecord, Challenge, RefreshRecord, Shared};
use crate::{defaults, hosts, ids};

/// A control API failure: status and message.
struct Failure(StatusCode, String);

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> Failure {
        Failure(StatusCode::NOT_FOUND, message.into())
    }
}

type Outcome = Result<Value, Failure>;

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| Failure::bad(format!("invalid JSON body: {e}")))
}

fn to_value<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// One control request.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// Full path (`/__fake/…`).
    pub path: &'a str,
    /// Raw query string.
    pub query: &'a str,
    /// The `Host` header: the address the caller reached the fake at.
    pub host: Option<&'a str>,
    /// The body.
    pub body: &'a Bytes,
}

/// Handles `/__fake/…`.
pub fn handle(shared: &Arc<Shared>, request: &Request<'_>) -> Response {
    let rest = request.path.trim_start_matches("/__fake").trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let outcome = route(shared, request, &segs);
    match outcome {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(Failure(status, message)) => json_response(status, &json!({ "error": message })),
    }
}

fn route(shared: &Arc<Shared>, request: &Request<'_>, segs: &[&str]) -> Outcome {
    let (method, query, bytes) = (request.method, request.query, request.body);
    let now = shared.now();
    match (method.as_str(), segs) {
        ("GET", []) => Ok(index(shared)),
        ("GET", ["clock"]) => Ok(to_value(shared.clock.state())),
        ("POST", ["clock", "advance"]) => {
            #[derive(Deserialize)]
            struct Advance {
                seconds: f64,
            }
            let a: Advance = body(bytes)?;
            if !a.seconds.is_finite() {
                return Err(Failure::bad("seconds must be a finite number"));
            }
            shared.clock.advance(a.seconds);
            Ok(to_value(shared.clock.state()))
        }
        ("GET", ["counters"]) => Ok(to_value(counters(shared))),
        ("POST", ["counters", "reset"]) => {
            let mut inner = shared.inner.lock();
            inner.lwa_counts.clear();
            inner.api_counts.clear();
            Ok(json!({}))
        }
        ("GET", ["requests"]) => {
            let pairs = form_pairs(query.as_bytes());
            let host = first(&pairs, "host").map(str::to_ascii_lowercase);
            let inner = shared.inner.lock();
            let list: Vec<_> = inner
                .requests
                .iter()
                .filter(|r| host.as_deref().is_none_or(|h| r.host == h))
                .cloned()
                .collect();
            Ok(to_value(list))
        }
        ("DELETE", ["requests"]) => {
            shared.inner.lock().requests.clear();
            Ok(json!({}))
        }
        ("GET", ["apps"]) => {
            let inner = shared.inner.lock();
            Ok(to_value(
                inner.apps.values().map(|a| a.view(now)).collect::<Vec<_>>(),
            ))
        }
        ("POST", ["apps"]) => {
            let spec: AppSpec = body(bytes)?;
            let app = shared
                .inner
                .lock()
                .register_app(spec, now)
                .map_err(Failure::bad)?;
            Ok(to_value(app))
        }
        ("GET", ["sellers"]) => Ok(to_value(
            shared.inner.lock().sellers.values().cloned().collect::<Vec<_>>(),
        )),
        ("POST", ["sellers"]) => {
            let spec: SellerSpec = body(bytes)?;
            let seller = shared.inner.lock().register_seller(spec).map_err(Failure::bad)?;
            Ok(to_value(seller))
        }
        ("GET", ["advertisers"]) => Ok(to_value(
            shared
                .inner
                .lock()
                .advertisers
                .values()
                .cloned()
                .collect::<Vec<_>>(),
        )),
        ("POST", ["advertisers"]) => {
            let spec: AdvertiserSpec = body(bytes)?;
            let advertiser = shared
                .inner
                .lock()
                .register_advertiser(spec)
                .map_err(Failure::bad)?;
            Ok(to_value(advertiser))
        }
        ("POST", ["authorize"]) => authorize(shared, body(bytes)?, now),
        ("POST", ["appstore-authorize"]) => appstore_authorize(shared, body(bytes)?, request.host, now),
        ("GET", ["authorizations"]) => Ok(to_value(shared.inner.lock().authorizations())),
        ("POST", ["self-authorize"]) => self_authorize(shared, body(bytes)?, now),
        ("POST", ["revoke"]) => revoke(shared, body(bytes)?),
        ("GET", ["faults"]) => Ok(to_value(shared.inner.lock().faults.clone())),
        ("POST", ["faults"]) => {
            let spec: FaultSpec = body(bytes)?;
            for share in [spec.error_500_share, spec.error_429_share, spec.drop_share] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(Failure::bad("shares must be between 0 and 1"));
                }
            }
            if let Some(status) = spec.script.as_ref().and_then(|s| s.status)
                && !(200..=599).contains(&status)
            {
                return Err(Failure::bad("script.status must be between 200 and 599"));
            }
            let id = shared.inner.lock().add_fault(spec);
            Ok(json!({ "id": id }))
        }
        ("DELETE", ["faults"]) => {
            shared.inner.lock().faults.clear();
            Ok(json!({}))
        }
        ("DELETE", ["faults", id]) => {
            let id: u64 = id.parse().map_err(|_| Failure::bad("fault ids are numbers"))?;
            let mut inner = shared.inner.lock();
            let before = inner.faults.len();
            inner.faults.retain(|f| f.id != id);
            if inner.faults.len() == before {
                return Err(Failure::not_found(format!("no fault {id}")));
            }
            Ok(json!({}))
        }
        ("GET", ["quirks"]) => Ok(quirks(shared)),
        ("POST", ["quirks"]) => set_quirks(shared, bytes),
        ("GET", ["notifications"]) => Ok(Value::Array(shared.inner.lock().notifications.clone())),
        ("DELETE", ["notifications"]) => {
            shared.inner.lock().notifications.clear();
            Ok(json!({}))
        }
        ("POST", ["notifications", "secret-expiry"]) => secret_expiry(shared, bytes, now),
        ("GET", ["rates"]) => {
            let inner = shared.inner.lock();
            let mut rates: Vec<RateSpec> = inner
                .rates
                .iter()
                .map(|(op, (rate, burst))| RateSpec {
                    operation: op.clone(),
                    rate: *rate,
                    burst: *burst,
                })
                .collect();
            rates.sort_by(|a, b| a.operation.cmp(&b.operation));
            Ok(to_value(rates))
        }
        ("POST", ["rates"]) => {
            let spec: RateSpec = body(bytes)?;
            if !spec.rate.is_finite() || spec.rate < 0.0 || spec.burst == 0 {
                return Err(Failure::bad("rate must be >= 0 and burst >= 1"));
            }
            shared
                .inner
                .lock()
                .set_rate(&spec.operation, spec.rate, spec.burst);
            Ok(to_value(spec))
        }
        ("GET", ["payloads"]) => Ok(to_value(
            shared.inner.lock().payloads.values().cloned().collect::<Vec<_>>(),
        )),
        ("POST", ["payloads"]) => add_payload(shared, body(bytes)?),
        ("DELETE", ["payloads"]) => {
            shared.inner.lock().payloads.clear();
            Ok(json!({}))
        }
        ("POST", ["token-info"]) => {
            #[derive(Deserialize)]
            struct Query {
                token: String,
            }
            let q: Query = body(bytes)?;
            shared
                .inner
                .lock()
                .token_info(&q.token)
                .map(to_value)
                .ok_or_else(|| Failure::not_found("unknown token"))
        }
        _ => Err(Failure::not_found(format!(
            "no control route {method} /__fake/{}",
            segs.join("/")
        ))),
    }
}

/// Registers a payload streamed at `GET {host}{path}` on an SP-API or Ads host.
fn add_payload(shared: &Shared, mut spec: PayloadSpec) -> Outcome {
    spec.host = spec.host.trim().to_ascii_lowercase();
    let newer = shared.inner.lock().settings.quirks.newer_seller_central_hosts;
    if !matches!(
        hosts::lookup(&spec.host, newer),
        Some(hosts::HostKind::SpApi(_) | hosts::HostKind::Ads(_))
    ) {
        return Err(Failure::bad(format!(
            "host {:?} is not an SP-API or Ads host",
            spec.host
        )));
    }
    if !spec.path.starts_with('/') || spec.path.contains(['?', '#']) {
        return Err(Failure::bad("path must start with / and hold no query"));
    }
    if let Some(content_type) = &spec.content_type
        && axum::http::HeaderValue::from_str(content_type).is_err()
    {
        return Err(Failure::bad("content_type is not a valid header value"));
    }
    shared
        .inner
        .lock()
        .payloads
        .insert((spec.host.clone(), spec.path.clone()), spec);
    Ok(json!({}))
}

fn index(shared: &Shared) -> Value {
    let inner = shared.inner.lock();
    json!({
        "sp_api_client_id": defaults::SP_API_CLIENT_ID,
        "sp_api_application_id": defaults::SP_API_APPLICATION_ID,
        "ads_client_id": defaults::ADS_CLIENT_ID,
        "apps": inner.apps.len(),
        "sellers": inner.sellers.len(),
        "advertisers": inner.advertisers.len(),
        "sandbox_operations": shared.sandbox.operation_count(),
    })
}

fn counters(shared: &Shared) -> Counters {
    let inner = shared.inner.lock();
    let mut lwa: Vec<LwaCount> = inner
        .lwa_counts
        .iter()
        .map(|(k, n)| LwaCount {
            grant_type: k.grant_type.clone(),
            outcome: k.outcome.clone(),
            client_id: k.client_id.clone(),
            refresh_token: k.refresh_token.clone(),
            host: k.host.clone(),
            count: *n,
        })
        .collect();
    lwa.sort_by(|a, b| {
        (&a.grant_type, &a.outcome, &a.client_id, &a.refresh_token, &a.host).cmp(&(
            &b.grant_type,
            &b.outcome,
            &b.client_id,
            &b.refresh_token,
            &b.host,
        ))
    });
    let mut api: Vec<ApiCount> = inner
        .api_counts
        .iter()
        .map(|(k, n)| ApiCount {
            host: k.host.clone(),
            method: k.method.clone(),
            path: k.path.clone(),
            status: k.status,
            fault: k.fault,
            count: *n,
        })
        .collect();
    api.sort_by(|a, b| {
        (&a.host, &a.path, &a.method, a.status, a.fault)
            .cmp(&(&b.host, &b.path, &b.method, b.status, b.fault))
    });
    Counters { lwa, api }
}

fn authorize(shared: &Shared, spec: AuthorizeSpec, now: i64) -> Outcome {
    let mut inner = shared.inner.lock();
    let app = inner
        .apps
        .get(&spec.client_id)
        .cloned()
        .ok_or_else(|| Failure::not_found(format!("unknown client_id {}", spec.client_id)))?;
    let (redirect_uri, given) = match spec.redirect_uri.filter(|r| !r.is_empty()) {
        Some(r) if app.redirect_uris.contains(&r) => (r, true),
        Some(r) => return Err(Failure::bad(format!("redirect_uri {r} is not registered"))),
        None => (
            app.redirect_uris
                .first()
                .cloned()
                .ok_or_else(|| Failure::bad("the app has no redirect URI"))?,
            false,
        ),
    };
    let challenge = match spec.code_challenge.filter(|c| !c.is_empty()) {
        Some(value) => {
            let method = spec.code_challenge_method.unwrap_or_else(|| "plain".to_owned());
            if method != "S256" && method != "plain" {
                return Err(Failure::bad("code_challenge_method is S256 or plain"));
            }
            Some(Challenge { value, method })
        }
        None => None,
    };
    let (principal, scope) = match app.kind {
        AppKind::SpApi => {
            let known = spec
                .selling_partner_id
                .as_deref()
                .and_then(|id| inner.sellers.get(id).cloned());
            let region = spec
                .region
                .or(known.as_ref().map(|s| s.region))
                .unwrap_or(Region::Na);
            let account_type = spec
                .account_type
                .or(known.as_ref().map(|s| s.account_type))
                .unwrap_or(AccountType::Seller);
            let id = spec
                .selling_partner_id
                .unwrap_or_else(|| defaults::default_selling_partner(region, account_type).to_owned());
            inner
                .seller_or_register(&id, region, account_type)
                .map_err(Failure::bad)?;
            (
                Principal::Seller {
                    selling_partner_id: id,
                    region,
                    account_type,
                    marketplace_ids: None,
                },
                None,
            )
        }
        AppKind::Ads => {
            let id = spec
                .advertiser_id
                .unwrap_or_else(|| defaults::ADVERTISER.to_owned());
            inner.advertiser_or_register(&id).map_err(Failure::bad)?;
            (
                Principal::Advertiser { advertiser_id: id },
                Some(
                    spec.scope
                        .unwrap_or_else(|| "advertising::campaign_management".to_owned()),
                ),
            )
        }
    };
    let code = inner.issue_code(
        &app.client_id,
        principal,
        &redirect_uri,
        given,
        challenge,
        "__fake",
        scope,
        now,
    );
    Ok(json!({ "code": code }))
}

/// The seller clicks Authorize in the Appstore: Amazon sends them to the app's Login URI with
/// an `amazon_callback_uri` on the region's Central host and a fresh `amazon_state`.
fn appstore_authorize(shared: &Shared, spec: AppstoreSpec, host: Option<&str>, now: i64) -> Outcome {
    if spec.application_id.is_empty() {
        return Err(Failure::bad("application_id is required"));
    }
    match url::Url::parse(&spec.login_uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        _ => {
            return Err(Failure::bad(format!(
                "login_uri {:?} is not an absolute http(s) URL",
                spec.login_uri
            )));
        }
    }
    let region = spec
        .region
        .as_deref()
        .map(|r| Region::parse(r).ok_or_else(|| Failure::bad(format!("unknown region {r:?}"))))
        .transpose()?;
    let account_type = spec
        .account_type
        .as_deref()
        .map(|t| match t.to_ascii_lowercase().as_str() {
            "seller" => Ok(AccountType::Seller),
            "vendor" => Ok(AccountType::Vendor),
            _ => Err(Failure::bad(format!(
                "unknown account_type {t:?} (seller or vendor)"
            ))),
        })
        .transpose()?;
    let base_url = host
        .filter(|h| !h.is_empty())
        .map(|h| format!("http://{h}"))
        .ok_or_else(|| Failure::bad("the request has no Host header to address amazon_callback_uri"))?;
    let mut inner = shared.inner.lock();
    let app = inner
        .app_by_application_id(&spec.application_id)
        .filter(|a| a.kind == AppKind::SpApi)
        .cloned()
        .ok_or_else(|| Failure::not_found(format!("unknown application_id {}", spec.application_id)))?;
    let known = spec
        .selling_partner_id
        .as_deref()
        .and_then(|id| inner.sellers.get(id).cloned());
    let region = region.or(known.as_ref().map(|s| s.region)).unwrap_or(Region::Na);
    let account_type = account_type
        .or(known.as_ref().map(|s| s.account_type))
        .unwrap_or(AccountType::Seller);
    let selling_partner_id = spec
        .selling_partner_id
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| defaults::default_selling_partner(region, account_type).to_owned());
    inner
        .seller_or_register(&selling_partner_id, region, account_type)
        .map_err(Failure::bad)?;
    let central = hosts::default_central_host(region, account_type);
    let callback = format!(
        "{base_url}/{central}/apps/authorize/confirm/{}",
        path_segment(&spec.application_id)
    );
    let amazon_state = inner.issue_amazon_state(AmazonStateRecord {
        application_id: spec.application_id,
        selling_partner_id: selling_partner_id.clone(),
        region,
        account_type,
        issued_ms: now,
        used: false,
    });
    let mut query = vec![
        ("amazon_callback_uri", callback.as_str()),
        ("amazon_state", amazon_state.as_str()),
        ("selling_partner_id", selling_partner_id.as_str()),
    ];
    if app.draft {
        query.push(("version", "beta"));
    }
    Ok(json!({ "url": append_query(&spec.login_uri, &query) }))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn self_authorize(shared: &Shared, spec: SelfAuthorize, now: i64) -> Outcome {
    let mut inner = shared.inner.lock();
    let app = inner
        .apps
        .get(&spec.client_id)
        .cloned()
        .ok_or_else(|| Failure::not_found(format!("unknown client_id {}", spec.client_id)))?;
    if app.kind != AppKind::SpApi {
        return Err(Failure::bad("self-authorization is for SP-API apps"));
    }
    let known = inner.sellers.get(&spec.selling_partner_id).cloned();
    let region = spec
        .region
        .or(known.as_ref().map(|s| s.region))
        .unwrap_or(Region::Na);
    let account_type = spec
        .account_type
        .or(known.as_ref().map(|s| s.account_type))
        .unwrap_or(AccountType::Seller);
    inner
        .seller_or_register(&spec.selling_partner_id, region, account_type)
        .map_err(Failure::bad)?;
    let expires_ms = inner
        .settings
        .quirks
        .self_authorization_expires
        .then_some(now + AUTHORIZATION_LIFETIME_MS);
    let token = inner.issue_refresh_token(RefreshRecord {
        client_id: app.client_id,
        principal: Principal::Seller {
            selling_partner_id: spec.selling_partner_id,
            region,
            account_type,
            marketplace_ids: None,
        },
        issued_ms: now,
        expires_ms,
        revoked: false,
        host: None,
        scope: None,
    });
    Ok(json!({ "refresh_token": token }))
}

/// Body of `POST /__fake/self-authorize`.
#[derive(Debug, Deserialize)]
struct SelfAuthorize {
    client_id: String,
    selling_partner_id: String,
    #[serde(default)]
    region: Option<Region>,
    #[serde(default)]
    account_type: Option<AccountType>,
}

fn revoke(shared: &Shared, spec: RevokeSpec) -> Outcome {
    let mut inner = shared.inner.lock();
    let n = if let Some(token) = spec.refresh_token {
        if !inner.refresh_tokens.contains_key(&token) {
            return Err(Failure::not_found("unknown refresh token"));
        }
        inner.revoke_refresh_token(&token)
    } else if let Some(token) = spec.access_token {
        let record = inner
            .access_tokens
            .get_mut(&token)
            .ok_or_else(|| Failure::not_found("unknown access token"))?;
        let was = record.revoked;
        record.revoked = true;
        usize::from(!was)
    } else if let Some(client_id) = spec.client_id {
        match (spec.selling_partner_id, spec.advertiser_id) {
            (Some(seller), None) => inner.revoke_grant(&client_id, |p| {
                matches!(p, Principal::Seller { selling_partner_id, .. } if *selling_partner_id == seller)
            }),
            (None, Some(advertiser)) => inner.revoke_grant(&client_id, |p| {
                matches!(p, Principal::Advertiser { advertiser_id } if *advertiser_id == advertiser)
            }),
            _ => {
                return Err(Failure::bad(
                    "with client_id, give exactly one of selling_partner_id and advertiser_id",
                ));
            }
        }
    } else {
        return Err(Failure::bad(
            "give refresh_token, access_token, or client_id with selling_partner_id or advertiser_id",
        ));
    };
    Ok(json!({ "revoked": n }))
}

fn quirks(shared: &Shared) -> Value {
    let inner = shared.inner.lock();
    let mut value = to_value(&inner.settings.quirks);
    value["access_token_ttl"] = json!(inner.settings.access_token_ttl);
    value["auto_approve"] = json!(inner.settings.auto_approve);
    value
}

fn set_quirks(shared: &Shared, bytes: &Bytes) -> Outcome {
    let patch: serde_json::Map<String, Value> = body(bytes)?;
    let mut current = quirks(shared);
    for (k, v) in patch {
        if current.get(&k).is_none() {
            return Err(Failure::bad(format!("unknown quirk {k}")));
        }
        current[&k] = v;
    }
    let ttl = current
        .get("access_token_ttl")
        .and_then(Value::as_u64)
        .ok_or_else(|| Failure::bad("access_token_ttl must be a whole number of seconds"))?;
    let auto_approve = current
        .get("auto_approve")
        .and_then(Value::as_bool)
        .ok_or_else(|| Failure::bad("auto_approve must be a boolean"))?;
    let quirks: crate::config::Quirks =
        serde_json::from_value(current).map_err(|e| Failure::bad(format!("invalid quirks: {e}")))?;
    {
        let mut inner = shared.inner.lock();
        inner.settings.quirks = quirks;
        inner.settings.access_token_ttl = ttl;
        inner.settings.auto_approve = auto_approve;
    }
    Ok(self::quirks(shared))
}

fn secret_expiry(shared: &Shared, bytes: &Bytes, now: i64) -> Outcome {
    #[derive(Deserialize)]
    struct Notice {
        client_id: String,
        #[serde(default)]
        expires_in_seconds: Option<i64>,
        #[serde(default)]
        reason: Option<String>,
    }
    let notice: Notice = body(bytes)?;
    let mut inner = shared.inner.lock();
    let expiry = now.saturating_add(
        notice
            .expires_in_seconds
            .unwrap_or(90 * 86_400)
            .clamp(0, i64::MAX / 4_000)
            * 1000,
    );
    let extras = inner.settings.quirks.notification_envelope_extras;
    let app = inner
        .apps
        .get_mut(&notice.client_id)
        .ok_or_else(|| Failure::not_found(format!("unknown client_id {}", notice.client_id)))?;
    if let Some(current) = app.secrets.first_mut() {
        current.expires_ms = Some(current.expires_ms.map_or(expiry, |e| e.min(expiry)));
    }
    let application_id = app.application_id.clone().unwrap_or_default();
    let n = notification(
        "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY",
        json!({"applicationOAuthClientSecretExpiry": {
            "clientId": notice.client_id,
            "clientSecretExpiryTime": ids::iso8601_ms(expiry),
            "clientSecretExpiryReason": notice.reason.unwrap_or_else(|| "PERIODIC_ROTATION".to_owned()),
        }}),
        &application_id,
        now,
        extras,
    );
    inner.notifications.push(n.clone());
    Ok(n)
}

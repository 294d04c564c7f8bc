//! The passthrough proxy: `ANY /v1/connections/{id}/proxy/{path}` (and Amazon's own paths at
//! the broker's root for callers holding a stand-in token) forwards a call to the connection's
//! regional SP-API or Ads host with the right credentials, so the caller never touches a token.
//!
//! One call, in order:
//! 1. the path and query are checked ([`path`]) and the target host follows from the connection
//!    (SP-API `sellingpartnerapi-{na,eu,fe}` or its sandbox for a sandbox app; Ads
//!    `advertising-api{,-eu,-fe}` by the profile's region) — the caller never names a host;
//! 2. the request's headers are filtered ([`headers`]): the caller's credentials, hop-by-hop
//!    headers and the broker's own `x-lwa-broker-*` never reach Amazon; then the connection's
//!    credentials are added (SP-API `x-amz-access-token` and `user-agent`; Ads
//!    `Authorization`, `Amazon-Advertising-API-ClientId`, the checked `…-Scope`; AMC the checked
//!    `…-MarketplaceId` and `…-AdvertiserId`, no Scope);
//! 3. a restricted operation ([`lwa::restricted`]) is sent with a Restricted Data Token from the
//!    vending cache instead of the access token;
//! 4. the per-connection-and-operation [`limiter`] gives the call its turn;
//! 5. the answer streams back with Amazon's status and headers, plus `x-lwa-broker-token`,
//!    `x-lwa-broker-refreshed` and `x-lwa-broker-retries`.
//!
//! Retries: a 401/403 that says the token is expired or invalid → one forced refresh (shared
//! with concurrent callers) and one retry, never more; a 429 → wait for `Retry-After` (or an
//! exponential backoff with jitter) and retry while the request's time budget lasts, then the
//! 429 is returned unchanged. Only requests whose body fits [`REPLAY_LIMIT`] are retried; larger
//! bodies stream straight through.

pub mod headers;
pub mod limiter;
pub mod metrics;
pub mod path;
pub mod routes;
pub mod standin;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lwa::restricted::{self, RestrictedResource};
use lwa::{Api, Region};
use tokio::time::Instant;

use crate::auth::TenantAuth;
use crate::config::ProxySettings;
use crate::error::ApiError;
use crate::sealing::TokenSecret;
use crate::state::AppState;
use crate::vend::routes::v1_error;
use crate::vend::{CachedToken, ConnectionView, RdtRequest, VendError};
use limiter::{Limiter, Turn};
use metrics::Metrics;
use path::{Origin, UpstreamPath};
use upstream::{Upstream, UpstreamBody, UpstreamError};

/// Request bodies up to this size are kept so the call can be retried; larger ones stream.
pub const REPLAY_LIMIT: usize = 1024 * 1024;
/// The shortest wait before a 429 is retried (whatever `Retry-After` says).
const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Largest Amazon error body read to decide whether a 401/403 means a bad token.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Which token the call was sent with (`access-token` or `restricted-data-token`).
pub const TOKEN_HEADER: &str = "x-lwa-broker-token";
/// Whether the connection was refreshed during the call (`true`/`false`).
pub const REFRESHED_HEADER: &str = "x-lwa-broker-refreshed";
/// How many times a 429 was retried.
pub const RETRIES_HEADER: &str = "x-lwa-broker-retries";
/// The `dataElements` for the call's RDT (`buyerInfo,shippingAddress`).
pub const DATA_ELEMENTS_HEADER: &str = "x-lwa-broker-data-elements";
/// `always` or `never`: overrides whether a restricted operation gets an RDT.
pub const RDT_HEADER: &str = "x-lwa-broker-rdt";
/// The Ads profile to scope the call to (or `Amazon-Advertising-API-Scope` itself).
pub const PROFILE_HEADER: &str = "x-lwa-broker-profile-id";

const DATA_ELEMENTS: &[&str] = &["buyerInfo", "shippingAddress", "buyerTaxInformation"];

/// The proxy's client, limiter and metrics; one per process.
#[derive(Debug)]
pub struct Proxy {
    client: Upstream,
    /// Each Amazon host's origin, parsed on its first call (the endpoints are fixed for the
    /// process's life).
    origins: parking_lot::RwLock<Vec<(&'static str, Arc<Origin>)>>,
    pub limiter: Limiter,
    pub metrics: Metrics,
    pub settings: ProxySettings,
}

impl Proxy {
    /// A proxy with these settings.
    pub fn new(settings: ProxySettings) -> Proxy {
        Proxy {
            client: Upstream::new(settings.connect_timeout, settings.timeout),
            origins: parking_lot::RwLock::new(Vec::new()),
            limiter: Limiter::new(settings.limiter),
            metrics: Metrics::default(),
            settings,
        }
    }

    /// The parsed origin of `host` on these endpoints.
    fn origin(&self, endpoints: &lwa::Endpoints, host: &'static str) -> Result<Arc<Origin>, path::PathError> {
        if let Some((_, origin)) = self.origins.read().iter().find(|(h, _)| *h == host) {
            return Ok(origin.clone());
        }
        let origin = Arc::new(Origin::parse(&endpoints.origin(host))?);
        let mut origins = self.origins.write();
        if !origins.iter().any(|(h, _)| *h == host) {
            origins.push((host, origin.clone()));
        }
        Ok(origin)
    }
}

/// Who is calling, established by the route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub auth: TenantAuth,
    pub connection_id: String,
    pub secret: Option<TokenSecret>,
    /// The caller holds only stand-ins (a proxy-only key or a stand-in token): Amazon tokens
    /// never go back to it, so the SDK's own RDT request gets a stand-in RDT.
    pub stand_ins_only: bool,
    /// The caller presented a stand-in RDT: the RDT request it covers.
    pub stand_in_rdt: Option<RdtRequest>,
    /// Errors in Amazon's shape (a request at the broker's root, from an SDK).
    pub amazon_errors: bool,
}

/// Where the call goes and how it is authorized.
struct Target {
    api: Api,
    amc: bool,
    host: &'static str,
    operation: String,
    rdt: Option<RdtRequest>,
    /// Headers to add for Ads/AMC (besides the token).
    extra: Vec<(&'static str, HeaderValue)>,
}

/// The request body: kept (so it can be sent again) or a stream sent once.
enum Outgoing {
    Kept(Bytes),
    Stream(Option<Body>),
}

/// Forwards one call. `raw_path` is the Amazon path as the caller wrote it (from `/`).
pub async fn forward(
    state: &AppState,
    caller: Caller,
    raw_path: &str,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let result = forward_inner(state, &caller, raw_path, request, started).await;
    match result {
        Ok(response) => response,
        Err(error) => {
            if caller.amazon_errors {
                amazon_error(error)
            } else {
                error.into_response()
            }
        }
    }
}

async fn forward_inner(
    state: &AppState,
    caller: &Caller,
    raw_path: &str,
    request: axum::extract::Request,
    started: Instant,
) -> Result<Response, ApiError> {
    let proxy = &state.proxy;
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    if !matches!(
        method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
    ) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the proxy forwards GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS",
        ));
    }
    let upstream_path = UpstreamPath::parse(raw_path, parts.uri.query())
        .map_err(|e| ApiError::bad_request("invalid_path", e.0))?;
    let auth = &caller.auth;
    let id = caller.connection_id.as_str();
    let (mut token, view) = state
        .vendor
        .for_proxy(state, &auth.tenant.id, id, caller.secret.as_ref())
        .await
        .map_err(|e| v1_error(e, Some(id)))?;
    let app = state.app(&view.app).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "app_not_configured",
            "the connection's app is not configured",
        )
    })?;

    // The Tokens API, for a caller that must never hold an Amazon token: the SDK's own RDT
    // request gets a stand-in RDT; nothing else under /tokens/ is forwarded, whatever its
    // spelling (a trailing slash, escaped letters, case).
    if view.api == Api::SpApi && caller.stand_ins_only {
        let normalized = path::normalized(upstream_path.path());
        if normalized == "/tokens" || normalized.starts_with("/tokens/") {
            if method == Method::POST
                && normalized == restricted::RDT_PATH.to_ascii_lowercase()
                && caller.stand_in_rdt.is_none()
            {
                return routes::stand_in_rdt(state, caller, body).await;
            }
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tokens_api_refused",
                "this caller gets Restricted Data Tokens only as stand-ins: POST \
                 /tokens/2021-03-01/restrictedDataToken with a stand-in access token",
            ));
        }
    }

    let target = target(caller, &parts.headers, &method, &upstream_path, &view, app)?;
    if let Some(length) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > proxy.settings.body_limit
    {
        return Err(body_too_large(proxy.settings.body_limit));
    }
    let mut outgoing = read_body(body, proxy.settings.body_limit).await?;
    // The headers for Amazon, built again only for a retry (most calls have one attempt).
    let streamed = matches!(outgoing, Outgoing::Stream(_));
    let forwarded = || {
        let mut forwarded = headers::outgoing(&parts.headers);
        if streamed && let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            forwarded.insert(header::CONTENT_LENGTH, length.clone());
        }
        for (name, value) in &target.extra {
            forwarded.insert(*name, value.clone());
        }
        forwarded
    };
    let mut first_headers = Some(forwarded());
    let origin = proxy
        .origin(&state.endpoints, target.host)
        .map_err(|e| ApiError::bad_request("invalid_path", e.0))?;
    let uri =
        path::checked_uri(&origin, &upstream_path).map_err(|e| ApiError::bad_request("invalid_path", e.0))?;

    let limit_key = (id.to_owned(), target.host, target.operation.clone());
    let deadline = started + proxy.settings.retry_budget;
    let mut refreshed = false;
    let mut rdt_renewed = false;
    let mut retries: u32 = 0;
    let mut upstream_time = Duration::ZERO;
    let mut waited = Duration::ZERO;
    loop {
        // The credential for this attempt.
        let rdt_token;
        let (credential, used_rdt) = match &target.rdt {
            Some(request) => {
                let minted = state
                    .vendor
                    .restricted_data_token(
                        state,
                        &auth.tenant.id,
                        id,
                        caller.secret.as_ref(),
                        request.clone(),
                    )
                    .await;
                match minted {
                    Ok(rdt) => {
                        rdt_token = rdt;
                        (&rdt_token, true)
                    }
                    // The Tokens API refused the access token: refresh it once, then mint again.
                    Err(VendError::Rejected {
                        status: 401 | 403, ..
                    }) if !refreshed => {
                        refreshed = true;
                        proxy.metrics.refreshed(view.api, &target.operation);
                        match state
                            .vendor
                            .force_refresh(state, &auth.tenant.id, id, caller.secret.as_ref(), &token)
                            .await
                            .map_err(|e| refresh_failed(e, id))?
                        {
                            Some(fresh) => token = fresh,
                            None => {
                                return Err(ApiError::new(
                                    StatusCode::FORBIDDEN,
                                    "amazon_denied",
                                    "Amazon's Tokens API refused the connection's fresh access token",
                                ));
                            }
                        }
                        continue;
                    }
                    Err(e) => return Err(v1_error(e, Some(id))),
                }
            }
            None => (&token, false),
        };
        let wait_started = Instant::now();
        let turn = match proxy.limiter.acquire(&limit_key, deadline).await {
            Ok(turn) => turn,
            Err(wait) => {
                proxy.metrics.limited(view.api, &target.operation);
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "Amazon's rate for this operation on this connection leaves no turn within the request's \
                         time budget ({} s); try again in {} s",
                        proxy.settings.retry_budget.as_secs(),
                        wait.as_secs().max(1)
                    ),
                )
                .header(header::RETRY_AFTER, &wait.as_secs().max(1).to_string()));
            }
        };
        waited += wait_started.elapsed();
        let mut guard = ProbeGuard {
            limiter: &proxy.limiter,
            key: &limit_key,
            turn,
            armed: true,
        };
        let mut send_headers = first_headers.take().unwrap_or_else(forwarded);
        add_credential(&mut send_headers, &target, credential, &app.credentials.client_id)?;
        if !send_headers.contains_key(header::ACCEPT) {
            send_headers.insert(header::ACCEPT, upstream::DEFAULT_ACCEPT);
        }
        send_headers.insert(header::HOST, origin.host_header().clone());
        let body = match &mut outgoing {
            Outgoing::Kept(bytes) => Body::from(bytes.clone()),
            Outgoing::Stream(stream) => stream.take().unwrap_or_else(|| Body::from(Bytes::new())),
        };
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = send_headers;
        let sent_at = Instant::now();
        let result = proxy.client.send(request).await;
        upstream_time += sent_at.elapsed();
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                guard.report(0, None, None);
                proxy.metrics.upstream(view.api, &target.operation, 0);
                let (status, code, what) = if matches!(e, UpstreamError::Timeout) {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "amazon_timeout",
                        "Amazon did not answer in time",
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "amazon_unreachable",
                        "Amazon could not be reached",
                    )
                };
                tracing::warn!(connection = %id, host = target.host, error = %e, "proxied call failed");
                return Err(ApiError::new(status, code, what));
            }
        };
        let status = response.status().as_u16();
        let rate = response
            .headers()
            .get("x-amzn-ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        guard.report(status, rate, retry_after);
        proxy.metrics.upstream(view.api, &target.operation, status);
        let replayable = matches!(outgoing, Outgoing::Kept(_));

        if status == 429 && replayable {
            // Amazon's wait (or a backoff), and the limiter's, must both fit the budget;
            // otherwise Amazon's 429 goes back unchanged.
            let delay = retry_after
                .unwrap_or_else(|| backoff(retries))
                .max(MIN_RETRY_DELAY);
            let ready = (Instant::now() + delay).max(proxy.limiter.ready_at(&limit_key));
            if ready <= deadline {
                retries += 1;
                proxy.metrics.retried(view.api, &target.operation);
                drop(response);
                if !proxy.limiter.enabled() {
                    let sleep_started = Instant::now();
                    tokio::time::sleep(delay).await;
                    waited += sleep_started.elapsed();
                }
                continue;
            }
        }
        let may_renew = !refreshed || (target.rdt.is_some() && !rdt_renewed);
        if (status == 401 || status == 403) && replayable && may_renew {
            let encoded = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
            let (response_parts, body_bytes) = read_small(response).await;
            if token_rejected(view.api, status, &body_bytes, encoded) {
                if let Some(request) = &target.rdt {
                    // Amazon refused the RDT: a new one is minted first (no LWA call), and if
                    // the Tokens API refuses the access token, that is refreshed (above).
                    state.vendor.forget_rdt(id, request);
                    if !rdt_renewed {
                        rdt_renewed = true;
                        continue;
                    }
                }
                if !refreshed {
                    let fresh = state
                        .vendor
                        .force_refresh(state, &auth.tenant.id, id, caller.secret.as_ref(), &token)
                        .await
                        .map_err(|e| refresh_failed(e, id))?;
                    if let Some(fresh) = fresh {
                        refreshed = true;
                        proxy.metrics.refreshed(view.api, &target.operation);
                        token = fresh;
                        continue;
                    }
                }
                // Refreshed a moment ago and refused again: Amazon's answer stands.
            }
            let mut out = Response::from_parts(response_parts, Body::from(body_bytes));
            finish(&mut out, used_rdt, refreshed, retries);
            proxy
                .metrics
                .added(started.elapsed().saturating_sub(upstream_time + waited));
            return Ok(out);
        }
        proxy
            .metrics
            .added(started.elapsed().saturating_sub(upstream_time + waited));
        if let Some(request) = target.rdt.as_ref().filter(|_| used_rdt) {
            // Restricted data was read on the tenant's behalf: the audit trail says so.
            let detail = request.audit_detail();
            state.auditor.record(
                state.now_ms(),
                auth,
                Some(id),
                crate::audit::Kind::RestrictedDataToken,
                crate::audit::Via::Proxy,
                Some(detail),
            );
        }
        return Ok(pass_through(response, used_rdt, refreshed, retries));
    }
}

/// Reports a call's answer to the limiter, or its absence if the call never finished (a
/// dropped request), so a probe or extra call is never left out.
struct ProbeGuard<'a> {
    limiter: &'a Limiter,
    key: &'a limiter::LimitKey,
    turn: Turn,
    armed: bool,
}

impl ProbeGuard<'_> {
    fn report(&mut self, status: u16, rate: Option<f64>, retry_after: Option<Duration>) {
        self.limiter.learn(self.key, self.turn, status, rate, retry_after);
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.limiter.learn(self.key, self.turn, 0, None, None);
        }
    }
}

/// Exponential backoff with full jitter for a 429 without `Retry-After`: 100 ms doubling to
/// 2 s, each a random share of that.
fn backoff(retries: u32) -> Duration {
    let cap_ms = (100u64 << retries.min(5)).min(2_000);
    Duration::from_millis(rand::random_range(cap_ms / 4..=cap_ms))
}

/// Decides target host, operation and RDT, and checks the Ads/AMC headers.
fn target(
    caller: &Caller,
    headers: &HeaderMap,
    method: &Method,
    upstream: &UpstreamPath,
    view: &ConnectionView,
    app: &crate::config::AppConfig,
) -> Result<Target, ApiError> {
    // One look at the restricted-operation table serves the operation's name and its RDT.
    let found = restricted::find(method.as_str(), upstream.path());
    let operation = path::operation_of(found, method.as_str(), upstream.path());
    match view.api {
        Api::SpApi => {
            let host = if app.sandbox {
                view.region.sp_api_sandbox_host()
            } else {
                view.region.sp_api_host()
            };
            let rdt = match &caller.stand_in_rdt {
                Some(request) => {
                    let covered = request.resources.iter().any(|r| {
                        r.method.eq_ignore_ascii_case(method.as_str()) && covers(&r.path, upstream.path())
                    });
                    if !covered {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "rdt_not_covering",
                            "this restricted data token does not cover this operation",
                        ));
                    }
                    Some(request.clone())
                }
                None => restricted_request(headers, method, upstream, found)?,
            };
            Ok(Target {
                api: Api::SpApi,
                amc: false,
                host,
                operation,
                rdt,
                extra: Vec::new(),
            })
        }
        Api::Ads => {
            let amc = upstream.path().starts_with("/amc/");
            let mut extra = Vec::new();
            let mut region = view.region;
            if amc {
                if let Some(marketplace) = header_text(headers, "amazon-advertising-api-marketplaceid") {
                    if !id_like(marketplace, 32) {
                        return Err(ApiError::bad_request(
                            "invalid_marketplace_id",
                            "Amazon-Advertising-API-MarketplaceId must be a marketplace id such as ATVPDKIKX0DER",
                        ));
                    }
                    if let Ok(r) = Region::parse(marketplace) {
                        region = r;
                    }
                    extra.push((
                        "amazon-advertising-api-marketplaceid",
                        HeaderValue::from_str(marketplace).map_err(|_| bad_header())?,
                    ));
                }
                if let Some(advertiser) = header_text(headers, "amazon-advertising-api-advertiserid") {
                    if !id_like(advertiser, 64) {
                        return Err(ApiError::bad_request(
                            "invalid_advertiser_id",
                            "Amazon-Advertising-API-AdvertiserId must be an AMC account id such as ENTITY1AA1AA11AAA1",
                        ));
                    }
                    extra.push((
                        "amazon-advertising-api-advertiserid",
                        HeaderValue::from_str(advertiser).map_err(|_| bad_header())?,
                    ));
                }
            } else if let Some(profile) = header_text(headers, PROFILE_HEADER)
                .or_else(|| header_text(headers, "amazon-advertising-api-scope"))
            {
                if profile.is_empty() || profile.len() > 20 || !profile.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::bad_request(
                        "invalid_profile_id",
                        "the Ads profile id must be digits (x-lwa-broker-profile-id or Amazon-Advertising-API-Scope)",
                    ));
                }
                let known = view
                    .profiles
                    .as_deref()
                    .and_then(|profiles| profiles.iter().find(|p| &*p.id == profile));
                let Some(known) = known else {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "profile_not_in_connection",
                        "this Ads profile is not one of the connection's profiles (GET /v1/connections/{id} lists them)",
                    ));
                };
                if let Some(r) = known.region {
                    region = r;
                }
                extra.push((
                    "amazon-advertising-api-scope",
                    HeaderValue::from_str(profile).map_err(|_| bad_header())?,
                ));
            }
            Ok(Target {
                api: Api::Ads,
                amc,
                host: region.ads_api_host(),
                operation,
                rdt: None,
                extra,
            })
        }
    }
}

fn bad_header() -> ApiError {
    ApiError::bad_request("invalid_header", "a header value is not allowed")
}

/// Letters, digits, `.`, `-` and `_`, up to `max` long.
fn id_like(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Whether an RDT resource path (specific or generic) covers a request path.
fn covers(resource_path: &str, request_path: &str) -> bool {
    let mut r = resource_path.split('/');
    let mut p = request_path.trim_end_matches('/').split('/');
    loop {
        match (r.next(), p.next()) {
            (None, None) => return true,
            (Some(rs), Some(ps)) => {
                let placeholder = rs.starts_with('{') && rs.ends_with('}');
                if !(placeholder && !ps.is_empty() || rs == ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The RDT a restricted operation needs, if any: every operation of the table, except that
/// Orders' `getOrders`/`getOrder`/`getOrderItems` need one only when `dataElements` are asked
/// for, and `getReportDocument` (restricted only for restricted report types, and only by its
/// specific path) only with `x-lwa-broker-rdt: always`.
fn restricted_request(
    headers: &HeaderMap,
    method: &Method,
    upstream: &UpstreamPath,
    found: Option<&restricted::RestrictedOperation>,
) -> Result<Option<RdtRequest>, ApiError> {
    let mut elements: Vec<String> = Vec::new();
    if let Some(list) = header_text(headers, DATA_ELEMENTS_HEADER) {
        for element in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !DATA_ELEMENTS.contains(&element) {
                return Err(ApiError::bad_request(
                    "invalid_data_elements",
                    "x-lwa-broker-data-elements lists buyerInfo, shippingAddress, buyerTaxInformation",
                ));
            }
            elements.push(element.to_owned());
        }
    }
    let force = match header_text(headers, RDT_HEADER) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("always") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("never") => Some(false),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_rdt_header",
                "x-lwa-broker-rdt is always or never",
            ));
        }
    };
    let needed = match (force, found) {
        (Some(f), _) => f,
        (None, None) => false,
        (None, Some(op)) if op.data_elements => !elements.is_empty(),
        (None, Some(op)) => op.generic,
    };
    if !needed {
        return Ok(None);
    }
    let resource = RestrictedResource {
        method: method.as_str().to_owned(),
        path: upstream.path().to_owned(),
        data_elements: elements,
    };
    Ok(Some(RdtRequest {
        resources: restricted::canonical_set(&[resource]),
        target_application: None,
    }))
}

/// Sets the token (and the Ads client id) on a call.
fn add_credential(
    headers: &mut HeaderMap,
    target: &Target,
    token: &CachedToken,
    client_id: &str,
) -> Result<(), ApiError> {
    let internal = |_| ApiError::internal("proxy", "a token is not a valid header value");
    match target.api {
        Api::SpApi => {
            let mut value = HeaderValue::from_str(token.token.expose()).map_err(internal)?;
            value.set_sensitive(true);
            headers.insert("x-amz-access-token", value);
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(lwa::DEFAULT_USER_AGENT),
            );
        }
        Api::Ads => {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).map_err(internal)?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
            headers.insert(
                "amazon-advertising-api-clientid",
                HeaderValue::from_str(client_id).map_err(internal)?,
            );
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(lwa::DEFAULT_USER_AGENT),
            );
            if target.amc {
                headers.remove("amazon-advertising-api-scope");
            }
        }
    }
    Ok(())
}

/// Reads the request body: kept when it fits [`REPLAY_LIMIT`], else streamed with `limit`
/// enforced on the way.
async fn read_body(body: Body, limit: u64) -> Result<Outgoing, ApiError> {
    let mut stream = body.into_data_stream();
    let mut kept: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    loop {
        match stream.next().await {
            None => {
                let bytes = match kept.len() {
                    0 => Bytes::new(),
                    1 => kept.pop().unwrap_or_default(),
                    _ => Bytes::from(kept.concat()),
                };
                return Ok(Outgoing::Kept(bytes));
            }
            Some(Err(_)) => {
                return Err(ApiError::bad_request(
                    "body_unreadable",
                    "the request body could not be read",
                ));
            }
            Some(Ok(chunk)) => {
                size += chunk.len();
                if size as u64 > limit {
                    return Err(body_too_large(limit));
                }
                kept.push(chunk);
                if size > REPLAY_LIMIT {
                    break;
                }
            }
        }
    }
    let mut sent = size as u64;
    let head = futures::stream::iter(kept.into_iter().map(Ok::<Bytes, std::io::Error>));
    let tail = stream.map(move |chunk| match chunk {
        Ok(bytes) => {
            sent += bytes.len() as u64;
            if sent > limit {
                Err(std::io::Error::other(
                    "the request body is over the proxy's limit",
                ))
            } else {
                Ok(bytes)
            }
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    });
    Ok(Outgoing::Stream(Some(Body::from_stream(head.chain(tail)))))
}

fn body_too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the request body is over the proxy's limit of {limit} bytes (LWA_BROKER_PROXY_BODY_LIMIT_BYTES)"
        ),
    )
}

/// The head and (up to [`ERROR_BODY_LIMIT`] of) the body of a small answer.
async fn read_small(response: axum::http::Response<UpstreamBody>) -> (axum::http::response::Parts, Bytes) {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut stream = body.into_body().into_data_stream();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > ERROR_BODY_LIMIT {
            break;
        }
    }
    (parts, Bytes::from(body))
}

/// Whether Amazon's 401/403 says the token is expired or invalid (not, say, a missing role).
/// SP-API: a 401/403 whose error mentions the token being expired, revoked, malformed or
/// invalid (AMAZON.md §3.3). Ads: any 401. A compressed body cannot be read here, so it counts
/// as a refusal. Whatever this says, a connection is force-refreshed at most once a minute while
/// Amazon keeps refusing (`FORCED_REFRESH_COOLDOWN_MS`).
pub fn token_rejected(api: Api, status: u16, body: &[u8], encoded: bool) -> bool {
    match api {
        Api::Ads => status == 401,
        Api::SpApi if encoded => true,
        Api::SpApi => {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            text.contains("token")
                && ["expired", "revoked", "malformed", "invalid"]
                    .iter()
                    .any(|w| text.contains(w))
        }
    }
}

/// A refresh forced by Amazon's refusal failed.
fn refresh_failed(e: VendError, id: &str) -> ApiError {
    match e {
        VendError::NeedsReauth => ApiError::new(
            StatusCode::CONFLICT,
            "needs_reauth",
            "Amazon refused the connection's token and then its refresh token (invalid_grant): the connection \
             is now needs_reauth and the seller must authorize again (POST /v1/connections/{id}/reauthorize-link)",
        ),
        other => v1_error(other, Some(id)),
    }
}

/// Amazon's answer, streamed back with the broker's headers added.
fn pass_through(
    response: axum::http::Response<UpstreamBody>,
    rdt: bool,
    refreshed: bool,
    retries: u32,
) -> Response {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts);
    let mut out = Response::from_parts(parts, body.into_body());
    finish(&mut out, rdt, refreshed, retries);
    out
}

fn finish(response: &mut Response, rdt: bool, refreshed: bool, retries: u32) {
    let h = response.headers_mut();
    h.insert(
        TOKEN_HEADER,
        HeaderValue::from_static(if rdt {
            "restricted-data-token"
        } else {
            "access-token"
        }),
    );
    h.insert(
        REFRESHED_HEADER,
        HeaderValue::from_static(if refreshed { "true" } else { "false" }),
    );
    h.insert(
        RETRIES_HEADER,
        match retries {
            0 => HeaderValue::from_static("0"),
            n => HeaderValue::from(n),
        },
    );
}

/// A broker error in SP-API's shape, for SDKs calling the broker's root.
fn amazon_error(error: ApiError) -> Response {
    let body = serde_json::json!({"errors": [{"code": error.code, "message": error.message}]});
    let mut response = (error.status, axum::Json(body)).into_response();
    for (name, value) in error.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

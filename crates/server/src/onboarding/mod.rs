//! Onboarding: every way an authorization starts (`/auth/initialize`, connect links,
//! re-authorization links, Amazon's OAuth Login URI) and the one way it ends (`/auth/redirect`),
//! then the claim of the connection by the tenant.

pub mod callback;
pub mod claims;
pub mod initialize;
pub mod links;
pub mod login_uri;
pub mod ratelimit;
pub mod redirect_url;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lwa::{AccountType, AdsConsent, Api, Marketplace, Pkce, Region, SpApiConsent};
use lwa_store::{OAuthState, Tenant};

use crate::config::AppConfig;
use crate::error::ApiError;
use crate::ids;
use crate::sealing::TokenSecret;
use crate::state::AppState;

/// A broker-made state lives 10 minutes.
pub const STATE_TTL_MS: i64 = 10 * 60 * 1000;
/// A claim code lives 5 minutes.
pub const CLAIM_TTL_MS: i64 = 5 * 60 * 1000;

/// Everything an authorization needs before the seller is sent to Amazon.
#[derive(Debug, Clone)]
pub struct Flow {
    pub tenant_id: String,
    pub app: AppConfig,
    pub region: Region,
    pub account_type: AccountType,
    pub marketplace: Option<&'static Marketplace>,
    /// The tenant's own state, echoed back.
    pub client_state: String,
    /// Already proven to lie under the tenant's origins.
    pub redirect_url: String,
    pub token_secret: Option<TokenSecret>,
    /// Re-authorizes this connection.
    pub connection_id: Option<String>,
    /// `initialize`, `connect_link`, `reauthorize`, `login_uri`.
    pub origin: &'static str,
}

/// A stored state: the value for Amazon and the PKCE pair (Ads).
#[derive(Debug)]
pub struct Started {
    pub state: String,
    pub pkce: Option<Pkce>,
}

/// Stores the state of a new authorization (≥128 random bits, single use, 10 minutes).
pub async fn start(app_state: &AppState, flow: &Flow) -> Result<Started, ApiError> {
    let state = ids::new_secret();
    let state_hash = ids::hash(&state);
    let pkce = (flow.app.kind == Api::Ads).then(Pkce::generate);
    let now = app_state.now_ms();
    let record = OAuthState {
        state_hash: state_hash.clone(),
        tenant_id: flow.tenant_id.clone(),
        app: flow.app.name.clone(),
        api: flow.app.kind.as_str().to_owned(),
        region: flow.region.as_str().to_owned(),
        account_type: (flow.app.kind == Api::SpApi).then(|| flow.account_type.as_str().to_owned()),
        marketplace_id: flow.marketplace.map(|m| m.id.to_owned()),
        client_state: flow.client_state.clone(),
        redirect_url: flow.redirect_url.clone(),
        token_secret: flow.token_secret.as_ref().map(|s| {
            app_state
                .sealer
                .seal(&state_hash, "token_secret", s.expose(), None)
        }),
        code_verifier: pkce.as_ref().map(|p| {
            app_state
                .sealer
                .seal(&state_hash, "code_verifier", p.verifier().expose(), None)
        }),
        connection_id: flow.connection_id.clone(),
        origin: flow.origin.to_owned(),
        created_at_ms: now,
        expires_at_ms: now + STATE_TTL_MS,
        used_at_ms: None,
    };
    app_state.store.insert_oauth_state(&record).await?;
    Ok(Started { state, pkce })
}

/// The consent page for a started flow.
pub fn consent_url(app_state: &AppState, flow: &Flow, started: &Started) -> Result<String, ApiError> {
    let app = &flow.app;
    match app.kind {
        Api::SpApi => Ok(SpApiConsent {
            application_id: app.application_id.clone().unwrap_or_default(),
            state: started.state.clone(),
            redirect_uri: Some(app_state.redirect_uri(app)),
            draft: app.draft,
            account_type: flow.account_type,
            region: flow.region,
            marketplace: flow.marketplace,
        }
        .url(&app_state.endpoints)),
        Api::Ads => Ok(AdsConsent {
            client_id: app.credentials.client_id.clone(),
            scopes: app.scopes.clone(),
            redirect_uri: app_state.redirect_uri(app),
            state: started.state.clone(),
            region: flow.region,
            code_challenge: started.pkce.as_ref().map(|p| p.challenge().to_owned()),
        }
        .url(&app_state.endpoints)),
    }
}

/// A 302 that leaks nothing through the Referer header and is never cached.
pub fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(value) => {
            headers.insert(header::LOCATION, value);
        }
        Err(_) => return ApiError::internal("redirect", "location is not a header value").into_response(),
    }
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The handle a tenant uses to name a connection on the LWA-compatible endpoint:
/// `lwah_<connection id>`, or `lwah_<connection id>.<secret, base64url>` when the tenant holds
/// the connection's secret.
pub fn handle(connection_id: &str, secret: Option<&TokenSecret>) -> String {
    match secret {
        None => format!("lwah_{connection_id}"),
        Some(secret) => format!("lwah_{connection_id}.{}", URL_SAFE_NO_PAD.encode(secret.expose())),
    }
}

/// Reads a handle back: the connection id and the tenant secret it carries.
pub fn parse_handle(handle: &str) -> Option<(String, Option<TokenSecret>)> {
    let rest = handle.strip_prefix("lwah_")?;
    match rest.split_once('.') {
        None => Some((rest.to_owned(), None)),
        Some((id, secret)) => {
            let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
            let secret = TokenSecret::parse(std::str::from_utf8(&bytes).ok()?)?;
            Some((id.to_owned(), Some(secret)))
        }
    }
}

/// The tenant's app of a kind, or a clear error.
pub fn tenant_app(app_state: &AppState, tenant: &Tenant, kind: Api) -> Result<AppConfig, ApiError> {
    app_state.app_for(tenant, kind).cloned().ok_or_else(|| {
        ApiError::bad_request(
            "no_app",
            format!(
                "no {} app is configured for this tenant (configure one, or name it on the tenant)",
                kind.as_str()
            ),
        )
    })
}

/// Parses `api`: `sp-api` (default) or `ads`.
pub fn parse_api(value: Option<&str>) -> Result<Api, ApiError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(Api::SpApi),
        Some(v) if v.is_empty() || v == "sp-api" || v == "spapi" => Ok(Api::SpApi),
        Some(v) if v == "ads" || v == "amc" => Ok(Api::Ads),
        Some(_) => Err(ApiError::bad_request("invalid_api", "api must be sp-api or ads")),
    }
}

/// Parses `account_type`: `seller` (default) or `vendor`.
pub fn parse_account_type(value: Option<&str>) -> Result<AccountType, ApiError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(AccountType::Seller),
        Some(v) if v.is_empty() || v == "seller" => Ok(AccountType::Seller),
        Some(v) if v == "vendor" => Ok(AccountType::Vendor),
        Some(_) => Err(ApiError::bad_request(
            "invalid_account_type",
            "account_type must be seller or vendor",
        )),
    }
}

/// Parses an optional `marketplace` (id or country code) that must lie in `region`.
pub fn parse_marketplace(
    value: Option<&str>,
    region: Region,
) -> Result<Option<&'static Marketplace>, ApiError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let marketplace = Marketplace::parse(value).map_err(|_| {
        ApiError::bad_request("invalid_marketplace", "marketplace is not a known marketplace id")
    })?;
    if marketplace.region != region {
        return Err(ApiError::bad_request(
            "invalid_marketplace",
            format!(
                "marketplace {} is not in region {}",
                marketplace.id,
                region.as_str()
            ),
        ));
    }
    Ok(Some(marketplace))
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
/// untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let trusted = |ip: IpAddr| state.trusted_proxies.iter().any(|p| p.contains(ip));
        if !trusted(peer) {
            return Ok(ClientAddr(peer));
        }
        let forwarded: Vec<IpAddr> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        Ok(ClientAddr(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(*ip))
                .unwrap_or(peer),
        ))
    }
}

/// Query parameters as a map (first value wins), without failing on odd input.
pub fn query_map(query: Option<&str>) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

/// `url` with query pairs appended.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            {
                let mut q = parsed.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        assert_eq!(handle("conn_abc", None), "lwah_conn_abc");
        let (id, secret) = parse_handle("lwah_conn_abc").unwrap();
        assert_eq!(id, "conn_abc");
        assert!(secret.is_none());
        let s = TokenSecret::parse("q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0u=").unwrap();
        let h = handle("conn_abc", Some(&s));
        let (id, back) = parse_handle(&h).unwrap();
        assert_eq!(id, "conn_abc");
        assert_eq!(back.unwrap().expose(), s.expose());
        assert!(parse_handle("conn_abc").is_none());
        assert!(parse_handle("lwah_conn_abc.!!").is_none());
    }
}

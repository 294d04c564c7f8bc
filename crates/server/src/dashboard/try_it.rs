//! `--sandbox` only: the "Try it" walkthrough (connect a demo seller at the fake, vend, proxy,
//! revoke at the fake and watch `needs_reauth` and its webhook) and the built-in webhook inbox
//! the demo tenant's webhook points at. Everything here talks to the fake Amazon.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fake_amazon::FakeControl;
use lwa_store::ConnectionFilter;
use subtle::ConstantTimeEq;

use super::pages::{Row, refresh_now};
use super::session::AdminSession;
use super::{see_other, when};
use crate::state::AppState;
use crate::webhooks::SigningSecret;

/// The sandbox's demo tenant, as [`crate::sandbox::prepare`] made it.
#[derive(Debug)]
pub struct SandboxInfo {
    pub tenant_id: String,
    /// The demo tenant's API key (a sandbox key: it opens only fake Amazon tokens).
    pub api_key: String,
    pub fake_url: String,
    /// The demo tenant's webhook signing secret, so the inbox can check signatures.
    pub signing_secret: Option<SigningSecret>,
    /// What the last "vend" and "proxied call" buttons got.
    pub last_vend: Option<String>,
    pub last_proxy: Option<String>,
    /// The connect link the "Connect" button made (followed with a link: the CSP's
    /// `form-action 'self'` stops a form's redirect to another origin).
    pub connect_link: Option<String>,
}

/// One webhook the inbox received.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub at: String,
    pub event_type: String,
    pub signature_ok: bool,
    pub body: String,
}

/// The public route the demo tenant's webhook points at.
pub const INBOX_PATH: &str = "/sandbox/webhook-inbox";

/// `POST /sandbox/webhook-inbox`: keeps the last 50 deliveries, with whether their signature
/// matched the demo tenant's secret.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let signature_ok = {
        let info = state.dashboard.sandbox.lock();
        let timestamp = header("webhook-timestamp").parse::<i64>().ok();
        match (info.as_ref().and_then(|i| i.signing_secret.as_ref()), timestamp) {
            (Some(secret), Some(ts)) => {
                let expected = secret.signature_header(ts, &body);
                bool::from(
                    expected
                        .as_bytes()
                        .ct_eq(header("lwa-broker-signature").as_bytes()),
                )
            }
            _ => false,
        }
    };
    let event_type = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let mut inbox = state.dashboard.inbox.lock();
    inbox.push_back(InboxEntry {
        at: when(state.now_ms()),
        event_type,
        signature_ok,
        body,
    });
    while inbox.len() > 50 {
        inbox.pop_front();
    }
    StatusCode::NO_CONTENT
}

#[derive(Template)]
#[template(path = "admin/try.html")]
struct TryPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    base: String,
    fake_url: String,
    rows: Vec<Row>,
    first: Option<String>,
    last_vend: String,
    last_proxy: String,
    connect_link: String,
    inbox_count: usize,
}

/// `GET /admin/try`.
pub async fn page(State(state): State<AppState>, s: AdminSession) -> Response {
    let (tenant_id, fake_url, last_vend, last_proxy, connect_link) = match &*state.dashboard.sandbox.lock() {
        Some(i) => (
            i.tenant_id.clone(),
            i.fake_url.clone(),
            i.last_vend.clone().unwrap_or_default(),
            i.last_proxy.clone().unwrap_or_default(),
            i.connect_link.clone().unwrap_or_default(),
        ),
        None => return (StatusCode::NOT_FOUND, "the sandbox has no demo tenant").into_response(),
    };
    let rows = state
        .store
        .list_connections(&ConnectionFilter {
            tenant_id: Some(tenant_id),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let now = state.now_ms();
    let page = TryPage {
        csrf: s.csrf.clone(),
        nav: "try",
        sandbox: true,
        base: state.public(""),
        fake_url,
        first: rows
            .iter()
            .find(|c| c.status != "disconnected")
            .map(|c| c.id.clone()),
        rows: rows.iter().map(|c| super::pages::row_of(c, now)).collect(),
        last_vend,
        last_proxy,
        connect_link,
        inbox_count: state.dashboard.inbox.lock().len(),
    };
    match page.render() {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn tenant_id(state: &AppState) -> Option<String> {
    state
        .dashboard
        .sandbox
        .lock()
        .as_ref()
        .map(|i| i.tenant_id.clone())
}

/// `POST /admin/try/connect`: a new connect link for the demo tenant, followed at once (the
/// fake's consent page opens).
pub async fn connect(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    if let Err(r) = super::pages::checked_form(&s, &body) {
        return r.into_response();
    }
    match crate::sandbox::demo_connect_link(&state).await {
        Ok(link) => {
            if let Some(info) = state.dashboard.sandbox.lock().as_mut() {
                info.connect_link = Some(link);
            }
            see_other("/admin/try#step-connect")
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.message).into_response(),
    }
}

/// The form's connection id, put in a path of this broker's own API: anything but an id's
/// characters (letters, digits, `_`, `-`) is refused as no connection, so the field cannot steer
/// the call to another path.
fn connection_field(form: &std::collections::HashMap<String, String>) -> String {
    form.get("connection")
        .filter(|id| {
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .cloned()
        .unwrap_or_else(|| "none".to_owned())
}

/// `POST /admin/try/vend`: what `POST /v1/connections/{id}/access-token` answers (the token's
/// first characters only).
pub async fn vend(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    let form = match super::pages::checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let id = connection_field(&form);
    let outcome = call_self(&state, "POST", &format!("/v1/connections/{id}/access-token")).await;
    if let Some(info) = state.dashboard.sandbox.lock().as_mut() {
        info.last_vend = Some(outcome);
    }
    see_other("/admin/try#vend")
}

/// `POST /admin/try/proxy`: a proxied SP-API call (`getMarketplaceParticipations`).
pub async fn proxy(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    let form = match super::pages::checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let id = connection_field(&form);
    let outcome = call_self(
        &state,
        "GET",
        &format!("/v1/connections/{id}/proxy/sellers/v1/marketplaceParticipations"),
    )
    .await;
    if let Some(info) = state.dashboard.sandbox.lock().as_mut() {
        info.last_proxy = Some(outcome);
    }
    see_other("/admin/try#proxy")
}

/// Calls this broker as the demo tenant would; the status and a shortened body.
async fn call_self(state: &AppState, method: &str, path: &str) -> String {
    let Some(key) = state.dashboard.sandbox.lock().as_ref().map(|i| i.api_key.clone()) else {
        return "no demo tenant".into();
    };
    let url = state.public(path);
    let request = match method {
        "POST" => state.lwa.http().post(url),
        _ => state.lwa.http().get(url),
    };
    match request.bearer_auth(key).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            // An access token is cut to its first characters: the page is for reading, not copying.
            let shown = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(mut v) if v.get("access_token").is_some() => {
                    let t = v["access_token"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(12)
                        .collect::<String>();
                    v["access_token"] = serde_json::Value::String(format!("{t}…"));
                    v.to_string()
                }
                _ => text.chars().take(600).collect(),
            };
            format!("HTTP {status}: {shown}")
        }
        Err(e) => format!("failed: {}", e.without_url()),
    }
}

/// `POST /admin/try/revoke`: the seller removes the app at the fake; the broker's next refresh
/// (made now) gets `invalid_grant`, marks the connection `needs_reauth` and sends the webhook.
pub async fn revoke(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    let form = match super::pages::checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let id = connection_field(&form);
    let Some(fake_url) = state
        .dashboard
        .sandbox
        .lock()
        .as_ref()
        .map(|i| i.fake_url.clone())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let c = match state.store.connection(&id).await {
        Ok(Some(c)) if Some(&c.tenant_id) == tenant_id(&state).as_ref() => c,
        _ => return (StatusCode::NOT_FOUND, "no such demo connection").into_response(),
    };
    let Some(app) = state.app(&c.app) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    FakeControl::new(&fake_url)
        .revoke(fake_amazon::RevokeSpec {
            client_id: Some(app.credentials.client_id.clone()),
            selling_partner_id: c.selling_partner_id.clone(),
            ..Default::default()
        })
        .await;
    // The refusal is the point: the connection is now needs_reauth.
    let _ = refresh_now(&state, &id).await;
    see_other("/admin/try#revoke")
}

#[derive(Template)]
#[template(path = "admin/inbox.html")]
struct InboxPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    entries: Vec<InboxEntry>,
}

/// `GET /admin/inbox`.
pub async fn inbox(State(state): State<AppState>, s: AdminSession) -> Response {
    let entries = state.dashboard.inbox.lock().iter().rev().cloned().collect();
    let page = InboxPage {
        csrf: s.csrf.clone(),
        nav: "inbox",
        sandbox: true,
        entries,
    };
    match page.render() {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_field_is_an_id_or_nothing() {
        let form = |v: &str| std::collections::HashMap::from([("connection".to_owned(), v.to_owned())]);
        assert_eq!(connection_field(&form("conn_k2v9x")), "conn_k2v9x");
        for crafted in [
            "../../v1/audit",
            "conn_1/proxy/x",
            "conn_1?x=1",
            "conn 1",
            "conn_1%2f",
        ] {
            assert_eq!(connection_field(&form(crafted)), "none", "{crafted}");
        }
        assert_eq!(connection_field(&Default::default()), "none");
    }
}

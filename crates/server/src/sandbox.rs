//! `serve --sandbox`: the fake Amazon in-process, its default apps, a demo tenant, and a page
//! the demo seller lands on.

use axum::http::Uri;
use axum::response::Html;
use fake_amazon::defaults;
use lwa::{Api, AppCredentials};

use crate::admin::{NewTenant, create_tenant};
use crate::config::AppConfig;
use crate::error::ApiError;
use crate::onboarding::links::{NewConnectLink, new_connect_link};
use crate::onboarding::query_map;
use crate::state::AppState;

/// The fake's two default apps.
pub fn apps() -> Vec<AppConfig> {
    vec![
        AppConfig {
            name: "sandbox-sp-api".into(),
            kind: Api::SpApi,
            credentials: AppCredentials::new(defaults::SP_API_CLIENT_ID, defaults::SP_API_CLIENT_SECRET),
            application_id: Some(defaults::SP_API_APPLICATION_ID.into()),
            draft: false,
            redirect_uri: None,
            scopes: vec![],
            sandbox: false,
            self_authorized: false,
            expiry_notices: true,
        },
        AppConfig {
            name: "sandbox-ads".into(),
            kind: Api::Ads,
            credentials: AppCredentials::new(defaults::ADS_CLIENT_ID, defaults::ADS_CLIENT_SECRET),
            application_id: None,
            draft: false,
            redirect_uri: None,
            scopes: vec![lwa::ADS_SCOPE_CAMPAIGN_MANAGEMENT.into()],
            sandbox: false,
            self_authorized: false,
            expiry_notices: false,
        },
    ]
}

/// What the sandbox prints once at start.
#[derive(Debug)]
pub struct Welcome {
    pub server_url: String,
    pub fake_amazon_url: String,
    pub tenant_id: String,
    pub api_key: String,
    pub connect_link: String,
}

/// Creates the demo tenant, its key and a connect link.
pub async fn prepare(state: &AppState, fake_amazon_url: &str) -> Result<Welcome, ApiError> {
    let landing = state.public("/sandbox");
    let (tenant, key) = create_tenant(
        state,
        NewTenant {
            name: "Demo tenant".into(),
            redirect_origins: vec![landing.clone()],
            ..NewTenant::default()
        },
    )
    .await?;
    // The demo tenant's webhook goes to the built-in inbox (`/admin/inbox` shows it).
    let (_, secret) = crate::webhooks::routes::set_webhook_url(
        state,
        &tenant.id,
        Some(&state.public(crate::dashboard::try_it::INBOX_PATH)),
    )
    .await?;
    *state.dashboard.sandbox.lock() = Some(crate::dashboard::try_it::SandboxInfo {
        tenant_id: tenant.id.clone(),
        api_key: key.key.to_string(),
        fake_url: fake_amazon_url.to_owned(),
        signing_secret: secret,
        last_vend: None,
        last_proxy: None,
        connect_link: None,
    });
    let connect_link = demo_connect_link(state).await?;
    Ok(Welcome {
        server_url: state.public(""),
        fake_amazon_url: fake_amazon_url.to_owned(),
        tenant_id: tenant.id,
        api_key: key.key.to_string(),
        connect_link,
    })
}

/// A new connect link of the demo tenant (SP-API, North America), back to `/sandbox/done`.
pub async fn demo_connect_link(state: &AppState) -> Result<String, ApiError> {
    let tenant_id = state
        .dashboard
        .sandbox
        .lock()
        .as_ref()
        .map(|i| i.tenant_id.clone())
        .ok_or_else(|| ApiError::not_found("the sandbox has no demo tenant"))?;
    let tenant = state
        .store
        .tenant(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the demo tenant is gone"))?;
    let (link, _) = new_connect_link(
        state,
        &tenant,
        NewConnectLink {
            api: None,
            region: Some("na".into()),
            marketplace: None,
            state: "demo".into(),
            redirect_url: state.public("/sandbox/done"),
            token_secret: None,
            account_type: None,
            expires_in: None,
        },
    )
    .await?;
    Ok(link)
}

/// `GET /sandbox/done`: where the demo seller lands; shows what the tenant would receive.
pub async fn landing(uri: Uri) -> Html<String> {
    let q = query_map(uri.query());
    let e = |k: &str| html_escape::encode_text(q.get(k).map(String::as_str).unwrap_or("")).into_owned();
    let body = if q.contains_key("error") {
        format!(
            "<h1>Not connected</h1><p>error: <code>{}</code></p><p>{}</p>",
            e("error"),
            e("error_description")
        )
    } else {
        format!(
            "<h1>Connected</h1><p>The broker redirected here as it would to your application, with:</p>\
             <ul><li>state: <code>{}</code></li><li>tenant_id: <code>{}</code></li>\
             <li>seller_id (the connection id): <code>{}</code></li><li>code (claim code, 5 minutes): <code>{}</code></li></ul>\
             <p>Claim it:</p><pre>curl -s -X POST {}/v1/claims -H \"Authorization: Bearer $LWA_BROKER_KEY\" \
             -H 'content-type: application/json' -d '{{\"code\":\"{}\"}}'</pre>\
             <p><a id=\"back-to-try\" href=\"/admin/try\">Back to the walkthrough</a></p>",
            e("state"),
            e("tenant_id"),
            e("seller_id"),
            e("code"),
            "$LWA_BROKER_URL",
            e("code"),
        )
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lwa-broker sandbox</title></head>\
         <body style=\"font-family:sans-serif;max-width:48em;margin:3em auto\">{body}</body></html>"
    ))
}

//! Amazon's OAuth Login URI (AMAZON.md §2.2): Amazon loads it with `amazon_callback_uri`,
//! `amazon_state` and `selling_partner_id` when a seller authorizes from the Appstore, and for
//! the yearly renewal. The broker starts a state and sends the browser on to
//! `{amazon_callback_uri}?redirect_uri=…&amazon_state=…&state=…[&version=beta]`; Amazon then
//! calls `/auth/redirect` like any other flow.
//!
//! Which tenant: `?tenant_id=` on the registered Login URI, else the tenant that already has
//! this selling partner on this app (a renewal updates that connection), else the only tenant.
//! The seller lands on the tenant's first redirect origin.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lwa::{AccountType, Api, Marketplace, Region};

use super::{Flow, query_map, redirect, start, with_query};
use crate::config::AppConfig;
use crate::error::{ApiError, Shape};
use crate::state::AppState;

const CONFIRM_PATH: &str = "/apps/authorize/confirm/";

fn page(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, "invalid_login_request", message)
        .shape(Shape::Html)
        .into_response()
}

/// The Seller/Vendor Central host, account type and application id of a genuine Amazon
/// callback URI; `None` for anything else (the broker never redirects to an unknown place).
fn parse_callback(state: &AppState, uri: &str) -> Option<(&'static str, AccountType, String)> {
    let mut hosts: Vec<(&'static str, AccountType)> = Vec::new();
    for m in Marketplace::all() {
        hosts.push((m.seller_central_host, AccountType::Seller));
        if let Some(v) = m.vendor_central_host {
            hosts.push((v, AccountType::Vendor));
        }
    }
    for r in Region::ALL {
        hosts.push((r.default_seller_central_host(), AccountType::Seller));
        hosts.push((r.default_vendor_central_host(), AccountType::Vendor));
    }
    // Amazon's own example uses amazon.com itself.
    hosts.push(("amazon.com", AccountType::Seller));
    hosts.push(("www.amazon.com", AccountType::Seller));
    hosts.into_iter().find_map(|(host, kind)| {
        let prefix = state.endpoints.url(host, CONFIRM_PATH);
        let app_id = uri.strip_prefix(&prefix)?;
        let valid = !app_id.is_empty()
            && app_id.len() <= 200
            && app_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && !app_id.contains("..");
        valid.then(|| (host, kind, app_id.to_owned()))
    })
}

/// `GET /auth/login`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn login_uri(State(state): State<AppState>, uri: Uri) -> Response {
    let q = query_map(uri.query());
    let (Some(callback), Some(amazon_state)) = (
        q.get("amazon_callback_uri").filter(|v| !v.is_empty()),
        q.get("amazon_state").filter(|v| !v.is_empty()),
    ) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This is the broker's Login URI: Amazon opens it with amazon_callback_uri and amazon_state.",
        );
    };
    let Some((host, account_type, application_id)) = parse_callback(&state, callback) else {
        return page(
            StatusCode::BAD_REQUEST,
            "amazon_callback_uri is not an Amazon authorization URL.",
        );
    };
    let region = Region::of_host(host).unwrap_or(Region::Na);
    let sp_apps: Vec<&AppConfig> = state.apps.iter().filter(|a| a.kind == Api::SpApi).collect();
    let app = sp_apps
        .iter()
        .find(|a| a.application_id.as_deref() == Some(application_id.as_str()))
        .or(if sp_apps.len() == 1 { sp_apps.first() } else { None });
    let Some(app) = app.map(|a| (*a).clone()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No configured SP-API app has this application id.",
        );
    };
    let selling_partner_id = q.get("selling_partner_id").filter(|v| !v.is_empty()).cloned();

    let result = async {
        let tenants = state.store.tenants().await?;
        let mut renewal = None;
        if let Some(spid) = &selling_partner_id {
            for t in &tenants {
                if q.get("tenant_id").is_some_and(|id| id != &t.id) {
                    continue;
                }
                if let Some(c) = state
                    .store
                    .connection_by_partner(&t.id, &app.name, region.as_str(), spid)
                    .await?
                {
                    renewal = Some((t.clone(), c.id));
                    break;
                }
            }
        }
        let (tenant, connection_id) = match (renewal, q.get("tenant_id")) {
            (Some((t, c)), _) => (t, Some(c)),
            (None, Some(id)) => match tenants.iter().find(|t| &t.id == id) {
                Some(t) => (t.clone(), None),
                None => {
                    return Err(ApiError::not_found(
                        "the tenant named in the Login URI does not exist",
                    ));
                }
            },
            (None, None) if tenants.len() == 1 => (tenants[0].clone(), None),
            (None, None) => {
                return Err(ApiError::bad_request(
                    "ambiguous_tenant",
                    "The broker cannot tell which tenant this authorization is for: register the Login URI \
                     with ?tenant_id=… for this app.",
                ));
            }
        };
        let Some(landing) = tenant.redirect_origins.first().cloned() else {
            return Err(ApiError::bad_request(
                "no_redirect_origin",
                "the tenant has no redirect origin",
            ));
        };
        let flow = Flow {
            tenant_id: tenant.id.clone(),
            app: app.clone(),
            region,
            account_type,
            marketplace: None,
            client_state: "appstore".into(),
            redirect_url: landing,
            token_secret: None,
            connection_id,
            origin: "login_uri",
        };
        let started = start(&state, &flow).await?;
        let mut pairs = vec![
            ("redirect_uri", state.redirect_uri(&app)),
            ("amazon_state", amazon_state.clone()),
            ("state", started.state.clone()),
        ];
        if app.draft {
            pairs.push(("version", "beta".into()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok::<_, ApiError>(with_query(
            &state
                .endpoints
                .url(host, &format!("{CONFIRM_PATH}{application_id}")),
            &pairs,
        ))
    }
    .await;
    match result {
        Ok(url) => redirect(&url),
        Err(e) => e.shape(Shape::Html).into_response(),
    }
}

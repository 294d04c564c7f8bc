//! `/admin`: the operator's dashboard. Server-rendered askama templates (escaped), one CSS and
//! one small JS file served from here, no inline script; a sealed session cookie made from the
//! admin token, a CSRF token on every form, security headers on every response.

pub mod calls;
pub mod chart;
pub mod pages;
pub mod session;
pub mod try_it;

use std::collections::{HashMap, VecDeque};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;

use crate::state::AppState;

/// The dashboard's share of the state.
#[derive(Debug, Default)]
pub struct Dashboard {
    /// Ended sessions and failed logins.
    pub sessions: session::Sessions,
    /// The sandbox's demo tenant and fake Amazon, for the "Try it" page.
    pub sandbox: Mutex<Option<try_it::SandboxInfo>>,
    /// The sandbox's webhook inbox: what the demo tenant's webhook received, newest last.
    pub inbox: Mutex<VecDeque<try_it::InboxEntry>>,
}

/// The dashboard's routes (merged into the router by [`crate::app::router`]).
pub fn routes(sandbox: bool) -> Router<AppState> {
    let mut r = Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/login", get(pages::login_form).post(pages::login))
        .route("/admin/logout", post(pages::logout))
        .route("/admin/connections", get(pages::connections))
        .route("/admin/connections/{id}", get(pages::connection))
        .route("/admin/connections/{id}/refresh", post(pages::refresh))
        .route("/admin/connections/{id}/disconnect", post(pages::disconnect))
        .route(
            "/admin/connections/{id}/reauthorize-link",
            post(pages::reauthorize_link),
        )
        .route("/admin/tenants", get(pages::tenants).post(pages::create_tenant))
        .route("/admin/tenants/{id}", get(pages::tenant))
        .route("/admin/tenants/{id}/keys", post(pages::create_key))
        .route(
            "/admin/tenants/{id}/keys/{key_id}/revoke",
            post(pages::revoke_key),
        )
        .route("/admin/tenants/{id}/webhook", post(pages::set_webhook))
        .route("/admin/deliveries/{id}/retry", post(pages::retry_delivery))
        .route("/admin/apps", get(pages::apps))
        .route("/admin/static/admin.css", get(css))
        .route("/admin/static/admin.js", get(js));
    if sandbox {
        r = r
            .route("/admin/try", get(try_it::page))
            .route("/admin/try/connect", post(try_it::connect))
            .route("/admin/try/vend", post(try_it::vend))
            .route("/admin/try/proxy", post(try_it::proxy))
            .route("/admin/try/revoke", post(try_it::revoke))
            .route("/admin/inbox", get(try_it::inbox));
    }
    r.layer(middleware::from_fn(security_headers))
}

/// Every `/admin` response: a CSP without inline script or style, no framing, no referrer, no
/// sniffing, no caching; and `Server-Timing: app;dur=…`, the milliseconds from the request
/// entering the dashboard's routes to the response leaving them (session check, store reads,
/// template), for the browser's network panel and the dashboard benchmark.
async fn security_headers(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        h.insert(HeaderName::from_static("server-timing"), v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; \
             base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

const CSS: &str = include_str!("../../static/admin.css");
const JS: &str = include_str!("../../static/admin.js");

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// A 303 to `location` (after a form).
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/admin")),
        )],
    )
        .into_response()
}

/// A form body as a map (first value wins); malformed input is an empty map.
pub fn form_map(body: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

/// "in 42 min", "3 h ago": a duration a person reads at a glance.
pub fn relative(ms: i64) -> String {
    let abs = ms.unsigned_abs() / 1000;
    let text = if abs < 90 {
        format!("{abs} s")
    } else if abs < 90 * 60 {
        format!("{} min", abs / 60)
    } else if abs < 48 * 3600 {
        format!("{} h", abs / 3600)
    } else {
        format!("{} days", abs / 86_400)
    };
    if ms >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A timestamp for a page: `2026-01-02 03:04 UTC`.
pub fn when(ms: i64) -> String {
    let t = crate::time::rfc3339(ms);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_speech() {
        assert_eq!(relative(42_000), "in 42 s");
        assert_eq!(relative(-3 * 3_600_000), "3 h ago");
        assert_eq!(relative(20 * 60_000), "in 20 min");
        assert_eq!(relative(-5 * 86_400_000), "5 days ago");
    }
}

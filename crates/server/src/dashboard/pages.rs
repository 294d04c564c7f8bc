//! The dashboard's pages and forms. Every handler reads through the same store and server
//! functions the `/v1` API and the CLI use; every form checks the session's CSRF token first.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use lwa_store::{Connection, ConnectionFilter, DeliveryFilter, Tenant};

use super::chart::{self, Chart};
use super::session::{self, AdminSession};
use super::{form_map, relative, see_other, when};
use crate::onboarding::ClientAddr;
use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;
/// Published SP-API apps: a seller's authorization lasts 365 days.
const AUTHORIZATION_DAYS: i64 = 365;
/// Rows per page of the connections list.
const PAGE: usize = 100;

/// An HTML page from a template (escaped), or a 500 page when it fails to render.
fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a dashboard template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A page with a title and a message (errors, results).
#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage<'a> {
    csrf: &'a str,
    nav: &'a str,
    sandbox: bool,
    title: &'a str,
    message: &'a str,
    /// A value shown once, with a copy button (a new key, a link).
    secret: Option<&'a str>,
    back: &'a str,
}

/// A 403 page for a refused form (no session, wrong CSRF token).
pub fn refused(message: &str) -> Response {
    let page = MessagePage {
        csrf: "",
        nav: "",
        sandbox: false,
        title: "Refused",
        message,
        secret: None,
        back: "/admin",
    };
    (StatusCode::FORBIDDEN, render(&page)).into_response()
}

fn message(
    state: &AppState,
    s: &AdminSession,
    status: StatusCode,
    title: &str,
    text: &str,
    back: &str,
) -> Response {
    let page = MessagePage {
        csrf: &s.csrf,
        nav: "",
        sandbox: state.sandbox,
        title,
        message: text,
        secret: None,
        back,
    };
    (status, render(&page)).into_response()
}

fn failed(state: &AppState, s: &AdminSession, e: crate::error::ApiError, back: &str) -> Response {
    let status = if e.status.is_server_error() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        e.status
    };
    message(state, s, status, "That did not work", &e.message, back)
}

/// A form whose CSRF token is not the session's: the 403 page.
#[derive(Debug)]
pub struct BadCsrf;

impl IntoResponse for BadCsrf {
    fn into_response(self) -> Response {
        refused(
            "This form is out of date (its CSRF token is missing or wrong): reload the page and try again.",
        )
    }
}

/// The form's fields when its CSRF token is the session's.
pub fn checked_form(s: &AdminSession, body: &Bytes) -> Result<HashMap<String, String>, BadCsrf> {
    let form = form_map(body);
    if s.csrf_ok(form.get("csrf").map(String::as_str)) {
        Ok(form)
    } else {
        Err(BadCsrf)
    }
}

macro_rules! try_page {
    ($state:expr, $s:expr, $e:expr, $back:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return failed($state, $s, e.into(), $back),
        }
    };
}

// --- login ---

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    error: Option<&'a str>,
}

/// `GET /admin/login`.
pub async fn login_form(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

fn login_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let (csrf, cookie) = session::new_login_form(state);
    let mut response = (status, render(&LoginPage { csrf: &csrf, error })).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `POST /admin/login`: the admin token → a session cookie. Failures count against the client
/// address; past [`session::LOGIN_FAILURES`] the answer is a 429 until the window passes.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.now_ms();
    if let Err(wait_s) = state.dashboard.sessions.login_allowed(client, now) {
        let mut r = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins from your address: wait a few minutes and try again."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
        return r;
    }
    let form = form_map(&body);
    if !session::login_csrf_ok(&state, &headers, form.get("csrf").map(String::as_str)) {
        return (
            StatusCode::FORBIDDEN,
            login_page(
                &state,
                StatusCode::FORBIDDEN,
                Some("The login form expired: try again."),
            ),
        )
            .into_response();
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    match session::check_admin_token(&state, token).await {
        Ok(true) => {}
        Ok(false) => {
            state.dashboard.sessions.login_failed(client, now);
            tracing::info!(%client, "dashboard login refused");
            return login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("That is not the admin token. Make one with `lwa-broker admin-token`."),
            );
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.message).into_response(),
    }
    state.dashboard.sessions.login_succeeded(client);
    let Some(cookie) = session::new_session(&state).await else {
        return login_page(&state, StatusCode::UNAUTHORIZED, Some("No admin token is set."));
    };
    let mut r = see_other("/admin");
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(&state, session::LOGIN_COOKIE),
    );
    r
}

/// `POST /admin/logout`.
pub async fn logout(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    if let Err(e) = session::end_session(&state, &s).await {
        tracing::warn!(error = %e, "could not end a dashboard session");
        return message(
            &state,
            &s,
            StatusCode::SERVICE_UNAVAILABLE,
            "Not logged out",
            "The database did not answer, so the session could not be ended everywhere: try again.",
            "/admin",
        );
    }
    let mut r = see_other("/admin/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(&state, session::SESSION_COOKIE),
    );
    r
}

// --- overview ---

/// A connection in a list.
#[derive(Debug)]
pub struct Row {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub api: String,
    pub region: String,
    pub partner: String,
    pub status: String,
    pub token_left: String,
    pub token_expired: bool,
    pub refresh_age: String,
    pub refresh_warn: bool,
    pub last_error: String,
}

/// A connection's line in a list.
pub fn row_of(c: &Connection, now: i64) -> Row {
    let age_days = (now - c.authorized_at_ms).div_euclid(DAY_MS);
    let expires = c.api == "sp-api";
    Row {
        id: c.id.clone(),
        tenant_id: c.tenant_id.clone(),
        name: c.name.clone().unwrap_or_default(),
        api: c.api.clone(),
        region: c.region.clone(),
        partner: c.selling_partner_id.clone().unwrap_or_default(),
        status: c.status.clone(),
        token_left: match (c.status.as_str(), c.access_expires_at_ms) {
            ("active", Some(at)) => relative(at - now),
            ("active", None) => "none yet".into(),
            _ => "—".into(),
        },
        token_expired: c.status == "active" && c.access_expires_at_ms.is_some_and(|at| at <= now),
        refresh_age: if expires {
            format!("{age_days} / {AUTHORIZATION_DAYS} days")
        } else {
            format!("{age_days} days (does not expire)")
        },
        refresh_warn: expires && c.status == "active" && age_days >= AUTHORIZATION_DAYS - 30,
        last_error: c.last_error.as_deref().map(plain_error).unwrap_or_default(),
    }
}

/// An error as a person reads it: what happened and what to do.
pub fn plain_error(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let advice = if lower.contains("invalid_grant") {
        "The seller's authorization is no longer valid: send them a re-authorization link."
    } else if lower.contains("invalid_client") || lower.contains("unauthorized_client") {
        "Amazon refused the app's client id or secret: check the app's configuration."
    } else if lower.contains("throttl") || lower.contains("429") {
        "Amazon is throttling the broker; it tries again later by itself."
    } else if lower.contains("timed out") || lower.contains("timeout") || lower.contains("connect") {
        "Amazon could not be reached; the broker tries again later by itself."
    } else if lower.contains("server_error") || lower.contains("temporarily_unavailable") {
        "Amazon had a temporary failure; the broker tries again later by itself."
    } else {
        return error.to_owned();
    };
    format!("{advice} ({error})")
}

/// One line of the LWA calls table.
#[derive(Debug)]
pub struct CallLine {
    pub grant: String,
    pub outcome: String,
    pub count: u64,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    statuses: Vec<(String, i64)>,
    total: i64,
    chart: Chart,
    legend: Vec<(&'static str, &'static str)>,
    calls: Vec<CallLine>,
    width: i64,
    height: i64,
    expired_tokens: i64,
    oldest_overdue: String,
    backlog: i64,
    failed_deliveries: i64,
    needs_reauth: Vec<Row>,
    expiring: Vec<Row>,
    secrets: Vec<(String, String)>,
}

/// `GET /admin`.
pub async fn overview(State(state): State<AppState>, s: AdminSession) -> Response {
    let now = state.now_ms();
    let mut statuses = try_page!(&state, &s, state.store.count_connections(None).await, "/admin");
    statuses.sort();
    let total = statuses.iter().map(|(_, n)| n).sum();
    let hours = state.lwa_calls.last_24_hours(now);
    let mut lines: std::collections::BTreeMap<(&str, String), u64> = Default::default();
    for (_, counts) in &hours {
        for ((grant, outcome), n) in counts {
            *lines.entry((grant, outcome.clone())).or_default() += n;
        }
    }
    let calls = lines
        .into_iter()
        .map(|((grant, outcome), count)| CallLine {
            grant: grant.to_owned(),
            outcome,
            count,
        })
        .collect();
    let chart = chart::layout(&hours);
    // Counted in the database: expired tokens among the active connections (the refresher is
    // behind), and the authorizations nearing their 365 days.
    let alerts = try_page!(
        &state,
        &s,
        state
            .store
            .connection_alerts(now, now - (AUTHORIZATION_DAYS - 30) * DAY_MS, 20)
            .await,
        "/admin"
    );
    let expiring = alerts.expiring.iter().map(|c| row_of(c, now)).collect();
    let needs_reauth = try_page!(
        &state,
        &s,
        state
            .store
            .list_connections(&ConnectionFilter {
                status: Some("needs_reauth".into()),
                limit: 20,
                ..Default::default()
            })
            .await,
        "/admin"
    )
    .iter()
    .map(|c| row_of(c, now))
    .collect();
    let deliveries = try_page!(&state, &s, state.store.delivery_counts().await, "/admin");
    let delivery_count = |wanted: &str| {
        deliveries
            .iter()
            .find(|(state, _)| state == wanted)
            .map_or(0, |(_, n)| *n)
    };
    let secrets = try_page!(&state, &s, crate::apps::secret_status(&state).await, "/admin")
        .into_iter()
        .filter_map(|a| {
            let days = a.days_until_deadline?;
            (days <= 30).then(|| {
                (
                    a.name,
                    if days < 0 {
                        format!(
                            "its client secret is {} days past Amazon's 180-day deadline",
                            -days
                        )
                    } else {
                        format!("its client secret must be rotated within {days} days")
                    },
                )
            })
        })
        .collect();
    render(&OverviewPage {
        csrf: s.csrf.clone(),
        nav: "overview",
        sandbox: state.sandbox,
        statuses,
        total,
        chart,
        legend: chart::OUTCOMES
            .iter()
            .map(|(_, label, fill)| (*label, *fill))
            .collect(),
        calls,
        width: chart::WIDTH,
        height: chart::HEIGHT,
        expired_tokens: alerts.expired_tokens,
        oldest_overdue: alerts
            .oldest_expired_at_ms
            .map(|o| relative(o - now))
            .unwrap_or_default(),
        backlog: delivery_count("pending"),
        failed_deliveries: delivery_count("failed"),
        needs_reauth,
        expiring,
        secrets,
    })
}

// --- connections ---

#[derive(Template)]
#[template(path = "admin/connections.html")]
struct ConnectionsPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    rows: Vec<Row>,
    tenants: Vec<Tenant>,
    q: HashMap<String, String>,
    next: Option<String>,
}

impl ConnectionsPage {
    fn value(&self, key: &str) -> &str {
        self.q.get(key).map(String::as_str).unwrap_or("")
    }
    fn selected(&self, key: &str, value: &str) -> bool {
        self.value(key) == value
    }
    fn next_href(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = ["tenant", "status", "api", "region", "q"]
            .iter()
            .filter_map(|k| self.q.get(*k).filter(|v| !v.is_empty()).map(|v| (*k, v.as_str())))
            .collect();
        if let Some(next) = &self.next {
            pairs.push(("after", next));
        }
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("/admin/connections?{query}")
    }
}

/// `GET /admin/connections`: filter by tenant, status, API and region; search by selling
/// partner id or name (in the database); pages of [`PAGE`] rows.
pub async fn connections(
    State(state): State<AppState>,
    s: AdminSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = state.now_ms();
    let pick = |k: &str| q.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filter = ConnectionFilter {
        tenant_id: pick("tenant"),
        status: pick("status"),
        api: pick("api"),
        region: pick("region"),
        after: pick("after"),
        search: pick("q"),
        limit: PAGE as u32 + 1,
    };
    let mut found = try_page!(&state, &s, state.store.list_connections(&filter).await, "/admin");
    let next = (found.len() > PAGE).then(|| found[PAGE - 1].id.clone());
    found.truncate(PAGE);
    let tenants = try_page!(&state, &s, state.store.tenants().await, "/admin");
    render(&ConnectionsPage {
        csrf: s.csrf.clone(),
        nav: "connections",
        sandbox: state.sandbox,
        rows: found.iter().map(|c| row_of(c, now)).collect(),
        tenants,
        q,
        next,
    })
}

/// One line of a connection's history.
#[derive(Debug)]
pub struct HistoryLine {
    pub at: String,
    pub what: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin/connection.html")]
struct ConnectionPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    c: Connection,
    r: Row,
    tenant_name: String,
    authorized: String,
    last_refresh: String,
    next_refresh: String,
    failures: i64,
    retry_at: String,
    profiles: Vec<(String, String, String)>,
    history: Vec<HistoryLine>,
}

/// `GET /admin/connections/{id}`.
pub async fn connection(State(state): State<AppState>, s: AdminSession, Path(id): Path<String>) -> Response {
    let now = state.now_ms();
    let Some((c, schedule)) = try_page!(
        &state,
        &s,
        state.store.connection_with_schedule(&id).await,
        "/admin/connections"
    ) else {
        return message(
            &state,
            &s,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No connection {id}."),
            "/admin/connections",
        );
    };
    let tenant_name = try_page!(
        &state,
        &s,
        state.store.tenant(&c.tenant_id).await,
        "/admin/connections"
    )
    .map(|t| t.name)
    .unwrap_or_default();
    let mut history: Vec<(i64, HistoryLine)> = Vec::new();
    let deliveries = try_page!(
        &state,
        &s,
        state
            .store
            .webhook_deliveries(&DeliveryFilter {
                connection_id: Some(c.id.clone()),
                limit: 50,
                ..Default::default()
            })
            .await,
        "/admin/connections"
    );
    let mut seen = std::collections::HashSet::new();
    for d in deliveries {
        if seen.insert(d.event_id.clone()) {
            let reason = serde_json::from_str::<serde_json::Value>(&d.body)
                .ok()
                .and_then(|b| {
                    let data = &b["data"];
                    data["reason"]
                        .as_str()
                        .or(data["error"].as_str())
                        .or(data["last_error"].as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            history.push((
                d.created_at_ms,
                HistoryLine {
                    at: when(d.created_at_ms),
                    what: d.event_type.clone(),
                    detail: reason,
                },
            ));
        }
    }
    let changes = try_page!(
        &state,
        &s,
        state
            .store
            .connection_history(&c.id, lwa_store::HISTORY_KEPT as u32)
            .await,
        "/admin/connections"
    );
    let (mut refreshes_shown, mut errors_shown) = (false, false);
    for h in changes {
        let (what, detail) = match h.kind.as_str() {
            "refreshed" => {
                refreshes_shown = true;
                let detail = match h.until_ms {
                    Some(until) => format!("access token refreshed, valid until {}", when(until)),
                    None => "access token refreshed".into(),
                };
                ("refreshed".to_owned(), detail)
            }
            "refresh_failed" => {
                errors_shown = true;
                (
                    "refresh failed".to_owned(),
                    plain_error(h.detail.as_deref().unwrap_or("")),
                )
            }
            "status" => ("status changed".to_owned(), h.detail.unwrap_or_default()),
            "authorized" => (
                "authorized again".to_owned(),
                "the seller granted access again".into(),
            ),
            other => (other.replace('_', " "), h.detail.unwrap_or_default()),
        };
        history.push((
            h.at_ms,
            HistoryLine {
                at: when(h.at_ms),
                what,
                detail,
            },
        ));
    }
    // A connection older than its history (the table came with an upgrade) still shows its
    // last refresh and error.
    if let (Some(at), false) = (c.last_refresh_at_ms, refreshes_shown) {
        history.push((
            at,
            HistoryLine {
                at: when(at),
                what: "last refresh".into(),
                detail: "access token refreshed".into(),
            },
        ));
    }
    if let (Some(error), false) = (&c.last_error, errors_shown) {
        history.push((
            c.updated_at_ms,
            HistoryLine {
                at: when(c.updated_at_ms),
                what: "last error".into(),
                detail: plain_error(error),
            },
        ));
    }
    let vends = try_page!(
        &state,
        &s,
        state
            .store
            .audit_events(&lwa_store::AuditFilter {
                connection_id: Some(c.id.clone()),
                limit: 20,
                ..Default::default()
            })
            .await,
        "/admin/connections"
    );
    for v in vends {
        history.push((
            v.last_at_ms,
            HistoryLine {
                at: when(v.last_at_ms),
                what: format!("{} handed out", v.kind.replace('_', " ")),
                detail: format!("{} time(s) via {} with key {}", v.count, v.via, v.key_id),
            },
        ));
    }
    history.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let profiles = serde_json::from_str::<Vec<serde_json::Value>>(&c.profiles)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let text = |k: &str| match &p[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            (
                text("profileId"),
                text("countryCode"),
                p["accountInfo"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    render(&ConnectionPage {
        csrf: s.csrf.clone(),
        nav: "connections",
        sandbox: state.sandbox,
        r: row_of(&c, now),
        tenant_name,
        authorized: when(c.authorized_at_ms),
        last_refresh: c.last_refresh_at_ms.map(when).unwrap_or_else(|| "never".into()),
        next_refresh: if c.status == "active" && !c.tenant_secret {
            relative(schedule.next_refresh_at_ms - now)
        } else {
            "—".into()
        },
        failures: schedule.refresh_failures,
        retry_at: schedule
            .retry_at_ms
            .filter(|t| *t > now)
            .map(|t| relative(t - now))
            .unwrap_or_default(),
        profiles,
        history: history.into_iter().map(|(_, h)| h).take(100).collect(),
        c,
    })
}

/// `POST /admin/connections/{id}/refresh`: a refresh now, shared with any in flight.
pub async fn refresh(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    let back = format!("/admin/connections/{id}");
    match refresh_now(&state, &id).await {
        Ok(()) => see_other(&back),
        Err(text) => message(&state, &s, StatusCode::CONFLICT, "Not refreshed", &text, &back),
    }
}

/// Forces a refresh of a connection; the text of why not.
pub async fn refresh_now(state: &AppState, id: &str) -> Result<(), String> {
    use crate::vend::VendError;
    let c = match state.store.connection(id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(format!("No connection {id}.")),
        Err(e) => return Err(e.to_string()),
    };
    if c.tenant_secret {
        return Err("This connection's tokens are sealed with the tenant's own secret: only the tenant can refresh it.".into());
    }
    let why = |e: VendError| match e {
        VendError::NeedsReauth => {
            "Amazon refused the refresh token: the seller must authorize again.".to_owned()
        }
        VendError::Disconnected => "The connection is disconnected.".to_owned(),
        other => format!("The refresh failed: {other:?}"),
    };
    let current = state
        .vendor
        .access_token(state, &c.tenant_id, id, None, false)
        .await
        .map_err(why)?;
    // The token was due, so getting it refreshed it: that was the refresh asked for.
    if c.access_expires_at_ms
        .is_none_or(|before| current.expires_at_ms > before)
    {
        return Ok(());
    }
    match state
        .vendor
        .force_refresh(state, &c.tenant_id, id, None, &current)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "This connection was refreshed less than {} s ago: try again after that.",
            crate::vend::FORCED_REFRESH_COOLDOWN_MS / 1000
        )),
        Err(e) => Err(why(e)),
    }
}

/// `POST /admin/connections/{id}/disconnect`.
pub async fn disconnect(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    let back = format!("/admin/connections/{id}");
    let Some(c) = try_page!(&state, &s, state.store.connection(&id).await, &back) else {
        return message(
            &state,
            &s,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No connection {id}."),
            "/admin/connections",
        );
    };
    try_page!(
        &state,
        &s,
        crate::connections::disconnect(&state, c, "disconnected_by_operator").await,
        &back
    );
    tracing::info!(connection = %id, "disconnected from the dashboard");
    see_other(&back)
}

/// `POST /admin/connections/{id}/reauthorize-link`: a one-time link the seller follows to
/// authorize again (to the tenant's first redirect origin afterwards), shown with a copy button.
pub async fn reauthorize_link(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    let back = format!("/admin/connections/{id}");
    let link = try_page!(
        &state,
        &s,
        crate::onboarding::links::operator_reauthorize_link(&state, &id).await,
        &back
    );
    let page = MessagePage {
        csrf: &s.csrf,
        nav: "connections",
        sandbox: state.sandbox,
        title: "Re-authorization link",
        message: "Send this link to the seller: it works once, within 7 days, and brings them back to the tenant's site.",
        secret: Some(&link),
        back: &back,
    };
    render(&page)
}

// --- tenants ---

/// A tenant's line.
#[derive(Debug)]
pub struct TenantLine {
    pub id: String,
    pub name: String,
    pub origins: String,
    pub webhook: String,
    pub connections: i64,
}

#[derive(Template)]
#[template(path = "admin/tenants.html")]
struct TenantsPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    tenants: Vec<TenantLine>,
}

/// `GET /admin/tenants`.
pub async fn tenants(State(state): State<AppState>, s: AdminSession) -> Response {
    let tenants = try_page!(&state, &s, state.store.tenants().await, "/admin");
    let counts: HashMap<String, i64> = try_page!(
        &state,
        &s,
        state.store.count_connections_by_tenant().await,
        "/admin"
    )
    .into_iter()
    .collect();
    let mut lines = Vec::new();
    for t in tenants {
        lines.push(TenantLine {
            connections: counts.get(&t.id).copied().unwrap_or(0),
            origins: t.redirect_origins.join(", "),
            webhook: t.webhook_url.unwrap_or_default(),
            id: t.id,
            name: t.name,
        });
    }
    render(&TenantsPage {
        csrf: s.csrf.clone(),
        nav: "tenants",
        sandbox: state.sandbox,
        tenants: lines,
    })
}

/// `POST /admin/tenants`: a tenant and its first key (shown once).
pub async fn create_tenant(State(state): State<AppState>, s: AdminSession, body: Bytes) -> Response {
    let form = match checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (tenant, key) = try_page!(
        &state,
        &s,
        crate::admin::create_tenant(
            &state,
            crate::admin::NewTenant {
                name: field("name"),
                redirect_origins: field("redirect_origin")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                ..Default::default()
            },
        )
        .await,
        "/admin/tenants"
    );
    tracing::info!(tenant = %tenant.id, "tenant created from the dashboard");
    let back = format!("/admin/tenants/{}", tenant.id);
    render(&MessagePage {
        csrf: &s.csrf,
        nav: "tenants",
        sandbox: state.sandbox,
        title: "Tenant created",
        message: "Its first API key is below. It is shown only this once: copy it now.",
        secret: Some(&key.key),
        back: &back,
    })
}

/// A key's line.
#[derive(Debug)]
pub struct KeyLine {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

/// A delivery's line.
#[derive(Debug)]
pub struct DeliveryLine {
    pub id: i64,
    pub event_type: String,
    pub connection: String,
    pub state: String,
    pub attempts: i64,
    pub last: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "admin/tenant.html")]
struct TenantPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    t: Tenant,
    keys: Vec<KeyLine>,
    deliveries: Vec<DeliveryLine>,
}

/// `GET /admin/tenants/{id}`: keys, webhook settings and the delivery log.
pub async fn tenant(State(state): State<AppState>, s: AdminSession, Path(id): Path<String>) -> Response {
    let now = state.now_ms();
    let Some(t) = try_page!(&state, &s, state.store.tenant(&id).await, "/admin/tenants") else {
        return message(
            &state,
            &s,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No tenant {id}."),
            "/admin/tenants",
        );
    };
    let keys = try_page!(
        &state,
        &s,
        crate::admin::list_keys(&state, &id).await,
        "/admin/tenants"
    )
    .into_iter()
    .map(|k| KeyLine {
        name: k.name.unwrap_or_default(),
        scope: k.scope,
        created: when(k.created_at_ms),
        last_used: k
            .last_used_at_ms
            .map(|t| relative(t - now))
            .unwrap_or_else(|| "never".into()),
        revoked: k.revoked_at_ms.map(when).unwrap_or_default(),
        id: k.id,
    })
    .collect();
    let deliveries = try_page!(
        &state,
        &s,
        state
            .store
            .webhook_deliveries(&DeliveryFilter {
                tenant_id: Some(id.clone()),
                limit: 50,
                ..Default::default()
            })
            .await,
        "/admin/tenants"
    )
    .into_iter()
    .map(|d| DeliveryLine {
        id: d.id,
        connection: d.connection_id.unwrap_or_default(),
        state: d.state,
        attempts: d.attempts,
        last: match (d.last_status, d.last_error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(e)) => e,
            (None, None) => String::new(),
        },
        created: when(d.created_at_ms),
        event_type: d.event_type,
    })
    .collect();
    render(&TenantPage {
        csrf: s.csrf.clone(),
        nav: "tenants",
        sandbox: state.sandbox,
        t,
        keys,
        deliveries,
    })
}

/// `POST /admin/tenants/{id}/keys`: a new key, shown once.
pub async fn create_key(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = match checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = format!("/admin/tenants/{id}");
    let name = form
        .get("name")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let scope = form.get("scope").map(String::as_str).unwrap_or("full");
    let key = try_page!(
        &state,
        &s,
        crate::admin::create_key(&state, &id, name, scope).await,
        &back
    );
    render(&MessagePage {
        csrf: &s.csrf,
        nav: "tenants",
        sandbox: state.sandbox,
        title: "API key created",
        message: "It is shown only this once: copy it now.",
        secret: Some(&key.key),
        back: &back,
    })
}

/// `POST /admin/tenants/{id}/keys/{key_id}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    s: AdminSession,
    Path((id, key_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    let back = format!("/admin/tenants/{id}");
    match try_page!(&state, &s, state.store.api_key(&key_id).await, &back) {
        Some(k) if k.tenant_id == id => {}
        _ => {
            return message(
                &state,
                &s,
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("No key {key_id} for this tenant."),
                &back,
            );
        }
    }
    try_page!(&state, &s, crate::admin::revoke_key(&state, &key_id).await, &back);
    see_other(&back)
}

/// `POST /admin/tenants/{id}/webhook`: sets or removes the webhook URL (the signing secret,
/// made the first time, shown once).
pub async fn set_webhook(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = match checked_form(&s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = format!("/admin/tenants/{id}");
    let url = form.get("url").map(|u| u.trim()).filter(|u| !u.is_empty());
    let (_, secret) = try_page!(
        &state,
        &s,
        crate::webhooks::routes::set_webhook_url(&state, &id, url).await,
        &back
    );
    match secret {
        Some(secret) => render(&MessagePage {
            csrf: &s.csrf,
            nav: "tenants",
            sandbox: state.sandbox,
            title: "Webhook set",
            message: "Deliveries are signed with this secret (HMAC-SHA256). It is shown only this once.",
            secret: Some(secret.expose()),
            back: &back,
        }),
        None => see_other(&back),
    }
}

/// `POST /admin/deliveries/{id}/retry`: a failed delivery is tried again now.
pub async fn retry_delivery(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = checked_form(&s, &body) {
        return r.into_response();
    }
    let Ok(number) = id.parse::<i64>() else {
        return message(
            &state,
            &s,
            StatusCode::NOT_FOUND,
            "Not found",
            "No such delivery.",
            "/admin/tenants",
        );
    };
    let Some(d) = try_page!(
        &state,
        &s,
        state.store.webhook_delivery(number).await,
        "/admin/tenants"
    ) else {
        return message(
            &state,
            &s,
            StatusCode::NOT_FOUND,
            "Not found",
            "No such delivery.",
            "/admin/tenants",
        );
    };
    let back = d
        .tenant_id
        .as_deref()
        .map(|t| format!("/admin/tenants/{t}"))
        .unwrap_or_else(|| "/admin/tenants".into());
    let now = state.now_ms();
    let retried = try_page!(
        &state,
        &s,
        state
            .store
            .retry_delivery(
                d.id,
                d.tenant_id.as_deref(),
                now,
                now + crate::webhooks::RETRY_FOR_MS
            )
            .await,
        &back
    );
    if !retried {
        return message(
            &state,
            &s,
            StatusCode::CONFLICT,
            "Not retried",
            &format!(
                "Delivery {id} is {}: only a failed delivery can be retried.",
                d.state
            ),
            &back,
        );
    }
    state.webhooks.wake();
    see_other(&back)
}

// --- apps ---

#[derive(Template)]
#[template(path = "admin/apps.html")]
struct AppsPage {
    csrf: String,
    nav: &'static str,
    sandbox: bool,
    apps: Vec<crate::apps::AppSecretStatus>,
}

/// `GET /admin/apps`: each app's secrets, their age and which is in use.
pub async fn apps(State(state): State<AppState>, s: AdminSession) -> Response {
    let apps = try_page!(&state, &s, crate::apps::secret_status(&state).await, "/admin");
    render(&AppsPage {
        csrf: s.csrf.clone(),
        nav: "apps",
        sandbox: state.sandbox,
        apps,
    })
}

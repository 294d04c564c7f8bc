//! `/admin` over HTTP: login and session, CSRF on every form found by crawling the pages,
//! the login limit, security headers, escaping, and the chart's numbers against the fake's.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::json;

use crate::support::{TestApp, spawn};

/// The value of `name="csrf" value="…"` in a page (the first form's).
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

fn cookie_of(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// A logged-in operator: the session cookie (`lwa_admin=…`).
pub struct Operator {
    pub cookie: String,
}

impl Operator {
    pub async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        app.http
            .get(format!("{}{path}", app.url))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }
    pub async fn page(&self, app: &TestApp, path: &str) -> String {
        let r = self.get(app, path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }
    pub async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        app.http
            .post(format!("{}{path}", app.url))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Logs in with `token` through the login form; the response of the POST.
pub async fn try_login(app: &TestApp, token: &str) -> reqwest::Response {
    let form = app.get("/admin/login").await;
    assert_eq!(form.status(), 200);
    let login_cookie = cookie_of(&form, "lwa_admin_login").expect("the login form's cookie");
    let csrf = csrf_of(&form.text().await.unwrap());
    app.http
        .post(format!("{}/admin/login", app.url))
        .header(COOKIE, login_cookie)
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await
        .unwrap()
}

pub async fn login(app: &TestApp) -> Operator {
    let token = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    let r = try_login(app, &token).await;
    assert_eq!(r.status(), 303);
    assert_eq!(crate::support::location(&r), "/admin");
    let set = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("lwa_admin="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // The test server's public URL is 127.0.0.1: no Secure (the browser would drop it over http).
    assert!(!set.contains("Secure"), "{set}");
    Operator {
        cookie: cookie_of(&r, "lwa_admin").unwrap(),
    }
}

#[tokio::test]
async fn pages_need_a_session_and_carry_security_headers() {
    let app = spawn().await;
    let r = app.get("/admin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(crate::support::location(&r), "/admin/login");
    let login_page = app.get("/admin/login").await;
    let csp = login_page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(login_page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(login_page.headers()["x-content-type-options"], "nosniff");

    let operator = login(&app).await;
    for path in [
        "/admin",
        "/admin/connections",
        "/admin/tenants",
        "/admin/apps",
        &format!("/admin/tenants/{}", app.tenant_id),
    ] {
        let r = operator.get(&app, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("<script>") && !html.contains(" style="),
            "{path}: no inline script or style"
        );
    }
    // A wrong token is refused; a new admin token ends the old sessions.
    assert_eq!(try_login(&app, "lwaadm_wrong").await.status(), 401);
    lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    assert_eq!(operator.get(&app, "/admin").await.status(), 303);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = spawn().await;
    let operator = login(&app).await;
    let csrf = csrf_of(&operator.page(&app, "/admin").await);
    // A second broker on the same database and key (another replica) takes the same cookie...
    let other = lwa_server::app::Application::build(app.settings.clone())
        .await
        .unwrap();
    let other_url = format!("http://{}", other.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(other.run_until(async move {
        let _ = stopped.await;
    }));
    let on_other = || {
        app.http
            .get(format!("{other_url}/admin"))
            .header(COOKIE, &operator.cookie)
            .send()
    };
    assert_eq!(on_other().await.unwrap().status(), 200);
    let r = operator.post(&app, "/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(operator.get(&app, "/admin").await.status(), 303);
    // ...and refuses it once the session ended on the first.
    let r = on_other().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "the other replica sends the ended session to the login page"
    );
    assert_eq!(r.headers()["location"], "/admin/login");
    let _ = stop.send(());
}

#[tokio::test]
async fn login_is_rate_limited_per_address() {
    let app = spawn().await;
    let token = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    for _ in 0..lwa_server::dashboard::session::LOGIN_FAILURES {
        assert_eq!(try_login(&app, "lwaadm_guess").await.status(), 401);
    }
    let r = try_login(&app, "lwaadm_guess").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Even the right token waits now.
    assert_eq!(try_login(&app, &token).await.status(), 429);
}

#[tokio::test]
async fn script_in_a_name_or_an_error_renders_as_text() {
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let r = app
        .http
        .patch(format!("{}/v1/connections/{id}", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"name": "<script>alert('name')</script>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.state
        .store
        .record_refresh_error(
            &id,
            None,
            "<script>alert('error')</script> & <b>",
            app.state.now_ms(),
            &[],
            None,
        )
        .await
        .unwrap();
    let operator = login(&app).await;
    for path in [
        format!("/admin/connections/{id}"),
        "/admin/connections".to_owned(),
    ] {
        let html = operator.page(&app, &path).await;
        assert!(!html.contains("<script>alert"), "{path} must escape");
        assert!(
            html.contains("&#60;script&#62;alert(&#39;name&#39;)")
                || html.contains("&lt;script&gt;alert(&#39;name&#39;)")
                || html.contains("&lt;script&gt;alert("),
            "{path}: {html}"
        );
    }
}

/// Every `<form method="post">` of a page: (action, field names).
fn forms(html: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let end = rest[start..]
            .find("</form>")
            .map(|e| start + e)
            .unwrap_or(rest.len());
        let form = &rest[start..end];
        rest = &rest[end..];
        if !form.contains("method=\"post\"") {
            continue;
        }
        let attr = |tag: &str, name: &str| {
            let key = format!("{name}=\"");
            tag.find(&key).map(|a| {
                let a = a + key.len();
                tag[a..a + tag[a..].find('"').unwrap()].to_owned()
            })
        };
        let action = attr(form, "action").unwrap();
        let mut fields = Vec::new();
        for input in form.split("<input").skip(1) {
            if let Some(name) = attr(input, "name") {
                fields.push((name, attr(input, "value").unwrap_or_else(|| "x".into())));
            }
        }
        out.push((action.replace("&#47;", "/"), fields));
    }
    out
}

/// Links to other dashboard pages.
fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|s| {
            s[..s.find('"').unwrap()]
                .replace("&#38;", "&")
                .replace("&amp;", "&")
                .replace("&#47;", "/")
        })
        .filter(|h| h.starts_with("/admin") && !h.starts_with("/admin/static"))
        .collect()
}

#[tokio::test]
async fn every_form_is_refused_without_a_csrf_token_or_a_session() {
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let operator = login(&app).await;
    // Crawl every page reachable from the overview.
    let mut seen = BTreeSet::new();
    let mut queue = vec!["/admin".to_owned()];
    let mut found: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) || seen.len() > 60 {
            continue;
        }
        let html = operator.page(&app, &path).await;
        for (action, fields) in forms(&html) {
            found.entry(action).or_insert(fields);
        }
        queue.extend(links(&html));
    }
    for expected in [
        "/admin/logout",
        "/admin/tenants".to_owned().as_str(),
        &format!("/admin/connections/{id}/refresh"),
        &format!("/admin/connections/{id}/disconnect"),
        &format!("/admin/connections/{id}/reauthorize-link"),
        &format!("/admin/tenants/{}/keys", app.tenant_id),
        &format!("/admin/tenants/{}/webhook", app.tenant_id),
    ] {
        assert!(
            found.contains_key(expected),
            "crawl found no form {expected}: {:?}",
            found.keys()
        );
    }
    // The login form too (it has no session: its CSRF token rides in a cookie of its own).
    let r = app
        .http
        .post(format!("{}/admin/login", app.url))
        .form(&[("csrf", "x"), ("token", "lwaadm_x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "login without its cookie");
    for (action, fields) in &found {
        let without_csrf: Vec<(&str, &str)> = fields
            .iter()
            .filter(|(k, _)| k != "csrf")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = operator.post(&app, action, &without_csrf).await;
        assert_eq!(r.status(), 403, "{action} without a CSRF token");
        let mut wrong = without_csrf.clone();
        wrong.push(("csrf", "0000"));
        assert_eq!(
            operator.post(&app, action, &wrong).await.status(),
            403,
            "{action} with a wrong CSRF token"
        );
        let with_csrf: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = app
            .http
            .post(format!("{}{action}", app.url))
            .form(&with_csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{action} without a session");
    }
    // Nothing was done.
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, "active");
    assert_eq!(
        operator.get(&app, "/admin").await.status(),
        200,
        "still logged in"
    );
}

#[tokio::test]
async fn the_chart_counts_the_lwa_calls_the_fake_counted() {
    let app = spawn().await;
    app.fake.control().reset_counters().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let operator = login(&app).await;
    // A refresh now, then a revoked seller's refused refresh.
    let page = operator.page(&app, &format!("/admin/connections/{id}")).await;
    let csrf = csrf_of(&page);
    let r = operator
        .post(
            &app,
            &format!("/admin/connections/{id}/refresh"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    revoke_seller(&app, &id).await;
    app.advance(3600.0).await;
    let r = operator
        .post(
            &app,
            &format!("/admin/connections/{id}/refresh"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 409, "a refused refresh is reported");
    let html = operator.page(&app, "/admin").await;
    let counters = app.fake.control().counters().await;
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &counters.lwa {
        *expected
            .entry((c.grant_type.clone(), c.outcome.clone()))
            .or_default() += c.count;
    }
    assert!(
        expected.contains_key(&("refresh_token".into(), "invalid_grant".into())),
        "{expected:?}"
    );
    let table = &html[html.find("id=\"lwa-calls\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let mut shown: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in table.split("<tr>").skip(2) {
        let cell = |class: &str| {
            let key = format!("class=\"{class}\">");
            let at = row.find(&key).map(|a| a + key.len())?;
            Some(row[at..at + row[at..].find('<').unwrap()].to_owned())
        };
        if let (Some(g), Some(o), Some(n)) = (cell("grant"), cell("outcome"), cell("num count")) {
            shown.insert((g, o), n.parse().unwrap());
        }
    }
    assert_eq!(
        shown, expected,
        "the dashboard's table against the fake's counters"
    );
    let total: u64 = expected.values().sum();
    assert!(
        html.contains(&format!("id=\"lwa-total\">{total}<")),
        "the chart's total"
    );
    // The bars add up to the same total (one <title> per segment: "HH:00 UTC: N …").
    let svg = &html[html.find("<svg id=\"lwa-chart\"").unwrap()..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    let bars: u64 = svg
        .split("<title>")
        .skip(1)
        .map(|t| {
            t.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(bars, total);
    assert!(html.contains("id=\"alert-reauth\""), "the needs_reauth alert");
}

/// The connections search, the overview's alerts and counts, and the tenants' counts, read from
/// the database (not a scan in the server): what they show.
#[tokio::test]
async fn search_alerts_and_counts_show_what_the_database_holds() {
    const DAY_MS: i64 = 86_400_000;
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let now = app.state.now_ms();
    let first = app.state.store.connection(&id).await.unwrap().unwrap();
    for (n, name) in [(1, "Zebra 100% Goods"), (2, "Plain Shop"), (3, "Plain Shop")] {
        let mut c = first.clone();
        c.id = format!("conn_search{n}");
        c.selling_partner_id = Some(format!("ASEARCH{n}"));
        c.name = Some(name.into());
        if n == 2 {
            c.authorized_at_ms = now - 340 * DAY_MS;
        }
        if n == 3 {
            c.access_expires_at_ms = Some(now - 60_000);
        }
        app.state.store.insert_connection(&c).await.unwrap();
    }
    let operator = login(&app).await;
    // A name, with a `%` that is only itself; a partner id, without case.
    let html = operator.page(&app, "/admin/connections?q=100%25").await;
    assert!(html.contains("conn_search1"), "{html}");
    assert!(!html.contains("conn_search2") && !html.contains(&id), "{html}");
    let html = operator.page(&app, "/admin/connections?q=asearch3").await;
    assert!(html.contains("conn_search3"), "{html}");
    assert!(!html.contains("conn_search1"), "{html}");
    let html = operator
        .page(&app, "/admin/connections?q=plain&status=active")
        .await;
    assert!(
        html.contains("conn_search2") && html.contains("conn_search3"),
        "{html}"
    );
    assert!(!html.contains("next-page"), "{html}");

    let overview = operator.page(&app, "/admin").await;
    assert!(
        overview.contains("1 active connection(s) hold an expired access token (oldest expired "),
        "{overview}"
    );
    assert!(
        overview.contains("<p class=\"big\" id=\"total-connections\">4</p>"),
        "{overview}"
    );
    assert!(overview.contains("/admin/connections/conn_search2"), "{overview}");
    assert!(
        !overview.contains("/admin/connections/conn_search3"),
        "{overview}"
    );

    let tenants = operator.page(&app, "/admin/tenants").await;
    assert!(tenants.contains("<td class=\"num\">4</td>"), "{tenants}");
}

/// The seller of an SP-API connection revokes the app at Amazon (the fake).
async fn revoke_seller(app: &TestApp, id: &str) {
    let c = app.state.store.connection(id).await.unwrap().unwrap();
    app.fake
        .control()
        .revoke(fake_amazon::RevokeSpec {
            client_id: Some(fake_amazon::defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: c.selling_partner_id,
            ..Default::default()
        })
        .await;
}

/// The connection page's history: every refresh (as many as the fake counted), the failed one
/// in words, and the status change it caused, newest first.
#[tokio::test]
async fn the_connection_page_shows_each_refresh_the_failure_and_the_status_change() {
    let app = spawn().await;
    app.fake.control().reset_counters().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let operator = login(&app).await;
    let csrf = csrf_of(&operator.page(&app, &format!("/admin/connections/{id}")).await);
    let refresh_path = format!("/admin/connections/{id}/refresh");
    let form = [("csrf", csrf.as_str())];
    let refresh_now = || operator.post(&app, &refresh_path, &form);
    for _ in 0..3 {
        assert_eq!(refresh_now().await.status(), 303);
        app.advance(600.0).await;
    }
    revoke_seller(&app, &id).await;
    app.advance(3600.0).await;
    assert_eq!(refresh_now().await.status(), 409);

    let html = operator.page(&app, &format!("/admin/connections/{id}")).await;
    let table = &html[html.find("id=\"history\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let whats: Vec<&str> = table
        .split("<tr><td>")
        .skip(1)
        .map(|row| {
            row.split("</td><td")
                .nth(1)
                .unwrap()
                .trim_start_matches('>')
                .split("</td>")
                .next()
                .unwrap()
        })
        // Not the vends and webhook events the page also lists.
        .filter(|what| !what.ends_with("handed out") && !what.starts_with("connection."))
        .collect();
    let refreshed = app
        .fake
        .control()
        .counters()
        .await
        .lwa
        .iter()
        .filter(|c| c.grant_type == "refresh_token" && c.outcome == "ok")
        .map(|c| c.count)
        .sum::<u64>();
    assert_eq!(refreshed, 3, "the fake saw the three refreshes");
    assert_eq!(
        whats,
        [
            "status changed",
            "refresh failed",
            "refreshed",
            "refreshed",
            "refreshed"
        ],
        "{table}"
    );
    assert!(table.contains("active → needs_reauth"), "{table}");
    assert!(
        table.contains("no longer valid: send them a re-authorization link"),
        "the failure in words: {table}"
    );
    assert_eq!(
        table.matches("access token refreshed, valid until").count(),
        3,
        "{table}"
    );
}

/// Refresh now on a token already due refreshes once, not twice; clicked again within the
/// forced-refresh cooldown it says so instead of claiming a refresh.
#[tokio::test]
async fn refresh_now_calls_amazon_once_and_says_when_it_did_not() {
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let operator = login(&app).await;
    let csrf = csrf_of(&operator.page(&app, &format!("/admin/connections/{id}")).await);
    let refresh_path = format!("/admin/connections/{id}/refresh");
    let form = [("csrf", csrf.as_str())];
    let refreshes = || async { app.fake.control().counters().await.lwa_calls("refresh_token") };
    // Inside the refresh buffer: the token is due.
    app.advance(3600.0 - 120.0).await;
    let before = refreshes().await;
    assert_eq!(operator.post(&app, &refresh_path, &form).await.status(), 303);
    assert_eq!(refreshes().await - before, 1, "a due token is refreshed once");
    // A fresh token: one forced refresh.
    assert_eq!(operator.post(&app, &refresh_path, &form).await.status(), 303);
    assert_eq!(refreshes().await - before, 2);
    // Again at once: inside the cooldown, nothing is refreshed and the page says so.
    let r = operator.post(&app, &refresh_path, &form).await;
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("refreshed less than 60 s ago"), "{text}");
    assert_eq!(refreshes().await - before, 2);
}

/// Ended sessions are kept only until their cookie would have expired: a broker deletes the
/// expired ones (with the other expired one-time values) when it starts, and every
/// `PURGE_EVERY` after.
#[tokio::test]
async fn a_starting_broker_deletes_expired_ended_sessions() {
    let app = spawn().await;
    let now = app.state.now_ms();
    app.state.store.end_session("sid_expired", now - 1).await.unwrap();
    app.state
        .store
        .end_session("sid_current", now + 3_600_000)
        .await
        .unwrap();
    let other = lwa_server::app::Application::build(app.settings.clone())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(other.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.state.store.session_ended("sid_expired").await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired ended session was not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(app.state.store.session_ended("sid_current").await.unwrap());
    let _ = stop.send(());
}

//! Operations: `/metrics` against the fake's own counts, `/readyz` on a database whose
//! migrations are behind, and `/openapi.json` against what the server answers.

use std::collections::{HashMap, HashSet};

use fake_amazon::browser::{self, Choice};
use lwa_server::app::{PROXY_ROUTE, ROUTES};
use lwa_server::openapi::{ANY, ANY_METHODS, OPERATIONS, Shape};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, location, spawn, spawn_with};

/// `name{labels} value` lines of a Prometheus scrape.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(url: &str) -> (String, HashMap<String, f64>) {
    let r = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let parsed = samples(&text);
    (text, parsed)
}

async fn vend(app: &TestApp, id: &str) -> Value {
    let r = app
        .post_json(&format!("/v1/connections/{id}/access-token"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn metrics_match_the_fakes_counts() {
    let app = spawn_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_url = app.metrics_url.clone().expect("a metrics listener");
    let (first, _) = app.onboard_sp("na", Some("A1METRICS001")).await;
    let (second, _) = app.onboard_sp("eu", Some("A1METRICS002")).await;
    let ids = [first["id"].as_str().unwrap(), second["id"].as_str().unwrap()];
    let mut tokens = Vec::new();
    for _ in 0..5 {
        for id in ids {
            tokens.push(vend(&app, id).await["access_token"].as_str().unwrap().to_owned());
        }
    }
    // LWA answers the grantless token's first attempt with a 500, which the client retries:
    // two HTTP calls for one token.
    app.fake
        .control()
        .add_fault(fake_amazon::FaultSpec {
            target: fake_amazon::FaultTarget::Lwa,
            script: Some(fake_amazon::FaultScript {
                count: 1,
                status: Some(500),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let r = app
        .post_json(
            "/v1/grantless-tokens",
            &json!({"scope": "sellingpartnerapi::notifications"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Into the refresh buffer, then one refresher pass (it refreshes both, late by ~60 s).
    app.advance(3600.0 - 300.0 + 60.0).await;
    let report = app.state.refresher.run_once(&app.state).await;
    assert_eq!(report.fresh, 2, "{report:?}");
    for id in ids {
        vend(&app, id).await;
    }

    let (text, m) = scrape(&metrics_url).await;
    let counters = app.fake.control().counters().await;
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        let ours: f64 = ["ok", "reauthorize", "configuration", "retry_later", "malformed"]
            .iter()
            .map(|o| m[&format!("lwa_broker_lwa_calls_total{{grant_type=\"{grant}\",outcome=\"{o}\"}}")])
            .sum();
        assert_eq!(ours as u64, counters.lwa_calls(grant), "{grant}: {text}");
        assert_eq!(
            m[&format!("lwa_broker_lwa_calls_total{{grant_type=\"{grant}\",outcome=\"ok\"}}")] as u64,
            counters.lwa_outcomes(grant, "ok"),
            "{grant}"
        );
    }
    assert_eq!(counters.lwa_calls("authorization_code"), 2);
    assert_eq!(counters.lwa_calls("refresh_token"), 2);
    assert_eq!(
        counters.lwa_calls("client_credentials"),
        2,
        "one token, retried once"
    );
    assert_eq!(
        m["lwa_broker_lwa_calls_total{grant_type=\"client_credentials\",outcome=\"retry_later\"}"], 1.0,
        "the failed attempt: {text}"
    );
    assert_eq!(
        m["lwa_broker_vend_duration_seconds_count{route=\"access_token\"}"],
        12.0
    );
    assert_eq!(
        m["lwa_broker_vend_duration_seconds_bucket{route=\"access_token\",le=\"+Inf\"}"],
        12.0
    );
    assert_eq!(
        m["lwa_broker_vend_duration_seconds_count{route=\"grantless\"}"],
        1.0
    );
    assert_eq!(m["lwa_broker_refresh_lag_seconds_count"], 2.0);
    // Late by about a minute: not within 15 s, within 120 s.
    assert_eq!(
        m["lwa_broker_refresh_lag_seconds_bucket{le=\"15\"}"], 0.0,
        "{text}"
    );
    assert_eq!(
        m["lwa_broker_refresh_lag_seconds_bucket{le=\"120\"}"], 2.0,
        "{text}"
    );
    assert_eq!(m["lwa_broker_connections{status=\"active\"}"], 2.0);
    assert_eq!(m["lwa_broker_connections{status=\"needs_reauth\"}"], 0.0);
    assert!(m.contains_key("lwa_broker_webhook_backlog"), "{text}");
    assert_eq!(m["lwa_broker_scrape_errors"], 0.0);

    // A proxied call shows as an upstream status.
    let r = app
        .http
        .get(format!(
            "{}/v1/connections/{}/proxy/sellers/v1/marketplaceParticipations",
            app.url, ids[0]
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let (_, m) = scrape(&metrics_url).await;
    assert_eq!(
        m[&format!("lwa_broker_proxy_upstream_responses_total{{api=\"sp-api\",status=\"{status}\"}}")],
        1.0
    );

    // A revoked seller: the next refresh is an `invalid_grant`, counted as `reauthorize`.
    app.fake
        .control()
        .revoke(fake_amazon::RevokeSpec {
            selling_partner_id: Some("A1METRICS001".into()),
            client_id: Some(fake_amazon::defaults::SP_API_CLIENT_ID.into()),
            ..Default::default()
        })
        .await;
    app.advance(3600.0).await;
    app.state.refresher.run_once(&app.state).await;
    let (text, m) = scrape(&metrics_url).await;
    let counters = app.fake.control().counters().await;
    assert_eq!(
        m["lwa_broker_lwa_calls_total{grant_type=\"refresh_token\",outcome=\"reauthorize\"}"] as u64,
        counters.lwa_outcomes("refresh_token", "invalid_grant"),
        "{text}"
    );
    assert_eq!(counters.lwa_outcomes("refresh_token", "invalid_grant"), 1);
    assert_eq!(m["lwa_broker_connections{status=\"needs_reauth\"}"], 1.0);

    // Nothing secret in the scrape.
    assert!(!text.contains(&app.key));
    for token in &tokens {
        assert!(!text.contains(token.as_str()));
    }

    // On the main listener, behind the admin token.
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 401);
    let admin = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(admin.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("lwa_broker_lwa_calls_total"));
}

/// Makes the database's migrations one behind (or back), as a binary newer than the schema
/// would find it.
async fn unapply_last_migration(app: &TestApp) -> (i64, Vec<u8>, String) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", app.db_path().display()))
        .await
        .unwrap();
    let row: (i64, Vec<u8>, String) = sqlx::query_as(
        "SELECT version, checksum, description FROM _sqlx_migrations ORDER BY version DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
        .bind(row.0)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    row
}

async fn reapply(app: &TestApp, row: (i64, Vec<u8>, String)) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", app.db_path().display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (?, ?, CURRENT_TIMESTAMP, 1, ?, 0)",
    )
    .bind(row.0)
    .bind(row.2)
    .bind(row.1)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn readyz_answers_503_when_migrations_are_behind() {
    let app = spawn_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_url = app.metrics_url.clone().unwrap();
    for base in [&app.url, &metrics_url] {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    }
    let row = unapply_last_migration(&app).await;
    for base in [&app.url, &metrics_url] {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "migrations_pending", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("lwa-broker migrate")
        );
        // Liveness is not readiness.
        assert_eq!(
            reqwest::get(format!("{base}/healthz")).await.unwrap().status(),
            200
        );
    }
    reapply(&app, row).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// Whether `value` has JSON type `ty` (`string`, `integer`, …; `?` allows null).
fn has_type(value: &Value, ty: &str) -> bool {
    let (ty, nullable) = match ty.strip_suffix('?') {
        Some(t) => (t, true),
        None => (ty, false),
    };
    (nullable && value.is_null())
        || match ty {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        }
}

/// Checks a response against its documented shape; `Err` says how it differs.
async fn check_shape(r: Response, shape: Shape) -> Result<(), String> {
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let location = r.headers().get("location").is_some();
    let marked = r.headers().get("x-lwa-broker-token").is_some();
    let from_amazon = r.headers().get("x-amzn-requestid").is_some();
    let text = r.text().await.unwrap_or_default();
    let json = || serde_json::from_str::<Value>(&text).map_err(|_| format!("not JSON: {text}"));
    match shape {
        Shape::ApiError => {
            let v = json()?;
            (v["error"]["code"].is_string() && v["error"]["message"].is_string())
                .then_some(())
                .ok_or(format!("not {{error:{{code,message}}}}: {v}"))
        }
        Shape::SeedError => {
            let v = json()?;
            (v["success"] == json!(false) && v["error"]["message"].is_string())
                .then_some(())
                .ok_or(format!("not {{success:false,error:{{message}}}}: {v}"))
        }
        Shape::LwaError => {
            let v = json()?;
            (v["error"].is_string() && v["error_description"].is_string())
                .then_some(())
                .ok_or(format!("not {{error,error_description}}: {v}"))
        }
        Shape::Object(fields) => {
            let v = json()?;
            for (name, ty) in fields {
                let got = v.get(*name).ok_or(format!("no field {name}: {v}"))?;
                if !has_type(got, ty) {
                    return Err(format!("{name} is not {ty}: {v}"));
                }
            }
            Ok(())
        }
        Shape::Redirect => location.then_some(()).ok_or("no Location".into()),
        Shape::Text => content_type
            .starts_with("text/plain")
            .then_some(())
            .ok_or(format!("content type {content_type}")),
        Shape::Html => content_type
            .starts_with("text/html")
            .then_some(())
            .ok_or(format!("content type {content_type}")),
        Shape::Upstream => (marked && from_amazon)
            .then_some(())
            .ok_or(format!("not Amazon's answer through the proxy (x-lwa-broker-token {marked}, x-amzn-RequestId {from_amazon}): {text}")),
    }
}

/// What the probes need: connections, codes, tokens.
struct Fixture {
    connection: String,
    disconnected: String,
    handle: String,
    admin: String,
}

impl Fixture {
    async fn new(app: &TestApp) -> Fixture {
        let (connection, handle) = app.onboard_sp("na", Some("A1OPENAPI001")).await;
        let (gone, _) = app.onboard_sp("eu", Some("A1OPENAPI002")).await;
        let disconnected = gone["id"].as_str().unwrap().to_owned();
        let r = app
            .http
            .delete(format!("{}/v1/connections/{disconnected}", app.url))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let admin = lwa_server::operator::create_admin_token(&app.state)
            .await
            .unwrap()
            .to_string();
        Fixture {
            connection: connection["id"].as_str().unwrap().to_owned(),
            disconnected,
            handle,
            admin,
        }
    }
}

/// A claim code fresh from a consent.
async fn claim_code(app: &TestApp, seller: &str) -> String {
    let link = app
        .connect_link(json!({"region": "na", "state": "s1", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::ApproveAs(seller.into())).await;
    landing.q["code"].clone()
}

/// The request that draws `status` from the operation, sent; `None`: no probe for it.
async fn probe(app: &TestApp, fx: &Fixture, method: &str, path: &str, status: u16) -> Option<Response> {
    let url = |p: &str| format!("{}{p}", app.url);
    let http = &app.http;
    let key = |b: RequestBuilder| b.bearer_auth(&app.key);
    let admin = |b: RequestBuilder| b.bearer_auth(&fx.admin);
    let id = &fx.connection;
    let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let on = |p: &str| http.request(m.clone(), url(p));
    let (key_id, key_secret) = {
        let rest = app.key.strip_prefix("lwak_").unwrap();
        rest.split_once('_').unwrap()
    };
    let request: RequestBuilder = match (method, path, status) {
        ("GET", "/healthz" | "/openapi.json" | "/readyz", 200) => on(path),
        ("GET", "/readyz", 503) => {
            let row = unapply_last_migration(app).await;
            let r = on(path).send().await.unwrap();
            reapply(app, row).await;
            return Some(r);
        }
        ("GET", "/metrics" | "/admin/api/proxy/metrics", 200) => admin(on(path)),
        (_, "/metrics" | "/admin/api/proxy/metrics" | "/admin/api/app-secret-notifications", 401) => on(path),
        ("GET", "/auth/initialize", 302) => http.get(app.initialize_url(&[])),
        ("GET", "/auth/initialize", 400) => on("/auth/initialize?state=x"),
        ("GET", "/auth/initialize", 429) => {
            for _ in 0..6 {
                on("/auth/initialize?state=x").send().await.unwrap();
            }
            on("/auth/initialize?state=x")
        }
        ("GET", "/auth/redirect", 302) => {
            let link = app
                .connect_link(json!({"region": "na", "state": "s1", "redirect_url": RETURN}))
                .await;
            let r = http.get(&link).send().await.unwrap();
            let back = browser::consent(&location(&r), Choice::ApproveAs("A1OPENAPI003".into()))
                .await
                .unwrap();
            http.get(back)
        }
        ("GET", "/auth/redirect", 400) => on("/auth/redirect?state=unknown&spapi_oauth_code=x"),
        ("GET", "/auth/login", 400) => on("/auth/login"),
        ("GET", "/auth/connect/{token}", 302) => http.get(
            app.connect_link(json!({"region": "na", "state": "s1", "redirect_url": RETURN}))
                .await,
        ),
        ("GET", "/auth/connect/{token}", 404) => on("/auth/connect/nope"),
        ("POST", "/api/claim-code", 200) => {
            let code = claim_code(app, "A1OPENAPI004").await;
            on(path)
                .header("x-adb-access-token", &app.key)
                .json(&json!({"code": code}))
        }
        ("POST", "/api/claim-code", 400) => on(path)
            .header("x-adb-access-token", &app.key)
            .json(&json!({"code": "unknown"})),
        ("POST", "/api/claim-code", 401) => on(path).json(&json!({"code": "unknown"})),
        ("POST", "/v1/claims", 200) => {
            let code = claim_code(app, "A1OPENAPI005").await;
            key(on(path)).json(&json!({"code": code}))
        }
        ("POST", "/v1/claims", 400) => key(on(path)).json(&json!({"code": "unknown"})),
        ("POST", "/v1/connect-links", 201) => {
            key(on(path)).json(&json!({"region": "na", "state": "s", "redirect_url": RETURN}))
        }
        ("POST", "/v1/connect-links", 400) => key(on(path)).json(&json!({"state": "s"})),
        ("GET", "/v1/connections", 200) => key(on(path)),
        ("GET", "/v1/connections", 400) => key(on("/v1/connections?status=bogus")),
        ("POST", "/v1/connections/import", 200) => {
            let token = app
                .fake
                .control()
                .self_authorize(fake_amazon::defaults::SP_API_CLIENT_ID, "A1OPENAPI007")
                .await;
            key(on(path)).json(&json!([{"region": "na", "refresh_token": token, "selling_partner_id": "A1OPENAPI007"}]))
        }
        ("POST", "/v1/connections/import", 400) => {
            key(on(path)).json(&json!([{"region": "na", "refresh_token": "Atzr|unknown"}]))
        }
        (_, "/v1/connections/{id}", 200) if method != "DELETE" => {
            key(on(&format!("/v1/connections/{id}"))).json(&json!({"name": "Renamed"}))
        }
        ("DELETE", "/v1/connections/{id}", 200) => {
            let (c, _) = app.onboard_sp("fe", Some("A1OPENAPI006")).await;
            key(on(&format!("/v1/connections/{}", c["id"].as_str().unwrap())))
        }
        ("PATCH", "/v1/connections/{id}", 400) => {
            key(on(&format!("/v1/connections/{id}"))).json(&json!({"name": 5}))
        }
        ("POST", "/v1/connections/{id}/reauthorize-link", 201) => {
            key(on(&format!("/v1/connections/{id}/reauthorize-link"))).json(&json!({"redirect_url": RETURN}))
        }
        ("POST", "/v1/connections/{id}/reauthorize-link", 400) => {
            key(on(&format!("/v1/connections/{id}/reauthorize-link"))).json(&json!({}))
        }
        ("POST", "/v1/connections/{id}/access-token", 200) => {
            key(on(&format!("/v1/connections/{id}/access-token")))
        }
        ("POST", "/v1/connections/{id}/access-token", 409) => key(on(&format!(
            "/v1/connections/{}/access-token",
            fx.disconnected
        ))),
        ("POST", "/v1/connections/{id}/restricted-data-token", 200) => {
            key(on(&format!("/v1/connections/{id}/restricted-data-token"))).json(&json!({
                "restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/123-1234567-1234567/address"}]
            }))
        }
        ("POST", "/v1/connections/{id}/restricted-data-token", 400) => {
            key(on(&format!("/v1/connections/{id}/restricted-data-token"))).json(&json!({"restrictedResources": []}))
        }
        (ANY, _, 200) => key(http.get(url(&format!(
            "/v1/connections/{id}/proxy/sellers/v1/marketplaceParticipations"
        )))),
        (ANY, _, 400) => key(http.get(url(&format!("/v1/connections/{id}/proxy/sellers%2fv1%2faccount")))),
        (ANY, _, 401) => http.get(url(&format!(
            "/v1/connections/{id}/proxy/sellers/v1/marketplaceParticipations"
        ))),
        (ANY, _, 404) => key(http.get(url(
            "/v1/connections/conn_unknown/proxy/sellers/v1/marketplaceParticipations",
        ))),
        (ANY, _, 405) => key(http.request(
            Method::TRACE,
            url(&format!("/v1/connections/{id}/proxy/sellers/v1/marketplaceParticipations")),
        )),
        (ANY, _, 409) => key(http.get(url(&format!(
            "/v1/connections/{}/proxy/sellers/v1/marketplaceParticipations",
            fx.disconnected
        )))),
        (_, p, 404) if p.contains("{id}") => {
            let body = match p {
                "/v1/connections/{id}/restricted-data-token" => json!({
                    "restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/123-1234567-1234567/address"}]
                }),
                "/v1/connections/{id}/reauthorize-link" => json!({"redirect_url": RETURN}),
                _ => json!({"name": "Renamed"}),
            };
            key(on(&p.replace("{id}", "conn_unknown"))).json(&body)
        }
        ("POST", "/v1/grantless-tokens", 200) => {
            key(on(path)).json(&json!({"scope": "sellingpartnerapi::notifications"}))
        }
        ("POST", "/v1/grantless-tokens", 400) => key(on(path)).json(&json!({"scope": "bogus::scope"})),
        ("GET", "/v1/audit", 200) => key(on(path)),
        ("GET", "/v1/audit", 400) => key(on("/v1/audit?kind=bogus")),
        ("GET", "/v1/webhook" | "/v1/webhook/deliveries", 200) => key(on(path)),
        ("PUT", "/v1/webhook", 200) => key(on(path)).json(&json!({"url": "https://hooks.example.com/lwa"})),
        ("PUT", "/v1/webhook", 400) => key(on(path)).json(&json!({"url": "ftp://hooks.example.com"})),
        ("POST", "/v1/webhook/rotate-secret", 200) => key(on(path)),
        ("POST", "/v1/webhook/deliveries/{delivery_id}/retry", 404) => {
            key(on("/v1/webhook/deliveries/999999/retry"))
        }
        ("POST", "/auth/o2/token", 200) => on(path).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", fx.handle.as_str()),
            ("client_id", key_id),
            ("client_secret", key_secret),
        ]),
        ("POST", "/auth/o2/token", 400) => on(path).form(&[
            ("grant_type", "password"),
            ("client_id", key_id),
            ("client_secret", key_secret),
        ]),
        ("POST", "/auth/o2/token", 401) => on(path).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", fx.handle.as_str()),
            ("client_id", key_id),
            ("client_secret", "wrong"),
        ]),
        (_, p, 401) if p.starts_with("/v1/") || p == "/v1/claims" => {
            on(&p.replace("{id}", id).replace("{delivery_id}", "1")).json(&json!({}))
        }
        _ => return None,
    };
    Some(request.send().await.unwrap())
}

#[tokio::test]
async fn openapi_documents_every_route_and_the_server_answers_as_documented() {
    let app = spawn().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(served, lwa_server::openapi::document());
    assert_eq!(served["openapi"], "3.1.0");

    // Every route is documented, and nothing is documented that is not a route.
    let documented: HashSet<(&str, &str)> = OPERATIONS
        .iter()
        .filter(|o| o.method != ANY)
        .map(|o| (o.method, o.path))
        .collect();
    // The proxy, the one route of any method, is documented under each method.
    let proxy: Vec<_> = OPERATIONS.iter().filter(|o| o.method == ANY).collect();
    assert_eq!(proxy.len(), 1);
    assert_eq!(proxy[0].path, PROXY_ROUTE.replace("{*path}", "{path}"));
    for method in ANY_METHODS {
        assert!(
            served["paths"][proxy[0].path][method.to_ascii_lowercase()]["responses"]["200"].is_object(),
            "the proxy documented for {method}"
        );
    }
    let routes: HashSet<(&str, &str)> = ROUTES.iter().map(|r| (r.0, r.1)).collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from OPERATIONS: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&routes).collect();
    assert!(unknown.is_empty(), "OPERATIONS that are not routes: {unknown:?}");
    for op in OPERATIONS.iter().filter(|o| o.method != ANY) {
        let access = ROUTES
            .iter()
            .find(|r| (r.0, r.1) == (op.method, op.path))
            .unwrap()
            .2;
        assert_eq!(access, op.access, "{} {}", op.method, op.path);
        assert!(
            served["paths"][op.path][op.method.to_ascii_lowercase()]["responses"].is_object(),
            "{} {}",
            op.method,
            op.path
        );
    }

    // Every documented status of every operation, drawn from the server and checked.
    let fx = Fixture::new(&app).await;
    let mut failures = Vec::new();
    for op in OPERATIONS {
        for answer in op.answers {
            let Some(r) = probe(&app, &fx, op.method, op.path, answer.status).await else {
                failures.push(format!("{} {} {}: no probe", op.method, op.path, answer.status));
                continue;
            };
            if r.status().as_u16() != answer.status {
                let got = r.status();
                let body = r.text().await.unwrap_or_default();
                failures.push(format!(
                    "{} {} {}: answered {got}: {}",
                    op.method,
                    op.path,
                    answer.status,
                    body.chars().take(300).collect::<String>()
                ));
                continue;
            }
            if let Err(e) = check_shape(r, answer.shape).await {
                failures.push(format!("{} {} {}: {e}", op.method, op.path, answer.status));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

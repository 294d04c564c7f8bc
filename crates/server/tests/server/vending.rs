//! Token vending over HTTP against the fake Amazon: the cache and its shared refresh, tenant-held
//! secrets, grantless tokens, RDTs, failures, and the audit trail.

use std::time::{Duration, Instant};

use fake_amazon::browser::Choice;
use fake_amazon::{FaultScript, FaultSpec, FaultTarget, RevokeSpec, defaults};
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn, spawn_with};

const SECRET: &str = "Zq8m3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uv";
const OTHER_SECRET: &str = "Yq8m3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uv";

impl TestApp {
    async fn vend(&self, id: &str) -> reqwest::Response {
        self.vend_with(id, &self.key, None).await
    }

    async fn vend_with(&self, id: &str, key: &str, secret: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/connections/{id}/access-token", self.url))
            .bearer_auth(key);
        if let Some(secret) = secret {
            request = request.header("x-amazon-token-secret", secret);
        }
        request.send().await.unwrap()
    }

    async fn vend_ok(&self, id: &str) -> Value {
        let r = self.vend(id).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        assert_eq!(r.headers()["cache-control"], "no-store");
        r.json().await.unwrap()
    }

    /// Onboards a seller whose tokens are sealed under `secret` too; returns (id, handle).
    async fn onboard_with_secret(&self, seller: &str, secret: &str) -> (String, String) {
        let link = self
            .connect_link(
                json!({"region": "na", "state": "s", "redirect_url": RETURN, "token_secret": secret}),
            )
            .await;
        let landing = self
            .through_consent(&link, Choice::ApproveAs(seller.into()))
            .await;
        let r = self
            .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        (
            body["connection"]["id"].as_str().unwrap().to_owned(),
            body["handle"].as_str().unwrap().to_owned(),
        )
    }

    /// The connection's refresh token in plain text (for the fake's per-token filters).
    async fn refresh_token_of(&self, id: &str) -> String {
        let row = self.state.store.connection(id).await.unwrap().unwrap();
        self.state
            .sealer
            .open(id, "refresh_token", row.refresh_token.as_deref().unwrap(), None)
            .unwrap()
            .to_string()
    }

    async fn lwa_refreshes(&self) -> u64 {
        self.fake.control().counters().await.lwa_calls("refresh_token")
    }

    async fn token_endpoint(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/auth/o2/token", self.url))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

fn key_parts(key: &str) -> (String, String) {
    let (id, secret) = lwa_server::auth::split_key(key).unwrap();
    (id.to_owned(), secret.to_owned())
}

#[tokio::test]
async fn vends_from_the_cache_and_refreshes_inside_the_buffer() {
    cache_then_refresh(spawn().await).await;
}

/// The same with `LWA_BROKER_HTTP_THREADS=0`: served by `axum::serve` on the caller's runtime.
#[tokio::test]
async fn vends_the_same_when_served_on_the_callers_runtime() {
    cache_then_refresh(spawn_with(|s| s.http_threads = 0).await).await;
}

async fn cache_then_refresh(app: TestApp) {
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    app.fake.control().reset_counters().await;

    let first = app.vend_ok(id).await;
    assert!(first["access_token"].as_str().unwrap().starts_with("Atza|"));
    assert_eq!(first["token_type"], "bearer");
    let expires_in = first["expires_in"].as_i64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{first}");
    assert_eq!(app.vend_ok(id).await["access_token"], first["access_token"]);
    assert_eq!(app.lwa_refreshes().await, 0, "the code exchange's token is used");

    // 200 s left: inside the 300 s buffer, so the next vend refreshes, once.
    app.advance(3400.0).await;
    let second = app.vend_ok(id).await;
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(second["expires_in"].as_i64().unwrap() >= 3590);
    assert_eq!(app.vend_ok(id).await["access_token"], second["access_token"]);
    assert_eq!(app.lwa_refreshes().await, 1);

    // Stored before it was returned: the database holds the new token.
    let row = app.state.store.connection(id).await.unwrap().unwrap();
    let stored = app
        .state
        .sealer
        .open(id, "access_token", row.access_token.as_deref().unwrap(), None)
        .unwrap();
    assert_eq!(stored.as_str(), second["access_token"].as_str().unwrap());
    assert!(row.last_refresh_at_ms.is_some());
    // The token works at Amazon.
    let r = app
        .http
        .get(app.fake.url(
            "sellingpartnerapi-na.amazon.com",
            "/sellers/v1/marketplaceParticipations",
        ))
        .header("x-amz-access-token", second["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_vends_on_an_expired_token_make_one_lwa_call() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap().to_owned();
    app.advance(3700.0).await;
    app.fake.control().reset_counters().await;
    // A slow LWA, so the callers really pile up behind the refresh.
    app.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(300),
            ..FaultSpec::default()
        })
        .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v1/connections/{id}/access-token", app.url),
            app.key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        tokens.insert(task.await.unwrap());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(app.lwa_refreshes().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_refresh_of_one_connection_does_not_slow_another() {
    let app = spawn().await;
    let (x, _) = app.onboard_sp("na", Some("A1STALLEDX")).await;
    let (y, _) = app.onboard_sp("na", Some("A1BUSYSELLERY")).await;
    let (x, y) = (
        x["id"].as_str().unwrap().to_owned(),
        y["id"].as_str().unwrap().to_owned(),
    );
    app.advance(3700.0).await;
    app.vend_ok(&y).await;
    let x_refresh = app.refresh_token_of(&x).await;
    app.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(x_refresh),
            latency_ms: Some(2000),
            ..FaultSpec::default()
        })
        .await;
    let started = Instant::now();
    let stalled = {
        let (http, url, key) = (
            app.http.clone(),
            format!("{}/v1/connections/{x}/access-token", app.url),
            app.key.clone(),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(key).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..200 {
        app.vend_ok(&y).await;
    }
    assert!(
        !stalled.is_finished(),
        "200 vends of Y finished while X's refresh was still stalled"
    );
    assert_eq!(stalled.await.unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn tenant_held_secrets_wrong_missing_and_foreign() {
    let app = spawn().await;
    let (id, handle) = app.onboard_with_secret("A1SECRETSELLER", SECRET).await;
    let (other_id, _) = app.onboard_with_secret("A1OTHERSECRET", OTHER_SECRET).await;
    assert!(handle.starts_with(&format!("lwah_{id}.")));

    let missing = app.vend_with(&id, &app.key, None).await;
    assert_eq!(missing.status(), 403);
    let missing: Value = missing.json().await.unwrap();
    let wrong = app.vend_with(&id, &app.key, Some(&"w".repeat(40))).await;
    assert_eq!(wrong.status(), 403);
    let wrong: Value = wrong.json().await.unwrap();
    // Another connection's secret is just a wrong one.
    let foreign = app.vend_with(&id, &app.key, Some(OTHER_SECRET)).await;
    assert_eq!(foreign.status(), 403);
    let foreign: Value = foreign.json().await.unwrap();
    assert_eq!(missing, wrong, "missing and wrong look alike");
    assert_eq!(wrong, foreign);
    assert_eq!(wrong["error"]["code"], "forbidden");
    let malformed = app.vend_with(&id, &app.key, Some("short")).await;
    assert_eq!(malformed.status(), 403);

    let ok = app.vend_with(&id, &app.key, Some(SECRET)).await;
    assert_eq!(ok.status(), 200);
    let token: Value = ok.json().await.unwrap();
    // Cached now, and still refused without the secret or with the wrong one.
    assert_eq!(app.vend_with(&id, &app.key, None).await.status(), 403);
    assert_eq!(
        app.vend_with(&id, &app.key, Some(OTHER_SECRET)).await.status(),
        403
    );
    assert_eq!(
        app.vend_with(&other_id, &app.key, Some(OTHER_SECRET))
            .await
            .status(),
        200
    );
    // Another tenant, even with the right secret: not found.
    let (_, other_key) = app.other_tenant().await;
    assert_eq!(app.vend_with(&id, &other_key, Some(SECRET)).await.status(), 404);

    // After expiry the refresh needs the secret; a wrong secret does not spoil it for others.
    app.advance(3700.0).await;
    app.fake.control().reset_counters().await;
    assert_eq!(
        app.vend_with(&id, &app.key, Some(OTHER_SECRET)).await.status(),
        403
    );
    let refreshed: Value = app
        .vend_with(&id, &app.key, Some(SECRET))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(refreshed["access_token"], token["access_token"]);
    assert_eq!(app.lwa_refreshes().await, 1);

    // On the LWA-compatible endpoint the secret travels inside the handle.
    let (key_id, key_secret) = key_parts(&app.key);
    let form = |h: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", h.to_owned()),
            ("client_id", key_id.clone()),
            ("client_secret", key_secret.clone()),
        ]
    };
    let lwa = |h: String| {
        let form = form(&h);
        let http = app.http.clone();
        let url = format!("{}/auth/o2/token", app.url);
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    let r = lwa(handle.clone()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["access_token"], refreshed["access_token"]);
    assert_eq!(body["refresh_token"], handle.as_str());
    let bare = lwa(format!("lwah_{id}")).await;
    assert_eq!(bare.status(), 400);
    let bare: Value = bare.json().await.unwrap();
    let other_secret_handle = lwa_server::onboarding::handle(
        &id,
        Some(&lwa_server::sealing::TokenSecret::parse(OTHER_SECRET).unwrap()),
    );
    let wrong: Value = lwa(other_secret_handle).await.json().await.unwrap();
    let unknown: Value = lwa("lwah_conn_doesnotexist".into()).await.json().await.unwrap();
    for b in [&bare, &wrong, &unknown] {
        assert_eq!(b["error"], "invalid_grant");
        assert_eq!(
            b["error_description"],
            "The request has an invalid grant parameter : refresh_token"
        );
    }
}

#[tokio::test]
async fn grantless_tokens_for_two_scopes_alternating_cost_two_lwa_calls() {
    let app = spawn_with(|s| {
        s.grantless_scopes = vec![
            "sellingpartnerapi::notifications".into(),
            "sellingpartnerapi::client_credential:rotation".into(),
        ]
    })
    .await;
    app.fake.control().reset_counters().await;
    let mut seen = std::collections::HashMap::new();
    for round in 0..4 {
        for scope in [
            "sellingpartnerapi::notifications",
            "sellingpartnerapi::client_credential:rotation",
        ] {
            let r = app
                .post_json("/v1/grantless-tokens", &json!({ "scope": scope }))
                .await;
            assert_eq!(r.status(), 200, "round {round}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["scope"], scope);
            let token = body["access_token"].as_str().unwrap().to_owned();
            assert_eq!(seen.entry(scope).or_insert_with(|| token.clone()), &token);
        }
    }
    assert_ne!(
        seen["sellingpartnerapi::notifications"],
        seen["sellingpartnerapi::client_credential:rotation"]
    );
    assert_eq!(
        app.fake
            .control()
            .counters()
            .await
            .lwa_calls("client_credentials"),
        2
    );
    // The grantless token works at Amazon for its operation.
    let r = app
        .http
        .get(app.fake.url(
            "sellingpartnerapi-na.amazon.com",
            "/notifications/v1/destinations",
        ))
        .header("x-amz-access-token", &seen["sellingpartnerapi::notifications"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Through the LWA-compatible endpoint too, from the same cache.
    let (key_id, key_secret) = key_parts(&app.key);
    let r = app
        .token_endpoint(&[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["access_token"],
        seen["sellingpartnerapi::notifications"].as_str()
    );
    assert!(body.get("refresh_token").is_none());
    assert_eq!(
        app.fake
            .control()
            .counters()
            .await
            .lwa_calls("client_credentials"),
        2
    );
}

#[tokio::test]
async fn grantless_scopes_outside_the_allowed_list_are_refused() {
    let app = spawn().await;
    for body in [
        json!({"scope": "sellingpartnerapi::client_credential:rotation"}),
        json!({"scope": "sellingpartnerapi::migration"}),
        json!({"scope": ""}),
        json!({"scope": ["sellingpartnerapi::notifications", "x"]}),
    ] {
        let r = app.post_json("/v1/grantless-tokens", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(
            matches!(
                e["error"]["code"].as_str(),
                Some("scope_not_allowed" | "invalid_scope")
            ),
            "{e}"
        );
    }
    let r = app
        .post_json(
            "/v1/grantless-tokens",
            &json!({"scope": ["sellingpartnerapi::notifications"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.fake
            .control()
            .counters()
            .await
            .lwa_calls("client_credentials"),
        1
    );
}

#[tokio::test]
async fn restricted_data_tokens_are_reused_until_a_minute_before_expiry() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    app.fake.control().reset_counters().await;
    let rdt = |order: &str| json!({"restrictedResources": [{"method": "GET", "path": format!("/orders/v0/orders/{order}/address")}]});
    let path = format!("/v1/connections/{id}/restricted-data-token");
    let r = app.post_json(&path, &rdt("123-1234567-1234567")).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let token = first["restricted_data_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("Atz.sprdt|"));
    assert_eq!(
        first["restricted_resources"][0]["path"],
        "/orders/v0/orders/{orderId}/address"
    );
    // Another order: the generic path covers it, so the same token.
    let second: Value = app
        .post_json(&path, &rdt("902-1845936-5435065"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["restricted_data_token"], token.as_str());
    let tokens_api = || async {
        app.fake.control().counters().await.api_calls(
            "sellingpartnerapi-na.amazon.com",
            "/tokens/2021-03-01/restrictedDataToken",
        )
    };
    assert_eq!(tokens_api().await, 1);
    // It works at Amazon for both orders.
    for order in ["123-1234567-1234567", "902-1845936-5435065"] {
        let r = app
            .http
            .get(app.fake.url(
                "sellingpartnerapi-na.amazon.com",
                &format!("/orders/v0/orders/{order}/address"),
            ))
            .header("x-amz-access-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // A different resource set is a different token.
    let with_elements: Value = app
        .post_json(
            &path,
            &json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/123-1234567-1234567", "dataElements": ["shippingAddress"]}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(with_elements["restricted_data_token"], token.as_str());
    assert_eq!(tokens_api().await, 2);

    // 50 s before expiry (inside the 60 s margin): a new one.
    app.advance(3550.0).await;
    let renewed: Value = app
        .post_json(&path, &rdt("123-1234567-1234567"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(renewed["restricted_data_token"], token.as_str());
    assert!(renewed["expires_in"].as_i64().unwrap() > 3500);
    assert_eq!(tokens_api().await, 3);

    // Bad requests never reach Amazon.
    for bad in [
        json!({"restrictedResources": []}),
        json!({"restrictedResources": [{"method": "PATCH", "path": "/orders/v0/orders"}]}),
        json!({"restrictedResources": [{"method": "GET", "path": "orders"}]}),
        json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/../x"}]}),
        json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders", "dataElements": ["ssn"]}]}),
        json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}], "targetApplication": "a b"}),
        json!({"restrictedResources": [{"method": "GET"}]}),
        json!({"resources": []}),
    ] {
        let r = app.post_json(&path, &bad).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(tokens_api().await, 3);
}

#[tokio::test]
async fn the_lwa_compatible_endpoint_speaks_lwa() {
    let app = spawn().await;
    let (c, handle) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    let (key_id, key_secret) = key_parts(&app.key);
    let vended = app.vend_ok(id).await;

    // Form body.
    let r = app
        .token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json;charset=UTF-8");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["access_token"], vended["access_token"]);
    assert_eq!(body["refresh_token"], handle.as_str());
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 3500);

    // JSON body, and `lwak_<id>` as the client id.
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": handle, "client_id": format!("lwak_{key_id}"), "client_secret": key_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // HTTP Basic.
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .basic_auth(&key_id, Some(&key_secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &handle)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Inside the buffer, `expires_in` is never under it: the broker refreshes first.
    app.advance(3400.0).await;
    let body: Value = app
        .token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert!(body["expires_in"].as_i64().unwrap() >= 300, "{body}");
    assert_ne!(body["access_token"], vended["access_token"]);

    // LWA's errors.
    let (other_tenant, other_key) = app.other_tenant().await;
    let _ = other_tenant;
    let (other_id, other_secret) = key_parts(&other_key);
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("refresh_token", &handle),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &handle),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &handle),
                ("client_id", &key_id),
                ("client_secret", "wrong"),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &handle),
                ("client_id", &key_id),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "Atzr|real-looking"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &handle),
                ("client_id", &other_id),
                ("client_secret", &other_secret),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &handle),
                ("scope", "x"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::migration"),
                ("client_id", &key_id),
                ("client_secret", &key_secret),
            ],
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let r = app.token_endpoint(&form).await;
        assert_eq!(r.status(), status, "{form:?}");
        assert_eq!(r.headers()["content-type"], "application/json;charset=UTF-8");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{form:?}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(body["request_id"].is_string());
    }
    // Basic and a body secret together; JSON header over a form body; other content types.
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .basic_auth(&key_id, Some(&key_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_secret", &key_secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .header("content-type", "application/json")
        .body(format!("grant_type=refresh_token&refresh_token={handle}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .header("content-type", "text/plain")
        .body("grant_type=refresh_token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_revoked_grant_turns_needs_reauth_and_stops_calling_amazon() {
    let app = spawn().await;
    let (c, handle) = app.onboard_sp("na", Some("A1REVOKEDSELLER")).await;
    let id = c["id"].as_str().unwrap();
    app.fake
        .control()
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: Some("A1REVOKEDSELLER".into()),
            ..RevokeSpec::default()
        })
        .await;
    app.advance(3700.0).await;
    app.fake.control().reset_counters().await;
    let r = app.vend(id).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "needs_reauth");
    let view: Value = app
        .get_auth(&format!("/v1/connections/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "needs_reauth");
    assert!(view["last_error"].as_str().unwrap().contains("invalid_grant"));
    for _ in 0..5 {
        assert_eq!(app.vend(id).await.status(), 409);
    }
    let (key_id, key_secret) = key_parts(&app.key);
    let r = app
        .token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().unwrap().contains("revoked"));
    assert_eq!(app.lwa_refreshes().await, 1, "invalid_grant is never retried");
}

#[tokio::test]
async fn amazon_failing_keeps_a_still_valid_token_and_otherwise_answers_503() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    let token = app.vend_ok(id).await["access_token"].clone();
    app.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(FaultScript {
                count: 1000,
                status: Some(500),
                ..FaultScript::default()
            }),
            ..FaultSpec::default()
        })
        .await;
    // Inside the buffer but far from expiry: the refresh fails, the old token still serves.
    app.advance(3400.0).await;
    assert_eq!(app.vend_ok(id).await["access_token"], token);
    // Expired: nothing to serve.
    app.advance(300.0).await;
    let r = app.vend(id).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "amazon_unavailable");
    let view: Value = app
        .get_auth(&format!("/v1/connections/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["status"], "active",
        "a server error is not the seller's fault"
    );
    // The failure holds for a while: callers arriving now do not call Amazon again.
    app.fake.control().reset_counters().await;
    for _ in 0..5 {
        assert_eq!(app.vend(id).await.status(), 503);
    }
    assert_eq!(app.lwa_refreshes().await, 0);
    // Amazon back, and the backoff over (at most 20 s after the second failure in a row): the
    // next vend refreshes.
    app.fake.control().clear_faults().await;
    app.advance(21.0).await;
    assert_ne!(app.vend_ok(id).await["access_token"], token);
    assert_eq!(app.lwa_refreshes().await, 1);
}

#[tokio::test]
async fn proxy_only_keys_get_no_amazon_token() {
    let app = spawn().await;
    let (c, handle) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    let key = lwa_server::admin::create_key(&app.state, &app.tenant_id, None, "proxy-only")
        .await
        .unwrap()
        .key
        .to_string();
    let r = app.vend_with(id, &key, None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "proxy_only_key"
    );
    let (key_id, key_secret) = key_parts(&key);
    let r = app
        .token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    // A stand-in, never the Amazon token (the proxy tests use it).
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("lwas_"));
    let r = app
        .token_endpoint(&[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized_client");
}

#[tokio::test]
async fn disconnected_and_unknown_connections() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    app.vend_ok(id).await;
    let r = app
        .http
        .delete(format!("{}/v1/connections/{id}", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.vend(id).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "disconnected");
    assert_eq!(app.vend("conn_nothere").await.status(), 404);
    let (_, other_key) = app.other_tenant().await;
    let (c2, _) = app.onboard_sp("na", Some("A1SECONDSELLER")).await;
    assert_eq!(
        app.vend_with(c2["id"].as_str().unwrap(), &other_key, None)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn the_audit_trail_records_every_token_handed_out() {
    let app = spawn_with(|s| s.grantless_scopes = vec!["sellingpartnerapi::notifications".into()]).await;
    let (c, handle) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    for _ in 0..3 {
        app.vend_ok(id).await;
    }
    let (key_id, key_secret) = key_parts(&app.key);
    let r = app
        .token_endpoint(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &handle),
            ("client_id", &key_id),
            ("client_secret", &key_secret),
        ])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.post_json(
            "/v1/grantless-tokens",
            &json!({"scope": "sellingpartnerapi::notifications"})
        )
        .await
        .status(),
        200
    );
    let r = app
        .post_json(
            &format!("/v1/connections/{id}/restricted-data-token"),
            &json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/123-1234567-1234567", "dataElements": ["buyerInfo", "shippingAddress"]}]}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let page: Value = app.get_auth("/v1/audit").await.json().await.unwrap();
    let events = page["data"].as_array().unwrap();
    let count = |kind: &str, via: &str| -> i64 {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["via"] == via)
            .map(|e| e["count"].as_i64().unwrap())
            .sum()
    };
    // The RDT's own access-token lookup is not a vend to the tenant.
    assert_eq!(count("access_token", "v1"), 3, "{page}");
    assert_eq!(count("access_token", "lwa"), 1);
    assert_eq!(count("grantless_token", "v1"), 1);
    assert_eq!(count("restricted_data_token", "v1"), 1);
    let rdt = events
        .iter()
        .find(|e| e["kind"] == "restricted_data_token")
        .unwrap();
    assert_eq!(rdt["connection_id"], id);
    assert_eq!(rdt["key_id"], key_id.as_str());
    assert!(
        rdt["detail"]
            .as_str()
            .unwrap()
            .contains("buyerInfo,shippingAddress")
    );
    assert!(!page.to_string().contains(&key_secret));

    // Filters and paging.
    let only: Value = app
        .get_auth("/v1/audit?kind=grantless_token")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let first: Value = app.get_auth("/v1/audit?limit=1").await.json().await.unwrap();
    let before = first["next_before"].as_i64().unwrap();
    let second: Value = app
        .get_auth(&format!("/v1/audit?limit=1&before={before}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(second["data"][0]["id"].as_i64().unwrap() < before);
    let future: Value = app
        .get_auth("/v1/audit?since=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert!(future["data"].as_array().unwrap().is_empty());
    for bad in [
        "kind=x",
        "since=yesterday",
        "limit=0",
        "limit=5000",
        "before=x",
        "nope=1",
    ] {
        assert_eq!(
            app.get_auth(&format!("/v1/audit?{bad}")).await.status(),
            400,
            "{bad}"
        );
    }
    // Another tenant sees none of it.
    let (_, other_key) = app.other_tenant().await;
    let theirs: Value = app
        .http
        .get(format!("{}/v1/audit", app.url))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_secret_sent_for_a_connection_without_one_is_ignored() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", None).await;
    let id = c["id"].as_str().unwrap();
    app.advance(3700.0).await;
    // The refresh happens for a caller that sends a secret the connection does not have …
    let r = app.vend_with(id, &app.key, Some(SECRET)).await;
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    // … and the connection stays usable without it, now and after the cache is gone.
    assert_eq!(app.vend_ok(id).await["access_token"], token["access_token"]);
    app.state.vendor.forget(id);
    assert_eq!(app.vend_ok(id).await["access_token"], token["access_token"]);
    let row = app.state.store.connection(id).await.unwrap().unwrap();
    assert!(
        app.state
            .sealer
            .open(id, "refresh_token", row.refresh_token.as_deref().unwrap(), None)
            .is_ok()
    );
}

#[tokio::test]
async fn a_reauthorization_during_a_refresh_is_not_overwritten() {
    let app = spawn().await;
    let (c, _) = app.onboard_sp("na", Some("A1REAUTHRACE")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    app.advance(3700.0).await;
    let old_refresh = app.refresh_token_of(&id).await;
    app.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(old_refresh.clone()),
            latency_ms: Some(1500),
            ..FaultSpec::default()
        })
        .await;
    let slow = {
        let (http, url, key) = (
            app.http.clone(),
            format!("{}/v1/connections/{id}/access-token", app.url),
            app.key.clone(),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(key).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The seller authorizes again while the old refresh is at Amazon.
    let (again, _) = app.onboard_sp("na", Some("A1REAUTHRACE")).await;
    assert_eq!(again["id"], id.as_str());
    let new_refresh = app.refresh_token_of(&id).await;
    assert_ne!(new_refresh, old_refresh);
    let _ = slow.await.unwrap();
    assert_eq!(
        app.refresh_token_of(&id).await,
        new_refresh,
        "the late refresh did not put the old refresh token back"
    );
    assert_eq!(app.vend(&id).await.status(), 200);
}

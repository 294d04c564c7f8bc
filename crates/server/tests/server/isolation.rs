//! Tenant isolation on every route of `lwa_server::ROUTES`: another tenant's connection is a
//! 404 (never a 403, never a change), and nothing a tenant sends reaches another tenant's data.

use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppstoreSpec, defaults};
use lwa_server::app::Access;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn};

const B_ORIGIN_URL: &str = "https://other.example.com/cb";
const A_SECRET: &str = "IsolationSecret-0123456789abcdefghijklm";

/// One call with a tenant key as Bearer (or as `x-adb-access-token`).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    compat_header: bool,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = app.http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", app.url),
    );
    request = if compat_header {
        request.header("x-adb-access-token", key)
    } else {
        request.bearer_auth(key)
    };
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// An RDT request for one resource.
fn rdt_body(path: &str) -> Value {
    json!({"restrictedResources": [{"method": "GET", "path": path}]})
}

/// One call with a tenant key as Bearer and, if given, a tenant-held secret.
async fn call_with_secret(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    secret: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.url),
        )
        .bearer_auth(key);
    if let Some(secret) = secret {
        request = request.header("x-amazon-token-secret", secret);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `POST /auth/o2/token` with a refresh-token grant for `handle`, as the client `key`.
async fn lwa_refresh(app: &TestApp, key: &str, handle: &str) -> (u16, Value) {
    let (id, secret) = lwa_server::auth::split_key(key).unwrap();
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", handle),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// An LWA error without its per-request id, to compare two answers.
fn lwa_error_of(answer: &Value) -> (Value, Value) {
    assert!(answer["request_id"].is_string(), "{answer}");
    (answer["error"].clone(), answer["error_description"].clone())
}

/// GET /v1/audit with a key; the page's events.
async fn audit(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (status, page) = call(app, "GET", &format!("/v1/audit{query}"), key, false, None).await;
    assert_eq!(status, 200, "{query}: {page}");
    page["data"].as_array().unwrap().clone()
}

/// A connection as its owner sees it.
async fn owner_view(app: &TestApp, id: &str) -> Value {
    let (status, body) = call(
        app,
        "GET",
        &format!("/v1/connections/{id}"),
        &app.key,
        false,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A claim code for a new connection of tenant A (seller `seller`), not yet claimed.
async fn pending_claim(app: &TestApp, seller: &str) -> (String, String) {
    let link = app
        .connect_link(json!({"region": "na", "state": "pending", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::ApproveAs(seller.into())).await;
    (landing.q["seller_id"].clone(), landing.q["code"].clone())
}

#[tokio::test]
async fn every_route_keeps_tenants_apart() {
    let app = spawn().await;
    let (b_tenant, b_key) = app.other_tenant().await;

    // Tenant A: a named, claimed connection for the NA seller, and two unclaimed ones.
    let (connection, a_handle) = app.onboard_sp("na", None).await;
    let a_id = connection["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &app,
        "PATCH",
        &format!("/v1/connections/{a_id}"),
        &app.key,
        false,
        Some(&json!({"name": "A's shop", "callback_url": "https://tenant.example.com/hook"})),
    )
    .await;
    assert_eq!(status, 200);
    let (pending_v1, code_v1) = pending_claim(&app, "A1PENDINGV1").await;
    let (pending_compat, code_compat) = pending_claim(&app, "A1PENDINGCOMPAT").await;
    // And one sealed under a tenant-held secret, and one disconnected.
    let link = app
        .connect_link(
            json!({"region": "na", "state": "secret", "redirect_url": RETURN, "token_secret": A_SECRET}),
        )
        .await;
    let landing = app
        .through_consent(&link, Choice::ApproveAs("A1ISOSECRET".into()))
        .await;
    let (status, claimed) = call(
        &app,
        "POST",
        "/v1/claims",
        &app.key,
        false,
        Some(&json!({"code": landing.q["code"]})),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let a_secret_id = claimed["connection"]["id"].as_str().unwrap().to_owned();
    let a_secret_handle = claimed["handle"].as_str().unwrap().to_owned();
    assert!(a_secret_handle.contains('.'), "{a_secret_handle}");
    let (gone, _) = app.onboard_sp("na", Some("A1ISOGONE")).await;
    let a_gone_id = gone["id"].as_str().unwrap().to_owned();
    let (status, answer) = call(
        &app,
        "DELETE",
        &format!("/v1/connections/{a_gone_id}"),
        &app.key,
        false,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Every id B tries: A's (with A's secret where it has one), and one that does not exist.
    let foreign: Vec<(String, Option<&str>)> = vec![
        (a_id.clone(), None),
        (a_secret_id.clone(), Some(A_SECRET)),
        (a_gone_id.clone(), None),
        (pending_v1.clone(), None),
        ("conn_doesnotexist000000".to_owned(), Some(A_SECRET)),
    ];
    let before = owner_view(&app, &a_id).await;
    assert_eq!(before["name"], "A's shop");
    assert_eq!(before["status"], "active");
    let sealed_before = app.state.store.connection(&a_id).await.unwrap().unwrap();

    let not_found =
        |id: &str| json!({"error": {"code": "not_found", "message": format!("no connection {id}")}});
    let a_unchanged = || async {
        assert_eq!(owner_view(&app, &a_id).await, before, "A's connection changed");
        let stored = app.state.store.connection(&a_id).await.unwrap().unwrap();
        assert_eq!(stored.refresh_token, sealed_before.refresh_token);
        assert_eq!(stored.access_token, sealed_before.access_token);
        assert_eq!(stored.tenant_id, app.tenant_id);
    };

    let mut covered = Vec::new();
    let mut id_calls = Vec::new();
    for &(method, path, access) in lwa_server::ROUTES {
        if path.contains("{id}") {
            assert_ne!(
                access,
                Access::Public,
                "{method} {path} names a connection and must need a key"
            );
            let body = match (method, path) {
                ("GET", "/v1/connections/{id}") | ("DELETE", "/v1/connections/{id}") => None,
                ("PATCH", "/v1/connections/{id}") => {
                    Some(json!({"name": "x", "callback_url": "https://other.example.com/hook"}))
                }
                ("POST", "/v1/connections/{id}/reauthorize-link") => {
                    Some(json!({"redirect_url": B_ORIGIN_URL, "state": "b"}))
                }
                ("POST", "/v1/connections/{id}/access-token") => None,
                ("POST", "/v1/connections/{id}/restricted-data-token") => {
                    Some(rdt_body("/orders/v0/orders/123-1234567-1234567/address"))
                }
                other => panic!("isolation.rs does not know how to call {other:?}: teach it"),
            };
            for compat_header in [false, true] {
                if compat_header && access != Access::CompatKey {
                    continue;
                }
                // A's real ids with B's key, and an id that does not exist: the same answer.
                for (id, _) in &foreign {
                    let (status, answer) = call(
                        &app,
                        method,
                        &path.replace("{id}", id),
                        &b_key,
                        compat_header,
                        body.as_ref(),
                    )
                    .await;
                    assert_eq!(status, 404, "{method} {path} {id} with B's key: {answer}");
                    assert_eq!(answer, not_found(id), "{method} {path} {id}");
                }
                a_unchanged().await;
            }
            // Routes that hand out tokens: also with A's secret, before and after A's own call
            // put the connection in the broker's cache.
            let vends = path.ends_with("/access-token") || path.ends_with("/restricted-data-token");
            for warm in [false, true].into_iter().filter(|_| vends) {
                if warm {
                    for (id, secret) in [(&a_id, None), (&a_secret_id, Some(A_SECRET))] {
                        let (status, answer) = call_with_secret(
                            &app,
                            method,
                            &path.replace("{id}", id),
                            &app.key,
                            secret,
                            body.as_ref(),
                        )
                        .await;
                        assert_eq!(status, 200, "A's own {method} {path} {id}: {answer}");
                    }
                }
                for (id, secret) in &foreign {
                    let (status, answer) = call_with_secret(
                        &app,
                        method,
                        &path.replace("{id}", id),
                        &b_key,
                        *secret,
                        body.as_ref(),
                    )
                    .await;
                    assert_eq!(
                        status, 404,
                        "{method} {path} {id} with B's key (warm: {warm}): {answer}"
                    );
                    assert_eq!(answer, not_found(id), "{method} {path} {id} (warm: {warm})");
                }
                a_unchanged().await;
            }
            id_calls.push((method, path, body));
            covered.push((method, path));
            continue;
        }
        match (method, path) {
            ("GET", "/healthz") => {
                let r = app.get("/healthz").await;
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.unwrap(), "ok");
            }
            ("GET", "/auth/initialize") => {
                // A's tenant id with B's redirect origin, and B's tenant id with A's origin.
                let a_to_b = app.initialize_url(&[]).replace(
                    &url::form_urlencoded::byte_serialize(RETURN.as_bytes()).collect::<String>(),
                    &url::form_urlencoded::byte_serialize(B_ORIGIN_URL.as_bytes()).collect::<String>(),
                );
                let b_to_a = app.initialize_url(&[]).replace(&app.tenant_id, &b_tenant);
                assert!(a_to_b.contains("other.example.com") && b_to_a.contains(&b_tenant));
                for url in [a_to_b, b_to_a] {
                    let r = app.http.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 400, "{url}");
                    assert!(r.headers().get("location").is_none());
                    assert_eq!(
                        r.json::<Value>().await.unwrap(),
                        json!({"success": false, "error": {"message": "sellerRedirectUrl must start with redirectOrigin"}}),
                    );
                }
            }
            ("GET", "/auth/redirect") | ("GET", "/auth/connect/{token}") => {
                // B's link, authorized by the seller A already has: B gets its own connection,
                // lands on B's URL with B's tenant id, and A's connection is untouched.
                if covered
                    .iter()
                    .any(|(_, p)| *p == "/auth/redirect" || *p == "/auth/connect/{token}")
                {
                    covered.push((method, path));
                    continue;
                }
                let r = call(
                    &app,
                    "POST",
                    "/v1/connect-links",
                    &b_key,
                    false,
                    Some(&json!({"region": "na", "state": "b-state", "redirect_url": B_ORIGIN_URL})),
                )
                .await;
                assert_eq!(r.0, 201, "{}", r.1);
                let link = r.1["url"].as_str().unwrap().to_owned();
                let landing = app
                    .through_consent(&link, Choice::ApproveAs(defaults::SELLER_NA.into()))
                    .await;
                assert!(landing.url.starts_with(B_ORIGIN_URL), "{}", landing.url);
                assert_eq!(landing.q["tenant_id"], b_tenant);
                assert_eq!(landing.q["state"], "b-state");
                assert_ne!(landing.q["seller_id"], a_id);
                let b_conn = app
                    .state
                    .store
                    .connection(&landing.q["seller_id"])
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(b_conn.tenant_id, b_tenant);
                assert_eq!(b_conn.selling_partner_id.as_deref(), Some(defaults::SELLER_NA));
                // A cannot claim B's code.
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/claims",
                    &app.key,
                    false,
                    Some(&json!({"code": landing.q["code"]})),
                )
                .await;
                assert_eq!(status, 400);
                assert_eq!(
                    answer,
                    json!({"error": {"code": "invalid_code", "message": "Invalid or already used claim code"}})
                );
                a_unchanged().await;
            }
            ("GET", "/auth/login") => {
                // Amazon's Login URI registered with B's tenant id, for the seller A already has:
                // a new connection for B, not a renewal of A's.
                let start = app
                    .fake
                    .control()
                    .appstore_authorize(AppstoreSpec {
                        application_id: defaults::SP_API_APPLICATION_ID.into(),
                        selling_partner_id: Some(defaults::SELLER_NA.into()),
                        login_uri: format!("{}/auth/login?tenant_id={b_tenant}", app.url),
                        ..AppstoreSpec::default()
                    })
                    .await;
                let r = app.http.get(&start).send().await.unwrap();
                assert_eq!(r.status(), 302);
                let confirm = crate::support::location(&r);
                let callback = browser::follow(&confirm).await.unwrap();
                let landing = app.deliver(&callback).await;
                assert!(
                    landing.url.starts_with("https://other.example.com"),
                    "{}",
                    landing.url
                );
                assert_eq!(landing.q["tenant_id"], b_tenant);
                assert_ne!(landing.q["seller_id"], a_id);
                a_unchanged().await;
            }
            ("POST", "/api/claim-code") => {
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/api/claim-code",
                    &b_key,
                    true,
                    Some(&json!({"code": code_compat, "seller_id": pending_compat})),
                )
                .await;
                assert_eq!(status, 400);
                assert_eq!(
                    answer,
                    json!({"success": false, "error": {"message": "Invalid or already used claim code"}})
                );
                // Current behaviour: B's failed attempt used up A's code (the code is taken
                // before its tenant is compared), so A cannot claim it any more.
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/api/claim-code",
                    &app.key,
                    true,
                    Some(&json!({"code": code_compat})),
                )
                .await;
                assert_eq!(status, 400, "{answer}");
                assert_eq!(
                    answer,
                    json!({"success": false, "error": {"message": "Invalid or already used claim code"}})
                );
                let pending = owner_view(&app, &pending_compat).await;
                assert_eq!(pending["claimed"], false);
                assert_eq!(pending["tenant_id"], app.tenant_id);
            }
            ("POST", "/v1/claims") => {
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/claims",
                    &b_key,
                    false,
                    Some(&json!({"code": code_v1, "name": "stolen"})),
                )
                .await;
                assert_eq!(status, 400);
                assert_eq!(
                    answer,
                    json!({"error": {"code": "invalid_code", "message": "Invalid or already used claim code"}})
                );
                // Current behaviour, as on /api/claim-code: A's code is gone.
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/claims",
                    &app.key,
                    false,
                    Some(&json!({"code": code_v1})),
                )
                .await;
                assert_eq!(status, 400, "{answer}");
                assert_eq!(answer["error"]["code"], "invalid_code");
                let pending = owner_view(&app, &pending_v1).await;
                assert_eq!(pending["claimed"], false);
                assert_eq!(pending["name"], Value::Null, "B's name did not stick");
            }
            ("POST", "/v1/connect-links") => {
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/connect-links",
                    &b_key,
                    false,
                    Some(&json!({"region": "na", "state": "b", "redirect_url": RETURN})),
                )
                .await;
                assert_eq!(status, 400);
                assert_eq!(
                    answer,
                    json!({"error": {"code": "invalid_redirect_url", "message": "redirect_url must lie under one of the tenant's redirect origins: the URL is not under any of the tenant's redirect origins"}})
                );
            }
            ("GET", "/v1/connections") => {
                let (status, answer) = call(&app, "GET", "/v1/connections", &b_key, false, None).await;
                assert_eq!(status, 200);
                for c in answer["data"].as_array().unwrap() {
                    assert_eq!(c["tenant_id"], b_tenant, "{c}");
                    assert!(
                        ![&a_id, &pending_v1, &pending_compat, &a_secret_id, &a_gone_id]
                            .contains(&&c["id"].as_str().unwrap().to_owned()),
                        "{c}"
                    );
                }
                // Filters do not widen it either.
                for q in ["?status=active", "?api=sp-api", "?region=na", "?after="] {
                    let (status, answer) =
                        call(&app, "GET", &format!("/v1/connections{q}"), &b_key, false, None).await;
                    assert_eq!(status, 200, "{q}: {answer}");
                    assert!(
                        answer["data"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|c| c["tenant_id"] == b_tenant.as_str()),
                        "{q}: {answer}"
                    );
                }
                // A sees its own five.
                let (_, mine) = call(&app, "GET", "/v1/connections", &app.key, false, None).await;
                let mut ids: Vec<String> = mine["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_owned())
                    .collect();
                ids.sort();
                let mut expected = vec![
                    a_id.clone(),
                    pending_v1.clone(),
                    pending_compat.clone(),
                    a_secret_id.clone(),
                    a_gone_id.clone(),
                ];
                expected.sort();
                assert_eq!(ids, expected);
            }
            ("POST", "/v1/connections/import") => {
                // B imports a token of the seller A already has: B's own connection of that
                // seller if it has one (from the link and Login URI arms), else a new one;
                // never A's.
                let b_own = app
                    .state
                    .store
                    .connection_by_partner(&b_tenant, "sandbox-sp-api", "na", defaults::SELLER_NA)
                    .await
                    .unwrap();
                let token = app
                    .fake
                    .control()
                    .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
                    .await;
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/connections/import",
                    &b_key,
                    false,
                    Some(&json!([{"region": "na", "refresh_token": token, "selling_partner_id": defaults::SELLER_NA}])),
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["imported"], 1);
                let result = &answer["results"][0];
                assert_eq!(result["created"], b_own.is_none());
                if let Some(own) = &b_own {
                    assert_eq!(result["connection"]["id"], own.id.as_str());
                }
                assert_ne!(result["connection"]["id"], a_id.as_str());
                assert_eq!(result["connection"]["tenant_id"], b_tenant);
                a_unchanged().await;
            }
            ("POST", "/v1/grantless-tokens") => {
                // Grantless tokens belong to the operator's app, not to a seller: B gets one
                // with its own key, and it is B's vend (see /v1/audit).
                let (status, answer) = call(
                    &app,
                    "POST",
                    "/v1/grantless-tokens",
                    &b_key,
                    false,
                    Some(&json!({"scope": "sellingpartnerapi::notifications"})),
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                a_unchanged().await;
            }
            ("GET", "/v1/audit") => {
                // Both tenants vend; each sees only its own events, whatever the filters.
                let b_own = app
                    .state
                    .store
                    .connection_by_partner(&b_tenant, "sandbox-sp-api", "na", defaults::SELLER_NA)
                    .await
                    .unwrap()
                    .expect("B has its own connection of the NA seller");
                let vends: [(&str, &str, String, Option<Value>); 6] = [
                    (
                        &app.key,
                        "POST",
                        format!("/v1/connections/{a_id}/access-token"),
                        None,
                    ),
                    (
                        &app.key,
                        "POST",
                        "/v1/grantless-tokens".into(),
                        Some(json!({"scope": "sellingpartnerapi::notifications"})),
                    ),
                    (
                        &app.key,
                        "POST",
                        format!("/v1/connections/{a_id}/restricted-data-token"),
                        Some(rdt_body("/orders/v0/orders/1/buyerInfo")),
                    ),
                    (
                        &b_key,
                        "POST",
                        format!("/v1/connections/{}/access-token", b_own.id),
                        None,
                    ),
                    (
                        &b_key,
                        "POST",
                        "/v1/grantless-tokens".into(),
                        Some(json!({"scope": "sellingpartnerapi::notifications"})),
                    ),
                    (
                        &b_key,
                        "POST",
                        format!("/v1/connections/{}/restricted-data-token", b_own.id),
                        Some(rdt_body("/orders/v0/orders/1/buyerInfo")),
                    ),
                ];
                for (key, method, path, body) in &vends {
                    let (status, answer) = call(&app, method, path, key, false, body.as_ref()).await;
                    assert_eq!(status, 200, "{path}: {answer}");
                }
                let (status, answer) = lwa_refresh(&app, &b_key, &format!("lwah_{}", b_own.id)).await;
                assert_eq!(status, 200, "{answer}");
                let (status, answer) = lwa_refresh(&app, &app.key, &a_secret_handle).await;
                assert_eq!(status, 200, "{answer}");

                let a_key_id = lwa_server::auth::split_key(&app.key).unwrap().0.to_owned();
                let b_key_id = lwa_server::auth::split_key(&b_key).unwrap().0.to_owned();
                let a_ids = [&a_id, &a_secret_id, &a_gone_id, &pending_v1, &pending_compat];
                let only = |events: &[Value], tenant: &str, key_id: &str, what: &str| {
                    for e in events {
                        assert_eq!(e["tenant_id"], tenant, "{what}: {e}");
                        assert_eq!(e["key_id"], key_id, "{what}: {e}");
                    }
                };
                let mine = audit(&app, &b_key, "").await;
                only(&mine, &b_tenant, &b_key_id, "B's audit");
                let kinds = |events: &[Value]| {
                    let mut k: Vec<(String, String)> = events
                        .iter()
                        .map(|e| {
                            (
                                e["kind"].as_str().unwrap().to_owned(),
                                e["via"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect();
                    k.sort();
                    k.dedup();
                    k
                };
                let all_kinds = vec![
                    ("access_token".to_owned(), "lwa".to_owned()),
                    ("access_token".to_owned(), "v1".to_owned()),
                    ("grantless_token".to_owned(), "v1".to_owned()),
                    ("restricted_data_token".to_owned(), "v1".to_owned()),
                ];
                assert_eq!(kinds(&mine), all_kinds, "B sees its own vends: {mine:?}");
                for e in &mine {
                    assert!(
                        e["connection_id"].is_null() || e["connection_id"] == b_own.id.as_str(),
                        "B's audit names a connection not B's: {e}"
                    );
                }
                // Filters naming A's connections, A's key, or anything else never widen B's view.
                let mut queries: Vec<String> =
                    a_ids.iter().map(|id| format!("?connection_id={id}")).collect();
                queries.extend([
                    format!("?key_id={a_key_id}"),
                    format!("?key_id={a_key_id}&connection_id={a_id}"),
                    "?kind=restricted_data_token".into(),
                    "?kind=grantless_token".into(),
                    "?since=1970-01-01T00:00:00Z&until=2999-01-01T00:00:00Z".into(),
                    "?before=9223372036854775807".into(),
                    "?limit=1000".into(),
                ]);
                for q in &queries {
                    let events = audit(&app, &b_key, q).await;
                    only(&events, &b_tenant, &b_key_id, q);
                    if q.contains("connection_id") || q.contains(&a_key_id) {
                        assert!(events.is_empty(), "{q}: {events:?}");
                    }
                }
                // No parameter names a tenant.
                let (status, answer) = call(&app, "GET", "/v1/audit?tenant_id=x", &b_key, false, None).await;
                assert_eq!(status, 400, "{answer}");
                assert_eq!(answer["error"]["code"], "invalid_query");
                // Paging through B's events one at a time meets no event of A's.
                let mut cursor = String::new();
                let mut paged = 0;
                loop {
                    let (status, page) = call(
                        &app,
                        "GET",
                        &format!("/v1/audit?limit=1{cursor}"),
                        &b_key,
                        false,
                        None,
                    )
                    .await;
                    assert_eq!(status, 200, "{page}");
                    only(page["data"].as_array().unwrap(), &b_tenant, &b_key_id, "paging");
                    paged += page["data"].as_array().unwrap().len();
                    match page["next_before"].as_i64() {
                        Some(next) => cursor = format!("&before={next}"),
                        None => break,
                    }
                    assert!(paged <= mine.len(), "paging goes past B's events");
                }
                assert_eq!(paged, mine.len());
                // And A sees its own, none of B's.
                let theirs = audit(&app, &app.key, "").await;
                only(&theirs, &app.tenant_id, &a_key_id, "A's audit");
                assert_eq!(kinds(&theirs), all_kinds, "A sees its own vends: {theirs:?}");
                assert!(
                    theirs.iter().all(|e| e["connection_id"] != b_own.id.as_str()),
                    "{theirs:?}"
                );
                let none = audit(&app, &app.key, &format!("?connection_id={}", b_own.id)).await;
                assert!(none.is_empty(), "{none:?}");
                let none = audit(&app, &app.key, &format!("?key_id={b_key_id}")).await;
                assert!(none.is_empty(), "{none:?}");
                a_unchanged().await;
            }
            ("POST", "/auth/o2/token") => {
                // B's client credentials with any handle of A's (plain, with A's secret inside,
                // disconnected, unclaimed) is the same invalid_grant as an unknown handle, for
                // connections in the broker's cache (A vended them above) and not, and again
                // after A's own use of this endpoint.
                let (status, unknown) = lwa_refresh(&app, &b_key, "lwah_conn_doesnotexist000000").await;
                assert_eq!(status, 400, "{unknown}");
                assert_eq!(unknown["error"], "invalid_grant");
                let unknown = lwa_error_of(&unknown);
                let secret = lwa_server::sealing::TokenSecret::parse(A_SECRET).unwrap();
                let handles = [
                    a_handle.clone(),
                    a_secret_handle.clone(),
                    lwa_server::onboarding::handle(&a_secret_id, None),
                    lwa_server::onboarding::handle(&a_gone_id, None),
                    lwa_server::onboarding::handle(&pending_v1, None),
                    lwa_server::onboarding::handle(&pending_compat, Some(&secret)),
                    lwa_server::onboarding::handle("conn_doesnotexist000001", Some(&secret)),
                ];
                for warm in [false, true] {
                    if warm {
                        for handle in [&a_handle, &a_secret_handle] {
                            let (status, answer) = lwa_refresh(&app, &app.key, handle).await;
                            assert_eq!(status, 200, "A's own {handle}: {answer}");
                        }
                    }
                    for handle in &handles {
                        let (status, answer) = lwa_refresh(&app, &b_key, handle).await;
                        assert_eq!(status, 400, "B with {handle} (warm: {warm}): {answer}");
                        assert_eq!(lwa_error_of(&answer), unknown, "B with {handle} (warm: {warm})");
                    }
                }
                // One tenant's key id with the other's secret is no client at all.
                let (a_key_id, a_secret) = lwa_server::auth::split_key(&app.key).unwrap();
                let (b_key_id, b_secret) = lwa_server::auth::split_key(&b_key).unwrap();
                for (id, secret) in [(a_key_id, b_secret), (b_key_id, a_secret)] {
                    let r = app
                        .http
                        .post(format!("{}/auth/o2/token", app.url))
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", a_handle.as_str()),
                            ("client_id", id),
                            ("client_secret", secret),
                        ])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 401);
                    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
                    let r = app
                        .http
                        .post(format!("{}/auth/o2/token", app.url))
                        .basic_auth(id, Some(secret))
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", a_handle.as_str()),
                        ])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 401);
                    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
                }
                a_unchanged().await;
            }
            (_, "/v1/webhook")
            | (_, "/v1/webhook/rotate-secret")
            | (_, "/v1/webhook/deliveries")
            | (_, "/v1/webhook/deliveries/{delivery_id}/retry") => {
                // All five at once: each tenant's webhook, secret and deliveries are its own.
                if covered.iter().any(|(_, p)| p.starts_with("/v1/webhook")) {
                    covered.push((method, path));
                    continue;
                }
                // A's webhook (nothing listens there) and a delivery of A's that failed.
                let a_url = "http://127.0.0.1:9/a-hooks";
                let (status, set) = call(
                    &app,
                    "PUT",
                    "/v1/webhook",
                    &app.key,
                    false,
                    Some(&json!({"url": a_url})),
                )
                .await;
                assert_eq!(status, 200, "{set}");
                let a_sealed = app
                    .state
                    .store
                    .tenant(&app.tenant_id)
                    .await
                    .unwrap()
                    .unwrap()
                    .signing_secret;
                assert!(a_sealed.is_some());
                let row = app.state.store.connection(&a_id).await.unwrap().unwrap();
                let mut events = lwa_server::webhooks::connection_event(
                    &app.state,
                    lwa_server::webhooks::EventType::ConnectionRefreshTokenExpiring,
                    &row,
                    json!({}),
                );
                events[0].retry_for_ms = 0;
                app.state.store.enqueue_events(&events).await.unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
                let a_delivery = loop {
                    lwa_server::webhooks::worker::run_once(&app.state).await;
                    let (_, log) = call(
                        &app,
                        "GET",
                        "/v1/webhook/deliveries?state=failed",
                        &app.key,
                        false,
                        None,
                    )
                    .await;
                    if let Some(d) = log["data"].as_array().unwrap().first() {
                        break d.clone();
                    }
                    assert!(std::time::Instant::now() < deadline, "A's delivery never failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                };
                assert_eq!(a_delivery["connection_id"], a_id.as_str());
                let a_delivery_id = a_delivery["id"].as_i64().unwrap();

                // B sees its own (empty) webhook, and sets and rotates its own.
                let (status, b_view) = call(&app, "GET", "/v1/webhook", &b_key, false, None).await;
                assert_eq!(
                    (status, b_view),
                    (200, json!({"url": null, "signing_secret_set": false}))
                );
                let (status, b_set) = call(
                    &app,
                    "PUT",
                    "/v1/webhook",
                    &b_key,
                    false,
                    Some(&json!({"url": "http://127.0.0.1:9/b-hooks"})),
                )
                .await;
                assert_eq!(status, 200, "{b_set}");
                assert_ne!(b_set["signing_secret"], set["signing_secret"]);
                let (status, _) = call(&app, "POST", "/v1/webhook/rotate-secret", &b_key, false, None).await;
                assert_eq!(status, 200);
                let (_, a_view) = call(&app, "GET", "/v1/webhook", &app.key, false, None).await;
                assert_eq!(a_view, json!({"url": a_url, "signing_secret_set": true}));
                assert_eq!(
                    app.state
                        .store
                        .tenant(&app.tenant_id)
                        .await
                        .unwrap()
                        .unwrap()
                        .signing_secret,
                    a_sealed,
                    "B's calls left A's secret alone"
                );

                // B's delivery log has none of A's, whatever it filters on.
                for query in [
                    "",
                    "?state=failed",
                    &format!("?connection_id={a_id}"),
                    "?type=connection.refresh_token_expiring",
                ] {
                    let (status, log) = call(
                        &app,
                        "GET",
                        &format!("/v1/webhook/deliveries{query}"),
                        &b_key,
                        false,
                        None,
                    )
                    .await;
                    assert_eq!(status, 200, "{query}: {log}");
                    assert_eq!(log["data"], json!([]), "{query}");
                }
                // B cannot retry A's delivery: the same 404 as one that does not exist.
                for id in [a_delivery_id, 999_999] {
                    let (status, answer) = call(
                        &app,
                        "POST",
                        &format!("/v1/webhook/deliveries/{id}/retry"),
                        &b_key,
                        false,
                        None,
                    )
                    .await;
                    assert_eq!(status, 404, "{answer}");
                    assert_eq!(
                        answer,
                        json!({"error": {"code": "not_found", "message": format!("no delivery {id}")}})
                    );
                }
                let (_, log) = call(
                    &app,
                    "GET",
                    "/v1/webhook/deliveries?state=failed",
                    &app.key,
                    false,
                    None,
                )
                .await;
                assert_eq!(log["data"][0]["id"], a_delivery_id, "still failed");
                // A can.
                let (status, answer) = call(
                    &app,
                    "POST",
                    &format!("/v1/webhook/deliveries/{a_delivery_id}/retry"),
                    &app.key,
                    false,
                    None,
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                a_unchanged().await;
            }
            ("POST", "/admin/api/app-secret-notifications") => {
                // An operator route: no tenant's key opens it, whoever's app it names.
                let before = app.state.store.app_secrets().await.unwrap();
                let body = json!({"notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET", "payload": {
                "applicationOAuthClientNewSecret": {
                    "clientId": defaults::SP_API_CLIENT_ID,
                    "newClientSecret": "amzn1.oa2-cs.v1.from-a-tenant",
                    "oldClientSecretExpiryTime": "2030-01-01T00:00:00Z",
                }}});
                lwa_server::operator::create_admin_token(&app.state)
                    .await
                    .unwrap();
                for key in [&app.key, &b_key] {
                    let (status, answer) = call(&app, method, path, key, false, Some(&body)).await;
                    assert_eq!(status, 401, "{answer}");
                    assert_eq!(answer["error"]["message"], "invalid admin token");
                }
                assert_eq!(app.state.store.app_secrets().await.unwrap(), before);
                a_unchanged().await;
            }
            ("GET", "/readyz" | "/openapi.json") => {
                // The same answer for anyone, with no tenant's data in it.
                let (status, answer) = call(&app, method, path, &app.key, false, None).await;
                assert_eq!(status, 200, "{answer}");
                assert!(!answer.to_string().contains(&app.tenant_id));
            }
            ("GET", "/admin/api/proxy/metrics" | "/metrics") => {
                // Every tenant's proxy traffic: no tenant's key opens it.
                lwa_server::operator::create_admin_token(&app.state)
                    .await
                    .unwrap();
                for key in [&app.key, &b_key] {
                    let (status, answer) = call(&app, method, path, key, false, None).await;
                    assert_eq!(status, 401, "{answer}");
                    assert_eq!(answer["error"]["message"], "invalid admin token");
                }
            }
            other => panic!("isolation.rs does not know how to check {other:?}: teach it"),
        }
        covered.push((method, path));
    }
    assert_eq!(covered.len(), lwa_server::ROUTES.len());
    a_unchanged().await;

    // The same calls on B's own connection succeed: the 404s were about the owner, not the
    // request.
    let (_, b_list) = call(&app, "GET", "/v1/connections", &b_key, false, None).await;
    let b_id = b_list["data"][0]["id"]
        .as_str()
        .expect("B has a connection")
        .to_owned();
    // B's own handle works on /auth/o2/token (A's key gets invalid_grant for it).
    let b_handle = lwa_server::onboarding::handle(&b_id, None);
    let (status, answer) = lwa_refresh(&app, &b_key, &b_handle).await;
    assert_eq!(status, 200, "B's own handle: {answer}");
    let (status, answer) = lwa_refresh(&app, &app.key, &b_handle).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_grant");
    // DELETE last: it disconnects B's connection.
    id_calls.sort_by_key(|(method, _, _)| *method == "DELETE");
    for (method, path, body) in id_calls {
        let (status, answer) = call(
            &app,
            method,
            &path.replace("{id}", &b_id),
            &b_key,
            false,
            body.as_ref(),
        )
        .await;
        let expected = if path.ends_with("/reauthorize-link") {
            201
        } else {
            200
        };
        assert_eq!(
            status, expected,
            "{method} {path} on B's own connection: {answer}"
        );
    }
    a_unchanged().await;
}

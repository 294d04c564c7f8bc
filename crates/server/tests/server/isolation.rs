//! Tenant isolation on every route of `lwa_server::ROUTES`: another tenant's connection is a
//! 404 (never a 403, never a change), and nothing a tenant sends reaches another tenant's data.

use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppstoreSpec, defaults};
use lwa_server::app::Access;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn};

const B_ORIGIN_URL: &str = "https://other.example.com/cb";

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
    let (connection, _) = app.onboard_sp("na", None).await;
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
                other => panic!("isolation.rs does not know how to call {other:?}: teach it"),
            };
            for compat_header in [false, true] {
                if compat_header && access != Access::CompatKey {
                    continue;
                }
                // A's real id with B's key, and an id that does not exist: the same answer.
                for id in [a_id.as_str(), "conn_doesnotexist000000"] {
                    let (status, answer) = call(
                        &app,
                        method,
                        &path.replace("{id}", id),
                        &b_key,
                        compat_header,
                        body.as_ref(),
                    )
                    .await;
                    assert_eq!(status, 404, "{method} {path} with B's key: {answer}");
                    assert_eq!(answer, not_found(id), "{method} {path}");
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
                        ![&a_id, &pending_v1, &pending_compat]
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
                // A sees its own three.
                let (_, mine) = call(&app, "GET", "/v1/connections", &app.key, false, None).await;
                let mut ids: Vec<String> = mine["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_owned())
                    .collect();
                ids.sort();
                let mut expected = vec![a_id.clone(), pending_v1.clone(), pending_compat.clone()];
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

//! Bad input on every route of `lwa_server::ROUTES`: malformed, mistyped, oversized and
//! unauthenticated requests get our error shapes with exact statuses, and nothing answers 5xx.

use fake_amazon::defaults;
use lwa_server::app::Access;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn, spawn_with};

/// What came back.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    location: Option<String>,
    cache_control: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "not JSON ({}, {}): {}",
            self.status,
            self.content_type,
            self.text
        );
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    fn is_html(&self) -> bool {
        self.content_type.starts_with("text/html")
    }
}

/// Every status the test saw, for the final sweep: no 5xx anywhere.
#[derive(Default)]
struct Seen(Vec<(String, u16)>);

impl Seen {
    async fn send(&mut self, label: impl Into<String>, request: RequestBuilder) -> Answer {
        let label = label.into();
        let r = request.send().await.unwrap_or_else(|e| panic!("{label}: {e}"));
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let content_type = header("content-type").unwrap_or_default();
        let location = header("location");
        let cache_control = header("cache-control");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        self.0.push((label, status));
        Answer {
            status,
            content_type,
            location,
            cache_control,
            text,
        }
    }

    /// The sweep: every answer was a deliberate one (no 5xx).
    fn finish(self) {
        assert!(!self.0.is_empty());
        let failures: Vec<&(String, u16)> = self.0.iter().filter(|(_, s)| *s >= 500).collect();
        assert!(failures.is_empty(), "5xx answers: {failures:?}");
    }
}

fn v1(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn compat(message: &str) -> Value {
    json!({"success": false, "error": {"message": message}})
}

/// The error shape of a route: compat on `/api/claim-code`, v1 elsewhere.
fn shaped(path: &str, code: &str, message: &str) -> Value {
    if path == "/api/claim-code" {
        compat(message)
    } else {
        v1(code, message)
    }
}

fn request(app: &TestApp, method: &str, path: &str) -> RequestBuilder {
    app.http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", app.url),
    )
}

/// Imports a connection of `seller` for the app's tenant; its id.
async fn import_connection(app: &TestApp, seller: &str) -> String {
    let token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, seller)
        .await;
    let r = app
        .post_json(
            "/v1/connections/import",
            &json!([{"region": "na", "refresh_token": token, "selling_partner_id": seller}]),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["results"][0]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The concrete path of a route (a real connection id, a garbage link token); panics for a
/// route this file does not know, so a new route must be taught here.
fn concrete(path: &str, id: &str) -> String {
    match path {
        "/healthz"
        | "/readyz"
        | "/openapi.json"
        | "/metrics"
        | "/auth/initialize"
        | "/auth/redirect"
        | "/auth/login"
        | "/api/claim-code"
        | "/v1/claims"
        | "/v1/connect-links"
        | "/v1/connections"
        | "/v1/connections/import" => path.to_owned(),
        "/v1/grantless-tokens" | "/v1/audit" | "/auth/o2/token" => path.to_owned(),
        "/v1/webhook" | "/v1/webhook/rotate-secret" | "/v1/webhook/deliveries" => path.to_owned(),
        "/v1/webhook/deliveries/{delivery_id}/retry" => path.replace("{delivery_id}", "1"),
        "/admin/api/app-secret-notifications" | "/admin/api/proxy/metrics" => path.to_owned(),
        "/auth/connect/{token}" => "/auth/connect/garbage-token".to_owned(),
        "/v1/connections/{id}"
        | "/v1/connections/{id}/reauthorize-link"
        | "/v1/connections/{id}/access-token"
        | "/v1/connections/{id}/restricted-data-token" => path.replace("{id}", id),
        other => panic!("bad_input.rs does not know the route {other}: teach it"),
    }
}

/// A valid body for a route that takes one (so only the key decides), `None` for the others.
fn valid_body(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("GET", _) | ("DELETE", _) => None,
        ("POST", "/api/claim-code") | ("POST", "/v1/claims") => Some(json!({"code": "some-code"})),
        ("POST", "/v1/connect-links") => Some(json!({"region": "na", "state": "s", "redirect_url": RETURN})),
        ("POST", "/v1/connections/import") => Some(json!([{"region": "na", "refresh_token": "Atzr|x"}])),
        ("PATCH", "/v1/connections/{id}") => Some(json!({"name": "x"})),
        ("POST", "/v1/connections/{id}/reauthorize-link") => Some(json!({"redirect_url": RETURN})),
        // Takes no body: the id, the key and `x-amazon-token-secret` are everything.
        ("POST", "/v1/connections/{id}/access-token") => None,
        ("POST", "/v1/connections/{id}/restricted-data-token") => Some(rdt_body("/orders/v0/orders")),
        ("POST", "/v1/grantless-tokens") => Some(json!({"scope": NOTIFICATIONS})),
        ("PUT", "/v1/webhook") => Some(json!({"url": "https://tenant.example.com/hooks"})),
        // Take no body.
        ("POST", "/v1/webhook/rotate-secret") | ("POST", "/v1/webhook/deliveries/{delivery_id}/retry") => {
            None
        }
        ("POST", "/admin/api/app-secret-notifications") => Some(json!({
            "notificationType": "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY",
            "payload": {"applicationOAuthClientSecretExpiry": {
                "clientId": defaults::SP_API_CLIENT_ID,
                "clientSecretExpiryTime": "2030-01-01T00:00:00Z",
            }},
        })),
        other => panic!("bad_input.rs does not know a body for {other:?}: teach it"),
    }
}

const NOTIFICATIONS: &str = "sellingpartnerapi::notifications";
const INVALID_CLIENT: &str = "Client authentication failed";
const INVALID_GRANT: &str = "The request has an invalid grant parameter : refresh_token";
const FORBIDDEN: &str = "this connection can only be used with its token secret in x-amazon-token-secret";

/// An RDT request for one resource.
fn rdt_body(path: &str) -> Value {
    json!({"restrictedResources": [{"method": "GET", "path": path}]})
}

/// LWA's "missing parameter" description.
fn missing(name: &str) -> String {
    format!("The request is missing a required parameter : {name}")
}

/// An error of `/auth/o2/token`: LWA's statuses and LWA's shape (exactly `error`,
/// `error_description` and a fresh `request_id`), LWA's content type, never cached. Never our
/// `{"error":{"code","message"}}`.
fn assert_lwa(a: &Answer, status: u16, error: &str, description: &str, label: &str) {
    assert_eq!(a.status, status, "{label}: {}", a.text);
    assert_eq!(a.content_type, "application/json;charset=UTF-8", "{label}");
    assert_eq!(a.cache_control.as_deref(), Some("no-store"), "{label}");
    let body = a.json();
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{label}: not an object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["error", "error_description", "request_id"],
        "{label}: {body}"
    );
    assert_eq!(body["error"], error, "{label}: {body}");
    assert_eq!(body["error_description"], description, "{label}: {body}");
    let request_id = body["request_id"].as_str().unwrap();
    assert!(
        request_id.len() == 32 && request_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{label}: request_id {request_id:?}"
    );
}

/// A token answer of `/auth/o2/token` (a positive control).
fn assert_lwa_token(a: &Answer, label: &str) {
    assert_eq!(a.status, 200, "{label}: {}", a.text);
    assert_eq!(a.content_type, "application/json;charset=UTF-8", "{label}");
    let body = a.json();
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("Atza|")),
        "{label}: {body}"
    );
    assert_eq!(body["token_type"], "bearer", "{label}");
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// `/auth/o2/token` authenticates LWA clients: the tenant's key id and secret in the body or
/// in HTTP Basic. Missing, malformed, wrong and revoked credentials get LWA's
/// `invalid_client` (401) or `invalid_request` (400), in LWA's shape.
async fn lwa_client_credentials(
    app: &TestApp,
    seen: &mut Seen,
    method: &str,
    url: &str,
    id: &str,
    revoked: &str,
) {
    use base64::Engine;
    assert_eq!(
        (method, url),
        ("POST", "/auth/o2/token"),
        "teach lwa_client_credentials"
    );
    let handle = format!("lwah_{id}");
    let (key_id, key_secret) = lwa_server::auth::split_key(&app.key).unwrap();
    let (revoked_id, revoked_secret) = lwa_server::auth::split_key(revoked).unwrap();
    let wrong_secret = "0".repeat(64);
    let form = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", handle.as_str()),
        ];
        pairs.extend_from_slice(extra);
        request(app, method, url).form(&pairs)
    };
    let with_auth = |value: &str| form(&[]).header("authorization", value);
    let json_credentials = |secret: &str| {
        json!({
            "grant_type": "refresh_token",
            "refresh_token": handle,
            "client_id": key_id,
            "client_secret": secret,
        })
    };

    // Positive controls: the same request with good credentials, each way.
    for (what, req) in [
        (
            "form credentials",
            form(&[("client_id", key_id), ("client_secret", key_secret)]),
        ),
        (
            "lwak_ client id",
            form(&[
                ("client_id", &format!("lwak_{key_id}")),
                ("client_secret", key_secret),
            ]),
        ),
        ("basic", with_auth(&basic(key_id, key_secret))),
        (
            "basic, lower-case scheme",
            with_auth(&basic(key_id, key_secret).replace("Basic", "basic")),
        ),
        (
            "json credentials",
            request(app, method, url).json(&json_credentials(key_secret)),
        ),
    ] {
        let a = seen.send(format!("{url}: {what}"), req).await;
        assert_lwa_token(&a, what);
    }

    let long_id = "f".repeat(65);
    let long_secret = "0".repeat(257);
    let cases: Vec<(&str, RequestBuilder, u16, &str, String)> = vec![
        (
            "no credentials",
            form(&[]),
            400,
            "invalid_request",
            missing("client_id"),
        ),
        (
            "empty client_id",
            form(&[("client_id", ""), ("client_secret", key_secret)]),
            400,
            "invalid_request",
            missing("client_id"),
        ),
        (
            "client_id without a secret",
            form(&[("client_id", key_id)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "empty client_secret",
            form(&[("client_id", key_id), ("client_secret", "")]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "unknown client_id",
            form(&[("client_id", "ffffffffffffffff"), ("client_secret", key_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "right id, wrong secret",
            form(&[("client_id", key_id), ("client_secret", &wrong_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "wrong secret and an unknown handle: the client is checked first",
            request(app, method, url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "lwah_conn_doesnotexist000000"),
                ("client_id", key_id),
                ("client_secret", &wrong_secret),
            ]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "revoked key",
            form(&[("client_id", revoked_id), ("client_secret", revoked_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "the whole key as client_id",
            form(&[("client_id", &app.key), ("client_secret", key_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "the whole key as client_secret",
            form(&[("client_id", key_id), ("client_secret", &app.key)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "a 65-character client_id",
            form(&[("client_id", &long_id), ("client_secret", key_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "a 257-character client_secret",
            form(&[("client_id", key_id), ("client_secret", &long_secret)]),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "the API key as Bearer",
            with_auth(&format!("Bearer {}", app.key)),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "the API key as Bearer, and good form credentials",
            form(&[("client_id", key_id), ("client_secret", key_secret)]).bearer_auth(&app.key),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, not base64",
            with_auth("Basic %%%not-base64%%%"),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic without a colon",
            with_auth(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(key_id)
            )),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, not UTF-8",
            with_auth(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode([0xff, b':', 0xfe])
            )),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, empty",
            with_auth("Basic "),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, empty id and secret",
            with_auth(&basic("", "")),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, wrong secret",
            with_auth(&basic(key_id, &wrong_secret)),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic, revoked key",
            with_auth(&basic(revoked_id, revoked_secret)),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic with a typo'd scheme",
            with_auth(&basic(key_id, key_secret).replace("Basic", "Basci")),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
        (
            "basic and a client_secret in the body",
            form(&[("client_secret", key_secret)]).header("authorization", basic(key_id, key_secret)),
            400,
            "invalid_request",
            "The request uses more than one client authentication method".into(),
        ),
        (
            "the seed's x-adb-access-token",
            form(&[]).header("x-adb-access-token", &app.key),
            400,
            "invalid_request",
            missing("client_id"),
        ),
        (
            "json, no credentials",
            request(app, method, url).json(&json!({"grant_type": "refresh_token", "refresh_token": handle})),
            400,
            "invalid_request",
            missing("client_id"),
        ),
        (
            "json, wrong secret",
            request(app, method, url).json(&json_credentials(&wrong_secret)),
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
        ),
    ];
    for (what, req, status, error, description) in cases {
        let label = format!("{method} {url}: {what}");
        let a = seen.send(label.clone(), req).await;
        assert_lwa(&a, status, error, &description, &label);
    }
}

#[tokio::test]
async fn every_keyed_route_refuses_missing_malformed_wrong_and_revoked_keys() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1BADKEYS").await;

    // A key that works, then is revoked.
    let revoked = app.new_key().await;
    let key_id = lwa_server::auth::split_key(&revoked).unwrap().0.to_owned();
    let (real_id, _) = lwa_server::auth::split_key(&app.key).unwrap();
    let a = seen
        .send(
            "revoked key before",
            request(&app, "GET", "/v1/connections").bearer_auth(&revoked),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(lwa_server::admin::revoke_key(&app.state, &key_id).await.unwrap());
    let a = seen
        .send(
            "revoked key after",
            request(&app, "GET", "/v1/connections").bearer_auth(&revoked),
        )
        .await;
    assert_eq!(a.status, 401);

    let mut keyed = 0;
    let mut lwa_clients = 0;
    let mut admin_routes = 0;
    for &(method, path, access) in lwa_server::ROUTES {
        let url = concrete(path, &id);
        let is_compat = match access {
            Access::Public => continue,
            Access::Admin => {
                admin_routes += 1;
                admin_token_refusals(&app, &mut seen, method, &url, valid_body(method, path)).await;
                continue;
            }
            Access::LwaClient => {
                lwa_clients += 1;
                lwa_client_credentials(&app, &mut seen, method, &url, &id, &revoked).await;
                continue;
            }
            Access::TenantKey => false,
            Access::CompatKey => true,
        };
        keyed += 1;
        let body = valid_body(method, path);
        let missing = if is_compat {
            compat("missing API key: send Authorization: Bearer <key> or x-adb-access-token: <key>")
        } else {
            v1(
                "unauthorized",
                "missing API key: send Authorization: Bearer <key>",
            )
        };
        let invalid = shaped(path, "unauthorized", "invalid or revoked API key");
        let with_body = |r: RequestBuilder| match &body {
            Some(b) => r.json(b),
            None => r,
        };
        let wrong_secret = format!("lwak_{real_id}_{}", "0".repeat(64));
        let mut cases: Vec<(&str, RequestBuilder, &Value)> = vec![
            ("no key", with_body(request(&app, method, &url)), &missing),
            (
                "empty bearer",
                with_body(request(&app, method, &url).header("authorization", "Bearer ")),
                &missing,
            ),
            (
                "basic auth",
                with_body(request(&app, method, &url).header("authorization", "Basic dXNlcjpwYXNz")),
                &missing,
            ),
            (
                "Bearer nope",
                with_body(request(&app, method, &url).bearer_auth("nope")),
                &invalid,
            ),
            (
                "lwak_ without secret",
                with_body(request(&app, method, &url).bearer_auth(format!("lwak_{real_id}_"))),
                &invalid,
            ),
            (
                "unknown key id",
                with_body(
                    request(&app, method, &url)
                        .bearer_auth(format!("lwak_ffffffffffffffff_{}", "0".repeat(64))),
                ),
                &invalid,
            ),
            (
                "right id, wrong secret",
                with_body(request(&app, method, &url).bearer_auth(&wrong_secret)),
                &invalid,
            ),
            (
                "revoked key",
                with_body(request(&app, method, &url).bearer_auth(&revoked)),
                &invalid,
            ),
            (
                "key with a typo'd scheme",
                with_body(request(&app, method, &url).header("authorization", format!("Bearr {}", app.key))),
                &missing,
            ),
        ];
        if is_compat {
            cases.push((
                "x-adb-access-token nope",
                with_body(request(&app, method, &url).header("x-adb-access-token", "nope")),
                &invalid,
            ));
            cases.push((
                "x-adb-access-token revoked",
                with_body(request(&app, method, &url).header("x-adb-access-token", &revoked)),
                &invalid,
            ));
        } else {
            // `/v1` takes only Bearer: the seed's header with a good key is no key at all.
            cases.push((
                "x-adb-access-token on /v1",
                with_body(request(&app, method, &url).header("x-adb-access-token", &app.key)),
                &missing,
            ));
        }
        for (what, req, expected) in cases {
            let a = seen.send(format!("{method} {path}: {what}"), req).await;
            assert_eq!(a.status, 401, "{method} {path}: {what}: {}", a.text);
            assert_eq!(&a.json(), expected, "{method} {path}: {what}");
        }
    }
    assert_eq!(keyed, 18, "every keyed route was tried");
    assert_eq!(admin_routes, 3, "every operator route was tried");
    assert_eq!(
        lwa_clients, 1,
        "every route with LWA client credentials was tried"
    );
    // Nothing reached the connection.
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, "active");
    assert_eq!(c.name, None);
    seen.finish();
}

#[tokio::test]
async fn every_json_route_refuses_bad_bodies() {
    // Served on this test's own thread: a body over the limit is refused unread and its
    // connection closed, and with the server on a thread of its own the client may still be
    // writing that body (or reuse the connection) when the close arrives, so reqwest reports a
    // send error instead of the answer. What is checked here is the answer to each bad body.
    let app = spawn_with(|s| s.http_threads = 0).await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1BADBODIES").await;
    let before = app.state.store.connection(&id).await.unwrap().unwrap();
    let limit = 1024 * 1024;

    let mut json_routes = 0;
    for &(method, path, _) in lwa_server::ROUTES {
        let url = concrete(path, &id);
        // (wrong types, its message or per-line answer; unknown field, its message)
        let (wrong, wrong_message, unknown, unknown_message): (Value, &str, Value, Option<&str>) = match (
            method, path,
        ) {
            ("GET", _) | ("DELETE", _) => continue,
            ("POST", "/api/claim-code") => (
                json!({"code": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a string at line 1 column 9",
                // The seed's request takes extra fields: the code is then checked.
                json!({"code": "nope", "extra": 1}),
                None,
            ),
            ("POST", "/v1/claims") => (
                json!({"code": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a string at line 1 column 9",
                json!({"code": "nope", "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected one of `code`, `name`, `callback_url` at line 1 column 22",
                ),
            ),
            ("POST", "/v1/connect-links") => (
                json!({"state": []}),
                "the request body has a wrong or missing field: invalid type: sequence, expected a string at line 1 column 9",
                json!({"region": "na", "state": "s", "redirect_url": RETURN, "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected one of `api`, `region`, `marketplace`, `state`, `redirect_url`, `token_secret`, `account_type`, `expires_in` at line 1 column 8",
                ),
            ),
            ("POST", "/v1/connections/import") => (
                json!([{"region": "na", "refresh_token": 5}]),
                "a connection has a wrong or missing field: invalid type: integer `5`, expected a string",
                json!([{"region": "na", "refresh_token": "Atzr|x", "extra": 1}]),
                Some(
                    "a connection has a wrong or missing field: unknown field `extra`, expected one of `api`, `region`, `marketplace`, `refresh_token`, `selling_partner_id`, `account_type`, `name`, `callback_url`, `token_secret`",
                ),
            ),
            ("PATCH", "/v1/connections/{id}") => (
                json!({"name": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a string at line 1 column 9",
                json!({"name": "x", "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected `name` or `callback_url` at line 1 column 8",
                ),
            ),
            ("POST", "/v1/connections/{id}/reauthorize-link") => (
                json!({"redirect_url": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a string at line 1 column 17",
                json!({"redirect_url": RETURN, "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected one of `state`, `redirect_url`, `token_secret`, `expires_in` at line 1 column 8",
                ),
            ),
            ("POST", "/v1/connections/{id}/restricted-data-token") => (
                json!({"restrictedResources": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a sequence at line 1 column 24",
                json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}], "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected `restrictedResources` or `targetApplication` at line 1 column 8",
                ),
            ),
            ("POST", "/v1/grantless-tokens") => (
                json!({"scope": 5}),
                "the request body has a wrong or missing field: data did not match any variant of untagged enum Scopes at line 1 column 11",
                json!({"scope": NOTIFICATIONS, "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected `scope` at line 1 column 8",
                ),
            ),
            ("PUT", "/v1/webhook") => (
                json!({"url": 5}),
                "the request body has a wrong or missing field: invalid type: integer `5`, expected a string at line 1 column 8",
                json!({"url": "https://tenant.example.com/hooks", "extra": 1}),
                Some(
                    "the request body has a wrong or missing field: unknown field `extra`, expected `url` at line 1 column 8",
                ),
            ),
            // No body: rotating the secret and retrying a delivery take none.
            ("POST", "/v1/webhook/rotate-secret")
            | ("POST", "/v1/webhook/deliveries/{delivery_id}/retry") => continue,
            // No JSON body: the access token takes none (`the_vending_routes_refuse_bad_input`
            // shows a body is ignored), and `/auth/o2/token` speaks LWA
            // (`the_token_endpoint_answers_bad_bodies_in_lwas_shape`).
            ("POST", "/v1/connections/{id}/access-token") | ("POST", "/auth/o2/token") => continue,
            // The operator's route: bad bodies with the admin token in
            // `secrets::the_notification_endpoint_refuses_bad_input`.
            ("POST", "/admin/api/app-secret-notifications") => continue,
            other => panic!("bad_input.rs does not know the body of {other:?}: teach it"),
        };
        json_routes += 1;
        let import = path == "/v1/connections/import";
        let label = |what: &str| format!("{method} {path}: {what}");
        let post = |body: &str, content_type: Option<&str>| {
            let mut r = request(&app, method, &url)
                .bearer_auth(&app.key)
                .body(body.to_owned());
            if let Some(ct) = content_type {
                r = r.header("content-type", ct);
            }
            r
        };

        // Malformed JSON: cut after the first field's name (a field the route knows, so the
        // syntax error is what is reported).
        let first = match wrong.as_object() {
            Some(o) => o.keys().next().unwrap().clone(),
            None => "region".to_owned(),
        };
        let malformed = format!("{{\"{first}\":");
        let a = seen
            .send(label("malformed"), post(&malformed, Some("application/json")))
            .await;
        assert_eq!(a.status, 400, "{}", label("malformed"));
        assert_eq!(
            a.json(),
            shaped(
                path,
                "invalid_json",
                &format!(
                    "the request body is not valid JSON: EOF while parsing a value at line 1 column {}",
                    malformed.len()
                )
            ),
            "{}",
            label("malformed")
        );

        // Wrong types.
        let a = seen
            .send(
                label("wrong types"),
                post(&wrong.to_string(), Some("application/json")),
            )
            .await;
        assert_eq!(a.status, 400, "{}: {}", label("wrong types"), a.text);
        if import {
            assert_eq!(
                a.json(),
                json!({"imported": 0, "failed": 1, "results": [{"line": 1, "error": {"code": "invalid_json", "message": wrong_message}}]})
            );
        } else {
            assert_eq!(
                a.json(),
                shaped(path, "invalid_json", wrong_message),
                "{}",
                label("wrong types")
            );
        }

        // Unknown fields.
        let a = seen
            .send(
                label("unknown field"),
                post(&unknown.to_string(), Some("application/json")),
            )
            .await;
        assert_eq!(a.status, 400, "{}: {}", label("unknown field"), a.text);
        match (unknown_message, import) {
            (Some(message), true) => assert_eq!(
                a.json(),
                json!({"imported": 0, "failed": 1, "results": [{"line": 1, "error": {"code": "invalid_json", "message": message}}]})
            ),
            (Some(message), false) => assert_eq!(
                a.json(),
                v1("invalid_json", message),
                "{}",
                label("unknown field")
            ),
            (None, _) => assert_eq!(a.json(), compat("Invalid or already used claim code")),
        }

        // No content type, text/plain, and a form: 415.
        let unsupported = if import {
            v1(
                "unsupported_media_type",
                "send application/json (an array or {\"connections\": [...]}) or application/x-ndjson",
            )
        } else {
            shaped(
                path,
                "unsupported_media_type",
                "send a JSON body with Content-Type: application/json",
            )
        };
        let valid = valid_body(method, path).unwrap().to_string();
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let a = seen
                .send(label(&format!("content type {ct:?}")), post(&valid, ct))
                .await;
            assert_eq!(a.status, 415, "{}: {ct:?}: {}", label("415"), a.text);
            assert_eq!(a.json(), unsupported, "{}: {ct:?}", label("415"));
        }

        // An empty body.
        let a = seen
            .send(label("empty"), post("", Some("application/json")))
            .await;
        assert_eq!(a.status, 400, "{}", label("empty"));
        assert_eq!(
            a.json(),
            shaped(
                path,
                "invalid_json",
                "the request body is empty; send a JSON object"
            ),
            "{}",
            label("empty")
        );

        // A body over the 1 MiB default limit, whatever its content type.
        let huge = format!("{{\"code\":\"{}\"}}", "a".repeat(limit));
        for ct in ["application/json", "text/plain"] {
            let a = seen
                .send(label(&format!("over 1 MiB, {ct}")), post(&huge, Some(ct)))
                .await;
            if ct == "text/plain" && a.status == 415 {
                // The type is checked before the body is read: also fine.
                continue;
            }
            assert_eq!(a.status, 413, "{}: {ct}: {}", label("413"), a.text);
            if import {
                // The JSON shape is checked by the ignored
                // `an_oversized_import_gets_the_json_413` (a bug).
                continue;
            }
            assert_eq!(
                a.json(),
                shaped(path, "body_too_large", "the request body is too large"),
                "{}",
                label("413")
            );
        }
    }
    assert_eq!(json_routes, 9, "every JSON route was tried");
    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(after.name, before.name);
    assert_eq!(after.refresh_token, before.refresh_token);
    seen.finish();
}

#[tokio::test]
async fn the_import_answers_each_line_and_refuses_an_oversized_batch() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let import = |body: String, ct: &str| {
        request(&app, "POST", "/v1/connections/import")
            .bearer_auth(&app.key)
            .header("content-type", ct)
            .body(body)
    };
    let refreshes = || async { app.fake.control().counters().await.lwa_calls("refresh_token") };

    // Not an LWA refresh token: refused without calling Amazon.
    let calls = refreshes().await;
    let a = seen
        .send(
            "not a token",
            import(
                json!([{"region": "na", "refresh_token": "nope"}]).to_string(),
                "application/json",
            ),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"imported": 0, "failed": 1, "results": [{"line": 1, "error": {"code": "invalid_refresh_token", "message": "refresh_token must be an LWA refresh token (Atzr|…)"}}]})
    );
    assert_eq!(refreshes().await, calls);

    // A token Amazon does not know: one refresh, invalid_grant.
    let a = seen
        .send(
            "unknown token",
            import(
                json!({"connections": [{"region": "na", "refresh_token": "Atzr|unknown"}]}).to_string(),
                "application/json",
            ),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"imported": 0, "failed": 1, "results": [{"line": 1, "error": {"code": "invalid_grant", "message": "Amazon refused this refresh token (revoked, expired, or issued to another app)"}}]})
    );
    assert_eq!(refreshes().await, calls + 1);

    // Every other per-line check, in one batch.
    let a = seen
        .send(
            "per-line checks",
            import(
                json!([
                    {"refresh_token": "Atzr|x"},
                    {"region": "mars", "refresh_token": "Atzr|x"},
                    {"marketplace": "XX", "refresh_token": "Atzr|x"},
                    {"region": "na", "api": "soap", "refresh_token": "Atzr|x"},
                    {"region": "na", "account_type": "king", "refresh_token": "Atzr|x"},
                    {"region": "na", "callback_url": "ftp://x", "refresh_token": "Atzr|x"},
                    {"region": "na", "token_secret": "short", "refresh_token": "Atzr|x"},
                    {"region": "na", "refresh_token": format!("Atzr|{}", "x".repeat(2048))},
                    {"region": "na"},
                    "a string",
                ])
                .to_string(),
                "application/json",
            ),
        )
        .await;
    assert_eq!(a.status, 400);
    let codes: Vec<Value> = a.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"]["code"].clone())
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_region",
            "invalid_region",
            "invalid_marketplace",
            "invalid_api",
            "invalid_account_type",
            "invalid_callback_url",
            "invalid_token_secret",
            "invalid_refresh_token",
            "invalid_json",
            "invalid_json",
        ]
    );
    assert_eq!(a.json()["failed"], 10);
    assert_eq!(refreshes().await, calls + 1, "no refresh for a refused line");

    // NDJSON: one good line and one bad → 200, imported 1, failed 1.
    let good = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1NDJSONGOOD")
        .await;
    let ndjson = format!(
        "{}\n{}\n",
        json!({"region": "na", "refresh_token": good, "selling_partner_id": "A1NDJSONGOOD"}),
        json!({"region": "na", "refresh_token": "Atzr|unknown"})
    );
    let a = seen.send("ndjson", import(ndjson, "application/x-ndjson")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(body["imported"], 1);
    assert_eq!(body["failed"], 1);
    assert_eq!(body["results"][0]["line"], 1);
    assert_eq!(body["results"][0]["created"], true);
    assert_eq!(
        body["results"][0]["connection"]["selling_partner_id"],
        "A1NDJSONGOOD"
    );
    assert_eq!(
        body["results"][1],
        json!({"line": 2, "error": {"code": "invalid_grant", "message": "Amazon refused this refresh token (revoked, expired, or issued to another app)"}})
    );
    // A malformed NDJSON line is that line's error only.
    let a = seen
        .send(
            "ndjson malformed line",
            import("{\"region\":\n".to_owned(), "application/x-ndjson"),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"imported": 0, "failed": 1, "results": [{"line": 1, "error": {"code": "invalid_json", "message": "the request body is not valid JSON: EOF while parsing a value at line 1 column 10"}}]})
    );

    // Nothing to import.
    for (body, ct) in [
        ("[]", "application/json"),
        ("{\"connections\": []}", "application/json"),
        ("\n\n", "application/x-ndjson"),
        ("", "application/x-ndjson"),
    ] {
        let a = seen
            .send(format!("empty import {body:?}"), import(body.into(), ct))
            .await;
        assert_eq!(a.status, 400, "{body:?}");
        assert_eq!(
            a.json(),
            v1("empty_import", "no connections to import"),
            "{body:?}"
        );
    }
    // Neither an array nor {"connections": [...]}.
    let a = seen
        .send(
            "single object",
            import(
                json!({"region": "na", "refresh_token": "Atzr|x"}).to_string(),
                "application/json",
            ),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        v1(
            "invalid_json",
            "the request body has a wrong or missing field: data did not match any variant of untagged enum Batch"
        )
    );
    // Not UTF-8.
    let a = seen
        .send(
            "ndjson not utf-8",
            request(&app, "POST", "/v1/connections/import")
                .bearer_auth(&app.key)
                .header("content-type", "application/x-ndjson")
                .body(vec![0xff, 0xfe, b'\n']),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json(), v1("invalid_body", "the body is not UTF-8"));
    // More than 1000 lines.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"region": "na", "refresh_token": "nope"}))
        .collect();
    let a = seen
        .send(
            "1001 lines",
            import(Value::Array(many).to_string(), "application/json"),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json(), v1("too_many", "at most 1000 connections per request"));
    assert_eq!(refreshes().await, calls + 3);
    seen.finish();
}

#[tokio::test]
async fn an_oversized_import_gets_the_json_413() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let line = json!({"region": "na", "refresh_token": "nope"}).to_string();
    let huge_ndjson = format!("{line}\n").repeat(1024 * 1024 / line.len() + 10);
    let huge_json = format!(
        "[{}]",
        vec![line.as_str(); 1024 * 1024 / line.len() + 10].join(",")
    );
    for (body, ct) in [
        (huge_ndjson, "application/x-ndjson"),
        (huge_json, "application/json"),
    ] {
        let a = seen
            .send(
                format!("import over 1 MiB as {ct}"),
                request(&app, "POST", "/v1/connections/import")
                    .bearer_auth(&app.key)
                    .header("content-type", ct)
                    .body(body),
            )
            .await;
        assert_eq!(a.status, 413, "{ct}: {}", a.text);
        assert_eq!(
            a.json(),
            v1("body_too_large", "the request body is too large"),
            "{ct}"
        );
    }
    seen.finish();
}

#[tokio::test]
async fn connection_list_queries_are_checked() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let cases: &[(&str, &str, &str)] = &[
        (
            "limit=abc",
            "invalid_query",
            "bad query parameters: invalid digit found in string",
        ),
        (
            "limit=-1",
            "invalid_query",
            "bad query parameters: invalid digit found in string",
        ),
        (
            "limit=99999999999",
            "invalid_query",
            "bad query parameters: number too large to fit in target type",
        ),
        ("limit=0", "invalid_limit", "limit must be 1 to 1000"),
        ("limit=1001", "invalid_limit", "limit must be 1 to 1000"),
        (
            "status=bogus",
            "invalid_status",
            "status must be active, needs_reauth or disconnected",
        ),
        (
            "status=",
            "invalid_status",
            "status must be active, needs_reauth or disconnected",
        ),
        ("region=mars", "invalid_region", "region must be na, eu or fe"),
        ("api=soap", "invalid_api", "api must be sp-api or ads"),
        (
            "bogus=1",
            "invalid_query",
            "bad query parameters: unknown field `bogus`, expected one of `status`, `api`, `region`, `limit`, `after`",
        ),
    ];
    for (q, code, message) in cases {
        let a = seen
            .send(
                format!("GET /v1/connections?{q}"),
                request(&app, "GET", &format!("/v1/connections?{q}")).bearer_auth(&app.key),
            )
            .await;
        assert_eq!(a.status, 400, "{q}: {}", a.text);
        assert_eq!(a.json(), v1(code, message), "{q}");
    }
    // The key is checked before the query.
    let a = seen
        .send(
            "bad query without key",
            request(&app, "GET", "/v1/connections?limit=abc"),
        )
        .await;
    assert_eq!(a.status, 401);
    // Odd but valid.
    for q in [
        "limit=1000",
        "after=%FF%FE",
        "after=",
        "region=us-east-1",
        "api=ADS",
    ] {
        let a = seen
            .send(
                format!("GET /v1/connections?{q}"),
                request(&app, "GET", &format!("/v1/connections?{q}")).bearer_auth(&app.key),
            )
            .await;
        assert_eq!(a.status, 200, "{q}: {}", a.text);
        assert_eq!(a.json(), json!({"data": [], "next_after": null}), "{q}");
    }
    seen.finish();
}

#[tokio::test]
async fn browser_pages_answer_garbage_with_pages_and_no_redirect() {
    let app = spawn_with(|s| {
        s.trusted_proxies = vec![lwa_server::config::TrustedProxy::parse("127.0.0.1").unwrap()];
    })
    .await;
    let mut seen = Seen::default();
    let mut client = 0u32;
    let mut get = |path: String| {
        client += 1;
        request(&app, "GET", &path).header("x-forwarded-for", format!("10.77.0.{client}"))
    };
    let page = |message: &str| lwa_server::error::page("Something went wrong", message).0;

    // /auth/initialize: 10 KB of garbage, with and without a state.
    let garbage: String = (0..10 * 1024)
        .map(|i| ['%', 'z', '&', '=', ';', '+', '\u{7f}', 'Q', '#'][i % 9])
        .filter(|c| *c != '#')
        .collect::<String>();
    let encoded_garbage: String = url::form_urlencoded::byte_serialize(garbage.as_bytes()).collect();
    for (what, query, message) in [
        (
            "raw garbage",
            garbage.replace('\u{7f}', "%7F"),
            "state is required",
        ),
        (
            "garbage values",
            format!("state={encoded_garbage}&tenantId={encoded_garbage}"),
            "Tenant data not found",
        ),
        (
            "garbage everywhere but the tenant",
            format!(
                "state=s&tenantId={}&marketplace_region={encoded_garbage}&amazonTokenSecret={encoded_garbage}",
                app.tenant_id
            ),
            "marketplace_region is required",
        ),
        (
            "a huge secret",
            format!(
                "state=s&tenantId={}&marketplace_region=na&amazonTokenSecret={encoded_garbage}",
                app.tenant_id
            ),
            "amazonTokenSecret must be 32-64 characters",
        ),
        (
            "a garbage redirect",
            format!(
                "state=s&tenantId={}&marketplace_region=na&amazonTokenSecret={}&sellerRedirectUrl={encoded_garbage}",
                app.tenant_id,
                "s".repeat(40)
            ),
            "sellerRedirectUrl must start with redirectOrigin",
        ),
        (
            "a bad api after the seed's checks",
            format!(
                "state=s&tenantId={}&marketplace_region=na&amazonTokenSecret={}&sellerRedirectUrl={}&api=soap",
                app.tenant_id,
                "s".repeat(40),
                url::form_urlencoded::byte_serialize(RETURN.as_bytes()).collect::<String>()
            ),
            "api must be sp-api or ads",
        ),
    ] {
        assert!(
            query.len() >= 10 * 1000 || what.starts_with("a bad api"),
            "{what}"
        );
        let a = seen
            .send(
                format!("initialize {what}"),
                get(format!("/auth/initialize?{query}")),
            )
            .await;
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert_eq!(a.location, None);
        assert_eq!(a.json(), compat(message), "{what}");
    }

    // /auth/redirect: no state, an empty one, garbage ones.
    let no_state = "This page is where Amazon sends you back after you authorize, and the request has no state. \
                    Start the connection again from the application you came from.";
    let unknown = "This authorization is unknown to the broker. Start the connection again from the \
                   application you came from.";
    for (query, message) in [
        (String::new(), no_state),
        ("?state=".to_owned(), no_state),
        ("?error=access_denied".to_owned(), no_state),
        ("?state=nope".to_owned(), unknown),
        (
            format!("?state={encoded_garbage}&spapi_oauth_code=x&selling_partner_id=A"),
            unknown,
        ),
        (format!("?{}", garbage.replace('\u{7f}', "%7F")), no_state),
    ] {
        let a = seen
            .send(
                format!("redirect {query:.40}"),
                get(format!("/auth/redirect{query}")),
            )
            .await;
        assert_eq!(a.status, 400, "{query:.60}");
        assert_eq!(a.location, None);
        assert!(a.is_html(), "{}", a.content_type);
        assert_eq!(a.text, page(message), "{query:.60}");
    }

    // /auth/connect/<garbage>: an HTML 404, never a redirect.
    let unknown_link =
        "This connection link is unknown or was already used. Ask the application for a new one.";
    for token in [
        "garbage".to_owned(),
        "a".repeat(5000),
        "%00%01".to_owned(),
        "..%2F..%2Fetc".to_owned(),
        "%3Cscript%3E".to_owned(),
    ] {
        let a = seen
            .send(
                format!("connect {token:.40}"),
                get(format!("/auth/connect/{token}")),
            )
            .await;
        assert_eq!(a.status, 404, "{token:.60}: {}", a.text);
        assert_eq!(a.location, None);
        assert!(a.is_html(), "{token:.60}: {}", a.content_type);
        assert_eq!(
            a.text,
            lwa_server::error::page("Something went wrong", unknown_link).0
        );
    }

    // /auth/login: garbage.
    let login_usage =
        "This is the broker's Login URI: Amazon opens it with amazon_callback_uri and amazon_state.";
    let not_amazon = "amazon_callback_uri is not an Amazon authorization URL.";
    for (query, message) in [
        (String::new(), login_usage),
        (format!("?{}", garbage.replace('\u{7f}', "%7F")), login_usage),
        ("?amazon_callback_uri=x".to_owned(), login_usage),
        (
            format!("?amazon_callback_uri={encoded_garbage}&amazon_state=s"),
            not_amazon,
        ),
        (
            "?amazon_callback_uri=javascript:alert(1)&amazon_state=s".to_owned(),
            not_amazon,
        ),
        (
            format!(
                "?amazon_callback_uri={}&amazon_state=s",
                url::form_urlencoded::byte_serialize(
                    format!(
                        "{}/sellercentral.amazon.com/apps/authorize/confirm/../../evil",
                        app.fake.base_url()
                    )
                    .as_bytes()
                )
                .collect::<String>()
            ),
            not_amazon,
        ),
    ] {
        let a = seen
            .send(format!("login {query:.40}"), get(format!("/auth/login{query}")))
            .await;
        assert_eq!(a.status, 400, "{query:.60}: {}", a.text);
        assert_eq!(a.location, None);
        assert!(a.is_html());
        assert_eq!(a.text, page(message), "{query:.60}");
    }
    seen.finish();
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1METHODS").await;
    let no_route = v1("not_found", "no such route");
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/nope",
        "/v1/connections/x/y",
        "/v1/connections/x/reauthorize-link/z",
        "/api/claim-code/x",
        "/auth",
        "/auth/connect",
        "/auth/connect/a/b",
        "/sandbox/done",
        "/healthz/",
        "/V1/CONNECTIONS",
        "/v1/connections/x/access-token/y",
        "/v1/connections/x/restricted-data-token/y",
        "/v1/grantless-tokens/x",
        "/v1/audit/x",
        "/auth/o2",
        "/auth/o2/token/x",
        "/auth/o2/tokens",
    ] {
        for key in [None, Some(&app.key)] {
            let mut r = request(&app, "GET", path);
            if let Some(key) = key {
                r = r.bearer_auth(key);
            }
            let a = seen.send(format!("GET {path}"), r).await;
            assert_eq!(a.status, 404, "{path}: {}", a.text);
            assert_eq!(a.json(), no_route, "{path}");
        }
    }

    // Every route's path with a method it does not take.
    let not_allowed = v1("method_not_allowed", "this route does not take that method");
    for &(_, path, _) in lwa_server::ROUTES {
        let url = concrete(path, &id);
        let taken: Vec<&str> = lwa_server::ROUTES
            .iter()
            .filter(|r| r.1 == path)
            .map(|r| r.0)
            .collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if taken.contains(&method) {
                continue;
            }
            let a = seen
                .send(
                    format!("{method} {path}"),
                    request(&app, method, &url).bearer_auth(&app.key).json(&json!({})),
                )
                .await;
            assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
            assert_eq!(a.json(), not_allowed, "{method} {path}");
        }
    }
    // The connection survived every wrong method.
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, "active");
    seen.finish();
}

#[tokio::test]
async fn path_segments_that_are_not_utf8_get_our_error_shapes() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let api = seen
        .send(
            "GET /v1/connections/%FF",
            request(&app, "GET", "/v1/connections/%FF").bearer_auth(&app.key),
        )
        .await;
    let page = seen
        .send("GET /auth/connect/%FF", request(&app, "GET", "/auth/connect/%FF"))
        .await;
    // The vending routes name the connection in the path too.
    for path in [
        "/v1/connections/%FF/access-token",
        "/v1/connections/%FF/restricted-data-token",
    ] {
        let a = seen
            .send(
                format!("POST {path}"),
                request(&app, "POST", path)
                    .bearer_auth(&app.key)
                    .json(&rdt_body("/orders/v0/orders")),
            )
            .await;
        assert_eq!(a.status, 404, "{path}: {}", a.text);
        assert_eq!(
            a.json(),
            v1("not_found", "no such resource: the path is not valid"),
            "{path}"
        );
    }
    seen.finish();
    assert!(
        api.status == 404 && api.content_type.starts_with("application/json"),
        "{api:?} / {page:?}"
    );
    assert_eq!(api.json()["error"]["code"], "not_found");
    assert_eq!(page.status, 404, "{}", page.text);
    assert!(page.is_html(), "{}: {}", page.content_type, page.text);
}

#[tokio::test]
async fn the_token_endpoint_answers_bad_bodies_in_lwas_shape() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1LWABODIES").await;
    let handle = format!("lwah_{id}");
    let (key_id, key_secret) = lwa_server::auth::split_key(&app.key).unwrap();
    let creds = [("client_id", key_id), ("client_secret", key_secret)];
    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json";
    let raw = |path: &str, body: String, content_type: Option<&str>| {
        let mut r = request(&app, "POST", path).body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r
    };
    let post = |body: String, content_type: Option<&str>| raw("/auth/o2/token", body, content_type);
    // A form body: the pairs, then the good client credentials.
    let form = |pairs: &[(&str, &str)]| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs.iter().chain(creds.iter()) {
            s.append_pair(k, v);
        }
        s.finish()
    };
    // A JSON body: the object, plus the good client credentials.
    let json_body = |mut object: Value| {
        object["client_id"] = json!(key_id);
        object["client_secret"] = json!(key_secret);
        object.to_string()
    };
    let refresh = |token: &str| form(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
    let malformed_content_type =
        "Content-Type must be application/x-www-form-urlencoded or application/json".to_owned();
    let invalid_parameter = |name: &str| format!("The request has an invalid parameter : {name}");
    let unsupported = "The authorization grant type is not supported by the authorization server".to_owned();
    let long_name = "n".repeat(1000);
    let not_allowed_scope = format!(
        "scope \"sellingpartnerapi::migration\" is not one this broker hands out; allowed: {NOTIFICATIONS}"
    );
    let long_scope = "s".repeat(1000);
    let limit = 1024 * 1024;

    // Positive controls: a form with a charset, a JSON scope list, the capitalized path.
    for (what, req) in [
        (
            "form with a charset",
            post(
                refresh(&handle),
                Some("application/x-www-form-urlencoded;charset=UTF-8"),
            ),
        ),
        ("form without a content type", post(refresh(&handle), None)),
        (
            "json with a charset",
            post(
                json_body(json!({"grant_type": "refresh_token", "refresh_token": handle})),
                Some("application/json; charset=utf-8"),
            ),
        ),
        (
            "json, null parameters are absent",
            post(
                json_body(json!({"grant_type": "refresh_token", "refresh_token": handle, "scope": null})),
                Some(JSON),
            ),
        ),
        (
            "json scope as a list",
            post(
                json_body(json!({"grant_type": "client_credentials", "scope": [NOTIFICATIONS]})),
                Some(JSON),
            ),
        ),
        (
            "/auth/O2/token",
            raw("/auth/O2/token", refresh(&handle), Some(FORM)),
        ),
    ] {
        let a = seen.send(format!("token endpoint: {what}"), req).await;
        assert_lwa_token(&a, what);
    }

    let grant = |grant_type: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("grant_type", grant_type)];
        pairs.extend_from_slice(extra);
        post(form(&pairs), Some(FORM))
    };
    let json_grant = |object: Value| post(json_body(object), Some(JSON));
    let refresh_form = |token: &str| post(refresh(token), Some(FORM));
    let short_secret = format!("{handle}.c2hvcnQ");
    let huge_handle = format!("lwah_{}", "c".repeat(100 * 1024));
    let mistyped_secret = json!({
        "grant_type": "refresh_token",
        "refresh_token": handle,
        "client_id": key_id,
        "client_secret": 5,
    });
    let long_scope_refused = format!(
        "scope \"{}\" is not one this broker hands out; allowed: {NOTIFICATIONS}",
        "s".repeat(100)
    );
    let twice = "The request has a parameter more than once".to_owned();
    let blank_scope = "give a scope, such as sellingpartnerapi::notifications".to_owned();
    let too_large = "The request is too large".to_owned();
    // (status, error, description, the requests that get it)
    type Group = (u16, &'static str, String, Vec<(&'static str, RequestBuilder)>);
    let groups: Vec<Group> = vec![
        (
            400,
            "invalid_request",
            missing("grant_type"),
            vec![
                ("empty, no content type", post(String::new(), None)),
                ("empty form", post(String::new(), Some(FORM))),
                ("percent garbage", post("%zz=%%&&%=".into(), Some(FORM))),
                ("json grant_type null", json_grant(json!({"grant_type": null}))),
                (
                    "no grant_type",
                    post(form(&[("refresh_token", &handle)]), Some(FORM)),
                ),
                ("empty grant_type", grant("", &[("refresh_token", &handle)])),
                (
                    "/auth/O2/token, empty",
                    raw("/auth/O2/token", String::new(), None),
                ),
            ],
        ),
        // As Amazon: a JSON content type over anything but an object fails client
        // authentication.
        (
            401,
            "invalid_client",
            INVALID_CLIENT.into(),
            vec![
                ("empty json", post(String::new(), Some(JSON))),
                (
                    "malformed json",
                    post(
                        format!("{{\"grant_type\":\"refresh_token\",\"client_id\":\"{key_id}\""),
                        Some(JSON),
                    ),
                ),
                ("json array", post("[]".into(), Some(JSON))),
                ("json string", post("\"refresh_token\"".into(), Some(JSON))),
                ("a form sent as json", post(refresh(&handle), Some(JSON))),
            ],
        ),
        // Mistyped JSON parameters: named (40 characters at most), never echoed.
        (
            400,
            "invalid_request",
            invalid_parameter("grant_type"),
            vec![(
                "json grant_type a number",
                json_grant(json!({"grant_type": 5, "refresh_token": handle})),
            )],
        ),
        (
            400,
            "invalid_request",
            invalid_parameter("refresh_token"),
            vec![
                (
                    "json refresh_token an object",
                    json_grant(json!({"grant_type": "refresh_token", "refresh_token": {"h": handle}})),
                ),
                (
                    "json refresh_token a boolean",
                    json_grant(json!({"grant_type": "refresh_token", "refresh_token": true})),
                ),
                (
                    "client_credentials with a refresh_token",
                    grant(
                        "client_credentials",
                        &[("scope", NOTIFICATIONS), ("refresh_token", &handle)],
                    ),
                ),
            ],
        ),
        (
            400,
            "invalid_request",
            invalid_parameter("client_secret"),
            vec![(
                "json client_secret a number",
                post(mistyped_secret.to_string(), Some(JSON)),
            )],
        ),
        (
            400,
            "invalid_request",
            invalid_parameter(&"n".repeat(40)),
            vec![(
                "json with a 1000-character parameter name",
                json_grant(json!({"grant_type": "refresh_token", long_name.clone(): 1})),
            )],
        ),
        (
            400,
            "invalid_request",
            twice,
            vec![
                (
                    "grant_type twice",
                    post(
                        format!("grant_type=refresh_token&{}", refresh(&handle)),
                        Some(FORM),
                    ),
                ),
                (
                    "client_secret twice",
                    post(format!("{}&client_secret=x", refresh(&handle)), Some(FORM)),
                ),
            ],
        ),
        (
            400,
            "invalid_request",
            malformed_content_type,
            vec![
                ("text/plain", post(refresh(&handle), Some("text/plain"))),
                (
                    "multipart",
                    post(refresh(&handle), Some("multipart/form-data; boundary=x")),
                ),
                ("application/xml", post("<x/>".into(), Some("application/xml"))),
                ("+json", post("{}".into(), Some("application/vnd.api+json"))),
            ],
        ),
        (
            400,
            "unsupported_grant_type",
            unsupported,
            vec![
                (
                    "password",
                    grant("password", &[("username", "u"), ("password", "p")]),
                ),
                (
                    "authorization_code",
                    grant("authorization_code", &[("code", "x")]),
                ),
                (
                    "REFRESH_TOKEN",
                    grant("REFRESH_TOKEN", &[("refresh_token", &handle)]),
                ),
            ],
        ),
        (
            400,
            "invalid_request",
            missing("refresh_token"),
            vec![
                ("no refresh_token", grant("refresh_token", &[])),
                ("empty refresh_token", refresh_form("")),
            ],
        ),
        (
            400,
            "invalid_request",
            invalid_parameter("scope"),
            vec![(
                "refresh_token with a scope",
                grant(
                    "refresh_token",
                    &[("refresh_token", &handle), ("scope", NOTIFICATIONS)],
                ),
            )],
        ),
        (
            400,
            "invalid_grant",
            INVALID_GRANT.into(),
            vec![
                ("an Amazon refresh token", refresh_form("Atzr|IwEBIreal-looking")),
                ("lwah_ alone", refresh_form("lwah_")),
                ("an unknown handle", refresh_form("lwah_conn_doesnotexist000000")),
                ("the bare connection id", refresh_form(&id)),
                (
                    "a secret part that is not base64",
                    refresh_form(&format!("{handle}.!!!")),
                ),
                (
                    "a secret part too short for a secret",
                    refresh_form(&short_secret),
                ),
                ("a 100 KB handle", refresh_form(&huge_handle)),
            ],
        ),
        (
            400,
            "invalid_request",
            missing("scope"),
            vec![("no scope", grant("client_credentials", &[]))],
        ),
        (
            400,
            "invalid_scope",
            blank_scope,
            vec![("a blank scope", grant("client_credentials", &[("scope", "   ")]))],
        ),
        (
            400,
            "invalid_scope",
            not_allowed_scope,
            vec![(
                "a scope not allowed",
                grant("client_credentials", &[("scope", "sellingpartnerapi::migration")]),
            )],
        ),
        (
            400,
            "invalid_scope",
            long_scope_refused,
            vec![(
                "a 1000-character scope, shown cut",
                grant("client_credentials", &[("scope", &long_scope)]),
            )],
        ),
        // Over the 1 MiB limit, either way.
        (
            413,
            "invalid_request",
            too_large,
            vec![
                (
                    "a form over 1 MiB",
                    post(
                        format!("{}&pad={}", refresh(&handle), "a".repeat(limit)),
                        Some(FORM),
                    ),
                ),
                (
                    "json over 1 MiB",
                    json_grant(json!({"grant_type": "refresh_token", "pad": "a".repeat(limit)})),
                ),
            ],
        ),
    ];
    let cases = groups
        .into_iter()
        .flat_map(|(status, error, description, requests)| {
            requests
                .into_iter()
                .map(move |(what, req)| (what, req, status, error, description.clone()))
        });
    for (what, req, status, error, description) in cases {
        let label = format!("token endpoint: {what}");
        let a = seen.send(label.clone(), req).await;
        assert_lwa(&a, status, error, &description, &label);
        assert!(!a.text.contains(key_secret), "{label}: the secret was echoed");
    }

    // A proxy-only key gets a stand-in instead of the Amazon token, and no grantless token.
    let proxy = lwa_server::admin::create_key(&app.state, &app.tenant_id, None, "proxy-only")
        .await
        .unwrap()
        .key
        .to_string();
    let (proxy_id, proxy_secret) = lwa_server::auth::split_key(&proxy).unwrap();
    let a = seen
        .send(
            "proxy-only key, refresh_token".to_owned(),
            request(&app, "POST", "/auth/o2/token").form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", handle.as_str()),
                ("client_id", proxy_id),
                ("client_secret", proxy_secret),
            ]),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let granted: Value = serde_json::from_str(&a.text).unwrap();
    assert!(granted["access_token"].as_str().unwrap().starts_with("lwas_"));
    assert!(!a.text.contains("Atza|"), "a proxy-only key saw an Amazon token");
    let a = seen
        .send(
            "proxy-only key, client_credentials".to_owned(),
            request(&app, "POST", "/auth/o2/token").form(&[
                ("grant_type", "client_credentials"),
                ("scope", NOTIFICATIONS),
                ("client_id", proxy_id),
                ("client_secret", proxy_secret),
            ]),
        )
        .await;
    assert_lwa(
        &a,
        400,
        "unauthorized_client",
        "Not authorized for requested operation: this key is proxy-only, and grantless calls do not go \
         through the proxy",
        "client_credentials",
    );

    // A disconnected connection's handle is the same invalid_grant as an unknown one.
    let r = request(&app, "DELETE", &format!("/v1/connections/{id}"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a = seen
        .send("disconnected handle", post(refresh(&handle), Some(FORM)))
        .await;
    assert_lwa(&a, 400, "invalid_grant", INVALID_GRANT, "disconnected handle");
    seen.finish();
}

#[tokio::test]
async fn the_vending_routes_refuse_bad_input() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1VENDBAD").await;
    let vend =
        |id: &str| request(&app, "POST", &format!("/v1/connections/{id}/access-token")).bearer_auth(&app.key);
    let rdt = |id: &str, body: &Value| {
        request(
            &app,
            "POST",
            &format!("/v1/connections/{id}/restricted-data-token"),
        )
        .bearer_auth(&app.key)
        .json(body)
    };
    let grantless = |body: &Value| {
        request(&app, "POST", "/v1/grantless-tokens")
            .bearer_auth(&app.key)
            .json(body)
    };

    // The access token takes no body: whatever is sent is ignored.
    for (what, req) in [
        ("no body", vend(&id)),
        ("a JSON body", vend(&id).json(&json!({"anything": [1, 2]}))),
        (
            "a text body",
            vend(&id).header("content-type", "text/plain").body("garbage"),
        ),
        (
            "a malformed JSON body",
            vend(&id).header("content-type", "application/json").body("{"),
        ),
        (
            "a token secret the connection does not need",
            vend(&id).header("x-amazon-token-secret", "s".repeat(40)),
        ),
        (
            "a malformed token secret it does not need",
            vend(&id).header("x-amazon-token-secret", "short"),
        ),
    ] {
        let a = seen.send(format!("access-token: {what}"), req).await;
        assert_eq!(a.status, 200, "{what}: {}", a.text);
        assert_eq!(a.cache_control.as_deref(), Some("no-store"), "{what}");
        assert!(a.json()["access_token"].as_str().unwrap().starts_with("Atza|"));
    }

    // Ids that are not the caller's connection: 404, the id (decoded) named.
    let long = "c".repeat(3000);
    for (raw, decoded) in [
        ("conn_doesnotexist000000", "conn_doesnotexist000000"),
        ("x", "x"),
        (long.as_str(), long.as_str()),
        ("conn%20with%20spaces", "conn with spaces"),
        ("..%2F..%2Fetc", "../../etc"),
        ("%00", "\0"),
        ("%3Cscript%3E", "<script>"),
    ] {
        let not_found = v1("not_found", &format!("no connection {decoded}"));
        let a = seen.send(format!("access-token for {raw:.40}"), vend(raw)).await;
        assert_eq!(a.status, 404, "{raw:.40}: {}", a.text);
        assert_eq!(a.json(), not_found, "{raw:.40}");
        let a = seen
            .send(
                format!("rdt for {raw:.40}"),
                rdt(raw, &rdt_body("/orders/v0/orders")),
            )
            .await;
        assert_eq!(a.status, 404, "{raw:.40}: {}", a.text);
        assert_eq!(a.json(), not_found, "{raw:.40}");
    }
    // The handle in place of the id is not an id.
    let handle = format!("lwah_{id}");
    let a = seen.send("access-token for a handle", vend(&handle)).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json(), v1("not_found", &format!("no connection {handle}")));

    // RDT bodies: each rule, exact.
    let resources = |r: Value| json!({"restrictedResources": r});
    let get = |path: &str| json!({"method": "GET", "path": path});
    let bad_path = |i: usize| {
        format!(
            "restrictedResources[{i}].path must be an SP-API path such as /orders/v0/orders/{{orderId}}/address"
        )
    };
    let bad_method = |i: usize| format!("restrictedResources[{i}].method must be GET, PUT, POST or DELETE");
    let count = "restrictedResources must list 1 to 50 resources".to_owned();
    let bad_target = "targetApplication must be an application id such as amzn1.sp.solution.…".to_owned();
    let fifty_one: Vec<Value> = (0..51).map(|i| get(&format!("/orders/v0/orders/{i}"))).collect();
    const ORDERS: &str = "/orders/v0/orders";
    let method = |m: &str| resources(json!([{"method": m, "path": ORDERS}]));
    let path = |p: &str| resources(json!([get(p)]));
    let elements = |e: Value| resources(json!([{"method": "GET", "path": ORDERS, "dataElements": e}]));
    let target = |t: Value| json!({"restrictedResources": [get(ORDERS)], "targetApplication": t});
    let not_an_element = |e: &str| {
        format!(
            "restrictedResources[0].dataElements: \"{e}\" is not buyerInfo, shippingAddress or buyerTaxInformation"
        )
    };
    let serde = |m: &str| format!("the request body has a wrong or missing field: {m}");
    // (code, message, the bodies that get it)
    let rdt_cases: Vec<(&str, String, Vec<Value>)> = vec![
        (
            "invalid_restricted_resources",
            count,
            vec![resources(json!([])), resources(Value::Array(fifty_one))],
        ),
        (
            "invalid_restricted_resources",
            bad_method(0),
            vec![method("PATCH"), method(""), method("get it")],
        ),
        (
            "invalid_restricted_resources",
            bad_method(1),
            vec![resources(json!([get(ORDERS), {"method": "HEAD", "path": "/x"}]))],
        ),
        (
            "invalid_restricted_resources",
            bad_path(0),
            vec![
                path("orders/v0/orders"),
                path(""),
                path("/orders/v0/../x"),
                path("/orders//v0"),
                path("/orders/v0/orders?x=1"),
                path("/orders/v0/orders#x"),
                path("/orders/v0/orders/ 1"),
                path("/orders/v0/orders/é"),
                path(&format!("/{}", "a".repeat(1024))),
            ],
        ),
        (
            "invalid_restricted_resources",
            bad_path(1),
            vec![resources(json!([get(ORDERS), get("https://evil.example.com/x")]))],
        ),
        (
            "invalid_restricted_resources",
            not_an_element("ssn"),
            vec![elements(json!(["ssn"]))],
        ),
        (
            "invalid_restricted_resources",
            not_an_element(&"x".repeat(40)),
            vec![elements(json!(["buyerInfo", "x".repeat(100)]))],
        ),
        (
            "invalid_target_application",
            bad_target,
            vec![
                target(json!("")),
                target(json!("a b")),
                target(json!("amzn1/x")),
                target(json!("a".repeat(201))),
            ],
        ),
        (
            "invalid_json",
            serde("missing field `restrictedResources` at line 1 column 2"),
            vec![json!({})],
        ),
        (
            "invalid_json",
            serde("invalid type: null, expected a sequence at line 1 column 27"),
            vec![json!({"restrictedResources": null})],
        ),
        (
            "invalid_json",
            serde("missing field `path` at line 1 column 40"),
            vec![resources(json!([{"method": "GET"}]))],
        ),
        (
            "invalid_json",
            serde("invalid type: integer `5`, expected a string at line 1 column 35"),
            vec![resources(json!([{"method": 5, "path": ORDERS}]))],
        ),
        (
            "invalid_json",
            serde("invalid type: string, expected a sequence at line 1 column 51"),
            vec![elements(json!("buyerInfo"))],
        ),
        (
            "invalid_json",
            serde("invalid type: integer `5`, expected a string at line 1 column 90"),
            vec![target(json!(5))],
        ),
        (
            "invalid_json",
            "the request body must be a JSON object".to_owned(),
            vec![json!([get(ORDERS)])],
        ),
    ];
    let rdt_cases: Vec<(Value, &str, String)> = rdt_cases
        .into_iter()
        .flat_map(|(code, message, bodies)| bodies.into_iter().map(move |b| (b, code, message.clone())))
        .collect();
    for (body, code, message) in &rdt_cases {
        // The body is checked before the id: the same 400 for the caller's connection and any other.
        for target in [id.as_str(), "conn_doesnotexist000000"] {
            let a = seen.send(format!("rdt {body:.80}"), rdt(target, body)).await;
            assert_eq!(a.status, 400, "{body:.200}: {}", a.text);
            assert_eq!(a.json(), v1(code, message), "{body:.200}");
        }
    }
    // Odd but valid: lower-case and padded methods, dataElements empty, a target application.
    for body in [
        resources(json!([{"method": "get", "path": "/orders/v0/orders"}])),
        resources(json!([{"method": " GET ", "path": "/orders/v0/orders/123-1234567-1234567/address"}])),
        resources(json!([{"method": "GET", "path": "/orders/v0/orders", "dataElements": []}])),
    ] {
        let a = seen.send(format!("rdt {body}"), rdt(&id, &body)).await;
        assert_eq!(a.status, 200, "{body}: {}", a.text);
        assert_eq!(a.cache_control.as_deref(), Some("no-store"));
        assert_eq!(a.json()["restricted_resources"][0]["method"], "GET", "{body}");
    }

    // Grantless scopes.
    let no_scope = "give a scope, such as sellingpartnerapi::notifications".to_owned();
    let not_allowed =
        |scope: &str| format!("scope \"{scope}\" is not one this broker hands out; allowed: {NOTIFICATIONS}");
    let scope = |v: Value| json!({ "scope": v });
    let untagged = |column: u32| {
        serde(&format!(
            "data did not match any variant of untagged enum Scopes at line 1 column {column}"
        ))
    };
    let migration = "sellingpartnerapi::migration";
    let upper = NOTIFICATIONS.to_uppercase();
    let grantless_cases: Vec<(Value, &str, String)> = vec![
        (scope(json!("")), "invalid_scope", no_scope.clone()),
        (scope(json!("   ")), "invalid_scope", no_scope.clone()),
        (scope(json!([])), "invalid_scope", no_scope.clone()),
        (scope(json!(["", " "])), "invalid_scope", no_scope),
        (
            scope(json!(migration)),
            "scope_not_allowed",
            not_allowed(migration),
        ),
        (
            scope(json!([NOTIFICATIONS, "x"])),
            "scope_not_allowed",
            not_allowed("x"),
        ),
        (
            scope(json!(format!("{NOTIFICATIONS} x"))),
            "scope_not_allowed",
            not_allowed("x"),
        ),
        (
            scope(json!("s".repeat(1000))),
            "scope_not_allowed",
            not_allowed(&"s".repeat(100)),
        ),
        (scope(json!(upper)), "scope_not_allowed", not_allowed(&upper)),
        (
            json!({}),
            "invalid_json",
            serde("missing field `scope` at line 1 column 2"),
        ),
        (scope(Value::Null), "invalid_json", untagged(14)),
        (scope(json!([5])), "invalid_json", untagged(13)),
        (scope(json!({"a": NOTIFICATIONS})), "invalid_json", untagged(50)),
        (
            json!([5]),
            "invalid_json",
            "the request body must be a JSON object".to_owned(),
        ),
    ];
    for (body, code, message) in &grantless_cases {
        let a = seen.send(format!("grantless {body:.80}"), grantless(body)).await;
        assert_eq!(a.status, 400, "{body:.200}: {}", a.text);
        assert_eq!(a.json(), v1(code, message), "{body:.200}");
    }
    // Odd but valid: repeated and padded scopes are one.
    for body in [
        json!({"scope": format!(" {NOTIFICATIONS}  {NOTIFICATIONS} ")}),
        json!({"scope": [NOTIFICATIONS, NOTIFICATIONS]}),
    ] {
        let a = seen.send(format!("grantless {body}"), grantless(&body)).await;
        assert_eq!(a.status, 200, "{body}: {}", a.text);
        assert_eq!(a.json()["scope"], NOTIFICATIONS, "{body}");
    }

    // Proxy-only keys get no Amazon token from any vending route.
    let proxy = lwa_server::admin::create_key(&app.state, &app.tenant_id, None, "proxy-only")
        .await
        .unwrap()
        .key
        .to_string();
    let proxy_only = v1(
        "proxy_only_key",
        "this API key is proxy-only: it cannot receive Amazon tokens",
    );
    for (what, req) in [
        (
            "access-token",
            request(&app, "POST", &format!("/v1/connections/{id}/access-token")).bearer_auth(&proxy),
        ),
        (
            "rdt",
            request(
                &app,
                "POST",
                &format!("/v1/connections/{id}/restricted-data-token"),
            )
            .bearer_auth(&proxy)
            .json(&rdt_body("/orders/v0/orders")),
        ),
        (
            "grantless",
            request(&app, "POST", "/v1/grantless-tokens")
                .bearer_auth(&proxy)
                .json(&json!({"scope": NOTIFICATIONS})),
        ),
    ] {
        let a = seen.send(format!("proxy-only {what}"), req).await;
        assert_eq!(a.status, 403, "{what}: {}", a.text);
        assert_eq!(a.json(), proxy_only, "{what}");
    }

    // A connection sealed under a tenant-held secret: a missing, malformed or wrong secret is
    // the same 403.
    const SECRET: &str = "BadInputSecret-0123456789abcdefghijklmn";
    let link = app
        .connect_link(json!({"region": "na", "state": "s", "redirect_url": RETURN, "token_secret": SECRET}))
        .await;
    let landing = app
        .through_consent(
            &link,
            fake_amazon::browser::Choice::ApproveAs("A1VENDSECRET".into()),
        )
        .await;
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    assert_eq!(r.status(), 200);
    let secret_id = r.json::<Value>().await.unwrap()["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forbidden = v1("forbidden", FORBIDDEN);
    let with_secret = |req: RequestBuilder, secret: Option<&[u8]>| match secret {
        Some(s) => req.header(
            "x-amazon-token-secret",
            reqwest::header::HeaderValue::from_bytes(s).unwrap(),
        ),
        None => req,
    };
    let wrong = "w".repeat(40);
    let too_long = format!("{SECRET}{}", "x".repeat(30));
    let secrets: [(&str, Option<&[u8]>); 7] = [
        ("no secret", None),
        ("an empty secret", Some(b"")),
        ("a short secret", Some(b"short")),
        ("a wrong secret", Some(wrong.as_bytes())),
        ("the secret and more", Some(too_long.as_bytes())),
        (
            "the secret in upper case",
            Some(b"BADINPUTSECRET-0123456789ABCDEFGHIJKLMN"),
        ),
        ("a secret that is not UTF-8", Some(&[0xff; 40])),
    ];
    for warm in [false, true] {
        for (what, secret) in secrets {
            let label = format!("secret connection (warm: {warm}): {what}");
            let a = seen
                .send(format!("{label}, vend"), with_secret(vend(&secret_id), secret))
                .await;
            assert_eq!(a.status, 403, "{label}: {}", a.text);
            assert_eq!(a.json(), forbidden, "{label}");
            let a = seen
                .send(
                    format!("{label}, rdt"),
                    with_secret(rdt(&secret_id, &rdt_body("/orders/v0/orders")), secret),
                )
                .await;
            assert_eq!(a.status, 403, "{label}: {}", a.text);
            assert_eq!(a.json(), forbidden, "{label}");
        }
        // The right one works (and, the first time, puts the token in the cache).
        let a = seen
            .send(
                "secret connection: the secret",
                with_secret(vend(&secret_id), Some(SECRET.as_bytes())),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }

    // Disconnected: 409 on both connection routes.
    let r = request(&app, "DELETE", &format!("/v1/connections/{id}"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let disconnected = v1(
        "disconnected",
        "this connection was disconnected and has no tokens",
    );
    let a = seen.send("disconnected vend", vend(&id)).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.json(), disconnected);
    let a = seen
        .send("disconnected rdt", rdt(&id, &rdt_body("/orders/v0/orders")))
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.json(), disconnected);
    seen.finish();
}

#[tokio::test]
async fn rdts_exist_only_for_sp_api_connections() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "s", "redirect_url": RETURN}))
        .await;
    let landing = app
        .through_consent(&link, fake_amazon::browser::Choice::Approve)
        .await;
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    assert_eq!(r.status(), 200);
    let ads = r.json::<Value>().await.unwrap()["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = seen
        .send(
            "rdt for ads",
            request(
                &app,
                "POST",
                &format!("/v1/connections/{ads}/restricted-data-token"),
            )
            .bearer_auth(&app.key)
            .json(&rdt_body("/orders/v0/orders")),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(
        a.json(),
        v1(
            "not_sp_api",
            "Restricted Data Tokens exist only for SP-API connections"
        )
    );
    // Its access token is fine.
    let a = seen
        .send(
            "vend ads",
            request(&app, "POST", &format!("/v1/connections/{ads}/access-token")).bearer_auth(&app.key),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    seen.finish();
}

#[tokio::test]
async fn audit_queries_are_checked() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let time = |name: &str| format!("{name} must be an RFC 3339 time such as 2026-11-24T10:00:00Z");
    let kind = "kind must be access_token, grantless_token or restricted_data_token".to_owned();
    let unknown = "bad query parameters: unknown field `nope`, expected one of `connection_id`, `key_id`, \
                   `kind`, `since`, `until`, `limit`, `before`"
        .to_owned();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "limit=abc",
            "invalid_query",
            "bad query parameters: invalid digit found in string".into(),
        ),
        (
            "limit=-1",
            "invalid_query",
            "bad query parameters: invalid digit found in string".into(),
        ),
        (
            "limit=99999999999",
            "invalid_query",
            "bad query parameters: number too large to fit in target type".into(),
        ),
        (
            "limit=",
            "invalid_query",
            "bad query parameters: cannot parse integer from empty string".into(),
        ),
        ("limit=0", "invalid_limit", "limit must be 1 to 1000".into()),
        ("limit=1001", "invalid_limit", "limit must be 1 to 1000".into()),
        (
            "before=x",
            "invalid_query",
            "bad query parameters: invalid digit found in string".into(),
        ),
        (
            "before=1.5",
            "invalid_query",
            "bad query parameters: invalid digit found in string".into(),
        ),
        (
            "before=99999999999999999999",
            "invalid_query",
            "bad query parameters: number too large to fit in target type".into(),
        ),
        ("kind=x", "invalid_kind", kind.clone()),
        ("kind=", "invalid_kind", kind.clone()),
        ("kind=ACCESS_TOKEN", "invalid_kind", kind),
        ("since=yesterday", "invalid_time", time("since")),
        ("since=", "invalid_time", time("since")),
        ("since=2026-13-01T00:00:00Z", "invalid_time", time("since")),
        ("until=1700000000", "invalid_time", time("until")),
        ("until=2026-11-24", "invalid_time", time("until")),
        ("nope=1", "invalid_query", unknown),
        (
            "limit=1&limit=2",
            "invalid_query",
            "bad query parameters: duplicate field `limit`".into(),
        ),
    ];
    for (q, code, message) in &cases {
        let a = seen
            .send(
                format!("GET /v1/audit?{q}"),
                request(&app, "GET", &format!("/v1/audit?{q}")).bearer_auth(&app.key),
            )
            .await;
        assert_eq!(a.status, 400, "{q}: {}", a.text);
        assert_eq!(a.json(), v1(code, message), "{q}");
    }
    // The key is checked before the query.
    let a = seen
        .send(
            "bad audit query without key",
            request(&app, "GET", "/v1/audit?limit=abc"),
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.json(),
        v1(
            "unauthorized",
            "missing API key: send Authorization: Bearer <key>"
        )
    );
    // Odd but valid.
    for q in [
        "limit=1000",
        "limit=1",
        "before=-5",
        "before=0",
        "connection_id=",
        "connection_id=%FF%FE",
        "key_id=nope",
        "kind=restricted_data_token",
        "since=2999-01-01T00:00:00Z",
        "since=2026-11-24T10:00:00%2B02:00",
        "since=2999-01-01T00:00:00Z&until=2000-01-01T00:00:00Z",
    ] {
        let a = seen
            .send(
                format!("GET /v1/audit?{q}"),
                request(&app, "GET", &format!("/v1/audit?{q}")).bearer_auth(&app.key),
            )
            .await;
        assert_eq!(a.status, 200, "{q}: {}", a.text);
        assert_eq!(a.json(), json!({"data": [], "next_before": null}), "{q}");
    }
    seen.finish();
}

// ---- Bugs these tests found, fixed: kept so they stay fixed. ----

/// Was a bug: `RestrictedResource` (lwa crate) does not deny unknown fields, although the RDT
/// body around it does. A typo such as `dataElement` is dropped silently: the caller gets 200
/// and an RDT *without* the data elements it asked for, and only finds out at Amazon.
#[tokio::test]
async fn rdt_unknown_fields_inside_a_resource_are_refused() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1RDTTYPO").await;
    let typo = json!({
        "method": "GET",
        "path": "/orders/v0/orders/123-1234567-1234567",
        "dataElement": ["buyerInfo"],
    });
    let a = seen
        .send(
            "rdt with dataElement (singular)",
            request(
                &app,
                "POST",
                &format!("/v1/connections/{id}/restricted-data-token"),
            )
            .bearer_auth(&app.key)
            .json(&json!({"restrictedResources": [typo]})),
        )
        .await;
    seen.finish();
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "invalid_json", "{}", a.text);
    assert!(a.text.contains("unknown field `dataElement`"), "{}", a.text);
}

/// Was a bug: the JSON extractor takes a top-level array for an object (serde lets a struct
/// be read from a sequence, field by field), so `["sellingpartnerapi::notifications"]` is a
/// grantless request and `[[resource], null]` an RDT request, both 200. The empty-body
/// message says "send a JSON object"; a non-object should be the same 400 `invalid_json`.
/// (The same holds on the older routes: `PATCH /v1/connections/{id}` with `["x"]` renames the
/// connection to "x".)
#[tokio::test]
async fn a_json_array_is_not_taken_for_an_object() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1ARRAYBODY").await;
    let grantless = seen
        .send(
            "grantless from an array",
            request(&app, "POST", "/v1/grantless-tokens")
                .bearer_auth(&app.key)
                .json(&json!([NOTIFICATIONS])),
        )
        .await;
    let rdt = seen
        .send(
            "rdt from an array",
            request(
                &app,
                "POST",
                &format!("/v1/connections/{id}/restricted-data-token"),
            )
            .bearer_auth(&app.key)
            .json(&json!([[{"method": "GET", "path": "/orders/v0/orders"}], null])),
        )
        .await;
    seen.finish();
    assert_eq!(
        (grantless.status, rdt.status),
        (400, 400),
        "grantless: {}\nrdt: {}",
        grantless.text,
        rdt.text
    );
    for (what, a) in [("grantless", grantless), ("rdt", rdt)] {
        assert_eq!(a.json()["error"]["code"], "invalid_json", "{what}: {}", a.text);
    }
}

/// Was a bug: `/auth/o2/token` refuses a form parameter given twice ("The request has a
/// parameter more than once") but takes the last of a repeated JSON member silently, so
/// `{"client_id":"nope","client_id":"<id>",…}` authenticates.
#[tokio::test]
async fn token_endpoint_json_parameters_may_not_repeat() {
    let app = spawn().await;
    let mut seen = Seen::default();
    let id = import_connection(&app, "A1JSONREPEAT").await;
    let (key_id, key_secret) = lwa_server::auth::split_key(&app.key).unwrap();
    let body = format!(
        "{{\"grant_type\":\"refresh_token\",\"refresh_token\":\"lwah_{id}\",\"client_id\":\"nope\",\
         \"client_id\":\"{key_id}\",\"client_secret\":\"{key_secret}\"}}"
    );
    let a = seen
        .send(
            "json client_id twice",
            request(&app, "POST", "/auth/o2/token")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    seen.finish();
    assert_lwa(
        &a,
        400,
        "invalid_request",
        "The request has a parameter more than once",
        "json client_id twice",
    );
}

/// An operator route refuses a missing admin token, a tenant's API key and a wrong token, before
/// and after an admin token exists; nothing changes the app's secrets.
async fn admin_token_refusals(app: &TestApp, seen: &mut Seen, method: &str, url: &str, body: Option<Value>) {
    let with_body = |r: RequestBuilder| match &body {
        Some(b) => r.json(b),
        None => r,
    };
    let missing = v1(
        "unauthorized",
        "missing admin token: send Authorization: Bearer <admin token>",
    );
    let unset = v1(
        "unauthorized",
        "no admin token is set: the operator makes one with `lwa-broker admin-token`",
    );
    let invalid = v1("unauthorized", "invalid admin token");
    let before = app.state.store.app_secrets().await.unwrap();
    for (what, req, expected) in [
        ("no token", with_body(request(app, method, url)), &missing),
        (
            "empty bearer",
            with_body(request(app, method, url).header("authorization", "Bearer ")),
            &missing,
        ),
        (
            "tenant key, no admin token set",
            with_body(request(app, method, url).bearer_auth(&app.key)),
            &unset,
        ),
    ] {
        let a = seen.send(format!("{method} {url}: {what}"), req).await;
        assert_eq!(a.status, 401, "{method} {url}: {what}: {}", a.text);
        assert_eq!(&a.json(), expected, "{method} {url}: {what}");
    }
    let token = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    let wrong = format!("lwaadm_{}", "0".repeat(64));
    for (what, req) in [
        (
            "tenant key",
            with_body(request(app, method, url).bearer_auth(&app.key)),
        ),
        (
            "wrong token",
            with_body(request(app, method, url).bearer_auth(&wrong)),
        ),
        (
            "token with a typo'd scheme",
            with_body(request(app, method, url).header("authorization", format!("Bearr {}", &*token))),
        ),
        (
            "token with one character changed",
            with_body(request(app, method, url).bearer_auth(format!(
                "{}{}",
                &token[..token.len() - 1],
                if token.ends_with('0') { '1' } else { '0' }
            ))),
        ),
    ] {
        let a = seen.send(format!("{method} {url}: {what}"), req).await;
        assert_eq!(a.status, 401, "{method} {url}: {what}: {}", a.text);
        let expected = if what.contains("scheme") {
            &missing
        } else {
            &invalid
        };
        assert_eq!(&a.json(), expected, "{method} {url}: {what}");
    }
    assert_eq!(app.state.store.app_secrets().await.unwrap(), before);
    // The real token gets through to the route.
    let a = seen
        .send(
            format!("{method} {url}: admin token"),
            with_body(request(app, method, url).bearer_auth(&*token)),
        )
        .await;
    assert_eq!(a.status, 200, "{method} {url}: {}", a.text);
    // Other tests share nothing with this app; remove the token so the next check starts over.
    app.state
        .store
        .set_meta(lwa_server::operator::ADMIN_TOKEN_META, "")
        .await
        .unwrap();
}

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
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        self.0.push((label, status));
        Answer {
            status,
            content_type,
            location,
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
        | "/auth/initialize"
        | "/auth/redirect"
        | "/auth/login"
        | "/api/claim-code"
        | "/v1/claims"
        | "/v1/connect-links"
        | "/v1/connections"
        | "/v1/connections/import" => path.to_owned(),
        "/auth/connect/{token}" => "/auth/connect/garbage-token".to_owned(),
        "/v1/connections/{id}" | "/v1/connections/{id}/reauthorize-link" => path.replace("{id}", id),
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
        other => panic!("bad_input.rs does not know a body for {other:?}: teach it"),
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
    for &(method, path, access) in lwa_server::ROUTES {
        let url = concrete(path, &id);
        let body = valid_body(method, path);
        if access == Access::Public {
            continue;
        }
        keyed += 1;
        let is_compat = access == Access::CompatKey;
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
    assert_eq!(keyed, 9, "every keyed route was tried");
    // Nothing reached the connection.
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, "active");
    assert_eq!(c.name, None);
    seen.finish();
}

#[tokio::test]
async fn every_json_route_refuses_bad_bodies() {
    let app = spawn().await;
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
    assert_eq!(json_routes, 6, "every JSON route was tried");
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
    seen.finish();
    assert!(
        api.status == 404 && api.content_type.starts_with("application/json"),
        "{api:?} / {page:?}"
    );
    assert_eq!(api.json()["error"]["code"], "not_found");
    assert_eq!(page.status, 404, "{}", page.text);
    assert!(page.is_html(), "{}: {}", page.content_type, page.text);
}

//! `/v1/connections`: list (pages and filters), read, rename and callback URL, disconnect, and
//! import of existing refresh tokens (created or reused, validated by one LWA refresh).

use fake_amazon::browser::Choice;
use fake_amazon::{Principal, defaults};
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn};

async fn send(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = app
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.url),
        )
        .bearer_auth(&app.key);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

async fn refreshes(app: &TestApp) -> u64 {
    app.fake.control().counters().await.lwa_calls("refresh_token")
}

/// Imports one SP-API connection of `seller` in `region`; its view.
async fn import_sp(app: &TestApp, seller: &str, region: &str) -> Value {
    let token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, seller)
        .await;
    let (status, body) = send(
        app,
        "POST",
        "/v1/connections/import",
        Some(json!([{"region": region, "refresh_token": token, "selling_partner_id": seller}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["results"][0]["connection"].clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, body) = send(app, "GET", &format!("/v1/connections{query}"), None).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[tokio::test]
async fn the_list_pages_by_id_and_filters() {
    let app = spawn().await;
    let mut all = Vec::new();
    for (seller, region) in [
        ("A1LIST0001", "na"),
        ("A1LIST0002", "na"),
        ("A1LIST0003", "eu"),
        ("A1LIST0004", "fe"),
    ] {
        all.push(
            import_sp(&app, seller, region).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "ads", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let ads = landing.q["seller_id"].clone();
    all.push(ads.clone());
    all.sort();

    // Everything, by id, on one page.
    let page = list(&app, "").await;
    assert_eq!(ids(&page), all);
    assert_eq!(page["next_after"], Value::Null);

    // Pages of two: next_after is the last id of a full page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!("?limit=2&after={a}"),
            None => "?limit=2".to_owned(),
        };
        let page = list(&app, &q).await;
        let got = ids(&page);
        pages += 1;
        assert!(got.len() <= 2);
        seen.extend(got.clone());
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(got.len(), 2);
                assert_eq!(next, got.last().unwrap());
                after = Some(next.to_owned());
            }
            None => {
                assert!(got.len() < 2, "a short page is the last");
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);
    // A full last page names a next one, which is empty.
    let page = list(&app, "?limit=5").await;
    assert_eq!(ids(&page), all);
    assert_eq!(page["next_after"], all[4].as_str());
    let page = list(&app, &format!("?limit=5&after={}", all[4])).await;
    assert_eq!(page, json!({"data": [], "next_after": null}));
    // `after` need not be an existing id.
    let page = list(&app, &format!("?after={}", &all[2][..all[2].len() - 1])).await;
    assert_eq!(ids(&page), all[2..].to_vec());

    // Filters.
    let count = |page: &Value| page["data"].as_array().unwrap().len();
    assert_eq!(ids(&list(&app, "?api=ads").await), vec![ads.clone()]);
    assert_eq!(count(&list(&app, "?api=sp-api").await), 4);
    assert_eq!(count(&list(&app, "?region=na").await), 3);
    assert_eq!(count(&list(&app, "?region=us-east-1").await), 3, "AWS names work");
    assert_eq!(count(&list(&app, "?region=eu").await), 1);
    assert_eq!(count(&list(&app, "?region=fe&api=sp-api").await), 1);
    assert_eq!(count(&list(&app, "?region=fe&api=ads").await), 0);
    assert_eq!(count(&list(&app, "?status=active").await), 5);
    assert_eq!(count(&list(&app, "?status=needs_reauth").await), 0);
    assert_eq!(count(&list(&app, "?status=disconnected").await), 0);
    let (status, _) = send(&app, "DELETE", &format!("/v1/connections/{}", all[0]), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&list(&app, "?status=disconnected").await),
        vec![all[0].clone()]
    );
    assert_eq!(count(&list(&app, "?status=active").await), 4);
    // Filters and paging together.
    let page = list(&app, "?status=active&region=na&limit=1").await;
    assert_eq!(count(&page), 1);
    let next = page["next_after"].as_str().unwrap().to_owned();
    let rest = list(&app, &format!("?status=active&region=na&limit=1&after={next}")).await;
    assert_eq!(count(&rest), 1);
    assert!(rest["data"][0]["id"].as_str().unwrap() > next.as_str());
    assert_eq!(rest["data"][0]["status"], "active");
    assert_eq!(rest["data"][0]["region"], "na");
}

#[tokio::test]
async fn get_one_and_patch_its_name_and_callback_url() {
    let app = spawn().await;
    let created = import_sp(&app, "A1PATCH001", "na").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/connections/{id}");

    let (status, one) = send(&app, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(one, created);
    assert_eq!(
        one,
        list(&app, "").await["data"][0],
        "the list shows the same view"
    );
    for field in [
        "id",
        "tenant_id",
        "app",
        "api",
        "region",
        "account_type",
        "marketplace_id",
        "selling_partner_id",
        "name",
        "status",
        "token_secret",
        "profiles",
        "authorized_at",
        "access_token_expires_at",
        "last_refresh_at",
        "last_error",
        "callback_url",
        "claimed",
        "created_at",
        "updated_at",
    ] {
        assert!(one.get(field).is_some(), "{field} missing: {one}");
    }
    assert_eq!(
        one.as_object().unwrap().len(),
        20,
        "no other field (no token): {one}"
    );
    assert_eq!(one["tenant_id"], app.tenant_id);
    assert_eq!(one["app"], "sandbox-sp-api");
    assert_eq!(one["api"], "sp-api");
    assert_eq!(one["account_type"], "seller");
    assert_eq!(one["selling_partner_id"], "A1PATCH001");
    assert_eq!(one["status"], "active");
    assert_eq!(one["token_secret"], "none");
    assert_eq!(one["claimed"], true);
    assert_eq!(one["name"], Value::Null);
    assert_eq!(one["callback_url"], Value::Null);
    assert_eq!(one["profiles"], json!([]));

    // The name (trimmed), then the callback URL; each leaves the other alone.
    let (status, patched) = send(&app, "PATCH", &path, Some(json!({"name": "  Main store  "}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Main store");
    assert_eq!(patched["callback_url"], Value::Null);
    let hook = "https://tenant.example.com/hooks/amazon?x=1";
    let (status, patched) = send(&app, "PATCH", &path, Some(json!({"callback_url": hook}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Main store");
    assert_eq!(patched["callback_url"], hook);
    let (_, read) = send(&app, "GET", &path, None).await;
    assert_eq!(read, patched, "stored");
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(stored.name.as_deref(), Some("Main store"));
    assert_eq!(stored.callback_url.as_deref(), Some(hook));

    // Absent leaves it; null clears the callback URL; null leaves the name (not clearable by null).
    let (status, same) = send(&app, "PATCH", &path, Some(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(same["name"], "Main store");
    assert_eq!(same["callback_url"], hook);
    let (status, cleared) = send(
        &app,
        "PATCH",
        &path,
        Some(json!({"callback_url": null, "name": null})),
    )
    .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["callback_url"], Value::Null);
    assert_eq!(cleared["name"], "Main store");
    assert_eq!(
        app.state
            .store
            .connection(&id)
            .await
            .unwrap()
            .unwrap()
            .callback_url,
        None
    );
    // A blank name clears the name.
    let (status, unnamed) = send(&app, "PATCH", &path, Some(json!({"name": "   "}))).await;
    assert_eq!(status, 200);
    assert_eq!(unnamed["name"], Value::Null);

    // Invalid values change nothing.
    let before = send(&app, "GET", &path, None).await.1;
    let bad_url = json!({"error": {"code": "invalid_callback_url", "message": "callback_url must be an absolute http(s) URL"}});
    for url in [
        "not a url",
        "/relative/path",
        "ftp://tenant.example.com/x",
        "javascript:alert(1)",
        "https://user:pass@tenant.example.com/x",
        "https://user@tenant.example.com/x",
        "mailto:a@example.com",
        "file:///etc/passwd",
    ] {
        let (status, body) = send(
            &app,
            "PATCH",
            &path,
            Some(json!({"name": "changed", "callback_url": url})),
        )
        .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body, bad_url, "{url}");
    }
    let long = format!("https://tenant.example.com/{}", "a".repeat(2048));
    let (status, body) = send(&app, "PATCH", &path, Some(json!({"callback_url": long}))).await;
    assert_eq!((status, body), (400, bad_url.clone()));
    let (status, body) = send(&app, "PATCH", &path, Some(json!({"name": "n".repeat(201)}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "invalid_name", "message": "name is at most 200 characters"}})
    );
    assert_eq!(send(&app, "GET", &path, None).await.1, before, "nothing changed");
    let (status, body) = send(&app, "PATCH", &path, Some(json!({"name": "n".repeat(200)}))).await;
    assert_eq!(status, 200, "{body}");

    // Unknown ids are 404.
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "x"}))),
        ("DELETE", None),
    ] {
        let (status, answer) = send(&app, method, "/v1/connections/conn_nope", body).await;
        assert_eq!(status, 404, "{method}");
        assert_eq!(
            answer,
            json!({"error": {"code": "not_found", "message": "no connection conn_nope"}})
        );
    }
}

#[tokio::test]
async fn delete_erases_the_tokens_and_says_amazon_cannot_revoke() {
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    assert!(stored.refresh_token.is_some() && stored.access_token.is_some());
    let refresh = app
        .state
        .sealer
        .open(&id, "refresh_token", stored.refresh_token.as_ref().unwrap(), None)
        .unwrap();

    let (status, body) = send(&app, "DELETE", &format!("/v1/connections/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "disconnected");
    assert_eq!(body["tokens_erased"], true);
    assert_eq!(body["access_token_expires_at"], Value::Null);
    assert_eq!(
        body["amazon_authorization"],
        "Amazon has no API to revoke an authorization: the broker erased its tokens, and the seller can \
         remove the app in Seller Central (Manage Your Apps) or the Ads console."
    );
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(stored.refresh_token, None);
    assert_eq!(stored.access_token, None);
    assert_eq!(stored.access_expires_at_ms, None);
    assert_eq!(stored.status, "disconnected");

    // The read agrees; the extra fields are only on the DELETE answer.
    let (status, read) = send(&app, "GET", &format!("/v1/connections/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["status"], "disconnected");
    assert!(read.get("tokens_erased").is_none());
    let mut without_extras = body.clone();
    without_extras
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "tokens_erased" && k != "amazon_authorization");
    assert_eq!(read, without_extras);

    // The broker made no call to Amazon about it (there is none to make); the token Amazon
    // issued is still valid there.
    let info = app.fake.control().token_info(&refresh).await.unwrap();
    assert!(!info.revoked);
    assert_eq!(info.kind, "refresh");

    // Deleting again is harmless.
    let (status, again) = send(&app, "DELETE", &format!("/v1/connections/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "disconnected");
}

#[tokio::test]
async fn import_creates_then_reuses_and_validates_with_one_refresh() {
    let app = spawn().await;
    let first_token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1IMPORT001")
        .await;

    // A JSON array: created.
    let before = refreshes(&app).await;
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!([{
            "region": "eu",
            "marketplace": "A1PA6795UKMFR9",
            "refresh_token": first_token,
            "selling_partner_id": "A1IMPORT001",
            "name": "Imported DE",
            "callback_url": "https://tenant.example.com/hook",
        }])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refreshes(&app).await, before + 1, "one validating refresh");
    assert_eq!(
        app.fake
            .control()
            .counters()
            .await
            .lwa_calls_for_refresh_token(&first_token),
        1
    );
    assert_eq!(body["imported"], 1);
    assert_eq!(body["failed"], 0);
    let result = &body["results"][0];
    assert_eq!(result["line"], 1);
    assert_eq!(result["created"], true);
    let c = &result["connection"];
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(result["handle"], format!("lwah_{id}"));
    assert_eq!(c["region"], "eu");
    assert_eq!(c["marketplace_id"], "A1PA6795UKMFR9");
    assert_eq!(c["selling_partner_id"], "A1IMPORT001");
    assert_eq!(c["name"], "Imported DE");
    assert_eq!(c["callback_url"], "https://tenant.example.com/hook");
    assert_eq!(c["status"], "active");
    assert_eq!(c["claimed"], true);
    assert_eq!(c["token_secret"], "none");
    assert!(c["access_token_expires_at"].is_string());
    assert!(c["last_refresh_at"].is_string());
    // What is stored is the imported refresh token and the access token the refresh gave.
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    let sealer = &app.state.sealer;
    assert_eq!(
        *sealer
            .open(&id, "refresh_token", stored.refresh_token.as_ref().unwrap(), None)
            .unwrap(),
        first_token
    );
    let access = sealer
        .open(&id, "access_token", stored.access_token.as_ref().unwrap(), None)
        .unwrap();
    let info = app.fake.control().token_info(&access).await.unwrap();
    assert_eq!(info.kind, "access");
    assert!(
        matches!(&info.principal, Principal::Seller { selling_partner_id, .. } if selling_partner_id == "A1IMPORT001"),
        "{:?}",
        info.principal
    );

    // {"connections": [...]}, the same seller with a newer token: reused, not created.
    let second_token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1IMPORT001")
        .await;
    assert_ne!(second_token, first_token);
    let before = refreshes(&app).await;
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!({"connections": [{"region": "eu", "refresh_token": second_token, "selling_partner_id": "A1IMPORT001"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refreshes(&app).await, before + 1);
    let result = &body["results"][0];
    assert_eq!(result["created"], false);
    assert_eq!(result["connection"]["id"], id.as_str());
    assert_eq!(result["connection"]["name"], "Imported DE", "kept when not given");
    assert_eq!(result["connection"]["marketplace_id"], "A1PA6795UKMFR9");
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(
        *sealer
            .open(&id, "refresh_token", stored.refresh_token.as_ref().unwrap(), None)
            .unwrap(),
        second_token,
        "the newer token replaced the older"
    );
    let (_, page) = send(&app, "GET", "/v1/connections", None).await;
    assert_eq!(ids(&page), vec![id.clone()], "one connection");

    // Another region of the same seller is another connection.
    let created = import_sp(&app, "A1IMPORT001", "na").await;
    assert_ne!(created["id"], id.as_str());

    // A disconnected connection comes back to life on import.
    let (status, _) = send(&app, "DELETE", &format!("/v1/connections/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!([{"region": "eu", "refresh_token": second_token, "selling_partner_id": "A1IMPORT001"}])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["created"], false);
    assert_eq!(body["results"][0]["connection"]["status"], "active");
    assert!(
        app.state
            .store
            .connection(&id)
            .await
            .unwrap()
            .unwrap()
            .refresh_token
            .is_some()
    );

    // Without selling_partner_id the broker cannot tell the seller: always a new connection.
    let before = refreshes(&app).await;
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!([{"region": "eu", "refresh_token": second_token}])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(refreshes(&app).await, before + 1);
    assert_eq!(body["results"][0]["created"], true);
    assert_eq!(
        body["results"][0]["connection"]["selling_partner_id"],
        Value::Null
    );
}

#[tokio::test]
async fn import_with_a_tenant_secret_seals_with_it_and_returns_it_in_the_handle() {
    let app = spawn().await;
    let token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1SECRET01")
        .await;
    let secret = "Zq8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw=";
    let before = refreshes(&app).await;
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!([{"marketplace": "ATVPDKIKX0DER", "refresh_token": token, "selling_partner_id": "A1SECRET01", "token_secret": secret}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refreshes(&app).await, before + 1);
    let c = &body["results"][0]["connection"];
    assert_eq!(c["region"], "na", "from the marketplace");
    assert_eq!(c["token_secret"], "tenant");
    let id = c["id"].as_str().unwrap();
    let handle = body["results"][0]["handle"].as_str().unwrap();
    let (hid, hsecret) = lwa_server::onboarding::parse_handle(handle).unwrap();
    assert_eq!(hid, id);
    assert_eq!(hsecret.as_ref().unwrap().expose(), secret);
    let stored = app.state.store.connection(id).await.unwrap().unwrap();
    let sealed = stored.refresh_token.unwrap();
    assert!(app.state.sealer.open(id, "refresh_token", &sealed, None).is_err());
    assert_eq!(
        *app.state
            .sealer
            .open(id, "refresh_token", &sealed, hsecret.as_ref())
            .unwrap(),
        token
    );
}

#[tokio::test]
async fn import_refuses_a_marketplace_outside_its_region() {
    let app = spawn().await;
    let token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1MISMATCH")
        .await;
    // Germany is in eu; connect links answer 400 invalid_marketplace for this pair.
    let (status, link) = send(
        &app,
        "POST",
        "/v1/connect-links",
        Some(json!({"region": "na", "marketplace": "A1PA6795UKMFR9", "state": "s", "redirect_url": RETURN})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        link,
        json!({"error": {"code": "invalid_marketplace", "message": "marketplace A1PA6795UKMFR9 is not in region na"}})
    );
    let (status, body) = send(
        &app,
        "POST",
        "/v1/connections/import",
        Some(json!([{"region": "na", "marketplace": "A1PA6795UKMFR9", "refresh_token": token}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["results"][0]["error"],
        json!({"code": "invalid_marketplace", "message": "marketplace A1PA6795UKMFR9 is not in region na"})
    );
}

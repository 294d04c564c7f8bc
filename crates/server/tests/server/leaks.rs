//! No secret reaches a log line (at debug level) or the database file: one broad run through
//! every flow, then every secret the test issued or saw is looked for, raw, percent-encoded
//! and JSON-escaped, in everything the process logged and in the SQLite file and its WAL.

use std::collections::BTreeMap;

use base64::Engine;
use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppstoreSpec, FaultScript, FaultSpec, FaultTarget, RevokeSpec, defaults};
use lwa_server::sealing::TokenSecret;
use lwa_store::ConnectionFilter;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, logs, spawn, spawn_with};

const SEED_SECRET: &str = "q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw==";
const LINK_SECRET: &str = "LinkSecret-0123456789abcdefghijklmnopqrstu";
const IMPORT_SECRET: &str = "ImportSecret/0123456789+abcdefghijklmnopq=";
const VEND_SECRET: &str = "VendSecret+0123456789/abcdefghijklmnopqrs=";
const OPERATOR_WEBHOOK_SECRET: &str = "OperatorWebhookSecret-0123456789abcdefghij";

/// Every secret, by value, with what it is.
#[derive(Default)]
struct Secrets(BTreeMap<String, String>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 16, "{what} is too short to search for: {value:?}");
        self.0.entry(value.to_owned()).or_insert_with(|| what.to_owned());
    }
    fn count(&self, what: &str) -> usize {
        self.0.values().filter(|w| w.as_str() == what).count()
    }
    /// The forms a secret could be written in.
    fn forms(value: &str) -> Vec<String> {
        let percent: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let json = serde_json::to_string(value).unwrap();
        let json = json[1..json.len() - 1].to_owned();
        let mut forms = vec![value.to_owned()];
        for form in [percent, json] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        forms
    }
    /// Every (what, form) found in `haystack`.
    fn found_in(&self, haystack: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        for (value, what) in &self.0 {
            for form in Self::forms(value) {
                if haystack.windows(form.len()).any(|w| w == form.as_bytes()) {
                    found.push(format!("{what}: {form}"));
                }
            }
        }
        found
    }
}

fn random(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&lwa_server::ids::new_secret());
    }
    s.truncate(n);
    s
}

/// The tokens the store holds right now, opened with whichever secret opens them.
async fn harvest_store(app: &TestApp, secrets: &mut Secrets) {
    let all = app
        .state
        .store
        .list_connections(&ConnectionFilter {
            limit: 1000,
            ..ConnectionFilter::default()
        })
        .await
        .unwrap();
    let tenant_secrets: Vec<Option<TokenSecret>> = [
        None,
        Some(SEED_SECRET),
        Some(LINK_SECRET),
        Some(IMPORT_SECRET),
        Some(VEND_SECRET),
    ]
    .into_iter()
    .map(|s| s.map(|s| TokenSecret::parse(s).unwrap()))
    .collect();
    for c in all {
        for (field, sealed) in [
            ("refresh_token", &c.refresh_token),
            ("access_token", &c.access_token),
        ] {
            let Some(sealed) = sealed else { continue };
            let opened = tenant_secrets
                .iter()
                .find_map(|s| app.state.sealer.open(&c.id, field, sealed, s.as_ref()).ok())
                .unwrap_or_else(|| panic!("no secret opens {field} of {}", c.id));
            secrets.add(field, &opened);
        }
    }
}

/// What the fake saw: codes, states, verifiers, tokens and client secrets in queries, bodies
/// and Authorization headers.
async fn harvest_fake(app: &TestApp, secrets: &mut Secrets) {
    for r in app.fake.control().requests(None).await {
        let pairs = url::form_urlencoded::parse(r.query.as_bytes())
            .chain(url::form_urlencoded::parse(r.body.as_bytes()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        for (k, v) in pairs {
            let what = match k.as_str() {
                "state" | "amazon_state" => "state",
                "code" | "spapi_oauth_code" => "authorization code",
                "refresh_token" => "refresh_token",
                "access_token" => "access_token",
                "client_secret" => "client secret",
                "code_verifier" => "PKCE verifier",
                _ => continue,
            };
            if v.len() >= 16 {
                secrets.add(what, &v);
            }
        }
        // SP-API calls (the Tokens API) carry the access token in their own header.
        if let Some(token) = r.headers.get("x-amz-access-token") {
            secrets.add("access_token", token);
        }
        if let Some(auth) = r.headers.get("authorization") {
            if let Some(token) = auth.strip_prefix("Bearer ") {
                secrets.add("access_token", token);
            } else if let Some(basic) = auth.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD.decode(basic).unwrap();
                let decoded = String::from_utf8(decoded).unwrap();
                secrets.add("client secret", decoded.split_once(':').unwrap().1);
            }
        }
    }
    for a in app.fake.control().authorizations().await {
        secrets.add("authorization code", &a.code);
    }
}

fn add_handle(secrets: &mut Secrets, handle: &str) {
    if let Some((_, secret)) = handle.split_once('.') {
        secrets.add("handle", handle);
        secrets.add("handle secret", secret);
    }
}

fn add_key(secrets: &mut Secrets, key: &str) {
    secrets.add("API key", key);
    secrets.add("API key secret", lwa_server::auth::split_key(key).unwrap().1);
}

async fn claim_v1(app: &TestApp, code: &str, secrets: &mut Secrets) -> Value {
    secrets.add("claim code", code);
    let r = app.post_json("/v1/claims", &json!({"code": code})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    add_handle(secrets, body["handle"].as_str().unwrap());
    body
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_the_database() {
    let operator_hooks = crate::webhooks::Receiver::start().await;
    let operator_url = operator_hooks.url("/operator");
    let app = spawn_with(|s| {
        s.operator_webhook_url = Some(operator_url.clone());
        s.operator_webhook_secret = Some(lwa_server::webhooks::SigningSecret::new(OPERATOR_WEBHOOK_SECRET));
    })
    .await;
    let (_, b_key) = app.other_tenant().await;
    let mut secrets = Secrets::default();
    add_key(&mut secrets, &app.key);
    add_key(&mut secrets, &b_key);
    secrets.add("tenant secret", SEED_SECRET);
    secrets.add("tenant secret", LINK_SECRET);
    secrets.add("tenant secret", IMPORT_SECRET);
    for s in [
        defaults::SP_API_CLIENT_SECRET,
        defaults::SP_API_PREVIOUS_CLIENT_SECRET,
        defaults::ADS_CLIENT_SECRET,
        defaults::ADS_PREVIOUS_CLIENT_SECRET,
    ] {
        secrets.add("client secret", s);
    }
    let mut claim_hashes = Vec::new();

    // The seed: initialize, consent, callback, compat claim.
    let landing = app
        .through_consent(&app.initialize_url(&[]), Choice::Approve)
        .await;
    let code = landing.q["code"].clone();
    secrets.add("claim code", &code);
    claim_hashes.push(lwa_server::ids::hash(&code));
    let r = app
        .http
        .post(format!("{}/api/claim-code", app.url))
        .header("x-adb-access-token", &app.key)
        .json(&json!({"code": code, "seller_id": landing.q["seller_id"], "name": "Seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    add_handle(&mut secrets, body["data"]["handle"].as_str().unwrap());
    assert!(body["data"]["handle"].as_str().unwrap().contains('.'));
    harvest_store(&app, &mut secrets).await;

    // A connect link with a tenant secret, in Europe.
    let link = app
        .connect_link(
            json!({"region": "eu", "state": "link-1", "redirect_url": RETURN, "token_secret": LINK_SECRET}),
        )
        .await;
    secrets.add("connect link token", link.rsplit('/').next().unwrap());
    let landing = app
        .through_consent(&link, Choice::ApproveAs(defaults::SELLER_EU.into()))
        .await;
    claim_hashes.push(lwa_server::ids::hash(&landing.q["code"]));
    claim_v1(&app, &landing.q["code"], &mut secrets).await;

    // Ads (PKCE), then its re-authorization link.
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "ads-1", "redirect_url": RETURN}))
        .await;
    secrets.add("connect link token", link.rsplit('/').next().unwrap());
    let landing = app.through_consent(&link, Choice::Approve).await;
    let ads = claim_v1(&app, &landing.q["code"], &mut secrets).await;
    let ads_id = ads["connection"]["id"].as_str().unwrap().to_owned();
    harvest_store(&app, &mut secrets).await;
    let r = app
        .post_json(
            &format!("/v1/connections/{ads_id}/reauthorize-link"),
            &json!({"redirect_url": RETURN, "state": "re"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let link = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add("connect link token", link.rsplit('/').next().unwrap());
    let landing = app.through_consent(&link, Choice::Approve).await;
    assert_eq!(landing.q["seller_id"], ads_id);
    claim_v1(&app, &landing.q["code"], &mut secrets).await;
    harvest_store(&app, &mut secrets).await;

    // Amazon's Login URI (a renewal of the seed's seller).
    let start = app
        .fake
        .control()
        .appstore_authorize(AppstoreSpec {
            application_id: defaults::SP_API_APPLICATION_ID.into(),
            selling_partner_id: Some(defaults::SELLER_NA.into()),
            login_uri: format!("{}/auth/login?tenant_id={}", app.url, app.tenant_id),
            ..AppstoreSpec::default()
        })
        .await;
    let r = app.http.get(&start).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let callback = browser::follow(&crate::support::location(&r)).await.unwrap();
    let landing = app.deliver(&callback).await;
    claim_v1(&app, &landing.q["code"], &mut secrets).await;

    // An import with a tenant secret.
    let imported = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1LEAKIMPORT")
        .await;
    secrets.add("refresh_token", &imported);
    let r = app
        .post_json(
            "/v1/connections/import",
            &json!([{"region": "na", "refresh_token": imported, "selling_partner_id": "A1LEAKIMPORT", "token_secret": IMPORT_SECRET}]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    add_handle(&mut secrets, body["results"][0]["handle"].as_str().unwrap());
    harvest_store(&app, &mut secrets).await;

    // A key that works, then is revoked.
    let revoked = app.new_key().await;
    add_key(&mut secrets, &revoked);
    assert_eq!(
        app.http
            .get(format!("{}/v1/connections", app.url))
            .bearer_auth(&revoked)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (key_id, _) = lwa_server::auth::split_key(&revoked).unwrap();
    lwa_server::admin::revoke_key(&app.state, key_id).await.unwrap();
    let r = app
        .http
        .get(format!("{}/v1/connections", app.url))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Bad input that carries secrets: none of it may be logged or echoed.
    let wrong_secret = format!("lwak_{key_id}_{}", random(64));
    add_key(&mut secrets, &wrong_secret);
    let r = app
        .http
        .get(format!("{}/v1/connections", app.url))
        .bearer_auth(&wrong_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let unknown_code = random(43);
    secrets.add("claim code", &unknown_code);
    let r = app.post_json("/v1/claims", &json!({"code": unknown_code})).await;
    assert_eq!(r.status(), 400);
    let unknown_token = format!("Atzr|{}", random(60));
    secrets.add("refresh_token", &unknown_token);
    let mistyped_token = format!("Atzr|{}", random(60));
    secrets.add("refresh_token", &mistyped_token);
    let r = app
        .post_json(
            "/v1/connections/import",
            &json!([
                {"region": "na", "refresh_token": unknown_token},
                {"region": 5, "refresh_token": mistyped_token},
                {"region": "na", "refresh_token": [mistyped_token]},
            ]),
        )
        .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(secrets.found_in(text.as_bytes()).is_empty(), "echoed: {text}");
    let echoed = format!("Atzr|{}", random(60));
    secrets.add("refresh_token", &echoed);
    for (path, body) in [
        (
            "/v1/connect-links",
            json!({"region": "na", "state": "s", "redirect_url": RETURN, "expires_in": echoed}),
        ),
        ("/v1/claims", json!({"code": [echoed]})),
        ("/v1/claims", json!({"code": {"a": echoed}})),
    ] {
        let r = app.post_json(path, &body).await;
        assert_eq!(r.status(), 400, "{path}");
        let text = r.text().await.unwrap();
        assert!(
            secrets.found_in(text.as_bytes()).is_empty(),
            "{path} echoed: {text}"
        );
    }
    let state = random(43);
    let amazon_code = random(20);
    secrets.add("state", &state);
    secrets.add("authorization code", &amazon_code);
    let r = app
        .get(&format!(
            "/auth/redirect?state={state}&spapi_oauth_code={amazon_code}&selling_partner_id=A1"
        ))
        .await;
    assert_eq!(r.status(), 400);
    let link_token = random(43);
    secrets.add("connect link token", &link_token);
    assert_eq!(
        app.get(&format!("/auth/connect/{link_token}")).await.status(),
        404
    );
    let r = app
        .http
        .get(
            app.initialize_url(&[])
                .replace("tenant.example.com", "evil.example.com"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Webhooks: a tenant's signing secret, made and rotated, signs deliveries of connection
    // events; the operator's signs an app event.
    secrets.add("signing secret", OPERATOR_WEBHOOK_SECRET);
    let hooks = crate::webhooks::Receiver::start().await;
    let r = app
        .http
        .put(format!("{}/v1/webhook", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"url": hooks.url("/hooks")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    secrets.add("signing secret", first["signing_secret"].as_str().unwrap());
    let r = app
        .http
        .post(format!("{}/v1/webhook/rotate-secret", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    secrets.add("signing secret", rotated["signing_secret"].as_str().unwrap());
    let (webhooked, _) = app.onboard_sp("na", Some("A1LEAKWEBHOOK")).await;
    let r = app
        .http
        .delete(format!(
            "{}/v1/connections/{}",
            app.url,
            webhooked["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let app_event = lwa_server::webhooks::operator_event(
        &app.state,
        lwa_server::webhooks::EventType::AppClientSecretExpiring,
        json!({"app": "sp", "days_left": 30}),
    );
    assert_eq!(app_event.len(), 1);
    app.state.store.enqueue_events(&app_event).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while hooks.received().len() < 2 || operator_hooks.received().is_empty() {
        lwa_server::webhooks::worker::run_once(&app.state).await;
        assert!(
            std::time::Instant::now() < deadline,
            "the webhooks were not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        operator_hooks.received()[0]
            .header("lwa-broker-signature")
            .starts_with("t=")
    );
    assert_eq!(
        operator_hooks.received()[0].json()["type"],
        "app.client_secret_expiring"
    );

    // Everything Amazon saw, and the store's last tokens.
    harvest_fake(&app, &mut secrets).await;
    harvest_store(&app, &mut secrets).await;
    for (what, at_least) in [
        ("signing secret", 3),
        ("refresh_token", 8),
        ("access_token", 6),
        ("authorization code", 6),
        ("state", 6),
        ("claim code", 6),
        ("connect link token", 4),
        ("client secret", 4),
        ("PKCE verifier", 2),
        ("handle", 3),
        ("API key secret", 4),
    ] {
        assert!(
            secrets.count(what) >= at_least,
            "only {} {what}s collected",
            secrets.count(what)
        );
    }

    // The search itself finds each form.
    let (sample, _) = secrets
        .0
        .iter()
        .find(|(v, w)| w.as_str() == "refresh_token" && v.contains('|'))
        .unwrap();
    for form in Secrets::forms(sample) {
        assert_eq!(
            secrets.found_in(format!("x={form};").as_bytes()).len(),
            1,
            "{form}"
        );
    }
    assert_eq!(Secrets::forms(sample).len(), 2, "raw and percent-encoded differ");
    assert_eq!(Secrets::forms("a\"b/c+d=ef0123456789").len(), 3);

    // The logs: there are some, at debug level, and they hold none of it.
    let logged = logs();
    assert!(!logged.is_empty());
    assert!(logged.contains("authorization stored"), "{logged}");
    assert!(logged.contains("DEBUG"), "debug lines are captured");
    assert!(logged.contains("route=/v1/connections/import"), "{logged}");
    let found = secrets.found_in(logged.as_bytes());
    assert!(found.is_empty(), "logged: {found:#?}");

    // The database file and its WAL: no plaintext, claim codes only as hashes.
    let mut db = std::fs::read(app.db_path()).unwrap();
    let wal = app.db_path().with_file_name("broker.db-wal");
    if let Ok(bytes) = std::fs::read(&wal) {
        db.extend(bytes);
    }
    let found = secrets.found_in(&db);
    assert!(found.is_empty(), "in the database: {found:#?}");
    for hash in &claim_hashes {
        assert!(
            db.windows(hash.len()).any(|w| w == hash.as_bytes()),
            "the claim code's hash is stored"
        );
    }
    let key_hash = lwa_server::ids::hash(lwa_server::auth::split_key(&app.key).unwrap().1);
    assert!(db.windows(key_hash.len()).any(|w| w == key_hash.as_bytes()));
}

/// What a vending call answered: its status and body.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The token of a 200 answer, remembered as `what`.
fn took(secrets: &mut Secrets, what: &str, field: &str, (status, body): (u16, Value)) -> String {
    assert_eq!(status, 200, "{what}: {body}");
    let token = body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no {field}: {body}"))
        .to_owned();
    secrets.add(what, &token);
    token
}

/// An access token handed out.
fn access(secrets: &mut Secrets, answer: (u16, Value)) -> String {
    took(secrets, "access_token", "access_token", answer)
}

/// A Restricted Data Token handed out.
fn restricted(secrets: &mut Secrets, answer: (u16, Value)) -> String {
    took(secrets, "RDT", "restricted_data_token", answer)
}

/// A grantless token handed out.
fn grantless(secrets: &mut Secrets, answer: (u16, Value)) -> String {
    took(secrets, "grantless token", "access_token", answer)
}

/// An error answer, checked for echoes of anything secret.
fn refused(secrets: &Secrets, what: &str, expected: u16, (status, body): (u16, Value)) -> Value {
    assert_eq!(status, expected, "{what}: {body}");
    let text = body.to_string();
    let echoed = secrets.found_in(text.as_bytes());
    assert!(echoed.is_empty(), "{what} echoed {echoed:?}: {text}");
    body
}

async fn vend_v1(app: &TestApp, id: &str, secret: Option<&str>) -> (u16, Value) {
    let mut r = app
        .http
        .post(format!("{}/v1/connections/{id}/access-token", app.url))
        .bearer_auth(&app.key);
    if let Some(secret) = secret {
        r = r.header("x-amazon-token-secret", secret);
    }
    answer(r.send().await.unwrap()).await
}

async fn rdt(app: &TestApp, id: &str, secret: Option<&str>, path: &str) -> (u16, Value) {
    let mut r = app
        .http
        .post(format!("{}/v1/connections/{id}/restricted-data-token", app.url))
        .bearer_auth(&app.key)
        .json(&json!({
            "restrictedResources": [{"method": "GET", "path": path, "dataElements": ["buyerInfo"]}]
        }));
    if let Some(secret) = secret {
        r = r.header("x-amazon-token-secret", secret);
    }
    answer(r.send().await.unwrap()).await
}

/// `/auth/o2/token` with the tenant's key as the client: `how` is form, json or basic.
async fn lwa_token(app: &TestApp, how: &str, grant: &[(&str, &str)]) -> (u16, Value) {
    let (id, secret) = lwa_server::auth::split_key(&app.key).unwrap();
    lwa_token_as(app, how, id, secret, grant).await
}

async fn lwa_token_as(
    app: &TestApp,
    how: &str,
    id: &str,
    secret: &str,
    grant: &[(&str, &str)],
) -> (u16, Value) {
    let r = app.http.post(format!("{}/auth/o2/token", app.url));
    let mut pairs: Vec<(&str, &str)> = grant.to_vec();
    let r = match how {
        "form" => {
            pairs.extend([("client_id", id), ("client_secret", secret)]);
            r.form(&pairs)
        }
        "json" => {
            pairs.extend([("client_id", id), ("client_secret", secret)]);
            let object: serde_json::Map<String, Value> =
                pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            r.json(&object)
        }
        "basic" => r.basic_auth(id, Some(secret)).form(&pairs),
        other => panic!("{other}"),
    };
    answer(r.send().await.unwrap()).await
}

async fn fault(app: &TestApp, spec: FaultSpec) {
    app.fake.control().clear_faults().await;
    app.fake.control().add_fault(spec).await;
}

fn refresh(handle: &str) -> [(&str, &str); 2] {
    [("grant_type", "refresh_token"), ("refresh_token", handle)]
}

fn lwa_script(status: u16, error: Option<&str>, drop: bool) -> FaultSpec {
    FaultSpec {
        target: FaultTarget::Lwa,
        script: Some(FaultScript {
            count: 1000,
            status: Some(status),
            error: error.map(str::to_owned),
            drop,
        }),
        ..FaultSpec::default()
    }
}

#[tokio::test]
async fn no_vended_token_or_secret_reaches_the_logs_or_the_database() {
    const NOTIFICATIONS: &str = "sellingpartnerapi::notifications";
    const ROTATION: &str = "sellingpartnerapi::client_credential:rotation";
    let app = spawn_with(|s| s.grantless_scopes = vec![NOTIFICATIONS.into(), ROTATION.into()]).await;
    let (_, b_key) = app.other_tenant().await;
    let mut secrets = Secrets::default();
    add_key(&mut secrets, &app.key);
    add_key(&mut secrets, &b_key);
    secrets.add("tenant secret", VEND_SECRET);
    for s in [
        defaults::SP_API_CLIENT_SECRET,
        defaults::SP_API_PREVIOUS_CLIENT_SECRET,
        defaults::ADS_CLIENT_SECRET,
        defaults::ADS_PREVIOUS_CLIENT_SECRET,
    ] {
        secrets.add("client secret", s);
    }

    // A plain connection and one sealed under a tenant-held secret.
    let (plain, plain_handle) = app.onboard_sp("na", Some("A1LEAKVENDPLAIN")).await;
    let p = plain["id"].as_str().unwrap().to_owned();
    let link = app
        .connect_link(
            json!({"region": "na", "state": "v", "redirect_url": RETURN, "token_secret": VEND_SECRET}),
        )
        .await;
    secrets.add("connect link token", link.rsplit('/').next().unwrap());
    let landing = app
        .through_consent(&link, Choice::ApproveAs("A1LEAKVENDSECRET".into()))
        .await;
    let body = claim_v1(&app, &landing.q["code"], &mut secrets).await;
    let s = body["connection"]["id"].as_str().unwrap().to_owned();
    let s_handle = body["handle"].as_str().unwrap().to_owned();
    assert!(s_handle.contains('.'), "the handle carries the secret");
    harvest_store(&app, &mut secrets).await;
    let mut access_tokens = std::collections::BTreeSet::new();

    // Every way of getting each kind of token, with refreshes in between.
    access_tokens.insert(access(&mut secrets, vend_v1(&app, &p, None).await));
    restricted(
        &mut secrets,
        rdt(&app, &p, None, "/orders/v0/orders/123-1234567-1234567").await,
    );
    restricted(
        &mut secrets,
        rdt(&app, &p, None, "/orders/v0/orders/123-1234567-1234567/buyerInfo").await,
    );
    let grantless_v1 = app
        .http
        .post(format!("{}/v1/grantless-tokens", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"scope": NOTIFICATIONS}))
        .send()
        .await
        .unwrap();
    grantless(&mut secrets, answer(grantless_v1).await);
    grantless(
        &mut secrets,
        lwa_token(
            &app,
            "form",
            &[("grant_type", "client_credentials"), ("scope", ROTATION)],
        )
        .await,
    );
    access_tokens.insert(access(&mut secrets, vend_v1(&app, &s, Some(VEND_SECRET)).await));
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "basic", &refresh(&s_handle)).await,
    ));
    restricted(
        &mut secrets,
        rdt(
            &app,
            &s,
            Some(VEND_SECRET),
            "/orders/v0/orders/902-1845936-5435065",
        )
        .await,
    );

    app.advance(3400.0).await;
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "form", &refresh(&plain_handle)).await,
    ));
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "json", &refresh(&s_handle)).await,
    ));
    harvest_store(&app, &mut secrets).await;
    app.advance(3400.0).await;
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "basic", &refresh(&plain_handle)).await,
    ));
    access_tokens.insert(access(&mut secrets, vend_v1(&app, &s, Some(VEND_SECRET)).await));
    grantless(
        &mut secrets,
        lwa_token(
            &app,
            "json",
            &[("grant_type", "client_credentials"), ("scope", NOTIFICATIONS)],
        )
        .await,
    );
    harvest_store(&app, &mut secrets).await;
    app.advance(3400.0).await;
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "json", &refresh(&plain_handle)).await,
    ));
    access_tokens.insert(access(
        &mut secrets,
        lwa_token(&app, "form", &refresh(&s_handle)).await,
    ));
    harvest_store(&app, &mut secrets).await;
    assert!(
        access_tokens.len() >= 6,
        "refreshes gave new tokens: {}",
        access_tokens.len()
    );

    // Bad input that carries secrets.
    let wrong = random(40);
    secrets.add("tenant secret", &wrong);
    refused(
        &secrets,
        "wrong tenant secret",
        403,
        vend_v1(&app, &s, Some(&wrong)).await,
    );
    refused(
        &secrets,
        "wrong tenant secret, rdt",
        403,
        rdt(&app, &s, Some(&wrong), "/orders/v0/orders/1").await,
    );
    // A secret the plain connection does not need is ignored (and not kept anywhere).
    let unneeded = random(48);
    secrets.add("tenant secret", &unneeded);
    access(&mut secrets, vend_v1(&app, &p, Some(&unneeded)).await);
    let wrong_handle = lwa_server::onboarding::handle(&s, Some(&TokenSecret::parse(&random(44)).unwrap()));
    add_handle(&mut secrets, &wrong_handle);
    refused(
        &secrets,
        "wrong secret in the handle",
        400,
        lwa_token(&app, "form", &refresh(&wrong_handle)).await,
    );
    let (key_id, _) = lwa_server::auth::split_key(&app.key).unwrap();
    for how in ["form", "json", "basic"] {
        let wrong_secret = random(64);
        add_key(&mut secrets, &format!("lwak_{key_id}_{wrong_secret}"));
        refused(
            &secrets,
            &format!("wrong client secret ({how})"),
            401,
            lwa_token_as(&app, how, key_id, &wrong_secret, &refresh(&s_handle)).await,
        );
    }
    // Mistyped parameters are named, never echoed.
    let mistyped = random(64);
    secrets.add("API key secret", &mistyped);
    let r = app
        .http
        .post(format!("{}/auth/o2/token", app.url))
        .json(&json!({
            "grant_type": [5],
            "refresh_token": s_handle,
            "client_id": key_id,
            "client_secret": mistyped,
        }))
        .send()
        .await
        .unwrap();
    refused(&secrets, "mistyped grant_type", 400, answer(r).await);

    // Failing refreshes: Amazon down, unreachable, refusing the app, the Tokens API failing,
    // a revoked grant. The errors are logged; no token in them.
    app.advance(3700.0).await;
    fault(&app, lwa_script(500, None, false)).await;
    let down = refused(&secrets, "LWA 500, v1", 503, vend_v1(&app, &p, None).await);
    assert_eq!(down["error"]["code"], "amazon_unavailable");
    let down = refused(
        &secrets,
        "LWA 500, lwa",
        503,
        lwa_token(&app, "form", &refresh(&s_handle)).await,
    );
    assert_eq!(down["error"], "temporarily_unavailable");
    refused(
        &secrets,
        "LWA 500, grantless",
        503,
        lwa_token(
            &app,
            "basic",
            &[("grant_type", "client_credentials"), ("scope", NOTIFICATIONS)],
        )
        .await,
    );
    fault(&app, lwa_script(500, None, true)).await;
    refused(
        &secrets,
        "LWA unreachable",
        503,
        vend_v1(&app, &s, Some(VEND_SECRET)).await,
    );
    // A failure holds for a while (no call to Amazon on every request); let it pass.
    app.advance(10.0).await;
    fault(&app, lwa_script(401, Some("invalid_client"), false)).await;
    let refused_app = refused(
        &secrets,
        "LWA refuses the app, v1",
        502,
        vend_v1(&app, &p, None).await,
    );
    assert_eq!(refused_app["error"]["code"], "amazon_refused_app");
    let refused_app = refused(
        &secrets,
        "LWA refuses the app, lwa",
        500,
        lwa_token(&app, "json", &refresh(&plain_handle)).await,
    );
    assert_eq!(refused_app["error"], "server_error");
    app.fake.control().clear_faults().await;
    app.advance(31.0).await;
    access_tokens.insert(access(&mut secrets, vend_v1(&app, &p, None).await));
    fault(
        &app,
        FaultSpec {
            target: FaultTarget::Api,
            path_prefix: Some("/tokens".into()),
            script: Some(FaultScript {
                count: 1000,
                status: Some(500),
                ..FaultScript::default()
            }),
            ..FaultSpec::default()
        },
    )
    .await;
    refused(
        &secrets,
        "Tokens API 500",
        503,
        rdt(&app, &p, None, "/orders/v0/orders/555-1234567-1234567").await,
    );
    app.fake.control().clear_faults().await;
    app.fake
        .control()
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: Some("A1LEAKVENDSECRET".into()),
            ..RevokeSpec::default()
        })
        .await;
    let revoked = refused(
        &secrets,
        "revoked grant",
        409,
        vend_v1(&app, &s, Some(VEND_SECRET)).await,
    );
    assert_eq!(revoked["error"]["code"], "needs_reauth");
    refused(
        &secrets,
        "revoked grant, lwa",
        400,
        lwa_token(&app, "form", &refresh(&s_handle)).await,
    );

    // The audit trail is written (it is in the database too).
    let r = app
        .http
        .get(format!("{}/v1/audit?limit=1000", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = r.text().await.unwrap();
    assert!(audit.contains("restricted_data_token"), "{audit}");
    let echoed = secrets.found_in(audit.as_bytes());
    assert!(echoed.is_empty(), "the audit trail holds {echoed:?}");

    harvest_fake(&app, &mut secrets).await;
    harvest_store(&app, &mut secrets).await;
    for (what, at_least) in [
        ("access_token", 8),
        ("RDT", 3),
        ("grantless token", 3),
        ("refresh_token", 2),
        ("handle", 2),
        ("handle secret", 2),
        ("tenant secret", 3),
        ("API key secret", 6),
        ("client secret", 4),
    ] {
        assert!(
            secrets.count(what) >= at_least,
            "only {} {what}s collected",
            secrets.count(what)
        );
    }

    // The logs saw every route and every failure, and hold none of it.
    let logged = logs();
    for expected in [
        "route=/v1/connections/{id}/access-token",
        "route=/v1/connections/{id}/restricted-data-token",
        "route=/v1/grantless-tokens",
        "route=/auth/o2/token",
        "refresh failed",
        "LWA refused the broker's app",
    ] {
        assert!(logged.contains(expected), "no {expected:?} in the logs");
    }
    let found = secrets.found_in(logged.as_bytes());
    assert!(found.is_empty(), "logged: {found:#?}");

    // The database file and its WAL: no plaintext.
    let mut db = std::fs::read(app.db_path()).unwrap();
    if let Ok(bytes) = std::fs::read(app.db_path().with_file_name("broker.db-wal")) {
        db.extend(bytes);
    }
    let found = secrets.found_in(&db);
    assert!(found.is_empty(), "in the database: {found:#?}");
}

/// Client-secret rotation: the configured secrets, the rotated one from Amazon's notification,
/// one set by hand, a refused malformed one, the rotation's grantless token and the operator's
/// admin token reach neither the logs nor the database in clear.
#[tokio::test]
async fn no_client_secret_or_admin_token_reaches_the_logs_or_the_database() {
    let app = spawn().await;
    let mut secrets = Secrets::default();
    secrets.add("client secret", defaults::SP_API_CLIENT_SECRET);
    secrets.add("client secret", defaults::ADS_CLIENT_SECRET);
    let admin = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap()
        .to_string();
    secrets.add("admin token", &admin);
    let refresh = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1LEAKROTATE")
        .await;
    secrets.add("refresh_token", &refresh);
    let r = app
        .post_json(
            "/v1/connections/import",
            &json!([{"region": "na", "refresh_token": refresh, "selling_partner_id": "A1LEAKROTATE"}]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["results"][0]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |body: Value, token: String| {
        app.http
            .post(format!("{}/admin/api/app-secret-notifications", app.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    // Rotation at Amazon, the new secret posted by the operator.
    lwa_server::apps::rotate_secret_at_amazon(&app.state, "sandbox-sp-api", lwa::Region::Na)
        .await
        .unwrap();
    let notification = app
        .fake
        .control()
        .notifications()
        .await
        .into_iter()
        .rfind(|n| n["notificationType"] == "APPLICATION_OAUTH_CLIENT_NEW_SECRET")
        .unwrap();
    let rotated = notification["payload"]["applicationOAuthClientNewSecret"]["newClientSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add("client secret", &rotated);
    assert_eq!(post(notification, admin.clone()).await.unwrap().status(), 200);
    // A malformed secret and a wrong admin token are refused without being repeated.
    let malformed = format!("amzn1.oa2-cs.v1.{}", random(40));
    secrets.add("malformed client secret", &malformed);
    let bad = json!({"notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET", "payload": {
        "applicationOAuthClientNewSecret": {"clientId": defaults::SP_API_CLIENT_ID,
            "newClientSecret": format!("{malformed} tail")}}});
    assert_eq!(post(bad, admin.clone()).await.unwrap().status(), 400);
    let wrong_admin = format!("lwaadm_{}", random(64));
    secrets.add("wrong admin token", &wrong_admin);
    let refused = post(json!({}), wrong_admin).await.unwrap();
    assert_eq!(refused.status(), 401);

    // Refreshes with the new secret, one falling back to the old one, then a secret set by hand.
    app.advance(3600.0).await;
    assert_eq!(vend_v1(&app, &id, None).await.0, 200);
    fault(
        &app,
        FaultSpec {
            target: FaultTarget::Lwa,
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            script: Some(FaultScript {
                count: 1,
                status: Some(401),
                error: Some("invalid_client".into()),
                drop: false,
            }),
            ..FaultSpec::default()
        },
    )
    .await;
    app.advance(3600.0).await;
    assert_eq!(vend_v1(&app, &id, None).await.0, 200);
    app.fake.control().clear_faults().await;
    let by_hand = format!("amzn1.oa2-cs.v1.{}", random(48));
    secrets.add("client secret", &by_hand);
    lwa_server::apps::set_secret(
        &app.state,
        "sandbox-sp-api",
        lwa_server::apps::NewSecret {
            secret: by_hand.as_str().into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    // The warnings and the listing.
    app.advance(151.0 * 86_400.0).await;
    assert!(
        !lwa_server::apps::due_secret_warnings(&app.state)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = serde_json::to_string(&lwa_server::apps::secret_status(&app.state).await.unwrap()).unwrap();
    harvest_fake(&app, &mut secrets).await;
    assert!(secrets.count("client secret") >= 4);
    assert!(
        secrets.count("access_token") >= 1,
        "the rotation's grantless token"
    );
    let found = secrets.found_in(listed.as_bytes());
    assert!(found.is_empty(), "listed: {found:#?}");

    let logged = logs();
    assert!(logged.contains("a new client secret was set"), "{logged}");
    assert!(logged.contains("newest client secret refused"), "{logged}");
    let found = secrets.found_in(logged.as_bytes());
    assert!(found.is_empty(), "logged: {found:#?}");
    let mut db = std::fs::read(app.db_path()).unwrap();
    if let Ok(bytes) = std::fs::read(app.db_path().with_file_name("broker.db-wal")) {
        db.extend(bytes);
    }
    let found = secrets.found_in(&db);
    assert!(found.is_empty(), "in the database: {found:#?}");
    let admin_hash = lwa_server::ids::hash(&admin);
    assert!(
        db.windows(admin_hash.len()).any(|w| w == admin_hash.as_bytes()),
        "the admin token is stored as its SHA-256"
    );
}

/// Master key rotation: the keys themselves, and every token the rotation opens and seals
/// again (tenant-layered ones included), reach no log line; a value sealed with a key that is
/// not configured is reported by table, row and column, never by content.
#[tokio::test]
async fn no_master_key_or_token_reaches_the_logs_during_a_rotation() {
    use lwa_seal::{Keyring, MasterKey};
    use lwa_server::rotation::{RotateOptions, SEALED_TABLES, key_usage, rotate};
    use lwa_server::sealing::Sealer;

    let (old, new, stranger) = (
        MasterKey::generate(),
        MasterKey::generate(),
        MasterKey::generate(),
    );
    let old_entry = format!("2026-05:{}", old.to_base64().as_str());
    let app = spawn_with(|s| {
        s.master_key = None;
        s.master_keys = Some(old_entry.clone());
    })
    .await;
    let mut secrets = Secrets::default();
    secrets.add("master key", old.to_base64().as_str());
    secrets.add("master key", new.to_base64().as_str());
    secrets.add("master key", stranger.to_base64().as_str());
    secrets.add("master key", &old_entry);

    // Values sealed with the old key: two connections (one with a tenant-held secret), a
    // connect link carrying a token secret, a tenant signing secret.
    let (plain, _) = app.onboard_sp("na", Some("A1ROTATELEAK1")).await;
    let link = app
        .post_json(
            "/v1/connect-links",
            &json!({"region": "na", "state": "s", "redirect_url": RETURN, "token_secret": LINK_SECRET}),
        )
        .await;
    assert_eq!(link.status(), 201);
    let landing = app
        .through_consent(
            link.json::<Value>().await.unwrap()["url"].as_str().unwrap(),
            Choice::ApproveAs("A1ROTATELEAK2".into()),
        )
        .await;
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    assert_eq!(r.status(), 200);
    let layered: Value = r.json().await.unwrap();
    let pending_link = app
        .post_json(
            "/v1/connect-links",
            &json!({"region": "na", "state": "s2", "redirect_url": RETURN, "token_secret": VEND_SECRET}),
        )
        .await;
    assert_eq!(pending_link.status(), 201);
    let store = app.state.store.clone();
    let old_sealer = app.state.sealer.clone();
    let mut tenant = store.tenant(&app.tenant_id).await.unwrap().unwrap();
    let signing = random(40);
    secrets.add("signing secret", &signing);
    tenant.signing_secret = Some(old_sealer.seal(&tenant.id, "signing_secret", &signing, None));
    assert!(store.update_tenant(&tenant).await.unwrap());
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    let layered_id = layered["connection"]["id"].as_str().unwrap().to_owned();
    let layer = TokenSecret::parse(LINK_SECRET).unwrap();
    for (id, secret) in [(&plain_id, None), (&layered_id, Some(&layer))] {
        let row = store.connection(id).await.unwrap().unwrap();
        let refresh = old_sealer
            .open(id, "refresh_token", row.refresh_token.as_deref().unwrap(), secret)
            .unwrap();
        secrets.add("refresh_token", &refresh);
    }
    // And one value sealed with a key nobody configured.
    let mut orphan = store.connection(&plain_id).await.unwrap().unwrap();
    orphan.id = "conn_orphan".into();
    orphan.selling_partner_id = Some("A1ORPHAN".into());
    orphan.refresh_token = Some(Sealer::new(Keyring::new(stranger.clone())).seal(
        "conn_orphan",
        "refresh_token",
        "Atzr|orphan-refresh-token-0123456789",
        None,
    ));
    orphan.access_token = None;
    store.insert_connection(&orphan).await.unwrap();
    secrets.add("refresh_token", "Atzr|orphan-refresh-token-0123456789");

    let keyring = Keyring::new(new.clone()).with_older(old.clone());
    let mut batches = 0;
    let report = rotate(
        store.as_ref(),
        &keyring,
        RotateOptions {
            batch_size: 1,
            max_rows_per_second: None,
        },
        &mut |_| batches += 1,
    )
    .await
    .unwrap();
    assert!(batches >= 5, "one progress call per batch of one row: {batches}");
    assert_eq!(report.tables.len(), SEALED_TABLES.len());
    let connections = &report.tables[0];
    assert_eq!(connections.rows, 3);
    assert_eq!(
        connections.resealed, 4,
        "two connections' refresh and access tokens"
    );
    assert_eq!(connections.failures.len(), 1);
    let failure = &connections.failures[0];
    assert_eq!(
        (failure.id.as_str(), failure.column),
        ("conn_orphan", "refresh_token")
    );
    assert!(
        failure.reason.contains(&stranger.fingerprint().to_string()),
        "{failure:?}"
    );
    assert_eq!(report.still_on_other_keys(), 1, "the orphan");
    assert_eq!(report.tables[1].resealed, 1, "the signing secret");
    assert_eq!(report.tables[3].resealed, 1, "the pending link's token secret");
    assert!(
        report
            .unused_keys(&keyring.fingerprints())
            .contains(&old.fingerprint())
    );
    let usage = key_usage(store.as_ref()).await.unwrap();
    assert_eq!(usage.len(), 2, "{usage:?}");

    // Everything opens with the new key alone, the tenant layer with its secret only.
    let new_only = Sealer::new(Keyring::new(new.clone()));
    let row = store.connection(&layered_id).await.unwrap().unwrap();
    let sealed = row.refresh_token.as_deref().unwrap();
    assert!(new_only.open(&layered_id, "refresh_token", sealed, None).is_err());
    let opened = new_only
        .open(&layered_id, "refresh_token", sealed, Some(&layer))
        .unwrap();
    assert!(opened.starts_with("Atzr|"));
    let tenant = store.tenant(&app.tenant_id).await.unwrap().unwrap();
    assert_eq!(
        &*new_only
            .open(
                &tenant.id,
                "signing_secret",
                tenant.signing_secret.as_deref().unwrap(),
                None
            )
            .unwrap(),
        signing.as_str()
    );

    let logged = logs();
    assert!(logged.contains("re-sealed a table"), "the rotation logged");
    let found = secrets.found_in(logged.as_bytes());
    assert!(found.is_empty(), "logged: {found:#?}");
}

/// The proxy: every token it sent Amazon (access tokens, RDTs, Ads bearer tokens), every
/// stand-in it issued, the keys and the tenant secret it was given, through successes,
/// refresh-and-retry, 429 retries, refusals and stand-in flows, reach neither the logs nor the
/// database in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_the_proxy_handles_reaches_the_logs_or_the_database() {
    const ORDER: &str = "123-1234567-1234567";
    let app = spawn().await;
    let mut secrets = Secrets::default();
    add_key(&mut secrets, &app.key);
    let proxy_key = lwa_server::admin::create_key(&app.state, &app.tenant_id, None, "proxy-only")
        .await
        .unwrap()
        .key
        .to_string();
    add_key(&mut secrets, &proxy_key);
    secrets.add("tenant secret", VEND_SECRET);
    let (plain, plain_handle) = app.onboard_sp("na", Some("A1LEAKPROXYPLAIN")).await;
    let p = plain["id"].as_str().unwrap().to_owned();
    let link = app
        .connect_link(
            json!({"region": "na", "state": "v", "redirect_url": RETURN, "token_secret": VEND_SECRET}),
        )
        .await;
    let landing = app
        .through_consent(&link, Choice::ApproveAs("A1LEAKPROXYSECRET".into()))
        .await;
    let body = claim_v1(&app, &landing.q["code"], &mut secrets).await;
    let s = body["connection"]["id"].as_str().unwrap().to_owned();
    let s_handle = body["handle"].as_str().unwrap().to_owned();
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "a", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let ads = claim_v1(&app, &landing.q["code"], &mut secrets).await["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = |id: &str, path: &str| {
        app.http
            .get(format!("{}/v1/connections/{id}/proxy{path}", app.url))
            .bearer_auth(&app.key)
    };
    let ok = |r: reqwest::Response| {
        assert!(r.status().is_success(), "{}", r.status());
    };

    ok(proxy(&p, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap());
    ok(proxy(&p, &format!("/orders/v0/orders/{ORDER}/address"))
        .send()
        .await
        .unwrap());
    ok(proxy(&s, "/sellers/v1/account")
        .header("x-amazon-token-secret", VEND_SECRET)
        .send()
        .await
        .unwrap());
    assert_eq!(
        proxy(&s, "/sellers/v1/account").send().await.unwrap().status(),
        403
    );
    ok(proxy(&ads, "/v2/profiles").send().await.unwrap());
    ok(app
        .http
        .post(format!(
            "{}/v1/connections/{ads}/proxy/sp/campaigns/list",
            app.url
        ))
        .bearer_auth(&app.key)
        .header("amazon-advertising-api-scope", defaults::PROFILE_NA.to_string())
        .send()
        .await
        .unwrap());
    // Amazon throttles twice (429 retries), then refuses the token once (refresh and retry).
    app.fake.control().set_rate("getAccount", 100.0, 100).await;
    fault(
        &app,
        FaultSpec {
            target: FaultTarget::Api,
            path_prefix: Some("/sellers/v1/account".into()),
            script: Some(FaultScript {
                count: 2,
                status: Some(429),
                error: None,
                drop: false,
            }),
            ..FaultSpec::default()
        },
    )
    .await;
    let r = proxy(&p, "/sellers/v1/account").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-lwa-broker-retries"], "2");
    harvest_fake(&app, &mut secrets).await;
    let current = app
        .fake
        .control()
        .requests(Some("sellingpartnerapi-na.amazon.com"))
        .await;
    let token = current.last().unwrap().headers["x-amz-access-token"].clone();
    app.fake
        .control()
        .revoke(RevokeSpec {
            access_token: Some(token),
            ..RevokeSpec::default()
        })
        .await;
    let r = proxy(&p, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-lwa-broker-refreshed"], "true");

    // Stand-ins: issued, used at the root and on /v1, swapped for RDTs, tampered with.
    let (key_id, key_secret) = lwa_server::auth::split_key(&proxy_key).unwrap();
    for handle in [&plain_handle, &s_handle] {
        let (status, body) = lwa_token_as(&app, "form", key_id, key_secret, &refresh(handle)).await;
        assert_eq!(status, 200, "{body}");
        let stand_in = body["access_token"].as_str().unwrap().to_owned();
        secrets.add("stand-in token", &stand_in);
        let r = app
            .http
            .get(format!("{}/sellers/v1/account", app.url))
            .header("x-amz-access-token", &stand_in)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = app
            .http
            .post(format!("{}/tokens/2021-03-01/restrictedDataToken", app.url))
            .header("x-amz-access-token", &stand_in)
            .json(&json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]}))
            .send()
            .await
            .unwrap();
        let rdt: Value = r.json().await.unwrap();
        let rdt = rdt["restrictedDataToken"].as_str().unwrap().to_owned();
        secrets.add("stand-in RDT", &rdt);
        let r = app
            .http
            .get(format!("{}/orders/v0/orders/{ORDER}/address", app.url))
            .header("x-amz-access-token", &rdt)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let tampered = format!("{}x", &stand_in[..stand_in.len() - 1]);
        let r = app
            .http
            .get(format!("{}/sellers/v1/account", app.url))
            .header("x-amz-access-token", &tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    harvest_fake(&app, &mut secrets).await;
    harvest_store(&app, &mut secrets).await;
    for (what, at_least) in [("access_token", 5), ("stand-in token", 2), ("stand-in RDT", 2)] {
        assert!(
            secrets.count(what) >= at_least,
            "only {} {what}s collected",
            secrets.count(what)
        );
    }
    let logged = logs();
    assert!(
        logged.contains("route=/v1/connections/{id}/proxy/{*path}"),
        "the proxy's requests were not logged"
    );
    let found = secrets.found_in(logged.as_bytes());
    assert!(found.is_empty(), "logged: {found:#?}");
    let mut db = std::fs::read(app.db_path()).unwrap();
    if let Ok(bytes) = std::fs::read(app.db_path().with_file_name("broker.db-wal")) {
        db.extend(bytes);
    }
    let found = secrets.found_in(&db);
    assert!(found.is_empty(), "in the database: {found:#?}");
}

//! No secret reaches a log line (at debug level) or the database file: one broad run through
//! every flow, then every secret the test issued or saw is looked for, raw, percent-encoded
//! and JSON-escaped, in everything the process logged and in the SQLite file and its WAL.

use std::collections::BTreeMap;

use base64::Engine;
use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppstoreSpec, defaults};
use lwa_server::sealing::TokenSecret;
use lwa_store::ConnectionFilter;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, logs, spawn};

const SEED_SECRET: &str = "q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw==";
const LINK_SECRET: &str = "LinkSecret-0123456789abcdefghijklmnopqrstu";
const IMPORT_SECRET: &str = "ImportSecret/0123456789+abcdefghijklmnopq=";

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
    let tenant_secrets: Vec<Option<TokenSecret>> =
        [None, Some(SEED_SECRET), Some(LINK_SECRET), Some(IMPORT_SECRET)]
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
    let app = spawn().await;
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

    // Everything Amazon saw, and the store's last tokens.
    harvest_fake(&app, &mut secrets).await;
    harvest_store(&app, &mut secrets).await;
    for (what, at_least) in [
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

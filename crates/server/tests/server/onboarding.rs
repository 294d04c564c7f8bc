//! Onboarding end to end: `/auth/initialize`, connect links, Amazon's Login URI, the callback,
//! re-authorization, decline, claims, and every seed message.

use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppstoreSpec, defaults};
use serde_json::{Value, json};

use crate::support::{RETURN, spawn, spawn_with};

#[tokio::test]
async fn seed_flow_seller_na_from_initialize_to_claim() {
    let app = spawn().await;
    let r = app.http.get(app.initialize_url(&[])).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let consent = crate::support::location(&r);
    assert!(
        consent.starts_with(&format!(
            "{}/sellercentral.amazon.com/apps/authorize/consent?",
            app.fake.base_url()
        )),
        "{consent}"
    );
    let q = crate::support::query(&consent);
    assert_eq!(q["application_id"], defaults::SP_API_APPLICATION_ID);
    assert_eq!(q["redirect_uri"], format!("{}/auth/redirect", app.url));
    // The broker's own state: 256 random bits, not the tenant's.
    assert_eq!(q["state"].len(), 43);
    assert_ne!(q["state"], "internal-seller-123");

    let back = browser::consent(&consent, Choice::Approve).await.unwrap();
    let landing = app.deliver(&back).await;
    assert!(landing.url.starts_with(RETURN), "{}", landing.url);
    assert_eq!(landing.q["state"], "internal-seller-123");
    assert_eq!(landing.q["tenant_id"], app.tenant_id);
    let seller_id = landing.q["seller_id"].clone();
    assert!(seller_id.starts_with("conn_"));
    let code = landing.q["code"].clone();

    // Seed 003's claim: x-adb-access-token, {success, data}.
    let r = app
        .http
        .post(format!("{}/api/claim-code", app.url))
        .header("x-adb-access-token", &app.key)
        .json(&json!({"seller_id": seller_id, "name": "Seller internal-seller-123", "callback_url": "https://tenant.example.com/webhooks/amazon", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], true);
    let data = &body["data"];
    assert_eq!(data["seller_id"], seller_id.as_str());
    assert_eq!(data["selling_partner_id"], defaults::SELLER_NA);
    assert_eq!(data["region"], "na");
    assert_eq!(data["account_type"], "seller");
    assert_eq!(data["status"], "active");
    assert_eq!(data["token_secret"], "tenant");
    assert_eq!(data["name"], "Seller internal-seller-123");
    assert_eq!(data["callback_url"], "https://tenant.example.com/webhooks/amazon");
    let handle = data["refresh_token"].as_str().unwrap();
    assert_eq!(data["handle"], handle);
    assert!(
        handle.starts_with(&format!("lwah_{seller_id}.")),
        "the handle carries the tenant secret"
    );
    let (id, secret) = lwa_server::onboarding::parse_handle(handle).unwrap();
    assert_eq!(
        secret.unwrap().expose(),
        "q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw=="
    );

    // The stored refresh token is the fake's, and opens only with the tenant's secret.
    let stored = app.state.store.connection(&id).await.unwrap().unwrap();
    let sealed = stored.refresh_token.unwrap();
    assert!(
        app.state
            .sealer
            .open(&id, "refresh_token", &sealed, None)
            .is_err()
    );
    let secret =
        lwa_server::sealing::TokenSecret::parse("q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw==").unwrap();
    let refresh = app
        .state
        .sealer
        .open(&id, "refresh_token", &sealed, Some(&secret))
        .unwrap();
    let info = app
        .fake
        .control()
        .token_info(&refresh)
        .await
        .expect("a refresh token the fake issued");
    assert!(
        matches!(&info.principal, fake_amazon::Principal::Seller { selling_partner_id, .. } if selling_partner_id == defaults::SELLER_NA),
        "{:?}",
        info.principal
    );
}

#[tokio::test]
async fn vendor_in_europe_on_the_marketplace_host() {
    let app = spawn().await;
    let start = app
        .initialize_url(&[("account_type", "vendor"), ("marketplace", "A1PA6795UKMFR9")])
        .replace("us-east-1", "eu-west-1");
    let r = app.http.get(&start).send().await.unwrap();
    let consent = crate::support::location(&r);
    assert!(
        consent.contains("/vendorcentral.amazon.de/apps/authorize/consent?"),
        "{consent}"
    );
    let landing = app
        .deliver(
            &browser::consent(&consent, Choice::ApproveAs("A1VENDORDE0001".into()))
                .await
                .unwrap(),
        )
        .await;
    let id = &landing.q["seller_id"];
    let c = app.state.store.connection(id).await.unwrap().unwrap();
    assert_eq!(c.region, "eu");
    assert_eq!(c.account_type.as_deref(), Some("vendor"));
    assert_eq!(c.marketplace_id.as_deref(), Some("A1PA6795UKMFR9"));
    assert_eq!(c.selling_partner_id.as_deref(), Some("A1VENDORDE0001"));
}

#[tokio::test]
async fn fe_seller_through_a_connect_link_without_tenant_secret() {
    let app = spawn().await;
    let (connection, handle) = app.onboard_sp("fe", None).await;
    assert_eq!(connection["region"], "fe");
    assert_eq!(connection["selling_partner_id"], defaults::SELLER_FE);
    assert_eq!(connection["token_secret"], "none");
    assert_eq!(handle, format!("lwah_{}", connection["id"].as_str().unwrap()));
    // The link works once.
    let link = app
        .connect_link(json!({"region": "na", "state": "s", "redirect_url": RETURN}))
        .await;
    assert_eq!(app.http.get(&link).send().await.unwrap().status(), 302);
    let again = app.http.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert!(again.headers().get("location").is_none());
}

#[tokio::test]
async fn ads_onboarding_uses_pkce_and_stores_profiles_of_all_regions() {
    let app = spawn().await;
    let link = app
        .connect_link(json!({"api": "ads", "region": "eu", "state": "ads-1", "redirect_url": RETURN}))
        .await;
    let r = app.http.get(&link).send().await.unwrap();
    let consent = crate::support::location(&r);
    assert!(
        consent.starts_with(&format!("{}/eu.account.amazon.com/ap/oa?", app.fake.base_url())),
        "{consent}"
    );
    let q = crate::support::query(&consent);
    assert_eq!(q["client_id"], defaults::ADS_CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    let landing = app
        .deliver(&browser::consent(&consent, Choice::Approve).await.unwrap())
        .await;
    assert_eq!(landing.q["state"], "ads-1");
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    let body: Value = r.json().await.unwrap();
    let profiles = body["connection"]["profiles"].as_array().unwrap().clone();
    let mut regions: Vec<&str> = profiles.iter().map(|p| p["region"].as_str().unwrap()).collect();
    regions.sort();
    assert_eq!(regions, ["eu", "fe", "na"]);
    let ids: Vec<i64> = profiles
        .iter()
        .map(|p| p["profileId"].as_i64().unwrap())
        .collect();
    for p in [defaults::PROFILE_NA, defaults::PROFILE_EU, defaults::PROFILE_FE] {
        assert!(ids.contains(&p), "{ids:?}");
    }
    assert_eq!(body["connection"]["selling_partner_id"], Value::Null);
}

#[tokio::test]
async fn the_same_seller_reauthorizing_reuses_its_connection() {
    let app = spawn().await;
    let (first, _) = app.onboard_sp("na", None).await;
    app.fake.control().advance_clock(3600.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the broker follows the fake's clock
    let (second, _) = app.onboard_sp("na", None).await;
    assert_eq!(first["id"], second["id"]);
    assert_ne!(
        first["authorized_at"], second["authorized_at"],
        "authorized-at is reset"
    );
    // Another region is another connection.
    let (eu, _) = app.onboard_sp("eu", None).await;
    assert_ne!(eu["id"], first["id"]);
    let list: Value = app.get_auth("/v1/connections").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_reauthorize_link_updates_that_ads_connection() {
    let app = spawn().await;
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "a", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let id = landing.q["seller_id"].clone();
    let before = app.state.store.connection(&id).await.unwrap().unwrap();

    let r = app
        .post_json(
            &format!("/v1/connections/{id}/reauthorize-link"),
            &json!({"redirect_url": RETURN, "state": "re"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let landing = app.through_consent(&url, Choice::Approve).await;
    assert_eq!(
        landing.q["seller_id"], id,
        "the same connection, although Ads names no seller"
    );
    assert_eq!(landing.q["state"], "re");
    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_ne!(before.refresh_token, after.refresh_token, "tokens replaced");
    let list: Value = app
        .get_auth("/v1/connections?api=ads")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn reauthorize_link_refuses_another_seller() {
    let app = spawn().await;
    let (connection, _) = app.onboard_sp("na", None).await;
    let id = connection["id"].as_str().unwrap();
    let r = app
        .post_json(
            &format!("/v1/connections/{id}/reauthorize-link"),
            &json!({"redirect_url": RETURN}),
        )
        .await;
    let url = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let landing = app
        .through_consent(&url, Choice::ApproveAs("A2SOMEONEELSE".into()))
        .await;
    assert_eq!(landing.q["error"], "wrong_account");
    assert!(!landing.q.contains_key("code"));
}

#[tokio::test]
async fn amazon_login_uri_flow_and_yearly_renewal_end_in_the_callback() {
    let app = spawn().await;
    let mut seen = None;
    for round in 0..2 {
        let start = app
            .fake
            .control()
            .appstore_authorize(AppstoreSpec {
                application_id: defaults::SP_API_APPLICATION_ID.into(),
                selling_partner_id: Some(defaults::SELLER_NA.into()),
                login_uri: format!("{}/auth/login", app.url),
                ..AppstoreSpec::default()
            })
            .await;
        let r = app.http.get(&start).send().await.unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
        let confirm = crate::support::location(&r);
        let q = crate::support::query(&confirm);
        assert!(confirm.contains("/apps/authorize/confirm/"), "{confirm}");
        assert_eq!(q["redirect_uri"], format!("{}/auth/redirect", app.url));
        assert!(q.contains_key("amazon_state") && q["state"].len() == 43);
        let callback = browser::follow(&confirm).await.unwrap();
        let landing = app.deliver(&callback).await;
        assert!(
            landing.url.starts_with("https://tenant.example.com/oauth"),
            "{}",
            landing.url
        );
        assert!(landing.q.contains_key("code"), "round {round}: {:?}", landing.q);
        let id = landing.q["seller_id"].clone();
        if let Some(first) = &seen {
            assert_eq!(first, &id, "the renewal updates the same connection");
        }
        seen = Some(id);
    }
}

#[tokio::test]
async fn login_uri_refuses_a_callback_that_is_not_amazon() {
    let app = spawn().await;
    for callback in [
        "https://evil.example.com/apps/authorize/confirm/x",
        "https://sellercentral.amazon.com/apps/authorize/confirm/x",
        "",
    ] {
        let r = app
            .http
            .get(format!("{}/auth/login", app.url))
            .query(&[
                ("amazon_callback_uri", callback),
                ("amazon_state", "s"),
                ("selling_partner_id", "A1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{callback}");
        assert!(r.headers().get("location").is_none());
    }
}

#[tokio::test]
async fn a_declined_consent_returns_the_error_to_the_tenant() {
    let app = spawn().await;
    let landing = app.through_consent(&app.initialize_url(&[]), Choice::Deny).await;
    assert_eq!(landing.q["error"], "access_denied");
    assert!(!landing.q["error_description"].is_empty());
    assert_eq!(landing.q["state"], "internal-seller-123");
    assert_eq!(landing.q["tenant_id"], app.tenant_id);
    assert!(!landing.q.contains_key("code") && !landing.q.contains_key("seller_id"));
}

#[tokio::test]
async fn states_are_single_use_and_expire_after_ten_minutes() {
    let app = spawn().await;
    let r = app.http.get(app.initialize_url(&[])).send().await.unwrap();
    let back = browser::consent(&crate::support::location(&r), Choice::Approve)
        .await
        .unwrap();
    app.deliver(&back).await;
    let replay = app.http.get(&back).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.headers().get("location").is_none());
    assert!(replay.text().await.unwrap().contains("already completed"));

    let unknown = app
        .get("/auth/redirect?state=nope&spapi_oauth_code=x&selling_partner_id=A")
        .await;
    assert_eq!(unknown.status(), 400);
    assert!(unknown.text().await.unwrap().contains("unknown"));

    let r = app.http.get(app.initialize_url(&[])).send().await.unwrap();
    let back = browser::consent(&crate::support::location(&r), Choice::Approve)
        .await
        .unwrap();
    app.fake.control().advance_clock(601.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let late = app.http.get(&back).send().await.unwrap();
    assert_eq!(late.status(), 400);
    assert!(late.headers().get("location").is_none());
    assert!(late.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn claim_codes_are_single_use_and_expire_after_five_minutes() {
    let app = spawn().await;
    let link = app
        .connect_link(json!({"region": "na", "state": "s", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let code = landing.q["code"].clone();
    let first = app.post_json("/v1/claims", &json!({"code": code})).await;
    assert_eq!(first.status(), 200);
    let second = app
        .http
        .post(format!("{}/api/claim-code", app.url))
        .header("x-adb-access-token", &app.key)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 400);
    assert_eq!(
        second.json::<Value>().await.unwrap(),
        json!({"success": false, "error": {"message": "Invalid or already used claim code"}})
    );

    let link = app
        .connect_link(json!({"region": "na", "state": "s", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    app.fake.control().advance_clock(301.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let late = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    assert_eq!(late.status(), 400);
    assert_eq!(
        late.json::<Value>().await.unwrap()["error"]["code"],
        "expired_code"
    );
}

fn forwarded(n: u32) -> String {
    format!("10.9.{}.{}", n / 250, n % 250 + 1)
}

#[tokio::test]
async fn every_initialize_message_in_the_seed_order() {
    let app = spawn_with(|s| {
        s.trusted_proxies = vec![lwa_server::config::TrustedProxy::parse("127.0.0.1").unwrap()];
    })
    .await;
    let base = app.initialize_url(&[]);
    let without = |name: &str| {
        let mut u = url::Url::parse(&base).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != name)
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let with = |name: &str, value: &str| {
        let mut u = url::Url::parse(&base).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                if k == name {
                    (k.into(), value.into())
                } else {
                    (k.into(), v.into())
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (without("state"), "state is required"),
        (with("state", ""), "state is required"),
        // The first failing check wins: no state and no tenant → state.
        (
            without("state").replace(&format!("tenantId={}", app.tenant_id), ""),
            "state is required",
        ),
        (without("tenantId"), "tenantId is required"),
        (with("tenantId", "ten_doesnotexist"), "Tenant data not found"),
        (without("marketplace_region"), "marketplace_region is required"),
        (
            with("marketplace_region", "mars-1"),
            "marketplace_region is required",
        ),
        (
            without("amazonTokenSecret"),
            "amazonTokenSecret must be 32-64 characters",
        ),
        (
            with("amazonTokenSecret", &"a".repeat(31)),
            "amazonTokenSecret must be 32-64 characters",
        ),
        (
            with("amazonTokenSecret", &"a".repeat(65)),
            "amazonTokenSecret must be 32-64 characters",
        ),
        (
            without("sellerRedirectUrl"),
            "sellerRedirectUrl must start with redirectOrigin",
        ),
        (
            with("sellerRedirectUrl", "https://other-site.com/oauth"),
            "sellerRedirectUrl must start with redirectOrigin",
        ),
        (
            with("sellerRedirectUrl", "https://tenant.example.com/other"),
            "sellerRedirectUrl must start with redirectOrigin",
        ),
        (
            with("sellerRedirectUrl", "http://tenant.example.com/oauth/cb"),
            "sellerRedirectUrl must start with redirectOrigin",
        ),
        // A bad secret and a bad URL: the secret is checked first.
        (
            with("amazonTokenSecret", "short").replace("tenant.example.com", "evil.example.com"),
            "amazonTokenSecret must be 32-64 characters",
        ),
    ];
    for (i, (url, message)) in cases.iter().enumerate() {
        let r = app
            .http
            .get(url)
            .header("x-forwarded-for", forwarded(i as u32))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"success": false, "error": {"message": message}}),
            "{url}"
        );
    }
    // A browser gets a page with the same message.
    let r = app
        .http
        .get(without("state"))
        .header("accept", "text/html,application/xhtml+xml")
        .header("x-forwarded-for", forwarded(900))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("state is required"));
    // Seed 003's valid example origins.
    for ok in [
        "https://tenant.example.com/oauth/callback",
        "https://tenant.example.com/oauth/done?ref=123",
    ] {
        let r = app
            .http
            .get(with("sellerRedirectUrl", ok))
            .header("x-forwarded-for", forwarded(901))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{ok}");
    }
}

#[tokio::test]
async fn initialize_allows_five_requests_in_ten_seconds_per_address() {
    let app = spawn_with(|s| {
        s.trusted_proxies = vec![lwa_server::config::TrustedProxy::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let url = app.initialize_url(&[]);
    for _ in 0..5 {
        let r = app
            .http
            .get(&url)
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
    }
    let r = app
        .http
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"success": false, "error": {"message": "Rate limit exceeded"}})
    );
    // Another client is not affected; a spoofed header from an untrusted proxy chain is not believed.
    let r = app
        .http
        .get(&url)
        .header("x-forwarded-for", "203.0.113.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // After ten seconds on the broker's clock the address may start again.
    app.fake.control().advance_clock(10.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = app
        .http
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}

//! Seller Central, Vendor Central and Ads consent pages.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_amazon::{AccountType, AppKind, AppSpec, FakeConfig, Principal, Region, defaults};
use sha2::{Digest, Sha256};

use crate::support::*;

const SC_US: &str = "sellercentral.amazon.com";

fn consent_query(app_id: &str, extra: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("application_id", app_id);
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    s.finish()
}

impl TestFake {
    async fn consent_get(&self, host: &str, query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}?{query}", self.url(host, "/apps/authorize/consent")))
            .send()
            .await
            .unwrap()
    }

    async fn consent_post(&self, host: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(host, "/apps/authorize/consent"))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_consent_page_shows_a_form_with_the_default_seller_and_escapes_input() {
    let t = spawn().await;
    let q = consent_query(
        defaults::SP_API_APPLICATION_ID,
        &[("state", "<script>alert(1)</script>\"")],
    );
    let resp = t.consent_get(SC_US, &q).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains(defaults::SELLER_NA), "{page}");
    assert!(page.contains("method=\"post\""));
    assert!(page.contains("value=\"approve\"") && page.contains("value=\"deny\""));
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;") || page.contains("&lt;script>"),
        "{page}"
    );

    let resp = t
        .consent_get(
            "sellercentral-europe.amazon.com",
            &consent_query(defaults::SP_API_APPLICATION_ID, &[]),
        )
        .await;
    assert!(resp.text().await.unwrap().contains(defaults::SELLER_EU));
    let resp = t
        .consent_get(
            "vendorcentral.amazon.com",
            &consent_query(defaults::SP_API_APPLICATION_ID, &[]),
        )
        .await;
    assert!(resp.text().await.unwrap().contains(defaults::VENDOR_NA));
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_redirects_with_state_seller_and_code() {
    let t = spawn().await;
    let resp = t
        .consent_post(
            SC_US,
            &[
                ("application_id", defaults::SP_API_APPLICATION_ID),
                ("state", "st&te=1"),
                ("action", "approve"),
                ("selling_partner_id", defaults::SELLER_NA),
            ],
        )
        .await;
    assert_eq!(resp.status(), 302);
    let (location, params) = location_params(&resp);
    assert!(location.starts_with(&format!("{REDIRECT}?state=")), "{location}");
    assert_eq!(param(&params, "state"), Some("st&te=1"));
    assert_eq!(param(&params, "selling_partner_id"), Some(defaults::SELLER_NA));
    let code = param(&params, "spapi_oauth_code").unwrap();
    // Consent without redirect_uri: the token request may omit it.
    let (status, body) = t.exchange_sp(code).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_redirects_with_access_denied() {
    let t = spawn().await;
    let resp = t
        .consent_post(
            SC_US,
            &[
                ("application_id", defaults::SP_API_APPLICATION_ID),
                ("state", "abc"),
                ("redirect_uri", "http://127.0.0.1:8765/callback"),
                ("action", "deny"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 302);
    let (location, params) = location_params(&resp);
    assert!(location.starts_with("http://127.0.0.1:8765/callback?error=access_denied"));
    assert_eq!(param(&params, "state"), Some("abc"));
    assert!(param(&params, "error_description").is_some());
    assert!(param(&params, "spapi_oauth_code").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_application_is_an_error_page() {
    let t = spawn().await;
    let resp = t
        .consent_get(SC_US, &consent_query("amzn1.sp.solution.nope", &[]))
        .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn draft_app_needs_version_beta_md1000() {
    let t = spawn().await;
    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            draft: true,
            ..Default::default()
        })
        .await;
    let app_id = app.application_id.unwrap();
    let resp = t.consent_get(SC_US, &consent_query(&app_id, &[])).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("MD1000"));
    let resp = t
        .consent_get(SC_US, &consent_query(&app_id, &[("version", "beta")]))
        .await;
    assert_eq!(resp.status(), 200);
    // Auto-approval still refuses.
    t.control.set_auto_approve(true).await;
    let resp = t.consent_get(SC_US, &consent_query(&app_id, &[])).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_redirect_is_md5101() {
    let t = spawn().await;
    let resp = t
        .consent_get(
            SC_US,
            &consent_query(
                defaults::SP_API_APPLICATION_ID,
                &[("redirect_uri", "https://evil.example/cb")],
            ),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let page = resp.text().await.unwrap();
    assert!(page.contains("MD5101"));
    // An approve POST with it is refused the same way, and nothing redirects there.
    let resp = t
        .consent_post(
            SC_US,
            &[
                ("application_id", defaults::SP_API_APPLICATION_ID),
                ("redirect_uri", "https://evil.example/cb"),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_with_a_query_gets_ampersand() {
    let t = spawn().await;
    let redirect = "http://127.0.0.1:9999/cb?tenant=7";
    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            redirect_uris: vec![redirect.to_owned()],
            ..Default::default()
        })
        .await;
    let resp = t
        .consent_post(
            SC_US,
            &[
                ("application_id", app.application_id.as_deref().unwrap()),
                ("action", "approve"),
                ("state", "s"),
            ],
        )
        .await;
    let (location, _) = location_params(&resp);
    assert!(
        location.starts_with("http://127.0.0.1:9999/cb?tenant=7&state=s&selling_partner_id="),
        "{location}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seller_and_vendor_central_and_regions_are_recorded() {
    let t = spawn().await;
    for (host, region, kind) in [
        ("vendorcentral.amazon.de", Region::Eu, AccountType::Vendor),
        ("sellercentral.amazon.co.jp", Region::Fe, AccountType::Seller),
        ("sellercentral.amazon.com.be", Region::Eu, AccountType::Seller),
    ] {
        let resp = t
            .consent_post(
                host,
                &[
                    ("application_id", defaults::SP_API_APPLICATION_ID),
                    ("action", "approve"),
                    ("selling_partner_id", "A2NEWPARTNER77"),
                ],
            )
            .await;
        assert_eq!(resp.status(), 302, "{host}");
        let (_, params) = location_params(&resp);
        let code = param(&params, "spapi_oauth_code").unwrap().to_owned();
        let record = t
            .control
            .authorizations()
            .await
            .into_iter()
            .find(|a| a.code == code)
            .unwrap();
        assert_eq!(record.host, host);
        match &record.principal {
            Principal::Seller {
                region: r,
                account_type,
                selling_partner_id,
                ..
            } => {
                assert_eq!(*r, region);
                assert_eq!(*account_type, kind);
                assert_eq!(selling_partner_id, "A2NEWPARTNER77");
            }
            other => panic!("{other:?}"),
        }
        let (_, body) = t.exchange_sp(&code).await;
        let info = t
            .control
            .token_info(body["access_token"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(info.authorized_via.as_deref(), Some(host));
        assert_eq!(info.principal, record.principal);
    }
    // The same id keeps one identity.
    let sellers = t.control.sellers().await;
    let same: Vec<_> = sellers
        .iter()
        .filter(|s| s.selling_partner_id == "A2NEWPARTNER77")
        .collect();
    assert_eq!(same.len(), 1);
    assert_eq!(same[0].region, Region::Eu);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_approve_redirects_at_once() {
    let t = spawn_with(FakeConfig {
        auto_approve: true,
        ..FakeConfig::default()
    })
    .await;
    let resp = t
        .consent_get(
            "sellercentral.amazon.co.jp",
            &consent_query(defaults::SP_API_APPLICATION_ID, &[("state", "x")]),
        )
        .await;
    assert_eq!(resp.status(), 302);
    let (_, params) = location_params(&resp);
    assert_eq!(param(&params, "selling_partner_id"), Some(defaults::SELLER_FE));
    let resp = t
        .consent_get(
            SC_US,
            &consent_query(
                defaults::SP_API_APPLICATION_ID,
                &[("redirect_uri", "http://nope.example/")],
            ),
        )
        .await;
    assert_eq!(resp.status(), 400);
}

fn ads_query(extra: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    s.finish()
}

fn ads_defaults() -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_id", defaults::ADS_CLIENT_ID),
        ("scope", "advertising::campaign_management"),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("state", "s1"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_consent_page_approve_and_exchange_with_pkce() {
    let t = spawn().await;
    let verifier = "a-verifier-that-is-long-enough-to-be-valid-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut q = ads_defaults();
    q.push(("code_challenge", &challenge));
    q.push(("code_challenge_method", "S256"));
    let resp = t
        .http
        .get(format!(
            "{}?{}",
            t.url("eu.account.amazon.com", "/ap/oa"),
            ads_query(&q)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains(defaults::ADVERTISER));

    let mut form = q.clone();
    form.push(("action", "approve"));
    let resp = t
        .http
        .post(t.url("eu.account.amazon.com", "/ap/oa"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let (location, params) = location_params(&resp);
    assert!(location.starts_with(&format!("{REDIRECT}?code=")));
    assert_eq!(param(&params, "scope"), Some("advertising::campaign_management"));
    assert_eq!(param(&params, "state"), Some("s1"));
    let code = param(&params, "code").unwrap();
    let [id, secret] = ads_creds();
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_consent_refusals() {
    let t = spawn().await;
    let get = |q: Vec<(&'static str, &'static str)>| {
        let http = t.http.clone();
        let url = format!("{}?{}", t.url("www.amazon.com", "/ap/oa"), ads_query(&q));
        async move { http.get(url).send().await.unwrap() }
    };
    let with = |name: &'static str, value: &'static str| {
        let mut q: Vec<_> = ads_defaults().into_iter().filter(|(k, _)| *k != name).collect();
        if !value.is_empty() {
            q.push((name, value));
        }
        q
    };
    // Unknown client, the SP-API app's client, missing or unregistered redirect: error pages.
    for q in [
        with("client_id", "amzn1.application-oa2-client.unknown"),
        with("client_id", defaults::SP_API_CLIENT_ID),
        with("redirect_uri", ""),
        with("redirect_uri", "https://evil.example/cb"),
    ] {
        let resp = get(q).await;
        assert_eq!(resp.status(), 400);
        assert!(resp.headers().get("location").is_none());
    }
    for (q, error) in [
        (with("response_type", "token"), "unsupported_response_type"),
        (with("scope", "advertising::everything"), "invalid_scope"),
        (with("scope", ""), "invalid_scope"),
    ] {
        let resp = get(q).await;
        assert_eq!(resp.status(), 302);
        let (_, params) = location_params(&resp);
        assert_eq!(param(&params, "error"), Some(error));
        assert_eq!(param(&params, "state"), Some("s1"));
    }
    // Two allowed scopes together are fine.
    let resp = get(with(
        "scope",
        "advertising::campaign_management advertising::audiences",
    ))
    .await;
    assert_eq!(resp.status(), 200);
    // Deny.
    let mut form = ads_defaults();
    form.push(("action", "deny"));
    let resp = t
        .http
        .post(t.url("apac.account.amazon.com", "/ap/oa"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let (_, params) = location_params(&resp);
    assert_eq!(param(&params, "error"), Some("access_denied"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_hosts_and_paths_are_404() {
    let t = spawn().await;
    let resp = t
        .http
        .get(t.url("api.amazon.de", "/auth/o2/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // sellercentral.amazon.de is not in AMAZON.md's table (DE uses sellercentral-europe).
    let resp = t
        .http
        .get(t.url("sellercentral.amazon.de", "/apps/authorize/consent"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = t.http.get(t.url(SC_US, "/home")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = t
        .http
        .get(t.url("www.amazon.com", "/apps/authorize/consent"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_seller_central_hosts_can_be_switched_off() {
    let t = spawn().await;
    let q = consent_query(defaults::SP_API_APPLICATION_ID, &[]);
    assert_eq!(t.consent_get("sellercentral.amazon.ie", &q).await.status(), 200);
    let mut quirks = t.control.quirks().await;
    quirks.newer_seller_central_hosts = false;
    t.control.set_quirks(quirks).await;
    assert_eq!(t.consent_get("sellercentral.amazon.ie", &q).await.status(), 404);
}

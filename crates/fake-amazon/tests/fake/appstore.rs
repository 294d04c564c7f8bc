//! The Appstore-initiated workflow (also the yearly re-authorization): the app's Login URI,
//! `amazon_callback_uri` and `amazon_state`.

use fake_amazon::{AppKind, AppSpec, AppstoreSpec, ControlError, Principal, Region, browser, defaults};
use reqwest::Method;
use serde_json::json;

use crate::support::*;

const LOGIN: &str = "https://app.example/login";
const CALLBACK: &str = "http://127.0.0.1:8765/callback";

/// What Amazon put on the Login URI.
struct LoginParams {
    callback: String,
    amazon_state: String,
    selling_partner_id: String,
    version: Option<String>,
}

fn login_params(url: &str) -> LoginParams {
    let params = browser::query(url);
    LoginParams {
        callback: params["amazon_callback_uri"].clone(),
        amazon_state: params["amazon_state"].clone(),
        selling_partner_id: params["selling_partner_id"].clone(),
        version: params.get("version").cloned(),
    }
}

/// What the app's login page does: `{amazon_callback_uri}?redirect_uri=…&amazon_state=…&state=…`.
fn confirm_url(callback: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(callback).expect("absolute amazon_callback_uri");
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

impl TestFake {
    async fn appstore(&self, application_id: &str) -> LoginParams {
        let url = self
            .control
            .appstore_authorize(AppstoreSpec {
                application_id: application_id.to_owned(),
                login_uri: LOGIN.to_owned(),
                ..Default::default()
            })
            .await;
        login_params(&url)
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.expect("GET")
    }
}

/// Asserts a 400 HTML page (never a redirect) containing `needle`.
async fn assert_error_page(resp: reqwest::Response, needle: &str) {
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains(needle), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn appstore_flow_issues_a_code_the_token_endpoint_exchanges() {
    let t = spawn().await;
    let url = t
        .control
        .appstore_authorize(AppstoreSpec {
            application_id: defaults::SP_API_APPLICATION_ID.to_owned(),
            login_uri: format!("{LOGIN}?tenant=7"),
            ..Default::default()
        })
        .await;
    assert!(
        url.starts_with(&format!("{LOGIN}?tenant=7&amazon_callback_uri=")),
        "{url}"
    );
    let login = login_params(&url);
    assert_eq!(
        login.callback,
        t.url(
            "sellercentral.amazon.com",
            &format!("/apps/authorize/confirm/{}", defaults::SP_API_APPLICATION_ID)
        )
    );
    assert_eq!(login.selling_partner_id, defaults::SELLER_NA);
    assert_eq!(login.version, None);
    assert!(login.amazon_state.len() >= 20, "{}", login.amazon_state);

    let resp = t
        .get(&confirm_url(
            &login.callback,
            &[
                ("redirect_uri", CALLBACK),
                ("amazon_state", &login.amazon_state),
                ("state", "app-state&1"),
            ],
        ))
        .await;
    assert_eq!(resp.status(), 302);
    let (location, params) = location_params(&resp);
    assert!(location.starts_with(&format!("{CALLBACK}?state=")), "{location}");
    assert_eq!(param(&params, "state"), Some("app-state&1"));
    assert_eq!(param(&params, "selling_partner_id"), Some(defaults::SELLER_NA));
    let code = param(&params, "spapi_oauth_code").unwrap();

    let (status, body) = t.exchange_sp_with_redirect(code, Some(CALLBACK)).await;
    assert_eq!(status, 200, "{body}");
    let info = t
        .control
        .token_info(body["refresh_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(info.client_id, defaults::SP_API_CLIENT_ID);
    assert_eq!(info.authorized_via.as_deref(), Some("sellercentral.amazon.com"));
    assert_eq!(
        info.principal,
        Principal::Seller {
            selling_partner_id: defaults::SELLER_NA.to_owned(),
            region: Region::Na,
            account_type: fake_amazon::AccountType::Seller,
            marketplace_ids: None,
        }
    );
    let recorded = t.control.requests(Some("sellercentral.amazon.com")).await;
    assert!(
        recorded
            .iter()
            .any(|r| r.path.starts_with("/apps/authorize/confirm/") && r.query.contains("amazon_state")),
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn appstore_picks_the_sellers_region_and_vendor_central() {
    let t = spawn().await;
    // A registered EU seller: its region's Seller Central; no redirect_uri → the app's first.
    let url = t
        .control
        .appstore_authorize(AppstoreSpec {
            application_id: defaults::SP_API_APPLICATION_ID.to_owned(),
            selling_partner_id: Some(defaults::SELLER_EU.to_owned()),
            login_uri: LOGIN.to_owned(),
            ..Default::default()
        })
        .await;
    let login = login_params(&url);
    assert!(
        login
            .callback
            .contains("/sellercentral-europe.amazon.com/apps/authorize/confirm/"),
        "{}",
        login.callback
    );
    let location = browser::follow(&confirm_url(
        &login.callback,
        &[("amazon_state", &login.amazon_state), ("state", "s")],
    ))
    .await
    .unwrap();
    assert!(
        location.starts_with(&format!("{REDIRECT}?state=s&")),
        "{location}"
    );
    let params = browser::query(&location);
    assert_eq!(params["selling_partner_id"], defaults::SELLER_EU);
    let (status, body) = t.exchange_sp(&params["spapi_oauth_code"]).await;
    assert_eq!(status, 200, "{body}");
    let info = t
        .control
        .token_info(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        info.principal,
        Principal::Seller {
            region: Region::Eu,
            ..
        }
    ));

    // Vendor in EU: Vendor Central, the consent page's default vendor.
    let url = t
        .control
        .appstore_authorize(AppstoreSpec {
            application_id: defaults::SP_API_APPLICATION_ID.to_owned(),
            login_uri: LOGIN.to_owned(),
            region: Some("eu".to_owned()),
            account_type: Some("vendor".to_owned()),
            ..Default::default()
        })
        .await;
    let login = login_params(&url);
    assert!(
        login
            .callback
            .contains("/vendorcentral.amazon.co.uk/apps/authorize/confirm/"),
        "{}",
        login.callback
    );
    assert_eq!(login.selling_partner_id, defaults::VENDOR_NA);
}

#[tokio::test(flavor = "multi_thread")]
async fn amazon_state_is_single_use() {
    let t = spawn().await;
    let login = t.appstore(defaults::SP_API_APPLICATION_ID).await;
    let url = confirm_url(
        &login.callback,
        &[
            ("redirect_uri", CALLBACK),
            ("amazon_state", &login.amazon_state),
            ("state", "s"),
        ],
    );
    assert_eq!(t.get(&url).await.status(), 302);
    assert_error_page(t.get(&url).await, "amazon_state").await;
    // Missing or unknown amazon_state: the same page.
    let url = confirm_url(&login.callback, &[("redirect_uri", CALLBACK), ("state", "s")]);
    assert_error_page(t.get(&url).await, "amazon_state").await;
    let url = confirm_url(&login.callback, &[("amazon_state", "made-up"), ("state", "s")]);
    assert_error_page(t.get(&url).await, "amazon_state").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amazon_state_expires_after_ten_minutes() {
    let t = spawn().await;
    let early = t.appstore(defaults::SP_API_APPLICATION_ID).await;
    let late = t.appstore(defaults::SP_API_APPLICATION_ID).await;
    t.control.advance_clock(599.0).await;
    let url = confirm_url(&early.callback, &[("amazon_state", &early.amazon_state)]);
    assert_eq!(t.get(&url).await.status(), 302);
    t.control.advance_clock(2.0).await;
    let url = confirm_url(&late.callback, &[("amazon_state", &late.amazon_state)]);
    assert_error_page(t.get(&url).await, "amazon_state").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amazon_state_is_bound_to_the_application_and_the_central_host() {
    let t = spawn().await;
    let other = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            ..Default::default()
        })
        .await;
    let other_id = other.application_id.unwrap();
    let login = t.appstore(defaults::SP_API_APPLICATION_ID).await;
    let wrong_app = login.callback.replace(defaults::SP_API_APPLICATION_ID, &other_id);
    assert_ne!(wrong_app, login.callback);
    let url = confirm_url(&wrong_app, &[("amazon_state", &login.amazon_state)]);
    assert_error_page(t.get(&url).await, "amazon_state").await;
    // Issued for NA Seller Central: not valid on EU Seller Central or NA Vendor Central.
    for host in ["sellercentral-europe.amazon.com", "vendorcentral.amazon.com"] {
        let moved = login.callback.replace("sellercentral.amazon.com", host);
        let url = confirm_url(&moved, &[("amazon_state", &login.amazon_state)]);
        assert_error_page(t.get(&url).await, "amazon_state").await;
    }
    // The failed attempts did not consume it.
    let url = confirm_url(&login.callback, &[("amazon_state", &login.amazon_state)]);
    assert_eq!(t.get(&url).await.status(), 302);
    // An unknown application id in the path is the consent page's unknown-app page.
    let unknown = login
        .callback
        .replace(defaults::SP_API_APPLICATION_ID, "amzn1.sp.solution.nope");
    let url = confirm_url(&unknown, &[("amazon_state", &login.amazon_state)]);
    assert_error_page(t.get(&url).await, "could not be found").await;
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
    let login = t.appstore(app.application_id.as_deref().unwrap()).await;
    assert_eq!(login.version.as_deref(), Some("beta"));
    let url = confirm_url(&login.callback, &[("amazon_state", &login.amazon_state)]);
    assert_error_page(t.get(&url).await, "MD1000").await;
    let url = confirm_url(
        &login.callback,
        &[("amazon_state", &login.amazon_state), ("version", "beta")],
    );
    assert_eq!(t.get(&url).await.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_redirect_is_md5101() {
    let t = spawn().await;
    let login = t.appstore(defaults::SP_API_APPLICATION_ID).await;
    let url = confirm_url(
        &login.callback,
        &[
            ("redirect_uri", "https://evil.example/cb"),
            ("amazon_state", &login.amazon_state),
        ],
    );
    assert_error_page(t.get(&url).await, "MD5101").await;
    // Not consumed by the refusal.
    let url = confirm_url(&login.callback, &[("amazon_state", &login.amazon_state)]);
    assert_eq!(t.get(&url).await.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn appstore_authorize_refuses_unknown_apps_and_bad_input() {
    let t = spawn().await;
    let call = |body: serde_json::Value| {
        let control = t.control.clone();
        async move {
            control
                .call(Method::POST, "appstore-authorize", Some(&body))
                .await
                .unwrap_err()
        }
    };
    let err = call(json!({"application_id": "amzn1.sp.solution.nope", "login_uri": LOGIN})).await;
    assert!(matches!(err, ControlError::Refused { status: 404, .. }), "{err}");
    // An Ads app is not an Appstore app.
    let ads = t
        .control
        .register_app(AppSpec {
            kind: AppKind::Ads,
            application_id: Some("amzn1.ads.app.fake".to_owned()),
            ..Default::default()
        })
        .await;
    let err = call(json!({"application_id": ads.application_id, "login_uri": LOGIN})).await;
    assert!(matches!(err, ControlError::Refused { status: 404, .. }), "{err}");
    for body in [
        json!({"login_uri": LOGIN}),
        json!({"application_id": defaults::SP_API_APPLICATION_ID}),
        json!({"application_id": defaults::SP_API_APPLICATION_ID, "login_uri": "/relative"}),
        json!({"application_id": defaults::SP_API_APPLICATION_ID, "login_uri": LOGIN, "region": "xx"}),
        json!({"application_id": defaults::SP_API_APPLICATION_ID, "login_uri": LOGIN, "account_type": "x"}),
    ] {
        let err = call(body.clone()).await;
        assert!(
            matches!(err, ControlError::Refused { status: 400, .. }),
            "{body} {err}"
        );
    }
}

//! The control API.

use fake_amazon::{
    AdvertiserSpec, AmcInstanceSpec, AppKind, AppSpec, ProfileSpec, Quirks, Region, RevokeSpec, SellerSpec,
    defaults,
};
use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn clock_moves_forward() {
    let t = spawn().await;
    let before = t.control.clock_state().await;
    assert_eq!(before.offset_ms, 0);
    let now = t.control.advance_clock(90.5).await;
    assert!(now >= before.now_ms + 90_500);
    assert_eq!(t.control.clock_state().await.offset_ms, 90_500);
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_by_grant_refresh_token_and_path() {
    let t = spawn().await;
    let (access, refresh) = t.seller_tokens(Region::Na).await;
    t.refresh_sp(&refresh).await;
    t.refresh_sp(&refresh).await;
    t.refresh_sp("Atzr|IwEBIunknown").await;
    t.sp_get(SP_NA, "/sellers/v1/marketplaceParticipations", Some(&access))
        .await;
    let c = t.control.counters().await;
    assert_eq!(c.lwa_calls("authorization_code"), 1);
    assert_eq!(c.lwa_calls("refresh_token"), 3);
    assert_eq!(c.lwa_outcomes("refresh_token", "invalid_grant"), 1);
    assert_eq!(c.lwa_calls_for_refresh_token(&refresh), 2);
    assert_eq!(c.lwa_calls_for_client(defaults::SP_API_CLIENT_ID), 4);
    assert!(c.lwa.iter().all(|l| l.host == NA_LWA));
    assert_eq!(c.api_calls(SP_NA, "/sellers/v1/marketplaceParticipations"), 1);
    t.control.reset_counters().await;
    let c = t.control.counters().await;
    assert_eq!(c.lwa_total() + c.api_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_recorded_exactly() {
    let t = spawn().await;
    let [id, secret] = sp_creds();
    t.token(
        NA_LWA,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            id,
            secret,
        ],
    )
    .await;
    t.http
        .get(format!("{}?a=1", t.url(SP_EU, "/sellers/v1/account")))
        .header("x-amz-access-token", "Atza|x")
        .send()
        .await
        .unwrap();
    let lwa = t.control.requests(Some(NA_LWA)).await;
    assert_eq!(lwa.len(), 1);
    assert_eq!(lwa[0].method, "POST");
    assert_eq!(lwa[0].path, "/auth/o2/token");
    assert_eq!(
        lwa[0].body,
        format!(
            "grant_type=client_credentials&scope=sellingpartnerapi%3A%3Anotifications&client_id={}&client_secret={}",
            defaults::SP_API_CLIENT_ID,
            defaults::SP_API_CLIENT_SECRET
        )
    );
    assert_eq!(
        lwa[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let all = t.control.requests(None).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].host, SP_EU);
    assert_eq!(all[1].query, "a=1");
    assert_eq!(all[1].headers["x-amz-access-token"], "Atza|x");
    assert!(all[0].seq < all[1].seq);
    t.control.clear_requests().await;
    assert!(t.control.requests(None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_apps_sellers_and_advertisers() {
    let t = spawn().await;
    let apps = t.control.apps().await;
    assert_eq!(apps.len(), 2);
    let sp = apps.iter().find(|a| a.kind == AppKind::SpApi).unwrap();
    assert_eq!(sp.client_id, defaults::SP_API_CLIENT_ID);
    assert_eq!(
        sp.client_secrets,
        [
            defaults::SP_API_CLIENT_SECRET,
            defaults::SP_API_PREVIOUS_CLIENT_SECRET
        ]
    );
    assert_eq!(sp.redirect_uris, defaults::DEFAULT_REDIRECT_URIS);

    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::Ads,
            ..Default::default()
        })
        .await;
    assert!(app.client_id.starts_with("amzn1.application-oa2-client."));
    assert!(app.client_secrets[0].starts_with("amzn1.oa2-cs.v1."));
    assert!(app.application_id.is_none());
    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            ..Default::default()
        })
        .await;
    assert!(app.application_id.unwrap().starts_with("amzn1.sp.solution."));

    let seller = t
        .control
        .register_seller(SellerSpec {
            selling_partner_id: "A7VENDOREU".to_owned(),
            region: Region::Eu,
            account_type: fake_amazon::AccountType::Vendor,
            ..Default::default()
        })
        .await;
    assert_eq!(seller.store_name, "Store A7VENDOREU");
    assert_eq!(t.control.sellers().await.len(), 5);

    let advertiser = t
        .control
        .register_advertiser(AdvertiserSpec {
            advertiser_id: Some("ENTITY5NEWADV".to_owned()),
            profiles: vec![ProfileSpec {
                profile_id: Some(42),
                country_code: "DE".to_owned(),
                ..Default::default()
            }],
            amc_instances: vec![AmcInstanceSpec::default()],
            ..Default::default()
        })
        .await;
    assert_eq!(advertiser.profiles[0].currency_code, "EUR");
    assert_eq!(
        advertiser.profiles[0].account_info.marketplace_string_id,
        "A1PA6795UKMFR9"
    );
    assert_eq!(advertiser.amc_instances.len(), 1);
    assert_eq!(t.control.advertisers().await.len(), 2);

    // Bad input gets a JSON error.
    let err = t
        .control
        .call(
            Method::POST,
            "sellers",
            Some(&json!({"selling_partner_id": "bad id!"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, fake_amazon::ControlError::Refused { status: 400, .. }),
        "{err}"
    );
    let err = t.control.call(Method::GET, "nope", None).await.unwrap_err();
    assert!(matches!(
        err,
        fake_amazon::ControlError::Refused { status: 404, .. }
    ));
    let resp = t
        .http
        .post(format!("{}/__fake/apps", t.fake.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (_, body) = read(resp).await;
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_a_whole_seller_grant() {
    let t = spawn().await;
    let (a1, r1) = t.seller_tokens(Region::Na).await;
    let (a2, _) = t.seller_tokens(Region::Na).await;
    let (other, _) = t.seller_tokens(Region::Eu).await;
    let n = t
        .control
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.to_owned()),
            selling_partner_id: Some(defaults::SELLER_NA.to_owned()),
            ..Default::default()
        })
        .await;
    assert_eq!(n, 4);
    let path = "/sellers/v1/marketplaceParticipations";
    assert_eq!(t.sp_get(SP_NA, path, Some(&a1)).await.status(), 403);
    assert_eq!(t.sp_get(SP_NA, path, Some(&a2)).await.status(), 403);
    assert_eq!(t.sp_get(SP_EU, path, Some(&other)).await.status(), 200);
    assert_eq!(t.refresh_sp(&r1).await.0, 400);
    let info = t.control.token_info(&r1).await.unwrap();
    assert!(info.revoked);
    assert_eq!(info.kind, "refresh");
    assert!(t.control.token_info("nope").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn quirks_are_read_and_merged() {
    let t = spawn().await;
    assert_eq!(t.control.quirks().await, Quirks::default());
    t.control
        .call(
            Method::POST,
            "quirks",
            Some(&json!({"rotate_refresh_tokens": true})),
        )
        .await
        .unwrap();
    let q = t.control.quirks().await;
    assert!(q.rotate_refresh_tokens);
    assert_eq!(q.server_error_code, "server_error");
    t.control.set_access_token_ttl(60).await;
    let code = t.sp_code(None, Region::Na).await;
    let (_, body) = t.exchange_sp(&code).await;
    assert_eq!(body["expires_in"], 60);
    let err = t
        .control
        .call(Method::POST, "quirks", Some(&json!({"no_such_quirk": true})))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        fake_amazon::ControlError::Refused { status: 400, .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn self_authorized_refresh_token_works_for_a_new_seller() {
    let t = spawn().await;
    let refresh = t
        .control
        .self_authorize(defaults::SP_API_CLIENT_ID, "A4PRIVATESELLER")
        .await;
    let (status, body) = t.refresh_sp(&refresh).await;
    assert_eq!(status, 200, "{body}");
    let resp = t
        .sp_get(
            SP_NA,
            "/sellers/v1/marketplaceParticipations",
            body["access_token"].as_str(),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_expiry_notice() {
    let t = spawn().await;
    let n = t
        .control
        .notify_secret_expiry(defaults::SP_API_CLIENT_ID, 3600)
        .await;
    assert_eq!(n["notificationType"], "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY");
    assert_eq!(
        n["payload"]["applicationOAuthClientSecretExpiry"]["clientId"],
        defaults::SP_API_CLIENT_ID
    );
    t.control.advance_clock(3601.0).await;
    let [id, secret] = sp_creds();
    let (status, _) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::notifications"),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn lwa_rate_can_be_switched_on() {
    let t = spawn().await;
    t.control.set_rate("lwaToken", 0.1, 1).await;
    let [id, secret] = sp_creds();
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "sellingpartnerapi::notifications"),
        id,
        secret,
    ];
    assert_eq!(t.token(NA_LWA, &form).await.0, 200);
    let resp = t.token_raw(NA_LWA, &form).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}

/// Method, URL, headers, body.
type Case = (Method, String, Vec<(&'static str, String)>, Vec<u8>);

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_never_gets_a_5xx() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let cases: Vec<Case> = vec![
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("content-type", "application/x-www-form-urlencoded".into())], vec![0xff, 0xfe, b'=', 0x80]),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("content-type", "application/json".into())], b"[1,2]".to_vec()),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("content-type", "application/json".into())], br#"{"grant_type":{"x":1}}"#.to_vec()),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("authorization", "Basic !!!".into())], b"grant_type=refresh_token".to_vec()),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("authorization", "Basic".into())], b"grant_type=refresh_token&grant_type=x".to_vec()),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![("content-type", "text/plain".into())], b"hello".to_vec()),
        (Method::POST, t.url(NA_LWA, "/auth/o2/token"), vec![], big.clone()),
        (Method::POST, t.url(SP_NA, "/tokens/2021-03-01/restrictedDataToken"), vec![("x-amz-access-token", access.clone())], b"\x00\x01".to_vec()),
        (Method::POST, t.url(SP_NA, "/tokens/2021-03-01/restrictedDataToken"), vec![("x-amz-access-token", access.clone())], br#"{"restrictedResources":[1,null,"x"]}"#.to_vec()),
        (Method::POST, t.url(SP_NA, "/tokens/2021-03-01/restrictedDataToken"), vec![("x-amz-access-token", access.clone())], big.clone()),
        (Method::GET, t.url(SP_NA, "/orders/v0/orders/%ZZ%00/address"), vec![("x-amz-access-token", access.clone())], vec![]),
        (Method::GET, t.url(SP_NA, "//sellers//v1"), vec![], vec![]),
        (Method::GET, t.url(ADS_NA, "/v2/profiles"), vec![("authorization", "Bearer".into())], vec![]),
        (Method::POST, t.url(ADS_NA, "/amc/reporting/x/workflowExecutions"), vec![("authorization", "Bearer Atza|x".into())], b"{".to_vec()),
        (Method::GET, t.url("sellercentral.amazon.com", "/apps/authorize/consent?application_id=%FF&state=%00"), vec![], vec![]),
        (Method::POST, t.url("sellercentral.amazon.com", "/apps/authorize/consent"), vec![], b"action=approve&application_id=amzn1.sp.solution.ff441020-f643-4aaa-9e62-4660e96215ef&selling_partner_id=%3Cbad%3E".to_vec()),
        (Method::POST, t.url("www.amazon.com", "/ap/oa"), vec![], b"client_id=x&&&===".to_vec()),
        (Method::GET, format!("{}/", t.fake.base_url()), vec![], vec![]),
        (Method::POST, format!("{}/__fake/clock/advance", t.fake.base_url()), vec![], br#"{"seconds":"soon"}"#.to_vec()),
        (Method::POST, format!("{}/__fake/faults", t.fake.base_url()), vec![], br#"{"script":{"count":1,"status":42}}"#.to_vec()),
        (Method::POST, format!("{}/__fake/rates", t.fake.base_url()), vec![], br#"{"operation":"x","rate":-1,"burst":0}"#.to_vec()),
        (Method::POST, format!("{}/__fake/notifications/secret-expiry", t.fake.base_url()), vec![], br#"{"client_id":"amzn1.application-oa2-client.06cfef8f9728be048022f3954a4a5d0c","expires_in_seconds":9223372036854775807}"#.to_vec()),
    ];
    for (method, url, headers, body) in cases {
        let mut req = t.http.request(method.clone(), &url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let status = req.send().await.unwrap().status();
        assert!(status.as_u16() < 500, "{method} {url}: {status}");
        assert!(
            status.as_u16() >= 400 || status.as_u16() == 200,
            "{method} {url}: {status}"
        );
    }
    t.control.advance_clock(1e300).await;
    t.control.advance_clock(1e300).await;
    let code = t.sp_code(None, Region::Na).await;
    assert_eq!(t.exchange_sp(&code).await.0, 200);
}

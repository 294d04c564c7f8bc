//! Headers for SP-API, Ads and AMC, and the Restricted Data Token flow, against the fake's APIs.

use fake_amazon::defaults;
use lwa::{Api, AuthorizationCode, Region, RestrictedResource, TokenError};

use crate::support::World;

#[tokio::test(flavor = "multi_thread")]
async fn sp_api_headers_authorize_a_sellers_call() {
    let world = World::start().await;
    let (manager, _) = world.sp_manager(defaults::SELLER_NA, "a").await;
    let headers = manager.sp_api_headers().await.unwrap();
    assert!(
        headers["x-amz-access-token"]
            .to_str()
            .unwrap()
            .starts_with("Atza|")
    );
    assert!(headers["x-amz-access-token"].is_sensitive());
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .contains("(Language=Rust)")
    );
    assert_eq!(headers["x-amz-date"].to_str().unwrap().len(), 16);
    assert_eq!(headers.len(), 3);

    let url = world
        .endpoints()
        .url(Region::Na.sp_api_host(), "/sellers/v1/marketplaceParticipations");
    let response = reqwest::Client::new()
        .get(url)
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-amzn-ratelimit-limit"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["payload"][0]["marketplace"]["id"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_and_amc_headers_are_what_amazon_asks_for() {
    let world = World::start().await;
    let code = world
        .fake
        .control()
        .authorize(fake_amazon::AuthorizeSpec {
            client_id: defaults::ADS_CLIENT_ID.into(),
            ..Default::default()
        })
        .await;
    let manager = world.manager(Api::Ads, Region::Na, World::ads_app(), "ads");
    manager
        .authenticate_with_code(&AuthorizationCode::new(code), None, None)
        .await
        .unwrap();

    let headers = manager.ads_headers(None).await.unwrap();
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer Atza|")
    );
    assert_eq!(
        headers["amazon-advertising-api-clientid"],
        defaults::ADS_CLIENT_ID
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key("amazon-advertising-api-scope"));
    let url = world.endpoints().url(Region::Na.ads_api_host(), "/v2/profiles");
    let response = reqwest::Client::new()
        .get(url)
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let profiles: Vec<serde_json::Value> = response.json().await.unwrap();
    assert!(profiles.iter().any(|p| p["profileId"] == defaults::PROFILE_NA));
    assert!(
        profiles.iter().all(|p| p["profileId"] != defaults::PROFILE_EU),
        "only NA profiles on the NA host"
    );

    let scoped = manager
        .ads_headers(Some(&defaults::PROFILE_NA.to_string()))
        .await
        .unwrap();
    assert_eq!(
        scoped["amazon-advertising-api-scope"],
        defaults::PROFILE_NA.to_string().as_str()
    );

    let amc = manager
        .amc_headers(defaults::AMC_MARKETPLACE_ID, defaults::AMC_ADVERTISER_ID)
        .await
        .unwrap();
    assert!(!amc.contains_key("amazon-advertising-api-scope"));
    assert_eq!(
        amc["amazon-advertising-api-marketplaceid"],
        defaults::AMC_MARKETPLACE_ID
    );
    assert_eq!(
        amc["amazon-advertising-api-advertiserid"],
        defaults::AMC_ADVERTISER_ID
    );
    let url = world.endpoints().url(
        Region::Na.ads_api_host(),
        &format!("/amc/reporting/{}/workflowExecutions", defaults::AMC_INSTANCE),
    );
    let response = reqwest::Client::new()
        .post(url)
        .headers(amc)
        .body(r#"{"workflowId":"my-first-workflow","timeWindowType":"MOST_RECENT_WEEK"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let execution: serde_json::Value = response.json().await.unwrap();
    assert_eq!(execution["status"], "PENDING");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restricted_data_token_opens_the_restricted_orders_endpoint() {
    let world = World::start().await;
    let (manager, _) = world.sp_manager(defaults::SELLER_NA, "a").await;
    let order_path = "/orders/v0/orders/123-1234567-1234567/address";
    let url = world.endpoints().url(Region::Na.sp_api_host(), order_path);
    let http = reqwest::Client::new();

    // The plain access token is refused on a restricted operation.
    let refused = http
        .get(&url)
        .headers(manager.sp_api_headers().await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let rdt = manager
        .restricted_data_token(
            &[RestrictedResource {
                method: "GET".into(),
                path: "/orders/v0/orders/{orderId}/address".into(),
                data_elements: vec![],
            }],
            None,
        )
        .await
        .unwrap();
    assert!(rdt.token.expose().starts_with("Atz.sprdt|"));
    assert_eq!(rdt.expires_in, 3600);
    let allowed = http
        .get(&url)
        .headers(manager.sp_api_headers_with(&rdt.token))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let body: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(body["payload"]["AmazonOrderId"], "123-1234567-1234567");

    // An RDT for another path does not open this one.
    let other = manager
        .restricted_data_token(
            &[RestrictedResource {
                method: "GET".into(),
                path: "/orders/v0/orders/999-0000000-0000000/address".into(),
                data_elements: vec![],
            }],
            None,
        )
        .await
        .unwrap();
    let refused = http
        .get(&url)
        .headers(manager.sp_api_headers_with(&other.token))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // A request Amazon refuses comes back as an API error with Amazon's message.
    let error = manager
        .restricted_data_token(
            &[RestrictedResource {
                method: "".into(),
                path: "/x".into(),
                data_elements: vec![],
            }],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Api { status: 400, .. }), "{error:?}");
}

//! The SP-API static sandbox, answered from Amazon's embedded models.

use fake_amazon::Region;
use fake_amazon::sandbox::Sandbox;
use serde_json::{Value, json};

use crate::support::*;

const SANDBOX: &str = "sandbox.sellingpartnerapi-na.amazon.com";

#[test]
fn every_embedded_model_parses() {
    let sandbox = Sandbox::load();
    // createRestrictedDataToken, getMarketplaceParticipations, getAccount,
    // rotateApplicationClientSecret.
    assert_eq!(sandbox.operation_count(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn sellers_sandbox_answers_the_models_example() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let resp = t
        .sp_get(SANDBOX, "/sellers/v1/marketplaceParticipations", Some(&access))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-amzn-RateLimit-Limit"));
    assert!(resp.headers().contains_key("x-amzn-RequestId"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"payload": [{"marketplace": {"id": "ATVPDKIKX0DER", "countryCode": "US", "name": "Amazon.com",
            "defaultCurrencyCode": "USD", "defaultLanguageCode": "en_US", "domainName": "www.amazon.com"},
            "storeName": "BestSellerStore", "participation": {"isParticipating": true, "hasSuspendedListings": false}}]})
    );
    let body: Value = t
        .sp_get(SANDBOX, "/sellers/v1/account", Some(&access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["payload"]["business"]["name"], "BestSeller Inc.");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_sandbox_matches_request_bodies() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Eu).await;
    let path = "/tokens/2021-03-01/restrictedDataToken";
    let host = "sandbox.sellingpartnerapi-eu.amazon.com";
    let (status, body) = read(
        t.sp_post(
            host,
            path,
            &access,
            &json!({"targetApplication": "amzn1.sellerapps.app.target-application",
                    "restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"restrictedDataToken": "Atz.sprdt|IQEBLjAsAhRmHjNgHpi0U-Dme37rR6CuUpSR", "expiresIn": 3600})
    );
    let (status, body) = read(
        t.sp_post(
            host,
            path,
            &access,
            &json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/943-12-123434/address"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["restrictedDataToken"],
        "Atz.sprdt|AODFNESLjAsAhRmHjNgHpi0U-Dme37rR6CuUpSR"
    );
    let resp = t
        .sp_post(
            host,
            path,
            &access,
            &json!({"targetApplication": "amzn1.sellerapps.app.target-application",
                    "restrictedResources": [{"method": "", "path": "/orders/v1/orders/902-1845936-5435065/address"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let (_, body) = read(resp).await;
    assert_eq!(body["errors"][0]["details"], "Resource not provided.");
    // No example matches.
    let (status, body) = read(
        t.sp_post(
            host,
            path,
            &access,
            &json!({"restrictedResources": [{"method": "GET", "path": "/x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["errors"][0]["code"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn application_sandbox_and_auth() {
    let t = spawn().await;
    let grantless = t.grantless("sellingpartnerapi::client_credential:rotation").await;
    let resp = t
        .http
        .post(t.url(SANDBOX, "/applications/2023-11-30/clientSecret"))
        .header("x-amz-access-token", &grantless)
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "InvalidInput");
    // The sandbox never rotates anything.
    assert!(t.control.notifications().await.is_empty());

    let resp = t
        .sp_get(SANDBOX, "/sellers/v1/marketplaceParticipations", None)
        .await;
    assert_eq!(resp.status(), 403);
    let (ads, _) = t.ads_tokens().await;
    let resp = t
        .sp_get(SANDBOX, "/sellers/v1/marketplaceParticipations", Some(&ads))
        .await;
    assert_eq!(resp.status(), 403);
    let (access, _) = t.seller_tokens(Region::Na).await;
    let resp = t.sp_get(SANDBOX, "/orders/v0/orders", Some(&access)).await;
    assert_eq!(resp.status(), 404);
}

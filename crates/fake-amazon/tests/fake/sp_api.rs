//! SP-API: auth, errors, rate limits, Sellers, Tokens (RDT), Orders, Notifications, rotation.

use fake_amazon::{AppKind, AppSpec, Quirks, Region, RevokeSpec, SellerSpec, defaults};
use serde_json::{Value, json};

use crate::support::*;

const PARTICIPATIONS: &str = "/sellers/v1/marketplaceParticipations";
const RDT: &str = "/tokens/2021-03-01/restrictedDataToken";
const ADDRESS: &str = "/orders/v0/orders/123-1234567-1234567/address";

fn assert_unauthorized(body: &Value, details: Option<&str>) {
    let error = &body["errors"][0];
    assert_eq!(error["code"], "Unauthorized", "{body}");
    assert_eq!(error["message"], "Access to requested resource is denied.");
    match details {
        Some(d) => assert_eq!(error["details"], d, "{body}"),
        None => assert!(error.get("details").is_none(), "{body}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn marketplace_participations_for_the_sellers_region() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let resp = t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "0.016");
    assert_eq!(resp.headers()["x-amzn-RequestId"].len(), 36);
    let body: Value = resp.json().await.unwrap();
    let payload = body["payload"].as_array().unwrap();
    assert_eq!(payload.len(), 4);
    let us = payload
        .iter()
        .find(|p| p["marketplace"]["id"] == "ATVPDKIKX0DER")
        .unwrap();
    assert_eq!(
        us["marketplace"],
        json!({"id": "ATVPDKIKX0DER", "countryCode": "US", "name": "Amazon.com",
               "defaultCurrencyCode": "USD", "defaultLanguageCode": "en_US",
               "domainName": "www.amazon.com"})
    );
    assert_eq!(us["storeName"], "Fake Store NA");
    assert_eq!(
        us["participation"],
        json!({"isParticipating": true, "hasSuspendedListings": false})
    );

    // A seller with chosen marketplaces.
    t.control
        .register_seller(SellerSpec {
            selling_partner_id: "A3CHOSENMKTS".to_owned(),
            region: Region::Eu,
            marketplace_ids: vec!["A1PA6795UKMFR9".to_owned(), "A1F83G8C2ARO7P".to_owned()],
            ..Default::default()
        })
        .await;
    let code = t.sp_code(Some("A3CHOSENMKTS"), Region::Eu).await;
    let (_, body) = t.exchange_sp(&code).await;
    let resp = t
        .sp_get(SP_EU, PARTICIPATIONS, body["access_token"].as_str())
        .await;
    let body: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = body["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["marketplace"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["A1PA6795UKMFR9", "A1F83G8C2ARO7P"]);
    let gb = &body["payload"][1]["marketplace"]["countryCode"];
    assert_eq!(gb, "GB");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_account_answers() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Fe).await;
    let resp = t
        .sp_get(
            "sellingpartnerapi-fe.amazon.com",
            "/sellers/v1/account",
            Some(&access),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["payload"]["marketplaceParticipationList"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_errors_are_403_with_amazons_body() {
    let t = spawn().await;
    let resp = t.sp_get(SP_NA, PARTICIPATIONS, None).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("x-amzn-RateLimit-Limit").is_none());
    assert!(
        resp.headers()["x-amzn-ErrorType"]
            .to_str()
            .unwrap()
            .starts_with("AccessDeniedException")
    );
    assert!(resp.headers().contains_key("x-amzn-RequestId"));
    let (_, body) = read(resp).await;
    assert_unauthorized(&body, Some("Access token is missing in the request header."));

    let (_, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some("Atza|garbage")).await).await;
    assert_unauthorized(
        &body,
        Some("The access token you provided is revoked, malformed or invalid."),
    );

    let (access, _) = t.seller_tokens(Region::Na).await;
    t.control
        .revoke(RevokeSpec {
            access_token: Some(access.clone()),
            ..Default::default()
        })
        .await;
    let (_, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await).await;
    assert_unauthorized(
        &body,
        Some("The access token you provided is revoked, malformed or invalid."),
    );

    let (access, _) = t.seller_tokens(Region::Na).await;
    t.control.advance_clock(3599.0).await;
    assert_eq!(t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await.status(), 200);
    t.control.advance_clock(2.0).await;
    let (status, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, Some("The access token you provided has expired."));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_kind_of_token_is_denied() {
    let t = spawn().await;
    let (ads, _) = t.ads_tokens().await;
    let (status, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some(&ads)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, None);

    let grantless = t.grantless("sellingpartnerapi::notifications").await;
    let (status, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some(&grantless)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, None);

    // Authorizations are regional.
    let (eu, _) = t.seller_tokens(Region::Eu).await;
    let (status, body) = read(t.sp_get(SP_NA, PARTICIPATIONS, Some(&eu)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, None);
    let resp = t.sp_get(SP_EU, PARTICIPATIONS, Some(&eu)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["payload"].as_array().unwrap().len(), 16);

    let resp = t.sp_get(SP_NA, "/no/such/operation", Some(&eu)).await;
    assert_eq!(resp.status(), 404);
    let (_, body) = read(resp).await;
    assert_eq!(body["errors"][0]["code"], "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_past_the_bucket_with_quota_exceeded() {
    let t = spawn().await;
    t.control.set_rate("getMarketplaceParticipations", 0.5, 2).await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    for _ in 0..2 {
        let resp = t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "0.5");
    }
    let resp = t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("x-amzn-RateLimit-Limit").is_none());
    let (_, body) = read(resp).await;
    assert_eq!(
        body,
        json!({"errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota for the requested resource."}]})
    );
    // Another seller has its own bucket.
    let (other, _) = t.seller_tokens(Region::Na).await;
    let _ = other;
    let code = t.sp_code(Some("A9OTHERSELLER"), Region::Na).await;
    let (_, b) = t.exchange_sp(&code).await;
    assert_eq!(
        t.sp_get(SP_NA, PARTICIPATIONS, b["access_token"].as_str())
            .await
            .status(),
        200
    );
    // The fake clock refills the bucket.
    t.control.advance_clock(2.0).await;
    assert_eq!(t.sp_get(SP_NA, PARTICIPATIONS, Some(&access)).await.status(), 200);
}

async fn rdt(t: &TestFake, token: &str, resources: Value) -> (reqwest::StatusCode, Value) {
    read(
        t.sp_post(SP_NA, RDT, token, &json!({ "restrictedResources": resources }))
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rdt_grants_exactly_its_resources() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;

    // A plain access token cannot call the restricted operation.
    let (status, body) = read(t.sp_get(SP_NA, ADDRESS, Some(&access)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, None);

    let resp = t
        .sp_post(
            SP_NA,
            RDT,
            &access,
            &json!({"restrictedResources": [{"method": "GET", "path": ADDRESS}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "1.0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expiresIn"], 3600);
    let token = body["restrictedDataToken"].as_str().unwrap().to_owned();
    assert!(token.starts_with("Atz.sprdt|") && token.len() > 400);

    let resp = t.sp_get(SP_NA, ADDRESS, Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["payload"]["AmazonOrderId"], "123-1234567-1234567");
    assert_eq!(body["payload"]["ShippingAddress"]["CountryCode"], "US");

    // Another order's path, a non-restricted operation, and minting another RDT: refused.
    for path in ["/orders/v0/orders/999-1234567-1234567/address", PARTICIPATIONS] {
        let (status, _) = read(t.sp_get(SP_NA, path, Some(&token)).await).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = rdt(&t, &token, json!([{"method": "GET", "path": ADDRESS}])).await;
    assert_eq!(status, 403);

    // An RDT for another method.
    let (_, body) = rdt(&t, &access, json!([{"method": "POST", "path": ADDRESS}])).await;
    let post_only = body["restrictedDataToken"].as_str().unwrap().to_owned();
    assert_eq!(t.sp_get(SP_NA, ADDRESS, Some(&post_only)).await.status(), 403);

    // A generic path covers every order.
    let (_, body) = rdt(
        &t,
        &access,
        json!([{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]),
    )
    .await;
    let generic = body["restrictedDataToken"].as_str().unwrap().to_owned();
    assert_eq!(
        t.sp_get(
            SP_NA,
            "/orders/v0/orders/555-7654321-7654321/address",
            Some(&generic)
        )
        .await
        .status(),
        200
    );

    // Revoked and expired RDTs.
    t.control
        .revoke(RevokeSpec {
            access_token: Some(generic.clone()),
            ..Default::default()
        })
        .await;
    assert_eq!(t.sp_get(SP_NA, ADDRESS, Some(&generic)).await.status(), 403);
    t.control.advance_clock(3601.0).await;
    let (status, body) = read(t.sp_get(SP_NA, ADDRESS, Some(&token)).await).await;
    assert_eq!(status, 403);
    assert_unauthorized(&body, Some("The access token you provided has expired."));
}

#[tokio::test(flavor = "multi_thread")]
async fn rdt_data_elements_reach_get_order() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let path = "/orders/v0/orders/123-1234567-1234567";
    let resp = t.sp_get(SP_NA, path, Some(&access)).await;
    let body: Value = resp.json().await.unwrap();
    assert!(body["payload"].get("ShippingAddress").is_none());
    let (_, body) = rdt(
        &t,
        &access,
        json!([{"method": "GET", "path": path, "dataElements": ["shippingAddress"]}]),
    )
    .await;
    let token = body["restrictedDataToken"].as_str().unwrap();
    let body: Value = t.sp_get(SP_NA, path, Some(token)).await.json().await.unwrap();
    assert!(body["payload"]["ShippingAddress"].is_object());
    assert!(body["payload"].get("BuyerInfo").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn rdt_request_validation() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    // The model's own 400 example.
    let resp = t
        .sp_post(
            SP_NA,
            RDT,
            &access,
            &json!({"targetApplication": defaults::SP_API_APPLICATION_ID,
                    "restrictedResources": [{"method": "", "path": "/orders/v1/orders/902-1845936-5435065/address"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "1.0");
    let (_, body) = read(resp).await;
    assert_eq!(
        body,
        json!({"errors": [{"code": "InvalidRequest", "message": "Request is missing or has invalid parameters", "details": "Resource not provided."}]})
    );
    let many: Vec<Value> = (0..51)
        .map(|_| json!({"method": "GET", "path": ADDRESS}))
        .collect();
    for resources in [
        json!([{"method": "PATCH", "path": ADDRESS}]),
        json!([{"method": "GET", "path": "orders/v0/orders"}]),
        json!([{"method": "GET", "path": ADDRESS, "dataElements": ["creditCard"]}]),
        Value::Array(many),
    ] {
        let (status, body) = rdt(&t, &access, resources).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["code"], "InvalidInput", "{body}");
    }
    for bad in [json!({}), json!({"restrictedResources": []})] {
        let (status, body) = read(t.sp_post(SP_NA, RDT, &access, &bad).await).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["code"], "InvalidRequest");
    }
    let (status, _) = read(
        t.http
            .post(t.url(SP_NA, RDT))
            .header("x-amz-access-token", &access)
            .body("not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    // Unknown delegatee.
    let (status, _) = read(
        t.sp_post(
            SP_NA,
            RDT,
            &access,
            &json!({"targetApplication": "amzn1.sp.solution.unknown", "restrictedResources": [{"method": "GET", "path": ADDRESS}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn rdt_payload_wrapper_quirk() {
    let t = spawn_with_quirks(Quirks {
        rdt_payload_wrapper: true,
        ..Quirks::default()
    })
    .await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let (_, body) = rdt(&t, &access, json!([{"method": "GET", "path": ADDRESS}])).await;
    assert_eq!(body["payload"]["expiresIn"], 3600);
    assert!(
        body["payload"]["restrictedDataToken"]
            .as_str()
            .unwrap()
            .starts_with("Atz.sprdt|")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_destinations_need_the_notifications_scope() {
    let t = spawn().await;
    let grantless = t.grantless("sellingpartnerapi::notifications").await;
    let path = "/notifications/v1/destinations";
    let arn = "arn:aws:sqs:us-east-2:444455556666:queue1";
    let (status, body) = read(
        t.sp_post(
            SP_NA,
            path,
            &grantless,
            &json!({"resourceSpecification": {"sqs": {"arn": arn}}, "name": "q1"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"]["name"], "q1");
    assert_eq!(body["payload"]["resource"], json!({"sqs": {"arn": arn}}));
    let id = body["payload"]["destinationId"].as_str().unwrap().to_owned();

    let (status, body) = read(t.sp_get(SP_NA, path, Some(&grantless)).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["payload"].as_array().unwrap().len(), 1);
    let one = format!("{path}/{id}");
    let (status, body) = read(t.sp_get(SP_NA, &one, Some(&grantless)).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["payload"]["destinationId"], id.as_str());
    let resp = t
        .http
        .delete(t.url(SP_NA, &one))
        .header("x-amz-access-token", &grantless)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t.sp_get(SP_NA, &one, Some(&grantless)).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("x-amzn-RateLimit-Limit"));
    let (status, _) = read(
        t.sp_post(SP_NA, path, &grantless, &json!({"name": "no spec"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);

    let (seller, _) = t.seller_tokens(Region::Na).await;
    let rotation = t.grantless("sellingpartnerapi::client_credential:rotation").await;
    for token in [&seller, &rotation] {
        let (status, body) = read(t.sp_get(SP_NA, path, Some(token)).await).await;
        assert_eq!(status, 403);
        assert_unauthorized(&body, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_returns_204_and_records_the_notification() {
    let t = spawn().await;
    let rotation = t.grantless("sellingpartnerapi::client_credential:rotation").await;
    let url = t.url(SP_NA, "/applications/2023-11-30/clientSecret");
    let resp = t
        .http
        .post(&url)
        .header("x-amz-access-token", &rotation)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "0.0167");
    assert!(resp.bytes().await.unwrap().is_empty());
    let n = t.control.notifications().await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["notificationType"], "APPLICATION_OAUTH_CLIENT_NEW_SECRET");
    assert!(n[0]["notificationVersion"].is_string());
    let secret = &n[0]["payload"]["applicationOAuthClientNewSecret"];
    assert_eq!(secret["clientId"], defaults::SP_API_CLIENT_ID);
    assert!(
        secret["newClientSecret"]
            .as_str()
            .unwrap()
            .starts_with("amzn1.oa2-cs.v1.")
    );
    assert!(
        secret["newClientSecretExpiryTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(secret["oldClientSecretExpiryTime"].is_string());
    let meta = &n[0]["notificationMetadata"];
    assert_eq!(meta["applicationId"], defaults::SP_API_APPLICATION_ID);
    for field in ["subscriptionId", "publishTime", "notificationId"] {
        assert!(meta[field].is_string(), "{field}");
    }
    assert!(n[0].get("payloadVersion").is_none());
    // Burst 1 at 0.0167/s: a second call right away is throttled.
    let resp = t
        .http
        .post(&url)
        .header("x-amz-access-token", &rotation)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // A seller token may not rotate.
    let (seller, _) = t.seller_tokens(Region::Na).await;
    let resp = t
        .http
        .post(&url)
        .header("x-amz-access-token", &seller)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_refused_when_not_enrolled() {
    let t = spawn().await;
    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            rotation_enrolled: Some(false),
            ..Default::default()
        })
        .await;
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::client_credential:rotation"),
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secrets[0]),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let resp = t
        .http
        .post(t.url(SP_NA, "/applications/2023-11-30/clientSecret"))
        .header("x-amz-access-token", body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["message"],
        "Application is not enrolled for rotation notification. Please update application notification preference in Developer console."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fe_per_marketplace_quirk_limits_participations() {
    let t = spawn().await;
    t.control
        .set_quirks(Quirks {
            fe_authorization_per_marketplace: true,
            ..Quirks::default()
        })
        .await;
    let resp = t
        .http
        .post(t.url("sellercentral.amazon.com.au", "/apps/authorize/consent"))
        .form(&[
            ("application_id", defaults::SP_API_APPLICATION_ID),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    let (_, params) = location_params(&resp);
    let (_, body) = t.exchange_sp(param(&params, "spapi_oauth_code").unwrap()).await;
    let body: Value = t
        .sp_get(
            "sellingpartnerapi-fe.amazon.com",
            PARTICIPATIONS,
            body["access_token"].as_str(),
        )
        .await
        .json()
        .await
        .unwrap();
    let payload = body["payload"].as_array().unwrap();
    assert_eq!(payload.len(), 1);
    assert_eq!(payload[0]["marketplace"]["id"], "A39IBJ37TRP1C6");
}

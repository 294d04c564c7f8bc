//! Ads API profiles and AMC.

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, Region, RevokeSpec, defaults};
use serde_json::{Value, json};

use crate::support::*;

const AMC_PATH: &str = "/amc/reporting/amcfake7na01/workflowExecutions";

#[tokio::test(flavor = "multi_thread")]
async fn profiles_of_the_hosts_region_only() {
    let t = spawn().await;
    let (access, _) = t.ads_tokens().await;
    for (host, id, country) in [
        (ADS_NA, defaults::PROFILE_NA, "US"),
        ("advertising-api-eu.amazon.com", defaults::PROFILE_EU, "UK"),
        ("advertising-api-fe.amazon.com", defaults::PROFILE_FE, "JP"),
    ] {
        let resp = t
            .ads_get(host, "/v2/profiles", &access, defaults::ADS_CLIENT_ID)
            .await;
        assert_eq!(resp.status(), 200, "{host}");
        let body: Value = resp.json().await.unwrap();
        let list = body.as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        assert_eq!(list[0]["profileId"], json!(id));
        assert_eq!(list[0]["countryCode"], country);
        let info = &list[0]["accountInfo"];
        for field in ["marketplaceStringId", "id", "type", "name"] {
            assert!(info[field].is_string(), "{field}");
        }
        assert_eq!(info["validPaymentMethod"], true);
        assert!(list[0]["currencyCode"].is_string() && list[0]["timezone"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_refuse_bad_credentials_with_401() {
    let t = spawn().await;
    let (access, refresh) = t.ads_tokens().await;
    let url = t.url(ADS_NA, "/v2/profiles");
    let check = |resp: reqwest::Response| async move {
        let (status, body) = read(resp).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["code"], "UNAUTHORIZED");
        assert!(body["details"].is_string());
        assert!(body["requestId"].is_string());
    };
    check(t.http.get(&url).bearer_auth(&access).send().await.unwrap()).await;
    check(
        t.ads_get(ADS_NA, "/v2/profiles", &access, defaults::SP_API_CLIENT_ID)
            .await,
    )
    .await;
    check(
        t.http
            .get(&url)
            .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (sp, _) = t.seller_tokens(Region::Na).await;
    check(
        t.ads_get(ADS_NA, "/v2/profiles", &sp, defaults::SP_API_CLIENT_ID)
            .await,
    )
    .await;
    check(
        t.ads_get(ADS_NA, "/v2/profiles", &sp, defaults::ADS_CLIENT_ID)
            .await,
    )
    .await;

    t.control.advance_clock(3601.0).await;
    check(
        t.ads_get(ADS_NA, "/v2/profiles", &access, defaults::ADS_CLIENT_ID)
            .await,
    )
    .await;

    // A fresh token works until its grant is revoked.
    let [id, secret] = ads_creds();
    let (_, body) = t
        .token(
            EU_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                id,
                secret,
            ],
        )
        .await;
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.ads_get(ADS_NA, "/v2/profiles", &fresh, defaults::ADS_CLIENT_ID)
            .await
            .status(),
        200
    );
    let n = t
        .control
        .revoke(RevokeSpec {
            client_id: Some(defaults::ADS_CLIENT_ID.to_owned()),
            advertiser_id: Some(defaults::ADVERTISER.to_owned()),
            ..Default::default()
        })
        .await;
    assert!(n >= 3, "{n}");
    check(
        t.ads_get(ADS_NA, "/v2/profiles", &fresh, defaults::ADS_CLIENT_ID)
            .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_with_retry_after() {
    let t = spawn().await;
    t.control.set_rate("getProfiles", 0.5, 1).await;
    let (access, _) = t.ads_tokens().await;
    assert_eq!(
        t.ads_get(ADS_NA, "/v2/profiles", &access, defaults::ADS_CLIENT_ID)
            .await
            .status(),
        200
    );
    let resp = t
        .ads_get(ADS_NA, "/v2/profiles", &access, defaults::ADS_CLIENT_ID)
        .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let (_, body) = read(resp).await;
    assert!(body["code"].is_string() && body["details"].is_string());

    // A scripted 429 fault on Ads also carries Retry-After.
    t.control.set_rate("getProfiles", 100.0, 100).await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Api,
            host: Some(ADS_NA.to_owned()),
            script: Some(FaultScript {
                count: 1,
                status: Some(429),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let resp = t
        .ads_get(ADS_NA, "/v2/profiles", &access, defaults::ADS_CLIENT_ID)
        .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}

impl TestFake {
    async fn amc(&self, token: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(ADS_NA, AMC_PATH))
            .bearer_auth(token)
            .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn amc_workflow_execution() {
    let t = spawn().await;
    let (access, _) = t.ads_tokens().await;
    let amc_headers = [
        (
            "Amazon-Advertising-API-MarketplaceId",
            defaults::AMC_MARKETPLACE_ID,
        ),
        ("Amazon-Advertising-API-AdvertiserId", defaults::AMC_ADVERTISER_ID),
    ];
    let sql = json!({"workflow": {"sqlQuery": "SELECT campaign, SUM(impressions) FROM sponsored_ads_traffic GROUP BY 1"},
                     "timeWindowType": "MOST_RECENT_WEEK"});
    let resp = t.amc(&access, &amc_headers, &sql).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amcworkflowexecutions.v1+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["executionCategory"], "AD_HOC");
    assert_eq!(body["workflowExecutionTimeoutSeconds"], 21600);
    for field in [
        "createTime",
        "dataGaps",
        "disableAggregationControls",
        "expireTime",
        "ignoreDataGaps",
        "lastUpdatedTime",
        "parameterValues",
        "timeWindowEnd",
        "timeWindowEndOriginal",
        "timeWindowStart",
        "timeWindowStartOriginal",
        "timeWindowTimeZoneOriginal",
        "waitUntil",
        "workflowExecutionId",
        "workflowId",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }
    let id = body["workflowExecutionId"].as_str().unwrap();
    let resp = t
        .http
        .get(t.url(ADS_NA, &format!("{AMC_PATH}/{id}")))
        .bearer_auth(&access)
        .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
        .header(amc_headers[0].0, amc_headers[0].1)
        .header(amc_headers[1].0, amc_headers[1].1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let saved = json!({"workflowId": "my-first-workflow", "timeWindowStart": "2024-01-20T00:00:00",
                       "timeWindowEnd": "2024-01-25T00:00:00", "timeWindowType": "EXPLICIT",
                       "timeWindowTimeZone": "America/New_York"});
    let body: Value = t.amc(&access, &amc_headers, &saved).await.json().await.unwrap();
    assert_eq!(body["workflowId"], "my-first-workflow");
    assert_eq!(body["timeWindowStart"], "2024-01-20T00:00:00");

    // Missing headers and bodies: 400; another advertiser id: 403.
    for headers in [&amc_headers[..1], &amc_headers[1..]] {
        let (status, body) = read(t.amc(&access, headers, &sql).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["code"].is_string() && body["details"].is_string());
    }
    let (status, _) = read(
        t.amc(
            &access,
            &amc_headers,
            &json!({"timeWindowType": "MOST_RECENT_WEEK"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let other = [
        amc_headers[0],
        ("Amazon-Advertising-API-AdvertiserId", "ENTITY9SOMEONEELSE"),
    ];
    let (status, _) = read(t.amc(&access, &other, &sql).await).await;
    assert_eq!(status, 403);
    // An SP-API token: 401.
    let (sp, _) = t.seller_tokens(Region::Na).await;
    let (status, _) = read(t.amc(&sp, &amc_headers, &sql).await).await;
    assert_eq!(status, 401);
}

const CAMPAIGNS: &str = "/sp/campaigns/list";
const SP_CAMPAIGN_TYPE: &str = "application/vnd.spCampaign.v3+json";

impl TestFake {
    /// `POST /sp/campaigns/list` with the Ads auth headers, an optional scope and a body.
    async fn sp_campaigns(
        &self,
        host: &str,
        token: &str,
        scope: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(host, CAMPAIGNS))
            .bearer_auth(token)
            .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
            .header("Content-Type", SP_CAMPAIGN_TYPE)
            .header("Accept", SP_CAMPAIGN_TYPE);
        if let Some(scope) = scope {
            req = req.header("Amazon-Advertising-API-Scope", scope);
        }
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        req.send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_campaigns_list_under_a_profile_of_the_hosts_region() {
    let t = spawn().await;
    let (access, _) = t.ads_tokens().await;
    let na = defaults::PROFILE_NA.to_string();
    let resp = t
        .sp_campaigns(ADS_NA, &access, Some(&na), Some(r#"{"maxResults":10}"#))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], SP_CAMPAIGN_TYPE);
    assert_eq!(resp.headers()["x-amzn-RequestId"].len(), 36);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["totalResults"], 2, "{body}");
    let campaigns = body["campaigns"].as_array().unwrap();
    assert_eq!(campaigns.len(), 2);
    for c in campaigns {
        assert!(c["campaignId"].as_str().unwrap().starts_with(&na), "{c}");
        assert!(c["name"].is_string() && c["state"].is_string(), "{c}");
        assert_eq!(c["budget"]["budgetType"], "DAILY");
        assert!(c["budget"]["budget"].is_number());
    }
    assert_eq!(campaigns[0]["state"], "ENABLED");

    // Deterministic: the same answer again, with no body and plain JSON too.
    let again: Value = t
        .sp_campaigns(ADS_NA, &access, Some(&na), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, body);
    let resp = t
        .http
        .post(t.url(ADS_NA, CAMPAIGNS))
        .bearer_auth(&access)
        .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
        .header("Amazon-Advertising-API-Scope", &na)
        .json(&json!({"maxResults": 1, "stateFilter": {"include": ["ENABLED"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let filtered: Value = resp.json().await.unwrap();
    assert_eq!(filtered["totalResults"], 1);
    assert_eq!(filtered["campaigns"][0], campaigns[0]);

    // The EU profile on the EU host has its own campaigns.
    let eu = defaults::PROFILE_EU.to_string();
    let body: Value = t
        .sp_campaigns("advertising-api-eu.amazon.com", &access, Some(&eu), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body["campaigns"][0]["campaignId"]
            .as_str()
            .unwrap()
            .starts_with(&eu)
    );

    let c = t.control.counters().await;
    assert_eq!(c.api_calls_with_status(ADS_NA, CAMPAIGNS, 200), 3);
    let recorded = t.control.requests(Some(ADS_NA)).await;
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, CAMPAIGNS);
    assert_eq!(recorded[0].body, r#"{"maxResults":10}"#);
    assert_eq!(recorded[0].headers["amazon-advertising-api-scope"], na);
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_campaigns_refusals() {
    let t = spawn().await;
    let (access, _) = t.ads_tokens().await;
    let na = defaults::PROFILE_NA.to_string();
    let check = |resp: reqwest::Response, want: u16, code: &'static str| async move {
        let (status, body) = read(resp).await;
        assert_eq!(status, want, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["details"].is_string() && body["requestId"].is_string());
    };
    // Auth first: no token, wrong client id, an SP-API token.
    let resp = t
        .http
        .post(t.url(ADS_NA, CAMPAIGNS))
        .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
        .header("Amazon-Advertising-API-Scope", &na)
        .send()
        .await
        .unwrap();
    check(resp, 401, "UNAUTHORIZED").await;
    let resp = t
        .http
        .post(t.url(ADS_NA, CAMPAIGNS))
        .bearer_auth(&access)
        .header("Amazon-Advertising-API-ClientId", defaults::SP_API_CLIENT_ID)
        .header("Amazon-Advertising-API-Scope", &na)
        .send()
        .await
        .unwrap();
    check(resp, 401, "UNAUTHORIZED").await;
    let (sp, _) = t.seller_tokens(Region::Na).await;
    check(
        t.sp_campaigns(ADS_NA, &sp, Some(&na), None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // Scope missing: 400; another region's profile, unknown or malformed: 401.
    check(
        t.sp_campaigns(ADS_NA, &access, None, None).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    let eu = defaults::PROFILE_EU.to_string();
    for scope in [eu.as_str(), "3510842657329999", "not-a-profile"] {
        check(
            t.sp_campaigns(ADS_NA, &access, Some(scope), None).await,
            401,
            "UNAUTHORIZED",
        )
        .await;
    }
    // The same EU profile is fine on the EU host.
    assert_eq!(
        t.sp_campaigns("advertising-api-eu.amazon.com", &access, Some(&eu), None)
            .await
            .status(),
        200
    );

    // Bodies: not JSON, not an object, bad maxResults: 400; another content type: 415.
    for body in ["{not json", "[1,2]", r#"{"maxResults":0}"#] {
        check(
            t.sp_campaigns(ADS_NA, &access, Some(&na), Some(body)).await,
            400,
            "BAD_REQUEST",
        )
        .await;
    }
    let resp = t
        .http
        .post(t.url(ADS_NA, CAMPAIGNS))
        .bearer_auth(&access)
        .header("Amazon-Advertising-API-ClientId", defaults::ADS_CLIENT_ID)
        .header("Amazon-Advertising-API-Scope", &na)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    check(resp, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // Only POST is routed.
    let resp = t
        .ads_get(ADS_NA, CAMPAIGNS, &access, defaults::ADS_CLIENT_ID)
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_campaigns_throttled_per_advertiser() {
    let t = spawn().await;
    t.control.set_rate("listSponsoredProductsCampaigns", 0.5, 1).await;
    let (access, _) = t.ads_tokens().await;
    let na = defaults::PROFILE_NA.to_string();
    assert_eq!(
        t.sp_campaigns(ADS_NA, &access, Some(&na), None).await.status(),
        200
    );
    let resp = t.sp_campaigns(ADS_NA, &access, Some(&na), None).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let (_, body) = read(resp).await;
    assert_eq!(body["code"], "TOO_MANY_REQUESTS");
}

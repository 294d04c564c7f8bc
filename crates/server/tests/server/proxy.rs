//! The passthrough proxy over HTTP against the fake Amazon: headers injected and stripped,
//! RDTs minted once and reused, refresh-and-retry, the rate limiter, crafted paths, stand-ins.

use std::time::Duration;

use fake_amazon::browser::Choice;
use fake_amazon::{RevokeSpec, defaults};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{RETURN, TestApp, spawn, spawn_with};

const NA: &str = "sellingpartnerapi-na.amazon.com";
const ADS_NA: &str = "advertising-api.amazon.com";
const ORDER: &str = "123-1234567-1234567";

impl TestApp {
    /// A proxied call with the tenant's key.
    fn proxy(&self, method: reqwest::Method, id: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/connections/{id}/proxy{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// The connection's current Amazon access token (vended with the full key).
    async fn current_token(&self, id: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/connections/{id}/access-token", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn onboard_ads(&self) -> String {
        let link = self
            .connect_link(json!({"api": "ads", "region": "na", "state": "ads", "redirect_url": RETURN}))
            .await;
        let landing = self.through_consent(&link, Choice::Approve).await;
        let r = self
            .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
            .await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["connection"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn last_request(&self, host: &str) -> fake_amazon::RecordedRequest {
        self.fake
            .control()
            .requests(Some(host))
            .await
            .pop()
            .expect("the fake saw a request")
    }

    async fn rdts_minted_at_fake(&self) -> u64 {
        let counters = self.fake.control().counters().await;
        counters
            .api
            .iter()
            .filter(|c| c.path == "/tokens/2021-03-01/restrictedDataToken" && c.status == 200)
            .map(|c| c.count)
            .sum()
    }

    async fn proxy_only_key(&self) -> String {
        lwa_server::admin::create_key(&self.state, &self.tenant_id, None, "proxy-only")
            .await
            .unwrap()
            .key
            .to_string()
    }
}

/// The tenant's own headers a proxied call carries, none of which may reach Amazon.
const TENANT_HEADERS: &[(&str, &str)] = &[
    ("x-amz-access-token", "Atza|tenant-own-token"),
    ("cookie", "session=tenant"),
    ("x-forwarded-for", "10.1.2.3"),
    ("x-real-ip", "10.1.2.3"),
    ("forwarded", "for=10.1.2.3"),
    ("x-amazon-token-secret", "not-a-secret-of-this-connection-xxxxx"),
    ("amazon-advertising-api-clientid", "tenant-client-id"),
    ("x-amz-security-token", "tenant-sts"),
];

fn assert_nothing_of_the_tenant(headers: &std::collections::BTreeMap<String, String>, key: &str) {
    for (name, value) in headers {
        assert!(!value.contains(key), "the tenant's key reached Amazon in {name}");
        assert!(
            !value.contains("tenant"),
            "a tenant header reached Amazon: {name}: {value}"
        );
        assert!(!name.starts_with("x-lwa-broker"), "{name} reached Amazon");
        assert!(!name.starts_with("x-forwarded"), "{name} reached Amazon");
    }
    for name in [
        "cookie",
        "x-real-ip",
        "forwarded",
        "x-amazon-token-secret",
        "x-amz-security-token",
    ] {
        assert!(!headers.contains_key(name), "{name} reached Amazon");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_api_ads_and_amc_calls_carry_exactly_the_right_headers() {
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();

    // SP-API: the connection's token and the broker's user-agent; the caller's end-to-end
    // headers pass, its credentials and network headers do not.
    let mut request = app
        .proxy(reqwest::Method::GET, id, "/sellers/v1/marketplaceParticipations")
        .header("accept", "application/json")
        .header("x-amz-date", "20260101T000000Z")
        .header("x-end-to-end", "kept");
    for (name, value) in TENANT_HEADERS {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-amzn-requestid"));
    assert!(r.headers().contains_key("x-amzn-ratelimit-limit"));
    assert_eq!(r.headers()["x-lwa-broker-token"], "access-token");
    assert_eq!(r.headers()["x-lwa-broker-refreshed"], "false");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["payload"].as_array().is_some_and(|p| !p.is_empty()),
        "{body}"
    );
    let seen = app.last_request(NA).await;
    assert_eq!(seen.path, "/sellers/v1/marketplaceParticipations");
    assert_eq!(seen.headers["x-amz-access-token"], app.current_token(id).await);
    assert_eq!(seen.headers["user-agent"], lwa::DEFAULT_USER_AGENT);
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["x-amz-date"], "20260101T000000Z");
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("amazon-advertising-api-clientid"));
    assert_nothing_of_the_tenant(&seen.headers, &app.key);

    // Ads: Bearer token, the app's client id; the profile scope checked against the
    // connection's profiles; no scope on /v2/profiles.
    let ads = app.onboard_ads().await;
    let r = app
        .proxy(reqwest::Method::GET, &ads, "/v2/profiles")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profiles: Value = r.json().await.unwrap();
    assert_eq!(profiles[0]["profileId"], json!(3510842657320001u64));
    let seen = app.last_request(ADS_NA).await;
    let ads_token = app.current_token(&ads).await;
    assert_eq!(seen.headers["authorization"], format!("Bearer {ads_token}"));
    assert_eq!(
        seen.headers["amazon-advertising-api-clientid"],
        defaults::ADS_CLIENT_ID
    );
    assert!(!seen.headers.contains_key("amazon-advertising-api-scope"));
    assert!(!seen.headers.contains_key("x-amz-access-token"));

    // A profile of the connection goes as the scope, to the host of its region.
    let before = app.fake.control().requests(None).await.len();
    let r = app
        .proxy(reqwest::Method::GET, &ads, "/v2/profiles")
        .header("x-lwa-broker-profile-id", "3510842657320002")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.last_request("advertising-api-eu.amazon.com").await;
    assert_eq!(seen.headers["amazon-advertising-api-scope"], "3510842657320002");
    assert_nothing_of_the_tenant(&seen.headers, &app.key);
    // A profile that is not the connection's never reaches Amazon.
    for (profile, status) in [("999", 403), ("12ab", 400), ("1\u{7f}", 400)] {
        let r = app
            .proxy(reqwest::Method::GET, &ads, "/v2/profiles")
            .header("amazon-advertising-api-scope", profile)
            .send()
            .await;
        let Ok(r) = r else { continue }; // reqwest refuses some header values itself
        assert_eq!(r.status(), status, "profile {profile:?}");
    }
    assert_eq!(app.fake.control().requests(None).await.len(), before + 1);

    // AMC: marketplace and advertiser ids from the caller, checked; no Scope even if sent.
    let r = app
        .proxy(
            reqwest::Method::POST,
            &ads,
            &format!("/amc/reporting/{}/workflowExecutions", defaults::AMC_INSTANCE),
        )
        .header("amazon-advertising-api-marketplaceid", "ATVPDKIKX0DER")
        .header("amazon-advertising-api-advertiserid", defaults::AMC_ADVERTISER_ID)
        .header("amazon-advertising-api-scope", "3510842657320001")
        .header("content-type", "application/json")
        .body(r#"{"workflow":{"sqlQuery":"SELECT campaign FROM sponsored_ads_traffic"},"timeWindowType":"MOST_RECENT_WEEK"}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(ctype, "application/vnd.amcworkflowexecutions.v1+json");
    assert_eq!(body["status"], "PENDING");
    let seen = app.last_request(ADS_NA).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.headers["amazon-advertising-api-marketplaceid"],
        "ATVPDKIKX0DER"
    );
    assert_eq!(
        seen.headers["amazon-advertising-api-advertiserid"],
        defaults::AMC_ADVERTISER_ID
    );
    assert_eq!(
        seen.headers["amazon-advertising-api-clientid"],
        defaults::ADS_CLIENT_ID
    );
    assert_eq!(seen.headers["authorization"], format!("Bearer {ads_token}"));
    assert!(!seen.headers.contains_key("amazon-advertising-api-scope"));
    assert!(seen.body.contains("sponsored_ads_traffic"));
    let r = app
        .proxy(
            reqwest::Method::POST,
            &ads,
            &format!("/amc/reporting/{}/workflowExecutions", defaults::AMC_INSTANCE),
        )
        .header("amazon-advertising-api-advertiserid", "ENTITY<script>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_calls_use_one_rdt_and_ordinary_calls_none() {
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();

    // getOrder without data elements is an ordinary call: no RDT.
    let r = app
        .proxy(reqwest::Method::GET, id, &format!("/orders/v0/orders/{ORDER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-lwa-broker-token"], "access-token");
    assert_eq!(app.rdts_minted_at_fake().await, 0);

    // getOrderAddress is restricted: one RDT (generic path), reused for other orders.
    let access = app.current_token(id).await;
    for order in [ORDER, "902-1845936-5435065", ORDER] {
        let r = app
            .proxy(
                reqwest::Method::GET,
                id,
                &format!("/orders/v0/orders/{order}/address"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-lwa-broker-token"], "restricted-data-token");
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["payload"]["AmazonOrderId"], order, "{body}");
        let seen = app.last_request(NA).await;
        assert!(seen.headers["x-amz-access-token"].starts_with("Atz.sprdt|"));
        assert_ne!(seen.headers["x-amz-access-token"], access);
    }
    assert_eq!(app.rdts_minted_at_fake().await, 1);

    // Amazon refuses the RDT and the access token it was minted with: a new RDT is asked for,
    // the Tokens API refuses the access token, that is refreshed once, and the call succeeds.
    let rdt_used = app.last_request(NA).await.headers["x-amz-access-token"].clone();
    for token in [rdt_used, access.clone()] {
        app.fake
            .control()
            .revoke(RevokeSpec {
                access_token: Some(token),
                ..RevokeSpec::default()
            })
            .await;
    }
    let refreshes = app.fake.control().counters().await.lwa_calls("refresh_token");
    let r = app
        .proxy(
            reqwest::Method::GET,
            id,
            &format!("/orders/v0/orders/{ORDER}/address"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-lwa-broker-refreshed"], "true");
    assert_eq!(
        app.fake.control().counters().await.lwa_calls("refresh_token"),
        refreshes + 1
    );
    assert_eq!(app.rdts_minted_at_fake().await, 2);
    let rdt_request = app
        .fake
        .control()
        .requests(Some(NA))
        .await
        .into_iter()
        .find(|r| r.path == "/tokens/2021-03-01/restrictedDataToken")
        .unwrap();
    let asked: Value = serde_json::from_str(&rdt_request.body).unwrap();
    assert_eq!(
        asked["restrictedResources"],
        json!([{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}])
    );

    // getOrder with data elements asked for: an RDT with them, and the PII comes back.
    let r = app
        .proxy(reqwest::Method::GET, id, &format!("/orders/v0/orders/{ORDER}"))
        .header("x-lwa-broker-data-elements", "buyerInfo, shippingAddress")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-lwa-broker-token"], "restricted-data-token");
    let body: Value = r.json().await.unwrap();
    assert!(body["payload"].get("ShippingAddress").is_some(), "{body}");
    assert!(body["payload"].get("BuyerInfo").is_some(), "{body}");
    assert_eq!(app.rdts_minted_at_fake().await, 3);
    let r = app
        .proxy(reqwest::Method::GET, id, &format!("/orders/v0/orders/{ORDER}"))
        .header("x-lwa-broker-data-elements", "everything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The RDT lives an hour less the margin: later, a new one.
    app.advance(3_600.0).await;
    let r = app
        .proxy(
            reqwest::Method::GET,
            id,
            &format!("/orders/v0/orders/{ORDER}/address"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.rdts_minted_at_fake().await, 4);

    // Each restricted call read personal data on the tenant's behalf: the audit trail has them.
    let page: Value = app
        .get_auth("/v1/audit?kind=restricted_data_token")
        .await
        .json()
        .await
        .unwrap();
    let proxied: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["via"] == "proxy")
        .collect();
    assert_eq!(
        proxied.iter().map(|e| e["count"].as_i64().unwrap()).sum::<i64>(),
        6,
        "{page}"
    );
    assert!(
        proxied
            .iter()
            .any(|e| e["detail"] == "GET /orders/v0/orders/{orderId} [buyerInfo,shippingAddress]"),
        "{page}"
    );

    // The operator's metrics: refused without the admin token, counted with it.
    let metrics_url = format!("{}/admin/api/proxy/metrics", app.url);
    let r = app.http.get(&metrics_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let admin = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap()
        .to_string();
    let snapshot: Value = app
        .http
        .get(&metrics_url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["rdts_minted"], 4, "{snapshot}");
    let address = snapshot["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation"] == "getOrderAddress")
        .unwrap()
        .clone();
    assert_eq!(address["api"], "sp-api");
    assert_eq!(address["statuses"]["200"], 5, "{snapshot}");
    assert_eq!(address["statuses"]["403"], 1, "{snapshot}");
    assert!(snapshot["added_latency"]["count"].as_u64().unwrap() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refreshed_once_and_a_dead_grant_is_needs_reauth() {
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap().to_owned();
    // Room for 20 callers and their retries (the limiter's test is elsewhere).
    app.fake
        .control()
        .set_rate("getMarketplaceParticipations", 100.0, 100)
        .await;
    let first = app.current_token(&id).await;
    let refreshes = app.fake.control().counters().await.lwa_calls("refresh_token");
    app.fake
        .control()
        .revoke(RevokeSpec {
            access_token: Some(first.clone()),
            ..RevokeSpec::default()
        })
        .await;

    // 20 concurrent callers find the token refused: one refresh, each retried once.
    let mut calls = Vec::new();
    for _ in 0..20 {
        let request = app.proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations");
        calls.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut refreshed = 0;
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status(), 200);
        if r.headers()["x-lwa-broker-refreshed"] == "true" {
            refreshed += 1;
        }
    }
    assert!(refreshed >= 1);
    let counters = app.fake.control().counters().await;
    assert_eq!(counters.lwa_calls("refresh_token"), refreshes + 1);
    assert_ne!(app.current_token(&id).await, first);
    let forbidden = counters
        .api
        .iter()
        .filter(|c| c.status == 403)
        .map(|c| c.count)
        .sum::<u64>();
    assert!((1..=20).contains(&forbidden), "{forbidden} refusals");

    // Refused again at once (as a wrong path or a missing role may read): no second refresh
    // within a minute, Amazon's answer comes back.
    let second = app.current_token(&id).await;
    app.fake
        .control()
        .revoke(RevokeSpec {
            access_token: Some(second.clone()),
            ..RevokeSpec::default()
        })
        .await;
    let r = app
        .proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-lwa-broker-refreshed"], "false");
    assert_eq!(
        app.fake.control().counters().await.lwa_calls("refresh_token"),
        refreshes + 1
    );
    // A minute later the refusal earns a refresh again.
    app.advance(61.0).await;
    let r = app
        .proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.fake.control().counters().await.lwa_calls("refresh_token"),
        refreshes + 2
    );
    app.advance(61.0).await;

    // The seller revokes the app: the refresh gets invalid_grant; a clear error, needs_reauth,
    // and no loop.
    app.fake
        .control()
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: Some(defaults::SELLER_NA.into()),
            ..RevokeSpec::default()
        })
        .await;
    let before = app.fake.control().counters().await;
    let r = app
        .proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "needs_reauth");
    let after = app.fake.control().counters().await;
    assert_eq!(
        after.lwa_calls("refresh_token"),
        before.lwa_calls("refresh_token") + 1
    );
    assert_eq!(after.api_total(), before.api_total() + 1);
    let r = app
        .http
        .get(format!("{}/v1/connections/{id}", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "needs_reauth");
    let r = app
        .proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(app.fake.control().counters().await.api_total(), after.api_total());
}

/// 50 concurrent callers on an operation the fake throttles at 2/s, burst 5.
async fn throttled_run(limiter: bool) -> (usize, u64, Duration) {
    let app = spawn_with(|s| {
        s.proxy.retry_budget = Duration::from_secs(30);
        s.proxy.limiter = limiter;
    })
    .await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap().to_owned();
    app.fake
        .control()
        .set_rate("getMarketplaceParticipations", 2.0, 5)
        .await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for _ in 0..50 {
        let request = app.proxy(reqwest::Method::GET, &id, "/sellers/v1/marketplaceParticipations");
        calls.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let elapsed = started.elapsed();
    let throttled = app.fake.control().counters().await.api_calls_with_status(
        NA,
        "/sellers/v1/marketplaceParticipations",
        429,
    );
    (ok, throttled, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_spaces_calls_so_amazon_throttles_far_less() {
    let (with, without) = tokio::join!(throttled_run(true), throttled_run(false));
    let (ok, throttled, elapsed) = with;
    assert_eq!(
        ok, 50,
        "every caller succeeds within its 30 s budget with the limiter"
    );
    assert!(elapsed < Duration::from_secs(31), "{elapsed:?}");
    let (_, throttled_without, _) = without;
    assert!(
        throttled_without >= 5,
        "without the limiter the fake throttled only {throttled_without}"
    );
    assert!(
        throttled_without >= 5 * throttled,
        "429s: {throttled} with the limiter, {throttled_without} without"
    );
    // Nothing loops: no more than one call per 100 ms per caller without the limiter.
    assert!(throttled_without < 50 * 300, "{throttled_without}");
}

/// Sends one raw request line (reqwest would normalize the path).
async fn raw_request(app: &TestApp, target: &str, extra: &str) -> u16 {
    let addr = app.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
        app.key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_paths_are_refused_and_reach_no_host() {
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();
    let base = format!("/v1/connections/{id}/proxy");
    app.fake.control().clear_requests().await;
    for path in [
        "/sellers/../../evil",
        "/sellers/v1/%2e%2e/%2E%2E/evil",
        "/sellers/.%2e/x",
        "//evil.com/sellers/v1/account",
        "/http://evil.com/sellers",
        "/https:%2f%2fevil.com/x",
        "/sellers%2fv1%2faccount",
        "/sellers%5cv1",
        "/sellers/v1/account%0d%0aHost:%20evil.com",
        "/sellers/v1/account?x=%0d%0aSet-Cookie:%20a",
        "/sellers/v1/account%00",
        "/",
        "",
    ] {
        let status = raw_request(&app, &format!("{base}{path}"), "").await;
        assert!(
            status == 400 || status == 404,
            "{path:?} answered {status}, not a refusal"
        );
    }
    // Header injection through the broker's own headers.
    let status = raw_request(
        &app,
        &format!("{base}/orders/v0/orders/{ORDER}"),
        "x-lwa-broker-data-elements: buyerInfo%0d%0aHost: evil\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let status = raw_request(
        &app,
        &format!("{base}/orders/v0/orders/{ORDER}"),
        "x-lwa-broker-rdt: sometimes\r\n",
    )
    .await;
    assert_eq!(status, 400);
    // An absolute-form request target is routed by its path only: still the Amazon host.
    let status = raw_request(&app, &format!("http://evil.com{base}/sellers/v1/account"), "").await;
    assert_eq!(status, 200);
    let seen = app.fake.control().requests(None).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].host.as_str(), seen[0].path.as_str()),
        (NA, "/sellers/v1/account")
    );
    let status = raw_request(&app, &format!("{base}/sellers/v1/account"), "").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_tokens_work_only_on_this_broker_and_never_show_an_amazon_token() {
    let app = spawn().await;
    let (conn, handle) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();
    let proxy_key = app.proxy_only_key().await;
    let (key_id, key_secret) = lwa_server::auth::split_key(&proxy_key).unwrap();
    let grant = |app: &TestApp| {
        app.http.post(format!("{}/auth/o2/token", app.url)).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", handle.as_str()),
            ("client_id", key_id),
            ("client_secret", key_secret),
        ])
    };
    let r = grant(&app).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let stand_in = body["access_token"].as_str().unwrap().to_owned();
    assert!(stand_in.starts_with("lwas_"), "{stand_in}");
    assert!(body["expires_in"].as_i64().unwrap() > 3000);

    // Amazon's own paths at the broker's root; the stand-in names the connection.
    let r = app
        .http
        .get(format!("{}/sellers/v1/marketplaceParticipations", app.url))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.last_request(NA).await;
    assert_eq!(seen.headers["x-amz-access-token"], app.current_token(id).await);
    // The SDK's own RDT request gets a stand-in RDT, which the proxy swaps for a real one. The
    // marketplace ids python-amazon-sp-api adds to every POST body are ignored, as Amazon does.
    let r = app
        .http
        .post(format!("{}/tokens/2021-03-01/restrictedDataToken", app.url))
        .header("x-amz-access-token", &stand_in)
        .json(&json!({
            "restrictedResources": [{"method": "GET", "path": format!("/orders/v0/orders/{ORDER}/address")}],
            "marketplaceIds": ["ATVPDKIKX0DER"],
            "MarketplaceIds": ["ATVPDKIKX0DER"],
        }))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("Atz.sprdt|"), "a real RDT left the broker: {text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let stand_in_rdt = answer["restrictedDataToken"].as_str().unwrap().to_owned();
    assert!(stand_in_rdt.starts_with("lwas_"));
    assert!(answer["expiresIn"].as_i64().unwrap() > 3000);
    let r = app
        .http
        .get(format!("{}/orders/v0/orders/{ORDER}/address", app.url))
        .header("x-amz-access-token", &stand_in_rdt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.last_request(NA).await.headers["x-amz-access-token"].starts_with("Atz.sprdt|"));
    // The stand-in RDT covers only what it was made for.
    let r = app
        .http
        .get(format!("{}/sellers/v1/account", app.url))
        .header("x-amz-access-token", &stand_in_rdt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.json::<Value>().await.unwrap()["errors"][0]["code"].is_string());
    assert_eq!(app.rdts_minted_at_fake().await, 1);
    // The proxy-only key on /v1 cannot read a real token either.
    let r = app
        .http
        .post(format!("{}/v1/connections/{id}/access-token", app.url))
        .bearer_auth(&proxy_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A proxy-only key through /v1's proxy gets a stand-in RDT too.
    let r = app
        .http
        .post(format!("{}/v1/connections/{id}/proxy/tokens/2021-03-01/restrictedDataToken", app.url))
        .bearer_auth(&proxy_key)
        .json(&json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.unwrap()["restrictedDataToken"]
            .as_str()
            .unwrap()
            .starts_with("lwas_")
    );

    // However the Tokens API's path is spelled, a proxy-only caller never gets a real RDT; and
    // a stand-in RDT cannot mint RDTs.
    for (path, status) in [
        ("/tokens/2021-03-01/restrictedDataToken/", 200),
        ("/tokens/2021-03-01/restrictedDataToke%6E", 200),
        ("/TOKENS/2021-03-01/restrictedDataToken", 200),
        ("/tokens/2021-03-01/somethingElse", 403),
    ] {
        let r = app
            .http
            .post(format!("{}/v1/connections/{id}/proxy{path}", app.url))
            .bearer_auth(&proxy_key)
            .json(&json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("Atz.sprdt|"), "{path}: {text}");
    }
    let r = app
        .http
        .post(format!("{}/tokens/2021-03-01/restrictedDataToken", app.url))
        .header("x-amz-access-token", &stand_in_rdt)
        .json(&json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}", "dataElements": ["buyerTaxInformation"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains("lwas_"));

    // Useless at Amazon itself.
    let r = app
        .http
        .get(app.fake.url(NA, "/sellers/v1/marketplaceParticipations"))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Useless at another broker (another master key).
    let other = spawn().await;
    let r = other
        .http
        .get(format!("{}/sellers/v1/marketplaceParticipations", other.url))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(other.fake.control().requests(None).await.len(), 0);
    // Without a stand-in, the root is still 404.
    let r = app
        .http
        .get(format!("{}/sellers/v1/marketplaceParticipations", app.url))
        .header("x-amz-access-token", "Atza|whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A tampered stand-in is refused.
    let mut tampered = stand_in.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = app
        .http
        .get(format!("{}/sellers/v1/account", app.url))
        .header("x-amz-access-token", &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // On /v1, a stand-in for this connection works and names no other.
    let r = app
        .http
        .get(format!(
            "{}/v1/connections/{id}/proxy/sellers/v1/account",
            app.url
        ))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(format!(
            "{}/v1/connections/conn_other/proxy/sellers/v1/account",
            app.url
        ))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // It expires with the Amazon token it stands for.
    app.advance(3_601.0).await;
    let r = app
        .http
        .get(format!("{}/sellers/v1/account", app.url))
        .header("x-amz-access-token", &stand_in)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("expired"), "{text}");
    // A new one works; revoking the key stops it at once.
    let fresh = grant(&app).send().await.unwrap().json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .http
        .get(format!("{}/sellers/v1/account", app.url))
        .header("x-amz-access-token", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    lwa_server::admin::revoke_key(&app.state, key_id).await.unwrap();
    let r = app
        .http
        .get(format!("{}/sellers/v1/account", app.url))
        .header("x-amz-access-token", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_proxy_is_never_a_500() {
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            app.http.get(format!(
                "{}/v1/connections/{id}/proxy/sellers/v1/account",
                app.url
            )),
            401,
        ),
        (
            app.http
                .get(format!(
                    "{}/v1/connections/{id}/proxy/sellers/v1/account",
                    app.url
                ))
                .bearer_auth("lwak_nope_nope"),
            401,
        ),
        (
            app.proxy(reqwest::Method::GET, "conn_unknown", "/sellers/v1/account"),
            404,
        ),
        (
            app.proxy(
                reqwest::Method::from_bytes(b"TRACE").unwrap(),
                id,
                "/sellers/v1/account",
            ),
            405,
        ),
        (app.proxy(reqwest::Method::GET, id, "/no/such/operation"), 404),
        (
            app.http
                .get(format!(
                    "{}/v1/connections/{id}/proxy/sellers/v1/account",
                    app.url
                ))
                .header("x-amz-access-token", "lwas_garbage"),
            401,
        ),
    ];
    for (request, status) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{}", r.text().await.unwrap());
    }
    // A body over the proxy's limit is refused before anything is sent.
    let small = spawn_with(|s| s.proxy.body_limit = 1_000).await;
    let (conn, _) = small.onboard_sp("na", None).await;
    let small_id = conn["id"].as_str().unwrap();
    small.fake.control().clear_requests().await;
    let r = small
        .proxy(reqwest::Method::POST, small_id, "/sellers/v1/account")
        .body(vec![b'x'; 5_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(small.fake.control().requests(None).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_calls_scoped_to_a_profile_reach_its_region() {
    let app = spawn().await;
    let ads = app.onboard_ads().await;
    for (profile, host) in [
        (defaults::PROFILE_NA, ADS_NA),
        (defaults::PROFILE_EU, "advertising-api-eu.amazon.com"),
        (defaults::PROFILE_FE, "advertising-api-fe.amazon.com"),
    ] {
        let r = app
            .proxy(reqwest::Method::POST, &ads, "/sp/campaigns/list")
            .header("amazon-advertising-api-scope", profile.to_string())
            .header("content-type", "application/vnd.spCampaign.v3+json")
            .body(r#"{"maxResults":10}"#)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalResults"], 2, "{body}");
        let seen = app.last_request(host).await;
        assert_eq!(seen.path, "/sp/campaigns/list");
        assert_eq!(seen.headers["amazon-advertising-api-scope"], profile.to_string());
        assert_eq!(seen.headers["content-type"], "application/vnd.spCampaign.v3+json");
        assert_eq!(seen.body, r#"{"maxResults":10}"#);
    }
    // Without a profile the call goes as asked, and Amazon's answer comes back unchanged.
    let r = app
        .proxy(reqwest::Method::POST, &ads, "/sp/campaigns/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("x-lwa-broker-token"));
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "BAD_REQUEST");
}

/// The process's resident memory (kB): now and at its peak.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_download_streams_through_without_growing_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    const PATH: &str = "/reports/2021-06-30/documents/BIG1/content";
    let app = spawn().await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();
    app.fake.control().add_payload(NA, PATH, SIZE).await;
    // Warm every path once (allocator pools, connections), then measure.
    let r = app
        .proxy(reqwest::Method::GET, id, "/sellers/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (before, _) = memory_kb();
    let mut r = app.proxy(reqwest::Method::GET, id, PATH).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], SIZE.to_string());
    let mut received = 0u64;
    let mut mismatches = 0u64;
    let mut peak = before;
    while let Some(chunk) = r.chunk().await.unwrap() {
        for (i, byte) in chunk.iter().enumerate() {
            if *byte != fake_amazon::payload::byte_at(received + i as u64) {
                mismatches += 1;
            }
        }
        received += chunk.len() as u64;
        peak = peak.max(memory_kb().0);
    }
    assert_eq!(received, SIZE);
    assert_eq!(mismatches, 0);
    let (_, high_water) = memory_kb();
    let growth_mb = (peak.max(high_water).saturating_sub(before)) as f64 / 1024.0;
    println!("resident memory grew by {growth_mb:.1} MB over a 100 MB proxied download");
    assert!(growth_mb < 20.0, "resident memory grew by {growth_mb:.1} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_amazon_times_out_and_a_large_upload_streams_through() {
    let app = spawn_with(|s| s.proxy.timeout = Duration::from_millis(500)).await;
    let (conn, _) = app.onboard_sp("na", None).await;
    let id = conn["id"].as_str().unwrap();
    let fault = app
        .fake
        .control()
        .add_fault(fake_amazon::FaultSpec {
            target: fake_amazon::FaultTarget::Api,
            path_prefix: Some("/sellers/v1/account".into()),
            latency_ms: Some(2_000),
            ..fake_amazon::FaultSpec::default()
        })
        .await;
    let started = std::time::Instant::now();
    let r = app
        .proxy(reqwest::Method::GET, id, "/sellers/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "amazon_timeout"
    );
    assert!(started.elapsed() < Duration::from_millis(1_500));
    app.fake.control().remove_fault(fault).await;

    // A body larger than what the proxy keeps for retries is streamed on, not refused: here
    // the fake refuses it (it takes at most 1 MiB), and that answer comes back unchanged.
    let r = app
        .proxy(reqwest::Method::POST, id, "/sellers/v1/account")
        .header("content-type", "application/octet-stream")
        .body(vec![b'x'; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.headers().contains_key("x-lwa-broker-token"));
}

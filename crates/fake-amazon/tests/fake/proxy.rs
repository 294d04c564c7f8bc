//! What passthrough-proxy tests rely on: streamed payloads, rate headers on 200s, and requests
//! recorded with every header.

use fake_amazon::{PayloadSpec, Region, defaults, payload};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;

const BIG: &str = "/reports/2021-06-30/documents/BIG1/content";
const MB_100: u64 = 100 * 1024 * 1024;

/// SHA-256 of the first `len` bytes of the payload pattern.
fn pattern_sha256(len: u64) -> Vec<u8> {
    let block: Vec<u8> = (0..251 * 1024).map(payload::byte_at).collect();
    let mut hasher = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(block.len(), |l| l.min(block.len()));
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    hasher.finalize().to_vec()
}

/// Reads a response chunk by chunk; returns the length and the SHA-256 of what came.
async fn stream_digest(mut resp: reqwest::Response) -> (u64, Vec<u8>, usize) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut chunks = 0usize;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        total += chunk.len() as u64;
        chunks += 1;
        hasher.update(&chunk);
    }
    (total, hasher.finalize().to_vec(), chunks)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_payload_streams_on_sp_api() {
    let t = spawn().await;
    t.control
        .add_payload_spec(PayloadSpec {
            host: SP_NA.to_owned(),
            path: BIG.to_owned(),
            bytes: MB_100,
            content_type: Some("text/tab-separated-values".to_owned()),
        })
        .await;
    assert_eq!(t.control.payloads().await.len(), 1);
    let (access, _) = t.seller_tokens(Region::Na).await;
    let resp = t.sp_get(SP_NA, BIG, Some(&access)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], MB_100.to_string().as_str());
    assert_eq!(resp.content_length(), Some(MB_100));
    assert_eq!(resp.headers()["content-type"], "text/tab-separated-values");
    assert_eq!(resp.headers()["x-amzn-RequestId"].len(), 36);
    assert!(resp.headers().contains_key("x-amzn-RateLimit-Limit"));
    let (len, digest, chunks) = stream_digest(resp).await;
    assert_eq!(len, MB_100);
    assert!(chunks >= 100, "{chunks} chunks");
    assert_eq!(digest, pattern_sha256(MB_100));

    let c = t.control.counters().await;
    assert_eq!(c.api_calls_with_status(SP_NA, BIG, 200), 1);
    let recorded = t.control.requests(Some(SP_NA)).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].path, BIG);
    assert_eq!(recorded[0].headers["x-amz-access-token"], access);
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_are_never_held_in_memory() {
    // A 1 TiB payload: only what is read is ever produced.
    let t = spawn().await;
    let huge = 1u64 << 40;
    t.control.add_payload(SP_NA, BIG, huge).await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let mut resp = t.sp_get(SP_NA, BIG, Some(&access)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(huge));
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let mut read_bytes = 0u64;
    let mut first = Vec::new();
    while read_bytes < 4 * 1024 * 1024 {
        let chunk = resp.chunk().await.unwrap().expect("more data");
        if first.len() < 600 {
            first.extend_from_slice(&chunk[..chunk.len().min(600)]);
        }
        read_bytes += chunk.len() as u64;
    }
    drop(resp);
    let want: Vec<u8> = (0..first.len() as u64).map(payload::byte_at).collect();
    assert_eq!(first, want);
    assert_eq!(payload::byte_at(250), 250);
    assert_eq!(payload::byte_at(251), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_need_a_valid_seller_token() {
    let t = spawn().await;
    t.control.add_payload(SP_NA, BIG, 1000).await;
    let assert_403 = |resp: reqwest::Response, details: Option<&'static str>| async move {
        let (status, body) = read(resp).await;
        assert_eq!(status, 403, "{body}");
        let error = &body["errors"][0];
        assert_eq!(error["code"], "Unauthorized", "{body}");
        match details {
            Some(d) => assert_eq!(error["details"], d, "{body}"),
            None => assert!(error.get("details").is_none(), "{body}"),
        }
    };
    assert_403(
        t.sp_get(SP_NA, BIG, None).await,
        Some("Access token is missing in the request header."),
    )
    .await;
    assert_403(
        t.sp_get(SP_NA, BIG, Some("Atza|not-a-token")).await,
        Some("The access token you provided is revoked, malformed or invalid."),
    )
    .await;
    // Another region's seller, an Ads token, a grantless token: denied without details.
    let (eu, _) = t.seller_tokens(Region::Eu).await;
    assert_403(t.sp_get(SP_NA, BIG, Some(&eu)).await, None).await;
    let (ads, _) = t.ads_tokens().await;
    assert_403(t.sp_get(SP_NA, BIG, Some(&ads)).await, None).await;
    let grantless = t.grantless("sellingpartnerapi::notifications").await;
    assert_403(t.sp_get(SP_NA, BIG, Some(&grantless)).await, None).await;
    // Expired.
    let (na, _) = t.seller_tokens(Region::Na).await;
    t.control.advance_clock(3601.0).await;
    assert_403(
        t.sp_get(SP_NA, BIG, Some(&na)).await,
        Some("The access token you provided has expired."),
    )
    .await;

    let c = t.control.counters().await;
    assert_eq!(c.api_calls_with_status(SP_NA, BIG, 403), 6);

    // Other methods, other paths and other hosts are not the payload.
    let (na, _) = t.seller_tokens(Region::Na).await;
    let resp = t.sp_post(SP_NA, BIG, &na, &json!({})).await;
    assert_eq!(resp.status(), 404);
    let resp = t.sp_get(SP_EU, BIG, Some(&eu)).await;
    assert_eq!(resp.status(), 404);
    let resp = t.sp_get(SP_NA, &format!("{BIG}x"), Some(&na)).await;
    assert_eq!(resp.status(), 404);
    // A query does not matter.
    let resp = t.sp_get(SP_NA, &format!("{BIG}?a=1"), Some(&na)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);

    // Throttled like any operation.
    t.control.set_rate("downloadPayload", 0.5, 1).await;
    assert_eq!(t.sp_get(SP_NA, BIG, Some(&na)).await.status(), 200);
    assert_eq!(t.sp_get(SP_NA, BIG, Some(&na)).await.status(), 429);

    // Cleared: 404 again.
    t.control.clear_payloads().await;
    assert!(t.control.payloads().await.is_empty());
    assert_eq!(t.sp_get(SP_NA, BIG, Some(&na)).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_on_ads_hosts_take_the_ads_auth() {
    let t = spawn().await;
    let path = "/reports/v3/downloads/report-1.json.gz";
    t.control.add_payload(ADS_NA, path, 200_000).await;
    let (access, _) = t.ads_tokens().await;
    let resp = t.ads_get(ADS_NA, path, &access, defaults::ADS_CLIENT_ID).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(200_000));
    let (len, digest, _) = stream_digest(resp).await;
    assert_eq!(len, 200_000);
    assert_eq!(digest, pattern_sha256(200_000));

    let resp = t.ads_get(ADS_NA, path, &access, defaults::SP_API_CLIENT_ID).await;
    assert_eq!(resp.status(), 401);
    let (sp, _) = t.seller_tokens(Region::Na).await;
    let (status, body) = read(t.ads_get(ADS_NA, path, &sp, defaults::ADS_CLIENT_ID).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHORIZED");
    assert_eq!(t.control.counters().await.api_calls(ADS_NA, path), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_registration_is_checked() {
    let t = spawn().await;
    for body in [
        json!({"host": "api.amazon.com", "path": "/x", "bytes": 1}),
        json!({"host": "sandbox.sellingpartnerapi-na.amazon.com", "path": "/x", "bytes": 1}),
        json!({"host": "nowhere.example", "path": "/x", "bytes": 1}),
        json!({"host": SP_NA, "path": "x", "bytes": 1}),
        json!({"host": SP_NA, "path": "/x?a=1", "bytes": 1}),
        json!({"host": SP_NA, "path": "/x", "bytes": -1}),
        json!({"host": SP_NA, "path": "/x"}),
        json!({"host": SP_NA, "path": "/x", "bytes": 1, "content_type": "a\nb"}),
    ] {
        let err = t
            .control
            .call(Method::POST, "payloads", Some(&body))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, fake_amazon::ControlError::Refused { status: 400, .. }),
            "{body}: {err}"
        );
    }
    // Host case does not matter; the same host and path replace.
    let ok = t
        .control
        .call(
            Method::POST,
            "payloads",
            Some(&json!({"host": "SellingPartnerAPI-NA.amazon.com", "path": "/x", "bytes": 5})),
        )
        .await
        .unwrap();
    assert_eq!(ok, json!({}));
    t.control.add_payload(SP_NA, "/x", 7).await;
    let list = t.control.payloads().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].host, SP_NA);
    assert_eq!(list[0].bytes, 7);
    assert_eq!(
        t.control.call(Method::DELETE, "payloads", None).await.unwrap(),
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_api_successes_carry_the_rate_header() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let resp = t
        .sp_get(SP_NA, "/sellers/v1/marketplaceParticipations", Some(&access))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "0.016");
    let resp = t
        .sp_get(SP_NA, "/orders/v0/orders/123-1234567-1234567", Some(&access))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amzn-RateLimit-Limit"], "0.5");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_header_is_recorded() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    t.control.clear_requests().await;
    let resp = t
        .http
        .get(t.url(SP_NA, "/sellers/v1/marketplaceParticipations"))
        .header("x-amz-access-token", &access)
        .header("User-Agent", "proxy-test/1.0 (Language=Rust)")
        .header("X-Custom-Thing", "a value, with spaces")
        .header("Accept", "application/json")
        .header("x-amz-date", "20260101T000000Z")
        .header("x-repeated", "one")
        .header("x-repeated", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let recorded = t.control.requests(Some(SP_NA)).await;
    assert_eq!(recorded.len(), 1);
    let headers = &recorded[0].headers;
    assert_eq!(headers["x-amz-access-token"], access);
    assert_eq!(headers["user-agent"], "proxy-test/1.0 (Language=Rust)");
    assert_eq!(headers["x-custom-thing"], "a value, with spaces");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["x-amz-date"], "20260101T000000Z");
    assert_eq!(headers["x-repeated"], "one, two");
    assert!(headers["host"].starts_with("127.0.0.1:"), "{headers:?}");
    let names: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "accept",
            "host",
            "user-agent",
            "x-amz-access-token",
            "x-amz-date",
            "x-custom-thing",
            "x-repeated"
        ],
        "{headers:?}"
    );
}

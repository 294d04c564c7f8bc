//! Injected latency, errors and dropped connections.

use std::time::{Duration, Instant};

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, Quirks, Region, defaults};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connection_is_a_connection_error() {
    let t = spawn().await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(FaultScript {
                count: 1,
                drop: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let [id, secret] = sp_creds();
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "sellingpartnerapi::notifications"),
        id,
        secret,
    ];
    let err = t
        .http
        .post(t.url(NA_LWA, "/auth/o2/token"))
        .form(&form)
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    // The next call is served; the drop counts as a fault.
    assert_eq!(t.token(NA_LWA, &form).await.0, 200);
    let counters = t.control.counters().await;
    assert_eq!(counters.lwa_outcomes("client_credentials", "fault"), 1);
    assert_eq!(counters.lwa_outcomes("client_credentials", "ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_drop_fault_closes_the_connection() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Api,
            path_prefix: Some("/sellers/".to_owned()),
            drop_share: 1.0,
            ..Default::default()
        })
        .await;
    let err = t
        .http
        .get(t.url(SP_NA, "/sellers/v1/marketplaceParticipations"))
        .header("x-amz-access-token", &access)
        .send()
        .await
        .expect_err("dropped");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let counters = t.control.counters().await;
    let dropped = counters
        .api
        .iter()
        .find(|c| c.status == 0)
        .expect("a dropped call is counted");
    assert!(dropped.fault);
}

#[tokio::test(flavor = "multi_thread")]
async fn scripted_failures_then_success() {
    let t = spawn().await;
    let (_, refresh) = t.seller_tokens(Region::Na).await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(FaultScript {
                count: 2,
                status: Some(500),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    for _ in 0..2 {
        let (status, body) = t.refresh_sp(&refresh).await;
        assert_lwa_error(status, &body, 500, "server_error");
    }
    assert_eq!(t.refresh_sp(&refresh).await.0, 200);
    let counters = t.control.counters().await;
    assert_eq!(counters.lwa_outcomes("refresh_token", "fault"), 2);
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh), 3);
    let faults = t.control.faults().await;
    assert_eq!(faults[0].fired, 2);
    assert_eq!(faults[0].spec.script.as_ref().unwrap().count, 0);

    // 503 scripts answer temporarily_unavailable; the ServerError spelling is a quirk.
    t.control
        .set_quirks(Quirks {
            server_error_code: "ServerError".to_owned(),
            ..Quirks::default()
        })
        .await;
    for (status, error) in [(503, "temporarily_unavailable"), (500, "ServerError")] {
        t.control
            .add_fault(FaultSpec {
                target: FaultTarget::Lwa,
                script: Some(FaultScript {
                    count: 1,
                    status: Some(status),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let (got, body) = t.refresh_sp(&refresh).await;
        assert_lwa_error(got, &body, status, error);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_fault_for_one_refresh_token_only() {
    let t = spawn().await;
    let (_, slow) = t.seller_tokens(Region::Na).await;
    let (_, fast) = t.seller_tokens(Region::Na).await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(slow.clone()),
            latency_ms: Some(400),
            ..Default::default()
        })
        .await;
    let started = Instant::now();
    assert_eq!(t.refresh_sp(&slow).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(t.refresh_sp(&fast).await.0, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // Latency alone is not a fault.
    assert_eq!(
        t.control.counters().await.lwa_outcomes("refresh_token", "fault"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_faults_by_client_and_prefix_and_removal() {
    let t = spawn().await;
    let (access, _) = t.seller_tokens(Region::Na).await;
    let id = t
        .control
        .add_fault(FaultSpec {
            target: FaultTarget::Api,
            client_id: Some(defaults::SP_API_CLIENT_ID.to_owned()),
            path_prefix: Some("/sellers/".to_owned()),
            error_500_share: 1.0,
            ..Default::default()
        })
        .await;
    let path = "/sellers/v1/marketplaceParticipations";
    let resp = t.sp_get(SP_NA, path, Some(&access)).await;
    assert_eq!(resp.status(), 500);
    let (_, body) = read(resp).await;
    assert!(body["errors"][0]["code"].is_string());
    // Another client's calls are untouched.
    let (ads, _) = t.ads_tokens().await;
    assert_eq!(
        t.ads_get(ADS_NA, "/v2/profiles", &ads, defaults::ADS_CLIENT_ID)
            .await
            .status(),
        200
    );
    t.control.remove_fault(id).await;
    assert_eq!(t.sp_get(SP_NA, path, Some(&access)).await.status(), 200);
    let counters = t.control.counters().await;
    assert_eq!(counters.api_calls_with_status(SP_NA, path, 500), 1);
    assert_eq!(counters.api_calls_with_status(SP_NA, path, 200), 1);

    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Api,
            script: Some(FaultScript {
                count: 1,
                status: Some(503),
                error: Some("ServiceUnavailable".to_owned()),
                drop: false,
            }),
            ..Default::default()
        })
        .await;
    let (status, body) = read(t.sp_get(SP_NA, path, Some(&access)).await).await;
    assert_eq!(status, 503);
    assert_eq!(body["errors"][0]["code"], "ServiceUnavailable");
    t.control.clear_faults().await;
    assert!(t.control.faults().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn lwa_429_share() {
    let t = spawn().await;
    t.control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            host: Some(EU_LWA.to_owned()),
            error_429_share: 1.0,
            ..Default::default()
        })
        .await;
    let [id, secret] = ads_creds();
    let (status, _) = t
        .token(
            EU_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 429);
    // Only the EU host is affected.
    let (status, _) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 400);
}

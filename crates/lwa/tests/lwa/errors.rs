//! Each class of LWA failure, as the caller sees it.

use std::time::Duration;

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, defaults};
use lwa::{
    AppCredentials, Endpoints, ErrorClass, LwaClient, LwaError, RefreshToken, RetryPolicy, TransientKind,
};

use crate::support::{World, fast_retries};

async fn script(world: &World, status: u16, error: Option<&str>, count: u64, drop: bool) {
    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(FaultScript {
                count,
                status: Some(status),
                error: error.map(str::to_owned),
                drop,
            }),
            ..FaultSpec::default()
        })
        .await;
}

async fn refresh_once(world: &World, client: &LwaClient) -> (Result<lwa::TokenResponse, LwaError>, String) {
    let refresh_token = world
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
        .await;
    let result = client
        .refresh(
            "api.amazon.com",
            &World::sp_app(),
            &RefreshToken::new(refresh_token.clone()),
        )
        .await;
    (result, refresh_token)
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_failures_are_retried_up_to_the_cap_and_then_reported() {
    let world = World::start().await;
    for (status, error) in [
        (500, Some("server_error")),
        (503, Some("temporarily_unavailable")),
        (429, None),
        (502, None),
    ] {
        world.fake.control().clear_faults().await;
        world.fake.control().reset_counters().await;
        script(&world, status, error, 10, false).await;
        let client = world.client.clone().with_retry(fast_retries(2));
        let (result, refresh_token) = refresh_once(&world, &client).await;
        let error = result.unwrap_err();
        assert_eq!(error.class(), ErrorClass::RetryLater, "{status}: {error:?}");
        assert!(matches!(error, LwaError::Transient { status: Some(s), .. } if s == status));
        let counters = world.fake.control().counters().await;
        assert_eq!(
            counters.lwa_calls_for_refresh_token(&refresh_token),
            3,
            "first try and two retries for {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_retries_when_the_caller_wants_none() {
    let world = World::start().await;
    script(&world, 500, Some("server_error"), 1, false).await;
    let client = world.client.clone().with_retry(RetryPolicy::NONE);
    let (result, refresh_token) = refresh_once(&world, &client).await;
    assert!(result.unwrap_err().is_retryable());
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_error_spelled_either_way_is_retryable() {
    let world = World::start().await;
    script(&world, 500, Some("ServerError"), 1, false).await;
    let client = world.client.clone().with_retry(RetryPolicy::NONE);
    let (result, _) = refresh_once(&world, &client).await;
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some("ServerError"));
    assert_eq!(error.class(), ErrorClass::RetryLater);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_is_never_retried() {
    let world = World::start().await;
    let client = world.client.clone().with_retry(fast_retries(5));
    let error = client
        .refresh(
            "api.amazon.com",
            &World::sp_app(),
            &RefreshToken::new("Atzr|not-a-token-the-fake-issued"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Reauthorize);
    assert_eq!(error.code(), Some("invalid_grant"));
    assert_eq!(world.fake.control().counters().await.lwa_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_and_timeouts_are_transient() {
    let world = World::start().await;
    script(&world, 500, None, 1, true).await;
    let client = world.client.clone().with_retry(RetryPolicy::NONE);
    let (result, _) = refresh_once(&world, &client).await;
    assert!(
        matches!(
            result,
            Err(LwaError::Transient {
                kind: TransientKind::Connection,
                ..
            })
        ),
        "{result:?}"
    );
    // And with retries the next attempt gets through.
    script(&world, 500, None, 1, true).await;
    let (result, _) = refresh_once(&world, &world.client).await;
    result.unwrap();

    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(1500),
            ..FaultSpec::default()
        })
        .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let impatient =
        LwaClient::with_http(http, Endpoints::rebased(&world.fake.base_url())).with_retry(RetryPolicy::NONE);
    let (result, _) = refresh_once(&world, &impatient).await;
    assert!(
        matches!(
            result,
            Err(LwaError::Transient {
                kind: TransientKind::Timeout,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_errors_name_the_problem() {
    let world = World::start().await;
    // An Ads app asking for a grantless token.
    let error = world
        .client
        .client_credentials(&World::ads_app(), &["sellingpartnerapi::notifications"])
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Configuration);
    assert_eq!(error.code(), Some("unauthorized_client"));
    // An unknown scope.
    let error = world
        .client
        .client_credentials(&World::sp_app(), &["sellingpartnerapi::everything"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("invalid_scope"));
    assert_eq!(error.class(), ErrorClass::Configuration);
    // A wrong secret.
    let wrong = AppCredentials::new(defaults::SP_API_CLIENT_ID, "amzn1.oa2-cs.v1.wrong");
    let error = world
        .client
        .client_credentials(&wrong, &["sellingpartnerapi::notifications"])
        .await
        .unwrap_err();
    assert!(matches!(&error, LwaError::Configuration { status: 401, code, .. } if code == "invalid_client"));
    // An unreachable host is transient.
    let nowhere = LwaClient::new(Endpoints::rebased("http://127.0.0.1:9")).with_retry(RetryPolicy::NONE);
    let error = nowhere
        .client_credentials(&World::sp_app(), &["sellingpartnerapi::notifications"])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LwaError::Transient {
                kind: TransientKind::Connection,
                ..
            }
        ),
        "{error:?}"
    );
}

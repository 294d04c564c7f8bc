//! Expiry, refresh, sharing one refresh, and isolation between accounts.

use std::time::{Duration, Instant};

use fake_amazon::{FakeConfig, FaultSpec, FaultTarget, Quirks, RevokeSpec, defaults};
use lwa::{TokenError, TokenStatus};

use crate::support::World;

#[tokio::test(flavor = "multi_thread")]
async fn cached_until_the_buffer_then_refreshed_when_the_clock_moves() {
    let world = World::start().await;
    let (manager, refresh_token) = world.sp_manager(defaults::SELLER_NA, "a").await;
    assert_eq!(manager.info().status, TokenStatus::Expired);

    let first = manager.access_token().await.unwrap();
    assert!(first.expose().starts_with("Atza|"));
    assert!(first.expose().len() > 350, "realistic length");
    assert_eq!(manager.info().status, TokenStatus::Valid);
    let left = manager.info().expires_in_seconds.unwrap();
    assert!((3595..=3600).contains(&left), "{left}");

    // 54 minutes later the token has 6 minutes left: still served from memory.
    world.advance(54.0 * 60.0).await;
    assert!(manager.access_token().await.unwrap().same_as(first.expose()));
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 1);

    // Two more minutes: inside the 5-minute buffer, so the next call refreshes.
    world.advance(120.0).await;
    assert_eq!(manager.info().status, TokenStatus::Expiring);
    let second = manager.access_token().await.unwrap();
    assert!(!second.same_as(first.expose()));
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 2);

    // Past expiry without a call in between: refreshed, never handed out expired.
    world.advance(2.0 * 3600.0).await;
    assert_eq!(manager.info().status, TokenStatus::Expired);
    assert!(manager.info().is_expired);
    let third = manager.access_token().await.unwrap();
    assert!(!third.same_as(second.expose()));
    let info = manager.info();
    assert_eq!(info.status, TokenStatus::Valid);
    assert!(info.refresh_token_age_seconds.unwrap() >= 54 * 60 + 120 + 7200 - 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_callers_share_one_refresh() {
    let world = World::start().await;
    let (manager, refresh_token) = world.sp_manager(defaults::SELLER_NA, "a").await;
    manager.access_token().await.unwrap();
    world.advance(3600.0).await;
    world.fake.control().reset_counters().await;
    // Slow the refresh down so every caller arrives while it is in flight.
    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(200),
            ..FaultSpec::default()
        })
        .await;

    let calls = (0..200).map(|_| {
        let manager = manager.clone();
        tokio::spawn(async move { manager.access_token().await })
    });
    let tokens: Vec<_> = futures::future::join_all(calls).await;
    let first = tokens[0].as_ref().unwrap().as_ref().unwrap().expose().to_owned();
    for token in &tokens {
        assert!(token.as_ref().unwrap().as_ref().unwrap().same_as(&first));
    }
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 1);
    assert_eq!(counters.lwa_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_refresh_for_one_account_does_not_slow_another() {
    let world = World::start().await;
    let (slow, slow_token) = world.sp_manager(defaults::SELLER_NA, "slow").await;
    let (fast, _) = world.sp_manager(defaults::SELLER_EU, "fast").await;
    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(slow_token),
            latency_ms: Some(2000),
            ..FaultSpec::default()
        })
        .await;

    let started = Instant::now();
    let stalled = tokio::spawn({
        let slow = slow.clone();
        async move { slow.access_token().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..20 {
        fast.force_refresh().await.unwrap();
        fast.access_token().await.unwrap();
    }
    let fast_done = started.elapsed();
    assert!(
        fast_done < Duration::from_millis(1500),
        "the other account waited: {fast_done:?}"
    );
    assert!(
        !stalled.is_finished(),
        "the stalled refresh should still be in flight"
    );
    stalled.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(2000));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_makes_one_call_and_asks_for_reauthorization() {
    let world = World::start().await;
    let (manager, refresh_token) = world.sp_manager(defaults::SELLER_NA, "a").await;
    let revoked = world
        .fake
        .control()
        .revoke(RevokeSpec {
            refresh_token: Some(refresh_token.clone()),
            ..RevokeSpec::default()
        })
        .await;
    assert!(revoked >= 1);

    let error = manager.access_token().await.unwrap_err();
    assert!(
        matches!(error, TokenError::NeedsReauthorization { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains(&refresh_token));
    assert_eq!(manager.info().status, TokenStatus::NeedsReauth);
    // Asking again does not call Amazon again.
    assert!(matches!(
        manager.access_token().await,
        Err(TokenError::NeedsReauthorization { .. })
    ));
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 1);
    assert_eq!(counters.lwa_outcomes("refresh_token", "invalid_grant"), 1);

    // A new refresh token clears the state.
    let fresh = world
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
        .await;
    manager.set_refresh_token(fresh.into()).await.unwrap();
    manager.access_token().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn scripted_server_errors_are_retried_until_success() {
    let world = World::start().await;
    let (manager, refresh_token) = world.sp_manager(defaults::SELLER_NA, "a").await;
    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(fake_amazon::FaultScript {
                count: 2,
                status: Some(500),
                ..Default::default()
            }),
            ..FaultSpec::default()
        })
        .await;
    manager.access_token().await.unwrap();
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(&refresh_token), 3);
    assert_eq!(counters.lwa_outcomes("refresh_token", "ok"), 1);
}

/// One call as an observer is told of it: grant type, LWA's error code, the error's class.
type SeenCall = (&'static str, Option<String>, Option<lwa::ErrorClass>);

/// Records what a [`lwa::CallObserver`] is told.
#[derive(Debug, Default)]
struct Seen(std::sync::Mutex<Vec<SeenCall>>);

impl lwa::CallObserver for Seen {
    fn lwa_call(&self, grant_type: &'static str, result: Result<(), &lwa::LwaError>) {
        let (code, class) = match result {
            Ok(()) => (None, None),
            Err(e) => (e.code().map(str::to_owned), Some(e.class())),
        };
        self.0.lock().unwrap().push((grant_type, code, class));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_observer_is_told_of_every_http_call_retries_included() {
    let world = World::start().await;
    let seen = std::sync::Arc::new(Seen::default());
    let client = lwa::LwaClient::new(world.endpoints())
        .with_retry(crate::support::fast_retries(3))
        .with_observer(seen.clone());
    let refresh_token = world
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
        .await;
    world
        .fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(fake_amazon::FaultScript {
                count: 2,
                status: Some(500),
                error: Some("server_error".into()),
                ..Default::default()
            }),
            ..FaultSpec::default()
        })
        .await;
    client
        .refresh(
            "api.amazon.com",
            &World::sp_app(),
            &lwa::RefreshToken::new(refresh_token.clone()),
        )
        .await
        .unwrap();
    let calls = seen.0.lock().unwrap().clone();
    let retried = (
        "refresh_token",
        Some("server_error".to_owned()),
        Some(lwa::ErrorClass::RetryLater),
    );
    assert_eq!(calls, [retried.clone(), retried, ("refresh_token", None, None)]);
    let counters = world.fake.control().counters().await;
    assert_eq!(
        counters.lwa_calls_for_refresh_token(&refresh_token),
        calls.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_refresh_token_is_reported_and_stored() {
    let world = World::with_config(FakeConfig {
        quirks: Quirks {
            rotate_refresh_tokens: true,
            expires_in_as_string: true,
            ..Quirks::default()
        },
        ..FakeConfig::default()
    })
    .await;
    let (manager, original) = world.sp_manager(defaults::SELLER_NA, "a").await;
    let outcome = manager.force_refresh().await.unwrap();
    assert!(outcome.refresh_token_changed);
    let stored = manager.refresh_token().unwrap();
    assert!(!stored.same_as(&original));
    assert!(stored.expose().starts_with("Atzr|"));
    // expires_in came as a string and was understood.
    assert!(manager.info().expires_in_seconds.unwrap() > 3500);
    world.advance(3600.0).await;
    manager.access_token().await.unwrap();
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_calls_for_refresh_token(stored.expose()), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_store_keeps_tokens_across_managers() {
    use std::sync::Arc;
    let world = World::start().await;
    let store = Arc::new(lwa::MemoryStore::new());
    let refresh_token = world
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
        .await;
    let build = || {
        lwa::TokenManager::builder(lwa::TokenManagerConfig::new(
            lwa::Api::SpApi,
            lwa::Region::Na,
            World::sp_app(),
        ))
        .client(world.client.clone())
        .clock(Arc::new(world.clock.clone()))
        .store(store.clone())
        .build()
        .unwrap()
    };
    let first = build();
    first.set_refresh_token(refresh_token.into()).await.unwrap();
    let token = first.access_token().await.unwrap();
    let second = build();
    assert!(second.access_token().await.unwrap().same_as(token.expose()));
    assert_eq!(world.fake.control().counters().await.lwa_total(), 1);
    second.clear().await.unwrap();
    assert_eq!(build().info().status, lwa::TokenStatus::NotAuthenticated);
    assert!(matches!(
        build().access_token().await,
        Err(TokenError::NotAuthenticated { .. })
    ));
}

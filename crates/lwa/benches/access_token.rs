//! A cached `TokenManager::access_token()` against the floor it is measured by: a plain
//! `RwLock<String>` read and clone, in the same run.
//!
//! `cargo bench -p lwa --bench access_token`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use lwa::{
    AccessToken, Api, AppCredentials, MemoryStore, RefreshToken, Region, StoredTokens, SystemClock,
    TokenManager, TokenManagerConfig, TokenStore,
};

/// Polls a future that must finish without waiting (the cached path never awaits).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the cached path awaited"),
    }
}

fn token_value() -> String {
    format!(
        "Atza|{}",
        "IwEBIMPSWiEPD5FLvo1UbSFhlzXtEnY7jkG9nKGeBCAAVz1mcxB4tg24h".repeat(7)
    )
}

fn cached_access_token(c: &mut Criterion) {
    let store = Arc::new(MemoryStore::new());
    store
        .save(
            "default",
            &StoredTokens {
                refresh_token: Some(RefreshToken::new("Atzr|bench")),
                access_token: Some(AccessToken::new(token_value())),
                access_token_expires_ms: Some(i64::MAX / 2),
                ..StoredTokens::default()
            },
        )
        .unwrap();
    let config = TokenManagerConfig::new(Api::SpApi, Region::Na, AppCredentials::new("client", "secret"));
    let manager = TokenManager::builder(config)
        .store(store)
        .clock(Arc::new(SystemClock))
        .build()
        .unwrap();
    let baseline = RwLock::new(token_value());

    let mut group = c.benchmark_group("cached_access_token");
    group.bench_function("rwlock_string_read_clone", |b| {
        b.iter(|| black_box(baseline.read().unwrap().clone()))
    });
    group.bench_function("token_manager_access_token", |b| {
        b.iter(|| black_box(ready(manager.access_token()).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, cached_access_token);
criterion_main!(benches);

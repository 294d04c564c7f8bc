use std::sync::Arc;

use fake_amazon::{FakeAmazon, FakeConfig, defaults};
use lwa::{
    Api, AppCredentials, Endpoints, FakeAmazonClock, LwaClient, Region, RetryPolicy, TokenManager,
    TokenManagerConfig,
};

/// A fake Amazon, a clock that follows it, and a client pointed at it.
pub struct World {
    pub fake: FakeAmazon,
    pub clock: FakeAmazonClock,
    pub client: LwaClient,
}

impl World {
    pub async fn start() -> World {
        Self::with_config(FakeConfig::default()).await
    }

    pub async fn with_config(config: FakeConfig) -> World {
        let fake = FakeAmazon::start(config).await.expect("fake starts");
        let clock = FakeAmazonClock::once(&fake.base_url()).await.expect("clock");
        let client = LwaClient::new(Endpoints::rebased(&fake.base_url())).with_retry(fast_retries(3));
        World { fake, clock, client }
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints::rebased(&self.fake.base_url())
    }

    /// Moves the fake's clock and ours.
    pub async fn advance(&self, seconds: f64) {
        self.fake.control().advance_clock(seconds).await;
        self.clock.sync().await.expect("sync");
    }

    pub fn sp_app() -> AppCredentials {
        AppCredentials::new(defaults::SP_API_CLIENT_ID, defaults::SP_API_CLIENT_SECRET)
    }

    pub fn ads_app() -> AppCredentials {
        AppCredentials::new(defaults::ADS_CLIENT_ID, defaults::ADS_CLIENT_SECRET)
    }

    pub fn manager(&self, api: Api, region: Region, app: AppCredentials, account: &str) -> TokenManager {
        let mut config = TokenManagerConfig::new(api, region, app);
        config.account = account.to_owned();
        TokenManager::builder(config)
            .client(self.client.clone())
            .clock(Arc::new(self.clock.clone()))
            .build()
            .expect("manager")
    }

    /// An SP-API manager for `seller`, holding a self-authorized refresh token; returns the
    /// refresh token too.
    pub async fn sp_manager(&self, seller: &str, account: &str) -> (TokenManager, String) {
        let refresh_token = self
            .fake
            .control()
            .self_authorize(defaults::SP_API_CLIENT_ID, seller)
            .await;
        let manager = self.manager(Api::SpApi, Region::Na, Self::sp_app(), account);
        manager
            .set_refresh_token(refresh_token.clone().into())
            .await
            .unwrap();
        (manager, refresh_token)
    }
}

pub fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(20),
    }
}

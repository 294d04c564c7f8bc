//! A strict fake of Amazon's Login with Amazon (LWA), Selling Partner API, Ads API and Amazon
//! Marketing Cloud, for tests, benchmarks and the sandbox.
//!
//! One listener serves every Amazon host: the host is the **first path segment**, so
//! `https://api.amazon.co.uk/auth/o2/token` becomes `{base_url}/api.amazon.co.uk/auth/o2/token`.
//! A control API under `/__fake/` moves the clock, registers principals, issues codes, injects
//! faults and reads counters; [`FakeControl`] is its client.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fake_amazon::{AuthorizeSpec, FakeAmazon, FakeConfig, defaults};
//! let fake = FakeAmazon::start(FakeConfig::default()).await?;
//! let code = fake
//!     .control()
//!     .authorize(AuthorizeSpec {
//!         client_id: defaults::SP_API_CLIENT_ID.to_owned(),
//!         ..Default::default()
//!     })
//!     .await;
//! let token_url = format!("{}/api.amazon.com/auth/o2/token", fake.base_url());
//! # let _ = (code, token_url);
//! # Ok(())
//! # }
//! ```
//!
//! **Invariant:** the fake keeps its own tables of Amazon hosts and regions (it does not depend
//! on the `lwa` crate), so a mistake in our library is not copied into the fake.

mod ads;
pub mod browser;
mod client;
mod clock;
mod config;
mod consent;
mod control;
pub mod defaults;
mod faults;
pub mod hosts;
mod http;
mod ids;
mod lwa;
mod model;
pub mod payload;
pub mod sandbox;
mod server;
mod sp_api;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use client::{ControlError, FakeControl};
pub use config::{FakeConfig, Quirks};
pub use model::{
    AccountInfo, AccountType, Advertiser, AdvertiserSpec, AmcInstance, AmcInstanceSpec, ApiCount, App,
    AppKind, AppSpec, AppstoreSpec, AuthorizationRecord, AuthorizeSpec, ClockState, Counters, Fault,
    FaultScript, FaultSpec, FaultTarget, LwaCount, PayloadSpec, Principal, Profile, ProfileSpec, RateSpec,
    RecordedRequest, Region, RevokeSpec, Seller, SellerSpec, TokenInfo,
};

/// A running fake Amazon. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct FakeAmazon {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl FakeAmazon {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime in a spawned task.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeAmazon> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Binds `addr` and serves on the current tokio runtime in a spawned task.
    pub async fn bind(addr: SocketAddr, config: FakeConfig) -> std::io::Result<FakeAmazon> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = state::Shared::new(config);
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        Ok(FakeAmazon {
            addr,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{base_url}/{host}{path}`: where a request meant for `https://{host}{path}` goes.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("{}/{host}{path}", self.base_url())
    }

    /// A client of the control API.
    pub fn control(&self) -> FakeControl {
        FakeControl::new(&self.base_url())
    }

    /// Serves until the server task ends (it does not on its own); for the binary, which races
    /// it against a shutdown signal.
    pub async fn serve_forever(mut self) {
        // Awaited by reference, so dropping this future drops `self`, which stops the server.
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeAmazon {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

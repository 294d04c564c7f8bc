//! Login with Amazon (LWA) for the Selling Partner API, the Amazon Ads API and Amazon
//! Marketing Cloud.
//!
//! - [`Region`], [`Marketplace`] and [`Api`]: every Amazon host a region implies.
//! - [`SpApiConsent`] and [`AdsConsent`]: consent URLs, with [`Pkce`].
//! - [`LwaClient`]: the three grants with typed errors ([`LwaError`], [`ErrorClass`]), retries
//!   for what is worth retrying ([`RetryPolicy`]) and client-secret fallback ([`AppCredentials`]).
//! - [`TokenManager`]: one account's tokens, refreshed inside a buffer, one refresh shared by
//!   every concurrent caller, persisted through a [`TokenStore`], with headers for SP-API, Ads
//!   and AMC and Restricted Data Tokens.
//! - [`Clock`]: injectable time; [`FakeAmazonClock`] follows `fake-amazon`'s clock.
//! - Secrets ([`AccessToken`], [`RefreshToken`], [`ClientSecret`], …) never print their value.
//!
//! The crate knows nothing of servers or SQL.
//!
//! ```
//! use lwa::{AccountType, Endpoints, Region, SpApiConsent};
//! let consent = SpApiConsent {
//!     application_id: "amzn1.sp.solution.abc".into(),
//!     state: lwa::random_state(),
//!     redirect_uri: Some("https://broker.example.com/auth/redirect".into()),
//!     draft: false,
//!     account_type: AccountType::Vendor,
//!     region: "A1PA6795UKMFR9".parse().unwrap(), // Germany: EU
//!     marketplace: lwa::Marketplace::parse("DE").ok(),
//! };
//! assert!(consent.url(&Endpoints::amazon()).starts_with("https://vendorcentral.amazon.de/apps/authorize/consent?"));
//! ```

mod client;
mod clock;
mod consent;
mod endpoints;
mod error;
mod file_store;
mod manager;
mod region;
pub mod restricted;
mod secret;
mod store;

pub use client::{
    AppCredentials, CallObserver, Grant, LwaClient, RetryPolicy, SecretUsed, TOKEN_PATH, TokenResponse,
};
pub use clock::{Clock, ClockSyncError, FakeAmazonClock, ManualClock, SystemClock};
pub use consent::{ADS_SCOPE_CAMPAIGN_MANAGEMENT, AccountType, AdsConsent, Pkce, SpApiConsent, random_state};
pub use endpoints::Endpoints;
pub use error::{ErrorClass, LwaError, TransientKind};
pub use file_store::EncryptedFileStore;
pub use manager::{
    DEFAULT_REFRESH_BUFFER, DEFAULT_USER_AGENT, RefreshOutcome, TokenError, TokenInfo, TokenManager,
    TokenManagerBuilder, TokenManagerConfig, TokenStatus,
};
pub use region::{Api, Marketplace, Region, UnknownApi, UnknownMarketplace, UnknownRegion};
pub use restricted::{RestrictedDataToken, RestrictedResource};
pub use secret::{AccessToken, AuthorizationCode, ClientSecret, CodeVerifier, RefreshToken};
pub use store::{MemoryStore, StoreError, StoredTokens, TokenStore};

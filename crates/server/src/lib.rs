//! lwa-broker's server: tenants and API keys, the onboarding flows (seed 003's
//! `/auth/initialize` and `/auth/redirect`, connect links, Amazon's Login URI, re-authorization
//! links), claims, connections, token vending and webhooks, over the [`lwa_store::Store`]
//! interface.
//!
//! **Invariant:** plaintext tokens never reach a log line or a database row (see [`sealing`]).
//!
//! **API boundary:** only this crate knows the JSON wire types.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lwa_server::{Application, config::{Overrides, Settings}};
//! let settings = Settings::resolve(&Overrides::default(), &|name| std::env::var(name).ok())?;
//! let app = Application::build(settings).await?;
//! println!("listening on {}", app.local_addr());
//! app.run_until_stopped().await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod app;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod database;
pub mod error;
pub mod extract;
pub mod http_threads;
pub mod ids;
pub mod invalidations;
pub mod metrics;
pub mod onboarding;
pub mod openapi;
pub mod operator;
pub mod proxy;
pub mod refresher;
pub mod rotation;
pub mod sandbox;
pub mod sealing;
pub mod state;
pub mod time;
pub mod vend;
pub mod webhooks;

pub use app::{Application, ROUTES, open_state, router};
pub use state::{AppState, StartError};

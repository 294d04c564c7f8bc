//! The router and `Application`: bind first (port 0 in tests), then serve.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use fake_amazon::{FakeAmazon, FakeConfig};
use lwa::{Clock, Endpoints, FakeAmazonClock, SystemClock};
use tokio::net::TcpListener;
use url::Url;

use crate::config::{AppConfig, Settings};
use crate::error::ApiError;
use crate::http_threads::HttpThreads;
use crate::metrics::VendRoute;
use crate::onboarding::{callback, claims, initialize, links, login_uri};
use crate::sealing::Sealer;
use crate::state::{AppState, StartError, check_master_key, load_keyring, open_store_with};
use crate::{apps, audit, connections, proxy, sandbox, vend, webhooks};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (browsers, Amazon).
    Public,
    /// A tenant's API key as `Authorization: Bearer`.
    TenantKey,
    /// A tenant's API key as Bearer or `x-adb-access-token`.
    CompatKey,
    /// A tenant's key id and secret as LWA client credentials (body or HTTP Basic).
    LwaClient,
    /// The operator's admin token as `Authorization: Bearer` (`lwa-broker admin-token`).
    Admin,
}

/// Every route the router serves (besides the Amazon callback paths from the config), so
/// tests can walk all of them. Keep in step with [`router`].
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
    ("GET", "/openapi.json", Access::Public),
    ("GET", "/metrics", Access::Admin),
    ("GET", "/auth/initialize", Access::Public),
    ("GET", "/auth/redirect", Access::Public),
    ("GET", "/auth/login", Access::Public),
    ("GET", "/auth/connect/{token}", Access::Public),
    ("POST", "/api/claim-code", Access::CompatKey),
    ("POST", "/v1/claims", Access::TenantKey),
    ("POST", "/v1/connect-links", Access::TenantKey),
    ("GET", "/v1/connections", Access::TenantKey),
    ("POST", "/v1/connections/import", Access::TenantKey),
    ("GET", "/v1/connections/{id}", Access::TenantKey),
    ("PATCH", "/v1/connections/{id}", Access::TenantKey),
    ("DELETE", "/v1/connections/{id}", Access::TenantKey),
    ("POST", "/v1/connections/{id}/reauthorize-link", Access::TenantKey),
    ("POST", "/v1/connections/{id}/access-token", Access::TenantKey),
    (
        "POST",
        "/v1/connections/{id}/restricted-data-token",
        Access::TenantKey,
    ),
    ("POST", "/v1/grantless-tokens", Access::TenantKey),
    ("GET", "/v1/audit", Access::TenantKey),
    ("GET", "/v1/webhook", Access::TenantKey),
    ("PUT", "/v1/webhook", Access::TenantKey),
    ("POST", "/v1/webhook/rotate-secret", Access::TenantKey),
    ("GET", "/v1/webhook/deliveries", Access::TenantKey),
    (
        "POST",
        "/v1/webhook/deliveries/{delivery_id}/retry",
        Access::TenantKey,
    ),
    ("POST", "/auth/o2/token", Access::LwaClient),
    ("POST", "/admin/api/app-secret-notifications", Access::Admin),
    ("GET", "/admin/api/proxy/metrics", Access::Admin),
];

/// The proxy's route, any method (a key or a stand-in token); not in [`ROUTES`], whose walk
/// checks one method per route.
pub const PROXY_ROUTE: &str = "/v1/connections/{id}/proxy/{*path}";

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(crate::openapi::route))
        .route("/metrics", get(admin_metrics))
        .route("/auth/initialize", get(initialize::initialize))
        .route("/auth/login", get(login_uri::login_uri))
        .route("/auth/connect/{token}", get(links::follow_link))
        .route("/api/claim-code", post(claims::claim_compat))
        .route("/v1/claims", post(claims::claim_v1))
        .route("/v1/connect-links", post(links::create_connect_link))
        .route("/v1/connections", get(connections::list))
        .route("/v1/connections/import", post(connections::import))
        .route(
            "/v1/connections/{id}",
            get(connections::get)
                .patch(connections::patch)
                .delete(connections::delete),
        )
        .route(
            "/v1/connections/{id}/reauthorize-link",
            post(links::create_reauthorize_link),
        )
        .route(
            "/v1/connections/{id}/access-token",
            post(vend::routes::access_token),
        )
        .route(
            "/v1/connections/{id}/restricted-data-token",
            post(vend::routes::restricted_data_token),
        )
        .route("/v1/grantless-tokens", post(vend::routes::grantless))
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/webhook",
            get(webhooks::routes::get).put(webhooks::routes::put),
        )
        .route("/v1/webhook/rotate-secret", post(webhooks::routes::rotate_secret))
        .route("/v1/webhook/deliveries", get(webhooks::routes::deliveries))
        .route(
            "/v1/webhook/deliveries/{delivery_id}/retry",
            post(webhooks::routes::retry),
        )
        .route("/auth/o2/token", post(vend::lwa_compat::token))
        .route("/auth/O2/token", post(vend::lwa_compat::token))
        .route(
            "/admin/api/app-secret-notifications",
            post(apps::notification_route),
        )
        .route("/admin/api/proxy/metrics", get(proxy::routes::metrics))
        .route(
            PROXY_ROUTE,
            any(proxy::routes::connection_proxy).layer(DefaultBodyLimit::disable()),
        );
    let reserved: Vec<&str> = ROUTES.iter().map(|r| r.1).collect();
    for path in state.callback_paths() {
        if path == "/auth/redirect" || !reserved.contains(&path.as_str()) {
            router = router.route(&path, get(callback::callback));
        }
    }
    if state.sandbox {
        router = router.route("/sandbox/done", get(sandbox::landing)).route(
            crate::dashboard::try_it::INBOX_PATH,
            post(crate::dashboard::try_it::receive),
        );
    }
    router
        .merge(crate::dashboard::routes(state.sandbox))
        .fallback(proxy::routes::root)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// The metrics listener's routes (`LWA_BROKER_METRICS_LISTEN`): `/metrics` without a token (the
/// listener is meant for a private address), and the probes.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready to serve: the database answers and its migrations are current. 503 with the reason
/// otherwise (the database's own error only in the log: it may name a host).
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.schema_current().await {
        Ok(true) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(false) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations_pending",
            "the database's migrations are not current: run `lwa-broker migrate`",
        )
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: the database did not answer");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unreachable",
                "the database did not answer",
            )
            .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state).await,
    )
        .into_response()
}

/// `/metrics` on the main listener, for the operator's admin token.
async fn admin_metrics(_: crate::operator::AdminAuth, state: State<AppState>) -> Response {
    metrics(state).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// One line per request: method, matched route (never the raw URI, whose query may hold a
/// secret), status, milliseconds.
async fn log_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // An `Arc<str>` inside: cloning it costs no allocation.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if response.status().is_success()
        && let Some(vend) = route.as_ref().and_then(|r| VendRoute::of(r.as_str()))
    {
        state.metrics.vend(vend, started.elapsed());
    }
    if status >= 500 || tracing::enabled!(tracing::Level::DEBUG) {
        let route = route.as_ref().map(MatchedPath::as_str).unwrap_or("unmatched");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(%method, %route, status, ms, "request");
        } else {
            tracing::debug!(%method, %route, status, ms, "request");
        }
    }
    response
}

/// A bound, ready-to-serve broker.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// `/metrics` and the probes on their own address (`LWA_BROKER_METRICS_LISTEN`).
    metrics_listener: Option<TcpListener>,
    state: AppState,
    fake: Option<FakeAmazon>,
    /// `Settings::http_threads`.
    http_threads: usize,
}

impl Application {
    /// Binds the listener, opens (and migrates) the database, checks the master key, and — in
    /// sandbox mode — starts the fake Amazon in-process and wires every Amazon URL to it.
    pub async fn build(mut settings: Settings) -> Result<Application, StartError> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartError::Other(format!("cannot listen on {}: {e}", settings.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let public_url = match &settings.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{local}")).map_err(|e| StartError::Other(e.to_string()))?,
        };
        let metrics_listener = match settings.metrics_listen {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Other(format!("cannot listen for metrics on {addr}: {e}")))?,
            ),
        };
        let mut fake = None;
        if settings.sandbox {
            let redirect = format!("{}/auth/redirect", public_url.as_str().trim_end_matches('/'));
            let started = FakeAmazon::start(FakeConfig {
                extra_redirect_uris: vec![redirect],
                ..FakeConfig::default()
            })
            .await
            .map_err(|e| StartError::Other(format!("cannot start the sandbox's fake Amazon: {e}")))?;
            settings.amazon_base_url = Some(started.base_url().to_owned());
            settings.fake_clock = true;
            // The demo tenant's webhook is the broker's own inbox, on this host.
            settings.webhook_allow_private = true;
            if settings.apps.is_empty() {
                settings.apps = sandbox::apps();
            }
            fake = Some(started);
        }
        let state = open_state(&settings, public_url).await?;
        if state.store.backend() == "sqlite" {
            // The only server on this database: refresh leases left in it are this server's own,
            // from before a crash; waiting for them to run out would only delay vends.
            let cleared = state.store.clear_refresh_leases().await?;
            if cleared > 0 {
                tracing::info!(cleared, "refresh leases left by an earlier run ended");
            }
        }
        Ok(Application {
            listener,
            metrics_listener,
            state,
            fake,
            http_threads: settings.http_threads,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics listener's address, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared state (tests and the sandbox use it to create tenants).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The in-process fake Amazon of `--sandbox`.
    pub fn fake(&self) -> Option<&FakeAmazon> {
        self.fake.as_ref()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state.clone());
        let _fake = self.fake;
        let writer = self.state.auditor.spawn_writer();
        let refresher = self
            .state
            .refresher
            .settings()
            .enabled
            .then(|| self.state.refresher.spawn(self.state.clone()));
        let deliverer = webhooks::worker::spawn_worker(&self.state);
        let invalidations = crate::invalidations::spawn(&self.state).await;
        let metrics_server = self.metrics_listener.map(|listener| {
            let router = metrics_router(self.state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!(error = %e, "the metrics listener failed");
                }
            })
        });
        let mut threads = None;
        let served = if self.http_threads == 0 {
            axum::serve(
                self.listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        } else {
            match HttpThreads::start(self.http_threads) {
                Ok(started) => {
                    let served = started.serve(self.listener, app, shutdown).await;
                    threads = Some(started);
                    served
                }
                Err(e) => Err(e),
            }
        };
        invalidations.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        self.state.auditor.stop();
        self.state.refresher.stop();
        if let Some(refresher) = refresher
            && let Err(e) = refresher.await
        {
            tracing::warn!(error = %e, "the background refresher failed");
        }
        if let Err(e) = writer.await {
            tracing::warn!(error = %e, "the audit writer failed");
        }
        self.state.webhooks.stop();
        if let Err(e) = deliverer.await {
            tracing::warn!(error = %e, "the webhook worker failed");
        }
        // Last: connections the requests opened (database, Amazon) live on these threads.
        if let Some(threads) = threads {
            threads.finish().await;
        }
        served
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// The state without a listener (the CLI's `tenants`, `keys` and `connections import` use it):
/// opens and migrates the database, loads and checks the master key.
pub async fn open_state(settings: &Settings, public_url: Url) -> Result<AppState, StartError> {
    let endpoints = match &settings.amazon_base_url {
        Some(base) => Endpoints::rebased(base),
        None => Endpoints::amazon(),
    };
    let clock: Arc<dyn Clock> = match (&settings.amazon_base_url, settings.fake_clock) {
        (Some(base), true) => Arc::new(
            FakeAmazonClock::follow(base)
                .await
                .map_err(|e| StartError::Other(e.to_string()))?,
        ),
        _ => Arc::new(SystemClock),
    };
    check_apps(&settings.apps)?;
    let store = open_store_with(&settings.database_url, settings.auto_migrate).await?;
    let sealer = Sealer::new(load_keyring(settings)?);
    check_master_key(store.as_ref(), &sealer).await?;
    let state = AppState::new(store, sealer, settings, endpoints, clock, public_url);
    crate::apps::sync_config_secrets(&state).await?;
    Ok(state)
}

fn check_apps(apps: &[AppConfig]) -> Result<(), StartError> {
    let mut names = std::collections::HashSet::new();
    for app in apps {
        if !names.insert(&app.name) {
            return Err(StartError::Other(format!("two apps are named {:?}", app.name)));
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

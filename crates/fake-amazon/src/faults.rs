//! Injected faults: latency, errors and dropped connections.

use std::time::Duration;

use axum::response::Response;

use crate::http::{Ctx, response};
use crate::ids;
use crate::model::FaultTarget;
use crate::state::{ApiKey, Shared};

/// What a fault does to a request (besides latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// Answer with this status and (optionally) this error code.
    Fail {
        /// HTTP status.
        status: u16,
        /// Error code for the body; derived from the status when absent.
        error: Option<String>,
    },
    /// Close the connection without answering.
    Drop,
}

/// What a request looks like to the fault matcher.
#[derive(Debug, Clone, Copy)]
pub struct FaultQuery<'a> {
    /// LWA, API or consent.
    pub target: FaultTarget,
    /// Amazon host.
    pub host: &'a str,
    /// Path after the host.
    pub path: &'a str,
    /// Client id, when known.
    pub client_id: Option<&'a str>,
    /// Refresh token (LWA refresh grant).
    pub refresh_token: Option<&'a str>,
}

/// Applies matching faults: sleeps their latency (real time), then says whether one fires.
pub async fn check(shared: &Shared, q: FaultQuery<'_>) -> Option<Injected> {
    let (latency_ms, outcome) = {
        let mut inner = shared.inner.lock();
        let mut latency_ms: u64 = 0;
        let mut outcome = None;
        for fault in inner.faults.iter_mut() {
            let spec = &fault.spec;
            let matches = spec.target == q.target
                && spec
                    .host
                    .as_deref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(q.host))
                && spec.client_id.as_deref().is_none_or(|c| q.client_id == Some(c))
                && spec
                    .refresh_token
                    .as_deref()
                    .is_none_or(|r| q.refresh_token == Some(r))
                && spec.path_prefix.as_deref().is_none_or(|p| q.path.starts_with(p));
            if !matches {
                continue;
            }
            latency_ms = latency_ms.saturating_add(spec.latency_ms.unwrap_or(0));
            if outcome.is_some() {
                continue;
            }
            let fired = if let Some(script) = fault.spec.script.as_mut().filter(|s| s.count > 0) {
                script.count -= 1;
                Some(if script.drop {
                    Injected::Drop
                } else {
                    Injected::Fail {
                        status: script.status.unwrap_or(500),
                        error: script.error.clone(),
                    }
                })
            } else if ids::roll(fault.spec.drop_share) {
                Some(Injected::Drop)
            } else if ids::roll(fault.spec.error_500_share) {
                Some(Injected::Fail {
                    status: 500,
                    error: None,
                })
            } else if ids::roll(fault.spec.error_429_share) {
                Some(Injected::Fail {
                    status: 429,
                    error: None,
                })
            } else {
                None
            };
            if fired.is_some() {
                fault.fired += 1;
                outcome = fired;
            }
        }
        (latency_ms, outcome)
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    outcome
}

/// Closes the request's connection without a response. For API targets the call is counted
/// here (status 0), since no response ever reaches the counting layer.
pub async fn drop_connection(ctx: &Ctx, count_api: bool) -> Response {
    if count_api {
        ctx.shared.inner.lock().count_api(ApiKey {
            host: ctx.host.clone(),
            method: ctx.method.to_string(),
            path: ctx.path.clone(),
            status: 0,
            fault: true,
        });
    }
    match &ctx.kill {
        Some(kill) => {
            kill.0.notify_one();
            // The accept loop drops this connection (and this future) now.
            std::future::pending::<()>().await;
            response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "unreachable",
            )
        }
        None => response(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "fake-amazon: drop fault without a connection to drop",
        ),
    }
}

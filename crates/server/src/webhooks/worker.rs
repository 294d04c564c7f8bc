//! The delivery worker: claims due deliveries from the outbox, sends them, records each
//! attempt. Time is the broker's clock; [`run_once`] is one pass, for tests.
//!
//! At least once: a delivery is claimed for [`LEASE_MS`] before it is sent and recorded after,
//! so a worker killed in between leaves it to be claimed again. In order: the store hands out
//! only the first pending delivery of each connection and target, so event N+1 never reaches a
//! target before event N was delivered or given up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lwa_store::{AttemptResult, DeliveryAttempt, WebhookDelivery};
use rand::Rng;
use tokio::sync::Notify;
use url::Url;

use super::SigningSecret;
use super::address::{GuardedResolver, InternalAddress, is_internal, literal_ip};
use crate::state::AppState;

/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is held before another worker may take it.
pub const LEASE_MS: i64 = 60_000;
/// The first retry comes about this long after a failure; each doubles it.
pub const FIRST_RETRY_MS: i64 = 10_000;
/// Retries are never further apart than this.
pub const MAX_RETRY_MS: i64 = 3_600_000;
/// Deliveries claimed (and sent concurrently) at a time.
const BATCH: u32 = 32;
/// How often the worker looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);

/// The webhook settings and the delivery client, shared by handlers and the worker.
#[derive(Debug)]
pub struct Webhooks {
    /// The operator's webhook URL (`LWA_BROKER_OPERATOR_WEBHOOK_URL`), for app events.
    pub operator_url: Option<String>,
    operator_secret: Option<SigningSecret>,
    /// `LWA_BROKER_WEBHOOK_ALLOW_PRIVATE`: internal addresses may be reached.
    pub allow_private: bool,
    http: reqwest::Client,
    wake: Notify,
    stop: Notify,
}

/// What one pass of the worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Attempts made.
    pub attempted: usize,
    pub delivered: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Deliveries given up (24 hours passed).
    pub failed: usize,
}

impl Webhooks {
    /// The delivery client: no redirects, no proxy, a 10 s timeout, and the resolver that
    /// refuses internal addresses unless `allow_private`.
    pub fn new(
        operator_url: Option<String>,
        operator_secret: Option<SigningSecret>,
        allow_private: bool,
    ) -> Webhooks {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("lwa-broker-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .expect("the webhook client builds");
        Webhooks {
            operator_url,
            operator_secret,
            allow_private,
            http,
            wake: Notify::new(),
            stop: Notify::new(),
        }
    }

    /// Asks the worker to look for due deliveries now (after writing events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the worker after its current pass.
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// Starts the worker; it runs until [`Webhooks::stop`].
pub fn spawn_worker(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            run_once(&state).await;
            let stopping = tokio::select! {
                _ = tokio::time::sleep(POLL) => false,
                _ = state.webhooks.wake.notified() => false,
                _ = state.webhooks.stop.notified() => true,
            };
            if stopping {
                break;
            }
        }
    })
}

/// One pass: sends every delivery due now by the broker's clock (and those that become
/// sendable because the one before them was delivered), and records each attempt.
pub async fn run_once(state: &AppState) -> RunSummary {
    let mut summary = RunSummary::default();
    let mut secrets: HashMap<String, Option<SigningSecret>> = HashMap::new();
    // Bounded, so a flood of events cannot keep one pass going forever.
    for _ in 0..1000 {
        let now = state.now_ms();
        let claimed = match state.store.claim_deliveries(now, LEASE_MS, BATCH).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "could not read due webhook deliveries");
                break;
            }
        };
        if claimed.is_empty() {
            break;
        }
        for d in &claimed {
            if let Some(tenant_id) = &d.tenant_id
                && !secrets.contains_key(tenant_id)
            {
                let secret = tenant_secret(state, tenant_id).await;
                secrets.insert(tenant_id.clone(), secret);
            }
        }
        let secrets = &secrets;
        let outcomes: Vec<AttemptResult> = futures::stream::iter(claimed)
            .map(|d| async move {
                let secret = match &d.tenant_id {
                    Some(t) => secrets.get(t).cloned().flatten(),
                    None => state.webhooks.operator_secret.clone(),
                };
                attempt(state, &d, secret.as_ref()).await
            })
            .buffer_unordered(BATCH as usize)
            .collect()
            .await;
        for outcome in outcomes {
            summary.attempted += 1;
            match outcome {
                AttemptResult::Delivered => summary.delivered += 1,
                AttemptResult::RetryAt(_) => summary.retrying += 1,
                AttemptResult::GaveUp => summary.failed += 1,
            }
        }
    }
    summary
}

/// The tenant's signing secret, opened; `None` when it has none (its webhooks go unsigned).
async fn tenant_secret(state: &AppState, tenant_id: &str) -> Option<SigningSecret> {
    let tenant = match state.store.tenant(tenant_id).await {
        Ok(t) => t?,
        Err(e) => {
            tracing::warn!(error = %e, tenant = %tenant_id, "could not read a tenant's signing secret");
            return None;
        }
    };
    let sealed = tenant.signing_secret?;
    match state.sealer.open(tenant_id, "signing_secret", &sealed, None) {
        Ok(plain) => Some(SigningSecret::new(plain.as_str())),
        Err(e) => {
            tracing::warn!(error = %e, tenant = %tenant_id, "could not open a tenant's signing secret");
            None
        }
    }
}

/// One attempt at one delivery, recorded.
async fn attempt(state: &AppState, d: &WebhookDelivery, secret: Option<&SigningSecret>) -> AttemptResult {
    let (status, error) = match send(state, d, secret).await {
        Ok(status) => (Some(status), None),
        Err((status, error)) => (status, Some(error)),
    };
    let now = state.now_ms();
    let result = match &error {
        None => AttemptResult::Delivered,
        Some(_) if now >= d.expires_at_ms => AttemptResult::GaveUp,
        Some(_) => AttemptResult::RetryAt(next_attempt(now, d.attempts + 1).min(d.expires_at_ms)),
    };
    let record = DeliveryAttempt {
        delivery_id: d.id,
        at_ms: now,
        status,
        error: error.clone(),
        result,
    };
    if let Err(e) = state.store.record_delivery_attempt(&record).await {
        tracing::warn!(error = %e, delivery = d.id, "could not record a webhook attempt");
    }
    match (&result, &error) {
        (AttemptResult::Delivered, _) => {
            tracing::debug!(delivery = d.id, event = %d.event_id, kind = %d.event_type, target = %d.target, "webhook delivered")
        }
        (AttemptResult::GaveUp, Some(e)) => {
            tracing::warn!(delivery = d.id, event = %d.event_id, target = %d.target, error = %e, "webhook given up after 24 hours")
        }
        (_, Some(e)) => {
            tracing::info!(delivery = d.id, event = %d.event_id, target = %d.target, error = %e, attempts = d.attempts + 1, "webhook attempt failed; will retry")
        }
        _ => {}
    }
    result
}

/// When to try again after `attempts` failed attempts: 10 s, 20 s, 40 s, … up to an hour,
/// each ±20 % at random so that many deliveries failing together do not retry together.
pub fn next_attempt(now_ms: i64, attempts: i64) -> i64 {
    let exponent = (attempts - 1).clamp(0, 20) as u32;
    let base = FIRST_RETRY_MS.saturating_mul(1_i64 << exponent).min(MAX_RETRY_MS);
    let jitter = rand::rng().random_range(0.8..1.2);
    now_ms + ((base as f64) * jitter) as i64
}

/// Sends one delivery: the receiver's 2xx status, or its status (if any) and a description of what went wrong otherwise.
async fn send(
    state: &AppState,
    d: &WebhookDelivery,
    secret: Option<&SigningSecret>,
) -> Result<i64, (Option<i64>, String)> {
    let url = Url::parse(&d.url).map_err(|_| (None, "the URL is not valid".to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err((None, "only http and https URLs receive webhooks".to_owned()));
    }
    if !state.webhooks.allow_private
        && let Some(ip) = literal_ip(&url)
        && is_internal(ip)
    {
        return Err((
            None,
            format!("refused: {ip} is an internal address, which webhooks may not reach"),
        ));
    }
    let timestamp = state.now_ms().div_euclid(1000);
    let mut request = state
        .webhooks
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = secret {
        request = request.header(
            "lwa-broker-signature",
            secret.signature_header(timestamp, &d.body),
        );
    }
    match request.body(d.body.clone()).send().await {
        Ok(response) if response.status().is_success() => Ok(i64::from(response.status().as_u16())),
        Ok(response) => {
            let status = response.status();
            Err((
                Some(i64::from(status.as_u16())),
                format!("the receiver answered HTTP {}", status.as_u16()),
            ))
        }
        Err(e) => Err((None, describe(&e))),
    }
}

/// A transport error in a line, without the URL (whose query may be the receiver's secret).
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(internal) = err.downcast_ref::<InternalAddress>() {
            return format!("refused: {internal}");
        }
        source = err.source();
    }
    if e.is_timeout() {
        "the receiver did not answer within 10 seconds".to_owned()
    } else if e.is_connect() {
        "could not connect to the receiver".to_owned()
    } else {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "[url]");
        }
        format!("the request failed: {text}")
    }
}

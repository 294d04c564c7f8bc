//! `/metrics`: the broker's counters in Prometheus' text format (version 0.0.4).
//!
//! Written by hand rather than through `metrics` + `metrics-exporter-prometheus`: that pair
//! keeps its registry in a process-wide recorder, and a test process runs several brokers at
//! once whose counts must not mix (state lives in [`crate::AppState`], never in a global); the
//! exporter also brings a tree of its own (`metrics-util`, `quanta`, `crossbeam`, sketches) for
//! what is here a fixed table of atomics. Every series has fixed, low-cardinality labels, so
//! each counter is one `AtomicU64` found by index: a vend adds to three atomics and allocates
//! nothing. Gauges that live in the database (connections by status, webhook backlog) are read
//! when scraped.
//!
//! No label carries an id, a token, a key or a URL.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lwa::{ErrorClass, LwaError};

use crate::state::AppState;

/// Upper bounds (seconds) of the vend latency histogram's buckets.
pub const VEND_BUCKETS_S: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds (seconds) of the refresh lag histogram's buckets.
pub const LAG_BUCKETS_S: [f64; 10] = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86_400.0];

/// The routes whose latency is the vend histogram's `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendRoute {
    AccessToken,
    RestrictedDataToken,
    Grantless,
    LwaCompatible,
}

impl VendRoute {
    const ALL: [VendRoute; 4] = [
        VendRoute::AccessToken,
        VendRoute::RestrictedDataToken,
        VendRoute::Grantless,
        VendRoute::LwaCompatible,
    ];

    /// The vend route a matched path names, if any (a few byte comparisons).
    pub fn of(matched: &str) -> Option<VendRoute> {
        match matched {
            "/v1/connections/{id}/access-token" => Some(VendRoute::AccessToken),
            "/v1/connections/{id}/restricted-data-token" => Some(VendRoute::RestrictedDataToken),
            "/v1/grantless-tokens" => Some(VendRoute::Grantless),
            "/auth/o2/token" | "/auth/O2/token" => Some(VendRoute::LwaCompatible),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            VendRoute::AccessToken => "access_token",
            VendRoute::RestrictedDataToken => "restricted_data_token",
            VendRoute::Grantless => "grantless",
            VendRoute::LwaCompatible => "lwa_compatible",
        }
    }
}

/// The LWA grant of a call (the `grant_type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    RefreshToken,
    ClientCredentials,
    AuthorizationCode,
}

impl Grant {
    const ALL: [Grant; 3] = [
        Grant::RefreshToken,
        Grant::ClientCredentials,
        Grant::AuthorizationCode,
    ];

    /// The grant a `grant_type` names, if one of these.
    pub fn of(grant_type: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|g| g.label() == grant_type)
    }

    fn label(self) -> &'static str {
        match self {
            Grant::RefreshToken => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
            Grant::AuthorizationCode => "authorization_code",
        }
    }
}

/// The `outcome` label of an LWA call: `ok` or the error's class.
const OUTCOMES: [&str; 5] = ["ok", "reauthorize", "configuration", "retry_later", "malformed"];

fn outcome_index(result: Result<(), &LwaError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(e) => match e.class() {
            ErrorClass::Reauthorize => 1,
            ErrorClass::Configuration => 2,
            ErrorClass::RetryLater => 3,
            ErrorClass::MalformedResponse => 4,
        },
    }
}

/// A histogram of fixed buckets; each bucket counts the observations that fell in it (made
/// cumulative when rendered).
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// `N` buckets and the overflow.
    counts: [AtomicU64; 33],
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        assert!(N < 33);
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, seconds: f64) {
        let bucket = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(N);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[N].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Every HTTP call to LWA's token endpoint since the start, by grant and outcome class: the
/// `lwa_broker_lwa_calls_total` series. Counted by the LWA client's observer
/// ([`crate::dashboard::calls::LwaCallLog`]), so each retry and each client-secret fallback is a
/// call, as Amazon counts them, and the dashboard's chart and `/metrics` agree.
#[derive(Debug, Default)]
pub struct LwaTotals {
    counts: [[AtomicU64; OUTCOMES.len()]; 3],
}

impl LwaTotals {
    /// One call of `grant_type` that ended as `result`; another grant type is not counted.
    pub fn add(&self, grant_type: &str, result: Result<(), &LwaError>) {
        if let Some(grant) = Grant::of(grant_type) {
            self.counts[grant as usize][outcome_index(result)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls of a grant with an outcome (`ok`, `reauthorize`, …).
    pub fn get(&self, grant: Grant, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map(|i| self.counts[grant as usize][i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// The broker's own counters (one per [`AppState`]).
#[derive(Debug)]
pub struct Metrics {
    vend: [Histogram<{ VEND_BUCKETS_S.len() }>; 4],
    refresh_lag: Histogram<{ LAG_BUCKETS_S.len() }>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            vend: std::array::from_fn(|_| Histogram::new(&VEND_BUCKETS_S)),
            refresh_lag: Histogram::new(&LAG_BUCKETS_S),
        }
    }
}

impl Metrics {
    /// A vend answered successfully after `elapsed` in the server.
    pub fn vend(&self, route: VendRoute, elapsed: Duration) {
        self.vend[route as usize].observe(elapsed.as_secs_f64());
    }

    /// The background refresher took up a due connection `lag_ms` after its token entered the
    /// refresh buffer (before any wait for the app's LWA call budget; a retry after a failure
    /// counts from the failed token's expiry).
    pub fn refresh_lag(&self, lag_ms: i64) {
        self.refresh_lag.observe(lag_ms.max(0) as f64 / 1000.0);
    }
}

/// Everything, in Prometheus' text format. Reads the database for the gauges; a failed read
/// leaves its series out and sets `lwa_broker_scrape_errors`.
pub async fn render(state: &AppState) -> String {
    let m = &state.metrics;
    let mut out = String::with_capacity(8 * 1024);
    let mut errors = 0;

    out.push_str(
        "# HELP lwa_broker_vend_duration_seconds Time the server spent answering a successful vend.\n\
         # TYPE lwa_broker_vend_duration_seconds histogram\n",
    );
    for route in VendRoute::ALL {
        m.vend[route as usize].render(
            &mut out,
            "lwa_broker_vend_duration_seconds",
            &format!("route=\"{}\"", route.label()),
        );
    }

    out.push_str(
        "# HELP lwa_broker_lwa_calls_total HTTP calls to Login with Amazon's token endpoint (each retry and client-secret fallback is one), by grant and outcome class.\n\
         # TYPE lwa_broker_lwa_calls_total counter\n",
    );
    for grant in Grant::ALL {
        for outcome in OUTCOMES {
            let n = state.lwa_calls.totals.get(grant, outcome);
            let _ = writeln!(
                out,
                "lwa_broker_lwa_calls_total{{grant_type=\"{}\",outcome=\"{outcome}\"}} {n}",
                grant.label()
            );
        }
    }

    out.push_str(
        "# HELP lwa_broker_refresh_lag_seconds How long after its token entered the refresh buffer the background refresher took a due connection up.\n\
         # TYPE lwa_broker_refresh_lag_seconds histogram\n",
    );
    m.refresh_lag
        .render(&mut out, "lwa_broker_refresh_lag_seconds", "");

    match state.store.count_connections(None).await {
        Ok(counts) => {
            out.push_str(
                "# HELP lwa_broker_connections Connections by status.\n\
                 # TYPE lwa_broker_connections gauge\n",
            );
            for status in ["active", "needs_reauth", "disconnected"] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                let _ = writeln!(out, "lwa_broker_connections{{status=\"{status}\"}} {n}");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: counting connections failed");
            errors += 1;
        }
    }

    match state.store.webhook_backlog().await {
        Ok((pending, oldest)) => {
            let age = oldest
                .map(|at| (state.now_ms() - at).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            let _ = write!(
                out,
                "# HELP lwa_broker_webhook_backlog Webhook deliveries not yet delivered nor given up.\n\
                 # TYPE lwa_broker_webhook_backlog gauge\n\
                 lwa_broker_webhook_backlog {pending}\n\
                 # HELP lwa_broker_webhook_backlog_oldest_seconds Age of the oldest pending webhook delivery (0: none).\n\
                 # TYPE lwa_broker_webhook_backlog_oldest_seconds gauge\n\
                 lwa_broker_webhook_backlog_oldest_seconds {age}\n"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: reading the webhook backlog failed");
            errors += 1;
        }
    }

    out.push_str(
        "# HELP lwa_broker_proxy_upstream_responses_total Answers from Amazon to proxied calls, by API and status (0: no answer).\n\
         # TYPE lwa_broker_proxy_upstream_responses_total counter\n",
    );
    for (api, status, n) in state.proxy.metrics.by_status() {
        let _ = writeln!(
            out,
            "lwa_broker_proxy_upstream_responses_total{{api=\"{api}\",status=\"{status}\"}} {n}"
        );
    }

    let _ = write!(
        out,
        "# HELP lwa_broker_scrape_errors Gauges this scrape could not read from the database.\n\
         # TYPE lwa_broker_scrape_errors gauge\n\
         lwa_broker_scrape_errors {errors}\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new(&LAG_BUCKETS_S);
        h.observe(0.5);
        h.observe(10.0);
        h.observe(100_000.0);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"15\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"86400\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 100010.5\n"), "{out}");
    }

    #[test]
    fn routes_and_grants_index_their_arrays() {
        for (i, r) in VendRoute::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, g) in Grant::ALL.iter().enumerate() {
            assert_eq!(*g as usize, i);
        }
        assert_eq!(
            VendRoute::of("/v1/connections/{id}/access-token"),
            Some(VendRoute::AccessToken)
        );
        assert_eq!(VendRoute::of("/v1/connections/{id}"), None);
    }
}

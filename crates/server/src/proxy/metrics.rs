//! The proxy's counters: upstream status codes by API and operation, 429 retries, forced
//! refreshes, calls refused by the limiter, and the latency the broker adds (time in the
//! handler minus time waiting for Amazon, the limiter and backoff). Read with
//! `GET /admin/api/proxy/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use lwa::Api;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Operations tracked by name before the rest are counted as `other`.
const MAX_OPERATIONS: usize = 2_000;
/// Upper bounds (µs) of the added-latency histogram's buckets.
pub const LATENCY_BUCKETS_US: [u64; 9] = [50, 100, 150, 250, 500, 1_000, 2_500, 10_000, 100_000];

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    retries: u64,
    refreshes: u64,
    limited: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (api, operation) → status → calls.
    upstream: BTreeMap<(&'static str, String), BTreeMap<u16, u64>>,
    counts: BTreeMap<(&'static str, String), Counts>,
    latency: [u64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: u64,
    latency_count: u64,
}

/// The proxy's metrics (one per process).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::SpApi => "sp-api",
        Api::Ads => "ads",
    }
}

impl Inner {
    fn key(&self, api: Api, operation: &str) -> (&'static str, String) {
        let key = (api_name(api), operation.to_owned());
        if self.upstream.len() >= MAX_OPERATIONS && !self.upstream.contains_key(&key) {
            (api_name(api), "other".to_owned())
        } else {
            key
        }
    }
}

impl Metrics {
    /// An answer from Amazon (status 0: none, the connection failed).
    pub fn upstream(&self, api: Api, operation: &str, status: u16) {
        let mut inner = self.inner.lock();
        let key = inner.key(api, operation);
        *inner.upstream.entry(key).or_default().entry(status).or_default() += 1;
    }

    fn count(&self, api: Api, operation: &str, f: impl FnOnce(&mut Counts)) {
        let mut inner = self.inner.lock();
        let key = inner.key(api, operation);
        f(inner.counts.entry(key).or_default());
    }

    /// A 429 retried.
    pub fn retried(&self, api: Api, operation: &str) {
        self.count(api, operation, |c| c.retries += 1);
    }

    /// A refresh forced by Amazon refusing the token.
    pub fn refreshed(&self, api: Api, operation: &str) {
        self.count(api, operation, |c| c.refreshes += 1);
    }

    /// A call refused by the limiter (no turn within its budget).
    pub fn limited(&self, api: Api, operation: &str) {
        self.count(api, operation, |c| c.limited += 1);
    }

    /// The broker's own time on one call.
    pub fn added(&self, added: Duration) {
        let us = added.as_micros() as u64;
        let mut inner = self.inner.lock();
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        inner.latency[bucket] += 1;
        inner.latency_sum_us += us;
        inner.latency_count += 1;
    }

    /// Calls Amazon answered with `status` for `operation` (for tests).
    pub fn upstream_count(&self, api: Api, operation: &str, status: u16) -> u64 {
        let inner = self.inner.lock();
        inner
            .upstream
            .get(&(api_name(api), operation.to_owned()))
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Everything, as JSON. `rdts_minted` comes from the vending cache.
    pub fn snapshot(&self, rdts_minted: u64) -> Value {
        let inner = self.inner.lock();
        let mut operations = Vec::new();
        let mut keys: Vec<&(&'static str, String)> =
            inner.upstream.keys().chain(inner.counts.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let statuses: BTreeMap<String, u64> = inner
                .upstream
                .get(key)
                .map(|s| s.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default();
            let counts = inner.counts.get(key).copied().unwrap_or_default();
            operations.push(json!({
                "api": key.0,
                "operation": key.1,
                "statuses": statuses,
                "retries": counts.retries,
                "forced_refreshes": counts.refreshes,
                "limited": counts.limited,
            }));
        }
        let mut buckets = Vec::new();
        for (i, count) in inner.latency.iter().enumerate() {
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map(|b| json!(b))
                .unwrap_or(json!("+Inf"));
            buckets.push(json!({"le_us": le, "count": count}));
        }
        json!({
            "operations": operations,
            "rdts_minted": rdts_minted,
            "added_latency": {
                "count": inner.latency_count,
                "sum_us": inner.latency_sum_us,
                "buckets": buckets,
            },
        })
    }
}

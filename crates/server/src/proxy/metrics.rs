//! The proxy's counters: upstream status codes by API and operation, 429 retries, forced
//! refreshes, calls refused by the limiter, and the latency the broker adds (time in the
//! handler minus time waiting for Amazon, the limiter and backoff). Read with
//! `GET /admin/api/proxy/metrics`.

use std::collections::{BTreeMap, HashMap};
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

#[derive(Debug, Default, Clone)]
struct OpStats {
    /// Status → calls.
    statuses: BTreeMap<u16, u64>,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per API (SP-API, Ads): operation → its counts.
    ops: [HashMap<String, OpStats>; 2],
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

fn api_index(api: Api) -> usize {
    match api {
        Api::SpApi => 0,
        Api::Ads => 1,
    }
}

impl Inner {
    /// The operation's counts, made when new (past [`MAX_OPERATIONS`], under `other`); no
    /// allocation for one already known.
    fn op(&mut self, api: Api, operation: &str) -> Option<&mut OpStats> {
        let ops = &mut self.ops[api_index(api)];
        if ops.contains_key(operation) {
            return ops.get_mut(operation);
        }
        let name = if ops.len() < MAX_OPERATIONS {
            operation
        } else {
            "other"
        };
        ops.entry(name.to_owned()).or_default();
        ops.get_mut(name)
    }
}

impl Metrics {
    /// An answer from Amazon (status 0: none, the connection failed).
    pub fn upstream(&self, api: Api, operation: &str, status: u16) {
        if let Some(op) = self.inner.lock().op(api, operation) {
            *op.statuses.entry(status).or_default() += 1;
        }
    }

    fn count(&self, api: Api, operation: &str, f: impl FnOnce(&mut Counts)) {
        if let Some(op) = self.inner.lock().op(api, operation) {
            f(&mut op.counts);
        }
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

    /// Answers from Amazon by API and status, every operation added up (for `/metrics`,
    /// whose labels stay few).
    pub fn by_status(&self) -> Vec<(&'static str, u16, u64)> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for api in [Api::SpApi, Api::Ads] {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            for op in inner.ops[api_index(api)].values() {
                for (status, n) in &op.statuses {
                    *statuses.entry(*status).or_default() += n;
                }
            }
            out.extend(statuses.into_iter().map(|(s, n)| (api_name(api), s, n)));
        }
        out
    }

    /// Calls Amazon answered with `status` for `operation` (for tests).
    pub fn upstream_count(&self, api: Api, operation: &str, status: u16) -> u64 {
        let inner = self.inner.lock();
        inner.ops[api_index(api)]
            .get(operation)
            .and_then(|op| op.statuses.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Everything, as JSON. `rdts_minted` comes from the vending cache.
    pub fn snapshot(&self, rdts_minted: u64) -> Value {
        let inner = self.inner.lock();
        let mut operations = Vec::new();
        for api in [Api::SpApi, Api::Ads] {
            let ops: BTreeMap<&String, &OpStats> = inner.ops[api_index(api)].iter().collect();
            for (name, op) in ops {
                let statuses: BTreeMap<String, u64> =
                    op.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                operations.push(json!({
                    "api": api_name(api),
                    "operation": name,
                    "statuses": statuses,
                    "retries": op.counts.retries,
                    "forced_refreshes": op.counts.refreshes,
                    "limited": op.counts.limited,
                }));
            }
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

//! LWA calls counted by hour for the overview's chart: every HTTP call the broker's LWA clients
//! make (each retry and secret fallback too), by grant type and outcome, for the last 25 hours;
//! and since the start, by outcome class, for `/metrics` ([`crate::metrics::LwaTotals`]). One
//! observer counts both, so the chart and `/metrics` never disagree.
//!
//! Per process: each replica counts its own calls (as the login limiter does); the dashboard
//! of one replica shows that replica's calls.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use lwa::{CallObserver, Clock, LwaError};
use parking_lot::Mutex;

const HOUR_MS: i64 = 3_600_000;
/// Hours kept: the chart shows 24, the current one included.
const KEPT_HOURS: usize = 25;

/// Counts of one hour: `(grant_type, outcome) → calls`.
pub type HourCounts = BTreeMap<(&'static str, String), u64>;

/// The counter, an [`lwa::CallObserver`] of the state's LWA clients.
#[derive(Debug)]
pub struct LwaCallLog {
    clock: Arc<dyn Clock>,
    /// `(hour start ms, counts)`, oldest first.
    hours: Mutex<VecDeque<(i64, HourCounts)>>,
    /// Since the start, for `/metrics`.
    pub totals: crate::metrics::LwaTotals,
}

impl LwaCallLog {
    /// An empty log on `clock` (the broker's clock, so it follows the fake's in tests).
    pub fn new(clock: Arc<dyn Clock>) -> LwaCallLog {
        LwaCallLog {
            clock,
            hours: Mutex::new(VecDeque::new()),
            totals: Default::default(),
        }
    }

    /// The last 24 hours ending with the current one, oldest first: `(hour start ms, counts)`;
    /// hours without a call are present and empty.
    pub fn last_24_hours(&self, now_ms: i64) -> Vec<(i64, HourCounts)> {
        let current = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let hours = self.hours.lock();
        (0..24)
            .rev()
            .map(|back| {
                let start = current - back * HOUR_MS;
                let counts = hours
                    .iter()
                    .find(|(h, _)| *h == start)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                (start, counts)
            })
            .collect()
    }
}

impl CallObserver for LwaCallLog {
    fn lwa_call(&self, grant_type: &'static str, result: Result<(), &LwaError>) {
        self.totals.add(grant_type, result);
        // `fault`: no LWA error code (a transport error, a 5xx without LWA's body, a malformed
        // answer).
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => e.code().unwrap_or("fault"),
        };
        let hour = self.clock.now_ms().div_euclid(HOUR_MS) * HOUR_MS;
        let mut hours = self.hours.lock();
        if hours.back().is_none_or(|(h, _)| *h < hour) {
            hours.push_back((hour, HourCounts::new()));
            while hours.len() > KEPT_HOURS {
                hours.pop_front();
            }
        }
        // A call from a clock that went back lands in its own hour if kept, else is dropped.
        if let Some((_, counts)) = hours.iter_mut().rev().find(|(h, _)| *h == hour) {
            *counts.entry((grant_type, outcome.to_owned())).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwa::ManualClock;

    #[test]
    fn counts_by_hour_grant_and_outcome() {
        let clock = Arc::new(ManualClock::at(10 * HOUR_MS + 5));
        let log = LwaCallLog::new(clock.clone());
        log.lwa_call("refresh_token", Ok(()));
        log.lwa_call("refresh_token", Ok(()));
        clock.advance(std::time::Duration::from_millis(HOUR_MS as u64));
        let refused = LwaError::Reauthorize {
            code: "invalid_grant".into(),
            description: "revoked".into(),
        };
        log.lwa_call("refresh_token", Err(&refused));
        log.lwa_call("no_such_grant", Ok(()));
        let hours = log.last_24_hours(clock.now_ms());
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[23].0, 11 * HOUR_MS);
        assert_eq!(hours[23].1[&("refresh_token", "invalid_grant".to_owned())], 1);
        assert_eq!(hours[22].1[&("refresh_token", "ok".to_owned())], 2);
        assert!(hours[0].1.is_empty());
        // The same calls since the start, by class, for `/metrics`.
        use crate::metrics::Grant;
        assert_eq!(log.totals.get(Grant::RefreshToken, "ok"), 2);
        assert_eq!(log.totals.get(Grant::RefreshToken, "reauthorize"), 1);
        assert_eq!(log.totals.get(Grant::ClientCredentials, "ok"), 0);
    }
}

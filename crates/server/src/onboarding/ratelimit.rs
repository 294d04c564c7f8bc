//! A sliding-window limit per client address: at most `limit` requests in any `window_ms`.
//! The seed's rule is "5 requests in 10 seconds per IP"; a token bucket would let a burst
//! through after a pause that this exact window refuses.
//!
//! Per replica: each server process counts on its own (documented in the README).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use parking_lot::Mutex;

/// The limiter.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    window_ms: i64,
    hits: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

impl SlidingWindow {
    /// `limit` requests per `window_ms`.
    pub fn new(limit: usize, window_ms: i64) -> SlidingWindow {
        SlidingWindow {
            limit,
            window_ms,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records a request at `now_ms`; `Err(retry_after_seconds)` when over the limit (a refused
    /// request is not counted).
    pub fn check(&self, client: IpAddr, now_ms: i64) -> Result<(), u64> {
        let mut hits = self.hits.lock();
        if hits.len() > 10_000 {
            hits.retain(|_, q| q.back().is_some_and(|t| now_ms - t < self.window_ms));
        }
        let queue = hits.entry(client).or_default();
        while queue.front().is_some_and(|t| now_ms - t >= self.window_ms) {
            queue.pop_front();
        }
        if queue.len() >= self.limit {
            let oldest = *queue.front().expect("non-empty at the limit");
            let wait_ms = self.window_ms - (now_ms - oldest);
            return Err(((wait_ms + 999) / 1000).max(1) as u64);
        }
        queue.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_in_ten_seconds_per_address() {
        let limiter = SlidingWindow::new(5, 10_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..5 {
            assert!(limiter.check(a, i * 1000).is_ok());
        }
        assert_eq!(limiter.check(a, 5_000), Err(5));
        assert!(limiter.check(b, 5_000).is_ok());
        assert!(limiter.check(a, 10_000).is_ok(), "the first hit left the window");
        assert!(limiter.check(a, 10_500).is_err());
    }
}

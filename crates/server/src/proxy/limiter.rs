//! The proxy's rate limiter: per connection and operation, it learns Amazon's token bucket and
//! spaces calls so that concurrent callers do not earn 429s in the first place.
//!
//! Amazon announces an operation's rate in `x-amzn-RateLimit-Limit` but never its burst, so the
//! limiter finds the burst the way TCP finds a window (slow start):
//! - A key (connection, host, operation) starts unknown: its first call goes alone, as a probe,
//!   and the others wait for its answer.
//! - An answer with `x-amzn-RateLimit-Limit: r` gives the key a bucket refilled at `r` a second
//!   whose capacity starts at one call. While no 429 has been seen, one call at a time may go
//!   beyond the bucket ("extra"): if Amazon accepts it the capacity grows by one, if Amazon
//!   answers 429 the capacity is known. So sequential calls never wait for a burst Amazon
//!   allows, and concurrent callers cost Amazon at most one 429 to find it.
//! - Calls beyond the bucket take turns in order, one every `1/r` seconds.
//! - A 2xx, 400 or 404 without the header (Ads) leaves the key unlimited but for 429s; after
//!   other answers (which never carry it) the next call probes again.
//! - A 429 holds the key until its `Retry-After` (or one interval) has passed.
//! - A caller whose turn would come after its deadline is told at once how long it would have
//!   waited, rather than waiting in vain.
//!
//! The limiter lives in one process. With several replicas each one keeps its own buckets, so
//! the replicas together may send up to N times the learned rate for one connection and
//! operation; the 429s that causes teach each replica the smaller capacity, and are retried
//! within the request's budget like any other.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The most calls per second the limiter believes (larger values mean no spacing).
const MAX_RATE: f64 = 100_000.0;
/// The fewest (one call in about three hours): smaller values are taken as this.
const MIN_RATE: f64 = 1e-4;
/// Keys kept at most; past it, new keys go unlimited (idle ones are dropped once a minute).
const MAX_KEYS: usize = 100_000;
/// How long a key's first call keeps the others waiting before they go anyway.
const PROBE_EXCLUSIVE: Duration = Duration::from_secs(1);
/// How often a caller waiting on a probe looks again.
const PROBE_POLL: Duration = Duration::from_millis(10);
/// Keys idle longer than this are forgotten when the map grows.
const IDLE: Duration = Duration::from_secs(600);

/// A key: connection, host, operation.
pub type LimitKey = (String, &'static str, String);

#[derive(Debug)]
enum Pace {
    /// No answer seen yet; `Some(since)` while a probe is out.
    Unknown { probing: Option<Instant> },
    /// Amazon's bucket as learned.
    Bucket(Bucket),
    /// Amazon gives no rate here.
    Free,
}

#[derive(Debug)]
struct Bucket {
    /// Calls per second.
    rate: f64,
    /// Calls the bucket holds (learned).
    capacity: f64,
    /// Calls left at `at`; below zero, turns already promised to waiting callers.
    tokens: f64,
    at: Instant,
    /// A 429 has shown the capacity.
    known: bool,
    /// An extra call is out.
    extra_out: bool,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = now;
    }
}

#[derive(Debug)]
struct Slot {
    pace: Pace,
    /// Held (after a 429) until this time.
    held_until: Instant,
    used_at: Instant,
}

/// What one look at a key decided.
enum Step {
    Go(Turn),
    /// Look again at this time (or give up if it is past the deadline).
    At(Instant),
    /// A turn at this time is promised to the caller.
    Reserved(Instant),
}

/// What the limiter said to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Go: the key's first call (report its answer with [`Limiter::learn`]).
    Probe,
    /// Go: beyond the bucket, to find whether Amazon's burst is larger.
    Extra,
    /// Go.
    Go,
}

/// The per-process limiter.
#[derive(Debug)]
pub struct Limiter {
    enabled: bool,
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    map: HashMap<LimitKey, Slot>,
    pruned_at: Instant,
}

/// Gives a promised turn back if its caller goes away before it comes (a dropped request).
struct Promise<'a> {
    limiter: &'a Limiter,
    key: &'a LimitKey,
    kept: bool,
}

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        if !self.kept
            && let Some(Slot {
                pace: Pace::Bucket(bucket),
                ..
            }) = self.limiter.slots.lock().map.get_mut(self.key)
        {
            bucket.tokens = (bucket.tokens + 1.0).min(bucket.capacity);
        }
    }
}

impl Limiter {
    /// A limiter; a disabled one lets every call go at once.
    pub fn new(enabled: bool) -> Limiter {
        Limiter {
            enabled,
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                pruned_at: Instant::now(),
            }),
        }
    }

    /// Whether it limits at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Waits for the key's turn. `Err(wait)` when the turn would come after `deadline`.
    pub async fn acquire(&self, key: &LimitKey, deadline: Instant) -> Result<Turn, Duration> {
        if !self.enabled {
            return Ok(Turn::Go);
        }
        loop {
            let now = Instant::now();
            match self.step(key, now, deadline) {
                Step::Go(turn) => return Ok(turn),
                Step::At(at) if at > deadline => return Err(at - now),
                Step::Reserved(at) => {
                    let mut promise = Promise {
                        limiter: self,
                        key,
                        kept: false,
                    };
                    tokio::time::sleep_until(at).await;
                    promise.kept = true;
                    return Ok(Turn::Go);
                }
                Step::At(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// One look at the key, under the lock.
    fn step(&self, key: &LimitKey, now: Instant, deadline: Instant) -> Step {
        let mut slots = self.slots.lock();
        if slots.map.len() >= MAX_KEYS && now.duration_since(slots.pruned_at) > Duration::from_secs(60) {
            slots.pruned_at = now;
            slots.map.retain(|_, s| now.duration_since(s.used_at) < IDLE);
        }
        if slots.map.len() >= MAX_KEYS && !slots.map.contains_key(key) {
            // Full of keys in use: this one goes unlimited rather than grow the map.
            return Step::Go(Turn::Go);
        }
        if !slots.map.contains_key(key) {
            slots.map.insert(
                key.clone(),
                Slot {
                    pace: Pace::Unknown { probing: None },
                    held_until: now,
                    used_at: now,
                },
            );
        }
        let Some(slot) = slots.map.get_mut(key) else {
            return Step::Go(Turn::Go);
        };
        slot.used_at = now;
        if slot.held_until > now {
            return Step::At(slot.held_until);
        }
        match &mut slot.pace {
            Pace::Unknown { probing: None } => {
                slot.pace = Pace::Unknown { probing: Some(now) };
                Step::Go(Turn::Probe)
            }
            // A slow first call does not hold the others for long.
            Pace::Unknown { probing: Some(since) } if now.duration_since(*since) >= PROBE_EXCLUSIVE => {
                Step::Go(Turn::Go)
            }
            Pace::Unknown { probing: Some(since) } => {
                Step::At((*since + PROBE_EXCLUSIVE).min(now + PROBE_POLL))
            }
            Pace::Free => Step::Go(Turn::Go),
            Pace::Bucket(bucket) => {
                bucket.refill(now);
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return Step::Go(Turn::Go);
                }
                if !bucket.known && !bucket.extra_out && bucket.tokens > -1.0 {
                    bucket.extra_out = true;
                    return Step::Go(Turn::Extra);
                }
                // Promise the next turn: when the bucket will hold one more call.
                let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate);
                let at = now + wait;
                if at > deadline {
                    return Step::At(at);
                }
                bucket.tokens -= 1.0;
                Step::Reserved(at)
            }
        }
    }

    /// Reports Amazon's answer to a call on `key`: the turn it had, its status (0: no answer),
    /// its `x-amzn-RateLimit-Limit` (calls per second) and, on a 429, how long Amazon asked to
    /// wait.
    pub fn learn(
        &self,
        key: &LimitKey,
        turn: Turn,
        status: u16,
        rate: Option<f64>,
        retry_after: Option<Duration>,
    ) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let mut slots = self.slots.lock();
        let Some(slot) = slots.map.get_mut(key) else {
            return;
        };
        let rate = rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| r.clamp(MIN_RATE, MAX_RATE));
        match (&mut slot.pace, rate) {
            (Pace::Bucket(bucket), rate) => {
                bucket.refill(now);
                if let Some(rate) = rate {
                    bucket.rate = rate;
                }
                if turn == Turn::Extra {
                    bucket.extra_out = false;
                    if status == 429 {
                        bucket.known = true;
                    } else if (200..500).contains(&status) {
                        bucket.capacity += 1.0;
                    }
                }
                if status == 429 {
                    bucket.known = true;
                    bucket.tokens = bucket.tokens.min(0.0);
                }
            }
            (pace, Some(rate)) => {
                // The first rate seen: the call that saw it used the bucket's one token.
                *pace = Pace::Bucket(Bucket {
                    rate,
                    capacity: 1.0,
                    tokens: 0.0,
                    at: now,
                    known: status == 429,
                    extra_out: false,
                });
            }
            (Pace::Unknown { .. }, None) if turn == Turn::Probe => {
                // Amazon sends the rate with 2xx, 400 and 404 only: without it on those, there
                // is none to learn; after anything else the next call probes again.
                slot.pace = if matches!(status, 200..=299 | 400 | 404) {
                    Pace::Free
                } else {
                    Pace::Unknown { probing: None }
                };
            }
            _ => {}
        }
        if status == 429 {
            let interval = match &slot.pace {
                Pace::Bucket(bucket) => Duration::from_secs_f64(1.0 / bucket.rate),
                _ => Duration::from_secs(1),
            };
            let hold = retry_after.unwrap_or(interval).max(interval);
            slot.held_until = slot.held_until.max(now + hold);
        }
    }

    /// When the key's next call could leave at the earliest (now if it could at once).
    pub fn ready_at(&self, key: &LimitKey) -> Instant {
        let now = Instant::now();
        if !self.enabled {
            return now;
        }
        let slots = self.slots.lock();
        let Some(slot) = slots.map.get(key) else {
            return now;
        };
        let bucket_at = match &slot.pace {
            Pace::Bucket(bucket) => {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                let tokens = (bucket.tokens + elapsed * bucket.rate).min(bucket.capacity);
                if tokens >= 1.0 {
                    now
                } else {
                    now + Duration::from_secs_f64((1.0 - tokens) / bucket.rate)
                }
            }
            _ => now,
        };
        bucket_at.max(slot.held_until)
    }

    /// Keys the limiter knows (for metrics and tests).
    pub fn len(&self) -> usize {
        self.slots.lock().map.len()
    }

    /// Whether it knows no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LimitKey {
        ("c1".into(), "sellingpartnerapi-na.amazon.com", "getOrder".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_then_slow_start_then_calls_spaced_by_the_rate() {
        let limiter = std::sync::Arc::new(Limiter::new(true));
        let far = Instant::now() + Duration::from_secs(600);
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Probe));
        // A second caller waits for the probe's answer.
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(&key(), far).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        limiter.learn(&key(), Turn::Probe, 200, Some(2.0), None);
        // Amazon's burst is unknown: one extra call at a time finds it.
        let turn = waiting.await.unwrap().unwrap();
        assert_eq!(turn, Turn::Extra);
        let t0 = Instant::now();
        // While the extra call is out, others take turns at the rate.
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Go));
        assert!(Instant::now() - t0 >= Duration::from_millis(400));
        limiter.learn(&key(), Turn::Extra, 200, Some(2.0), None);
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Extra));
        // Amazon refuses it: the capacity is known, and calls are spaced by the rate.
        limiter.learn(&key(), Turn::Extra, 429, None, None);
        let mut last = Instant::now();
        for _ in 0..4 {
            assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Go));
            let now = Instant::now();
            assert!(now - last >= Duration::from_millis(490), "{:?}", now - last);
            last = now;
        }
        // A turn past the deadline is refused at once, with the wait it would have cost.
        let soon = Instant::now() + Duration::from_millis(100);
        let wait = limiter.acquire(&key(), soon).await.unwrap_err();
        assert!(wait >= Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_calls_use_the_burst_amazon_allows() {
        let limiter = Limiter::new(true);
        let far = Instant::now() + Duration::from_secs(600);
        let t0 = Instant::now();
        let turn = limiter.acquire(&key(), far).await.unwrap();
        limiter.learn(&key(), turn, 200, Some(0.016), None);
        for _ in 0..14 {
            let turn = limiter.acquire(&key(), far).await.unwrap();
            assert_eq!(turn, Turn::Extra);
            limiter.learn(&key(), turn, 200, Some(0.016), None);
        }
        assert_eq!(Instant::now(), t0, "15 sequential calls never waited");
    }

    #[tokio::test(start_paused = true)]
    async fn no_header_means_free_and_a_429_holds_the_key() {
        let limiter = Limiter::new(true);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Probe));
        limiter.learn(&key(), Turn::Probe, 200, None, None);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Go));
        }
        assert_eq!(Instant::now(), t0);
        limiter.learn(&key(), Turn::Go, 429, None, Some(Duration::from_secs(3)));
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Go));
        assert!(Instant::now() - t0 >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_goes_away_gives_its_turn_back_and_tiny_rates_do_not_overflow() {
        let limiter = std::sync::Arc::new(Limiter::new(true));
        let far = Instant::now() + Duration::from_secs(600);
        let turn = limiter.acquire(&key(), far).await.unwrap();
        limiter.learn(&key(), turn, 200, Some(1.0), None);
        limiter.learn(&key(), Turn::Extra, 429, None, None);
        // Three callers wait their turns; two go away.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let limiter = limiter.clone();
            waiting.push(tokio::spawn(async move { limiter.acquire(&key(), far).await }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting[1].abort();
        waiting[2].abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t0 = Instant::now();
        assert!(waiting.remove(0).await.unwrap().is_ok());
        // The next caller waits for one turn after the first, not three.
        assert_eq!(limiter.acquire(&key(), far).await, Ok(Turn::Go));
        assert!(
            Instant::now() - t0 < Duration::from_millis(2_100),
            "{:?}",
            Instant::now() - t0
        );
        // A rate too small to be real is taken as the smallest one.
        limiter.learn(&key(), Turn::Go, 200, Some(1e-300), None);
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(limiter.acquire(&key(), soon).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_never_waits() {
        let limiter = Limiter::new(false);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.acquire(&key(), t0).await, Ok(Turn::Go));
            limiter.learn(&key(), Turn::Go, 429, Some(1.0), Some(Duration::from_secs(5)));
        }
        assert_eq!(Instant::now(), t0);
        assert!(limiter.is_empty());
    }
}

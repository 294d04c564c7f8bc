//! Time, injectable: expiry and backoff read a [`Clock`], so tests move time instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, as milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch.
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now_ms()
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// A clock that stands still until moved: the system time at creation plus whatever
/// [`ManualClock::advance`] added.
///
/// ```
/// use lwa::{Clock, ManualClock};
/// let clock = ManualClock::at(1_000_000);
/// clock.advance(std::time::Duration::from_secs(60));
/// assert_eq!(clock.now_ms(), 1_060_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms` milliseconds since the epoch.
    pub fn at(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    /// A clock reading the current system time, then standing still.
    pub fn now() -> Self {
        Self::at(system_now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock that follows `fake-amazon`'s clock: system time plus the offset the fake's control
/// API (`/__fake/clock`) reports. One `POST /__fake/clock/advance` then moves time for the fake
/// and for every process that follows it.
///
/// [`FakeAmazonClock::follow`] reads the offset once and keeps reading it in the background
/// every 100 ms; [`FakeAmazonClock::sync`] reads it at once (tests call it right after moving
/// the fake's clock).
#[derive(Clone)]
pub struct FakeAmazonClock {
    offset_ms: Arc<AtomicI64>,
    url: Arc<str>,
    http: reqwest::Client,
}

impl fmt::Debug for FakeAmazonClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeAmazonClock")
            .field("url", &self.url)
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish()
    }
}

/// The fake's clock could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the fake Amazon clock at {url}: {reason}")]
pub struct ClockSyncError {
    url: String,
    reason: String,
}

impl FakeAmazonClock {
    /// Reads the clock of the fake at `base_url` (e.g. `http://127.0.0.1:8900`) and keeps
    /// following it from a background task on the current tokio runtime.
    pub async fn follow(base_url: &str) -> Result<Self, ClockSyncError> {
        let clock = Self::once(base_url).await?;
        let background = clock.clone();
        let weak = Arc::downgrade(&clock.offset_ms);
        tokio::spawn(async move {
            while weak.strong_count() > 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = background.sync().await;
            }
        });
        Ok(clock)
    }

    /// Reads the clock of the fake once, without following it afterwards (for short-lived
    /// processes such as one CLI command).
    pub async fn once(base_url: &str) -> Result<Self, ClockSyncError> {
        let clock = Self {
            offset_ms: Arc::new(AtomicI64::new(0)),
            url: format!("{}/__fake/clock", base_url.trim_end_matches('/')).into(),
            http: reqwest::Client::new(),
        };
        clock.sync().await?;
        Ok(clock)
    }

    /// Reads the fake's offset now.
    pub async fn sync(&self) -> Result<(), ClockSyncError> {
        #[derive(serde::Deserialize)]
        struct Reading {
            offset_ms: i64,
        }
        let error = |reason: String| ClockSyncError {
            url: self.url.to_string(),
            reason,
        };
        let reading: Reading = self
            .http
            .get(&*self.url)
            .send()
            .await
            .map_err(|e| error(e.to_string()))?
            .error_for_status()
            .map_err(|e| error(e.to_string()))?
            .json()
            .await
            .map_err(|e| error(e.to_string()))?;
        // The fake runs on this machine's clock plus an offset; following the offset (rather
        // than its reading of "now") keeps both clocks exactly in step.
        self.offset_ms.store(reading.offset_ms, Ordering::SeqCst);
        Ok(())
    }
}

impl Clock for FakeAmazonClock {
    fn now_ms(&self) -> i64 {
        system_now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }
}

//! The fake's clock: system time plus an offset the control API moves forward.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::ClockState;

/// The largest offset, either way: about 3000 years.
pub const MAX_OFFSET_MS: i64 = 100_000_000_000_000;

/// System time plus an adjustable offset. Everything time-based in the fake reads this.
#[derive(Debug, Default)]
pub struct FakeClock {
    offset_ms: AtomicI64,
}

impl FakeClock {
    /// Fake now, ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        system.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock by `seconds` (may be fractional; negative moves it back). The offset is
    /// kept within ±[`MAX_OFFSET_MS`] so that time arithmetic never overflows.
    pub fn advance(&self, seconds: f64) {
        let ms = (seconds * 1000.0).round();
        let ms = if ms.is_finite() {
            ms.clamp(-(MAX_OFFSET_MS as f64), MAX_OFFSET_MS as f64) as i64
        } else {
            0
        };
        let _ = self
            .offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old.saturating_add(ms).clamp(-MAX_OFFSET_MS, MAX_OFFSET_MS))
            });
    }

    /// Now and the offset.
    pub fn state(&self) -> ClockState {
        ClockState {
            now_ms: self.now_ms(),
            offset_ms: self.offset_ms.load(Ordering::Relaxed),
        }
    }
}

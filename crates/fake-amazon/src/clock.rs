//! The fake's clock: system time plus an offset the control API moves forward.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::ClockState;

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

    /// Moves the clock by `seconds` (may be fractional; negative moves it back).
    pub fn advance(&self, seconds: f64) {
        let ms = (seconds * 1000.0).round();
        let ms = if ms.is_finite() {
            ms.clamp(i64::MIN as f64 / 4.0, i64::MAX as f64 / 4.0) as i64
        } else {
            0
        };
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Now and the offset.
    pub fn state(&self) -> ClockState {
        ClockState {
            now_ms: self.now_ms(),
            offset_ms: self.offset_ms.load(Ordering::Relaxed),
        }
    }
}

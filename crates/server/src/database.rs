//! Whether the database is reachable, as this process last saw it.
//!
//! While PostgreSQL (or the SQLite file) is unreachable, every call that needs it waits for the
//! pool's acquire timeout (5 s) and fails; requests that need it answer 503
//! `database_unavailable`. What can be served from memory should not wait that long each
//! time: once a read of an API key has failed, [`crate::state::AppState::api_key`] accepts the
//! key it read last (up to [`crate::state::KEY_STALE_MAX_MS`] old) at once, and a background
//! ping, at most one at a time and one every [`PROBE_EVERY`], notices when the database is
//! back. No revocation can be written while the database is unreachable, so the keys accepted
//! meanwhile are the ones the database held when it went away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lwa_store::Store;
use parking_lot::Mutex;

/// How often, at most, an unreachable database is pinged.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// This process's view of the database's reachability. See the module docs.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    down: AtomicBool,
    probing: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
}

impl DatabaseHealth {
    /// Whether the last read that decides it failed (and no ping has succeeded since).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// A read failed: the database is taken as unreachable until a read or a ping succeeds.
    pub fn mark_down(&self, cause: &dyn std::fmt::Display) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %cause, "the database is unreachable; serving what is held in memory");
        }
    }

    /// A read or a ping succeeded.
    pub fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("the database answers again");
        }
    }

    /// Pings the database in the background, unless a ping is running or ran less than
    /// [`PROBE_EVERY`] ago; marks it up when the ping succeeds.
    pub fn probe(self: &Arc<Self>, store: &Arc<dyn Store>) {
        {
            let mut last = self.last_probe.lock();
            if last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
                return;
            }
            if self.probing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (health, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            if store.ping().await.is_ok() {
                health.mark_up();
            }
            health.probing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_successful_ping_marks_the_database_up_and_pings_are_spaced() {
        let store: Arc<dyn Store> = Arc::new(
            lwa_store::SqliteStore::connect_and_migrate("sqlite::memory:")
                .await
                .unwrap(),
        );
        let health = Arc::new(DatabaseHealth::default());
        assert!(!health.is_down());
        health.mark_down(&"connection refused");
        assert!(health.is_down());
        health.probe(&store);
        for _ in 0..100 {
            if !health.is_down() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!health.is_down(), "the ping succeeded");
        // Down again at once: the next ping waits for its turn.
        health.mark_down(&"connection refused");
        health.probe(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(health.is_down(), "no second ping within PROBE_EVERY");
    }
}

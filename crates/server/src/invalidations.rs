//! Cache coherence across processes. Each server caches API keys and connections (status,
//! tokens) so that a vend makes no database query; a change made by another process — another
//! replica, the CLI — must still reach those caches at once. The database's triggers write an
//! [`Invalidation`] row with every such change (a key revoked, a connection disconnected,
//! deleted or re-authorized, a tenant changed; see `migrations/*/0007_invalidations.sql`), and
//! every server polls past the last one it has seen every [`POLL_INTERVAL`], dropping what they
//! name from its caches. The next request reads the database again.
//!
//! The same loop deletes, every [`PURGE_EVERY`] and once at start, the invalidations older than
//! an hour and the expired one-time values (OAuth states, connect links, claim codes, ended
//! dashboard sessions: [`lwa_store::Store::purge_expired`]).
//!
//! The caches' own lifetimes ([`crate::state::KEY_CACHE_MS`], [`crate::vend::REVALIDATE_MS`])
//! stay as a backstop: a request that read the row just before the change and fills the cache
//! just after the poll keeps the old state until then.

use std::time::Duration;

use lwa_store::{Invalidation, InvalidationKind};

use crate::state::AppState;

/// How often each server reads new invalidations: a change shows everywhere within about this
/// long (one small indexed query per interval, whatever the traffic).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Invalidations are kept this long (a server only needs those after it started).
const KEEP_MS: i64 = 3_600_000;
/// How often the old invalidations and the expired one-time values are deleted (by whichever
/// servers run; deletes are idempotent).
pub const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Rows read per query; a longer backlog is read in several, without waiting.
const BATCH: u32 = 1000;

/// Drops from this process's caches what the invalidation names.
pub fn apply(state: &AppState, invalidation: &Invalidation) {
    match invalidation.kind {
        InvalidationKind::ApiKey => state.forget_key(&invalidation.subject),
        InvalidationKind::Tenant => state.forget_tenant_keys(&invalidation.subject),
        InvalidationKind::Connection => state.vendor.forget(&invalidation.subject),
    }
}

/// Starts the poller: from the newest invalidation now (the caches are empty at start, so
/// nothing older concerns them). Stops when the task is aborted.
pub async fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let start = match state.store.last_invalidation().await {
        Ok(seq) => seq,
        Err(e) => {
            // From the beginning then: re-applying an old invalidation only costs a read.
            tracing::warn!(error = %e, "could not read the newest invalidation; reading them all");
            0
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        let mut cursor = start;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<tokio::time::Instant> = None;
        let mut failing = false;
        loop {
            tick.tick().await;
            loop {
                match state.store.invalidations_after(cursor, BATCH).await {
                    Ok(batch) => {
                        if failing {
                            tracing::info!("reading invalidations again");
                            failing = false;
                        }
                        for invalidation in &batch {
                            apply(&state, invalidation);
                            cursor = cursor.max(invalidation.seq);
                        }
                        if batch.len() < BATCH as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "could not read invalidations; will retry");
                            failing = true;
                        }
                        break;
                    }
                }
            }
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                last_purge = Some(tokio::time::Instant::now());
                let wall_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                if let Err(e) = state.store.purge_invalidations(wall_ms - KEEP_MS).await {
                    tracing::warn!(error = %e, "could not delete old invalidations");
                }
                // Their expiry is on the broker's clock.
                match state.store.purge_expired(state.now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "deleted expired one-time values"),
                    Err(e) => tracing::warn!(error = %e, "could not delete expired one-time values"),
                }
            }
        }
    })
}

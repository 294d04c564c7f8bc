//! The background refresher: keeps every connection the broker can open fresh by itself, so
//! that a vend rarely waits for Amazon, and looks after what ages: Ads profiles (re-read daily),
//! SP-API authorizations nearing 365 days (`connection.refresh_token_expiring` at 30 and 7
//! days) and apps' client secrets nearing Amazon's 180-day deadline
//! (`app.client_secret_expiring`, see [`crate::apps::due_secret_warnings`]).
//!
//! **Schedule:** each connection's next refresh is a column beside it (`next_refresh_at_ms`),
//! set by every refresh to when the new token enters its buffer, plus a little jitter (see
//! [`crate::vend::next_refresh_at`]): one LWA call per connection per `lifetime − buffer`, never
//! sooner. Tokens first seen inside their buffer are spread over three buffers, and tokens that
//! fall due together are paced by the budget, so a migration or a restart does not reach
//! Amazon in one burst. Time is the broker's clock; a test moves it and calls
//! [`Refresher::run_once`].
//!
//! **Sharing:** a due connection is refreshed through the vend cache's single flight, so a
//! refresh a vend already started is joined, never repeated; a fresh token another process
//! stored only moves the schedule.
//!
//! **Limits:** at most `concurrency` refreshes in flight, and per app at most
//! `budget_per_second` LWA calls a second, paced evenly (measured on the monotonic clock: it is
//! Amazon's rate, not the schedule's). Failures back off exponentially in the database
//! ([`crate::vend::backoff_ms`]), where vends see the same backoff.
//!
//! **Invariant:** connections sealed under a tenant-held secret are never selected: the broker
//! cannot open them, so they are refreshed on demand only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use lwa::Api;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::config::RefresherSettings;
use crate::state::AppState;
use crate::vend::{Budget, OwnClaim, VendError};
use crate::webhooks::{self, EventType};

/// How often the loop in `serve` looks for due work (real time).
pub const TICK: Duration = Duration::from_secs(1);
/// Ads profiles are re-read this often.
pub const PROFILES_EVERY_MS: i64 = 24 * 3_600_000;
const DAY_MS: i64 = 24 * 3_600_000;
/// Published SP-API authorizations last this long (AMAZON.md §3.7).
pub const AUTHORIZATION_LIFETIME_MS: i64 = 365 * DAY_MS;
/// `connection.refresh_token_expiring` goes out when this many days are left, once each.
pub const EXPIRY_NOTICE_DAYS: [i64; 2] = [30, 7];
/// Due connections claimed per query, at most.
const PAGE: u32 = 500;
/// How long a claimed connection is left to this process: another process (or this one after
/// a restart) takes it again only after this, so pages are sized to be done well within it.
pub const LEASE_MS: i64 = 120_000;
/// Profile checks and notices handled per pass (the rest wait for the next one).
const SIDE_WORK_PER_RUN: u32 = 200;
/// Profiles and notices are looked at most this often (broker clock): they age in days.
const SIDE_WORK_EVERY_MS: i64 = 60_000;

/// What one [`Refresher::run_once`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    /// Connections that were due.
    pub due: usize,
    /// Due connections that now hold a fresh token (refreshed, or found fresh).
    pub fresh: usize,
    /// Due connections whose refresh failed (and now back off).
    pub failed: usize,
    /// Due connections LWA refused (`invalid_grant`): now `needs_reauth`.
    pub needs_reauth: usize,
    /// Ads connections whose profiles were re-read.
    pub profiles_read: usize,
    /// `connection.refresh_token_expiring` notices recorded.
    pub expiry_notices: usize,
    /// `app.client_secret_expiring` warnings given (30 and 7 days before Amazon's 180-day
    /// rotation deadline).
    pub secret_warnings: usize,
}

/// Paces one app's LWA calls at most `per_second`, evenly.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// Calls are spaced 2% wider than `1 / per_second`, so that jitter on the way to Amazon
    /// cannot put one call too many into any second.
    fn new(per_second: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.02 / per_second),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock();
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.interval;
            slot
        };
        // A slot already due costs no trip through the timer (which would round up to its tick).
        if slot > tokio::time::Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

/// The background refresher; one per server process.
#[derive(Debug)]
pub struct Refresher {
    settings: RefresherSettings,
    pacers: Mutex<HashMap<String, Arc<Pacer>>>,
    stopping: AtomicBool,
    wake: Notify,
    /// When profiles and notices were last looked at (0: never).
    side_work_at_ms: AtomicI64,
}

impl Refresher {
    /// A refresher with these limits.
    pub fn new(settings: RefresherSettings) -> Refresher {
        Refresher {
            settings,
            pacers: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            side_work_at_ms: AtomicI64::new(0),
        }
    }

    /// The limits it runs with.
    pub fn settings(&self) -> RefresherSettings {
        self.settings
    }

    fn budget(&self, app: &str) -> Budget {
        let pacer = self
            .pacers
            .lock()
            .entry(app.to_owned())
            .or_insert_with(|| Arc::new(Pacer::new(self.settings.budget_per_second)))
            .clone();
        Arc::new(move || {
            let pacer = pacer.clone();
            Box::pin(async move { pacer.wait().await })
        })
    }

    /// One pass: refreshes every connection due at the clock's now (in due order, within the
    /// limits), then — at most once a minute of the broker's clock — re-reads due Ads profiles
    /// and records due expiry notices. Returns when all of it is done.
    pub async fn run_once(&self, state: &AppState) -> RunReport {
        let mut report = RunReport::default();
        let now = state.now_ms();
        self.refresh_due(state, now, &mut report).await;
        if self.side_work_due(now) {
            self.side_work(state, now, &mut report).await;
        }
        report
    }

    /// Whether profiles and notices are due at `now`; claims them if so.
    fn side_work_due(&self, now: i64) -> bool {
        let last = self.side_work_at_ms.load(Ordering::Relaxed);
        !(last != 0 && now - last < SIDE_WORK_EVERY_MS)
            && self
                .side_work_at_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Ads profiles, authorizations nearing a year, client secrets nearing 180 days.
    async fn side_work(&self, state: &AppState, now: i64, report: &mut RunReport) {
        if let Err(e) = self.read_profiles(state, now, report).await {
            tracing::warn!(error = ?e, "re-reading Ads profiles failed");
        }
        if let Err(e) = self.expiry_notices(state, now, report).await {
            tracing::warn!(error = ?e, "checking authorizations nearing 365 days failed");
        }
        match crate::apps::due_secret_warnings(state).await {
            Ok(warnings) => {
                report.secret_warnings = warnings.len();
                if !warnings.is_empty() {
                    state.webhooks.wake();
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking client secrets' age failed"),
        }
    }

    /// Connections claimed per query: enough to keep every permit busy, few enough that the
    /// budget gets through them in half a lease.
    fn page(&self) -> u32 {
        let by_budget = self.settings.budget_per_second * (LEASE_MS / 2_000) as f64;
        (self.settings.concurrency as u32 * 2)
            .min(by_budget as u32)
            .clamp(1, PAGE)
    }

    async fn refresh_due(&self, state: &AppState, now: i64, report: &mut RunReport) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks: JoinSet<Result<(), VendError>> = JoinSet::new();
        let tally = |report: &mut RunReport, done: Result<Result<(), VendError>, tokio::task::JoinError>| {
            match done {
                Ok(Ok(())) => report.fresh += 1,
                Ok(Err(VendError::NeedsReauth)) => report.needs_reauth += 1,
                Ok(Err(VendError::Disconnected | VendError::NotFound | VendError::Forbidden)) => {}
                Ok(Err(_)) | Err(_) => report.failed += 1,
            }
        };
        while !self.stopping.load(Ordering::Relaxed) {
            // Claimed rows leave the due set (their lease is in the future), so this ends.
            let page = match state.store.claim_due_refreshes(now, LEASE_MS, self.page()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "the refresher could not read due connections");
                    break;
                }
            };
            if page.is_empty() {
                break;
            }
            // Noted at once, so a vend here that meets these leases refreshes under them.
            let page: Vec<_> = page
                .into_iter()
                .map(|due| {
                    let claim = OwnClaim::new(state, &due.id, due.schedule.refresh_lease_until_ms);
                    (due, claim)
                })
                .collect();
            for (due, claim) in page {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                while let Some(done) = tasks.try_join_next() {
                    tally(report, done);
                }
                report.due += 1;
                let budget = self.budget(&due.app);
                let state = state.clone();
                tasks.spawn(async move {
                    let (_permit, _claim) = (permit, claim);
                    if let Some(expires) = due.connection.access_expires_at_ms {
                        let entered_buffer = expires - state.vendor.buffer_ms();
                        state.metrics.refresh_lag(state.now_ms() - entered_buffer);
                    }
                    state
                        .vendor
                        .refresh_due(
                            &state,
                            &due.id,
                            Some((due.connection, due.schedule)),
                            Some(budget),
                        )
                        .await
                        .map(|_| ())
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(report, done);
        }
    }

    async fn read_profiles(
        &self,
        state: &AppState,
        now: i64,
        report: &mut RunReport,
    ) -> Result<(), VendError> {
        for id in state.store.due_profile_checks(now, SIDE_WORK_PER_RUN).await? {
            let Some((row, schedule)) = state.store.connection_with_schedule(&id).await? else {
                continue;
            };
            // Spread over an hour, so connections authorized together are not read together.
            let next = |from: i64| from + PROFILES_EVERY_MS + rand::random_range(0..3_600_000);
            if schedule.profiles_check_at_ms == 0 {
                // Just authorized (the callback read them): the first re-read is a day later.
                state
                    .store
                    .set_profiles(&id, None, next(row.authorized_at_ms.max(now - DAY_MS)), now)
                    .await?;
                continue;
            }
            let app = match state.app(&row.app) {
                Some(app) if app.kind == Api::Ads => app.clone(),
                _ => {
                    state.store.set_profiles(&id, None, next(now), now).await?;
                    continue;
                }
            };
            let token = match state
                .vendor
                .access_token(state, &row.tenant_id, &id, None, true)
                .await
            {
                Ok(token) => token,
                Err(e) => {
                    tracing::info!(connection = %id, error = ?e, "no token to re-read Ads profiles with; trying again in an hour");
                    state.store.set_profiles(&id, None, now + 3_600_000, now).await?;
                    continue;
                }
            };
            match crate::onboarding::callback::read_ads_profiles(state, &app, token.token.expose(), true)
                .await
            {
                Some(profiles) => {
                    let text = Value::to_string(&profiles);
                    state.store.set_profiles(&id, Some(&text), next(now), now).await?;
                    report.profiles_read += 1;
                }
                None => {
                    state.store.set_profiles(&id, None, now + 3_600_000, now).await?;
                }
            }
        }
        Ok(())
    }

    async fn expiry_notices(
        &self,
        state: &AppState,
        now: i64,
        report: &mut RunReport,
    ) -> Result<(), VendError> {
        // The 7-day notice first, so an authorization first seen inside 7 days gets only it.
        for days in [EXPIRY_NOTICE_DAYS[1], EXPIRY_NOTICE_DAYS[0]] {
            let authorized_before = now - (AUTHORIZATION_LIFETIME_MS - days * DAY_MS);
            let rows = state
                .store
                .expiring_authorizations(authorized_before, days, SIDE_WORK_PER_RUN)
                .await?;
            for row in rows {
                // Apps without notices (draft, self-authorized) are only marked, so they are
                // not looked at again.
                let wanted = state.app(&row.app).is_some_and(|a| a.expiry_notices);
                let expires_at_ms = row.authorized_at_ms + AUTHORIZATION_LIFETIME_MS;
                let days_left = (expires_at_ms - now).div_euclid(DAY_MS).max(0);
                let events = if wanted {
                    tracing::info!(
                        connection = %row.id,
                        days_left,
                        "authorization nears 365 days: the seller must authorize again"
                    );
                    webhooks::connection_event(
                        state,
                        EventType::ConnectionRefreshTokenExpiring,
                        &row,
                        json!({
                            "days_left": days_left,
                            "notice_days": days,
                            "authorized_at": crate::time::rfc3339(row.authorized_at_ms),
                            "expires_at": crate::time::rfc3339(expires_at_ms),
                        }),
                    )
                } else {
                    Vec::new()
                };
                if state
                    .store
                    .set_expiry_notice(&row.id, row.authorized_at_ms, days, &events)
                    .await?
                    && wanted
                {
                    report.expiry_notices += 1;
                    state.webhooks.wake();
                }
            }
        }
        Ok(())
    }

    /// Runs [`Refresher::run_once`]'s work every [`TICK`] until [`Refresher::stop`]: the
    /// refresh pass in this loop, the slower side work (profiles, notices) in a task of its
    /// own, so Amazon's Ads hosts being slow never holds refreshes back.
    pub fn spawn(self: &Arc<Self>, state: AppState) -> tokio::task::JoinHandle<()> {
        let refresher = self.clone();
        let side_running = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while !refresher.stopping.load(Ordering::Relaxed) {
                let now = state.now_ms();
                let mut report = RunReport::default();
                refresher.refresh_due(&state, now, &mut report).await;
                if report.due > 0 {
                    tracing::debug!(?report, "background refresh pass");
                }
                if !side_running.load(Ordering::Acquire) && refresher.side_work_due(now) {
                    side_running.store(true, Ordering::Release);
                    let (refresher, state, running) =
                        (refresher.clone(), state.clone(), side_running.clone());
                    tokio::spawn(async move {
                        let mut report = RunReport::default();
                        refresher.side_work(&state, now, &mut report).await;
                        running.store(false, Ordering::Release);
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = refresher.wake.notified() => {}
                }
            }
        })
    }

    /// Asks the loop to stop after the refreshes in flight.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

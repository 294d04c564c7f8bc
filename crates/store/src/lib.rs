//! lwa-broker's storage: the [`Store`] interface the server is written against, and its two
//! backends: [`SqliteStore`] (one file, one process) and [`PgStore`] (PostgreSQL, shared by
//! several replicas). Each has its own migrations (`migrations/sqlite/`, `migrations/postgres/`)
//! with the same tables and columns, and the same behaviour; one test suite
//! (`tests/store/`) runs against both.
//!
//! **Invariant:** this crate stores only what it is given: sealed values and hashes. It has no
//! key and cannot open a token.
//!
//! **Invariant:** every "take" (`take_oauth_state`, `take_connect_link`, `take_claim_code`) is
//! atomic: of two concurrent takers at most one gets the record.
//!
//! **Invariant:** every claim of work (`claim_due_refreshes`, `claim_deliveries`) leases what it
//! hands out in the statement that picks it: two processes on one database never get the same
//! connection or delivery until the lease runs out.

#[macro_use]
mod columns;
pub mod copy;
pub mod model;
pub mod postgres;
pub mod sealed;
pub mod sqlite;

pub use model::*;
pub use postgres::PgStore;
pub use sealed::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// A database URL as messages and logs show it: no credentials (`postgres://***@host/db`) and no
/// query (`?…`), which may carry a password too. The credentials end at the last `@`, so a
/// password holding `/`, `?` or `@` is hidden whole (and a `@` in the query hides the host too:
/// less shown, nothing leaked). At most 200 characters.
///
/// ```
/// use lwa_store::redact_url;
/// assert_eq!(redact_url("postgres://u:pw@db/x"), "postgres://***@db/x");
/// assert_eq!(redact_url("postgres:u:pw@db/x"), "postgres:***@db/x");
/// assert_eq!(redact_url("postgres://u:pa/s?s@db/x"), "postgres://***@db/x");
/// assert_eq!(redact_url("postgres://db/x?user=u&password=pw"), "postgres://db/x?…");
/// assert_eq!(redact_url("sqlite:broker.db"), "sqlite:broker.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (credentials_hidden, rest) = match url.rfind('@') {
        Some(at) => {
            let start = url
                .find("://")
                .map(|i| i + 3)
                .or_else(|| url.find(':').map(|i| i + 1))
                .filter(|start| *start <= at)
                .unwrap_or(0);
            (format!("{}***", &url[..start]), &url[at..])
        }
        None => (String::new(), url),
    };
    let shown = match rest.split_once('?') {
        Some((base, _)) => format!("{credentials_hidden}{base}?…"),
        None => format!("{credentials_hidden}{rest}"),
    };
    shown.chars().take(200).collect()
}

/// How long a refresh lease lasts: longer than one refresh with the library's retries, short
/// enough that a replica that died holding one delays others little.
pub const REFRESH_LEASE_MS: i64 = 30_000;

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (an id collision, a second tenant with the same id, …).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database URL is not one this backend understands.
    #[error("{0}")]
    BadUrl(String),
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file outside the database could not be used (creating the database file, a backup
    /// target that already exists, …).
    #[error("I/O error: {0}")]
    Io(String),
}

/// A `LIKE … ESCAPE '\\'` pattern matching text that contains `needle` (lowercased), with
/// `%`, `_` and the backslash escaped; for [`ConnectionFilter::search`].
pub(crate) fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for ch in needle.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// The storage interface. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether every migration this build knows has been applied (`/readyz`).
    async fn schema_current(&self) -> Result<bool, StoreError>;
    /// Pending webhook deliveries: how many, and when the oldest was created (`/metrics`).
    async fn webhook_backlog(&self) -> Result<(i64, Option<i64>), StoreError>;

    // --- meta (key check value, schema facts) ---
    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError>;

    // --- tenants ---
    /// Fails with `Conflict` when the id exists.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// All tenants, oldest first; ties in insertion order.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Replaces every field but `id` and `created_at_ms`; false when unknown.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<bool, StoreError>;

    // --- API keys ---
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// A tenant's keys, oldest first (ties in insertion order), revoked ones included.
    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, StoreError>;
    /// Sets `revoked_at_ms` if not yet revoked; false when unknown or already revoked.
    async fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Records a use (may be coalesced by the caller).
    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    // --- authorizations in flight ---
    async fn insert_oauth_state(&self, state: &OAuthState) -> Result<(), StoreError>;
    /// Atomically marks the state used (`used_at_ms = now_ms`) and returns it as it was before
    /// (so the caller sees `used_at_ms: None`); `None` if unknown or already used. Expiry is
    /// the caller's check. Also erases its sealed `token_secret` and `code_verifier` columns in
    /// the database (the returned record still carries them).
    async fn take_oauth_state(&self, state_hash: &str, now_ms: i64)
    -> Result<Option<OAuthState>, StoreError>;
    /// The state without taking it (for error pages: whose tenant, where to send errors).
    async fn oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>, StoreError>;

    async fn insert_connect_link(&self, link: &ConnectLink) -> Result<(), StoreError>;
    /// Same contract as `take_oauth_state`; erases `token_secret` in the database.
    async fn take_connect_link(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ConnectLink>, StoreError>;

    // --- connections ---
    /// Fails with `Conflict` when the id exists.
    async fn insert_connection(&self, connection: &Connection) -> Result<(), StoreError>;
    async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;
    /// The connection of this selling partner for this tenant, app and region, if any
    /// (the newest when several match).
    async fn connection_by_partner(
        &self,
        tenant_id: &str,
        app: &str,
        region: &str,
        selling_partner_id: &str,
    ) -> Result<Option<Connection>, StoreError>;
    /// A page of connections, ordered by id.
    async fn list_connections(&self, filter: &ConnectionFilter) -> Result<Vec<Connection>, StoreError>;
    /// Counts by status for one tenant (or all when `None`): `(status, count)`.
    async fn count_connections(&self, tenant_id: Option<&str>) -> Result<Vec<(String, i64)>, StoreError>;
    /// Counts per tenant: `(tenant_id, count)`, ordered by tenant id; a tenant without
    /// connections is absent.
    async fn count_connections_by_tenant(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// The overview's alerts in one read: active connections with an access token expired at
    /// `now_ms` (how many, the earliest expiry), and up to `limit` active SP-API connections
    /// authorized at or before `authorized_before_ms`, oldest first.
    async fn connection_alerts(
        &self,
        now_ms: i64,
        authorized_before_ms: i64,
        limit: u32,
    ) -> Result<ConnectionAlerts, StoreError>;
    /// Replaces every field but `id`, `tenant_id` and `created_at_ms`; false when unknown.
    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError>;

    /// One transaction: inserts (`is_new`) or updates the connection, inserts the claim
    /// code, and writes `events` to the webhook outbox (`connection.authorized` or
    /// `connection.reauthorized`). All are stored or none.
    async fn save_authorization(
        &self,
        connection: &Connection,
        is_new: bool,
        claim: &ClaimCode,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;

    /// Sets only the tenant-editable fields (`name`, `callback_url`), so a concurrent refresh's
    /// tokens are never overwritten; false when unknown.
    async fn set_connection_details(
        &self,
        id: &str,
        name: Option<&str>,
        callback_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Stores a refresh's tokens (only the token columns, `last_refresh_at_ms`, and
    /// `last_error` cleared), unless the connection was disconnected or its refresh token
    /// replaced (`expected_refresh_token`) meanwhile; false then (or when unknown).
    async fn save_tokens(&self, update: &TokenUpdate) -> Result<bool, StoreError>;
    /// Records a failed refresh: `last_error`, and the new status when given (`needs_reauth`).
    /// Never changes a disconnected connection; false then (or when unknown). `events`
    /// (`connection.needs_reauth`) are written in the same transaction, and only when the
    /// status given is a change: a connection already in it raises nothing again. With
    /// `authorized_at_ms`, only the authorization the refresh started from is touched: a late
    /// `invalid_grant` never marks a connection the seller has just authorized again. Of
    /// concurrent calls (several replicas seeing the same `invalid_grant`), only the first to
    /// change the status writes its events.
    async fn record_refresh_error(
        &self,
        connection_id: &str,
        status: Option<&str>,
        error: &str,
        at_ms: i64,
        events: &[NewEvent],
        authorized_at_ms: Option<i64>,
    ) -> Result<bool, StoreError>;
    /// Writes a disconnected connection (every field but `id`, `tenant_id` and
    /// `created_at_ms`, as [`Store::update_connection`]) and `events`
    /// (`connection.disconnected`) in one transaction; the events only when it was not
    /// disconnected before (of concurrent calls, only the first writes them). False when
    /// unknown.
    async fn disconnect_connection(
        &self,
        connection: &Connection,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;

    // --- audit trail ---
    /// Appends events in one transaction; their `id` is ignored and assigned.
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// Deletes events whose last time is before `before_ms`; returns how many.
    async fn purge_audit_events(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// A page of events, newest first.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    // --- claim codes ---
    /// Same contract as `take_oauth_state`; erases `token_secret` in the database.
    async fn take_claim_code(&self, code_hash: &str, now_ms: i64) -> Result<Option<ClaimCode>, StoreError>;

    /// Deletes states, links, claim codes and ended sessions that expired before `before_ms`;
    /// returns how many.
    async fn purge_expired(&self, before_ms: i64) -> Result<u64, StoreError>;

    // --- dashboard sessions ---
    /// Ends a dashboard session in every process: [`Store::session_ended`] says so from now on,
    /// until [`Store::purge_expired`] deletes it after `expires_at_ms` (the session's own end).
    /// Ending it again is no error.
    async fn end_session(&self, sid: &str, expires_at_ms: i64) -> Result<(), StoreError>;
    /// Whether the dashboard session `sid` was ended by [`Store::end_session`].
    async fn session_ended(&self, sid: &str) -> Result<bool, StoreError>;

    // --- refresh lease (one refresh across processes and replicas) ---
    /// Takes the connection's refresh lease until `until_ms` when nobody holds it at `now_ms`:
    /// of concurrent takers, in any process, one wins. A successful [`Store::save_tokens`] and
    /// [`Store::release_refresh_lease`] end it; a holder that dies lets it run out.
    async fn take_refresh_lease(&self, id: &str, now_ms: i64, until_ms: i64) -> Result<bool, StoreError>;

    /// Ends the connection's refresh lease (a refresh that failed).
    async fn release_refresh_lease(&self, id: &str) -> Result<(), StoreError>;

    /// Ends every refresh lease; how many. Only for a server that is the database's only one
    /// (SQLite), at start: the leases are its own, from before a crash.
    async fn clear_refresh_leases(&self) -> Result<u64, StoreError>;

    // --- invalidations (cache coherence across processes) ---
    /// Invalidations committed after `after_seq`, oldest first, at most `limit` (capped at
    /// 1000). Every change that a cache elsewhere must drop writes one, in its own transaction,
    /// and they become visible in `seq` order, so a reader that polls past the last `seq` it
    /// saw misses none.
    async fn invalidations_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Invalidation>, StoreError>;

    /// The newest invalidation's `seq` (0: none yet): where a process that starts with empty
    /// caches begins polling.
    async fn last_invalidation(&self) -> Result<i64, StoreError>;

    /// Deletes invalidations written before `before_ms` (wall clock); how many.
    async fn purge_invalidations(&self, before_ms: i64) -> Result<u64, StoreError>;

    // --- connection history ---
    /// The connection's newest history entries, newest first, at most `limit` (capped at
    /// [`HISTORY_KEPT`], all that is kept): refreshes, failed refreshes, status changes and
    /// re-authorizations, written by the database itself whichever process made them.
    async fn connection_history(
        &self,
        connection_id: &str,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    // --- background refresher ---
    /// Claims up to `limit` active connections without a tenant-held secret whose refresh is due
    /// at `now_ms`, soonest first, by moving their `next_refresh_at_ms` to `now_ms + lease_ms`
    /// in the same statement: a second process (or a second pass) does not get them again
    /// unless the lease runs out first. The refresh that follows sets the real next time.
    /// Connections whose refresh lease someone holds are skipped; the claimed ones get the
    /// refresh lease for [`REFRESH_LEASE_MS`] (at most `lease_ms`).
    async fn claim_due_refreshes(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRefresh>, StoreError>;
    /// The connection and its schedule in one read; `None` when unknown.
    async fn connection_with_schedule(
        &self,
        id: &str,
    ) -> Result<Option<(Connection, RefreshSchedule)>, StoreError>;
    /// The connection's schedule; `None` when unknown.
    async fn refresh_schedule(&self, id: &str) -> Result<Option<RefreshSchedule>, StoreError>;
    /// Sets when the refresher looks at it next; false when unknown.
    async fn set_next_refresh(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Records a transient refresh failure on an active connection, atomically: one more
    /// failure in a row, `last_error`, and no LWA call (nor scheduled refresh) before
    /// `retry_at(failures)`, given the new count. `None` when unknown, not active, or
    /// authorized again since `authorized_at_ms` (a new authorization starts without backoff).
    async fn record_refresh_failure(
        &self,
        id: &str,
        authorized_at_ms: i64,
        error: &str,
        at_ms: i64,
        retry_at: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Option<RefreshSchedule>, StoreError>;
    /// A claim's own fields: the name and callback URL when given (others unchanged) and the
    /// claim time, so that a refresh stored meanwhile is never overwritten; false when unknown.
    async fn mark_claimed(
        &self,
        id: &str,
        name: Option<&str>,
        callback_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Active Ads connections without a tenant-held secret whose profiles are due to be re-read
    /// (`profiles_check_at_ms <= now_ms`), soonest first.
    async fn due_profile_checks(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Stores re-read profiles (when given) and when to read them next; false when unknown.
    async fn set_profiles(
        &self,
        id: &str,
        profiles: Option<&str>,
        next_check_at_ms: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Active SP-API connections authorized at or before `authorized_before_ms` that have not
    /// yet had a notice of `days` or fewer days, oldest authorization first.
    async fn expiring_authorizations(
        &self,
        authorized_before_ms: i64,
        days: i64,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError>;
    /// Records that the `days` notice was sent for the authorization of `authorized_at_ms`, with
    /// its events in the same transaction (nothing when it was re-authorized meanwhile); false
    /// then.
    async fn set_expiry_notice(
        &self,
        id: &str,
        authorized_at_ms: i64,
        days: i64,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;

    // --- webhooks (outbox and deliveries) ---
    /// Writes events on their own (app events, reminders), in one transaction.
    async fn enqueue_events(&self, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Claims up to `limit` due pending deliveries (`next_attempt_at_ms <= now_ms`), oldest
    /// first, at most one per order key (connection and target) and only the first pending
    /// one of its key, so events reach a target in order. A claimed delivery's next attempt
    /// moves to `now_ms + lease_ms`: if its worker dies, it is claimed again then.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Records an attempt: delivered, to be retried, or given up. False when the delivery is
    /// unknown or no longer pending.
    async fn record_delivery_attempt(&self, attempt: &DeliveryAttempt) -> Result<bool, StoreError>;
    /// One delivery.
    async fn webhook_delivery(&self, id: i64) -> Result<Option<WebhookDelivery>, StoreError>;
    /// A page of deliveries, newest first.
    async fn webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Counts of every delivery by state: `(state, count)`, ordered by state.
    async fn delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Makes a failed delivery pending again, due at `now_ms`, giving up at `expires_at_ms`.
    /// False when unknown, not `failed`, or not the tenant's (when `tenant_id` is given).
    async fn retry_delivery(
        &self,
        id: i64,
        tenant_id: Option<&str>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Adds a delivery to `target` for every event of the connection written at or after
    /// `since_ms` that has none to that URL yet (a callback URL given at the claim receives
    /// the authorization's event). Returns how many were added; concurrent calls add each
    /// delivery once.
    async fn add_connection_event_target(
        &self,
        connection_id: &str,
        since_ms: i64,
        target: &EventTarget,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    // --- app client secrets (LWA client-secret rotation) ---
    /// One app's client secrets.
    async fn app_secret(&self, app: &str) -> Result<Option<AppSecret>, StoreError>;
    /// Every app's client secrets, by app name.
    async fn app_secrets(&self) -> Result<Vec<AppSecret>, StoreError>;
    /// Adds an app's row unless it has one; true when added. Of two concurrent first starts one
    /// adds the row and the other reads it.
    async fn insert_app_secret(&self, secret: &AppSecret) -> Result<bool, StoreError>;
    /// Overwrites an app's row (every column, `version` included) only if its stored version is
    /// still `expected_version`; false when another writer came first.
    async fn replace_app_secret(&self, secret: &AppSecret, expected_version: i64)
    -> Result<bool, StoreError>;
    /// Records that the warning `days` before the deadline of the secret issued at
    /// `secret_issued_at_ms` was given; true only for the one caller that records it first
    /// (false if already recorded or if the secret changed meanwhile). Its events are written
    /// in the same transaction, only when it is recorded.
    async fn mark_app_secret_warning(
        &self,
        app: &str,
        secret_issued_at_ms: i64,
        days: u32,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;

    // --- master key rotation (`keys rotate`, `keys status`) ---
    /// A page of `table`'s rows (only those with a non-NULL sealed column), ordered by id,
    /// after `after_id` (exclusive; `None`: from the start).
    async fn sealed_rows(
        &self,
        table: &SealedColumns,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError>;
    /// One row's sealed columns, as they are now; `None` when the row is gone.
    async fn sealed_row(&self, table: &SealedColumns, id: &str) -> Result<Option<SealedRow>, StoreError>;
    /// Writes each row's new values in one transaction, each compare-and-set on its old values
    /// (`UPDATE … WHERE col IS old`): a row changed or deleted meanwhile is left alone. Returns,
    /// per row in order, whether it was written.
    async fn reseal_rows(&self, table: &SealedColumns, rows: &[ResealRow]) -> Result<Vec<bool>, StoreError>;
    /// Per sealed column, how many non-NULL values start with each `prefix_len`-character
    /// prefix (for sealed values, `lwa1.<key fingerprint>.` names the key).
    async fn sealed_prefix_counts(
        &self,
        table: &SealedColumns,
        prefix_len: u32,
    ) -> Result<Vec<PrefixCount>, StoreError>;
}

//! The records the broker keeps. Every secret field holds a *sealed* value (`lwa1.<fp>.<b64>`,
//! see `lwa-seal`) or a SHA-256 hash in lowercase hex, never plaintext. Times are Unix
//! milliseconds from the broker's clock.

use serde::{Deserialize, Serialize};

/// A system that uses the broker (a WMS, an agency tool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// `ten_…`, stable.
    pub id: String,
    pub name: String,
    /// One or more redirect origins (e.g. `https://wms.example.com/oauth`), as given.
    pub redirect_origins: Vec<String>,
    /// Name of the SP-API app from the config this tenant uses (`None`: the only one).
    pub sp_app: Option<String>,
    /// Name of the Ads app from the config this tenant uses (`None`: the only one).
    pub ads_app: Option<String>,
    pub webhook_url: Option<String>,
    /// Sealed webhook signing secret.
    pub signing_secret: Option<String>,
    pub created_at_ms: i64,
}

/// An API key's stored half: the secret only as SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key id (the middle part of `<prefix>_<key id>_<secret>`), unique.
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    /// SHA-256 of the secret part, lowercase hex.
    pub secret_hash: String,
    /// `full` or `proxy-only`.
    pub scope: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// What an authorization in flight remembers between the broker's redirect to Amazon and
/// Amazon's callback. Keyed by the SHA-256 of the broker-made `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthState {
    /// SHA-256 (hex) of the state sent to Amazon.
    pub state_hash: String,
    pub tenant_id: String,
    /// App name from the config.
    pub app: String,
    /// `sp-api` or `ads`.
    pub api: String,
    /// `na`, `eu` or `fe`.
    pub region: String,
    /// `seller` or `vendor` (SP-API).
    pub account_type: Option<String>,
    pub marketplace_id: Option<String>,
    /// The tenant's own state, returned unchanged.
    pub client_state: String,
    /// Where the seller goes afterwards (already validated against the tenant's origins).
    pub redirect_url: String,
    /// Sealed tenant-held secret (`amazonTokenSecret`), erased when the flow completes.
    pub token_secret: Option<String>,
    /// Sealed PKCE verifier (Ads).
    pub code_verifier: Option<String>,
    /// Set when re-authorizing one existing connection.
    pub connection_id: Option<String>,
    /// `initialize`, `connect_link`, `login_uri`, `reauthorize`.
    pub origin: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

/// A one-time server-made link that starts an authorization (`POST /v1/connect-links` and
/// reauthorize links). Keyed by the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectLink {
    pub token_hash: String,
    pub tenant_id: String,
    pub app: String,
    pub api: String,
    pub region: String,
    pub account_type: Option<String>,
    pub marketplace_id: Option<String>,
    pub client_state: String,
    pub redirect_url: String,
    /// Sealed tenant-held secret.
    pub token_secret: Option<String>,
    /// Set for a re-authorization link.
    pub connection_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

/// A single-use claim code (stored hashed) handed to the tenant's redirect URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimCode {
    pub code_hash: String,
    pub tenant_id: String,
    pub connection_id: String,
    /// Sealed tenant-held secret of this authorization, if any (so the claim can return a
    /// handle that carries it); erased on claim.
    pub token_secret: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

/// One authorized Amazon account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `conn_…`, stable; also the AEAD owner of its sealed fields.
    pub id: String,
    pub tenant_id: String,
    /// App name from the config.
    pub app: String,
    /// `sp-api` or `ads`.
    pub api: String,
    /// `na`, `eu`, `fe`.
    pub region: String,
    /// `seller` or `vendor` (SP-API only).
    pub account_type: Option<String>,
    pub marketplace_id: Option<String>,
    /// SP-API selling partner id (Ads returns none).
    pub selling_partner_id: Option<String>,
    pub name: Option<String>,
    /// `active`, `needs_reauth`, `disconnected`.
    pub status: String,
    /// Sealed refresh token (`None` once disconnected).
    pub refresh_token: Option<String>,
    /// Sealed current access token.
    pub access_token: Option<String>,
    pub access_expires_at_ms: Option<i64>,
    /// True when the tokens are also sealed under a tenant-held secret.
    pub tenant_secret: bool,
    /// Ads profiles as JSON (array), `[]` for SP-API.
    pub profiles: String,
    pub authorized_at_ms: i64,
    pub last_refresh_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub callback_url: Option<String>,
    pub claimed_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Filters and paging for [`crate::Store::list_connections`]. Ordered by `id` ascending;
/// `after` is the last id of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFilter {
    pub tenant_id: Option<String>,
    pub status: Option<String>,
    pub api: Option<String>,
    pub region: Option<String>,
    pub after: Option<String>,
    /// A search: connections whose selling partner id or name contains this text, letters
    /// compared without case (on SQLite only ASCII letters fold), or whose id is exactly it.
    /// `%`, `_` and the backslash match themselves.
    pub search: Option<String>,
    /// At most this many (the backend caps it at 1000).
    pub limit: u32,
}

/// What the dashboard's overview warns about among the active connections, counted in the
/// database ([`crate::Store::connection_alerts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionAlerts {
    /// Active connections whose access token had expired at the given time.
    pub expired_tokens: i64,
    /// The earliest expiry among them.
    pub oldest_expired_at_ms: Option<i64>,
    /// Active SP-API connections authorized at or before the given time, oldest authorization
    /// first (ties by id), at most the given number.
    pub expiring: Vec<Connection>,
}

/// What a refresh changes on a connection: only its token columns, so a rename or a callback
/// URL set at the same time is not overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUpdate {
    pub connection_id: String,
    /// The sealed refresh token the refresh started from: nothing is stored when the row holds
    /// another one by now (a re-authorization happened meanwhile).
    pub expected_refresh_token: String,
    /// Sealed refresh token (the same one unless LWA returned a new one).
    pub refresh_token: String,
    /// Sealed access token.
    pub access_token: String,
    pub access_expires_at_ms: i64,
    pub refreshed_at_ms: i64,
    /// When the background refresher should refresh it next.
    pub next_refresh_at_ms: i64,
}

/// One line of the audit trail: a token handed out. Identical events (same tenant, key,
/// connection, kind and detail) written in one batch are one row with a `count`, from
/// `at_ms` (the first) to `last_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store (0 before insertion); increasing.
    pub id: i64,
    pub at_ms: i64,
    pub last_at_ms: i64,
    pub count: i64,
    pub tenant_id: String,
    /// The API key used (its id, never its secret).
    pub key_id: String,
    /// `None` for a grantless token.
    pub connection_id: Option<String>,
    /// `access_token`, `grantless_token` or `restricted_data_token`.
    pub kind: String,
    /// How it was asked for: `v1` or `lwa` (the LWA-compatible endpoint).
    pub via: String,
    /// Grantless: the scope. RDT: the resources and data elements.
    pub detail: Option<String>,
}

/// Filters and paging for [`crate::Store::audit_events`]; newest first, `before` is the last id
/// of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    pub connection_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since_ms: Option<i64>,
    /// Events before this time.
    pub until_ms: Option<i64>,
    pub before: Option<i64>,
    /// At most this many (the backend caps it at 1000).
    pub limit: u32,
}

/// A connection the background refresher should look at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRefresh {
    pub id: String,
    /// App name from the config (the refresher's budget is per app).
    pub app: String,
    /// The claim's lease: when another process may take it.
    pub next_refresh_at_ms: i64,
    /// The row as claimed, so the refresh need not read it again.
    pub connection: Connection,
    /// Its schedule as claimed (`next_refresh_at_ms` is the lease).
    pub schedule: RefreshSchedule,
}

/// A connection's place in the background refresher's schedule (columns beside the
/// connection's, shared by every process).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshSchedule {
    /// When the refresher should next refresh it (0: now).
    pub next_refresh_at_ms: i64,
    /// Transient failures in a row; 0 after a success or a new authorization.
    pub refresh_failures: i64,
    /// No LWA call before this time (the backoff after a failure), for vends too.
    pub retry_at_ms: Option<i64>,
    /// The smallest "refresh token expiring in N days" notice sent for this authorization.
    pub expiry_notice_days: Option<i64>,
    /// When an Ads connection's profiles are next re-read (0: not scheduled yet).
    pub profiles_check_at_ms: i64,
    /// Someone (this process or another) is refreshing it until this time (0: nobody).
    pub refresh_lease_until_ms: i64,
}

// --- webhooks ---

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventTarget {
    /// The tenant's webhook URL as it is when the event is written (none: no delivery).
    TenantWebhook,
    /// A connection's `callback_url`.
    Callback(String),
    /// The operator's webhook URL from the config (app events).
    Operator(String),
}

impl EventTarget {
    /// `tenant`, `callback` or `operator`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            EventTarget::TenantWebhook => "tenant",
            EventTarget::Callback(_) => "callback",
            EventTarget::Operator(_) => "operator",
        }
    }
}

/// An event to write to the outbox, with its targets. Built by the server's `webhooks` module
/// and passed to the store method that makes the change it reports, which writes both in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `evt_…`, stable across attempts.
    pub id: String,
    /// `None` for operator events.
    pub tenant_id: Option<String>,
    pub connection_id: Option<String>,
    /// `connection.authorized`, `app.client_secret_expiring`, …
    pub event_type: String,
    /// The JSON body exactly as it will be delivered.
    pub body: String,
    pub created_at_ms: i64,
    pub targets: Vec<EventTarget>,
    /// A failed delivery gives up once this much time has passed since `created_at_ms`.
    pub retry_for_ms: i64,
}

/// One event's delivery to one target, with its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Assigned by the store; increasing.
    pub id: i64,
    pub event_id: String,
    /// The event's place in the order of all events.
    pub event_seq: i64,
    pub tenant_id: Option<String>,
    pub connection_id: Option<String>,
    pub event_type: String,
    /// The JSON body exactly as delivered.
    pub body: String,
    /// `tenant`, `callback` or `operator`.
    pub target: String,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_attempt_at_ms: Option<i64>,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
    /// When the event was written.
    pub created_at_ms: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Try again at this time.
    RetryAt(i64),
    /// Give up: the delivery is `failed`.
    GaveUp,
}

/// One attempt's outcome, for [`crate::Store::record_delivery_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub delivery_id: i64,
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<i64>,
    /// What went wrong (never a secret), `None` when delivered.
    pub error: Option<String>,
    pub result: AttemptResult,
}

/// Filters and paging for [`crate::Store::webhook_deliveries`]; newest first, `before` is the
/// last id of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// `None`: every delivery, operator ones included (the operator's view).
    pub tenant_id: Option<String>,
    pub connection_id: Option<String>,
    pub state: Option<String>,
    pub event_type: Option<String>,
    pub before: Option<i64>,
    /// At most this many (the backend caps it at 1000).
    pub limit: u32,
}

/// An app's LWA client secrets (AMAZON.md §3.7): the newest and the one it replaced, both sealed
/// under the owner `app:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecret {
    /// The app's name in the configuration.
    pub app: String,
    pub client_id: String,
    /// Sealed newest client secret (field `client_secret`).
    pub secret: String,
    /// When the broker learned the newest secret (taken as its issue date).
    pub secret_issued_at_ms: i64,
    /// Sealed previous client secret (field `previous_client_secret`).
    pub previous_secret: Option<String>,
    pub previous_issued_at_ms: Option<i64>,
    /// When Amazon stops accepting the previous secret; after it the broker never sends it.
    pub previous_expires_at_ms: Option<i64>,
    /// SHA-256 (hex) of the configuration's secret when it was last applied.
    pub config_secret_sha256: Option<String>,
    /// The expiry announced by Amazon's `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY`.
    pub announced_expiry_at_ms: Option<i64>,
    /// Expiry warnings given for the newest secret, in days before its deadline.
    pub warnings_sent: Vec<u32>,
    /// Increases on every write ([`crate::Store::replace_app_secret`] checks it).
    pub version: i64,
    pub updated_at_ms: i64,
}

/// What an [`Invalidation`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationKind {
    /// An API key revoked, deleted or changed: its id.
    ApiKey,
    /// A connection disconnected, deleted, re-authorized, or given other profiles: its id.
    Connection,
    /// A tenant changed: its id (every cached key of the tenant is dropped).
    Tenant,
}

impl InvalidationKind {
    /// The stored name (`api_key`, `connection`, `tenant`); `None` for another.
    pub fn parse(kind: &str) -> Option<InvalidationKind> {
        match kind {
            "api_key" => Some(InvalidationKind::ApiKey),
            "connection" => Some(InvalidationKind::Connection),
            "tenant" => Some(InvalidationKind::Tenant),
            _ => None,
        }
    }
}

/// A change other processes' caches must drop, written by the database's triggers in the
/// transaction that made it (see `migrations/*/0007_invalidations.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// Increases with every invalidation, in commit order.
    pub seq: i64,
    pub kind: InvalidationKind,
    pub subject: String,
}

/// How many history entries a connection keeps (the newest; see
/// `migrations/*/0009_history.sql`).
pub const HISTORY_KEPT: usize = 50;

/// One entry of a connection's history, written by the database's triggers in the transaction
/// that changed the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Increases with every entry.
    pub id: i64,
    /// When (the writer's clock): the refresh, the failure, the change.
    pub at_ms: i64,
    /// `refreshed`, `refresh_failed`, `status` or `authorized`.
    pub kind: String,
    /// The error of a failed refresh; `old → new` for a status change.
    pub detail: Option<String>,
    /// For `refreshed`: when the new access token expires.
    pub until_ms: Option<i64>,
}

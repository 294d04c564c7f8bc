//! What the SQLite and PostgreSQL backends share: the column lists of every record (as macros,
//! so that `concat!` builds `&'static str` statements from them), page sizes, and how
//! deliveries are ordered. One list for both keeps the two schemas' columns the same.

/// Page size of [`crate::Store::list_connections`] when the filter asks for 0.
pub(crate) const DEFAULT_PAGE: u32 = 100;
/// Largest page [`crate::Store::list_connections`] returns.
pub(crate) const MAX_PAGE: u32 = 1000;

macro_rules! tenant_cols {
    () => {
        "id, name, redirect_origins, sp_app, ads_app, webhook_url, signing_secret, created_at_ms"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, tenant_id, name, secret_hash, scope, created_at_ms, last_used_at_ms, revoked_at_ms"
    };
}
macro_rules! oauth_state_cols {
    () => {
        "state_hash, tenant_id, app, api, region, account_type, marketplace_id, client_state, \
         redirect_url, token_secret, code_verifier, connection_id, origin, created_at_ms, \
         expires_at_ms, used_at_ms"
    };
}
macro_rules! connect_link_cols {
    () => {
        "token_hash, tenant_id, app, api, region, account_type, marketplace_id, client_state, \
         redirect_url, token_secret, connection_id, created_at_ms, expires_at_ms, used_at_ms"
    };
}
macro_rules! app_secret_cols {
    () => {
        "app, client_id, secret, secret_issued_at_ms, previous_secret, previous_issued_at_ms, \
         previous_expires_at_ms, config_secret_sha256, announced_expiry_at_ms, warnings_sent, version, \
         updated_at_ms"
    };
}
macro_rules! claim_code_cols {
    () => {
        "code_hash, tenant_id, connection_id, token_secret, created_at_ms, expires_at_ms, used_at_ms"
    };
}
macro_rules! connection_cols {
    () => {
        "id, tenant_id, app, api, region, account_type, marketplace_id, selling_partner_id, name, \
         status, refresh_token, access_token, access_expires_at_ms, tenant_secret, profiles, \
         authorized_at_ms, last_refresh_at_ms, last_error, callback_url, claimed_at_ms, \
         created_at_ms, updated_at_ms"
    };
}

macro_rules! schedule_cols {
    () => {
        "next_refresh_at_ms, refresh_failures, retry_at_ms, expiry_notice_days, profiles_check_at_ms, \
         refresh_lease_until_ms"
    };
}

macro_rules! delivery_select {
    () => {
        "SELECT d.id, e.id AS event_id, d.event_seq, d.tenant_id, e.connection_id, e.event_type, e.body, \
         d.target, d.url, d.state, d.attempts, d.next_attempt_at_ms, d.expires_at_ms, d.last_attempt_at_ms, \
         d.last_status, d.last_error, d.delivered_at_ms, e.created_at_ms \
         FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq"
    };
}

/// A day in milliseconds: how long a delivery added after the fact is retried.
pub(crate) const DAY_MS: i64 = 24 * 3600 * 1000;

/// Deliveries with the same key go out in event order: one connection's (or, without one, one
/// tenant's or the operator's) events to one URL.
pub(crate) fn order_key(
    connection_id: Option<&str>,
    tenant_id: Option<&str>,
    kind: &str,
    url: &str,
) -> String {
    format!("{}|{kind}|{url}", connection_id.or(tenant_id).unwrap_or("-"))
}

pub(crate) use crate::redact_url as redact;

/// An invalidation row `(seq, kind, subject)`; a kind this version does not know is skipped
/// (a newer replica's), so it never stops the reader.
pub(crate) fn invalidations_of(rows: Vec<(i64, String, String)>) -> Vec<crate::Invalidation> {
    rows.into_iter()
        .filter_map(|(seq, kind, subject)| {
            Some(crate::Invalidation {
                seq,
                kind: crate::InvalidationKind::parse(&kind)?,
                subject,
            })
        })
        .collect()
}

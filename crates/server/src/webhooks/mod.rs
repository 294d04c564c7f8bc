//! Webhooks: the events the broker raises, their signature, the durable outbox they are
//! written to, and their delivery.
//!
//! An event is built here ([`connection_event`], [`operator_event`]) and handed to the store
//! method that makes the change it reports, which writes the change and the event in one
//! transaction: a change is never stored without its event, nor an event without its change.
//! The delivery worker ([`worker`]) then sends each event to each of its targets, in order per
//! connection and target, at least once, retrying with backoff for a day.
//!
//! Every request carries `webhook-id` (the event id, the same on every attempt),
//! `webhook-timestamp` (Unix seconds) and `lwa-broker-signature: t=<timestamp>,v1=<hex>`, where
//! the hex is HMAC-SHA256 over `{timestamp}.{body}` keyed with the signing secret (the whole
//! `whsec_…` string, as UTF-8). The README shows how to check it.

pub mod address;
pub mod routes;
pub mod worker;

use hmac::{Hmac, Mac};
use lwa_store::{Connection, EventTarget, NewEvent};
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::state::AppState;
use crate::time::rfc3339;

pub use worker::{RunSummary, Webhooks, run_once, spawn_worker};

/// How long a delivery is retried after its event (or after a manual retry): 24 hours.
pub const RETRY_FOR_MS: i64 = 24 * 3600 * 1000;

/// The events the broker raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A new connection was authorized through onboarding.
    ConnectionAuthorized,
    /// An existing connection was authorized again (also from `needs_reauth` back to active).
    ConnectionReauthorized,
    /// LWA refused the refresh token (`invalid_grant`): the seller must authorize again.
    ConnectionNeedsReauth,
    /// A published SP-API app's authorization nears its 365 days.
    ConnectionRefreshTokenExpiring,
    /// The tenant disconnected the connection; its tokens are erased.
    ConnectionDisconnected,
    /// An LWA client secret nears its 180 days (operator event).
    AppClientSecretExpiring,
}

impl EventType {
    /// The name in the body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConnectionAuthorized => "connection.authorized",
            EventType::ConnectionReauthorized => "connection.reauthorized",
            EventType::ConnectionNeedsReauth => "connection.needs_reauth",
            EventType::ConnectionRefreshTokenExpiring => "connection.refresh_token_expiring",
            EventType::ConnectionDisconnected => "connection.disconnected",
            EventType::AppClientSecretExpiring => "app.client_secret_expiring",
        }
    }
}

/// A webhook signing secret (`whsec_…`). `Debug` prints `[redacted]`; no `Display`, no `==`;
/// zeroized on drop.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<String>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl SigningSecret {
    /// A new random secret: `whsec_` and 32 random bytes in URL-safe base64.
    pub fn generate() -> SigningSecret {
        SigningSecret(Zeroizing::new(format!("whsec_{}", crate::ids::new_secret())))
    }

    /// Wraps a secret from the configuration or the database.
    pub fn new(value: impl Into<String>) -> SigningSecret {
        SigningSecret(Zeroizing::new(value.into()))
    }

    /// The secret itself: to seal it, to show it once to its owner, or to key the HMAC.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex HMAC-SHA256 of `{timestamp}.{body}`.
    pub fn sign(&self, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The `lwa-broker-signature` header's value: `t=<timestamp>,v1=<hex>`.
    pub fn signature_header(&self, timestamp: i64, body: &str) -> String {
        format!("t={timestamp},v1={}", self.sign(timestamp, body))
    }
}

/// What a connection looks like in an event: never a token, sealed or not.
pub fn connection_summary(c: &Connection) -> Value {
    let profiles: Value = serde_json::from_str(&c.profiles).unwrap_or(Value::Array(vec![]));
    json!({
        "id": c.id,
        "app": c.app,
        "api": c.api,
        "region": c.region,
        "account_type": c.account_type,
        "marketplace_id": c.marketplace_id,
        "selling_partner_id": c.selling_partner_id,
        "name": c.name,
        "status": c.status,
        "profiles": profiles,
        "authorized_at": rfc3339(c.authorized_at_ms),
        "last_error": c.last_error,
    })
}

/// The body of an event, exactly as delivered.
fn body(
    id: &str,
    kind: EventType,
    at_ms: i64,
    tenant_id: Option<&str>,
    connection: Option<&Connection>,
    data: Value,
) -> String {
    json!({
        "id": id,
        "type": kind.as_str(),
        "created_at": rfc3339(at_ms),
        "tenant_id": tenant_id,
        "connection": connection.map(connection_summary),
        "data": data,
    })
    .to_string()
}

/// An event about `connection` (its state after the change), for its tenant's webhook URL
/// and its `callback_url` when it has one. Pass the result to the store method that makes
/// the change (`save_authorization`, `record_refresh_error`, `disconnect_connection`) or to
/// `enqueue_events`.
///
/// ```no_run
/// # async fn demo(state: &lwa_server::AppState, c: &lwa_store::Connection) -> Result<(), lwa_store::StoreError> {
/// use lwa_server::webhooks::{EventType, connection_event};
/// let events = connection_event(
///     state,
///     EventType::ConnectionRefreshTokenExpiring,
///     c,
///     serde_json::json!({"days_left": 30}),
/// );
/// state.store.enqueue_events(&events).await?;
/// # Ok(()) }
/// ```
pub fn connection_event(
    state: &AppState,
    kind: EventType,
    connection: &Connection,
    data: Value,
) -> Vec<NewEvent> {
    let id = crate::ids::new_id("evt");
    let now = state.now_ms();
    let mut targets = vec![EventTarget::TenantWebhook];
    if let Some(url) = &connection.callback_url {
        targets.push(EventTarget::Callback(url.clone()));
    }
    vec![NewEvent {
        body: body(
            &id,
            kind,
            now,
            Some(&connection.tenant_id),
            Some(connection),
            data,
        ),
        id,
        tenant_id: Some(connection.tenant_id.clone()),
        connection_id: Some(connection.id.clone()),
        event_type: kind.as_str().to_owned(),
        created_at_ms: now,
        targets,
        retry_for_ms: RETRY_FOR_MS,
    }]
}

/// An operator event (`app.client_secret_expiring`) for the operator's webhook URL
/// (`LWA_BROKER_OPERATOR_WEBHOOK_URL`); empty when none is configured. Write it with
/// `state.store.enqueue_events(&events)`.
pub fn operator_event(state: &AppState, kind: EventType, data: Value) -> Vec<NewEvent> {
    let Some(url) = &state.webhooks.operator_url else {
        return Vec::new();
    };
    let id = crate::ids::new_id("evt");
    let now = state.now_ms();
    vec![NewEvent {
        body: body(&id, kind, now, None, None, data),
        id,
        tenant_id: None,
        connection_id: None,
        event_type: kind.as_str().to_owned(),
        created_at_ms: now,
        targets: vec![EventTarget::Operator(url.clone())],
        retry_for_ms: RETRY_FOR_MS,
    }]
}

/// The events of a failed refresh of `row`: `connection.needs_reauth` when the refresh sets
/// that status (the store writes it only if the status is a change), none otherwise.
pub fn refresh_error_events(
    state: &AppState,
    row: &Connection,
    status: Option<&str>,
    error: &str,
) -> Vec<NewEvent> {
    match status {
        Some(status @ "needs_reauth") => {
            let after = Connection {
                status: status.to_owned(),
                last_error: Some(error.to_owned()),
                ..row.clone()
            };
            connection_event(
                state,
                EventType::ConnectionNeedsReauth,
                &after,
                json!({"reason": "invalid_grant", "message": error}),
            )
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf %s '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let secret = SigningSecret::new("whsec_test");
        assert_eq!(
            secret.sign(1_700_000_000, r#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert!(secret.signature_header(5, "x").starts_with("t=5,v1="));
        assert_eq!(format!("{secret:?}"), "SigningSecret([redacted])");
    }
}

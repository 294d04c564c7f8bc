//! LWA client-secret rotation (AMAZON.md §3.7): every app's newest and previous client secret,
//! sealed in the database (owner `app:<name>`), read live by every token call.
//!
//! - The newest secret is always tried first; the previous one only after `invalid_client`,
//!   and only until its expiry (`oldClientSecretExpiryTime`, else seven days after it was
//!   replaced). After that the broker never sends it again.
//! - A new secret set in one process ([`set_secret`]: `lwa-broker apps set-secret` or
//!   `POST /admin/api/app-secret-notifications`) is used at once there, and by every other
//!   process within [`SECRET_RELOAD_MS`] of its clock.
//! - The configuration's secret seeds the database on the first start. Later it counts only
//!   when it changes in the configuration: a changed configured secret the database does not
//!   know (neither newest nor previous) is taken as newly set. An unchanged configuration left
//!   behind after rotations is harmless (the database remembers the configured secret's
//!   SHA-256, not the secret).
//! - [`due_secret_warnings`] gives the 30- and 7-day warnings before the 180-day deadline of
//!   SP-API apps (SPAPI-ROTATE; AMAZON.md states no deadline for Ads apps), each once per secret
//!   across every process.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use lwa::{AppCredentials, ClientSecret};
use lwa_store::AppSecret;
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::AppConfig;
use crate::error::ApiError;
use crate::extract::Json;
use crate::operator::AdminAuth;
use crate::state::{AppState, StartError};
use crate::time::{parse_rfc3339, rfc3339};

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// How often a process re-reads an app's secrets from the database (by its clock).
pub const SECRET_RELOAD_MS: i64 = 30_000;
/// Amazon wants every client secret rotated within 180 days of its issue (SPAPI-ROTATE).
pub const SECRET_DEADLINE_MS: i64 = 180 * DAY_MS;

/// When the newest secret must be replaced: 180 days after the broker got it, or sooner when
/// Amazon announced an earlier expiry (`newClientSecretExpiryTime`, or an
/// `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY` notification) — a notification applied late, or a
/// secret that was already old when the broker first saw it.
pub fn rotation_deadline(record: &AppSecret) -> i64 {
    let by_age = record.secret_issued_at_ms + SECRET_DEADLINE_MS;
    record.announced_expiry_at_ms.map_or(by_age, |at| at.min(by_age))
}
/// A replaced secret keeps working this long unless Amazon's notification says otherwise.
pub const RETIRED_SECRET_GRACE_MS: i64 = 7 * DAY_MS;
/// Warnings are given this many days before the deadline.
pub const WARNING_DAYS: [u32; 2] = [30, 7];
/// The grantless scope of `rotateApplicationClientSecret`.
pub const ROTATION_SCOPE: &str = "sellingpartnerapi::client_credential:rotation";
/// `rotateApplicationClientSecret` (Application Management API 2023-11-30).
pub const ROTATION_PATH: &str = "/applications/2023-11-30/clientSecret";
/// Amazon's notification carrying a new secret.
pub const NEW_SECRET_NOTIFICATION: &str = "APPLICATION_OAUTH_CLIENT_NEW_SECRET";
/// Amazon's notification announcing a secret's expiry.
pub const SECRET_EXPIRY_NOTIFICATION: &str = "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY";

/// The sealing owner of an app's secrets.
fn owner(app: &str) -> String {
    format!("app:{app}")
}

/// Every app's secrets as this process last read them.
#[derive(Debug, Default)]
pub struct LiveSecrets {
    apps: RwLock<HashMap<String, Arc<LiveApp>>>,
    reload: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct LiveApp {
    secret: ClientSecret,
    previous: Option<ClientSecret>,
    previous_expires_at_ms: Option<i64>,
    version: i64,
    loaded_ms: i64,
}

impl LiveApp {
    fn fresh(&self, now: i64) -> bool {
        (0..SECRET_RELOAD_MS).contains(&(now - self.loaded_ms))
    }

    fn previous_usable(&self, now: i64) -> Option<&ClientSecret> {
        self.previous
            .as_ref()
            .filter(|_| self.previous_expires_at_ms.is_some_and(|e| now < e))
    }

    fn credentials(&self, client_id: &str, now: i64) -> AppCredentials {
        let credentials = AppCredentials::new(client_id, self.secret.clone());
        match self.previous_usable(now) {
            Some(previous) => credentials.with_previous_secret(previous.clone()),
            None => credentials,
        }
    }

    fn reloaded(&self, now: i64) -> LiveApp {
        LiveApp {
            secret: self.secret.clone(),
            previous: self.previous.clone(),
            previous_expires_at_ms: self.previous_expires_at_ms,
            version: self.version,
            loaded_ms: now,
        }
    }
}

impl AppState {
    /// The app's LWA credentials now: the newest secret, and the previous one as the
    /// `invalid_client` fallback until its expiry. Re-read from the database when this
    /// process's copy is [`SECRET_RELOAD_MS`] old.
    pub async fn credentials(&self, app: &AppConfig) -> AppCredentials {
        let now = self.now_ms();
        let cached = self.secrets.apps.read().get(&app.name).cloned();
        let live = match cached {
            Some(live) if live.fresh(now) => Some(live),
            cached => reload(self, &app.name).await.or(cached),
        };
        match live {
            Some(live) => live.credentials(&app.credentials.client_id, now),
            // No row (the database was replaced under a running server): the configuration.
            None => app.credentials.clone(),
        }
    }
}

fn open_record(state: &AppState, record: &AppSecret, now: i64) -> Result<LiveApp, String> {
    let owner = owner(&record.app);
    let secret = state
        .sealer
        .open(&owner, "client_secret", &record.secret, None)
        .map_err(|e| format!("app {:?}: the client secret cannot be opened: {e}", record.app))?;
    let previous = match &record.previous_secret {
        None => None,
        Some(sealed) => Some(
            state
                .sealer
                .open(&owner, "previous_client_secret", sealed, None)
                .map_err(|e| {
                    format!(
                        "app {:?}: the previous client secret cannot be opened: {e}",
                        record.app
                    )
                })?,
        ),
    };
    Ok(LiveApp {
        secret: ClientSecret::new(secret.as_str()),
        previous: previous.map(|p| ClientSecret::new(p.as_str())),
        previous_expires_at_ms: record.previous_expires_at_ms,
        version: record.version,
        loaded_ms: now,
    })
}

fn install(state: &AppState, name: &str, live: LiveApp) -> Arc<LiveApp> {
    let live = Arc::new(live);
    state.secrets.apps.write().insert(name.to_owned(), live.clone());
    live
}

/// Re-reads one app's row; one reader at a time, and none when another just did.
async fn reload(state: &AppState, name: &str) -> Option<Arc<LiveApp>> {
    let _one = state.secrets.reload.lock().await;
    let now = state.now_ms();
    let cached = state.secrets.apps.read().get(name).cloned();
    if let Some(live) = &cached
        && live.fresh(now)
    {
        return Some(live.clone());
    }
    let keep = |cached: Option<Arc<LiveApp>>| cached.map(|c| install(state, name, c.reloaded(now)));
    match state.store.app_secret(name).await {
        Ok(Some(record)) => match &cached {
            Some(c) if c.version == record.version => Some(install(state, name, c.reloaded(now))),
            _ => match open_record(state, &record, now) {
                Ok(live) => {
                    if cached.is_some() {
                        tracing::info!(
                            app = name,
                            "the app's client secrets changed in the database; using them"
                        );
                    }
                    Some(install(state, name, live))
                }
                Err(e) => {
                    tracing::error!(app = name, error = %e, "cannot read the app's client secrets");
                    keep(cached)
                }
            },
        },
        Ok(None) => keep(cached),
        Err(e) => {
            tracing::warn!(app = name, error = %e, "cannot re-read the app's client secrets; keeping the ones read before");
            keep(cached)
        }
    }
}

fn seeded(state: &AppState, app: &AppConfig, version: i64, now: i64) -> AppSecret {
    let owner = owner(&app.name);
    let previous = app.credentials.previous_secret.as_ref();
    AppSecret {
        app: app.name.clone(),
        client_id: app.credentials.client_id.clone(),
        secret: state
            .sealer
            .seal(&owner, "client_secret", app.credentials.secret.expose(), None),
        secret_issued_at_ms: now,
        previous_secret: previous.map(|p| {
            state
                .sealer
                .seal(&owner, "previous_client_secret", p.expose(), None)
        }),
        previous_issued_at_ms: None,
        // Amazon retires a replaced secret within seven days of the replacement, which was
        // issued before now.
        previous_expires_at_ms: previous.map(|_| now + RETIRED_SECRET_GRACE_MS),
        config_secret_sha256: Some(config_hash(app)),
        announced_expiry_at_ms: None,
        warnings_sent: Vec::new(),
        version,
        updated_at_ms: now,
    }
}

/// SHA-256 of the configured secret: enough to notice that the configuration changed.
fn config_hash(app: &AppConfig) -> String {
    crate::ids::hash(app.credentials.secret.expose())
}

/// The row after `new` replaces the newest secret, which becomes the previous one.
fn rotated(
    state: &AppState,
    record: &AppSecret,
    live: &LiveApp,
    new: &ClientSecret,
    old_expires_at_ms: Option<i64>,
    now: i64,
) -> AppSecret {
    let owner = owner(&record.app);
    AppSecret {
        app: record.app.clone(),
        client_id: record.client_id.clone(),
        secret: state.sealer.seal(&owner, "client_secret", new.expose(), None),
        secret_issued_at_ms: now,
        previous_secret: Some(state.sealer.seal(
            &owner,
            "previous_client_secret",
            live.secret.expose(),
            None,
        )),
        previous_issued_at_ms: Some(record.secret_issued_at_ms),
        previous_expires_at_ms: Some(old_expires_at_ms.unwrap_or(now + RETIRED_SECRET_GRACE_MS)),
        config_secret_sha256: record.config_secret_sha256.clone(),
        announced_expiry_at_ms: None,
        warnings_sent: Vec::new(),
        version: record.version + 1,
        updated_at_ms: now,
    }
}

/// At start: seeds each configured app's row from the configuration, takes a configured secret
/// unknown to the database as newly set, and loads every app's secrets into this process.
pub async fn sync_config_secrets(state: &AppState) -> Result<(), StartError> {
    for app in &state.apps {
        let mut done = false;
        for _ in 0..5 {
            let now = state.now_ms();
            let Some(record) = state.store.app_secret(&app.name).await? else {
                if state.store.insert_app_secret(&seeded(state, app, 1, now)).await? {
                    done = true;
                    break;
                }
                continue;
            };
            if record.client_id != app.credentials.client_id {
                // The app now names another LWA client: its secrets start over.
                let fresh = seeded(state, app, record.version + 1, now);
                if state.store.replace_app_secret(&fresh, record.version).await? {
                    tracing::warn!(app = %app.name, "the app's client id changed in the configuration; its stored client secrets were replaced by the configured ones");
                    done = true;
                    break;
                }
                continue;
            }
            let hash = config_hash(app);
            if record.config_secret_sha256.as_deref() == Some(hash.as_str()) {
                // The configuration did not change since it was last applied.
                done = true;
                break;
            }
            let live = open_record(state, &record, now).map_err(StartError::Other)?;
            let configured = &app.credentials.secret;
            let known = configured.same_as(live.secret.expose())
                || live
                    .previous
                    .as_ref()
                    .is_some_and(|p| configured.same_as(p.expose()));
            let mut next = if known {
                // The configuration caught up with the database: remember it, change nothing.
                AppSecret {
                    version: record.version + 1,
                    updated_at_ms: now,
                    ..record.clone()
                }
            } else {
                rotated(state, &record, &live, configured, None, now)
            };
            next.config_secret_sha256 = Some(hash);
            if state.store.replace_app_secret(&next, record.version).await? {
                if !known {
                    tracing::info!(app = %app.name, "the configured client secret changed and is new to the database: it is now the app's newest secret");
                }
                done = true;
                break;
            }
        }
        if !done {
            return Err(StartError::Other(format!(
                "app {:?}: its client secrets kept changing while the broker started; start it again",
                app.name
            )));
        }
        let record =
            state.store.app_secret(&app.name).await?.ok_or_else(|| {
                StartError::Other(format!("app {:?}: its client secrets vanished", app.name))
            })?;
        let live = open_record(state, &record, state.now_ms()).map_err(StartError::Other)?;
        install(state, &app.name, live);
    }
    Ok(())
}

/// A new client secret to set.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub secret: ClientSecret,
    /// When Amazon stops accepting the secret it replaces (`oldClientSecretExpiryTime`);
    /// `None`: seven days from now.
    pub old_secret_expires_at_ms: Option<i64>,
}

/// What [`set_secret`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SetOutcome {
    /// The secret is the app's newest now; the one it replaced works until this time.
    SecretSet { previous_expires_at_ms: i64 },
    /// The secret was already the newest: nothing changed.
    AlreadyCurrent,
}

/// Checks a client secret's text: what Amazon issues is printable ASCII without spaces.
pub fn parse_client_secret(text: &str) -> Result<ClientSecret, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_client_secret",
            "the client secret is empty",
        ));
    }
    if text.len() > 512 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_client_secret",
            "a client secret is one word of at most 512 printable ASCII characters (amzn1.oa2-cs.v1.…)",
        ));
    }
    Ok(ClientSecret::new(text))
}

fn app_named<'a>(state: &'a AppState, name: &str) -> Result<&'a AppConfig, ApiError> {
    state.app(name).ok_or_else(|| {
        let names: Vec<&str> = state.apps.iter().map(|a| a.name.as_str()).collect();
        ApiError::not_found(format!(
            "no app named {name:?} in the configuration (apps: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ))
    })
}

/// The configured app whose LWA client id this is.
pub fn app_for_client_id<'a>(state: &'a AppState, client_id: &str) -> Result<&'a AppConfig, ApiError> {
    state
        .apps
        .iter()
        .find(|a| a.credentials.client_id == client_id)
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_client_id",
                format!("no configured app has the client id {client_id:?}"),
            )
        })
}

/// Makes `new` the app's newest secret; the newest so far becomes the previous one. Used at
/// once by this process, by the others within [`SECRET_RELOAD_MS`].
pub async fn set_secret(state: &AppState, app_name: &str, new: NewSecret) -> Result<SetOutcome, ApiError> {
    let app = app_named(state, app_name)?;
    for _ in 0..5 {
        let now = state.now_ms();
        let record = state.store.app_secret(&app.name).await?.ok_or_else(|| {
            ApiError::internal(
                "setting a client secret",
                format!("app {:?} has no row", app.name),
            )
        })?;
        let live =
            open_record(state, &record, now).map_err(|e| ApiError::internal("setting a client secret", e))?;
        if new.secret.same_as(live.secret.expose()) {
            install(state, &app.name, live);
            return Ok(SetOutcome::AlreadyCurrent);
        }
        if live
            .previous
            .as_ref()
            .is_some_and(|p| new.secret.same_as(p.expose()))
        {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "previous_client_secret",
                format!(
                    "this is app {:?}'s previous client secret, which a newer one replaced; a secret is never set back",
                    app.name
                ),
            ));
        }
        let next = rotated(
            state,
            &record,
            &live,
            &new.secret,
            new.old_secret_expires_at_ms,
            now,
        );
        if state.store.replace_app_secret(&next, record.version).await? {
            let previous_expires_at_ms = next.previous_expires_at_ms.unwrap_or(now);
            tracing::info!(
                app = %app.name,
                previous_valid_until = %rfc3339(previous_expires_at_ms),
                "a new client secret was set; the previous one is used only as a fallback until then"
            );
            let live = open_record(state, &next, now)
                .map_err(|e| ApiError::internal("setting a client secret", e))?;
            install(state, &app.name, live);
            return Ok(SetOutcome::SecretSet {
                previous_expires_at_ms,
            });
        }
    }
    Err(ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "conflict",
        "the app's client secrets kept changing; try again",
    ))
}

/// One of Amazon's two client-secret notifications (AMAZON.md §3.7).
#[derive(Debug, Clone)]
pub enum SecretNotification {
    /// `APPLICATION_OAUTH_CLIENT_NEW_SECRET`.
    NewSecret {
        client_id: String,
        secret: ClientSecret,
        new_secret_expires_at_ms: Option<i64>,
        old_secret_expires_at_ms: Option<i64>,
    },
    /// `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY`.
    Expiry {
        client_id: String,
        expires_at_ms: i64,
        reason: Option<String>,
    },
}

impl SecretNotification {
    /// The client id it is about.
    pub fn client_id(&self) -> &str {
        match self {
            SecretNotification::NewSecret { client_id, .. }
            | SecretNotification::Expiry { client_id, .. } => client_id,
        }
    }
}

fn bad_notification(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_notification", message)
}

fn text_field<'a>(object: &'a Value, name: &str, within: &str) -> Result<&'a str, ApiError> {
    match object.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(bad_notification(format!("{within}.{name} is missing or empty")))
        }
        Some(_) => Err(bad_notification(format!("{within}.{name} must be a string"))),
    }
}

fn time_field(object: &Value, name: &str, within: &str, required: bool) -> Result<Option<i64>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        _ => {
            let text = text_field(object, name, within)?;
            parse_rfc3339(text).map(Some).ok_or_else(|| {
                bad_notification(format!(
                    "{within}.{name} must be an ISO 8601 date-time such as 2026-11-24T10:00:00Z"
                ))
            })
        }
    }
}

/// Parses a notification's JSON. Errors name the field, never echo a value.
pub fn parse_notification(value: &Value) -> Result<SecretNotification, ApiError> {
    if !value.is_object() {
        return Err(bad_notification("the notification must be a JSON object"));
    }
    let kind = text_field(value, "notificationType", "notification")?;
    let payload = value
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| bad_notification("notification.payload must be an object"))?;
    match kind {
        NEW_SECRET_NOTIFICATION => {
            let within = "payload.applicationOAuthClientNewSecret";
            let body = payload
                .get("applicationOAuthClientNewSecret")
                .filter(|p| p.is_object())
                .ok_or_else(|| bad_notification(format!("{within} must be an object")))?;
            let secret = parse_client_secret(text_field(body, "newClientSecret", within)?)
                .map_err(|e| bad_notification(format!("{within}.newClientSecret: {}", e.message)))?;
            Ok(SecretNotification::NewSecret {
                client_id: text_field(body, "clientId", within)?.to_owned(),
                secret,
                new_secret_expires_at_ms: time_field(body, "newClientSecretExpiryTime", within, false)?,
                old_secret_expires_at_ms: time_field(body, "oldClientSecretExpiryTime", within, false)?,
            })
        }
        SECRET_EXPIRY_NOTIFICATION => {
            let within = "payload.applicationOAuthClientSecretExpiry";
            let body = payload
                .get("applicationOAuthClientSecretExpiry")
                .filter(|p| p.is_object())
                .ok_or_else(|| bad_notification(format!("{within} must be an object")))?;
            Ok(SecretNotification::Expiry {
                client_id: text_field(body, "clientId", within)?.to_owned(),
                expires_at_ms: time_field(body, "clientSecretExpiryTime", within, true)?.unwrap_or_default(),
                reason: body
                    .get("clientSecretExpiryReason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        }
        other => Err(bad_notification(format!(
            "notificationType {other:?} is not {NEW_SECRET_NOTIFICATION} or {SECRET_EXPIRY_NOTIFICATION}"
        ))),
    }
}

/// What [`apply_notification`] did, for the caller to show (never a secret).
#[derive(Debug, Clone, Serialize)]
pub struct NotificationOutcome {
    pub app: String,
    pub notification_type: &'static str,
    /// `secret_set`, `already_current` or `expiry_recorded`.
    pub outcome: &'static str,
    /// After `secret_set`: when the broker stops falling back to the previous secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<String>,
    /// After `expiry_recorded`: the announced expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Applies a notification. `expected_app`: the app it must be about (the CLI's `--app`); a
/// notification for another client id is refused.
pub async fn apply_notification(
    state: &AppState,
    notification: SecretNotification,
    expected_app: Option<&str>,
) -> Result<NotificationOutcome, ApiError> {
    let app = match expected_app {
        Some(name) => {
            let app = app_named(state, name)?;
            if app.credentials.client_id != notification.client_id() {
                return Err(ApiError::bad_request(
                    "client_id_mismatch",
                    format!(
                        "the notification is for client id {:?}, but app {:?} has client id {:?}",
                        notification.client_id(),
                        app.name,
                        app.credentials.client_id
                    ),
                ));
            }
            app
        }
        None => app_for_client_id(state, notification.client_id())?,
    };
    match notification {
        SecretNotification::NewSecret {
            secret,
            old_secret_expires_at_ms,
            new_secret_expires_at_ms,
            ..
        } => {
            let outcome = set_secret(
                state,
                &app.name,
                NewSecret {
                    secret,
                    old_secret_expires_at_ms,
                },
            )
            .await?;
            if let (SetOutcome::SecretSet { .. }, Some(at)) = (&outcome, new_secret_expires_at_ms) {
                // Amazon's own deadline for the new secret drives the expiry warnings.
                record_announced_expiry(state, &app.name, at).await?;
            }
            Ok(NotificationOutcome {
                app: app.name.clone(),
                notification_type: NEW_SECRET_NOTIFICATION,
                outcome: match outcome {
                    SetOutcome::SecretSet { .. } => "secret_set",
                    SetOutcome::AlreadyCurrent => "already_current",
                },
                previous_secret_valid_until: match outcome {
                    SetOutcome::SecretSet {
                        previous_expires_at_ms,
                    } => Some(rfc3339(previous_expires_at_ms)),
                    SetOutcome::AlreadyCurrent => None,
                },
                expires_at: None,
            })
        }
        SecretNotification::Expiry {
            expires_at_ms,
            reason,
            ..
        } => {
            record_announced_expiry(state, &app.name, expires_at_ms).await?;
            tracing::warn!(
                app = %app.name,
                expires_at = %rfc3339(expires_at_ms),
                reason = reason.as_deref().unwrap_or("-"),
                "Amazon announced the expiry of the app's client secret: rotate it (lwa-broker apps rotate-secret)"
            );
            Ok(NotificationOutcome {
                app: app.name.clone(),
                notification_type: SECRET_EXPIRY_NOTIFICATION,
                outcome: "expiry_recorded",
                previous_secret_valid_until: None,
                expires_at: Some(rfc3339(expires_at_ms)),
            })
        }
    }
}

async fn record_announced_expiry(state: &AppState, app: &str, at_ms: i64) -> Result<(), ApiError> {
    for _ in 0..5 {
        let Some(mut record) = state.store.app_secret(app).await? else {
            return Err(ApiError::internal(
                "recording a secret expiry",
                format!("app {app:?} has no row"),
            ));
        };
        let expected = record.version;
        record.announced_expiry_at_ms = Some(at_ms);
        record.version += 1;
        record.updated_at_ms = state.now_ms();
        if state.store.replace_app_secret(&record, expected).await? {
            return Ok(());
        }
    }
    Err(ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "conflict",
        "the app's client secrets kept changing; try again",
    ))
}

/// `POST /admin/api/app-secret-notifications`: Amazon's `APPLICATION_OAUTH_CLIENT_NEW_SECRET`
/// (sets the secret) or `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY` (records and logs the
/// announced expiry), matched to the app by `clientId`. Operator only.
pub async fn notification_route(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Json(body): Json<Value>,
) -> Result<axum::Json<NotificationOutcome>, ApiError> {
    let notification = parse_notification(&body)?;
    apply_notification(&state, notification, None)
        .await
        .map(axum::Json)
}

/// An app's secrets as `lwa-broker apps list` shows them (dates only, never a secret).
#[derive(Debug, Clone, Serialize)]
pub struct AppSecretStatus {
    pub name: String,
    /// `sp-api` or `ads`.
    pub kind: &'static str,
    pub client_id: String,
    pub secret_issued_at: String,
    pub secret_age_days: i64,
    /// `newest`, or `newest, previous as fallback` while the previous one is still accepted.
    pub in_use: &'static str,
    pub previous_issued_at: Option<String>,
    pub previous_expires_at: Option<String>,
    /// Amazon's announced expiry of the newest secret, if a notification said so.
    pub announced_expiry_at: Option<String>,
    /// SP-API apps: 180 days after the newest secret's issue (Ads apps have no deadline).
    pub rotation_deadline: Option<String>,
    /// Whole days left until the deadline (negative: overdue).
    pub days_until_deadline: Option<i64>,
}

/// Every configured app's secret dates.
pub async fn secret_status(state: &AppState) -> Result<Vec<AppSecretStatus>, ApiError> {
    let now = state.now_ms();
    let mut out = Vec::new();
    for app in &state.apps {
        let Some(record) = state.store.app_secret(&app.name).await? else {
            continue;
        };
        let deadline = (app.kind == lwa::Api::SpApi).then_some(rotation_deadline(&record));
        let previous_live =
            record.previous_secret.is_some() && record.previous_expires_at_ms.is_some_and(|e| now < e);
        out.push(AppSecretStatus {
            name: app.name.clone(),
            kind: match app.kind {
                lwa::Api::SpApi => "sp-api",
                lwa::Api::Ads => "ads",
            },
            client_id: app.credentials.client_id.clone(),
            secret_issued_at: rfc3339(record.secret_issued_at_ms),
            secret_age_days: (now - record.secret_issued_at_ms).div_euclid(DAY_MS),
            in_use: if previous_live {
                "newest, previous as fallback"
            } else {
                "newest"
            },
            previous_issued_at: record.previous_issued_at_ms.map(rfc3339),
            previous_expires_at: record
                .previous_secret
                .as_ref()
                .and(record.previous_expires_at_ms)
                .map(rfc3339),
            announced_expiry_at: record.announced_expiry_at_ms.map(rfc3339),
            rotation_deadline: deadline.map(rfc3339),
            days_until_deadline: deadline.map(|d| (d - now).div_euclid(DAY_MS)),
        });
    }
    Ok(out)
}

/// A client secret nearing Amazon's 180-day deadline: the `app.client_secret_expiring` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretWarning {
    pub app: String,
    pub client_id: String,
    /// The threshold crossed: 30 or 7 days before the deadline.
    pub threshold_days: u32,
    /// Whole days actually left.
    pub days_left: i64,
    pub secret_issued_at_ms: i64,
    pub deadline_ms: i64,
}

impl SecretWarning {
    /// The event's name.
    pub const EVENT: &'static str = "app.client_secret_expiring";

    /// The event's data (no secret).
    pub fn event_data(&self) -> Value {
        json!({
            "app": self.app,
            "client_id": self.client_id,
            "threshold_days": self.threshold_days,
            "days_left": self.days_left,
            "secret_issued_at": rfc3339(self.secret_issued_at_ms),
            "rotation_deadline": rfc3339(self.deadline_ms),
        })
    }
}

/// The expiry warnings due now, each logged and recorded as given so that every threshold
/// fires once per secret, across processes, with its `app.client_secret_expiring` event to the
/// operator's webhook written in the same transaction. A secret first seen past both
/// thresholds gets one warning (the nearer threshold). The background refresher calls it.
pub async fn due_secret_warnings(state: &AppState) -> Result<Vec<SecretWarning>, lwa_store::StoreError> {
    let now = state.now_ms();
    let mut due = Vec::new();
    for app in state.apps.iter().filter(|a| a.kind == lwa::Api::SpApi) {
        let Some(record) = state.store.app_secret(&app.name).await? else {
            continue;
        };
        let deadline = rotation_deadline(&record);
        let crossed: Vec<u32> = WARNING_DAYS
            .iter()
            .copied()
            .filter(|d| now >= deadline - i64::from(*d) * DAY_MS && !record.warnings_sent.contains(d))
            .collect();
        let Some(&threshold_days) = crossed.iter().min() else {
            continue;
        };
        let days_left = (deadline - now).div_euclid(DAY_MS);
        let warning = SecretWarning {
            app: app.name.clone(),
            client_id: app.credentials.client_id.clone(),
            threshold_days,
            days_left,
            secret_issued_at_ms: record.secret_issued_at_ms,
            deadline_ms: deadline,
        };
        // Farther thresholds are only marked; the nearest carries the event, in the same
        // transaction as its mark, so it goes out once whichever process marks it.
        let mut sent = false;
        for days in crossed {
            let events = if days == threshold_days {
                crate::webhooks::operator_event(
                    state,
                    crate::webhooks::EventType::AppClientSecretExpiring,
                    warning.event_data(),
                )
            } else {
                Vec::new()
            };
            let marked = state
                .store
                .mark_app_secret_warning(&app.name, record.secret_issued_at_ms, days, &events)
                .await?;
            sent |= marked && days == threshold_days;
        }
        if sent {
            tracing::warn!(
                app = %app.name,
                client_id = %app.credentials.client_id,
                days_left,
                rotation_deadline = %rfc3339(deadline),
                "the app's LWA client secret must be rotated before Amazon's 180-day deadline: run lwa-broker apps rotate-secret"
            );
            due.push(warning);
        }
    }
    Ok(due)
}

/// Calls Amazon's `rotateApplicationClientSecret` for an SP-API app: a grantless token with
/// [`ROTATION_SCOPE`], then `POST` [`ROTATION_PATH`] on the region's SP-API host. Amazon answers
/// 204; the new secret arrives later as an `APPLICATION_OAUTH_CLIENT_NEW_SECRET` notification.
pub async fn rotate_secret_at_amazon(
    state: &AppState,
    app_name: &str,
    region: lwa::Region,
) -> Result<(), ApiError> {
    let app = app_named(state, app_name)?;
    if app.kind != lwa::Api::SpApi {
        return Err(ApiError::bad_request(
            "not_rotatable",
            format!(
                "app {:?} is an Ads app: Amazon rotates only SP-API apps' secrets through the API; rotate it in the developer console and give the new secret to apps set-secret",
                app.name
            ),
        ));
    }
    if app.sandbox {
        return Err(ApiError::bad_request(
            "not_rotatable",
            format!(
                "app {:?} uses the SP-API sandbox, where Amazon does not rotate secrets",
                app.name
            ),
        ));
    }
    let credentials = state.credentials(app).await;
    let token = state
        .lwa
        .client_credentials(&credentials, &[ROTATION_SCOPE])
        .await;
    let token = token.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "lwa_error",
            format!("LWA refused a grantless token with scope {ROTATION_SCOPE}: {e}"),
        )
    })?;
    let url = state.endpoints.url(region.sp_api_host(), ROTATION_PATH);
    let response = state
        .lwa
        .http()
        .post(&url)
        .header("x-amz-access-token", token.access_token.expose())
        .header(
            "user-agent",
            concat!("lwa-broker/", env!("CARGO_PKG_VERSION"), " (Language=Rust)"),
        )
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "amazon_unreachable",
                format!("rotateApplicationClientSecret could not be called: {e}"),
            )
        })?;
    let status = response.status();
    if status.is_success() {
        tracing::info!(app = %app.name, "Amazon accepted the rotation; the new secret arrives as a notification");
        return Ok(());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["errors"][0]["message"]
        .as_str()
        .unwrap_or("no error message")
        .to_owned();
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
    // Amazon's 4xx is about the app or the request: worth no retry. 429 and 5xx are.
    let (status_out, code_out) = if status.is_client_error() && status.as_u16() != 429 {
        (axum::http::StatusCode::BAD_REQUEST, "amazon_refused")
    } else {
        (axum::http::StatusCode::BAD_GATEWAY, "amazon_error")
    };
    Err(ApiError::new(
        status_out,
        code_out,
        format!(
            "rotateApplicationClientSecret answered HTTP {}{}: {message}",
            status.as_u16(),
            if code.is_empty() {
                String::new()
            } else {
                format!(" {code}")
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_secret(extra: Value) -> Value {
        let mut body = json!({
            "clientId": "amzn1.application-oa2-client.a",
            "newClientSecret": "amzn1.oa2-cs.v1.abc",
            "newClientSecretExpiryTime": "2027-05-23T10:00:00.000Z",
            "oldClientSecretExpiryTime": "2026-12-01T10:00:00Z",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({"notificationVersion": "1.0", "notificationType": NEW_SECRET_NOTIFICATION,
               "payload": {"applicationOAuthClientNewSecret": body}})
    }

    #[test]
    fn notifications_parse_and_bad_ones_name_the_field_without_the_value() {
        match parse_notification(&new_secret(json!({}))).unwrap() {
            SecretNotification::NewSecret {
                client_id,
                secret,
                old_secret_expires_at_ms,
                ..
            } => {
                assert_eq!(client_id, "amzn1.application-oa2-client.a");
                assert!(secret.same_as("amzn1.oa2-cs.v1.abc"));
                assert_eq!(old_secret_expires_at_ms, parse_rfc3339("2026-12-01T10:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse_notification(&new_secret(json!({"newClientSecret": "has space secret-value"})))
            .unwrap_err();
        assert!(e.message.contains("newClientSecret"), "{}", e.message);
        assert!(!e.message.contains("secret-value"), "{}", e.message);
        let e = parse_notification(&new_secret(json!({"oldClientSecretExpiryTime": "soon"}))).unwrap_err();
        assert!(e.message.contains("oldClientSecretExpiryTime"), "{}", e.message);
        let e = parse_notification(&json!({"notificationType": "OTHER", "payload": {}})).unwrap_err();
        assert!(e.message.contains("OTHER"), "{}", e.message);
        let e = parse_notification(&json!({"payload": {}})).unwrap_err();
        assert!(e.message.contains("notificationType"), "{}", e.message);
        let expiry = json!({"notificationType": SECRET_EXPIRY_NOTIFICATION, "payload": {
            "applicationOAuthClientSecretExpiry": {"clientId": "c", "clientSecretExpiryTime": "2026-12-01T10:00:00Z"}}});
        assert!(matches!(
            parse_notification(&expiry).unwrap(),
            SecretNotification::Expiry { .. }
        ));
    }

    #[test]
    fn client_secrets_are_one_printable_word() {
        assert!(parse_client_secret(" amzn1.oa2-cs.v1.abc\n").is_ok());
        assert!(parse_client_secret("").is_err());
        assert!(parse_client_secret("two words").is_err());
        assert!(parse_client_secret(&"x".repeat(513)).is_err());
    }
}

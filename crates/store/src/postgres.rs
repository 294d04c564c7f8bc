//! The PostgreSQL backend of [`Store`], for one or several broker replicas on one database.
//!
//! A pool of [`POOL_SIZE`] connections, each waiting at most [`ACQUIRE_TIMEOUT`] for a free one.
//! The schema lives in `migrations/postgres/` (the same tables and columns as SQLite's) and is
//! embedded in the binary; [`PgStore::migrate`] applies it under sqlx's advisory lock, so
//! replicas starting together migrate once.
//!
//! Where SQLite serializes writers (`BEGIN IMMEDIATE`), PostgreSQL runs them side by side at
//! READ COMMITTED, so each method that reads before it writes locks what it read:
//!
//! - every "take" is one `UPDATE … WHERE used_at_ms IS NULL RETURNING …`: of two concurrent
//!   takers the second waits for the first's row lock, re-reads the row, and sees it used;
//! - the claims (`claim_due_refreshes`, `claim_deliveries`) pick their rows with
//!   `FOR UPDATE SKIP LOCKED` and lease them in the same statement, so replicas split the work
//!   instead of queueing behind one another;
//! - a state change that raises an event only if the state changed (`record_refresh_error`,
//!   `disconnect_connection`) reads the old state `FOR UPDATE`, so the event is written once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::columns::{DAY_MS, DEFAULT_PAGE, MAX_PAGE, order_key, redact};
use crate::{
    ApiKey, AppSecret, AttemptResult, AuditEvent, AuditFilter, ClaimCode, ConnectLink, Connection,
    ConnectionAlerts, ConnectionFilter, DeliveryAttempt, DeliveryFilter, DueRefresh, EventTarget,
    HistoryEntry, Invalidation, NewEvent, OAuthState, PrefixCount, RefreshSchedule, ResealRow, SealedColumns,
    SealedRow, Store, StoreError, Tenant, TokenUpdate, WebhookDelivery,
};

/// The schema, embedded at build time from `migrations/postgres/`.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections in the pool: enough for the request path, the refresher and the webhook worker
/// of one replica at once, few enough that several replicas stay under PostgreSQL's default
/// `max_connections` (100).
pub const POOL_SIZE: u32 = 16;
/// How long a call waits for a free connection (or for PostgreSQL to answer a new one) before
/// it fails, so an unreachable database gives a prompt error rather than a hung request.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] on one PostgreSQL database (or one schema of it).
///
/// Cheap to clone (the pool is shared). Open it with [`PgStore::connect`], then call
/// [`PgStore::migrate`]; [`PgStore::connect_and_migrate`] does both.
///
/// ```no_run
/// use lwa_store::{PgStore, Store};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // `options=-c search_path=…` keeps the broker's tables in a schema of their own.
/// let store = PgStore::connect_and_migrate(
///     "postgres://broker@db.internal/broker?options=-c%20search_path%3Dlwa",
/// )
/// .await?;
/// assert_eq!(store.backend(), "postgres");
/// assert!(store.migrations_current().await?);
/// # Ok::<(), lwa_store::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database a URL names. Does not migrate.
    ///
    /// Accepted: `postgres://…` and `postgresql://…` with everything libpq-style URLs carry
    /// (user, password, host, port, database, `sslmode`, `options=-c search_path=…`, …).
    /// Anything else is [`StoreError::BadUrl`], whose message never shows the password. An
    /// unreachable server is [`StoreError::Database`] after at most [`ACQUIRE_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options = parse_url(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        tracing::debug!(url = %redact(url), "connected to PostgreSQL");
        Ok(PgStore { pool })
    }

    /// [`PgStore::connect`], then [`PgStore::migrate`].
    pub async fn connect_and_migrate(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every embedded migration not yet applied. Safe to call on every start, and from
    /// several replicas at once: sqlx holds a PostgreSQL advisory lock while it migrates, so
    /// one applies them and the others then find them applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        tracing::debug!("PostgreSQL schema is current");
        Ok(())
    }

    /// True when every embedded migration has been applied successfully (with the same
    /// checksum): the schema is the one this build expects. For `/readyz`.
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        // Resolved through the search path, like the migrator's own unqualified name.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(false);
        }
        let applied: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .all(|m| {
                applied
                    .iter()
                    .any(|(v, sum)| *v == m.version && sum.as_slice() == m.checksum.as_ref())
            }))
    }

    /// The connection pool (for callers that need a raw query, e.g. diagnostics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Parses a `postgres:` URL. See [`PgStore::connect`].
fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl(format!(
            "unsupported database URL \"{}\": expected postgres://USER@HOST/DATABASE (or postgresql://…)",
            redact(url)
        )));
    }
    PgConnectOptions::from_str(url).map_err(|e| {
        // The parser's message may quote the URL; say only what kind of error it was.
        let why = match e {
            sqlx::Error::Configuration(_) => "it cannot be parsed",
            _ => "it is not a valid PostgreSQL URL",
        };
        StoreError::BadUrl(format!("invalid database URL \"{}\": {why}", redact(url)))
    })
}

/// `Conflict(what)` for a unique-key violation, `Database` for anything else.
fn conflict_or(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if err.as_database_error().is_some_and(|e| e.is_unique_violation()) {
        StoreError::Conflict(what())
    } else {
        StoreError::Database(err)
    }
}

/// `"id", "col1", "col2"` of a table's sealed columns. The names are `&'static str` constants of
/// the program (see [`SealedColumns`]), never input.
fn sealed_select_list(table: &SealedColumns) -> String {
    std::iter::once(table.id_column)
        .chain(table.columns.iter().copied())
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` AND id IN (…)` when the table is limited to some rows.
fn push_only_ids(query: &mut QueryBuilder<Postgres>, table: &SealedColumns) {
    if table.only_ids.is_empty() {
        return;
    }
    query.push(format!(" AND \"{}\" IN (", table.id_column));
    let mut ids = query.separated(", ");
    for id in table.only_ids {
        ids.push_bind(*id);
    }
    ids.push_unseparated(")");
}

fn tenant_from_row(row: &PgRow) -> Result<Tenant, sqlx::Error> {
    let origins: String = row.try_get("redirect_origins")?;
    let redirect_origins = serde_json::from_str(&origins).map_err(|e| sqlx::Error::ColumnDecode {
        index: "redirect_origins".into(),
        source: Box::new(e),
    })?;
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        redirect_origins,
        sp_app: row.try_get("sp_app")?,
        ads_app: row.try_get("ads_app")?,
        webhook_url: row.try_get("webhook_url")?,
        signing_secret: row.try_get("signing_secret")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        scope: row.try_get("scope")?,
        created_at_ms: row.try_get("created_at_ms")?,
        last_used_at_ms: row.try_get("last_used_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
    })
}

fn oauth_state_from_row(row: &PgRow) -> Result<OAuthState, sqlx::Error> {
    Ok(OAuthState {
        state_hash: row.try_get("state_hash")?,
        tenant_id: row.try_get("tenant_id")?,
        app: row.try_get("app")?,
        api: row.try_get("api")?,
        region: row.try_get("region")?,
        account_type: row.try_get("account_type")?,
        marketplace_id: row.try_get("marketplace_id")?,
        client_state: row.try_get("client_state")?,
        redirect_url: row.try_get("redirect_url")?,
        token_secret: row.try_get("token_secret")?,
        code_verifier: row.try_get("code_verifier")?,
        connection_id: row.try_get("connection_id")?,
        origin: row.try_get("origin")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        used_at_ms: row.try_get("used_at_ms")?,
    })
}

fn connect_link_from_row(row: &PgRow) -> Result<ConnectLink, sqlx::Error> {
    Ok(ConnectLink {
        token_hash: row.try_get("token_hash")?,
        tenant_id: row.try_get("tenant_id")?,
        app: row.try_get("app")?,
        api: row.try_get("api")?,
        region: row.try_get("region")?,
        account_type: row.try_get("account_type")?,
        marketplace_id: row.try_get("marketplace_id")?,
        client_state: row.try_get("client_state")?,
        redirect_url: row.try_get("redirect_url")?,
        token_secret: row.try_get("token_secret")?,
        connection_id: row.try_get("connection_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        used_at_ms: row.try_get("used_at_ms")?,
    })
}

fn claim_code_from_row(row: &PgRow) -> Result<ClaimCode, sqlx::Error> {
    Ok(ClaimCode {
        code_hash: row.try_get("code_hash")?,
        tenant_id: row.try_get("tenant_id")?,
        connection_id: row.try_get("connection_id")?,
        token_secret: row.try_get("token_secret")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        used_at_ms: row.try_get("used_at_ms")?,
    })
}

fn schedule_from_row(row: &PgRow) -> Result<RefreshSchedule, sqlx::Error> {
    Ok(RefreshSchedule {
        next_refresh_at_ms: row.try_get("next_refresh_at_ms")?,
        refresh_failures: row.try_get("refresh_failures")?,
        retry_at_ms: row.try_get("retry_at_ms")?,
        expiry_notice_days: row.try_get("expiry_notice_days")?,
        profiles_check_at_ms: row.try_get("profiles_check_at_ms")?,
        refresh_lease_until_ms: row.try_get("refresh_lease_until_ms")?,
    })
}

fn connection_from_row(row: &PgRow) -> Result<Connection, sqlx::Error> {
    Ok(Connection {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        app: row.try_get("app")?,
        api: row.try_get("api")?,
        region: row.try_get("region")?,
        account_type: row.try_get("account_type")?,
        marketplace_id: row.try_get("marketplace_id")?,
        selling_partner_id: row.try_get("selling_partner_id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        refresh_token: row.try_get("refresh_token")?,
        access_token: row.try_get("access_token")?,
        access_expires_at_ms: row.try_get("access_expires_at_ms")?,
        tenant_secret: row.try_get("tenant_secret")?,
        profiles: row.try_get("profiles")?,
        authorized_at_ms: row.try_get("authorized_at_ms")?,
        last_refresh_at_ms: row.try_get("last_refresh_at_ms")?,
        last_error: row.try_get("last_error")?,
        callback_url: row.try_get("callback_url")?,
        claimed_at_ms: row.try_get("claimed_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<WebhookDelivery, sqlx::Error> {
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_seq: row.try_get("event_seq")?,
        tenant_id: row.try_get("tenant_id")?,
        connection_id: row.try_get("connection_id")?,
        event_type: row.try_get("event_type")?,
        body: row.try_get("body")?,
        target: row.try_get("target")?,
        url: row.try_get("url")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        last_attempt_at_ms: row.try_get("last_attempt_at_ms")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn app_secret_from_row(r: &PgRow) -> Result<AppSecret, StoreError> {
    let warnings: String = r.try_get("warnings_sent")?;
    Ok(AppSecret {
        app: r.try_get("app")?,
        client_id: r.try_get("client_id")?,
        secret: r.try_get("secret")?,
        secret_issued_at_ms: r.try_get("secret_issued_at_ms")?,
        previous_secret: r.try_get("previous_secret")?,
        previous_issued_at_ms: r.try_get("previous_issued_at_ms")?,
        previous_expires_at_ms: r.try_get("previous_expires_at_ms")?,
        config_secret_sha256: r.try_get("config_secret_sha256")?,
        announced_expiry_at_ms: r.try_get("announced_expiry_at_ms")?,
        warnings_sent: warnings
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect(),
        version: r.try_get("version")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

fn sealed_row_from(row: &PgRow, table: &SealedColumns) -> Result<SealedRow, sqlx::Error> {
    Ok(SealedRow {
        id: row.try_get(0)?,
        values: (1..=table.columns.len())
            .map(|i| row.try_get(i))
            .collect::<Result<_, _>>()?,
    })
}

/// Inserts a connection on any executor (the pool or a transaction).
async fn insert_connection_on(conn: &mut PgConnection, c: &Connection) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO connections (",
        connection_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22)"
    ))
    .bind(&c.id)
    .bind(&c.tenant_id)
    .bind(&c.app)
    .bind(&c.api)
    .bind(&c.region)
    .bind(&c.account_type)
    .bind(&c.marketplace_id)
    .bind(&c.selling_partner_id)
    .bind(&c.name)
    .bind(&c.status)
    .bind(&c.refresh_token)
    .bind(&c.access_token)
    .bind(c.access_expires_at_ms)
    .bind(c.tenant_secret)
    .bind(&c.profiles)
    .bind(c.authorized_at_ms)
    .bind(c.last_refresh_at_ms)
    .bind(&c.last_error)
    .bind(&c.callback_url)
    .bind(c.claimed_at_ms)
    .bind(c.created_at_ms)
    .bind(c.updated_at_ms)
    .execute(conn)
    .await
    .map_err(|e| conflict_or(e, || format!("connection {}", c.id)))?;
    Ok(())
}

/// Updates a connection on any executor; false when no row has its id.
async fn update_connection_on(conn: &mut PgConnection, c: &Connection) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET app = $1, api = $2, region = $3, account_type = $4, marketplace_id = $5, \
         selling_partner_id = $6, name = $7, status = $8, refresh_token = $9, access_token = $10, \
         access_expires_at_ms = $11, tenant_secret = $12, profiles = $13, authorized_at_ms = $14, \
         last_refresh_at_ms = $15, last_error = $16, callback_url = $17, claimed_at_ms = $18, \
         updated_at_ms = $19, \
         refresh_failures = CASE WHEN authorized_at_ms = $14 THEN refresh_failures ELSE 0 END, \
         retry_at_ms = CASE WHEN authorized_at_ms = $14 THEN retry_at_ms ELSE NULL END, \
         expiry_notice_days = CASE WHEN authorized_at_ms = $14 THEN expiry_notice_days ELSE NULL END, \
         next_refresh_at_ms = CASE WHEN authorized_at_ms = $14 THEN next_refresh_at_ms ELSE 0 END, \
         refresh_lease_until_ms = CASE WHEN authorized_at_ms = $14 THEN refresh_lease_until_ms ELSE 0 END \
         WHERE id = $20",
    )
    .bind(&c.app)
    .bind(&c.api)
    .bind(&c.region)
    .bind(&c.account_type)
    .bind(&c.marketplace_id)
    .bind(&c.selling_partner_id)
    .bind(&c.name)
    .bind(&c.status)
    .bind(&c.refresh_token)
    .bind(&c.access_token)
    .bind(c.access_expires_at_ms)
    .bind(c.tenant_secret)
    .bind(&c.profiles)
    // Compared with the stored one too: a new authorization starts a new schedule (no backoff,
    // no notice sent, look at it now).
    .bind(c.authorized_at_ms)
    .bind(c.last_refresh_at_ms)
    .bind(&c.last_error)
    .bind(&c.callback_url)
    .bind(c.claimed_at_ms)
    .bind(c.updated_at_ms)
    .bind(&c.id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The URL a target means now; `None` when the tenant has no webhook URL.
async fn target_url(
    conn: &mut PgConnection,
    tenant_id: Option<&str>,
    target: &EventTarget,
) -> Result<Option<String>, StoreError> {
    Ok(match target {
        EventTarget::Callback(url) | EventTarget::Operator(url) => Some(url.clone()),
        EventTarget::TenantWebhook => match tenant_id {
            None => None,
            Some(tenant_id) => {
                sqlx::query_scalar::<_, Option<String>>("SELECT webhook_url FROM tenants WHERE id = $1")
                    .bind(tenant_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .flatten()
            }
        },
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_delivery_on(
    conn: &mut PgConnection,
    event_seq: i64,
    tenant_id: Option<&str>,
    kind: &str,
    url: &str,
    order_key: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_seq, tenant_id, target, url, order_key, state, attempts, \
         next_attempt_at_ms, expires_at_ms, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6)",
    )
    .bind(event_seq)
    .bind(tenant_id)
    .bind(kind)
    .bind(url)
    .bind(order_key)
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes events and one delivery per target on any executor (the caller's transaction).
async fn insert_events_on(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), StoreError> {
    for event in events {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_events (id, tenant_id, connection_id, event_type, body, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(&event.id)
        .bind(&event.tenant_id)
        .bind(&event.connection_id)
        .bind(&event.event_type)
        .bind(&event.body)
        .bind(event.created_at_ms)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| conflict_or(e, || format!("event {}", event.id)))?;
        let mut urls: Vec<String> = Vec::new();
        for target in &event.targets {
            let Some(url) = target_url(conn, event.tenant_id.as_deref(), target).await? else {
                continue;
            };
            // The same URL as tenant webhook and callback gets the event once.
            if urls.contains(&url) {
                continue;
            }
            let key = order_key(
                event.connection_id.as_deref(),
                event.tenant_id.as_deref(),
                target.kind(),
                &url,
            );
            insert_delivery_on(
                conn,
                seq,
                event.tenant_id.as_deref(),
                target.kind(),
                &url,
                &key,
                event.created_at_ms,
                event.created_at_ms.saturating_add(event.retry_for_ms),
            )
            .await?;
            urls.push(url);
        }
    }
    Ok(())
}

/// A `limit` of 0 means [`DEFAULT_PAGE`]; more than [`MAX_PAGE`] means [`MAX_PAGE`].
fn page(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    })
}

fn bind_app_secret<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    s: &'q AppSecret,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let warnings: Vec<String> = s.warnings_sent.iter().map(u32::to_string).collect();
    query
        .bind(&s.app)
        .bind(&s.client_id)
        .bind(&s.secret)
        .bind(s.secret_issued_at_ms)
        .bind(&s.previous_secret)
        .bind(s.previous_issued_at_ms)
        .bind(s.previous_expires_at_ms)
        .bind(&s.config_secret_sha256)
        .bind(s.announced_expiry_at_ms)
        .bind(warnings.join(","))
        .bind(s.version)
        .bind(s.updated_at_ms)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_current(&self) -> Result<bool, StoreError> {
        PgStore::migrations_current(self).await
    }

    async fn webhook_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at_ms) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let origins = serde_json::to_string(&t.redirect_origins)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
        sqlx::query(concat!(
            "INSERT INTO tenants (",
            tenant_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&t.id)
        .bind(&t.name)
        .bind(origins)
        .bind(&t.sp_app)
        .bind(&t.ads_app)
        .bind(&t.webhook_url)
        .bind(&t.signing_secret)
        .bind(t.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("tenant {}", t.id)))?;
        Ok(())
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", tenant_cols!(), " FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(tenant_from_row).transpose()?)
    }

    /// Ties in insertion order.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            tenant_cols!(),
            " FROM tenants ORDER BY created_at_ms, insert_seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?)
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<bool, StoreError> {
        let origins = serde_json::to_string(&t.redirect_origins)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
        let done = sqlx::query(
            "UPDATE tenants SET name = $1, redirect_origins = $2, sp_app = $3, ads_app = $4, \
             webhook_url = $5, signing_secret = $6 WHERE id = $7",
        )
        .bind(&t.name)
        .bind(origins)
        .bind(&t.sp_app)
        .bind(&t.ads_app)
        .bind(&t.webhook_url)
        .bind(&t.signing_secret)
        .bind(&t.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO api_keys (",
            api_key_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(&k.secret_hash)
        .bind(&k.scope)
        .bind(k.created_at_ms)
        .bind(k.last_used_at_ms)
        .bind(k.revoked_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("api key {}", k.id)))?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(api_key_from_row).transpose()?)
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at_ms, insert_seq"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(api_key_from_row).collect::<Result<_, _>>()?)
    }

    async fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Never moves `last_used_at_ms` backwards; an unknown id is not an error.
    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        // GREATEST ignores a NULL.
        sqlx::query("UPDATE api_keys SET last_used_at_ms = GREATEST(last_used_at_ms, $1) WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_oauth_state(&self, s: &OAuthState) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO oauth_states (",
            oauth_state_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&s.state_hash)
        .bind(&s.tenant_id)
        .bind(&s.app)
        .bind(&s.api)
        .bind(&s.region)
        .bind(&s.account_type)
        .bind(&s.marketplace_id)
        .bind(&s.client_state)
        .bind(&s.redirect_url)
        .bind(&s.token_secret)
        .bind(&s.code_verifier)
        .bind(&s.connection_id)
        .bind(&s.origin)
        .bind(s.created_at_ms)
        .bind(s.expires_at_ms)
        .bind(s.used_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || "oauth state with this hash".to_string()))?;
        Ok(())
    }

    async fn take_oauth_state(
        &self,
        state_hash: &str,
        now_ms: i64,
    ) -> Result<Option<OAuthState>, StoreError> {
        // The first UPDATE locks the row until the commit; a concurrent taker waits for it and
        // then finds `used_at_ms` set.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE oauth_states SET used_at_ms = $1 WHERE state_hash = $2 AND used_at_ms IS NULL RETURNING ",
            oauth_state_cols!()
        ))
        .bind(now_ms)
        .bind(state_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut state = oauth_state_from_row(&row)?;
        state.used_at_ms = None;
        sqlx::query(
            "UPDATE oauth_states SET token_secret = NULL, code_verifier = NULL WHERE state_hash = $1",
        )
        .bind(state_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    async fn oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            oauth_state_cols!(),
            " FROM oauth_states WHERE state_hash = $1"
        ))
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(oauth_state_from_row).transpose()?)
    }

    async fn insert_connect_link(&self, l: &ConnectLink) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO connect_links (",
            connect_link_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&l.token_hash)
        .bind(&l.tenant_id)
        .bind(&l.app)
        .bind(&l.api)
        .bind(&l.region)
        .bind(&l.account_type)
        .bind(&l.marketplace_id)
        .bind(&l.client_state)
        .bind(&l.redirect_url)
        .bind(&l.token_secret)
        .bind(&l.connection_id)
        .bind(l.created_at_ms)
        .bind(l.expires_at_ms)
        .bind(l.used_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || "connect link with this hash".to_string()))?;
        Ok(())
    }

    async fn take_connect_link(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ConnectLink>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE connect_links SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL RETURNING ",
            connect_link_cols!()
        ))
        .bind(now_ms)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut link = connect_link_from_row(&row)?;
        link.used_at_ms = None;
        sqlx::query("UPDATE connect_links SET token_secret = NULL WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(link))
    }

    async fn insert_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_connection_on(&mut conn, connection).await
    }

    async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            " FROM connections WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(connection_from_row).transpose()?)
    }

    async fn connection_by_partner(
        &self,
        tenant_id: &str,
        app: &str,
        region: &str,
        selling_partner_id: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            " FROM connections WHERE tenant_id = $1 AND app = $2 AND region = $3 AND selling_partner_id = $4 \
             ORDER BY created_at_ms DESC, insert_seq DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(app)
        .bind(region)
        .bind(selling_partner_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(connection_from_row).transpose()?)
    }

    /// A `limit` of 0 means 100; more than 1000 means 1000.
    async fn list_connections(&self, filter: &ConnectionFilter) -> Result<Vec<Connection>, StoreError> {
        let mut query =
            QueryBuilder::<Postgres>::new(concat!("SELECT ", connection_cols!(), " FROM connections WHERE "));
        // A search picks its page of ids from the narrow `connections_search` index first:
        // scanning the table would read every row's sealed tokens.
        if filter.search.is_some() {
            query.push("id IN (SELECT id FROM connections WHERE ");
        }
        query.push("TRUE");
        if let Some(tenant_id) = &filter.tenant_id {
            query.push(" AND tenant_id = ").push_bind(tenant_id.clone());
        }
        if let Some(status) = &filter.status {
            query.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(api) = &filter.api {
            query.push(" AND api = ").push_bind(api.clone());
        }
        if let Some(region) = &filter.region {
            query.push(" AND region = ").push_bind(region.clone());
        }
        if let Some(after) = &filter.after {
            query.push(" AND id > ").push_bind(after.clone());
        }
        if let Some(search) = &filter.search {
            let pattern = crate::contains_pattern(search);
            query
                .push(" AND (lower(selling_partner_id) LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR lower(name) LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\' OR id = ")
                .push_bind(search.clone())
                .push(")");
        }
        query.push(" ORDER BY id LIMIT ").push_bind(page(filter.limit));
        if filter.search.is_some() {
            query.push(") ORDER BY id");
        }
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(connection_from_row).collect::<Result<_, _>>()?)
    }

    /// Ordered by status.
    async fn count_connections(&self, tenant_id: Option<&str>) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM connections WHERE ($1::TEXT IS NULL OR tenant_id = $1) \
             GROUP BY status ORDER BY status",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn count_connections_by_tenant(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, COUNT(*) FROM connections GROUP BY tenant_id ORDER BY tenant_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn connection_alerts(
        &self,
        now_ms: i64,
        authorized_before_ms: i64,
        limit: u32,
    ) -> Result<ConnectionAlerts, StoreError> {
        let (expired_tokens, oldest_expired_at_ms): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(access_expires_at_ms) FROM connections \
             WHERE status = 'active' AND access_expires_at_ms <= $1",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            " FROM connections WHERE status = 'active' AND api = 'sp-api' AND authorized_at_ms <= $1 \
             ORDER BY authorized_at_ms, id LIMIT $2"
        ))
        .bind(authorized_before_ms)
        .bind(page(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        Ok(ConnectionAlerts {
            expired_tokens,
            oldest_expired_at_ms,
            expiring: rows.iter().map(connection_from_row).collect::<Result<_, _>>()?,
        })
    }

    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        update_connection_on(&mut conn, connection).await
    }

    /// When `is_new` is false and no connection has the id, nothing is stored and the error is
    /// `Database(RowNotFound)`.
    async fn save_authorization(
        &self,
        connection: &Connection,
        is_new: bool,
        claim: &ClaimCode,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if is_new {
            insert_connection_on(&mut tx, connection).await?;
        } else if !update_connection_on(&mut tx, connection).await? {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        sqlx::query(concat!(
            "INSERT INTO claim_codes (",
            claim_code_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&claim.code_hash)
        .bind(&claim.tenant_id)
        .bind(&claim.connection_id)
        .bind(&claim.token_secret)
        .bind(claim.created_at_ms)
        .bind(claim.expires_at_ms)
        .bind(claim.used_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "claim code with this hash".to_string()))?;
        insert_events_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_connection_details(
        &self,
        id: &str,
        name: Option<&str>,
        callback_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET name = $1, callback_url = $2, updated_at_ms = $3 WHERE id = $4",
        )
        .bind(name)
        .bind(callback_url)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One compare-and-set `UPDATE` per save: PostgreSQL commits concurrent writers in
    /// parallel, so there is no group commit to build as on SQLite. Of two saves from the same
    /// refresh token the second waits for the first's row lock, re-reads the row, and finds
    /// another token.
    async fn save_tokens(&self, u: &TokenUpdate) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET refresh_token = $1, access_token = $2, access_expires_at_ms = $3, \
             last_refresh_at_ms = $4, last_error = NULL, status = 'active', updated_at_ms = $4, \
             next_refresh_at_ms = $5, refresh_failures = 0, retry_at_ms = NULL, refresh_lease_until_ms = 0 \
             WHERE id = $6 AND status <> 'disconnected' AND refresh_token = $7",
        )
        .bind(&u.refresh_token)
        .bind(&u.access_token)
        .bind(u.access_expires_at_ms)
        .bind(u.refreshed_at_ms)
        .bind(u.next_refresh_at_ms)
        .bind(&u.connection_id)
        .bind(&u.expected_refresh_token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_refresh_error(
        &self,
        connection_id: &str,
        status: Option<&str>,
        error: &str,
        at_ms: i64,
        events: &[NewEvent],
        authorized_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locked, so that of two concurrent errors only the first sees the status change and
        // raises its event.
        let before: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE id = $1 AND status <> 'disconnected' \
             AND ($2::BIGINT IS NULL OR authorized_at_ms = $2) FOR UPDATE",
        )
        .bind(connection_id)
        .bind(authorized_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE connections SET status = COALESCE($1, status), last_error = $2, updated_at_ms = $3 \
             WHERE id = $4",
        )
        .bind(status)
        .bind(error)
        .bind(at_ms)
        .bind(connection_id)
        .execute(&mut *tx)
        .await?;
        if status.is_some_and(|s| s != before) {
            insert_events_on(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn disconnect_connection(
        &self,
        connection: &Connection,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT status FROM connections WHERE id = $1 FOR UPDATE")
                .bind(&connection.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(before) = before else {
            return Ok(false);
        };
        update_connection_on(&mut tx, connection).await?;
        if before != "disconnected" {
            insert_events_on(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // 9 parameters a row; PostgreSQL allows 65535 per statement.
        for chunk in events.chunks(1000) {
            let mut query = QueryBuilder::<Postgres>::new(
                "INSERT INTO audit_events (at_ms, last_at_ms, count, tenant_id, key_id, connection_id, \
                 kind, via, detail) ",
            );
            query.push_values(chunk, |mut row, e| {
                row.push_bind(e.at_ms)
                    .push_bind(e.last_at_ms)
                    .push_bind(e.count)
                    .push_bind(e.tenant_id.clone())
                    .push_bind(e.key_id.clone())
                    .push_bind(e.connection_id.clone())
                    .push_bind(e.kind.clone())
                    .push_bind(e.via.clone())
                    .push_bind(e.detail.clone());
            });
            // Not kept in the statement cache: its text changes with the batch's size.
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_audit_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE last_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT id, at_ms, last_at_ms, count, tenant_id, key_id, connection_id, kind, via, detail \
             FROM audit_events WHERE TRUE",
        );
        if let Some(v) = &filter.tenant_id {
            query.push(" AND tenant_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.connection_id {
            query.push(" AND connection_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.key_id {
            query.push(" AND key_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.kind {
            query.push(" AND kind = ").push_bind(v.clone());
        }
        if let Some(v) = filter.since_ms {
            query.push(" AND last_at_ms >= ").push_bind(v);
        }
        if let Some(v) = filter.until_ms {
            query.push(" AND at_ms < ").push_bind(v);
        }
        if let Some(v) = filter.before {
            query.push(" AND id < ").push_bind(v);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(page(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    last_at_ms: row.try_get("last_at_ms")?,
                    count: row.try_get("count")?,
                    tenant_id: row.try_get("tenant_id")?,
                    key_id: row.try_get("key_id")?,
                    connection_id: row.try_get("connection_id")?,
                    kind: row.try_get("kind")?,
                    via: row.try_get("via")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn take_claim_code(&self, code_hash: &str, now_ms: i64) -> Result<Option<ClaimCode>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE claim_codes SET used_at_ms = $1 WHERE code_hash = $2 AND used_at_ms IS NULL RETURNING ",
            claim_code_cols!()
        ))
        .bind(now_ms)
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut claim = claim_code_from_row(&row)?;
        claim.used_at_ms = None;
        sqlx::query("UPDATE claim_codes SET token_secret = NULL WHERE code_hash = $1")
            .bind(code_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(claim))
    }

    async fn purge_expired(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut purged = 0;
        for sql in [
            "DELETE FROM oauth_states WHERE expires_at_ms < $1",
            "DELETE FROM connect_links WHERE expires_at_ms < $1",
            "DELETE FROM claim_codes WHERE expires_at_ms < $1",
            "DELETE FROM ended_sessions WHERE expires_at_ms < $1",
        ] {
            purged += sqlx::query(sql)
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(purged)
    }

    async fn end_session(&self, sid: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ended_sessions (sid, expires_at_ms) VALUES ($1, $2) \
             ON CONFLICT (sid) DO NOTHING",
        )
        .bind(sid)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_ended(&self, sid: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1::BIGINT FROM ended_sessions WHERE sid = $1")
            .bind(sid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    // --- background refresher ---

    /// Rows another replica is claiming at this moment are skipped (`SKIP LOCKED`), not waited
    /// for: each replica takes the next due ones instead.
    async fn claim_due_refreshes(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRefresh>, StoreError> {
        let rows = sqlx::query(concat!(
            "WITH due AS ( \
               SELECT id AS due_id, next_refresh_at_ms AS due_at_ms FROM connections \
               WHERE status = 'active' AND NOT tenant_secret AND next_refresh_at_ms <= $2 \
               AND refresh_lease_until_ms <= $2 \
               ORDER BY next_refresh_at_ms, id LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE connections SET next_refresh_at_ms = $1, refresh_lease_until_ms = $4 \
             FROM due WHERE id = due.due_id \
             RETURNING due.due_at_ms, ",
            connection_cols!(),
            ", ",
            schedule_cols!()
        ))
        .bind(now_ms.saturating_add(lease_ms))
        .bind(now_ms)
        .bind(i64::from(limit.min(10_000)))
        .bind(now_ms.saturating_add(lease_ms.min(crate::REFRESH_LEASE_MS)))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let due_at: i64 = r.try_get("due_at_ms")?;
                Ok((
                    due_at,
                    DueRefresh {
                        id: r.try_get("id")?,
                        app: r.try_get("app")?,
                        next_refresh_at_ms: r.try_get("next_refresh_at_ms")?,
                        connection: connection_from_row(r)?,
                        schedule: schedule_from_row(r)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // RETURNING follows no order: soonest due first, as claimed.
        claimed.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.id.cmp(&y.id)));
        Ok(claimed.into_iter().map(|(_, due)| due).collect())
    }

    async fn connection_with_schedule(
        &self,
        id: &str,
    ) -> Result<Option<(Connection, RefreshSchedule)>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            ", ",
            schedule_cols!(),
            " FROM connections WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .as_ref()
            .map(|r| Ok::<_, sqlx::Error>((connection_from_row(r)?, schedule_from_row(r)?)))
            .transpose()?)
    }

    async fn refresh_schedule(&self, id: &str) -> Result<Option<RefreshSchedule>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            schedule_cols!(),
            " FROM connections WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(schedule_from_row).transpose()?)
    }

    async fn mark_claimed(
        &self,
        id: &str,
        name: Option<&str>,
        callback_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET name = COALESCE($1, name), callback_url = COALESCE($2, callback_url), \
             claimed_at_ms = $3, updated_at_ms = $3 WHERE id = $4",
        )
        .bind(name)
        .bind(callback_url)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn take_refresh_lease(&self, id: &str, now_ms: i64, until_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET refresh_lease_until_ms = $1 WHERE id = $2 AND refresh_lease_until_ms <= $3",
        )
        .bind(until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_refresh_lease(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE connections SET refresh_lease_until_ms = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn invalidations_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Invalidation>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, kind, subject FROM invalidations WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::columns::invalidations_of(rows))
    }

    async fn last_invalidation(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM invalidations")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn connection_history(
        &self,
        connection_id: &str,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows: Vec<(i64, i64, String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT id, at_ms, kind, detail, until_ms FROM connection_history \
             WHERE connection_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(connection_id)
        .bind(i64::from(limit.min(crate::HISTORY_KEPT as u32)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at_ms, kind, detail, until_ms)| HistoryEntry {
                id,
                at_ms,
                kind,
                detail,
                until_ms,
            })
            .collect())
    }

    async fn purge_invalidations(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM invalidations WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn clear_refresh_leases(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET refresh_lease_until_ms = 0 WHERE refresh_lease_until_ms <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn set_next_refresh(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE connections SET next_refresh_at_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_refresh_failure(
        &self,
        id: &str,
        authorized_at_ms: i64,
        error: &str,
        at_ms: i64,
        retry_at: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Option<RefreshSchedule>, StoreError> {
        // The first UPDATE holds the row until the commit, so the count and the retry time it
        // gives belong together.
        let mut tx = self.pool.begin().await?;
        let failures: Option<i64> = sqlx::query_scalar(
            "UPDATE connections SET refresh_failures = refresh_failures + 1, last_error = $1, \
             updated_at_ms = $2 WHERE id = $3 AND status = 'active' AND authorized_at_ms = $4 \
             RETURNING refresh_failures",
        )
        .bind(error)
        .bind(at_ms)
        .bind(id)
        .bind(authorized_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(failures) = failures else {
            return Ok(None);
        };
        let retry = retry_at(failures);
        let row = sqlx::query(concat!(
            "UPDATE connections SET retry_at_ms = $1, next_refresh_at_ms = $1 WHERE id = $2 RETURNING ",
            schedule_cols!()
        ))
        .bind(retry)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let schedule = schedule_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(schedule))
    }

    async fn due_profile_checks(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM connections \
             WHERE status = 'active' AND NOT tenant_secret AND api = 'ads' \
             AND profiles_check_at_ms <= $1 ORDER BY profiles_check_at_ms, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit.min(10_000)))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_profiles(
        &self,
        id: &str,
        profiles: Option<&str>,
        next_check_at_ms: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = match profiles {
            Some(profiles) => {
                sqlx::query(
                    "UPDATE connections SET profiles = $1, profiles_check_at_ms = $2, updated_at_ms = $3 \
                 WHERE id = $4",
                )
                .bind(profiles)
                .bind(next_check_at_ms)
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("UPDATE connections SET profiles_check_at_ms = $1 WHERE id = $2")
                    .bind(next_check_at_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn expiring_authorizations(
        &self,
        authorized_before_ms: i64,
        days: i64,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            " FROM connections \
             WHERE status = 'active' AND api = 'sp-api' AND authorized_at_ms <= $1 \
             AND (expiry_notice_days IS NULL OR expiry_notice_days > $2) \
             ORDER BY authorized_at_ms, id LIMIT $3"
        ))
        .bind(authorized_before_ms)
        .bind(days)
        .bind(i64::from(limit.min(10_000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(connection_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    async fn set_expiry_notice(
        &self,
        id: &str,
        authorized_at_ms: i64,
        days: i64,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A concurrent notice waits for this row lock, then re-checks the condition on the
        // row as this one left it.
        let done = sqlx::query(
            "UPDATE connections SET expiry_notice_days = $1 WHERE id = $2 AND authorized_at_ms = $3 \
             AND (expiry_notice_days IS NULL OR expiry_notice_days > $1)",
        )
        .bind(days)
        .bind(id)
        .bind(authorized_at_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_events_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn enqueue_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_events_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries another replica is claiming at this moment are skipped (`SKIP LOCKED`); the
    /// later deliveries of their order key stay held back, since the claimed one is still
    /// pending.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut tx = self.pool.begin().await?;
        // The first pending delivery of each order key, if it is due. An earlier one that is
        // pending (even if not due, or claimed by another worker) holds the later ones back.
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH picked AS ( \
               SELECT d.id AS picked_id FROM webhook_deliveries d \
               WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                                 WHERE e.order_key = d.order_key AND e.state = 'pending' AND e.id < d.id) \
               ORDER BY d.id LIMIT $3 \
               FOR UPDATE OF d SKIP LOCKED) \
             UPDATE webhook_deliveries SET next_attempt_at_ms = $1 FROM picked WHERE id = picked.picked_id \
             RETURNING id",
        )
        .bind(now_ms.saturating_add(lease_ms))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(delivery_select!(), " WHERE d.id = ANY($1) ORDER BY d.id"))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
    }

    async fn record_delivery_attempt(&self, a: &DeliveryAttempt) -> Result<bool, StoreError> {
        let (state, next, delivered) = match a.result {
            AttemptResult::Delivered => ("delivered", a.at_ms, Some(a.at_ms)),
            AttemptResult::RetryAt(at) => ("pending", at, None),
            AttemptResult::GaveUp => ("failed", a.at_ms, None),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_at_ms = $2, \
             last_attempt_at_ms = $3, last_status = $4, last_error = $5, delivered_at_ms = $6 \
             WHERE id = $7 AND state = 'pending'",
        )
        .bind(state)
        .bind(next)
        .bind(a.at_ms)
        .bind(a.status)
        .bind(&a.error)
        .bind(delivered)
        .bind(a.delivery_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn webhook_delivery(&self, id: i64) -> Result<Option<WebhookDelivery>, StoreError> {
        let row = sqlx::query(concat!(delivery_select!(), " WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(delivery_from_row).transpose()?)
    }

    async fn webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(delivery_select!(), " WHERE TRUE"));
        if let Some(v) = &filter.tenant_id {
            query.push(" AND d.tenant_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.connection_id {
            query.push(" AND e.connection_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.state {
            query.push(" AND d.state = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.event_type {
            query.push(" AND e.event_type = ").push_bind(v.clone());
        }
        if let Some(v) = filter.before {
            query.push(" AND d.id < ").push_bind(v);
        }
        query
            .push(" ORDER BY d.id DESC LIMIT ")
            .push_bind(page(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn retry_delivery(
        &self,
        id: i64,
        tenant_id: Option<&str>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at_ms = $1, expires_at_ms = $2 \
             WHERE id = $3 AND state = 'failed' AND ($4::TEXT IS NULL OR tenant_id = $4)",
        )
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_connection_event_target(
        &self,
        connection_id: &str,
        since_ms: i64,
        target: &EventTarget,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The events are locked: a concurrent call for the same connection waits, then finds
        // the deliveries this one added and adds none twice.
        let events: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT seq, tenant_id FROM webhook_events WHERE connection_id = $1 AND created_at_ms >= $2 \
             ORDER BY seq FOR UPDATE",
        )
        .bind(connection_id)
        .bind(since_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut added = 0;
        for (seq, tenant_id) in events {
            let Some(url) = target_url(&mut tx, tenant_id.as_deref(), target).await? else {
                continue;
            };
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE event_seq = $1 AND url = $2")
                    .bind(seq)
                    .bind(&url)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                continue;
            }
            let key = order_key(Some(connection_id), tenant_id.as_deref(), target.kind(), &url);
            insert_delivery_on(
                &mut tx,
                seq,
                tenant_id.as_deref(),
                target.kind(),
                &url,
                &key,
                now_ms,
                now_ms + DAY_MS,
            )
            .await?;
            added += 1;
        }
        tx.commit().await?;
        Ok(added)
    }

    // --- app client secrets ---

    async fn app_secret(&self, app: &str) -> Result<Option<AppSecret>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_secret_cols!(),
            " FROM app_secrets WHERE app = $1"
        ))
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| app_secret_from_row(&r)).transpose()
    }

    async fn app_secrets(&self) -> Result<Vec<AppSecret>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_secret_cols!(),
            " FROM app_secrets ORDER BY app"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_secret_from_row).collect()
    }

    async fn insert_app_secret(&self, s: &AppSecret) -> Result<bool, StoreError> {
        let query = sqlx::query(concat!(
            "INSERT INTO app_secrets (",
            app_secret_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (app) DO NOTHING"
        ));
        let done = bind_app_secret(query, s).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_app_secret(&self, s: &AppSecret, expected_version: i64) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "UPDATE app_secrets SET app = $1, client_id = $2, secret = $3, secret_issued_at_ms = $4, \
             previous_secret = $5, previous_issued_at_ms = $6, previous_expires_at_ms = $7, \
             config_secret_sha256 = $8, announced_expiry_at_ms = $9, warnings_sent = $10, version = $11, \
             updated_at_ms = $12 WHERE app = $13 AND version = $14",
        );
        let done = bind_app_secret(query, s)
            .bind(&s.app)
            .bind(expected_version)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_app_secret_warning(
        &self,
        app: &str,
        secret_issued_at_ms: i64,
        days: u32,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A concurrent caller waits for this row lock, then re-checks the condition on the row
        // as this one left it: only one records the warning.
        let done = sqlx::query(
            "UPDATE app_secrets SET \
             warnings_sent = CASE warnings_sent WHEN '' THEN $1 ELSE warnings_sent || ',' || $1 END \
             WHERE app = $2 AND secret_issued_at_ms = $3 \
             AND position(',' || $1 || ',' IN ',' || warnings_sent || ',') = 0",
        )
        .bind(days.to_string())
        .bind(app)
        .bind(secret_issued_at_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_events_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    // --- master key rotation ---

    async fn sealed_rows(
        &self,
        table: &SealedColumns,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError> {
        // The names are `&'static str` constants of the program (see `SealedColumns`).
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM \"{}\" WHERE ({})",
            sealed_select_list(table),
            table.table,
            table
                .columns
                .iter()
                .map(|c| format!("\"{c}\" IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ));
        if let Some(after) = after_id {
            query.push(format!(" AND \"{}\" > ", table.id_column));
            query.push_bind(after);
        }
        push_only_ids(&mut query, table);
        query.push(format!(" ORDER BY \"{}\" LIMIT ", table.id_column));
        query.push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| sealed_row_from(row, table))
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    async fn sealed_row(&self, table: &SealedColumns, id: &str) -> Result<Option<SealedRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM \"{}\" WHERE \"{}\" = $1",
            sealed_select_list(table),
            table.table,
            table.id_column
        );
        // The names are `&'static str` constants of the program (see `SealedColumns`).
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| sealed_row_from(&row, table)).transpose()?)
    }

    async fn reseal_rows(&self, table: &SealedColumns, rows: &[ResealRow]) -> Result<Vec<bool>, StoreError> {
        let n = table.columns.len();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(row) = rows.iter().find(|r| r.old.len() != n || r.new.len() != n) {
            return Err(StoreError::Io(format!(
                "a re-seal of {} row {} has {} old and {} new values for {n} columns",
                table.table,
                row.id,
                row.old.len(),
                row.new.len(),
            )));
        }
        // One `UPDATE … FROM (VALUES …)` per chunk: the row's id, its old values, its new ones
        // (`column1`, `column2…`, then the new ones), each row compare-and-set on its old values
        // (`IS NOT DISTINCT FROM`: NULL equals NULL), `RETURNING` the ids written. The names are
        // `&'static str` constants of the program (see `SealedColumns`).
        let set = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("\"{c}\" = v.column{}", 2 + n + i))
            .collect::<Vec<_>>()
            .join(", ");
        let unchanged = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    " AND \"{}\".\"{c}\" IS NOT DISTINCT FROM v.column{}",
                    table.table,
                    2 + i
                )
            })
            .collect::<String>();
        let (name, id) = (table.table, table.id_column);
        let head = format!("UPDATE \"{name}\" SET {set} FROM (");
        let tail =
            format!(") AS v WHERE \"{name}\".\"{id}\" = v.column1{unchanged} RETURNING \"{name}\".\"{id}\"");
        // PostgreSQL allows 65535 parameters a statement.
        let per_statement = (60_000 / (1 + 2 * n)).clamp(1, 1000);
        let mut written = std::collections::HashSet::with_capacity(rows.len());
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(per_statement) {
            let mut query = QueryBuilder::<Postgres>::new(head.clone());
            query.push_values(chunk, |mut values, row| {
                values.push_bind(row.id.clone());
                for value in row.old.iter().chain(&row.new) {
                    values.push_bind(value.clone());
                }
            });
            query.push(tail.clone());
            for row in query.build().persistent(false).fetch_all(&mut *tx).await? {
                written.insert(row.try_get::<String, _>(0)?);
            }
        }
        tx.commit().await?;
        Ok(rows.iter().map(|r| written.contains(&r.id)).collect())
    }

    async fn sealed_prefix_counts(
        &self,
        table: &SealedColumns,
        prefix_len: u32,
    ) -> Result<Vec<PrefixCount>, StoreError> {
        let prefix_len = i32::try_from(prefix_len).unwrap_or(i32::MAX);
        let mut counts = Vec::new();
        for &column in table.columns {
            // Byte order ("C"), as SQLite's, whatever the column's collation.
            let mut query = QueryBuilder::<Postgres>::new("SELECT substr(\"");
            query.push(column);
            query.push("\", 1, ");
            query.push_bind(prefix_len);
            query.push(format!(
                ") COLLATE \"C\" AS prefix, count(*) AS n FROM \"{}\" WHERE \"{column}\" IS NOT NULL",
                table.table
            ));
            push_only_ids(&mut query, table);
            query.push(" GROUP BY 1 ORDER BY 1");
            for row in query.build().fetch_all(&self.pool).await? {
                counts.push(PrefixCount {
                    column,
                    prefix: row.try_get("prefix")?,
                    count: row.try_get::<i64, _>("n")? as u64,
                });
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_url(url: &str) -> String {
        match parse_url(url) {
            Err(StoreError::BadUrl(message)) => message,
            other => panic!("expected BadUrl for {url}, got {other:?}"),
        }
    }

    #[test]
    fn urls() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://broker:pw@db.internal/broker",
            "POSTGRES://broker@db/broker",
            "postgres://postgres@127.0.0.1/test?options=-c%20search_path%3Dlwa_test_1",
        ] {
            parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let options = parse_url("postgres://u@h/d?options=-c%20search_path%3Dlwa").unwrap();
        assert_eq!(options.get_options(), Some("-c search_path=lwa"));
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        let message = bad_url("sqlite:broker.db");
        assert_eq!(
            message,
            "unsupported database URL \"sqlite:broker.db\": expected postgres://USER@HOST/DATABASE (or postgresql://…)"
        );
        let message = bad_url("mysql://u:hunter2@db/x");
        assert!(!message.contains("hunter2"), "{message}");
        let message = bad_url("postgres://u:hunter2@db:notaport/x");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.starts_with("invalid database URL \"postgres://***@db:notaport/x\""),
            "{message}"
        );
    }
}

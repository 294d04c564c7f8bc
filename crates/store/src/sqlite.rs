//! The SQLite backend of [`Store`].
//!
//! One database file (or one in-memory database for tests), opened in WAL mode with a 5 s busy
//! timeout, `synchronous = NORMAL` and foreign keys on. The schema lives in
//! `migrations/sqlite/` and is embedded in the binary; [`SqliteStore::migrate`] applies it.
//!
//! Every "take" runs in a `BEGIN IMMEDIATE` transaction whose first statement is the
//! `UPDATE … WHERE used_at_ms IS NULL` that marks the record used, so of two concurrent takers
//! exactly one sees the row change and the other sees nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::columns::{DAY_MS, DEFAULT_PAGE, MAX_PAGE, order_key, redact};
use crate::{
    ApiKey, AppSecret, AttemptResult, AuditEvent, AuditFilter, ClaimCode, ConnectLink, Connection,
    ConnectionAlerts, ConnectionFilter, DeliveryAttempt, DeliveryFilter, DueRefresh, EventTarget,
    HistoryEntry, Invalidation, NewEvent, OAuthState, PrefixCount, RefreshSchedule, ResealRow, SealedColumns,
    SealedRow, Store, StoreError, Tenant, TokenUpdate, WebhookDelivery,
};

/// The schema, embedded at build time from `migrations/sqlite/`.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] on one SQLite database.
///
/// Cheap to clone (the pool is shared). Open it with [`SqliteStore::connect`] (a URL) or
/// [`SqliteStore::open_path`] (a file), then call [`SqliteStore::migrate`] once;
/// [`SqliteStore::connect_and_migrate`] does both.
///
/// ```
/// use lwa_store::{SqliteStore, Store, Tenant};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// assert!(!store.migrations_current().await?);
/// store.migrate().await?;
/// assert!(store.migrations_current().await?);
///
/// let tenant = Tenant {
///     id: "ten_1".into(),
///     name: "Example WMS".into(),
///     redirect_origins: vec!["https://wms.example.com/oauth".into()],
///     sp_app: None,
///     ads_app: None,
///     webhook_url: None,
///     signing_secret: None,
///     created_at_ms: 1_700_000_000_000,
/// };
/// store.insert_tenant(&tenant).await?;
/// assert_eq!(store.tenant("ten_1").await?, Some(tenant));
/// assert_eq!(store.tenant("ten_2").await?, None);
/// # Ok::<(), lwa_store::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    /// Taken by the refresh path's frequent writes, so that this process's writers queue here
    /// rather than in SQLite's busy handler, which sleeps for milliseconds at a time.
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The group commit of `save_tokens`, started on first use.
    token_writer: std::sync::Arc<std::sync::OnceLock<TokenWriter>>,
    /// The runtime that opened the store, where the group commit runs (the first save may come
    /// from a request on a serving thread of its own, which ends before the store does).
    home: Option<tokio::runtime::Handle>,
}

/// A `save_tokens` waiting for the group commit, and where its answer goes.
type PendingSave = (
    TokenUpdate,
    tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
);
type TokenWriter = tokio::sync::mpsc::UnboundedSender<PendingSave>;

/// Most saves written in one transaction.
const GROUP_COMMIT_MAX: usize = 256;

/// Where a `sqlite:` URL points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Memory,
    File(PathBuf),
}

impl SqliteStore {
    /// Opens (creating if missing) the database a URL names. Does not migrate.
    ///
    /// Accepted: `sqlite:PATH`, `sqlite://PATH` (both relative to the working directory unless
    /// PATH starts with `/`), `sqlite:///abs/path`, and `sqlite::memory:` (a private in-memory
    /// database on one connection, gone when the last clone of the store is dropped). Query
    /// parameters (`?mode=…`) are not accepted. Anything else is [`StoreError::BadUrl`].
    ///
    /// A database file this call creates gets mode 0600 on unix.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        match parse_url(url)? {
            Target::Memory => SqliteStore::open_memory().await,
            Target::File(path) => SqliteStore::open_path(&path).await,
        }
    }

    /// [`SqliteStore::connect`], then [`SqliteStore::migrate`].
    pub async fn connect_and_migrate(url: &str) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens (creating if missing, with mode 0600 on unix) the database file at `path`. Does not
    /// migrate. The parent directory must exist.
    pub async fn open_path(path: &Path) -> Result<SqliteStore, StoreError> {
        if path.as_os_str().is_empty() {
            return Err(StoreError::BadUrl("empty SQLite database path".into()));
        }
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        // SQLite writes one at a time; a few connections serve the readers. Each is a thread
        // (and a malloc arena), so more would only cost memory.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        tracing::debug!(path = %path.display(), "opened SQLite database");
        Ok(SqliteStore {
            pool,
            path: Some(path.to_path_buf()),
            write_gate: Default::default(),
            token_writer: Default::default(),
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Opens an existing database file read-only (a backup to restore, a store to copy from):
    /// nothing is ever written to it, and a missing file is an error rather than a new database.
    /// Does not migrate.
    pub async fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io(format!("no database file at {}", path.display())));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            path: Some(path.to_path_buf()),
            write_gate: Default::default(),
            token_writer: Default::default(),
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// A fresh in-memory database on a single connection that is never recycled (recycling it
    /// would lose the data).
    ///
    /// Opened by the plain filename `:memory:`, not with `SQLITE_OPEN_MEMORY` (what sqlx's
    /// `sqlite::memory:` does): with that flag, `VACUUM INTO` would write its copy to memory too.
    async fn open_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(":memory:")
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            path: None,
            write_gate: Default::default(),
            token_writer: Default::default(),
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Applies every embedded migration not yet applied. Safe to call on every start.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        tracing::debug!("SQLite schema is current");
        Ok(())
    }

    /// True when every embedded migration has been applied successfully (with the same
    /// checksum): the schema is the one this build expects. For `/readyz`.
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if table.is_none() {
            return Ok(false);
        }
        let applied: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success = 1")
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

    /// Writes a consistent copy of the database to `path` (`VACUUM INTO`), with mode 0600 on
    /// unix. Refuses with [`StoreError::Io`] when `path` already exists. Safe while the store
    /// is in use.
    pub async fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        let Some(target) = path.to_str() else {
            return Err(StoreError::Io(format!(
                "backup path {} is not valid UTF-8",
                path.display()
            )));
        };
        // Creating the (empty) file first refuses an existing one without a race and gives it
        // private permissions from the start; VACUUM INTO accepts an empty target file.
        open_new_private(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::Io(format!("backup target {} already exists", path.display()))
            } else {
                StoreError::Io(format!("cannot create backup file {}: {e}", path.display()))
            }
        })?;
        let result = sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(path);
            return Err(e.into());
        }
        // A database always has at least one page; an empty file means the copy went elsewhere.
        let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if written == 0 {
            let _ = std::fs::remove_file(path);
            return Err(StoreError::Io(format!(
                "backup to {} wrote nothing",
                path.display()
            )));
        }
        tracing::info!(path = %path.display(), "wrote SQLite backup");
        Ok(())
    }

    /// The connection pool (for callers that need a raw query, e.g. diagnostics).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Parses a `sqlite:` URL. See [`SqliteStore::connect`].
pub(crate) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        return Err(StoreError::BadUrl(format!(
            "unsupported database URL \"{}\": a PostgreSQL URL, which PgStore opens; expected sqlite:PATH",
            redact(url)
        )));
    }
    let Some(rest) = lower.starts_with("sqlite:").then(|| &url["sqlite:".len()..]) else {
        return Err(StoreError::BadUrl(format!(
            "unsupported database URL \"{}\": expected sqlite:PATH (or postgres://… for PostgreSQL)",
            redact(url)
        )));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest == ":memory:" {
        return Ok(Target::Memory);
    }
    if rest.contains('?') {
        return Err(StoreError::BadUrl(format!(
            "database URL \"{url}\" has query parameters, which are not supported: expected sqlite:PATH \
             or sqlite::memory:"
        )));
    }
    if rest.is_empty() {
        return Err(StoreError::BadUrl(format!(
            "database URL \"{url}\" names no file: expected sqlite:PATH or sqlite::memory:"
        )));
    }
    Ok(Target::File(PathBuf::from(rest)))
}

/// Creates `path` with mode 0600 when it does not exist yet; leaves an existing file alone.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    match open_new_private(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Io(format!(
            "cannot create database file {}: {e}",
            path.display()
        ))),
    }
}

/// Creates a new empty file (failing if it exists) readable and writable by its owner only.
pub(crate) fn open_new_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // The umask cannot add bits, but set the mode explicitly all the same.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    options.open(path)?;
    Ok(())
}

/// `Conflict(what)` for a unique-key violation, `Database` for anything else.
fn conflict_or(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if err.as_database_error().is_some_and(|e| e.is_unique_violation()) {
        StoreError::Conflict(what())
    } else {
        StoreError::Database(err)
    }
}

/// `"id", "col1", "col2"` of a table's sealed columns.
fn sealed_select_list(table: &SealedColumns) -> String {
    std::iter::once(table.id_column)
        .chain(table.columns.iter().copied())
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` AND id IN (…)` when the table is limited to some rows.
fn push_only_ids(query: &mut QueryBuilder<Sqlite>, table: &SealedColumns) {
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

fn sealed_row_from(row: &SqliteRow, table: &SealedColumns) -> Result<SealedRow, sqlx::Error> {
    Ok(SealedRow {
        id: row.try_get(0)?,
        values: (1..=table.columns.len())
            .map(|i| row.try_get(i))
            .collect::<Result<_, _>>()?,
    })
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant, sqlx::Error> {
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

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKey, sqlx::Error> {
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

fn oauth_state_from_row(row: &SqliteRow) -> Result<OAuthState, sqlx::Error> {
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

fn connect_link_from_row(row: &SqliteRow) -> Result<ConnectLink, sqlx::Error> {
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

fn claim_code_from_row(row: &SqliteRow) -> Result<ClaimCode, sqlx::Error> {
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

fn schedule_from_row(row: &SqliteRow) -> Result<RefreshSchedule, sqlx::Error> {
    Ok(RefreshSchedule {
        next_refresh_at_ms: row.try_get("next_refresh_at_ms")?,
        refresh_failures: row.try_get("refresh_failures")?,
        retry_at_ms: row.try_get("retry_at_ms")?,
        expiry_notice_days: row.try_get("expiry_notice_days")?,
        profiles_check_at_ms: row.try_get("profiles_check_at_ms")?,
        refresh_lease_until_ms: row.try_get("refresh_lease_until_ms")?,
    })
}

fn connection_from_row(row: &SqliteRow) -> Result<Connection, sqlx::Error> {
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

/// Inserts a connection on any executor (the pool or a transaction).
async fn insert_connection_on(conn: &mut sqlx::SqliteConnection, c: &Connection) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO connections (",
        connection_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
async fn update_connection_on(conn: &mut sqlx::SqliteConnection, c: &Connection) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET app = ?, api = ?, region = ?, account_type = ?, marketplace_id = ?, \
         selling_partner_id = ?, name = ?, status = ?, refresh_token = ?, access_token = ?, \
         access_expires_at_ms = ?, tenant_secret = ?, profiles = ?, authorized_at_ms = ?, \
         last_refresh_at_ms = ?, last_error = ?, callback_url = ?, claimed_at_ms = ?, updated_at_ms = ?, \
         refresh_failures = CASE WHEN authorized_at_ms = ? THEN refresh_failures ELSE 0 END, \
         retry_at_ms = CASE WHEN authorized_at_ms = ? THEN retry_at_ms ELSE NULL END, \
         expiry_notice_days = CASE WHEN authorized_at_ms = ? THEN expiry_notice_days ELSE NULL END, \
         next_refresh_at_ms = CASE WHEN authorized_at_ms = ? THEN next_refresh_at_ms ELSE 0 END, \
         refresh_lease_until_ms = CASE WHEN authorized_at_ms = ? THEN refresh_lease_until_ms ELSE 0 END \
         WHERE id = ?",
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
    .bind(c.authorized_at_ms)
    .bind(c.last_refresh_at_ms)
    .bind(&c.last_error)
    .bind(&c.callback_url)
    .bind(c.claimed_at_ms)
    .bind(c.updated_at_ms)
    // A new authorization starts a new schedule (no backoff, no notice sent, look at it now).
    .bind(c.authorized_at_ms)
    .bind(c.authorized_at_ms)
    .bind(c.authorized_at_ms)
    .bind(c.authorized_at_ms)
    .bind(c.authorized_at_ms)
    .bind(&c.id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn delivery_from_row(row: &SqliteRow) -> Result<WebhookDelivery, sqlx::Error> {
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

/// The URL a target means now; `None` when the tenant has no webhook URL.
async fn target_url(
    conn: &mut sqlx::SqliteConnection,
    tenant_id: Option<&str>,
    target: &EventTarget,
) -> Result<Option<String>, StoreError> {
    Ok(match target {
        EventTarget::Callback(url) | EventTarget::Operator(url) => Some(url.clone()),
        EventTarget::TenantWebhook => match tenant_id {
            None => None,
            Some(tenant_id) => {
                sqlx::query_scalar::<_, Option<String>>("SELECT webhook_url FROM tenants WHERE id = ?")
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
    conn: &mut sqlx::SqliteConnection,
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
         next_attempt_at_ms, expires_at_ms, created_at_ms) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(event_seq)
    .bind(tenant_id)
    .bind(kind)
    .bind(url)
    .bind(order_key)
    .bind(now_ms)
    .bind(expires_at_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes events and one delivery per target on any executor (the caller's transaction).
async fn insert_events_on(conn: &mut sqlx::SqliteConnection, events: &[NewEvent]) -> Result<(), StoreError> {
    for event in events {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_events (id, tenant_id, connection_id, event_type, body, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
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

/// One token save on any executor (see [`Store::save_tokens`]).
async fn save_tokens_on(conn: &mut sqlx::SqliteConnection, u: &TokenUpdate) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET refresh_token = ?, access_token = ?, access_expires_at_ms = ?, \
         last_refresh_at_ms = ?, last_error = NULL, status = 'active', updated_at_ms = ?, \
         next_refresh_at_ms = ?, refresh_failures = 0, retry_at_ms = NULL, refresh_lease_until_ms = 0 \
         WHERE id = ? AND status <> 'disconnected' AND refresh_token = ?",
    )
    .bind(&u.refresh_token)
    .bind(&u.access_token)
    .bind(u.access_expires_at_ms)
    .bind(u.refreshed_at_ms)
    .bind(u.refreshed_at_ms)
    .bind(u.next_refresh_at_ms)
    .bind(&u.connection_id)
    .bind(&u.expected_refresh_token)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a group of token saves in one statement (`UPDATE … FROM (VALUES …)`, each row still
/// compare-and-set on its own expected refresh token); which were stored, in order. A group
/// that names a connection twice is written one by one in a transaction instead.
async fn save_tokens_together(pool: &SqlitePool, batch: &[PendingSave]) -> Result<Vec<bool>, StoreError> {
    let ids: std::collections::HashSet<&str> = batch.iter().map(|(u, _)| u.connection_id.as_str()).collect();
    if ids.len() < batch.len() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut answers = Vec::with_capacity(batch.len());
        for (update, _) in batch {
            answers.push(save_tokens_on(&mut tx, update).await?);
        }
        tx.commit().await?;
        return Ok(answers);
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "WITH v (id, expected, refresh_token, access_token, expires_at, refreshed_at, next_at) AS (",
    );
    query.push_values(batch, |mut row, (u, _)| {
        row.push_bind(&u.connection_id)
            .push_bind(&u.expected_refresh_token)
            .push_bind(&u.refresh_token)
            .push_bind(&u.access_token)
            .push_bind(u.access_expires_at_ms)
            .push_bind(u.refreshed_at_ms)
            .push_bind(u.next_refresh_at_ms);
    });
    query.push(
        ") UPDATE connections SET refresh_token = v.refresh_token, access_token = v.access_token, \
         access_expires_at_ms = v.expires_at, last_refresh_at_ms = v.refreshed_at, last_error = NULL, \
         status = 'active', updated_at_ms = v.refreshed_at, next_refresh_at_ms = v.next_at, \
         refresh_failures = 0, retry_at_ms = NULL, refresh_lease_until_ms = 0 \
         FROM v WHERE connections.id = v.id AND connections.status <> 'disconnected' \
         AND connections.refresh_token = v.expected RETURNING connections.id",
    );
    // Not kept in the statement cache: its text changes with the group's size, and caching
    // each would push out the statements every request uses.
    let stored: std::collections::HashSet<String> = query
        .build_query_scalar::<String>()
        .persistent(false)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    Ok(batch
        .iter()
        .map(|(u, _)| stored.contains(&u.connection_id))
        .collect())
}

/// The group commit behind `save_tokens`: takes every save waiting (up to
/// [`GROUP_COMMIT_MAX`]) and writes them in one transaction; if that transaction fails, each
/// is written on its own so every caller gets its own answer. Ends when the store is dropped.
async fn group_commit(
    pool: SqlitePool,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<PendingSave>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let _gate = gate.lock().await;
        let together = save_tokens_together(&pool, &batch).await;
        match together {
            Ok(answers) => {
                for ((_, reply), saved) in batch.into_iter().zip(answers) {
                    let _ = reply.send(Ok(saved));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, saves = batch.len(), "a group of token saves failed; writing each alone");
                for (update, reply) in batch {
                    let alone = async {
                        let mut conn = pool.acquire().await?;
                        save_tokens_on(&mut conn, &update).await
                    }
                    .await;
                    let _ = reply.send(alone);
                }
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_current(&self) -> Result<bool, StoreError> {
        SqliteStore::migrations_current(self).await
    }

    async fn webhook_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at_ms) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
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
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
        let row = sqlx::query(concat!("SELECT ", tenant_cols!(), " FROM tenants WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(tenant_from_row).transpose()?)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            tenant_cols!(),
            " FROM tenants ORDER BY created_at_ms, rowid"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?)
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<bool, StoreError> {
        let origins = serde_json::to_string(&t.redirect_origins)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
        let done = sqlx::query(
            "UPDATE tenants SET name = ?, redirect_origins = ?, sp_app = ?, ads_app = ?, webhook_url = ?, \
             signing_secret = ? WHERE id = ?",
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
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
        let row = sqlx::query(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(api_key_from_row).transpose()?)
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE tenant_id = ? ORDER BY created_at_ms, rowid"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(api_key_from_row).collect::<Result<_, _>>()?)
    }

    async fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL")
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Never moves `last_used_at_ms` backwards; an unknown id is not an error.
    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at_ms = MAX(COALESCE(last_used_at_ms, ?1), ?1) WHERE id = ?2",
        )
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
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(concat!(
            "UPDATE oauth_states SET used_at_ms = ? WHERE state_hash = ? AND used_at_ms IS NULL RETURNING ",
            oauth_state_cols!()
        ))
        .bind(now_ms)
        .bind(state_hash)
        .fetch_all(&mut *tx)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut state = oauth_state_from_row(row)?;
        state.used_at_ms = None;
        sqlx::query("UPDATE oauth_states SET token_secret = NULL, code_verifier = NULL WHERE state_hash = ?")
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
            " FROM oauth_states WHERE state_hash = ?"
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
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(concat!(
            "UPDATE connect_links SET used_at_ms = ? WHERE token_hash = ? AND used_at_ms IS NULL RETURNING ",
            connect_link_cols!()
        ))
        .bind(now_ms)
        .bind(token_hash)
        .fetch_all(&mut *tx)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut link = connect_link_from_row(row)?;
        link.used_at_ms = None;
        sqlx::query("UPDATE connect_links SET token_secret = NULL WHERE token_hash = ?")
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
            " FROM connections WHERE id = ?"
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
            " FROM connections WHERE tenant_id = ? AND app = ? AND region = ? AND selling_partner_id = ? \
             ORDER BY created_at_ms DESC, rowid DESC LIMIT 1"
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
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut query =
            QueryBuilder::<Sqlite>::new(concat!("SELECT ", connection_cols!(), " FROM connections WHERE "));
        // A search picks its page of ids from the narrow `connections_search` index first:
        // scanning the table would read every row's sealed tokens.
        if filter.search.is_some() {
            query.push("id IN (SELECT id FROM connections WHERE ");
        }
        query.push("1 = 1");
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
        query.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        if filter.search.is_some() {
            query.push(") ORDER BY id");
        }
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(connection_from_row).collect::<Result<_, _>>()?)
    }

    /// Ordered by status.
    async fn count_connections(&self, tenant_id: Option<&str>) -> Result<Vec<(String, i64)>, StoreError> {
        let counts = match tenant_id {
            Some(tenant_id) => {
                sqlx::query_as(
                    "SELECT status, COUNT(*) FROM connections WHERE tenant_id = ? GROUP BY status ORDER BY status",
                )
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as("SELECT status, COUNT(*) FROM connections GROUP BY status ORDER BY status")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(counts)
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
             WHERE status = 'active' AND access_expires_at_ms <= ?",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            connection_cols!(),
            " FROM connections WHERE status = 'active' AND api = 'sp-api' AND authorized_at_ms <= ? \
             ORDER BY authorized_at_ms, id LIMIT ?"
        ))
        .bind(authorized_before_ms)
        .bind(i64::from(limit.clamp(1, MAX_PAGE)))
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if is_new {
            insert_connection_on(&mut tx, connection).await?;
        } else if !update_connection_on(&mut tx, connection).await? {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        sqlx::query(concat!(
            "INSERT INTO claim_codes (",
            claim_code_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?)"
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
        let done =
            sqlx::query("UPDATE connections SET name = ?, callback_url = ?, updated_at_ms = ? WHERE id = ?")
                .bind(name)
                .bind(callback_url)
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Saves that arrive together (a refresh storm, the background refresher) are written in one
    /// transaction by one task — each still compare-and-set on its own row — so a commit is
    /// paid once per group, not once per refresh.
    async fn save_tokens(&self, u: &TokenUpdate) -> Result<bool, StoreError> {
        let writer = self.token_writer.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let commit = group_commit(self.pool.clone(), self.write_gate.clone(), rx);
            match &self.home {
                Some(home) => drop(home.spawn(commit)),
                None => drop(tokio::spawn(commit)),
            }
            tx
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        if writer.send((u.clone(), reply)).is_err() {
            return Err(StoreError::Io("the token writer stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Io("the token writer stopped".into())))
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE id = ? AND status <> 'disconnected' \
             AND (? IS NULL OR authorized_at_ms = ?)",
        )
        .bind(connection_id)
        .bind(authorized_at_ms)
        .bind(authorized_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(false);
        };
        sqlx::query("UPDATE connections SET status = COALESCE(?, status), last_error = ?, updated_at_ms = ? WHERE id = ?")
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before: Option<String> = sqlx::query_scalar("SELECT status FROM connections WHERE id = ?")
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // 10 parameters a row; SQLite allows 32766 per statement.
        for chunk in events.chunks(1000) {
            let mut query = QueryBuilder::<Sqlite>::new(
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
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_audit_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE last_at_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id, at_ms, last_at_ms, count, tenant_id, key_id, connection_id, kind, via, detail \
             FROM audit_events WHERE 1 = 1",
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
        query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(concat!(
            "UPDATE claim_codes SET used_at_ms = ? WHERE code_hash = ? AND used_at_ms IS NULL RETURNING ",
            claim_code_cols!()
        ))
        .bind(now_ms)
        .bind(code_hash)
        .fetch_all(&mut *tx)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut claim = claim_code_from_row(row)?;
        claim.used_at_ms = None;
        sqlx::query("UPDATE claim_codes SET token_secret = NULL WHERE code_hash = ?")
            .bind(code_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(claim))
    }

    async fn purge_expired(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut purged = 0;
        for sql in [
            "DELETE FROM oauth_states WHERE expires_at_ms < ?",
            "DELETE FROM connect_links WHERE expires_at_ms < ?",
            "DELETE FROM claim_codes WHERE expires_at_ms < ?",
            "DELETE FROM ended_sessions WHERE expires_at_ms < ?",
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
            "INSERT INTO ended_sessions (sid, expires_at_ms) VALUES (?, ?) \
             ON CONFLICT (sid) DO NOTHING",
        )
        .bind(sid)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_ended(&self, sid: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM ended_sessions WHERE sid = ?")
            .bind(sid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    // --- background refresher ---

    async fn claim_due_refreshes(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRefresh>, StoreError> {
        // One statement: atomic against another process claiming the same rows. The partial
        // index is named, since without statistics SQLite prefers the one on `status`.
        let _gate = self.write_gate.lock().await;
        let rows = sqlx::query(concat!(
            "UPDATE connections SET next_refresh_at_ms = ?, refresh_lease_until_ms = ? WHERE id IN ( \
               SELECT id FROM connections INDEXED BY connections_due \
               WHERE status = 'active' AND tenant_secret = 0 AND next_refresh_at_ms <= ? \
               AND refresh_lease_until_ms <= ? \
               ORDER BY next_refresh_at_ms, id LIMIT ?) \
             RETURNING ",
            connection_cols!(),
            ", ",
            schedule_cols!()
        ))
        .bind(now_ms.saturating_add(lease_ms))
        .bind(now_ms.saturating_add(lease_ms.min(crate::REFRESH_LEASE_MS)))
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::from(limit.min(10_000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueRefresh {
                    id: r.try_get("id")?,
                    app: r.try_get("app")?,
                    next_refresh_at_ms: r.try_get("next_refresh_at_ms")?,
                    connection: connection_from_row(r)?,
                    schedule: schedule_from_row(r)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
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
            " FROM connections WHERE id = ?"
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
            " FROM connections WHERE id = ?"
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
            "UPDATE connections SET name = COALESCE(?, name), callback_url = COALESCE(?, callback_url), \
             claimed_at_ms = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(name)
        .bind(callback_url)
        .bind(at_ms)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn take_refresh_lease(&self, id: &str, now_ms: i64, until_ms: i64) -> Result<bool, StoreError> {
        let _gate = self.write_gate.lock().await;
        let done = sqlx::query(
            "UPDATE connections SET refresh_lease_until_ms = ? WHERE id = ? AND refresh_lease_until_ms <= ?",
        )
        .bind(until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_refresh_lease(&self, id: &str) -> Result<(), StoreError> {
        let _gate = self.write_gate.lock().await;
        sqlx::query("UPDATE connections SET refresh_lease_until_ms = 0 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn invalidations_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Invalidation>, StoreError> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, kind, subject FROM invalidations WHERE seq > ? ORDER BY seq LIMIT ?")
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
             WHERE connection_id = ? ORDER BY id DESC LIMIT ?",
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
        let done = sqlx::query("DELETE FROM invalidations WHERE at_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn clear_refresh_leases(&self) -> Result<u64, StoreError> {
        let _gate = self.write_gate.lock().await;
        let done = sqlx::query(
            "UPDATE connections SET refresh_lease_until_ms = 0 WHERE refresh_lease_until_ms <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn set_next_refresh(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let _gate = self.write_gate.lock().await;
        let done = sqlx::query("UPDATE connections SET next_refresh_at_ms = ? WHERE id = ?")
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
        let _gate = self.write_gate.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let failures: Option<i64> = sqlx::query_scalar(
            "UPDATE connections SET refresh_failures = refresh_failures + 1, last_error = ?, \
             updated_at_ms = ? WHERE id = ? AND status = 'active' AND authorized_at_ms = ? \
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
            "UPDATE connections SET retry_at_ms = ?, next_refresh_at_ms = ? WHERE id = ? RETURNING ",
            schedule_cols!()
        ))
        .bind(retry)
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
            "SELECT id FROM connections INDEXED BY connections_profiles_due \
             WHERE status = 'active' AND tenant_secret = 0 AND api = 'ads' \
             AND profiles_check_at_ms <= ? ORDER BY profiles_check_at_ms, id LIMIT ?",
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
            Some(profiles) => sqlx::query(
                "UPDATE connections SET profiles = ?, profiles_check_at_ms = ?, updated_at_ms = ? WHERE id = ?",
            )
            .bind(profiles)
            .bind(next_check_at_ms)
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?,
            None => sqlx::query("UPDATE connections SET profiles_check_at_ms = ? WHERE id = ?")
                .bind(next_check_at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?,
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
            " FROM connections INDEXED BY connections_authorized \
             WHERE status = 'active' AND api = 'sp-api' AND authorized_at_ms <= ? \
             AND (expiry_notice_days IS NULL OR expiry_notice_days > ?) \
             ORDER BY authorized_at_ms, id LIMIT ?"
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE connections SET expiry_notice_days = ? WHERE id = ? AND authorized_at_ms = ? \
             AND (expiry_notice_days IS NULL OR expiry_notice_days > ?)",
        )
        .bind(days)
        .bind(id)
        .bind(authorized_at_ms)
        .bind(days)
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_events_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // The first pending delivery of each order key, if it is due. An earlier one that is
        // pending (even if not due, or claimed by another worker) holds the later ones back.
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = ? WHERE id IN ( \
               SELECT d.id FROM webhook_deliveries d \
               WHERE d.state = 'pending' AND d.next_attempt_at_ms <= ? \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                                 WHERE e.order_key = d.order_key AND e.state = 'pending' AND e.id < d.id) \
               ORDER BY d.id LIMIT ?) \
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
        let mut query = QueryBuilder::<Sqlite>::new(concat!(delivery_select!(), " WHERE d.id IN ("));
        let mut list = query.separated(", ");
        for id in &ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY d.id");
        let rows = query.build().fetch_all(&mut *tx).await?;
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
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_attempt_at_ms = ?, \
             last_attempt_at_ms = ?, last_status = ?, last_error = ?, delivered_at_ms = ? \
             WHERE id = ? AND state = 'pending'",
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

    async fn app_secret(&self, app: &str) -> Result<Option<AppSecret>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_secret_cols!(),
            " FROM app_secrets WHERE app = ?"
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
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app) DO NOTHING"
        ));
        let done = bind_app_secret(query, s).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_app_secret(&self, s: &AppSecret, expected_version: i64) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "UPDATE app_secrets SET app = ?, client_id = ?, secret = ?, secret_issued_at_ms = ?, \
             previous_secret = ?, previous_issued_at_ms = ?, previous_expires_at_ms = ?, \
             config_secret_sha256 = ?, announced_expiry_at_ms = ?, warnings_sent = ?, version = ?, updated_at_ms = ? \
             WHERE app = ? AND version = ?",
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE app_secrets SET \
             warnings_sent = CASE warnings_sent WHEN '' THEN ?1 ELSE warnings_sent || ',' || ?1 END \
             WHERE app = ?2 AND secret_issued_at_ms = ?3 \
             AND instr(',' || warnings_sent || ',', ',' || ?1 || ',') = 0",
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

    async fn webhook_delivery(&self, id: i64) -> Result<Option<WebhookDelivery>, StoreError> {
        let row = sqlx::query(concat!(delivery_select!(), " WHERE d.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(delivery_from_row).transpose()?)
    }

    async fn webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, StoreError> {
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut query = QueryBuilder::<Sqlite>::new(concat!(delivery_select!(), " WHERE 1 = 1"));
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
            .push_bind(i64::from(limit));
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
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at_ms = ?, expires_at_ms = ? \
             WHERE id = ? AND state = 'failed' AND (? IS NULL OR tenant_id = ?)",
        )
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(id)
        .bind(tenant_id)
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let events: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT seq, tenant_id, created_at_ms FROM webhook_events WHERE connection_id = ? AND created_at_ms >= ? ORDER BY seq",
        )
        .bind(connection_id)
        .bind(since_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut added = 0;
        for (seq, tenant_id, _) in events {
            let Some(url) = target_url(&mut tx, tenant_id.as_deref(), target).await? else {
                continue;
            };
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE event_seq = ? AND url = ?")
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

    // --- master key rotation ---

    async fn sealed_rows(
        &self,
        table: &SealedColumns,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
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
            "SELECT {} FROM \"{}\" WHERE \"{}\" = ?",
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
        // (`column1`, `column2…`, then the new ones), each row compare-and-set on its old values,
        // `RETURNING` the ids written. The names are `&'static str` constants of the program
        // (see `SealedColumns`).
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
            .map(|(i, c)| format!(" AND \"{}\".\"{c}\" IS v.column{}", table.table, 2 + i))
            .collect::<String>();
        let (name, id) = (table.table, table.id_column);
        let head = format!("UPDATE \"{name}\" SET {set} FROM (");
        let tail =
            format!(") AS v WHERE \"{name}\".\"{id}\" = v.column1{unchanged} RETURNING \"{name}\".\"{id}\"");
        // SQLite allows 32766 parameters a statement.
        let per_statement = (32_000 / (1 + 2 * n)).clamp(1, 1000);
        let mut written = std::collections::HashSet::with_capacity(rows.len());
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in rows.chunks(per_statement) {
            let mut query = QueryBuilder::<Sqlite>::new(head.clone());
            query.push_values(chunk, |mut values, row| {
                values.push_bind(row.id.clone());
                for value in row.old.iter().chain(&row.new) {
                    values.push_bind(value.clone());
                }
            });
            query.push(tail.clone());
            for row in query.build().fetch_all(&mut *tx).await? {
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
        let mut counts = Vec::new();
        for &column in table.columns {
            let mut query = QueryBuilder::<Sqlite>::new("SELECT substr(\"");
            query.push(column);
            query.push("\", 1, ");
            query.push_bind(i64::from(prefix_len));
            query.push(format!(
                ") AS prefix, count(*) AS n FROM \"{}\" WHERE \"{column}\" IS NOT NULL",
                table.table
            ));
            push_only_ids(&mut query, table);
            query.push(" GROUP BY prefix ORDER BY prefix");
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

fn bind_app_secret<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    s: &'q AppSecret,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
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

fn app_secret_from_row(r: &SqliteRow) -> Result<AppSecret, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("sqlite::memory:").unwrap(), Target::Memory);
        assert_eq!(parse_url("sqlite://:memory:").unwrap(), Target::Memory);
        assert_eq!(
            parse_url("sqlite:data/b.db").unwrap(),
            Target::File("data/b.db".into())
        );
        assert_eq!(
            parse_url("sqlite://data/b.db").unwrap(),
            Target::File("data/b.db".into())
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/b.db").unwrap(),
            Target::File("/var/lib/b.db".into())
        );
        assert_eq!(
            parse_url("sqlite:/var/lib/b.db").unwrap(),
            Target::File("/var/lib/b.db".into())
        );
        assert_eq!(parse_url("SQLITE:b.db").unwrap(), Target::File("b.db".into()));
    }

    #[test]
    fn redaction() {
        // A `@` in the query hides the host too; the query is never shown.
        assert_eq!(redact("postgres://u:pw@db:5432/x?a=b@c"), "postgres://***@c");
        assert_eq!(
            redact("postgres://u:pw@db:5432/x?a=b"),
            "postgres://***@db:5432/x?…"
        );
        assert_eq!(redact("mysql://x"), "mysql://x");
        assert_eq!(redact("nonsense"), "nonsense");
    }
}

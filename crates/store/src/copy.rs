//! Copying every row of one store into another, of either backend: `lwa-broker migrate-store`
//! (SQLite to PostgreSQL, or any other pair), `lwa-broker backup` of a PostgreSQL database into
//! a portable SQLite file, and `lwa-broker restore`.
//!
//! Nothing is re-authorized and nothing is opened: sealed values are sealed with the master key
//! and bound to stable ids (never a row number), so they are copied byte for byte and open on
//! the other side with the same key. The copy needs no key.
//!
//! How it goes ([`copy`]):
//!
//! - the source must be migrated to exactly this build's schema ([`check_source`]); the target
//!   is migrated first;
//! - the source is read in one snapshot (SQLite: one read transaction; PostgreSQL: one
//!   `REPEATABLE READ, READ ONLY` transaction), so a copy of a running database is consistent;
//! - the target is written in one transaction, batch by batch, so a failure leaves it as it was
//!   (empty); a target that already holds tenants or connections is refused unless
//!   [`CopyOptions::replace`] says to replace what it holds;
//! - only the tables of [`COPIED_TABLES`] are copied, never "every table": what is transient or
//!   per database ([`NOT_COPIED_TABLES`]) stays behind. Their columns are read from each
//!   database's catalog and must match on both sides, so a column added by a later migration
//!   is copied without a change here, and a schema this code does not expect is an error rather
//!   than a silent loss;
//! - insertion order is kept: SQLite is read in rowid order, PostgreSQL in `insert_seq` (or
//!   identity) order. `insert_seq` itself is PostgreSQL's and is never copied; the identities
//!   (`webhook_events.seq`, `webhook_deliveries.id`, `audit_events.id`,
//!   `connection_history.id`) are copied as they are,
//!   and on PostgreSQL their sequences are then moved past the largest value;
//! - `connections.refresh_lease_until_ms` is not copied: a lease belongs to a process of the
//!   source database, which cannot end it in the target. Every connection starts without one.
//!
//! **Invariant:** the copy never reads a value's meaning: what is copied is text, integers and
//! flags, converted only between SQLite's `INTEGER` 0/1 and PostgreSQL's `BOOLEAN`.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row, Sqlite, Transaction};

use crate::columns::redact;
use crate::{PgStore, SqliteStore, Store, StoreError};

/// One table the copy carries over, and how PostgreSQL orders and numbers its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedTable {
    /// The table.
    pub name: &'static str,
    /// The column a PostgreSQL source is read in order of: `insert_seq` where the insertion
    /// order matters (ties of equal times), else the identity or the primary key. (A SQLite
    /// source is always read in rowid order, its insertion order.)
    pub postgres_order: &'static str,
    /// The identity column (`BY DEFAULT`) whose values are copied and whose sequence must then
    /// move past them on a PostgreSQL target.
    pub postgres_identity: Option<&'static str>,
}

const fn table(
    name: &'static str,
    postgres_order: &'static str,
    postgres_identity: Option<&'static str>,
) -> CopiedTable {
    CopiedTable {
        name,
        postgres_order,
        postgres_identity,
    }
}

/// The tables copied, in the order they are written (a row's foreign keys before it).
pub const COPIED_TABLES: &[CopiedTable] = &[
    table("meta", "name", None),
    table("tenants", "insert_seq", None),
    table("api_keys", "insert_seq", None),
    table("oauth_states", "state_hash", None),
    table("connect_links", "token_hash", None),
    table("connections", "insert_seq", None),
    table("claim_codes", "code_hash", None),
    table("audit_events", "id", Some("id")),
    table("webhook_events", "seq", Some("seq")),
    table("webhook_deliveries", "id", Some("id")),
    table("app_secrets", "app", None),
    table("connection_history", "id", Some("id")),
    table("ended_sessions", "sid", None),
];

/// The tables of the schema that are deliberately not copied: the migrations' own bookkeeping
/// (each target runs its own), SQLite's AUTOINCREMENT counters (kept by SQLite as rows are
/// inserted), and `invalidations`, the transient signals between running processes.
pub const NOT_COPIED_TABLES: &[&str] = &["_sqlx_migrations", "sqlite_sequence", "invalidations"];

/// Columns never copied: PostgreSQL's own insertion counter (filled by PostgreSQL), and the
/// refresh lease (a source process's, reset to none).
pub const NOT_COPIED_COLUMNS: &[&str] = &["insert_seq", "refresh_lease_until_ms"];

/// Largest number of bound parameters in one statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMETERS: usize = 30_000;

/// A database of either backend, as the copy opens it.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database (or schema).
    Postgres(PgStore),
}

impl Database {
    /// Opens the database a URL names to write into: `sqlite:PATH` (the file created 0600 when
    /// missing) or `postgres://…`. Does not migrate. A URL of neither kind is
    /// [`StoreError::BadUrl`], whose message never shows a password.
    pub async fn open(url: &str) -> Result<Database, StoreError> {
        match backend_of(url)? {
            "sqlite" => Ok(Database::Sqlite(SqliteStore::connect(url).await?)),
            _ => Ok(Database::Postgres(PgStore::connect(url).await?)),
        }
    }

    /// Opens the database a URL names to read from: a SQLite file that must exist, opened
    /// read-only (nothing is written to it), or PostgreSQL.
    pub async fn open_existing(url: &str) -> Result<Database, StoreError> {
        match backend_of(url)? {
            "sqlite" => match crate::sqlite::parse_url(url)? {
                crate::sqlite::Target::File(path) => Database::open_file(&path).await,
                crate::sqlite::Target::Memory => Err(StoreError::BadUrl(
                    "sqlite::memory: is a new, empty database: there is nothing to copy from it".into(),
                )),
            },
            _ => Ok(Database::Postgres(PgStore::connect(url).await?)),
        }
    }

    /// Opens an existing SQLite file read-only (a backup to restore).
    pub async fn open_file(path: &Path) -> Result<Database, StoreError> {
        Ok(Database::Sqlite(SqliteStore::open_read_only(path).await?))
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.store().backend()
    }

    /// The database as a [`Store`].
    pub fn store(&self) -> &dyn Store {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(s) => s,
        }
    }

    /// Applies this build's migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(s) => s.migrate().await,
            Database::Postgres(s) => s.migrate().await,
        }
    }

    /// True when every migration of this build has been applied.
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        match self {
            Database::Sqlite(s) => s.migrations_current().await,
            Database::Postgres(s) => s.migrations_current().await,
        }
    }

    /// Closes the database's connections (and, for SQLite, folds its write-ahead log back into
    /// the file), waiting for them to be returned.
    pub async fn close(&self) {
        match self {
            Database::Sqlite(s) => s.pool().close().await,
            Database::Postgres(s) => s.pool().close().await,
        }
    }

    /// How many tenants and connections it holds; `None` when it has no tables yet.
    pub async fn holdings(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let exists: bool = match self {
            Database::Sqlite(s) => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'connections')",
            )
            .fetch_one(s.pool())
            .await?,
            Database::Postgres(s) => {
                sqlx::query_scalar("SELECT to_regclass('connections') IS NOT NULL")
                    .fetch_one(s.pool())
                    .await?
            }
        };
        if !exists {
            return Ok(None);
        }
        let sql = "SELECT (SELECT COUNT(*) FROM tenants), (SELECT COUNT(*) FROM connections)";
        let (tenants, connections): (i64, i64) = match self {
            Database::Sqlite(s) => sqlx::query_as(sql).fetch_one(s.pool()).await?,
            Database::Postgres(s) => sqlx::query_as(sql).fetch_one(s.pool()).await?,
        };
        Ok(Some((tenants as u64, connections as u64)))
    }

    /// The rows of each copied table, in [`COPIED_TABLES`] order (one snapshot).
    pub async fn row_counts(&self) -> Result<Vec<TableCount>, StoreError> {
        let mut tx = Tx::read(self).await?;
        let mut counts = Vec::with_capacity(COPIED_TABLES.len());
        for spec in COPIED_TABLES {
            counts.push(TableCount {
                table: spec.name,
                rows: tx.count(spec.name).await?,
            });
        }
        tx.finish().await?;
        Ok(counts)
    }
}

/// `sqlite` or `postgres` for a URL of either kind; `BadUrl` otherwise.
fn backend_of(url: &str) -> Result<&'static str, StoreError> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        Ok("sqlite")
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok("postgres")
    } else {
        Err(StoreError::BadUrl(format!(
            "unsupported database URL \"{}\": expected sqlite:PATH or postgres://USER@HOST/DATABASE",
            redact(url)
        )))
    }
}

/// How to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Rows read and written at a time (at least 1).
    pub batch_size: u32,
    /// Replace whatever the target holds, tenants and connections included (in the same
    /// transaction as the copy). Without it, a target holding tenants or connections is refused.
    pub replace: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_size: 1000,
            replace: false,
        }
    }
}

/// Where a copy is, after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    /// The table being copied.
    pub table: &'static str,
    /// Its rows copied so far.
    pub table_rows: u64,
    /// Its rows in the source.
    pub table_total: u64,
    /// Rows copied so far, every table.
    pub rows: u64,
    /// Rows to copy, every table.
    pub total: u64,
}

/// How many rows one table had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCount {
    /// The table.
    pub table: &'static str,
    /// Its rows.
    pub rows: u64,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied per table, in [`COPIED_TABLES`] order.
    pub tables: Vec<TableCount>,
    /// Rows the target held before and that the copy replaced, per table (only tables that had
    /// some): with [`CopyOptions::replace`] anything; without it, what a server started on an
    /// empty database writes (its key check, the apps' client secrets, operator events).
    pub replaced: Vec<TableCount>,
    /// How long the copy took.
    pub elapsed: Duration,
}

impl CopyReport {
    /// Rows copied, every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why a copy did not happen. Whatever the reason, the target holds what it held before (its
/// migrations aside, when the failure came after them).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds tenants or connections, and replacing them was not asked for.
    #[error(
        "the target database already holds {tenants} tenant(s) and {connections} connection(s), so \
         nothing was written"
    )]
    TargetNotEmpty {
        /// Tenants in the target.
        tenants: u64,
        /// Connections in the target.
        connections: u64,
    },
    /// The source's schema is older than this build's (or it was never migrated).
    #[error("the source database's schema is older than this version of lwa-broker")]
    SourceOutdated,
    /// The source was migrated by a newer build, which may have tables this one does not know.
    #[error(
        "the source database was migrated by a newer version of lwa-broker (migration {0}); copy it with \
         that version"
    )]
    SourceNewer(i64),
    /// A table or column is not what this build expects on one side.
    #[error("{0}")]
    Schema(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(StoreError::Database(e))
    }
}

/// Refuses a source whose schema is not exactly this build's: older (not every migration
/// applied) or newer (migrations this build does not have).
pub async fn check_source(source: &Database) -> Result<(), CopyError> {
    if !source.migrations_current().await? {
        return Err(CopyError::SourceOutdated);
    }
    let (applied, known) = match source {
        Database::Sqlite(s) => (
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(s.pool())
                .await?,
            crate::sqlite::MIGRATOR.iter().map(|m| m.version).max(),
        ),
        Database::Postgres(s) => (
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(s.pool())
                .await?,
            crate::postgres::MIGRATOR.iter().map(|m| m.version).max(),
        ),
    };
    match (applied, known) {
        (Some(applied), Some(known)) if applied > known => Err(CopyError::SourceNewer(applied)),
        _ => Ok(()),
    }
}

/// Copies every row of the [`COPIED_TABLES`] from `source` into `target` (see the module
/// docs), calling `progress` as it goes. The target is migrated first; the source must be
/// current ([`check_source`]).
pub async fn copy(
    source: &Database,
    target: &Database,
    options: CopyOptions,
    progress: &mut (dyn FnMut(&CopyProgress) + Send),
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    check_source(source).await?;
    // Refused before the migrations touch an older target that holds data.
    if !options.replace
        && let Some((tenants, connections)) = target.holdings().await?
        && tenants + connections > 0
    {
        return Err(CopyError::TargetNotEmpty { tenants, connections });
    }
    target.migrate().await?;

    let mut reader = Tx::read(source).await?;
    let mut writer = Tx::write(target).await?;
    let result = copy_in(&mut reader, &mut writer, options, progress).await;
    reader.finish().await?;
    match result {
        Ok((tables, replaced)) => {
            writer.commit().await?;
            let report = CopyReport {
                tables,
                replaced,
                elapsed: started.elapsed(),
            };
            tracing::info!(
                from = source.backend(),
                to = target.backend(),
                rows = report.rows(),
                "copied the store"
            );
            Ok(report)
        }
        Err(e) => {
            // Dropping the transaction rolls it back; say so explicitly all the same.
            let _ = writer.rollback().await;
            Err(e)
        }
    }
}

/// The copy proper, inside the reader's snapshot and the writer's transaction.
async fn copy_in(
    reader: &mut Tx,
    writer: &mut Tx,
    options: CopyOptions,
    progress: &mut (dyn FnMut(&CopyProgress) + Send),
) -> Result<(Vec<TableCount>, Vec<TableCount>), CopyError> {
    let (tenants, connections) = (writer.count("tenants").await?, writer.count("connections").await?);
    if !options.replace && tenants + connections > 0 {
        return Err(CopyError::TargetNotEmpty { tenants, connections });
    }

    // Every table's columns, checked on both sides before anything is written.
    let mut plans = Vec::with_capacity(COPIED_TABLES.len());
    for spec in COPIED_TABLES {
        let from = reader.columns(spec.name).await?;
        let to = writer.columns(spec.name).await?;
        plans.push(TablePlan::new(spec, &from, &to, reader.is_sqlite())?);
    }

    // What the target holds is replaced, dependents first.
    let mut replaced = Vec::new();
    for spec in COPIED_TABLES.iter().rev() {
        let rows = writer.delete_all(spec.name).await?;
        if rows > 0 {
            replaced.push(TableCount {
                table: spec.name,
                rows,
            });
        }
    }
    replaced.reverse();

    let mut totals = Vec::with_capacity(plans.len());
    for plan in &plans {
        totals.push(reader.count(plan.spec.name).await?);
    }
    let total: u64 = totals.iter().sum();
    let batch = options.batch_size.max(1) as usize;
    let mut rows_done = 0;
    let mut tables = Vec::with_capacity(plans.len());
    for (plan, &table_total) in plans.iter().zip(&totals) {
        let mut at = CopyProgress {
            table: plan.spec.name,
            table_rows: 0,
            table_total,
            rows: rows_done,
            total,
        };
        progress(&at);
        let mut after = None;
        loop {
            let (rows, last_key) = reader.read_batch(plan, after.as_ref(), batch).await?;
            if rows.is_empty() {
                break;
            }
            let count = rows.len() as u64;
            writer.insert(plan, rows).await?;
            at.table_rows += count;
            at.rows += count;
            progress(&at);
            after = last_key;
        }
        if let Some(identity) = plan.spec.postgres_identity {
            writer.move_identity(plan.spec.name, identity).await?;
        }
        rows_done = at.rows;
        tables.push(TableCount {
            table: plan.spec.name,
            rows: at.table_rows,
        });
    }
    Ok((tables, replaced))
}

/// The kind of a column's values, as the copy carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bool,
}

impl Kind {
    /// From a declared type: SQLite's (`INTEGER`, `TEXT`) or PostgreSQL's (`bigint`, `text`,
    /// `boolean`).
    fn of(declared: &str) -> Option<Kind> {
        match declared.to_ascii_lowercase().as_str() {
            "integer" | "bigint" => Some(Kind::Int),
            "text" => Some(Kind::Text),
            "boolean" => Some(Kind::Bool),
            _ => None,
        }
    }
}

/// One value read, with its kind even when NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

impl Value {
    /// The value as the target's column takes it: SQLite's 0/1 and PostgreSQL's booleans
    /// cross over; anything else must already be of the target's kind.
    fn into_kind(self, kind: Kind) -> Result<Value, String> {
        match (self, kind) {
            (v @ Value::Int(_), Kind::Int)
            | (v @ Value::Text(_), Kind::Text)
            | (v @ Value::Bool(_), Kind::Bool) => Ok(v),
            (Value::Bool(b), Kind::Int) => Ok(Value::Int(b.map(i64::from))),
            (Value::Int(None), Kind::Bool) => Ok(Value::Bool(None)),
            (Value::Int(Some(i @ (0 | 1))), Kind::Bool) => Ok(Value::Bool(Some(i == 1))),
            (Value::Int(Some(i)), Kind::Bool) => Err(format!("{i} is not a boolean (0 or 1)")),
            (v, kind) => Err(format!("a {v:?} cannot go into a {kind:?} column")),
        }
    }
}

/// One table's copy: which columns, of which kinds on each side, and how the source is paged.
#[derive(Debug)]
struct TablePlan {
    spec: &'static CopiedTable,
    /// `"a", "b", …`, quoted.
    column_list: String,
    source_kinds: Vec<Kind>,
    target_kinds: Vec<Kind>,
    /// The source's paging column and its kind (SQLite: `rowid`).
    key: (String, Kind),
}

impl TablePlan {
    fn new(
        spec: &'static CopiedTable,
        from: &[(String, Kind)],
        to: &[(String, Kind)],
        source_is_sqlite: bool,
    ) -> Result<TablePlan, CopyError> {
        let table = spec.name;
        if from.is_empty() || to.is_empty() {
            let side = if from.is_empty() { "source" } else { "target" };
            return Err(CopyError::Schema(format!(
                "the {side} database has no table {table}"
            )));
        }
        let copied = |cols: &[(String, Kind)]| -> Vec<(String, Kind)> {
            cols.iter()
                .filter(|(name, _)| !NOT_COPIED_COLUMNS.contains(&name.as_str()))
                .cloned()
                .collect()
        };
        let (from_copied, to_copied) = (copied(from), copied(to));
        let mut names = Vec::with_capacity(from_copied.len());
        let (mut source_kinds, mut target_kinds) = (Vec::new(), Vec::new());
        for (name, kind) in &from_copied {
            let Some((_, to_kind)) = to_copied.iter().find(|(n, _)| n == name) else {
                return Err(CopyError::Schema(format!(
                    "column {table}.{name} of the source database is not in the target database"
                )));
            };
            if name.contains('"') {
                return Err(CopyError::Schema(format!(
                    "unexpected column name {table}.{name:?}"
                )));
            }
            names.push(format!("\"{name}\""));
            source_kinds.push(*kind);
            target_kinds.push(*to_kind);
        }
        if let Some((name, _)) = to_copied
            .iter()
            .find(|(n, _)| !from_copied.iter().any(|(f, _)| f == n))
        {
            return Err(CopyError::Schema(format!(
                "column {table}.{name} of the target database is not in the source database"
            )));
        }
        let key = if source_is_sqlite {
            ("rowid".to_owned(), Kind::Int)
        } else {
            let order = spec.postgres_order;
            let kind = from
                .iter()
                .find(|(n, _)| n == order)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    CopyError::Schema(format!("the source database has no column {table}.{order}"))
                })?;
            (format!("\"{order}\""), kind)
        };
        Ok(TablePlan {
            spec,
            column_list: names.join(", "),
            source_kinds,
            target_kinds,
            key,
        })
    }

    /// Rows per `INSERT`, within the parameter limit.
    fn rows_per_statement(&self) -> usize {
        (MAX_PARAMETERS / self.target_kinds.len().max(1)).max(1)
    }

    /// A page of the source: the copied columns, then the key; `$1`-style placeholders for
    /// PostgreSQL, `?1` for SQLite. With `after`, the key bound first, then the limit.
    fn select(&self, after: bool, sqlite: bool) -> String {
        let (table, (key, _)) = (self.spec.name, &self.key);
        let p = |n: u32| if sqlite { format!("?{n}") } else { format!("${n}") };
        let (filter, limit) = if after {
            (format!(" WHERE {key} > {}", p(1)), p(2))
        } else {
            (String::new(), p(1))
        };
        format!(
            "SELECT {}, {key} FROM \"{table}\"{filter} ORDER BY {key} LIMIT {limit}",
            self.column_list
        )
    }
}

/// One transaction on either backend: the source's snapshot or the target's write.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// A read-only snapshot.
    async fn read(db: &Database) -> Result<Tx, StoreError> {
        Ok(match db {
            // The first read fixes the snapshot (WAL): writers go on, this transaction sees none
            // of their changes.
            Database::Sqlite(s) => Tx::Sqlite(s.pool().begin().await?),
            Database::Postgres(s) => Tx::Postgres(
                s.pool()
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    /// The write transaction (SQLite: holding the write lock from the start).
    async fn write(db: &Database) -> Result<Tx, StoreError> {
        Ok(match db {
            Database::Sqlite(s) => Tx::Sqlite(s.pool().begin_with("BEGIN IMMEDIATE").await?),
            Database::Postgres(s) => Tx::Postgres(s.pool().begin().await?),
        })
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Tx::Sqlite(_))
    }

    /// A table's columns in order, with their kinds; empty when there is no such table.
    async fn columns(&mut self, table: &str) -> Result<Vec<(String, Kind)>, CopyError> {
        let declared: Vec<(String, String)> = match self {
            Tx::Sqlite(tx) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(&mut **tx)
                    .await?
            }
            // Resolved through the search path, as the broker's own queries are.
            Tx::Postgres(tx) => {
                sqlx::query_as(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
                     ORDER BY a.attnum",
                )
                .bind(table)
                .fetch_all(&mut **tx)
                .await?
            }
        };
        declared
            .into_iter()
            .map(|(name, declared)| match Kind::of(&declared) {
                Some(kind) => Ok((name, kind)),
                None => Err(CopyError::Schema(format!(
                    "column {table}.{name} has the type {declared}, which the copy does not know"
                ))),
            })
            .collect()
    }

    async fn count(&mut self, table: &str) -> Result<u64, StoreError> {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{table}\""));
        let n: i64 = match self {
            Tx::Sqlite(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await?,
            Tx::Postgres(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await?,
        };
        Ok(n as u64)
    }

    async fn delete_all(&mut self, table: &str) -> Result<u64, StoreError> {
        let sql = AssertSqlSafe(format!("DELETE FROM \"{table}\""));
        Ok(match self {
            Tx::Sqlite(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
            Tx::Postgres(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Up to `limit` rows after the key `after`, in key order, and the last row's key.
    async fn read_batch(
        &mut self,
        plan: &TablePlan,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<(Vec<Vec<Value>>, Option<Value>), CopyError> {
        let limit = limit as i64;
        let n = plan.source_kinds.len();
        let mut rows = Vec::new();
        let mut last = None;
        match self {
            Tx::Sqlite(tx) => {
                let query = sqlx::query(AssertSqlSafe(plan.select(after.is_some(), true)));
                let query = match after {
                    Some(key) => bind_sqlite(query, key).bind(limit),
                    None => query.bind(limit),
                };
                for row in query.fetch_all(&mut **tx).await? {
                    rows.push(decode_sqlite(&row, &plan.source_kinds)?);
                    last = Some(decode_sqlite_one(&row, n, plan.key.1)?);
                }
            }
            Tx::Postgres(tx) => {
                let query = sqlx::query(AssertSqlSafe(plan.select(after.is_some(), false)));
                let query = match after {
                    Some(key) => bind_pg(query, key).bind(limit),
                    None => query.bind(limit),
                };
                for row in query.fetch_all(&mut **tx).await? {
                    rows.push(decode_pg(&row, &plan.source_kinds)?);
                    last = Some(decode_pg_one(&row, n, plan.key.1)?);
                }
            }
        }
        Ok((rows, last))
    }

    /// Writes rows, converted to the target's kinds, in as few statements as the parameter
    /// limit allows.
    async fn insert(&mut self, plan: &TablePlan, rows: Vec<Vec<Value>>) -> Result<(), CopyError> {
        let mut converted = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for ((value, kind), i) in row.into_iter().zip(&plan.target_kinds).zip(0..) {
                values.push(value.into_kind(*kind).map_err(|why| {
                    let column = plan.column_list.split(", ").nth(i).unwrap_or("?");
                    CopyError::Schema(format!("{}.{column}: {why}", plan.spec.name))
                })?);
            }
            converted.push(values);
        }
        let head = format!("INSERT INTO \"{}\" ({}) ", plan.spec.name, plan.column_list);
        for chunk in converted.chunks(plan.rows_per_statement()) {
            match self {
                Tx::Sqlite(tx) => {
                    let mut query = QueryBuilder::<Sqlite>::new(head.clone());
                    query.push_values(chunk, |mut b, row| {
                        for value in row {
                            match value {
                                Value::Int(v) => b.push_bind(v),
                                Value::Text(v) => b.push_bind(v),
                                Value::Bool(v) => b.push_bind(v),
                            };
                        }
                    });
                    query.build().execute(&mut **tx).await?;
                }
                Tx::Postgres(tx) => {
                    let mut query = QueryBuilder::<Postgres>::new(head.clone());
                    query.push_values(chunk, |mut b, row| {
                        for value in row {
                            match value {
                                Value::Int(v) => b.push_bind(v),
                                Value::Text(v) => b.push_bind(v),
                                Value::Bool(v) => b.push_bind(v),
                            };
                        }
                    });
                    query.build().execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// On PostgreSQL, moves an identity's sequence past the largest copied value, so the next
    /// row gets a new one. (SQLite's AUTOINCREMENT follows inserted values by itself.)
    async fn move_identity(&mut self, table: &str, column: &str) -> Result<(), StoreError> {
        if let Tx::Postgres(tx) = self {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE(MAX(\"{column}\"), 0) + 1, \
                 false) FROM \"{table}\""
            );
            sqlx::query(AssertSqlSafe(sql)).execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// Ends a read: nothing to keep.
    async fn finish(self) -> Result<(), StoreError> {
        self.rollback().await
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn bind_sqlite<'q>(query: SqliteQuery<'q>, value: &Value) -> SqliteQuery<'q> {
    match value {
        Value::Int(v) => query.bind(*v),
        Value::Text(v) => query.bind(v.clone()),
        Value::Bool(v) => query.bind(*v),
    }
}

fn bind_pg<'q>(query: PgQuery<'q>, value: &Value) -> PgQuery<'q> {
    match value {
        Value::Int(v) => query.bind(*v),
        Value::Text(v) => query.bind(v.clone()),
        Value::Bool(v) => query.bind(*v),
    }
}

fn decode_sqlite_one(row: &SqliteRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int => Value::Int(row.try_get(i)?),
        Kind::Text => Value::Text(row.try_get(i)?),
        Kind::Bool => Value::Bool(row.try_get(i)?),
    })
}

fn decode_sqlite(row: &SqliteRow, kinds: &[Kind]) -> Result<Vec<Value>, sqlx::Error> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| decode_sqlite_one(row, i, *kind))
        .collect()
}

fn decode_pg_one(row: &PgRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int => Value::Int(row.try_get(i)?),
        Kind::Text => Value::Text(row.try_get(i)?),
        Kind::Bool => Value::Bool(row.try_get(i)?),
    })
}

fn decode_pg(row: &PgRow, kinds: &[Kind]) -> Result<Vec<Value>, sqlx::Error> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| decode_pg_one(row, i, *kind))
        .collect()
}

/// Writes a portable backup of `source` to the SQLite file `path`, which must not exist: a
/// SQLite database through `VACUUM INTO` (a consistent copy, safe while it is in use); a
/// PostgreSQL database through [`copy`] from one `REPEATABLE READ` snapshot into a new SQLite
/// file with this build's schema. Either way the file (mode 0600 on unix) is a SQLite
/// database that `restore` reads and `serve` could run on. Answers its rows per table.
pub async fn backup(
    source: &Database,
    path: &Path,
    progress: &mut (dyn FnMut(&CopyProgress) + Send),
) -> Result<Vec<TableCount>, CopyError> {
    check_source(source).await?;
    match source {
        Database::Sqlite(store) => {
            store.backup_to(path).await?;
            let written = Database::open_file(path).await?;
            let counts = written.row_counts().await;
            written.close().await;
            Ok(counts?)
        }
        Database::Postgres(_) => {
            // Created here, not by the store, so an existing file is refused without a race.
            crate::sqlite::open_new_private(path).map_err(|e| {
                StoreError::Io(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    format!("backup target {} already exists", path.display())
                } else {
                    format!("cannot create backup file {}: {e}", path.display())
                })
            })?;
            let result = backup_into(source, path, progress).await;
            if result.is_err() {
                remove_sqlite_files(path);
            }
            result
        }
    }
}

async fn backup_into(
    source: &Database,
    path: &Path,
    progress: &mut (dyn FnMut(&CopyProgress) + Send),
) -> Result<Vec<TableCount>, CopyError> {
    let target = Database::Sqlite(SqliteStore::open_path(path).await?);
    let copied = copy(source, &target, CopyOptions::default(), progress).await;
    // Closing the last connection folds the write-ahead log back into the file.
    target.close().await;
    let report = copied?;
    // One file, no log beside it: a backup is copied around on its own.
    set_rollback_journal(path).await?;
    Ok(report.tables)
}

/// Leaves WAL mode, so the file is a plain single-file database.
async fn set_rollback_journal(path: &Path) -> Result<(), CopyError> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Removes a SQLite file and its companions, best effort.
fn remove_sqlite_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let _ = std::fs::remove_file(companion);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cross_between_sqlite_integers_and_postgresql_booleans() {
        assert_eq!(
            Value::Int(Some(1)).into_kind(Kind::Bool),
            Ok(Value::Bool(Some(true)))
        );
        assert_eq!(
            Value::Int(Some(0)).into_kind(Kind::Bool),
            Ok(Value::Bool(Some(false)))
        );
        assert_eq!(Value::Int(None).into_kind(Kind::Bool), Ok(Value::Bool(None)));
        assert_eq!(
            Value::Bool(Some(true)).into_kind(Kind::Int),
            Ok(Value::Int(Some(1)))
        );
        assert!(Value::Int(Some(2)).into_kind(Kind::Bool).is_err());
        assert!(Value::Text(Some("1".into())).into_kind(Kind::Int).is_err());
        assert_eq!(
            Value::Text(Some("lwa1.x".into())).into_kind(Kind::Text),
            Ok(Value::Text(Some("lwa1.x".into())))
        );
    }

    #[test]
    fn declared_types_of_both_backends_are_known() {
        assert_eq!(Kind::of("INTEGER"), Some(Kind::Int));
        assert_eq!(Kind::of("bigint"), Some(Kind::Int));
        assert_eq!(Kind::of("TEXT"), Some(Kind::Text));
        assert_eq!(Kind::of("boolean"), Some(Kind::Bool));
        assert_eq!(Kind::of("bytea"), None);
    }

    #[test]
    fn urls_of_neither_backend_are_refused_without_their_password() {
        let Err(StoreError::BadUrl(message)) = backend_of("mysql://root:hunter2@db/broker") else {
            panic!("accepted")
        };
        assert!(
            message.contains("expected sqlite:PATH or postgres://"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(backend_of("sqlite:broker.db").unwrap(), "sqlite");
        assert_eq!(backend_of("postgresql://db/broker").unwrap(), "postgres");
    }
}

//! Master key rotation: re-seal every sealed value in the database with the newest master key
//! while servers keep serving (`lwa-broker keys rotate`), and count values per key
//! (`lwa-broker keys status`).
//!
//! [`SEALED_TABLES`] is the one list of where sealed values live and which AEAD identity each is
//! bound to; a new table of sealed values is one more line there.
//!
//! **Invariant:** only the outer, master-key layer is re-sealed; a tenant-held layer inside it
//! (`tenant.…`, see [`crate::sealing`]) is carried over byte for byte, so rotation never needs a
//! tenant's secret.
//!
//! **Concurrency:** every row is written compare-and-set on the sealed values it was read with,
//! in batched `BEGIN IMMEDIATE` transactions. A row a server changed meanwhile (a refresh that
//! stored new tokens) is re-read and planned again, never overwritten; values a server already
//! sealed with the newest key are left as they are.
//!
//! **Resumable:** a value's key is in its prefix (`lwa1.<fingerprint>.`), so a run that was
//! killed and started again skips what is already done and finishes the job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lwa_seal::{AeadIdentity, KeyFingerprint, Keyring, SealedValue};
use lwa_store::{PrefixCount, ResealRow, SealedColumns, SealedRow, Store, StoreError};

/// Whose value it is: the AEAD owner of a sealed column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The row's id (a connection id, a state hash, …).
    Id,
    /// A constant before the row's id, e.g. `app:` and the app name.
    Prefixed(&'static str),
    /// The same owner for every row, e.g. `meta`.
    Fixed(&'static str),
}

/// The AEAD field of a sealed column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The column's name (`refresh_token`, `token_secret`, …).
    Column,
    /// The row's id (`meta`'s rows: the field is the name, e.g. `key_check`).
    Id,
    /// One name per sealed column, in the columns' order, where they differ from the columns'
    /// (`app_secrets.secret` is sealed as `client_secret`).
    Named(&'static [&'static str]),
}

/// One table's sealed columns and the identity their values are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedTable {
    /// Where the values are.
    pub columns: SealedColumns,
    /// The AEAD owner of a row's values.
    pub owner: Owner,
    /// The AEAD field of a column's values.
    pub field: Field,
}

impl SealedTable {
    /// The identity a value of `column` in row `id` is sealed for.
    ///
    /// ```
    /// use lwa_server::rotation::SEALED_TABLES;
    ///
    /// let meta = SEALED_TABLES.iter().find(|t| t.columns.table == "meta").unwrap();
    /// assert_eq!(meta.identity("key_check", "value").to_string(), "meta/key_check");
    /// ```
    pub fn identity(&self, id: &str, column: &str) -> AeadIdentity {
        let field = match self.field {
            Field::Column => column,
            Field::Id => id,
            Field::Named(names) => self
                .columns
                .columns
                .iter()
                .position(|c| *c == column)
                .and_then(|i| names.get(i))
                .copied()
                .unwrap_or(column),
        };
        match self.owner {
            Owner::Id => AeadIdentity::new(id, field),
            Owner::Prefixed(prefix) => AeadIdentity::new(&format!("{prefix}{id}"), field),
            Owner::Fixed(owner) => AeadIdentity::new(owner, field),
        }
    }
}

const fn table(
    table: &'static str,
    id_column: &'static str,
    columns: &'static [&'static str],
    owner: Owner,
    field: Field,
) -> SealedTable {
    SealedTable {
        columns: SealedColumns {
            table,
            id_column,
            columns,
            only_ids: &[],
        },
        owner,
        field,
    }
}

/// Every sealed value of the database: (table, id column, sealed columns, AEAD owner and field).
///
/// Whoever seals a value must use the identity its line names: a connection's tokens and a
/// tenant's `signing_secret` are owned by the row's id, the onboarding secrets by their hash,
/// apps' client secrets (columns `secret` and `previous_secret`) by `app:<name>` as
/// `client_secret` and `previous_client_secret`, the key check by `meta`. A new table of sealed
/// values is one more line.
pub const SEALED_TABLES: &[SealedTable] = &[
    table(
        "connections",
        "id",
        &["refresh_token", "access_token"],
        Owner::Id,
        Field::Column,
    ),
    table("tenants", "id", &["signing_secret"], Owner::Id, Field::Column),
    table(
        "oauth_states",
        "state_hash",
        &["token_secret", "code_verifier"],
        Owner::Id,
        Field::Column,
    ),
    table(
        "connect_links",
        "token_hash",
        &["token_secret"],
        Owner::Id,
        Field::Column,
    ),
    table(
        "claim_codes",
        "code_hash",
        &["token_secret"],
        Owner::Id,
        Field::Column,
    ),
    table(
        "app_secrets",
        "app",
        &["secret", "previous_secret"],
        Owner::Prefixed("app:"),
        Field::Named(&["client_secret", "previous_client_secret"]),
    ),
    SealedTable {
        columns: SealedColumns {
            table: "meta",
            id_column: "name",
            columns: &["value"],
            only_ids: &[crate::state::KEY_CHECK],
        },
        owner: Owner::Fixed("meta"),
        field: Field::Id,
    },
];

/// Length of a sealed value's key prefix, `lwa1.<16 hex>.`.
const KEY_PREFIX_LEN: u32 = 22;

/// How a rotation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateOptions {
    /// Rows read and written per transaction (default 1000): short enough that a server's
    /// writes wait a few milliseconds at most.
    pub batch_size: u32,
    /// At most this many rows a second (`None`: as fast as it goes), to spare a busy database.
    pub max_rows_per_second: Option<u32>,
}

impl Default for RotateOptions {
    fn default() -> RotateOptions {
        RotateOptions {
            batch_size: 1000,
            max_rows_per_second: None,
        }
    }
}

/// How many times a row changed by someone else is re-read before it is left for the next run.
const MAX_ATTEMPTS: u32 = 5;

/// A value that could not be re-sealed: what and why, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueFailure {
    /// The table.
    pub table: &'static str,
    /// The row's id.
    pub id: String,
    /// The column.
    pub column: &'static str,
    /// Why (an unknown key, a value that does not open for its identity, not a sealed value).
    pub reason: String,
}

/// One table's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: &'static str,
    /// Rows read.
    pub rows: u64,
    /// Values re-sealed with the newest key.
    pub resealed: u64,
    /// Values already on the newest key, left as they were.
    pub already_new: u64,
    /// Rows that changed between their read and their write (a concurrent refresh), re-read
    /// and tried again.
    pub changed_concurrently: u64,
    /// Rows still changing after every attempt, left for the next run.
    pub gave_up: u64,
    /// Values that could not be opened.
    pub failures: Vec<ValueFailure>,
}

/// How many values one key seals, per table and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key; `None` for values that are not sealed values at all.
    pub fingerprint: Option<KeyFingerprint>,
    /// `(table, column)` → count.
    pub columns: BTreeMap<(&'static str, &'static str), u64>,
}

impl KeyUsage {
    /// Values in all.
    pub fn total(&self) -> u64 {
        self.columns.values().sum()
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationReport {
    /// The key every value should now be sealed with.
    pub newest: KeyFingerprint,
    /// Per table, in [`SEALED_TABLES`] order.
    pub tables: Vec<TableReport>,
    /// Values per key after the run, read back from the database.
    pub usage: Vec<KeyUsage>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RotationReport {
    /// Values still sealed with another key than the newest (or not sealed): 0 after a
    /// complete rotation.
    pub fn still_on_other_keys(&self) -> u64 {
        self.usage
            .iter()
            .filter(|u| u.fingerprint != Some(self.newest))
            .map(KeyUsage::total)
            .sum()
    }

    /// Rows read in all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Rows read per second.
    pub fn rows_per_second(&self) -> f64 {
        self.rows() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The configured keys (of `configured`) that seal no value any more and can be removed.
    pub fn unused_keys(&self, configured: &[KeyFingerprint]) -> Vec<KeyFingerprint> {
        configured
            .iter()
            .copied()
            .filter(|fp| *fp != self.newest)
            .filter(|fp| {
                !self
                    .usage
                    .iter()
                    .any(|u| u.fingerprint == Some(*fp) && u.total() > 0)
            })
            .collect()
    }
}

/// Where a rotation is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The table being re-sealed.
    pub table: &'static str,
    /// Values looked at so far, all tables.
    pub values_done: u64,
    /// Values in the database when the run started, all tables.
    pub values_total: u64,
    /// Values re-sealed so far, all tables.
    pub resealed: u64,
}

/// Counts the sealed values of every table per key.
pub async fn key_usage(store: &dyn Store) -> Result<Vec<KeyUsage>, StoreError> {
    let mut usage: BTreeMap<Option<KeyFingerprint>, KeyUsage> = BTreeMap::new();
    for table in SEALED_TABLES {
        for PrefixCount {
            column,
            prefix,
            count,
        } in store.sealed_prefix_counts(&table.columns, KEY_PREFIX_LEN).await?
        {
            let fingerprint = fingerprint_of_prefix(&prefix);
            *usage
                .entry(fingerprint)
                .or_insert_with(|| KeyUsage {
                    fingerprint,
                    columns: BTreeMap::new(),
                })
                .columns
                .entry((table.columns.table, column))
                .or_default() += count;
        }
    }
    Ok(usage.into_values().collect())
}

fn fingerprint_of_prefix(prefix: &str) -> Option<KeyFingerprint> {
    prefix.strip_prefix("lwa1.")?.strip_suffix('.')?.parse().ok()
}

/// Re-seals every sealed value of [`SEALED_TABLES`] with `keyring`'s newest key. `progress` is
/// called after every batch.
pub async fn rotate(
    store: &dyn Store,
    keyring: &Keyring,
    options: RotateOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<RotationReport, StoreError> {
    let started = Instant::now();
    let newest = keyring.newest_fingerprint();
    let newest_prefix = format!("lwa1.{newest}.");
    let values_total = key_usage(store).await?.iter().map(KeyUsage::total).sum();
    let batch_size = options.batch_size.max(1);
    let mut at = Progress {
        table: SEALED_TABLES[0].columns.table,
        values_done: 0,
        values_total,
        resealed: 0,
    };
    let mut rows_done = 0u64;
    let mut tables = Vec::with_capacity(SEALED_TABLES.len());
    for table in SEALED_TABLES {
        let mut report = TableReport {
            table: table.columns.table,
            ..TableReport::default()
        };
        at.table = table.columns.table;
        // The next batch is read and opened while the current one is written.
        let mut batch = read_batch(store, keyring, &newest_prefix, table, None, batch_size).await?;
        while let Some(last_id) = batch.last_id.take() {
            let done_before = report.resealed + report.already_new + report.failures.len() as u64;
            let (written, next) = tokio::join!(
                write_batch(store, keyring, &newest_prefix, table, batch.plans, &mut report),
                read_batch(store, keyring, &newest_prefix, table, Some(last_id), batch_size),
            );
            written?;
            report.rows += batch.rows;
            rows_done += batch.rows;
            batch = next?;
            let done_after = report.resealed + report.already_new + report.failures.len() as u64;
            at.values_done += done_after - done_before;
            at.resealed = tables.iter().map(|t: &TableReport| t.resealed).sum::<u64>() + report.resealed;
            progress(at);
            if let Some(rate) = options.max_rows_per_second.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(rows_done as f64 / f64::from(rate));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        tracing::info!(
            table = report.table,
            rows = report.rows,
            resealed = report.resealed,
            already_new = report.already_new,
            changed_concurrently = report.changed_concurrently,
            failures = report.failures.len(),
            "re-sealed a table"
        );
        tables.push(report);
    }
    Ok(RotationReport {
        newest,
        tables,
        usage: key_usage(store).await?,
        elapsed: started.elapsed(),
    })
}

/// What to do with one row.
struct Plan {
    update: Option<ResealRow>,
    resealed: u64,
    already_new: u64,
    failures: Vec<ValueFailure>,
}

/// Opens and re-seals the values of one row that are not on the newest key.
fn plan(keyring: &Keyring, newest_prefix: &str, table: &SealedTable, row: SealedRow) -> Plan {
    let mut plan = Plan {
        update: None,
        resealed: 0,
        already_new: 0,
        failures: Vec::new(),
    };
    let mut new = row.values.clone();
    for ((value, column), slot) in row.values.iter().zip(table.columns.columns).zip(new.iter_mut()) {
        let Some(sealed) = value else { continue };
        if sealed.starts_with(newest_prefix) {
            plan.already_new += 1;
            continue;
        }
        let identity = table.identity(&row.id, column);
        let resealed = SealedValue::parse(sealed)
            .map_err(|e| e.to_string())
            .and_then(|value| keyring.reseal(&value, &identity).map_err(|e| e.to_string()));
        match resealed {
            Ok(value) => {
                *slot = Some(value.to_string());
                plan.resealed += 1;
            }
            Err(reason) => plan.failures.push(ValueFailure {
                table: table.columns.table,
                id: row.id.clone(),
                column,
                reason,
            }),
        }
    }
    if plan.resealed > 0 {
        plan.update = Some(ResealRow {
            id: row.id,
            old: row.values,
            new,
        });
    }
    plan
}

/// A page of rows, read and planned.
struct Batch {
    rows: u64,
    /// The last row's id; `None` when the table has no more rows.
    last_id: Option<String>,
    plans: Vec<Plan>,
}

async fn read_batch(
    store: &dyn Store,
    keyring: &Keyring,
    newest_prefix: &str,
    table: &SealedTable,
    after: Option<String>,
    batch_size: u32,
) -> Result<Batch, StoreError> {
    let rows = store
        .sealed_rows(&table.columns, after.as_deref(), batch_size)
        .await?;
    Ok(Batch {
        rows: rows.len() as u64,
        last_id: rows.last().map(|row| row.id.clone()),
        plans: plan_in_parallel(keyring, newest_prefix, table, rows).await,
    })
}

/// Writes a batch's re-sealed rows in one transaction; rows changed meanwhile are retried.
async fn write_batch(
    store: &dyn Store,
    keyring: &Keyring,
    newest_prefix: &str,
    table: &SealedTable,
    plans: Vec<Plan>,
    report: &mut TableReport,
) -> Result<(), StoreError> {
    let mut updates = Vec::new();
    let mut pending = Vec::new();
    for plan in plans {
        match plan.update {
            Some(update) => {
                pending.push((plan.resealed, plan.already_new, plan.failures));
                updates.push(update);
            }
            None => {
                report.already_new += plan.already_new;
                report.failures.extend(plan.failures);
            }
        }
    }
    let written = store.reseal_rows(&table.columns, &updates).await?;
    for ((update, (resealed, already_new, failures)), written) in
        updates.into_iter().zip(pending).zip(written)
    {
        if written {
            report.resealed += resealed;
            report.already_new += already_new;
            report.failures.extend(failures);
        } else {
            retry_row(store, keyring, newest_prefix, table, &update.id, report).await?;
        }
    }
    Ok(())
}

/// A row that changed under us: read it again and re-seal what it holds now.
async fn retry_row(
    store: &dyn Store,
    keyring: &Keyring,
    newest_prefix: &str,
    table: &SealedTable,
    id: &str,
    report: &mut TableReport,
) -> Result<(), StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        report.changed_concurrently += 1;
        let Some(row) = store.sealed_row(&table.columns, id).await? else {
            return Ok(());
        };
        let plan = plan(keyring, newest_prefix, table, row);
        let Some(update) = plan.update else {
            report.already_new += plan.already_new;
            report.failures.extend(plan.failures);
            return Ok(());
        };
        if store
            .reseal_rows(&table.columns, std::slice::from_ref(&update))
            .await?
            .first()
            .copied()
            .unwrap_or(false)
        {
            report.resealed += plan.resealed;
            report.already_new += plan.already_new;
            report.failures.extend(plan.failures);
            return Ok(());
        }
    }
    report.gave_up += 1;
    Ok(())
}

/// The batch's crypto on every core, off the async threads.
async fn plan_in_parallel(
    keyring: &Keyring,
    newest_prefix: &str,
    table: &SealedTable,
    rows: Vec<SealedRow>,
) -> Vec<Plan> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = rows.len().div_ceil(threads).max(64);
    let mut rows = rows.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<SealedRow> = rows.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let (keyring, prefix, table) = (keyring.clone(), newest_prefix.to_owned(), *table);
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|row| plan(&keyring, &prefix, &table, row))
                .collect::<Vec<_>>()
        }));
    }
    let mut plans = Vec::new();
    for task in tasks {
        plans.extend(task.await.expect("sealing does not panic"));
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_follow_the_table() {
        let connections = &SEALED_TABLES[0];
        assert_eq!(
            connections.identity("conn_1", "refresh_token"),
            AeadIdentity::new("conn_1", "refresh_token")
        );
        let apps = table(
            "app_secrets",
            "app",
            &["secret", "previous_secret"],
            Owner::Prefixed("app:"),
            Field::Named(&["client_secret", "previous_client_secret"]),
        );
        assert_eq!(
            apps.identity("default", "secret"),
            AeadIdentity::new("app:default", "client_secret")
        );
        assert_eq!(
            apps.identity("default", "previous_secret"),
            AeadIdentity::new("app:default", "previous_client_secret")
        );
        assert_eq!(
            SEALED_TABLES.last().unwrap().identity("key_check", "value"),
            AeadIdentity::new("meta", "key_check")
        );
    }

    #[test]
    fn named_fields_match_their_columns() {
        for table in SEALED_TABLES {
            if let Field::Named(names) = table.field {
                assert_eq!(
                    names.len(),
                    table.columns.columns.len(),
                    "{}",
                    table.columns.table
                );
            }
            assert!(!table.columns.columns.is_empty());
        }
    }

    #[test]
    fn key_prefixes_name_fingerprints() {
        assert_eq!(
            fingerprint_of_prefix("lwa1.0123456789abcdef."),
            Some("0123456789abcdef".parse().unwrap())
        );
        assert_eq!(fingerprint_of_prefix("Atzr|plain-text-token"), None);
        assert_eq!(fingerprint_of_prefix("lwa1.short"), None);
    }
}

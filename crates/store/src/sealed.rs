//! Sealed columns seen generically, for re-sealing every value under a new master key
//! (`lwa-broker keys rotate`) and counting values per key.
//!
//! The store still cannot open anything: it hands out and compares sealed text only.

/// Where sealed values live in one table. The names are `&'static str` on purpose: they are
/// written into SQL, so they must be constants of the program, never input.
///
/// ```
/// use lwa_store::SealedColumns;
///
/// const CONNECTIONS: SealedColumns = SealedColumns {
///     table: "connections",
///     id_column: "id",
///     columns: &["refresh_token", "access_token"],
///     only_ids: &[],
/// };
/// assert_eq!(CONNECTIONS.columns.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumns {
    /// The table.
    pub table: &'static str,
    /// Its unique, stable id column (the rows' order for paging).
    pub id_column: &'static str,
    /// The columns holding sealed text (or NULL).
    pub columns: &'static [&'static str],
    /// Only the rows with these ids (e.g. `meta`'s `key_check`); empty: every row.
    pub only_ids: &'static [&'static str],
}

/// One row's id and its sealed columns' values, in [`SealedColumns::columns`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// The row's id.
    pub id: String,
    /// One value per sealed column; `None` for NULL.
    pub values: Vec<Option<String>>,
}

/// A compare-and-set of one row's sealed columns: written only if every column still holds
/// exactly `old`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealRow {
    /// The row's id.
    pub id: String,
    /// The values read, one per sealed column.
    pub old: Vec<Option<String>>,
    /// The values to write instead, one per sealed column.
    pub new: Vec<Option<String>>,
}

/// How many values of one column start with one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixCount {
    /// The column.
    pub column: &'static str,
    /// The first characters of the values (shorter when a value is shorter).
    pub prefix: String,
    /// How many values.
    pub count: u64,
}

//! What only SQLite has: its URLs and file (created 0600), its connection settings (WAL, busy
//! timeout), the in-memory database, and `VACUUM INTO` backups.

use std::path::Path;

use lwa_store::{SqliteStore, Store, StoreError};

use super::backend::TempDir;
use super::{connection, tenant};

/// A migrated SQLite store on a fresh file.
async fn fresh(name: &str) -> (TempDir, SqliteStore) {
    let dir = TempDir::new(name);
    let store = SqliteStore::open_path(&dir.file("broker.db")).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

async fn pragma_text(store: &SqliteStore, sql: &'static str) -> String {
    let row: (String,) = sqlx::query_as(sql).fetch_one(store.pool()).await.unwrap();
    row.0
}

async fn pragma_int(store: &SqliteStore, sql: &'static str) -> i64 {
    let row: (i64,) = sqlx::query_as(sql).fetch_one(store.pool()).await.unwrap();
    row.0
}

fn bad_url(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::BadUrl(message)) => message,
        other => panic!("expected BadUrl, got {other:?}"),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn connect_accepts_every_sqlite_url_form() {
    let dir = TempDir::new("urls");
    let a = dir.file("a.db");
    let b = dir.file("b.db");
    let a_url = format!("sqlite:{}", a.display());
    // An absolute path after `sqlite://` gives the `sqlite:///abs/path` form.
    let b_url = format!("sqlite://{}", b.display());
    assert!(b_url.starts_with("sqlite:///"), "{b_url}");

    let store = SqliteStore::connect(&a_url).await.unwrap();
    assert_eq!(store.path(), Some(a.as_path()));
    assert!(a.exists());
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), "sqlite");

    let store = SqliteStore::connect_and_migrate(&b_url).await.unwrap();
    assert_eq!(store.path(), Some(b.as_path()));
    assert!(store.migrations_current().await.unwrap());

    let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert_eq!(memory.path(), None);
    memory.ping().await.unwrap();
}

#[tokio::test]
async fn bad_urls_say_what_was_expected() {
    assert_eq!(
        bad_url(SqliteStore::connect("mysql://x").await),
        "unsupported database URL \"mysql://x\": expected sqlite:PATH (or postgres://… for PostgreSQL)"
    );
    assert_eq!(
        bad_url(SqliteStore::connect("broker.db").await),
        "unsupported database URL \"broker.db\": expected sqlite:PATH (or postgres://… for PostgreSQL)"
    );
    let pg = bad_url(SqliteStore::connect("postgres://broker:hunter2@db.internal/broker").await);
    assert_eq!(
        pg,
        "unsupported database URL \"postgres://***@db.internal/broker\": a PostgreSQL URL, which PgStore \
         opens; expected sqlite:PATH"
    );
    assert!(!pg.contains("hunter2"));
    let empty = bad_url(SqliteStore::connect("sqlite:").await);
    assert!(empty.contains("names no file"), "{empty}");
    let empty = bad_url(SqliteStore::connect("sqlite://").await);
    assert!(empty.contains("names no file"), "{empty}");
    let query = bad_url(SqliteStore::connect("sqlite://broker.db?mode=rwc").await);
    assert!(query.contains("query parameters"), "{query}");
    assert!(!Path::new("broker.db?mode=rwc").exists());
    let message = StoreError::BadUrl("x".into()).to_string();
    assert_eq!(message, "x");
}

#[tokio::test]
async fn open_path_into_missing_directory_fails_with_io() {
    let dir = TempDir::new("missing-dir");
    let path = dir.file("no/such/dir/broker.db");
    match SqliteStore::open_path(&path).await {
        Err(StoreError::Io(message)) => assert!(message.contains("cannot create database file"), "{message}"),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn created_file_is_private() {
    let dir = TempDir::new("mode");
    let path = dir.file("broker.db");
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.set_meta("k", "v").await.unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[cfg(unix)]
#[tokio::test]
async fn existing_file_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("existing-mode");
    let path = dir.file("broker.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::open_path(&path).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(mode(&path), 0o640);
}

#[tokio::test]
async fn connection_settings_are_applied() {
    let (_dir, store) = fresh("pragmas").await;
    assert_eq!(pragma_text(&store, "PRAGMA journal_mode").await, "wal");
    assert_eq!(pragma_int(&store, "PRAGMA foreign_keys").await, 1);
    assert_eq!(pragma_int(&store, "PRAGMA busy_timeout").await, 5000);
    // NORMAL = 1
    assert_eq!(pragma_int(&store, "PRAGMA synchronous").await, 1);
}

#[tokio::test]
async fn reopening_a_file_keeps_data() {
    let dir = TempDir::new("reopen");
    let path = dir.file("broker.db");
    {
        let store = SqliteStore::connect_and_migrate(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
        store.set_meta("key_check", "lwa1.fp.Y2hlY2s").await.unwrap();
        store.pool().close().await;
    }
    let store = SqliteStore::open_path(&path).await.unwrap();
    assert!(store.migrations_current().await.unwrap());
    assert_eq!(store.tenant("ten_1").await.unwrap(), Some(tenant("ten_1", 1)));
    assert_eq!(
        store.meta("key_check").await.unwrap().as_deref(),
        Some("lwa1.fp.Y2hlY2s")
    );
}

#[tokio::test]
async fn memory_store_is_one_database() {
    let store = SqliteStore::connect_and_migrate("sqlite::memory:").await.unwrap();
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let clone = store.clone();
    assert_eq!(clone.tenants().await.unwrap().len(), 1);
    // Concurrent calls all see the same database.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.set_meta(&format!("k{i}"), "v").await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for i in 0..10 {
        assert_eq!(store.meta(&format!("k{i}")).await.unwrap().as_deref(), Some("v"));
    }
    // And a second memory store is a different database.
    let other = SqliteStore::connect_and_migrate("sqlite::memory:").await.unwrap();
    assert_eq!(other.tenants().await.unwrap(), vec![]);
}

#[tokio::test]
async fn backup_to_writes_a_copy_that_opens() {
    let (dir, store) = fresh("backup").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .insert_connection(&connection("conn_1", "ten_1"))
        .await
        .unwrap();
    store.set_meta("key_check", "abc").await.unwrap();

    let target = dir.file("backup.db");
    store.backup_to(&target).await.unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&target), 0o600);

    // Later changes do not reach the copy.
    store.insert_tenant(&tenant("ten_2", 2)).await.unwrap();

    let copy = SqliteStore::open_path(&target).await.unwrap();
    assert!(copy.migrations_current().await.unwrap());
    assert_eq!(copy.tenants().await.unwrap(), vec![tenant("ten_1", 1)]);
    assert_eq!(
        copy.connection("conn_1").await.unwrap(),
        Some(connection("conn_1", "ten_1"))
    );
    assert_eq!(copy.meta("key_check").await.unwrap().as_deref(), Some("abc"));
}

#[tokio::test]
async fn backup_to_refuses_an_existing_target() {
    let (dir, store) = fresh("backup-exists").await;
    let target = dir.file("backup.db");
    std::fs::write(&target, b"keep me").unwrap();
    match store.backup_to(&target).await {
        Err(StoreError::Io(message)) => assert!(message.contains("already exists"), "{message}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[tokio::test]
async fn backup_of_memory_store() {
    let dir = TempDir::new("backup-memory");
    let store = SqliteStore::connect_and_migrate("sqlite::memory:").await.unwrap();
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let target = dir.file("copy.db");
    store.backup_to(&target).await.unwrap();
    let copy = SqliteStore::open_path(&target).await.unwrap();
    assert_eq!(copy.tenant("ten_1").await.unwrap(), Some(tenant("ten_1", 1)));
}

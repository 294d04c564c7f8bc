//! A fresh database per test, on either backend: SQLite in a temporary file, or PostgreSQL in a
//! schema of its own (`lwa_test_<random>`) of the database `LWA_BROKER_TEST_POSTGRES_URL`
//! names (default `postgres://postgres@127.0.0.1:5432/test`), dropped when the test ends.
//!
//! Without PostgreSQL, its tests pass after printing `skipped: PostgreSQL not reachable at …`,
//! unless `LWA_BROKER_REQUIRE_POSTGRES=1`, under which they fail.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lwa_store::{PgStore, SqliteStore, Store};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Connection, FromRow, PgConnection};

/// The backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database holding the test schemas.
pub fn postgres_url() -> String {
    std::env::var("LWA_BROKER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `scheme://***@host/…`: the URL without its password, for messages.
fn shown(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// True when PostgreSQL answers. When it does not: panics under
/// `LWA_BROKER_REQUIRE_POSTGRES=1`, else prints that the test was skipped and returns false.
pub async fn postgres_reachable(test: &str) -> bool {
    let url = postgres_url();
    // One plain connection, not a pool: a refused connection fails at once instead of being
    // retried until a pool's timeout.
    let attempt = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 5 s".to_string()),
    };
    match attempt {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(e) => {
            let message = format!("PostgreSQL not reachable at {}: {e}", shown(&url));
            if std::env::var("LWA_BROKER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{message} (LWA_BROKER_REQUIRE_POSTGRES=1)");
            }
            println!("skipped: {message} ({test})");
            false
        }
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lwa-store-test-{name}-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unique in this machine for a while: process id, a counter, and the time.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL schema, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct Schema {
    pub name: String,
}

impl Schema {
    async fn create() -> Schema {
        let name = format!("lwa_test_{}", unique());
        let mut conn = PgConnection::connect(&postgres_url()).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Schema { name }
    }

    /// The test database's URL with this schema as the search path.
    pub fn url(&self) -> String {
        let base = postgres_url();
        let join = if base.contains('?') { '&' } else { '?' };
        format!("{base}{join}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for Schema {
    /// Best effort, on a thread of its own: a drop cannot wait on the test's runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&postgres_url()).await.ok()?;
                // A failed test may leave a task holding locks in the schema: give up rather
                // than hang.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .ok()?;
                sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

/// The concrete store behind a test's `Arc<dyn Store>`, for what the trait does not offer
/// (migrations, raw SQL).
#[derive(Debug, Clone)]
pub enum Concrete {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// One test's database: its store, and the file or schema it lives in (removed on drop).
#[derive(Debug)]
pub struct TestDb {
    pub store: Concrete,
    // Declared last: dropped after the store.
    place: Place,
}

#[derive(Debug)]
enum Place {
    Dir(TempDir),
    Schema(Schema),
}

impl TestDb {
    /// A fresh database, not migrated.
    pub async fn unmigrated(backend: Backend, name: &str) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new(name);
                let store = SqliteStore::open_path(&dir.file("broker.db")).await.unwrap();
                TestDb {
                    store: Concrete::Sqlite(store),
                    place: Place::Dir(dir),
                }
            }
            Backend::Postgres => {
                let schema = Schema::create().await;
                let store = PgStore::connect(&schema.url()).await.unwrap();
                TestDb {
                    store: Concrete::Postgres(store),
                    place: Place::Schema(schema),
                }
            }
        }
    }

    /// The store as the server sees it.
    pub fn dyn_store(&self) -> Arc<dyn Store> {
        match &self.store {
            Concrete::Sqlite(s) => Arc::new(s.clone()),
            Concrete::Postgres(s) => Arc::new(s.clone()),
        }
    }

    pub async fn migrate(&self) {
        match &self.store {
            Concrete::Sqlite(s) => s.migrate().await.unwrap(),
            Concrete::Postgres(s) => s.migrate().await.unwrap(),
        }
    }

    pub async fn migrations_current(&self) -> bool {
        match &self.store {
            Concrete::Sqlite(s) => s.migrations_current().await.unwrap(),
            Concrete::Postgres(s) => s.migrations_current().await.unwrap(),
        }
    }

    /// A second store on the same database (another process, or a restart), migrated.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Dir(dir) => {
                let store = SqliteStore::open_path(&dir.file("broker.db")).await.unwrap();
                store.migrate().await.unwrap();
                Arc::new(store)
            }
            Place::Schema(schema) => Arc::new(PgStore::connect_and_migrate(&schema.url()).await.unwrap()),
        }
    }

    /// The URL of this test's PostgreSQL schema.
    pub fn schema_url(&self) -> String {
        match &self.place {
            Place::Schema(schema) => schema.url(),
            Place::Dir(_) => panic!("a SQLite test database has no PostgreSQL URL"),
        }
    }

    /// Runs one statement, the SQLite or the PostgreSQL spelling.
    pub async fn exec(&self, sqlite: &str, postgres: &str) {
        match &self.store {
            Concrete::Sqlite(s) => {
                sqlx::query(AssertSqlSafe(sqlite.to_string()))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
            Concrete::Postgres(s) => {
                sqlx::query(AssertSqlSafe(postgres.to_string()))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
    }

    /// One row of a query both backends spell the same way.
    pub async fn row<T>(&self, sql: &str) -> T
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        match &self.store {
            Concrete::Sqlite(s) => sqlx::query_as(AssertSqlSafe(sql.to_string()))
                .fetch_one(s.pool())
                .await
                .unwrap(),
            Concrete::Postgres(s) => sqlx::query_as(AssertSqlSafe(sql.to_string()))
                .fetch_one(s.pool())
                .await
                .unwrap(),
        }
    }
}

/// A migrated store on a fresh database, and what holds that database.
pub async fn fresh(backend: Backend, name: &str) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::unmigrated(backend, name).await;
    db.migrate().await;
    let store = db.dyn_store();
    (db, store)
}

/// Runs each listed test (`async fn name(b: Backend)`) once per backend: `sqlite::name` and
/// `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::backend::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::backend::postgres_reachable(stringify!($name)).await {
                        super::$name($crate::backend::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

//! Copying a whole store (`lwa_store::copy`): every row of every copied table arrives as it
//! was, from SQLite to PostgreSQL and back, insertion order and identities kept; a target that
//! holds tenants is refused; a source of another schema version is refused; a copy that fails
//! part way leaves the target as it was; a PostgreSQL backup is a SQLite file that restores.

use std::collections::BTreeSet;

use lwa_store::copy::{
    self, COPIED_TABLES, CopyError, CopyOptions, CopyProgress, Database, NOT_COPIED_TABLES,
};
use lwa_store::{
    AppSecret, AttemptResult, AuditEvent, AuditFilter, ConnectionFilter, DeliveryAttempt, DeliveryFilter,
    EventTarget, Store,
};

use super::backend::{Backend, Concrete, TempDir, TestDb, fresh, postgres_reachable};
use super::{api_key, claim, connect_link, connection, event, oauth_state, tenant};

fn database(db: &TestDb) -> Database {
    match &db.store {
        Concrete::Sqlite(s) => Database::Sqlite(s.clone()),
        Concrete::Postgres(s) => Database::Postgres(s.clone()),
    }
}

/// True when the backend can run here (PostgreSQL may be skipped, said so).
async fn available(b: Backend, test: &str) -> bool {
    b == Backend::Sqlite || postgres_reachable(test).await
}

fn audit(tenant_id: &str, connection_id: &str, at_ms: i64) -> AuditEvent {
    AuditEvent {
        id: 0,
        at_ms,
        last_at_ms: at_ms + 10,
        count: 3,
        tenant_id: tenant_id.into(),
        key_id: "key_z".into(),
        connection_id: Some(connection_id.into()),
        kind: "access_token".into(),
        via: "v1".into(),
        detail: None,
    }
}

/// A store with a row in every copied table, ties in insertion order where the order of equal
/// times matters, booleans both ways, a refresh lease held, a delivery attempted.
async fn populate(store: &dyn Store) {
    store.set_meta("key_check", "lwa1.fp.a2V5Y2hlY2s").await.unwrap();
    store
        .set_meta("admin_token_sha256", &"e".repeat(64))
        .await
        .unwrap();
    // Equal creation times: listed in insertion order (b, a, c), not by id.
    for id in ["ten_b", "ten_a", "ten_c"] {
        store.insert_tenant(&tenant(id, 1)).await.unwrap();
    }
    let mut t = tenant("ten_1", 1);
    t.webhook_url = Some("https://wms.example.com/hooks".into());
    store.insert_tenant(&t).await.unwrap();
    for id in ["key_z", "key_y", "key_x"] {
        store.insert_api_key(&api_key(id, "ten_1", 7)).await.unwrap();
    }
    store.revoke_api_key("key_y", 8).await.unwrap();
    store.touch_api_key("key_x", 9).await.unwrap();
    store
        .insert_oauth_state(&oauth_state(&"5".repeat(64), "ten_1", 99_000))
        .await
        .unwrap();
    store
        .insert_connect_link(&connect_link(&"1".repeat(64), "ten_1", 99_000))
        .await
        .unwrap();

    // A tenant-held secret (true), a plain one (false) with a lease and a backoff, one
    // authorized with a claim code and an event, one disconnected with its event.
    store
        .insert_connection(&connection("conn_1", "ten_1"))
        .await
        .unwrap();
    let mut plain = connection("conn_4", "ten_1");
    plain.tenant_secret = false;
    plain.selling_partner_id = Some("A4SELLER".into());
    store.insert_connection(&plain).await.unwrap();
    assert!(store.take_refresh_lease("conn_4", 10_000, 40_000).await.unwrap());
    store.set_next_refresh("conn_4", 12_345).await.unwrap();
    let mut authorized = connection("conn_2", "ten_1");
    authorized.tenant_secret = false;
    store
        .save_authorization(
            &authorized,
            true,
            &claim(&"c".repeat(64), "ten_1", "conn_2", 99_000),
            &[event(
                "evt_1",
                Some("conn_2"),
                "connection.authorized",
                5_000,
                vec![
                    EventTarget::TenantWebhook,
                    EventTarget::Callback("https://wms.example.com/cb".into()),
                ],
            )],
        )
        .await
        .unwrap();
    let mut gone = connection("conn_3", "ten_1");
    store.insert_connection(&gone).await.unwrap();
    gone.status = "disconnected".into();
    gone.refresh_token = None;
    gone.access_token = None;
    store
        .disconnect_connection(
            &gone,
            &[event(
                "evt_2",
                Some("conn_3"),
                "connection.disconnected",
                6_000,
                vec![EventTarget::TenantWebhook],
            )],
        )
        .await
        .unwrap();
    let mut operator = event(
        "evt_3",
        None,
        "app.client_secret_expiring",
        7_000,
        vec![EventTarget::Operator("https://ops.example.com/hook".into())],
    );
    operator.tenant_id = None;
    store.enqueue_events(&[operator]).await.unwrap();
    let first = store.claim_deliveries(10_000, 60_000, 1).await.unwrap();
    store
        .record_delivery_attempt(&DeliveryAttempt {
            delivery_id: first[0].id,
            at_ms: 10_001,
            status: Some(500),
            error: Some("the receiver answered 500".into()),
            result: AttemptResult::RetryAt(20_000),
        })
        .await
        .unwrap();
    store
        .insert_audit_events(&[audit("ten_1", "conn_1", 1_000), audit("ten_1", "conn_2", 2_000)])
        .await
        .unwrap();
    store
        .insert_app_secret(&AppSecret {
            app: "main".into(),
            client_id: "amzn1.application-oa2-client.x".into(),
            secret: "lwa1.fp.bmV3".into(),
            secret_issued_at_ms: 1_000,
            previous_secret: Some("lwa1.fp.b2xk".into()),
            previous_issued_at_ms: Some(500),
            previous_expires_at_ms: Some(2_000),
            config_secret_sha256: Some("ab".repeat(32)),
            announced_expiry_at_ms: Some(3_000),
            warnings_sent: vec![30, 7],
            version: 4,
            updated_at_ms: 1_500,
        })
        .await
        .unwrap();
}

/// Everything a store shows through its interface (connection leases left out: a copy starts
/// without them).
#[derive(Debug, PartialEq)]
struct Snapshot {
    meta: Vec<Option<String>>,
    tenants: Vec<lwa_store::Tenant>,
    keys: Vec<lwa_store::ApiKey>,
    state: Option<lwa_store::OAuthState>,
    connections: Vec<(lwa_store::Connection, lwa_store::RefreshSchedule)>,
    audit: Vec<AuditEvent>,
    deliveries: Vec<lwa_store::WebhookDelivery>,
    app_secrets: Vec<AppSecret>,
}

async fn snapshot(store: &dyn Store) -> Snapshot {
    let mut meta = Vec::new();
    for name in ["key_check", "admin_token_sha256"] {
        meta.push(store.meta(name).await.unwrap());
    }
    let mut connections = Vec::new();
    let listed = store
        .list_connections(&ConnectionFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for c in listed {
        let (c, mut schedule) = store.connection_with_schedule(&c.id).await.unwrap().unwrap();
        schedule.refresh_lease_until_ms = 0;
        connections.push((c, schedule));
    }
    Snapshot {
        meta,
        tenants: store.tenants().await.unwrap(),
        keys: store.api_keys("ten_1").await.unwrap(),
        state: store.oauth_state(&"5".repeat(64)).await.unwrap(),
        connections,
        audit: store
            .audit_events(&AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap(),
        deliveries: store
            .webhook_deliveries(&DeliveryFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap(),
        app_secrets: store.app_secrets().await.unwrap(),
    }
}

/// Populates a `from` store, copies it into a fresh `to` store, and checks every row.
async fn copy_between(from: Backend, to: Backend, test: &str) {
    if !available(from, test).await || !available(to, test).await {
        return;
    }
    let (source_db, source) = fresh(from, test).await;
    populate(&*source).await;
    let target_db = TestDb::unmigrated(to, test).await;
    let mut seen: Vec<CopyProgress> = Vec::new();
    let report = copy::copy(
        &database(&source_db),
        &database(&target_db),
        CopyOptions {
            batch_size: 2,
            replace: false,
        },
        &mut |p| seen.push(*p),
    )
    .await
    .unwrap();
    let target = target_db.dyn_store();
    assert!(target_db.migrations_current().await, "the target was migrated");

    let before = snapshot(&*source).await;
    assert_eq!(snapshot(&*target).await, before);
    assert_eq!(
        before.tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["ten_b", "ten_a", "ten_c", "ten_1"],
        "ties in insertion order"
    );
    assert_eq!(
        before.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["key_z", "key_y", "key_x"]
    );
    assert!(target.connection("conn_1").await.unwrap().unwrap().tenant_secret);
    assert_eq!(
        target
            .refresh_schedule("conn_4")
            .await
            .unwrap()
            .unwrap()
            .refresh_lease_until_ms,
        0,
        "a lease of a source process is not carried over"
    );
    // Single-use records arrive unused, and are taken once.
    let link = target
        .take_connect_link(&"1".repeat(64), 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.token_secret.as_deref(), Some("lwa1.fp.bGlua3NlY3JldA"));
    let code = target
        .take_claim_code(&"c".repeat(64), 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code.connection_id, "conn_2");

    // The report and the progress.
    let count = |table: &str| report.tables.iter().find(|t| t.table == table).unwrap().rows;
    assert_eq!(
        report.tables.iter().map(|t| t.table).collect::<Vec<_>>(),
        COPIED_TABLES.iter().map(|t| t.name).collect::<Vec<_>>()
    );
    assert_eq!(
        (count("tenants"), count("api_keys"), count("connections")),
        (4, 3, 4)
    );
    assert_eq!((count("webhook_events"), count("webhook_deliveries")), (3, 4));
    assert_eq!((count("audit_events"), count("claim_codes")), (2, 1));
    assert!(report.replaced.is_empty());
    let last = seen.last().unwrap();
    assert_eq!((last.rows, last.total), (report.rows(), report.rows()));
    assert!(
        seen.iter()
            .any(|p| p.table == "tenants" && p.table_rows == 2 && p.table_total == 4)
    );

    // New rows on the target get new ids and sequence numbers, after the copied ones.
    let max_audit = before.audit.iter().map(|a| a.id).max().unwrap();
    target
        .insert_audit_events(&[audit("ten_1", "conn_1", 9_000)])
        .await
        .unwrap();
    let newest = target.audit_events(&AuditFilter::default()).await.unwrap();
    assert!(newest[0].id > max_audit, "{} after {max_audit}", newest[0].id);
    let max_delivery = before.deliveries.iter().map(|d| d.id).max().unwrap();
    let max_seq = before.deliveries.iter().map(|d| d.event_seq).max().unwrap();
    target
        .enqueue_events(&[event(
            "evt_4",
            Some("conn_2"),
            "connection.needs_reauth",
            9_000,
            vec![EventTarget::TenantWebhook],
        )])
        .await
        .unwrap();
    let newest = target
        .webhook_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(newest[0].event_id, "evt_4");
    assert!(newest[0].id > max_delivery && newest[0].event_seq > max_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_copies_every_row() {
    copy_between(Backend::Sqlite, Backend::Postgres, "copy_sqlite_to_postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_sqlite_copies_every_row() {
    copy_between(Backend::Postgres, Backend::Sqlite, "copy_postgres_to_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite_copies_every_row() {
    copy_between(Backend::Sqlite, Backend::Sqlite, "copy_sqlite_to_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres_copies_every_row() {
    copy_between(Backend::Postgres, Backend::Postgres, "copy_postgres_to_postgres").await;
}

/// The schema's tables, as the database lists them.
async fn tables_of(db: &TestDb) -> BTreeSet<String> {
    let names: Vec<String> = match &db.store {
        Concrete::Sqlite(s) => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%'",
        )
        .fetch_all(s.pool())
        .await
        .unwrap(),
        Concrete::Postgres(s) => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(s.pool())
        .await
        .unwrap(),
    };
    names.into_iter().collect()
}

/// A table added by a migration is either copied or named as deliberately left behind, on
/// both backends: the copy never silently misses one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_copied_or_named_as_not_copied() {
    for b in [Backend::Sqlite, Backend::Postgres] {
        if !available(b, "every_table_is_copied_or_named").await {
            continue;
        }
        let (db, _store) = fresh(b, "copy-tables").await;
        let tables = tables_of(&db).await;
        for table in &tables {
            assert!(
                COPIED_TABLES.iter().any(|t| t.name == table) || NOT_COPIED_TABLES.contains(&table.as_str()),
                "{b:?}: table {table} is neither in COPIED_TABLES nor in NOT_COPIED_TABLES"
            );
        }
        for table in COPIED_TABLES {
            assert!(tables.contains(table.name), "{b:?}: no table {}", table.name);
        }
    }
}

async fn refused_or_replaced(from: Backend, to: Backend) {
    let test = "copy_refuses_a_target_with_tenants";
    if !available(from, test).await || !available(to, test).await {
        return;
    }
    let (source_db, source) = fresh(from, test).await;
    populate(&*source).await;
    let (target_db, target) = fresh(to, test).await;
    target.insert_tenant(&tenant("ten_there", 5)).await.unwrap();
    target.set_meta("key_check", "lwa1.other.a2V5").await.unwrap();
    let (from_db, to_db) = (database(&source_db), database(&target_db));
    match copy::copy(&from_db, &to_db, CopyOptions::default(), &mut |_| {}).await {
        Err(
            e @ CopyError::TargetNotEmpty {
                tenants: 1,
                connections: 0,
            },
        ) => assert!(e.to_string().contains("so nothing was written"), "{e}"),
        other => panic!("expected TargetNotEmpty, got {other:?}"),
    }
    assert_eq!(target.tenants().await.unwrap().len(), 1);
    assert_eq!(
        target.meta("key_check").await.unwrap().as_deref(),
        Some("lwa1.other.a2V5")
    );

    // Asked to replace, it does, in full.
    let report = copy::copy(
        &from_db,
        &to_db,
        CopyOptions {
            replace: true,
            ..Default::default()
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    let replaced: Vec<_> = report.replaced.iter().map(|t| (t.table, t.rows)).collect();
    assert_eq!(replaced, [("meta", 1), ("tenants", 1)]);
    assert_eq!(snapshot(&*target).await, snapshot(&*source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_target_with_tenants_is_refused_unless_replaced() {
    refused_or_replaced(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_target_with_tenants_is_refused_unless_replaced() {
    refused_or_replaced(Backend::Sqlite, Backend::Postgres).await;
}

/// What a server started once on an empty database writes (its key check) does not make it a
/// database in use: it is replaced, and the report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_only_a_key_check_is_taken_and_the_check_replaced() {
    let (source_db, source) = fresh(Backend::Sqlite, "copy-keycheck").await;
    populate(&*source).await;
    let (target_db, target) = fresh(Backend::Sqlite, "copy-keycheck").await;
    target.set_meta("key_check", "lwa1.other.a2V5").await.unwrap();
    let report = copy::copy(
        &database(&source_db),
        &database(&target_db),
        CopyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        report
            .replaced
            .iter()
            .map(|t| (t.table, t.rows))
            .collect::<Vec<_>>(),
        [("meta", 1)]
    );
    assert_eq!(
        target.meta("key_check").await.unwrap().as_deref(),
        Some("lwa1.fp.a2V5Y2hlY2s")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_of_another_schema_version_is_refused() {
    let old = TestDb::unmigrated(Backend::Sqlite, "copy-old-source").await;
    let target = TestDb::unmigrated(Backend::Sqlite, "copy-old-target").await;
    let result = copy::copy(
        &database(&old),
        &database(&target),
        CopyOptions::default(),
        &mut |_| {},
    )
    .await;
    assert!(matches!(result, Err(CopyError::SourceOutdated)), "{result:?}");
    assert!(
        !target.migrations_current().await,
        "nothing was done to the target"
    );

    let (newer, _store) = fresh(Backend::Sqlite, "copy-newer-source").await;
    newer
        .exec(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99999, 'from the future', 1, x'00', 0)",
            "",
        )
        .await;
    let result = copy::copy(
        &database(&newer),
        &database(&target),
        CopyOptions::default(),
        &mut |_| {},
    )
    .await;
    match result {
        Err(e @ CopyError::SourceNewer(99999)) => assert!(e.to_string().contains("newer version"), "{e}"),
        other => panic!("expected SourceNewer, got {other:?}"),
    }
}

/// PostgreSQL refuses a NUL character that SQLite stores: the copy fails at the last table, and
/// the target holds nothing of what came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_part_way_leaves_the_target_empty() {
    if !postgres_reachable("a_copy_that_fails_part_way").await {
        return;
    }
    let (source_db, source) = fresh(Backend::Sqlite, "copy-fails").await;
    populate(&*source).await;
    source_db
        .exec("UPDATE app_secrets SET client_id = 'a' || char(0) || 'b'", "")
        .await;
    let target_db = TestDb::unmigrated(Backend::Postgres, "copy-fails").await;
    let result = copy::copy(
        &database(&source_db),
        &database(&target_db),
        CopyOptions::default(),
        &mut |_| {},
    )
    .await;
    assert!(matches!(result, Err(CopyError::Store(_))), "{result:?}");
    let target = target_db.dyn_store();
    assert!(target.tenants().await.unwrap().is_empty());
    assert!(target.count_connections(None).await.unwrap().is_empty());
    assert!(target.meta("key_check").await.unwrap().is_none());
}

async fn backup_then_restore(from: Backend, test: &str) {
    if !available(from, test).await {
        return;
    }
    let (source_db, source) = fresh(from, test).await;
    populate(&*source).await;
    let dir = TempDir::new(test);
    let path = dir.file("backup.db");
    let counts = copy::backup(&database(&source_db), &path, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        counts.iter().find(|t| t.table == "connections").map(|t| t.rows),
        Some(4)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists(), "a backup is one file");
    // A second backup to the same file is refused, and the first is left alone.
    let again = copy::backup(&database(&source_db), &path, &mut |_| {}).await;
    assert!(again.is_err(), "{again:?}");
    assert!(std::fs::metadata(&path).unwrap().len() > 0);

    // Restored into a fresh database of the other backend (or SQLite), it is the source again.
    let backup = Database::open_file(&path).await.unwrap();
    let to = if from == Backend::Sqlite && postgres_reachable(test).await {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let target_db = TestDb::unmigrated(to, test).await;
    copy::copy(
        &backup,
        &database(&target_db),
        CopyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    backup.close().await;
    assert_eq!(snapshot(&*target_db.dyn_store()).await, snapshot(&*source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_restores() {
    backup_then_restore(Backend::Sqlite, "copy_sqlite_backup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_is_a_sqlite_file_that_restores() {
    backup_then_restore(Backend::Postgres, "copy_postgres_backup").await;
}

#[tokio::test]
async fn a_missing_source_file_is_an_error_and_is_not_created() {
    let dir = TempDir::new("copy-missing");
    let path = dir.file("nothing.db");
    let result = Database::open_existing(&format!("sqlite:{}", path.display())).await;
    assert!(
        matches!(&result, Err(lwa_store::StoreError::Io(m)) if m.contains("no database file")),
        "{result:?}"
    );
    assert!(!path.exists());
    assert!(matches!(
        Database::open_existing("sqlite::memory:").await,
        Err(lwa_store::StoreError::BadUrl(_))
    ));
}

//! What only PostgreSQL has: its URLs, a schema per deployment (`search_path`), and several
//! replicas (several pools) on one database: migrating at once, and splitting the refresher's
//! and the webhook worker's claims without handing one job to two of them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lwa_store::{AttemptResult, DeliveryAttempt, DeliveryFilter, EventTarget, PgStore, Store, StoreError};

use super::backend::{Backend, TestDb, fresh, postgres_reachable};
use super::{event, tenant};

/// `Some(db)` on PostgreSQL, `None` (after saying so) when it is not reachable.
async fn postgres(test: &str) -> Option<TestDb> {
    if !postgres_reachable(test).await {
        return None;
    }
    Some(TestDb::unmigrated(Backend::Postgres, test).await)
}

fn bad_url(result: Result<PgStore, StoreError>) -> String {
    match result {
        Err(StoreError::BadUrl(message)) => message,
        other => panic!("expected BadUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_say_what_was_expected() {
    assert_eq!(
        bad_url(PgStore::connect("sqlite:broker.db").await),
        "unsupported database URL \"sqlite:broker.db\": expected postgres://USER@HOST/DATABASE (or postgresql://…)"
    );
    let message = bad_url(PgStore::connect("mysql://broker:hunter2@db/broker").await);
    assert_eq!(
        message,
        "unsupported database URL \"mysql://***@db/broker\": expected postgres://USER@HOST/DATABASE (or postgresql://…)"
    );
    let message = bad_url(PgStore::connect("postgres://broker:hunter2@db:port/broker").await);
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.starts_with("invalid database URL"), "{message}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_prompt_database_error() {
    let started = Instant::now();
    // Port 1: nothing listens there, so the connection is refused at once.
    match PgStore::connect("postgres://postgres@127.0.0.1:1/test").await {
        Err(StoreError::Database(_)) => {}
        other => panic!("expected Database, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn each_schema_is_its_own_store_and_both_url_schemes_work() {
    let Some(a) = postgres("schemas").await else {
        return;
    };
    a.migrate().await;
    let b = TestDb::unmigrated(Backend::Postgres, "schemas-b").await;
    b.migrate().await;
    a.dyn_store().insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    assert_eq!(b.dyn_store().tenants().await.unwrap(), vec![]);

    // The same schema through `postgresql://`.
    let url = a.schema_url().replacen("postgres://", "postgresql://", 1);
    let again = PgStore::connect(&url).await.unwrap();
    assert_eq!(again.backend(), "postgres");
    again.ping().await.unwrap();
    assert!(again.migrations_current().await.unwrap());
    assert_eq!(again.tenants().await.unwrap(), vec![tenant("ten_1", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some(db) = postgres("migrate-at-once").await else {
        return;
    };
    let url = db.schema_url();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(PgStore::connect(&url).await.unwrap());
    }
    let mut tasks = Vec::new();
    for replica in &replicas {
        let replica = replica.clone();
        tasks.push(tokio::spawn(async move { replica.migrate().await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for replica in &replicas {
        assert!(replica.migrations_current().await.unwrap());
    }
    let (applied,): (i64,) = db.row("SELECT count(*) FROM _sqlx_migrations").await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(applied, files as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_due_refreshes_and_take_over_lapsed_leases() {
    if !postgres_reachable("split-refreshes").await {
        return;
    }
    let (db, store) = fresh(Backend::Postgres, "split-refreshes").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    db.exec(
        "",
        "INSERT INTO connections (id, tenant_id, app, api, region, status, tenant_secret, profiles, \
         authorized_at_ms, created_at_ms, updated_at_ms, next_refresh_at_ms) \
         SELECT 'conn_' || lpad(i::text, 4, '0'), 'ten_1', 'main', 'sp-api', 'na', 'active', false, '[]', \
         1, 1, 1, i FROM generate_series(0, 299) AS i",
    )
    .await;
    let replicas: Vec<Arc<dyn Store>> = vec![store.clone(), db.reopen().await, db.reopen().await];

    // Three replicas, two workers each, claiming seven at a time until nothing is due.
    let claim_all = |now: i64| {
        let replicas = replicas.clone();
        async move {
            let mut tasks = Vec::new();
            for replica in replicas.iter().chain(replicas.iter()) {
                let replica = replica.clone();
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let due = replica.claim_due_refreshes(now, 60_000, 7).await.unwrap();
                        if due.is_empty() {
                            return mine;
                        }
                        // Soonest first within a claim (`conn_0007` was due at 7).
                        assert!(due.windows(2).all(|w| w[0].id < w[1].id));
                        assert!(due.iter().all(|d| d.next_refresh_at_ms == now + 60_000));
                        mine.extend(due.into_iter().map(|d| d.id));
                    }
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        }
    };
    let claimed = claim_all(1_000).await;
    assert_eq!(claimed.len(), 300, "each due connection claimed once");
    assert_eq!(claimed.iter().collect::<HashSet<_>>().len(), 300);
    // Before the leases lapse nothing is due; after, another replica takes every one over.
    assert!(
        replicas[1]
            .claim_due_refreshes(60_999, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let taken_over = claim_all(61_000).await;
    assert_eq!(taken_over.len(), 300);
    assert_eq!(taken_over.iter().collect::<HashSet<_>>().len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_deliver_each_event_once_and_in_order_per_connection() {
    if !postgres_reachable("split-deliveries").await {
        return;
    }
    let (db, store) = fresh(Backend::Postgres, "split-deliveries").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let mut events = Vec::new();
    for n in 0..4 {
        for c in 0..30 {
            events.push(event(
                &format!("evt_{c}_{n}"),
                Some(&format!("conn_{c}")),
                "connection.refreshed",
                1_000 + n,
                vec![EventTarget::Operator("https://ops.example.com/hook".into())],
            ));
        }
    }
    store.enqueue_events(&events).await.unwrap();
    let replicas: Vec<Arc<dyn Store>> = vec![store.clone(), db.reopen().await, db.reopen().await];

    let sent: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for replica in replicas.iter().chain(replicas.iter()) {
        let replica = replica.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 20 {
                let claimed = replica.claim_deliveries(2_000, 60_000, 5).await.unwrap();
                if claimed.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for delivery in claimed {
                    // Every earlier delivery of its connection is done.
                    let earlier = replica
                        .webhook_deliveries(&DeliveryFilter {
                            connection_id: delivery.connection_id.clone(),
                            before: Some(delivery.id),
                            limit: 1000,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    assert!(
                        earlier.iter().all(|d| d.state == "delivered"),
                        "{} claimed before an earlier delivery of its connection was done",
                        delivery.event_id
                    );
                    sent.lock().unwrap().push(delivery.id);
                    assert!(
                        replica
                            .record_delivery_attempt(&DeliveryAttempt {
                                delivery_id: delivery.id,
                                at_ms: 2_000,
                                status: Some(200),
                                error: None,
                                result: AttemptResult::Delivered,
                            })
                            .await
                            .unwrap()
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 120, "every delivery sent");
    assert_eq!(sent.iter().collect::<HashSet<_>>().len(), 120, "none sent twice");
    let mut per_connection: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in store
        .webhook_deliveries(&DeliveryFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        assert_eq!(d.state, "delivered");
        assert_eq!(d.attempts, 1);
        per_connection
            .entry(d.connection_id.unwrap())
            .or_default()
            .push(d.event_id);
    }
    assert_eq!(per_connection.len(), 30);
}

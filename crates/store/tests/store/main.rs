//! The `Store` contract, run against both backends: each shared test once on SQLite (a
//! temporary file) and once on PostgreSQL (a fresh schema), as `sqlite::…` and `postgres::…`.
//! What only one backend has (SQLite's file, pragmas and backups; PostgreSQL's URLs, schemas
//! and replicas) is tested in `sqlite_only` and `postgres_only`; the sealed-column methods of
//! key rotation in `sealed`, on both.

#[macro_use]
mod backend;
mod copy;
mod postgres_only;
mod sealed;
mod sqlite_only;

use lwa_store::{
    ApiKey, AppSecret, AttemptResult, AuditEvent, AuditFilter, ClaimCode, ConnectLink, Connection,
    ConnectionAlerts, ConnectionFilter, DeliveryAttempt, DeliveryFilter, EventTarget, InvalidationKind,
    NewEvent, OAuthState, RefreshSchedule, Store, StoreError, Tenant, TokenUpdate,
};

use backend::{Backend, TestDb, fresh};

on_both_backends!(
    migrations_current_before_and_after_migrate,
    calls_before_migrate_fail_with_database_error,
    meta_set_get_overwrite,
    tenants_insert_get_list_update,
    duplicate_tenant_is_conflict,
    api_keys_insert_get_list,
    api_key_revoke_and_touch,
    oauth_state_insert_get_take,
    oauth_state_already_used_cannot_be_taken,
    connect_link_insert_take,
    connection_insert_get_update,
    connection_by_partner_finds_the_newest_match,
    list_connections_filters,
    list_connections_pages,
    list_connections_limit_defaults_and_cap,
    count_connections_by_status,
    the_dashboard_searches_counts_and_alerts_in_the_database,
    save_authorization_new_then_claim,
    save_authorization_update_existing,
    save_authorization_is_all_or_nothing,
    concurrent_claim_takers_get_it_once,
    concurrent_state_and_link_takers_get_them_once,
    purge_expired_removes_only_expired,
    save_tokens_touches_only_token_columns_and_never_a_disconnected_connection,
    the_refresh_schedule_follows_refreshes_failures_and_new_authorizations,
    the_refresh_lease_has_one_holder_until_a_save_a_release_or_its_end,
    invalidations_follow_revocations_disconnects_and_reauthorizations_in_order,
    readiness_and_the_webhook_backlog,
    audit_events_are_appended_and_paged_newest_first_with_filters,
    events_are_written_with_the_change_that_caused_them_or_not_at_all,
    needs_reauth_and_disconnect_raise_their_event_once,
    concurrent_status_changes_raise_their_event_once,
    deliveries_are_claimed_in_order_per_connection_and_target,
    the_delivery_log_is_per_tenant_and_failed_deliveries_can_be_retried,
    a_callback_url_given_later_receives_the_connections_recent_events,
    app_secrets_are_added_once_replaced_by_version_and_warned_once,
    concurrent_token_saves_are_written_together_each_compare_and_set,
    the_history_keeps_refreshes_failures_and_status_changes_newest_first,
    an_ended_session_stays_ended_until_it_expires_and_is_purged,
);

fn tenant(id: &str, created_at_ms: i64) -> Tenant {
    Tenant {
        id: id.into(),
        name: format!("Tenant {id}"),
        redirect_origins: vec![
            "https://wms.example.com/oauth".into(),
            "https://b.example.com".into(),
        ],
        sp_app: Some("main".into()),
        ads_app: None,
        webhook_url: Some("https://wms.example.com/hook".into()),
        signing_secret: Some("lwa1.fp.c2lnbmluZw".into()),
        created_at_ms,
    }
}

fn api_key(id: &str, tenant_id: &str, created_at_ms: i64) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant_id: tenant_id.into(),
        name: Some(format!("key {id}")),
        secret_hash: format!("{:0>64}", id.len()),
        scope: "full".into(),
        created_at_ms,
        last_used_at_ms: None,
        revoked_at_ms: None,
    }
}

fn oauth_state(hash: &str, tenant_id: &str, expires_at_ms: i64) -> OAuthState {
    OAuthState {
        state_hash: hash.into(),
        tenant_id: tenant_id.into(),
        app: "main".into(),
        api: "ads".into(),
        region: "eu".into(),
        account_type: None,
        marketplace_id: Some("A1PA6795UKMFR9".into()),
        client_state: "client-state-1".into(),
        redirect_url: "https://wms.example.com/oauth/done".into(),
        token_secret: Some("lwa1.fp.c2VjcmV0".into()),
        code_verifier: Some("lwa1.fp.dmVyaWZpZXI".into()),
        connection_id: Some("conn_7".into()),
        origin: "initialize".into(),
        created_at_ms: 1_000,
        expires_at_ms,
        used_at_ms: None,
    }
}

fn connect_link(hash: &str, tenant_id: &str, expires_at_ms: i64) -> ConnectLink {
    ConnectLink {
        token_hash: hash.into(),
        tenant_id: tenant_id.into(),
        app: "main".into(),
        api: "sp-api".into(),
        region: "na".into(),
        account_type: Some("seller".into()),
        marketplace_id: None,
        client_state: "cs".into(),
        redirect_url: "https://wms.example.com/oauth/done".into(),
        token_secret: Some("lwa1.fp.bGlua3NlY3JldA".into()),
        connection_id: None,
        created_at_ms: 2_000,
        expires_at_ms,
        used_at_ms: None,
    }
}

fn claim(hash: &str, tenant_id: &str, connection_id: &str, expires_at_ms: i64) -> ClaimCode {
    ClaimCode {
        code_hash: hash.into(),
        tenant_id: tenant_id.into(),
        connection_id: connection_id.into(),
        token_secret: Some("lwa1.fp.Y2xhaW1zZWNyZXQ".into()),
        created_at_ms: 3_000,
        expires_at_ms,
        used_at_ms: None,
    }
}

fn connection(id: &str, tenant_id: &str) -> Connection {
    Connection {
        id: id.into(),
        tenant_id: tenant_id.into(),
        app: "main".into(),
        api: "sp-api".into(),
        region: "na".into(),
        account_type: Some("seller".into()),
        marketplace_id: Some("ATVPDKIKX0DER".into()),
        selling_partner_id: Some("A2SELLER".into()),
        name: Some("Shop".into()),
        status: "active".into(),
        refresh_token: Some("lwa1.fp.cmVmcmVzaA".into()),
        access_token: Some("lwa1.fp.YWNjZXNz".into()),
        access_expires_at_ms: Some(9_000),
        tenant_secret: true,
        profiles: "[]".into(),
        authorized_at_ms: 5_000,
        last_refresh_at_ms: Some(6_000),
        last_error: None,
        callback_url: Some("https://wms.example.com/cb".into()),
        claimed_at_ms: None,
        created_at_ms: 5_000,
        updated_at_ms: 5_000,
    }
}

// --- opening ---

async fn migrations_current_before_and_after_migrate(b: Backend) {
    let db = TestDb::unmigrated(b, "migrations").await;
    assert!(!db.migrations_current().await);
    db.migrate().await;
    assert!(db.migrations_current().await);
    // Idempotent.
    db.migrate().await;
    assert!(db.migrations_current().await);

    // A tampered checksum no longer counts as applied.
    db.exec(
        "UPDATE _sqlx_migrations SET checksum = x'00'",
        "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea",
    )
    .await;
    assert!(!db.migrations_current().await);
}

async fn calls_before_migrate_fail_with_database_error(b: Backend) {
    let db = TestDb::unmigrated(b, "unmigrated").await;
    assert!(matches!(
        db.dyn_store().tenant("ten_1").await,
        Err(StoreError::Database(_))
    ));
}

// --- backup ---

// --- meta ---

async fn meta_set_get_overwrite(b: Backend) {
    let (_db, store) = fresh(b, "meta").await;
    store.ping().await.unwrap();
    assert_eq!(store.meta("key_check").await.unwrap(), None);
    store.set_meta("key_check", "one").await.unwrap();
    assert_eq!(store.meta("key_check").await.unwrap().as_deref(), Some("one"));
    store.set_meta("key_check", "two").await.unwrap();
    assert_eq!(store.meta("key_check").await.unwrap().as_deref(), Some("two"));
    assert_eq!(store.meta("other").await.unwrap(), None);
}

// --- tenants ---

async fn tenants_insert_get_list_update(b: Backend) {
    let (_db, store) = fresh(b, "tenants").await;
    assert_eq!(store.tenants().await.unwrap(), vec![]);
    let mut minimal = tenant("ten_b", 200);
    minimal.redirect_origins = vec![];
    minimal.sp_app = None;
    minimal.webhook_url = None;
    minimal.signing_secret = None;
    store.insert_tenant(&minimal).await.unwrap();
    store.insert_tenant(&tenant("ten_a", 100)).await.unwrap();
    store.insert_tenant(&tenant("ten_c", 200)).await.unwrap();

    assert_eq!(store.tenant("ten_a").await.unwrap(), Some(tenant("ten_a", 100)));
    assert_eq!(store.tenant("ten_b").await.unwrap(), Some(minimal.clone()));
    assert_eq!(store.tenant("ten_x").await.unwrap(), None);

    // Oldest first; ties in insertion order.
    let ids: Vec<String> = store.tenants().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["ten_a", "ten_b", "ten_c"]);

    let mut changed = tenant("ten_a", 999);
    changed.name = "Renamed".into();
    changed.redirect_origins = vec!["https://new.example.com".into()];
    changed.sp_app = None;
    changed.ads_app = Some("ads-app".into());
    changed.webhook_url = None;
    changed.signing_secret = Some("lwa1.fp.bmV3".into());
    assert!(store.update_tenant(&changed).await.unwrap());
    let stored = store.tenant("ten_a").await.unwrap().unwrap();
    // created_at_ms is not replaced.
    assert_eq!(
        stored,
        Tenant {
            created_at_ms: 100,
            ..changed
        }
    );

    assert!(!store.update_tenant(&tenant("ten_x", 1)).await.unwrap());
    assert_eq!(store.tenant("ten_x").await.unwrap(), None);
}

async fn duplicate_tenant_is_conflict(b: Backend) {
    let (_db, store) = fresh(b, "tenant-dup").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let mut other = tenant("ten_1", 2);
    other.name = "Other".into();
    match store.insert_tenant(&other).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "tenant ten_1"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.tenant("ten_1").await.unwrap(), Some(tenant("ten_1", 1)));
}

// --- API keys ---

async fn api_keys_insert_get_list(b: Backend) {
    let (_db, store) = fresh(b, "keys").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store.insert_tenant(&tenant("ten_2", 1)).await.unwrap();
    let mut proxy = api_key("key_b", "ten_1", 10);
    proxy.scope = "proxy-only".into();
    proxy.name = None;
    store.insert_api_key(&proxy).await.unwrap();
    store
        .insert_api_key(&api_key("key_a", "ten_1", 20))
        .await
        .unwrap();
    store.insert_api_key(&api_key("key_c", "ten_2", 5)).await.unwrap();

    assert_eq!(store.api_key("key_b").await.unwrap(), Some(proxy.clone()));
    assert_eq!(store.api_key("key_z").await.unwrap(), None);
    assert_eq!(
        store.api_keys("ten_1").await.unwrap(),
        vec![proxy, api_key("key_a", "ten_1", 20)]
    );
    assert_eq!(
        store.api_keys("ten_2").await.unwrap(),
        vec![api_key("key_c", "ten_2", 5)]
    );
    assert_eq!(store.api_keys("ten_3").await.unwrap(), vec![]);

    match store.insert_api_key(&api_key("key_a", "ten_2", 30)).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "api key key_a"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // A key of an unknown tenant violates the foreign key: a database error, not a conflict.
    assert!(matches!(
        store.insert_api_key(&api_key("key_d", "ten_404", 1)).await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(store.api_key("key_d").await.unwrap(), None);
}

async fn api_key_revoke_and_touch(b: Backend) {
    let (_db, store) = fresh(b, "keys-revoke").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .insert_api_key(&api_key("key_a", "ten_1", 10))
        .await
        .unwrap();

    assert!(store.revoke_api_key("key_a", 500).await.unwrap());
    assert!(!store.revoke_api_key("key_a", 600).await.unwrap());
    assert!(!store.revoke_api_key("key_404", 600).await.unwrap());
    assert_eq!(
        store.api_key("key_a").await.unwrap().unwrap().revoked_at_ms,
        Some(500)
    );
    // Revoked keys are still listed.
    assert_eq!(store.api_keys("ten_1").await.unwrap().len(), 1);

    store.touch_api_key("key_a", 700).await.unwrap();
    assert_eq!(
        store.api_key("key_a").await.unwrap().unwrap().last_used_at_ms,
        Some(700)
    );
    store.touch_api_key("key_a", 900).await.unwrap();
    assert_eq!(
        store.api_key("key_a").await.unwrap().unwrap().last_used_at_ms,
        Some(900)
    );
    // A late, older touch does not move it back.
    store.touch_api_key("key_a", 800).await.unwrap();
    assert_eq!(
        store.api_key("key_a").await.unwrap().unwrap().last_used_at_ms,
        Some(900)
    );
    // Unknown: no error, nothing created.
    store.touch_api_key("key_404", 900).await.unwrap();
    assert_eq!(store.api_key("key_404").await.unwrap(), None);
}

// --- OAuth states ---

async fn oauth_state_insert_get_take(b: Backend) {
    let (_db, store) = fresh(b, "states").await;
    let state = oauth_state("h1", "ten_1", 10_000);
    store.insert_oauth_state(&state).await.unwrap();
    assert_eq!(store.oauth_state("h1").await.unwrap(), Some(state.clone()));
    assert_eq!(store.oauth_state("h404").await.unwrap(), None);

    match store.insert_oauth_state(&oauth_state("h1", "ten_2", 1)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }

    // The taker sees the record as it was: secrets present, not used.
    let taken = store.take_oauth_state("h1", 4_242).await.unwrap();
    assert_eq!(taken, Some(state.clone()));

    // In the database: used, secrets erased, the rest unchanged.
    let after = store.oauth_state("h1").await.unwrap().unwrap();
    assert_eq!(
        after,
        OAuthState {
            used_at_ms: Some(4_242),
            token_secret: None,
            code_verifier: None,
            ..state
        }
    );

    assert_eq!(store.take_oauth_state("h1", 5_000).await.unwrap(), None);
    assert_eq!(
        store.oauth_state("h1").await.unwrap().unwrap().used_at_ms,
        Some(4_242)
    );
    assert_eq!(store.take_oauth_state("h404", 5_000).await.unwrap(), None);
}

async fn oauth_state_already_used_cannot_be_taken(b: Backend) {
    let (_db, store) = fresh(b, "states-used").await;
    let mut state = oauth_state("h1", "ten_1", 10_000);
    state.used_at_ms = Some(7);
    state.code_verifier = None;
    store.insert_oauth_state(&state).await.unwrap();
    assert_eq!(store.take_oauth_state("h1", 8).await.unwrap(), None);
    assert_eq!(store.oauth_state("h1").await.unwrap(), Some(state));
}

// --- connect links ---

async fn connect_link_insert_take(b: Backend) {
    let (db, store) = fresh(b, "links").await;
    let link = connect_link("t1", "ten_1", 10_000);
    store.insert_connect_link(&link).await.unwrap();
    match store.insert_connect_link(&connect_link("t1", "ten_1", 1)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }

    assert_eq!(
        store.take_connect_link("t1", 77).await.unwrap(),
        Some(link.clone())
    );
    assert_eq!(store.take_connect_link("t1", 78).await.unwrap(), None);
    assert_eq!(store.take_connect_link("t404", 78).await.unwrap(), None);

    let row: (Option<String>, Option<i64>, String) = db
        .row("SELECT token_secret, used_at_ms, client_state FROM connect_links WHERE token_hash = 't1'")
        .await;
    assert_eq!(row, (None, Some(77), link.client_state));
}

// --- connections ---

async fn connection_insert_get_update(b: Backend) {
    let (_db, store) = fresh(b, "connections").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let mut ads = connection("conn_1", "ten_1");
    ads.api = "ads".into();
    ads.selling_partner_id = None;
    ads.account_type = None;
    ads.tenant_secret = false;
    ads.profiles = r#"[{"profileId":1}]"#.into();
    ads.refresh_token = None;
    ads.access_token = None;
    ads.access_expires_at_ms = None;
    store.insert_connection(&ads).await.unwrap();
    assert_eq!(store.connection("conn_1").await.unwrap(), Some(ads.clone()));
    assert_eq!(store.connection("conn_404").await.unwrap(), None);

    match store.insert_connection(&connection("conn_1", "ten_1")).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "connection conn_1"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(
        store.insert_connection(&connection("conn_2", "ten_404")).await,
        Err(StoreError::Database(_))
    ));

    let mut changed = connection("conn_1", "ten_other");
    changed.created_at_ms = 1;
    changed.status = "needs_reauth".into();
    changed.last_error = Some("invalid_grant".into());
    changed.claimed_at_ms = Some(8_000);
    changed.updated_at_ms = 8_000;
    assert!(store.update_connection(&changed).await.unwrap());
    let stored = store.connection("conn_1").await.unwrap().unwrap();
    // tenant_id and created_at_ms are not replaced.
    assert_eq!(
        stored,
        Connection {
            tenant_id: "ten_1".into(),
            created_at_ms: 5_000,
            ..changed
        }
    );

    assert!(
        !store
            .update_connection(&connection("conn_404", "ten_1"))
            .await
            .unwrap()
    );
    assert_eq!(store.connection("conn_404").await.unwrap(), None);
}

async fn connection_by_partner_finds_the_newest_match(b: Backend) {
    let (_db, store) = fresh(b, "by-partner").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store.insert_tenant(&tenant("ten_2", 1)).await.unwrap();
    let old = Connection {
        created_at_ms: 100,
        ..connection("conn_b", "ten_1")
    };
    let new = Connection {
        created_at_ms: 200,
        ..connection("conn_a", "ten_1")
    };
    let other_region = Connection {
        region: "eu".into(),
        created_at_ms: 300,
        ..connection("conn_c", "ten_1")
    };
    let other_tenant = Connection {
        created_at_ms: 400,
        ..connection("conn_d", "ten_2")
    };
    for c in [&old, &new, &other_region, &other_tenant] {
        store.insert_connection(c).await.unwrap();
    }
    assert_eq!(
        store
            .connection_by_partner("ten_1", "main", "na", "A2SELLER")
            .await
            .unwrap(),
        Some(new)
    );
    assert_eq!(
        store
            .connection_by_partner("ten_1", "main", "eu", "A2SELLER")
            .await
            .unwrap(),
        Some(other_region)
    );
    assert_eq!(
        store
            .connection_by_partner("ten_2", "main", "na", "A2SELLER")
            .await
            .unwrap(),
        Some(other_tenant)
    );
    assert_eq!(
        store
            .connection_by_partner("ten_1", "other", "na", "A2SELLER")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .connection_by_partner("ten_1", "main", "na", "A9OTHER")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .connection_by_partner("ten_3", "main", "na", "A2SELLER")
            .await
            .unwrap(),
        None
    );
}

/// 25 connections: `conn_00`..`conn_24`; even ones tenant 1, odd ones tenant 2; every third
/// `needs_reauth`; every fifth `ads`/`eu`.
async fn seed_connections(store: &dyn Store) {
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store.insert_tenant(&tenant("ten_2", 1)).await.unwrap();
    // Inserted out of id order, so ordering by id is not insertion order.
    for i in (0..25).rev() {
        let mut c = connection(
            &format!("conn_{i:02}"),
            if i % 2 == 0 { "ten_1" } else { "ten_2" },
        );
        if i % 3 == 0 {
            c.status = "needs_reauth".into();
        }
        if i % 5 == 0 {
            c.api = "ads".into();
            c.region = "eu".into();
        }
        store.insert_connection(&c).await.unwrap();
    }
}

fn ids(connections: &[Connection]) -> Vec<String> {
    connections.iter().map(|c| c.id.clone()).collect()
}

fn expected(filter: impl Fn(u32) -> bool) -> Vec<String> {
    (0..25)
        .filter(|i| filter(*i))
        .map(|i| format!("conn_{i:02}"))
        .collect()
}

async fn list_connections_filters(b: Backend) {
    let (_db, store) = fresh(b, "list").await;
    seed_connections(&*store).await;
    let list = |filter: ConnectionFilter| {
        let store = store.clone();
        async move { ids(&store.list_connections(&filter).await.unwrap()) }
    };

    assert_eq!(list(ConnectionFilter::default()).await, expected(|_| true));
    assert_eq!(
        list(ConnectionFilter {
            tenant_id: Some("ten_1".into()),
            ..Default::default()
        })
        .await,
        expected(|i| i % 2 == 0)
    );
    assert_eq!(
        list(ConnectionFilter {
            status: Some("needs_reauth".into()),
            ..Default::default()
        })
        .await,
        expected(|i| i % 3 == 0)
    );
    assert_eq!(
        list(ConnectionFilter {
            api: Some("ads".into()),
            ..Default::default()
        })
        .await,
        expected(|i| i % 5 == 0)
    );
    assert_eq!(
        list(ConnectionFilter {
            region: Some("na".into()),
            ..Default::default()
        })
        .await,
        expected(|i| i % 5 != 0)
    );
    assert_eq!(
        list(ConnectionFilter {
            tenant_id: Some("ten_2".into()),
            status: Some("needs_reauth".into()),
            api: Some("sp-api".into()),
            region: Some("na".into()),
            ..Default::default()
        })
        .await,
        expected(|i| i % 2 == 1 && i % 3 == 0 && i % 5 != 0)
    );
    assert_eq!(
        list(ConnectionFilter {
            tenant_id: Some("ten_3".into()),
            ..Default::default()
        })
        .await,
        expected(|_| false)
    );
    // Full records come back.
    let one = store
        .list_connections(&ConnectionFilter {
            after: Some("conn_06".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one, vec![connection("conn_07", "ten_2")]);
}

async fn list_connections_pages(b: Backend) {
    let (_db, store) = fresh(b, "pages").await;
    seed_connections(&*store).await;
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let filter = ConnectionFilter {
            tenant_id: Some("ten_1".into()),
            after: after.clone(),
            limit: 4,
            ..Default::default()
        };
        let page = store.list_connections(&filter).await.unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        pages += 1;
        after = Some(page.last().unwrap().id.clone());
        seen.extend(ids(&page));
    }
    assert_eq!(pages, 4); // 13 connections in pages of 4
    assert_eq!(seen, expected(|i| i % 2 == 0));

    let page = store
        .list_connections(&ConnectionFilter {
            after: Some("conn_20".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&page), expected(|i| i > 20));
    let page = store
        .list_connections(&ConnectionFilter {
            after: Some("conn_24".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page, vec![]);
}

async fn list_connections_limit_defaults_and_cap(b: Backend) {
    let (db, store) = fresh(b, "limits").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    // 1005 rows in one statement.
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1004) \
         INSERT INTO connections (id, tenant_id, app, api, region, status, tenant_secret, profiles, \
         authorized_at_ms, created_at_ms, updated_at_ms) \
         SELECT printf('conn_%04d', i), 'ten_1', 'main', 'sp-api', 'na', 'active', 0, '[]', 1, 1, 1 FROM n",
        "INSERT INTO connections (id, tenant_id, app, api, region, status, tenant_secret, profiles, \
         authorized_at_ms, created_at_ms, updated_at_ms) \
         SELECT 'conn_' || lpad(i::text, 4, '0'), 'ten_1', 'main', 'sp-api', 'na', 'active', false, '[]', \
         1, 1, 1 FROM generate_series(0, 1004) AS i",
    )
    .await;
    let count = |limit: u32| {
        let store = store.clone();
        async move {
            store
                .list_connections(&ConnectionFilter {
                    limit,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let default = count(0).await;
    assert_eq!(default.len(), 100);
    assert_eq!(default[0].id, "conn_0000");
    assert_eq!(default[99].id, "conn_0099");
    assert_eq!(count(7).await.len(), 7);
    assert_eq!(count(1000).await.len(), 1000);
    assert_eq!(count(1001).await.len(), 1000);
    assert_eq!(count(u32::MAX).await.len(), 1000);
    assert_eq!(
        store.count_connections(None).await.unwrap(),
        vec![("active".to_string(), 1005)]
    );
}

async fn count_connections_by_status(b: Backend) {
    let (_db, store) = fresh(b, "count").await;
    assert_eq!(store.count_connections(None).await.unwrap(), vec![]);
    seed_connections(&*store).await;
    // Tenant 1 (even): 0..24 step 2 = 13; needs_reauth when i % 6 == 0: 0, 6, 12, 18, 24 = 5.
    assert_eq!(
        store.count_connections(Some("ten_1")).await.unwrap(),
        vec![("active".to_string(), 8), ("needs_reauth".to_string(), 5)]
    );
    // All: needs_reauth when i % 3 == 0: 9 of 25.
    assert_eq!(
        store.count_connections(None).await.unwrap(),
        vec![("active".to_string(), 16), ("needs_reauth".to_string(), 9)]
    );
    assert_eq!(store.count_connections(Some("ten_3")).await.unwrap(), vec![]);
}

async fn the_dashboard_searches_counts_and_alerts_in_the_database(b: Backend) {
    let (_db, store) = fresh(b, "dashboard").await;
    assert_eq!(store.count_connections_by_tenant().await.unwrap(), vec![]);
    assert_eq!(
        store.connection_alerts(10_000, 10_000, 20).await.unwrap(),
        ConnectionAlerts::default()
    );
    assert_eq!(store.delivery_counts().await.unwrap(), vec![]);
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store.insert_tenant(&tenant("ten_2", 1)).await.unwrap();
    store.insert_tenant(&tenant("ten_3", 1)).await.unwrap();
    // conn_00..conn_11: ten_1 even, ten_2 odd. Names and partner ids to search; authorizations
    // 1000 apart (the oldest last); access tokens expired at 9,000 on the first three.
    for i in (0..12).rev() {
        let mut c = connection(
            &format!("conn_{i:02}"),
            if i % 2 == 0 { "ten_1" } else { "ten_2" },
        );
        c.name = Some(match i % 4 {
            0 => format!("Müller Handels GmbH {i}"),
            1 => format!("50% Off_Store {i}"),
            2 => format!("Back\\slash Trading {i}"),
            _ => format!("Plain {i}"),
        });
        c.selling_partner_id = Some(format!("A{i:02}XSELLER"));
        c.authorized_at_ms = 20_000 - i64::from(i) * 1000;
        c.access_expires_at_ms = Some(if i < 3 { 8_000 + i64::from(i) } else { 50_000 });
        if i == 1 {
            c.access_expires_at_ms = None;
        }
        if i == 4 {
            c.api = "ads".into();
        }
        if i == 9 {
            c.status = "needs_reauth".into();
        }
        if i == 10 {
            c.status = "disconnected".into();
        }
        store.insert_connection(&c).await.unwrap();
    }
    let search = |q: &str, status: Option<&str>, after: Option<&str>, limit: u32| {
        let store = store.clone();
        let filter = ConnectionFilter {
            status: status.map(Into::into),
            after: after.map(Into::into),
            search: Some(q.into()),
            limit,
            ..Default::default()
        };
        async move { ids(&store.list_connections(&filter).await.unwrap()) }
    };
    let conns = |list: &[u32]| -> Vec<String> { list.iter().map(|i| format!("conn_{i:02}")).collect() };
    // Partner id or name, without case; the id exactly.
    assert_eq!(search("a03xseller", None, None, 0).await, conns(&[3]));
    assert_eq!(
        search("xSeLLer", None, None, 0).await,
        conns(&(0..12).collect::<Vec<_>>())
    );
    assert_eq!(search("gmbh", None, None, 0).await, conns(&[0, 4, 8]));
    assert_eq!(search("conn_07", None, None, 0).await, conns(&[7]));
    assert_eq!(search("conn_0", None, None, 0).await, conns(&[]));
    // `%`, `_` and the backslash are themselves, not patterns.
    assert_eq!(search("50%", None, None, 0).await, conns(&[1, 5, 9]));
    assert_eq!(search("f_s", None, None, 0).await, conns(&[1, 5, 9]));
    assert_eq!(search("%", None, None, 0).await, conns(&[1, 5, 9]));
    assert_eq!(search("_", None, None, 0).await, conns(&[1, 5, 9]));
    assert_eq!(search("k\\s", None, None, 0).await, conns(&[2, 6, 10]));
    assert_eq!(search("nothing", None, None, 0).await, conns(&[]));
    // With the other filters, in pages.
    assert_eq!(search("store", Some("needs_reauth"), None, 0).await, conns(&[9]));
    assert_eq!(search("seller", None, None, 5).await, conns(&[0, 1, 2, 3, 4]));
    assert_eq!(
        search("seller", None, Some("conn_04"), 5).await,
        conns(&[5, 6, 7, 8, 9])
    );
    // Full records come back.
    let one = store
        .list_connections(&ConnectionFilter {
            search: Some("a03x".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one[0], store.connection("conn_03").await.unwrap().unwrap());

    assert_eq!(
        store.count_connections_by_tenant().await.unwrap(),
        vec![("ten_1".to_string(), 6), ("ten_2".to_string(), 6)]
    );

    // At 9,000: conn_00 and conn_02 expired (conn_01 has no token); authorized at or before
    // 12,000: conn_08..conn_11, but conn_09 is needs_reauth and conn_10 disconnected.
    let alerts = store.connection_alerts(9_000, 12_000, 20).await.unwrap();
    assert_eq!(alerts.expired_tokens, 2);
    assert_eq!(alerts.oldest_expired_at_ms, Some(8_000));
    assert_eq!(ids(&alerts.expiring), conns(&[11, 8]));
    assert_eq!(
        alerts.expiring[0],
        store.connection("conn_11").await.unwrap().unwrap()
    );
    // Ads connections never expire; the limit holds.
    let alerts = store.connection_alerts(7_000, 16_000, 3).await.unwrap();
    assert_eq!((alerts.expired_tokens, alerts.oldest_expired_at_ms), (0, None));
    assert_eq!(ids(&alerts.expiring), conns(&[11, 8, 7]));
    let alerts = store.connection_alerts(7_000, 16_000, 20).await.unwrap();
    assert_eq!(ids(&alerts.expiring), conns(&[11, 8, 7, 6, 5]));

    // Deliveries by state.
    let mut t = tenant("ten_1", 1);
    t.webhook_url = Some("https://wms.example.com/hooks".into());
    store.update_tenant(&t).await.unwrap();
    for n in 0..3 {
        store
            .enqueue_events(&[event(
                &format!("evt_{n}"),
                Some(&format!("conn_{:02}", n * 2)),
                "connection.authorized",
                n,
                vec![EventTarget::TenantWebhook],
            )])
            .await
            .unwrap();
    }
    let claimed = store.claim_deliveries(10, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for (d, result) in claimed
        .iter()
        .zip([AttemptResult::Delivered, AttemptResult::GaveUp])
    {
        store
            .record_delivery_attempt(&DeliveryAttempt {
                delivery_id: d.id,
                at_ms: 20,
                status: Some(200),
                error: None,
                result,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        vec![
            ("delivered".to_string(), 1),
            ("failed".to_string(), 1),
            ("pending".to_string(), 1)
        ]
    );
}

// --- save_authorization and claim codes ---

async fn save_authorization_new_then_claim(b: Backend) {
    let (db, store) = fresh(b, "save-new").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let c = connection("conn_1", "ten_1");
    let code = claim("c1", "ten_1", "conn_1", 10_000);
    store.save_authorization(&c, true, &code, &[]).await.unwrap();
    assert_eq!(store.connection("conn_1").await.unwrap(), Some(c));

    assert_eq!(
        store.take_claim_code("c1", 4_000).await.unwrap(),
        Some(code.clone())
    );
    assert_eq!(store.take_claim_code("c1", 4_001).await.unwrap(), None);
    assert_eq!(store.take_claim_code("c404", 4_001).await.unwrap(), None);
    let row: (Option<String>, Option<i64>, String) = db
        .row("SELECT token_secret, used_at_ms, connection_id FROM claim_codes WHERE code_hash = 'c1'")
        .await;
    assert_eq!(row, (None, Some(4_000), "conn_1".to_string()));
}

async fn save_authorization_update_existing(b: Backend) {
    let (_db, store) = fresh(b, "save-update").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .insert_connection(&connection("conn_1", "ten_1"))
        .await
        .unwrap();
    let mut reauthorized = connection("conn_1", "ten_1");
    reauthorized.refresh_token = Some("lwa1.fp.bmV3cmVmcmVzaA".into());
    reauthorized.authorized_at_ms = 9_000;
    reauthorized.updated_at_ms = 9_000;
    store
        .save_authorization(&reauthorized, false, &claim("c1", "ten_1", "conn_1", 10_000), &[])
        .await
        .unwrap();
    assert_eq!(store.connection("conn_1").await.unwrap(), Some(reauthorized));
    assert!(store.take_claim_code("c1", 1).await.unwrap().is_some());
}

async fn save_authorization_is_all_or_nothing(b: Backend) {
    let (_db, store) = fresh(b, "save-atomic").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .save_authorization(
            &connection("conn_1", "ten_1"),
            true,
            &claim("c1", "ten_1", "conn_1", 10),
            &[],
        )
        .await
        .unwrap();

    // New connection, claim code hash already taken: the connection insert is rolled back.
    match store
        .save_authorization(
            &connection("conn_2", "ten_1"),
            true,
            &claim("c1", "ten_1", "conn_2", 10),
            &[],
        )
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.connection("conn_2").await.unwrap(), None);

    // Existing connection, claim conflict: the update is rolled back.
    let mut changed = connection("conn_1", "ten_1");
    changed.status = "needs_reauth".into();
    assert!(matches!(
        store
            .save_authorization(&changed, false, &claim("c1", "ten_1", "conn_1", 10), &[])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.connection("conn_1").await.unwrap().unwrap().status,
        "active"
    );

    // Duplicate connection id: no claim code is stored.
    assert!(matches!(
        store
            .save_authorization(
                &connection("conn_1", "ten_1"),
                true,
                &claim("c2", "ten_1", "conn_1", 10),
                &[]
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.take_claim_code("c2", 1).await.unwrap(), None);

    // Update of an unknown connection: an error, and no claim code.
    assert!(matches!(
        store
            .save_authorization(
                &connection("conn_404", "ten_1"),
                false,
                &claim("c3", "ten_1", "conn_404", 10),
                &[]
            )
            .await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(store.take_claim_code("c3", 1).await.unwrap(), None);
    assert_eq!(store.connection("conn_404").await.unwrap(), None);

    // The original claim code is intact.
    assert!(store.take_claim_code("c1", 1).await.unwrap().is_some());
}

async fn concurrent_claim_takers_get_it_once(b: Backend) {
    let (_db, store) = fresh(b, "race").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let code = claim("c1", "ten_1", "conn_1", 10_000);
    store
        .save_authorization(&connection("conn_1", "ten_1"), true, &code, &[])
        .await
        .unwrap();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.take_claim_code("c1", 100 + i).await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(taken) = task.await.unwrap().unwrap() {
            winners.push(taken);
        }
    }
    assert_eq!(winners, vec![code]);
}

async fn concurrent_state_and_link_takers_get_them_once(b: Backend) {
    let (_db, store) = fresh(b, "race-states").await;
    for i in 0..5 {
        store
            .insert_oauth_state(&oauth_state(&format!("s{i}"), "ten_1", 10))
            .await
            .unwrap();
        store
            .insert_connect_link(&connect_link(&format!("l{i}"), "ten_1", 10))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..5 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let state = store.take_oauth_state(&format!("s{i}"), round).await.unwrap();
                let link = store.take_connect_link(&format!("l{i}"), round).await.unwrap();
                (state.map(|s| s.state_hash), link.map(|l| l.token_hash))
            }));
        }
    }
    let mut states = Vec::new();
    let mut links = Vec::new();
    for task in tasks {
        let (state, link) = task.await.unwrap();
        states.extend(state);
        links.extend(link);
    }
    states.sort();
    links.sort();
    assert_eq!(states, ["s0", "s1", "s2", "s3", "s4"]);
    assert_eq!(links, ["l0", "l1", "l2", "l3", "l4"]);
}

// --- purge ---

async fn purge_expired_removes_only_expired(b: Backend) {
    let (_db, store) = fresh(b, "purge").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .insert_oauth_state(&oauth_state("s_old", "ten_1", 99))
        .await
        .unwrap();
    store
        .insert_oauth_state(&oauth_state("s_edge", "ten_1", 100))
        .await
        .unwrap();
    store
        .insert_oauth_state(&oauth_state("s_new", "ten_1", 500))
        .await
        .unwrap();
    store
        .insert_connect_link(&connect_link("l_old", "ten_1", 50))
        .await
        .unwrap();
    store
        .insert_connect_link(&connect_link("l_new", "ten_1", 101))
        .await
        .unwrap();
    store
        .save_authorization(
            &connection("conn_1", "ten_1"),
            true,
            &claim("c_old", "ten_1", "conn_1", 1),
            &[],
        )
        .await
        .unwrap();
    store
        .save_authorization(
            &connection("conn_1", "ten_1"),
            false,
            &claim("c_new", "ten_1", "conn_1", 1_000),
            &[],
        )
        .await
        .unwrap();
    // A used one that expired goes too.
    store.take_oauth_state("s_old", 2).await.unwrap().unwrap();

    assert_eq!(store.purge_expired(100).await.unwrap(), 3);
    assert_eq!(store.oauth_state("s_old").await.unwrap(), None);
    assert!(store.oauth_state("s_edge").await.unwrap().is_some());
    assert!(store.oauth_state("s_new").await.unwrap().is_some());
    assert_eq!(store.take_connect_link("l_old", 1).await.unwrap(), None);
    assert!(store.take_connect_link("l_new", 1).await.unwrap().is_some());
    assert_eq!(store.take_claim_code("c_old", 1).await.unwrap(), None);
    assert!(store.take_claim_code("c_new", 1).await.unwrap().is_some());
    // Connections are never purged.
    assert!(store.connection("conn_1").await.unwrap().is_some());

    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    assert_eq!(store.purge_expired(10_000).await.unwrap(), 4);
}

async fn save_tokens_touches_only_token_columns_and_never_a_disconnected_connection(b: Backend) {
    let (_db, store) = fresh(b, "save-tokens").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    let mut c = connection("conn_1", "ten_1");
    c.last_error = Some("earlier failure".into());
    store.insert_connection(&c).await.unwrap();
    // A rename at the same time as a refresh: neither overwrites the other.
    assert!(
        store
            .set_connection_details("conn_1", Some("Renamed"), None, 7_000)
            .await
            .unwrap()
    );
    let update = TokenUpdate {
        connection_id: "conn_1".into(),
        expected_refresh_token: "lwa1.fp.cmVmcmVzaA".into(),
        refresh_token: "lwa1.fp.bmV3LXJlZnJlc2g".into(),
        access_token: "lwa1.fp.bmV3LWFjY2Vzcw".into(),
        access_expires_at_ms: 20_000,
        refreshed_at_ms: 8_000,
        next_refresh_at_ms: 15_000,
    };
    // Started from another refresh token (a re-authorization happened meanwhile): not stored.
    let stale = TokenUpdate {
        expected_refresh_token: "lwa1.fp.b2xk".into(),
        ..update.clone()
    };
    assert!(!store.save_tokens(&stale).await.unwrap());
    assert!(store.save_tokens(&update).await.unwrap());
    let got = store.connection("conn_1").await.unwrap().unwrap();
    assert_eq!(got.name.as_deref(), Some("Renamed"));
    assert_eq!(got.callback_url, None);
    assert_eq!(got.refresh_token.as_deref(), Some("lwa1.fp.bmV3LXJlZnJlc2g"));
    assert_eq!(got.access_token.as_deref(), Some("lwa1.fp.bmV3LWFjY2Vzcw"));
    assert_eq!(got.access_expires_at_ms, Some(20_000));
    assert_eq!(got.last_refresh_at_ms, Some(8_000));
    assert_eq!(got.last_error, None);

    // A failure is recorded; invalid_grant changes the status.
    assert!(
        store
            .record_refresh_error("conn_1", None, "LWA is down", 9_000, &[], None)
            .await
            .unwrap()
    );
    let got = store.connection("conn_1").await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.last_error.as_deref()),
        ("active", Some("LWA is down"))
    );
    assert!(
        store
            .record_refresh_error("conn_1", Some("needs_reauth"), "invalid_grant", 9_500, &[], None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.connection("conn_1").await.unwrap().unwrap().status,
        "needs_reauth"
    );

    // Once disconnected, a late refresh stores nothing.
    let mut gone = store.connection("conn_1").await.unwrap().unwrap();
    gone.status = "disconnected".into();
    gone.refresh_token = None;
    gone.access_token = None;
    store.update_connection(&gone).await.unwrap();
    assert!(!store.save_tokens(&update).await.unwrap());
    assert!(
        !store
            .record_refresh_error("conn_1", Some("needs_reauth"), "x", 10_000, &[], None)
            .await
            .unwrap()
    );
    let got = store.connection("conn_1").await.unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.refresh_token), ("disconnected", None));
    assert!(
        !store
            .save_tokens(&TokenUpdate {
                connection_id: "conn_nope".into(),
                ..update
            })
            .await
            .unwrap()
    );
}

async fn the_refresh_lease_has_one_holder_until_a_save_a_release_or_its_end(b: Backend) {
    let (_db, store) = fresh(b, "lease").await;
    store.insert_tenant(&tenant("ten_1", 1_000)).await.unwrap();
    let mut c = connection("conn_a", "ten_1");
    c.tenant_secret = false;
    store.insert_connection(&c).await.unwrap();
    let lease = |s: &std::sync::Arc<dyn Store>| {
        let s = s.clone();
        async move {
            s.refresh_schedule("conn_a")
                .await
                .unwrap()
                .unwrap()
                .refresh_lease_until_ms
        }
    };

    // Ten concurrent takers: one holds it.
    let takers = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_refresh_lease("conn_a", 1_000, 31_000).await.unwrap() })
    });
    let mut won = 0;
    for t in takers {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(lease(&store).await, 31_000);
    // The refresher's claim skips a connection someone is refreshing.
    assert!(
        store
            .claim_due_refreshes(2_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // It runs out: another takes it over.
    assert!(!store.take_refresh_lease("conn_a", 30_999, 60_000).await.unwrap());
    assert!(store.take_refresh_lease("conn_a", 31_000, 61_000).await.unwrap());
    // A release ends it.
    store.release_refresh_lease("conn_a").await.unwrap();
    assert_eq!(lease(&store).await, 0);
    // A claim takes it (for at most REFRESH_LEASE_MS); a save ends it.
    let claimed = store.claim_due_refreshes(100_000, 120_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].schedule.refresh_lease_until_ms,
        100_000 + lwa_store::REFRESH_LEASE_MS
    );
    assert!(
        !store
            .take_refresh_lease("conn_a", 100_001, 200_000)
            .await
            .unwrap()
    );
    let saved = store
        .save_tokens(&TokenUpdate {
            connection_id: "conn_a".into(),
            expected_refresh_token: c.refresh_token.clone().unwrap(),
            refresh_token: "sealed-refresh-2".into(),
            access_token: "sealed-access-2".into(),
            access_expires_at_ms: 3_700_000,
            refreshed_at_ms: 100_002,
            next_refresh_at_ms: 3_400_000,
        })
        .await
        .unwrap();
    assert!(saved);
    assert_eq!(lease(&store).await, 0);
    // At a single server's start, every lease (its own, from before a crash) ends.
    assert!(
        store
            .take_refresh_lease("conn_a", 200_000, 230_000)
            .await
            .unwrap()
    );
    assert_eq!(store.clear_refresh_leases().await.unwrap(), 1);
    assert_eq!(lease(&store).await, 0);
}

async fn the_refresh_schedule_follows_refreshes_failures_and_new_authorizations(b: Backend) {
    let (_db, store) = fresh(b, "schedule").await;
    store.insert_tenant(&tenant("ten_1", 1_000)).await.unwrap();
    for id in ["conn_a", "conn_b", "conn_c"] {
        let mut c = connection(id, "ten_1");
        c.tenant_secret = false;
        store.insert_connection(&c).await.unwrap();
    }
    // A tenant-held secret keeps a connection out of the background refresher.
    store
        .insert_connection(&connection("conn_held", "ten_1"))
        .await
        .unwrap();

    // New connections are due at once; a claim takes each once (a lease), in due order.
    let first = store.claim_due_refreshes(1_000, 60_000, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["conn_a", "conn_b"]
    );
    assert!(first.iter().all(|d| d.next_refresh_at_ms == 61_000));
    let rest = store.claim_due_refreshes(1_000, 60_000, 10).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["conn_c"]);
    assert!(
        store
            .claim_due_refreshes(1_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A lease that runs out (its process died) makes them due again.
    assert_eq!(
        store.claim_due_refreshes(61_000, 60_000, 10).await.unwrap().len(),
        3
    );
    for id in ["conn_a", "conn_b", "conn_c"] {
        assert!(store.set_next_refresh(id, 0).await.unwrap());
        // The claim took their refresh leases too.
        let leased = store.refresh_schedule(id).await.unwrap().unwrap();
        assert_eq!(
            leased.refresh_lease_until_ms,
            61_000 + lwa_store::REFRESH_LEASE_MS
        );
        store.release_refresh_lease(id).await.unwrap();
    }

    // A refresh schedules the next one and clears a backoff.
    let before = store.refresh_schedule("conn_a").await.unwrap().unwrap();
    assert_eq!(before, RefreshSchedule::default());
    // A failure recorded for an older authorization is not this one's.
    assert!(
        store
            .record_refresh_failure("conn_a", 4_999, "late", 2_000, &|_| 9_999)
            .await
            .unwrap()
            .is_none()
    );
    let retry_at = |failures: i64| 2_000 + failures * 1_000;
    let failed = store
        .record_refresh_failure("conn_a", 5_000, "LWA answered 500", 2_000, &retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((failed.refresh_failures, failed.retry_at_ms), (1, Some(3_000)));
    let failed = store
        .record_refresh_failure("conn_a", 5_000, "LWA answered 500", 3_000, &retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            failed.refresh_failures,
            failed.retry_at_ms,
            failed.next_refresh_at_ms
        ),
        (2, Some(4_000), 4_000)
    );
    let due: Vec<String> = store
        .claim_due_refreshes(3_500, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, ["conn_b", "conn_c"], "a connection in backoff is not due");
    let row = store.connection("conn_a").await.unwrap().unwrap();
    assert!(
        store
            .save_tokens(&TokenUpdate {
                connection_id: "conn_a".into(),
                expected_refresh_token: row.refresh_token.clone().unwrap(),
                refresh_token: row.refresh_token.clone().unwrap(),
                access_token: "lwa1.fp.bmV3".into(),
                access_expires_at_ms: 3_605_000,
                refreshed_at_ms: 5_000,
                next_refresh_at_ms: 3_400_000,
            })
            .await
            .unwrap()
    );
    let after = store.refresh_schedule("conn_a").await.unwrap().unwrap();
    assert_eq!(
        (
            after.refresh_failures,
            after.retry_at_ms,
            after.next_refresh_at_ms
        ),
        (0, None, 3_400_000)
    );

    // A failure on a connection that is not active records nothing.
    let mut b = store.connection("conn_b").await.unwrap().unwrap();
    b.status = "needs_reauth".into();
    store.update_connection(&b).await.unwrap();
    assert!(
        store
            .record_refresh_failure("conn_b", 5_000, "x", 6_000, &retry_at)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim_due_refreshes(i64::MAX - 1, 0, 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != "conn_b")
    );

    // A new authorization starts over: no backoff, no notice, due now.
    store
        .record_refresh_failure("conn_c", 5_000, "x", 6_000, &retry_at)
        .await
        .unwrap()
        .unwrap();
    assert!(store.set_expiry_notice("conn_c", 5_000, 30, &[]).await.unwrap());
    let mut c = store.connection("conn_c").await.unwrap().unwrap();
    assert!(
        !store
            .set_expiry_notice("conn_c", c.authorized_at_ms + 1, 7, &[])
            .await
            .unwrap(),
        "a notice for another authorization is not recorded"
    );
    c.name = Some("renamed".into());
    store.update_connection(&c).await.unwrap();
    let kept = store.refresh_schedule("conn_c").await.unwrap().unwrap();
    assert_eq!((kept.refresh_failures, kept.expiry_notice_days), (1, Some(30)));
    c.authorized_at_ms = 50_000;
    store.update_connection(&c).await.unwrap();
    let fresh = store.refresh_schedule("conn_c").await.unwrap().unwrap();
    assert_eq!(fresh, RefreshSchedule::default());
    // A late invalid_grant for the old authorization leaves the new one alone.
    assert!(
        !store
            .record_refresh_error("conn_c", Some("needs_reauth"), "late", 60_000, &[], Some(5_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.connection("conn_c").await.unwrap().unwrap().status,
        "active"
    );

    // Authorizations nearing their end, once per notice.
    let expiring = store.expiring_authorizations(10_000, 30, 10).await.unwrap();
    assert_eq!(
        expiring.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["conn_a", "conn_held"],
        "conn_b is not active, conn_c was re-authorized later"
    );
    assert!(store.set_expiry_notice("conn_a", 5_000, 30, &[]).await.unwrap());
    assert!(
        !store.set_expiry_notice("conn_a", 5_000, 30, &[]).await.unwrap(),
        "a second process marking the same notice gets false"
    );
    assert_eq!(
        store.expiring_authorizations(10_000, 30, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.expiring_authorizations(10_000, 7, 10).await.unwrap().len(),
        2
    );
    assert!(store.set_expiry_notice("conn_a", 5_000, 7, &[]).await.unwrap());
    assert!(
        !store.set_expiry_notice("conn_a", 5_000, 30, &[]).await.unwrap(),
        "a stale 30-day pass never moves a 7-day notice back"
    );
    assert_eq!(
        store
            .refresh_schedule("conn_a")
            .await
            .unwrap()
            .unwrap()
            .expiry_notice_days,
        Some(7)
    );

    // A claim sets only its own fields.
    assert!(
        store
            .mark_claimed("conn_a", Some("Claimed"), None, 12_000)
            .await
            .unwrap()
    );
    let a = store.connection("conn_a").await.unwrap().unwrap();
    assert_eq!(
        (a.name.as_deref(), a.callback_url.as_deref(), a.claimed_at_ms),
        (Some("Claimed"), Some("https://wms.example.com/cb"), Some(12_000))
    );
    assert_eq!(
        a.access_token.as_deref(),
        Some("lwa1.fp.bmV3"),
        "the refresh's token stays"
    );
    assert!(!store.mark_claimed("conn_nope", None, None, 1).await.unwrap());

    // Ads profiles: due, re-read, rescheduled.
    let mut ads = connection("conn_ads", "ten_1");
    ads.api = "ads".into();
    ads.tenant_secret = false;
    store.insert_connection(&ads).await.unwrap();
    assert_eq!(store.due_profile_checks(0, 10).await.unwrap(), ["conn_ads"]);
    assert!(
        store
            .set_profiles("conn_ads", Some(r#"[{"profileId":1}]"#), 90_000, 7_000)
            .await
            .unwrap()
    );
    assert!(store.due_profile_checks(80_000, 10).await.unwrap().is_empty());
    assert_eq!(store.due_profile_checks(90_000, 10).await.unwrap(), ["conn_ads"]);
    assert_eq!(
        store.connection("conn_ads").await.unwrap().unwrap().profiles,
        r#"[{"profileId":1}]"#
    );
}

fn audit(at: i64, tenant: &str, conn: Option<&str>, kind: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at_ms: at,
        last_at_ms: at + 5,
        count: 3,
        tenant_id: tenant.into(),
        key_id: "k1".into(),
        connection_id: conn.map(str::to_owned),
        kind: kind.into(),
        via: "v1".into(),
        detail: None,
    }
}

async fn audit_events_are_appended_and_paged_newest_first_with_filters(b: Backend) {
    let (_db, store) = fresh(b, "audit").await;
    store.insert_audit_events(&[]).await.unwrap();
    let mut batch: Vec<AuditEvent> = (0..2500)
        .map(|i| audit(1_000 + i, "ten_1", Some("conn_a"), "access_token"))
        .collect();
    batch.push(audit(10_000, "ten_2", None, "grantless_token"));
    store.insert_audit_events(&batch).await.unwrap();

    let page = store
        .audit_events(&AuditFilter {
            tenant_id: Some("ten_1".into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1000);
    assert!(page.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(
        (page[0].at_ms, page[0].last_at_ms, page[0].count),
        (3_499, 3_504, 3)
    );
    let mut seen = page.len();
    let mut before = page.last().unwrap().id;
    loop {
        let next = store
            .audit_events(&AuditFilter {
                tenant_id: Some("ten_1".into()),
                before: Some(before),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        if next.is_empty() {
            break;
        }
        seen += next.len();
        before = next.last().unwrap().id;
    }
    assert_eq!(seen, 2500);

    let filtered = |f: AuditFilter| {
        let store = &store;
        async move {
            store
                .audit_events(&AuditFilter { limit: 1000, ..f })
                .await
                .unwrap()
        }
    };
    let grantless = filtered(AuditFilter {
        kind: Some("grantless_token".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(grantless.len(), 1);
    assert_eq!(
        (
            grantless[0].tenant_id.as_str(),
            grantless[0].connection_id.as_deref()
        ),
        ("ten_2", None)
    );
    let window = filtered(AuditFilter {
        connection_id: Some("conn_a".into()),
        since_ms: Some(1_100),
        until_ms: Some(1_200),
        ..AuditFilter::default()
    })
    .await;
    // since matches on the last time (1_095 + 5 = 1_100), until on the first.
    assert_eq!(window.len(), 105);
    assert!(
        filtered(AuditFilter {
            key_id: Some("k2".into()),
            ..AuditFilter::default()
        })
        .await
        .is_empty()
    );
}

// --- webhooks ---

const DAY_MS: i64 = 24 * 3600 * 1000;

fn event(
    id: &str,
    connection_id: Option<&str>,
    kind: &str,
    at_ms: i64,
    targets: Vec<EventTarget>,
) -> NewEvent {
    NewEvent {
        id: id.into(),
        tenant_id: Some("ten_1".into()),
        connection_id: connection_id.map(Into::into),
        event_type: kind.into(),
        body: format!("{{\"id\":\"{id}\",\"type\":\"{kind}\"}}"),
        created_at_ms: at_ms,
        targets,
        retry_for_ms: DAY_MS,
    }
}

/// A store with tenant `ten_1` (webhook URL set) and connection `conn_1`.
async fn webhook_store(b: Backend, name: &str) -> (TestDb, std::sync::Arc<dyn Store>) {
    let (db, store) = fresh(b, name).await;
    let mut t = tenant("ten_1", 1);
    t.webhook_url = Some("https://wms.example.com/hooks".into());
    store.insert_tenant(&t).await.unwrap();
    store
        .insert_connection(&connection("conn_1", "ten_1"))
        .await
        .unwrap();
    (db, store)
}

async fn all_deliveries(store: &dyn Store) -> Vec<lwa_store::WebhookDelivery> {
    let mut page = store
        .webhook_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    page.reverse();
    page
}

async fn events_are_written_with_the_change_that_caused_them_or_not_at_all(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-atomic").await;
    let both = || {
        vec![
            EventTarget::TenantWebhook,
            EventTarget::Callback("https://wms.example.com/cb".into()),
        ]
    };

    // A new connection and its event: one delivery per target, due at once.
    store
        .save_authorization(
            &connection("conn_2", "ten_1"),
            true,
            &claim("c1", "ten_1", "conn_2", 10),
            &[event(
                "evt_1",
                Some("conn_2"),
                "connection.authorized",
                5_000,
                both(),
            )],
        )
        .await
        .unwrap();
    let got = all_deliveries(&*store).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got.iter()
            .map(|d| (d.target.as_str(), d.url.as_str()))
            .collect::<Vec<_>>(),
        [
            ("tenant", "https://wms.example.com/hooks"),
            ("callback", "https://wms.example.com/cb")
        ]
    );
    for d in &got {
        assert_eq!(d.event_id, "evt_1");
        assert_eq!(d.state, "pending");
        assert_eq!((d.next_attempt_at_ms, d.expires_at_ms), (5_000, 5_000 + DAY_MS));
        assert_eq!(d.tenant_id.as_deref(), Some("ten_1"));
        assert_eq!(d.connection_id.as_deref(), Some("conn_2"));
        assert_eq!(d.body, r#"{"id":"evt_1","type":"connection.authorized"}"#);
    }

    // The claim code collides: neither the connection nor its event is stored.
    let failed = store
        .save_authorization(
            &connection("conn_3", "ten_1"),
            true,
            &claim("c1", "ten_1", "conn_3", 10),
            &[event(
                "evt_2",
                Some("conn_3"),
                "connection.authorized",
                6_000,
                both(),
            )],
        )
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
    assert_eq!(store.connection("conn_3").await.unwrap(), None);
    assert_eq!(all_deliveries(&*store).await.len(), 2);

    // The same URL as webhook and callback is delivered once; no webhook URL, no delivery.
    store
        .enqueue_events(&[event(
            "evt_3",
            Some("conn_1"),
            "connection.reauthorized",
            7_000,
            vec![
                EventTarget::TenantWebhook,
                EventTarget::Callback("https://wms.example.com/hooks".into()),
            ],
        )])
        .await
        .unwrap();
    assert_eq!(all_deliveries(&*store).await.len(), 3);
    let mut quiet = tenant("ten_2", 1);
    quiet.webhook_url = None;
    store.insert_tenant(&quiet).await.unwrap();
    let mut e = event(
        "evt_4",
        None,
        "connection.authorized",
        7_000,
        vec![EventTarget::TenantWebhook],
    );
    e.tenant_id = Some("ten_2".into());
    store.enqueue_events(&[e]).await.unwrap();
    assert_eq!(all_deliveries(&*store).await.len(), 3);
    // An event id is unique.
    assert!(matches!(
        store
            .enqueue_events(&[event("evt_1", None, "x", 1, vec![])])
            .await,
        Err(StoreError::Conflict(_))
    ));
}

/// Several processes seeing the same `invalid_grant`, or disconnecting at once: one event each.
async fn concurrent_status_changes_raise_their_event_once(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-once-concurrent").await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = Vec::new();
    for n in 0..10 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let events = [event(
                &format!("evt_n{n}"),
                Some("conn_1"),
                "connection.needs_reauth",
                9_000,
                vec![EventTarget::TenantWebhook],
            )];
            barrier.wait().await;
            store
                .record_refresh_error(
                    "conn_1",
                    Some("needs_reauth"),
                    "invalid_grant",
                    9_000,
                    &events,
                    None,
                )
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(all_deliveries(&*store).await.len(), 1);

    let mut gone = store.connection("conn_1").await.unwrap().unwrap();
    gone.status = "disconnected".into();
    gone.refresh_token = None;
    let mut tasks = Vec::new();
    for n in 0..10 {
        let (store, barrier, gone) = (store.clone(), barrier.clone(), gone.clone());
        tasks.push(tokio::spawn(async move {
            let events = [event(
                &format!("evt_d{n}"),
                Some("conn_1"),
                "connection.disconnected",
                9_500,
                vec![EventTarget::TenantWebhook],
            )];
            barrier.wait().await;
            store.disconnect_connection(&gone, &events).await.unwrap()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    let types: Vec<String> = all_deliveries(&*store)
        .await
        .into_iter()
        .map(|d| d.event_type)
        .collect();
    assert_eq!(types, ["connection.needs_reauth", "connection.disconnected"]);
}

async fn needs_reauth_and_disconnect_raise_their_event_once(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-once").await;
    let needs = |n: u32| {
        vec![event(
            &format!("evt_n{n}"),
            Some("conn_1"),
            "connection.needs_reauth",
            9_000,
            vec![EventTarget::TenantWebhook],
        )]
    };
    // A transient failure (no status) raises nothing, even if handed an event.
    assert!(
        store
            .record_refresh_error("conn_1", None, "LWA is down", 8_000, &needs(0), None)
            .await
            .unwrap()
    );
    assert_eq!(all_deliveries(&*store).await.len(), 0);
    for n in 1..=3 {
        assert!(
            store
                .record_refresh_error(
                    "conn_1",
                    Some("needs_reauth"),
                    "invalid_grant",
                    9_000,
                    &needs(n),
                    None
                )
                .await
                .unwrap()
        );
    }
    let got = all_deliveries(&*store).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].event_id.as_str(), got[0].event_type.as_str()),
        ("evt_n1", "connection.needs_reauth")
    );

    let mut gone = store.connection("conn_1").await.unwrap().unwrap();
    gone.status = "disconnected".into();
    gone.refresh_token = None;
    for n in 1..=2 {
        let e = event(
            &format!("evt_d{n}"),
            Some("conn_1"),
            "connection.disconnected",
            10_000,
            vec![EventTarget::TenantWebhook],
        );
        assert!(store.disconnect_connection(&gone, &[e]).await.unwrap());
    }
    let got = all_deliveries(&*store).await;
    assert_eq!(
        got.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_n1", "evt_d1"]
    );
    assert_eq!(store.connection("conn_1").await.unwrap().unwrap(), gone);
    // Disconnected: a late refresh error records nothing and raises nothing.
    assert!(
        !store
            .record_refresh_error("conn_1", Some("needs_reauth"), "x", 11_000, &needs(9), None)
            .await
            .unwrap()
    );
    assert_eq!(all_deliveries(&*store).await.len(), 2);
    assert!(
        !store
            .disconnect_connection(&connection("conn_404", "ten_1"), &[])
            .await
            .unwrap()
    );
}

async fn deliveries_are_claimed_in_order_per_connection_and_target(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-order").await;
    store
        .insert_connection(&connection("conn_2", "ten_1"))
        .await
        .unwrap();
    let hook = || vec![EventTarget::TenantWebhook];
    store
        .enqueue_events(&[
            event("evt_a1", Some("conn_1"), "connection.authorized", 1_000, hook()),
            event("evt_b1", Some("conn_2"), "connection.authorized", 1_000, hook()),
            event("evt_a2", Some("conn_1"), "connection.needs_reauth", 2_000, hook()),
        ])
        .await
        .unwrap();
    // Not due yet.
    assert!(store.claim_deliveries(500, 60_000, 10).await.unwrap().is_empty());
    // The first of each connection; the second of conn_1 waits behind the first.
    let claimed = store.claim_deliveries(3_000, 60_000, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_a1", "evt_b1"]
    );
    // Claimed: nobody else gets them until the lease lapses.
    assert!(
        store
            .claim_deliveries(3_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let a1 = claimed[0].id;
    let b1 = claimed[1].id;
    // conn_1's first fails and is retried later: its second still waits.
    assert!(
        store
            .record_delivery_attempt(&DeliveryAttempt {
                delivery_id: a1,
                at_ms: 3_000,
                status: Some(500),
                error: Some("HTTP 500".into()),
                result: AttemptResult::RetryAt(13_000),
            })
            .await
            .unwrap()
    );
    assert!(
        store
            .record_delivery_attempt(&DeliveryAttempt {
                delivery_id: b1,
                at_ms: 3_000,
                status: Some(204),
                error: None,
                result: AttemptResult::Delivered,
            })
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_deliveries(12_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_deliveries(13_000, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].event_id.as_str(), again[0].attempts), ("evt_a1", 1));
    assert_eq!(again[0].last_status, Some(500));
    // Its worker dies: after the lease it is claimed again.
    assert!(
        store
            .claim_deliveries(14_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_deliveries(73_000, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, a1);
    // Given up: the next one of conn_1 goes.
    assert!(
        store
            .record_delivery_attempt(&DeliveryAttempt {
                delivery_id: a1,
                at_ms: 73_000,
                status: None,
                error: Some("connection refused".into()),
                result: AttemptResult::GaveUp,
            })
            .await
            .unwrap()
    );
    // A late outcome for a finished delivery changes nothing.
    assert!(
        !store
            .record_delivery_attempt(&DeliveryAttempt {
                delivery_id: a1,
                at_ms: 74_000,
                status: Some(200),
                error: None,
                result: AttemptResult::Delivered,
            })
            .await
            .unwrap()
    );
    let next = store.claim_deliveries(73_000, 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event_id, "evt_a2");
    let failed = store.webhook_delivery(a1).await.unwrap().unwrap();
    assert_eq!(
        (
            failed.state.as_str(),
            failed.attempts,
            failed.last_error.as_deref(),
            failed.last_status
        ),
        ("failed", 2, Some("connection refused"), None)
    );
    let delivered = store.webhook_delivery(b1).await.unwrap().unwrap();
    assert_eq!(
        (delivered.state.as_str(), delivered.delivered_at_ms),
        ("delivered", Some(3_000))
    );
    assert_eq!(store.webhook_delivery(999).await.unwrap(), None);
}

async fn the_delivery_log_is_per_tenant_and_failed_deliveries_can_be_retried(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-log").await;
    let mut other = tenant("ten_2", 1);
    other.webhook_url = Some("https://other.example.com/hooks".into());
    store.insert_tenant(&other).await.unwrap();
    for n in 0..5 {
        store
            .enqueue_events(&[event(
                &format!("evt_{n}"),
                Some("conn_1"),
                "connection.authorized",
                n,
                vec![EventTarget::TenantWebhook],
            )])
            .await
            .unwrap();
    }
    let mut theirs = event(
        "evt_other",
        None,
        "connection.authorized",
        1,
        vec![EventTarget::TenantWebhook],
    );
    theirs.tenant_id = Some("ten_2".into());
    let mut operator = event(
        "evt_op",
        None,
        "app.client_secret_expiring",
        1,
        vec![EventTarget::Operator("https://ops.example.com/h".into())],
    );
    operator.tenant_id = None;
    store.enqueue_events(&[theirs, operator]).await.unwrap();

    let mine = |before: Option<i64>, limit: u32| DeliveryFilter {
        tenant_id: Some("ten_1".into()),
        before,
        limit,
        ..DeliveryFilter::default()
    };
    let page1 = store.webhook_deliveries(&mine(None, 3)).await.unwrap();
    assert_eq!(
        page1.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_4", "evt_3", "evt_2"]
    );
    let page2 = store
        .webhook_deliveries(&mine(Some(page1[2].id), 3))
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_1", "evt_0"]
    );
    let ops = store
        .webhook_deliveries(&DeliveryFilter {
            event_type: Some("app.client_secret_expiring".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].tenant_id.as_deref(), ops[0].target.as_str()),
        (None, "operator")
    );

    // Only a failed delivery, and only by its tenant, can be retried.
    let first = page2[1].id;
    assert!(
        !store
            .retry_delivery(first, Some("ten_1"), 50, 50 + DAY_MS)
            .await
            .unwrap()
    );
    let claimed = store.claim_deliveries(10, 1_000, 1).await.unwrap();
    assert_eq!(claimed[0].id, first);
    store
        .record_delivery_attempt(&DeliveryAttempt {
            delivery_id: first,
            at_ms: 10,
            status: Some(410),
            error: Some("HTTP 410".into()),
            result: AttemptResult::GaveUp,
        })
        .await
        .unwrap();
    assert!(
        !store
            .retry_delivery(first, Some("ten_2"), 50, 50 + DAY_MS)
            .await
            .unwrap()
    );
    assert!(
        store
            .retry_delivery(first, Some("ten_1"), 50, 50 + DAY_MS)
            .await
            .unwrap()
    );
    let retried = store.webhook_delivery(first).await.unwrap().unwrap();
    assert_eq!(
        (
            retried.state.as_str(),
            retried.next_attempt_at_ms,
            retried.expires_at_ms,
            retried.attempts
        ),
        ("pending", 50, 50 + DAY_MS, 1)
    );
    let pending = store
        .webhook_deliveries(&DeliveryFilter {
            tenant_id: Some("ten_1".into()),
            state: Some("pending".into()),
            connection_id: Some("conn_1".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 5);
}

async fn a_callback_url_given_later_receives_the_connections_recent_events(b: Backend) {
    let (_db, store) = webhook_store(b, "outbox-callback").await;
    store
        .enqueue_events(&[
            event(
                "evt_old",
                Some("conn_1"),
                "connection.authorized",
                1_000,
                vec![EventTarget::TenantWebhook],
            ),
            event(
                "evt_new",
                Some("conn_1"),
                "connection.reauthorized",
                5_000,
                vec![EventTarget::TenantWebhook],
            ),
        ])
        .await
        .unwrap();
    let cb = EventTarget::Callback("https://wms.example.com/cb".into());
    assert_eq!(
        store
            .add_connection_event_target("conn_1", 5_000, &cb, 6_000)
            .await
            .unwrap(),
        1
    );
    // Twice: nothing more.
    assert_eq!(
        store
            .add_connection_event_target("conn_1", 5_000, &cb, 6_000)
            .await
            .unwrap(),
        0
    );
    let got = all_deliveries(&*store).await;
    assert_eq!(
        got.iter()
            .map(|d| (d.event_id.as_str(), d.target.as_str()))
            .collect::<Vec<_>>(),
        [
            ("evt_old", "tenant"),
            ("evt_new", "tenant"),
            ("evt_new", "callback")
        ]
    );
    assert_eq!(got[2].next_attempt_at_ms, 6_000);
}
fn app_secret(app: &str, issued: i64) -> AppSecret {
    AppSecret {
        app: app.into(),
        client_id: "amzn1.application-oa2-client.x".into(),
        secret: "lwa1.fp.bmV3".into(),
        secret_issued_at_ms: issued,
        previous_secret: None,
        previous_issued_at_ms: None,
        previous_expires_at_ms: None,
        config_secret_sha256: Some("ab".repeat(32)),
        announced_expiry_at_ms: None,
        warnings_sent: Vec::new(),
        version: 1,
        updated_at_ms: issued,
    }
}

async fn app_secrets_are_added_once_replaced_by_version_and_warned_once(b: Backend) {
    let (db, store) = fresh(b, "app-secrets").await;
    assert_eq!(store.app_secret("main").await.unwrap(), None);
    let first = app_secret("main", 1_000);
    assert!(store.insert_app_secret(&first).await.unwrap());
    let mut other = app_secret("main", 2_000);
    other.secret = "lwa1.fp.b3RoZXI".into();
    assert!(
        !store.insert_app_secret(&other).await.unwrap(),
        "a second first start adds nothing"
    );
    assert_eq!(store.app_secret("main").await.unwrap(), Some(first.clone()));

    // A rotation: the newest becomes the previous one.
    let rotated = AppSecret {
        secret: "lwa1.fp.cm90YXRlZA".into(),
        secret_issued_at_ms: 5_000,
        previous_secret: Some(first.secret.clone()),
        previous_issued_at_ms: Some(1_000),
        previous_expires_at_ms: Some(5_000 + 7 * 86_400_000),
        announced_expiry_at_ms: Some(9_000),
        version: 2,
        updated_at_ms: 5_000,
        ..first.clone()
    };
    assert!(store.replace_app_secret(&rotated, 1).await.unwrap());
    // A writer that read version 1 lost the race.
    assert!(!store.replace_app_secret(&other, 1).await.unwrap());
    assert_eq!(store.app_secret("main").await.unwrap(), Some(rotated.clone()));

    // Each warning is recorded once, and only for the secret it was computed for.
    assert!(
        store
            .mark_app_secret_warning("main", 5_000, 30, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_app_secret_warning("main", 5_000, 30, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_app_secret_warning("main", 1_000, 7, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_app_secret_warning("main", 5_000, 7, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_app_secret_warning("other", 5_000, 7, &[])
            .await
            .unwrap()
    );
    let stored = store.app_secret("main").await.unwrap().unwrap();
    assert_eq!(stored.warnings_sent, vec![30, 7]);

    store.insert_app_secret(&app_secret("ads", 3_000)).await.unwrap();
    let names: Vec<String> = store
        .app_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.app)
        .collect();
    assert_eq!(names, vec!["ads".to_owned(), "main".to_owned()]);

    // The rows survive a reopen.
    drop(store);
    let store = db.reopen().await;
    assert_eq!(
        store.app_secret("main").await.unwrap().unwrap().warnings_sent,
        vec![30, 7]
    );
}

async fn concurrent_token_saves_are_written_together_each_compare_and_set(b: Backend) {
    let (_db, store) = fresh(b, "group-commit").await;
    store.insert_tenant(&tenant("ten_1", 1_000)).await.unwrap();
    let ids: Vec<String> = (0..200).map(|i| format!("conn_{i:03}")).collect();
    for id in &ids {
        store.insert_connection(&connection(id, "ten_1")).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let store = store.clone();
        let update = TokenUpdate {
            connection_id: id.clone(),
            // Every third started from a refresh token the row no longer holds.
            expected_refresh_token: if i % 3 == 0 {
                "lwa1.fp.b2xk".into()
            } else {
                "lwa1.fp.cmVmcmVzaA".into()
            },
            refresh_token: format!("lwa1.fp.new-{i}"),
            access_token: format!("lwa1.fp.access-{i}"),
            access_expires_at_ms: 100_000 + i as i64,
            refreshed_at_ms: 50_000,
            next_refresh_at_ms: 90_000,
        };
        tasks.push(tokio::spawn(
            async move { store.save_tokens(&update).await.unwrap() },
        ));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), i % 3 != 0, "save {i}");
    }
    for (i, id) in ids.iter().enumerate() {
        let row = store.connection(id).await.unwrap().unwrap();
        if i % 3 == 0 {
            assert_eq!(row.refresh_token.as_deref(), Some("lwa1.fp.cmVmcmVzaA"), "{id}");
        } else {
            assert_eq!(row.refresh_token, Some(format!("lwa1.fp.new-{i}")), "{id}");
            assert_eq!(row.access_expires_at_ms, Some(100_000 + i as i64));
            assert_eq!(
                store
                    .refresh_schedule(id)
                    .await
                    .unwrap()
                    .unwrap()
                    .next_refresh_at_ms,
                90_000
            );
        }
    }
    // Two saves of one connection arriving together: the second started from the token the
    // first replaced.
    let first = TokenUpdate {
        connection_id: "conn_001".into(),
        expected_refresh_token: "lwa1.fp.new-1".into(),
        refresh_token: "lwa1.fp.newer".into(),
        access_token: "lwa1.fp.a".into(),
        access_expires_at_ms: 1,
        refreshed_at_ms: 1,
        next_refresh_at_ms: 1,
    };
    let second = TokenUpdate {
        refresh_token: "lwa1.fp.other".into(),
        ..first.clone()
    };
    let (a, b) = tokio::join!(store.save_tokens(&first), store.save_tokens(&second));
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|s| **s).count(),
        1,
        "exactly one of two saves from the same token"
    );
}

// --- invalidations ---

async fn invalidations_follow_revocations_disconnects_and_reauthorizations_in_order(b: Backend) {
    let (_db, store) = fresh(b, "invalidations").await;
    let seen = |s: &std::sync::Arc<dyn Store>, after: i64| {
        let s = s.clone();
        async move {
            s.invalidations_after(after, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.kind, i.subject))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(store.last_invalidation().await.unwrap(), 0);
    store.insert_tenant(&tenant("ten_1", 1_000)).await.unwrap();
    store
        .insert_api_key(&api_key("key_1", "ten_1", 1_000))
        .await
        .unwrap();
    let mut c = connection("conn_a", "ten_1");
    c.tenant_secret = false;
    store.insert_connection(&c).await.unwrap();
    // Inserts, token saves, uses and leases change nothing another cache holds.
    store.touch_api_key("key_1", 2_000).await.unwrap();
    assert!(store.take_refresh_lease("conn_a", 1_000, 31_000).await.unwrap());
    let saved = store
        .save_tokens(&TokenUpdate {
            connection_id: "conn_a".into(),
            expected_refresh_token: c.refresh_token.clone().unwrap(),
            refresh_token: "sealed-refresh-2".into(),
            access_token: "sealed-access-2".into(),
            access_expires_at_ms: 3_700_000,
            refreshed_at_ms: 2_000,
            next_refresh_at_ms: 3_400_000,
        })
        .await
        .unwrap();
    assert!(saved);
    store
        .set_connection_details("conn_a", Some("Renamed"), None, 2_500)
        .await
        .unwrap();
    assert_eq!(seen(&store, 0).await, vec![]);

    // A revocation, a needs_reauth, a re-authorization, a disconnect, a tenant change: in order.
    assert!(store.revoke_api_key("key_1", 3_000).await.unwrap());
    assert!(!store.revoke_api_key("key_1", 3_001).await.unwrap());
    store
        .record_refresh_error("conn_a", Some("needs_reauth"), "invalid_grant", 3_100, &[], None)
        .await
        .unwrap();
    let mut again = store.connection("conn_a").await.unwrap().unwrap();
    again.status = "active".into();
    again.authorized_at_ms = 3_200;
    store.update_connection(&again).await.unwrap();
    again.status = "disconnected".into();
    again.refresh_token = None;
    again.access_token = None;
    store.disconnect_connection(&again, &[]).await.unwrap();
    let mut t = tenant("ten_1", 1_000);
    t.webhook_url = None;
    store.update_tenant(&t).await.unwrap();
    let all = store.invalidations_after(0, 100).await.unwrap();
    let kinds: Vec<_> = all.iter().map(|i| (i.kind, i.subject.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (InvalidationKind::ApiKey, "key_1"),
            (InvalidationKind::Connection, "conn_a"),
            (InvalidationKind::Connection, "conn_a"),
            (InvalidationKind::Connection, "conn_a"),
            (InvalidationKind::Tenant, "ten_1"),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let last = store.last_invalidation().await.unwrap();
    assert_eq!(last, all[4].seq);
    // Polling past a seq gives only what came after it; the limit holds.
    assert_eq!(seen(&store, all[2].seq).await.len(), 2);
    assert_eq!(store.invalidations_after(0, 2).await.unwrap().len(), 2);
    assert_eq!(seen(&store, last).await, vec![]);

    // Concurrent writers: every invalidation is seen by a reader polling past the last seq it
    // saw, whatever the commit order.
    for n in 0..20 {
        store
            .insert_api_key(&api_key(&format!("key_c{n}"), "ten_1", 4_000))
            .await
            .unwrap();
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut cursor, mut got) = (last, Vec::new());
            while got.len() < 20 {
                for i in store.invalidations_after(cursor, 1000).await.unwrap() {
                    cursor = i.seq;
                    got.push(i.subject);
                }
                tokio::task::yield_now().await;
            }
            got
        })
    };
    let writers = (0..20).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.revoke_api_key(&format!("key_c{n}"), 5_000).await.unwrap() })
    });
    for w in writers {
        assert!(w.await.unwrap());
    }
    let mut got = tokio::time::timeout(std::time::Duration::from_secs(20), reader)
        .await
        .expect("the reader saw all 20")
        .unwrap();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|n| format!("key_c{n}")).collect();
    want.sort();
    assert_eq!(got, want);

    // Old ones are purged (by the wall clock they were written at).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(store.purge_invalidations(now - 3_600_000).await.unwrap(), 0);
    assert_eq!(store.purge_invalidations(now + 60_000).await.unwrap(), 25);
    assert_eq!(seen(&store, 0).await, vec![]);
    // A purge never lowers the next seq.
    store
        .insert_api_key(&api_key("key_2", "ten_1", 6_000))
        .await
        .unwrap();
    store.revoke_api_key("key_2", 6_000).await.unwrap();
    assert!(store.last_invalidation().await.unwrap() > last);
}

// --- readiness and backlog (`/readyz`, `/metrics`) ---

async fn readiness_and_the_webhook_backlog(b: Backend) {
    let (_db, store) = fresh(b, "backlog").await;
    assert!(store.schema_current().await.unwrap());
    assert_eq!(store.webhook_backlog().await.unwrap(), (0, None));
    store.insert_tenant(&tenant("ten_1", 1_000)).await.unwrap();
    for (id, at) in [("evt_1", 7_000), ("evt_2", 5_000)] {
        store
            .enqueue_events(&[event(
                id,
                None,
                "connection.authorized",
                at,
                vec![
                    EventTarget::TenantWebhook,
                    EventTarget::Callback("https://wms.example.com/cb".into()),
                ],
            )])
            .await
            .unwrap();
    }
    assert_eq!(store.webhook_backlog().await.unwrap(), (4, Some(5_000)));
}

async fn the_history_keeps_refreshes_failures_and_status_changes_newest_first(b: Backend) {
    let (_db, store) = fresh(b, "history").await;
    store.insert_tenant(&tenant("ten_1", 1)).await.unwrap();
    store
        .insert_connection(&connection("conn_1", "ten_1"))
        .await
        .unwrap();
    store
        .insert_connection(&connection("conn_2", "ten_1"))
        .await
        .unwrap();
    let history = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .connection_history(id, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|h| (h.at_ms, h.kind, h.detail, h.until_ms))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        history("conn_1").await,
        [],
        "inserting a connection writes no history"
    );

    let refresh = |token: &str, next: &str, at: i64| TokenUpdate {
        connection_id: "conn_1".into(),
        expected_refresh_token: token.into(),
        refresh_token: next.into(),
        access_token: format!("lwa1.fp.access{at}"),
        access_expires_at_ms: at + 3_600_000,
        refreshed_at_ms: at,
        next_refresh_at_ms: at + 3_000_000,
    };
    assert!(
        store
            .save_tokens(&refresh("lwa1.fp.cmVmcmVzaA", "lwa1.fp.cmVmcmVzaA", 10_000))
            .await
            .unwrap()
    );
    // A failure, the same failure again (counted), then invalid_grant (a status change too).
    let retry_at = |failures: i64| 20_000 + failures;
    store
        .record_refresh_failure("conn_1", 5_000, "LWA answered 500", 20_000, &retry_at)
        .await
        .unwrap()
        .unwrap();
    store
        .record_refresh_failure("conn_1", 5_000, "LWA answered 500", 21_000, &retry_at)
        .await
        .unwrap()
        .unwrap();
    // A rename, a vend's touch of the key: not history.
    assert!(
        store
            .set_connection_details("conn_1", Some("Renamed"), None, 21_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_refresh_error(
                "conn_1",
                Some("needs_reauth"),
                "invalid_grant",
                22_000,
                &[],
                Some(5_000)
            )
            .await
            .unwrap()
    );
    // The seller authorizes again.
    let mut again = store.connection("conn_1").await.unwrap().unwrap();
    again.status = "active".into();
    again.authorized_at_ms = 30_000;
    again.last_error = None;
    again.updated_at_ms = 30_000;
    assert!(store.update_connection(&again).await.unwrap());

    let s = |t: &str| Some(t.to_owned());
    assert_eq!(
        history("conn_1").await,
        [
            (30_000, "authorized".to_owned(), None, None),
            (30_000, "status".to_owned(), s("needs_reauth → active"), None),
            (22_000, "status".to_owned(), s("active → needs_reauth"), None),
            (22_000, "refresh_failed".to_owned(), s("invalid_grant"), None),
            (21_000, "refresh_failed".to_owned(), s("LWA answered 500"), None),
            (20_000, "refresh_failed".to_owned(), s("LWA answered 500"), None),
            (10_000, "refreshed".to_owned(), None, Some(3_610_000)),
        ]
    );
    assert_eq!(
        history("conn_2").await,
        [],
        "another connection's history is its own"
    );

    // Only the newest are kept.
    for i in 0..(lwa_store::HISTORY_KEPT as i64 + 5) {
        let at = 100_000 + i;
        assert!(
            store
                .save_tokens(&refresh("lwa1.fp.cmVmcmVzaA", "lwa1.fp.cmVmcmVzaA", at))
                .await
                .unwrap()
        );
    }
    let kept = history("conn_1").await;
    assert_eq!(kept.len(), lwa_store::HISTORY_KEPT);
    assert_eq!(kept[0].0, 100_000 + lwa_store::HISTORY_KEPT as i64 + 4);
    assert!(kept.iter().all(|(_, kind, _, _)| kind == "refreshed"));
    assert_eq!(store.connection_history("conn_1", 3).await.unwrap().len(), 3);
}

async fn an_ended_session_stays_ended_until_it_expires_and_is_purged(b: Backend) {
    let (_db, store) = fresh(b, "sessions").await;
    assert!(!store.session_ended("sid_a").await.unwrap());
    store.end_session("sid_a", 10_000).await.unwrap();
    store.end_session("sid_a", 10_000).await.unwrap();
    store.end_session("sid_b", 20_000).await.unwrap();
    assert!(store.session_ended("sid_a").await.unwrap());
    assert!(!store.session_ended("sid_c").await.unwrap());
    assert_eq!(store.purge_expired(15_000).await.unwrap(), 1);
    assert!(!store.session_ended("sid_a").await.unwrap());
    assert!(store.session_ended("sid_b").await.unwrap());
}

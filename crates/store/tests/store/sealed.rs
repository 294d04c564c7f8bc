//! The generic sealed-column methods `keys rotate` uses, on both backends: paging,
//! compare-and-set re-seals, and counts per key prefix.

use std::sync::Arc;

use lwa_store::{Connection, PrefixCount, ResealRow, SealedColumns, SealedRow, Store, StoreError, Tenant};

use crate::backend::{Backend, TestDb};

const CONNECTIONS: SealedColumns = SealedColumns {
    table: "connections",
    id_column: "id",
    columns: &["refresh_token", "access_token"],
    only_ids: &[],
};

const KEY_CHECK: SealedColumns = SealedColumns {
    table: "meta",
    id_column: "name",
    columns: &["value"],
    only_ids: &["key_check"],
};

/// A migrated store with tenant `ten_1`.
async fn fresh(b: Backend, name: &str) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = crate::backend::fresh(b, name).await;
    store
        .insert_tenant(&Tenant {
            id: "ten_1".into(),
            name: "Tenant".into(),
            redirect_origins: vec!["https://wms.example.com".into()],
            sp_app: None,
            ads_app: None,
            webhook_url: None,
            signing_secret: None,
            created_at_ms: 1,
        })
        .await
        .unwrap();
    (db, store)
}

on_both_backends!(
    rows_are_paged_by_id_and_rows_without_sealed_values_are_left_out,
    only_the_named_rows_of_a_limited_table_are_seen,
    a_reseal_writes_only_rows_that_still_hold_what_was_read,
    a_malformed_reseal_writes_nothing,
    a_reseal_of_thousands_of_rows_spans_several_statements_in_one_transaction,
);

fn connection(id: &str, refresh: Option<&str>, access: Option<&str>) -> Connection {
    Connection {
        id: id.into(),
        tenant_id: "ten_1".into(),
        app: "main".into(),
        api: "sp-api".into(),
        region: "na".into(),
        account_type: Some("seller".into()),
        marketplace_id: None,
        selling_partner_id: Some(format!("A{id}")),
        name: None,
        status: "active".into(),
        refresh_token: refresh.map(Into::into),
        access_token: access.map(Into::into),
        access_expires_at_ms: Some(9_000),
        tenant_secret: false,
        profiles: "[]".into(),
        authorized_at_ms: 5_000,
        last_refresh_at_ms: None,
        last_error: None,
        callback_url: None,
        claimed_at_ms: None,
        created_at_ms: 5_000,
        updated_at_ms: 5_000,
    }
}

fn values(row: &SealedRow) -> Vec<Option<&str>> {
    row.values.iter().map(Option::as_deref).collect()
}

async fn rows_are_paged_by_id_and_rows_without_sealed_values_are_left_out(b: Backend) {
    let (_db, store) = fresh(b, "paging").await;
    for i in [3, 1, 5, 2, 4] {
        store
            .insert_connection(&connection(
                &format!("conn_{i}"),
                Some(&format!("lwa1.old.r{i}")),
                (i % 2 == 0).then_some("lwa1.old.a").filter(|_| i != 4),
            ))
            .await
            .unwrap();
    }
    store
        .insert_connection(&connection("conn_0", None, None))
        .await
        .unwrap();

    let first = store.sealed_rows(&CONNECTIONS, None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["conn_1", "conn_2"],
        "conn_0 has no sealed value"
    );
    assert_eq!(values(&first[0]), [Some("lwa1.old.r1"), None]);
    assert_eq!(values(&first[1]), [Some("lwa1.old.r2"), Some("lwa1.old.a")]);
    let second = store.sealed_rows(&CONNECTIONS, Some("conn_2"), 2).await.unwrap();
    assert_eq!(
        second.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["conn_3", "conn_4"]
    );
    let last = store.sealed_rows(&CONNECTIONS, Some("conn_4"), 2).await.unwrap();
    assert_eq!(last.len(), 1);
    assert!(
        store
            .sealed_rows(&CONNECTIONS, Some("conn_5"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .sealed_row(&CONNECTIONS, "conn_4")
            .await
            .unwrap()
            .map(|r| r.values),
        Some(vec![Some("lwa1.old.r4".to_owned()), None])
    );
    assert_eq!(store.sealed_row(&CONNECTIONS, "conn_9").await.unwrap(), None);
}

async fn only_the_named_rows_of_a_limited_table_are_seen(b: Backend) {
    let (_db, store) = fresh(b, "only").await;
    store.set_meta("key_check", "lwa1.old.check").await.unwrap();
    store.set_meta("admin_token_hash", "00ff").await.unwrap();
    let rows = store.sealed_rows(&KEY_CHECK, None, 10).await.unwrap();
    assert_eq!(
        rows,
        vec![SealedRow {
            id: "key_check".into(),
            values: vec![Some("lwa1.old.check".into())]
        }]
    );
    let counts = store.sealed_prefix_counts(&KEY_CHECK, 8).await.unwrap();
    assert_eq!(
        counts,
        vec![PrefixCount {
            column: "value",
            prefix: "lwa1.old".into(),
            count: 1
        }]
    );
}

async fn a_reseal_writes_only_rows_that_still_hold_what_was_read(b: Backend) {
    let (_db, store) = fresh(b, "cas").await;
    for id in ["conn_a", "conn_b", "conn_c", "conn_d"] {
        store
            .insert_connection(&connection(id, Some("lwa1.old.r"), Some("lwa1.old.a")))
            .await
            .unwrap();
    }
    store
        .insert_connection(&connection("conn_e", Some("lwa1.old.r"), None))
        .await
        .unwrap();
    let read = store.sealed_rows(&CONNECTIONS, None, 10).await.unwrap();
    assert_eq!(read.len(), 5);

    // Meanwhile a refresh stores new tokens for conn_b, and conn_c loses its access token.
    let mut refreshed = connection("conn_b", Some("lwa1.new.refreshed"), Some("lwa1.new.access"));
    refreshed.updated_at_ms = 6_000;
    assert!(store.update_connection(&refreshed).await.unwrap());
    let mut changed = connection("conn_c", Some("lwa1.old.r"), None);
    changed.updated_at_ms = 6_000;
    assert!(store.update_connection(&changed).await.unwrap());

    let rows: Vec<ResealRow> = read
        .into_iter()
        .map(|row| ResealRow {
            new: row
                .values
                .iter()
                .map(|v| v.as_ref().map(|v| v.replace("old", "new")))
                .collect(),
            id: row.id,
            old: row.values,
        })
        .collect();
    let written = store.reseal_rows(&CONNECTIONS, &rows).await.unwrap();
    assert_eq!(written, [true, false, false, true, true]);

    let now = |id: &'static str| {
        let store = store.clone();
        async move { store.sealed_row(&CONNECTIONS, id).await.unwrap().unwrap().values }
    };
    assert_eq!(
        now("conn_a").await,
        [Some("lwa1.new.r".to_owned()), Some("lwa1.new.a".to_owned())]
    );
    assert_eq!(
        now("conn_b").await,
        [
            Some("lwa1.new.refreshed".to_owned()),
            Some("lwa1.new.access".to_owned())
        ],
        "the concurrent refresh is not overwritten"
    );
    assert_eq!(now("conn_c").await, [Some("lwa1.old.r".to_owned()), None]);
    assert_eq!(
        now("conn_e").await,
        [Some("lwa1.new.r".to_owned()), None],
        "NULL compares equal to NULL"
    );
    // Other columns are untouched.
    let row = store.connection("conn_a").await.unwrap().unwrap();
    assert_eq!(row.updated_at_ms, 5_000);
    assert_eq!(row.status, "active");

    let counts = store.sealed_prefix_counts(&CONNECTIONS, 8).await.unwrap();
    let count = |column: &str, prefix: &str| {
        counts
            .iter()
            .find(|c| c.column == column && c.prefix == prefix)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count("refresh_token", "lwa1.new"), 4);
    assert_eq!(count("refresh_token", "lwa1.old"), 1);
    assert_eq!(count("access_token", "lwa1.new"), 3);
    assert_eq!(count("access_token", "lwa1.old"), 0);
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 8);
}

async fn a_malformed_reseal_writes_nothing(b: Backend) {
    let (_db, store) = fresh(b, "malformed").await;
    store
        .insert_connection(&connection("conn_a", Some("lwa1.old.r"), None))
        .await
        .unwrap();
    store
        .insert_connection(&connection("conn_b", Some("lwa1.old.r"), None))
        .await
        .unwrap();
    let rows = [
        ResealRow {
            id: "conn_a".into(),
            old: vec![Some("lwa1.old.r".into()), None],
            new: vec![Some("lwa1.new.r".into()), None],
        },
        ResealRow {
            id: "conn_b".into(),
            old: vec![Some("lwa1.old.r".into())],
            new: vec![Some("lwa1.new.r".into())],
        },
    ];
    let error = store.reseal_rows(&CONNECTIONS, &rows).await.unwrap_err();
    assert!(matches!(error, StoreError::Io(_)), "{error:?}");
    assert_eq!(
        store
            .sealed_row(&CONNECTIONS, "conn_a")
            .await
            .unwrap()
            .unwrap()
            .values[0]
            .as_deref(),
        Some("lwa1.old.r"),
        "the batch is one transaction"
    );
}

async fn a_reseal_of_thousands_of_rows_spans_several_statements_in_one_transaction(b: Backend) {
    let (_db, store) = fresh(b, "many").await;
    for i in 0..2500 {
        store
            .insert_connection(&connection(&format!("conn_{i:05}"), Some("lwa1.old.r"), None))
            .await
            .unwrap();
    }
    let read = store.sealed_rows(&CONNECTIONS, None, 5000).await.unwrap();
    assert_eq!(read.len(), 2500);
    let rows: Vec<ResealRow> = read
        .into_iter()
        .enumerate()
        .map(|(i, row)| ResealRow {
            id: row.id,
            // Every 7th row was changed meanwhile, as far as this writer knows.
            old: if i % 7 == 0 {
                vec![Some("lwa1.other.r".into()), None]
            } else {
                row.values
            },
            new: vec![Some(format!("lwa1.new.r{i}")), None],
        })
        .collect();
    let written = store.reseal_rows(&CONNECTIONS, &rows).await.unwrap();
    assert_eq!(written.len(), 2500);
    for (i, written) in written.iter().enumerate() {
        assert_eq!(*written, i % 7 != 0, "row {i}");
    }
    let row = store
        .sealed_row(&CONNECTIONS, "conn_02498")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.values[0].as_deref(), Some("lwa1.new.r2498"));
    let counts = store.sealed_prefix_counts(&CONNECTIONS, 8).await.unwrap();
    let new = counts.iter().find(|c| c.prefix == "lwa1.new").unwrap().count;
    assert_eq!(new, 2500 - 2500_u64.div_ceil(7));
}

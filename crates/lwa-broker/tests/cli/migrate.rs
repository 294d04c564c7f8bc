//! `lwa-broker migrate`, automatic migration at start (`LWA_BROKER_AUTO_MIGRATE`), and the
//! backend chosen from the database URL — on SQLite and on PostgreSQL (a schema of its own in
//! the database `LWA_BROKER_TEST_POSTGRES_URL` names; skipped, said so, without PostgreSQL
//! unless `LWA_BROKER_REQUIRE_POSTGRES=1`).

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::support::{Cli, serve};

fn postgres_url() -> String {
    std::env::var("LWA_BROKER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh schema and a URL that uses it; `None` (said so) without PostgreSQL.
async fn postgres_schema(test: &str) -> Option<(String, String)> {
    let url = postgres_url();
    let connected = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 5 s".into(),
            };
            let message = format!("PostgreSQL not reachable: {why}");
            assert!(
                std::env::var("LWA_BROKER_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{message} (LWA_BROKER_REQUIRE_POSTGRES=1)"
            );
            println!("skipped: {message} ({test})");
            return None;
        }
    };
    let schema = format!(
        "lwa_cli_{}",
        lwa_server::ids::new_secret().to_ascii_lowercase()[..16].replace('-', "_")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((format!("{url}{sep}options=-c%20search_path%3D{schema}"), schema))
}

async fn drop_schema(schema: &str) {
    if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await;
    }
}

/// Without automatic migration a new database stops the start with what to do; `migrate`
/// makes it current (twice is harmless); then the server starts on it.
async fn migrate_then_serve(cli: &Cli, db: &str) {
    let off = [("LWA_BROKER_AUTO_MIGRATE", "off")];
    let out = cli
        .run_with(
            &["--database", db, "serve", "--listen", "127.0.0.1:0"],
            None,
            &off,
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("run `lwa-broker migrate`"), "{}", out.stderr);
    for _ in 0..2 {
        let stdout = cli.ok(&["--database", db, "migrate"]).await;
        assert!(
            stdout.contains("database at") && stdout.contains("is current"),
            "{stdout}"
        );
    }
    let log = cli.dir.join(format!("serve-{}.log", db.len()));
    let broker = serve(cli, db, &log, &off).await;
    let r = reqwest::get(format!("{}/healthz", broker.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    // The CLI's server commands work on it too.
    let out = cli
        .ok(&[
            "--database",
            db,
            "tenants",
            "create",
            "--name",
            "Acme",
            "--redirect-origin",
            "https://wms.example.com/oauth",
        ])
        .await;
    assert!(out.contains("ten_"), "{out}");
}

#[tokio::test]
async fn sqlite_databases_migrate_by_hand_or_at_start() {
    let cli = Cli::start("migrate-sqlite").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    migrate_then_serve(&cli, &db).await;
}

#[tokio::test]
async fn postgres_databases_migrate_by_hand_or_at_start_even_several_at_once() {
    let Some((url, schema)) = postgres_schema("postgres_databases_migrate").await else {
        return;
    };
    let cli = Cli::start("migrate-pg").await;
    // Three processes migrating one new database at once: one applies, all succeed.
    let fresh = postgres_schema("postgres_databases_migrate").await.unwrap();
    let args = ["--database", fresh.0.as_str(), "migrate"];
    let (a, b, c) = tokio::join!(cli.run(&args), cli.run(&args), cli.run(&args));
    for out in [a, b, c] {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    drop_schema(&fresh.1).await;
    migrate_then_serve(&cli, &url).await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_database_url_of_no_known_backend_is_a_precise_error() {
    let cli = Cli::start("migrate-bad-url").await;
    for (url, says) in [
        ("mysql://root@localhost/broker", "expected sqlite:PATH"),
        ("broker.db", "expected sqlite:PATH"),
        ("postgres:broker", "a PostgreSQL URL is postgres://"),
    ] {
        let out = cli.run(&["--database", url, "migrate"]).await;
        assert_eq!(out.code, 2, "{url}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{url}: {}", out.stderr);
    }
    // A password in the URL is never echoed.
    let out = cli
        .run(&["--database", "postgres:user:hunter2secret@host/db", "migrate"])
        .await;
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains("hunter2secret"), "{}", out.stderr);
}

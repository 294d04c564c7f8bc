//! `lwa-broker migrate`, automatic migration at start (`LWA_BROKER_AUTO_MIGRATE`), and the
//! backend chosen from the database URL — on SQLite and on PostgreSQL (a schema of its own in
//! the database `LWA_BROKER_TEST_POSTGRES_URL` names; skipped, said so, without PostgreSQL
//! unless `LWA_BROKER_REQUIRE_POSTGRES=1`).

use crate::support::{Cli, postgres_schema, serve};

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
    let Some((url, _schema)) = postgres_schema("postgres_databases_migrate").await else {
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
    drop(fresh);
    migrate_then_serve(&cli, &url).await;
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

//! `lwa-broker migrate-store`, `backup` and `restore` end to end: a store populated through the
//! CLI and a server (tenant, keys, connections imported against the fake Amazon, one of them
//! sealed under a tenant-held secret, audit rows, a webhook event waiting for its receiver) is
//! copied, and a server on the copy vends every connection with the same master key and API
//! key — from the copied access tokens without a call to Amazon, then, once they expire, with
//! one refresh each from the copied refresh tokens. PostgreSQL tests use a schema of their own
//! (skipped, said so, without PostgreSQL unless `LWA_BROKER_REQUIRE_POSTGRES=1`).

use std::time::Duration;

use fake_amazon::defaults;
use lwa_store::{
    AuditFilter, Connection, ConnectionFilter, DeliveryFilter, PgStore, RefreshSchedule, SqliteStore, Store,
};
use serde_json::{Value, json};

use crate::support::{Broker, Cli, field, postgres_schema, serve};

/// The tenant-held secret of one imported connection.
const TOKEN_SECRET: &str = "a-tenant-held-secret-of-40-characters-xx";
/// Past the access tokens' hour.
const EXPIRE_S: f64 = 3_700.0;

/// A CLI with a master key of its own, webhooks to local addresses allowed.
async fn cli(name: &str) -> Cli {
    let master = lwa_seal::MasterKey::generate();
    Cli::start(name)
        .await
        .env("LWA_BROKER_MASTER_KEY", &master.to_base64())
        .env("LWA_BROKER_WEBHOOK_ALLOW_PRIVATE", "1")
        .env("LWA_BROKER_REFRESHER", "off")
}

/// What `populate` made.
struct Populated {
    key: String,
    /// Active connections, the last one sealed under [`TOKEN_SECRET`].
    active: Vec<String>,
    disconnected: String,
}

impl Populated {
    fn secret_of(&self, id: &str) -> Option<&'static str> {
        (Some(id) == self.active.last().map(String::as_str)).then_some(TOKEN_SECRET)
    }
}

/// A tenant with a webhook (nobody listening), a second key, `sellers` imported connections
/// plus one with a tenant-held secret, every one vended once by a server (audit rows), and one
/// more disconnected through it (a `connection.disconnected` event waiting for delivery).
async fn populate(cli: &Cli, db: &str, sellers: usize) -> Populated {
    cli.ok(&["--database", db, "migrate"]).await;
    let out = cli
        .ok(&[
            "--database",
            db,
            "tenants",
            "create",
            "--name",
            "Moving WMS",
            "--redirect-origin",
            "https://moving.example.com",
        ])
        .await;
    let (tenant, key) = (field(&out, "tenant"), field(&out, "api key"));
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cli.ok(&[
        "--database",
        db,
        "tenants",
        "set-webhook",
        "--tenant",
        &tenant,
        "--url",
        &format!("http://{nobody}/hooks"),
    ])
    .await;
    cli.ok(&[
        "--database",
        db,
        "keys",
        "create",
        "--tenant",
        &tenant,
        "--name",
        "proxy",
        "--scope",
        "proxy-only",
    ])
    .await;

    let control = cli.fake.control();
    let mut file = String::new();
    for i in 0..=sellers {
        let seller = format!("A1MOVINGSELLER{i:03}");
        let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        let mut record = json!({"region": "na", "refresh_token": token, "selling_partner_id": seller});
        if i == sellers {
            record["token_secret"] = json!(TOKEN_SECRET);
        }
        file.push_str(&record.to_string());
        file.push('\n');
    }
    let path = cli.dir.join("import.jsonl");
    std::fs::write(&path, file).unwrap();
    let out = cli
        .ok(&[
            "--database",
            db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            path.to_str().unwrap(),
        ])
        .await;
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["connection_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), sellers + 1);
    let disconnected = ids.remove(0);
    let populated = Populated {
        key,
        active: ids,
        disconnected,
    };

    let broker = serve(cli, db, &cli.dir.join("serve-source.log"), &[]).await;
    let http = reqwest::Client::new();
    vend_all(&http, &broker, &populated).await;
    let r = http
        .delete(format!(
            "{}/v1/connections/{}",
            broker.url, populated.disconnected
        ))
        .bearer_auth(&populated.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop(broker).await;
    populated
}

/// Stops a server as an operator does (SIGTERM), so it writes its audit trail first.
async fn stop(mut broker: Broker) {
    let pid = broker.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), broker.child.wait())
        .await
        .expect("the server stops")
        .unwrap();
}

async fn vend(
    http: &reqwest::Client,
    broker: &Broker,
    key: &str,
    id: &str,
    secret: Option<&str>,
) -> (u16, Value) {
    let mut request = http
        .post(format!("{}/v1/connections/{id}/access-token", broker.url))
        .bearer_auth(key);
    if let Some(secret) = secret {
        request = request.header("x-amazon-token-secret", secret);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Every active connection vends (200, a fresh token); the disconnected one is refused.
async fn vend_all(http: &reqwest::Client, broker: &Broker, p: &Populated) {
    for id in &p.active {
        let (status, body) = vend(http, broker, &p.key, id, p.secret_of(id)).await;
        assert_eq!(status, 200, "vend {id}: {body}");
        assert!(body["expires_in"].as_i64().unwrap() > 300, "{id}: {body}");
    }
}

/// On a copy: every connection vends from its copied access token (no LWA call), the
/// disconnected one stays disconnected, and once the tokens expire each refreshes once from its
/// copied refresh token.
async fn vends_on_the_copy(cli: &Cli, db: &str, p: &Populated) {
    let control = cli.fake.control();
    let broker = serve(
        cli,
        db,
        &cli.dir.join(format!("serve-copy-{}.log", db.len())),
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let before = control.counters().await.lwa_calls("refresh_token");
    vend_all(&http, &broker, p).await;
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token"),
        before,
        "the copied access tokens were served without asking Amazon"
    );
    let (status, body) = vend(&http, &broker, &p.key, &p.disconnected, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("disconnected")),
        "{body}"
    );
    // The secret still guards its connection.
    let secret_id = p.active.last().unwrap();
    let (status, _) = vend(&http, &broker, &p.key, secret_id, None).await;
    assert_eq!(status, 403);

    control.advance_clock(EXPIRE_S).await;
    // The server reads the fake's clock every 100 ms.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    vend_all(&http, &broker, p).await;
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token"),
        before + p.active.len() as u64,
        "one refresh per connection, from the copied refresh tokens"
    );

    // The tenant's webhook log came along.
    let r = http
        .get(format!("{}/v1/webhook/deliveries", broker.url))
        .bearer_auth(&p.key)
        .send()
        .await
        .unwrap();
    let log: Value = r.json().await.unwrap();
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["type"] == "connection.disconnected"),
        "{log}"
    );
}

/// What a store shows through its interface (refresh leases aside: a copy starts without).
#[derive(Debug, PartialEq)]
struct Snapshot {
    key_check: Option<String>,
    tenants: Vec<lwa_store::Tenant>,
    keys: Vec<lwa_store::ApiKey>,
    connections: Vec<(Connection, RefreshSchedule)>,
    audit: Vec<lwa_store::AuditEvent>,
    deliveries: Vec<lwa_store::WebhookDelivery>,
    app_secrets: Vec<lwa_store::AppSecret>,
}

async fn open(db: &str) -> Box<dyn Store> {
    if db.starts_with("sqlite:") {
        Box::new(SqliteStore::connect(db).await.unwrap())
    } else {
        Box::new(PgStore::connect(db).await.unwrap())
    }
}

async fn snapshot(db: &str) -> Snapshot {
    let store = open(db).await;
    let tenants = store.tenants().await.unwrap();
    let mut keys = Vec::new();
    for t in &tenants {
        keys.extend(store.api_keys(&t.id).await.unwrap());
    }
    let mut connections = Vec::new();
    let page = ConnectionFilter {
        limit: 1000,
        ..Default::default()
    };
    for c in store.list_connections(&page).await.unwrap() {
        let (c, mut schedule) = store.connection_with_schedule(&c.id).await.unwrap().unwrap();
        schedule.refresh_lease_until_ms = 0;
        connections.push((c, schedule));
    }
    let snapshot = Snapshot {
        key_check: store.meta(lwa_server::state::KEY_CHECK).await.unwrap(),
        tenants,
        keys,
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
    };
    assert!(!snapshot.audit.is_empty() && !snapshot.deliveries.is_empty());
    snapshot
}

/// No token, tenant-held secret or master key in anything the commands printed, nor in the
/// servers' logs.
fn assert_nothing_secret_printed(cli: &Cli) {
    let mut printed = cli.transcript.lock().unwrap().clone();
    for entry in std::fs::read_dir(&cli.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            printed.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let master = cli
        .extra_env
        .iter()
        .find(|(name, _)| name == "LWA_BROKER_MASTER_KEY")
        .map(|(_, value)| value.clone())
        .unwrap();
    for secret in ["Atzr|", "Atza|", TOKEN_SECRET, master.as_str()] {
        assert!(!printed.contains(secret), "{}… was printed", &secret[..5]);
    }
}

/// The count a command printed for a table.
fn rows(stdout: &str, table: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(table)).then(|| words.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {table} in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_populated_sqlite_store_to_postgres_and_every_connection_vends() {
    let Some((pg, _schema)) = postgres_schema("migrate_store_sqlite_to_postgres").await else {
        return;
    };
    let cli = cli("migrate-store").await;
    let sqlite = format!("sqlite:{}", cli.dir.join("single-node.db").display());
    let populated = populate(&cli, &sqlite, 4).await;
    let before = snapshot(&sqlite).await;

    let out = cli
        .run(&[
            "migrate-store",
            "--from",
            &sqlite,
            "--to",
            &pg,
            "--batch-size",
            "2",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rows(&out.stdout, "connections"), 5);
    assert_eq!(rows(&out.stdout, "tenants"), 1);
    assert_eq!(rows(&out.stdout, "api_keys"), 2);
    assert!(rows(&out.stdout, "audit_events") >= 1);
    assert!(rows(&out.stdout, "webhook_events") >= 1);
    assert!(
        out.stdout.contains("nobody needs to authorize again"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("sealed with the master key of fingerprint"),
        "{}",
        out.stdout
    );
    // Not a terminal: a line per table.
    assert!(
        out.stderr.contains("copied connections: 5 rows"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("postgres@") && !out.stderr.contains("postgres@"));
    assert_eq!(snapshot(&pg).await, before);

    // Again: the target is no longer empty, and is left as it is.
    let again = cli.run(&["migrate-store", "--from", &sqlite, "--to", &pg]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("already holds 1 tenant(s) and 5 connection(s), so nothing was written"),
        "{}",
        again.stderr
    );
    assert_eq!(snapshot(&pg).await, before);

    vends_on_the_copy(&cli, &pg, &populated).await;
    assert_nothing_secret_printed(&cli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_restores_into_a_new_database_that_vends() {
    let cli = cli("backup-sqlite").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let populated = populate(&cli, &db, 2).await;
    let before = snapshot(&db).await;
    let file = cli.dir.join("broker.backup");
    let file_arg = file.to_str().unwrap();

    let out = cli.ok(&["--database", &db, "backup", "--out", file_arg]).await;
    assert_eq!(rows(&out, "connections"), 3);
    assert!(out.contains("wrote the backup"), "{out}");
    assert_eq!(crate::support::mode_of(&file), 0o600);
    let again = cli.run(&["--database", &db, "backup", "--out", file_arg]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    // Into a new database; then again into it: refused unless --force.
    let restored = format!("sqlite:{}", cli.dir.join("restored.db").display());
    let out = cli
        .ok(&["--database", &restored, "restore", "--from", file_arg])
        .await;
    assert_eq!(rows(&out, "connections"), 3);
    assert_eq!(snapshot(&restored).await, before);
    let refused = cli
        .run(&["--database", &restored, "restore", "--from", file_arg])
        .await;
    assert_eq!(refused.code, 2);
    assert!(
        refused
            .stderr
            .contains("restore with --force to replace what it holds"),
        "{}",
        refused.stderr
    );
    let out = cli
        .run(&["--database", &restored, "restore", "--from", file_arg, "--force"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("replaced what the target held: meta"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&restored).await, before);

    vends_on_the_copy(&cli, &restored, &populated).await;
    assert_nothing_secret_printed(&cli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_is_a_sqlite_file_that_restores_into_postgres_and_vends() {
    let Some((pg, _schema)) = postgres_schema("postgres_backup_restores").await else {
        return;
    };
    let Some((restored, _restored_schema)) = postgres_schema("postgres_backup_restores").await else {
        return;
    };
    let cli = cli("backup-postgres").await;
    let populated = populate(&cli, &pg, 2).await;
    let before = snapshot(&pg).await;
    let file = cli.dir.join("pg.backup");
    let file_arg = file.to_str().unwrap();

    let out = cli.ok(&["--database", &pg, "backup", "--out", file_arg]).await;
    assert_eq!(rows(&out, "connections"), 3);
    // A portable SQLite file: the same rows, readable without PostgreSQL.
    assert_eq!(snapshot(&format!("sqlite:{}", file.display())).await, before);
    let out = cli
        .ok(&["--database", &restored, "restore", "--from", file_arg])
        .await;
    assert_eq!(rows(&out, "api_keys"), 2);
    assert_eq!(snapshot(&restored).await, before);
    vends_on_the_copy(&cli, &restored, &populated).await;
}

#[tokio::test]
async fn bad_urls_missing_files_and_outdated_sources_are_clear_errors() {
    let cli = Cli::start("store-copy-errors").await;
    let missing = cli.dir.join("missing.db");
    let missing_url = format!("sqlite:{}", missing.display());
    let target = format!("sqlite:{}", cli.dir.join("target.db").display());
    for (args, says) in [
        (
            vec![
                "migrate-store",
                "--from",
                "mysql://root:hunter2secret@db/broker",
                "--to",
                &target,
            ],
            "expected sqlite:PATH",
        ),
        (
            vec![
                "migrate-store",
                "--from",
                &target,
                "--to",
                "postgres:hunter2secret@db",
            ],
            "a PostgreSQL URL is postgres://",
        ),
        (
            vec!["migrate-store", "--from", &missing_url, "--to", &target],
            "no database file at",
        ),
        (
            vec!["migrate-store", "--from", &target, "--to", &target],
            "name the same database",
        ),
        (
            vec![
                "--database",
                &target,
                "restore",
                "--from",
                missing.to_str().unwrap(),
            ],
            "cannot read the backup: I/O error: no database file at",
        ),
        (
            vec!["--database", &missing_url, "backup", "--out", "x.db"],
            "no database file at",
        ),
    ] {
        let out = cli.run(&args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("hunter2secret"), "{}", out.stderr);
    }
    assert!(!missing.exists(), "a missing source is not created");
    assert!(!cli.dir.join("x.db").exists());

    // A database of an older schema (here: none at all) is named with the command that fixes it.
    std::fs::write(cli.dir.join("old.db"), b"").unwrap();
    let old = format!("sqlite:{}", cli.dir.join("old.db").display());
    let out = cli.run(&["migrate-store", "--from", &old, "--to", &target]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("older than this version")
            && out
                .stderr
                .contains(&format!("lwa-broker --database {old} migrate")),
        "{}",
        out.stderr
    );
    assert!(!cli.dir.join("target.db").exists(), "nothing was made");
}

//! Cache coherence across processes: a change made through one replica or the CLI stops
//! working on every replica within a second, although each replica serves vends from its
//! caches (an API key is otherwise trusted for a minute, a connection's status for 5 minutes).
//!
//! - Three replicas on one PostgreSQL schema: a connection deleted through one replica, and an
//!   API key revoked by `lwa-broker keys revoke`, are refused by all three within 1 s.
//! - One server on a SQLite file: a key revoked by the CLI on the same file, likewise.
//!
//! The measured times are printed (run with `--nocapture`).

use std::time::{Duration, Instant};

use fake_amazon::defaults;
use serde_json::{Value, json};

use crate::support::{Broker, Cli, field, postgres_schema, serve};

/// The bound the issue sets.
const WITHIN: Duration = Duration::from_secs(1);

/// A tenant with two keys (one to vend with, one to revoke) and `n` imported connections.
struct Setup {
    tenant: String,
    key: String,
    doomed_key_id: String,
    doomed_key: String,
    ids: Vec<String>,
}

async fn setup(cli: &Cli, db: &str, n: usize) -> Setup {
    let control = cli.fake.control();
    let out = cli
        .ok(&[
            "--database",
            db,
            "tenants",
            "create",
            "--name",
            "Coherence",
            "--redirect-origin",
            "https://coherence.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let key = field(&out, "api key");
    let out = cli
        .ok(&[
            "--database",
            db,
            "keys",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "doomed",
        ])
        .await;
    let (doomed_key_id, doomed_key) = (field(&out, "key id"), field(&out, "api key"));
    let mut file = String::new();
    for i in 0..n {
        let seller = format!("A1COHERENT{i:04}");
        let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        file.push_str(
            &json!({"region": "na", "refresh_token": token, "selling_partner_id": seller}).to_string(),
        );
        file.push('\n');
    }
    let path = cli.dir.join("import.jsonl");
    std::fs::write(&path, file).unwrap();
    let out = cli
        .run(&[
            "--database",
            db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ids = out
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["connection_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned()
        })
        .collect();
    Setup {
        tenant,
        key,
        doomed_key_id,
        doomed_key,
        ids,
    }
}

/// One vend: the status and the body.
async fn vend(http: &reqwest::Client, broker: &Broker, key: &str, id: &str) -> (u16, Value) {
    let response = http
        .post(format!("{}/v1/connections/{id}/access-token", broker.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Vends on `broker` until the answer is not a 200; how long that took, or a panic after 10 s.
async fn until_refused(
    http: &reqwest::Client,
    broker: &Broker,
    key: &str,
    id: &str,
    since: Instant,
) -> (Duration, u16, Value) {
    loop {
        let (status, body) = vend(http, broker, key, id).await;
        if status != 200 {
            return (since.elapsed(), status, body);
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{} still vends after 10 s",
            broker.url
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_deletion_through_one_replica_or_a_revocation_by_the_cli_stops_every_replica_within_a_second() {
    let Some((db, _schema)) = postgres_schema("coherence").await else {
        return;
    };
    let cli = Cli::start("coherence").await.env(
        "LWA_BROKER_MASTER_KEY",
        &lwa_seal::MasterKey::generate().to_base64(),
    );
    cli.ok(&["--database", &db, "migrate"]).await;
    let s = setup(&cli, &db, 3).await;
    let mut replicas = Vec::new();
    for n in 0..3 {
        let log = cli.dir.join(format!("replica-{n}.log"));
        replicas.push(
            serve(
                &cli,
                &db,
                &log,
                &[("LWA_BROKER_LOG", "warn"), ("LWA_BROKER_REFRESHER", "off")],
            )
            .await,
        );
    }
    let http = reqwest::Client::new();
    // Every replica has every connection and both keys in its caches.
    for replica in &replicas {
        for id in &s.ids {
            assert_eq!(vend(&http, replica, &s.key, id).await.0, 200);
            assert_eq!(vend(&http, replica, &s.doomed_key, id).await.0, 200);
        }
    }

    // A connection deleted through replica 0.
    let gone = &s.ids[0];
    let deleted = http
        .delete(format!("{}/v1/connections/{gone}", replicas[0].url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let since = Instant::now();
    for replica in &replicas {
        let (took, status, body) = until_refused(&http, replica, &s.key, gone, since).await;
        println!("deleted connection refused by {} after {took:?}", replica.url);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("disconnected")),
            "{body}"
        );
        assert!(took < WITHIN, "{} took {took:?}", replica.url);
    }
    // The others still vend everywhere.
    for replica in &replicas {
        assert_eq!(vend(&http, replica, &s.key, &s.ids[1]).await.0, 200);
    }

    // A key revoked by the CLI (its own process, on the same database).
    let out = cli
        .ok(&["--database", &db, "keys", "revoke", &s.doomed_key_id])
        .await;
    assert!(out.contains("revoked"), "{out}");
    let since = Instant::now();
    for replica in &replicas {
        let (took, status, body) = until_refused(&http, replica, &s.doomed_key, &s.ids[1], since).await;
        println!("revoked key refused by {} after {took:?}", replica.url);
        assert_eq!(status, 401, "{body}");
        assert!(took < WITHIN, "{} took {took:?}", replica.url);
        assert_eq!(vend(&http, replica, &s.key, &s.ids[2]).await.0, 200);
    }
    let _ = s.tenant;
}

#[tokio::test]
async fn a_key_revoked_by_the_cli_stops_a_running_sqlite_server_within_a_second() {
    let cli = Cli::start("coherence-sqlite").await.env(
        "LWA_BROKER_MASTER_KEY",
        &lwa_seal::MasterKey::generate().to_base64(),
    );
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let s = setup(&cli, &db, 2).await;
    let server = serve(
        &cli,
        &db,
        &cli.dir.join("serve.log"),
        &[("LWA_BROKER_LOG", "warn")],
    )
    .await;
    let http = reqwest::Client::new();
    for id in &s.ids {
        assert_eq!(vend(&http, &server, &s.doomed_key, id).await.0, 200);
    }
    let out = cli
        .ok(&["--database", &db, "keys", "revoke", &s.doomed_key_id])
        .await;
    assert!(out.contains("revoked"), "{out}");
    let since = Instant::now();
    let (took, status, body) = until_refused(&http, &server, &s.doomed_key, &s.ids[0], since).await;
    println!("revoked key refused by the SQLite server after {took:?}");
    assert_eq!(status, 401, "{body}");
    assert!(took < WITHIN, "took {took:?}");
    assert_eq!(vend(&http, &server, &s.key, &s.ids[1]).await.0, 200);
}

/// The database statements a server has run so far: sqlx logs each one (the SQL text, never a
/// bound value) under the target `sqlx::query` at debug level.
fn statements(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sqlx::query"))
        .count()
}

/// 1,000 cached vends (10 at a time over 5 connections) on a server on `db`; the statements the
/// server ran meanwhile, and in as long again idle.
async fn statements_per_1000_cached_vends(cli: &Cli, db: &str, name: &str) -> (usize, usize) {
    let s = setup(cli, db, 5).await;
    let log = cli.dir.join(format!("{name}.log"));
    let server = serve(cli, db, &log, &[("LWA_BROKER_LOG", "warn,sqlx::query=debug")]).await;
    let http = reqwest::Client::new();
    for id in &s.ids {
        assert_eq!(vend(&http, &server, &s.key, id).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = statements(&log);
    assert!(before > 0, "no statement logged: is sqlx's logging on?");
    let started = Instant::now();
    for round in 0..100 {
        let vends: Vec<_> = (0..10)
            .map(|n| {
                let url = format!(
                    "{}/v1/connections/{}/access-token",
                    server.url,
                    s.ids[(round + n) % s.ids.len()]
                );
                let (http, key) = (http.clone(), s.key.clone());
                tokio::spawn(async move { http.post(url).bearer_auth(key).send().await.unwrap().status() })
            })
            .collect();
        for v in vends {
            assert_eq!(v.await.unwrap(), 200);
        }
    }
    let took = started.elapsed();
    let during = statements(&log) - before;
    let idle_from = statements(&log);
    tokio::time::sleep(took).await;
    let idle = statements(&log) - idle_from;
    println!("{name}: {during} statements during 1,000 cached vends ({took:?}), {idle} in as long idle");
    (during, idle)
}

#[tokio::test]
async fn cached_vends_make_no_database_query_on_either_backend() {
    let cli = Cli::start("queries").await.env(
        "LWA_BROKER_MASTER_KEY",
        &lwa_seal::MasterKey::generate().to_base64(),
    );
    let sqlite = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let (during, _) = statements_per_1000_cached_vends(&cli, &sqlite, "sqlite").await;
    // The background work (invalidations polled 4 times a second, the audit trail written once
    // a second, a key re-read every minute) is all there is: nothing per request.
    assert!(during < 50, "SQLite: {during} statements for 1,000 cached vends");
    let Some((pg, _schema)) = postgres_schema("queries").await else {
        return;
    };
    cli.ok(&["--database", &pg, "migrate"]).await;
    let (during, _) = statements_per_1000_cached_vends(&cli, &pg, "postgres").await;
    assert!(
        during < 50,
        "PostgreSQL: {during} statements for 1,000 cached vends"
    );
}

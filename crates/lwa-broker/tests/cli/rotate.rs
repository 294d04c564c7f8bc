//! Master key rotation end to end: a database of a few thousand connections sealed with the old
//! key, a server running with [new, old] that keeps vending (and refreshing: the fake issues a
//! new refresh token on every refresh), `lwa-broker keys rotate` killed with SIGKILL part way and
//! run again; then every value is sealed with the new key, every connection vends, and after a
//! restart with only the new key configured every connection still vends and refreshes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_amazon::{FakeConfig, Quirks, defaults};
use lwa_seal::{Keyring, MasterKey};
use lwa_server::rotation::{SEALED_TABLES, key_usage};
use lwa_server::sealing::{Sealer, TokenSecret};
use lwa_store::{ClaimCode, ConnectLink, Connection, OAuthState, Store};
use serde_json::Value;

use crate::support::{Broker, Cli, field, serve};

/// `serve` with these master keys and the background refresher on (one more writer during the
/// rotation), at a budget that does not slow the thousands of refreshes this test makes.
async fn serve_with_keys(cli: &Cli, db: &str, keys: &str, log: &Path) -> Broker {
    let env = [
        ("LWA_BROKER_MASTER_KEYS", keys),
        ("LWA_BROKER_REFRESH_BUDGET", "100000"),
        ("LWA_BROKER_LOG", "debug"),
    ];
    serve(cli, db, log, &env).await
}

const CONNECTIONS: usize = 3000;
/// The broker's default refresh buffer.
const BUFFER_S: i64 = 300;

async fn vend(http: &reqwest::Client, url: &str, key: &str, id: &str) -> (u16, Value) {
    let r = http
        .post(format!("{url}/v1/connections/{id}/access-token"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("vend {id}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Vends every connection, 32 at a time; each must answer 200 with more than the buffer left.
/// Returns the access tokens.
async fn vend_all(http: &reqwest::Client, url: &str, key: &str, ids: &[String]) -> Vec<String> {
    let mut tokens = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(32) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|id| {
                let (http, url, key, id) = (http.clone(), url.to_owned(), key.to_owned(), id.clone());
                tokio::spawn(async move { (vend(&http, &url, &key, &id).await, id) })
            })
            .collect();
        for task in tasks {
            let ((status, body), id) = task.await.unwrap();
            assert_eq!(status, 200, "vend {id}: {body}");
            assert!(
                body["expires_in"].as_i64().unwrap() > BUFFER_S,
                "vend {id}: {body}"
            );
            tokens.push(body["access_token"].as_str().unwrap().to_owned());
        }
    }
    tokens
}

/// How many of the connections' refresh tokens are sealed with `fingerprint`.
async fn refresh_tokens_on(store: &dyn Store, fingerprint: &str) -> u64 {
    let connections = &SEALED_TABLES[0].columns;
    store
        .sealed_prefix_counts(connections, 22)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.column == "refresh_token" && c.prefix == format!("lwa1.{fingerprint}."))
        .map(|c| c.count)
        .sum()
}

/// Vends random connections from 8 tasks until stopped: (200s, 503s "ask again", others).
struct Vending {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Vending {
    fn start(http: &reqwest::Client, url: &str, key: &str, ids: &Arc<Vec<String>>) -> Vending {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let retried = Arc::new(AtomicU64::new(0));
        let tasks = (0..8u64)
            .map(|worker| {
                let (http, url, key, ids) = (http.clone(), url.to_owned(), key.to_owned(), ids.clone());
                let (stop, ok, retried) = (stop.clone(), ok.clone(), retried.clone());
                tokio::spawn(async move {
                    let mut refused = Vec::new();
                    // A cheap deterministic walk through the ids, different per worker.
                    let mut at = worker as usize * 997;
                    while !stop.load(Ordering::Relaxed) {
                        at = (at + 7919) % ids.len();
                        let (status, body) = vend(&http, &url, &key, &ids[at]).await;
                        match status {
                            200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            // A refresh whose store lost to a concurrent re-seal: "ask again"
                            // (until the refresh compares plaintexts). Any other 503 (a locked
                            // database) is a failure.
                            503 if body.to_string().contains("ask again") => {
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => refused.push(format!("{}: {status} {body}", ids[at])),
                        }
                    }
                    refused
                })
            })
            .collect();
        Vending {
            stop,
            ok,
            retried,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut refused = Vec::new();
        for task in self.tasks {
            refused.extend(task.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            refused,
        )
    }
}

/// The onboarding values sealed in other tables, with their plaintexts.
struct OtherValues {
    tenant_id: String,
    signing_secret: String,
    state_hash: String,
    link_hash: String,
    claim_hash: String,
    layered_id: String,
    layered_secret: TokenSecret,
}

async fn seed_other_tables(store: &dyn Store, sealer: &Sealer, tenant_id: &str, now: i64) -> OtherValues {
    let values = OtherValues {
        tenant_id: tenant_id.to_owned(),
        signing_secret: "whsec_rotation-test-signing-secret".into(),
        state_hash: format!("{:0>64}", "5"),
        link_hash: format!("{:0>64}", "1"),
        claim_hash: format!("{:0>64}", "c"),
        layered_id: "conn_layered".into(),
        layered_secret: TokenSecret::parse(&"s".repeat(40)).unwrap(),
    };
    let mut tenant = store.tenant(tenant_id).await.unwrap().unwrap();
    tenant.signing_secret = Some(sealer.seal(tenant_id, "signing_secret", &values.signing_secret, None));
    assert!(store.update_tenant(&tenant).await.unwrap());
    let secret = |owner: &str| Some(sealer.seal(owner, "token_secret", &"t".repeat(40), None));
    store
        .insert_oauth_state(&OAuthState {
            state_hash: values.state_hash.clone(),
            tenant_id: tenant_id.into(),
            app: "default".into(),
            api: "sp-api".into(),
            region: "na".into(),
            account_type: Some("seller".into()),
            marketplace_id: None,
            client_state: "cs".into(),
            redirect_url: "https://rotate.example.com/done".into(),
            token_secret: secret(&values.state_hash),
            code_verifier: Some(sealer.seal(&values.state_hash, "code_verifier", "verifier-1", None)),
            connection_id: None,
            origin: "initialize".into(),
            created_at_ms: now,
            expires_at_ms: now + 86_400_000,
            used_at_ms: None,
        })
        .await
        .unwrap();
    store
        .insert_connect_link(&ConnectLink {
            token_hash: values.link_hash.clone(),
            tenant_id: tenant_id.into(),
            app: "default".into(),
            api: "sp-api".into(),
            region: "na".into(),
            account_type: Some("seller".into()),
            marketplace_id: None,
            client_state: "cs".into(),
            redirect_url: "https://rotate.example.com/done".into(),
            token_secret: secret(&values.link_hash),
            connection_id: None,
            created_at_ms: now,
            expires_at_ms: now + 86_400_000,
            used_at_ms: None,
        })
        .await
        .unwrap();
    let mut layered = connection(&values.layered_id, tenant_id, "A1LAYERED", now);
    layered.tenant_secret = true;
    layered.refresh_token = Some(sealer.seal(
        &values.layered_id,
        "refresh_token",
        "Atzr|layered-refresh-token",
        Some(&values.layered_secret),
    ));
    layered.access_token = None;
    layered.access_expires_at_ms = None;
    store.insert_connection(&layered).await.unwrap();
    store
        .save_authorization(
            &store.connection(&values.layered_id).await.unwrap().unwrap(),
            false,
            &ClaimCode {
                code_hash: values.claim_hash.clone(),
                tenant_id: tenant_id.into(),
                connection_id: values.layered_id.clone(),
                token_secret: secret(&values.claim_hash),
                created_at_ms: now,
                expires_at_ms: now + 86_400_000,
                used_at_ms: None,
            },
            &[],
        )
        .await
        .unwrap();
    values
}

fn connection(id: &str, tenant_id: &str, seller: &str, now: i64) -> Connection {
    Connection {
        id: id.into(),
        tenant_id: tenant_id.into(),
        app: "default".into(),
        api: "sp-api".into(),
        region: "na".into(),
        account_type: Some("seller".into()),
        marketplace_id: None,
        selling_partner_id: Some(seller.into()),
        name: None,
        status: "active".into(),
        refresh_token: None,
        access_token: None,
        access_expires_at_ms: None,
        tenant_secret: false,
        profiles: "[]".into(),
        authorized_at_ms: now,
        last_refresh_at_ms: None,
        last_error: None,
        callback_url: None,
        claimed_at_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// Every other table's value opens with only the new key and is what was sealed.
async fn assert_other_values_open(store: &dyn Store, sealer: &Sealer, values: &OtherValues) {
    let tenant = store.tenant(&values.tenant_id).await.unwrap().unwrap();
    let open = |owner: &str, field: &str, sealed: &Option<String>, secret: Option<&TokenSecret>| {
        sealer
            .open(owner, field, sealed.as_deref().unwrap(), secret)
            .unwrap_or_else(|e| panic!("{owner}/{field}: {e}"))
            .to_string()
    };
    assert_eq!(
        open(&values.tenant_id, "signing_secret", &tenant.signing_secret, None),
        values.signing_secret
    );
    let state = store.oauth_state(&values.state_hash).await.unwrap().unwrap();
    assert_eq!(
        open(&values.state_hash, "token_secret", &state.token_secret, None),
        "t".repeat(40)
    );
    assert_eq!(
        open(&values.state_hash, "code_verifier", &state.code_verifier, None),
        "verifier-1"
    );
    let link = store
        .take_connect_link(&values.link_hash, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        open(&values.link_hash, "token_secret", &link.token_secret, None),
        "t".repeat(40)
    );
    let claim = store
        .take_claim_code(&values.claim_hash, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        open(&values.claim_hash, "token_secret", &claim.token_secret, None),
        "t".repeat(40)
    );
    let layered = store.connection(&values.layered_id).await.unwrap().unwrap();
    assert_eq!(
        open(
            &values.layered_id,
            "refresh_token",
            &layered.refresh_token,
            Some(&values.layered_secret)
        ),
        "Atzr|layered-refresh-token",
        "the tenant layer is carried over without its secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_killed_half_way_then_resumed_while_a_server_vends_and_refreshes() {
    let started = Instant::now();
    let config = FakeConfig {
        quirks: Quirks {
            rotate_refresh_tokens: true,
            ..Quirks::default()
        },
        ..FakeConfig::default()
    };
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let old_entry = format!("2026-05:{}", old.to_base64().as_str());
    let new_entry = format!("2026-11:{}", new.to_base64().as_str());
    let both = format!("{new_entry},{old_entry}");
    let cli = Cli::with_config("rotate", config)
        .await
        .env("LWA_BROKER_MASTER_KEYS", &old_entry);
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let control = cli.fake.control();
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "Rotation",
            "--redirect-origin",
            "https://rotate.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let key = field(&out, "api key");

    // A few thousand connections sealed with the old key through the library, each with a real
    // refresh token of the fake and an access token that falls inside the refresh buffer once
    // the clock moves 400 s.
    let now = control.clock().await;
    let old_sealer = Sealer::new(Keyring::new(old.clone()));
    let store = lwa_server::state::open_store(&db).await.unwrap();
    let mut ids = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let seller = format!("A1ROTATE{i:05}");
        let refresh = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        let id = format!("conn_rotate{i:05}");
        let mut row = connection(&id, &tenant, &seller, now);
        row.refresh_token = Some(old_sealer.seal(&id, "refresh_token", &refresh, None));
        row.access_token = Some(old_sealer.seal(&id, "access_token", &format!("Atza|seeded-{i}"), None));
        row.access_expires_at_ms = Some(now + 600_000);
        store.insert_connection(&row).await.unwrap();
        ids.push(id);
    }
    let others = seed_other_tables(store.as_ref(), &old_sealer, &tenant, now).await;
    let (old_fp, new_fp) = (old.fingerprint().to_string(), new.fingerprint().to_string());
    assert_eq!(
        refresh_tokens_on(store.as_ref(), &old_fp).await,
        CONNECTIONS as u64 + 1
    );
    let seeded = started.elapsed();

    // A server sealing with the new key and opening both keeps vending; the clock moves so
    // every vend of a connection not yet refreshed refreshes it.
    let mut broker = serve_with_keys(&cli, &db, &both, &cli.dir.join("serve-1.log")).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ids = Arc::new(ids);
    vend_all(&http, &broker.url, &key, &ids[..200]).await;
    control.reset_counters().await;
    control.advance_clock(400.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let vending = Vending::start(&http, &broker.url, &key, &ids);

    // The first run, throttled so it can be killed part way, is killed with SIGKILL once about
    // half the connections are re-sealed.
    let mut first = cli.command(&[
        "--database",
        &db,
        "keys",
        "rotate",
        "--batch-size",
        "100",
        "--max-rows-per-second",
        "1000",
    ]);
    let first_log = cli.dir.join("rotate-1.log");
    first
        .env("LWA_BROKER_MASTER_KEYS", &both)
        .env("LWA_BROKER_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&first_log).unwrap())
        .kill_on_drop(true);
    let mut first = first.spawn().unwrap();
    let kill_at = CONNECTIONS as u64 * 2 / 5;
    let waited = Instant::now();
    loop {
        let done = refresh_tokens_on(store.as_ref(), &new_fp).await;
        if done >= kill_at {
            break;
        }
        let log = || std::fs::read_to_string(&first_log).unwrap_or_default();
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before the kill with {done} re-sealed: {}",
            log()
        );
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the first run is stuck at {done}: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await.unwrap();
    let status = first.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    let at_kill_new = refresh_tokens_on(store.as_ref(), &new_fp).await;
    let at_kill_old = refresh_tokens_on(store.as_ref(), &old_fp).await;
    assert!(
        at_kill_old > 0 && at_kill_new > 0,
        "the kill falls part way: {at_kill_new} new, {at_kill_old} old"
    );
    let refreshes_at_kill = control.counters().await.lwa_calls("refresh_token");

    // The second run finishes the job while the server keeps vending.
    let out = cli
        .run_with(
            &["--database", &db, "keys", "rotate", "--json"],
            None,
            &[("LWA_BROKER_MASTER_KEYS", &both)],
        )
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, out.stdout);
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["still_on_other_keys"], 0, "{report}");
    assert_eq!(report["newest"], new_fp.as_str());
    assert_eq!(report["removable_keys"], serde_json::json!([old_fp]), "{report}");
    let table = |name: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
            .clone()
    };
    let connections = table("connections");
    assert_eq!(connections["rows"], CONNECTIONS as u64 + 1, "{connections}");
    let already_new = connections["already_new"].as_u64().unwrap();
    assert!(
        already_new >= at_kill_new,
        "the second run skips what the first did: {connections}"
    );
    assert!(connections["resealed"].as_u64().unwrap() > 0, "{connections}");
    for name in ["tenants", "oauth_states", "connect_links", "claim_codes"] {
        assert_eq!(table(name)["failures"], serde_json::json!([]), "{name}");
    }
    let refreshes_during_rotation = control.counters().await.lwa_calls("refresh_token");

    let (vended, retried, refused) = vending.stop().await;
    assert!(
        refused.is_empty(),
        "vends refused during the rotation: {refused:?}"
    );
    assert!(
        refreshes_at_kill > 0 && refreshes_during_rotation > refreshes_at_kill,
        "refreshes ran during both runs: {refreshes_at_kill}, then {refreshes_during_rotation}"
    );

    // Every value is sealed with the new key, and every connection vends.
    let usage = key_usage(store.as_ref()).await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].fingerprint, Some(new.fingerprint()));
    vend_all(&http, &broker.url, &key, &ids).await;
    broker.child.kill().await.unwrap();

    // Restarted with only the new key: every connection still vends, also after a refresh with
    // its re-sealed refresh token.
    let mut broker = serve_with_keys(&cli, &db, &new_entry, &cli.dir.join("serve-2.log")).await;
    vend_all(&http, &broker.url, &key, &ids).await;
    let before = control.counters().await.lwa_calls("refresh_token");
    control.advance_clock(3700.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refreshed = vend_all(&http, &broker.url, &key, &ids).await;
    let after = control.counters().await.lwa_calls("refresh_token");
    assert!(
        after - before >= CONNECTIONS as u64,
        "every connection refreshed: {before} → {after}"
    );
    let counters = control.counters().await;
    assert_eq!(
        counters.lwa_calls("refresh_token"),
        counters.lwa_outcomes("refresh_token", "ok"),
        "every refresh succeeded at Amazon"
    );
    let new_sealer = Sealer::new(Keyring::new(new.clone()));
    assert_other_values_open(store.as_ref(), &new_sealer, &others).await;
    let app = store
        .app_secret("default")
        .await
        .unwrap()
        .expect("the app's secrets are stored");
    assert_eq!(
        &*new_sealer
            .open("app:default", "client_secret", &app.secret, None)
            .unwrap(),
        defaults::SP_API_CLIENT_SECRET,
        "the app's client secret moved to the new key too"
    );

    // `keys status` with the new key alone: nothing left on any other key.
    let out = cli
        .run_with(
            &["--database", &db, "keys", "status", "--json"],
            None,
            &[("LWA_BROKER_MASTER_KEYS", &new_entry)],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["id"], "2026-11");
    broker.child.kill().await.unwrap();

    // No key and no token in anything printed or logged.
    let mut logs = cli.transcript.lock().unwrap().clone();
    for log in ["serve-1.log", "serve-2.log", "rotate-1.log"] {
        logs.push_str(&std::fs::read_to_string(cli.dir.join(log)).unwrap());
    }
    assert!(logs.contains("refreshed"), "the server's debug log is read");
    let mut secrets: HashMap<&str, String> = HashMap::new();
    secrets.insert("old key", old.to_base64().to_string());
    secrets.insert("new key", new.to_base64().to_string());
    secrets.insert("signing secret", others.signing_secret.clone());
    for (what, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the {what} reached a log");
    }
    // Every LWA token starts with `Atz` (AMAZON.md): none may appear, raw or percent-encoded,
    // which covers the thousands the fake issued without comparing each.
    assert!(refreshed.iter().all(|t| t.starts_with("Atza|")));
    for prefix in ["Atza|", "Atzr|", "Atza%7C", "Atzr%7C", "Atza%7c", "Atzr%7c"] {
        assert!(
            !logs.contains(prefix),
            "a token ({prefix}…) reached a log or the CLI's output"
        );
    }
    eprintln!(
        "rotation: {CONNECTIONS} connections seeded in {seeded:?}; killed with {at_kill_new} re-sealed; \
         during the rotation {vended} vends answered, {retried} asked to retry, {} refreshes; \
         second run: {connections}; {:?} in all",
        refreshes_during_rotation,
        started.elapsed()
    );
}

#[tokio::test]
async fn new_master_adds_the_newest_key_to_the_key_file_and_rotate_moves_everything_to_it() {
    let cli = Cli::start("new-master").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let key_file = cli.dir.join("master.key");
    cli.ok(&[
        "--database",
        &db,
        "tenants",
        "create",
        "--name",
        "Keys",
        "--redirect-origin",
        "https://keys.example.com",
    ])
    .await;
    let first = MasterKey::load(None, &key_file).unwrap();

    let out = cli.ok(&["keys", "new-master", "--id", "2026-11"]).await;
    assert!(out.contains("added master key 2026-11"), "{out}");
    assert_eq!(crate::support::mode_of(&key_file), 0o600);
    let keys = lwa_seal::MasterKeys::load(None, None, &key_file).unwrap();
    let newest = keys.newest().key().fingerprint().to_string();
    assert_eq!(keys.iter().count(), 2);
    assert_eq!(
        keys.iter().nth(1).unwrap().key().fingerprint(),
        first.fingerprint()
    );
    let again = cli.run(&["keys", "new-master", "--id", "2026-11"]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("already has a key with id \"2026-11\""),
        "{}",
        again.stderr
    );

    let status = cli.ok(&["--database", &db, "keys", "status"]).await;
    assert!(
        status.contains(&format!("2026-11 ({newest}) (newest)")),
        "{status}"
    );
    let out = cli.ok(&["--database", &db, "keys", "rotate"]).await;
    assert!(out.contains("values still on other keys: 0"), "{out}");
    assert!(
        out.contains(&format!(
            "key {} is no longer used and can be removed from the configuration",
            first.fingerprint()
        )),
        "{out}"
    );

    // Printed for the environment instead: nothing written.
    let before = std::fs::read(&key_file).unwrap();
    let printed = cli
        .ok(&["keys", "new-master", "--id", "2027-05", "--print"])
        .await;
    let entry = printed.trim();
    assert!(entry.starts_with("2027-05:"), "{printed}");
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
    let out = cli
        .run_with(
            &["keys", "new-master", "--id", "2027-06"],
            None,
            &[("LWA_BROKER_MASTER_KEYS", entry)],
        )
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--print"), "{}", out.stderr);

    // A malformed list stops the server with the variable named, the key never shown.
    let bad = format!("{entry},2026-05:c2hvcnQ=");
    let out = cli
        .run_with(
            &["--database", &db, "serve", "--listen", "127.0.0.1:0"],
            None,
            &[("LWA_BROKER_MASTER_KEYS", &bad)],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("LWA_BROKER_MASTER_KEYS entry 2 must be 32 bytes of base64, got 5 bytes"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&entry[8..]));
    // Without the key the database was sealed with, it refuses to start, naming both keys.
    let out = cli
        .run_with(
            &["--database", &db, "keys", "status"],
            None,
            &[("LWA_BROKER_MASTER_KEYS", entry)],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not open this database"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&newest), "{}", out.stderr);
}

//! `kill -9` of the server during a storm of refreshes across 500 connections, then a restart:
//! every connection still vends, and the LWA calls counted at the fake show no connection
//! refreshed twice for one expiry except those in flight at the kill.
//!
//! Each connection's refresh is slowed by its own latency (300 ms to ~4.3 s), so Amazon answers
//! the storm's refreshes one by one; the broker is killed once ~150 are answered, when some
//! refreshes are stored and the rest are in flight or not yet started.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use fake_amazon::{FaultSpec, FaultTarget, defaults};
use serde_json::{Value, json};

use crate::support::{Broker, Cli, field, serve};

const CONNECTIONS: usize = 500;
/// Concurrent vends per connection in the storm.
const VENDS_PER_CONNECTION: usize = 5;
/// LWA answers connection `i`'s refresh after `LATENCY_BASE_MS + i * LATENCY_STEP_MS`.
const LATENCY_BASE_MS: u64 = 300;
const LATENCY_STEP_MS: u64 = 8;
/// The kill comes once Amazon has answered this many of the storm's refreshes.
const KILL_AFTER_ANSWERED: u64 = 150;
/// The broker's default refresh buffer.
const BUFFER_S: i64 = 300;
const LWA_HOST: &str = "api.amazon.com";

/// One vend: the status and the body, or the transport error (the server was killed).
async fn vend(http: reqwest::Client, url: String, key: String, id: String) -> Result<(u16, Value), String> {
    let r = http
        .post(format!("{url}/v1/connections/{id}/access-token"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Vends every connection once, concurrently; each must answer 200 with a token good for
/// longer than the refresh buffer. Returns the access tokens by connection.
async fn vend_all(http: &reqwest::Client, broker: &Broker, key: &str, ids: &[String]) -> Vec<String> {
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(vend(http.clone(), broker.url.clone(), key.to_owned(), id.clone())))
        .collect();
    let mut tokens = Vec::new();
    for (task, id) in tasks.into_iter().zip(ids) {
        let (status, body) = task.await.unwrap().unwrap_or_else(|e| panic!("vend {id}: {e}"));
        assert_eq!(status, 200, "vend {id} after the restart: {body}");
        let expires_in = body["expires_in"].as_i64().unwrap();
        assert!(expires_in > BUFFER_S, "vend {id}: {body}");
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    tokens
}

/// LWA refresh requests the fake received (answered or not): the refresh token and the
/// arrival time (fake clock) of each.
async fn refresh_requests(cli: &Cli) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    for request in cli.fake.control().requests(Some(LWA_HOST)).await {
        let params: HashMap<String, String> = if request.body.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(&request.body).unwrap();
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        } else {
            url::form_urlencoded::parse(request.body.as_bytes())
                .into_owned()
                .collect()
        };
        if params.get("grant_type").map(String::as_str) == Some("refresh_token") {
            seen.push((params["refresh_token"].clone(), request.at_ms));
        }
    }
    seen
}

/// How many times each refresh token appears.
fn per_token(requests: &[(String, i64)]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for (token, _) in requests {
        *counts.entry(token.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_refresh_storm_then_restart_refreshes_no_connection_twice() {
    storm(false).await;
}

/// The same with LWA issuing a new refresh token on every refresh (the old one stays valid, as
/// generic LWA describes): a refresh answered but not stored before the kill leaves the old
/// token in the database, which still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_refresh_storm_with_rotating_refresh_tokens() {
    storm(true).await;
}

async fn storm(rotating_refresh_tokens: bool) {
    let started = Instant::now();
    let master = lwa_seal::MasterKey::generate();
    let cli = Cli::start("storm")
        .await
        .env("LWA_BROKER_MASTER_KEY", &master.to_base64());
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let control = cli.fake.control();
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "Storm",
            "--redirect-origin",
            "https://storm.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let key = field(&out, "api key");

    // 500 sellers, self-authorized, imported from a file (one validating refresh each).
    let mut refresh_tokens = Vec::with_capacity(CONNECTIONS);
    let mut file = String::new();
    for i in 0..CONNECTIONS {
        let seller = format!("A1STORMSELLER{i:04}");
        let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        file.push_str(
            &json!({"region": "na", "refresh_token": token, "selling_partner_id": seller}).to_string(),
        );
        file.push('\n');
        refresh_tokens.push(token);
    }
    let path = cli.dir.join("import.jsonl");
    std::fs::write(&path, file).unwrap();
    let out = cli
        .run(&[
            "--database",
            &db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut ids = vec![String::new(); CONNECTIONS];
    for line in out.stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let n = v["line"].as_u64().unwrap() as usize;
        ids[n - 1] = v["connection_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned();
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), CONNECTIONS);
    assert!(ids.iter().all(|id| id.starts_with("conn_")));

    // Every access token expires (the server reads the fake's clock when it starts); each
    // refresh gets its own latency. Refresh tokens rotate from now on, if asked.
    if rotating_refresh_tokens {
        let mut quirks = control.quirks().await;
        quirks.rotate_refresh_tokens = true;
        control.set_quirks(quirks).await;
    }
    control.reset_counters().await;
    control.clear_requests().await;
    let now_ms = control.advance_clock(3700.0).await;
    for (i, token) in refresh_tokens.iter().enumerate() {
        control
            .add_fault(FaultSpec {
                target: FaultTarget::Lwa,
                refresh_token: Some(token.clone()),
                latency_ms: Some(LATENCY_BASE_MS + i as u64 * LATENCY_STEP_MS),
                ..FaultSpec::default()
            })
            .await;
    }
    let mut broker = serve(
        &cli,
        &db,
        &cli.dir.join("serve-1.log"),
        &[("LWA_BROKER_LOG", "warn")],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // The storm: every connection vended several times at once, interleaved.
    let storm_started = Instant::now();
    let mut storm = Vec::with_capacity(CONNECTIONS * VENDS_PER_CONNECTION);
    for _ in 0..VENDS_PER_CONNECTION {
        for id in &ids {
            storm.push(tokio::spawn(vend(
                http.clone(),
                broker.url.clone(),
                key.clone(),
                id.clone(),
            )));
        }
    }
    loop {
        let answered = control.counters().await.lwa_calls("refresh_token");
        if answered >= KILL_AFTER_ANSWERED {
            break;
        }
        assert!(
            storm_started.elapsed() < Duration::from_secs(20),
            "the storm is stuck: {answered} refreshes answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.child.kill().await.unwrap();
    let killed_after = storm_started.elapsed();
    let answered_at_kill = control.counters().await.lwa_calls("refresh_token");

    // What the database holds right after the kill.
    let store = lwa_server::state::open_store(&db).await.unwrap();
    let mut unrefreshed = HashSet::new();
    let sealer = lwa_server::sealing::Sealer::new(lwa_seal::Keyring::new(master.clone()));
    for (id, original) in ids.iter().zip(&refresh_tokens) {
        let row = store.connection(id).await.unwrap().unwrap();
        assert_eq!(row.status, "active", "{id}");
        let expires_at = row.access_expires_at_ms.unwrap();
        let stored_refresh = sealer
            .open(id, "refresh_token", row.refresh_token.as_deref().unwrap(), None)
            .unwrap();
        if expires_at <= now_ms {
            assert_eq!(*stored_refresh, *original, "{id}: not refreshed, token unchanged");
            unrefreshed.insert(id.clone());
        } else {
            assert_eq!(
                *stored_refresh != *original,
                rotating_refresh_tokens,
                "{id}: a new refresh token from LWA is stored with its access token"
            );
            assert!(
                expires_at > now_ms + BUFFER_S * 1000,
                "{id}: {expires_at} vs {now_ms}"
            );
        }
    }
    drop(store);
    let stored_before_kill = CONNECTIONS - unrefreshed.len();
    assert!(
        stored_before_kill > 0 && !unrefreshed.is_empty(),
        "the kill must fall mid-storm: {stored_before_kill} of {CONNECTIONS} refreshed before it"
    );

    let (mut ok, mut refused, mut cut) = (0, 0, 0);
    for task in storm {
        match task.await.unwrap() {
            Ok((200, body)) => {
                ok += 1;
                assert!(body["expires_in"].as_i64().unwrap() > BUFFER_S, "{body}");
            }
            Ok((status, body)) => {
                refused += 1;
                eprintln!("storm vend answered {status}: {body}");
            }
            Err(_) => cut += 1,
        }
    }
    assert_eq!(refused, 0, "no vend of the storm was refused");

    // Every refresh the fake received before the kill has run out its latency (answered to
    // no one, or dropped with its connection) before anything is counted.
    let storm_requests = refresh_requests(&cli).await;
    let latency: HashMap<&String, i64> = refresh_tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t, (LATENCY_BASE_MS + i as u64 * LATENCY_STEP_MS) as i64))
        .collect();
    let settled_ms = storm_requests
        .iter()
        .map(|(token, at_ms)| at_ms + latency[token] + 300)
        .max()
        .unwrap();
    while control.clock().await < settled_ms {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control.clear_faults().await;
    let received_before_restart = per_token(&storm_requests);
    let counted_before_restart = control.counters().await;
    control.clear_requests().await;
    for (token, n) in &received_before_restart {
        assert_eq!(*n, 1, "one refresh per connection during the storm, not {n}");
        assert!(refresh_tokens.contains(token));
    }

    // Restart on the same database and master key.
    let broker = serve(
        &cli,
        &db,
        &cli.dir.join("serve-2.log"),
        &[("LWA_BROKER_LOG", "warn")],
    )
    .await;
    let first = vend_all(&http, &broker, &key, &ids).await;
    let received_after_restart = per_token(&refresh_requests(&cli).await);
    let counters = control.counters().await;
    let second = vend_all(&http, &broker, &key, &ids).await;
    assert_eq!(first, second, "the second round is served from the cache");
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token"),
        counters.lwa_calls("refresh_token"),
        "the second round calls no one"
    );

    let mut answered_not_stored = 0;
    let mut reached_not_stored = 0;
    let mut stored_before_kill_checked = 0;
    for (id, token) in ids.iter().zip(&refresh_tokens) {
        let calls = counters.lwa_calls_for_refresh_token(token);
        let after = received_after_restart.get(token).copied().unwrap_or(0);
        if unrefreshed.contains(id) {
            assert!((1..=2).contains(&calls), "{id}: {calls} LWA calls for one expiry");
            assert_eq!(
                after, 1,
                "{id}: not stored before the kill, refreshed once after it"
            );
            if calls == 2 {
                answered_not_stored += 1;
            }
            if received_before_restart.contains_key(token) {
                reached_not_stored += 1;
            }
        } else {
            assert_eq!(calls, 1, "{id} was stored before the kill: one LWA call in all");
            assert_eq!(after, 0, "{id}: the stored token is used after the restart");
            stored_before_kill_checked += 1;
        }
    }
    assert_eq!(stored_before_kill_checked, stored_before_kill);
    assert_eq!(
        counters.lwa_calls("refresh_token"),
        counters.lwa_outcomes("refresh_token", "ok"),
        "every refresh succeeded at Amazon"
    );
    let received = received_before_restart.len();
    eprintln!(
        "storm: {CONNECTIONS} connections, {} vends; killed after {killed_after:?} with {answered_at_kill} \
         refreshes answered; before the kill {ok} vends answered, {cut} were cut; the fake received \
         {received} refreshes (answered {} by the time the storm's latencies ran out); stored before the \
         kill: {stored_before_kill}; not stored: {} ({} of them reached the fake, {answered_not_stored} \
         answered but not stored); after the restart: {} refreshes, {} LWA calls in all; {:?}",
        CONNECTIONS * VENDS_PER_CONNECTION,
        counted_before_restart.lwa_calls("refresh_token"),
        unrefreshed.len(),
        reached_not_stored,
        received_after_restart.values().sum::<u64>(),
        counters.lwa_calls("refresh_token"),
        started.elapsed(),
    );
}

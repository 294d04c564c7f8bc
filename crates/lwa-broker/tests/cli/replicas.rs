//! Three `lwa-broker serve` replicas on one PostgreSQL (a schema of its own in the database
//! `LWA_BROKER_TEST_POSTGRES_URL` names; skipped, said so, without PostgreSQL unless
//! `LWA_BROKER_REQUIRE_POSTGRES=1`), 1,000 connections whose access tokens expire together, and
//! a storm of 10 concurrent vends per connection spread over the replicas:
//!
//! - exactly one LWA refresh per connection, whichever replica each vend lands on;
//! - `kill -9` of one replica in the middle of the storm: every connection still vends from the
//!   others, the dead replica's refreshes are taken over, no refresh token is lost, and a
//!   connection is refreshed twice only when its refresh was in flight at the dead replica.
//!
//! The background refresher is off, so only vends refresh. Before the expiry every replica vends
//! every connection once, so each holds the token in its cache. Every LWA answer takes
//! [`LWA_LATENCY_MS`], so refreshes overlap as they do with Amazon. The storm's client runs
//! [`WORKERS`] workers; each sends one connection's 10 vends at once (to replica
//! `(connection + n) % 3` for the n-th), waits for them, then takes the next connection: 200
//! vends in flight, every connection hit by all three replicas at the same moment.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_amazon::{FaultSpec, FaultTarget, defaults};
use serde_json::{Value, json};

use crate::support::{Broker, Cli, Schema, field, postgres_schema, serve};

const CONNECTIONS: usize = 1_000;
const VENDS_PER_CONNECTION: usize = 10;
const REPLICAS: usize = 3;
/// Connections vended at once in the storm (each with all its vends in flight together).
const WORKERS: usize = 20;
/// Vends in flight at once outside the storm.
const CONCURRENCY: usize = 200;
/// Every LWA answer is this late.
const LWA_LATENCY_MS: u64 = 100;
/// Past the tokens' hour: every access token in the database and in the caches is expired.
const EXPIRE_S: f64 = 3_700.0;
/// The broker's default refresh buffer.
const BUFFER_S: i64 = 300;

/// The tests of this file run one at a time: each starts three replicas with a pool of
/// PostgreSQL connections each, and the machine has two cores. Under nextest (one process per
/// test) the test group `replicas` in `.config/nextest.toml` does it; this lock, under
/// `cargo test`.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One vend: the status and the body, or the transport error (the replica was killed).
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

/// The access token of a 200 with more than the refresh buffer left; the reason otherwise.
fn fresh_token(answer: &Result<(u16, Value), String>) -> Result<String, String> {
    match answer {
        Ok((200, body)) => {
            let expires_in = body["expires_in"].as_i64().unwrap_or(0);
            if expires_in <= BUFFER_S {
                return Err(format!("200 short-lived: good for {expires_in} s: {body}"));
            }
            Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
        }
        Ok((status, body)) => Err(format!(
            "{status} {}: {body}",
            body["error"]["code"].as_str().unwrap_or("?")
        )),
        Err(e) => Err(format!("transport: {e}")),
    }
}

/// A tenant with 1,000 imported connections, served by three replicas on one PostgreSQL
/// schema, each of which has vended every connection once.
struct Fleet {
    /// Declared before the schema, so the replicas are gone when it is dropped.
    replicas: Vec<Broker>,
    cli: Cli,
    db: String,
    master: lwa_seal::MasterKey,
    key: String,
    ids: Vec<String>,
    /// The refresh token each connection was imported with.
    refresh_tokens: Vec<String>,
    http: reqwest::Client,
    _schema: Schema,
}

impl Fleet {
    async fn start(test: &str) -> Option<Fleet> {
        let (db, schema) = postgres_schema(test).await?;
        let started = Instant::now();
        let master = lwa_seal::MasterKey::generate();
        let cli = Cli::start(test)
            .await
            .env("LWA_BROKER_MASTER_KEY", &master.to_base64());
        let control = cli.fake.control();
        cli.ok(&["--database", &db, "migrate"]).await;
        let out = cli
            .ok(&[
                "--database",
                &db,
                "tenants",
                "create",
                "--name",
                "Replicas",
                "--redirect-origin",
                "https://replicas.example.com",
            ])
            .await;
        let tenant = field(&out, "tenant");
        let key = field(&out, "api key");

        // 1,000 sellers, self-authorized, imported from a file (one validating refresh each).
        let mut refresh_tokens = Vec::with_capacity(CONNECTIONS);
        let mut file = String::new();
        for i in 0..CONNECTIONS {
            let seller = format!("A1REPLICASELLER{i:04}");
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
        let imported = started.elapsed();

        // Three replicas, refreshing only on demand.
        let mut replicas = Vec::with_capacity(REPLICAS);
        for n in 0..REPLICAS {
            replicas.push(
                serve(
                    &cli,
                    &db,
                    &cli.dir.join(format!("replica-{n}.log")),
                    &[("LWA_BROKER_LOG", "warn"), ("LWA_BROKER_REFRESHER", "off")],
                )
                .await,
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let fleet = Fleet {
            replicas,
            cli,
            db,
            master,
            key,
            ids,
            refresh_tokens,
            http,
            _schema: schema,
        };

        // Every replica vends every connection once, from the token the import stored.
        let warming = Instant::now();
        let before = control.counters().await.lwa_calls("refresh_token");
        let jobs: Vec<(usize, usize)> = (0..REPLICAS)
            .flat_map(|r| (0..CONNECTIONS).map(move |c| (c, r)))
            .collect();
        for ((c, r), answer) in jobs.iter().zip(fleet.vend_each(&jobs).await) {
            if let Err(why) = fresh_token(&answer) {
                panic!("warming vend of {} on replica {r}: {why}", fleet.ids[*c]);
            }
        }
        assert_eq!(
            control.counters().await.lwa_calls("refresh_token"),
            before,
            "the replicas vend the imported tokens without calling Amazon"
        );
        eprintln!(
            "{test}: {CONNECTIONS} connections imported in {imported:?}; {REPLICAS} replicas started and \
             {} warming vends answered in {:?}",
            jobs.len(),
            warming.elapsed()
        );
        Some(fleet)
    }

    /// Vends each `(connection, replica)` once, [`CONCURRENCY`] at a time; the answers in order.
    async fn vend_each(&self, jobs: &[(usize, usize)]) -> Vec<Result<(u16, Value), String>> {
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = Vec::with_capacity(jobs.len());
        for &(c, r) in jobs {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let call = vend(
                self.http.clone(),
                self.replicas[r].url.clone(),
                self.key.clone(),
                self.ids[c].clone(),
            );
            tasks.push(tokio::spawn(async move {
                let answer = call.await;
                drop(permit);
                answer
            }));
        }
        let mut answers = Vec::with_capacity(tasks.len());
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    /// Every access token expires (in the database and in every replica's cache), each LWA
    /// answer gets its latency, and the fake forgets what it counted and saw. Returns the fake
    /// clock after the move.
    async fn expire_all(&self) -> i64 {
        let control = self.cli.fake.control();
        let now_ms = control.advance_clock(EXPIRE_S).await;
        // The replicas read the fake's clock every 100 ms.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        if control.faults().await.is_empty() {
            control
                .add_fault(FaultSpec {
                    target: FaultTarget::Lwa,
                    latency_ms: Some(LWA_LATENCY_MS),
                    ..FaultSpec::default()
                })
                .await;
        }
        control.reset_counters().await;
        control.clear_requests().await;
        now_ms
    }

    /// The storm: [`WORKERS`] workers each send one connection's 10 vends at once, spread over
    /// the replicas, then take the next connection. A vend meant for a replica marked dead goes
    /// to the next live one; one cut by the kill is sent again to a live one, as a load
    /// balancer does.
    fn storm(
        &self,
        alive: &Arc<Vec<AtomicBool>>,
        started: &Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<Storm> {
        let route = Route {
            http: self.http.clone(),
            key: self.key.clone(),
            urls: Arc::new(self.replicas.iter().map(|b| b.url.clone()).collect()),
            ids: Arc::new(self.ids.clone()),
            alive: alive.clone(),
            rerouted: Arc::new(AtomicUsize::new(0)),
        };
        let started = started.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| tokio::spawn(storm_worker(route.clone(), started.clone())))
                .collect();
            let mut answers = vec![Vec::new(); CONNECTIONS];
            let (mut cut, mut cut_connections) = (0, HashSet::new());
            for worker in workers {
                for (c, vends) in worker.await.unwrap() {
                    for (answer, was_cut) in vends {
                        if was_cut {
                            cut += 1;
                            cut_connections.insert(c);
                        }
                        answers[c].push(answer);
                    }
                }
            }
            Storm {
                answers,
                elapsed: began.elapsed(),
                rerouted: route.rerouted.load(Ordering::SeqCst),
                cut,
                cut_connections,
            }
        })
    }
}

/// Where the storm's vends go.
#[derive(Clone)]
struct Route {
    http: reqwest::Client,
    key: String,
    urls: Arc<Vec<String>>,
    ids: Arc<Vec<String>>,
    alive: Arc<Vec<AtomicBool>>,
    /// Vends sent to another replica than meant, because the meant one was dead.
    rerouted: Arc<AtomicUsize>,
}

/// One vend of connection `c` meant for replica `meant`: the answer, and whether the kill cut
/// it (it was then sent again to a live replica).
async fn storm_vend(route: Route, c: usize, meant: usize) -> (Result<(u16, Value), String>, bool) {
    let mut to = live_from(&route.alive, meant);
    if to != meant {
        route.rerouted.fetch_add(1, Ordering::SeqCst);
    }
    let mut cut = false;
    loop {
        let answer = vend(
            route.http.clone(),
            route.urls[to].clone(),
            route.key.clone(),
            route.ids[c].clone(),
        )
        .await;
        if answer.is_err() && !route.alive[to].load(Ordering::SeqCst) {
            cut = true;
            to = live_from(&route.alive, to);
            continue;
        }
        return (answer, cut);
    }
}

/// Takes the next connection, sends its 10 vends at once (the n-th to replica
/// `(connection + n) % 3`), waits for them; until every connection has been taken.
async fn storm_worker(
    route: Route,
    started: Arc<AtomicUsize>,
) -> Vec<(usize, Vec<(Result<(u16, Value), String>, bool)>)> {
    let mut done = Vec::new();
    loop {
        let c = started.fetch_add(1, Ordering::SeqCst);
        if c >= CONNECTIONS {
            return done;
        }
        let vends: Vec<_> = (0..VENDS_PER_CONNECTION)
            .map(|n| tokio::spawn(storm_vend(route.clone(), c, (c + n) % REPLICAS)))
            .collect();
        let mut answers = Vec::with_capacity(VENDS_PER_CONNECTION);
        for v in vends {
            answers.push(v.await.unwrap());
        }
        done.push((c, answers));
    }
}

/// The first live replica from `from` on.
fn live_from(alive: &[AtomicBool], from: usize) -> usize {
    (0..REPLICAS)
        .map(|k| (from + k) % REPLICAS)
        .find(|&r| alive[r].load(Ordering::SeqCst))
        .expect("a live replica")
}

struct Storm {
    /// Each connection's vends, in the order sent.
    answers: Vec<Vec<Result<(u16, Value), String>>>,
    elapsed: Duration,
    /// Vends sent to another replica than meant, because the meant one was dead.
    rerouted: usize,
    /// Vends cut by the kill and sent again.
    cut: usize,
    /// The connections of those vends: the only ones the dead replica may have been refreshing
    /// at the kill (only vends refresh).
    cut_connections: HashSet<usize>,
}

impl Storm {
    /// The access tokens each connection was given; the failures, with their connection.
    fn tokens(&self) -> (Vec<HashSet<String>>, Vec<(usize, String)>) {
        let mut tokens = vec![HashSet::new(); CONNECTIONS];
        let mut failures = Vec::new();
        for (c, answers) in self.answers.iter().enumerate() {
            assert_eq!(answers.len(), VENDS_PER_CONNECTION, "connection {c} was vended");
            for answer in answers {
                match fresh_token(answer) {
                    Ok(token) => {
                        tokens[c].insert(token);
                    }
                    Err(why) => failures.push((c, why)),
                }
            }
        }
        (tokens, failures)
    }

    fn rate(&self) -> f64 {
        (CONNECTIONS * VENDS_PER_CONNECTION) as f64 / self.elapsed.as_secs_f64()
    }
}

/// The failures by kind (status and error code), most frequent first.
fn kinds(failures: &[(usize, String)]) -> Vec<(String, usize)> {
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for (_, why) in failures {
        let kind = why.split(':').next().unwrap_or_default().to_owned();
        *by_kind.entry(kind).or_default() += 1;
    }
    let mut k: Vec<_> = by_kind.into_iter().collect();
    k.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    k
}

/// How many connections were refreshed `n` times, for each `n` seen.
fn histogram(calls: &[u64]) -> Vec<(u64, usize)> {
    let mut by_count: HashMap<u64, usize> = HashMap::new();
    for n in calls {
        *by_count.entry(*n).or_default() += 1;
    }
    let mut h: Vec<_> = by_count.into_iter().collect();
    h.sort();
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_refresh_each_of_1000_expired_connections_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(fleet) = Fleet::start("replicas-once").await else {
        return;
    };
    let control = fleet.cli.fake.control();
    fleet.expire_all().await;

    let alive = Arc::new((0..REPLICAS).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
    let storm = fleet.storm(&alive, &Arc::new(AtomicUsize::new(0))).await.unwrap();
    // Refreshes still in flight at the fake (none should be) are answered before counting.
    tokio::time::sleep(Duration::from_millis(LWA_LATENCY_MS * 5)).await;
    let counters = control.counters().await;
    let (tokens, failures) = storm.tokens();
    let calls: Vec<u64> = fleet
        .refresh_tokens
        .iter()
        .map(|t| counters.lwa_calls_for_refresh_token(t))
        .collect();
    let total = counters.lwa_calls("refresh_token");
    let several_tokens = tokens.iter().filter(|t| t.len() > 1).count();
    eprintln!(
        "replicas-once: {} vends ({VENDS_PER_CONNECTION} per connection, {} in flight) over {REPLICAS} \
         replicas in {:?} ({:.0} vends/s); {} failed {:?}; LWA refresh calls: {total} for {CONNECTIONS} \
         connections (ok: {}); connections by refresh calls: {:?}; connections given more than one \
         access token: {several_tokens}",
        CONNECTIONS * VENDS_PER_CONNECTION,
        WORKERS * VENDS_PER_CONNECTION,
        storm.elapsed,
        storm.rate(),
        failures.len(),
        kinds(&failures),
        counters.lwa_outcomes("refresh_token", "ok"),
        histogram(&calls),
    );

    assert!(
        failures.is_empty(),
        "every vend answers 200 with a fresh token; {} did not, first: {:?}",
        failures.len(),
        failures.first().map(|(c, why)| (&fleet.ids[*c], why))
    );
    assert_eq!(
        total, CONNECTIONS as u64,
        "exactly one LWA refresh per connection"
    );
    for (c, n) in calls.iter().enumerate() {
        assert_eq!(*n, 1, "{}: refreshed {n} times for one expiry", fleet.ids[c]);
    }
    assert_eq!(
        counters.lwa_outcomes("refresh_token", "ok"),
        total,
        "every refresh succeeded at Amazon"
    );
    for (c, t) in tokens.iter().enumerate() {
        assert_eq!(
            t.len(),
            1,
            "{}: every vend gives the one refreshed token",
            fleet.ids[c]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_replica_mid_storm_the_others_take_over_and_no_refresh_token_is_lost() {
    kill_9_mid_storm(false).await;
}

/// The same with LWA issuing a new refresh token on every refresh (the old one stays valid, as
/// generic LWA describes): a refresh answered to the dead replica but not stored leaves the old
/// token in the database, and the others must not take the new one stored by a replica for a
/// re-authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_replica_mid_storm_with_rotating_refresh_tokens() {
    kill_9_mid_storm(true).await;
}

async fn kill_9_mid_storm(rotating_refresh_tokens: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let test = if rotating_refresh_tokens {
        "replicas-kill-rotating"
    } else {
        "replicas-kill"
    };
    let Some(mut fleet) = Fleet::start(test).await else {
        return;
    };
    let control = fleet.cli.fake.control();
    if rotating_refresh_tokens {
        let mut quirks = control.quirks().await;
        quirks.rotate_refresh_tokens = true;
        control.set_quirks(quirks).await;
    }
    fleet.expire_all().await;

    // The storm; replica 2 is killed once a third of the connections have started.
    const DEAD: usize = 2;
    let alive = Arc::new((0..REPLICAS).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
    let started = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let running = fleet.storm(&alive, &started);
    while started.load(Ordering::SeqCst) < CONNECTIONS / 3 {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the storm is stuck: {} connections started",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    alive[DEAD].store(false, Ordering::SeqCst);
    fleet.replicas[DEAD].child.kill().await.unwrap();
    let killed_after = began.elapsed();
    let started_at_kill = started.load(Ordering::SeqCst);
    let storm = running.await.unwrap();

    // The dead replica's requests, answered to no one, have run out their latency.
    tokio::time::sleep(Duration::from_millis(LWA_LATENCY_MS * 5)).await;
    let counters = control.counters().await;
    let (tokens, failures) = storm.tokens();
    let calls: Vec<u64> = fleet
        .refresh_tokens
        .iter()
        .map(|t| counters.lwa_calls_for_refresh_token(t))
        .collect();
    let total = counters.lwa_calls("refresh_token");
    let twice: Vec<usize> = (0..CONNECTIONS).filter(|c| calls[*c] == 2).collect();
    eprintln!(
        "{test}: {} vends over {REPLICAS} replicas in {:?} ({:.0} vends/s); replica {DEAD} killed \
         {killed_after:?} in, with {started_at_kill} connections started; {} vends cut by the kill and \
         sent again ({} connections), {} sent to a survivor instead; {} failed {:?}; LWA refresh calls: {total} for \
         {CONNECTIONS} connections (ok: {}); connections by refresh calls: {:?}",
        CONNECTIONS * VENDS_PER_CONNECTION,
        storm.elapsed,
        storm.rate(),
        storm.cut,
        storm.cut_connections.len(),
        storm.rerouted,
        failures.len(),
        kinds(&failures),
        counters.lwa_outcomes("refresh_token", "ok"),
        histogram(&calls),
    );

    // Every connection vends from the survivors.
    assert!(
        failures.is_empty(),
        "every vend answers 200 with a fresh token; {} did not, first: {:?}",
        failures.len(),
        failures.first().map(|(c, why)| (&fleet.ids[*c], why))
    );
    assert!(
        storm.cut + storm.rerouted > 0,
        "the kill fell in the storm ({killed_after:?})"
    );
    // One refresh per connection, except a refresh in flight at the dead replica, taken over
    // by a survivor: a connection with a vend in flight there at the kill (at most as many as
    // connections being vended at once).
    for (c, n) in calls.iter().enumerate() {
        assert!(
            (1..=2).contains(n),
            "{}: refreshed {n} times for one expiry",
            fleet.ids[c]
        );
    }
    for c in &twice {
        assert!(
            storm.cut_connections.contains(c),
            "{} was refreshed twice, but no vend of it was in flight at the dead replica",
            fleet.ids[*c]
        );
    }
    assert!(
        twice.len() <= WORKERS,
        "{} connections refreshed twice; at most {WORKERS} were in flight at the kill",
        twice.len()
    );
    assert_eq!(
        counters.lwa_outcomes("refresh_token", "ok"),
        total,
        "every refresh succeeded at Amazon"
    );
    for (c, t) in tokens.iter().enumerate() {
        assert!(
            t.len() as u64 <= calls[c],
            "{}: {} access tokens given from {} refreshes",
            fleet.ids[c],
            t.len(),
            calls[c]
        );
    }

    // The database holds, for every connection, a fresh access token and the refresh token
    // LWA gave with it (a new one when they rotate).
    let store = lwa_server::state::open_store(&fleet.db).await.unwrap();
    let sealer = lwa_server::sealing::Sealer::new(lwa_seal::Keyring::new(fleet.master.clone()));
    let now_ms = control.clock().await;
    let mut stored = Vec::with_capacity(CONNECTIONS);
    for (id, original) in fleet.ids.iter().zip(&fleet.refresh_tokens) {
        let row = store.connection(id).await.unwrap().unwrap();
        assert_eq!(row.status, "active", "{id}");
        assert!(
            row.access_expires_at_ms.unwrap() > now_ms + BUFFER_S * 1000,
            "{id}: the refreshed token is stored"
        );
        let refresh = sealer
            .open(id, "refresh_token", row.refresh_token.as_deref().unwrap(), None)
            .unwrap();
        assert_eq!(
            *refresh != *original,
            rotating_refresh_tokens,
            "{id}: the refresh token LWA gave last is stored"
        );
        stored.push(refresh.to_string());
    }
    drop(store);

    // Another expiry: every connection vends once from the survivors, each refreshed once
    // with the refresh token the database holds.
    fleet.replicas.remove(DEAD);
    fleet.expire_all().await;
    let after = Instant::now();
    let jobs: Vec<(usize, usize)> = (0..CONNECTIONS).map(|c| (c, c % (REPLICAS - 1))).collect();
    for ((c, r), answer) in jobs.iter().zip(fleet.vend_each(&jobs).await) {
        if let Err(why) = fresh_token(&answer) {
            panic!(
                "vend of {} on survivor {r} after another expiry: {why}",
                fleet.ids[*c]
            );
        }
    }
    let vended_after = after.elapsed();
    tokio::time::sleep(Duration::from_millis(LWA_LATENCY_MS * 5)).await;
    let counters = control.counters().await;
    for (id, token) in fleet.ids.iter().zip(&stored) {
        assert_eq!(
            counters.lwa_calls_for_refresh_token(token),
            1,
            "{id}: its stored refresh token is used, once"
        );
    }
    assert_eq!(counters.lwa_calls("refresh_token"), CONNECTIONS as u64);
    assert_eq!(counters.lwa_outcomes("refresh_token", "ok"), CONNECTIONS as u64);
    eprintln!(
        "{test}: after another expiry the {} survivors vended all {CONNECTIONS} connections in \
         {vended_after:?}, one refresh each with the stored refresh token; refreshed twice in the \
         storm (in flight at the kill, taken over): {}",
        REPLICAS - 1,
        twice.len()
    );
}

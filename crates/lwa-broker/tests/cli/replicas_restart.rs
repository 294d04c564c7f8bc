//! PostgreSQL stopped and started again under load, three `lwa-broker serve` replicas on it:
//! a private cluster made with `initdb` on a port of its own (see [`PrivateCluster`]), so the
//! other tests keep the shared server; skipped, said so, where `initdb` cannot run, unless
//! `LWA_BROKER_REQUIRE_POSTGRES=1`.
//!
//! Load runs the whole time, spread over the replicas: vends of tokens every replica holds in
//! memory, vends of connections the load has not vended before, connection lists, new connect
//! links and audit reads. While the database is down, every request that needs it answers 503
//! `database_unavailable` in the `/v1` JSON shape within a few seconds, and a vend of a token
//! held in memory still answers 200. When it is back, the replicas recover by themselves (no
//! restart) and everything answers 2xx again; no audit record of a token handed out meanwhile
//! is lost, and tokens that expire afterwards are refreshed once each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use fake_amazon::defaults;
use serde_json::{Value, json};

use crate::cluster::PrivateCluster;
use crate::support::{Broker, Cli, field, serve};

const REPLICAS: usize = 3;
/// Connections every replica has vended before the outage (their tokens are in memory) …
const WARM: usize = 20;
/// … and connections the load vends only once the database is down.
const COLD: usize = 20;
/// Requests in flight at once: this many workers for each kind of request.
const WORKERS_PER_KIND: usize = 3;
const WORKERS: usize = WORKERS_PER_KIND * KINDS.len();
/// How long the database stays down (in real time; the broker's clock moves past the API-key
/// cache meanwhile, see [`OUTAGE_CLOCK_S`]).
const DOWN_FOR: Duration = Duration::from_secs(12);
/// How far the broker's clock moves while the database is down: past the API-key cache's
/// lifetime, so every replica has to do without reading its keys — a long outage in seconds.
const OUTAGE_CLOCK_S: i64 = 2 * lwa_server::state::KEY_CACHE_MS / 1000;
/// The longest any answer may take, the database down or not: the pool gives up after 5 s,
/// and a request waits for it at most once.
const MAX_ANSWER: Duration = Duration::from_secs(7);
/// How long the replicas may take to see the database again.
const MAX_RECOVERY: Duration = Duration::from_secs(10);

/// The phases of the test. A request is judged by the phase it was sent and answered in; one
/// that spans two phases may go either way.
const BEFORE: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const RECOVERING: u8 = 3;
const AFTER: u8 = 4;
const DONE: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A token every replica holds in memory.
    CachedVend,
    /// A connection the load had not vended before the outage (a replica holds its token only
    /// if its background refresher took it at start).
    ColdVend,
    /// `GET /v1/connections`.
    List,
    /// `POST /v1/connect-links`.
    Link,
    /// `GET /v1/audit` (writes the replica's pending audit records first).
    Audit,
}

const KINDS: [Kind; 5] = [
    Kind::CachedVend,
    Kind::ColdVend,
    Kind::List,
    Kind::Link,
    Kind::Audit,
];

#[derive(Debug)]
struct Answer {
    kind: Kind,
    replica: usize,
    /// The phase when it was sent and when it came back.
    phases: (u8, u8),
    /// The status, or the transport error.
    status: Result<u16, String>,
    body: Value,
    took: Duration,
}

/// The load's target: replicas, key, connections, and the phase the test is in.
#[derive(Clone)]
struct Load {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    key: String,
    warm: Arc<Vec<String>>,
    cold: Arc<Vec<String>>,
    phase: Arc<AtomicU8>,
}

impl Load {
    async fn send(&self, kind: Kind, replica: usize, n: usize) -> Answer {
        let url = &self.urls[replica];
        let request = match kind {
            Kind::CachedVend => self.http.post(format!(
                "{url}/v1/connections/{}/access-token",
                self.warm[n % WARM]
            )),
            Kind::ColdVend => self.http.post(format!(
                "{url}/v1/connections/{}/access-token",
                self.cold[n % COLD]
            )),
            Kind::List => self.http.get(format!("{url}/v1/connections?limit=10")),
            Kind::Link => self.http.post(format!("{url}/v1/connect-links")).json(&json!({
                "state": format!("s{n}"),
                "redirect_url": "https://restart.example.com/back",
                "region": "na",
            })),
            Kind::Audit => self.http.get(format!("{url}/v1/audit?limit=1")),
        };
        let before = self.phase.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = async {
            let r = request
                .bearer_auth(&self.key)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let text = r.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
        }
        .await;
        let took = started.elapsed();
        let (status, body) = match result {
            Ok((status, body)) => (Ok(status), body),
            Err(e) => (Err(e), Value::Null),
        };
        Answer {
            kind,
            replica,
            phases: (before, self.phase.load(Ordering::SeqCst)),
            status,
            body,
            took,
        }
    }

    /// [`WORKERS_PER_KIND`] workers per kind of request, each sending one after another until
    /// the phase is [`DONE`]; a cold connection is vended only once the database is down.
    fn run(&self) -> tokio::task::JoinHandle<Vec<Answer>> {
        let load = self.clone();
        tokio::spawn(async move {
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let load = load.clone();
                    tokio::spawn(async move {
                        let mut answers = Vec::new();
                        let kind = KINDS[w % KINDS.len()];
                        let mut n = w;
                        while load.phase.load(Ordering::SeqCst) != DONE {
                            if kind == Kind::ColdVend && load.phase.load(Ordering::SeqCst) < DOWN {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            n += WORKERS;
                            answers.push(load.send(kind, n % REPLICAS, n / WORKERS).await);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        answers
                    })
                })
                .collect();
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.unwrap());
            }
            all
        })
    }
}

/// A tenant, [`WARM`] + [`COLD`] imported connections, and three replicas on the cluster.
struct Setup {
    replicas: Vec<Broker>,
    cli: Cli,
    load: Load,
    /// Declared last: the cluster outlives the replicas.
    cluster: PrivateCluster,
}

async fn set_up(test: &str) -> Option<Setup> {
    let cluster = PrivateCluster::start(test)?;
    let db = cluster.url();
    let master = lwa_seal::MasterKey::generate();
    let cli = Cli::start(test)
        .await
        .env("LWA_BROKER_MASTER_KEY", &master.to_base64());
    cli.ok(&["--database", &db, "migrate"]).await;
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "Restart",
            "--redirect-origin",
            "https://restart.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let key = field(&out, "api key");
    let control = cli.fake.control();
    let mut file = String::new();
    for i in 0..WARM + COLD {
        let seller = format!("A1RESTARTSELLER{i:03}");
        let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        file.push_str(
            &json!({"region": "na", "refresh_token": token, "selling_partner_id": seller}).to_string(),
        );
        file.push('\n');
    }
    let path = cli.dir.join("import.jsonl");
    std::fs::write(&path, file).unwrap();
    let out = cli
        .ok(&[
            "--database",
            &db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            path.to_str().unwrap(),
        ])
        .await;
    let mut ids = vec![String::new(); WARM + COLD];
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        ids[v["line"].as_u64().unwrap() as usize - 1] = v["connection_id"].as_str().unwrap().to_owned();
    }
    let cold = ids.split_off(WARM);
    let mut replicas = Vec::new();
    for n in 0..REPLICAS {
        let log = cli.dir.join(format!("replica-{n}.log"));
        replicas.push(serve(&cli, &db, &log, &[("LWA_BROKER_LOG", "info")]).await);
    }
    let load = Load {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        urls: Arc::new(replicas.iter().map(|r| r.url.clone()).collect()),
        key,
        warm: Arc::new(ids),
        cold: Arc::new(cold),
        phase: Arc::new(AtomicU8::new(BEFORE)),
    };
    Some(Setup {
        replicas,
        cli,
        load,
        cluster,
    })
}

/// Requests by kind and status: `kind status×count …`.
fn tally<'a>(answers: impl Iterator<Item = &'a Answer>) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for a in answers {
        let status = match &a.status {
            Ok(s) => s.to_string(),
            Err(_) => "transport-error".into(),
        };
        *counts.entry(format!("{:?} {status}", a.kind)).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ok(a: &Answer) -> bool {
    matches!(a.status, Ok(200 | 201))
}

/// The sum of the `count`s of every `access_token` audit row, read through `replica` (which
/// writes its pending records first).
async fn audited_vends(load: &Load, replica: usize) -> i64 {
    let mut total = 0;
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{}/v1/audit?kind=access_token&limit=1000", load.urls[replica]);
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let r = load.http.get(url).bearer_auth(&load.key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        for row in page["data"].as_array().unwrap() {
            total += row["count"].as_i64().unwrap();
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return total,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_replicas_answer_503_while_it_is_down_and_recover_by_themselves() {
    let Some(mut setup) = set_up("replicas-restart").await else {
        return;
    };
    let load = setup.load.clone();
    let control = setup.cli.fake.control();

    // Every replica holds every warm connection's token.
    let mut vended = 0_i64;
    for replica in 0..REPLICAS {
        for n in 0..WARM {
            let a = load.send(Kind::CachedVend, replica, n).await;
            assert_eq!(a.status, Ok(200), "warming: {:?}", a.body);
            vended += 1;
        }
    }
    let lwa_before = control.counters().await.lwa_calls("refresh_token");

    // Up, then down, then up again, with load the whole time.
    let running = load.run();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped_at = Instant::now();
    load.phase.store(STOPPING, Ordering::SeqCst);
    setup.cluster.stop_server("fast");
    let stop_took = stopped_at.elapsed();
    load.phase.store(DOWN, Ordering::SeqCst);
    tokio::time::sleep(DOWN_FOR / 4).await;
    control.advance_clock(OUTAGE_CLOCK_S as f64).await;
    tokio::time::sleep(DOWN_FOR - DOWN_FOR / 4).await;
    load.phase.store(RECOVERING, Ordering::SeqCst);
    let restarted_at = Instant::now();
    setup.cluster.start_server();
    let start_took = restarted_at.elapsed();
    // Each replica answers a request that needs the database again.
    let mut recovered_after = Vec::new();
    for replica in 0..REPLICAS {
        loop {
            let a = load.send(Kind::List, replica, 0).await;
            if ok(&a) {
                recovered_after.push(restarted_at.elapsed());
                break;
            }
            assert!(
                restarted_at.elapsed() < MAX_RECOVERY,
                "replica {replica} still fails {:?} after the restart: {:?} {}",
                restarted_at.elapsed(),
                a.status,
                a.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    load.phase.store(AFTER, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    load.phase.store(DONE, Ordering::SeqCst);
    let answers = running.await.unwrap();

    let in_phase = |p: u8| answers.iter().filter(move |a| a.phases == (p, p));
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let slowest_down: Vec<String> = KINDS
        .iter()
        .map(|k| {
            let slowest = in_phase(DOWN).filter(|a| a.kind == *k).map(|a| a.took).max();
            format!("{k:?} {:.2} s", slowest.unwrap_or_default().as_secs_f64())
        })
        .collect();
    let cached_down = in_phase(DOWN).filter(|a| a.kind == Kind::CachedVend);
    let (cached_down_ok, cached_down_all) =
        (cached_down.clone().filter(|a| ok(a)).count(), cached_down.count());
    eprintln!(
        "replicas-restart: {} requests by {WORKERS} workers over {REPLICAS} replicas; PostgreSQL \
         stopped in {stop_took:?}, down {DOWN_FOR:?} ({OUTAGE_CLOCK_S} s of the broker's clock), started in {start_took:?}; replicas answering \
         again {recovered_after:?} after the start; slowest answer {slowest:?} (while down: {}); cached vends while down: {cached_down_ok} of {cached_down_all} answered 200\n  before: \
         {}\n  down: {}\n  after: {}",
        answers.len(),
        slowest_down.join(", "),
        tally(in_phase(BEFORE)),
        tally(in_phase(DOWN)),
        tally(in_phase(AFTER)),
    );

    // The processes never went away, and always answered within a few seconds.
    for (n, replica) in setup.replicas.iter_mut().enumerate() {
        assert!(replica.child.try_wait().unwrap().is_none(), "replica {n} exited");
    }
    for a in &answers {
        assert!(a.status.is_ok(), "replica {} did not answer: {a:?}", a.replica);
        assert!(a.took < MAX_ANSWER, "an answer took {:?}: {a:?}", a.took);
    }
    // Up: everything works; down: a clear 503, or a token from memory.
    for a in in_phase(BEFORE).chain(in_phase(AFTER)) {
        assert!(ok(a), "with the database up: {a:?}");
    }
    for a in in_phase(DOWN) {
        if matches!(a.kind, Kind::CachedVend | Kind::ColdVend) && ok(a) {
            continue;
        }
        assert_eq!(a.status, Ok(503), "with the database down: {a:?}");
        assert_eq!(a.body["error"]["code"], "database_unavailable", "{a:?}");
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("database")),
            "{a:?}"
        );
    }
    for kind in KINDS {
        assert!(
            in_phase(DOWN).any(|a| a.kind == kind),
            "{kind:?} was sent while the database was down"
        );
        assert!(
            in_phase(AFTER).any(|a| a.kind == kind && ok(a)),
            "{kind:?} works after the restart"
        );
    }
    assert!(
        in_phase(DOWN).any(|a| a.kind == Kind::CachedVend && ok(a)),
        "tokens held in memory are still vended while the database is down"
    );
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token"),
        lwa_before,
        "no token was refreshed: none had expired"
    );

    // No audit record of a token handed out is lost: every replica writes what it kept
    // pending while the database was down.
    vended += answers
        .iter()
        .filter(|a| matches!(a.kind, Kind::CachedVend | Kind::ColdVend) && ok(a))
        .count() as i64;
    for replica in 0..REPLICAS {
        audited_vends(&load, replica).await;
    }
    assert_eq!(
        audited_vends(&load, 0).await,
        vended,
        "every token handed out is in the audit trail"
    );

    // Tokens that expire now are refreshed, once each, through any replica.
    control.advance_clock(3_700.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let every: Vec<String> = load.warm.iter().chain(load.cold.iter()).cloned().collect();
    let mut slowest_refresh = Duration::ZERO;
    for replica in 0..REPLICAS {
        for id in &every {
            let sent = Instant::now();
            let r = load
                .http
                .post(format!("{}/v1/connections/{id}/access-token", load.urls[replica]))
                .bearer_auth(&load.key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            let body: Value = r.json().await.unwrap();
            assert!(body["expires_in"].as_i64().unwrap() > 300, "{body}");
            slowest_refresh = slowest_refresh.max(sent.elapsed());
        }
    }
    eprintln!("replicas-restart: after the expiry, the slowest vend took {slowest_refresh:?}");
    assert!(
        slowest_refresh < MAX_ANSWER,
        "a vend waited {slowest_refresh:?} for a refresh"
    );
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token") - lwa_before,
        (WARM + COLD) as u64,
        "one refresh per connection after the restart"
    );

    // The logs hold no token.
    for n in 0..REPLICAS {
        let log = std::fs::read_to_string(setup.cli.dir.join(format!("replica-{n}.log"))).unwrap();
        assert!(
            !log.contains("Atza|") && !log.contains("Atzr|"),
            "replica {n}'s log holds a token"
        );
    }
}

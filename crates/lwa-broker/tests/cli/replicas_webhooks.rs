//! Three `lwa-broker serve` replicas on one PostgreSQL schema (skipped, said so, without
//! PostgreSQL unless `LWA_BROKER_REQUIRE_POSTGRES=1`) and a webhook receiver that is down for
//! a simulated hour — first refusing connections, then answering 500 — while events are raised
//! for many connections through all three replicas, then up:
//!
//! - every event reaches every target at least once, none lost (every delivery in the log ends
//!   `delivered` and was answered 2xx by the receiver);
//! - each with a stable id: the `webhook-id` header is the body's `id`, and every attempt of an
//!   event carries the same body, signed with the tenant's secret;
//! - in order per connection and target: an event is first sent only after the one before it
//!   was answered 2xx;
//! - never sent twice at once: the receiver counts the attempts of each event in flight.
//!
//! Half-way through the hour one replica is killed (`kill -9`); the others take over what it
//! had claimed.
//!
//! Events: each connection's grant is revoked at Amazon and its access token expires, so the
//! background refreshers (whichever replica claims it) raise `connection.needs_reauth`; then it
//! is deleted through one of the replicas (`connection.disconnected`). Half of the connections
//! have a `callback_url` too, so their events go to two targets.
//!
//! The broker's clock is the fake's, moved in steps shorter than a delivery's claim (60 s), so
//! an hour passes in seconds without a claim lapsing under an attempt in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use fake_amazon::{RevokeSpec, defaults};
use serde_json::{Value, json};

use crate::support::{Broker, Cli, field, postgres_schema, serve};

const REPLICAS: usize = 3;
const CONNECTIONS: usize = 24;
/// One clock step: shorter than a delivery's claim (60 s of the broker's clock).
const STEP_S: f64 = 50.0;
/// Real time between steps: each replica reads the fake's clock every 100 ms and looks for due
/// deliveries every second.
const STEP_PAUSE: Duration = Duration::from_millis(500);
/// How long the receiver holds each request, so that two attempts of one event at once would
/// overlap at the receiver.
const HOLD: Duration = Duration::from_millis(30);
/// The receiver refuses connections this long (of the broker's clock) …
const REFUSING_S: i64 = 20 * 60;
/// … then answers 500 until the hour is over.
const DOWN_S: i64 = 60 * 60;
/// One replica is killed at this time of the hour.
const KILL_AT_S: i64 = 30 * 60;
/// The replica killed; the others answer the test's requests from then on.
const KILLED: usize = REPLICAS - 1;

const FAILING: u8 = 0;
const UP: u8 = 1;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Receipt {
    path: String,
    header_id: String,
    body: String,
    event: Value,
    /// The receiver's order of events: when it arrived and when it was answered.
    arrived: u64,
    answered: u64,
    status: u16,
    signature_ok: bool,
}

#[derive(Default)]
struct Log {
    tick: u64,
    /// Attempts in flight, per (path, event id).
    in_flight: HashMap<(String, String), u32>,
    /// Attempts of one event that overlapped.
    overlaps: Vec<String>,
    receipts: Vec<Receipt>,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<AtomicU8>,
    log: Arc<Mutex<Log>>,
    secret: Arc<String>,
}

/// One attempt in flight at the receiver; counted out when its handler ends, also when the
/// sender went away mid-request (a killed replica).
struct InFlight {
    log: Arc<Mutex<Log>>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.log.lock().unwrap().in_flight.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

async fn receive(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let body = String::from_utf8(body.to_vec()).unwrap();
    let header_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let key = (uri.path().to_owned(), header_id.clone());
    let arrived = {
        let mut log = r.log.lock().unwrap();
        log.tick += 1;
        let n = log.in_flight.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            let overlap = format!("{} at {}: {n} attempts at once", key.1, key.0);
            log.overlaps.push(overlap);
        }
        log.tick
    };
    let _in_flight = InFlight {
        log: r.log.clone(),
        key: key.clone(),
    };
    tokio::time::sleep(HOLD).await;
    let status = if r.mode.load(Ordering::SeqCst) == UP {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let signature_ok = match (
        headers.get("webhook-timestamp").and_then(|v| v.to_str().ok()),
        headers.get("lwa-broker-signature").and_then(|v| v.to_str().ok()),
    ) {
        (Some(timestamp), Some(signature)) => timestamp.parse::<i64>().is_ok_and(|t| {
            lwa_server::webhooks::SigningSecret::new(r.secret.as_str()).signature_header(t, &body)
                == signature
        }),
        _ => false,
    };
    let mut log = r.log.lock().unwrap();
    log.tick += 1;
    let answered = log.tick;
    log.receipts.push(Receipt {
        path: key.0,
        header_id,
        event: serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
        arrived,
        answered,
        status: status.as_u16(),
        signature_ok,
    });
    status
}

/// Every delivery in the tenant's log, oldest first.
async fn deliveries(http: &reqwest::Client, broker: &Broker, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{}/v1/webhook/deliveries?limit=1000", broker.url);
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let r = http.get(url).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    all.reverse();
    all
}

/// Moves the broker's clock one step and gives the replicas time to act on it.
async fn step(cli: &Cli) -> i64 {
    let now = cli.fake.control().advance_clock(STEP_S).await;
    tokio::time::sleep(STEP_PAUSE).await;
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_receiver_down_for_an_hour_every_event_arrives_once_up_in_order_never_twice_at_once() {
    let Some((db, _schema)) = postgres_schema("replicas-webhooks").await else {
        return;
    };
    let began = Instant::now();
    let master = lwa_seal::MasterKey::generate();
    let cli = Cli::start("replicas-webhooks")
        .await
        .env("LWA_BROKER_MASTER_KEY", &master.to_base64())
        .env("LWA_BROKER_WEBHOOK_ALLOW_PRIVATE", "1");
    let control = cli.fake.control();
    cli.ok(&["--database", &db, "migrate"]).await;
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "Hooks",
            "--redirect-origin",
            "https://hooks.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let key = field(&out, "api key");

    // The receiver's address, with nothing listening on it yet.
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "set-webhook",
            "--tenant",
            &tenant,
            "--url",
            &format!("http://{addr}/tenant"),
        ])
        .await;
    let receiver = Receiver {
        mode: Arc::new(AtomicU8::new(FAILING)),
        log: Arc::default(),
        secret: Arc::new(field(&out, "signing secret")),
    };

    let mut sellers = Vec::new();
    let mut file = String::new();
    for i in 0..CONNECTIONS {
        let seller = format!("A1HOOKSELLER{i:03}");
        let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
        file.push_str(
            &json!({"region": "na", "refresh_token": token, "selling_partner_id": seller}).to_string(),
        );
        file.push('\n');
        sellers.push(seller);
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
    let mut ids = vec![String::new(); CONNECTIONS];
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        ids[v["line"].as_u64().unwrap() as usize - 1] = v["connection_id"].as_str().unwrap().to_owned();
    }

    let mut replicas = Vec::new();
    for n in 0..REPLICAS {
        let log = cli.dir.join(format!("replica-{n}.log"));
        replicas.push(serve(&cli, &db, &log, &[("LWA_BROKER_LOG", "info")]).await);
    }
    let http = reqwest::Client::new();
    // Half the connections also call back their own URL.
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let r = http
            .patch(format!("{}/v1/connections/{id}", replicas[i % REPLICAS].url))
            .bearer_auth(&key)
            .json(&json!({"callback_url": format!("http://{addr}/callback")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    // Amazon forgets every grant, and every access token expires: the replicas' refreshers
    // find each connection needs re-authorization, and say so.
    for seller in &sellers {
        control
            .revoke(RevokeSpec {
                client_id: Some(defaults::SP_API_CLIENT_ID.into()),
                selling_partner_id: Some(seller.clone()),
                ..RevokeSpec::default()
            })
            .await;
    }
    let hour_began = control.advance_clock(3_700.0).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!(
                "{}/v1/connections?status=needs_reauth&limit=100",
                replicas[0].url
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let n = r.json::<Value>().await.unwrap()["data"].as_array().unwrap().len();
        if n == CONNECTIONS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {CONNECTIONS} connections need re-authorization"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The hour: the receiver refuses connections, then answers 500. Meanwhile each connection
    // is deleted through one replica or another.
    let mut server = None;
    let mut killed = false;
    let mut now = hour_began;
    let mut steps = 0;
    while now - hour_began < DOWN_S * 1000 {
        if steps < CONNECTIONS {
            let id = &ids[steps];
            let r = http
                .delete(format!("{}/v1/connections/{id}", replicas[steps % REPLICAS].url))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        if server.is_none() && now - hour_began >= REFUSING_S * 1000 {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let app = Router::new()
                .fallback(axum::routing::any(receive))
                .with_state(receiver.clone());
            server = Some(tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            }));
        }
        if !killed && now - hour_began >= KILL_AT_S * 1000 {
            replicas[KILLED].child.kill().await.unwrap();
            killed = true;
        }
        now = step(&cli).await;
        steps += 1;
    }
    let (attempted_while_down, pending_at_up) = {
        let log = deliveries(&http, &replicas[0], &key).await;
        (
            log.iter().map(|d| d["attempts"].as_i64().unwrap()).sum::<i64>(),
            log.iter().filter(|d| d["state"] == "pending").count(),
        )
    };

    // Up: the clock goes on until every delivery is delivered (retries are at most an hour
    // apart, so within about another hour).
    receiver.mode.store(UP, Ordering::SeqCst);
    let up_at = now;
    let log = loop {
        now = step(&cli).await;
        steps += 1;
        let log = deliveries(&http, &replicas[steps % KILLED], &key).await;
        if log.iter().all(|d| d["state"] != "pending") {
            break log;
        }
        assert!(
            now - up_at < 2 * 3_600_000,
            "still pending two hours after the receiver came up: {:?}",
            log.iter().filter(|d| d["state"] == "pending").collect::<Vec<_>>()
        );
    };
    let all_delivered_after_s = (now - up_at) / 1000;
    // Any attempt still at the receiver ends.
    tokio::time::sleep(HOLD * 10).await;
    let received = receiver.log.lock().unwrap();

    let targets: BTreeMap<&str, usize> = log.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["target"].as_str().unwrap()).or_default() += 1;
        m
    });
    let events: HashSet<&str> = log.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    let by_status = received.receipts.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_insert(0) += 1;
        m
    });
    let mut ok_per_delivery: HashMap<(&str, &str), usize> = HashMap::new();
    for r in received.receipts.iter().filter(|r| r.status < 300) {
        *ok_per_delivery.entry((&r.path, &r.header_id)).or_default() += 1;
    }
    let repeats = ok_per_delivery.values().filter(|n| **n > 1).count();
    eprintln!(
        "replicas-webhooks: {} events for {CONNECTIONS} connections, {} deliveries {targets:?} over \
         {REPLICAS} replicas (one killed {KILL_AT_S} s into the hour); receiver down {DOWN_S} s of the broker's clock ({REFUSING_S} s refusing \
         connections, then 500): {attempted_while_down} attempts recorded meanwhile, {pending_at_up} \
         deliveries pending when it came up, all delivered {all_delivered_after_s} s later; receiver \
         got {} requests by status {by_status:?}, {repeats} deliveries answered 2xx more than once, \
         {} overlapping attempts; {steps} clock steps of {STEP_S} s, {:?} in all",
        events.len(),
        log.len(),
        received.receipts.len(),
        received.overlaps.len(),
        began.elapsed()
    );

    assert!(
        received.overlaps.is_empty(),
        "an event was sent twice at once: {:?}",
        received.overlaps
    );
    assert_eq!(
        events.len(),
        2 * CONNECTIONS,
        "a needs_reauth and a disconnected event each"
    );
    assert_eq!(
        log.len(),
        2 * CONNECTIONS + CONNECTIONS,
        "callback targets for half of them"
    );
    for r in &received.receipts {
        assert_eq!(
            r.event["id"],
            r.header_id.as_str(),
            "the header names the body's event"
        );
        assert!(
            r.signature_ok,
            "every attempt is signed with the tenant's secret: {r:?}"
        );
    }
    // Stable: every attempt of an event carries the same body.
    let mut bodies: HashMap<&str, &str> = HashMap::new();
    for r in &received.receipts {
        let first = bodies.entry(&r.header_id).or_insert(&r.body);
        assert_eq!(
            *first, r.body,
            "every attempt of {} carries one body",
            r.header_id
        );
    }
    // None lost: every delivery was answered 2xx at its target.
    for d in &log {
        assert_eq!(d["state"], "delivered", "{d}");
        let path = match d["target"].as_str().unwrap() {
            "tenant" => "/tenant",
            _ => "/callback",
        };
        let event_id = d["event_id"].as_str().unwrap();
        assert!(
            ok_per_delivery.contains_key(&(path, event_id)),
            "{event_id} reached {path}"
        );
    }
    // In order: per connection and target, an event is first sent after the one before it was
    // answered 2xx.
    let mut order: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for d in &log {
        let k = (
            d["connection_id"].as_str().unwrap().to_owned(),
            d["target"].as_str().unwrap().to_owned(),
        );
        order.entry(k).or_default().push(d);
    }
    for ((connection, target), ds) in &order {
        let kinds: Vec<&str> = ds.iter().map(|d| d["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["connection.needs_reauth", "connection.disconnected"],
            "{connection} {target}"
        );
        let path = if target == "tenant" {
            "/tenant"
        } else {
            "/callback"
        };
        for pair in ds.windows(2) {
            let (earlier, later) = (
                pair[0]["event_id"].as_str().unwrap(),
                pair[1]["event_id"].as_str().unwrap(),
            );
            let earlier_ok = received
                .receipts
                .iter()
                .filter(|r| r.path == path && r.header_id == earlier && r.status < 300)
                .map(|r| r.answered)
                .min()
                .unwrap();
            let later_first = received
                .receipts
                .iter()
                .filter(|r| r.path == path && r.header_id == later)
                .map(|r| r.arrived)
                .min()
                .unwrap();
            assert!(
                earlier_ok < later_first,
                "{connection} at {path}: {later} was sent before {earlier} was delivered"
            );
        }
    }
    drop(received);
    if let Some(server) = server {
        server.abort();
    }
}

//! `kill -9` of `lwa-broker serve` after a change that raises a webhook and before its
//! delivery: after a restart on the same database the event still arrives, with its id and a
//! signature that checks against the secret `tenants set-webhook` printed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use fake_amazon::defaults;
use serde_json::{Value, json};

use crate::support::{Broker, Cli, field, serve};

type Inbox = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on `addr` that records every request and answers 204.
async fn receive_on(addr: SocketAddr, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    async fn record(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> axum::http::StatusCode {
        inbox
            .lock()
            .unwrap()
            .push((headers, String::from_utf8(body.to_vec()).unwrap()));
        axum::http::StatusCode::NO_CONTENT
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = Router::new()
        .fallback(axum::routing::any(record))
        .with_state(inbox);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn deliveries(http: &reqwest::Client, broker: &Broker, key: &str) -> Vec<Value> {
    let r = http
        .get(format!("{}/v1/webhook/deliveries", broker.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn kill_9_between_the_change_and_its_delivery_still_delivers_the_event_after_restart() {
    let master = lwa_seal::MasterKey::generate();
    let cli = Cli::start("webhooks")
        .await
        .env("LWA_BROKER_MASTER_KEY", &master.to_base64())
        .env("LWA_BROKER_WEBHOOK_ALLOW_PRIVATE", "1");
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
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
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hook_url = format!("http://{addr}/hooks");
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "set-webhook",
            "--tenant",
            &tenant,
            "--url",
            &hook_url,
        ])
        .await;
    assert_eq!(field(&out, "webhook url"), hook_url);
    let secret = field(&out, "signing secret");
    assert!(secret.starts_with("whsec_"), "{out}");
    // Set again: the secret stays and is not shown; bad URLs are refused with the reason.
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "set-webhook",
            "--tenant",
            &tenant,
            "--url",
            &hook_url,
            "--json",
        ])
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"tenant_id": tenant, "url": hook_url})
    );
    let bad = cli
        .run(&[
            "--database",
            &db,
            "tenants",
            "set-webhook",
            "--tenant",
            &tenant,
            "--url",
            "ftp://x.example.com/h",
        ])
        .await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("http or https"), "{}", bad.stderr);
    let unknown = cli
        .run(&[
            "--database",
            &db,
            "tenants",
            "set-webhook",
            "--tenant",
            "ten_nope",
            "--url",
            &hook_url,
        ])
        .await;
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no tenant ten_nope"),
        "{}",
        unknown.stderr
    );

    // A connection, imported.
    let token = cli
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, "A1HOOKSKILLED")
        .await;
    let file = cli.dir.join("import.jsonl");
    std::fs::write(
        &file,
        json!({"region": "na", "refresh_token": token, "selling_partner_id": "A1HOOKSKILLED"}).to_string(),
    )
    .unwrap();
    let out = cli
        .ok(&[
            "--database",
            &db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            file.to_str().unwrap(),
        ])
        .await;
    let id = serde_json::from_str::<Value>(out.lines().next().unwrap()).unwrap()["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The change: a disconnect. The receiver is down, so its event is not delivered; once the
    // worker has tried and failed, the server is killed.
    let broker = serve(
        &cli,
        &db,
        &cli.dir.join("serve-1.log"),
        &[("LWA_BROKER_LOG", "debug")],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .delete(format!("{}/v1/connections/{id}", broker.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = deliveries(&http, &broker, &key).await;
        assert_eq!(log.len(), 1, "{log:?}");
        if log[0]["attempts"].as_i64().unwrap() >= 1 {
            assert_eq!(log[0]["state"], "pending");
            assert_eq!(log[0]["last_error"], "could not connect to the receiver");
            break;
        }
        assert!(Instant::now() < deadline, "the worker never tried: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut broker = broker;
    broker.child.kill().await.unwrap();
    let event_id = {
        let store = lwa_server::state::open_store(&db).await.unwrap();
        let pending = store
            .webhook_deliveries(&lwa_store::DeliveryFilter::default())
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].state, "pending");
        assert_eq!(pending[0].event_type, "connection.disconnected");
        assert_eq!(
            store.connection(&id).await.unwrap().unwrap().status,
            "disconnected"
        );
        pending[0].event_id.clone()
    };

    // The receiver comes up; the server restarts on the same database; the retry comes due.
    let inbox: Inbox = Arc::default();
    let _receiver = receive_on(addr, inbox.clone()).await;
    let broker = serve(
        &cli,
        &db,
        &cli.dir.join("serve-2.log"),
        &[("LWA_BROKER_LOG", "debug")],
    )
    .await;
    cli.fake.control().advance_clock(120.0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the event never arrived after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (headers, body) = inbox.lock().unwrap()[0].clone();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["id"], event_id.as_str());
    assert_eq!(event["type"], "connection.disconnected");
    assert_eq!(event["tenant_id"], tenant.as_str());
    assert_eq!(event["connection"]["id"], id.as_str());
    assert_eq!(event["connection"]["status"], "disconnected");
    assert_eq!(headers["webhook-id"], event_id.as_str());
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected =
        lwa_server::webhooks::SigningSecret::new(secret.as_str()).signature_header(timestamp, &body);
    assert_eq!(headers["lwa-broker-signature"], expected.as_str());

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = deliveries(&http, &broker, &key).await;
        if log[0]["state"] == "delivered" {
            assert!(log[0]["attempts"].as_i64().unwrap() >= 2, "{log:?}");
            assert_eq!(log[0]["last_status"], 204);
            break;
        }
        assert!(Instant::now() < deadline, "not recorded as delivered: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(inbox.lock().unwrap().len(), 1, "delivered once");

    // The servers' debug logs never held the signing secret.
    for log in ["serve-1.log", "serve-2.log"] {
        let text = std::fs::read_to_string(cli.dir.join(log)).unwrap();
        assert!(
            text.contains("DEBUG") || text.contains("debug"),
            "{log} is at debug level"
        );
        assert!(!text.contains(&secret), "{log} holds the signing secret");
    }
}

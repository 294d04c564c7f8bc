//! Webhooks over HTTP: a real receiver (an axum server on 127.0.0.1) gets the connection
//! events raised by onboarding, re-authorization, `invalid_grant` and disconnect, signed as the
//! README says (the README's own Python and openssl recipes check them); a receiver down for a
//! simulated hour gets every event afterwards, in order; internal addresses are refused; the
//! delivery log and retry work over HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use fake_amazon::RevokeSpec;
use fake_amazon::browser::Choice;
use fake_amazon::defaults;
use lwa_server::webhooks::worker::run_once;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn, spawn_with};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// A webhook receiver on 127.0.0.1 that records what it gets; it can answer another status,
/// or be stopped and started again on the same port.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            shared: Arc::new(Shared {
                status: AtomicU16::new(204),
                ..Shared::default()
            }),
            running: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .fallback(axum::routing::any(record))
            .with_state(self.shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        *self.running.lock().unwrap() = Some((tx, task));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every request with this status from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection: attempts now fail to connect.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((tx, task)) = running {
            let _ = tx.send(());
            task.await.unwrap();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The received events of this type, as JSON.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.received()
            .iter()
            .map(Received::json)
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

/// Runs the delivery worker until `done` holds (the background worker may be sending too).
pub async fn deliver_until(app: &TestApp, what: &str, done: impl Fn() -> bool) {
    until(app, what, async || done()).await;
}

/// [`deliver_until`] with a condition that reads the database.
async fn until(app: &TestApp, what: &str, done: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        run_once(&app.state).await;
        if done().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tenant's deliveries as stored, oldest first.
async fn stored(app: &TestApp) -> Vec<lwa_store::WebhookDelivery> {
    let mut all = app
        .state
        .store
        .webhook_deliveries(&lwa_store::DeliveryFilter {
            tenant_id: Some(app.tenant_id.clone()),
            limit: 1000,
            ..lwa_store::DeliveryFilter::default()
        })
        .await
        .unwrap();
    all.reverse();
    all
}

/// Until every delivery was attempted at least once (or is no longer pending).
async fn until_attempted(app: &TestApp) {
    until(app, "an attempt at every delivery", async || {
        stored(app)
            .await
            .iter()
            .all(|d| d.attempts >= 1 || d.state != "pending")
    })
    .await;
}

async fn call(app: &TestApp, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.url),
        )
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Sets the tenant's webhook URL; the signing secret it creates.
pub async fn set_webhook(app: &TestApp, url: &str) -> String {
    let (status, body) = call(app, "PUT", "/v1/webhook", &app.key, Some(json!({"url": url}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], url);
    body["signing_secret"]
        .as_str()
        .expect("a new signing secret")
        .to_owned()
}

/// Onboards `seller` through a connect link and the fake's consent page, claiming with
/// `callback_url`; the connection.
async fn onboard(app: &TestApp, seller: &str, callback_url: Option<&str>) -> Value {
    let link = app
        .connect_link(json!({"region": "na", "state": "s1", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::ApproveAs(seller.into())).await;
    let mut claim = json!({"code": landing.q["code"]});
    if let Some(url) = callback_url {
        claim["callback_url"] = json!(url);
    }
    let (status, body) = call(app, "POST", "/v1/claims", &app.key, Some(claim)).await;
    assert_eq!(status, 200, "{body}");
    body["connection"].clone()
}

/// Re-authorizes a connection through a re-authorization link.
async fn reauthorize(app: &TestApp, id: &str, seller: &str) {
    let (status, body) = call(
        app,
        "POST",
        &format!("/v1/connections/{id}/reauthorize-link"),
        &app.key,
        Some(json!({"redirect_url": RETURN, "state": "again"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let landing = app
        .through_consent(body["url"].as_str().unwrap(), Choice::ApproveAs(seller.into()))
        .await;
    assert_eq!(landing.q["seller_id"], id);
}

/// Checks the shape every event has and that it carries no token.
fn assert_event(e: &Value, kind: &str, tenant: &str, connection: &str, status: &str) {
    assert_eq!(e["type"], kind, "{e}");
    assert!(e["id"].as_str().unwrap().starts_with("evt_"), "{e}");
    assert_eq!(e["tenant_id"], tenant, "{e}");
    assert_eq!(e["connection"]["id"], connection, "{e}");
    assert_eq!(e["connection"]["status"], status, "{e}");
    assert_eq!(e["connection"]["api"], "sp-api");
    assert_eq!(e["connection"]["region"], "na");
    assert!(
        lwa_server::time::parse_rfc3339(e["created_at"].as_str().unwrap()).is_some(),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        !text.contains("Atza|") && !text.contains("Atzr|") && !text.contains("lwa1."),
        "{text}"
    );
}

/// The code block of `lang` in the README's Webhooks section.
fn readme_block(lang: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("### Webhooks").expect("a Webhooks section")..];
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).unwrap_or_else(|| panic!("a {lang} block")) + fence.len();
    section[start..start + section[start..].find("```").unwrap()].to_owned()
}

/// Checks a request's signature with the README's Python recipe; true when it says so.
fn python_verifies(secret: &str, r: &Received, now: i64) -> bool {
    let dir = std::env::temp_dir().join(format!("lwa-webhook-verify-{}", lwa_server::ids::new_id("v")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("body.json"), &r.body).unwrap();
    let headers = json!({
        "webhook-id": r.header("webhook-id"),
        "webhook-timestamp": r.header("webhook-timestamp"),
        "lwa-broker-signature": r.header("lwa-broker-signature"),
    });
    std::fs::write(dir.join("headers.json"), headers.to_string()).unwrap();
    let script = format!(
        "{}\nimport json, sys\nbody = open('body.json', 'rb').read()\nheaders = json.load(open('headers.json'))\n\
         print('valid' if verify(sys.argv[1], headers, body, now=float(sys.argv[2])) else 'invalid')\n",
        readme_block("python")
    );
    std::fs::write(dir.join("verify.py"), script).unwrap();
    let python = std::env::var("LWA_BROKER_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args(["verify.py", secret, &now.to_string()])
        .current_dir(&dir)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stdout == "valid"
}

/// The hex the README's openssl one-liner prints for a request.
fn openssl_signature(secret: &str, r: &Received) -> String {
    let dir = std::env::temp_dir().join(format!("lwa-webhook-openssl-{}", lwa_server::ids::new_id("v")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("body.json"), &r.body).unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_block("sh")])
        .env("SECRET", secret)
        .env("TIMESTAMP", r.header("webhook-timestamp"))
        .current_dir(&dir)
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `v1=` of the signature header.
fn v1(r: &Received) -> String {
    r.header("lwa-broker-signature")
        .split(',')
        .find_map(|p| p.strip_prefix("v1="))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn events_are_signed_as_the_readme_says_and_its_recipes_check_them() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    // No webhook yet: nothing to show, no secret.
    let (status, body) = call(&app, "GET", "/v1/webhook", &app.key, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"url": null, "signing_secret_set": false}))
    );
    let secret = set_webhook(&app, &receiver.url("/hooks")).await;
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    // Setting it again keeps the secret, and does not show it.
    let (status, body) = call(
        &app,
        "PUT",
        "/v1/webhook",
        &app.key,
        Some(json!({"url": receiver.url("/hooks")})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"url": receiver.url("/hooks"), "signing_secret_set": true})
    );

    let c = onboard(&app, "A1WEBHOOKSIGNED", None).await;
    deliver_until(&app, "connection.authorized", || !receiver.received().is_empty()).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/hooks");
    assert_eq!(r.header("content-type"), "application/json");
    let event = r.json();
    assert_event(
        &event,
        "connection.authorized",
        &app.tenant_id,
        c["id"].as_str().unwrap(),
        "active",
    );
    assert_eq!(event["connection"]["selling_partner_id"], "A1WEBHOOKSIGNED");
    assert_eq!(r.header("webhook-id"), event["id"]);
    let timestamp: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        r.header("lwa-broker-signature"),
        format!("t={timestamp},v1={}", v1(r))
    );
    let now_s = app.state.now_ms() / 1000;
    assert!((now_s - timestamp).abs() < 60, "{timestamp} vs {now_s}");

    // The README's recipes, run as written: Python accepts it, openssl computes the same hex.
    assert!(python_verifies(&secret, r, now_s));
    assert_eq!(openssl_signature(&secret, r), v1(r));
    // And both refuse what is not the broker's: another secret, a changed body, an old time.
    assert!(!python_verifies("whsec_not-the-secret", r, now_s));
    let tampered = Received {
        body: r.body.replace("A1WEBHOOKSIGNED", "A1WEBHOOKFORGED"),
        ..r.clone()
    };
    assert!(!python_verifies(&secret, &tampered, now_s));
    assert_ne!(openssl_signature(&secret, &tampered), v1(r));
    assert!(!python_verifies(&secret, r, now_s + 3600));

    // A rotated secret signs what comes next; the old one no longer verifies.
    let (status, rotated) = call(&app, "POST", "/v1/webhook/rotate-secret", &app.key, None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let (status, _) = call(
        &app,
        "DELETE",
        &format!("/v1/connections/{}", c["id"].as_str().unwrap()),
        &app.key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    deliver_until(&app, "connection.disconnected", || receiver.received().len() == 2).await;
    let r = &receiver.received()[1];
    assert_eq!(r.json()["type"], "connection.disconnected");
    let now_s = app.state.now_ms() / 1000;
    assert!(python_verifies(&new_secret, r, now_s));
    assert!(!python_verifies(&secret, r, now_s));
    assert_eq!(openssl_signature(&new_secret, r), v1(r));
}

#[tokio::test]
async fn authorization_reauthorization_and_disconnect_reach_the_tenant_and_the_callback() {
    let app = spawn().await;
    let hooks = Receiver::start().await;
    let callbacks = Receiver::start().await;
    set_webhook(&app, &hooks.url("/tenant")).await;

    // The callback URL comes with the claim, after the authorization's event was written: it
    // gets that event too.
    let c = onboard(&app, "A1WEBHOOKLIFE", Some(&callbacks.url("/cb"))).await;
    let id = c["id"].as_str().unwrap().to_owned();
    deliver_until(&app, "the authorization at both", || {
        hooks.received().len() == 1 && callbacks.received().len() == 1
    })
    .await;
    let at_tenant = hooks.received()[0].json();
    let at_callback = callbacks.received()[0].json();
    assert_event(&at_tenant, "connection.authorized", &app.tenant_id, &id, "active");
    assert_eq!(at_tenant, at_callback, "the same event, the same body");
    assert_eq!(callbacks.received()[0].path, "/cb");
    assert_eq!(at_tenant["data"]["origin"], "connect_link");

    // Re-authorized through a link: both again.
    reauthorize(&app, &id, "A1WEBHOOKLIFE").await;
    deliver_until(&app, "the re-authorization at both", || {
        hooks.received().len() == 2 && callbacks.received().len() == 2
    })
    .await;
    let e = hooks.received()[1].json();
    assert_event(&e, "connection.reauthorized", &app.tenant_id, &id, "active");
    assert_eq!(e["data"]["previous_status"], "active");
    assert_eq!(callbacks.received()[1].json(), e);

    // Disconnected: both, once, even when asked twice.
    for _ in 0..2 {
        let (status, body) = call(&app, "DELETE", &format!("/v1/connections/{id}"), &app.key, None).await;
        assert_eq!(status, 200, "{body}");
    }
    deliver_until(&app, "the disconnect at both", || {
        hooks.received().len() == 3 && callbacks.received().len() == 3
    })
    .await;
    run_once(&app.state).await;
    assert_eq!(hooks.received().len(), 3);
    let e = hooks.received()[2].json();
    assert_event(&e, "connection.disconnected", &app.tenant_id, &id, "disconnected");
    assert_eq!(callbacks.received()[2].json(), e);
    let ids: Vec<Value> = hooks.received().iter().map(|r| r.json()["id"].clone()).collect();
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 3);

    // Another tenant's connection raises nothing here.
    let (_, b_key) = app.other_tenant().await;
    let (status, log) = call(&app, "GET", "/v1/webhook/deliveries", &b_key, None).await;
    assert_eq!((status, log["data"].as_array().unwrap().len()), (200, 0), "{log}");
}

#[tokio::test]
async fn invalid_grant_raises_needs_reauth_once_and_reauthorizing_brings_it_back() {
    let app = spawn().await;
    let hooks = Receiver::start().await;
    set_webhook(&app, &hooks.url("/hooks")).await;
    let c = onboard(&app, "A1WEBHOOKREVOKED", None).await;
    let id = c["id"].as_str().unwrap().to_owned();
    deliver_until(&app, "the authorization", || hooks.received().len() == 1).await;

    app.fake
        .control()
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: Some("A1WEBHOOKREVOKED".into()),
            ..RevokeSpec::default()
        })
        .await;
    app.advance(3700.0).await;
    let vend = format!("/v1/connections/{id}/access-token");
    let (status, body) = call(&app, "POST", &vend, &app.key, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("needs_reauth")),
        "{body}"
    );
    deliver_until(&app, "connection.needs_reauth", || hooks.received().len() == 2).await;
    let e = hooks.received()[1].json();
    assert_event(&e, "connection.needs_reauth", &app.tenant_id, &id, "needs_reauth");
    assert_eq!(e["data"]["reason"], "invalid_grant");
    assert!(
        e["connection"]["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{e}"
    );

    // Further vends: refused, and silence.
    for _ in 0..5 {
        let (status, _) = call(&app, "POST", &vend, &app.key, None).await;
        assert_eq!(status, 409);
    }
    app.advance(120.0).await;
    run_once(&app.state).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run_once(&app.state).await;
    assert_eq!(
        hooks.events("connection.needs_reauth").len(),
        1,
        "{:?}",
        hooks.received()
    );
    assert_eq!(hooks.received().len(), 2);

    // The seller authorizes again: active, with a webhook.
    reauthorize(&app, &id, "A1WEBHOOKREVOKED").await;
    deliver_until(&app, "connection.reauthorized", || hooks.received().len() == 3).await;
    let e = hooks.received()[2].json();
    assert_event(&e, "connection.reauthorized", &app.tenant_id, &id, "active");
    assert_eq!(e["data"]["previous_status"], "needs_reauth");
    assert_eq!(e["connection"]["last_error"], Value::Null);
    let (status, _) = call(&app, "POST", &vend, &app.key, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_receiver_down_for_an_hour_then_up_gets_every_event_in_order() {
    let app = spawn().await;
    let hooks = Receiver::start().await;
    set_webhook(&app, &hooks.url("/hooks")).await;
    hooks.stop().await;

    // Three connections, each authorized, re-authorized and disconnected while it is down.
    let mut expected: Vec<(String, Vec<&str>)> = Vec::new();
    for seller in ["A1WEBHOOKDOWN1", "A1WEBHOOKDOWN2", "A1WEBHOOKDOWN3"] {
        let c = onboard(&app, seller, None).await;
        let id = c["id"].as_str().unwrap().to_owned();
        reauthorize(&app, &id, seller).await;
        let (status, _) = call(&app, "DELETE", &format!("/v1/connections/{id}"), &app.key, None).await;
        assert_eq!(status, 200);
        expected.push((
            id,
            vec![
                "connection.authorized",
                "connection.reauthorized",
                "connection.disconnected",
            ],
        ));
    }
    // An hour of failures, in 5-minute steps.
    for _ in 0..12 {
        app.advance(300.0).await;
        run_once(&app.state).await;
    }
    assert!(hooks.received().is_empty());
    let (status, log) = call(&app, "GET", "/v1/webhook/deliveries?limit=1000", &app.key, None).await;
    assert_eq!(status, 200);
    let log = log["data"].as_array().unwrap().clone();
    assert_eq!(log.len(), 9);
    for d in &log {
        assert_eq!(d["state"], "pending", "{d}");
        if d["type"] == "connection.authorized" {
            // The first of each connection was tried again and again, with growing gaps.
            let attempts = d["attempts"].as_i64().unwrap();
            assert!((5..=10).contains(&attempts), "{d}");
            assert_eq!(d["last_status"], Value::Null);
            assert_eq!(d["last_error"], "could not connect to the receiver", "{d}");
        } else {
            // The later ones wait behind it.
            assert_eq!(d["attempts"], 0, "{d}");
        }
    }

    // Up again: after the next retry comes due, everything arrives.
    hooks.restart().await;
    app.advance(4500.0).await;
    deliver_until(&app, "every event", || hooks.received().len() >= 9).await;
    let got = hooks.received();
    assert_eq!(got.len(), 9, "each event once");
    for (id, kinds) in &expected {
        let mine: Vec<Value> = got
            .iter()
            .map(Received::json)
            .filter(|e| e["connection"]["id"] == id.as_str())
            .collect();
        assert_eq!(
            mine.iter()
                .map(|e| e["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            *kinds,
            "in order for {id}"
        );
    }
    // Each with its stable id: the one in the log, the header and the body agree.
    let (_, log) = call(
        &app,
        "GET",
        "/v1/webhook/deliveries?state=delivered&limit=1000",
        &app.key,
        None,
    )
    .await;
    let log = log["data"].as_array().unwrap().clone();
    assert_eq!(log.len(), 9);
    for r in &got {
        let e = r.json();
        assert_eq!(r.header("webhook-id"), e["id"]);
        let entry = log.iter().find(|d| d["event_id"] == e["id"]).expect("in the log");
        assert_eq!(entry["event"], e);
        assert_eq!(entry["last_status"], 204);
    }
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let app = spawn_with(|s| s.webhook_allow_private = false).await;
    let hooks = Receiver::start().await;
    for (url, why) in [
        (hooks.url("/hooks"), "internal address"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "internal address",
        ),
        ("http://10.0.0.7/h".to_owned(), "internal address"),
        ("http://[::1]:9/h".to_owned(), "internal address"),
        ("ftp://hooks.example.com/h".to_owned(), "http or https"),
        ("not a url".to_owned(), "absolute http(s) URL"),
        (
            "https://user:pw@hooks.example.com/h".to_owned(),
            "user name or password",
        ),
    ] {
        let (status, body) = call(&app, "PUT", "/v1/webhook", &app.key, Some(json!({"url": url}))).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_url", "{url}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{url}: {body}"
        );
    }
    let (_, body) = call(&app, "GET", "/v1/webhook", &app.key, None).await;
    assert_eq!(body["url"], Value::Null);

    // A name is checked when the request goes out: localhost resolves to loopback only.
    let by_name = format!("http://localhost:{}/hooks", hooks.addr.port());
    set_webhook(&app, &by_name).await;
    onboard(&app, "A1WEBHOOKINTERNAL", None).await;
    until_attempted(&app).await;
    let (_, log) = call(&app, "GET", "/v1/webhook/deliveries", &app.key, None).await;
    let d = &log["data"][0];
    assert_eq!(d["url"], by_name.as_str());
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["state"], "pending");
    assert_eq!(
        d["last_error"],
        "refused: localhost resolves only to internal addresses, which webhooks may not reach"
    );
    // A callback URL with an internal IP (accepted as a callback URL) is refused at delivery.
    let c = onboard(&app, "A1WEBHOOKINTERNAL2", Some(&hooks.url("/cb"))).await;
    until_attempted(&app).await;
    let (_, log) = call(
        &app,
        "GET",
        &format!(
            "/v1/webhook/deliveries?connection_id={}",
            c["id"].as_str().unwrap()
        ),
        &app.key,
        None,
    )
    .await;
    let callback = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "callback")
        .expect("a delivery to the callback")
        .clone();
    assert_eq!(
        callback["last_error"],
        "refused: 127.0.0.1 is an internal address, which webhooks may not reach"
    );
    assert!(hooks.received().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn the_delivery_log_pages_and_a_failed_delivery_is_retried_over_http() {
    let app = spawn().await;
    let hooks = Receiver::start().await;
    hooks.answer(500);
    set_webhook(&app, &hooks.url("/hooks")).await;
    let first = onboard(&app, "A1WEBHOOKLOG1", None).await;
    let second = onboard(&app, "A1WEBHOOKLOG2", None).await;
    until_attempted(&app).await;
    assert_eq!(stored(&app).await.len(), 2);
    let (_, log) = call(&app, "GET", "/v1/webhook/deliveries", &app.key, None).await;
    for d in log["data"].as_array().unwrap() {
        assert_eq!(
            (d["state"].as_str(), d["last_status"].as_i64()),
            (Some("pending"), Some(500)),
            "{d}"
        );
        assert_eq!(d["last_error"], "the receiver answered HTTP 500");
        assert!(d["next_attempt_at"].is_string(), "{d}");
    }
    // 24 hours of 500s: given up.
    app.advance(25.0 * 3600.0).await;
    until(&app, "both given up", async || {
        stored(&app).await.iter().all(|d| d.state == "failed")
    })
    .await;
    let (status, log) = call(&app, "GET", "/v1/webhook/deliveries?state=failed", &app.key, None).await;
    assert_eq!(status, 200);
    let failed = log["data"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 2, "{log}");
    assert!(failed.iter().all(|d| d["next_attempt_at"].is_null()));

    // Paging, newest first.
    let (_, page1) = call(&app, "GET", "/v1/webhook/deliveries?limit=1", &app.key, None).await;
    assert_eq!(page1["data"][0]["connection_id"], second["id"]);
    let before = page1["next_before"].as_i64().unwrap();
    let (_, page2) = call(
        &app,
        "GET",
        &format!("/v1/webhook/deliveries?limit=1&before={before}"),
        &app.key,
        None,
    )
    .await;
    assert_eq!(page2["data"][0]["connection_id"], first["id"]);
    let (_, page3) = call(
        &app,
        "GET",
        &format!("/v1/webhook/deliveries?limit=1&before={}", page2["next_before"]),
        &app.key,
        None,
    )
    .await;
    assert_eq!(page3, json!({"data": [], "next_before": null}));
    for bad in ["state=lost", "limit=0", "limit=1001", "before=x", "color=red"] {
        let (status, body) = call(
            &app,
            "GET",
            &format!("/v1/webhook/deliveries?{bad}"),
            &app.key,
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }

    // Another tenant sees none of it and cannot retry it.
    let target = failed[0]["id"].as_i64().unwrap();
    let retry = format!("/v1/webhook/deliveries/{target}/retry");
    let (_, b_key) = app.other_tenant().await;
    let (status, body) = call(&app, "POST", &retry, &b_key, None).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": {"code": "not_found", "message": format!("no delivery {target}")}})
        )
    );
    for missing in ["999999", "abc", "-1"] {
        let (status, _) = call(
            &app,
            "POST",
            &format!("/v1/webhook/deliveries/{missing}/retry"),
            &app.key,
            None,
        )
        .await;
        assert_eq!(status, 404, "{missing}");
    }

    // The receiver works again; the tenant retries one.
    hooks.answer(200);
    let before = hooks.received().len();
    let (status, body) = call(&app, "POST", &retry, &app.key, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending");
    // The retry wakes the background worker, which may send it before this test's pass does:
    // wait for the attempt to be recorded, not for the receiver to have it.
    until(&app, "the retried delivery", async || {
        stored(&app)
            .await
            .iter()
            .any(|d| d.id == target && d.state == "delivered")
    })
    .await;
    assert_eq!(hooks.received().len(), before + 1, "sent once");
    let (_, d) = call(
        &app,
        "GET",
        "/v1/webhook/deliveries?state=delivered",
        &app.key,
        None,
    )
    .await;
    let d = &d["data"][0];
    assert_eq!(d["id"], target);
    assert_eq!(d["last_status"], 200);
    assert!(d["attempts"].as_i64().unwrap() >= 2, "{d}");
    assert_eq!(hooks.received().last().unwrap().json()["id"], d["event_id"]);
    // Delivered: not retried again.
    let (status, body) = call(&app, "POST", &retry, &app.key, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_failed");
    // The other stays failed.
    let (_, still) = call(&app, "GET", "/v1/webhook/deliveries?state=failed", &app.key, None).await;
    assert_eq!(still["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn removing_the_webhook_url_stops_new_deliveries() {
    let app = spawn().await;
    let hooks = Receiver::start().await;
    set_webhook(&app, &hooks.url("/hooks")).await;
    let (status, body) = call(&app, "PUT", "/v1/webhook", &app.key, Some(json!({"url": null}))).await;
    assert_eq!(
        (status, body),
        (200, json!({"url": null, "signing_secret_set": true}))
    );
    onboard(&app, "A1WEBHOOKNOURL", None).await;
    run_once(&app.state).await;
    let (_, log) = call(&app, "GET", "/v1/webhook/deliveries", &app.key, None).await;
    assert_eq!(log["data"], json!([]));
    assert!(hooks.received().is_empty());
}

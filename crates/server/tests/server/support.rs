//! `spawn()`: a fake Amazon, a broker on port 0 with a fresh SQLite file and master key, and a
//! tenant with a key. Logs of the whole process are captured at debug level for leak checks.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppKind, AppSpec, FakeAmazon, FakeConfig, defaults};
use lwa_server::admin::{NewTenant, create_key, create_tenant};
use lwa_server::config::{Overrides, Settings};
use lwa_server::{AppState, Application};
use reqwest::header::LOCATION;
use serde_json::Value;

/// Everything the process logged (debug and above), for leak checks.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);
impl Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let writer = BufWriter(log_buffer().clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
    });
}

pub const ORIGIN: &str = "https://tenant.example.com/oauth";
pub const RETURN: &str = "https://tenant.example.com/oauth/callback";

pub struct TestApp {
    pub url: String,
    /// The metrics listener, when the settings asked for one.
    pub metrics_url: Option<String>,
    pub fake: FakeAmazon,
    pub state: AppState,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    pub tenant_id: String,
    pub key: String,
    /// What the broker was built with (another broker on the same database and key can be
    /// built from it).
    pub settings: Settings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

/// Spawns with a hook to change the settings before build.
pub async fn spawn_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let fake = FakeAmazon::start(FakeConfig::default())
        .await
        .expect("fake Amazon starts");
    let dir = std::env::temp_dir().join(format!(
        "lwa-server-test-{}-{}",
        std::process::id(),
        lwa_server::ids::new_id("t")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let none = |_: &str| None;
    let mut settings = Settings::resolve(
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        },
        &none,
    )
    .unwrap();
    settings.database_url = format!("sqlite:{}", dir.join("broker.db").display());
    settings.master_key = Some(lwa_seal::MasterKey::generate().to_base64().to_string());
    settings.key_file = dir.join("unused.key");
    settings.amazon_base_url = Some(fake.base_url().to_string());
    settings.fake_clock = true;
    settings.apps = lwa_server::sandbox::apps();
    // Tests drive the background refresher with `run_once()`; the ones about its loop turn it on.
    settings.refresher.enabled = false;
    // Webhook receivers in tests listen on 127.0.0.1.
    settings.webhook_allow_private = true;
    // Serving threads of their own, as `serve` runs, but two whatever the machine's cores.
    settings.http_threads = 2;
    edit(&mut settings);
    let kept = settings.clone();
    let app = Application::build(settings).await.expect("broker builds");
    let url = format!("http://{}", app.local_addr());
    let metrics_url = app.metrics_addr().map(|a| format!("http://{a}"));
    // Register the broker's callback at the fake's default apps.
    let redirect = format!("{url}/auth/redirect");
    for (kind, client_id, secrets, application_id) in [
        (
            AppKind::SpApi,
            defaults::SP_API_CLIENT_ID,
            vec![
                defaults::SP_API_CLIENT_SECRET.to_string(),
                defaults::SP_API_PREVIOUS_CLIENT_SECRET.to_string(),
            ],
            Some(defaults::SP_API_APPLICATION_ID.to_string()),
        ),
        (
            AppKind::Ads,
            defaults::ADS_CLIENT_ID,
            vec![
                defaults::ADS_CLIENT_SECRET.to_string(),
                defaults::ADS_PREVIOUS_CLIENT_SECRET.to_string(),
            ],
            None,
        ),
    ] {
        fake.control()
            .register_app(AppSpec {
                kind,
                client_id: Some(client_id.into()),
                client_secrets: secrets,
                application_id,
                redirect_uris: vec![redirect.clone()],
                ..AppSpec::default()
            })
            .await;
    }
    let state = app.state().clone();
    let (tenant, key) = create_tenant(
        &state,
        NewTenant {
            name: "Test tenant".into(),
            redirect_origins: vec![ORIGIN.into()],
            ..NewTenant::default()
        },
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        url,
        metrics_url,
        fake,
        state,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        dir,
        tenant_id: tenant.id,
        key: key.key.to_string(),
        settings: kept,
        shutdown: Some(tx),
    }
}

/// Query pairs of a URL.
pub fn query(url: &str) -> std::collections::HashMap<String, String> {
    browser::query(url)
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// What the tenant's redirect URL received.
#[derive(Debug, Clone)]
pub struct Landing {
    pub url: String,
    pub q: std::collections::HashMap<String, String>,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A second tenant and its key.
    pub async fn other_tenant(&self) -> (String, String) {
        let (tenant, key) = create_tenant(
            &self.state,
            NewTenant {
                name: "Other tenant".into(),
                redirect_origins: vec!["https://other.example.com".into()],
                ..NewTenant::default()
            },
        )
        .await
        .unwrap();
        (tenant.id, key.key.to_string())
    }

    pub async fn new_key(&self) -> String {
        create_key(&self.state, &self.tenant_id, None, "full")
            .await
            .unwrap()
            .key
            .to_string()
    }

    /// `/auth/initialize` with the seed's parameters (plus extra ones).
    pub fn initialize_url(&self, extra: &[(&str, &str)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", "internal-seller-123");
        q.append_pair("tenantId", &self.tenant_id);
        q.append_pair("marketplace_region", "us-east-1");
        q.append_pair(
            "amazonTokenSecret",
            "q8m+/3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uvw==",
        );
        q.append_pair("sellerRedirectUrl", RETURN);
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("{}/auth/initialize?{}", self.url, q.finish())
    }

    /// Follows a broker 302 to Amazon's consent page, acts as the person there, and delivers
    /// Amazon's redirect back to the broker; returns where the broker sent the browser.
    pub async fn through_consent(&self, start: &str, choice: Choice) -> Landing {
        let r = self.http.get(start).send().await.unwrap();
        assert_eq!(
            r.status(),
            302,
            "start {start}: {}",
            r.text().await.unwrap_or_default()
        );
        let consent = location(&r);
        let back = browser::consent(&consent, choice)
            .await
            .expect("consent page works");
        assert!(back.starts_with(&self.url), "Amazon sent the browser to {back}");
        self.deliver(&back).await
    }

    /// Delivers a URL at the broker (Amazon's callback) and returns the tenant landing.
    pub async fn deliver(&self, callback: &str) -> Landing {
        let r = self.http.get(callback).send().await.unwrap();
        assert_eq!(
            r.status(),
            302,
            "callback answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let url = location(&r);
        Landing { q: query(&url), url }
    }

    /// A connect link for SP-API (or `api`) in `region`.
    pub async fn connect_link(&self, body: Value) -> String {
        let r = self.post_json("/v1/connect-links", &body).await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Onboards a seller through a connect link and claims it; returns (connection, handle).
    pub async fn onboard_sp(&self, region: &str, seller: Option<&str>) -> (Value, String) {
        let link = self
            .connect_link(serde_json::json!({"region": region, "state": "s1", "redirect_url": RETURN}))
            .await;
        let choice = seller
            .map(|s| Choice::ApproveAs(s.into()))
            .unwrap_or(Choice::Approve);
        let landing = self.through_consent(&link, choice).await;
        let code = landing.q.get("code").expect("a claim code").clone();
        let r = self
            .post_json("/v1/claims", &serde_json::json!({"code": code}))
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        (
            body["connection"].clone(),
            body["handle"].as_str().unwrap().to_owned(),
        )
    }

    /// Moves the fake's clock and waits until the broker, which polls it every 100 ms, follows.
    pub async fn advance(&self, secs: f64) {
        let fake_now = self.fake.control().advance_clock(secs).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.state.now_ms() < fake_now - 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker's clock did not follow the fake's"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("broker.db")
    }
}

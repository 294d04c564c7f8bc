//! The dashboard in a real browser: headless Debian chromium through chromedriver and
//! fantoccini. Each test fails on any console error or CSP violation on the broker's pages
//! (chromedriver's browser log, read after every step) and saves a screenshot under
//! `target/browser-screenshots/` when it fails.
//!
//! Without chromium and chromedriver these tests print a note and pass, unless
//! `LWA_BROKER_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs them).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn, spawn_with};

/// chromedriver and a browser session; the driver and its browser end on drop.
struct Browser {
    client: Client,
    driver_url: String,
    driver: tokio::process::Child,
    name: &'static str,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(n))
                .find(|p| p.is_file())
        })
    })
}

async fn browser(name: &'static str) -> Option<Browser> {
    let (Some(driver), Some(chromium)) = (find(&["chromedriver"]), find(&["chromium", "chromium-browser"]))
    else {
        if std::env::var("LWA_BROKER_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium and chromedriver are required (LWA_BROKER_REQUIRE_BROWSER=1)");
        }
        println!(
            "skipped: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        // A process group of its own, shared by the chromium it starts: see `Drop for Browser`.
        .process_group(0)
        .spawn()
        .expect("chromedriver starts");
    let driver_url = format!("http://127.0.0.1:{port}");
    let caps: serde_json::Map<String, Value> = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions"]
        },
        "goog:loggingPrefs": {"browser": "ALL"}
    })
    .as_object()
    .unwrap()
    .clone();
    let mut last = None;
    for _ in 0..50 {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&driver_url).await {
            Ok(client) => {
                return Some(Browser {
                    client,
                    driver_url,
                    driver: child,
                    name,
                });
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no browser session: {last:?}");
}

impl Browser {
    /// The browser console's errors since the last call (CSP violations are among them).
    async fn console_errors(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let r: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e["level"] == "SEVERE"
                    || e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("Content Security Policy"))
            })
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Fails on any console error so far.
    async fn clean(&self, step: &str) {
        let errors = self.console_errors().await;
        if !errors.is_empty() {
            self.fail(&format!("{step}: console errors: {errors:?}")).await;
        }
    }

    async fn screenshot(&self, path: &std::path::Path) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = std::fs::write(path, png);
        }
    }

    /// Saves a screenshot and panics.
    async fn fail(&self, why: &str) -> ! {
        let path = screenshot_dir().join(format!("{}.png", self.name));
        self.screenshot(&path).await;
        panic!("{why} (screenshot: {})", path.display());
    }

    async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            self.fail(&format!("goto {url}: {e}")).await;
        }
    }

    async fn click(&self, css: &str) {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(e) => {
                if let Err(err) = e.click().await {
                    self.fail(&format!("click {css}: {err}")).await;
                }
            }
            Err(e) => self.fail(&format!("no element {css}: {e}")).await,
        }
    }

    /// Clicks something that loads another page, and waits until that page has replaced this
    /// one (the old document's root goes stale) and finished loading, so what follows never
    /// reads the old page.
    async fn click_navigating(&self, css: &str) {
        let old = match self.client.find(Locator::Css("html")).await {
            Ok(root) => root,
            Err(e) => self.fail(&format!("no page before clicking {css}: {e}")).await,
        };
        self.click(css).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while old.tag_name().await.is_ok() {
            if std::time::Instant::now() > deadline {
                self.fail(&format!("clicking {css} loaded no new page")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            if state.as_deref() == Some("complete") {
                return;
            }
            if std::time::Instant::now() > deadline {
                self.fail(&format!("the page after {css} did not finish loading"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(e) => self.fail(&format!("no element {css}: {e}")).await,
        }
    }

    /// Waits (10 s at most) until `css` reads `wanted` (the page may still be loading).
    async fn expect_text(&self, css: &str, wanted: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(wanted) {
                return;
            }
            if std::time::Instant::now() > deadline {
                self.fail(&format!("{css} reads {text:?}, not {wanted:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn login(&self, app: &TestApp) {
        let token = lwa_server::operator::create_admin_token(&app.state)
            .await
            .unwrap();
        self.goto(&format!("{}/admin", app.url)).await;
        let field = self
            .client
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .unwrap();
        field.send_keys(&token).await.unwrap();
        self.click("#login button[type=submit]").await;
        self.expect_text("h1", "Overview").await;
        self.clean("login").await;
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver and every chromium process it started (killing chromedriver alone
    /// would leave them running), also when a test fails before `close`.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_DIR when set, else the workspace's target/.
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("browser-screenshots")
}

#[tokio::test]
async fn connect_refresh_and_disconnect_from_the_dashboard() {
    let app = spawn().await;
    let Some(b) = browser("connect_refresh_and_disconnect").await else {
        return;
    };
    b.login(&app).await;
    // Connect a seller through the fake's consent page, in the browser.
    let link = app
        .connect_link(json!({"region": "na", "state": "s1", "redirect_url": RETURN}))
        .await;
    b.goto(&link).await;
    b.click_navigating("button[value=approve]").await;
    // The tenant's site is not there; the redirect to it is enough.
    let landed = b.client.current_url().await.unwrap();
    assert!(landed.as_str().starts_with(RETURN), "{landed}");
    // The consent page and the tenant's (absent) site are not the dashboard's pages.
    b.console_errors().await;
    let c = app
        .state
        .store
        .list_connections(&Default::default())
        .await
        .unwrap()
        .pop()
        .expect("a connection");
    b.goto(&format!("{}/admin/connections", app.url)).await;
    b.expect_text("table.connections", &c.id).await;
    b.clean("connections").await;
    b.click_navigating(&format!("a[href='/admin/connections/{}']", c.id))
        .await;
    b.expect_text("#connection-status", "active").await;
    let before = app.fake.control().counters().await.lwa_calls("refresh_token");
    b.click_navigating("#refresh-now").await;
    b.expect_text("#connection-status", "active").await;
    let after = app.fake.control().counters().await.lwa_calls("refresh_token");
    assert_eq!(after, before + 1, "Refresh now made one LWA call");
    b.clean("refresh").await;
    b.click_navigating("#reauthorize-link").await;
    let link = b
        .client
        .find(Locator::Css("#shown-once"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(link.contains("/auth/connect/"), "{link}");
    b.click("button.copy-button").await;
    b.clean("re-authorization link").await;
    b.goto(&format!("{}/admin/connections/{}", app.url, c.id)).await;
    b.click("#disconnect").await;
    // The confirmation dialog (admin.js).
    b.client.accept_alert().await.unwrap();
    b.expect_text("#connection-status", "disconnected").await;
    b.clean("disconnect").await;
    assert_eq!(
        app.state.store.connection(&c.id).await.unwrap().unwrap().status,
        "disconnected"
    );
    // The overview, for the README when asked: LWA_BROKER_SCREENSHOT=docs/overview.png.
    b.goto(&format!("{}/admin", app.url)).await;
    b.clean("overview").await;
    if let Some(path) = std::env::var_os("LWA_BROKER_SCREENSHOT") {
        b.screenshot(std::path::Path::new(&path)).await;
    }
    b.close().await;
}

#[tokio::test]
async fn the_sandbox_walkthrough_reaches_the_webhook_inbox() {
    let app = spawn_with(|s| s.sandbox = true).await;
    // `--sandbox` started a fake Amazon of its own inside the broker.
    let fake_url = app.state.endpoints.rebased_base().unwrap().to_owned();
    lwa_server::sandbox::prepare(&app.state, &fake_url).await.unwrap();
    let Some(b) = browser("sandbox_walkthrough").await else {
        return;
    };
    b.login(&app).await;
    b.click("a[href='/admin/try']").await;
    b.click("#try-connect").await;
    b.click("#consent-link").await;
    // The fake's consent page, then the sandbox's landing page (neither is the dashboard's).
    b.click("button[value=approve]").await;
    b.click("#back-to-try").await;
    b.console_errors().await;
    b.expect_text("#step-see", "active").await;
    b.clean("connected").await;
    b.click("#try-vend").await;
    b.expect_text("#vend-result", "HTTP 200").await;
    b.click("#try-proxy").await;
    b.expect_text("#proxy-result", "HTTP 200").await;
    b.clean("vend and proxy").await;
    b.click("#try-revoke").await;
    b.expect_text("#step-see", "needs_reauth").await;
    // The webhook worker delivers to the inbox within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        b.goto(&format!("{}/admin/inbox", app.url)).await;
        let text = b.text("#inbox").await;
        if text.contains("connection.needs_reauth") {
            assert!(text.contains("valid") && !text.contains("INVALID"), "{text}");
            break;
        }
        if std::time::Instant::now() > deadline {
            b.fail(&format!("no connection.needs_reauth in the inbox: {text}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.clean("inbox").await;
    b.close().await;
}

//! LWA client-secret rotation end to end: `apps rotate-secret` calls Amazon (the fake), the new
//! secret arrives in Amazon's notification and goes in through `apps set-secret` (and once
//! through the server's operator endpoint), a running server uses it without a restart, both
//! secrets work for 7 simulated days, then the old one is refused by Amazon and never sent
//! again by the broker.

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, defaults};
use lwa_server::AppState;
use serde_json::{Value, json};

use crate::support::Cli;

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
        .trim()
        .to_owned()
}

/// The newest `APPLICATION_OAUTH_CLIENT_NEW_SECRET` the fake sent, and its secret.
async fn new_secret_notification(cli: &Cli) -> (Value, String) {
    let n = cli
        .fake
        .control()
        .notifications()
        .await
        .into_iter()
        .rfind(|n| n["notificationType"] == "APPLICATION_OAUTH_CLIENT_NEW_SECRET")
        .expect("Amazon sent the new secret");
    let secret = n["payload"]["applicationOAuthClientNewSecret"]["newClientSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    (n, secret)
}

/// Token-endpoint calls the fake received with this client secret.
async fn token_calls_with(cli: &Cli, secret: &str) -> usize {
    cli.fake
        .control()
        .requests(None)
        .await
        .iter()
        .filter(|r| r.path.eq_ignore_ascii_case("/auth/o2/token"))
        .filter(|r| {
            url::form_urlencoded::parse(r.body.as_bytes()).any(|(k, v)| k == "client_secret" && v == secret)
        })
        .count()
}

/// Whether the fake's LWA takes this secret now (a grantless token request of our own).
async fn amazon_accepts(cli: &Cli, secret: &str) -> bool {
    let r = reqwest::Client::new()
        .post(format!("{}/api.amazon.com/auth/o2/token", cli.fake.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            ("client_id", defaults::SP_API_CLIENT_ID),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => true,
        401 => {
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
            false
        }
        other => panic!("the fake answered {other}"),
    }
}

/// Moves the fake's clock and waits until the server follows it.
async fn advance(cli: &Cli, state: &AppState, secs: f64) {
    let fake_now = cli.fake.control().advance_clock(secs).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state.now_ms() < fake_now - 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server's clock did not follow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The next LWA call of the app is refused with `invalid_client`.
async fn refuse_next_lwa_call(cli: &Cli) {
    cli.fake.control().clear_faults().await;
    cli.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            script: Some(FaultScript {
                count: 1,
                status: Some(401),
                error: Some("invalid_client".into()),
                drop: false,
            }),
            ..FaultSpec::default()
        })
        .await;
}

#[tokio::test]
async fn rotate_receive_set_and_retire_a_client_secret_without_a_restart() {
    let cli = Cli::start("secrets-rotation").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let s1 = defaults::SP_API_CLIENT_SECRET;
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "T",
            "--redirect-origin",
            "https://t.example.com",
        ])
        .await;
    let (tenant, key) = (field(&out, "tenant"), field(&out, "api key"));
    let refresh = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    let file = cli.dir.join("import.jsonl");
    std::fs::write(
        &file,
        json!({"region": "na", "refresh_token": refresh, "selling_partner_id": defaults::SELLER_NA})
            .to_string(),
    )
    .unwrap();
    let imported: Value = serde_json::from_str(
        cli.ok(&[
            "--database",
            &db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            file.to_str().unwrap(),
        ])
        .await
        .trim(),
    )
    .unwrap();
    let connection = imported["connection_id"].as_str().unwrap().to_owned();
    let admin = field(&cli.ok(&["--database", &db, "admin-token"]).await, "admin token");
    assert!(admin.starts_with("lwaadm_"), "{admin}");

    // The server, on the same database and key, as `serve` runs it.
    let (base, key_file) = (cli.fake.base_url().to_string(), cli.dir.join("master.key"));
    let env = |name: &str| match name {
        "AMAZON_CLIENT_ID" => Some(defaults::SP_API_CLIENT_ID.to_owned()),
        "AMAZON_CLIENT_SECRET" => Some(s1.to_owned()),
        "LWA_BROKER_APPLICATION_ID" => Some(defaults::SP_API_APPLICATION_ID.to_owned()),
        "LWA_BROKER_AMAZON_BASE_URL" => Some(base.clone()),
        "LWA_BROKER_FAKE_CLOCK" => Some("1".into()),
        "LWA_BROKER_DATABASE_URL" => Some(db.clone()),
        "LWA_BROKER_KEY_FILE" => Some(key_file.display().to_string()),
        "LWA_BROKER_LISTEN" => Some("127.0.0.1:0".into()),
        _ => None,
    };
    let settings =
        lwa_server::config::Settings::resolve(&lwa_server::config::Overrides::default(), &env).unwrap();
    let app = lwa_server::Application::build(settings).await.unwrap();
    let server = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let vend = || async {
        http.post(format!("{server}/v1/connections/{connection}/access-token"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(vend().await, 200);

    let list: Value =
        serde_json::from_str(&cli.ok(&["--database", &db, "apps", "list", "--json"]).await).unwrap();
    assert_eq!(list[0]["name"], "default");
    assert_eq!(list[0]["kind"], "sp-api");
    assert_eq!(list[0]["client_id"], defaults::SP_API_CLIENT_ID);
    assert_eq!(list[0]["in_use"], "newest");
    assert_eq!(list[0]["secret_age_days"], 0);
    assert_eq!(list[0]["days_until_deadline"], 179);

    // Rotation 1: through the CLI, the notification fed to `apps set-secret`.
    let out = cli
        .ok(&["--database", &db, "apps", "rotate-secret", "--app", "default"])
        .await;
    assert!(out.contains("APPLICATION_OAUTH_CLIENT_NEW_SECRET"), "{out}");
    assert!(out.contains("lwa-broker apps set-secret --app default"), "{out}");
    let (notification, s2) = new_secret_notification(&cli).await;
    assert!(amazon_accepts(&cli, &s2).await && amazon_accepts(&cli, s1).await);
    // Until it is fed in, the broker keeps the secret it has (Amazon still takes it).
    cli.fake.control().clear_requests().await;
    advance(&cli, &state, 3600.0).await;
    assert_eq!(vend().await, 200);
    assert_eq!(
        (
            token_calls_with(&cli, s1).await,
            token_calls_with(&cli, &s2).await
        ),
        (1, 0)
    );
    let out = cli
        .run_with(
            &["--database", &db, "apps", "set-secret", "--app", "default"],
            Some(&notification.to_string()),
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("the previous one stays a fallback until"),
        "{}",
        out.stdout
    );
    // The running server picks it up within 30 s of its clock: the next refresh uses it.
    cli.fake.control().clear_requests().await;
    advance(&cli, &state, 3600.0).await;
    assert_eq!(vend().await, 200);
    assert_eq!(
        (
            token_calls_with(&cli, s1).await,
            token_calls_with(&cli, &s2).await
        ),
        (0, 1)
    );

    // Rotation 2: the notification posted to the server's operator endpoint, used at once.
    cli.ok(&["--database", &db, "apps", "rotate-secret", "--app", "default"])
        .await;
    let (notification, s3) = new_secret_notification(&cli).await;
    assert_ne!(s3, s2);
    let r = http
        .post(format!("{server}/admin/api/app-secret-notifications"))
        .bearer_auth(&admin)
        .json(&notification)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["outcome"], "secret_set");
    let old_expiry = lwa_server::time::parse_rfc3339(
        notification["payload"]["applicationOAuthClientNewSecret"]["oldClientSecretExpiryTime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    cli.fake.control().clear_requests().await;
    advance(&cli, &state, 3600.0).await;
    assert_eq!(vend().await, 200);
    assert_eq!(
        (
            token_calls_with(&cli, &s2).await,
            token_calls_with(&cli, &s3).await
        ),
        (0, 1)
    );
    let list: Value =
        serde_json::from_str(&cli.ok(&["--database", &db, "apps", "list", "--json"]).await).unwrap();
    assert_eq!(list[0]["in_use"], "newest, previous as fallback");
    assert_eq!(
        lwa_server::time::parse_rfc3339(list[0]["previous_expires_at"].as_str().unwrap()),
        Some(old_expiry / 1000 * 1000)
    );

    // Both secrets work at Amazon for 7 days; the broker falls back to the old one when the
    // new one is refused.
    advance(&cli, &state, 6.0 * 86_400.0).await;
    assert!(amazon_accepts(&cli, &s2).await && amazon_accepts(&cli, &s3).await);
    cli.fake.control().clear_requests().await;
    refuse_next_lwa_call(&cli).await;
    assert_eq!(vend().await, 200);
    assert_eq!(
        (
            token_calls_with(&cli, &s2).await,
            token_calls_with(&cli, &s3).await
        ),
        (1, 1)
    );
    cli.fake.control().clear_faults().await;

    // Past Amazon's expiry of the old secret: refused by Amazon, never sent by the broker.
    let now = cli.fake.control().clock().await;
    advance(&cli, &state, ((old_expiry - now) / 1000 + 60) as f64).await;
    assert!(
        !amazon_accepts(&cli, &s2).await,
        "Amazon still takes the old secret"
    );
    assert!(amazon_accepts(&cli, &s3).await);
    cli.fake.control().clear_requests().await;
    refuse_next_lwa_call(&cli).await;
    assert_ne!(
        vend().await,
        200,
        "the new secret was refused and nothing else may be tried"
    );
    cli.fake.control().clear_faults().await;
    for _ in 0..3 {
        advance(&cli, &state, 3600.0).await;
        assert_eq!(vend().await, 200);
    }
    let list: Value =
        serde_json::from_str(&cli.ok(&["--database", &db, "apps", "list", "--json"]).await).unwrap();
    assert_eq!(list[0]["in_use"], "newest");
    assert_eq!(
        token_calls_with(&cli, &s2).await,
        0,
        "the expired secret was sent after its expiry"
    );
    assert_eq!(token_calls_with(&cli, s1).await, 0);
    assert!(token_calls_with(&cli, &s3).await >= 4);

    // A token the server handed out, for the leak check below.
    let vended: Value = http
        .post(format!("{server}/v1/connections/{connection}/access-token"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = vended["access_token"].as_str().unwrap().to_owned();
    assert!(access_token.starts_with("Atza|"), "{vended}");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    // The table form names the app and no secret; nothing secret reached any output.
    let table = cli.ok(&["--database", &db, "apps", "list"]).await;
    assert!(
        table.contains("default") && table.contains(defaults::SP_API_CLIENT_ID),
        "{table}"
    );
    let transcript = cli.transcript.lock().unwrap().clone();
    assert_eq!(
        transcript.matches(&admin).count(),
        1,
        "the admin token is shown once"
    );
    cli.assert_no_secret_leaked(&[s2, s3, access_token, refresh])
        .await;
}

#[tokio::test]
async fn apps_commands_refuse_bad_input_clearly() {
    let cli = Cli::start("secrets-bad-input").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let notification = |client_id: &str, secret: &str| {
        json!({"notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET", "payload": {
            "applicationOAuthClientNewSecret": {"clientId": client_id, "newClientSecret": secret,
                "oldClientSecretExpiryTime": "2030-01-01T00:00:00Z"}}})
        .to_string()
    };
    let mismatch = notification(
        defaults::ADS_CLIENT_ID,
        "amzn1.oa2-cs.v1.0123456789abcdef-for-another-app",
    );
    let expiry = json!({"notificationType": "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY", "payload": {
        "applicationOAuthClientSecretExpiry": {"clientId": defaults::SP_API_CLIENT_ID,
            "clientSecretExpiryTime": "2030-01-01T00:00:00Z"}}})
    .to_string();
    for (stdin, app, message) in [
        ("", "default", "on standard input"),
        ("  \n", "default", "on standard input"),
        (
            "amzn1.oa2-cs.v1.aaaa\namzn1.oa2-cs.v1.bbbb\n",
            "default",
            "several lines",
        ),
        ("two words", "default", "one word"),
        ("{\"notificationType\": ", "default", "not valid JSON"),
        (
            "{\"notificationType\": \"X\", \"payload\": {}}",
            "default",
            "\"X\" is not",
        ),
        (mismatch.as_str(), "default", "the notification is for client id"),
        (expiry.as_str(), "default", "carries no secret"),
        (
            "amzn1.oa2-cs.v1.0123456789abcdef",
            "nope",
            "no app named \"nope\"",
        ),
        (defaults::SP_API_CLIENT_SECRET, "default", "already the newest"),
    ] {
        let out = cli
            .run_with(
                &["--database", &db, "apps", "set-secret", "--app", app],
                Some(stdin),
                &[],
            )
            .await;
        if message == "already the newest" {
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(out.stdout.contains(message), "{}", out.stdout);
            continue;
        }
        assert_eq!(out.code, 2, "{stdin:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{stdin:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert!(!cli.transcript.lock().unwrap().contains("for-another-app"));
    let out = cli
        .run(&["--database", &db, "apps", "rotate-secret", "--app", "nope"])
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no app named \"nope\""), "{}", out.stderr);
    let out = cli
        .run(&[
            "--database",
            &db,
            "apps",
            "rotate-secret",
            "--app",
            "default",
            "--region",
            "mars",
        ])
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("mars"), "{}", out.stderr);
    // An app Amazon will not rotate: the fake's answer, explained.
    cli.fake
        .control()
        .register_app(fake_amazon::AppSpec {
            kind: fake_amazon::AppKind::SpApi,
            client_id: Some("amzn1.application-oa2-client.unenrolled".into()),
            client_secrets: vec!["amzn1.oa2-cs.v1.unenrolled-0123456789".into()],
            application_id: Some("amzn1.sp.solution.unenrolled".into()),
            rotation_enrolled: Some(false),
            ..fake_amazon::AppSpec::default()
        })
        .await;
    let out = cli
        .run_with(
            &["--database", &db, "apps", "rotate-secret", "--app", "default"],
            None,
            &[
                ("AMAZON_CLIENT_ID", "amzn1.application-oa2-client.unenrolled"),
                ("AMAZON_CLIENT_SECRET", "amzn1.oa2-cs.v1.unenrolled-0123456789"),
                ("LWA_BROKER_APPLICATION_ID", "amzn1.sp.solution.unenrolled"),
            ],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("not enrolled for rotation notification"),
        "{}",
        out.stderr
    );
}

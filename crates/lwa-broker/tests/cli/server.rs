//! The server commands: `tenants`, `keys`, `connections import`, `serve --sandbox`, and the
//! master-key check at start.

use std::process::Stdio;

use fake_amazon::browser::{self, Choice};
use fake_amazon::defaults;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Cli, field};

#[tokio::test]
async fn tenants_and_keys_from_the_command_line() {
    let cli = Cli::start("server-tenants").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    let out = cli
        .ok(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "Acme WMS",
            "--redirect-origin",
            "https://wms.example.com/oauth",
            "--redirect-origin",
            "https://staging.wms.example.com",
        ])
        .await;
    let tenant = field(&out, "tenant");
    let first_key = field(&out, "api key");
    assert!(
        tenant.starts_with("ten_") && first_key.starts_with("lwak_"),
        "{out}"
    );

    let list: Value =
        serde_json::from_str(&cli.ok(&["--database", &db, "tenants", "list", "--json"]).await).unwrap();
    assert_eq!(list[0]["id"], tenant.as_str());
    assert_eq!(
        list[0]["redirect_origins"],
        json!(["https://wms.example.com/oauth", "https://staging.wms.example.com"])
    );

    let out = cli
        .ok(&[
            "--database",
            &db,
            "keys",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "ci",
        ])
        .await;
    let key_id = field(&out, "key id");
    let keys: Value = serde_json::from_str(
        &cli.ok(&["--database", &db, "keys", "list", "--tenant", &tenant, "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        !keys.to_string().contains(first_key.rsplit('_').next().unwrap()),
        "key listing shows no secret"
    );
    assert!(
        cli.ok(&["--database", &db, "keys", "revoke", &key_id])
            .await
            .contains("revoked")
    );
    let again = cli.run(&["--database", &db, "keys", "revoke", &key_id]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    let keys: Value = serde_json::from_str(
        &cli.ok(&["--database", &db, "keys", "list", "--tenant", &tenant, "--json"])
            .await,
    )
    .unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == key_id.as_str() && !k["revoked_at"].is_null())
    );

    let bad = cli
        .run(&[
            "--database",
            &db,
            "tenants",
            "create",
            "--name",
            "X",
            "--redirect-origin",
            "http://evil.example.com",
        ])
        .await;
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("redirect origin"), "{}", bad.stderr);
    let bad_url = cli.run(&["--database", "mysql://x", "tenants", "list"]).await;
    assert_eq!(bad_url.code, 2);
    assert!(bad_url.stderr.contains("sqlite:"), "{}", bad_url.stderr);
    let transcript = cli.transcript.lock().unwrap().clone();
    let secret = first_key.rsplit('_').next().unwrap();
    // Printed once on stdout by `create`; never in any log line.
    assert_eq!(
        transcript.matches(secret).count(),
        1,
        "the key secret appears once, where it was issued"
    );
}

#[tokio::test]
async fn a_master_key_that_does_not_open_the_database_stops_the_server() {
    let cli = Cli::start("server-wrong-key").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
    cli.ok(&["--database", &db, "tenants", "list"]).await;
    let other = lwa_seal::MasterKey::generate();
    let out = cli
        .run_with(
            &["--database", &db, "serve", "--listen", "127.0.0.1:0"],
            None,
            &[("LWA_BROKER_MASTER_KEY", &other.to_base64())],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not open this database"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&other.fingerprint().to_string()),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn connections_import_from_a_json_lines_file() {
    let cli = Cli::start("server-import").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
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
    let tenant = field(&out, "tenant");
    let token = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    let file = cli.dir.join("import.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n\n{}\n",
            json!({"region": "na", "refresh_token": token, "selling_partner_id": defaults::SELLER_NA, "name": "Main store"}),
            json!({"region": "na", "refresh_token": "Atzr|unknown-to-amazon"}),
            "not json",
        ),
    )
    .unwrap();
    let out = cli
        .run(&[
            "--database",
            &db,
            "connections",
            "import",
            "--tenant",
            &tenant,
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["connection_id"].as_str().unwrap().starts_with("conn_"));
    assert_eq!(lines[0]["line"], 1);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("refused"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["line"], 4);
    assert!(out.stderr.contains("1 imported, 2 failed"), "{}", out.stderr);
    assert_eq!(
        cli.fake.control().counters().await.lwa_calls("refresh_token"),
        2,
        "one validating refresh per token"
    );
    let transcript = cli.transcript.lock().unwrap().clone();
    assert!(!transcript.contains(&token) && !transcript.contains(defaults::SP_API_CLIENT_SECRET));
    let db = std::fs::read(cli.dir.join("broker.db")).unwrap();
    let wal = std::fs::read(cli.dir.join("broker.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle)
    );
}

#[tokio::test]
async fn serve_sandbox_prints_a_key_and_a_link_that_onboards_a_demo_seller() {
    let cli = Cli::start("server-sandbox").await;
    let mut command = cli.command(&["serve", "--sandbox", "--listen", "127.0.0.1:0"]);
    command
        .env_remove("AMAZON_CLIENT_ID")
        .env_remove("AMAZON_CLIENT_SECRET")
        .env_remove("LWA_BROKER_APPLICATION_ID");
    // Its trace log goes to a file: a pipe nobody reads fills up and stops the server.
    command
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(cli.dir.join("sandbox.log")).unwrap())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("connect a demo seller:") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the sandbox starts");
    let server = field(&printed, "server");
    let key = field(&printed, "api key");
    let link = field(&printed, "connect a demo seller");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let consent = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        consent.contains("/sellercentral.amazon.com/apps/authorize/consent?"),
        "{consent}"
    );
    let back = browser::consent(&consent, Choice::Approve).await.unwrap();
    let r = http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let landing = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        landing.starts_with(&format!("{server}/sandbox/done?")),
        "{landing}"
    );
    let page = http.get(&landing).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Connected"), "{page}");
    let code = browser::query(&landing)["code"].clone();
    let claim: Value = http
        .post(format!("{server}/v1/claims"))
        .bearer_auth(&key)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["connection"]["selling_partner_id"], defaults::SELLER_NA);
    assert_eq!(claim["connection"]["status"], "active");

    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let secret = key.rsplit('_').next().unwrap();
    assert!(!stderr.contains(secret), "the API key reached the log");
    assert!(!stderr.contains(&code), "the claim code reached the log");
}

#[tokio::test]
async fn audit_lists_the_tokens_the_server_handed_out() {
    let cli = Cli::start("server-audit").await;
    let db = format!("sqlite:{}", cli.dir.join("broker.db").display());
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
    let token = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    let file = cli.dir.join("import.jsonl");
    std::fs::write(
        &file,
        json!({"region": "na", "refresh_token": token, "selling_partner_id": defaults::SELLER_NA})
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

    // The server on the same database and key vends twice, then stops (writing its trail).
    let (base, key_file) = (cli.fake.base_url().to_string(), cli.dir.join("master.key"));
    let env = |name: &str| match name {
        "AMAZON_CLIENT_ID" => Some(defaults::SP_API_CLIENT_ID.to_owned()),
        "AMAZON_CLIENT_SECRET" => Some(defaults::SP_API_CLIENT_SECRET.to_owned()),
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
    let url = format!(
        "http://{}/v1/connections/{connection}/access-token",
        app.local_addr()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http.post(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let out = cli.ok(&["--database", &db, "audit", "--json"]).await;
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Two vends: one row with a count of 2, or two rows if a write fell between them.
    assert_eq!(
        events.iter().map(|e| e["count"].as_i64().unwrap()).sum::<i64>(),
        2,
        "{out}"
    );
    for e in &events {
        assert_eq!(e["connection_id"], connection.as_str());
        assert_eq!(e["tenant_id"], tenant.as_str());
        assert_eq!(e["kind"], "access_token");
    }
    let table = cli
        .ok(&[
            "--database",
            &db,
            "audit",
            "--tenant",
            &tenant,
            "--kind",
            "access_token",
        ])
        .await;
    assert!(
        table.contains(&connection) && table.contains("access_token"),
        "{table}"
    );
    assert!(!table.contains(&key) && !out.contains(&key));
    let none = cli
        .ok(&["--database", &db, "audit", "--tenant", "ten_other", "--json"])
        .await;
    assert!(none.trim().is_empty());
    let bad = cli
        .run(&["--database", &db, "audit", "--kind", "everything"])
        .await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("kind must be"), "{}", bad.stderr);
}

//! `login`: consent in a (scripted) browser, by paste and by the loopback listener.

use std::process::Stdio;
use std::time::Duration;

use fake_amazon::browser::{self, Choice};
use fake_amazon::{AppKind, AppSpec, defaults};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::support::Cli;

/// Starts `login`, reads the consent URL it prints, and returns the running child.
async fn start_login(cli: &Cli, args: &[&str]) -> (tokio::process::Child, String, String) {
    let mut command = cli.command(args);
    command.stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("http") {
                return line;
            }
        }
        panic!("login printed no URL: {seen}");
    })
    .await
    .unwrap();
    // Keep draining stderr so the child never blocks on it.
    let transcript = cli.transcript.clone();
    transcript.lock().unwrap().push_str(&seen);
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            transcript.lock().unwrap().push_str(&line);
        }
    });
    (child, url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn login_by_paste_at_seller_central() {
    let cli = Cli::start("paste").await;
    let (mut child, url, _) = start_login(&cli, &["login", "--paste"]).await;
    assert!(
        url.starts_with(&format!(
            "{}/sellercentral.amazon.com/apps/authorize/consent?application_id=",
            cli.fake.base_url()
        )),
        "{url}"
    );
    let redirected = browser::consent(&url, Choice::Approve).await.unwrap();
    assert!(
        redirected.starts_with("http://127.0.0.1:8765/callback?"),
        "{redirected}"
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{redirected}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(status[0]["status"], "valid");
    assert_eq!(status[0]["selling_partner_id"], defaults::SELLER_NA);
    let token = cli.ok(&["token"]).await.trim_end().to_owned();
    assert!(token.starts_with("Atza|"));
    cli.assert_no_secret_leaked(&[token]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_on_the_loopback_listener_for_a_german_vendor() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let redirect = format!("http://127.0.0.1:{port}/oauth/callback");
    let cli = Cli::start("loopback").await;
    let app = cli
        .fake
        .control()
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            redirect_uris: vec![redirect.clone()],
            ..AppSpec::default()
        })
        .await;
    let cli = cli
        .env("AMAZON_CLIENT_ID", &app.client_id)
        .env("AMAZON_CLIENT_SECRET", &app.client_secrets[0])
        .env(
            "LWA_BROKER_APPLICATION_ID",
            app.application_id.as_deref().unwrap(),
        )
        .env("AMAZON_OAUTH_REDIRECT_URI", &redirect);
    let (child, url, _) = start_login(
        &cli,
        &["--marketplace", "DE", "login", "--account-type", "vendor"],
    )
    .await;
    assert!(
        url.contains("/vendorcentral.amazon.de/apps/authorize/consent?"),
        "{url}"
    );

    let redirected = browser::consent(&url, Choice::ApproveAs("A2GERMANVENDOR".into()))
        .await
        .unwrap();
    assert!(redirected.starts_with(&redirect), "{redirected}");
    // The browser follows the redirect to the CLI's listener.
    let page = reqwest::get(&redirected).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("You can close this window"));
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());

    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(status[0]["region"], "eu");
    assert_eq!(status[0]["selling_partner_id"], "A2GERMANVENDOR");
    // The token works on the EU host for that vendor.
    cli.ok(&["call", "GET", "/sellers/v1/marketplaceParticipations"])
        .await;
    cli.assert_no_secret_leaked(&[app.client_secrets[0].clone()])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_consent_stores_nothing() {
    let cli = Cli::start("deny").await;
    let (mut child, url, _) = start_login(&cli, &["login", "--paste"]).await;
    let redirected = browser::consent(&url, Choice::Deny).await.unwrap();
    assert!(redirected.contains("error=access_denied"));
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{redirected}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(cli.run(&["token"]).await.code, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_login_with_pkce_in_europe() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let redirect = format!("http://localhost:{port}/cb");
    let cli = Cli::start("ads").await;
    let app = cli
        .fake
        .control()
        .register_app(AppSpec {
            kind: AppKind::Ads,
            redirect_uris: vec![redirect.clone()],
            ..AppSpec::default()
        })
        .await;
    let cli = cli
        .env("AMAZON_CLIENT_ID", &app.client_id)
        .env("AMAZON_CLIENT_SECRET", &app.client_secrets[0])
        .env("AMAZON_OAUTH_REDIRECT_URI", &redirect);
    let (child, url, _) = start_login(&cli, &["--api", "ads", "--region", "eu", "login"]).await;
    assert!(url.contains("/eu.account.amazon.com/ap/oa?client_id="), "{url}");
    assert!(url.contains("&code_challenge_method=S256"));
    let redirected = browser::consent(&url, Choice::Approve).await.unwrap();
    assert_eq!(reqwest::get(&redirected).await.unwrap().status(), 200);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());
    let profiles: serde_json::Value =
        serde_json::from_str(&cli.ok(&["call", "GET", "/v2/profiles"]).await).unwrap();
    assert!(
        profiles
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["profileId"] != defaults::PROFILE_NA)
    );
    let lwa_on_uk = cli
        .fake
        .control()
        .counters()
        .await
        .lwa
        .iter()
        .filter(|c| c.host == "api.amazon.co.uk" && c.grant_type == "authorization_code" && c.outcome == "ok")
        .count();
    assert_eq!(lwa_on_uk, 1);
    cli.assert_no_secret_leaked(&[app.client_secrets[0].clone()])
        .await;
}

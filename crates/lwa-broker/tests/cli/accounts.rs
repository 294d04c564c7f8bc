//! set-refresh-token, token, status, refresh, env, call, logout, and every exit code.

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, RevokeSpec, defaults};

use crate::support::{Cli, mode_of};

#[tokio::test(flavor = "multi_thread")]
async fn a_private_apps_refresh_token_through_every_command() {
    let cli = Cli::start("private").await;
    // Nothing stored yet: not authenticated.
    let out = cli.run(&["token"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("not authenticated"));

    let refresh_token = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    let out = cli
        .run_with(&["set-refresh-token"], Some(&format!("{refresh_token}\n")), &[])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The store: 0600, and no token in clear.
    assert_eq!(mode_of(&cli.store_path()), 0o600);
    assert_eq!(mode_of(&cli.dir.join("master.key")), 0o600);
    let sealed = std::fs::read_to_string(cli.store_path()).unwrap();
    assert!(!sealed.contains(&refresh_token));

    let token = cli.ok(&["token"]).await;
    let token = token.trim_end();
    assert!(token.starts_with("Atza|") && !token.contains('\n'));
    // Cached: a second call prints the same token without calling Amazon.
    let before = cli.fake.control().counters().await.lwa_total();
    assert_eq!(cli.ok(&["token"]).await.trim_end(), token);
    assert_eq!(cli.fake.control().counters().await.lwa_total(), before);

    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(status[0]["account"], "default");
    assert_eq!(status[0]["status"], "valid");
    assert_eq!(status[0]["api"], "sp-api");
    assert!(status[0]["expires_in_seconds"].as_i64().unwrap() > 3500);
    assert!(status[0]["refresh_token_age_seconds"].as_i64().unwrap() < 60);
    let table = cli.ok(&["status"]).await;
    assert!(table.starts_with("ACCOUNT"), "{table}");
    assert!(
        table.contains("default") && table.contains("valid") && table.contains("left"),
        "{table}"
    );

    // Time moves at the fake, and for the CLI with it.
    cli.fake.control().advance_clock(3590.0).await;
    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(status[0]["status"], "expiring");
    let refreshed = cli.ok(&["token"]).await;
    assert_ne!(refreshed.trim_end(), token);
    // The check when storing it, then this refresh.
    assert_eq!(
        cli.fake
            .control()
            .counters()
            .await
            .lwa_calls_for_refresh_token(&refresh_token),
        2
    );

    let out = cli.run(&["refresh"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("Refreshed"));

    // env --write keeps every other line and comment.
    let env_file = cli.dir.join("app.env");
    std::fs::write(
        &env_file,
        "# my app\nAPP_PORT=3000\nAMAZON_REFRESH_TOKEN=old\n\nexport OTHER=\"x y\"\n",
    )
    .unwrap();
    cli.ok(&["env", "--write", env_file.to_str().unwrap()]).await;
    let written = std::fs::read_to_string(&env_file).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "# my app");
    assert_eq!(lines[1], "APP_PORT=3000");
    assert_eq!(lines[2], format!("AMAZON_REFRESH_TOKEN=\"{refresh_token}\""));
    assert_eq!(lines[3], "");
    assert_eq!(lines[4], "export OTHER=\"x y\"");
    assert!(lines[5].starts_with("AMAZON_ACCESS_TOKEN=\"Atza|"));
    assert_eq!(lines.len(), 6);
    let fresh_file = cli.dir.join("new.env");
    cli.ok(&["env", "--write", fresh_file.to_str().unwrap()]).await;
    assert_eq!(mode_of(&fresh_file), 0o600);

    // call: the Sellers API, printed as JSON.
    let body: serde_json::Value = serde_json::from_str(
        &cli.ok(&["call", "GET", "/sellers/v1/marketplaceParticipations"])
            .await,
    )
    .unwrap();
    assert!(body["payload"].as_array().is_some_and(|p| !p.is_empty()));

    cli.ok(&["logout"]).await;
    assert_eq!(cli.run(&["token"]).await.code, 3);
    cli.assert_no_secret_leaked(&[refresh_token, token.to_owned()])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_what_to_do() {
    let cli = Cli::start("exits").await;
    let refresh_token = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    cli.ok(&["set-refresh-token", "--no-verify", &refresh_token])
        .await;

    // A missing setting is named by its variable.
    let out = cli.run_with(&["token"], None, &[("AMAZON_CLIENT_ID", "")]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("AMAZON_CLIENT_ID"), "{}", out.stderr);
    // Bad usage.
    assert_eq!(cli.run(&["token", "--no-such-flag"]).await.code, 2);
    assert_eq!(cli.run(&["--region", "mars", "token"]).await.code, 2);
    // A wrong client secret is a configuration problem.
    let out = cli
        .run_with(
            &["token"],
            None,
            &[("AMAZON_CLIENT_SECRET", "amzn1.oa2-cs.v1.wrong")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("invalid_client"));

    // Amazon failing: temporary (retries exhausted).
    cli.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            script: Some(FaultScript {
                count: 10,
                status: Some(503),
                ..Default::default()
            }),
            ..FaultSpec::default()
        })
        .await;
    let out = cli.run(&["token"]).await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    cli.fake.control().clear_faults().await;
    let issued = cli.ok(&["token"]).await.trim_end().to_owned();

    // Revoked at Amazon: needs re-authorization, from then on without calling Amazon again.
    cli.fake
        .control()
        .revoke(RevokeSpec {
            refresh_token: Some(refresh_token.clone()),
            ..RevokeSpec::default()
        })
        .await;
    cli.fake.control().advance_clock(3600.0).await;
    let out = cli.run(&["token"]).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("authorized again"));
    let calls = cli
        .fake
        .control()
        .counters()
        .await
        .lwa_calls_for_refresh_token(&refresh_token);
    assert_eq!(cli.run(&["token"]).await.code, 4);
    assert_eq!(
        cli.fake
            .control()
            .counters()
            .await
            .lwa_calls_for_refresh_token(&refresh_token),
        calls
    );
    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(status[0]["status"], "needs_reauth");

    let help = cli.ok(&["--help"]).await;
    for code in [
        "3  not authenticated",
        "4  needs re-authorization",
        "5  temporary failure",
    ] {
        assert!(help.contains(code), "{help}");
    }
    cli.assert_no_secret_leaked(&[refresh_token, issued]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_accounts_and_each_api_through_call() {
    let cli = Cli::start("call").await;
    let na = cli.self_authorized_refresh_token(defaults::SELLER_NA).await;
    cli.ok(&["--account", "us", "set-refresh-token", &na]).await;
    let eu = cli.self_authorized_refresh_token(defaults::SELLER_EU).await;
    cli.ok(&["--account", "europe", "--region", "eu", "set-refresh-token", &eu])
        .await;

    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"]).await).unwrap();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["europe", "us"]);
    assert_eq!(status[0]["region"], "eu");

    // The EU account calls the EU host.
    cli.ok(&[
        "--account",
        "europe",
        "call",
        "GET",
        "/sellers/v1/marketplaceParticipations",
    ])
    .await;
    let counters = cli.fake.control().counters().await;
    assert_eq!(
        counters.api_calls_with_status(
            "sellingpartnerapi-eu.amazon.com",
            "/sellers/v1/marketplaceParticipations",
            200
        ),
        1
    );
    // An API error is printed and exits 1.
    let out = cli
        .run(&[
            "--account",
            "us",
            "call",
            "GET",
            "/orders/v0/orders/123-1234567-1234567/address",
        ])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("Unauthorized"), "{}", out.stdout);
    let out = cli.run(&["--account", "us", "call", "GET", "/../etc"]).await;
    assert_eq!(out.code, 2);

    // Ads: an account authorized through the fake, then /v2/profiles and AMC.
    let ads = Cli {
        extra_env: vec![],
        ..cli
    }
    .env("AMAZON_CLIENT_ID", defaults::ADS_CLIENT_ID)
    .env("AMAZON_CLIENT_SECRET", defaults::ADS_CLIENT_SECRET)
    .env("LWA_BROKER_API", "ads");
    let code = ads
        .fake
        .control()
        .authorize(fake_amazon::AuthorizeSpec {
            client_id: defaults::ADS_CLIENT_ID.into(),
            ..Default::default()
        })
        .await;
    let refresh: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api.amazon.com/auth/o2/token", ads.fake.base_url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", defaults::ADS_CLIENT_ID),
            ("client_secret", defaults::ADS_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ads_refresh = refresh["refresh_token"].as_str().unwrap().to_owned();
    ads.ok(&["--account", "ads", "set-refresh-token", &ads_refresh])
        .await;
    let profiles: serde_json::Value =
        serde_json::from_str(&ads.ok(&["--account", "ads", "call", "GET", "/v2/profiles"]).await).unwrap();
    assert!(
        profiles
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["profileId"] == defaults::PROFILE_NA)
    );
    let execution: serde_json::Value = serde_json::from_str(
        &ads.ok(&[
            "--account",
            "ads",
            "call",
            "POST",
            &format!("/amc/reporting/{}/workflowExecutions", defaults::AMC_INSTANCE),
            "--amc-marketplace",
            defaults::AMC_MARKETPLACE_ID,
            "--amc-advertiser",
            defaults::AMC_ADVERTISER_ID,
            "--body",
            r#"{"workflowId":"w1","timeWindowType":"MOST_RECENT_WEEK"}"#,
        ])
        .await,
    )
    .unwrap();
    assert_eq!(execution["status"], "PENDING");
    ads.assert_no_secret_leaked(&[na, eu, ads_refresh]).await;
}

//! The `fake-amazon` binary: prints its address and defaults, serves, stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_amazon::defaults;

#[tokio::test(flavor = "multi_thread")]
async fn binary_prints_defaults_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-amazon"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auto-approve",
            "--redirect-uri",
            "http://127.0.0.1:9000/cb",
            "--expires-in-as-string",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.starts_with("control_api:"))
            .collect()
    })
    .await
    .unwrap();
    let base = lines[0]
        .strip_prefix("fake-amazon listening on ")
        .expect("first line names the address")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"));
    let text = lines.join("\n");
    for value in [
        defaults::SP_API_CLIENT_ID,
        defaults::SP_API_CLIENT_SECRET,
        defaults::SP_API_PREVIOUS_CLIENT_SECRET,
        defaults::SP_API_APPLICATION_ID,
        defaults::ADS_CLIENT_ID,
        defaults::SELLER_EU,
        defaults::ADVERTISER,
        "http://127.0.0.1:9000/cb",
    ] {
        assert!(text.contains(value), "{value} missing from:\n{text}");
    }

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!(
            "{base}/sellercentral.amazon.com/apps/authorize/consent?application_id={}&redirect_uri=http://127.0.0.1:9000/cb",
            defaults::SP_API_APPLICATION_ID
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "auto-approve");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut waited = Duration::ZERO;
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(waited < Duration::from_secs(5), "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
}

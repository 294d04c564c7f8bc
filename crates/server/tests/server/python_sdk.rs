//! python-amazon-sp-api, unmodified, against the broker's LWA-compatible `POST /auth/o2/token`:
//! its `auth_token_client_class` is a subclass that only sets `scheme` and `host` to the broker.
//! Eight worker processes (each with its own SDK token cache) call the fake's Sellers API for
//! every connection at once; the broker makes one LWA refresh per connection, counted at the fake.
//!
//! The same SDK with a proxy-only key and the broker as both its token URL and its SP-API endpoint
//! (`tests/python/sp_api_proxy.py`) makes SP-API calls, a restricted one included, through the
//! broker's proxy while holding only stand-in tokens.
//!
//! The SDK lives in a virtualenv: `LWA_BROKER_PYTHON`, else `/var/tmp/lwa-py/bin/python`
//! (`.ci/run` makes it from `tests/python/requirements.txt`). Missing: a failure when `CI` or
//! `LWA_BROKER_PYTHON` is set, else skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_amazon::{Principal, Region, SellerSpec, defaults};
use serde_json::{Value, json};

use crate::support::spawn;

const WORKERS: usize = 8;
const SP_NA: &str = "sellingpartnerapi-na.amazon.com";
const PARTICIPATIONS: &str = "/sellers/v1/marketplaceParticipations";
const RDT_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";
const DEFAULT_PYTHON: &str = "/var/tmp/lwa-py/bin/python";

/// The python that has the SDK, or `None` (said so) when there is none and none is required.
async fn python() -> Option<PathBuf> {
    let chosen = std::env::var_os("LWA_BROKER_PYTHON").filter(|p| !p.is_empty());
    let required = chosen.is_some() || std::env::var_os("CI").is_some();
    let path = chosen.map_or_else(|| PathBuf::from(DEFAULT_PYTHON), PathBuf::from);
    let probe = tokio::process::Command::new(&path)
        .args([
            "-c",
            "from sp_api.__version__ import __version__; print(__version__)",
        ])
        .output()
        .await;
    let why = match probe {
        Ok(out) if out.status.success() => return Some(path),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    let msg = format!(
        "{} cannot import sp_api ({why}); set LWA_BROKER_PYTHON to a python with \
         crates/server/tests/python/requirements.txt installed",
        path.display()
    );
    assert!(!required, "{msg}");
    println!("skipped: {msg}");
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

#[tokio::test]
async fn unmodified_python_sdk_in_eight_processes_makes_one_lwa_call_per_connection() {
    let Some(python) = python().await else {
        return;
    };
    let app = spawn().await;
    let control = app.fake.control();

    // Three sellers, each with one marketplace of its own, so an answer shows whose token it used.
    let sellers = [
        ("A1PYSDKSELLER01", "ATVPDKIKX0DER"),
        ("A1PYSDKSELLER02", "A2EUQ1WTGCTBG2"),
        ("A1PYSDKSELLER03", "A1AM78C64UM0Y8"),
    ];
    let mut handles = Vec::new();
    for (seller, marketplace) in sellers {
        control
            .register_seller(SellerSpec {
                selling_partner_id: seller.into(),
                region: Region::Na,
                store_name: Some(format!("Store {seller}")),
                marketplace_ids: vec![marketplace.into()],
                ..Default::default()
            })
            .await;
        let (connection, handle) = app.onboard_sp("na", Some(seller)).await;
        assert_eq!(connection["selling_partner_id"], seller);
        assert!(handle.starts_with("lwah_"), "a handle: {handle}");
        handles.push(handle);
    }

    // Every access token from onboarding has expired: each connection needs a refresh.
    app.advance(3600.0 + 60.0).await;
    control.reset_counters().await;

    let (key_id, key_secret) = app
        .key
        .strip_prefix("lwak_")
        .and_then(|rest| rest.split_once('_'))
        .expect("a key lwak_<id>_<secret>");
    let handles_file = app.dir.join("handles.json");
    std::fs::write(&handles_file, serde_json::to_vec(&handles).unwrap()).unwrap();
    let run = tokio::process::Command::new(&python)
        .arg(script("sp_api_workers.py"))
        .args(["--broker", &app.url])
        .args(["--fake", &app.fake.base_url()])
        .args(["--key-id", key_id, "--key-secret", key_secret])
        .arg("--handles-file")
        .arg(&handles_file)
        .args(["--workers", &WORKERS.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the workers finish within 5 minutes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK workers failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let summary: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}\n{stderr}"));
    assert_eq!(summary["ok"], true, "{summary:#}");

    // Every worker got every seller's own marketplaces, and all eight processes were handed the
    // same access token per connection (one token per connection, distinct between them).
    let workers = summary["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), WORKERS, "{summary:#}");
    let mut tokens: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for w in workers {
        assert_eq!(w["successes"], sellers.len(), "{w:#}");
        assert_eq!(w["failures"], serde_json::json!([]), "{w:#}");
        let calls = w["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), sellers.len(), "{w:#}");
        for call in calls {
            let h = usize::try_from(call["handle"].as_u64().expect("a handle index")).unwrap();
            let (seller, marketplace) = sellers[h];
            assert_eq!(call["first_marketplace_id"], marketplace, "{call:#}");
            assert_eq!(call["store_name"], format!("Store {seller}"), "{call:#}");
            tokens
                .entry(h)
                .or_default()
                .insert(call["access_token_sha256"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(tokens.len(), sellers.len());
    let distinct: BTreeSet<&String> = tokens.values().flatten().collect();
    assert!(
        tokens.values().all(|t| t.len() == 1) && distinct.len() == sellers.len(),
        "one access token per connection, shared by every worker: {tokens:?}"
    );

    // At the fake: one refresh per connection (not per worker, not per call), and nothing else.
    let counters = control.counters().await;
    assert_eq!(
        counters.lwa_total(),
        sellers.len() as u64,
        "LWA calls: {:#?}",
        counters.lwa
    );
    let mut refreshed: BTreeMap<String, u64> = BTreeMap::new();
    for c in &counters.lwa {
        assert_eq!(
            (c.grant_type.as_str(), c.outcome.as_str(), c.client_id.as_str()),
            ("refresh_token", "ok", defaults::SP_API_CLIENT_ID),
            "{c:?}"
        );
        let token = c.refresh_token.as_deref().expect("the refresh token sent");
        let info = control
            .token_info(token)
            .await
            .expect("a refresh token the fake issued");
        let Principal::Seller {
            selling_partner_id, ..
        } = info.principal
        else {
            panic!("a seller's refresh token: {:?}", info.principal);
        };
        *refreshed.entry(selling_partner_id).or_default() += c.count;
    }
    let expected: BTreeMap<String, u64> = sellers.iter().map(|(s, _)| ((*s).to_owned(), 1)).collect();
    assert_eq!(refreshed, expected, "one LWA refresh per connection");

    let calls = (WORKERS * sellers.len()) as u64;
    assert_eq!(
        counters.api_calls_with_status(SP_NA, PARTICIPATIONS, 200),
        calls,
        "{:#?}",
        counters.api
    );
    assert_eq!(counters.api_total(), calls, "{:#?}", counters.api);
}

/// Runs a script with the SDK's python; its JSON summary, or a failure with its output.
async fn run_script(python: &Path, name: &str, args: &[&str]) -> Value {
    let run = tokio::process::Command::new(python)
        .arg(script(name))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the script finishes within 5 minutes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}\n{stderr}"))
}

#[tokio::test]
async fn unmodified_python_sdk_with_a_proxy_only_key_calls_sp_api_through_the_broker_holding_only_stand_ins()
{
    let Some(python) = python().await else {
        return;
    };
    let app = spawn().await;
    let control = app.fake.control();
    let (seller, marketplace, order) = ("A1PYPROXYSELLER", "A2EUQ1WTGCTBG2", "123-1234567-1234567");
    control
        .register_seller(SellerSpec {
            selling_partner_id: seller.into(),
            region: Region::Na,
            store_name: Some(format!("Store {seller}")),
            marketplace_ids: vec![marketplace.into()],
            ..Default::default()
        })
        .await;
    let (connection, handle) = app.onboard_sp("na", Some(seller)).await;
    assert_eq!(connection["selling_partner_id"], seller);
    let proxy_key = lwa_server::admin::create_key(&app.state, &app.tenant_id, None, "proxy-only")
        .await
        .unwrap()
        .key
        .to_string();
    let (key_id, key_secret) = lwa_server::auth::split_key(&proxy_key).expect("a key");

    // The access token from onboarding has expired: the SDK's token request needs a refresh.
    app.advance(3600.0 + 60.0).await;
    control.reset_counters().await;
    control.clear_requests().await;

    let summary = run_script(
        &python,
        "sp_api_proxy.py",
        &[
            "--broker",
            &app.url,
            "--key-id",
            key_id,
            "--key-secret",
            key_secret,
            "--handle",
            &handle,
            "--order-id",
            order,
        ],
    )
    .await;
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["endpoint"], app.url.trim_end_matches('/'), "{summary:#}");

    // Both calls answered with the fake's data for this seller.
    assert_eq!(
        summary["participations"],
        json!({"marketplace_ids": [marketplace], "store_name": format!("Store {seller}")}),
        "{summary:#}"
    );
    assert_eq!(summary["order_address"]["AmazonOrderId"], order, "{summary:#}");
    assert!(
        summary["order_address"]["ShippingAddress"]["PostalCode"].is_string(),
        "{summary:#}"
    );
    assert!(summary["rdt_expires_in"].as_i64().unwrap() > 0, "{summary:#}");

    // Every token the SDK held is a stand-in: an access token and an RDT, never Amazon's.
    let held = summary["tokens_held"].as_array().expect("tokens_held");
    let whats: BTreeSet<&str> = held.iter().map(|t| t["what"].as_str().unwrap()).collect();
    assert!(
        whats.contains("access_token") && whats.contains("restrictedDataToken"),
        "{summary:#}"
    );
    for t in held {
        let value = t["value"].as_str().expect("a token value");
        assert!(value.starts_with("lwas_"), "not a stand-in: {t}");
        assert!(!value.contains("Atza|") && !value.contains("Atz.sprdt|"), "{t}");
    }
    let text = summary.to_string();
    assert!(
        !text.contains("Atza|") && !text.contains("Atz.sprdt|"),
        "{summary:#}"
    );

    // At the fake: the calls arrived on the SP-API host with real tokens, never a stand-in.
    let seen = control.requests(Some(SP_NA)).await;
    let token_for = |method: &str, path: &str| -> Vec<&str> {
        seen.iter()
            .filter(|r| r.method == method && r.path == path)
            .map(|r| r.headers.get("x-amz-access-token").map_or("", String::as_str))
            .collect()
    };
    let address_path = format!("/orders/v0/orders/{order}/address");
    let participations = token_for("GET", PARTICIPATIONS);
    let rdts = token_for("POST", RDT_PATH);
    let addresses = token_for("GET", &address_path);
    assert_eq!(participations.len(), 1, "{seen:#?}");
    assert_eq!(rdts.len(), 1, "{seen:#?}");
    assert_eq!(addresses.len(), 1, "{seen:#?}");
    assert!(participations[0].starts_with("Atza|"), "{seen:#?}");
    assert!(rdts[0].starts_with("Atza|"), "{seen:#?}");
    assert!(addresses[0].starts_with("Atz.sprdt|"), "{seen:#?}");
    assert_eq!(seen.len(), 3, "only these calls: {seen:#?}");
    for r in &seen {
        assert!(
            !r.headers.values().any(|v| v.contains("lwas_")) && !r.body.contains("lwas_"),
            "a stand-in reached Amazon: {r:#?}"
        );
    }

    // Counted at the fake: one call each, one RDT minted, one LWA refresh (the SDK's three
    // clients share one token, and the broker one refresh), nothing else.
    let counters = control.counters().await;
    assert_eq!(
        counters.api_calls_with_status(SP_NA, PARTICIPATIONS, 200),
        1,
        "{:#?}",
        counters.api
    );
    assert_eq!(
        counters.api_calls_with_status(SP_NA, RDT_PATH, 200),
        1,
        "{:#?}",
        counters.api
    );
    assert_eq!(
        counters.api_calls_with_status(SP_NA, &address_path, 200),
        1,
        "{:#?}",
        counters.api
    );
    assert_eq!(counters.api_total(), 3, "{:#?}", counters.api);
    assert_eq!(counters.lwa_calls("refresh_token"), 1, "{:#?}", counters.lwa);
    assert_eq!(
        counters.lwa_outcomes("refresh_token", "ok"),
        1,
        "{:#?}",
        counters.lwa
    );
    assert_eq!(counters.lwa_total(), 1, "{:#?}", counters.lwa);
}

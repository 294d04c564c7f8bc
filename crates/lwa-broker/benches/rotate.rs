//! `lwa-broker keys rotate` on a SQLite file of 100,000 connections: the key-rotation figure of
//! issue 6, run by hand.
//!
//! ```sh
//! cargo bench -p lwa-broker --bench rotate
//! ```
//!
//! A template database is built once: 100,000 connections whose refresh and access tokens
//! (400 characters each) are sealed with an old master key. Each run copies it to a fresh file
//! and runs the real binary, `lwa-broker keys rotate --json`, with the keys [new, old]; the
//! figure is the report's rows per second (the rotation itself, from its first read to its
//! last write); the process's wall time, start-up included, is shown beside it. After each run
//! every value must be on the new key. Bound: at least 20,000 connections per second.
//!
//! Knobs (environment): `ROTATE_BENCH_RUNS` (5), `ROTATE_BENCH_CONNECTIONS` (100000),
//! `ROTATE_BENCH_BATCH` (the command's default batch size when unset).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use lwa_seal::{Keyring, MasterKey};
use lwa_server::sealing::Sealer;
use lwa_store::{Connection, SqliteStore, Store, Tenant};
use serde_json::Value;

const BROKER: &str = env!("CARGO_BIN_EXE_lwa-broker");
/// Length of every stored token (the issue's "400-character tokens").
const TOKEN_LEN: usize = 400;
/// The bound of the issue.
const BOUND_ROWS_PER_SECOND: f64 = 20_000.0;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn token(prefix: &str, i: usize) -> String {
    let mut text = format!("{prefix}{i:08}-");
    let mut x = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
    while text.len() < TOKEN_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push(char::from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(x % 64) as usize],
        ));
    }
    text
}

async fn build_template(path: &Path, old: &MasterKey, connections: usize) {
    let store = SqliteStore::open_path(path).await.unwrap();
    store.migrate().await.unwrap();
    let sealer = Sealer::new(Keyring::new(old.clone()));
    lwa_server::state::check_master_key(&store, &sealer)
        .await
        .unwrap();
    store
        .insert_tenant(&Tenant {
            id: "ten_bench".into(),
            name: "Bench".into(),
            redirect_origins: vec!["https://bench.example.com".into()],
            sp_app: None,
            ads_app: None,
            webhook_url: None,
            signing_secret: Some(sealer.seal("ten_bench", "signing_secret", "whsec_bench", None)),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..connections {
        let id = format!("conn_bench{i:07}");
        let connection = Connection {
            id: id.clone(),
            tenant_id: "ten_bench".into(),
            app: "default".into(),
            api: "sp-api".into(),
            region: "na".into(),
            account_type: Some("seller".into()),
            marketplace_id: None,
            selling_partner_id: Some(format!("A1BENCH{i:07}")),
            name: None,
            status: "active".into(),
            refresh_token: Some(sealer.seal(&id, "refresh_token", &token("Atzr|", i), None)),
            access_token: Some(sealer.seal(&id, "access_token", &token("Atza|", i), None)),
            access_expires_at_ms: Some(3_600_000),
            tenant_secret: false,
            profiles: "[]".into(),
            authorized_at_ms: 0,
            last_refresh_at_ms: None,
            last_error: None,
            callback_url: None,
            claimed_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        store.insert_connection(&connection).await.unwrap();
    }
    // Closing the last connection checkpoints the WAL into the file, so the copy is complete.
    store.pool().close().await;
    eprintln!(
        "template: {connections} connections in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs = knob("ROTATE_BENCH_RUNS", 5).max(1);
    let connections = knob("ROTATE_BENCH_CONNECTIONS", 100_000);
    let batch = std::env::var("ROTATE_BENCH_BATCH").ok();
    let dir = std::env::temp_dir().join(format!("lwa-rotate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let keys = format!(
        "bench-new:{},bench-old:{}",
        new.to_base64().as_str(),
        old.to_base64().as_str()
    );
    let template = dir.join("template.db");
    build_template(&template, &old, connections).await;

    let mut rates = Vec::new();
    let mut walls = Vec::new();
    println!("| run | rows | rotation | rows/s | process wall time |");
    println!("|---|---|---|---|---|");
    for run in 1..=runs {
        let db = dir.join(format!("run-{run}.db"));
        std::fs::copy(&template, &db).unwrap();
        let mut command = Command::new(BROKER);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("LWA_BROKER_MASTER_KEYS", &keys)
            .env("LWA_BROKER_LOG", "warn")
            .args([
                "--database",
                &format!("sqlite:{}", db.display()),
                "keys",
                "rotate",
                "--json",
            ]);
        if let Some(batch) = &batch {
            command.args(["--batch-size", batch]);
        }
        let started = Instant::now();
        let output = command.output().unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(
            output.status.success(),
            "keys rotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["still_on_other_keys"], 0, "{report}");
        let rows = report["rows"].as_u64().unwrap();
        assert!(rows as usize > connections, "{report}");
        let elapsed = report["elapsed_seconds"].as_f64().unwrap();
        let rate = report["rows_per_second"].as_f64().unwrap();
        println!("| {run} | {rows} | {elapsed:.2} s | {rate:.0} | {wall:.2} s |");
        rates.push(rate);
        walls.push(wall);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let rate = median(&rates);
    println!(
        "\nMedian **{rate:.0} rows/s** (spread {min:.0}–{max:.0}) over {runs} runs; median process wall \
         time {:.2} s.",
        median(&walls)
    );
    println!(
        "keys rotate ≥ {BOUND_ROWS_PER_SECOND:.0} connections/s: median {rate:.0} — {}",
        if rate >= BOUND_ROWS_PER_SECOND {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

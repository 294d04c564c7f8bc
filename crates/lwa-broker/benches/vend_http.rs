//! Vending over HTTP: the speed figures of the vending issue, run by hand.
//!
//! ```sh
//! cargo bench -p lwa-broker --bench vend_http                 # everything
//! cargo bench -p lwa-broker --bench vend_http -- throughput   # or memory, or storm
//! cargo bench -p lwa-broker --bench vend_http -- postgres     # only when asked
//! ```
//!
//! Every server is a process of its own: the real `lwa-broker serve` on a temporary SQLite
//! database, and a bare axum server (this executable run again with `--bare-server`) answering
//! the same request with a fixed JSON body of the size of a vend answer. One load generator
//! (below, in this process: keep-alive HTTP/1.1, one request in flight per connection) drives
//! both in the same run. The fake Amazon runs in this process.
//!
//! - **throughput**: cached vends, 64 client connections, round robin over 10,000 stored
//!   connections, closed loop; then an open loop at half the broker's median maximum, latency
//!   measured from each request's scheduled send time (no coordinated omission). The open loop
//!   runs on one thread of its own that keeps the schedule, sends, and reads the answers (see
//!   `open_loop`).
//!   Bounds: broker ≥ 70 % of bare axum; p99 < 2 ms.
//! - **memory**: 100,000 stored connections (400-character tokens), each vended once; the
//!   broker's resident memory. Bound: < 150 MB.
//! - **storm**: 5,000 concurrent vends of one expired token from another process (this
//!   executable run again with `--storm-client`), while the fake's token endpoint answers
//!   slowly. Bound: one LWA call.
//! - **postgres** (not in the default set; needs PostgreSQL at `LWA_BROKER_TEST_POSTGRES_URL`,
//!   default `postgres://postgres@127.0.0.1:5432/test`): cached vends on PostgreSQL against the
//!   same on SQLite, alternating runs. Bound: PostgreSQL ≥ 80 % of SQLite. Then 1, 2 and 3
//!   replicas on the one PostgreSQL, the clients spread over them: requests per second, LWA
//!   calls and database statements (sqlx's statement log, counted) per 1,000 vends.
//!
//! Knobs (environment): `VEND_BENCH_RUNS` (5), `VEND_BENCH_SECONDS` (10),
//! `VEND_BENCH_WARMUP_SECONDS` (2), `VEND_BENCH_CLIENTS` (64), `VEND_BENCH_CONNECTIONS` (10000),
//! `VEND_BENCH_MEMORY_CONNECTIONS` (100000), `VEND_BENCH_STORM` (5000),
//! `VEND_BENCH_BARE_RUNTIME` (`multi`, the `#[tokio::main]` default, or `current`),
//! `VEND_BENCH_CLIENT_THREADS` (1: the load generator's runtime threads), `VEND_BENCH_NICE`
//! (0: the load generator's priority; negative, when allowed, raises it above the servers', which
//! keeps its clock readings exact but lets it preempt a server thread whenever it wakes),
//! `VEND_BENCH_BROKER_HTTP_THREADS` (unset: the broker's default, `LWA_BROKER_HTTP_THREADS` two a
//! core; 0 serves on its multi-thread runtime).

mod common;

use common::http::{HttpConn, complete_answer};
use common::{knob, machine_seconds, median, spread};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_amazon::{FakeAmazon, FakeConfig, FaultSpec, FaultTarget, defaults};
use lwa_server::admin::{NewTenant, create_tenant};
use lwa_server::config::{Overrides, Settings};
use lwa_server::connections::new_connection;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BROKER: &str = env!("CARGO_BIN_EXE_lwa-broker");
/// Length of every stored token (the issue's "400-character tokens").
const TOKEN_LEN: usize = 400;
/// How long the fake's token endpoint takes during the storm, so that every vend arrives while
/// the one refresh is in flight.
const STORM_LWA_LATENCY_MS: u64 = 300;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--bare-server") => return bare_server(&args[2..]),
        Some("--storm-client") => return storm_client(&args[2..]),
        _ => {}
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without `--bench`: nothing to check here.
        println!("vend_http: run it with `cargo bench -p lwa-broker --bench vend_http`");
        return;
    }
    let only: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |name: &str| (only.is_empty() && name != "postgres") || only.contains(&name);
    let knobs = Knobs::from_env();
    let boosted = boost_priority(knobs.nice);
    // The load generator (and the fake Amazon, idle while it measures) on as few threads as
    // asked: on a small machine every extra runnable thread adds to the latency it measures.
    let mut builder = if knobs.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(knobs.client_threads);
        b
    };
    let runtime = builder.enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let bench = Bench::start(knobs, boosted).await;
        let mut report = bench.header();
        let mut verdicts = Vec::new();
        if wanted("throughput") {
            let (text, verdict) = bench.throughput().await;
            report.push_str(&text);
            verdicts.extend(verdict);
        }
        if wanted("memory") {
            let (text, verdict) = bench.memory().await;
            report.push_str(&text);
            verdicts.extend(verdict);
        }
        if wanted("storm") {
            let (text, verdict) = bench.storm().await;
            report.push_str(&text);
            verdicts.extend(verdict);
        }
        if wanted("postgres") {
            let (text, verdict) = bench.postgres().await;
            report.push_str(&text);
            verdicts.extend(verdict);
        }
        report.push_str("\n### Bounds\n\n");
        for v in &verdicts {
            report.push_str(&format!("- {v}\n"));
        }
        println!("\n{report}");
        let _ = std::fs::remove_dir_all(&bench.dir);
    });
}

// ---------------------------------------------------------------------------------------------
// Settings of a run

#[derive(Debug, Clone)]
struct Knobs {
    runs: usize,
    seconds: f64,
    warmup: f64,
    clients: usize,
    connections: usize,
    memory_connections: usize,
    storm: usize,
    bare_runtime: String,
    client_threads: usize,
    nice: i32,
    /// The broker's `LWA_BROKER_HTTP_THREADS`; `None`: its default, two a core.
    broker_http_threads: Option<usize>,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            runs: knob("VEND_BENCH_RUNS", 5usize).max(1),
            seconds: knob("VEND_BENCH_SECONDS", 10.0),
            warmup: knob("VEND_BENCH_WARMUP_SECONDS", 2.0),
            clients: knob("VEND_BENCH_CLIENTS", 64usize).max(1),
            connections: knob("VEND_BENCH_CONNECTIONS", 10_000usize).max(1),
            memory_connections: knob("VEND_BENCH_MEMORY_CONNECTIONS", 100_000usize).max(1),
            storm: knob("VEND_BENCH_STORM", 5_000usize).max(1),
            bare_runtime: knob("VEND_BENCH_BARE_RUNTIME", "multi".to_owned()),
            client_threads: knob("VEND_BENCH_CLIENT_THREADS", 1usize),
            nice: knob("VEND_BENCH_NICE", 0i32).min(0),
            broker_http_threads: std::env::var("VEND_BENCH_BROKER_HTTP_THREADS")
                .ok()
                .map(|_| knob("VEND_BENCH_BROKER_HTTP_THREADS", 0usize)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bench: a fake Amazon, a scratch directory, and the scenarios

struct Bench {
    knobs: Knobs,
    /// The load generator runs at `knobs.nice`, the servers at the usual 0.
    boosted: bool,
    fake: FakeAmazon,
    dir: PathBuf,
    master_key: String,
    clock_ticks: f64,
}

impl Bench {
    async fn start(knobs: Knobs, boosted: bool) -> Bench {
        let dir = std::env::temp_dir().join(format!("lwa-vend-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let fake = FakeAmazon::start(FakeConfig::default())
            .await
            .expect("the fake Amazon starts");
        let master_key = lwa_seal::MasterKey::generate().to_base64().to_string();
        let clock_ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        check_fd_limit(knobs.storm.max(knobs.clients) + 200);
        Bench {
            knobs,
            boosted,
            fake,
            dir,
            master_key,
            clock_ticks,
        }
    }

    fn header(&self) -> String {
        let k = &self.knobs;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        format!(
            "## Vending over HTTP\n\nMachine: {cores} cores ({model}), shared by the servers and the load \
             generator. {runs} runs of {secs} s after {warm} s of warm-up; {clients} keep-alive HTTP/1.1 \
             client connections, one request in flight on each. Bare axum runtime: {rt}. Broker HTTP \
             threads: {http}. {prio}\n",
            http = match k.broker_http_threads {
                None => "two a core (the default)".to_owned(),
                Some(0) => "none (served on its multi-thread runtime)".to_owned(),
                Some(n) => n.to_string(),
            },
            runs = k.runs,
            secs = k.seconds,
            warm = k.warmup,
            clients = k.clients,
            prio = if self.boosted {
                format!(
                    "The load generator runs at nice {} (the servers at 0), so that its clock readings \
                     are not late when the machine is busy.",
                    k.nice
                )
            } else {
                "The load generator runs at the servers' priority.".to_owned()
            },
            rt = if k.bare_runtime == "current" {
                "current-thread"
            } else {
                "multi-thread (`#[tokio::main]`)"
            },
        )
    }

    /// The broker's environment, also used in this process to write its database.
    fn broker_env(&self, dir: &Path, fake_clock: bool) -> HashMap<String, String> {
        let pairs = [
            (
                "LWA_BROKER_DATABASE_URL",
                format!("sqlite:{}", dir.join("broker.db").display()),
            ),
            ("LWA_BROKER_MASTER_KEY", self.master_key.clone()),
            (
                "LWA_BROKER_KEY_FILE",
                dir.join("unused.key").display().to_string(),
            ),
            ("LWA_BROKER_AMAZON_BASE_URL", self.fake.base_url()),
            (
                "LWA_BROKER_FAKE_CLOCK",
                if fake_clock { "1" } else { "0" }.to_owned(),
            ),
            ("LWA_BROKER_LOG", "warn".to_owned()),
            ("LWA_BROKER_NO_BROWSER", "1".to_owned()),
            ("AMAZON_CLIENT_ID", defaults::SP_API_CLIENT_ID.to_owned()),
            ("AMAZON_CLIENT_SECRET", defaults::SP_API_CLIENT_SECRET.to_owned()),
            (
                "LWA_BROKER_APPLICATION_ID",
                defaults::SP_API_APPLICATION_ID.to_owned(),
            ),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn scenario_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scenario directory");
        dir
    }

    /// A command for a server or client process, at the usual priority.
    fn command(&self, program: &Path) -> Command {
        if self.boosted {
            let mut command = Command::new("nice");
            command.arg("-n").arg((-self.knobs.nice).to_string()).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    async fn broker(&self, dir: &Path, env: &HashMap<String, String>) -> Server {
        let mut command = self.command(Path::new(BROKER));
        command.args(["serve", "--listen", "127.0.0.1:0"]).env_clear();
        for name in ["PATH", "TMPDIR", "LANG"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("HOME", dir).envs(env).current_dir(dir);
        if let Some(threads) = self.knobs.broker_http_threads {
            command.env("LWA_BROKER_HTTP_THREADS", threads.to_string());
        }
        Server::spawn("broker", command, &dir.join("broker.log"), self.clock_ticks).await
    }

    async fn bare(&self, dir: &Path, body: &[u8]) -> Server {
        std::fs::write(dir.join("body.json"), body).expect("write the bare body");
        let mut command = self.command(&std::env::current_exe().expect("this executable"));
        command
            .arg("--bare-server")
            .arg(dir.join("body.json"))
            .arg(&self.knobs.bare_runtime);
        Server::spawn("bare axum", command, &dir.join("bare.log"), self.clock_ticks).await
    }

    // -----------------------------------------------------------------------------------------

    async fn throughput(&self) -> (String, Vec<String>) {
        let k = &self.knobs;
        let dir = self.scenario_dir("throughput");
        let env = self.broker_env(&dir, false);
        let started = Instant::now();
        let (key, ids) = populate(&env, k.connections).await;
        eprintln!(
            "throughput: wrote {} connections in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        let broker = self.broker(&dir, &env).await;
        let broker_target = Arc::new(Target::new(broker.addr, &key, &ids));
        let body = one_vend_body(&broker_target).await;
        let bare = self.bare(&dir, &body).await;
        let bare_target = Arc::new(Target::new(bare.addr, &key, &ids));

        // Fill the cache: every stored connection vended once.
        let fill = each_once(&broker_target, k.clients).await;
        eprintln!(
            "throughput: first vend of each connection: {:.0}/s, {} errors",
            fill.rate, fill.errors
        );
        let _ = each_once(&bare_target, k.clients).await;

        let mut closed = Vec::new();
        for run in 0..k.runs {
            // Alternate the order, so a slow drift of the machine favours neither side.
            let (b, a) = if run % 2 == 0 {
                let a = closed_loop(&bare_target, &bare, k).await;
                let b = closed_loop(&broker_target, &broker, k).await;
                (b, a)
            } else {
                let b = closed_loop(&broker_target, &broker, k).await;
                let a = closed_loop(&bare_target, &bare, k).await;
                (b, a)
            };
            eprintln!(
                "throughput run {}: bare {:.0}/s, broker {:.0}/s ({:.2})",
                run + 1,
                a.rate,
                b.rate,
                b.rate / a.rate
            );
            closed.push((a, b));
        }
        let broker_max = median(&closed.iter().map(|(_, b)| b.rate).collect::<Vec<_>>());
        let rate = (broker_max / 2.0).max(1.0);
        let mut open = Vec::new();
        for run in 0..k.runs {
            let b = open_loop(&broker_target, &broker, rate, k).await;
            let a = open_loop(&bare_target, &bare, rate, k).await;
            eprintln!(
                "latency run {}: broker p99 {:.2} ms, bare p99 {:.2} ms\n  broker p99/max per second (ms): {}\n  \
                 bare p99/max per second (ms): {}",
                run + 1,
                b.p99,
                a.p99,
                b.timeline,
                a.timeline
            );
            open.push((a, b));
        }

        let mut out = String::new();
        out.push_str(&format!(
            "\n### Cached vends, closed loop ({} clients, round robin over {} connections)\n\n\
             CPU is user + system time over the measured seconds, in cores; the load generator's, \
             the other processes' and the time stolen by the hypervisor are given for the bare run / \
             the broker run.\n\n\
             | run | bare axum req/s | bare CPU | broker req/s | broker CPU | load generator CPU | other processes' CPU | stolen | broker / bare |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            k.clients,
            ids.len()
        ));
        for (i, (a, b)) in closed.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |\n",
                i + 1,
                a.rate,
                a.server_cpu,
                b.rate,
                b.server_cpu,
                a.client_cpu,
                b.client_cpu,
                a.other_cpu,
                b.other_cpu,
                a.steal,
                b.steal,
                b.rate / a.rate
            ));
        }
        let ratios: Vec<f64> = closed.iter().map(|(a, b)| b.rate / a.rate).collect();
        let bare_rates: Vec<f64> = closed.iter().map(|(a, _)| a.rate).collect();
        let broker_rates: Vec<f64> = closed.iter().map(|(_, b)| b.rate).collect();
        let errors: u64 = closed.iter().map(|(a, b)| a.errors + b.errors).sum();
        let per_request = |r: &Throughput| r.server_cpu / r.rate * 1e6;
        out.push_str(&format!(
            "\nMedian: bare axum **{}** req/s, broker **{}** req/s, ratio **{}**. Server CPU per \
             request: bare {} µs, broker {} µs. Non-200 answers: {errors}.\n",
            spread(&bare_rates, 0),
            spread(&broker_rates, 0),
            spread(&ratios, 2),
            spread(&closed.iter().map(|(a, _)| per_request(a)).collect::<Vec<_>>(), 1),
            spread(&closed.iter().map(|(_, b)| per_request(b)).collect::<Vec<_>>(), 1),
        ));
        let gap = 1e6 / rate;
        out.push_str(&format!(
            "\n### Latency at a fixed rate of {rate:.0} req/s (half the broker's median maximum)\n\n\
             Open loop: each request has a scheduled send time; latency runs from that time to the \
             last byte of the answer, and a request goes out on the connection free longest. One \
             thread keeps the schedule, sends and reads the answers (an answer is noticed when it \
             wakes for the next send: late by at most the gap between sends, {gap:.0} µs here, plus \
             the timer's slack, about 50 µs). The send delay is how \
             late a request left (every connection busy, or the load generator late); \"generator \
             late\" is the load generator's own lateness (broker run / bare run).\n\n\
             | run | broker p50 | broker p99 | broker p99.9 | broker max | broker p99 from actual send | broker send delay p99 | broker CPU | other CPU / stolen | bare p50 | bare p99 | bare p99 from actual send | generator late p99 |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
        for (i, (a, b)) in open.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.2} ms | {:.3} ms | {:.3} ms | {:.2} | {:.2} / {:.2} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} / {:.3} ms |\n",
                i + 1,
                b.p50,
                b.p99,
                b.p999,
                b.max,
                b.service_p99,
                b.send_delay_p99,
                b.server_cpu,
                b.other_cpu,
                b.steal,
                a.p50,
                a.p99,
                a.service_p99,
                b.generator_late_p99,
                a.generator_late_p99,
            ));
        }
        out.push_str(&format!(
            "\nBroker p99/max latency per second of each run (ms):\n\n{}\n",
            open.iter()
                .enumerate()
                .map(|(i, (_, b))| format!("- run {}: {}\n", i + 1, b.timeline))
                .collect::<String>()
        ));
        let p99s: Vec<f64> = open.iter().map(|(_, b)| b.p99).collect();
        let open_errors: u64 = open.iter().map(|(a, b)| a.errors + b.errors).sum();
        let achieved: Vec<f64> = open.iter().map(|(_, b)| b.rate).collect();
        out.push_str(&format!(
            "\nBroker p99: median **{}** ms; achieved rate {} req/s. Non-200 answers: {open_errors}.\n",
            spread(&p99s, 3),
            spread(&achieved, 0)
        ));
        let ratio = median(&ratios);
        let p99 = median(&p99s);
        let verdicts = vec![
            format!(
                "cached vends ≥ 70 % of bare axum: median {:.0} % — {}",
                ratio * 100.0,
                met(ratio >= 0.7 && errors == 0)
            ),
            format!(
                "p99 at half the broker's maximum < 2 ms: median {p99:.3} ms — {}",
                met(p99 < 2.0 && open_errors == 0)
            ),
        ];
        (out, verdicts)
    }

    // -----------------------------------------------------------------------------------------

    async fn memory(&self) -> (String, Vec<String>) {
        let k = &self.knobs;
        let dir = self.scenario_dir("memory");
        let env = self.broker_env(&dir, false);
        let started = Instant::now();
        let (key, ids) = populate(&env, k.memory_connections).await;
        eprintln!(
            "memory: wrote {} connections in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        let runs = k.runs.min(3);
        let mut rows = Vec::new();
        for run in 0..runs {
            let broker = self.broker(&dir, &env).await;
            let target = Arc::new(Target::new(broker.addr, &key, &ids));
            let idle = broker.memory();
            let pass = each_once(&target, k.clients).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = broker.memory();
            // Once the broker's periodic work (the audit trail's writer) has run.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let settled = broker.memory();
            eprintln!(
                "memory run {}: RSS {:.1} MB after vending each once ({:.0}/s, {} errors)",
                run + 1,
                after.rss_mb,
                pass.rate,
                pass.errors
            );
            rows.push((idle, after, settled, pass));
        }
        let mut out = format!(
            "\n### Resident memory: {} stored connections ({TOKEN_LEN}-character tokens), each vended once\n\n\
             A new broker process per run on the same database.\n\n\
             | run | RSS at start | RSS after | RSS 6 s later | peak RSS (VmHWM) | first vends req/s | non-200 |\n\
             |---|---|---|---|---|---|---|\n",
            ids.len()
        );
        for (i, (idle, after, settled, pass)) in rows.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.0} | {} |\n",
                i + 1,
                idle.rss_mb,
                after.rss_mb,
                settled.rss_mb,
                settled.hwm_mb,
                pass.rate,
                pass.errors
            ));
        }
        let after: Vec<f64> = rows.iter().map(|(_, a, _, _)| a.rss_mb).collect();
        let errors: u64 = rows.iter().map(|(_, _, _, p)| p.errors).sum();
        let settled: Vec<f64> = rows.iter().map(|(_, _, s, _)| s.rss_mb).collect();
        out.push_str(&format!(
            "\nRSS after: median **{}** MB; 6 s later {} MB.\n",
            spread(&after, 1),
            spread(&settled, 1)
        ));
        let rss = median(&after);
        let verdict = format!(
            "RSS with {} connections vended once < 150 MB: median {rss:.1} MB — {}",
            ids.len(),
            met(rss < 150.0 && errors == 0)
        );
        (out, vec![verdict])
    }

    // -----------------------------------------------------------------------------------------

    async fn storm(&self) -> (String, Vec<String>) {
        let k = &self.knobs;
        let dir = self.scenario_dir("storm");
        let mut env = self.broker_env(&dir, true);
        // The vend path's single flight is measured: the background refresher, which would take
        // the expired token up on its own within a second, stays off.
        env.insert("LWA_BROKER_REFRESHER".to_owned(), "off".to_owned());
        let (key, _) = populate(&env, 0).await;
        let broker = self.broker(&dir, &env).await;
        let control = self.fake.control();
        let http = reqwest::Client::new();
        let base = format!("http://{}", broker.addr);
        let refresh_token = control
            .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
            .await;
        let imported: Value = http
            .post(format!("{base}/v1/connections/import"))
            .bearer_auth(&key)
            .json(&json!([{"region": "na", "refresh_token": refresh_token, "selling_partner_id": defaults::SELLER_NA}]))
            .send()
            .await
            .expect("import answers")
            .json()
            .await
            .expect("import answers JSON");
        let id = imported["results"][0]["connection"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("import failed: {imported}"))
            .to_owned();
        let target = Target::new(broker.addr, &key, std::slice::from_ref(&id));

        let runs = k.runs.min(3);
        let mut rows = Vec::new();
        for run in 0..runs {
            // A cached, fresh token first; then the fake's clock moves past its expiry.
            let body = one_vend_body(&target).await;
            let before: Value = serde_json::from_slice(&body).expect("a vend answer");
            let expires_in = before["expires_in"].as_i64().unwrap_or(3600);
            control.advance_clock(expires_in as f64 + 60.0).await;
            // The broker reads the fake's clock every 100 ms.
            tokio::time::sleep(Duration::from_millis(500)).await;
            control.clear_faults().await;
            control
                .add_fault(FaultSpec {
                    target: FaultTarget::Lwa,
                    latency_ms: Some(STORM_LWA_LATENCY_MS),
                    ..FaultSpec::default()
                })
                .await;
            control.reset_counters().await;
            let output = self
                .command(&std::env::current_exe().expect("this executable"))
                .arg("--storm-client")
                .arg(broker.addr.to_string())
                .arg(&key)
                .arg(&id)
                .arg(k.storm.to_string())
                .env(
                    "VEND_BENCH_OLD_TOKEN",
                    before["access_token"].as_str().unwrap_or_default(),
                )
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .await
                .expect("the storm client runs");
            let counters = control.counters().await;
            control.clear_faults().await;
            let text = String::from_utf8_lossy(&output.stdout);
            let result: Value = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("the storm client printed no result: {text}"));
            let calls = counters.lwa_calls("refresh_token");
            eprintln!(
                "storm run {}: {calls} refresh call(s), {} of {} answered 200",
                run + 1,
                result["ok"],
                result["requests"]
            );
            rows.push((calls, result));
        }
        let mut out = format!(
            "\n### {} concurrent vends of one expired token, from a separate client process\n\n\
             The client opens every connection first, then sends all requests at once. The fake's \
             token endpoint answers after {STORM_LWA_LATENCY_MS} ms, so every vend arrives while the \
             refresh is in flight.\n\n\
             | run | LWA refresh calls | 200 answers | distinct tokens | old token served | first answer | last answer |\n\
             |---|---|---|---|---|---|---|\n",
            k.storm
        );
        let mut all_met = true;
        for (i, (calls, r)) in rows.iter().enumerate() {
            let ok = r["ok"].as_u64().unwrap_or(0);
            let distinct = r["distinct_tokens"].as_u64().unwrap_or(0);
            let stale = r["old_token_answers"].as_u64().unwrap_or(0);
            all_met &= *calls == 1 && ok == k.storm as u64 && distinct == 1 && stale == 0;
            out.push_str(&format!(
                "| {} | {calls} | {ok} of {} | {distinct} | {stale} | {:.0} ms | {:.0} ms |\n",
                i + 1,
                r["requests"],
                r["first_ms"].as_f64().unwrap_or(0.0),
                r["last_ms"].as_f64().unwrap_or(0.0),
            ));
        }
        let verdict = format!(
            "{} concurrent vends on one expired token make one LWA call: {} — {}",
            k.storm,
            rows.iter()
                .map(|(c, _)| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            met(all_met)
        );
        (out, vec![verdict])
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL against SQLite, and several replicas

/// A schema of its own in the benchmark's PostgreSQL database, dropped at the end.
struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    async fn create() -> PgSchema {
        use sqlx::Connection;
        let admin_url = std::env::var("LWA_BROKER_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("lwa_bench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}"));
        for statement in [
            format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
            format!("CREATE SCHEMA {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .expect("a schema");
        }
        PgSchema { admin_url, name }
    }

    fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.admin_url, self.name)
    }

    async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Statements a broker has run so far, from sqlx's statement log in its log file.
fn statements_logged(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("broker.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sqlx::query"))
        .count() as u64
}

impl Bench {
    async fn postgres(&self) -> (String, Vec<String>) {
        let k = &self.knobs;
        let schema = PgSchema::create().await;
        let control = self.fake.control();
        let logged = |mut env: HashMap<String, String>| {
            env.insert("LWA_BROKER_LOG".into(), "warn,sqlx::query=debug".into());
            env.insert("LWA_BROKER_REFRESHER".into(), "off".into());
            env
        };
        let lite_dir = self.scenario_dir("sqlite");
        let lite_env = logged(self.broker_env(&lite_dir, false));
        let pg_dir = self.scenario_dir("postgres-0");
        let mut pg_env = logged(self.broker_env(&pg_dir, false));
        pg_env.insert("LWA_BROKER_DATABASE_URL".into(), schema.url());
        let started = Instant::now();
        let (lite_key, lite_ids) = populate(&lite_env, k.connections).await;
        let (pg_key, pg_ids) = populate(&pg_env, k.connections).await;
        eprintln!(
            "postgres: wrote {} connections to each database in {:.1} s",
            k.connections,
            started.elapsed().as_secs_f64()
        );
        let lite = self.broker(&lite_dir, &lite_env).await;
        let mut pgs = vec![self.broker(&pg_dir, &pg_env).await];
        let lite_target = Arc::new(Target::new(lite.addr, &lite_key, &lite_ids));
        let mut pg_targets = vec![Arc::new(Target::new(pgs[0].addr, &pg_key, &pg_ids))];
        let _ = each_once(&lite_target, k.clients).await;
        let _ = each_once(&pg_targets[0], k.clients).await;

        // Cached vends on each backend, alternating.
        let lwa_before = control.counters().await.lwa_calls("refresh_token");
        let mut pairs = Vec::new();
        for run in 0..k.runs {
            let measure = |on_pg: bool| {
                let (target, server, dir) = if on_pg {
                    (&pg_targets[0], &pgs[0], &pg_dir)
                } else {
                    (&lite_target, &lite, &lite_dir)
                };
                async move {
                    let before = statements_logged(dir);
                    let t = closed_loop(target, server, k).await;
                    (t, statements_logged(dir) - before)
                }
            };
            let (l, p) = if run % 2 == 0 {
                let l = measure(false).await;
                (l, measure(true).await)
            } else {
                let p = measure(true).await;
                (measure(false).await, p)
            };
            eprintln!(
                "postgres run {}: SQLite {:.0}/s, PostgreSQL {:.0}/s ({:.2})",
                run + 1,
                l.0.rate,
                p.0.rate,
                p.0.rate / l.0.rate
            );
            pairs.push((l, p));
        }
        let lwa_calls = control.counters().await.lwa_calls("refresh_token") - lwa_before;
        drop(lite);

        // Per 1,000 vends: the statements a run logged over the vends it made (warm-up included).
        let per_1000 =
            |t: &Throughput, statements: u64| statements as f64 / (t.rate * (k.seconds + k.warmup)) * 1000.0;
        let mut out = format!(
            "\n### Cached vends on PostgreSQL against SQLite ({} clients, {} connections each, alternating runs)\n\n\
             | run | SQLite req/s | SQLite CPU | PostgreSQL req/s | PostgreSQL broker CPU | PostgreSQL / SQLite | statements per 1,000 vends SQLite / PostgreSQL |\n\
             |---|---|---|---|---|---|---|\n",
            k.clients, k.connections
        );
        for (i, ((l, ls), (p, ps))) in pairs.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} / {:.2} |\n",
                i + 1,
                l.rate,
                l.server_cpu,
                p.rate,
                p.server_cpu,
                p.rate / l.rate,
                per_1000(l, *ls),
                per_1000(p, *ps)
            ));
        }
        let ratios: Vec<f64> = pairs.iter().map(|((l, _), (p, _))| p.rate / l.rate).collect();
        let errors: u64 = pairs.iter().map(|((l, _), (p, _))| l.errors + p.errors).sum();
        out.push_str(&format!(
            "\nMedian: SQLite **{}** req/s, PostgreSQL **{}** req/s, ratio **{}**. LWA refresh calls \
             during these runs: {lwa_calls}. Non-200 answers: {errors}.\n",
            spread(&pairs.iter().map(|((l, _), _)| l.rate).collect::<Vec<_>>(), 0),
            spread(&pairs.iter().map(|(_, (p, _))| p.rate).collect::<Vec<_>>(), 0),
            spread(&ratios, 2),
        ));
        let ratio = median(&ratios);
        let verdicts = vec![format!(
            "cached vends on PostgreSQL ≥ 80 % of SQLite: median {:.0} % — {}",
            ratio * 100.0,
            met(ratio >= 0.8 && errors == 0)
        )];

        // 1, 2 and 3 replicas on the one database, the clients spread over them.
        let mut pg_dirs = vec![pg_dir.clone()];
        for n in 1..3 {
            let dir = self.scenario_dir(&format!("postgres-{n}"));
            let mut env = pg_env.clone();
            env.insert(
                "LWA_BROKER_KEY_FILE".into(),
                dir.join("unused.key").display().to_string(),
            );
            let server = self.broker(&dir, &env).await;
            let target = Arc::new(Target::new(server.addr, &pg_key, &pg_ids));
            let _ = each_once(&target, k.clients).await;
            pgs.push(server);
            pg_targets.push(target);
            pg_dirs.push(dir);
        }
        out.push_str(&format!(
            "\n### 1, 2 and 3 replicas on one PostgreSQL ({} clients spread over the replicas)\n\n\
             Every replica has vended every connection once before. Statements are all the \
             replicas' together, background work included.\n\n\
             | replicas | req/s (median of {} runs, spread) | replicas' CPU | LWA calls per 1,000 vends | statements per 1,000 vends |\n\
             |---|---|---|---|---|\n",
            k.clients, k.runs
        ));
        for n in 1..=3 {
            let servers: Vec<&Server> = pgs[..n].iter().collect();
            let (mut rates, mut cpu, mut vends, mut statements) = (Vec::new(), Vec::new(), 0.0, 0u64);
            let lwa_before = control.counters().await.lwa_calls("refresh_token");
            for _ in 0..k.runs {
                let before: u64 = pg_dirs[..n].iter().map(|d| statements_logged(d)).sum();
                let t = closed_loop_over(&pg_targets[..n], &servers, k).await;
                statements += pg_dirs[..n].iter().map(|d| statements_logged(d)).sum::<u64>() - before;
                vends += t.rate * (k.seconds + k.warmup);
                rates.push(t.rate);
                cpu.push(t.server_cpu);
            }
            let lwa = control.counters().await.lwa_calls("refresh_token") - lwa_before;
            eprintln!("postgres: {n} replica(s): {:.0}/s", median(&rates));
            out.push_str(&format!(
                "| {n} | {} | {} | {:.2} | {:.2} |\n",
                spread(&rates, 0),
                spread(&cpu, 2),
                lwa as f64 / vends * 1000.0,
                statements as f64 / vends * 1000.0
            ));
        }
        drop(pgs);
        schema.drop_now().await;
        (out, verdicts)
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// Lowers this process's nice value (`renice`, before any other thread exists: threads inherit
/// it); false when not allowed or asked for 0.
fn boost_priority(nice: i32) -> bool {
    if nice == 0 {
        return false;
    }
    let done = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        eprintln!("note: could not renice the load generator to {nice}; it runs at the servers' priority");
    }
    done
}

/// Warns when this process may not open enough sockets.
fn check_fd_limit(needed: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < needed
    {
        eprintln!(
            "warning: the open-file limit is {soft}, the storm needs about {needed}: run `ulimit -n {needed}` first"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The database, written before the broker starts

/// Creates a tenant with an API key and `n` active connections whose fresh 400-character
/// access tokens expire in an hour; returns the key and the connection ids.
async fn populate(env: &HashMap<String, String>, n: usize) -> (String, Vec<String>) {
    let settings = Settings::resolve(&Overrides::default(), &|name| env.get(name).cloned())
        .expect("the broker's settings");
    let public = url::Url::parse("http://127.0.0.1:1").expect("a URL");
    let state = lwa_server::open_state(&settings, public)
        .await
        .expect("the broker's database opens");
    let (tenant, key) = create_tenant(
        &state,
        NewTenant {
            name: "bench".into(),
            redirect_origins: vec!["https://bench.example.com".into()],
            ..NewTenant::default()
        },
    )
    .await
    .expect("a tenant");
    let app = state.app("default").expect("the AMAZON_CLIENT_ID app").clone();
    let now = state.now_ms();
    let mut random = Random::seeded();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = new_connection(&tenant.id, &app, lwa::Region::Na, now);
        let refresh = format!("Atzr|{}", random.text(TOKEN_LEN - 5));
        let access = format!("Atza|{}", random.text(TOKEN_LEN - 5));
        c.refresh_token = Some(state.sealer.seal(&c.id, "refresh_token", &refresh, None));
        c.access_token = Some(state.sealer.seal(&c.id, "access_token", &access, None));
        c.access_expires_at_ms = Some(now + 3_600_000);
        c.last_refresh_at_ms = Some(now);
        c.account_type = Some("seller".into());
        c.marketplace_id = Some("ATVPDKIKX0DER".into());
        c.claimed_at_ms = Some(now);
        state.store.insert_connection(&c).await.expect("a connection row");
        ids.push(c.id);
    }
    (key.key.to_string(), ids)
}

/// xorshift64*: token text without another dependency.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Random(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| ALPHABET[(self.next() >> 58) as usize] as char)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes

#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    clock_ticks: f64,
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_mb: f64,
    hwm_mb: f64,
}

impl Server {
    /// Starts a server that prints `… listening on http://ADDR` on its first line.
    async fn spawn(name: &'static str, mut command: Command, log: &Path, clock_ticks: f64) -> Server {
        let log = std::fs::File::create(log).expect("a log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{name} did not start within 60 s"))
            .expect("read the server's stdout")
            .unwrap_or_else(|| panic!("{name} exited at start; see its log in the scratch directory"));
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} printed {line:?}, not its address"));
        // Keep reading (and dropping) whatever else it prints.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            name,
            child,
            addr,
            clock_ticks,
        }
    }

    fn pid(&self) -> u32 {
        self.child
            .id()
            .unwrap_or_else(|| panic!("{} has exited", self.name))
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()), self.clock_ticks)
    }

    fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        Memory {
            rss_mb: field("VmRSS:"),
            hwm_mb: field("VmHWM:"),
        }
    }
}

fn cpu_seconds(stat_path: &str, clock_ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_else(|e| panic!("{stat_path}: {e}"));
    // Fields after the command name, which is in parentheses: state is the first; utime and
    // stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks
}

// ---------------------------------------------------------------------------------------------
// The load generator: a minimal keep-alive HTTP/1.1 client, the same for both servers

/// One server and a prebuilt request per stored connection.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
}

impl Target {
    fn new(addr: SocketAddr, key: &str, ids: &[String]) -> Target {
        Target {
            addr,
            requests: ids.iter().map(|id| vend_request(addr, key, id)).collect(),
        }
    }
}

fn vend_request(addr: SocketAddr, key: &str, id: &str) -> Vec<u8> {
    format!(
        "POST /v1/connections/{id}/access-token HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-length: 0\r\n\r\n"
    )
    .into_bytes()
}

async fn connect_all(addr: SocketAddr, n: usize) -> Vec<HttpConn> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(
            HttpConn::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}")),
        );
    }
    conns
}

/// The body of one vend of the target's first connection (200 expected).
async fn one_vend_body(target: &Target) -> Vec<u8> {
    let mut conn = HttpConn::connect(target.addr).await.expect("connect");
    let (status, body) = conn.exchange(&target.requests[0]).await.expect("one vend");
    let body = conn.buf[body].to_vec();
    assert_eq!(
        status,
        200,
        "a vend answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    rate: f64,
    errors: u64,
    server_cpu: f64,
    client_cpu: f64,
    other_cpu: f64,
    steal: f64,
}

/// Every request of the target once, `clients` at a time.
async fn each_once(target: &Arc<Target>, clients: usize) -> Throughput {
    let conns = connect_all(target.addr, clients).await;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (target, next) = (target.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = target.requests.get(i) else {
                    break;
                };
                let (status, _) = conn.exchange(request).await.expect("an answer");
                errors += u64::from(status != 200);
            }
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await.expect("a client task");
    }
    Throughput {
        rate: target.requests.len() as f64 / started.elapsed().as_secs_f64(),
        errors,
        server_cpu: 0.0,
        client_cpu: 0.0,
        other_cpu: 0.0,
        steal: 0.0,
    }
}

/// As fast as the server answers: each client sends its next request when the last answer is
/// in, for the warm-up and then the measured seconds.
async fn closed_loop(target: &Arc<Target>, server: &Server, k: &Knobs) -> Throughput {
    closed_loop_over(std::slice::from_ref(target), &[server], k).await
}

/// [`closed_loop`] with the clients spread over several servers (client `i` on server
/// `i % n`); the CPU is the servers' together.
async fn closed_loop_over(targets: &[Arc<Target>], servers: &[&Server], k: &Knobs) -> Throughput {
    let mut conns = Vec::with_capacity(k.clients);
    for i in 0..k.clients {
        let target = &targets[i % targets.len()];
        let conn = HttpConn::connect(target.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", target.addr));
        conns.push((target.clone(), conn));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(k.warmup);
    let until = from + Duration::from_secs_f64(k.seconds);
    let mut tasks = Vec::new();
    for (target, mut conn) in conns {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut errors) = (0u64, 0u64);
            let n = target.requests.len();
            loop {
                let request = &target.requests[next.fetch_add(1, Ordering::Relaxed) % n];
                let (status, _) = conn.exchange(request).await.expect("an answer");
                let now = Instant::now();
                if now >= until {
                    break;
                }
                if now >= from {
                    done += 1;
                    errors += u64::from(status != 200);
                }
            }
            (done, errors)
        }));
    }
    let cpu = measure_cpu_all(servers, from, until).await;
    let (mut done, mut errors) = (0, 0);
    for task in tasks {
        let (d, e) = task.await.expect("a client task");
        done += d;
        errors += e;
    }
    Throughput {
        rate: done as f64 / k.seconds,
        errors,
        server_cpu: cpu.server,
        client_cpu: cpu.client,
        other_cpu: cpu.other,
        steal: cpu.steal,
    }
}

/// CPU used between `from` and `until`, in cores.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: f64,
    /// This process: the load generator.
    client: f64,
    /// Every other process on the machine.
    other: f64,
    /// Time the hypervisor ran something else while this machine had work.
    steal: f64,
}

async fn measure_cpu(server: &Server, from: Instant, until: Instant) -> Cpu {
    measure_cpu_all(&[server], from, until).await
}

/// [`measure_cpu`] of several servers together.
async fn measure_cpu_all(servers: &[&Server], from: Instant, until: Instant) -> Cpu {
    let clock_ticks = servers[0].clock_ticks;
    let read = || {
        (
            servers.iter().map(|s| s.cpu_seconds()).sum::<f64>(),
            cpu_seconds("/proc/self/stat", clock_ticks),
            machine_seconds(clock_ticks),
            Instant::now(),
        )
    };
    tokio::time::sleep_until(from.into()).await;
    let (s0, c0, m0, t0) = read();
    tokio::time::sleep_until(until.into()).await;
    let (s1, c1, m1, t1) = read();
    let wall = (t1 - t0).as_secs_f64();
    let (server, client) = ((s1 - s0) / wall, (c1 - c0) / wall);
    Cpu {
        server,
        client,
        other: ((m1.0 - m0.0) / wall - server - client).max(0.0),
        steal: (m1.1 - m0.1) / wall,
    }
}

#[derive(Debug, Clone)]
struct Latency {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// How late requests left (a busy client connection, or the load generator itself).
    send_delay_p99: f64,
    /// From the request's actual send to its answer.
    service_p99: f64,
    /// How late the load generator's scheduler itself handed requests out.
    generator_late_p99: f64,
    /// Per second: `p99/max` in ms.
    timeline: String,
    errors: u64,
    server_cpu: f64,
    other_cpu: f64,
    steal: f64,
}

/// A fixed rate, whatever the server does. One thread does all of the load generator's work,
/// as wrk2 does: it sleeps until the next request's scheduled time (a precise sleep, not the
/// runtime's 1 ms timer), takes in every answer that has arrived, then sends each request due on
/// the free client connection that has waited longest (as a client's connection pool). No
/// hand-off between threads stands between the schedule, the send and the answer's time; an
/// answer is noticed late by at most the gap between sends plus the timer's slack, which counts
/// against the server. When every connection is busy a request waits, and that wait counts in
/// its latency.
async fn open_loop(target: &Arc<Target>, server: &Server, rate: f64, k: &Knobs) -> Latency {
    let mut conns = Vec::with_capacity(k.clients);
    for _ in 0..k.clients {
        let stream = std::net::TcpStream::connect(target.addr)
            .and_then(|s| s.set_nodelay(true).and(s.set_nonblocking(true)).map(|_| s))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", target.addr));
        conns.push(mio::net::TcpStream::from_std(stream));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let from = start + Duration::from_secs_f64(k.warmup);
    let until = from + Duration::from_secs_f64(k.seconds);
    let schedule = Schedule {
        start,
        from,
        rate,
        total: (rate * (k.warmup + k.seconds)) as u64,
    };
    let generator = {
        let target = target.clone();
        std::thread::spawn(move || generate(&target, conns, schedule))
    };
    let cpu = measure_cpu(server, from, until).await;
    let run = tokio::task::spawn_blocking(move || generator.join())
        .await
        .expect("the load generator's thread")
        .expect("the load generator");
    let samples = run.samples;
    let pick = |f: fn(&Sample) -> u64| samples.iter().map(f).collect::<Vec<u64>>();
    let (mut latencies, mut delays, mut services) =
        (pick(|s| s.latency), pick(|s| s.delay), pick(|s| s.service));
    let mut late = run.late;
    // Per second of the measured window: the p99 and the worst latency.
    let seconds = k.seconds.ceil() as usize;
    let mut per_second = vec![Vec::new(); seconds.max(1)];
    for s in &samples {
        let i = ((s.at / 1_000_000_000) as usize).min(per_second.len() - 1);
        per_second[i].push(s.latency);
    }
    let timeline = per_second
        .iter_mut()
        .map(|v| format!("{:.1}/{:.1}", quantile(v, 0.99), quantile(v, 1.0)))
        .collect::<Vec<_>>()
        .join(" ");
    Latency {
        rate: latencies.len() as f64 / k.seconds,
        p50: quantile(&mut latencies, 0.50),
        p99: quantile(&mut latencies, 0.99),
        p999: quantile(&mut latencies, 0.999),
        max: quantile(&mut latencies, 1.0),
        send_delay_p99: quantile(&mut delays, 0.99),
        service_p99: quantile(&mut services, 0.99),
        generator_late_p99: quantile(&mut late, 0.99),
        timeline,
        errors: run.errors,
        server_cpu: cpu.server,
        other_cpu: cpu.other,
        steal: cpu.steal,
    }
}

/// When an open loop's requests are due: request `i` at `start + i / rate`, `total` of them;
/// those due from `from` on are measured.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    from: Instant,
    rate: f64,
    total: u64,
}

impl Schedule {
    fn at(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// What one open loop saw.
#[derive(Debug)]
struct OpenLoopRun {
    samples: Vec<Sample>,
    errors: u64,
    /// How late the generator woke for each measured request, in nanoseconds.
    late: Vec<u64>,
}

/// The load generator's one thread (see [`open_loop`]).
fn generate(target: &Target, mut conns: Vec<mio::net::TcpStream>, schedule: Schedule) -> OpenLoopRun {
    use std::io::{Read, Write};
    let mut poll = mio::Poll::new().expect("an epoll instance");
    for (c, conn) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(conn, mio::Token(c), mio::Interest::READABLE)
            .expect("register a client connection");
    }
    let mut events = mio::Events::with_capacity(conns.len());
    let mut bufs: Vec<Vec<u8>> = conns.iter().map(|_| Vec::with_capacity(4096)).collect();
    // Per connection, the request in flight: its scheduled and its actual send time.
    let mut in_flight: Vec<Option<(Instant, Instant)>> = vec![None; conns.len()];
    let mut free: VecDeque<usize> = (0..conns.len()).collect();
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    let mut run = OpenLoopRun {
        samples: Vec::with_capacity(schedule.total as usize),
        errors: 0,
        late: Vec::with_capacity(schedule.total as usize),
    };
    let (mut next, mut sent) = (0u64, 0usize);
    let mut last_answer = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        // Every answer in.
        poll.poll(&mut events, Some(Duration::ZERO))
            .expect("poll the client connections");
        for event in events.iter() {
            let c = event.token().0;
            loop {
                match conns[c].read(&mut chunk) {
                    Ok(0) => panic!("the server closed a client connection"),
                    Ok(n) => bufs[c].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("read an answer: {e}"),
                }
            }
            let Some((status, _)) = complete_answer(&bufs[c]).expect("an HTTP answer") else {
                continue;
            };
            let done = Instant::now();
            last_answer = done;
            bufs[c].clear();
            let (at, sent_at) = in_flight[c].take().expect("an answer to a request sent");
            free.push_back(c);
            if at >= schedule.from {
                run.samples.push(Sample {
                    at: (at - schedule.from).as_nanos() as u64,
                    latency: (done - at).as_nanos() as u64,
                    delay: (sent_at - at).as_nanos() as u64,
                    service: (done - sent_at).as_nanos() as u64,
                });
                run.errors += u64::from(status != 200);
            }
        }
        // Every request due by now, sent on a free connection, or waiting for one.
        let now = Instant::now();
        while next < schedule.total && schedule.at(next) <= now {
            let at = schedule.at(next);
            if at >= schedule.from {
                run.late.push((now - at).as_nanos() as u64);
            }
            waiting.push_back(at);
            next += 1;
        }
        while !waiting.is_empty() {
            let Some(c) = free.pop_front() else { break };
            let at = waiting.pop_front().expect("a waiting request");
            let request = &target.requests[sent % target.requests.len()];
            sent += 1;
            in_flight[c] = Some((at, Instant::now()));
            let mut bytes = &request[..];
            while !bytes.is_empty() {
                match conns[c].write(bytes) {
                    Ok(0) => panic!("a client connection would take no more"),
                    Ok(n) => bytes = &bytes[n..],
                    // A full send buffer: never with one small request in flight; waited out.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("send a request: {e}"),
                }
            }
        }
        if next == schedule.total && waiting.is_empty() && free.len() == conns.len() {
            return run;
        }
        assert!(
            free.len() == conns.len() || last_answer.elapsed() < Duration::from_secs(30),
            "no answer for 30 s with {} requests in flight",
            conns.len() - free.len()
        );
        // Asleep until the next request is due; answers meanwhile are taken in when it wakes.
        // With every request out, a moment, then look for the last answers.
        let wake = if next < schedule.total {
            schedule.at(next)
        } else {
            Instant::now() + Duration::from_micros(20)
        };
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
    }
}

/// One request of an open-loop run, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Scheduled send time, from the start of the measured window.
    at: u64,
    /// Scheduled send time to the answer's last byte.
    latency: u64,
    /// Scheduled to actual send time.
    delay: u64,
    /// Actual send time to the answer's last byte.
    service: u64,
}

/// The `q` quantile of nanosecond samples, in milliseconds.
fn quantile(samples: &mut [u64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i] as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------
// `--bare-server BODY_FILE RUNTIME`: the floor the broker is measured against

fn bare_server(args: &[String]) {
    use axum::http::header::CONTENT_TYPE;
    let body = axum::body::Bytes::from(std::fs::read(&args[0]).expect("the body file"));
    let mut builder = if args.get(1).map(String::as_str) == Some("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().expect("a tokio runtime");
    runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/v1/connections/{id}/access-token",
            axum::routing::post(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!(
            "bare axum listening on http://{}",
            listener.local_addr().expect("an address")
        );
        axum::serve(listener, app).await.expect("serve");
    });
}

// ---------------------------------------------------------------------------------------------
// `--storm-client ADDR KEY CONNECTION_ID N`: N connections, then N vends at once

fn storm_client(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("an address");
    let (key, id) = (&args[1], &args[2]);
    let n: usize = args[3].parse().expect("a count");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async move {
        let request = Arc::new(vend_request(addr, key, id));
        // Open every connection first, a few hundred at a time (the listen backlog is finite).
        let mut conns = Vec::with_capacity(n);
        while conns.len() < n {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..(n - conns.len()).min(250) {
                batch.spawn(HttpConn::connect(addr));
            }
            while let Some(conn) = batch.join_next().await {
                conns.push(conn.expect("a connect task").expect("connect"));
            }
        }
        let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
        let mut tasks = Vec::with_capacity(n);
        for mut conn in conns {
            let (gate, request) = (gate.clone(), request.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                let (status, body) = conn.exchange(&request).await.expect("an answer");
                let token = serde_json::from_slice::<Value>(&conn.buf[body])
                    .ok()
                    .and_then(|v| v["access_token"].as_str().map(str::to_owned));
                (status, token, Instant::now())
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        gate.wait().await;
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut tokens: HashMap<String, u64> = HashMap::new();
        let mut first = f64::INFINITY;
        let mut last = 0f64;
        for task in tasks {
            let (status, token, done) = task.await.expect("a vend task");
            *statuses.entry(status).or_default() += 1;
            if let Some(token) = token {
                *tokens.entry(token).or_default() += 1;
            }
            let ms = (done - released).as_secs_f64() * 1000.0;
            first = first.min(ms);
            last = last.max(ms);
        }
        (statuses, tokens, first, last)
    });
    let (statuses, tokens, first, last) = result;
    let old = std::env::var("VEND_BENCH_OLD_TOKEN").unwrap_or_default();
    println!(
        "{}",
        json!({
            "requests": n,
            "ok": statuses.get(&200).copied().unwrap_or(0),
            "statuses": statuses.iter().map(|(s, c)| (s.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "distinct_tokens": tokens.len(),
            "old_token_answers": tokens.get(&old).copied().unwrap_or(0),
            "first_ms": first,
            "last_ms": last,
        })
    );
}

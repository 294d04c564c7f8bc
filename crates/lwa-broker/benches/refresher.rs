//! The background refresher's speed figures (issue 6, "Speed"), run by hand.
//!
//! ```sh
//! cargo bench -p lwa-broker --bench refresher                # everything
//! cargo bench -p lwa-broker --bench refresher -- spread      # or cold, or budget
//! ```
//!
//! The fake Amazon runs in a process of its own (this executable run again with
//! `--fake-amazon`), so that the CPU this process uses is the broker's: the broker is
//! `lwa_server::Application::build` in this process, with its own background refresher off and
//! `Refresher::run_once` called by the bench, as `serve`'s loop would.
//!
//! - **spread**: connections whose access tokens expire at random over an hour (seeded), the
//!   fake's clock moved in steps and `run_once` after each, for some simulated hours. Bounds:
//!   LWA refresh calls within 1 % of one per connection per token lifetime; the busiest
//!   simulated minute ≤ 1.5× the average minute; the broker's CPU (user + system, this
//!   process, seeding excluded) under 5 % of one core per simulated second.
//! - **cold**: every connection expired at once, the fake's token endpoint answering after
//!   50 ms, concurrency 256 and a budget that does not bind: one `run_once` within
//!   1.25 × N × 50 ms / 256.
//! - **budget**: the same with a budget of 100 LWA calls a second (a smaller population):
//!   never more than 100 calls arrive at the fake in any second.
//!
//! The fake counts LWA calls per refresh token; the arrival time of each call (the fake's
//! clock) is read from its request log by the fake's own process, which keeps only the last
//! 1,000 requests: in **spread** it is read and cleared between steps (when no call is in
//! flight), in **budget** read every 500 ms and new entries told apart by sequence number. A
//! gap in the sequence numbers is reported as lost arrivals.
//!
//! Knobs (environment): `REFRESHER_BENCH_CONNECTIONS` (100000), `REFRESHER_BENCH_RUNS` (3),
//! `REFRESHER_BENCH_HOURS` (2: simulated hours of **spread**), `REFRESHER_BENCH_STEP_SECONDS`
//! (10), `REFRESHER_BENCH_SEED` (1), `REFRESHER_BENCH_BUDGET_CONNECTIONS` (3000),
//! `REFRESHER_BENCH_SPREAD_BUDGET` (100000: the per-app budget in **spread**, LWA calls per
//! real second; simulated time runs far faster than real time, so a realistic budget would
//! bind), `REFRESHER_BENCH_SPREAD_CONCURRENCY` (16, the default).

mod common;

use common::{knob, median};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_amazon::{FakeAmazon, FakeConfig, FakeControl, FaultSpec, FaultTarget, defaults};
use lwa_server::admin::{NewTenant, create_tenant};
use lwa_server::config::{Overrides, RefresherSettings, Settings};
use lwa_server::connections::new_connection;
use lwa_server::{AppState, Application};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The fake's access tokens live this long (its default, as Amazon's).
const LIFETIME_S: f64 = 3600.0;
/// The broker's default refresh buffer: a connection is refreshed once per
/// `LIFETIME_S - BUFFER_S` (its refresh period), the least that keeps every token out of the
/// buffer.
const BUFFER_S: f64 = 300.0;
/// One refresh period.
const PERIOD_S: f64 = LIFETIME_S - BUFFER_S;
/// The fake's token endpoint latency in **cold** and **budget**.
const COLD_LATENCY_MS: u64 = 50;
const COLD_CONCURRENCY: usize = 256;
const COLD_BUDGET: f64 = 1_000_000.0;
const BUDGET_PER_SECOND: f64 = 100.0;
const SELLER: &str = defaults::SELLER_NA;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--fake-amazon") {
        return fake_process();
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without `--bench`: nothing to check here.
        println!("refresher: run it with `cargo bench -p lwa-broker --bench refresher`");
        return;
    }
    let only: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    let knobs = Knobs::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("lwa-refresher-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let mut report = header(&knobs);
        let mut verdicts = Vec::new();
        if wanted("spread") {
            let (text, v) = spread(&knobs, &dir).await;
            report.push_str(&text);
            verdicts.extend(v);
        }
        if wanted("cold") {
            let (text, v) = cold(&knobs, &dir).await;
            report.push_str(&text);
            verdicts.extend(v);
        }
        if wanted("budget") {
            let (text, v) = budget(&knobs, &dir).await;
            report.push_str(&text);
            verdicts.extend(v);
        }
        report.push_str("\n### Bounds\n\n");
        for v in &verdicts {
            report.push_str(&format!("- {v}\n"));
        }
        println!("\n{report}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

// ---------------------------------------------------------------------------------------------
// Settings of a run

#[derive(Debug, Clone)]
struct Knobs {
    connections: usize,
    runs: usize,
    hours: f64,
    step_s: f64,
    seed: u64,
    budget_connections: usize,
    spread_budget: f64,
    spread_concurrency: usize,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            connections: knob("REFRESHER_BENCH_CONNECTIONS", 100_000usize).max(1),
            runs: knob("REFRESHER_BENCH_RUNS", 3usize).max(1),
            hours: knob("REFRESHER_BENCH_HOURS", 2.0f64).max(0.1),
            step_s: knob("REFRESHER_BENCH_STEP_SECONDS", 10.0f64).max(1.0),
            seed: knob("REFRESHER_BENCH_SEED", 1u64),
            budget_connections: knob("REFRESHER_BENCH_BUDGET_CONNECTIONS", 3_000usize).max(1),
            spread_budget: knob("REFRESHER_BENCH_SPREAD_BUDGET", 100_000.0f64),
            spread_concurrency: knob(
                "REFRESHER_BENCH_SPREAD_CONCURRENCY",
                lwa_server::config::DEFAULT_REFRESH_CONCURRENCY,
            )
            .max(1),
        }
    }
}

fn header(k: &Knobs) -> String {
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
        "## Background refresher\n\nMachine: {cores} cores ({model}); load average at start: {load}. \
         {n} connections, {runs} runs; spread over {h} simulated hours in steps of {step} s.\n",
        load = loadavg(),
        n = k.connections,
        runs = k.runs,
        h = k.hours,
        step = k.step_s,
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// CPU time and machine state

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of a process (`self` or a pid), from `/proc/…/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Every CPU's (busy, steal, total) jiffies from `/proc/stat`.
fn machine_jiffies() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let total: f64 = v.iter().take(8).sum();
    let busy = total - get(3) - get(4) - get(7);
    (busy, get(7), total)
}

/// What the whole machine did during a window, in cores: everyone's CPU and the steal.
#[derive(Debug, Clone, Copy)]
struct Machine {
    busy: f64,
    steal: f64,
    total: f64,
}

impl Machine {
    fn now() -> Machine {
        let (busy, steal, total) = machine_jiffies();
        Machine { busy, steal, total }
    }

    /// (busy cores, stolen cores) since `self`.
    fn since(&self, cores: f64) -> (f64, f64) {
        let now = Machine::now();
        let total = (now.total - self.total).max(1.0);
        (
            (now.busy - self.busy) / total * cores,
            (now.steal - self.steal) / total * cores,
        )
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

// ---------------------------------------------------------------------------------------------
// A world: the fake Amazon in its own process and a broker in this one

struct FakeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    base_url: String,
}

impl FakeProcess {
    async fn start(log: &Path) -> FakeProcess {
        let mut command = Command::new(std::env::current_exe().expect("this executable"));
        command
            .arg("--fake-amazon")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("a log file"))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the fake Amazon process starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the fake Amazon prints its address within 30 s")
            .expect("read the fake's stdout")
            .expect("the fake Amazon exited at start");
        FakeProcess {
            child,
            stdin,
            lines,
            base_url: base_url.trim().to_owned(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().map(|p| p.to_string()).unwrap_or_default()
    }

    /// One command to the fake's process; its one-line answer.
    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to the fake's process");
        self.stdin.flush().await.expect("flush");
        self.lines
            .next_line()
            .await
            .expect("read the fake's answer")
            .expect("the fake's process exited")
    }

    /// Every LWA refresh arrival recorded since the last call, and the state of the watch.
    async fn take(&mut self) -> Arrivals {
        let line = self.ask("take").await;
        serde_json::from_str(&line).expect("the fake's arrivals")
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Arrivals {
    /// Fake-clock arrival times (ms) of `POST /auth/o2/token` with a refresh grant.
    at_ms: Vec<i64>,
    /// Requests the log dropped before they were read.
    lost: u64,
    /// Per refresh token, the shortest and mean time between two calls (ms), and how many
    /// such gaps there were.
    min_gap_ms: Option<i64>,
    mean_gap_ms: Option<f64>,
    gaps: u64,
}

struct World {
    fake: FakeProcess,
    control: FakeControl,
    app: Application,
    state: AppState,
    tenant_id: String,
    buffer_ms: i64,
    db: PathBuf,
}

impl World {
    async fn start(dir: &Path, refresher: RefresherSettings) -> World {
        std::fs::create_dir_all(dir).expect("a scenario directory");
        let fake = FakeProcess::start(&dir.join("fake.log")).await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .build()
            .expect("an HTTP client");
        let control = FakeControl::with_client(&fake.base_url, http);
        let none = |_: &str| None;
        let mut settings = Settings::resolve(
            &Overrides {
                listen: Some("127.0.0.1:0".into()),
                ..Overrides::default()
            },
            &none,
        )
        .expect("settings");
        settings.database_url = format!("sqlite:{}", dir.join("broker.db").display());
        settings.master_key = Some(lwa_seal::MasterKey::generate().to_base64().to_string());
        settings.key_file = dir.join("unused.key");
        settings.amazon_base_url = Some(fake.base_url.clone());
        settings.fake_clock = true;
        settings.apps = lwa_server::sandbox::apps();
        // Only the bench's `run_once` calls refresh.
        settings.refresher = RefresherSettings {
            enabled: false,
            ..refresher
        };
        let buffer_ms = settings.refresh_buffer.as_millis() as i64;
        let app = Application::build(settings).await.expect("the broker builds");
        let state = app.state().clone();
        let (tenant, _key) = create_tenant(
            &state,
            NewTenant {
                name: "bench".into(),
                redirect_origins: vec!["https://bench.example.com".into()],
                ..NewTenant::default()
            },
        )
        .await
        .expect("a tenant");
        World {
            fake,
            control,
            app,
            state,
            tenant_id: tenant.id,
            buffer_ms,
            db: dir.join("broker.db"),
        }
    }

    /// `n` connections whose refresh tokens the fake knows; `expiry(i, now)` gives each one's
    /// access-token expiry. With `schedule`, each one's next refresh is set as a refresh at
    /// `now` would have set it; without, they are all due at once.
    async fn seed(&self, n: usize, expiry: impl Fn(usize, i64) -> i64, schedule: bool) -> Vec<String> {
        let started = Instant::now();
        // The fake issues every refresh token, 64 calls in flight.
        let mut tokens: Vec<Option<String>> = vec![None; n];
        let mut next = 0;
        let mut tasks = tokio::task::JoinSet::new();
        while next < n || !tasks.is_empty() {
            while next < n && tasks.len() < 64 {
                let control = self.control.clone();
                let i = next;
                tasks.spawn(async move {
                    (
                        i,
                        control.self_authorize(defaults::SP_API_CLIENT_ID, SELLER).await,
                    )
                });
                next += 1;
            }
            if let Some(done) = tasks.join_next().await {
                let (i, token) = done.expect("a self-authorization");
                tokens[i] = Some(token);
            }
        }
        let issued = started.elapsed().as_secs_f64();
        let state = &self.state;
        let app = state
            .app("sandbox-sp-api")
            .expect("the sandbox SP-API app")
            .clone();
        let now = state.now_ms();
        let mut ids = Vec::with_capacity(n);
        let mut random = Random::new(0x5eed);
        for (i, token) in tokens.into_iter().enumerate() {
            let token = token.expect("every token issued");
            let mut c = new_connection(&self.tenant_id, &app, lwa::Region::Na, now);
            let expires = expiry(i, now);
            let access = format!("Atza|{}", random.text(395));
            c.refresh_token = Some(state.sealer.seal(&c.id, "refresh_token", &token, None));
            c.access_token = Some(state.sealer.seal(&c.id, "access_token", &access, None));
            c.access_expires_at_ms = Some(expires);
            c.last_refresh_at_ms = Some(expires - (LIFETIME_S * 1000.0) as i64);
            c.account_type = Some("seller".into());
            c.marketplace_id = Some("ATVPDKIKX0DER".into());
            c.selling_partner_id = Some(SELLER.into());
            c.claimed_at_ms = Some(now);
            state.store.insert_connection(&c).await.expect("a connection row");
            if schedule {
                let at = lwa_server::vend::next_refresh_at(now, expires, self.buffer_ms);
                state.store.set_next_refresh(&c.id, at).await.expect("a schedule");
            }
            ids.push(c.id);
        }
        if schedule {
            // Writing the rows took a while of the fake's (running) clock: move every expiry and
            // schedule by as much, so the run starts where the seeding meant it to.
            let delta = state.now_ms() - now;
            let store = lwa_store::SqliteStore::open_path(&self.db)
                .await
                .expect("the database");
            sqlx::query(
                "UPDATE connections SET access_expires_at_ms = access_expires_at_ms + ?, \
                 next_refresh_at_ms = next_refresh_at_ms + ?",
            )
            .bind(delta)
            .bind(delta)
            .execute(store.pool())
            .await
            .expect("the schedule moved");
        }
        eprintln!(
            "  seeded {n} connections in {:.1} s ({issued:.1} s at the fake)",
            started.elapsed().as_secs_f64()
        );
        ids
    }

    /// Moves the fake's clock and waits until the broker (which reads it every 100 ms) follows.
    async fn advance(&self, secs: f64) -> i64 {
        let fake_now = self.control.advance_clock(secs).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.now_ms() < fake_now - 20 {
            assert!(
                Instant::now() < deadline,
                "the broker's clock did not follow the fake's"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake_now
    }

    /// LWA refresh calls the fake answered with a token, in all.
    async fn refresh_calls(&self) -> u64 {
        self.control
            .counters()
            .await
            .lwa
            .iter()
            .filter(|c| c.grant_type == "refresh_token" && c.outcome == "ok")
            .map(|c| c.count)
            .sum()
    }

    /// Calls per refresh token: (fewest, most) over the tokens that were refreshed.
    async fn calls_per_token(&self) -> (u64, u64, usize) {
        let counters = self.control.counters().await;
        let mut per: HashMap<String, u64> = HashMap::new();
        for c in counters.lwa.iter().filter(|c| c.grant_type == "refresh_token") {
            *per.entry(c.refresh_token.clone().unwrap_or_default())
                .or_default() += c.count;
        }
        let min = per.values().copied().min().unwrap_or(0);
        let max = per.values().copied().max().unwrap_or(0);
        (min, max, per.len())
    }
}

// ---------------------------------------------------------------------------------------------
// spread

struct SpreadRun {
    sim_s: f64,
    calls: u64,
    expected: f64,
    busiest_minute: u64,
    average_minute: f64,
    busiest_minute_after_first_hour: u64,
    average_minute_after_first_hour: f64,
    /// Calls after the first simulated hour over one per connection per lifetime.
    ratio_after_first_hour: f64,
    broker_cpu_s: f64,
    fake_cpu_s: f64,
    wall_s: f64,
    other_cores: f64,
    steal: f64,
    lost: u64,
    min_gap_s: f64,
    mean_gap_s: f64,
    calls_per_token: (u64, u64, usize),
    failed: usize,
    minutes: Vec<u64>,
}

async fn spread(k: &Knobs, dir: &Path) -> (String, Vec<String>) {
    let mut runs = Vec::new();
    for run in 0..k.runs {
        eprintln!("spread run {}:", run + 1);
        let world = World::start(
            &dir.join(format!("spread-{run}")),
            RefresherSettings {
                enabled: false,
                concurrency: k.spread_concurrency,
                budget_per_second: k.spread_budget,
            },
        )
        .await;
        runs.push(spread_run(k, world).await);
        let r = runs.last().expect("a run");
        eprintln!(
            "  {} calls ({:.4} of one per connection per lifetime), busiest minute {:.2}× average, \
             CPU {:.2} % of a core, {:.0} s wall",
            r.calls,
            r.calls as f64 / r.expected,
            r.busiest_minute as f64 / r.average_minute,
            100.0 * r.broker_cpu_s / r.sim_s,
            r.wall_s
        );
    }
    let mut out = format!(
        "\n### Spread: {n} connections, tokens expiring at random over an hour (seed {seed})\n\n\
         The fake's clock moved {step} s at a time for {h} simulated hours, `run_once` after each \
         step; concurrency {conc}, per-app budget {budget}/s (real time). Expected calls: one per \
         connection per {life} s of simulated time. Minutes are the fake's (simulated) minutes of \
         arrival. CPU is this process's user + system time (the broker's) over the whole \
         simulated run, seeding excluded; the fake's process is given beside it.\n\n\
         | run | LWA calls | expected | ratio | ratio after the first hour | busiest minute / average | after the first hour | \
         broker CPU s | per simulated s | fake CPU s | wall s | other processes, cores | stolen | \
         calls per token (min–max) | shortest / mean gap per token | lost arrivals | failed |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        n = k.connections,
        seed = k.seed,
        step = k.step_s,
        h = k.hours,
        conc = k.spread_concurrency,
        budget = k.spread_budget,
        life = PERIOD_S,
    );
    for (i, r) in runs.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.4} | {:.4} | {} / {:.1} = {:.2} | {} / {:.1} = {:.2} | {:.1} | {:.2} % | {:.1} | {:.0} | {:.2} | {:.2} | {}–{} ({} tokens) | {:.0} s / {:.0} s | {} | {} |\n",
            i + 1,
            r.calls,
            r.expected,
            r.calls as f64 / r.expected,
            r.ratio_after_first_hour,
            r.busiest_minute,
            r.average_minute,
            r.busiest_minute as f64 / r.average_minute,
            r.busiest_minute_after_first_hour,
            r.average_minute_after_first_hour,
            r.busiest_minute_after_first_hour as f64 / r.average_minute_after_first_hour.max(1e-9),
            r.broker_cpu_s,
            100.0 * r.broker_cpu_s / r.sim_s,
            r.fake_cpu_s,
            r.wall_s,
            r.other_cores,
            r.steal,
            r.calls_per_token.0,
            r.calls_per_token.1,
            r.calls_per_token.2,
            r.min_gap_s,
            r.mean_gap_s,
            r.lost,
            r.failed,
        ));
    }
    if let Some(r) = runs.first() {
        out.push_str("\nCalls per simulated minute (run 1): ");
        out.push_str(&r.minutes.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
        out.push('\n');
    }
    // Calls per connection per refresh period, from each connection's own refreshes: the
    // period over the mean gap between two of them. (The raw count over the window also holds
    // the one refresh that each token found inside its buffer at the start needs at once.)
    let ratio: Vec<f64> = runs.iter().map(|r| PERIOD_S / r.mean_gap_s.max(1.0)).collect();
    let peak: Vec<f64> = runs
        .iter()
        .map(|r| r.busiest_minute as f64 / r.average_minute)
        .collect();
    let cpu: Vec<f64> = runs.iter().map(|r| 100.0 * r.broker_cpu_s / r.sim_s).collect();
    let verdicts = vec![
        format!(
            "LWA calls within 1 % of one per connection per refresh period (token lifetime − buffer; period / mean gap between a connection's refreshes): ratio {} → {}",
            summary(&ratio, 4, ""),
            pass((median(&ratio) - 1.0).abs() <= 0.01)
        ),
        format!(
            "busiest simulated minute ≤ 1.5× the average minute: {} → {}",
            summary(&peak, 2, "×"),
            pass(median(&peak) <= 1.5)
        ),
        format!(
            "refresher CPU < 5 % of one core per simulated second: {} → {}",
            summary(&cpu, 2, " %"),
            pass(median(&cpu) < 5.0)
        ),
    ];
    (out, verdicts)
}

async fn spread_run(k: &Knobs, mut world: World) -> SpreadRun {
    let mut random = Random::new(k.seed);
    let n = k.connections;
    let expiries: Vec<i64> = (0..n)
        .map(|_| (random.unit() * LIFETIME_S * 1000.0) as i64)
        .collect();
    world.seed(n, |i, now| now + expiries[i], true).await;
    let state = world.state.clone();
    let refresher = state.refresher.clone();
    // Nothing has called LWA yet; start from a clean log.
    let _ = world.fake.ask("drain").await;
    let _ = world.fake.take().await;
    let start_ms = state.now_ms();
    let steps = (k.hours * 3600.0 / k.step_s).round() as usize;
    let fake_pid = world.fake.pid();
    let (cpu0, fake0, machine, wall) = (
        cpu_seconds("self"),
        cpu_seconds(&fake_pid),
        Machine::now(),
        Instant::now(),
    );
    let mut failed = 0;
    for step in 0..steps {
        let report = refresher.run_once(&state).await;
        failed += report.failed + report.needs_reauth;
        // Every call of this step has been answered: the log can be read and cleared.
        let _ = world.fake.ask("drain").await;
        if step + 1 < steps {
            world.advance(k.step_s).await;
        }
        if (step + 1) % (steps / 10).max(1) == 0 {
            eprintln!("  step {}/{steps}", step + 1);
        }
    }
    let broker_cpu_s = cpu_seconds("self") - cpu0;
    let fake_cpu_s = cpu_seconds(&fake_pid) - fake0;
    let wall_s = wall.elapsed().as_secs_f64();
    let (busy, steal) = machine.since(cores());
    let other_cores = (busy - (broker_cpu_s + fake_cpu_s) / wall_s).max(0.0);
    // The fake's clock also runs in real time between its steps: simulated time is its reading.
    let sim_s = (state.now_ms() - start_ms) as f64 / 1000.0;
    let arrivals = world.fake.take().await;
    let calls = world.refresh_calls().await;
    let calls_per_token = world.calls_per_token().await;
    // Whole simulated minutes only (the last, partial one is left out of the minute figures).
    let mut minutes = vec![0u64; ((sim_s / 60.0).floor() as usize).max(1)];
    for at in &arrivals.at_ms {
        let m = ((at - start_ms).max(0) / 60_000) as usize;
        if let Some(count) = minutes.get_mut(m) {
            *count += 1;
        }
    }
    let total: u64 = minutes.iter().sum();
    let after: Vec<u64> = minutes.iter().skip(60).copied().collect();
    let after_total: u64 = after.iter().sum();
    drop(world.app);
    SpreadRun {
        sim_s,
        calls,
        expected: n as f64 * sim_s / PERIOD_S,
        busiest_minute: minutes.iter().copied().max().unwrap_or(0),
        average_minute: total as f64 / minutes.len() as f64,
        busiest_minute_after_first_hour: after.iter().copied().max().unwrap_or(0),
        average_minute_after_first_hour: after_total as f64 / after.len().max(1) as f64,
        ratio_after_first_hour: after_total as f64
            / (n as f64 * after.len() as f64 * 60.0 / PERIOD_S).max(1e-9),
        broker_cpu_s,
        fake_cpu_s,
        wall_s,
        other_cores,
        steal,
        lost: arrivals.lost,
        min_gap_s: arrivals.min_gap_ms.unwrap_or(0) as f64 / 1000.0,
        mean_gap_s: arrivals.mean_gap_ms.unwrap_or(0.0) / 1000.0,
        calls_per_token,
        failed,
        minutes,
    }
}

// ---------------------------------------------------------------------------------------------
// cold

async fn cold(k: &Knobs, dir: &Path) -> (String, Vec<String>) {
    let n = k.connections;
    eprintln!("cold start:");
    let world = World::start(
        &dir.join("cold"),
        RefresherSettings {
            enabled: false,
            concurrency: COLD_CONCURRENCY,
            budget_per_second: COLD_BUDGET,
        },
    )
    .await;
    world.seed(n, |_, now| now - 1, false).await;
    world
        .control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(COLD_LATENCY_MS),
            ..FaultSpec::default()
        })
        .await;
    let bound_s = 1.25 * n as f64 * COLD_LATENCY_MS as f64 / 1000.0 / COLD_CONCURRENCY as f64;
    let ideal_s = n as f64 * COLD_LATENCY_MS as f64 / 1000.0 / COLD_CONCURRENCY as f64;
    let state = world.state.clone();
    let fake_pid = world.fake.pid();
    let mut rows = Vec::new();
    for run in 0..k.runs {
        if run > 0 {
            // Every token expired again: two hours later, all of them are due.
            world.advance(2.0 * LIFETIME_S).await;
        }
        let calls0 = world.refresh_calls().await;
        let (cpu0, fake0, machine) = (cpu_seconds("self"), cpu_seconds(&fake_pid), Machine::now());
        let started = Instant::now();
        let report = state.refresher.run_once(&state).await;
        let wall = started.elapsed().as_secs_f64();
        let broker_cpu = cpu_seconds("self") - cpu0;
        let fake_cpu = cpu_seconds(&fake_pid) - fake0;
        let (busy, steal) = machine.since(cores());
        let calls = world.refresh_calls().await - calls0;
        eprintln!(
            "  run {}: {} due, {} fresh, {} failed, {calls} calls in {wall:.2} s",
            run + 1,
            report.due,
            report.fresh,
            report.failed
        );
        rows.push((report, calls, wall, broker_cpu, fake_cpu, busy, steal));
    }
    drop(world);
    let mut out = format!(
        "\n### Cold start: {n} connections expired at once, token endpoint at {COLD_LATENCY_MS} ms, \
         concurrency {COLD_CONCURRENCY}, budget {COLD_BUDGET}/s\n\n\
         One `run_once`, wall time. Ideal {ideal_s:.1} s (N × {COLD_LATENCY_MS} ms / {COLD_CONCURRENCY}); \
         bound {bound_s:.1} s (1.25× that). Runs after the first move the clock two hours on, so \
         every token has expired again.\n\n\
         | run | due | refreshed | failed | LWA calls | wall s | refreshes/s | broker CPU, cores | fake CPU, cores | other processes, cores | stolen |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (i, (report, calls, wall, broker, fake, busy, steal)) in rows.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            i + 1,
            report.due,
            report.fresh,
            report.failed + report.needs_reauth,
            calls,
            wall,
            report.fresh as f64 / wall,
            broker / wall,
            fake / wall,
            (busy - (broker + fake) / wall).max(0.0),
            steal
        ));
    }
    let walls: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let all = rows.iter().all(|r| r.0.fresh == n && r.1 == n as u64);
    let verdicts = vec![format!(
        "cold start, {n} connections refreshed within {bound_s:.1} s: {} (every connection refreshed once in every run: {}) → {}",
        summary(&walls, 2, " s"),
        if all { "yes" } else { "no" },
        pass(median(&walls) <= bound_s && all)
    )];
    (out, verdicts)
}

// ---------------------------------------------------------------------------------------------
// budget

async fn budget(k: &Knobs, dir: &Path) -> (String, Vec<String>) {
    let n = k.budget_connections;
    eprintln!("budget:");
    let mut world = World::start(
        &dir.join("budget"),
        RefresherSettings {
            enabled: false,
            concurrency: COLD_CONCURRENCY,
            budget_per_second: BUDGET_PER_SECOND,
        },
    )
    .await;
    world.seed(n, |_, now| now - 1, false).await;
    world
        .control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(COLD_LATENCY_MS),
            ..FaultSpec::default()
        })
        .await;
    let state = world.state.clone();
    let mut rows = Vec::new();
    for run in 0..k.runs {
        if run > 0 {
            world.advance(2.0 * LIFETIME_S).await;
        }
        let _ = world.fake.take().await;
        let _ = world.fake.ask("watch").await;
        let started = Instant::now();
        let report = state.refresher.run_once(&state).await;
        let wall = started.elapsed().as_secs_f64();
        let _ = world.fake.ask("unwatch").await;
        let arrivals = world.fake.take().await;
        let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
        for at in &arrivals.at_ms {
            *per_second.entry(at.div_euclid(1000)).or_default() += 1;
        }
        // Also any 1-second window, not only whole seconds of the clock.
        let mut sorted = arrivals.at_ms.clone();
        sorted.sort_unstable();
        let mut window_max = 0;
        let mut lo = 0;
        for hi in 0..sorted.len() {
            while sorted[hi] - sorted[lo] >= 1000 {
                lo += 1;
            }
            window_max = window_max.max(hi - lo + 1);
        }
        let max = per_second.values().copied().max().unwrap_or(0);
        // The first and last seconds are partial.
        let full: Vec<u64> = per_second
            .values()
            .copied()
            .skip(1)
            .take(per_second.len().saturating_sub(2))
            .collect();
        let mean = full.iter().sum::<u64>() as f64 / full.len().max(1) as f64;
        eprintln!(
            "  run {}: {} refreshed in {wall:.1} s, {} arrivals, busiest second {max}, busiest 1-s window {window_max}, lost {}",
            run + 1,
            report.fresh,
            arrivals.at_ms.len(),
            arrivals.lost
        );
        rows.push((
            report.fresh,
            arrivals.at_ms.len(),
            wall,
            max,
            window_max,
            mean,
            arrivals.lost,
        ));
    }
    let mut out = format!(
        "\n### Budget: {n} connections expired at once, budget {BUDGET_PER_SECOND} calls/s, \
         concurrency {COLD_CONCURRENCY}, token endpoint at {COLD_LATENCY_MS} ms\n\n\
         Arrivals counted by the fake's clock (which runs in real time here) from its request log.\n\n\
         | run | refreshed | arrivals counted | wall s | busiest clock second | busiest 1-s window | mean of full seconds | lost arrivals |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (i, (fresh, counted, wall, max, window, mean, lost)) in rows.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {fresh} | {counted} | {wall:.1} | {max} | {window} | {mean:.1} | {lost} |\n",
            i + 1
        ));
    }
    let maxes: Vec<f64> = rows.iter().map(|r| r.3 as f64).collect();
    let windows: Vec<f64> = rows.iter().map(|r| r.4 as f64).collect();
    let complete = rows.iter().all(|r| r.6 == 0 && r.1 == n);
    let verdicts = vec![format!(
        "budget 100 calls/s never exceeded in any second: busiest clock second {}, busiest 1-s window {} (every arrival counted: {}) → {}",
        summary(&maxes, 0, ""),
        summary(&windows, 0, ""),
        if complete { "yes" } else { "no" },
        pass(maxes.iter().all(|m| *m <= BUDGET_PER_SECOND) && complete)
    )];
    (out, verdicts)
}

// ---------------------------------------------------------------------------------------------
// Figures
/// "median (min–max)".
fn summary(values: &[f64], decimals: usize, unit: &str) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "median {:.d$}{unit} ({:.d$}–{:.d$})",
        median(values),
        min,
        max,
        d = decimals
    )
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// xorshift64*: seeded, without another dependency.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| ALPHABET[(self.next() >> 58) as usize] as char)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// `--fake-amazon`: the fake in a process of its own, and the reader of its request log
//
// Prints its base URL, then answers one line per command read from standard input:
// `drain` (read the log and clear it: only when no call is in flight), `watch` / `unwatch`
// (read the log every 500 ms without clearing it, new entries told apart by sequence number),
// `take` (read once more, print the arrivals gathered so far as JSON, and forget them).

#[derive(Debug, Default)]
struct Tally {
    last_seq: Option<u64>,
    arrivals: Arrivals,
    last_by_token: HashMap<String, i64>,
    gap_sum_ms: f64,
}

impl Tally {
    fn add(&mut self, records: &[fake_amazon::RecordedRequest]) {
        for r in records {
            if self.last_seq.is_some_and(|last| r.seq <= last) {
                continue;
            }
            if let Some(last) = self.last_seq {
                self.arrivals.lost += r.seq - last - 1;
            }
            self.last_seq = Some(r.seq);
            if r.path != "/auth/o2/token" || !r.body.contains("grant_type=refresh_token") {
                continue;
            }
            self.arrivals.at_ms.push(r.at_ms);
            let token = r
                .body
                .split('&')
                .find_map(|p| p.strip_prefix("refresh_token="))
                .unwrap_or_default();
            if let Some(before) = self.last_by_token.insert(token.to_owned(), r.at_ms) {
                let gap = r.at_ms - before;
                self.arrivals.min_gap_ms = Some(self.arrivals.min_gap_ms.map_or(gap, |m| m.min(gap)));
                self.arrivals.gaps += 1;
                self.gap_sum_ms += gap as f64;
                self.arrivals.mean_gap_ms = Some(self.gap_sum_ms / self.arrivals.gaps as f64);
            }
        }
    }
}

fn fake_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let fake = FakeAmazon::start(FakeConfig::default())
            .await
            .expect("the fake Amazon starts");
        println!("{}", fake.base_url());
        let control = fake.control();
        let tally = Arc::new(SharedTally::default());
        let mut watcher: Option<tokio::task::JoinHandle<()>> = None;
        // Standard input is read on a thread of its own (tokio's is not built in here).
        let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = commands.recv().await {
            let answer = match line.trim() {
                "drain" => {
                    let records = control.requests(None).await;
                    control.clear_requests().await;
                    tally.with(|t| t.add(&records));
                    json!({ "read": records.len() }).to_string()
                }
                "watch" => {
                    let (control, tally) = (control.clone(), tally.clone());
                    watcher = Some(tokio::spawn(async move {
                        loop {
                            let records = control.requests(None).await;
                            tally.with(|t| t.add(&records));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }));
                    "{}".to_owned()
                }
                "unwatch" => {
                    if let Some(w) = watcher.take() {
                        w.abort();
                    }
                    "{}".to_owned()
                }
                "take" => {
                    let records = control.requests(None).await;
                    let taken = tally.with(|t| {
                        t.add(&records);
                        let arrivals = std::mem::take(&mut t.arrivals);
                        t.last_by_token.clear();
                        t.gap_sum_ms = 0.0;
                        arrivals
                    });
                    serde_json::to_string(&taken).unwrap_or_default()
                }
                other => json!({ "error": format!("unknown command {other:?}") }).to_string(),
            };
            println!("{answer}");
        }
        drop(fake);
    });
}

/// The tally, shared by the command loop and the watcher.
#[derive(Debug, Default)]
struct SharedTally(std::sync::Mutex<Tally>);

impl SharedTally {
    fn with<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        // A panic in either ends the process anyway: poisoning is ignored.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

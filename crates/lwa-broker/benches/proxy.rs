//! The proxy's speed bound, run by hand:
//!
//! ```sh
//! cargo bench -p lwa-broker --bench proxy
//! ```
//!
//! Bound: proxying a small GET (`getMarketplaceParticipations`) adds at most 150 µs at the
//! median over calling the fake Amazon directly, and reaches at least 60 % of the direct
//! requests per second, both measured in the same run.
//!
//! Three processes: the real `lwa-broker serve` on a temporary SQLite database; the fake Amazon
//! (this executable run again with `--fake-server`, on tokio's default multi-thread runtime, as
//! the `fake-amazon` binary runs it); and this process, the load generator (keep-alive
//! HTTP/1.1, one request in flight per connection, on one thread). The direct path is load
//! generator → fake; the proxied path is load generator → broker → fake. The fake's bucket for
//! the operation is raised so that neither path is throttled (the broker's limiter learns that
//! rate from `x-amzn-RateLimit-Limit` and does not space calls).
//!
//! Each run alternates direct and proxied phases (the order flips every run):
//! - **latency**: one connection, one request in flight (closed loop): median and p99 of each,
//!   and their difference of medians, the latency the proxy adds;
//! - **throughput**: N client connections, closed loop, for each N of `PROXY_BENCH_CLIENTS`:
//!   requests per second of each, and the ratio proxied / direct.
//!
//! CPU (user + system, in cores) of the broker, the fake and the load generator is read from
//! `/proc` over each measured window, with the rest of the machine and the stolen time.
//!
//! Knobs (environment): `PROXY_BENCH_RUNS` (5), `PROXY_BENCH_SECONDS` (5: each measured
//! phase), `PROXY_BENCH_WARMUP_SECONDS` (1: before each phase), `PROXY_BENCH_CLIENTS` (`16,64`),
//! `PROXY_BENCH_NICE` (0: the load generator's priority; negative, when allowed, raises it above
//! the servers', which then lose their core each time it wakes), `PROXY_BENCH_BROKER_HTTP_THREADS`
//! (unset: the broker's default, `LWA_BROKER_HTTP_THREADS` two a core; 0 serves on its
//! multi-thread runtime).

mod common;

use common::http::HttpConn;
use common::{knob, machine_seconds, median, spread};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_amazon::{FakeAmazon, FakeConfig, FakeControl, defaults};
use lwa_server::admin::{NewTenant, create_tenant};
use lwa_server::config::{Overrides, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BROKER: &str = env!("CARGO_BIN_EXE_lwa-broker");
const SP_HOST: &str = "sellingpartnerapi-na.amazon.com";
const PATH: &str = "/sellers/v1/marketplaceParticipations";
const OPERATION: &str = "getMarketplaceParticipations";
/// The bounds.
const MAX_ADDED_US: f64 = 150.0;
const MIN_RATIO: f64 = 0.60;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--fake-server") {
        return fake_server();
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without `--bench`: nothing to check here.
        println!("proxy: run it with `cargo bench -p lwa-broker --bench proxy`");
        return;
    }
    let knobs = Knobs::from_env();
    let boosted = boost_priority(knobs.nice);
    // The load generator on one thread: on a small machine every extra runnable thread adds to
    // the latency it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let bench = Bench::start(knobs, boosted).await;
        let report = bench.run().await;
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
    clients: Vec<usize>,
    nice: i32,
    /// The broker's `LWA_BROKER_HTTP_THREADS`; `None`: its default.
    broker_http_threads: Option<usize>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let clients: String = knob("PROXY_BENCH_CLIENTS", "16,64".to_owned());
        Knobs {
            runs: knob("PROXY_BENCH_RUNS", 5usize).max(1),
            seconds: knob("PROXY_BENCH_SECONDS", 5.0),
            warmup: knob("PROXY_BENCH_WARMUP_SECONDS", 1.0),
            clients: clients
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<usize>()
                        .unwrap_or_else(|_| {
                            panic!("PROXY_BENCH_CLIENTS={clients:?} is not a list of numbers")
                        })
                        .max(1)
                })
                .collect(),
            nice: knob("PROXY_BENCH_NICE", 0i32).min(0),
            broker_http_threads: std::env::var("PROXY_BENCH_BROKER_HTTP_THREADS")
                .ok()
                .map(|_| knob("PROXY_BENCH_BROKER_HTTP_THREADS", 0usize)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bench: the fake and the broker as processes, one onboarded connection

struct Bench {
    knobs: Knobs,
    boosted: bool,
    dir: PathBuf,
    clock_ticks: f64,
    fake: Server,
    broker: Server,
    direct: Arc<Target>,
    proxied: Arc<Target>,
    admin_token: String,
    /// Body sizes of one direct and one proxied answer.
    body_sizes: (usize, usize),
}

/// One measured phase's CPU, in cores.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    broker: f64,
    fake: f64,
    /// This process: the load generator.
    client: f64,
    /// Every other process on the machine.
    other: f64,
    /// Time the hypervisor ran something else while this machine had work.
    steal: f64,
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    count: u64,
    errors: u64,
    cpu: Cpu,
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    rate: f64,
    errors: u64,
    cpu: Cpu,
}

/// The broker's own added-latency metric over a proxied latency phase.
#[derive(Debug, Clone, Copy)]
struct Added {
    mean_us: f64,
    /// The histogram bucket holding the median (its upper bound, µs; infinite for the last).
    median_bucket_us: f64,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Run {
    direct_first: bool,
    latency: (Latency, Latency),
    added: Option<Added>,
    /// Per client count: (direct, proxied).
    throughput: Vec<(Throughput, Throughput)>,
}

impl Bench {
    async fn start(knobs: Knobs, boosted: bool) -> Bench {
        let dir = std::env::temp_dir().join(format!("lwa-proxy-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let clock_ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let this = std::env::current_exe().expect("this executable");

        // The fake, in its own process; its bucket for the operation raised far beyond what
        // either path reaches.
        let mut command = server_command(&this, boosted, knobs.nice);
        command.arg("--fake-server");
        let fake = Server::spawn("fake Amazon", command, &dir.join("fake.log"), clock_ticks).await;
        let fake_url = format!("http://{}", fake.addr);
        let control = FakeControl::new(&fake_url);
        control.set_rate(OPERATION, 1e9, 1_000_000).await;

        // The broker's database: a tenant with a key, and the operator's admin token.
        let master_key = lwa_seal::MasterKey::generate().to_base64().to_string();
        let env = broker_env(&dir, &master_key, &fake_url);
        let (key, admin_token) = prepare(&env).await;
        let mut command = server_command(Path::new(BROKER), boosted, knobs.nice);
        command.args(["serve", "--listen", "127.0.0.1:0"]).env_clear();
        for name in ["PATH", "TMPDIR", "LANG"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("HOME", &dir).envs(&env).current_dir(&dir);
        if let Some(threads) = knobs.broker_http_threads {
            command.env("LWA_BROKER_HTTP_THREADS", threads.to_string());
        }
        let broker = Server::spawn("broker", command, &dir.join("broker.log"), clock_ticks).await;

        // One seller connection, onboarded with a refresh token the fake issued; its access
        // token (vended once) is what the direct calls send.
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
        let vended: Value = http
            .post(format!("{base}/v1/connections/{id}/access-token"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("a vend answers")
            .json()
            .await
            .expect("a vend answers JSON");
        let access_token = vended["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {vended}"))
            .to_owned();

        let direct = Arc::new(Target {
            addr: fake.addr,
            request: format!(
                "GET /{SP_HOST}{PATH} HTTP/1.1\r\nhost: {addr}\r\naccept: application/json\r\n\
                 user-agent: {ua}\r\nx-amz-access-token: {access_token}\r\n\r\n",
                addr = fake.addr,
                ua = lwa::DEFAULT_USER_AGENT,
            )
            .into_bytes(),
        });
        let proxied = Arc::new(Target {
            addr: broker.addr,
            request: format!(
                "GET /v1/connections/{id}/proxy{PATH} HTTP/1.1\r\nhost: {addr}\r\n\
                 accept: application/json\r\nauthorization: Bearer {key}\r\n\r\n",
                addr = broker.addr,
            )
            .into_bytes(),
        });
        let body_sizes = (one_body(&direct).await.len(), one_body(&proxied).await.len());
        Bench {
            knobs,
            boosted,
            dir,
            clock_ticks,
            fake,
            broker,
            direct,
            proxied,
            admin_token: admin_token.to_string(),
            body_sizes,
        }
    }

    async fn run(&self) -> String {
        let k = &self.knobs;
        // Warm both paths with the most clients: the broker's upstream pool fills, and its
        // limiter learns the fake's rate and grows its burst.
        let most = k.clients.iter().copied().max().unwrap_or(1);
        let warm = Knobs {
            seconds: 2.0,
            warmup: 0.0,
            ..k.clone()
        };
        let w = self.closed_loop(&self.proxied, most, &warm).await;
        let _ = self.closed_loop(&self.direct, most, &warm).await;
        eprintln!("warm-up: proxied {:.0}/s, {} errors", w.rate, w.errors);

        let mut runs = Vec::new();
        for run in 0..k.runs {
            let direct_first = run % 2 == 0;
            let latency = if direct_first {
                let d = self.latency(&self.direct).await;
                let (p, added) = self.proxied_latency().await;
                (d, p, added)
            } else {
                let (p, added) = self.proxied_latency().await;
                let d = self.latency(&self.direct).await;
                (d, p, added)
            };
            eprintln!(
                "run {} latency: direct p50 {:.0} µs p99 {:.0} µs, proxied p50 {:.0} µs p99 {:.0} µs, added {:.0} µs",
                run + 1,
                latency.0.p50_us,
                latency.0.p99_us,
                latency.1.p50_us,
                latency.1.p99_us,
                latency.1.p50_us - latency.0.p50_us
            );
            let mut throughput = Vec::new();
            for &clients in &k.clients {
                let (d, p) = if direct_first {
                    let d = self.closed_loop(&self.direct, clients, k).await;
                    let p = self.closed_loop(&self.proxied, clients, k).await;
                    (d, p)
                } else {
                    let p = self.closed_loop(&self.proxied, clients, k).await;
                    let d = self.closed_loop(&self.direct, clients, k).await;
                    (d, p)
                };
                eprintln!(
                    "run {} throughput, {clients} clients: direct {:.0}/s, proxied {:.0}/s ({:.2})",
                    run + 1,
                    d.rate,
                    p.rate,
                    p.rate / d.rate
                );
                throughput.push((d, p));
            }
            runs.push(Run {
                direct_first,
                latency: (latency.0, latency.1),
                added: latency.2,
                throughput,
            });
        }
        self.report(&runs)
    }

    /// A proxied latency phase, with the broker's own added-latency metric over it.
    async fn proxied_latency(&self) -> (Latency, Option<Added>) {
        let before = self.added_latency().await;
        let latency = self.latency(&self.proxied).await;
        let after = self.added_latency().await;
        let added = before.zip(after).and_then(|(b, a)| histogram_delta(&b, &a));
        (latency, added)
    }

    /// `added_latency` of `GET /admin/api/proxy/metrics`.
    async fn added_latency(&self) -> Option<Value> {
        let mut conn = HttpConn::connect(self.broker.addr).await.ok()?;
        let request = format!(
            "GET /admin/api/proxy/metrics HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
            self.broker.addr, self.admin_token
        );
        let (status, body) = conn.exchange(request.as_bytes()).await.ok()?;
        if status != 200 {
            eprintln!(
                "the proxy's metrics answered {status}: {}",
                String::from_utf8_lossy(&conn.buf[body])
            );
            return None;
        }
        let value: Value = serde_json::from_slice(&conn.buf[body]).ok()?;
        Some(value["added_latency"].clone())
    }

    /// One connection, one request in flight, for the warm-up and then the measured seconds.
    async fn latency(&self, target: &Arc<Target>) -> Latency {
        let k = &self.knobs;
        let mut conn = HttpConn::connect(target.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", target.addr));
        let start = Instant::now();
        let from = start + Duration::from_secs_f64(k.warmup);
        let until = from + Duration::from_secs_f64(k.seconds);
        let t = target.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                let (status, _) = conn.exchange(&t.request).await.expect("an answer");
                let done = Instant::now();
                if done >= until {
                    break;
                }
                if sent >= from {
                    samples.push((done - sent).as_nanos() as u64);
                    errors += u64::from(status != 200);
                }
            }
            (samples, errors)
        });
        let cpu = self.measure_cpu(from, until).await;
        let (mut samples, errors) = task.await.expect("the latency task");
        Latency {
            p50_us: quantile_us(&mut samples, 0.50),
            p99_us: quantile_us(&mut samples, 0.99),
            count: samples.len() as u64,
            errors,
            cpu,
        }
    }

    /// `clients` connections, each sending its next request when the last answer is in.
    async fn closed_loop(&self, target: &Arc<Target>, clients: usize, k: &Knobs) -> Throughput {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(
                HttpConn::connect(target.addr)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {}: {e}", target.addr)),
            );
        }
        let start = Instant::now();
        let from = start + Duration::from_secs_f64(k.warmup);
        let until = from + Duration::from_secs_f64(k.seconds);
        let mut tasks = Vec::new();
        for mut conn in conns {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let (mut done, mut errors) = (0u64, 0u64);
                loop {
                    let (status, _) = conn.exchange(&target.request).await.expect("an answer");
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
        let cpu = self.measure_cpu(from, until).await;
        let (mut done, mut errors) = (0, 0);
        for task in tasks {
            let (d, e) = task.await.expect("a client task");
            done += d;
            errors += e;
        }
        Throughput {
            rate: done as f64 / k.seconds,
            errors,
            cpu,
        }
    }

    /// CPU used between `from` and `until`, in cores.
    async fn measure_cpu(&self, from: Instant, until: Instant) -> Cpu {
        let read = || {
            (
                self.broker.cpu_seconds(),
                self.fake.cpu_seconds(),
                cpu_seconds("/proc/self/stat", self.clock_ticks),
                machine_seconds(self.clock_ticks),
                Instant::now(),
            )
        };
        tokio::time::sleep_until(from.into()).await;
        let (b0, f0, c0, m0, t0) = read();
        tokio::time::sleep_until(until.into()).await;
        let (b1, f1, c1, m1, t1) = read();
        let wall = (t1 - t0).as_secs_f64();
        let (broker, fake, client) = ((b1 - b0) / wall, (f1 - f0) / wall, (c1 - c0) / wall);
        Cpu {
            broker,
            fake,
            client,
            other: ((m1.0 - m0.0) / wall - broker - fake - client).max(0.0),
            steal: (m1.1 - m0.1) / wall,
        }
    }

    // -----------------------------------------------------------------------------------------

    fn report(&self, runs: &[Run]) -> String {
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
        let mut out = format!(
            "## Proxying a small GET\n\nMachine: {cores} cores ({model}), shared by the broker, the fake and the \
             load generator. {runs} runs; each phase {secs} s measured after {warm} s of warm-up; direct and \
             proxied phases alternate, the order flipping every run. `GET {PATH}`: answer body {db} bytes \
             direct, {pb} bytes proxied. The broker's HTTP threads: {threads}. {prio}\n",
            threads = match k.broker_http_threads {
                None => "two a core (the default)".to_owned(),
                Some(0) => "none (served on its multi-thread runtime)".to_owned(),
                Some(n) => n.to_string(),
            },
            runs = k.runs,
            secs = k.seconds,
            warm = k.warmup,
            db = self.body_sizes.0,
            pb = self.body_sizes.1,
            prio = if self.boosted {
                format!(
                    "The load generator runs at nice {} (the broker and the fake at 0).",
                    k.nice
                )
            } else {
                "The load generator runs at the servers' priority.".to_owned()
            },
        );

        // Latency.
        out.push_str(
            "\n### Latency, one request in flight (closed loop, one connection)\n\n\
             \"Broker's own\" is the broker's added-latency metric over the proxied phase (handler \
             time minus the wait for the fake's answer head): its mean, and the histogram bucket \
             holding its median. CPU in cores over the phase.\n\n\
             | run | first | direct p50 | direct p99 | proxied p50 | proxied p99 | added (p50 − p50) | broker's own: mean / median bucket | CPU direct: fake | CPU proxied: broker / fake | load generator CPU (direct / proxied) | other CPU / stolen (proxied) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (i, r) in runs.iter().enumerate() {
            let (d, p) = r.latency;
            out.push_str(&format!(
                "| {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.0} µs** | {} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
                i + 1,
                if r.direct_first { "direct" } else { "proxied" },
                d.p50_us,
                d.p99_us,
                p.p50_us,
                p.p99_us,
                p.p50_us - d.p50_us,
                r.added.map_or("—".to_owned(), |a| format!(
                    "{:.0} µs / {}",
                    a.mean_us,
                    if a.median_bucket_us.is_finite() {
                        format!("≤ {:.0} µs", a.median_bucket_us)
                    } else {
                        "> 100 ms".to_owned()
                    }
                )),
                d.cpu.fake,
                p.cpu.broker,
                p.cpu.fake,
                d.cpu.client,
                p.cpu.client,
                p.cpu.other,
                p.cpu.steal,
            ));
        }
        let pick = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let added = pick(&|r| r.latency.1.p50_us - r.latency.0.p50_us);
        let lat_errors: u64 = runs.iter().map(|r| r.latency.0.errors + r.latency.1.errors).sum();
        let per_request = |cpu: f64, l: &Latency| cpu * k.seconds / l.count.max(1) as f64 * 1e6;
        out.push_str(&format!(
            "\nMedian (min–max) over the runs: direct p50 {} µs, p99 {} µs; proxied p50 {} µs, p99 {} µs; \
             **added {} µs**; proxied p99 − direct p99 {} µs; broker's own mean {} µs. CPU per proxied \
             request at one in flight: broker {} µs, fake {} µs (direct: fake {} µs). Requests per phase: \
             direct {}, proxied {}. Non-200 answers: {lat_errors}.\n",
            spread(&pick(&|r| r.latency.0.p50_us), 0),
            spread(&pick(&|r| r.latency.0.p99_us), 0),
            spread(&pick(&|r| r.latency.1.p50_us), 0),
            spread(&pick(&|r| r.latency.1.p99_us), 0),
            spread(&added, 0),
            spread(&pick(&|r| r.latency.1.p99_us - r.latency.0.p99_us), 0),
            spread(
                &runs
                    .iter()
                    .filter_map(|r| r.added.map(|a| a.mean_us))
                    .collect::<Vec<_>>(),
                0
            ),
            spread(&pick(&|r| per_request(r.latency.1.cpu.broker, &r.latency.1)), 0),
            spread(&pick(&|r| per_request(r.latency.1.cpu.fake, &r.latency.1)), 0),
            spread(&pick(&|r| per_request(r.latency.0.cpu.fake, &r.latency.0)), 0),
            spread(&pick(&|r| r.latency.0.count as f64), 0),
            spread(&pick(&|r| r.latency.1.count as f64), 0),
        ));

        // Throughput.
        let mut verdict_ratios = Vec::new();
        for (c, &clients) in k.clients.iter().enumerate() {
            out.push_str(&format!(
                "\n### Throughput, {clients} client connections (closed loop)\n\n\
                 CPU in cores over the phase (direct / proxied).\n\n\
                 | run | first | direct req/s | proxied req/s | proxied / direct | broker CPU | fake CPU | load generator CPU | other CPU | stolen |\n\
                 |---|---|---|---|---|---|---|---|---|---|\n"
            ));
            for (i, r) in runs.iter().enumerate() {
                let (d, p) = r.throughput[c];
                out.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | **{:.2}** | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
                    i + 1,
                    if r.direct_first { "direct" } else { "proxied" },
                    d.rate,
                    p.rate,
                    p.rate / d.rate,
                    p.cpu.broker,
                    d.cpu.fake,
                    p.cpu.fake,
                    d.cpu.client,
                    p.cpu.client,
                    d.cpu.other,
                    p.cpu.other,
                    d.cpu.steal,
                    p.cpu.steal,
                ));
            }
            let ratios = pick(&|r| r.throughput[c].1.rate / r.throughput[c].0.rate);
            let errors: u64 = runs
                .iter()
                .map(|r| r.throughput[c].0.errors + r.throughput[c].1.errors)
                .sum();
            let per = |cpu: f64, t: &Throughput| cpu / t.rate * 1e6;
            out.push_str(&format!(
                "\nMedian (min–max): direct {} req/s, proxied {} req/s, **ratio {}**. CPU per proxied \
                 request: broker {} µs, fake {} µs; per direct request: fake {} µs. Non-200 answers: {errors}.\n",
                spread(&pick(&|r| r.throughput[c].0.rate), 0),
                spread(&pick(&|r| r.throughput[c].1.rate), 0),
                spread(&ratios, 2),
                spread(&pick(&|r| per(r.throughput[c].1.cpu.broker, &r.throughput[c].1)), 1),
                spread(&pick(&|r| per(r.throughput[c].1.cpu.fake, &r.throughput[c].1)), 1),
                spread(&pick(&|r| per(r.throughput[c].0.cpu.fake, &r.throughput[c].0)), 1),
            ));
            verdict_ratios.push((clients, median(&ratios), errors));
        }

        out.push_str("\n### Bounds\n\n");
        let added_median = median(&added);
        out.push_str(&format!(
            "- added latency at the median ≤ {MAX_ADDED_US:.0} µs: median {added_median:.0} µs — {}\n",
            met(added_median <= MAX_ADDED_US && lat_errors == 0)
        ));
        for (clients, ratio, errors) in verdict_ratios {
            out.push_str(&format!(
                "- proxied ≥ {:.0} % of direct requests per second, {clients} clients: median {:.0} % — {}\n",
                MIN_RATIO * 100.0,
                ratio * 100.0,
                met(ratio >= MIN_RATIO && errors == 0)
            ));
        }
        out
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// The change of the broker's added-latency histogram between two snapshots.
fn histogram_delta(before: &Value, after: &Value) -> Option<Added> {
    let count = after["count"].as_u64()? - before["count"].as_u64()?;
    if count == 0 {
        return None;
    }
    let sum = after["sum_us"].as_u64()? - before["sum_us"].as_u64()?;
    let (b, a) = (before["buckets"].as_array()?, after["buckets"].as_array()?);
    let mut seen = 0u64;
    let mut median_bucket_us = f64::INFINITY;
    for (b, a) in b.iter().zip(a) {
        seen += a["count"].as_u64()? - b["count"].as_u64()?;
        if seen * 2 >= count {
            median_bucket_us = a["le_us"].as_f64().unwrap_or(f64::INFINITY);
            break;
        }
    }
    Some(Added {
        mean_us: sum as f64 / count as f64,
        median_bucket_us,
    })
}

/// A server process's command: at priority 0 when this process was boosted.
fn server_command(program: &Path, boosted: bool, nice: i32) -> Command {
    if boosted {
        let mut command = Command::new("nice");
        command.arg("-n").arg((-nice).to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The broker's environment, also used in this process to write its database.
fn broker_env(dir: &Path, master_key: &str, fake_url: &str) -> HashMap<String, String> {
    let pairs = [
        (
            "LWA_BROKER_DATABASE_URL",
            format!("sqlite:{}", dir.join("broker.db").display()),
        ),
        ("LWA_BROKER_MASTER_KEY", master_key.to_owned()),
        (
            "LWA_BROKER_KEY_FILE",
            dir.join("unused.key").display().to_string(),
        ),
        ("LWA_BROKER_AMAZON_BASE_URL", fake_url.to_owned()),
        ("LWA_BROKER_FAKE_CLOCK", "0".to_owned()),
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

/// Creates a tenant with an API key and the operator's admin token, before the broker starts.
async fn prepare(env: &HashMap<String, String>) -> (String, String) {
    let settings = Settings::resolve(&Overrides::default(), &|name| env.get(name).cloned())
        .expect("the broker's settings");
    let public = url::Url::parse("http://127.0.0.1:1").expect("a URL");
    let state = lwa_server::open_state(&settings, public)
        .await
        .expect("the broker's database opens");
    let (_, key) = create_tenant(
        &state,
        NewTenant {
            name: "bench".into(),
            redirect_origins: vec!["https://bench.example.com".into()],
            ..NewTenant::default()
        },
    )
    .await
    .expect("a tenant");
    let admin = lwa_server::operator::create_admin_token(&state)
        .await
        .expect("an admin token");
    (key.key.to_string(), admin.to_string())
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

// ---------------------------------------------------------------------------------------------
// `--fake-server`: the fake Amazon in a process of its own

fn fake_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let fake = FakeAmazon::bind(addr, FakeConfig::default())
            .await
            .expect("the fake Amazon starts");
        println!("fake-amazon listening on {}", fake.base_url());
        fake.serve_forever().await;
    });
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
            .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
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
// The load generator: a minimal keep-alive HTTP/1.1 client, the same for both paths

/// One server and the one request sent to it.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
}

/// The body of one answer (200 expected).
async fn one_body(target: &Target) -> Vec<u8> {
    let mut conn = HttpConn::connect(target.addr).await.expect("connect");
    let (status, body) = conn.exchange(&target.request).await.expect("one call");
    let body = conn.buf[body].to_vec();
    assert_eq!(
        status,
        200,
        "a call to {} answered {status}: {}",
        target.addr,
        String::from_utf8_lossy(&body)
    );
    body
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// The `q` quantile of nanosecond samples, in microseconds.
fn quantile_us(samples: &mut [u64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i] as f64 / 1e3
}

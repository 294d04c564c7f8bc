use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_amazon::{FakeAmazon, FakeConfig, defaults};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

pub const BIN: &str = env!("CARGO_BIN_EXE_lwa-broker");

/// A fake Amazon, a scratch directory, and everything the CLI printed.
pub struct Cli {
    pub fake: FakeAmazon,
    pub dir: PathBuf,
    pub extra_env: Vec<(String, String)>,
    /// Every stderr, and every stdout but `token`'s: nothing here may contain a secret.
    pub transcript: Arc<Mutex<String>>,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lwa-cli-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Cli {
    pub async fn start(name: &str) -> Cli {
        Self::with_config(name, FakeConfig::default()).await
    }

    pub async fn with_config(name: &str, config: FakeConfig) -> Cli {
        let fake = FakeAmazon::start(config).await.unwrap();
        Cli {
            fake,
            dir: scratch_dir(name),
            extra_env: Vec::new(),
            transcript: Arc::default(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.push((name.into(), value.into()));
        self
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command.args(args).current_dir(&self.dir).env_clear();
        for name in ["PATH", "TMPDIR", "LANG"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("HOME", &self.dir)
            .env("LWA_BROKER_AMAZON_BASE_URL", self.fake.base_url())
            .env("LWA_BROKER_FAKE_CLOCK", "true")
            .env("LWA_BROKER_STORE", self.store_path())
            .env("LWA_BROKER_KEY_FILE", self.dir.join("master.key"))
            .env("LWA_BROKER_NO_BROWSER", "1")
            .env("LWA_BROKER_LOG", "trace")
            .env("AMAZON_CLIENT_ID", defaults::SP_API_CLIENT_ID)
            .env("AMAZON_CLIENT_SECRET", defaults::SP_API_CLIENT_SECRET)
            .env("LWA_BROKER_APPLICATION_ID", defaults::SP_API_APPLICATION_ID);
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs a command to completion, feeding `stdin`.
    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let output = child.wait_with_output().await.unwrap();
        let out = Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let mut transcript = self.transcript.lock().unwrap();
        transcript.push_str(&out.stderr);
        if args.first() != Some(&"token") {
            transcript.push_str(&out.stdout);
        }
        out
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None, &[]).await
    }

    /// Asserts success and returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "{args:?} failed: {}\n{}", out.stderr, out.stdout);
        out.stdout
    }

    pub async fn self_authorized_refresh_token(&self, seller: &str) -> String {
        self.fake
            .control()
            .self_authorize(defaults::SP_API_CLIENT_ID, seller)
            .await
    }

    /// Every token, code and secret the fake issued or received, as sent over the wire.
    pub async fn secrets_seen_by_the_fake(&self) -> Vec<String> {
        let mut secrets = vec![
            defaults::SP_API_CLIENT_SECRET.to_owned(),
            defaults::ADS_CLIENT_SECRET.to_owned(),
        ];
        for request in self.fake.control().requests(None).await {
            let mut texts = vec![request.body.clone(), request.query.clone()];
            texts.extend(request.headers.values().cloned());
            for text in texts {
                for piece in text.split(['&', '=', ' ', '"', ',', '?']) {
                    let decoded = url::form_urlencoded::parse(format!("x={piece}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    for token in [piece.to_owned(), decoded] {
                        if token.starts_with("Atz") || token.starts_with("amzn1.oa2-cs") {
                            secrets.push(token);
                        }
                    }
                }
            }
        }
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// No token or secret the fake saw appears in anything the CLI printed (raw,
    /// percent-encoded or JSON-escaped), nor in the sealed store file.
    pub async fn assert_no_secret_leaked(&self, extra: &[String]) {
        let mut secrets = self.secrets_seen_by_the_fake().await;
        secrets.extend(extra.iter().cloned());
        assert!(
            secrets.iter().any(|s| s.starts_with("Atza|")),
            "the check saw no access token at all"
        );
        let transcript = self.transcript.lock().unwrap().clone();
        let store = std::fs::read_to_string(self.store_path()).unwrap_or_default();
        for secret in secrets.iter().filter(|s| s.len() > 12) {
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let json = serde_json::to_string(secret).unwrap();
            for form in [secret.as_str(), encoded.as_str(), json.trim_matches('"')] {
                assert!(
                    !transcript.contains(form),
                    "a secret reached the CLI's output: {}…",
                    &secret[..8]
                );
                assert!(
                    !store.contains(form),
                    "a secret is in clear in the store: {}…",
                    &secret[..8]
                );
            }
        }
    }
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A running `lwa-broker serve`.
pub struct Broker {
    pub child: Child,
    pub url: String,
    _stdout: Lines<BufReader<ChildStdout>>,
}

/// Starts `lwa-broker --database DB serve` on a free port, with `env` added and stderr into
/// `log`, and waits until it listens.
pub async fn serve(cli: &Cli, db: &str, log: &Path, env: &[(&str, &str)]) -> Broker {
    let mut command = cli.command(&["--database", db, "serve", "--listen", "127.0.0.1:0"]);
    command
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("lwa-broker listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!(
            "lwa-broker serve ended before listening: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    })
    .await
    .expect("the server starts");
    Broker {
        child,
        url,
        _stdout: lines,
    }
}

/// The value of a `name: value` line of a command's output.
pub fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
        .trim()
        .to_owned()
}

/// The PostgreSQL database the tests make their schemas in.
pub fn postgres_url() -> String {
    std::env::var("LWA_BROKER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh schema and a URL that uses it; `None` (said so) without PostgreSQL.
pub async fn postgres_schema(test: &str) -> Option<(String, Schema)> {
    let url = postgres_url();
    let connected = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 5 s".into(),
            };
            let message = format!("PostgreSQL not reachable: {why}");
            assert!(
                std::env::var("LWA_BROKER_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{message} (LWA_BROKER_REQUIRE_POSTGRES=1)"
            );
            println!("skipped: {message} ({test})");
            return None;
        }
    };
    let schema = format!(
        "lwa_cli_{}",
        lwa_server::ids::new_secret().to_ascii_lowercase()[..16].replace('-', "_")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((
        format!("{url}{sep}options=-c%20search_path%3D{schema}"),
        Schema(schema),
    ))
}

/// A test's schema, dropped when the test ends, passed or failed (after its replicas, which
/// are declared before it).
pub struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
                    let _ = sqlx::query("SET lock_timeout = '10s'").execute(&mut conn).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = dropping.join();
    }
}

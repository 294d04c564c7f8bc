//! Server settings: a TOML file, the environment (and `.env`, read by the caller), and flags.
//! Precedence: flag > environment > file > default. Every variable is listed in
//! `.env.template`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use lwa::{Api, AppCredentials};
use serde::Deserialize;
use url::Url;

/// The seeds' single-app variables and ours. Looked up through the caller's function, so the
/// CLI can add its `.env` and tests can pass a map.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A setting was wrong; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// The TOML file (`--config`, `LWA_BROKER_CONFIG`). Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub key_file: Option<PathBuf>,
    pub amazon_base_url: Option<String>,
    pub body_limit_bytes: Option<usize>,
    pub http_threads: Option<usize>,
    pub refresh_buffer_seconds: Option<u64>,
    pub grantless_scopes: Option<Vec<String>>,
    pub audit_retention_days: Option<u32>,
    /// Run the background refresher (default true).
    pub refresher: Option<bool>,
    pub refresh_concurrency: Option<usize>,
    pub refresh_budget_per_second: Option<f64>,
    pub operator_webhook_url: Option<String>,
    pub auto_migrate: Option<bool>,
    pub webhook_allow_private: Option<bool>,
    #[serde(default)]
    pub apps: Vec<AppFile>,
}

/// One `[[apps]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub name: String,
    /// `sp-api` or `ads`.
    pub kind: String,
    pub client_id: String,
    /// The secret itself, or leave it out and name a variable in `client_secret_env`.
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub previous_client_secret: Option<String>,
    pub previous_client_secret_env: Option<String>,
    /// SP-API application id (`amzn1.sp.solution.…`), needed for the consent URL.
    pub application_id: Option<String>,
    #[serde(default)]
    pub draft: bool,
    /// The redirect URI registered at Amazon; default `{public_url}/auth/redirect`.
    pub redirect_uri: Option<String>,
    /// Ads consent scopes, space-separated; default `advertising::campaign_management`.
    pub scope: Option<String>,
    /// SP-API calls go to the sandbox hosts.
    #[serde(default)]
    pub sandbox: bool,
    /// A private app whose refresh tokens come from self-authorization in Seller Central.
    #[serde(default)]
    pub self_authorized: bool,
    /// Send `connection.refresh_token_expiring` as authorizations near 365 days; default: only
    /// for published apps (neither draft nor self-authorized).
    pub expiry_notices: Option<bool>,
}

impl ConfigFile {
    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| bad(format!("config file {}: {e}", path.display())))
    }
}

/// An Amazon application the broker uses.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub kind: Api,
    pub credentials: AppCredentials,
    pub application_id: Option<String>,
    pub draft: bool,
    /// `None`: `{public_url}/auth/redirect`.
    pub redirect_uri: Option<String>,
    pub scopes: Vec<String>,
    pub sandbox: bool,
    /// Refresh tokens come from self-authorization (a private app).
    pub self_authorized: bool,
    /// Whether authorizations nearing 365 days raise `connection.refresh_token_expiring`.
    pub expiry_notices: bool,
}

/// A trusted proxy: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<TrustedProxy, ConfigError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            bad(format!(
                "trusted proxy {text:?} is not an IP address or CIDR block"
            ))
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(format!("trusted proxy {text:?} has a bad prefix length")))?,
        };
        Ok(TrustedProxy { network, prefix })
    }

    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Flags from the command line (each overrides its variable).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub trusted_proxies: Option<String>,
    pub sandbox: bool,
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where `/metrics` (without a token) and the probes are also served; `None`: nowhere but
    /// the main listener's `/metrics`, behind the admin token.
    pub metrics_listen: Option<SocketAddr>,
    /// The base Amazon redirects back to; `None`: `http://{bound address}`.
    pub public_url: Option<Url>,
    pub database_url: String,
    pub trusted_proxies: Vec<TrustedProxy>,
    pub apps: Vec<AppConfig>,
    /// Send every Amazon call to this base (`{base}/{host}{path}`): the fake Amazon.
    pub amazon_base_url: Option<String>,
    /// Take time from the fake Amazon's clock at `amazon_base_url`.
    pub fake_clock: bool,
    pub body_limit: usize,
    pub key_file: PathBuf,
    /// `LWA_BROKER_MASTER_KEY`, if set.
    pub master_key: Option<String>,
    /// `LWA_BROKER_MASTER_KEYS` (several keys, `ID:BASE64` newest first), if set.
    pub master_keys: Option<String>,
    pub sandbox: bool,
    /// Refresh an access token once it has less than this left (default 300 s).
    pub refresh_buffer: std::time::Duration,
    /// The grantless scopes a tenant may ask for (default `sellingpartnerapi::notifications`).
    pub grantless_scopes: Vec<String>,
    /// Audit rows older than this are deleted (default 90; 0 keeps them forever).
    pub audit_retention_days: u32,
    /// The background refresher.
    pub refresher: RefresherSettings,
    /// The passthrough proxy.
    pub proxy: ProxySettings,
    /// Run the database's migrations at start (`LWA_BROKER_AUTO_MIGRATE`, default on); off, a
    /// database that is not current stops the start and `lwa-broker migrate` is run by hand.
    pub auto_migrate: bool,
    /// Where operator events (`app.client_secret_expiring`) go.
    pub operator_webhook_url: Option<String>,
    /// The operator webhook's signing secret (required with the URL).
    pub operator_webhook_secret: Option<crate::webhooks::SigningSecret>,
    /// Webhooks may reach internal addresses (loopback, private ranges, …).
    pub webhook_allow_private: bool,
    /// Threads that serve HTTP, each with its own runtime (`LWA_BROKER_HTTP_THREADS`, default
    /// [`default_http_threads`]); 0 serves on the runtime that runs the server (see
    /// [`crate::http_threads`]).
    pub http_threads: usize,
}

/// How the background refresher runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefresherSettings {
    /// Run it in `serve` (`LWA_BROKER_REFRESHER`, default on). Off, connections are refreshed
    /// only on demand.
    pub enabled: bool,
    /// Refreshes in flight at once (`LWA_BROKER_REFRESH_CONCURRENCY`, default 16).
    pub concurrency: usize,
    /// LWA calls per second per app the refresher may make (`LWA_BROKER_REFRESH_BUDGET`,
    /// default 50: enough for about 150,000 connections per app); vends are not held back by
    /// it.
    pub budget_per_second: f64,
}

impl Default for RefresherSettings {
    fn default() -> Self {
        RefresherSettings {
            enabled: true,
            concurrency: DEFAULT_REFRESH_CONCURRENCY,
            budget_per_second: DEFAULT_REFRESH_BUDGET,
        }
    }
}

/// How the passthrough proxy forwards calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxySettings {
    /// How long one proxied request may spend retrying 429s and waiting in the rate limiter
    /// (`LWA_BROKER_PROXY_RETRY_BUDGET_SECONDS`, default 10); after it, Amazon's 429 is
    /// returned unchanged.
    pub retry_budget: std::time::Duration,
    /// Largest request body forwarded (`LWA_BROKER_PROXY_BODY_LIMIT_BYTES`, default 100 MiB).
    pub body_limit: u64,
    /// Connecting to Amazon (`LWA_BROKER_PROXY_CONNECT_TIMEOUT_SECONDS`, default 5).
    pub connect_timeout: std::time::Duration,
    /// The whole exchange, body included (`LWA_BROKER_PROXY_TIMEOUT_SECONDS`, default 300).
    pub timeout: std::time::Duration,
    /// Space calls by the rate Amazon announces (`LWA_BROKER_PROXY_LIMITER`, default on).
    pub limiter: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            retry_budget: std::time::Duration::from_secs(10),
            body_limit: 100 * 1024 * 1024,
            connect_timeout: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(300),
            limiter: true,
        }
    }
}

impl ProxySettings {
    fn resolve(env: Lookup<'_>) -> Result<ProxySettings, ConfigError> {
        let d = ProxySettings::default();
        let seconds = |name: &str,
                       default: std::time::Duration|
         -> Result<std::time::Duration, ConfigError> {
            match env(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .map(std::time::Duration::from_secs_f64)
                    .ok_or_else(|| bad(format!("{name} must be a number of seconds between 0 and 86400"))),
            }
        };
        Ok(ProxySettings {
            retry_budget: seconds("LWA_BROKER_PROXY_RETRY_BUDGET_SECONDS", d.retry_budget)?,
            body_limit: match env("LWA_BROKER_PROXY_BODY_LIMIT_BYTES") {
                None => d.body_limit,
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| bad("LWA_BROKER_PROXY_BODY_LIMIT_BYTES must be a number of bytes"))?,
            },
            connect_timeout: seconds("LWA_BROKER_PROXY_CONNECT_TIMEOUT_SECONDS", d.connect_timeout)?,
            timeout: seconds("LWA_BROKER_PROXY_TIMEOUT_SECONDS", d.timeout)?,
            limiter: match env("LWA_BROKER_PROXY_LIMITER") {
                None => d.limiter,
                Some(v) => flag(&v).ok_or_else(|| bad("LWA_BROKER_PROXY_LIMITER must be on or off"))?,
            },
        })
    }
}

/// One setting of the server, as the reference in the README and `.env.template` show it.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// The command-line flag, if any.
    pub flag: Option<&'static str>,
    /// The environment variable.
    pub variable: &'static str,
    /// The key in the TOML file, if any.
    pub file_key: Option<&'static str>,
    /// The default, as a person reads it.
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn setting(
    flag: Option<&'static str>,
    variable: &'static str,
    file_key: Option<&'static str>,
    default: &'static str,
    meaning: &'static str,
) -> SettingDoc {
    SettingDoc {
        flag,
        variable,
        file_key,
        default,
        meaning,
    }
}

/// Every variable [`Settings::resolve`] reads (a test checks it against what the resolver asks
/// for); the README's server table is made from it (a test fails when it is stale).
pub const SERVER_SETTINGS: &[SettingDoc] = &[
    setting(
        Some("--listen"),
        "LWA_BROKER_LISTEN",
        Some("listen"),
        "`127.0.0.1:8080`",
        "address to bind",
    ),
    setting(
        None,
        "LWA_BROKER_METRICS_LISTEN",
        Some("metrics_listen"),
        "off",
        "a second address serving `/metrics` without a token, `/healthz` and `/readyz` (e.g. `127.0.0.1:9464`; keep it private); `/metrics` on the main address always needs the admin token",
    ),
    setting(
        Some("--public-url"),
        "LWA_BROKER_PUBLIC_URL",
        Some("public_url"),
        "`http://LISTEN`",
        "the base Amazon redirects back to (`/auth/redirect`) and links start from",
    ),
    setting(
        Some("--database"),
        "LWA_BROKER_DATABASE_URL",
        Some("database_url"),
        "`sqlite:lwa-broker.db`",
        "the database: `sqlite:PATH`, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for several replicas",
    ),
    setting(
        None,
        "LWA_BROKER_AUTO_MIGRATE",
        Some("auto_migrate"),
        "on",
        "run the database's migrations at start (safe when replicas start together); off, an older schema stops the start and `lwa-broker migrate` is run by hand",
    ),
    setting(
        Some("--config"),
        "LWA_BROKER_CONFIG",
        None,
        "—",
        "TOML file (below)",
    ),
    setting(
        Some("--trusted-proxies"),
        "LWA_BROKER_TRUSTED_PROXIES",
        Some("trusted_proxies"),
        "none",
        "addresses/CIDRs whose `X-Forwarded-For` names the client",
    ),
    setting(
        Some("--key-file"),
        "LWA_BROKER_KEY_FILE",
        Some("key_file"),
        "`lwa-broker.key`",
        "the master key file (it may hold several keys, `ID BASE64` a line, newest first)",
    ),
    setting(
        None,
        "LWA_BROKER_MASTER_KEY",
        None,
        "—",
        "the master key itself (32 bytes, base64) instead of a key file",
    ),
    setting(
        None,
        "LWA_BROKER_MASTER_KEYS",
        None,
        "—",
        "several master keys, `ID:BASE64` comma-separated, newest first (instead of `LWA_BROKER_MASTER_KEY`)",
    ),
    setting(
        None,
        "LWA_BROKER_BODY_LIMIT_BYTES",
        Some("body_limit_bytes"),
        "1048576",
        "request body limit",
    ),
    setting(
        None,
        "LWA_BROKER_HTTP_THREADS",
        Some("http_threads"),
        "two per core",
        "threads serving HTTP, each with its own runtime and each connection on one of them; 0 serves on the server's multi-thread runtime",
    ),
    setting(
        None,
        "LWA_BROKER_REFRESH_BUFFER_SECONDS",
        Some("refresh_buffer_seconds"),
        "300",
        "refresh an access token once it has less than this left (at most 3000)",
    ),
    setting(
        None,
        "LWA_BROKER_AUDIT_RETENTION_DAYS",
        Some("audit_retention_days"),
        "90",
        "audit rows older than this are deleted (0: kept)",
    ),
    setting(
        None,
        "LWA_BROKER_REFRESHER",
        Some("refresher"),
        "on",
        "run the background refresher (off: connections are refreshed on demand only)",
    ),
    setting(
        None,
        "LWA_BROKER_REFRESH_CONCURRENCY",
        Some("refresh_concurrency"),
        "16",
        "background refreshes in flight at once",
    ),
    setting(
        None,
        "LWA_BROKER_REFRESH_BUDGET",
        Some("refresh_budget_per_second"),
        "50",
        "LWA calls per second per app the background refresher may make (steady state needs about connections ÷ 3,300 per app)",
    ),
    setting(
        None,
        "LWA_BROKER_GRANTLESS_SCOPES",
        Some("grantless_scopes"),
        "`sellingpartnerapi::notifications`",
        "grantless scopes tenants may ask for (comma or space separated); the rotation scope is off by default because with it a tenant could rotate the operator's client secret",
    ),
    setting(
        None,
        "LWA_BROKER_OPERATOR_WEBHOOK_URL",
        Some("operator_webhook_url"),
        "—",
        "where operator events (`app.client_secret_expiring`) are sent",
    ),
    setting(
        None,
        "LWA_BROKER_OPERATOR_WEBHOOK_SECRET",
        None,
        "—",
        "the operator webhook's signing secret (required with the URL)",
    ),
    setting(
        None,
        "LWA_BROKER_WEBHOOK_ALLOW_PRIVATE",
        Some("webhook_allow_private"),
        "off",
        "webhooks may reach internal addresses (loopback, private ranges, …)",
    ),
    setting(
        None,
        "LWA_BROKER_PROXY_RETRY_BUDGET_SECONDS",
        None,
        "10",
        "how long one proxied request may spend waiting for the rate limiter and retrying 429s; then Amazon's 429 is returned unchanged",
    ),
    setting(
        None,
        "LWA_BROKER_PROXY_LIMITER",
        None,
        "on",
        "the proxy's per-connection-and-operation rate limiter",
    ),
    setting(
        None,
        "LWA_BROKER_PROXY_BODY_LIMIT_BYTES",
        None,
        "104857600",
        "largest request body the proxy forwards (413 beyond)",
    ),
    setting(
        None,
        "LWA_BROKER_PROXY_CONNECT_TIMEOUT_SECONDS",
        None,
        "5",
        "connecting to Amazon (502 `amazon_unreachable`)",
    ),
    setting(
        None,
        "LWA_BROKER_PROXY_TIMEOUT_SECONDS",
        None,
        "300",
        "one whole proxied exchange, body included (504 `amazon_timeout`)",
    ),
    setting(
        Some("--sandbox"),
        "LWA_BROKER_SANDBOX",
        None,
        "off",
        "fake Amazon in-process, demo tenant, temporary database and key",
    ),
    setting(
        None,
        "LWA_BROKER_AMAZON_BASE_URL",
        Some("amazon_base_url"),
        "Amazon",
        "send every Amazon call to `{base}/{host}{path}` (the fake Amazon, for tests)",
    ),
    setting(
        None,
        "LWA_BROKER_FAKE_CLOCK",
        None,
        "off",
        "take time from the fake Amazon's clock at `LWA_BROKER_AMAZON_BASE_URL` (tests)",
    ),
    setting(
        None,
        "AMAZON_CLIENT_ID",
        None,
        "—",
        "the seeds' single app: its LWA client id (apps may instead come from the config file)",
    ),
    setting(
        None,
        "AMAZON_CLIENT_SECRET",
        None,
        "—",
        "that app's client secret (required with `AMAZON_CLIENT_ID`)",
    ),
    setting(
        None,
        "LWA_BROKER_PREVIOUS_CLIENT_SECRET",
        None,
        "—",
        "that app's previous client secret, tried on `invalid_client` during Amazon's rotation overlap",
    ),
    setting(
        None,
        "AMAZON_OAUTH_REDIRECT_URI",
        None,
        "`PUBLIC_URL/auth/redirect`",
        "the redirect URI registered at Amazon; its path is served as the callback too",
    ),
    setting(
        None,
        "AMAZON_SCOPE",
        None,
        "`advertising::campaign_management` for Ads",
        "Ads consent scopes; an `advertising::` scope makes the app an Ads app",
    ),
    setting(
        None,
        "LWA_BROKER_API",
        None,
        "from `AMAZON_SCOPE`",
        "that app's kind: `sp-api` or `ads`",
    ),
    setting(
        None,
        "LWA_BROKER_APPLICATION_ID",
        None,
        "—",
        "the SP-API application id (`amzn1.sp.solution.…`), required for an SP-API app",
    ),
    setting(
        None,
        "LWA_BROKER_DRAFT_APP",
        None,
        "off",
        "the app is a draft (the consent URL gets `version=beta`)",
    ),
    setting(
        None,
        "LWA_BROKER_SELF_AUTHORIZED_APP",
        None,
        "off",
        "a private app whose refresh tokens come from self-authorization in Seller Central",
    ),
    setting(
        None,
        "LWA_BROKER_EXPIRY_NOTICES",
        None,
        "on for published apps",
        "send `connection.refresh_token_expiring` at 30 and 7 days before 365",
    ),
    setting(
        None,
        "LWA_BROKER_SP_API_SANDBOX",
        None,
        "off",
        "SP-API calls go to Amazon's sandbox hosts",
    ),
];

/// The server's settings as a Markdown table (the README's, between its markers).
pub fn settings_reference() -> String {
    let mut out = String::from("| flag | variable | file key | default | meaning |\n|---|---|---|---|---|\n");
    for s in SERVER_SETTINGS {
        let code = |v: Option<&str>| v.map(|v| format!("`{v}`")).unwrap_or_else(|| "—".to_owned());
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            code(s.flag),
            s.variable,
            code(s.file_key),
            s.default,
            s.meaning
        ));
    }
    out
}

/// Default number of background refreshes in flight at once.
pub const DEFAULT_REFRESH_CONCURRENCY: usize = 16;
/// Default LWA calls per second per app for the background refresher.
pub const DEFAULT_REFRESH_BUDGET: f64 = 50.0;

/// Default database: `lwa-broker.db` in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:lwa-broker.db";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default refresh buffer: 5 minutes.
pub const DEFAULT_REFRESH_BUFFER_SECONDS: u64 = 300;
/// The grantless scope tenants may ask for unless configured otherwise. The rotation scope is
/// left out on purpose: with it a tenant could rotate the operator's client secret.
pub const DEFAULT_GRANTLESS_SCOPES: &[&str] = &["sellingpartnerapi::notifications"];
/// Default request body limit (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The most serving threads `LWA_BROKER_HTTP_THREADS` may ask for.
pub const MAX_HTTP_THREADS: usize = 1024;

/// Default serving threads: two per core, so that a thread the kernel takes off its core (for
/// another process, or while a long request runs) leaves another there to serve. With one per
/// core the cached vend's p99 at half load was 3 times as high on a busy two-core machine, at
/// the same throughput (BENCHMARKS.md).
pub fn default_http_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// `on`/`off` and the usual spellings; `None` for anything else.
fn flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl Settings {
    /// Resolves flags, the environment (through `env`) and the config file.
    pub fn resolve(flags: &Overrides, env: Lookup<'_>) -> Result<Settings, ConfigError> {
        let config_path = flags
            .config
            .clone()
            .or_else(|| env("LWA_BROKER_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let listen_text = flags
            .listen
            .clone()
            .or_else(|| env("LWA_BROKER_LISTEN"))
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(format!(
                "listen address {listen_text:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
            ))
        })?;
        let public_url = match flags
            .public_url
            .clone()
            .or_else(|| env("LWA_BROKER_PUBLIC_URL"))
            .or(file.public_url.clone())
        {
            None => None,
            Some(text) => Some(parse_public_url(&text)?),
        };
        let database_url = flags
            .database_url
            .clone()
            .or_else(|| env("LWA_BROKER_DATABASE_URL"))
            .or(file.database_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let trusted_proxies = match flags
            .trusted_proxies
            .clone()
            .or_else(|| env("LWA_BROKER_TRUSTED_PROXIES"))
        {
            Some(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(TrustedProxy::parse)
                .collect::<Result<Vec<_>, _>>(),
            None => file
                .trusted_proxies
                .iter()
                .flatten()
                .map(|s| TrustedProxy::parse(s))
                .collect(),
        }?;
        let amazon_base_url = env("LWA_BROKER_AMAZON_BASE_URL").or(file.amazon_base_url.clone());
        let body_limit = match env("LWA_BROKER_BODY_LIMIT_BYTES") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("LWA_BROKER_BODY_LIMIT_BYTES must be a number of bytes"))?,
            None => file.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
        };
        let key_file = env("LWA_BROKER_KEY_FILE")
            .map(PathBuf::from)
            .or(file.key_file.clone())
            .unwrap_or_else(|| PathBuf::from("lwa-broker.key"));
        let refresh_buffer = match env("LWA_BROKER_REFRESH_BUFFER_SECONDS") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("LWA_BROKER_REFRESH_BUFFER_SECONDS must be a whole number of seconds"))?,
            None => file
                .refresh_buffer_seconds
                .unwrap_or(DEFAULT_REFRESH_BUFFER_SECONDS),
        };
        if refresh_buffer > 3000 {
            return Err(bad(
                "the refresh buffer must be at most 3000 seconds (access tokens live 3600)",
            ));
        }
        let grantless_scopes: Vec<String> = match env("LWA_BROKER_GRANTLESS_SCOPES") {
            Some(v) => v
                .split([',', ' '])
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_owned())
                .collect(),
            None => file
                .grantless_scopes
                .clone()
                .unwrap_or_else(|| DEFAULT_GRANTLESS_SCOPES.iter().map(|s| s.to_string()).collect()),
        };
        let audit_retention_days = match env("LWA_BROKER_AUDIT_RETENTION_DAYS") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("LWA_BROKER_AUDIT_RETENTION_DAYS must be a whole number of days"))?,
            None => file.audit_retention_days.unwrap_or(90),
        };
        let refresher = RefresherSettings {
            enabled: match env("LWA_BROKER_REFRESHER") {
                Some(v) => flag(&v).ok_or_else(|| bad("LWA_BROKER_REFRESHER must be on or off"))?,
                None => file.refresher.unwrap_or(true),
            },
            concurrency: match env("LWA_BROKER_REFRESH_CONCURRENCY") {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| bad("LWA_BROKER_REFRESH_CONCURRENCY must be a whole number of refreshes"))?,
                None => file.refresh_concurrency.unwrap_or(DEFAULT_REFRESH_CONCURRENCY),
            },
            budget_per_second: match env("LWA_BROKER_REFRESH_BUDGET") {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| bad("LWA_BROKER_REFRESH_BUDGET must be a number of calls per second"))?,
                None => file.refresh_budget_per_second.unwrap_or(DEFAULT_REFRESH_BUDGET),
            },
        };
        if !(1..=10_000).contains(&refresher.concurrency) {
            return Err(bad("the refresh concurrency must be between 1 and 10000"));
        }
        if !(refresher.budget_per_second.is_finite() && refresher.budget_per_second > 0.0) {
            return Err(bad(
                "the refresh budget must be a positive number of calls per second",
            ));
        }
        let proxy = ProxySettings::resolve(env)?;
        let auto_migrate = match env("LWA_BROKER_AUTO_MIGRATE") {
            Some(v) => flag(&v).ok_or_else(|| bad("LWA_BROKER_AUTO_MIGRATE must be on or off"))?,
            None => file.auto_migrate.unwrap_or(true),
        };
        let http_threads = match env("LWA_BROKER_HTTP_THREADS") {
            Some(v) => v.trim().parse().map_err(|_| {
                bad("LWA_BROKER_HTTP_THREADS must be a number of threads (0: none of their own)")
            })?,
            None => file.http_threads.unwrap_or_else(default_http_threads),
        };
        if http_threads > MAX_HTTP_THREADS {
            return Err(bad(format!(
                "LWA_BROKER_HTTP_THREADS is {http_threads}: at most {MAX_HTTP_THREADS}"
            )));
        }
        let webhook_allow_private = match env("LWA_BROKER_WEBHOOK_ALLOW_PRIVATE") {
            Some(v) => truthy(Some(v)),
            None => file.webhook_allow_private.unwrap_or(false),
        };
        let operator_webhook_url = match env("LWA_BROKER_OPERATOR_WEBHOOK_URL")
            .or(file.operator_webhook_url.clone())
            .filter(|u| !u.trim().is_empty())
        {
            None => None,
            Some(text) => Some(
                crate::webhooks::address::parse_webhook_url(&text, webhook_allow_private)
                    .map_err(|e| bad(format!("LWA_BROKER_OPERATOR_WEBHOOK_URL: {}", e.message)))?
                    .to_string(),
            ),
        };
        let operator_webhook_secret = env("LWA_BROKER_OPERATOR_WEBHOOK_SECRET")
            .filter(|s| !s.trim().is_empty())
            .map(|s| crate::webhooks::SigningSecret::new(s.trim()));
        if operator_webhook_url.is_some() && operator_webhook_secret.is_none() {
            return Err(bad(
                "LWA_BROKER_OPERATOR_WEBHOOK_SECRET must be set with LWA_BROKER_OPERATOR_WEBHOOK_URL \
                 (any long random string, e.g. `openssl rand -hex 32`); it signs the operator's webhooks",
            ));
        }
        let mut apps = Vec::new();
        for app in &file.apps {
            apps.push(app_from_file(app, env)?);
        }
        if let Some(app) = app_from_env(env)? {
            if apps.iter().any(|a| a.name == app.name) {
                return Err(bad(
                    "the config file already has an app named \"default\"; the AMAZON_CLIENT_ID app cannot be added",
                ));
            }
            apps.push(app);
        }
        let metrics_listen = match env("LWA_BROKER_METRICS_LISTEN")
            .or(file.metrics_listen.clone())
            .filter(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("off"))
        {
            None => None,
            Some(text) => Some(text.trim().parse::<SocketAddr>().map_err(|_| {
                bad(format!(
                    "LWA_BROKER_METRICS_LISTEN {text:?} is not HOST:PORT (e.g. 127.0.0.1:9464) or off"
                ))
            })?),
        };
        Ok(Settings {
            listen,
            metrics_listen,
            public_url,
            database_url,
            trusted_proxies,
            apps,
            amazon_base_url,
            fake_clock: truthy(env("LWA_BROKER_FAKE_CLOCK")),
            body_limit,
            key_file,
            master_key: env("LWA_BROKER_MASTER_KEY"),
            master_keys: env(lwa_seal::MASTER_KEYS_ENV),
            sandbox: flags.sandbox || truthy(env("LWA_BROKER_SANDBOX")),
            refresh_buffer: std::time::Duration::from_secs(refresh_buffer),
            grantless_scopes,
            audit_retention_days,
            refresher,
            proxy,
            auto_migrate,
            operator_webhook_url,
            operator_webhook_secret,
            webhook_allow_private,
            http_threads,
        })
    }
}

fn parse_public_url(text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|e| bad(format!("public URL {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return Err(bad(format!(
            "public URL {text:?} must be http(s)://host[:port][/path]"
        )));
    }
    Ok(url)
}

fn parse_kind(kind: &str, app: &str) -> Result<Api, ConfigError> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "sp-api" | "spapi" | "sp_api" => Ok(Api::SpApi),
        "ads" | "amc" => Ok(Api::Ads),
        other => Err(bad(format!("app {app:?}: kind {other:?} must be sp-api or ads"))),
    }
}

fn scopes(scope: Option<&str>) -> Vec<String> {
    scope
        .map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![lwa::ADS_SCOPE_CAMPAIGN_MANAGEMENT.to_owned()])
}

fn app_from_file(app: &AppFile, env: Lookup<'_>) -> Result<AppConfig, ConfigError> {
    let kind = parse_kind(&app.kind, &app.name)?;
    let secret = match (&app.client_secret, &app.client_secret_env) {
        (Some(s), _) => s.clone(),
        (None, Some(var)) => {
            env(var).ok_or_else(|| bad(format!("app {:?}: variable {var} is not set", app.name)))?
        }
        (None, None) => {
            return Err(bad(format!(
                "app {:?}: set client_secret or client_secret_env",
                app.name
            )));
        }
    };
    let previous = match (&app.previous_client_secret, &app.previous_client_secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => env(var),
        (None, None) => None,
    };
    let mut credentials = AppCredentials::new(app.client_id.clone(), secret);
    if let Some(previous) = previous {
        credentials = credentials.with_previous_secret(previous);
    }
    if kind == Api::SpApi && app.application_id.is_none() {
        return Err(bad(format!(
            "app {:?}: an sp-api app needs application_id",
            app.name
        )));
    }
    Ok(AppConfig {
        name: app.name.clone(),
        kind,
        credentials,
        application_id: app.application_id.clone(),
        draft: app.draft,
        redirect_uri: app.redirect_uri.clone(),
        scopes: scopes(app.scope.as_deref()),
        sandbox: app.sandbox,
        self_authorized: app.self_authorized,
        expiry_notices: app.expiry_notices.unwrap_or(!app.draft && !app.self_authorized),
    })
}

/// The seeds' single app: `AMAZON_CLIENT_ID`, `AMAZON_CLIENT_SECRET`, `AMAZON_OAUTH_REDIRECT_URI`,
/// `AMAZON_SCOPE` (an `advertising::` scope makes it an Ads app), plus `LWA_BROKER_API`,
/// `LWA_BROKER_APPLICATION_ID`, `LWA_BROKER_DRAFT_APP`, `LWA_BROKER_PREVIOUS_CLIENT_SECRET`.
fn app_from_env(env: Lookup<'_>) -> Result<Option<AppConfig>, ConfigError> {
    let Some(client_id) = env("AMAZON_CLIENT_ID") else {
        return Ok(None);
    };
    let secret = env("AMAZON_CLIENT_SECRET")
        .ok_or_else(|| bad("AMAZON_CLIENT_ID is set but AMAZON_CLIENT_SECRET is not"))?;
    let scope = env("AMAZON_SCOPE");
    let kind = match env("LWA_BROKER_API") {
        Some(kind) => parse_kind(&kind, "default")?,
        None if scope.as_deref().is_some_and(|s| s.contains("advertising")) => Api::Ads,
        None => Api::SpApi,
    };
    let mut credentials = AppCredentials::new(client_id, secret);
    if let Some(previous) = env("LWA_BROKER_PREVIOUS_CLIENT_SECRET") {
        credentials = credentials.with_previous_secret(previous);
    }
    let application_id = env("LWA_BROKER_APPLICATION_ID");
    if kind == Api::SpApi && application_id.is_none() {
        return Err(bad(
            "an SP-API app from AMAZON_CLIENT_ID needs LWA_BROKER_APPLICATION_ID (its amzn1.sp.solution… id)",
        ));
    }
    let draft = truthy(env("LWA_BROKER_DRAFT_APP"));
    let self_authorized = truthy(env("LWA_BROKER_SELF_AUTHORIZED_APP"));
    let expiry_notices = match env("LWA_BROKER_EXPIRY_NOTICES") {
        Some(v) => flag(&v).ok_or_else(|| bad("LWA_BROKER_EXPIRY_NOTICES must be on or off"))?,
        None => !draft && !self_authorized,
    };
    Ok(Some(AppConfig {
        name: "default".into(),
        kind,
        credentials,
        application_id,
        draft,
        self_authorized,
        expiry_notices,
        redirect_uri: env("AMAZON_OAUTH_REDIRECT_URI"),
        scopes: scopes(scope.as_deref()),
        sandbox: truthy(env("LWA_BROKER_SP_API_SANDBOX")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::resolve(&Overrides::default(), &|k| map.get(k).cloned())
    }

    /// Every variable the resolver reads, with and without the seeds' single app.
    fn variables_read() -> std::collections::BTreeSet<String> {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        for vars in [
            vec![],
            vec![
                ("AMAZON_CLIENT_ID", "c"),
                ("AMAZON_CLIENT_SECRET", "s"),
                ("LWA_BROKER_APPLICATION_ID", "amzn1.sp.solution.y"),
            ],
        ] {
            let map: HashMap<&str, &str> = vars.into_iter().collect();
            let lookup = |k: &str| {
                read.borrow_mut().insert(k.to_owned());
                map.get(k).map(|v| v.to_string())
            };
            Settings::resolve(&Overrides::default(), &lookup).unwrap();
        }
        read.into_inner()
    }

    #[test]
    fn the_settings_table_lists_every_variable_the_resolver_reads() {
        let documented: std::collections::BTreeSet<String> =
            SERVER_SETTINGS.iter().map(|s| s.variable.to_owned()).collect();
        assert_eq!(documented.len(), SERVER_SETTINGS.len(), "a variable listed twice");
        let read = variables_read();
        let undocumented: Vec<_> = read.difference(&documented).collect();
        let unread: Vec<_> = documented.difference(&read).collect();
        assert!(
            undocumented.is_empty(),
            "read but not in SERVER_SETTINGS: {undocumented:?}"
        );
        assert!(unread.is_empty(), "in SERVER_SETTINGS but never read: {unread:?}");
    }

    /// The README's table is [`settings_reference`]; `LWA_BROKER_UPDATE_DOCS=1` rewrites it.
    #[test]
    fn the_readme_settings_table_is_current() {
        const START: &str = "<!-- settings-reference:start (generated from SERVER_SETTINGS; LWA_BROKER_UPDATE_DOCS=1 cargo test -p lwa-server the_readme) -->\n";
        const END: &str = "<!-- settings-reference:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find(START).expect("the README has the start marker") + START.len();
        let end = readme.find(END).expect("the README has the end marker");
        let expected = settings_reference();
        if readme[start..end] != expected {
            if std::env::var_os("LWA_BROKER_UPDATE_DOCS").is_some() {
                std::fs::write(path, format!("{}{expected}{}", &readme[..start], &readme[end..])).unwrap();
            } else {
                panic!(
                    "README.md's settings table is stale: run LWA_BROKER_UPDATE_DOCS=1 cargo test -p lwa-server the_readme"
                );
            }
        }
    }

    /// `.env.template` has every server variable, each under a comment saying what it is.
    #[test]
    fn the_env_template_explains_every_variable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.template");
        let template = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = template.lines().collect();
        for s in SERVER_SETTINGS {
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("{}=", s.variable)))
                .unwrap_or_else(|| panic!(".env.template has no line {}=", s.variable));
            assert!(
                at > 0 && lines[at - 1].starts_with('#'),
                ".env.template: {} has no comment above it",
                s.variable
            );
        }
    }

    #[test]
    fn webhook_settings() {
        let s = resolve(&[]).unwrap();
        assert_eq!(
            (
                s.operator_webhook_url,
                s.operator_webhook_secret.is_none(),
                s.webhook_allow_private
            ),
            (None, true, false)
        );
        let s = resolve(&[
            ("LWA_BROKER_OPERATOR_WEBHOOK_URL", "https://ops.example.com/lwa"),
            ("LWA_BROKER_OPERATOR_WEBHOOK_SECRET", "operator-secret-0123456789"),
        ])
        .unwrap();
        assert_eq!(
            s.operator_webhook_url.as_deref(),
            Some("https://ops.example.com/lwa")
        );
        assert_eq!(
            s.operator_webhook_secret.unwrap().expose(),
            "operator-secret-0123456789"
        );
        assert!(
            !format!(
                "{:?}",
                resolve(&[
                    ("LWA_BROKER_OPERATOR_WEBHOOK_URL", "https://ops.example.com/lwa"),
                    ("LWA_BROKER_OPERATOR_WEBHOOK_SECRET", "operator-secret-0123456789")
                ])
                .unwrap()
            )
            .contains("operator-secret")
        );
        let missing =
            resolve(&[("LWA_BROKER_OPERATOR_WEBHOOK_URL", "https://ops.example.com/lwa")]).unwrap_err();
        assert!(
            missing
                .0
                .contains("LWA_BROKER_OPERATOR_WEBHOOK_SECRET must be set"),
            "{missing}"
        );
        let internal = [
            ("LWA_BROKER_OPERATOR_WEBHOOK_URL", "http://127.0.0.1:9000/ops"),
            ("LWA_BROKER_OPERATOR_WEBHOOK_SECRET", "operator-secret-0123456789"),
        ];
        let refused = resolve(&internal).unwrap_err();
        assert!(
            refused
                .0
                .starts_with("LWA_BROKER_OPERATOR_WEBHOOK_URL: url points to an internal address"),
            "{refused}"
        );
        let mut allowed = internal.to_vec();
        allowed.push(("LWA_BROKER_WEBHOOK_ALLOW_PRIVATE", "1"));
        let s = resolve(&allowed).unwrap();
        assert!(s.webhook_allow_private);
        assert_eq!(
            s.operator_webhook_url.as_deref(),
            Some("http://127.0.0.1:9000/ops")
        );
        let bad = resolve(&[("LWA_BROKER_OPERATOR_WEBHOOK_URL", "ftp://ops.example.com")]).unwrap_err();
        assert!(bad.0.contains("http or https"), "{bad}");
    }

    #[test]
    fn http_threads_default_to_two_per_core_and_bad_values_are_refused() {
        assert_eq!(resolve(&[]).unwrap().http_threads, default_http_threads());
        assert_eq!(
            resolve(&[("LWA_BROKER_HTTP_THREADS", "0")]).unwrap().http_threads,
            0
        );
        assert_eq!(
            resolve(&[("LWA_BROKER_HTTP_THREADS", " 3 ")])
                .unwrap()
                .http_threads,
            3
        );
        let e = resolve(&[("LWA_BROKER_HTTP_THREADS", "many")]).unwrap_err();
        assert!(e.0.contains("LWA_BROKER_HTTP_THREADS must be a number"), "{e}");
        let e = resolve(&[("LWA_BROKER_HTTP_THREADS", "1025")]).unwrap_err();
        assert!(e.0.contains("at most 1024"), "{e}");
    }

    #[test]
    fn defaults_and_seed_variables() {
        let s = resolve(&[
            ("AMAZON_CLIENT_ID", "amzn1.application-oa2-client.x"),
            ("AMAZON_CLIENT_SECRET", "s"),
            ("LWA_BROKER_APPLICATION_ID", "amzn1.sp.solution.y"),
            ("AMAZON_OAUTH_REDIRECT_URI", "https://b.example.com/amazon/cb"),
        ])
        .unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps[0].kind, Api::SpApi);
        assert_eq!(
            s.apps[0].redirect_uri.as_deref(),
            Some("https://b.example.com/amazon/cb")
        );
        let ads = resolve(&[
            ("AMAZON_CLIENT_ID", "c"),
            ("AMAZON_CLIENT_SECRET", "s"),
            ("AMAZON_SCOPE", "advertising::campaign_management"),
        ])
        .unwrap();
        assert_eq!(ads.apps[0].kind, Api::Ads);
    }

    #[test]
    fn precise_errors() {
        let e = resolve(&[("LWA_BROKER_LISTEN", "nope")]).unwrap_err();
        assert!(e.0.contains("listen address"), "{e}");
        let e = resolve(&[("AMAZON_CLIENT_ID", "c")]).unwrap_err();
        assert!(e.0.contains("AMAZON_CLIENT_SECRET"), "{e}");
        let e = resolve(&[("LWA_BROKER_TRUSTED_PROXIES", "10.0.0.0/40")]).unwrap_err();
        assert!(e.0.contains("prefix"), "{e}");
    }

    #[test]
    fn trusted_proxy_blocks() {
        let p = TrustedProxy::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.2.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            TrustedProxy::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            TrustedProxy::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}

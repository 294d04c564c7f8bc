//! Settings: a flag, else the environment, else `.env` in the working directory, else a default.
//! A missing setting is reported by its variable's name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lwa::{
    AccountType, Api, AppCredentials, Clock, EncryptedFileStore, Endpoints, FakeAmazonClock, LwaClient,
    Marketplace, Region, SystemClock, TokenManager, TokenManagerConfig, TokenStore,
};
use lwa_seal::MasterKeys;

use super::Failure;

/// The default loopback redirect URI for `login`.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:8765/callback";

/// Where values come from, in order.
pub struct Sources {
    dotenv: HashMap<String, String>,
}

impl Sources {
    pub fn load() -> Self {
        Self {
            dotenv: super::dotenv::from_working_directory(),
        }
    }

    /// `flag`, else the variable from the environment, else from `.env`; empty counts as unset.
    pub fn get(&self, flag: Option<&str>, variable: &str) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| std::env::var(variable).ok())
            .or_else(|| self.dotenv.get(variable).cloned())
            .filter(|v| !v.trim().is_empty())
    }

    pub fn require(&self, flag: Option<&str>, variable: &str, flag_name: &str) -> Result<String, Failure> {
        self.get(flag, variable).ok_or_else(|| {
            Failure::config(format!(
                "missing setting {variable}: set it in the environment or .env, or pass {flag_name}"
            ))
        })
    }

    pub fn flag_bool(&self, flag: bool, variable: &str) -> bool {
        flag || self
            .get(None, variable)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }
}

/// The flags shared by every command (each also a variable).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// The account to use among the stored ones [env: LWA_BROKER_ACCOUNT] [default: default]
    #[arg(long, global = true)]
    pub account: Option<String>,
    /// sp-api or ads [env: LWA_BROKER_API] [default: the account's, else sp-api]
    #[arg(long, global = true)]
    pub api: Option<String>,
    /// na, eu, fe, an AWS region name or a marketplace id [env: LWA_BROKER_REGION] [default: the account's, else na]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Marketplace id or country code; picks the Seller/Vendor Central host [env: LWA_BROKER_MARKETPLACE]
    #[arg(long, global = true)]
    pub marketplace: Option<String>,
    /// LWA client id [env: AMAZON_CLIENT_ID]
    #[arg(long, global = true)]
    pub client_id: Option<String>,
    /// Path of the sealed token file [env: LWA_BROKER_STORE] [default: ~/.config/lwa-broker/tokens.json]
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    /// Path of the master key file, created 0600 on first use when LWA_BROKER_MASTER_KEY is unset
    /// [env: LWA_BROKER_KEY_FILE] [default: ~/.config/lwa-broker/master.key]
    #[arg(long, global = true)]
    pub key_file: Option<PathBuf>,
}

/// Everything a command needs to talk to Amazon for one account.
pub struct Context {
    pub sources: Sources,
    pub account: String,
    pub store: Arc<EncryptedFileStore>,
    pub endpoints: Endpoints,
    pub clock: Arc<dyn Clock>,
    pub args: CommonArgs,
}

impl Context {
    pub async fn new(args: CommonArgs) -> Result<Context, Failure> {
        let sources = Sources::load();
        let account = sources
            .get(args.account.as_deref(), "LWA_BROKER_ACCOUNT")
            .unwrap_or_else(|| "default".into());
        let config_dir = || {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .unwrap_or_else(|| PathBuf::from("."))
                .join("lwa-broker")
        };
        let store_path = args
            .store
            .clone()
            .or_else(|| sources.get(None, "LWA_BROKER_STORE").map(PathBuf::from))
            .unwrap_or_else(|| config_dir().join("tokens.json"));
        let key_path = args
            .key_file
            .clone()
            .or_else(|| sources.get(None, "LWA_BROKER_KEY_FILE").map(PathBuf::from))
            .unwrap_or_else(|| config_dir().join("master.key"));
        for path in [&store_path, &key_path] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Failure::other(format!("cannot create the directory {}: {e}", parent.display()))
                })?;
            }
        }
        let keys = MasterKeys::load(
            sources.get(None, lwa_seal::MASTER_KEYS_ENV).as_deref(),
            sources.get(None, "LWA_BROKER_MASTER_KEY").as_deref(),
            &key_path,
        )
        .map_err(|e| Failure::config(e.to_string()))?;
        let store = Arc::new(EncryptedFileStore::new(store_path, keys.keyring()));
        let base = sources.get(None, "LWA_BROKER_AMAZON_BASE_URL");
        let endpoints = match &base {
            Some(base) => Endpoints::rebased(base),
            None => Endpoints::amazon(),
        };
        let clock: Arc<dyn Clock> = match (&base, sources.flag_bool(false, "LWA_BROKER_FAKE_CLOCK")) {
            (Some(base), true) => Arc::new(
                FakeAmazonClock::once(base)
                    .await
                    .map_err(|e| Failure::temporary(e.to_string()))?,
            ),
            (None, true) => {
                return Err(Failure::config(
                    "LWA_BROKER_FAKE_CLOCK needs LWA_BROKER_AMAZON_BASE_URL (the fake's address)",
                ));
            }
            _ => Arc::new(SystemClock),
        };
        Ok(Context {
            sources,
            account,
            store,
            endpoints,
            clock,
            args,
        })
    }

    /// The stored labels of the account (api, region, …).
    pub fn labels(&self) -> HashMap<String, String> {
        self.store
            .load(&self.account)
            .ok()
            .flatten()
            .map(|t| t.labels.into_iter().collect())
            .unwrap_or_default()
    }

    pub fn api(&self) -> Result<Api, Failure> {
        let value = self
            .sources
            .get(self.args.api.as_deref(), "LWA_BROKER_API")
            .or_else(|| self.labels().get("api").cloned())
            .unwrap_or_else(|| "sp-api".into());
        value
            .parse()
            .map_err(|e: lwa::UnknownApi| Failure::config(e.to_string()))
    }

    pub fn marketplace(&self) -> Result<Option<&'static Marketplace>, Failure> {
        self.sources
            .get(self.args.marketplace.as_deref(), "LWA_BROKER_MARKETPLACE")
            .map(|m| Marketplace::parse(&m).map_err(|e| Failure::config(e.to_string())))
            .transpose()
    }

    pub fn region(&self) -> Result<Region, Failure> {
        if let Some(value) = self.sources.get(self.args.region.as_deref(), "LWA_BROKER_REGION") {
            return Region::parse(&value).map_err(|e| Failure::config(e.to_string()));
        }
        if let Some(marketplace) = self.marketplace()? {
            return Ok(marketplace.region);
        }
        Ok(self
            .labels()
            .get("region")
            .and_then(|r| Region::parse(r).ok())
            .unwrap_or(Region::Na))
    }

    pub fn account_type(&self, flag: Option<&str>) -> Result<AccountType, Failure> {
        match self
            .sources
            .get(flag, "LWA_BROKER_ACCOUNT_TYPE")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => Ok(AccountType::Seller),
            Some(v) if v == "seller" => Ok(AccountType::Seller),
            Some(v) if v == "vendor" => Ok(AccountType::Vendor),
            Some(v) => Err(Failure::config(format!(
                "LWA_BROKER_ACCOUNT_TYPE must be seller or vendor, not {v:?}"
            ))),
        }
    }

    pub fn redirect_uri(&self) -> String {
        self.sources
            .get(None, "AMAZON_OAUTH_REDIRECT_URI")
            .unwrap_or_else(|| DEFAULT_REDIRECT_URI.into())
    }

    pub fn client_id(&self) -> Result<String, Failure> {
        self.sources
            .require(self.args.client_id.as_deref(), "AMAZON_CLIENT_ID", "--client-id")
    }

    pub fn credentials(&self) -> Result<AppCredentials, Failure> {
        let secret = self
            .sources
            .require(None, "AMAZON_CLIENT_SECRET", "it in the environment")?;
        let mut credentials = AppCredentials::new(self.client_id()?, secret);
        if let Some(previous) = self.sources.get(None, "LWA_BROKER_PREVIOUS_CLIENT_SECRET") {
            credentials = credentials.with_previous_secret(previous);
        }
        Ok(credentials)
    }

    /// Refresh once the access token has less than this left.
    pub fn refresh_buffer(&self) -> Result<Duration, Failure> {
        match self.sources.get(None, "LWA_BROKER_REFRESH_BUFFER_SECONDS") {
            None => Ok(lwa::DEFAULT_REFRESH_BUFFER),
            Some(seconds) => seconds.parse().map(Duration::from_secs).map_err(|_| {
                Failure::config("LWA_BROKER_REFRESH_BUFFER_SECONDS must be a whole number of seconds")
            }),
        }
    }

    /// The manager for the selected account.
    pub fn manager(&self) -> Result<TokenManager, Failure> {
        let mut config = TokenManagerConfig::new(self.api()?, self.region()?, self.credentials()?);
        config.account = self.account.clone();
        config.sandbox = self.sources.flag_bool(false, "LWA_BROKER_SP_API_SANDBOX");
        config.refresh_buffer = self.refresh_buffer()?;
        let client = LwaClient::new(self.endpoints.clone());
        TokenManager::builder(config)
            .client(client)
            .clock(self.clock.clone())
            .store(self.store.clone())
            .build()
            .map_err(|e| Failure::other(e.to_string()))
    }
}

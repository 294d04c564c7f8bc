//! The server's commands: `serve`, `tenants`, `keys`, `connections import`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use lwa_server::admin::{NewTenant, create_key, create_tenant, list_keys, revoke_key};
use lwa_server::config::{Overrides, Settings};
use lwa_server::connections::{ImportRecord, import_one};
use lwa_server::{AppState, Application};

use super::Failure;
use super::settings::{CommonArgs, Sources};

/// Settings shared by the server commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML configuration file [env: LWA_BROKER_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL [env: LWA_BROKER_DATABASE_URL] [default: sqlite:lwa-broker.db]
    #[arg(long, global = true)]
    pub database: Option<String>,
}

/// `serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [env: LWA_BROKER_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// The base URL Amazon redirects back to [env: LWA_BROKER_PUBLIC_URL] [default: http://LISTEN]
    #[arg(long)]
    pub public_url: Option<String>,
    /// Comma-separated addresses or CIDR blocks of proxies whose X-Forwarded-For is believed
    /// [env: LWA_BROKER_TRUSTED_PROXIES]
    #[arg(long)]
    pub trusted_proxies: Option<String>,
    /// Run against a built-in fake Amazon with a demo tenant [env: LWA_BROKER_SANDBOX]
    #[arg(long)]
    pub sandbox: bool,
}

/// `tenants …`.
#[derive(clap::Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant; prints its id and its first API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// Where sellers may be sent back to (repeatable), e.g. https://wms.example.com/oauth
        #[arg(long = "redirect-origin", required = true)]
        redirect_origins: Vec<String>,
        /// The SP-API app (by name in the config) this tenant uses
        #[arg(long)]
        sp_app: Option<String>,
        /// The Ads app (by name in the config) this tenant uses
        #[arg(long)]
        ads_app: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a tenant's webhook URL. The first time, prints the new signing secret (shown once).
    SetWebhook {
        #[arg(long)]
        tenant: String,
        /// An http(s) URL that receives the tenant's events
        #[arg(long)]
        url: String,
        /// Also replace the signing secret and print the new one
        #[arg(long)]
        rotate_secret: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `keys …`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key for a tenant (shown once).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        /// full, or proxy-only
        #[arg(long, default_value = "full")]
        scope: String,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke { key_id: String },
    /// Re-seal every sealed value in the database with the newest master key, while servers keep
    /// serving; resumable. Configure the new key first (newest first in LWA_BROKER_MASTER_KEYS or
    /// the key file) and restart the servers, then run this.
    Rotate(super::rotate::RotateArgs),
    /// Count the database's sealed values per master key.
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a new master key with an id and add it, as the newest, to the key file (mode 0600);
    /// with --print, print `ID:BASE64` for LWA_BROKER_MASTER_KEYS instead.
    NewMaster {
        /// The key's id, 1 to 32 letters, digits, '.', '_' or '-' (e.g. 2026-11)
        #[arg(long)]
        id: String,
        /// Print the entry instead of writing the key file
        #[arg(long)]
        print: bool,
    },
}

/// `connections …`.
#[derive(clap::Subcommand, Debug)]
pub enum ConnectionsCommand {
    /// Import existing refresh tokens from a JSON-lines file (`-` for standard input); each is
    /// validated by one refresh.
    Import {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
    },
}

/// `audit`: the trail of tokens handed out, newest first.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only this tenant's events
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this connection's events
    #[arg(long)]
    pub connection: Option<String>,
    /// Only events of this API key id
    #[arg(long)]
    pub key: Option<String>,
    /// access_token, grantless_token or restricted_data_token
    #[arg(long)]
    pub kind: Option<String>,
    /// Events at or after this RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this RFC 3339 time
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many (1 to 1000)
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Events older than this id (the last id of the previous page)
    #[arg(long)]
    pub before: Option<i64>,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

pub(super) fn settings(
    sources: &Sources,
    common: &CommonArgs,
    server: &ServerArgs,
    serve: Option<&ServeArgs>,
) -> Result<Settings, Failure> {
    let overrides = Overrides {
        listen: serve.and_then(|s| s.listen.clone()),
        config: server.config.clone(),
        database_url: server.database.clone(),
        public_url: serve.and_then(|s| s.public_url.clone()),
        trusted_proxies: serve.and_then(|s| s.trusted_proxies.clone()),
        sandbox: serve.is_some_and(|s| s.sandbox),
    };
    let mut settings =
        Settings::resolve(&overrides, &|name| sources.get(None, name)).map_err(|e| Failure::config(e.0))?;
    if let Some(key_file) = &common.key_file {
        settings.key_file = key_file.clone();
    }
    Ok(settings)
}

pub(super) async fn state(common: &CommonArgs, server: &ServerArgs) -> Result<AppState, Failure> {
    let sources = Sources::load();
    let settings = settings(&sources, common, server, None)?;
    let public = settings.public_url.clone().unwrap_or_else(|| {
        url::Url::parse(&format!("http://{}", settings.listen)).expect("a socket address is a URL host")
    });
    lwa_server::open_state(&settings, public)
        .await
        .map_err(|e| Failure::config(e.to_string()))
}

pub(super) fn api_failure(e: lwa_server::error::ApiError) -> Failure {
    if e.status.is_client_error() {
        Failure::config(e.message)
    } else {
        Failure::other(e.message)
    }
}

/// `migrate`: runs the database's migrations (the master key is not needed).
pub async fn migrate(common: &CommonArgs, server: &ServerArgs) -> Result<(), Failure> {
    let sources = Sources::load();
    let settings = settings(&sources, common, server, None)?;
    let backend = lwa_server::state::migrate_store(&settings.database_url)
        .await
        .map_err(|e| Failure::config(e.to_string()))?;
    println!(
        "the {backend} database at {} is current",
        lwa_server::state::redact_url(&settings.database_url)
    );
    Ok(())
}

/// `serve`.
pub async fn serve(common: &CommonArgs, server: &ServerArgs, args: ServeArgs) -> Result<(), Failure> {
    let sources = Sources::load();
    let mut settings = settings(&sources, common, server, Some(&args))?;
    if settings.sandbox {
        if server.database.is_none() && sources.get(None, "LWA_BROKER_DATABASE_URL").is_none() {
            let path = std::env::temp_dir().join(format!("lwa-broker-sandbox-{}.db", std::process::id()));
            settings.database_url = format!("sqlite:{}", path.display());
        }
        if settings.master_key.is_none()
            && common.key_file.is_none()
            && sources.get(None, "LWA_BROKER_KEY_FILE").is_none()
        {
            settings.master_key = Some(lwa_seal::MasterKey::generate().to_base64().to_string());
        }
    }
    let app = Application::build(settings)
        .await
        .map_err(|e| Failure::config(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    if let Some(fake) = app.fake() {
        let welcome = lwa_server::sandbox::prepare(app.state(), &fake.base_url())
            .await
            .map_err(api_failure)?;
        // Printed once to stdout, never through the logger.
        let _ = writeln!(
            out,
            "lwa-broker sandbox\n\
             server: {}\n\
             fake Amazon: {}\n\
             tenant: {}\n\
             api key: {}\n\
             connect a demo seller: {}\n\
             (every Amazon call goes to the fake Amazon; Ctrl-C stops both)",
            welcome.server_url,
            welcome.fake_amazon_url,
            welcome.tenant_id,
            welcome.api_key,
            welcome.connect_link
        );
    } else {
        let _ = writeln!(out, "lwa-broker listening on http://{}", app.local_addr());
    }
    let _ = out.flush();
    drop(out);
    app.run_until_stopped()
        .await
        .map_err(|e| Failure::other(format!("server failed: {e}")))
}

/// `tenants …`.
pub async fn tenants(
    common: &CommonArgs,
    server: &ServerArgs,
    command: TenantsCommand,
) -> Result<(), Failure> {
    let state = state(common, server).await?;
    match command {
        TenantsCommand::Create {
            name,
            redirect_origins,
            sp_app,
            ads_app,
            json,
        } => {
            let (tenant, key) = create_tenant(
                &state,
                NewTenant {
                    name,
                    redirect_origins,
                    sp_app,
                    ads_app,
                    webhook_url: None,
                },
            )
            .await
            .map_err(api_failure)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tenant_id": tenant.id, "name": tenant.name, "api_key": &*key.key, "key_id": key.record.id})
                );
            } else {
                println!(
                    "tenant: {}\napi key: {}\n(the API key is shown only now; store it safely)",
                    tenant.id, &*key.key
                );
            }
        }
        TenantsCommand::List { json } => {
            let tenants = state
                .store
                .tenants()
                .await
                .map_err(|e| Failure::other(e.to_string()))?;
            if json {
                let list: Vec<_> = tenants
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "name": t.name, "redirect_origins": t.redirect_origins, "sp_app": t.sp_app, "ads_app": t.ads_app}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!("{:<26} {:<24} REDIRECT ORIGINS", "ID", "NAME");
                for t in tenants {
                    println!("{:<26} {:<24} {}", t.id, t.name, t.redirect_origins.join(", "));
                }
            }
        }
        TenantsCommand::SetWebhook {
            tenant,
            url,
            rotate_secret,
            json,
        } => {
            let (t, mut secret) = lwa_server::webhooks::routes::set_webhook_url(&state, &tenant, Some(&url))
                .await
                .map_err(api_failure)?;
            if rotate_secret && secret.is_none() {
                secret = Some(
                    lwa_server::webhooks::routes::rotate_signing_secret(&state, &tenant)
                        .await
                        .map_err(api_failure)?,
                );
            }
            let url = t.webhook_url.unwrap_or_default();
            if json {
                let mut out = serde_json::json!({"tenant_id": t.id, "url": url});
                if let Some(secret) = &secret {
                    out["signing_secret"] = serde_json::json!(secret.expose());
                }
                println!("{out}");
            } else {
                println!("tenant: {}\nwebhook url: {url}", t.id);
                match &secret {
                    Some(secret) => println!(
                        "signing secret: {}\n(the signing secret is shown only now; store it safely)",
                        secret.expose()
                    ),
                    None => println!("signing secret: unchanged (use --rotate-secret for a new one)"),
                }
            }
        }
    }
    Ok(())
}

/// `keys …`.
pub async fn keys(common: &CommonArgs, server: &ServerArgs, command: KeysCommand) -> Result<(), Failure> {
    let resolved = settings(&Sources::load(), common, server, None)?;
    // A new master key needs no database.
    if let KeysCommand::NewMaster { id, print } = &command {
        return super::rotate::new_master(&resolved, id, *print);
    }
    let state = state(common, server).await?;
    match command {
        KeysCommand::Create { tenant, name, scope } => {
            let key = create_key(&state, &tenant, name, &scope)
                .await
                .map_err(api_failure)?;
            println!(
                "key id: {}\napi key: {}\n(shown only now)",
                key.record.id, &*key.key
            );
        }
        KeysCommand::List { tenant, json } => {
            let keys = list_keys(&state, &tenant).await.map_err(api_failure)?;
            let time = |ms: Option<i64>| ms.map(lwa_server::time::rfc3339).unwrap_or_else(|| "-".into());
            if json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "scope": k.scope, "created_at": time(Some(k.created_at_ms)), "last_used_at": k.last_used_at_ms.map(lwa_server::time::rfc3339), "revoked_at": k.revoked_at_ms.map(lwa_server::time::rfc3339)}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<18} {:<11} {:<21} {:<21} REVOKED",
                    "KEY ID", "SCOPE", "CREATED", "LAST USED"
                );
                for k in keys {
                    println!(
                        "{:<18} {:<11} {:<21} {:<21} {}",
                        k.id,
                        k.scope,
                        time(Some(k.created_at_ms)),
                        time(k.last_used_at_ms),
                        time(k.revoked_at_ms)
                    );
                }
            }
        }
        KeysCommand::Revoke { key_id } => {
            if revoke_key(&state, &key_id).await.map_err(api_failure)? {
                println!("revoked {key_id}");
            } else {
                return Err(Failure::config(format!("no active key {key_id}")));
            }
        }
        KeysCommand::Rotate(args) => super::rotate::rotate(&resolved, &state, args).await?,
        KeysCommand::Status { json } => super::rotate::status(&resolved, &state, json).await?,
        KeysCommand::NewMaster { .. } => {}
    }
    Ok(())
}

/// `connections import`.
pub async fn connections(
    common: &CommonArgs,
    server: &ServerArgs,
    command: ConnectionsCommand,
) -> Result<(), Failure> {
    let ConnectionsCommand::Import { tenant, file } = command;
    let state = state(common, server).await?;
    let tenant = state
        .store
        .tenant(&tenant)
        .await
        .map_err(|e| Failure::other(e.to_string()))?
        .ok_or_else(|| Failure::config(format!("no tenant {tenant}")))?;
    let lines: Vec<String> = if file.as_os_str() == "-" {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()
    } else {
        std::fs::read_to_string(&file).map(|t| t.lines().map(str::to_owned).collect())
    }
    .map_err(|e| Failure::other(format!("cannot read {}: {e}", file.display())))?;
    let lines: Vec<(usize, String)> = lines
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    let total = lines.len();
    let terminal = std::io::stderr().is_terminal();
    let (mut ok, mut failed) = (0usize, 0usize);
    for (n, (line_no, line)) in lines.into_iter().enumerate() {
        let outcome = match serde_json::from_str::<ImportRecord>(&line) {
            Ok(record) => import_one(&state, &tenant, record).await.map_err(|e| e.message),
            Err(e) => Err(format!("not a connection record ({})", e.classify_message())),
        };
        match outcome {
            Ok(imported) => {
                ok += 1;
                println!(
                    "{}",
                    serde_json::json!({"line": line_no, "connection_id": imported.connection.id, "handle": imported.handle, "created": imported.created})
                );
            }
            Err(message) => {
                failed += 1;
                println!("{}", serde_json::json!({"line": line_no, "error": message}));
            }
        }
        if terminal {
            eprint!("\rimported {}/{total} ({failed} failed)", n + 1);
        }
    }
    if terminal {
        eprintln!();
    }
    eprintln!("{ok} imported, {failed} failed");
    if failed > 0 && ok == 0 {
        Err(Failure::other("nothing was imported"))
    } else {
        Ok(())
    }
}

/// `audit`.
pub async fn audit(common: &CommonArgs, server: &ServerArgs, args: AuditArgs) -> Result<(), Failure> {
    let query = lwa_server::audit::AuditQuery {
        connection_id: args.connection,
        key_id: args.key,
        kind: args.kind,
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
        before: args.before,
    };
    let filter = query.filter(args.tenant).map_err(api_failure)?;
    let state = state(common, server).await?;
    let events = state
        .store
        .audit_events(&filter)
        .await
        .map_err(|e| Failure::other(e.to_string()))?;
    if args.json {
        for e in &events {
            println!("{}", lwa_server::audit::view(e));
        }
    } else {
        println!(
            "{:<8} {:<20} {:<26} {:<16} {:<30} {:<21} {:<4} {:>6} DETAIL",
            "ID", "AT", "TENANT", "KEY", "CONNECTION", "KIND", "VIA", "COUNT"
        );
        for e in &events {
            println!(
                "{:<8} {:<20} {:<26} {:<16} {:<30} {:<21} {:<4} {:>6} {}",
                e.id,
                lwa_server::time::rfc3339(e.at_ms),
                e.tenant_id,
                e.key_id,
                e.connection_id.as_deref().unwrap_or("-"),
                e.kind,
                e.via,
                e.count,
                e.detail.as_deref().unwrap_or("")
            );
        }
        if events.len() == filter.limit as usize
            && let Some(last) = events.last()
        {
            eprintln!("more: --before {}", last.id);
        }
    }
    Ok(())
}

trait ClassifyMessage {
    fn classify_message(&self) -> &'static str;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "a field is wrong or missing",
            _ => "not valid JSON",
        }
    }
}

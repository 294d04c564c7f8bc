//! The `lwa-broker` command line for one developer's own accounts.

mod apps;
mod backup;
mod commands;
mod dotenv;
mod login;
mod rotate;
mod server;
mod settings;

use clap::{Parser, Subcommand};
use lwa::{ErrorClass, TokenError};

use settings::CommonArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure (file system, an API call that failed)
  2  bad usage or configuration (a missing setting is named by its variable)
  3  not authenticated: run `lwa-broker login` or `set-refresh-token`
  4  needs re-authorization: Amazon refused the refresh token; run `lwa-broker login` again
  5  temporary failure (throttled, Amazon unavailable, network): try again later

Settings come from flags, then the environment, then .env in the working directory;
.env.template lists every one.";

/// Login with Amazon tokens for your own SP-API and Ads accounts, sealed on disk.
#[derive(Parser, Debug)]
#[command(name = "lwa-broker", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    server: server::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Authorize an account in the browser and store its tokens.
    Login(login::LoginArgs),
    /// Store a refresh token obtained elsewhere (a self-authorized private app's token from
    /// Seller Central). Reads it from the argument, AMAZON_REFRESH_TOKEN, or standard input.
    SetRefreshToken(commands::SetRefreshTokenArgs),
    /// Print a valid access token and nothing else, for `$(lwa-broker token)`.
    Token,
    /// Refresh the access token now.
    Refresh,
    /// Show the state of stored accounts: state, time left, refresh-token age.
    Status(commands::StatusArgs),
    /// Forget the account's tokens.
    Logout,
    /// Write AMAZON_REFRESH_TOKEN and AMAZON_ACCESS_TOKEN into an env file, keeping its other lines.
    Env(commands::EnvArgs),
    /// Make an authenticated SP-API, Ads or AMC request and print the response.
    Call(commands::CallArgs),
    /// Run the multi-tenant server (onboarding, connections).
    Serve(server::ServeArgs),
    /// Manage the server's tenants.
    #[command(subcommand)]
    Tenants(server::TenantsCommand),
    /// Manage tenants' API keys, and the master keys (`new-master`, `rotate`, `status`).
    #[command(subcommand)]
    Keys(server::KeysCommand),
    /// Manage the server's connections.
    #[command(subcommand)]
    Connections(server::ConnectionsCommand),
    /// Show the audit trail of tokens handed out (newest first).
    Audit(server::AuditArgs),
    /// The server's Amazon apps and their LWA client secrets (rotation).
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Make the operator's admin token for /admin/api/… (shown once; replaces the earlier one).
    AdminToken,
    /// Bring the server's database schema up to this version (SQLite or PostgreSQL; safe while
    /// other replicas start or run).
    Migrate,
    /// Write a backup of the server's database to a new file: a SQLite database, whichever the
    /// backend (SQLite: VACUUM INTO; PostgreSQL: one consistent snapshot). No master key needed.
    Backup(backup::BackupArgs),
    /// Copy a backup into the server's database, which must be empty unless --force.
    Restore(backup::RestoreArgs),
    /// Copy every row of one database into another, empty one (e.g. SQLite to PostgreSQL),
    /// without re-authorizing anyone. Stop the servers first.
    MigrateStore(backup::MigrateStoreArgs),
}

/// A failed command: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    pub fn temporary(message: impl Into<String>) -> Self {
        Self {
            code: 5,
            message: message.into(),
        }
    }
}

impl From<TokenError> for Failure {
    fn from(error: TokenError) -> Self {
        let code = match error.class() {
            None => 3,
            Some(ErrorClass::Reauthorize) => 4,
            Some(ErrorClass::RetryLater) => 5,
            Some(ErrorClass::Configuration) => 2,
            Some(ErrorClass::MalformedResponse) => 1,
        };
        let code = if matches!(error, TokenError::Api { .. } | TokenError::Store(_)) {
            1
        } else {
            code
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

impl From<lwa::StoreError> for Failure {
    fn from(error: lwa::StoreError) -> Self {
        Failure::other(error.to_string())
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    // The server uses every core; one-shot commands need one thread.
    let mut builder = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => return server::serve(&cli.common, &cli.server, args).await,
        Command::Tenants(c) => return server::tenants(&cli.common, &cli.server, c).await,
        Command::Keys(c) => return server::keys(&cli.common, &cli.server, c).await,
        Command::Connections(c) => return server::connections(&cli.common, &cli.server, c).await,
        Command::Audit(args) => return server::audit(&cli.common, &cli.server, args).await,
        Command::Apps(c) => return apps::run(&cli.common, &cli.server, c).await,
        Command::AdminToken => return apps::admin_token(&cli.common, &cli.server).await,
        Command::Migrate => return server::migrate(&cli.common, &cli.server).await,
        Command::Backup(args) => return backup::backup(&cli.common, &cli.server, args).await,
        Command::Restore(args) => return backup::restore(&cli.common, &cli.server, args).await,
        Command::MigrateStore(args) => return backup::migrate_store(args).await,
        _ => {}
    }
    let context = settings::Context::new(cli.common).await?;
    match cli.command {
        Command::Login(args) => login::run(&context, args).await,
        Command::SetRefreshToken(args) => commands::set_refresh_token(&context, args).await,
        Command::Token => commands::token(&context).await,
        Command::Refresh => commands::refresh(&context).await,
        Command::Status(args) => commands::status(&context, args),
        Command::Logout => commands::logout(&context).await,
        Command::Env(args) => commands::env(&context, args).await,
        Command::Call(args) => commands::call(&context, args).await,
        Command::Serve(_)
        | Command::Tenants(_)
        | Command::Keys(_)
        | Command::Connections(_)
        | Command::Audit(_)
        | Command::Apps(_)
        | Command::AdminToken
        | Command::Migrate
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::MigrateStore(_) => {
            unreachable!("handled above")
        }
    }
}

/// Logs go to stderr, filtered by LWA_BROKER_LOG (default `warn`). No secret can reach them:
/// every token and secret is held in a type whose `Debug` prints `[redacted]`.
fn init_logging() {
    let filter = std::env::var("LWA_BROKER_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

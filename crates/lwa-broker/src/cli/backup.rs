//! Whole-database copies: `backup`, `restore` and `migrate-store`, over `lwa_store::copy`.
//!
//! None of them needs the master key: sealed values are copied as they are, and open with the
//! same key on the other side.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lwa_server::state::{Backend, KEY_CHECK, redact_url};
use lwa_store::StoreError;
use lwa_store::copy::{self, CopyError, CopyOptions, CopyProgress, CopyReport, Database, TableCount};

use super::Failure;
use super::server::{ServerArgs, settings};
use super::settings::{CommonArgs, Sources};

/// `backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The backup file to write (must not exist): a SQLite database, whichever the backend
    #[arg(long)]
    pub out: PathBuf,
}

/// `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (written by `lwa-broker backup`)
    #[arg(long)]
    pub from: PathBuf,
    /// Replace what the database holds, tenants and connections included (one transaction)
    #[arg(long)]
    pub force: bool,
}

/// `migrate-store`.
#[derive(clap::Args, Debug)]
pub struct MigrateStoreArgs {
    /// The database to copy from: sqlite:PATH or postgres://USER@HOST/DATABASE
    #[arg(long)]
    pub from: String,
    /// The database to copy into (empty): sqlite:PATH or postgres://USER@HOST/DATABASE
    #[arg(long)]
    pub to: String,
    /// Rows read and written at a time
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
}

/// How often a progress line is written when standard error is not a terminal.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);

/// `backup --out PATH`.
pub async fn backup(common: &CommonArgs, server: &ServerArgs, args: BackupArgs) -> Result<(), Failure> {
    let settings = settings(&Sources::load(), common, server, None)?;
    let url = settings.database_url;
    let source = open_source(&url).await?;
    copy::check_source(&source)
        .await
        .map_err(|e| copy_failure(e, &Hints::source(&url)))?;
    eprintln!(
        "backing up the {} database at {} to {}",
        source.backend(),
        redact_url(&url),
        args.out.display()
    );
    let started = Instant::now();
    let mut view = ProgressView::new();
    let result = copy::backup(&source, &args.out, &mut |at| view.show(at)).await;
    view.finish();
    source.close().await;
    let hints = Hints {
        failed: "no backup file was left behind",
        ..Hints::source(&url)
    };
    let counts = result.map_err(|e| copy_failure(e, &hints))?;
    print_counts(&counts);
    println!(
        "wrote the backup {} ({} rows) in {:.2} s",
        args.out.display(),
        counts.iter().map(|t| t.rows).sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `restore --from PATH [--force]`.
pub async fn restore(common: &CommonArgs, server: &ServerArgs, args: RestoreArgs) -> Result<(), Failure> {
    let settings = settings(&Sources::load(), common, server, None)?;
    let url = settings.database_url;
    Backend::of(&url).map_err(|e| Failure::config(e.to_string()))?;
    let source = Database::open_file(&args.from)
        .await
        .map_err(|e| Failure::config(format!("cannot read the backup: {e}")))?;
    let hints = Hints {
        outdated: format!(
            "the backup {} was made by an older version of lwa-broker: bring a copy of it up to date with \
             `lwa-broker --database sqlite:COPY migrate`, then restore that copy",
            args.from.display()
        ),
        not_empty: "restore with --force to replace what it holds".into(),
        failed: "the database was left as it was (its migrations aside)",
    };
    copy::check_source(&source)
        .await
        .map_err(|e| copy_failure(e, &hints))?;
    let target = open_target(&url).await?;
    eprintln!(
        "restoring {} into the {} database at {}",
        args.from.display(),
        target.backend(),
        redact_url(&url)
    );
    let options = CopyOptions {
        replace: args.force,
        ..CopyOptions::default()
    };
    let report = run_copy(&source, &target, options).await;
    source.close().await;
    let report = report.map_err(|e| copy_failure(e, &hints))?;
    print_report(&report);
    println!(
        "restored {} into {} ({} rows in {:.2} s)",
        args.from.display(),
        redact_url(&url),
        report.rows(),
        report.elapsed.as_secs_f64()
    );
    print_key_note(&target).await;
    target.close().await;
    Ok(())
}

/// `migrate-store --from URL --to URL`.
pub async fn migrate_store(args: MigrateStoreArgs) -> Result<(), Failure> {
    for url in [&args.from, &args.to] {
        Backend::of(url).map_err(|e| Failure::config(e.to_string()))?;
    }
    if args.from.trim() == args.to.trim() {
        return Err(Failure::config("--from and --to name the same database"));
    }
    let source = open_source(&args.from).await?;
    let hints = Hints::source(&args.from);
    copy::check_source(&source)
        .await
        .map_err(|e| copy_failure(e, &hints))?;
    let target = open_target(&args.to).await?;
    eprintln!(
        "copying the {} database at {} into the {} database at {}",
        source.backend(),
        redact_url(&args.from),
        target.backend(),
        redact_url(&args.to)
    );
    let options = CopyOptions {
        batch_size: args.batch_size,
        replace: false,
    };
    let report = run_copy(&source, &target, options).await;
    source.close().await;
    let report = report.map_err(|e| copy_failure(e, &hints))?;
    print_report(&report);
    println!(
        "copied {} rows from {} to {} in {:.2} s; nobody needs to authorize again",
        report.rows(),
        redact_url(&args.from),
        redact_url(&args.to),
        report.elapsed.as_secs_f64()
    );
    print_key_note(&target).await;
    target.close().await;
    Ok(())
}

/// What to tell the user when the source is too old or the target not empty.
struct Hints {
    outdated: String,
    not_empty: String,
    /// What a failure left behind.
    failed: &'static str,
}

impl Hints {
    fn source(url: &str) -> Hints {
        Hints {
            outdated: format!(
                "bring it up to date first: `lwa-broker --database {} migrate`",
                redact_url(url)
            ),
            not_empty: "copy into an empty database".into(),
            failed: "the target was left as it was (its migrations aside)",
        }
    }
}

async fn open_source(url: &str) -> Result<Database, Failure> {
    Backend::of(url).map_err(|e| Failure::config(e.to_string()))?;
    Database::open_existing(url)
        .await
        .map_err(|e| Failure::config(format!("cannot open the database at {}: {e}", redact_url(url))))
}

async fn open_target(url: &str) -> Result<Database, Failure> {
    Database::open(url)
        .await
        .map_err(|e| Failure::config(format!("cannot open the database at {}: {e}", redact_url(url))))
}

async fn run_copy(
    source: &Database,
    target: &Database,
    options: CopyOptions,
) -> Result<CopyReport, CopyError> {
    let mut view = ProgressView::new();
    let report = copy::copy(source, target, options, &mut |at| view.show(at)).await;
    view.finish();
    report
}

fn copy_failure(error: CopyError, hints: &Hints) -> Failure {
    match error {
        CopyError::TargetNotEmpty { .. } => Failure::config(format!("{error}: {}", hints.not_empty)),
        CopyError::SourceOutdated => Failure::config(format!("{error}: {}", hints.outdated)),
        CopyError::SourceNewer(_) => Failure::config(error.to_string()),
        CopyError::Store(StoreError::BadUrl(message)) => Failure::config(message),
        CopyError::Store(StoreError::Io(message)) => Failure::other(message),
        CopyError::Schema(_) | CopyError::Store(_) => Failure::other(format!("{error}; {}", hints.failed)),
    }
}

fn print_counts(counts: &[TableCount]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<20} {:>10}", "TABLE", "ROWS");
    for t in counts {
        let _ = writeln!(out, "{:<20} {:>10}", t.table, t.rows);
    }
}

fn print_report(report: &CopyReport) {
    if !report.replaced.is_empty() {
        let replaced: Vec<String> = report
            .replaced
            .iter()
            .map(|t| format!("{} ({} rows)", t.table, t.rows))
            .collect();
        eprintln!("replaced what the target held: {}", replaced.join(", "));
    }
    print_counts(&report.tables);
}

/// Names the master key the copied values are sealed with (its fingerprint, never the key).
async fn print_key_note(target: &Database) {
    let Ok(Some(check)) = target.store().meta(KEY_CHECK).await else {
        return;
    };
    if let Some(fingerprint) = check
        .strip_prefix("lwa1.")
        .and_then(|rest| rest.split('.').next())
    {
        println!(
            "the values are sealed with the master key of fingerprint {fingerprint}: start the servers on \
             this database with that key"
        );
    }
}

/// A bar on a terminal; otherwise a line per table and one every few seconds.
struct ProgressView {
    terminal: bool,
    last_line: Instant,
}

impl ProgressView {
    fn new() -> Self {
        ProgressView {
            terminal: std::io::stderr().is_terminal(),
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, at: &CopyProgress) {
        let share = if at.total == 0 {
            1.0
        } else {
            (at.rows as f64 / at.total as f64).min(1.0)
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = (share * WIDTH as f64).round() as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3.0}% {}/{} rows ({} {}/{})\x1b[K",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                share * 100.0,
                at.rows,
                at.total,
                at.table,
                at.table_rows,
                at.table_total
            );
            let _ = err.flush();
        } else if at.table_rows == at.table_total {
            self.last_line = Instant::now();
            let _ = writeln!(
                err,
                "copied {}: {} rows ({}/{} rows, {:.0}%)",
                at.table,
                at.table_rows,
                at.rows,
                at.total,
                share * 100.0
            );
        } else if self.last_line.elapsed() >= PROGRESS_LINE_EVERY {
            self.last_line = Instant::now();
            let _ = writeln!(
                err,
                "progress: {} {}/{} ({}/{} rows, {:.0}%)",
                at.table,
                at.table_rows,
                at.table_total,
                at.rows,
                at.total,
                share * 100.0
            );
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            redact_url("postgres://broker:hunter2@db.internal/broker?password=hunter2&options=-c"),
            "postgres://***@db.internal/broker?…"
        );
        assert_eq!(
            redact_url("sqlite:/var/lib/broker.db"),
            "sqlite:/var/lib/broker.db"
        );
    }
}

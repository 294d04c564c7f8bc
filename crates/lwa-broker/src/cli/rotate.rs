//! The master-key commands: `keys new-master`, `keys rotate`, `keys status`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use lwa_seal::{KeyFingerprint, MasterKey, MasterKeys};
use lwa_server::AppState;
use lwa_server::config::Settings;
use lwa_server::rotation::{self, KeyUsage, Progress, RotateOptions, RotationReport};

use super::Failure;

/// `keys rotate`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// Rows per transaction
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// At most this many rows a second (default: as fast as it goes)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rows_per_second: Option<u32>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// How often progress lines are written when standard error is not a terminal.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);

/// `keys new-master`.
pub fn new_master(settings: &Settings, id: &str, print: bool) -> Result<(), Failure> {
    let key = MasterKey::generate();
    if print {
        let entry = zeroize::Zeroizing::new(format!("{id}:{}", &*key.to_base64()));
        if !lwa_seal::MasterKeys::parse_list(&entry).is_ok_and(|keys| keys.newest().id() == Some(id)) {
            return Err(Failure::config(format!(
                "the key id {id:?} must be 1 to 32 letters, digits, '.', '_' or '-'"
            )));
        }
        // Printed once to stdout, never through the logger.
        println!("{}", &*entry);
        eprintln!(
            "put this entry first in {} (newest first), keep the old keys after it, restart the \
             servers, then run `lwa-broker keys rotate`",
            lwa_seal::MASTER_KEYS_ENV
        );
        return Ok(());
    }
    if settings.master_keys.is_some() || settings.master_key.is_some() {
        return Err(Failure::config(format!(
            "the master keys come from {} here, not from the key file: run `lwa-broker keys new-master \
             --id {id} --print` and put the printed entry first in {}",
            if settings.master_keys.is_some() {
                lwa_seal::MASTER_KEYS_ENV
            } else {
                lwa_seal::MASTER_KEY_ENV
            },
            lwa_seal::MASTER_KEYS_ENV
        )));
    }
    MasterKeys::add_to_file(&settings.key_file, id, &key).map_err(|e| Failure::config(e.to_string()))?;
    println!(
        "added master key {id} ({}) to {} as the newest key\n\
         restart the servers (they seal with it from then on), then run `lwa-broker keys rotate`",
        key.fingerprint(),
        settings.key_file.display()
    );
    Ok(())
}

fn master_keys(settings: &Settings) -> Result<MasterKeys, Failure> {
    lwa_server::state::load_master_keys(settings).map_err(|e| Failure::config(e.to_string()))
}

fn label(keys: &MasterKeys, fingerprint: Option<KeyFingerprint>) -> String {
    match fingerprint {
        None => "(not sealed)".to_owned(),
        Some(fp) => keys
            .by_fingerprint(fp)
            .map(|k| k.label())
            .unwrap_or_else(|| format!("{fp} (not configured)")),
    }
}

/// `keys status`.
pub async fn status(settings: &Settings, state: &AppState, json: bool) -> Result<(), Failure> {
    let keys = master_keys(settings)?;
    let usage = rotation::key_usage(state.store.as_ref())
        .await
        .map_err(|e| Failure::other(e.to_string()))?;
    let newest = keys.newest().key().fingerprint();
    if json {
        println!("{}", usage_json(&keys, &usage, newest));
        return Ok(());
    }
    println!("{:<40} {:>10}  WHERE", "KEY", "VALUES");
    for key in keys.iter() {
        let fp = key.key().fingerprint();
        let found = usage.iter().find(|u| u.fingerprint == Some(fp));
        let newest_mark = if fp == newest { " (newest)" } else { "" };
        println!(
            "{:<40} {:>10}  {}",
            format!("{}{newest_mark}", key.label()),
            found.map_or(0, KeyUsage::total),
            found.map(where_text).unwrap_or_default()
        );
    }
    for other in usage
        .iter()
        .filter(|u| u.fingerprint.is_none_or(|fp| keys.by_fingerprint(fp).is_none()))
    {
        println!(
            "{:<40} {:>10}  {}",
            label(&keys, other.fingerprint),
            other.total(),
            where_text(other)
        );
    }
    Ok(())
}

fn where_text(usage: &KeyUsage) -> String {
    usage
        .columns
        .iter()
        .map(|((table, column), n)| format!("{table}.{column}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage_json(keys: &MasterKeys, usage: &[KeyUsage], newest: KeyFingerprint) -> serde_json::Value {
    serde_json::Value::Array(
        usage
            .iter()
            .map(|u| {
                serde_json::json!({
                    "fingerprint": u.fingerprint.map(|f| f.to_string()),
                    "id": u.fingerprint.and_then(|f| keys.by_fingerprint(f)).and_then(|k| k.id()),
                    "configured": u.fingerprint.is_some_and(|f| keys.by_fingerprint(f).is_some()),
                    "newest": u.fingerprint == Some(newest),
                    "values": u.total(),
                    "columns": u.columns.iter().map(|((t, c), n)| (format!("{t}.{c}"), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect(),
    )
}

/// Draws a bar on a terminal, else writes a line every few seconds.
struct ProgressView {
    terminal: bool,
    started: Instant,
    last_line: Instant,
}

impl ProgressView {
    fn show(&mut self, at: Progress) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = at.values_done as f64 / elapsed;
        let share = if at.values_total == 0 {
            1.0
        } else {
            (at.values_done as f64 / at.values_total as f64).min(1.0)
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = (share * WIDTH as f64).round() as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3.0}% {}/{} values, {} re-sealed, {:.0}/s ({})   ",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                share * 100.0,
                at.values_done,
                at.values_total,
                at.resealed,
                rate,
                at.table
            );
            let _ = err.flush();
        } else if self.last_line.elapsed() >= PROGRESS_LINE_EVERY {
            self.last_line = Instant::now();
            let _ = writeln!(
                err,
                "progress: {}/{} values ({:.0}%), {} re-sealed, {:.0} values/s, table {}",
                at.values_done,
                at.values_total,
                share * 100.0,
                at.resealed,
                rate,
                at.table
            );
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// `keys rotate`.
pub async fn rotate(settings: &Settings, state: &AppState, args: RotateArgs) -> Result<(), Failure> {
    let keys = master_keys(settings)?;
    let keyring = state.sealer.keyring();
    let options = RotateOptions {
        batch_size: args.batch_size,
        max_rows_per_second: args.max_rows_per_second,
    };
    eprintln!(
        "re-sealing every sealed value with master key {}",
        keys.newest().label()
    );
    let mut view = ProgressView {
        terminal: std::io::stderr().is_terminal(),
        started: Instant::now(),
        last_line: Instant::now(),
    };
    let report = rotation::rotate(state.store.as_ref(), keyring, options, &mut |at| view.show(at))
        .await
        .map_err(|e| Failure::other(format!("the rotation stopped (run it again to resume): {e}")))?;
    view.finish();
    let configured: Vec<KeyFingerprint> = keys.iter().map(|k| k.key().fingerprint()).collect();
    let unused = report.unused_keys(&configured);
    if args.json {
        print_json(&keys, &report, &unused);
    } else {
        print_report(&keys, &report, &unused);
    }
    let failures: usize = report.tables.iter().map(|t| t.failures.len()).sum();
    let gave_up: u64 = report.tables.iter().map(|t| t.gave_up).sum();
    match (report.still_on_other_keys(), failures, gave_up) {
        (0, 0, 0) => Ok(()),
        (remaining, _, _) => Err(Failure::other(format!(
            "{remaining} values are still on other keys ({failures} could not be opened, {gave_up} rows kept \
             changing); see above, then run `lwa-broker keys rotate` again"
        ))),
    }
}

fn print_report(keys: &MasterKeys, report: &RotationReport, unused: &[KeyFingerprint]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>11} {:>12} {:>22} {:>8}",
        "TABLE", "ROWS", "RE-SEALED", "ALREADY NEW", "CHANGED, RETRIED", "FAILED"
    );
    for t in &report.tables {
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>11} {:>12} {:>22} {:>8}",
            t.table,
            t.rows,
            t.resealed,
            t.already_new,
            t.changed_concurrently,
            t.failures.len()
        );
    }
    for failure in report.tables.iter().flat_map(|t| &t.failures) {
        let _ = writeln!(
            out,
            "cannot re-seal {}.{} of row {}: {}",
            failure.table, failure.column, failure.id, failure.reason
        );
    }
    let _ = writeln!(
        out,
        "{} rows in {:.2} s ({:.0} rows/s); newest key {}",
        report.rows(),
        report.elapsed.as_secs_f64(),
        report.rows_per_second(),
        label(keys, Some(report.newest))
    );
    let _ = writeln!(
        out,
        "values still on other keys: {}",
        report.still_on_other_keys()
    );
    for usage in report
        .usage
        .iter()
        .filter(|u| u.fingerprint != Some(report.newest))
    {
        let _ = writeln!(
            out,
            "  {}: {} ({})",
            label(keys, usage.fingerprint),
            usage.total(),
            where_text(usage)
        );
    }
    for fp in unused {
        let _ = writeln!(
            out,
            "key {} is no longer used and can be removed from the configuration",
            label(keys, Some(*fp))
        );
    }
}

fn print_json(keys: &MasterKeys, report: &RotationReport, unused: &[KeyFingerprint]) {
    let tables: Vec<_> = report
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "table": t.table,
                "rows": t.rows,
                "resealed": t.resealed,
                "already_new": t.already_new,
                "changed_concurrently": t.changed_concurrently,
                "gave_up": t.gave_up,
                "failures": t.failures.iter().map(|f| serde_json::json!({"id": f.id, "column": f.column, "reason": f.reason})).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "newest": report.newest.to_string(),
            "tables": tables,
            "rows": report.rows(),
            "elapsed_seconds": report.elapsed.as_secs_f64(),
            "rows_per_second": report.rows_per_second(),
            "still_on_other_keys": report.still_on_other_keys(),
            "usage": usage_json(keys, &report.usage, report.newest),
            "removable_keys": unused.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        })
    );
}

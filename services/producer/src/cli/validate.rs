//! `pretext validate` (and the lean `pretext-validate`): row-by-row checks
//! with reasons, quarantine, and a report per file.

use std::path::PathBuf;
use std::process::ExitCode;

use pretext_core::report::{FileReport, validate_paths};
use serde::Serialize;

use super::LimitArgs;

/// Arguments of `pretext validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories (searched for `*.parquet`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write rejected rows, with a `reason` column, to Parquet files here.
    #[arg(long)]
    pub quarantine: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Threads decoding row groups (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    files: &'a [FileReport],
    rows: u64,
    valid: u64,
    rejected: u64,
    valid_tokens: u64,
    unreadable: usize,
}

/// Validates, prints, and exits non-zero only when a file is unreadable.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let reports = validate_paths(
        &args.paths,
        args.limits.config(),
        args.quarantine.as_deref(),
        threads,
    )?;
    let unreadable: Vec<&FileReport> = reports.iter().filter(|r| !r.readable).collect();
    if args.json {
        let s = Summary {
            files: &reports,
            rows: reports.iter().map(|r| r.rows).sum(),
            valid: reports.iter().map(|r| r.valid).sum(),
            rejected: reports.iter().map(FileReport::rejected_total).sum(),
            valid_tokens: reports.iter().map(|r| r.valid_tokens).sum(),
            unreadable: unreadable.len(),
        };
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        for r in reports.iter().filter(|r| r.readable) {
            let reasons: Vec<String> = r
                .rejected
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            };
            println!(
                "{}: {} rows, {} valid, {} rejected{why}",
                r.path,
                r.rows,
                r.valid,
                r.rejected_total()
            );
        }
    }
    for r in &unreadable {
        eprintln!("error: {}", r.error.as_deref().unwrap_or("unreadable"));
    }
    Ok(if unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

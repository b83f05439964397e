//! `pretext audit`: did every published batch reach the model exactly once?

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, ensure};

/// Arguments of `pretext audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory (`manifests/` from producers, `checkpoints/` from the trainer).
    pub run_dir: PathBuf,
    /// Print JSON: `published`, `applied`, `missing`, `applied_twice`,
    /// `dead` (`[{"id", "reason"}]`), and for an elastic run `membership`
    /// (one entry per generation).
    #[arg(long)]
    pub json: bool,
}

/// Joins the producers' manifests with the checkpoints' applied ids.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    ensure!(
        args.run_dir.is_dir(),
        "run directory {} does not exist",
        args.run_dir.display()
    );
    let report = pretext_trainer::audit(&args.run_dir)
        .with_context(|| format!("auditing {}", args.run_dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("published      {}", report.published);
        println!("applied        {}", report.applied);
        println!("missing        {}", report.missing);
        println!("applied_twice  {}", report.applied_twice);
        println!("dead           {}", report.dead.len());
        for d in &report.dead {
            println!("  {}  {}", d.id, d.reason);
        }
        if !report.membership.is_empty() {
            println!("membership     {} generations", report.membership.len());
            for g in &report.membership {
                println!("  {}", pretext_trainer::membership::describe(g));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `pretext export RUN_DIR --out DIR`: the newest checkpoint of a run as
//! `model.safetensors` + `config.json` + `pretext_model.py`
//! ([`pretext_model::export`]).

use std::path::PathBuf;
use std::process::ExitCode;

use pretext_model::export::export;

/// Arguments of `pretext export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory (its newest checkpoint), a `checkpoints/` directory,
    /// or one checkpoint `step-NNNNNN/`; pretraining or fine-tuning.
    pub run_dir: PathBuf,
    /// Directory to write `model.safetensors`, `config.json` and
    /// `pretext_model.py` into (created; existing files are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

/// Exports the newest checkpoint under `args.run_dir`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = export(&args.run_dir, &args.out)?;
    println!(
        "exported {:?} model (step {}, {} parameters) from {} to {}",
        config.kind,
        config.step,
        config.parameters,
        config.source,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

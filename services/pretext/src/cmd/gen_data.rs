//! `pretext gen-data`: the synthetic dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pretext_datasets::synth::{SynthConfig, generate};

/// Arguments of `pretext gen-data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of sequences.
    #[arg(long, default_value_t = 2_000)]
    pub sequences: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 4)]
    pub classes: usize,
    /// Fraction of train rows that keep their label.
    #[arg(long, default_value_t = 0.1)]
    pub labeled_fraction: f64,
    /// Shortest sequence.
    #[arg(long, default_value_t = 512)]
    pub min_len: usize,
    /// Longest sequence (lengths are log-uniform between the two).
    #[arg(long, default_value_t = 30_720)]
    pub max_len: usize,
    /// Seed: the same flags give the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows per Parquet file.
    #[arg(long, default_value_t = 1_024)]
    pub rows_per_file: usize,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 64)]
    pub row_group_rows: usize,
    /// Expected fraction of steps inside class motifs (difficulty).
    #[arg(long, default_value_t = 0.3)]
    pub motif_density: f64,
    /// Probability that a motif step is replaced at random (difficulty).
    #[arg(long, default_value_t = 0.1)]
    pub motif_noise: f64,
}

impl Args {
    /// The generator config these flags give.
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            sequences: self.sequences,
            classes: self.classes,
            labeled_fraction: self.labeled_fraction,
            min_len: self.min_len,
            max_len: self.max_len,
            seed: self.seed,
            rows_per_file: self.rows_per_file,
            row_group_rows: self.row_group_rows,
            motif_density: self.motif_density,
            motif_noise: self.motif_noise,
            ..SynthConfig::default()
        }
    }
}

/// Writes the dataset and prints a summary line.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.config();
    let summary = generate(&cfg, &args.out)
        .with_context(|| format!("gen-data into {}", args.out.display()))?;
    println!(
        "wrote {} rows, {} tokens in {} files to {} (train {}, of which labeled {}; valid {}; test {})",
        summary.rows,
        summary.tokens,
        summary.files.len(),
        args.out.display(),
        summary.per_split[0],
        summary.labeled_train,
        summary.per_split[1],
        summary.per_split[2],
    );
    Ok(ExitCode::SUCCESS)
}

//! `pretext import-genomes`: the real dataset (bacterial genomes by species).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pretext_core::split::Split;
use pretext_datasets::genomes::{GenomesConfig, import};

/// Arguments of `pretext import-genomes`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of species directories holding `references/*.fasta[.gz]`
    /// (e.g. what `ops/get-genomes.sh` prints), or a root to search below
    /// for such an `examples` directory.
    #[arg(long)]
    pub source: PathBuf,
    /// Output directory (created); also gets `summary.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Shortest window.
    #[arg(long, default_value_t = 512)]
    pub min_len: usize,
    /// Longest window (lengths are log-uniform between the two).
    #[arg(long, default_value_t = 30_720)]
    pub max_len: usize,
    /// Seed: the same flags and input give the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep at most this many windows per species (a seeded subsample that
    /// keeps the split proportions).
    #[arg(long)]
    pub max_windows_per_species: Option<usize>,
}

impl Args {
    /// The importer config these flags give.
    pub fn config(&self) -> GenomesConfig {
        GenomesConfig {
            min_len: self.min_len,
            max_len: self.max_len,
            seed: self.seed,
            max_windows_per_species: self.max_windows_per_species,
            ..GenomesConfig::default()
        }
    }
}

/// Imports the genomes, prints the summary and writes `summary.json`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.config();
    let summary = import(&cfg, &args.source, &args.out).with_context(|| {
        format!(
            "import-genomes from {} into {}",
            args.source.display(),
            args.out.display()
        )
    })?;
    let json = args.out.join("summary.json");
    std::fs::write(&json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "wrote {} rows, {} tokens in {} files to {} from {} (train {}; valid {}; test {})",
        summary.rows.total(),
        summary.tokens.total(),
        summary.files.len(),
        args.out.display(),
        summary.source.display(),
        summary.rows.train,
        summary.rows.valid,
        summary.rows.test,
    );
    for s in &summary.species {
        let splits: Vec<String> = Split::ALL
            .iter()
            .map(|&sp| format!("{sp} {}", s.rows.get(sp)))
            .collect();
        println!(
            "  {} (label {}, reference {}, {} strains): {}; {} tokens; test k-mers in train {:.2}%",
            s.name,
            s.label,
            s.reference,
            s.strains.len(),
            splits.join(", "),
            s.tokens.total(),
            100.0 * s.leakage.fraction,
        );
    }
    println!(
        "test windows' distinct {}-mers also in the same species' train windows: {:.2}% ({} of {}); summary in {}",
        summary.leakage.k,
        100.0 * summary.leakage.fraction,
        summary.leakage.shared_with_train,
        summary.leakage.test_kmers,
        json.display(),
    );
    Ok(ExitCode::SUCCESS)
}

//! `pretext finetune`: one fine-tuning run (or the supervised baseline)
//! from Parquet, reported in `RUN_DIR/metrics.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use pretext_core::bucket::BucketConfig;
use pretext_finetune::{FinetuneConfig, FinetuneReport, Pretrained};
use pretext_model::ModelConfig;

use super::LimitArgs;

/// Arguments of `pretext finetune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories (labeled rows of `train` are drawn from,
    /// `valid` selects, `test` is reported).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// A pretraining run directory (its newest checkpoint's encoder and
    /// architecture are used, causal or not), or `none` for the
    /// supervised-from-scratch baseline.
    #[arg(long)]
    pub pretrained: String,
    /// Fraction of the labeled train rows to train on (stratified, at
    /// least one row per class), in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub label_fraction: f64,
    /// Output: `metrics.json` and the fine-tuned checkpoint.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Linear probe: keep the encoder fixed, train only the head.
    #[arg(long)]
    pub freeze_encoder: bool,
    /// Passes over the labeled subset.
    #[arg(long, default_value_t = FinetuneConfig::default().epochs)]
    pub epochs: u32,
    /// Least optimiser steps, whatever the subset's size.
    #[arg(long, default_value_t = FinetuneConfig::default().min_steps)]
    pub min_steps: u64,
    /// Evaluations on `valid` over the run (the best one's weights are kept).
    #[arg(long, default_value_t = FinetuneConfig::default().evals)]
    pub evals: u32,
    /// Seed of the subset, the head and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = FinetuneConfig::default().optimizer.lr)]
    pub lr: f64,
    /// Token budget per batch (rows × bucket length).
    #[arg(long, default_value_t = FinetuneConfig::default().buckets.max_tokens)]
    pub max_tokens: usize,
    /// Train on random crops of at most this many steps (evaluation sees
    /// whole sequences).
    #[arg(long)]
    pub train_crop: Option<usize>,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Leave out the batch normalisation of the pooled features before the
    /// head (for comparison; on by default).
    #[arg(long)]
    pub no_feature_norm: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl Args {
    /// The fine-tune config these arguments give.
    pub fn config(&self) -> FinetuneConfig {
        let d = FinetuneConfig::default();
        let mut optimizer = d.optimizer;
        optimizer.lr = self.lr;
        FinetuneConfig {
            data: self.data.clone(),
            pretrained: Pretrained::parse(&self.pretrained),
            label_fraction: self.label_fraction,
            run_dir: self.run_dir.clone(),
            freeze_encoder: self.freeze_encoder,
            epochs: self.epochs,
            min_steps: self.min_steps,
            evals: self.evals,
            seed: self.seed,
            model: ModelConfig {
                width: self.model.width(),
                depth: self.model.depth,
                ..ModelConfig::default()
            },
            optimizer,
            buckets: BucketConfig {
                max_tokens: self.max_tokens,
                ..d.buckets.clone()
            },
            train_crop: self.train_crop,
            validation: self.limits.config(),
            threads: self.model.threads,
            feature_norm: !self.no_feature_norm,
            ..d
        }
    }
}

/// Runs `pretext finetune`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = pretext_finetune::run(args.config())?;
    print_report(&report, &args.run_dir);
    Ok(ExitCode::SUCCESS)
}

/// The human summary of a report.
pub fn print_report(r: &FinetuneReport, run_dir: &std::path::Path) {
    println!(
        "fine-tuned from {} on {} of {} labeled train rows ({} steps, best valid accuracy {:.1}% at step {}) in {:.0} s",
        r.pretrained,
        r.train_rows,
        r.labeled_train_rows,
        r.steps,
        100.0 * r.best_valid_accuracy,
        r.best_step,
        r.seconds
    );
    println!(
        "test ({} rows): accuracy {:.1}%, macro-F1 {:.3}",
        r.test.rows,
        100.0 * r.test.accuracy,
        r.test.macro_f1
    );
    println!(
        "confusion matrix (rows: true class, columns: predicted; classes {:?}):",
        r.classes
    );
    for row in &r.test.confusion {
        println!(
            "  {}",
            row.iter().map(|n| format!("{n:5}")).collect::<String>()
        );
    }
    println!(
        "report: {}",
        run_dir.join(pretext_finetune::METRICS_FILE).display()
    );
}

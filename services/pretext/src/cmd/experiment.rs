//! `pretext experiment`: the grid {none, masked, next} × protocols × label
//! fractions × seeds, beside the classical baselines on the same subsets,
//! with equal fine-tuning budgets; writes `results.json`, `summary.json`
//! (paired differences with `none` and their intervals), `report.md` and
//! PNG plots.
//!
//! The grid itself, its statistics, report and plots are the
//! `pretext-experiment` library; this is its command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pretext_core::task::Task;
use pretext_experiment::record::{self, Protocol, parse_fraction};
use pretext_experiment::{
    Budget, Grid, long_runs, markdown_table, print_targets, run_grid, write_outputs,
};
use pretext_pipeline::PretrainSpec;

use super::LimitArgs;

/// Arguments of `pretext experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories (all of them are read, for pretraining
    /// and for the labeled rows).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Output directory: report.md, results.json, summary.json, plots, runs/.
    #[arg(long, default_value = "out/experiment")]
    pub out: PathBuf,
    /// A grid that runs in minutes (aim: under 30 on 2 cores for about 2M
    /// tokens): unless given, label fractions 1/class, 20% and 100%, 3
    /// seeds, pretraining on all train rows only, width 32, at most 500
    /// fine-tuning steps, crops of 1,024; always 1 pretraining epoch,
    /// fine-tuning for 8 epochs and at least 100 steps, 3 evaluations on
    /// valid.
    #[arg(long)]
    pub quick: bool,
    /// Fractions of the labeled train rows (comma-separated; `1/class` is
    /// one row per class).
    /// Default 1/class,0.05,0.2,1 (1/class,0.2,1 with `--quick`).
    #[arg(long, value_delimiter = ',', value_parser = parse_fraction)]
    pub label_fractions: Option<Vec<f64>>,
    /// Fractions of the train rows pretraining sees. A fraction f under 1
    /// pretrains for ceil(epochs / f) epochs, so every point of the curve
    /// has about the same number of steps (the data, not the compute,
    /// varies); 1 is the run at `--pretrain-epochs`. Default 0.1,0.3,1
    /// (1 with `--quick`).
    #[arg(long, value_delimiter = ',', value_parser = parse_fraction)]
    pub pretrain_fractions: Option<Vec<f64>>,
    /// How pretrained encoders are used: `finetune` (every weight trains),
    /// `probe` (frozen encoder, standardised features, linear head), or
    /// both. The `none` baseline is always fine-tuned (and probed, as the
    /// control of probes).
    #[arg(long, value_delimiter = ',', default_value = "probe,finetune")]
    pub protocols: Vec<Protocol>,
    /// Seeds (each re-draws pretraining, subset, head and batch order);
    /// default 5 (3 with `--quick`).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 2)]
    pub pretrain_epochs: u32,
    /// Fine-tuning passes over the labeled subset.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Least fine-tuning steps per run (the budget is the same for every method).
    #[arg(long, default_value_t = 100)]
    pub min_steps: u64,
    /// Most fine-tuning steps per run (default: no cap; 500 with `--quick`).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Evaluations on `valid` per fine-tuning run (the best is kept).
    #[arg(long, default_value_t = 6)]
    pub evals: u32,
    /// Fine-tuning learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Fine-tune on random crops of at most this many steps (evaluation
    /// sees whole sequences; the length feature is the whole row's).
    #[arg(long)]
    pub train_crop: Option<usize>,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Keep a pretraining run already in `OUT/runs` when it finished (a
    /// checkpoint, every published batch applied once) and was made with
    /// the same settings (data files' hashes, task, width, depth, epochs,
    /// targets, seed); refuse when the settings differ.
    #[arg(long)]
    pub reuse_pretrained: bool,
    /// Labeled rows of the same task with longer sequences: the masked
    /// encoder pretrained on `--data` is probed on them at the smallest
    /// label fraction, against a random encoder, and scored by length band.
    #[arg(long)]
    pub long_data: Option<PathBuf>,
    #[command(flatten)]
    pub targets: pretext_producer::cli::TargetArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Runs `pretext experiment`.
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let (label_fractions, pretrain_fractions, seeds) = axes(&args)?;
    if args.quick {
        args.pretrain_epochs = 1;
        // Measured on bacteria (none, 100%): 4 epochs 93.4-97.0% over 3
        // seeds, still learning at the end; 8 epochs 94.9-97.5%.
        args.epochs = 8;
        args.min_steps = 100;
        args.max_steps = args.max_steps.or(Some(500));
        args.evals = 3;
        args.train_crop = args.train_crop.or(Some(1024));
        args.model.width = args.model.width.or(Some(32));
    }
    let width = args.model.width();
    let vcfg = args.limits.config();
    let (mask, run_stats) = args.targets.resolve(&args.data, vcfg)?;
    print_targets(&mask, run_stats.as_ref());
    let grid = Grid {
        data: args.data.clone(),
        out: args.out.clone(),
        label_fractions,
        pretrain_fractions,
        protocols: args.protocols.clone(),
        seeds,
        spec: PretrainSpec {
            broker: "memory".into(),
            epochs: args.pretrain_epochs,
            width,
            depth: args.model.depth,
            threads: args.model.threads(),
            seed: 0,
            mask,
        },
        ranks: 1,
        budget: Budget {
            epochs: args.epochs,
            min_steps: args.min_steps,
            max_steps: args.max_steps,
            evals: args.evals,
            lr: args.lr,
            train_crop: args.train_crop,
            width,
            depth: args.model.depth,
            threads: args.model.threads(),
            validation: vcfg,
        },
        run_stats,
        reuse_pretrained: args.reuse_pretrained,
        ns: "exp".into(),
    };
    let outcome = run_grid(&grid)?;
    let long = match &args.long_data {
        Some(path) => {
            let masked = outcome
                .run_dirs
                .iter()
                .find(|(t, pf, s, _)| *t == Task::Masked && *pf >= 1.0 && *s == 0)
                .map(|(_, _, _, d)| d.clone())
                .context("--long-data needs masked pretraining on all train rows")?;
            Some(long_runs(&grid, path, &masked)?)
        }
        None => None,
    };
    let mut report = write_outputs(&grid, &outcome, "pretext experiment")?;
    if let Some((note, recs)) = &long {
        std::fs::write(
            args.out.join("results_long.json"),
            serde_json::to_vec_pretty(recs)?,
        )?;
        report += note;
        std::fs::write(args.out.join("report.md"), &report)?;
    }
    println!("\n{}", markdown_table(&outcome.records));
    println!(
        "done in {:.0} s; report: {}, results: {}, summary: {}",
        outcome.seconds,
        args.out.join("report.md").display(),
        args.out.join("results.json").display(),
        args.out.join("summary.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The grid's label fractions, pretraining fractions and seed count: the
/// flags where given, else the defaults of the full or the quick grid.
fn axes(args: &Args) -> anyhow::Result<(Vec<f64>, Vec<f64>, u64)> {
    let (label_fractions, pretrain_fractions, seeds) = if args.quick {
        (vec![record::ONE_PER_CLASS, 0.2, 1.0], vec![1.0], 3)
    } else {
        (
            vec![record::ONE_PER_CLASS, 0.05, 0.2, 1.0],
            vec![0.1, 0.3, 1.0],
            5,
        )
    };
    let label_fractions = args.label_fractions.clone().unwrap_or(label_fractions);
    let pretrain_fractions = args
        .pretrain_fractions
        .clone()
        .unwrap_or(pretrain_fractions);
    let seeds = args.seeds.unwrap_or(seeds);
    anyhow::ensure!(seeds >= 1, "--seeds must be at least 1");
    anyhow::ensure!(
        pretrain_fractions.iter().any(|&pf| pf >= 1.0),
        "--pretrain-fractions must include 1: the other fractions are compared with it"
    );
    Ok((label_fractions, pretrain_fractions, seeds))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn axes_of(flags: &[&str]) -> anyhow::Result<(Vec<f64>, Vec<f64>, u64)> {
        let argv = ["experiment", "--data", "d"].iter().chain(flags);
        axes(&Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn quick_takes_its_defaults_but_keeps_the_axes_given() {
        let one = record::ONE_PER_CLASS;
        assert_eq!(
            axes_of(&[]).unwrap(),
            (vec![one, 0.05, 0.2, 1.0], vec![0.1, 0.3, 1.0], 5)
        );
        assert_eq!(
            axes_of(&["--quick"]).unwrap(),
            (vec![one, 0.2, 1.0], vec![1.0], 3)
        );
        assert_eq!(
            axes_of(&[
                "--quick",
                "--seeds",
                "5",
                "--pretrain-fractions",
                "0.1,0.3,1",
                "--label-fractions",
                "1/class,1"
            ])
            .unwrap(),
            (vec![one, 1.0], vec![0.1, 0.3, 1.0], 5)
        );
        let err = axes_of(&["--pretrain-fractions", "0.5"]).unwrap_err();
        assert!(err.to_string().contains("must include 1"), "{err}");
        assert!(axes_of(&["--seeds", "0"]).is_err());
    }
}

//! `pretext experiment`: the grid {none, masked, next} × protocols × label
//! fractions × seeds, beside the classical baselines on the same subsets,
//! with equal fine-tuning budgets; writes `results.json`, `summary.json`
//! (paired differences with `none` and their intervals), `report.md` and
//! PNG plots.
//!
//! A seed re-draws everything random: pretraining's initialisation and
//! masks, the labeled subset, the head and the batch order. Pretraining
//! runs once per (task, pretraining fraction, seed), in this process
//! (producer and trainer on one transport), on `train` rows only (labeled
//! and unlabeled; `valid` and `test` are never published).

mod plots;
mod pretrain;
pub mod record;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pretext_core::bucket::BucketConfig;
use pretext_core::sample::write_train_sample;
use pretext_core::task::{MaskConfig, Task};
use pretext_core::trivial::RunStats;
use pretext_core::validate::ValidationConfig;
use pretext_finetune::{
    Baseline, FinetuneConfig, LabeledData, Pretrained, ProbeCache, run_baseline, run_on,
    run_on_with,
};
use pretext_model::{AdamWConfig, ModelConfig};
use pretext_trainer::in_process::PretrainSpec;
use pretext_trainer::metrics::{TaskScore, read_metrics};

use super::LimitArgs;
pub use record::{Protocol, Record, fraction_label, parse_fraction};
use report::PretrainRun;
pub use report::markdown_table;

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
    /// Model width (pretraining and baseline); default 64, 32 with `--quick`.
    #[arg(long)]
    pub width: Option<i64>,
    /// Residual blocks.
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
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
    pub targets: pretext_cli::TargetArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The fine-tuning budget and architecture shared by every run of a grid.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Passes over the subset.
    pub epochs: u32,
    /// Least steps.
    pub min_steps: u64,
    /// Most steps.
    pub max_steps: Option<u64>,
    /// Evaluations on valid.
    pub evals: u32,
    /// Peak learning rate.
    pub lr: f64,
    /// Training crop.
    pub train_crop: Option<usize>,
    /// Baseline width.
    pub width: i64,
    /// Baseline depth.
    pub depth: usize,
    /// libtorch threads.
    pub threads: usize,
    /// Row rules.
    pub validation: ValidationConfig,
}

impl Budget {
    /// The fine-tune config of one run.
    pub fn config(
        &self,
        data: &[PathBuf],
        pretrained: Pretrained,
        label_fraction: f64,
        seed: u64,
        run_dir: PathBuf,
    ) -> FinetuneConfig {
        let d = FinetuneConfig::default();
        FinetuneConfig {
            data: data.to_vec(),
            pretrained,
            label_fraction,
            run_dir,
            epochs: self.epochs,
            min_steps: self.min_steps,
            max_steps: self.max_steps,
            evals: self.evals,
            seed,
            model: ModelConfig {
                width: self.width,
                depth: self.depth,
                ..ModelConfig::default()
            },
            optimizer: AdamWConfig {
                lr: self.lr,
                ..d.optimizer
            },
            buckets: BucketConfig {
                edges: pretext_core::bucket::geometric_edges(
                    512,
                    self.validation.max_len.max(512),
                    2.0,
                ),
                ..d.buckets.clone()
            },
            train_crop: self.train_crop,
            validation: self.validation,
            threads: Some(self.threads),
            save_checkpoint: false,
            ..d
        }
    }
}

/// Everything a grid runs with, resolved.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Input paths.
    pub data: Vec<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// Label fractions.
    pub label_fractions: Vec<f64>,
    /// Pretraining fractions.
    pub pretrain_fractions: Vec<f64>,
    /// Protocols of pretrained encoders.
    pub protocols: Vec<Protocol>,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// Pretraining: transport, epochs, width, depth, threads, targets.
    pub spec: PretrainSpec,
    /// Data-parallel pretraining ranks (more than 1 needs a broker).
    pub ranks: usize,
    /// Fine-tuning budget.
    pub budget: Budget,
    /// The data's run lengths the targets came from, if measured.
    pub run_stats: Option<RunStats>,
    /// Reuse finished pretraining runs with equal settings.
    pub reuse_pretrained: bool,
    /// Namespace prefix of the pretraining queues.
    pub ns: String,
}

/// What a grid produced.
#[derive(Debug)]
pub struct Outcome {
    /// Every fine-tuning and baseline run.
    pub records: Vec<Record>,
    /// Every pretraining run, with its task score.
    pub runs: Vec<PretrainRun>,
    /// Directories of the pretraining runs, by (task, fraction, seed).
    pub run_dirs: Vec<(Task, f64, u64, PathBuf)>,
    /// The labeled rows.
    pub data: LabeledData,
    /// Seconds.
    pub seconds: f64,
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
        args.width = args.width.or(Some(32));
    }
    let width = args.width.unwrap_or(64);
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
            depth: args.depth,
            threads: args.threads,
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
            depth: args.depth,
            threads: args.threads,
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

/// Prints the targets and where they came from.
pub fn print_targets(mask: &MaskConfig, stats: Option<&RunStats>) {
    match stats {
        Some(s) => println!(
            "targets: masked spans of mean {} steps at rate {}, next-step horizon {} (the data's median run is {} steps, mean {:.1}; copying the previous step is right at {:.1}% of steps)",
            mask.mean_span,
            mask.rate,
            mask.horizon,
            s.median_run,
            s.mean_run,
            100.0 * s.copy_previous
        ),
        None => println!(
            "targets: masked spans of mean {} steps at rate {}, next-step horizon {}",
            mask.mean_span, mask.rate, mask.horizon
        ),
    }
}

/// Pretraining epochs on a fraction `pf` of the train rows: as many steps
/// as `epochs` over all of them, i.e. ceil(epochs / pf), and `epochs` at 1.
pub fn epochs_at(epochs: u32, pf: f64) -> u32 {
    if pf >= 1.0 {
        epochs
    } else {
        ((epochs as f64 / pf.max(1e-6)) - 1e-9)
            .ceil()
            .min(u32::MAX as f64) as u32
    }
}

/// Runs the pretraining runs, the fine-tuning grid and the baselines.
pub fn run_grid(grid: &Grid) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let vcfg = grid.budget.validation;
    std::fs::create_dir_all(&grid.out)?;
    let runs_dir = grid.out.join("runs");
    let data = LabeledData::load(&grid.data, vcfg).context("reading the labeled rows")?;
    data.check()?;
    println!(
        "data: {} classes, {} labeled + {} unlabeled train rows, {} valid, {} test",
        data.classes.len(),
        data.train.len(),
        data.unlabeled_train,
        data.valid.len(),
        data.test.len()
    );

    let rt = tokio::runtime::Runtime::new()?;
    let mut runs = Vec::new();
    let mut run_dirs = Vec::new();
    for seed in 0..grid.seeds {
        for &pf in &grid.pretrain_fractions {
            let source = if pf >= 1.0 {
                grid.data.clone()
            } else {
                let dir = runs_dir.join(format!("pretrain-data-{:.0}-s{seed}", 100.0 * pf));
                // A `pf` fraction of the train rows (labeled and unlabeled,
                // drawn by id hash for this seed), labels dropped.
                let n = write_train_sample(
                    &grid.data,
                    vcfg,
                    pf,
                    seed,
                    &dir.join("part-00000.parquet"),
                )?;
                println!(
                    "pretraining data {:.0}% (seed {seed}): {n} train rows",
                    100.0 * pf
                );
                vec![dir]
            };
            for task in [Task::Masked, Task::Next] {
                let run_dir = runs_dir.join(format!("pretrain-{task}-{:.0}-s{seed}", 100.0 * pf));
                let spec = PretrainSpec {
                    seed,
                    epochs: epochs_at(grid.spec.epochs, pf),
                    ..grid.spec.clone()
                };
                let settings = pretrain::PretrainSettings::new(&spec, &source, task)?;
                let t = Instant::now();
                let reused = grid.reuse_pretrained && pretrain::check_reuse(&run_dir, &settings)?;
                let step = if reused {
                    pretrain::finished_run(&run_dir).context("a finished run")?
                } else {
                    let ns = format!(
                        "{}-{task}-{:.0}-s{seed}-{}",
                        grid.ns,
                        100.0 * pf,
                        std::process::id()
                    );
                    rt.block_on(pretrain::pretrain(
                        &spec, grid.ranks, &source, &run_dir, vcfg, &ns, &settings,
                    ))?
                };
                let score =
                    TaskScore::of(&read_metrics(&run_dir.join(pretext_trainer::METRICS_FILE))?);
                println!(
                    "pretrain {task} on {:.0}% of train rows, seed {seed}: {step} steps{}, token accuracy {:.1}% (copy-previous {:.1}%, copy-nearest {:.1}%, most-frequent {:.1}%){}, {:.0} s",
                    100.0 * pf,
                    if reused { " (reused)" } else { "" },
                    100.0 * score.accuracy,
                    100.0 * score.trivial.copy_previous,
                    100.0 * score.trivial.copy_nearest,
                    100.0 * score.trivial.most_frequent,
                    if score.is_trivial() { " TRIVIAL" } else { "" },
                    t.elapsed().as_secs_f64()
                );
                runs.push(PretrainRun {
                    task: task.to_string(),
                    pretrain_fraction: pf,
                    seed,
                    steps: step,
                    score,
                });
                run_dirs.push((task, pf, seed, run_dir));
            }
        }
    }

    let smallest = grid
        .label_fractions
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let mut records = Vec::new();
    // A probe's encoder features are computed once per encoder.
    let mut cache = ProbeCache::default();
    for &lf in &grid.label_fractions {
        for seed in 0..grid.seeds {
            for b in Baseline::ALL {
                let r = run_baseline(b, &data, lf, seed)?;
                records.push(Record::baseline(&r));
            }
            let mut starts: Vec<(String, f64, Pretrained, Protocol)> =
                vec![("none".into(), 0.0, Pretrained::None, Protocol::Finetune)];
            if grid.protocols.contains(&Protocol::Probe) {
                // The control of every probe: the same linear probe on a
                // randomly initialised encoder.
                starts.push(("none".into(), 0.0, Pretrained::None, Protocol::Probe));
            }
            for (task, pf, s, dir) in &run_dirs {
                // Partial pretraining is fine-tuned at the smallest fraction only.
                if *s != seed || (*pf < 1.0 && lf > smallest) {
                    continue;
                }
                for &protocol in grid.protocols.iter().filter(|p| **p != Protocol::Classical) {
                    starts.push((
                        task.to_string(),
                        *pf,
                        Pretrained::Run(dir.clone()),
                        protocol,
                    ));
                }
            }
            for (method, pf, p, protocol) in starts {
                let dir = runs_dir.join(format!(
                    "ft-{method}-{protocol:?}-pt{:.0}-lf{lf}-s{seed}",
                    100.0 * pf
                ));
                let mut cfg = grid.budget.config(&grid.data, p, lf, seed, dir);
                cfg.freeze_encoder = protocol == Protocol::Probe;
                let r = run_on_with(&cfg, &data, Some(&mut cache))?;
                let rec = Record::new(&method, pf, &r);
                println!(
                    "{:<24} labels {:>7} ({:>4} rows) seed {seed}: test accuracy {:.1}%, macro-F1 {:.3}{} ({:.0} s)",
                    rec.label(),
                    fraction_label(lf),
                    r.train_rows,
                    100.0 * rec.test_accuracy,
                    rec.macro_f1,
                    if rec.collapsed() { " COLLAPSED" } else { "" },
                    r.seconds
                );
                records.push(rec);
            }
        }
    }
    Ok(Outcome {
        records,
        runs,
        run_dirs,
        data,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes `results.json`, `summary.json`, the plots and `report.md` under
/// the grid's output directory; returns the report.
pub fn write_outputs(grid: &Grid, o: &Outcome, title: &str) -> anyhow::Result<String> {
    let summary = stats::summarise(&o.records);
    std::fs::write(
        grid.out.join("results.json"),
        serde_json::to_vec_pretty(&o.records)?,
    )?;
    std::fs::write(
        grid.out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(
        grid.out.join("pretraining.json"),
        serde_json::to_vec_pretty(&o.runs)?,
    )?;
    let curves: Vec<(String, PathBuf)> = o
        .run_dirs
        .iter()
        .filter(|(_, _, seed, _)| *seed == 0)
        .map(|(t, pf, _, d)| {
            (
                format!("{t} ({:.0}% of train, seed 0)", 100.0 * pf),
                d.clone(),
            )
        })
        .collect();
    let plots = plots::write_plots(&grid.out, &o.records, o.data.train.len(), &curves);
    let s = &grid.spec;
    let b = &grid.budget;
    let mut r = format!("# {title}\n\n");
    r += &format!(
        "Data: {}; {} classes; {} labeled and {} unlabeled train rows, {} valid, {} test rows. \
         Model: width {}, depth {}. Pretraining: {} epoch(s) over the train rows (never valid or test); \
         masked spans of mean {} steps at rate {}, next-step horizon {}{}. \
         Fine-tuning budget, the same for every method at a fraction: max({} epochs, {} steps){}, lr {}, \
         {} evaluations on valid (best kept), crop {}, class-balanced loss. Seeds: {} (each re-draws pretraining, \
         the labeled subset, the head and the batch order). Wall clock {:.0} s.\n\n",
        grid.data
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", "),
        o.data.classes.len(),
        o.data.train.len(),
        o.data.unlabeled_train,
        o.data.valid.len(),
        o.data.test.len(),
        s.width,
        s.depth,
        s.epochs,
        s.mask.mean_span,
        s.mask.rate,
        s.mask.horizon,
        grid.run_stats.map_or(String::new(), |st| format!(
            " (from the data: median run {} steps, mean {:.1}, copy-previous right at {:.1}% of steps)",
            st.median_run,
            st.mean_run,
            100.0 * st.copy_previous
        )),
        b.epochs,
        b.min_steps,
        b.max_steps
            .map_or(String::new(), |m| format!(", at most {m} steps")),
        b.lr,
        b.evals,
        b.train_crop.map_or("none".to_owned(), |c| format!("{c} steps")),
        grid.seeds,
        o.seconds
    );
    let smaller: Vec<String> = grid
        .pretrain_fractions
        .iter()
        .filter(|&&pf| pf < 1.0)
        .map(|&pf| format!("{:.0}% for {} epochs", 100.0 * pf, epochs_at(s.epochs, pf)))
        .collect();
    if !smaller.is_empty() {
        r += &format!(
            "Pretraining on part of the train rows ({}) runs about as many steps as on all of them; \
             the pretext table below gives each run's steps.\n\n",
            smaller.join(", ")
        );
    }
    r += "## Test accuracy: mean [95% bootstrap interval] over seeds, and macro-F1\n\n";
    r += &markdown_table(&o.records);
    r += &format!(
        "\nClassical rows (`majority`, `histogram`: logistic regression on [value histogram, log length], `ngram`: on hashed 1- to 4-grams) train on the same subsets. ⚠ marks a cell where a run collapsed. Label fractions: {}.\n\n",
        plots::axis_note(&o.records, o.data.train.len())
    );
    for w in report::collapse_warnings(&o.records) {
        r += &format!("- {w}\n");
    }
    match &plots {
        Ok(files) => {
            for f in files {
                r += &format!("\n![{f}]({f})\n");
            }
        }
        Err(e) => r += &format!("\nPlots not drawn: {e}\n"),
    }
    r += "\n## Does pretraining help? Paired differences with `none` (fine-tuned from scratch, same seed and subset)\n\n";
    r += &report::comparison_table(&summary);
    r += &format!("\n{}\n", report::verdict_line(&summary));
    r += "\n## Does the CNN beat the classical baselines? (each side chosen on valid, paired by seed)\n\n";
    r += &report::cnn_vs_classical(&o.records);
    r += "\n## Pretext tasks against trivial predictors (token accuracy over the last quarter of steps, on the same targets)\n\n";
    r += &report::pretext_table(&o.runs);
    for w in report::trivial_warnings(&o.runs) {
        r += &format!("\n- {w}\n");
    }
    let fracs = report::fractions(&o.records);
    if let Some(&largest) = fracs.last() {
        r += &format!(
            "\n## Accuracy by row length at {} labels (all seeds pooled)\n\n",
            fraction_label(largest)
        );
        let at: Vec<Record> = o
            .records
            .iter()
            .filter(|x| x.label_fraction == largest && x.is_cnn())
            .cloned()
            .collect();
        r += &report::band_table(&at);
    }
    std::fs::write(grid.out.join("report.md"), &r)?;
    Ok(r)
}

/// Linear probes of the masked encoder (pretrained on `--data`) and of a
/// random one on `--long-data`, at the smallest label fraction, each seed;
/// returns the report section and the records.
fn long_runs(grid: &Grid, path: &Path, masked: &Path) -> anyhow::Result<(String, Vec<Record>)> {
    let vcfg = grid.budget.validation;
    let long = vec![path.to_path_buf()];
    let data = LabeledData::load(&long, vcfg).context("reading --long-data")?;
    data.check()?;
    let lf = grid
        .label_fractions
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let mut recs = Vec::new();
    for seed in 0..grid.seeds {
        for (method, p) in [
            ("none", Pretrained::None),
            ("masked", Pretrained::Run(masked.to_path_buf())),
        ] {
            let dir = grid
                .out
                .join("runs")
                .join(format!("long-{method}-probe-lf{lf}-s{seed}"));
            let mut cfg = grid.budget.config(&long, p, lf, seed, dir);
            cfg.freeze_encoder = true;
            let r = run_on(&cfg, &data)?;
            recs.push(Record::new(
                method,
                if method == "none" { 0.0 } else { 1.0 },
                &r,
            ));
        }
    }
    let longest = data.test.iter().map(|e| e.values.len()).max().unwrap_or(0);
    let mut s = format!(
        "\n## Trained on short rows, evaluated on long ones\n\nThe seed-0 masked encoder above is probed (frozen, linear head on {} labels) on `{}`, whose test rows reach {longest} steps, against a random encoder under the same probe. Test accuracy by length band (all seeds pooled):\n\n",
        fraction_label(lf),
        path.display()
    );
    s += &report::band_table(&recs);
    Ok((s, recs))
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
    fn a_fraction_of_the_data_gets_the_steps_of_all_of_it() {
        assert_eq!(epochs_at(1, 1.0), 1);
        assert_eq!(epochs_at(2, 1.0), 2);
        assert_eq!(epochs_at(1, 0.1), 10);
        assert_eq!(epochs_at(1, 0.3), 4); // 3.33 rounded up
        assert_eq!(epochs_at(3, 0.5), 6);
        assert_eq!(epochs_at(1, 0.25), 4);
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

//! `pretext experiment`: the grid {none, masked, next} × label fractions ×
//! seeds (and, for question 4, how much of the train rows pretraining
//! sees), with equal fine-tuning budgets; writes `report.md`,
//! `results.json` and PNG plots that answer the user's four questions.
//!
//! Pretraining runs in this process (producer and trainer on the memory
//! transport, as `pretext demo` does) once per method and pretraining
//! fraction, on `train` rows only (labeled and unlabeled; the producer never
//! publishes `valid` or `test`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pretext_core::bucket::BucketConfig;
use pretext_core::sample::write_train_sample;
use pretext_core::task::Task;
use pretext_core::validate::ValidationConfig;
use pretext_finetune::{FinetuneConfig, FinetuneReport, LabeledData, LengthBand, Pretrained};
use pretext_model::{AdamWConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use super::LimitArgs;
use super::demo::{PretrainSpec, last_metrics, pretrain_with};

/// Arguments of `pretext experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Output directory: report.md, results.json, plots, runs/.
    #[arg(long, default_value = "out/experiment")]
    pub out: PathBuf,
    /// A small grid that runs in minutes: fractions 5% and 100%, 2 seeds,
    /// one pretraining epoch, a short fine-tuning budget.
    #[arg(long)]
    pub quick: bool,
    /// Fractions of the labeled train rows (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.05,0.2,1")]
    pub label_fractions: Vec<f64>,
    /// Fractions of the train rows pretraining sees (question 4).
    #[arg(long, value_delimiter = ',', default_value = "0.25,1")]
    pub pretrain_fractions: Vec<f64>,
    /// How pretrained encoders are used: `finetune` (every weight trains),
    /// `probe` (frozen encoder, standardised features, linear head), or
    /// both. The baseline always trains every weight.
    #[arg(long, value_delimiter = ',', default_value = "probe,finetune")]
    pub protocols: Vec<Protocol>,
    /// Seeds per cell.
    #[arg(long, default_value_t = 2)]
    pub seeds: u64,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 2)]
    pub pretrain_epochs: u32,
    /// Fine-tuning passes over the labeled subset.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Least fine-tuning steps per run (the budget is the same for every method).
    #[arg(long, default_value_t = 60)]
    pub min_steps: u64,
    /// Evaluations on `valid` per fine-tuning run.
    #[arg(long, default_value_t = 4)]
    pub evals: u32,
    /// Fine-tuning learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Fine-tune on random crops of at most this many steps (evaluation
    /// sees whole sequences).
    #[arg(long)]
    pub train_crop: Option<usize>,
    /// Model width (pretraining and baseline).
    #[arg(long, default_value_t = 64)]
    pub width: i64,
    /// Residual blocks.
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Keep a pretraining run already in `OUT/runs` when it finished (a
    /// checkpoint, and its audit shows every published batch applied once)
    /// instead of pretraining again: rerun the fine-tuning grid on the
    /// same encoders.
    #[arg(long)]
    pub reuse_pretrained: bool,
    /// Labeled rows of the same task with longer sequences (e.g. up to
    /// 30720 steps): the encoder pretrained on `--data` (shorter rows) is
    /// probed on them at the smallest label fraction, against a random
    /// encoder, and scored by length band on their `test` rows.
    #[arg(long)]
    pub long_data: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How a pretrained encoder is used in fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Every weight trains.
    Finetune,
    /// Linear probe: the encoder is frozen.
    Probe,
}

/// One fine-tuning run of the grid: a line of `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// `none`, `masked` or `next`.
    pub method: String,
    /// `finetune` or `probe` (the baseline is always `finetune`).
    pub protocol: Protocol,
    /// Fraction of the train rows pretraining saw (0 for `none`).
    pub pretrain_fraction: f64,
    /// Fraction of the labeled train rows fine-tuning saw.
    pub label_fraction: f64,
    /// Seed of the subset, head and batch order.
    pub seed: u64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test macro-F1.
    pub macro_f1: f64,
    /// Labeled rows trained on.
    pub train_rows: usize,
    /// Fine-tuning steps.
    pub steps: u64,
    /// Valid accuracy of the selected weights.
    pub best_valid_accuracy: f64,
    /// Test accuracy by length octave.
    pub test_by_length: Vec<LengthBand>,
    /// Fine-tuning wall-clock seconds.
    pub seconds: f64,
}

impl Record {
    /// The record of a fine-tuning report.
    pub fn new(method: &str, pretrain_fraction: f64, r: &FinetuneReport) -> Self {
        Self {
            method: method.to_owned(),
            protocol: if r.freeze_encoder {
                Protocol::Probe
            } else {
                Protocol::Finetune
            },
            pretrain_fraction,
            label_fraction: r.label_fraction,
            seed: r.seed,
            test_accuracy: r.test.accuracy,
            macro_f1: r.test.macro_f1,
            train_rows: r.train_rows,
            steps: r.steps,
            best_valid_accuracy: r.best_valid_accuracy,
            test_by_length: r.test_by_length.clone(),
            seconds: r.seconds,
        }
    }

    /// `masked`, `masked probe`, or `masked (pretrain 25%)` when
    /// pretraining saw a part.
    pub fn label(&self) -> String {
        let name = match self.protocol {
            Protocol::Probe => format!("{} probe", self.method),
            Protocol::Finetune => self.method.clone(),
        };
        if self.method == "none" || self.pretrain_fraction >= 1.0 {
            name
        } else {
            format!("{name} (pretrain {:.0}%)", 100.0 * self.pretrain_fraction)
        }
    }
}

/// The fine-tuning budget and architecture shared by every run of a grid.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Passes over the subset.
    pub epochs: u32,
    /// Least steps.
    pub min_steps: u64,
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
            ..d
        }
    }
}

/// Runs `pretext experiment`.
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    if args.quick {
        args.label_fractions = vec![0.05, 1.0];
        args.pretrain_fractions = vec![1.0];
        args.seeds = 2;
        args.pretrain_epochs = 1;
        args.epochs = 5;
        args.min_steps = 30;
        args.evals = 3;
        args.train_crop = args.train_crop.or(Some(1024));
    }
    let vcfg = args.limits.config();
    std::fs::create_dir_all(&args.out)?;
    let runs = args.out.join("runs");
    let data = LabeledData::load(&args.data, vcfg).context("reading the labeled rows")?;
    data.check()?;
    println!(
        "data: {} classes, {} labeled + {} unlabeled train rows, {} valid, {} test",
        data.classes.len(),
        data.train.len(),
        data.unlabeled_train,
        data.valid.len(),
        data.test.len()
    );

    // Pretraining, once per (task, pretraining fraction).
    let rt = tokio::runtime::Runtime::new()?;
    let spec = PretrainSpec {
        broker: "memory".into(),
        epochs: args.pretrain_epochs,
        width: args.width,
        depth: args.depth,
        threads: args.threads,
        seed: 0,
    };
    let mut pretrained: Vec<(Task, f64, PathBuf)> = Vec::new();
    let mut token_acc: BTreeMap<String, f64> = BTreeMap::new();
    for &pf in &args.pretrain_fractions {
        let source = if pf >= 1.0 {
            args.data.clone()
        } else {
            let dir = runs.join(format!("pretrain-data-{:.0}", 100.0 * pf));
            // A `pf` fraction of the train rows (labeled and unlabeled,
            // drawn by the same id hash as the labeled subsets), labels dropped.
            let n = write_train_sample(&args.data, vcfg, pf, 0, &dir.join("part-00000.parquet"))?;
            println!(
                "pretraining data {:.0}%: {n} train rows in {}",
                100.0 * pf,
                dir.display()
            );
            vec![dir]
        };
        for task in [Task::Masked, Task::Next] {
            let run_dir = runs.join(format!("pretrain-{task}-{:.0}", 100.0 * pf));
            let t = Instant::now();
            let step = match finished_run(&run_dir).filter(|_| args.reuse_pretrained) {
                Some(step) => {
                    println!(
                        "pretrain {task} on {:.0}%: reusing {}",
                        100.0 * pf,
                        run_dir.display()
                    );
                    step
                }
                None => {
                    if run_dir.exists() {
                        std::fs::remove_dir_all(&run_dir)?;
                    }
                    let data_dir = source.first().cloned().unwrap_or_default();
                    rt.block_on(pretrain_with(
                        &spec,
                        &data_dir,
                        &run_dir,
                        task,
                        vcfg,
                        &format!("exp-{task}-{:.0}", 100.0 * pf),
                    ))?
                    .step
                }
            };
            let acc = last_metrics(&run_dir)?;
            println!(
                "pretrain {task} on {:.0}% of train rows: {step} steps, token accuracy {:.1}% (41-way), {:.0} s",
                100.0 * pf,
                100.0 * acc,
                t.elapsed().as_secs_f64()
            );
            token_acc.insert(format!("{task} {:.0}%", 100.0 * pf), acc);
            pretrained.push((task, pf, run_dir));
        }
    }

    let budget = Budget {
        epochs: args.epochs,
        min_steps: args.min_steps,
        evals: args.evals,
        lr: args.lr,
        train_crop: args.train_crop,
        width: args.width,
        depth: args.depth,
        threads: args.threads,
        validation: vcfg,
    };
    let mut starts: Vec<(String, f64, Pretrained, Protocol)> =
        vec![("none".into(), 0.0, Pretrained::None, Protocol::Finetune)];
    if args.protocols.contains(&Protocol::Probe) {
        // The control of every probe: the same linear probe on a randomly
        // initialised encoder, so a probe's gain is pretraining's, not the
        // protocol's.
        starts.push(("none".into(), 0.0, Pretrained::None, Protocol::Probe));
    }
    for (task, pf, dir) in &pretrained {
        for &protocol in &args.protocols {
            starts.push((
                task.to_string(),
                *pf,
                Pretrained::Run(dir.clone()),
                protocol,
            ));
        }
    }
    let total = starts.len() * args.label_fractions.len() * args.seeds as usize;
    let mut records = Vec::new();
    for &lf in &args.label_fractions {
        for seed in 0..args.seeds {
            for (method, pf, p, protocol) in &starts {
                // Question 4's partial pretraining is fine-tuned at the smallest fraction only.
                if *pf < 1.0 && *pf > 0.0 && lf > min_fraction(&args.label_fractions) {
                    continue;
                }
                let dir = runs.join(format!(
                    "ft-{method}-{protocol:?}-pt{:.0}-lf{}-s{seed}",
                    100.0 * pf,
                    lf
                ));
                let mut cfg = budget.config(&args.data, p.clone(), lf, seed, dir);
                cfg.freeze_encoder = *protocol == Protocol::Probe;
                let r = pretext_finetune::run_on(&cfg, &data)?;
                let rec = Record::new(method, *pf, &r);
                println!(
                    "[{}/{total}] {:<24} labels {:>5.1}% ({:>4} rows) seed {seed}: test accuracy {:.1}%, macro-F1 {:.3} ({:.0} s)",
                    records.len() + 1,
                    rec.label(),
                    100.0 * lf,
                    r.train_rows,
                    100.0 * rec.test_accuracy,
                    rec.macro_f1,
                    r.seconds
                );
                records.push(rec);
            }
        }
    }
    let long = match &args.long_data {
        Some(path) => {
            let masked = pretrained
                .iter()
                .find(|(t, pf, _)| *t == Task::Masked && *pf >= 1.0)
                .map(|(_, _, d)| d.clone())
                .context("--long-data needs masked pretraining on all train rows")?;
            Some(long_runs(&args, &budget, path, &masked, &runs)?)
        }
        None => None,
    };
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&records)?,
    )?;
    if let Some((_, recs)) = &long {
        std::fs::write(
            args.out.join("results_long.json"),
            serde_json::to_vec_pretty(recs)?,
        )?;
    }
    let curves: Vec<(String, PathBuf)> = pretrained
        .iter()
        .map(|(t, pf, d)| (format!("{t} ({:.0}% of train)", 100.0 * pf), d.clone()))
        .collect();
    let plots = write_plots(&args.out, &records, &curves);
    let mut report = report_markdown(
        &records,
        &token_acc,
        &data,
        &args,
        &plots,
        t0.elapsed().as_secs_f64(),
    );
    if let Some((summary, recs)) = &long {
        report += &long_report(summary, recs);
    }
    std::fs::write(args.out.join("report.md"), &report)?;
    println!("\n{}", markdown_table(&records));
    println!(
        "done in {:.0} s; report: {}, results: {}",
        t0.elapsed().as_secs_f64(),
        args.out.join("report.md").display(),
        args.out.join("results.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the long-row evaluation ran on.
struct LongSummary {
    data: PathBuf,
    train_rows: usize,
    test_rows: usize,
    longest_pretrain: usize,
    longest_test: usize,
    label_fraction: f64,
}

/// Linear probes of the masked encoder (pretrained on `--data`) and of a
/// random one on `--long-data`, at the smallest label fraction, each seed.
fn long_runs(
    args: &Args,
    budget: &Budget,
    path: &Path,
    masked: &Path,
    runs: &Path,
) -> anyhow::Result<(LongSummary, Vec<Record>)> {
    let vcfg = args.limits.config();
    let data = LabeledData::load(std::slice::from_ref(&path.to_path_buf()), vcfg)
        .context("reading --long-data")?;
    data.check()?;
    let short = LabeledData::load(&args.data, vcfg)?;
    let longest =
        |rows: &[pretext_finetune::Example]| rows.iter().map(|e| e.values.len()).max().unwrap_or(0);
    let lf = min_fraction(&args.label_fractions);
    let summary = LongSummary {
        data: path.to_path_buf(),
        train_rows: data.train.len(),
        test_rows: data.test.len(),
        longest_pretrain: longest(&short.train).max(longest(&short.valid)),
        longest_test: longest(&data.test),
        label_fraction: lf,
    };
    println!(
        "long rows: {} labeled train rows, {} test rows up to {} steps; the encoder saw rows up to {}",
        summary.train_rows, summary.test_rows, summary.longest_test, summary.longest_pretrain
    );
    let mut recs = Vec::new();
    for seed in 0..args.seeds {
        for (method, p) in [
            ("none", Pretrained::None),
            ("masked", Pretrained::Run(masked.to_path_buf())),
        ] {
            let dir = runs.join(format!("long-{method}-probe-lf{lf}-s{seed}"));
            let mut cfg =
                budget.config(std::slice::from_ref(&path.to_path_buf()), p, lf, seed, dir);
            cfg.freeze_encoder = true;
            let r = pretext_finetune::run_on(&cfg, &data)?;
            let rec = Record::new(method, if method == "none" { 0.0 } else { 1.0 }, &r);
            println!(
                "long rows, {:<14} seed {seed}: test accuracy {:.1}%",
                rec.label(),
                100.0 * rec.test_accuracy
            );
            recs.push(rec);
        }
    }
    Ok((summary, recs))
}

/// The report's section on long rows: accuracy by length band per method,
/// all seeds pooled.
fn long_report(s: &LongSummary, recs: &[Record]) -> String {
    let mut out = format!(
        "\n## Trained on short rows, evaluated on long ones\n\nThe masked encoder above was pretrained on rows of at most {} steps; here it is probed (frozen encoder, linear head on {:.0}% of the labeled train rows = {} rows) on `{}`, whose test rows reach {} steps, against a randomly initialised encoder under the same probe. Test accuracy by length band (all seeds pooled):\n\n",
        s.longest_pretrain,
        100.0 * s.label_fraction,
        recs.first().map_or(0, |r| r.train_rows),
        s.data.display(),
        s.longest_test
    );
    out += &band_table(recs);
    out
}

/// Test accuracy by length octave per method label, all records pooled.
fn band_table(recs: &[Record]) -> String {
    let mut by_method: BTreeMap<String, BTreeMap<usize, (usize, f64)>> = BTreeMap::new();
    for r in recs {
        for b in &r.test_by_length {
            let e = by_method
                .entry(r.label())
                .or_default()
                .entry(b.min_len)
                .or_default();
            e.0 += b.rows;
            e.1 += b.accuracy * b.rows as f64;
        }
    }
    let mut s = String::from("| method | all | length band: accuracy (rows) |\n|---|---|---|\n");
    for (m, bands) in &by_method {
        let (n, c) = bands
            .values()
            .fold((0usize, 0.0), |(n, c), (bn, bc)| (n + bn, c + bc));
        s += &format!(
            "| {m} | {:.1}% | {} |\n",
            100.0 * c / n.max(1) as f64,
            bands
                .iter()
                .map(|(lo, (n, c))| format!(
                    "{lo}..{}: {:.1}% ({n})",
                    2 * lo - 1,
                    100.0 * c / *n as f64
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

/// The step of a finished pretraining run in `dir`: a checkpoint exists and
/// the audit finds every published batch applied exactly once.
fn finished_run(dir: &Path) -> Option<u64> {
    let audit = pretext_trainer::audit::audit(dir).ok()?;
    if audit.published == 0 || audit.missing != 0 || audit.applied_twice != 0 {
        return None;
    }
    let last = pretext_model::latest_checkpoint(&dir.join("checkpoints")).ok()??;
    let state: pretext_model::CheckpointState = pretext_model::read_checkpoint_state(&last).ok()?;
    Some(state.step)
}

fn min_fraction(f: &[f64]) -> f64 {
    f.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n.max(1.0);
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Records grouped by (row label, label fraction in basis points).
type CellMap<'a> = BTreeMap<(String, u64), Vec<&'a Record>>;

/// Cells: (row label, label fraction) → records.
fn cells(records: &[Record]) -> (Vec<String>, Vec<f64>, CellMap<'_>) {
    let mut rows: Vec<String> = Vec::new();
    let mut fracs: Vec<f64> = Vec::new();
    let mut map: CellMap<'_> = BTreeMap::new();
    for r in records {
        if !rows.contains(&r.label()) {
            rows.push(r.label());
        }
        if !fracs.contains(&r.label_fraction) {
            fracs.push(r.label_fraction);
        }
        map.entry((r.label(), r.label_fraction.to_bits()))
            .or_default()
            .push(r);
    }
    fracs.sort_by(f64::total_cmp);
    (rows, fracs, map)
}

/// Mean test accuracy of a cell, if it ran.
/// Mean test accuracy of `method` at `lf` (full pretraining) under the
/// protocol (fine-tune or probe) with the higher mean `valid` accuracy: the
/// choice a user can make without looking at `test`.
fn best_mean(records: &[Record], method: &str, lf: f64) -> Option<f64> {
    let probe = format!("{method} probe");
    let valid = |label: &str| {
        let xs: Vec<f64> = records
            .iter()
            .filter(|r| r.label() == label && r.label_fraction == lf)
            .map(|r| r.best_valid_accuracy)
            .collect();
        (!xs.is_empty()).then(|| mean_std(&xs).0)
    };
    let pick = match (valid(method), valid(&probe)) {
        (Some(f), Some(p)) if p > f => probe.as_str(),
        (None, Some(_)) => probe.as_str(),
        _ => method,
    };
    cell_mean(records, pick, lf)
}

fn cell_mean(records: &[Record], label: &str, lf: f64) -> Option<f64> {
    let xs: Vec<f64> = records
        .iter()
        .filter(|r| r.label() == label && r.label_fraction == lf)
        .map(|r| r.test_accuracy)
        .collect();
    (!xs.is_empty()).then(|| mean_std(&xs).0)
}

/// The answer table: method × label fraction, test accuracy and macro-F1
/// as mean ± std over seeds.
pub fn markdown_table(records: &[Record]) -> String {
    let (rows, fracs, map) = cells(records);
    let mut s = String::from("| method |");
    for f in &fracs {
        s += &format!(" {:.0}% labels: accuracy | macro-F1 |", 100.0 * f);
    }
    s += "\n|---|";
    s += &"---|---|".repeat(fracs.len());
    s += "\n";
    for row in &rows {
        s += &format!("| {row} |");
        for f in &fracs {
            match map.get(&(row.clone(), f.to_bits())) {
                Some(rs) => {
                    let (am, asd) =
                        mean_std(&rs.iter().map(|r| r.test_accuracy).collect::<Vec<_>>());
                    let (fm, fsd) = mean_std(&rs.iter().map(|r| r.macro_f1).collect::<Vec<_>>());
                    s += &format!(
                        " {:.1} ± {:.1}% (n={}) | {:.3} ± {:.3} |",
                        100.0 * am,
                        100.0 * asd,
                        rs.len(),
                        fm,
                        fsd
                    );
                }
                None => s += " — | — |",
            }
        }
        s += "\n";
    }
    s
}

fn report_markdown(
    records: &[Record],
    token_acc: &BTreeMap<String, f64>,
    data: &LabeledData,
    args: &Args,
    plots: &Result<Vec<String>, String>,
    secs: f64,
) -> String {
    let mut s = String::from("# pretext experiment\n\n");
    s += &format!(
        "Data: {:?}; {} classes; {} labeled and {} unlabeled train rows, {} valid, {} test rows. \
         Model: width {}, depth {}. Pretraining: {} epoch(s) over the train rows (never valid/test). \
         Fine-tuning budget, the same for every method at a fraction: max({} epochs, {} steps), lr {}, \
         {} evaluations on valid (best kept), crop {:?}. Seeds: {}. Wall clock {:.0} s on this machine.\n\n",
        args.data,
        data.classes.len(),
        data.train.len(),
        data.unlabeled_train,
        data.valid.len(),
        data.test.len(),
        args.width,
        args.depth,
        args.pretrain_epochs,
        args.epochs,
        args.min_steps,
        args.lr,
        args.evals,
        args.train_crop,
        args.seeds,
        secs
    );
    s += "## Test accuracy and macro-F1 (mean ± std over seeds)\n\n";
    s += &markdown_table(records);
    s += "\n";
    match plots {
        Ok(files) => {
            for f in files {
                s += &format!("![{f}]({f})\n\n");
            }
        }
        Err(e) => s += &format!("Plots not drawn: {e}\n\n"),
    }
    let fr = {
        let mut v: Vec<f64> = records.iter().map(|r| r.label_fraction).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let smallest = fr.first().copied().unwrap_or(1.0);
    let none = best_mean(records, "none", smallest);
    let masked = best_mean(records, "masked", smallest);
    let next = best_mean(records, "next", smallest);
    let pct = |x: Option<f64>| x.map_or("—".to_owned(), |v| format!("{:.1}%", 100.0 * v));
    let pts = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+.1} points", 100.0 * (a - b)),
        _ => "—".into(),
    };
    s += "## Answers\n\n";
    let gain = masked.zip(none).map(|(m, n)| 100.0 * (m - n));
    s += &format!(
        "**1. Does SSL work without Transformers?** With {:.0}% of the labels, the dilated CNN pretrained by masked-step prediction scores {} on test, next-step {}, and the same CNN without pretraining {} (masked {}, next {}). Each method is scored under the protocol (every weight fine-tuned, or a linear probe of the frozen encoder) with the higher mean valid accuracy; without pretraining the probe reads a randomly initialised encoder. {}\n\n",
        100.0 * smallest,
        pct(masked),
        pct(next),
        pct(none),
        pts(masked, none),
        pts(next, none),
        match gain {
            Some(g) if g >= 5.0 =>
                "In this run, yes: pretraining a CNN pays off when labels are scarce.",
            Some(g) if g > 0.0 =>
                "In this run the gain is small (under 5 points): not a clear yes at this budget.",
            Some(_) =>
                "In this run, no: pretraining did not help at this budget (see the notes below on what limits it).",
            None => "Not measured.",
        }
    );
    s += "**2. Masked vs next-step; a 41-way prediction?** Both pretraining tasks predict the value at a position as a 41-way classification (cross-entropy over 0..=40 on the token head); token accuracy at the end of pretraining (chance about 2.4%): ";
    s += &token_acc
        .iter()
        .map(|(k, v)| format!("{k}: {:.1}%", 100.0 * v))
        .collect::<Vec<_>>()
        .join(", ");
    s += ". Downstream, by label fraction (masked − next): ";
    s += &fr
        .iter()
        .map(|&f| {
            format!(
                "{:.0}%: {}",
                100.0 * f,
                pts(
                    best_mean(records, "masked", f),
                    best_mean(records, "next", f)
                )
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    s += ". The next-step model is causal (each position sees only the past), so its pooled features summarise less context than the bidirectional masked model's.\n\n";
    s += "**3. Varying lengths?** The model pools over each row's real positions and batches are bucketed by length; test accuracy by length octave at the largest label fraction (all seeds pooled):\n\n";
    let largest = fr.last().copied().unwrap_or(1.0);
    let at_largest: Vec<Record> = records
        .iter()
        .filter(|r| r.label_fraction == largest)
        .cloned()
        .collect();
    s += &band_table(&at_largest);
    if let Some(c) = args.train_crop {
        s += &format!(
            "\nFine-tuning trained on crops of at most {c} steps and was evaluated on whole sequences.\n"
        );
    }
    s += "\n**4. How much data for pretraining vs fine-tuning?** ";
    let partial: Vec<&Record> = records
        .iter()
        .filter(|r| r.pretrain_fraction > 0.0 && r.pretrain_fraction < 1.0)
        .collect();
    if partial.is_empty() {
        s += "This run pretrained on all train rows only (no smaller pretraining set); ";
    } else {
        for label in partial
            .iter()
            .map(|r| r.label())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let full = label.split(' ').next().unwrap_or("").to_owned();
            s += &format!(
                "at {:.0}% labels, {label} scores {} vs {} with all train rows ({}); ",
                100.0 * smallest,
                pct(cell_mean(records, &label, smallest)),
                pct(cell_mean(records, &full, smallest)),
                pts(
                    cell_mean(records, &label, smallest),
                    cell_mean(records, &full, smallest)
                )
            );
        }
    }
    s += "the gain of masked pretraining over none by label fraction: ";
    s += &fr
        .iter()
        .map(|&f| {
            format!(
                "{:.0}%: {}",
                100.0 * f,
                pts(
                    best_mean(records, "masked", f),
                    best_mean(records, "none", f)
                )
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    s += ". Pretraining always uses every unlabeled and labeled train row available; fine-tuning uses whatever labels exist.\n";
    s
}

/// Draws `accuracy.png` (test accuracy vs label fraction per method) and
/// `pretrain_loss.png` (loss curves from each pretraining run's
/// `metrics.jsonl`). Text needs a TrueType font: DejaVu Sans from the
/// Debian package `fonts-dejavu-core`.
fn write_plots(
    out: &Path,
    records: &[Record],
    curves: &[(String, PathBuf)],
) -> Result<Vec<String>, String> {
    register_font()?;
    let mut files = Vec::new();
    let (rows, fracs, _) = cells(records);
    if !fracs.is_empty() {
        let f = "accuracy.png";
        plot_accuracy(&out.join(f), records, &rows, &fracs).map_err(|e| e.to_string())?;
        files.push(f.to_owned());
    }
    if !curves.is_empty() {
        let f = "pretrain_loss.png";
        plot_curves(&out.join(f), curves).map_err(|e| e.to_string())?;
        files.push(f.to_owned());
    }
    Ok(files)
}

fn register_font() -> Result<(), String> {
    use std::sync::OnceLock;
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err("no DejaVuSans.ttf found (install fonts-dejavu-core)".into())
    })
    .clone()
}

const COLORS: [plotters::style::RGBColor; 6] = [
    plotters::style::RGBColor(90, 90, 90),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(148, 103, 189),
];

fn plot_accuracy(
    path: &Path,
    records: &[Record],
    rows: &[String],
    fracs: &[f64],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = fracs[0] * 0.8;
    let hi = fracs[fracs.len() - 1] * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption("Test accuracy vs labeled fraction", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("fraction of labeled train rows (log)")
        .y_desc("test accuracy")
        .x_label_formatter(&|x| format!("{:.0}%", 100.0 * x))
        .draw()?;
    for (i, row) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = fracs
            .iter()
            .filter_map(|&f| cell_mean(records, row, f).map(|m| (f, m)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(row.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        let seeds: Vec<(f64, f64)> = records
            .iter()
            .filter(|r| &r.label() == row)
            .map(|r| (r.label_fraction, r.test_accuracy))
            .collect();
        chart.draw_series(seeds.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_curves(
    path: &Path,
    curves: &[(String, PathBuf)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut series = Vec::new();
    for (name, dir) in curves {
        let m = pretext_trainer::metrics::read_metrics(&dir.join(pretext_trainer::METRICS_FILE))?;
        // Moving average over 10 steps: single batches are noisy.
        let pts: Vec<(f64, f64)> = (0..m.len())
            .map(|i| {
                let w = &m[i.saturating_sub(9)..=i];
                (
                    m[i].step as f64,
                    w.iter().map(|s| s.loss).sum::<f64>() / w.len() as f64,
                )
            })
            .collect();
        series.push((name.clone(), pts));
    }
    let max_step = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0, f64::max);
    let max_loss = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Pretraining loss (41-way cross-entropy, 10-step mean)",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0f64..max_step,
            0f64..(max_loss * 1.05).max(41f64.ln() * 1.05),
        )?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 41f64.ln()), (max_step, 41f64.ln())],
            BLACK.mix(0.4),
        ))?
        .label("uniform guess (ln 41)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = COLORS[(i + 1) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Plots and the table for the demo: the accuracy plot only.
pub fn demo_plots(out: &Path, records: &[Record]) -> Result<Vec<String>, String> {
    write_plots(out, records, &[])
}

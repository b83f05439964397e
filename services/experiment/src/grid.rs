//! The grid of an experiment: its settings ([`Grid`], the fine-tuning
//! [`Budget`]), and [`run_grid`], which runs every pretraining run, every
//! fine-tuning and probe run and the classical baselines.

use std::path::PathBuf;
use std::time::Instant;

use pretext_core::bucket::BucketConfig;
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::ValidationConfig;
use pretext_datasets::sample::write_train_sample;
use pretext_datasets::trivial::RunStats;
use pretext_finetune::{
    Baseline, FinetuneConfig, LabeledData, Pretrained, ProbeCache, run_baseline, run_on_with,
};
use pretext_model::{AdamWConfig, ModelConfig};
use pretext_pipeline::PretrainSpec;
use pretext_trainer::metrics::{TaskScore, read_metrics};

use crate::record::fraction_label;
use crate::record::{Protocol, Record};
use crate::report::PretrainRun;
use crate::{Context, pretrain};

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
pub fn run_grid(grid: &Grid) -> crate::Result<Outcome> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_of_the_data_gets_the_steps_of_all_of_it() {
        assert_eq!(epochs_at(1, 1.0), 1);
        assert_eq!(epochs_at(2, 1.0), 2);
        assert_eq!(epochs_at(1, 0.1), 10);
        assert_eq!(epochs_at(1, 0.3), 4); // 3.33 rounded up
        assert_eq!(epochs_at(3, 0.5), 6);
        assert_eq!(epochs_at(1, 0.25), 4);
    }
}

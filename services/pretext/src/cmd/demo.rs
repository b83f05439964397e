//! `pretext demo`: the main job end to end on a small synthetic dataset:
//! generate, validate, measure the floor, then the few-label grid of
//! `pretext experiment` (publish batches and pretrain through the transport,
//! in-process by default, audited; fine-tune and probe from each encoder and
//! from none; the classical baselines; several label fractions and seeds),
//! and print the table with intervals and the verdicts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pretext_core::input::{ValidatingReader, discover};
use pretext_core::report::validate_paths;
use pretext_core::split::Split;
use pretext_core::validate::{IdRegistry, ValidationConfig};
use pretext_datasets::floor::{features, histogram_floor};
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_pipeline::PretrainSpec;

use pretext_experiment::{
    Budget, Grid, Protocol, markdown_table, parse_fraction, run_grid, write_outputs,
};

/// Arguments of `pretext demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where data, runs and the report go.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// `memory` (in-process, the default) or `amqp://…`.
    #[arg(long, env = "PRETEXT_BROKER", default_value = "memory")]
    pub broker: String,
    /// Sequences in the synthetic dataset.
    #[arg(long, default_value_t = 600)]
    pub sequences: usize,
    /// Longest sequence (the contract allows 30720; kept small so the demo
    /// runs in minutes on a laptop CPU).
    #[arg(long, default_value_t = 4096)]
    pub max_len: usize,
    /// Pretraining epochs (fresh masks each). One keeps the demo within 10
    /// minutes on 2 cores (426 s measured) and still shows the few-label
    /// gain; two took 790 s.
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Data-parallel pretraining ranks: more than 1 starts that many
    /// `pretext train` processes that all-reduce gradients over c10d (Gloo
    /// on CPU) and consume the batches this process publishes; needs
    /// `--broker amqp://…`.
    #[arg(long, default_value_t = 1)]
    pub trainers: usize,
    /// Fine-tuning passes over the labeled subset (each start gets the same budget).
    #[arg(long, default_value_t = 4)]
    pub finetune_epochs: u32,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seeds of the grid (each re-draws pretraining, subset, head, batch order).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Fractions of the labeled train rows (`1/class`: one row per class).
    #[arg(long, value_delimiter = ',', value_parser = parse_fraction, default_value = "1/class,0.1,1")]
    pub label_fractions: Vec<f64>,
    #[command(flatten)]
    pub targets: pretext_producer::cli::TargetArgs,
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    anyhow::ensure!(args.trainers >= 1, "--trainers must be at least 1");
    anyhow::ensure!(
        args.trainers == 1 || args.broker != "memory",
        "--trainers {} runs ranks as processes, which meet on a broker: add --broker amqp://…",
        args.trainers
    );
    let data = args.out.join("data");
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    let synth = SynthConfig {
        sequences: args.sequences,
        max_len: args.max_len,
        seed: args.seed,
        rows_per_file: 200,
        ..SynthConfig::default()
    };
    let s = generate(&synth, &data)?;
    println!(
        "1. gen-data: {} sequences, {} tokens in {} files under {}",
        s.rows,
        s.tokens,
        s.files.len(),
        data.display()
    );

    let vcfg = ValidationConfig {
        max_len: args.max_len,
        ..ValidationConfig::default()
    };
    let reports = validate_paths(
        std::slice::from_ref(&data),
        vcfg,
        Some(&args.out.join(pretext_core::input::QUARANTINE_DIR)),
        2,
    )?;
    let (valid, rejected): (u64, u64) = reports
        .iter()
        .fold((0, 0), |(v, r), f| (v + f.valid, r + f.rejected_total()));
    println!("2. validate: {valid} valid rows, {rejected} rejected");

    let floor = describe(&data, vcfg)?;
    println!(
        "3. floor: histogram + length classifier {:.1}% on test with every label (majority class {:.1}%, chance {:.1}%)",
        100.0 * floor.accuracy,
        100.0 * floor.majority_accuracy,
        100.0 * floor.chance
    );

    // 4-6. The few-label grid: pretraining through the transport (audited),
    // fine-tuning and probing from each encoder and from none, and the
    // classical baselines, at several label fractions and seeds.
    let (mask, stats) = args.targets.resolve(std::slice::from_ref(&data), vcfg)?;
    pretext_experiment::print_targets(&mask, stats.as_ref());
    let grid = Grid {
        data: vec![data.clone()],
        out: args.out.clone(),
        label_fractions: args.label_fractions.clone(),
        pretrain_fractions: vec![1.0],
        protocols: vec![Protocol::Finetune, Protocol::Probe],
        seeds: args.seeds,
        spec: PretrainSpec {
            broker: args.broker.clone(),
            epochs: args.epochs,
            width: args.model.width(),
            depth: args.model.depth,
            threads: args.model.threads(),
            seed: args.seed,
            mask,
        },
        ranks: args.trainers,
        budget: Budget {
            epochs: args.finetune_epochs,
            min_steps: 40,
            max_steps: None,
            evals: 4,
            lr: 2e-3,
            train_crop: Some(1024),
            width: args.model.width(),
            depth: args.model.depth,
            threads: args.model.threads(),
            validation: vcfg,
        },
        run_stats: stats,
        reuse_pretrained: false,
        ns: "demo".into(),
    };
    let outcome = run_grid(&grid)?;
    for run in &outcome.runs {
        println!(
            "pretrain {} seed {}: {} steps, token accuracy {:.1}% against copy-previous {:.1}%, copy-nearest {:.1}%, most-frequent {:.1}%",
            run.task,
            run.seed,
            run.steps,
            100.0 * run.score.accuracy,
            100.0 * run.score.trivial.copy_previous,
            100.0 * run.score.trivial.copy_nearest,
            100.0 * run.score.trivial.most_frequent
        );
    }
    write_outputs(&grid, &outcome, "pretext demo")?;
    let summary = pretext_experiment::stats::summarise(&outcome.records);
    println!("\n{}", markdown_table(&outcome.records));
    println!("{}", pretext_experiment::report::comparison_table(&summary));
    println!("{}", pretext_experiment::report::verdict_line(&summary));
    println!("report: {}", args.out.join("report.md").display());
    println!(
        "done in {:.0} s; everything is under {}",
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The histogram floor on labeled train → test.
fn describe(
    data: &Path,
    vcfg: ValidationConfig,
) -> anyhow::Result<pretext_datasets::floor::FloorReport> {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut ids = IdRegistry::default();
    for f in discover(&[data.to_path_buf()])? {
        let mut r = ValidatingReader::open(&f, vcfg, None, None)?;
        while let Some(c) = r.next_chunk(&mut ids)? {
            for row in c.verdict.rows {
                if let Some(l) = row.label.clone() {
                    match row.split {
                        Split::Train => train.push((features(&row.values), l)),
                        Split::Test => test.push((features(&row.values), l)),
                        Split::Valid => {}
                    }
                }
            }
        }
    }
    Ok(histogram_floor(&train, &test))
}

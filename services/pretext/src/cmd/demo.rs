//! `pretext demo`: the main job end to end on a small synthetic dataset:
//! generate, validate, measure the floor, publish batches and pretrain
//! through the transport (in-process by default), audit, fine-tune from
//! each pretraining run and from none, and report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pretext_core::floor::{features, histogram_floor};
use pretext_core::input::{ValidatingReader, discover};
use pretext_core::report::validate_paths;
use pretext_core::split::Split;
use pretext_core::synth::{SynthConfig, generate};
use pretext_core::task::Task;
use pretext_core::trivial::trivial_accuracy;
use pretext_core::validate::{IdRegistry, ValidationConfig};
pub use pretext_trainer::in_process::{PretrainSpec, pretrain_with};

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
    /// Pretraining epochs (fresh masks each).
    #[arg(long, default_value_t = 2)]
    pub epochs: u32,
    /// Model width.
    #[arg(long, default_value_t = 64)]
    pub width: i64,
    /// Residual blocks.
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// libtorch threads (of each rank with `--trainers`).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Data-parallel pretraining ranks: more than 1 starts that many
    /// `pretext train` processes that all-reduce gradients over c10d (Gloo
    /// on CPU) and consume the batches this process publishes; needs
    /// `--broker amqp://…`.
    #[arg(long, default_value_t = 1)]
    pub trainers: usize,
    /// Fine-tuning passes over the labeled train rows (each start gets the same budget).
    #[arg(long, default_value_t = 4)]
    pub finetune_epochs: u32,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

    let (floor, trivial) = describe(&data, vcfg)?;
    println!(
        "3. floor: histogram + length classifier {:.1}% on test (chance {:.1}%); trivial token predictors: most frequent {:.1}%, copy neighbour {:.1}%",
        100.0 * floor.accuracy,
        100.0 * floor.chance,
        100.0 * trivial.most_frequent,
        100.0 * trivial.copy_neighbour
    );

    let rt = tokio::runtime::Runtime::new()?;
    for task in [Task::Masked, Task::Next] {
        let run_dir = args.out.join(format!("pretrain-{task}"));
        let steps = rt.block_on(pretrain(&args, &data, &run_dir, task, vcfg))?;
        let audit = pretext_trainer::audit::audit(&run_dir)?;
        let last = last_metrics(&run_dir)?;
        println!(
            "4. pretrain {task} ({} rank{}): {steps} steps, token accuracy {:.1}% (last 10 steps), audit: published {} applied {} missing {} applied twice {}",
            args.trainers,
            if args.trainers == 1 { "" } else { "s" },
            100.0 * last,
            audit.published,
            audit.applied,
            audit.missing,
            audit.applied_twice
        );
        anyhow::ensure!(
            audit.missing == 0 && audit.applied_twice == 0,
            "audit failed for {task}"
        );
    }
    // 5. Fine-tune from each pretraining run and from none (the baseline),
    // on every labeled train row the dataset has, with one equal budget.
    let budget = super::experiment::Budget {
        epochs: args.finetune_epochs,
        min_steps: 40,
        evals: 4,
        lr: 2e-3,
        train_crop: Some(1024),
        width: args.width,
        depth: args.depth,
        threads: args.threads,
        validation: vcfg,
    };
    let labeled = pretext_finetune::LabeledData::load(std::slice::from_ref(&data), vcfg)?;
    let mut records = Vec::new();
    for method in ["masked", "next", "none"] {
        for probe in [false, true] {
            let pretrained = match method {
                "none" => pretext_finetune::Pretrained::None,
                m => pretext_finetune::Pretrained::Run(args.out.join(format!("pretrain-{m}"))),
            };
            let protocol = if probe { "probe" } else { "finetune" };
            let mut cfg = budget.config(
                std::slice::from_ref(&data),
                pretrained,
                1.0,
                args.seed,
                args.out.join(format!("{protocol}-{method}")),
            );
            cfg.freeze_encoder = probe;
            let r = pretext_finetune::run_on(&cfg, &labeled)?;
            let rec = super::experiment::Record::new(
                method,
                if method == "none" { 0.0 } else { 1.0 },
                &r,
            );
            println!(
                "5. {:<13} {} labeled train rows, {} steps, test accuracy {:.1}%, macro-F1 {:.3} ({:.0} s)",
                format!("{}:", rec.label()),
                r.train_rows,
                r.steps,
                100.0 * r.test.accuracy,
                r.test.macro_f1,
                r.seconds
            );
            records.push(rec);
        }
    }
    let table = super::experiment::markdown_table(&records);
    println!("\n{table}");
    let plots = super::experiment::demo_plots(&args.out, &records);
    let mut report = format!(
        "# pretext demo\n\n{} sequences (max length {}), {} labeled train rows, {} test rows; \
         histogram + length floor {:.1}% (chance {:.1}%). Pretraining: {} epochs, width {}, depth {}. \
         Fine-tuning: every labeled train row, crops of 1024 steps, the same budget for each start; \
         `probe` rows train only a linear head on the frozen encoder (`none probe`: a random one).\n\n\
         ## Test accuracy and macro-F1\n\n{table}\n",
        args.sequences,
        args.max_len,
        labeled.train.len(),
        labeled.test.len(),
        100.0 * floor.accuracy,
        100.0 * floor.chance,
        args.epochs,
        args.width,
        args.depth
    );
    if let Ok(files) = &plots {
        for f in files {
            report += &format!("![{f}]({f})\n");
        }
    }
    std::fs::write(args.out.join("report.md"), report)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&records)?,
    )?;
    println!("report: {}", args.out.join("report.md").display());
    println!(
        "done in {:.0} s; everything is under {}",
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The histogram floor on labeled train → test, and the trivial token
/// predictors on train rows.
fn describe(
    data: &Path,
    vcfg: ValidationConfig,
) -> anyhow::Result<(
    pretext_core::floor::FloorReport,
    pretext_core::trivial::TrivialAccuracy,
)> {
    let (mut train, mut test, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
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
                if row.split == Split::Train {
                    seqs.push(row.values);
                }
            }
        }
    }
    let trivial = trivial_accuracy(seqs.iter().map(Vec::as_slice));
    Ok((histogram_floor(&train, &test), trivial))
}

async fn pretrain(
    args: &Args,
    data: &Path,
    run_dir: &Path,
    task: Task,
    vcfg: ValidationConfig,
) -> anyhow::Result<u64> {
    let spec = PretrainSpec {
        broker: args.broker.clone(),
        epochs: args.epochs,
        width: args.width,
        depth: args.depth,
        threads: args.threads,
        seed: args.seed,
    };
    let ns = format!("demo-{task}-{}", std::process::id());
    if args.trainers == 1 {
        return Ok(pretrain_with(&spec, data, run_dir, task, vcfg, &ns)
            .await?
            .step);
    }
    pretrain_ranks(&spec, args.trainers, data, run_dir, task, vcfg, &ns).await
}

/// Publishes from this process and pretrains in `ranks` data-parallel
/// `pretext train` processes (as `pretext launch` starts them); returns
/// the step of the run's final checkpoint.
async fn pretrain_ranks(
    spec: &PretrainSpec,
    ranks: usize,
    data: &Path,
    run_dir: &Path,
    task: Task,
    vcfg: ValidationConfig,
    ns: &str,
) -> anyhow::Result<u64> {
    let transport = pretext_mq::connect(&spec.broker, pretext_mq::RabbitConfig::default()).await?;
    let producer = spec.producer_config(vec![data.to_path_buf()], run_dir, task, vcfg, ns);
    let t = spec.trainer_config(run_dir, task, ns);
    let port = pretext_dist::free_port().context("a free port for the rendezvous store")?;
    let exe = std::env::current_exe().context("locating the pretext binary")?;
    let mut children = Vec::new();
    for rank in 0..ranks {
        let child = tokio::process::Command::new(&exe)
            .arg("train")
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--task", &task.to_string(), "--ns", ns])
            .args(["--width", &t.model.width.to_string()])
            .args(["--depth", &t.model.depth.to_string()])
            .args(["--threads", "1", "--seed", &t.seed.to_string()])
            .args(["--lr", &t.optimizer.lr.to_string()])
            .args(["--warmup-steps", &t.optimizer.warmup_steps.to_string()])
            .args(["--checkpoint-every", &t.checkpoint_every.to_string()])
            .args(["--device", "cpu"])
            // The URL (it may hold a password) goes by environment, not argv.
            .env("PRETEXT_BROKER", &spec.broker)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("WORLD_SIZE", ranks.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env_remove("PRETEXT_METRICS_ADDR")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push(child);
    }
    let produce = pretext_producer::run(producer, transport.clone(), std::future::pending());
    let wait = async {
        let mut statuses = Vec::new();
        for c in &mut children {
            statuses.push(c.wait().await);
        }
        statuses
    };
    let (produced, statuses) = tokio::join!(produce, wait);
    produced?;
    for (rank, status) in statuses.into_iter().enumerate() {
        let status = status?;
        anyhow::ensure!(status.success(), "rank {rank} failed: {status}");
    }
    pretext_mq::Topology::new(ns).delete(&*transport).await?;
    let last = pretext_model::latest_checkpoint(&run_dir.join("checkpoints"))?
        .context("the ranks left no checkpoint")?;
    let state: pretext_model::CheckpointState = pretext_model::read_checkpoint_state(&last)?;
    Ok(state.step)
}

/// Mean token accuracy of the last 10 steps in `metrics.jsonl`.
pub fn last_metrics(run_dir: &Path) -> anyhow::Result<f64> {
    let m = pretext_trainer::metrics::read_metrics(&run_dir.join("metrics.jsonl"))?;
    let tail = &m[m.len().saturating_sub(10)..];
    Ok(tail.iter().map(|s| s.accuracy).sum::<f64>() / tail.len().max(1) as f64)
}

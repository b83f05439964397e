//! `pretext-bench checkpoint`: the time to write one trainer checkpoint when
//! the run has already applied N batches, with the ledger of applied ids
//! (what the trainer does) and, in the same invocation, with every earlier id
//! copied into `state.json` (what it did before the ledger), so the two
//! designs are compared on the same disk and model.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use pretext_core::task::Task;
use pretext_model::tch::Device;
use pretext_model::{AdamW, AdamWConfig, CheckpointState, ModelConfig, PretrainModel};
use pretext_trainer::checkpoints::{TrainingState, append_ledger, write_checkpoint};
use serde_json::json;

/// Arguments of `pretext-bench checkpoint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batches applied before the timed checkpoint (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub applied: Vec<usize>,
    /// Batches the timed checkpoint itself applied.
    #[arg(long, default_value_t = 64)]
    pub per_checkpoint: usize,
    /// Timed checkpoints per size and design (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Model width.
    #[arg(long, default_value_t = 64)]
    pub width: i64,
    /// Residual blocks.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
}

/// A batch id as producers make them (a 64-hex-digit hash).
fn id(i: usize) -> String {
    format!("{i:064x}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark; prints one JSON line per size and a table.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1");
    let cfg = ModelConfig {
        width: a.width,
        depth: a.depth,
        ..ModelConfig::default()
    };
    let model = PretrainModel::new(&cfg, Device::Cpu)?;
    let opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let tmp = std::env::temp_dir().join(format!("pretext-bench-checkpoint-{}", std::process::id()));
    let result = sizes(&a, &cfg, &model, &opt, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn sizes(
    a: &Args,
    cfg: &ModelConfig,
    model: &PretrainModel,
    opt: &AdamW,
    tmp: &Path,
) -> anyhow::Result<ExitCode> {
    let cfg = *cfg;
    let mut rows = Vec::new();
    for &n in &a.applied {
        let earlier: Vec<String> = (0..n).map(id).collect();
        let state = |step: u64, earlier_applied: BTreeMap<u64, Vec<String>>| {
            let mut s = CheckpointState::new(
                step,
                cfg,
                TrainingState {
                    task: Task::Masked,
                    seed: 0,
                    optimizer: AdamWConfig::default(),
                    tokens_seen: 0,
                    earlier_applied,
                    members: Vec::new(),
                },
            );
            s.applied_batch_ids = (n + step as usize * a.per_checkpoint..)
                .take(a.per_checkpoint)
                .map(id)
                .collect();
            s
        };
        let time =
            |dir: &Path, earlier_applied: BTreeMap<u64, Vec<String>>| -> anyhow::Result<f64> {
                let mut secs = Vec::new();
                for r in 0..a.repeats {
                    let s = state(1 + r as u64, earlier_applied.clone());
                    let t = Instant::now();
                    write_checkpoint(dir, model.var_store(), opt, &s, 2)?;
                    secs.push(t.elapsed().as_secs_f64());
                }
                Ok(median(secs))
            };
        // The ledger: the earlier ids are in its lines, not in the checkpoint.
        let ledger_dir = tmp.join(format!("ledger-{n}"));
        std::fs::create_dir_all(&ledger_dir)?;
        let segments: Vec<(u64, &[String])> = earlier
            .chunks(a.per_checkpoint.max(1))
            .enumerate()
            .map(|(k, c)| (1_000_000 + k as u64, c))
            .collect();
        append_ledger(&ledger_dir, &segments)?;
        let ledger = time(&ledger_dir, BTreeMap::new())?;
        // Before the ledger: every checkpoint carried every earlier id.
        let copy_dir = tmp.join(format!("copy-{n}"));
        let copied = time(
            &copy_dir,
            earlier
                .chunks(a.per_checkpoint.max(1))
                .enumerate()
                .map(|(k, c)| (k as u64, c.to_vec()))
                .collect(),
        )?;
        let row = json!({
            "applied": n,
            "ledger_ms": 1e3 * ledger,
            "copy_in_state_ms": 1e3 * copied,
            "ratio": copied / ledger,
        });
        println!("{row}");
        rows.push((n, ledger, copied));
    }
    println!("\n| applied before | ledger (ms) | ids copied into state.json (ms) |");
    println!("|---|---|---|");
    for (n, l, c) in rows {
        println!("| {n} | {:.1} | {:.1} |", 1e3 * l, 1e3 * c);
    }
    Ok(ExitCode::SUCCESS)
}

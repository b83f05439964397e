//! Scaling of data-parallel training on this machine: the same batches
//! trained by one process (1 thread) and by two ranks over Gloo (1 thread
//! each), against the real RabbitMQ. Ignored by default (it takes a
//! minute); run with
//! `cargo test -p pretext --test dist_scaling -- --ignored --nocapture`.
//! Prints one JSON line: throughput of each, their ratio, all-reduce time
//! per step.

#[path = "trainer_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use pretext_core::batch::{Batch, BatchRow};
use pretext_core::task::{MaskConfig, Task};
use pretext_mq::{RabbitConfig, Topology};
use pretext_trainer::metrics::metrics_file;
use pretext_trainer::read_metrics;
use support::*;

/// Batches of the benchmark.
const BATCHES: usize = 24;
/// Rows per batch and their length: 16k tokens a batch.
const ROWS: usize = 8;
const LEN: usize = 2048;
/// Runs of each configuration (the best is reported).
const REPEAT: usize = 2;

fn bench_batches() -> Vec<Batch> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..BATCHES)
        .map(|b| {
            let rows: Vec<BatchRow> = (0..ROWS)
                .map(|r| BatchRow {
                    seq_id: format!("bench-{b}-{r}"),
                    values: (0..LEN).map(|_| (next() % 41) as u8).collect(),
                    label: None,
                })
                .collect();
            Batch::build(Task::Masked, &MaskConfig::default(), 0, LEN, &rows)
        })
        .collect()
}

/// Trains `data` with `nproc` ranks (0: one plain process); returns
/// (real tokens per second of step time, steps, all-reduce seconds per step).
async fn train(nproc: usize, data: &[Batch], run_dir: &Path) -> (f64, usize, f64) {
    let url = amqp_url();
    let transport = pretext_mq::connect(&url, RabbitConfig::default())
        .await
        .expect("RabbitMQ is reachable");
    let topology = Topology::new(unique_namespace(&format!("scaling-{nproc}")));
    topology.declare(&*transport).await.expect("declare");
    publish_batches(&*transport, &topology, data).await;
    control(&*transport, &topology, plan(Task::Masked, 1)).await;
    control(&*transport, &topology, task_done("a", data)).await;
    let mut train: Vec<String> = [
        "train",
        "--broker",
        &url,
        "--ns",
        topology.namespace(),
        "--task",
        "masked",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--width",
        "64",
        "--depth",
        "4",
        // Half the batches each: the first rank to subscribe would take
        // a whole prefetch's worth.
        "--checkpoint-every",
        "12",
        "--prefetch",
        "12",
        "--seed",
        "1",
        "--run-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    train.push(run_dir.display().to_string());
    let mut args = Vec::new();
    if nproc > 0 {
        args.extend([
            "launch".to_owned(),
            "--nproc".into(),
            nproc.to_string(),
            "--".into(),
        ]);
    }
    args.extend(train);
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(&args)
        .env("PRETEXT_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("run pretext");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "training failed:\n{stdout}");
    eprintln!("{nproc} rank(s): {:?} wall\n{stdout}", start.elapsed());
    topology.delete(&*transport).await.unwrap();
    transport.close().await.unwrap();

    let metrics = read_metrics(&run_dir.join(metrics_file(0))).unwrap();
    let secs: f64 = metrics.iter().map(|m| m.step_secs).sum();
    eprintln!(
        "{nproc} rank(s): {} steps, {:.1} ms a step",
        metrics.len(),
        secs * 1000.0 / metrics.len() as f64
    );
    let tokens: u64 = data.iter().map(|b| b.stats().real_tokens).sum();
    // "rank 0/2 (all-reduce 0.123 s): ..."
    let comm = stdout
        .lines()
        .find(|l| l.starts_with("rank 0/"))
        .and_then(|l| l.split("all-reduce ").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    (
        tokens as f64 / secs,
        metrics.len(),
        comm / metrics.len() as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark of a minute; run with --ignored --nocapture"]
async fn two_ranks_against_one_process() {
    let data = bench_batches();
    // Alternated, best of each: background load hurts the two ranks more.
    let (mut one, mut one_steps, mut two, mut two_steps, mut comm) = (0.0, 0, 0.0, 0, 0.0);
    for _ in 0..REPEAT {
        let dir = tempfile::tempdir().unwrap();
        let (tps, steps, _) = train(0, &data, dir.path()).await;
        if tps > one {
            (one, one_steps) = (tps, steps);
        }
        let dir = tempfile::tempdir().unwrap();
        let (tps, steps, c) = train(2, &data, dir.path()).await;
        if tps > two {
            (two, two_steps, comm) = (tps, steps, c);
        }
    }
    let report = serde_json::json!({
        "batches": BATCHES,
        "tokens_per_batch": ROWS * LEN,
        "model": "width 64, depth 4",
        "one_process_tokens_per_s": one.round(),
        "one_process_steps": one_steps,
        "two_ranks_tokens_per_s": two.round(),
        "two_ranks_steps": two_steps,
        "ratio": (two / one * 100.0).round() / 100.0,
        "allreduce_ms_per_step": (comm * 1e4).round() / 10.0,
    });
    println!("{report}");
}

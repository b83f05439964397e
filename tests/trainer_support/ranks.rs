//! Trainer processes for the data-parallel tests: the `pretext train`
//! arguments they share, starting and awaiting ranks, the audit, each
//! step's batches from the ranks' metrics, and the check that a group's
//! checkpoints hold what one process stepping on the union of each step's
//! batches would.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pretext_core::batch::{Batch, decode};
use pretext_model::tch::{Device, Tensor};
use pretext_model::{CheckpointState, list_checkpoints, read_checkpoint_state};
use pretext_mq::{SharedTransport, Topology};
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::metrics::metrics_file;
use pretext_trainer::step::{Learner, StepBatch, apply, backward};
use pretext_trainer::{TrainingState, read_metrics};

use super::{control, manifest, publish_batches, task_done};

/// The `train` arguments shared by every run of these tests: a tiny model
/// on one thread, every checkpoint kept, collectives failing after
/// `dist_timeout` seconds.
pub fn train_args(
    url: &str,
    ns: &str,
    run_dir: &Path,
    dist_timeout: u64,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--broker", url, "--ns", ns, "--run-dir"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(run_dir.display().to_string());
    for a in [
        "--task",
        "masked",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--width",
        "16",
        "--depth",
        "2",
        "--warmup-steps",
        "2",
        "--lr",
        "0.003",
        "--seed",
        "1",
        "--keep-checkpoints",
        "0",
        "--dist-timeout",
    ] {
        args.push(a.to_owned());
    }
    args.push(dist_timeout.to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// `pretext ARGS`, logging JSON at info to `log`.
pub fn pretext(args: &[String], log: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(args)
        .env("PRETEXT_LOG", "info")
        .env("PRETEXT_LOG_JSON", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// Waits for `child` to exit; kills it and fails with its log after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, log: &Path) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "did not exit within {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes one planned task of `data` with its manifest.
pub async fn publish_task(
    transport: &SharedTransport,
    topology: &Topology,
    run_dir: &Path,
    id: &str,
    data: &[Batch],
) {
    publish_batches(&**transport, topology, data).await;
    manifest(run_dir, id, data);
    control(&**transport, topology, task_done(id, data)).await;
}

/// `pretext audit --json RUN_DIR`.
pub fn audit(run_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["audit", "--json"])
        .arg(run_dir)
        .output()
        .expect("run pretext audit");
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("audit --json prints JSON")
}

/// Each step's batch ids, in rank order, from the metrics of ranks below
/// `world` ("" where a rank had none).
pub fn steps_by_rank(run_dir: &Path, world: usize) -> BTreeMap<u64, Vec<String>> {
    let mut steps: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in 0..world {
        let path = run_dir.join(metrics_file(r));
        if !path.exists() {
            continue;
        }
        for m in read_metrics(&path).unwrap() {
            let ids = steps.entry(m.step).or_default();
            ids.resize(world, String::new());
            ids[r] = m.batch_id;
        }
    }
    steps
}

/// Batches applied so far, by the ranks' metrics.
pub fn applied_steps(run_dir: &Path, world: usize) -> usize {
    steps_by_rank(run_dir, world)
        .values()
        .map(|ids| ids.iter().filter(|id| !id.is_empty()).count())
        .sum()
}

/// The run's checkpoints, by step.
pub fn checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    list_checkpoints(&checkpoint_dir(run_dir)).unwrap()
}

/// The world size each checkpoint records, in step order.
pub fn checkpoint_world_sizes(run_dir: &Path) -> Vec<usize> {
    checkpoints(run_dir)
        .iter()
        .map(|(_, path)| {
            read_checkpoint_state::<TrainingState>(path)
                .unwrap()
                .world_size
        })
        .collect()
}

/// `sizes` with runs of one value made one.
pub fn changes(sizes: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &s in sizes {
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

/// Replays `steps` (each step's batch ids) in one process from the first
/// checkpoint's settings, summing each step's gradients and dividing by
/// the step's loss tokens, and checks every checkpoint's parameters
/// against it (within 1e-5); returns the largest difference.
pub fn one_process_on_the_unions(
    run_dir: &Path,
    data: &[Batch],
    steps: &BTreeMap<u64, Vec<String>>,
) -> f64 {
    let checkpoints = checkpoints(run_dir);
    let (_, first) = &checkpoints[0];
    let state: CheckpointState<TrainingState> = read_checkpoint_state(first).unwrap();
    let mut reference = Learner::fresh(
        &state.model,
        state.training.optimizer,
        state.training.seed,
        Device::Cpu,
        Some(1),
    )
    .unwrap();
    let by_id: HashMap<String, Batch> = data.iter().map(|b| (b.message_id(), b.clone())).collect();
    let at: HashMap<u64, PathBuf> = checkpoints.iter().cloned().collect();
    let mut worst = 0.0f64;
    for (&step, ids) in steps {
        let mut sum: Option<Vec<Tensor>> = None;
        let mut count = 0;
        for id in ids.iter().filter(|id| !id.is_empty()) {
            let batch = decode(by_id[id].encode(None)).unwrap();
            let sb = StepBatch::from_decoded(&batch).unwrap();
            let local = backward(&reference.model, &mut reference.optimizer, &sb).unwrap();
            count += local.count;
            let grads: Vec<Tensor> = local.grads.iter().map(Tensor::copy).collect();
            sum = Some(match sum {
                None => grads,
                Some(s) => s.iter().zip(&grads).map(|(a, b)| a + b).collect(),
            });
        }
        let stats = apply(&mut reference.optimizer, &sum.unwrap(), count).unwrap();
        assert_eq!(stats.step, step);
        if let Some(path) = at.get(&step) {
            let saved: HashMap<String, Tensor> =
                Tensor::read_safetensors(path.join("model.safetensors"))
                    .unwrap()
                    .into_iter()
                    .collect();
            for (name, p) in reference
                .optimizer
                .parameter_names()
                .iter()
                .zip(reference.optimizer.parameters())
            {
                let diff = (&saved[name] - p).abs().max().double_value(&[]);
                worst = worst.max(diff);
                assert!(diff < 1e-5, "step {step}, {name}: differs by {diff}");
            }
        }
    }
    worst
}

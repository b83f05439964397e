//! The `pretext train` binary against the real RabbitMQ (AMQP_URL, default the local guest broker): killed with SIGKILL mid-run after a checkpoint and restarted, it still applies every published batch exactly once, as `pretext audit` confirms. Fails if the broker is unreachable.

#[path = "trainer_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pretext_core::task::Task;
use pretext_model::{list_checkpoints, read_checkpoint_state};
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::{METRICS_FILE, read_metrics};
use support::*;

fn trainer(url: &str, ns: &str, run_dir: &Path, log: &str) -> Child {
    let log = std::fs::File::create(run_dir.join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["train", "--broker", url, "--ns", ns, "--run-dir"])
        .arg(run_dir)
        .args([
            "--task",
            "masked",
            "--checkpoint-every",
            "5",
            "--threads",
            "1",
            "--device",
            "cpu",
        ])
        .args([
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
        ])
        .env("PRETEXT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start pretext train")
}

fn steps_done(run_dir: &Path) -> usize {
    let path = run_dir.join(METRICS_FILE);
    if path.exists() {
        read_metrics(&path).unwrap().len()
    } else {
        0
    }
}

fn wait_for(what: &str, run_dir: &Path, child: &mut Child, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(run_dir.join("train-1.log")).unwrap_or_default();
            panic!("trainer exited ({status}) before {what}:\n{log}");
        }
        assert!(start.elapsed() < STEP, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the trainer to exit by itself; its log on failure.
fn wait_exit(run_dir: &Path, child: &mut Child, log: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > STEP {
            let log = std::fs::read_to_string(run_dir.join(log)).unwrap_or_default();
            panic!("the trainer did not exit:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_and_restarted_applies_every_batch_exactly_once() {
    let url = amqp_url();
    let (transport, topology, mut cleanup) = broker("broker").await;
    let run_dir = tempfile::tempdir().unwrap();
    let run_dir = run_dir.path();
    let data = batches(Task::Masked, "k", 24);
    let (first, second) = data.split_at(12);

    // The first task's batches only: the trainer applies them and then waits
    // for the second task, holding the batches after its last checkpoint.
    publish_batches(&*transport, &topology, first).await;
    manifest(run_dir, "a", first);
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    control(&*transport, &topology, task_done("a", first)).await;
    let child = cleanup.keep_mut(trainer(&url, topology.namespace(), run_dir, "train-1.log"));
    wait_for("12 steps and a checkpoint", run_dir, child, || {
        steps_done(run_dir) >= 12
            && !list_checkpoints(&checkpoint_dir(run_dir))
                .unwrap()
                .is_empty()
    });
    child.kill().expect("SIGKILL the trainer");
    child.wait().unwrap();
    let (step, _) = list_checkpoints(&checkpoint_dir(run_dir))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        step, 10,
        "checkpoints every 5 steps; steps 11 and 12 were not checkpointed"
    );

    publish_batches(&*transport, &topology, second).await;
    manifest(run_dir, "b", second);
    control(&*transport, &topology, task_done("b", second)).await;
    let child = cleanup.keep_mut(trainer(&url, topology.namespace(), run_dir, "train-2.log"));
    let status = wait_exit(run_dir, child, "train-2.log");
    let log = std::fs::read_to_string(run_dir.join("train-2.log")).unwrap_or_default();
    assert!(
        status.success(),
        "restarted trainer failed ({status}):\n{log}"
    );

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
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("audit --json prints JSON");
    assert_eq!(
        report,
        serde_json::json!({"published": 24, "applied": 24, "missing": 0, "applied_twice": 0, "dead": []})
    );

    // One step per batch: the redelivered steps 11 and 12 were redone once,
    // nothing else twice.
    let (step, last) = list_checkpoints(&checkpoint_dir(run_dir))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(step, 24);
    let state: pretext_model::CheckpointState = read_checkpoint_state(&last).unwrap();
    assert_eq!(state.step, 24);
    let steps: Vec<u64> = read_metrics(&run_dir.join(METRICS_FILE))
        .unwrap()
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, (1..=24).collect::<Vec<_>>());
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );

    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_acks_and_exits_zero() {
    let url = amqp_url();
    let (transport, topology, mut cleanup) = broker("sigterm").await;
    let run_dir = tempfile::tempdir().unwrap();
    let run_dir = run_dir.path();
    // One of two planned tasks: the trainer would wait for more forever.
    let data = batches(Task::Masked, "t", 7);
    publish_batches(&*transport, &topology, &data).await;
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    control(&*transport, &topology, task_done("a", &data)).await;
    let child = cleanup.keep_mut(trainer(&url, topology.namespace(), run_dir, "train-1.log"));
    wait_for("7 steps", run_dir, child, || steps_done(run_dir) >= 7);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_exit(run_dir, child, "train-1.log");
    let log = std::fs::read_to_string(run_dir.join("train-1.log")).unwrap_or_default();
    assert!(
        status.success(),
        "SIGTERM must end the trainer with 0, got {status}:\n{log}"
    );
    let (step, _) = list_checkpoints(&checkpoint_dir(run_dir))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        step, 7,
        "the steps after the periodic checkpoint at 5 are checkpointed on shutdown"
    );
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0,
        "and acked"
    );
    transport.close().await.unwrap();
    drop(cleanup);
}

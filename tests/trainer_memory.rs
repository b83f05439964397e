//! The trainer over the in-process transport: it applies every published batch once, ends on its own, dead-letters bad messages, skips republished ones, and a run stopped and resumed equals a straight run.

#[path = "trainer_support/mod.rs"]
mod support;

use std::future::pending;
use std::path::Path;
use std::sync::Arc;

use pretext_core::batch::Batch;
use pretext_core::task::Task;
use pretext_model::tch::Tensor;
use pretext_model::{latest_checkpoint, read_checkpoint_state};
use pretext_mq::{MemoryTransport, OutMessage, SharedTransport, Topology, Transport};
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::{
    AuditReport, METRICS_FILE, StopReason, TrainSummary, TrainerConfig, audit, read_metrics,
    run_with_transport,
};
use support::*;

async fn declared(name: &str) -> (SharedTransport, Topology) {
    let transport: SharedTransport = Arc::new(MemoryTransport::new());
    let topology = Topology::new(unique_namespace(name));
    topology.declare(&*transport).await.expect("declare");
    (transport, topology)
}

async fn train(config: TrainerConfig, transport: &SharedTransport) -> TrainSummary {
    tokio::time::timeout(
        STEP,
        run_with_transport(config, transport.clone(), pending()),
    )
    .await
    .expect("the trainer did not end on its own")
    .expect("the trainer failed")
}

/// A v2 batch: the version string rewritten in place (same length).
fn v2_message(batch: &Batch) -> OutMessage {
    let mut bytes = batch.encode(None);
    let pos = bytes
        .windows(3)
        .position(|w| w == b"1.1")
        .expect("version string in the IPC stream");
    bytes[pos] = b'2';
    OutMessage::new("v2-batch", bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_every_batch_once_ends_on_its_own_and_dead_letters_bad_messages() {
    let run_dir = tempfile::tempdir().unwrap();
    let (transport, topology) = declared("memory").await;
    let good = batches(Task::Masked, "m", 10);
    let t: &dyn Transport = &*transport;
    publish_batches(t, &topology, &good[..4]).await;
    publish(
        t,
        &topology.pretrain(),
        OutMessage::new("garbage-1", b"this is not arrow".to_vec()),
    )
    .await;
    publish(
        t,
        &topology.pretrain(),
        v2_message(&batches(Task::Masked, "v2", 1)[0]),
    )
    .await;
    publish_batches(t, &topology, &good[4..7]).await;
    publish_batches(t, &topology, &batches(Task::Next, "wrong-task", 1)).await;
    publish_batches(t, &topology, &good[7..]).await;
    manifest(run_dir.path(), "t0", &good);
    control(t, &topology, plan(Task::Masked, 1)).await;
    control(t, &topology, task_done("t0", &good)).await;

    let config = tiny_config(topology.namespace(), run_dir.path(), 3);
    let summary = train(config.clone(), &transport).await;
    assert_eq!(summary.stop, StopReason::EndOfData);
    assert_eq!(
        (
            summary.step,
            summary.applied,
            summary.applied_total,
            summary.rejected
        ),
        (10, 10, 10, 3),
        "{summary:?}"
    );
    let report = audit(run_dir.path()).unwrap();
    assert_eq!(
        report,
        AuditReport {
            published: 10,
            applied: 10,
            missing: 0,
            applied_twice: 0,
            dead: Vec::new(),
            membership: Vec::new(),
        }
    );

    let metrics = read_metrics(&run_dir.path().join(METRICS_FILE)).unwrap();
    assert_eq!(
        metrics.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    for m in &metrics {
        assert!(m.loss.is_finite() && m.loss > 0.0, "{m:?}");
        // A single process splits its step into backward and update.
        let p = m.phases.expect("phases");
        assert!(p.backward > 0.0 && p.apply > 0.0 && p.sync == 0.0, "{p:?}");
        assert!(p.backward + p.apply <= m.step_secs, "{m:?}");
        assert!(
            (0.0..=1.0).contains(&m.accuracy) && (0.0..1.0).contains(&m.padded_fraction),
            "{m:?}"
        );
        assert!(
            (0.0..=1.0).contains(&m.data_wait_fraction) && m.tokens_per_s > 0.0 && m.lr > 0.0,
            "{m:?}"
        );
    }

    let dead = dead_letters(t, &topology, 3).await;
    let wrong_task = batches(Task::Next, "wrong-task", 1)[0].message_id();
    let garbage = dead
        .iter()
        .find(|d| d.0 == "garbage-1")
        .expect("the garbage is dead-lettered");
    assert!(garbage.1.contains("not an Arrow IPC stream"), "{garbage:?}");
    let v2 = dead
        .iter()
        .find(|d| d.0 == "v2-batch")
        .expect("the v2 batch is dead-lettered");
    assert!(v2.1.contains("unknown schema version `2.1`"), "{v2:?}");
    let wrong = dead
        .iter()
        .find(|d| d.0 == wrong_task)
        .expect("the wrong-task batch is dead-lettered");
    assert!(
        wrong.1.contains("does not match this trainer's task"),
        "{wrong:?}"
    );
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );

    // A producer retry republishes three batches with their ids: a new
    // trainer acks them without applying them again, and ends at once.
    publish_batches(t, &topology, &good[2..5]).await;
    let again = train(config, &transport).await;
    assert_eq!(
        (again.stop, again.step, again.applied, again.resumed_from),
        (StopReason::EndOfData, 10, 0, Some(10)),
        "{again:?}"
    );
    assert_eq!(again.skipped_duplicates, 3, "{again:?}");
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
    assert_eq!(audit(run_dir.path()).unwrap(), report);
}

fn final_weights(run_dir: &Path) -> Vec<(String, Tensor)> {
    let dir = latest_checkpoint(&checkpoint_dir(run_dir))
        .unwrap()
        .expect("a checkpoint");
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_and_resumed_equals_a_straight_run() {
    const N: usize = 6;
    let data = batches(Task::Masked, "r", 2 * N);
    let (first, second) = data.split_at(N);

    // Straight: 2N steps in one go.
    let straight_dir = tempfile::tempdir().unwrap();
    let (transport, topology) = declared("straight").await;
    publish_batches(&*transport, &topology, &data).await;
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    control(&*transport, &topology, task_done("a", first)).await;
    control(&*transport, &topology, task_done("b", second)).await;
    let straight = train(
        tiny_config(topology.namespace(), straight_dir.path(), 4),
        &transport,
    )
    .await;
    assert_eq!(
        (straight.stop, straight.step),
        (StopReason::EndOfData, 2 * N as u64)
    );

    // Resumed: N steps, shutdown, then N more in a new trainer.
    let split_dir = tempfile::tempdir().unwrap();
    let (transport, topology) = declared("resumed").await;
    publish_batches(&*transport, &topology, first).await;
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    control(&*transport, &topology, task_done("a", first)).await;
    manifest(split_dir.path(), "a", first);
    let config = tiny_config(topology.namespace(), split_dir.path(), 4);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let trainer = tokio::spawn(run_with_transport(
        config.clone(),
        transport.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // All N batches applied (the trainer then waits for the second task).
    let metrics = split_dir.path().join(METRICS_FILE);
    tokio::time::timeout(STEP, async {
        while !metrics.exists() || read_metrics(&metrics).unwrap().len() < N {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first N steps did not happen");
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(STEP, trainer)
        .await
        .expect("shutdown hung")
        .unwrap()
        .expect("trainer failed");
    assert_eq!(
        (stopped.stop, stopped.step, stopped.applied),
        (StopReason::Shutdown, N as u64, N as u64),
        "{stopped:?}"
    );
    // Shutdown checkpointed the steps after the periodic checkpoint and acked everything.
    let latest = latest_checkpoint(&checkpoint_dir(split_dir.path()))
        .unwrap()
        .unwrap();
    let state: pretext_model::CheckpointState = read_checkpoint_state(&latest).unwrap();
    assert_eq!(state.step, N as u64);
    assert_eq!(state.applied_batch_ids.len(), N % 4);
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );

    publish_batches(&*transport, &topology, second).await;
    control(&*transport, &topology, task_done("b", second)).await;
    manifest(split_dir.path(), "b", second);
    let resumed = train(config, &transport).await;
    assert_eq!(
        (resumed.stop, resumed.step, resumed.resumed_from),
        (StopReason::EndOfData, 2 * N as u64, Some(N as u64))
    );
    assert_eq!(
        audit(split_dir.path()).unwrap(),
        AuditReport {
            published: 2 * N as u64,
            applied: 2 * N as u64,
            missing: 0,
            applied_twice: 0,
            dead: Vec::new(),
            membership: Vec::new(),
        }
    );

    let (a, b) = (
        final_weights(straight_dir.path()),
        final_weights(split_dir.path()),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-6,
            "{na}: resumed differs from straight by {diff}"
        );
    }
    // Every step is in the metrics once, the shutdown notwithstanding.
    let m = read_metrics(&metrics).unwrap();
    assert_eq!(
        m.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=2 * N as u64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_smaller_than_the_checkpoint_interval_forces_checkpoints_instead_of_hanging() {
    let run_dir = tempfile::tempdir().unwrap();
    let (transport, topology) = declared("prefetch").await;
    let data = batches(Task::Masked, "p", 5);
    publish_batches(&*transport, &topology, &data).await;
    control(&*transport, &topology, plan(Task::Masked, 1)).await;
    control(&*transport, &topology, task_done("t", &data)).await;
    manifest(run_dir.path(), "t", &data);
    let config = TrainerConfig {
        prefetch: Some(2),
        keep_checkpoints: 0,
        ..tiny_config(topology.namespace(), run_dir.path(), 100)
    };
    let summary = train(config, &transport).await;
    assert_eq!((summary.stop, summary.step), (StopReason::EndOfData, 5));
    let steps: Vec<u64> = pretext_model::list_checkpoints(&checkpoint_dir(run_dir.path()))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        steps,
        [2, 4, 5],
        "a checkpoint whenever the held deliveries fill the prefetch"
    );
    assert_eq!(
        audit(run_dir.path()).unwrap(),
        AuditReport {
            published: 5,
            applied: 5,
            missing: 0,
            applied_twice: 0,
            dead: Vec::new(),
            membership: Vec::new(),
        }
    );
}

/// A batch of the run that a trainer rejects (here: built for another task)
/// never arrives: the run used to wait for it forever. Now it ends once
/// every other batch is applied, with an error naming the batch and why,
/// and the audit lists it. A stray message that dies too is not the run's
/// and does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_of_the_run_ends_it_with_an_error_that_names_it() {
    let run_dir = tempfile::tempdir().unwrap();
    let (transport, topology) = declared("dead-batch").await;
    let t: &dyn Transport = &*transport;
    let good = batches(Task::Masked, "m", 5);
    let wrong = batches(Task::Next, "wrong-task", 1);
    let all: Vec<Batch> = good.iter().chain(&wrong).cloned().collect();
    publish_task_batches(t, &topology, "t0", &good[..2]).await;
    publish(
        t,
        &topology.pretrain(),
        OutMessage::new("stray", b"not arrow".to_vec()),
    )
    .await;
    publish_task_batches(t, &topology, "t0", &wrong).await;
    publish_task_batches(t, &topology, "t0", &good[2..]).await;
    manifest(run_dir.path(), "t0", &all);
    control(t, &topology, plan(Task::Masked, 1)).await;
    control(t, &topology, task_done("t0", &all)).await;

    let config = tiny_config(topology.namespace(), run_dir.path(), 2);
    let err = tokio::time::timeout(
        STEP,
        run_with_transport(config, transport.clone(), pending()),
    )
    .await
    .expect("the run waited for the dead batch")
    .expect_err("the run ended quietly without a batch");
    let dead_id = wrong[0].message_id();
    let text = err.to_string();
    assert!(
        text.contains(&dead_id) && text.contains("does not match this trainer's task"),
        "{text}"
    );
    assert!(!text.contains("stray"), "{text}");
    let report = audit(run_dir.path()).unwrap();
    assert_eq!(
        (report.published, report.applied, report.missing),
        (6, 5, 1)
    );
    assert_eq!(report.dead.len(), 1, "{report:?}");
    assert_eq!(report.dead[0].id, dead_id);
    assert!(report.dead[0].reason.contains("task"), "{report:?}");
    // Every applied batch is acked: nothing waits in the queue.
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
}

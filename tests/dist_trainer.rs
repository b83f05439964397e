//! Data-parallel `pretext train` over Gloo on 127.0.0.1 against the real
//! RabbitMQ (AMQP_URL, default the local guest broker; fails if it is
//! unreachable): two ranks end every checkpoint with identical parameters,
//! equal to one process stepping on the union of each step's batches;
//! uneven data ends cleanly; a killed rank makes the other fail within the
//! timeout, and a restart of both applies every batch exactly once.

#[path = "trainer_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use pretext_core::task::Task;
use pretext_model::{CheckpointState, list_checkpoints, read_checkpoint_state};
use pretext_trainer::TrainingState;
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::metrics::metrics_file;
use support::ranks::*;
use support::*;

/// Collective timeout given to the ranks.
const DIST_TIMEOUT: u64 = 10;
/// Longest a whole run may take.
const RUN: Duration = Duration::from_secs(180);

/// Rank `rank` of `world`, started directly (as torchrun would).
fn rank(args: &[String], port: u16, rank: usize, world: usize, log: &Path) -> Child {
    pretext(args, log)
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .spawn()
        .expect("start a rank")
}

/// `(step, rank, params_hash)` of every "checkpoint written" line in `log`.
fn checkpoint_hashes(log: &Path) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "checkpoint written")
        .filter_map(|v| {
            let f = &v["fields"];
            Some((
                f["step"].as_u64()?,
                f["rank"].as_u64()?,
                f["params_hash"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ranks_match_one_process_on_the_union_of_their_batches() {
    let (transport, topology, mut cleanup) = broker("dp-equal").await;
    let run_dir = tempfile::tempdir().unwrap();
    let run_dir = run_dir.path();
    let data = batches(Task::Masked, "dp", 16);
    control(&*transport, &topology, plan(Task::Masked, 1)).await;
    publish_task(&transport, &topology, run_dir, "a", &data).await;

    // A small prefetch spreads the batches over both ranks.
    let args = train_args(
        &amqp_url(),
        topology.namespace(),
        run_dir,
        DIST_TIMEOUT,
        &["--checkpoint-every", "3", "--prefetch", "4"],
    );
    let mut launch_args = vec![
        "launch".to_owned(),
        "--nproc".into(),
        "2".into(),
        "--".into(),
    ];
    launch_args.extend(args);
    let log = run_dir.join("launch.log");
    let child = pretext(&launch_args, &log)
        .spawn()
        .expect("start pretext launch");
    let child = cleanup.keep_mut(child);
    let status = wait_exit(child, RUN, &log);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "launch failed ({status}):\n{log_text}");

    assert_eq!(
        audit(run_dir),
        serde_json::json!({"published": 16, "applied": 16, "missing": 0, "applied_twice": 0, "dead": []})
    );

    // After every checkpoint both ranks hold identical parameters.
    let mut by_step: BTreeMap<u64, HashMap<u64, String>> = BTreeMap::new();
    for (step, rank, hash) in checkpoint_hashes(&log) {
        by_step.entry(step).or_default().insert(rank, hash);
    }
    let checkpoints: Vec<(u64, std::path::PathBuf)> =
        list_checkpoints(&checkpoint_dir(run_dir)).unwrap();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    for (step, _) in &checkpoints {
        let hashes = &by_step[step];
        eprintln!("checkpoint at step {step}: parameter hashes {hashes:?}");
        assert_eq!(hashes.len(), 2, "both ranks log step {step}:\n{log_text}");
        assert_eq!(hashes[&0], hashes[&1], "ranks differ at step {step}");
    }

    // Both ranks contributed, and some steps combined two batches.
    let steps = steps_by_rank(run_dir, 2);
    let per_rank: Vec<usize> = (0..2)
        .map(|r| steps.values().filter(|ids| !ids[r].is_empty()).count())
        .collect();
    eprintln!("batches per rank {per_rank:?} over {} steps", steps.len());
    assert!(per_rank.iter().all(|&n| n > 0), "{steps:?}");
    assert!(
        steps
            .values()
            .any(|ids| ids.iter().all(|id| !id.is_empty())),
        "no step combined both ranks' batches: {steps:?}"
    );
    assert_eq!(per_rank.iter().sum::<usize>(), 16);
    // Every round says where it went, and its phases fit in the step.
    for r in 0..2 {
        let lines = pretext_trainer::read_metrics(&run_dir.join(metrics_file(r))).unwrap();
        for m in lines {
            let p = m.phases.expect("phases");
            let sum = p.agree + p.backward + p.sync + p.allreduce + p.apply;
            assert!(p.backward > 0.0 && p.allreduce > 0.0, "rank {r}: {p:?}");
            assert!(
                sum <= m.step_secs + 1e-3,
                "rank {r}: {p:?} in {}",
                m.step_secs
            );
        }
    }

    // One process, stepping on the union of each step's batches.
    let (_, first) = &checkpoints[0];
    let state: CheckpointState<TrainingState> = read_checkpoint_state(first).unwrap();
    assert_eq!(state.world_size, 2);
    assert_eq!(
        state.training.members.len(),
        2,
        "{:?}",
        state.training.members
    );
    let worst = one_process_on_the_unions(run_dir, &data, &steps);
    eprintln!("largest difference to one process on the union: {worst:e}");
    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uneven_data_ends_every_rank_cleanly() {
    let (transport, topology, mut cleanup) = broker("dp-uneven").await;
    let run_dir = tempfile::tempdir().unwrap();
    let run_dir = run_dir.path();
    // Seven batches for two ranks holding at most two each: both get some,
    // and whatever the split, one runs out a step before the other.
    let data = batches(Task::Masked, "un", 7);
    control(&*transport, &topology, plan(Task::Masked, 1)).await;
    publish_task(&transport, &topology, run_dir, "a", &data).await;
    let args = train_args(
        &amqp_url(),
        topology.namespace(),
        run_dir,
        DIST_TIMEOUT,
        &["--checkpoint-every", "2", "--prefetch", "2"],
    );
    let port = pretext_dist::free_port().unwrap();
    let logs: Vec<_> = (0..2)
        .map(|r| run_dir.join(format!("rank{r}.log")))
        .collect();
    for (r, log) in logs.iter().enumerate() {
        cleanup.children.push(rank(&args, port, r, 2, log));
    }
    for (r, log) in logs.iter().enumerate() {
        let status = wait_exit(&mut cleanup.children[r], RUN, log);
        assert!(
            status.success(),
            "rank {r} failed ({status}):\n{}",
            std::fs::read_to_string(log).unwrap()
        );
    }
    let steps = steps_by_rank(run_dir, 2);
    eprintln!("steps (batch per rank): {steps:?}");
    assert!(
        steps
            .values()
            .any(|ids| ids.iter().filter(|id| id.is_empty()).count() == 1),
        "some step had a batch on one rank only"
    );
    for r in 0..2 {
        assert!(
            steps.values().any(|ids| !ids[r].is_empty()),
            "rank {r} had no batch at all"
        );
    }
    assert_eq!(
        audit(run_dir),
        serde_json::json!({"published": 7, "applied": 7, "missing": 0, "applied_twice": 0, "dead": []})
    );
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rank_fails_the_other_and_a_restart_applies_every_batch_once() {
    let (transport, topology, mut cleanup) = broker("dp-kill").await;
    let run_dir = tempfile::tempdir().unwrap();
    let run_dir = run_dir.path();
    let data = batches(Task::Masked, "kl", 22);
    let (first, second) = data.split_at(11);
    control(&*transport, &topology, plan(Task::Masked, 2)).await;
    publish_task(&transport, &topology, run_dir, "a", first).await;
    let args = train_args(
        &amqp_url(),
        topology.namespace(),
        run_dir,
        DIST_TIMEOUT,
        &["--checkpoint-every", "4", "--prefetch", "4"],
    );
    let port = pretext_dist::free_port().unwrap();
    let logs: Vec<_> = (0..2)
        .map(|r| run_dir.join(format!("run1-rank{r}.log")))
        .collect();
    for (r, log) in logs.iter().enumerate() {
        cleanup.children.push(rank(&args, port, r, 2, log));
    }
    // Every batch of the first task applied, waiting for the second.
    let start = Instant::now();
    loop {
        let applied: usize = steps_by_rank(run_dir, 2)
            .values()
            .map(|ids| ids.iter().filter(|id| !id.is_empty()).count())
            .sum();
        if applied >= first.len()
            && !list_checkpoints(&checkpoint_dir(run_dir))
                .unwrap()
                .is_empty()
        {
            break;
        }
        for (r, child) in cleanup.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "rank {r} exited early ({status}):\n{}",
                    std::fs::read_to_string(&logs[r]).unwrap()
                );
            }
        }
        assert!(
            start.elapsed() < RUN,
            "the first task was not applied in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (step_at_kill_checkpoint, ckpt) = list_checkpoints(&checkpoint_dir(run_dir))
        .unwrap()
        .pop()
        .unwrap();
    let checkpointed = pretext_trainer::AppliedHistory::load(&checkpoint_dir(run_dir))
        .unwrap()
        .distinct()
        .len();
    eprintln!(
        "killing rank 1: checkpoint at step {step_at_kill_checkpoint} ({}) holds {checkpointed} of 11 batches",
        ckpt.display()
    );

    cleanup.children[1].kill().expect("SIGKILL rank 1");
    cleanup.children[1].wait().unwrap();
    let killed = Instant::now();
    let status = wait_exit(
        &mut cleanup.children[0],
        Duration::from_secs(DIST_TIMEOUT + 20),
        &logs[0],
    );
    let took = killed.elapsed();
    let log0 = std::fs::read_to_string(&logs[0]).unwrap();
    let error_line = log0
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("rank 0 exited {status} after {took:?}: {error_line}");
    let steps = steps_by_rank(run_dir, 2);
    let held_by = |r: usize| {
        steps
            .iter()
            .filter(|(step, ids)| **step > step_at_kill_checkpoint && !ids[r].is_empty())
            .count()
    };
    eprintln!(
        "uncheckpointed batches held by rank 0: {}, by the killed rank 1: {}",
        held_by(0),
        held_by(1)
    );
    assert!(!status.success(), "rank 0 must fail:\n{log0}");
    assert!(
        took < Duration::from_secs(DIST_TIMEOUT + 5),
        "rank 0 took {took:?} (timeout {DIST_TIMEOUT} s)"
    );
    assert!(
        error_line.contains("lost rank 1"),
        "the error names the lost rank:\n{log0}"
    );
    // Nothing after the last checkpoint was acked: the broker requeues it
    // once it has noticed both connections closed.
    let start = Instant::now();
    loop {
        let queued = transport.queue_depth(&topology.pretrain()).await.unwrap() as usize;
        if queued == first.len() - checkpointed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{queued} batches back in the queue, expected the {} after the checkpoint",
            first.len() - checkpointed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Restart both (a fresh store) with the rest of the data.
    publish_task(&transport, &topology, run_dir, "b", second).await;
    cleanup.children.clear();
    let port = pretext_dist::free_port().unwrap();
    let logs: Vec<_> = (0..2)
        .map(|r| run_dir.join(format!("run2-rank{r}.log")))
        .collect();
    for (r, log) in logs.iter().enumerate() {
        cleanup.children.push(rank(&args, port, r, 2, log));
    }
    for (r, log) in logs.iter().enumerate() {
        let status = wait_exit(&mut cleanup.children[r], RUN, log);
        assert!(
            status.success(),
            "restarted rank {r} failed ({status}):\n{}",
            std::fs::read_to_string(log).unwrap()
        );
    }
    assert_eq!(
        audit(run_dir),
        serde_json::json!({"published": 22, "applied": 22, "missing": 0, "applied_twice": 0, "dead": []})
    );
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
    transport.close().await.unwrap();
    drop(cleanup);
}

//! Elastic `pretext train --nnodes MIN:MAX --rdzv-endpoint` over Gloo on
//! 127.0.0.1 against the real RabbitMQ (AMQP_URL, default the local guest
//! broker; fails if it is unreachable): members join a running
//! pretraining, one is SIGKILLed and one SIGTERMed, and the survivor
//! finishes alone with every batch applied once; a group that went
//! 1 -> 2 -> 1 holds the parameters of one process stepping on the same
//! unions of batches.

#[path = "http_support/mod.rs"]
mod http;
#[path = "trainer_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use pretext_core::batch::Batch;
use pretext_core::task::Task;
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::membership::{Generation, read_generations};
use pretext_trainer::{AppliedHistory, TrainingState};
use support::ranks::*;
use support::*;

/// Collective timeout given to the members.
const DIST_TIMEOUT: u64 = 10;
/// Longest any one phase of a test may take.
const PHASE: Duration = Duration::from_secs(120);

/// One member, started with the shared elastic settings.
fn member(args: &[String], log: &Path) -> Child {
    pretext(args, log).spawn().expect("start a member")
}

fn generations(run_dir: &Path) -> Vec<Generation> {
    read_generations(&checkpoint_dir(run_dir)).unwrap()
}

fn checkpointed(run_dir: &Path) -> usize {
    AppliedHistory::load(&checkpoint_dir(run_dir))
        .unwrap()
        .distinct()
        .len()
}

/// Waits until `done()`, failing with the logs if a running member exits
/// or `PHASE` passes.
fn until(members: &mut [Child], logs: &[PathBuf], what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        for (child, log) in members.iter_mut().zip(logs) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "waiting for {what}: a member exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        if start.elapsed() > PHASE {
            let logs: Vec<String> = logs
                .iter()
                .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                .collect();
            panic!("{what}: not within {PHASE:?}\n{}", logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn world_sizes(gens: &[Generation]) -> Vec<usize> {
    gens.iter().map(|g| g.world_size).collect()
}

/// The shared arguments of an elastic member of MIN 1 and MAX `max`.
fn elastic_args(ns: &str, run_dir: &Path, port: u16, max: usize) -> Vec<String> {
    let endpoint = format!("127.0.0.1:{port}");
    let nnodes = format!("1:{max}");
    train_args(
        &amqp_url(),
        ns,
        run_dir,
        DIST_TIMEOUT,
        &[
            "--checkpoint-every",
            "3",
            "--checkpoint-secs",
            "1",
            "--prefetch",
            "4",
            "--nnodes",
            &nnodes,
            "--rdzv-endpoint",
            &endpoint,
        ],
    )
}

/// A run on the real broker in namespace `name`: a plan of one task per
/// entry of `sizes` (batch ids `{prefix}-…`), the first task published.
/// Returns the broker, the run directory, every batch, and the tasks.
async fn planned_run(
    name: &str,
    prefix: &str,
    sizes: &[usize],
) -> (Run, tempfile::TempDir, Vec<Batch>, Vec<Vec<Batch>>) {
    let (transport, topology, cleanup) = broker(name).await;
    let run_dir = tempfile::tempdir().unwrap();
    let data = batches(Task::Masked, prefix, sizes.iter().sum());
    let tasks = chunks(&data, sizes);
    control(
        &*transport,
        &topology,
        plan(Task::Masked, tasks.len() as u64),
    )
    .await;
    publish_task(&transport, &topology, run_dir.path(), "a", &tasks[0]).await;
    ((transport, topology, cleanup), run_dir, data, tasks)
}

/// The broker connection, the namespace, and the guard of the members.
type Run = (pretext_mq::SharedTransport, pretext_mq::Topology, Cleanup);

fn chunks(data: &[Batch], sizes: &[usize]) -> Vec<Vec<Batch>> {
    let mut out = Vec::new();
    let mut rest = data;
    for &n in sizes {
        let (head, tail) = rest.split_at(n);
        out.push(head.to_vec());
        rest = tail;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_one_is_killed_one_leaves_and_every_batch_is_applied_once() {
    let ((transport, topology, mut cleanup), run_dir, _, tasks) =
        planned_run("elastic", "el", &[8, 12, 16, 8, 8]).await;
    let run_dir = run_dir.path();
    let port = pretext_dist::free_port().unwrap();
    let args = elastic_args(topology.namespace(), run_dir, port, 3);
    let log = |name: &str| run_dir.join(format!("{name}.log"));
    let logs = [log("a"), log("b"), log("c")];
    let members = &mut cleanup.children;
    members.push(member(&args, &logs[0]));

    until(members, &logs, "a alone checkpoints task a", || {
        checkpointed(run_dir) >= 8 && changes(&checkpoint_world_sizes(run_dir)) == [1]
    });
    members.push(member(&args, &logs[1]));
    until(members, &logs, "b joins", || {
        generations(run_dir)
            .last()
            .is_some_and(|g| g.world_size == 2)
    });
    publish_task(&transport, &topology, run_dir, "b", &tasks[1]).await;
    until(members, &logs, "a and b checkpoint task b", || {
        checkpointed(run_dir) >= 20 && changes(&checkpoint_world_sizes(run_dir)) == [1, 2]
    });
    members.push(member(&args, &logs[2]));
    until(members, &logs, "c joins", || {
        generations(run_dir)
            .last()
            .is_some_and(|g| g.world_size == 3)
    });
    publish_task(&transport, &topology, run_dir, "c", &tasks[2]).await;
    until(members, &logs, "three ranks checkpoint", || {
        changes(&checkpoint_world_sizes(run_dir)) == [1, 2, 3]
    });

    // SIGKILL c once a step past the newest checkpoint is applied: a and b
    // fail their collective, drop their deliveries unacked, and re-form
    // from the last durable checkpoint (that step is rolled back).
    let newest = |run_dir: &Path| checkpoints(run_dir).last().map_or(0, |(s, _)| *s);
    let last_step = |run_dir: &Path| steps_by_rank(run_dir, 3).keys().last().copied();
    until(members, &logs, "a step past the checkpoint", || {
        last_step(run_dir) > Some(newest(run_dir))
    });
    let mut c = members.pop().unwrap();
    let at_kill = last_step(run_dir);
    c.kill().unwrap();
    c.wait().unwrap();
    let killed = Instant::now();
    let before = generations(run_dir).len();
    until(members, &logs, "a and b re-form without c", || {
        generations(run_dir).len() > before
    });
    let resumed = killed.elapsed();
    let g = generations(run_dir).pop().unwrap();
    eprintln!(
        "killed after step {at_kill:?}; the group resumed from the checkpoint at step {}",
        g.step
    );
    assert!(at_kill > Some(g.step), "nothing was rolled back");
    eprintln!(
        "SIGKILL to training again: {:.2} s (rank 0's re-formation {:.2} s): {g:?}",
        resumed.as_secs_f64(),
        g.reform_secs.unwrap_or_default()
    );
    assert_eq!(
        (g.world_size, g.lost.len(), g.left.len()),
        (2, 1, 0),
        "{g:?}"
    );
    assert!(resumed < Duration::from_secs(DIST_TIMEOUT), "{resumed:?}");
    publish_task(&transport, &topology, run_dir, "d", &tasks[3]).await;
    until(members, &logs, "a and b checkpoint again", || {
        changes(&checkpoint_world_sizes(run_dir)) == [1, 2, 3, 2] && checkpointed(run_dir) >= 44
    });

    // SIGTERM b: the group checkpoints, b exits 0, a goes on alone.
    let mut b = members.pop().unwrap();
    sigterm(&b);
    let status = wait_exit(&mut b, PHASE, &logs[1]);
    assert!(
        status.success(),
        "b after SIGTERM: {status}\n{}",
        std::fs::read_to_string(&logs[1]).unwrap()
    );
    until(members, &logs, "a alone", || {
        generations(run_dir)
            .last()
            .is_some_and(|g| g.world_size == 1 && g.left.len() == 1)
    });
    publish_task(&transport, &topology, run_dir, "e", &tasks[4]).await;
    let status = wait_exit(&mut members[0], PHASE, &logs[0]);
    assert!(
        status.success(),
        "a: {status}\n{}",
        std::fs::read_to_string(&logs[0]).unwrap()
    );

    let report = audit(run_dir);
    eprintln!("{report:#}");
    for (field, want) in [
        ("published", 52),
        ("applied", 52),
        ("missing", 0),
        ("applied_twice", 0),
    ] {
        assert_eq!(report[field], want, "{field}: {report:#}");
    }
    let sizes = checkpoint_world_sizes(run_dir);
    eprintln!("checkpoint world sizes: {sizes:?}");
    assert_eq!(changes(&sizes), [1, 2, 3, 2, 1]);
    let gens = generations(run_dir);
    assert_eq!(world_sizes(&gens), [1, 2, 3, 2, 1], "{gens:#?}");
    assert_eq!(report["membership"].as_array().map(Vec::len), Some(5));
    // Every checkpoint names the members it was written with.
    for (_, path) in checkpoints(run_dir) {
        let state = pretext_model::read_checkpoint_state::<TrainingState>(&path).unwrap();
        assert_eq!(state.training.members.len(), state.world_size, "{path:?}");
    }
    assert_eq!(
        transport.queue_depth(&topology.pretrain()).await.unwrap(),
        0
    );
    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_went_1_2_1_holds_what_one_process_would_on_the_same_unions() {
    let ((transport, topology, mut cleanup), run_dir, data, tasks) =
        planned_run("elastic-equal", "eq", &[6, 12, 6]).await;
    let run_dir = run_dir.path();
    let port = pretext_dist::free_port().unwrap();
    let args = elastic_args(topology.namespace(), run_dir, port, 2);
    let log = |name: &str| run_dir.join(format!("{name}.log"));
    let logs = [log("a"), log("b")];
    let members = &mut cleanup.children;
    // a serves its metrics: the world size and the re-formations.
    let metrics_port = http::free_port();
    let mut a_args = args.clone();
    a_args.extend(["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}")]);
    let metric = |name: &str| {
        http::scrape(metrics_port)
            .and_then(|m| m.get(name).copied())
            .unwrap_or(-1.0)
    };
    members.push(member(&a_args, &logs[0]));
    until(members, &logs, "a alone checkpoints task a", || {
        checkpointed(run_dir) >= 6
    });
    members.push(member(&args, &logs[1]));
    until(members, &logs, "b joins", || {
        generations(run_dir)
            .last()
            .is_some_and(|g| g.world_size == 2)
    });
    assert_eq!(metric("pretext_trainer_world_size"), 2.0);
    assert_eq!(metric("pretext_trainer_reformations_total"), 1.0);
    publish_task(&transport, &topology, run_dir, "b", &tasks[1]).await;
    until(members, &logs, "a and b checkpoint task b", || {
        checkpointed(run_dir) >= 18
    });
    let mut b = members.pop().unwrap();
    sigterm(&b);
    assert!(wait_exit(&mut b, PHASE, &logs[1]).success());
    until(members, &logs, "a alone", || {
        generations(run_dir)
            .last()
            .is_some_and(|g| g.world_size == 1 && g.generation == 3)
    });
    assert_eq!(metric("pretext_trainer_world_size"), 1.0);
    assert_eq!(metric("pretext_trainer_reformations_total"), 2.0);
    assert_eq!(metric("pretext_trainer_reform_seconds_count"), 2.0);
    publish_task(&transport, &topology, run_dir, "c", &tasks[2]).await;
    let status = wait_exit(&mut members[0], PHASE, &logs[0]);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&logs[0]).unwrap()
    );

    let report = audit(run_dir);
    for (field, want) in [
        ("published", 24),
        ("applied", 24),
        ("missing", 0),
        ("applied_twice", 0),
    ] {
        assert_eq!(report[field], want, "{field}: {report:#}");
    }
    assert_eq!(changes(&checkpoint_world_sizes(run_dir)), [1, 2, 1]);
    let steps = steps_by_rank(run_dir, 2);
    assert!(
        steps
            .values()
            .any(|ids| ids.iter().all(|id| !id.is_empty())),
        "no step combined two ranks' batches: {steps:?}"
    );
    assert_eq!(
        steps.values().flatten().filter(|id| !id.is_empty()).count(),
        24,
        "{steps:?}"
    );
    let worst = one_process_on_the_unions(run_dir, &data, &steps);
    eprintln!("1 -> 2 -> 1: largest difference to one process on the unions: {worst:e}");
    transport.close().await.unwrap();
    drop(cleanup);
}

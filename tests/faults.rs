//! Fault suite on the real RabbitMQ (AMQP_URL, default the local guest
//! broker): producers and trainers killed with SIGKILL, the broker restarted
//! or stopped long enough for clients to back off, a poison message, a memory
//! alarm and a disk alarm, a half-written checkpoint. Every test ends with `pretext audit`:
//! every published batch applied exactly once. The tests stop the broker and
//! raise alarms, so they run one at a time and restore the broker even when
//! they fail; run by hand under `flock -x /tmp/pretext-broker.lock`.
//! Faults already covered elsewhere (docs/reliability.md, "Reliability and security"):
//! a killed trainer after a checkpoint (`trainer_broker`), a killed
//! data-parallel rank (`dist_trainer`), a broker restart mid-publish and a
//! full queue (`producer_broker`, `crates/mq/tests/rabbit.rs`).

#[path = "fault_support/mod.rs"]
mod faults;
#[path = "trainer_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use pretext_core::manifest::read_manifests;
use pretext_core::task::Task;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_model::list_checkpoints;
use pretext_mq::message::DELIVERY_LIMIT_REASON;
use pretext_mq::{ConsumeOptions, OutMessage, Topology, TopologyConfig};
use pretext_producer::ProducerConfig;
use pretext_trainer::checkpoints::checkpoint_dir;
use pretext_trainer::{METRICS_FILE, read_metrics};

use faults::*;

/// A small dataset: `sequences` rows of length 512..`max_len` in files of
/// 100 rows (one producer task per file).
fn dataset(dir: &Path, sequences: usize, max_len: usize) {
    let cfg = SynthConfig {
        sequences,
        min_len: 512,
        max_len,
        seed: 7,
        rows_per_file: 100,
        row_group_rows: 25,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate the dataset");
}

/// The batch ids one uninterrupted producer publishes for `data` (same
/// settings as [`produce_args`]), through the in-process transport.
async fn reference_ids(data: &Path) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ProducerConfig::new(
        vec![data.to_path_buf()],
        Task::Masked,
        "reference",
        dir.path().join("run"),
    );
    cfg.mask.seed = 5;
    cfg.buckets.max_tokens = 8192;
    cfg.producer_id = "reference".into();
    let transport = pretext_mq::MemoryTransport::new();
    pretext_producer::run(cfg, std::sync::Arc::new(transport), std::future::pending())
        .await
        .expect("reference producer");
    read_manifests(&dir.path().join("run"))
        .unwrap()
        .into_keys()
        .collect()
}

fn manifest_ids(run_dir: &Path) -> BTreeSet<String> {
    read_manifests(run_dir).unwrap().into_keys().collect()
}

fn steps_done(run_dir: &Path) -> usize {
    let path = run_dir.join(METRICS_FILE);
    if path.exists() {
        read_metrics(&path).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    }
}

fn latest_step(run_dir: &Path) -> Option<u64> {
    list_checkpoints(&checkpoint_dir(run_dir))
        .unwrap()
        .pop()
        .map(|(step, _)| step)
}

/// Publishes `n` batches as one finished task of a two-task plan, so that a
/// trainer waits for the second task after applying them.
async fn publish_first_task(url: &str, topology: &Topology, run_dir: &Path, n: usize) {
    let transport = connect(url).await;
    topology.declare(&*transport).await.expect("declare");
    let data = support::batches(Task::Masked, "a", n);
    support::publish_task_batches(&*transport, topology, "a", &data).await;
    support::manifest(run_dir, "a", &data);
    support::control(&*transport, topology, support::plan(Task::Masked, 2)).await;
    support::control(&*transport, topology, support::task_done("a", &data)).await;
    transport.close().await.unwrap();
}

/// Publishes the second task: `n` more batches and its end.
async fn publish_second_task(url: &str, topology: &Topology, run_dir: &Path, n: usize) {
    let transport = connect(url).await;
    let data = support::batches(Task::Masked, "b", n);
    support::publish_task_batches(&*transport, topology, "b", &data).await;
    support::manifest(run_dir, "b", &data);
    support::control(&*transport, topology, support::task_done("b", &data)).await;
    transport.close().await.unwrap();
}

/// Publishes all `n` batches of a one-task plan at once.
async fn publish_all(url: &str, topology: &Topology, run_dir: &Path, n: usize) {
    let transport = connect(url).await;
    topology.declare(&*transport).await.expect("declare");
    let data = support::batches(Task::Masked, "all", n);
    support::publish_task_batches(&*transport, topology, "all", &data).await;
    support::manifest(run_dir, "all", &data);
    support::control(&*transport, topology, support::plan(Task::Masked, 1)).await;
    support::control(&*transport, topology, support::task_done("all", &data)).await;
    transport.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_killed_mid_file_and_restarted_publishes_every_batch_once() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let (data, run_dir) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data, 2000, 6000);
    let topology = Topology::new(support::unique_namespace("kill-producer"));
    let mut cleanup = Cleanup::new(&url, &topology);
    let transport = connect(&url).await;
    topology.declare(&*transport).await.expect("declare");

    let log1 = dir.path().join("produce-1.log");
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p1");
    let p1 = cleanup.keep(pretext(&args, &log1).spawn().unwrap());
    // Some batches confirmed, and not all tasks done: the kill hits mid-file.
    let pretrain = topology.pretrain();
    wait_for("20 batches", &mut cleanup.children[p1], &log1, || {
        depth(&transport, &pretrain) >= 20
    });
    cleanup.children[p1].kill().expect("SIGKILL the producer");
    cleanup.children[p1].wait().unwrap();
    let before = manifest_ids(&run_dir);
    let want = reference_ids(&data).await;
    assert!(
        before.len() < want.len(),
        "the producer finished before the kill; make the dataset larger"
    );

    let log2 = dir.path().join("produce-2.log");
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p2");
    let p2 = cleanup.keep(pretext(&args, &log2).spawn().unwrap());
    wait_success(&mut cleanup.children[p2], &log2);
    assert_eq!(
        manifest_ids(&run_dir),
        want,
        "the manifests hold exactly the batches of an uninterrupted run"
    );

    let log3 = dir.path().join("train.log");
    let args = train_args(&url, topology.namespace(), &run_dir, 10);
    let t = cleanup.keep(pretext(&args, &log3).spawn().unwrap());
    wait_success(&mut cleanup.children[t], &log3);
    assert_exactly_once(&run_dir, want.len() as u64);
    transport.close().await.unwrap();
    drop(cleanup);
}

/// Queue depth from a blocking context (the waits poll from plain loops).
fn depth(transport: &pretext_mq::SharedTransport, queue: &str) -> u64 {
    let transport = transport.clone();
    let queue = queue.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(transport.queue_depth(&queue))
    })
    .join()
    .unwrap()
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainer_killed_mid_step_and_restarted_applies_every_batch_once() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new(support::unique_namespace("kill-trainer"));
    let mut cleanup = Cleanup::new(&url, &topology);
    // Everything published up front: the trainer is busy stepping when
    // killed, with batches prefetched and unacked.
    publish_all(&url, &topology, run_dir, 30).await;
    let log1 = run_dir.join("train-1.log");
    let args = train_args(&url, topology.namespace(), run_dir, 4);
    let t1 = cleanup.keep(pretext(&args, &log1).spawn().unwrap());
    wait_for("9 steps", &mut cleanup.children[t1], &log1, || {
        steps_done(run_dir) >= 9
    });
    cleanup.children[t1].kill().expect("SIGKILL the trainer");
    cleanup.children[t1].wait().unwrap();
    let at_kill = steps_done(run_dir);
    assert!(at_kill < 30, "the trainer finished before the kill");

    let log2 = run_dir.join("train-2.log");
    let t2 = cleanup.keep(pretext(&args, &log2).spawn().unwrap());
    wait_success(&mut cleanup.children[t2], &log2);
    eprintln!("killed after {at_kill} logged steps");
    assert_exactly_once(run_dir, 30);
    assert_eq!(latest_step(run_dir), Some(30), "one step per batch");
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_training_loses_and_repeats_nothing() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new(support::unique_namespace("restart-train"));
    let mut cleanup = Cleanup::new(&url, &topology);
    // The first of two tasks only: the trainer cannot finish before the
    // second is published after the restart, however fast it steps (a
    // single task of 80 batches was sometimes done before `stop_app`
    // returned).
    publish_first_task(&url, &topology, run_dir, 40).await;
    let log = run_dir.join("train.log");
    let args = train_args(&url, topology.namespace(), run_dir, 5);
    let t = cleanup.keep(pretext(&args, &log).spawn().unwrap());
    wait_for("3 steps", &mut cleanup.children[t], &log, || {
        steps_done(run_dir) >= 3
    });
    {
        let _stopped = StoppedBroker::stop();
        let during = steps_done(run_dir);
        assert!(
            cleanup.children[t].try_wait().unwrap().is_none(),
            "the trainer must still be running while the broker is down"
        );
        eprintln!("broker stopped after {during} steps");
        std::thread::sleep(Duration::from_secs(2));
    }
    publish_second_task(&url, &topology, run_dir, 40).await;
    wait_success(&mut cleanup.children[t], &log);
    assert!(
        read(&log).contains("reconnecting"),
        "the trainer saw the connection drop:\n{}",
        read(&log)
    );
    assert_exactly_once(run_dir, 80);
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_long_enough_for_backoff_then_started_loses_nothing() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let (data, run_dir) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data, 1000, 6000);
    let want = reference_ids(&data).await;
    let topology = Topology::new(support::unique_namespace("down"));
    let mut cleanup = Cleanup::new(&url, &topology);
    let transport = connect(&url).await;
    topology.declare(&*transport).await.expect("declare");

    // A trainer waiting for batches, then a producer: the broker goes down
    // while the producer publishes and the trainer consumes.
    let (plog, tlog) = (dir.path().join("produce.log"), dir.path().join("train.log"));
    let args = train_args(&url, topology.namespace(), &run_dir, 5);
    let t = cleanup.keep(pretext(&args, &tlog).spawn().unwrap());
    wait_for(
        "the trainer to connect",
        &mut cleanup.children[t],
        &tlog,
        || read(&tlog).contains("connected"),
    );
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p1");
    let p = cleanup.keep(pretext(&args, &plog).spawn().unwrap());
    let pretrain = topology.pretrain();
    wait_for("10 batches", &mut cleanup.children[p], &plog, || {
        depth(&transport, &pretrain) >= 10
    });
    transport.close().await.unwrap();
    {
        let _stopped = StoppedBroker::stop();
        // Reconnect backoff doubles from 100 ms to its 5 s cap: 12 s down
        // means several attempts at the cap.
        std::thread::sleep(Duration::from_secs(12));
    }
    wait_success(&mut cleanup.children[p], &plog);
    wait_success(&mut cleanup.children[t], &tlog);
    let retries = |log: &Path| read(log).matches("cannot connect; retrying").count();
    let (pr, tr) = (retries(&plog), retries(&tlog));
    eprintln!("connection attempts while down: producer {pr}, trainer {tr}");
    // The producer may be done before the broker goes down (it publishes
    // faster than the trainer steps); the trainer is still consuming.
    assert!(
        tr >= 3,
        "the trainer backed off and retried ({tr} attempts)"
    );
    assert_eq!(manifest_ids(&run_dir), want);
    assert_exactly_once(&run_dir, want.len() as u64);
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_at_the_delivery_limit_and_training_goes_on() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new(support::unique_namespace("poison"));
    let mut cleanup = Cleanup::new(&url, &topology);
    // The poison is first in the queue, the good batches after it.
    let transport = one_message_then_the_run(&url, &topology, run_dir, "poison").await;

    // Consumers that die holding it, as a process that crashes on a message
    // would: each takes the poison and drops its connection without acking.
    assert_eq!(crash_until_dead(&url, &topology, 1).await, ["poison"]);
    let dead = support::dead_letters(&*transport, &topology, 1).await;
    assert_eq!(
        dead,
        [("poison".to_owned(), DELIVERY_LIMIT_REASON.to_owned())]
    );

    let log = run_dir.join("train.log");
    let args = train_args(&url, topology.namespace(), run_dir, 5);
    let t = cleanup.keep(pretext(&args, &log).spawn().unwrap());
    wait_success(&mut cleanup.children[t], &log);
    assert_exactly_once(run_dir, 8);
    transport.close().await.unwrap();
    drop(cleanup);
}

/// Declares the topology, publishes a message `id` that is not a batch
/// first in `{ns}.pretrain`, then a run of 8 batches ([`publish_all`]);
/// returns the connection.
async fn one_message_then_the_run(
    url: &str,
    topology: &Topology,
    run_dir: &Path,
    id: &str,
) -> pretext_mq::SharedTransport {
    let transport = connect(url).await;
    topology.declare(&*transport).await.expect("declare");
    support::publish(
        &*transport,
        &topology.pretrain(),
        OutMessage::new(id, b"not a batch".to_vec()),
    )
    .await;
    publish_all(url, topology, run_dir, 8).await;
    transport
}

/// Takes the first message of `{ns}.pretrain` and drops it unacked, as a
/// consumer that crashes on it would, again and again: the broker
/// dead-letters each head message at the delivery limit. Returns the ids of
/// the first `n` that died, in order.
async fn crash_until_dead(url: &str, topology: &Topology, n: usize) -> Vec<String> {
    let limit = TopologyConfig::default().delivery_limit;
    let mut deliveries = std::collections::HashMap::<String, u32>::new();
    let (mut dead, mut head) = (Vec::new(), None::<String>);
    while dead.len() < n {
        let crashing = connect(url).await;
        topology.declare(&*crashing).await.expect("declare");
        let mut consumer = crashing
            .consume(&topology.pretrain(), ConsumeOptions { prefetch: 1 })
            .await
            .unwrap();
        let d = tokio::time::timeout(LIMIT, consumer.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        let id = d.message_id().to_owned();
        drop((d, consumer));
        crashing.close().await.unwrap();
        let count = deliveries.entry(id.clone()).or_default();
        *count += 1;
        assert!(*count <= limit + 1, "{id} never dead-lettered");
        // A new head: the previous one left the queue.
        if let Some(previous) = head.replace(id.clone())
            && previous != id
        {
            assert_eq!(
                deliveries[&previous],
                limit + 1,
                "one delivery plus `limit` redeliveries"
            );
            dead.push(previous);
        }
    }
    dead
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dead_lettered_by_the_broker_ends_the_run_loudly_and_the_audit_names_it() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new(support::unique_namespace("dead-batch"));
    let mut cleanup = Cleanup::new(&url, &topology);
    // A stray message that dies too: not a batch of the run, so it must not
    // count toward its end.
    let transport = one_message_then_the_run(&url, &topology, run_dir, "stray").await;
    // Then a real batch of the run crashes its consumers until the broker
    // gives up on it.
    let dead = crash_until_dead(&url, &topology, 2).await;
    assert_eq!(dead[0], "stray");
    let dead_id = dead[1].clone();

    // Before the fix the trainer applied the other 7 and waited for the
    // eighth forever; now it ends, with an error that names it.
    let log = run_dir.join("train.log");
    let args = train_args(&url, topology.namespace(), run_dir, 5);
    let t = cleanup.keep(pretext(&args, &log).spawn().unwrap());
    let status = wait_exit(&mut cleanup.children[t], &log);
    let text = read(&log);
    assert!(!status.success(), "the run ended quietly:\n{text}");
    assert!(
        text.contains(&dead_id) && text.contains(DELIVERY_LIMIT_REASON),
        "the trainer's exit names the batch and why:\n{text}"
    );
    assert!(
        !text.contains("stray ("),
        "the stray message is not the run's:\n{text}"
    );
    assert_eq!(
        audit(run_dir),
        serde_json::json!({
            "published": 8,
            "applied": 7,
            "missing": 1,
            "applied_twice": 0,
            "dead": [{"id": dead_id, "reason": DELIVERY_LIMIT_REASON}]
        })
    );
    // The 7 are acked: the queue is empty, nothing is waiting for a trainer.
    assert_eq!(depth(&transport, &topology.pretrain()), 0);
    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_the_producer_with_flat_memory_and_loses_nothing() {
    an_alarm_blocks_the_producer_with_flat_memory_and_loses_nothing(AlarmKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_alarm_blocks_the_producer_with_flat_memory_and_loses_nothing() {
    an_alarm_blocks_the_producer_with_flat_memory_and_loses_nothing(AlarmKind::Disk).await;
}

/// A resource alarm on before the producer starts blocks its publishing
/// connection at the first message with flat memory; cleared, the producer
/// finishes and training applies every batch once.
async fn an_alarm_blocks_the_producer_with_flat_memory_and_loses_nothing(kind: AlarmKind) {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let (data, run_dir) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data, 400, 6000);
    let want = reference_ids(&data).await;
    let topology = Topology::new(support::unique_namespace(
        &format!("alarm-{kind:?}").to_lowercase(),
    ));
    let mut cleanup = Cleanup::new(&url, &topology);
    let transport = connect(&url).await;
    topology.declare(&*transport).await.expect("declare");
    let pretrain = topology.pretrain();

    // The alarm is on before the producer starts: its publishing
    // connection is blocked at its first message.
    let alarm = BrokerAlarm::raise(kind);
    wait_until("the alarm", || BrokerAlarm::active(kind));
    let plog = dir.path().join("produce.log");
    let args = produce_args(&url, topology.namespace(), &data, &run_dir, "p1");
    let p = cleanup.keep(pretext(&args, &plog).spawn().unwrap());
    // Blocked: unblocked, this producer is done in about 2 s; it keeps
    // running with nothing published.
    std::thread::sleep(Duration::from_secs(3));
    let last = depth(&transport, &pretrain);
    let pid = cleanup.children[p].id();
    let rss0 = rss_mib(pid);
    std::thread::sleep(Duration::from_secs(3));
    let rss1 = rss_mib(pid);
    assert!(cleanup.children[p].try_wait().unwrap().is_none());
    assert_eq!(depth(&transport, &pretrain), last, "nothing got in");
    assert_eq!(last, 0);
    assert!(manifest_ids(&run_dir).is_empty(), "nothing was confirmed");
    eprintln!("{kind:?} alarm: blocked at {last} batches, producer RSS {rss0:.1} -> {rss1:.1} MiB");
    assert!(
        rss1 - rss0 < 16.0,
        "memory grew while blocked: {rss0:.1} -> {rss1:.1} MiB"
    );
    drop(alarm);
    wait_until("the alarm to clear", || !BrokerAlarm::active(kind));
    wait_success(&mut cleanup.children[p], &plog);
    assert_eq!(manifest_ids(&run_dir), want);
    let tlog = dir.path().join("train.log");
    let args = train_args(&url, topology.namespace(), &run_dir, 10);
    let t = cleanup.keep(pretext(&args, &tlog).spawn().unwrap());
    wait_success(&mut cleanup.children[t], &tlog);
    assert_exactly_once(&run_dir, want.len() as u64);
    transport.close().await.unwrap();
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_checkpoint_is_ignored_on_resume() {
    let _lock = broker_lock().await;
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let topology = Topology::new(support::unique_namespace("half-ckpt"));
    let mut cleanup = Cleanup::new(&url, &topology);
    publish_first_task(&url, &topology, run_dir, 12).await;
    let log1 = run_dir.join("train-1.log");
    let args = train_args(&url, topology.namespace(), run_dir, 5);
    let t1 = cleanup.keep(pretext(&args, &log1).spawn().unwrap());
    wait_for(
        "12 steps and a checkpoint",
        &mut cleanup.children[t1],
        &log1,
        || steps_done(run_dir) >= 12 && latest_step(run_dir) == Some(10),
    );
    cleanup.children[t1].kill().expect("SIGKILL the trainer");
    cleanup.children[t1].wait().unwrap();

    // What a crash while writing step 15 could leave: a temporary
    // directory, and (on a filesystem without atomic renames) a step
    // directory with its weights truncated and no state.json.
    let ckpts = checkpoint_dir(run_dir);
    let (_, good) = list_checkpoints(&ckpts).unwrap().pop().unwrap();
    for name in [".tmp-step-000015-1-1", "step-000015"] {
        let half = ckpts.join(name);
        std::fs::create_dir(&half).unwrap();
        let weights = std::fs::read(good.join("model.safetensors")).unwrap();
        std::fs::write(
            half.join("model.safetensors"),
            &weights[..weights.len() / 2],
        )
        .unwrap();
        std::fs::copy(
            good.join("optimizer.safetensors"),
            half.join("optimizer.safetensors"),
        )
        .unwrap();
    }
    assert_eq!(latest_step(run_dir), Some(10));

    publish_second_task(&url, &topology, run_dir, 12).await;
    let log2 = run_dir.join("train-2.log");
    let t2 = cleanup.keep(pretext(&args, &log2).spawn().unwrap());
    wait_success(&mut cleanup.children[t2], &log2);
    assert_exactly_once(run_dir, 24);
    assert_eq!(
        latest_step(run_dir),
        Some(24),
        "resumed from step 10, not from the half-written 15"
    );
    drop(cleanup);
}

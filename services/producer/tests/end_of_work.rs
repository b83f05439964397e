//! The producer's end of work on the real RabbitMQ (AMQP_URL, default the
//! local broker): it stops only when no file task is left anywhere, even when
//! the broker has sent it a task that it has not read yet.
//!
//! A 1 ms idle check makes the producer look at the files queue while the
//! broker's last pushes are still on their way: the queue then shows no
//! task ready, though some are this producer's. Each run uses its own
//! namespace and deletes it; a missing broker fails the test.

use std::path::Path;

use pretext_core::manifest::read_manifests;
use pretext_core::split::Split;
use pretext_core::synth::{SynthConfig, generate};
use pretext_core::task::Task;
use pretext_mq::{MemoryTransport, RabbitConfig, SharedTransport, Topology};
use pretext_producer::{ProducerConfig, run};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn ns(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

/// Many small tasks: 240 rows, 8 per task.
fn dataset(dir: &Path) -> SynthConfig {
    let cfg = SynthConfig {
        sequences: 240,
        min_len: 512,
        max_len: 1024,
        seed: 5,
        rows_per_file: 80,
        row_group_rows: 8,
        ..Default::default()
    };
    generate(&cfg, dir).unwrap();
    cfg
}

/// Runs one producer with a 1 ms idle check and asserts it did every task
/// of the plan and published every train row once.
async fn one_producer_does_every_task(transport: SharedTransport, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let synth = dataset(&dir.path().join("data"));
    let run_dir = dir.path().join("run");
    let mut cfg = ProducerConfig::new(
        vec![dir.path().join("data")],
        Task::Next,
        name,
        run_dir.clone(),
    );
    cfg.task_rows = 8;
    cfg.idle_check_ms = 1;
    let summary = run(cfg, transport.clone(), std::future::pending())
        .await
        .unwrap();
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("plan.json")).unwrap()).unwrap();
    let planned = plan["tasks"].as_array().unwrap().len() as u64;
    assert!(planned >= 20, "the dataset makes many tasks: {planned}");
    assert_eq!(summary.tasks, planned, "the producer did every task");
    let train = synth
        .rows()
        .unwrap()
        .filter(|r| r.split == Split::Train)
        .count() as u64;
    assert_eq!(summary.sequences, train, "every train row published");
    let manifest = read_manifests(&run_dir).unwrap();
    assert_eq!(manifest.len() as u64, summary.batches);
    let topo = Topology::new(name);
    assert_eq!(
        transport.queue_depth(&topo.files()).await.unwrap(),
        0,
        "no task left behind"
    );
    topo.delete(&*transport).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_takes_the_tasks_already_sent_to_it_before_stopping() {
    let transport = pretext_mq::connect(&amqp_url(), RabbitConfig::default())
        .await
        .expect("RabbitMQ must be running at AMQP_URL (ops/setup.sh --broker starts it)");
    // Each run has a few chances to stop with a task in flight; several runs
    // make a miss all but certain if the producer does not drain.
    for round in 0..10 {
        one_producer_does_every_task(transport.clone(), &ns(&format!("idle{round}"))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_on_the_memory_transport_does_every_task() {
    let transport: SharedTransport = std::sync::Arc::new(MemoryTransport::new());
    one_producer_does_every_task(transport, "idle-memory").await;
}

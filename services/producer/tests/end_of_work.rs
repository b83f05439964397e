//! The producer's end of work on the real RabbitMQ (AMQP_URL, default the
//! local broker): it stops only when no file task is left anywhere, even when
//! the broker has sent it a task that it has not read yet.
//!
//! A 1 ms idle check makes the producer look at the files queue while the
//! broker's last pushes are still on their way: the queue then shows no
//! task ready, though some are this producer's. Each run uses its own
//! namespace and deletes it; a missing broker fails the test.
//!
//! On the in-process transport, wrapped so that a task comes back to the
//! files queue during the drain: the producer takes it with a new consumer
//! and does no task twice.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pretext_core::manifest::read_manifests;
use pretext_core::split::Split;
use pretext_core::task::Task;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_mq::{
    ConsumeOptions, Consumer, DeadLetter, Delivery, MemoryTransport, MqError, OutMessage,
    Publisher, QueueSpec, RabbitConfig, SharedTransport, Topology, Transport,
};
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

/// A `next` producer of `dir/data` into `dir/run`, with tasks of 8 rows and
/// a 1 ms idle check.
fn quick_producer(dir: &Path, name: &str) -> ProducerConfig {
    let mut cfg = ProducerConfig::new(vec![dir.join("data")], Task::Next, name, dir.join("run"));
    cfg.task_rows = 8;
    cfg.idle_check_ms = 1;
    cfg
}

/// Runs one producer with a 1 ms idle check and asserts it did every task
/// of the plan and published every train row once.
async fn one_producer_does_every_task(transport: SharedTransport, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let synth = dataset(&dir.path().join("data"));
    let run_dir = dir.path().join("run");
    let cfg = quick_producer(dir.path(), name);
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
    let transport: SharedTransport = Arc::new(MemoryTransport::new());
    one_producer_does_every_task(transport, "idle-memory").await;
}

/// The in-process transport, with two twists that set up the one path of
/// the end-of-work check that replaces the files consumer:
/// - the first consumer of the files queue keeps back the first task it gets
///   (as a peer holding it would) and gives it back when it is cancelled, so
///   the drain ends with a task waiting again;
/// - batch publishers confirm only after [`SLOW_CONFIRM`], so tasks taken
///   from that first consumer are still running when it is replaced.
#[derive(Debug)]
struct TaskComesBack {
    inner: MemoryTransport,
    files: String,
    /// Consumers of the files queue made so far.
    files_consumers: Arc<AtomicUsize>,
}

const SLOW_CONFIRM: std::time::Duration = std::time::Duration::from_millis(150);

#[async_trait::async_trait]
impl Transport for TaskComesBack {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), MqError> {
        self.inner.declare_queue(spec).await
    }
    async fn declare_dead_letter(&self, dead_letter: &DeadLetter) -> Result<(), MqError> {
        self.inner.declare_dead_letter(dead_letter).await
    }
    async fn publish(&self, queue: &str, message: OutMessage) -> Result<(), MqError> {
        self.inner.publish(queue, message).await
    }
    async fn publisher(&self, queue: &str) -> Result<Box<dyn Publisher>, MqError> {
        let inner = self.inner.publisher(queue).await?;
        if queue == self.files {
            return Ok(inner);
        }
        Ok(Box::new(SlowConfirms { inner }))
    }
    async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, MqError> {
        let inner = self.inner.consume(queue, options).await?;
        let first = queue == self.files && self.files_consumers.fetch_add(1, Ordering::SeqCst) == 0;
        if !first {
            return Ok(inner);
        }
        Ok(Box::new(KeepsOneBack {
            inner,
            kept: None,
            kept_one: false,
        }))
    }
    async fn queue_depth(&self, queue: &str) -> Result<u64, MqError> {
        self.inner.queue_depth(queue).await
    }
    async fn purge(&self, queue: &str) -> Result<u64, MqError> {
        self.inner.purge(queue).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<(), MqError> {
        self.inner.delete_queue(queue).await
    }
    async fn delete_exchange(&self, exchange: &str) -> Result<(), MqError> {
        self.inner.delete_exchange(exchange).await
    }
    async fn close(&self) -> Result<(), MqError> {
        self.inner.close().await
    }
}

struct SlowConfirms {
    inner: Box<dyn Publisher>,
}

#[async_trait::async_trait]
impl Publisher for SlowConfirms {
    async fn send(&mut self, message: OutMessage) -> Result<(), MqError> {
        self.inner.send(message).await
    }
    async fn flush(&mut self) -> Result<(), MqError> {
        tokio::time::sleep(SLOW_CONFIRM).await;
        self.inner.flush().await
    }
    fn unconfirmed(&self) -> usize {
        self.inner.unconfirmed()
    }
}

struct KeepsOneBack {
    inner: Box<dyn Consumer>,
    kept: Option<Delivery>,
    kept_one: bool,
}

#[async_trait::async_trait]
impl Consumer for KeepsOneBack {
    async fn next(&mut self) -> Result<Option<Delivery>, MqError> {
        if !self.kept_one {
            self.kept_one = true;
            self.kept = self.inner.next().await?;
        }
        self.inner.next().await
    }
    async fn cancel(&mut self) -> Result<(), MqError> {
        if let Some(kept) = self.kept.take() {
            kept.nack_requeue()
                .await
                .expect("giving the kept task back");
        }
        self.inner.cancel().await
    }
    fn queue(&self) -> &str {
        self.inner.queue()
    }
}

/// When the files queue shows a task again after a drain (it came back from
/// a peer), the producer takes it with a new consumer; the tasks it took
/// from the old one, still waiting for their confirms, stay its own: each
/// task is done once, and each batch is in the manifest once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_back_after_the_drain_is_done_and_none_is_done_twice() {
    let name = "idle-back";
    let topo = Topology::new(name);
    let files_consumers = Arc::new(AtomicUsize::new(0));
    let transport: SharedTransport = Arc::new(TaskComesBack {
        inner: MemoryTransport::new(),
        files: topo.files(),
        files_consumers: files_consumers.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        sequences: 48,
        min_len: 512,
        max_len: 1024,
        seed: 6,
        rows_per_file: 48,
        row_group_rows: 8,
        ..Default::default()
    };
    generate(&synth, &dir.path().join("data")).unwrap();
    let run_dir = dir.path().join("run");
    let mut cfg = quick_producer(dir.path(), name);
    cfg.concurrency = 1;
    let summary = run(cfg, transport.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        files_consumers.load(Ordering::SeqCst),
        2,
        "the drain ended with the kept task waiting, so a second consumer took it"
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("plan.json")).unwrap()).unwrap();
    let planned = plan["tasks"].as_array().unwrap().len() as u64;
    assert_eq!(summary.tasks, planned, "each task done once");
    // read_manifests collapses repeated ids; the lines written do not.
    let manifest = read_manifests(&run_dir).unwrap();
    let mut lines = 0;
    for file in std::fs::read_dir(run_dir.join("manifests")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        lines += text.lines().count();
    }
    assert_eq!(lines, manifest.len(), "no batch published twice");
    assert_eq!(manifest.len() as u64, summary.batches);
    assert_eq!(transport.queue_depth(&topo.files()).await.unwrap(), 0);
    assert_eq!(
        transport.queue_depth(&topo.pretrain()).await.unwrap(),
        summary.batches,
        "each batch in the queue once"
    );
}

/// A task that is not in the plan (here: a real Parquet file the plan never
/// named, as a forger with publish rights would send) is dead-lettered
/// with its reason and never read: no batch of that file is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_file_task_is_dead_lettered_unread() {
    let transport: SharedTransport = Arc::new(MemoryTransport::new());
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"));
    // Another dataset outside the producer's inputs: the forged target.
    let secret_cfg = SynthConfig {
        sequences: 40,
        min_len: 512,
        max_len: 1024,
        seed: 9,
        rows_per_file: 40,
        row_group_rows: 8,
        ..Default::default()
    };
    let secret = generate(&secret_cfg, &dir.path().join("secret")).unwrap();
    let name = "forged";
    let topo = Topology::new(name);
    topo.declare(&*transport).await.unwrap();
    let forged = pretext_core::control::FileTask {
        task_id: "0:0:0".into(),
        file: secret.files[0].display().to_string(),
        row_groups: vec![0, 1, 2, 3, 4],
        epoch: 0,
    };
    transport
        .publish(&topo.files(), OutMessage::new("forged", forged.to_bytes()))
        .await
        .unwrap();
    let cfg = quick_producer(dir.path(), name);
    let summary = run(cfg, transport.clone(), std::future::pending())
        .await
        .unwrap();
    let run_dir = dir.path().join("run");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(
        summary.tasks,
        plan["tasks"].as_array().unwrap().len() as u64
    );
    // Every published row is one of the inputs': none of the secret file.
    let secret_ids: std::collections::BTreeSet<String> =
        secret_cfg.rows().unwrap().map(|r| r.id).collect();
    let mut pretrain = transport
        .consume(&topo.pretrain(), ConsumeOptions { prefetch: 64 })
        .await
        .unwrap();
    let mut batches = 0;
    while let Ok(Ok(Some(d))) =
        tokio::time::timeout(std::time::Duration::from_millis(200), pretrain.next()).await
    {
        let b = pretext_core::batch::decode(d.body().to_vec())
            .unwrap()
            .to_batch();
        for id in &b.seq_ids {
            assert!(
                !secret_ids.contains(id),
                "row {id} of the forged file was published"
            );
        }
        batches += 1;
        d.ack().await.unwrap();
    }
    assert_eq!(batches, summary.batches);
    // The forged task sits in the dead-letter queue with its reason.
    let mut dead = transport
        .consume(&topo.dead(), ConsumeOptions { prefetch: 8 })
        .await
        .unwrap();
    let d = tokio::time::timeout(std::time::Duration::from_secs(5), dead.next())
        .await
        .expect("the forged task was dead-lettered")
        .unwrap()
        .unwrap();
    assert_eq!(d.message_id(), "forged");
    let reason = d
        .headers()
        .get(pretext_mq::message::header::REASON)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("not a task of this run's plan"), "{reason}");
}

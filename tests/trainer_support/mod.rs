//! Helpers shared by the trainer test binaries: deterministic batches, publishing them with their control messages and manifest, a tiny trainer config, and the guard that kills child processes and deletes a namespace.

// Each binary uses a different subset.
#![allow(dead_code)]

pub mod ranks;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pretext_core::batch::{self, Batch, BatchRow, CONTENT_TYPE};
use pretext_core::control::ControlMessage;
use pretext_core::manifest::{ManifestEntry, ManifestWriter};
use pretext_core::task::{MaskConfig, Task};
use pretext_model::{AdamWConfig, ModelConfig};
use pretext_mq::{
    ConsumeOptions, HeaderValue, OutMessage, RabbitConfig, SharedTransport, Topology, Transport,
};
use pretext_trainer::{DeviceChoice, TrainerConfig};

/// The longest any single broker or trainer operation may take.
pub const STEP: Duration = Duration::from_secs(60);

/// A namespace no other test or run uses.
pub fn unique_namespace(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("test-trainer-{name}-{}-{nanos}", std::process::id())
}

/// `n` deterministic batches of `task`: 4 rows each, bucket length 512,
/// true lengths between 300 and 512, ids `{prefix}-{batch}-{row}`.
pub fn batches(task: Task, prefix: &str, n: usize) -> Vec<Batch> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|b| {
            let rows: Vec<BatchRow> = (0..4)
                .map(|r| {
                    let len = 300 + (next() % 213) as usize;
                    // Short runs of one value: a pattern the model can learn.
                    let mut values = Vec::with_capacity(len);
                    while values.len() < len {
                        let v = (next() % 41) as u8;
                        let run = 1 + (next() % 6) as usize;
                        values.extend(std::iter::repeat_n(v, run.min(len - values.len())));
                    }
                    BatchRow {
                        seq_id: format!("{prefix}-{b}-{r}"),
                        values,
                        label: None,
                    }
                })
                .collect();
            Batch::build(task, &MaskConfig::default(), 0, 512, &rows)
        })
        .collect()
}

/// The message a producer publishes for `batch`.
pub fn batch_message(batch: &Batch) -> OutMessage {
    let mut msg =
        OutMessage::new(batch.message_id(), batch.encode(None)).with_content_type(CONTENT_TYPE);
    for (name, value) in batch.headers() {
        let value = match value {
            batch::HeaderValue::Str(s) => HeaderValue::Str(s),
            batch::HeaderValue::Int(i) => HeaderValue::I64(i),
        };
        msg = msg.with_header(name, value);
    }
    msg
}

/// Publishes the batches to `{ns}.pretrain`.
pub async fn publish_batches(transport: &dyn Transport, topology: &Topology, batches: &[Batch]) {
    for b in batches {
        publish(transport, &topology.pretrain(), batch_message(b)).await;
    }
}

/// Publishes `batches` as file task `task_id` would, with its header.
pub async fn publish_task_batches(
    transport: &dyn Transport,
    topology: &Topology,
    task_id: &str,
    batches: &[Batch],
) {
    for b in batches {
        let msg = batch_message(b).with_header(batch::header::FILE_TASK, task_id);
        publish(transport, &topology.pretrain(), msg).await;
    }
}

/// Publishes one message, failing the test on error or timeout.
pub async fn publish(transport: &dyn Transport, queue: &str, msg: OutMessage) {
    tokio::time::timeout(STEP, transport.publish(queue, msg))
        .await
        .expect("publish timed out")
        .expect("publish failed");
}

/// Publishes a control message to `{ns}.control`.
pub async fn control(transport: &dyn Transport, topology: &Topology, msg: ControlMessage) {
    publish(
        transport,
        &topology.control(),
        OutMessage::new(msg.message_id(), msg.to_bytes()),
    )
    .await;
}

/// The plan of `tasks` file tasks of `task`.
pub fn plan(task: Task, tasks: u64) -> ControlMessage {
    ControlMessage::Plan {
        tasks,
        task: task.as_str().into(),
        epochs: 1,
    }
}

/// File task `id` is done, having published `batches`.
pub fn task_done(id: &str, batches: &[Batch]) -> ControlMessage {
    ControlMessage::TaskDone {
        task_id: id.into(),
        batches: batches.len() as u64,
        rows: batches.iter().map(|b| b.rows() as u64).sum(),
        producer: "test".into(),
    }
}

/// Records the batches in the run's manifest, as a producer does once the
/// broker confirmed them.
pub fn manifest(run_dir: &Path, task_id: &str, batches: &[Batch]) {
    let entries: Vec<ManifestEntry> = batches
        .iter()
        .map(|b| ManifestEntry {
            message_id: b.message_id(),
            rows: b.rows() as u64,
            tokens: b.stats().real_tokens,
            task_id: task_id.into(),
        })
        .collect();
    ManifestWriter::open(run_dir, "test")
        .expect("open manifest")
        .append(&entries)
        .expect("append manifest");
}

/// A trainer small enough for tests: width 16, depth 2, one thread, CPU.
pub fn tiny_config(namespace: &str, run_dir: &Path, checkpoint_every: u64) -> TrainerConfig {
    TrainerConfig {
        broker: "memory".into(),
        namespace: namespace.into(),
        run_dir: run_dir.to_path_buf(),
        task: Task::Masked,
        checkpoint_every,
        threads: Some(1),
        device: DeviceChoice::Cpu,
        seed: 1,
        model: ModelConfig {
            width: 16,
            depth: 2,
            ..Default::default()
        },
        optimizer: AdamWConfig {
            lr: 3e-3,
            warmup_steps: 2,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The first `n` messages of `{ns}.dead` as (message id, reason), acked.
pub async fn dead_letters(
    transport: &dyn Transport,
    topology: &Topology,
    n: usize,
) -> Vec<(String, String)> {
    let mut consumer = transport
        .consume(&topology.dead(), ConsumeOptions { prefetch: 16 })
        .await
        .expect("consume the dead-letter queue");
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(STEP, consumer.next())
            .await
            .expect("too few messages in the dead-letter queue")
            .expect("dead-letter consumer failed")
            .expect("dead-letter consumer ended");
        out.push((
            d.message_id().to_owned(),
            d.dead_letter_reason().unwrap_or_default().to_owned(),
        ));
        d.ack().await.expect("ack dead letter");
    }
    out
}

/// Child processes killed and the namespace's queues deleted when dropped,
/// also when the test fails.
pub struct Cleanup {
    pub url: String,
    pub topology: Topology,
    pub children: Vec<Child>,
}

impl Cleanup {
    pub fn new(url: &str, topology: &Topology) -> Self {
        Self {
            url: url.to_owned(),
            topology: topology.clone(),
            children: Vec::new(),
        }
    }

    /// Keeps `child` to kill on drop; returns its index.
    pub fn keep(&mut self, child: Child) -> usize {
        self.children.push(child);
        self.children.len() - 1
    }

    /// Keeps `child` to kill on drop; returns it.
    pub fn keep_mut(&mut self, child: Child) -> &mut Child {
        let i = self.keep(child);
        &mut self.children[i]
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (url, topology) = (self.url.clone(), self.topology.clone());
        // A fresh runtime on its own thread: this may run inside the test's.
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let transport = pretext_mq::connect(&url, RabbitConfig::default()).await?;
                topology.delete(&*transport).await?;
                transport.close().await
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!(
                "could not delete the queues of {}: {deleted:?}",
                self.topology.namespace()
            );
        }
    }
}

/// The broker the tests use: `AMQP_URL`, by default the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Connects to the broker (a missing broker fails the test), declares a
/// fresh namespace named after `name`, and returns its cleanup guard.
pub async fn broker(name: &str) -> (SharedTransport, Topology, Cleanup) {
    let url = amqp_url();
    let transport = pretext_mq::connect(&url, RabbitConfig::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ at {} is unreachable: {e}",
                pretext_mq::redact_url(&url)
            )
        });
    let topology = Topology::new(unique_namespace(name));
    topology.declare(&*transport).await.expect("declare");
    let cleanup = Cleanup::new(&url, &topology);
    (transport, topology, cleanup)
}

//! pretext-producer: reads raw sequences from Parquet, validates them, groups
//! them into length buckets, builds the self-supervised targets and
//! publishes Arrow IPC batches with publisher confirms.
//!
//! # Layout
//! - [`config`]: [`ProducerConfig`], every knob with its default.
//! - [`plan`]: the run's plan (one validation pass, file tasks on
//!   `{ns}.files`, the `Plan` control message), made once per run directory
//!   by whichever producer claims it.
//! - [`work`]: one file task: its row group read, bucketed and turned into
//!   batches on a blocking thread, published through a confirm window.
//! - [`run`]: the service loop: take tasks until none are left.
//!
//! Delivery contract: a task is acked on `{ns}.files` only after all its
//! batches are confirmed, written to the manifest and its `TaskDone` is on
//! the control stream. A producer that dies mid-task leaves the task to be
//! redelivered; the redo publishes the same batches with the same ids.

pub mod config;
pub mod plan;
pub mod work;

use std::future::Future;
use std::time::Duration;

use pretext_core::control::{ControlMessage, FileTask};
use pretext_core::manifest::ManifestWriter;
use pretext_mq::{ConsumeOptions, OutMessage, SharedTransport, Topology};
use serde::Serialize;

pub use config::ProducerConfig;

/// Why the producer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The broker failed (after its own retries).
    #[error("broker: {0}")]
    Mq(#[from] pretext_mq::MqError),
    /// Input could not be read.
    #[error(transparent)]
    Input(#[from] pretext_core::input::InputError),
    /// The run directory could not be used.
    #[error("run directory {path}: {source}")]
    RunDir {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A message on `{ns}.files` is not a file task.
    #[error("bad file task: {0}")]
    BadTask(String),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
}

/// What one producer did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProducerSummary {
    /// File tasks completed by this producer.
    pub tasks: u64,
    /// Sequences published.
    pub sequences: u64,
    /// Batches published (and confirmed).
    pub batches: u64,
    /// Real tokens published.
    pub tokens: u64,
    /// Padding tokens published.
    pub padded_tokens: u64,
    /// Bytes of batch messages.
    pub bytes: u64,
    /// Rows rejected by validation (counted once, by the producer that planned).
    pub rejected_rows: u64,
    /// Valid rows not published because of their split.
    pub skipped_split_rows: u64,
    /// False when the producer stopped early on shutdown.
    pub finished: bool,
}

impl ProducerSummary {
    /// Padding share of the tokens published.
    pub fn padded_fraction(&self) -> f64 {
        let total = self.tokens + self.padded_tokens;
        if total == 0 {
            0.0
        } else {
            self.padded_tokens as f64 / total as f64
        }
    }

    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        format!(
            "produced: {} sequences, {} batches, {} tokens, padded fraction {:.3}, {} rejected rows, {} rows skipped by split, {} tasks",
            self.sequences,
            self.batches,
            self.tokens,
            self.padded_fraction(),
            self.rejected_rows,
            self.skipped_split_rows,
            self.tasks
        )
    }
}

/// Runs one producer until no file task is left, or `shutdown` resolves
/// (then the task in hand is abandoned to another producer: its confirms
/// are awaited, the task message is requeued).
#[tracing::instrument(skip_all, fields(ns = %cfg.ns, producer = %cfg.producer_id))]
pub async fn run(
    cfg: ProducerConfig,
    transport: SharedTransport,
    shutdown: impl Future<Output = ()>,
) -> Result<ProducerSummary, ProducerError> {
    cfg.check()?;
    let topo = Topology::with_config(&cfg.ns, cfg.topology);
    topo.declare(&*transport).await?;
    let mut summary = ProducerSummary::default();
    let plan = plan::ensure_plan(&cfg, &transport, &topo).await?;
    if plan.planned_by == cfg.producer_id {
        summary.rejected_rows = plan.rejected_rows;
    }
    let mut manifest = ManifestWriter::open(&cfg.run_dir, &cfg.producer_id).map_err(|e| {
        ProducerError::RunDir {
            path: cfg.run_dir.clone(),
            source: e,
        }
    })?;
    let mut publisher = transport.publisher(&topo.pretrain()).await?;
    let mut tasks = transport
        .consume(&topo.files(), ConsumeOptions { prefetch: 1 })
        .await?;
    let progress = work::progress_bar(plan.tasks.len() as u64);
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutdown: no new tasks");
                progress.abandon();
                return Ok(summary);
            }
            next = tokio::time::timeout(Duration::from_millis(cfg.idle_check_ms), tasks.next()) => next,
        };
        let delivery = match next {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                // Nothing delivered for a while: done when no task is waiting.
                // (Tasks held by live peers are theirs; a dead peer's come
                // back to whichever producer runs next.)
                if transport.queue_depth(&topo.files()).await? == 0 {
                    break;
                }
                continue;
            }
        };
        let task = match FileTask::from_bytes(delivery.body()) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("not a file task: {e}");
                tracing::warn!(%reason, "rejecting message on the files queue");
                let _ = delivery.reject(&reason).await;
                continue;
            }
        };
        let done = tokio::select! {
            () = &mut shutdown => None,
            r = work::run_task(&cfg, &plan, &task, &mut publisher) => Some(r?),
        };
        let Some(done) = done else {
            tracing::info!(task = %task.task_id, "shutdown mid-task: requeueing it");
            let _ = delivery.nack_requeue().await;
            progress.abandon();
            return Ok(summary);
        };
        manifest
            .append(&done.entries)
            .map_err(|e| ProducerError::RunDir {
                path: cfg.run_dir.clone(),
                source: e,
            })?;
        let msg = ControlMessage::TaskDone {
            task_id: task.task_id.clone(),
            batches: done.entries.len() as u64,
            rows: done.stats.sequences,
            producer: cfg.producer_id.clone(),
        };
        transport
            .publish(
                &topo.control(),
                OutMessage::new(msg.message_id(), msg.to_bytes()),
            )
            .await?;
        if let Err(e) = delivery.ack().await {
            // The task comes back to someone; its redo republishes the same ids.
            tracing::warn!(task = %task.task_id, error = %e, "task ack failed; it will be redone");
        }
        summary.tasks += 1;
        summary.sequences += done.stats.sequences;
        summary.batches += done.entries.len() as u64;
        summary.tokens += done.stats.tokens;
        summary.padded_tokens += done.stats.padded_tokens;
        summary.bytes += done.stats.bytes;
        summary.skipped_split_rows += done.stats.skipped_split_rows;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let msg = ControlMessage::ProducerDone {
        producer: cfg.producer_id.clone(),
        batches: summary.batches,
    };
    transport
        .publish(
            &topo.control(),
            OutMessage::new(msg.message_id(), msg.to_bytes()),
        )
        .await?;
    summary.finished = true;
    tracing::info!(
        batches = summary.batches,
        tokens = summary.tokens,
        "producer finished"
    );
    Ok(summary)
}

//! pretext-producer: reads raw sequences from Parquet, validates them, groups
//! them into length buckets, builds the self-supervised targets and
//! publishes Arrow IPC batches with publisher confirms.
//!
//! # Layout
//! - [`config`]: [`ProducerConfig`], every knob with its default.
//! - [`plan`]: the run's plan (one pass over the ids, file tasks on
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

pub mod cli;
pub mod config;
pub mod plan;
pub mod work;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use pretext_core::control::{ControlMessage, FileTask};
use pretext_core::manifest::ManifestWriter;
use pretext_mq::{ConsumeOptions, Consumer, OutMessage, Publisher, SharedTransport, Topology};
use pretext_ops::names;
use serde::Serialize;
use work::TaskOutput;

pub use config::ProducerConfig;

/// What a task worker hands back: its publisher, and the task's output
/// (`None` for a message that was not a task).
type Worked = Result<(Box<dyn Publisher>, Option<TaskOutput>), ProducerError>;

/// What every task worker of one producer shares.
struct TaskContext {
    cfg: ProducerConfig,
    /// Turns true on shutdown: workers stop building and hand their task back.
    stop: watch::Receiver<bool>,
    plan: plan::Plan,
    /// The plan's tasks by id: what a delivery on `{ns}.files` must be.
    planned: std::collections::HashMap<String, FileTask>,
    transport: SharedTransport,
    topo: Topology,
    manifest: Mutex<ManifestWriter>,
}

/// One delivery of `{ns}.files`, start to ack: the batches confirmed, the
/// manifest synced, `TaskDone` on the control stream, then the ack. Returns
/// the publisher for the next task, and `None` for a message that was not a
/// task (dead-lettered). `building` is released once every batch is sent,
/// so that the next task builds while this one waits for its confirms.
async fn process(
    ctx: Arc<TaskContext>,
    delivery: pretext_mq::Delivery,
    mut publisher: Box<dyn Publisher>,
    building: OwnedSemaphorePermit,
) -> Worked {
    let task = match FileTask::from_bytes(delivery.body()) {
        Ok(t) => t,
        Err(e) => {
            let reason = format!("not a file task: {e}");
            tracing::warn!(%reason, "rejecting message on the files queue");
            let _ = delivery.reject(&reason).await;
            return Ok((publisher, None));
        }
    };
    // Only a task of this run's plan is worked on: a forged one (any path
    // the producer can read) or a stale one from another plan goes to the
    // dead-letter queue unread.
    if ctx.planned.get(&task.task_id) != Some(&task) {
        let reason = format!(
            "not a task of this run's plan: {} on {} (forged, or left from another run)",
            task.task_id, task.file
        );
        tracing::warn!(%reason, "rejecting message on the files queue");
        let _ = delivery.reject(&reason).await;
        return Ok((publisher, None));
    }
    let stop = ctx.stop.clone();
    let t0 = std::time::Instant::now();
    let Some(done) =
        work::run_task(&ctx.cfg, &ctx.plan, &task, &mut publisher, stop, building).await?
    else {
        // Shutdown: what was sent is confirmed; the task goes back to the
        // queue for whichever producer runs next, which republishes it.
        if let Err(e) = delivery.nack_requeue().await {
            tracing::warn!(task = %task.task_id, error = %e, "requeueing the task failed; the broker returns it when our channel closes");
        }
        return Ok((publisher, None));
    };
    let sent_confirmed = t0.elapsed();
    ctx.manifest
        .lock()
        .expect("manifest lock")
        .append(&done.entries)
        .map_err(|e| ProducerError::RunDir {
            path: ctx.cfg.run_dir.clone(),
            source: e,
        })?;
    let msg = ControlMessage::TaskDone {
        task_id: task.task_id.clone(),
        batches: done.entries.len() as u64,
        rows: done.stats.sequences,
        producer: ctx.cfg.producer_id.clone(),
    };
    ctx.transport
        .publish(
            &ctx.topo.control(),
            OutMessage::new(msg.message_id(), msg.to_bytes()),
        )
        .await?;
    let recorded = t0.elapsed();
    if let Err(e) = delivery.ack().await {
        // The task comes back to someone; its redo republishes the same ids.
        tracing::warn!(task = %task.task_id, error = %e, "task ack failed; it will be redone");
    }
    tracing::debug!(
        task = %task.task_id,
        sent_confirmed_ms = sent_confirmed.as_millis() as u64,
        recorded_ms = recorded.as_millis() as u64,
        acked_ms = t0.elapsed().as_millis() as u64,
        "task done"
    );
    Ok((publisher, Some(done)))
}

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
    /// Rows rejected by validation in the epoch-0 tasks this producer
    /// completed (quarantined in `RUN_DIR/quarantine/`, one file per task).
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

/// Runs one producer until no file task is left, or `shutdown` resolves.
/// On shutdown the tasks in hand stop building, the confirms of what they
/// sent are awaited and the task messages are requeued (a task that was
/// already confirmed finishes: manifest, `TaskDone`, ack); after
/// `shutdown_grace_secs` whatever is still running is abandoned (its task
/// comes back when the connection closes). Returns `Ok` with
/// `finished: false`.
#[tracing::instrument(skip_all, fields(ns = %cfg.ns, producer = %cfg.producer_id))]
pub async fn run(
    cfg: ProducerConfig,
    transport: SharedTransport,
    shutdown: impl Future<Output = ()>,
) -> Result<ProducerSummary, ProducerError> {
    cfg.check()?;
    // Every producer counter is exported from the start, at 0 until it moves.
    for name in [
        names::PRODUCER_BATCHES_PUBLISHED,
        names::PRODUCER_BATCHES_CONFIRMED,
        names::PRODUCER_ROWS_REJECTED,
        names::PRODUCER_TASKS,
        names::PRODUCER_TOKENS,
        names::PRODUCER_BYTES,
        names::PUBLISH_NACKS,
    ] {
        metrics::counter!(name).increment(0);
    }
    let t0 = std::time::Instant::now();
    let topo = Topology::with_config(&cfg.ns, cfg.topology);
    topo.declare(&*transport).await?;
    let declared = t0.elapsed();
    let mut summary = ProducerSummary::default();
    let plan = plan::ensure_plan(&cfg, &transport, &topo).await?;
    tracing::debug!(
        declare_ms = declared.as_millis() as u64,
        plan_ms = (t0.elapsed() - declared).as_millis() as u64,
        "topology declared, plan in hand"
    );
    let (stop_tx, stop) = watch::channel(false);
    let manifest = ManifestWriter::open(&cfg.run_dir, &cfg.producer_id).map_err(|e| {
        ProducerError::RunDir {
            path: cfg.run_dir.clone(),
            source: e,
        }
    })?;
    let planned = plan
        .tasks
        .iter()
        .map(|t| (t.task_id.clone(), t.clone()))
        .collect();
    let shared = Arc::new(TaskContext {
        cfg: cfg.clone(),
        stop,
        planned,
        plan,
        transport: transport.clone(),
        topo: topo.clone(),
        manifest: Mutex::new(manifest),
    });
    // Up to `concurrency` tasks build batches at once, each on a blocking
    // thread; a task that has sent everything gives its building slot to
    // the next while it waits for its confirms. Each running task owns a
    // publisher (made when none is free), so at most twice `concurrency`
    // tasks are in hand: the prefetch of the files queue.
    let concurrency = cfg.concurrency.max(1);
    let building = Arc::new(Semaphore::new(concurrency));
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut publishers: Vec<Box<dyn Publisher>> = Vec::with_capacity(2 * concurrency);
    let files = ConsumeOptions {
        prefetch: (2 * concurrency) as u16,
    };
    let mut tasks = transport.consume(&topo.files(), files).await?;
    // Set once the files queue looked empty and the consumer was cancelled:
    // the tasks the broker had already sent are still taken, then the
    // consumer ends.
    let mut draining = false;
    // Consumers replaced after a drain, kept until the run ends: dropping
    // one closes its channel, which would hand the tasks still running from
    // it back to the queue, to be done twice.
    let mut retired: Vec<Box<dyn Consumer>> = Vec::new();
    let progress = work::progress_bar(shared.plan.tasks.len() as u64);
    let mut running: JoinSet<Worked> = JoinSet::new();
    let mut exhausted = false;
    // Tasks this producer completed: once they are the whole plan, there is
    // nothing left for anyone, and no idle wait is needed to know it.
    let all_tasks: std::collections::HashSet<&str> = shared
        .plan
        .tasks
        .iter()
        .map(|t| t.task_id.as_str())
        .collect();
    let mut completed: std::collections::HashSet<String> = std::collections::HashSet::new();
    tokio::pin!(shutdown);
    loop {
        if exhausted && running.is_empty() {
            break;
        }
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!(running = running.len(), "shutdown: stopping the tasks in hand after their confirms");
                let _ = stop_tx.send(true);
                progress.abandon();
                let grace = Duration::from_secs(cfg.shutdown_grace_secs);
                let wound_down = tokio::time::timeout(grace, async {
                    while let Some(joined) = running.join_next().await {
                        match joined {
                            Ok(Ok((_, Some(done)))) => add_task(&mut summary, &done),
                            Ok(Ok((_, None))) => {}
                            Ok(Err(e)) => tracing::warn!(error = %e, "a task failed while stopping; it will be redone"),
                            Err(e) => tracing::warn!(error = %e, "a task worker failed while stopping"),
                        }
                    }
                })
                .await;
                if wound_down.is_err() {
                    // Their tasks come back when our channel closes; the redo
                    // republishes the same batch ids.
                    tracing::warn!(running = running.len(), grace_secs = cfg.shutdown_grace_secs, "shutdown grace period over: abandoning the tasks still running");
                    running.abort_all();
                }
                return Ok(summary);
            }
            permit = building.clone().acquire_owned(),
                if !exhausted && slot.is_none() && running.len() < 2 * concurrency =>
            {
                slot = Some(permit.expect("the building semaphore is never closed"));
            }
            next = tokio::time::timeout(Duration::from_millis(cfg.idle_check_ms), tasks.next()),
                if !exhausted && slot.is_some() =>
            {
                match next {
                    Ok(Ok(Some(delivery))) => {
                        let publisher = match publishers.pop() {
                            Some(p) => p,
                            None => transport.publisher(&topo.pretrain()).await?,
                        };
                        let permit = slot.take().expect("taken only with a slot");
                        running.spawn(process(shared.clone(), delivery, publisher, permit));
                    }
                    Ok(Ok(None)) if draining => {
                        // Every task sent to us is in hand. One that came back
                        // meanwhile (our channel lost, a peer gone) is taken
                        // with a fresh consumer.
                        if transport.queue_depth(&topo.files()).await? == 0 {
                            exhausted = true;
                        } else {
                            let fresh = transport.consume(&topo.files(), files).await?;
                            retired.push(std::mem::replace(&mut tasks, fresh));
                            draining = false;
                        }
                    }
                    Ok(Ok(None)) => exhausted = true,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) if draining => {}
                    Err(_) => {
                        // Nothing delivered for a while, and no task waiting.
                        // The depth counts only tasks not yet sent to anyone,
                        // so a task the broker already sent us, still on its
                        // way, is not in it: cancel, and take what was sent
                        // until the consumer ends. (Tasks held by live peers
                        // are theirs; a dead peer's come back to whichever
                        // producer runs next.)
                        if transport.queue_depth(&topo.files()).await? == 0 {
                            tasks.cancel().await?;
                            draining = true;
                        }
                    }
                }
            }
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let (publisher, done) = joined
                    .map_err(|e| ProducerError::Config(format!("task worker failed: {e}")))??;
                publishers.push(publisher);
                if let Some(done) = done {
                    add_task(&mut summary, &done);
                    progress.inc(1);
                    if all_tasks.contains(done.task_id.as_str()) {
                        completed.insert(done.task_id);
                    }
                    if completed.len() == all_tasks.len() {
                        exhausted = true;
                    }
                }
            }
        }
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

/// Counts a completed task into the summary and the metrics.
fn add_task(summary: &mut ProducerSummary, done: &TaskOutput) {
    summary.tasks += 1;
    summary.sequences += done.stats.sequences;
    summary.batches += done.entries.len() as u64;
    summary.tokens += done.stats.tokens;
    summary.padded_tokens += done.stats.padded_tokens;
    summary.bytes += done.stats.bytes;
    summary.skipped_split_rows += done.stats.skipped_split_rows;
    summary.rejected_rows += done.stats.rejected_rows;
    metrics::counter!(names::PRODUCER_ROWS_REJECTED).increment(done.stats.rejected_rows);
    metrics::counter!(names::PRODUCER_TASKS).increment(1);
}

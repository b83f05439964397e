//! The trainer loop: consume, decode, dedupe, step, checkpoint, ack.
//!
//! Exactly once: a batch's delivery is acked only after a durable checkpoint
//! records its id; a delivery whose id a checkpoint (or the current,
//! uncheckpointed stretch) already applied is never applied again. So after
//! any crash the broker redelivers exactly the batches the latest checkpoint
//! lacks, and the union of the checkpoints' applied ids says what the model
//! has seen.

mod checkpoint;
mod elastic;
mod parallel;
mod round;
mod start;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use pretext_core::batch::{DecodedBatch, decode};
use pretext_datasets::trivial::BatchTrivial;
use pretext_mq::{ConsumeOptions, Consumer, Delivery, SharedTransport, Topology};
use pretext_ops::names;
use serde::Serialize;
use tracing::instrument;

use crate::checkpoints::AppliedHistory;
use crate::config::TrainerConfig;
use crate::control::{ControlWatch, Streams};
use crate::error::TrainError;
use crate::metrics::{MetricsWriter, RoundPhases, StepMetrics, metrics_file};
use crate::step::{Learner, is_batch_error};
use start::{build_learner, progress_bar};

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every planned task is done and every batch it published is applied.
    EndOfData,
    /// `max_steps` reached.
    MaxSteps,
    /// The shutdown future completed.
    Shutdown,
    /// Elastic: the group re-forms (a member joins or leaves) after a
    /// checkpoint; this process goes on in the next generation.
    Reform,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSummary {
    /// Why it ended.
    pub stop: StopReason,
    /// Optimiser steps of the whole run, resumed ones included.
    pub step: u64,
    /// The step of the checkpoint this run resumed from.
    pub resumed_from: Option<u64>,
    /// Batches applied by this process.
    pub applied: u64,
    /// Distinct batches applied by the run, resumed ones included.
    pub applied_total: u64,
    /// Deliveries of already applied batches, acked and skipped.
    pub skipped_duplicates: u64,
    /// Deliveries rejected to the dead-letter queue.
    pub rejected: u64,
    /// The newest checkpoint at the end.
    pub last_checkpoint: Option<PathBuf>,
    /// Loss of the last step of this process.
    pub last_loss: Option<f64>,
    /// Ranks of the run (1 without data parallelism).
    pub world_size: usize,
    /// This process's rank.
    pub rank: usize,
    /// Seconds this rank spent in the gradient all-reduces (from ranks in
    /// step, so waiting for a slower rank is not counted); 0 without data
    /// parallelism.
    pub comm_secs: f64,
}

/// Runs a trainer until the data ends, `max_steps`, or `shutdown`
/// completes, connecting to `config.broker`. On shutdown it finishes the
/// current step, checkpoints, acks, and returns `Ok`.
#[instrument(skip_all, fields(ns = %config.namespace))]
pub async fn run(
    config: TrainerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let transport = pretext_mq::connect(&config.broker, config.rabbit).await?;
    let memory = config.broker.trim().starts_with("memory");
    let result = run_with_transport(config, transport.clone(), shutdown).await;
    // A named memory transport is shared with the rest of the process; a
    // broker connection is ours to close.
    if !memory && let Err(err) = transport.close().await {
        tracing::debug!(error = %err, "closing the transport failed");
    }
    result
}

/// [`run`] over a transport the caller provides (tests, `pretext demo`);
/// `config.broker` is ignored and the transport is left open.
#[instrument(skip_all, fields(ns = %config.namespace))]
pub async fn run_with_transport(
    config: TrainerConfig,
    transport: SharedTransport,
    shutdown: impl Future<Output = ()>,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let topology = Topology::with_config(config.namespace.clone(), config.topology);
    topology.declare(&*transport).await?;
    if config.world.as_ref().is_some_and(|w| w.elastic.is_some()) {
        return elastic::run(config, transport, topology, shutdown).await;
    }
    // Data parallel: meet the other ranks before reading the checkpoints, so
    // that rank 0 cannot write one while another rank is still loading.
    let group = match &config.world {
        Some(world) => Some(parallel::join(world, config.device.device()?).await?),
        None => None,
    };
    run_session(config, &transport, topology, group, None, shutdown).await
}

/// A run with a fixed group (or none), or one generation of an elastic run
/// (`generation` given, with `group` its group): from the newest checkpoint
/// until the run ends or, elastic, the group re-forms.
async fn run_session(
    config: TrainerConfig,
    transport: &SharedTransport,
    topology: Topology,
    group: Option<pretext_dist::ProcessGroup>,
    generation: Option<elastic::GenerationStart>,
    shutdown: impl Future<Output = ()>,
) -> Result<TrainSummary, TrainError> {
    // A crash between a checkpoint and its ledger line: the ledger gets the
    // line now (rank 0 writes; the others only read).
    if group.as_ref().is_none_or(|g| g.rank() == 0) {
        let repaired = AppliedHistory::repair_ledger(&config.checkpoint_dir())?;
        if repaired > 0 {
            tracing::info!(
                repaired,
                "ledger lines of checkpoints written just before a crash restored"
            );
        }
    }
    let history = AppliedHistory::load(&config.checkpoint_dir())?;
    let mut start = build_learner(&config)?;
    let (generation, joins) = match generation {
        Some(g) => (Some(g.record), Some(g.joins)),
        None => (None, None),
    };
    let dist = match (group, &config.world) {
        (Some(group), Some(world)) => {
            let (dist, learner) =
                parallel::Dist::start(group, world, start.learner, &history, joins).await?;
            start.learner = learner;
            Some(dist)
        }
        _ => None,
    };
    let rank = dist.as_ref().map_or(0, parallel::Dist::rank);
    metrics::gauge!(names::TRAINER_WORLD_SIZE)
        .set(dist.as_ref().map_or(1, parallel::Dist::world) as f64);
    if let Some(record) = generation {
        elastic::started(&config, record, rank, start.resumed_from.unwrap_or(0))?;
    }
    let metrics = MetricsWriter::open_file(
        &config.run_dir,
        &metrics_file(rank),
        start.resumed_from.unwrap_or(0),
    )?;
    let streams = Streams {
        control: topology.control(),
        dead: topology.dead(),
        batches: topology.pretrain(),
    };
    let mut control = ControlWatch::start(
        transport,
        &streams,
        config.task,
        config.trusted_publishers.clone(),
    )
    .await?;
    let prefetch = config.effective_prefetch();
    let mut consumer = transport
        .consume(&topology.pretrain(), ConsumeOptions { prefetch })
        .await?;
    tracing::info!(
        step = start.learner.optimizer.step_count(),
        resumed_from = ?start.resumed_from,
        applied = history.distinct().len(),
        prefetch,
        task = %config.task,
        "trainer started"
    );
    if u64::from(prefetch) < config.checkpoint_every {
        tracing::info!(
            prefetch,
            checkpoint_every = config.checkpoint_every,
            "prefetch is smaller than the checkpoint interval: checkpoints come every {prefetch} steps"
        );
    }
    let bar = (config.progress && rank == 0).then(progress_bar);
    let mut session = Session {
        applied: history.distinct().into_iter().map(str::to_owned).collect(),
        history,
        learner: Some(start.learner),
        tokens_seen: start.tokens_seen,
        resumed_from: start.resumed_from,
        last_checkpoint: start.checkpoint,
        pending: Vec::new(),
        pending_steps: 0,
        held: HashMap::new(),
        held_count: 0,
        pool: Vec::new(),
        pending_since: None,
        idle_since: Instant::now(),
        metrics,
        bar,
        counts: Counts::default(),
        config,
        topology,
        dist,
    };
    let stop = if session.dist.is_some() {
        session
            .train_parallel(&mut *consumer, &mut control, shutdown)
            .await
    } else {
        session.train(&mut *consumer, &mut control, shutdown).await
    };
    let stop = match stop {
        Ok(stop) => stop,
        Err(err) => {
            // Whatever failed, work already done is worth keeping when the
            // model is intact: record it so its redeliveries are skipped.
            // Not in a data-parallel run: a checkpoint needs every rank, and
            // the others are gone or failing too; the batches since the last
            // one stay unacked and come back to the restarted ranks.
            if session.dist.is_none()
                && !matches!(err, TrainError::Model(_) | TrainError::Panic(_))
                && let Err(ckpt) = session.checkpoint().await
            {
                tracing::warn!(error = %ckpt, "could not checkpoint after the error");
            }
            return Err(err);
        }
    };
    session.checkpoint().await?;
    let dead = if stop == StopReason::EndOfData {
        session.drain(&mut *consumer).await;
        control.dead_batches(&session.applied)
    } else {
        Vec::new()
    };
    drop(consumer);
    session.leave_group().await?;
    if !dead.is_empty() {
        // Loudly: the run is complete except for these, which never come.
        if rank == 0 {
            crate::dead::record_dead(&session.config.checkpoint_dir(), &dead)?;
        }
        let summary = session.finish(stop);
        return Err(TrainError::DeadLettered {
            queue: streams.dead,
            dead,
            step: summary.step,
        });
    }
    Ok(session.finish(stop))
}

/// Counters for the summary.
#[derive(Debug, Default)]
struct Counts {
    applied: u64,
    skipped: u64,
    rejected: u64,
    last_loss: Option<f64>,
}

/// The state of one running trainer.
struct Session {
    config: TrainerConfig,
    topology: Topology,
    /// `None` only while a step or checkpoint runs on the blocking pool.
    learner: Option<Learner>,
    /// Applied ids recorded by checkpoints.
    history: AppliedHistory,
    /// Every applied id: `history` plus `pending`.
    applied: HashSet<String>,
    /// Ids applied since the last checkpoint, in order (by every rank, in
    /// rank order within a step, in a data-parallel run).
    pending: Vec<String>,
    /// Optimiser steps since the last checkpoint.
    pending_steps: u64,
    /// Their deliveries, unacked until the next checkpoint (a republished
    /// copy of a pending batch is held with it and acked with it).
    held: HashMap<String, Vec<Delivery>>,
    /// Deliveries in `held`: they use up the prefetch.
    held_count: usize,
    /// Data parallel: deliveries taken from the consumer and not yet
    /// looked at (the largest goes first; see `parallel`).
    pool: Vec<Delivery>,
    /// When the oldest pending batch was applied.
    pending_since: Option<Instant>,
    /// End of the last step or checkpoint: waiting for data starts here.
    idle_since: Instant,
    tokens_seen: u64,
    resumed_from: Option<u64>,
    last_checkpoint: Option<PathBuf>,
    metrics: MetricsWriter,
    bar: Option<ProgressBar>,
    counts: Counts,
    /// This rank's process group, in a data-parallel run.
    dist: Option<parallel::Dist>,
}

/// A delivery ready to step on: not applied yet, decoded, of this task.
struct Ready {
    id: String,
    delivery: Delivery,
    batch: DecodedBatch,
}

impl Session {
    fn learner(&self) -> &Learner {
        self.learner
            .as_ref()
            .expect("the learner is back after every blocking task")
    }

    fn step_count(&self) -> u64 {
        self.learner().optimizer.step_count()
    }

    /// The main loop; returns why it stopped, with pending work not yet
    /// checkpointed.
    async fn train(
        &mut self,
        consumer: &mut dyn Consumer,
        control: &mut ControlWatch,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StopReason, TrainError> {
        tokio::pin!(shutdown);
        let mut control_alive = true;
        loop {
            if let Some(stop) = self.finished(control) {
                return Ok(stop);
            }
            if self.checkpoint_due() {
                self.checkpoint().await?;
            }
            let deadline = self.pending_since.map(|t| {
                tokio::time::Instant::from_std(t + Duration::from_secs(self.config.checkpoint_secs))
            });
            let next = tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!(step = self.step_count(), "shutdown requested");
                    return Ok(StopReason::Shutdown);
                }
                changed = control.changed(), if control_alive => {
                    if changed.is_err() {
                        control_alive = false;
                        control.finish().await?;
                        tracing::warn!("the control stream ended; the run can only stop at max_steps or on shutdown");
                    }
                    if let (Some(bar), Some(total)) = (&self.bar, control.total()) {
                        bar.set_length(total);
                    }
                    continue;
                }
                () = sleep_until(deadline) => {
                    // The oldest held delivery is getting old: checkpoint now.
                    self.checkpoint().await?;
                    continue;
                }
                next = consumer.next() => next?,
            };
            let Some(delivery) = next else {
                return Err(TrainError::ConsumerEnded {
                    queue: consumer.queue().to_owned(),
                });
            };
            self.handle(delivery).await?;
        }
    }

    /// Whether the run is complete: every planned batch applied, or in the
    /// dead-letter queue (then the run ends with an error naming them).
    fn finished(&self, control: &ControlWatch) -> Option<StopReason> {
        if control
            .total()
            .is_some_and(|t| self.applied.len() as u64 + control.dead_count(&self.applied) >= t)
        {
            return Some(StopReason::EndOfData);
        }
        if self
            .config
            .max_steps
            .is_some_and(|m| self.step_count() >= m)
        {
            return Some(StopReason::MaxSteps);
        }
        None
    }

    fn checkpoint_due(&self) -> bool {
        !self.pending.is_empty()
            && (self.pending_steps >= self.config.checkpoint_every
                // No more deliveries come while the prefetch is full of held ones.
                || self.held_count >= usize::from(self.config.effective_prefetch())
                || self
                    .pending_since
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(self.config.checkpoint_secs)))
    }

    /// Skips (acks, or holds with its pending original) a batch already
    /// applied, rejects one that cannot be used, and returns the rest decoded.
    async fn prepare(&mut self, delivery: Delivery) -> Option<Ready> {
        let id = delivery.message_id().to_owned();
        if id.is_empty() {
            self.reject(
                delivery,
                "batch has no message_id, so a redelivery could not be recognised",
            )
            .await;
            return None;
        }
        if !self.config.trusts(delivery.user_id()) {
            let reason = format!(
                "published by `{}`, not one of the trusted publishers",
                delivery.user_id().unwrap_or("an unnamed user")
            );
            self.reject(delivery, &reason).await;
            return None;
        }
        if self.applied.contains(&id) {
            // Applied since the last checkpoint (by this rank or, data
            // parallel, by another, which may die before the checkpoint:
            // then this delivery is the one that must come back): held
            // and acked with the checkpoint.
            let pending =
                self.held.contains_key(&id) || (self.dist.is_some() && self.pending.contains(&id));
            if pending {
                tracing::debug!(
                    id,
                    "another copy of a batch applied since the last checkpoint; acked with it"
                );
                self.held.entry(id).or_default().push(delivery);
                self.held_count += 1;
            } else {
                tracing::debug!(
                    id,
                    redelivered = delivery.redelivered(),
                    "batch already applied; skipped"
                );
                if let Err(err) = delivery.ack().await {
                    tracing::warn!(id, error = %err, "ack of a skipped batch failed; it will come again");
                }
            }
            self.counts.skipped += 1;
            metrics::counter!(names::TRAINER_DUPLICATES).increment(1);
            return None;
        }
        let batch = match decode(delivery.body().to_vec()) {
            Ok(batch) => batch,
            Err(err) => {
                self.reject(delivery, &err.to_string()).await;
                return None;
            }
        };
        if batch.task != self.config.task {
            let reason = format!(
                "batch task `{}` does not match this trainer's task `{}`",
                batch.task, self.config.task
            );
            self.reject(delivery, &reason).await;
            return None;
        }
        Some(Ready {
            id,
            delivery,
            batch,
        })
    }

    /// Skips, rejects or applies one delivery.
    async fn handle(&mut self, delivery: Delivery) -> Result<(), TrainError> {
        let Some(Ready {
            id,
            delivery,
            batch,
        }) = self.prepare(delivery).await
        else {
            return Ok(());
        };
        let stats = batch.stats();
        let trivial = batch.trivial().accuracy();
        let bucket_len = batch.bucket_len as u64;
        let started = Instant::now();
        let mut learner = self.learner.take().expect("learner present");
        let (learner, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = learner.step(&batch);
            (learner, outcome)
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))?;
        self.learner = Some(learner);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) if is_batch_error(&err) => {
                self.reject(delivery, &format!("batch unusable by the model: {err}"))
                    .await;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        let now = Instant::now();
        let step_secs = now.duration_since(self.idle_since).as_secs_f64();
        let wait_secs = started.duration_since(self.idle_since).as_secs_f64();
        self.idle_since = now;
        self.applied.insert(id.clone());
        self.pending.push(id.clone());
        self.pending_steps += 1;
        self.held.entry(id.clone()).or_default().push(delivery);
        self.held_count += 1;
        self.pending_since.get_or_insert(now);
        self.tokens_seen += stats.real_tokens;
        self.counts.applied += 1;
        metrics::counter!(names::TRAINER_BATCHES_APPLIED).increment(1);
        self.counts.last_loss = Some(outcome.loss);
        let total_positions = (stats.rows * bucket_len).max(1) as f64;
        let m = StepMetrics {
            step: outcome.stats.step,
            loss: outcome.loss,
            accuracy: outcome.accuracy,
            tokens_per_s: stats.real_tokens as f64 / step_secs.max(1e-9),
            padded_fraction: stats.padded_tokens as f64 / total_positions,
            data_wait_fraction: if step_secs > 0.0 {
                wait_secs / step_secs
            } else {
                0.0
            },
            lr: outcome.stats.lr,
            grad_norm: outcome.stats.grad_norm,
            rows: stats.rows,
            bucket_len,
            real_tokens: stats.real_tokens,
            loss_tokens: outcome.count,
            step_secs,
            batch_id: id,
            trivial: Some(trivial),
            phases: Some(RoundPhases {
                backward: outcome.backward_secs,
                apply: outcome.apply_secs,
                ..RoundPhases::default()
            }),
        };
        self.record_step(&m, 0)?;
        Ok(())
    }

    /// Writes a step's metrics line, logs it, and moves the progress bar;
    /// shared by the single-process and the data-parallel loops.
    pub(crate) fn record_step(&mut self, m: &StepMetrics, rank: usize) -> Result<(), TrainError> {
        self.metrics.write(m)?;
        metrics::counter!(names::TRAINER_STEPS).increment(1);
        metrics::counter!(names::TRAINER_TOKENS).increment(m.real_tokens);
        metrics::gauge!(names::TRAINER_STEP).set(m.step as f64);
        metrics::gauge!(names::TRAINER_LOSS).set(m.loss);
        metrics::gauge!(names::TRAINER_TOKENS_PER_SECOND).set(m.tokens_per_s);
        tracing::debug!(
            step = m.step,
            rank,
            loss = m.loss,
            accuracy = m.accuracy,
            tokens_per_s = m.tokens_per_s,
            batch = m.batch_id,
            "step"
        );
        if let Some(bar) = &self.bar {
            bar.set_position(self.applied.len() as u64);
            bar.set_message(format!(
                "step {} loss {:.4} acc {:.3}",
                m.step, m.loss, m.accuracy
            ));
        }
        Ok(())
    }

    /// Moves a delivery to the dead-letter queue with `reason`. A failure
    /// leaves it unacked (it comes back, and is rejected again); the trainer
    /// goes on either way.
    async fn reject(&mut self, delivery: Delivery, reason: &str) {
        let id = delivery.message_id().to_owned();
        tracing::warn!(id, reason, dead = %self.topology.dead(), "rejecting a delivery to the dead-letter queue");
        if let Err(err) = delivery.reject(reason).await {
            tracing::warn!(id, error = %err, "could not dead-letter the delivery");
        }
        self.counts.rejected += 1;
        metrics::counter!(names::TRAINER_REJECTED).increment(1);
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

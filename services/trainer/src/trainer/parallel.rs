//! Data-parallel training, like PyTorch DDP on the same engine (c10d's
//! Gloo for a model on the CPU, NCCL for one on CUDA, through
//! `pretext-dist`). Every rank consumes its own batches from
//! the shared queue; each optimiser step is one *round* that every rank
//! takes together:
//!
//! 1. each rank waits up to `batch_wait_ms` for a batch it has not applied,
//!    and writes the batch's id to the store;
//! 2. one small all-reduce agrees on flags (shutdown, finished, checkpoint
//!    wanted) and on which ranks hold a batch, so a rank without one never
//!    leaves another waiting: it steps with zero gradients and zero tokens;
//! 3. each rank reads the others' ids (a copy of the batch a lower rank
//!    holds this round is not applied twice), runs backward on its batch,
//!    and the ranks all-reduce the loss sums and counts, then the gradients
//!    in flat buckets; each divides by the global loss-token count and
//!    steps AdamW, so the update is the one a single process would make on
//!    the union of the round's batches;
//! 4. every rank records every rank's applied ids, so the exactly-once
//!    bookkeeping (`pending`, `applied`) is the same on all ranks.
//!
//! Checkpoints are collective too: rank 0 writes, the ranks agree that it is
//! durable and that their parameters hash the same, then each acks its own
//! deliveries. A failed collective (a rank died or hung past the timeout)
//! ends every rank with an error naming the lost rank and nothing acked.
//!
//! Elastic (`elastic`), the agreement also carries the ranks that leave
//! (SIGTERM) and whether members wait to join: then the ranks stop the
//! round, checkpoint, and the group re-forms; a failed collective makes the
//! survivors re-form from the last durable checkpoint instead of failing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pretext_datasets::trivial::BatchTrivial;
use pretext_dist::{
    Backend, DistError, GradBuckets, GroupOptions, JoinWatch, ProcessGroup, digest, process_name,
};
use pretext_model::checkpoint::checkpoint_dir_name;
use pretext_model::tch::{Device, Tensor};
use pretext_mq::{Consumer, Delivery};

use super::round::parallel_step;
use super::{Ready, Session, StopReason};
use crate::checkpoints::AppliedHistory;
use crate::config::WorldConfig;
use crate::control::ControlWatch;
use crate::error::TrainError;
use crate::metrics::{RoundPhases, StepMetrics};
use crate::step::Learner;

/// Store key of `rank`'s batch id in `round` (under the group's prefix:
/// an elastic generation's keys are its own).
fn round_key(group: &ProcessGroup, round: u64, rank: usize) -> String {
    group.key(&format!("round/{round}/{rank}"))
}

/// This rank's membership of the run.
pub(super) struct Dist {
    group: Arc<ProcessGroup>,
    /// The gradient buckets, planned once from the parameters.
    buckets: Arc<GradBuckets>,
    /// How long a rank without a batch waits for one each round.
    batch_wait: Duration,
    /// Rounds taken so far (names the store keys).
    round: u64,
    /// The round whose key this rank last wrote, deleted a round later.
    key_written: Option<u64>,
    /// Seconds spent in the gradient all-reduces.
    pub(super) comm_secs: f64,
    /// This rank's shutdown future has completed (it must not be polled again).
    shutdown_seen: bool,
    /// The control stream reader still runs.
    control_alive: bool,
    /// The processes of the group by rank (`host:pid`), recorded in
    /// checkpoints.
    pub(super) members: Vec<String>,
    /// Elastic: registrations for the next generation, which make the group
    /// re-form at a round boundary (rank 0 looks each round).
    joins: Option<Arc<JoinWatch>>,
}

/// The c10d backend for a model on `device`: NCCL for CUDA (as DDP),
/// Gloo for the CPU.
pub(super) fn backend_for(device: Device) -> Backend {
    match device {
        Device::Cuda(_) => Backend::Nccl,
        _ => Backend::Gloo,
    }
}

/// How the groups of `world` are built for a model on `device`.
pub(super) fn group_options(world: &WorldConfig, device: Device) -> GroupOptions {
    GroupOptions {
        timeout: Duration::from_secs(world.timeout_secs),
        backend: backend_for(device),
        cuda_device: match device {
            Device::Cuda(i) => i,
            _ => 0,
        },
        ..GroupOptions::default()
    }
}

/// Meets the other ranks (blocking, on the blocking pool) in a group whose
/// backend suits the model's `device`.
pub(super) async fn join(world: &WorldConfig, device: Device) -> Result<ProcessGroup, TrainError> {
    let rdv = world.rendezvous();
    let options = group_options(world, device);
    tracing::info!(backend = ?options.backend, ?device, "data parallel: joining the group");
    let group = tokio::task::spawn_blocking(move || pretext_dist::init(&rdv, options))
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))??;
    Ok(group)
}

impl Dist {
    /// Makes the ranks' starting points one: the same resumed step,
    /// parameter layout and applied history (else an error), then rank 0's
    /// parameters on every rank; every rank learns who the others are.
    /// `joins` is given in an elastic run.
    pub(super) async fn start(
        group: ProcessGroup,
        world: &WorldConfig,
        learner: Learner,
        history: &AppliedHistory,
        joins: Option<JoinWatch>,
    ) -> Result<(Self, Learner), TrainError> {
        let applied = history.distinct().len() as i64;
        let bucket_bytes = world.bucket_mb.saturating_mul(1 << 20);
        let group = Arc::new(group);
        let g = group.clone();
        let (learner, synced) = tokio::task::spawn_blocking(move || {
            let mut learner = learner;
            let synced = (|| -> Result<(GradBuckets, Vec<String>), DistError> {
                let store = g.store();
                store.set(
                    &g.key(&format!("member/{}", g.rank())),
                    process_name().as_bytes(),
                )?;
                g.check_equal("resumed step", learner.optimizer.step_count() as i64)?;
                g.check_equal("parameter elements", learner.optimizer.numel() as i64)?;
                g.check_equal("batches applied by the checkpoints", applied)?;
                let mut params: Vec<Tensor> = learner
                    .optimizer
                    .parameters()
                    .iter()
                    .map(Tensor::shallow_clone)
                    .collect();
                g.broadcast(&mut params, 0)?;
                // Past a collective: every rank's name is in the store.
                let members = (0..g.world_size())
                    .map(|r| {
                        let name = store.get(&g.key(&format!("member/{r}")))?;
                        Ok(String::from_utf8_lossy(&name).into_owned())
                    })
                    .collect::<Result<Vec<_>, DistError>>()?;
                let buckets = GradBuckets::new(learner.optimizer.parameters(), bucket_bytes);
                Ok((buckets, members))
            })();
            learner.optimizer.zero_grad();
            (learner, synced)
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))?;
        let (buckets, members) = synced?;
        tracing::info!(
            rank = group.rank(),
            world = group.world_size(),
            buckets = buckets.len(),
            elements = buckets.numel(),
            "data parallel: parameters broadcast from rank 0"
        );
        let dist = Self {
            group,
            buckets: Arc::new(buckets),
            batch_wait: Duration::from_millis(world.batch_wait_ms),
            round: 0,
            key_written: None,
            comm_secs: 0.0,
            shutdown_seen: false,
            control_alive: true,
            members,
            joins: joins.map(Arc::new),
        };
        Ok((dist, learner))
    }

    /// This rank.
    pub(super) fn rank(&self) -> usize {
        self.group.rank()
    }

    /// Number of ranks.
    pub(super) fn world(&self) -> usize {
        self.group.world_size()
    }
}

/// What the ranks agreed at the start of a round.
struct Agreement {
    /// Ranks whose shutdown future completed (elastic: they leave).
    leaving: usize,
    /// Elastic: members wait to join, so the group re-forms.
    reform: bool,
    /// Ranks that consider the run finished.
    stopping: usize,
    /// Some rank needs a checkpoint after this round.
    checkpoint: bool,
    /// Each rank's batch id this round, if it holds one.
    ids: Vec<Option<String>>,
    /// Seconds this rank spent agreeing.
    secs: f64,
}

impl Session {
    fn dist(&self) -> &Dist {
        self.dist.as_ref().expect("a data-parallel session")
    }

    fn dist_mut(&mut self) -> &mut Dist {
        self.dist.as_mut().expect("a data-parallel session")
    }

    /// The data-parallel main loop: one round per iteration, every rank in
    /// step; returns why the ranks agreed to stop.
    pub(super) async fn train_parallel(
        &mut self,
        consumer: &mut dyn Consumer,
        control: &mut ControlWatch,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StopReason, TrainError> {
        tokio::pin!(shutdown);
        let world = self.dist().world();
        loop {
            let stop = self.finished(control);
            let want_checkpoint = self.checkpoint_due();
            let ready = if stop.is_none() && !want_checkpoint && !self.dist().shutdown_seen {
                self.poll(consumer, control, shutdown.as_mut()).await?
            } else {
                self.check_shutdown(shutdown.as_mut());
                None
            };
            let agreed = match self
                .agree(
                    ready.as_ref().map(|r| r.id.clone()),
                    stop.is_some(),
                    want_checkpoint,
                )
                .await
            {
                Ok(agreed) => agreed,
                Err(err) => {
                    // Not applied: back to the queue now, not at disconnect.
                    if let Some(r) = ready {
                        let _ = r.delivery.nack_requeue().await;
                    }
                    return Err(err);
                }
            };
            let elastic = self.dist().joins.is_some();
            let finished = agreed.stopping == world && agreed.ids.iter().all(Option::is_none);
            let reform = elastic && (agreed.leaving > 0 || agreed.reform) && !finished;
            if agreed.leaving == world || (agreed.leaving > 0 && !elastic) || reform {
                if let Some(r) = ready
                    && let Err(err) = r.delivery.nack_requeue().await
                {
                    tracing::debug!(error = %err, "requeue on shutdown failed");
                }
                if !reform {
                    tracing::info!(
                        step = self.step_count(),
                        "shutdown requested; every rank stops"
                    );
                    return Ok(StopReason::Shutdown);
                }
                tracing::info!(
                    step = self.step_count(),
                    leaving = agreed.leaving,
                    joining = agreed.reform,
                    "elastic: the group re-forms after a checkpoint"
                );
                return Ok(if self.dist().shutdown_seen {
                    StopReason::Shutdown
                } else {
                    StopReason::Reform
                });
            }
            let candidates = agreed.ids.iter().filter(|id| id.is_some()).count();
            if candidates == 0 {
                if agreed.stopping == world {
                    return Ok(stop.expect("this rank agreed to stop"));
                }
            } else {
                self.step_parallel(ready, &agreed.ids, agreed.secs).await?;
            }
            // The same decision on every rank: the flags were agreed, and
            // the steps since the last checkpoint are the same everywhere.
            if agreed.checkpoint || self.pending_steps >= self.config.checkpoint_every {
                self.checkpoint().await?;
            }
        }
    }

    /// Waits up to the batch wait for a batch this run has not applied;
    /// `None` when none came, the run finished, or shutdown was requested.
    async fn poll(
        &mut self,
        consumer: &mut dyn Consumer,
        control: &mut ControlWatch,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<Ready>, TrainError> {
        let deadline = tokio::time::Instant::now() + self.dist().batch_wait;
        loop {
            let (shutdown_seen, control_alive) =
                (self.dist().shutdown_seen, self.dist().control_alive);
            // With deliveries at hand, take whatever else has arrived, then
            // step on the largest.
            let until = match self.pool.is_empty() {
                true => deadline,
                false => tokio::time::Instant::now(),
            };
            let next = tokio::select! {
                biased;
                () = shutdown.as_mut(), if !shutdown_seen => {
                    tracing::info!(step = self.step_count(), "shutdown requested");
                    self.dist_mut().shutdown_seen = true;
                    return Ok(None);
                }
                changed = control.changed(), if control_alive => {
                    if changed.is_err() {
                        self.dist_mut().control_alive = false;
                        control.finish().await?;
                        tracing::warn!("the control stream ended; the run can only stop at max_steps or on shutdown");
                    }
                    if let (Some(bar), Some(total)) = (&self.bar, control.total()) {
                        bar.set_length(total);
                    }
                    if self.finished(control).is_some() {
                        return Ok(None);
                    }
                    continue;
                }
                next = consumer.next() => next?,
                () = tokio::time::sleep_until(until) => {
                    let Some(delivery) = self.take_largest() else {
                        return Ok(None);
                    };
                    if let Some(ready) = self.prepare(delivery).await {
                        return Ok(Some(ready));
                    }
                    continue;
                }
            };
            let Some(delivery) = next else {
                return Err(TrainError::ConsumerEnded {
                    queue: consumer.queue().to_owned(),
                });
            };
            self.pool.push(delivery);
        }
    }

    /// The largest delivery of the pool (by its body's bytes, which grow
    /// with rows × bucket length): every rank stepping on its largest
    /// first makes a round's batches alike in size, so that no rank waits
    /// long for another's backward.
    fn take_largest(&mut self) -> Option<Delivery> {
        let i = (0..self.pool.len()).max_by_key(|&i| self.pool[i].body().len())?;
        Some(self.pool.swap_remove(i))
    }

    /// Notes a completed shutdown future without waiting.
    fn check_shutdown(&mut self, shutdown: Pin<&mut impl Future<Output = ()>>) {
        if self.dist().shutdown_seen {
            return;
        }
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        if shutdown.poll(&mut cx).is_ready() {
            tracing::info!(step = self.step_count(), "shutdown requested");
            self.dist_mut().shutdown_seen = true;
        }
    }

    /// Round start: publishes this rank's batch id, agrees on the flags and
    /// on who holds a batch, and reads the others' ids.
    async fn agree(
        &mut self,
        id: Option<String>,
        stopping: bool,
        want_checkpoint: bool,
    ) -> Result<Agreement, TrainError> {
        let dist = self.dist_mut();
        let round = dist.round;
        dist.round += 1;
        let stale = dist.key_written.take();
        if id.is_some() {
            dist.key_written = Some(round);
        }
        let shutdown = dist.shutdown_seen;
        let group = dist.group.clone();
        let joins = dist.joins.clone();
        let agreed = tokio::task::spawn_blocking(move || -> Result<Agreement, DistError> {
            let started = Instant::now();
            let (rank, world) = (group.rank(), group.world_size());
            let store = group.store();
            if let Some(id) = &id {
                store.set(&round_key(&group, round, rank), id.as_bytes())?;
            }
            let joining = match (&joins, rank) {
                (Some(j), 0) => j.wanted()?,
                _ => false,
            };
            let mut flags = vec![0i64; 4 + world];
            flags[0] = i64::from(shutdown);
            flags[1] = i64::from(stopping);
            flags[2] = i64::from(want_checkpoint);
            flags[3] = i64::from(joining);
            flags[4 + rank] = i64::from(id.is_some());
            group.all_reduce_i64(&mut flags)?;
            // Every rank is past this round's all-reduce, so each has read
            // the ids of the round before: ours can go.
            if let Some(old) = stale {
                store.delete(&round_key(&group, old, rank))?;
            }
            let mut ids = Vec::with_capacity(world);
            for r in 0..world {
                ids.push(match flags[4 + r] {
                    0 => None,
                    _ if r == rank => id.clone(),
                    _ => Some(
                        String::from_utf8_lossy(&store.get(&round_key(&group, round, r))?)
                            .into_owned(),
                    ),
                });
            }
            Ok(Agreement {
                leaving: usize::try_from(flags[0]).unwrap_or(0),
                reform: flags[3] > 0,
                stopping: usize::try_from(flags[1]).unwrap_or(0),
                checkpoint: flags[2] > 0,
                ids,
                secs: started.elapsed().as_secs_f64(),
            })
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))??;
        Ok(agreed)
    }

    /// One step of every rank together: this rank's batch (if any) plus
    /// the others'; records every rank's applied ids.
    async fn step_parallel(
        &mut self,
        ready: Option<Ready>,
        ids: &[Option<String>],
        agree_secs: f64,
    ) -> Result<(), TrainError> {
        let (rank, group, buckets) = {
            let d = self.dist();
            (d.rank(), d.group.clone(), d.buckets.clone())
        };
        // A copy of a batch a lower rank applies this round: held with it.
        let ready = match ready {
            Some(r) if ids[..rank].iter().flatten().any(|id| *id == r.id) => {
                tracing::debug!(
                    id = r.id,
                    "another rank applies this batch this step; held with it"
                );
                self.held.entry(r.id).or_default().push(r.delivery);
                self.held_count += 1;
                self.counts.skipped += 1;
                metrics::counter!(pretext_ops::names::TRAINER_DUPLICATES).increment(1);
                None
            }
            other => other,
        };
        let (mine, batch) = match ready {
            Some(Ready {
                id,
                delivery,
                batch,
            }) => (Some((id, delivery)), Some(batch)),
            None => (None, None),
        };
        let local = batch.as_ref().map(|b| (b.stats(), b.bucket_len as u64));
        let trivial = batch.as_ref().map(|b| b.trivial().accuracy());
        let started = Instant::now();
        let mut learner = self.learner.take().expect("learner present");
        let (learner, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = parallel_step(&mut learner, &group, &buckets, batch.as_ref());
            (learner, outcome)
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))?;
        self.learner = Some(learner);
        let outcome = outcome?;
        self.dist_mut().comm_secs += outcome.phases.allreduce;
        let mut mine = mine;
        if let Some(err) = &outcome.rejected
            && let Some((_, delivery)) = mine.take()
        {
            self.reject(delivery, &format!("batch unusable by the model: {err}"))
                .await;
        }
        let Some(stats) = outcome.step else {
            return Ok(());
        };
        let now = Instant::now();
        let step_secs = now.duration_since(self.idle_since).as_secs_f64();
        let wait_secs = started.duration_since(self.idle_since).as_secs_f64();
        self.idle_since = now;
        for (r, applied) in outcome.applied.iter().enumerate() {
            if *applied {
                let id = ids[r]
                    .clone()
                    .expect("a rank that applied a batch published its id");
                self.applied.insert(id.clone());
                self.pending.push(id);
            }
        }
        self.pending_steps += 1;
        self.pending_since.get_or_insert(now);
        self.tokens_seen += outcome.real_tokens;
        self.counts.last_loss = Some(outcome.loss);
        let batch_id = match mine {
            Some((id, delivery)) if outcome.applied[rank] => {
                self.held.entry(id.clone()).or_default().push(delivery);
                self.held_count += 1;
                self.counts.applied += 1;
                metrics::counter!(pretext_ops::names::TRAINER_BATCHES_APPLIED).increment(1);
                id
            }
            _ => String::new(),
        };
        let (rows, real, padded, bucket_len) = local.map_or((0, 0, 0, 0), |(s, l)| {
            (s.rows, s.real_tokens, s.padded_tokens, l)
        });
        let total_positions = (rows * bucket_len).max(1) as f64;
        let m = StepMetrics {
            step: stats.step,
            loss: outcome.loss,
            accuracy: outcome.accuracy,
            tokens_per_s: outcome.real_tokens as f64 / step_secs.max(1e-9),
            padded_fraction: padded as f64 / total_positions,
            data_wait_fraction: if step_secs > 0.0 {
                wait_secs / step_secs
            } else {
                0.0
            },
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            rows,
            bucket_len,
            real_tokens: real,
            loss_tokens: outcome.local_count,
            step_secs,
            batch_id,
            trivial,
            phases: Some(RoundPhases {
                agree: agree_secs,
                ..outcome.phases
            }),
        };
        self.record_step(&m, rank)?;
        Ok(())
    }

    /// The collective checkpoint (see the module docs).
    pub(super) async fn checkpoint_parallel(&mut self) -> Result<(), TrainError> {
        let (rank, group) = (self.dist().rank(), self.dist().group.clone());
        let learner = self.learner.take().expect("learner present");
        let state = self.checkpoint_state(&learner);
        let step = state.step;
        let dir = self.config.checkpoint_dir();
        let keep = self.config.keep_checkpoints;
        let writer_dir = dir.clone();
        let (learner, saved, agreed) = tokio::task::spawn_blocking(move || {
            let saved = (rank == 0).then(|| {
                crate::checkpoints::write_checkpoint(
                    &writer_dir,
                    learner.model.var_store(),
                    &learner.optimizer,
                    &state,
                    keep,
                )
            });
            let agreed = (|| -> Result<(bool, String), DistError> {
                // Rank 0 says whether its checkpoint is durable; the others
                // wait for it here, before any of them acks.
                let mut durable = [i64::from(matches!(saved, Some(Ok(_))))];
                group.all_reduce_i64(&mut durable)?;
                let hash = digest(learner.optimizer.parameters())?;
                if durable[0] == 1 {
                    let short = i64::from_str_radix(&hash[..15], 16).unwrap_or_default();
                    group.check_equal("parameter digest", short)?;
                }
                Ok((durable[0] == 1, hash))
            })();
            (learner, saved, agreed)
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))?;
        self.learner = Some(learner);
        let path = match saved {
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(path)) => Some(path),
            None => None,
        };
        let (durable, hash) = agreed?;
        if !durable {
            return Err(TrainError::LeaderCheckpoint { step });
        }
        let path = path.unwrap_or_else(|| dir.join(checkpoint_dir_name(step)));
        self.checkpoint_durable(path, step, Some(hash)).await;
        Ok(())
    }

    /// Leaves the process group cleanly at the end of a run: a barrier, so
    /// the rank hosting the store outlives every rank's last use of it.
    pub(super) async fn leave_group(&mut self) -> Result<(), TrainError> {
        let Some(dist) = &self.dist else {
            return Ok(());
        };
        let group = dist.group.clone();
        tokio::task::spawn_blocking(move || group.barrier())
            .await
            .map_err(|e| TrainError::Panic(e.to_string()))??;
        Ok(())
    }
}

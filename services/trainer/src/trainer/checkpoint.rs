//! Durable checkpoints and the acks they allow, the drain after the end of
//! the data, and the summary a run ends with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pretext_model::CheckpointState;
use pretext_mq::Consumer;
use pretext_ops::names;

use super::{Session, StopReason, TrainSummary, parallel};
use crate::checkpoints::TrainingState;
use crate::error::TrainError;
use crate::step::Learner;

/// How long the end-of-run drain waits for further deliveries.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

impl Session {
    /// Writes a checkpoint of everything applied so far, then acks the
    /// deliveries it covers. Nothing to do without pending batches.
    ///
    /// Data parallel, every rank calls it at the same step: rank 0 writes
    /// (the pending ids are every rank's), then the ranks agree that it is
    /// durable and that their parameters are identical, and only then each
    /// acks its own deliveries.
    pub(super) async fn checkpoint(&mut self) -> Result<(), TrainError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.dist.is_some() {
            return self.checkpoint_parallel().await;
        }
        let learner = self.learner.take().expect("learner present");
        let state = self.checkpoint_state(&learner);
        let dir = self.config.checkpoint_dir();
        let keep = self.config.keep_checkpoints;
        let (learner, saved) = tokio::task::spawn_blocking(move || {
            let saved = crate::checkpoints::write_checkpoint(
                &dir,
                learner.model.var_store(),
                &learner.optimizer,
                &state,
                keep,
            )
            .map(|path| (path, state.step));
            (learner, saved)
        })
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))?;
        self.learner = Some(learner);
        let (path, step) = saved?;
        self.checkpoint_durable(path, step, None).await;
        Ok(())
    }

    /// What a checkpoint of `learner` now records.
    pub(super) fn checkpoint_state(&self, learner: &Learner) -> CheckpointState<TrainingState> {
        let training = TrainingState {
            task: self.config.task,
            seed: self.config.seed,
            optimizer: *learner.optimizer.config(),
            tokens_seen: self.tokens_seen,
            // The ledger holds the earlier checkpoints' ids.
            earlier_applied: BTreeMap::new(),
            members: self
                .dist
                .as_ref()
                .map_or_else(Vec::new, |d| d.members.clone()),
        };
        let mut state = CheckpointState::new(
            learner.optimizer.step_count(),
            *learner.model.config(),
            training,
        );
        state.rng = learner.rng;
        state.world_size = self.dist.as_ref().map_or(1, parallel::Dist::world);
        state.applied_batch_ids = self.pending.clone();
        state
    }

    /// After a durable checkpoint at `step`: records its ids, acks the held
    /// deliveries, logs.
    pub(super) async fn checkpoint_durable(
        &mut self,
        path: PathBuf,
        step: u64,
        digest: Option<String>,
    ) {
        // Durable: now the broker may forget these batches.
        let batches = self.pending.len();
        self.pending_steps = 0;
        self.history.add(step, std::mem::take(&mut self.pending));
        let (mut acked, mut failed) = (0u64, 0);
        for delivery in std::mem::take(&mut self.held).into_values().flatten() {
            let id = delivery.message_id().to_owned();
            match delivery.ack().await {
                Ok(()) => acked += 1,
                Err(err) => {
                    failed += 1;
                    tracing::debug!(id, error = %err, "ack failed");
                }
            }
        }
        metrics::counter!(names::TRAINER_BATCHES_ACKED).increment(acked);
        if self.dist.as_ref().is_none_or(|d| d.rank() == 0) {
            metrics::counter!(names::TRAINER_CHECKPOINTS).increment(1);
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                "acks failed after the checkpoint; those batches will be redelivered and skipped"
            );
        }
        self.held_count = 0;
        self.pending_since = None;
        self.idle_since = Instant::now();
        match digest {
            Some(params_hash) => {
                let rank = self.dist.as_ref().map_or(0, parallel::Dist::rank);
                tracing::info!(step, rank, batches, params_hash, loss = ?self.counts.last_loss, path = %path.display(), "checkpoint written");
            }
            None => {
                tracing::info!(step, batches, loss = ?self.counts.last_loss, path = %path.display(), "checkpoint written");
            }
        }
        self.last_checkpoint = Some(path);
    }

    /// After the end of the data: acks redeliveries of applied batches that
    /// are still queued (a crash between a checkpoint and its acks leaves
    /// them), waiting briefly for each.
    pub(super) async fn drain(&mut self, consumer: &mut dyn Consumer) {
        for delivery in std::mem::take(&mut self.pool) {
            if self.applied.contains(delivery.message_id()) {
                self.ack_duplicate(delivery).await;
            }
            // Else not ours to apply now: dropped, it goes back to the queue.
        }
        while let Ok(Ok(Some(delivery))) = tokio::time::timeout(DRAIN_WAIT, consumer.next()).await {
            if !self.applied.contains(delivery.message_id()) {
                // Not ours to apply now; dropping it returns it to the queue.
                tracing::info!(
                    id = delivery.message_id(),
                    "an unknown batch is queued after the end of the data; left in the queue"
                );
                break;
            }
            self.ack_duplicate(delivery).await;
        }
    }

    async fn ack_duplicate(&mut self, delivery: pretext_mq::Delivery) {
        self.counts.skipped += 1;
        metrics::counter!(names::TRAINER_DUPLICATES).increment(1);
        if let Err(err) = delivery.ack().await {
            tracing::debug!(error = %err, "ack of a drained duplicate failed");
        }
    }

    pub(super) fn finish(self, stop: StopReason) -> TrainSummary {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let summary = TrainSummary {
            stop,
            step: self.step_count(),
            resumed_from: self.resumed_from,
            applied: self.counts.applied,
            applied_total: self.applied.len() as u64,
            skipped_duplicates: self.counts.skipped,
            rejected: self.counts.rejected,
            last_checkpoint: self.last_checkpoint,
            last_loss: self.counts.last_loss,
            world_size: self.dist.as_ref().map_or(1, parallel::Dist::world),
            rank: self.dist.as_ref().map_or(0, parallel::Dist::rank),
            comm_secs: self.dist.as_ref().map_or(0.0, |d| d.comm_secs),
        };
        tracing::info!(
            ?stop,
            step = summary.step,
            applied = summary.applied,
            skipped = summary.skipped_duplicates,
            rejected = summary.rejected,
            "trainer stopped"
        );
        summary
    }
}

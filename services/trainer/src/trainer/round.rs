//! One data-parallel optimiser step, the same on every rank: backward on
//! this rank's batch (if any), the all-reduce of the loss sums and counts,
//! then of the gradients in flat buckets, and the update divided by the
//! global loss-token count.

use std::time::Instant;

use pretext_core::batch::DecodedBatch;
use pretext_dist::{GradBuckets, ProcessGroup};
use pretext_model::{ModelError, StepStats};

use crate::error::TrainError;
use crate::metrics::RoundPhases;
use crate::step::{Learner, StepBatch, apply, backward, is_batch_error, lock_torch_rng};

/// What one data-parallel step did.
pub(super) struct RoundOutcome {
    /// Which ranks' batches the step applied.
    pub(super) applied: Vec<bool>,
    /// This rank's batch, when the model found it unusable.
    pub(super) rejected: Option<ModelError>,
    /// The optimiser's report; `None` when no rank applied anything.
    pub(super) step: Option<StepStats>,
    /// Mean loss and accuracy over every rank's loss positions.
    pub(super) loss: f64,
    pub(super) accuracy: f64,
    /// This rank's loss positions.
    pub(super) local_count: i64,
    /// Real tokens of every rank's batch.
    pub(super) real_tokens: u64,
    /// Seconds of each phase (`agree` is the caller's to fill).
    pub(super) phases: RoundPhases,
}

/// Rank 0 draws what a single process would; the others their own stream.
fn rank_seed(seed: u64, rank: usize) -> i64 {
    (seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64
}

/// Backward on this rank's batch (if any), then the all-reduces and the
/// update: the same on every rank.
pub(super) fn parallel_step(
    learner: &mut Learner,
    group: &ProcessGroup,
    buckets: &GradBuckets,
    batch: Option<&DecodedBatch>,
) -> Result<RoundOutcome, TrainError> {
    if let Some(n) = learner.threads {
        pretext_model::tch::set_num_threads(n as i32);
    }
    let (rank, world) = (group.rank(), group.world_size());
    let _rng = (learner.model.config().dropout > 0.0).then(lock_torch_rng);
    let mut rng = learner.rng;
    let seed = rng.next_seed();
    learner.optimizer.zero_grad();
    let mut local = None;
    let mut rejected = None;
    let mut phases = RoundPhases::default();
    let mut clock = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let secs = now.duration_since(clock).as_secs_f64();
        clock = now;
        secs
    };
    if let Some(b) = batch {
        pretext_model::tch::manual_seed(rank_seed(seed, rank));
        let result = StepBatch::from_decoded(b)
            .and_then(|sb| backward(&learner.model, &mut learner.optimizer, &sb));
        match result {
            Ok(l) => local = Some(l),
            Err(err) if is_batch_error(&err) => {
                learner.optimizer.zero_grad();
                rejected = Some(err);
            }
            Err(err) => return Err(err.into()),
        }
    }
    phases.backward = lap();
    // [loss sum, loss positions, correct, real tokens, applied by rank 0..]
    let mut sums = vec![0.0f64; 4 + world];
    if let (Some(l), Some(b)) = (&local, batch) {
        sums[0] = l.loss_sum;
        sums[1] = l.count as f64;
        sums[2] = l.correct as f64;
        sums[3] = b.stats().real_tokens as f64;
        sums[4 + rank] = 1.0;
    }
    // This one also waits for the slowest rank's backward; the timed
    // all-reduce below starts with the ranks in step.
    group.all_reduce_f64(&mut sums)?;
    phases.sync = lap();
    let applied: Vec<bool> = sums[4..].iter().map(|&f| f > 0.5).collect();
    let local_count = local.as_ref().map_or(0, |l| l.count);
    if !applied.iter().any(|&a| a) {
        return Ok(RoundOutcome {
            applied,
            rejected,
            step: None,
            loss: 0.0,
            accuracy: 0.0,
            local_count,
            real_tokens: 0,
            phases,
        });
    }
    let grads = match local {
        Some(l) => l.grads,
        // Zero after zero_grad: this rank contributes nothing.
        None => learner.optimizer.gradients(),
    };
    lap();
    let summed = buckets.all_reduce(group, &grads)?;
    phases.allreduce = lap();
    let count = sums[1].round() as i64;
    let stats = apply(&mut learner.optimizer, &summed, count)?;
    phases.apply = lap();
    learner.rng = rng;
    let (loss, accuracy) = if count == 0 {
        (0.0, 0.0)
    } else {
        (sums[0] / count as f64, sums[2] / count as f64)
    };
    Ok(RoundOutcome {
        applied,
        rejected,
        step: Some(stats),
        loss,
        accuracy,
        local_count,
        real_tokens: sums[3].round() as u64,
        phases,
    })
}

//! One optimiser step, split where a data-parallel all-reduce will go:
//! [`backward`] leaves the gradients of the *summed* loss of the local batch,
//! [`apply`] divides by the (global) loss count and steps AdamW. Between
//! the two, ranks all-reduce the gradients and the counts.

use pretext_core::batch::DecodedBatch;
use std::sync::{Mutex, MutexGuard, PoisonError};

use pretext_model::tch::{Device, Kind, Tensor};
use pretext_model::{
    AdamW, AdamWConfig, ModelConfig, ModelError, PretrainModel, RngState, StepStats,
};

/// A decoded batch as tensors on the CPU (the model moves them to its device).
#[derive(Debug)]
pub struct StepBatch {
    /// Input token ids, int64 `[N, L]`.
    pub tokens: Tensor,
    /// True lengths, int64 `[N]`.
    pub lengths: Tensor,
    /// Targets, uint8 `[N, L]` (PAD where there is none).
    pub targets: Tensor,
    /// Loss positions, uint8 `[N, L]` (1 = counted).
    pub loss_mask: Tensor,
}

impl StepBatch {
    /// Copies the batch's contiguous `[rows, L]` buffers into tensors.
    pub fn from_decoded(batch: &DecodedBatch) -> Result<Self, ModelError> {
        let shape = [batch.rows() as i64, batch.bucket_len as i64];
        let tokens = Tensor::f_from_slice(batch.input())?
            .f_view(shape)?
            .f_to_kind(Kind::Int64)?; // [N, L]
        let lengths: Vec<i64> = batch.lengths().iter().map(|&l| i64::from(l)).collect();
        Ok(Self {
            tokens,
            lengths: Tensor::f_from_slice(&lengths)?, // [N]
            targets: Tensor::f_from_slice(batch.target())?.f_view(shape)?, // [N, L]
            loss_mask: Tensor::f_from_slice(batch.loss_mask())?.f_view(shape)?, // [N, L]
        })
    }
}

/// The local half of a step: the loss of one batch and the gradients of its
/// sum, one per parameter in the optimiser's order (aliases of the
/// variables' `.grad`).
#[derive(Debug)]
pub struct LocalGradients {
    /// Summed cross-entropy over the loss positions.
    pub loss_sum: f64,
    /// Loss positions counted.
    pub count: i64,
    /// Loss positions predicted correctly.
    pub correct: i64,
    /// Gradients of `loss_sum`, not yet divided by `count`.
    pub grads: Vec<Tensor>,
}

/// Forward and backward on one batch: zeroes the gradients, then leaves
/// those of the summed loss. Fails before touching any gradient when the
/// batch's content is unusable (see [`is_batch_error`]).
pub fn backward(
    model: &PretrainModel,
    optimizer: &mut AdamW,
    batch: &StepBatch,
) -> Result<LocalGradients, ModelError> {
    optimizer.zero_grad();
    let stats = model.loss(
        &batch.tokens,
        &batch.lengths,
        &batch.targets,
        &batch.loss_mask,
        true,
    )?;
    let loss_sum = stats.sum.f_double_value(&[])?;
    stats.sum.f_backward()?;
    Ok(LocalGradients {
        loss_sum,
        count: stats.count,
        correct: stats.correct,
        grads: optimizer.gradients(),
    })
}

/// Divides the gradients by the loss count (all-reduced sums of both in a
/// data-parallel run) and applies one AdamW update. A batch without loss
/// positions still makes a step (every rank steps together).
pub fn apply(optimizer: &mut AdamW, grads: &[Tensor], count: i64) -> Result<StepStats, ModelError> {
    let scale = 1.0 / count.max(1) as f64;
    let scaled: Vec<Tensor> = grads
        .iter()
        .map(|g| g.f_mul_scalar(scale))
        .collect::<Result<_, _>>()?;
    optimizer.step_with_gradients(&scaled)
}

/// Whether a model error means the batch itself is unusable (shapes, kinds,
/// values out of range, e.g. a loss position whose target is PAD): such a
/// batch is dead-lettered, and the trainer goes on.
pub fn is_batch_error(err: &ModelError) -> bool {
    matches!(
        err,
        ModelError::Shape { .. } | ModelError::Kind { .. } | ModelError::OutOfRange { .. }
    )
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Mean loss per loss position.
    pub loss: f64,
    /// Fraction of loss positions predicted correctly.
    pub accuracy: f64,
    /// Loss positions.
    pub count: i64,
    /// The optimiser's report (step number, learning rate, gradient norm).
    pub stats: StepStats,
    /// Seconds in the forward and backward pass.
    pub backward_secs: f64,
    /// Seconds in clipping and the AdamW update.
    pub apply_secs: f64,
}

/// The model, its optimiser and the step randomness: what the training
/// thread owns, and what a checkpoint saves.
#[derive(Debug)]
pub struct Learner {
    /// The model.
    pub model: PretrainModel,
    /// Its optimiser.
    pub optimizer: AdamW,
    /// Randomness state; one derived seed per step.
    pub rng: RngState,
    /// libtorch intra-op threads, set on whichever thread runs a step.
    pub threads: Option<usize>,
}

/// libtorch has one global generator per device: seeding it and drawing
/// from it must not interleave with another trainer of the same process
/// (tests, `pretext demo`), or the draws depend on timing.
static TORCH_RNG: Mutex<()> = Mutex::new(());

pub(crate) fn lock_torch_rng() -> MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Learner {
    /// A freshly initialised model, its optimiser and the randomness of a
    /// run with `seed`: the same seed gives the same weights.
    pub fn fresh(
        model: &ModelConfig,
        optimizer: AdamWConfig,
        seed: u64,
        device: Device,
        threads: Option<usize>,
    ) -> Result<Self, ModelError> {
        let mut rng = RngState::new(seed);
        let model = {
            let _rng = lock_torch_rng();
            rng.seed_torch();
            PretrainModel::new(model, device)?
        };
        let optimizer = AdamW::new(model.var_store(), optimizer);
        Ok(Self {
            model,
            optimizer,
            rng,
            threads,
        })
    }

    /// One whole step on one process: [`backward`] then [`apply`].
    pub fn step(&mut self, batch: &DecodedBatch) -> Result<StepOutcome, ModelError> {
        if let Some(n) = self.threads {
            pretext_model::tch::set_num_threads(n as i32);
        }
        let batch = StepBatch::from_decoded(batch)?;
        // Only dropout draws random numbers during a step; without it,
        // concurrent trainers need not wait for each other.
        let _rng = (self.model.config().dropout > 0.0).then(lock_torch_rng);
        // The seed advances only with an applied step, so a rejected batch
        // (gone after it is dead-lettered, hence absent from any replay)
        // cannot shift the randomness of the steps after it.
        let mut rng = self.rng;
        rng.seed_torch();
        let started = std::time::Instant::now();
        let local = backward(&self.model, &mut self.optimizer, &batch)?;
        let backward_secs = started.elapsed().as_secs_f64();
        let stats = apply(&mut self.optimizer, &local.grads, local.count)?;
        let apply_secs = started.elapsed().as_secs_f64() - backward_secs;
        self.rng = rng;
        let count = local.count;
        let (loss, accuracy) = if count == 0 {
            (0.0, 0.0)
        } else {
            (
                local.loss_sum / count as f64,
                local.correct as f64 / count as f64,
            )
        };
        Ok(StepOutcome {
            loss,
            accuracy,
            count,
            stats,
            backward_secs,
            apply_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_core::batch::{Batch, BatchRow, decode};
    use pretext_core::task::{MaskConfig, Task};

    fn learner() -> Learner {
        let cfg = ModelConfig {
            width: 16,
            depth: 2,
            ..Default::default()
        };
        let opt = AdamWConfig {
            warmup_steps: 1,
            lr: 1e-2,
            ..Default::default()
        };
        Learner::fresh(&cfg, opt, 7, Device::Cpu, Some(1)).unwrap()
    }

    fn batch(task: Task) -> DecodedBatch {
        let rows: Vec<BatchRow> = (0..3)
            .map(|i| BatchRow {
                seq_id: format!("s{i}"),
                values: (0..(40 + i * 7)).map(|t| ((t / 3 + i) % 5) as u8).collect(),
                label: None,
            })
            .collect();
        decode(Batch::build(task, &MaskConfig::default(), 0, 64, &rows).encode(None)).unwrap()
    }

    #[test]
    fn steps_learn_and_the_split_step_matches_the_whole_step() {
        let b = batch(Task::Masked);
        let mut a = learner();
        let first = a.step(&b).unwrap();
        for _ in 0..30 {
            a.step(&b).unwrap();
        }
        let last = a.step(&b).unwrap();
        assert!(
            last.loss < first.loss,
            "loss {} -> {}",
            first.loss,
            last.loss
        );
        assert_eq!(last.stats.step, 32);

        // backward + apply by hand (what a data-parallel rank does around
        // its all-reduce) gives the same parameters as `step`.
        let (mut x, mut y) = (learner(), learner());
        x.step(&b).unwrap();
        let sb = StepBatch::from_decoded(&b).unwrap();
        y.rng.seed_torch();
        let local = backward(&y.model, &mut y.optimizer, &sb).unwrap();
        assert!(local.count > 0);
        apply(&mut y.optimizer, &local.grads, local.count).unwrap();
        for (p, q) in x
            .optimizer
            .parameters()
            .iter()
            .zip(y.optimizer.parameters())
        {
            assert!(p.equal(q));
        }
    }

    #[test]
    fn unusable_batches_are_batch_errors() {
        let mut b = batch(Task::Next).to_batch();
        // A loss position whose target is PAD passes decoding but not the loss.
        let l = b.bucket_len;
        let last = b.lengths[0] as usize;
        b.loss_mask[last..l].fill(1);
        let bad = decode(b.encode(None)).unwrap();
        let err = learner().step(&bad).unwrap_err();
        assert!(is_batch_error(&err), "{err}");
    }
}

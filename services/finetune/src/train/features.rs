//! Classify batches as tensors, predictions on a split, pooled features,
//! and the calibration of a classifier's feature standardisation.

use pretext_core::batch::Batch;
use pretext_core::bucket::BucketConfig;
use pretext_model::Classifier;
use pretext_model::tch::{self, Tensor};

use crate::data::{Example, batches};
use crate::error::FinetuneError;

/// The tensors of a classify batch: tokens [N, L], lengths `[N]`, labels `[N]`.
pub(super) fn tensors(b: &Batch) -> (Tensor, Tensor, Tensor) {
    let n = b.rows() as i64;
    let tokens = Tensor::from_slice(&b.input).view([n, b.bucket_len as i64]);
    let lengths: Vec<i64> = b.lengths.iter().map(|&l| i64::from(l)).collect();
    let labels: Vec<i64> = b
        .labels
        .iter()
        .map(|l| i64::from(l.expect("classify batches carry labels")))
        .collect();
    (
        tokens,
        Tensor::from_slice(&lengths),
        Tensor::from_slice(&labels),
    )
}

/// One prediction: (true class, predicted class, sequence length).
pub type Prediction = (usize, usize, usize);

/// Predictions on `examples`, and the mean cross-entropy.
pub fn predict(
    model: &Classifier,
    examples: &[Example],
    buckets: &BucketConfig,
) -> Result<(Vec<Prediction>, f64), FinetuneError> {
    let refs: Vec<&Example> = examples.iter().collect();
    let mut out = Vec::with_capacity(examples.len());
    let mut loss_sum = 0.0;
    tch::no_grad(|| -> Result<(), FinetuneError> {
        for b in batches(&refs, buckets, 0, 0, None, false) {
            let (tokens, lengths, labels) = tensors(&b);
            let logits = model.forward_t(&tokens, &lengths, false)?; // [N, K]
            let stats = pretext_model::classification_loss(&logits, &labels)?;
            loss_sum += stats.sum.double_value(&[]);
            let pred = Vec::<i64>::try_from(logits.f_argmax(-1, false)?)?;
            for (r, p) in pred.into_iter().enumerate() {
                let t = b.labels[r].expect("labeled") as usize;
                out.push((t, p as usize, b.lengths[r] as usize));
            }
        }
        Ok(())
    })?;
    let mean = loss_sum / out.len().max(1) as f64;
    Ok((out, mean))
}

/// Train rows (labels unused) whose pooled features set the classifier's
/// standardisation: the same for every method and label fraction.
pub const CALIBRATION_ROWS: usize = 256;

/// Standardises the classifier's pooled features with their statistics over
/// up to [`CALIBRATION_ROWS`] train rows, chosen by a hash of `(seed, id)`
/// (no label is read, so every label fraction calibrates alike). Returns the
/// number of rows used.
pub fn calibrate(
    model: &mut Classifier,
    train: &[Example],
    buckets: &BucketConfig,
    seed: u64,
) -> Result<usize, FinetuneError> {
    let rows: Vec<&Example> = calibration_rows_of(train, seed)
        .into_iter()
        .map(|i| &train[i])
        .collect();
    if rows.len() < 2 {
        return Ok(0);
    }
    let pooled = tch::no_grad(|| -> Result<Tensor, FinetuneError> {
        let mut parts = Vec::new();
        for b in batches(&rows, buckets, 0, 0, None, false) {
            let (tokens, lengths, _) = tensors(&b);
            parts.push(model.pooled(&tokens, &lengths, false)?);
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    model.calibrate(&pooled)?;
    Ok(rows.len())
}

/// Indices of the calibration rows of `train`: the [`CALIBRATION_ROWS`]
/// with the smallest hash of `(seed, id)`.
pub(super) fn calibration_rows_of(train: &[Example], seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..train.len()).collect();
    idx.sort_by_cached_key(|&i| crate::data::draw_key(seed ^ 0xCA11, &train[i].id));
    idx.truncate(CALIBRATION_ROWS);
    idx
}

/// Pooled features [N, C] (eval mode, whole sequences, no gradient) and
/// labels `[N]` of `examples`.
pub(super) fn pooled_features(
    model: &Classifier,
    examples: &[&Example],
    buckets: &BucketConfig,
) -> Result<(Tensor, Tensor), FinetuneError> {
    tch::no_grad(|| -> Result<(Tensor, Tensor), FinetuneError> {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for b in batches(examples, buckets, 0, 0, None, false) {
            let (tokens, lengths, labels) = tensors(&b);
            xs.push(model.pooled(&tokens, &lengths, false)?);
            ys.push(labels);
        }
        Ok((Tensor::f_cat(&xs, 0)?, Tensor::f_cat(&ys, 0)?))
    })
}

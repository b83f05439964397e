//! The training loops (every weight, or the linear probe's head on pooled
//! features), the loss, and the selection of the best weights on `valid`.

use std::collections::HashMap;

use pretext_model::tch::{self, Tensor};
use pretext_model::{AdamW, Classifier};

use super::ValidPoint;
use super::features::{Prediction, pooled_features, predict, tensors};
use crate::config::FinetuneConfig;
use crate::data::{Example, LabeledData, batches};
use crate::error::FinetuneError;
use crate::probe_cache::PooledRows;

fn snapshot(model: &Classifier) -> HashMap<String, Tensor> {
    model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

pub(super) fn restore(
    model: &Classifier,
    saved: &HashMap<String, Tensor>,
) -> Result<(), FinetuneError> {
    tch::no_grad(|| -> Result<(), FinetuneError> {
        for (name, mut var) in model.var_store().variables() {
            if let Some(t) = saved.get(&name) {
                var.f_copy_(t)?;
            }
        }
        Ok(())
    })
}

/// The evaluations on `valid` and the best weights so far (by accuracy,
/// then loss).
#[derive(Default)]
pub(super) struct Selection {
    pub(super) history: Vec<ValidPoint>,
    pub(super) best: Option<(f64, f64, u64, HashMap<String, Tensor>)>,
}

impl Selection {
    fn record(&mut self, model: &Classifier, point: ValidPoint) {
        tracing::info!(
            step = point.step,
            train_loss = point.train_loss,
            valid_loss = point.valid_loss,
            valid_accuracy = point.valid_accuracy,
            "eval"
        );
        let (acc, loss, step) = (point.valid_accuracy, point.valid_loss, point.step);
        self.history.push(point);
        let better = self
            .best
            .as_ref()
            .is_none_or(|(a, l, _, _)| acc > *a || (acc == *a && loss < *l));
        if better {
            self.best = Some((acc, loss, step, snapshot(model)));
        }
    }
}

/// What a training loop works through: the labeled subset, `total` steps,
/// evaluations on `valid` after the steps in `eval_at`.
#[derive(Clone, Copy)]
pub(super) struct TrainPlan<'a> {
    pub(super) subset: &'a [&'a Example],
    /// Their indices in `data.train`.
    pub(super) subset_idx: &'a [usize],
    /// A probe's features of every row, when cached.
    pub(super) cached: Option<&'a PooledRows>,
    /// Whole-row lengths by id (the length feature of crops).
    pub(super) row_lengths: &'a HashMap<&'a str, i64>,
    /// Per-class loss weights, `[K]`, or none.
    pub(super) weights: Option<&'a Tensor>,
    pub(super) data: &'a LabeledData,
    pub(super) config: &'a FinetuneConfig,
    pub(super) total: u64,
    pub(super) eval_at: &'a [u64],
}

/// Fine-tuning with every weight training: `total` steps over batches of the
/// subset (crops if configured). Returns (steps, real tokens trained on).
pub(super) fn train_all(
    model: &Classifier,
    opt: &mut AdamW,
    plan: &TrainPlan<'_>,
    sel: &mut Selection,
) -> Result<(u64, u64), FinetuneError> {
    let (mut step, mut epoch, mut tokens) = (0u64, 0u32, 0u64);
    let (mut loss_acc, mut loss_n) = (0.0, 0u64);
    loop {
        for b in batches(
            plan.subset,
            &plan.config.buckets,
            epoch,
            plan.config.seed,
            plan.config.train_crop,
            true,
        ) {
            if plan.config.cancel.is_set() {
                return Err(FinetuneError::Cancelled);
            }
            let (tok, len, lab) = tensors(&b);
            let rows: Vec<i64> = b
                .seq_ids
                .iter()
                .map(|id| plan.row_lengths.get(id.as_str()).copied().unwrap_or(0))
                .collect();
            let pooled = model.pooled_crops(&tok, &len, &Tensor::from_slice(&rows), true)?;
            let loss = weighted_loss(&model.logits_from_pooled(&pooled, true), &lab, plan.weights)?;
            opt.zero_grad();
            loss.backward();
            opt.step()?;
            step += 1;
            tokens += b.stats().real_tokens;
            loss_acc += loss.double_value(&[]);
            loss_n += 1;
            if plan.eval_at.contains(&step) {
                let (pred, valid_loss) = predict(model, &plan.data.valid, &plan.config.buckets)?;
                sel.record(
                    model,
                    ValidPoint {
                        step,
                        train_loss: loss_acc / loss_n.max(1) as f64,
                        valid_loss,
                        valid_accuracy: accuracy(&pred),
                    },
                );
                (loss_acc, loss_n) = (0.0, 0);
            }
            if step >= plan.total {
                return Ok((step, tokens));
            }
        }
        epoch += 1;
    }
}

/// The linear probe: the frozen encoder's pooled features of the subset and
/// of `valid` are computed once (whole sequences), and the head trains on
/// them full-batch for `total` steps. Returns (steps, real tokens encoded).
pub(super) fn train_probe(
    model: &Classifier,
    opt: &mut AdamW,
    plan: &TrainPlan<'_>,
    sel: &mut Selection,
) -> Result<(u64, u64), FinetuneError> {
    let valid: Vec<&Example> = plan.data.valid.iter().collect();
    let ((x, y), (xv, yv)) = match plan.cached {
        Some(f) => {
            let idx: Vec<i64> = plan.subset_idx.iter().map(|&i| i as i64).collect();
            let labels = |rows: &[&Example]| {
                Tensor::from_slice(&rows.iter().map(|e| e.class as i64).collect::<Vec<_>>())
            };
            (
                (
                    f.train.f_index_select(0, &Tensor::from_slice(&idx))?,
                    labels(plan.subset),
                ),
                (f.valid.shallow_clone(), labels(&valid)),
            )
        }
        None => (
            pooled_features(model, plan.subset, &plan.config.buckets)?,
            pooled_features(model, &valid, &plan.config.buckets)?,
        ),
    };
    let tokens: u64 = plan.subset.iter().map(|e| e.values.len() as u64).sum();
    let (mut loss_acc, mut loss_n) = (0.0, 0u64);
    for step in 1..=plan.total {
        if plan.config.cancel.is_set() {
            return Err(FinetuneError::Cancelled);
        }
        let loss = weighted_loss(&model.logits_from_pooled(&x, true), &y, plan.weights)?;
        opt.zero_grad();
        loss.backward();
        opt.step()?;
        loss_acc += loss.double_value(&[]);
        loss_n += 1;
        if plan.eval_at.contains(&step) {
            let (valid_loss, valid_accuracy) = tch::no_grad(|| -> Result<_, FinetuneError> {
                let logits = model.logits_from_pooled(&xv, false);
                let stats = pretext_model::classification_loss(&logits, &yv)?;
                let right = logits.f_argmax(-1, false)?.f_eq_tensor(&yv)?;
                let right = right.f_sum(tch::Kind::Int64)?.int64_value(&[]);
                Ok((
                    stats.sum.double_value(&[]) / stats.count.max(1) as f64,
                    right as f64 / stats.count.max(1) as f64,
                ))
            })?;
            sel.record(
                model,
                ValidPoint {
                    step,
                    train_loss: loss_acc / loss_n.max(1) as f64,
                    valid_loss,
                    valid_accuracy,
                },
            );
            (loss_acc, loss_n) = (0.0, 0);
        }
    }
    Ok((plan.total, tokens))
}

/// Mean cross-entropy of `logits` [N, K] against `labels` `[N]`, each
/// row weighted by its class's weight when `weights` ([K]) is given (the
/// mean is then over the weights, as PyTorch's weighted mean is).
fn weighted_loss(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor, FinetuneError> {
    let labels = labels.f_to_device(logits.device())?;
    let logits = logits.f_to_kind(tch::Kind::Float)?;
    let w = weights.map(|w| w.to_device(logits.device()));
    Ok(logits.f_cross_entropy_loss(&labels, w.as_ref(), tch::Reduction::Mean, -100, 0.0)?)
}

/// Class weights `n / (K × n_c)` of a subset with `per_class` rows per
/// class (a class without rows gets weight 0).
pub fn balanced_weights(per_class: &[usize]) -> Vec<f32> {
    let n: usize = per_class.iter().sum();
    let k = per_class.len();
    per_class
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (k * c) as f32
            }
        })
        .collect()
}

/// Fraction of predictions that are right.
fn accuracy(pred: &[Prediction]) -> f64 {
    pred.iter().filter(|(t, p, _)| t == p).count() as f64 / pred.len().max(1) as f64
}

//! Losses: masked-token cross-entropy over 41 values and sequence
//! classification, returned as sums with their counts.

use tch::{Kind, Reduction, Tensor};

use crate::config::NUM_VALUES;
use crate::error::ModelError;
use crate::layers::{bool_mask, check_range, integer_input};

/// The loss of one batch as a sum, with what data-parallel ranks need to
/// weight it: divide the all-reduced gradient of `sum` by the all-reduced
/// `count`.
#[derive(Debug)]
pub struct LossStats {
    /// Summed cross-entropy over the counted positions (or rows); a scalar in
    /// the graph, ready for `backward()`. 0 (still in the graph) when
    /// `count` is 0.
    pub sum: Tensor,
    /// Number of loss positions (or rows) in `sum`.
    pub count: i64,
    /// How many of them the argmax predicted correctly.
    pub correct: i64,
}

impl LossStats {
    /// Mean loss per counted position; 0 when nothing was counted.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum.double_value(&[]) / self.count as f64
        }
    }

    /// Fraction of counted positions predicted correctly; 0 when none.
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }
}

/// Summed cross-entropy and accuracy of already selected predictions.
///
/// # Shapes
/// `logits`: [M, K] float, `targets`: `[M]` int64 in `0..K`.
pub fn cross_entropy_stats(logits: &Tensor, targets: &Tensor) -> Result<LossStats, ModelError> {
    let (m, k) = logits.size2().map_err(|_| ModelError::Shape {
        what: "logits",
        expected: "[M, K]".into(),
        got: logits.size(),
    })?;
    let targets = integer_input(targets, "targets", "[M]", 1, logits.device())?;
    if targets.size() != [m] {
        return Err(ModelError::Shape {
            what: "targets",
            expected: format!("[{m}]"),
            got: targets.size(),
        });
    }
    check_range(&targets, "targets", 0, k - 1)?;
    // Losses in at least f32 whatever the compute precision was.
    let logits = if logits.kind() == Kind::BFloat16 || logits.kind() == Kind::Half {
        logits.f_to_kind(Kind::Float)?
    } else {
        logits.shallow_clone()
    };
    let sum = logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, -100, 0.0)?;
    let correct = if m == 0 {
        0
    } else {
        logits
            .f_argmax(1, false)?
            .f_eq_tensor(&targets)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?
    };
    Ok(LossStats {
        sum,
        count: m,
        correct,
    })
}

/// Row-major indices of the true entries of a bool [N, L] mask, as int64 `[M]`.
pub(crate) fn selected_positions(mask: &Tensor) -> Result<Tensor, ModelError> {
    Ok(mask.f_flatten(0, -1)?.f_nonzero()?.f_squeeze_dim(1)?)
}

/// Cross-entropy over the 41 values at `loss_mask` positions only; targets
/// elsewhere (PAD, or anything) are ignored.
///
/// # Shapes
/// `logits`: [N, 41, L], `targets`: [N, L] (integer), `loss_mask`: [N, L]
/// (bool or integer, nonzero = counted).
pub fn token_loss(
    logits: &Tensor,
    targets: &Tensor,
    loss_mask: &Tensor,
) -> Result<LossStats, ModelError> {
    let size = logits.size();
    if size.len() != 3 || size[1] != NUM_VALUES {
        return Err(ModelError::Shape {
            what: "logits",
            expected: "[N, 41, L]".into(),
            got: size,
        });
    }
    let (n, l) = (size[0], size[2]);
    let device = logits.device();
    let targets = integer_input(targets, "targets", "[N, L]", 2, device)?;
    if targets.size() != [n, l] {
        return Err(ModelError::Shape {
            what: "targets",
            expected: format!("[{n}, {l}]"),
            got: targets.size(),
        });
    }
    let positions = selected_positions(&bool_mask(loss_mask, "loss_mask", &[n, l], device)?)?;
    let logits = logits
        .f_permute([0, 2, 1])?
        .f_reshape([n * l, NUM_VALUES])?; // [N*L, 41]
    cross_entropy_stats(
        &logits.f_index_select(0, &positions)?, // [M, 41]
        &targets.f_flatten(0, -1)?.f_index_select(0, &positions)?, // [M]
    )
}

/// Cross-entropy of sequence classification.
///
/// # Shapes
/// `logits`: [N, K], `labels`: `[N]` (integer, in `0..K`).
pub fn classification_loss(logits: &Tensor, labels: &Tensor) -> Result<LossStats, ModelError> {
    cross_entropy_stats(logits, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_loss_ignores_non_loss_positions() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let (n, l) = (3, 10);
        let logits = Tensor::randn([n, NUM_VALUES, l], (Kind::Float, tch::Device::Cpu));
        let targets = Tensor::randint(NUM_VALUES, [n, l], (Kind::Int64, tch::Device::Cpu));
        let loss_mask = Tensor::rand([n, l], (Kind::Float, tch::Device::Cpu)).lt(0.4);
        let base = token_loss(&logits, &targets, &loss_mask).unwrap();
        assert!(base.count > 0 && base.count < n * l);

        // Other targets (even PAD) where the mask is off: same loss.
        let other = targets.where_self(&loss_mask, &Tensor::from(42i64));
        let same = token_loss(&logits, &other, &loss_mask).unwrap();
        assert_eq!(same.sum.double_value(&[]), base.sum.double_value(&[]));
        assert_eq!((same.count, same.correct), (base.count, base.correct));

        // A changed target on a loss position does change it.
        let first = selected_positions(&loss_mask).unwrap().int64_value(&[0]);
        let flat = targets.flatten(0, -1).copy(); // a copy: flatten is a view
        let old = flat.int64_value(&[first]);
        let _ = flat.get(first).fill_((old + 1) % NUM_VALUES);
        let changed = token_loss(&logits, &flat.view([n, l]), &loss_mask).unwrap();
        assert_ne!(changed.sum.double_value(&[]), base.sum.double_value(&[]));

        // Matches the mean cross-entropy computed by hand on the selected rows.
        let lp = logits.log_softmax(1, Kind::Float).permute([0, 2, 1]); // [N, L, 41]
        let picked = lp.gather(2, &targets.unsqueeze(2), false).squeeze_dim(2); // [N, L]
        let expected = -(picked * loss_mask.to_kind(Kind::Float)).sum(Kind::Float);
        assert!((expected.double_value(&[]) - base.sum.double_value(&[])).abs() < 1e-4);
    }

    #[test]
    fn token_loss_checks_inputs() {
        let logits = Tensor::zeros([2, NUM_VALUES, 4], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::ones([2, 4], (Kind::Bool, tch::Device::Cpu));
        let targets = Tensor::zeros([2, 4], (Kind::Int64, tch::Device::Cpu));
        let stats = token_loss(&logits, &targets, &mask).unwrap();
        assert_eq!(stats.count, 8);
        assert!((stats.mean() - (41f64).ln()).abs() < 1e-5);
        // A target of 41 (MASK) on a loss position is an error, not a silent clamp.
        let bad = targets.full_like(41);
        assert!(matches!(
            token_loss(&logits, &bad, &mask),
            Err(ModelError::OutOfRange { .. })
        ));
        assert!(matches!(
            token_loss(&logits, &targets.to_kind(Kind::Float), &mask),
            Err(ModelError::Kind { .. })
        ));
        assert!(matches!(
            token_loss(&logits, &targets.view([8]), &mask),
            Err(ModelError::Shape { .. })
        ));
        let none = mask.zeros_like();
        let empty = token_loss(&logits, &targets, &none).unwrap();
        assert_eq!((empty.count, empty.sum.double_value(&[])), (0, 0.0));
    }
}

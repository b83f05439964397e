//! Trivial token predictors, the bar a pretrained model must clear: always
//! the most frequent value, and copying the neighbour (the previous step for
//! masked prediction, the current step for next-step prediction).

use serde::Serialize;

use crate::NUM_VALUES;

/// Accuracies of the trivial predictors on a set of sequences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TrivialAccuracy {
    /// Always predict the most frequent value.
    pub most_frequent: f64,
    /// Predict value[t] = value[t-1].
    pub copy_neighbour: f64,
}

/// Measures both predictors over every position of `rows` (for masked
/// prediction every position is a candidate; for next-step prediction of
/// t+1 from t, copying is the same comparison).
pub fn trivial_accuracy<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> TrivialAccuracy {
    let mut counts = [0u64; NUM_VALUES];
    let (mut same, mut pairs, mut total) = (0u64, 0u64, 0u64);
    for r in rows {
        for &v in r {
            counts[v as usize] += 1;
        }
        total += r.len() as u64;
        same += r.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        pairs += r.len().saturating_sub(1) as u64;
    }
    let top = counts.iter().copied().max().unwrap_or(0);
    TrivialAccuracy {
        most_frequent: top as f64 / total.max(1) as f64,
        copy_neighbour: same as f64 / pairs.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand() {
        let a: &[u8] = &[1, 1, 2, 1];
        let b: &[u8] = &[3, 3];
        let t = trivial_accuracy([a, b]);
        assert!((t.most_frequent - 3.0 / 6.0).abs() < 1e-12);
        assert!((t.copy_neighbour - 2.0 / 4.0).abs() < 1e-12);
    }
}

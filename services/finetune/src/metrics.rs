//! Classification metrics: accuracy, macro-F1 and the confusion matrix, and
//! accuracy by length band.

use serde::{Deserialize, Serialize};

/// Scores of predictions against true classes `0..K`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Rows scored.
    pub rows: usize,
    /// Fraction of rows whose prediction is the true class.
    pub accuracy: f64,
    /// Mean over classes of F1 = 2·TP / (2·TP + FP + FN). Classes that
    /// neither occur nor are predicted are left out (as scikit-learn does);
    /// a class that occurs but is never predicted right scores 0.
    pub macro_f1: f64,
    /// F1 of each class (0 for a class left out of the mean).
    pub per_class_f1: Vec<f64>,
    /// `confusion[true][predicted]`: row counts.
    pub confusion: Vec<Vec<u64>>,
}

impl ClassMetrics {
    /// Scores `(true, predicted)` pairs over `k` classes.
    ///
    /// # Panics
    /// If a class is `>= k`.
    pub fn from_pairs(k: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut confusion = vec![vec![0u64; k]; k];
        for (t, p) in pairs {
            confusion[t][p] += 1;
        }
        Self::from_confusion(confusion)
    }

    /// Scores a confusion matrix (`confusion[true][predicted]`).
    pub fn from_confusion(confusion: Vec<Vec<u64>>) -> Self {
        let k = confusion.len();
        let rows: u64 = confusion.iter().flatten().sum();
        let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
        let mut per_class_f1 = vec![0.0; k];
        let mut scored = 0usize;
        for c in 0..k {
            let tp = confusion[c][c];
            let actual: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let (fn_, fp) = (actual - tp, predicted - tp);
            if actual + predicted == 0 {
                continue;
            }
            scored += 1;
            per_class_f1[c] = 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
        }
        Self {
            rows: rows as usize,
            accuracy: if rows == 0 {
                0.0
            } else {
                correct as f64 / rows as f64
            },
            macro_f1: if scored == 0 {
                0.0
            } else {
                per_class_f1.iter().sum::<f64>() / scored as f64
            },
            per_class_f1,
            confusion,
        }
    }
}

/// Accuracy of the rows whose length falls in `[min_len, max_len]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthBand {
    /// Shortest length in the band.
    pub min_len: usize,
    /// Longest length in the band.
    pub max_len: usize,
    /// Rows in the band.
    pub rows: usize,
    /// Their accuracy.
    pub accuracy: f64,
}

/// Accuracy per octave of length (512..1023, 1024..2047, …): does the
/// model work across lengths?
pub fn accuracy_by_length(rows: &[(usize, bool)]) -> Vec<LengthBand> {
    let mut bands: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
    for &(len, right) in rows {
        let octave = usize::BITS - 1 - len.max(1).leading_zeros();
        let e = bands.entry(octave).or_default();
        e.0 += 1;
        e.1 += usize::from(right);
    }
    bands
        .into_iter()
        .map(|(o, (n, right))| LengthBand {
            min_len: 1 << o,
            max_len: (1 << (o + 1)) - 1,
            rows: n,
            accuracy: right as f64 / n as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_empty() {
        let m = ClassMetrics::from_pairs(3, [(0, 0), (1, 1), (2, 2)]);
        assert_eq!((m.accuracy, m.macro_f1), (1.0, 1.0));
        let e = ClassMetrics::from_pairs(2, []);
        assert_eq!((e.rows, e.accuracy, e.macro_f1), (0, 0.0, 0.0));
    }

    #[test]
    fn length_octaves() {
        let b = accuracy_by_length(&[(512, true), (1000, false), (1024, true)]);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].min_len, b[0].max_len, b[0].rows), (512, 1023, 2));
        assert_eq!(b[0].accuracy, 0.5);
        assert_eq!((b[1].min_len, b[1].rows, b[1].accuracy), (1024, 1, 1.0));
    }
}

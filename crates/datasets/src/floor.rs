//! The floor: a multinomial logistic regression on [log length, value
//! histogram]. If it does well, the classes are told apart by composition,
//! not structure, and no sequence model is needed.

use std::collections::BTreeMap;

use serde::Serialize;

use pretext_core::NUM_VALUES;
use pretext_core::validate::Label;

/// Features of one sequence: standardised later.
pub fn features(values: &[u8]) -> Vec<f64> {
    let mut f = vec![0.0; NUM_VALUES + 1];
    for &v in values {
        f[v as usize] += 1.0;
    }
    let n = values.len().max(1) as f64;
    for x in &mut f[..NUM_VALUES] {
        *x /= n;
    }
    f[NUM_VALUES] = n.ln();
    f
}

/// Accuracy of the floor and of always guessing the majority class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FloorReport {
    /// Labeled rows trained on.
    pub train_rows: usize,
    /// Rows evaluated.
    pub test_rows: usize,
    /// Number of classes.
    pub classes: usize,
    /// Test accuracy of the histogram + length logistic regression.
    pub accuracy: f64,
    /// Test accuracy of the majority class of the training rows.
    pub majority_accuracy: f64,
    /// 1 / classes.
    pub chance: f64,
}

/// Trains on `train` (features, label) and scores on `test`.
pub fn histogram_floor(train: &[(Vec<f64>, Label)], test: &[(Vec<f64>, Label)]) -> FloorReport {
    let classes: BTreeMap<&Label, usize> = {
        let mut names: Vec<&Label> = train.iter().chain(test).map(|(_, l)| l).collect();
        names.sort();
        names.dedup();
        names.into_iter().enumerate().map(|(i, l)| (l, i)).collect()
    };
    let k = classes.len().max(1);
    let d = train.first().map_or(NUM_VALUES + 1, |(f, _)| f.len());
    // Standardise with the training rows' statistics.
    let mut mean = vec![0.0; d];
    let mut sd = vec![0.0; d];
    for (f, _) in train {
        for j in 0..d {
            mean[j] += f[j];
        }
    }
    let n = train.len().max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    for (f, _) in train {
        for j in 0..d {
            sd[j] += (f[j] - mean[j]).powi(2);
        }
    }
    sd.iter_mut().for_each(|s| *s = (*s / n).sqrt().max(1e-9));
    let norm = |f: &[f64]| -> Vec<f64> { (0..d).map(|j| (f[j] - mean[j]) / sd[j]).collect() };
    let xs: Vec<Vec<f64>> = train.iter().map(|(f, _)| norm(f)).collect();
    let ys: Vec<usize> = train.iter().map(|(_, l)| classes[l]).collect();

    // Full-batch gradient descent on softmax cross-entropy with L2.
    let mut w = vec![vec![0.0; d + 1]; k];
    let (lr, l2) = (0.5, 1e-3);
    for _ in 0..500 {
        let mut grad = vec![vec![0.0; d + 1]; k];
        for (x, &y) in xs.iter().zip(&ys) {
            let p = softmax(&w, x);
            for c in 0..k {
                let g = p[c] - f64::from(u8::from(c == y));
                for j in 0..d {
                    grad[c][j] += g * x[j];
                }
                grad[c][d] += g;
            }
        }
        for c in 0..k {
            for j in 0..=d {
                w[c][j] -= lr * (grad[c][j] / n + l2 * w[c][j]);
            }
        }
    }
    let predict = |f: &[f64]| -> usize {
        let p = softmax(&w, &norm(f));
        (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0)
    };
    let mut counts = vec![0usize; k];
    ys.iter().for_each(|&y| counts[y] += 1);
    let majority = (0..k).max_by_key(|&c| counts[c]).unwrap_or(0);
    let t = test.len().max(1) as f64;
    let accuracy = test
        .iter()
        .filter(|(f, l)| predict(f) == classes[l])
        .count() as f64
        / t;
    let majority_accuracy = test.iter().filter(|(_, l)| classes[l] == majority).count() as f64 / t;
    FloorReport {
        train_rows: train.len(),
        test_rows: test.len(),
        classes: k,
        accuracy,
        majority_accuracy,
        chance: 1.0 / k as f64,
    }
}

fn softmax(w: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    let d = x.len();
    let z: Vec<f64> = w
        .iter()
        .map(|wc| wc[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + wc[d])
        .collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_classes_that_differ_in_histogram() {
        // Class 0 uses low values, class 1 high values: the floor must find it.
        let make = |i: usize| {
            let c = i % 2;
            let vals: Vec<u8> = (0..600)
                .map(|t| ((t * 7 + i) % 20) as u8 + 20 * c as u8)
                .collect();
            (features(&vals), Label::Int(c as i64))
        };
        let train: Vec<_> = (0..40).map(make).collect();
        let test: Vec<_> = (40..80).map(make).collect();
        let r = histogram_floor(&train, &test);
        assert!(r.accuracy > 0.95, "{r:?}");
        assert!((r.majority_accuracy - 0.5).abs() < 1e-9);
    }
}

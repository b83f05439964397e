//! The classical baselines every table shows beside the CNNs, on the same
//! labeled subset: the majority class, and multinomial logistic regressions
//! on [log length, value histogram] (`histogram`) and on hashed n-gram
//! counts (`ngram`), their L2 strength selected on `valid`.

use std::time::Instant;

use pretext_model::tch::{self, Device, Kind, Reduction, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Example, LabeledData, stratified_subset};
use crate::error::FinetuneError;
use crate::metrics::ClassMetrics;
use crate::train::balanced_weights;

/// A classical baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// Always the most frequent class of the labeled subset.
    Majority,
    /// Logistic regression on [value frequencies, log length].
    Histogram,
    /// Logistic regression on hashed 1- to 4-gram frequencies and log length.
    Ngram,
}

impl Baseline {
    /// Every baseline, in report order.
    pub const ALL: [Baseline; 3] = [Baseline::Majority, Baseline::Histogram, Baseline::Ngram];

    /// The method name in results and reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Majority => "majority",
            Baseline::Histogram => "histogram",
            Baseline::Ngram => "ngram",
        }
    }
}

/// What a baseline scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    /// Which baseline.
    pub baseline: Baseline,
    /// Fraction of the labeled train rows used.
    pub label_fraction: f64,
    /// Seed of the subset.
    pub seed: u64,
    /// Rows trained on.
    pub train_rows: usize,
    /// L2 strength chosen on `valid` (0 for the majority class).
    pub l2: f64,
    /// `valid` accuracy of the chosen model.
    pub valid_accuracy: f64,
    /// Scores on `test`.
    pub test: ClassMetrics,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Buckets of the hashed n-grams (2..=4; 1-grams are the histogram).
const NGRAM_BUCKETS: usize = 2048;

/// L2 strengths tried, selected on `valid`.
const L2_GRID: [f64; 4] = [1e-4, 1e-3, 1e-2, 1e-1];

/// Full-batch Adam steps per fit.
const FIT_STEPS: i64 = 300;

/// Features of one row: value frequencies, log length (histogram); plus
/// the square roots of the frequencies of hashed 2-, 3- and 4-grams (ngram).
pub fn features(kind: Baseline, values: &[u8]) -> Vec<f32> {
    // The histogram floor's features: value frequencies, then log length.
    let mut f: Vec<f32> = pretext_datasets::floor::features(values)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let n = values.len().max(1) as f32;
    if kind != Baseline::Ngram {
        return f;
    }
    let mut g = vec![0f32; NGRAM_BUCKETS];
    for k in 2..=4usize {
        for w in values.windows(k) {
            let mut code = k as u64;
            for &v in w {
                code = code * 64 + u64::from(v);
            }
            let h = code.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 11);
            g[h as usize] += 1.0;
        }
    }
    f.extend(g.into_iter().map(|c| (c / n).sqrt()));
    f
}

fn matrix(kind: Baseline, rows: &[&Example]) -> (Tensor, Tensor) {
    let d = features(kind, &[0]).len() as i64;
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|e| features(kind, &e.values))
        .collect();
    let labels: Vec<i64> = rows.iter().map(|e| e.class as i64).collect();
    (
        Tensor::from_slice(&flat).view([rows.len() as i64, d]),
        Tensor::from_slice(&labels),
    )
}

/// Runs `baseline` on the stratified `label_fraction` of the labeled train
/// rows drawn with `seed` (the subset fine-tuning draws with that seed).
pub fn run_baseline(
    baseline: Baseline,
    data: &LabeledData,
    label_fraction: f64,
    seed: u64,
) -> Result<BaselineReport, FinetuneError> {
    let t0 = Instant::now();
    data.check()?;
    let k = data.classes.len();
    let subset: Vec<&Example> = stratified_subset(
        data.train.iter().map(|e| (e.id.as_str(), e.class)),
        label_fraction,
        seed,
    )
    .into_iter()
    .map(|i| &data.train[i])
    .collect();
    let mut per_class = vec![0usize; k];
    for e in &subset {
        per_class[e.class] += 1;
    }
    let valid: Vec<&Example> = data.valid.iter().collect();
    let test: Vec<&Example> = data.test.iter().collect();
    let score = |pred: &[usize], rows: &[&Example]| {
        ClassMetrics::from_pairs(k, rows.iter().zip(pred).map(|(e, &p)| (e.class, p)))
    };
    let (l2, valid_accuracy, test_pred) = if baseline == Baseline::Majority {
        // Ties go to the lowest class index.
        let top = (0..k)
            .max_by_key(|&c| (per_class[c], std::cmp::Reverse(c)))
            .unwrap_or(0);
        let v = score(&vec![top; valid.len()], &valid).accuracy;
        (0.0, v, vec![top; test.len()])
    } else {
        let (x, y) = matrix(baseline, &subset);
        let (xv, yv) = matrix(baseline, &valid);
        let (xt, _) = matrix(baseline, &test);
        let mean = x.mean_dim(0, false, None);
        let std = x.std_correction(0, 0, false).clamp_min(1e-6);
        let norm = |t: &Tensor| (t - &mean) / &std;
        let (x, xv, xt) = (norm(&x), norm(&xv), norm(&xt));
        let weights = Tensor::from_slice(&balanced_weights(&per_class));
        let mut best: Option<(f64, f64, Tensor, Tensor)> = None;
        for l2 in L2_GRID {
            let (w, b) = fit(&x, &y, &weights, k as i64, l2, seed)?;
            let right = xv
                .matmul(&w)
                .f_add(&b)?
                .argmax(-1, false)
                .eq_tensor(&yv)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let acc = right as f64 / valid.len().max(1) as f64;
            // Ties go to the stronger regularisation (tried later).
            if best.as_ref().is_none_or(|(a, _, _, _)| acc >= *a) {
                best = Some((acc, l2, w, b));
            }
        }
        let (acc, l2, w, b) = best.expect("a grid point");
        let pred = Vec::<i64>::try_from(xt.matmul(&w).f_add(&b)?.argmax(-1, false))?;
        (l2, acc, pred.into_iter().map(|p| p as usize).collect())
    };
    Ok(BaselineReport {
        baseline,
        label_fraction,
        seed,
        train_rows: subset.len(),
        l2,
        valid_accuracy,
        test: score(&test_pred, &test),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A class-weighted multinomial logistic regression with L2 strength `l2`,
/// fitted full-batch: (weights [D, K], bias [K]).
fn fit(
    x: &Tensor,
    y: &Tensor,
    class_weights: &Tensor,
    k: i64,
    l2: f64,
    seed: u64,
) -> Result<(Tensor, Tensor), FinetuneError> {
    tch::manual_seed(seed as i64);
    let d = x.size()[1];
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[d, k]);
    let b = vs.root().zeros("b", &[k]);
    let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Adam::default(), &vs, 0.05)?;
    for _ in 0..FIT_STEPS {
        let logits = x.matmul(&w).f_add(&b)?;
        let ce = logits.f_cross_entropy_loss(y, Some(class_weights), Reduction::Mean, -100, 0.0)?;
        let loss = ce.f_add(&(w.square().sum(Kind::Float) * l2))?;
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    Ok((w.detach(), b.detach()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_core::NUM_VALUES;
    use pretext_core::validate::Label;

    fn ex(id: usize, values: Vec<u8>, class: usize) -> Example {
        Example {
            id: format!("r{id}"),
            values,
            class,
        }
    }

    /// Class 0: rows of 1s and 2s alternating in pairs; class 1: the same
    /// values, singly alternating (same histogram, other bigrams); class 2
    /// (the most rows): mostly 5s. Lengths drawn alike.
    fn data() -> LabeledData {
        let mut rng = 17u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as usize
        };
        let mut rows = Vec::new();
        for i in 0..240 {
            let class = [0, 1, 2, 2][i % 4];
            let n = 512 + next() % 512;
            let values: Vec<u8> = (0..n)
                .map(|t| match class {
                    0 => [1, 1, 2, 2][t % 4],
                    1 => [1, 2][t % 2],
                    _ => {
                        if next() % 10 == 0 {
                            1
                        } else {
                            5
                        }
                    }
                })
                .collect();
            rows.push(ex(i, values, class));
        }
        let test = rows.split_off(180);
        let valid = rows.split_off(140);
        LabeledData {
            classes: vec![Label::Int(0), Label::Int(1), Label::Int(2)],
            train: rows,
            valid,
            test,
            unlabeled_train: 0,
            rejected: 0,
        }
    }

    #[test]
    fn baselines_on_a_tiny_separable_set() {
        tch::set_num_threads(1);
        let d = data();
        let majority = run_baseline(Baseline::Majority, &d, 1.0, 0).unwrap();
        // Class 2 is half of test; the majority predicts it always.
        assert!((majority.test.accuracy - 0.5).abs() < 1e-9, "{majority:?}");
        assert_eq!(majority.test.confusion[2][2], 30);
        let hist = run_baseline(Baseline::Histogram, &d, 1.0, 0).unwrap();
        // Classes 0 and 1 share a histogram: the histogram tells class 2
        // apart and guesses between the other two.
        assert!(
            hist.test.accuracy > 0.6 && hist.test.accuracy < 0.9,
            "{hist:?}"
        );
        let ngram = run_baseline(Baseline::Ngram, &d, 1.0, 0).unwrap();
        assert!(ngram.test.accuracy > 0.98, "{ngram:?}");
        assert!(L2_GRID.contains(&ngram.l2));
        assert_eq!(ngram.train_rows, 140);
    }

    #[test]
    fn features_by_hand() {
        let f = features(Baseline::Histogram, &[3, 3, 4, 3]);
        assert_eq!(f.len(), NUM_VALUES + 1);
        assert_eq!((f[3], f[4]), (0.75, 0.25));
        assert!((f[NUM_VALUES] - 4f32.ln()).abs() < 1e-6);
        let g = features(Baseline::Ngram, &[3, 3, 4, 3]);
        assert_eq!(g.len(), NUM_VALUES + 1 + NGRAM_BUCKETS);
        // 3 bigrams, 2 trigrams, 1 4-gram; no two of these collide here.
        let mass: f32 = g[NUM_VALUES + 1..].iter().map(|x| x * x * 4.0).sum();
        assert!((mass - 6.0).abs() < 1e-4, "{mass}");
    }
}

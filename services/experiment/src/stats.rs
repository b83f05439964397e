//! What the grid's numbers support: per-seed paired differences against
//! the baseline, their mean and a 95% bootstrap interval, and the verdict
//! that follows from the interval alone (`OUT/summary.json`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::record::{Protocol, Record};

/// Bootstrap resamples of an interval.
pub const RESAMPLES: usize = 10_000;

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n.max(1.0);
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// The 95% percentile-bootstrap interval of the mean of `xs` (resampled
/// with replacement, [`RESAMPLES`] times, from a fixed seed). One value
/// gives a point.
pub fn bootstrap_ci(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EED);
    let n = xs.len();
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// What an interval says: `yes` when it lies above 0, `no` below, else
/// `undecided`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval is above 0.
    Yes,
    /// The whole interval is below 0.
    No,
    /// The interval holds 0.
    Undecided,
}

impl Verdict {
    /// The verdict of the interval `[lo, hi]`.
    pub fn of(lo: f64, hi: f64) -> Verdict {
        if lo > 0.0 {
            Verdict::Yes
        } else if hi < 0.0 {
            Verdict::No
        } else {
            Verdict::Undecided
        }
    }

    /// The word printed.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Yes => "yes",
            Verdict::No => "no",
            Verdict::Undecided => "undecided",
        }
    }
}

/// One paired comparison of `summary.json`, in accuracy points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The pretrained method (`masked`, `next`).
    pub method: String,
    /// How its encoder was used.
    pub protocol: Protocol,
    /// Fraction of the train rows its pretraining saw.
    pub pretrain_fraction: f64,
    /// Fraction of the labeled train rows.
    pub label_fraction: f64,
    /// Seeds paired (each present for both sides).
    pub seeds: Vec<u64>,
    /// Mean of the per-seed differences, method − `none` (fine-tuned from
    /// scratch on the same subset), in points.
    pub diff_mean: f64,
    /// 95% bootstrap interval of that mean, in points.
    pub ci95: [f64; 2],
    /// What the interval says.
    pub verdict: Verdict,
}

/// `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Every pretrained method × protocol × fractions against `none`.
    pub comparisons: Vec<Comparison>,
}

/// The paired comparisons of every pretrained cell with `none` fine-tuned
/// from scratch, seed by seed.
pub fn summarise(records: &[Record]) -> Summary {
    let mut base: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.method == "none" && r.protocol == Protocol::Finetune)
    {
        base.insert((r.label_fraction.to_bits(), r.seed), r.test_accuracy);
    }
    type Key = (String, u8, u64, u64);
    let mut cells: BTreeMap<Key, Vec<(u64, f64)>> = BTreeMap::new();
    let mut order: Vec<Key> = Vec::new();
    for r in records.iter().filter(|r| r.is_cnn() && r.method != "none") {
        let Some(b) = base.get(&(r.label_fraction.to_bits(), r.seed)) else {
            continue;
        };
        let key = (
            r.method.clone(),
            r.protocol as u8,
            r.pretrain_fraction.to_bits(),
            r.label_fraction.to_bits(),
        );
        if !cells.contains_key(&key) {
            order.push(key.clone());
        }
        cells
            .entry(key)
            .or_default()
            .push((r.seed, 100.0 * (r.test_accuracy - b)));
    }
    let comparisons = order
        .into_iter()
        .map(|key| {
            let pairs = &cells[&key];
            let diffs: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            let (mean, _) = mean_std(&diffs);
            let (lo, hi) = bootstrap_ci(&diffs);
            Comparison {
                method: key.0.clone(),
                protocol: if key.1 == Protocol::Probe as u8 {
                    Protocol::Probe
                } else {
                    Protocol::Finetune
                },
                pretrain_fraction: f64::from_bits(key.2),
                label_fraction: f64::from_bits(key.3),
                seeds: pairs.iter().map(|p| p.0).collect(),
                diff_mean: mean,
                ci95: [lo, hi],
                verdict: Verdict::of(lo, hi),
            }
        })
        .collect();
    Summary { comparisons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: &str, protocol: Protocol, lf: f64, seed: u64, acc: f64) -> Record {
        let pf = if method == "none" { 0.0 } else { 1.0 };
        crate::record::test_record(method, protocol, pf, lf, seed, acc)
    }

    #[test]
    fn paired_differences_by_hand() {
        let mut rs = Vec::new();
        for (seed, none, masked) in [(0, 0.50, 0.60), (1, 0.40, 0.55), (2, 0.45, 0.50)] {
            rs.push(rec("none", Protocol::Finetune, 0.1, seed, none));
            rs.push(rec("masked", Protocol::Finetune, 0.1, seed, masked));
            rs.push(rec("ngram", Protocol::Classical, 0.1, seed, 0.9));
        }
        let s = summarise(&rs);
        assert_eq!(s.comparisons.len(), 1, "baselines are not compared");
        let c = &s.comparisons[0];
        assert_eq!(c.seeds, vec![0, 1, 2]);
        // Differences 10, 15, 5 points.
        assert!((c.diff_mean - 10.0).abs() < 1e-9);
        assert!(c.ci95[0] <= c.diff_mean && c.diff_mean <= c.ci95[1]);
        assert!(c.ci95[0] >= 5.0 - 1e-9 && c.ci95[1] <= 15.0 + 1e-9);
        assert_eq!(c.verdict, Verdict::Yes);
    }

    #[test]
    fn verdicts_follow_the_interval() {
        assert_eq!(Verdict::of(0.1, 3.0), Verdict::Yes);
        assert_eq!(Verdict::of(-3.0, -0.1), Verdict::No);
        assert_eq!(Verdict::of(-1.0, 2.0), Verdict::Undecided);
        let (lo, hi) = bootstrap_ci(&[-10.0, 12.0]);
        assert_eq!(Verdict::of(lo, hi), Verdict::Undecided);
        assert_eq!(bootstrap_ci(&[4.0]), (4.0, 4.0));
    }
}

//! One run of the grid as a line of `results.json` ([`Record`]): a
//! fine-tuned or probed CNN, or a classical baseline, on one labeled subset.

use pretext_finetune::{BaselineReport, ClassMetrics, FinetuneReport, LengthBand};
use serde::{Deserialize, Serialize};

/// Label fractions at or below this stand for "one labeled row per class"
/// (the stratified draw keeps at least one row of every class).
pub const ONE_PER_CLASS: f64 = 1e-9;

/// Parses a label fraction: a number in (0, 1], or `1/class`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    if s == "1/class" {
        return Ok(ONE_PER_CLASS);
    }
    let f: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is neither a fraction nor `1/class`"))?;
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err(format!("a fraction must be in (0, 1], got {f}"))
    }
}

/// How a label fraction is printed: `1/class`, `5%`, `0.5%`.
pub fn fraction_label(f: f64) -> String {
    if f <= ONE_PER_CLASS {
        "1/class".into()
    } else if f < 0.01 {
        format!("{:.1}%", 100.0 * f)
    } else {
        format!("{:.0}%", 100.0 * f)
    }
}

/// How a run used its starting point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Every weight trains.
    Finetune,
    /// Linear probe: the encoder is frozen.
    Probe,
    /// A classical baseline (no CNN).
    Classical,
}

/// One run of the grid: a line of `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// `none`, `masked`, `next`, or a baseline: `majority`, `histogram`, `ngram`.
    pub method: String,
    /// `finetune`, `probe` or `classical`.
    pub protocol: Protocol,
    /// Fraction of the train rows pretraining saw (0 without pretraining).
    pub pretrain_fraction: f64,
    /// Fraction of the labeled train rows trained on ([`ONE_PER_CLASS`]:
    /// one row per class).
    pub label_fraction: f64,
    /// Seed of pretraining, the subset, the head and the batch order.
    pub seed: u64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test macro-F1.
    pub macro_f1: f64,
    /// Labeled rows trained on.
    pub train_rows: usize,
    /// Fine-tuning steps (0 for baselines).
    pub steps: u64,
    /// Valid accuracy of the selected model.
    pub best_valid_accuracy: f64,
    /// Test accuracy by length octave (empty for baselines).
    pub test_by_length: Vec<LengthBand>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Share of test predictions that went to the most predicted class.
    #[serde(default)]
    pub top_prediction_share: f64,
    /// Share of test rows that truly are that class.
    #[serde(default)]
    pub top_prediction_true_share: f64,
}

/// (share of predictions of the most predicted class, its share of rows).
fn prediction_shares(m: &ClassMetrics) -> (f64, f64) {
    let k = m.confusion.len();
    let rows = m.rows.max(1) as f64;
    let predicted = |c: usize| m.confusion.iter().map(|r| r[c]).sum::<u64>();
    let Some(top) = (0..k).max_by_key(|&c| predicted(c)) else {
        return (0.0, 0.0);
    };
    let actual: u64 = m.confusion[top].iter().sum();
    (predicted(top) as f64 / rows, actual as f64 / rows)
}

impl Record {
    /// The record of a fine-tuning report.
    pub fn new(method: &str, pretrain_fraction: f64, r: &FinetuneReport) -> Self {
        let (top, true_share) = prediction_shares(&r.test);
        Self {
            method: method.to_owned(),
            protocol: if r.freeze_encoder {
                Protocol::Probe
            } else {
                Protocol::Finetune
            },
            pretrain_fraction,
            label_fraction: r.label_fraction,
            seed: r.seed,
            test_accuracy: r.test.accuracy,
            macro_f1: r.test.macro_f1,
            train_rows: r.train_rows,
            steps: r.steps,
            best_valid_accuracy: r.best_valid_accuracy,
            test_by_length: r.test_by_length.clone(),
            seconds: r.seconds,
            top_prediction_share: top,
            top_prediction_true_share: true_share,
        }
    }

    /// The record of a classical baseline.
    pub fn baseline(r: &BaselineReport) -> Self {
        let (top, true_share) = prediction_shares(&r.test);
        Self {
            method: r.baseline.name().to_owned(),
            protocol: Protocol::Classical,
            pretrain_fraction: 0.0,
            label_fraction: r.label_fraction,
            seed: r.seed,
            test_accuracy: r.test.accuracy,
            macro_f1: r.test.macro_f1,
            train_rows: r.train_rows,
            steps: 0,
            best_valid_accuracy: r.valid_accuracy,
            test_by_length: Vec::new(),
            seconds: r.seconds,
            top_prediction_share: top,
            top_prediction_true_share: true_share,
        }
    }

    /// `masked`, `masked probe`, `masked (pretrain 25%)` when pretraining
    /// saw a part, or the baseline's name.
    pub fn label(&self) -> String {
        let name = match self.protocol {
            Protocol::Probe => format!("{} probe", self.method),
            Protocol::Finetune | Protocol::Classical => self.method.clone(),
        };
        if self.pretrain_fraction <= 0.0 || self.pretrain_fraction >= 1.0 {
            name
        } else {
            format!("{name} (pretrain {:.0}%)", 100.0 * self.pretrain_fraction)
        }
    }

    /// Whether this is a CNN run (not a classical baseline).
    pub fn is_cnn(&self) -> bool {
        self.protocol != Protocol::Classical
    }

    /// Collapse: one class takes at least half of the predictions and at
    /// least 25 points more than its share of the rows, or macro-F1 is
    /// under 0.75 × accuracy.
    pub fn collapsed(&self) -> bool {
        (self.top_prediction_share >= 0.5
            && self.top_prediction_share - self.top_prediction_true_share >= 0.25)
            || self.macro_f1 < 0.75 * self.test_accuracy
    }
}

/// A record with the given cell and accuracy (test and valid), for the
/// tests of the modules that summarise records.
#[cfg(test)]
pub fn test_record(
    method: &str,
    protocol: Protocol,
    pretrain_fraction: f64,
    label_fraction: f64,
    seed: u64,
    acc: f64,
) -> Record {
    Record {
        method: method.into(),
        protocol,
        pretrain_fraction,
        label_fraction,
        seed,
        test_accuracy: acc,
        macro_f1: acc,
        train_rows: 10,
        steps: 1,
        best_valid_accuracy: acc,
        test_by_length: Vec::new(),
        seconds: 0.0,
        top_prediction_share: 0.4,
        top_prediction_true_share: 0.4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(confusion: Vec<Vec<u64>>) -> Record {
        let m = ClassMetrics::from_confusion(confusion);
        let (top, true_share) = prediction_shares(&m);
        Record {
            method: "none".into(),
            protocol: Protocol::Finetune,
            pretrain_fraction: 0.0,
            label_fraction: 1.0,
            seed: 0,
            test_accuracy: m.accuracy,
            macro_f1: m.macro_f1,
            train_rows: 1,
            steps: 1,
            best_valid_accuracy: 0.0,
            test_by_length: Vec::new(),
            seconds: 0.0,
            top_prediction_share: top,
            top_prediction_true_share: true_share,
        }
    }

    #[test]
    fn a_model_that_predicts_one_class_is_flagged_and_a_good_one_is_not() {
        // 3 balanced classes, everything predicted as class 0.
        let collapsed = rec(vec![vec![10, 0, 0], vec![10, 0, 0], vec![10, 0, 0]]);
        assert!((collapsed.top_prediction_share - 1.0).abs() < 1e-12);
        assert!((collapsed.top_prediction_true_share - 1.0 / 3.0).abs() < 1e-12);
        assert!(collapsed.collapsed());
        // Mostly right, predictions spread like the rows.
        let good = rec(vec![vec![8, 1, 1], vec![1, 8, 1], vec![1, 1, 8]]);
        assert!(!good.collapsed());
        // A class that is 80% of the rows may take 80% of the predictions.
        let skewed = rec(vec![vec![40, 0], vec![2, 8]]);
        assert!(!skewed.collapsed(), "{skewed:?}");
    }

    #[test]
    fn fractions_parse_and_print() {
        assert_eq!(parse_fraction("1/class"), Ok(ONE_PER_CLASS));
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert!(parse_fraction("0").is_err() && parse_fraction("1.5").is_err());
        assert_eq!(fraction_label(ONE_PER_CLASS), "1/class");
        assert_eq!(fraction_label(0.05), "5%");
        assert_eq!(fraction_label(0.005), "0.5%");
    }
}

//! `report.md`: tables generated from the records and the paired
//! comparisons, and answers that only restate what those numbers say (no
//! sentence the numbers could contradict).

use std::collections::BTreeMap;

use pretext_trainer::metrics::TaskScore;

use crate::record::{Record, fraction_label};
use crate::stats::{Summary, Verdict, bootstrap_ci, mean_std};

/// One pretraining run of the grid, as the report shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PretrainRun {
    /// `masked` or `next`.
    pub task: String,
    /// Fraction of the train rows it saw.
    pub pretrain_fraction: f64,
    /// Seed of its initialisation and masks.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Model and trivial token accuracy over its last steps.
    pub score: TaskScore,
}

/// The distinct label fractions, ascending.
pub fn fractions(records: &[Record]) -> Vec<f64> {
    let mut v: Vec<f64> = records.iter().map(|r| r.label_fraction).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The distinct row labels, CNN rows first, in first-seen order.
fn labels(records: &[Record]) -> Vec<String> {
    let mut cnn: Vec<String> = Vec::new();
    let mut classical: Vec<String> = Vec::new();
    for r in records {
        let list = if r.is_cnn() { &mut cnn } else { &mut classical };
        if !list.contains(&r.label()) {
            list.push(r.label());
        }
    }
    cnn.extend(classical);
    cnn
}

fn cell<'a>(records: &'a [Record], label: &str, lf: f64) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.label() == label && r.label_fraction == lf)
        .collect()
}

/// The accuracy table: label × fraction, test accuracy as mean [95%
/// bootstrap interval] over seeds, and mean macro-F1.
pub fn markdown_table(records: &[Record]) -> String {
    let fracs = fractions(records);
    let mut s = String::from("| method |");
    for f in &fracs {
        s += &format!(" {} labels: accuracy | F1 |", fraction_label(*f));
    }
    s += "\n|---|";
    s += &"---|---|".repeat(fracs.len());
    s += "\n";
    for label in labels(records) {
        s += &format!("| {label} |");
        for &f in &fracs {
            let rs = cell(records, &label, f);
            if rs.is_empty() {
                s += " — | — |";
                continue;
            }
            let acc: Vec<f64> = rs.iter().map(|r| 100.0 * r.test_accuracy).collect();
            let (m, _) = mean_std(&acc);
            let (lo, hi) = bootstrap_ci(&acc);
            let (f1, _) = mean_std(&rs.iter().map(|r| r.macro_f1).collect::<Vec<_>>());
            let warn = if rs.iter().any(|r| r.collapsed()) {
                " ⚠"
            } else {
                ""
            };
            s += &format!(
                " {m:.1} [{lo:.1}, {hi:.1}] (n={}){warn} | {f1:.3} |",
                rs.len()
            );
        }
        s += "\n";
    }
    s
}

/// Lines naming every cell where a run collapsed onto one class.
pub fn collapse_warnings(records: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    for label in labels(records) {
        for f in fractions(records) {
            let rs = cell(records, &label, f);
            let bad: Vec<&&Record> = rs.iter().filter(|r| r.collapsed()).collect();
            if let Some(worst) = bad
                .iter()
                .max_by(|a, b| a.top_prediction_share.total_cmp(&b.top_prediction_share))
            {
                out.push(format!(
                    "⚠ collapse: `{label}` at {} labels, {} of {} seeds: one class takes {:.0}% of the test predictions (it is {:.0}% of the test rows); macro-F1 {:.3} at accuracy {:.1}%.",
                    fraction_label(f),
                    bad.len(),
                    rs.len(),
                    100.0 * worst.top_prediction_share,
                    100.0 * worst.top_prediction_true_share,
                    worst.macro_f1,
                    100.0 * worst.test_accuracy
                ));
            }
        }
    }
    out
}

/// The pretext tasks against the trivial predictors on the same targets.
pub fn pretext_table(runs: &[PretrainRun]) -> String {
    let mut s = String::from(
        "| task | pretrain data | seed | steps | model | copy-previous | copy-nearest-unmasked | most-frequent | model − best trivial |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let t = &r.score.trivial;
        s += &format!(
            "| {} | {:.0}% | {} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:+.1} points{} |\n",
            r.task,
            100.0 * r.pretrain_fraction,
            r.seed,
            r.steps,
            100.0 * r.score.accuracy,
            100.0 * t.copy_previous,
            100.0 * t.copy_nearest,
            100.0 * t.most_frequent,
            100.0 * (r.score.accuracy - t.best()),
            if r.score.is_trivial() {
                " ⚠ trivial"
            } else if r.score.is_weak() {
                " ⚠ weak"
            } else {
                ""
            }
        );
    }
    s
}

/// Warnings for pretext tasks within 5 points of a trivial predictor
/// (trivial within 3, weak within 5).
pub fn trivial_warnings(runs: &[PretrainRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.score.is_weak())
        .map(|r| {
            let kind = if r.score.is_trivial() {
                "trivial task: within 3 points of"
            } else {
                "weak task: under 5 points above"
            };
            let setting = if r.task == "masked" {
                "raise --mask-span (or --mask-rate)"
            } else {
                "raise --horizon"
            };
            format!(
                "⚠ {kind} the best trivial predictor: `{}` (seed {}) scores {:.1}% against {} ({:.1}%): the encoder learned little that copying or counting does not give; {setting}, or pretrain longer.",
                r.task,
                r.seed,
                100.0 * r.score.accuracy,
                r.score.trivial.best_name(),
                100.0 * r.score.trivial.best()
            )
        })
        .collect()
}

/// The paired comparisons as a table.
pub fn comparison_table(summary: &Summary) -> String {
    let mut s = String::from(
        "| method | protocol | pretrain data | labels | seeds | gain over `none` (points) | 95% interval | pretraining helps? |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in &summary.comparisons {
        s += &format!(
            "| {} | {:?} | {:.0}% | {} | {} | {:+.1} | [{:+.1}, {:+.1}] | {} |\n",
            c.method,
            c.protocol,
            100.0 * c.pretrain_fraction,
            fraction_label(c.label_fraction),
            c.seeds.len(),
            c.diff_mean,
            c.ci95[0],
            c.ci95[1],
            c.verdict.word()
        )
        .to_lowercase();
    }
    s
}

/// The label with the highest mean valid accuracy among `records` at `lf`
/// that pass `keep` (the choice a user can make without looking at test).
fn best_by_valid(records: &[Record], lf: f64, keep: impl Fn(&Record) -> bool) -> Option<String> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.label_fraction == lf && keep(r)) {
        by.entry(r.label()).or_default().push(r.best_valid_accuracy);
    }
    by.into_iter()
        .map(|(l, v)| (l, mean_std(&v).0))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, _)| l)
}

/// Per label fraction: the CNN chosen on valid against the classical
/// baseline chosen on valid, paired by seed. Rows of
/// (fraction, cnn, classical, seeds, mean diff, lo, hi, verdict).
pub fn cnn_vs_classical(records: &[Record]) -> String {
    let mut s = String::from(
        "| labels | best CNN (on valid) | its accuracy | best classical (on valid) | its accuracy | CNN − classical (points) | 95% interval | CNN better? |\n|---|---|---|---|---|---|---|---|\n",
    );
    for lf in fractions(records) {
        let (Some(cnn), Some(cls)) = (
            best_by_valid(records, lf, |r| {
                r.is_cnn() && (r.pretrain_fraction <= 0.0 || r.pretrain_fraction >= 1.0)
            }),
            best_by_valid(records, lf, |r| !r.is_cnn()),
        ) else {
            continue;
        };
        let by_seed = |label: &str| -> BTreeMap<u64, f64> {
            cell(records, label, lf)
                .into_iter()
                .map(|r| (r.seed, 100.0 * r.test_accuracy))
                .collect()
        };
        let (a, b) = (by_seed(&cnn), by_seed(&cls));
        let diffs: Vec<f64> = a
            .iter()
            .filter_map(|(s, x)| b.get(s).map(|y| x - y))
            .collect();
        if diffs.is_empty() {
            continue;
        }
        let (m, _) = mean_std(&diffs);
        let (lo, hi) = bootstrap_ci(&diffs);
        let mean = |m: &BTreeMap<u64, f64>| mean_std(&m.values().copied().collect::<Vec<_>>()).0;
        s += &format!(
            "| {} | {cnn} | {:.1}% | {cls} | {:.1}% | {m:+.1} | [{lo:+.1}, {hi:+.1}] | {} |\n",
            fraction_label(lf),
            mean(&a),
            mean(&b),
            Verdict::of(lo, hi).word()
        );
    }
    s
}

/// One line counting the verdicts of the comparisons.
pub fn verdict_line(summary: &Summary) -> String {
    let count = |v: Verdict| {
        summary
            .comparisons
            .iter()
            .filter(|c| c.verdict == v)
            .count()
    };
    format!(
        "Of {} paired comparisons with `none`: {} yes (interval above 0), {} no (below 0), {} undecided (the interval holds 0).",
        summary.comparisons.len(),
        count(Verdict::Yes),
        count(Verdict::No),
        count(Verdict::Undecided)
    )
}

/// Test accuracy by length octave per method label, all records pooled.
pub fn band_table(recs: &[Record]) -> String {
    let mut by_method: BTreeMap<String, BTreeMap<usize, (usize, f64)>> = BTreeMap::new();
    for r in recs {
        for b in &r.test_by_length {
            let e = by_method
                .entry(r.label())
                .or_default()
                .entry(b.min_len)
                .or_default();
            e.0 += b.rows;
            e.1 += b.accuracy * b.rows as f64;
        }
    }
    let mut s = String::from("| method | all | length band: accuracy (rows) |\n|---|---|---|\n");
    for (m, bands) in &by_method {
        let (n, c) = bands
            .values()
            .fold((0usize, 0.0), |(n, c), (bn, bc)| (n + bn, c + bc));
        s += &format!(
            "| {m} | {:.1}% | {} |\n",
            100.0 * c / n.max(1) as f64,
            bands
                .iter()
                .map(|(lo, (n, c))| format!(
                    "{lo}..{}: {:.1}% ({n})",
                    2 * lo - 1,
                    100.0 * c / *n as f64
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Protocol;

    fn rec(method: &str, protocol: Protocol, seed: u64, acc: f64, valid: f64) -> Record {
        let pf = if method == "masked" { 1.0 } else { 0.0 };
        Record {
            best_valid_accuracy: valid,
            ..crate::record::test_record(method, protocol, pf, 1.0, seed, acc)
        }
    }

    #[test]
    fn the_cnn_and_the_baseline_are_chosen_on_valid_and_paired_by_seed() {
        let mut rs = Vec::new();
        for seed in 0..3 {
            rs.push(rec("none", Protocol::Finetune, seed, 0.6, 0.5));
            rs.push(rec(
                "masked",
                Protocol::Finetune,
                seed,
                0.7 + 0.01 * seed as f64,
                0.7,
            ));
            rs.push(rec("histogram", Protocol::Classical, seed, 0.65, 0.6));
            // Best on test, worst on valid: never chosen.
            rs.push(rec("ngram", Protocol::Classical, seed, 0.99, 0.1));
        }
        let t = cnn_vs_classical(&rs);
        let row = t.lines().nth(2).unwrap();
        assert!(
            row.contains("| masked |") && row.contains("| histogram |"),
            "{row}"
        );
        assert!(row.contains("+6.0") && row.ends_with("| yes |"), "{row}");
        let table = markdown_table(&rs);
        // CNN rows first, then the baselines.
        let order: Vec<&str> = table
            .lines()
            .skip(2)
            .map(|l| l.split('|').nth(1).unwrap().trim())
            .collect();
        assert_eq!(order, ["none", "masked", "histogram", "ngram"]);
        assert!(collapse_warnings(&rs).is_empty());
    }

    fn run(task: &str, model: f64, copy: f64) -> PretrainRun {
        PretrainRun {
            task: task.into(),
            pretrain_fraction: 1.0,
            seed: 0,
            steps: 10,
            score: TaskScore {
                steps: 10,
                accuracy: model,
                trivial: pretext_datasets::trivial::TrivialAccuracy {
                    positions: 100,
                    copy_previous: copy,
                    copy_nearest: copy - 0.01,
                    most_frequent: 0.1,
                },
            },
        }
    }

    #[test]
    fn pretext_tasks_close_to_copying_are_called_out_with_the_setting_to_change() {
        let runs = [
            run("masked", 0.93, 0.92),
            run("next", 0.55, 0.51),
            run("next", 0.80, 0.51),
        ];
        let w = trivial_warnings(&runs);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("trivial task") && w[0].contains("--mask-span"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("copy-previous"), "{}", w[0]);
        assert!(
            w[1].contains("weak task") && w[1].contains("--horizon"),
            "{}",
            w[1]
        );
        let t = pretext_table(&runs);
        assert!(t.contains("| +1.0 points ⚠ trivial |"), "{t}");
        assert!(t.contains("| +29.0 points |"), "{t}");
    }
}

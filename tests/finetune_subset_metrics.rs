//! Fine-tuning's data and scoring without torch work: the stratified
//! labeled subset (deterministic, every class present, nested across
//! fractions) and the metrics on a hand-computed confusion matrix.

use pretext_finetune::{ClassMetrics, stratified_subset};

/// 3 classes, imbalanced: 200, 30 and 3 rows.
fn rows() -> Vec<(String, usize)> {
    let mut r = Vec::new();
    for (class, n) in [(0usize, 200usize), (1, 30), (2, 3)] {
        for i in 0..n {
            r.push((format!("c{class}-row{i:04}"), class));
        }
    }
    r
}

fn ids(rows: &[(String, usize)], fraction: f64, seed: u64) -> Vec<String> {
    let mut v: Vec<String> =
        stratified_subset(rows.iter().map(|(id, c)| (id.as_str(), *c)), fraction, seed)
            .into_iter()
            .map(|i| rows[i].0.clone())
            .collect();
    v.sort();
    v
}

fn per_class(rows: &[(String, usize)], chosen: &[String]) -> [usize; 3] {
    let mut n = [0; 3];
    for id in chosen {
        let c = rows.iter().find(|(r, _)| r == id).unwrap().1;
        n[c] += 1;
    }
    n
}

#[test]
fn subset_is_deterministic_and_independent_of_row_order() {
    let r = rows();
    let a = ids(&r, 0.05, 7);
    assert_eq!(a, ids(&r, 0.05, 7), "same seed, same subset");
    let mut reversed = r.clone();
    reversed.reverse();
    assert_eq!(a, ids(&reversed, 0.05, 7), "file order must not matter");
    assert_ne!(a, ids(&r, 0.05, 8), "another seed draws another subset");
}

#[test]
fn every_class_is_present_and_sizes_follow_the_fraction() {
    let r = rows();
    // 1%: round(2) = 2, round(0.3) -> at least 1, round(0.03) -> at least 1.
    assert_eq!(per_class(&r, &ids(&r, 0.01, 0)), [2, 1, 1]);
    assert_eq!(per_class(&r, &ids(&r, 0.2, 0)), [40, 6, 1]);
    assert_eq!(per_class(&r, &ids(&r, 1.0, 0)), [200, 30, 3]);
}

#[test]
fn smaller_fractions_are_inside_larger_ones() {
    let r = rows();
    let small = ids(&r, 0.05, 3);
    let large = ids(&r, 0.2, 3);
    assert!(small.iter().all(|id| large.contains(id)));
}

#[test]
fn metrics_match_a_hand_computed_confusion_matrix() {
    // true \ predicted
    let confusion = vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 4]];
    let mut pairs = Vec::new();
    for (t, row) in confusion.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            pairs.extend(std::iter::repeat_n((t, p), n as usize));
        }
    }
    let m = ClassMetrics::from_pairs(3, pairs);
    assert_eq!(m.confusion, confusion);
    assert_eq!(m.rows, 16);
    assert!((m.accuracy - 12.0 / 16.0).abs() < 1e-12);
    // F1 = 2TP / (2TP + FP + FN): class 0: 10/13; class 1: 6/10; class 2: 8/9.
    let f1 = [10.0 / 13.0, 0.6, 8.0 / 9.0];
    for (c, want) in f1.iter().enumerate() {
        assert!((m.per_class_f1[c] - want).abs() < 1e-12, "class {c}");
    }
    assert!((m.macro_f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
}

#[test]
fn macro_f1_counts_missed_classes_and_skips_absent_ones() {
    // Class 1 occurs but is never predicted (F1 0, counted); class 2 neither
    // occurs nor is predicted (left out of the mean).
    let m = ClassMetrics::from_pairs(3, [(0, 0), (0, 0), (1, 0)]);
    assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-12);
    let f1_0 = 4.0 / 5.0;
    assert!((m.macro_f1 - (f1_0 + 0.0) / 2.0).abs() < 1e-12);
}

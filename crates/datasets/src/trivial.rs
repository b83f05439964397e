//! Trivial token predictors, the bar a pretrained model must clear, scored
//! on the very targets a task trains on (copy the previous visible step,
//! copy the nearest visible step, always the most frequent target), and the
//! run-length statistics of the data that decide how hard those bars are.

use serde::{Deserialize, Serialize};

use pretext_core::NUM_VALUES;
use pretext_core::batch::DecodedBatch;
use pretext_core::task::{MaskConfig, RowOut, Task, fill_row};

/// How far a model must beat the best trivial predictor before its
/// pretext task is called non-trivial (accuracy, as a fraction).
pub const TRIVIAL_MARGIN: f64 = 0.03;

/// Under this margin over the best trivial predictor a pretext task is
/// called weak: the model learned little beyond what copying gives.
pub const WEAK_MARGIN: f64 = 0.05;

/// Counts of right guesses of each trivial predictor over loss positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrivialCounts {
    /// Loss positions scored.
    pub positions: u64,
    /// Right guesses of "the value of the nearest visible step on the left"
    /// (for `next`: the current step, the last one the model sees).
    pub copy_previous: u64,
    /// Right guesses of "the value of the nearest visible step on either
    /// side" (ties go left; for `next` the same as `copy_previous`).
    pub copy_nearest: u64,
    /// Targets per value (for the most-frequent predictor).
    pub target_counts: Vec<u64>,
}

impl Default for TrivialCounts {
    fn default() -> Self {
        Self {
            positions: 0,
            copy_previous: 0,
            copy_nearest: 0,
            target_counts: vec![0; NUM_VALUES],
        }
    }
}

/// Accuracies of the trivial predictors, as fractions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrivialAccuracy {
    /// Loss positions scored.
    pub positions: u64,
    /// Copy the previous visible step.
    pub copy_previous: f64,
    /// Copy the nearest visible step.
    pub copy_nearest: f64,
    /// Always the most frequent target.
    pub most_frequent: f64,
}

impl TrivialAccuracy {
    /// The best of the three.
    pub fn best(&self) -> f64 {
        self.copy_previous
            .max(self.copy_nearest)
            .max(self.most_frequent)
    }

    /// The name of the best of the three.
    pub fn best_name(&self) -> &'static str {
        let b = self.best();
        if b == self.copy_previous {
            "copy-previous"
        } else if b == self.copy_nearest {
            "copy-nearest-unmasked"
        } else {
            "most-frequent"
        }
    }

    /// Whether `model_accuracy` is within [`TRIVIAL_MARGIN`] of (or below)
    /// the best trivial predictor.
    pub fn is_trivial_for(&self, model_accuracy: f64) -> bool {
        model_accuracy < self.best() + TRIVIAL_MARGIN
    }

    /// Whether `model_accuracy` is within [`WEAK_MARGIN`] of the best.
    pub fn is_weak_for(&self, model_accuracy: f64) -> bool {
        model_accuracy < self.best() + WEAK_MARGIN
    }
}

impl TrivialCounts {
    /// Scores one row of a batch: `input`, `target`, `loss_mask` are its
    /// slices (bucket length), `len` its real length.
    pub fn add_row(
        &mut self,
        task: Task,
        input: &[u8],
        target: &[u8],
        loss_mask: &[u8],
        len: usize,
    ) {
        match task {
            Task::Classify => {}
            Task::Next => {
                for t in (0..len).filter(|&t| loss_mask[t] == 1) {
                    let want = target[t];
                    self.count(want);
                    let right = u64::from(input[t] == want);
                    self.copy_previous += right;
                    self.copy_nearest += right;
                }
            }
            Task::Masked => {
                // Nearest visible (not selected) position on each side.
                let mut left = vec![None; len];
                let mut last = None;
                for t in 0..len {
                    left[t] = last;
                    if loss_mask[t] == 0 {
                        last = Some(t);
                    }
                }
                let mut next_right = None;
                for t in (0..len).rev() {
                    if loss_mask[t] == 1 {
                        let want = target[t];
                        self.count(want);
                        let prev = left[t].or(next_right);
                        self.copy_previous += u64::from(prev.is_some_and(|p| input[p] == want));
                        let nearest = match (left[t], next_right) {
                            (Some(l), Some(r)) => Some(if t - l <= r - t { l } else { r }),
                            (l, r) => l.or(r),
                        };
                        self.copy_nearest += u64::from(nearest.is_some_and(|p| input[p] == want));
                    } else {
                        next_right = Some(t);
                    }
                }
            }
        }
    }

    fn count(&mut self, target: u8) {
        self.positions += 1;
        if let Some(c) = self.target_counts.get_mut(target as usize) {
            *c += 1;
        }
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &TrivialCounts) {
        self.positions += other.positions;
        self.copy_previous += other.copy_previous;
        self.copy_nearest += other.copy_nearest;
        for (a, b) in self.target_counts.iter_mut().zip(&other.target_counts) {
            *a += b;
        }
    }

    /// The accuracies.
    pub fn accuracy(&self) -> TrivialAccuracy {
        let n = self.positions.max(1) as f64;
        TrivialAccuracy {
            positions: self.positions,
            copy_previous: self.copy_previous as f64 / n,
            copy_nearest: self.copy_nearest as f64 / n,
            most_frequent: self.target_counts.iter().copied().max().unwrap_or(0) as f64 / n,
        }
    }
}

/// The trivial predictors on the targets `task` with `mask` would train on
/// for `rows` (epoch 0; each row's id is its index).
pub fn trivial_for_task<'a>(
    task: Task,
    mask: &MaskConfig,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> TrivialAccuracy {
    let mut counts = TrivialCounts::default();
    let (mut input, mut target, mut loss_mask) = (Vec::new(), Vec::new(), Vec::new());
    for (i, values) in rows.into_iter().enumerate() {
        let n = values.len();
        if n == 0 {
            continue;
        }
        input.resize(n, 0);
        target.resize(n, 0);
        loss_mask.clear();
        loss_mask.resize(n, 0);
        fill_row(
            task,
            mask,
            0,
            &i.to_string(),
            values,
            RowOut {
                input: &mut input,
                target: &mut target,
                loss_mask: &mut loss_mask,
            },
        );
        counts.add_row(task, &input, &target, &loss_mask, n);
    }
    counts.accuracy()
}

/// How long values are held in a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Runs (maximal stretches of one value) counted.
    pub runs: u64,
    /// Median run length, weighted by steps: half of all steps lie in runs
    /// at least this long.
    pub median_run: usize,
    /// Mean run length.
    pub mean_run: f64,
    /// Fraction of steps equal to the step before.
    pub copy_previous: f64,
}

/// Run-length statistics of `rows`.
pub fn run_stats<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> RunStats {
    // Steps per run length (capped; longer runs count at the cap).
    const CAP: usize = 1 << 16;
    let mut steps_by_len: std::collections::BTreeMap<usize, u64> = Default::default();
    let (mut runs, mut steps, mut same, mut pairs) = (0u64, 0u64, 0u64, 0u64);
    for r in rows {
        let mut t = 0;
        while t < r.len() {
            let mut e = t + 1;
            while e < r.len() && r[e] == r[t] {
                e += 1;
            }
            let len = e - t;
            *steps_by_len.entry(len.min(CAP)).or_insert(0) += len as u64;
            runs += 1;
            steps += len as u64;
            t = e;
        }
        same += r.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        pairs += r.len().saturating_sub(1) as u64;
    }
    let mut acc = 0u64;
    let mut median_run = 0;
    for (&len, &s) in &steps_by_len {
        acc += s;
        if 2 * acc >= steps {
            median_run = len;
            break;
        }
    }
    RunStats {
        runs,
        median_run,
        mean_run: steps as f64 / runs.max(1) as f64,
        copy_previous: same as f64 / pairs.max(1) as f64,
    }
}

/// The default mean span of masked spans for data with these statistics:
/// the step-weighted median run, at least 1 and at most 64. Masking a
/// whole typical run leaves copying a neighbour no longer right by
/// construction.
pub fn default_mean_span(stats: &RunStats) -> f64 {
    stats.median_run.clamp(1, 64) as f64
}

/// The trivial token predictors on the loss positions of a decoded batch.
pub trait BatchTrivial {
    /// Counts of each trivial predictor's hits on the batch's loss positions.
    fn trivial(&self) -> TrivialCounts;
}

impl BatchTrivial for DecodedBatch {
    fn trivial(&self) -> TrivialCounts {
        let l = self.bucket_len;
        let (input, target, mask) = (self.input(), self.target(), self.loss_mask());
        let mut c = TrivialCounts::default();
        for (r, &len) in self.lengths().iter().enumerate() {
            let span = r * l..(r + 1) * l;
            let len = (len as usize).min(l);
            c.add_row(
                self.task,
                &input[span.clone()],
                &target[span.clone()],
                &mask[span],
                len,
            );
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_core::{MASK_TOKEN, PAD_TOKEN};

    #[test]
    fn masked_predictors_by_hand() {
        // values 1 1 2 2 3, positions 1 and 2 selected (MASK shown).
        let target = [1, 1, 2, 2, 3];
        let input = [1, MASK_TOKEN, MASK_TOKEN, 2, 3];
        let mask = [0, 1, 1, 0, 0];
        let mut c = TrivialCounts::default();
        c.add_row(Task::Masked, &input, &target, &mask, 5);
        // t=1: previous visible is t=0 (1) right; nearest: t=0 (dist 1) right.
        // t=2: previous visible is t=0 (1) wrong; nearest: t=3 (dist 1) vs
        //      t=0 (dist 2) → 2, right.
        assert_eq!((c.positions, c.copy_previous, c.copy_nearest), (2, 1, 2));
        let a = c.accuracy();
        assert_eq!(a.most_frequent, 0.5);
        assert_eq!(a.best(), 1.0);
        assert_eq!(a.best_name(), "copy-nearest-unmasked");
    }

    #[test]
    fn a_masked_start_copies_from_the_right() {
        let target = [4, 4, 5];
        let input = [MASK_TOKEN, 4, 5];
        let mask = [1, 0, 0];
        let mut c = TrivialCounts::default();
        c.add_row(Task::Masked, &input, &target, &mask, 3);
        assert_eq!((c.copy_previous, c.copy_nearest), (1, 1));
    }

    #[test]
    fn next_predictors_by_hand() {
        // values 7 7 7 8, horizon 1: targets 7 7 8 (PAD), copying right twice.
        let input = [7, 7, 7, 8];
        let target = [7, 7, 8, PAD_TOKEN];
        let mask = [1, 1, 1, 0];
        let mut c = TrivialCounts::default();
        c.add_row(Task::Next, &input, &target, &mask, 4);
        assert_eq!((c.positions, c.copy_previous, c.copy_nearest), (3, 2, 2));
        assert!((c.accuracy().most_frequent - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_horizon_past_the_runs_defeats_copying() {
        // Runs of 8: copying is right 7 times in 8 at horizon 1, never at 8.
        let row: Vec<u8> = (0..800).map(|t| ((t / 8) % 5) as u8).collect();
        let at = |h| {
            let m = MaskConfig {
                horizon: h,
                ..MaskConfig::default()
            };
            trivial_for_task(Task::Next, &m, [row.as_slice()])
        };
        assert!((at(1).copy_previous - 7.0 / 8.0).abs() < 0.01);
        assert_eq!(at(8).copy_previous, 0.0);
    }

    #[test]
    fn spans_as_long_as_the_runs_make_copying_harder() {
        let row: Vec<u8> = (0..4000).map(|t| ((t / 12) % 7) as u8).collect();
        let with = |span| {
            let m = MaskConfig {
                mean_span: span,
                ..MaskConfig::default()
            };
            trivial_for_task(Task::Masked, &m, [row.as_slice()]).best()
        };
        let single = with(1.0);
        let spans = with(12.0);
        assert!(single > 0.85, "{single}");
        assert!(spans < single - 0.15, "{spans} vs {single}");
    }

    #[test]
    fn run_stats_by_hand() {
        let a: &[u8] = &[1, 1, 1, 2];
        let b: &[u8] = &[3, 3, 3, 3, 3, 4];
        let s = run_stats([a, b]);
        assert_eq!(s.runs, 4);
        assert!((s.mean_run - 10.0 / 4.0).abs() < 1e-12);
        // Steps by run length: 1 → 2, 3 → 3, 5 → 5: half of 10 reached at 3.
        assert_eq!(s.median_run, 3);
        assert!((s.copy_previous - 6.0 / 8.0).abs() < 1e-12);
        assert_eq!(default_mean_span(&s), 3.0);
        assert_eq!(default_mean_span(&RunStats::default()), 1.0);
    }

    #[test]
    fn a_decoded_batch_scores_what_the_simulation_scores() {
        use pretext_core::batch::{Batch, BatchRow, decode};
        let rows: Vec<BatchRow> = (0..6)
            .map(|i| BatchRow {
                seq_id: i.to_string(),
                values: (0..600 + 37 * i).map(|t| ((t / 3 + i) % 9) as u8).collect(),
                label: None,
            })
            .collect();
        for (task, mask) in [
            (
                Task::Masked,
                MaskConfig {
                    mean_span: 2.0,
                    ..MaskConfig::default()
                },
            ),
            (
                Task::Next,
                MaskConfig {
                    horizon: 2,
                    ..MaskConfig::default()
                },
            ),
        ] {
            let batch = Batch::build(task, &mask, 0, 1024, &rows);
            let decoded = decode(batch.encode(None)).unwrap();
            let from_batch = decoded.trivial().accuracy();
            let simulated = trivial_for_task(task, &mask, rows.iter().map(|r| r.values.as_slice()));
            assert_eq!(from_batch, simulated, "{task}");
        }
    }
}

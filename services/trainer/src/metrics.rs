//! `RUN_DIR/metrics.jsonl`: one JSON line per optimiser step.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use pretext_datasets::trivial::TrivialAccuracy;

use crate::error::TrainError;

/// File name of the metrics in the run directory (rank 0's in a
/// data-parallel run).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// File name of rank `rank`'s metrics: [`METRICS_FILE`] for rank 0,
/// `metrics.rank{r}.jsonl` for the others. In a data-parallel run loss,
/// accuracy, learning rate, gradient norm and tokens/s are the step's
/// (all ranks together); rows, lengths, tokens and `batch_id` are this
/// rank's batch (`batch_id` empty when it had none that step).
pub fn metrics_file(rank: usize) -> String {
    if rank == 0 {
        METRICS_FILE.to_owned()
    } else {
        format!("metrics.rank{rank}.jsonl")
    }
}

/// What one step did, as written to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimiser steps applied so far, this one included.
    pub step: u64,
    /// Mean cross-entropy per loss position.
    pub loss: f64,
    /// Fraction of loss positions whose argmax is the target.
    pub accuracy: f64,
    /// Real tokens per second of step time (waiting for data included).
    pub tokens_per_s: f64,
    /// Fraction of the batch's `rows × L` positions that are padding.
    pub padded_fraction: f64,
    /// Fraction of the step time spent waiting for (and decoding) data.
    pub data_wait_fraction: f64,
    /// Learning rate of the update.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Rows in the batch.
    pub rows: u64,
    /// Bucket length L.
    pub bucket_len: u64,
    /// Real tokens in the batch.
    pub real_tokens: u64,
    /// Loss positions in the batch.
    pub loss_tokens: i64,
    /// Seconds from the end of the previous step to the end of this one.
    pub step_secs: f64,
    /// The batch's message id.
    pub batch_id: String,
    /// The trivial predictors on this rank's batch, on the same loss
    /// positions (absent in files written before they were measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trivial: Option<TrivialAccuracy>,
    /// Where the step went (a single process fills `backward` and
    /// `apply`; absent in files written before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<RoundPhases>,
}

/// Seconds of one step (data parallel: one round on one rank) by phase;
/// with the wait for data (`step_secs × data_wait_fraction`) and
/// bookkeeping they make up `step_secs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundPhases {
    /// The round's start: this rank's batch id into the store, the flag
    /// all-reduce (which waits for the last rank to arrive), the others' ids.
    pub agree: f64,
    /// Forward and backward on this rank's batch.
    pub backward: f64,
    /// The all-reduce of loss sums and counts: waiting for the slowest
    /// rank's backward.
    pub sync: f64,
    /// The gradient all-reduce (ranks in step).
    pub allreduce: f64,
    /// Clipping and the AdamW update.
    pub apply: f64,
}

/// Model and trivial token accuracy over the last quarter of a run's steps
/// (at least 10): what a run's pretext task is judged by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    /// Steps averaged.
    pub steps: usize,
    /// Mean token accuracy of the model.
    pub accuracy: f64,
    /// Mean accuracies of the trivial predictors on the same batches
    /// (positions weighted).
    pub trivial: TrivialAccuracy,
}

impl TaskScore {
    /// Scores the tail of `metrics`.
    pub fn of(metrics: &[StepMetrics]) -> TaskScore {
        let n = (metrics.len() / 4).max(10).min(metrics.len());
        let tail = &metrics[metrics.len() - n..];
        let accuracy = tail.iter().map(|m| m.accuracy).sum::<f64>() / n.max(1) as f64;
        let (mut w, mut prev, mut near, mut freq) = (0.0, 0.0, 0.0, 0.0);
        let mut positions = 0;
        for t in tail.iter().filter_map(|m| m.trivial) {
            let pw = t.positions as f64;
            w += pw;
            positions += t.positions;
            prev += pw * t.copy_previous;
            near += pw * t.copy_nearest;
            freq += pw * t.most_frequent;
        }
        let w = if w > 0.0 { w } else { 1.0 };
        TaskScore {
            steps: n,
            accuracy,
            trivial: TrivialAccuracy {
                positions,
                copy_previous: prev / w,
                copy_nearest: near / w,
                most_frequent: freq / w,
            },
        }
    }

    /// Whether the model is within [`pretext_datasets::trivial::TRIVIAL_MARGIN`]
    /// of the best trivial predictor.
    pub fn is_trivial(&self) -> bool {
        self.trivial.is_trivial_for(self.accuracy)
    }

    /// Whether the model is within [`pretext_datasets::trivial::WEAK_MARGIN`]
    /// of the best trivial predictor.
    pub fn is_weak(&self) -> bool {
        self.trivial.is_weak_for(self.accuracy)
    }
}

/// Appends [`StepMetrics`] lines, flushed after each.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens `RUN_DIR/metrics.jsonl` for a run that resumes after
    /// `resumed_step`: lines of later steps (written before a crash, and about
    /// to be redone) are dropped, so every step appears once.
    pub fn open(run_dir: &Path, resumed_step: u64) -> Result<Self, TrainError> {
        Self::open_file(run_dir, METRICS_FILE, resumed_step)
    }

    /// [`Self::open`] for the metrics file `name` (see [`metrics_file`]).
    pub fn open_file(run_dir: &Path, name: &str, resumed_step: u64) -> Result<Self, TrainError> {
        std::fs::create_dir_all(run_dir).map_err(TrainError::io("create", run_dir))?;
        let path = run_dir.join(name);
        if path.exists() {
            let kept = read_metrics(&path)?
                .into_iter()
                .filter(|m| m.step <= resumed_step)
                .collect::<Vec<_>>();
            let tmp = run_dir.join(format!(".{name}.tmp"));
            let mut buf = Vec::new();
            for m in &kept {
                serde_json::to_writer(&mut buf, m)
                    .map_err(|e| TrainError::io("encode", &path)(e.into()))?;
                buf.push(b'\n');
            }
            std::fs::write(&tmp, buf).map_err(TrainError::io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(TrainError::io("rename", &tmp))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(TrainError::io("open", &path))?;
        Ok(Self { path, file })
    }

    /// Appends one line.
    pub fn write(&mut self, m: &StepMetrics) -> Result<(), TrainError> {
        let mut line =
            serde_json::to_vec(m).map_err(|e| TrainError::io("encode", &self.path)(e.into()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(TrainError::io("append to", &self.path))?;
        self.file
            .flush()
            .map_err(TrainError::io("flush", &self.path))
    }
}

/// Reads a metrics file; a torn last line (crash mid-write) is skipped.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, TrainError> {
    let file = File::open(path).map_err(TrainError::io("open", path))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(TrainError::io("read", path))?;
        if let Ok(m) = serde_json::from_str(&line) {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64) -> StepMetrics {
        StepMetrics {
            step,
            loss: 1.0,
            accuracy: 0.5,
            tokens_per_s: 10.0,
            padded_fraction: 0.1,
            data_wait_fraction: 0.2,
            lr: 1e-3,
            grad_norm: 1.0,
            rows: 2,
            bucket_len: 8,
            real_tokens: 14,
            loss_tokens: 3,
            step_secs: 0.1,
            batch_id: format!("b{step}"),
            trivial: None,
            phases: None,
        }
    }

    #[test]
    fn resuming_drops_the_steps_that_will_be_redone() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::open(dir.path(), 0).unwrap();
        (1..=5).for_each(|s| w.write(&m(s)).unwrap());
        drop(w);
        let mut w = MetricsWriter::open(dir.path(), 3).unwrap();
        w.write(&m(4)).unwrap();
        let steps: Vec<u64> = read_metrics(&dir.path().join(METRICS_FILE))
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, [1, 2, 3, 4]);
    }
}

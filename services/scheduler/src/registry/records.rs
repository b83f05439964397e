//! The registry's rows as Rust records: files, sightings, runs, models and
//! a run's detail, with the columns each is read from.

use rusqlite::Row;
use serde::Serialize;

use crate::status::RunStatus;

/// A distinct file content.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileRecord {
    /// sha-256 of the bytes, hex.
    pub hash: String,
    /// Where it was first seen in the inbox.
    pub path: String,
    /// The scheduler's own copy (what runs read).
    pub stored: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows read.
    pub rows: i64,
    /// Rows accepted by validation.
    pub valid: i64,
    /// Rows rejected (and quarantined).
    pub rejected: i64,
    /// Why the file could not be read at all (it is then never used).
    pub error: Option<String>,
    /// When it was first seen.
    pub first_seen: String,
    /// The run that trained on it as new data.
    pub run_id: Option<i64>,
}

impl FileRecord {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            hash: r.get(0)?,
            path: r.get(1)?,
            stored: r.get(2)?,
            bytes: r.get(3)?,
            rows: r.get(4)?,
            valid: r.get(5)?,
            rejected: r.get(6)?,
            error: r.get(7)?,
            first_seen: r.get(8)?,
            run_id: r.get(9)?,
        })
    }
}

pub(super) const FILE_COLS: &str =
    "hash, path, stored, bytes, rows, valid, rejected, error, first_seen, run_id";

/// An inbox location seen, with the content it had.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sighting {
    /// The location in the inbox.
    pub path: String,
    /// Its size.
    pub size: i64,
    /// Its modification time as the inbox reported it.
    pub modified: String,
    /// The content hash.
    pub hash: String,
    /// When the scheduler first saw it so.
    pub seen_at: String,
}

/// One retrain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// Run id (1, 2, …).
    pub id: i64,
    /// The last stage completed.
    pub status: RunStatus,
    /// Its working directory.
    pub dir: String,
    /// When it was created.
    pub registered_at: String,
    /// When its input was fixed.
    pub produced_at: Option<String>,
    /// When pretraining finished.
    pub pretrained_at: Option<String>,
    /// When fine-tuning finished.
    pub finetuned_at: Option<String>,
    /// When it was evaluated.
    pub evaluated_at: Option<String>,
    /// When it was promoted or rejected.
    pub decided_at: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// The error of the last failed attempt at its next stage (cleared when
    /// a stage completes).
    pub error: Option<String>,
    /// The promoted model pretraining continued from (none: from scratch).
    pub base_model: Option<i64>,
    /// Valid rows in its new files.
    pub new_rows: Option<i64>,
    /// Rows of earlier data replayed with them.
    pub replay_rows: Option<i64>,
    /// Optimiser steps of the pretraining run at its end (those it
    /// continued from included).
    pub pretrain_steps: Option<i64>,
}

pub(super) const RUN_COLS: &str = "id, status, dir, registered_at, produced_at, pretrained_at, finetuned_at, \
     evaluated_at, decided_at, updated_at, error, base_model, new_rows, replay_rows, pretrain_steps";

impl RunRecord {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let status: String = r.get(1)?;
        let status = status.parse::<RunStatus>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(Self {
            id: r.get(0)?,
            status,
            dir: r.get(2)?,
            registered_at: r.get(3)?,
            produced_at: r.get(4)?,
            pretrained_at: r.get(5)?,
            finetuned_at: r.get(6)?,
            evaluated_at: r.get(7)?,
            decided_at: r.get(8)?,
            updated_at: r.get(9)?,
            error: r.get(10)?,
            base_model: r.get(11)?,
            new_rows: r.get(12)?,
            replay_rows: r.get(13)?,
            pretrain_steps: r.get(14)?,
        })
    }
}

/// A fine-tuned candidate of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRecord {
    /// Model id.
    pub id: i64,
    /// The run that made it.
    pub run_id: i64,
    /// The pretraining run directory behind its encoder.
    pub pretrain_run: String,
    /// The fine-tuned checkpoint.
    pub checkpoint: String,
    /// `valid` accuracy of the selected weights.
    pub valid_accuracy: f64,
    /// `test` accuracy (set at evaluation).
    pub test_accuracy: Option<f64>,
    /// `test` macro-F1 (set at evaluation).
    pub macro_f1: Option<f64>,
    /// Test rows it was judged on.
    pub test_rows: Option<i64>,
    /// The promoted model it was compared with (none: nothing was promoted yet).
    pub baseline_model: Option<i64>,
    /// That model's accuracy on the same test rows.
    pub baseline_accuracy: Option<f64>,
    /// Whether it was promoted.
    pub promoted: bool,
    /// When.
    pub promoted_at: Option<String>,
}

pub(super) const MODEL_COLS: &str = "id, run_id, pretrain_run, checkpoint, valid_accuracy, test_accuracy, \
     macro_f1, test_rows, baseline_model, baseline_accuracy, promoted, promoted_at";

impl ModelRecord {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            run_id: r.get(1)?,
            pretrain_run: r.get(2)?,
            checkpoint: r.get(3)?,
            valid_accuracy: r.get(4)?,
            test_accuracy: r.get(5)?,
            macro_f1: r.get(6)?,
            test_rows: r.get(7)?,
            baseline_model: r.get(8)?,
            baseline_accuracy: r.get(9)?,
            promoted: r.get::<_, i64>(10)? != 0,
            promoted_at: r.get(11)?,
        })
    }
}

/// A run with its files and model: `pretext registry show`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunRecord,
    /// Its new files.
    pub files: Vec<FileRecord>,
    /// Its candidate model, once fine-tuned.
    pub model: Option<ModelRecord>,
}

//! The exactly-once audit of a run: the producers' manifests joined with the
//! applied ids of every checkpoint, and the batches that went to the
//! dead-letter queue instead, and the membership changes of an elastic run.

use std::path::Path;

use pretext_core::manifest::{manifest_dir, read_manifests};
use serde::{Deserialize, Serialize};

use crate::checkpoints::{AppliedHistory, checkpoint_dir};
use crate::dead::{DeadBatch, read_dead};
use crate::error::TrainError;
use crate::membership::{Generation, read_generations};

/// What `pretext audit` reports. The contract holds when `missing` and
/// `applied_twice` are 0 and `applied == published`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Distinct batches the producers' manifests record as published.
    pub published: u64,
    /// Distinct batch ids in the checkpoints' applied lists.
    pub applied: u64,
    /// Published batches no checkpoint applied.
    pub missing: u64,
    /// Batch ids in the applied lists of two (or more) checkpoints.
    pub applied_twice: u64,
    /// Batches the trainer found in the dead-letter queue when the data
    /// ended, never applied (counted in `missing` when published), with why.
    pub dead: Vec<DeadBatch>,
    /// An elastic run's generations: who trained from which step, and who
    /// joined, left or was lost (absent for a fixed group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership: Vec<Generation>,
}

/// Audits `run_dir`: manifests from `RUN_DIR/manifests/`, checkpoints from
/// `RUN_DIR/checkpoints/`.
pub fn audit(run_dir: &Path) -> Result<AuditReport, TrainError> {
    let published = read_manifests(run_dir)
        .map_err(TrainError::io("read manifests in", manifest_dir(run_dir)))?;
    let history = AppliedHistory::load(&checkpoint_dir(run_dir))?;
    let applied = history.distinct();
    let dead = read_dead(&checkpoint_dir(run_dir))?
        .into_iter()
        .filter(|d| !applied.contains(d.id.as_str()))
        .collect();
    let missing = published
        .keys()
        .filter(|id| !applied.contains(id.as_str()))
        .count();
    Ok(AuditReport {
        published: published.len() as u64,
        applied: applied.len() as u64,
        missing: missing as u64,
        applied_twice: history.applied_twice().len() as u64,
        dead,
        membership: read_generations(&checkpoint_dir(run_dir))?,
    })
}

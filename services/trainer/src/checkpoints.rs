//! The trainer's checkpoints: where they live, the trainer state stored in
//! them ([`TrainingState`]), and the history of applied batch ids
//! ([`AppliedHistory`]) that makes redeliveries recognisable.
//!
//! Each checkpoint's `applied_batch_ids` are the batches applied since the
//! previous checkpoint. Its [`TrainingState::earlier_applied`] carries the
//! lists of all earlier checkpoints, by step, so old checkpoints can be
//! pruned without forgetting what they applied. The history is the union
//! over every complete checkpoint on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pretext_core::task::Task;
use pretext_model::{
    AdamWConfig, CheckpointError, CheckpointState, list_checkpoints, read_checkpoint_state,
};
use serde::{Deserialize, Serialize};

/// Subdirectory of the run directory that holds `step-NNNNNN/` checkpoints.
pub const CHECKPOINT_SUBDIR: &str = "checkpoints";

/// `RUN_DIR/checkpoints`.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT_SUBDIR)
}

/// The trainer's part of `state.json` (`training`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// The pretraining task of the run.
    pub task: Task,
    /// The run's seed.
    pub seed: u64,
    /// The optimiser settings the run was started with.
    pub optimizer: AdamWConfig,
    /// Real (unpadded) tokens in the applied batches.
    pub tokens_seen: u64,
    /// The applied batch ids of every earlier checkpoint, by its step.
    #[serde(default)]
    pub earlier_applied: BTreeMap<u64, Vec<String>>,
}

/// Just the history of a `training` value of any shape.
#[derive(Deserialize)]
struct HistoryOnly {
    #[serde(default)]
    earlier_applied: BTreeMap<u64, Vec<String>>,
}

/// Batch ids applied by a run, by the step of the checkpoint that recorded
/// them. An id in two segments was applied twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedHistory {
    segments: BTreeMap<u64, BTreeSet<String>>,
}

impl AppliedHistory {
    /// The history recorded by every complete checkpoint in `dir` (none if
    /// `dir` does not exist).
    pub fn load(dir: &Path) -> Result<Self, CheckpointError> {
        let mut history = Self::default();
        for (step, path) in list_checkpoints(dir)? {
            let state: CheckpointState<serde_json::Value> = read_checkpoint_state(&path)?;
            history.add(step, state.applied_batch_ids);
            let earlier =
                serde_json::from_value::<HistoryOnly>(state.training).map(|h| h.earlier_applied);
            for (step, ids) in earlier.unwrap_or_default() {
                history.add(step, ids);
            }
        }
        Ok(history)
    }

    /// Records the ids a checkpoint at `step` applied.
    pub fn add(&mut self, step: u64, ids: impl IntoIterator<Item = String>) {
        self.segments.entry(step).or_default().extend(ids);
    }

    /// The segments, for [`TrainingState::earlier_applied`].
    pub fn segments(&self) -> BTreeMap<u64, Vec<String>> {
        self.segments
            .iter()
            .map(|(&step, ids)| (step, ids.iter().cloned().collect()))
            .collect()
    }

    /// Every applied id, once.
    pub fn distinct(&self) -> BTreeSet<&str> {
        self.segments
            .values()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// Ids recorded by more than one checkpoint.
    pub fn applied_twice(&self) -> BTreeSet<&str> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in self.segments.values().flatten() {
            *seen.entry(id).or_default() += 1;
        }
        seen.into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_merges_segments_and_finds_duplicates() {
        let mut h = AppliedHistory::default();
        h.add(2, ["a".to_string(), "b".to_string()]);
        h.add(4, ["c".to_string()]);
        // The same segment seen again (from a later checkpoint's copy) is
        // not a duplicate.
        h.add(2, ["a".to_string()]);
        assert_eq!(h.distinct().len(), 3);
        assert!(h.applied_twice().is_empty());
        h.add(6, ["b".to_string()]);
        assert_eq!(h.applied_twice().into_iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(h.segments()[&2], ["a", "b"]);
    }

    #[test]
    fn training_state_round_trips_and_history_tolerates_other_shapes() {
        let t = TrainingState {
            task: Task::Next,
            seed: 3,
            optimizer: AdamWConfig::default(),
            tokens_seen: 10,
            earlier_applied: BTreeMap::from([(5, vec!["x".to_string()])]),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            serde_json::from_value::<TrainingState>(v.clone()).unwrap(),
            t
        );
        assert_eq!(
            serde_json::from_value::<HistoryOnly>(v)
                .unwrap()
                .earlier_applied[&5],
            ["x"]
        );
        assert!(
            serde_json::from_value::<HistoryOnly>(serde_json::json!({}))
                .unwrap()
                .earlier_applied
                .is_empty()
        );
    }
}

//! The trainer's checkpoints: where they live, the trainer state stored in
//! them ([`TrainingState`]), and the history of applied batch ids
//! ([`AppliedHistory`]) that makes redeliveries recognisable.
//!
//! Each checkpoint's `applied_batch_ids` are the batches applied since the
//! previous checkpoint. Once a checkpoint is durable its list is appended to
//! the ledger `checkpoints/applied.jsonl` (one synced line per checkpoint),
//! and only then are old checkpoints pruned: a checkpoint costs its own
//! batches, however long the run. The history is the union of the ledger and
//! every complete checkpoint on disk (and, from checkpoints written before
//! the ledger, their [`TrainingState::earlier_applied`] copies).

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
    /// The applied batch ids of every earlier checkpoint, by its step, as
    /// checkpoints written before the ledger carried them (read, no longer
    /// written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub earlier_applied: BTreeMap<u64, Vec<String>>,
    /// The processes of a data-parallel run that wrote it, by rank
    /// (`host:pid`); empty for a single process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
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

/// The ledger of applied ids, in the checkpoint directory.
pub const LEDGER_FILE: &str = "applied.jsonl";

/// One line of the ledger: the ids a checkpoint applied.
#[derive(Serialize, Deserialize)]
struct LedgerLine {
    step: u64,
    ids: Vec<String>,
}

fn ledger_io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

/// Appends the segments `(step, ids)` to the ledger of `dir`, synced.
pub fn append_ledger(dir: &Path, segments: &[(u64, &[String])]) -> Result<(), CheckpointError> {
    let path = dir.join(LEDGER_FILE);
    let lines = segments
        .iter()
        .map(|(step, ids)| {
            serde_json::to_vec(&LedgerLine {
                step: *step,
                ids: ids.to_vec(),
            })
            .expect("ledger lines serialise")
        })
        .collect::<Vec<_>>();
    let mut file = pretext_core::jsonl::open_append(&path).map_err(ledger_io("open", &path))?;
    pretext_core::jsonl::append_synced(&mut file, &lines).map_err(ledger_io("append", &path))
}

/// The ledger's segments (a line that does not parse, a torn one, is not a
/// confirmed segment: its checkpoint still holds it).
fn read_ledger(dir: &Path) -> Result<Vec<(u64, Vec<String>)>, CheckpointError> {
    let path = dir.join(LEDGER_FILE);
    let lines =
        pretext_core::jsonl::read_records::<LedgerLine>(&path).map_err(ledger_io("read", &path))?;
    Ok(lines.into_iter().map(|l| (l.step, l.ids)).collect())
}

/// Writes a checkpoint of `state` into `dir`, appends its applied ids to the
/// ledger, then keeps the newest `keep` checkpoints (all with 0).
pub fn write_checkpoint(
    dir: &Path,
    vs: &pretext_model::tch::nn::VarStore,
    optimizer: &pretext_model::AdamW,
    state: &CheckpointState<TrainingState>,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let path = pretext_model::save_checkpoint(dir, vs, optimizer, state)?;
    append_ledger(dir, &[(state.step, &state.applied_batch_ids)])?;
    if keep > 0 {
        pretext_model::prune_checkpoints(dir, keep)?;
    }
    Ok(path)
}

impl AppliedHistory {
    /// Puts into the ledger of `dir` the segment of every checkpoint it
    /// lacks (a crash between a checkpoint and its ledger line), before any
    /// later checkpoint can prune it; returns how many. Called when a
    /// trainer starts.
    pub fn repair_ledger(dir: &Path) -> Result<usize, CheckpointError> {
        if !dir.exists() {
            return Ok(0);
        }
        let have: BTreeSet<u64> = read_ledger(dir)?.into_iter().map(|(s, _)| s).collect();
        let mut missing = Vec::new();
        for (step, path) in list_checkpoints(dir)? {
            if !have.contains(&step) {
                let state: CheckpointState<serde_json::Value> = read_checkpoint_state(&path)?;
                missing.push((step, state.applied_batch_ids));
            }
        }
        let segments: Vec<(u64, &[String])> = missing
            .iter()
            .map(|(s, ids)| (*s, ids.as_slice()))
            .collect();
        if !segments.is_empty() {
            append_ledger(dir, &segments)?;
        }
        Ok(segments.len())
    }

    /// The history recorded by the ledger and every complete checkpoint in
    /// `dir` (none if `dir` does not exist).
    pub fn load(dir: &Path) -> Result<Self, CheckpointError> {
        let mut history = Self::default();
        for (step, ids) in read_ledger(dir)? {
            history.add(step, ids);
        }
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
            members: Vec::new(),
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

    /// Checkpoints at steps 1..=n, each applying its own ids, written with
    /// `write` (the ledger) or `save_checkpoint` alone (a crash before the
    /// ledger line).
    fn checkpoints(dir: &Path, steps: std::ops::RangeInclusive<u64>, ledger: bool, keep: usize) {
        use pretext_model::{AdamW, ModelConfig, PretrainModel, tch::Device};
        let cfg = ModelConfig {
            width: 8,
            depth: 1,
            ..ModelConfig::default()
        };
        let model = PretrainModel::new(&cfg, Device::Cpu).unwrap();
        let opt = AdamW::new(model.var_store(), AdamWConfig::default());
        for step in steps {
            let mut state = CheckpointState::new(
                step,
                cfg,
                TrainingState {
                    task: Task::Masked,
                    seed: 0,
                    optimizer: AdamWConfig::default(),
                    tokens_seen: step,
                    earlier_applied: BTreeMap::new(),
                    members: Vec::new(),
                },
            );
            state.applied_batch_ids = vec![format!("b{step}a"), format!("b{step}b")];
            if ledger {
                write_checkpoint(dir, model.var_store(), &opt, &state, keep).unwrap();
            } else {
                pretext_model::save_checkpoint(dir, model.var_store(), &opt, &state).unwrap();
            }
        }
    }

    #[test]
    fn pruned_checkpoints_live_on_in_the_ledger_and_a_checkpoint_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        checkpoints(dir.path(), 1..=5, true, 2);
        assert_eq!(list_checkpoints(dir.path()).unwrap().len(), 2);
        let h = AppliedHistory::load(dir.path()).unwrap();
        assert_eq!(h.distinct().len(), 10, "every checkpoint's ids");
        assert!(
            h.applied_twice().is_empty(),
            "a step in the ledger and on disk is one segment"
        );
        // The newest state.json holds its own ids only.
        let (_, newest) = list_checkpoints(dir.path()).unwrap().pop().unwrap();
        let state = std::fs::read_to_string(newest.join("state.json")).unwrap();
        assert!(state.contains("b5a") && !state.contains("b4a"), "{state}");
        assert!(!state.contains("earlier_applied"), "{state}");
    }

    #[test]
    fn a_checkpoint_whose_ledger_line_was_lost_is_restored_before_it_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        checkpoints(dir.path(), 1..=2, true, 0);
        // Step 3 is durable, then the process dies before its ledger line.
        checkpoints(dir.path(), 3..=3, false, 0);
        assert_eq!(AppliedHistory::repair_ledger(dir.path()).unwrap(), 1);
        assert_eq!(AppliedHistory::repair_ledger(dir.path()).unwrap(), 0);
        // Later checkpoints prune step 3: its ids are still known.
        checkpoints(dir.path(), 4..=5, true, 1);
        let h = AppliedHistory::load(dir.path()).unwrap();
        assert!(h.distinct().contains("b3a"));
        assert_eq!(h.distinct().len(), 10);
        assert!(h.applied_twice().is_empty());
        // A torn ledger line (a crash mid-append) is not a segment, and the
        // next append starts on its own line.
        let ledger = dir.path().join(LEDGER_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"step\":9,\"ids\":[\"b9").unwrap();
        drop(f);
        append_ledger(dir.path(), &[(6, &["b6a".to_string()])]).unwrap();
        let h = AppliedHistory::load(dir.path()).unwrap();
        assert!(h.distinct().contains("b6a") && !h.distinct().contains("b9"));
    }
}

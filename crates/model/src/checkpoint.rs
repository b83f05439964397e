//! Checkpoint directories `step-000123/` (`model.safetensors`,
//! `optimizer.safetensors`, `state.json`), written atomically, and the
//! search for the newest complete one.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::config::ModelConfig;
use crate::error::CheckpointError;
use crate::optim::AdamW;

/// Weights file inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimiser state file inside a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Training state file; written last, so its presence marks a complete
/// checkpoint even on filesystems without atomic directory renames.
pub const STATE_FILE: &str = "state.json";
/// Version of the `state.json` layout.
pub const STATE_FORMAT_VERSION: u32 = 1;

const TEMP_PREFIX: &str = ".tmp-";
const DIR_PREFIX: &str = "step-";

/// Reproducible randomness as a seed and a counter: every draw derives a
/// fresh seed from both, so resuming from a checkpoint repeats exactly the
/// draws an uninterrupted run would have made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The run's seed.
    pub seed: u64,
    /// Draws made so far.
    pub counter: u64,
}

impl RngState {
    /// A fresh state for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next derived seed (splitmix64 of seed and counter); advances.
    pub fn next_seed(&mut self) -> u64 {
        let mut z = self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.counter += 1;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Seeds libtorch's generators (dropout, random init) from the next
    /// derived seed; call once per training step.
    pub fn seed_torch(&mut self) {
        tch::manual_seed(self.next_seed() as i64);
    }
}

/// Everything in `state.json`. `T` is the trainer's own state (its
/// training config, counters, …), any serde type; `serde_json::Value` by
/// default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState<T = serde_json::Value> {
    /// Layout version ([`STATE_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Optimiser steps applied to the weights in this checkpoint.
    pub step: u64,
    /// Data-parallel ranks that produced it.
    pub world_size: usize,
    /// Randomness state after `step`.
    pub rng: RngState,
    /// Message ids of the batches applied since the previous checkpoint, so
    /// redeliveries after a crash are recognised and not applied twice.
    pub applied_batch_ids: Vec<String>,
    /// The architecture, enough to rebuild the model.
    pub model: ModelConfig,
    /// The trainer's own state.
    pub training: T,
}

impl<T> CheckpointState<T> {
    /// A state at `step` with the current format version.
    pub fn new(step: u64, model: ModelConfig, training: T) -> Self {
        Self {
            format_version: STATE_FORMAT_VERSION,
            step,
            world_size: 1,
            rng: RngState::default(),
            applied_batch_ids: Vec::new(),
            model,
            training,
        }
    }
}

/// `step-000123`.
pub fn checkpoint_dir_name(step: u64) -> String {
    format!("{DIR_PREFIX}{step:06}")
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn fsync(path: &Path) -> Result<(), CheckpointError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", path))
}

/// Writes a checkpoint of `vs` and `optimizer` at `state.step` into
/// `run_dir/step-NNNNNN/`: first into a temporary directory in `run_dir`,
/// every file and the directory fsynced, then renamed into place and the
/// parent fsynced. An existing checkpoint of the same step is replaced.
/// Only one process (rank 0) may write into a run directory. Returns the
/// checkpoint directory.
pub fn save_checkpoint<T: Serialize>(
    run_dir: &Path,
    vs: &VarStore,
    optimizer: &AdamW,
    state: &CheckpointState<T>,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(run_dir).map_err(io("create", run_dir))?;
    let name = checkpoint_dir_name(state.step);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = run_dir.join(format!(
        "{TEMP_PREFIX}{name}-{}-{nanos}",
        std::process::id()
    ));
    let result = write_into(&tmp, vs, optimizer, state).and_then(|()| {
        let target = run_dir.join(&name);
        if target.exists() {
            // Move the old one aside first: rename cannot replace a
            // non-empty directory.
            let old = run_dir.join(format!("{TEMP_PREFIX}old-{name}-{nanos}"));
            fs::rename(&target, &old).map_err(io("rename", &target))?;
            fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
            fs::remove_dir_all(&old).map_err(io("remove", &old))?;
        } else {
            fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
        }
        fsync(run_dir)?;
        Ok(target)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn write_into<T: Serialize>(
    dir: &Path,
    vs: &VarStore,
    optimizer: &AdamW,
    state: &CheckpointState<T>,
) -> Result<(), CheckpointError> {
    fs::create_dir(dir).map_err(io("create", dir))?;
    let model = dir.join(MODEL_FILE);
    vs.save(&model).map_err(|e| CheckpointError::Model {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    fsync(&model)?;
    let opt = dir.join(OPTIMIZER_FILE);
    optimizer
        .save(&opt)
        .map_err(|source| CheckpointError::Model {
            path: dir.to_path_buf(),
            source,
        })?;
    fsync(&opt)?;
    let state_path = dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(state).map_err(|source| CheckpointError::State {
        path: state_path.clone(),
        source,
    })?;
    fs::write(&state_path, json).map_err(io("write", &state_path))?;
    fsync(&state_path)?;
    fsync(dir)
}

/// The step encoded in a checkpoint directory's name, if it is one.
fn parse_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that `dir` holds all three files and a `state.json` that parses
/// and names the directory's step.
pub fn check_complete(dir: &Path) -> Result<u64, CheckpointError> {
    let incomplete = |reason: String| CheckpointError::Incomplete {
        path: dir.to_path_buf(),
        reason,
    };
    let step = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_step)
        .ok_or_else(|| incomplete("name is not step-<digits>".into()))?;
    for file in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
        if !dir.join(file).is_file() {
            return Err(incomplete(format!("{file} missing")));
        }
    }
    let state: CheckpointState = read_checkpoint_state(dir)?;
    if state.step != step {
        return Err(incomplete(format!("state.json says step {}", state.step)));
    }
    Ok(step)
}

/// All complete checkpoints in `run_dir`, oldest first. Temporary and
/// half-written directories are skipped; a missing `run_dir` has none.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", run_dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(io("read", run_dir))?.path();
        let named_step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_step);
        if named_step.is_some()
            && path.is_dir()
            && let Ok(step) = check_complete(&path)
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `run_dir`, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, path)| path))
}

/// Reads `state.json` of a checkpoint (e.g. to rebuild the model from
/// `state.model` before [`load_checkpoint`]).
pub fn read_checkpoint_state<T: DeserializeOwned>(
    dir: &Path,
) -> Result<CheckpointState<T>, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::State { path, source })
}

/// Loads the weights into `vs` (every variable must be present) and, if
/// given, the optimiser state, and returns the training state.
pub fn load_checkpoint<T: DeserializeOwned>(
    dir: &Path,
    vs: &mut VarStore,
    optimizer: Option<&mut AdamW>,
) -> Result<CheckpointState<T>, CheckpointError> {
    check_complete(dir)?;
    let state = read_checkpoint_state(dir)?;
    let model_err = |source| CheckpointError::Model {
        path: dir.to_path_buf(),
        source,
    };
    vs.load(dir.join(MODEL_FILE))
        .map_err(|e| model_err(e.into()))?;
    if let Some(optimizer) = optimizer {
        optimizer
            .load(&dir.join(OPTIMIZER_FILE))
            .map_err(model_err)?;
    }
    Ok(state)
}

/// Removes all but the newest `keep` complete checkpoints, and leftover
/// temporary directories of interrupted writes. Call only from the process
/// that writes checkpoints, between writes. Returns what was removed.
pub fn prune_checkpoints(run_dir: &Path, keep: usize) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut removed = Vec::new();
    let complete = list_checkpoints(run_dir)?;
    let excess = complete.len().saturating_sub(keep);
    for (_, path) in complete.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        removed.push(path);
    }
    for entry in fs::read_dir(run_dir).map_err(io("read", run_dir))? {
        let path = entry.map_err(io("read", run_dir))?.path();
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if is_temp && path.is_dir() {
            fs::remove_dir_all(&path).map_err(io("remove", &path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The checkpoint a path names: the newest complete one under
/// `path/checkpoints/` (a run directory), else under `path` (a
/// `checkpoints/` directory), else `path` itself when it is one complete
/// checkpoint `step-NNNNNN/`; `None` when none of these holds.
pub fn find_checkpoint(path: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    if let Some(dir) = latest_checkpoint(&path.join("checkpoints"))? {
        return Ok(Some(dir));
    }
    if let Some(dir) = latest_checkpoint(path)? {
        return Ok(Some(dir));
    }
    Ok(check_complete(path).is_ok().then(|| path.to_path_buf()))
}

//! The export of a checkpoint (pretraining or fine-tuning) as
//! `model.safetensors` + `config.json` + the PyTorch module
//! `pretext_model.py` that rebuilds the model from them (`pretext export`).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Device, Tensor};

use crate::checkpoint::{CheckpointState, find_checkpoint, load_checkpoint, read_checkpoint_state};
use crate::config::{MASK_TOKEN, ModelConfig, NUM_VALUES, PAD_TOKEN};
use crate::error::{CheckpointError, ModelError};
use crate::heads::{Classifier, PretrainModel, parameter_count};

/// Name of the weights file in an export directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the configuration file in an export directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the PyTorch module written beside them.
pub const PYTHON_FILE: &str = "pretext_model.py";
/// Layout version of `config.json`.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// The PyTorch side, shipped inside the binary so an export is self-contained.
const PYTHON_MODULE: &str = include_str!("../../../python/pretext_model.py");

/// Why a checkpoint could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing under the path is a complete checkpoint.
    #[error("no checkpoint to export under {}", .0.display())]
    NoCheckpoint(PathBuf),
    /// The weights hold neither head.
    #[error("{} holds neither a token head nor a classifier head", .0.display())]
    NoHead(PathBuf),
    /// Reading or writing the weights failed.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What libtorch said.
        reason: String,
    },
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The model could not be rebuilt from it.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Which head the exported model carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    /// Encoder + 41-way token head: logits `[N, 41, L]`.
    Pretrain,
    /// Encoder + pooled classifier head: logits `[N, K]`.
    Classifier,
}

/// `config.json`: everything needed to rebuild and feed the model.
#[derive(Debug, Serialize)]
pub struct ExportConfig {
    /// Always `pretext-export`.
    pub format: &'static str,
    /// [`EXPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// Which head.
    pub kind: ExportKind,
    /// Classes of a classifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<i64>,
    /// The architecture (same keys as a checkpoint's `state.json` `model`).
    pub model: ModelConfig,
    /// Optimiser steps of the exported weights.
    pub step: u64,
    /// Pretraining task of the run, when the checkpoint records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The checkpoint exported.
    pub source: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Token ids of the input.
    pub tokens: TokenIds,
    /// Shapes in and out.
    pub io: Io,
    /// The pretext version that wrote it.
    pub pretext_version: &'static str,
}

/// The input vocabulary.
#[derive(Debug, Serialize)]
pub struct TokenIds {
    /// Values are `0..values`.
    pub values: i64,
    /// The MASK token.
    pub mask: i64,
    /// The padding token.
    pub pad: i64,
}

/// Input and output shapes, in words.
#[derive(Debug, Serialize)]
pub struct Io {
    /// What the model takes.
    pub inputs: &'static str,
    /// What it returns.
    pub outputs: &'static str,
}

/// Writes the export of the checkpoint `run_dir` resolves to into `out`.
pub fn export(run_dir: &Path, out: &Path) -> Result<ExportConfig, ExportError> {
    let dir = find_checkpoint(run_dir)?
        .ok_or_else(|| ExportError::NoCheckpoint(run_dir.to_path_buf()))?;
    let state: CheckpointState = read_checkpoint_state(&dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    let names = Tensor::read_safetensors(&weights).map_err(|e| ExportError::Weights {
        path: weights.clone(),
        reason: e.to_string(),
    })?;
    let classes = names
        .iter()
        .find(|(name, _)| name == "classifier_head.weight")
        .map(|(_, t)| t.size()[0]);
    // Rebuilding the model in tch and loading the checkpoint into it checks
    // that every variable is there with its shape before anything is written.
    let model = match classes {
        Some(k) => {
            let mut m = Classifier::new(&state.model, k, Device::Cpu)?;
            load_checkpoint::<serde_json::Value>(&dir, m.var_store_mut(), None)?;
            Loaded::Classifier(m)
        }
        None => {
            if !names.iter().any(|(name, _)| name == "token_head.weight") {
                return Err(ExportError::NoHead(weights));
            }
            let mut m = PretrainModel::new(&state.model, Device::Cpu)?;
            load_checkpoint::<serde_json::Value>(&dir, m.var_store_mut(), None)?;
            Loaded::Pretrain(m)
        }
    };
    let (kind, vs) = match &model {
        Loaded::Classifier(m) => (ExportKind::Classifier, m.var_store()),
        Loaded::Pretrain(m) => (ExportKind::Pretrain, m.var_store()),
    };
    let config = ExportConfig {
        format: "pretext-export",
        format_version: EXPORT_FORMAT_VERSION,
        kind,
        num_classes: classes,
        model: state.model,
        step: state.step,
        task: state
            .training
            .get("task")
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        source: dir.display().to_string(),
        parameters: parameter_count(vs),
        tokens: TokenIds {
            values: NUM_VALUES,
            mask: MASK_TOKEN,
            pad: PAD_TOKEN,
        },
        io: Io {
            inputs: "tokens [N, L] int64 (values 0..=40, 41 = MASK, 42 = PAD after each row's length); lengths [N] int64",
            outputs: match kind {
                ExportKind::Pretrain => "logits [N, 41, L] over the values at every position",
                ExportKind::Classifier => "logits [N, K] over the classes",
            },
        },
        pretext_version: env!("CARGO_PKG_VERSION"),
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let target = out.join(WEIGHTS_FILE);
    vs.save(&target).map_err(|e| ExportError::Weights {
        path: target.clone(),
        reason: e.to_string(),
    })?;
    let target = out.join(CONFIG_FILE);
    let json = serde_json::to_vec_pretty(&config).expect("the export config serialises");
    std::fs::write(&target, json).map_err(io(&target))?;
    let target = out.join(PYTHON_FILE);
    std::fs::write(&target, PYTHON_MODULE).map_err(io(&target))?;
    Ok(config)
}

/// The model rebuilt from the checkpoint.
enum Loaded {
    Pretrain(PretrainModel),
    Classifier(Classifier),
}

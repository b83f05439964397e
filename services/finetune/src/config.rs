//! [`FinetuneConfig`]: everything one fine-tuning run needs, with documented
//! defaults.

use std::path::PathBuf;

use pretext_core::bucket::{BucketConfig, geometric_edges};
use pretext_core::validate::ValidationConfig;
use pretext_model::{AdamWConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::FinetuneError;

/// Where the encoder's starting weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pretrained {
    /// The newest complete checkpoint of a pretraining run directory
    /// (`RUN_DIR/checkpoints/step-NNNNNN/`, or a checkpoint directory
    /// itself). Its `ModelConfig` decides the architecture, causal or not.
    Run(PathBuf),
    /// No pretraining: the supervised-from-scratch baseline, built from
    /// [`FinetuneConfig::model`].
    None,
}

impl Pretrained {
    /// `none` → [`Pretrained::None`], anything else a run directory.
    pub fn parse(s: &str) -> Self {
        if s == "none" {
            Pretrained::None
        } else {
            Pretrained::Run(PathBuf::from(s))
        }
    }
}

/// Device of a fine-tuning run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneDevice {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
}

/// One fine-tuning run: data, starting weights, labeled subset, budget.
/// Saved in the fine-tuned checkpoint's `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Parquet files or directories (the raw-input contract).
    pub data: Vec<PathBuf>,
    /// Starting weights of the encoder.
    pub pretrained: Pretrained,
    /// Fraction of the labeled `train` rows trained on, in (0, 1]; drawn per
    /// class, at least one row per class (default 1).
    pub label_fraction: f64,
    /// Output: `metrics.json` and `checkpoints/step-NNNNNN/` (default `finetune`).
    pub run_dir: PathBuf,
    /// Linear probe: the encoder stays fixed, only the head learns (default off).
    pub freeze_encoder: bool,
    /// Passes over the labeled subset (default 20).
    pub epochs: u32,
    /// At least this many optimiser steps whatever the subset's size, so
    /// that tiny fractions still get a real budget (default 60). The budget
    /// is `max(epochs × batches per epoch, min_steps)`: the same for every
    /// starting point at a given fraction.
    pub min_steps: u64,
    /// At most this many steps, whatever the subset's size (default: no
    /// cap). Applied after `min_steps`; the same for every starting point.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Evaluations on `valid` spread over the run, the last at its end; the
    /// weights of the best one are kept (default 8).
    pub evals: u32,
    /// Seed of the subset, the head's initial weights and the batch order
    /// (default 0).
    pub seed: u64,
    /// Architecture of the baseline ([`Pretrained::None`]); ignored when a
    /// checkpoint gives one.
    pub model: ModelConfig,
    /// Optimiser (peak learning rate, warmup; `total_steps` is set to the budget).
    pub optimizer: AdamWConfig,
    /// Length buckets and token budget of the batches (default: octaves from
    /// 512 to 30,720 and 8,192 tokens: a labeled subset is small, so
    /// coarse buckets keep batches full at the cost of some padding; and
    /// twice the updates of 16,384-token batches for the same compute
    /// (bacteria, from scratch, 100% labels, crops of 1,024, 4 epochs:
    /// 96.0% on two seeds against 90.9% with 16,384).
    pub buckets: BucketConfig,
    /// Train on random crops of at most this many steps (a new crop every
    /// epoch); evaluation always sees whole sequences (default: no crop).
    pub train_crop: Option<usize>,
    /// Row rules of the input.
    pub validation: ValidationConfig,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
    /// Device (default `auto`).
    pub device: FinetuneDevice,
    /// Save the fine-tuned model as a checkpoint (default on).
    pub save_checkpoint: bool,
    /// Weigh each class's loss by `n / (K × n_class)` over the labeled
    /// subset, so a majority class cannot win by being predicted always
    /// (default on).
    #[serde(default = "yes")]
    pub balanced_loss: bool,
    /// Batch-normalise the pooled features before the head (running
    /// statistics at evaluation); without it a trainable encoder's pooled
    /// features reach the head at their raw scale (default on).
    #[serde(default = "yes")]
    pub feature_norm: bool,
    /// Set from outside to stop the run at its next step with
    /// [`FinetuneError::Cancelled`](crate::FinetuneError::Cancelled) (the
    /// scheduler sets it when it loses its lease). Not saved.
    #[serde(skip)]
    pub cancel: CancelFlag,
}

/// A shared stop flag (equal to every other: it is not a setting).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// Whether the run was asked to stop.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PartialEq for CancelFlag {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn yes() -> bool {
    true
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            pretrained: Pretrained::None,
            label_fraction: 1.0,
            run_dir: PathBuf::from("finetune"),
            freeze_encoder: false,
            epochs: 20,
            min_steps: 60,
            max_steps: None,
            evals: 8,
            seed: 0,
            model: ModelConfig::default(),
            optimizer: AdamWConfig {
                lr: 1e-3,
                warmup_steps: 10,
                ..AdamWConfig::default()
            },
            buckets: BucketConfig {
                edges: geometric_edges(512, 30_720, 2.0),
                max_tokens: 8_192,
            },
            train_crop: None,
            validation: ValidationConfig::default(),
            threads: None,
            device: FinetuneDevice::Auto,
            save_checkpoint: true,
            balanced_loss: true,
            feature_norm: true,
            cancel: CancelFlag::default(),
        }
    }
}

impl FinetuneConfig {
    /// Checks what can be checked before reading data.
    pub fn validate(&self) -> Result<(), FinetuneError> {
        let fail = |m: String| Err(FinetuneError::Config(m));
        if self.data.is_empty() {
            return fail("no input paths".into());
        }
        if !(self.label_fraction > 0.0 && self.label_fraction <= 1.0) {
            return fail(format!(
                "label fraction must be in (0, 1], got {}",
                self.label_fraction
            ));
        }
        if self.epochs == 0 && self.min_steps == 0 {
            return fail("the budget is zero: set epochs or min_steps".into());
        }
        if self.max_steps == Some(0) {
            return fail("max_steps must be at least 1".into());
        }
        if self.evals == 0 {
            return fail("evals must be at least 1".into());
        }
        if self.threads == Some(0) {
            return fail("threads must be at least 1".into());
        }
        if self.train_crop == Some(0) {
            return fail("train_crop must be positive".into());
        }
        if self
            .buckets
            .edges
            .last()
            .is_none_or(|&e| e < self.validation.max_len)
        {
            return fail("the last bucket edge must cover the longest accepted row".into());
        }
        self.model.validate()?;
        Ok(())
    }
}

//! Scoring a fine-tuned checkpoint on labeled test rows, matching classes
//! by name (what the scheduler promotes on).

use std::path::Path;

use pretext_core::bucket::BucketConfig;
use pretext_model::checkpoint::MODEL_FILE;
use pretext_model::heads::Classifier;
use pretext_model::tch::Device;
use pretext_model::{CheckpointState, ModelConfig, read_checkpoint_state};

use crate::data::{Example, LabeledData};
use crate::error::FinetuneError;
use crate::metrics::ClassMetrics;

/// A model's score on the test rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Fraction of the test rows classified right (rows of a class the
    /// model does not know count as wrong).
    pub accuracy: f64,
    /// Macro-F1 over the model's classes.
    pub macro_f1: f64,
    /// Test rows.
    pub rows: usize,
}

/// Scores the fine-tuned checkpoint `dir` on `data.test`, matching classes
/// by name (the classes of the data may have grown since it was trained).
pub fn score_checkpoint(
    dir: &Path,
    data: &LabeledData,
    buckets: &BucketConfig,
) -> Result<Score, FinetuneError> {
    let state: CheckpointState = read_checkpoint_state(dir)?;
    let classes: Vec<String> = state
        .training
        .pointer("/report/classes")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| FinetuneError::NotFinetuned(dir.to_path_buf()))?;
    let model_cfg: ModelConfig = state.model;
    let mut model = Classifier::new(&model_cfg, classes.len() as i64, Device::Cpu)?;
    model
        .var_store_mut()
        .load(dir.join(MODEL_FILE))
        .map_err(pretext_model::ModelError::from)?;
    let known: Vec<Example> = data
        .test
        .iter()
        .filter_map(|e| {
            let name = data.classes[e.class].to_string();
            classes
                .iter()
                .position(|c| *c == name)
                .map(|class| Example { class, ..e.clone() })
        })
        .collect();
    let (pred, _) = crate::train::predict(&model, &known, buckets)?;
    let right = pred.iter().filter(|(t, p, _)| t == p).count();
    let metrics = ClassMetrics::from_pairs(classes.len(), pred.iter().map(|&(t, p, _)| (t, p)));
    Ok(Score {
        accuracy: right as f64 / data.test.len().max(1) as f64,
        macro_f1: metrics.macro_f1,
        rows: data.test.len(),
    })
}

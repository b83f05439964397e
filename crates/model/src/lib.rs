//! pretext-model: the tch side of pretext (model, heads, optimiser, checkpoints).
//!
//! A dilated residual 1-D CNN over token ids (0..=40 values, 41 = MASK,
//! 42 = PAD) whose outputs at a row's real positions do not depend on how
//! far the row was padded, with a 41-way token head for pretraining and a
//! masked-mean-pooled classifier for fine-tuning.
//!
//! ```no_run
//! use pretext_model::{AdamW, AdamWConfig, ModelConfig, PretrainModel};
//! use pretext_model::tch::{Device, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = PretrainModel::new(&ModelConfig::default(), Device::Cpu)?;
//! let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
//! let tokens = Tensor::from_slice(&[3i64, 41, 7, 42]).view([1, 4]);
//! let (lengths, targets) = (Tensor::from_slice(&[3i64]), Tensor::from_slice(&[3i64, 5, 7, 42]).view([1, 4]));
//! let loss_mask = Tensor::from_slice(&[false, true, false, false]).view([1, 4]);
//! let loss = model.loss(&tokens, &lengths, &targets, &loss_mask, true)?;
//! opt.zero_grad();
//! (&loss.sum / loss.count as f64).backward();
//! opt.step()?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`] — [`ModelConfig`] (width, depth, kernel, dilation schedule,
//!   input encoder, direction, normalisation, dropout) and the token ids.
//! - `layers` — dilated causal/symmetric convolutions and masked
//!   normalisation; input checks.
//! - [`encoder`] — [`Encoder`] (input encoder, residual blocks, final norm)
//!   and [`EncoderInput`], a validated batch.
//! - [`heads`] — [`PretrainModel`] (encoder + token head) and [`Classifier`]
//!   (encoder + pooled head, loads a pretrained encoder, can freeze it).
//! - [`loss`] — [`token_loss`] and [`classification_loss`] as sums plus
//!   counts ([`LossStats`]) for token-weighted data-parallel training.
//! - [`optim`] — [`AdamW`] with saveable state, the warmup + cosine schedule,
//!   clipping, and flat-gradient access for all-reduce.
//! - [`checkpoint`] — atomic `step-NNNNNN/` directories and
//!   [`latest_checkpoint`].
//! - [`export`] — a checkpoint as safetensors + `config.json` + the PyTorch
//!   module `pretext_model.py` (`pretext export`).
//! - [`error`] — [`ModelError`], [`CheckpointError`].
//!
//! Variable names (stable checkpoint keys, PyTorch `state_dict` style):
//! `encoder.input.embedding.weight` or `encoder.input.conv.{weight,bias}` +
//! `encoder.input.mask_vector`; `encoder.block{i}.{norm1,conv1,norm2,conv2}.{weight,bias}`;
//! `encoder.final_norm.{weight,bias}`; `token_head.{weight,bias}`;
//! `classifier_head.{weight,bias,feature_shift,feature_scale,norm_mean,norm_var}`
//! (over the mean and max pools and the log length, 2C + 1 features).

pub mod checkpoint;
pub mod config;
pub mod encoder;
pub mod error;
pub mod export;
pub mod heads;
mod layers;
pub mod loss;
pub mod memory;
#[cfg(test)]
mod model_tests;
pub mod optim;

pub use checkpoint::{
    CheckpointState, RngState, latest_checkpoint, list_checkpoints, load_checkpoint,
    prune_checkpoints, read_checkpoint_state, save_checkpoint,
};
pub use config::{
    Direction, InputEncoding, MASK_TOKEN, ModelConfig, NUM_TOKENS, NUM_VALUES, NormKind, PAD_TOKEN,
    Precision,
};
pub use encoder::{Encoder, EncoderInput};
pub use error::{CheckpointError, ModelError};
pub use heads::{
    Classifier, ENCODER_PREFIX, FEATURE_NORM_EPS, FEATURE_NORM_MOMENTUM, POOLS, PretrainModel,
    parameter_count,
};
pub use loss::{LossStats, classification_loss, cross_entropy_stats, token_loss};
pub use optim::{AdamW, AdamWConfig, StepStats, global_norm};
pub use tch;

/// The libtorch version this build runs against, e.g. `2.11.0`; a cheap
/// check that libtorch is linked and loadable.
pub fn libtorch_summary() -> String {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let s = t.sum(tch::Kind::Float).double_value(&[]);
    format!(
        "libtorch ok (sum check {s}), cuda available: {}",
        tch::Cuda::is_available()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_runs() {
        assert!(super::libtorch_summary().starts_with("libtorch ok (sum check 6)"));
    }
}

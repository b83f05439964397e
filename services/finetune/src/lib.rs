//! pretext-finetune: fine-tuning and evaluation. Loads a pretrained encoder
//! (or none: the supervised baseline), adds the masked-mean-pooled linear
//! classifier, trains on a stratified labeled subset of `train`, keeps the
//! weights that score best on `valid`, and reports on `test`.
//!
//! ```no_run
//! use pretext_finetune::{FinetuneConfig, Pretrained, run};
//! # fn main() -> Result<(), pretext_finetune::FinetuneError> {
//! let report = run(FinetuneConfig {
//!     data: vec!["data".into()],
//!     pretrained: Pretrained::Run("runs/masked".into()),
//!     label_fraction: 0.05,
//!     run_dir: "runs/ft-masked-5".into(),
//!     ..Default::default()
//! })?;
//! println!("test accuracy {:.3}, macro-F1 {:.3}", report.test.accuracy, report.test.macro_f1);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`baselines`]: the majority class and logistic regressions on the
//!   histogram and on n-grams, on the same subsets ([`run_baseline`]).
//! - [`config`]: [`FinetuneConfig`] and [`Pretrained`], every setting with its default.
//! - [`data`]: labeled rows from Parquet ([`LabeledData`]), the stratified
//!   subset ([`stratified_subset`]), and bucketed batches.
//! - [`metrics`]: accuracy, macro-F1, confusion matrix ([`ClassMetrics`]),
//!   accuracy by length.
//! - [`train`]: [`run`], the loop, and [`FinetuneReport`].
//! - [`score`]: a fine-tuned checkpoint scored on test rows ([`score_checkpoint`]).
//! - [`error`] — the error type, [`FinetuneError`].
//!
//! # Run directory
//! - `metrics.json`: the [`FinetuneReport`].
//! - `checkpoints/step-NNNNNN/`: the selected weights, a checkpoint like the
//!   trainer's (`model.safetensors` holds `encoder.*` and
//!   `classifier_head.*`; `state.json` the model config and the report).

pub mod baselines;
pub mod config;
pub mod data;
pub mod error;
pub mod metrics;
pub mod probe_cache;
pub mod score;
pub mod train;

pub use baselines::{Baseline, BaselineReport, run_baseline};
pub use config::{CancelFlag, FinetuneConfig, FinetuneDevice, Pretrained};
pub use data::{Example, LabeledData, stratified_subset};
pub use error::FinetuneError;
pub use metrics::{ClassMetrics, LengthBand, accuracy_by_length};
pub use probe_cache::ProbeCache;
pub use score::{Score, score_checkpoint};
pub use train::{
    FinetuneReport, METRICS_FILE, build_classifier, resolve_checkpoint, run, run_on, run_on_with,
};

//! pretext-trainer: the pretraining service. Consumes Arrow IPC batches of
//! self-supervised targets from `{ns}.pretrain`, makes one optimiser step
//! per batch on a tch 1-D CNN, and checkpoints so that every published
//! batch contributes to the model exactly once, whatever crashes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pretext_trainer::TrainError> {
//! use pretext_trainer::{TrainerConfig, run};
//! let config = TrainerConfig { namespace: "run1".into(), run_dir: "runs/1".into(), ..Default::default() };
//! let summary = run(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("stopped at step {} ({:?})", summary.step, summary.stop);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`TrainerConfig`], every setting with its default.
//! - [`trainer`]: [`run`] / [`run_with_transport`], the loop: consume,
//!   dedupe by message id, decode (rejecting bad batches to `{ns}.dead`),
//!   step, checkpoint, ack; [`TrainSummary`].
//!   With [`TrainerConfig::world`] set, one rank of a data-parallel run
//!   (`trainer/parallel.rs`): every step is taken by all ranks together over
//!   Gloo (`pretext-dist`): batch ids exchanged through the store, flags,
//!   loss sums and bucketed gradients all-reduced, rank 0 checkpointing.
//!   With [`WorldConfig::elastic`] (`--nnodes MIN:MAX`), a member of an
//!   elastic run (`trainer/elastic.rs`): members join and leave, and each
//!   change re-forms the group from a checkpoint.
//! - [`step`]: one optimiser step, split into [`step::backward`] and
//!   [`step::apply`] so a data-parallel all-reduce fits between them.
//! - [`checkpoints`]: `RUN_DIR/checkpoints/`, the trainer state in
//!   `state.json`, and the history of applied batch ids.
//! - [`control`]: the reader of the `{ns}.control` and `{ns}.dead` streams
//!   that learns when the data ends, and which batches never will arrive.
//! - [`dead`]: those batches, and `checkpoints/dead.jsonl`.
//! - [`membership`]: an elastic run's generations,
//!   `checkpoints/membership.jsonl`.
//! - [`metrics`]: `RUN_DIR/metrics.jsonl`, one line per step.
//! - [`mod@audit`]: manifests joined with checkpoints (`pretext audit`).
//! - [`error`]: the error type, [`TrainError`].
//!
//! Producer and trainer in one process (the demo, the experiment, the
//! scheduler) live a level up, in `pretext-pipeline`.
//!
//! # Run directory
//! - `checkpoints/step-NNNNNN/` (`model.safetensors`, `optimizer.safetensors`,
//!   `state.json`): the newest complete one is resumed; each records the
//!   batch ids applied since the previous one, and the lists of all earlier
//!   ones, so pruning old checkpoints forgets nothing.
//! - `metrics.jsonl`: per-step loss, accuracy, tokens/s, padding, data wait, lr
//!   (data parallel: rank 0's; rank r writes `metrics.rank{r}.jsonl`).
//! - `manifests/`: written by producers, read by [`audit()`].

pub mod audit;
pub mod checkpoints;
pub mod config;
pub mod control;
pub mod dead;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod step;
pub mod trainer;

pub use audit::{AuditReport, audit};
pub use checkpoints::{AppliedHistory, TrainingState, checkpoint_dir};
pub use config::{DeviceChoice, Nnodes, TrainerConfig, WorldConfig};
pub use dead::{DeadBatch, read_dead};
pub use error::TrainError;
pub use metrics::{METRICS_FILE, StepMetrics, read_metrics};
pub use trainer::{StopReason, TrainSummary, run, run_with_transport};

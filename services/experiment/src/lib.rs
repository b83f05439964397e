//! pretext-experiment: what self-supervised pretraining buys, measured.
//! The grid {none, masked, next} × protocols × label fractions ×
//! pretraining fractions × seeds, beside the classical baselines on the
//! same subsets, with equal fine-tuning budgets; it writes `results.json`,
//! `summary.json` (paired differences with `none` and their intervals),
//! `report.md` and PNG plots. `pretext experiment` and `pretext demo` are
//! thin commands over it.
//!
//! A seed re-draws everything random: pretraining's initialisation and
//! masks, the labeled subset, the head and the batch order. Pretraining
//! runs once per (task, pretraining fraction, seed), in this process
//! (producer and trainer on one transport) or as data-parallel ranks, on
//! `train` rows only (labeled and unlabeled; `valid` and `test` are never
//! published).
//!
//! # Layout
//! - [`grid`]: the settings ([`Grid`], [`Budget`]) and [`run_grid`].
//! - [`pretrain`]: one pretraining run of the grid, reused when its
//!   settings match.
//! - [`record`]: one result row and label-fraction parsing.
//! - [`stats`]: means, bootstrap intervals, paired differences, verdicts.
//! - [`report`]: the markdown tables and `report.md`.
//! - [`plots`]: `accuracy.png`, `pretrain_data.png`, `pretrain_loss.png`.
//! - [`outputs`]: writing all of it, and the long-row probes.
//! - [`error`]: the error type, [`ExperimentError`].

pub mod error;
pub mod grid;
pub mod outputs;
pub mod plots;
pub mod pretrain;
pub mod record;
pub mod report;
pub mod stats;

pub use error::{Context, ExperimentError, Result};
pub use grid::{Budget, Grid, Outcome, epochs_at, print_targets, run_grid};
pub use outputs::{long_runs, write_outputs};
pub use record::{Protocol, Record, fraction_label, parse_fraction};
pub use report::{PretrainRun, markdown_table};

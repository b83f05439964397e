//! pretext-scheduler: scheduled retraining on newly arrived unlabeled data,
//! with a model registry. On each tick (a cron schedule, or once) it lists
//! the inbox, registers every new file by content hash in a SQLite registry
//! (validated; rejected rows quarantined and counted), and when there is
//! new data runs one retrain: the new files plus a replay sample of earlier
//! data, pretraining continued from the promoted checkpoint, fine-tuning,
//! evaluation on the test rows, and promotion only if the candidate is not
//! worse than the promoted model by more than a margin.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pretext_scheduler::SchedulerError> {
//! use pretext_scheduler::{SchedulerConfig, run_once};
//! let cfg = SchedulerConfig::new("inbox", "registry.sqlite");
//! let report = run_once(&cfg).await?;
//! println!("{} new files, run {:?}", report.new_files.len(), report.run.map(|r| r.status));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`SchedulerConfig`], every setting with its default.
//! - [`status`]: [`RunStatus`], the run state machine.
//! - [`db`]: opening the registry's SQLite file, and its schema.
//! - [`registry`]: the SQLite registry (files, sightings, runs, models).
//! - [`lease`]: the lease row that keeps two schedulers off one retrain.
//! - [`inbox`]: listing and fetching inbox files (local or `object_store`).
//! - [`retrain`]: the stages of a retrain and the promotion rule.
//! - [`schedule`]: [`run_once`] (one tick) and [`run`] (the cron loop).
//! - [`error`]: the error type, [`SchedulerError`].
//!
//! # Crash safety
//! A run's status is the last stage committed; each stage ends in one
//! transaction that checks the lease and the status it started from. A
//! scheduler killed anywhere leaves the run at its last committed stage,
//! and the next tick does the next stage. Files are assigned to a run in
//! the transaction that creates it, so each is trained on as new data by
//! exactly one run; a file whose content (sha-256) is known is never
//! registered again, whatever its name.
//!
//! # Work directory (`<registry>.d/` by default)
//! - `files/<sha-256>.parquet`: the scheduler's copy of every registered file.
//! - `quarantine/`: rejected rows.
//! - `runs/run-NNNNNN/`: `replay/` (the replay sample), `produce/` (the
//!   producer's plan and manifests), `pretrain/` (trainer run directory),
//!   `finetune/` (the candidate's `metrics.json` and checkpoint).

pub mod config;
pub mod db;
pub mod error;
pub mod inbox;
pub mod lease;
pub mod registry;
pub mod retrain;
pub mod schedule;
pub mod status;

pub use config::SchedulerConfig;
pub use error::SchedulerError;
pub use registry::{FileRecord, ModelRecord, Registry, RunDetail, RunRecord};
pub use schedule::{TickReport, parse_cron, run, run_once, run_once_until};
pub use status::RunStatus;

//! [`SchedulerError`]: why a tick failed, split by what the caller does about it.

use std::path::PathBuf;

use crate::status::RunStatus;

/// Why a scheduler tick (or a registry query) failed. A failed retrain stage
/// is also written to its run's `error` column; the run stays at its last
/// completed stage and the next tick tries that stage again.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The configuration is unusable; fix it and start again.
    #[error("invalid scheduler config: {0}")]
    Config(String),
    /// The registry database could not be opened, read or written.
    #[error("registry: {0}")]
    Registry(#[from] rusqlite::Error),
    /// The registry holds something this version cannot read (a status it
    /// does not know, a run that does not exist).
    #[error("registry: {0}")]
    Corrupt(String),
    /// Another scheduler holds the lease on the registry.
    #[error("the registry is leased to `{holder}` until {expires_at} (unix seconds)")]
    LeaseHeld {
        /// Who holds it.
        holder: String,
        /// When it expires unless renewed.
        expires_at: i64,
    },
    /// This scheduler's lease was taken over (it expired while a stage ran):
    /// nothing was committed; the new holder continues the run.
    #[error("the lease on the registry was lost to `{holder}`")]
    LeaseLost {
        /// Who holds it now.
        holder: String,
    },
    /// A stage tried to move a run from a status it is not in.
    #[error("run {run}: cannot go from `{from}` to `{to}`")]
    Transition {
        /// The run.
        run: i64,
        /// Its status.
        from: RunStatus,
        /// The status asked for.
        to: RunStatus,
    },
    /// The inbox could not be listed or a file in it read.
    #[error("inbox {inbox}: {source}")]
    Inbox {
        /// The inbox.
        inbox: String,
        /// The cause.
        source: object_store::Error,
    },
    /// A local file of the scheduler's work directory could not be used.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the replay sample failed.
    #[error("replay sample: {0}")]
    Sample(#[from] pretext_datasets::DatasetError),
    /// Reading the rows of registered files failed.
    #[error(transparent)]
    Input(#[from] pretext_core::input::InputError),
    /// Pretraining (producer or trainer) failed.
    #[error("pretraining: {0}")]
    Pretrain(#[from] pretext_pipeline::InProcessError),
    /// Starting from the promoted checkpoint failed.
    #[error("continuing from the promoted checkpoint: {0}")]
    Continue(#[from] pretext_trainer::TrainError),
    /// Fine-tuning or evaluation failed.
    #[error("fine-tuning: {0}")]
    Finetune(#[from] pretext_finetune::FinetuneError),
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] pretext_model::CheckpointError),
    /// The model failed while scoring.
    #[error("model: {0}")]
    Model(#[from] pretext_model::ModelError),
}

impl SchedulerError {
    /// An [`SchedulerError::Io`] maker for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| SchedulerError::Io { op, path, source }
    }
}

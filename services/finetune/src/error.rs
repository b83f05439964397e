//! [`FinetuneError`]: what can stop a fine-tuning run, by what the caller
//! does about it.

use std::path::PathBuf;

/// Why a fine-tuning run failed.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A setting is out of range.
    #[error("invalid fine-tune config: {0}")]
    Config(String),
    /// Stopped from outside (its [`CancelFlag`](crate::config::CancelFlag)).
    #[error("fine-tuning was cancelled")]
    Cancelled,
    /// An input file cannot be used.
    #[error(transparent)]
    Input(#[from] pretext_core::input::InputError),
    /// The data cannot support the run (no labeled rows, a class missing
    /// from `train`, no `valid` or `test` rows).
    #[error("{0}")]
    Data(String),
    /// The checkpoint records no fine-tuning classes.
    #[error("{} is not a fine-tuned checkpoint", .0.display())]
    NotFinetuned(PathBuf),
    /// The pretrained run directory holds no complete checkpoint.
    #[error("no complete checkpoint in {0} (nor in its checkpoints/ subdirectory)")]
    NoCheckpoint(PathBuf),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] pretext_model::CheckpointError),
    /// The model refused its input or configuration.
    #[error(transparent)]
    Model(#[from] pretext_model::ModelError),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] pretext_model::tch::TchError),
    /// Writing a result file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl FinetuneError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| FinetuneError::Io { op, path, source }
    }
}

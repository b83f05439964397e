//! Error types: `ModelError` for models, losses and the optimiser,
//! `CheckpointError` for checkpoint directories.

use std::path::PathBuf;

use tch::{Kind, TchError};

/// What went wrong building or running a model, a loss or the optimiser.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The `ModelConfig` (or another config) is unusable.
    #[error("invalid config: {0}")]
    Config(String),
    /// An input tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// The expected shape, in words (`[N, L]`).
        expected: String,
        /// The shape received.
        got: Vec<i64>,
    },
    /// An input tensor has the wrong element type.
    #[error("{what}: expected {expected} elements, got {got:?}")]
    Kind {
        /// Which argument.
        what: &'static str,
        /// The accepted kinds, in words.
        expected: &'static str,
        /// The kind received.
        got: Kind,
    },
    /// An input holds a value outside its allowed range (a token id above
    /// 42, a length of 0 or beyond the padded length, a target above 40).
    #[error("{what}: value {value} outside {allowed}")]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// The offending value (the minimum or maximum found).
        value: i64,
        /// The allowed range, in words.
        allowed: String,
    },
    /// A weight file lacks a variable the model needs.
    #[error("variable {name} missing from {source_name}")]
    MissingVariable {
        /// The variable name (`encoder.block0.conv1.weight`).
        name: String,
        /// The file or store it was looked for in.
        source_name: String,
    },
    /// A stored variable or optimiser buffer has another shape than the model's.
    #[error("variable {name}: stored shape {stored:?}, model shape {model:?}")]
    VariableShape {
        /// The variable name.
        name: String,
        /// Shape in the file.
        stored: Vec<i64>,
        /// Shape in the model.
        model: Vec<i64>,
    },
    /// Saved optimiser state does not belong to this parameter set.
    #[error("optimizer state does not match the parameters: {0}")]
    OptimizerState(String),
    /// The gradients' global norm is NaN or infinite; nothing was updated.
    #[error("non-finite gradient norm {0}; step skipped")]
    NonFiniteGradient(f64),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// What went wrong writing, finding or reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`create`, `rename`, `fsync`, …).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `state.json` could not be written or parsed.
    #[error("state file {}: {source}", path.display())]
    State {
        /// The `state.json` path.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The directory is not a complete checkpoint.
    #[error("{} is not a complete checkpoint: {reason}", path.display())]
    Incomplete {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Loading the weights or the optimiser state failed.
    #[error("checkpoint {}: {source}", path.display())]
    Model {
        /// The checkpoint directory.
        path: PathBuf,
        /// The cause.
        source: ModelError,
    },
}

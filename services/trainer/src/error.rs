//! [`TrainError`]: why a trainer run (or an audit) failed, split by what the caller does about it.

use std::path::PathBuf;

use pretext_model::{CheckpointError, ModelError};
use pretext_mq::MqError;

/// Why a trainer run stopped with an error. Whatever it is, every batch
/// applied but not yet in a durable checkpoint is still unacked, so the
/// broker redelivers it to the next run: nothing is lost or applied twice.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration (or a checkpoint that does not fit it) is unusable;
    /// fix it and start again.
    #[error("invalid trainer config: {0}")]
    Config(String),
    /// Connecting, declaring or consuming failed (broker unreachable past
    /// the reconnect deadline, topology mismatch, …); restart when the broker
    /// is back.
    #[error("transport: {0}")]
    Transport(#[from] MqError),
    /// The batch consumer ended (its queue was deleted or the transport
    /// closed) before the run was complete.
    #[error("the consumer of `{queue}` ended before the run was complete")]
    ConsumerEnded {
        /// The queue.
        queue: String,
    },
    /// The control stream could not be read, so the end of the data cannot
    /// be known.
    #[error("control stream `{queue}`: {source}")]
    Control {
        /// The stream.
        queue: String,
        /// The cause.
        #[source]
        source: MqError,
    },
    /// Writing, finding or loading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The model or optimiser failed on a batch that passed validation
    /// (e.g. a non-finite gradient: the model diverged).
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// A file of the run directory (metrics, manifests) could not be used.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Data-parallel: the rendezvous or a collective failed (a rank died or
    /// hung past the timeout, ranks disagree); every rank stops with its
    /// batches since the last checkpoint unacked. Restart all ranks.
    #[error(transparent)]
    Dist(#[from] pretext_dist::DistError),
    /// Data parallel: rank 0 could not write the checkpoint the ranks
    /// agreed on (its own log says why); no rank acks anything.
    #[error("rank 0 could not write the checkpoint of step {step}; see its log")]
    LeaderCheckpoint {
        /// The step of the checkpoint.
        step: u64,
    },
    /// Every planned task is done and every batch is applied, except these,
    /// which went to the dead-letter queue (rejected by a trainer, or
    /// dead-lettered by the broker at the delivery limit). The run is
    /// checkpointed and acked; they are recorded in `checkpoints/dead.jsonl`
    /// for `pretext audit`. Inspect `queue`, fix the cause, and publish them
    /// again (or accept the loss).
    #[error(
        "the data ended with {} batch(es) in the dead-letter queue `{queue}`, never applied: {}",
        dead.len(),
        crate::dead::describe(dead)
    )]
    DeadLettered {
        /// The dead-letter queue.
        queue: String,
        /// The batches, with why.
        dead: Vec<crate::dead::DeadBatch>,
        /// The step the run ended at.
        step: u64,
    },
    /// The training thread panicked.
    #[error("the training thread panicked: {0}")]
    Panic(String),
}

impl TrainError {
    /// An [`TrainError::Io`] maker for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TrainError::Io { op, path, source }
    }
}

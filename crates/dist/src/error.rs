//! [`DistError`]: why a rendezvous or a collective failed, split by what the
//! caller does about it.

/// Why a data-parallel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A rendezvous variable is missing or malformed; fix the environment.
    #[error("rendezvous: {var}: {reason}")]
    Env {
        /// The variable (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`).
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP store could not be reached or answered with an error (its
    /// host, rank 0 with `RANK` set, may have died).
    #[error("store {op} `{key}` at {addr}: {message}")]
    Store {
        /// The operation.
        op: &'static str,
        /// The key (or the host for a connect).
        key: String,
        /// `host:port` of the store.
        addr: String,
        /// The store's message.
        message: String,
    },
    /// Building the process group failed (peers missing past the timeout,
    /// an unusable network device, a world already full).
    #[error("process group init (rank {rank:?} of {world}): {message}")]
    Init {
        /// This rank, when known.
        rank: Option<usize>,
        /// World size.
        world: usize,
        /// Why.
        message: String,
    },
    /// A collective failed: a peer died, hung past the timeout, or the
    /// ranks called different collectives. The group is unusable; exit and
    /// restart every rank.
    #[error("{op} failed on rank {rank} of {world}{}: {message}", lost_text(.lost))]
    Collective {
        /// The collective.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// World size.
        world: usize,
        /// Ranks that did not answer the liveness check after the failure
        /// (empty when all did, or when it could not tell).
        lost: Vec<usize>,
        /// Gloo's (or NCCL's) message.
        message: String,
    },
    /// A tensor that no collective may take: undefined, non-contiguous
    /// (Gloo would silently reduce the wrong elements), or of a layout the
    /// caller mixed up. A programming error; nothing was sent.
    #[error("invalid tensor for {op}: {reason}")]
    InvalidTensor {
        /// The collective.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The ranks disagree about something that must be equal (parameter
    /// layout, resumed step).
    #[error("ranks disagree: {0}")]
    Mismatch(String),
    /// The backend is not in this build (NCCL without the `nccl` feature).
    #[error("{0}")]
    Unsupported(String),
    /// A tensor operation around a collective failed.
    #[error("tensor: {0}")]
    Tch(#[from] tch::TchError),
}

fn lost_text(lost: &[usize]) -> String {
    match lost {
        [] => String::new(),
        [r] => format!(" (lost rank {r}: it did not answer)"),
        rs => format!(" (lost ranks {rs:?}: they did not answer)"),
    }
}

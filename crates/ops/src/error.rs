//! [`OpsError`]: why the metrics endpoint could not start.

use std::net::SocketAddr;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr} for /metrics: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Another metrics recorder is installed in this process.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
}

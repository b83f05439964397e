//! Typed errors: [`MqError`] for transport operations, [`AckError`] for settling a delivery.
//!
//! Variants are split wherever a caller acts differently: a broker that
//! cannot be reached (wait or give up), a message the broker keeps refusing
//! (back off), a queue that does not exist (a configuration bug), a closed
//! transport (shut down), and, for acks, a channel that closed under the
//! delivery (the broker will redeliver it). No variant carries a password:
//! URLs are redacted before they are stored.

use std::time::Duration;

/// A boxed source error from the underlying client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// The broker credentials in the environment are unusable.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),

    /// The URL names no known transport or cannot be parsed.
    #[error("invalid transport URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with its password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The broker could not be reached (at start, or again after a lost
    /// connection) before the reconnect deadline ran out.
    #[error("broker at {url} unreachable after {attempts} attempts over {waited:?}")]
    Unreachable {
        /// The URL with its password redacted.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// Time spent trying.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: BoxError,
    },

    /// The connection dropped during an operation that is not retried
    /// automatically (declare, depth, purge, delete); calling again
    /// reconnects.
    #[error("connection lost during {op}")]
    ConnectionLost {
        /// The operation that was cut short.
        op: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The broker kept negatively acknowledging the message (usually a full
    /// queue with `x-overflow: reject-publish`) until the publish retry
    /// deadline ran out. The message may be published again with the same id.
    #[error("broker refused message `{message_id}` for `{queue}` for {waited:?} (queue full?)")]
    Nacked {
        /// The target queue.
        queue: String,
        /// The refused message.
        message_id: String,
        /// How long the publisher retried.
        waited: Duration,
    },

    /// No queue of that name exists to route the message to.
    #[error("message `{message_id}` is unroutable: no queue `{queue}`")]
    Unroutable {
        /// The missing queue.
        queue: String,
        /// The message that was returned.
        message_id: String,
    },

    /// The queue does not exist.
    #[error("queue `{queue}` does not exist")]
    QueueNotFound {
        /// The missing queue.
        queue: String,
    },

    /// The queue exists but was not declared through this transport, so its
    /// kind and dead-letter queue are unknown; declare the topology first.
    #[error("queue `{queue}` was not declared on this transport; declare the topology first")]
    NotDeclared {
        /// The queue.
        queue: String,
    },

    /// A queue or exchange exists with different arguments.
    #[error("`{name}` already exists with other arguments: {detail}")]
    TopologyMismatch {
        /// The queue or exchange.
        name: String,
        /// The broker's explanation.
        detail: String,
    },

    /// A name, message id or body that the transport cannot carry.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The transport was closed.
    #[error("transport closed")]
    Closed,

    /// Any other broker or client error.
    #[error("broker error during {op}")]
    Broker {
        /// The operation that failed.
        op: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

/// Why acking, requeueing or rejecting a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The channel (or connection) the message came on closed before the
    /// settlement reached the broker. The broker returns the message to its
    /// queue and redelivers it with `redelivered` set: treat it as not acked.
    #[error("the delivery's channel closed; the broker will redeliver the message")]
    ChannelClosed,

    /// `reject` was called on a delivery from a queue without a dead-letter
    /// queue. The message was left unacked.
    #[error("queue `{queue}` has no dead-letter queue; the message was left unacked")]
    NoDeadLetterQueue {
        /// The queue the delivery came from.
        queue: String,
    },

    /// The copy for the dead-letter queue could not be stored, so the original
    /// was not acked: it stays unacked on its channel (and comes back when
    /// the consumer is dropped).
    #[error("could not store the rejected message in the dead-letter queue")]
    DeadLetter(#[source] Box<MqError>),

    /// Any other broker or client error.
    #[error("broker error during {op}")]
    Broker {
        /// The settlement that failed.
        op: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

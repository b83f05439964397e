//! The transport interface both implementations share; [`crate::connect()`]
//! opens one from a URL.

use crate::error::MqError;
use crate::message::{Delivery, OutMessage};
use crate::topology::{DeadLetter, QueueSpec};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A transport shared between tasks.
pub type SharedTransport = Arc<dyn Transport>;

/// How a consumer receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumeOptions {
    /// Most unacked deliveries the consumer holds at once (quorum queues cap
    /// it at 2,000; streams require one).
    pub prefetch: u16,
}

impl Default for ConsumeOptions {
    /// A prefetch of 16.
    fn default() -> Self {
        Self { prefetch: 16 }
    }
}

/// A message transport: RabbitMQ ([`RabbitTransport`](crate::RabbitTransport)) or
/// in-process ([`MemoryTransport`](crate::MemoryTransport)), with the same
/// delivery semantics.
///
/// Queues are declared through the transport (usually by
/// [`Topology::declare`](crate::Topology::declare)) before they are consumed:
/// the declaration tells the transport a queue's kind and dead-letter queue.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Declares a durable queue; idempotent for the same spec.
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), MqError>;

    /// Declares the dead-letter exchange and binds its queue (which must
    /// exist) to it; idempotent.
    async fn declare_dead_letter(&self, dead_letter: &DeadLetter) -> Result<(), MqError>;

    /// Publishes one persistent message and returns once the broker has
    /// confirmed it. Waits (with backoff) while the queue is full, and retries
    /// the same message after a lost connection.
    async fn publish(&self, queue: &str, message: OutMessage) -> Result<(), MqError>;

    /// A publisher to `queue` that keeps several messages unconfirmed at once,
    /// for throughput.
    async fn publisher(&self, queue: &str) -> Result<Box<dyn Publisher>, MqError>;

    /// Starts consuming `queue` with manual acks. A stream is read from its
    /// first message.
    async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, MqError>;

    /// Messages ready for delivery, not counting unacked ones. For a stream
    /// the memory transport gives its length; what RabbitMQ answers for a
    /// stream is not relied on.
    async fn queue_depth(&self, queue: &str) -> Result<u64, MqError>;

    /// Drops every ready message of a queue; returns how many.
    async fn purge(&self, queue: &str) -> Result<u64, MqError>;

    /// Deletes a queue and its messages; no error if it does not exist.
    /// Its consumers end.
    async fn delete_queue(&self, queue: &str) -> Result<(), MqError>;

    /// Deletes an exchange; no error if it does not exist.
    async fn delete_exchange(&self, exchange: &str) -> Result<(), MqError>;

    /// Closes the transport: consumers end, and later calls fail with
    /// [`MqError::Closed`].
    async fn close(&self) -> Result<(), MqError>;
}

/// Publishes to one queue with up to a window of messages unconfirmed.
/// Messages may be stored out of order when some are retried.
#[async_trait]
pub trait Publisher: Send {
    /// Sends a message, first waiting for confirms while the window is full.
    /// Returning does not mean the message is confirmed: call
    /// [`flush`](Self::flush).
    ///
    /// On an error, `message` was not sent, and the error may be about an
    /// earlier message of the window (it names it), which left the window;
    /// the other unconfirmed messages stay, and `flush` retries them.
    async fn send(&mut self, message: OutMessage) -> Result<(), MqError>;

    /// Waits until every sent message is confirmed, retrying refused ones.
    /// Dropping a publisher without flushing may lose unconfirmed messages.
    async fn flush(&mut self) -> Result<(), MqError>;

    /// Messages sent and not yet confirmed.
    fn unconfirmed(&self) -> usize;
}

/// Receives deliveries from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery, waiting for one. `Ok(None)` once the consumer has
    /// ended (queue deleted, transport closed). A consumer of
    /// [`RabbitTransport`](crate::RabbitTransport) resumes by itself after
    /// the connection is lost: it fails only when the broker stays
    /// unreachable past the reconnect deadline.
    ///
    /// Dropping the consumer returns its unacked deliveries to the queue.
    async fn next(&mut self) -> Result<Option<Delivery>, MqError>;

    /// Asks the broker for no more deliveries (AMQP `basic.cancel`). The
    /// deliveries it sent before it agreed are still handed out by
    /// [`next`](Self::next), which then returns `Ok(None)`; so draining `next`
    /// after a cancel leaves nothing of this consumer in flight. Deliveries in
    /// hand stay settleable until the consumer is dropped. A cancelled
    /// consumer does not subscribe again after a lost connection: its
    /// unsettled deliveries go back to the queue, and `next` ends.
    async fn cancel(&mut self) -> Result<(), MqError>;

    /// The queue consumed.
    fn queue(&self) -> &str;
}

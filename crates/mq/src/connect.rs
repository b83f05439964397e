//! [`connect`]: the transport a URL names (RabbitMQ or the in-process one),
//! the one place that knows both implementations.

use std::sync::Arc;

use crate::error::MqError;
use crate::memory::MemoryTransport;
use crate::rabbit::{RabbitConfig, RabbitTransport};
use crate::transport::SharedTransport;
use crate::url::Endpoint;

/// Opens the transport a URL names:
///
/// - `amqp://…` or `amqps://…`: a [`RabbitTransport`] with `config`;
/// - `memory` (or `memory://NAME`): the process-wide [`MemoryTransport`] of
///   that name, so a producer task and trainer tasks of one process that
///   connect to the same URL share queues. Callers that want a private one
///   use [`MemoryTransport::new`].
///
/// A broker URL without a password gets the credentials of the environment
/// (see [`crate::credentials`]).
pub async fn connect(url: &str, config: RabbitConfig) -> Result<SharedTransport, MqError> {
    let url = crate::credentials::resolve_url(url)?;
    match Endpoint::parse(&url)? {
        Endpoint::Amqp(url) => Ok(Arc::new(RabbitTransport::connect_url(url, config).await?)),
        Endpoint::Memory(name) => Ok(Arc::new(MemoryTransport::named(&name))),
    }
}

//! Message transport for pretext: topology, publishing with confirms, consuming with manual acks.
//!
//! Producers publish Arrow IPC batches to the `{ns}.pretrain` / `{ns}.finetune`
//! queues, trainers consume them with manual acks and a bounded prefetch, and
//! end-of-data messages travel on the `{ns}.control` stream that every rank
//! reads from its first message (see `DESIGN.md`, "RabbitMQ topology and
//! delivery").
//!
//! Two transports implement one [`Transport`] trait with the same semantics:
//!
//! - [`RabbitTransport`] over lapin: separate publishing and consuming
//!   connections, publisher confirms with a bounded window, retry of the same
//!   `message_id` after a nack (a full `reject-publish` queue) or a lost
//!   connection, and its own reconnect supervisor with bounded backoff.
//! - [`MemoryTransport`]: in-process, the embedded default for `pretext demo`
//!   and for tests that need no broker.
//!
//! [`connect()`] picks one from a URL: `amqp://…` / `amqps://…` or `memory`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pretext_mq::{ConsumeOptions, OutMessage, RabbitConfig, Topology, connect};
//!
//! let transport = connect("memory", RabbitConfig::default()).await?;
//! let topology = Topology::new("demo");
//! topology.declare(&*transport).await?;
//! transport
//!     .publish(&topology.pretrain(), OutMessage::new("batch-0", b"ipc".to_vec()))
//!     .await?;
//! let mut consumer = transport
//!     .consume(&topology.pretrain(), ConsumeOptions::default())
//!     .await?;
//! if let Some(delivery) = consumer.next().await? {
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`error`]: [`MqError`] for transport operations and [`AckError`] for
//!   settling a delivery, with variants a caller acts on differently.
//! - [`message`]: [`OutMessage`], [`HeaderValue`], [`Delivery`] and its
//!   ack / requeue / reject-to-dead-queue methods; well-known header names.
//! - [`topology`]: [`Topology`] names and bounds the queues of a namespace and
//!   declares or deletes them; [`QueueSpec`] describes one queue.
//! - [`transport`]: the [`Transport`], [`Publisher`] and [`Consumer`] traits,
//!   [`ConsumeOptions`].
//! - `connect`: [`connect()`] from a URL, the one module that knows both
//!   transports.
//! - [`backoff`]: bounded exponential backoff shared by reconnects and
//!   publish retries.
//! - [`url`]: URL parsing and password redaction for every log and error.
//! - [`credentials`]: user and password from `PRETEXT_AMQP_USER`,
//!   `PRETEXT_AMQP_PASSWORD` or `PRETEXT_AMQP_PASSWORD_FILE`, filled into a
//!   broker URL that has none ([`connect()`] does it).
//! - [`memory`]: [`MemoryTransport`], the in-process transport.
//! - [`rabbit`]: [`RabbitTransport`]: the reconnect supervisor (`link`),
//!   confirmed publishing (`publish`), consuming (`consume`) and AMQP
//!   conversions (`convert`).

pub mod backoff;
mod connect;
pub mod credentials;
pub mod error;
pub mod memory;
pub mod message;
pub mod rabbit;
pub mod topology;
pub mod transport;
pub mod url;

pub use backoff::Backoff;
pub use connect::connect;
pub use credentials::{Credentials, CredentialsError};
pub use error::{AckError, MqError};
pub use memory::MemoryTransport;
pub use message::{Delivery, HeaderValue, Headers, OutMessage};
pub use rabbit::{CA_FILE_ENV, RabbitConfig, RabbitTransport};
pub use topology::{DeadLetter, QueueKind, QueueRole, QueueSpec, Topology, TopologyConfig};
pub use transport::{ConsumeOptions, Consumer, Publisher, SharedTransport, Transport};
pub use url::redact_url;

/// Largest message body either transport accepts. RabbitMQ 4.x refuses
/// messages over 16 MiB by default, so nothing bigger is published even to a
/// 3.x broker or to the memory transport, which would take it; 64 KiB of the
/// 16 MiB are left for properties and headers.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

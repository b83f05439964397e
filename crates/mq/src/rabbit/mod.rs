//! [`RabbitTransport`]: the [`Transport`] over RabbitMQ (lapin), with its own reconnect supervisor.
//!
//! Two supervised connections (`link`): publishing, which a memory or disk
//! alarm blocks, and consuming, which also runs declarations and queries and
//! which an alarm does not block. Rejected copies for the dead-letter queue go
//! through the publishing connection, so the consuming one never publishes.
//!
//! - `link`: connection supervisor and topology replay;
//! - `publish`: confirmed publishing and the windowed publisher;
//! - `consume`: the subscription task and delivery settlement;
//! - `convert`: AMQP headers, properties, arguments and errors;
//! - `tls`: certificate verification for `amqps://` ([`CA_FILE_ENV`]).

mod consume;
mod convert;
mod link;
mod publish;
mod tls;

use crate::backoff::{Backoff, duration_ms};
use crate::error::MqError;
use crate::message::OutMessage;
use crate::topology::{DeadLetter, QueueSpec};
use crate::transport::{ConsumeOptions, Consumer, Publisher, Transport};
use crate::url::{AmqpUrl, Endpoint};
use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use link::{Declared, Link, Role};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
pub use tls::CA_FILE_ENV;
use tokio::sync::Semaphore;

/// How long a declare answered 404 is retried: the queue exists but is not
/// running yet, as quorum queues are for a moment after a broker restart.
const RECOVERING_QUEUE: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(2),
    deadline: Some(Duration::from_secs(30)),
};

/// Settings of a [`RabbitTransport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitConfig {
    /// Most messages awaiting a publisher confirm: per [`Publisher`], and
    /// across concurrent [`Transport::publish`] calls.
    pub max_in_flight: usize,
    /// Backoff between reconnect attempts after a lost connection; with a
    /// deadline, operations fail with [`MqError::Unreachable`] once it
    /// passes (without one they wait for the broker indefinitely).
    pub reconnect: Backoff,
    /// How long [`RabbitTransport::connect`] keeps trying to reach the
    /// broker before failing: a wrong URL should fail a service at start.
    #[serde(with = "duration_ms", rename = "connect_deadline_ms")]
    pub connect_deadline: Duration,
    /// Backoff between retries of a message the broker nacked (a full
    /// queue); with a deadline, publishing fails with [`MqError::Nacked`]
    /// once it passes.
    pub publish_retry: Backoff,
}

impl Default for RabbitConfig {
    /// 256 in flight; reconnect 100 ms doubling to 5 s without deadline;
    /// 10 s to connect at start; nack retries 20 ms doubling to 1 s
    /// without deadline.
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            reconnect: Backoff::default(),
            connect_deadline: Duration::from_secs(10),
            publish_retry: Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_secs(1),
                deadline: None,
            },
        }
    }
}

/// The RabbitMQ transport. Clones share connections.
#[derive(Clone)]
pub struct RabbitTransport {
    inner: Arc<Inner>,
}

/// State shared by the transport, its publishers, consumers and deliveries.
pub(crate) struct Inner {
    /// For logs and errors; `Display` redacts the password.
    url: AmqpUrl,
    /// The login, set as `user_id` on every message published.
    pub(crate) user: String,
    config: RabbitConfig,
    /// Publishing connection, with a confirm-mode channel.
    publish: Link,
    /// Consuming connection; also declarations and queries.
    consume: Link,
    /// Queue specs and dead-letter exchanges declared here, replayed after
    /// reconnects and consulted by `consume`.
    declared: Arc<Declared>,
    /// Bounds confirms awaited by concurrent `publish` calls.
    in_flight: Semaphore,
    closed: AtomicBool,
}

impl Inner {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Runs `op` on a fresh channel of the consuming connection, closing the
    /// channel afterwards (an error from the broker closes it anyway).
    async fn admin<T, F, Fut>(&self, op: &'static str, name: &str, f: F) -> Result<T, MqError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let session = self.consume.session().await?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|err| convert::mq_error(op, name, err))?;
        let result = f(channel.clone()).await;
        if channel.status().connected() {
            let _ = channel.close(200, "OK".into()).await;
        }
        result.map_err(|err| convert::mq_error(op, name, err))
    }
}

impl RabbitTransport {
    /// Connects both links to the broker at `url` (`amqp://` or `amqps://`),
    /// trying for up to `config.connect_deadline`.
    pub async fn connect(url: &str, config: RabbitConfig) -> Result<Self, MqError> {
        match Endpoint::parse(url)? {
            Endpoint::Amqp(url) => Self::connect_url(url, config).await,
            Endpoint::Memory(_) => Err(MqError::InvalidUrl {
                url: crate::url::redact_url(url),
                reason: "not an amqp:// or amqps:// URL".to_owned(),
            }),
        }
    }

    pub(crate) async fn connect_url(url: AmqpUrl, config: RabbitConfig) -> Result<Self, MqError> {
        let declared = Arc::new(Declared::default());
        let inner = Arc::new(Inner {
            publish: Link::new(
                Role::Publish,
                url.clone(),
                config.reconnect,
                declared.clone(),
            ),
            consume: Link::new(
                Role::Consume,
                url.clone(),
                config.reconnect,
                declared.clone(),
            ),
            user: url.username(),
            url,
            config,
            declared,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            closed: AtomicBool::new(false),
        });
        let first = Backoff {
            deadline: Some(config.connect_deadline),
            ..config.reconnect
        };
        inner.publish.session_within(first).await?;
        inner.consume.session_within(first).await?;
        Ok(Self { inner })
    }

    /// The configuration.
    pub fn config(&self) -> RabbitConfig {
        self.inner.config
    }
}

impl fmt::Debug for RabbitTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitTransport")
            .field("url", &self.inner.url)
            .field("config", &self.inner.config)
            .field("closed", &self.inner.is_closed())
            .finish()
    }
}

#[async_trait]
impl Transport for RabbitTransport {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), MqError> {
        spec.validate()?;
        let name = convert::short("queue name", &spec.name)?;
        let arguments = convert::queue_arguments(spec)?;
        // A declare answered 404 names a queue that exists but whose process
        // is not running yet: a quorum queue still recovering after a broker
        // restart. Declare again for a while before giving up.
        let mut recovering = RECOVERING_QUEUE.start();
        loop {
            let (name, arguments) = (name.clone(), arguments.clone());
            let declared = self
                .inner
                .admin("queue.declare", &spec.name, |channel| async move {
                    link::queue_declare(&channel, name, arguments).await
                })
                .await;
            match declared {
                Err(MqError::QueueNotFound { .. }) if recovering.wait().await.is_ok() => {
                    tracing::debug!(queue = %spec.name, "queue not running yet (recovering after a restart?); declaring again");
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        self.inner.declared.add_queue(spec);
        Ok(())
    }

    async fn declare_dead_letter(&self, dead_letter: &DeadLetter) -> Result<(), MqError> {
        let exchange = convert::short("exchange name", &dead_letter.exchange)?;
        let queue = convert::short("queue name", &dead_letter.queue)?;
        self.inner
            .admin(
                "exchange.declare",
                &dead_letter.queue,
                |channel| async move { link::exchange_bind(&channel, exchange, queue).await },
            )
            .await?;
        self.inner.declared.add_dead_letter(dead_letter);
        Ok(())
    }

    async fn publish(&self, queue: &str, message: OutMessage) -> Result<(), MqError> {
        if self.inner.is_closed() {
            return Err(MqError::Closed);
        }
        self.inner.publish_confirmed(queue, &message).await
    }

    async fn publisher(&self, queue: &str) -> Result<Box<dyn Publisher>, MqError> {
        if self.inner.is_closed() {
            return Err(MqError::Closed);
        }
        crate::topology::validate_name(queue)?;
        Ok(Box::new(publish::RabbitPublisher::new(
            self.inner.clone(),
            queue.to_owned(),
        )))
    }

    async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, MqError> {
        if self.inner.is_closed() {
            return Err(MqError::Closed);
        }
        if options.prefetch == 0 {
            return Err(MqError::InvalidArgument(
                "prefetch must be at least 1".to_owned(),
            ));
        }
        let Some(spec) = self.inner.declared.queue(queue) else {
            return Err(MqError::NotDeclared {
                queue: queue.to_owned(),
            });
        };
        let consumer =
            consume::RabbitConsumer::start(self.inner.clone(), spec, options.prefetch).await?;
        Ok(Box::new(consumer))
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, MqError> {
        let name = convert::short("queue name", queue)?;
        let declared = self
            .inner
            .admin("queue.declare", queue, |channel| async move {
                channel
                    .queue_declare(
                        name,
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
        Ok(u64::from(declared.message_count()))
    }

    async fn purge(&self, queue: &str) -> Result<u64, MqError> {
        let name = convert::short("queue name", queue)?;
        let purged = self
            .inner
            .admin("queue.purge", queue, |channel| async move {
                channel
                    .queue_purge(name, QueuePurgeOptions::default())
                    .await
            })
            .await?;
        Ok(u64::from(purged))
    }

    async fn delete_queue(&self, queue: &str) -> Result<(), MqError> {
        let name = convert::short("queue name", queue)?;
        self.inner
            .admin("queue.delete", queue, |channel| async move {
                channel
                    .queue_delete(name, QueueDeleteOptions::default())
                    .await
            })
            .await?;
        self.inner.declared.remove_queue(queue);
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<(), MqError> {
        let name = convert::short("exchange name", exchange)?;
        self.inner
            .admin("exchange.delete", exchange, |channel| async move {
                channel
                    .exchange_delete(name, ExchangeDeleteOptions::default())
                    .await
            })
            .await?;
        self.inner.declared.remove_exchange(exchange);
        Ok(())
    }

    async fn close(&self) -> Result<(), MqError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.in_flight.close();
        self.inner.publish.close().await;
        self.inner.consume.close().await;
        Ok(())
    }
}

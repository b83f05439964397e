//! The reconnect supervisor: one connection to the broker, rebuilt (with its channel and the declared topology) whenever it is found dead.
//!
//! lapin's own recovery is not used (it is reported never to recover after a
//! broker restart). Instead every operation asks its [`Link`] for the
//! current [`Session`]; a dead one is replaced under a lock, so concurrent
//! callers wait for a single reconnect, which retries with bounded
//! exponential backoff. Each session has a generation number so that a caller
//! that saw an operation fail can retire exactly the session it used.

use super::convert::{queue_arguments, short};
use crate::backoff::Backoff;
use crate::error::{BoxError, MqError};
use crate::topology::{DeadLetter, QueueSpec};
use crate::url::AmqpUrl;
use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Mutex as AsyncMutex;

/// The longest [`Link::close`] waits for the broker to confirm.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What this transport declared, replayed on every new connection so that a
/// broker that lost its definitions gets them back.
#[derive(Default)]
pub(crate) struct Declared {
    inner: Mutex<DeclaredInner>,
}

#[derive(Default)]
struct DeclaredInner {
    queues: BTreeMap<String, QueueSpec>,
    /// Keyed by exchange.
    dead_letters: BTreeMap<String, DeadLetter>,
}

impl Declared {
    fn lock(&self) -> std::sync::MutexGuard<'_, DeclaredInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add_queue(&self, spec: &QueueSpec) {
        self.lock().queues.insert(spec.name.clone(), spec.clone());
    }

    pub(crate) fn add_dead_letter(&self, dead_letter: &DeadLetter) {
        self.lock()
            .dead_letters
            .insert(dead_letter.exchange.clone(), dead_letter.clone());
    }

    pub(crate) fn queue(&self, name: &str) -> Option<QueueSpec> {
        self.lock().queues.get(name).cloned()
    }

    pub(crate) fn remove_queue(&self, name: &str) {
        let mut inner = self.lock();
        inner.queues.remove(name);
        inner.dead_letters.retain(|_, dl| dl.queue != name);
    }

    pub(crate) fn remove_exchange(&self, name: &str) {
        self.lock().dead_letters.remove(name);
    }

    /// Declares every queue, then every dead-letter exchange and binding.
    async fn replay(&self, channel: &Channel) -> Result<(), BoxError> {
        let (queues, dead_letters) = {
            let inner = self.lock();
            (
                inner.queues.values().cloned().collect::<Vec<_>>(),
                inner.dead_letters.values().cloned().collect::<Vec<_>>(),
            )
        };
        for spec in &queues {
            declare_queue(channel, spec).await?;
        }
        for dead_letter in &dead_letters {
            declare_dead_letter(channel, dead_letter).await?;
        }
        Ok(())
    }
}

/// Declares a durable queue with its `x-` arguments.
pub(crate) async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> Result<(), BoxError> {
    let name = short("queue name", &spec.name)?;
    queue_declare(channel, name, queue_arguments(spec)?).await?;
    Ok(())
}

/// `queue.declare`, durable.
pub(crate) async fn queue_declare(
    channel: &Channel,
    name: ShortString,
    arguments: FieldTable,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// Declares a durable fanout exchange and binds the dead-letter queue to it.
pub(crate) async fn declare_dead_letter(
    channel: &Channel,
    dead_letter: &DeadLetter,
) -> Result<(), BoxError> {
    let exchange = short("exchange name", &dead_letter.exchange)?;
    let queue = short("queue name", &dead_letter.queue)?;
    exchange_bind(channel, exchange, queue).await?;
    Ok(())
}

/// `exchange.declare` (durable fanout), then `queue.bind` of `queue` to it.
pub(crate) async fn exchange_bind(
    channel: &Channel,
    exchange: ShortString,
    queue: ShortString,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue,
            exchange,
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// One live connection.
pub(crate) struct Session {
    /// Increases with every reconnect of the link.
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
    /// The publishing link's channel, in confirm mode; `None` on the
    /// consuming link, whose users open their own channels.
    pub(crate) channel: Option<Channel>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self
                .channel
                .as_ref()
                .is_none_or(|channel| channel.status().connected())
    }

    /// The confirm-mode channel of a publishing session.
    pub(crate) fn confirm_channel(&self) -> Result<&Channel, MqError> {
        self.channel.as_ref().ok_or(MqError::InvalidArgument(
            "publishing on a consuming link".to_owned(),
        ))
    }
}

/// What a link is for; it names the connection in the management UI and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Publishes with confirms; a memory alarm blocks it.
    Publish,
    /// Consumes, and runs declarations and queries, which an alarm does not
    /// block.
    Consume,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Consume => "consume",
        }
    }
}

/// A supervised connection.
pub(crate) struct Link {
    role: Role,
    url: AmqpUrl,
    reconnect: Backoff,
    declared: Arc<Declared>,
    /// The current session and the generation of the last one opened.
    state: AsyncMutex<(Option<Arc<Session>>, u64)>,
    closed: AtomicBool,
}

impl Link {
    pub(crate) fn new(
        role: Role,
        url: AmqpUrl,
        reconnect: Backoff,
        declared: Arc<Declared>,
    ) -> Self {
        Self {
            role,
            url,
            reconnect,
            declared,
            state: AsyncMutex::new((None, 0)),
            closed: AtomicBool::new(false),
        }
    }

    /// The current session, reconnecting first if it is dead (with the
    /// configured backoff and deadline).
    pub(crate) async fn session(&self) -> Result<Arc<Session>, MqError> {
        self.session_within(self.reconnect).await
    }

    /// The current session, reconnecting with `backoff` if it is dead.
    pub(crate) async fn session_within(&self, backoff: Backoff) -> Result<Arc<Session>, MqError> {
        let mut state = self.state.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        if let Some(session) = &state.0 {
            if session.healthy() {
                return Ok(session.clone());
            }
            tracing::warn!(link = self.role.name(), url = %self.url, generation = session.generation, "connection lost; reconnecting");
            retire(state.0.take());
        }
        let mut backoff = backoff.start();
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(MqError::Closed);
            }
            let generation = state.1 + 1;
            match self.open(generation).await {
                Ok(session) => {
                    tracing::info!(link = self.role.name(), url = %self.url, generation, "connected");
                    let session = Arc::new(session);
                    *state = (Some(session.clone()), generation);
                    return Ok(session);
                }
                Err(err) => {
                    tracing::warn!(link = self.role.name(), url = %self.url, attempt = backoff.attempts() + 1, error = %err, "cannot connect; retrying");
                    if backoff.wait().await.is_err() {
                        return Err(MqError::Unreachable {
                            url: self.url.to_string(),
                            attempts: backoff.attempts() + 1,
                            waited: backoff.elapsed(),
                            source: err,
                        });
                    }
                }
            }
        }
    }

    /// Connects, replays the topology, and opens the publishing channel.
    async fn open(&self, generation: u64) -> Result<Session, BoxError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("pretext-mq {}", self.role.name()).into());
        let connection = lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(self.url.expose().to_owned())
            .with_properties(properties)
            .with_tls_config(super::tls::tls_config()?)
            .connect()
            .await?;
        let ready = async {
            let admin = connection.create_channel().await?;
            self.declared.replay(&admin).await?;
            admin.close(200, "OK".into()).await?;
            let channel = match self.role {
                Role::Publish => {
                    let channel = connection.create_channel().await?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await?;
                    Some(channel)
                }
                Role::Consume => None,
            };
            Ok::<_, BoxError>(channel)
        };
        match ready.await {
            Ok(channel) => Ok(Session {
                generation,
                connection,
                channel,
            }),
            Err(err) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(err)
            }
        }
    }

    /// Retires the session of `generation` if it is still current, so the
    /// next [`session`](Self::session) reconnects: for callers that saw an
    /// operation fail on a connection that still looks alive.
    pub(crate) async fn retire(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.0.as_ref().is_some_and(|s| s.generation == generation) {
            tracing::debug!(link = self.role.name(), generation, "retiring session");
            retire(state.0.take());
        }
    }

    /// Closes the connection for good. Waits at most [`CLOSE_WAIT`] for the
    /// broker's close-ok: a service that is done must exit even when the
    /// handshake stalls (seen once in a few hundred runs: a channel already
    /// closing left `connection.close` waiting forever).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let closed = tokio::time::timeout(CLOSE_WAIT, async {
            let session = self.state.lock().await.0.take();
            if let Some(session) = session
                && session.connection.status().connected()
            {
                let _ = session.connection.close(200, "closing".into()).await;
            }
        })
        .await;
        if closed.is_err() {
            tracing::warn!(
                link = self.role.name(),
                wait_secs = CLOSE_WAIT.as_secs(),
                "the broker did not confirm the close in time; dropping the connection"
            );
        }
    }
}

/// Closes a replaced session's connection in the background (it is usually
/// dead already; if not, its channels must not linger).
fn retire(session: Option<Arc<Session>>) {
    let Some(session) = session else { return };
    if session.connection.status().connected() {
        tokio::spawn(async move {
            let _ = session.connection.close(200, "reconnecting".into()).await;
        });
    }
}

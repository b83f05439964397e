//! Confirmed publishing: one message at a time, or a window of unconfirmed messages, retried until the broker confirms them.
//!
//! A message is retried with the same `message_id`:
//! - after a nack (a full queue with `x-overflow: reject-publish`, or a
//!   broker-side failure), following the publish-retry backoff: this is how
//!   back-pressure reaches producers;
//! - after the connection is lost with the message unconfirmed, once the
//!   link has reconnected. The broker may have stored the first copy, so a
//!   consumer can see the message twice; consumers deduplicate by id.

use super::Inner;
use super::convert::{properties, short};
use crate::backoff::BackoffState;
use crate::error::MqError;
use crate::message::OutMessage;
use crate::transport::Publisher;
use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::{Confirmation, PublisherConfirm};
use std::collections::VecDeque;
use std::sync::Arc;

/// What became of one publish attempt.
enum Attempt {
    /// The broker has the message.
    Confirmed,
    /// The broker refused it; retry after a backoff.
    Nacked,
    /// The connection or channel died before the confirm; retry on a new one.
    Lost,
}

/// The attempt's outcome from the confirm. A returned message (mandatory
/// publish with no matching queue) is an error: retrying cannot help.
fn attempt(
    queue: &str,
    message: &OutMessage,
    confirm: lapin::Result<Confirmation>,
) -> Result<Attempt, MqError> {
    match confirm {
        Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => Err(MqError::Unroutable {
            queue: queue.to_owned(),
            message_id: message.message_id.clone(),
        }),
        Ok(Confirmation::Ack(None)) => Ok(Attempt::Confirmed),
        Ok(Confirmation::Nack(None)) => Ok(Attempt::Nacked),
        Ok(Confirmation::NotRequested) => Err(MqError::Broker {
            op: "publish",
            source: "publisher confirms are not enabled on the channel".into(),
        }),
        Err(err) => {
            tracing::debug!(%queue, message_id = %message.message_id, error = %err, "confirm lost");
            Ok(Attempt::Lost)
        }
    }
}

impl Inner {
    /// Sends one message on the current publishing session, reconnecting
    /// first if needed. Returns the session generation and the pending confirm.
    async fn send_once(
        &self,
        queue: &str,
        message: &OutMessage,
    ) -> Result<(u64, PublisherConfirm), MqError> {
        let routing_key = short("queue name", queue)?;
        let props = properties(message, &self.user)?;
        let mut failures = self.config.reconnect.start();
        loop {
            let session = self.publish.session().await?;
            let sent = session
                .confirm_channel()?
                .basic_publish(
                    "".into(),
                    routing_key.clone(),
                    // Mandatory: a message to a missing queue comes back
                    // instead of vanishing.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &message.body,
                    props.clone(),
                )
                .await;
            match sent {
                Ok(confirm) => return Ok((session.generation, confirm)),
                Err(err) => {
                    tracing::debug!(%queue, error = %err, "publish failed; reconnecting");
                    self.publish.retire(session.generation).await;
                    // The link backs off between failed connects; this backs
                    // off between connects that succeed but cannot publish.
                    if failures.wait().await.is_err() {
                        return Err(MqError::ConnectionLost {
                            op: "publish",
                            source: Box::new(err),
                        });
                    }
                }
            }
        }
    }

    /// Publishes one message and waits for its confirm, retrying as the
    /// module doc says. Holds one of the transport's in-flight permits.
    pub(crate) async fn publish_confirmed(
        &self,
        queue: &str,
        message: &OutMessage,
    ) -> Result<(), MqError> {
        message.validate()?;
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| MqError::Closed)?;
        let mut nacks = self.config.publish_retry.start();
        loop {
            let (generation, confirm) = self.send_once(queue, message).await?;
            match attempt(queue, message, confirm.await)? {
                Attempt::Confirmed => return Ok(()),
                Attempt::Nacked => self.wait_after_nack(&mut nacks, queue, message).await?,
                Attempt::Lost => self.publish.retire(generation).await,
            }
        }
    }

    async fn wait_after_nack(
        &self,
        nacks: &mut BackoffState,
        queue: &str,
        message: &OutMessage,
    ) -> Result<(), MqError> {
        if nacks.attempts() == 0 {
            tracing::debug!(%queue, message_id = %message.message_id, "broker nacked (queue full?); retrying with backoff");
        }
        metrics::counter!(pretext_ops::names::PUBLISH_NACKS).increment(1);
        nacks.wait().await.map_err(|_| MqError::Nacked {
            queue: queue.to_owned(),
            message_id: message.message_id.clone(),
            waited: nacks.elapsed(),
        })
    }
}

/// One message sent and not yet confirmed.
struct InFlight {
    message: OutMessage,
    /// The session it was sent on.
    generation: u64,
    confirm: PublisherConfirm,
}

/// A [`Publisher`] keeping up to `max_in_flight` messages unconfirmed.
pub(crate) struct RabbitPublisher {
    inner: Arc<Inner>,
    queue: String,
    /// Unconfirmed messages, oldest first.
    window: VecDeque<InFlight>,
    /// Backoff after nacks, reset by every confirm.
    nacks: BackoffState,
}

impl RabbitPublisher {
    pub(crate) fn new(inner: Arc<Inner>, queue: String) -> Self {
        let nacks = inner.config.publish_retry.start();
        Self {
            inner,
            queue,
            window: VecDeque::new(),
            nacks,
        }
    }

    /// Waits for the oldest message's confirm, retrying it until confirmed.
    /// On an error that message leaves the window (the error names it).
    async fn settle_oldest(&mut self) -> Result<(), MqError> {
        loop {
            let Some(oldest) = self.window.front_mut() else {
                return Ok(());
            };
            let confirm = (&mut oldest.confirm).await;
            let outcome = attempt(&self.queue, &oldest.message, confirm);
            match outcome {
                Ok(Attempt::Confirmed) => {
                    self.window.pop_front();
                    self.nacks.reset();
                    return Ok(());
                }
                Ok(Attempt::Nacked) => {
                    let message = oldest.message.clone();
                    if let Err(err) = self
                        .inner
                        .wait_after_nack(&mut self.nacks, &self.queue, &message)
                        .await
                    {
                        self.window.pop_front();
                        return Err(err);
                    }
                    let (generation, confirm) =
                        match self.inner.send_once(&self.queue, &message).await {
                            Ok(sent) => sent,
                            Err(err) => {
                                self.window.pop_front();
                                return Err(err);
                            }
                        };
                    if let Some(oldest) = self.window.front_mut() {
                        oldest.generation = generation;
                        oldest.confirm = confirm;
                    }
                }
                Ok(Attempt::Lost) => {
                    let generation = oldest.generation;
                    self.inner.publish.retire(generation).await;
                    self.resend_stale().await?;
                }
                Err(err) => {
                    self.window.pop_front();
                    return Err(err);
                }
            }
        }
    }

    /// Sends again every message of the window that was sent on an older
    /// session than the current one: their confirms died with it.
    async fn resend_stale(&mut self) -> Result<(), MqError> {
        let current = self.inner.publish.session().await?.generation;
        let stale = self
            .window
            .iter()
            .filter(|f| f.generation < current)
            .count();
        tracing::info!(queue = %self.queue, stale, generation = current, "resending unconfirmed messages after reconnect");
        for index in 0..self.window.len() {
            if self.window[index].generation < current {
                let message = self.window[index].message.clone();
                let (generation, confirm) = self.inner.send_once(&self.queue, &message).await?;
                self.window[index].generation = generation;
                self.window[index].confirm = confirm;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn send(&mut self, message: OutMessage) -> Result<(), MqError> {
        message.validate()?;
        while self.window.len() >= self.inner.config.max_in_flight.max(1) {
            self.settle_oldest().await?;
        }
        let (generation, confirm) = self.inner.send_once(&self.queue, &message).await?;
        self.window.push_back(InFlight {
            message,
            generation,
            confirm,
        });
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), MqError> {
        while !self.window.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    fn unconfirmed(&self) -> usize {
        self.window.len()
    }
}

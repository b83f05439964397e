//! Consuming: a task per consumer that subscribes with manual acks and a prefetch, and subscribes again after its channel or connection dies.
//!
//! When the channel dies, the broker returns its unacked deliveries to the
//! queue and redelivers them (`redelivered` set) to whichever consumer
//! subscribes next; acking one of the old deliveries then fails with
//! [`AckError::ChannelClosed`]. A stream consumer resumes after the last
//! offset it received instead of starting over from the first.

use super::Inner;
use super::convert::{self, Failure, classify, short};
use crate::error::{AckError, MqError};
use crate::message::{Delivery, OutMessage, Settle, header};
use crate::topology::{QueueKind, QueueSpec};
use crate::transport::Consumer;
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, Channel};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One subscription: a channel and the lapin consumer on it.
struct Subscription {
    /// The link session the channel belongs to.
    generation: u64,
    channel: Channel,
    consumer: lapin::Consumer,
}

/// Where a stream subscription starts.
#[derive(Clone, Copy)]
enum StreamStart {
    First,
    Offset(u64),
}

/// Why subscribing failed.
enum SubscribeError {
    /// Retrying cannot help (no such queue, transport closed, broker
    /// unreachable past the deadline).
    Fatal(MqError),
    /// The connection or channel failed; retry.
    Retry(MqError),
}

/// Opens a channel with the prefetch and subscribes with manual acks.
async fn subscribe(
    inner: &Inner,
    spec: &QueueSpec,
    prefetch: u16,
    start: StreamStart,
) -> Result<Subscription, SubscribeError> {
    let session = inner
        .consume
        .session()
        .await
        .map_err(SubscribeError::Fatal)?;
    let generation = session.generation;
    let retry = |op, err: lapin::Error| match classify(&err) {
        Failure::NotFound => SubscribeError::Fatal(MqError::QueueNotFound {
            queue: spec.name.clone(),
        }),
        _ => SubscribeError::Retry(convert::mq_error(op, &spec.name, err)),
    };
    let channel = session
        .connection
        .create_channel()
        .await
        .map_err(|e| retry("consume", e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| retry("basic.qos", e))?;
    let mut args = FieldTable::default();
    if spec.kind == QueueKind::Stream {
        let offset = match start {
            StreamStart::First => AMQPValue::LongString(LongString::from("first")),
            StreamStart::Offset(next) => {
                AMQPValue::LongLongInt(i64::try_from(next).unwrap_or(i64::MAX))
            }
        };
        args.insert("x-stream-offset".into(), offset);
    }
    let queue = short("queue name", &spec.name).map_err(SubscribeError::Fatal)?;
    let consumer = channel
        .basic_consume(queue, "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(|e| retry("basic.consume", e))?;
    Ok(Subscription {
        generation,
        channel,
        consumer,
    })
}

/// Subscribes, retrying connection failures with the reconnect backoff.
async fn subscribe_retrying(
    inner: &Inner,
    spec: &QueueSpec,
    prefetch: u16,
    start: StreamStart,
) -> Result<Subscription, MqError> {
    let mut backoff = inner.config.reconnect.start();
    loop {
        match subscribe(inner, spec, prefetch, start).await {
            Ok(subscription) => return Ok(subscription),
            Err(SubscribeError::Fatal(err)) => return Err(err),
            Err(SubscribeError::Retry(err)) => {
                tracing::warn!(queue = %spec.name, error = %err, "cannot subscribe; retrying");
                if backoff.wait().await.is_err() {
                    return Err(err);
                }
            }
        }
    }
}

/// A [`Consumer`] fed by a subscription task.
pub(crate) struct RabbitConsumer {
    queue: String,
    deliveries: mpsc::Receiver<Result<Delivery, MqError>>,
    /// Tells the task to cancel the subscription; taken by the first
    /// `cancel`.
    cancel: Option<oneshot::Sender<()>>,
    /// Aborted on drop; that drops the channel, and lapin closes it, so the
    /// broker requeues the unacked deliveries.
    task: JoinHandle<()>,
}

impl RabbitConsumer {
    /// Subscribes (failing fast if the queue does not exist), then keeps the
    /// subscription alive in a task.
    pub(crate) async fn start(
        inner: Arc<Inner>,
        spec: QueueSpec,
        prefetch: u16,
    ) -> Result<Self, MqError> {
        let first = subscribe_retrying(&inner, &spec, prefetch, StreamStart::First).await?;
        // The task waits on the channel while the caller holds a prefetch
        // worth of deliveries; a little room keeps the broker's pushes flowing.
        let (tx, rx) = mpsc::channel(usize::from(prefetch).max(1));
        let (cancel, cancelled) = oneshot::channel();
        let queue = spec.name.clone();
        let task = tokio::spawn(run(inner, spec, prefetch, first, tx, cancelled));
        Ok(Self {
            queue,
            deliveries: rx,
            cancel: Some(cancel),
            task,
        })
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, MqError> {
        self.deliveries.recv().await.transpose()
    }

    async fn cancel(&mut self) -> Result<(), MqError> {
        if let Some(cancel) = self.cancel.take() {
            // The task may have ended already (queue deleted, broker gone):
            // then there is nothing left to cancel.
            let _ = cancel.send(());
        }
        Ok(())
    }

    fn queue(&self) -> &str {
        &self.queue
    }
}

/// Forwards deliveries, subscribing again whenever the subscription dies,
/// until the consumer is dropped, the broker cancels it (queue deleted), the
/// broker stays unreachable, or the consumer is cancelled.
///
/// On `cancelled`, it sends `basic.cancel` and forwards what arrives until
/// lapin ends the subscription on `basic.cancel-ok` (the broker sends every
/// delivery of the subscription before it). Then `next` ends, while the
/// channel stays open, for settling, until the consumer is dropped.
async fn run(
    inner: Arc<Inner>,
    spec: QueueSpec,
    prefetch: u16,
    mut subscription: Subscription,
    tx: mpsc::Sender<Result<Delivery, MqError>>,
    mut cancelled: oneshot::Receiver<()>,
) {
    let is_stream = spec.kind == QueueKind::Stream;
    let dead_queue = spec.dead_letter.as_ref().map(|dl| dl.queue.clone());
    let mut next_offset = None;
    let mut cancelling = false;
    loop {
        loop {
            let item = tokio::select! {
                // A dropped sender means the consumer is gone, and this task
                // is being aborted: either way, stop subscribing.
                _ = &mut cancelled, if !cancelling => {
                    cancelling = true;
                    send_cancel(&subscription, &spec.name);
                    continue;
                }
                item = subscription.consumer.next() => item,
            };
            let Some(item) = item else { break };
            let delivery = match item {
                Ok(delivery) => delivery,
                Err(err) => {
                    tracing::debug!(queue = %spec.name, error = %err, "subscription failed");
                    break;
                }
            };
            let user_id = convert::user_id(&delivery.properties);
            let message = convert::received(&delivery.properties, delivery.data);
            if is_stream
                && let Some(offset) = message
                    .headers
                    .get(header::STREAM_OFFSET)
                    .and_then(|v| v.as_i64())
            {
                next_offset = u64::try_from(offset).ok().map(|o| o + 1);
            }
            let settle = RabbitSettle {
                inner: inner.clone(),
                acker: delivery.acker,
                dead_queue: dead_queue.clone(),
                queue: spec.name.clone(),
                is_stream,
            };
            let delivery = Delivery::new(
                spec.name.clone(),
                message,
                delivery.redelivered,
                Box::new(settle),
            )
            .with_user_id(user_id);
            if tx.send(Ok(delivery)).await.is_err() {
                return;
            }
        }
        if inner.is_closed() {
            return;
        }
        if cancelling {
            // Everything sent before the cancel was forwarded. Settling needs
            // the channel, which closes (returning what is unsettled) when
            // the consumer drops and aborts this task.
            drop(tx);
            std::future::pending::<()>().await;
            return;
        }
        if subscription.channel.status().connected() {
            // The stream ended on a live channel: the broker cancelled the
            // consumer, because the queue was deleted.
            tracing::info!(queue = %spec.name, "consumer cancelled by the broker");
            let _ = subscription.channel.close(200, "cancelled".into()).await;
            return;
        }
        tracing::warn!(queue = %spec.name, generation = subscription.generation, "consumer channel closed; subscribing again");
        let start = next_offset.map_or(StreamStart::First, StreamStart::Offset);
        subscription = match subscribe_retrying(&inner, &spec, prefetch, start).await {
            Ok(subscription) => subscription,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
    }
}

/// Sends `basic.cancel` for the subscription's consumer without waiting for
/// the reply, so that deliveries keep being read meanwhile. A failure means
/// the channel is dying, which ends the subscription anyway.
fn send_cancel(subscription: &Subscription, queue: &str) {
    let channel = subscription.channel.clone();
    let tag = subscription.consumer.tag();
    let queue = queue.to_owned();
    tokio::spawn(async move {
        if let Err(err) = channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            tracing::debug!(%queue, error = %err, "basic.cancel failed");
        }
    });
}

/// Settles a delivery on the channel it came on.
struct RabbitSettle {
    inner: Arc<Inner>,
    acker: Acker,
    dead_queue: Option<String>,
    queue: String,
    is_stream: bool,
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(&self) -> Result<(), AckError> {
        convert::settled(self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn nack_requeue(&self) -> Result<(), AckError> {
        if self.is_stream {
            // A stream keeps every message; settling only returns credit.
            return self.ack().await;
        }
        convert::settled(
            self.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await,
        )
    }

    async fn reject(&self, copy: OutMessage) -> Result<(), AckError> {
        let Some(dead_queue) = &self.dead_queue else {
            return Err(AckError::NoDeadLetterQueue {
                queue: self.queue.clone(),
            });
        };
        // Confirmed in the dead queue before the original goes: never lost.
        self.inner
            .publish_confirmed(dead_queue, &copy)
            .await
            .map_err(|err| AckError::DeadLetter(Box::new(err)))?;
        self.ack().await
    }
}

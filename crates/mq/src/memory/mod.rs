//! [`MemoryTransport`]: the in-process transport, with RabbitMQ's delivery semantics.
//!
//! What matches the broker: manual acks with a prefetch bound per consumer;
//! a nack with requeue, or a dropped consumer, returns messages (served before
//! new ones) with `redelivered` set and `x-delivery-count` raised; past the
//! queue's delivery limit a message goes through its dead-letter exchange with
//! `x-first-death-reason: delivery_limit`; `reject` stores a copy with the
//! reason in the dead-letter queue; a bounded queue makes publishers wait until
//! consumers drain it; a stream gives every consumer every message from the
//! first one. Publishing returns once the message is stored: there is nothing
//! to confirm and no connection to lose.
//!
//! Differences: consumers pull when they call `next` rather than having up to
//! `prefetch` messages pushed ahead; a full queue refuses the very next
//! message, where RabbitMQ tells publishing channels asynchronously and so
//! takes up to a publisher's unconfirmed window more, and accepts again as
//! soon as it is under the bound (RabbitMQ: under 80% of it); stream
//! retention (`max_length_bytes` of a stream) is ignored.

mod state;

use crate::error::{AckError, MqError};
use crate::message::{Delivery, OutMessage, Settle};
use crate::topology::{DeadLetter, QueueSpec};
use crate::transport::{ConsumeOptions, Consumer, Publisher, Transport};
use async_trait::async_trait;
use state::{ConsumerKey, Settlement, State, Taken, Target};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::Notify;

/// The in-process transport. Clones share the same queues, so one instance
/// can serve a producer task and trainer tasks of one process.
#[derive(Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

struct Shared {
    /// For `Debug` and logs.
    name: String,
    state: Mutex<State>,
    /// Woken on every change, so that waiting publishers (full queue) and
    /// consumers (empty queue, used-up prefetch) look again.
    changed: Notify,
}

impl MemoryTransport {
    /// A private transport with no queues.
    pub fn new() -> Self {
        Self::with_name("private")
    }

    fn with_name(name: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }

    /// The process-wide transport of this name (what `memory://NAME` names),
    /// created on first use, and again after it was closed.
    pub fn named(name: &str) -> Self {
        static REGISTRY: OnceLock<Mutex<HashMap<String, MemoryTransport>>> = OnceLock::new();
        let registry = REGISTRY.get_or_init(Default::default);
        let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
        match registry.get(name) {
            Some(transport) if !transport.lock().closed => transport.clone(),
            _ => {
                let transport = Self::with_name(name);
                registry.insert(name.to_owned(), transport.clone());
                transport
            }
        }
    }

    /// The state. A panic while holding the lock cannot leave it half
    /// updated in a way later calls trip on, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the state, waking every waiter afterwards.
    fn update<T>(&self, op: impl FnOnce(&mut State) -> T) -> T {
        let result = op(&mut self.lock());
        self.shared.changed.notify_waiters();
        result
    }

    /// Retries `op` after every change until it returns `Some`. `op` must
    /// leave the state unchanged when it returns `None`: only `Some` wakes
    /// the other waiters (waking on `None` too would wake this very loop).
    async fn wait_for<T>(&self, mut op: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            // Register before looking, so that a change between the look and
            // the wait is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let result = op(&mut self.lock());
            if let Some(result) = result {
                self.shared.changed.notify_waiters();
                return result;
            }
            changed.await;
        }
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryTransport")
            .field("name", &self.shared.name)
            .field("queues", &state.queue_count())
            .field("closed", &state.closed)
            .finish()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), MqError> {
        self.update(|state| state.declare_queue(spec))
    }

    async fn declare_dead_letter(&self, dead_letter: &DeadLetter) -> Result<(), MqError> {
        self.update(|state| state.declare_dead_letter(dead_letter))
    }

    async fn publish(&self, queue: &str, message: OutMessage) -> Result<(), MqError> {
        message.validate()?;
        let mut pending = Some(message);
        self.wait_for(|state| {
            let message = pending.take()?;
            match state.publish(queue, message) {
                Ok(None) => Some(Ok(())),
                Ok(Some(refused)) => {
                    // Full: keep the message and wait for consumers.
                    pending = Some(refused);
                    None
                }
                Err(err) => Some(Err(err)),
            }
        })
        .await
    }

    async fn publisher(&self, queue: &str) -> Result<Box<dyn Publisher>, MqError> {
        if self.lock().spec(queue).is_none() {
            return Err(MqError::QueueNotFound {
                queue: queue.to_owned(),
            });
        }
        Ok(Box::new(MemoryPublisher {
            transport: self.clone(),
            queue: queue.to_owned(),
        }))
    }

    async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, MqError> {
        if options.prefetch == 0 {
            return Err(MqError::InvalidArgument(
                "prefetch must be at least 1".to_owned(),
            ));
        }
        let key = self.update(|state| state.add_consumer(queue, options.prefetch))?;
        Ok(Box::new(MemoryConsumer {
            transport: self.clone(),
            key,
            cancelled: false,
        }))
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, MqError> {
        self.lock().depth(queue)
    }

    async fn purge(&self, queue: &str) -> Result<u64, MqError> {
        self.update(|state| state.purge(queue))
    }

    async fn delete_queue(&self, queue: &str) -> Result<(), MqError> {
        self.update(|state| state.delete_queue(queue))
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<(), MqError> {
        self.update(|state| state.delete_exchange(exchange))
    }

    async fn close(&self) -> Result<(), MqError> {
        self.update(|state| state.closed = true);
        Ok(())
    }
}

/// Publishing to memory is confirmed at once, so there is no window.
struct MemoryPublisher {
    transport: MemoryTransport,
    queue: String,
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn send(&mut self, message: OutMessage) -> Result<(), MqError> {
        self.transport.publish(&self.queue, message).await
    }

    async fn flush(&mut self) -> Result<(), MqError> {
        Ok(())
    }

    fn unconfirmed(&self) -> usize {
        0
    }
}

struct MemoryConsumer {
    transport: MemoryTransport,
    key: ConsumerKey,
    /// Set by `cancel`: nothing more is taken. Consumers here pull, so
    /// nothing was sent ahead that a drain would still have to hand out.
    cancelled: bool,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, MqError> {
        if self.cancelled {
            return Ok(None);
        }
        let taken = self
            .transport
            .wait_for(|state| match state.take(&self.key) {
                Taken::Wait => None,
                taken => Some(taken),
            })
            .await;
        match taken {
            Taken::Delivery {
                message,
                redelivered,
                target,
            } => Ok(Some(Delivery::new(
                self.key.queue.clone(),
                message,
                redelivered,
                Box::new(MemorySettle {
                    transport: self.transport.clone(),
                    target,
                }),
            ))),
            Taken::Wait | Taken::Ended => Ok(None),
        }
    }

    async fn cancel(&mut self) -> Result<(), MqError> {
        self.cancelled = true;
        Ok(())
    }

    fn queue(&self) -> &str {
        &self.key.queue
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.transport
            .update(|state| state.remove_consumer(&self.key));
    }
}

struct MemorySettle {
    transport: MemoryTransport,
    target: Target,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> Result<(), AckError> {
        self.transport
            .update(|state| state.settle(&self.target, Settlement::Ack))
    }

    async fn nack_requeue(&self) -> Result<(), AckError> {
        self.transport
            .update(|state| state.settle(&self.target, Settlement::Requeue))
    }

    async fn reject(&self, copy: OutMessage) -> Result<(), AckError> {
        self.transport
            .update(|state| state.settle(&self.target, Settlement::Reject(copy)))
    }
}

#[cfg(test)]
mod tests;

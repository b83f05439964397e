//! The memory transport's queues as plain data: every operation is synchronous and runs under one lock.
//!
//! The rules follow RabbitMQ's quorum queues and streams: returned messages
//! are served before new ones, a message's return count travels as
//! `x-delivery-count`, a message returned more than `x-delivery-limit` times
//! is dead-lettered through the queue's dead-letter exchange, and a bounded
//! queue refuses publishes (the caller waits) while its ready bodies exceed
//! the bound.

use crate::error::{AckError, MqError};
use crate::message::{DELIVERY_LIMIT_REASON, HeaderValue, OutMessage, header};
use crate::topology::{DeadLetter, QueueKind, QueueSpec};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Every queue and exchange of one memory transport.
#[derive(Default)]
pub(super) struct State {
    queues: HashMap<String, Queue>,
    /// Dead-letter exchanges: name → bound queues (fanout).
    exchanges: HashMap<String, BTreeSet<String>>,
    /// Source of consumer ids and queue incarnations.
    next_id: u64,
    /// Set by `close`: every operation fails, consumers end.
    pub(super) closed: bool,
}

/// One queue. `incarnation` tells a queue from an earlier one of the same
/// name, so that settling a delivery of a deleted queue cannot touch a new one.
struct Queue {
    spec: QueueSpec,
    incarnation: u64,
    body: Body,
}

enum Body {
    Work(WorkQueue),
    Stream(StreamLog),
}

/// A quorum queue.
#[derive(Default)]
struct WorkQueue {
    /// Messages returned by nacks or dropped consumers, served first.
    returned: VecDeque<Stored>,
    /// Messages never delivered, in publish order.
    ready: VecDeque<Stored>,
    /// Body bytes of `returned` and `ready`: what the length bound counts.
    ready_bytes: u64,
    /// Delivered, not yet settled; keyed by delivery tag.
    unacked: HashMap<u64, Unacked>,
    next_tag: u64,
    /// Consumer id → its prefetch and unacked count.
    consumers: HashMap<u64, Slot>,
}

struct Stored {
    message: OutMessage,
    /// Times returned to the queue (`x-delivery-count`).
    returns: u32,
    /// Delivered at least once (the `redelivered` flag of later deliveries).
    delivered: bool,
}

struct Unacked {
    consumer: u64,
    stored: Stored,
}

struct Slot {
    prefetch: u16,
    unacked: u32,
}

/// A stream: an append-only log every consumer reads from the start.
#[derive(Default)]
struct StreamLog {
    entries: Vec<OutMessage>,
    /// Consumer id → its read position and unacked offsets.
    cursors: HashMap<u64, Cursor>,
}

struct Cursor {
    prefetch: u16,
    next: usize,
    unacked: HashSet<u64>,
}

/// Identifies one delivery for settling.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) queue: String,
    pub(super) incarnation: u64,
    pub(super) consumer: u64,
    pub(super) tag: u64,
}

/// A registered consumer.
#[derive(Clone, Debug)]
pub(super) struct ConsumerKey {
    pub(super) queue: String,
    pub(super) incarnation: u64,
    pub(super) consumer: u64,
}

/// What `take` found.
pub(super) enum Taken {
    Delivery {
        message: OutMessage,
        redelivered: bool,
        target: Target,
    },
    /// Nothing to deliver now, or the prefetch is used up.
    Wait,
    /// The queue was deleted or the transport closed.
    Ended,
}

/// How a delivery is settled.
pub(super) enum Settlement {
    Ack,
    Requeue,
    /// Store this copy in the dead-letter queue, then ack.
    Reject(OutMessage),
}

impl State {
    fn check_open(&self) -> Result<(), MqError> {
        if self.closed {
            Err(MqError::Closed)
        } else {
            Ok(())
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn declare_queue(&mut self, spec: &QueueSpec) -> Result<(), MqError> {
        self.check_open()?;
        spec.validate()?;
        if let Some(existing) = self.queues.get(&spec.name) {
            return if existing.spec == *spec {
                Ok(())
            } else {
                Err(MqError::TopologyMismatch {
                    name: spec.name.clone(),
                    detail: format!("declared as {:?}, now as {spec:?}", existing.spec),
                })
            };
        }
        let body = match spec.kind {
            QueueKind::Quorum => Body::Work(WorkQueue::default()),
            QueueKind::Stream => Body::Stream(StreamLog::default()),
        };
        let incarnation = self.fresh_id();
        self.queues.insert(
            spec.name.clone(),
            Queue {
                spec: spec.clone(),
                incarnation,
                body,
            },
        );
        Ok(())
    }

    pub(super) fn declare_dead_letter(&mut self, dead_letter: &DeadLetter) -> Result<(), MqError> {
        self.check_open()?;
        crate::topology::validate_name(&dead_letter.exchange)?;
        if !self.queues.contains_key(&dead_letter.queue) {
            return Err(MqError::QueueNotFound {
                queue: dead_letter.queue.clone(),
            });
        }
        self.exchanges
            .entry(dead_letter.exchange.clone())
            .or_default()
            .insert(dead_letter.queue.clone());
        Ok(())
    }

    /// Stores the message, or hands it back when a bounded queue is full.
    pub(super) fn publish(
        &mut self,
        queue: &str,
        message: OutMessage,
    ) -> Result<Option<OutMessage>, MqError> {
        self.check_open()?;
        let Some(q) = self.queues.get_mut(queue) else {
            return Err(MqError::Unroutable {
                queue: queue.to_owned(),
                message_id: message.message_id,
            });
        };
        match &mut q.body {
            Body::Work(work) => {
                // As in RabbitMQ, the bound is checked before the message is
                // added: a queue at or under it takes one more, so a lone
                // message larger than the bound cannot block forever.
                if q.spec
                    .max_length_bytes
                    .is_some_and(|max| work.ready_bytes > max)
                {
                    return Ok(Some(message));
                }
                work.ready_bytes += message.body.len() as u64;
                work.ready.push_back(Stored {
                    message,
                    returns: 0,
                    delivered: false,
                });
            }
            Body::Stream(log) => log.entries.push(message),
        }
        Ok(None)
    }

    pub(super) fn add_consumer(
        &mut self,
        queue: &str,
        prefetch: u16,
    ) -> Result<ConsumerKey, MqError> {
        self.check_open()?;
        let consumer = self.fresh_id();
        let Some(q) = self.queues.get_mut(queue) else {
            return Err(MqError::QueueNotFound {
                queue: queue.to_owned(),
            });
        };
        match &mut q.body {
            Body::Work(work) => {
                work.consumers.insert(
                    consumer,
                    Slot {
                        prefetch,
                        unacked: 0,
                    },
                );
            }
            Body::Stream(log) => {
                log.cursors.insert(
                    consumer,
                    Cursor {
                        prefetch,
                        next: 0,
                        unacked: HashSet::new(),
                    },
                );
            }
        }
        Ok(ConsumerKey {
            queue: queue.to_owned(),
            incarnation: q.incarnation,
            consumer,
        })
    }

    fn queue_of(&mut self, queue: &str, incarnation: u64) -> Option<&mut Queue> {
        self.queues
            .get_mut(queue)
            .filter(|q| q.incarnation == incarnation)
    }

    pub(super) fn take(&mut self, key: &ConsumerKey) -> Taken {
        if self.closed {
            return Taken::Ended;
        }
        let Some(q) = self.queue_of(&key.queue, key.incarnation) else {
            return Taken::Ended;
        };
        let target = |tag| Target {
            queue: key.queue.clone(),
            incarnation: key.incarnation,
            consumer: key.consumer,
            tag,
        };
        match &mut q.body {
            Body::Work(work) => {
                let Some(slot) = work.consumers.get_mut(&key.consumer) else {
                    return Taken::Ended;
                };
                if slot.unacked >= u32::from(slot.prefetch) {
                    return Taken::Wait;
                }
                let Some(mut stored) = work.returned.pop_front().or_else(|| work.ready.pop_front())
                else {
                    return Taken::Wait;
                };
                slot.unacked += 1;
                work.ready_bytes -= stored.message.body.len() as u64;
                let redelivered = stored.delivered;
                stored.delivered = true;
                let mut message = stored.message.clone();
                if stored.returns > 0 {
                    message.headers.insert(
                        header::DELIVERY_COUNT.to_owned(),
                        HeaderValue::I64(i64::from(stored.returns)),
                    );
                }
                let tag = work.next_tag;
                work.next_tag += 1;
                work.unacked.insert(
                    tag,
                    Unacked {
                        consumer: key.consumer,
                        stored,
                    },
                );
                Taken::Delivery {
                    message,
                    redelivered,
                    target: target(tag),
                }
            }
            Body::Stream(log) => {
                let Some(cursor) = log.cursors.get_mut(&key.consumer) else {
                    return Taken::Ended;
                };
                if cursor.unacked.len() >= usize::from(cursor.prefetch) {
                    return Taken::Wait;
                }
                let Some(entry) = log.entries.get(cursor.next) else {
                    return Taken::Wait;
                };
                let offset = cursor.next as u64;
                cursor.next += 1;
                cursor.unacked.insert(offset);
                let mut message = entry.clone();
                message.headers.insert(
                    header::STREAM_OFFSET.to_owned(),
                    HeaderValue::I64(offset as i64),
                );
                Taken::Delivery {
                    message,
                    redelivered: false,
                    target: target(offset),
                }
            }
        }
    }

    pub(super) fn settle(&mut self, target: &Target, how: Settlement) -> Result<(), AckError> {
        let Some(q) = self.queue_of(&target.queue, target.incarnation) else {
            return Err(AckError::ChannelClosed);
        };
        let spec = q.spec.clone();
        let stored = match &mut q.body {
            Body::Work(work) => {
                let owned = work
                    .unacked
                    .get(&target.tag)
                    .is_some_and(|u| u.consumer == target.consumer);
                if !owned {
                    return Err(AckError::ChannelClosed);
                }
                if matches!(how, Settlement::Reject(_)) {
                    let dead = spec.dead_letter.as_ref().map(|dl| dl.queue.as_str());
                    if !dead.is_some_and(|dead| self.queues.contains_key(dead)) {
                        return Err(AckError::NoDeadLetterQueue { queue: spec.name });
                    }
                }
                // Re-borrow: the dead-letter check above needed all queues.
                let Some(Queue {
                    body: Body::Work(work),
                    ..
                }) = self.queues.get_mut(&target.queue)
                else {
                    return Err(AckError::ChannelClosed);
                };
                let Some(unacked) = work.unacked.remove(&target.tag) else {
                    return Err(AckError::ChannelClosed);
                };
                if let Some(slot) = work.consumers.get_mut(&target.consumer) {
                    slot.unacked -= 1;
                }
                unacked.stored
            }
            Body::Stream(log) => {
                let Some(cursor) = log.cursors.get_mut(&target.consumer) else {
                    return Err(AckError::ChannelClosed);
                };
                if matches!(how, Settlement::Reject(_)) {
                    return Err(AckError::NoDeadLetterQueue { queue: spec.name });
                }
                // Acks and nacks alike only release the prefetch slot: a
                // stream keeps every message.
                return if cursor.unacked.remove(&target.tag) {
                    Ok(())
                } else {
                    Err(AckError::ChannelClosed)
                };
            }
        };
        match how {
            Settlement::Ack => {}
            Settlement::Requeue => self.return_message(&spec, stored),
            Settlement::Reject(copy) => {
                if let Some(dl) = &spec.dead_letter {
                    self.enqueue_dead(&dl.queue, copy);
                }
            }
        }
        Ok(())
    }

    /// Puts a returned message back, or dead-letters it past the delivery limit.
    fn return_message(&mut self, spec: &QueueSpec, mut stored: Stored) {
        stored.returns += 1;
        if spec
            .delivery_limit
            .is_some_and(|limit| stored.returns > limit)
        {
            self.dead_letter_by_broker(spec, stored.message);
            return;
        }
        if let Some(Queue {
            body: Body::Work(work),
            ..
        }) = self.queues.get_mut(&spec.name)
        {
            work.ready_bytes += stored.message.body.len() as u64;
            work.returned.push_back(stored);
        }
    }

    /// What the broker does past `x-delivery-limit`: route the message through
    /// the dead-letter exchange, recording why. Without a bound queue the
    /// message is dropped, as the broker would.
    fn dead_letter_by_broker(&mut self, spec: &QueueSpec, mut message: OutMessage) {
        let targets: Vec<String> = spec
            .dead_letter
            .as_ref()
            .and_then(|dl| self.exchanges.get(&dl.exchange))
            .map(|queues| queues.iter().cloned().collect())
            .unwrap_or_default();
        if targets.is_empty() {
            tracing::warn!(
                queue = %spec.name,
                message_id = %message.message_id,
                "delivery limit reached and no dead-letter queue bound; message dropped"
            );
            return;
        }
        message.headers.insert(
            header::FIRST_DEATH_REASON.to_owned(),
            DELIVERY_LIMIT_REASON.into(),
        );
        message.headers.insert(
            header::FIRST_DEATH_QUEUE.to_owned(),
            spec.name.as_str().into(),
        );
        for queue in targets {
            self.enqueue_dead(&queue, message.clone());
        }
    }

    /// Appends to a dead-letter queue, ignoring any bound: dead letters are
    /// never refused.
    fn enqueue_dead(&mut self, queue: &str, message: OutMessage) {
        match self.queues.get_mut(queue).map(|q| &mut q.body) {
            Some(Body::Work(work)) => {
                work.ready_bytes += message.body.len() as u64;
                work.ready.push_back(Stored {
                    message,
                    returns: 0,
                    delivered: false,
                });
            }
            Some(Body::Stream(log)) => log.entries.push(message),
            None => tracing::warn!(%queue, "dead-letter queue vanished; message dropped"),
        }
    }

    /// A consumer went away: its unacked messages return to the queue, in
    /// delivery order, as on a closed channel.
    pub(super) fn remove_consumer(&mut self, key: &ConsumerKey) {
        let Some(q) = self.queue_of(&key.queue, key.incarnation) else {
            return;
        };
        let spec = q.spec.clone();
        let returned = match &mut q.body {
            Body::Work(work) => {
                work.consumers.remove(&key.consumer);
                let mut tags: Vec<u64> = work
                    .unacked
                    .iter()
                    .filter(|(_, u)| u.consumer == key.consumer)
                    .map(|(tag, _)| *tag)
                    .collect();
                tags.sort_unstable();
                tags.into_iter()
                    .filter_map(|tag| work.unacked.remove(&tag))
                    .map(|u| u.stored)
                    .collect()
            }
            Body::Stream(log) => {
                log.cursors.remove(&key.consumer);
                Vec::new()
            }
        };
        for stored in returned {
            self.return_message(&spec, stored);
        }
    }

    pub(super) fn depth(&self, queue: &str) -> Result<u64, MqError> {
        self.check_open()?;
        match self.queues.get(queue).map(|q| &q.body) {
            Some(Body::Work(work)) => Ok((work.returned.len() + work.ready.len()) as u64),
            Some(Body::Stream(log)) => Ok(log.entries.len() as u64),
            None => Err(MqError::QueueNotFound {
                queue: queue.to_owned(),
            }),
        }
    }

    pub(super) fn purge(&mut self, queue: &str) -> Result<u64, MqError> {
        self.check_open()?;
        match self.queues.get_mut(queue).map(|q| &mut q.body) {
            Some(Body::Work(work)) => {
                let purged = (work.returned.len() + work.ready.len()) as u64;
                work.returned.clear();
                work.ready.clear();
                work.ready_bytes = 0;
                Ok(purged)
            }
            Some(Body::Stream(_)) => Err(MqError::InvalidArgument(format!(
                "`{queue}` is a stream, which cannot be purged"
            ))),
            None => Err(MqError::QueueNotFound {
                queue: queue.to_owned(),
            }),
        }
    }

    pub(super) fn delete_queue(&mut self, queue: &str) -> Result<(), MqError> {
        self.check_open()?;
        self.queues.remove(queue);
        for bound in self.exchanges.values_mut() {
            bound.remove(queue);
        }
        Ok(())
    }

    pub(super) fn delete_exchange(&mut self, exchange: &str) -> Result<(), MqError> {
        self.check_open()?;
        self.exchanges.remove(exchange);
        Ok(())
    }

    /// The spec of a declared queue.
    pub(super) fn spec(&self, queue: &str) -> Option<&QueueSpec> {
        self.queues.get(queue).map(|q| &q.spec)
    }

    pub(super) fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

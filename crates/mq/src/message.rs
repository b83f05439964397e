//! Messages: what is published ([`OutMessage`]), what is received ([`Delivery`]), and how it is settled.

use crate::error::{AckError, MqError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// Header names with a meaning to this crate or the broker.
pub mod header {
    /// Why a message was rejected to the dead-letter queue (set by
    /// [`Delivery::reject`](super::Delivery::reject)).
    pub const REASON: &str = "x-pretext-reason";
    /// The queue a rejected message came from.
    pub const ORIGINAL_QUEUE: &str = "x-pretext-original-queue";
    /// Times a quorum-queue message was returned before this delivery
    /// (absent on a first delivery).
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
    /// Why the broker dead-lettered a message, e.g. `delivery_limit`.
    pub const FIRST_DEATH_REASON: &str = "x-first-death-reason";
    /// The queue the broker dead-lettered a message from.
    pub const FIRST_DEATH_QUEUE: &str = "x-first-death-queue";
    /// The offset of a message in a stream.
    pub const STREAM_OFFSET: &str = "x-stream-offset";
    /// On a rejected copy: the validated login of the original's publisher
    /// (the copy's own `user_id` is the rejecting consumer's).
    pub const ORIGINAL_USER: &str = "x-pretext-original-user";
}

/// The reason the broker records when a message exceeded `x-delivery-limit`.
pub const DELIVERY_LIMIT_REASON: &str = "delivery_limit";

/// A header value. Broker headers of other types (arrays, tables) are not
/// exposed.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    /// A UTF-8 string.
    Str(String),
    /// A signed integer (any AMQP integer type is widened to this).
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A float (AMQP float or double).
    F64(f64),
    /// Raw bytes (a non-UTF-8 AMQP long string or byte array).
    Bytes(Vec<u8>),
}

impl HeaderValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::I64(v) => Some(*v),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(v) => Some(*v),
            _ => None,
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl From<i64> for HeaderValue {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<bool> for HeaderValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<f64> for HeaderValue {
    fn from(v: f64) -> Self {
        Self::F64(v)
    }
}

/// Message headers, ordered by name.
pub type Headers = BTreeMap<String, HeaderValue>;

/// A message to publish. Always sent persistent (delivery mode 2).
#[derive(Clone, PartialEq)]
pub struct OutMessage {
    /// The payload, e.g. one Arrow IPC stream.
    pub body: Bytes,
    /// Identifies the message across retries and redeliveries: a retry after
    /// a nack or reconnect reuses it, and consumers deduplicate by it.
    pub message_id: String,
    /// MIME type of the body.
    pub content_type: String,
    /// Application headers.
    pub headers: Headers,
}

impl OutMessage {
    /// A message with content type `application/octet-stream` and no headers.
    pub fn new(message_id: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            message_id: message_id.into(),
            content_type: "application/octet-stream".to_owned(),
            headers: Headers::new(),
        }
    }

    /// Sets the content type.
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks what every transport requires: an id AMQP can carry (at most 255
    /// bytes) and a body under [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES).
    pub(crate) fn validate(&self) -> Result<(), MqError> {
        if self.message_id.len() > 255 {
            return Err(MqError::InvalidArgument(format!(
                "message id of {} bytes (at most 255)",
                self.message_id.len()
            )));
        }
        if self.content_type.len() > 255 {
            return Err(MqError::InvalidArgument(
                "content type over 255 bytes".to_owned(),
            ));
        }
        if self.body.len() > crate::MAX_BODY_BYTES {
            return Err(MqError::InvalidArgument(format!(
                "message `{}` has a body of {} bytes (at most {})",
                self.message_id,
                self.body.len(),
                crate::MAX_BODY_BYTES
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for OutMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutMessage")
            .field("message_id", &self.message_id)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .finish()
    }
}

/// How a transport settles one delivery with its broker (or queue).
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    /// Acknowledges: the message is done.
    async fn ack(&self) -> Result<(), AckError>;
    /// Returns the message to its queue, to be redelivered.
    async fn nack_requeue(&self) -> Result<(), AckError>;
    /// Stores `copy` in the dead-letter queue, then acks the original.
    async fn reject(&self, copy: OutMessage) -> Result<(), AckError>;
}

/// A received message, to be settled exactly once with [`ack`](Self::ack),
/// [`nack_requeue`](Self::nack_requeue) or [`reject`](Self::reject).
/// Dropping it unsettled leaves it unacked until its consumer is dropped (or
/// its channel closes), when it is redelivered.
pub struct Delivery {
    body: Bytes,
    message_id: String,
    content_type: String,
    headers: Headers,
    redelivered: bool,
    queue: String,
    user_id: Option<String>,
    settle: Box<dyn Settle>,
}

impl Delivery {
    pub(crate) fn new(
        queue: String,
        message: OutMessage,
        redelivered: bool,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            body: message.body,
            message_id: message.message_id,
            content_type: message.content_type,
            headers: message.headers,
            redelivered,
            queue,
            user_id: None,
            settle,
        }
    }

    /// Sets who published it, as the broker validated it.
    pub(crate) fn with_user_id(mut self, user_id: Option<String>) -> Self {
        self.user_id = user_id;
        self
    }

    /// The login of the publisher, as RabbitMQ validated it (a `user_id`
    /// that is not the publisher's own login is refused, and the RabbitMQ
    /// transport sets it on every message); `None` on the in-process
    /// transport or from a client that set none.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// Who published the message first: for a rejected copy in a
    /// dead-letter queue the original's publisher, otherwise [`user_id`](Self::user_id).
    pub fn original_publisher(&self) -> Option<&str> {
        self.headers
            .get(header::ORIGINAL_USER)
            .and_then(HeaderValue::as_str)
            .or(self.user_id())
    }

    /// The payload.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The publisher's message id (empty if it set none).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The content type (empty if the publisher set none).
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// All headers, including broker-set ones such as `x-delivery-count`.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Whether this message was delivered before (to this or another
    /// consumer) and not acked: it may already have been processed.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The queue this came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Times a quorum-queue message was returned before this delivery (the
    /// `x-delivery-count` header); `None` on a first delivery.
    pub fn delivery_count(&self) -> Option<u64> {
        self.int_header(header::DELIVERY_COUNT)
    }

    /// The offset of a stream message.
    pub fn stream_offset(&self) -> Option<u64> {
        self.int_header(header::STREAM_OFFSET)
    }

    /// Why a message in a dead-letter queue is there: the reason given to
    /// [`reject`](Self::reject), or the broker's (`delivery_limit`).
    pub fn dead_letter_reason(&self) -> Option<&str> {
        self.headers
            .get(header::REASON)
            .or_else(|| self.headers.get(header::FIRST_DEATH_REASON))
            .and_then(HeaderValue::as_str)
    }

    /// The queue a message in a dead-letter queue died in: the one it was
    /// rejected from, or the one the broker dead-lettered it from.
    pub fn dead_letter_origin(&self) -> Option<&str> {
        self.headers
            .get(header::ORIGINAL_QUEUE)
            .or_else(|| self.headers.get(header::FIRST_DEATH_QUEUE))
            .and_then(HeaderValue::as_str)
    }

    fn int_header(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(HeaderValue::as_i64)
            .and_then(|v| u64::try_from(v).ok())
    }

    /// Acknowledges the message: the broker forgets it.
    ///
    /// `Err(AckError::ChannelClosed)` means the ack did not reach the broker
    /// and the message will be redelivered.
    pub async fn ack(self) -> Result<(), AckError> {
        self.settle.ack().await
    }

    /// Returns the message to its queue; it is redelivered with
    /// `redelivered` set and its delivery count raised, and dead-lettered
    /// once the count passes the queue's `x-delivery-limit`. On a stream,
    /// where nothing is requeued, this only releases the prefetch slot.
    pub async fn nack_requeue(self) -> Result<(), AckError> {
        self.settle.nack_requeue().await
    }

    /// Moves the message to its queue's dead-letter queue with `reason` in the
    /// `x-pretext-reason` header: a copy (same id, body and headers) is stored
    /// there, confirmed, before the original is acked, so the message is never
    /// lost. If the ack then fails the original is redelivered too and the
    /// dead queue holds it once per rejection (same `message_id`).
    pub async fn reject(self, reason: &str) -> Result<(), AckError> {
        let mut headers = self.headers;
        // Broker bookkeeping of the original delivery means nothing on the copy.
        headers.remove(header::DELIVERY_COUNT);
        headers.remove(header::STREAM_OFFSET);
        headers.insert(header::REASON.to_owned(), reason.into());
        headers.insert(
            header::ORIGINAL_QUEUE.to_owned(),
            self.queue.as_str().into(),
        );
        match self.user_id {
            Some(user) => headers.insert(header::ORIGINAL_USER.to_owned(), user.into()),
            None => headers.remove(header::ORIGINAL_USER),
        };
        let copy = OutMessage {
            body: self.body,
            message_id: self.message_id,
            content_type: self.content_type,
            headers,
        };
        self.settle.reject(copy).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("message_id", &self.message_id)
            .field("redelivered", &self.redelivered)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

//! Conversions between this crate's types and AMQP's: headers, properties, queue arguments, errors.

use crate::error::{AckError, MqError};
use crate::message::{HeaderValue, Headers, OutMessage};
use crate::topology::{QueueKind, QueueSpec};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, ErrorKind};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// An AMQP short string (at most 255 bytes), or an error naming `what`.
pub(crate) fn short(what: &str, value: &str) -> Result<ShortString, MqError> {
    ShortString::try_new(value)
        .map_err(|_| MqError::InvalidArgument(format!("{what} over 255 bytes: `{value}`")))
}

/// Our headers as an AMQP field table.
pub(crate) fn field_table(headers: &Headers) -> Result<FieldTable, MqError> {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        let value = match value {
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            HeaderValue::I64(v) => AMQPValue::LongLongInt(*v),
            HeaderValue::Bool(v) => AMQPValue::Boolean(*v),
            HeaderValue::F64(v) => AMQPValue::Double(*v),
            HeaderValue::Bytes(v) => AMQPValue::ByteArray(v.as_slice().into()),
        };
        table.insert(short("header name", name)?, value);
    }
    Ok(table)
}

/// An AMQP field table as our headers; arrays, tables, decimals and voids
/// (such as the broker's `x-death`) are left out.
pub(crate) fn headers(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), header_value(value)?)))
        .collect()
}

fn header_value(value: &AMQPValue) -> Option<HeaderValue> {
    Some(match value {
        AMQPValue::Boolean(v) => HeaderValue::Bool(*v),
        AMQPValue::ShortShortInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::ShortInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::ShortUInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::LongInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::LongUInt(v) => HeaderValue::I64(i64::from(*v)),
        AMQPValue::LongLongInt(v) => HeaderValue::I64(*v),
        AMQPValue::Timestamp(v) => HeaderValue::I64(i64::try_from(*v).ok()?),
        AMQPValue::Float(v) => HeaderValue::F64(f64::from(*v)),
        AMQPValue::Double(v) => HeaderValue::F64(*v),
        AMQPValue::ShortString(s) => HeaderValue::Str(s.to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(s) => HeaderValue::Str(s.to_owned()),
            Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => return None,
    })
}

/// Persistent delivery, message id, content type, headers, and the
/// publisher's login as `user_id` (which the broker checks).
pub(crate) fn properties(message: &OutMessage, user: &str) -> Result<BasicProperties, MqError> {
    Ok(BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_user_id(short("user id", user)?)
        .with_message_id(short("message id", &message.message_id)?)
        .with_content_type(short("content type", &message.content_type)?)
        .with_headers(field_table(&message.headers)?))
}

/// The `user_id` of a received message.
pub(crate) fn user_id(properties: &BasicProperties) -> Option<String> {
    properties.user_id().as_ref().map(ToString::to_string)
}

/// A received AMQP message as the fields of an [`OutMessage`].
pub(crate) fn received(properties: &BasicProperties, body: Vec<u8>) -> OutMessage {
    OutMessage {
        body: body.into(),
        message_id: properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        content_type: properties
            .content_type()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: properties
            .headers()
            .as_ref()
            .map(headers)
            .unwrap_or_default(),
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes()))
}

/// The `x-` arguments of a queue declaration.
pub(crate) fn queue_arguments(spec: &QueueSpec) -> Result<FieldTable, MqError> {
    let mut args = FieldTable::default();
    let as_long = |v: u64| {
        i64::try_from(v).map_err(|_| MqError::InvalidArgument(format!("{v} out of range")))
    };
    match spec.kind {
        QueueKind::Quorum => {
            args.insert("x-queue-type".into(), long_string("quorum"));
            if let Some(max) = spec.max_length_bytes {
                args.insert(
                    "x-max-length-bytes".into(),
                    AMQPValue::LongLongInt(as_long(max)?),
                );
                args.insert("x-overflow".into(), long_string("reject-publish"));
            }
            if let Some(limit) = spec.delivery_limit {
                args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(i64::from(limit)),
                );
            }
            if let Some(dl) = &spec.dead_letter {
                args.insert("x-dead-letter-exchange".into(), long_string(&dl.exchange));
                // With reject-publish overflow the broker keeps a message
                // until its dead-letter queue confirms it (3.10+); otherwise
                // dead-lettering is at-most-once.
                if spec.max_length_bytes.is_some() {
                    args.insert(
                        "x-dead-letter-strategy".into(),
                        long_string("at-least-once"),
                    );
                }
            }
        }
        QueueKind::Stream => {
            args.insert("x-queue-type".into(), long_string("stream"));
            if let Some(max) = spec.max_length_bytes {
                args.insert(
                    "x-max-length-bytes".into(),
                    AMQPValue::LongLongInt(as_long(max)?),
                );
            }
        }
    }
    Ok(args)
}

/// How a lapin error should be handled.
pub(crate) enum Failure {
    /// 404: the queue or exchange does not exist.
    NotFound,
    /// 406: declared with other arguments, or a state the broker refuses.
    PreconditionFailed(String),
    /// The connection or channel is gone; retry on a new one.
    Connection,
    /// Anything else.
    Other,
}

pub(crate) fn classify(err: &lapin::Error) -> Failure {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Failure::NotFound,
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                Failure::PreconditionFailed(amqp.get_message().to_string())
            }
            AMQPErrorKind::Hard(_) => Failure::Connection,
            AMQPErrorKind::Soft(_) => Failure::Other,
        },
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => Failure::Connection,
        _ => Failure::Other,
    }
}

/// A lapin error of an operation on `name` (a queue or exchange) as ours.
pub(crate) fn mq_error(op: &'static str, name: &str, err: lapin::Error) -> MqError {
    match classify(&err) {
        Failure::NotFound => MqError::QueueNotFound {
            queue: name.to_owned(),
        },
        Failure::PreconditionFailed(detail) => MqError::TopologyMismatch {
            name: name.to_owned(),
            detail,
        },
        Failure::Connection => MqError::ConnectionLost {
            op,
            source: Box::new(err),
        },
        Failure::Other => MqError::Broker {
            op,
            source: Box::new(err),
        },
    }
}

/// The result of a lapin ack, nack or reject as ours. `Ok(false)` means the
/// acker was poisoned by its channel closing; an error means the channel
/// closed while the settlement was under way. Either way the broker returns
/// the message to the queue.
pub(crate) fn settled(result: lapin::Result<bool>) -> Result<(), AckError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(AckError::ChannelClosed),
        Err(err) => match classify(&err) {
            Failure::Other => Err(AckError::Broker {
                op: "settle",
                source: Box::new(err),
            }),
            _ => Err(AckError::ChannelClosed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_a_field_table() {
        let mut original = Headers::new();
        original.insert("s".into(), "text".into());
        original.insert("i".into(), HeaderValue::I64(-7));
        original.insert("b".into(), true.into());
        original.insert("f".into(), 0.5.into());
        original.insert("raw".into(), HeaderValue::Bytes(vec![0xff, 0]));
        assert_eq!(headers(&field_table(&original).unwrap()), original);
    }

    #[test]
    fn bounded_quorum_arguments() {
        let spec = QueueSpec::quorum("q")
            .with_max_length_bytes(10)
            .with_delivery_limit(3)
            .with_dead_letter(crate::DeadLetter {
                exchange: "x".into(),
                queue: "d".into(),
            });
        let args = queue_arguments(&spec).unwrap();
        let arg = |k: &str| args.inner().get(k).cloned();
        assert_eq!(arg("x-max-length-bytes"), Some(AMQPValue::LongLongInt(10)));
        assert_eq!(arg("x-delivery-limit"), Some(AMQPValue::LongLongInt(3)));
        assert_eq!(arg("x-overflow"), Some(long_string("reject-publish")));
        assert_eq!(arg("x-dead-letter-exchange"), Some(long_string("x")));
        assert_eq!(arg("x-queue-type"), Some(long_string("quorum")));
    }
}

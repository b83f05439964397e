//! The queues of a namespace: names, bounds, dead-lettering, and idempotent declaration.

use crate::error::MqError;
use crate::transport::Transport;
use serde::{Deserialize, Serialize};

/// Bounds of a namespace's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    /// `x-max-length-bytes` of `{ns}.pretrain` and `{ns}.finetune`. It
    /// protects the broker's memory and disk, not the pace of a normal run:
    /// once reached, the broker refuses publishes and producers wait.
    pub batch_max_length_bytes: u64,
    /// `x-max-length-bytes` of the `{ns}.files` work queue.
    pub files_max_length_bytes: u64,
    /// `x-delivery-limit`: a message returned more often than this (by nacks
    /// or by consumers that died holding it) goes to `{ns}.dead`.
    pub delivery_limit: u32,
    /// Retention (`x-max-length-bytes`) of the `{ns}.dead` stream: past it
    /// the oldest dead letters are dropped, a segment at a time.
    pub dead_max_length_bytes: u64,
}

impl Default for TopologyConfig {
    /// 2 GiB per batch queue, 256 MiB of file tasks, delivery limit 5,
    /// 1 GiB of dead letters.
    fn default() -> Self {
        Self {
            batch_max_length_bytes: 2 * 1024 * 1024 * 1024,
            files_max_length_bytes: 256 * 1024 * 1024,
            delivery_limit: 5,
            dead_max_length_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The role of a queue in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueRole {
    /// Arrow batches for pre-training.
    Pretrain,
    /// Arrow batches for fine-tuning.
    Finetune,
    /// (file, row group) tasks for producers.
    Files,
    /// End-of-data and other control messages, a stream every rank reads
    /// from its first message.
    Control,
    /// Dead-lettered and rejected messages: a stream, so that every trainer
    /// (and an operator) reads every dead letter from the first one without
    /// taking it from the others.
    Dead,
}

impl QueueRole {
    /// Every role, dead-letter queue first (the others refer to it).
    pub const ALL: [QueueRole; 5] = [
        QueueRole::Dead,
        QueueRole::Pretrain,
        QueueRole::Finetune,
        QueueRole::Files,
        QueueRole::Control,
    ];

    /// The name suffix after `{ns}.`.
    pub fn suffix(self) -> &'static str {
        match self {
            QueueRole::Pretrain => "pretrain",
            QueueRole::Finetune => "finetune",
            QueueRole::Files => "files",
            QueueRole::Control => "control",
            QueueRole::Dead => "dead",
        }
    }
}

/// How the broker keeps a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// A replicated work queue: each message goes to one consumer and is gone
    /// once acked.
    Quorum,
    /// An append-only log: every consumer reads every message from the first
    /// one; acks only pace the consumer.
    Stream,
}

/// Where a queue's dead messages go: an exchange (for the broker's own
/// dead-lettering) bound to a queue (where rejected copies are published).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The fanout exchange named by `x-dead-letter-exchange`.
    pub exchange: String,
    /// The queue bound to it.
    pub queue: String,
}

/// Everything needed to declare one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue name.
    pub name: String,
    /// Quorum queue or stream.
    pub kind: QueueKind,
    /// `x-max-length-bytes` with `x-overflow: reject-publish` (quorum), or
    /// retention (stream).
    pub max_length_bytes: Option<u64>,
    /// `x-delivery-limit` (quorum only).
    pub delivery_limit: Option<u32>,
    /// Dead-lettering (quorum only).
    pub dead_letter: Option<DeadLetter>,
}

impl QueueSpec {
    /// A durable quorum queue without bounds or dead-lettering.
    pub fn quorum(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: QueueKind::Quorum,
            max_length_bytes: None,
            delivery_limit: None,
            dead_letter: None,
        }
    }

    /// A durable stream without retention limit.
    pub fn stream(name: impl Into<String>) -> Self {
        Self {
            kind: QueueKind::Stream,
            ..Self::quorum(name)
        }
    }

    /// Bounds the queue's size in bytes.
    #[must_use]
    pub fn with_max_length_bytes(mut self, bytes: u64) -> Self {
        self.max_length_bytes = Some(bytes);
        self
    }

    /// Dead-letters messages returned more than `limit` times.
    #[must_use]
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// Sends dead messages to `dead_letter`.
    #[must_use]
    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// Checks that the broker can take the name.
    pub(crate) fn validate(&self) -> Result<(), MqError> {
        validate_name(&self.name)
    }
}

/// AMQP names are short strings: at most 255 bytes. Empty names are rejected
/// too (the broker would invent one).
pub(crate) fn validate_name(name: &str) -> Result<(), MqError> {
    if name.is_empty() || name.len() > 255 {
        return Err(MqError::InvalidArgument(format!(
            "name `{name}` must be 1 to 255 bytes"
        )));
    }
    Ok(())
}

/// The queues of one namespace, so that several runs can share a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    config: TopologyConfig,
}

impl Topology {
    /// The namespace `ns` with default bounds.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self::with_config(namespace, TopologyConfig::default())
    }

    /// The namespace `ns` with the given bounds.
    pub fn with_config(namespace: impl Into<String>, config: TopologyConfig) -> Self {
        Self {
            namespace: namespace.into(),
            config,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The bounds.
    pub fn config(&self) -> TopologyConfig {
        self.config
    }

    /// `{ns}.{role}`.
    pub fn name(&self, role: QueueRole) -> String {
        format!("{}.{}", self.namespace, role.suffix())
    }

    /// `{ns}.pretrain`.
    pub fn pretrain(&self) -> String {
        self.name(QueueRole::Pretrain)
    }

    /// `{ns}.finetune`.
    pub fn finetune(&self) -> String {
        self.name(QueueRole::Finetune)
    }

    /// `{ns}.files`.
    pub fn files(&self) -> String {
        self.name(QueueRole::Files)
    }

    /// `{ns}.control`.
    pub fn control(&self) -> String {
        self.name(QueueRole::Control)
    }

    /// `{ns}.dead`.
    pub fn dead(&self) -> String {
        self.name(QueueRole::Dead)
    }

    /// `{ns}.dlx`, bound to `{ns}.dead`.
    pub fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            exchange: format!("{}.dlx", self.namespace),
            queue: self.dead(),
        }
    }

    /// The declaration of one queue.
    pub fn spec(&self, role: QueueRole) -> QueueSpec {
        let name = self.name(role);
        let bounded = |bytes| {
            QueueSpec::quorum(name.clone())
                .with_max_length_bytes(bytes)
                .with_delivery_limit(self.config.delivery_limit)
                .with_dead_letter(self.dead_letter())
        };
        match role {
            QueueRole::Pretrain | QueueRole::Finetune => {
                bounded(self.config.batch_max_length_bytes)
            }
            QueueRole::Files => bounded(self.config.files_max_length_bytes),
            QueueRole::Control => QueueSpec::stream(name),
            QueueRole::Dead => {
                QueueSpec::stream(name).with_max_length_bytes(self.config.dead_max_length_bytes)
            }
        }
    }

    /// Declares the dead-letter queue and exchange, then every other queue.
    /// Idempotent: every service calls it at start. Fails with
    /// [`MqError::TopologyMismatch`] if a queue exists with other bounds.
    pub async fn declare<T: Transport + ?Sized>(&self, transport: &T) -> Result<(), MqError> {
        transport.declare_queue(&self.spec(QueueRole::Dead)).await?;
        transport.declare_dead_letter(&self.dead_letter()).await?;
        for role in QueueRole::ALL {
            if role != QueueRole::Dead {
                transport.declare_queue(&self.spec(role)).await?;
            }
        }
        Ok(())
    }

    /// Deletes every queue of the namespace and its dead-letter exchange,
    /// messages included (for tests and teardown).
    pub async fn delete<T: Transport + ?Sized>(&self, transport: &T) -> Result<(), MqError> {
        for role in QueueRole::ALL.into_iter().rev() {
            transport.delete_queue(&self.name(role)).await?;
        }
        transport
            .delete_exchange(&self.dead_letter().exchange)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_specs_follow_the_design() {
        let topology = Topology::new("run7");
        assert_eq!(topology.pretrain(), "run7.pretrain");
        assert_eq!(topology.control(), "run7.control");
        let pretrain = topology.spec(QueueRole::Pretrain);
        assert_eq!(pretrain.kind, QueueKind::Quorum);
        assert_eq!(pretrain.max_length_bytes, Some(2 << 30));
        assert_eq!(pretrain.delivery_limit, Some(5));
        assert_eq!(
            pretrain.dead_letter,
            Some(DeadLetter {
                exchange: "run7.dlx".into(),
                queue: "run7.dead".into()
            })
        );
        assert_eq!(topology.spec(QueueRole::Control).kind, QueueKind::Stream);
        assert_eq!(topology.spec(QueueRole::Dead).dead_letter, None);
        assert_eq!(topology.spec(QueueRole::Dead).kind, QueueKind::Stream);
        assert!(topology.spec(QueueRole::Files).dead_letter.is_some());
    }

    #[test]
    fn config_parses_with_defaults() {
        let config: TopologyConfig = serde_json::from_str(r#"{"delivery_limit": 3}"#).unwrap();
        assert_eq!(
            config,
            TopologyConfig {
                delivery_limit: 3,
                ..TopologyConfig::default()
            }
        );
    }
}

//! The producer's command line, shared by `pretext` and the lean
//! `pretext-produce` and `pretext-validate` binaries: the broker and length
//! flags, the target flags, and the produce and validate commands. Nothing
//! here links libtorch, so a producer built from it stays small in memory.

pub mod produce;
pub mod targets;
pub mod validate;

pub use targets::{Auto, TargetArgs};

use clap::Args as ClapArgs;
use pretext_core::validate::ValidationConfig;

/// Length limits shared by every command that reads raw input.
#[derive(Debug, Clone, Copy, ClapArgs)]
pub struct LimitArgs {
    /// Shortest accepted sequence.
    #[arg(long, default_value_t = 512, env = "PRETEXT_MIN_LEN")]
    pub min_len: usize,
    /// Longest accepted sequence.
    #[arg(long, default_value_t = 30_720, env = "PRETEXT_MAX_LEN")]
    pub max_len: usize,
}

impl LimitArgs {
    /// The validation config these limits give.
    pub fn config(self) -> ValidationConfig {
        ValidationConfig {
            min_len: self.min_len,
            max_len: self.max_len,
        }
    }
}

/// Where the broker is and which namespace to use.
#[derive(Debug, Clone, ClapArgs)]
pub struct BrokerArgs {
    /// `amqp://user:pass@host:port/vhost`, `amqps://…`, or `memory` (in-process).
    #[arg(long, env = "PRETEXT_BROKER", default_value = "memory")]
    pub broker: String,
    /// Namespace prefixing every queue, so runs can share a broker.
    #[arg(long, env = "PRETEXT_NS", default_value = "pretext")]
    pub ns: String,
    /// Byte bound of the batch queues (`x-max-length-bytes`; the broker
    /// refuses publishes past it and producers wait). Every service of a
    /// namespace must use the same; default 2 GiB.
    #[arg(long, env = "PRETEXT_QUEUE_MAX_BYTES")]
    pub queue_max_bytes: Option<u64>,
}

impl BrokerArgs {
    /// The queue bounds these flags give.
    pub fn topology(&self) -> pretext_mq::TopologyConfig {
        let mut t = pretext_mq::TopologyConfig::default();
        if let Some(bytes) = self.queue_max_bytes {
            t.batch_max_length_bytes = bytes;
        }
        t
    }

    /// Connects (the password never appears in errors or logs).
    pub async fn connect(&self) -> anyhow::Result<pretext_mq::SharedTransport> {
        let t = pretext_mq::connect(&self.broker, pretext_mq::RabbitConfig::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to {}: {e}",
                    pretext_mq::redact_url(&self.broker)
                )
            })?;
        Ok(t)
    }
}

//! One module per subcommand: its clap arguments and its `run`.

pub mod audit;
pub mod bench;
pub mod demo;
pub mod experiment;
pub mod finetune;
pub mod gen_data;
pub mod inspect;
pub mod launch;
pub mod produce;
pub mod registry;
pub mod schedule;
pub mod train;
pub mod validate;

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
}

impl BrokerArgs {
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

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! pretext-cli: what the `pretext` command and the lean `pretext-produce`
//! binary share: flags (broker, length limits, metrics endpoint), signal
//! handling, logging set-up, and the produce command itself. Nothing here
//! links libtorch, so a producer built from it stays small in memory.

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

/// Where a long-running service serves Prometheus `/metrics` and `/healthz`.
#[derive(Debug, Clone, ClapArgs)]
pub struct MetricsArgs {
    /// Serve `/metrics` (Prometheus text) and `/healthz` on this address,
    /// e.g. `0.0.0.0:9100`; off when unset. Ranks started by `pretext
    /// launch` add their LOCAL_RANK to the port.
    #[arg(long, env = "PRETEXT_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// Starts the endpoint for `service` (the `service` label of every
    /// metric) when an address is set; call inside the tokio runtime.
    pub async fn start(&self, service: &str) -> anyhow::Result<Option<pretext_ops::MetricsServer>> {
        let Some(mut addr) = self.metrics_addr else {
            return Ok(None);
        };
        let local_rank = std::env::var("LOCAL_RANK")
            .ok()
            .and_then(|r| r.parse::<u16>().ok());
        if let (Some(rank), true) = (local_rank, addr.port() != 0) {
            addr.set_port(addr.port().saturating_add(rank));
        }
        Ok(Some(
            pretext_ops::MetricsServer::start(addr, service).await?,
        ))
    }
}

/// [`shutdown_signal`] that also turns `/healthz` of `server`, if any, to 503
/// when the signal comes. The handlers are installed when the service first
/// waits on it (its main loop): a SIGTERM before that, while it is still
/// connecting, ends the process as usual instead of being held until a loop
/// that may never come.
pub fn shutdown_on_signal(
    server: Option<&pretext_ops::MetricsServer>,
) -> impl std::future::Future<Output = ()> + use<> {
    let health = server.map(pretext_ops::MetricsServer::health);
    async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        if let Some(health) = health {
            health.set_stopping();
        }
    }
}

/// Logs to stderr, filtered by `PRETEXT_LOG` (default `default_level`), as
/// JSON lines when `json` is set.
pub fn init_tracing(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PRETEXT_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

//! What every pretext binary sets up the same way: the metrics endpoint's
//! flag, logging to stderr, and the shutdown signal.

use clap::Args as ClapArgs;

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
    pub async fn start(
        &self,
        service: &str,
    ) -> Result<Option<crate::MetricsServer>, crate::OpsError> {
        let Some(mut addr) = self.metrics_addr else {
            return Ok(None);
        };
        let local_rank = std::env::var("LOCAL_RANK")
            .ok()
            .and_then(|r| r.parse::<u16>().ok());
        if let (Some(rank), true) = (local_rank, addr.port() != 0) {
            addr.set_port(addr.port().saturating_add(rank));
        }
        Ok(Some(crate::MetricsServer::start(addr, service).await?))
    }
}

/// Waits for SIGTERM or SIGINT, then turns `/healthz` of `server`, if any, to 503
/// when the signal comes. The handlers are installed when the service first
/// waits on it (its main loop): a SIGTERM before that, while it is still
/// connecting, ends the process as usual instead of being held until a loop
/// that may never come.
pub fn shutdown_on_signal(
    server: Option<&crate::MetricsServer>,
) -> impl std::future::Future<Output = ()> + use<> {
    let health = server.map(crate::MetricsServer::health);
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

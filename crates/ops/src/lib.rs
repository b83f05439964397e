//! pretext-ops: what every long-running pretext service shares to be run in
//! production: a small HTTP endpoint with `/metrics` (Prometheus text
//! format, through the `metrics` facade and `metrics-exporter-prometheus`)
//! and `/healthz`, and the names of the metrics the services record.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pretext_ops::OpsError> {
//! let server = pretext_ops::MetricsServer::start("127.0.0.1:9100".parse().unwrap(), "trainer").await?;
//! metrics::counter!(pretext_ops::names::TRAINER_STEPS).increment(1);
//! // ... on SIGTERM: /healthz answers 503 while the service winds down.
//! server.health().set_stopping();
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`server`]: [`MetricsServer`] (binds, serves `/metrics` and
//!   `/healthz`, stops when dropped) and [`Health`].
//! - [`names`]: every metric name with its help text ([`names::describe`]).
//! - [`service`]: the `--metrics-addr` flag ([`MetricsArgs`]), logging set-up
//!   ([`init_tracing`]) and the shutdown signal ([`shutdown_on_signal`]).
//! - [`error`]: the error type, [`OpsError`].
//!
//! Services record with the `metrics` macros wherever they are; without a
//! started server no recorder is installed and recording costs nothing.

pub mod error;
pub mod names;
pub mod server;
pub mod service;

pub use error::OpsError;
pub use server::{Health, MetricsServer};
pub use service::{MetricsArgs, init_tracing, shutdown_on_signal};

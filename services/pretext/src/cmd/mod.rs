//! One module per subcommand: its clap arguments and its `run`.

pub mod audit;
pub mod bench;
pub mod bench_checkpoint;
pub mod demo;
pub mod experiment;
pub mod export;
pub mod finetune;
pub mod gen_data;
pub mod import_genomes;
pub mod inspect;
pub mod launch;
pub mod produce;
pub mod registry;
pub mod schedule;
pub mod train;
pub mod validate;

pub use pretext_cli::{BrokerArgs, LimitArgs, MetricsArgs, shutdown_on_signal};

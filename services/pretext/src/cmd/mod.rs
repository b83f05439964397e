//! One module per subcommand: its clap arguments and its `run`.

pub mod audit;
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

pub use pretext_ops::{MetricsArgs, shutdown_on_signal};

/// The model's size and the threads it runs on: the flags `demo`,
/// `experiment`, `schedule` and `finetune` share.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ModelArgs {
    /// Model width (channels); default 64 (32 with `experiment --quick`).
    /// With `finetune`, the width of a model started from scratch.
    #[arg(long)]
    pub width: Option<i64>,
    /// Residual blocks (of a model started from scratch).
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// libtorch intra-op threads (of each rank, with several); default 2.
    #[arg(long, env = "PRETEXT_THREADS")]
    pub threads: Option<usize>,
}

impl ModelArgs {
    /// The width unless given.
    pub const DEFAULT_WIDTH: i64 = 64;
    /// The threads unless given.
    pub const DEFAULT_THREADS: usize = 2;

    /// The width asked for, or [`Self::DEFAULT_WIDTH`].
    pub fn width(&self) -> i64 {
        self.width.unwrap_or(Self::DEFAULT_WIDTH)
    }

    /// The threads asked for, or [`Self::DEFAULT_THREADS`].
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(Self::DEFAULT_THREADS)
    }
}
pub use pretext_producer::cli::{BrokerArgs, LimitArgs};

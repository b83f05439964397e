//! `pretext produce` (and `pretext-produce`): one producer service process.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{ProducerConfig, run};
use anyhow::Context;
use pretext_core::split::Split;
use pretext_core::task::Task;

use super::{BrokerArgs, LimitArgs};
use pretext_ops::{MetricsArgs, shutdown_on_signal};

/// Arguments of `pretext produce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parquet files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Targets to build.
    #[arg(long, default_value = "masked")]
    pub task: Task,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Run directory shared with the trainers (plan, manifests, quarantine).
    #[arg(long, env = "PRETEXT_RUN_DIR")]
    pub run_dir: PathBuf,
    /// Epochs (each with fresh masks).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Seed of the masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Splits to publish (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "train")]
    pub splits: Vec<Split>,
    /// Token budget per batch (rows × bucket length); a budget whose batches
    /// would pass the 16 MiB message limit (about 5.5M tokens) is refused.
    #[arg(long, default_value_t = 65_536)]
    pub max_tokens: usize,
    /// Rows per file task (consecutive row groups grouped up to this): the
    /// unit of work redone after a crash. Each task ends its buckets'
    /// partial batches, so larger tasks give fewer, fuller batches.
    #[arg(long, env = "PRETEXT_TASK_ROWS", default_value_t = 512)]
    pub task_rows: usize,
    #[command(flatten)]
    pub targets: super::TargetArgs,
    /// Producer id (names its manifest); default `<host>-<pid>`.
    #[arg(long, env = "PRETEXT_PRODUCER_ID")]
    pub producer_id: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seconds a SIGTERM waits for the tasks in hand to stop cleanly
    /// (confirms of what was sent awaited, tasks requeued).
    #[arg(long, env = "PRETEXT_SHUTDOWN_GRACE", default_value_t = crate::config::DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

impl Args {
    /// The producer config these flags give (`auto` targets measured on
    /// the data's first train rows).
    pub fn config(&self) -> anyhow::Result<ProducerConfig> {
        let mut c = ProducerConfig::new(
            self.data.clone(),
            self.task,
            &self.broker.ns,
            self.run_dir.clone(),
        );
        c.epochs = self.epochs;
        c.splits = self.splits.clone();
        let (mask, _) = self.targets.resolve(&self.data, self.limits.config())?;
        c.mask = pretext_core::task::MaskConfig {
            seed: self.seed,
            ..mask
        };
        c.buckets.max_tokens = self.max_tokens;
        c.task_rows = self.task_rows;
        c.validation = self.limits.config();
        c.shutdown_grace_secs = self.shutdown_grace;
        c.topology = self.broker.topology();
        if let Some(id) = &self.producer_id {
            c.producer_id = id.clone();
        }
        Ok(c)
    }
}

/// Runs the producer until the work is done or a signal arrives (SIGTERM:
/// confirms of what was sent are awaited, tasks in hand requeued, exit 0).
pub fn run_cmd(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let server = args.metrics.start("producer").await?;
        let shutdown = shutdown_on_signal(server.as_ref());
        let transport = args.broker.connect().await?;
        let summary = run(args.config()?, transport, shutdown)
            .await
            .context("producer failed")?;
        println!("{}", summary.line());
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(extra: &[&str]) -> ProducerConfig {
        let mut argv = vec![
            "produce",
            "--data",
            "d",
            "--run-dir",
            "r",
            "--mask-span",
            "1",
            "--horizon",
            "1",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args.config().unwrap()
    }

    #[test]
    fn task_rows_reach_the_producer_config() {
        assert_eq!(config(&[]).task_rows, 512);
        assert_eq!(config(&["--task-rows", "4096"]).task_rows, 4096);
    }
}

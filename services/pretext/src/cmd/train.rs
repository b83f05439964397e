//! `pretext train`: one pretraining trainer process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pretext_core::task::Task;
use pretext_model::{AdamWConfig, InputEncoding, ModelConfig, NormKind, Precision};
use pretext_trainer::config::{
    DEFAULT_BATCH_WAIT_MS, DEFAULT_BUCKET_MB, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_SECS,
    DEFAULT_DIST_TIMEOUT_SECS, DEFAULT_KEEP_CHECKPOINTS, Nnodes, WorldConfig, direction_for,
};
use pretext_trainer::{DeviceChoice, TrainerConfig};
use serde::de::DeserializeOwned;

use super::{BrokerArgs, MetricsArgs, shutdown_on_signal};

/// Arguments of `pretext train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Run directory: checkpoints in `checkpoints/`, per-step `metrics.jsonl`
    /// (and the producers' `manifests/`). A run resumes from its newest
    /// complete checkpoint.
    #[arg(long, env = "PRETEXT_RUN_DIR")]
    pub run_dir: PathBuf,
    /// Pretraining task; batches of another task are dead-lettered. `next`
    /// trains a causal model, `masked` a bidirectional one.
    #[arg(long, default_value = "masked")]
    pub task: Task,
    /// Broker logins whose batches and control messages are believed
    /// (comma-separated, e.g. `producer,scheduler`); anything else is
    /// rejected or ignored. Default: every publisher.
    #[arg(long, env = "PRETEXT_TRUSTED_PUBLISHERS", value_delimiter = ',')]
    pub trusted_publishers: Vec<String>,
    /// Stop after this many optimiser steps in total (resumed ones
    /// included); default: when every published batch is applied.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Checkpoint, then ack the batches it holds, every N steps.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Also checkpoint when the oldest unacked applied batch is this many
    /// seconds old (keep it under RabbitMQ's consumer_timeout).
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_SECS)]
    pub checkpoint_secs: u64,
    /// Checkpoints kept (0 = all); pruned ones' applied ids live on in newer ones.
    #[arg(long, default_value_t = DEFAULT_KEEP_CHECKPOINTS)]
    pub keep_checkpoints: usize,
    /// Unacked deliveries held at once (default: checkpoint-every + 16, at most 2000).
    #[arg(long)]
    pub prefetch: Option<u16>,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, env = "PRETEXT_THREADS")]
    pub threads: Option<usize>,
    /// `auto` (CUDA if available), `cpu` or `cuda`.
    #[arg(long, default_value = "auto", value_parser = serde_enum::<DeviceChoice>)]
    pub device: DeviceChoice,
    /// Compute precision of convolutions and linear layers: `full` (f32)
    /// or `bf16` (autocast-like, f32 master weights; meant for CUDA).
    #[arg(long, default_value = "full", value_parser = serde_enum::<Precision>)]
    pub precision: Precision,
    /// Seed of the initial weights and the per-step randomness.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    #[command(flatten)]
    pub dist: DistArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Data parallel: a fixed group when `WORLD_SIZE` is set (with
/// `MASTER_ADDR`, `MASTER_PORT` and optionally `RANK`, as `pretext launch`
/// or torchrun set them), an elastic one with `--nnodes`; every rank must
/// share the run directory.
#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Elastic membership, `MIN:MAX` (or `N`): processes started with the
    /// same settings join the running group, and leave it on SIGTERM or
    /// when lost; training waits while fewer than MIN are present.
    #[arg(long, env = "PRETEXT_NNODES")]
    pub nnodes: Option<Nnodes>,
    /// Elastic: `HOST:PORT` where the members meet; the process that can
    /// bind it hosts the store and must live as long as the run.
    #[arg(long, env = "PRETEXT_RDZV_ENDPOINT", default_value = "127.0.0.1:29400")]
    pub rdzv_endpoint: String,
    /// Seconds a rank waits for the others (rendezvous, every collective)
    /// before failing: a dead or hung rank stops the others after this.
    #[arg(long, env = "PRETEXT_DIST_TIMEOUT", default_value_t = DEFAULT_DIST_TIMEOUT_SECS)]
    pub dist_timeout: u64,
    /// Gradient all-reduce bucket size, MiB.
    #[arg(long, default_value_t = DEFAULT_BUCKET_MB)]
    pub bucket_mb: usize,
    /// Milliseconds a rank without a batch waits for one before the ranks
    /// step without it.
    #[arg(long, default_value_t = DEFAULT_BATCH_WAIT_MS)]
    pub batch_wait_ms: u64,
}

/// The architecture of a fresh run (a resumed run keeps its checkpoint's).
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Channels of every feature map.
    #[arg(long, default_value_t = ModelConfig::default().width)]
    pub width: i64,
    /// Residual blocks.
    #[arg(long, default_value_t = ModelConfig::default().depth)]
    pub depth: usize,
    /// Kernel of the dilated convolutions (odd for `masked`).
    #[arg(long, default_value_t = ModelConfig::default().kernel)]
    pub kernel: i64,
    /// Block i uses dilation base^(i mod cycle).
    #[arg(long, default_value_t = ModelConfig::default().dilation_base)]
    pub dilation_base: i64,
    /// Dilation cycle length (0 = keep growing).
    #[arg(long, default_value_t = ModelConfig::default().dilation_cycle)]
    pub dilation_cycle: usize,
    /// Input encoder: `embedding` or `scalar`.
    #[arg(long, default_value = "embedding", value_parser = serde_enum::<InputEncoding>)]
    pub input: InputEncoding,
    /// Normalisation: `layer` or `group` (bidirectional only).
    #[arg(long, default_value = "layer", value_parser = serde_enum::<NormKind>)]
    pub norm: NormKind,
    /// Groups of `group` normalisation.
    #[arg(long, default_value_t = ModelConfig::default().norm_groups)]
    pub norm_groups: i64,
    /// Dropout after each activation.
    #[arg(long, default_value_t = ModelConfig::default().dropout)]
    pub dropout: f64,
}

/// AdamW and its schedule.
#[derive(Debug, clap::Args)]
pub struct OptimizerArgs {
    /// Peak learning rate.
    #[arg(long, default_value_t = AdamWConfig::default().lr)]
    pub lr: f64,
    /// Decoupled weight decay (weights of rank ≥ 2 only).
    #[arg(long, default_value_t = AdamWConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = AdamWConfig::default().warmup_steps)]
    pub warmup_steps: u64,
    /// Step where the cosine decay ends (0 = constant after warmup).
    #[arg(long, default_value_t = AdamWConfig::default().total_steps)]
    pub total_steps: u64,
    /// Floor of the cosine decay, as a fraction of lr.
    #[arg(long, default_value_t = AdamWConfig::default().min_lr_ratio)]
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = AdamWConfig::default().max_grad_norm)]
    pub max_grad_norm: f64,
    /// First-moment decay.
    #[arg(long, default_value_t = AdamWConfig::default().beta1)]
    pub beta1: f64,
    /// Second-moment decay.
    #[arg(long, default_value_t = AdamWConfig::default().beta2)]
    pub beta2: f64,
    /// Denominator epsilon.
    #[arg(long, default_value_t = AdamWConfig::default().eps)]
    pub eps: f64,
}

/// Parses a lowercase enum name the way the config files spell it.
fn serde_enum<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

impl Args {
    /// The trainer config these flags give.
    pub fn config(&self) -> TrainerConfig {
        let m = &self.model;
        let o = &self.optimizer;
        TrainerConfig {
            broker: self.broker.broker.clone(),
            namespace: self.broker.ns.clone(),
            run_dir: self.run_dir.clone(),
            task: self.task,
            max_steps: self.max_steps,
            checkpoint_every: self.checkpoint_every,
            checkpoint_secs: self.checkpoint_secs,
            keep_checkpoints: self.keep_checkpoints,
            prefetch: self.prefetch,
            threads: self.threads,
            device: self.device,
            precision: self.precision,
            seed: self.seed,
            model: ModelConfig {
                width: m.width,
                depth: m.depth,
                kernel: m.kernel,
                dilation_base: m.dilation_base,
                dilation_cycle: m.dilation_cycle,
                input: m.input,
                direction: direction_for(self.task),
                norm: m.norm,
                norm_groups: m.norm_groups,
                dropout: m.dropout,
            },
            optimizer: AdamWConfig {
                lr: o.lr,
                beta1: o.beta1,
                beta2: o.beta2,
                eps: o.eps,
                weight_decay: o.weight_decay,
                warmup_steps: o.warmup_steps,
                total_steps: o.total_steps,
                min_lr_ratio: o.min_lr_ratio,
                max_grad_norm: o.max_grad_norm,
            },
            progress: std::io::stderr().is_terminal(),
            topology: self.broker.topology(),
            trusted_publishers: self.trusted_publishers.clone(),
            ..TrainerConfig::default()
        }
    }
}

/// Trains until the data ends, `--max-steps`, or SIGTERM / Ctrl-C (which
/// finish the step, checkpoint, ack and exit 0).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args.config();
    let fixed = WorldConfig::from_env()?;
    let world = match args.dist.nnodes {
        Some(nnodes) => {
            anyhow::ensure!(
                fixed.is_none(),
                "--nnodes (an elastic group) and WORLD_SIZE (a fixed one) exclude each other: unset WORLD_SIZE"
            );
            let endpoint = args.dist.rdzv_endpoint.trim();
            let (host, port) = endpoint
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
                .with_context(|| format!("--rdzv-endpoint `{endpoint}` is not HOST:PORT"))?;
            Some(WorldConfig {
                master_addr: host.to_owned(),
                master_port: port,
                elastic: Some(nnodes),
                ..WorldConfig::default()
            })
        }
        None => fixed,
    };
    config.world = world.map(|w| WorldConfig {
        timeout_secs: args.dist.dist_timeout,
        bucket_mb: args.dist.bucket_mb,
        batch_wait_ms: args.dist.batch_wait_ms,
        ..w
    });
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(async {
        let server = args.metrics.start("trainer").await?;
        let shutdown = shutdown_on_signal(server.as_ref());
        pretext_trainer::run(config, shutdown)
            .await
            .context("trainer failed")
    })?;
    if summary.world_size > 1 {
        print!(
            "rank {}/{} (all-reduce {:.3} s): ",
            summary.rank, summary.world_size, summary.comm_secs
        );
    }
    println!(
        "stopped ({:?}) at step {}: applied {} batches ({} in the run), skipped {} duplicates, rejected {}; checkpoint {}",
        summary.stop,
        summary.step,
        summary.applied,
        summary.applied_total,
        summary.skipped_duplicates,
        summary.rejected,
        summary
            .last_checkpoint
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    Ok(ExitCode::SUCCESS)
}

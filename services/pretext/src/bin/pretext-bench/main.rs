//! `pretext-bench …`: the Rust side of the side-by-side benchmarks under
//! `bench/` (the harnesses there run the references in the same invocation),
//! a binary of its own so the production `pretext` carries none of it.

mod build;
mod checkpoint;
mod collective;
mod publish;
mod train;

use build::build;
use collective::collective;
use publish::{drain_until_signal, publish};
use train::train;

use std::path::PathBuf;
use std::process::ExitCode;

use pretext_model::Precision;
use pretext_model::tch::Device;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Batch building in memory: bucketing + masking + IPC encode.
    Build(BuildArgs),
    /// Training steps of the pretraining model on fixed shapes; writes the
    /// weights, a batch and its logits for the PyTorch reference.
    Train(TrainArgs),
    /// One rank's data-parallel round on a device, as the trainer does it:
    /// a group of one (NCCL on CUDA, Gloo on the CPU), gradients of a
    /// training step all-reduced in buckets; prints what libtorch sees.
    Collective(CollectiveArgs),
    /// Parquet → broker with confirms, against the broker's ceiling:
    /// pre-built payloads of the same size and count, same confirm window,
    /// from one publisher or as many as the producer runs tasks.
    Publish(PublishArgs),
    /// Consumes and acks a namespace's batch queue until SIGTERM or SIGINT,
    /// then deletes the namespace: lets another process publish more than
    /// the queue bound (for peak-memory runs of a producer on big inputs).
    Drain(DrainArgs),
    /// One trainer checkpoint after N applied batches: the ledger against
    /// copying every earlier id into `state.json`, side by side.
    Checkpoint(checkpoint::Args),
}

/// Arguments of `pretext bench drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub broker: String,
    /// Namespace whose batch queue to drain.
    #[arg(long)]
    pub ns: String,
}

/// Arguments of `pretext bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Where weights, batch and logits go.
    #[arg(long)]
    pub out: PathBuf,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    pub width: i64,
    /// Residual blocks.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    pub rows: i64,
    /// Bucket length.
    #[arg(long, default_value_t = 4096)]
    pub len: i64,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// Where the timed steps run: `cpu` or `cuda` (the weights, batch and
    /// logits written are always computed on the CPU).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Compute precision of the timed steps: `full` or `bf16`.
    #[arg(long, default_value = "full", value_parser = parse_precision)]
    pub precision: Precision,
    /// Leave glibc's allocator at its defaults instead of keeping freed
    /// memory (what `pretext train` does; pretext_model::memory).
    #[arg(long)]
    pub system_allocator: bool,
}

/// Arguments of `pretext bench collective`.
#[derive(Debug, clap::Args)]
pub struct CollectiveArgs {
    /// `cpu` (Gloo) or `cuda` (NCCL).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Model width of the gradients reduced.
    #[arg(long, default_value_t = 128)]
    pub width: i64,
    /// Timed all-reduce rounds (after one untimed one).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => Err(format!("unknown device {s:?}: cpu or cuda")),
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

/// Waits for the device's queued work (CUDA is asynchronous).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        pretext_model::tch::Cuda::synchronize(i as i64);
    }
}

/// Arguments of `pretext bench publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Parquet input.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub broker: String,
    /// Token budget per batch.
    #[arg(long, default_value_t = 65_536)]
    pub max_tokens: usize,
    /// Consume and ack while producing, so inputs larger than the queue
    /// bound pass through (for peak-memory runs on big files).
    #[arg(long)]
    pub drain: bool,
    /// File tasks the producer works on at once (default: the producer's).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Rows per file task (default: the producer's).
    #[arg(long)]
    pub task_rows: Option<usize>,
    /// Rounds (producer, then ceiling); the best of each is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Pause before each timed run, so that the broker has finished
    /// deleting the previous run's queues (hundreds of MB) first.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Publishers sending the ceiling's payloads at once, every round
    /// (default: rounds alternate one and the producer's concurrency, the
    /// tasks it builds and sends at once).
    #[arg(long)]
    pub ceiling_publishers: Option<usize>,
}

/// Arguments of `pretext bench build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Parquet input (loaded into memory before timing).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Token budget per batch.
    #[arg(long, default_value_t = 65_536)]
    pub max_tokens: usize,
    /// Repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Builder threads of the parallel pass (default: every core); a
    /// one-thread pass is always timed beside it.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs a benchmark and prints one JSON object.
fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Build(a) => build(a),
        Bench::Train(a) => train(a),
        Bench::Collective(a) => collective(a),
        Bench::Publish(a) => tokio::runtime::Runtime::new()?.block_on(publish(a)),
        Bench::Drain(a) => tokio::runtime::Runtime::new()?.block_on(drain_until_signal(a)),
        Bench::Checkpoint(a) => checkpoint::run(a),
    }
}

/// The Rust side of pretext's side-by-side benchmarks.
#[derive(Debug, clap::Parser)]
#[command(name = "pretext-bench", version)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    pretext_ops::init_tracing(false, "info");
    match run(cli.bench) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

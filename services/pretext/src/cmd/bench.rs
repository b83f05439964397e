//! `pretext bench …`: the Rust side of the side-by-side benchmarks under
//! `bench/` (the harnesses there run the references in the same invocation).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use pretext_core::batch::BatchRow;
use pretext_core::bucket::{BucketConfig, Bucketer};
use pretext_core::encoder::BatchEncoder;
use pretext_core::input::{ValidatingReader, discover};
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::{IdRegistry, ValidationConfig};
use pretext_model::Precision;
use pretext_model::tch::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::json;

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
    Checkpoint(super::bench_checkpoint::Args),
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
pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Build(a) => build(a),
        Bench::Train(a) => train(a),
        Bench::Collective(a) => collective(a),
        Bench::Publish(a) => tokio::runtime::Runtime::new()?.block_on(publish(a)),
        Bench::Drain(a) => tokio::runtime::Runtime::new()?.block_on(drain_until_signal(a)),
        Bench::Checkpoint(a) => super::bench_checkpoint::run(a),
    }
}

fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<BatchRow>> {
    let mut rows = Vec::new();
    let mut ids = IdRegistry::default();
    for f in discover(paths)? {
        let mut r = ValidatingReader::open(&f, ValidationConfig::default(), None, None)?;
        while let Some(c) = r.next_chunk(&mut ids)? {
            rows.extend(c.verdict.rows.into_iter().map(|r| BatchRow {
                seq_id: r.id,
                values: r.values,
                label: None,
            }));
        }
    }
    Ok(rows)
}

/// What one timed pass of batch building produced.
#[derive(Clone, Copy, Default)]
struct BuildPass {
    batches: u64,
    bytes: u64,
    padded: u64,
}

/// Buckets `rows` in arrival order, then builds and encodes every batch on
/// `threads` threads (each takes the next batch as it finishes one, as the
/// producer's concurrent tasks do).
fn build_pass(
    rows: &[BatchRow],
    cfg: &BucketConfig,
    mask: &MaskConfig,
    threads: usize,
) -> anyhow::Result<BuildPass> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut bucketer = Bucketer::new(cfg.clone());
    let mut groups = Vec::new();
    for r in rows {
        if let Some(g) = bucketer
            .push(r.values.len(), r)
            .map_err(|_| anyhow::anyhow!("row too long"))?
        {
            groups.push(g);
        }
    }
    groups.extend(bucketer.flush());
    let next = AtomicUsize::new(0);
    let work = || {
        let mut pass = BuildPass::default();
        let mut encoder = BatchEncoder::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((l, rs)) = groups.get(i) else {
                return pass;
            };
            let b = encoder.encode(Task::Masked, mask, 0, *l, rs, None);
            pass.padded += b.stats.padded_tokens;
            pass.bytes += b.bytes.len() as u64;
            pass.batches += 1;
        }
    };
    let passes: Vec<BuildPass> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(work)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("builder thread"))
            .collect()
    });
    Ok(passes.iter().fold(BuildPass::default(), |a, p| BuildPass {
        batches: a.batches + p.batches,
        bytes: a.bytes + p.bytes,
        padded: a.padded + p.padded,
    }))
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let rows = load(&a.data)?;
    let tokens: u64 = rows.iter().map(|r| r.values.len() as u64).sum();
    let cfg = BucketConfig {
        max_tokens: a.max_tokens,
        ..BucketConfig::default()
    };
    let mask = MaskConfig::default();
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // Best of `repeat`, on one thread and on `threads`.
    let timed = |n: usize| -> anyhow::Result<(f64, BuildPass)> {
        let mut best = (f64::INFINITY, BuildPass::default());
        for _ in 0..a.repeat {
            let t0 = Instant::now();
            let pass = build_pass(&rows, &cfg, &mask, n)?;
            let dt = t0.elapsed().as_secs_f64();
            if dt < best.0 {
                best = (dt, pass);
            }
        }
        Ok(best)
    };
    let (one_s, one) = timed(1)?;
    let (best, pass) = timed(threads)?;
    anyhow::ensure!(
        (one.batches, one.bytes) == (pass.batches, pass.bytes),
        "one thread and {threads} threads built different batches"
    );
    let BuildPass {
        batches,
        bytes,
        padded,
    } = pass;
    // Random batching: arrival order, each batch padded to its longest row.
    let mut order: Vec<usize> = rows.iter().map(|r| r.values.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    let (mut rand_total, mut cur_max, mut cur_rows) = (0u64, 0usize, 0usize);
    for len in order {
        let m = cur_max.max(len);
        if (cur_rows + 1) * m > a.max_tokens && cur_rows > 0 {
            rand_total += (cur_rows * cur_max) as u64;
            (cur_max, cur_rows) = (len, 1);
        } else {
            (cur_max, cur_rows) = (m, cur_rows + 1);
        }
    }
    rand_total += (cur_rows * cur_max) as u64;
    let doc = json!({
        "rows": rows.len(),
        "tokens": tokens,
        "seconds": best,
        "tokens_per_s": tokens as f64 / best,
        "threads": threads,
        "seconds_1thread": one_s,
        "tokens_per_s_1thread": tokens as f64 / one_s,
        "batches": batches,
        "bytes": bytes,
        "buckets": cfg.edges.len(),
        "edges": cfg.edges,
        "padded_fraction": padded as f64 / (padded + tokens) as f64,
        "random_batching_padded_fraction": 1.0 - tokens as f64 / rand_total as f64,
    });
    println!("{doc}");
    Ok(ExitCode::SUCCESS)
}

/// One timed producer run, the ceiling run after it, and the producer on
/// the in-process transport (its own speed, with no broker beside it).
struct PublishRound {
    summary: pretext_producer::ProducerSummary,
    produce_s: f64,
    ceiling_s: f64,
    /// Publishers of the round's ceiling run.
    publishers: u64,
    alone_s: f64,
}

/// The producer of `bench publish`: defaults, but for the flags given.
fn producer_config(
    a: &PublishArgs,
    ns: &str,
    run_dir: &std::path::Path,
) -> pretext_producer::ProducerConfig {
    let mut cfg = pretext_producer::ProducerConfig::new(
        a.data.clone(),
        Task::Masked,
        ns,
        run_dir.to_path_buf(),
    );
    cfg.buckets.max_tokens = a.max_tokens;
    cfg.concurrency = a.concurrency.unwrap_or(cfg.concurrency);
    cfg.task_rows = a.task_rows.unwrap_or(cfg.task_rows);
    cfg
}

/// Publisher counts the ceiling runs take in turn: `--ceiling-publishers`,
/// or one and as many as the producer builds tasks at once.
fn ceiling_publishers(a: &PublishArgs) -> Vec<u64> {
    match a.ceiling_publishers {
        Some(n) => vec![n.max(1) as u64],
        None => {
            let n = producer_config(a, "ceiling", &std::env::temp_dir()).concurrency;
            let mut counts = vec![1, n.max(1) as u64];
            counts.dedup();
            counts
        }
    }
}

/// One timed ceiling run: `batches` pre-built payloads of `size` bytes
/// split among `publishers` publishers, each with its confirm window.
async fn ceiling_run(
    a: &PublishArgs,
    transport: &pretext_mq::SharedTransport,
    ns: &str,
    batches: u64,
    size: usize,
    publishers: u64,
) -> anyhow::Result<f64> {
    use pretext_mq::{OutMessage, Topology};
    let ceil_ns = format!("{ns}-ceiling-{publishers}");
    let topo = Topology::new(&ceil_ns);
    topo.declare(&**transport).await?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let drainer = if a.drain {
        Some(drain(transport, &ceil_ns).await?)
    } else {
        None
    };
    tokio::time::sleep(std::time::Duration::from_millis(a.settle_ms)).await;
    let t0 = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for k in 0..publishers {
        let (transport, queue, payload) = (transport.clone(), topo.pretrain(), payload.clone());
        let count = batches / publishers + u64::from(k < batches % publishers);
        senders.spawn(async move {
            let mut p = transport.publisher(&queue).await?;
            for i in 0..count {
                p.send(OutMessage::new(format!("c{k}-{i}"), payload.clone()))
                    .await?;
            }
            p.flush().await?;
            anyhow::Ok(())
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(d) = drainer {
        d.abort();
    }
    topo.delete(&**transport).await?;
    Ok(seconds)
}

async fn publish_round(
    a: &PublishArgs,
    transport: &pretext_mq::SharedTransport,
    round: usize,
) -> anyhow::Result<PublishRound> {
    use pretext_mq::Topology;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let run_dir = std::env::temp_dir().join(format!("pretext-bench-publish-{stamp}-{round}"));
    let ns = format!("bench-{stamp}-{round}");
    let cfg = producer_config(a, &ns, &run_dir);
    // Queues are declared before the clock starts, as for the ceiling below
    // (creating quorum queues takes tens of ms); the producer's own declare
    // then finds them.
    Topology::with_config(&ns, cfg.topology)
        .declare(&**transport)
        .await?;
    let drainer = if a.drain {
        Some(drain(transport, &ns).await?)
    } else {
        None
    };
    tokio::time::sleep(std::time::Duration::from_millis(a.settle_ms)).await;
    let t0 = Instant::now();
    let summary = pretext_producer::run(cfg, transport.clone(), std::future::pending()).await?;
    let produce_s = t0.elapsed().as_secs_f64();
    if let Some(d) = drainer {
        d.abort();
    }
    Topology::new(&ns).delete(&**transport).await?;
    let _ = std::fs::remove_dir_all(&run_dir);
    // Ceiling: the same number of messages of the same mean size. Rounds
    // alternate between one publisher and as many as the producer runs, so
    // that the ceiling gets as many timed runs as the producer.
    let size = (summary.bytes / summary.batches.max(1)) as usize;
    let counts = ceiling_publishers(a);
    let publishers = counts[round % counts.len()];
    let ceiling_s = ceiling_run(a, transport, &ns, summary.batches, size, publishers).await?;
    // The producer alone: the same run on the in-process transport.
    let memory = pretext_mq::connect("memory", pretext_mq::RabbitConfig::default()).await?;
    let cfg = producer_config(a, &ns, &run_dir);
    let t0 = Instant::now();
    let alone = pretext_producer::run(cfg, memory, std::future::pending()).await?;
    let alone_s = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&run_dir);
    anyhow::ensure!(
        alone.batches == summary.batches,
        "the in-process run built another batch count"
    );
    Ok(PublishRound {
        summary,
        produce_s,
        ceiling_s,
        publishers,
        alone_s,
    })
}

async fn publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
    let transport = pretext_mq::connect(&a.broker, pretext_mq::RabbitConfig::default()).await?;
    let mut rounds = Vec::new();
    for round in 0..a.repeat.max(1) {
        let r = publish_round(&a, &transport, round).await?;
        eprintln!(
            "round {round}: produce {:.3} s, ceiling {:.3} s, producer alone {:.3} s",
            r.produce_s, r.ceiling_s, r.alone_s
        );
        rounds.push(r);
    }
    let produce_s = rounds
        .iter()
        .map(|r| r.produce_s)
        .fold(f64::INFINITY, f64::min);
    let ceiling_s = rounds
        .iter()
        .map(|r| r.ceiling_s)
        .fold(f64::INFINITY, f64::min);
    let alone_s = rounds
        .iter()
        .map(|r| r.alone_s)
        .fold(f64::INFINITY, f64::min);
    // Each round's producer and ceiling ran seconds apart: their ratio is
    // the least exposed to a machine whose speed drifts between rounds.
    let mut paired: Vec<f64> = rounds.iter().map(|r| r.ceiling_s / r.produce_s).collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = (paired[(paired.len() - 1) / 2] + paired[paired.len() / 2]) / 2.0;
    let summary = &rounds[0].summary;
    let mb = summary.bytes as f64 / 1e6;
    let doc = json!({
        "rounds": rounds.len(),
        "batches": summary.batches,
        "tokens": summary.tokens,
        "megabytes": mb,
        "produce_seconds": produce_s,
        "produce_tokens_per_s": summary.tokens as f64 / produce_s,
        "produce_mb_per_s": mb / produce_s,
        "ceiling_seconds": ceiling_s,
        "ceiling_mb_per_s": mb / ceiling_s,
        "fraction_of_ceiling": ceiling_s / produce_s,
        "paired_fraction_median": paired_median,
        "ceiling_publishers": ceiling_publishers(&a),
        "ceiling_publishers_each": rounds.iter().map(|r| r.publishers).collect::<Vec<_>>(),
        "alone_seconds": alone_s,
        "alone_mb_per_s": mb / alone_s,
        "alone_tokens_per_s": summary.tokens as f64 / alone_s,
        "padded_fraction": summary.padded_fraction(),
        "produce_seconds_each": rounds.iter().map(|r| r.produce_s).collect::<Vec<_>>(),
        "ceiling_seconds_each": rounds.iter().map(|r| r.ceiling_s).collect::<Vec<_>>(),
    });
    println!("{doc}");
    Ok(ExitCode::SUCCESS)
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    use pretext_model::tch::{Kind, Tensor};
    use pretext_model::{AdamW, AdamWConfig, ModelConfig, PretrainModel};
    if a.device.is_cuda() && !pretext_model::tch::Cuda::is_available() {
        anyhow::bail!("--device cuda: libtorch sees no CUDA device");
    }
    tch_threads(a.threads);
    pretext_model::tch::manual_seed(0);
    std::fs::create_dir_all(&a.out)?;
    let cfg = ModelConfig {
        width: a.width,
        depth: a.depth,
        ..ModelConfig::default()
    };
    let model = PretrainModel::new(&cfg, Device::Cpu)?;
    model.var_store().save(a.out.join("model.safetensors"))?;
    std::fs::write(a.out.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    // A fixed batch: random values, 15% MASK, rows of decreasing length.
    let (n, l) = (a.rows, a.len);
    let values = Tensor::randint(41, [n, l], (Kind::Int64, Device::Cpu));
    let chosen = Tensor::rand([n, l], (Kind::Float, Device::Cpu)).lt(0.15);
    let tokens = values.where_self(&chosen.logical_not(), &Tensor::from(41i64));
    let lengths = Tensor::from_slice(&(0..n).map(|i| l - i * (l / (2 * n))).collect::<Vec<i64>>());
    let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let loss_mask = chosen.logical_and(&positions.lt_tensor(&lengths.unsqueeze(1)));
    let logits = model.forward_t(&tokens, &lengths, false)?;
    Tensor::write_safetensors(
        &[
            ("tokens", &tokens),
            ("lengths", &lengths),
            ("targets", &values),
            ("loss_mask", &loss_mask.to_kind(Kind::Uint8)),
            ("logits", &logits.contiguous()),
        ],
        a.out.join("batch.safetensors"),
    )?;
    // The timed model: the same weights on the device, at the precision.
    let mut model = if a.device == Device::Cpu {
        model
    } else {
        let mut on = PretrainModel::new(&cfg, a.device)?;
        on.var_store_mut().copy(model.var_store())?;
        on
    };
    model.set_precision(a.precision);
    let (tokens, lengths, values, loss_mask) = (
        tokens.to_device(a.device),
        lengths.to_device(a.device),
        values.to_device(a.device),
        loss_mask.to_device(a.device),
    );
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let mut step = || -> anyhow::Result<()> {
        opt.zero_grad();
        let stats = model.loss(&tokens, &lengths, &values, &loss_mask, true)?;
        (stats.sum / stats.count as f64).backward();
        opt.step()?;
        Ok(())
    };
    step()?;
    sync(a.device);
    let t0 = Instant::now();
    for _ in 0..a.steps {
        step()?;
    }
    sync(a.device);
    let secs = t0.elapsed().as_secs_f64();
    let real: i64 = Vec::<i64>::try_from(&lengths.to_device(Device::Cpu))?
        .iter()
        .sum();
    println!(
        "{}",
        json!({
            "steps": a.steps,
            "seconds": secs,
            "real_tokens_per_step": real,
            "tokens_per_s": (real as f64) * a.steps as f64 / secs,
            "threads": a.threads,
            "device": format!("{:?}", a.device),
            "precision": a.precision,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn tch_threads(n: i32) {
    pretext_model::tch::set_num_threads(n);
    pretext_model::tch::set_num_interop_threads(1);
}

/// Consumes and acks everything published to `{ns}.pretrain` until aborted.
async fn drain_until_signal(a: DrainArgs) -> anyhow::Result<ExitCode> {
    let transport = pretext_mq::connect(&a.broker, pretext_mq::RabbitConfig::default()).await?;
    let drainer = drain(&transport, &a.ns).await?;
    println!("draining {}", pretext_mq::Topology::new(&a.ns).pretrain());
    super::shutdown_on_signal(None).await;
    drainer.abort();
    pretext_mq::Topology::new(&a.ns).delete(&*transport).await?;
    Ok(ExitCode::SUCCESS)
}

async fn drain(
    transport: &pretext_mq::SharedTransport,
    ns: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let topo = pretext_mq::Topology::new(ns);
    topo.declare(&**transport).await?;
    let mut c = transport
        .consume(
            &topo.pretrain(),
            pretext_mq::ConsumeOptions { prefetch: 256 },
        )
        .await?;
    Ok(tokio::spawn(async move {
        while let Ok(Some(d)) = c.next().await {
            let _ = d.ack().await;
        }
    }))
}

/// `pretext bench collective`: what libtorch sees (CUDA, NCCL), then one
/// rank's data-parallel round as the trainer takes it, on a group of one:
/// parameters broadcast, a step's gradients all-reduced in flat buckets
/// (a sum over one rank must give them back unchanged), a few numbers
/// summed; then the bucketed all-reduce timed. Prints one JSON object, with
/// `"ok": false` and the error when any of it fails.
fn collective(a: CollectiveArgs) -> anyhow::Result<ExitCode> {
    use pretext_model::tch::Cuda;
    let mut doc = json!({
        "device": format!("{:?}", a.device),
        "cuda_available": Cuda::is_available(),
        "cuda_devices": Cuda::device_count(),
        "cudnn_available": Cuda::cudnn_is_available(),
        "nccl_built": pretext_dist::nccl_built(),
    });
    let code = match collective_round(&a) {
        Ok(round) => {
            doc["ok"] = json!(true);
            doc["round"] = round;
            ExitCode::SUCCESS
        }
        Err(e) => {
            doc["ok"] = json!(false);
            doc["error"] = json!(format!("{e:#}"));
            ExitCode::FAILURE
        }
    };
    println!("{doc}");
    Ok(code)
}

fn collective_round(a: &CollectiveArgs) -> anyhow::Result<serde_json::Value> {
    use std::time::Duration;

    use pretext_dist::{
        Backend, DEFAULT_BUCKET_BYTES, GradBuckets, GroupOptions, ProcessGroup, Store, digest,
    };
    use pretext_model::tch::{Kind, Tensor};
    use pretext_model::{ModelConfig, PretrainModel};
    let device = a.device;
    let backend = if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    let timeout = Duration::from_secs(60);
    let store = Store::connect("127.0.0.1", 0, true, timeout)?;
    let group = ProcessGroup::new(
        store,
        0,
        1,
        GroupOptions {
            backend,
            timeout,
            ..GroupOptions::default()
        },
    )?;
    pretext_model::tch::manual_seed(0);
    let cfg = ModelConfig {
        width: a.width,
        ..ModelConfig::default()
    };
    let model = PretrainModel::new(&cfg, device)?;
    let mut params = model.var_store().trainable_variables();
    group.check_equal("parameter tensors", params.len() as i64)?;
    let before = digest(&params)?;
    group.broadcast(&mut params, 0)?;
    anyhow::ensure!(
        digest(&params)? == before,
        "a broadcast from the only rank changed the parameters"
    );
    // One training step's gradients.
    let (n, l) = (4i64, 512i64);
    let values = Tensor::randint(41, [n, l], (Kind::Int64, device));
    let lengths = Tensor::full([n], l, (Kind::Int64, device));
    let loss_mask = Tensor::rand([n, l], (Kind::Float, device)).lt(0.15);
    let tokens = values.where_self(
        &loss_mask.logical_not(),
        &Tensor::from(41i64).to_device(device),
    );
    let stats = model.loss(&tokens, &lengths, &values, &loss_mask, true)?;
    (stats.sum / stats.count as f64).backward();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let buckets = GradBuckets::new(&params, DEFAULT_BUCKET_BYTES);
    let summed = buckets.all_reduce(&group, &grads)?;
    let mut max_diff = 0f64;
    for (s, g) in summed.iter().zip(&grads) {
        anyhow::ensure!(s.device() == device, "reduced gradient left {device:?}");
        max_diff = max_diff.max((s - g).abs().max().double_value(&[]));
    }
    anyhow::ensure!(
        max_diff == 0.0,
        "a sum over one rank changed the gradients (max diff {max_diff})"
    );
    let mut sums = [1.5f64, stats.count as f64];
    group.all_reduce_f64(&mut sums)?;
    anyhow::ensure!(
        sums == [1.5, stats.count as f64],
        "f64 sum over one rank: {sums:?}"
    );
    sync(device);
    let t0 = Instant::now();
    for _ in 0..a.rounds {
        buckets.all_reduce(&group, &grads)?;
    }
    sync(device);
    let secs = t0.elapsed().as_secs_f64();
    group.destroy()?;
    Ok(json!({
        "backend": format!("{backend:?}"),
        "world": 1,
        "buckets": buckets.len(),
        "elements": buckets.numel(),
        "max_grad_diff": max_diff,
        "allreduce_ms": secs * 1e3 / a.rounds.max(1) as f64,
        "params_digest": digest(&params)?,
    }))
}

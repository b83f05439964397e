//! `pretext bench …`: the Rust side of the side-by-side benchmarks under
//! `bench/` (the harnesses there run the references in the same invocation).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use pretext_core::batch::{Batch, BatchRow};
use pretext_core::bucket::{BucketConfig, Bucketer};
use pretext_core::input::{ValidatingReader, discover};
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::{IdRegistry, ValidationConfig};
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
    /// Parquet → broker with confirms, against the broker's ceiling:
    /// pre-built payloads of the same size and count, same confirm window.
    Publish(PublishArgs),
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
}

/// Runs a benchmark and prints one JSON object.
pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Build(a) => build(a),
        Bench::Train(a) => train(a),
        Bench::Publish(a) => tokio::runtime::Runtime::new()?.block_on(publish(a)),
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

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let rows = load(&a.data)?;
    let tokens: u64 = rows.iter().map(|r| r.values.len() as u64).sum();
    let cfg = BucketConfig {
        max_tokens: a.max_tokens,
        ..BucketConfig::default()
    };
    let mask = MaskConfig::default();
    let mut best = f64::INFINITY;
    let (mut batches, mut bytes, mut padded) = (0u64, 0u64, 0u64);
    for _ in 0..a.repeat {
        let t0 = Instant::now();
        (batches, bytes, padded) = (0, 0, 0);
        let mut bucketer = Bucketer::new(cfg.clone());
        let mut emit = |l: usize, rs: Vec<&BatchRow>| {
            let b = Batch::build(Task::Masked, &mask, 0, l, &rs);
            padded += b.stats().padded_tokens;
            let enc = b.into_encoded(None);
            batches += 1;
            bytes += enc.len() as u64;
        };
        for r in &rows {
            if let Some((l, rs)) = bucketer
                .push(r.values.len(), r)
                .map_err(|_| anyhow::anyhow!("row too long"))?
            {
                emit(l, rs);
            }
        }
        for (l, rs) in bucketer.flush() {
            emit(l, rs);
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
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

async fn publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
    use pretext_mq::{OutMessage, RabbitConfig, Topology};
    let transport = pretext_mq::connect(&a.broker, RabbitConfig::default()).await?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let run_dir = std::env::temp_dir().join(format!("pretext-bench-publish-{stamp}"));
    let ns = format!("bench-{stamp}");
    let mut cfg =
        pretext_producer::ProducerConfig::new(a.data.clone(), Task::Masked, &ns, run_dir.clone());
    cfg.buckets.max_tokens = a.max_tokens;
    let drainer = if a.drain {
        Some(drain(&transport, &ns).await?)
    } else {
        None
    };
    let t0 = Instant::now();
    let summary = pretext_producer::run(cfg, transport.clone(), std::future::pending()).await?;
    let produce_s = t0.elapsed().as_secs_f64();
    if let Some(d) = drainer {
        d.abort();
    }
    Topology::new(&ns).delete(&*transport).await?;
    // Ceiling: the same number of messages of the same mean size.
    let ceil_ns = format!("{ns}-ceiling");
    let topo = Topology::new(&ceil_ns);
    topo.declare(&*transport).await?;
    let size = (summary.bytes / summary.batches.max(1)) as usize;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let drainer = if a.drain {
        Some(drain(&transport, &ceil_ns).await?)
    } else {
        None
    };
    let t0 = Instant::now();
    let mut p = transport.publisher(&topo.pretrain()).await?;
    for i in 0..summary.batches {
        p.send(OutMessage::new(format!("c{i}"), payload.clone()))
            .await?;
    }
    p.flush().await?;
    let ceiling_s = t0.elapsed().as_secs_f64();
    if let Some(d) = drainer {
        d.abort();
    }
    topo.delete(&*transport).await?;
    let _ = std::fs::remove_dir_all(&run_dir);
    let mb = summary.bytes as f64 / 1e6;
    let doc = json!({
        "batches": summary.batches,
        "tokens": summary.tokens,
        "megabytes": mb,
        "produce_seconds": produce_s,
        "produce_tokens_per_s": summary.tokens as f64 / produce_s,
        "produce_mb_per_s": mb / produce_s,
        "ceiling_seconds": ceiling_s,
        "ceiling_mb_per_s": mb / ceiling_s,
        "fraction_of_ceiling": ceiling_s / produce_s,
        "padded_fraction": summary.padded_fraction(),
    });
    println!("{doc}");
    Ok(ExitCode::SUCCESS)
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    use pretext_model::tch::{Device, Kind, Tensor};
    use pretext_model::{AdamW, AdamWConfig, ModelConfig, PretrainModel};
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
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let mut step = || -> anyhow::Result<()> {
        opt.zero_grad();
        let stats = model.loss(&tokens, &lengths, &values, &loss_mask, true)?;
        (stats.sum / stats.count as f64).backward();
        opt.step()?;
        Ok(())
    };
    step()?;
    let t0 = Instant::now();
    for _ in 0..a.steps {
        step()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let real: i64 = Vec::<i64>::try_from(&lengths)?.iter().sum();
    println!(
        "{}",
        json!({
            "steps": a.steps,
            "seconds": secs,
            "real_tokens_per_step": real,
            "tokens_per_s": (real as f64) * a.steps as f64 / secs,
            "threads": a.threads,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn tch_threads(n: i32) {
    pretext_model::tch::set_num_threads(n);
    pretext_model::tch::set_num_interop_threads(1);
}

/// Consumes and acks everything published to `{ns}.pretrain` until aborted.
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

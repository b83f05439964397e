//! `pretext-bench publish` (Parquet to the broker with confirms, against the
//! broker's own ceiling) and `pretext-bench drain`.

use std::process::ExitCode;
use std::time::Instant;

use pretext_core::task::Task;
use serde_json::json;

use crate::*;

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

pub(crate) async fn publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
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

/// Consumes and acks everything published to `{ns}.pretrain` until aborted.
pub(crate) async fn drain_until_signal(a: DrainArgs) -> anyhow::Result<ExitCode> {
    let transport = pretext_mq::connect(&a.broker, pretext_mq::RabbitConfig::default()).await?;
    let drainer = drain(&transport, &a.ns).await?;
    println!("draining {}", pretext_mq::Topology::new(&a.ns).pretrain());
    pretext_ops::shutdown_on_signal(None).await;
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

//! One file task: its row groups are read and validated, rows are bucketed
//! and built into batch messages in place on a blocking thread, and the batches are
//! published through a confirm window as they come (bounded channel:
//! memory stays flat whatever the row group size). The tasks of epoch 0
//! count the rejected rows and quarantine them in the run directory (one
//! file per task, rewritten whole when a task is redone).

use std::collections::BTreeSet;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pretext_core::batch::{BatchRow, BatchStats, CONTENT_TYPE, HeaderValue};
use pretext_core::bucket::Bucketer;
use pretext_core::control::FileTask;
use pretext_core::encoder::BatchEncoder;
use pretext_core::input::ValidatingReader;
use pretext_core::manifest::ManifestEntry;
use pretext_core::validate::{IdRegistry, Label};
use pretext_mq::{OutMessage, Publisher};
use pretext_ops::names;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use crate::plan::Plan;

use crate::{ProducerConfig, ProducerError};
/// Where rejected rows go, under the run directory.
pub use pretext_core::input::QUARANTINE_DIR;

/// Counts of one task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Rows published.
    pub sequences: u64,
    /// Real tokens.
    pub tokens: u64,
    /// Padding tokens.
    pub padded_tokens: u64,
    /// Message bytes.
    pub bytes: u64,
    /// Valid rows of other splits, not published.
    pub skipped_split_rows: u64,
    /// Rows rejected by validation (counted by the tasks of epoch 0 only).
    pub rejected_rows: u64,
}

/// What the builder thread counted besides the batches.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    skipped_split_rows: u64,
    rejected_rows: u64,
}

/// The confirmed result of a task.
#[derive(Debug)]
pub struct TaskOutput {
    /// The task.
    pub task_id: String,
    /// One manifest entry per confirmed batch.
    pub entries: Vec<ManifestEntry>,
    /// Counts.
    pub stats: TaskStats,
}

/// A built batch on its way to the broker.
struct Built {
    id: String,
    bytes: Vec<u8>,
    headers: Vec<(&'static str, HeaderValue)>,
    stats: BatchStats,
}

/// Runs one task to the point where all its batches are confirmed
/// (`publisher` is the producer's, kept across tasks). When `stop` turns
/// true (shutdown) it stops building, waits for the confirms of what it
/// sent, and returns `None`: the task is to be handed back and redone, and
/// the redo republishes the same ids.
pub async fn run_task(
    cfg: &ProducerConfig,
    plan: &Plan,
    task: &FileTask,
    publisher: &mut Box<dyn Publisher>,
    mut stop: watch::Receiver<bool>,
    building: OwnedSemaphorePermit,
) -> Result<Option<TaskOutput>, ProducerError> {
    let (tx, mut rx) = mpsc::channel::<Built>(4);
    let dups = plan
        .duplicate_rows
        .get(&task.file)
        .cloned()
        .unwrap_or_default();
    let (c, t) = (cfg.clone(), task.clone());
    let builder = tokio::task::spawn_blocking(move || build_batches(&c, dups, &t, &tx));
    let mut entries = Vec::new();
    let mut stats = TaskStats::default();
    let mut stopped = false;
    loop {
        let b = tokio::select! {
            biased;
            Ok(_) = stop.wait_for(|s| *s) => {
                stopped = true;
                break;
            }
            b = rx.recv() => match b {
                Some(b) => b,
                None => break,
            },
        };
        let mut msg = OutMessage::new(b.id.clone(), b.bytes)
            .with_content_type(CONTENT_TYPE)
            .with_header(
                pretext_core::batch::header::FILE_TASK,
                task.task_id.as_str(),
            );
        for (k, v) in b.headers {
            msg = match v {
                HeaderValue::Str(s) => msg.with_header(k, s),
                HeaderValue::Int(i) => msg.with_header(k, i),
            };
        }
        let bytes = msg.body.len() as u64;
        stats.bytes += bytes;
        publisher.send(msg).await?;
        metrics::counter!(names::PRODUCER_BATCHES_PUBLISHED).increment(1);
        metrics::counter!(names::PRODUCER_BYTES).increment(bytes);
        stats.sequences += b.stats.rows;
        stats.tokens += b.stats.real_tokens;
        stats.padded_tokens += b.stats.padded_tokens;
        entries.push(ManifestEntry {
            message_id: b.id,
            rows: b.stats.rows,
            tokens: b.stats.real_tokens,
            task_id: task.task_id.clone(),
        });
    }
    // Stopping: closing the channel makes the builder's next send fail,
    // which ends it.
    drop(rx);
    let t_sent = std::time::Instant::now();
    drop(building);
    let counted = builder
        .await
        .map_err(|e| ProducerError::Config(format!("batch builder failed: {e}")))??;
    stats.skipped_split_rows = counted.skipped_split_rows;
    stats.rejected_rows = counted.rejected_rows;
    publisher.flush().await?;
    tracing::debug!(task = %task.task_id, batches = entries.len(), flush_ms = t_sent.elapsed().as_millis() as u64, "task sent");
    if stopped {
        tracing::info!(task = %task.task_id, sent = entries.len(), "shutdown: task stopped, its sent batches confirmed");
        return Ok(None);
    }
    metrics::counter!(names::PRODUCER_BATCHES_CONFIRMED).increment(entries.len() as u64);
    metrics::counter!(names::PRODUCER_TOKENS).increment(stats.tokens);
    Ok(Some(TaskOutput {
        task_id: task.task_id.clone(),
        entries,
        stats,
    }))
}

/// Reads the task's row groups and sends their batches; `dups` are the
/// file's rows that the plan found to repeat an earlier id. Returns the rows
/// skipped because of their split and, at epoch 0, the rows rejected (which
/// are then also quarantined).
fn build_batches(
    cfg: &ProducerConfig,
    dups: BTreeSet<u64>,
    task: &FileTask,
    tx: &mpsc::Sender<Built>,
) -> Result<Counted, ProducerError> {
    let first_epoch = task.epoch == 0;
    let quarantine = cfg.run_dir.join(QUARANTINE_DIR);
    let mut reader = ValidatingReader::open(
        std::path::Path::new(&task.file),
        cfg.validation,
        Some(task.row_groups.clone()),
        first_epoch.then_some(quarantine.as_path()),
    )?
    .with_duplicates(dups);
    let mut ids = IdRegistry::default();
    let mut bucketer: Bucketer<BatchRow> = Bucketer::new(cfg.buckets.clone());
    let mut counted = Counted::default();
    let mut encoder = BatchEncoder::new();
    let mut emit = |l: usize, rows: Vec<BatchRow>| -> bool {
        let e = encoder.encode(cfg.task, &cfg.mask, task.epoch, l, &rows, cfg.compression);
        let built = Built {
            id: e.message_id,
            bytes: e.bytes,
            headers: e.headers.into_iter().collect(),
            stats: e.stats,
        };
        tx.blocking_send(built).is_ok()
    };
    while let Some(chunk) = reader.next_chunk(&mut ids)? {
        if first_epoch {
            for (row, reason) in &chunk.verdict.rejected {
                tracing::warn!(file = %task.file, row = chunk.first_row + *row as u64, %reason, "row rejected");
            }
            counted.rejected_rows += chunk.verdict.rejected.len() as u64;
        }
        for row in chunk.verdict.rows {
            if !cfg.splits.contains(&row.split) {
                counted.skipped_split_rows += 1;
                continue;
            }
            let label = match row.label {
                Some(Label::Int(v)) => i32::try_from(v).ok(),
                _ => None,
            };
            let len = row.values.len();
            match bucketer.push(
                len,
                BatchRow {
                    seq_id: row.id,
                    values: row.values,
                    label,
                },
            ) {
                Ok(Some((l, rows))) => {
                    if !emit(l, rows) {
                        return Ok(counted); // the publisher stopped; its error is reported there
                    }
                }
                Ok(None) => {}
                Err(r) => {
                    return Err(ProducerError::Config(format!(
                        "row {} of length {} exceeds the last bucket edge",
                        r.seq_id,
                        r.values.len()
                    )));
                }
            }
        }
    }
    for (l, rows) in bucketer.flush() {
        if !emit(l, rows) {
            break;
        }
    }
    Ok(counted)
}

/// A progress bar over file tasks, drawn only on a terminal.
pub fn progress_bar(tasks: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(tasks), ProgressDrawTarget::stderr());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} produce [{bar:30}] {pos}/{len} tasks {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb
}

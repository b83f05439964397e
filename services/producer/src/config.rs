//! The producer's configuration: every field documented, with defaults.

use std::path::PathBuf;

use pretext_core::batch::IpcCompression;
use pretext_core::bucket::BucketConfig;
use pretext_core::split::Split;
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::ValidationConfig;
use pretext_mq::MAX_BODY_BYTES;
use pretext_mq::TopologyConfig;
use serde::{Deserialize, Serialize};

use crate::ProducerError;

/// Configuration of one producer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProducerConfig {
    /// Parquet files or directories.
    pub data: Vec<PathBuf>,
    /// Targets to build.
    pub task: Task,
    /// Namespace prefixing every queue.
    pub ns: String,
    /// Run directory shared with the trainers (plan, manifests, quarantine).
    pub run_dir: PathBuf,
    /// Epochs to publish (each with fresh masks).
    pub epochs: u32,
    /// Splits published (default: train only; valid and test never reach
    /// pretraining).
    pub splits: Vec<Split>,
    /// This producer's id (names its manifest).
    pub producer_id: String,
    /// Row rules.
    pub validation: ValidationConfig,
    /// Bucket edges and token budget.
    pub buckets: BucketConfig,
    /// Masking (its `seed` is the run's seed).
    pub mask: MaskConfig,
    /// Queue bounds (every service of a namespace must use the same).
    pub topology: TopologyConfig,
    /// Optional IPC body compression.
    pub compression: Option<IpcCompression>,
    /// Rows per file task (consecutive row groups are grouped up to this).
    pub task_rows: usize,
    /// File tasks building batches at once, each on its own thread (a task
    /// that has sent everything waits for its confirms outside this count,
    /// so up to twice as many are in hand).
    pub concurrency: usize,
    /// How long without a task before checking whether the files queue is
    /// empty. When it is, the producer stops taking tasks (the consumer is
    /// cancelled), does the ones the broker had already sent it, and stops.
    pub idle_check_ms: u64,
    /// Seconds a shutdown (SIGTERM) waits for the tasks in hand to stop
    /// cleanly (building stops, confirms of what was sent are awaited, the
    /// task goes back to the queue) before abandoning them outright.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

/// [`ProducerConfig::shutdown_grace_secs`] by default: well under the 60 s
/// stop grace period the compose file gives producers.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

fn default_shutdown_grace_secs() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}

impl ProducerConfig {
    /// A config with defaults for everything but the data, task, namespace
    /// and run directory.
    pub fn new(data: Vec<PathBuf>, task: Task, ns: &str, run_dir: PathBuf) -> Self {
        Self {
            data,
            task,
            ns: ns.to_owned(),
            run_dir,
            epochs: 1,
            splits: vec![Split::Train],
            producer_id: default_producer_id(),
            validation: ValidationConfig::default(),
            buckets: BucketConfig::default(),
            mask: MaskConfig::default(),
            topology: TopologyConfig::default(),
            compression: None,
            task_rows: 512,
            concurrency: 2,
            idle_check_ms: 100,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }

    /// Rejects unusable settings.
    pub fn check(&self) -> Result<(), ProducerError> {
        let bad = |m: &str| Err(ProducerError::Config(m.to_owned()));
        if self.data.is_empty() {
            return bad("no input paths");
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1");
        }
        if self.splits.is_empty() {
            return bad("no splits to publish");
        }
        if let Err(m) = self.mask.check() {
            return bad(&m);
        }
        if self
            .buckets
            .edges
            .last()
            .is_none_or(|&e| e < self.validation.max_len)
        {
            return bad("the last bucket edge must cover --max-len");
        }
        // The one limit a batch must fit: the publisher's (which is within
        // what consumers decode, `MAX_MESSAGE_BYTES`; a test checks it).
        let largest = self.buckets.largest_batch_bytes();
        if largest > MAX_BODY_BYTES {
            return Err(ProducerError::Config(format!(
                "--max-tokens {} makes batches of up to {largest} bytes, over the \
                 {MAX_BODY_BYTES}-byte message limit of the publisher (the batch would \
                 be refused when published); lower it",
                self.buckets.max_tokens
            )));
        }
        if self.ns.is_empty() || self.producer_id.is_empty() {
            return bad("namespace and producer id must not be empty");
        }
        Ok(())
    }
}

/// `<hostname>-<pid>`: unique per process, readable in manifests.
pub fn default_producer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProducerConfig {
        ProducerConfig::new(vec!["data".into()], Task::Masked, "ns", "run".into())
    }

    #[test]
    fn a_token_budget_whose_batches_pass_the_message_limit_is_refused() {
        let mut cfg = config();
        cfg.check().expect("the defaults are usable");
        cfg.buckets.max_tokens = 6_000_000;
        let err = cfg
            .check()
            .expect_err("6M tokens make messages over 16 MiB");
        let text = err.to_string();
        assert!(
            text.contains("--max-tokens 6000000") && text.contains("message limit"),
            "{text}"
        );
        cfg.buckets.max_tokens = 4_000_000;
        cfg.check().expect("4M tokens fit in 16 MiB");
    }

    #[test]
    fn the_limit_checked_at_start_is_the_publishers() {
        // Whatever is published can be decoded.
        const { assert!(MAX_BODY_BYTES <= pretext_core::batch::MAX_MESSAGE_BYTES) };
        // The largest budget whose batches the check lets through...
        let mut cfg = config();
        let (mut ok, mut over) = (1_000_000usize, 8_000_000usize);
        while over - ok > 1 {
            let mid = (ok + over) / 2;
            cfg.buckets.max_tokens = mid;
            if cfg.check().is_ok() {
                ok = mid;
            } else {
                over = mid;
            }
        }
        // ...makes batches the publisher takes, and one more token does not.
        cfg.buckets.max_tokens = ok;
        assert!(cfg.buckets.largest_batch_bytes() <= MAX_BODY_BYTES);
        cfg.buckets.max_tokens = over;
        assert!(cfg.buckets.largest_batch_bytes() > MAX_BODY_BYTES);
    }
}

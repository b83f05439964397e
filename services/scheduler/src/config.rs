//! [`SchedulerConfig`]: everything one scheduler needs, with documented defaults.

use std::path::PathBuf;

use pretext_core::validate::ValidationConfig;

use crate::error::SchedulerError;
use crate::status::RunStatus;

/// Default lease time in seconds: renewed every third of it while a stage
/// runs; a scheduler that dies on another host blocks the registry this long.
pub const DEFAULT_LEASE_SECS: i64 = 600;
/// Default fraction of the earlier `train` rows replayed with new data.
pub const DEFAULT_REPLAY_FRACTION: f64 = 0.25;

/// One scheduler: where files arrive, where the registry is, and the
/// budgets of a retrain.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The inbox: a local directory, or an object store URL (`file:///…`).
    pub inbox: String,
    /// The registry database (SQLite, one file).
    pub registry: PathBuf,
    /// Where copies of registered files, quarantine and run directories go
    /// (default: beside the registry, `<registry>.d/`).
    pub work_dir: Option<PathBuf>,
    /// Transport of pretraining: `memory` (in-process, default) or `amqp://…`.
    pub broker: String,
    /// Namespace prefix; run N uses queues `{namespace}-run{N}.*` (default `sched`).
    pub namespace: String,
    /// A fixed labeled dataset for fine-tuning and evaluation (`train` fits,
    /// `valid` selects, `test` judges); default: the labeled rows of every
    /// file registered up to the run.
    pub labeled: Option<PathBuf>,
    /// A candidate is promoted unless its test accuracy is below the
    /// promoted model's (on the same rows) by more than this (default 0).
    pub margin: f64,
    /// Fraction of the earlier runs' `train` rows replayed with the new
    /// data, drawn by a hash of (row id, run id) (default 0.25).
    pub replay_fraction: f64,
    /// Row rules.
    pub validation: ValidationConfig,
    /// Pretraining epochs over new + replayed rows (default 1).
    pub pretrain_epochs: u32,
    /// Width of a model started from scratch (default 64; a continued model
    /// keeps its own).
    pub width: i64,
    /// Residual blocks of a model started from scratch (default 6).
    pub depth: usize,
    /// libtorch threads (default 2).
    pub threads: usize,
    /// Seed of masks, weights and fine-tuning (default 0).
    pub seed: u64,
    /// Fine-tuning passes over the labeled train rows (default 5).
    pub finetune_epochs: u32,
    /// Least fine-tuning steps (default 30).
    pub finetune_min_steps: u64,
    /// Evaluations on `valid` per fine-tuning (default 3).
    pub finetune_evals: u32,
    /// Fine-tuning learning rate (default 2e-3).
    pub finetune_lr: f64,
    /// Fine-tune on crops of at most this many steps (default: none).
    pub train_crop: Option<usize>,
    /// Lease time in seconds (default 600).
    pub lease_secs: i64,
    /// Test hook: stop right after this status is committed, leaving the
    /// lease held as a killed process would (default none).
    pub stop_after: Option<RunStatus>,
}

impl SchedulerConfig {
    /// Defaults for everything but the inbox and the registry.
    pub fn new(inbox: impl Into<String>, registry: impl Into<PathBuf>) -> Self {
        Self {
            inbox: inbox.into(),
            registry: registry.into(),
            work_dir: None,
            broker: "memory".into(),
            namespace: "sched".into(),
            labeled: None,
            margin: 0.0,
            replay_fraction: DEFAULT_REPLAY_FRACTION,
            validation: ValidationConfig::default(),
            pretrain_epochs: 1,
            width: 64,
            depth: 6,
            threads: 2,
            seed: 0,
            finetune_epochs: 5,
            finetune_min_steps: 30,
            finetune_evals: 3,
            finetune_lr: 2e-3,
            train_crop: None,
            lease_secs: DEFAULT_LEASE_SECS,
            stop_after: None,
        }
    }

    /// The work directory.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| {
            let mut name = self.registry.as_os_str().to_owned();
            name.push(".d");
            PathBuf::from(name)
        })
    }

    /// Checks what can be checked before touching anything.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let fail = |m: String| Err(SchedulerError::Config(m));
        if self.inbox.is_empty() {
            return fail("no inbox".into());
        }
        if !(0.0..=1.0).contains(&self.replay_fraction) {
            return fail(format!(
                "replay fraction must be in [0, 1], got {}",
                self.replay_fraction
            ));
        }
        if !self.margin.is_finite() {
            return fail("the margin must be a number".into());
        }
        if self.pretrain_epochs == 0 || self.threads == 0 || self.finetune_evals == 0 {
            return fail("pretrain epochs, threads and evals must be at least 1".into());
        }
        if self.lease_secs < 3 {
            return fail("the lease must last at least 3 seconds".into());
        }
        if self.namespace.is_empty() {
            return fail("the namespace is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        let c = SchedulerConfig::new("inbox", "reg/r.sqlite");
        c.validate().unwrap();
        assert_eq!(c.work_dir(), PathBuf::from("reg/r.sqlite.d"));
        for bad in [
            SchedulerConfig {
                replay_fraction: 1.5,
                ..c.clone()
            },
            SchedulerConfig {
                margin: f64::NAN,
                ..c.clone()
            },
            SchedulerConfig {
                lease_secs: 1,
                ..c.clone()
            },
            SchedulerConfig {
                inbox: String::new(),
                ..c.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(SchedulerError::Config(_))));
        }
    }
}

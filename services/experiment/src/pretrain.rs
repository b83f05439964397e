//! The grid's pretraining runs: in this process (producer and trainer on
//! one transport) or in data-parallel `pretext train` processes, each
//! audited, and the settings each was made with (`settings.json`) so that a
//! reused run is one made with the same settings.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Context;
use pretext_core::input::discover;
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::ValidationConfig;
use pretext_pipeline::{PretrainSpec, pretrain_with};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File of a pretraining run's settings.
pub const SETTINGS_FILE: &str = "settings.json";

/// What a pretraining run was made with; a run is reused only when these
/// are equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    /// Input files and the SHA-256 of each.
    pub data: Vec<(PathBuf, String)>,
    /// `masked` or `next`.
    pub task: Task,
    /// Model width.
    pub width: i64,
    /// Residual blocks.
    pub depth: usize,
    /// Epochs.
    pub epochs: u32,
    /// Targets (rate, span, horizon) and the seed of masks and weights.
    pub mask: MaskConfig,
}

impl PretrainSettings {
    /// The settings of pretraining `task` on `data` with `spec`.
    pub fn new(spec: &PretrainSpec, data: &[PathBuf], task: Task) -> crate::Result<Self> {
        let mut files = Vec::new();
        for f in discover(data)? {
            let mut h = Sha256::new();
            let mut file =
                std::fs::File::open(&f).with_context(|| format!("hashing {}", f.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            files.push((f, hex));
        }
        Ok(Self {
            data: files,
            task,
            width: spec.width,
            depth: spec.depth,
            epochs: spec.epochs,
            mask: MaskConfig {
                seed: spec.seed,
                ..spec.mask
            },
        })
    }

    /// The differences from `other`, named (empty when equal).
    pub fn differences(&self, other: &PretrainSettings) -> Vec<String> {
        let mut d = Vec::new();
        if self.data != other.data {
            d.push("data files or their contents".to_owned());
        }
        if self.task != other.task {
            d.push(format!("task ({} vs {})", other.task, self.task));
        }
        if (self.width, self.depth) != (other.width, other.depth) {
            d.push(format!(
                "width x depth ({}x{} vs {}x{})",
                other.width, other.depth, self.width, self.depth
            ));
        }
        if self.epochs != other.epochs {
            d.push(format!("epochs ({} vs {})", other.epochs, self.epochs));
        }
        if self.mask != other.mask {
            d.push(format!(
                "targets or seed ({:?} vs {:?})",
                other.mask, self.mask
            ));
        }
        d
    }
}

/// The step of a finished pretraining run in `dir`: a checkpoint exists and
/// the audit finds every published batch applied exactly once.
pub fn finished_run(dir: &Path) -> Option<u64> {
    let audit = pretext_trainer::audit::audit(dir).ok()?;
    if audit.published == 0 || audit.missing != 0 || audit.applied_twice != 0 {
        return None;
    }
    let last = pretext_model::latest_checkpoint(&dir.join("checkpoints")).ok()??;
    let state: pretext_model::CheckpointState = pretext_model::read_checkpoint_state(&last).ok()?;
    Some(state.step)
}

/// Whether the finished run in `dir` can be reused for `settings`: `Ok(true)`
/// when its stored settings are equal, `Ok(false)` when it is not finished
/// (it is redone), an error naming the differences otherwise.
pub fn check_reuse(dir: &Path, settings: &PretrainSettings) -> crate::Result<bool> {
    if finished_run(dir).is_none() {
        return Ok(false);
    }
    let path = dir.join(SETTINGS_FILE);
    let stored: PretrainSettings = serde_json::from_slice(
        &std::fs::read(&path)
            .with_context(|| format!("--reuse-pretrained: reading {}", path.display()))?,
    )
    .with_context(|| {
        format!(
            "--reuse-pretrained: {} is not a settings file",
            path.display()
        )
    })?;
    let diff = settings.differences(&stored);
    crate::ensure!(
        diff.is_empty(),
        "--reuse-pretrained: {} was pretrained with other settings: {} (stored vs now); remove it or drop --reuse-pretrained",
        dir.display(),
        diff.join("; ")
    );
    Ok(true)
}

/// Pretrains `settings.task` on `data` into `run_dir` (emptied first) with
/// `spec`, in this process or in `ranks` data-parallel processes (which
/// need a broker), audits the run (0 missing, 0 applied twice) and writes
/// its settings. Returns the final step.
pub async fn pretrain(
    spec: &PretrainSpec,
    ranks: usize,
    data: &[PathBuf],
    run_dir: &Path,
    vcfg: ValidationConfig,
    ns: &str,
    settings: &PretrainSettings,
) -> crate::Result<u64> {
    let task = settings.task;
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)?;
    }
    let step = if ranks <= 1 {
        pretrain_with(spec, data, run_dir, task, vcfg, ns)
            .await?
            .step
    } else {
        pretrain_ranks(spec, ranks, data, run_dir, task, vcfg, ns).await?
    };
    let audit = pretext_trainer::audit::audit(run_dir)?;
    crate::ensure!(
        audit.missing == 0 && audit.applied_twice == 0,
        "audit of {}: {} missing, {} applied twice",
        run_dir.display(),
        audit.missing,
        audit.applied_twice
    );
    std::fs::write(
        run_dir.join(SETTINGS_FILE),
        serde_json::to_vec_pretty(settings)?,
    )?;
    Ok(step)
}

/// Publishes from this process and pretrains in `ranks` data-parallel
/// `pretext train` processes (as `pretext launch` starts them); returns
/// the step of the run's final checkpoint.
async fn pretrain_ranks(
    spec: &PretrainSpec,
    ranks: usize,
    data: &[PathBuf],
    run_dir: &Path,
    task: Task,
    vcfg: ValidationConfig,
    ns: &str,
) -> crate::Result<u64> {
    let transport = pretext_mq::connect(&spec.broker, pretext_mq::RabbitConfig::default()).await?;
    let producer = spec.producer_config(data.to_vec(), run_dir, task, vcfg, ns);
    let t = spec.trainer_config(run_dir, task, ns);
    let port = pretext_dist::free_port().context("a free port for the rendezvous store")?;
    let exe = std::env::current_exe().context("locating the pretext binary")?;
    let mut children = Vec::new();
    for rank in 0..ranks {
        let child = tokio::process::Command::new(&exe)
            .arg("train")
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--task", &task.to_string(), "--ns", ns])
            .args(["--width", &t.model.width.to_string()])
            .args(["--depth", &t.model.depth.to_string()])
            .args(["--threads", "1", "--seed", &t.seed.to_string()])
            .args(["--lr", &t.optimizer.lr.to_string()])
            .args(["--warmup-steps", &t.optimizer.warmup_steps.to_string()])
            .args(["--checkpoint-every", &t.checkpoint_every.to_string()])
            .args(["--device", "cpu"])
            // The URL (it may hold a password) goes by environment, not argv.
            .env("PRETEXT_BROKER", &spec.broker)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("WORLD_SIZE", ranks.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env_remove("PRETEXT_METRICS_ADDR")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push(child);
    }
    let produce = pretext_producer::run(producer, transport.clone(), std::future::pending());
    let wait = async {
        let mut statuses = Vec::new();
        for c in &mut children {
            statuses.push(c.wait().await);
        }
        statuses
    };
    let (produced, statuses) = tokio::join!(produce, wait);
    produced?;
    for (rank, status) in statuses.into_iter().enumerate() {
        let status = status?;
        crate::ensure!(status.success(), "rank {rank} failed: {status}");
    }
    pretext_mq::Topology::new(ns).delete(&*transport).await?;
    let last = pretext_model::latest_checkpoint(&run_dir.join("checkpoints"))?
        .context("the ranks left no checkpoint")?;
    let state: pretext_model::CheckpointState = pretext_model::read_checkpoint_state(&last)?;
    Ok(state.step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_differs() {
        let a = PretrainSettings {
            data: vec![("f.parquet".into(), "ab".into())],
            task: Task::Masked,
            width: 64,
            depth: 6,
            epochs: 2,
            mask: MaskConfig::default(),
        };
        assert!(a.differences(&a).is_empty());
        let mut b = a.clone();
        b.data[0].1 = "cd".into();
        b.epochs = 3;
        b.mask.mean_span = 4.0;
        let d = b.differences(&a);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("data") && d[1].contains("epochs (2 vs 3)"));
    }
}

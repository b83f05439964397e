//! The stages of one retrain, each ending in one registry transaction that
//! moves the run forward (under the lease). Each stage can be redone from
//! its start after a crash: its outputs are rewritten whole (the replay
//! sample, the fine-tuning directory) or resumed (pretraining resumes from
//! its own newest checkpoint), and nothing it did counts until its commit.
//!
//! - produce: fix the pretraining input: the run's new files plus a replay
//!   sample of earlier runs' `train` rows (written to `RUN/replay/`), and
//!   the promoted model to continue from.
//! - pretrain: continue pretraining (`masked`) from that model's pretraining
//!   checkpoint (or from scratch), producer and trainer in this process on
//!   the configured transport.
//! - fine-tune: classifier on the labeled rows; records the candidate model.
//! - evaluate: the candidate and the promoted model on the same test rows.
//! - decide: promote unless worse than the promoted model by more than the
//!   margin; otherwise reject (recorded, not promoted).

use std::path::{Path, PathBuf};

use pretext_core::bucket::{BucketConfig, geometric_edges};
use pretext_core::task::Task;
use pretext_datasets::sample::write_train_sample;
use pretext_finetune::{FinetuneConfig, LabeledData, Pretrained, score_checkpoint};
use pretext_model::AdamWConfig;
use pretext_pipeline::{PretrainSpec, continue_from, run_in_process};
use rusqlite::params;

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::registry::{Registry, RunRecord, now_text};
use crate::status::RunStatus;

/// File name of the replay sample inside `RUN/replay/`.
pub const REPLAY_FILE: &str = "replay.parquet";

/// What one stage works with.
pub struct Stage<'a> {
    /// The scheduler's settings.
    pub cfg: &'a SchedulerConfig,
    /// The registry.
    pub reg: &'a mut Registry,
    /// This scheduler's lease holder id.
    pub holder: &'a str,
    /// The run, as committed.
    pub run: &'a RunRecord,
    /// Set when the lease is lost: long work stops at its next step.
    pub cancel: pretext_finetune::CancelFlag,
}

impl Stage<'_> {
    fn dir(&self) -> PathBuf {
        PathBuf::from(&self.run.dir)
    }

    fn pretrain_dir(&self) -> PathBuf {
        self.dir().join("pretrain")
    }

    /// Does the stage after the run's status and commits it.
    pub async fn advance(self) -> Result<RunStatus, SchedulerError> {
        match self.run.status {
            RunStatus::Registered => self.produce(),
            RunStatus::Produced => self.pretrain().await,
            RunStatus::Pretrained => self.finetune(),
            RunStatus::Finetuned => self.evaluate(),
            RunStatus::Evaluated => self.decide(),
            s @ (RunStatus::Promoted | RunStatus::Rejected) => Ok(s),
        }
    }

    fn produce(self) -> Result<RunStatus, SchedulerError> {
        let new = self.reg.files_of_run(self.run.id)?;
        let earlier = self.reg.files_before(self.run.id)?;
        let replay_dir = self.dir().join("replay");
        let replay_rows = write_replay(self.cfg, &earlier, self.run.id, &replay_dir)?;
        let new_rows: i64 = new.iter().map(|f| f.valid).sum();
        let base = self.reg.promoted_model()?.map(|m| m.id);
        tracing::info!(run = self.run.id, new_files = new.len(), new_rows, replay_rows, base_model = ?base, "produced");
        let id = self.run.id;
        self.reg.advance(
            id,
            RunStatus::Registered,
            RunStatus::Produced,
            self.holder,
            |tx| {
                tx.execute(
                "UPDATE runs SET new_rows = ?2, replay_rows = ?3, base_model = ?4 WHERE id = ?1",
                params![id, new_rows, replay_rows as i64, base],
            )?;
                Ok(())
            },
        )?;
        Ok(RunStatus::Produced)
    }

    async fn pretrain(self) -> Result<RunStatus, SchedulerError> {
        let pre = self.pretrain_dir();
        // The producer's plan is made afresh by every attempt (the batches of
        // an interrupted one are gone with its transport, or deleted below);
        // the trainer resumes from its own checkpoints and skips every batch
        // they hold.
        let produce_dir = self.dir().join("produce");
        if produce_dir.exists() {
            std::fs::remove_dir_all(&produce_dir)
                .map_err(SchedulerError::io("remove", &produce_dir))?;
        }
        if let Some(base) = self.run.base_model {
            let model = self
                .reg
                .model(base)?
                .ok_or_else(|| SchedulerError::Corrupt(format!("model {base} does not exist")))?;
            continue_from(Path::new(&model.pretrain_run), &pre, Task::Masked)?;
        }
        let mut inputs: Vec<PathBuf> = self
            .reg
            .files_of_run(self.run.id)?
            .into_iter()
            .map(|f| PathBuf::from(f.stored))
            .collect();
        let replay = self.dir().join("replay").join(REPLAY_FILE);
        if replay.exists() {
            inputs.push(replay);
        }
        let ns = format!("{}-run{}", self.cfg.namespace, self.run.id);
        let spec = PretrainSpec {
            broker: self.cfg.broker.clone(),
            epochs: self.cfg.pretrain_epochs,
            width: self.cfg.width,
            depth: self.cfg.depth,
            threads: self.cfg.threads,
            seed: self.cfg.seed,
            mask: pretext_core::task::MaskConfig::default(),
        };
        let mut producer =
            spec.producer_config(inputs, &produce_dir, Task::Masked, self.cfg.validation, &ns);
        // One task at a time: batches reach the trainer in one order, so a
        // redone stage trains the same model.
        producer.concurrency = 1;
        producer.buckets.edges = edges(self.cfg);
        let trainer = spec.trainer_config(&pre, Task::Masked, &ns);
        if !self.cfg.broker.trim().starts_with("memory") {
            let t = pretext_mq::connect(&self.cfg.broker, pretext_mq::RabbitConfig::default())
                .await
                .map_err(pretext_pipeline::InProcessError::from)?;
            pretext_mq::Topology::new(&ns)
                .delete(&*t)
                .await
                .map_err(pretext_pipeline::InProcessError::from)?;
            let _ = t.close().await;
        }
        let summary = run_in_process(&self.cfg.broker, producer, trainer).await?;
        tracing::info!(run = self.run.id, steps = summary.step, resumed_from = ?summary.resumed_from, "pretrained");
        let id = self.run.id;
        self.reg.advance(
            id,
            RunStatus::Produced,
            RunStatus::Pretrained,
            self.holder,
            |tx| {
                tx.execute(
                    "UPDATE runs SET pretrain_steps = ?2 WHERE id = ?1",
                    params![id, summary.step as i64],
                )?;
                Ok(())
            },
        )?;
        Ok(RunStatus::Pretrained)
    }

    fn labeled(&self) -> Result<(Vec<PathBuf>, LabeledData), SchedulerError> {
        let paths = match &self.cfg.labeled {
            Some(p) => vec![p.clone()],
            None => self
                .reg
                .files_before(self.run.id + 1)?
                .into_iter()
                .map(|f| PathBuf::from(f.stored))
                .collect(),
        };
        let data = LabeledData::load(&paths, self.cfg.validation)?;
        Ok((paths, data))
    }

    fn finetune(self) -> Result<RunStatus, SchedulerError> {
        let (paths, data) = self.labeled()?;
        let dir = self.dir().join("finetune");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(SchedulerError::io("remove", &dir))?;
        }
        let d = FinetuneConfig::default();
        let cfg = FinetuneConfig {
            data: paths,
            pretrained: Pretrained::Run(self.pretrain_dir()),
            run_dir: dir,
            epochs: self.cfg.finetune_epochs,
            min_steps: self.cfg.finetune_min_steps,
            evals: self.cfg.finetune_evals,
            seed: self.cfg.seed,
            optimizer: AdamWConfig {
                lr: self.cfg.finetune_lr,
                ..d.optimizer
            },
            buckets: BucketConfig {
                edges: edges(self.cfg),
                ..d.buckets.clone()
            },
            train_crop: self.cfg.train_crop,
            validation: self.cfg.validation,
            threads: Some(self.cfg.threads),
            cancel: self.cancel.clone(),
            ..d
        };
        let report = pretext_finetune::run_on(&cfg, &data)?;
        let checkpoint = report
            .checkpoint
            .clone()
            .ok_or_else(|| SchedulerError::Corrupt("fine-tuning saved no checkpoint".into()))?;
        tracing::info!(
            run = self.run.id,
            valid_accuracy = report.best_valid_accuracy,
            "fine-tuned"
        );
        let id = self.run.id;
        let pre = self.pretrain_dir();
        self.reg.advance(id, RunStatus::Pretrained, RunStatus::Finetuned, self.holder, |tx| {
            tx.execute(
                "INSERT INTO models (run_id, pretrain_run, checkpoint, valid_accuracy) VALUES (?1, ?2, ?3, ?4)",
                params![id, pre.display().to_string(), checkpoint.display().to_string(), report.best_valid_accuracy],
            )?;
            Ok(())
        })?;
        Ok(RunStatus::Finetuned)
    }

    fn evaluate(self) -> Result<RunStatus, SchedulerError> {
        let (_, data) = self.labeled()?;
        let candidate = self
            .reg
            .model_of_run(self.run.id)?
            .ok_or_else(|| SchedulerError::Corrupt(format!("run {} has no model", self.run.id)))?;
        let buckets = BucketConfig {
            edges: edges(self.cfg),
            max_tokens: 16_384,
        };
        let score = score_checkpoint(Path::new(&candidate.checkpoint), &data, &buckets)?;
        let baseline = match self.reg.promoted_model()? {
            Some(m) => Some((m.id, score_of(&m.checkpoint, &data, &buckets)?)),
            None => None,
        };
        tracing::info!(run = self.run.id, test_accuracy = score.accuracy, baseline = ?baseline, "evaluated");
        let id = self.run.id;
        self.reg.advance(id, RunStatus::Finetuned, RunStatus::Evaluated, self.holder, |tx| {
            tx.execute(
                "UPDATE models SET test_accuracy = ?2, macro_f1 = ?3, test_rows = ?4, baseline_model = ?5, baseline_accuracy = ?6 WHERE run_id = ?1",
                params![id, score.accuracy, score.macro_f1, score.rows as i64, baseline.map(|b| b.0), baseline.map(|b| b.1)],
            )?;
            Ok(())
        })?;
        Ok(RunStatus::Evaluated)
    }

    fn decide(self) -> Result<RunStatus, SchedulerError> {
        let m = self
            .reg
            .model_of_run(self.run.id)?
            .ok_or_else(|| SchedulerError::Corrupt(format!("run {} has no model", self.run.id)))?;
        let accuracy = m.test_accuracy.ok_or_else(|| {
            SchedulerError::Corrupt(format!("run {} was not evaluated", self.run.id))
        })?;
        let to = if promotes(accuracy, m.baseline_accuracy, self.cfg.margin) {
            RunStatus::Promoted
        } else {
            RunStatus::Rejected
        };
        tracing::info!(run = self.run.id, accuracy, baseline = ?m.baseline_accuracy, margin = self.cfg.margin, decision = %to, "decided");
        let id = self.run.id;
        self.reg
            .advance(id, RunStatus::Evaluated, to, self.holder, |tx| {
                if to == RunStatus::Promoted {
                    tx.execute(
                        "UPDATE models SET promoted = 1, promoted_at = ?2 WHERE id = ?1",
                        params![m.id, now_text()],
                    )?;
                }
                Ok(())
            })?;
        Ok(to)
    }
}

/// The promotion rule: nothing promoted yet, or not worse than the promoted
/// model's accuracy on the same rows by more than `margin`.
pub fn promotes(candidate: f64, baseline: Option<f64>, margin: f64) -> bool {
    baseline.is_none_or(|b| candidate >= b - margin - 1e-12)
}

fn edges(cfg: &SchedulerConfig) -> Vec<usize> {
    geometric_edges(512, cfg.validation.max_len.max(512), 2.0)
}

fn score_of(checkpoint: &str, data: &LabeledData, b: &BucketConfig) -> Result<f64, SchedulerError> {
    Ok(score_checkpoint(Path::new(checkpoint), data, b)?.accuracy)
}

/// Writes the replay sample of run `run`: a `replay_fraction` of the valid
/// `train` rows of `earlier` files, drawn by a hash of (row id, run id), so
/// the same run always replays the same rows and successive runs replay
/// different ones. Labels are dropped (pretraining does not use them).
/// Returns the rows written (0: no file).
fn write_replay(
    cfg: &SchedulerConfig,
    earlier: &[crate::registry::FileRecord],
    run: i64,
    dir: &Path,
) -> Result<usize, SchedulerError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(SchedulerError::io("remove", dir))?;
    }
    let paths: Vec<PathBuf> = earlier
        .iter()
        .filter(|f| f.error.is_none())
        .map(|f| PathBuf::from(&f.stored))
        .collect();
    if paths.is_empty() || cfg.replay_fraction <= 0.0 {
        return Ok(0);
    }
    Ok(write_train_sample(
        &paths,
        cfg.validation,
        cfg.replay_fraction,
        run as u64,
        &dir.join(REPLAY_FILE),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_rule_respects_the_margin() {
        assert!(
            promotes(0.1, None, 0.0),
            "the first model is always promoted"
        );
        assert!(promotes(0.8, Some(0.8), 0.0), "not worse is enough");
        assert!(!promotes(0.79, Some(0.8), 0.0));
        assert!(promotes(0.79, Some(0.8), 0.02));
        assert!(!promotes(0.77, Some(0.8), 0.02));
        assert!(
            !promotes(0.9, Some(0.8), -0.2),
            "a negative margin asks for a gain"
        );
    }
}

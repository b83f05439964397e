//! pretext-pipeline: pretraining in one process, a producer and a trainer
//! sharing one transport (the in-process memory transport by default), as `pretext
//! demo`, `pretext experiment` and the scheduler run it; and
//! [`continue_from`], which starts a new run directory from another run's
//! checkpoint (continued pretraining).

use std::path::{Path, PathBuf};

use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::ValidationConfig;
use pretext_model::tch::Device;
use pretext_model::{
    AdamW, CheckpointState, PretrainModel, latest_checkpoint, load_checkpoint, save_checkpoint,
};
use pretext_mq::Topology;
use pretext_producer::{ProducerConfig, ProducerError};

use pretext_trainer::checkpoints::{TrainingState, checkpoint_dir};
use pretext_trainer::config::{TrainerConfig, direction_for};
use pretext_trainer::error::TrainError;
use pretext_trainer::trainer::TrainSummary;

/// Why an in-process pretraining run failed: the side that failed.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    /// The transport could not be opened or cleaned up.
    #[error("transport: {0}")]
    Transport(#[from] pretext_mq::MqError),
    /// The producer failed.
    #[error("producer: {0}")]
    Producer(#[from] ProducerError),
    /// The trainer failed.
    #[error("trainer: {0}")]
    Trainer(#[from] TrainError),
}

/// What an in-process pretraining run needs: producer and trainer share
/// one transport, as in `pretext demo`.
#[derive(Debug, Clone)]
pub struct PretrainSpec {
    /// Transport URL (`memory` or `amqp://…`).
    pub broker: String,
    /// Epochs published (fresh masks each).
    pub epochs: u32,
    /// Model width.
    pub width: i64,
    /// Residual blocks.
    pub depth: usize,
    /// libtorch threads.
    pub threads: usize,
    /// Seed of masks and weights.
    pub seed: u64,
    /// Targets: mask rate and span (`masked`), horizon (`next`); its seed
    /// is replaced by [`Self::seed`].
    pub mask: MaskConfig,
}

impl PretrainSpec {
    /// The producer side: the `train` rows of `data` as `task` batches of
    /// at most 16,384 tokens, `epochs` times with fresh masks.
    pub fn producer_config(
        &self,
        data: Vec<PathBuf>,
        run_dir: &Path,
        task: Task,
        vcfg: ValidationConfig,
        ns: &str,
    ) -> ProducerConfig {
        let mut p = ProducerConfig::new(data, task, ns, run_dir.to_path_buf());
        p.epochs = self.epochs;
        p.mask = MaskConfig {
            seed: self.seed,
            ..self.mask
        };
        p.validation = vcfg;
        p.buckets.max_tokens = 16_384;
        p
    }

    /// The trainer side: a `width` × `depth` model (causal for `next`),
    /// lr 2e-3 after 20 warmup steps, a checkpoint every 50 steps.
    pub fn trainer_config(&self, run_dir: &Path, task: Task, ns: &str) -> TrainerConfig {
        let model = pretext_model::ModelConfig {
            width: self.width,
            depth: self.depth,
            direction: direction_for(task),
            ..pretext_model::ModelConfig::default()
        };
        let mut t = TrainerConfig {
            broker: self.broker.clone(),
            namespace: ns.to_owned(),
            run_dir: run_dir.to_path_buf(),
            task,
            threads: Some(self.threads),
            seed: self.seed,
            model,
            checkpoint_every: 50,
            ..TrainerConfig::default()
        };
        t.optimizer.lr = 2e-3;
        t.optimizer.warmup_steps = 20;
        t
    }
}

/// Publishes the `train` rows of `data` (files or directories, all of
/// them) as `task` batches and pretrains on them in this process; the run
/// lands in `run_dir`.
pub async fn pretrain_with(
    spec: &PretrainSpec,
    data: &[PathBuf],
    run_dir: &Path,
    task: Task,
    vcfg: ValidationConfig,
    ns: &str,
) -> Result<TrainSummary, InProcessError> {
    let producer = spec.producer_config(data.to_vec(), run_dir, task, vcfg, ns);
    let trainer = spec.trainer_config(run_dir, task, ns);
    run_in_process(&spec.broker, producer, trainer).await
}

/// Runs `producer` and `trainer` together on one transport opened from
/// `broker` (their namespaces must agree) until the trainer has applied
/// every published batch, then deletes the namespace's queues.
pub async fn run_in_process(
    broker: &str,
    producer: ProducerConfig,
    trainer: TrainerConfig,
) -> Result<TrainSummary, InProcessError> {
    let ns = trainer.namespace.clone();
    let transport = pretext_mq::connect(broker, pretext_mq::RabbitConfig::default()).await?;
    let produce = pretext_producer::run(producer, transport.clone(), std::future::pending());
    let train =
        pretext_trainer::run_with_transport(trainer, transport.clone(), std::future::pending());
    let (produced, trained) = tokio::join!(produce, train);
    produced?;
    let summary = trained?;
    Topology::new(&ns).delete(&*transport).await?;
    Ok(summary)
}

/// Starts the run directory `run_dir` from the newest checkpoint of
/// `source` (a run directory or a checkpoint directory): the weights, the
/// optimiser state and the step carry over, so the trainer resumes from
/// them; the applied batch history does not, so the new run's batches are
/// all new to it. Does nothing and returns `None` when `run_dir` already
/// has a checkpoint (a restarted run resumes from its own). The checkpoint
/// is written atomically; `task` must be the source's.
pub fn continue_from(
    source: &Path,
    run_dir: &Path,
    task: Task,
) -> Result<Option<PathBuf>, TrainError> {
    let target = checkpoint_dir(run_dir);
    if latest_checkpoint(&target)?.is_some() {
        return Ok(None);
    }
    let path = match latest_checkpoint(&checkpoint_dir(source))? {
        Some(p) => p,
        None => source.to_path_buf(),
    };
    let state: CheckpointState<TrainingState> =
        pretext_model::read_checkpoint_state(&path).map_err(TrainError::from)?;
    if state.training.task != task {
        return Err(TrainError::Config(format!(
            "{} holds a `{}` run, not `{task}`",
            path.display(),
            state.training.task
        )));
    }
    let mut model = PretrainModel::new(&state.model, Device::Cpu)?;
    let mut optimizer = AdamW::new(model.var_store(), state.training.optimizer);
    let mut state: CheckpointState<TrainingState> =
        load_checkpoint(&path, model.var_store_mut(), Some(&mut optimizer))?;
    state.applied_batch_ids.clear();
    state.training.earlier_applied.clear();
    let dir = save_checkpoint(&target, model.var_store(), &optimizer, &state)?;
    tracing::info!(from = %path.display(), to = %dir.display(), step = state.step, "continuing pretraining");
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_model::{AdamWConfig, ModelConfig, read_checkpoint_state};
    use std::collections::BTreeMap;

    #[test]
    fn continue_from_keeps_weights_and_step_and_drops_history() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let cfg = ModelConfig {
            width: 8,
            depth: 1,
            ..ModelConfig::default()
        };
        pretext_model::tch::manual_seed(3);
        let model = PretrainModel::new(&cfg, Device::Cpu).unwrap();
        let opt = AdamW::new(model.var_store(), AdamWConfig::default());
        let mut state = CheckpointState::new(
            12,
            cfg,
            TrainingState {
                task: Task::Masked,
                seed: 0,
                optimizer: AdamWConfig::default(),
                tokens_seen: 5,
                earlier_applied: BTreeMap::from([(6, vec!["old".to_string()])]),
                members: Vec::new(),
            },
        );
        state.applied_batch_ids = vec!["b1".into()];
        save_checkpoint(&checkpoint_dir(&src), model.var_store(), &opt, &state).unwrap();
        assert!(continue_from(&src, &dst, Task::Next).is_err());
        let made = continue_from(&src, &dst, Task::Masked).unwrap().unwrap();
        let copied: CheckpointState<TrainingState> = read_checkpoint_state(&made).unwrap();
        assert_eq!(copied.step, 12);
        assert!(copied.applied_batch_ids.is_empty());
        assert!(copied.training.earlier_applied.is_empty());
        assert_eq!(copied.model, cfg);
        pretext_model::tch::manual_seed(4);
        let mut other = PretrainModel::new(&cfg, Device::Cpu).unwrap();
        other
            .var_store_mut()
            .load(made.join("model.safetensors"))
            .unwrap();
        let theirs = other.var_store().variables();
        for (name, t) in model.var_store().variables() {
            let diff = (&t - &theirs[&name]).abs().max().double_value(&[]);
            assert_eq!(diff, 0.0, "{name} is carried over unchanged");
        }
        // A second call leaves the run's own checkpoint alone.
        assert!(continue_from(&src, &dst, Task::Masked).unwrap().is_none());
    }
}

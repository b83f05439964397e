//! How a run starts: resuming from the newest complete checkpoint or
//! building a fresh learner, and the progress bar.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pretext_model::{
    AdamW, CheckpointState, PretrainModel, latest_checkpoint, load_checkpoint,
    read_checkpoint_state,
};

use crate::checkpoints::TrainingState;
use crate::config::{TrainerConfig, check_direction};
use crate::error::TrainError;
use crate::step::Learner;

/// The learner a run starts with.
pub(super) struct Start {
    pub(super) learner: Learner,
    pub(super) resumed_from: Option<u64>,
    pub(super) checkpoint: Option<PathBuf>,
    pub(super) tokens_seen: u64,
}

/// Resumes from the newest complete checkpoint, or builds a fresh model.
pub(super) fn build_learner(config: &TrainerConfig) -> Result<Start, TrainError> {
    let device = config.device.device()?;
    if let Some(n) = config.threads {
        pretext_model::tch::set_num_threads(n as i32);
    }
    let Some(path) = latest_checkpoint(&config.checkpoint_dir())? else {
        let mut learner = Learner::fresh(
            &config.model,
            config.optimizer,
            config.seed,
            device,
            config.threads,
        )?;
        learner.model.set_precision(config.precision);
        return Ok(Start {
            learner,
            resumed_from: None,
            checkpoint: None,
            tokens_seen: 0,
        });
    };
    let state: CheckpointState<TrainingState> = read_checkpoint_state(&path)?;
    if state.training.task != config.task {
        return Err(TrainError::Config(format!(
            "{} holds a `{}` run; this trainer is for `{}`",
            path.display(),
            state.training.task,
            config.task
        )));
    }
    if state.model != config.model {
        tracing::warn!(checkpoint = ?state.model, given = ?config.model, "model flags differ from the checkpoint's; resuming with the checkpoint's");
    }
    if state.training.optimizer != config.optimizer {
        tracing::warn!(checkpoint = ?state.training.optimizer, given = ?config.optimizer, "optimizer settings differ from the checkpoint's; using the given ones");
    }
    check_direction(config.task, &state.model)?;
    let mut model = PretrainModel::new(&state.model, device)?;
    model.set_precision(config.precision);
    let mut optimizer = AdamW::new(model.var_store(), config.optimizer);
    let state: CheckpointState<TrainingState> =
        load_checkpoint(&path, model.var_store_mut(), Some(&mut optimizer))?;
    if optimizer.step_count() != state.step {
        return Err(TrainError::Config(format!(
            "{}: optimizer state at step {}, checkpoint at step {}",
            path.display(),
            optimizer.step_count(),
            state.step
        )));
    }
    tracing::info!(checkpoint = %path.display(), step = state.step, "resuming");
    let learner = Learner {
        model,
        optimizer,
        rng: state.rng,
        threads: config.threads,
    };
    Ok(Start {
        learner,
        resumed_from: Some(state.step),
        checkpoint: Some(path),
        tokens_seen: state.training.tokens_seen,
    })
}

pub(super) fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} batches {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar
}

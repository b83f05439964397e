//! [`ExperimentError`]: why an experiment stopped, with the step it was on.

/// A boxed cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an experiment (or the demo) stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A setting or the data does not allow the experiment.
    #[error("{0}")]
    Invalid(String),
    /// A step failed; `what` says which.
    #[error("{what}: {source}")]
    Step {
        /// The step.
        what: String,
        /// The cause.
        source: Cause,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Encoding or decoding JSON failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Making or sampling a dataset failed.
    #[error(transparent)]
    Dataset(#[from] pretext_datasets::DatasetError),
    /// Fine-tuning or a baseline failed.
    #[error(transparent)]
    Finetune(#[from] pretext_finetune::FinetuneError),
    /// In-process pretraining failed.
    #[error(transparent)]
    Pretrain(#[from] pretext_pipeline::InProcessError),
    /// A trainer failed or its files could not be read.
    #[error(transparent)]
    Train(#[from] pretext_trainer::TrainError),
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] pretext_model::CheckpointError),
    /// Reading the input failed.
    #[error(transparent)]
    Input(#[from] pretext_core::input::InputError),
}

impl From<pretext_mq::MqError> for ExperimentError {
    fn from(e: pretext_mq::MqError) -> Self {
        Self::Pretrain(e.into())
    }
}

impl From<pretext_producer::ProducerError> for ExperimentError {
    fn from(e: pretext_producer::ProducerError) -> Self {
        Self::Pretrain(e.into())
    }
}

/// The result of the experiment's functions.
pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

/// Names the step a failure happened in ([`ExperimentError::Step`]), or
/// turns a missing value into [`ExperimentError::Invalid`].
pub trait Context<T> {
    /// With a fixed step name.
    fn context(self, what: &str) -> Result<T>;
    /// With a step name made only on failure.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Cause>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_owned())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ExperimentError::Step {
            what: what(),
            source: e.into(),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| ExperimentError::Invalid(what.to_owned()))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| ExperimentError::Invalid(what()))
    }
}

/// Returns [`ExperimentError::Invalid`] with the formatted message unless
/// the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::ExperimentError::Invalid(format!($($fmt)+)));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive(x: i32) -> Result<i32> {
        ensure!(x > 0, "{x} is not positive");
        Ok(x)
    }

    #[test]
    fn steps_and_checks_say_what_failed() {
        let e = "x".parse::<u32>().context("reading the count").unwrap_err();
        assert!(matches!(e, ExperimentError::Step { .. }));
        assert!(e.to_string().starts_with("reading the count: "), "{e}");
        let e = None::<u8>.with_context(|| "no run".into()).unwrap_err();
        assert_eq!(e.to_string(), "no run");
        assert_eq!(positive(3).unwrap(), 3);
        assert_eq!(positive(-1).unwrap_err().to_string(), "-1 is not positive");
    }
}

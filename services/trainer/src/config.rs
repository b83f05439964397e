//! [`TrainerConfig`]: everything one trainer run needs, with documented defaults.

use std::path::PathBuf;

use pretext_core::task::Task;
use pretext_model::tch::Device;
use pretext_model::{AdamWConfig, Direction, ModelConfig, Precision};
use pretext_mq::{RabbitConfig, TopologyConfig};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Default broker: the local RabbitMQ with its guest account.
pub const DEFAULT_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default steps between checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100;
/// Default longest time between checkpoints while batches are held unacked:
/// well inside RabbitMQ's 30-minute `consumer_timeout`.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 600;
/// Default number of checkpoints kept (older ones are pruned; their applied
/// ids live on in the newer ones' history).
pub const DEFAULT_KEEP_CHECKPOINTS: usize = 3;
/// Largest prefetch a quorum queue accepts.
pub const MAX_PREFETCH: u16 = 2000;
/// Default collective timeout of a data-parallel run, in seconds.
pub const DEFAULT_DIST_TIMEOUT_SECS: u64 = 60;
/// Default gradient bucket size of a data-parallel run, in MiB (as DDP).
pub const DEFAULT_BUCKET_MB: usize = 25;
/// Default longest wait of a data-parallel rank for its next batch before
/// the ranks step without it, in milliseconds.
pub const DEFAULT_BATCH_WAIT_MS: u64 = 100;

/// One rank of a data-parallel run (like PyTorch DDP over Gloo): where the
/// ranks meet (torchrun's `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`,
/// `RANK`) and how long a rank waits for the others. Every rank must share
/// the run directory: rank 0 writes the checkpoints, every rank resumes
/// from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Host of the rendezvous store (`MASTER_ADDR`; default `127.0.0.1`).
    pub master_addr: String,
    /// Port of the rendezvous store (`MASTER_PORT`; default 29500).
    pub master_port: u16,
    /// Number of ranks (`WORLD_SIZE`; default 1).
    pub world_size: usize,
    /// This rank (`RANK`); unset takes one from the store's counter, so
    /// identical replicas work (default unset).
    pub rank: Option<usize>,
    /// Seconds a rank waits for the others in the rendezvous and in every
    /// collective: a dead or hung rank makes the others fail after this
    /// (default 60). Rank 0 writing a checkpoint must fit in it.
    pub timeout_secs: u64,
    /// Gradient bucket size in MiB (default 25).
    pub bucket_mb: usize,
    /// Milliseconds a rank with no batch at hand waits for one before the
    /// ranks step without it (default 100).
    pub batch_wait_ms: u64,
    /// Elastic membership (torchrun's `--nnodes MIN:MAX`): processes join
    /// and leave the running group, which re-forms at a round boundary;
    /// `master_addr:master_port` is then the rendezvous endpoint, and
    /// `world_size` and `rank` are not used (default: a fixed group).
    pub elastic: Option<Nnodes>,
}

/// How many processes an elastic run trains with: training waits while
/// fewer than `min` are present; more than `max` wait for a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nnodes {
    /// Fewest members that train.
    pub min: usize,
    /// Most members that train together.
    pub max: usize,
}

impl std::str::FromStr for Nnodes {
    type Err = String;

    /// `MIN:MAX`, or `N` for `N:N` (torchrun's `--nnodes`).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |p: &str| {
            p.trim()
                .parse::<usize>()
                .map_err(|e| format!("`{s}`: {e} (expected MIN:MAX, e.g. 1:4)"))
        };
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(s)?, num(s)?),
        };
        if min == 0 || max < min {
            return Err(format!("`{s}`: need 1 <= MIN <= MAX"));
        }
        Ok(Self { min, max })
    }
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            world_size: 1,
            rank: None,
            timeout_secs: DEFAULT_DIST_TIMEOUT_SECS,
            bucket_mb: DEFAULT_BUCKET_MB,
            batch_wait_ms: DEFAULT_BATCH_WAIT_MS,
            elastic: None,
        }
    }
}

impl WorldConfig {
    /// The torchrun variables in the environment, with these defaults for
    /// the rest; `None` without `WORLD_SIZE`.
    pub fn from_env() -> Result<Option<Self>, TrainError> {
        let Some(rdv) = pretext_dist::Rendezvous::from_env()? else {
            return Ok(None);
        };
        Ok(Some(Self {
            master_addr: rdv.master_addr,
            master_port: rdv.master_port,
            world_size: rdv.world_size,
            rank: rdv.rank,
            ..Self::default()
        }))
    }

    /// The rendezvous it describes.
    pub fn rendezvous(&self) -> pretext_dist::Rendezvous {
        pretext_dist::Rendezvous {
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
            world_size: self.world_size,
            rank: self.rank,
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        let fail = |m: String| Err(TrainError::Config(m));
        if let Some(n) = self.elastic
            && (n.min == 0 || n.max < n.min)
        {
            return fail(format!(
                "world.elastic {}:{} is not 1 <= MIN <= MAX",
                n.min, n.max
            ));
        }
        if self.world_size == 0 {
            return fail("world.world_size must be at least 1".into());
        }
        if self.rank.is_some_and(|r| r >= self.world_size) {
            return fail(format!(
                "world.rank {:?} is not below world_size {}",
                self.rank, self.world_size
            ));
        }
        if self.timeout_secs == 0 || self.bucket_mb == 0 {
            return fail("world.timeout_secs and world.bucket_mb must be at least 1".into());
        }
        if self.batch_wait_ms.saturating_mul(4) > self.timeout_secs.saturating_mul(1000) {
            return fail("world.batch_wait_ms must be well under world.timeout_secs".into());
        }
        Ok(())
    }
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0; an error if there is none.
    Cuda,
}

impl DeviceChoice {
    /// The tch device.
    pub fn device(self) -> Result<Device, TrainError> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if pretext_model::tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(TrainError::Config(
                "device cuda requested but libtorch sees no CUDA device".into(),
            )),
        }
    }
}

/// A trainer run: where the batches come from, where checkpoints go, and
/// what is trained. Saved (task, seed, optimiser, model) in every
/// checkpoint; on resume the checkpoint's model config wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Transport URL: `amqp://…` or `memory[://NAME]` (default the local
    /// RabbitMQ, [`DEFAULT_BROKER`]).
    pub broker: String,
    /// Namespace of the queues: batches from `{ns}.pretrain`, end-of-data
    /// from `{ns}.control`, rejects to `{ns}.dead` (default `pretext`).
    pub namespace: String,
    /// Run directory: checkpoints in `RUN_DIR/checkpoints/step-NNNNNN/`,
    /// per-step metrics in `RUN_DIR/metrics.jsonl`; producers' manifests in
    /// `RUN_DIR/manifests/` (default `run`).
    pub run_dir: PathBuf,
    /// The pretraining task; a batch of another task is rejected to the
    /// dead-letter queue (default `masked`). `next` needs a causal model.
    pub task: Task,
    /// Stop once the run has made this many optimiser steps in total,
    /// resumed steps included (default: no limit; the run ends when every
    /// published batch is applied).
    pub max_steps: Option<u64>,
    /// Checkpoint (then ack the batches it contains) every this many steps
    /// (default 100).
    pub checkpoint_every: u64,
    /// Also checkpoint when the oldest unacked applied batch is this old, in
    /// seconds, so acks beat RabbitMQ's `consumer_timeout` (default 600).
    pub checkpoint_secs: u64,
    /// Complete checkpoints kept; 0 keeps all (default 3).
    pub keep_checkpoints: usize,
    /// Unacked deliveries the trainer may hold, applied-but-not-checkpointed
    /// ones included; a checkpoint is forced when they fill it (default
    /// `checkpoint_every + 16`, at most 2,000).
    pub prefetch: Option<u16>,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
    /// Device (default `auto`).
    pub device: DeviceChoice,
    /// Compute precision of convolutions and linear layers: `bf16` is
    /// autocast-like mixed precision with f32 master weights, meant for
    /// CUDA (default `full`). Not saved in checkpoints: a resumed run uses
    /// the one given.
    pub precision: Precision,
    /// Seed of the initial weights and of every step's randomness (default 0).
    pub seed: u64,
    /// Architecture of a fresh run.
    pub model: ModelConfig,
    /// Optimiser and learning-rate schedule.
    pub optimizer: AdamWConfig,
    /// RabbitMQ connection settings.
    pub rabbit: RabbitConfig,
    /// Broker logins whose messages the trainer believes: batches, control
    /// messages and dead letters published by anyone else are refused (a
    /// batch is rejected to the dead-letter queue, the others ignored), so
    /// that a role that may write to a queue cannot end or steer a run. The
    /// broker validates the login each message carries. Empty (the default)
    /// trusts every publisher, as the in-process transport must.
    pub trusted_publishers: Vec<String>,
    /// Queue bounds; must match what producers declared.
    pub topology: TopologyConfig,
    /// Draw a progress bar on stderr (the binary sets it when stderr is a
    /// terminal; default off).
    pub progress: bool,
    /// Data-parallel training: this process is one rank of the world
    /// described (default: none, a single process).
    pub world: Option<WorldConfig>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            broker: DEFAULT_BROKER.to_owned(),
            namespace: "pretext".to_owned(),
            run_dir: PathBuf::from("run"),
            task: Task::Masked,
            max_steps: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_secs: DEFAULT_CHECKPOINT_SECS,
            keep_checkpoints: DEFAULT_KEEP_CHECKPOINTS,
            prefetch: None,
            threads: None,
            device: DeviceChoice::Auto,
            precision: Precision::Full,
            seed: 0,
            model: ModelConfig::default(),
            optimizer: AdamWConfig::default(),
            rabbit: RabbitConfig::default(),
            trusted_publishers: Vec::new(),
            topology: TopologyConfig::default(),
            progress: false,
            world: None,
        }
    }
}

impl TrainerConfig {
    /// Whether a message published by `user` is believed.
    pub fn trusts(&self, user: Option<&str>) -> bool {
        trusts(&self.trusted_publishers, user)
    }

    /// The prefetch actually used.
    pub fn effective_prefetch(&self) -> u16 {
        self.prefetch.unwrap_or_else(|| {
            let want = self.checkpoint_every.saturating_add(16);
            u16::try_from(want)
                .unwrap_or(MAX_PREFETCH)
                .min(MAX_PREFETCH)
        })
    }

    /// Directory of the checkpoints.
    pub fn checkpoint_dir(&self) -> PathBuf {
        crate::checkpoints::checkpoint_dir(&self.run_dir)
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), TrainError> {
        let fail = |m: String| Err(TrainError::Config(m));
        if self.task == Task::Classify {
            return fail(
                "the trainer pretrains on `masked` or `next`; `classify` is for fine-tuning".into(),
            );
        }
        if self.checkpoint_every == 0 {
            return fail("checkpoint_every must be at least 1".into());
        }
        let prefetch = self.effective_prefetch();
        if prefetch == 0 || prefetch > MAX_PREFETCH {
            return fail(format!(
                "prefetch must be 1..={MAX_PREFETCH}, got {prefetch}"
            ));
        }
        if self.threads == Some(0) {
            return fail("threads must be at least 1".into());
        }
        if self.namespace.is_empty() {
            return fail("the namespace is empty".into());
        }
        if let Some(world) = &self.world {
            world.validate()?;
        }
        self.model.validate()?;
        check_direction(self.task, &self.model)
    }
}

/// Fails when the model's direction does not suit the task (`next` needs a
/// causal model: a bidirectional one would see the step it predicts).
pub fn check_direction(task: Task, model: &ModelConfig) -> Result<(), TrainError> {
    if task == Task::Next && model.direction != Direction::Causal {
        return Err(TrainError::Config(
            "task `next` needs a causal model (direction = causal)".into(),
        ));
    }
    Ok(())
}

/// The model direction a task needs: `next` must not see the future.
pub fn direction_for(task: Task) -> Direction {
    match task {
        Task::Next => Direction::Causal,
        Task::Masked | Task::Classify => Direction::Bidirectional,
    }
}

/// Whether `trusted` (empty: everyone) includes `user`.
pub(crate) fn trusts(trusted: &[String], user: Option<&str>) -> bool {
    trusted.is_empty() || user.is_some_and(|u| trusted.iter().any(|t| t == u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnodes_reads_min_max_or_one_number_and_refuses_the_rest() {
        assert_eq!("1:4".parse(), Ok(Nnodes { min: 1, max: 4 }));
        assert_eq!(" 2 ".parse(), Ok(Nnodes { min: 2, max: 2 }));
        for bad in ["0:2", "3:2", "x", "1:", ":3", "-1:2"] {
            assert!(bad.parse::<Nnodes>().is_err(), "{bad}");
        }
        let world = WorldConfig {
            elastic: Some(Nnodes { min: 3, max: 2 }),
            ..WorldConfig::default()
        };
        assert!(world.validate().is_err());
    }

    #[test]
    fn defaults_validate_and_prefetch_covers_a_checkpoint_interval() {
        let c = TrainerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.effective_prefetch(), 116);
        let big = TrainerConfig {
            checkpoint_every: 10_000,
            ..Default::default()
        };
        assert_eq!(big.effective_prefetch(), MAX_PREFETCH);
    }

    #[test]
    fn parses_partial_json_and_rejects_bad_values() {
        let c: TrainerConfig =
            serde_json::from_str(r#"{"namespace": "n", "task": "next", "model": {"width": 16}}"#)
                .unwrap();
        assert_eq!(c.task, Task::Next);
        assert_eq!(c.model.width, 16);
        assert!(serde_json::from_str::<TrainerConfig>(r#"{"namespce": "n"}"#).is_err());
        for bad in [
            TrainerConfig {
                task: Task::Classify,
                ..Default::default()
            },
            TrainerConfig {
                checkpoint_every: 0,
                ..Default::default()
            },
            TrainerConfig {
                prefetch: Some(0),
                ..Default::default()
            },
            TrainerConfig {
                threads: Some(0),
                ..Default::default()
            },
            TrainerConfig {
                task: Task::Next,
                ..Default::default()
            },
            TrainerConfig {
                world: Some(WorldConfig {
                    world_size: 2,
                    rank: Some(2),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(TrainError::Config(_))),
                "{bad:?}"
            );
        }
    }
}

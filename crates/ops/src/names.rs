//! The metric names every service records, in one place so that dashboards,
//! `ops/prometheus.yml` and tests agree; [`describe`] registers their help
//! text and units with the installed recorder.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Optimiser steps taken by this trainer process (counter).
pub const TRAINER_STEPS: &str = "pretext_trainer_steps_total";
/// The run's current optimiser step, resumed steps included (gauge).
pub const TRAINER_STEP: &str = "pretext_trainer_step";
/// Batches applied by this trainer process (counter).
pub const TRAINER_BATCHES_APPLIED: &str = "pretext_trainer_batches_applied_total";
/// Deliveries acked after a durable checkpoint held their batch (counter).
pub const TRAINER_BATCHES_ACKED: &str = "pretext_trainer_batches_acked_total";
/// Redeliveries of already applied batches, acked and skipped (counter).
pub const TRAINER_DUPLICATES: &str = "pretext_trainer_duplicates_skipped_total";
/// Deliveries rejected to the dead-letter queue (counter).
pub const TRAINER_REJECTED: &str = "pretext_trainer_batches_rejected_total";
/// Real (non-padding) tokens stepped on by this process (counter).
pub const TRAINER_TOKENS: &str = "pretext_trainer_tokens_total";
/// Checkpoints written (counter).
pub const TRAINER_CHECKPOINTS: &str = "pretext_trainer_checkpoints_total";
/// Loss of the last step (gauge).
pub const TRAINER_LOSS: &str = "pretext_trainer_loss";
/// Real tokens per second of the last step, data wait included (gauge).
pub const TRAINER_TOKENS_PER_SECOND: &str = "pretext_trainer_tokens_per_second";
/// Ranks of the group this trainer trains in; 1 alone (gauge).
pub const TRAINER_WORLD_SIZE: &str = "pretext_trainer_world_size";
/// Elastic re-formations this trainer went through: a member joined, left
/// or was lost (counter).
pub const TRAINER_REFORMATIONS: &str = "pretext_trainer_reformations_total";
/// Seconds each re-formation took: from the end of one generation's
/// training to the start of the next one's (histogram).
pub const TRAINER_REFORM_SECONDS: &str = "pretext_trainer_reform_seconds";

/// Batches handed to the broker by this producer (counter).
pub const PRODUCER_BATCHES_PUBLISHED: &str = "pretext_producer_batches_published_total";
/// Batches the broker confirmed (counted when their task's confirms are all in) (counter).
pub const PRODUCER_BATCHES_CONFIRMED: &str = "pretext_producer_batches_confirmed_total";
/// Input rows rejected by validation (counted by the producer that planned) (counter).
pub const PRODUCER_ROWS_REJECTED: &str = "pretext_producer_rows_rejected_total";
/// File tasks completed (counter).
pub const PRODUCER_TASKS: &str = "pretext_producer_tasks_total";
/// Real tokens in confirmed batches (counter).
pub const PRODUCER_TOKENS: &str = "pretext_producer_tokens_total";
/// Bytes of batch messages published (counter).
pub const PRODUCER_BYTES: &str = "pretext_producer_bytes_total";

/// Publishes the broker refused (a full queue: back-pressure), each retried
/// after a backoff (counter).
pub const PUBLISH_NACKS: &str = "pretext_publish_nacks_total";

/// Scheduler ticks completed (counter).
pub const SCHEDULER_TICKS: &str = "pretext_scheduler_ticks_total";
/// Inbox files registered as new content (counter).
pub const SCHEDULER_FILES_REGISTERED: &str = "pretext_scheduler_files_registered_total";
/// Retrains decided, by `decision` label: `promoted` or `rejected` (counter).
pub const SCHEDULER_RUNS_DECIDED: &str = "pretext_scheduler_runs_decided_total";
/// Ticks that failed (the next tick tries again) (counter).
pub const SCHEDULER_TICK_ERRORS: &str = "pretext_scheduler_tick_errors_total";
/// Unix time of the last completed tick (gauge).
pub const SCHEDULER_LAST_TICK: &str = "pretext_scheduler_last_tick_seconds";

/// 1 while the service runs, 0 once it is shutting down (gauge).
pub const UP: &str = "pretext_up";

/// Registers the help text and unit of every metric above.
pub fn describe() {
    describe_counter!(
        TRAINER_STEPS,
        Unit::Count,
        "optimiser steps taken by this trainer process"
    );
    describe_gauge!(
        TRAINER_STEP,
        Unit::Count,
        "the run's current optimiser step, resumed steps included"
    );
    describe_counter!(
        TRAINER_BATCHES_APPLIED,
        Unit::Count,
        "batches applied by this trainer process"
    );
    describe_counter!(
        TRAINER_BATCHES_ACKED,
        Unit::Count,
        "deliveries acked after a durable checkpoint held their batch"
    );
    describe_counter!(
        TRAINER_DUPLICATES,
        Unit::Count,
        "redeliveries of already applied batches, acked and skipped"
    );
    describe_counter!(
        TRAINER_REJECTED,
        Unit::Count,
        "deliveries rejected to the dead-letter queue"
    );
    describe_counter!(
        TRAINER_TOKENS,
        Unit::Count,
        "real tokens stepped on by this process"
    );
    describe_counter!(TRAINER_CHECKPOINTS, Unit::Count, "checkpoints written");
    describe_gauge!(TRAINER_LOSS, "loss of the last step");
    describe_gauge!(
        TRAINER_TOKENS_PER_SECOND,
        "real tokens per second of the last step"
    );
    describe_gauge!(
        TRAINER_WORLD_SIZE,
        "ranks of the group this trainer trains in"
    );
    describe_counter!(
        TRAINER_REFORMATIONS,
        Unit::Count,
        "elastic re-formations (a member joined, left or was lost)"
    );
    describe_histogram!(
        TRAINER_REFORM_SECONDS,
        Unit::Seconds,
        "seconds from the end of one generation's training to the next one's start"
    );
    describe_counter!(
        PRODUCER_BATCHES_PUBLISHED,
        Unit::Count,
        "batches handed to the broker"
    );
    describe_counter!(
        PRODUCER_BATCHES_CONFIRMED,
        Unit::Count,
        "batches confirmed by the broker"
    );
    describe_counter!(
        PRODUCER_ROWS_REJECTED,
        Unit::Count,
        "input rows rejected by validation"
    );
    describe_counter!(PRODUCER_TASKS, Unit::Count, "file tasks completed");
    describe_counter!(
        PRODUCER_TOKENS,
        Unit::Count,
        "real tokens in confirmed batches"
    );
    describe_counter!(
        PRODUCER_BYTES,
        Unit::Bytes,
        "bytes of batch messages published"
    );
    describe_counter!(
        PUBLISH_NACKS,
        Unit::Count,
        "publishes the broker refused (queue full), retried after a backoff"
    );
    describe_counter!(SCHEDULER_TICKS, Unit::Count, "scheduler ticks completed");
    describe_counter!(
        SCHEDULER_FILES_REGISTERED,
        Unit::Count,
        "inbox files registered as new content"
    );
    describe_counter!(
        SCHEDULER_RUNS_DECIDED,
        Unit::Count,
        "retrains decided, by decision (promoted or rejected)"
    );
    describe_counter!(
        SCHEDULER_TICK_ERRORS,
        Unit::Count,
        "scheduler ticks that failed"
    );
    describe_gauge!(
        SCHEDULER_LAST_TICK,
        Unit::Seconds,
        "unix time of the last completed scheduler tick"
    );
    describe_gauge!(UP, "1 while the service runs, 0 once it is shutting down");
}

//! Elastic runs (`--nnodes MIN:MAX --rdzv-endpoint HOST:PORT`): this
//! process is a member that trains in one generation after another.
//!
//! Each generation is a fixed group (see `parallel`), started like a
//! restart of every rank: from the newest durable checkpoint. It ends
//! - when a member joins or leaves (SIGTERM): at a round boundary the
//!   group checkpoints, acks, and its members (less the leavers) register
//!   for the next generation; nothing applied is lost;
//! - when a member is lost (killed, hung, cut off): the survivors' next
//!   collective fails (at once for a killed process, whose sockets close;
//!   after the collective timeout for a hung one), they drop their
//!   deliveries unacked (the broker hands them back) and register; the
//!   next generation resumes from the last durable checkpoint, so the
//!   batches applied since are applied again, once.
//!
//! The learning rate is per optimiser step and does not change with the
//! world size: every step divides the summed gradients by the global count
//! of loss tokens, so it is the step one process would take on the union
//! of the round's batches; more ranks make bigger steps' batches, not
//! bigger updates per token.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pretext_dist::{DistError, Elastic, ElasticOptions, GroupOptions, JoinWatch, process_name};
use pretext_mq::{SharedTransport, Topology};
use pretext_ops::names;
use tokio::sync::watch;

use super::{StopReason, TrainSummary, parallel, run_session};
use crate::config::TrainerConfig;
use crate::error::TrainError;
use crate::membership::{Generation, describe, record_generation};
use crate::metrics::{MetricsWriter, metrics_file};

/// What a generation's session needs from the rendezvous.
pub(super) struct GenerationStart {
    /// Its ledger line, less what only the session knows (the step).
    pub(super) record: Generation,
    /// Registrations for the next generation.
    pub(super) joins: JoinWatch,
}

/// Runs this member until the run ends, it is told to stop, or an error
/// other than a lost member.
pub(super) async fn run(
    config: TrainerConfig,
    transport: SharedTransport,
    topology: Topology,
    shutdown: impl Future<Output = ()>,
) -> Result<TrainSummary, TrainError> {
    let world = config.world.clone().expect("an elastic run has a world");
    let nnodes = world.elastic.expect("an elastic run has nnodes");
    let options = ElasticOptions {
        host: world.master_addr.clone(),
        port: world.master_port,
        min: nnodes.min,
        max: nnodes.max,
        group: GroupOptions {
            // The lost member is found by its heartbeat: naming it in the
            // error need not hold up the re-formation.
            liveness_grace: Duration::from_millis(500),
            ..parallel::group_options(&world, config.device.device()?)
        },
    };
    // The shutdown future completes once; each generation watches this.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    };
    let members = async move {
        let name = process_name();
        let mut member = blocking(move || Elastic::join(options, &name)).await??;
        let mut ended: Option<Instant> = None;
        let mut total: Option<TrainSummary> = None;
        loop {
            let rx = stop_rx.clone();
            let (m, next) = blocking(move || {
                let next = member.next_generation(&|| *rx.borrow());
                (member, next)
            })
            .await?;
            member = m;
            let Some(generation) = next? else {
                tracing::info!("elastic: stopped while waiting for a generation");
                return Ok(stopped(total, StopReason::Shutdown));
            };
            if ended.is_some() {
                metrics::counter!(names::TRAINER_REFORMATIONS).increment(1);
            }
            let world_size = generation.group.world_size();
            let joins = member.watch(world_size)?;
            let names = |ms: &[pretext_dist::Member]| -> Vec<String> {
                ms.iter().map(|m| m.name.clone()).collect()
            };
            let start = GenerationStart {
                record: Generation {
                    generation: generation.number,
                    step: 0,
                    world_size,
                    members: names(&generation.members),
                    joined: names(&generation.joined),
                    left: names(&generation.left),
                    lost: names(&generation.lost),
                    reform_secs: ended.map(|t| t.elapsed().as_secs_f64()),
                    started_unix_ms: 0,
                },
                joins,
            };
            let mut rx = stop_rx.clone();
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let result = run_session(
                config.clone(),
                &transport,
                topology.clone(),
                Some(generation.group),
                Some(start),
                stop,
            )
            .await;
            ended = Some(Instant::now());
            match result {
                Ok(summary) if summary.stop == StopReason::Reform => {
                    total = Some(add(total, summary));
                }
                Ok(summary) => {
                    // Done (the data ended, max steps, SIGTERM): a member
                    // waiting to join does not wait for this one.
                    member.leave()?;
                    let stop = summary.stop;
                    return Ok(stopped(Some(add(total, summary)), stop));
                }
                Err(TrainError::Dist(
                    err @ (DistError::Collective { .. }
                    | DistError::Init { .. }
                    | DistError::Store { .. }),
                )) => {
                    tracing::warn!(
                        error = %err,
                        "elastic: a member was lost; the group re-forms from the last durable checkpoint"
                    );
                }
                Err(err) => {
                    member.leave()?;
                    return Err(err);
                }
            }
        }
    };
    tokio::select! {
        result = members => result,
        () = signal => unreachable!("the signal future never completes"),
    }
}

/// Runs `f` on the blocking pool (the rendezvous and the store block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TrainError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TrainError::Panic(e.to_string()))
}

/// The generations' summaries as one: counts added, the rest the last's.
fn add(total: Option<TrainSummary>, last: TrainSummary) -> TrainSummary {
    match total {
        None => last,
        Some(t) => TrainSummary {
            resumed_from: t.resumed_from,
            applied: t.applied + last.applied,
            skipped_duplicates: t.skipped_duplicates + last.skipped_duplicates,
            rejected: t.rejected + last.rejected,
            comm_secs: t.comm_secs + last.comm_secs,
            last_loss: last.last_loss.or(t.last_loss),
            ..last
        },
    }
}

/// The summary of a member that stops with `stop` (one that never trained
/// reports nothing applied).
fn stopped(total: Option<TrainSummary>, stop: StopReason) -> TrainSummary {
    match total {
        Some(t) => TrainSummary { stop, ..t },
        None => TrainSummary {
            stop,
            step: 0,
            resumed_from: None,
            applied: 0,
            applied_total: 0,
            skipped_duplicates: 0,
            rejected: 0,
            last_checkpoint: None,
            last_loss: None,
            world_size: 0,
            rank: 0,
            comm_secs: 0.0,
        },
    }
}

/// A generation starts training at `step` with this process as `rank`:
/// logs it, counts the re-formation time, and (rank 0) records it in the
/// membership ledger and trims the metrics of ranks it does not have
/// (their lines past `step` were rolled back).
pub(super) fn started(
    config: &TrainerConfig,
    mut record: Generation,
    rank: usize,
    step: u64,
) -> Result<(), TrainError> {
    record.step = step;
    record.started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if let Some(secs) = record.reform_secs {
        metrics::histogram!(names::TRAINER_REFORM_SECONDS).record(secs);
    }
    tracing::info!(
        generation = record.generation,
        rank,
        world = record.world_size,
        step,
        reform_secs = record.reform_secs,
        "elastic: {}",
        describe(&record)
    );
    if rank != 0 {
        return Ok(());
    }
    let max = config
        .world
        .as_ref()
        .and_then(|w| w.elastic)
        .map_or(0, |n| n.max);
    for r in record.world_size..max {
        if config.run_dir.join(metrics_file(r)).exists() {
            MetricsWriter::open_file(&config.run_dir, &metrics_file(r), step)?;
        }
    }
    record_generation(&config.checkpoint_dir(), &record)
}

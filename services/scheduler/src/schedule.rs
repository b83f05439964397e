//! One tick ([`run_once`]) and the cron loop ([`run`]). A tick takes the
//! lease, registers every new inbox file by content hash (validated, bad
//! rows quarantined), then drives one run to its end: the interrupted one
//! if there is one, else a new one over every pending file. With nothing
//! new and nothing interrupted it does nothing.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use croner::Cron;
use pretext_core::report::validate_paths;
use serde::Serialize;

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::inbox::{Inbox, Skipped};
use crate::lease::{self, LeaseKeeper, RETRAIN_LEASE, new_holder, unix_now};
use crate::registry::{FileRecord, Registry, RunRecord, Sighting, now_text};
use crate::retrain::Stage;
use crate::status::RunStatus;

/// What a tick did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TickReport {
    /// Files registered by this tick.
    pub new_files: Vec<FileRecord>,
    /// Inbox locations seen for the first time whose content was already
    /// registered (renamed or copied files): not trained on again.
    pub known_copies: Vec<Sighting>,
    /// Inbox entries not registered, and why (links, unreadable files):
    /// tried again on the next tick.
    pub skipped: Vec<Skipped>,
    /// The run this tick worked on, as it ended.
    pub run: Option<RunRecord>,
    /// Set when the tick stopped early after this status (the test hook).
    pub stopped_after: Option<RunStatus>,
    /// Set when a shutdown request ended the tick after this status: the
    /// run is left at a committed stage, the lease released, and the next
    /// tick continues it.
    pub interrupted_after: Option<RunStatus>,
}

/// Parses a cron expression (5 fields, or 6 with seconds; `@hourly` …).
pub fn parse_cron(expr: &str) -> Result<Cron, SchedulerError> {
    Cron::from_str(expr).map_err(|e| SchedulerError::Config(format!("cron `{expr}`: {e}")))
}

/// The directory of run `id`.
pub fn run_dir(cfg: &SchedulerConfig, id: i64) -> PathBuf {
    cfg.work_dir().join("runs").join(format!("run-{id:06}"))
}

/// One tick: lease, register, retrain if there is work, release.
pub async fn run_once(cfg: &SchedulerConfig) -> Result<TickReport, SchedulerError> {
    run_once_until(cfg, &AtomicBool::new(false)).await
}

/// [`run_once`] that also ends early, after the stage in progress is
/// committed, once `stop` is set (graceful shutdown). Records the tick in
/// the scheduler's metrics.
#[tracing::instrument(skip_all, fields(inbox = %cfg.inbox))]
pub async fn run_once_until(
    cfg: &SchedulerConfig,
    stop: &AtomicBool,
) -> Result<TickReport, SchedulerError> {
    let result = lease_and_tick(cfg, stop).await;
    record_metrics(&result);
    result
}

fn record_metrics(result: &Result<TickReport, SchedulerError>) {
    use pretext_ops::names;
    let Ok(r) = result else {
        metrics::counter!(names::SCHEDULER_TICK_ERRORS).increment(1);
        return;
    };
    metrics::counter!(names::SCHEDULER_TICKS).increment(1);
    metrics::counter!(names::SCHEDULER_FILES_REGISTERED).increment(r.new_files.len() as u64);
    if let Some(run) = &r.run
        && run.status.is_terminal()
    {
        metrics::counter!(names::SCHEDULER_RUNS_DECIDED, "decision" => run.status.to_string())
            .increment(1);
    }
    metrics::gauge!(names::SCHEDULER_LAST_TICK).set(unix_now() as f64);
}

async fn lease_and_tick(
    cfg: &SchedulerConfig,
    stop: &AtomicBool,
) -> Result<TickReport, SchedulerError> {
    cfg.validate()?;
    let mut reg = Registry::open(&cfg.registry)?;
    let holder = new_holder();
    lease::acquire(
        reg.conn_mut(),
        RETRAIN_LEASE,
        &holder,
        cfg.lease_secs,
        unix_now(),
    )?;
    let keeper = LeaseKeeper::start(reg.path().to_path_buf(), holder.clone(), cfg.lease_secs);
    let result = tick(cfg, &mut reg, &holder, stop, &keeper).await;
    drop(keeper);
    let stopped = matches!(&result, Ok(r) if r.stopped_after.is_some());
    // Stopped by the test hook: keep the lease, as a killed process would.
    if !stopped {
        lease::release(reg.conn_mut(), RETRAIN_LEASE, &holder)?;
    }
    result
}

async fn tick(
    cfg: &SchedulerConfig,
    reg: &mut Registry,
    holder: &str,
    stop: &AtomicBool,
    keeper: &LeaseKeeper,
) -> Result<TickReport, SchedulerError> {
    let mut report = register(cfg, reg).await?;
    let mut run = match reg.open_run()? {
        Some(run) => {
            tracing::info!(run = run.id, status = %run.status, "continuing an interrupted run");
            run
        }
        None => match reg.create_run(holder, |id| run_dir(cfg, id))? {
            Some(run) => {
                tracing::info!(run = run.id, "new run");
                if cfg.stop_after == Some(RunStatus::Registered) {
                    report.stopped_after = Some(RunStatus::Registered);
                    report.run = Some(run);
                    return Ok(report);
                }
                run
            }
            None => {
                tracing::info!("nothing new");
                return Ok(report);
            }
        },
    };
    while !run.status.is_terminal() {
        let stage = Stage {
            cfg,
            reg: &mut *reg,
            holder,
            run: &run,
            cancel: pretext_finetune::CancelFlag(keeper.lost_flag()),
        };
        // A lost lease ends the stage where it is: another scheduler now
        // owns the run, and this one must not write to it any more.
        let advanced = tokio::select! {
            r = stage.advance() => r.map(|_| ()),
            lost = keeper.lost_signal() => Err(lost),
        };
        if let Err(e) = advanced {
            // Whatever stopped the stage, a lost lease is the reason.
            let e = match keeper.lost_to() {
                Some(holder) => SchedulerError::LeaseLost { holder },
                None => e,
            };
            if !matches!(e, SchedulerError::LeaseLost { .. }) {
                reg.set_error(run.id, &e.to_string())?;
            }
            return Err(e);
        }
        run = reg
            .run(run.id)?
            .ok_or_else(|| SchedulerError::Corrupt(format!("run {} vanished", run.id)))?;
        if cfg.stop_after == Some(run.status) && !run.status.is_terminal() {
            report.stopped_after = Some(run.status);
            break;
        }
        if stop.load(Ordering::SeqCst) && !run.status.is_terminal() {
            tracing::info!(run = run.id, status = %run.status, "shutdown requested: stopping after this stage; the next tick continues the run");
            report.interrupted_after = Some(run.status);
            break;
        }
    }
    report.run = Some(run);
    Ok(report)
}

/// Registers every inbox file whose content is new.
async fn register(cfg: &SchedulerConfig, reg: &mut Registry) -> Result<TickReport, SchedulerError> {
    let inbox = Inbox::open(&cfg.inbox)?;
    let work = cfg.work_dir();
    let store = work.join("files");
    let quarantine = work.join(pretext_core::input::QUARANTINE_DIR);
    let mut report = TickReport::default();
    let listing = inbox.list().await?;
    for s in &listing.skipped {
        tracing::warn!(path = %s.location, reason = %s.reason, "inbox entry skipped");
    }
    report.skipped = listing.skipped;
    for entry in listing.entries {
        let size = entry.size as i64;
        if let Some(hash) = reg.sighting(&entry.location, size, &entry.modified)?
            && reg.file(&hash)?.is_some()
        {
            continue;
        }
        let (hash, stored) = match inbox.fetch(&entry, &store).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(path = %entry.location, reason = %e, "inbox entry skipped");
                report.skipped.push(Skipped {
                    location: entry.location.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let sighting = Sighting {
            path: entry.location.clone(),
            size,
            modified: entry.modified.clone(),
            hash: hash.clone(),
            seen_at: now_text(),
        };
        if reg.file(&hash)?.is_some() {
            tracing::info!(path = %entry.location, %hash, "already registered: not trained on again");
            reg.record_sighting(&sighting)?;
            report.known_copies.push(sighting);
            continue;
        }
        let file = validate(cfg, &entry.location, &hash, &stored, size, &quarantine)?;
        tracing::info!(path = %file.path, hash = %file.hash, rows = file.rows, rejected = file.rejected, error = ?file.error, "registered");
        reg.insert_file(&file)?;
        reg.record_sighting(&sighting)?;
        report.new_files.push(file);
    }
    Ok(report)
}

fn validate(
    cfg: &SchedulerConfig,
    location: &str,
    hash: &str,
    stored: &std::path::Path,
    bytes: i64,
    quarantine: &std::path::Path,
) -> Result<FileRecord, SchedulerError> {
    let reports = validate_paths(&[stored.to_path_buf()], cfg.validation, Some(quarantine), 2)?;
    let r = reports.into_iter().next().unwrap_or_default();
    Ok(FileRecord {
        hash: hash.to_owned(),
        path: location.to_owned(),
        stored: stored.display().to_string(),
        bytes,
        rows: r.rows as i64,
        valid: r.valid as i64,
        rejected: r.rejected_total() as i64,
        error: if r.readable {
            None
        } else {
            r.error.or(Some("unreadable".into()))
        },
        first_seen: now_text(),
        run_id: None,
    })
}

/// Ticks on every occurrence of `cron` (UTC) until `shutdown` completes. A
/// failed tick is logged and the next one tries again; the test hook's stop
/// ends the loop. A shutdown during a tick lets the stage in progress
/// finish and commit, then returns (the next start continues the run).
pub async fn run(
    cfg: SchedulerConfig,
    cron: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    cfg.validate()?;
    let cron = parse_cron(cron)?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    let watcher = {
        let (stop, wake) = (stop.clone(), wake.clone());
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::SeqCst);
            wake.notify_one();
        })
    };
    let result = ticks(&cfg, &cron, &stop, &wake).await;
    watcher.abort();
    result
}

async fn ticks(
    cfg: &SchedulerConfig,
    cron: &Cron,
    stop: &AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<(), SchedulerError> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let next = cron
            .find_next_occurrence(&now, false)
            .map_err(|e| SchedulerError::Config(format!("cron: {e}")))?;
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next.to_rfc3339(), "waiting for the next tick");
        tokio::select! {
            () = wake.notified() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        match run_once_until(cfg, stop).await {
            Ok(r) if r.stopped_after.is_some() => return Ok(()),
            Ok(r) => {
                tracing::info!(new_files = r.new_files.len(), run = ?r.run.map(|r| (r.id, r.status)), interrupted = r.interrupted_after.is_some(), "tick done")
            }
            Err(e) => tracing::error!(error = %e, "tick failed"),
        }
    }
}

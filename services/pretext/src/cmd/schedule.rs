//! `pretext schedule`: scheduled retraining. Watches an inbox (a directory
//! or an object store URL), registers new files by content hash in a
//! SQLite registry, and retrains on new data: continued pretraining,
//! fine-tuning, evaluation, promotion only if not worse. `--once` runs one
//! tick; otherwise it ticks on the `--cron` schedule until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pretext_scheduler::{RunStatus, SchedulerConfig, TickReport};

use super::{LimitArgs, MetricsArgs, shutdown_on_signal};

/// Exit status of a tick stopped by `PRETEXT_SCHEDULER_EXIT_AFTER`.
pub const STOPPED_EXIT: u8 = 3;

/// Arguments of `pretext schedule`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inbox: a directory, or an object store URL (`file:///…`).
    #[arg(long)]
    pub inbox: String,
    /// The registry (SQLite file; created if missing).
    #[arg(long)]
    pub registry: PathBuf,
    /// Cron schedule in UTC: 5 fields (`0 3 * * *`), 6 with seconds, or
    /// `@hourly`/`@daily`. Required unless `--once`.
    #[arg(long, required_unless_present = "once")]
    pub cron: Option<String>,
    /// Run one tick now and exit.
    #[arg(long)]
    pub once: bool,
    /// Transport of pretraining: `memory` (in-process) or `amqp://…`.
    #[arg(long, env = "PRETEXT_BROKER", default_value = "memory")]
    pub broker: String,
    /// Namespace prefix of the queues (run N uses `{ns}-runN`).
    #[arg(long, env = "PRETEXT_NS", default_value = "sched")]
    pub ns: String,
    /// A fixed labeled dataset for fine-tuning and evaluation (default: the
    /// labeled rows of every registered file).
    #[arg(long)]
    pub labeled: Option<PathBuf>,
    /// Promote unless test accuracy is below the promoted model's by more than this.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub margin: f64,
    /// Fraction of earlier train rows replayed with the new data.
    #[arg(long, default_value_t = pretext_scheduler::config::DEFAULT_REPLAY_FRACTION)]
    pub replay: f64,
    /// Work directory: file copies, quarantine, runs (default `<registry>.d`).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 1)]
    pub pretrain_epochs: u32,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fine-tuning passes over the labeled train rows.
    #[arg(long, default_value_t = 5)]
    pub finetune_epochs: u32,
    /// Least fine-tuning steps.
    #[arg(long, default_value_t = 30)]
    pub finetune_min_steps: u64,
    /// Fine-tuning learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub finetune_lr: f64,
    /// Fine-tune on crops of at most this many steps.
    #[arg(long)]
    pub train_crop: Option<usize>,
    /// Lease time in seconds.
    #[arg(long, default_value_t = pretext_scheduler::config::DEFAULT_LEASE_SECS)]
    pub lease_secs: i64,
    /// Test hook: exit (status 3, lease left held) right after this status
    /// is committed, as if killed there.
    #[arg(long, env = "PRETEXT_SCHEDULER_EXIT_AFTER", hide = true)]
    pub exit_after: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

impl Args {
    fn config(&self) -> anyhow::Result<SchedulerConfig> {
        let stop_after = match &self.exit_after {
            Some(s) if !s.is_empty() => Some(s.parse::<RunStatus>()?),
            _ => None,
        };
        Ok(SchedulerConfig {
            work_dir: self.work_dir.clone(),
            broker: self.broker.clone(),
            namespace: self.ns.clone(),
            labeled: self.labeled.clone(),
            margin: self.margin,
            replay_fraction: self.replay,
            validation: self.limits.config(),
            pretrain_epochs: self.pretrain_epochs,
            width: self.model.width(),
            depth: self.model.depth,
            threads: self.model.threads(),
            seed: self.seed,
            finetune_epochs: self.finetune_epochs,
            finetune_min_steps: self.finetune_min_steps,
            finetune_lr: self.finetune_lr,
            train_crop: self.train_crop,
            lease_secs: self.lease_secs,
            stop_after,
            ..SchedulerConfig::new(self.inbox.clone(), self.registry.clone())
        })
    }
}

/// Runs `pretext schedule`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.config()?;
    let rt = tokio::runtime::Runtime::new()?;
    if args.once {
        let report = rt.block_on(async {
            // SIGTERM during a `--once` tick: finish the stage, then exit 0.
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let watcher = tokio::spawn(async move {
                shutdown_on_signal(None).await;
                flag.store(true, Ordering::SeqCst);
            });
            let report = pretext_scheduler::run_once_until(&cfg, &stop).await;
            watcher.abort();
            report
        })?;
        print_report(&report);
        if report.stopped_after.is_some() {
            return Ok(ExitCode::from(STOPPED_EXIT));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cron = args.cron.clone().unwrap_or_default();
    let parsed = pretext_scheduler::parse_cron(&cron)?;
    println!(
        "schedule: `{cron}` ({}), inbox {}",
        parsed.describe(),
        cfg.inbox
    );
    rt.block_on(async {
        let server = args.metrics.start("scheduler").await?;
        pretext_scheduler::run(cfg, &cron, shutdown_on_signal(server.as_ref())).await?;
        println!("schedule: stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &TickReport) {
    for f in &r.new_files {
        match &f.error {
            Some(e) => println!(
                "registered {} ({}): unreadable: {e}",
                f.path,
                short(&f.hash)
            ),
            None => println!(
                "registered {} ({}): {} rows, {} rejected",
                f.path,
                short(&f.hash),
                f.rows,
                f.rejected
            ),
        }
    }
    for s in &r.skipped {
        println!("skipped {}: {}", s.location, s.reason);
    }
    for s in &r.known_copies {
        println!(
            "already registered: {} is a copy of {} (not trained on again)",
            s.path,
            short(&s.hash)
        );
    }
    match (&r.run, r.stopped_after) {
        (Some(run), Some(st)) => println!("run {}: stopped after {st} (test hook)", run.id),
        (Some(run), None) if r.interrupted_after.is_some() => println!(
            "run {}: interrupted after {} (shutdown); the next tick continues it",
            run.id, run.status
        ),
        (Some(run), None) => println!(
            "run {}: {}{}",
            run.id,
            run.status,
            run.error
                .as_deref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        ),
        (None, _) => println!("nothing new: no retrain"),
    }
}

/// The first 12 hex digits of a hash.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

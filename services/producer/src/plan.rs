//! The run's plan, made once per run directory: one pass over the `id`
//! column of every file (each file's schema checked, ids that repeat across
//! the dataset found; only the ids are decoded), the file tasks put on
//! `{ns}.files`, and the `Plan` message on the control stream. Whichever
//! producer holds the lock on `plan.lock` makes it; the others wait for
//! `plan.json`.
//! Validating rows, counting and quarantining rejections is the work of the
//! tasks of epoch 0, which decode the values anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use pretext_core::control::{ControlMessage, FileTask};
use pretext_core::input::{discover, duplicate_ids};
use pretext_core::validate::IdRegistry;
use pretext_mq::{OutMessage, SharedTransport, Topology};
use serde::{Deserialize, Serialize};

use crate::{ProducerConfig, ProducerError};

/// The work of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Producer that made the plan.
    pub planned_by: String,
    /// Every file task, all epochs.
    pub tasks: Vec<FileTask>,
    /// Per file, the rows whose id an earlier row of the dataset has (file
    /// row numbers): a task validates only its row groups, so it cannot see
    /// them itself; it rejects them as duplicates.
    pub duplicate_rows: BTreeMap<String, BTreeSet<u64>>,
    /// Rows in the dataset (all splits, valid or not).
    pub rows: u64,
}

fn run_dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProducerError + '_ {
    move |e| ProducerError::RunDir {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Returns the run's plan, making and publishing it if no one has.
pub async fn ensure_plan(
    cfg: &ProducerConfig,
    transport: &SharedTransport,
    topo: &Topology,
) -> Result<Plan, ProducerError> {
    let dir = &cfg.run_dir;
    std::fs::create_dir_all(dir).map_err(run_dir_err(dir))?;
    let plan_path = dir.join("plan.json");
    let lock_path = dir.join("plan.lock");
    loop {
        if plan_path.exists() {
            let text = std::fs::read_to_string(&plan_path).map_err(run_dir_err(&plan_path))?;
            return serde_json::from_str(&text).map_err(|e| ProducerError::RunDir {
                path: plan_path.clone(),
                source: e.into(),
            });
        }
        // The claim is an exclusive lock on `plan.lock`, not the file's
        // existence: the kernel drops it when its holder dies, so a crashed
        // planner's claim is free at once, and a live one's (however slow)
        // is never taken over. Two producers cannot both hold it.
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(run_dir_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {
                // The previous holder may have finished since the check.
                if plan_path.exists() {
                    continue;
                }
                return make_and_publish(cfg, transport, topo, lock, &plan_path).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                drop(lock);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(run_dir_err(&lock_path)(e)),
        }
    }
}

async fn make_and_publish(
    cfg: &ProducerConfig,
    transport: &SharedTransport,
    topo: &Topology,
    // Held (locked) until the plan is out; dropping it releases the claim.
    _claim: File,
    plan_path: &Path,
) -> Result<Plan, ProducerError> {
    let c = cfg.clone();
    let plan = tokio::task::spawn_blocking(move || make_plan(&c))
        .await
        .map_err(|e| ProducerError::Config(format!("planning thread failed: {e}")))?;
    let plan = plan?;
    // Through one confirm window: a round trip for the lot, not one a task.
    let mut files = transport.publisher(&topo.files()).await?;
    for t in &plan.tasks {
        files
            .send(OutMessage::new(format!("task:{}", t.task_id), t.to_bytes()))
            .await?;
    }
    files.flush().await?;
    let msg = ControlMessage::Plan {
        tasks: plan.tasks.len() as u64,
        task: cfg.task.as_str().to_owned(),
        epochs: cfg.epochs,
    };
    transport
        .publish(
            &topo.control(),
            OutMessage::new(msg.message_id(), msg.to_bytes()),
        )
        .await?;
    // plan.json last: its presence means the tasks and the plan are out.
    let tmp = plan_path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&plan).expect("plan serialises");
    std::fs::write(&tmp, text).map_err(run_dir_err(&tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(run_dir_err(&tmp))?;
    std::fs::rename(&tmp, plan_path).map_err(run_dir_err(plan_path))?;
    tracing::info!(
        tasks = plan.tasks.len(),
        rows = plan.rows,
        duplicates = plan
            .duplicate_rows
            .values()
            .map(BTreeSet::len)
            .sum::<usize>(),
        "plan published"
    );
    Ok(plan)
}

/// The id pass and the task list (blocking).
pub fn make_plan(cfg: &ProducerConfig) -> Result<Plan, ProducerError> {
    let files = discover(&cfg.data)?;
    if files.is_empty() {
        return Err(ProducerError::Config(
            "no Parquet files under the input paths".into(),
        ));
    }
    let mut ids = IdRegistry::default();
    let mut plan = Plan {
        planned_by: cfg.producer_id.clone(),
        tasks: Vec::new(),
        duplicate_rows: BTreeMap::new(),
        rows: 0,
    };
    let mut groups = Vec::with_capacity(files.len());
    for file in &files {
        let name = file.display().to_string();
        let pass = duplicate_ids(file, &mut ids)?;
        if !pass.duplicates.is_empty() {
            tracing::warn!(file = %name, rows = pass.duplicates.len(), "ids seen earlier in the dataset; those rows will be rejected");
            plan.duplicate_rows.insert(name.clone(), pass.duplicates);
        }
        plan.rows += pass.row_groups.iter().sum::<u64>();
        groups.push((name, pass.row_groups));
    }
    // Tasks: runs of consecutive row groups of at least `task_rows` rows, so
    // per-task costs (confirms, manifest sync, control message) stay small.
    for epoch in 0..cfg.epochs {
        for (fi, (name, rows)) in groups.iter().enumerate() {
            let mut start = 0;
            while start < rows.len() {
                let (mut end, mut n) = (start, 0);
                while end < rows.len() && (n < cfg.task_rows as u64 || end == start) {
                    n += rows[end];
                    end += 1;
                }
                plan.tasks.push(FileTask {
                    task_id: format!("{fi}:{start}:{epoch}"),
                    file: name.clone(),
                    row_groups: (start..end).collect(),
                    epoch,
                });
                start = end;
            }
        }
    }
    Ok(plan)
}

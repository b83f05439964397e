//! The registry: one SQLite file holding every inbox file by content hash,
//! every run with its status and stage times, every model with its metrics,
//! and the lease. Every change is one transaction, so a scheduler killed at
//! any point leaves the registry at a committed state.
//!
//! Tables:
//! - `files`: one row per distinct content (sha-256): where it was first
//!   seen, the scheduler's own copy, rows, valid and rejected counts (or why
//!   it could not be read), and the run that trained on it as new data
//!   (`run_id`, set once, when the run is created: a file is never used as
//!   new data twice, and none is left out).
//! - `sightings`: every inbox location seen, with size, modification time
//!   and hash (a renamed copy shows up here, not in `files`).
//! - `runs`: the state machine of [`RunStatus`], a time per stage, the last
//!   error, the model it continued from, rows of new and replayed data.
//! - `models`: a fine-tuned candidate per run: checkpoints, metrics, the
//!   promoted model's score on the same test rows, and the promoted flag.
//! - `lease`: see [`crate::lease`].
//!
//! The schema and the opening of the file are in [`crate::db`].

mod records;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::SchedulerError;
use crate::lease::{self, RETRAIN_LEASE};
use crate::status::RunStatus;
use records::{FILE_COLS, MODEL_COLS, RUN_COLS};

pub use crate::db::connect;
pub use records::{FileRecord, ModelRecord, RunDetail, RunRecord, Sighting};

/// The current UTC time as RFC 3339 (what the registry stores).
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The registry database.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish()
    }
}

impl Registry {
    /// Opens or creates the registry at `path`.
    pub fn open(path: &Path) -> Result<Self, SchedulerError> {
        Ok(Self {
            conn: connect(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing registry (an error if there is none: reading
    /// commands must not create one by a typo).
    pub fn open_existing(path: &Path) -> Result<Self, SchedulerError> {
        if !path.exists() {
            return Err(SchedulerError::Config(format!(
                "no registry at {}",
                path.display()
            )));
        }
        Self::open(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection (lease calls).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The hash of the content last seen at `path` with this size and
    /// modification time, if it was seen so.
    pub fn sighting(
        &self,
        path: &str,
        size: i64,
        modified: &str,
    ) -> Result<Option<String>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT hash FROM sightings WHERE path = ?1 AND size = ?2 AND modified = ?3",
                params![path, size, modified],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that `path` held `hash`.
    pub fn record_sighting(&self, s: &Sighting) -> Result<(), SchedulerError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sightings (path, size, modified, hash, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.path, s.size, s.modified, s.hash, s.seen_at],
        )?;
        Ok(())
    }

    /// Every location seen holding `hash`, first seen first.
    pub fn sightings_of(&self, hash: &str) -> Result<Vec<Sighting>, SchedulerError> {
        let mut st = self.conn.prepare(
            "SELECT path, size, modified, hash, seen_at FROM sightings WHERE hash = ?1 ORDER BY seen_at, path",
        )?;
        let rows = st.query_map(params![hash], |r| {
            Ok(Sighting {
                path: r.get(0)?,
                size: r.get(1)?,
                modified: r.get(2)?,
                hash: r.get(3)?,
                seen_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The file of this content, if known.
    pub fn file(&self, hash: &str) -> Result<Option<FileRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {FILE_COLS} FROM files WHERE hash = ?1"),
                params![hash],
                FileRecord::from_row,
            )
            .optional()?)
    }

    /// Registers a new content (nothing if the hash is known).
    pub fn insert_file(&self, f: &FileRecord) -> Result<bool, SchedulerError> {
        let n = self.conn.execute(
            &format!("INSERT OR IGNORE INTO files ({FILE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![f.hash, f.path, f.stored, f.bytes, f.rows, f.valid, f.rejected, f.error, f.first_seen, f.run_id],
        )?;
        Ok(n == 1)
    }

    fn files_where(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<FileRecord>, SchedulerError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {FILE_COLS} FROM files WHERE {clause} ORDER BY run_id, first_seen, hash"
        ))?;
        let rows = st.query_map(p, FileRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every registered file.
    pub fn files(&self) -> Result<Vec<FileRecord>, SchedulerError> {
        self.files_where("1", [])
    }

    /// Files waiting for a run: readable, with valid rows, not yet used.
    pub fn pending_files(&self) -> Result<Vec<FileRecord>, SchedulerError> {
        self.files_where("run_id IS NULL AND error IS NULL AND valid > 0", [])
    }

    /// The new files of run `id`.
    pub fn files_of_run(&self, id: i64) -> Result<Vec<FileRecord>, SchedulerError> {
        self.files_where("run_id = ?1", params![id])
    }

    /// The files of the runs before `id` (what a replay sample draws from).
    pub fn files_before(&self, id: i64) -> Result<Vec<FileRecord>, SchedulerError> {
        self.files_where("run_id < ?1", params![id])
    }

    /// The run not yet promoted or rejected, if any (at most one exists).
    pub fn open_run(&self) -> Result<Option<RunRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE status NOT IN ('promoted', 'rejected') ORDER BY id LIMIT 1"),
                [],
                RunRecord::from_row,
            )
            .optional()?)
    }

    /// Run `id`.
    pub fn run(&self, id: i64) -> Result<Option<RunRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                params![id],
                RunRecord::from_row,
            )
            .optional()?)
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, SchedulerError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {RUN_COLS} FROM runs ORDER BY id"))?;
        let rows = st.query_map([], RunRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run with its files and model.
    pub fn detail(&self, id: i64) -> Result<Option<RunDetail>, SchedulerError> {
        let Some(run) = self.run(id)? else {
            return Ok(None);
        };
        Ok(Some(RunDetail {
            files: self.files_of_run(id)?,
            model: self.model_of_run(id)?,
            run,
        }))
    }

    /// Creates a run owning every pending file, in one transaction under
    /// the lease; `None` when nothing is pending. `dir` names the run's
    /// working directory from its id.
    pub fn create_run(
        &mut self,
        holder: &str,
        dir: impl Fn(i64) -> PathBuf,
    ) -> Result<Option<RunRecord>, SchedulerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        lease::check(&tx, RETRAIN_LEASE, holder)?;
        let pending: i64 = tx.query_row(
            "SELECT COUNT(*) FROM files WHERE run_id IS NULL AND error IS NULL AND valid > 0",
            [],
            |r| r.get(0),
        )?;
        if pending == 0 {
            return Ok(None);
        }
        let now = now_text();
        tx.execute(
            "INSERT INTO runs (status, dir, registered_at, updated_at) VALUES (?1, '', ?2, ?2)",
            params![RunStatus::Registered.as_str(), now],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE runs SET dir = ?2 WHERE id = ?1",
            params![id, dir(id).display().to_string()],
        )?;
        tx.execute(
            "UPDATE files SET run_id = ?1 WHERE run_id IS NULL AND error IS NULL AND valid > 0",
            params![id],
        )?;
        tx.commit()?;
        self.run(id)
    }

    /// Moves run `id` from `from` to `to` with the stage's own writes
    /// (`work`), in one transaction, only while `holder` holds the lease and
    /// the run is still at `from`.
    pub fn advance(
        &mut self,
        id: i64,
        from: RunStatus,
        to: RunStatus,
        holder: &str,
        work: impl FnOnce(&Transaction<'_>) -> Result<(), SchedulerError>,
    ) -> Result<(), SchedulerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        lease::check(&tx, RETRAIN_LEASE, holder)?;
        let status: String = tx
            .query_row("SELECT status FROM runs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| SchedulerError::Corrupt(format!("run {id} does not exist")))?;
        let status: RunStatus = status
            .parse()
            .map_err(|e: crate::status::UnknownStatus| SchedulerError::Corrupt(e.to_string()))?;
        if status != from || !from.can_advance_to(to) {
            return Err(SchedulerError::Transition {
                run: id,
                from: status,
                to,
            });
        }
        work(&tx)?;
        let now = now_text();
        tx.execute(
            &format!(
                "UPDATE runs SET status = ?2, {} = ?3, updated_at = ?3, error = NULL WHERE id = ?1",
                to.time_column()
            ),
            params![id, to.as_str(), now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records why the next stage of run `id` failed.
    pub fn set_error(&self, id: i64, error: &str) -> Result<(), SchedulerError> {
        self.conn.execute(
            "UPDATE runs SET error = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, error, now_text()],
        )?;
        Ok(())
    }

    /// The candidate model of run `id`.
    pub fn model_of_run(&self, id: i64) -> Result<Option<ModelRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLS} FROM models WHERE run_id = ?1"),
                params![id],
                ModelRecord::from_row,
            )
            .optional()?)
    }

    /// Model `id`.
    pub fn model(&self, id: i64) -> Result<Option<ModelRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLS} FROM models WHERE id = ?1"),
                params![id],
                ModelRecord::from_row,
            )
            .optional()?)
    }

    /// Every model, oldest first.
    pub fn models(&self) -> Result<Vec<ModelRecord>, SchedulerError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {MODEL_COLS} FROM models ORDER BY id"))?;
        let rows = st.query_map([], ModelRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The promoted model now in use: the newest one promoted.
    pub fn promoted_model(&self) -> Result<Option<ModelRecord>, SchedulerError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLS} FROM models WHERE promoted = 1 ORDER BY run_id DESC LIMIT 1"),
                [],
                ModelRecord::from_row,
            )
            .optional()?)
    }
}

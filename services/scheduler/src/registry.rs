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

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use crate::error::SchedulerError;
use crate::lease::{self, RETRAIN_LEASE};
use crate::status::RunStatus;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    hash        TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    stored      TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    valid       INTEGER NOT NULL,
    rejected    INTEGER NOT NULL,
    error       TEXT,
    first_seen  TEXT NOT NULL,
    run_id      INTEGER REFERENCES runs(id)
);
CREATE TABLE IF NOT EXISTS sightings (
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    modified    TEXT NOT NULL,
    hash        TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    PRIMARY KEY (path, size, modified)
);
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY,
    status         TEXT NOT NULL,
    dir            TEXT NOT NULL,
    registered_at  TEXT NOT NULL,
    produced_at    TEXT,
    pretrained_at  TEXT,
    finetuned_at   TEXT,
    evaluated_at   TEXT,
    decided_at     TEXT,
    updated_at     TEXT NOT NULL,
    error          TEXT,
    base_model     INTEGER REFERENCES models(id),
    new_rows       INTEGER,
    replay_rows    INTEGER,
    pretrain_steps INTEGER
);
CREATE TABLE IF NOT EXISTS models (
    id                  INTEGER PRIMARY KEY,
    run_id              INTEGER NOT NULL UNIQUE REFERENCES runs(id),
    pretrain_run        TEXT NOT NULL,
    checkpoint          TEXT NOT NULL,
    valid_accuracy      REAL NOT NULL,
    test_accuracy       REAL,
    macro_f1            REAL,
    test_rows           INTEGER,
    baseline_model      INTEGER REFERENCES models(id),
    baseline_accuracy   REAL,
    promoted            INTEGER NOT NULL DEFAULT 0,
    promoted_at         TEXT
);
CREATE TABLE IF NOT EXISTS lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
";

/// Opens (creating if needed) the registry database at `path`: WAL journal,
/// a 30 s busy timeout so concurrent schedulers wait for each other's
/// transactions instead of failing, and the schema.
pub fn connect(path: &Path) -> Result<Connection, SchedulerError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(SchedulerError::io("create", parent))?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// The current UTC time as RFC 3339 (what the registry stores).
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A distinct file content.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileRecord {
    /// sha-256 of the bytes, hex.
    pub hash: String,
    /// Where it was first seen in the inbox.
    pub path: String,
    /// The scheduler's own copy (what runs read).
    pub stored: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows read.
    pub rows: i64,
    /// Rows accepted by validation.
    pub valid: i64,
    /// Rows rejected (and quarantined).
    pub rejected: i64,
    /// Why the file could not be read at all (it is then never used).
    pub error: Option<String>,
    /// When it was first seen.
    pub first_seen: String,
    /// The run that trained on it as new data.
    pub run_id: Option<i64>,
}

impl FileRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            hash: r.get(0)?,
            path: r.get(1)?,
            stored: r.get(2)?,
            bytes: r.get(3)?,
            rows: r.get(4)?,
            valid: r.get(5)?,
            rejected: r.get(6)?,
            error: r.get(7)?,
            first_seen: r.get(8)?,
            run_id: r.get(9)?,
        })
    }
}

const FILE_COLS: &str =
    "hash, path, stored, bytes, rows, valid, rejected, error, first_seen, run_id";

/// An inbox location seen, with the content it had.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sighting {
    /// The location in the inbox.
    pub path: String,
    /// Its size.
    pub size: i64,
    /// Its modification time as the inbox reported it.
    pub modified: String,
    /// The content hash.
    pub hash: String,
    /// When the scheduler first saw it so.
    pub seen_at: String,
}

/// One retrain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// Run id (1, 2, …).
    pub id: i64,
    /// The last stage completed.
    pub status: RunStatus,
    /// Its working directory.
    pub dir: String,
    /// When it was created.
    pub registered_at: String,
    /// When its input was fixed.
    pub produced_at: Option<String>,
    /// When pretraining finished.
    pub pretrained_at: Option<String>,
    /// When fine-tuning finished.
    pub finetuned_at: Option<String>,
    /// When it was evaluated.
    pub evaluated_at: Option<String>,
    /// When it was promoted or rejected.
    pub decided_at: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// The error of the last failed attempt at its next stage (cleared when
    /// a stage completes).
    pub error: Option<String>,
    /// The promoted model pretraining continued from (none: from scratch).
    pub base_model: Option<i64>,
    /// Valid rows in its new files.
    pub new_rows: Option<i64>,
    /// Rows of earlier data replayed with them.
    pub replay_rows: Option<i64>,
    /// Optimiser steps of the pretraining run at its end (those it
    /// continued from included).
    pub pretrain_steps: Option<i64>,
}

const RUN_COLS: &str = "id, status, dir, registered_at, produced_at, pretrained_at, finetuned_at, \
     evaluated_at, decided_at, updated_at, error, base_model, new_rows, replay_rows, pretrain_steps";

impl RunRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let status: String = r.get(1)?;
        let status = status.parse::<RunStatus>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(Self {
            id: r.get(0)?,
            status,
            dir: r.get(2)?,
            registered_at: r.get(3)?,
            produced_at: r.get(4)?,
            pretrained_at: r.get(5)?,
            finetuned_at: r.get(6)?,
            evaluated_at: r.get(7)?,
            decided_at: r.get(8)?,
            updated_at: r.get(9)?,
            error: r.get(10)?,
            base_model: r.get(11)?,
            new_rows: r.get(12)?,
            replay_rows: r.get(13)?,
            pretrain_steps: r.get(14)?,
        })
    }
}

/// A fine-tuned candidate of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRecord {
    /// Model id.
    pub id: i64,
    /// The run that made it.
    pub run_id: i64,
    /// The pretraining run directory behind its encoder.
    pub pretrain_run: String,
    /// The fine-tuned checkpoint.
    pub checkpoint: String,
    /// `valid` accuracy of the selected weights.
    pub valid_accuracy: f64,
    /// `test` accuracy (set at evaluation).
    pub test_accuracy: Option<f64>,
    /// `test` macro-F1 (set at evaluation).
    pub macro_f1: Option<f64>,
    /// Test rows it was judged on.
    pub test_rows: Option<i64>,
    /// The promoted model it was compared with (none: nothing was promoted yet).
    pub baseline_model: Option<i64>,
    /// That model's accuracy on the same test rows.
    pub baseline_accuracy: Option<f64>,
    /// Whether it was promoted.
    pub promoted: bool,
    /// When.
    pub promoted_at: Option<String>,
}

const MODEL_COLS: &str = "id, run_id, pretrain_run, checkpoint, valid_accuracy, test_accuracy, \
     macro_f1, test_rows, baseline_model, baseline_accuracy, promoted, promoted_at";

impl ModelRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            run_id: r.get(1)?,
            pretrain_run: r.get(2)?,
            checkpoint: r.get(3)?,
            valid_accuracy: r.get(4)?,
            test_accuracy: r.get(5)?,
            macro_f1: r.get(6)?,
            test_rows: r.get(7)?,
            baseline_model: r.get(8)?,
            baseline_accuracy: r.get(9)?,
            promoted: r.get::<_, i64>(10)? != 0,
            promoted_at: r.get(11)?,
        })
    }
}

/// A run with its files and model: `pretext registry show`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunRecord,
    /// Its new files.
    pub files: Vec<FileRecord>,
    /// Its candidate model, once fine-tuned.
    pub model: Option<ModelRecord>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hash: &str, valid: i64) -> FileRecord {
        FileRecord {
            hash: hash.into(),
            path: format!("{hash}.parquet"),
            stored: format!("/store/{hash}.parquet"),
            bytes: 10,
            rows: valid,
            valid,
            rejected: 0,
            error: None,
            first_seen: now_text(),
            run_id: None,
        }
    }

    #[test]
    fn runs_take_every_pending_file_once_and_advance_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("r.sqlite")).unwrap();
        let me = crate::lease::new_holder();
        crate::lease::acquire(
            reg.conn_mut(),
            RETRAIN_LEASE,
            &me,
            60,
            crate::lease::unix_now(),
        )
        .unwrap();
        assert!(
            reg.create_run(&me, |i| PathBuf::from(format!("r{i}")))
                .unwrap()
                .is_none()
        );
        assert!(reg.insert_file(&file("a", 5)).unwrap());
        assert!(
            !reg.insert_file(&file("a", 5)).unwrap(),
            "a hash is registered once"
        );
        reg.insert_file(&file("empty", 0)).unwrap();
        let run = reg
            .create_run(&me, |i| PathBuf::from(format!("r{i}")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (run.id, run.status, run.dir.as_str()),
            (1, RunStatus::Registered, "r1")
        );
        assert_eq!(reg.files_of_run(1).unwrap().len(), 1);
        assert!(
            reg.pending_files().unwrap().is_empty(),
            "the empty file is never pending"
        );
        reg.insert_file(&file("b", 3)).unwrap();
        // Skipping a stage or going from the wrong status is refused and
        // changes nothing.
        for (from, to) in [
            (RunStatus::Registered, RunStatus::Pretrained),
            (RunStatus::Produced, RunStatus::Pretrained),
        ] {
            let err = reg.advance(1, from, to, &me, |_| Ok(())).unwrap_err();
            assert!(matches!(err, SchedulerError::Transition { .. }), "{err}");
        }
        reg.set_error(1, "boom").unwrap();
        reg.advance(1, RunStatus::Registered, RunStatus::Produced, &me, |tx| {
            tx.execute("UPDATE runs SET new_rows = 5 WHERE id = 1", [])?;
            Ok(())
        })
        .unwrap();
        let r = reg.run(1).unwrap().unwrap();
        assert_eq!(
            (r.status, r.new_rows, r.error),
            (RunStatus::Produced, Some(5), None)
        );
        assert!(r.produced_at.is_some() && r.pretrained_at.is_none());
        // A stage whose own writes fail commits nothing.
        let err = reg
            .advance(1, RunStatus::Produced, RunStatus::Pretrained, &me, |tx| {
                tx.execute("UPDATE runs SET pretrain_steps = 9 WHERE id = 1", [])?;
                Err(SchedulerError::Corrupt("stage failed".into()))
            })
            .unwrap_err();
        assert!(matches!(err, SchedulerError::Corrupt(_)));
        let r = reg.run(1).unwrap().unwrap();
        assert_eq!((r.status, r.pretrain_steps), (RunStatus::Produced, None));
        // Only one run is open; without the lease nothing advances.
        assert_eq!(reg.open_run().unwrap().unwrap().id, 1);
        let other = "elsewhere:1:x";
        let err = reg
            .advance(1, RunStatus::Produced, RunStatus::Pretrained, other, |_| {
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, SchedulerError::LeaseLost { .. }), "{err}");
        assert!(
            reg.create_run(other, |i| PathBuf::from(format!("r{i}")))
                .is_err()
        );
        // The next run gets b only.
        let mut status = RunStatus::Produced;
        for to in [
            RunStatus::Pretrained,
            RunStatus::Finetuned,
            RunStatus::Evaluated,
            RunStatus::Rejected,
        ] {
            reg.advance(1, status, to, &me, |_| Ok(())).unwrap();
            status = to;
        }
        assert!(reg.open_run().unwrap().is_none());
        let run2 = reg
            .create_run(&me, |i| PathBuf::from(format!("r{i}")))
            .unwrap()
            .unwrap();
        let hashes: Vec<String> = reg
            .files_of_run(run2.id)
            .unwrap()
            .into_iter()
            .map(|f| f.hash)
            .collect();
        assert_eq!(hashes, ["b"]);
        assert_eq!(reg.files_before(run2.id).unwrap()[0].hash, "a");
    }
}

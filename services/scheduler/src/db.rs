//! The registry's SQLite file: opening it (WAL, busy timeout, foreign
//! keys) and its schema, shared by the registry and the lease.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::SchedulerError;

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

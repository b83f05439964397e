//! Batches of a run that went to the dead-letter queue instead of the
//! model: what the trainer reports when the data ends without them, and
//! `checkpoints/dead.jsonl`, where it records them for `pretext audit`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The record of dead batches, in the checkpoint directory.
pub const DEAD_FILE: &str = "dead.jsonl";

/// A batch in `{ns}.dead`, with why it is there (the trainer's rejection
/// reason, or the broker's, e.g. `delivery_limit`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadBatch {
    /// Its message id.
    pub id: String,
    /// Why it was dead-lettered.
    pub reason: String,
}

/// Appends `dead` to `DIR/dead.jsonl`, synced, one line per batch.
pub fn record_dead(dir: &Path, dead: &[DeadBatch]) -> Result<(), TrainError> {
    let path = dir.join(DEAD_FILE);
    let lines: Vec<Vec<u8>> = dead
        .iter()
        .map(|d| serde_json::to_vec(d).expect("dead batches serialise"))
        .collect();
    let mut file =
        pretext_core::jsonl::open_append(&path).map_err(TrainError::io("open", &path))?;
    pretext_core::jsonl::append_synced(&mut file, &lines).map_err(TrainError::io("append", &path))
}

/// The dead batches recorded in `DIR/dead.jsonl`, one per id (the first
/// reason recorded), by id; none without the file.
pub fn read_dead(dir: &Path) -> Result<Vec<DeadBatch>, TrainError> {
    let path = dir.join(DEAD_FILE);
    let mut by_id = BTreeMap::new();
    // A torn last line is not a record.
    for d in pretext_core::jsonl::read_records::<DeadBatch>(&path)
        .map_err(TrainError::io("read", &path))?
    {
        by_id.entry(d.id).or_insert(d.reason);
    }
    Ok(by_id
        .into_iter()
        .map(|(id, reason)| DeadBatch { id, reason })
        .collect())
}

/// `id (reason)` for the first few, for an error message.
pub fn describe(dead: &[DeadBatch]) -> String {
    const SHOWN: usize = 5;
    let mut s = dead
        .iter()
        .take(SHOWN)
        .map(|d| format!("{} ({})", d.id, d.reason))
        .collect::<Vec<_>>()
        .join(", ");
    if dead.len() > SHOWN {
        s.push_str(&format!(", and {} more", dead.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_back_once_per_id_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = |id: &str, reason: &str| DeadBatch {
            id: id.into(),
            reason: reason.into(),
        };
        assert!(read_dead(dir.path()).unwrap().is_empty());
        record_dead(dir.path(), &[d("b", "delivery_limit"), d("a", "bad ipc")]).unwrap();
        record_dead(dir.path(), &[d("b", "again")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(DEAD_FILE))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"id\":\"c\",\"rea"))
            .unwrap();
        assert_eq!(
            read_dead(dir.path()).unwrap(),
            vec![d("a", "bad ipc"), d("b", "delivery_limit")]
        );
        assert_eq!(describe(&[d("a", "x"), d("b", "y")]), "a (x), b (y)",);
    }
}

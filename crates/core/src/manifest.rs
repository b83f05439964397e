//! The producers' manifests: every published batch's `message_id` and row
//! count, one JSON line each, one file per producer under
//! `RUN_DIR/manifests/`. `pretext audit` joins them with the checkpoints.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One published (broker-confirmed) batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The batch's deterministic message id.
    pub message_id: String,
    /// Rows in the batch.
    pub rows: u64,
    /// Real tokens in the batch.
    pub tokens: u64,
    /// The file task that produced it.
    pub task_id: String,
}

/// Directory of the manifests of a run.
pub fn manifest_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("manifests")
}

/// Appends entries to one producer's manifest.
#[derive(Debug)]
pub struct ManifestWriter {
    file: File,
}

impl ManifestWriter {
    /// Opens (appending) `RUN_DIR/manifests/<producer>.jsonl`. A torn last
    /// line (a crash mid-append) is cut off first, so the next entry starts
    /// on a line of its own instead of being glued to the fragment.
    pub fn open(run_dir: &Path, producer: &str) -> std::io::Result<Self> {
        let dir = manifest_dir(run_dir);
        std::fs::create_dir_all(&dir)?;
        let file = crate::jsonl::open_append(&dir.join(format!("{producer}.jsonl")))?;
        Ok(Self { file })
    }

    /// Appends entries and syncs them to disk.
    pub fn append(&mut self, entries: &[ManifestEntry]) -> std::io::Result<()> {
        let lines = entries
            .iter()
            .map(|e| serde_json::to_vec(e).map_err(std::io::Error::other))
            .collect::<Result<Vec<_>, _>>()?;
        crate::jsonl::append_synced(&mut self.file, &lines)
    }
}

/// Every published batch of a run, by message id (duplicates across
/// producers collapse: a redone task republishes the same ids).
pub fn read_manifests(run_dir: &Path) -> std::io::Result<BTreeMap<String, ManifestEntry>> {
    let mut out = BTreeMap::new();
    let dir = manifest_dir(run_dir);
    if !dir.exists() {
        return Ok(out);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "jsonl"))
    {
        // A torn last line (crash mid-append) is not a confirmed entry.
        for e in crate::jsonl::read_records::<ManifestEntry>(f)? {
            out.insert(e.message_id.clone(), e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[test]
    fn entries_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let e = |id: &str| ManifestEntry {
            message_id: id.into(),
            rows: 2,
            tokens: 10,
            task_id: "t".into(),
        };
        ManifestWriter::open(dir.path(), "p1")
            .unwrap()
            .append(&[e("a"), e("b")])
            .unwrap();
        ManifestWriter::open(dir.path(), "p2")
            .unwrap()
            .append(&[e("b"), e("c")])
            .unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(manifest_dir(dir.path()).join("p2.jsonl"))
            .unwrap();
        f.write_all(b"{\"message_id\":\"torn").unwrap();
        let m = read_manifests(dir.path()).unwrap();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn an_entry_appended_after_a_torn_line_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let e = |id: &str| ManifestEntry {
            message_id: id.into(),
            rows: 1,
            tokens: 4,
            task_id: "t".into(),
        };
        ManifestWriter::open(dir.path(), "p")
            .unwrap()
            .append(&[e("a")])
            .unwrap();
        // A crash mid-append leaves a fragment with no newline; the same
        // producer id restarts and appends.
        let path = manifest_dir(dir.path()).join("p.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"message_id\":\"torn\",\"ro").unwrap();
        drop(f);
        ManifestWriter::open(dir.path(), "p")
            .unwrap()
            .append(&[e("b")])
            .unwrap();
        let m = read_manifests(dir.path()).unwrap();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
        // A file that is one torn fragment is emptied.
        std::fs::write(&path, b"{\"message_id\":").unwrap();
        ManifestWriter::open(dir.path(), "p")
            .unwrap()
            .append(&[e("c")])
            .unwrap();
        let m = read_manifests(dir.path()).unwrap();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["c"]);
    }
}

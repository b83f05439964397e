//! Per-file validation reports: what `pretext validate` prints and `--json` emits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::input::{InputError, discover, for_each_chunk, reason_counts};
use crate::validate::{IdRegistry, RejectReason, ValidationConfig};

/// What validation found in one file.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: String,
    /// False when the file could not be read at all (see `error`).
    pub readable: bool,
    /// Rows read.
    pub rows: u64,
    /// Rows accepted.
    pub valid: u64,
    /// Total values (steps) in accepted rows.
    pub valid_tokens: u64,
    /// Rejected rows by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Why the file is unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileReport {
    /// Total rejected rows.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Validates one file to the end (or to its first unreadable part).
pub fn validate_file(
    path: &Path,
    cfg: ValidationConfig,
    ids: &mut IdRegistry,
    quarantine: Option<&Path>,
    threads: usize,
) -> FileReport {
    let mut report = FileReport {
        path: path.display().to_string(),
        ..Default::default()
    };
    let mut counts: BTreeMap<RejectReason, u64> = BTreeMap::new();
    let result = for_each_chunk(path, cfg, ids, quarantine, threads, |chunk| {
        let v = &chunk.verdict;
        report.rows += (v.rows.len() + v.rejected.len()) as u64;
        report.valid += v.rows.len() as u64;
        report.valid_tokens += v.rows.iter().map(|r| r.values.len() as u64).sum::<u64>();
        for (r, n) in v.counts() {
            *counts.entry(r).or_insert(0) += n;
        }
    });
    report.rejected = reason_counts(&counts);
    match result {
        Ok(()) => report.readable = true,
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Validates every file under `paths` as one dataset (ids unique across
/// all of them), decoding with `threads` threads. A path that cannot be
/// listed is an error.
pub fn validate_paths(
    paths: &[PathBuf],
    cfg: ValidationConfig,
    quarantine: Option<&Path>,
    threads: usize,
) -> Result<Vec<FileReport>, InputError> {
    let files = discover(paths)?;
    let mut ids = IdRegistry::default();
    Ok(files
        .iter()
        .map(|f| validate_file(f, cfg, &mut ids, quarantine, threads))
        .collect())
}

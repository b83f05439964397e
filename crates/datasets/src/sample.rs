//! Deterministic samples of rows: the stratified subset drawn by a hash of
//! (seed, id), and a fraction of a dataset's valid `train` rows written as
//! an unlabeled Parquet file (the experiment's reduced pretraining set, the
//! scheduler's replay sample).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use pretext_core::input::{ValidatingReader, discover, for_each_chunk};
use pretext_core::split::Split;
use pretext_core::validate::{IdRegistry, ValidationConfig};

use crate::error::{DatasetError, io};
use crate::rows::{Row, RowsFile};

/// Rows per row group of a written sample.
const SAMPLE_ROW_GROUP: usize = 64;

/// A row's place in the draw for `seed`: the first 8 bytes of
/// SHA-256(seed, id). Depends on nothing else, so the subset is the same
/// whatever the file order or the other rows.
pub fn draw_key(seed: u64, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Indices (ascending) of a stratified, deterministic `fraction` of
/// `rows` (`(id, class)`): in each class, `max(1, round(fraction × n))`
/// rows, those with the smallest [`draw_key`]. Every class with a row keeps
/// one; for one seed, a smaller fraction's subset lies inside a larger one's.
pub fn stratified_subset<'a>(
    rows: impl IntoIterator<Item = (&'a str, usize)>,
    fraction: f64,
    seed: u64,
) -> Vec<usize> {
    let mut by_class: BTreeMap<usize, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, (id, class)) in rows.into_iter().enumerate() {
        by_class
            .entry(class)
            .or_default()
            .push((draw_key(seed, id), i));
    }
    let mut chosen = Vec::new();
    for members in by_class.values_mut() {
        members.sort_unstable();
        let take = ((fraction * members.len() as f64).round() as usize).clamp(1, members.len());
        chosen.extend(members[..take].iter().map(|&(_, i)| i));
    }
    chosen.sort_unstable();
    chosen
}

/// Run-length statistics of the first `max_rows` valid `train` rows of
/// `paths` (files in [`discover`] order), what `auto` mask spans and
/// horizons are taken from: every process reading the same paths gets the
/// same answer.
pub fn train_run_stats(
    paths: &[PathBuf],
    validation: ValidationConfig,
    max_rows: usize,
) -> Result<crate::trivial::RunStats, DatasetError> {
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let mut ids = IdRegistry::default();
    'files: for f in discover(paths)? {
        let mut reader = ValidatingReader::open(&f, validation, None, None)?;
        while let Some(c) = reader.next_chunk(&mut ids)? {
            for r in c.verdict.rows {
                if r.split == Split::Train {
                    rows.push(r.values);
                    if rows.len() >= max_rows {
                        break 'files;
                    }
                }
            }
        }
    }
    Ok(crate::trivial::run_stats(rows.iter().map(Vec::as_slice)))
}

/// Writes a `fraction` of the valid `train` rows of `paths` (the rows with
/// the smallest [`draw_key`] for `seed`) to `out`, unlabeled, atomically
/// (a temporary file synced, then renamed). Returns the rows written; with
/// no train rows, 0 and no file.
pub fn write_train_sample(
    paths: &[PathBuf],
    validation: ValidationConfig,
    fraction: f64,
    seed: u64,
    out: &Path,
) -> Result<usize, DatasetError> {
    let mut rows = Vec::new();
    let mut ids = IdRegistry::default();
    for f in discover(paths)? {
        for_each_chunk(&f, validation, &mut ids, None, 2, |c| {
            rows.extend(
                c.verdict
                    .rows
                    .into_iter()
                    .filter(|r| r.split == Split::Train),
            );
        })?;
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let keep = stratified_subset(rows.iter().map(|r| (r.id.as_str(), 0)), fraction, seed);
    let sample: Vec<Row> = keep
        .into_iter()
        .map(|i| Row {
            id: std::mem::take(&mut rows[i].id),
            values: std::mem::take(&mut rows[i].values),
            class: 0,
            labeled: false,
            split: Split::Train,
        })
        .collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let name = out
        .file_name()
        .map_or_else(|| "sample".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(".{name}.tmp"));
    let mut file = RowsFile::create(&tmp, SAMPLE_ROW_GROUP)?;
    for chunk in sample.chunks(SAMPLE_ROW_GROUP) {
        file.write(chunk)?;
    }
    file.finish(true)?;
    std::fs::rename(&tmp, out).map_err(io("rename", &tmp))?;
    Ok(sample.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthConfig, generate};

    #[test]
    fn draw_keys_depend_on_seed_and_id() {
        assert_eq!(draw_key(1, "a"), draw_key(1, "a"));
        assert_ne!(draw_key(1, "a"), draw_key(2, "a"));
        assert_ne!(draw_key(1, "a"), draw_key(1, "b"));
    }

    #[test]
    fn a_train_sample_holds_the_fraction_of_train_rows_unlabeled() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            sequences: 200,
            max_len: 700,
            ..SynthConfig::default()
        };
        generate(&cfg, &dir.path().join("data")).unwrap();
        let data = vec![dir.path().join("data")];
        let out = dir.path().join("s").join("part-00000.parquet");
        let v = ValidationConfig::default();
        let n = write_train_sample(&data, v, 0.25, 3, &out).unwrap();
        let mut train = 0;
        let mut got = Vec::new();
        let mut ids = IdRegistry::default();
        for f in discover(&data).unwrap() {
            for_each_chunk(&f, v, &mut ids, None, 1, |c| {
                train += c
                    .verdict
                    .rows
                    .iter()
                    .filter(|r| r.split == Split::Train)
                    .count();
            })
            .unwrap();
        }
        let mut ids = IdRegistry::default();
        for_each_chunk(&out, v, &mut ids, None, 1, |c| got.extend(c.verdict.rows)).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(n, (train as f64 * 0.25).round() as usize);
        assert!(
            got.iter()
                .all(|r| r.split == Split::Train && r.label.is_none())
        );
        assert_eq!(
            write_train_sample(&data, v, 0.25, 3, &out).unwrap(),
            n,
            "same seed, same sample"
        );
        assert!(
            !dir.path()
                .join("s")
                .join(".part-00000.parquet.tmp")
                .exists()
        );
    }
}

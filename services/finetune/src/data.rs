//! The labeled data of a fine-tuning run: rows read straight from Parquet
//! (validated like everywhere else), classes numbered, the stratified
//! labeled subset, and batches built by the same bucketing code as
//! pretraining.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pretext_core::batch::{Batch, BatchRow};
use pretext_core::bucket::{BucketConfig, Bucketer};
use pretext_core::input::{discover, for_each_chunk};
use pretext_core::split::Split;
use pretext_core::task::{MaskConfig, Task};
use pretext_core::validate::{IdRegistry, Label, ValidationConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::FinetuneError;

/// One labeled sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Row id.
    pub id: String,
    /// The steps.
    pub values: Vec<u8>,
    /// Class index into [`LabeledData::classes`].
    pub class: usize,
}

/// Every labeled row of a dataset, by split.
#[derive(Clone, Debug, Default)]
pub struct LabeledData {
    /// Class names, sorted; a class's index is its position here.
    pub classes: Vec<Label>,
    /// Labeled `train` rows (the subset is drawn from these).
    pub train: Vec<Example>,
    /// `valid` rows (model selection).
    pub valid: Vec<Example>,
    /// `test` rows (the reported numbers).
    pub test: Vec<Example>,
    /// Unlabeled `train` rows (not used here; reported).
    pub unlabeled_train: usize,
    /// Rows rejected by validation.
    pub rejected: u64,
}

impl LabeledData {
    /// Reads every labeled row of `paths`. Classes are the sorted set of
    /// labels over all splits; unlabeled `valid`/`test` rows are skipped.
    pub fn load(paths: &[PathBuf], validation: ValidationConfig) -> Result<Self, FinetuneError> {
        let mut rows: Vec<(String, Vec<u8>, Label, Split)> = Vec::new();
        let mut ids = IdRegistry::default();
        let mut out = LabeledData::default();
        for file in discover(paths)? {
            for_each_chunk(&file, validation, &mut ids, None, 2, |chunk| {
                out.rejected += chunk.verdict.rejected.len() as u64;
                for r in chunk.verdict.rows {
                    match r.label {
                        Some(label) => rows.push((r.id, r.values, label, r.split)),
                        None => out.unlabeled_train += usize::from(r.split == Split::Train),
                    }
                }
            })?;
        }
        let classes: BTreeMap<Label, usize> = {
            let mut names: Vec<&Label> = rows.iter().map(|r| &r.2).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect()
        };
        for (id, values, label, split) in rows {
            let ex = Example {
                id,
                values,
                class: classes[&label],
            };
            match split {
                Split::Train => out.train.push(ex),
                Split::Valid => out.valid.push(ex),
                Split::Test => out.test.push(ex),
            }
        }
        out.classes = classes.into_keys().collect();
        Ok(out)
    }

    /// Checks that the data can support a run.
    pub fn check(&self) -> Result<(), FinetuneError> {
        let fail = |m: String| Err(FinetuneError::Data(m));
        if self.classes.len() < 2 {
            return fail(format!(
                "need at least 2 classes among the labeled rows, found {}",
                self.classes.len()
            ));
        }
        let mut seen = vec![false; self.classes.len()];
        for e in &self.train {
            seen[e.class] = true;
        }
        if let Some(c) = seen.iter().position(|s| !s) {
            return fail(format!(
                "class `{}` has no labeled train row: it cannot be learned",
                self.classes[c]
            ));
        }
        if self.valid.is_empty() || self.test.is_empty() {
            return fail(format!(
                "need labeled valid and test rows (found {} valid, {} test)",
                self.valid.len(),
                self.test.len()
            ));
        }
        Ok(())
    }
}

pub use pretext_datasets::sample::{draw_key, stratified_subset};

/// The batches of one pass over `examples`: rows in an order shuffled by
/// `(seed, epoch)` (or kept, when `shuffle` is off), optionally cropped to
/// `crop` steps at a random offset, grouped by length bucket under the
/// token budget, and the batches shuffled too.
pub fn batches(
    examples: &[&Example],
    buckets: &BucketConfig,
    epoch: u32,
    seed: u64,
    crop: Option<usize>,
    shuffle: bool,
) -> Vec<Batch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(epoch) << 32) ^ 0xF1_7E);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    if shuffle {
        order.shuffle(&mut rng);
    }
    let mut bucketer = Bucketer::new(buckets.clone());
    let mut groups = Vec::new();
    for i in order {
        let e = examples[i];
        let values = match crop {
            Some(c) if e.values.len() > c => {
                let start = rng.random_range(0..=e.values.len() - c);
                e.values[start..start + c].to_vec()
            }
            _ => e.values.clone(),
        };
        let row = BatchRow {
            seq_id: e.id.clone(),
            label: Some(e.class as i32),
            values,
        };
        match bucketer.push(row.values.len(), row) {
            Ok(Some(g)) => groups.push(g),
            Ok(None) => {}
            Err(row) => groups.push((row.values.len(), vec![row])),
        }
    }
    groups.extend(bucketer.flush());
    if shuffle {
        groups.shuffle(&mut rng);
    }
    groups
        .into_iter()
        .map(|(l, rows)| Batch::build(Task::Classify, &MaskConfig::default(), epoch, l, &rows))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_row_once_within_budget() {
        let ex: Vec<Example> = (0..20)
            .map(|i| Example {
                id: format!("r{i}"),
                values: vec![1; 100 + 37 * i],
                class: i % 3,
            })
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        let cfg = BucketConfig {
            edges: vec![256, 512, 1024],
            max_tokens: 1024,
        };
        let b = batches(&refs, &cfg, 0, 7, None, true);
        let mut ids: Vec<&str> = b
            .iter()
            .flat_map(|b| b.seq_ids.iter().map(String::as_str))
            .collect();
        ids.sort();
        let mut want: Vec<String> = ex.iter().map(|e| e.id.clone()).collect();
        want.sort();
        assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(b.iter().all(|b| b.rows() * b.bucket_len <= 1024));
        let cropped = batches(&refs, &cfg, 0, 7, Some(200), true);
        assert!(cropped.iter().all(|b| b.lengths.iter().all(|&l| l <= 200)));
    }
}

//! The synthetic dataset of `pretext gen-data`: classes that differ only in
//! sequential structure, never in value histogram or length.
//!
//! Every class shares one background process (a sticky Markov chain whose
//! stationary distribution is uniform) and one pool of base motifs. A class
//! is a fixed permutation of motif *positions*: class `k` writes base motif
//! `j` in its own order. All classes therefore emit the same multiset of
//! values in expectation, lengths are drawn independently of the class, and
//! only the order of values inside motifs tells classes apart. Unlabeled
//! sequences hold the same motifs, so a model that learns to predict masked
//! or next steps learns the motif variants before it sees a label.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use pretext_core::NUM_VALUES;
use pretext_core::split::Split;

use crate::error::DatasetError;
use crate::rows::{Row, write_parts};

/// Everything that decides the generated dataset; the same config gives the
/// same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Number of sequences.
    pub sequences: usize,
    /// Number of classes.
    pub classes: usize,
    /// Fraction of `train` rows that keep their label (valid and test rows
    /// are always labeled: they judge the models).
    pub labeled_fraction: f64,
    /// Shortest sequence.
    pub min_len: usize,
    /// Longest sequence; lengths are log-uniform in `min_len..=max_len`.
    pub max_len: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Fraction of rows in `valid` and in `test` (each).
    pub holdout_fraction: f64,
    /// Rows per Parquet file.
    pub rows_per_file: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Number of base motifs shared by all classes.
    pub motifs: usize,
    /// Length of each motif.
    pub motif_len: usize,
    /// Expected fraction of steps inside motifs.
    pub motif_density: f64,
    /// Probability that a motif step is replaced by a random value.
    pub motif_noise: f64,
    /// Probability that a background step follows the shared permutation
    /// of the previous value instead of being drawn at random.
    pub background_stickiness: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            sequences: 2_000,
            classes: 4,
            labeled_fraction: 0.1,
            min_len: 512,
            max_len: 30_720,
            seed: 0,
            holdout_fraction: 0.1,
            rows_per_file: 1_024,
            row_group_rows: 64,
            motifs: 16,
            motif_len: 10,
            motif_density: 0.3,
            motif_noise: 0.1,
            background_stickiness: 0.3,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SynthSummary {
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Rows written.
    pub rows: u64,
    /// Total steps.
    pub tokens: u64,
    /// Rows per split: train, valid, test.
    pub per_split: [u64; 3],
    /// Train rows that carry a label.
    pub labeled_train: u64,
}

/// The dataset's fixed structure, drawn once from the seed.
struct World {
    base_motifs: Vec<Vec<u8>>,
    class_orders: Vec<Vec<usize>>,
    background_next: Vec<u8>,
}

impl World {
    fn new(cfg: &SynthConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x005E_ED0F_57A7);
        let base_motifs = (0..cfg.motifs)
            .map(|_| {
                (0..cfg.motif_len)
                    .map(|_| rng.random_range(0..NUM_VALUES as u8))
                    .collect()
            })
            .collect();
        let class_orders = (0..cfg.classes)
            .map(|_| {
                let mut order: Vec<usize> = (0..cfg.motif_len).collect();
                order.shuffle(&mut rng);
                order
            })
            .collect();
        let mut background_next: Vec<u8> = (0..NUM_VALUES as u8).collect();
        background_next.shuffle(&mut rng);
        Self {
            base_motifs,
            class_orders,
            background_next,
        }
    }
}

impl SynthConfig {
    fn check(&self) -> Result<(), DatasetError> {
        let bad = |m: &str| {
            Err(DatasetError::Config {
                what: "gen-data",
                reason: m.to_owned(),
            })
        };
        if self.classes < 2 {
            return bad("--classes must be at least 2");
        }
        if self.min_len == 0 || self.min_len > self.max_len {
            return bad("need 0 < --min-len <= --max-len");
        }
        if !(0.0..=1.0).contains(&self.labeled_fraction) {
            return bad("--labeled-fraction must be in 0..=1");
        }
        if !(0.0..0.5).contains(&self.holdout_fraction) {
            return bad("holdout fraction must be in 0..0.5");
        }
        if self.motif_len == 0 || self.motifs == 0 || !(0.0..1.0).contains(&self.motif_density) {
            return bad("motifs need a length, a count and a density in 0..1");
        }
        if self.rows_per_file == 0 || self.row_group_rows == 0 {
            return bad("rows per file and per row group must be positive");
        }
        Ok(())
    }

    /// Generates row `i` (independent of every other row, so files can be
    /// written in any chunking and still be identical).
    fn row(&self, world: &World, i: usize) -> Row {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
        let class = rng.random_range(0..self.classes);
        let u: f64 = rng.random();
        let split = if u < self.holdout_fraction {
            Split::Valid
        } else if u < 2.0 * self.holdout_fraction {
            Split::Test
        } else {
            Split::Train
        };
        let labeled = split != Split::Train || rng.random::<f64>() < self.labeled_fraction;
        let (lo, hi) = ((self.min_len as f64).ln(), ((self.max_len + 1) as f64).ln());
        let len = (rng.random_range(lo..hi).exp() as usize).clamp(self.min_len, self.max_len);

        // A motif starts at a background step with probability p, so that the
        // expected share of motif steps is `motif_density`.
        let m = self.motif_len as f64;
        let p_start = self.motif_density / (m * (1.0 - self.motif_density));
        let order = &world.class_orders[class];
        let mut values = Vec::with_capacity(len);
        let mut prev: u8 = rng.random_range(0..NUM_VALUES as u8);
        while values.len() < len {
            if rng.random::<f64>() < p_start {
                let motif = &world.base_motifs[rng.random_range(0..self.motifs)];
                for &pos in order {
                    if values.len() == len {
                        break;
                    }
                    let v = if rng.random::<f64>() < self.motif_noise {
                        rng.random_range(0..NUM_VALUES as u8)
                    } else {
                        motif[pos]
                    };
                    values.push(v);
                }
                // The background restarts at random after a motif: following
                // the motif's last value would leak the class into the
                // histogram (class orders end motifs on different values).
                prev = rng.random_range(0..NUM_VALUES as u8);
            } else {
                let v = if rng.random::<f64>() < self.background_stickiness {
                    world.background_next[prev as usize]
                } else {
                    rng.random_range(0..NUM_VALUES as u8)
                };
                values.push(v);
                prev = v;
            }
        }
        Row {
            id: format!("syn{}-{i:07}", self.seed),
            values,
            class,
            labeled,
            split,
        }
    }

    /// Generates every row in order (for tests and in-memory use).
    pub fn rows(&self) -> Result<impl Iterator<Item = Row> + '_, DatasetError> {
        self.check()?;
        let world = World::new(self);
        Ok((0..self.sequences).map(move |i| self.row(&world, i)))
    }
}

/// Writes the dataset as `part-NNNNN.parquet` files under `out`.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<SynthSummary, DatasetError> {
    cfg.check()?;
    let world = World::new(cfg);
    let mut summary = SynthSummary::default();
    let rows = (0..cfg.sequences).map(|i| {
        let r = cfg.row(&world, i);
        summary.rows += 1;
        summary.tokens += r.values.len() as u64;
        summary.per_split[r.split as usize] += 1;
        summary.labeled_train += u64::from(r.split == Split::Train && r.labeled);
        r
    });
    let files = write_parts(out, rows, cfg.rows_per_file, cfg.row_group_rows)?;
    summary.files = files;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            sequences: 300,
            min_len: 64,
            max_len: 2048,
            ..Default::default()
        }
    }

    #[test]
    fn rows_are_deterministic_and_in_range() {
        let a: Vec<_> = small().rows().unwrap().collect();
        let b: Vec<_> = small().rows().unwrap().collect();
        assert_eq!(a, b);
        for r in &a {
            assert!((64..=2048).contains(&r.values.len()));
            assert!(r.values.iter().all(|&v| v <= 40));
        }
        let other: Vec<_> = SynthConfig { seed: 1, ..small() }.rows().unwrap().collect();
        assert_ne!(a, other);
    }

    #[test]
    fn every_class_and_split_appears_and_holdouts_are_labeled() {
        let rows: Vec<_> = small().rows().unwrap().collect();
        for k in 0..4 {
            assert!(rows.iter().any(|r| r.class == k));
        }
        for s in Split::ALL {
            assert!(rows.iter().any(|r| r.split == s));
        }
        assert!(
            rows.iter()
                .filter(|r| r.split != Split::Train)
                .all(|r| r.labeled)
        );
        let train: Vec<_> = rows.iter().filter(|r| r.split == Split::Train).collect();
        let labeled = train.iter().filter(|r| r.labeled).count() as f64 / train.len() as f64;
        assert!((0.03..0.2).contains(&labeled), "labeled share {labeled}");
    }

    #[test]
    fn class_histograms_match_but_bigrams_differ() {
        let cfg = SynthConfig {
            sequences: 400,
            min_len: 2000,
            max_len: 2000,
            classes: 2,
            ..Default::default()
        };
        let rows: Vec<_> = cfg.rows().unwrap().collect();
        let mut hist = [[0f64; NUM_VALUES]; 2];
        let mut bigram = vec![[0f64; NUM_VALUES * NUM_VALUES]; 2];
        for r in &rows {
            for w in r.values.windows(2) {
                hist[r.class][w[0] as usize] += 1.0;
                bigram[r.class][w[0] as usize * NUM_VALUES + w[1] as usize] += 1.0;
            }
        }
        let tv = |a: &[f64], b: &[f64]| {
            let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
            a.iter()
                .zip(b)
                .map(|(x, y)| (x / sa - y / sb).abs())
                .sum::<f64>()
                / 2.0
        };
        let h = tv(&hist[0], &hist[1]);
        let b = tv(&bigram[0], &bigram[1]);
        assert!(h < 0.02, "histograms differ by {h}");
        assert!(
            b > 5.0 * h,
            "bigrams should differ more than histograms: {b} vs {h}"
        );
    }

    #[test]
    fn rejects_bad_config() {
        assert!(
            SynthConfig {
                classes: 1,
                ..small()
            }
            .rows()
            .is_err()
        );
        assert!(
            SynthConfig {
                min_len: 10,
                max_len: 5,
                ..small()
            }
            .rows()
            .is_err()
        );
    }
}

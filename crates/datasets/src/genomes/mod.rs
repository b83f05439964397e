//! The real dataset of `pretext import-genomes`: bacterial genomes as windows labeled by species.
//!
//! Input: a directory with one subdirectory per species holding
//! `references/*.fasta[.gz]` (the layout of Debian's `ragout-examples`); the
//! species are sorted by name and their index is the label. Every record of
//! every strain is cut into non-overlapping windows whose lengths are
//! log-uniform in `min_len..=max_len`; a trailing piece shorter than
//! `min_len` is dropped. Values: A, C, G, T → 1, 2, 3, 4, anything else → 0.
//!
//! The split. Strains of one species are nearly identical and are rotated,
//! reverse-complemented and rearranged against each other, so neither a
//! random split nor a split by position in each record's own coordinates
//! keeps test sequence out of train. Instead one reference strain per
//! species (the first file in sorted order) is split by position into
//! contiguous regions (70/10/20 by default, along each of its records);
//! each of its windows goes to the region its start falls in. Every other strain's window goes to the split
//! whose reference windows hold most of its unique canonical 31-mers
//! (k-mers found in reference windows of two splits are ambiguous and
//! ignored; ties and windows without hits go to train).
//!
//! The leakage of the result is measured and returned: the fraction of the
//! unique canonical 31-mers of each species' test windows that also occur in
//! that species' train windows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pretext_core::split::Split;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::DatasetError;
use crate::rows::{Row, remove_stale_parts, write_parts};

pub use fasta::resolve_source;
pub use kmer::{base_value, for_each_canonical_kmer};
pub use windows::measure_leakage;

use fasta::{Record, SpeciesFiles, read_fasta, species_under, strain_name};
use kmer::{AMBIGUOUS, KmerBuild, fnv1a, unique_kmers};
use windows::{cut_windows, quotas, reference_region, winner};

/// Length of the k-mers that decide the split and measure leakage.
pub const K: usize = 31;

/// File name endings read as FASTA (each also with `.gz`).
const FASTA_EXTENSIONS: [&str; 4] = ["fasta", "fa", "fna", "fas"];

/// Everything that decides the imported dataset; the same config and input
/// give the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenomesConfig {
    /// Shortest window.
    pub min_len: usize,
    /// Longest window; lengths are log-uniform in `min_len..=max_len`.
    pub max_len: usize,
    /// Seed of the window lengths and of the subsample.
    pub seed: u64,
    /// Keep at most this many windows per species (a deterministic
    /// subsample that keeps the species' split proportions).
    pub max_windows_per_species: Option<usize>,
    /// Shares of each reference record that go to train, valid and test,
    /// in that order along the record.
    pub reference_fractions: [f64; 3],
    /// Leakage is measured on the k-mers whose hash is divisible by this
    /// (FracMinHash sampling); 1 measures every k-mer exactly.
    pub leakage_kmer_scale: u64,
    /// Rows per Parquet file.
    pub rows_per_file: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for GenomesConfig {
    fn default() -> Self {
        Self {
            min_len: 512,
            max_len: 30_720,
            seed: 0,
            max_windows_per_species: None,
            reference_fractions: [0.7, 0.1, 0.2],
            leakage_kmer_scale: 1,
            rows_per_file: 1_024,
            row_group_rows: 64,
        }
    }
}

impl GenomesConfig {
    fn check(&self) -> Result<(), DatasetError> {
        let bad = |m: &str| {
            Err(DatasetError::Config {
                what: "import-genomes",
                reason: m.to_owned(),
            })
        };
        if self.min_len == 0 || self.min_len > self.max_len {
            return bad("need 0 < --min-len <= --max-len");
        }
        if self.max_windows_per_species == Some(0) {
            return bad("--max-windows-per-species must be positive");
        }
        let f = self.reference_fractions;
        if f.iter().any(|x| !(0.0..=1.0).contains(x)) || (f.iter().sum::<f64>() - 1.0).abs() > 1e-9
        {
            return bad("reference fractions must be in 0..=1 and sum to 1");
        }
        if self.leakage_kmer_scale == 0 {
            return bad("the leakage k-mer scale must be at least 1");
        }
        if self.rows_per_file == 0 || self.row_group_rows == 0 {
            return bad("rows per file and per row group must be positive");
        }
        Ok(())
    }
}

/// Maps an I/O error on `path` to the crate's error.
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + use<> {
    crate::error::io("read", path)
}

/// A count per split, named in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// Train.
    pub train: u64,
    /// Valid.
    pub valid: u64,
    /// Test.
    pub test: u64,
}

impl SplitCounts {
    /// The count of `split`.
    pub fn get(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.train,
            Split::Valid => self.valid,
            Split::Test => self.test,
        }
    }

    /// Adds `n` to the count of `split`.
    pub fn add(&mut self, split: Split, n: u64) {
        match split {
            Split::Train => self.train += n,
            Split::Valid => self.valid += n,
            Split::Test => self.test += n,
        }
    }

    /// The sum over splits.
    pub fn total(&self) -> u64 {
        self.train + self.valid + self.test
    }
}

/// Shared k-mers between test and train windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Leakage {
    /// k-mer length.
    pub k: usize,
    /// Only k-mers whose hash is divisible by this were counted (1: all).
    pub kmer_scale: u64,
    /// Distinct canonical k-mers of the test windows (counted ones).
    pub test_kmers: u64,
    /// Of those, how many also occur in a train window of the same species.
    pub shared_with_train: u64,
    /// `shared_with_train / test_kmers` (0 without test k-mers).
    pub fraction: f64,
}

impl Leakage {
    fn new(kmer_scale: u64, test_kmers: u64, shared_with_train: u64) -> Self {
        Self {
            k: K,
            kmer_scale,
            test_kmers,
            shared_with_train,
            fraction: if test_kmers == 0 {
                0.0
            } else {
                shared_with_train as f64 / test_kmers as f64
            },
        }
    }
}

/// What was imported for one species.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeciesSummary {
    /// Directory name.
    pub name: String,
    /// The `label` of its rows.
    pub label: i32,
    /// The strain split by position.
    pub reference: String,
    /// Every strain (file), reference first.
    pub strains: Vec<String>,
    /// Bases read (all strains).
    pub bases: u64,
    /// Windows cut before any cap.
    pub windows_cut: u64,
    /// Windows of non-reference strains whose split their k-mer hits
    /// decided (before any cap).
    pub strain_windows_by_hits: u64,
    /// Windows of non-reference strains without a clear winner (no hits
    /// or a tie), sent to train (before any cap).
    pub strain_windows_fallback: u64,
    /// Rows written per split.
    pub rows: SplitCounts,
    /// Values written per split.
    pub tokens: SplitCounts,
    /// Test → train k-mer leakage of this species' rows.
    pub leakage: Leakage,
}

/// What the importer wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenomesSummary {
    /// The species root read (after searching below the given source).
    pub source: PathBuf,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Rows per split, all species.
    pub rows: SplitCounts,
    /// Values per split, all species.
    pub tokens: SplitCounts,
    /// Per species, in label order.
    pub species: Vec<SpeciesSummary>,
    /// Test → train leakage pooled over species (each species' test
    /// k-mers checked against its own train k-mers).
    pub leakage: Leakage,
    /// The config used.
    pub config: GenomesConfig,
}

/// Where a window came from and where it went.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowInfo {
    /// Species index (= label).
    pub species: usize,
    /// Strain (file) name.
    pub strain: String,
    /// Whether the strain is the species' reference.
    pub reference: bool,
    /// Record name (first word of the FASTA header).
    pub record: String,
    /// Start in the record.
    pub start: usize,
    /// Length.
    pub len: usize,
    /// Its split.
    pub split: Split,
    /// Unique canonical k-mers found in the reference windows of each split
    /// (train, valid, test; zero for reference windows).
    pub hits: [u64; 3],
    /// Whether it survived the per-species cap.
    pub kept: bool,
}

/// The imported dataset in memory, before writing.
#[derive(Clone, Debug)]
pub struct Imported {
    /// Rows in output order (shuffled by the seed).
    pub rows: Vec<Row>,
    /// Every window cut, kept or not, in input order.
    pub windows: Vec<WindowInfo>,
    /// The summary (without files).
    pub summary: GenomesSummary,
}

mod fasta;
mod kmer;
#[cfg(test)]
mod tests;
mod windows;

/// One species, cut and split: its windows, and the records they point into.
fn import_species(
    cfg: &GenomesConfig,
    label: usize,
    sp: &SpeciesFiles,
    rows: &mut Vec<Row>,
    windows_out: &mut Vec<WindowInfo>,
) -> Result<SpeciesSummary, DatasetError> {
    let mut summary = SpeciesSummary {
        name: sp.name.clone(),
        label: label as i32,
        ..Default::default()
    };
    // Strains in file order; the first is the reference.
    let mut strains: Vec<(String, Vec<Record>)> = Vec::with_capacity(sp.files.len());
    for f in &sp.files {
        let name = strain_name(f).expect("listed as FASTA");
        let records = read_fasta(f)?;
        summary.bases += records.iter().map(|r| r.values.len() as u64).sum::<u64>();
        strains.push((name, records));
    }
    summary.reference = strains[0].0.clone();
    summary.strains = strains.iter().map(|(n, _)| n.clone()).collect();

    // Cut every record; remember (strain, record) of each window.
    let mut windows: Vec<WindowInfo> = Vec::new();
    let mut origin: Vec<(usize, usize)> = Vec::new();
    for (si, (strain, records)) in strains.iter().enumerate() {
        for (ri, rec) in records.iter().enumerate() {
            let key = format!("{}/{strain}/{}", sp.name, rec.name);
            let mut rng = ChaCha8Rng::seed_from_u64(
                cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fnv1a(&key),
            );
            for (start, len) in cut_windows(rec.values.len(), cfg, &mut rng) {
                let split = if si == 0 {
                    reference_region(start, rec.values.len(), cfg.reference_fractions)
                } else {
                    Split::Train // decided below
                };
                windows.push(WindowInfo {
                    species: label,
                    strain: strain.clone(),
                    reference: si == 0,
                    record: rec.name.clone(),
                    start,
                    len,
                    split,
                    hits: [0; 3],
                    kept: true,
                });
                origin.push((si, ri));
            }
        }
    }
    let slice = |windows: &[WindowInfo], i: usize| -> &[u8] {
        let (si, ri) = origin[i];
        let w = &windows[i];
        &strains[si].1[ri].values[w.start..w.start + w.len]
    };

    // The reference's k-mers and the split of the windows holding them.
    let mut map: HashMap<u64, u8, KmerBuild> = HashMap::default();
    for (i, w) in windows.iter().enumerate().filter(|(_, w)| w.reference) {
        let s = w.split as u8;
        for_each_canonical_kmer(slice(&windows, i), |k| {
            map.entry(k)
                .and_modify(|v| {
                    if *v != s {
                        *v = AMBIGUOUS;
                    }
                })
                .or_insert(s);
        });
    }
    // Every other window goes where its unique k-mers hit most.
    let mut decided = Vec::with_capacity(windows.len());
    for i in 0..windows.len() {
        if windows[i].reference {
            decided.push((windows[i].split, [0; 3]));
            continue;
        }
        let mut hits = [0u64; 3];
        for k in unique_kmers(slice(&windows, i)) {
            if let Some(&s) = map.get(&k)
                && s != AMBIGUOUS
            {
                hits[s as usize] += 1;
            }
        }
        let split = match winner(hits) {
            Some(s) => {
                summary.strain_windows_by_hits += 1;
                s
            }
            None => {
                summary.strain_windows_fallback += 1;
                Split::Train
            }
        };
        decided.push((split, hits));
    }
    drop(map);
    for (w, (split, hits)) in windows.iter_mut().zip(decided) {
        w.split = split;
        w.hits = hits;
    }
    summary.windows_cut = windows.len() as u64;

    // The cap: a seeded subsample of each split.
    if let Some(cap) = cfg.max_windows_per_species {
        let mut by_split: [Vec<usize>; 3] = Default::default();
        for (i, w) in windows.iter().enumerate() {
            by_split[w.split as usize].push(i);
        }
        let q = quotas(by_split.each_ref().map(Vec::len), cap);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ fnv1a(&sp.name) ^ 0xCA9);
        for (idx, keep) in by_split.iter_mut().zip(q) {
            idx.shuffle(&mut rng);
            for &i in &idx[keep..] {
                windows[i].kept = false;
            }
        }
    }

    // Rows and counts of the kept windows.
    for (i, w) in windows.iter().enumerate().filter(|(_, w)| w.kept) {
        summary.rows.add(w.split, 1);
        summary.tokens.add(w.split, w.len as u64);
        rows.push(Row {
            id: format!("{}/{}/{}/{}", sp.name, w.strain, w.record, w.start),
            values: slice(&windows, i).to_vec(),
            class: label,
            labeled: true,
            split: w.split,
        });
    }
    let of = |split: Split| {
        let windows = &windows;
        (0..windows.len())
            .filter(move |&i| windows[i].kept && windows[i].split == split)
            .map(move |i| slice(windows, i))
    };
    summary.leakage = measure_leakage(of(Split::Train), of(Split::Test), cfg.leakage_kmer_scale);
    windows_out.extend(windows);
    Ok(summary)
}

/// Reads, cuts and splits every species under `source` (see
/// [`resolve_source`]) without writing anything.
pub fn build(cfg: &GenomesConfig, source: &Path) -> Result<Imported, DatasetError> {
    cfg.check()?;
    let root = resolve_source(source)?;
    let species = species_under(&root)?;
    let mut rows = Vec::new();
    let mut windows = Vec::new();
    let mut summary = GenomesSummary {
        source: root,
        config: cfg.clone(),
        ..Default::default()
    };
    let (mut test_kmers, mut shared) = (0, 0);
    for (label, sp) in species.iter().enumerate() {
        let s = import_species(cfg, label, sp, &mut rows, &mut windows)?;
        for split in Split::ALL {
            summary.rows.add(split, s.rows.get(split));
            summary.tokens.add(split, s.tokens.get(split));
        }
        test_kmers += s.leakage.test_kmers;
        shared += s.leakage.shared_with_train;
        tracing::info!(
            species = %s.name,
            windows = s.windows_cut,
            kept = s.rows.total(),
            leakage = s.leakage.fraction,
            "species imported"
        );
        summary.species.push(s);
    }
    summary.leakage = Leakage::new(cfg.leakage_kmer_scale, test_kmers, shared);
    // Species and neighbouring windows would otherwise come in long runs.
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x054F_F1E0));
    Ok(Imported {
        rows,
        windows,
        summary,
    })
}

/// Writes `rows` as `part-NNNNN.parquet` files under `out`, as `gen-data`
/// does, and removes stale `part-NNNNN.parquet` files of an earlier, larger
/// import there.
fn write_rows(cfg: &GenomesConfig, rows: &[Row], out: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let files = write_parts(out, rows, cfg.rows_per_file, cfg.row_group_rows)?;
    remove_stale_parts(out, files.len())?;
    Ok(files)
}

/// Writes an [`Imported`] dataset under `out` and returns its summary with
/// the files.
pub fn write(
    cfg: &GenomesConfig,
    imported: &Imported,
    out: &Path,
) -> Result<GenomesSummary, DatasetError> {
    let mut summary = imported.summary.clone();
    summary.files = write_rows(cfg, &imported.rows, out)?;
    Ok(summary)
}

/// Imports every species under `source` into Parquet files under `out`
/// (the raw-input contract, as `gen-data` writes it).
pub fn import(
    cfg: &GenomesConfig,
    source: &Path,
    out: &Path,
) -> Result<GenomesSummary, DatasetError> {
    write(cfg, &build(cfg, source)?, out)
}

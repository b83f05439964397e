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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::split::Split;
use crate::synth::{SynthRow, schema, to_record_batch};

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
    fn check(&self) -> Result<(), GenomesError> {
        let bad = |m: &str| Err(GenomesError::Config(m.to_owned()));
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

/// Errors of the importer.
#[derive(Debug, thiserror::Error)]
pub enum GenomesError {
    /// A config value is out of range.
    #[error("invalid import-genomes config: {0}")]
    Config(String),
    /// Neither the source nor any `examples` directory below it holds
    /// species directories with FASTA files.
    #[error(
        "{0}: no species directories with references/*.fasta[.gz] here or in an `examples` directory below"
    )]
    NoSpecies(PathBuf),
    /// A FASTA file breaks the format.
    #[error("{path}: line {line}: {reason}")]
    Fasta {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenomesError + '_ {
    move |source| GenomesError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    pub rows: Vec<SynthRow>,
    /// Every window cut, kept or not, in input order.
    pub windows: Vec<WindowInfo>,
    /// The summary (without files).
    pub summary: GenomesSummary,
}

/// Maps a base to its value: A, C, G, T (either case) → 1, 2, 3, 4;
/// anything else → 0.
pub fn base_value(b: u8) -> u8 {
    match b {
        b'A' | b'a' => 1,
        b'C' | b'c' => 2,
        b'G' | b'g' => 3,
        b'T' | b't' => 4,
        _ => 0,
    }
}

/// Calls `f` with the canonical form of every k-mer ([`K`] bases) of
/// `values` that holds no value outside 1..=4: the smaller of the k-mer and
/// its reverse complement, two bits per base (A=0, C=1, G=2, T=3), first
/// base most significant.
pub fn for_each_canonical_kmer(values: &[u8], mut f: impl FnMut(u64)) {
    const MASK: u64 = (1 << (2 * K)) - 1;
    const TOP: u32 = 2 * (K as u32 - 1);
    let (mut fwd, mut rev, mut run) = (0u64, 0u64, 0usize);
    for &v in values {
        if !(1..=4).contains(&v) {
            run = 0;
            continue;
        }
        let c = u64::from(v - 1);
        fwd = ((fwd << 2) | c) & MASK;
        rev = (rev >> 2) | ((3 - c) << TOP);
        run += 1;
        if run >= K {
            f(fwd.min(rev));
        }
    }
}

/// The distinct canonical k-mers of `values`, sorted.
fn unique_kmers(values: &[u8]) -> Vec<u64> {
    let mut v = Vec::with_capacity(values.len());
    for_each_canonical_kmer(values, |k| v.push(k));
    v.sort_unstable();
    v.dedup();
    v
}

/// splitmix64's finaliser: k-mers are structured, hash tables want noise.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A cheap hasher for `u64` keys (SipHash is several times slower here and
/// the keys are not attacker-chosen).
#[derive(Default)]
struct KmerHasher(u64);

impl Hasher for KmerHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }
}

type KmerBuild = BuildHasherDefault<KmerHasher>;

/// The split of the reference windows a k-mer occurs in; ambiguous when in
/// two splits.
const AMBIGUOUS: u8 = u8::MAX;

/// FNV-1a of a string, to derive per-record seeds that do not depend on
/// what else is in the input.
fn fnv1a(s: &str) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

// ---------------------------------------------------------------- input

/// One species directory: its name and FASTA files, sorted.
#[derive(Clone, Debug, PartialEq)]
struct SpeciesFiles {
    name: String,
    files: Vec<PathBuf>,
}

/// The strain name of a FASTA file: its name without `.gz` and the FASTA
/// ending; `None` if it is not a FASTA file.
fn strain_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let (stem, ext) = name.rsplit_once('.')?;
    (FASTA_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) && !stem.is_empty())
        .then(|| stem.to_owned())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, GenomesError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort();
    Ok(entries)
}

/// The species directories directly under `root` (those with FASTA files
/// in `references/`), sorted by name.
fn species_under(root: &Path) -> Result<Vec<SpeciesFiles>, GenomesError> {
    let mut out = Vec::new();
    for dir in sorted_entries(root)? {
        let refs = dir.join("references");
        if !refs.is_dir() {
            continue;
        }
        let files: Vec<PathBuf> = sorted_entries(&refs)?
            .into_iter()
            .filter(|p| p.is_file() && strain_name(p).is_some())
            .collect();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !files.is_empty() {
            out.push(SpeciesFiles {
                name: name.to_owned(),
                files,
            });
        }
    }
    Ok(out)
}

/// The directory whose subdirectories are the species: `source` itself if
/// it is one, else the first directory named `examples` below it that is
/// one (breadth first, sorted, not following links; e.g. the root a
/// `ragout-examples` package was unpacked into).
pub fn resolve_source(source: &Path) -> Result<PathBuf, GenomesError> {
    const MAX_DEPTH: usize = 10;
    if !species_under(source)?.is_empty() {
        return Ok(source.to_path_buf());
    }
    let mut level = vec![source.to_path_buf()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            for e in sorted_entries(dir)? {
                let is_dir = std::fs::symlink_metadata(&e).is_ok_and(|m| m.is_dir());
                if !is_dir {
                    continue;
                }
                if e.file_name().is_some_and(|n| n == "examples") && !species_under(&e)?.is_empty()
                {
                    return Ok(e);
                }
                next.push(e);
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Err(GenomesError::NoSpecies(source.to_path_buf()))
}

/// One FASTA record, bases already mapped to values.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    name: String,
    values: Vec<u8>,
}

/// Reads a FASTA file (gzip when it ends in `.gz`, members concatenated).
fn read_fasta(path: &Path) -> Result<Vec<Record>, GenomesError> {
    let file = File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_fasta(BufReader::with_capacity(1 << 16, reader), path)
}

fn parse_fasta(mut reader: impl BufRead, path: &Path) -> Result<Vec<Record>, GenomesError> {
    let mut records: Vec<Record> = Vec::new();
    let mut names = HashSet::new();
    let mut line = Vec::new();
    let mut n = 0;
    let fasta_err = |line: usize, reason: String| GenomesError::Fasta {
        path: path.to_path_buf(),
        line,
        reason,
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io_err(path))? == 0 {
            break;
        }
        n += 1;
        if let Some(header) = line.strip_prefix(b">") {
            let header = String::from_utf8_lossy(header);
            let name = header.split_whitespace().next().unwrap_or("").to_owned();
            if name.is_empty() {
                return Err(fasta_err(n, "header without a name".into()));
            }
            if !names.insert(name.clone()) {
                return Err(fasta_err(n, format!("record `{name}` appears twice")));
            }
            records.push(Record {
                name,
                values: Vec::new(),
            });
        } else if line.first() == Some(&b';') {
            continue;
        } else {
            let bases = line.iter().filter(|b| !b.is_ascii_whitespace());
            match records.last_mut() {
                Some(r) => r.values.extend(bases.map(|&b| base_value(b))),
                None if bases.clone().next().is_none() => {}
                None => return Err(fasta_err(n, "sequence before the first header".into())),
            }
        }
    }
    if records.is_empty() {
        return Err(fasta_err(n, "no records".into()));
    }
    Ok(records)
}

// ------------------------------------------------------------- windows

/// Cuts `len` into non-overlapping windows `(start, len)` with log-uniform
/// lengths; the trailing piece is a window if at least `min_len` long.
fn cut_windows(len: usize, cfg: &GenomesConfig, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
    let (lo, hi) = ((cfg.min_len as f64).ln(), ((cfg.max_len + 1) as f64).ln());
    let mut out = Vec::new();
    let mut start = 0;
    while len - start >= cfg.min_len {
        let want = if lo < hi {
            (rng.random_range(lo..hi).exp() as usize).clamp(cfg.min_len, cfg.max_len)
        } else {
            cfg.min_len
        };
        let w = want.min(len - start);
        out.push((start, w));
        start += w;
    }
    out
}

/// The region of the reference a window starting at `start` of a record
/// of length `len` belongs to.
fn reference_region(start: usize, len: usize, fractions: [f64; 3]) -> Split {
    let x = start as f64 / len as f64;
    if x < fractions[0] {
        Split::Train
    } else if x < fractions[0] + fractions[1] {
        Split::Valid
    } else {
        Split::Test
    }
}

/// The split with most hits; ties and no hits → `None`.
fn winner(hits: [u64; 3]) -> Option<Split> {
    let best = *hits.iter().max().expect("three");
    if best == 0 || hits.iter().filter(|&&h| h == best).count() > 1 {
        return None;
    }
    Split::ALL.into_iter().find(|s| hits[*s as usize] == best)
}

/// How many of each split to keep so that `cap` windows keep the
/// proportions of `counts` (largest remainder; every non-empty split keeps
/// at least one when the cap allows).
fn quotas(counts: [usize; 3], cap: usize) -> [usize; 3] {
    let total: usize = counts.iter().sum();
    if total <= cap {
        return counts;
    }
    let exact: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 * cap as f64 / total as f64)
        .collect();
    let mut q = [0usize; 3];
    for i in 0..3 {
        q[i] = exact[i].floor() as usize;
    }
    let mut order = [0, 1, 2];
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - q[a] as f64, exact[b] - q[b] as f64);
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = cap - q.iter().sum::<usize>();
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if q[i] < counts[i] {
            q[i] += 1;
            left -= 1;
        }
    }
    for i in 0..3 {
        if counts[i] > 0 && q[i] == 0 {
            let donor = (0..3)
                .max_by_key(|&j| (q[j], usize::MAX - j))
                .expect("three");
            if q[donor] > 1 {
                q[donor] -= 1;
                q[i] = 1;
            }
        }
    }
    q
}

/// The distinct k-mers of `windows` that the leakage sample keeps.
fn sampled_kmers<'a>(
    windows: impl Iterator<Item = &'a [u8]>,
    scale: u64,
) -> HashSet<u64, KmerBuild> {
    let mut set = HashSet::default();
    for w in windows {
        for_each_canonical_kmer(w, |k| {
            if scale == 1 || mix64(k ^ 0x1EA4_A6E5).is_multiple_of(scale) {
                set.insert(k);
            }
        });
    }
    set
}

/// Test → train leakage: the share of the distinct canonical k-mers of
/// `test` (those kept by the FracMinHash sample `scale`; 1 keeps all) that
/// also occur in `train`.
pub fn measure_leakage<'a>(
    train: impl Iterator<Item = &'a [u8]>,
    test: impl Iterator<Item = &'a [u8]>,
    scale: u64,
) -> Leakage {
    let scale = scale.max(1);
    let test = sampled_kmers(test, scale);
    let train = sampled_kmers(train, scale);
    let shared = test.iter().filter(|k| train.contains(k)).count() as u64;
    Leakage::new(scale, test.len() as u64, shared)
}

/// One species, cut and split: its windows, and the records they point into.
fn import_species(
    cfg: &GenomesConfig,
    label: usize,
    sp: &SpeciesFiles,
    rows: &mut Vec<SynthRow>,
    windows_out: &mut Vec<WindowInfo>,
) -> Result<SpeciesSummary, GenomesError> {
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
        rows.push(SynthRow {
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
pub fn build(cfg: &GenomesConfig, source: &Path) -> Result<Imported, GenomesError> {
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
fn write_rows(
    cfg: &GenomesConfig,
    rows: &[SynthRow],
    out: &Path,
) -> Result<Vec<PathBuf>, GenomesError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_compression(Compression::SNAPPY)
        .build();
    let mut files = Vec::new();
    for chunk in rows.chunks(cfg.rows_per_file) {
        let path = out.join(format!("part-{:05}.parquet", files.len()));
        let file = File::create(&path).map_err(io_err(&path))?;
        let pq = |e| GenomesError::Parquet {
            path: path.clone(),
            source: e,
        };
        let mut writer = ArrowWriter::try_new(file, schema(), Some(props.clone())).map_err(pq)?;
        for group in chunk.chunks(cfg.row_group_rows) {
            writer.write(&to_record_batch(group)).map_err(pq)?;
            writer.flush().map_err(pq)?;
        }
        writer.close().map_err(pq)?;
        files.push(path);
    }
    for e in sorted_entries(out)? {
        let stale = e
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("part-")?.strip_suffix(".parquet"))
            .and_then(|n| (n.len() == 5).then(|| n.parse::<usize>().ok())?)
            .is_some_and(|i| i >= files.len());
        if stale {
            std::fs::remove_file(&e).map_err(io_err(&e))?;
        }
    }
    Ok(files)
}

/// Writes an [`Imported`] dataset under `out` and returns its summary with
/// the files.
pub fn write(
    cfg: &GenomesConfig,
    imported: &Imported,
    out: &Path,
) -> Result<GenomesSummary, GenomesError> {
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
) -> Result<GenomesSummary, GenomesError> {
    write(cfg, &build(cfg, source)?, out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::report::validate_file;
    use crate::validate::{IdRegistry, ValidationConfig};

    const BASES: &[u8; 5] = b"NACGT";

    fn comp(v: u8) -> u8 {
        if (1..=4).contains(&v) { 5 - v } else { 0 }
    }

    /// A strain: the reference rotated left by `num/den` of each record's
    /// length, reverse-complemented if `rc`, with point mutations.
    struct Strain {
        name: &'static str,
        num: usize,
        den: usize,
        rc: bool,
    }

    const STRAINS: [Strain; 2] = [
        Strain {
            name: "b_rotated_rc",
            num: 1,
            den: 2,
            rc: true,
        },
        Strain {
            name: "c_rotated",
            num: 1,
            den: 3,
            rc: false,
        },
    ];
    const SPECIES: [&str; 3] = ["Alpha", "Beta", "Gamma"];
    const RECORDS: [(&str, usize); 2] = [("chr", 100_000), ("plasmid", 20_000)];

    fn small_cfg() -> GenomesConfig {
        GenomesConfig {
            min_len: 100,
            max_len: 1_000,
            rows_per_file: 500,
            ..Default::default()
        }
    }

    /// Position in the reference record of position `j` of a strain record.
    fn ref_pos(s: &Strain, len: usize, j: usize) -> usize {
        let r = len * s.num / s.den;
        let i = if s.rc { len - 1 - j } else { j };
        (i + r) % len
    }

    fn fasta(records: &[(&str, Vec<u8>)], lower: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, values) in records {
            writeln!(out, ">{name} a test record").unwrap();
            for line in values.chunks(70) {
                let bases: Vec<u8> = line
                    .iter()
                    .map(|&v| {
                        let b = BASES[v as usize];
                        if lower { b.to_ascii_lowercase() } else { b }
                    })
                    .collect();
                out.extend_from_slice(&bases);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    /// Writes three species (gzip, plain `.fasta`, `.fa`) of a reference
    /// and two strains each, plus a directory that is no species.
    fn write_dataset(root: &Path) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/README"), "not a species").unwrap();
        for (si, species) in SPECIES.iter().enumerate() {
            let refs = root.join(species).join("references");
            std::fs::create_dir_all(&refs).unwrap();
            let reference: Vec<(&str, Vec<u8>)> = RECORDS
                .iter()
                .map(|&(name, len)| {
                    let mut v: Vec<u8> = (0..len).map(|_| rng.random_range(1..=4u8)).collect();
                    v[5_000..5_040].fill(0);
                    (name, v)
                })
                .collect();
            let ext = ["fasta.gz", "fasta", "fa"][si];
            let write = |name: &str, records: &[(&str, Vec<u8>)], lower: bool| {
                let bytes = fasta(records, lower);
                let path = refs.join(format!("{name}.{ext}"));
                if ext.ends_with(".gz") {
                    let mut gz = flate2::write::GzEncoder::new(
                        File::create(path).unwrap(),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(&bytes).unwrap();
                    gz.finish().unwrap();
                } else {
                    std::fs::write(path, bytes).unwrap();
                }
            };
            write("a_reference", &reference, false);
            for (k, s) in STRAINS.iter().enumerate() {
                let records: Vec<(&str, Vec<u8>)> = reference
                    .iter()
                    .map(|(name, r)| {
                        let v = (0..r.len())
                            .map(|j| {
                                let b = r[ref_pos(s, r.len(), j)];
                                let b = if s.rc { comp(b) } else { b };
                                if b != 0 && rng.random::<f64>() < 0.005 {
                                    rng.random_range(1..=4)
                                } else {
                                    b
                                }
                            })
                            .collect();
                        (*name, v)
                    })
                    .collect();
                write(s.name, &records, k == 1);
            }
        }
    }

    fn dataset() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path());
        dir
    }

    #[test]
    fn bases_map_to_values_case_insensitively() {
        let v: Vec<u8> = b"ACGTacgtNn-RY*".iter().map(|&b| base_value(b)).collect();
        assert_eq!(v, [1, 2, 3, 4, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0]);
        let nonzero = (0..=255u8).filter(|&b| base_value(b) != 0).count();
        assert_eq!(nonzero, 8);
    }

    #[test]
    fn canonical_kmers_match_a_naive_reading() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v: Vec<u8> = (0..500).map(|_| rng.random_range(1..=4u8)).collect();
        v[200] = 0;
        v[207] = 0;
        let pack = |s: &[u8]| s.iter().fold(0u64, |a, &x| (a << 2) | u64::from(x - 1));
        let mut naive = Vec::new();
        for w in v.windows(K) {
            if w.iter().all(|x| (1..=4).contains(x)) {
                let rc: Vec<u8> = w.iter().rev().map(|&x| comp(x)).collect();
                naive.push(pack(w).min(pack(&rc)));
            }
        }
        let mut got = Vec::new();
        for_each_canonical_kmer(&v, |k| got.push(k));
        assert_eq!(got, naive);
        assert_eq!(got.len(), (200 - K + 1) + (500 - 208 - K + 1));
        // A sequence and its reverse complement have the same k-mers.
        let rc: Vec<u8> = v.iter().rev().map(|&x| comp(x)).collect();
        assert_eq!(unique_kmers(&v), unique_kmers(&rc));
    }

    #[test]
    fn fasta_reads_records_and_rejects_bad_files() {
        let text = b"; comment\n>one first\nACGT\r\nac\n\n>two\nNNgt\n";
        let recs = parse_fasta(&text[..], Path::new("x.fa")).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].name.as_str(), &recs[0].values[..]),
            ("one", &[1, 2, 3, 4, 1, 2][..])
        );
        assert_eq!(
            (recs[1].name.as_str(), &recs[1].values[..]),
            ("two", &[0, 0, 3, 4][..])
        );
        for bad in [&b"ACGT\n>a\nA\n"[..], b">a\nA\n>a\nC\n", b"", b">\nA\n"] {
            assert!(matches!(
                parse_fasta(bad, Path::new("x.fa")),
                Err(GenomesError::Fasta { .. })
            ));
        }
        assert_eq!(
            strain_name(Path::new("r/DH1.fasta.gz")).as_deref(),
            Some("DH1")
        );
        assert_eq!(strain_name(Path::new("r/x.y.FA")).as_deref(), Some("x.y"));
        assert_eq!(strain_name(Path::new("r/notes.txt")), None);
    }

    #[test]
    fn windows_tile_records_within_bounds() {
        let cfg = small_cfg();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut lens = Vec::new();
        for len in [0, 99, 100, 1_000, 54_321] {
            let w = cut_windows(len, &cfg, &mut rng);
            let mut next = 0;
            for &(start, l) in &w {
                assert_eq!(start, next);
                assert!((cfg.min_len..=cfg.max_len).contains(&l), "{l}");
                next = start + l;
                lens.push(l);
            }
            assert!(len - next < cfg.min_len, "tail {} of {len}", len - next);
        }
        // Log-uniform: about as many windows below the geometric mean as above.
        let mid = ((cfg.min_len * cfg.max_len) as f64).sqrt() as usize;
        let below = lens.iter().filter(|&&l| l < mid).count() as f64 / lens.len() as f64;
        assert!((0.4..0.6).contains(&below), "{below}");
    }

    #[test]
    fn quotas_keep_proportions() {
        assert_eq!(quotas([70, 10, 20], 10), [7, 1, 2]);
        assert_eq!(quotas([5, 0, 1], 100), [5, 0, 1]);
        assert_eq!(quotas([98, 1, 1], 10), [8, 1, 1]);
        assert_eq!(quotas([7, 1, 2], 3), [1, 1, 1]);
        assert_eq!(quotas([69, 11, 20], 50).iter().sum::<usize>(), 50);
    }

    #[test]
    fn leakage_counts_shared_kmers() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let a: Vec<u8> = (0..5_000).map(|_| rng.random_range(1..=4u8)).collect();
        let b: Vec<u8> = (0..5_000).map(|_| rng.random_range(1..=4u8)).collect();
        let rc: Vec<u8> = a[1_000..2_000].iter().rev().map(|&x| comp(x)).collect();
        let full = measure_leakage([&a[..]].into_iter(), [&rc[..]].into_iter(), 1);
        assert_eq!(
            (full.test_kmers, full.fraction),
            (1_000 - K as u64 + 1, 1.0)
        );
        let none = measure_leakage([&a[..]].into_iter(), [&b[..]].into_iter(), 1);
        assert_eq!(none.shared_with_train, 0);
        let half: Vec<u8> = [&a[..2_500], &b[..2_500]].concat();
        let l = measure_leakage([&a[..]].into_iter(), [&half[..]].into_iter(), 4);
        assert!((0.4..0.6).contains(&l.fraction), "{l:?}");
        assert!(l.test_kmers < 2_000, "sampled: {l:?}");
    }

    #[test]
    fn source_is_found_below_an_unpacked_package() {
        let dir = tempfile::tempdir().unwrap();
        let examples = dir.path().join("usr/share/doc/ragout/examples");
        write_dataset(&examples);
        assert_eq!(resolve_source(dir.path()).unwrap(), examples);
        assert_eq!(resolve_source(&examples).unwrap(), examples);
        let names: Vec<String> = species_under(&examples)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, SPECIES);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve_source(empty.path()),
            Err(GenomesError::NoSpecies(_))
        ));
    }

    #[test]
    fn import_is_deterministic_and_follows_the_contract() {
        let data = dataset();
        let out = tempfile::tempdir().unwrap();
        let cfg = small_cfg();
        let bytes = |dir: &Path, cfg: &GenomesConfig| {
            let s = import(cfg, data.path(), dir).unwrap();
            let b: Vec<Vec<u8>> = s.files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            (s, b)
        };
        let (s1, b1) = bytes(&out.path().join("a"), &cfg);
        let (s2, b2) = bytes(&out.path().join("b"), &cfg);
        assert!(b1.len() > 1);
        assert_eq!(b1, b2);
        assert_eq!(s1.species, s2.species);
        let (_, other) = bytes(
            &out.path().join("c"),
            &GenomesConfig {
                seed: 1,
                ..cfg.clone()
            },
        );
        assert_ne!(b1, other);

        // Every row passes the raw-input rules.
        let vcfg = ValidationConfig {
            min_len: cfg.min_len,
            max_len: cfg.max_len,
        };
        let mut ids = IdRegistry::default();
        let (mut rows, mut tokens) = (0, 0);
        for f in &s1.files {
            let r = validate_file(f, vcfg, &mut ids, None, 1);
            assert!(r.readable && r.rejected_total() == 0, "{r:?}");
            rows += r.valid;
            tokens += r.valid_tokens;
        }
        assert_eq!(rows, s1.rows.total());
        assert_eq!(tokens, s1.tokens.total());
        assert_eq!(
            tokens,
            s1.species.iter().map(|s| s.tokens.total()).sum::<u64>()
        );

        // Values come straight from the FASTA (a reference window of the
        // plain-text species, whose second strain is written in lower case).
        let imported = build(&cfg, data.path()).unwrap();
        let text = std::fs::read(data.path().join("Beta/references/a_reference.fasta")).unwrap();
        let recs = parse_fasta(&text[..], Path::new("a_reference.fasta")).unwrap();
        let row = imported
            .rows
            .iter()
            .find(|r| r.id.starts_with("Beta/a_reference/chr/"))
            .unwrap();
        let start: usize = row.id.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(row.values, recs[0].values[start..start + row.values.len()]);
        assert_eq!(row.class, 1);
        let (zeros, total) = imported
            .rows
            .iter()
            .filter(|r| r.id.starts_with("Beta/c_rotated/"))
            .fold((0, 0), |(z, t), r| {
                (
                    z + r.values.iter().filter(|&&v| v == 0).count(),
                    t + r.values.len(),
                )
            });
        assert!(total > 0 && zeros * 100 < total, "{zeros} of {total}");
        // The N run became zeros.
        assert!(
            imported
                .rows
                .iter()
                .any(|r| r.values.windows(40).any(|w| w.iter().all(|&v| v == 0)))
        );
    }

    #[test]
    fn strain_windows_follow_their_reference_region_and_do_not_leak() {
        let data = dataset();
        let cfg = small_cfg();
        let imported = build(&cfg, data.path()).unwrap();
        let s = &imported.summary;
        assert_eq!(s.species.len(), 3);
        for sp in &s.species {
            for split in Split::ALL {
                assert!(sp.rows.get(split) > 0, "{} has no {split}", sp.name);
            }
            assert_eq!(sp.reference, "a_reference");
            assert!(sp.leakage.fraction < 0.05, "{}: {:?}", sp.name, sp.leakage);
            assert!(sp.strain_windows_by_hits > 10 * sp.strain_windows_fallback.max(1));
        }
        assert!(s.leakage.fraction < 0.05, "{:?}", s.leakage);
        // Test gets about 20% of the tokens, valid 10%.
        let t = s.tokens.total() as f64;
        assert!(
            (0.15..0.25).contains(&(s.tokens.test as f64 / t)),
            "{:?}",
            s.tokens
        );
        assert!(
            (0.06..0.14).contains(&(s.tokens.valid as f64 / t)),
            "{:?}",
            s.tokens
        );

        // The split of each reference position.
        let mut region: HashMap<(usize, &str), Vec<Option<Split>>> = HashMap::new();
        for &(name, len) in &RECORDS {
            for sp in 0..SPECIES.len() {
                region.insert((sp, name), vec![None; len]);
            }
        }
        for w in imported.windows.iter().filter(|w| w.reference) {
            let r = region.get_mut(&(w.species, w.record.as_str())).unwrap();
            r[w.start..w.start + w.len].fill(Some(w.split));
        }
        let (mut inside, mut strain_windows) = (0, 0);
        let mut naive_train: Vec<Vec<Vec<u8>>> = vec![Vec::new(); SPECIES.len()];
        let mut naive_test = naive_train.clone();
        let rows: HashMap<String, &SynthRow> =
            imported.rows.iter().map(|r| (r.id.clone(), r)).collect();
        for w in &imported.windows {
            let len = RECORDS.iter().find(|r| r.0 == w.record).unwrap().1;
            let id = format!(
                "{}/{}/{}/{}",
                SPECIES[w.species], w.strain, w.record, w.start
            );
            let values = rows[&id].values.clone();
            match reference_region(w.start, len, cfg.reference_fractions) {
                Split::Train => naive_train[w.species].push(values),
                Split::Test => naive_test[w.species].push(values),
                Split::Valid => {}
            }
            if w.reference {
                continue;
            }
            strain_windows += 1;
            let strain = STRAINS.iter().find(|s| s.name == w.strain).unwrap();
            let r = &region[&(w.species, w.record.as_str())];
            let first = r[ref_pos(strain, len, w.start)];
            let uniform = (w.start..w.start + w.len).all(|j| r[ref_pos(strain, len, j)] == first);
            if let (true, Some(expected)) = (uniform, first) {
                inside += 1;
                assert_eq!(w.split, expected, "{w:?}");
            }
        }
        assert!(
            inside as f64 > 0.8 * strain_windows as f64,
            "{inside} of {strain_windows}"
        );

        // The control: a split by each record's own positions leaks.
        for sp in 0..SPECIES.len() {
            let naive = measure_leakage(
                naive_train[sp].iter().map(Vec::as_slice),
                naive_test[sp].iter().map(Vec::as_slice),
                1,
            );
            assert!(
                naive.fraction > 0.3,
                "naive split of {}: {naive:?}",
                SPECIES[sp]
            );
        }
    }

    #[test]
    fn the_cap_keeps_split_proportions() {
        let data = dataset();
        let full = build(&small_cfg(), data.path()).unwrap();
        let cap = 40;
        let capped = build(
            &GenomesConfig {
                max_windows_per_species: Some(cap),
                ..small_cfg()
            },
            data.path(),
        )
        .unwrap();
        for (f, c) in full.summary.species.iter().zip(&capped.summary.species) {
            assert!(f.rows.total() > cap as u64);
            assert_eq!(c.rows.total(), cap as u64);
            let counts = Split::ALL.map(|s| f.rows.get(s) as usize);
            let q = quotas(counts, cap);
            assert_eq!(Split::ALL.map(|s| c.rows.get(s) as usize), q);
            assert!(q.iter().all(|&n| n > 0));
        }
        // The kept rows are rows of the full import, with the same split.
        let full_rows: HashMap<&str, &SynthRow> =
            full.rows.iter().map(|r| (r.id.as_str(), r)).collect();
        for r in &capped.rows {
            assert_eq!(full_rows[r.id.as_str()], r);
        }
        assert_eq!(capped.rows.len(), 3 * cap);
        assert_eq!(capped.windows.iter().filter(|w| w.kept).count(), 3 * cap);
    }

    #[test]
    fn bad_configs_are_refused() {
        let data = dataset();
        for cfg in [
            GenomesConfig {
                min_len: 10,
                max_len: 5,
                ..small_cfg()
            },
            GenomesConfig {
                max_windows_per_species: Some(0),
                ..small_cfg()
            },
            GenomesConfig {
                reference_fractions: [0.7, 0.2, 0.2],
                ..small_cfg()
            },
        ] {
            assert!(matches!(
                build(&cfg, data.path()),
                Err(GenomesError::Config(_))
            ));
        }
    }
}

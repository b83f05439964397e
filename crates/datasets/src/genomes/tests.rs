//! Tests of the genome importer on small hand-made FASTA inputs.

use std::fs::File;
use std::io::Write;

use rand::Rng;

use super::fasta::parse_fasta;
use super::*;
use pretext_core::report::validate_file;
use pretext_core::validate::{IdRegistry, ValidationConfig};

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
            Err(DatasetError::Fasta { .. })
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
        Err(DatasetError::NoSpecies(_))
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
    let rows: HashMap<String, &Row> = imported.rows.iter().map(|r| (r.id.clone(), r)).collect();
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
    let full_rows: HashMap<&str, &Row> = full.rows.iter().map(|r| (r.id.as_str(), r)).collect();
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
            Err(DatasetError::Config { .. })
        ));
    }
}

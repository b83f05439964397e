//! The genomes importer on the real data (Debian `ragout-examples`, fetched
//! by `ops/get-genomes.sh`): figures for the README, and the checks that
//! the split keeps strains out of test. Ignored by default; run with
//!
//! ```text
//! PRETEXT_GENOMES_DIR=$(ops/get-genomes.sh) \
//!   cargo test -p pretext-core --test genomes_real -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use pretext_core::report::validate_file;
use pretext_core::split::Split;
use pretext_core::validate::{IdRegistry, ValidationConfig};
use pretext_datasets::genomes::{GenomesConfig, Imported, build, measure_leakage, write};

fn source() -> PathBuf {
    let dir = std::env::var_os("PRETEXT_GENOMES_DIR")
        .expect("set PRETEXT_GENOMES_DIR to the examples directory ops/get-genomes.sh prints");
    PathBuf::from(dir)
}

/// Imports, writes, validates and prints the figures; returns the import.
fn run(cfg: &GenomesConfig) -> Imported {
    let t = Instant::now();
    let imported = build(cfg, &source()).expect("import");
    let built = t.elapsed().as_secs_f64();
    let out = tempfile::tempdir().unwrap();
    let summary = write(cfg, &imported, out.path()).expect("write");
    let total = t.elapsed().as_secs_f64();

    let vcfg = ValidationConfig {
        min_len: cfg.min_len,
        max_len: cfg.max_len,
    };
    let mut ids = IdRegistry::default();
    let mut valid = 0;
    for f in &summary.files {
        let r = validate_file(f, vcfg, &mut ids, None, 1);
        assert!(r.readable && r.rejected_total() == 0, "{r:?}");
        valid += r.valid;
    }
    assert_eq!(valid, summary.rows.total());

    println!(
        "rows {} (train {}, valid {}, test {}); tokens {} (train {}, valid {}, test {}); \
         leakage {:.2}% ({} of {} test {}-mers); build {built:.1}s, build+write {total:.1}s",
        summary.rows.total(),
        summary.rows.train,
        summary.rows.valid,
        summary.rows.test,
        summary.tokens.total(),
        summary.tokens.train,
        summary.tokens.valid,
        summary.tokens.test,
        100.0 * summary.leakage.fraction,
        summary.leakage.shared_with_train,
        summary.leakage.test_kmers,
        summary.leakage.k,
    );
    for s in &summary.species {
        println!(
            "  {} (label {}, ref {}, {} strains, {} bp): rows train {} valid {} test {}; \
             tokens {}; strain windows by hits {} fallback {}; leakage {:.2}%",
            s.name,
            s.label,
            s.reference,
            s.strains.len(),
            s.bases,
            s.rows.train,
            s.rows.valid,
            s.rows.test,
            s.tokens.total(),
            s.strain_windows_by_hits,
            s.strain_windows_fallback,
            100.0 * s.leakage.fraction,
        );
        for split in Split::ALL {
            assert!(s.rows.get(split) > 0, "{} has no {split} rows", s.name);
        }
    }
    assert_eq!(summary.species.len(), 4);
    assert!(
        summary.leakage.fraction < 0.15,
        "leakage {:?}",
        summary.leakage
    );
    imported
}

#[test]
#[ignore = "needs the ragout-examples genomes (ops/get-genomes.sh) in PRETEXT_GENOMES_DIR"]
fn real_genomes_with_defaults() {
    let cfg = GenomesConfig::default();
    let imported = run(&cfg);
    let rows = imported.summary.rows.total();
    assert!((5_000..8_500).contains(&rows), "{rows} rows");

    // The control: splitting every record by its own positions (70/10/20
    // of its length, measured by its last window's end) leaks more (how
    // much more depends on how alike the strains are: H. pylori strains
    // differ a lot, E. coli and V. cholerae strains little).
    let t = Instant::now();
    let mut ends: BTreeMap<(usize, &str, &str), usize> = BTreeMap::new();
    for w in &imported.windows {
        let e = ends
            .entry((w.species, w.strain.as_str(), w.record.as_str()))
            .or_default();
        *e = (*e).max(w.start + w.len);
    }
    let by_id: BTreeMap<String, &[u8]> = imported
        .rows
        .iter()
        .map(|r| (r.id.clone(), r.values.as_slice()))
        .collect();
    for (sp, s) in imported.summary.species.iter().enumerate() {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for w in imported.windows.iter().filter(|w| w.species == sp) {
            let end = ends[&(w.species, w.strain.as_str(), w.record.as_str())];
            let x = w.start as f64 / end as f64;
            let values = by_id[&format!("{}/{}/{}/{}", s.name, w.strain, w.record, w.start)];
            if x < 0.7 {
                train.push(values);
            } else if x >= 0.8 {
                test.push(values);
            }
        }
        let naive = measure_leakage(train.into_iter(), test.into_iter(), 1);
        println!(
            "  control, {} split by own positions: leakage {:.2}% (ours {:.2}%)",
            s.name,
            100.0 * naive.fraction,
            100.0 * s.leakage.fraction
        );
        assert!(naive.fraction > s.leakage.fraction, "{naive:?}");
    }
    println!("  control took {:.1}s", t.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs the ragout-examples genomes (ops/get-genomes.sh) in PRETEXT_GENOMES_DIR"]
fn real_genomes_capped_for_a_small_experiment() {
    let cfg = GenomesConfig {
        max_len: 8_192,
        max_windows_per_species: Some(500),
        ..GenomesConfig::default()
    };
    let imported = run(&cfg);
    assert_eq!(imported.summary.rows.total(), 2_000);
}

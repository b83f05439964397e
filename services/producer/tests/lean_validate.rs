//! The lean validator binary: it links no libtorch and gives the report of
//! `pretext validate`, exiting 2 on an unreadable file.

mod support;

use std::process::Command;

use pretext_datasets::synth::{SynthConfig, generate};

#[test]
fn it_needs_no_libtorch() {
    support::assert_links_no_libtorch(env!("CARGO_BIN_EXE_pretext-validate"));
}

#[test]
fn it_reports_rows_and_exits_2_on_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = SynthConfig {
        sequences: 30,
        min_len: 512,
        max_len: 2000,
        rows_per_file: 30,
        row_group_rows: 8,
        ..Default::default()
    };
    let summary = generate(&cfg, &data).unwrap();
    // Rows shorter than 1,000 steps are rejected by the limit given.
    let out = Command::new(env!("CARGO_BIN_EXE_pretext-validate"))
        .args(["--json", "--min-len", "1000"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["rows"], 30);
    assert_eq!(doc["unreadable"], 0);
    let rejected = doc["rejected"].as_u64().unwrap();
    assert!(rejected > 0 && rejected < 30, "{doc}");
    assert_eq!(doc["valid"].as_u64().unwrap() + rejected, 30);
    assert_eq!(
        doc["files"][0]["rejected"]["length_out_of_range"].as_u64(),
        Some(rejected),
        "{doc}"
    );
    assert!(doc["valid_tokens"].as_u64().unwrap() < summary.tokens);

    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"not parquet").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pretext-validate"))
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.parquet") && err.contains("not a readable Parquet file"),
        "{err}"
    );
}

/// Files fuzz runs found, each refused before the parquet crate sized a
/// buffer from its page header: the `id` column's dictionary page declares
/// about 700 million values in a few bytes, for which the crate's Arrow
/// reader reserved 5.68 GB; and a page header
/// declares 1.1 GB uncompressed, which the crate reserved to decompress
/// into; and a footer's schema element declares children enough for a
/// 13.8 GB reservation. Under a 1 GiB address-space limit each aborted the
/// process; now each exits 2 naming what is wrong.
#[test]
fn headers_that_ask_for_gigabytes_are_refused_within_1_gib() {
    let findings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/findings");
    for (name, reason) in [
        (
            "parquet-dictionary-num-values.parquet",
            "dictionary page declares",
        ),
        (
            "parquet-page-uncompressed-size.parquet",
            "bytes uncompressed, over the",
        ),
        ("parquet-footer-num-children.parquet", "children of"),
    ] {
        let file = findings.join(name);
        assert!(file.exists(), "{}", file.display());
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -v 1048576 && exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_pretext-validate"))
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(reason),
            "{name}: the reason is the header: {err}"
        );
    }
}

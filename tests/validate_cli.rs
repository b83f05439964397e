//! `pretext validate` and `pretext gen-data` as a user runs them: the
//! committed fixtures (tests/fixtures/make_fixtures.py) through the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn pretext(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .expect("pretext runs")
}

fn validate_json(paths: &[PathBuf], extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["validate", "--json"];
    args.extend_from_slice(extra);
    let ps: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(ps.iter().map(String::as_str));
    let out = pretext(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

#[test]
fn good_files_of_every_accepted_layout_validate_clean() {
    for (name, rows) in [
        ("good_list_int8.parquet", 6),
        ("good_large_list_uint16.parquet", 5),
        ("good_list_int64_nolabel.parquet", 2),
    ] {
        let (out, json) = validate_json(&[fixture(name)], &[]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = &json["files"][0];
        assert_eq!(f["readable"], true, "{name}");
        assert_eq!(f["rows"], rows, "{name}");
        assert_eq!(f["valid"], rows, "{name}");
        assert_eq!(f["rejected"].as_object().unwrap().len(), 0, "{name}: {f}");
    }
}

#[test]
fn every_rule_rejects_its_row_with_its_reason_and_quarantines_it() {
    let q = tempfile::tempdir().unwrap();
    let qdir = q.path().to_str().unwrap();
    let (out, json) = validate_json(&[fixture("bad_rows.parquet")], &["--quarantine", qdir]);
    assert!(
        out.status.success(),
        "rejected rows are a report, not a failure"
    );
    let f = &json["files"][0];
    assert_eq!(f["rows"], 12);
    assert_eq!(f["valid"], 2);
    let expected = serde_json::json!({
        "value_out_of_range": 2, "length_out_of_range": 2, "null_values": 1,
        "empty_values": 1, "null_element": 1, "duplicate_id": 1, "null_id": 1,
        "invalid_split": 1,
    });
    assert_eq!(f["rejected"], expected);

    // The quarantine holds exactly the rejected rows, whole, with reasons.
    let files: Vec<_> = std::fs::read_dir(q.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&files[0]).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut got = Vec::new();
    for b in reader {
        let b = b.unwrap();
        assert!(
            b.schema().index_of("values").is_ok(),
            "original columns kept"
        );
        let rows = b
            .column_by_name("source_row")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let reasons = b
            .column_by_name("reason")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            got.push((rows.value(i), reasons.value(i).to_owned()));
        }
    }
    let want: Vec<(u64, String)> = [
        (1, "value_out_of_range"),
        (2, "value_out_of_range"),
        (3, "length_out_of_range"),
        (4, "length_out_of_range"),
        (5, "null_values"),
        (6, "empty_values"),
        (7, "null_element"),
        (8, "duplicate_id"),
        (9, "null_id"),
        (10, "invalid_split"),
    ]
    .into_iter()
    .map(|(r, s)| (r, s.to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn float_values_are_rejected_never_cast() {
    let (out, json) = validate_json(&[fixture("float_values.parquet")], &[]);
    assert!(out.status.success());
    assert_eq!(json["files"][0]["valid"], 0);
    assert_eq!(json["files"][0]["rejected"]["float_values"], 3);
}

#[test]
fn length_limits_are_configurable() {
    let (_, json) = validate_json(&[fixture("good_list_int8.parquet")], &["--min-len", "600"]);
    // Lengths are 512 + 37 i: rows 0..=2 are shorter than 600.
    assert_eq!(json["files"][0]["rejected"]["length_out_of_range"], 3);
}

#[test]
fn ids_are_unique_across_the_whole_dataset() {
    let f = fixture("good_large_list_uint16.parquet");
    let (out, json) = validate_json(&[f.clone(), f], &[]);
    assert!(out.status.success());
    assert_eq!(json["files"][0]["valid"], 5);
    assert_eq!(json["files"][1]["rejected"]["duplicate_id"], 5);
}

#[test]
fn unreadable_files_fail_with_one_line_naming_file_and_cause() {
    for (name, cause) in [
        ("not_parquet.parquet", "not a readable Parquet file"),
        ("empty.parquet", "not a readable Parquet file"),
        ("truncated.parquet", "not a readable Parquet file"),
        ("missing_values.parquet", "missing required column `values`"),
        ("missing_id.parquet", "missing required column `id`"),
        ("values_not_list.parquet", "column `values` has type Int32"),
    ] {
        let path = fixture(name);
        let out = pretext(&["validate", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{name}: {err}");
        assert!(
            lines[0].contains(name) && lines[0].contains(cause),
            "{name}: {}",
            lines[0]
        );

        let (out, json) = validate_json(&[path], &[]);
        assert!(!out.status.success());
        assert_eq!(json["files"][0]["readable"], false);
        assert!(json["files"][0]["error"].as_str().unwrap().contains(cause));
    }
}

#[test]
fn a_readable_file_still_reports_beside_an_unreadable_one() {
    let (out, json) = validate_json(
        &[fixture("good_list_int8.parquet"), fixture("empty.parquet")],
        &[],
    );
    assert!(!out.status.success());
    assert_eq!(json["files"][0]["valid"], 6);
    assert_eq!(json["unreadable"], 1);
}

#[test]
fn gen_data_is_deterministic_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let run = |sub: &str, seed: &str| {
        let out = dir.path().join(sub);
        let args = [
            "gen-data",
            "--out",
            out.to_str().unwrap(),
            "--sequences",
            "120",
            "--seed",
            seed,
            "--rows-per-file",
            "50",
            "--min-len",
            "512",
            "--max-len",
            "4096",
        ];
        let o = pretext(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (a, b, c) = (run("a", "7"), run("b", "7"), run("c", "8"));
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ] {
        assert_eq!(read(&a, f), read(&b, f), "{f} differs for the same flags");
        assert_ne!(read(&a, f), read(&c, f), "{f} equal for another seed");
    }
    let (out, json) = validate_json(&[a], &["--max-len", "4096"]);
    assert!(out.status.success());
    assert_eq!(json["rows"], 120);
    assert_eq!(json["valid"], 120);
}

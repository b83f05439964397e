//! The fast list decoder on files written by pyarrow (what most users'
//! data comes from): page v1 and v2, dictionary on and off, u8 / i32 / i64
//! lists with null lists, empty lists and null elements. Each file is taken
//! by the fast decoder and gives exactly the Arrow reader's arrays. Fails if
//! the project venv (ops/setup.sh) is missing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::Array;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

mod listcol_support;

/// The project venv's python (ops/setup.sh links `.venv`).
fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ops/setup.sh to create the project venv",
        p.display()
    );
    p
}

/// Writes one file per layout into argv[1] and prints their names.
const WRITE: &str = r#"
import sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
out = sys.argv[1]
rng = np.random.default_rng(3)
vals = [rng.integers(0, 41, int(rng.integers(1, 2500))).tolist() for _ in range(900)]
vals[5] = None
vals[7] = []
vals[9] = [1, None, 3] + [4] * 600
vals[400] = [None]
for t, name in [(pa.uint8(), "u8"), (pa.int32(), "i32"), (pa.int64(), "i64")]:
    table = pa.table({
        "id": [f"r{i}" for i in range(len(vals))],
        "values": pa.array(vals, type=pa.list_(t)),
        "split": ["train"] * len(vals),
    })
    for version in ["1.0", "2.0"]:
        for dictionary in [True, False]:
            path = f"{out}/{name}-v{version}-d{int(dictionary)}.parquet"
            pq.write_table(table, path, data_page_version=version, use_dictionary=dictionary,
                           row_group_size=250, data_page_size=16 * 1024)
            print(path)
"#;

#[test]
fn pyarrow_files_decode_exactly_as_the_arrow_reader_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .args(["-c", WRITE])
        .arg(dir.path())
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(files.len(), 12);
    for path in &files {
        let meta =
            ArrowReaderMetadata::load(&File::open(path).unwrap(), Default::default()).unwrap();
        let values = meta.schema().index_of("values").unwrap();
        let groups = (0..meta.metadata().num_row_groups()).collect();
        let (arrow, fast) = listcol_support::both_ways(path, values, groups, 64);
        assert_eq!(arrow.iter().map(|a| a.len()).sum::<usize>(), 900);
        assert_eq!(arrow.len(), fast.len(), "{}", path.display());
        for (i, (a, f)) in arrow.iter().zip(&fast).enumerate() {
            assert_eq!(a.to_data(), f.to_data(), "{} chunk {i}", path.display());
        }
        // The nulls are there to be seen: one null list, one null element
        // in each of two rows.
        let nulls: usize = fast.iter().map(|a| a.null_count()).sum();
        assert_eq!(nulls, 1, "{}", path.display());
    }
}

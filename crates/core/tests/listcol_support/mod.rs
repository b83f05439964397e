//! Shared by the fast list decoder's tests: one column of a file read both
//! by the Arrow reader and by the fast decoder, in the same chunks.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use pretext_core::listcol::ListColumn;

/// Column `col` over `groups`, `chunk` rows at a time: the Arrow reader's
/// arrays, then the fast decoder's. Panics if the fast decoder declines
/// the layout.
pub fn both_ways(
    path: &Path,
    col: usize,
    groups: Vec<usize>,
    chunk: usize,
) -> (Vec<ArrayRef>, Vec<ArrayRef>) {
    let meta = ArrowReaderMetadata::load(&File::open(path).unwrap(), Default::default()).unwrap();
    let plan = ListColumn::plan(meta.metadata(), meta.schema(), col, &groups)
        .unwrap_or_else(|| panic!("{}: not taken by the fast decoder", path.display()));
    let arrow =
        ParquetRecordBatchReaderBuilder::new_with_metadata(File::open(path).unwrap(), meta.clone())
            .with_row_groups(groups.clone())
            .with_batch_size(chunk)
            .build()
            .unwrap()
            .map(|b| b.unwrap().column(col).clone())
            .collect();
    let mut dec = plan.decoder(
        Arc::new(File::open(path).unwrap()),
        meta.metadata().clone(),
        groups,
    );
    let mut fast = Vec::new();
    loop {
        let a = dec.next_rows(chunk).unwrap();
        if a.is_empty() {
            break;
        }
        fast.push(a);
    }
    (arrow, fast)
}

//! Labeled rows and the one Parquet writer of the raw-input contract
//! (`id`, `values`, `label`, `split`), shared by `gen-data`,
//! `import-genomes` and written samples.

use std::borrow::Borrow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder, UInt8Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use pretext_core::split::Split;

use crate::error::{DatasetError, io};

/// One row of a dataset, with the class its maker knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Row id.
    pub id: String,
    /// The sequence.
    pub values: Vec<u8>,
    /// Its class (always known to the maker).
    pub class: usize,
    /// Whether the label is written to the file.
    pub labeled: bool,
    /// Its split.
    pub split: Split,
}

/// The schema of written files: the raw-input contract.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt8, false))),
            false,
        ),
        Field::new("label", DataType::Int32, true),
        Field::new("split", DataType::Utf8, false),
    ]))
}

/// Builds a record batch of rows in the raw-input contract.
pub fn to_record_batch<R: Borrow<Row>>(rows: &[R]) -> RecordBatch {
    let mut ids = StringBuilder::new();
    let mut values = ListBuilder::new(UInt8Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::UInt8, false)));
    let mut labels = Int32Builder::new();
    let mut splits = StringBuilder::new();
    for r in rows {
        let r = r.borrow();
        ids.append_value(&r.id);
        values.values().append_slice(&r.values);
        values.append(true);
        labels.append_option(r.labeled.then_some(r.class as i32));
        splits.append_value(r.split.as_str());
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(values.finish()),
        Arc::new(labels.finish()),
        Arc::new(splits.finish()),
    ];
    RecordBatch::try_new(schema(), cols).expect("columns match the schema")
}

/// One Parquet file of rows being written, a row group per [`RowsFile::write`].
pub struct RowsFile {
    path: PathBuf,
    writer: ArrowWriter<File>,
}

impl RowsFile {
    /// Creates `path` (Snappy, row groups of at most `row_group_rows`).
    pub fn create(path: &Path, row_group_rows: usize) -> Result<Self, DatasetError> {
        let file = File::create(path).map_err(io("create", path))?;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_compression(Compression::SNAPPY)
            .build();
        let writer =
            ArrowWriter::try_new(file, schema(), Some(props)).map_err(parquet_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
        })
    }

    /// Writes `rows` and closes the row group.
    pub fn write<R: Borrow<Row>>(&mut self, rows: &[R]) -> Result<(), DatasetError> {
        let e = parquet_err(&self.path);
        self.writer.write(&to_record_batch(rows)).map_err(&e)?;
        self.writer.flush().map_err(e)
    }

    /// Writes the footer; with `sync`, also flushes the file to disk.
    pub fn finish(self, sync: bool) -> Result<PathBuf, DatasetError> {
        let file = self.writer.into_inner().map_err(parquet_err(&self.path))?;
        if sync {
            file.sync_all().map_err(io("fsync", &self.path))?;
        }
        Ok(self.path)
    }
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> DatasetError + use<> {
    let path = path.to_path_buf();
    move |source| DatasetError::Parquet {
        path: path.clone(),
        source,
    }
}

/// The name of the `index`-th part file.
fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// Writes `rows` (owned or borrowed) as `part-NNNNN.parquet` files under
/// `out`: `rows_per_file` rows per file, row groups of `row_group_rows`.
/// Returns the files.
pub fn write_parts<R: Borrow<Row>>(
    out: &Path,
    rows: impl IntoIterator<Item = R>,
    rows_per_file: usize,
    row_group_rows: usize,
) -> Result<Vec<PathBuf>, DatasetError> {
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    let (rows_per_file, row_group_rows) = (rows_per_file.max(1), row_group_rows.max(1));
    let mut files = Vec::new();
    let mut current: Option<(RowsFile, usize)> = None;
    let mut group = Vec::with_capacity(row_group_rows);
    let mut rows = rows.into_iter().peekable();
    while let Some(row) = rows.next() {
        if current.is_none() {
            let path = out.join(part_name(files.len()));
            current = Some((RowsFile::create(&path, row_group_rows)?, 0));
        }
        group.push(row);
        let (file, in_file) = current.as_mut().expect("opened above");
        *in_file += 1;
        let file_full = *in_file == rows_per_file;
        if group.len() == row_group_rows || file_full || rows.peek().is_none() {
            file.write(&group)?;
            group.clear();
        }
        if file_full || rows.peek().is_none() {
            let (file, _) = current.take().expect("opened above");
            files.push(file.finish(false)?);
        }
    }
    Ok(files)
}

/// Removes `part-NNNNN.parquet` files under `out` numbered `keep` or more:
/// what an earlier, larger write left there.
pub fn remove_stale_parts(out: &Path, keep: usize) -> Result<(), DatasetError> {
    let entries = std::fs::read_dir(out).map_err(io("list", out))?;
    for e in entries {
        let path = e.map_err(io("list", out))?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("part-")?.strip_suffix(".parquet"))
            .and_then(|n| (n.len() == 5).then(|| n.parse::<usize>().ok())?)
            .is_some_and(|i| i >= keep);
        if stale {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> Row {
        Row {
            id: format!("r{i}"),
            values: vec![(i % 41) as u8; 3],
            class: i % 2,
            labeled: i.is_multiple_of(3),
            split: Split::Train,
        }
    }

    #[test]
    fn parts_hold_every_row_in_order_with_the_asked_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_parts(dir.path(), (0..23).map(row), 10, 4).unwrap();
        assert_eq!(files.len(), 3);
        let mut ids = Vec::new();
        for (k, f) in files.iter().enumerate() {
            assert!(f.ends_with(part_name(k)));
            let r =
                parquet::file::reader::SerializedFileReader::new(File::open(f).unwrap()).unwrap();
            let meta = parquet::file::reader::FileReader::metadata(&r);
            let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
            let want: &[i64] = if k < 2 { &[4, 4, 2] } else { &[3] };
            assert_eq!(groups, want, "file {k}");
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(f).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in b {
                let batch = batch.unwrap();
                let col = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                ids.extend(col.iter().map(|s| s.unwrap().to_owned()));
            }
        }
        let want: Vec<String> = (0..23).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn only_parts_past_the_kept_count_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_parts(dir.path(), (0..30).map(row), 10, 10).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
        remove_stale_parts(dir.path(), 1).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "part-00000.parquet"]);
    }
}

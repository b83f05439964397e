//! Streaming input: Parquet files read a few rows at a time, validated, with
//! rejected rows quarantined. Memory stays bounded whatever the file size.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::listcol::{ListColumn, ListRows};

use crate::validate::{
    BatchVerdict, ColumnLayout, IdRegistry, RejectReason, SchemaError, ValidationConfig,
    validate_batch,
};

/// The directory, under a run or work directory, that quarantine files go
/// to (producers, the scheduler and the demo alike).
pub const QUARANTINE_DIR: &str = "quarantine";

/// Rows decoded per step: at most 64 × 30,720 steps × 8 bytes ≈ 16 MB of
/// values in flight, whatever the file's row-group size.
pub const READ_BATCH_ROWS: usize = 64;

/// Why a file cannot be used at all. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The path does not exist or cannot be listed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not readable Parquet (truncated, empty, not Parquet).
    #[error("{path}: not a readable Parquet file: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// The file's columns break the contract.
    #[error("{path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: SchemaError,
    },
    /// Writing the quarantine file failed.
    #[error("{path}: cannot write quarantine file: {source}")]
    Quarantine {
        /// The quarantine file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
}

impl InputError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::Io { path, .. }
            | InputError::Parquet { path, .. }
            | InputError::Schema { path, .. }
            | InputError::Quarantine { path, .. } => path,
        }
    }
}

/// Expands files and directories into the sorted list of Parquet files
/// (`*.parquet`, recursively for directories). Named files are kept whatever
/// their extension.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| InputError::Io {
            path: p.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let io = |e| InputError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "parquet") {
            out.push(e);
        }
    }
    Ok(())
}

/// One validated step of a file: the verdict and where its rows sit.
#[derive(Debug)]
pub struct ValidatedChunk {
    /// Row index in the file of the chunk's first row.
    pub first_row: u64,
    /// Valid rows and rejections (indices relative to `first_row`).
    pub verdict: BatchVerdict,
}

/// Reads one Parquet file (or some of its row groups), validating as it goes
/// and writing rejected rows to the quarantine file when one is configured.
pub struct ValidatingReader {
    path: PathBuf,
    reader: Rows,
    layout: ColumnLayout,
    cfg: ValidationConfig,
    next_row: u64,
    quarantine: Option<Quarantine>,
    /// File rows known to be duplicates dataset-wide (see [`duplicate_ids`]).
    duplicates: BTreeSet<u64>,
}

impl std::fmt::Debug for ValidatingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatingReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ValidatingReader {
    /// Opens `path`; `row_groups` restricts reading to those groups (row
    /// numbers are still the file's; the quarantine file, if any, is then
    /// named after the first selected group, so readers of different groups
    /// of one file keep separate quarantine files).
    pub fn open(
        path: &Path,
        cfg: ValidationConfig,
        row_groups: Option<Vec<usize>>,
        quarantine_dir: Option<&Path>,
    ) -> Result<Self, InputError> {
        let pq = |e| InputError::Parquet {
            path: path.into(),
            source: e,
        };
        let (builder, layout) = open_builder(path)?;
        let mut next_row = 0;
        let mut part = None;
        if let Some(groups) = &row_groups {
            let md = builder.metadata();
            if let Some(&first) = groups.first() {
                next_row = (0..first.min(md.num_row_groups()))
                    .map(|g| md.row_group(g).num_rows() as u64)
                    .sum();
                part = Some(first);
            }
        }
        let schema = builder.schema().clone();
        let reader = Rows::new(path, builder, &layout, row_groups).map_err(pq)?;
        let quarantine = quarantine_dir.map(|d| Quarantine::new(d, path, part, schema));
        Ok(Self {
            path: path.into(),
            reader,
            layout,
            cfg,
            next_row,
            quarantine,
            duplicates: BTreeSet::new(),
        })
    }

    /// Rejects the rows at these file row numbers as duplicate ids (unless
    /// something else is wrong with them): the duplicates that a reader of
    /// some row groups cannot see itself, found by [`duplicate_ids`].
    pub fn with_duplicates(mut self, rows: BTreeSet<u64>) -> Self {
        self.duplicates = rows;
        self
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validates the next chunk of rows; `None` at the end of the file.
    pub fn next_chunk(
        &mut self,
        ids: &mut IdRegistry,
    ) -> Result<Option<ValidatedChunk>, InputError> {
        let Some(batch) = self.reader.next() else {
            if let Some(q) = &mut self.quarantine {
                q.finish()?;
            }
            return Ok(None);
        };
        let batch = batch.map_err(|e| InputError::Parquet {
            path: self.path.clone(),
            source: e,
        })?;
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        let mut verdict = validate_batch(&batch, &self.layout, &self.cfg, ids);
        let end = first_row + batch.num_rows() as u64;
        if self.duplicates.range(first_row..end).next().is_some() {
            let dup = |r: usize| self.duplicates.contains(&(first_row + r as u64));
            verdict.rejected.extend(
                verdict
                    .rows
                    .iter()
                    .filter(|row| dup(row.index))
                    .map(|row| (row.index, RejectReason::DuplicateId)),
            );
            verdict.rejected.sort_unstable_by_key(|&(r, _)| r);
            verdict.rows.retain(|row| !dup(row.index));
        }
        if !verdict.rejected.is_empty() {
            for (row, reason) in &verdict.rejected {
                tracing::debug!(file = %self.path.display(), row = first_row + *row as u64, %reason, "row rejected");
            }
            if let Some(q) = &mut self.quarantine {
                q.write(&batch, first_row, &verdict.rejected)?;
            }
        }
        Ok(Some(ValidatedChunk { first_row, verdict }))
    }
}

/// Validates a whole file, calling `f` on each chunk in file order, with
/// `threads` decoders working on alternate row groups (decoding is most of
/// the work; validation, id uniqueness and quarantine stay in file order on
/// the calling thread). Channels are bounded, so memory stays bounded.
pub fn for_each_chunk(
    path: &Path,
    cfg: ValidationConfig,
    ids: &mut IdRegistry,
    quarantine_dir: Option<&Path>,
    threads: usize,
    mut f: impl FnMut(ValidatedChunk),
) -> Result<(), InputError> {
    enum Msg {
        Batch(RecordBatch),
        End,
        Err(InputError),
    }
    if threads <= 1 {
        // One reader over the whole file: the fastest path (decoding row
        // groups separately costs more than a second thread wins back on
        // two cores).
        let mut reader = ValidatingReader::open(path, cfg, None, quarantine_dir)?;
        while let Some(chunk) = reader.next_chunk(ids)? {
            f(chunk);
        }
        return Ok(());
    }
    let pq = |e| InputError::Parquet {
        path: path.into(),
        source: e,
    };
    let file = File::open(path).map_err(|e| InputError::Io {
        path: path.into(),
        source: e,
    })?;
    crate::pagecheck::check_footer(&file).map_err(pq)?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(pq)?;
    crate::pagecheck::check_row_counts(meta.metadata()).map_err(pq)?;
    let layout = ColumnLayout::from_schema(meta.schema()).map_err(|e| InputError::Schema {
        path: path.into(),
        source: e,
    })?;
    let groups = meta.metadata().num_row_groups();
    let mut starts = Vec::with_capacity(groups);
    let mut acc = 0u64;
    for g in 0..groups {
        starts.push(acc);
        acc += meta.metadata().row_group(g).num_rows() as u64;
    }
    let threads = threads.clamp(1, groups.max(1));
    let mut quarantine =
        quarantine_dir.map(|d| Quarantine::new(d, path, None, meta.schema().clone()));
    let layout_ref = &layout;
    std::thread::scope(|s| {
        let mut rxs = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(2);
            rxs.push(rx);
            let meta = meta.clone();
            s.spawn(move || {
                for g in (t..groups).step_by(threads) {
                    let decoded = (|| -> Result<bool, InputError> {
                        let file = File::open(path).map_err(|e| InputError::Io {
                            path: path.into(),
                            source: e,
                        })?;
                        let builder =
                            ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone());
                        let reader =
                            Rows::new(path, builder, layout_ref, Some(vec![g])).map_err(pq)?;
                        for b in reader {
                            let b = b.map_err(pq)?;
                            if tx.send(Msg::Batch(b)).is_err() {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    })();
                    match decoded {
                        Ok(true) if tx.send(Msg::End).is_ok() => {}
                        Ok(_) => return,
                        Err(e) => {
                            let _ = tx.send(Msg::Err(e));
                            return;
                        }
                    }
                }
            });
        }
        for (g, &start) in starts.iter().enumerate() {
            let mut next_row = start;
            loop {
                let batch = match rxs[g % threads].recv() {
                    Ok(Msg::Batch(b)) => b,
                    Ok(Msg::End) => break,
                    Ok(Msg::Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(pq(parquet::errors::ParquetError::General(
                            "decoder thread stopped".into(),
                        )));
                    }
                };
                let first_row = next_row;
                next_row += batch.num_rows() as u64;
                let verdict = validate_batch(&batch, &layout, &cfg, ids);
                if let Some(q) = &mut quarantine
                    && !verdict.rejected.is_empty()
                {
                    q.write(&batch, first_row, &verdict.rejected)?;
                }
                f(ValidatedChunk { first_row, verdict });
            }
        }
        if let Some(q) = &mut quarantine {
            q.finish()?;
        }
        Ok(())
    })
}

/// Record batches of a file, [`READ_BATCH_ROWS`] at a time: the Arrow
/// reader for every column but `values`, which the fast list decoder
/// ([`crate::listcol`]) reads where its layout allows (the Arrow reader
/// reads it otherwise). The batches are those the Arrow reader alone gives.
struct Rows {
    reader: ParquetRecordBatchReader,
    /// The reader panicked: it is not used again.
    failed: bool,
    /// Where `values` goes in each batch, and its decoder.
    values: Option<(usize, Box<dyn ListRows>)>,
    schema: SchemaRef,
}

impl Rows {
    fn new(
        path: &Path,
        builder: ParquetRecordBatchReaderBuilder<File>,
        layout: &ColumnLayout,
        row_groups: Option<Vec<usize>>,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let meta = builder.metadata().clone();
        let schema = builder.schema().clone();
        let groups = row_groups
            .clone()
            .unwrap_or_else(|| (0..meta.num_row_groups()).collect());
        let col = layout.values_column();
        let plan = ListColumn::plan(&meta, &schema, col, &groups);
        let mut builder = builder.with_batch_size(READ_BATCH_ROWS);
        if let Some(g) = row_groups {
            builder = builder.with_row_groups(g);
        }
        tracing::debug!(
            file = %path.display(),
            fast = plan.is_some(),
            "values column decoder chosen (fast: pretext_core::listcol; else the Arrow reader)"
        );
        // Every page header, checked before the parquet crate sizes
        // anything from it.
        crate::pagecheck::check_pages(&File::open(path)?, &meta, &groups, |_| true)?;
        let values = match plan {
            Some(plan) => {
                let others = (0..schema.fields().len()).filter(|&i| i != col);
                let mask = ProjectionMask::roots(builder.parquet_schema(), others);
                builder = builder.with_projection(mask);
                let file = Arc::new(File::open(path)?);
                Some((col, plan.decoder(file, meta, groups)))
            }
            None => None,
        };
        Ok(Self {
            reader: builder.build()?,
            failed: false,
            values,
            schema,
        })
    }
}

impl Iterator for Rows {
    type Item = Result<RecordBatch, parquet::errors::ParquetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        // The parquet crate panics on some corrupt pages (a division by
        // zero, an index out of range): that is this file's error, not the
        // process's end.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reader.next()));
        let batch = match next {
            Ok(next) => match next? {
                Ok(b) => b,
                Err(e) => return Some(Err(e.into())),
            },
            Err(panic) => {
                self.failed = true;
                return Some(Err(parquet::errors::ParquetError::General(format!(
                    "the parquet reader failed on a corrupt page ({})",
                    panic_message(&panic)
                ))));
            }
        };
        let Some((col, decoder)) = &mut self.values else {
            return Some(Ok(batch));
        };
        let rows = batch.num_rows();
        let joined = decoder.next_rows(rows).and_then(|values| {
            if values.len() != rows {
                return Err(parquet::errors::ParquetError::General(format!(
                    "values column has {} rows where the others have {rows}",
                    values.len()
                )));
            }
            let mut cols = batch.columns().to_vec();
            cols.insert(*col, values);
            Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
        });
        Some(joined)
    }
}

/// The message of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// A reader builder for `path` and the layout of its columns (the schema
/// checked against the raw-input contract).
fn open_builder(
    path: &Path,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, ColumnLayout), InputError> {
    let file = File::open(path).map_err(|e| InputError::Io {
        path: path.into(),
        source: e,
    })?;
    crate::pagecheck::check_footer(&file).map_err(|e| InputError::Parquet {
        path: path.into(),
        source: e,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| InputError::Parquet {
            path: path.into(),
            source: e,
        })?;
    crate::pagecheck::check_row_counts(builder.metadata()).map_err(|e| InputError::Parquet {
        path: path.into(),
        source: e,
    })?;
    let layout = ColumnLayout::from_schema(builder.schema()).map_err(|e| InputError::Schema {
        path: path.into(),
        source: e,
    })?;
    Ok((builder, layout))
}

/// What a pass over a file's ids finds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdPass {
    /// File rows whose id an earlier row of the dataset already has.
    pub duplicates: BTreeSet<u64>,
    /// Rows of each row group (row groups are what producers share out).
    pub row_groups: Vec<u64>,
}

/// The rows of `path` whose id an earlier row of the dataset already has,
/// as file row numbers: the uniqueness rule of [`validate_batch`] (every
/// non-null id is registered, valid row or not) applied to the `id` column
/// alone, which is all that is decoded. Checks the file's schema too.
pub fn duplicate_ids(path: &Path, ids: &mut IdRegistry) -> Result<IdPass, InputError> {
    let pq = |e| InputError::Parquet {
        path: path.into(),
        source: e,
    };
    let (builder, layout) = open_builder(path)?;
    let md = builder.metadata();
    let row_groups = (0..md.num_row_groups())
        .map(|g| md.row_group(g).num_rows() as u64)
        .collect();
    let id_col = layout.id_column();
    let groups: Vec<usize> = (0..md.num_row_groups()).collect();
    let file = File::open(path).map_err(|e| InputError::Io {
        path: path.into(),
        source: e,
    })?;
    crate::pagecheck::check_pages(&file, md, &groups, |root| root == id_col).map_err(pq)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id_col]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(pq)?;
    let mut dups = BTreeSet::new();
    let mut row = 0u64;
    let mut reader = reader;
    loop {
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next()))
            .map_err(|panic| {
                pq(parquet::errors::ParquetError::General(format!(
                    "the parquet reader failed on a corrupt page ({})",
                    panic_message(&panic)
                )))
            })?;
        let Some(batch) = next else { break };
        let batch = batch.map_err(|e| pq(e.into()))?;
        let col = batch.column(0);
        let ids_col = crate::validate::to_utf8(col);
        for r in 0..batch.num_rows() {
            if !ids_col.is_null(r) && !ids.insert(ids_col.value(r)) {
                dups.insert(row + r as u64);
            }
        }
        row += batch.num_rows() as u64;
    }
    Ok(IdPass {
        duplicates: dups,
        row_groups,
    })
}

/// Rejected rows of one input file, kept whole in a Parquet file beside
/// their reason, file and row number: nothing rejected is lost.
struct Quarantine {
    path: PathBuf,
    source: String,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
}

impl Quarantine {
    /// The quarantine of `input`, or of its row groups from `part` on.
    fn new(dir: &Path, input: &Path, part: Option<usize>, input_schema: SchemaRef) -> Self {
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag = hex8(&Sha256::digest(input.to_string_lossy().as_bytes()));
        let part = part.map_or_else(String::new, |g| format!("-rg{g}"));
        let path = dir.join(format!("{stem}-{tag}{part}.rejected.parquet"));
        let mut fields: Vec<Arc<Field>> = input_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("source_file", DataType::Utf8, false)));
        fields.push(Arc::new(Field::new("source_row", DataType::UInt64, false)));
        fields.push(Arc::new(Field::new("reason", DataType::Utf8, false)));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input_schema.metadata().clone(),
        ));
        Self {
            path,
            source: input.to_string_lossy().into_owned(),
            schema,
            writer: None,
        }
    }

    fn write(
        &mut self,
        batch: &RecordBatch,
        first_row: u64,
        rejected: &[(usize, RejectReason)],
    ) -> Result<(), InputError> {
        let qerr = |path: &Path, e| InputError::Quarantine {
            path: path.into(),
            source: e,
        };
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| InputError::Io {
                    path: dir.into(),
                    source: e,
                })?;
            }
            let file = File::create(&self.path).map_err(|e| InputError::Io {
                path: self.path.clone(),
                source: e,
            })?;
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(256))
                .build();
            let w = ArrowWriter::try_new(file, self.schema.clone(), Some(props))
                .map_err(|e| qerr(&self.path, e))?;
            self.writer = Some(w);
        }
        let idx = UInt64Array::from_iter_values(rejected.iter().map(|(r, _)| *r as u64));
        let taken = arrow_select::take::take_record_batch(batch, &idx)
            .map_err(|e| qerr(&self.path, e.into()))?;
        let mut cols = taken.columns().to_vec();
        cols.push(Arc::new(StringArray::from(vec![
            self.source.as_str();
            rejected.len()
        ])));
        cols.push(Arc::new(UInt64Array::from_iter_values(
            rejected.iter().map(|(r, _)| first_row + *r as u64),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            rejected.iter().map(|(_, r)| r.as_str()),
        )));
        let out = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| qerr(&self.path, e.into()))?;
        let w = self.writer.as_mut().expect("created above");
        w.write(&out).map_err(|e| qerr(&self.path, e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), InputError> {
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| InputError::Quarantine {
                path: self.path.clone(),
                source: e,
            })?;
        }
        Ok(())
    }
}

fn hex8(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Rejected rows counted by reason name (the form reports use).
pub fn reason_counts(counts: &BTreeMap<RejectReason, u64>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .map(|(r, n)| (r.as_str().to_owned(), *n))
        .collect()
}

//! Decoding a batch message and checking it against the contract before
//! the trainer sees it: [`DecodedBatch`] hands out views of its buffers.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::Schema;

use super::{
    Batch, BatchStats, CONTENT_TYPE, MAX_DECOMPRESSED_BYTES, MAX_MESSAGE_BYTES, SCHEMA_MAJOR,
    batch_schema, meta,
};
use crate::ipc_limit::IpcLimitError;
use crate::task::Task;
use crate::{MAX_VALUE, PAD_TOKEN};

/// Why a message is not a batch this consumer accepts. Every variant is a
/// reason for the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The message's content type is not [`CONTENT_TYPE`].
    #[error("content type `{0}` is not {CONTENT_TYPE}")]
    WrongContentType(String),
    /// Larger than [`MAX_MESSAGE_BYTES`]: refused before decoding.
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Compressed buffers that declare more than [`MAX_DECOMPRESSED_BYTES`]:
    /// refused before decoding.
    #[error("message would decompress beyond the {MAX_DECOMPRESSED_BYTES}-byte limit: {0}")]
    DecompressesTooLarge(String),
    /// Not an Arrow IPC stream with exactly one record batch.
    #[error("not an Arrow IPC stream with one record batch: {0}")]
    NotArrow(String),
    /// A schema version this consumer does not know.
    #[error("unknown schema version `{0}` (this consumer reads major {SCHEMA_MAJOR})")]
    UnknownVersion(String),
    /// The schema breaks the contract.
    #[error("schema breaks the batch contract: {0}")]
    BadSchema(String),
    /// The content breaks the contract.
    #[error("content breaks the batch contract: {0}")]
    BadContent(String),
}

/// A decoded, checked batch. Buffers are views into the message's bytes.
#[derive(Clone, Debug)]
pub struct DecodedBatch {
    /// Task.
    pub task: Task,
    /// Epoch.
    pub epoch: u32,
    /// Bucket length L.
    pub bucket_len: usize,
    record: RecordBatch,
}

impl DecodedBatch {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.record.num_rows()
    }

    fn fsl_values(&self, col: usize) -> &[u8] {
        let list = self.record.column(col).as_fixed_size_list();
        let values = list
            .values()
            .as_primitive::<arrow_array::types::UInt8Type>();
        let l = self.bucket_len;
        &values.values()[list.offset() * l..(list.offset() + list.len()) * l]
    }

    /// Input token ids, `[rows, L]` row-major.
    pub fn input(&self) -> &[u8] {
        self.fsl_values(2)
    }

    /// Targets, `[rows, L]`.
    pub fn target(&self) -> &[u8] {
        self.fsl_values(3)
    }

    /// Loss mask, `[rows, L]`.
    pub fn loss_mask(&self) -> &[u8] {
        self.fsl_values(4)
    }

    /// True lengths.
    pub fn lengths(&self) -> &[u32] {
        self.record.column(1).as_primitive::<UInt32Type>().values()
    }

    /// Sequence ids.
    pub fn seq_ids(&self) -> Vec<&str> {
        self.record
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or(""))
            .collect()
    }

    /// Labels.
    pub fn labels(&self) -> Vec<Option<i32>> {
        self.record
            .column(5)
            .as_primitive::<Int32Type>()
            .iter()
            .collect()
    }

    /// Positions where the loss counts.
    pub fn loss_tokens(&self) -> u64 {
        self.loss_mask().iter().map(|&m| u64::from(m)).sum()
    }

    /// Rows, real tokens and padding.
    pub fn stats(&self) -> BatchStats {
        BatchStats::of(self.bucket_len, self.lengths())
    }

    /// Copies into an owned [`Batch`] (tests and tools).
    pub fn to_batch(&self) -> Batch {
        Batch {
            task: self.task,
            epoch: self.epoch,
            bucket_len: self.bucket_len,
            seq_ids: self.seq_ids().into_iter().map(str::to_owned).collect(),
            lengths: self.lengths().to_vec(),
            input: self.input().to_vec(),
            target: self.target().to_vec(),
            loss_mask: self.loss_mask().to_vec(),
            labels: self.labels(),
        }
    }
}

fn meta_value<'a>(schema: &'a Schema, key: &str) -> Result<&'a str, DecodeError> {
    schema
        .metadata()
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| DecodeError::BadSchema(format!("metadata `{key}` missing")))
}

/// Decodes and checks a batch message. The size limits (of the message and
/// of what its compressed buffers declare) are checked before any decoding; nothing here panics on hostile bytes.
pub fn decode(bytes: Vec<u8>) -> Result<DecodedBatch, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let mut batches = match crate::ipc_limit::read_stream(bytes, MAX_DECOMPRESSED_BYTES, 1) {
        Ok(batches) => batches,
        Err(e @ IpcLimitError::OverLimit(_)) => {
            return Err(DecodeError::DecompressesTooLarge(e.to_string()));
        }
        Err(IpcLimitError::Malformed(e)) => return Err(DecodeError::NotArrow(e)),
    };
    let record = match batches.pop() {
        Some(b) if batches.is_empty() => b,
        _ => return Err(DecodeError::NotArrow("no record batch".into())),
    };
    let schema = record.schema();
    let version = meta_value(&schema, meta::SCHEMA_VERSION)?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major != Some(SCHEMA_MAJOR) {
        return Err(DecodeError::UnknownVersion(version.to_owned()));
    }
    let task_name = meta_value(&schema, meta::TASK)?;
    let task = Task::parse(task_name)
        .ok_or_else(|| DecodeError::BadSchema(format!("unknown task `{task_name}`")))?;
    let l: usize = meta_value(&schema, meta::BUCKET_LEN)?
        .parse()
        .map_err(|_| DecodeError::BadSchema("bucket_len is not a number".into()))?;
    let epoch: u32 = meta_value(&schema, meta::EPOCH)?
        .parse()
        .map_err(|_| DecodeError::BadSchema("epoch is not a number".into()))?;
    if l == 0 || l > MAX_MESSAGE_BYTES {
        return Err(DecodeError::BadSchema(format!(
            "bucket_len {l} out of range"
        )));
    }
    let expected = batch_schema(task, l, epoch);
    if schema.fields() != expected.fields() {
        return Err(DecodeError::BadSchema(format!(
            "fields {:?} differ from the contract",
            schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
        )));
    }
    for (i, col) in record.columns().iter().enumerate() {
        if i != 5 && col.null_count() > 0 {
            return Err(DecodeError::BadContent(format!(
                "nulls in `{}`",
                schema.field(i).name()
            )));
        }
    }
    let batch = DecodedBatch {
        task,
        epoch,
        bucket_len: l,
        record,
    };
    if batch.rows() == 0 {
        return Err(DecodeError::BadContent("no rows".into()));
    }
    for (r, &len) in batch.lengths().iter().enumerate() {
        if len == 0 || len as usize > l {
            return Err(DecodeError::BadContent(format!(
                "row {r}: length {len} outside 1..={l}"
            )));
        }
    }
    if let Some(bad) = batch.input().iter().find(|&&v| v > PAD_TOKEN) {
        return Err(DecodeError::BadContent(format!(
            "input token {bad} is not a token id"
        )));
    }
    if let Some(bad) = batch
        .target()
        .iter()
        .find(|&&v| v > MAX_VALUE && v != PAD_TOKEN)
    {
        return Err(DecodeError::BadContent(format!(
            "target {bad} is not a value"
        )));
    }
    if batch.loss_mask().iter().any(|&m| m > 1) {
        return Err(DecodeError::BadContent(
            "loss_mask holds values other than 0 and 1".into(),
        ));
    }
    Ok(batch)
}

/// Checks a delivery's content type, then decodes its body: what every
/// batch consumer runs on a message before using it. The error's text is
/// the dead-letter reason.
pub fn check_message(content_type: &str, body: Vec<u8>) -> Result<DecodedBatch, DecodeError> {
    if content_type != CONTENT_TYPE {
        return Err(DecodeError::WrongContentType(content_type.to_owned()));
    }
    decode(body)
}

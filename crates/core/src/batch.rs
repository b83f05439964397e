//! The batch message: one Arrow IPC stream with one record batch, every row
//! of one length bucket padded to the bucket length `L`. Encoding, and a
//! decoder that checks everything before the trainer sees it and hands out
//! contiguous `[rows, L]` buffers without copying elements.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, RecordBatch, UInt8Array, UInt32Array};
use arrow_buffer::ScalarBuffer;
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ipc_limit::IpcLimitError;
use crate::task::{MaskConfig, RowOut, Task, fill_row};
use crate::{MAX_VALUE, PAD_TOKEN};

/// Version of the batch contract; consumers reject an unknown major.
/// 1.1: `next` targets are the value `horizon` steps ahead (the producer's
/// setting; 1.0 knew only horizon 1) and `masked` selects spans.
pub const SCHEMA_VERSION: &str = "1.1";
/// Major part of [`SCHEMA_VERSION`].
pub const SCHEMA_MAJOR: u32 = 1;
/// AMQP content type of batch messages.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";
/// Largest message a consumer decodes (RabbitMQ 4's default limit).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes reserved for the encoded message of `rows` rows of bucket length
/// `bucket_len` whose ids total `id_bytes`: the three `[rows, L]` columns,
/// the ids, 16 bytes a row for offsets, lengths and labels, and 8 KiB for
/// the schema message, the batch header and the buffers' padding.
pub fn message_capacity(rows: usize, bucket_len: usize, id_bytes: usize) -> usize {
    3 * rows * bucket_len + id_bytes + rows * 16 + 8192
}
/// Most bytes the compressed buffers of one message may declare they
/// decompress to, checked before decoding. A batch within the token budget
/// decompresses to a few MiB; this is the bound on what a hostile one can
/// make the consumer allocate.
pub const MAX_DECOMPRESSED_BYTES: u64 = 128 * 1024 * 1024;

/// Metadata keys of the Arrow schema.
pub mod meta {
    /// Contract version.
    pub const SCHEMA_VERSION: &str = "pretext.schema_version";
    /// `masked` | `next` | `classify`.
    pub const TASK: &str = "task";
    /// Bucket length L.
    pub const BUCKET_LEN: &str = "bucket_len";
    /// Epoch the targets were drawn for.
    pub const EPOCH: &str = "epoch";
}

/// Header names of batch messages (AMQP headers).
pub mod header {
    /// Contract version.
    pub const SCHEMA_VERSION: &str = "pretext-schema-version";
    /// Task name.
    pub const TASK: &str = "pretext-task";
    /// Rows in the batch.
    pub const ROWS: &str = "pretext-rows";
    /// Real (unpadded) tokens.
    pub const REAL_TOKENS: &str = "pretext-real-tokens";
    /// Padding tokens.
    pub const PADDED_TOKENS: &str = "pretext-padded-tokens";
    /// The file task that published the batch (set by the producer, kept
    /// on a dead letter): a trainer counts a dead batch toward the end of
    /// the data only if it belongs to a task the control stream reported
    /// done, so a stray message in the queue cannot end a run early.
    pub const FILE_TASK: &str = "pretext-file-task";
}

/// One row going into a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRow {
    /// Sequence id.
    pub seq_id: String,
    /// Values, each 0..=40.
    pub values: Vec<u8>,
    /// Class index, if labeled.
    pub label: Option<i32>,
}

/// A batch in memory: `[rows, L]` buffers, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Task of the targets.
    pub task: Task,
    /// Epoch the targets were drawn for.
    pub epoch: u32,
    /// Bucket length L.
    pub bucket_len: usize,
    /// Sequence ids.
    pub seq_ids: Vec<String>,
    /// True lengths.
    pub lengths: Vec<u32>,
    /// Input token ids, `rows × L`.
    pub input: Vec<u8>,
    /// Targets, `rows × L`.
    pub target: Vec<u8>,
    /// Loss mask, `rows × L`.
    pub loss_mask: Vec<u8>,
    /// Labels (classify; may be set for others).
    pub labels: Vec<Option<i32>>,
}

/// Summary numbers of a batch, carried in message headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    /// Rows.
    pub rows: u64,
    /// Real tokens.
    pub real_tokens: u64,
    /// Padding tokens.
    pub padded_tokens: u64,
}

impl Batch {
    /// Builds the batch of `rows` for bucket length `bucket_len`.
    ///
    /// # Panics
    /// If a row is longer than `bucket_len` or empty (validation rules these out).
    pub fn build<R: std::borrow::Borrow<BatchRow>>(
        task: Task,
        mask: &MaskConfig,
        epoch: u32,
        bucket_len: usize,
        rows: &[R],
    ) -> Batch {
        let n = rows.len();
        let l = bucket_len;
        let mut input = vec![0u8; n * l];
        let mut target = vec![0u8; n * l];
        let mut loss_mask = vec![0u8; n * l];
        for (r, row) in rows.iter().enumerate() {
            let row = row.borrow();
            assert!(
                !row.values.is_empty() && row.values.len() <= l,
                "row does not fit its bucket"
            );
            let span = r * l..(r + 1) * l;
            fill_row(
                task,
                mask,
                epoch,
                &row.seq_id,
                &row.values,
                RowOut {
                    input: &mut input[span.clone()],
                    target: &mut target[span.clone()],
                    loss_mask: &mut loss_mask[span],
                },
            );
        }
        Batch {
            task,
            epoch,
            bucket_len: l,
            seq_ids: rows.iter().map(|r| r.borrow().seq_id.clone()).collect(),
            lengths: rows
                .iter()
                .map(|r| r.borrow().values.len() as u32)
                .collect(),
            input,
            target,
            loss_mask,
            labels: rows.iter().map(|r| r.borrow().label).collect(),
        }
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.seq_ids.len()
    }

    /// Rows, real tokens and padding.
    pub fn stats(&self) -> BatchStats {
        BatchStats::of(self.bucket_len, &self.lengths)
    }

    /// The deterministic message id: the same batch (task, epoch, bucket and
    /// rows in order) always gets the same id, so redeliveries and
    /// republished copies are recognised.
    pub fn message_id(&self) -> String {
        message_id(
            self.task,
            self.epoch,
            self.bucket_len,
            self.seq_ids.iter().map(String::as_str),
        )
    }

    /// Headers of the batch message.
    pub fn headers(&self) -> BTreeMap<&'static str, HeaderValue> {
        headers(self.task, self.stats())
    }

    /// An upper bound on the uncompressed IPC stream's size, reserved up
    /// front so that encoding never grows (reallocates and copies) the
    /// message: [`message_capacity`] of this batch's rows and ids.
    pub fn encoded_capacity(&self) -> usize {
        let ids: usize = self.seq_ids.iter().map(String::len).sum();
        message_capacity(self.rows(), self.bucket_len, ids)
    }

    /// Encodes as one Arrow IPC stream, optionally compressed.
    pub fn encode(&self, compression: Option<IpcCompression>) -> Vec<u8> {
        self.clone().into_encoded(compression)
    }

    /// Encodes, moving the buffers into Arrow arrays instead of copying them.
    pub fn into_encoded(self, compression: Option<IpcCompression>) -> Vec<u8> {
        let schema = batch_schema(self.task, self.bucket_len, self.epoch);
        let l = self.bucket_len as i32;
        let fsl = |data: Vec<u8>| -> ArrayRef {
            let values = Arc::new(UInt8Array::new(ScalarBuffer::from(data), None));
            Arc::new(FixedSizeListArray::new(item_field(), l, values, None))
        };
        let mut ids = StringBuilder::new();
        self.seq_ids.iter().for_each(|s| ids.append_value(s));
        let mut labels = Int32Builder::new();
        self.labels.iter().for_each(|v| labels.append_option(*v));
        let capacity = self.encoded_capacity();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(UInt32Array::from(self.lengths)),
            fsl(self.input),
            fsl(self.target),
            fsl(self.loss_mask),
            Arc::new(labels.finish()),
        ];
        let rb = RecordBatch::try_new(schema.clone(), cols).expect("batch matches its schema");
        let opts = IpcWriteOptions::default()
            .try_with_compression(compression.map(IpcCompression::arrow))
            .expect("compression is compiled in");
        let mut out = Vec::with_capacity(capacity);
        {
            let mut w =
                StreamWriter::try_new_with_options(&mut out, &schema, opts).expect("ipc writer");
            w.write(&rb).expect("ipc write to memory");
            w.finish().expect("ipc finish");
        }
        out
    }
}

impl BatchStats {
    /// The numbers of a batch of bucket length `bucket_len` whose rows have
    /// these true lengths.
    pub fn of(bucket_len: usize, lengths: &[u32]) -> BatchStats {
        let real: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
        let total = (lengths.len() * bucket_len) as u64;
        BatchStats {
            rows: lengths.len() as u64,
            real_tokens: real,
            padded_tokens: total - real,
        }
    }
}

/// The deterministic message id of the batch of `seq_ids` (in row order)
/// for this task, epoch and bucket: see [`Batch::message_id`].
pub fn message_id<'a>(
    task: Task,
    epoch: u32,
    bucket_len: usize,
    seq_ids: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut h = Sha256::new();
    h.update(task.as_str().as_bytes());
    h.update(epoch.to_le_bytes());
    h.update((bucket_len as u64).to_le_bytes());
    for id in seq_ids {
        h.update((id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The AMQP headers of a batch message.
pub fn headers(task: Task, s: BatchStats) -> BTreeMap<&'static str, HeaderValue> {
    BTreeMap::from([
        (
            header::SCHEMA_VERSION,
            HeaderValue::Str(SCHEMA_VERSION.into()),
        ),
        (header::TASK, HeaderValue::Str(task.as_str().into())),
        (header::ROWS, HeaderValue::Int(s.rows as i64)),
        (header::REAL_TOKENS, HeaderValue::Int(s.real_tokens as i64)),
        (
            header::PADDED_TOKENS,
            HeaderValue::Int(s.padded_tokens as i64),
        ),
    ])
}

/// A header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
}

/// IPC body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpcCompression {
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl IpcCompression {
    fn arrow(self) -> CompressionType {
        match self {
            IpcCompression::Lz4 => CompressionType::LZ4_FRAME,
            IpcCompression::Zstd => CompressionType::ZSTD,
        }
    }
}

/// The item field of the `FixedSizeList<u8, L>` columns.
pub(crate) fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt8, false))
}

/// The Arrow schema of a batch of bucket length `l`.
pub fn batch_schema(task: Task, l: usize, epoch: u32) -> SchemaRef {
    let fsl = DataType::FixedSizeList(item_field(), l as i32);
    let metadata = std::collections::HashMap::from([
        (meta::SCHEMA_VERSION.to_owned(), SCHEMA_VERSION.to_owned()),
        (meta::TASK.to_owned(), task.as_str().to_owned()),
        (meta::BUCKET_LEN.to_owned(), l.to_string()),
        (meta::EPOCH.to_owned(), epoch.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("seq_id", DataType::Utf8, false),
            Field::new("length", DataType::UInt32, false),
            Field::new("input", fsl.clone(), false),
            Field::new("target", fsl.clone(), false),
            Field::new("loss_mask", fsl, false),
            Field::new("label", DataType::Int32, true),
        ],
        metadata,
    ))
}

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
    /// The trivial token predictors on this batch's loss positions.
    pub fn trivial(&self) -> crate::trivial::TrivialCounts {
        let l = self.bucket_len;
        let (input, target, mask) = (self.input(), self.target(), self.loss_mask());
        let mut c = crate::trivial::TrivialCounts::default();
        for (r, &len) in self.lengths().iter().enumerate() {
            let span = r * l..(r + 1) * l;
            let len = (len as usize).min(l);
            c.add_row(
                self.task,
                &input[span.clone()],
                &target[span.clone()],
                &mask[span],
                len,
            );
        }
        c
    }

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

/// The batch contract as a JSON document (checked in as
/// `schemas/batch.schema.json`; a test keeps the two equal).
pub fn contract_json() -> serde_json::Value {
    let schema = batch_schema(Task::Masked, 0, 0);
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::FixedSizeList(item, _) => {
                    format!("FixedSizeList<{}, L>", item.data_type())
                }
                other => other.to_string(),
            };
            serde_json::json!({ "name": f.name(), "type": ty, "nullable": f.is_nullable() })
        })
        .collect();
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "content_type": CONTENT_TYPE,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "token_ids": { "values": "0..=40", "mask": crate::MASK_TOKEN, "pad": PAD_TOKEN },
        "fields": fields,
        "schema_metadata": [meta::SCHEMA_VERSION, meta::TASK, meta::BUCKET_LEN, meta::EPOCH],
        "tasks": ["masked", "next", "classify"],
        "targets": {
            "masked": "target[t] = value[t] where loss_mask[t] = 1: positions selected singly or in spans (the producer's mask rate and mean span), 80% shown as MASK, 10% as a random value, 10% unchanged",
            "next": "target[t] = value[t + h] where loss_mask[t] = 1, for t + h < length; h is the producer's horizon (1 = the next step)",
            "classify": "no targets; labels only"
        },
        "amqp": {
            "delivery_mode": "persistent",
            "message_id": "hex of sha256(task, epoch, bucket_len, seq_ids)[..16]: the same batch always has the same id",
            "headers": {
                header::SCHEMA_VERSION: "string",
                header::TASK: "string",
                header::ROWS: "int",
                header::REAL_TOKENS: "int",
                header::PADDED_TOKENS: "int",
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(task: Task) -> Batch {
        let rows: Vec<BatchRow> = (0..3)
            .map(|i| BatchRow {
                seq_id: format!("s{i}"),
                values: (0..(20 + i * 5))
                    .map(|t| ((t * 7 + i) % 41) as u8)
                    .collect(),
                label: (i != 1).then_some(i),
            })
            .collect();
        Batch::build(task, &MaskConfig::default(), 2, 32, &rows)
    }

    #[test]
    fn round_trips_every_task_and_compression() {
        for task in [Task::Masked, Task::Next, Task::Classify] {
            for c in [None, Some(IpcCompression::Lz4), Some(IpcCompression::Zstd)] {
                let b = sample(task);
                let d = decode(b.encode(c)).unwrap();
                assert_eq!(d.to_batch(), b);
                assert_eq!(d.stats(), b.stats());
            }
        }
    }

    #[test]
    fn message_id_depends_on_content_only() {
        assert_eq!(
            sample(Task::Masked).message_id(),
            sample(Task::Masked).message_id()
        );
        assert_ne!(
            sample(Task::Masked).message_id(),
            sample(Task::Next).message_id()
        );
    }

    #[test]
    fn rejects_garbage_oversize_and_unknown_versions() {
        assert!(matches!(
            decode(b"hello".to_vec()),
            Err(DecodeError::NotArrow(_))
        ));
        assert!(matches!(
            decode(vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
        let bytes = sample(Task::Next).encode(None);
        assert!(decode(bytes[..bytes.len() / 2].to_vec()).is_err());
        // Rewrite the version string in place (same length): a v2 batch.
        let mut forged = bytes.clone();
        let pos = bytes.windows(3).position(|w| w == b"1.1").unwrap();
        forged[pos] = b'2';
        assert_eq!(
            decode(forged).unwrap_err(),
            DecodeError::UnknownVersion("2.1".into())
        );
    }

    #[test]
    fn no_message_exceeds_16_mib_for_any_default_bucket() {
        let cfg = crate::bucket::BucketConfig::default();
        for (b, &l) in cfg.edges.iter().enumerate() {
            let rows: Vec<BatchRow> = (0..cfg.rows_per_batch(b))
                .map(|i| BatchRow {
                    seq_id: format!("row-{i:012}"),
                    values: vec![40; l],
                    label: Some(1),
                })
                .collect();
            let batch = Batch::build(Task::Masked, &MaskConfig::default(), 0, l, &rows);
            let reserved = batch.encoded_capacity();
            let bytes = batch.into_encoded(None);
            assert!(
                bytes.len() <= reserved,
                "bucket {l}: {} bytes overflow the {reserved} reserved",
                bytes.len()
            );
            assert!(
                bytes.len() < MAX_MESSAGE_BYTES,
                "bucket {l}: {} bytes",
                bytes.len()
            );
            assert!(
                bytes.len() >= 3 * rows.len() * l,
                "all three buffers are in the message"
            );
        }
    }

    #[test]
    fn encoding_stays_within_the_reserved_capacity() {
        // Many short rows with long ids: the non-column parts are largest.
        for (rows, l, id_len) in [(1, 1, 1), (128, 512, 60), (4096, 16, 200)] {
            let rows: Vec<BatchRow> = (0..rows)
                .map(|i| BatchRow {
                    seq_id: format!("{i:0id_len$}"),
                    values: vec![3; l],
                    label: (i % 2 == 0).then_some(i),
                })
                .collect();
            for task in [Task::Masked, Task::Next, Task::Classify] {
                let batch = Batch::build(task, &MaskConfig::default(), 0, l, &rows);
                let reserved = batch.encoded_capacity();
                let bytes = batch.into_encoded(None);
                assert!(
                    bytes.len() <= reserved,
                    "{} rows of {l}: {} bytes overflow the {reserved} reserved",
                    rows.len(),
                    bytes.len()
                );
                assert_eq!(bytes.capacity(), reserved, "the message was regrown");
            }
        }
    }

    #[test]
    fn checked_in_contract_matches_the_code() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/batch.schema.json"
        );
        let text = std::fs::read_to_string(path).expect("schemas/batch.schema.json exists");
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            file,
            contract_json(),
            "schemas/batch.schema.json differs from the code; regenerate with `pretext schema > schemas/batch.schema.json` after a deliberate change"
        );
    }
}

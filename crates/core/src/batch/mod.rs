//! The batch message: one Arrow IPC stream with one record batch, every row
//! of one length bucket padded to the bucket length `L`. Encoding, and a
//! decoder that checks everything before the trainer sees it and hands out
//! contiguous `[rows, L]` buffers without copying elements.

mod decoding;
mod encoding;
mod schema;
#[cfg(test)]
mod tests;

use arrow_ipc::CompressionType;
use serde::{Deserialize, Serialize};

use crate::task::Task;

pub use decoding::{DecodeError, DecodedBatch, check_message, decode};
pub use encoding::{headers, message_id};
pub(crate) use schema::item_field;
pub use schema::{batch_schema, contract_json};

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

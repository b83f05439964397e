//! Building a batch from rows, its message id and headers, and encoding it
//! as one Arrow IPC stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, FixedSizeListArray, RecordBatch, UInt8Array, UInt32Array};
use arrow_buffer::ScalarBuffer;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use sha2::{Digest, Sha256};

use super::{
    Batch, BatchRow, BatchStats, HeaderValue, IpcCompression, SCHEMA_VERSION, batch_schema, header,
    item_field, message_capacity,
};
use crate::task::{MaskConfig, RowOut, Task, fill_row};

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

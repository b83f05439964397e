//! Batch messages built in place: Arrow's stream encoder lays the message
//! out, and the three `[rows, L]` columns are filled straight into it. No
//! column buffers are allocated and none is copied into the message; the
//! bytes are the same as [`Batch::into_encoded`]'s.
//!
//! How: the encoder is handed a batch whose three `[rows, L]` columns all
//! point at one shared buffer of zeros. An uncompressed stream encoder
//! passes array buffers through as they are, so the places where that
//! buffer comes back are the places of the columns in the message. Input
//! and target are written there as each row's values and padding, and
//! [`finish_row`] draws the mask (or shifts the target) in place.
//! Compressed messages take the ordinary path (the codec must see the data).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, FixedSizeListArray, RecordBatch, UInt8Array, UInt32Array};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteOptions, StreamEncoder, write_message,
};
use arrow_schema::SchemaRef;

use crate::PAD_TOKEN;
use crate::batch::{
    Batch, BatchRow, BatchStats, HeaderValue, IpcCompression, batch_schema, headers, item_field,
    message_id,
};
use crate::task::{MaskConfig, RowOut, Task, finish_row};

/// The end-of-stream marker of the IPC stream format: continuation, then a
/// zero metadata length.
const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// One encoded batch message and what goes beside it on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBatch {
    /// The deterministic message id ([`Batch::message_id`]).
    pub message_id: String,
    /// The Arrow IPC stream.
    pub bytes: Vec<u8>,
    /// The message headers ([`Batch::headers`]).
    pub headers: BTreeMap<&'static str, HeaderValue>,
    /// Rows, real tokens and padding.
    pub stats: BatchStats,
}

/// The stream layout of one (task, bucket length, epoch): its schema, the
/// schema message, and an encoder that has already emitted it.
struct Layout {
    schema: SchemaRef,
    schema_message: Vec<u8>,
    encoder: StreamEncoder,
}

impl Layout {
    fn new(task: Task, l: usize, epoch: u32) -> Layout {
        let schema = batch_schema(task, l, epoch);
        let opts = IpcWriteOptions::default();
        let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            &schema,
            &mut DictionaryTracker::new(false),
            &opts,
        );
        let mut schema_message = Vec::new();
        write_message(&mut schema_message, encoded, &opts).expect("schema message to memory");
        let mut encoder = StreamEncoder::try_new(&schema).expect("batch schema is encodable");
        // The first batch carries the schema message; an empty one takes it.
        encoder
            .encode(&RecordBatch::new_empty(schema.clone()))
            .expect("empty batch");
        Layout {
            schema,
            schema_message,
            encoder,
        }
    }
}

/// Builds batch messages; keeps one [`Layout`] per (task, bucket, epoch)
/// it has seen, so make one per producer task, not one per message.
#[derive(Default)]
pub struct BatchEncoder {
    layouts: HashMap<(Task, usize, u32), Layout>,
    /// Stands in for every `[rows, L]` column while the message is laid
    /// out; never written.
    zeros: Buffer,
}

impl BatchEncoder {
    /// A new encoder.
    pub fn new() -> BatchEncoder {
        BatchEncoder::default()
    }

    /// Builds and encodes the batch of `rows` for bucket length
    /// `bucket_len`: the same message, id and headers as [`Batch::build`]
    /// then [`Batch::into_encoded`].
    ///
    /// # Panics
    /// If a row is longer than `bucket_len` or empty (validation rules these out).
    pub fn encode<R: Borrow<BatchRow>>(
        &mut self,
        task: Task,
        mask: &MaskConfig,
        epoch: u32,
        bucket_len: usize,
        rows: &[R],
        compression: Option<IpcCompression>,
    ) -> EncodedBatch {
        for r in rows {
            let n = r.borrow().values.len();
            assert!(n > 0 && n <= bucket_len, "row does not fit its bucket");
        }
        let lengths: Vec<u32> = rows
            .iter()
            .map(|r| r.borrow().values.len() as u32)
            .collect();
        let stats = BatchStats::of(bucket_len, &lengths);
        let id = message_id(
            task,
            epoch,
            bucket_len,
            rows.iter().map(|r| r.borrow().seq_id.as_str()),
        );
        let bytes = match compression {
            Some(_) => Batch::build(task, mask, epoch, bucket_len, rows).into_encoded(compression),
            None => self.in_place(task, mask, epoch, bucket_len, rows, lengths),
        };
        EncodedBatch {
            message_id: id,
            bytes,
            headers: headers(task, stats),
            stats,
        }
    }

    /// The uncompressed message, its columns filled in place.
    fn in_place<R: Borrow<BatchRow>>(
        &mut self,
        task: Task,
        mask: &MaskConfig,
        epoch: u32,
        l: usize,
        rows: &[R],
        lengths: Vec<u32>,
    ) -> Vec<u8> {
        let n = rows.len();
        let cells = n * l;
        if self.zeros.len() < cells {
            self.zeros = Buffer::from(vec![0u8; cells.next_power_of_two()]);
        }
        let zeros = self.zeros.slice_with_length(0, cells);
        let layout = self
            .layouts
            .entry((task, l, epoch))
            .or_insert_with(|| Layout::new(task, l, epoch));
        let column = || -> ArrayRef {
            let values = UInt8Array::new(ScalarBuffer::new(zeros.clone(), 0, cells), None);
            Arc::new(FixedSizeListArray::new(
                item_field(),
                l as i32,
                Arc::new(values),
                None,
            ))
        };
        let mut ids = StringBuilder::with_capacity(n, n * 16);
        let mut labels = Int32Builder::with_capacity(n);
        for r in rows {
            let r = r.borrow();
            ids.append_value(&r.seq_id);
            labels.append_option(r.label);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(UInt32Array::from(lengths)),
            column(),
            column(),
            column(),
            Arc::new(labels.finish()),
        ];
        let template =
            RecordBatch::try_new(layout.schema.clone(), cols).expect("batch matches its schema");
        let parts = layout.encoder.encode(&template).expect("ipc encode");
        let size = layout.schema_message.len()
            + parts.iter().map(Buffer::len).sum::<usize>()
            + END_OF_STREAM.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&layout.schema_message);
        // Input and target are written as each row's values then padding,
        // the loss mask as zeros; `finish_row` does the rest in place.
        let mut at = Vec::with_capacity(3);
        for part in &parts {
            if part.as_ptr() == zeros.as_ptr() && part.len() == cells {
                at.push(out.len());
                if at.len() == 3 {
                    out.resize(out.len() + cells, 0);
                } else {
                    for r in rows {
                        let values = &r.borrow().values;
                        out.extend_from_slice(values);
                        out.resize(out.len() + l - values.len(), PAD_TOKEN);
                    }
                }
            } else {
                out.extend_from_slice(part.as_slice());
            }
        }
        out.extend_from_slice(&END_OF_STREAM);
        let [input_at, target_at, mask_at] = at[..] else {
            panic!("the stream encoder copied the [rows, L] columns")
        };
        let (head, loss_mask) = out.split_at_mut(mask_at);
        let (head, target) = head.split_at_mut(target_at);
        let input = &mut head[input_at..input_at + cells];
        for (r, row) in rows.iter().enumerate() {
            let row = row.borrow();
            let span = r * l..(r + 1) * l;
            finish_row(
                task,
                mask,
                epoch,
                &row.seq_id,
                row.values.len(),
                RowOut {
                    input: &mut input[span.clone()],
                    target: &mut target[span.clone()],
                    loss_mask: &mut loss_mask[span],
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::decode;

    fn rows(n: usize, l: usize, salt: usize) -> Vec<BatchRow> {
        (0..n)
            .map(|i| BatchRow {
                seq_id: format!("seq-{salt}-{i}"),
                values: (0..(1 + (i * 37 + salt) % l))
                    .map(|j| ((i + j * 7 + salt) % 41) as u8)
                    .collect(),
                label: (i % 3 != 0).then_some((i % 5) as i32),
            })
            .collect()
    }

    #[test]
    fn messages_are_byte_for_byte_the_arrow_writers() {
        let mask = MaskConfig {
            seed: 9,
            ..MaskConfig::default()
        };
        let mut enc = BatchEncoder::new();
        // Buckets seen again reuse their layout; a larger batch regrows the
        // stand-in buffer.
        for (salt, (n, l)) in [(3, 16), (40, 512), (3, 16), (7, 2048), (1, 30720)]
            .into_iter()
            .enumerate()
        {
            for task in [Task::Masked, Task::Next, Task::Classify] {
                for epoch in [0, 2] {
                    let rs = rows(n, l, salt);
                    let want = Batch::build(task, &mask, epoch, l, &rs);
                    let got = enc.encode(task, &mask, epoch, l, &rs, None);
                    assert_eq!(got.message_id, want.message_id());
                    assert_eq!(got.headers, want.headers());
                    assert_eq!(got.stats, want.stats());
                    let bytes = want.clone().into_encoded(None);
                    assert_eq!(got.bytes.len(), bytes.len(), "{task:?} n={n} l={l}");
                    assert!(got.bytes == bytes, "{task:?} n={n} l={l}: bytes differ");
                    assert_eq!(decode(got.bytes).unwrap().to_batch(), want);
                }
            }
        }
    }

    #[test]
    fn compressed_messages_take_the_ordinary_path_and_decode() {
        let rs = rows(5, 64, 1);
        let mask = MaskConfig::default();
        let got =
            BatchEncoder::new().encode(Task::Masked, &mask, 1, 64, &rs, Some(IpcCompression::Lz4));
        let want = Batch::build(Task::Masked, &mask, 1, 64, &rs);
        assert_eq!(got.message_id, want.message_id());
        assert_eq!(decode(got.bytes).unwrap().to_batch(), want);
    }

    #[test]
    #[should_panic(expected = "row does not fit its bucket")]
    fn a_row_longer_than_its_bucket_is_refused() {
        let rs = rows(2, 64, 0);
        BatchEncoder::new().encode(Task::Next, &MaskConfig::default(), 0, 8, &rs, None);
    }
}

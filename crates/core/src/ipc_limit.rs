//! Checks on the raw bytes of an Arrow IPC stream before any decoding: every buffer inside its message body, and a bound on what the compressed ones decompress to.
//!
//! Both guard the Arrow reader against hostile bytes (found by the fuzz
//! targets in `fuzz/`): a compressed IPC buffer starts with its uncompressed
//! length, and the reader allocates that much up front, so eight bytes could
//! ask for exabytes; and the reader slices buffers out of the body without
//! checking their bounds, so a bad offset panics; and its validation
//! multiplies lengths unchecked. [`check_decompressed_size`]
//! walks the stream's messages (flatbuffer-verified metadata, bodies inside
//! the bytes) before the reader sees them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::{MessageHeader, root_as_message};

/// The marker before each message's metadata length in current streams.
const CONTINUATION: [u8; 4] = [0xff; 4];
/// Bytes of the uncompressed-length prefix of a compressed buffer.
const PREFIX: usize = 8;

/// Why a stream is refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpcLimitError {
    /// Its compressed buffers declare more than the limit.
    #[error("compressed buffers declare over {0} uncompressed bytes")]
    OverLimit(u64),
    /// Not a stream this walk can follow (the reader would refuse it too).
    #[error("{0}")]
    Malformed(String),
}

/// Checks that every buffer of every record or dictionary batch lies inside
/// its message body, and that the compressed ones declare at most `limit`
/// uncompressed bytes in all.
pub fn check_decompressed_size(bytes: &[u8], limit: u64) -> Result<(), IpcLimitError> {
    match over_limit(bytes, limit) {
        Ok(false) => Ok(()),
        Ok(true) => Err(IpcLimitError::OverLimit(limit)),
        Err(reason) => Err(IpcLimitError::Malformed(reason)),
    }
}

/// Whether the declared total passes `limit`.
fn over_limit(bytes: &[u8], limit: u64) -> Result<bool, String> {
    let mut pos = 0usize;
    let mut declared = 0u64;
    while pos < bytes.len() {
        let mut word = read4(bytes, pos)?;
        pos += 4;
        if word == CONTINUATION {
            word = read4(bytes, pos)?;
            pos += 4;
        }
        let meta_len = i32::from_le_bytes(word);
        if meta_len == 0 {
            break; // end of stream
        }
        let meta_len = usize::try_from(meta_len)
            .map_err(|_| format!("negative metadata length {meta_len}"))?;
        let meta = slice(bytes, pos, meta_len)?;
        pos += meta_len;
        let message = root_as_message(meta).map_err(|e| format!("bad message metadata: {e}"))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| format!("negative body length {}", message.bodyLength()))?;
        let body = slice(bytes, pos, body_len)?;
        pos += body_len;
        let record = match message.header_type() {
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => message
                .header_as_dictionary_batch()
                .and_then(|dictionary| dictionary.data()),
            _ => None,
        };
        let Some(record) = record else { continue };
        // Lengths over 2^32 let the reader's validation overflow (a fixed
        // size list's length times its size); no batch comes near them.
        let lengths = std::iter::once(record.length())
            .chain(record.nodes().into_iter().flatten().map(|n| n.length()));
        for length in lengths {
            if !(0..=i64::from(u32::MAX)).contains(&length) {
                return Err(format!("array length {length} out of range"));
            }
        }
        let compressed = record.compression().is_some();
        for buffer in record.buffers().into_iter().flatten() {
            let (offset, length) = (buffer.offset(), buffer.length());
            let offset = usize::try_from(offset).map_err(|_| "negative buffer offset")?;
            let length = usize::try_from(length).map_err(|_| "negative buffer length")?;
            // The reader slices the body without checking (arrow-ipc 60
            // panics on a buffer past the body's end).
            let data = slice(body, offset, length).map_err(|_| {
                format!("buffer at {offset}+{length} past the {body_len}-byte body")
            })?;
            if !compressed || length == 0 {
                continue;
            }
            let prefix = data
                .get(..PREFIX)
                .ok_or("compressed buffer shorter than its length prefix")?;
            let size = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
            // -1: stored uncompressed, the rest of the buffer as is.
            let size = if size == -1 {
                (length - PREFIX) as u64
            } else {
                u64::try_from(size).map_err(|_| format!("negative uncompressed length {size}"))?
            };
            declared = declared.saturating_add(size);
            if declared > limit {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Decodes an IPC stream of at most `max_batches` record batches, after
/// [`check_decompressed_size`]. The Arrow reader still asserts on some
/// malformed inputs the checks above do not foresee (the fuzz targets found
/// misaligned buffers); such a panic is caught and reported as malformed
/// input, so hostile bytes cost a consumer an error, never its process.
pub fn read_stream(
    bytes: Vec<u8>,
    limit: u64,
    max_batches: usize,
) -> Result<Vec<RecordBatch>, IpcLimitError> {
    check_decompressed_size(&bytes, limit)?;
    let decode = move || -> Result<Vec<RecordBatch>, String> {
        let mut buf = Buffer::from(bytes);
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while !buf.is_empty() {
            match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                Some(b) => batches.push(b),
                None if buf.is_empty() => break,
                None => {}
            }
            if batches.len() > max_batches {
                return Err(format!("more than {max_batches} record batch(es)"));
            }
        }
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(batches)
    };
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(result) => result.map_err(IpcLimitError::Malformed),
        Err(_) => Err(IpcLimitError::Malformed(
            "the Arrow reader failed on malformed input".into(),
        )),
    }
}

fn read4(bytes: &[u8], pos: usize) -> Result<[u8; 4], String> {
    Ok(slice(bytes, pos, 4)?.try_into().expect("4 bytes"))
}

fn slice(bytes: &[u8], pos: usize, len: usize) -> Result<&[u8], String> {
    pos.checked_add(len)
        .and_then(|end| bytes.get(pos..end))
        .ok_or_else(|| format!("truncated: {len} bytes at {pos} past the end"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, BatchRow, IpcCompression};
    use crate::task::{MaskConfig, Task};

    fn encoded(compression: Option<IpcCompression>) -> Vec<u8> {
        let rows: Vec<BatchRow> = (0..3)
            .map(|i| BatchRow {
                seq_id: format!("r{i}"),
                values: vec![i as u8; 600],
                label: None,
            })
            .collect();
        Batch::build(Task::Masked, &MaskConfig::default(), 0, 1024, &rows).encode(compression)
    }

    #[test]
    fn real_streams_pass_and_a_lower_limit_refuses_compressed_ones() {
        for c in [None, Some(IpcCompression::Lz4), Some(IpcCompression::Zstd)] {
            let bytes = encoded(c);
            assert_eq!(check_decompressed_size(&bytes, 1 << 20), Ok(()), "{c:?}");
            if c.is_some() {
                assert_eq!(
                    check_decompressed_size(&bytes, 100),
                    Err(IpcLimitError::OverLimit(100)),
                    "{c:?}"
                );
            }
        }
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_decoding() {
        let mut bytes = encoded(Some(IpcCompression::Lz4));
        // Every lz4 frame starts with its magic; the 8 bytes before it are
        // the buffer's uncompressed length.
        let magic = [0x04, 0x22, 0x4d, 0x18];
        let at = bytes.windows(4).position(|w| w == magic).unwrap();
        bytes[at - 8..at].copy_from_slice(&(1i64 << 60).to_le_bytes());
        assert_eq!(
            check_decompressed_size(&bytes, 1 << 20),
            Err(IpcLimitError::OverLimit(1 << 20))
        );
        assert!(matches!(
            crate::batch::decode(bytes),
            Err(crate::batch::DecodeError::DecompressesTooLarge(_))
        ));
    }

    #[test]
    fn truncated_and_garbage_streams_are_errors_not_panics() {
        let bytes = encoded(Some(IpcCompression::Zstd));
        for cut in [1, 4, 7, 8, 100, bytes.len() - 1] {
            let _ = check_decompressed_size(&bytes[..cut], 1 << 20);
        }
        assert!(check_decompressed_size(&[0xff, 0xff, 0xff, 0xff, 0x10], 1 << 20).is_err());
        assert!(
            check_decompressed_size(&[0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff], 1).is_err()
        );
    }
}

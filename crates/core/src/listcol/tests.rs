//! Tests of the list-column decoder's internals: bit unpacking, hybrid
//! levels, and refusal of corrupt or oversized pages.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::types::UInt8Type;

use super::ListColumn;
use super::ListRows;
use super::decoder::Decoder;
use super::hybrid::{def_levels, hybrid, row_starts, unpack, unpack_bytes};

#[test]
fn unpack_reads_lsb_first_groups_of_any_width() {
    // 3-bit values 0..8 packed LSB first: 0b_111_110_101_100_011_010_001_000.
    let packed = 0b1111_1010_1100_0110_1000_1000u32.to_le_bytes();
    let mut got = Vec::new();
    unpack(&packed[..3], 3, 8, |v| got.push(v));
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    let mut bytes = vec![9];
    unpack_bytes(&packed[..3], 3, 8, &mut bytes);
    assert_eq!(bytes, [9, 0, 1, 2, 3, 4, 5, 6, 7]);
    // A partial last group; the same values two groups on.
    let mut bytes = Vec::new();
    unpack_bytes(
        &[packed[0], packed[1], packed[2], packed[0]],
        3,
        10,
        &mut bytes,
    );
    assert_eq!(bytes, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
    // 12 bits wide: 0xabc then 0x123.
    let mut got = Vec::new();
    unpack(&[0xbc, 0x3a, 0x12], 12, 2, |v| got.push(v));
    assert_eq!(got, vec![0xabc, 0x123]);
}

/// A decoder over a small real file (rows of u8 lists).
fn small_decoder() -> Decoder<UInt8Type> {
    use arrow_array::RecordBatch;
    use arrow_array::builder::{ListBuilder, UInt8Builder};
    let mut b = ListBuilder::new(UInt8Builder::new());
    for i in 0..4u8 {
        b.values().append_slice(&[i, i + 1, i + 2]);
        b.append(true);
    }
    let batch = RecordBatch::try_from_iter([("values", Arc::new(b.finish()) as ArrayRef)]).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        file.try_clone().unwrap(),
    )
    .unwrap();
    let meta = reader.metadata().clone();
    let col = ListColumn::plan(&meta, reader.schema(), 0, &[0]).expect("the fast path applies");
    Decoder::new(col, Arc::new(file), meta, vec![0])
}

#[test]
fn a_page_that_declares_billions_of_values_is_refused_before_allocating() {
    let mut d = small_decoder();
    // A 6-byte repetition section: one run of 2^31 - 1 row starts.
    let mut rep = Vec::new();
    let mut h = (i32::MAX as u64) << 1;
    while h >= 0x80 {
        rep.push((h as u8) | 0x80);
        h >>= 7;
    }
    rep.extend([h as u8, 0]);
    let err = d.levels(&rep, &[], i32::MAX as usize).unwrap_err();
    assert!(
        err.to_string().contains("declares 2147483647 values"),
        "{err}"
    );
    assert!(d.page.starts.capacity() < 1 << 20);
    // A dictionary page of 8 bytes that declares 2^40 entries.
    let err = d.plain(&[0; 8], 1 << 40, true).unwrap_err();
    assert!(err.to_string().contains("fewer than"), "{err}");
    assert!(d.dict.capacity() < 1 << 20);
    // The file itself still decodes.
    let rows = small_decoder().next_rows(10).unwrap();
    assert_eq!(rows.len(), 4);
}

proptest::proptest! {
    /// Corrupt pages give errors, never panics.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        width in 0u8..=32,
        n in 0usize..300,
    ) {
        let (mut starts, mut scratch, mut def) = (Vec::new(), Vec::new(), Vec::new());
        let mut wide: Vec<u32> = Vec::new();
        let mut small: Vec<u8> = Vec::new();
        let _ = row_starts(&data, n, &mut starts, &mut scratch);
        let _ = def_levels(&data, 3, n, &mut def);
        let _ = hybrid(&data, width, n, &mut wide);
        let _ = hybrid(&data, width.min(8), n, &mut small);
        wide.clear();
        if let Ok(()) = hybrid(&data, width, n, &mut wide) {
            proptest::prop_assert_eq!(wide.len(), n);
        }
    }
}

#[test]
fn hybrid_levels_mix_runs_and_groups_and_reject_levels_above_max() {
    // RLE run of five 1s (header 5<<1), then one bit-packed group
    // (header 1<<1|1) of 1-bit values 0,1,0,1,1,1,1,1.
    let data = [10, 1, 3, 0b1111_1010];
    let mut out = Vec::new();
    def_levels(&data, 1, 13, &mut out).unwrap();
    assert_eq!(out, vec![1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1]);
    let (mut starts, mut scratch) = (Vec::new(), Vec::new());
    row_starts(&data, 13, &mut starts, &mut scratch).unwrap();
    assert_eq!(starts, vec![5, 7]);
    // All at the maximum: nothing written.
    def_levels(&[26, 1], 1, 13, &mut out).unwrap();
    assert!(out.is_empty());
    // A run of 2s is above max level 1 (at width 1 the run's value byte
    // is read whole).
    let err = def_levels(&[4, 2], 1, 2, &mut out).unwrap_err();
    assert!(err.to_string().contains("level above 1"), "{err}");
    let err = row_starts(&[4, 2], 2, &mut starts, &mut scratch).unwrap_err();
    assert!(err.to_string().contains("level above 1"), "{err}");
    let err = def_levels(&[10], 1, 5, &mut out).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

//! Property: the fast list decoder gives exactly what the Arrow reader gives,
//! row for row, for any list-of-integers column (null lists, empty lists,
//! null elements, several pages, row groups and writer settings), read in
//! any chunk sizes over any row groups; and it declines layouts it does not
//! decode.

use std::fs::File;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, PrimitiveBuilder};
use arrow_array::types::{Int32Type, Int64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{WriterProperties, WriterVersion};
use pretext_core::listcol::ListColumn;
use proptest::prelude::*;

mod listcol_support;

/// A row: `None` is a null list; `Some(None)` elements are null elements.
type Row = Option<Vec<Option<u8>>>;

fn row() -> impl Strategy<Value = Row> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(vec![])),
        2 => prop::collection::vec(
            prop_oneof![12 => (0u8..=40).prop_map(Some), 1 => Just(None)],
            1..300
        )
        .prop_map(Some),
        6 => prop::collection::vec((0u8..=40).prop_map(Some), 1..900).prop_map(Some),
    ]
}

fn list_of<T: ArrowPrimitiveType>(
    rows: &[Row],
    list_nullable: bool,
    item_nullable: bool,
    cast: impl Fn(u8) -> T::Native,
) -> ArrayRef {
    let item = Field::new("item", T::DATA_TYPE, item_nullable);
    let mut b = ListBuilder::new(PrimitiveBuilder::<T>::new()).with_field(Arc::new(item));
    for r in rows {
        match r {
            Some(vals) => {
                for v in vals {
                    match v {
                        Some(v) => b.values().append_value(cast(*v)),
                        None if item_nullable => b.values().append_null(),
                        None => b.values().append_value(cast(0)),
                    }
                }
                b.append(true);
            }
            None if list_nullable => b.append(false),
            None => b.append(true),
        }
    }
    Arc::new(b.finish())
}

struct Written {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn write(values: ArrayRef, list_nullable: bool, props: WriterProperties) -> Written {
    let ids: ArrayRef = Arc::new(arrow_array::Int64Array::from_iter_values(
        0..values.len() as i64,
    ));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("values", values.data_type().clone(), list_nullable),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, values]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    Written { _dir: dir, path }
}

/// The values column (index 1) over `groups`, read both ways.
fn both_ways(
    path: &std::path::Path,
    groups: Vec<usize>,
    chunk: usize,
) -> (Vec<ArrayRef>, Vec<ArrayRef>) {
    listcol_support::both_ways(path, 1, groups, chunk)
}

fn same(arrow: &[ArrayRef], fast: &[ArrayRef]) -> Result<(), TestCaseError> {
    prop_assert_eq!(arrow.len(), fast.len(), "chunk counts");
    for (i, (a, f)) in arrow.iter().zip(fast).enumerate() {
        prop_assert_eq!(a.data_type(), f.data_type(), "chunk {}", i);
        prop_assert_eq!(a.to_data(), f.to_data(), "chunk {}", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fast_decoder_matches_the_arrow_reader(
        rows in prop::collection::vec(row(), 1..60),
        list_nullable in any::<bool>(),
        item_nullable in any::<bool>(),
        ty in 0u8..3,
        dictionary in any::<bool>(),
        v2 in any::<bool>(),
        snappy in any::<bool>(),
        page_rows in 1usize..50,
        group in 1usize..40,
        chunk in 1usize..70,
        skip_first_group in any::<bool>(),
    ) {
        let values = match ty {
            0 => list_of::<UInt8Type>(&rows, list_nullable, item_nullable, |v| v),
            1 => list_of::<Int32Type>(&rows, list_nullable, item_nullable, |v| i32::from(v) * 1000 - 7),
            _ => list_of::<Int64Type>(&rows, list_nullable, item_nullable, |v| i64::from(v) << 40),
        };
        let version = if v2 { WriterVersion::PARQUET_2_0 } else { WriterVersion::PARQUET_1_0 };
        let props = WriterProperties::builder()
            .set_writer_version(version)
            .set_dictionary_enabled(dictionary)
            .set_encoding(Encoding::PLAIN)
            .set_compression(if snappy { Compression::SNAPPY } else { Compression::UNCOMPRESSED })
            .set_data_page_row_count_limit(page_rows)
            .set_write_batch_size(page_rows)
            .set_max_row_group_row_count(Some(group))
            .build();
        let file = write(values, list_nullable, props);
        let n_groups = rows.len().div_ceil(group);
        let groups: Vec<usize> = (usize::from(skip_first_group && n_groups > 1)..n_groups).collect();
        let (arrow, fast) = both_ways(&file.path, groups, chunk);
        same(&arrow, &fast)?;
    }
}

#[test]
fn tiny_data_pages_split_long_rows_across_pages_and_still_match() {
    // One 5,000-step row per row group, pages of at most ~1 KiB: a row
    // spans many pages (continuation levels at page starts).
    let rows: Vec<Row> = (0..6)
        .map(|r| Some((0..5000).map(|i| Some(((i * 7 + r) % 41) as u8)).collect()))
        .collect();
    let values = list_of::<UInt8Type>(&rows, true, true, |v| v);
    let props = WriterProperties::builder()
        .set_data_page_size_limit(1024)
        .set_write_batch_size(64)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(2))
        .build();
    let file = write(values, true, props);
    let (arrow, fast) = both_ways(&file.path, vec![0, 1, 2], 1);
    assert_eq!(arrow.len(), 6);
    same(&arrow, &fast).unwrap();
}

#[test]
fn layouts_it_does_not_decode_are_left_to_the_arrow_reader() {
    let rows: Vec<Row> = (0..10).map(|_| Some(vec![Some(3); 20])).collect();
    let meta_of = |values: ArrayRef, props: WriterProperties| {
        let file = write(values, true, props);
        let meta = ArrowReaderMetadata::load(&File::open(&file.path).unwrap(), Default::default())
            .unwrap();
        ListColumn::plan(meta.metadata(), meta.schema(), 1, &[0]).is_some()
    };
    let u8s = || list_of::<UInt8Type>(&rows, true, true, |v| v);
    assert!(
        meta_of(u8s(), WriterProperties::builder().build()),
        "the usual layout is taken"
    );
    // DELTA_BINARY_PACKED values.
    let delta = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_encoding(Encoding::DELTA_BINARY_PACKED)
        .build();
    assert!(!meta_of(u8s(), delta));
    // Floats, and large lists.
    let floats = {
        let mut b = ListBuilder::new(arrow_array::builder::Float32Builder::new());
        for _ in 0..10 {
            b.values().append_value(1.5);
            b.append(true);
        }
        Arc::new(b.finish()) as ArrayRef
    };
    assert!(!meta_of(floats, WriterProperties::builder().build()));
    let large = {
        let mut b =
            arrow_array::builder::LargeListBuilder::new(PrimitiveBuilder::<UInt8Type>::new());
        for _ in 0..10 {
            b.values().append_value(1);
            b.append(true);
        }
        Arc::new(b.finish()) as ArrayRef
    };
    assert!(!meta_of(large, WriterProperties::builder().build()));
}

#[test]
fn wide_dictionary_indices_match() {
    // 3,000 distinct values: dictionary indices 12 bits wide.
    let mut b = ListBuilder::new(PrimitiveBuilder::<Int64Type>::new());
    for r in 0..30i64 {
        for i in 0..100 {
            b.values().append_value(r * 100 + i);
        }
        b.append(true);
    }
    let values: ArrayRef = Arc::new(b.finish());
    let props = WriterProperties::builder()
        .set_dictionary_enabled(true)
        .set_data_page_row_count_limit(7)
        .set_write_batch_size(7)
        .build();
    let file = write(values, true, props);
    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(File::open(&file.path).unwrap()).unwrap(),
    )
    .clone();
    let encodings: Vec<Encoding> = meta.row_group(0).column(1).encodings().collect();
    assert!(
        encodings.contains(&Encoding::RLE_DICTIONARY),
        "{encodings:?}"
    );
    let (arrow, fast) = both_ways(&file.path, vec![0], 4);
    assert_eq!(arrow.len(), 8);
    same(&arrow, &fast).unwrap();
}

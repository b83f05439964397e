//! Property: any valid data, written with arrow-rs in any accepted layout,
//! validates with zero rejections and comes back value for value.

use std::sync::Arc;

use arrow_array::builder::{GenericListBuilder, Int64Builder, PrimitiveBuilder, StringBuilder};
use arrow_array::types::{Int8Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt64Type};
use arrow_array::{ArrayRef, ArrowPrimitiveType, OffsetSizeTrait, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use pretext_core::input::ValidatingReader;
use pretext_core::report::validate_file;
use pretext_core::validate::{IdRegistry, ValidationConfig};
use proptest::prelude::*;

fn list_of<O: OffsetSizeTrait, T: ArrowPrimitiveType>(rows: &[Vec<u8>]) -> ArrayRef
where
    T::Native: From<u8>,
{
    let mut b = GenericListBuilder::<O, _>::new(PrimitiveBuilder::<T>::new());
    for r in rows {
        for &v in r {
            b.values().append_value(T::Native::from(v));
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn values_column(layout: u8, rows: &[Vec<u8>]) -> ArrayRef {
    match layout {
        0 => list_of::<i32, UInt8Type>(rows),
        1 => list_of::<i64, UInt16Type>(rows),
        2 => list_of::<i32, Int32Type>(rows),
        3 => list_of::<i64, Int64Type>(rows),
        4 => list_of::<i32, UInt64Type>(rows),
        _ => {
            // i8 has no From<u8>; values 0..=40 fit.
            let mut b = GenericListBuilder::<i32, _>::new(PrimitiveBuilder::<Int8Type>::new());
            for r in rows {
                for &v in r {
                    b.values().append_value(v as i8);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_valid_data_has_no_rejections(
        rows in prop::collection::vec(prop::collection::vec(0u8..=40, 16..200), 1..40),
        layout in 0u8..6,
        int_ids in any::<bool>(),
        group in 1usize..16,
    ) {
        let cfg = ValidationConfig { min_len: 16, max_len: 200 };
        let values = values_column(layout, &rows);
        let ids: ArrayRef = if int_ids {
            let mut b = Int64Builder::new();
            (0..rows.len()).for_each(|i| b.append_value(i as i64 * 3 - 7));
            Arc::new(b.finish())
        } else {
            let mut b = StringBuilder::new();
            (0..rows.len()).for_each(|i| b.append_value(format!("r{i}")));
            Arc::new(b.finish())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", ids.data_type().clone(), false),
            Field::new("values", values.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![ids, values]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).build();
        let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let report = validate_file(&path, cfg, &mut IdRegistry::default(), None, 1 + group % 2);
        prop_assert!(report.readable, "{:?}", report.error);
        prop_assert_eq!(report.rows, rows.len() as u64);
        prop_assert_eq!(report.valid, rows.len() as u64);
        prop_assert!(report.rejected.is_empty(), "{:?}", report.rejected);

        let mut reader = ValidatingReader::open(&path, cfg, None, None).unwrap();
        let mut back = Vec::new();
        let mut ids = IdRegistry::default();
        while let Some(chunk) = reader.next_chunk(&mut ids).unwrap() {
            back.extend(chunk.verdict.rows.into_iter().map(|r| r.values));
        }
        prop_assert_eq!(back, rows);
    }
}

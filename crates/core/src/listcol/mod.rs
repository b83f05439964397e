//! A fast decoder for the `values` column: Parquet pages of a list of
//! integers decoded straight into Arrow list buffers (levels run by run,
//! dictionary indices group by group). [`ListColumn::plan`] says when it
//! applies; every other layout stays with the Arrow reader.
//!
//! It gives exactly what `ParquetRecordBatchReader` gives for the same rows
//! (null lists, empty lists and null elements included), a few rows at a
//! time, holding one page in memory. The parquet crate's own path decodes
//! levels and dictionary indices value by value through generic buffers and
//! was two thirds of the producer's CPU time.

mod decoder;
mod hybrid;
mod rows;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_schema::{DataType, FieldRef, Schema};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

use decoder::Decoder;

type Result<T> = std::result::Result<T, ParquetError>;

/// Most levels (values, nulls and empty lists) one data page may declare.
/// A page is decoded whole, so its own count sizes the buffers: bounded
/// here, a page costs at most ~150 MiB however its header lies. Writers'
/// pages are ~1 MiB (pyarrow, arrow-rs): about a million levels of this
/// data's 6-bit indices.
pub const MAX_PAGE_LEVELS: usize = 1 << 23;

fn corrupt(what: impl std::fmt::Display) -> ParquetError {
    ParquetError::General(format!("values column: {what}"))
}

/// A list-of-integers column this module can decode, and how its
/// definition levels read.
#[derive(Clone, Debug)]
pub struct ListColumn {
    leaf: usize,
    item: FieldRef,
    list_nullable: bool,
    item_nullable: bool,
    max_def: u8,
    physical: PhysicalType,
}

impl ListColumn {
    /// The plan for top-level field `root` of `schema` over `row_groups`, or
    /// `None` where the Arrow reader must do it: anything but a `List` of
    /// integers stored as INT32/INT64 with one level of repetition, or a
    /// column chunk with an encoding other than PLAIN, RLE and the
    /// dictionary encodings.
    pub fn plan(
        meta: &ParquetMetaData,
        schema: &Schema,
        root: usize,
        row_groups: &[usize],
    ) -> Option<Self> {
        let field = schema.fields().get(root)?;
        let DataType::List(item) = field.data_type() else {
            return None;
        };
        let sd = meta.file_metadata().schema_descr();
        let mut leaves = (0..sd.num_columns()).filter(|&c| sd.get_column_root_idx(c) == root);
        let leaf = leaves.next()?;
        if leaves.next().is_some() {
            return None;
        }
        let col = sd.column(leaf);
        let max_def = u8::from(field.is_nullable()) + 1 + u8::from(item.is_nullable());
        if col.max_rep_level() != 1 || col.max_def_level() != i16::from(max_def) {
            return None;
        }
        let physical = col.physical_type();
        let supported = match physical {
            PhysicalType::INT32 => matches!(
                item.data_type(),
                DataType::UInt8
                    | DataType::Int8
                    | DataType::UInt16
                    | DataType::Int16
                    | DataType::UInt32
                    | DataType::Int32
            ),
            PhysicalType::INT64 => matches!(item.data_type(), DataType::UInt64 | DataType::Int64),
            _ => false,
        };
        if !supported {
            return None;
        }
        for &g in row_groups {
            let chunk = meta.row_groups().get(g)?.columns().get(leaf)?;
            let plain = chunk.encodings().all(|e| {
                matches!(
                    e,
                    Encoding::PLAIN
                        | Encoding::RLE
                        | Encoding::PLAIN_DICTIONARY
                        | Encoding::RLE_DICTIONARY
                )
            });
            if !plain {
                return None;
            }
        }
        Some(Self {
            leaf,
            item: item.clone(),
            list_nullable: field.is_nullable(),
            item_nullable: item.is_nullable(),
            max_def,
            physical,
        })
    }

    /// A decoder of this column over `row_groups` of the file `meta`
    /// describes (in that order).
    pub fn decoder(
        self,
        file: Arc<File>,
        meta: Arc<ParquetMetaData>,
        row_groups: Vec<usize>,
    ) -> Box<dyn ListRows> {
        macro_rules! make {
            ($t:ty) => {
                Box::new(Decoder::<$t>::new(self, file, meta, row_groups))
            };
        }
        match self.item.data_type() {
            DataType::UInt8 => make!(UInt8Type),
            DataType::Int8 => make!(Int8Type),
            DataType::UInt16 => make!(UInt16Type),
            DataType::Int16 => make!(Int16Type),
            DataType::UInt32 => make!(UInt32Type),
            DataType::Int32 => make!(Int32Type),
            DataType::UInt64 => make!(UInt64Type),
            _ => make!(Int64Type),
        }
    }
}

/// Rows of a list column, a few at a time.
pub trait ListRows: Send {
    /// The next `n` rows as a list array (fewer at the end of the data).
    fn next_rows(&mut self, n: usize) -> Result<ArrayRef>;
}

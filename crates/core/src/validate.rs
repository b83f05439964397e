//! The row rules of the raw-input contract, applied to one Arrow record batch
//! at a time: which rows are valid, and why each other row is rejected.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, GenericListArray, OffsetSizeTrait, RecordBatch,
    StringArray,
};
use arrow_buffer::ArrowNativeType;
use arrow_schema::{DataType, Schema};
use serde::{Deserialize, Serialize};

use crate::MAX_VALUE;
use crate::split::Split;

/// Limits a row must respect. Defaults are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationConfig {
    /// Shortest accepted sequence (steps).
    pub min_len: usize,
    /// Longest accepted sequence (steps).
    pub max_len: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            min_len: 512,
            max_len: 30_720,
        }
    }
}

/// Why a row was rejected. Each is named in reports and in the quarantine file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// `id` is null.
    NullId,
    /// `id` was already seen in this dataset (the first occurrence is kept).
    DuplicateId,
    /// `values` is null.
    NullValues,
    /// `values` is an empty list.
    EmptyValues,
    /// `values` holds a null element.
    NullElement,
    /// `values` holds floating-point numbers: never cast silently.
    FloatValues,
    /// A value outside 0..=40.
    ValueOutOfRange,
    /// The length is outside the configured range.
    LengthOutOfRange,
    /// `split` is not `train`, `valid` or `test`.
    InvalidSplit,
}

impl RejectReason {
    /// Every reason, in report order.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::NullId,
        RejectReason::DuplicateId,
        RejectReason::NullValues,
        RejectReason::EmptyValues,
        RejectReason::NullElement,
        RejectReason::FloatValues,
        RejectReason::ValueOutOfRange,
        RejectReason::LengthOutOfRange,
        RejectReason::InvalidSplit,
    ];

    /// The snake_case name used in reports and quarantine files.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NullId => "null_id",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::NullValues => "null_values",
            RejectReason::EmptyValues => "empty_values",
            RejectReason::NullElement => "null_element",
            RejectReason::FloatValues => "float_values",
            RejectReason::ValueOutOfRange => "value_out_of_range",
            RejectReason::LengthOutOfRange => "length_out_of_range",
            RejectReason::InvalidSplit => "invalid_split",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class label as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    /// Integer class.
    Int(i64),
    /// Named class.
    Str(String),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Int(v) => write!(f, "{v}"),
            Label::Str(s) => f.write_str(s),
        }
    }
}

/// One valid input row, values narrowed to `u8` after the range check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqRow {
    /// Unique id (integers are written in decimal).
    pub id: String,
    /// The steps, each in 0..=40.
    pub values: Vec<u8>,
    /// Class, if labeled.
    pub label: Option<Label>,
    /// Dataset split (from the file, or the id hash when absent).
    pub split: Split,
    /// Index of the row within its record batch (add the chunk's
    /// `first_row` for the row number in the file).
    pub index: usize,
}

/// Problems with a file's schema: the file cannot be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// A required column is absent.
    #[error("missing required column `{0}`")]
    MissingColumn(&'static str),
    /// A column has a type the contract does not allow.
    #[error("column `{column}` has type {found}; expected {expected}")]
    BadType {
        /// The column.
        column: &'static str,
        /// Its type in the file.
        found: String,
        /// What the contract allows.
        expected: &'static str,
    },
}

/// How `values` is laid out in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValuesKind {
    /// A list of integers: checked and narrowed.
    Integer,
    /// A list of floats: every row is rejected with [`RejectReason::FloatValues`].
    Float,
}

/// Where the contract's columns sit in a file's schema, and their kinds.
#[derive(Clone, Debug)]
pub struct ColumnLayout {
    id: usize,
    values: usize,
    values_kind: ValuesKind,
    label: Option<usize>,
    split: Option<usize>,
}

fn is_integer(dt: &DataType) -> bool {
    dt.is_integer()
}

impl ColumnLayout {
    /// Index of the `id` column in the file's schema.
    pub fn id_column(&self) -> usize {
        self.id
    }

    /// Index of the `values` column in the file's schema.
    pub fn values_column(&self) -> usize {
        self.values
    }

    /// Checks a file schema against the contract.
    pub fn from_schema(schema: &Schema) -> Result<Self, SchemaError> {
        let find = |name: &'static str| schema.index_of(name).ok();
        let id = find("id").ok_or(SchemaError::MissingColumn("id"))?;
        let values = find("values").ok_or(SchemaError::MissingColumn("values"))?;
        let id_type = schema.field(id).data_type();
        if !(is_integer(id_type) || matches!(id_type, DataType::Utf8 | DataType::LargeUtf8)) {
            return Err(SchemaError::BadType {
                column: "id",
                found: id_type.to_string(),
                expected: "string or integer",
            });
        }
        let values_type = schema.field(values).data_type();
        let bad_values = || SchemaError::BadType {
            column: "values",
            found: values_type.to_string(),
            expected: "list or large_list of integers",
        };
        let child = match values_type {
            DataType::List(f) | DataType::LargeList(f) => f.data_type(),
            _ => return Err(bad_values()),
        };
        let values_kind = if is_integer(child) {
            ValuesKind::Integer
        } else if child.is_floating() {
            ValuesKind::Float
        } else {
            return Err(bad_values());
        };
        let label = find("label");
        if let Some(i) = label {
            let dt = schema.field(i).data_type();
            if !(is_integer(dt)
                || matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Null))
            {
                return Err(SchemaError::BadType {
                    column: "label",
                    found: dt.to_string(),
                    expected: "nullable integer or string",
                });
            }
        }
        let split = find("split");
        if let Some(i) = split {
            let dt = schema.field(i).data_type();
            if !matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Null) {
                return Err(SchemaError::BadType {
                    column: "split",
                    found: dt.to_string(),
                    expected: "string",
                });
            }
        }
        Ok(Self {
            id,
            values,
            values_kind,
            label,
            split,
        })
    }
}

/// Ids seen so far in one dataset (every file of one run), for the
/// uniqueness rule.
#[derive(Debug, Default)]
pub struct IdRegistry {
    seen: HashSet<String>,
}

impl IdRegistry {
    /// Records an id; false if it was seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        self.seen.insert(id.to_owned())
    }

    /// How many distinct ids have been seen.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no id has been seen.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The outcome of validating one record batch.
#[derive(Debug, Default)]
pub struct BatchVerdict {
    /// The valid rows, in file order.
    pub rows: Vec<SeqRow>,
    /// Rejected rows: index within the batch and the reason.
    pub rejected: Vec<(usize, RejectReason)>,
}

impl BatchVerdict {
    /// Rejected rows counted by reason.
    pub fn counts(&self) -> BTreeMap<RejectReason, u64> {
        let mut m = BTreeMap::new();
        for (_, r) in &self.rejected {
            *m.entry(*r).or_insert(0) += 1;
        }
        m
    }
}

pub(crate) fn to_utf8(col: &ArrayRef) -> StringArray {
    let cast = arrow_cast::cast(col, &DataType::Utf8).expect("integer or string casts to utf8");
    cast.as_string::<i32>().clone()
}

/// Checks the values of each row of an integer list column: sets a reason
/// for bad rows (where none is set yet) and narrows good rows to `u8`.
fn check_int_values<O: OffsetSizeTrait, T: ArrowPrimitiveType>(
    list: &GenericListArray<O>,
    cfg: &ValidationConfig,
    reasons: &mut [Option<RejectReason>],
    out: &mut [Vec<u8>],
) {
    let child = list.values().as_primitive::<T>();
    let data: &[T::Native] = child.values();
    let child_nulls = child.nulls().filter(|n| n.null_count() > 0);
    let offsets = list.value_offsets();
    let zero = T::Native::usize_as(0);
    let max = T::Native::usize_as(MAX_VALUE as usize);
    for (row, reason) in reasons.iter_mut().enumerate() {
        if reason.is_some() {
            continue;
        }
        if list.is_null(row) {
            *reason = Some(RejectReason::NullValues);
            continue;
        }
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        let len = end - start;
        if len == 0 {
            *reason = Some(RejectReason::EmptyValues);
            continue;
        }
        if let Some(nulls) = child_nulls
            && nulls.slice(start, len).null_count() > 0
        {
            *reason = Some(RejectReason::NullElement);
            continue;
        }
        if len < cfg.min_len || len > cfg.max_len {
            *reason = Some(RejectReason::LengthOutOfRange);
            continue;
        }
        let slice = &data[start..end];
        // min/max without early exit vectorises; bad rows are rare.
        let (lo, hi) = slice.iter().fold((slice[0], slice[0]), |(lo, hi), &v| {
            (if v < lo { v } else { lo }, if v > hi { v } else { hi })
        });
        if lo < zero || hi > max {
            *reason = Some(RejectReason::ValueOutOfRange);
            continue;
        }
        out[row] = slice.iter().map(|v| v.as_usize() as u8).collect();
    }
}

fn check_list<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    cfg: &ValidationConfig,
    reasons: &mut [Option<RejectReason>],
    out: &mut [Vec<u8>],
) {
    match list.value_type() {
        DataType::Int8 => check_int_values::<O, Int8Type>(list, cfg, reasons, out),
        DataType::Int16 => check_int_values::<O, Int16Type>(list, cfg, reasons, out),
        DataType::Int32 => check_int_values::<O, Int32Type>(list, cfg, reasons, out),
        DataType::Int64 => check_int_values::<O, Int64Type>(list, cfg, reasons, out),
        DataType::UInt8 => check_int_values::<O, UInt8Type>(list, cfg, reasons, out),
        DataType::UInt16 => check_int_values::<O, UInt16Type>(list, cfg, reasons, out),
        DataType::UInt32 => check_int_values::<O, UInt32Type>(list, cfg, reasons, out),
        DataType::UInt64 => check_int_values::<O, UInt64Type>(list, cfg, reasons, out),
        other => unreachable!("layout admitted a non-integer list of {other}"),
    }
}

fn labels(col: &ArrayRef) -> Vec<Option<Label>> {
    match col.data_type() {
        DataType::Null => vec![None; col.len()],
        DataType::Utf8 | DataType::LargeUtf8 => to_utf8(col)
            .iter()
            .map(|v| v.map(|s| Label::Str(s.to_owned())))
            .collect(),
        _ => {
            let cast = arrow_cast::cast(col, &DataType::Int64).expect("integer casts to i64");
            cast.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(Label::Int))
                .collect()
        }
    }
}

/// Validates one record batch of a file whose schema gave `layout`.
///
/// Ids are registered in `ids` for every row that has one, valid or not, so a
/// later row reusing the id is a duplicate whatever became of the first.
pub fn validate_batch(
    batch: &RecordBatch,
    layout: &ColumnLayout,
    cfg: &ValidationConfig,
    ids: &mut IdRegistry,
) -> BatchVerdict {
    let n = batch.num_rows();
    let mut reasons: Vec<Option<RejectReason>> = vec![None; n];
    let id_col = to_utf8(batch.column(layout.id));
    for (row, reason) in reasons.iter_mut().enumerate() {
        if id_col.is_null(row) {
            *reason = Some(RejectReason::NullId);
        }
    }

    let split_col = layout
        .split
        .map(|i| batch.column(i))
        .filter(|c| !matches!(c.data_type(), DataType::Null));
    let split_col = split_col.map(to_utf8);
    let mut splits = vec![Split::Train; n];
    for row in 0..n {
        let given = split_col
            .as_ref()
            .and_then(|c| (!c.is_null(row)).then(|| c.value(row)));
        splits[row] = match given {
            Some(s) => match Split::parse(s) {
                Some(s) => s,
                None => {
                    reasons[row].get_or_insert(RejectReason::InvalidSplit);
                    continue;
                }
            },
            None if id_col.is_null(row) => continue,
            None => Split::from_id_hash(id_col.value(row)),
        };
    }

    let mut values: Vec<Vec<u8>> = vec![Vec::new(); n];
    let values_col: &Arc<dyn Array> = batch.column(layout.values);
    match layout.values_kind {
        ValuesKind::Float => {
            for (row, reason) in reasons.iter_mut().enumerate() {
                if reason.is_none() {
                    *reason = Some(if values_col.is_null(row) {
                        RejectReason::NullValues
                    } else {
                        RejectReason::FloatValues
                    });
                }
            }
        }
        ValuesKind::Integer => match values_col.data_type() {
            DataType::List(_) => {
                check_list(values_col.as_list::<i32>(), cfg, &mut reasons, &mut values)
            }
            DataType::LargeList(_) => {
                check_list(values_col.as_list::<i64>(), cfg, &mut reasons, &mut values)
            }
            other => unreachable!("layout admitted values of type {other}"),
        },
    }

    // Uniqueness last: a row is a duplicate only if nothing else is wrong
    // with it, but every id is registered.
    for (row, reason) in reasons.iter_mut().enumerate() {
        if id_col.is_null(row) {
            continue;
        }
        let fresh = ids.insert(id_col.value(row));
        if !fresh && reason.is_none() {
            *reason = Some(RejectReason::DuplicateId);
        }
    }

    let mut label_col = layout.label.map(|i| labels(batch.column(i)));
    let mut verdict = BatchVerdict::default();
    for (row, reason) in reasons.into_iter().enumerate() {
        match reason {
            Some(r) => verdict.rejected.push((row, r)),
            None => verdict.rows.push(SeqRow {
                id: id_col.value(row).to_owned(),
                values: std::mem::take(&mut values[row]),
                label: label_col.as_mut().and_then(|l| l[row].take()),
                split: splits[row],
                index: row,
            }),
        }
    }
    verdict
}

//! Page headers checked before the parquet crate's Arrow reader sees them:
//! that reader sizes buffers from a page's own value count (a dictionary
//! page of a few bytes declaring 700 million values made it reserve
//! 5.68 GB), so every page of the columns it will read is walked first, and
//! a count the page's bytes cannot hold is refused as corrupt.

use std::fs::File;
use std::sync::Arc;

use parquet::basic::Type as PhysicalType;
use parquet::column::page::{Page, PageReader};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

use crate::listcol::MAX_PAGE_LEVELS;

/// Bits the PLAIN encoding of one value of `ty` takes at least (a byte
/// array: its 4-byte length).
fn min_plain_bits(ty: PhysicalType, type_length: i32) -> u64 {
    match ty {
        PhysicalType::BOOLEAN => 1,
        PhysicalType::INT32 | PhysicalType::FLOAT | PhysicalType::BYTE_ARRAY => 32,
        PhysicalType::INT64 | PhysicalType::DOUBLE => 64,
        PhysicalType::INT96 => 96,
        PhysicalType::FIXED_LEN_BYTE_ARRAY => 8 * u64::try_from(type_length.max(1)).unwrap_or(1),
    }
}

/// Walks every page of the leaf columns under the root columns `roots`
/// selects, in row groups `groups` of `file`: a dictionary page must hold
/// its declared values in its bytes, a data page at most
/// [`MAX_PAGE_LEVELS`] values.
pub fn check_pages(
    file: &Arc<File>,
    meta: &ParquetMetaData,
    groups: &[usize],
    roots: impl Fn(usize) -> bool,
) -> Result<()> {
    let schema = meta.file_metadata().schema_descr();
    for &g in groups {
        let rg = meta.row_group(g);
        for leaf in 0..rg.num_columns() {
            if !roots(schema.get_column_root_idx(leaf)) {
                continue;
            }
            let col = rg.column(leaf);
            let bits = min_plain_bits(col.column_type(), col.column_descr().type_length());
            let mut pages =
                SerializedPageReader::new(file.clone(), col, rg.num_rows() as usize, None)?;
            while let Some(page) = pages.get_next_page()? {
                let (n, bytes, dictionary) = match &page {
                    Page::DictionaryPage {
                        buf, num_values, ..
                    } => (*num_values as u64, buf.len() as u64, true),
                    Page::DataPage { num_values, .. } | Page::DataPageV2 { num_values, .. } => {
                        (*num_values as u64, 0, false)
                    }
                };
                let name = col.column_path().string();
                if dictionary && n.saturating_mul(bits) > bytes.saturating_mul(8) {
                    return Err(ParquetError::General(format!(
                        "column `{name}`, row group {g}: a dictionary page declares {n} values in \
                         {bytes} bytes; the file is corrupt"
                    )));
                }
                if !dictionary && n > MAX_PAGE_LEVELS as u64 {
                    return Err(ParquetError::General(format!(
                        "column `{name}`, row group {g}: a data page declares {n} values, over \
                         the {MAX_PAGE_LEVELS} one page may hold; the file is corrupt"
                    )));
                }
            }
        }
    }
    Ok(())
}

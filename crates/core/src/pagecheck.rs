//! Page headers checked before the parquet crate reads a page: it sizes
//! buffers from a header's own numbers (a dictionary page of a few bytes
//! declaring 700 million values made its Arrow reader reserve 5.68 GB; a
//! header's uncompressed size of 1.1 GB, the decompression buffer), so every
//! page header of the column chunks about to be read is parsed here first
//! (Thrift compact protocol; the crate keeps its own parser private) and a
//! number the file cannot back is refused as corrupt. Only headers are read:
//! no page is decompressed.

use std::fs::File;
use std::os::unix::fs::FileExt;

use parquet::basic::Type as PhysicalType;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};

use crate::listcol::MAX_PAGE_LEVELS;

/// The largest uncompressed page accepted: writers cut pages at about 1 MiB
/// (pyarrow, arrow-rs); one row of 30,720 values takes under 250 KiB.
pub const MAX_PAGE_BYTES: usize = 256 << 20;

/// The most bytes a page header may take (its statistics included).
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Bytes read for a page header at first.
const FIRST_READ: usize = 256;

/// The parse error of a header cut short by the bytes read.
const TRUNCATED: &str = "truncated";

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

fn corrupt(what: String) -> ParquetError {
    ParquetError::General(format!("{what}; the file is corrupt"))
}

/// Walks every page header of the leaf columns under the root columns
/// `roots` selects, in row groups `groups` of `file` (whose length is
/// `file_len`): each page must lie inside its column chunk, be at most
/// [`MAX_PAGE_BYTES`] uncompressed, a dictionary page must hold its
/// declared values in those bytes, a data page at most [`MAX_PAGE_LEVELS`]
/// values.
pub fn check_pages(
    file: &File,
    meta: &ParquetMetaData,
    groups: &[usize],
    roots: impl Fn(usize) -> bool,
) -> Result<()> {
    let file_len = file.metadata()?.len();
    let schema = meta.file_metadata().schema_descr();
    for &g in groups {
        let rg = meta.row_group(g);
        for leaf in 0..rg.num_columns() {
            if roots(schema.get_column_root_idx(leaf)) {
                check_chunk(file, file_len, rg.column(leaf), g)?;
            }
        }
    }
    Ok(())
}

fn check_chunk(file: &File, file_len: u64, col: &ColumnChunkMetaData, group: usize) -> Result<()> {
    let name = col.column_path().string();
    let at = |what: String| corrupt(format!("column `{name}`, row group {group}: {what}"));
    let start = col
        .dictionary_page_offset()
        .unwrap_or(col.data_page_offset());
    let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(col.compressed_size())) else {
        return Err(at("a negative chunk offset or size".into()));
    };
    if start.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(at(format!(
            "the chunk ({len} bytes at {start}) ends past the file"
        )));
    }
    let bits = min_plain_bits(col.column_type(), col.column_descr().type_length());
    let (mut offset, end) = (start, start + len);
    let mut buf = vec![0u8; FIRST_READ];
    while offset < end {
        // Headers are tens of bytes: read a little, more only if needed.
        let left = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let mut want = FIRST_READ.min(left);
        let (header_len, h) = loop {
            buf.resize(want, 0);
            file.read_exact_at(&mut buf[..want], offset)?;
            match PageHeader::parse(&buf[..want]) {
                Err(e) if e == TRUNCATED && want < left.min(MAX_HEADER_BYTES) => {
                    want = (want * 16).min(left).min(MAX_HEADER_BYTES);
                }
                parsed => break parsed.map_err(|e| at(format!("page header at {offset}: {e}")))?,
            }
        };
        let Ok(compressed) = u64::try_from(h.compressed_size) else {
            return Err(at(format!(
                "a page header at {offset} with a negative size"
            )));
        };
        offset += header_len as u64;
        if compressed > end - offset {
            return Err(at(format!(
                "a page of {compressed} bytes at {offset} ends past its chunk"
            )));
        }
        h.check(bits).map_err(at)?;
        offset += compressed;
    }
    Ok(())
}

/// Checks the footer (`FileMetaData`, Thrift compact protocol) before the
/// parquet crate parses it: the crate reserves a schema element's
/// `num_children` up front (a mutated footer asked for 13.8 GB), so each
/// must be at most the number of schema elements; and every list in the
/// footer must fit in its bytes. A file too short or without the `PAR1`
/// magic is left to the crate to refuse.
pub fn check_footer(file: &File) -> Result<()> {
    let len = file.metadata()?.len();
    if len < 12 {
        return Ok(());
    }
    let mut tail = [0u8; 8];
    file.read_exact_at(&mut tail, len - 8)?;
    if &tail[4..] != b"PAR1" {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if footer_len + 8 > len {
        return Ok(());
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.read_exact_at(&mut footer, len - 8 - footer_len)?;
    walk_file_metadata(&footer).map_err(|e| corrupt(format!("the footer: {e}")))
}

/// Walks a `FileMetaData`, checking each schema element's `num_children`.
fn walk_file_metadata(buf: &[u8]) -> std::result::Result<(), String> {
    let mut r = Compact {
        buf,
        pos: 0,
        depth: 0,
    };
    let mut last = 0i16;
    while let Some((id, ty)) = r.field(&mut last)? {
        // Field 2: the schema, a list of `SchemaElement` structs.
        if id != 2 || ty != 9 {
            r.skip(ty)?;
            continue;
        }
        let b = r.byte()?;
        let n = match b >> 4 {
            15 => r.varint()?,
            n => u64::from(n),
        };
        if b & 0x0f != STRUCT {
            return Err("the schema is not a list of structs".into());
        }
        if n > (buf.len() - r.pos) as u64 {
            return Err("a schema longer than the footer".into());
        }
        for _ in 0..n {
            r.enter()?;
            let mut last = 0i16;
            while let Some((id, ty)) = r.field(&mut last)? {
                if id == 5 && ty == I32 {
                    let children = r.int()? as i32;
                    if u64::try_from(children).is_err() || children as u64 > n {
                        return Err(format!(
                            "a schema element declares {children} children of {n} elements"
                        ));
                    }
                } else {
                    r.skip(ty)?;
                }
            }
            r.depth -= 1;
        }
    }
    Ok(())
}

/// Checks the row counts of the row groups: none negative, and their sum
/// an `i64` (the parquet crate adds them up unchecked).
pub fn check_row_counts(meta: &ParquetMetaData) -> Result<()> {
    let mut total = 0i64;
    for (g, rg) in meta.row_groups().iter().enumerate() {
        let n = rg.num_rows();
        total = (n >= 0)
            .then(|| total.checked_add(n))
            .flatten()
            .ok_or_else(|| corrupt(format!("row group {g} declares {n} rows")))?;
    }
    Ok(())
}

/// What is checked of a page header.
#[derive(Debug, Default, PartialEq, Eq)]
struct PageHeader {
    uncompressed_size: i32,
    compressed_size: i32,
    /// `num_values` of a dictionary page.
    dictionary_values: Option<i32>,
    /// `num_values` of a data page (v1 or v2).
    data_values: Option<i32>,
}

impl PageHeader {
    /// Checks the numbers the parquet crate sizes buffers from, for values
    /// of at least `bits` bits in PLAIN encoding.
    fn check(&self, bits: u64) -> std::result::Result<(), String> {
        let size = u64::try_from(self.uncompressed_size).map_err(|_| "a negative page size")?;
        if size > MAX_PAGE_BYTES as u64 {
            return Err(format!(
                "a page declares {size} bytes uncompressed, over the {MAX_PAGE_BYTES} one page may hold"
            ));
        }
        if let Some(n) = self.dictionary_values {
            let n = u64::try_from(n).map_err(|_| "a negative dictionary size")?;
            if n.saturating_mul(bits) > size * 8 {
                return Err(format!(
                    "a dictionary page declares {n} values in {size} bytes"
                ));
            }
        }
        if let Some(n) = self.data_values
            && usize::try_from(n).is_ok_and(|n| n > MAX_PAGE_LEVELS)
        {
            return Err(format!(
                "a data page declares {n} values, over the {MAX_PAGE_LEVELS} one page may hold"
            ));
        }
        Ok(())
    }

    /// Parses a `PageHeader` (Thrift compact protocol) at the start of
    /// `buf`; returns its length in bytes too.
    fn parse(buf: &[u8]) -> std::result::Result<(usize, Self), String> {
        let mut r = Compact {
            buf,
            pos: 0,
            depth: 0,
        };
        let mut h = PageHeader::default();
        let (mut have_sizes, mut last) = (0, 0i16);
        while let Some((id, ty)) = r.field(&mut last)? {
            match (id, ty) {
                (2, I32) => (h.uncompressed_size, have_sizes) = (r.int()? as i32, have_sizes | 1),
                (3, I32) => (h.compressed_size, have_sizes) = (r.int()? as i32, have_sizes | 2),
                // data_page_header, dictionary_page_header, data_page_header_v2:
                // num_values is their field 1.
                (5 | 7 | 8, STRUCT) => {
                    let n = r.first_i32_field()?;
                    if id == 7 {
                        h.dictionary_values = n;
                    } else {
                        h.data_values = n;
                    }
                }
                _ => r.skip(ty)?,
            }
        }
        if have_sizes != 3 {
            return Err("no page sizes".into());
        }
        Ok((r.pos, h))
    }
}

const I32: u8 = 5;
const STRUCT: u8 = 12;

/// A reader of the Thrift compact protocol, enough to walk any struct.
struct Compact<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl Compact<'_> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    /// A varint read as the parquet crate reads it: any length, bits past
    /// 64 wrapped (its numbers are what it allocates from).
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift = shift.wrapping_add(7);
        }
    }

    /// A zigzag integer (i16, i32, i64).
    fn int(&mut self) -> std::result::Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// The next field header: `None` at the struct's end.
    fn field(&mut self, last: &mut i16) -> std::result::Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let delta = (b >> 4) as i16;
        let id = if delta == 0 {
            i16::try_from(self.int()?).map_err(|_| "a field id out of range")?
        } else {
            last.checked_add(delta).ok_or("a field id out of range")?
        };
        *last = id;
        Ok(Some((id, b & 0x0f)))
    }

    /// Field 1 of a nested struct if it is an i32, the rest skipped.
    fn first_i32_field(&mut self) -> std::result::Result<Option<i32>, String> {
        self.enter()?;
        let (mut last, mut found) = (0i16, None);
        while let Some((id, ty)) = self.field(&mut last)? {
            if id == 1 && ty == I32 {
                found = Some(self.int()? as i32);
            } else {
                self.skip(ty)?;
            }
        }
        self.depth -= 1;
        Ok(found)
    }

    fn enter(&mut self) -> std::result::Result<(), String> {
        self.depth += 1;
        if self.depth > 16 {
            return Err("structs nested over 16 deep".into());
        }
        Ok(())
    }

    /// Skips a value of compact type `ty`.
    fn skip(&mut self, ty: u8) -> std::result::Result<(), String> {
        match ty {
            1 | 2 => Ok(()), // a boolean field holds its value in the type
            3 => self.byte().map(drop),
            4..=6 => self.varint().map(drop),
            7 => self.advance(8),
            8 => {
                let n = self.varint()?;
                self.advance(usize::try_from(n).map_err(|_| "a binary too long")?)
            }
            9 | 10 => {
                let b = self.byte()?;
                let n = match b >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.elements(n, &[b & 0x0f])
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                self.elements(n, &[kv >> 4, kv & 0x0f])
            }
            STRUCT => {
                self.enter()?;
                let mut last = 0i16;
                while let Some((_, t)) = self.field(&mut last)? {
                    self.skip(t)?;
                }
                self.depth -= 1;
                Ok(())
            }
            t => Err(format!("unknown compact type {t}")),
        }
    }

    /// Skips `n` collection elements of the given types (in turn).
    fn elements(&mut self, n: u64, types: &[u8]) -> std::result::Result<(), String> {
        // Every element takes at least a byte: more than remain is corrupt.
        if n > (self.buf.len() - self.pos) as u64 {
            // (More bytes may hold it; read whole, it is corrupt.)
            return Err(TRUNCATED.into());
        }
        self.enter()?;
        for _ in 0..n {
            for &t in types {
                // In a collection a boolean takes a byte.
                if t == 1 || t == 2 {
                    self.byte()?;
                } else {
                    self.skip(t)?;
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn advance(&mut self, n: usize) -> std::result::Result<(), String> {
        if n > self.buf.len() - self.pos {
            return Err(TRUNCATED.into());
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_of_the_files_the_reader_reads_passes() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            // Files the parquet crate reads whole, without error.
            let readable = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                .and_then(|b| b.build())
                .is_ok_and(|r| r.into_iter().all(|b| b.is_ok()));
            if !readable {
                continue;
            }
            let file = File::open(&p).unwrap();
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file.try_clone().unwrap()).unwrap();
            let meta = builder.metadata();
            let groups: Vec<usize> = (0..meta.num_row_groups()).collect();
            check_pages(&file, meta, &groups, |_| true)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} fixtures read");
    }

    #[test]
    fn a_header_is_parsed_and_its_numbers_found() {
        // type DICTIONARY_PAGE (2), uncompressed 100, compressed 90,
        // dictionary_page_header {num_values 7, encoding PLAIN (0)}.
        let bytes = [
            0x15, 0x04, // field 1, i32, zigzag(2)
            0x15, 0xc8, 0x01, // field 2, i32, zigzag(100)
            0x15, 0xb4, 0x01, // field 3, i32, zigzag(90)
            0x4c, // field 7 (delta 4), struct
            0x15, 0x0e, // field 1, i32, zigzag(7)
            0x15, 0x00, // field 2, i32, 0
            0x00, // end of dictionary_page_header
            0x00, // end of the page header
            0xff, // the page's bytes
        ];
        let (len, h) = PageHeader::parse(&bytes).unwrap();
        assert_eq!(len, bytes.len() - 1);
        assert_eq!(
            h,
            PageHeader {
                uncompressed_size: 100,
                compressed_size: 90,
                dictionary_values: Some(7),
                data_values: None,
            }
        );
        assert!(PageHeader::parse(&bytes[..6]).is_err(), "truncated");
        // 7 byte arrays fit in 100 bytes; 26 (4 bytes each at least) do not.
        assert_eq!(h.check(32), Ok(()));
        let too_many = PageHeader {
            dictionary_values: Some(26),
            ..h
        };
        assert!(
            too_many
                .check(32)
                .unwrap_err()
                .contains("declares 26 values in 100 bytes")
        );
        let huge = PageHeader {
            uncompressed_size: 1_149_833_896,
            ..PageHeader::default()
        };
        assert!(
            huge.check(8)
                .unwrap_err()
                .contains("1149833896 bytes uncompressed")
        );
        let long = PageHeader {
            data_values: Some(1 << 30),
            ..PageHeader::default()
        };
        assert!(long.check(8).is_err());
    }
}

//! Page by page reading of one list column chunk: dictionary pages into
//! the dictionary, data pages into row starts, definition levels and values.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use arrow_array::ArrowPrimitiveType;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

use super::hybrid::{def_levels, hybrid, row_starts};
use super::{ListColumn, MAX_PAGE_LEVELS, Result, corrupt};

/// Arrow element types and the cast from the stored integer the Arrow
/// reader applies (a plain `as`).
pub(super) trait Element: ArrowPrimitiveType {
    fn from_i32(v: i32) -> Self::Native;
    fn from_i64(v: i64) -> Self::Native;
}

macro_rules! element {
    ($($t:ty => $n:ty),*) => {$(
        impl Element for $t {
            #[inline]
            fn from_i32(v: i32) -> $n {
                v as $n
            }
            #[inline]
            fn from_i64(v: i64) -> $n {
                v as $n
            }
        }
    )*};
}
element!(UInt8Type => u8, Int8Type => i8, UInt16Type => u16, Int16Type => i16,
    UInt32Type => u32, Int32Type => i32, UInt64Type => u64, Int64Type => i64);

/// One data page, decoded.
#[derive(Default)]
pub(super) struct PageData<N> {
    /// The levels where a row starts (repetition level 0), ascending.
    pub(super) starts: Vec<usize>,
    /// Levels in the page.
    pub(super) len: usize,
    /// Next entry of `starts` at or after `pos`.
    pub(super) si: usize,
    /// Definition levels; empty when every level is `max_def` (no nulls,
    /// no empty lists: values line up with levels).
    pub(super) def: Vec<u8>,
    /// The non-null values.
    pub(super) vals: Vec<N>,
    /// Next level to use.
    pub(super) pos: usize,
    /// Next value to use.
    pub(super) vpos: usize,
}

pub(super) struct Decoder<T: ArrowPrimitiveType> {
    pub(super) col: ListColumn,
    file: Arc<File>,
    meta: Arc<ParquetMetaData>,
    groups: VecDeque<usize>,
    pages: Option<SerializedPageReader<File>>,
    pub(super) dict: Vec<T::Native>,
    pub(super) page: PageData<T::Native>,
    /// Dictionary indices of up to 8 bits (the usual case: 41 values).
    small: Vec<u8>,
    /// Wider dictionary indices.
    wide: Vec<u32>,
    /// Values per row seen so far (a capacity hint for the next call).
    pub(super) per_row: usize,
}

impl<T: Element> Decoder<T> {
    pub(super) fn new(
        col: ListColumn,
        file: Arc<File>,
        meta: Arc<ParquetMetaData>,
        groups: Vec<usize>,
    ) -> Self {
        Self {
            col,
            file,
            meta,
            groups: groups.into(),
            pages: None,
            dict: Vec::new(),
            page: PageData::default(),
            small: Vec::new(),
            wide: Vec::new(),
            per_row: 0,
        }
    }

    /// Loads the next data page; `false` at the end of the last row group.
    pub(super) fn load_page(&mut self) -> Result<bool> {
        loop {
            let page = match self.pages.as_mut() {
                Some(p) => p.get_next_page()?,
                None => None,
            };
            let Some(page) = page else {
                let Some(g) = self.groups.pop_front() else {
                    return Ok(false);
                };
                let rg = self.meta.row_group(g);
                self.pages = Some(SerializedPageReader::new(
                    self.file.clone(),
                    rg.column(self.col.leaf),
                    rg.num_rows() as usize,
                    None,
                )?);
                self.dict.clear();
                continue;
            };
            match page {
                Page::DictionaryPage {
                    buf,
                    num_values,
                    encoding,
                    ..
                } => {
                    if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                        return Err(corrupt(format!("dictionary page encoded {encoding}")));
                    }
                    self.dict.clear();
                    self.plain(&buf, num_values as usize, true)?;
                }
                Page::DataPage {
                    buf,
                    num_values,
                    encoding,
                    def_level_encoding,
                    rep_level_encoding,
                    ..
                } => {
                    if rep_level_encoding != Encoding::RLE || def_level_encoding != Encoding::RLE {
                        return Err(corrupt("levels not RLE-encoded"));
                    }
                    let n = num_values as usize;
                    let (rep, rest) = prefixed(&buf)?;
                    let (def, vals) = prefixed(rest)?;
                    self.levels(rep, def, n)?;
                    self.values(vals, encoding)?;
                    return Ok(true);
                }
                Page::DataPageV2 {
                    buf,
                    num_values,
                    encoding,
                    def_levels_byte_len,
                    rep_levels_byte_len,
                    ..
                } => {
                    let r = rep_levels_byte_len as usize;
                    let d = def_levels_byte_len as usize;
                    if r + d > buf.len() {
                        return Err(corrupt("level lengths exceed the page"));
                    }
                    self.levels(&buf[..r], &buf[r..r + d], num_values as usize)?;
                    self.values(&buf[r + d..], encoding)?;
                    return Ok(true);
                }
            }
        }
    }

    /// Decodes a page's levels; the number of values they call for is
    /// what `values` then reads.
    pub(super) fn levels(&mut self, rep: &[u8], def: &[u8], n: usize) -> Result<()> {
        if n > MAX_PAGE_LEVELS {
            return Err(corrupt(format!(
                "a data page declares {n} values, over the {MAX_PAGE_LEVELS} one page may hold \
                 (rewrite the file with smaller pages)"
            )));
        }
        let p = &mut self.page;
        p.pos = 0;
        p.vpos = 0;
        p.si = 0;
        p.len = n;
        row_starts(rep, n, &mut p.starts, &mut self.small)?;
        def_levels(def, self.col.max_def, n, &mut p.def)?;
        Ok(())
    }

    fn value_count(&self) -> usize {
        if self.page.def.is_empty() {
            self.page.len
        } else {
            let max = self.col.max_def;
            self.page.def.iter().filter(|&&d| d == max).count()
        }
    }

    /// Decodes a page's values section.
    fn values(&mut self, data: &[u8], encoding: Encoding) -> Result<()> {
        let n = self.value_count();
        self.page.vals.clear();
        match encoding {
            Encoding::PLAIN => self.plain(data, n, false),
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let (&width, data) = data
                    .split_first()
                    .ok_or_else(|| corrupt("dictionary page section is empty"))?;
                if width > 32 {
                    return Err(corrupt(format!("index bit width {width}")));
                }
                let dict = &self.dict;
                let out = &mut self.page.vals;
                out.reserve(n);
                let out_of_range = |i: usize| corrupt(format!("dictionary index {i} out of range"));
                if width <= 8 {
                    self.small.clear();
                    self.small.reserve(n);
                    hybrid(data, width, n, &mut self.small)?;
                    // One range check per page, then a gather from a
                    // 256-entry table that needs none.
                    let top = usize::from(self.small.iter().copied().max().unwrap_or(0));
                    if !self.small.is_empty() && top >= dict.len() {
                        return Err(out_of_range(top));
                    }
                    let mut table = [T::Native::default(); 256];
                    let k = dict.len().min(256);
                    table[..k].copy_from_slice(&dict[..k]);
                    out.extend(self.small.iter().map(|&i| table[usize::from(i)]));
                } else {
                    self.wide.clear();
                    self.wide.reserve(n);
                    hybrid(data, width, n, &mut self.wide)?;
                    for &i in &self.wide {
                        let v = dict
                            .get(i as usize)
                            .ok_or_else(|| out_of_range(i as usize))?;
                        out.push(*v);
                    }
                }
                Ok(())
            }
            other => Err(corrupt(format!("values encoded {other}"))),
        }
    }

    /// PLAIN values: into the dictionary or the page's values.
    pub(super) fn plain(&mut self, data: &[u8], n: usize, dict: bool) -> Result<()> {
        let out = if dict {
            &mut self.dict
        } else {
            &mut self.page.vals
        };
        match self.col.physical {
            PhysicalType::INT32 => words(data, n, out, |b| T::from_i32(i32::from_le_bytes(b))),
            _ => words(data, n, out, |b| T::from_i64(i64::from_le_bytes(b))),
        }
    }
}

/// Appends the first `n` little-endian words of `W` bytes of `data`, each
/// converted by `f`.
fn words<const W: usize, N>(
    data: &[u8],
    n: usize,
    out: &mut Vec<N>,
    f: impl Fn([u8; W]) -> N,
) -> Result<()> {
    // The page's bytes bound the count before anything is allocated.
    let bytes = n
        .checked_mul(W)
        .and_then(|len| data.get(..len))
        .ok_or_else(|| {
            corrupt(format!(
                "PLAIN section holds fewer than the {n} values declared"
            ))
        })?;
    out.reserve(n);
    out.extend(
        bytes
            .chunks_exact(W)
            .map(|c| f(c.try_into().expect("chunks of W bytes"))),
    );
    Ok(())
}

/// A v1 page section with its 4-byte length prefix, and what follows it.
fn prefixed(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    let len = buf
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| corrupt("page ends before its levels"))?;
    let rest = &buf[4..];
    if len > rest.len() {
        return Err(corrupt("levels run past the page"));
    }
    Ok(rest.split_at(len))
}

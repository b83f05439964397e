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

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType, ListArray, PrimitiveArray};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, Schema};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

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

/// Arrow element types and the cast from the stored integer the Arrow
/// reader applies (a plain `as`).
trait Element: ArrowPrimitiveType {
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
struct PageData<N> {
    /// The levels where a row starts (repetition level 0), ascending.
    starts: Vec<usize>,
    /// Levels in the page.
    len: usize,
    /// Next entry of `starts` at or after `pos`.
    si: usize,
    /// Definition levels; empty when every level is `max_def` (no nulls,
    /// no empty lists: values line up with levels).
    def: Vec<u8>,
    /// The non-null values.
    vals: Vec<N>,
    /// Next level to use.
    pos: usize,
    /// Next value to use.
    vpos: usize,
}

struct Decoder<T: ArrowPrimitiveType> {
    col: ListColumn,
    file: Arc<File>,
    meta: Arc<ParquetMetaData>,
    groups: VecDeque<usize>,
    pages: Option<SerializedPageReader<File>>,
    dict: Vec<T::Native>,
    page: PageData<T::Native>,
    /// Dictionary indices of up to 8 bits (the usual case: 41 values).
    small: Vec<u8>,
    /// Wider dictionary indices.
    wide: Vec<u32>,
    /// Values per row seen so far (a capacity hint for the next call).
    per_row: usize,
}

impl<T: Element> Decoder<T> {
    fn new(
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
    fn load_page(&mut self) -> Result<bool> {
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
    fn levels(&mut self, rep: &[u8], def: &[u8], n: usize) -> Result<()> {
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
    fn plain(&mut self, data: &[u8], n: usize, dict: bool) -> Result<()> {
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

/// The list array being built by one `next_rows` call.
struct Building<N> {
    offsets: Vec<i32>,
    values: Vec<N>,
    rows: usize,
    item_valid: Option<BooleanBufferBuilder>,
    list_valid: Option<BooleanBufferBuilder>,
}

impl<N: Copy + Default> Building<N> {
    fn start_row(&mut self, valid: bool) -> Result<()> {
        self.rows += 1;
        let end = i32::try_from(self.values.len()).map_err(|_| corrupt("over 2^31 values"))?;
        self.offsets.push(end);
        match (&mut self.list_valid, valid) {
            (Some(b), _) => b.append(valid),
            (None, true) => {}
            (None, false) => {
                let mut b = BooleanBufferBuilder::new(self.offsets.capacity());
                b.append_n(self.rows - 1, true);
                b.append(false);
                self.list_valid = Some(b);
            }
        }
        Ok(())
    }

    fn push_null_element(&mut self) {
        let b = self.item_valid.get_or_insert_with(|| {
            let mut b = BooleanBufferBuilder::new(self.values.capacity());
            b.append_n(self.values.len(), true);
            b
        });
        b.append(false);
        self.values.push(N::default());
    }

    fn push_values(&mut self, vals: &[N]) {
        self.values.extend_from_slice(vals);
        if let Some(b) = &mut self.item_valid {
            b.append_n(vals.len(), true);
        }
    }

    fn close_row(&mut self) -> Result<()> {
        let end = i32::try_from(self.values.len()).map_err(|_| corrupt("over 2^31 values"))?;
        *self.offsets.last_mut().expect("offsets start with 0") = end;
        Ok(())
    }
}

impl<T: Element> ListRows for Decoder<T> {
    fn next_rows(&mut self, n: usize) -> Result<ArrayRef> {
        // Sized from the rows read so far: growing a buffer of a few
        // hundred KiB by doubling costs copies and page faults.
        let mut b = Building {
            offsets: Vec::with_capacity(n + 1),
            values: Vec::with_capacity(n.saturating_mul(self.per_row).saturating_add(n) / 8 * 9),
            rows: 0,
            item_valid: None,
            list_valid: None,
        };
        b.offsets.push(0);
        let max = self.col.max_def;
        let empty_def = u8::from(self.col.list_nullable);
        'pages: loop {
            if self.page.pos >= self.page.len && !self.load_page()? {
                break;
            }
            let p = &mut self.page;
            let nl = p.len;
            if p.def.is_empty() {
                // Every level is a value: rows run from one start to the
                // next.
                while p.pos < nl {
                    if p.starts.get(p.si) == Some(&p.pos) {
                        if b.rows == n {
                            break 'pages;
                        }
                        b.start_row(true)?;
                        p.si += 1;
                    } else if b.rows == 0 {
                        return Err(corrupt("data starts inside a row"));
                    }
                    let end = p.starts.get(p.si).copied().unwrap_or(nl);
                    b.push_values(&p.vals[p.pos..end]);
                    b.close_row()?;
                    p.pos = end;
                }
                p.vpos = nl;
            } else {
                while p.pos < nl {
                    let d = p.def[p.pos];
                    if p.starts.get(p.si) == Some(&p.pos) {
                        if b.rows == n {
                            break 'pages;
                        }
                        p.si += 1;
                        b.start_row(d >= empty_def)?;
                        if d <= empty_def {
                            p.pos += 1;
                            continue;
                        }
                    } else if b.rows == 0 {
                        return Err(corrupt("data starts inside a row"));
                    }
                    if d == max {
                        let v = *p
                            .vals
                            .get(p.vpos)
                            .ok_or_else(|| corrupt("fewer values than levels call for"))?;
                        b.values.push(v);
                        if let Some(iv) = &mut b.item_valid {
                            iv.append(true);
                        }
                        p.vpos += 1;
                    } else if self.col.item_nullable && d + 1 == max && d > empty_def {
                        b.push_null_element();
                    } else {
                        return Err(corrupt(format!("definition level {d} inside a list")));
                    }
                    b.close_row()?;
                    p.pos += 1;
                }
            }
        }
        if let Some(per_row) = b.values.len().checked_div(b.rows) {
            self.per_row = self.per_row.max(per_row);
        }
        let values = PrimitiveArray::<T>::new(
            ScalarBuffer::from(b.values),
            b.item_valid.map(|mut v| NullBuffer::new(v.finish())),
        );
        let offsets = OffsetBuffer::new(ScalarBuffer::from(b.offsets));
        let nulls = b.list_valid.map(|mut v| NullBuffer::new(v.finish()));
        let list = ListArray::try_new(self.col.item.clone(), offsets, Arc::new(values), nulls)?;
        Ok(Arc::new(list))
    }
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

fn uleb(data: &[u8], p: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *data
            .get(*p)
            .ok_or_else(|| corrupt("run header past the end"))?;
        *p += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 56 {
            return Err(corrupt("run header too long"));
        }
    }
}

/// The little-endian word at byte `at` (zeros past the end).
#[inline]
fn word_at(data: &[u8], at: usize) -> u64 {
    match data.get(at..at + 8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => {
            let mut w = [0u8; 8];
            let tail = data.get(at..).unwrap_or(&[]);
            w[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(w)
        }
    }
}

/// Where a hybrid stream's values go.
trait Sink {
    /// `count` copies of `value`.
    fn run(&mut self, value: u32, count: usize);
    /// `count` values of `width` bits packed LSB first in `bytes`.
    fn packed(&mut self, bytes: &[u8], width: u8, count: usize);
}

/// Walks an RLE / bit-packed hybrid stream of `n` values of `width` bits
/// into `sink`.
fn hybrid(data: &[u8], width: u8, n: usize, sink: &mut impl Sink) -> Result<()> {
    let mut p = 0;
    let mut done = 0;
    let value_bytes = usize::from(width).div_ceil(8);
    while done < n {
        let h = uleb(data, &mut p)?;
        if h & 1 == 0 {
            let count = usize::try_from(h >> 1).map_err(|_| corrupt("run too long"))?;
            let bytes = data
                .get(p..p + value_bytes)
                .ok_or_else(|| corrupt("run value past the end"))?;
            p += value_bytes;
            let mut v = [0u8; 4];
            v[..value_bytes].copy_from_slice(bytes);
            let take = count.min(n - done);
            if take == 0 {
                return Err(corrupt("empty run"));
            }
            sink.run(u32::from_le_bytes(v), take);
            done += take;
        } else {
            let groups = usize::try_from(h >> 1).map_err(|_| corrupt("run too long"))?;
            let end = groups
                .checked_mul(usize::from(width))
                .and_then(|len| len.checked_add(p))
                .ok_or_else(|| corrupt("bit-packed run too long"))?;
            let bytes = &data[p.min(data.len())..end.min(data.len())];
            p = end;
            let take = groups.saturating_mul(8).min(n - done);
            if take == 0 {
                return Err(corrupt("empty bit-packed run"));
            }
            sink.packed(bytes, width, take);
            done += take;
        }
    }
    Ok(())
}

/// Unpacks `count` values of `width` bits (LSB first, up to 32) from
/// `bytes`, one at a time: for dictionary indices wider than a byte.
fn unpack(bytes: &[u8], width: u8, count: usize, mut f: impl FnMut(u32)) {
    let w = usize::from(width);
    let mask = if width == 0 { 0 } else { u64::MAX >> (64 - w) };
    for i in 0..count {
        let bit = i * w;
        f(((word_at(bytes, bit / 8) >> (bit % 8)) & mask) as u32);
    }
}

/// Eight values of `W` bits (1..=8) from the low `8 * W` bits of `word`.
#[inline(always)]
fn group<const W: usize>(word: u64) -> [u8; 8] {
    let mask = (1u64 << W) - 1;
    std::array::from_fn(|k| ((word >> (k * W)) & mask) as u8)
}

/// Appends `count` values of `W` bits (1..=8) packed LSB first in `bytes`.
fn unpack_small<const W: usize>(bytes: &[u8], count: usize, out: &mut Vec<u8>) {
    out.reserve(count);
    let full = count / 8;
    for g in 0..full {
        out.extend_from_slice(&group::<W>(word_at(bytes, g * W)));
    }
    let rest = count - full * 8;
    if rest > 0 {
        out.extend_from_slice(&group::<W>(word_at(bytes, full * W))[..rest]);
    }
}

/// Appends `count` values of `width` bits (0..=8) packed LSB first in `bytes`.
fn unpack_bytes(bytes: &[u8], width: u8, count: usize, out: &mut Vec<u8>) {
    match width {
        0 => out.resize(out.len() + count, 0),
        1 => unpack_small::<1>(bytes, count, out),
        2 => unpack_small::<2>(bytes, count, out),
        3 => unpack_small::<3>(bytes, count, out),
        4 => unpack_small::<4>(bytes, count, out),
        5 => unpack_small::<5>(bytes, count, out),
        6 => unpack_small::<6>(bytes, count, out),
        7 => unpack_small::<7>(bytes, count, out),
        _ => unpack_small::<8>(bytes, count, out),
    }
}

impl Sink for Vec<u8> {
    fn run(&mut self, value: u32, count: usize) {
        let len = self.len();
        self.resize(len + count, value as u8);
    }

    fn packed(&mut self, bytes: &[u8], width: u8, count: usize) {
        unpack_bytes(bytes, width, count, self);
    }
}

/// Repetition levels (maximum 1) kept as the positions of the zeros.
struct RowStarts<'a> {
    starts: &'a mut Vec<usize>,
    scratch: &'a mut Vec<u8>,
    at: usize,
    bad: bool,
}

impl Sink for RowStarts<'_> {
    fn run(&mut self, value: u32, count: usize) {
        if value == 0 {
            self.starts.extend(self.at..self.at + count);
        }
        self.bad |= value > 1;
        self.at += count;
    }

    fn packed(&mut self, bytes: &[u8], width: u8, count: usize) {
        self.scratch.clear();
        unpack_bytes(bytes, width, count, self.scratch);
        for (i, &v) in self.scratch.iter().enumerate() {
            if v == 0 {
                self.starts.push(self.at + i);
            }
            self.bad |= v > 1;
        }
        self.at += count;
    }
}

/// Decodes `n` repetition levels into the positions of row starts.
fn row_starts(data: &[u8], n: usize, starts: &mut Vec<usize>, scratch: &mut Vec<u8>) -> Result<()> {
    starts.clear();
    let mut sink = RowStarts {
        starts,
        scratch,
        at: 0,
        bad: false,
    };
    hybrid(data, 1, n, &mut sink)?;
    if sink.bad {
        return Err(corrupt("a repetition level above 1"));
    }
    Ok(())
}

/// Definition levels, left unwritten while every one is the maximum.
struct DefLevels<'a> {
    out: &'a mut Vec<u8>,
    max: u8,
    /// Maximum levels not yet written (while `out` is empty).
    pending: usize,
    written: bool,
    bad: bool,
}

impl DefLevels<'_> {
    fn write_pending(&mut self) {
        if !self.written {
            self.out.resize(self.pending, self.max);
            self.written = true;
        }
    }
}

impl Sink for DefLevels<'_> {
    fn run(&mut self, value: u32, count: usize) {
        if !self.written && value == u32::from(self.max) {
            self.pending += count;
            return;
        }
        self.write_pending();
        self.bad |= value > u32::from(self.max);
        let len = self.out.len();
        self.out.resize(len + count, value as u8);
    }

    fn packed(&mut self, bytes: &[u8], width: u8, count: usize) {
        self.write_pending();
        let start = self.out.len();
        unpack_bytes(bytes, width, count, self.out);
        self.bad |= self.out[start..].iter().any(|&v| v > self.max);
    }
}

/// Decodes `n` definition levels no greater than `max` into `out`, which
/// is left empty when every level is `max`.
fn def_levels(data: &[u8], max: u8, n: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let width = (8 - max.leading_zeros()) as u8;
    let mut sink = DefLevels {
        out,
        max,
        pending: 0,
        written: false,
        bad: false,
    };
    hybrid(data, width, n, &mut sink)?;
    if sink.bad {
        return Err(corrupt(format!("a definition level above {max}")));
    }
    if out.iter().all(|&d| d == max) {
        out.clear();
    }
    Ok(())
}

impl Sink for Vec<u32> {
    fn run(&mut self, value: u32, count: usize) {
        let len = self.len();
        self.resize(len + count, value);
    }

    fn packed(&mut self, bytes: &[u8], width: u8, count: usize) {
        unpack(bytes, width, count, |v| self.push(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let batch =
            RecordBatch::try_from_iter([("values", Arc::new(b.finish()) as ArrayRef)]).unwrap();
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
}

//! The RLE / bit-packed hybrid encoding of Parquet levels and dictionary
//! indices, decoded run by run and group by group into sinks.

use super::{Result, corrupt};

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
pub(super) trait Sink {
    /// `count` copies of `value`.
    fn run(&mut self, value: u32, count: usize);
    /// `count` values of `width` bits packed LSB first in `bytes`.
    fn packed(&mut self, bytes: &[u8], width: u8, count: usize);
}

/// Walks an RLE / bit-packed hybrid stream of `n` values of `width` bits
/// into `sink`.
pub(super) fn hybrid(data: &[u8], width: u8, n: usize, sink: &mut impl Sink) -> Result<()> {
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
pub(super) fn unpack(bytes: &[u8], width: u8, count: usize, mut f: impl FnMut(u32)) {
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
pub(super) fn unpack_bytes(bytes: &[u8], width: u8, count: usize, out: &mut Vec<u8>) {
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
pub(super) fn row_starts(
    data: &[u8],
    n: usize,
    starts: &mut Vec<usize>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
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
pub(super) fn def_levels(data: &[u8], max: u8, n: usize, out: &mut Vec<u8>) -> Result<()> {
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

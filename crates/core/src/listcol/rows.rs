//! Assembly of decoded pages into Arrow list arrays, a few rows at a time:
//! row boundaries, null lists, empty lists and null elements.

use std::sync::Arc;

use arrow_array::{ArrayRef, ListArray, PrimitiveArray};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, OffsetBuffer, ScalarBuffer};

use super::decoder::{Decoder, Element};
use super::{ListRows, Result, corrupt};

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

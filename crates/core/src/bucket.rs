//! Length buckets: rows grouped by length, padded to their bucket's upper
//! edge, and cut into batches by a token budget (rows × L ≤ max_tokens).

use serde::{Deserialize, Serialize};

/// Where bucket edges lie and how many tokens a batch may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    /// Upper edges, ascending; a row of length n goes to the first edge ≥ n
    /// and is padded to it. The last edge must cover the longest row.
    pub edges: Vec<usize>,
    /// Token budget per batch (rows × bucket length); a row longer than the
    /// budget travels alone.
    pub max_tokens: usize,
}

impl Default for BucketConfig {
    fn default() -> Self {
        Self {
            edges: geometric_edges(512, 30_720, 1.08),
            max_tokens: 65_536,
        }
    }
}

/// Edges from `min` to `max`, each about `ratio` times the previous, rounded
/// up to a multiple of 8. Log-uniform lengths then pad about
/// `1 - (1 - 1/ratio) / ln(ratio)` of the tokens (3.7% for 1.08).
pub fn geometric_edges(min: usize, max: usize, ratio: f64) -> Vec<usize> {
    assert!(ratio > 1.0 && min > 0 && max >= min, "bad geometric edges");
    let mut edges = Vec::new();
    let mut e = min as f64;
    loop {
        let edge = (e.ceil() as usize).div_ceil(8) * 8;
        if edge >= max {
            edges.push(max);
            break;
        }
        if edges.last() != Some(&edge) {
            edges.push(edge);
        }
        e *= ratio;
    }
    edges
}

impl BucketConfig {
    /// One bucket per row length up to `max_len`, padded to `max_len`:
    /// what random batching (no buckets) costs, for comparison.
    pub fn single(max_len: usize, max_tokens: usize) -> Self {
        Self {
            edges: vec![max_len],
            max_tokens,
        }
    }

    /// Index of the bucket of a row of length `len`, or `None` if longer
    /// than the last edge.
    pub fn bucket_of(&self, len: usize) -> Option<usize> {
        let i = self.edges.partition_point(|&e| e < len);
        (i < self.edges.len()).then_some(i)
    }

    /// Rows per batch in bucket `b`.
    pub fn rows_per_batch(&self, b: usize) -> usize {
        (self.max_tokens / self.edges[b]).max(1)
    }

    /// An upper bound on the encoded size of any batch these buckets make,
    /// for sequence ids of at most [`ID_BYTES_ALLOWANCE`] bytes on average:
    /// the [`message_capacity`](crate::batch::message_capacity) of the
    /// fullest batch of each bucket.
    pub fn largest_batch_bytes(&self) -> usize {
        (0..self.edges.len())
            .map(|b| {
                let rows = self.rows_per_batch(b);
                crate::batch::message_capacity(rows, self.edges[b], rows * ID_BYTES_ALLOWANCE)
            })
            .max()
            .unwrap_or(0)
    }
}

/// Mean sequence-id length that [`BucketConfig::largest_batch_bytes`]
/// allows for.
pub const ID_BYTES_ALLOWANCE: usize = 64;

/// Groups items by bucket and releases full batches as they fill.
#[derive(Debug)]
pub struct Bucketer<T> {
    cfg: BucketConfig,
    pending: Vec<Vec<T>>,
}

impl<T> Bucketer<T> {
    /// An empty bucketer.
    pub fn new(cfg: BucketConfig) -> Self {
        let pending = cfg.edges.iter().map(|_| Vec::new()).collect();
        Self { cfg, pending }
    }

    /// The config.
    pub fn config(&self) -> &BucketConfig {
        &self.cfg
    }

    /// Adds an item of length `len`; returns `(bucket_len, items)` when its
    /// bucket is full. `Err(item)` if the item is longer than the last edge.
    pub fn push(&mut self, len: usize, item: T) -> Result<Option<(usize, Vec<T>)>, T> {
        let Some(b) = self.cfg.bucket_of(len) else {
            return Err(item);
        };
        self.pending[b].push(item);
        if self.pending[b].len() >= self.cfg.rows_per_batch(b) {
            return Ok(Some((
                self.cfg.edges[b],
                std::mem::take(&mut self.pending[b]),
            )));
        }
        Ok(None)
    }

    /// Every partial batch left, shortest bucket first.
    pub fn flush(&mut self) -> Vec<(usize, Vec<T>)> {
        let edges = &self.cfg.edges;
        self.pending
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(b, p)| (edges[b], std::mem::take(p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, BatchRow, MAX_MESSAGE_BYTES};
    use crate::task::{MaskConfig, Task};

    /// The bound holds for the fullest batch of each bucket, ids of the
    /// allowed length included, and it separates the default budget from
    /// one whose batches would pass the message limit.
    #[test]
    fn largest_batch_bytes_bounds_every_bucket_and_flags_oversized_budgets() {
        let cfg = BucketConfig {
            edges: vec![512, 4096, 30_720],
            max_tokens: 1 << 20,
        };
        let bound = cfg.largest_batch_bytes();
        let mut largest = 0;
        for (b, &l) in cfg.edges.iter().enumerate() {
            let rows: Vec<BatchRow> = (0..cfg.rows_per_batch(b))
                .map(|i| BatchRow {
                    seq_id: format!("{i:0>64}"),
                    values: vec![7; l],
                    label: None,
                })
                .collect();
            let bytes = Batch::build(Task::Next, &MaskConfig::default(), 0, l, &rows)
                .into_encoded(None)
                .len();
            assert!(bytes <= bound, "bucket {l}: {bytes} > {bound}");
            largest = largest.max(bytes);
        }
        assert!(
            bound - largest < 16 * 1024,
            "a tight bound: {bound} vs {largest}"
        );
        assert!(BucketConfig::default().largest_batch_bytes() < MAX_MESSAGE_BYTES);
        let oversized = BucketConfig {
            max_tokens: 6_000_000,
            ..BucketConfig::default()
        };
        assert!(oversized.largest_batch_bytes() > MAX_MESSAGE_BYTES);
    }

    #[test]
    fn default_edges_cover_the_contract_range() {
        let c = BucketConfig::default();
        assert_eq!(c.edges.first(), Some(&512));
        assert_eq!(c.edges.last(), Some(&30_720));
        assert!(c.edges.windows(2).all(|w| w[0] < w[1]));
        assert!(c.edges.iter().all(|e| e % 8 == 0));
        assert_eq!(c.bucket_of(512), Some(0));
        assert_eq!(c.bucket_of(513), Some(1));
        assert_eq!(c.bucket_of(30_720), Some(c.edges.len() - 1));
        assert_eq!(c.bucket_of(30_721), None);
    }

    #[test]
    fn batches_respect_the_token_budget_and_lose_nothing() {
        let cfg = BucketConfig {
            edges: vec![10, 20, 40],
            max_tokens: 80,
        };
        let mut b = Bucketer::new(cfg.clone());
        let mut out = Vec::new();
        for (i, len) in [3, 15, 40, 9, 10, 11, 40, 20, 1, 2, 5, 6, 7, 8]
            .iter()
            .enumerate()
        {
            if let Some(batch) = b.push(*len, (i, *len)).unwrap() {
                out.push(batch);
            }
        }
        assert!(b.push(41, (99, 41)).is_err());
        out.extend(b.flush());
        let mut seen: Vec<usize> = out
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.0))
            .collect();
        seen.sort();
        assert_eq!(seen, (0..14).collect::<Vec<_>>());
        for (l, items) in &out {
            assert!(items.len() * l <= 80);
            assert!(items.iter().all(|(_, n)| n <= l));
        }
    }
}

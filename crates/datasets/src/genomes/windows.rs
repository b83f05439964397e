//! Cutting records into windows, assigning splits from the reference strain, and measuring test-to-train leakage.

use std::collections::HashSet;

use pretext_core::split::Split;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::kmer::{KmerBuild, for_each_canonical_kmer, mix64};
use super::{GenomesConfig, Leakage};

/// Cuts `len` into non-overlapping windows `(start, len)` with log-uniform
/// lengths; the trailing piece is a window if at least `min_len` long.
pub(super) fn cut_windows(
    len: usize,
    cfg: &GenomesConfig,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let (lo, hi) = ((cfg.min_len as f64).ln(), ((cfg.max_len + 1) as f64).ln());
    let mut out = Vec::new();
    let mut start = 0;
    while len - start >= cfg.min_len {
        let want = if lo < hi {
            (rng.random_range(lo..hi).exp() as usize).clamp(cfg.min_len, cfg.max_len)
        } else {
            cfg.min_len
        };
        let w = want.min(len - start);
        out.push((start, w));
        start += w;
    }
    out
}

/// The region of the reference a window starting at `start` of a record
/// of length `len` belongs to.
pub(super) fn reference_region(start: usize, len: usize, fractions: [f64; 3]) -> Split {
    let x = start as f64 / len as f64;
    if x < fractions[0] {
        Split::Train
    } else if x < fractions[0] + fractions[1] {
        Split::Valid
    } else {
        Split::Test
    }
}

/// The split with most hits; ties and no hits → `None`.
pub(super) fn winner(hits: [u64; 3]) -> Option<Split> {
    let best = *hits.iter().max().expect("three");
    if best == 0 || hits.iter().filter(|&&h| h == best).count() > 1 {
        return None;
    }
    Split::ALL.into_iter().find(|s| hits[*s as usize] == best)
}

/// How many of each split to keep so that `cap` windows keep the
/// proportions of `counts` (largest remainder; every non-empty split keeps
/// at least one when the cap allows).
pub(super) fn quotas(counts: [usize; 3], cap: usize) -> [usize; 3] {
    let total: usize = counts.iter().sum();
    if total <= cap {
        return counts;
    }
    let exact: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 * cap as f64 / total as f64)
        .collect();
    let mut q = [0usize; 3];
    for i in 0..3 {
        q[i] = exact[i].floor() as usize;
    }
    let mut order = [0, 1, 2];
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - q[a] as f64, exact[b] - q[b] as f64);
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = cap - q.iter().sum::<usize>();
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if q[i] < counts[i] {
            q[i] += 1;
            left -= 1;
        }
    }
    for i in 0..3 {
        if counts[i] > 0 && q[i] == 0 {
            let donor = (0..3)
                .max_by_key(|&j| (q[j], usize::MAX - j))
                .expect("three");
            if q[donor] > 1 {
                q[donor] -= 1;
                q[i] = 1;
            }
        }
    }
    q
}

/// The distinct k-mers of `windows` that the leakage sample keeps.
pub(super) fn sampled_kmers<'a>(
    windows: impl Iterator<Item = &'a [u8]>,
    scale: u64,
) -> HashSet<u64, KmerBuild> {
    let mut set = HashSet::default();
    for w in windows {
        for_each_canonical_kmer(w, |k| {
            if scale == 1 || mix64(k ^ 0x1EA4_A6E5).is_multiple_of(scale) {
                set.insert(k);
            }
        });
    }
    set
}

/// Test → train leakage: the share of the distinct canonical k-mers of
/// `test` (those kept by the FracMinHash sample `scale`; 1 keeps all) that
/// also occur in `train`.
pub fn measure_leakage<'a>(
    train: impl Iterator<Item = &'a [u8]>,
    test: impl Iterator<Item = &'a [u8]>,
    scale: u64,
) -> Leakage {
    let scale = scale.max(1);
    let test = sampled_kmers(test, scale);
    let train = sampled_kmers(train, scale);
    let shared = test.iter().filter(|k| train.contains(k)).count() as u64;
    Leakage::new(scale, test.len() as u64, shared)
}

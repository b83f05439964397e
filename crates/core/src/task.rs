//! The self-supervised tasks: inputs, targets and loss masks for `masked`
//! (BERT-style single positions or spans, reproducible per seed, epoch and
//! sequence), `next` (the step `horizon` ahead) and `classify` (fine-tuning,
//! no targets).

use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{MASK_TOKEN, NUM_VALUES, PAD_TOKEN};

/// Which targets a batch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Masked-step prediction (41-way) on masked positions.
    Masked,
    /// Next-step prediction (41-way): target[t] = value[t + horizon]
    /// ([`MaskConfig::horizon`], 1 by default).
    Next,
    /// Sequence classification: labels only.
    Classify,
}

impl Task {
    /// The name used in schemas, headers and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Masked => "masked",
            Task::Next => "next",
            Task::Classify => "classify",
        }
    }

    /// Parses a task name.
    pub fn parse(s: &str) -> Option<Task> {
        match s {
            "masked" => Some(Task::Masked),
            "next" => Some(Task::Next),
            "classify" => Some(Task::Classify),
            _ => None,
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::parse(s).ok_or_else(|| format!("unknown task `{s}` (masked, next or classify)"))
    }
}

/// Target parameters of the self-supervised tasks: masking for `masked`,
/// the horizon for `next`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskConfig {
    /// Fraction of real positions selected for the loss.
    pub rate: f64,
    /// Of the selected: fraction replaced by MASK.
    pub mask_fraction: f64,
    /// Of the selected: fraction replaced by a random value (the rest are kept).
    pub random_fraction: f64,
    /// Mean span length; 1 selects positions one by one, more selects spans
    /// of geometric length with this mean.
    pub mean_span: f64,
    /// Seed of every mask: the mask of a sequence depends only on (seed,
    /// epoch, seq_id).
    pub seed: u64,
    /// `next` predicts the value this many steps ahead (1 = the next step).
    /// On data whose values are held for many steps, copying the current
    /// value solves horizon 1; a horizon past the typical run makes the
    /// task need the data's structure.
    #[serde(default = "default_horizon")]
    pub horizon: usize,
}

fn default_horizon() -> usize {
    1
}

/// Longest `next` horizon accepted (shorter than the shortest row the
/// contract allows, 512).
pub const MAX_HORIZON: usize = 256;

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            rate: 0.15,
            mask_fraction: 0.8,
            random_fraction: 0.1,
            mean_span: 1.0,
            seed: 0,
            horizon: 1,
        }
    }
}

impl MaskConfig {
    /// Checks the ranges: rate in (0, 1], fractions in [0, 1] summing to at
    /// most 1, span at least 1, horizon in 1..=[`MAX_HORIZON`].
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate > 0.0 && self.rate <= 1.0) {
            return Err(format!("mask rate must be in (0, 1], got {}", self.rate));
        }
        let f_ok = |f: f64| (0.0..=1.0).contains(&f);
        if !f_ok(self.mask_fraction)
            || !f_ok(self.random_fraction)
            || self.mask_fraction + self.random_fraction > 1.0
        {
            return Err(format!(
                "mask and random fractions must be in [0, 1] and sum to at most 1, got {} and {}",
                self.mask_fraction, self.random_fraction
            ));
        }
        if !(self.mean_span >= 1.0 && self.mean_span.is_finite()) {
            return Err(format!(
                "mask span must be at least 1, got {}",
                self.mean_span
            ));
        }
        if !(1..=MAX_HORIZON).contains(&self.horizon) {
            return Err(format!(
                "horizon must be in 1..={MAX_HORIZON}, got {}",
                self.horizon
            ));
        }
        Ok(())
    }
}

/// The RNG of a mask.
///
/// Xoshiro256++: a fixed algorithm, so masks stay reproducible across
/// versions, and a few instructions a draw. ChaCha8, used before, spent 8%
/// of the producer's instructions refilling its blocks.
pub type MaskRng = Xoshiro256PlusPlus;

/// The RNG of one sequence's mask in one epoch, seeded from the SHA-256 of
/// seed, epoch and id.
pub fn mask_rng(seed: u64, epoch: u32, seq_id: &str) -> MaskRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(epoch.to_le_bytes());
    h.update(seq_id.as_bytes());
    MaskRng::from_seed(h.finalize().into())
}

/// Which positions of a sequence of length `len` are selected for the loss:
/// the selection [`fill_row`] makes with the same RNG (values are not
/// needed to know which positions are chosen).
pub fn select_positions(cfg: &MaskConfig, rng: &mut MaskRng, len: usize) -> Vec<bool> {
    let mut input = vec![0u8; len];
    let mut loss_mask = vec![0u8; len];
    apply_mask(cfg, rng, &mut input, &mut loss_mask);
    loss_mask.into_iter().map(|m| m == 1).collect()
}

/// What happens to a selected position, decided by 32 random bits: MASK
/// below `to_mask`, a random value (uniform 0..=40, read off the same bits)
/// below `to_random`, the value kept above.
#[derive(Clone, Copy)]
struct Action {
    to_mask: u64,
    to_random: u64,
}

impl Action {
    fn new(cfg: &MaskConfig) -> Self {
        let scale = |f: f64| (f.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64;
        Action {
            to_mask: scale(cfg.mask_fraction),
            to_random: scale(cfg.mask_fraction + cfg.random_fraction),
        }
    }

    #[inline]
    fn apply(self, bits: u32, slot: &mut u8) {
        let u = u64::from(bits);
        if u < self.to_mask {
            *slot = MASK_TOKEN;
        } else if u < self.to_random {
            *slot =
                ((u - self.to_mask) * NUM_VALUES as u64 / (self.to_random - self.to_mask)) as u8;
        }
    }
}

/// A uniform position below `len` from 32 random bits (Lemire's
/// multiply-shift); `None` for the rare draw that would bias it.
#[inline]
fn position(bits: u32, len: usize) -> Option<usize> {
    let m = u64::from(bits) * len as u64;
    let low = m as u32;
    if (low as usize) < len {
        let threshold = (u32::MAX as usize + 1 - len) % len;
        if (low as usize) < threshold {
            return None;
        }
    }
    Some((m >> 32) as usize)
}

/// Selects positions of `input` (which holds the values), marks them in
/// `loss_mask` (all zero on entry) and replaces them per 80/10/10. Sparse
/// selection (the usual 15%) costs one 64-bit draw per selected position:
/// the high half picks the position, the low half its fate.
fn apply_mask(cfg: &MaskConfig, rng: &mut MaskRng, input: &mut [u8], loss_mask: &mut [u8]) {
    let len = input.len();
    let want = ((cfg.rate * len as f64).round() as usize).clamp(1, len);
    let act = Action::new(cfg);
    if cfg.mean_span <= 1.0 && want * 2 > len {
        // Dense: partial Fisher-Yates over positions.
        let mut idx: Vec<u32> = (0..len as u32).collect();
        for i in 0..want {
            let j = rng.random_range(i..len);
            idx.swap(i, j);
            let t = idx[i] as usize;
            loss_mask[t] = 1;
            act.apply(rng.next_u32(), &mut input[t]);
        }
        return;
    }
    let mut chosen = 0;
    if cfg.mean_span <= 1.0 {
        // Sparse: draw until `want` distinct positions; each draw hits a
        // fresh one with probability at least 1/2.
        while chosen < want {
            let x = rng.next_u64();
            let Some(t) = position((x >> 32) as u32, len) else {
                continue;
            };
            if loss_mask[t] == 0 {
                loss_mask[t] = 1;
                act.apply(x as u32, &mut input[t]);
                chosen += 1;
            }
        }
        return;
    }
    let p_stop = 1.0 / cfg.mean_span;
    while chosen < want {
        let start = rng.random_range(0..len);
        let mut t = start;
        loop {
            if loss_mask[t] == 0 {
                loss_mask[t] = 1;
                act.apply(rng.next_u32(), &mut input[t]);
                chosen += 1;
            }
            t += 1;
            if chosen >= want || t >= len || rng.random::<f64>() < p_stop {
                break;
            }
        }
    }
}

/// One row's slices of a batch's `[rows, L]` buffers.
#[derive(Debug)]
pub struct RowOut<'a> {
    /// Token ids fed to the model.
    pub input: &'a mut [u8],
    /// Targets (values, or PAD where there is none).
    pub target: &'a mut [u8],
    /// 1 where the loss counts.
    pub loss_mask: &'a mut [u8],
}

/// Writes one row's input, target and loss mask into slices of the bucket
/// length (positions past `values.len()` are padding). The loss mask must
/// be all zero on entry (a fresh batch buffer is).
pub fn fill_row(
    task: Task,
    mask: &MaskConfig,
    epoch: u32,
    seq_id: &str,
    values: &[u8],
    out: RowOut<'_>,
) {
    let n = values.len();
    for side in [&mut *out.input, &mut *out.target] {
        side[..n].copy_from_slice(values);
        side[n..].fill(PAD_TOKEN);
    }
    finish_row(task, mask, epoch, seq_id, n, out);
}

/// [`fill_row`] for a row whose input and target already hold its `n`
/// values then padding, as a batch message built in place writes them:
/// draws the mask, or shifts the target, and sets the loss mask (all zero
/// on entry).
pub fn finish_row(
    task: Task,
    mask: &MaskConfig,
    epoch: u32,
    seq_id: &str,
    n: usize,
    out: RowOut<'_>,
) {
    let RowOut {
        input,
        target,
        loss_mask,
    } = out;
    debug_assert!(loss_mask.iter().all(|&m| m == 0));
    match task {
        Task::Masked => {
            let mut rng = mask_rng(mask.seed, epoch, seq_id);
            apply_mask(mask, &mut rng, &mut input[..n], &mut loss_mask[..n]);
        }
        Task::Next => {
            // target[t] = value[t + h] where t + h < n; PAD (no loss) after.
            let h = mask.horizon.clamp(1, n);
            target.copy_within(h..n, 0);
            target[n - h..n].fill(PAD_TOKEN);
            loss_mask[..n - h].fill(1);
        }
        Task::Classify => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: Task, values: &[u8], l: usize, epoch: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (mut i, mut t, mut m) = (vec![0; l], vec![0; l], vec![0; l]);
        fill_row(
            task,
            &MaskConfig::default(),
            epoch,
            "s1",
            values,
            RowOut {
                input: &mut i,
                target: &mut t,
                loss_mask: &mut m,
            },
        );
        (i, t, m)
    }

    #[test]
    fn masked_targets_are_the_values_and_masks_are_reproducible() {
        let values: Vec<u8> = (0..1000).map(|i| (i % 41) as u8).collect();
        let (i, t, m) = row(Task::Masked, &values, 1024, 0);
        assert_eq!(&t[..1000], &values[..]);
        assert!(
            t[1000..].iter().all(|&x| x == PAD_TOKEN) && i[1000..].iter().all(|&x| x == PAD_TOKEN)
        );
        assert_eq!(m.iter().map(|&x| x as usize).sum::<usize>(), 150);
        assert!(m[1000..].iter().all(|&x| x == 0));
        // Unselected positions are untouched; ~80% of selected are MASK.
        let masked = (0..1000).filter(|&p| i[p] == MASK_TOKEN).count();
        assert!((100..140).contains(&masked), "{masked}");
        assert!((0..1000).all(|p| m[p] == 1 || i[p] == values[p]));
        assert_eq!(
            row(Task::Masked, &values, 1024, 0),
            (i.clone(), t.clone(), m.clone())
        );
        assert_ne!(
            row(Task::Masked, &values, 1024, 1).2,
            m,
            "a new mask each epoch"
        );
    }

    #[test]
    fn selected_positions_split_80_10_10_and_spread_evenly() {
        // Values all 0, so a random replacement shows as a nonzero value
        // (or as 0, 1 time in 41).
        let values = vec![0u8; 4000];
        let (mut masked, mut random, mut kept) = (0usize, 0usize, 0usize);
        let mut seen_random = [false; NUM_VALUES];
        let mut by_tenth = [0usize; 10];
        for s in 0..200 {
            let (mut i, mut t, mut m) = (vec![0; 4000], vec![0; 4000], vec![0; 4000]);
            fill_row(
                Task::Masked,
                &MaskConfig::default(),
                0,
                &format!("s{s}"),
                &values,
                RowOut {
                    input: &mut i,
                    target: &mut t,
                    loss_mask: &mut m,
                },
            );
            for p in (0..4000).filter(|&p| m[p] == 1) {
                by_tenth[p * 10 / 4000] += 1;
                match i[p] {
                    MASK_TOKEN => masked += 1,
                    0 => kept += 1,
                    v => {
                        random += 1;
                        seen_random[v as usize] = true;
                    }
                }
            }
        }
        let total = (masked + random + kept) as f64;
        assert_eq!(total as usize, 200 * 600, "15% of each row");
        assert!((masked as f64 / total - 0.8).abs() < 0.01, "{masked}");
        // Random values that happen to be 0 count as kept: 10% × 40/41.
        assert!(
            (random as f64 / total - 0.1 * 40.0 / 41.0).abs() < 0.01,
            "{random}"
        );
        assert!(
            seen_random[1..].iter().all(|&s| s),
            "every value can be drawn"
        );
        assert!(
            by_tenth
                .iter()
                .all(|&n| (n as f64 - total / 10.0).abs() < total * 0.01),
            "{by_tenth:?}"
        );
    }

    #[test]
    fn span_masking_selects_runs() {
        let cfg = MaskConfig {
            mean_span: 5.0,
            ..Default::default()
        };
        let sel = select_positions(&cfg, &mut mask_rng(0, 0, "x"), 2000);
        assert_eq!(sel.iter().filter(|&&s| s).count(), 300);
        let runs = sel.windows(2).filter(|w| w[1] && !w[0]).count();
        assert!(runs < 120, "spans should merge positions into runs: {runs}");
    }

    #[test]
    fn span_masks_keep_the_rate_the_span_and_the_padding() {
        for (span, len) in [(4.0, 3000usize), (12.0, 5000), (30.0, 700)] {
            let cfg = MaskConfig {
                mean_span: span,
                rate: 0.2,
                ..Default::default()
            };
            let values = vec![3u8; len];
            let mut run_lengths = Vec::new();
            for s in 0..40 {
                let l = len + 37; // room for padding
                let (mut i, mut t, mut m) = (vec![0; l], vec![0; l], vec![0; l]);
                let id = format!("r{s}");
                let out = RowOut {
                    input: &mut i,
                    target: &mut t,
                    loss_mask: &mut m,
                };
                fill_row(Task::Masked, &cfg, 1, &id, &values, out);
                // The rate is exact; nothing past the row is selected or changed.
                assert_eq!(
                    m.iter().filter(|&&x| x == 1).count(),
                    (0.2 * len as f64).round() as usize
                );
                assert!(m[len..].iter().all(|&x| x == 0));
                assert!(i[len..].iter().chain(&t[len..]).all(|&x| x == PAD_TOKEN));
                // Same seed, epoch and id: the same mask; another of any: another.
                let again = select_positions(&cfg, &mut mask_rng(cfg.seed, 1, &id), len);
                assert!(again.iter().zip(&m).all(|(&a, &b)| a == (b == 1)));
                for other in [
                    mask_rng(cfg.seed, 2, &id),
                    mask_rng(cfg.seed + 1, 1, &id),
                    mask_rng(cfg.seed, 1, "other"),
                ] {
                    let mut other = other;
                    let sel = select_positions(&cfg, &mut other, len);
                    assert!(sel.iter().zip(&m).any(|(&a, &b)| a != (b == 1)));
                }
                let mut run = 0;
                for &x in &m[..len] {
                    if x == 1 {
                        run += 1;
                    } else if run > 0 {
                        run_lengths.push(run);
                        run = 0;
                    }
                }
                if run > 0 {
                    run_lengths.push(run);
                }
            }
            // Selected runs are about the span long (overlapping spans merge,
            // a span cut by the row's end or the rate is shorter).
            let mean = run_lengths.iter().sum::<usize>() as f64 / run_lengths.len() as f64;
            assert!(
                mean > 0.7 * span && mean < 1.6 * span,
                "span {span}: mean run {mean}"
            );
        }
    }

    #[test]
    fn next_targets_at_a_horizon_by_hand() {
        let values = [5u8, 6, 7, 8, 9];
        let cfg = MaskConfig {
            horizon: 3,
            ..MaskConfig::default()
        };
        let (mut i, mut t, mut m) = (vec![0; 7], vec![0; 7], vec![0; 7]);
        fill_row(
            Task::Next,
            &cfg,
            0,
            "s",
            &values,
            RowOut {
                input: &mut i,
                target: &mut t,
                loss_mask: &mut m,
            },
        );
        assert_eq!(i, [5, 6, 7, 8, 9, PAD_TOKEN, PAD_TOKEN]);
        // t=0 sees 5 and must say 8 (three ahead); t=1 → 9; no target after.
        assert_eq!(
            t,
            [8, 9, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]
        );
        assert_eq!(m, [1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn mask_config_ranges_are_checked() {
        assert!(MaskConfig::default().check().is_ok());
        for bad in [
            MaskConfig {
                rate: 0.0,
                ..Default::default()
            },
            MaskConfig {
                mean_span: 0.5,
                ..Default::default()
            },
            MaskConfig {
                horizon: 0,
                ..Default::default()
            },
            MaskConfig {
                horizon: MAX_HORIZON + 1,
                ..Default::default()
            },
            MaskConfig {
                mask_fraction: 0.9,
                random_fraction: 0.2,
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn next_targets_shift_by_one() {
        let values = [5u8, 6, 7, 8];
        let (i, t, m) = row(Task::Next, &values, 6, 0);
        assert_eq!(i, [5, 6, 7, 8, PAD_TOKEN, PAD_TOKEN]);
        assert_eq!(t, [6, 7, 8, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]);
        assert_eq!(m, [1, 1, 1, 0, 0, 0]);
    }
}

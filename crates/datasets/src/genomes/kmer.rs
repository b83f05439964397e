//! Canonical k-mers of DNA values and the cheap hashing the split and the leakage measure use.

use std::hash::{BuildHasherDefault, Hasher};

use super::K;

/// Maps a base to its value: A, C, G, T (either case) → 1, 2, 3, 4;
/// anything else → 0.
pub fn base_value(b: u8) -> u8 {
    match b {
        b'A' | b'a' => 1,
        b'C' | b'c' => 2,
        b'G' | b'g' => 3,
        b'T' | b't' => 4,
        _ => 0,
    }
}

/// Calls `f` with the canonical form of every k-mer ([`K`] bases) of
/// `values` that holds no value outside 1..=4: the smaller of the k-mer and
/// its reverse complement, two bits per base (A=0, C=1, G=2, T=3), first
/// base most significant.
pub fn for_each_canonical_kmer(values: &[u8], mut f: impl FnMut(u64)) {
    const MASK: u64 = (1 << (2 * K)) - 1;
    const TOP: u32 = 2 * (K as u32 - 1);
    let (mut fwd, mut rev, mut run) = (0u64, 0u64, 0usize);
    for &v in values {
        if !(1..=4).contains(&v) {
            run = 0;
            continue;
        }
        let c = u64::from(v - 1);
        fwd = ((fwd << 2) | c) & MASK;
        rev = (rev >> 2) | ((3 - c) << TOP);
        run += 1;
        if run >= K {
            f(fwd.min(rev));
        }
    }
}

/// The distinct canonical k-mers of `values`, sorted.
pub(super) fn unique_kmers(values: &[u8]) -> Vec<u64> {
    let mut v = Vec::with_capacity(values.len());
    for_each_canonical_kmer(values, |k| v.push(k));
    v.sort_unstable();
    v.dedup();
    v
}

/// splitmix64's finaliser: k-mers are structured, hash tables want noise.
pub(super) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A cheap hasher for `u64` keys (SipHash is several times slower here and
/// the keys are not attacker-chosen).
#[derive(Default)]
pub(super) struct KmerHasher(u64);

impl Hasher for KmerHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }
}

pub(super) type KmerBuild = BuildHasherDefault<KmerHasher>;

/// The split of the reference windows a k-mer occurs in; ambiguous when in
/// two splits.
pub(super) const AMBIGUOUS: u8 = u8::MAX;

/// FNV-1a of a string, to derive per-record seeds that do not depend on
/// what else is in the input.
pub(super) fn fnv1a(s: &str) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

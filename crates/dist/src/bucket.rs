//! [`GradBuckets`]: gradients all-reduced in a few flat buckets instead of
//! one collective per parameter (DDP's bucketing, without the overlap).

use std::ops::Range;

use tch::{Kind, Tensor};

use crate::error::DistError;
use crate::group::ProcessGroup;

/// Default bucket size: 25 MiB, as DDP's `bucket_cap_mb`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// A fixed split of a parameter list into consecutive buckets of at most
/// `bucket_bytes` (a larger parameter gets a bucket of its own), each of one
/// dtype. Every rank must plan from the same parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GradBuckets {
    /// Parameter indices of each bucket.
    buckets: Vec<Range<usize>>,
    /// Shape of each parameter.
    shapes: Vec<Vec<i64>>,
    /// Elements of each parameter.
    numels: Vec<i64>,
    /// Dtype of each parameter.
    kinds: Vec<Kind>,
}

impl GradBuckets {
    /// Plans buckets for gradients shaped like `params`.
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> Self {
        let mut buckets = Vec::new();
        let (mut start, mut bytes) = (0usize, 0usize);
        let kinds: Vec<Kind> = params.iter().map(Tensor::kind).collect();
        for (i, p) in params.iter().enumerate() {
            let size = p.numel() * p.kind().elt_size_in_bytes();
            let kind_changes = i > start && kinds[i] != kinds[start];
            if i > start && (bytes + size > bucket_bytes || kind_changes) {
                buckets.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += size;
        }
        if start < params.len() {
            buckets.push(start..params.len());
        }
        Self {
            buckets,
            shapes: params.iter().map(Tensor::size).collect(),
            numels: params.iter().map(|p| p.numel() as i64).collect(),
            kinds,
        }
    }

    /// Number of buckets (collectives per step).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there is nothing to reduce.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Total elements over all parameters.
    pub fn numel(&self) -> i64 {
        self.numels.iter().sum()
    }

    /// Sums `grads` (one per parameter, in plan order) over the ranks:
    /// copies them into flat contiguous buckets, all-reduces every bucket in
    /// one call, and returns the sums shaped like the parameters.
    pub fn all_reduce(
        &self,
        group: &ProcessGroup,
        grads: &[Tensor],
    ) -> Result<Vec<Tensor>, DistError> {
        if grads.len() != self.shapes.len() {
            return Err(DistError::InvalidTensor {
                op: "all_reduce",
                reason: format!(
                    "{} gradients for a plan of {} parameters",
                    grads.len(),
                    self.shapes.len()
                ),
            });
        }
        for (i, g) in grads.iter().enumerate() {
            if g.size() != self.shapes[i] || g.kind() != self.kinds[i] {
                return Err(DistError::InvalidTensor {
                    op: "all_reduce",
                    reason: format!(
                        "gradient {i} is {:?} {:?}, the plan has {:?} {:?}",
                        g.kind(),
                        g.size(),
                        self.kinds[i],
                        self.shapes[i]
                    ),
                });
            }
        }
        let mut flat: Vec<Tensor> = self
            .buckets
            .iter()
            .map(|r| {
                let parts: Vec<Tensor> = grads[r.clone()]
                    .iter()
                    .map(|g| g.f_reshape([-1]))
                    .collect::<Result<_, _>>()?;
                Tensor::f_cat(&parts, 0)?.f_contiguous()
            })
            .collect::<Result<_, _>>()?;
        group.all_reduce_sum(&mut flat)?;
        let mut out = Vec::with_capacity(grads.len());
        for (r, bucket) in self.buckets.iter().zip(&flat) {
            let parts = bucket.f_split_with_sizes(&self.numels[r.clone()], 0)?;
            for (i, part) in r.clone().zip(parts) {
                out.push(part.f_view(self.shapes[i].as_slice())?);
            }
        }
        Ok(out)
    }
}

/// A short hex digest (64-bit FNV-1a) of the tensors' bytes, in order: equal
/// digests on two ranks mean bit-identical parameters.
pub fn digest(tensors: &[Tensor]) -> Result<String, DistError> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        let bytes = t
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .f_reshape([-1])?
            .f_view_dtype(Kind::Uint8)?;
        let bytes = Vec::<u8>::try_from(&bytes)?;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_consecutive_buckets_under_the_cap() {
        let params: Vec<Tensor> = [10i64, 10, 30, 5, 5]
            .iter()
            .map(|&n| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu)))
            .collect();
        // 80 bytes: 10+10 floats fit, 30 floats (120 bytes) alone, 5+5 fit.
        let b = GradBuckets::new(&params, 80);
        assert_eq!(b.buckets, vec![0..2, 2..3, 3..5]);
        assert_eq!(b.numel(), 60);
        let one = GradBuckets::new(&params, DEFAULT_BUCKET_BYTES);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn digest_sees_one_bit() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.0, 3.000_000_2]);
        assert_eq!(
            digest(&[a.shallow_clone()]).unwrap(),
            digest(&[a.copy()]).unwrap()
        );
        assert_ne!(digest(&[a]).unwrap(), digest(&[b]).unwrap());
    }
}

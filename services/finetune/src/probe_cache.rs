//! Pooled features of frozen encoders, computed once per encoder for every
//! labeled row and shared by every linear probe of that encoder (all label
//! fractions of a grid): a probe then costs only its head's training.

use std::collections::HashMap;
use std::rc::Rc;

use pretext_core::bucket::BucketConfig;
use pretext_model::Classifier;
use pretext_model::tch::{self, Tensor};

use crate::data::{Example, LabeledData, batches};
use crate::error::FinetuneError;

/// The pooled features ([N, 2C + 1], eval mode, whole rows) of every
/// labeled row, in the order of [`LabeledData`]'s splits.
#[derive(Debug)]
pub struct PooledRows {
    /// `train` rows.
    pub train: Tensor,
    /// `valid` rows.
    pub valid: Tensor,
    /// `test` rows.
    pub test: Tensor,
}

/// Features by encoder key (a checkpoint path, or the seed and shape of a
/// randomly initialised encoder).
#[derive(Debug, Default)]
pub struct ProbeCache {
    entries: HashMap<String, Rc<PooledRows>>,
    hits: usize,
}

impl ProbeCache {
    /// The features of `key`, computed with `model`'s encoder on first use.
    pub fn get_or_compute(
        &mut self,
        key: &str,
        model: &Classifier,
        data: &LabeledData,
        buckets: &BucketConfig,
    ) -> Result<Rc<PooledRows>, FinetuneError> {
        if let Some(e) = self.entries.get(key) {
            self.hits += 1;
            return Ok(Rc::clone(e));
        }
        let rows = Rc::new(PooledRows {
            train: pooled_in_order(model, &data.train, buckets)?,
            valid: pooled_in_order(model, &data.valid, buckets)?,
            test: pooled_in_order(model, &data.test, buckets)?,
        });
        self.entries.insert(key.to_owned(), Rc::clone(&rows));
        Ok(rows)
    }

    /// How many requests were served from the cache.
    pub fn hits(&self) -> usize {
        self.hits
    }
}

/// Pooled features of `examples` in their order (batches are bucketed by
/// length, so rows are put back by id).
pub fn pooled_in_order(
    model: &Classifier,
    examples: &[Example],
    buckets: &BucketConfig,
) -> Result<Tensor, FinetuneError> {
    let index: HashMap<&str, i64> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i as i64))
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    tch::no_grad(|| -> Result<Tensor, FinetuneError> {
        let (mut parts, mut order) = (Vec::new(), Vec::new());
        for b in batches(&refs, buckets, 0, 0, None, false) {
            let n = b.rows() as i64;
            let tokens = Tensor::from_slice(&b.input).view([n, b.bucket_len as i64]);
            let lengths: Vec<i64> = b.lengths.iter().map(|&l| i64::from(l)).collect();
            parts.push(model.pooled(&tokens, &Tensor::from_slice(&lengths), false)?);
            order.extend(b.seq_ids.iter().map(|id| index[id.as_str()]));
        }
        let stacked = Tensor::f_cat(&parts, 0)?;
        // Row r of `stacked` is example order[r]: invert the permutation.
        let mut inverse = vec![0i64; order.len()];
        for (r, &i) in order.iter().enumerate() {
            inverse[i as usize] = r as i64;
        }
        Ok(stacked.f_index_select(0, &Tensor::from_slice(&inverse))?)
    })
}

//! `ModelConfig`: everything needed to rebuild the encoder and its heads.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

// The vocabulary is pretext-core's (the batch contract); these are its
// values as the i64 that tensors take.

/// Number of value tokens (0..=40); the size of the token head's output.
pub const NUM_VALUES: i64 = pretext_core::NUM_VALUES as i64;
/// Token id of a masked position in `input`.
pub const MASK_TOKEN: i64 = pretext_core::MASK_TOKEN as i64;
/// Token id of a padded position (beyond a row's `length`).
pub const PAD_TOKEN: i64 = pretext_core::PAD_TOKEN as i64;
/// Number of distinct token ids an input may hold (values, MASK, PAD).
pub const NUM_TOKENS: i64 = pretext_core::NUM_TOKENS as i64;

/// How token ids become the first feature map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputEncoding {
    /// A learned vector per token id (`nn::embedding` over 43 ids).
    #[default]
    Embedding,
    /// The user's original encoder: `Conv1d(1, width, kernel)` over the value
    /// as a float (scaled by 1/40). MASK and PAD enter the convolution as 0;
    /// a learned vector is then added at MASK positions so the model can
    /// tell a masked step from a true 0, and PAD positions are zeroed.
    Scalar,
}

/// Which positions an output may depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both sides: symmetric "same" padding (needs an odd kernel). For the
    /// `masked` task and for classification.
    #[default]
    Bidirectional,
    /// Left padding of `(kernel - 1) * dilation` only: nothing at `t` sees
    /// `t + 1`. Required by the `next` task.
    Causal,
}

/// The normalisation inside the residual blocks. Both ignore padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// LayerNorm over channels at each position (statistics never cross
    /// positions), so it is causal and padding-invariant by construction.
    /// Works in both directions, so masked and next-step models differ only
    /// in their padding.
    #[default]
    Layer,
    /// GroupNorm whose statistics use the real positions of each row only.
    /// Statistics span the whole sequence, so it is rejected for causal
    /// models.
    Group,
}

/// Compute precision of the convolutions and linear layers; parameters,
/// normalisation, pooling and losses stay in the parameters' kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in the parameters' kind (f32 by default).
    #[default]
    Full,
    /// Convolutions and linear layers in bf16 with f32 master weights, as
    /// `torch.autocast(dtype=torch.bfloat16)` does. Meant for CUDA; also runs
    /// (slowly) on CPU.
    Bf16,
}

/// The architecture of the dilated residual 1-D CNN. Saved in every
/// checkpoint; it is all that is needed to rebuild the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Channels of every feature map (default 128).
    pub width: i64,
    /// Number of residual blocks (default 8).
    pub depth: usize,
    /// Kernel size of every dilated convolution (default 5; odd when
    /// bidirectional).
    pub kernel: i64,
    /// Block `i` uses dilation `dilation_base^(i mod cycle)` (default 2).
    pub dilation_base: i64,
    /// Length of the dilation cycle; 0 means no cycle, i.e. the dilation
    /// keeps growing to `base^(depth-1)` (default 0: 1, 2, 4, …, 128).
    pub dilation_cycle: usize,
    /// Input encoder (default `embedding`).
    pub input: InputEncoding,
    /// `bidirectional` (default) or `causal`.
    pub direction: Direction,
    /// Normalisation in the blocks (default `layer`).
    pub norm: NormKind,
    /// Groups of the `group` normalisation; must divide `width` (default 8).
    pub norm_groups: i64,
    /// Dropout probability after each activation in training mode (default 0).
    pub dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            width: 128,
            depth: 8,
            kernel: 5,
            dilation_base: 2,
            dilation_cycle: 0,
            input: InputEncoding::Embedding,
            direction: Direction::Bidirectional,
            norm: NormKind::Layer,
            norm_groups: 8,
            dropout: 0.0,
        }
    }
}

impl ModelConfig {
    /// Dilation of residual block `block` (both of its convolutions use it).
    pub fn dilation(&self, block: usize) -> i64 {
        let exponent = match self.dilation_cycle {
            0 => block,
            cycle => block % cycle,
        };
        self.dilation_base.pow(exponent as u32)
    }

    /// Dilations of all blocks, in order.
    pub fn dilations(&self) -> Vec<i64> {
        (0..self.depth).map(|b| self.dilation(b)).collect()
    }

    /// Number of input positions an output position depends on (including
    /// itself). Bidirectional models see half of it on each side, causal
    /// models all of it on the left. 2,041 steps at the defaults.
    pub fn receptive_field(&self) -> i64 {
        let input = match self.input {
            InputEncoding::Embedding => 0,
            InputEncoding::Scalar => self.kernel - 1,
        };
        let blocks: i64 = self
            .dilations()
            .iter()
            .map(|d| 2 * (self.kernel - 1) * d)
            .sum();
        1 + input + blocks
    }

    /// Checks the configuration; every constructor calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        let fail = |msg: String| Err(ModelError::Config(msg));
        if self.width < 1 {
            return fail(format!("width must be positive, got {}", self.width));
        }
        if self.depth < 1 {
            return fail("depth must be at least 1".into());
        }
        if self.kernel < 1 {
            return fail(format!("kernel must be positive, got {}", self.kernel));
        }
        if self.direction == Direction::Bidirectional && self.kernel % 2 == 0 {
            return fail(format!(
                "a bidirectional model needs an odd kernel (symmetric padding), got {}",
                self.kernel
            ));
        }
        if self.dilation_base < 1 {
            return fail(format!(
                "dilation_base must be positive, got {}",
                self.dilation_base
            ));
        }
        let max_exp = match self.dilation_cycle {
            0 => self.depth - 1,
            c => (c - 1).min(self.depth - 1),
        };
        let fits = u32::try_from(max_exp)
            .ok()
            .and_then(|e| self.dilation_base.checked_pow(e))
            .is_some_and(|d| d <= 1 << 20);
        if !fits {
            return fail("the largest dilation exceeds 2^20".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.norm == NormKind::Group {
            if self.direction == Direction::Causal {
                return fail(
                    "norm = group uses statistics over the whole sequence, which breaks \
                     causality; use norm = layer for causal models"
                        .into(),
                );
            }
            if self.norm_groups < 1 || self.width % self.norm_groups != 0 {
                return fail(format!(
                    "norm_groups ({}) must divide width ({})",
                    self.norm_groups, self.width
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reach_thousands_of_steps() {
        let c = ModelConfig::default();
        c.validate().unwrap();
        assert_eq!(c.dilations(), vec![1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(c.receptive_field(), 2041);
        let cycled = ModelConfig {
            dilation_cycle: 4,
            ..c
        };
        assert_eq!(cycled.dilations(), vec![1, 2, 4, 8, 1, 2, 4, 8]);
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = [
            ModelConfig {
                width: 0,
                ..Default::default()
            },
            ModelConfig {
                kernel: 4,
                ..Default::default()
            },
            ModelConfig {
                norm: NormKind::Group,
                norm_groups: 7,
                ..Default::default()
            },
            ModelConfig {
                norm: NormKind::Group,
                direction: Direction::Causal,
                ..Default::default()
            },
            ModelConfig {
                dropout: 1.0,
                ..Default::default()
            },
            ModelConfig {
                depth: 40,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(ModelError::Config(_))),
                "{c:?} accepted"
            );
        }
        let causal_even = ModelConfig {
            kernel: 4,
            direction: Direction::Causal,
            ..Default::default()
        };
        causal_even.validate().unwrap();
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let c: ModelConfig = serde_json::from_str(r#"{"width": 64, "input": "scalar"}"#).unwrap();
        assert_eq!(
            c,
            ModelConfig {
                width: 64,
                input: InputEncoding::Scalar,
                ..Default::default()
            }
        );
        let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<ModelConfig>(r#"{"widht": 64}"#).is_err());
    }
}

//! Heads and whole models: `PretrainModel` (encoder + 41-way token head)
//! and `Classifier` (encoder + mean- and max-pooled linear head).

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::config::{ModelConfig, NUM_VALUES, Precision};
use crate::encoder::{Encoder, EncoderInput};
use crate::error::ModelError;
use crate::layers::{bool_mask, default_init, integer_input, linear};
use crate::loss::{LossStats, cross_entropy_stats, selected_positions};

/// Pooled features per encoder channel: the mean and the maximum.
pub const POOLS: i64 = 2;

/// Features of the row itself beside the pooled ones: the log of its length.
pub const ROW_FEATURES: i64 = 1;

/// Width of the classifier head's input for an encoder of `width` channels:
/// mean and max per channel, then the log length.
pub fn head_features(width: i64) -> i64 {
    POOLS * width + ROW_FEATURES
}

/// Prefix of every encoder variable in a model's `VarStore` (tch joins path
/// components with `.`, as PyTorch's `state_dict` does).
pub const ENCODER_PREFIX: &str = "encoder.";

/// A linear map over channels. Variables: `weight` [out, in], `bias` [out].
#[derive(Debug)]
struct ChannelLinear {
    weight: Tensor,
    bias: Tensor,
}

impl ChannelLinear {
    fn new(path: nn::Path, in_dim: i64, out_dim: i64) -> Self {
        let init = default_init(in_dim);
        Self {
            weight: path.var("weight", &[out_dim, in_dim], init),
            bias: path.var("bias", &[out_dim], init),
        }
    }

    /// # Shapes
    /// [.., in] → [.., out]
    fn forward(&self, x: &Tensor, precision: Precision) -> Tensor {
        linear(x, &self.weight, &self.bias, precision)
    }
}

/// The accessors every model over an [`Encoder`] has, written once: a
/// struct with fields `vs: nn::VarStore` and `encoder: Encoder` gets
/// `var_store`, `var_store_mut`, `encoder`, `config` and `set_precision`.
macro_rules! encoder_model_accessors {
    () => {
        /// The variables (for checkpoints and the optimiser).
        pub fn var_store(&self) -> &nn::VarStore {
            &self.vs
        }

        /// Mutable access to the variables (loading, `double()`, device moves).
        pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
            &mut self.vs
        }

        /// The encoder.
        pub fn encoder(&self) -> &Encoder {
            &self.encoder
        }

        /// The configuration it was built from.
        pub fn config(&self) -> &ModelConfig {
            self.encoder.config()
        }

        /// Compute precision of convolutions and linear layers.
        pub fn set_precision(&mut self, precision: Precision) {
            self.encoder.set_precision(precision);
        }
    };
}

/// Encoder plus a 41-way token head (a 1×1 convolution, stored as a linear
/// layer `token_head.{weight [41, C], bias [41]}`), for masked-step and
/// next-step pretraining. Owns its `VarStore`: `encoder.*`, `token_head.*`.
#[derive(Debug)]
pub struct PretrainModel {
    vs: nn::VarStore,
    encoder: Encoder,
    head: ChannelLinear,
}

impl PretrainModel {
    /// Builds a freshly initialised model on `device` (seed with
    /// `tch::manual_seed` first for reproducible weights).
    pub fn new(config: &ModelConfig, device: Device) -> Result<Self, ModelError> {
        let vs = nn::VarStore::new(device);
        let encoder = Encoder::new(vs.root() / "encoder", config)?;
        let head = ChannelLinear::new(vs.root() / "token_head", config.width, NUM_VALUES);
        Ok(Self { vs, encoder, head })
    }

    encoder_model_accessors!();

    /// Encoder features.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]` → [N, C, L].
    pub fn features(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.encoder.forward_t(tokens, lengths, train)
    }

    /// Token logits at every position.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]` → [N, 41, L].
    pub fn forward_t(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let features = self
            .features(tokens, lengths, train)?
            .f_permute([0, 2, 1])?; // [N, L, C]
        Ok(self
            .head
            .forward(&features, self.encoder.precision())
            .f_permute([0, 2, 1])?) // [N, 41, L]
    }

    /// The pretraining loss: the head runs on the `loss_mask` positions only,
    /// and targets elsewhere are ignored. Same value as
    /// [`crate::token_loss`] on [`Self::forward_t`]'s logits.
    ///
    /// # Shapes
    /// `tokens`, `targets`, `loss_mask`: [N, L]; `lengths`: `[N]`.
    pub fn loss(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        targets: &Tensor,
        loss_mask: &Tensor,
        train: bool,
    ) -> Result<LossStats, ModelError> {
        let device = self.encoder.device();
        let input = EncoderInput::new(tokens, lengths, device)?;
        let shape = input.tokens.size();
        let targets = integer_input(targets, "targets", "[N, L]", 2, device)?;
        if targets.size() != shape {
            return Err(ModelError::Shape {
                what: "targets",
                expected: format!("{shape:?}"),
                got: targets.size(),
            });
        }
        let positions = selected_positions(&bool_mask(loss_mask, "loss_mask", &shape, device)?)?; // [M]
        let features = self.encoder.forward_input(&input, train); // [N, C, L]
        let c = features.size()[1];
        let selected = features
            .f_permute([0, 2, 1])?
            .f_reshape([-1, c])?
            .f_index_select(0, &positions)?; // [M, C]
        let logits = self.head.forward(&selected, self.encoder.precision()); // [M, 41]
        cross_entropy_stats(
            &logits,
            &targets.f_flatten(0, -1)?.f_index_select(0, &positions)?,
        )
    }
}

/// Encoder plus a classifier: the mean and the maximum of the features over
/// each row's real positions and the log of the row's length, concatenated
/// ([2C + 1]), standardised by fixed per-feature statistics
/// (`classifier_head.feature_shift`, `classifier_head.feature_scale`,
/// [2C + 1], not trained; identity until [`Classifier::calibrate`] or
/// [`Classifier::calibrate_length`]), then `classifier_head.{weight
/// [K, 2C + 1], bias [K]}`. Owns its `VarStore`: `encoder.*`,
/// `classifier_head.*`.
///
/// Why the length: pooling over positions hides it, and on real data it
/// can tell classes apart by itself (pieces of one kind of music are longer
/// than another's; lengths vary 60x). A logistic regression on [log
/// length, value histogram] beat every fine-tuned CNN without it.
///
/// Why the maximum: what marks a class is often local (a pattern present
/// somewhere in a long row). The mean dilutes it by the row's length; the
/// maximum keeps it. Measured on the synthetic data (classes differ only in
/// the order of values inside short motifs), a linear probe on a masked-
/// pretrained encoder with 3 labels per class: 29% from the mean, 52% from
/// mean and max (chance 25%).
///
/// Why standardise: the encoder's features are layer-normalised at every
/// position, so their mean over hundreds of positions is nearly the same
/// vector for every sequence; what tells classes apart is a small
/// per-channel deviation from it. Without rescaling, the head's weights
/// must grow by orders of magnitude before the logits move, which a
/// fine-tuning budget of a few hundred Adam steps never reaches. Fixed
/// statistics suit a frozen encoder (the probe); a trainable encoder's
/// features move, and fixed statistics amplify every move. So after the
/// fixed standardisation comes a batch normalisation without affine
/// parameters (`classifier_head.norm_mean`, `classifier_head.norm_var`,
/// running statistics, not trained): it follows the features as they move.
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    encoder: Encoder,
    head: ChannelLinear,
    feature_shift: Tensor,
    feature_scale: Tensor,
    norm_mean: Tensor,
    norm_var: Tensor,
    feature_norm: bool,
    num_classes: i64,
}

/// Momentum of the running statistics of the head's batch normalisation
/// (PyTorch's default).
pub const FEATURE_NORM_MOMENTUM: f64 = 0.1;
/// Epsilon of the head's batch normalisation (PyTorch's default).
pub const FEATURE_NORM_EPS: f64 = 1e-5;

impl Classifier {
    /// Builds a freshly initialised classifier over `num_classes` classes.
    pub fn new(config: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, ModelError> {
        if num_classes < 2 {
            return Err(ModelError::Config(format!(
                "need at least 2 classes, got {num_classes}"
            )));
        }
        let vs = nn::VarStore::new(device);
        let encoder = Encoder::new(vs.root() / "encoder", config)?;
        let pooled = head_features(config.width);
        let head = ChannelLinear::new(vs.root() / "classifier_head", pooled, num_classes);
        let head_path = vs.root() / "classifier_head";
        let feature_shift = head_path.zeros_no_train("feature_shift", &[pooled]);
        let feature_scale = head_path.ones_no_train("feature_scale", &[pooled]);
        let norm_mean = head_path.zeros_no_train("norm_mean", &[pooled]);
        let norm_var = head_path.ones_no_train("norm_var", &[pooled]);
        Ok(Self {
            vs,
            encoder,
            head,
            feature_shift,
            feature_scale,
            norm_mean,
            norm_var,
            feature_norm: true,
            num_classes,
        })
    }

    /// Sets the standardisation of pooled features to the per-channel mean
    /// and standard deviation of `pooled` ([M, 2C + 1], e.g. [`Self::pooled`]
    /// over unlabeled train rows in eval mode). Needs at least 2 rows.
    pub fn calibrate(&mut self, pooled: &Tensor) -> Result<(), ModelError> {
        let c = head_features(self.config().width);
        let (m, width) = pooled.size2().map_err(|_| ModelError::Shape {
            what: "pooled features",
            expected: format!("[M, {c}]"),
            got: pooled.size(),
        })?;
        if width != c || m < 2 {
            return Err(ModelError::Shape {
                what: "pooled features",
                expected: format!("[M >= 2, {c}]"),
                got: pooled.size(),
            });
        }
        let pooled = pooled
            .f_to_kind(self.feature_shift.kind())?
            .f_to_device(self.feature_shift.device())?;
        let mean = pooled.f_mean_dim(0, false, None)?;
        let std = pooled.f_std_correction(0, 1, false)?.f_clamp_min(1e-6)?;
        tch::no_grad(|| -> Result<(), ModelError> {
            self.feature_shift.f_copy_(&mean)?;
            self.feature_scale.f_copy_(&std)?;
            Ok(())
        })
    }

    /// Standardises only the log-length feature, to `mean` and `std` of the
    /// log lengths of the training rows; the encoder's features keep
    /// their scale (a trainable encoder's features move, and fixed
    /// statistics would amplify every move).
    pub fn calibrate_length(&mut self, mean: f64, std: f64) -> Result<(), ModelError> {
        let last = head_features(self.config().width) - 1;
        tch::no_grad(|| -> Result<(), ModelError> {
            let _ = self.feature_shift.f_narrow(0, last, 1)?.f_fill_(mean)?;
            let _ = self
                .feature_scale
                .f_narrow(0, last, 1)?
                .f_fill_(std.max(1e-6))?;
            Ok(())
        })
    }

    /// Turns the head's batch normalisation on (the default) or off. Off,
    /// training uses the running statistics as they are and never updates
    /// them (identity for a fresh head), so a model trained that way is the
    /// plain linear head on the fixed standardisation.
    pub fn set_feature_norm(&mut self, on: bool) {
        self.feature_norm = on;
    }

    /// The running statistics of the head's batch normalisation: (mean,
    /// variance), each [2C + 1].
    pub fn feature_norm_stats(&self) -> (Tensor, Tensor) {
        (self.norm_mean.copy(), self.norm_var.copy())
    }

    /// The current standardisation: (shift, scale), each [2C + 1].
    pub fn standardisation(&self) -> (Tensor, Tensor) {
        (self.feature_shift.copy(), self.feature_scale.copy())
    }

    encoder_model_accessors!();

    /// Number of classes `K`.
    pub fn num_classes(&self) -> i64 {
        self.num_classes
    }

    /// Copies the encoder variables (`encoder.*`) from a weight file, e.g. a
    /// pretraining checkpoint's `model.safetensors`; other variables in the
    /// file (the token head) are ignored and the classifier head keeps its
    /// fresh initialisation. Returns how many variables were copied.
    pub fn load_encoder(&mut self, weights: &Path) -> Result<usize, ModelError> {
        let named: HashMap<String, Tensor> =
            Tensor::read_safetensors(weights)?.into_iter().collect();
        copy_encoder(&self.vs, &named, &weights.display().to_string())
    }

    /// Copies the encoder variables from another model's `VarStore` (e.g.
    /// [`PretrainModel::var_store`]).
    pub fn load_encoder_from(&mut self, source: &nn::VarStore) -> Result<usize, ModelError> {
        copy_encoder(&self.vs, &source.variables(), "source var store")
    }

    /// Stops gradients to the encoder (linear probe). Build the optimiser
    /// after this call: it takes only variables that require gradients.
    pub fn freeze_encoder(&mut self) {
        self.set_encoder_trainable(false);
    }

    /// Undoes [`Self::freeze_encoder`].
    pub fn unfreeze_encoder(&mut self) {
        self.set_encoder_trainable(true);
    }

    fn set_encoder_trainable(&mut self, trainable: bool) {
        for (name, var) in self.vs.variables() {
            if name.starts_with(ENCODER_PREFIX) {
                let _ = var.set_requires_grad(trainable);
            }
        }
    }

    /// The mean and the maximum of the encoder features over each row's real
    /// positions (dropout at the config's rate in training mode), then the
    /// log of the row's length.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]` → [N, 2C + 1].
    pub fn pooled(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let input = EncoderInput::new(tokens, lengths, self.encoder.device())?;
        Ok(self.pool(&input, None, train))
    }

    /// [`Self::pooled`] of crops: `tokens` and `lengths` are the crops, the
    /// length feature is `row_lengths` (`[N]`, the whole rows' lengths), as
    /// it would be on the whole rows.
    pub fn pooled_crops(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        row_lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let input = EncoderInput::new(tokens, lengths, self.encoder.device())?;
        let rows = integer_input(row_lengths, "row lengths", "[N]", 1, self.encoder.device())?;
        if rows.size() != input.lengths.size() {
            return Err(ModelError::Shape {
                what: "row lengths",
                expected: format!("{:?}", input.lengths.size()),
                got: rows.size(),
            });
        }
        Ok(self.pool(&input, Some(&rows), train))
    }

    fn pool(&self, input: &EncoderInput, row_lengths: Option<&Tensor>, train: bool) -> Tensor {
        let features = self.encoder.forward_input(input, train); // [N, C, L], zero at padding
        let lengths = input.lengths.to_kind(features.kind()).unsqueeze(1); // [N, 1]
        let mean = features.sum_dim_intlist(2, false, None) / &lengths; // [N, C]
        let padding = input.mask.logical_not().unsqueeze(1); // [N, 1, L]
        let max = features
            .masked_fill(&padding, f64::NEG_INFINITY)
            .amax(&[2][..], false); // [N, C]
        let pooled = Tensor::cat(&[mean, max], 1); // [N, 2C]
        let dropout = self.encoder.config().dropout;
        let pooled = if dropout > 0.0 {
            pooled.dropout(dropout, train)
        } else {
            pooled
        };
        let row_lengths = match row_lengths {
            Some(r) => r.to_kind(features.kind()).unsqueeze(1),
            None => lengths,
        };
        let log_len = row_lengths.clamp_min(1.0).log(); // [N, 1]
        Tensor::cat(&[pooled, log_len], 1) // [N, 2C + 1]
    }

    /// Class logits of pooled features ([`Self::pooled`]): standardised by
    /// the fixed statistics, batch-normalised (batch statistics in training
    /// with at least 2 rows, which also update the running ones; the
    /// running statistics otherwise), then the linear head. What a linear
    /// probe trains on cached features.
    ///
    /// # Shapes
    /// `pooled`: [N, 2C + 1] → [N, K].
    pub fn logits_from_pooled(&self, pooled: &Tensor, train: bool) -> Tensor {
        let z = (pooled - &self.feature_shift) / &self.feature_scale;
        let batch_stats = train && self.feature_norm && z.size()[0] >= 2;
        let z = Tensor::batch_norm(
            &z,
            None::<&Tensor>,
            None::<&Tensor>,
            Some(&self.norm_mean),
            Some(&self.norm_var),
            batch_stats,
            FEATURE_NORM_MOMENTUM,
            FEATURE_NORM_EPS,
            false,
        );
        self.head.forward(&z, self.encoder.precision())
    }

    /// Class logits.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]` → [N, K].
    pub fn forward_t(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let input = EncoderInput::new(tokens, lengths, self.encoder.device())?;
        Ok(self.logits_from_pooled(&self.pool(&input, None, train), train))
    }

    /// Summed cross-entropy over the rows, with their count and accuracy.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]`, `labels`: `[N]` (integer, `0..K`).
    pub fn loss(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<LossStats, ModelError> {
        let logits = self.forward_t(tokens, lengths, train)?; // [N, K]
        cross_entropy_stats(&logits, labels)
    }
}

/// Copies every `encoder.*` variable of `dst` from `src`, checking names and
/// shapes.
fn copy_encoder(
    dst: &nn::VarStore,
    src: &HashMap<String, Tensor>,
    source_name: &str,
) -> Result<usize, ModelError> {
    let mut copied = 0;
    for (name, var) in dst.variables() {
        if !name.starts_with(ENCODER_PREFIX) {
            continue;
        }
        let from = src.get(&name).ok_or_else(|| ModelError::MissingVariable {
            name: name.clone(),
            source_name: source_name.to_string(),
        })?;
        if from.size() != var.size() {
            return Err(ModelError::VariableShape {
                name,
                stored: from.size(),
                model: var.size(),
            });
        }
        let from = from.f_to_device(var.device())?.f_to_kind(var.kind())?;
        tch::no_grad(|| var.shallow_clone().f_copy_(&from))?;
        copied += 1;
    }
    Ok(copied)
}

/// Number of elements in all variables of `vs` (for logs).
pub fn parameter_count(vs: &nn::VarStore) -> usize {
    vs.variables().values().map(|t| t.numel()).sum()
}

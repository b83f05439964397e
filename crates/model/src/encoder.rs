//! The encoder: input encoder, residual blocks of dilated convolutions with
//! masked normalisation and GELU, and a final normalisation.

use tch::{Device, Kind, Tensor, nn};

use crate::config::{InputEncoding, MASK_TOKEN, ModelConfig, NUM_TOKENS, NUM_VALUES, Precision};
use crate::error::ModelError;
use crate::layers::{DilatedConv, MaskedNorm, check_range, integer_input};

/// A validated batch on the model's device, ready for the encoder.
#[derive(Debug)]
pub struct EncoderInput {
    /// Token ids, int64 [N, L].
    pub tokens: Tensor,
    /// True lengths, int64 `[N]`, each in `1..=L`.
    pub lengths: Tensor,
    /// Real positions, bool [N, L]: `t < lengths[n]`.
    pub mask: Tensor,
}

impl EncoderInput {
    /// Checks `tokens` ([N, L], any integer kind, ids in 0..=42) and
    /// `lengths` (`[N]`, any integer kind, each in 1..=L) and moves them to
    /// `device`.
    ///
    /// # Shapes
    /// `tokens`: [N, L], `lengths`: `[N]`.
    pub fn new(tokens: &Tensor, lengths: &Tensor, device: Device) -> Result<Self, ModelError> {
        let tokens = integer_input(tokens, "tokens", "[N, L]", 2, device)?;
        let (n, l) = tokens.size2()?;
        if n == 0 || l == 0 {
            return Err(ModelError::Shape {
                what: "tokens",
                expected: "[N, L] with N, L > 0".into(),
                got: vec![n, l],
            });
        }
        let lengths = integer_input(lengths, "lengths", "[N]", 1, device)?;
        if lengths.size() != [n] {
            return Err(ModelError::Shape {
                what: "lengths",
                expected: format!("[{n}] (one per row of tokens)"),
                got: lengths.size(),
            });
        }
        check_range(&tokens, "tokens", 0, NUM_TOKENS - 1)?;
        check_range(&lengths, "lengths", 1, l)?;
        let positions = Tensor::f_arange(l, (Kind::Int64, device))?.f_unsqueeze(0)?; // [1, L]
        let mask = positions.f_lt_tensor(&lengths.f_unsqueeze(1)?)?; // [N, L]
        Ok(Self {
            tokens,
            lengths,
            mask,
        })
    }

    /// Number of rows `N`.
    pub fn rows(&self) -> i64 {
        self.tokens.size()[0]
    }

    /// The mask as [N, 1, L] in `kind`, for multiplying feature maps.
    pub fn feature_mask(&self, kind: Kind) -> Tensor {
        self.mask.unsqueeze(1).to_kind(kind)
    }
}

/// Turns token ids into the first feature map.
#[derive(Debug)]
enum InputEncoder {
    /// `encoder.input.embedding.weight` [43, C].
    Embedding { weight: Tensor },
    /// `encoder.input.conv.{weight,bias}`, `encoder.input.mask_vector` `[C]`.
    Scalar {
        conv: DilatedConv,
        mask_vector: Tensor,
    },
}

impl InputEncoder {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        match config.input {
            InputEncoding::Embedding => {
                let init = nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                };
                let weight = (&path / "embedding").var("weight", &[NUM_TOKENS, config.width], init);
                Self::Embedding { weight }
            }
            InputEncoding::Scalar => {
                let conv = DilatedConv::new(
                    &path / "conv",
                    1,
                    config.width,
                    config.kernel,
                    1,
                    config.direction,
                );
                let mask_vector = path.var(
                    "mask_vector",
                    &[config.width],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                );
                Self::Scalar { conv, mask_vector }
            }
        }
    }

    /// # Shapes
    /// tokens [N, L] int64, `mask` [N, 1, L] → [N, C, L], zero at padding.
    fn forward(&self, tokens: &Tensor, mask: &Tensor, precision: Precision) -> Tensor {
        match self {
            Self::Embedding { weight } => {
                let x = Tensor::embedding(weight, tokens, -1, false, false); // [N, L, C]
                x.permute([0, 2, 1]) * mask // [N, C, L]
            }
            Self::Scalar { conv, mask_vector } => {
                let kind = mask_vector.kind();
                let is_value = tokens.lt(NUM_VALUES).unsqueeze(1).to_kind(kind); // [N, 1, L]
                let is_mask = tokens.eq(MASK_TOKEN).unsqueeze(1).to_kind(kind); // [N, 1, L]
                // MASK and PAD read as 0; the value is scaled to [0, 1].
                let value = tokens.unsqueeze(1).to_kind(kind) * &is_value / (NUM_VALUES - 1) as f64;
                let x = conv.forward(&(value * mask), precision); // [N, C, L]
                (x + mask_vector.view([-1, 1]) * is_mask) * mask
            }
        }
    }
}

/// One pre-activation residual block:
/// `x + conv2(act(norm2(conv1(act(norm1(x))))))`, where `act` is GELU
/// then dropout, and padded positions are zero before every convolution.
#[derive(Debug)]
struct ResidualBlock {
    norm1: MaskedNorm,
    conv1: DilatedConv,
    norm2: MaskedNorm,
    conv2: DilatedConv,
    dropout: f64,
}

impl ResidualBlock {
    fn new(path: nn::Path, config: &ModelConfig, dilation: i64) -> Self {
        let c = config.width;
        let norm = |name: &str| MaskedNorm::new(&path / name, c, config.norm, config.norm_groups);
        let conv = |name: &str| {
            DilatedConv::new(
                &path / name,
                c,
                c,
                config.kernel,
                dilation,
                config.direction,
            )
        };
        Self {
            norm1: norm("norm1"),
            conv1: conv("conv1"),
            norm2: norm("norm2"),
            conv2: conv("conv2"),
            dropout: config.dropout,
        }
    }

    /// # Shapes
    /// `x`: [N, C, L] (zero at padding), `mask`: [N, 1, L] → [N, C, L].
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool, precision: Precision) -> Tensor {
        // The norms zero padded positions and GELU and dropout keep zeros
        // zero, so each convolution reads zeros there, as beyond the ends.
        let act = |h: Tensor| {
            let h = h.gelu("none");
            if self.dropout > 0.0 {
                h.dropout(self.dropout, train)
            } else {
                h
            }
        };
        let h = act(self.norm1.forward(x, mask));
        let h = self.conv1.forward(&h, precision);
        let h = act(self.norm2.forward(&h, mask));
        let h = self.conv2.forward(&h, precision);
        (x + h) * mask
    }
}

/// The dilated residual 1-D CNN. Variables live under the path it is built
/// from (`encoder.` in [`crate::PretrainModel`] and [`crate::Classifier`]):
/// `input.*`, `block{i}.{norm1,conv1,norm2,conv2}.*`, `final_norm.*`.
#[derive(Debug)]
pub struct Encoder {
    config: ModelConfig,
    input: InputEncoder,
    blocks: Vec<ResidualBlock>,
    final_norm: MaskedNorm,
    precision: Precision,
    device: Device,
}

impl Encoder {
    /// Builds the encoder's variables under `path`.
    pub fn new(path: nn::Path, config: &ModelConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let input = InputEncoder::new(&path / "input", config);
        let blocks = (0..config.depth)
            .map(|b| ResidualBlock::new(&path / format!("block{b}"), config, config.dilation(b)))
            .collect();
        let final_norm = MaskedNorm::new(
            &path / "final_norm",
            config.width,
            config.norm,
            config.norm_groups,
        );
        Ok(Self {
            config: *config,
            input,
            blocks,
            final_norm,
            precision: Precision::Full,
            device: path.device(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device its variables live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Compute precision of the convolutions (default [`Precision::Full`]).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The current compute precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Encodes a batch: checks the inputs, then runs [`Self::forward_input`].
    ///
    /// # Shapes
    /// `tokens`: [N, L] (ids 0..=42, any integer kind), `lengths`: `[N]` →
    /// features [N, C, L], zero at padded positions. A row's features at its
    /// real positions do not depend on how far it was padded.
    pub fn forward_t(
        &self,
        tokens: &Tensor,
        lengths: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let input = EncoderInput::new(tokens, lengths, self.device)?;
        Ok(self.forward_input(&input, train))
    }

    /// Encodes an already validated batch.
    ///
    /// # Shapes
    /// `input.tokens`: [N, L] → [N, C, L], zero at padded positions.
    pub fn forward_input(&self, input: &EncoderInput, train: bool) -> Tensor {
        let kind = self.final_norm.kind();
        let mask = input.feature_mask(kind); // [N, 1, L]
        let mut x = self.input.forward(&input.tokens, &mask, self.precision); // [N, C, L]
        for block in &self.blocks {
            x = block.forward(&x, &mask, train, self.precision);
        }
        self.final_norm.forward(&x, &mask)
    }
}

//! Building blocks that respect padding: dilated convolutions, masked
//! normalisation, and the checks applied to tensors coming from outside.

use tch::{Kind, Tensor, nn};

use crate::config::{Direction, NormKind, Precision};
use crate::error::ModelError;

/// Whether `kind` holds integers (the token, length and target columns).
pub(crate) fn is_integral(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64
    )
}

/// Checks that `t` is an integer tensor of the given rank and returns it as
/// int64 on `device`.
pub(crate) fn integer_input(
    t: &Tensor,
    what: &'static str,
    expected: &str,
    rank: usize,
    device: tch::Device,
) -> Result<Tensor, ModelError> {
    let size = t.size();
    if size.len() != rank {
        return Err(ModelError::Shape {
            what,
            expected: expected.to_string(),
            got: size,
        });
    }
    if !is_integral(t.kind()) {
        return Err(ModelError::Kind {
            what,
            expected: "integer",
            got: t.kind(),
        });
    }
    Ok(t.f_to_device(device)?.f_to_kind(Kind::Int64)?)
}

/// Fails unless every element of the int64 tensor `t` lies in `lo..=hi`.
pub(crate) fn check_range(
    t: &Tensor,
    what: &'static str,
    lo: i64,
    hi: i64,
) -> Result<(), ModelError> {
    if t.numel() == 0 {
        return Ok(());
    }
    let min = t.f_min()?.f_int64_value(&[])?;
    let max = t.f_max()?.f_int64_value(&[])?;
    for value in [min, max] {
        if value < lo || value > hi {
            return Err(ModelError::OutOfRange {
                what,
                value,
                allowed: format!("{lo}..={hi}"),
            });
        }
    }
    Ok(())
}

/// Checks the `loss_mask` argument ([N, L], bool or integer) and returns it
/// as a bool tensor on `device`.
pub(crate) fn bool_mask(
    t: &Tensor,
    what: &'static str,
    shape: &[i64],
    device: tch::Device,
) -> Result<Tensor, ModelError> {
    if t.size() != shape {
        return Err(ModelError::Shape {
            what,
            expected: format!("{shape:?}"),
            got: t.size(),
        });
    }
    match t.kind() {
        Kind::Bool => Ok(t.f_to_device(device)?),
        k if is_integral(k) => Ok(t.f_to_device(device)?.f_ne(0)?),
        got => Err(ModelError::Kind {
            what,
            expected: "bool or integer",
            got,
        }),
    }
}

/// PyTorch's default initialisation of convolution and linear layers:
/// uniform in ±1/sqrt(fan_in), for weights and biases.
pub(crate) fn default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Runs `x @ weight.T + bias` in the compute precision, returning the
/// parameters' kind.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, precision: Precision) -> Tensor {
    match precision {
        Precision::Full => x.linear(weight, Some(bias)),
        Precision::Bf16 => x
            .to_kind(Kind::BFloat16)
            .linear(
                &weight.to_kind(Kind::BFloat16),
                Some(bias.to_kind(Kind::BFloat16)),
            )
            .to_kind(weight.kind()),
    }
}

/// A 1-D convolution with dilation and causal or symmetric zero padding, so
/// the output has the input's length. Variables: `weight` [out, in, k],
/// `bias` [out] (PyTorch's `Conv1d` names and layout).
#[derive(Debug)]
pub(crate) struct DilatedConv {
    weight: Tensor,
    bias: Tensor,
    kernel: i64,
    dilation: i64,
    direction: Direction,
}

impl DilatedConv {
    pub(crate) fn new(
        path: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        dilation: i64,
        direction: Direction,
    ) -> Self {
        let init = default_init(in_channels * kernel);
        let weight = path.var("weight", &[out_channels, in_channels, kernel], init);
        let bias = path.var("bias", &[out_channels], init);
        Self {
            weight,
            bias,
            kernel,
            dilation,
            direction,
        }
    }

    /// # Shapes
    /// `x`: [N, C_in, L] → [N, C_out, L]. Position `t` of the output reads
    /// `t - span ..= t` (causal) or `t - span/2 ..= t + span/2`, with
    /// `span = (kernel - 1) * dilation`; positions outside `0..L` read 0.
    pub(crate) fn forward(&self, x: &Tensor, precision: Precision) -> Tensor {
        let span = (self.kernel - 1) * self.dilation;
        let (x, w, b) = match precision {
            Precision::Full => (
                x.shallow_clone(),
                self.weight.shallow_clone(),
                self.bias.shallow_clone(),
            ),
            Precision::Bf16 => (
                x.to_kind(Kind::BFloat16),
                self.weight.to_kind(Kind::BFloat16),
                self.bias.to_kind(Kind::BFloat16),
            ),
        };
        let y = match self.direction {
            // Left padding only: output t never reads t + 1.
            Direction::Causal => {
                x.constant_pad_nd([span, 0])
                    .conv1d(&w, Some(&b), [1], [0], [self.dilation], 1)
            }
            Direction::Bidirectional => x.conv1d(&w, Some(&b), [1], [span / 2], [self.dilation], 1),
        };
        y.to_kind(self.weight.kind())
    }
}

/// Normalisation that ignores padded positions (see [`NormKind`]).
/// Variables: `weight` `[C]` (ones), `bias` `[C]` (zeros).
#[derive(Debug)]
pub(crate) struct MaskedNorm {
    weight: Tensor,
    bias: Tensor,
    kind: NormKind,
    groups: i64,
}

const NORM_EPS: f64 = 1e-5;

impl MaskedNorm {
    pub(crate) fn new(path: nn::Path, channels: i64, kind: NormKind, groups: i64) -> Self {
        let weight = path.var("weight", &[channels], nn::Init::Const(1.0));
        let bias = path.var("bias", &[channels], nn::Init::Const(0.0));
        Self {
            weight,
            bias,
            kind,
            groups,
        }
    }

    /// The kind of its parameters (the model's float kind).
    pub(crate) fn kind(&self) -> Kind {
        self.weight.kind()
    }

    /// # Shapes
    /// `x`: [N, C, L], `mask`: [N, 1, L] (1 at real positions, 0 at padding,
    /// in `x`'s kind) → [N, C, L], zero at padded positions.
    pub(crate) fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (n, c, l) = x.size3().expect("MaskedNorm takes [N, C, L]");
        let normalised = match self.kind {
            // Statistics over channels at each position: no position sees
            // another, so padding and the future cannot leak in.
            NormKind::Layer => {
                let mean = x.mean_dim(1, true, None); // [N, 1, L]
                let centred = x - mean;
                let var = centred.square().mean_dim(1, true, None); // [N, 1, L]
                centred * (var + NORM_EPS).rsqrt()
            }
            // Statistics over the channels of a group and the real positions
            // of the row only.
            NormKind::Group => {
                let g = self.groups;
                let xg = x.view([n, g, c / g, l]);
                let m = mask.view([n, 1, 1, l]);
                let count = m.sum_dim_intlist(&[2i64, 3][..], true, None) * (c / g) as f64; // [N, 1, 1, 1]
                let mean = (&xg * &m).sum_dim_intlist(&[2i64, 3][..], true, None) / &count; // [N, G, 1, 1]
                let centred = (xg - mean) * &m;
                let var = centred.square().sum_dim_intlist(&[2i64, 3][..], true, None) / &count;
                (centred * (var + NORM_EPS).rsqrt()).view([n, c, l])
            }
        };
        (normalised * self.weight.view([c, 1]) + self.bias.view([c, 1])) * mask
    }
}

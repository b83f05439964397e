//! AdamW over a `VarStore`'s trainable variables, with saveable state, a
//! warmup + cosine learning-rate schedule and global-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::error::ModelError;

/// Hyper-parameters of [`AdamW`] and its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate, reached at the end of warmup (default 1e-3).
    pub lr: f64,
    /// Decay of the first moment (default 0.9).
    pub beta1: f64,
    /// Decay of the second moment (default 0.999).
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay, applied to variables of rank ≥ 2 only
    /// (convolution, linear and embedding weights; not biases or norms)
    /// (default 0.01).
    pub weight_decay: f64,
    /// Steps of linear warmup from `lr / warmup_steps` to `lr` (default 100).
    pub warmup_steps: u64,
    /// Step at which the cosine decay reaches `lr * min_lr_ratio`; 0 keeps
    /// `lr` constant after warmup (default 0).
    pub total_steps: u64,
    /// Floor of the cosine decay as a fraction of `lr` (default 0.1).
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this; 0 disables (default 1.0).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 100,
            total_steps: 0,
            min_lr_ratio: 0.1,
            max_grad_norm: 1.0,
        }
    }
}

impl AdamWConfig {
    /// Learning rate of the update that follows `step` completed updates.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if self.total_steps <= self.warmup_steps {
            return self.lr;
        }
        let progress = ((step - self.warmup_steps) as f64
            / (self.total_steps - self.warmup_steps) as f64)
            .min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

/// What one optimiser step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Updates applied so far, this one included.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// AdamW (decoupled weight decay, bias-corrected moments), as
/// `torch.optim.AdamW`. The parameters are the variables of a `VarStore`
/// that require gradients when it is built, in name order, so every rank of
/// a data-parallel run lists them identically.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// Tracks the variables of `vs` that require gradients (freeze first,
    /// e.g. [`crate::Classifier::freeze_encoder`], to leave some out).
    pub fn new(vs: &nn::VarStore, config: AdamWConfig) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<_>, Vec<_>) = named.into_iter().unzip();
        let zeros = |p: &Tensor| p.zeros_like().set_requires_grad(false);
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        Self {
            config,
            names,
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Names of the tracked variables, in parameter order.
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// The tracked variables, in parameter order.
    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Learning rate the next step will use.
    pub fn next_lr(&self) -> f64 {
        self.config.lr_at(self.step)
    }

    /// Zeroes the gradients of all tracked variables.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            p.shallow_clone().zero_grad();
        }
    }

    /// One gradient per parameter, in parameter order: the variable's own
    /// gradient tensor (an alias: changing it in place changes what
    /// [`Self::step`] sees), or a fresh zero tensor where backward did not
    /// reach it. For an all-reduce, reduce these and pass them to
    /// [`Self::step_with_gradients`].
    pub fn gradients(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g
                } else {
                    p.zeros_like().set_requires_grad(false)
                }
            })
            .collect()
    }

    /// All gradients concatenated into one 1-D tensor in parameter order (a
    /// copy), for a single all-reduce.
    pub fn flat_gradients(&self) -> Result<Tensor, ModelError> {
        let flat: Vec<Tensor> = self
            .gradients()
            .iter()
            .map(|g| g.f_reshape([-1]))
            .collect::<Result<_, _>>()?;
        Ok(Tensor::f_cat(&flat, 0)?)
    }

    /// Total number of elements of the tracked parameters (the length of
    /// [`Self::flat_gradients`]).
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.numel()).sum()
    }

    /// Applies one update with the variables' own gradients.
    pub fn step(&mut self) -> Result<StepStats, ModelError> {
        let grads = self.gradients();
        self.step_with_gradients(&grads)
    }

    /// Applies one update with the given gradients (e.g. all-reduced and
    /// divided by the token count), one per parameter in parameter order.
    /// Clips them to `max_grad_norm` first. Fails, changing nothing, on
    /// wrong shapes or a non-finite gradient norm.
    pub fn step_with_gradients(&mut self, grads: &[Tensor]) -> Result<StepStats, ModelError> {
        if grads.len() != self.params.len() {
            return Err(ModelError::OptimizerState(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        for ((g, p), name) in grads.iter().zip(&self.params).zip(&self.names) {
            if g.size() != p.size() {
                return Err(ModelError::VariableShape {
                    name: name.clone(),
                    stored: g.size(),
                    model: p.size(),
                });
            }
        }
        let grad_norm = global_norm(grads)?;
        if !grad_norm.is_finite() {
            return Err(ModelError::NonFiniteGradient(grad_norm));
        }
        let max = self.config.max_grad_norm;
        let clip = if max > 0.0 && grad_norm > max {
            max / (grad_norm + 1e-6)
        } else {
            1.0
        };

        let lr = self.config.lr_at(self.step);
        let t = (self.step + 1) as i32;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.config;
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        tch::no_grad(|| -> Result<(), ModelError> {
            for (i, p) in self.params.iter().enumerate() {
                let mut p = p.shallow_clone();
                let g = grads[i].f_to_device(p.device())?.f_to_kind(p.kind())?;
                let g = if clip != 1.0 {
                    g.f_mul_scalar(clip)?
                } else {
                    g
                };
                if weight_decay > 0.0 && p.dim() >= 2 {
                    let _ = p.f_mul_scalar_(1.0 - lr * weight_decay)?;
                }
                let m = &mut self.exp_avg[i];
                let _ = m.f_mul_scalar_(beta1)?;
                let _ = m.f_add_(&g.f_mul_scalar(1.0 - beta1)?)?;
                let v = &mut self.exp_avg_sq[i];
                let _ = v.f_mul_scalar_(beta2)?;
                let _ = v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - beta2)?)?;
                let denom = v
                    .f_sqrt()?
                    .f_div_scalar(bias_correction2_sqrt)?
                    .f_add_scalar(eps)?;
                let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(lr / bias_correction1)?)?;
            }
            Ok(())
        })?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            lr,
            grad_norm,
        })
    }

    /// [`Self::step_with_gradients`] with the gradients as one flat tensor in
    /// the layout of [`Self::flat_gradients`].
    pub fn step_with_flat_gradients(&mut self, flat: &Tensor) -> Result<StepStats, ModelError> {
        if flat.size() != [self.numel() as i64] {
            return Err(ModelError::Shape {
                what: "flat gradients",
                expected: format!("[{}]", self.numel()),
                got: flat.size(),
            });
        }
        let sizes: Vec<i64> = self.params.iter().map(|p| p.numel() as i64).collect();
        let grads: Vec<Tensor> = flat
            .f_split_with_sizes(&sizes, 0)?
            .iter()
            .zip(&self.params)
            .map(|(g, p)| g.f_view(p.size().as_slice()))
            .collect::<Result<_, _>>()?;
        self.step_with_gradients(&grads)
    }

    /// Writes the moments and the step count as safetensors:
    /// `exp_avg.{name}`, `exp_avg_sq.{name}` per parameter, `step` (int64 `[1]`).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len() + 1);
        for (i, name) in self.names.iter().enumerate() {
            named.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            named.push((
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].shallow_clone(),
            ));
        }
        named.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
        Ok(Tensor::write_safetensors(&named, path)?)
    }

    /// Restores the state written by [`Self::save`] for the same parameter
    /// set; any missing, extra or reshaped buffer is an error.
    pub fn load(&mut self, path: &Path) -> Result<(), ModelError> {
        let mut named: HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let source_name = path.display().to_string();
        let step = named
            .remove("step")
            .ok_or_else(|| ModelError::MissingVariable {
                name: "step".into(),
                source_name: source_name.clone(),
            })?;
        let step = u64::try_from(step.f_int64_value(&[0])?)
            .map_err(|_| ModelError::OptimizerState("negative step".into()))?;
        let mut restored = Vec::with_capacity(2 * self.params.len());
        for (i, name) in self.names.iter().enumerate() {
            for (prefix, buffer) in [
                ("exp_avg", &self.exp_avg[i]),
                ("exp_avg_sq", &self.exp_avg_sq[i]),
            ] {
                let key = format!("{prefix}.{name}");
                let t = named
                    .remove(&key)
                    .ok_or_else(|| ModelError::MissingVariable {
                        name: key.clone(),
                        source_name: source_name.clone(),
                    })?;
                if t.size() != buffer.size() {
                    return Err(ModelError::VariableShape {
                        name: key,
                        stored: t.size(),
                        model: buffer.size(),
                    });
                }
                restored.push(t.f_to_device(buffer.device())?.f_to_kind(buffer.kind())?);
            }
        }
        if let Some(extra) = named.keys().next() {
            return Err(ModelError::OptimizerState(format!(
                "{source_name} holds unknown buffer {extra}"
            )));
        }
        let mut restored = restored.into_iter();
        for i in 0..self.params.len() {
            for buffer in [&mut self.exp_avg[i], &mut self.exp_avg_sq[i]] {
                let t = restored.next().expect("two buffers per parameter");
                tch::no_grad(|| buffer.f_copy_(&t))?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The L2 norm of all gradients together.
pub fn global_norm(grads: &[Tensor]) -> Result<f64, ModelError> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    let norms: Vec<Tensor> = grads
        .iter()
        .map(|g| g.f_to_kind(Kind::Double)?.f_norm())
        .collect::<Result<_, _>>()?;
    Ok(Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?)
}

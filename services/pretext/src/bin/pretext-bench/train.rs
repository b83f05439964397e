//! `pretext-bench train`: training steps of the pretraining model on fixed shapes.

use std::process::ExitCode;
use std::time::Instant;

use pretext_model::tch::Device;
use serde_json::json;

use crate::*;

pub(crate) fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    use pretext_model::tch::{Kind, Tensor};
    use pretext_model::{AdamW, AdamWConfig, ModelConfig, PretrainModel};
    if a.device.is_cuda() && !pretext_model::tch::Cuda::is_available() {
        anyhow::bail!("--device cuda: libtorch sees no CUDA device");
    }
    let allocator = if a.system_allocator {
        None
    } else {
        Some(pretext_model::memory::keep_freed_memory().to_string())
    };
    tch_threads(a.threads);
    pretext_model::tch::manual_seed(0);
    std::fs::create_dir_all(&a.out)?;
    let cfg = ModelConfig {
        width: a.width,
        depth: a.depth,
        ..ModelConfig::default()
    };
    let model = PretrainModel::new(&cfg, Device::Cpu)?;
    model.var_store().save(a.out.join("model.safetensors"))?;
    std::fs::write(a.out.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    // A fixed batch: random values, 15% MASK, rows of decreasing length.
    let (n, l) = (a.rows, a.len);
    let values = Tensor::randint(41, [n, l], (Kind::Int64, Device::Cpu));
    let chosen = Tensor::rand([n, l], (Kind::Float, Device::Cpu)).lt(0.15);
    let tokens = values.where_self(&chosen.logical_not(), &Tensor::from(41i64));
    let lengths = Tensor::from_slice(&(0..n).map(|i| l - i * (l / (2 * n))).collect::<Vec<i64>>());
    let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let loss_mask = chosen.logical_and(&positions.lt_tensor(&lengths.unsqueeze(1)));
    let logits = model.forward_t(&tokens, &lengths, false)?;
    Tensor::write_safetensors(
        &[
            ("tokens", &tokens),
            ("lengths", &lengths),
            ("targets", &values),
            ("loss_mask", &loss_mask.to_kind(Kind::Uint8)),
            ("logits", &logits.contiguous()),
        ],
        a.out.join("batch.safetensors"),
    )?;
    // The timed model: the same weights on the device, at the precision.
    let mut model = if a.device == Device::Cpu {
        model
    } else {
        let mut on = PretrainModel::new(&cfg, a.device)?;
        on.var_store_mut().copy(model.var_store())?;
        on
    };
    model.set_precision(a.precision);
    let (tokens, lengths, values, loss_mask) = (
        tokens.to_device(a.device),
        lengths.to_device(a.device),
        values.to_device(a.device),
        loss_mask.to_device(a.device),
    );
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let mut step = || -> anyhow::Result<()> {
        opt.zero_grad();
        let stats = model.loss(&tokens, &lengths, &values, &loss_mask, true)?;
        (stats.sum / stats.count as f64).backward();
        opt.step()?;
        Ok(())
    };
    step()?;
    sync(a.device);
    let t0 = Instant::now();
    for _ in 0..a.steps {
        step()?;
    }
    sync(a.device);
    let secs = t0.elapsed().as_secs_f64();
    let real: i64 = Vec::<i64>::try_from(&lengths.to_device(Device::Cpu))?
        .iter()
        .sum();
    println!(
        "{}",
        json!({
            "steps": a.steps,
            "seconds": secs,
            "real_tokens_per_step": real,
            "tokens_per_s": (real as f64) * a.steps as f64 / secs,
            "threads": a.threads,
            "device": format!("{:?}", a.device),
            "precision": a.precision,
            "allocator": allocator,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn tch_threads(n: i32) {
    pretext_model::tch::set_num_threads(n);
    pretext_model::tch::set_num_interop_threads(1);
}

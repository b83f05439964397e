//! `pretext-bench collective`: one rank's data-parallel round on a device.

use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

use crate::*;

/// `pretext bench collective`: what libtorch sees (CUDA, NCCL), then one
/// rank's data-parallel round as the trainer takes it, on a group of one:
/// parameters broadcast, a step's gradients all-reduced in flat buckets
/// (a sum over one rank must give them back unchanged), a few numbers
/// summed; then the bucketed all-reduce timed. Prints one JSON object, with
/// `"ok": false` and the error when any of it fails.
pub(crate) fn collective(a: CollectiveArgs) -> anyhow::Result<ExitCode> {
    use pretext_model::tch::Cuda;
    let mut doc = json!({
        "device": format!("{:?}", a.device),
        "cuda_available": Cuda::is_available(),
        "cuda_devices": Cuda::device_count(),
        "cudnn_available": Cuda::cudnn_is_available(),
        "nccl_built": pretext_dist::nccl_built(),
    });
    let code = match collective_round(&a) {
        Ok(round) => {
            doc["ok"] = json!(true);
            doc["round"] = round;
            ExitCode::SUCCESS
        }
        Err(e) => {
            doc["ok"] = json!(false);
            doc["error"] = json!(format!("{e:#}"));
            ExitCode::FAILURE
        }
    };
    println!("{doc}");
    Ok(code)
}

fn collective_round(a: &CollectiveArgs) -> anyhow::Result<serde_json::Value> {
    use std::time::Duration;

    use pretext_dist::{
        Backend, DEFAULT_BUCKET_BYTES, GradBuckets, GroupOptions, ProcessGroup, Store, digest,
    };
    use pretext_model::tch::{Kind, Tensor};
    use pretext_model::{ModelConfig, PretrainModel};
    let device = a.device;
    let backend = if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    let timeout = Duration::from_secs(60);
    let store = Store::connect("127.0.0.1", 0, true, timeout)?;
    let group = ProcessGroup::new(
        store,
        0,
        1,
        GroupOptions {
            backend,
            timeout,
            ..GroupOptions::default()
        },
    )?;
    pretext_model::tch::manual_seed(0);
    let cfg = ModelConfig {
        width: a.width,
        ..ModelConfig::default()
    };
    let model = PretrainModel::new(&cfg, device)?;
    let mut params = model.var_store().trainable_variables();
    group.check_equal("parameter tensors", params.len() as i64)?;
    let before = digest(&params)?;
    group.broadcast(&mut params, 0)?;
    anyhow::ensure!(
        digest(&params)? == before,
        "a broadcast from the only rank changed the parameters"
    );
    // One training step's gradients.
    let (n, l) = (4i64, 512i64);
    let values = Tensor::randint(41, [n, l], (Kind::Int64, device));
    let lengths = Tensor::full([n], l, (Kind::Int64, device));
    let loss_mask = Tensor::rand([n, l], (Kind::Float, device)).lt(0.15);
    let tokens = values.where_self(
        &loss_mask.logical_not(),
        &Tensor::from(41i64).to_device(device),
    );
    let stats = model.loss(&tokens, &lengths, &values, &loss_mask, true)?;
    (stats.sum / stats.count as f64).backward();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let buckets = GradBuckets::new(&params, DEFAULT_BUCKET_BYTES);
    let summed = buckets.all_reduce(&group, &grads)?;
    let mut max_diff = 0f64;
    for (s, g) in summed.iter().zip(&grads) {
        anyhow::ensure!(s.device() == device, "reduced gradient left {device:?}");
        max_diff = max_diff.max((s - g).abs().max().double_value(&[]));
    }
    anyhow::ensure!(
        max_diff == 0.0,
        "a sum over one rank changed the gradients (max diff {max_diff})"
    );
    let mut sums = [1.5f64, stats.count as f64];
    group.all_reduce_f64(&mut sums)?;
    anyhow::ensure!(
        sums == [1.5, stats.count as f64],
        "f64 sum over one rank: {sums:?}"
    );
    sync(device);
    let t0 = Instant::now();
    for _ in 0..a.rounds {
        buckets.all_reduce(&group, &grads)?;
    }
    sync(device);
    let secs = t0.elapsed().as_secs_f64();
    group.destroy()?;
    Ok(json!({
        "backend": format!("{backend:?}"),
        "world": 1,
        "buckets": buckets.len(),
        "elements": buckets.numel(),
        "max_grad_diff": max_diff,
        "allreduce_ms": secs * 1e3 / a.rounds.max(1) as f64,
        "params_digest": digest(&params)?,
    }))
}

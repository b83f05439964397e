//! Tests across modules: padding invariance, causality, shapes, gradients,
//! loss masking, optimiser state, checkpoints and encoder transfer.

use std::collections::HashMap;

use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::*;

const CPU: Device = Device::Cpu;

/// A model small enough for unit tests whose receptive field (13 steps,
/// or 15 with the scalar input) is shorter than the rows, so padding is
/// within reach of real positions.
fn tiny(input: InputEncoding, direction: Direction, norm: NormKind) -> ModelConfig {
    ModelConfig {
        width: 8,
        depth: 2,
        kernel: 3,
        norm_groups: 2,
        input,
        direction,
        norm,
        ..Default::default()
    }
}

/// Every combination the padding test covers.
fn all_configs() -> Vec<ModelConfig> {
    let mut configs = Vec::new();
    for input in [InputEncoding::Embedding, InputEncoding::Scalar] {
        configs.push(tiny(input, Direction::Bidirectional, NormKind::Layer));
        configs.push(tiny(input, Direction::Bidirectional, NormKind::Group));
        configs.push(tiny(input, Direction::Causal, NormKind::Layer));
    }
    configs
}

/// Random ids in `0..hi` of shape `shape`.
fn random_ids(hi: i64, shape: &[i64]) -> Tensor {
    Tensor::randint(hi, shape, (Kind::Int64, CPU))
}

/// Rows padded to `l` with *garbage* ids (not PAD): the model must rely on
/// `lengths` alone.
fn pad_rows(rows: &[Tensor], l: i64) -> (Tensor, Tensor) {
    let tokens = random_ids(NUM_TOKENS, &[rows.len() as i64, l]);
    for (i, row) in rows.iter().enumerate() {
        tokens.get(i as i64).narrow(0, 0, row.size()[0]).copy_(row);
    }
    let lengths: Vec<i64> = rows.iter().map(|r| r.size()[0]).collect();
    (tokens, Tensor::from_slice(&lengths))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// libtorch's generator is global: tests that seed it and then draw hold
/// this lock so that parallel tests do not interleave their draws.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn setup(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(seed);
    guard
}

#[test]
fn padding_invariance() {
    let _rng = setup(0);
    for config in all_configs() {
        let model = PretrainModel::new(&config, CPU).unwrap();
        let mut classifier = Classifier::new(&config, 3, CPU).unwrap();
        classifier.load_encoder_from(model.var_store()).unwrap();
        // Values and MASK ids only (no PAD) inside the rows.
        let rows: Vec<Tensor> = [20i64, 33, 27]
            .iter()
            .map(|&l| random_ids(MASK_TOKEN + 1, &[l]))
            .collect();
        let (tokens, lengths) = pad_rows(&rows, 40);
        let batched = model.features(&tokens, &lengths, false).unwrap(); // [3, C, 40]
        let pooled = classifier.pooled(&tokens, &lengths, false).unwrap(); // [3, 2C + 1]
        for (i, row) in rows.iter().enumerate() {
            let l = row.size()[0];
            let alone = model
                .features(&row.unsqueeze(0), &Tensor::from_slice(&[l]), false)
                .unwrap();
            let inside = batched.get(i as i64).narrow(1, 0, l);
            let d = max_diff(&alone.get(0), &inside);
            assert!(d < 1e-5, "{config:?}: row {i} differs by {d} when padded");
            let padding = batched.get(i as i64).narrow(1, l, 40 - l);
            assert_eq!(
                padding.abs().max().double_value(&[]),
                0.0,
                "padded features not zero"
            );
            let alone_pooled = classifier
                .pooled(&row.unsqueeze(0), &Tensor::from_slice(&[l]), false)
                .unwrap();
            let d = max_diff(&alone_pooled.get(0), &pooled.get(i as i64));
            assert!(
                d < 1e-5,
                "{config:?}: pooled row {i} differs by {d} when padded"
            );
        }
    }
}

#[test]
fn causal_outputs_ignore_the_future() {
    let _rng = setup(1);
    let t = 17;
    for input in [InputEncoding::Embedding, InputEncoding::Scalar] {
        for direction in [Direction::Causal, Direction::Bidirectional] {
            let model = PretrainModel::new(&tiny(input, direction, NormKind::Layer), CPU).unwrap();
            let tokens = random_ids(MASK_TOKEN + 1, &[2, 40]);
            let changed = tokens.copy();
            changed
                .narrow(1, t + 1, 40 - t - 1)
                .copy_(&random_ids(MASK_TOKEN + 1, &[2, 40 - t - 1]));
            let lengths = Tensor::from_slice(&[40i64, 40]);
            let a = model
                .forward_t(&tokens, &lengths, false)
                .unwrap()
                .narrow(2, 0, t + 1);
            let b = model
                .forward_t(&changed, &lengths, false)
                .unwrap()
                .narrow(2, 0, t + 1);
            let d = max_diff(&a, &b);
            match direction {
                Direction::Causal => assert!(d <= 1e-6, "{input:?}: position ≤ {t} moved by {d}"),
                // The check can fail: a bidirectional model does see t + 1.
                Direction::Bidirectional => {
                    assert!(d > 1e-4, "{input:?}: bidirectional blind to the future")
                }
            }
        }
    }
}

#[test]
fn forward_shapes_and_input_errors() {
    let _rng = setup(2);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Group,
    );
    let model = PretrainModel::new(&config, CPU).unwrap();
    let classifier = Classifier::new(&config, 5, CPU).unwrap();
    let (tokens, lengths) = pad_rows(&[random_ids(41, &[9]), random_ids(41, &[12])], 12);
    assert_eq!(
        model.features(&tokens, &lengths, true).unwrap().size(),
        [2, 8, 12]
    );
    assert_eq!(
        model.forward_t(&tokens, &lengths, true).unwrap().size(),
        [2, 41, 12]
    );
    assert_eq!(
        classifier.pooled(&tokens, &lengths, true).unwrap().size(),
        [2, 17],
        "mean and max of 8 channels, and the log length"
    );
    assert_eq!(
        classifier
            .forward_t(&tokens, &lengths, true)
            .unwrap()
            .size(),
        [2, 5]
    );
    // u8 and u32-like columns are accepted as they come from Arrow.
    let u8_tokens = tokens.to_kind(Kind::Uint8);
    let int_lengths = lengths.to_kind(Kind::Int);
    assert_eq!(
        model
            .forward_t(&u8_tokens, &int_lengths, false)
            .unwrap()
            .size(),
        [2, 41, 12]
    );

    let shape = |r: Result<Tensor, ModelError>| matches!(r, Err(ModelError::Shape { .. }));
    let kind = |r: Result<Tensor, ModelError>| matches!(r, Err(ModelError::Kind { .. }));
    let range = |r: Result<Tensor, ModelError>| matches!(r, Err(ModelError::OutOfRange { .. }));
    assert!(shape(model.forward_t(&tokens.view([-1]), &lengths, false)));
    assert!(shape(model.forward_t(
        &tokens,
        &Tensor::from_slice(&[9i64]),
        false
    )));
    assert!(kind(model.forward_t(
        &tokens.to_kind(Kind::Float),
        &lengths,
        false
    )));
    assert!(kind(model.forward_t(
        &tokens,
        &lengths.to_kind(Kind::Float),
        false
    )));
    assert!(range(model.forward_t(
        &tokens.full_like(43),
        &lengths,
        false
    )));
    assert!(range(model.forward_t(
        &tokens,
        &Tensor::from_slice(&[0i64, 12]),
        false
    )));
    assert!(range(model.forward_t(
        &tokens,
        &Tensor::from_slice(&[9i64, 13]),
        false
    )));
    let labels = Tensor::from_slice(&[0i64, 5]);
    assert!(matches!(
        classifier.loss(&tokens, &lengths, &labels, false),
        Err(ModelError::OutOfRange { .. })
    ));
    let mask = tokens.lt(5);
    assert!(matches!(
        model.loss(&tokens, &lengths, &tokens.narrow(1, 0, 6), &mask, false),
        Err(ModelError::Shape { .. })
    ));
    assert!(matches!(
        model.loss(
            &tokens,
            &lengths,
            &tokens,
            &mask.to_kind(Kind::Float),
            false
        ),
        Err(ModelError::Kind { .. })
    ));
}

/// A value of a variable by name and flat index, and a setter.
fn get(vars: &HashMap<String, Tensor>, name: &str, i: i64) -> f64 {
    vars[name].view([-1]).double_value(&[i])
}

fn set(vars: &HashMap<String, Tensor>, name: &str, i: i64, v: f64) {
    tch::no_grad(|| {
        let _ = vars[name].view([-1]).get(i).fill_(v);
    });
}

#[test]
fn gradients_match_finite_differences() {
    let _rng = setup(3);
    let configs = [
        tiny(
            InputEncoding::Embedding,
            Direction::Bidirectional,
            NormKind::Group,
        ),
        tiny(InputEncoding::Scalar, Direction::Causal, NormKind::Layer),
    ];
    for config in configs {
        let mut model = PretrainModel::new(&config, CPU).unwrap();
        model.var_store_mut().double();
        let (tokens, lengths) = pad_rows(&[random_ids(42, &[14]), random_ids(42, &[10])], 16);
        let targets = random_ids(NUM_VALUES, &[2, 16]);
        let loss_mask = Tensor::rand([2, 16], (Kind::Float, CPU)).lt(0.5);
        let loss = || {
            model
                .loss(&tokens, &lengths, &targets, &loss_mask, true)
                .unwrap()
                .sum
        };

        let vars = model.var_store().variables();
        for t in vars.values() {
            t.shallow_clone().zero_grad();
        }
        loss().backward();
        let first_input = match config.input {
            InputEncoding::Embedding => (
                "encoder.input.embedding.weight",
                tokens.int64_value(&[0, 0]) * 8 + 3,
            ),
            InputEncoding::Scalar => ("encoder.input.conv.weight", 5),
        };
        let probes = [
            first_input,
            ("encoder.block0.conv1.weight", 7),
            ("encoder.block0.norm2.weight", 2),
            ("encoder.block1.conv2.bias", 4),
            ("encoder.final_norm.bias", 1),
            ("token_head.weight", 30),
        ];
        let h = 1e-6;
        for (name, i) in probes {
            let analytic = vars[name].grad().view([-1]).double_value(&[i]);
            let x = get(&vars, name, i);
            set(&vars, name, i, x + h);
            let up = tch::no_grad(|| loss().double_value(&[]));
            set(&vars, name, i, x - h);
            let down = tch::no_grad(|| loss().double_value(&[]));
            set(&vars, name, i, x);
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - analytic).abs();
            assert!(
                err <= 1e-6 * analytic.abs().max(1.0),
                "{:?} {name}[{i}]: autograd {analytic}, finite difference {numeric}",
                config.input
            );
            assert!(
                analytic != 0.0,
                "{name}[{i}] has zero gradient; probe elsewhere"
            );
        }
    }
}

#[test]
fn model_loss_uses_loss_positions_only() {
    let _rng = setup(4);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Layer,
    );
    let model = PretrainModel::new(&config, CPU).unwrap();
    let (tokens, lengths) = pad_rows(&[random_ids(42, &[20]), random_ids(42, &[15])], 20);
    let targets = random_ids(NUM_VALUES, &[2, 20]);
    let loss_mask = Tensor::rand([2, 20], (Kind::Float, CPU))
        .lt(0.3)
        .logical_and(&tokens.lt(NUM_VALUES + 1));
    let base = model
        .loss(&tokens, &lengths, &targets, &loss_mask, false)
        .unwrap();
    let garbage = targets.where_self(&loss_mask, &Tensor::from(PAD_TOKEN));
    let same = model
        .loss(&tokens, &lengths, &garbage, &loss_mask, false)
        .unwrap();
    assert_eq!(base.sum.double_value(&[]), same.sum.double_value(&[]));
    assert_eq!((base.count, base.correct), (same.count, same.correct));
    assert_eq!(base.count, loss_mask.sum(Kind::Int64).int64_value(&[]));
    // Same value as the full logits through `token_loss`.
    let logits = model.forward_t(&tokens, &lengths, false).unwrap();
    let reference = token_loss(&logits, &targets, &loss_mask).unwrap();
    assert!((reference.sum.double_value(&[]) - base.sum.double_value(&[])).abs() < 1e-4);
    assert_eq!(reference.correct, base.correct);
}

/// One training step of `model` on a fixed batch drawn from `seed`.
fn train_step(model: &PretrainModel, opt: &mut AdamW, seed: i64) -> StepStats {
    tch::manual_seed(seed);
    let (tokens, lengths) = pad_rows(&[random_ids(42, &[18]), random_ids(42, &[12])], 18);
    let targets = random_ids(NUM_VALUES, &[2, 18]);
    let loss_mask = Tensor::rand([2, 18], (Kind::Float, CPU)).lt(0.5);
    opt.zero_grad();
    let loss = model
        .loss(&tokens, &lengths, &targets, &loss_mask, true)
        .unwrap();
    (&loss.sum / loss.count as f64).backward();
    opt.step().unwrap()
}

fn assert_same_variables(a: &tch::nn::VarStore, b: &tch::nn::VarStore) {
    let (a, b) = (a.variables(), b.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs");
    }
}

fn opt_config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        warmup_steps: 2,
        total_steps: 10,
        max_grad_norm: 0.5,
        ..Default::default()
    }
}

#[test]
fn adamw_resume_is_exact() {
    let _rng = setup(5);
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig {
        dropout: 0.1,
        ..tiny(InputEncoding::Scalar, Direction::Causal, NormKind::Layer)
    };
    let model = PretrainModel::new(&config, CPU).unwrap();
    let mut opt = AdamW::new(model.var_store(), opt_config());
    for s in 0..3 {
        train_step(&model, &mut opt, 100 + s);
    }
    model
        .var_store()
        .save(dir.path().join("m.safetensors"))
        .unwrap();
    opt.save(&dir.path().join("o.safetensors")).unwrap();
    let uninterrupted = train_step(&model, &mut opt, 103);

    tch::manual_seed(999);
    let mut resumed = PretrainModel::new(&config, CPU).unwrap();
    resumed
        .var_store_mut()
        .load(dir.path().join("m.safetensors"))
        .unwrap();
    let mut opt2 = AdamW::new(resumed.var_store(), opt_config());
    opt2.load(&dir.path().join("o.safetensors")).unwrap();
    assert_eq!(opt2.step_count(), 3);
    let after_resume = train_step(&resumed, &mut opt2, 103);
    assert_eq!(uninterrupted, after_resume);
    assert_same_variables(model.var_store(), resumed.var_store());
    assert!(uninterrupted.grad_norm > 0.0);

    // State of another parameter set is refused.
    let other = PretrainModel::new(
        &ModelConfig {
            width: 4,
            norm_groups: 2,
            ..config
        },
        CPU,
    )
    .unwrap();
    let mut opt3 = AdamW::new(other.var_store(), opt_config());
    assert!(opt3.load(&dir.path().join("o.safetensors")).is_err());
}

#[test]
fn flat_gradient_step_equals_plain_step() {
    let _rng = setup(6);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Group,
    );
    let a = PretrainModel::new(&config, CPU).unwrap();
    tch::manual_seed(6);
    let b = PretrainModel::new(&config, CPU).unwrap();
    let (mut oa, mut ob) = (
        AdamW::new(a.var_store(), opt_config()),
        AdamW::new(b.var_store(), opt_config()),
    );
    let sa = train_step(&a, &mut oa, 7);

    tch::manual_seed(7);
    let (tokens, lengths) = pad_rows(&[random_ids(42, &[18]), random_ids(42, &[12])], 18);
    let targets = random_ids(NUM_VALUES, &[2, 18]);
    let loss_mask = Tensor::rand([2, 18], (Kind::Float, CPU)).lt(0.5);
    ob.zero_grad();
    let loss = b
        .loss(&tokens, &lengths, &targets, &loss_mask, true)
        .unwrap();
    loss.sum.backward();
    // What a data-parallel rank does: flatten, all-reduce (here: nothing),
    // divide by the token count, step.
    let flat = ob.flat_gradients().unwrap() / loss.count as f64;
    assert_eq!(flat.size(), [ob.numel() as i64]);
    let sb = ob.step_with_flat_gradients(&flat).unwrap();
    assert_eq!(sa.lr, sb.lr);
    assert!((sa.grad_norm - sb.grad_norm).abs() < 1e-6 * sa.grad_norm);
    for (name, t) in a.var_store().variables() {
        let d = max_diff(&t, &b.var_store().variables()[&name]);
        assert!(d < 1e-6, "{name} differs by {d}");
    }
    assert!(matches!(
        ob.step_with_flat_gradients(&flat.narrow(0, 0, 3)),
        Err(ModelError::Shape { .. })
    ));
    let nan = flat.full_like(f64::NAN);
    assert!(matches!(
        ob.step_with_flat_gradients(&nan),
        Err(ModelError::NonFiniteGradient(_))
    ));
    assert_eq!(ob.step_count(), 1, "a refused step changes nothing");
}

#[test]
fn adamw_matches_the_formula() {
    let _rng = setup(7);
    let vs = tch::nn::VarStore::new(CPU);
    let w = vs
        .root()
        .var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]));
    let b = vs.root().var_copy("b", &Tensor::from_slice(&[1.0f32]));
    let config = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.5,
        warmup_steps: 0,
        max_grad_norm: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(&vs, config);
    assert_eq!(opt.parameter_names(), ["b", "w"]);
    let loss = (&w * Tensor::from_slice(&[0.5f32, -1.0]).view([1, 2])).sum(Kind::Float) + &b * 3.0;
    loss.sum(Kind::Float).backward();
    let stats = opt.step().unwrap();
    assert!((stats.grad_norm - (0.25f64 + 1.0 + 9.0).sqrt()).abs() < 1e-6);
    // First step: m̂ = g, v̂ = g², so the update is lr·sign(g); decay on w only.
    let expect_w = [1.0 * (1.0 - 0.05) - 0.1, 2.0 * (1.0 - 0.05) + 0.1];
    for (i, e) in expect_w.iter().enumerate() {
        assert!((w.double_value(&[0, i as i64]) - e).abs() < 1e-6);
    }
    assert!((b.double_value(&[0]) - 0.9).abs() < 1e-6);
}

#[test]
fn learning_rate_schedule() {
    let c = AdamWConfig {
        lr: 1.0,
        warmup_steps: 4,
        total_steps: 14,
        min_lr_ratio: 0.1,
        ..Default::default()
    };
    assert_eq!(c.lr_at(0), 0.25);
    assert_eq!(c.lr_at(3), 1.0);
    assert_eq!(c.lr_at(4), 1.0);
    assert!((c.lr_at(9) - 0.55).abs() < 1e-12);
    assert!((c.lr_at(14) - 0.1).abs() < 1e-12);
    assert!((c.lr_at(1000) - 0.1).abs() < 1e-12);
    assert!(c.lr_at(5) < c.lr_at(4) && c.lr_at(10) < c.lr_at(9));
    let constant = AdamWConfig {
        lr: 1.0,
        warmup_steps: 0,
        total_steps: 0,
        ..Default::default()
    };
    assert_eq!(constant.lr_at(12345), 1.0);
}

#[test]
fn checkpoint_round_trip_and_half_written_ignored() {
    let _rng = setup(8);
    let run = tempfile::tempdir().unwrap();
    let run = run.path();
    assert_eq!(latest_checkpoint(&run.join("absent")).unwrap(), None);
    let config = tiny(InputEncoding::Embedding, Direction::Causal, NormKind::Layer);
    let model = PretrainModel::new(&config, CPU).unwrap();
    let mut opt = AdamW::new(model.var_store(), opt_config());
    train_step(&model, &mut opt, 1);
    let mut rng = RngState::new(42);
    rng.seed_torch();
    let mut state = CheckpointState::new(1, config, json!({"max_tokens": 4096, "task": "next"}));
    state.rng = rng;
    state.world_size = 2;
    state.applied_batch_ids = vec!["b-1".into(), "b-2".into()];
    let dir = save_checkpoint(run, model.var_store(), &opt, &state).unwrap();
    assert_eq!(dir, run.join("step-000001"));
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }

    // Half-written or foreign directories around it.
    let ahead = run.join("step-000009");
    std::fs::create_dir(&ahead).unwrap();
    std::fs::copy(
        dir.join("model.safetensors"),
        ahead.join("model.safetensors"),
    )
    .unwrap();
    let torn = run.join("step-000008");
    std::fs::create_dir(&torn).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        std::fs::copy(dir.join(f), torn.join(f)).unwrap();
    }
    std::fs::write(torn.join("state.json"), b"{\"step\": 8, \"forma").unwrap();
    let tmp = run.join(".tmp-step-000010-1-2");
    std::fs::create_dir(&tmp).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::copy(dir.join(f), tmp.join(f)).unwrap();
    }
    std::fs::create_dir(run.join("step-00x011")).unwrap();
    assert_eq!(latest_checkpoint(run).unwrap(), Some(dir.clone()));

    // Restore into a differently initialised model and optimiser.
    tch::manual_seed(77);
    let mut restored = PretrainModel::new(&config, CPU).unwrap();
    let mut opt2 = AdamW::new(restored.var_store(), opt_config());
    let back: CheckpointState =
        load_checkpoint(&dir, restored.var_store_mut(), Some(&mut opt2)).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.training["task"], "next");
    assert_same_variables(model.var_store(), restored.var_store());
    assert_eq!(opt2.step_count(), opt.step_count());
    let a = train_step(&model, &mut opt, 2);
    let b = train_step(&restored, &mut opt2, 2);
    assert_eq!(a, b);
    assert_same_variables(model.var_store(), restored.var_store());

    // A newer checkpoint wins; re-saving a step replaces it; pruning keeps the newest.
    state.step = 2;
    let second = save_checkpoint(run, model.var_store(), &opt, &state).unwrap();
    assert_eq!(latest_checkpoint(run).unwrap(), Some(second.clone()));
    save_checkpoint(run, model.var_store(), &opt, &state).unwrap();
    assert_eq!(list_checkpoints(run).unwrap().len(), 2);
    let removed = prune_checkpoints(run, 1).unwrap();
    assert!(removed.contains(&dir) && removed.contains(&tmp));
    assert_eq!(list_checkpoints(run).unwrap(), vec![(2, second)]);
    assert!(
        ahead.exists() && torn.exists(),
        "incomplete step dirs are left for inspection"
    );
}

#[test]
fn classifier_takes_the_pretrained_encoder() {
    let _rng = setup(9);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Group,
    );
    let pretrained = PretrainModel::new(&config, CPU).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    pretrained.var_store().save(&weights).unwrap();

    tch::manual_seed(10);
    let mut classifier = Classifier::new(&config, 3, CPU).unwrap();
    let fresh_head: Vec<(String, Tensor)> = classifier
        .var_store()
        .variables()
        .into_iter()
        .filter(|(n, _)| n.starts_with("classifier_head."))
        .map(|(n, t)| (n, t.copy()))
        .collect();
    assert_eq!(fresh_head.len(), 6); // weight, bias, feature_shift, feature_scale, norm_mean, norm_var
    let (tokens, lengths) = pad_rows(&[random_ids(42, &[16]), random_ids(42, &[11])], 16);
    let expected = pretrained.features(&tokens, &lengths, false).unwrap();
    let before = classifier
        .encoder()
        .forward_t(&tokens, &lengths, false)
        .unwrap();
    assert!(
        max_diff(&before, &expected) > 1e-3,
        "fresh encoder already equal"
    );

    let copied = classifier.load_encoder(&weights).unwrap();
    let encoder_vars = pretrained
        .var_store()
        .variables()
        .keys()
        .filter(|n| n.starts_with(ENCODER_PREFIX))
        .count();
    assert_eq!(copied, encoder_vars);
    let after = classifier
        .encoder()
        .forward_t(&tokens, &lengths, false)
        .unwrap();
    assert_eq!(max_diff(&after, &expected), 0.0);
    let vars = classifier.var_store().variables();
    for (name, t) in &fresh_head {
        assert!(vars[name].equal(t), "{name} was overwritten");
    }
    assert!(!vars.keys().any(|n| n.starts_with("token_head.")));

    // Linear probe: only the head trains.
    classifier.freeze_encoder();
    let mut opt = AdamW::new(classifier.var_store(), opt_config());
    assert_eq!(
        opt.parameter_names(),
        ["classifier_head.bias", "classifier_head.weight"]
    );
    let loss = classifier
        .loss(&tokens, &lengths, &Tensor::from_slice(&[0i64, 2]), true)
        .unwrap();
    assert_eq!(loss.count, 2);
    opt.zero_grad();
    loss.sum.backward();
    opt.step().unwrap();
    let probed = classifier
        .encoder()
        .forward_t(&tokens, &lengths, false)
        .unwrap();
    assert_eq!(max_diff(&probed, &expected), 0.0);
    assert!(
        !classifier.var_store().variables()["classifier_head.bias"]
            .equal(&fresh_head[0].1.zeros_like())
    );

    // A file without the encoder is refused, naming the variable.
    let other = Classifier::new(&config, 3, CPU).unwrap();
    let head_only = dir.path().join("head.safetensors");
    other.var_store().save(&head_only).unwrap();
    let mut narrow = Classifier::new(&ModelConfig { width: 4, ..config }, 3, CPU).unwrap();
    assert!(matches!(
        narrow.load_encoder(&weights),
        Err(ModelError::VariableShape { .. })
    ));
    let empty = dir.path().join("empty.safetensors");
    Tensor::write_safetensors(
        &[("token_head.bias", Tensor::zeros([41], (Kind::Float, CPU)))],
        &empty,
    )
    .unwrap();
    assert!(matches!(
        classifier.load_encoder(&empty),
        Err(ModelError::MissingVariable { .. })
    ));
}

#[test]
fn bf16_compute_stays_close_and_trains_f32_weights() {
    let _rng = setup(11);
    let config = tiny(
        InputEncoding::Scalar,
        Direction::Bidirectional,
        NormKind::Group,
    );
    let mut model = PretrainModel::new(&config, CPU).unwrap();
    let (tokens, lengths) = pad_rows(&[random_ids(42, &[16]), random_ids(42, &[11])], 16);
    let full = model.forward_t(&tokens, &lengths, false).unwrap();
    model.set_precision(Precision::Bf16);
    let half = model.forward_t(&tokens, &lengths, false).unwrap();
    assert_eq!(half.kind(), Kind::Float);
    let d = max_diff(&full, &half);
    assert!(d > 0.0 && d < 0.1, "bf16 logits differ by {d}");
    let mut opt = AdamW::new(model.var_store(), opt_config());
    let stats = train_step(&model, &mut opt, 3);
    assert!(stats.grad_norm.is_finite() && stats.grad_norm > 0.0);
    assert!(
        model
            .var_store()
            .variables()
            .values()
            .all(|t| t.kind() == Kind::Float)
    );
}

#[test]
fn rng_state_is_reproducible() {
    let mut a = RngState::new(5);
    let draws: Vec<u64> = (0..3).map(|_| a.next_seed()).collect();
    let mut b = RngState {
        seed: 5,
        counter: 1,
    };
    assert_eq!(b.next_seed(), draws[1]);
    assert_eq!(a.counter, 3);
    assert_ne!(draws[0], draws[1]);
}

/// Throughput of one training step at the default width and depth
/// (`cargo test -p pretext-model --release -- --ignored --nocapture`).
#[test]
#[ignore = "timing, not a check"]
fn bench_default_step() {
    let _rng = setup(12);
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    let model = PretrainModel::new(&ModelConfig::default(), CPU).unwrap();
    let mut opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let (n, l) = (8i64, 2048i64);
    let tokens = random_ids(NUM_VALUES, &[n, l]);
    let lengths = Tensor::full([n], l, (Kind::Int64, CPU));
    let loss_mask = Tensor::rand([n, l], (Kind::Float, CPU)).lt(0.15);
    let mut step = || {
        opt.zero_grad();
        let loss = model
            .loss(&tokens, &lengths, &tokens, &loss_mask, true)
            .unwrap();
        (&loss.sum / loss.count as f64).backward();
        opt.step().unwrap();
    };
    step();
    let start = std::time::Instant::now();
    let steps = 3;
    for _ in 0..steps {
        step();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{threads} thread(s): {:.0} tokens/s",
        (steps * n * l) as f64 / secs
    );
}

#[test]
fn calibration_standardises_pooled_features_and_is_saved() {
    let _rng = setup(11);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Layer,
    );
    let mut classifier = Classifier::new(&config, 3, CPU).unwrap();
    let rows: Vec<Tensor> = (0..6).map(|i| random_ids(41, &[20 + i])).collect();
    let (tokens, lengths) = pad_rows(&rows, 25);
    let pooled = classifier.pooled(&tokens, &lengths, false).unwrap(); // [6, 17]
    let before = classifier.forward_t(&tokens, &lengths, false).unwrap();
    // Identity until calibrated: logits are the head applied to raw pooled features.
    let (shift, scale) = classifier.standardisation();
    assert_eq!(shift.abs().max().double_value(&[]), 0.0);
    assert_eq!(scale.double_value(&[0]), 1.0);

    classifier.calibrate(&pooled).unwrap();
    let (shift, scale) = classifier.standardisation();
    let z = (&pooled - &shift) / &scale;
    let mean = z.mean_dim(0, false, None).abs().max().double_value(&[]);
    let std = z.std_correction(0, 1, false);
    assert!(mean < 1e-5, "standardised mean {mean}");
    assert!((std - 1.0).abs().max().double_value(&[]) < 1e-4);
    let after = classifier.forward_t(&tokens, &lengths, false).unwrap();
    assert!(
        max_diff(&before, &after) > 1e-3,
        "calibration changed nothing"
    );

    // Not trained, but saved with the head.
    let opt = AdamW::new(classifier.var_store(), opt_config());
    assert!(
        opt.parameter_names()
            .iter()
            .all(|n| !n.contains("feature_") && !n.contains("norm_")),
        "{:?}",
        opt.parameter_names()
    );
    let vars = classifier.var_store().variables();
    assert!(vars["classifier_head.feature_shift"].equal(&shift));
    assert!(vars["classifier_head.feature_scale"].equal(&scale));

    // Too few rows or the wrong width are refused.
    assert!(classifier.calibrate(&pooled.narrow(0, 0, 1)).is_err());
    assert!(
        classifier
            .calibrate(&Tensor::zeros([4, 16], (Kind::Float, CPU)))
            .is_err()
    );
    assert!(
        classifier
            .calibrate(&Tensor::zeros([4, 3], (Kind::Float, CPU)))
            .is_err()
    );
}

#[test]
fn the_head_sees_the_log_length_of_whole_rows_even_on_crops() {
    let _rng = setup(12);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Layer,
    );
    let mut classifier = Classifier::new(&config, 3, CPU).unwrap();
    let rows: Vec<Tensor> = (0..3).map(|i| random_ids(41, &[10 + 5 * i])).collect();
    let (tokens, lengths) = pad_rows(&rows, 20);
    let pooled = classifier.pooled(&tokens, &lengths, false).unwrap();
    let last = pooled.size()[1] - 1;
    for (i, l) in [10.0f64, 15.0, 20.0].into_iter().enumerate() {
        let got = pooled.double_value(&[i as i64, last]);
        assert!((got - l.ln()).abs() < 1e-5, "row {i}: {got}");
    }
    // Crops: the encoder sees the crop, the length feature the whole row.
    let whole = Tensor::from_slice(&[1000i64, 2000, 4000]);
    let cropped = classifier
        .pooled_crops(&tokens, &lengths, &whole, false)
        .unwrap();
    assert!((cropped.double_value(&[2, last]) - 4000f64.ln()).abs() < 1e-4);
    assert!(max_diff(&cropped.narrow(1, 0, last), &pooled.narrow(1, 0, last)) < 1e-6);
    assert!(
        classifier
            .pooled_crops(&tokens, &lengths, &Tensor::from_slice(&[1i64, 2]), false)
            .is_err()
    );
    // calibrate_length standardises that feature alone.
    classifier.calibrate_length(2.5, 0.5).unwrap();
    let (shift, scale) = classifier.standardisation();
    assert_eq!(shift.double_value(&[last]), 2.5);
    assert_eq!(scale.double_value(&[last]), 0.5);
    assert_eq!(shift.double_value(&[0]), 0.0);
    assert_eq!(scale.double_value(&[0]), 1.0);
}

#[test]
fn the_heads_batch_norm_uses_batch_statistics_in_training_and_running_ones_after() {
    let _rng = setup(13);
    let config = tiny(
        InputEncoding::Embedding,
        Direction::Bidirectional,
        NormKind::Layer,
    );
    let classifier = Classifier::new(&config, 3, CPU).unwrap();
    // Pooled features far from 0 and 1, as a trainable encoder's are.
    let pooled = Tensor::randn([8, 17], (Kind::Float, CPU)) * 0.01 + 3.0;
    let eval_before = classifier.logits_from_pooled(&pooled, false);
    let train = classifier.logits_from_pooled(&pooled, true);
    // Training: the head sees batch-standardised features, so the logits of
    // the batch are the head's bias plus a term of mean 0 over the rows.
    let vars = classifier.var_store().variables();
    let bias = &vars["classifier_head.bias"];
    let centred = (train.mean_dim(0, false, None) - bias).abs().max();
    assert!(centred.double_value(&[]) < 1e-4, "{centred}");
    // Eval before any training step used the identity running statistics:
    // the logits there are far from the batch-normalised ones.
    assert!(max_diff(&eval_before, &train) > 1e-2);
    // The step moved the running mean 10% of the way to the batch mean.
    let (mean, var) = classifier.feature_norm_stats();
    let want = pooled.mean_dim(0, false, None) * FEATURE_NORM_MOMENTUM;
    assert!(max_diff(&mean, &want) < 1e-5);
    assert!(
        var.double_value(&[0]) < 1.0,
        "running variance moved towards 1e-4"
    );
    // Many steps: the running statistics reach the batch's (the variance
    // unbiased, as in PyTorch), and evaluation normalises by them.
    for _ in 0..200 {
        let _ = classifier.logits_from_pooled(&pooled, true);
    }
    let (mean, var) = classifier.feature_norm_stats();
    assert!(max_diff(&mean, &pooled.mean_dim(0, false, None)) < 1e-4);
    let unbiased = pooled.var_dim(0, true, false);
    assert!(
        ((&var - &unbiased).abs() / &unbiased)
            .max()
            .double_value(&[])
            < 1e-2
    );
    let eval_after = classifier.logits_from_pooled(&pooled, false);
    let z = (&pooled - &mean) / (&var + FEATURE_NORM_EPS).sqrt();
    let want = z.matmul(&vars["classifier_head.weight"].tr()) + bias;
    assert!(max_diff(&eval_after, &want) < 1e-4);
    assert!(max_diff(&eval_after, &train) < 0.25 * max_diff(&eval_before, &train));
    // One row in training: running statistics, nothing updated, no error.
    let (m0, _) = classifier.feature_norm_stats();
    let one = classifier.logits_from_pooled(&pooled.narrow(0, 0, 1), true);
    assert_eq!(one.size(), vec![1, 3]);
    assert!(classifier.feature_norm_stats().0.equal(&m0));

    // Off: training leaves the running statistics as they are and the
    // logits equal evaluation's.
    let mut plain = Classifier::new(&config, 3, CPU).unwrap();
    plain.set_feature_norm(false);
    let a = plain.logits_from_pooled(&pooled, true);
    let b = plain.logits_from_pooled(&pooled, false);
    assert!(max_diff(&a, &b) < 1e-6);
    let (mean, var) = plain.feature_norm_stats();
    assert_eq!(mean.abs().max().double_value(&[]), 0.0);
    assert_eq!(var.double_value(&[0]), 1.0);
}

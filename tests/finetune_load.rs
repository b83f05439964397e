//! Fine-tune loading: a pretrained checkpoint's encoder weights are used
//! (exactly, under the linear probe), the classifier head is new, the
//! checkpoint's architecture (causal) is kept, and a whole run on a tiny
//! synthetic dataset writes its report and checkpoint.

use std::path::Path;

use pretext_core::validate::ValidationConfig;
use pretext_datasets::synth::{SynthConfig, generate};
use pretext_finetune::{FinetuneConfig, Pretrained, build_classifier, run};
use pretext_model::checkpoint::MODEL_FILE;
use pretext_model::tch::{Device, Tensor};
use pretext_model::{
    AdamW, AdamWConfig, CheckpointState, Direction, ModelConfig, PretrainModel, latest_checkpoint,
    save_checkpoint,
};

fn small(direction: Direction) -> ModelConfig {
    ModelConfig {
        width: 16,
        depth: 2,
        direction,
        ..ModelConfig::default()
    }
}

/// Writes a pretraining checkpoint like the trainer's (`RUN/checkpoints/step-N/`).
fn pretrained_run(run: &Path, cfg: ModelConfig, seed: i64) -> PretrainModel {
    pretext_model::tch::manual_seed(seed);
    let model = PretrainModel::new(&cfg, Device::Cpu).unwrap();
    let opt = AdamW::new(model.var_store(), AdamWConfig::default());
    let state = CheckpointState::new(7, cfg, serde_json::json!({ "task": "masked" }));
    save_checkpoint(&run.join("checkpoints"), model.var_store(), &opt, &state).unwrap();
    model
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn encoder_comes_from_the_checkpoint_and_the_head_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("pre");
    let pre = pretrained_run(&run, small(Direction::Causal), 1);
    let pre_vars = pre.var_store().variables();

    pretext_model::tch::manual_seed(2);
    let (clf, origin) = build_classifier(
        &Pretrained::Run(run.clone()),
        &ModelConfig::default(),
        4,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(origin.task.as_deref(), Some("masked"));
    assert_eq!(origin.step, 7);
    assert_eq!(
        clf.config(),
        &small(Direction::Causal),
        "architecture from the checkpoint"
    );
    let vars = clf.var_store().variables();
    let encoder: Vec<&String> = vars.keys().filter(|k| k.starts_with("encoder.")).collect();
    assert!(!encoder.is_empty());
    assert_eq!(origin.loaded, encoder.len());
    for name in encoder {
        assert_eq!(
            max_diff(&vars[name], &pre_vars[name]),
            0.0,
            "{name} not loaded"
        );
    }
    // The head: new, K outputs, and not in the pretraining file at all.
    assert_eq!(
        vars["classifier_head.weight"].size(),
        vec![4, 33],
        "4 classes over the mean and max of 16 channels and the log length"
    );
    let file: Vec<String> = Tensor::read_safetensors(
        latest_checkpoint(&run.join("checkpoints"))
            .unwrap()
            .unwrap()
            .join(MODEL_FILE),
    )
    .unwrap()
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert!(file.iter().all(|n| !n.starts_with("classifier_head")));
    assert!(file.iter().any(|n| n.starts_with("token_head")));

    // Same seed without pretraining: the encoder differs, so the equality
    // above is the loading's doing.
    pretext_model::tch::manual_seed(2);
    let (fresh, none) =
        build_classifier(&Pretrained::None, &small(Direction::Causal), 4, Device::Cpu).unwrap();
    assert_eq!(none.loaded, 0);
    let fv = fresh.var_store().variables();
    assert!(
        max_diff(
            &fv["encoder.block0.conv1.weight"],
            &pre_vars["encoder.block0.conv1.weight"]
        ) > 0.0
    );
}

#[test]
fn missing_checkpoint_is_an_error_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = build_classifier(
        &Pretrained::Run(dir.path().join("nothing")),
        &ModelConfig::default(),
        3,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing"), "{err}");
}

#[test]
fn a_linear_probe_run_keeps_the_pretrained_encoder_and_reports() {
    pretext_model::tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let synth = SynthConfig {
        sequences: 160,
        min_len: 64,
        max_len: 256,
        labeled_fraction: 0.5,
        holdout_fraction: 0.2,
        rows_per_file: 80,
        row_group_rows: 40,
        ..SynthConfig::default()
    };
    generate(&synth, &data).unwrap();
    let run_dir = dir.path().join("pre");
    let pre = pretrained_run(&run_dir, small(Direction::Bidirectional), 3);
    let out = dir.path().join("ft");
    let config = FinetuneConfig {
        data: vec![data],
        pretrained: Pretrained::Run(run_dir),
        label_fraction: 0.5,
        run_dir: out.clone(),
        freeze_encoder: true,
        epochs: 2,
        min_steps: 6,
        evals: 2,
        validation: ValidationConfig {
            min_len: 64,
            max_len: 256,
        },
        threads: Some(1),
        device: pretext_finetune::FinetuneDevice::Cpu,
        ..FinetuneConfig::default()
    };
    let report = run(config).unwrap();
    assert!(report.encoder_variables_loaded > 0);
    assert_eq!(report.classes.len(), 4);
    assert!(report.train_rows_per_class.iter().all(|&n| n >= 1));
    assert_eq!(report.test.rows, report.test_rows);
    assert_eq!(
        report.test.confusion.iter().flatten().sum::<u64>() as usize,
        report.test_rows
    );
    assert!(report.steps >= 6);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let written_accuracy = written["test"]["accuracy"].as_f64().unwrap();
    assert!((written_accuracy - report.test.accuracy).abs() < 1e-12);

    // The saved model: encoder exactly the pretrained one (frozen), head trained.
    let saved: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(report.checkpoint.unwrap().join(MODEL_FILE))
            .unwrap()
            .into_iter()
            .collect();
    let pre_vars = pre.var_store().variables();
    for (name, t) in &pre_vars {
        if name.starts_with("encoder.") {
            assert_eq!(
                max_diff(&saved[name], t),
                0.0,
                "{name} changed under the probe"
            );
        }
    }
    assert!(saved.contains_key("classifier_head.weight"));
}
